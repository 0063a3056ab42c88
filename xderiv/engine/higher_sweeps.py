r"""Taylor mode: the normalised Taylor coefficients of :math:`t \mapsto y(x + t v)` carried through every layer.

Along :math:`x(t) = x + t v` every carried quantity is a truncated power series
:math:`u(t) = \sum_{k=0}^{K} u_k t^k` with :math:`u_k = \partial_v^k u / k!`;
:math:`u_0` is the value sweep's (:class:`~xderiv.engine.forward.Tape`), and the input
has :math:`u_1 = v` and :math:`u_k = 0` for :math:`k \ge 2`.  Per layer
(``z = u W + b``, ``a = sigma(z)``, ``u' = skip * u + h * a``):

.. math::

    z_k = u_k W \quad (k \ge 1), \qquad
    a_k = \sum_{j=1}^{k} \frac{\sigma^{(j)}(z_0)}{j!}\, B_{j,k}(z_1, \dots, z_{k-j+1}), \qquad
    u'_k = \mathrm{skip}\; u_k + h\, a_k,

with :math:`B_{j,k}` the partial Bell table of :mod:`xderiv.engine.series` (Faà di
Bruno's formula).  A linear map costs one GEMM per coefficient; an activation
:math:`\sim K^3/6 + K^2/2` elementwise products on top of its derivatives
:math:`\sigma', \dots, \sigma^{(K)}` at :math:`z_0`, which the value sweep keeps.
``r`` directions ride along as a leading row axis, like the Jacobian rows of
:func:`xderiv.engine.forward.jacobian_sweep`: ``(n, r, w)`` per coefficient, or
``(r, w)`` while no layer depends on the point.

*Collapsed top coefficient.*  For a weighted sum over directions
:math:`\sum_\rho \omega_\rho\, \partial^K_{v_\rho} y` (an operator such as
:math:`\Delta^2`), the top coefficient enters every recursion linearly
(:math:`a_K = c_1 z_K + \text{terms in } z_1, \dots, z_{K-1}`), so its weighted
sum is carried instead of the ``r`` rows: one row instead of ``r`` in the last
GEMM of every layer.

Nothing here branches on array values, writes state or talks to a particular
backend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..backends.namespace import Array, Context
from ..backends.primitives import scale
from .forward import Tape
from .series import add, compose, mul


def collapse(a: Array | None, weights: Array, xp: object) -> Array | None:
    r""":math:`\sum_\rho \omega_\rho\, a_\rho` over the direction axis ``-2`` of ``a`` (..., r, w), kept (length 1)."""
    if a is None:
        return None
    return xp.sum(weights[:, None] * a, axis=-2, keepdims=True)  # type: ignore[attr-defined]


def taylor_sweep(tape: Tape, seed: Array, order: int, weights: Array | None = None) -> list[Array | None]:
    r"""Carry :math:`u_1, \dots, u_K` from the input to the output of the layers.

    Parameters
    ----------
    tape : Tape
        The value sweep, of order ``order`` (it keeps :math:`\sigma', \dots, \sigma^{(K)}`).
    seed : array (r, d) or (n, r, d)
        The directions :math:`v_\rho` as rows, shared by the batch or one set per point.
    order : int
        :math:`K \ge 1`.
    weights : array (r,), optional
        Carry the top coefficient collapsed: :math:`\sum_\rho \omega_\rho u_{K,\rho}`.

    Returns
    -------
    list
        ``[None, y_1, ..., y_K]``: the output's normalised coefficients (layers only,
        no Potential terms), each ``(n, r, m)``, or ``(r, m)`` for a network that is
        linear in the input; the collapsed top one has a direction axis of length 1.
        None stands for an exactly zero coefficient.
    """
    xp, ops = tape.ctx.xp, tape.ctx.ops
    us: list[Array | None] = [None, seed] + [None] * (order - 1)
    if weights is not None:
        us[order] = collapse(us[order], weights, xp)
    inverse_factorials = [1.0 / math.factorial(j) for j in range(order + 1)]
    for step in tape.steps:
        zs: list[Array | None] = [None] + [None if u is None else ops.matmul(u, step.w, xp) for u in us[1:]]
        if step.d1 is None:  # linear: a_k = z_k, added to u_k across a residual step
            acts = [None if z is None else scale(z, step.h) for z in zs]
            us = [add(u, a) for u, a in zip(us, acts)] if step.skip else acts
            continue
        # h sigma^(j) / j!: the step folded in, once per layer on (n, w)
        c: list[Array | None] = [None] + [
            (step.derivs[j - 1] * (step.h * inverse_factorials[j]))[:, None, :] for j in range(1, order + 1)
        ]
        start = us if step.skip else None  # a residual step accumulates into u_k: no pass for the sum
        if weights is None:
            us = compose(c, zs, order, start=start, fma=ops.addcmul)
            continue
        # the top coefficient: c_1 z_K (collapsed) plus the collapsed rest of Faa di Bruno's sum
        below = None if start is None else [*start[:order], None]
        acts = compose(c, zs[:order] + [None], order, start=below, fma=ops.addcmul)
        top = add(collapse(acts[order], weights, xp), mul(c[1], zs[order]))
        acts[order] = add(us[order], top) if step.skip else top
        us = acts
    return us


# --------------------------------------------------------------------------- the forward biharmonic


@dataclass(frozen=True)
class Pairs:
    r"""The packed storage of a symmetric :math:`d \times d` matrix: rows :math:`(i, j)`, :math:`i \le j`.

    Attributes
    ----------
    first, second : array (P,) of int
        :math:`i` and :math:`j` of each of the :math:`P = d(d+1)/2` stored entries.
    weight : array (P,)
        1 on the diagonal, 2 off it: :math:`\sum_{ij} A_{ij} B_{ij} = \sum_p \omega_p A_p B_p`.
    full : array (d * d,) of int
        The stored row of each :math:`(i, j)`, row-major: unpacks with one ``take``.
    to_first, to_second : array (d, P)
        0/1 matrices summing rows into :math:`i` (every pair) and into :math:`j` (pairs off the
        diagonal): :math:`(A v)_k = \sum_i A_{ki} v_i` is ``to_first @ (A * v[second]) +
        to_second @ (A * v[first])`` for a packed symmetric :math:`A`.
    """

    first: Array
    second: Array
    weight: Array
    full: Array
    to_first: Array
    to_second: Array

    @classmethod
    def build(cls, d: int, ctx: Context) -> Pairs:
        xp = ctx.xp
        pairs = [(i, j) for i in range(d) for j in range(i, d)]
        index = {p: k for k, p in enumerate(pairs)}
        full = [index[(min(i, j), max(i, j))] for i in range(d) for j in range(d)]
        to_first = [[1.0 if i == k else 0.0 for i, _ in pairs] for k in range(d)]
        to_second = [[1.0 if j == k and i != j else 0.0 for i, j in pairs] for k in range(d)]
        return cls(
            xp.asarray([i for i, _ in pairs], device=ctx.device),
            xp.asarray([j for _, j in pairs], device=ctx.device),
            xp.asarray([1.0 if i == j else 2.0 for i, j in pairs], dtype=ctx.dtype, device=ctx.device),
            xp.asarray(full, device=ctx.device),
            xp.asarray(to_first, dtype=ctx.dtype, device=ctx.device),
            xp.asarray(to_second, dtype=ctx.dtype, device=ctx.device),
        )


@dataclass(frozen=True)
class FourthOrder:
    r"""What :func:`forward_biharmonic` carries, for the output of the layers (no Potential terms).

    Each is ``(n, rows, m)`` or, while no layer depends on the point, ``(rows, m)``; None is zero.

    Attributes
    ----------
    grad : array (n, d, m)
        :math:`\nabla y` (rows :math:`i`).
    hess : array (n, P, m) or None
        :math:`\nabla^2 y`, packed (:class:`Pairs`).
    grad_lap : array (n, d, m) or None
        :math:`\nabla \Delta y`.
    lap : array (n, 1, m) or None
        :math:`\Delta y`.
    bilap : array (n, 1, m) or None
        :math:`\Delta^2 y`.
    pairs : Pairs
    """

    grad: Array
    hess: Array | None
    grad_lap: Array | None
    lap: Array | None
    bilap: Array | None
    pairs: Pairs


def _dot(a: Array, b: Array, xp: Any) -> Array:
    """``sum(a * b)`` over the row axis ``-2``, kept."""
    return xp.sum(a * b, axis=-2, keepdims=True)


def forward_biharmonic(tape: Tape) -> FourthOrder:
    r"""Carry :math:`\nabla u, \nabla^2 u, \nabla\Delta u, \Delta u, \Delta^2 u` of every unit from the input.

    A linear map carries each of them with one product (:math:`d(d+1)/2 + 2d + 2` rows per
    point).  Through :math:`a = \sigma(z)`, with :math:`g = \nabla z`, :math:`H = \nabla^2 z`,
    :math:`G = \lVert g \rVert^2`, :math:`L = \Delta z`, :math:`\sigma^{(k)}` at :math:`z`
    (the fourth-order Faà di Bruno formula contracted over :math:`i, i, j, j`):

    .. math::

        \nabla a &= \sigma' g, \qquad
        \nabla^2 a = \sigma'' g g^\top + \sigma' H, \qquad
        \Delta a = \sigma'' G + \sigma' L, \\
        \nabla\Delta a &= \sigma''' G\, g + \sigma'' (2 H g + L\, g) + \sigma' \nabla L, \\
        \Delta^2 a &= \sigma'''' G^2 + \sigma''' (2 L G + 4\, g^\top H g)
            + \sigma'' (2 \lVert H \rVert_F^2 + 4\, g \cdot \nabla L + L^2) + \sigma' \Delta^2 z .

    The Hessians are stored packed (:class:`Pairs`): :math:`d(d+1)/2` rows, the least any exact
    method carries (:math:`\Delta^2 \sigma(z)` contains :math:`2\sigma'' \lVert \nabla^2 z \rVert_F^2`).
    """
    ctx, ops = tape.ctx, tape.ctx.ops
    xp = ctx.xp
    d = tape.d
    pairs = Pairs.build(d, ctx)
    g: Array | None = None  # None: the identity (at the input)
    hess: Array | None = None
    grad_lap: Array | None = None
    lap: Array | None = None
    bilap: Array | None = None
    for step in tape.steps:
        w = step.w
        gz = w if g is None else ops.matmul(g, w, xp)
        hz, glz, lz, bz = (None if a is None else ops.matmul(a, w, xp) for a in (hess, grad_lap, lap, bilap))
        if step.skip and g is None:
            g = xp.eye(d, dtype=ctx.dtype, device=ctx.device)
        if step.d1 is None:  # linear
            ga, ha, gla, la, ba = (None if a is None else scale(a, step.h) for a in (gz, hz, glz, lz, bz))
            hess = add(hess, ha) if step.skip else ha
        else:
            s1, s2, s3, s4 = (scale(a, step.h)[:, None, :] for a in step.derivs[:4])
            gi, gj = xp.take(gz, pairs.first, axis=-2), xp.take(gz, pairs.second, axis=-2)
            gg = gi * gj  # g g^T, packed: the (n, d(d+1)/2, w) passes below are the sweep's elementwise cost
            # the new Hessian s2 g g^T + s1 H (added to the old one across a residual step): fused where possible
            base = hess if step.skip else None
            if hz is not None:
                base = hz * s1 if base is None else ops.addcmul(base, s1, hz)
            ha = gg * s2 if base is None else ops.addcmul(base, s2, gg)
            big_g = _dot(gz, gz, xp)
            ga = s1 * gz
            la = add(s2 * big_g, mul(s1, lz))
            ggl = s3 * big_g
            ba = s4 * (big_g * big_g)
            if lz is not None:
                ggl = ggl + s2 * lz
                ba = ba + s3 * (2.0 * lz * big_g) + s2 * (lz * lz)
            gla = ggl * gz
            if hz is not None:
                hg = pairs.to_first @ (hz * gj) + pairs.to_second @ (hz * gi)  # (H g)_k = sum_i H_ki g_i
                frobenius = pairs.weight[None, :] @ (hz * hz)  # sum_ij H_ij^2
                gla = gla + (2.0 * s2) * hg
                ba = ba + s3 * (4.0 * _dot(gz, hg, xp)) + s2 * (2.0 * frobenius)
            if glz is not None:
                gla = gla + s1 * glz
                ba = ba + s2 * (4.0 * _dot(gz, glz, xp))
            if bz is not None:
                ba = ba + s1 * bz
            hess = ha
        if step.skip:
            g = add(g, ga)
            grad_lap, lap, bilap = add(grad_lap, gla), add(lap, la), add(bilap, ba)
        else:
            g, grad_lap, lap, bilap = ga, gla, la, ba
    assert g is not None
    return FourthOrder(g, hess, grad_lap, lap, bilap, pairs)
