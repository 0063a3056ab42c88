r"""The value and first derivatives: ``value``, ``jacobian``, ``gradient``, ``divergence``.

Shapes (``m`` outputs; a :class:`~xderiv.Potential` has no output axis):

==============  ==========================================
value           ``(..., m)``
jacobian        ``(..., m, d)``
gradient        ``x.shape`` (a single-output network)
divergence      ``x.shape[:-1]`` (a field with ``m = d``)
==============  ==========================================

Cost row (:data:`JACOBIAN`): forward carries ``k = d`` Jacobian rows from the input,
:math:`k \sum_l w_{l-1} w_l` multiply-adds per point; backward carries the ``m`` adjoints from
the outputs, :math:`m \sum_l w_{l-1} w_l`; ``"auto"`` takes the cheaper.  A Potential adds
:math:`\nabla q = A_s x + c` (:meth:`~xderiv.engine.potential.PotentialTerms.add_jacobian`).
Composites follow the product rule :math:`(fg)' = f g' + g f'`.  On a graph the Jacobian is a
Taylor jet of order 1 along :math:`e_1, \dots, e_d`.

This module also holds what every operator's composite path shares: a leaf's value and Jacobian
(:func:`value_and_jacobian`) and the product rule for an operator of any rank
(:func:`by_product_rule`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..backends.namespace import Array, Context, array_namespace_of, device_of, diagonal, materialize, resolve_call
from ..engine.backward import adjoint_sweep
from ..engine.call import Call, run, value_kernel
from ..engine.cost import VALUE, Quantity, register
from ..engine.explain import Need, register_plan
from ..engine.forward import Tape, jacobian_sweep
from ..jets import is_graph
from ..jets.call import Setup, lead_last, resolve_points
from ..jets.kinds import Taylor
from ..models.composition import Composite, Rule, fold
from ..models.networks import as_network

JACOBIAN = register(
    Quantity(
        "jacobian",
        1,
        lambda s, direction, k: 3.0 * (k if direction == "forward" else s.m) * s.widest,
        lambda s, k: (s.forward_rows(k), s.adjoints()),
    )
)
"""Forward: ``k`` rows through every layer; backward: the ``m`` adjoints.  Memory: three arrays of
the carried rows at the widest layer."""


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


def value_and_jacobian(network: Any, x: Any, mode: str = "auto", chunk_size: int | None = None) -> list:
    """Value ``(..., m)`` and Jacobian ``(..., m, d)`` of a chain from one value sweep (a composite leaf)."""

    def kernel(call: Call, tape: Tape) -> tuple:
        (y,) = value_kernel(call, tape)
        return y, call.terms.add_jacobian(full_jacobian(call, jacobian_kernel(call, tape)), call.x)

    d = network.in_features
    return run(network, x, JACOBIAN, kernel, mode=mode, trailing=[(), (d,)], chunk_size=chunk_size)


def by_product_rule(
    network: Composite,
    x: Any,
    operator: Callable[[Any], Array],
    rank: int,
    cross: Callable[[Array, Array], Array],
    mode: str,
    chunk_size: int | None,
) -> Array:
    """``operator`` of a composite by the product rule; each leaf gives its value and Jacobian, then the operator.

    ``rank`` is the number of trailing axes of the operator's result after the
    output axis; ``cross(grad_f, grad_g)`` its product cross term.
    """

    def leaf(part: Any, x: Any) -> tuple:
        y, jac = value_and_jacobian(part, x, mode, chunk_size)
        return y, jac, operator(part)

    jet = fold(network, x, Rule(leaf, first_rank=1, second_rank=rank, cross=cross))
    assert jet.second is not None
    return jet.second


def like(a: Array, b: Any) -> Array:
    """``b`` as an array of ``a``'s namespace, dtype and device (already validated by the leaf calls)."""
    xp = array_namespace_of(a)
    b = xp.asarray(b, device=device_of(a))
    return b if b.dtype == a.dtype else xp.astype(b, a.dtype)


def value(net: Any, x: Array, *, chunk_size: int | None = None) -> Array:
    """Evaluate ``net`` at ``x``: shape ``(..., d)`` to ``(..., m)`` (Potential: ``(...,)``)."""
    if is_graph(net):
        s = Setup(net, x)
        return s.shape(s.run_value(chunk_size)[0])
    network = as_network(net)
    if isinstance(network, Composite):
        return network(x)
    out = run(network, x, VALUE, value_kernel, trailing=[()], chunk_size=chunk_size)[0]
    assert out is not None
    return out


def graph_jacobian(s: Setup, chunk_size: int | None) -> tuple[Array, Array]:
    """A graph's value ``(n, m)`` and Jacobian ``(n, m, d)``: a Taylor jet of order 1 along the axes."""
    y, first = s.run(Taylor(1), s.eye(), chunk_size, axes=True)
    return y[0, ...], lead_last(first, 1, s.xp)


def jacobian(net: Any, x: Array, mode: str = "auto", *, chunk_size: int | None = None) -> Array:
    r"""Jacobian :math:`\partial y_k / \partial x_i`, shape ``y.shape + (d,)``.

    ``mode``: ``"forward"`` carries ``d`` rows from the input, ``"backward"`` the ``m`` adjoints from
    the outputs, ``"auto"`` the cheaper by :data:`JACOBIAN` (graphs: forward only).
    """
    if is_graph(net):
        s = Setup(net, x, mode)
        return s.shape(graph_jacobian(s, chunk_size)[1])
    network = as_network(net)
    if isinstance(network, Composite):
        jet = fold(network, x, Rule(lambda part, x: (*value_and_jacobian(part, x, mode, chunk_size), None), 1))
        assert jet.first is not None
        return jet.first
    out = value_and_jacobian(network, x, mode, chunk_size)[1]
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


def divergence(net: Any, x: Array, mode: str = "auto", *, chunk_size: int | None = None) -> Array:
    r"""Divergence :math:`\sum_i \partial y_i / \partial x_i` of a vector field (``m = d``), shape ``x.shape[:-1]``."""
    if is_graph(net):
        s = Setup(net, x, mode)
        first = graph_jacobian(s, chunk_size)[1]
        if first.ndim != 3 or first.shape[-1] != s.d or first.shape[-2] != s.d:
            raise ValueError(
                f"divergence needs a field with d = {s.d} outputs, got outputs of shape {tuple(first.shape[1:-1])}"
            )
        return s.shape(s.xp.sum(diagonal(first, s.xp, s.ctx.device), axis=-1))
    network = as_network(net)
    if network.out_features != network.in_features or network.scalar:
        raise ValueError(
            f"divergence needs as many outputs as inputs (m = d); this network maps "
            f"d={network.in_features} to m={1 if network.scalar else network.out_features}"
        )
    jac = jacobian(network, x, mode, chunk_size=chunk_size)
    return network.xp.sum(diagonal(jac, network.xp, network.device), axis=-1)


def resolved(net: Any, x: Any) -> tuple[Any, Context, Array, int]:
    """The network, the call's context, ``x`` cast to its working dtype, and ``d`` (a graph's from ``x``)."""
    if is_graph(net):
        ctx, x = resolve_points(net, x)
        return net, ctx, x, int(x.shape[-1])
    network = as_network(net)
    ctx, x = resolve_call(x, network.xp, network.device, network.dtype)
    return network, ctx, x, network.in_features


JACOBIAN_RECURSIONS = {
    "forward": "Jacobian rows carried from the input (jacobian_sweep)",
    "backward": "adjoints carried from the outputs (adjoint_sweep)",
}


def _plan_value(d: int, a: dict) -> Need:
    return Need(VALUE, 1, {"forward": "the value sweep"}, "a jet of the value alone")


def _plan_jacobian(d: int, a: dict) -> Need:
    return Need(JACOBIAN, None, JACOBIAN_RECURSIONS, "a Taylor jet of order 1 along the d axes (d terms)")


register_plan(value, _plan_value)
for _op in (jacobian, gradient, divergence):
    register_plan(_op, _plan_jacobian)
