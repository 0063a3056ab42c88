"""from_torch never computes with stale tensors: whatever happens to the module, the network sees it.

Each test changes a converted module the way users do (cast, move, load a state
dict, replace Parameters, step an optimizer) and checks every operator against
the module's own output and torch.func at the new weights; plus: no copies, no
reconversion when nothing changed, and no global side effect from converting.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import xderiv as xd  # noqa: E402
from xderiv.interop.torch import ResidualBlock, as_module, from_torch  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(autouse=True)
def _torch_only(backend):
    if backend.name != "torch":
        pytest.skip("converted torch modules are tested in the torch session")


def _model(device, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    with torch.device(device):
        return nn.Sequential(
            nn.Linear(3, 8), nn.Tanh(), ResidualBlock(8, nn.Softplus(beta=2.0), step=0.5), nn.Linear(8, 2)
        )


def _check(net, model, x, tol):
    """Value, Jacobian, Hessian and Laplacian of ``net`` equal the module's and torch.func's at ``x``."""
    from torch.func import hessian, jacrev, vmap

    one = lambda p: model(p[None])[0]  # noqa: E731
    with torch.no_grad():
        want = model(x)
    jac, hess = vmap(jacrev(one))(x), vmap(hessian(one))(x)
    r = xd.derivatives(net, x, hessian=True)
    assert r.value.dtype == x.dtype and r.value.device == x.device
    for got, ref in ((net(x), want), (r.value, want), (r.jacobian, jac), (r.hessian, hess)):
        assert (got - ref).abs().max().item() <= tol * max(ref.abs().max().item(), 1.0)
    lap = xd.laplacian(net, x)
    assert (lap - torch.diagonal(hess, dim1=-2, dim2=-1).sum(-1)).abs().max().item() <= tol * 10


def test_cast_after_conversion_is_seen(backend):
    model = _model(backend.device)
    net = from_torch(model)
    assert net.dtype == torch.float32
    _check(net, model, torch.randn(6, 3, device=backend.device), 1e-5)
    model.double()  # replaces every Parameter's storage
    assert net.dtype == torch.float64
    _check(net, model, torch.randn(6, 3, dtype=torch.float64, device=backend.device), 1e-12)
    model.float()
    _check(net, model, torch.randn(6, 3, device=backend.device), 1e-5)
    model.to(torch.float64)
    _check(net, model, torch.randn(6, 3, dtype=torch.float64, device=backend.device), 1e-12)


def test_half_precision_after_conversion_computes_in_half(backend):
    model = _model(backend.device)
    net = from_torch(model)
    model.half()
    x = torch.randn(4, 3, device=backend.device).half()
    y = net(x)
    assert y.dtype == torch.float16
    with torch.no_grad():
        assert (y.double() - model.double()(x.double())).abs().max().item() < 1e-2


def test_move_to_another_device_is_seen(backend):
    model = _model("cpu").double()
    net = from_torch(model)
    x = torch.randn(5, 3, dtype=torch.float64, device="cpu")  # starts on the CPU on purpose
    _check(net, model, x, 1e-12)
    if backend.device is None or torch.device(backend.device).type == "cpu":
        # No second device here: a move to 'meta' must still be seen (shapes only, no values).
        model.to("meta")
        assert net.device == torch.device("meta")
        assert net(torch.empty(5, 3, dtype=torch.float64, device="meta")).device.type == "meta"
        with pytest.raises(ValueError, match="device"):
            net(x)  # the weights moved away: a clear error, never the old tensors
        return
    model.to(backend.device)
    assert net.device == torch.device(backend.device)
    _check(net, model, x.to(backend.device), 1e-12)
    with pytest.raises(ValueError, match="device"):
        net(x)


@pytest.mark.parametrize("assign", [False, True])
def test_load_state_dict_is_seen(backend, assign):
    model = _model(backend.device).double()
    net = from_torch(model)
    x = torch.randn(5, 3, dtype=torch.float64, device=backend.device)
    before = net(x).detach().clone()
    other = _model(backend.device, seed=1).double()
    model.load_state_dict(other.state_dict(), assign=assign)
    _check(net, model, x, 1e-12)
    assert (net(x) - before).abs().max().item() > 1e-3


def test_replaced_parameter_and_submodule_are_seen(backend):
    model = _model(backend.device).double()
    net = from_torch(model)
    x = torch.randn(5, 3, dtype=torch.float64, device=backend.device)
    model[0].weight = nn.Parameter(2.0 * model[0].weight.detach())
    _check(net, model, x, 1e-12)
    model[3] = nn.Linear(8, 2, dtype=torch.float64, device=backend.device)
    _check(net, model, x, 1e-12)
    model[2].step = 0.25
    _check(net, model, x, 1e-12)


def test_optimizer_steps_train_through_the_converted_network(backend):
    model = _model(backend.device).double()
    net = from_torch(model)
    x = torch.randn(32, 3, dtype=torch.float64, device=backend.device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = (xd.laplacian(net, x) + 1.0).square().mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    _check(net, model, x, 1e-12)


def test_no_copies_and_no_reconversion_while_nothing_changes(backend):
    model = _model(backend.device).double()
    net = from_torch(model)
    first = net.resolve()
    assert net.resolve() is first  # nothing changed: the same network, no new views
    w = first.layers[0].weight
    assert w.data_ptr() == model[0].weight.data_ptr() and w.shape == (3, 8)  # a view, not a copy
    with torch.no_grad():
        model[0].weight.mul_(0.5)  # in place: seen through the view
    assert net.resolve() is first
    model.double()  # already float64: a no-op, nothing to redo
    assert net.resolve() is first


def test_conversion_leaves_the_activation_registry_alone(backend):
    names = xd.available_activations()
    with torch.device(backend.device):
        net = from_torch(nn.Sequential(nn.Linear(2, 4), nn.Softplus(beta=3.0), nn.Linear(4, 1)).double())
    assert xd.available_activations() == names
    assert net.layers[0].activation.name == "softplus(beta=3.0)"


def test_as_module_follows_its_source(backend):
    model = _model(backend.device)
    u = as_module(model)
    u.double()  # moves the source's Parameters (registered under source.)
    x = torch.randn(4, 3, dtype=torch.float64, device=backend.device)
    _check(u.net, model, x, 1e-12)
    assert (u(x) - model(x)).abs().max().item() <= 1e-14
