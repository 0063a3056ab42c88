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


# --------------------------------------------------------------------------- every way a tensor changes


class Folded(nn.Module):
    """Every kind of computed array: (x - mu) / sd (buffers), a slope a folded into l (a Parameter),
    a plain view (h), and an output scale held in a buffer."""

    def __init__(self, device):
        super().__init__()
        with torch.device(device):
            self.register_buffer(
                "mu", torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64, device=torch.get_default_device())
            )
            self.register_buffer(
                "sd", torch.tensor([2.0, 0.5, 1.5], dtype=torch.float64, device=torch.get_default_device())
            )
            self.a = nn.Parameter(torch.full((8,), 1.5, dtype=torch.float64, device=torch.get_default_device()))
            self.l = nn.Linear(3, 8, dtype=torch.float64)
            self.h = nn.Linear(8, 8, dtype=torch.float64)
            self.o = nn.Linear(8, 2, dtype=torch.float64)
            self.register_buffer("s", torch.tensor([2.0, 0.5], dtype=torch.float64, device=torch.get_default_device()))

    def forward(self, x):
        u = torch.tanh(self.a * self.l((x - self.mu) / self.sd))  # W diag(a), b a: computed
        u = u + 0.5 * torch.sigmoid(self.h(u))  # h.weight.mT: a view
        return self.o(u) * self.s  # diag(s): computed


def _new(t):
    """Other values of the same shape (positive where ``t`` is: sd stays a valid scale)."""
    return t.detach() * 1.25 + 0.125


def _load(model, name, new, assign):
    state = model.state_dict()
    state[name] = new
    model.load_state_dict(state, assign=assign)


def _reassign(model, name, new):
    path, _, leaf = name.rpartition(".")
    owner = model.get_submodule(path)
    setattr(owner, leaf, nn.Parameter(new) if isinstance(getattr(owner, leaf), nn.Parameter) else new)


def _step(model, name):
    t = model.get_parameter(name)
    t.grad = torch.ones_like(t)
    torch.optim.SGD([t], lr=0.125).step()


def _no_grad(fn):
    with torch.no_grad():
        fn()


CHANGES = {
    "data.mul_": lambda m, n, t: t.data.mul_(1.25),
    "data.clamp_": lambda m, n, t: t.data.clamp_(min=float(t.detach().mean()) + 0.25),
    "data.copy_": lambda m, n, t: t.data.copy_(_new(t)),
    "no_grad mul_": lambda m, n, t: _no_grad(lambda: t.mul_(1.25)),
    "no_grad copy_": lambda m, n, t: _no_grad(lambda: t.copy_(_new(t))),
    "data =": lambda m, n, t: setattr(t, "data", _new(t)),
    "reassigned": lambda m, n, t: _reassign(m, n, _new(t)),
    "load_state_dict": lambda m, n, t: _load(m, n, _new(t), False),
    "load_state_dict(assign=True)": lambda m, n, t: _load(m, n, _new(t), True),
    "optimizer step": lambda m, n, t: _step(m, n),
}
TENSORS = ["mu", "sd", "s", "a", "l.weight", "h.weight"]  # buffers, then Parameters


@pytest.mark.parametrize("how", list(CHANGES))
@pytest.mark.parametrize("name", TENSORS)
def test_every_change_of_a_tensor_is_seen(backend, name, how):
    """In-place edits through .data bump no _version: computed arrays must not be cached on it."""
    is_buffer = name in ("mu", "sd", "s")
    if how == "optimizer step" and is_buffer:
        pytest.skip("an optimizer steps Parameters")
    torch.manual_seed(0)
    model = Folded(backend.device)
    net = from_torch(model)
    x = torch.randn(5, 3, dtype=torch.float64, device=backend.device)
    before = net(x).detach().clone()  # converted and used: whatever is cached, is cached now
    t = model.get_buffer(name) if is_buffer else model.get_parameter(name)
    CHANGES[how](model, name, t)
    with torch.no_grad():
        want = model(x)
    assert (want - before).abs().max().item() > 1e-3  # the change matters
    for _ in range(2):  # and stays seen
        assert (net(x) - want).abs().max().item() <= 1e-13
    with torch.no_grad():
        assert (net(x) - want).abs().max().item() <= 1e-13


def test_data_edits_stay_seen_through_training(backend):
    """The edits of the report: a normalisation buffer, a folded slope, a folded layer's weight, a shift;
    then optimizer steps on the module through the converted network."""
    torch.manual_seed(0)
    model = Folded(backend.device)
    net = from_torch(model)
    x = torch.randn(16, 3, dtype=torch.float64, device=backend.device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    edits = [
        lambda: model.sd.data.mul_(2.0),
        lambda: model.a.data.clamp_(min=3.0),
        lambda: model.l.weight.data.mul_(0.5),
        lambda: model.mu.data.copy_(torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64, device=backend.device)),
    ]
    for edit in edits:
        net(x)
        edit()
        with torch.no_grad():
            assert (net(x) - model(x)).abs().max().item() <= 1e-13
        for _ in range(2):
            opt.zero_grad()
            xd.laplacian(net, x).square().mean().backward()
            opt.step()
            with torch.no_grad():
                assert (net(x) - model(x)).abs().max().item() <= 1e-13
    _check(net, model, x, 1e-12)
