r"""Any linear second-order operator: ``second_order`` (diffusion, drift and reaction in one call).

.. math:: L y_k = \sum_{ij} a_{ij}\, \partial_i \partial_j y_k + \sum_i b_i\, \partial_i y_k + c\, y_k,

with :math:`A` symmetric and possibly indefinite (the wave operator :math:`u_{tt} - c^2 \Delta u`,
Black–Scholes, Fokker–Planck with a per-point diffusion :math:`\sigma\sigma^\top`,
Laplace–Beltrami), shared by the batch or one per point, or a function of ``x``.

:math:`A` is split once per call into signed rank-one terms, :math:`A = \sum_j \omega_j s_j s_j^\top`:
by its eigendecomposition (``linalg.eigh``, where the namespace has it; :math:`\omega` the
eigenvalues, and at a shared, concrete :math:`A` the null directions dropped, so a rank-``r``
:math:`A` carries ``r`` rows), its diagonal for a diagonal :math:`A` given as ``(d,)`` (the
axes, no factorisation), a factor :math:`A = S \operatorname{diag}(s) S^\top` given directly, or
elsewhere a shifted Cholesky factor, :math:`A = L L^\top - \lambda I` with :math:`\lambda` from
Gershgorin's bound (``2 d`` rows).  Then one trace sweep carries the rows :math:`s_j` (and
:math:`b`, weight 0, when given) and collapses :math:`\sum_j \omega_j\, s_j^\top \nabla^2 y\, s_j`:
forward ``k + 2`` passes for ``k = rank`` rows (``rank + 1`` with a drift; cost row
:data:`SECOND_ORDER`, the Laplacian's),
or backward the second-order adjoint closed by the weighted Gram matrix
:math:`(S^\top W_0)^\top \operatorname{diag}(\omega) (S^\top W_0) = W_0^\top A W_0`.

A Potential adds :math:`\mathrm{tr}(A A_s) + b \cdot \nabla q + c\, q`; a product of networks the
cross term :math:`2\, \nabla f^\top A\, \nabla g` (then :math:`b` and :math:`c` act on the product
as a whole).  On a graph: a Taylor jet of order 2 along the rows, its top term collapsed with
:math:`\omega` when :math:`\omega` is shared.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from ..backends.namespace import (
    Array,
    Context,
    _concrete_bool,
    array_namespace_of,
    is_array,
    known_array_type,
    resolve_call,
)
from ..engine.call import Call, run, value_kernel
from ..engine.cost import Quantity, register
from ..engine.explain import Need, register_plan
from ..engine.forward import Tape
from ..jets import is_graph
from ..jets.call import Setup
from ..jets.kinds import Taylor
from ..models.composition import Composite, Rule, fold
from ..models.networks import as_network
from .first_order import full_jacobian, resolved
from .laplacian import LAPLACIAN, trace_kernel, value_jacobian_trace


def _array(a: Any) -> bool:
    """Whether ``a`` is an array: a type learnt from the weights (traceable), else array-api-compat's test."""
    if a is None or isinstance(a, (int, float, bool, list, tuple)):
        return False
    return known_array_type(a) or is_array(a)


SECOND_ORDER = register(Quantity("second_order", 2, LAPLACIAN.memory, LAPLACIAN.flops))
"""The trace's row with ``k`` rows: the rank of ``A``, plus one for ``b`` when given."""

Coefficient = Any
"""An array, a number (``c``), or a callable of the points ``(..., d)`` returning one."""


def second_order(
    net: Any,
    x: Array,
    A: Coefficient = None,
    b: Coefficient = None,
    c: Coefficient = None,
    *,
    factor: Coefficient = None,
    signs: Any = None,
    mode: str = "auto",
    chunk_size: int | None = None,
) -> Array:
    r""":math:`\sum_{ij} a_{ij}\, \partial_{ij} y_k + \sum_i b_i\, \partial_i y_k + c\, y_k`, shape ``y.shape``.

    Parameters
    ----------
    net : Sequential, Potential, layer, composite or graph
    x : array (..., d)
    A : array, optional
        Symmetric, indefinite allowed: ``(d, d)`` shared by the batch, ``x.shape[:-1] + (d, d)`` one
        per point, or ``(d,)``, the diagonal of a diagonal :math:`A` (anisotropic diffusion, at the
        Laplacian's cost).  A callable of the points ``(..., d)`` returning one of these is
        evaluated once per call.  An asymmetric :math:`A` is refused (on arrays whose values can be
        read: not inside ``jax.jit``).
    b : array (d,) or x.shape, optional
        The drift (or a callable of the points).
    c : float or array x.shape[:-1], optional
        The reaction (or a callable of the points).
    factor : array (d, r) or x.shape[:-1] + (d, r), optional
        Instead of ``A``: :math:`S` in :math:`A = S \operatorname{diag}(s) S^\top` (e.g.
        :math:`\sigma(x)` of a diffusion :math:`\tfrac12\sigma\sigma^\top`, scaled), or a callable
        of the points returning it.  No factorisation.
    signs : sequence of r numbers, optional
        :math:`s` (with ``factor``; ones when omitted), e.g. ``[1, -c**2]`` for a wave operator.
    mode : {"auto", "forward", "backward"}
        As :func:`xderiv.trace_hessian` (graphs: forward only).
    chunk_size : int, optional

    Examples
    --------
    >>> import numpy as np, xderiv as xd
    >>> net = xd.mlp([2, 16, 1], activation="tanh", seed=0)
    >>> xt = np.random.default_rng(0).uniform(size=(5, 2))       # points (x, t)
    >>> wave = xd.second_order(net, xt, A=np.diag([-4.0, 1.0]))  # u_tt - 4 u_xx
    >>> wave.shape
    (5, 1)
    """
    if A is not None and factor is not None:
        raise TypeError("second_order takes A= or factor=, not both")
    if signs is not None and factor is None:
        raise TypeError("signs= goes with factor= (A = factor diag(signs) factor^T)")
    if is_graph(net):
        s = Setup(net, x, mode)
        terms = _Terms.build(s.x, s.batch, s.d, s.ctx, A, b, c, factor, signs)
        return s.shape(_graph(s, terms, chunk_size))
    network = as_network(net)
    if isinstance(network, Composite):
        _, ctx, xr, d = resolved(network, x)
        batch = tuple(xr.shape[:-1])
        x2 = ctx.xp.reshape(xr, (math.prod(batch), d))
        terms = _Terms.build(x2, batch, d, ctx, A, b, c, factor, signs)
        return _composite(network, xr, terms, mode, chunk_size)
    box: dict[str, _Terms] = {}

    def extras(call: Call) -> tuple:
        terms = box["terms"] = _Terms.build(call.x, call.batch, call.d, call.ctx, A, b, c, factor, signs)
        return terms.extras()

    def kernel(call: Call, tape: Tape, rows: Array, weights: Array, bvec: Array, cvec: Array) -> tuple:
        return (_chain_kernel(call, tape, rows, weights, bvec, cvec, box["terms"].drift),)

    return run(
        network,
        x,
        SECOND_ORDER,
        kernel,
        mode=mode,
        trailing=[()],
        extras=extras,
        rows=lambda rows, *rest: rows.shape[-2],
        chunk_size=chunk_size,
    )[0]


# --------------------------------------------------------------------------- the coefficients


class _Terms:
    r"""The coefficients of one call at the points: rows :math:`S^\top` with ``b`` last, weights, ``b``, ``c``.

    ``rows`` ``(k + 1, d)`` shared or ``(n, k + 1, d)`` per point; ``weights`` ``(k + 1,)`` or
    ``(n, k + 1)`` (the last 0: the drift's row carries only its first derivative; without ``b``,
    ``k`` rows); ``b`` ``(d,)`` or ``(n, d)`` (zeros without one); ``c`` ``()`` or ``(n,)``.  Per
    point when any coefficient is.
    """

    def __init__(self, rows: Array, weights: Array, b: Array, c: Array, per_point: bool, drift: bool) -> None:
        self.rows, self.weights, self.b, self.c, self.per_point = rows, weights, b, c, per_point
        self.drift = drift  # whether the last row is b

    def extras(self) -> tuple:
        pp = self.per_point
        return ((self.rows, pp), (self.weights, pp), (self.b, pp), (self.c, pp))

    @classmethod
    def build(
        cls,
        x: Array,
        batch: tuple[int, ...],
        d: int,
        ctx: Context,
        A: Coefficient,
        b: Coefficient,
        c: Coefficient,
        factor: Coefficient,
        signs: Any,
    ) -> _Terms:
        xp, n = ctx.xp, int(x.shape[0])
        points = xp.reshape(x, batch + (d,))

        def value(a: Coefficient, name: str) -> Any:
            a = a(points) if callable(a) else a
            if a is None or not _array(a):
                return a
            return resolve_call(a, xp, ctx.device, ctx.dtype, name=name)[1]

        def flat(a: Array, trailing: tuple[int, ...], name: str, forms: str) -> tuple[Array, bool]:
            shape = tuple(a.shape)
            if shape == trailing:
                return a, False
            if shape == batch + trailing:
                return xp.reshape(a, (n,) + trailing), True
            raise ValueError(f"{name} has shape {shape}; expected {forms} for points x of shape {batch + (d,)}")

        if factor is not None:
            f = value(factor, "factor")
            if not _array(f) or f.ndim < 2 or f.shape[-2] != d:
                got = getattr(f, "shape", type(f).__name__)
                raise ValueError(f"factor has shape {got}; expected ({d}, r) or {batch + (d, 'r')}")
            r = int(f.shape[-1])
            f, pp_a = flat(f, (d, r), "factor", f"({d}, r) or {batch + (d, 'r')}")
            rows = xp.matrix_transpose(f)
            w = xp.ones((r,), dtype=ctx.dtype, device=ctx.device) if signs is None else _signs(signs, r, ctx)
        elif A is not None:
            a = value(A, "A")
            if not _array(a):
                raise TypeError(f"A must be an array (d, d), x.shape[:-1] + (d, d) or (d,), got {type(a).__name__}")
            if tuple(a.shape) == (d,):
                rows, w, pp_a = xp.eye(d, dtype=ctx.dtype, device=ctx.device), a, False
            else:
                a, pp_a = flat(a, (d, d), "A", f"({d}, {d}), {batch + (d, d)} or ({d},)")
                _check_symmetric(a)
                rows, w = _signed_rows(a, ctx, drop_null=not pp_a)
        else:
            rows = xp.zeros((0, d), dtype=ctx.dtype, device=ctx.device)
            w, pp_a = xp.zeros((0,), dtype=ctx.dtype, device=ctx.device), False
        bv = value(b, "b")
        if bv is None:
            bv, pp_b = xp.zeros((d,), dtype=ctx.dtype, device=ctx.device), False
        else:
            bv, pp_b = flat(bv, (d,), "b", f"({d},) or {batch + (d,)}")
        cv = value(c, "c")
        if cv is None or not _array(cv):
            cv, pp_c = xp.asarray(0.0 if cv is None else float(cv), dtype=ctx.dtype, device=ctx.device), False
        else:
            cv, pp_c = flat(cv, (), "c", f"a number, () or {batch}")
        per = pp_a or pp_b or pp_c
        k = int(rows.shape[-2])
        if per:
            rows = xp.broadcast_to(rows, (n, k, d)) if rows.ndim == 2 else rows
            w = xp.broadcast_to(w, (n, k)) if w.ndim == 1 else w
            bv = xp.broadcast_to(bv, (n, d)) if bv.ndim == 1 else bv
            cv = xp.broadcast_to(cv, (n,)) if cv.ndim == 0 else cv
        if b is not None:  # the drift's row, weight 0: its first derivative only
            rows = xp.concat([rows, bv[..., None, :]], axis=-2)
            w = xp.concat([w, xp.zeros(tuple(w.shape[:-1]) + (1,), dtype=ctx.dtype, device=ctx.device)], axis=-1)
        return cls(rows, w, bv, cv, per, b is not None)


def _signs(signs: Any, r: int, ctx: Context) -> Array:
    xp = ctx.xp
    s = signs if _array(signs) else xp.asarray([float(v) for v in signs], dtype=ctx.dtype, device=ctx.device)
    s = resolve_call(s, xp, ctx.device, ctx.dtype, name="signs")[1]
    if tuple(s.shape) != (r,):
        raise ValueError(f"signs has shape {tuple(s.shape)}; expected ({r},), one per column of factor")
    return s


def _check_symmetric(a: Array) -> None:
    """Refuse an asymmetric ``A`` (when its values can be read), naming the asymmetry seen."""
    xp = array_namespace_of(a)
    gap = xp.max(xp.abs(a - xp.matrix_transpose(a)))
    size = xp.max(xp.abs(a))
    tol = 64.0 * xp.finfo(a.dtype).eps
    bad = _concrete_bool(gap > tol * size)
    if bad:
        raise ValueError(
            f"A must be symmetric (sum a_ij d_ij y sees only its symmetric part): max |A - A^T| = {float(gap):.3g} "
            f"against max |A| = {float(size):.3g}; pass (A + A^T) / 2 if that is what you mean"
        )


def _signed_rows(a: Array, ctx: Context, drop_null: bool) -> tuple[Array, Array]:
    r"""Rows :math:`s_j^\top` and weights :math:`\omega_j` with :math:`A = \sum_j \omega_j s_j s_j^\top`.

    ``a`` is ``(d, d)`` or ``(n, d, d)``.  By ``linalg.eigh`` where the namespace has it (with
    ``drop_null`` and concrete values, eigenvalues below :math:`d\, \epsilon \max|\lambda|` are
    dropped: rank rows); otherwise :math:`A = L L^\top - \lambda I` (:func:`_shifted_cholesky`).
    """
    xp = ctx.xp
    eigh = getattr(getattr(xp, "linalg", None), "eigh", None)
    if eigh is None:
        return _shifted_cholesky(a, ctx)
    vals, vecs = eigh(a)
    rows, w = xp.matrix_transpose(vecs), vals
    if drop_null and a.ndim == 2:
        d = int(a.shape[-1])
        big = xp.abs(vals) > d * xp.finfo(a.dtype).eps * xp.max(xp.abs(vals))
        if _concrete_bool(xp.all(big)) is False:  # one read when A has full rank; null directions: d reads
            keep = [bool(_concrete_bool(big[j])) for j in range(d)]
            idx = xp.asarray([j for j in range(d) if keep[j]], device=ctx.device)
            rows, w = xp.take(rows, idx, axis=0), xp.take(w, idx, axis=0)
    return rows, w


def _shifted_cholesky(a: Array, ctx: Context) -> tuple[Array, Array]:
    r""":math:`A = L L^\top - \lambda I`, ``2 d`` rows, with only Array API operations (no ``linalg``).

    :math:`\lambda = \max(0, \max_i \sum_{j \ne i} |a_{ij}| - a_{ii}) + \max|A|` makes
    :math:`A + \lambda I` strictly diagonally dominant, so its Cholesky factor exists and is
    computed stably column by column (``d`` steps, batched over the points).
    """
    xp = ctx.xp
    d = int(a.shape[-1])
    eye = xp.eye(d, dtype=ctx.dtype, device=ctx.device)
    absa = xp.abs(a)
    diag = xp.sum(a * eye, axis=-1)
    radius = xp.sum(absa, axis=-1) - xp.abs(diag)
    lam = xp.maximum(xp.max(radius - diag, axis=-1), 0.0 * diag[..., 0]) + xp.max(xp.max(absa, axis=-1), axis=-1)
    m = a + lam[..., None, None] * eye
    cols: list[Array] = []
    below = [
        xp.asarray([1.0 if i >= j else 0.0 for i in range(d)], dtype=ctx.dtype, device=ctx.device) for j in range(d)
    ]
    for j in range(d):
        v = m[..., :, j]
        if cols:
            done = xp.stack(cols, axis=-1)  # (..., d, j)
            v = v - xp.sum(done * done[..., j : j + 1, :], axis=-1)
        pivot = xp.sqrt(v[..., j : j + 1])
        cols.append(below[j] * v / pivot)
    lower = xp.stack(cols, axis=-1)  # L, (..., d, d)
    rows = xp.concat([xp.matrix_transpose(lower), xp.broadcast_to(eye, tuple(lower.shape))], axis=-2)
    ones = xp.ones(tuple(lam.shape) + (d,), dtype=ctx.dtype, device=ctx.device)
    return rows, xp.concat([ones, -lam[..., None] * ones], axis=-1)


# --------------------------------------------------------------------------- chains, composites, graphs


def _chain_kernel(
    call: Call, tape: Tape, rows: Array, weights: Array, bvec: Array, cvec: Array, with_drift: bool
) -> Array:
    """``L y`` of a chain from one value sweep: the weighted trace, the drift's row (last, if any), the value."""
    xp = call.ctx.xp
    (y,) = value_kernel(call, tape)
    out = (cvec[:, None] if cvec.ndim == 1 else cvec) * y
    if int(rows.shape[-2]) == 0:  # no A and no b: c y alone
        return out
    jac, trace = trace_kernel(call, tape, rows, weights=weights)
    out = out + trace
    if not with_drift:
        return out
    if call.mode == "forward":  # the last row is b: its column is the drift term of the layers
        drift = full_jacobian(replace(call, d=int(rows.shape[-2])), jac)[..., -1]
    else:
        drift = xp.sum(full_jacobian(call, jac) * bvec[..., None, :], axis=-1)
    grad = call.terms.gradient(call.x)
    if grad is not None:
        drift = drift + xp.sum(grad * bvec, axis=-1)[:, None]
    return out + drift


def _composite(network: Composite, x: Array, terms: _Terms, mode: str, chunk_size: int | None) -> Array:
    """``L`` of a composite: the trace by the product rule (cross :math:`2 \\nabla f^\\top A \\nabla g`), b, c."""
    xp = array_namespace_of(x)
    batch = tuple(x.shape[:-1])
    rows, weights, pp = terms.rows, terms.weights, terms.per_point
    k, d = int(rows.shape[-2]), int(rows.shape[-1])

    def leaf(part: Any, x: Any) -> tuple:
        return tuple(value_jacobian_trace(part, x, mode=mode, chunk_size=chunk_size, weighted=(rows, weights, pp)))

    s_pub = xp.reshape(rows, batch + (k, d)) if pp else rows  # rows S^T
    w_pub = xp.reshape(weights, batch + (1, k)) if pp else weights

    def cross(f: Array, g: Array) -> Array:  # f, g: batch + (m, d)
        st = xp.matrix_transpose(s_pub)
        return 2.0 * xp.sum(w_pub * (f @ st) * (g @ st), axis=-1)

    jet = fold(network, x, Rule(leaf, first_rank=1, second_rank=0, cross=cross))
    assert jet.first is not None and jet.second is not None
    tail = jet.first.ndim - len(batch) - 1  # 1 with an output axis, 0 for a scalar network
    bv = xp.reshape(terms.b, batch + (1,) * tail + (d,)) if pp else terms.b
    cv = xp.reshape(terms.c, batch + (1,) * tail) if pp else terms.c
    return jet.second + xp.sum(jet.first * bv, axis=-1) + cv * jet.value


def _graph(s: Setup, terms: _Terms, chunk_size: int | None) -> Array:
    """``L`` of a graph, ``(n, m)``: one Taylor jet of order 2 along the rows (collapsed with shared weights)."""
    xp = s.xp
    c = terms.c
    if int(terms.rows.shape[-2]) == 0:  # no A and no b: c y alone
        (value,) = s.run_value(chunk_size)
        c = xp.reshape(c, tuple(c.shape) + (1,) * (value.ndim - 1)) if c.ndim == 1 else c
        return c * value
    if terms.per_point:
        y, first, second = s.run(Taylor(2), terms.rows, chunk_size)
        w = xp.permute_dims(terms.weights, (1, 0))  # (k + 1, n)
        w = xp.reshape(w, tuple(w.shape) + (1,) * (second.ndim - 2))
        trace = 2.0 * xp.sum(w * second, axis=0)
    else:
        y, first, top = s.run(Taylor(2, terms.weights), terms.rows, chunk_size)
        trace = 2.0 * top[0, ...]
    value = y[0, ...]
    c = xp.reshape(c, tuple(c.shape) + (1,) * (value.ndim - 1)) if c.ndim == 1 else c
    return trace + c * value + (first[-1, ...] if terms.drift else 0.0)


def _plan(d: int, a: dict) -> Need:
    factor, coefficient = a.get("factor"), a.get("A")
    if factor is not None and not callable(factor):
        k = int(factor.shape[-1])
    elif coefficient is not None or factor is not None:
        k = 2 * d if coefficient is not None and _needs_fallback(coefficient) else d  # at most: rank rows
    else:
        k = 0
    chain = {
        "forward": "the forward Laplacian along the directions of A with signed weights, and b's row",
        "backward": "the second-order adjoint, closed by W_0^T A W_0",
    }
    k += a.get("b") is not None
    return Need(SECOND_ORDER, k, chain, f"a Taylor jet of order 2 along {k} directions (A's, and b if given)")


def _needs_fallback(a: Any) -> bool:
    if callable(a) or not is_array(a) or a.ndim < 2:
        return False
    xp = array_namespace_of(a)
    return getattr(getattr(xp, "linalg", None), "eigh", None) is None


register_plan(second_order, _plan)
