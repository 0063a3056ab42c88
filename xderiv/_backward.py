r"""Backward sweeps: adjoints carried from output to input.

With ``z = u W + b``, ``a = sigma(z)``, ``u' = skip * u + h * a`` and the
adjoint :math:`\delta = \partial y/\partial u'` of shape ``(n, m, w')`` (one
row per output):

.. math::
    \lambda = h\,\delta \;(= \partial y/\partial a), \qquad
    \delta_u = \mathrm{skip}\,\delta + (\lambda \odot \sigma') W^\top .

The second-order adjoint :math:`\Theta = \partial^2 y/\partial u'^2` (``(n, m, w', w')``,
symmetric) obeys, with :math:`S = \operatorname{diag}\sigma'` and
:math:`c = \sigma'' \odot \lambda`,

.. math::
    \Theta_u = P^\top \Theta P + W \operatorname{diag}(c) W^\top, \qquad
    P = \mathrm{skip}\, I + h S W^\top,

evaluated as :math:`B = \mathrm{skip}\,\Theta + h\,\Theta S W^\top`,
:math:`\Theta_u = \mathrm{skip}\, B + W (h S B + \operatorname{diag}(c) W^\top)`:
two ``w^3`` products per layer and sample, independent of ``d`` until the
first layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._forward import LayerCache
from ._namespace import Array, Context, matmul_last, trace
from .layers import Dense


def _output_seed(m: int, ctx: Context) -> Array:
    """:math:`\\partial y/\\partial y = I_m` as shape ``(1, m, m)`` (broadcast over the batch)."""
    return ctx.xp.eye(m, dtype=ctx.dtype, device=ctx.device)[None, ...]


def adjoint_sweep(
    layers: Sequence[Dense],
    params: Sequence[tuple[Array, Array]],
    caches: Sequence[LayerCache],
    ctx: Context,
) -> tuple[Array, list[Array | None]]:
    """Carry the first-order adjoint from the outputs to the input.

    Returns
    -------
    J : array (n, m, d), or (1, m, d) for a purely linear network
        The Jacobian :math:`\\partial y/\\partial x`.
    lambdas : list of arrays (n, m, w_l) (or broadcastable)
        :math:`\\lambda_l = \\partial y / \\partial a_l` per layer, as the
        sum-of-layers Hessian needs them.
    """
    xp = ctx.xp
    delta = _output_seed(layers[-1].out_features, ctx)
    lambdas: list[Array | None] = [None] * len(layers)
    for i in range(len(layers) - 1, -1, -1):
        layer, (w, _), cache = layers[i], params[i], caches[i]
        lam = delta if layer.step == 1.0 else layer.step * delta
        lambdas[i] = lam
        delta = _adjoint_step(delta, lam, cache.d1, xp.matrix_transpose(w), layer, xp)
    return delta, lambdas


def backward_second_order(
    layers: Sequence[Dense],
    params: Sequence[tuple[Array, Array]],
    caches: Sequence[LayerCache],
    ctx: Context,
    *,
    laplacian_only: bool = False,
) -> tuple[Array, Array | None]:
    r"""Carry :math:`(\delta, \Theta)` from the outputs to the input.

    Parameters
    ----------
    laplacian_only : bool
        Return :math:`\mathrm{tr}\,\Theta_x` instead of :math:`\Theta_x`.  When
        the first layer is Dense this uses the Gram matrix
        :math:`G = W_0^\top W_0` (``w x w``, shared by the batch):
        :math:`\mathrm{tr}(W_0 K W_0^\top) = \sum K \odot G`, so the cost does
        not grow with ``d``.

    Returns
    -------
    J : array (n, m, d) (or (1, m, d))
    second : array (n, m, d, d) Hessian, or (n, m) Laplacian, or None when the
        network is linear (all second derivatives vanish).
    """
    xp = ctx.xp
    delta = _output_seed(layers[-1].out_features, ctx)
    theta: Array | None = None
    for i in range(len(layers) - 1, -1, -1):
        layer, (w, _), cache = layers[i], params[i], caches[i]
        h, s1 = layer.step, cache.d1
        lam = delta if h == 1.0 else h * delta
        c = None if cache.d2 is None else cache.d2[:, None, :] * lam  # (n, m, w')
        wt = xp.matrix_transpose(w)

        if laplacian_only and i == 0 and not layer.skip:
            return _adjoint_step(delta, lam, s1, wt, layer, xp), _gram_trace(theta, c, s1, h, w, xp)

        b = None  # B = skip * Theta + h Theta S W^T
        if theta is not None:
            ts = theta if s1 is None else theta * s1[:, None, None, :]
            v = matmul_last(ts, wt, xp)
            b = v if h == 1.0 else h * v
            if layer.skip:
                b = theta + b
        r = None  # R = h S B + diag(c) W^T
        if b is not None:
            r = b if s1 is None else s1[:, None, :, None] * b
            if h != 1.0:
                r = h * r
        if c is not None:
            cw = c[..., :, None] * wt
            r = cw if r is None else r + cw
        new_theta = None if r is None else w @ r
        if layer.skip and b is not None:
            new_theta = b if new_theta is None else b + new_theta
        theta = new_theta
        delta = _adjoint_step(delta, lam, s1, wt, layer, xp)

    if laplacian_only and theta is not None:
        return delta, trace(theta, xp, ctx)
    return delta, theta


def _adjoint_step(delta: Array, lam: Array, s1: Array | None, wt: Array, layer: Dense, xp: Any) -> Array:
    r"""One first-order adjoint step.

    :math:`\delta_u = \mathrm{skip}\,\delta + (\lambda \odot \sigma') W^\top`.
    """
    dz = lam if s1 is None else lam * s1[:, None, :]
    du = matmul_last(dz, wt, xp)
    return delta + du if layer.skip else du


def _gram_trace(theta: Array | None, c: Array | None, s1: Array | None, h: float, w: Array, xp: Any) -> Array | None:
    r"""Trace of the first layer's term through the Gram matrix.

    :math:`\mathrm{tr}(W K W^\top) = \sum_{jk} K_{jk} G_{jk}` with
    :math:`K = h^2 S\Theta S + \operatorname{diag}(c)` and :math:`G = W^\top W`.
    """
    out = None
    if c is not None:
        out = matmul_last(c, xp.sum(w * w, axis=0)[:, None], xp)[..., 0]
    if theta is not None:
        g = xp.matrix_transpose(w) @ w
        k = theta if s1 is None else theta * (s1[:, None, :, None] * s1[:, None, None, :])
        if h != 1.0:
            k = (h * h) * k
        t = xp.sum(xp.sum(k * g, axis=-1), axis=-1)
        out = t if out is None else out + t
    return out
