r"""Value, Jacobian, gradient, Hessian and Laplacian (the one-pass :func:`derivatives`).

Every function resolves the namespace, working dtype and device once, flattens
the batch dims of ``x`` (shape ``(..., d)``), runs the recursions of
:mod:`xderiv._forward` / :mod:`xderiv._backward` in chunks that fit the memory
budget (:func:`xderiv.set_memory_budget`), and restores the batch dims.
Shapes (``m`` outputs; a :class:`~xderiv.Potential` has no output axis):

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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import _cost
from ._backward import adjoint_sweep, backward_second_order
from ._call import Call, as_network, check_mode, run
from ._forward import forward_hessian, forward_laplacian, jacobian_sweep, value_sweep
from ._namespace import Array, diagonal, materialize, trace


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


def coordinate_rows(call: Call, coords: Sequence[int] | None) -> Array | None:
    """Rows of the identity for ``coords`` (shape (k, d)), or None for all coordinates."""
    if coords is None:
        return None
    d = call.d
    try:
        idx = [int(i) for i in coords]
    except TypeError:
        raise TypeError(f"coords must be a sequence of coordinate indices, got {coords!r}") from None
    if not idx or any(i < -d or i >= d for i in idx) or len({i % d for i in idx}) != len(idx):
        raise ValueError(
            f"coords must be distinct indices in [0, {d}) for inputs of dimension d={d}, got {list(coords)}"
        )
    xp, ctx = call.ctx.xp, call.ctx
    rows = xp.asarray([i % d for i in idx], device=ctx.device)
    cols = xp.arange(d, device=ctx.device)
    # rows[k] == cols[j] selects e_{rows[k]}; built by comparison (dask's take misreports its shape)
    return xp.astype(rows[:, None] == cols[None, :], ctx.dtype)


def full_jacobian(call: Call, jac: Array) -> Array:
    """Jacobian in shape (n, m, d), as a fresh array (a linear network's is a weight product, shared by the batch)."""
    if jac.ndim == 2:  # may be (a view of) a weight: never hand it out
        xp = call.ctx.xp
        return xp.zeros((call.n, call.m, call.d), dtype=jac.dtype, device=call.ctx.device) + jac
    return materialize(jac, (call.n, call.m, call.d), call.ctx.xp)


def potential_gradient(call: Call) -> Array | None:
    r"""Gradient :math:`x A_s + c` of a Potential's terms :math:`\tfrac12 x^\top A x + c^\top x`, shape (n, d)."""
    xp, grad = call.ctx.xp, None
    if call.plan.quadratic is not None:
        a = call.cast(call.plan.quadratic)
        grad = call.x @ (0.5 * (a + xp.matrix_transpose(a)))
    if call.plan.linear is not None:
        c = call.cast(call.plan.linear)
        grad = xp.zeros_like(call.x) + c if grad is None else grad + c
    return grad


def add_potential_terms(
    call: Call, y: Array, jac: Array | None, hess: Array | None
) -> tuple[Array, Array | None, Array | None]:
    r"""Add the Potential terms :math:`\tfrac12 x^\top A x + c^\top x` to value, Jacobian and Hessian.

    Gradient :math:`x A_s + c`, Hessian :math:`A_s = \tfrac12(A + A^\top)`.
    """
    xp, x = call.ctx.xp, call.x
    if call.plan.quadratic is not None:
        a = call.cast(call.plan.quadratic)
        y = y + 0.5 * xp.sum(x * (x @ a), axis=-1)[:, None]
        if hess is not None:
            hess = hess + 0.5 * (a + xp.matrix_transpose(a))
    if call.plan.linear is not None:
        y = y + (x @ call.cast(call.plan.linear))[:, None]
    grad = potential_gradient(call)
    if jac is not None and grad is not None:
        jac = jac + grad[..., None, :]
    return y, jac, hess


def quadratic_second_order(call: Call, seed: Array | None) -> Array | None:
    r""":math:`\mathrm{tr}(S^\top A_s S)` of a Potential's quadratic term (``tr A`` without a seed)."""
    if call.plan.quadratic is None:
        return None
    xp, a = call.ctx.xp, call.cast(call.plan.quadratic)
    if seed is None:
        return trace(a, xp, call.ctx)
    sym = 0.5 * (a + xp.matrix_transpose(a))
    return xp.sum(xp.sum((seed @ sym) * seed, axis=-1), axis=-1)  # () or (n,)


def _kernel(call: Call, jacobian: bool, hessian: bool, laplacian: bool, coords: Array | None, mode: str) -> tuple:
    xp, ctx, layers, params, n = call.ctx.xp, call.ctx, call.layers, call.params, call.n
    order = 2 if (hessian or laplacian) else (1 if jacobian else 0)
    y, caches = value_sweep(layers, params, call.x, xp, order)
    row_weights = None if coords is None else xp.sum(coords, axis=0)
    jac = hess = lap = None
    if hessian:
        if _cost.choose(layers, "hessian", mode) == "forward":
            jac, lambdas = adjoint_sweep(layers, params, caches, ctx)
            hess = forward_hessian(layers, params, caches, lambdas, ctx, n)
        else:
            jac, first = backward_second_order(layers, params, caches, ctx, n)
            hess = first.hessian(n, call.m, call.d)
    elif laplacian:
        if _cost.choose(layers, "laplacian", mode) == "forward":
            jac_km, lap = forward_laplacian(layers, params, caches, ctx, n, row_weights=row_weights)
            jac = xp.matrix_transpose(jac_km)
        else:
            jac, first = backward_second_order(layers, params, caches, ctx, n)
            lap = first.trace(coords, n, call.m)
    elif jacobian:
        if _cost.choose(layers, "jacobian", mode) == "forward":
            jac = xp.matrix_transpose(jacobian_sweep(layers, params, caches, ctx))
        else:
            jac, _ = adjoint_sweep(layers, params, caches, ctx)
    jac = full_jacobian(call, jac) if (jacobian and jac is not None) else None
    y, jac, hess = add_potential_terms(call, y, jac, hess)
    if laplacian:
        if hessian:
            diag = diagonal(hess, xp, ctx.device)
            lap = xp.sum(diag if row_weights is None else diag * row_weights, axis=-1)
        else:
            extra = quadratic_second_order(call, coords)
            lap = lap if extra is None else lap + extra
    return y, jac, hess, lap


def derivatives(
    net: Any,
    x: Array,
    *,
    jacobian: bool = True,
    hessian: bool = False,
    laplacian: bool = False,
    coords: Sequence[int] | None = None,
    mode: str = "auto",
    chunk_size: int | None = None,
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
    coords : sequence of int, optional
        Coordinates the Laplacian sums over (e.g. all but time); the Jacobian
        still has all ``d`` columns, so ``value``, ``du/dt`` and the spatial
        Laplacian come from one sweep.
    mode : {"auto", "forward", "backward"}
    chunk_size : int, optional
        Points per chunk; by default as many as fit the memory budget.

    Returns
    -------
    Derivatives
        ``value``, ``jacobian``, ``hessian``, ``laplacian`` (None where not requested).
    """
    check_mode(mode)

    def kernel(call: Call) -> tuple:
        return _kernel(call, jacobian, hessian, laplacian, coordinate_rows(call, coords), mode)

    quantity = "hessian" if hessian else ("laplacian" if laplacian else "jacobian")
    value, jac, hess, lap = run(
        net,
        x,
        kernel,
        trailing=[(), (_d(net),), (_d(net), _d(net)), ()],
        bytes_per_point=lambda call: _cost.bytes_per_point(call, quantity, mode),
        chunk_size=chunk_size,
    )
    return Derivatives(value, jac, hess, lap)


def _d(net: Any) -> int:
    return as_network(net).in_features


def value(net: Any, x: Array, *, chunk_size: int | None = None) -> Array:
    """Evaluate ``net`` at ``x``: shape ``(..., d)`` to ``(..., m)`` (Potential: ``(...,)``)."""
    return derivatives(net, x, jacobian=False, chunk_size=chunk_size).value


def jacobian(net: Any, x: Array, mode: str = "auto", *, chunk_size: int | None = None) -> Array:
    r"""Jacobian :math:`\partial y_k / \partial x_i`, shape ``y.shape + (d,)``."""
    return derivatives(net, x, mode=mode, chunk_size=chunk_size).jacobian


def gradient(net: Any, x: Array, mode: str = "auto", *, chunk_size: int | None = None) -> Array:
    r"""Gradient :math:`\nabla y` of a single-output network, shape ``x.shape``."""
    network = as_network(net)
    if network.out_features != 1:
        raise ValueError(
            f"gradient needs a single-output network, this one has {network.out_features} outputs; use xderiv.jacobian"
        )
    jac = jacobian(network, x, mode, chunk_size=chunk_size)
    if network.plan.scalar:
        return jac
    return network.xp.reshape(jac, tuple(jac.shape[:-2]) + (network.in_features,))


def hessian(net: Any, x: Array, mode: str = "auto", *, chunk_size: int | None = None) -> Array:
    r"""Hessian :math:`\partial^2 y_k / \partial x_i \partial x_j`, shape ``y.shape + (d, d)``."""
    return derivatives(net, x, jacobian=False, hessian=True, mode=mode, chunk_size=chunk_size).hessian


def laplacian(
    net: Any,
    x: Array,
    mode: str = "auto",
    *,
    coords: Sequence[int] | None = None,
    chunk_size: int | None = None,
) -> Array:
    r"""Laplacian :math:`\sum_{i \in \text{coords}} \partial^2 y_k / \partial x_i^2`, shape ``y.shape``.

    No Hessian is formed.  With ``coords`` (e.g. every coordinate but time)
    the forward mode carries only ``len(coords)`` Jacobian rows, so the cost
    scales with the subset, not with ``d``; the backward mode's cost does not
    depend on either.
    """
    from .operators import trace_hessian

    if coords is None:
        return derivatives(net, x, jacobian=False, laplacian=True, mode=mode, chunk_size=chunk_size).laplacian
    return trace_hessian(net, x, coords=coords, mode=mode, chunk_size=chunk_size)
