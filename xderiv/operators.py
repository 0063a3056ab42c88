r"""Second-order operators PDE losses need: traces along directions, HVPs, diagonals, divergence.

All are exact and built from the same two recursions as the Hessian
(:func:`xderiv._forward.jacobian_sweep` with an input seed, and the backward
adjoint sweeps); none forms a full Hessian unless asked to.

=========================================  ===============================  =================================
operator                                    result shape                     cost (forward passes)
=========================================  ===============================  =================================
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
from typing import Any

from . import _cost
from ._backward import backward_second_order, hvp_sweep
from ._call import Call, as_network, check_mode, per_point, run
from ._forward import forward_laplacian, tangent_sweep, value_sweep
from ._namespace import Array, diagonal, materialize
from .derivatives import coordinate_rows, jacobian, potential_gradient, quadratic_second_order


def _directions_seed(call: Call, directions: Any, coords: Sequence[int] | None) -> tuple[tuple[Array, bool], ...]:
    """The seed :math:`S^\\top` (k, d) or per point (n, k, d), from ``directions`` (…, d, k) or ``coords``."""
    if (directions is None) == (coords is None):
        raise TypeError("trace_hessian takes exactly one of directions= or coords=")
    if coords is not None:
        return ((coordinate_rows(call, coords), False),)
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
    check_mode(mode)

    def kernel(call: Call, seed: Array) -> tuple:
        xp, layers, params, n = call.ctx.xp, call.layers, call.params, call.n
        _, caches = value_sweep(layers, params, call.x, xp, 2)
        if _cost.choose(layers, "laplacian", mode, k=seed.shape[-2]) == "forward":
            _, out = forward_laplacian(layers, params, caches, call.ctx, n, seed=seed)
        else:
            _, first = backward_second_order(layers, params, caches, call.ctx, n)
            out = first.trace(seed, n, call.m)
        extra = quadratic_second_order(call, seed)
        if extra is not None:
            out = out + (extra if extra.ndim == 0 else extra[:, None])
        return (out,)

    return run(
        net,
        x,
        kernel,
        trailing=[()],
        extras=lambda call: _directions_seed(call, directions, coords),
        bytes_per_point=lambda call: _cost.bytes_per_point(call, "laplacian", mode),
        chunk_size=chunk_size,
    )[0]


def hessian_diagonal(net: Any, x: Array, mode: str = "auto", *, chunk_size: int | None = None) -> Array:
    r"""Diagonal :math:`\partial^2 y_k / \partial x_i^2` of the Hessian, shape ``y.shape + (d,)``.

    ``"forward"`` keeps one second derivative per coordinate in the forward
    Laplacian recursion (``n d sum w_{l-1} w_l``, twice the Jacobian);
    ``"backward"`` closes the second-order adjoint row by row (``d w^2`` at the
    first layer instead of the Hessian's ``d^2 w``).
    """
    check_mode(mode)

    def kernel(call: Call) -> tuple:
        xp, layers, params, n = call.ctx.xp, call.layers, call.params, call.n
        _, caches = value_sweep(layers, params, call.x, xp, 2)
        if _cost.choose(layers, "diagonal", mode) == "forward":
            _, per_row = forward_laplacian(layers, params, caches, call.ctx, n, per_row=True)
            diag = xp.matrix_transpose(per_row)  # (n, m, d)
        else:
            _, first = backward_second_order(layers, params, caches, call.ctx, n)
            diag = first.diagonal(n, call.m, call.d)
        if call.plan.quadratic is not None:
            a = call.cast(call.plan.quadratic)
            diag = diag + diagonal(a, xp, call.ctx.device)
        return (diag,)

    d = as_network(net).in_features
    return run(
        net,
        x,
        kernel,
        trailing=[(d,)],
        bytes_per_point=lambda call: _cost.bytes_per_point(call, "diagonal", mode),
        chunk_size=chunk_size,
    )[0]


def _direction(call: Call, v: Any, name: str) -> tuple[tuple[Array, bool], ...]:
    a, pp = per_point(call, v, name, (call.d,))
    return ((a[..., None, :], pp),)  # seed rows: (1, d) or (n, 1, d)


def hvp(net: Any, x: Array, v: Array, *, chunk_size: int | None = None) -> Array:
    r"""Hessian-vector product :math:`\nabla^2 y_k\, v`, shape ``y.shape + (d,)``.

    Forward-over-reverse: a tangent sweep along ``v``, then the adjoint sweep
    and its derivative along ``v`` (:func:`xderiv._backward.hvp_sweep`): about
    four forward passes, whatever ``d``.

    Parameters
    ----------
    v : array (d,) shared by the batch, or (..., d) one per point
    """

    def kernel(call: Call, seed: Array) -> tuple:
        xp, layers, params, n = call.ctx.xp, call.layers, call.params, call.n
        _, caches = value_sweep(layers, params, call.x, xp, 2)
        tangents = tangent_sweep(layers, params, caches, call.ctx, seed)
        _, dot = hvp_sweep(layers, params, caches, call.ctx, tangents)
        if dot is None:
            out = xp.zeros((n, call.m, call.d), dtype=call.ctx.dtype, device=call.ctx.device)
        else:
            out = xp.reshape(materialize(dot, (n, call.m, 1, call.d), xp), (n, call.m, call.d))
        if call.plan.quadratic is not None:
            a = call.cast(call.plan.quadratic)
            sym = 0.5 * (a + xp.matrix_transpose(a))
            out = out + (seed @ sym)  # (1, d) or (n, 1, d) broadcast over m
        return (out,)

    d = as_network(net).in_features
    return run(
        net,
        x,
        kernel,
        trailing=[(d,)],
        extras=lambda call: _direction(call, v, "v"),
        bytes_per_point=lambda call: _cost.bytes_per_point(call, "hvp", "forward"),
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

    def kernel(call: Call, seed: Array) -> tuple:
        xp, layers, params, n = call.ctx.xp, call.layers, call.params, call.n
        _, caches = value_sweep(layers, params, call.x, xp, 2)
        jac, second = forward_laplacian(layers, params, caches, call.ctx, n, seed=seed)
        first = xp.reshape(materialize(jac, (n, 1, call.m), xp), (n, call.m))
        grad = potential_gradient(call)
        if grad is not None:
            first = first + xp.sum(grad * seed[..., 0, :], axis=-1)[:, None]
        extra = quadratic_second_order(call, seed)
        if extra is not None:
            second = second + (extra if extra.ndim == 0 else extra[:, None])
        return first, second

    dv, dvv = run(
        net,
        x,
        kernel,
        trailing=[(), ()],
        extras=lambda call: _direction(call, v, "v"),
        bytes_per_point=lambda call: _cost.bytes_per_point(call, "laplacian", "forward"),
        chunk_size=chunk_size,
    )
    return dv, dvv


def divergence(net: Any, x: Array, mode: str = "auto", *, chunk_size: int | None = None) -> Array:
    r"""Divergence :math:`\sum_i \partial y_i / \partial x_i` of a vector field (``m = d``), shape ``x.shape[:-1]``."""
    network = as_network(net)
    if network.out_features != network.in_features or network.plan.scalar:
        raise ValueError(
            f"divergence needs as many outputs as inputs (m = d); this network maps "
            f"d={network.in_features} to m={1 if network.plan.scalar else network.out_features}"
        )
    jac = jacobian(network, x, mode, chunk_size=chunk_size)
    return network.xp.sum(diagonal(jac, network.xp, network.device), axis=-1)
