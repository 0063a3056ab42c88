"""One PINN training step (loss and every weight gradient), xderiv against the ways people write it.

loss(θ) = mean((−Δu(x) − f(x))²) + 100 · mean(u(x_b)²) for a tanh MLP u, float64;
the step is the loss and its gradient with respect to every weight.  Each method's
first call is compared with plain torch autograd's loss and gradients (to 1e-11
relative); one that disagrees fails and is never timed.

Run: ``pytest benchmarks/test_training.py --benchmark-only`` (``nox -s bench`` runs it
with the other benchmarks).
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import xderiv as xd  # noqa: E402

TOL = 1e-11


@dataclass(frozen=True)
class Training:
    label: str
    sizes: tuple[int, ...]
    interior: int
    boundary: int

    def data(self, seed: int = 0):
        rng = np.random.default_rng(seed)
        d = self.sizes[0]
        weights = []
        for a, b in zip(self.sizes[:-1], self.sizes[1:]):
            weights += [rng.standard_normal((a, b)) * np.sqrt(2.0 / (a + b)), 0.1 * rng.standard_normal(b)]
        x = rng.uniform(-1.0, 1.0, (self.interior, d))
        xb = rng.uniform(-1.0, 1.0, (self.boundary, d))
        xb[np.arange(self.boundary), rng.integers(0, d, self.boundary)] = rng.choice([-1.0, 1.0], self.boundary)
        f = np.sin(x).sum(-1)
        return weights, x, xb, f


PROBLEMS = [
    Training("d=3 tanh 3-64-64-1", (3, 64, 64, 1), 2000, 1200),
    Training("d=10 tanh 10-128-128-128-1", (10, 128, 128, 128, 1), 2000, 1200),
]


def _torch_mlp(ws):
    def u(x):
        h = x
        for i in range(0, len(ws) - 2, 2):
            h = torch.tanh(h @ ws[i] + ws[i + 1])
        return (h @ ws[-2] + ws[-1])[..., 0]

    return u


def _torch_methods(weights, x, xb, f):
    t = {k: torch.tensor(v, dtype=torch.float64) for k, v in (("x", x), ("xb", xb), ("f", f))}
    ws = [torch.tensor(w, dtype=torch.float64, requires_grad=True) for w in weights]
    net = xd.Sequential(
        *[xd.Dense(ws[i], ws[i + 1], "tanh" if i < len(ws) - 2 else "identity") for i in range(0, len(ws), 2)]
    )
    u = _torch_mlp(ws)

    def step(loss_fn):
        def run():
            loss = loss_fn()
            grads = torch.autograd.grad(loss, ws)
            return loss.detach(), [g.detach() for g in grads]

        return run

    def autograd_loss():
        xx = t["x"].clone().requires_grad_()
        y = u(xx)
        (g,) = torch.autograd.grad(y.sum(), xx, create_graph=True)
        lap = sum(torch.autograd.grad(g[:, i].sum(), xx, create_graph=True)[0][:, i] for i in range(xx.shape[1]))
        return ((-lap - t["f"]) ** 2).mean() + 100.0 * (u(t["xb"]) ** 2).mean()

    def func_loss():
        from torch.func import hessian, vmap

        lap = vmap(hessian(u))(t["x"]).diagonal(dim1=-2, dim2=-1).sum(-1)
        return ((-lap - t["f"]) ** 2).mean() + 100.0 * (u(t["xb"]) ** 2).mean()

    def xderiv_loss(mode):
        def loss():
            lap = xd.laplacian(net, t["x"], mode=mode)[:, 0]
            return ((-lap - t["f"]) ** 2).mean() + 100.0 * (net(t["xb"])[:, 0] ** 2).mean()

        return loss

    out = {
        "torch-autograd": step(autograd_loss),
        "torch.func-vmap(hessian)": step(func_loss),
        "xderiv-torch[auto]": step(xderiv_loss("auto")),
        "xderiv-torch[forward]": step(xderiv_loss("forward")),
        "xderiv-torch[backward]": step(xderiv_loss("backward")),
    }
    compiled = torch.compile(xderiv_loss("forward"), fullgraph=True)
    out["xderiv-torch.compile[forward]"] = step(compiled)
    return out


def _jax_methods(weights, x, xb, f):
    if importlib.util.find_spec("jax") is None:
        return {}
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    ws = [jnp.asarray(w) for w in weights]
    x, xb, f = jnp.asarray(x), jnp.asarray(xb), jnp.asarray(f)
    out = {}
    net = xd.Sequential(
        *[xd.Dense(ws[i], ws[i + 1], "tanh" if i < len(ws) - 2 else "identity") for i in range(0, len(ws), 2)]
    )

    def xderiv_loss(params):
        n = net.with_arrays(params)
        lap = xd.laplacian(n, x, mode="forward")[:, 0]
        return jnp.mean((-lap - f) ** 2) + 100.0 * jnp.mean(n(xb)[:, 0] ** 2)

    out["xderiv-jax.jit[forward]"] = xderiv_loss
    if importlib.util.find_spec("folx") is not None:
        import folx

        def u1(params, p):
            h = p
            for i in range(0, len(params) - 2, 2):
                h = jnp.tanh(h @ params[i] + params[i + 1])
            return (h @ params[-2] + params[-1])[0]

        def folx_loss(params):
            lap = jax.vmap(folx.forward_laplacian(lambda p: u1(params, p)))(x).laplacian
            ub = jax.vmap(lambda p: u1(params, p))(xb)
            return jnp.mean((-lap - f) ** 2) + 100.0 * jnp.mean(ub**2)

        out["jax+folx.jit"] = folx_loss

    def wrap(loss):
        fn = jax.jit(jax.value_and_grad(loss))

        def run():
            value, grads = fn(ws)
            jax.block_until_ready(grads)
            return value, grads

        return run

    return {name: wrap(loss) for name, loss in out.items()}


def _flat(loss, grads):
    return float(loss), np.concatenate([np.asarray(g).ravel() for g in grads])


_CACHE: dict = {}


def _methods(i):
    if i not in _CACHE:
        _CACHE.clear()
        data = PROBLEMS[i].data()
        methods = {**_torch_methods(*data), **_jax_methods(*data)}
        ref = _flat(*methods["torch-autograd"]())
        _CACHE[i] = (methods, ref)
    return _CACHE[i]


METHODS = [
    "torch-autograd",
    "torch.func-vmap(hessian)",
    "xderiv-torch[auto]",
    "xderiv-torch[forward]",
    "xderiv-torch[backward]",
    "xderiv-torch.compile[forward]",
    "xderiv-jax.jit[forward]",
    "jax+folx.jit",
]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("i", range(len(PROBLEMS)), ids=[p.label.replace(" ", "_") for p in PROBLEMS])
def test_training_step(i, method, benchmark, request):
    p = PROBLEMS[i]
    request.node.user_properties.append(
        ("case", {"problem": "training", "label": p.label, "n": p.interior, "d": p.sizes[0], "method": method})
    )
    methods, (ref_loss, ref_grad) = _methods(i)
    if method not in methods:
        pytest.skip("not installed")
    run = methods[method]
    t0 = time.perf_counter()
    loss, grad = _flat(*run())
    first = time.perf_counter() - t0
    assert abs(loss - ref_loss) <= TOL * abs(ref_loss), f"loss {loss} vs autograd {ref_loss}"
    err = float(np.max(np.abs(grad - ref_grad)) / np.max(np.abs(ref_grad)))
    assert err <= TOL, f"weight gradients disagree with autograd's: max rel err {err:.2e}"
    benchmark.extra_info.update({"first_call_s": first, "grad_rel_err": err})
    t0 = time.perf_counter()
    run()  # warm: the first call may have compiled
    second = time.perf_counter() - t0
    rounds = max(3, min(50, int(5.0 // max(second, 1e-3))))  # about 5 s of rounds
    benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=1)
