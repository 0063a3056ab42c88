r"""Taylor mode: the normalised Taylor coefficients of :math:`t \mapsto y(x + t v)` carried through every layer.

Along :math:`x(t) = x + t v` every carried quantity is a truncated power series
:math:`u(t) = \sum_{k=0}^{K} u_k t^k` with :math:`u_k = \partial_v^k u / k!`;
:math:`u_0` is the value sweep's (:class:`~xderiv._forward.Tape`), and the input
has :math:`u_1 = v` and :math:`u_k = 0` for :math:`k \ge 2`.  Per layer
(``z = u W + b``, ``a = sigma(z)``, ``u' = skip * u + h * a``):

.. math::

    z_k = u_k W \quad (k \ge 1), \qquad
    a_k = \sum_{j=1}^{k} \frac{\sigma^{(j)}(z_0)}{j!}\, B_{j,k}(z_1, \dots, z_{k-j+1}), \qquad
    u'_k = \mathrm{skip}\; u_k + h\, a_k,

with :math:`B_{j,k}` the partial Bell table of :mod:`xderiv._series` (Faà di
Bruno's formula).  A linear map costs one GEMM per coefficient; an activation
:math:`\sim K^3/6 + K^2/2` elementwise products on top of its derivatives
:math:`\sigma', \dots, \sigma^{(K)}` at :math:`z_0`, which the value sweep keeps.
``r`` directions ride along as a leading row axis, like the Jacobian rows of
:func:`xderiv._forward.jacobian_sweep`: ``(n, r, w)`` per coefficient, or
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

from ._forward import Tape
from ._namespace import Array, matmul_last, scale
from ._series import add, compose, mul


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
    xp = tape.ctx.xp
    us: list[Array | None] = [None, seed] + [None] * (order - 1)
    if weights is not None:
        us[order] = collapse(us[order], weights, xp)
    inverse_factorials = [1.0 / math.factorial(j) for j in range(order + 1)]
    for step in tape.steps:
        zs: list[Array | None] = [None] + [None if u is None else matmul_last(u, step.w, xp) for u in us[1:]]
        if step.d1 is None:  # linear: a_k = z_k
            acts = zs
        else:
            c: list[Array | None] = [None] + [
                (step.derivs[j - 1] * inverse_factorials[j])[:, None, :] for j in range(1, order + 1)
            ]
            if weights is None:
                acts = compose(c, zs, order)
            else:  # the top coefficient: c_1 z_K (collapsed) plus the collapsed rest of Faa di Bruno's sum
                acts = compose(c, zs[:order] + [None], order)
                top = collapse(acts[order], weights, xp)
                acts[order] = add(top, mul(c[1], zs[order]))
        for k in range(1, order + 1):
            ak = acts[k]
            hk = None if ak is None else scale(ak, step.h)
            us[k] = add(us[k], hk) if step.skip else hk
    return us
