"""Any network: functions of x written against the Array API, differentiated by the jet engine.

The graphs below are the networks PINN and wave-function users write that are not chains of
layers (the modified MLP, a gated adaptive residual with Fourier features, LayerNorm,
concatenated skips, attention, a log-determinant), written once against the Array API and run
on the session's backend.  They are checked three independent ways: the jet kinds against each
other (a Hessian jet, collapsed and per-direction Taylor jets: different pairings), against
finite differences, and, for chains wrapped as functions, against the chain recursions; the
torch and JAX sessions add autodiff references, weight gradients and ``jax.jit``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from array_api_compat import array_namespace

import xderiv as xd
from tests.helpers import fd_hessian, fd_jacobian, rel_err
from tests.networks_zoo import points, zoo


def _weights(backend: Any, seed: int, *shapes: tuple[int, ...]) -> list[Any]:
    rng = np.random.default_rng(seed)
    return [backend.asarray(rng.standard_normal(s) / math.sqrt(s[0])) for s in shapes]


def modified_mlp(backend: Any, d: int = 3, w: int = 6, m: int = 2):
    """Two encoders U, V gate every hidden layer: H <- (1 - Z) U + Z V (Wang, Teng & Perdikaris)."""
    wu, wv, w1, w2, wo, bu, bv = _weights(backend, 1, (d, w), (d, w), (d, w), (w, w), (w, m), (w,), (w,))

    def f(x: Any) -> Any:
        xp = array_namespace(x)
        u, v = xp.tanh(x @ wu + bu), xp.tanh(x @ wv + bv)
        h = xp.tanh(x @ w1)
        z = xp.tanh(h @ w2)
        h = (1 - z) * u + z * v
        return h @ wo

    return f


def pirate(backend: Any, d: int = 2, k: int = 3, m: int = 1):
    """Fourier features by concat([cos(xB), sin(xB)]), then a gated residual x' = a f(x) + (1 - a) x."""
    (b, w1, w2, wo) = _weights(backend, 2, (d, k), (2 * k, 2 * k), (2 * k, 2 * k), (2 * k, m))
    alpha = 0.3
    silu = xd.get_activation("silu")

    def f(x: Any) -> Any:
        xp = array_namespace(x)
        z = x @ b
        h = xp.concat([xp.cos(z), xp.sin(z)], axis=-1)
        g = silu(h @ w1, xp) * xp.tanh(h @ w2)
        h = alpha * g + (1 - alpha) * h
        return h @ wo

    return f


def layer_norm(backend: Any, d: int = 3, w: int = 5, m: int = 1):
    """A LayerNorm between two layers, with a skip that concatenates the input, and separate (x, t) encoders."""
    w1, w2, wt, gain = _weights(backend, 3, (d - 1, w), (w + d, m), (1, w), (w,))

    def f(x: Any) -> Any:
        xp = array_namespace(x)
        h = xp.tanh(x[..., 1:] @ w1) * xp.sin(x[..., :1] @ wt)
        mu = xp.mean(h, axis=-1, keepdims=True)
        var = xp.var(h, axis=-1, keepdims=True)
        h = (h - mu) / xp.sqrt(var + 1e-5) * gain
        return xp.concat([h, x**2], axis=-1) @ w2

    return f


def attention(backend: Any, d: int = 3, e: int = 4, m: int = 1):
    """Tokens made from the coordinates, one softmax attention head, mean pooling."""
    emb, wq, wk, wv, wo = _weights(backend, 4, (1, e), (e, e), (e, e), (e, e), (e, m))

    def f(x: Any) -> Any:
        xp = array_namespace(x)
        t = xp.tanh(xp.expand_dims(x, axis=-1) @ emb)  # (..., d, e)
        q, k, v = t @ wq, t @ wk, t @ wv
        s = q @ xp.matrix_transpose(k) / math.sqrt(e)
        s = xp.exp(s - xp.max(s, axis=-1, keepdims=True))
        a = s / xp.sum(s, axis=-1, keepdims=True)
        return xp.mean(a @ v, axis=-2) @ wo

    return f


def log_determinant(backend: Any, n: int = 3):
    """log|det| of a matrix of orbitals phi_j(x_i) of n particles in 1-D: a scalar field (no output axis)."""
    a, b = _weights(backend, 5, (1, n), (1, n))

    def f(x: Any) -> Any:
        xp = array_namespace(x)
        r = xp.expand_dims(x, axis=-1)  # (..., n, 1)
        m = xp.tanh(r @ a + b) + xp.exp(-(r**2)) * (r @ a)
        return xp.linalg.slogdet(m)[1]

    return f


_FAST_ON_SLOW_BACKENDS = False

GRAPHS = {
    "modified_mlp": (modified_mlp, 3),
    "pirate": (pirate, 2),
    "layer_norm": (layer_norm, 3),
    "attention": (attention, 3),
    "log_determinant": (log_determinant, 3),
}


def _graph(name: str, backend: Any) -> tuple[Any, Any]:
    if backend.name in ("jax", "dask") and not _FAST_ON_SLOW_BACKENDS:
        pytest.skip(
            f"{backend.name} runs one call per test here (eager JAX compiles every primitive per shape, dask "
            "builds a graph per call): the rules are backend-independent and covered by test_jax_jit"
        )
    make, d = GRAPHS[name]
    if name == "log_determinant" and not hasattr(backend.xp, "linalg"):
        pytest.skip(f"{backend.name} has no linalg extension here")
    x = backend.asarray(np.random.default_rng(11).uniform(-0.8, 0.8, (4, d)))
    return xd.function(make(backend)), x


@pytest.mark.parametrize("name", list(GRAPHS))
def test_jet_kinds_agree(name: str, backend: Any) -> None:
    """A Hessian jet, collapsed Taylor jets and per-direction Taylor jets give one Hessian."""
    f, x = _graph(name, backend)
    np_ = backend.to_numpy
    d = x.shape[-1]
    r = xd.derivatives(f, x, hessian=True, laplacian=True)
    hess = np_(r.hessian)
    assert rel_err(np_(r.value), np_(f(x))) < 1e-15
    diag = np.diagonal(hess, axis1=-2, axis2=-1)
    assert rel_err(np_(xd.laplacian(f, x)), diag.sum(-1)) < 1e-12
    assert rel_err(np_(xd.laplacian(f, x, coords=[0, d - 1])), diag[..., 0] + diag[..., -1]) < 1e-12
    assert rel_err(np_(xd.hessian_diagonal(f, x)), diag) < 1e-12
    rng = np.random.default_rng(0)
    v, s = rng.standard_normal(d), rng.standard_normal((d, 2))
    assert rel_err(np_(xd.hvp(f, x, backend.asarray(v))), hess @ v) < 1e-11  # polarisation: a digit of |H|
    d1, d2 = xd.directional(f, x, backend.asarray(v))
    assert rel_err(np_(d1), np_(r.jacobian) @ v) < 1e-12
    assert rel_err(np_(d2), np.einsum("...ij,i,j->...", hess, v, v)) < 1e-12
    assert rel_err(np_(xd.trace_hessian(f, x, backend.asarray(s))), np.einsum("...ij,ik,jk->...", hess, s, s)) < 1e-12
    assert rel_err(np_(xd.partial(f, x, (1, 1) + (0,) * (d - 2))), hess[..., 0, 1]) < 1e-12
    _, t1, t2 = xd.taylor(f, x, backend.asarray(s), order=2)
    assert rel_err(np_(t2), np.einsum("...ij,ik,jk->...k", hess, s, s)) < 1e-12


@pytest.mark.parametrize("name", list(GRAPHS))
def test_finite_differences(name: str, backend: Any) -> None:
    """Jacobian against central differences of the value, Hessian against those of the Jacobian."""
    f, x = _graph(name, backend)
    np_ = backend.to_numpy
    assert rel_err(np_(xd.jacobian(f, x)).reshape(fd_jacobian(f, x, backend).shape), fd_jacobian(f, x, backend)) < 1e-8
    hess = np_(xd.hessian(f, x))
    assert rel_err(hess.reshape(fd_hessian(f, x, backend).shape), fd_hessian(f, x, backend)) < 1e-7


def test_third_order_against_differences_of_second(backend: Any) -> None:
    """The third Taylor coefficient is the derivative of the second along v (central differences, O(h^2))."""
    f, x = _graph("modified_mlp", backend)
    v = backend.asarray([0.6, -0.3, 0.2])
    np_ = backend.to_numpy
    d3 = np_(xd.taylor(f, x, v, order=3)[3])
    errors = []
    for h in (1e-2, 5e-3):
        up = np_(xd.directional(f, x + h * v, v)[1])
        down = np_(xd.directional(f, x - h * v, v)[1])
        errors.append(np.max(np.abs((up - down) / (2 * h) - d3)))
    assert errors[1] < errors[0] / 3.0  # second order convergence


NETS = ("mlp-sigmoid", "residual-first", "potential-general")
OPERATORS = {
    "jacobian": lambda net, x, b: xd.jacobian(net, x),
    "hessian": lambda net, x, b: xd.hessian(net, x),
    "laplacian": lambda net, x, b: xd.laplacian(net, x),
    "hessian_diagonal": lambda net, x, b: xd.hessian_diagonal(net, x),
    "hvp": lambda net, x, b: xd.hvp(net, x, b.asarray(np.linspace(-1, 1, x.shape[-1]))),
    "taylor": lambda net, x, b: xd.taylor(net, x, b.asarray(np.linspace(0.5, 1, x.shape[-1])), order=4)[4],
    "biharmonic": lambda net, x, b: xd.biharmonic(net, x),
    "partial": lambda net, x, b: xd.partial(net, x, (2, 1) + (0,) * (x.shape[-1] - 2)),
}


@pytest.mark.parametrize("op", list(OPERATORS))
@pytest.mark.parametrize("name", NETS)
def test_chain_as_function_matches_chain_recursions(name: str, op: str, backend: Any) -> None:
    """A chain called inside a function: by its own recursions or through the rules, the same numbers."""
    if backend.name in ("jax", "dask"):
        _graph(name, backend)  # skips, saying why
    nets = zoo(backend)
    if name not in nets:
        pytest.skip(f"{name} is not in this zoo")
    net = nets[name]()
    x = points(net, backend)
    run = OPERATORS[op]
    expected = backend.to_numpy(run(net, x, backend))
    # on the operator's input itself the chain runs its own recursions; on anything computed from it
    # (here x + 0), its layers run through the rules
    for f in (xd.function(lambda x: net(x)), xd.function(lambda x: net(x + 0.0))):
        assert rel_err(backend.to_numpy(run(f, x, backend)), expected) < 1e-12


def test_composite_of_function_and_networks(backend: Any) -> None:
    """phi * function + net (a hard boundary condition) equals the same composite over the chain itself."""
    if backend.name in ("jax", "dask"):
        _graph("modified_mlp", backend)  # skips, saying why
    nets = zoo(backend)
    net = nets["mlp-sigmoid"]()
    d = net.in_features
    inner = xd.mlp([d, 5, net.out_features], activation="tanh", xp=backend.module, device=backend.device, seed=3)
    inner = inner.with_arrays([backend.asarray(backend.to_numpy(a)) for a in inner.arrays()])
    phi = xd.quadratic(backend.asarray(-2.0 * np.eye(d)), b=1.0)
    x = points(net, backend)
    graph = phi * xd.function(lambda x: inner(x)) + net
    chain = phi * inner + net
    np_ = backend.to_numpy
    assert rel_err(np_(graph(x)), np_(chain(x))) < 1e-14
    for op in (xd.hessian, xd.laplacian, xd.jacobian):
        assert rel_err(np_(op(graph, x)), np_(op(chain, x))) < 1e-12


def test_batch_shapes_and_chunks(backend: Any) -> None:
    f, x = _graph("modified_mlp", backend)
    np_ = backend.to_numpy
    whole = np_(xd.laplacian(f, x))
    assert rel_err(np_(xd.laplacian(f, x, chunk_size=3)), whole) < 1e-15
    grid = backend.asarray(backend.to_numpy(x).reshape(2, 2, 3))
    assert np_(xd.hessian(f, grid)).shape == (2, 2, 2, 3, 3)
    assert rel_err(np_(xd.laplacian(f, grid)).reshape(whole.shape), whole) < 1e-15
    single = xd.laplacian(f, x[0, ...])
    assert rel_err(np_(single), whole[0]) < 1e-15


def test_estimators_on_a_graph(backend: Any) -> None:
    """An estimate along all d coordinates (sdgd with k = d) is the exact Laplacian; hutchinson is unbiased in mean."""
    f, x = _graph("attention", backend)
    np_ = backend.to_numpy
    exact = np_(xd.laplacian(f, x))
    est = np_(xd.laplacian(f, x, estimator="sdgd", samples=3, seed=0))
    assert rel_err(est, exact) < 1e-12
    hutch = np.mean([np_(xd.laplacian(f, x, estimator="hutchinson", samples=8, seed=s)) for s in range(30)], axis=0)
    assert rel_err(hutch, exact) < 0.5
    bih = np_(xd.biharmonic(f, x))
    gauss = np_(xd.biharmonic(f, x, estimator="gaussian", samples=400, seed=1))
    assert gauss.shape == bih.shape and rel_err(gauss, bih) < 0.5


def test_errors(backend: Any) -> None:
    f, x = _graph("modified_mlp", backend)
    with pytest.raises(ValueError, match="mode='backward' is not available"):
        xd.laplacian(f, x, mode="backward")

    def branchy(x: Any) -> Any:
        return x if float(x[0, 0]) > 0 else -x

    with pytest.raises(TypeError, match="depends on the input"):
        xd.jacobian(xd.function(branchy), x)

    def running_product(x: Any) -> Any:
        return array_namespace(x).cumulative_prod(x, axis=-1)

    with pytest.raises((NotImplementedError, AttributeError), match="cumulative_prod"):
        xd.hessian(xd.function(running_product), x)
    with pytest.raises(ValueError, match="must return"):
        xd.laplacian(xd.function(lambda x: array_namespace(x).sum(x)), x)


# --------------------------------------------------------------------------- autodiff references


def test_torch_autodiff_and_weight_gradients(backend: Any) -> None:
    """Every graph against torch.func (per point: vmap of slogdet's Hessian is wrong in torch), and a PINN loss's
    weight gradient against nested autograd."""
    if backend.name != "torch":
        pytest.skip("torch session only")
    import torch
    from torch.func import hessian, jacrev

    for name in GRAPHS:
        f, x = _graph(name, backend)
        points_ = [x[i, ...] for i in range(x.shape[0])]
        h_ref = torch.stack([hessian(f.f)(p) for p in points_])
        j_ref = torch.stack([jacrev(f.f)(p) for p in points_])
        assert rel_err(backend.to_numpy(xd.hessian(f, x)), backend.to_numpy(h_ref)) < 1e-10, name
        assert rel_err(backend.to_numpy(xd.jacobian(f, x)), backend.to_numpy(j_ref)) < 1e-10, name

    w = torch.tensor(np.random.default_rng(0).standard_normal((3, 4)), dtype=torch.float64, device=backend.device)
    w.requires_grad_(True)
    f, x = _graph("modified_mlp", backend)

    def u(y: Any) -> Any:
        xp = array_namespace(y)
        return xp.sum(xp.tanh(y @ w), axis=-1, keepdims=True) * f.f(y)

    loss = torch.sum(xd.laplacian(xd.function(u), x) ** 2)
    (grad,) = torch.autograd.grad(loss, w)
    lap_ref = torch.stack([torch.diagonal(hessian(u)(x[i, ...]), dim1=-2, dim2=-1).sum(-1) for i in range(4)])
    (grad_ref,) = torch.autograd.grad(torch.sum(lap_ref**2), w)
    assert rel_err(backend.to_numpy(grad), backend.to_numpy(grad_ref)) < 1e-9


def test_jax_jit(backend: Any) -> None:
    """A function of x traced whole by jax.jit agrees with the eager call and with jax.hessian."""
    if backend.name != "jax":
        pytest.skip("jax session only")
    import jax

    make, _ = GRAPHS["pirate"]
    f = xd.function(make(backend))
    x = backend.asarray(np.random.default_rng(11).uniform(-0.8, 0.8, (4, 2)))
    lap = jax.jit(lambda x: xd.laplacian(f, x))(x)
    ref = jax.vmap(jax.hessian(f.f))(x)
    assert rel_err(np.asarray(lap), np.trace(np.asarray(ref), axis1=-2, axis2=-1)) < 1e-10


def test_compile_a_function(backend: Any) -> None:
    """xd.compile of a graph: jax.jit on JAX, the eager call on NumPy and strict (torch: tests/test_compile.py)."""
    if backend.name == "dask":
        _graph("pirate", backend)  # skips, saying why
    if backend.name == "torch":
        pytest.skip("make_fx then torch.compile: tests/test_compile.py")
    make, _ = GRAPHS["pirate"]
    f = xd.function(make(backend))
    x = backend.asarray(np.random.default_rng(3).uniform(-0.8, 0.8, (3, 2)))
    got = xd.compile(xd.laplacian, f)(x)
    assert rel_err(backend.to_numpy(got), backend.to_numpy(xd.laplacian(f, x))) < 1e-13


def test_dask_stays_lazy_and_matches_numpy(backend: Any) -> None:
    """On dask a graph's operators build lazy arrays; computed, they are NumPy's numbers."""
    if backend.name != "dask":
        pytest.skip("dask session only")
    make, _ = GRAPHS["layer_norm"]
    rng = np.random.default_rng(5)
    xn = rng.uniform(-0.8, 0.8, (6, 3))
    from tests.conftest import _make_backend

    numpy_backend = _make_backend("numpy")
    f_dask, f_numpy = xd.function(make(backend)), xd.function(make(numpy_backend))
    x = backend.module.from_array(xn, chunks=(3, 3))
    for op in (xd.laplacian, xd.hessian):
        lazy = op(f_dask, x)
        assert type(lazy).__name__ == "Array"
        assert rel_err(backend.to_numpy(lazy), np.asarray(op(f_numpy, xn))) < 1e-13


def test_memory_budget_chunks_a_graph(backend: Any) -> None:
    """Under a small budget a graph's Hessian comes in chunks, the same numbers; below one point it refuses."""
    f, x = _graph("modified_mlp", backend)
    np_ = backend.to_numpy
    whole = np_(xd.hessian(f, x))
    before = xd.get_memory_budget()
    try:
        xd.set_memory_budget(40_000)  # about one point of this graph's Hessian jet at a time
        assert rel_err(np_(xd.hessian(f, x)), whole) < 1e-15
        xd.set_memory_budget(1_000)
        with pytest.raises(MemoryError, match="one point of function"):
            xd.hessian(f, x)
    finally:
        xd.set_memory_budget(before)


def test_numpy_scalars_and_arrays_on_the_left_of_a_jet():
    """``np.float64(c) * x`` and ``np.ones(k) * x`` with x a jet stay jets (NumPy defers to the jet's operators)."""
    f = xd.function(lambda x: np.float64(2.0) * x[..., :1] ** 2 + np.ones(1) * x[..., 1:] - np.float64(1.0))
    x = np.random.default_rng(0).standard_normal((4, 2))
    assert np.allclose(xd.laplacian(f, x)[:, 0], 4.0, rtol=1e-14)
    assert np.allclose(xd.gradient(f, x), np.stack([4.0 * x[:, 0], np.ones(4)], axis=-1), rtol=1e-14)
