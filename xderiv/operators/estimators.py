r"""Unbiased randomized estimators of the Laplacian: their directions, scale factors and variances.

Each estimator is a trace along random directions, computed by the exact
``trace_hessian`` recursions (no new recursion), times a constant:

.. math:: \widehat{\Delta u} = c \sum_{j=1}^{k} s_j^\top \nabla^2 u\, s_j,
          \qquad E\Big[c \sum_j s_j s_j^\top\Big] = I,

so :math:`E[\widehat{\Delta u}] = \Delta u` for every network and point.  With
:math:`H = \nabla^2 u(x)` (per output), ``k = samples`` and ``d`` inputs:

==============  ================================  =========  ==================================================
estimator       directions :math:`s_j`            :math:`c`  variance of the estimate (one point, one output)
==============  ================================  =========  ==================================================
``hutchinson``  Rademacher, entries :math:`\pm1`  ``1/k``    :math:`\frac2k \sum_{i \ne j} H_{ij}^2`
``gaussian``    :math:`N(0, I_d)`                 ``1/k``    :math:`\frac2k \lVert H\rVert_F^2`
``sdgd``        ``k`` distinct coordinates        ``d/k``    :math:`\frac{d^2}{k}\,\frac{d-k}{d-1}\,\sigma_H^2`
``stde``        as ``sdgd``                       ``d/k``    as ``sdgd``
==============  ================================  =========  ==================================================

with :math:`\sigma_H^2 = \frac1d \sum_i \big(H_{ii} - \tfrac{\Delta u}{d}\big)^2` the (population)
variance of the diagonal of :math:`H`, and
:math:`\sum_{i \ne j} H_{ij}^2 = \lVert H\rVert_F^2 - \sum_i H_{ii}^2`.

``sdgd`` (stochastic dimension gradient descent) samples ``k`` of the ``d``
coordinates without replacement and sums :math:`\partial_i^2 u` over them
(the factor :math:`\frac{d-k}{d-1}` is the finite-population correction; it
vanishes at ``k = d``, where the estimate is exact).  ``stde`` is the
Laplacian of the stochastic Taylor derivative estimator with *sparse random
jets* (Shi et al., 2024): push the 2-jets :math:`(x, e_i, 0)` through the
network for sampled coordinates :math:`i` and read
:math:`\partial_i^2 u` off the second-order coefficient, times ``d/k``.  For
the Laplacian that is the same estimator as SDGD, and in xderiv also the same
computation: the forward recursion that carries one Jacobian row
:math:`e_i^\top J` with its second-order coefficient *is* the 2-jet along
:math:`e_i`.  So ``"stde"`` gives exactly ``"sdgd"``'s numbers for the same
seed; both names exist because the papers and their baselines differ (SDGD's
reference implementation forms the sampled second derivatives by
backward-mode HVPs, STDE's by Taylor-mode jets).

Composites (``phi * N``, ``g + phi * N``, ...) are estimated by the product
rule with only the networks' second derivatives randomized: each leaf network
gives its exact value and gradient and the estimate of its own Laplacian
along the common directions, the cross terms :math:`2\nabla f\cdot\nabla g` are
exact, and a leaf without a nonlinear layer (a :func:`~xderiv.quadratic`) gives
its exact Laplacian.  The estimate stays unbiased and its variance is that of
the leaves' estimates weighted by their factors: for :math:`u = \varphi N`,
:math:`\varphi^2\,\mathrm{Var}(\widehat{\Delta N})`, zero on the boundary where
:math:`\varphi = 0` (randomizing the whole product would add the variance of
:math:`\frac2k\sum_j (s_j\cdot\nabla\varphi)(s_j\cdot\nabla N)`, large in high
dimension, for no saving: the gradients are computed anyway).

Directions are drawn per point (``per_point=True``: ``batch + (k, d)``
numbers, each point's estimate independent of the others') or shared by the
batch (``k`` directions for all points: the estimates of different points
are then correlated, each stays unbiased, and the forward recursion's first
layer is one ``(k, d) x (d, w)`` product for the whole batch instead of one
per point).  Defaults: per point for ``hutchinson`` and ``gaussian`` (the
usual Hutchinson estimator), shared for ``sdgd`` and ``stde`` (as both papers
sample one set of dimensions per step).

The same Gaussian directions give :func:`xderiv.biharmonic`'s estimate
:math:`\frac{1}{3k}\sum_j \partial^4_{v_j} u` of :math:`\Delta^2 u` (:math:`E[\partial_v^4 u] = 3\Delta^2 u`
for :math:`v \sim N(0, I)`; its variance is stated there).

Directions come from :mod:`xderiv.backends.rng` on the input's device: the same seed
gives the same directions on every backend, for every chunking of the points.
The direction of point ``p`` (row-major in the batch), sample ``j`` and
coordinate ``i`` is element ``(p k + j) d + i`` of the stream (``j d + i``
when shared).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..backends.namespace import Array, Context, check_int
from ..backends.rng import Stream


@dataclass(frozen=True)
class Estimator:
    """One row of the estimator table.

    Attributes
    ----------
    name : str
    draw : str
        ``"rademacher"``, ``"normal"`` or ``"coordinates"``.
    per_point : bool
        Whether directions are drawn per point by default.
    """

    name: str
    draw: str
    per_point: bool


ESTIMATORS = {
    e.name: e
    for e in (
        Estimator("hutchinson", "rademacher", True),
        Estimator("gaussian", "normal", True),
        Estimator("sdgd", "coordinates", False),
        Estimator("stde", "coordinates", False),
    )
}
"""The Laplacian estimators by name."""


def check_samples(samples: Any, name: str = "samples") -> int:
    """``samples`` as a positive int, or a ``TypeError``/``ValueError`` naming what was given."""
    if samples is None:
        raise TypeError(f"a randomized estimator needs {name}=k, the number of random directions per estimate")
    return check_int(samples, name, 1)


def check_seed(seed: Any) -> None:
    """Refuse a missing seed with the reason it is required."""
    if seed is None:
        raise TypeError(
            "a randomized estimator needs seed= (an int, a 0-d integer array or a numpy.random.Generator): "
            "the same seed gives the same directions, e.g. for a loss and its gradient, and reproducible runs"
        )


def laplacian_estimator(estimator: Any) -> Estimator:
    """The table row of ``estimator``, or a ``ValueError`` listing the names."""
    row = ESTIMATORS.get(estimator) if isinstance(estimator, str) else None
    if row is None:
        raise ValueError(f"estimator must be None (exact) or one of {sorted(ESTIMATORS)}, got {estimator!r}")
    return row


def one_hot(indices: Array, d: int, ctx: Context) -> Array:
    """Rows :math:`e_i^\\top` of the identity for integer ``indices`` (any shape), shape ``indices.shape + (d,)``."""
    xp = ctx.xp
    cols = xp.arange(d, dtype=indices.dtype, device=ctx.device)
    return xp.astype(indices[..., None] == cols, ctx.dtype)  # by comparison: no scatter, no take


def draw_directions(
    estimator: Estimator,
    samples: int,
    seed: Any,
    per_point: bool | None,
    ctx: Context,
    batch: tuple[int, ...],
    d: int,
) -> tuple[Array, float]:
    r"""Directions :math:`S` and factor :math:`c`: :math:`E[c\,\mathrm{tr}(S^\top H S)] = \mathrm{tr}\,H` for all ``H``.

    Returns
    -------
    S : array ``batch + (d, k)`` (per point) or ``(d, k)`` (shared), in ``ctx``'s dtype and device
    c : float
    """
    k = samples
    if estimator.draw == "coordinates" and k > d:
        raise ValueError(
            f"estimator={estimator.name!r} samples k distinct coordinates out of d={d}, got samples={k}; "
            f"use samples <= {d} (samples={d} is the exact Laplacian)"
        )
    if per_point is None:
        per_point = estimator.per_point
    elif not isinstance(per_point, bool):
        raise TypeError(f"per_point must be True, False or None (the estimator's default), got {per_point!r}")
    xp = ctx.xp
    stream = Stream.of(seed, xp, ctx.device)
    rows = math.prod(batch) if per_point else 1
    if estimator.draw == "coordinates":
        s_t = one_hot(stream.choose(rows, d, k), d, ctx)  # (rows, k, d)
        factor = d / k
    elif estimator.draw == "rademacher":
        s_t = stream.rademacher((rows, k, d), ctx.dtype)
        factor = 1.0 / k
    else:
        s_t = stream.normal((rows, k, d), ctx.dtype)
        factor = 1.0 / k
    shape = (tuple(batch) if per_point else ()) + (k, d)
    return xp.matrix_transpose(xp.reshape(s_t, shape)), factor
