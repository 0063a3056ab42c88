"""xderiv.interop.torch: from_torch / as_module against the torch modules' own outputs and torch.func."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import xderiv as xd  # noqa: E402
from xderiv.interop.torch import (  # noqa: E402
    AntiTanh,
    LogCosh,
    Quadratic,
    ResidualBlock,
    Sin,
    as_module,
    from_torch,
)

from .helpers import torch_on_cpu  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
F64 = torch.float64

# Every tensor is built on ``torch_device`` (tests/conftest.py): the session's device in the
# torch session, the CPU elsewhere.  Modules are built on the CPU from a fixed seed, then moved.


def _autodiff(f, x):
    """Value, Jacobian (n, m, d), Hessian (n, m, d, d) of a batched torch function by torch.func."""
    from torch.func import hessian, jacrev, vmap

    one = lambda p: f(p[None])[0]  # noqa: E731
    return f(x), vmap(jacrev(one))(x), vmap(hessian(one))(x)


def _trace(h):
    return torch.diagonal(h, dim1=-2, dim2=-1).sum(-1)


def _models(device=None, dtype=None):
    """The test modules, same weights on every device: built on the CPU, then moved with ``.to``."""
    with torch_on_cpu():
        torch.manual_seed(0)
        models = _cpu_models()
    return {k: m.to(device=device, dtype=dtype) for k, m in models.items()}


def _cpu_models():
    return {
        "tanh-mlp": nn.Sequential(nn.Linear(3, 12), nn.Tanh(), nn.Linear(12, 12), nn.Tanh(), nn.Linear(12, 2)),
        "sigmoid-silu": nn.Sequential(nn.Linear(3, 10), nn.Sigmoid(), nn.Linear(10, 10), nn.SiLU(), nn.Linear(10, 1)),
        "softplus-beta": nn.Sequential(nn.Linear(3, 9), nn.Softplus(beta=2.5), nn.Linear(9, 1), nn.Softplus()),
        "resnet-antitanh": nn.Sequential(
            nn.Linear(3, 8),
            AntiTanh(),
            ResidualBlock(8, AntiTanh(), step=0.5),
            ResidualBlock(8, nn.Tanh(), step=0.25),
            nn.Linear(8, 1, bias=False),
        ),
        "quadratic-sin-logcosh": nn.Sequential(
            nn.Linear(3, 7),
            Sin(),
            nn.Linear(7, 7),
            Quadratic(),
            nn.Sequential(nn.Linear(7, 5), LogCosh()),
            nn.Identity(),
            nn.Linear(5, 2),
            nn.Identity(),
        ),
        "gelu-elu-mish": nn.Sequential(
            nn.Linear(3, 8),
            nn.GELU(),
            nn.Linear(8, 8),
            nn.ELU(alpha=0.7),
            nn.Linear(8, 7),
            nn.Mish(),
            ResidualBlock(7, nn.GELU(approximate="tanh"), step=0.5),
            nn.Linear(7, 6),
            nn.CELU(alpha=0.5),
            nn.Linear(6, 6),
            nn.SELU(),
            nn.Linear(6, 2),
        ),
    }


MODELS = list(_models())


@pytest.fixture(params=MODELS)
def model(request, torch_device):
    return _models(torch_device, F64)[request.param]


@pytest.mark.parametrize("mode", ["forward", "backward"])
def test_from_torch_matches_module_and_torch_func(model, mode, torch_device):
    x = torch.randn(6, 3, dtype=F64, device=torch_device)
    net = from_torch(model)
    y, J, H = _autodiff(model, x)
    r = xd.derivatives(net, x, hessian=True, mode=mode)
    torch.testing.assert_close(r.value, y, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(r.jacobian, J, rtol=1e-11, atol=1e-12)
    torch.testing.assert_close(r.hessian, H, rtol=1e-10, atol=1e-11)
    torch.testing.assert_close(xd.laplacian(net, x, mode=mode), _trace(H), rtol=1e-10, atol=1e-11)


def test_from_torch_shares_tensors(model, torch_device):
    net = from_torch(model)
    first = model[0]
    assert net.layers[0].weight.data_ptr() == first.weight.data_ptr()  # a view, not a copy
    assert net.layers[0].bias is first.bias
    x = torch.randn(4, 3, dtype=F64, device=torch_device)
    with torch.no_grad():
        first.weight.mul_(1.5)
        first.bias.add_(0.3)
    torch.testing.assert_close(net(x), model(x), rtol=1e-12, atol=1e-12)


def test_weight_gradients_reach_the_module(torch_device):
    """d/dθ of a Laplacian loss through xderiv equals the double-backward reference."""
    model = _models(torch_device, F64)["resnet-antitanh"]
    x = torch.randn(5, 3, dtype=F64, device=torch_device, requires_grad=True)
    params = list(model.parameters())

    net = from_torch(model)
    loss = (xd.laplacian(net, x) ** 2).mean() + xd.gradient(net, x).square().mean()
    got = torch.autograd.grad(loss, params)

    y = model(x).sum()
    (g,) = torch.autograd.grad(y, x, create_graph=True)
    lap = sum(torch.autograd.grad(g[:, i].sum(), x, create_graph=True)[0][:, i] for i in range(3))
    ref_loss = (lap**2).mean() + g.square().mean()
    ref = torch.autograd.grad(ref_loss, params)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=1e-12)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_from_torch_under_no_grad_still_tracks(torch_device):
    model = _models(torch_device, F64)["tanh-mlp"]
    with torch.no_grad():
        net = from_torch(model)
    loss = xd.value(net, torch.randn(3, 3, dtype=F64, device=torch_device)).sum()
    loss.backward()
    assert model[0].weight.grad is not None


def test_float32_module_stays_float32(torch_device):
    model = _models(torch_device)["tanh-mlp"]
    x = torch.randn(4, 3, device=torch_device)
    lap = xd.laplacian(from_torch(model), x)
    assert lap.dtype == torch.float32
    _, _, H = _autodiff(model, x)
    torch.testing.assert_close(lap, _trace(H), rtol=2e-4, atol=2e-5)


def test_unsupported_modules_are_named(torch_device):
    def refused(build):
        with torch_on_cpu():
            model = nn.Sequential(*build())
        return from_torch(model.to(torch_device))

    # neither a chain nor a graph of supported operations: the node, the operation and the module path
    with pytest.raises(NotImplementedError, match="module 1 \\(ReLU\\)") as info:
        refused(lambda: [nn.Linear(2, 3), nn.ReLU()])
    assert "fallback='autograd'" in str(info.value)
    with pytest.raises(ValueError, match="no floating-point tensor"):
        refused(lambda: [nn.Identity()])
    with pytest.raises(NotImplementedError, match="ReLU"):
        refused(lambda: [ResidualBlock(3, nn.ReLU())])


def test_modules_that_are_not_chains_convert_to_graphs(torch_device):
    """An activation before the first Linear is no chain of xderiv layers, but a graph: same derivatives."""
    from xderiv.interop.torch_network import TorchGraph

    with torch_on_cpu():
        model = nn.Sequential(nn.Tanh(), nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)).double()
    model = model.to(torch_device)
    net = from_torch(model)
    assert isinstance(net, TorchGraph)
    x = torch.linspace(-1, 1, 10, dtype=torch.float64, device=torch_device).reshape(5, 2)
    ref = torch.stack([torch.func.hessian(model)(p) for p in x])
    assert torch.allclose(xd.hessian(net, x), ref, rtol=1e-12, atol=1e-14)


class _FunctionalSoftplus(nn.Module):
    def __init__(self, threshold):
        super().__init__()
        self.inner, self.outer, self.threshold = nn.Linear(2, 4), nn.Linear(4, 1), threshold

    def forward(self, x):
        return self.outer(F.softplus(self.inner(x), beta=2.0, threshold=self.threshold))


def test_softplus_thresholds_below_the_default_are_refused_not_smoothed(torch_device):
    """torch's softplus is the identity where beta * z > threshold: with a small threshold that is a
    different function from the smooth softplus, so it is refused (naming the difference); at the default
    and above, the two differ by at most log(1 + exp(-threshold)) / beta."""

    def on_device(build):
        with torch_on_cpu():
            torch.manual_seed(0)
            model = build()
        return model.to(torch_device, F64)

    x = torch.randn(64, 2, dtype=F64, device=torch_device) * 6.0
    for beta, threshold in ((1.0, 1.0), (2.0, 19.0)):
        model = on_device(
            lambda b=beta, t=threshold: nn.Sequential(nn.Linear(2, 4), nn.Softplus(b, t), nn.Linear(4, 1))
        )
        with pytest.raises(ValueError, match=f"Softplus\\(beta={beta}, threshold={threshold}\\).*up to"):
            from_torch(model)
    with pytest.raises(ValueError, match="threshold=0.5"):
        from_torch(on_device(lambda: _FunctionalSoftplus(0.5)))
    for build in (
        lambda: nn.Sequential(nn.Linear(2, 4), nn.Softplus(beta=2.0), nn.Linear(4, 1)),
        lambda: nn.Sequential(nn.Linear(2, 4), nn.Softplus(beta=2.0, threshold=30.0), nn.Linear(4, 1)),
        lambda: _FunctionalSoftplus(20.0),
    ):
        model = on_device(build)
        assert (from_torch(model)(x) - model(x)).abs().max() < 1e-8  # 4 units, each at most 1.05e-9 off
    # the user may accept the difference by mapping the module themselves, and turning the probe off
    model = on_device(lambda: nn.Sequential(nn.Linear(2, 4), nn.Softplus(threshold=1.0), nn.Linear(4, 1)))
    smooth = {nn.Softplus: lambda m: xd.activations.softplus(m.beta)}
    with pytest.raises(ValueError, match=r"does not compute what Sequential computes"):
        from_torch(model, activations=smooth)
    net = from_torch(model, activations=smooth, check=False)
    assert net.layers[0].activation.name == "softplus"


# --------------------------------------------------------------------------- as_module


def test_as_module_of_torch_sequential_trains_the_sequential(torch_device):
    model = _models(torch_device, F64)["resnet-antitanh"]
    u = as_module(model)
    assert {id(p) for p in u.parameters()} == {id(p) for p in model.parameters()}
    x = torch.randn(16, 3, dtype=F64, device=torch_device)
    torch.testing.assert_close(u(x), model(x))
    opt = torch.optim.SGD(u.parameters(), lr=1e-2)
    before = model[0].weight.detach().clone()
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = ((u.laplacian(x) + 1.0) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert not torch.equal(before, model[0].weight)
    assert losses[-1] < losses[0]
    torch.testing.assert_close(u(x), model(x))  # still one and the same network


def test_as_module_of_xderiv_potential(torch_device):
    phi = xd.potential(in_features=3, width=8, depth=2, rank=2, xp=torch, device=torch_device, seed=0)
    u = as_module(phi)
    names = [n for n, _ in u.named_parameters()]
    assert names[:2] == ["layers_0_weight", "layers_0_bias"] and {"w", "b", "A", "c"} <= set(names)
    x = torch.randn(5, 3, dtype=F64, device=torch_device)
    torch.testing.assert_close(u(x), phi(x))
    torch.testing.assert_close(u.hessian(x), xd.hessian(phi, x))
    torch.testing.assert_close(u.gradient(x), xd.gradient(phi, x))
    r = u.derivatives(x, laplacian=True)
    torch.testing.assert_close(r.laplacian, xd.laplacian(phi, x))
    (u(x).sum() + u.laplacian(x).sum()).backward()
    assert all(p.grad is not None for p in u.parameters())


def test_as_module_registers_view_bases_once_and_converts_dtype(torch_device):
    model = _models(torch_device)["tanh-mlp"]  # float32
    net = from_torch(model)
    u = as_module(net)  # weights are .mT views of the Linear Parameters: those are registered
    ids = {id(p) for p in u.parameters()}
    assert {id(p) for p in model.parameters()} == ids
    u.double()
    x = torch.randn(4, 3, dtype=F64, device=torch_device)
    out = u.jacobian(x)
    assert out.dtype == F64
    torch.testing.assert_close(out, _autodiff(model.double(), x)[1])


def test_as_module_state_dict_round_trip(torch_device):
    a = as_module(xd.mlp([2, 6, 1], activation="sin", xp=torch, device=torch_device, seed=0))
    b = as_module(xd.mlp([2, 6, 1], activation="sin", xp=torch, device=torch_device, seed=1))
    x = torch.randn(3, 2, dtype=F64, device=torch_device)
    assert not torch.allclose(a(x), b(x))
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(a.laplacian(x), b.laplacian(x))


def test_as_module_trains_input_features_through_their_own_arrays(torch_device):
    """An InputScale's mean and std and Fourier frequencies B are the Parameters: an optimizer step on
    them changes what the network computes, as it would for any weight."""
    rng = np.random.default_rng(0)

    def t(a):
        return torch.tensor(a, dtype=F64, device=torch_device)

    net = xd.Sequential(
        xd.InputScale(t([0.1, -0.2]), t([1.5, 0.8])),
        xd.fourier_features(t(rng.standard_normal((2, 3)))),
        xd.mlp([6, 4, 1], "tanh", xp=torch, device=torch_device, seed=0),
    )
    u = as_module(net)
    names = [n for n, _ in u.named_parameters()]
    assert names[:3] == ["layers_0_mean", "layers_0_std", "layers_1_B"]
    x = torch.randn(5, 2, dtype=F64, device=torch_device)
    torch.testing.assert_close(u.laplacian(x), xd.laplacian(net, x))
    before = u.laplacian(x).detach().clone()
    opt = torch.optim.SGD(u.parameters(), lr=0.1)
    for _ in range(2):  # the second step needs fresh autograd graphs through the features
        opt.zero_grad()
        u.laplacian(x).square().sum().backward()
        assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in list(u.parameters())[:3])
        opt.step()
    moved = as_module(net)  # the same tensors, stepped in place
    torch.testing.assert_close(moved.laplacian(x), u.laplacian(x))
    assert (moved.laplacian(x) - before).abs().max() > 1e-6


def test_as_module_refuses_numpy_weights():
    with pytest.raises(TypeError, match="torch tensors"):
        as_module(xd.mlp([2, 3, 1], seed=0))


def test_antitanh_module_matches_xderiv(torch_device):
    z = torch.tensor([-1e4, -3.0, 0.0, 2.0, 1e4], dtype=F64, device=torch_device)
    torch.testing.assert_close(AntiTanh()(z), xd.get_activation("antitanh")(z, torch))
    torch.testing.assert_close(LogCosh()(z) + math.log(2.0), AntiTanh()(z))


class _Features(nn.Module):
    """Buffers a converted network reads: a normalisation (mu, sigma), Fourier frequencies B and phases."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mu", torch.tensor([0.5, -1.0, 2.0], device=torch.get_default_device()))
        self.register_buffer("sigma", torch.tensor([2.0, 0.5, 1.5], device=torch.get_default_device()))
        self.register_buffer("B", torch.randn(3, 6, device=torch.get_default_device()))
        self.register_buffer("phase", torch.rand(6, device=torch.get_default_device()))
        self.hidden = nn.Linear(6, 8)
        self.out = nn.Linear(8, 1)

    def forward(self, x):
        u = torch.sin((x - self.mu) / self.sigma @ self.B + self.phase)
        return self.out(torch.tanh(self.hidden(u)))


def test_as_module_of_a_converted_module_trains_the_module_not_its_buffers(torch_device):
    with torch_on_cpu():
        torch.manual_seed(0)
        model = _Features()
    model = model.to(torch_device, F64)
    net = from_torch(model)
    u = as_module(net)
    assert [id(p) for p in u.parameters()] == [id(p) for p in model.parameters()]
    assert {n for n, _ in u.named_buffers()} == {"source.mu", "source.sigma", "source.B", "source.phase"}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    x = torch.randn(16, 3, dtype=F64, device=torch_device)
    opt = torch.optim.Adam(u.parameters(), lr=1e-2)
    before = model.hidden.weight.detach().clone()
    for _ in range(10):
        opt.zero_grad()
        (u.laplacian(x) + 1.0).square().mean().backward()
        opt.step()
    assert not torch.equal(before, model.hidden.weight)  # training u trains the module
    assert all(torch.equal(b, buffers[n]) for n, b in model.named_buffers())
    with torch.no_grad():
        assert (u(x) - model(x)).abs().max().item() <= 1e-13
        assert (net(x) - model(x)).abs().max().item() <= 1e-13


def test_as_module_methods_take_the_operators_arguments(torch_device):
    model = _models(torch_device, F64)["tanh-mlp"]
    net = from_torch(model)
    for u in (as_module(net), as_module(model), as_module(xd.mlp([3, 5, 2], "tanh", xp=torch, device=torch_device))):
        ref = u.net
        x = torch.randn(4, 3, dtype=F64, device=torch_device)
        same = torch.testing.assert_close
        same(u.laplacian(x, coords=[0]), xd.laplacian(ref, x, coords=[0]))
        same(u.laplacian(x, "backward", coords=[1, 2], chunk_size=2), xd.laplacian(ref, x, coords=[1, 2]))
        est = dict(estimator="hutchinson", samples=3, seed=0, per_point=False)
        same(u.laplacian(x, **est), xd.laplacian(ref, x, **est))
        same(u.hessian(x, mode="forward", chunk_size=3), xd.hessian(ref, x))
        same(u.jacobian(x, "backward", chunk_size=1), xd.jacobian(ref, x))
        r = u.derivatives(x, hessian=True, coords=[0, 2], mode="backward")
        same(r.hessian, xd.derivatives(ref, x, hessian=True, coords=[0, 2]).hessian)
        same(u(x, chunk_size=2), ref(x))
    one = as_module(xd.mlp([3, 4, 1], "tanh", xp=torch, device=torch_device))
    x = torch.randn(4, 3, dtype=F64, device=torch_device)
    torch.testing.assert_close(one.gradient(x, mode="backward", chunk_size=2), xd.gradient(one.net, x))


class _Erf(nn.Module):
    """torch.special.erf has no rule in the jet engine: only the autograd fallback differentiates it."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(2, 3)

    def forward(self, x):
        return torch.special.erf(self.inner(x)).sum(-1, keepdim=True) * x[..., :1]


def test_autograd_fallback_is_opt_in_warns_once_and_is_exact(torch_device):
    from xderiv.interop.torch_network import AutogradGraph

    with torch_on_cpu():
        model = _Erf().double()
    model = model.to(torch_device)
    with pytest.raises(NotImplementedError, match=r"(?s)torch.special.erf.*fallback='autograd'"):
        from_torch(model)
    with pytest.warns(UserWarning, match="nested torch autograd") as record:
        net = from_torch(model, fallback="autograd")
    assert isinstance(net, AutogradGraph) and len(record) == 1
    x = torch.linspace(-1, 1, 8, dtype=torch.float64, device=torch_device).reshape(4, 2)
    ref = torch.stack([torch.func.hessian(model)(p) for p in x])
    torch.testing.assert_close(xd.hessian(net, x), ref, rtol=1e-12, atol=1e-14)
    lap = torch.diagonal(ref, dim1=-2, dim2=-1).sum(-1)
    torch.testing.assert_close(xd.laplacian(net, x), lap, rtol=1e-12, atol=1e-14)
    v = torch.tensor([0.3, -0.7], dtype=torch.float64, device=torch_device)
    torch.testing.assert_close(xd.directional(net, x, v)[1], torch.einsum("nmij,i,j->nm", ref, v, v))
    phi = xd.quadratic(-2.0 * torch.eye(2, dtype=torch.float64, device=torch_device), b=1.0)
    ref_u = torch.stack([torch.func.hessian(lambda p: (1 - p @ p) * model(p))(p) for p in x])
    torch.testing.assert_close(xd.laplacian(phi * net, x), torch.diagonal(ref_u, dim1=-2, dim2=-1).sum(-1))
    with pytest.raises(ValueError, match="fallback must be"):
        from_torch(model, fallback="numerical")


class _Cube(nn.Module):
    def forward(self, z):
        return z**3


class _GatedCube(nn.Module):
    """Not a chain (a product of two input-dependent tensors), with an elementwise module of its own."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(2, 3), nn.Linear(2, 3)
        self.act = _Cube()

    def forward(self, x):
        return (self.act(self.a(x)) * torch.tanh(self.b(x))).sum(-1, keepdim=True)


def test_a_graph_is_checked_against_the_module_once_per_structure(torch_device):
    """A wrong activations= reading of a graph is caught at its first call, not silently differentiated."""
    with torch_on_cpu():
        model = _GatedCube().double()
    model = model.to(torch_device)
    x = torch.linspace(-1, 1, 8, dtype=torch.float64, device=torch_device).reshape(4, 2)
    right = from_torch(model)  # the cube traced through: z ** 3
    ref = torch.stack([torch.func.hessian(model)(p) for p in x])
    torch.testing.assert_close(xd.hessian(right, x), ref, rtol=1e-12, atol=1e-14)
    wrong = from_torch(model, activations={_Cube: "tanh"})
    with pytest.raises(ValueError, match=r"translation of _GatedCube.forward does not compute"):
        xd.laplacian(wrong, x)
