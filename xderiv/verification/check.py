r"""``xd.check``: one operator call against an independent reference, on a few points.

``xd.check(op, net, x, *args, **kwargs)`` evaluates ``op(net, x, *args, **kwargs)`` and a
reference of the same quantity on the first ``points`` points of the flattened batch, and
returns a :class:`CheckReport` (or raises :class:`CheckError` carrying it).  The reference
knows nothing of xderiv's derivative recursions: it differentiates the network's *value*
``xd.value(net, p)`` at each point ``p`` alone,

- by nested autodiff where the backend has it (:mod:`xderiv.interop.autodiff`):
  ``torch.func`` one point at a time, JAX's ``jacfwd``/``hessian``/``jvp`` under ``vmap``;
- by central differences with Richardson extrapolation elsewhere (NumPy, array-api-strict,
  dask, CuPy), evaluated in float64 (:class:`Differences`).

Every operator reduces to a few quantities of the one-point function :math:`f(p)`: its value,
Jacobian, Hessian, the derivatives :math:`g^{(k)}(0)` of :math:`g(t) = f(p + t v)` along
directions (``taylor``, ``directional``, ``trace_hessian``), the biharmonic
:math:`\sum_{ij} \partial_i^2\partial_j^2 f` and mixed partials :math:`\partial^\alpha f`.
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import array_api_compat

from .. import operators as ops
from ..models.composition import Product, Scaled, Sum
from ..models.networks import quadratic
from .reference import (
    AUTODIFF,
    Array,
    Estimate,
    Reference,
    _eye,
    _namespace,
    _pair_rows,
    _rows,
    _shared,
    _stencil,
)

AUTODIFF_RTOL = 1e-9
"""Default tolerance against an autodiff reference (float64 results): both sides are exact up to round-off."""

DIFFERENCES_RTOL = 1e-8
"""Least default tolerance against finite differences (float64 results)."""

SAFETY = 10.0
"""Factor on the Richardson error estimate in the default tolerance against finite differences."""

DTYPE_FACTOR = 1e4
"""Least default tolerance, in units of the result dtype's machine epsilon (float32: 1.2e-3)."""


# --------------------------------------------------------------------------- the report


@dataclass(frozen=True, repr=False)
class CheckReport:
    """What :func:`check` compared, and how closely the operator matched its reference.

    Attributes
    ----------
    operator : str
        The operator's name (``"laplacian"``, ``"taylor"``, ...).
    reference : str
        How the reference was computed (``"torch.func, per point"``, ``"jax, vmapped"``,
        ``"central differences, Richardson-extrapolated"``).
    error : float
        The largest relative error, :math:`\\max |r - \\rho| / \\max(|r|, |\\rho|)` over the
        checked entries of the part with the largest ``error / rtol`` (``r`` the result,
        :math:`\\rho` the reference, the maxima over the part's entries).
    rtol : float
        The tolerance that part was held to.
    points : int
        The number of points checked.
    part : str
        The part the error is from (``"value"`` for one array; ``"hessian"``, ``"d3"``,
        ``"second"``... for operators returning several).
    parts : tuple of (str, float, float)
        ``(part, error, rtol)`` for every part compared.
    """

    operator: str
    reference: str
    error: float
    rtol: float
    points: int
    part: str = "value"
    parts: tuple[tuple[str, float, float], ...] = ()

    @property
    def passed(self) -> bool:
        """Whether every part's error is within its tolerance."""
        return all(err <= tol for _, err, tol in self.parts) if self.parts else self.error <= self.rtol

    def as_dict(self) -> dict[str, Any]:
        """The report as a plain ``dict`` (for logs): the fields and ``passed``."""
        out = asdict(self)
        out["parts"] = [list(p) for p in self.parts]
        out["passed"] = self.passed
        return out

    def __repr__(self) -> str:
        parts = ", ".join(f"{name}: {err:.1e}/{tol:.0e}" for name, err, tol in self.parts)
        return (
            f"CheckReport(operator={self.operator!r}, reference={self.reference!r}, error={self.error:.2e}, "
            f"rtol={self.rtol:.1e}, points={self.points}, part={self.part!r}, parts=[{parts}])"
        )

    def __str__(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        return (
            f"xd.check {verdict}: {self.operator} on {self.points} points, largest relative error "
            f"{self.error:.2e} ({self.part}) against {self.reference}, tolerance {self.rtol:.1e}"
        )


class CheckError(AssertionError):
    """Raised by :func:`check` when an operator's result is farther from its reference than the tolerance.

    A subclass of ``AssertionError`` (a failed check is a failed assertion about the numbers;
    pytest reports it as one).  It is raised explicitly, so ``python -O`` does not silence it.

    Attributes
    ----------
    report : CheckReport
    """

    def __init__(self, report: CheckReport) -> None:
        super().__init__(str(report))
        self.report = report


# --------------------------------------------------------------------------- helpers


class Differences(Reference):
    r"""Central differences with Richardson extrapolation (Ridders' method), evaluated in float64.

    Along a direction :math:`u` (the direction scaled to unit length, times
    :math:`\max(1, \lVert p\rVert_\infty)`), :math:`g^{(k)}(0)` of :math:`g(t) = f(p + tu)` is
    estimated by the symmetric central difference :math:`D_k(h)` on the offsets
    :math:`-\lceil k/2\rceil h .. \lceil k/2\rceil h` (error a series in :math:`h^2`), at
    :data:`LEVELS` steps :math:`h_i = h_0 2^{-i}`, :math:`h_0 =` :data:`STEP`, extrapolated by
    the Richardson tableau :math:`A_{ij} = (4^j A_{i,j-1} - A_{i-1,j-1}) / (4^j - 1)`.  Each
    entry takes the tableau value with the smallest error estimate
    :math:`\max(|A_{ij} - A_{i,j-1}|, |A_{ij} - A_{i-1,j-1}|)`; that estimate is returned and
    sets :func:`check`'s default tolerance.  All points and offsets go through one
    ``xd.value`` call.  On smooth networks of inputs of order one the estimate is
    :math:`10^{-11}`–:math:`10^{-9}` relative for orders 1–2 and :math:`10^{-9}`–:math:`10^{-7}`
    for order 4, limited by round-off :math:`\sim 2^k \epsilon \lvert f\rvert / h^k`.
    """

    name = "central differences, Richardson-extrapolated"
    exact = False

    STEP = 0.5
    LEVELS = 8

    def _evaluate(self, P: Array, U: Array, ts: list[float]) -> Array:
        """``f(p + t u)`` for every ``t``, point and direction: (T, P, *out, r)."""
        xp = self.xp
        t = xp.asarray(ts, dtype=P.dtype, device=array_api_compat.device(P))
        X = P[None, :, None, :] + t[:, None, None, None] * xp.permute_dims(U, (0, 2, 1))[None, ...]
        T, n, r, d = X.shape
        y = ops.value(self.net, xp.reshape(X, (T * n * r, d)))
        out = tuple(y.shape[1:])
        y = xp.reshape(y, (T, n, r, *out))
        return xp.permute_dims(y, (0, 1, *range(3, 3 + len(out)), 2))

    def taylor(self, P: Array, V: Array, order: int) -> list[Estimate]:
        xp = self.xp
        norms = xp.sqrt(xp.sum(V * V, axis=1))  # (P, r)
        span = xp.max(xp.abs(P), axis=-1)
        span = xp.where(span > 1.0, span, xp.ones_like(span))[:, None]  # (P, 1)
        scale = xp.where(norms > 0, norms, xp.ones_like(norms)) / span  # g_v^(k) = g_u^(k) * scale^k
        U = V / scale[:, None, :]
        # two interleaved step sequences, h0 = STEP and STEP / sqrt(2): two independent extrapolations
        sequences = [[self.STEP * 2.0 ** -(i + shift) for i in range(self.LEVELS)] for shift in (0.0, 0.5)]
        half = (order + 1) // 2
        ts = sorted({o * h for steps in sequences for h in steps for o in range(-half, half + 1)})
        index = {t: i for i, t in enumerate(ts)}
        Y = self._evaluate(P, U, ts)
        extra = Y.ndim - 3  # the out axes
        s = xp.reshape(scale, (scale.shape[0],) + (1,) * extra + (scale.shape[1],))
        out: list[Estimate] = [(Y[index[0.0], ...], None)]
        for k in range(1, order + 1):
            (a, ea), (b, eb) = (self._ridders(Y, index, steps, k) for steps in sequences)
            err = xp.maximum(xp.maximum(ea, eb), xp.abs(a - b))  # each estimate, and their disagreement
            out.append((a * s**k, err * s**k))
        return out

    def _ridders(self, Y: Array, index: dict[float, int], steps: list[float], k: int) -> Estimate:
        """:math:`g^{(k)}(0)` from the values ``Y`` at the offsets of ``steps``: Ridders' tableau, least-error entry."""
        xp = self.xp
        dev = array_api_compat.device(Y)
        h = xp.reshape(xp.asarray(steps, dtype=Y.dtype, device=dev), (len(steps),) + (1,) * (Y.ndim - 1))
        D = (
            sum(w * xp.take(Y, xp.asarray([index[o * hi] for hi in steps], device=dev), axis=0) for o, w in _stencil(k))
            / h**k
        )  # (L, P, *out, r): the central difference at each step
        values, errors, column = [], [], D
        for j in range(1, len(steps)):  # Richardson: column j eliminates h^(2j)
            f = 4.0**j
            nxt = (f * column[1:, ...] - column[:-1, ...]) / (f - 1.0)
            errors.append(xp.maximum(xp.abs(nxt - column[1:, ...]), xp.abs(nxt - column[:-1, ...])))
            values.append(nxt)
            column = nxt
        A, E = xp.concat(values, axis=0), xp.concat(errors, axis=0)
        least = xp.min(E, axis=0)
        chosen = xp.astype(E == least, A.dtype)  # the entries of least estimated error (ties averaged)
        return xp.sum(A * chosen, axis=0) / xp.sum(chosen, axis=0), least

    def jacobian(self, P: Array) -> Estimate:
        xp = self.xp
        d = P.shape[-1]
        eye = _eye(xp, d, P.dtype, array_api_compat.device(P))
        return self.taylor(P, xp.broadcast_to(eye[None, ...], (P.shape[0], d, d)), 1)[1]

    def hessian(self, P: Array) -> Estimate:
        r""":math:`H_{ii} = g''_{e_i}`, :math:`H_{ij} = (g''_{e_i+e_j} - g''_{e_i-e_j}) / 4`: :math:`d^2` directions."""
        xp = self.xp
        d = P.shape[-1]
        rows, pairs = _pair_rows(d)
        g, e = self.taylor(P, _shared(xp, P, rows), 2)[2]
        slot = {(i, i): (i, i, 1.0, 0.0) for i in range(d)}  # H_ij = a g[p] + b g[q]
        for n, (i, j) in enumerate(pairs):
            slot[(i, j)] = slot[(j, i)] = (d + 2 * n, d + 2 * n + 1, 0.25, -0.25)
        entries = [slot[(i, j)] for i in range(d) for j in range(d)]
        dev = array_api_compat.device(P)
        plus = xp.take(g, xp.asarray([c[0] for c in entries], device=dev), axis=-1)
        minus = xp.take(g, xp.asarray([c[1] for c in entries], device=dev), axis=-1)
        a = xp.asarray([c[2] for c in entries], dtype=g.dtype, device=dev)
        b = xp.asarray([c[3] for c in entries], dtype=g.dtype, device=dev)
        err = xp.take(e, xp.asarray([c[0] for c in entries], device=dev), axis=-1) * a
        err = err + xp.take(e, xp.asarray([c[1] for c in entries], device=dev), axis=-1) * xp.abs(b)
        shape = tuple(g.shape[:-1]) + (d, d)
        return xp.reshape(a * plus + b * minus, shape), xp.reshape(err, shape)


# --------------------------------------------------------------------------- operators


def _operator_table() -> dict[Any, str]:
    names = [
        "value",
        "jacobian",
        "gradient",
        "hessian",
        "laplacian",
        "derivatives",
        "trace_hessian",
        "hessian_diagonal",
        "hvp",
        "directional",
        "divergence",
        "taylor",
        "partial",
        "biharmonic",
        "second_order",
    ]
    return {getattr(ops, name): name for name in names}


def _identify(op: Callable[..., Any]) -> tuple[Callable[..., Any], str]:
    """The xderiv operator ``op`` is, or wraps (``functools.wraps``), and its name."""
    table = _operator_table()
    base = inspect.unwrap(op)
    if base in table:
        return base, table[base]
    names = ", ".join(f"xd.{n}" for n in table.values())
    raise TypeError(
        f"xd.check: {getattr(op, '__name__', op)!r} is not an xderiv operator (or a functools.wraps wrapper "
        f"of one); xd.check knows {names}"
    )


def _reference(net: Any, xp: Any, x: Array, kind: str | None) -> Reference:
    if kind not in (None, "autodiff", "differences"):
        raise ValueError(f"xd.check: reference must be None, 'autodiff' or 'differences', got {kind!r}")
    if kind != "differences" and (array_api_compat.is_torch_array(x) or array_api_compat.is_jax_array(x)):
        return AUTODIFF[0](net, x)
    if kind == "autodiff":
        raise ValueError(
            f"xd.check: no autodiff reference for {type(x).__module__}.{type(x).__name__} arrays "
            "(torch and JAX have one): leave reference= out for finite differences"
        )
    return Differences(net, xp)


def _parts(name: str, result: Any) -> list[tuple[str, Array]]:
    if name == "derivatives":
        return [(p, getattr(result, p)) for p in ("value", "jacobian", "hessian", "laplacian")]
    if name == "directional":
        return [("first", result[0]), ("second", result[1])]
    if name == "taylor":
        return [(f"d{k}", r) for k, r in enumerate(result)]
    return [("value", result)]


def _coords(coords: Any, d: int) -> list[int]:
    return list(range(d)) if coords is None else [int(c) % d for c in coords]


def _trace_over(xp: Any, H: Estimate, coords: list[int]) -> Estimate:
    h, e = H
    return sum(h[..., i, i] for i in coords), (None if e is None else sum(e[..., i, i] for i in coords))


def _references(
    name: str, base: Callable[..., Any], ref: Reference, x: Array, P: Array, bound: dict[str, Any], xp: Any
) -> list[Estimate]:
    """The reference of each part of ``name``'s result at the points ``P``."""
    n, d = P.shape[0], P.shape[1]
    batch = tuple(x.shape[:-1])
    total = math.prod(batch)
    dev = array_api_compat.device(P)

    def direction_rows(v: Array, trailing: int) -> Array:
        return xp.astype(_rows(xp, v, total, n, batch, trailing), P.dtype)

    if name == "value":
        return [ref.value(P)]
    if name in ("jacobian", "gradient"):
        return [ref.jacobian(P)]
    if name == "hessian":
        return [ref.hessian(P)]
    if name == "hessian_diagonal":
        eye = _eye(xp, d, P.dtype, dev)
        return [ref.taylor(P, xp.broadcast_to(eye[None, ...], (n, d, d)), 2)[2]]
    if name == "divergence":
        J, e = ref.jacobian(P)
        return [(sum(J[:, i, i] for i in range(d)), None if e is None else sum(e[:, i, i] for i in range(d)))]
    if name == "laplacian":
        if bound.get("estimator") is not None:
            return [_estimated_laplacian(base, ref, x, P, bound, xp)]
        coords = _coords(bound.get("coords"), d)
        if ref.exact:
            return [_trace_over(xp, ref.hessian(P), coords)]
        V = xp.asarray([[float(k == c) for c in coords] for k in range(d)], dtype=P.dtype, device=dev)
        g, e = ref.taylor(P, xp.broadcast_to(V[None, ...], (n, d, len(coords))), 2)[2]
        return [(xp.sum(g, axis=-1), xp.sum(e, axis=-1) if e is not None else None)]
    if name == "trace_hessian":
        S, chosen = bound.get("directions"), bound.get("coords")
        if S is None:
            cs = _coords(chosen, d)
            S = xp.asarray([[float(k == c) for c in cs] for k in range(d)], dtype=P.dtype, device=dev)
        V = direction_rows(S, 2)
        g, e = ref.taylor(P, V, 2)[2]
        return [(xp.sum(g, axis=-1), xp.sum(e, axis=-1) if e is not None else None)]
    if name == "hvp":
        v = direction_rows(bound["v"], 1)  # (n, d)
        if ref.exact:
            H, _ = ref.hessian(P)
            extra = H.ndim - 3
            vb = xp.reshape(v, (n,) + (1,) * extra + (d, 1))
            return [((H @ vb)[..., 0], None)]
        a = xp.sqrt(xp.sum(v * v, axis=-1))
        a = xp.where(a > 0, a, xp.ones_like(a))  # (n,)
        eye = _eye(xp, d, P.dtype, dev)[None, ...] * a[:, None, None]  # a e_i as columns
        V = xp.concat([eye + v[:, :, None], eye - v[:, :, None]], axis=-1)  # (n, d, 2d)
        g, e = ref.taylor(P, V, 2)[2]
        assert e is not None  # differences carry their error estimate
        ab = xp.reshape(a, (n,) + (1,) * (g.ndim - 1))
        return [((g[..., :d] - g[..., d:]) / (4.0 * ab), (e[..., :d] + e[..., d:]) / (4.0 * ab))]
    if name == "directional":
        v = direction_rows(bound["v"], 1)[:, :, None]
        out = ref.taylor(P, v, 2)
        return [(a[..., 0], None if e is None else e[..., 0]) for a, e in out[1:]]
    if name == "taylor":
        return _taylor_references(ref, x, P, bound, xp)
    if name == "partial":
        return [ref.partial(P, [int(a) for a in bound["alpha"]])]
    if name == "biharmonic":
        return [ref.biharmonic(P)]
    if name == "second_order":
        return [_second_order_reference(ref, x, P, bound, xp, total, batch)]
    if name == "derivatives":
        refs: list[Estimate] = [ref.value(P)]
        refs.append(ref.jacobian(P) if bound.get("jacobian", True) else (None, None))
        H = ref.hessian(P) if (bound.get("hessian") or (bound.get("laplacian") and ref.exact)) else None
        refs.append(H if bound.get("hessian") and H is not None else (None, None))
        if bound.get("laplacian"):
            if H is not None:
                refs.append(_trace_over(xp, H, _coords(bound.get("coords"), d)))
            else:
                refs.extend(_references("laplacian", ops.laplacian, ref, x, P, {"coords": bound.get("coords")}, xp))
        else:
            refs.append((None, None))
        return refs
    raise AssertionError(name)  # pragma: no cover - _identify admits only the names above


def _second_order_reference(
    ref: Reference, x: Array, P: Array, bound: dict[str, Any], xp: Any, total: int, batch: tuple[int, ...]
) -> Estimate:
    r""":math:`\sum_{ij} a_{ij} H_{ij} + b \cdot J + c\, y` from the reference's Hessian, Jacobian and value.

    The coefficients are evaluated as the call does (callables of the points), then read at the
    checked points; ``factor`` and ``signs`` give :math:`A = S \operatorname{diag}(s) S^\top`.
    """
    n, d = P.shape[0], P.shape[1]
    dtype = P.dtype

    def at_points(a: Any, trailing: int) -> Array | None:
        a = a(x) if callable(a) else a
        if a is None:
            return None
        if not hasattr(a, "shape"):
            return xp.full((n,) + (1,) * 0, float(a), dtype=dtype, device=array_api_compat.device(P))
        return xp.astype(_rows(xp, xp.asarray(a), total, n, batch, trailing), dtype)

    A, factor = bound.get("A"), bound.get("factor")
    if factor is not None:
        S = at_points(factor, 2)  # (n, d, r)
        assert S is not None
        r = int(S.shape[-1])
        signs = bound.get("signs")
        sv = xp.ones((r,), dtype=dtype) if signs is None else xp.asarray([float(v) for v in signs], dtype=dtype)
        a = (S * sv) @ xp.matrix_transpose(S)
    elif A is not None:
        a0 = A(x) if callable(A) else A
        a = at_points(a0, 1) if a0.ndim == 1 else at_points(a0, 2)
        assert a is not None
        if a.ndim == 2:  # a diagonal, (n, d)
            a = a[:, :, None] * _eye(xp, d, dtype, array_api_compat.device(P))
    else:
        a = None
    y, ey = ref.value(P)
    out = 0.0 * y
    err = None
    extra = y.ndim - 1  # output axes

    def expand(c: Array, tail: int) -> Array:  # (n, *tail dims) -> (n, 1.., *tail dims)
        return xp.reshape(c, (n,) + (1,) * extra + tuple(c.shape[1:]))

    if a is not None:
        H, eH = ref.hessian(P)
        aa = expand(a, 2)
        out = out + xp.sum(xp.sum(aa * H, axis=-1), axis=-1)
        if eH is not None:
            err = xp.sum(xp.sum(xp.abs(aa) * eH, axis=-1), axis=-1)
    b = at_points(bound.get("b"), 1)
    if b is not None:
        J, eJ = ref.jacobian(P)
        bb = expand(b, 1)
        out = out + xp.sum(bb * J, axis=-1)
        if eJ is not None:
            e = xp.sum(xp.abs(bb) * eJ, axis=-1)
            err = e if err is None else err + e
    c = bound.get("c")
    if c is not None:
        cv = c(x) if callable(c) else c
        if hasattr(cv, "shape") and cv.ndim > 0:
            cv = expand(xp.astype(_rows(xp, cv, total, n, batch, 0), dtype), 0)
        out = out + cv * y
    return out, err


def _taylor_references(ref: Reference, x: Array, P: Array, bound: dict[str, Any], xp: Any) -> list[Estimate]:
    """``taylor``'s four layouts of ``v`` (see :func:`xderiv.taylor`), read as (P, d, r) directions."""
    v, order, weights = bound["v"], int(bound["order"]), bound.get("weights")
    n, d = P.shape
    batch = tuple(x.shape[:-1])
    total = math.prod(batch)
    if tuple(v.shape) == tuple(x.shape) or v.ndim == 1:  # one direction, shared or per point
        V, multi = _rows(xp, v, total, n, batch, 1)[:, :, None], False
    else:  # (d, r) shared, or (..., d, r) per point
        V, multi = _rows(xp, v, total, n, batch, 2), True
    out = ref.taylor(P, xp.astype(V, P.dtype), order)
    if not multi:
        return [(a[..., 0], None if e is None else e[..., 0]) for a, e in out]
    if weights is not None:
        top, err = out[-1]
        w = xp.asarray([float(c) for c in weights], dtype=P.dtype, device=array_api_compat.device(P))
        out[-1] = (xp.sum(top * w, axis=-1), None if err is None else xp.sum(err * xp.abs(w), axis=-1))
    return out


def _estimated_laplacian(
    base: Callable[..., Any], ref: Reference, x: Array, P: Array, bound: dict[str, Any], xp: Any
) -> Estimate:
    r"""The estimator's definition :math:`c \sum_j s_j^\top H_p s_j` along the directions the call drew.

    The estimate is linear in the Hessian, and the same arguments (estimator, samples, seed,
    per_point, batch shape) draw the same directions for any network of ``d`` inputs.  So the
    estimate of the quadratic :math:`\tfrac12 x^\top H_p x`, :math:`H_p` the reference Hessian
    of output ``k`` at point ``p``, read at point ``p``, is the reference for that entry.
    """
    H, e = ref.hessian(P)
    dtype, snapshot = bound["_dtype"], bound["_seed"]
    n, d = P.shape
    out = tuple(H.shape[1:-2])
    flat = xp.reshape(H, (n, math.prod(out), d, d))
    kwargs = {k: v for k, v in bound.items() if k not in ("net", "x", "_dtype", "_seed")}

    def probe(A: Array) -> Array:
        """The estimate for the quadratic with Hessian ``A``, at every point, (total,)."""
        seed = copy.deepcopy(snapshot) if _is_generator(snapshot) else snapshot
        est = base(quadratic(xp.astype(A, dtype)), x, **dict(kwargs, seed=seed))
        return xp.astype(xp.reshape(est, (-1,)), P.dtype)

    entries = [xp.stack([probe(flat[p, k, ...])[p] for k in range(flat.shape[1])]) for p in range(n)]
    ests = xp.reshape(xp.stack(entries), (n, *out))
    if e is None:
        return ests, None
    # |c sum_j s_j^T E s_j| <= c sum_j |s_j|^2 |E|_F, and c sum_j |s_j|^2 is the estimate for A = I
    norms = probe(_eye(xp, d, P.dtype, array_api_compat.device(P)))[:n]
    frobenius = xp.sqrt(xp.sum(e * e, axis=(-2, -1)))
    return ests, xp.reshape(norms, (n,) + (1,) * len(out)) * frobenius


# --------------------------------------------------------------------------- check


def _dtype_floor(xp: Any, dtype: Any) -> float:
    try:
        return DTYPE_FACTOR * float(xp.finfo(dtype).eps)
    except (TypeError, ValueError):  # pragma: no cover - non-float results are not produced by xderiv
        return 0.0


def _scalars(xp: Any, values: list[Array]) -> list[float]:
    """Python floats of 0-d arrays, with one compute for a lazy library."""
    if not values:
        return []
    stacked = xp.stack([xp.astype(v, xp.float64) for v in values])
    if array_api_compat.is_dask_array(stacked):
        stacked = stacked.compute()
    return [float(stacked[i]) for i in range(len(values))]


def check(
    op: Callable[..., Any],
    net: Any,
    x: Array,
    *args: Any,
    points: int = 8,
    rtol: float | None = None,
    reference: str | None = None,
    **kwargs: Any,
) -> CheckReport:
    r"""Check ``op(net, x, *args, **kwargs)`` against an independent reference on a few points.

    Evaluates the operator on the whole ``x`` and a reference of the same quantity at the first
    ``points`` points of the flattened batch (``x.reshape(-1, d)[:points]``), compares them and
    returns a :class:`CheckReport`; raises :class:`CheckError` with that report if any part of
    the result is farther from its reference than the tolerance.

    The reference differentiates the network's value ``xd.value(net, p)`` at each point ``p``
    alone, never xderiv's derivative recursions:

    - **torch**: ``torch.func`` (``jacfwd``, ``hessian``, nested ``jvp``), one point at a time (a
      ``vmap`` over points of ``torch.func.hessian`` returns wrong Hessians for functions ending
      in ``torch.linalg.slogdet`` in torch 2.13);
    - **JAX**: ``jax.jacfwd``, ``jax.hessian`` and nested ``jax.jvp`` under ``jax.vmap``;
    - **NumPy, array-api-strict, dask, CuPy**: central differences with Richardson extrapolation
      (Ridders' method, :class:`Differences`) in float64, whose error estimate enters the tolerance.

    Each operator reduces to the value, Jacobian, Hessian, directional derivatives
    :math:`g^{(k)}(0)` of :math:`g(t) = f(p + tv)`, the biharmonic and mixed partials of
    :math:`f`: ``hvp`` is :math:`H v`, ``trace_hessian`` :math:`\sum_j s_j^\top H s_j`,
    ``taylor`` :math:`g^{(k)}`, ``partial`` the alternating sum of :math:`K`-th directional
    derivatives along :math:`0 < j \le \alpha` (exact nested ``jvp`` along coordinates with
    autodiff), ``biharmonic`` :math:`\sum_{ij} \partial_i^2\partial_j^2 f` (``hessian`` of the
    Laplacian with autodiff, fourth directional derivatives along :math:`e_i, e_i \pm e_j` with
    differences).  ``value`` is compared with the points evaluated alone.

    ``laplacian(..., estimator=...)`` is compared with the estimator's definition along the
    *same* directions, :math:`c\sum_j s_j^\top H s_j` with :math:`H` the reference Hessian: the
    estimate is linear in the Hessian and the same arguments draw the same directions for any
    network of ``d`` inputs, so the operator's estimate for the quadratic
    :math:`\tfrac12 x^\top H_p x` at point ``p`` is that reference (one call per checked point
    and output; a ``numpy.random.Generator`` seed is copied before the call so that each call
    draws what it drew).  It checks the recursions along the drawn directions, not the draw; a
    composite (which randomizes only its networks' second derivatives) and the estimated
    biharmonic are refused with a ``ValueError``.

    Parameters
    ----------
    op : callable
        An xderiv operator (``xd.value``, ``xd.jacobian``, ``xd.gradient``, ``xd.hessian``,
        ``xd.laplacian``, ``xd.derivatives``, ``xd.trace_hessian``, ``xd.hessian_diagonal``,
        ``xd.hvp``, ``xd.directional``, ``xd.divergence``, ``xd.taylor``, ``xd.partial``,
        ``xd.biharmonic``, ``xd.second_order``), or a wrapper of one made with ``functools.wraps``: the wrapper's
        result is checked against the wrapped operator's reference.
    net : network
        Any network the operator takes (Sequential, Potential, composite, ``xd.function``,
        converted module).
    x : array (..., d)
    *args, **kwargs
        The operator's other arguments (``v``, ``directions``, ``order``, ``alpha``, ``coords``,
        ``estimator``, ``mode``...).
    points : int, default 8
        How many points (the first of the flattened batch) the reference is computed at.
    rtol : float, optional
        The tolerance on the relative error of each part,
        :math:`\max|r - \rho| / \max(\max|r|, \max|\rho|)` (result :math:`r`, reference
        :math:`\rho`, maxima over the checked entries).  Default: against autodiff
        :data:`AUTODIFF_RTOL` (``1e-9``); against differences
        :math:`\max(10^{-8}, 20\,\hat e)` with :math:`\hat e` the Richardson error estimate relative
        to the same scale; in both at least :math:`10^4` machine epsilons of the result's
        dtype (float32: ``1.2e-3``).
    reference : {None, "autodiff", "differences"}
        None (default): autodiff on torch and JAX, differences elsewhere.

    Returns
    -------
    CheckReport

    Raises
    ------
    CheckError
        (an ``AssertionError``) when a part's error exceeds its tolerance; ``.report`` holds the report.

    Examples
    --------
    >>> import numpy as np, xderiv as xd
    >>> net = xd.mlp([3, 16, 1], activation="tanh", seed=0)
    >>> x = np.random.default_rng(0).standard_normal((100, 3))
    >>> xd.check(xd.laplacian, net, x).passed
    True
    """
    base, name = _identify(op)
    count = int(points)
    if count < 1:
        raise ValueError(f"xd.check: points must be at least 1, got {points}")
    if not array_api_compat.is_array_api_obj(x):
        raise TypeError(f"xd.check: x must be an array, got {type(x).__name__}")
    bound = inspect.signature(base).bind(net, x, *args, **kwargs)
    arguments = dict(bound.arguments)
    _refuse(name, arguments)
    seed = arguments.get("seed")
    arguments["_seed"] = copy.deepcopy(seed) if _is_generator(seed) else seed  # as drawn from by the call
    result = op(net, x, *args, **kwargs)
    xp = _namespace(x)
    d = int(x.shape[-1])
    total = math.prod(tuple(x.shape[:-1]))
    n = min(count, total)
    if n == 0:
        raise ValueError("xd.check: x holds no points")
    P = xp.astype(xp.reshape(x, (total, d))[:n, ...], xp.float64)
    ref = _reference(net, xp, x, reference)
    results = _parts(name, result)
    dtype = next(r.dtype for _, r in results if r is not None)
    arguments["_dtype"] = dtype
    refs = _references(name, base, ref, x, P, arguments, xp)
    floor = _dtype_floor(xp, dtype)
    default = AUTODIFF_RTOL if ref.exact else DIFFERENCES_RTOL

    names, scalars = [], []
    for (part, r), (rho, err) in zip(results, refs, strict=True):
        if r is None:
            continue
        r = xp.reshape(r, (total, *r.shape[len(x.shape) - 1 :]))[:n, ...]
        rho = xp.reshape(rho, tuple(r.shape))
        r = xp.astype(r, xp.float64)
        scale = xp.maximum(xp.max(xp.abs(rho)), xp.max(xp.abs(r)))
        names.append(part)
        scalars += [xp.max(xp.abs(r - rho)), scale, xp.max(err) if err is not None else xp.zeros_like(scale)]
    values = _scalars(xp, scalars)
    parts = []
    for i, part in enumerate(names):
        diff, scale, err = values[3 * i : 3 * i + 3]
        error = diff / scale if scale > 0 else 0.0
        tol = rtol if rtol is not None else max(default, floor, SAFETY * err / scale if scale > 0 else 0.0)
        parts.append((part, error, float(tol)))

    def ratio(part: tuple[str, float, float]) -> float:
        _, error, tol = part
        return error / tol if tol > 0 else (math.inf if error > 0 else 0.0)

    worst = max(parts, key=ratio)
    report = CheckReport(name, ref.name, worst[1], worst[2], n, worst[0], tuple(parts))
    if not report.passed:
        raise CheckError(report)
    return report


def _refuse(name: str, arguments: dict[str, Any]) -> None:
    """The calls :func:`check` has no reference for, refused before the operator runs."""
    if arguments.get("estimator") is None:
        return
    if name == "biharmonic":
        raise ValueError(
            "xd.check: biharmonic(..., estimator='gaussian') is not checked: its reference would need the "
            "drawn directions' fourth derivatives; check the exact xd.biharmonic, or xd.taylor(..., order=4) "
            "along your own directions"
        )
    if name == "laplacian" and isinstance(arguments["net"], (Sum, Product, Scaled)):
        raise ValueError(
            "xd.check: an estimated Laplacian of a composite is not checked: a composite randomizes only its "
            "networks' second derivatives (values, gradients and cross terms enter exactly); check each "
            "network's estimate, or the composite's exact Laplacian"
        )


def _is_generator(seed: Any) -> bool:
    """A ``numpy.random.Generator`` (drawn from by each call), recognised without importing NumPy."""
    return type(seed).__name__ == "Generator" and hasattr(seed, "bit_generator")


class Every:
    """:func:`check` on one call in ``n``: the first call, the ``n + 1``-th, ... (:func:`every`)."""

    def __init__(self, n: int, **options: Any) -> None:
        if int(n) < 1:
            raise ValueError(f"xd.check.every: n must be at least 1, got {n}")
        self.n, self.options, self.calls = int(n), options, 0

    def __call__(self, op: Callable[..., Any], net: Any, x: Array, *args: Any, **kwargs: Any) -> CheckReport | None:
        """``xd.check(op, net, x, *args, **kwargs)`` on every ``n``-th call (the report), ``None`` on the others."""
        due = self.calls % self.n == 0
        self.calls += 1
        if not due:
            return None
        return check(op, net, x, *args, **{**self.options, **kwargs})


def every(n: int, *, points: int = 8, rtol: float | None = None, reference: str | None = None) -> Every:
    """A checker that runs :func:`check` on the first call and every ``n``-th after it.

    ``checker = xd.check.every(100)`` before a training loop, then ``checker(xd.laplacian, net, x)``
    inside it: on calls 0, n, 2n, ... it checks (raising :class:`CheckError` on a mismatch) and
    returns the report, on the others it returns ``None`` at no cost.

    Parameters
    ----------
    n : int
        Check one call in ``n``.
    points, rtol, reference
        As in :func:`check`.
    """
    return Every(n, points=points, rtol=rtol, reference=reference)


check.every = every  # type: ignore[attr-defined]
