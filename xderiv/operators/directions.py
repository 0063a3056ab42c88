r"""Direction sets that turn univariate Taylor coefficients into mixed derivatives.

:math:`\Delta^2 y` and :math:`\partial^\alpha y` are exact weighted sums of the top Taylor
coefficient :math:`y_K = \partial_v^K y / K!` along a few directions :math:`v` (the interpolation
of Griewank, Utke and Walther).  These functions give the directions and the weights; every
engine that carries a collapsed top coefficient (the chain's Taylor sweep, the jets of
:mod:`xderiv.jets`) evaluates them the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import product
from typing import Any

from ..backends.namespace import check_int


def biharmonic_directions(d: int) -> tuple[list[list[float]], list[float]]:
    r"""Directions and weights with :math:`\Delta^2 y = \sum_\rho \omega_\rho\, y_{4,\rho}` (normalised coefficients).

    The axes and the diagonals :math:`e_i \pm e_j` (:math:`i < j`): since
    :math:`D^4_{e_i + e_j} + D^4_{e_i - e_j} = 2(\partial_i^4 + \partial_j^4 + 6\,\partial_i^2\partial_j^2) y`
    (:math:`D^4_v = \partial_v^4 y = 24\, y_4`),

    .. math:: \Delta^2 y = \frac{4 - d}{3} \sum_i D^4_{e_i}
              + \frac16 \sum_{i<j} \left(D^4_{e_i + e_j} + D^4_{e_i - e_j}\right):

    :math:`d^2` directions (:math:`d(d-1)` at :math:`d = 4`, where the axes drop out).
    """
    rows: list[list[float]] = []
    weights: list[float] = []
    axis_weight = (4.0 - d) / 3.0
    if axis_weight != 0.0:
        for i in range(d):
            rows.append([1.0 if k == i else 0.0 for k in range(d)])
            weights.append(24.0 * axis_weight)
    for i in range(d):
        for j in range(i + 1, d):
            for sign in (1.0, -1.0):
                rows.append([1.0 if k == i else sign if k == j else 0.0 for k in range(d)])
                weights.append(24.0 / 6.0)
    return rows, weights


def multi_index(alpha: Any, d: int) -> tuple[int, ...]:
    """``alpha`` checked as a multi-index: ``d`` non-negative counts, one per coordinate."""
    try:
        items = list(alpha)
    except TypeError:
        raise TypeError(
            f"alpha must be a sequence of d={d} non-negative counts (e.g. (2, 1, 0) for d^3/dx0^2 dx1), got {alpha!r}"
        ) from None
    counts = tuple(check_int(a, "alpha", 0) for a in items)
    if len(counts) != d:
        raise ValueError(
            f"alpha has {len(counts)} entries; it counts the derivatives along each of the d={d} coordinates "
            f"(e.g. {(2, 1) + (0,) * (d - 2) if d >= 2 else (3,)})"
        )
    return counts


def partial_directions(alpha: Sequence[int]) -> tuple[list[tuple[int, ...]], list[float]]:
    r"""Directions and weights: :math:`\partial^\alpha y = \sum_\rho \omega_\rho\, y_{K,\rho}`, :math:`K = |\alpha|`.

    The homogeneous polynomial
    :math:`p(v) = \partial_v^K y = \sum_{|\beta| = K} \frac{K!}{\beta!} v^\beta \partial^\beta y`
    has the coefficient :math:`\frac{K!}{\alpha!}\partial^\alpha y` at :math:`v^\alpha`, and the
    mixed forward difference :math:`\Delta^\alpha p(0) = \sum_{0 \le j \le \alpha} (-1)^{|\alpha - j|}
    \binom{\alpha}{j} p(j)` picks it out times :math:`\alpha!` (it annihilates every other monomial of
    degree :math:`K`), so

    .. math:: \partial^\alpha y = \sum_{0 < j \le \alpha} (-1)^{|\alpha - j|} \binom{\alpha}{j}\, y_{K}(j),
              \qquad y_K(j) = \partial_j^K y / K!,

    with :math:`\binom{\alpha}{j} = \prod_i \binom{\alpha_i}{j_i}`: the difference form of Griewank, Utke and
    Walther's interpolation.  Directions on one line are merged (:math:`y_K(g p) = g^K y_K(p)`), so
    ``alpha = (2, 2)`` takes 5 directions, not 8.
    """
    order = sum(alpha)
    support = [i for i, a in enumerate(alpha) if a]
    merged: dict[tuple[int, ...], float] = {}
    # plain loops (no generators passed to builtins): torch.compile traces this with the call
    for js in product(*[range(alpha[i] + 1) for i in support]):
        if sum(js) == 0:
            continue
        coef = (-1) ** (order - sum(js))
        g = 0
        for i, j in zip(support, js):
            coef *= math.comb(alpha[i], j)
            g = math.gcd(g, j)
        line = [0] * len(alpha)
        for i, j in zip(support, js):
            line[i] = j // g
        key = tuple(line)
        merged[key] = merged.get(key, 0.0) + float(coef) * float(g) ** order
    rows = [k for k, c in merged.items() if c != 0.0]
    return rows, [merged[k] for k in rows]
