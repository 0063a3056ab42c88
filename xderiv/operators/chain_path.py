r"""A chain inside a graph keeps its fast paths.

A chain of layers called on an operator's input jet (a network in a composite with functions, or
``net(x)`` called by a function on its input) runs its own recursions instead of the generic jet
rules; registered with :func:`xderiv.jets.function.register_chain_path` at import.
"""

from __future__ import annotations

import math
from typing import Any

from ..backends.namespace import Array, array_namespace_of
from ..jets import JetArray
from ..jets.function import register_chain_path
from ..jets.kinds import Hessian
from .one_pass import derivatives
from .taylor import taylor


def chain_jet(network: Any, x: JetArray) -> JetArray | None:
    r"""A chain's output jet at an operator's input jet ``x``, from the chain's own recursions.

    A chain of layers inside a graph (a network in a composite with functions, or ``net(x)`` called
    by a function on its input) keeps its fast paths: the Hessian jet from
    :func:`~xderiv.derivatives` (sum of layers or backward sweeps, the cheaper by the cost model), a
    Laplacian jet along the axes from the chain's forward or backward Laplacian, and any other Taylor
    jet from the Taylor sweep; terms normalised (:math:`y_k = \partial_v^k y / k!`), lead axes first.
    None (the rules take it) for a value alone and for weights other than ones.
    """
    seed, kind = x.seed, x.kind
    assert seed is not None
    pts = seed.x
    xp = array_namespace_of(pts)
    n, d = int(pts.shape[0]), int(pts.shape[1])

    def out_axis(a: Array, rank: int) -> Array:  # a scalar network's results get an output axis of 1
        return xp.reshape(a, (n, 1) + tuple(a.shape[1:])) if network.scalar else a

    def lead_first(a: Array, lead: int) -> Array:  # (n, m, *lead) -> (*lead, n, m)
        k = a.ndim - lead
        return xp.permute_dims(a, tuple(range(k, a.ndim)) + tuple(range(k)))

    def done(terms: list[Array]) -> JetArray:
        if network.scalar:
            terms = [xp.reshape(t, tuple(t.shape[: t.ndim - 2]) + (n,)) for t in terms]
        return JetArray(tuple(terms), kind)

    if isinstance(kind, Hessian):
        r = derivatives(network, pts, hessian=True)
        y, jac, hess = out_axis(r.value, 0), out_axis(r.jacobian, 1), out_axis(r.hessian, 2)
        first = xp.expand_dims(lead_first(jac, 1), axis=1)
        return done([xp.reshape(y, (1, 1, n, -1)), first, 0.5 * kind.pack(lead_first(hess, 2), xp)])
    order = kind.order
    if order == 0 or (kind.weights is not None and not getattr(kind, "unit", False)):
        return None
    if seed.axes and order == 2 and kind.collapsed(2):
        r = derivatives(network, pts, laplacian=True)
        y, jac, lap = out_axis(r.value, 0), out_axis(r.jacobian, 1), out_axis(r.laplacian, 0)
        return done([xp.reshape(y, (1, n, -1)), lead_first(jac, 1), xp.reshape(0.5 * lap, (1, n, -1))])
    if seed.axes and order == 1:
        r = derivatives(network, pts)
        y, jac = out_axis(r.value, 0), out_axis(r.jacobian, 1)
        return done([xp.reshape(y, (1, n, -1)), lead_first(jac, 1)])
    rows = seed.directions
    assert rows is not None
    rows = xp.broadcast_to(rows, (n,) + tuple(rows.shape[-2:])) if rows.ndim == 2 else rows
    count = int(rows.shape[1])
    weights = [1.0] * count if kind.weights is not None else None
    coefficients = taylor(network, pts, xp.matrix_transpose(rows), order, weights=weights)
    terms = [xp.reshape(out_axis(coefficients[0][..., 0], 0), (1, n, -1))]
    for k in range(1, order + 1):
        c = out_axis(coefficients[k], 0 if kind.collapsed(k) else 1) / float(math.factorial(k))
        terms.append(xp.reshape(c, (1, n, -1)) if kind.collapsed(k) else lead_first(c, 1))
    del d
    return done(terms)


register_chain_path(chain_jet)
