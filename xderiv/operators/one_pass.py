r"""Value, Jacobian, Hessian and Laplacian in one pass: :func:`derivatives`.

One value sweep, then the recursions the requested results share: the Hessian's
(:mod:`~xderiv.operators.hessian`; its trace is then the Laplacian), or the trace's
(:mod:`~xderiv.operators.laplacian`, no Hessian formed; it yields the Jacobian too), or the
Jacobian's (:mod:`~xderiv.operators.first_order`).  Shapes (``m`` outputs; a
:class:`~xderiv.Potential` has no output axis):

==============  =======================
value           ``(..., m)``
jacobian        ``(..., m, d)``
hessian         ``(..., m, d, d)``
laplacian       ``(..., m)``
==============  =======================

``mode`` selects the sweep direction: ``"forward"`` carries Jacobians from
the input (cost grows with ``d``), ``"backward"`` carries adjoints from the
outputs (cost grows with ``m`` and, for second order, with the width cubed but
not with ``d``), ``"auto"`` takes the cheaper by the operators' cost rows.  All
modes agree to round-off.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..backends.namespace import Array, array_namespace_of, device_of, diagonal
from ..engine.call import Call, coordinate_rows, run, value_kernel
from ..engine.cost import VALUE
from ..engine.explain import Need, register_plan
from ..engine.forward import Tape
from ..jets import is_graph
from ..jets.call import CoordCall, Setup
from ..models.composition import Composite, Rule, fold
from ..models.networks import as_network
from .first_order import JACOBIAN, JACOBIAN_RECURSIONS, full_jacobian, graph_jacobian, jacobian_kernel
from .hessian import HESSIAN, graph_hessian, hessian_kernel, hessian_need, outer_cross
from .laplacian import LAPLACIAN, coordinate_mask, graph_trace, trace_cross, trace_kernel, trace_need


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
    net : Sequential, Potential, layer, composite or graph
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
        return _graph_derivatives(net, x, jacobian, hessian, laplacian, coords, mode, chunk_size)
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

    if hessian:
        jet = fold(network, x, Rule(leaf, first_rank=1, second_rank=2, cross=outer_cross))
    elif laplacian:
        jet = fold(network, x, Rule(leaf, first_rank=1, second_rank=0, cross=trace_cross(coords=coords)))
    else:
        jet = fold(network, x, Rule(leaf, first_rank=1))
    hess = jet.second if hessian else None
    lap = jet.second if laplacian and not hessian else None
    if hessian and laplacian:
        xp = array_namespace_of(jet.value)
        diag = diagonal(hess, xp, device_of(hess))
        lap = xp.sum(diag * coordinate_mask(diag, coords), axis=-1)
    return Derivatives(jet.value, jet.first if jacobian else None, hess, lap)


def _graph_derivatives(
    net: Any,
    x: Any,
    jacobian: bool,
    hessian: bool,
    laplacian: bool,
    coords: Sequence[int] | None,
    mode: str,
    chunk_size: int | None,
) -> Derivatives:
    """:func:`derivatives` of a graph: one Hessian jet, or one collapsed Taylor jet of order 2 or 1 along the axes."""
    s = Setup(net, x, mode)
    xp = s.xp
    jac = hess = lap = None
    mask = None if coords is None else xp.sum(coordinate_rows(CoordCall(s), coords), axis=0)  # type: ignore[arg-type]
    if hessian:
        y, jac, hess = graph_hessian(s, chunk_size)
        if laplacian:
            diag = diagonal(hess, xp, s.ctx.device)
            lap = xp.sum(diag if mask is None else diag * mask, axis=-1)
    elif laplacian:
        y, jac, lap = graph_trace(s, None, mask, chunk_size)
    elif jacobian:
        y, jac = graph_jacobian(s, chunk_size)
    else:
        (y,) = s.run_value(chunk_size)
    return Derivatives(
        s.shape(y),
        None if jac is None or not jacobian else s.shape(jac),
        None if hess is None else s.shape(hess),
        None if lap is None else s.shape(lap),
    )


def _plan(d: int, a: dict) -> Need:
    if a.get("hessian"):
        return hessian_need()
    if a.get("laplacian"):
        return trace_need(None)
    if a.get("jacobian", True):
        return Need(JACOBIAN, None, JACOBIAN_RECURSIONS, "a Taylor jet of order 1 along the d axes")
    return Need(VALUE, 1, {"forward": "the value sweep"}, "a jet of the value alone")


register_plan(derivatives, _plan)
