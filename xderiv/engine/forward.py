r"""Forward sweeps: the value sweep (the :class:`Tape`), then Jacobians carried from input to output.

Notation per layer (batch dims leading, ``n`` samples, ``d`` inputs)::

    z = u W + b,   a = sigma(z),   u' = skip * u + h * a

``J_u`` has shape ``(n, d, w)`` (row ``i`` is :math:`\partial u/\partial x_i`)
and obeys

.. math::  J_z = J_u W, \qquad J_a = \sigma'(z) \odot J_z, \qquad J_{u'} = \mathrm{skip}\, J_u + h J_a .

At the first layer :math:`J_u = I`, so :math:`J_z = W` (shape ``(d, w)``,
shared by the batch): no identity is formed or multiplied.

:func:`jacobian_sweep` is the single forward recursion; the forward
Laplacian, the Hessian diagonal, directional derivatives, HVP tangents and the
sum-of-layers Hessian are visitors of it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..backends.namespace import Array, Context
from ..backends.primitives import scale
from ..models.layers import Dense


@dataclass
class Step:
    """One layer as every derivative recursion sees it after the value sweep (read-only).

    Attributes
    ----------
    index : int
        Position of the layer, 0 at the input.
    layer : Dense
        The layer itself (activation, ``skip``).
    w : array (w_in, w_out)
        The weight in the working dtype.
    h : float
        The step: 1 for :class:`~xderiv.Dense`, ``step`` for :class:`~xderiv.Residual`.
    d1 : array (n, w_out) or None
        :math:`\\sigma'(z)`; None for a linear activation (:math:`\\sigma' = 1`).
    d2 : array (n, w_out) or None
        :math:`\\sigma''(z)`; None for a linear activation or when not requested.
    xp : namespace
    derivs : tuple of arrays (n, w_out)
        :math:`(\\sigma', \\sigma'', \\dots, \\sigma^{(K)})` for a value sweep of order
        :math:`K` (Taylor mode); empty for a linear activation.
    """

    index: int
    layer: Dense
    w: Array
    h: float
    d1: Array | None
    d2: Array | None
    xp: Any

    @property
    def skip(self) -> bool:
        """True for a residual layer (``u' = u + h a``)."""
        return self.layer.skip

    _wt: Array | None = None
    derivs: tuple[Array, ...] = ()

    @property
    def wt(self) -> Array:
        """:math:`W^\\top` (w_out, w_in), formed once, when a backward sweep first asks.

        ``W.T``, the standard's attribute of a 2-D array: a view, without the few microseconds
        of ``matrix_transpose``'s wrappers, which a tiny batch pays per layer.  (A plain
        attribute, not ``functools.cached_property``, whose lock torch.compile cannot trace
        on Python 3.11.)
        """
        if self._wt is None:
            self._wt = self.w.T
        return self._wt


@dataclass(frozen=True)
class Tape:
    """The value sweep's record: the output and one :class:`Step` per layer.

    Attributes
    ----------
    y : array (n, m)
        Output of the layers (without a Potential's quadratic/linear terms).
    steps : tuple of Step
        First layer first.
    ctx : Context
    n : int
        Number of points.
    """

    y: Array
    steps: tuple[Step, ...]
    ctx: Context
    n: int

    @property
    def d(self) -> int:
        """Input dimension."""
        return self.steps[0].layer.in_features

    @property
    def m(self) -> int:
        """Number of outputs."""
        return self.steps[-1].layer.out_features


def value_sweep(
    layers: Sequence[Dense], params: Sequence[tuple[Array, Array]], x: Array, ctx: Context, order: int
) -> Tape:
    """Evaluate the layers on ``x`` (shape ``(n, d)``), keeping :math:`\\sigma', \\sigma''` up to ``order``.

    Parameters
    ----------
    layers : sequence of Dense
    params : sequence of (W, b)
        The weights in the working dtype.
    x : array (n, d)
    ctx : Context
    order : int
        0 (value only), 1 (keep :math:`\\sigma'`), 2 (and :math:`\\sigma''`), or any
        :math:`K > 2` (keep :math:`\\sigma', \\dots, \\sigma^{(K)}` in ``Step.derivs``,
        from the activation's ``higher`` function; the orders up to 2 take the fused one).
    """
    xp, ops = ctx.xp, ctx.ops
    u = x
    steps: list[Step] = []
    for i, (layer, (w, b)) in enumerate(zip(layers, params)):
        z = ops.affine(u, w, b)
        d1 = d2 = None
        derivs: tuple[Array, ...] = ()
        if layer.activation.linear:
            a = z
        else:
            parts = ops.activation(layer.activation, z, xp, order)
            a, derivs = parts[0], tuple(parts[1:])
            d1 = parts[1] if order >= 1 else None
            d2 = parts[2] if order >= 2 else None
        u = ops.axpy(u, layer.step, a) if layer.skip else a
        steps.append(Step(i, layer, w, layer.step, d1, d2, xp, derivs=derivs))
    return Tape(u, tuple(steps), ctx, int(x.shape[0]))


Visitor = Callable[[Step, Array], None]


def jacobian_sweep(tape: Tape, visit: Visitor | None = None, seed: Array | None = None, keep: bool = False) -> Array:
    """Carry :math:`J_u` from input to output; call ``visit(step, J_z)`` at every layer.

    Parameters
    ----------
    tape : Tape
    visit : callable, optional
        Called with each layer's step and pre-activation Jacobian ``J_z``
        (``(n, k, w)``, or ``(k, w)`` while no layer depends on the sample).
    seed : array (k, d) or (n, k, d), optional
        :math:`S^\\top`, the directions to differentiate along (rows).  None
        stands for the identity (all ``d`` coordinates), which is never formed:
        the first layer's :math:`J_z` is then ``W`` itself.
    keep : bool
        True when ``visit`` keeps the ``J_z`` it is handed.  Otherwise each ``J_z``
        is the sweep's own temporary once visited, and becomes :math:`J_u` in
        place where the namespace allows (:attr:`~xderiv.backends.primitives.Primitives.in_place`).

    Returns
    -------
    J : array (n, k, m) (``k = d`` without a seed), or (k, m) when no layer
        depends on the sample (a purely linear network).
    """
    ctx, ops = tape.ctx, tape.ctx.ops
    ju: Array | None = seed  # None stands for the identity at the input
    for step in tape.steps:
        own = ju is not None and not keep  # J_z a fresh product, not W itself, and not kept by visit
        jz = step.w if ju is None else ops.matmul(ju, step.w, ctx.xp)
        if visit is not None:
            visit(step, jz)
        if step.skip and ju is None:
            ju = ctx.xp.eye(step.w.shape[0], dtype=ctx.dtype, device=ctx.device)
        if step.d1 is None:  # linear activation: J_a = J_z
            ju = ops.axpy(ju, step.h, jz) if step.skip else scale(jz, step.h)
        else:
            # h * sigma'(z) is (n, w): scaling it first saves a pass over the (n, k, w) rows.
            hd1 = scale(step.d1, step.h)[:, None, :]
            if own:
                ju = ops.fma(ju, hd1, jz) if step.skip else ops.times(jz, hd1)
            else:
                ju = ops.addcmul(ju, hd1, jz) if step.skip else hd1 * jz
    assert ju is not None
    return ju


def forward_laplacian(
    tape: Tape,
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
    row_weights : array (k,) or (n, k), optional
        :math:`\omega`, shared or per point, of any sign (e.g. 0/1 to leave the time coordinate
        out of the sum while keeping its first derivative, or the eigenvalues of an indefinite
        coefficient matrix).
    per_row : bool
        Keep one second derivative per row instead of summing: the Hessian
        diagonal (no seed) or :math:`s_i^\top \nabla^2 y\, s_i` per direction.

    Returns
    -------
    J : array (n, k, m) (or (k, m) for a linear network)
    second : array (n, m), or (n, k, m) with ``per_row``
    """
    xp, ctx, ops = tape.ctx.xp, tape.ctx, tape.ctx.ops
    lap: list[Array | None] = [None]  # Delta u; None = 0 (at the input)

    def visit(step: Step, jz: Array) -> None:
        lap_u = lap[0]
        lap_a = None if lap_u is None else ops.matmul(lap_u, step.w, xp)  # Delta z
        if step.d1 is not None and step.d2 is not None:  # linear layers: Delta a = Delta z
            if per_row:
                sq = jz * jz if row_weights is None else row_weights[..., None] * (jz * jz)
                curv, d1 = step.d2[:, None, :] * sq, step.d1[:, None, :]
            else:
                if row_weights is None:
                    colsq = ops.sum_squares(jz, -2, xp)
                else:
                    colsq = xp.sum(row_weights[..., None] * (jz * jz), axis=-2)
                curv, d1 = step.d2 * colsq, step.d1
            lap_a = curv if lap_a is None else ops.addcmul(curv, d1, lap_a)
        if step.skip and lap_u is not None:
            lap_a = lap_u if lap_a is None else ops.axpy(lap_u, step.h, lap_a)
        elif lap_a is not None:
            lap_a = scale(lap_a, step.h)
        lap[0] = lap_a

    jac = jacobian_sweep(tape, visit, seed)
    out = lap[0]
    if out is None:
        k = tape.d if seed is None else seed.shape[-2]
        shape = (tape.n, k, tape.m) if per_row else (tape.n, tape.m)
        out = xp.zeros(shape, dtype=ctx.dtype, device=ctx.device)
    return jac, out


def tangent_sweep(tape: Tape, seed: Array | None) -> list[Array]:
    """Pre-activation tangents :math:`t_z = J_z v` of every layer for directions ``seed`` (k, d) or (n, k, d).

    None stands for the ``d`` coordinate directions (the first layer's tangents are ``W`` itself).
    """
    tangents: list[Array] = []
    jacobian_sweep(tape, lambda step, jz: tangents.append(jz), seed, keep=True)
    return tangents


def forward_hessian(tape: Tape, lambdas: Sequence[Array | None]) -> Array:
    r"""Hessian as a sum over layers from a forward Jacobian sweep.

    .. math:: \nabla^2 y_k = \sum_\text{layers} J_z^\top \operatorname{diag}(\sigma''(z) \odot \lambda_k) J_z,

    exact because the only nonlinearities are elementwise; :math:`\lambda =
    \partial y/\partial a` comes from :func:`xderiv.engine.backward.adjoint_sweep`.
    Cost ``n [d sum_l w_{l-1} w_l + m d^2 sum_l w_l]``; nothing of size
    ``n d^2 w`` beyond one layer's product is formed.

    Returns
    -------
    H : array (n, m, d, d)
    """
    xp, ctx, ops = tape.ctx.xp, tape.ctx, tape.ctx.ops
    acc: list[Array | None] = [None]

    def visit(step: Step, jz: Array) -> None:
        lam = lambdas[step.index]
        if step.d2 is None or lam is None:
            return
        c = step.d2[:, None, :] * lam  # (n, m, w)
        if jz.ndim == 2:  # first layer: J_z = W, shared by the batch
            term = ops.matmul(jz * c[:, :, None, :], xp.matrix_transpose(jz), xp)  # (n, m, d, d)
        else:
            jze = jz[:, None, :, :]  # (n, 1, d, w)
            term = (jze * c[:, :, None, :]) @ xp.matrix_transpose(jze)
        acc[0] = term if acc[0] is None else ops.plus(acc[0], term)

    jacobian_sweep(tape, visit)
    if acc[0] is None:
        return xp.zeros((tape.n, tape.m, tape.d, tape.d), dtype=ctx.dtype, device=ctx.device)
    return acc[0]
