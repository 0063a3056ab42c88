r"""Value, Jacobian, gradient and Hessian, and the one-pass :func:`derivatives`.

Every function goes through :func:`xderiv.engine.call.run`: it resolves the
namespace, working dtype and device once, flattens the batch dims of ``x``
(shape ``(..., d)``), runs the recursions of :mod:`xderiv.engine.forward` /
:mod:`xderiv.engine.backward` in chunks that fit the memory budget
(:func:`xderiv.set_memory_budget`), and restores the batch dims.  Shapes
(``m`` outputs; a :class:`~xderiv.Potential` has no output axis):

==============  =======================
value           ``(..., m)``
jacobian        ``(..., m, d)``
hessian         ``(..., m, d, d)``
laplacian       ``(..., m)``
==============  =======================

``mode`` selects the sweep direction: ``"forward"`` carries Jacobians from
the input (cost grows with ``d``), ``"backward"`` carries adjoints from the
outputs (cost grows with ``m`` and, for second order, with the width cubed but
not with ``d``), ``"auto"`` takes the cheaper by :mod:`xderiv.engine.cost`.  All
modes agree to round-off.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..backends.namespace import Array, Context, array_namespace_of, device_of, diagonal, materialize, resolve_call
from ..engine.backward import adjoint_sweep, backward_second_order, hessian_over_reverse
from ..engine.call import Call, coordinate_rows, run, value_kernel
from ..engine.cost import HESSIAN, JACOBIAN, LAPLACIAN, VALUE
from ..engine.forward import Tape, forward_hessian, forward_laplacian, jacobian_sweep
from ..jets import call as graph
from ..jets import is_graph
from ..models.composition import Composite, Rule, fold
from ..models.networks import as_network


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


def full_jacobian(call: Call, jac: Array) -> Array:
    """Jacobian in shape (n, m, d), as a fresh array (a linear network's is a weight product, shared by the batch)."""
    if jac.ndim == 2:  # may be (a view of) a weight: never hand it out
        xp = call.ctx.xp
        return xp.zeros((call.n, call.m, call.d), dtype=jac.dtype, device=call.ctx.device) + jac
    return materialize(jac, (call.n, call.m, call.d), call.ctx.xp)


def jacobian_kernel(call: Call, tape: Tape) -> Array:
    """:math:`\\partial y/\\partial x` of the layers (no Potential terms) in the call's mode, (n, m, d) or broadcast."""
    if call.mode == "forward":
        return call.ctx.xp.matrix_transpose(jacobian_sweep(tape))
    return adjoint_sweep(tape)[0]


def trace_kernel(
    call: Call, tape: Tape, seed: Array | None = None, coord_rows: Array | None = None
) -> tuple[Array, Array]:
    r"""Jacobian and :math:`\mathrm{tr}(S^\top \nabla^2 y\, S)`, the Potential's terms included in the trace.

    ``seed`` is :math:`S^\top` ((k, d) or (n, k, d); all coordinates when
    None).  ``coord_rows`` instead (rows of the identity, from
    :func:`~xderiv.engine.call.coordinate_rows`) sums over those coordinates while the
    forward mode still carries all ``d`` rows, so that the Jacobian is complete.

    Returns
    -------
    J : array (n, m, d) or broadcastable (layers only, no Potential terms)
    trace : array (n, m)
    """
    rows = seed if coord_rows is None else coord_rows
    if call.mode == "forward":
        weights = None if coord_rows is None else call.ctx.xp.sum(coord_rows, axis=0)
        jac_km, out = forward_laplacian(tape, seed=seed, row_weights=weights)
        jac = call.ctx.xp.matrix_transpose(jac_km)
    else:
        jac, first = backward_second_order(tape)
        out = first.trace(rows, call.n, call.m)
    return jac, call.terms.add_trace(out, rows)


def hessian_kernel(call: Call, tape: Tape) -> tuple[Array, Array]:
    """Jacobian (layers only) and Hessian (with the Potential's :math:`A_s`), (n, m, d) and (n, m, d, d)."""
    if call.mode == "forward":
        if call.plan.costs.hessian_over_reverse(call.ctx.ops.stacked_products):
            jac, hess = hessian_over_reverse(tape)
        else:
            jac, lambdas = adjoint_sweep(tape)
            hess = forward_hessian(tape, lambdas)
    else:
        jac, first = backward_second_order(tape)
        hess = first.hessian(call.n, call.m, call.d)
    return jac, call.terms.add_hessian(hess)


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
    if is_graph(net):
        return Derivatives(
            *graph.derivatives(
                net,
                x,
                jacobian=jacobian,
                hessian=hessian,
                laplacian=laplacian,
                coords=coords,
                mode=mode,
                chunk_size=chunk_size,
            )
        )
    network = as_network(net)
    if isinstance(network, Composite):
        return _composite_derivatives(network, x, jacobian, hessian, laplacian, coords, mode, chunk_size)
    d = network.in_features

    def kernel(call: Call, tape: Tape) -> tuple:
        xp = call.ctx.xp
        coord_rows = coordinate_rows(call, coords)
        jac = hess = lap = None
        if hessian:
            jac, hess = hessian_kernel(call, tape)
            if laplacian:
                diag = diagonal(hess, xp, call.ctx.device)
                lap = xp.sum(diag if coord_rows is None else diag * xp.sum(coord_rows, axis=0), axis=-1)
        elif laplacian:
            jac, lap = trace_kernel(call, tape, coord_rows=coord_rows)
        elif jacobian:
            jac = jacobian_kernel(call, tape)
        if jacobian:
            jac = call.terms.add_jacobian(full_jacobian(call, jac), call.x)
        (y,) = value_kernel(call, tape)
        return y, (jac if jacobian else None), hess, lap

    quantity = HESSIAN if hessian else (LAPLACIAN if laplacian else (JACOBIAN if jacobian else VALUE))
    value, jac, hess, lap = run(
        network,
        x,
        quantity,
        kernel,
        mode=mode,
        trailing=[(), (d,), (d, d), ()],
        chunk_size=chunk_size,
    )
    assert value is not None
    return Derivatives(value, jac, hess, lap)


def outer_cross(a: Array, b: Array) -> Array:
    r"""Hessian cross term of a product: :math:`a b^\top + b a^\top` for gradients ``a``, ``b`` of shape (..., d)."""
    ab = a[..., :, None] * b[..., None, :]
    return ab + array_namespace_of(ab).matrix_transpose(ab)


def coordinate_mask(a: Array, coords: Sequence[int] | None) -> Array | float:
    """1 on ``coords`` and 0 elsewhere along the last axis of ``a`` (1.0 for all coordinates)."""
    if coords is None:
        return 1.0
    xp, d = array_namespace_of(a), a.shape[-1]
    chosen = {int(i) % d for i in coords}
    return xp.asarray([1.0 if i in chosen else 0.0 for i in range(d)], dtype=a.dtype, device=device_of(a))


def _composite_derivatives(
    network: Composite,
    x: Any,
    jacobian: bool,
    hessian: bool,
    laplacian: bool,
    coords: Sequence[int] | None,
    mode: str,
    chunk_size: int | None,
) -> Derivatives:
    """:func:`derivatives` of a composite: each leaf's one pass, combined by the product rule."""

    def leaf(net: Any, x: Any) -> tuple:
        r = derivatives(
            net,
            x,
            jacobian=True,
            hessian=hessian,
            laplacian=laplacian and not hessian,
            coords=coords,
            mode=mode,
            chunk_size=chunk_size,
        )
        return r.value, r.jacobian, (r.hessian if hessian else r.laplacian)

    def laplacian_cross(a: Array, b: Array) -> Array:
        xp = array_namespace_of(a)
        return 2.0 * xp.sum(a * b * coordinate_mask(a, coords), axis=-1)

    if hessian:
        jet = fold(network, x, Rule(leaf, first_rank=1, second_rank=2, cross=outer_cross))
    elif laplacian:
        jet = fold(network, x, Rule(leaf, first_rank=1, second_rank=0, cross=laplacian_cross))
    else:
        jet = fold(network, x, Rule(leaf, first_rank=1))
    hess = jet.second if hessian else None
    lap = jet.second if laplacian and not hessian else None
    if hessian and laplacian:
        xp = array_namespace_of(jet.value)
        diag = diagonal(hess, xp, device_of(hess))
        lap = xp.sum(diag * coordinate_mask(diag, coords), axis=-1)
    return Derivatives(jet.value, jet.first if jacobian else None, hess, lap)


def value(net: Any, x: Array, *, chunk_size: int | None = None) -> Array:
    """Evaluate ``net`` at ``x``: shape ``(..., d)`` to ``(..., m)`` (Potential: ``(...,)``)."""
    if is_graph(net):
        return graph.value(net, x, chunk_size)
    network = as_network(net)
    if isinstance(network, Composite):
        return network(x)
    out = run(network, x, VALUE, value_kernel, trailing=[()], chunk_size=chunk_size)[0]
    assert out is not None
    return out


def jacobian(net: Any, x: Array, mode: str = "auto", *, chunk_size: int | None = None) -> Array:
    r"""Jacobian :math:`\partial y_k / \partial x_i`, shape ``y.shape + (d,)``."""
    out = derivatives(net, x, mode=mode, chunk_size=chunk_size).jacobian
    assert out is not None
    return out


def gradient(net: Any, x: Array, mode: str = "auto", *, chunk_size: int | None = None) -> Array:
    r"""Gradient :math:`\nabla y` of a single-output network, shape ``x.shape``."""
    if is_graph(net):
        jac = jacobian(net, x, mode, chunk_size=chunk_size)
        if jac.ndim == len(x.shape):  # a scalar field: already x.shape
            return jac
        if jac.shape[-2] != 1:
            raise ValueError(
                f"gradient needs a single-output network, this one has {jac.shape[-2]} outputs; use xderiv.jacobian"
            )
        return array_namespace_of(jac).reshape(jac, tuple(jac.shape[:-2]) + (jac.shape[-1],))
    network = as_network(net)
    if network.out_features != 1:
        raise ValueError(
            f"gradient needs a single-output network, this one has {network.out_features} outputs; use xderiv.jacobian"
        )
    jac = jacobian(network, x, mode, chunk_size=chunk_size)
    if network.scalar:
        return jac
    return network.xp.reshape(jac, tuple(jac.shape[:-2]) + (network.in_features,))


def hessian(net: Any, x: Array, mode: str = "auto", *, chunk_size: int | None = None) -> Array:
    r"""Hessian :math:`\partial^2 y_k / \partial x_i \partial x_j`, shape ``y.shape + (d, d)``."""
    out = derivatives(net, x, jacobian=False, hessian=True, mode=mode, chunk_size=chunk_size).hessian
    assert out is not None
    return out


def resolved(net: Any, x: Any) -> tuple[Any, Context, Array, int]:
    """The network, the call's context, ``x`` cast to its working dtype, and ``d`` (a graph's from ``x``)."""
    if is_graph(net):
        ctx, x = graph.resolve_points(net, x)
        return net, ctx, x, int(x.shape[-1])
    network = as_network(net)
    ctx, x = resolve_call(x, network.xp, network.device, network.dtype)
    return network, ctx, x, network.in_features
