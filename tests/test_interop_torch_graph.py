"""graph_function: the forward of PINN-style torch modules that are not chains, replayed through the Array API.

Each module below (modified MLP, PirateNet block, LayerNorm MLP, x/t encoders with skips, Fourier
features, residual blocks, weight_norm, Dropout, attention over coordinate tokens, an orbital
log-determinant) is translated and compared with ``module(x)`` on two batch shapes, then its weight
gradients; then staleness, re-tracing, einsum lowering, activation mappings and refusals.
"""

from __future__ import annotations

import math
import operator

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from torch.nn.utils import parametrize  # noqa: E402
from torch.nn.utils.parametrizations import weight_norm  # noqa: E402

from xderiv.interop.torch_graph import GraphFunction, graph_function  # noqa: E402

F64 = torch.float64


@pytest.fixture(autouse=True)
def _torch_only(backend):
    if backend.name != "torch":
        pytest.skip("torch modules are translated in the torch session")


# --------------------------------------------------------------------------- modules


class ModifiedMLP(nn.Module):
    """Wang, Teng & Perdikaris (2021): H <- (1 - Z) U + Z V with U, V gates of the input."""

    def __init__(self, d=2, width=12, depth=2):
        super().__init__()
        self.u, self.v, self.first = (nn.Linear(d, width) for _ in range(3))
        self.hidden = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.out = nn.Linear(width, 1)

    def forward(self, x):
        u, v = torch.tanh(self.u(x)), torch.tanh(self.v(x))
        h = torch.tanh(self.first(x))
        for layer in self.hidden:
            z = torch.tanh(layer(h))
            h = (1 - z) * u + z * v
        return self.out(h)


class PirateNet(nn.Module):
    """Random Fourier embedding (B a Parameter), U/V gates, adaptive residuals a f(x) + (1 - a) x."""

    def __init__(self, d=2, m=6, width=12, blocks=2):
        super().__init__()
        self.B = nn.Parameter(torch.randn(d, m, device=torch.get_default_device()))
        self.u, self.v = nn.Linear(2 * m, width), nn.Linear(2 * m, width)
        self.lift = nn.Linear(2 * m, width)
        self.l1 = nn.ModuleList(nn.Linear(width, width) for _ in range(blocks))
        self.l2 = nn.ModuleList(nn.Linear(width, width) for _ in range(blocks))
        self.alpha = nn.ParameterList(
            nn.Parameter(torch.tensor(0.3 + 0.2 * i, device=torch.get_default_device())) for i in range(blocks)
        )
        self.out = nn.Linear(width, 1)

    def forward(self, x):
        z = x @ self.B
        phi = torch.cat([torch.cos(z), torch.sin(z)], dim=-1)
        u, v = torch.tanh(self.u(phi)), torch.tanh(self.v(phi))
        h = torch.tanh(self.lift(phi))
        for l1, l2, a in zip(self.l1, self.l2, self.alpha):
            f = torch.tanh(l1(h))
            f = f * u + (1 - f) * v
            f = torch.tanh(l2(f))
            f = f * u + (1 - f) * v
            h = a * f + (1 - a) * h
        return self.out(h)


class LayerNormMLP(nn.Module):
    def __init__(self, d=3, width=10):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d, width),
            nn.LayerNorm(width),
            nn.GELU(),
            nn.Linear(width, width),
            nn.LayerNorm(width, elementwise_affine=False),
            nn.SiLU(),
            nn.Linear(width, 2),
        )

    def forward(self, x):
        return self.net(x)


class XTSkip(nn.Module):
    """Separate encoders of x[..., :1] and t = x[..., 1:], joined, with the input concatenated back."""

    def __init__(self, width=8):
        super().__init__()
        self.enc_x = nn.Sequential(nn.Linear(1, width), nn.Tanh())
        self.enc_t = nn.Sequential(nn.Linear(1, width), nn.Sigmoid())
        self.mix = nn.Linear(2 * width, width)
        self.out = nn.Linear(width + 2, 1)

    def forward(self, x):
        h = torch.cat([self.enc_x(x[..., :1]), self.enc_t(x[..., 1:])], -1)
        h = torch.tanh(self.mix(h))
        return self.out(torch.cat([x, h], -1))


class Fourier(nn.Module):
    def __init__(self, d=2, m=5, width=10, learn=False):
        super().__init__()
        B = 2.0 * torch.randn(d, m, device=torch.get_default_device())
        if learn:
            self.B = nn.Parameter(B)
        else:
            self.register_buffer("B", B)
        self.net = nn.Sequential(nn.Linear(2 * m, width), nn.Tanh(), nn.Linear(width, 1))

    def forward(self, x):
        return self.net(torch.cat([torch.cos(x @ self.B), torch.sin(x @ self.B)], -1))


class ResNet(nn.Module):
    def __init__(self, d=3, width=10, blocks=2):
        super().__init__()
        self.inp = nn.Linear(d, width)
        self.l1 = nn.ModuleList(nn.Linear(width, width) for _ in range(blocks))
        self.l2 = nn.ModuleList(nn.Linear(width, width) for _ in range(blocks))
        self.out = nn.Linear(width, 1)

    def forward(self, x):
        h = self.inp(x)
        for l1, l2 in zip(self.l1, self.l2):
            h = h + l2(torch.tanh(l1(h)))
        return self.out(h)


def _weight_norm(d=2, width=10):
    return nn.Sequential(weight_norm(nn.Linear(d, width)), nn.Tanh(), weight_norm(nn.Linear(width, 1)))


def _dropout(d=3, width=10):
    return nn.Sequential(nn.Linear(d, width), nn.Tanh(), nn.Dropout(0.2), nn.Linear(width, 1)).eval()


class Attention(nn.Module):
    """PINNsFormer-style: one token per coordinate, softmax(q k^T / sqrt(dk)) v, mean pooling."""

    def __init__(self, d=3, dk=8):
        super().__init__()
        self.embed = nn.Linear(1, dk)
        self.pos = nn.Parameter(0.1 * torch.randn(d, dk, device=torch.get_default_device()))
        self.q, self.k, self.v = (nn.Linear(dk, dk) for _ in range(3))
        self.norm = nn.LayerNorm(dk)
        self.out = nn.Linear(dk, 1)

    def forward(self, x):
        tokens = self.embed(x.unsqueeze(-1)) + self.pos  # (..., d, dk)
        q, k, v = self.q(tokens), self.k(tokens), self.v(tokens)
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
        h = self.norm(tokens + F.softmax(scores, dim=-1) @ v)
        return self.out(h.mean(dim=-2))


class LogDet(nn.Module):
    """log|det M| of the orbitals M[i, j] = phi_j(x_i) of two electrons in 1-D."""

    def __init__(self, n=2, width=8, positive=False):
        super().__init__()
        self.orbitals = nn.Sequential(nn.Linear(1, width), nn.Tanh(), nn.Linear(width, n))
        self.positive = positive

    def forward(self, x):
        m = self.orbitals(x[..., :, None])  # (..., n, n)
        if self.positive:
            eye = torch.eye(m.shape[-1], dtype=x.dtype, device=x.device)
            return torch.logdet(m @ m.mT + eye)[..., None]
        return torch.linalg.slogdet(m).logabsdet.unsqueeze(-1)


class Medley(nn.Module):
    """Less common operations: einsum, chunk, var, logsumexp, max values, solve, a parametrized tensor."""

    def __init__(self, d=3, width=6):
        super().__init__()
        self.lin = nn.Linear(d, 2 * width)
        self.W = nn.Parameter(torch.randn(width, width, device=torch.get_default_device()) / width)
        parametrize.register_parametrization(self, "W", _Symmetric())
        self.log_scale = nn.Parameter(torch.tensor(0.1, device=torch.get_default_device()))

    def forward(self, x):
        a, b = self.lin(x).chunk(2, dim=-1)
        c = torch.einsum("...i,ij->...j", a, self.W) * torch.exp(self.log_scale)
        g = F.softplus(c) + F.silu(b).pow(2) - torch.sigmoid(b) * F.gelu(a, approximate="tanh")
        s = torch.stack([g, c], dim=-2)  # (..., 2, w)
        t = torch.logsumexp(s, dim=-2) + s.var(dim=-1, keepdim=True).squeeze(-2).unsqueeze(-1)
        t = t + s.max(dim=-2).values - torch.amin(s, dim=-2) + s.flip(-1).narrow(-2, 0, 1).squeeze(-2)
        n = t.shape[-1]
        mat = t[..., :, None] * t[..., None, :] / n + torch.eye(n, dtype=t.dtype, device=torch.get_default_device()) * (
            2 + t.square()[..., None]
        )
        mat = mat * torch.tensor(1.5, dtype=x.dtype, device=x.device)
        sol = torch.linalg.solve(mat, t)
        y = torch.where(sol > 0, sol, 0.5 * sol).sum(-1, keepdim=True)
        return y + torch.linalg.det(mat)[..., None].log() + t[..., None].mT.reshape(t.shape[:-1] + (-1,)).mean(-1, True)


class Shapes(nn.Module):
    """Shape arithmetic, split/unbind/stack, tensordot, expand, flatten, var/std, a defaulted argument."""

    def __init__(self, d=4):
        super().__init__()
        self.lin = nn.Linear(d, 4)
        self.register_buffer("P", torch.randn(4, 2, device=torch.get_default_device()))

    def forward(self, x, scale=2.0):
        n = x.shape[-1] // 2
        h = torch.sin(self.lin(x)) * scale
        a, b = h.split([n, x.size(-1) - n], -1)
        s = torch.stack(h.unbind(-1), -1)[..., :n] * b + a.mT.mT
        t = torch.tensordot(h, self.P, dims=1) + h[None].expand((3,) + h.shape)[1][..., :2]
        u = h.var(-1, keepdim=True) * h.std() + h.reshape(h.shape[:-1] + (2, 2)).transpose(-1, -2).flatten(-2)
        return torch.cat([s, t, u, torch.flatten(h[..., None, :], -2)], -1).sum(-1, keepdim=True)


class _Symmetric(nn.Module):
    def forward(self, w):
        return 0.5 * (w + w.mT)


MODULES = {
    "modified-mlp": (ModifiedMLP, 2),
    "piratenet": (PirateNet, 2),
    "layernorm-mlp": (LayerNormMLP, 3),
    "xt-skip": (XTSkip, 2),
    "fourier-buffer": (Fourier, 2),
    "fourier-parameter": (lambda: Fourier(learn=True), 2),
    "resnet": (ResNet, 3),
    "weight-norm": (_weight_norm, 2),
    "dropout-eval": (_dropout, 3),
    "attention": (Attention, 3),
    "logdet-slogdet": (LogDet, 2),
    "logdet-logdet": (lambda: LogDet(positive=True), 2),
    "medley": (Medley, 3),
    "shapes": (Shapes, 4),
}


def _make(name, device, seed=0):
    torch.manual_seed(seed)
    make, d = MODULES[name]
    with torch.device(device):
        return make().to(F64), d


def _relative(got, ref):
    return (got - ref).abs().max().item() / max(ref.abs().max().item(), 1e-300)


# --------------------------------------------------------------------------- values and gradients


@pytest.mark.parametrize("batch", [(5,), (2, 3)], ids=["5", "2x3"])
@pytest.mark.parametrize("name", list(MODULES))
def test_value_matches_module(name, batch, torch_device):
    m, d = _make(name, torch_device)
    x = torch.randn(*batch, d, dtype=F64, device=torch_device)
    f = graph_function(m)
    got, ref = f(x), m(x)
    assert got.shape == ref.shape and got.dtype == ref.dtype
    assert _relative(got, ref) <= 1e-13


@pytest.mark.parametrize("name", list(MODULES))
def test_weight_gradients_match(name, torch_device):
    m, d = _make(name, torch_device)
    x = torch.randn(2, 3, d, dtype=F64, device=torch_device)
    params = list(m.parameters())
    ref = torch.autograd.grad(m(x).square().sum(), params, allow_unused=True)
    got = torch.autograd.grad(graph_function(m)(x).square().sum(), params, allow_unused=True)
    scale = max(r.abs().max().item() for r in ref)  # some are 0 up to rounding: the key bias of attention
    for (pname, _), g, r in zip(m.named_parameters(), got, ref):
        assert r is not None and g is not None, pname
        assert (g - r).abs().max().item() <= 1e-12 * scale, pname


def test_gradients_reach_alpha_and_weight_norm(torch_device):
    pirate, _ = _make("piratenet", torch_device)
    x = torch.randn(5, 2, dtype=F64, device=torch_device)
    (ga,) = torch.autograd.grad(graph_function(pirate)(x).sum(), [pirate.alpha[0]])
    assert ga.abs().item() > 0
    wn, _ = _make("weight-norm", torch_device)
    originals = [wn[0].parametrizations.weight.original0, wn[0].parametrizations.weight.original1]
    grads = torch.autograd.grad(graph_function(wn)(x).sum(), originals)
    assert all(g.abs().sum().item() > 0 for g in grads)


# --------------------------------------------------------------------------- only the Array API touches x


class Boxed:
    """An array type of its own (a stand-in for a jet): torch functions refuse it, its namespace serves it."""

    def __init__(self, v):
        self.v = v

    def __array_namespace__(self, api_version=None):
        return Namespace(_COMPAT, CALLS)

    shape = property(lambda self: tuple(self.v.shape))
    ndim = property(lambda self: self.v.ndim)
    dtype = property(lambda self: self.v.dtype)
    device = property(lambda self: self.v.device)
    mT = property(lambda self: Boxed(self.v.mT))

    def __getitem__(self, index):
        return Boxed(self.v[index])

    def __neg__(self):
        return Boxed(-self.v)


def _binary(name):
    op = getattr(operator, name)
    return (
        lambda self, other: Boxed(op(self.v, _unbox(other))),
        lambda self, other: Boxed(op(_unbox(other), self.v)),
    )


for _op in ("add", "sub", "mul", "truediv", "pow", "matmul", "lt", "le", "gt", "ge", "and_", "or_"):
    _name = _op.rstrip("_")
    setattr(Boxed, f"__{_name}__", _binary(_op)[0])
    setattr(Boxed, f"__r{_name}__", _binary(_op)[1])


def _unbox(a):
    if isinstance(a, Boxed):
        return a.v
    if isinstance(a, (tuple, list)):
        return type(a)(_unbox(v) for v in a)
    return a


def _box(a):
    if isinstance(a, torch.Tensor):
        return Boxed(a)
    if isinstance(a, tuple) and hasattr(a, "_fields"):
        return type(a)(*(_box(v) for v in a))
    return a


class Namespace:
    """array_api_compat's torch namespace over :class:`Boxed` arrays, recording the functions called."""

    def __init__(self, base, calls, prefix=""):
        self._base, self._calls, self._prefix = base, calls, prefix

    def __getattr__(self, name):
        attr = getattr(self._base, name)
        if name == "linalg":
            return Namespace(attr, self._calls, "linalg.")
        if not callable(attr) or isinstance(attr, type) or name == "finfo":
            return attr

        def call(*args, **kwargs):
            self._calls.add(self._prefix + name)
            return _box(attr(*_unbox(args), **{k: _unbox(v) for k, v in kwargs.items()}))

        return call


CALLS: set[str] = set()
_COMPAT = None
# the namespace functions the translations use (activations use their own, Array-API too)
ALLOWED = set(
    "matmul matrix_transpose tensordot exp log log1p expm1 sqrt sin cos tan tanh sinh cosh abs square sign "
    "sum mean prod max min reshape permute_dims expand_dims squeeze broadcast_to concat stack flip where "
    "astype asarray eye zeros ones full arange zeros_like ones_like full_like linalg.det linalg.slogdet linalg.inv "
    "linalg.solve".split()
)


@pytest.mark.parametrize("name", list(MODULES))
def test_only_the_namespace_touches_the_input(name, torch_device):
    global _COMPAT
    from array_api_compat import array_namespace

    from xderiv.activations import get_activation

    m, d = _make(name, torch_device)
    x = torch.randn(2, 3, d, dtype=F64, device=torch_device)
    _COMPAT = array_namespace(x)
    CALLS.clear()
    got = graph_function(m)(Boxed(x))
    assert isinstance(got, Boxed) and _relative(got.v, m(x)) <= 1e-13
    used = set(CALLS)
    assert used and "matmul" in used
    by_activations: set[str] = set()
    for act in ("tanh", "sigmoid", "silu", "gelu", "gelu_tanh", "softplus"):
        get_activation(act)(Boxed(x), Namespace(_COMPAT, by_activations))
    assert used <= ALLOWED | by_activations, used - ALLOWED


# --------------------------------------------------------------------------- never stale


def test_data_edits_optimizer_steps_and_state_dicts_are_seen(torch_device):
    m, d = _make("piratenet", torch_device)
    f = graph_function(m)
    x = torch.randn(5, d, dtype=F64, device=torch_device)
    before = f(x).detach().clone()
    m.out.bias.data += 1.0
    assert torch.allclose(f(x), before + 1.0, rtol=0, atol=1e-13)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    f(x).square().sum().backward()
    opt.step()
    assert _relative(f(x), m(x)) <= 1e-13 and not torch.allclose(f(x), before + 1.0)
    other, _ = _make("piratenet", torch_device, seed=1)
    m.load_state_dict(other.state_dict())
    assert _relative(f(x), other(x)) <= 1e-13
    with torch.no_grad():
        m.B.mul_(0.5)  # in place
    assert _relative(f(x), m(x)) <= 1e-13


def test_weight_norm_is_recomputed(torch_device):
    m, d = _make("weight-norm", torch_device)
    f = graph_function(m)
    x = torch.randn(5, d, dtype=F64, device=torch_device)
    with torch.no_grad():
        m[0].parametrizations.weight.original0.mul_(3.0)  # g
    assert _relative(f(x), m(x)) <= 1e-13


def test_structure_changes_trace_again(torch_device):
    m, d = _make("modified-mlp", torch_device)
    f = graph_function(m)
    x = torch.randn(5, d, dtype=F64, device=torch_device)
    m.hidden.append(nn.Linear(12, 12, dtype=F64, device=torch_device))
    assert _relative(f(x), m(x)) <= 1e-13
    m.out = nn.Sequential(nn.Linear(12, 4, dtype=F64, device=torch_device), nn.Tanh())
    assert f(x).shape == (5, 4) and _relative(f(x), m(x)) <= 1e-13
    logdet, _ = _make("logdet-slogdet", torch_device)
    g = graph_function(logdet)
    logdet.positive = True  # a Python attribute read by forward
    assert _relative(g(x), logdet(x)) <= 1e-13


def test_dropout_in_training_mode_is_refused(torch_device):
    m, d = _make("dropout-eval", torch_device)
    f = graph_function(m)
    x = torch.randn(5, d, dtype=F64, device=torch_device)
    m.train()
    with pytest.raises(NotImplementedError, match=r"module 2 \(Dropout\).*call module.eval\(\)"):
        f(x)
    m.eval()
    assert _relative(f(x), m(x)) <= 1e-13


# --------------------------------------------------------------------------- einsum


@pytest.mark.parametrize(
    "equation, shapes",
    [
        ("ij,jk->ik", [(3, 4), (4, 5)]),
        ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
        ("...i,ij->...j", [(2, 3, 4), (4, 5)]),
        ("bhqd,bhkd->bhqk", [(2, 1, 3, 4), (2, 2, 5, 4)]),
        ("i,i->", [(4,), (4,)]),
        ("ij->ji", [(3, 4)]),
        ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 5)]),
        ("ij,jk", [(3, 4), (4, 5)]),
        ("bi,bi->b", [(3, 4), (1, 4)]),
        ("ij,kl->ijkl", [(2, 3), (3, 2)]),
    ],
)
def test_einsum_lowering(equation, shapes, torch_device):
    with torch.device(torch_device):
        from array_api_compat import array_namespace

        from xderiv.interop.torch_graph import TRANSLATORS

        ops = [torch.randn(*s, dtype=F64, device=torch.get_default_device()) for s in shapes]
        got = TRANSLATORS[torch.einsum](array_namespace(ops[0]), equation, *ops)
        assert _relative(got, torch.einsum(equation, *ops)) <= 1e-13


# --------------------------------------------------------------------------- activation mappings


class Sine(nn.Module):
    def forward(self, z):
        return torch.sin(z)


class PerFeature(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.ones(4, dtype=F64, device=torch.get_default_device()))

    def forward(self, z):
        return torch.tanh(self.a * z)


def my_act(z):
    return z * torch.sigmoid(z)


class UsesMyAct(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 6, dtype=F64)
        self.act = Sine()

    def forward(self, x):
        return my_act(self.act(self.lin(x)))


def test_activation_mappings(torch_device):
    with torch.device(torch_device):
        m = UsesMyAct()
        x = torch.randn(5, 3, dtype=F64, device=torch.get_default_device())
        f = graph_function(m, activations={Sine: "sin", my_act: "silu"})
        assert _relative(f(x), m(x)) <= 1e-13
        assert _relative(graph_function(m)(x), m(x)) <= 1e-13  # traced through without a mapping
        with pytest.raises(TypeError, match="not an elementwise"):
            graph_function(m, activations={nn.Linear: "tanh"})
        with pytest.raises(TypeError, match="not an elementwise"):
            graph_function(m, activations={torch.cat: "tanh"})
        per = nn.Sequential(nn.Linear(3, 4, dtype=F64), PerFeature())
        with pytest.raises(TypeError, match="PerFeature, which is not elementwise"):
            graph_function(per, activations={PerFeature: "tanh"})
        with pytest.raises(TypeError, match="must be an activation name"):
            graph_function(m, activations={Sine: 3})


def test_softplus_threshold_and_relu(torch_device):
    with torch.device(torch_device):
        x = torch.randn(5, 3, dtype=F64, device=torch.get_default_device())
        ok = nn.Sequential(nn.Linear(3, 4, dtype=F64), nn.Softplus(beta=2.0), nn.Mish(), nn.GELU("tanh"))
        assert _relative(graph_function(ok)(x), ok(x)) <= 1e-13
        with pytest.raises(ValueError, match=r"node '_1'.*module 1 \(Softplus\).*threshold"):
            graph_function(nn.Sequential(nn.Linear(3, 4, dtype=F64), nn.Softplus(threshold=5.0)))
        with pytest.raises(NotImplementedError, match=r"module 1 \(ReLU\).*ReLU is not supported"):
            graph_function(nn.Sequential(nn.Linear(3, 4, dtype=F64), nn.ReLU()))


# --------------------------------------------------------------------------- refusals


class Block(nn.Module):
    def __init__(self, op):
        super().__init__()
        self.lin = nn.Linear(3, 3, dtype=F64)
        self.op = op

    def forward(self, x):
        return self.op(self.lin(x))


class Wrapper(nn.Module):
    def __init__(self, op):
        super().__init__()
        self.block = Block(op)

    def forward(self, x):
        return self.block(x) + 1.0


@pytest.mark.parametrize(
    "op, name",
    [
        (lambda h: torch.fft.fft(h).real, "torch.fft.fft"),
        (lambda h: torch.argsort(h, dim=-1).to(h.dtype), "torch.argsort"),
        (lambda h: F.relu(h), "F.relu"),
        (lambda h: h.cumsum(-1), "Tensor.cumsum"),
        (lambda h: h.add_(1.0), "in-place"),
    ],
)
def test_unsupported_operations_name_node_op_and_module(op, name, torch_device):
    with torch.device(torch_device):
        m = Wrapper(op)
        with pytest.raises(NotImplementedError, match=r"node '\w+' \(call_\w+ .*in module block \(Block\).*") as e:
            graph_function(m)
        assert name in str(e.value)


def test_refusals_at_call_time_and_untraceable(torch_device):
    with torch.device(torch_device):
        m = Wrapper(lambda h: h[..., torch.tensor([0, 2], device=torch.get_default_device())])
        with pytest.raises(NotImplementedError, match=r"node 'getitem' .*in module block \(Block\).*basic indexing"):
            graph_function(m)(torch.randn(5, 3, dtype=F64, device=torch.get_default_device()))

        class Branchy(nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = nn.Linear(3, 1, dtype=F64)

            def forward(self, x):
                return self.lin(x) if x.sum() > 0 else -self.lin(x)

        with pytest.raises(NotImplementedError, match="torch.fx cannot trace Branchy.forward.*control flow"):
            graph_function(Branchy())
        with pytest.raises(NotImplementedError, match="indices of max/min"):
            graph_function(Wrapper(lambda h: h.max(dim=-1).indices.to(h.dtype)))(
                torch.randn(5, 3, dtype=F64, device=torch.get_default_device())
            )
        with pytest.raises(TypeError, match="expected a torch.nn.Module"):
            graph_function(operator.add)

        class Two(nn.Module):
            def forward(self, x, t):
                return x * t

        with pytest.raises(NotImplementedError, match="node 't' .*forward takes several inputs"):
            graph_function(Two())


def test_tracing_leaves_the_module_untouched(torch_device):
    with torch.device(torch_device):
        m = Wrapper(lambda h: h * torch.tensor(2.0, dtype=F64, device=torch.get_default_device()))
        before = dict(m.named_buffers()), set(m.__dict__), [k for k, _ in m.named_parameters()]
        f = graph_function(m)
        assert isinstance(f, GraphFunction)
        assert (dict(m.named_buffers()), set(m.__dict__), [k for k, _ in m.named_parameters()]) == before
        x = torch.randn(4, 3, dtype=F64, device=torch.get_default_device())
        assert _relative(f(x), m(x)) <= 1e-13
