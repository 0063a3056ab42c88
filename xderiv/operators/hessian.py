r"""The Hessian :math:`\partial^2 y_k / \partial x_i \partial x_j`, shape ``y.shape + (d, d)``.

Cost row (:data:`HESSIAN`), multiply-adds per point with widths :math:`w_0 = d, \dots, w_L = m`:

- forward: the Jacobian rows and the adjoints, then the cheaper of two forms
  (:func:`~xderiv.engine.cost.hessian_forward_forms`): the sum of layers,
  :math:`m d^2 \sum_l w_l` in per-point products, or forward-over-reverse,
  :math:`m d \sum_l w_{l-1} w_l` in 2-D products;
- backward: the second-order adjoint :math:`\Theta` through every layer but the first,
  :math:`m \sum_l w_l w_{l-1} (w_l + w_{l-1})`, closed at the first layer by
  :math:`m (w_1^2 d + d^2 w_1)`.

A Potential adds :math:`A_s` (:func:`potential_hessian`); a product of networks the cross term
:math:`\nabla f \nabla g^\top + \nabla g \nabla f^\top` (:func:`outer_cross`).  On a graph the
Hessian is a ``Hessian`` jet along :math:`e_1, \dots, e_d` (``d + d^2`` terms).
"""

from __future__ import annotations

from typing import Any

from ..backends.namespace import Array, array_namespace_of
from ..engine.backward import adjoint_sweep, backward_second_order, hessian_over_reverse
from ..engine.call import Call, run, value_kernel
from ..engine.cost import ELEMENTWISE, Dims, Quantity, hessian_forward_forms, register
from ..engine.explain import Need, register_plan
from ..engine.forward import Tape, forward_hessian
from ..engine.higher_sweeps import Pairs
from ..engine.potential import PotentialTerms
from ..jets import is_graph
from ..jets.call import Setup, lead_last
from ..jets.kinds import Hessian
from ..models.composition import Composite, Rule, fold
from ..models.networks import as_network
from .first_order import full_jacobian


def _flops(s: Dims, k: int) -> tuple[float, float]:
    d, w1 = s.d, s.w1
    return min(hessian_forward_forms(s)), s.theta() + s.first_theta(w1 * w1 * d + d * d * w1 + ELEMENTWISE * d * w1)


def _memory(s: Dims, direction: str, k: int) -> float:
    """Forward: the larger of its two forms (the tangents of every layer are kept for forward-over-reverse)."""
    m, d, w = s.m, s.d, s.widest
    if direction == "forward":
        live = max(3.0 * d * w + 2.0 * m * d * w, d * sum(s.widths[1:]) + 4.0 * m * d * w)
    else:
        live = 4.0 * m * w * w + 2.0 * m * d * w
    return live + m * w * s.depth + m * d * d


HESSIAN = register(Quantity("hessian", 2, _memory, _flops))


def potential_hessian(terms: PotentialTerms, hess: Array) -> Array:
    """``hess`` (n, m, d, d) plus a Potential's :math:`A_s` (unchanged without one)."""
    if terms.sym is None:
        return hess
    if terms.diagonal_a:
        ctx = terms.ctx
        return hess + ctx.xp.eye(terms.sym.shape[0], dtype=ctx.dtype, device=ctx.device) * terms.sym
    return hess + terms.sym


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
    return jac, potential_hessian(call.terms, hess)


def outer_cross(a: Array, b: Array) -> Array:
    r"""Hessian cross term of a product: :math:`a b^\top + b a^\top` for gradients ``a``, ``b`` of shape (..., d)."""
    ab = a[..., :, None] * b[..., None, :]
    return ab + array_namespace_of(ab).matrix_transpose(ab)


def value_jacobian_hessian(network: Any, x: Any, mode: str = "auto", chunk_size: int | None = None) -> list:
    """Value, Jacobian and Hessian of a chain, Potential terms included, from one value sweep."""

    def kernel(call: Call, tape: Tape) -> tuple:
        jac, hess = hessian_kernel(call, tape)
        (y,) = value_kernel(call, tape)
        return y, call.terms.add_jacobian(full_jacobian(call, jac), call.x), hess

    d = network.in_features
    return run(network, x, HESSIAN, kernel, mode=mode, trailing=[(), (d,), (d, d)], chunk_size=chunk_size)


def graph_hessian(s: Setup, chunk_size: int | None) -> tuple[Array, Array, Array]:
    """A graph's value ``(n, m)``, Jacobian ``(n, m, d)`` and Hessian ``(n, m, d, d)`` from one Hessian jet."""
    kind = Hessian(Pairs.build(s.d, s.ctx))
    y, first, second = s.run(kind, None, chunk_size)
    return y[0, 0, ...], lead_last(first[:, 0, ...], 1, s.xp), lead_last(2.0 * kind.unpack(second, s.xp), 2, s.xp)


def hessian(net: Any, x: Array, mode: str = "auto", *, chunk_size: int | None = None) -> Array:
    r"""Hessian :math:`\partial^2 y_k / \partial x_i \partial x_j`, shape ``y.shape + (d, d)``.

    ``mode``: ``"forward"`` (Jacobian rows forward, then the sum of layers or forward-over-reverse,
    whichever :data:`HESSIAN` counts cheaper), ``"backward"`` (the second-order adjoint; cost
    independent of ``d`` but for the first layer), or ``"auto"``.
    """
    if is_graph(net):
        s = Setup(net, x, mode)
        return s.shape(graph_hessian(s, chunk_size)[2])
    network = as_network(net)
    if isinstance(network, Composite):
        rule = Rule(
            lambda part, x: tuple(value_jacobian_hessian(part, x, mode, chunk_size)),
            first_rank=1,
            second_rank=2,
            cross=outer_cross,
        )
        out = fold(network, x, rule).second
    else:
        out = value_jacobian_hessian(network, x, mode, chunk_size)[2]
    assert out is not None
    return out


def hessian_need() -> Need:
    """The Hessian's plan (:func:`xderiv.explain`)."""
    recursions = {
        "forward": "Jacobian rows and adjoints, then the sum of layers or forward-over-reverse, the cheaper",
        "backward": "the second-order adjoint, closed at the first layer",
    }
    return Need(HESSIAN, None, recursions, "a Hessian jet along the d axes (d + d(d+1)/2 terms)")


register_plan(hessian, lambda d, a: hessian_need())
