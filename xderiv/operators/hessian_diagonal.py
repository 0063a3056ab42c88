r"""The Hessian's diagonal :math:`\partial^2 y_k / \partial x_i^2`, shape ``y.shape + (d,)``: ``hessian_diagonal``.

Cost row (:data:`DIAGONAL`): forward keeps one second derivative per coordinate in the forward
Laplacian recursion, :math:`2 d \sum_l w_{l-1} w_l` (twice the Jacobian); backward closes the
second-order adjoint row by row, :math:`m d w_1^2` at the first layer instead of the Hessian's
:math:`m d^2 w_1`.  A Potential adds the diagonal of :math:`A` (:func:`potential_diagonal`); a
product of networks the cross term :math:`2\, \partial_i f\, \partial_i g`.  On a graph: a Taylor
jet of order 2 along the axes, its top term not collapsed (``2 d`` terms).
"""

from __future__ import annotations

from typing import Any

from ..backends.namespace import Array, diagonal
from ..engine.backward import backward_second_order
from ..engine.call import Call, run
from ..engine.cost import Dims, Quantity, register
from ..engine.explain import Need, register_plan
from ..engine.forward import Tape, forward_laplacian
from ..engine.potential import PotentialTerms
from ..jets import is_graph
from ..jets.call import Setup, lead_last
from ..jets.kinds import Taylor
from ..models.composition import Composite
from ..models.networks import as_network
from .first_order import by_product_rule


def _memory(s: Dims, direction: str, k: int) -> float:
    w = s.widest
    return 4.0 * k * w if direction == "forward" else 4.0 * s.m * w * w + 2.0 * s.m * s.d * w


DIAGONAL = register(
    Quantity(
        "diagonal",
        2,
        _memory,
        lambda s, k: (2.0 * s.forward_rows(s.d), s.theta() + s.first_theta(2.0 * s.d * s.w1 * s.w1)),
    )
)


def potential_diagonal(terms: PotentialTerms, diag: Array) -> Array:
    """``diag`` (n, m, d) plus the diagonal of a Potential's :math:`A` (unchanged without one)."""
    if terms.a is None:
        return diag
    return diag + (terms.a if terms.diagonal_a else diagonal(terms.a, terms.ctx.xp, terms.ctx.device))


def hessian_diagonal(net: Any, x: Array, mode: str = "auto", *, chunk_size: int | None = None) -> Array:
    r"""Diagonal :math:`\partial^2 y_k / \partial x_i^2` of the Hessian, shape ``y.shape + (d,)``.

    ``"forward"`` keeps one second derivative per coordinate in the forward
    Laplacian recursion (``n d sum w_{l-1} w_l``, twice the Jacobian);
    ``"backward"`` closes the second-order adjoint row by row (``d w^2`` at the
    first layer instead of the Hessian's ``d^2 w``).
    """
    if is_graph(net):
        s = Setup(net, x, mode)
        _, _, second = s.run(Taylor(2), s.eye(), chunk_size, axes=True)
        return s.shape(lead_last(2.0 * second, 1, s.xp))

    def kernel(call: Call, tape: Tape) -> tuple:
        if call.mode == "forward":
            diag = call.ctx.xp.matrix_transpose(forward_laplacian(tape, per_row=True)[1])  # (n, m, d)
        else:
            diag = backward_second_order(tape)[1].diagonal(call.n, call.m, call.d)
        return (potential_diagonal(call.terms, diag),)

    network = as_network(net)
    if isinstance(network, Composite):
        return by_product_rule(
            network,
            x,
            lambda leaf: hessian_diagonal(leaf, x, mode, chunk_size=chunk_size),
            1,
            lambda a, b: 2.0 * a * b,
            mode,
            chunk_size,
        )
    return run(network, x, DIAGONAL, kernel, mode=mode, trailing=[(network.in_features,)], chunk_size=chunk_size)[0]


def _plan(d: int, a: dict) -> Need:
    recursions = {
        "forward": "the forward Laplacian keeping one second derivative per coordinate",
        "backward": "the second-order adjoint, closed row by row",
    }
    return Need(DIAGONAL, None, recursions, "a Taylor jet of order 2 along the d axes (2 d terms)")


register_plan(hessian_diagonal, _plan)
