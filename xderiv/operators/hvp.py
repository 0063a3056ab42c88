r"""The Hessian-vector product :math:`\nabla^2 y_k\, v`, shape ``y.shape + (d,)``: ``hvp``.

Forward-over-reverse on a chain: a tangent sweep along ``v``, then the adjoint sweep and its
derivative along ``v`` (:func:`~xderiv.engine.backward.hvp_sweep`), about four forward passes
whatever ``d`` (cost row :data:`HVP`, one mode).  A Potential adds :math:`A_s v`
(:func:`potential_hvp`); a product of networks the cross term
:math:`\nabla f\,(\nabla g \cdot v) + \nabla g\,(\nabla f \cdot v)`.  On a graph, by polarisation
of normalised Taylor terms of order 2 along :math:`e_i`, :math:`e_i + v` and :math:`v`
(``2 (2 d + 1)`` terms): :math:`(H v)_i = y_2(e_i + v) - y_2(e_i) - y_2(v)`.
"""

from __future__ import annotations

from typing import Any

from ..backends.namespace import Array, array_namespace_of, materialize
from ..engine.backward import hvp_sweep
from ..engine.call import Call, per_point, run
from ..engine.cost import Quantity, register
from ..engine.explain import Need, register_plan
from ..engine.forward import Tape, tangent_sweep
from ..engine.potential import PotentialTerms
from ..jets import is_graph
from ..jets.call import Setup, lead_last, one_direction
from ..jets.kinds import Taylor
from ..models.composition import Composite
from ..models.networks import as_network
from .first_order import by_product_rule, like

HVP = register(Quantity("hvp", 2, lambda s, direction, k: s.widest * s.depth + 4.0 * s.m * s.widest * k))
"""One mode; memory: the tangents of every layer, and the adjoints and their tangents at the widest."""


def potential_hvp(terms: PotentialTerms, out: Array, seed: Array) -> Array:
    """``out`` (n, m, d) plus :math:`A_s v` for ``seed`` = :math:`v^\\top`, shape (1, d) or (n, 1, d)."""
    return out if terms.sym is None else out + terms.times_a(seed)


def direction_seed(call: Call, v: Any, name: str) -> tuple[tuple[Array, bool]]:
    """``v`` ((d,) shared or ``x.shape`` per point) as seed rows (1, d) or (n, 1, d)."""
    a, pp = per_point(call, v, name, (call.d,))
    return ((a[..., None, :], pp),)


def hvp_cross(v: Any) -> Any:
    r"""The product's cross term :math:`a\,(b \cdot v) + b\,(a \cdot v)` for gradients (..., m, d)."""

    def cross(a: Array, b: Array) -> Array:
        xp = array_namespace_of(a)
        w = like(a, v)
        w = xp.reshape(w, tuple(w.shape[:-1]) + (1, w.shape[-1]))
        return a * xp.sum(b * w, axis=-1)[..., None] + b * xp.sum(a * w, axis=-1)[..., None]

    return cross


def hvp(net: Any, x: Array, v: Array, *, chunk_size: int | None = None) -> Array:
    r"""Hessian-vector product :math:`\nabla^2 y_k\, v`, shape ``y.shape + (d,)``.

    Forward-over-reverse: a tangent sweep along ``v``, then the adjoint sweep
    and its derivative along ``v`` (:func:`xderiv.engine.backward.hvp_sweep`): about
    four forward passes, whatever ``d``.

    Parameters
    ----------
    v : array (d,) shared by the batch, or (..., d) one per point
    """
    if is_graph(net):
        s = Setup(net, x)
        xp = s.xp
        rows = one_direction(s, v)
        eye = s.eye()
        if rows.ndim == 2:
            seeds = xp.concat([eye, eye + rows, rows], axis=0)
        else:
            eyes = xp.broadcast_to(eye, (s.n, s.d, s.d))
            seeds = xp.concat([eyes, eyes + rows, rows], axis=1)
        _, _, second = s.run(Taylor(2), seeds, chunk_size)
        d = s.d
        out = second[d : 2 * d, ...] - second[:d, ...] - second[2 * d :, ...]
        return s.shape(lead_last(out, 1, xp))

    def kernel(call: Call, tape: Tape, seed: Array) -> tuple:
        n, m, d = call.n, call.m, call.d
        _, dot = hvp_sweep(tape, tangent_sweep(tape, seed))
        if dot is None:
            out = call.ctx.xp.zeros((n, m, d), dtype=call.ctx.dtype, device=call.ctx.device)
        else:
            out = call.ctx.xp.reshape(materialize(dot, (n, m, 1, d), call.ctx.xp), (n, m, d))
        return (potential_hvp(call.terms, out, seed),)

    network = as_network(net)
    if isinstance(network, Composite):
        return by_product_rule(
            network, x, lambda leaf: hvp(leaf, x, v, chunk_size=chunk_size), 1, hvp_cross(v), "auto", chunk_size
        )
    return run(
        network,
        x,
        HVP,
        kernel,
        trailing=[(network.in_features,)],
        extras=lambda call: direction_seed(call, v, "v"),
        rows=lambda seed: 1,
        chunk_size=chunk_size,
    )[0]


def _plan(d: int, a: dict) -> Need:
    chain = {"forward": "a tangent sweep along v, then the adjoints and their derivative along v"}
    return Need(HVP, 1, chain, "Taylor jets of order 2 along e_i, e_i + v and v (polarisation, 2 (2 d + 1) terms)")


register_plan(hvp, _plan)
