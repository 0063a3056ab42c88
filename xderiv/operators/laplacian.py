r"""Second-order operators PDE losses need: Laplacians, traces along directions, HVPs, diagonals, divergence.

All are exact and built from the same two recursions as the Hessian
(:func:`xderiv.engine.forward.jacobian_sweep` with an input seed, and the backward
adjoint sweeps); none forms a full Hessian unless asked to.

=========================================  ===============================  =================================
operator                                    result shape                     cost (forward passes)
=========================================  ===============================  =================================
``laplacian(net, x)``                       ``y.shape``                      ``d + 2`` (forward) or ``~w`` (backward)
``trace_hessian(net, x, S)``                ``y.shape``                      ``k + 2`` (forward) or ``~w`` (backward)
``laplacian(net, x, coords=c)``             ``y.shape``                      ``len(c) + 2``
``hessian_diagonal(net, x)``                ``y.shape + (d,)``               ``~2d``
``hvp(net, x, v)``                          ``y.shape + (d,)``               ``~4``
``directional(net, x, v)``                  ``(y.shape, y.shape)``           ``~3``
``divergence(net, x)``  (``m = d``)         ``x.shape[:-1]``                 as the Jacobian
=========================================  ===============================  =================================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from ..backends.namespace import Array, array_namespace_of, device_of, diagonal, materialize
from ..engine.backward import backward_second_order, hvp_sweep
from ..engine.call import Call, coordinate_rows, per_point, run, value_kernel
from ..engine.cost import DIAGONAL, DIRECTIONAL, HVP, JACOBIAN, LAPLACIAN
from ..engine.forward import Tape, forward_laplacian, tangent_sweep
from ..jets import call as graph
from ..jets import is_graph
from ..models.composition import Composite, Rule, fold
from ..models.networks import as_network
from .estimators import ESTIMATORS, check_samples, check_seed, draw_directions, laplacian_estimator
from .jacobian_hessian import derivatives, full_jacobian, jacobian, jacobian_kernel, resolved, trace_kernel, value


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
    net : Sequential, Potential, layer or composite
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
    if coords is None:
        out = derivatives(net, x, jacobian=False, laplacian=True, mode=mode, chunk_size=chunk_size).laplacian
        assert out is not None
        return out
    return trace_hessian(net, x, coords=coords, mode=mode, chunk_size=chunk_size)


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
            r = derivatives(part, x, laplacian=True, mode=mode, chunk_size=chunk_size)
            return r.value, r.jacobian, r.laplacian
        y, jac, trace = _value_jacobian_trace(part, x, directions, mode, chunk_size)
        return y, jac, factor * trace

    def cross(a: Array, b: Array) -> Array:  # 2 grad f . grad g, exact
        return 2.0 * ctx.xp.sum(a * b, axis=-1)

    jet = fold(network, x, Rule(leaf, first_rank=1, second_rank=0, cross=cross))
    assert jet.second is not None
    return jet.second


def _value_jacobian_trace(network: Any, x: Array, directions: Array, mode: str, chunk_size: int | None) -> list:
    r"""Value, full Jacobian and :math:`\mathrm{tr}(S^\top \nabla^2 y\, S)` of a network from one value sweep.

    The trace runs in ``mode`` (forward: ``k`` rows; backward: the second-order adjoint, which
    yields the Jacobian too); with a forward trace the Jacobian takes the cheaper sweep for
    it (the adjoint sweep for few outputs), so that no ``d`` rows are carried for it.
    """
    jac_mode = network.plan.costs.mode(JACOBIAN, "auto")

    def kernel(call: Call, tape: Tape, seed: Array) -> tuple:
        (y,) = value_kernel(call, tape)
        jac, trace = trace_kernel(call, tape, seed)
        if call.mode == "forward":  # the forward trace's rows are S^T J, not J
            jac = jacobian_kernel(replace(call, mode=jac_mode), tape)
        return y, call.terms.add_jacobian(full_jacobian(call, jac), call.x), trace

    return run(
        network,
        x,
        LAPLACIAN,
        kernel,
        mode=mode,
        trailing=[(), (network.in_features,), ()],
        extras=lambda call: _directions_seed(call, directions, None),
        rows=lambda seed: seed.shape[-2],
        chunk_size=chunk_size,
    )


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
    net : Sequential, Potential or layer
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
        return graph.trace_hessian(net, x, directions, coords=coords, mode=mode, chunk_size=chunk_size)

    network = as_network(net)
    if isinstance(network, Composite):
        if coords is not None and directions is None:
            return derivatives(
                network, x, jacobian=False, laplacian=True, coords=coords, mode=mode, chunk_size=chunk_size
            ).laplacian
        return _composite(
            network,
            x,
            lambda leaf: trace_hessian(leaf, x, directions, coords=coords, mode=mode, chunk_size=chunk_size),
            0,
            lambda a, b: _trace_cross(a, b, directions),
            mode,
            chunk_size,
        )

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


def hessian_diagonal(net: Any, x: Array, mode: str = "auto", *, chunk_size: int | None = None) -> Array:
    r"""Diagonal :math:`\partial^2 y_k / \partial x_i^2` of the Hessian, shape ``y.shape + (d,)``.

    ``"forward"`` keeps one second derivative per coordinate in the forward
    Laplacian recursion (``n d sum w_{l-1} w_l``, twice the Jacobian);
    ``"backward"`` closes the second-order adjoint row by row (``d w^2`` at the
    first layer instead of the Hessian's ``d^2 w``).
    """
    if is_graph(net):
        return graph.hessian_diagonal(net, x, mode, chunk_size)

    def kernel(call: Call, tape: Tape) -> tuple:
        if call.mode == "forward":
            diag = call.ctx.xp.matrix_transpose(forward_laplacian(tape, per_row=True)[1])  # (n, m, d)
        else:
            diag = backward_second_order(tape)[1].diagonal(call.n, call.m, call.d)
        return (call.terms.add_diagonal(diag),)

    network = as_network(net)
    if isinstance(network, Composite):
        return _composite(
            network,
            x,
            lambda leaf: hessian_diagonal(leaf, x, mode, chunk_size=chunk_size),
            1,
            lambda a, b: 2.0 * a * b,
            mode,
            chunk_size,
        )
    return run(network, x, DIAGONAL, kernel, mode=mode, trailing=[(network.in_features,)], chunk_size=chunk_size)[0]


def _direction(call: Call, v: Any, name: str) -> tuple[tuple[Array, bool]]:
    a, pp = per_point(call, v, name, (call.d,))
    return ((a[..., None, :], pp),)  # seed rows: (1, d) or (n, 1, d)


def hvp(net: Any, x: Array, v: Array, *, chunk_size: int | None = None) -> Array:
    r"""Hessian-vector product :math:`\nabla^2 y_k\, v`, shape ``y.shape + (d,)``.

    Forward-over-reverse: a tangent sweep along ``v``, then the adjoint sweep
    and its derivative along ``v`` (:func:`xderiv.engine.backward.hvp_sweep`): about
    four forward passes, whatever ``d``.

    Parameters
    ----------
    v : array (d,) shared by the batch, or (..., d) one per point
    """
    if is_graph(net):
        return graph.hvp(net, x, v, chunk_size)

    def kernel(call: Call, tape: Tape, seed: Array) -> tuple:
        n, m, d = call.n, call.m, call.d
        _, dot = hvp_sweep(tape, tangent_sweep(tape, seed))
        if dot is None:
            out = call.ctx.xp.zeros((n, m, d), dtype=call.ctx.dtype, device=call.ctx.device)
        else:
            out = call.ctx.xp.reshape(materialize(dot, (n, m, 1, d), call.ctx.xp), (n, m, d))
        return (call.terms.add_hvp(out, seed),)

    network = as_network(net)
    if isinstance(network, Composite):
        return _composite(
            network,
            x,
            lambda leaf: hvp(leaf, x, v, chunk_size=chunk_size),
            1,
            lambda a, b: _hvp_cross(a, b, v),
            "auto",
            chunk_size,
        )
    return run(
        network,
        x,
        HVP,
        kernel,
        trailing=[(network.in_features,)],
        extras=lambda call: _direction(call, v, "v"),
        rows=lambda seed: 1,
        chunk_size=chunk_size,
    )[0]


def directional(net: Any, x: Array, v: Array, *, chunk_size: int | None = None) -> tuple[Array, Array]:
    r"""First and second directional derivatives :math:`(\partial_v y, \partial^2_{vv} y)`, each ``y.shape``.

    :math:`\partial_v y = \nabla y \cdot v` and :math:`\partial^2_{vv} y = v^\top \nabla^2 y\, v`,
    from one forward sweep carrying a single Jacobian row (about three forward passes).

    Parameters
    ----------
    v : array (d,) shared by the batch, or (..., d) one per point
    """
    if is_graph(net):
        return graph.directional(net, x, v, chunk_size)

    def kernel(call: Call, tape: Tape, seed: Array) -> tuple:
        jac, second = forward_laplacian(tape, seed=seed)
        first = call.ctx.xp.reshape(materialize(jac, (call.n, 1, call.m), call.ctx.xp), (call.n, call.m))
        return call.terms.add_directional(first, call.x, seed), call.terms.add_trace(second, seed)

    network = as_network(net)
    if isinstance(network, Composite):

        def leaf(part: Any, x: Any) -> tuple:
            return (value(part, x, chunk_size=chunk_size), *directional(part, x, v, chunk_size=chunk_size))

        jet = fold(network, x, Rule(leaf, first_rank=0, second_rank=0, cross=lambda a, b: 2.0 * a * b))
        assert jet.first is not None and jet.second is not None
        return jet.first, jet.second
    dv, dvv = run(
        network,
        x,
        DIRECTIONAL,
        kernel,
        trailing=[(), ()],
        extras=lambda call: _direction(call, v, "v"),
        rows=lambda seed: 1,
        chunk_size=chunk_size,
    )
    assert dv is not None and dvv is not None
    return dv, dvv


def divergence(net: Any, x: Array, mode: str = "auto", *, chunk_size: int | None = None) -> Array:
    r"""Divergence :math:`\sum_i \partial y_i / \partial x_i` of a vector field (``m = d``), shape ``x.shape[:-1]``."""
    if is_graph(net):
        return graph.divergence(net, x, mode, chunk_size)
    network = as_network(net)
    if network.out_features != network.in_features or network.scalar:
        raise ValueError(
            f"divergence needs as many outputs as inputs (m = d); this network maps "
            f"d={network.in_features} to m={1 if network.scalar else network.out_features}"
        )
    jac = jacobian(network, x, mode, chunk_size=chunk_size)
    return network.xp.sum(diagonal(jac, network.xp, network.device), axis=-1)


# --------------------------------------------------------------------------- composites


def _composite(
    network: Composite,
    x: Any,
    operator: Any,
    rank: int,
    cross: Any,
    mode: str,
    chunk_size: int | None,
) -> Array:
    """``operator`` of a composite by the product rule; each leaf gives its value and Jacobian, then the operator.

    ``rank`` is the number of trailing axes of the operator's result after the
    output axis; ``cross(grad_f, grad_g)`` its product cross term.
    """

    def leaf(part: Any, x: Any) -> tuple:
        r = derivatives(part, x, mode=mode, chunk_size=chunk_size)
        return r.value, r.jacobian, operator(part)

    jet = fold(network, x, Rule(leaf, first_rank=1, second_rank=rank, cross=cross))
    assert jet.second is not None
    return jet.second


def _like(a: Array, b: Any) -> Array:
    """``b`` as an array of ``a``'s namespace, dtype and device (already validated by the leaf calls)."""
    xp = array_namespace_of(a)
    b = xp.asarray(b, device=device_of(a))
    return b if b.dtype == a.dtype else xp.astype(b, a.dtype)


def _trace_cross(a: Array, b: Array, directions: Any) -> Array:
    r""":math:`2 \sum_j (S^\top a)_j (S^\top b)_j` for gradients (..., m, d) and :math:`S` (d, k) or (..., d, k)."""
    xp = array_namespace_of(a)
    s = _like(a, directions)
    return 2.0 * xp.sum((a @ s) * (b @ s), axis=-1)


def _hvp_cross(a: Array, b: Array, v: Any) -> Array:
    r""":math:`a\,(b \cdot v) + b\,(a \cdot v)` for gradients (..., m, d) and ``v`` (d,) or (..., d)."""
    xp = array_namespace_of(a)
    v = _like(a, v)
    v = xp.reshape(v, tuple(v.shape[:-1]) + (1, v.shape[-1]))
    return a * xp.sum(b * v, axis=-1)[..., None] + b * xp.sum(a * v, axis=-1)[..., None]
