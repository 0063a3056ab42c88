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
two ``w^3`` products per layer and sample, independent of ``d``.  At a Dense
first layer the Hessian is :math:`W_0 K W_0^\top` with
:math:`K = h^2 S\Theta S + \operatorname{diag}(c)` (``w x w``); the operators
close it without forming it when they can (:class:`FirstLayer`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..backends.namespace import Array, Context, diagonal, trace
from ..backends.primitives import scale
from .forward import Step, Tape, tangent_sweep


def _per_sample(s1: Array, ndim: int, xp: Any) -> Array:
    """View ``s1`` (n, w) so it broadcasts against an adjoint of ``ndim`` dims (n, ..., w)."""
    if ndim == 3:
        return s1[:, None, :]
    return xp.reshape(s1, (s1.shape[0],) + (1,) * (ndim - 2) + (s1.shape[1],))


def adjoint_step(
    step: Step, delta: Array | None, lam: Array | None, ctx: Context, inject: Array | None = None
) -> Array:
    r"""One adjoint step :math:`\delta_u = \mathrm{skip}\,\delta + (\lambda \odot \sigma' + \mathrm{inject}) W^\top`.

    ``delta``/``lam`` None stand for zero adjoints (only ``inject`` enters).  The
    namespace's fused primitives take the multiply-add and, at a residual layer,
    the product with its accumulation.
    """
    xp, ops = ctx.xp, ctx.ops
    dz = None
    if lam is not None:
        if step.d1 is None:
            dz = lam if inject is None else lam + inject
        elif inject is None:
            dz = lam * _per_sample(step.d1, lam.ndim, xp)
        else:
            dz = ops.addcmul(inject, lam, _per_sample(step.d1, lam.ndim, xp))
    else:
        dz = inject
    if step.skip and delta is not None:
        return ops.matmul_add(delta, dz, step.wt, xp)
    return ops.matmul(dz, step.wt, xp)


class Adjoints:
    r"""The first-order adjoint recursion, walked from the outputs to the input.

    Iterating yields ``(step, lam)`` for every layer, last first, with
    :math:`\lambda = h\,\delta = \partial y/\partial a` (``(n, m, w')``, or
    ``(1, m, m)`` broadcast over the batch at the output).  After the loop, :attr:`jacobian` holds
    :math:`\partial y/\partial x`, shape ``(n, m, d)`` (``(1, m, d)`` for a
    purely linear network).  Every backward sweep is one loop over this walk.
    """

    def __init__(self, tape: Tape):
        self.tape = tape
        self.jacobian: Array | None = None

    def __iter__(self) -> Iterator[tuple[Step, Array]]:
        ctx = self.tape.ctx
        delta = ctx.xp.eye(self.tape.m, dtype=ctx.dtype, device=ctx.device)[None, ...]  # dy/dy = I_m
        for step in reversed(self.tape.steps):
            lam = scale(delta, step.h)
            yield step, lam
            delta = adjoint_step(step, delta, lam, ctx)
        self.jacobian = delta


def adjoint_sweep(tape: Tape) -> tuple[Array, list[Array | None]]:
    """Carry the first-order adjoint from the outputs to the input.

    Returns
    -------
    J : array (n, m, d), or (1, m, d) for a purely linear network
        The Jacobian :math:`\\partial y/\\partial x`.
    lambdas : list of arrays (n, m, w_l) (or broadcastable)
        :math:`\\lambda_l = \\partial y / \\partial a_l` per layer, as the
        sum-of-layers Hessian needs them.
    """
    walk = Adjoints(tape)
    lambdas: list[Array | None] = [None] * len(tape.steps)
    for step, lam in walk:
        lambdas[step.index] = lam
    assert walk.jacobian is not None
    return walk.jacobian, lambdas


@dataclass(frozen=True)
class FirstLayer:
    r"""The second-order adjoint at the input, in closed or factored form.

    Either ``theta`` is the full :math:`\nabla^2 y` (``(n, m, d, d)``, when the
    first layer is residual), or the Hessian is :math:`W K W^\top` with
    ``K`` of shape ``(n, m, w, w)`` and ``w`` the first weight ``(d, w)``.
    ``K`` is None when every second derivative vanishes (a linear network).
    """

    theta: Array | None
    k: Array | None
    w: Array | None
    ctx: Context

    def hessian(self, n: int, m: int, d: int) -> Array:
        """:math:`\\nabla^2 y`, shape ``(n, m, d, d)``."""
        xp = self.ctx.xp
        if self.theta is not None:
            return self.theta
        if self.k is None:
            return xp.zeros((n, m, d, d), dtype=self.ctx.dtype, device=self.ctx.device)
        wt = xp.matrix_transpose(self.w)
        kw = self.ctx.ops.matmul(self.k, wt, xp)  # K W^T: (n, m, w, d)
        return self.ctx.ops.matmul(xp.matrix_transpose(kw), wt, xp)  # (W K W^T)^T = W K W^T

    def trace(self, seed: Array | None, n: int, m: int, weights: Array | None = None) -> Array:
        r""":math:`\sum_j \omega_j\, s_j^\top \nabla^2 y\, s_j`, shape ``(n, m)``.

        ``seed`` is :math:`S^\top`, shape (k, d) or (n, k, d); all of ``d`` if None.  ``weights``
        :math:`\omega`, (k,) or (n, k), of any sign (ones when None).

        Dense first layer: :math:`\sum K \odot G` with the Gram matrix
        :math:`G = (S^\top W)^\top \operatorname{diag}(\omega) (S^\top W)` (``w x w``), so the cost
        does not grow with ``d``.
        """
        xp, ctx = self.ctx.xp, self.ctx
        if self.theta is not None:
            if seed is None:
                return trace(self.theta, xp, ctx)
            s = xp.matrix_transpose(seed)  # (d, k) or (n, d, k)
            sw = s if weights is None else s * weights[..., None, :]
            s, sw = (s, sw) if s.ndim == 2 and sw.ndim == 2 else (s[:, None, ...], sw[:, None, ...])
            return xp.sum(xp.sum((self.theta @ s) * sw, axis=-1), axis=-1)
        if self.k is None:
            return xp.zeros((n, m), dtype=ctx.dtype, device=ctx.device)
        w_eff = self.w if seed is None else seed @ self.w  # (k, w) or (n, k, w)
        g = xp.matrix_transpose(w_eff) @ (w_eff if weights is None else weights[..., None] * w_eff)
        g = g if g.ndim == 2 else g[:, None, ...]
        return xp.sum(xp.sum(self.k * g, axis=-1), axis=-1)

    def diagonal(self, n: int, m: int, d: int) -> Array:
        """:math:`\\partial^2 y / \\partial x_i^2`, shape ``(n, m, d)``: rows of ``W K`` against rows of ``W``."""
        xp, ctx = self.ctx.xp, self.ctx
        if self.theta is not None:
            return diagonal(self.theta, xp, ctx.device)
        if self.k is None:
            return xp.zeros((n, m, d), dtype=ctx.dtype, device=ctx.device)
        kw = self.ctx.ops.matmul(self.k, xp.matrix_transpose(self.w), xp)  # (n, m, w, d)
        return xp.sum(kw * xp.matrix_transpose(self.w), axis=-2)


def backward_second_order(tape: Tape) -> tuple[Array, FirstLayer]:
    r"""Carry :math:`(\delta, \Theta)` from the outputs to the input.

    Returns
    -------
    J : array (n, m, d) (or (1, m, d))
    first : FirstLayer
        The Hessian in factored form :math:`W_0 K W_0^\top` (Dense first
        layer) or in full (residual first layer).
    """
    xp, ctx = tape.ctx.xp, tape.ctx
    walk = Adjoints(tape)
    theta: Array | None = None
    first: FirstLayer | None = None
    for step, lam in walk:
        h, s1 = step.h, step.d1
        c = None if step.d2 is None else step.d2[:, None, :] * lam  # (n, m, w')
        if step.index == 0 and not step.skip:  # close at a Dense first layer: K = h^2 S Theta S + diag(c)
            k = None
            if theta is not None:
                k = theta if s1 is None else theta * (s1[:, None, :, None] * s1[:, None, None, :])
                k = scale(k, h * h)
            if c is not None:
                cdiag = c[..., None] * xp.eye(step.w.shape[1], dtype=ctx.dtype, device=ctx.device)
                k = cdiag if k is None else k + cdiag
            first = FirstLayer(None, k, step.w, ctx)
            continue
        b = None  # B = skip * Theta + h Theta S W^T
        if theta is not None:
            ts = theta if s1 is None else theta * s1[:, None, None, :]
            b = scale(ctx.ops.matmul(ts, step.wt, xp), h)
            if step.skip:
                b = theta + b
        r = None  # R = h S B + diag(c) W^T
        if b is not None:
            r = scale(b if s1 is None else s1[:, None, :, None] * b, h)
        if c is not None:
            cw = c[..., :, None] * step.wt
            r = cw if r is None else r + cw
        new_theta = None if r is None else step.w @ r
        if step.skip and b is not None:
            new_theta = b if new_theta is None else b + new_theta
        theta = new_theta
    assert walk.jacobian is not None
    if first is None:  # residual first layer: Theta at the input is the Hessian
        if theta is None:
            theta = xp.zeros((tape.n, tape.m, tape.d, tape.d), dtype=ctx.dtype, device=ctx.device)
        first = FirstLayer(theta, None, None, ctx)
    return walk.jacobian, first


def hvp_sweep(tape: Tape, tangents: Sequence[Array]) -> tuple[Array, Array | None]:
    r"""Forward-over-reverse: the adjoint and its derivative along the tangents.

    Differentiating :math:`\delta_u = \mathrm{skip}\,\delta + (\lambda \odot \sigma') W^\top`
    along the direction :math:`v` gives

    .. math:: \dot\delta_u = \mathrm{skip}\,\dot\delta + (h\dot\delta \odot \sigma' + c \odot t_z) W^\top,
              \qquad c = \sigma'' \odot \lambda,\ t_z = J_z v,

    so :math:`\dot\delta_x = \nabla^2 y\, v` costs one more backward sweep
    (``n m k sum w_{l-1} w_l``): no Hessian is formed.

    Parameters
    ----------
    tangents : list of arrays (n, k, w_l) (or (k, w_l) at the first layer)
        :math:`t_z` per layer from :func:`xderiv.engine.forward.tangent_sweep`.

    Returns
    -------
    J : array (n, m, d)
    Hv : array (n, m, k, d), or None for a linear network (zero)
    """
    walk = Adjoints(tape)
    dot: Array | None = None
    for step, lam in walk:
        inject = None
        if step.d2 is not None:
            c = step.d2[:, None, :] * lam  # (n, m, w)
            t = tangents[step.index]
            t = t[None, None, ...] if t.ndim == 2 else t[:, None, ...]
            inject = c[:, :, None, :] * t  # (n, m, k, w)
        if dot is not None or inject is not None:
            dlam = None if dot is None else scale(dot, step.h)
            dot = adjoint_step(step, dot, dlam, tape.ctx, inject)
    assert walk.jacobian is not None
    return walk.jacobian, dot


def hessian_over_reverse(tape: Tape) -> tuple[Array, Array]:
    r"""The Hessian as ``d`` Hessian-vector products, one per coordinate: forward-over-reverse.

    :func:`hvp_sweep` along the rows of the identity, whose tangents are the
    forward Jacobian rows :math:`J_z` (at the first layer ``W`` itself, never an
    identity times ``W``): row ``i`` of the result is :math:`\nabla^2 y\, e_i`.
    Cost ``n [d sum w_{l-1} w_l + m d sum w_{l-1} w_l]``, every product rows times a
    weight (``Primitives.matmul``: one 2-D GEMM, or on NumPy one per point where faster);
    against :func:`xderiv.engine.forward.forward_hessian`'s
    per-point ``d x w`` by ``w x d`` products it pays more multiply-adds when
    ``d < w`` and fewer when ``d > w`` (:meth:`xderiv.engine.cost.Costs.hessian_over_reverse`).

    Returns
    -------
    J : array (n, m, d)
    H : array (n, m, d, d)
    """
    ctx = tape.ctx
    jac, hess = hvp_sweep(tape, tangent_sweep(tape, None))
    if hess is None:  # a linear network
        hess = ctx.xp.zeros((tape.n, tape.m, tape.d, tape.d), dtype=ctx.dtype, device=ctx.device)
    return jac, hess
