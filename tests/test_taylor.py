"""Taylor mode (``xd.taylor``), the biharmonic and partial derivatives of any order.

References, from the most to the least independent:

- nested ``torch.func.jvp`` / ``jax.jvp`` (and nested Hessians) of the plain re-implementation in
  ``tests/reference.py``, in the torch and jax sessions;
- ``tests/data/taylor_reference.npz``: the same nested-``jvp`` derivatives, computed by torch and
  stored, so that the numpy, strict and dask sessions (which have no autodiff) compare against them
  too, and the torch and jax sessions for every case; the torch session recomputes them and checks
  the file on ``LIVE_CASES`` (every case with ``--exhaustive``; ``python -m tests.test_taylor``
  regenerates it);
- on every backend, the operators of order <= 2 (``directional``, ``hessian``, ``jacobian``),
  central differences of the order below, two independent exact routes to the biharmonic, and
  Leibniz's rule written out by hand for composites.
"""

from __future__ import annotations

import math
import os
import zlib
from typing import Any

import numpy as np
import pytest

import xderiv as xd

from .helpers import rel_err
from .networks_zoo import general_potential, residual_first
from .reference import network_function

ORDER = 6
TOL = 1e-10  # against nested autodiff in float64
EXACT = 1e-12  # two exact routes through xderiv
N, R = 4, 2
DATA = os.path.join(os.path.dirname(__file__), "data", "taylor_reference.npz")

BUILTIN = [
    "identity",
    "sigmoid",
    "tanh",
    "softplus",
    "quadratic",
    "sin",
    "silu",
    "antitanh",
    "logcosh",
    "gelu",
    "gelu_tanh",
    "elu",
    "celu",
    "selu",
    "mish",
    "relu2",
    "gaussian",
]
PARAMETRIC = ["softplus(beta=2.0)", "sin(freq=30.0)", "elu(alpha=0.5)", "celu(alpha=2.0)", "gaussian(width=0.5)"]


# --------------------------------------------------------------------------- networks and points


def layers_net(backend: Any) -> xd.Potential:
    """Every layer kind: InputScale, Fourier features, a residual and a dense layer, and a Potential head
    with a non-symmetric A and a linear term."""
    rng = np.random.default_rng(21)

    def a(v: Any) -> Any:
        return backend.asarray(np.asarray(v, dtype=np.float64))

    trunk = xd.Sequential(
        xd.InputScale(a([0.1, -0.2, 0.3]), a([1.5, 0.8, 1.2])),
        xd.fourier_features(a(0.7 * rng.standard_normal((3, 2)))),
        xd.Residual(a(0.5 * rng.standard_normal((4, 4))), a(0.1 * rng.standard_normal(4)), "gelu", step=0.5),
        xd.Dense(a(0.6 * rng.standard_normal((4, 5))), a(0.1 * rng.standard_normal(5)), "silu"),
    )
    return xd.Potential(
        trunk, a(rng.standard_normal(5)), a(rng.standard_normal((3, 3))), a(rng.standard_normal(3)), 0.2
    )


def activation_net(backend: Any, name: str) -> xd.Sequential:
    return xd.mlp([3, 5, 2], activation=name, output_activation=name, seed=8, xp=backend.module, device=backend.device)


# case -> (network builder, layout of v)
CASES: dict[str, tuple[Any, str]] = {
    f"act-{name}": ((lambda backend, name=name: activation_net(backend, name)), "point")
    for name in BUILTIN + PARAMETRIC
}
CASES.update(
    {
        "layers-shared": (layers_net, "shared"),
        "layers-point": (layers_net, "point"),
        "layers-multi-shared": (layers_net, "multi-shared"),
        "layers-multi-point": (layers_net, "multi-point"),
        "residual-first-multi-point": (lambda backend: residual_first(backend, "float64"), "multi-point"),
        "residual-first-shared": (lambda backend: residual_first(backend, "float64"), "shared"),
    }
)
V_SHAPES = {"shared": (3,), "point": (N, 3), "multi-shared": (3, R), "multi-point": (N, 3, R)}
# Cases checked against live nested jvp in the torch and jax sessions (all of them with --exhaustive): every
# layer kind with one and several directions, and activations whose any-order derivatives take different
# routes (polynomial in tanh, Hermite times the density, composed series, a rescaled parametric one).
# Every case, every layout of v included, is checked against the stored nested-jvp derivatives on every
# backend, and every activation against mpmath to order 6 by test_activations; nested jvp of order 6
# costs 3^6 products per product of the reference.
LIVE_CASES = {"act-tanh", "act-gelu", "act-mish", "act-sin(freq=30.0)", "layers-point", "layers-multi-shared"}


def case_inputs(case: str) -> tuple[np.ndarray, np.ndarray]:
    """``x`` (N, 3) and ``v`` in the case's layout, fixed per case (float64 NumPy)."""
    rng = np.random.default_rng(zlib.crc32(case.encode()))
    x = 0.8 * rng.standard_normal((N, 3))
    return x, rng.standard_normal(V_SHAPES[CASES[case][1]])


def as_columns(v: np.ndarray, layout: str) -> np.ndarray:
    """``v`` as (N, d, r) per-point direction columns."""
    if layout == "shared":
        return np.broadcast_to(v[None, :, None], (N, 3, 1))
    if layout == "point":
        return v[:, :, None]
    if layout == "multi-shared":
        return np.broadcast_to(v[None], (N,) + v.shape)
    return v


def from_columns(a: np.ndarray, layout: str) -> np.ndarray:
    """(K + 1, N, ..., r) derivatives in the public layout (drop the direction axis of one direction)."""
    return a[..., 0] if layout in ("shared", "point") else a


# --------------------------------------------------------------------------- nested autodiff references


def _jets(jvp: Any, stack: Any, f: Any, order: int) -> Any:
    """``(x, v) -> stack([f, d_v f, ..., d_v^K f])`` by K nested jvps, the lower orders passed out as aux."""

    def nest(k: int, v: Any) -> Any:
        if k == 0:
            return lambda t: (f(t), [])

        def g(t: Any) -> Any:
            low, high, aux = jvp(nest(k - 1, v), (t,), (v,), has_aux=True)
            return high, aux + [low]

        return g

    def one(x: Any, v: Any) -> Any:
        top, low = nest(order, v)(x)
        return stack(low + [top])

    return one


def _torch_jets(f: Any, x: Any, cols: Any, order: int) -> Any:
    """(K + 1, N, ..., r): nested torch.func.jvp of the per-point ``f`` along each column, batched by vmap."""
    import torch
    from torch.func import jvp, vmap

    n, d, r = cols.shape
    xs = torch.repeat_interleave(x, r, dim=0)  # (N r, d): point-major, direction-minor
    vs = torch.reshape(torch.movedim(cols, -1, 1), (n * r, d))
    out = vmap(_jets(jvp, torch.stack, f, order))(xs, vs)  # (N r, K + 1, ...)
    out = torch.reshape(out, (n, r) + tuple(out.shape[1:]))
    return torch.movedim(torch.movedim(out, 2, 0), 2, -1)


def _jax_jets(f: Any, x: Any, cols: Any, order: int) -> Any:
    import jax
    import jax.numpy as jnp

    n, d, r = cols.shape
    xs = jnp.repeat(x, r, axis=0)
    vs = jnp.reshape(jnp.moveaxis(cols, -1, 1), (n * r, d))
    out = jax.jit(jax.vmap(_jets(jax.jvp, jnp.stack, f, order)))(xs, vs)
    out = jnp.reshape(out, (n, r) + tuple(out.shape[1:]))
    return jnp.moveaxis(jnp.moveaxis(out, 2, 0), 2, -1)


def nested_jvp(backend: Any, f: Any, x: np.ndarray, v: np.ndarray, layout: str, order: int = ORDER) -> np.ndarray:
    """The reference derivatives of the per-point function ``f`` (backend arrays) in the public layout."""
    xs, cols = backend.asarray(x), backend.asarray(np.ascontiguousarray(as_columns(v, layout)))
    jets = _torch_jets if backend.name == "torch" else _jax_jets
    return from_columns(backend.to_numpy(jets(f, xs, cols, order)), layout)


def point_function(backend: Any, net: Any) -> Any:
    """``net`` as a per-point function of ``x`` (d,) with its own weights, from tests/reference.py."""
    f = network_function(net, backend.xp)
    arrays = net.arrays()
    return lambda xi: f(arrays, xi)


def autodiff_session(backend: Any) -> bool:
    return backend.name in ("torch", "jax")


def stored_reference() -> dict[str, np.ndarray]:
    with np.load(DATA) as data:
        return {k: data[k] for k in data.files}


def ours(backend: Any, net: Any, x: np.ndarray, v: np.ndarray, order: int = ORDER) -> np.ndarray:
    out = xd.taylor(net, backend.asarray(x), backend.asarray(v), order=order)
    assert len(out) == order + 1
    return np.stack([backend.to_numpy(a) for a in out])


# --------------------------------------------------------------------------- taylor against references


@pytest.mark.parametrize("case", sorted(CASES))
def test_taylor_matches_nested_jvp(backend, case, exhaustive):
    """Every activation (built-in and parametric) and layer kind, one and several directions, shared and per point:
    orders 0..6 against nested jvp, stored (every session) and live (torch, jax: LIVE_CASES, all with --exhaustive)."""
    build, layout = CASES[case]
    net = build(backend)
    x, v = case_inputs(case)
    got = ours(backend, net, x, v)
    stored = stored_reference()[case]
    assert got.shape == stored.shape
    for k in range(ORDER + 1):
        assert rel_err(got[k], stored[k]) < TOL, (case, k)
    if autodiff_session(backend) and (case in LIVE_CASES or exhaustive):
        live = nested_jvp(backend, point_function(backend, net), x, v, layout)
        for k in range(ORDER + 1):
            assert rel_err(got[k], live[k]) < TOL, (case, k)
        if backend.name == "torch":  # the stored file is what it claims to be
            assert rel_err(live, stored) < 1e-12


@pytest.mark.parametrize("case", ["layers-point", "layers-multi-shared", "residual-first-multi-point", "act-mish"])
def test_low_orders_are_the_value_directional_and_hessian(backend, case):
    build, layout = CASES[case]
    net = build(backend)
    x, v = case_inputs(case)
    got = ours(backend, net, x, v, order=2)
    xs = backend.asarray(x)
    cols = as_columns(v, layout)  # (N, d, r)
    value = backend.to_numpy(net(xs)).reshape(N, -1)
    jac = backend.to_numpy(xd.jacobian(net, xs)).reshape(N, -1, 3)
    hess = backend.to_numpy(xd.hessian(net, xs)).reshape(N, -1, 3, 3)
    want = [
        np.broadcast_to(value[..., None], value.shape + (cols.shape[-1],)),
        np.einsum("nmi,nir->nmr", jac, cols),
        np.einsum("nmij,nir,njr->nmr", hess, cols, cols),
    ]
    for k in range(3):
        assert rel_err(got[k].reshape(want[k].shape[:1] + (-1,)), from_columns(want[k], layout).reshape(N, -1)) < EXACT
    if layout in ("point", "shared"):
        d1, d2 = xd.directional(net, xs, backend.asarray(v))
        assert rel_err(got[1], backend.to_numpy(d1)) < EXACT and rel_err(got[2], backend.to_numpy(d2)) < EXACT


@pytest.mark.parametrize("case", ["layers-point", "residual-first-shared", "act-gelu_tanh"])
def test_each_order_is_the_derivative_of_the_one_below(backend, case):
    """Central differences along v of d^(k-1) give d^k (no reference outside xderiv)."""
    build, layout = CASES[case]
    net = build(backend)
    x, v = case_inputs(case)
    h = 1e-4
    step = v if layout == "point" else np.broadcast_to(v, x.shape)
    plus, minus, mid = (ours(backend, net, x + s * h * step, v) for s in (1.0, -1.0, 0.0))
    for k in range(1, ORDER + 1):
        fd = (plus[k - 1] - minus[k - 1]) / (2 * h)
        assert rel_err(fd, mid[k]) < 1e-6, (case, k)


def test_shapes_layouts_and_orders(backend):
    pot = layers_net(backend)
    vec = residual_first(backend, "float64")  # 3 -> 2
    rng = np.random.default_rng(3)
    x = backend.asarray(rng.standard_normal((2, 5, 3)))
    layouts = {(3,): (), (2, 5, 3): (), (3, 4): (4,), (2, 5, 3, 4): (4,)}
    for vshape, tail in layouts.items():
        v = backend.asarray(rng.standard_normal(vshape))
        for net, m in ((pot, ()), (vec, (2,))):
            out = xd.taylor(net, x, v, order=3)
            assert [tuple(a.shape) for a in out] == [(2, 5) + m + tail] * 4, (vshape, m)
    one = xd.taylor(pot, backend.asarray(np.ones(3)), backend.asarray(np.ones(3)), order=2)
    assert [tuple(a.shape) for a in one] == [()] * 3
    (y,) = xd.taylor(vec, x, backend.asarray(np.ones(3)), order=0)
    assert rel_err(backend.to_numpy(y), backend.to_numpy(vec(x))) == 0.0
    # x of shape (d, d) and v of the same shape: one direction per point (the documented reading)
    xs, vs = rng.standard_normal((3, 3)), rng.standard_normal((3, 3))
    both = xd.taylor(vec, backend.asarray(xs), backend.asarray(vs), order=3)[3]
    for i in range(3):
        single = xd.taylor(vec, backend.asarray(xs[i]), backend.asarray(vs[i]), order=3)[3]
        assert rel_err(backend.to_numpy(both)[i], backend.to_numpy(single)) < EXACT


@pytest.mark.parametrize("order", [1, 2, 4, 6])
def test_weighted_top_derivative_is_the_weighted_sum(backend, order):
    """taylor(..., weights=w) carries the top coefficient collapsed: the same as summing the r derivatives."""
    parts = _composite_parts(backend)
    for net in (layers_net(backend), COMPOSITES["nested"](parts)):
        for case in ("layers-multi-shared", "layers-multi-point"):
            x, v = case_inputs(case)
            w = [0.5, -1.25]
            full = ours(backend, net, x, v, order)
            got = xd.taylor(net, backend.asarray(x), backend.asarray(v), order=order, weights=w)
            assert len(got) == order + 1
            for k in range(order):
                assert rel_err(backend.to_numpy(got[k]), full[k]) == 0.0
            want = full[order] @ np.array(w)
            assert rel_err(backend.to_numpy(got[order]), want) < EXACT, (case, order)
    net = layers_net(backend)
    x, v = case_inputs("layers-multi-shared")
    with pytest.raises(ValueError, match="weights sum the top derivative over r directions"):
        xd.taylor(net, backend.asarray(x), backend.asarray(v), order=2, weights=[1.0])
    with pytest.raises(ValueError, match="weights sum the top derivative"):
        xd.taylor(net, backend.asarray(x), backend.asarray(v[:, 0]), order=2, weights=[1.0])


def test_chunks_give_the_same_derivatives(backend):
    net = layers_net(backend)
    x, v = case_inputs("layers-multi-point")
    whole = ours(backend, net, x, v, order=4)
    parts = np.stack(
        [backend.to_numpy(a) for a in xd.taylor(net, backend.asarray(x), backend.asarray(v), order=4, chunk_size=1)]
    )
    assert rel_err(parts, whole) < 1e-14
    if backend.name == "dask":
        return
    old = xd.get_memory_budget()
    try:
        xd.set_memory_budget(6000)
        assert rel_err(ours(backend, net, x, v, order=4), whole) < 1e-14
        assert rel_err(backend.to_numpy(xd.biharmonic(net, backend.asarray(x))), _biharmonic(backend, net, x)) < 1e-14
        xd.set_memory_budget(100)
        with pytest.raises(MemoryError, match="one point needs about"):
            xd.taylor(net, backend.asarray(x), backend.asarray(v), order=4)
    finally:
        xd.set_memory_budget(old)


def _biharmonic(backend: Any, net: Any, x: np.ndarray) -> np.ndarray:
    return backend.to_numpy(xd.biharmonic(net, backend.asarray(x)))


# --------------------------------------------------------------------------- composites


def _composite_parts(backend: Any) -> dict[str, Any]:
    kw = {"xp": backend.module, "device": backend.device}
    return {
        "g": xd.mlp([3, 4, 1], "tanh", seed=11, **kw),
        "N": xd.resnet(3, 5, 2, activation="gelu", step=0.5, seed=12, **kw),
        "phi": xd.quadratic(backend.asarray(-2.0 * np.eye(3)), b=1.0),
        "V": residual_first(backend, "float64"),
        "W": xd.mlp([3, 5, 2], "silu", "sigmoid", seed=14, **kw),
        "P": layers_net(backend),
    }


COMPOSITES = {
    "hard-bc": lambda p: p["g"] + p["phi"] * p["N"],  # (n, 1)
    "nested": lambda p: (p["V"] * p["W"]) * (p["W"] - 0.5 * p["V"]) + 2.0,  # (n, 2)
    "scalar": lambda p: p["P"] * p["phi"] - 3.0 * p["P"],  # (n,)
}


def _leibniz(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Derivatives of a product from the factors' (K + 1, ...): (fg)^(k) = sum_j C(k, j) f^(j) g^(k-j)."""
    return np.stack([sum(math.comb(k, j) * a[j] * b[k - j] for j in range(k + 1)) for k in range(a.shape[0])])


def _by_hand(backend: Any, name: str, parts: dict[str, Any], x: np.ndarray, v: np.ndarray, order: int) -> np.ndarray:
    """The composite's derivatives from each leaf's xd.taylor, combined by Leibniz's rule in NumPy."""
    t = {k: ours(backend, net, x, v, order) for k, net in parts.items()}
    if name == "hard-bc":
        return t["g"] + _leibniz(t["phi"][:, :, None], t["N"])
    if name == "nested":
        vw = _leibniz(t["V"], t["W"])
        out = _leibniz(vw, t["W"] - 0.5 * t["V"])
        out[0] += 2.0
        return out
    return _leibniz(t["P"], t["phi"]) - 3.0 * t["P"]


def _composite_function(backend: Any, name: str, parts: dict[str, Any]) -> Any:
    f = {k: point_function(backend, net) for k, net in parts.items()}
    return {
        "hard-bc": lambda t: f["g"](t) + f["phi"](t) * f["N"](t),
        "nested": lambda t: (f["V"](t) * f["W"](t)) * (f["W"](t) - 0.5 * f["V"](t)) + 2.0,
        "scalar": lambda t: f["P"](t) * f["phi"](t) - 3.0 * f["P"](t),
    }[name]


@pytest.mark.parametrize("name", sorted(COMPOSITES))
@pytest.mark.parametrize("layout", ["point", "multi-shared"])
def test_composites_by_leibniz_rule(backend, name, layout, exhaustive):
    """Each composite against Leibniz's rule over its leaves' derivatives, and (torch, jax) against nested jvp
    with one direction per point (both layouts with --exhaustive: the layouts are the leaves', checked above)."""
    parts = _composite_parts(backend)
    u = COMPOSITES[name](parts)
    rng = np.random.default_rng(9)
    x = 0.6 * rng.standard_normal((N, 3))
    v = rng.standard_normal(V_SHAPES[layout])
    got = ours(backend, u, x, v, order=5)
    hand = _by_hand(backend, name, parts, x, v, order=5)
    assert rel_err(got, hand.reshape(got.shape)) < EXACT
    if autodiff_session(backend) and (layout == "point" or exhaustive):
        live = nested_jvp(backend, _composite_function(backend, name, parts), x, v, layout, order=5)
        assert rel_err(got, live.reshape(got.shape)) < TOL


# --------------------------------------------------------------------------- biharmonic and partial derivatives


def _fourth_tensor(backend: Any, f: Any, x: np.ndarray) -> np.ndarray:
    """All fourth derivatives (N, ..., d, d, d, d) by nested autodiff (Hessian of the Hessian)."""
    xs = backend.asarray(x)
    if backend.name == "torch":
        from torch.func import hessian, jacfwd, vmap

        return backend.to_numpy(vmap(jacfwd(jacfwd(hessian(f))))(xs))
    import jax

    return backend.to_numpy(jax.jit(jax.vmap(jax.hessian(jax.hessian(f))))(xs))


def _third_tensor(backend: Any, f: Any, x: np.ndarray) -> np.ndarray:
    xs = backend.asarray(x)
    if backend.name == "torch":
        from torch.func import hessian, jacfwd, vmap

        return backend.to_numpy(vmap(jacfwd(hessian(f)))(xs))
    import jax

    return backend.to_numpy(jax.jit(jax.vmap(jax.jacfwd(jax.hessian(f))))(xs))


def _operator_case(backend: Any, name: str) -> tuple[Any, Any]:
    """The network ``name`` and its per-point reference function."""
    kw = {"xp": backend.module, "device": backend.device}
    if name in ("hard-bc", "scalar"):
        parts = _composite_parts(backend)
        return COMPOSITES[name](parts), _composite_function(backend, name, parts)
    net = {
        "mlp-tanh": lambda: xd.mlp([3, 6, 2], "tanh", seed=2, **kw),
        "layers": lambda: layers_net(backend),
        "residual-first": lambda: residual_first(backend, "float64"),
        "potential-general": lambda: general_potential(backend, "float64"),  # d = 4
    }[name]()
    return net, point_function(backend, net)


OPERATOR_NETS = ["mlp-tanh", "layers", "residual-first", "potential-general", "hard-bc", "scalar"]
ALPHAS = [(1, 0, 0), (0, 2, 0), (1, 1, 0), (2, 1, 0), (0, 0, 3), (1, 1, 1), (2, 2, 0), (4, 0, 0), (1, 2, 1), (3, 0, 1)]


def _partial_from(tensors: dict[int, np.ndarray], alpha: tuple[int, ...]) -> np.ndarray:
    idx = tuple(i for i, a in enumerate(alpha) for _ in range(a))
    return tensors[len(idx)][(Ellipsis,) + idx]


@pytest.mark.parametrize("name", OPERATOR_NETS)
def test_biharmonic_and_partials_match_nested_hessians(backend, name):
    """Delta^2 against the trace of the Hessian of the Hessian, partials against its entries (torch.func / jax)."""
    if not autodiff_session(backend):
        pytest.skip("nested autodiff: the torch and jax sessions")
    net, f = _operator_case(backend, name)
    d = net.in_features
    x = 0.7 * np.random.default_rng(5).standard_normal((N, d))
    t4 = _fourth_tensor(backend, f, x)
    got = _biharmonic(backend, net, x)
    assert rel_err(got, np.einsum("...iijj->...", t4).reshape(got.shape)) < TOL
    tensors = {3: _third_tensor(backend, f, x), 4: t4}
    xs = backend.asarray(x)
    for alpha in ALPHAS:
        if sum(alpha) < 3:
            continue
        a = alpha + (0,) * (d - 3)
        got = backend.to_numpy(xd.partial(net, xs, a))
        assert rel_err(got, _partial_from(tensors, a).reshape(got.shape)) < TOL, (name, alpha)


# --------------------------------------------------------------------------- weight gradients, errors


def _loss(xp: Any, out: Any) -> Any:
    return xp.sum(out * out) + xp.sum(xp.sin(out))


@pytest.mark.parametrize("op", ["taylor", "biharmonic", "partial"])
def test_weight_gradient_matches_autodiff(backend, op):
    if not autodiff_session(backend):
        pytest.skip("weight gradients: the torch and jax sessions")
    xp = backend.xp
    # a Dense opening, a residual layer and a Potential head with A and c: small, since the reference
    # differentiates a Hessian of a Hessian with respect to the weights
    net = xd.potential(3, 4, 1, rank=2, activation="tanh", seed=5, xp=backend.module, device=backend.device)
    x, v = case_inputs("layers-point")
    xs, vs = backend.asarray(x), backend.asarray(v)
    ref_f = network_function(net, xp)
    arrays = net.arrays()

    def ours_of(ws: Any) -> Any:
        other = net.with_arrays(ws)
        if op == "taylor":
            return xd.taylor(other, xs, vs, order=4)[4]
        if op == "biharmonic":
            return xd.biharmonic(other, xs)
        return xd.partial(other, xs, (2, 1, 0))

    def reference_of(ws: Any) -> Any:
        f = lambda t: ref_f(ws, t)  # noqa: E731
        if backend.name == "torch":
            import torch
            from torch.func import hessian, jacfwd, jvp, vmap

            if op == "taylor":

                def d4(xi: Any, vi: Any) -> Any:
                    g = f
                    for _ in range(4):
                        g = (lambda prev: lambda t: jvp(prev, (t,), (vi,))[1])(g)
                    return g(xi)

                return vmap(d4)(xs, vs)
            if op == "biharmonic":  # the trace of the Hessian of the Laplacian
                lap = lambda t: torch.trace(hessian(f)(t))  # noqa: E731
                return vmap(lambda t: torch.trace(hessian(lap)(t)))(xs)
            return vmap(lambda t: jacfwd(hessian(f))(t)[0, 0, 1])(xs)
        import jax
        import jax.numpy as jnp

        if op == "taylor":

            def d4(xi: Any, vi: Any) -> Any:
                g = f
                for _ in range(4):
                    g = (lambda prev: lambda t: jax.jvp(prev, (t,), (vi,))[1])(g)
                return g(xi)

            return jax.vmap(d4)(xs, vs)
        if op == "biharmonic":
            lap = lambda t: jnp.trace(jax.hessian(f)(t))  # noqa: E731
            return jax.vmap(lambda t: jnp.trace(jax.hessian(lap)(t)))(xs)
        return jax.vmap(lambda t: jax.jacfwd(jax.hessian(f))(t)[0, 0, 1])(xs)

    reference = reference_of
    if backend.name == "jax":  # traced whole: one compilation instead of one per operation (eager is slow)
        import jax

        reference = jax.jit(reference_of)
    assert rel_err(backend.to_numpy(ours_of(arrays)), backend.to_numpy(reference(arrays))) < TOL
    if backend.name == "torch":
        from torch.func import grad
    else:
        from jax import grad
    ours_grad = grad(lambda ws: _loss(xp, ours_of(ws)))
    ref_grad = grad(lambda ws: _loss(xp, reference_of(ws)))
    if backend.name == "jax":
        ours_grad, ref_grad = jax.jit(ours_grad), jax.jit(ref_grad)
    g_ours, g_ref = ours_grad(arrays), ref_grad(arrays)
    for a, b in zip(g_ours, g_ref):
        assert rel_err(backend.to_numpy(a), backend.to_numpy(b)) < 1e-9


def test_jax_jit_and_vmap_trace_the_sweeps(backend):
    if backend.name != "jax":
        pytest.skip("jax.jit / jax.vmap: the jax session (torch.compile: tests/test_compile.py)")
    import jax

    net = layers_net(backend)
    x, v = case_inputs("layers-multi-shared")
    xs, vs = backend.asarray(x), backend.asarray(v)
    eager = xd.taylor(net, xs, vs, order=4)
    jitted = jax.jit(lambda p: xd.taylor(net, p, vs, order=4))(xs)
    for a, b in zip(eager, jitted):
        assert rel_err(backend.to_numpy(b), backend.to_numpy(a)) < 1e-13
    per_point = jax.vmap(lambda p: xd.biharmonic(net, p))(xs)
    assert rel_err(backend.to_numpy(per_point), _biharmonic(backend, net, x)) < 1e-13
    part = jax.jit(lambda p: xd.partial(net, p, (1, 2, 0)))(xs)
    assert rel_err(backend.to_numpy(part), backend.to_numpy(xd.partial(net, xs, (1, 2, 0)))) < 1e-13


def test_argument_errors(backend):
    net = xd.mlp([3, 4, 1], seed=0, xp=backend.module, device=backend.device)
    x = backend.asarray(np.zeros((4, 3)))
    v = backend.asarray(np.ones(3))
    for bad in (-1, 2.5, True, "2"):
        with pytest.raises((TypeError, ValueError), match="order must be a non-negative integer"):
            xd.taylor(net, x, v, order=bad)
    with pytest.raises(ValueError, match=r"v has shape \(4, 2\); expected \(3,\) or x.shape"):
        xd.taylor(net, x, backend.asarray(np.ones((4, 2))), order=2)
    with pytest.raises(ValueError, match=r"v has shape \(5, 3, 2\)"):
        xd.taylor(net, x, backend.asarray(np.ones((5, 3, 2))), order=2)
    with pytest.raises(ValueError, match="alpha has 2 entries; it counts the derivatives along each of the d=3"):
        xd.partial(net, x, (1, 1))
    with pytest.raises(ValueError, match="alpha must be a non-negative integer"):
        xd.partial(net, x, (1, -1, 0))
    with pytest.raises(TypeError, match="alpha must be a sequence"):
        xd.partial(net, x, 3)
    plain = xd.register_activation(
        f"no-higher-{backend.name}", lambda z, xp: xp.tanh(z), lambda z: 1 - z, lambda z: z, overwrite=True
    )
    other = xd.Sequential(
        xd.Dense(backend.asarray(np.ones((3, 2))), activation=plain), xd.Dense(backend.asarray(np.ones((2, 1))))
    )
    xd.taylor(other, x, v, order=2)  # orders up to 2 need nothing more
    match = f"layer 0 .*activation 'no-higher-{backend.name}' supplies derivatives up to order 2 only.*nth_derivative"
    for call in (
        lambda: xd.taylor(other, x, v, order=3),
        lambda: xd.biharmonic(other, x),
        lambda: xd.partial(other, x, (1, 1, 1)),
        lambda: xd.taylor(other * net, x, v, order=4),
    ):
        with pytest.raises(ValueError, match=match):
            call()


# --------------------------------------------------------------------------- the stored reference


def regenerate(path: str = DATA) -> None:  # pragma: no cover - run by hand: python -m tests.test_taylor
    """Recompute tests/data/taylor_reference.npz with torch.func (CPU, float64)."""
    from .conftest import _make_backend

    backend = _make_backend("torch")
    out = {}
    for case, (build, layout) in sorted(CASES.items()):
        net = build(backend)
        x, v = case_inputs(case)
        out[case] = nested_jvp(backend, point_function(backend, net), x, v, layout)
    np.savez_compressed(path, **out)


if __name__ == "__main__":  # pragma: no cover
    regenerate()
