r"""First and second directional derivatives :math:`(\partial_v y, \partial^2_{vv} y)`: ``directional``.

:math:`\partial_v y = \nabla y \cdot v` and :math:`\partial^2_{vv} y = v^\top \nabla^2 y\, v`, from
one forward sweep carrying a single Jacobian row (the forward Laplacian with one direction, about
three forward passes; cost row :data:`DIRECTIONAL`, one mode).  A Potential adds
:math:`\nabla q \cdot v` (:func:`potential_directional`) and :math:`v^\top A_s v`
(:func:`~xderiv.operators.laplacian.potential_trace`); a product of networks the cross term
:math:`2\, \partial_v f\, \partial_v g`.  On a graph: a Taylor jet of order 2 along ``v``.
"""

from __future__ import annotations

from typing import Any

from ..backends.namespace import Array, materialize
from ..engine.call import Call, run
from ..engine.cost import Quantity, register
from ..engine.explain import Need, register_plan
from ..engine.forward import Tape, forward_laplacian
from ..engine.potential import PotentialTerms
from ..jets import is_graph
from ..jets.call import Setup, one_direction
from ..jets.kinds import Taylor
from ..models.composition import Composite, Rule, fold
from ..models.networks import as_network
from .first_order import value
from .hvp import direction_seed
from .laplacian import potential_trace

DIRECTIONAL = register(Quantity("directional", 2, lambda s, direction, k: 4.0 * k * s.widest))


def potential_directional(terms: PotentialTerms, first: Array, x: Array, seed: Array) -> Array:
    """``first`` (n, m) plus :math:`\\nabla q(x) \\cdot v` for the single direction ``seed`` (1, d) or (n, 1, d)."""
    grad = terms.gradient(x)
    return first if grad is None else first + terms.ctx.xp.sum(grad * seed[..., 0, :], axis=-1)[:, None]


def directional(net: Any, x: Array, v: Array, *, chunk_size: int | None = None) -> tuple[Array, Array]:
    r"""First and second directional derivatives :math:`(\partial_v y, \partial^2_{vv} y)`, each ``y.shape``.

    :math:`\partial_v y = \nabla y \cdot v` and :math:`\partial^2_{vv} y = v^\top \nabla^2 y\, v`,
    from one forward sweep carrying a single Jacobian row (about three forward passes).

    Parameters
    ----------
    v : array (d,) shared by the batch, or (..., d) one per point
    """
    if is_graph(net):
        s = Setup(net, x)
        _, first, second = s.run(Taylor(2), one_direction(s, v), chunk_size)
        return s.shape(first[0, ...]), s.shape(2.0 * second[0, ...])

    def kernel(call: Call, tape: Tape, seed: Array) -> tuple:
        jac, second = forward_laplacian(tape, seed=seed)
        first = call.ctx.xp.reshape(materialize(jac, (call.n, 1, call.m), call.ctx.xp), (call.n, call.m))
        return potential_directional(call.terms, first, call.x, seed), potential_trace(call.terms, second, seed)

    network = as_network(net)
    if isinstance(network, Composite):

        def leaf(part: Any, x: Any) -> tuple:
            return (value(part, x, chunk_size=chunk_size), *directional(part, x, v, chunk_size=chunk_size))

        jet = fold(network, x, Rule(leaf, first_rank=0, second_rank=0, cross=lambda a, b: 2.0 * a * b))
        assert jet.first is not None and jet.second is not None
        return jet.first, jet.second
    dv, dvv = run(
        network,
        x,
        DIRECTIONAL,
        kernel,
        trailing=[(), ()],
        extras=lambda call: direction_seed(call, v, "v"),
        rows=lambda seed: 1,
        chunk_size=chunk_size,
    )
    assert dv is not None and dvv is not None
    return dv, dvv


def _plan(d: int, a: dict) -> Need:
    return Need(
        DIRECTIONAL, 1, {"forward": "the forward Laplacian along v (one row)"}, "a Taylor jet of order 2 along v"
    )


register_plan(directional, _plan)
