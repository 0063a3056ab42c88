"""Property-based tests (hypothesis): random architectures, activations, batch shapes and modes.

For every drawn network and input, on the session's backend:

- ``forward``, ``backward`` and ``auto`` agree to round-off on value, Jacobian,
  gradient, Hessian and Laplacian, through every public entry point;
- the Jacobian matches central differences of the value, the Hessian central
  differences of the Jacobian, the Laplacian the Hessian's trace, and the
  Hessian is symmetric;
- every result has the documented shape for any batch shape (empty ones included).

The number of examples comes from the hypothesis profile that tests/conftest.py
loads (``XDERIV_HYPOTHESIS_PROFILE``: ``ci``, ``dev`` or ``thorough``;
``XDERIV_HYPOTHESIS_EXAMPLES`` overrides it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import xderiv as xd  # noqa: E402

from .networks_zoo import ACTIVATIONS  # noqa: E402

# max_examples, derandomize and the database come from the active profile (tests/conftest.py).
SETTINGS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MODES = ("forward", "backward", "auto")


@dataclass(frozen=True)
class LayerSpec:
    residual: bool
    width: int
    activation: str
    step: float


@dataclass(frozen=True)
class Arch:
    d: int
    layers: tuple[LayerSpec, ...]
    head: str  # "none" (last layer is the output), "linear" (Dense read-out), "potential"
    m: int
    quadratic: bool
    linear: bool
    seed: int


@st.composite
def architectures(draw: Any) -> Arch:
    d = draw(st.integers(1, 4))
    layers = []
    width = d
    for i in range(draw(st.integers(1, 3))):
        residual = draw(st.booleans()) if i > 0 or draw(st.booleans()) else False
        new_width = width if residual else draw(st.integers(1, 5))
        layers.append(
            LayerSpec(
                residual=residual,
                width=new_width,
                activation=draw(st.sampled_from(ACTIVATIONS)),
                step=draw(st.sampled_from([0.25, 0.5, 1.0, 1.5])),
            )
        )
        width = new_width
    head = draw(st.sampled_from(["none", "linear", "potential"]))
    return Arch(
        d=d,
        layers=tuple(layers),
        head=head,
        m=draw(st.integers(1, 3)),
        quadratic=draw(st.booleans()),
        linear=draw(st.booleans()),
        seed=draw(st.integers(0, 2**16)),
    )


batch_shapes = st.sampled_from([(), (1,), (3,), (0,), (2, 2), (2, 0), (1, 3)])


def build(arch: Arch, backend: Any) -> Any:
    rng = np.random.default_rng(arch.seed)

    def arr(a: np.ndarray) -> Any:
        return backend.asarray(a)

    layers: list[Any] = []
    width = arch.d
    for spec in arch.layers:
        scale = 0.9 / math.sqrt(width)
        w = arr(scale * rng.standard_normal((width, spec.width)))
        b = arr(0.3 * rng.standard_normal(spec.width))
        if spec.residual:
            layers.append(xd.Residual(w, b, spec.activation, step=spec.step))
        else:
            layers.append(xd.Dense(w, b, spec.activation))
        width = spec.width
    if arch.head == "linear":
        layers.append(
            xd.Dense(arr(rng.standard_normal((width, arch.m)) / math.sqrt(width)), arr(rng.standard_normal(arch.m)))
        )
    trunk = xd.Sequential(*layers)
    if arch.head != "potential":
        return trunk
    A = arr(rng.standard_normal((arch.d, arch.d))) if arch.quadratic else None
    c = arr(rng.standard_normal(arch.d)) if arch.linear else None
    return xd.Potential(trunk, arr(rng.standard_normal(width)), A, c, float(rng.standard_normal()))


def _np(backend: Any, a: Any) -> np.ndarray:
    return np.asarray(backend.to_numpy(a), dtype=np.float64)


def close(a: np.ndarray, b: np.ndarray, tol: float) -> bool:
    """``|a - b| <= tol * max(1, max|b|)`` elementwise (normwise, with an absolute floor)."""
    if a.shape != b.shape:
        return False
    if a.size == 0:
        return True
    return bool(np.max(np.abs(a - b)) <= tol * max(1.0, float(np.max(np.abs(b)))))


def out_shapes(net: Any, batch: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    d = net.in_features
    m = () if isinstance(net, xd.Potential) else (net.out_features,)
    return {"value": batch + m, "jacobian": batch + m + (d,), "hessian": batch + m + (d, d), "laplacian": batch + m}


@SETTINGS
@given(arch=architectures(), batch=batch_shapes, xseed=st.integers(0, 2**16))
def test_every_mode_agrees_with_every_other_and_with_finite_differences(backend, arch, batch, xseed):
    net = build(arch, backend)
    d = net.in_features
    xs = 0.8 * np.random.default_rng(xseed).standard_normal(batch + (d,))
    x = backend.asarray(xs)
    shapes = out_shapes(net, batch)

    results = {}
    for mode in MODES:
        r = xd.derivatives(net, x, hessian=True, mode=mode)
        got = {
            "value": _np(backend, r.value),
            "jacobian": _np(backend, r.jacobian),
            "hessian": _np(backend, r.hessian),
            "laplacian": _np(backend, xd.laplacian(net, x, mode=mode)),
            "jacobian-only": _np(backend, xd.jacobian(net, x, mode=mode)),
            "hessian-only": _np(backend, xd.hessian(net, x, mode=mode)),
            "laplacian+hessian": _np(
                backend, xd.derivatives(net, x, hessian=True, laplacian=True, mode=mode).laplacian
            ),
        }
        for key, shape in shapes.items():
            assert got[key].shape == shape, (mode, key, got[key].shape, shape)
        if net.out_features == 1:
            got["gradient"] = _np(backend, xd.gradient(net, x, mode=mode))
            assert got["gradient"].shape == batch + (d,)
            assert close(got["gradient"], got["jacobian"].reshape(batch + (d,)), 1e-13)
        assert close(got["value"], _np(backend, net(x)), 0.0)
        assert close(got["jacobian-only"], got["jacobian"], 1e-13)
        assert close(got["hessian-only"], got["hessian"], 1e-13)
        h = got["hessian"]
        assert close(h, np.swapaxes(h, -1, -2), 1e-12), "Hessian not symmetric"
        trace = np.trace(h, axis1=-2, axis2=-1)
        assert close(got["laplacian"], trace, 1e-12), (mode, "laplacian != trace(hessian)")
        assert close(got["laplacian+hessian"], trace, 1e-12)
        # Operators beyond the core five, where this version has them, against the full Hessian.
        v = np.random.default_rng(xseed + 1).standard_normal(batch + (d,))
        hv = np.einsum("...ij,...j->...i", h, v[..., None, :] if shapes["hessian"] != batch + (d, d) else v)
        if hasattr(xd, "hessian_diagonal"):
            diag = _np(backend, xd.hessian_diagonal(net, x, mode=mode))
            assert close(diag, np.diagonal(h, axis1=-2, axis2=-1), 1e-12), (mode, "hessian_diagonal")
        if hasattr(xd, "trace_hessian"):
            tr = _np(backend, xd.trace_hessian(net, x, coords=list(range(d)), mode=mode))
            assert close(tr, trace, 1e-12), (mode, "trace_hessian over all coordinates")
        if hasattr(xd, "hvp") and mode == "forward":
            assert close(_np(backend, xd.hvp(net, x, backend.asarray(v))), hv, 1e-12), "hvp"
        if hasattr(xd, "directional") and mode == "forward":
            first, second = (_np(backend, a) for a in xd.directional(net, x, backend.asarray(v)))
            vv = v[..., None, :] if shapes["hessian"] != batch + (d, d) else v
            assert close(first, np.sum(got["jacobian"] * vv, axis=-1), 1e-12), "directional first"
            assert close(second, np.sum(hv * vv, axis=-1), 1e-12), "directional second"
        results[mode] = got

    for key in results["forward"]:
        for other in ("backward", "auto"):
            assert close(results[other][key], results["forward"][key], 1e-12), (key, other)

    # Finite differences on the flattened points (skipped for an empty batch).
    n = math.prod(batch)
    if n == 0:
        return
    flat = xs.reshape(n, d)
    eps = 1e-5
    shift = eps * np.eye(d)
    plus = flat[:, None, :] + shift
    minus = flat[:, None, :] - shift
    fwd = results["forward"]

    def val(p: np.ndarray) -> np.ndarray:
        return _np(backend, net(backend.asarray(p))).reshape(n, d, -1)  # (n, i, m)

    def jac(p: np.ndarray) -> np.ndarray:
        return _np(backend, xd.jacobian(net, backend.asarray(p), mode="backward")).reshape(n, d, -1, d)

    fd_j = np.swapaxes((val(plus) - val(minus)) / (2 * eps), 1, 2)  # (n, m, d)
    assert close(fwd["jacobian"].reshape(fd_j.shape), fd_j, 1e-6)
    fd_h = np.transpose((jac(plus) - jac(minus)) / (2 * eps), (0, 2, 1, 3))  # (n, m, i, j)
    assert close(fwd["hessian"].reshape(fd_h.shape), fd_h, 1e-6)
    assert close(fwd["laplacian"].reshape(fd_h.shape[:2]), np.trace(fd_h, axis1=-2, axis2=-1), 1e-6)


@SETTINGS
@given(arch=architectures(), n=st.integers(1, 3), xseed=st.integers(0, 2**16))
def test_batch_is_a_map_over_points(backend, arch, n, xseed):
    """Evaluating a batch equals evaluating each point alone (no cross-talk between samples)."""
    net = build(arch, backend)
    xs = 0.8 * np.random.default_rng(xseed).standard_normal((n, net.in_features))
    mode = ("forward", "backward")[xseed % 2]
    batch = xd.derivatives(net, backend.asarray(xs), hessian=True, mode=mode)
    for i in range(n):
        one = xd.derivatives(net, backend.asarray(xs[i]), hessian=True, mode=mode)
        for key in ("value", "jacobian", "hessian"):
            assert close(_np(backend, getattr(batch, key))[i], _np(backend, getattr(one, key)), 1e-13), key
