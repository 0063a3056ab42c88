r"""The Laplacian and the trace of the Hessian along directions: ``laplacian``, ``trace_hessian``.

=========================================  ===============  =========================================
operator                                   result shape     cost (forward passes)
=========================================  ===============  =========================================
``laplacian(net, x)``                      ``y.shape``      ``d + 2`` (forward) or ``~w`` (backward)
``trace_hessian(net, x, S)``               ``y.shape``      ``k + 2`` (forward) or ``~w`` (backward)
``laplacian(net, x, coords=c)``            ``y.shape``      ``len(c) + 2``
``laplacian(net, x, estimator=..., ...)``  ``y.shape``      ``samples + 2``
=========================================  ===============  =========================================

No Hessian is formed.  Cost row (:data:`LAPLACIAN`), multiply-adds per point with ``k`` rows
(``d``, the directions or the coordinates): forward as the Jacobian plus
:math:`3 k \sum_l w_l`; backward :math:`m \sum_l w_l w_{l-1} (w_l + w_{l-1})` after the first
layer, whose Gram trace costs :math:`m w_1^2`.  A Potential adds :math:`\mathrm{tr}(S^\top A_s S)`
(:func:`potential_trace`); a product of networks the cross term
:math:`2 \sum_j (s_j \cdot \nabla f)(s_j \cdot \nabla g)` (:func:`trace_cross`).  On a graph the
trace is a Taylor jet of order 2 along the ``k`` directions with its top term collapsed (the
forward Laplacian, ``k + 1`` terms).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from ..backends.namespace import Array, array_namespace_of, device_of, trace
from ..engine.backward import backward_second_order
from ..engine.call import Call, coordinate_rows, per_point, run, value_kernel
from ..engine.cost import ELEMENTWISE, Dims, Quantity, register
from ..engine.explain import Need, register_plan
from ..engine.forward import Tape, forward_laplacian
from ..engine.potential import PotentialTerms
from ..jets import is_graph
from ..jets.call import Setup, direction_rows, lead_last
from ..jets.kinds import Taylor
from ..models.composition import Composite, Rule, fold
from ..models.networks import as_network
from .estimators import ESTIMATORS, check_samples, check_seed, draw_directions, laplacian_estimator
from .first_order import JACOBIAN, full_jacobian, jacobian_kernel, like, resolved


def _flops(s: Dims, k: int) -> tuple[float, float]:
    dims = s.widths
    # Delta u W at every layer but the first, where Delta u = 0 (counting it there would charge the
    # forward mode a d x w product per point it never forms, and pick backward for k << d)
    fwd = (
        s.forward_rows(k)
        + ELEMENTWISE * k * dims[1]
        + sum(ELEMENTWISE * k * b + a * b for a, b in zip(dims[1:-1], dims[2:]))
    )
    # The Gram matrix of S^T W_0 is shared by the batch: no per-point cost beyond K * G.
    return fwd, s.theta() + s.first_theta(ELEMENTWISE * s.w1 * s.w1)


def _memory(s: Dims, direction: str, k: int) -> float:
    """The trace's working floats: ``k`` rows forward; backward the second-order adjoint, closed by a Gram
    matrix at a Dense first layer (no ``d x w`` array per point; a residual first layer carries ``d x d``)."""
    w = s.widest
    if direction == "forward":
        return 4.0 * k * w
    return 4.0 * s.m * w * w + 2.0 * s.m * s.d * (s.w1 if s.shape[0][2] else 1.0)


LAPLACIAN = register(Quantity("laplacian", 2, _memory, _flops))


def potential_trace(terms: PotentialTerms, out: Array, seed: Array | None, weights: Array | None = None) -> Array:
    """``out`` (n, m) plus :math:`\\sum_j \\omega_j\\, s_j^\top A_s s_j` (:math:`\\mathrm{tr} A` when ``seed`` is None).

    ``seed`` is :math:`S^\top`, shape (k, d) shared or (n, k, d) per point; ``weights``
    :math:`\\omega`, (k,) or (n, k) (ones when None).
    """
    if terms.a is None:
        return out
    xp = terms.ctx.xp
    if seed is None:
        return out + (xp.sum(terms.a) if terms.diagonal_a else trace(terms.a, xp, terms.ctx))
    quad = xp.sum(terms.times_a(seed) * seed, axis=-1)  # (k,) or (n, k)
    extra = xp.sum(quad if weights is None else weights * quad, axis=-1)  # () or (n,)
    return out + (extra if extra.ndim == 0 else extra[:, None])


def trace_kernel(
    call: Call,
    tape: Tape,
    seed: Array | None = None,
    coord_rows: Array | None = None,
    weights: Array | None = None,
) -> tuple[Array, Array]:
    r"""Jacobian and :math:`\sum_j \omega_j\, s_j^\top \nabla^2 y\, s_j`, the Potential's terms included.

    ``seed`` is :math:`S^\top` ((k, d) or (n, k, d); all coordinates when
    None), ``weights`` :math:`\omega` ((k,) or (n, k), any sign; ones when None).
    ``coord_rows`` instead (rows of the identity, from
    :func:`~xderiv.engine.call.coordinate_rows`) sums over those coordinates while the
    forward mode still carries all ``d`` rows, so that the Jacobian is complete.

    Returns
    -------
    J : array (n, m, d) or broadcastable (layers only, no Potential terms); along the rows
        ``S^T`` instead, ``(n, m, k)``, in forward mode with a seed
    trace : array (n, m)
    """
    rows = seed if coord_rows is None else coord_rows
    if call.mode == "forward":
        if coord_rows is not None:
            weights = call.ctx.xp.sum(coord_rows, axis=0)
        jac_km, out = forward_laplacian(tape, seed=seed, row_weights=weights)
        jac = call.ctx.xp.matrix_transpose(jac_km)
        return jac, potential_trace(call.terms, out, rows, None if coord_rows is not None else weights)
    jac, first = backward_second_order(tape)
    out = first.trace(rows, call.n, call.m, None if coord_rows is not None else weights)
    return jac, potential_trace(call.terms, out, rows, None if coord_rows is not None else weights)


def coordinate_mask(a: Array, coords: Sequence[int] | None) -> Array | float:
    """1 on ``coords`` and 0 elsewhere along the last axis of ``a`` (1.0 for all coordinates)."""
    if coords is None:
        return 1.0
    xp, d = array_namespace_of(a), a.shape[-1]
    chosen = {int(i) % d for i in coords}
    return xp.asarray([1.0 if i in chosen else 0.0 for i in range(d)], dtype=a.dtype, device=device_of(a))


def trace_cross(directions: Any = None, coords: Sequence[int] | None = None) -> Callable[[Array, Array], Array]:
    r"""The product's cross term :math:`2 \sum_j (S^\top a)_j (S^\top b)_j` for gradients ``a``, ``b`` (..., m, d).

    :math:`S` is ``directions`` ((d, k) or (..., d, k)), the columns of the identity at ``coords``,
    or the identity (the Laplacian's :math:`2\, a \cdot b`).
    """

    def cross(a: Array, b: Array) -> Array:
        xp = array_namespace_of(a)
        if directions is not None:
            s = like(a, directions)
            return 2.0 * xp.sum((a @ s) * (b @ s), axis=-1)
        return 2.0 * xp.sum(a * b * coordinate_mask(a, coords), axis=-1)

    return cross


def _directions_seed(call: Call, directions: Any, coords: Sequence[int] | None) -> tuple[tuple[Array, bool]]:
    """The seed :math:`S^\\top` (k, d) or per point (n, k, d), from ``directions`` (…, d, k) or ``coords``."""
    if (directions is None) == (coords is None):
        raise TypeError("trace_hessian takes exactly one of directions= or coords=")
    rows = coordinate_rows(call, coords)
    if rows is not None:
        return ((rows, False),)
    shape = tuple(getattr(directions, "shape", ()))
    k = shape[-1] if len(shape) >= 2 else -1
    s, pp = per_point(call, directions, "directions", (call.d, k))
    return ((call.ctx.xp.matrix_transpose(s), pp),)


def value_jacobian_trace(
    network: Any,
    x: Array,
    directions: Any = None,
    coords: Sequence[int] | None = None,
    mode: str = "auto",
    chunk_size: int | None = None,
    weighted: tuple[Array, Array, bool] | None = None,
) -> list:
    r"""Value, full Jacobian and :math:`\sum_j \omega_j\, s_j^\top \nabla^2 y\, s_j` of a chain from one value sweep.

    :math:`S` is ``directions`` (unit weights), the coordinates ``coords``, ``weighted`` =
    ``(rows, weights, per_point)`` (:math:`S^\top` (k, d) or (n, k, d) and :math:`\omega` (k,) or
    (n, k), as :func:`trace_kernel` takes them), or (none of them) the identity: the Laplacian.
    The trace runs in ``mode`` (forward: ``k`` rows; backward: the second-order
    adjoint, which yields the Jacobian too).  Along ``directions`` a forward trace's rows are
    :math:`S^\top J`, so the Jacobian takes the cheaper sweep for it (the adjoint sweep for few
    outputs) instead of ``d`` more rows; with ``coords`` the forward mode carries all ``d`` rows.
    """
    jac_mode = network.plan.costs.mode(JACOBIAN, "auto")

    def kernel(call: Call, tape: Tape, *seed: Array) -> tuple:
        (y,) = value_kernel(call, tape)
        if not seed:
            jac, out = trace_kernel(call, tape, coord_rows=coordinate_rows(call, coords))
        else:
            jac, out = trace_kernel(call, tape, seed[0], weights=seed[1] if len(seed) > 1 else None)
            if call.mode == "forward":  # the forward trace's rows are S^T J, not J
                jac = jacobian_kernel(replace(call, mode=jac_mode), tape)
        return y, call.terms.add_jacobian(full_jacobian(call, jac), call.x), out

    extras: Any = None
    if weighted is not None:
        rows, weights, pp = weighted
        extras = lambda call: ((rows, pp), (weights, pp))  # noqa: E731
    elif directions is not None:
        extras = lambda call: _directions_seed(call, directions, None)  # noqa: E731
    return run(
        network,
        x,
        LAPLACIAN,
        kernel,
        mode=mode,
        trailing=[(), (network.in_features,), ()],
        extras=extras,
        rows=(lambda seed, *weights: seed.shape[-2]) if extras is not None else None,
        chunk_size=chunk_size,
    )


def graph_trace(s: Setup, rows: Array | None, weights: Array | None, chunk_size: int | None) -> list[Array]:
    r"""A graph's value, first terms and :math:`\sum_j w_j\, s_j^\top \nabla^2 y\, s_j` (``(n, m)``).

    One Taylor jet of order 2 along ``rows`` (:math:`S^\top`; the axes when None), its top term
    collapsed with ``weights`` (ones when None).  The first terms are ``(n, m, k)``: the Jacobian
    along the axes.
    """
    along = s.eye() if rows is None else rows
    k = int(along.shape[-2])
    unit = weights is None
    kind = Taylor(2, s.weights([1.0] * k) if unit else weights, unit=unit)
    y, first, top = s.run(kind, along, chunk_size, axes=rows is None)
    return [y[0, ...], lead_last(first, 1, s.xp), 2.0 * top[0, ...]]


def laplacian(
    net: Any,
    x: Array,
    mode: str = "auto",
    *,
    coords: Sequence[int] | None = None,
    chunk_size: int | None = None,
    estimator: str | None = None,
    samples: int | None = None,
    seed: Any = None,
    per_point: bool | None = None,
) -> Array:
    r"""Laplacian :math:`\sum_{i \in \text{coords}} \partial^2 y_k / \partial x_i^2`, exact or estimated, ``y.shape``.

    No Hessian is formed.  With ``coords`` (e.g. every coordinate but time)
    the forward mode carries only ``len(coords)`` Jacobian rows, so the cost
    scales with the subset, not with ``d``; the backward mode's cost does not
    depend on either.  ``laplacian(net, x, coords=c)`` is
    ``trace_hessian(net, x, coords=c)``.

    Parameters
    ----------
    net : Sequential, Potential, layer, composite or graph
    x : array (..., d)
    mode : {"auto", "forward", "backward"}
    coords : sequence of int, optional
        Sum over these coordinates only (exact Laplacian only).
    chunk_size : int, optional
    estimator : {None, "hutchinson", "gaussian", "sdgd", "stde"}
        None (default): the exact Laplacian.  Otherwise an unbiased estimate
        :math:`c \sum_{j=1}^k s_j^\top \nabla^2 y_k\, s_j` along ``samples``
        random directions, computed exactly by :func:`trace_hessian`:
        ``"hutchinson"`` (Rademacher :math:`s_j`, :math:`c = 1/k`, variance
        :math:`\frac2k \sum_{i \ne j} H_{ij}^2`), ``"gaussian"``
        (:math:`N(0, I)`, :math:`c = 1/k`, variance :math:`\frac2k \lVert H\rVert_F^2`),
        ``"sdgd"`` (``k`` distinct coordinates :math:`e_i`, :math:`c = d/k`,
        variance :math:`\frac{d^2}{k}\frac{d-k}{d-1}\sigma_H^2` with
        :math:`\sigma_H^2` the variance of the diagonal entries :math:`H_{ii}`), and
        ``"stde"`` (sparse random 2-jets: the same estimator and the same
        computation as ``"sdgd"``).  A composite (``phi * N``) randomizes
        only its networks' second derivatives: values, gradients, cross terms
        and quadratics' Laplacians enter exactly, so ``phi * N`` has variance
        :math:`\varphi^2 \mathrm{Var}(\widehat{\Delta N})`.  See :mod:`xderiv.operators.estimators`.
    samples : int
        ``k``, the number of directions per estimate (required with an estimator).
    seed : int, 0-d integer array, or numpy.random.Generator
        Required with an estimator.  The same seed gives the same directions
        (on every backend and device, drawn where ``x`` lives, without a host
        round trip): call once per training step with that step's seed, and
        the loss and its weight gradient see one set of directions.  An integer
        array (e.g. a step counter traced by ``jax.jit``) works like the int.
        A generator is drawn from, so each call gets new directions.
    per_point : bool, optional
        Directions drawn per point (independent estimates) or shared by the
        batch (cheaper: one first-layer product for all points).  Default:
        per point for ``"hutchinson"`` and ``"gaussian"``, shared for
        ``"sdgd"`` and ``"stde"``.

    Examples
    --------
    >>> import numpy as np, xderiv as xd
    >>> net = xd.mlp([100, 32, 1], seed=0)
    >>> x = np.random.default_rng(0).standard_normal((8, 100)) / 10
    >>> est = xd.laplacian(net, x, estimator="hutchinson", samples=16, seed=1)
    >>> est.shape
    (8, 1)
    """
    if estimator is not None:
        return _estimated_laplacian(net, x, mode, coords, chunk_size, estimator, samples, seed, per_point)
    if samples is not None or seed is not None or per_point is not None:
        raise TypeError(
            "samples=, seed= and per_point= belong to a randomized estimate: pass estimator= "
            f"(one of {sorted(ESTIMATORS)}), or leave them out for the exact Laplacian"
        )
    if coords is not None:
        return trace_hessian(net, x, coords=coords, mode=mode, chunk_size=chunk_size)
    if is_graph(net):
        s = Setup(net, x, mode)
        return s.shape(graph_trace(s, None, None, chunk_size)[2])
    network = as_network(net)
    if isinstance(network, Composite):
        return _composite_trace(network, x, None, None, mode, chunk_size)

    def kernel(call: Call, tape: Tape) -> tuple:
        return (trace_kernel(call, tape)[1],)

    return run(network, x, LAPLACIAN, kernel, mode=mode, trailing=[()], chunk_size=chunk_size)[0]


def _composite_trace(
    network: Composite, x: Any, directions: Any, coords: Sequence[int] | None, mode: str, chunk_size: int | None
) -> Array:
    """The trace of a composite by the product rule: one value sweep per leaf (value, Jacobian, trace)."""

    def leaf(part: Any, x: Any) -> tuple:
        return tuple(value_jacobian_trace(part, x, directions, coords, mode, chunk_size))

    out = fold(network, x, Rule(leaf, first_rank=1, second_rank=0, cross=trace_cross(directions, coords))).second
    assert out is not None
    return out


def _estimated_laplacian(
    net: Any,
    x: Array,
    mode: str,
    coords: Sequence[int] | None,
    chunk_size: int | None,
    estimator: Any,
    samples: Any,
    seed: Any,
    per_point: bool | None,
) -> Array:
    """``c * trace_hessian(net, x, S)`` along the estimator's random directions (:mod:`xderiv.operators.estimators`)."""
    row = laplacian_estimator(estimator)
    k = check_samples(samples)
    check_seed(seed)
    if coords is not None:
        raise ValueError(
            "coords= and estimator= do not combine: the estimators sample all d coordinates "
            "(for a partial Laplacian, pass your own directions to trace_hessian)"
        )
    network, ctx, x, d = resolved(net, x)
    directions, factor = draw_directions(row, k, seed, per_point, ctx, tuple(x.shape[:-1]), d)
    if is_graph(network) or not isinstance(network, Composite):  # a graph is estimated whole
        return factor * trace_hessian(network, x, directions, mode=mode, chunk_size=chunk_size)

    def leaf(part: Any, x: Any) -> tuple:
        # A leaf without a nonlinear layer (a quadratic) has an exact Laplacian as cheap as its gradient.
        if all(layer.activation.linear for layer in part.layers):
            return tuple(value_jacobian_trace(part, x, None, None, mode, chunk_size))
        y, jac, out = value_jacobian_trace(part, x, directions, None, mode, chunk_size)
        return y, jac, factor * out

    jet = fold(network, x, Rule(leaf, first_rank=1, second_rank=0, cross=trace_cross()))
    assert jet.second is not None
    return jet.second


def trace_hessian(
    net: Any,
    x: Array,
    directions: Array | None = None,
    *,
    coords: Sequence[int] | None = None,
    mode: str = "auto",
    chunk_size: int | None = None,
) -> Array:
    r""":math:`\mathrm{tr}(S^\top \nabla^2 y_k\, S) = \sum_j s_j^\top \nabla^2 y_k\, s_j`, shape ``y.shape``.

    Diffusion terms :math:`\tfrac12\mathrm{tr}(\sigma\sigma^\top \nabla^2 u)` (pass
    :math:`S = \sigma`), Hutchinson or random-projection estimates of the
    Laplacian (random ``S`` scaled so that :math:`E[SS^\top] = I`), and partial
    Laplacians (``coords``, S = the chosen columns of the identity).

    Parameters
    ----------
    net : Sequential, Potential, layer, composite or graph
    x : array (..., d)
    directions : array (d, k) shared by the batch, or (..., d, k) one per point
    coords : sequence of int
        Instead of ``directions``: the coordinates to sum second derivatives over.
    mode : {"auto", "forward", "backward"}
        ``"forward"`` carries ``k`` directional Jacobian rows (cost ``(k + 2)``
        forward passes); ``"backward"`` carries the ``w x w`` second-order adjoint
        and closes with the Gram matrix of :math:`S^\top W_0` (cost independent of
        ``k`` and ``d``).  No full Hessian is formed in either.
    chunk_size : int, optional
    """
    if is_graph(net):
        s = Setup(net, x, mode)
        rows = direction_rows(s, directions, coords, "trace_hessian")
        return s.shape(graph_trace(s, rows, None, chunk_size)[2])
    network = as_network(net)
    if isinstance(network, Composite):
        if (directions is None) == (coords is None):
            raise TypeError("trace_hessian takes exactly one of directions= or coords=")
        return _composite_trace(network, x, directions, coords, mode, chunk_size)

    def kernel(call: Call, tape: Tape, seed: Array) -> tuple:
        return (trace_kernel(call, tape, seed)[1],)

    return run(
        network,
        x,
        LAPLACIAN,
        kernel,
        mode=mode,
        trailing=[()],
        extras=lambda call: _directions_seed(call, directions, coords),
        rows=lambda seed: seed.shape[-2],
        chunk_size=chunk_size,
    )[0]


TRACE_RECURSIONS = {
    "forward": "the forward Laplacian: k Jacobian rows and their collapsed second-order term",
    "backward": "the second-order adjoint, closed by the Gram matrix of S^T W_0",
}


def trace_need(k: int | None) -> Need:
    """The plan of a trace along ``k`` rows (``d`` when None), for :func:`xderiv.explain`."""
    jet = f"a Taylor jet of order 2 along {'d' if k is None else k} directions, its top term collapsed"
    return Need(LAPLACIAN, k, TRACE_RECURSIONS, jet)


def _plan_laplacian(d: int, a: dict) -> Need:
    if a.get("estimator") is not None:
        return trace_need(check_samples(a.get("samples")))
    coords = a.get("coords")
    return trace_need(None if coords is None else len(list(coords)))


def _plan_trace(d: int, a: dict) -> Need:
    directions, coords = a.get("directions"), a.get("coords")
    if (directions is None) == (coords is None):
        raise TypeError("trace_hessian takes exactly one of directions= or coords=")
    if coords is not None:
        return trace_need(len(list(coords)))
    assert directions is not None
    return trace_need(int(directions.shape[-1]))


register_plan(laplacian, _plan_laplacian)
register_plan(trace_hessian, _plan_trace)
