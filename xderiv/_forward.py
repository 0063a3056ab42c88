r"""Forward sweeps: values, then Jacobians carried from input to output.

Notation per layer (batch dims leading, ``n`` samples, ``d`` inputs)::

    z = u W + b,   a = sigma(z),   u' = skip * u + h * a

``J_u`` has shape ``(n, d, w)`` (row ``i`` is :math:`\partial u/\partial x_i`)
and obeys

.. math::  J_z = J_u W, \qquad J_a = \sigma'(z) \odot J_z, \qquad J_{u'} = \mathrm{skip}\, J_u + h J_a .

At the first layer :math:`J_u = I`, so :math:`J_z = W` (shape ``(d, w)``,
shared by the batch): no identity is formed or multiplied.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ._namespace import Array, Context, matmul_last, sum_squares
from .layers import Dense


@dataclass(frozen=True)
class LayerCache:
    """What a derivative sweep needs of one layer after the value sweep.

    Attributes
    ----------
    d1 : array (n, w) or None
        :math:`\\sigma'(z)`; None for a linear activation (:math:`\\sigma' = 1`).
    d2 : array (n, w) or None
        :math:`\\sigma''(z)`; None for a linear activation or when not requested.
    """

    d1: Array | None
    d2: Array | None


_LINEAR = LayerCache(None, None)


def value_sweep(
    layers: Sequence[Dense], params: Sequence[tuple[Array, Array]], x: Array, xp: Any, order: int
) -> tuple[Array, list[LayerCache]]:
    """Evaluate the layers on ``x`` (shape ``(n, d)``), keeping :math:`\\sigma', \\sigma''` up to ``order``.

    Returns
    -------
    y : array (n, m)
    caches : list of LayerCache, one per layer (empty ``d1``/``d2`` when ``order`` is 0)
    """
    u = x
    caches: list[LayerCache] = []
    for layer, (w, b) in zip(layers, params):
        z = u @ w + b
        if layer.activation.linear:
            a = z
            caches.append(_LINEAR)
        else:
            parts = layer.activation.evaluate(z, xp, order)
            a = parts[0]
            caches.append(LayerCache(parts[1] if order >= 1 else None, parts[2] if order >= 2 else None))
        if layer.skip:
            u = u + layer.step * a
        else:
            u = a
    return u, caches


Visitor = Callable[[int, Array], None]


def jacobian_sweep(
    layers: Sequence[Dense],
    params: Sequence[tuple[Array, Array]],
    caches: Sequence[LayerCache],
    ctx: Context,
    visit: Visitor | None = None,
    seed: Array | None = None,
) -> Array:
    """Carry :math:`J_u` from input to output; call ``visit(i, J_z)`` at every layer.

    This is the single forward-Jacobian recursion of xderiv: the forward
    Jacobian, the forward Laplacian, directional derivatives, the Hessian
    diagonal, tangents for Hessian-vector products and the sum-of-layers
    Hessian are all visitors of it.

    Parameters
    ----------
    seed : array (k, d) or (n, k, d), optional
        :math:`S^\top`, the directions to differentiate along (rows).  None
        stands for the identity (all ``d`` coordinates), which is never formed:
        the first layer's :math:`J_z` is then ``W`` itself.

    Returns
    -------
    J : array (n, k, m) (``k = d`` without a seed), or (k, m) when no layer
        depends on the sample (a purely linear network).
    """
    xp = ctx.xp
    ju: Array | None = seed  # None stands for the identity at the input
    for i, (layer, (w, _), cache) in enumerate(zip(layers, params, caches)):
        jz = w if ju is None else matmul_last(ju, w, xp)
        if visit is not None:
            visit(i, jz)
        # h * sigma'(z) is (n, w): scaling it first saves a pass over the (n, k, w) rows.
        if cache.d1 is None:
            hja = jz if layer.step == 1.0 else layer.step * jz
        else:
            scale = cache.d1 if layer.step == 1.0 else layer.step * cache.d1
            hja = scale[:, None, :] * jz
        if layer.skip:
            if ju is None:
                ju = xp.eye(w.shape[0], dtype=ctx.dtype, device=ctx.device)
            ju = ju + hja
        else:
            ju = hja
    assert ju is not None
    return ju


def forward_laplacian(
    layers: Sequence[Dense],
    params: Sequence[tuple[Array, Array]],
    caches: Sequence[LayerCache],
    ctx: Context,
    n: int,
    seed: Array | None = None,
    row_weights: Array | None = None,
    per_row: bool = False,
) -> tuple[Array, Array]:
    r"""Forward Laplacian: carry :math:`\Delta u` beside :math:`J_u`, never forming a Hessian.

    .. math:: \Delta z = \Delta u\, W, \quad
              \Delta a = \sigma'(z) \odot \Delta z + \sigma''(z) \odot \textstyle\sum_i \omega_i J_z[i,:]^2,
              \quad \Delta u' = \mathrm{skip}\,\Delta u + h\,\Delta a .

    With a seed :math:`S^\top` (rows = directions :math:`s_i`) the rows of
    :math:`J` are directional derivatives and the result is
    :math:`\sum_i \omega_i\, s_i^\top \nabla^2 y\, s_i` (the trace of
    :math:`S^\top \nabla^2 y\, S` for unit weights).  Cost
    ``n k sum_l w_{l-1} w_l`` multiply-adds, as the forward Jacobian.

    Parameters
    ----------
    seed : array (k, d) or (n, k, d), optional
        Directions as rows; all coordinates when None.
    row_weights : array (k,), optional
        :math:`\omega` (e.g. 0/1 to leave the time coordinate out of the sum
        while keeping its first derivative).
    per_row : bool
        Keep one second derivative per row instead of summing: the Hessian
        diagonal (no seed) or :math:`s_i^\top \nabla^2 y\, s_i` per direction.

    Returns
    -------
    J : array (n, k, m) (or (k, m) for a linear network)
    second : array (n, m), or (n, k, m) with ``per_row``
    """
    xp = ctx.xp
    state: dict[str, Array | None] = {"lap": None}  # None: Delta u = 0 (at the input)

    def visit(i: int, jz: Array) -> None:
        layer, (w, _), cache = layers[i], params[i], caches[i]
        lap_u = state["lap"]
        lap_z = None if lap_u is None else matmul_last(lap_u, w, xp)
        if cache.d1 is None or cache.d2 is None:  # linear layer (d2 exists whenever d1 does here)
            lap_a = lap_z
        else:
            if per_row:
                sq = jz * jz if row_weights is None else row_weights[:, None] * (jz * jz)
                lap_a = cache.d2[:, None, :] * sq
                if lap_z is not None:
                    lap_a = lap_a + cache.d1[:, None, :] * lap_z
            else:
                if row_weights is None:
                    colsq = sum_squares(jz, -2, xp)
                else:
                    colsq = xp.sum(row_weights[:, None] * (jz * jz), axis=-2)
                lap_a = cache.d2 * colsq
                if lap_z is not None:
                    lap_a = lap_a + cache.d1 * lap_z
        if lap_a is not None and layer.step != 1.0:
            lap_a = layer.step * lap_a
        if layer.skip and lap_u is not None:
            lap_a = lap_u if lap_a is None else lap_u + lap_a
        state["lap"] = lap_a

    jac = jacobian_sweep(layers, params, caches, ctx, visit, seed)
    lap = state["lap"]
    m = layers[-1].out_features
    if lap is None:
        k = layers[0].in_features if seed is None else seed.shape[-2]
        shape = (n, k, m) if per_row else (n, m)
        lap = xp.zeros(shape, dtype=ctx.dtype, device=ctx.device)
    return jac, lap


def tangent_sweep(
    layers: Sequence[Dense],
    params: Sequence[tuple[Array, Array]],
    caches: Sequence[LayerCache],
    ctx: Context,
    seed: Array,
) -> list[Array]:
    """Pre-activation tangents :math:`t_z = J_z v` of every layer for directions ``seed`` (k, d) or (n, k, d)."""
    tangents: list[Array] = []
    jacobian_sweep(layers, params, caches, ctx, lambda i, jz: tangents.append(jz), seed)
    return tangents


def forward_hessian(
    layers: Sequence[Dense],
    params: Sequence[tuple[Array, Array]],
    caches: Sequence[LayerCache],
    lambdas: Sequence[Array | None],
    ctx: Context,
    n: int,
) -> Array:
    r"""Hessian as a sum over layers from a forward Jacobian sweep.

    .. math:: \nabla^2 y_k = \sum_\text{layers} J_z^\top \operatorname{diag}(\sigma''(z) \odot \lambda_k) J_z,

    exact because the only nonlinearities are elementwise; :math:`\lambda =
    \partial y/\partial a` comes from :func:`xderiv._backward.adjoint_sweep`.
    Cost ``n [d sum_l w_{l-1} w_l + m d^2 sum_l w_l]``; nothing of size
    ``n d^2 w`` beyond one layer's product is formed.

    Returns
    -------
    H : array (n, m, d, d)
    """
    xp = ctx.xp
    d, m = layers[0].in_features, layers[-1].out_features
    acc: dict[str, Array | None] = {"H": None}

    def visit(i: int, jz: Array) -> None:
        cache, lam = caches[i], lambdas[i]
        if cache.d2 is None or lam is None:
            return
        c = cache.d2[:, None, :] * lam  # (n, m, w)
        if jz.ndim == 2:  # first layer: J_z = W, shared by the batch
            t = jz * c[:, :, None, :]  # (n, m, d, w)
            term = matmul_last(t, xp.matrix_transpose(jz), xp)
        else:
            jze = jz[:, None, :, :]  # (n, 1, d, w)
            term = (jze * c[:, :, None, :]) @ xp.matrix_transpose(jze)
        acc["H"] = term if acc["H"] is None else acc["H"] + term

    jacobian_sweep(layers, params, caches, ctx, visit)
    h = acc["H"]
    if h is None:
        return xp.zeros((n, m, d, d), dtype=ctx.dtype, device=ctx.device)
    return h
