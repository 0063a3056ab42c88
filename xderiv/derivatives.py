r"""Public derivative operators: value, Jacobian, gradient, Hessian, Laplacian.

Every function resolves the namespace, working dtype and device once
(:func:`xderiv._namespace.resolve_call`), flattens the batch dims of ``x``
(shape ``(..., d)``) to ``(n, d)``, runs the recursions of
:mod:`xderiv._forward` / :mod:`xderiv._backward`, and restores the batch
dims.  Shapes (``m`` outputs; a :class:`~xderiv.Potential` has no output axis):

==============  =======================
value           ``(..., m)``
jacobian        ``(..., m, d)``
hessian         ``(..., m, d, d)``
laplacian       ``(..., m)``
==============  =======================

``mode`` selects the sweep direction: ``"forward"`` carries Jacobians from
the input (cost grows with ``d``), ``"backward"`` carries adjoints from the
outputs (cost grows with ``m`` and, for second order, with the width cubed but
not with ``d``), ``"auto"`` takes the cheaper by :mod:`xderiv._cost`.  All
modes agree to round-off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._backward import adjoint_sweep, backward_second_order
from ._cost import choose_mode
from ._forward import forward_hessian, forward_laplacian, jacobian_sweep, value_sweep
from ._namespace import Array, Context, flatten_batch, materialize, resolve_call, trace
from .layers import Dense, layer_params
from .networks import Plan, Sequential, _Network

MODES = ("auto", "forward", "backward")


@dataclass(frozen=True)
class Derivatives:
    """Result of :func:`derivatives`; fields not requested are None.

    Attributes
    ----------
    value : array (..., m) or (...,) for a Potential
    jacobian : array (..., m, d) or (..., d)
    hessian : array (..., m, d, d) or (..., d, d)
    laplacian : array (..., m) or (...,)
    """

    value: Array
    jacobian: Array | None = None
    hessian: Array | None = None
    laplacian: Array | None = None


@dataclass(frozen=True)
class _Call:
    """Everything one public call resolved at entry."""

    plan: Plan
    ctx: Context
    x: Array  # (n, d), working dtype
    batch: tuple[int, ...]
    params: list[tuple[Array, Array]]

    @property
    def n(self) -> int:
        return int(self.x.shape[0])


def _as_network(net: Any) -> _Network:
    if isinstance(net, _Network):
        return net
    if isinstance(net, Dense):
        return Sequential(net)
    raise TypeError(f"net must be an xderiv Sequential, Potential or layer, got {type(net).__name__}")


def _prepare(net: Any, x: Any) -> _Call:
    network = _as_network(net)
    ctx, x = resolve_call(x, network.xp, network.device, network.dtype)
    x2, batch = flatten_batch(x, network.in_features, ctx.xp)
    params = [layer_params(layer, ctx.xp, ctx.dtype) for layer in network.plan.layers]
    return _Call(network.plan, ctx, x2, batch, params)


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def _cast(a: Array, ctx: Context) -> Array:
    return a if a.dtype == ctx.dtype else ctx.xp.astype(a, ctx.dtype)


def _shape(call: _Call, a: Array, trailing: tuple[int, ...]) -> Array:
    """Restore batch dims: ``(n, m, *trailing)`` to ``batch + (m,) + trailing`` (Potential: no ``m``)."""
    m = () if call.plan.scalar else (call.plan.layers[-1].out_features,)
    return call.ctx.xp.reshape(a, call.batch + m + trailing)


def _compute(call: _Call, jacobian: bool, hessian: bool, laplacian: bool, mode: str) -> Derivatives:
    _check_mode(mode)
    xp, ctx, plan, layers, n = call.ctx.xp, call.ctx, call.plan, call.plan.layers, call.n
    d, m = layers[0].in_features, layers[-1].out_features
    order = 2 if (hessian or laplacian) else (1 if jacobian else 0)
    y, caches = value_sweep(layers, call.params, call.x, xp, order)

    jac = hess = lap = None
    if hessian:
        mode = choose_mode(layers, "hessian") if mode == "auto" else mode
        if mode == "forward":
            jac, lambdas = adjoint_sweep(layers, call.params, caches, ctx)
            hess = forward_hessian(layers, call.params, caches, lambdas, ctx, n)
        else:
            jac, hess = backward_second_order(layers, call.params, caches, ctx)
        if hess is None:
            hess = xp.zeros((n, m, d, d), dtype=ctx.dtype, device=ctx.device)
    elif laplacian:
        mode = choose_mode(layers, "laplacian") if mode == "auto" else mode
        if mode == "forward":
            jac_dm, lap = forward_laplacian(layers, call.params, caches, ctx, n)
            jac = xp.matrix_transpose(jac_dm)
        else:
            jac, lap = backward_second_order(layers, call.params, caches, ctx, laplacian_only=True)
    elif jacobian:
        mode = choose_mode(layers, "jacobian") if mode == "auto" else mode
        if mode == "forward":
            jac = xp.matrix_transpose(jacobian_sweep(layers, call.params, caches, ctx))
        else:
            jac, _ = adjoint_sweep(layers, call.params, caches, ctx)
    if jac is not None:
        if jac.ndim == 2:
            jac = jac[None, ...]
        jac = materialize(jac, (n, m, d), xp)

    if plan.quadratic is not None or plan.linear is not None:
        y, jac, hess = _add_quadratic(call, y, jac, hess)
    if laplacian:
        if hessian:
            lap = trace(hess, xp, ctx)
        else:
            if lap is None:
                lap = xp.zeros((n, m), dtype=ctx.dtype, device=ctx.device)
            if plan.quadratic is not None:
                lap = lap + trace(_cast(plan.quadratic, ctx), xp, ctx)

    return Derivatives(
        value=_shape(call, y, ()),
        jacobian=_shape(call, jac, (d,)) if jacobian and jac is not None else None,
        hessian=_shape(call, hess, (d, d)) if hessian else None,
        laplacian=_shape(call, lap, ()) if laplacian else None,
    )


def _add_quadratic(
    call: _Call, y: Array, jac: Array | None, hess: Array | None
) -> tuple[Array, Array | None, Array | None]:
    r"""Add the Potential terms :math:`\tfrac12 x^\top A x + c^\top x`.

    Gradient :math:`x A_s + c`, Hessian :math:`A_s = \tfrac12(A + A^\top)`.
    """
    xp, ctx, x = call.ctx.xp, call.ctx, call.x
    grad = None
    if call.plan.quadratic is not None:
        a = _cast(call.plan.quadratic, ctx)
        sym = 0.5 * (a + xp.matrix_transpose(a))
        y = y + 0.5 * xp.sum(x * (x @ a), axis=-1)[:, None]
        grad = x @ sym
        if hess is not None:
            hess = hess + sym
    if call.plan.linear is not None:
        c = _cast(call.plan.linear, ctx)
        y = y + (x @ c)[:, None]
        grad = c if grad is None else grad + c
    if jac is not None and grad is not None:
        jac = jac + grad[..., None, :]
    return y, jac, hess


def value(net: Any, x: Array) -> Array:
    """Evaluate ``net`` at ``x``: shape ``(..., d)`` to ``(..., m)`` (Potential: ``(...,)``)."""
    return _compute(_prepare(net, x), False, False, False, "auto").value


def derivatives(
    net: Any,
    x: Array,
    *,
    jacobian: bool = True,
    hessian: bool = False,
    laplacian: bool = False,
    mode: str = "auto",
) -> Derivatives:
    """Value and requested derivatives of ``net`` at ``x`` in one pass.

    Parameters
    ----------
    net : Sequential, Potential or layer
    x : array, shape (..., d) or (d,)
        Points; any Array API namespace matching the network's weights.
        Integer input takes the weights' dtype; float dtypes promote by
        ``xp.result_type``.
    jacobian, hessian, laplacian : bool
        What to return besides the value.  With ``hessian=True`` the
        Laplacian is the Hessian's trace; with ``laplacian=True`` alone no
        Hessian is formed.
    mode : {"auto", "forward", "backward"}

    Returns
    -------
    Derivatives
        ``value``, ``jacobian``, ``hessian``, ``laplacian`` (None where not requested).
    """
    return _compute(_prepare(net, x), jacobian, hessian, laplacian, mode)


def jacobian(net: Any, x: Array, mode: str = "auto") -> Array:
    r"""Jacobian :math:`\partial y_k / \partial x_i`, shape ``y.shape + (d,)``."""
    return derivatives(net, x, mode=mode).jacobian


def gradient(net: Any, x: Array, mode: str = "auto") -> Array:
    r"""Gradient :math:`\nabla y` of a single-output network, shape ``x.shape``."""
    network = _as_network(net)
    if network.out_features != 1:
        raise ValueError(
            f"gradient needs a single-output network, this one has {network.out_features} outputs; use xderiv.jacobian"
        )
    call = _prepare(network, x)
    jac = _compute(call, True, False, False, mode).jacobian
    return call.ctx.xp.reshape(jac, call.batch + (network.in_features,))


def hessian(net: Any, x: Array, mode: str = "auto") -> Array:
    r"""Hessian :math:`\partial^2 y_k / \partial x_i \partial x_j`, shape ``y.shape + (d, d)``."""
    return derivatives(net, x, hessian=True, mode=mode).hessian


def laplacian(net: Any, x: Array, mode: str = "auto") -> Array:
    r"""Laplacian :math:`\sum_i \partial^2 y_k / \partial x_i^2`, shape ``y.shape``; no Hessian is formed."""
    return derivatives(net, x, laplacian=True, mode=mode).laplacian
