r"""The biharmonic :math:`\Delta^2 y = \sum_{i,j} \partial_i^2 \partial_j^2 y`: ``biharmonic``, exact or estimated.

======================================  ============================  =======================================
operator                                result shape                  cost (rows carried per layer)
======================================  ============================  =======================================
``biharmonic(net, x)``                  ``y.shape``                   ``d(d+1)/2 + 2d + 2``
``biharmonic_by_directions(net, x)``    ``y.shape``                   ``3 d^2 + 1`` (``3 d(d-1) + 1`` at d = 4)
``biharmonic(net, x,``                  ``y.shape``                   ``3 k + 1`` (Gaussian estimate, unbiased)
``estimator="gaussian", samples=k)``
======================================  ============================  =======================================

Cost row :data:`BIHARMONIC` (forward only).  A Potential's quadratic adds nothing; composites follow
the product rule of :class:`BiharmonicRule`.  On a graph: a Taylor jet of order 4 along
:func:`~xderiv.operators.directions.biharmonic_directions`, the top term collapsed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..backends.namespace import Array, materialize
from ..engine.call import Call, run
from ..engine.cost import Dims, Quantity, register
from ..engine.explain import Need, register_plan
from ..engine.forward import Tape
from ..engine.higher_sweeps import forward_biharmonic
from ..jets import is_graph
from ..jets.call import Setup
from ..models.composition import Composite, fold
from ..models.networks import as_network
from .directions import biharmonic_directions
from .estimators import ESTIMATORS, check_samples, check_seed, draw_directions
from .first_order import resolved
from .hessian import potential_hessian
from .laplacian import potential_trace
from .taylor import _check_activations, _combination, graph_combination, taylor, taylor_quantity


def _memory(s: Dims, direction: str, k: int) -> float:
    # gradient, packed Hessian (with its pair products, gathers and one unpacked copy of d^2 rows), gradient
    # of the Laplacian, Laplacian and bi-Laplacian, before and after the layer's product; the 3rd and 4th
    # derivatives of the activations
    d = s.d
    return (6.0 * d * (d + 1) / 2.0 + d * d + 6.0 * d + 6.0) * s.widest + 2.0 * s.widest * s.depth


BIHARMONIC = register(Quantity("biharmonic", 4, _memory))
"""The forward biharmonic (:func:`xderiv.engine.higher_sweeps.forward_biharmonic`)."""


def _rows(a: Array | None, call: Call, k: int) -> Array:
    """A carried ``(n, k, m)`` (or shared ``(k, m)``) array as ``(n, m, k)``; zeros for None."""
    xp, ctx = call.ctx.xp, call.ctx
    if a is None:
        return xp.zeros((call.n, call.m, k), dtype=ctx.dtype, device=ctx.device)
    return xp.matrix_transpose(materialize(a, (call.n, k, call.m), xp, ctx.device))


def _fourth_order(network: Any, x: Any, full: bool, chunk_size: int | None) -> tuple[Array, ...]:
    """``(bilap,)``, or with ``full`` ``(value, grad, hess, grad_lap, lap, bilap)``, of a leaf network."""
    _check_activations(network, 4)
    d = network.in_features

    def kernel(call: Call, tape: Tape) -> tuple:
        jet = forward_biharmonic(tape)
        bilap = _rows(jet.bilap, call, 1)[..., 0]
        if not full:
            return (bilap,)
        xp = call.ctx.xp
        packed = _rows(jet.hess, call, d * (d + 1) // 2)
        hess = xp.reshape(xp.take(packed, jet.pairs.full, axis=-1), (call.n, call.m, d, d))
        return (
            call.terms.add_value(tape.y, call.x),
            call.terms.add_jacobian(_rows(jet.grad, call, d), call.x),
            potential_hessian(call.terms, hess),
            _rows(jet.grad_lap, call, d),
            potential_trace(call.terms, _rows(jet.lap, call, 1)[..., 0], None),
            bilap,
        )

    trailing: list[tuple[int, ...] | None] = [(), (d,), (d, d), (d,), (), ()] if full else [()]
    return tuple(run(network, x, BIHARMONIC, kernel, trailing=trailing, chunk_size=chunk_size))  # type: ignore[arg-type]


@dataclass(frozen=True)
class BiharmonicRule:
    r"""Products for :func:`biharmonic`: terms :math:`(f, \nabla f, \nabla^2 f, \nabla\Delta f, \Delta f, \Delta^2 f)`.

    .. math::

        \Delta^2 (fg) &= f\,\Delta^2 g + g\,\Delta^2 f
            + 4 (\nabla f \cdot \nabla\Delta g + \nabla\Delta f \cdot \nabla g) + 2\,\Delta f\, \Delta g
            + 4\, \langle \nabla^2 f, \nabla^2 g \rangle_F, \\
        \nabla\Delta (fg) &= f\,\nabla\Delta g + g\,\nabla\Delta f + \Delta g\, \nabla f + \Delta f\, \nabla g
            + 2 (\nabla^2 f\, \nabla g + \nabla^2 g\, \nabla f),

    and the product rules of the gradient, Hessian and Laplacian.
    """

    leaf: Any

    @property
    def ranks(self) -> tuple[int, ...]:
        return (0, 1, 2, 1, 0, 0)

    def multiply(self, f: tuple, g: tuple, xp: Any) -> tuple:
        fv, fg, fh, fgl, fl, fb = f
        gv, gg, gh, ggl, gl, gb = g

        def vec(a: Array) -> Array:
            return a[..., None]

        def mat(a: Array) -> Array:
            return a[..., None, None]

        def dot(a: Array, b: Array) -> Array:
            return xp.sum(a * b, axis=-1)

        def matvec(h: Array, v: Array) -> Array:
            return xp.sum(h * v[..., None, :], axis=-1)

        outer = fg[..., :, None] * gg[..., None, :]
        return (
            fv * gv,
            vec(fv) * gg + vec(gv) * fg,
            mat(fv) * gh + mat(gv) * fh + outer + xp.matrix_transpose(outer),
            vec(fv) * ggl + vec(gv) * fgl + vec(gl) * fg + vec(fl) * gg + 2.0 * (matvec(fh, gg) + matvec(gh, fg)),
            fv * gl + gv * fl + 2.0 * dot(fg, gg),
            fv * gb
            + gv * fb
            + 4.0 * (dot(fg, ggl) + dot(fgl, gg))
            + 2.0 * fl * gl
            + 4.0 * xp.sum(xp.sum(fh * gh, axis=-1), axis=-1),
        )


def biharmonic(
    net: Any,
    x: Array,
    *,
    chunk_size: int | None = None,
    estimator: str | None = None,
    samples: int | None = None,
    seed: Any = None,
    per_point: bool | None = None,
) -> Array:
    r"""Biharmonic :math:`\Delta^2 y_k = \sum_{i,j} \partial_i^2 \partial_j^2 y_k`, exact or estimated, ``y.shape``.

    One fourth-order forward sweep (:func:`xderiv.engine.higher_sweeps.forward_biharmonic`): every unit carries
    its gradient, its Hessian (packed, :math:`d(d+1)/2` rows), the gradient of its Laplacian, its
    Laplacian and its bi-Laplacian; an activation combines them by the fourth-order Faà di Bruno
    formula contracted over :math:`(i, i, j, j)`,

    .. math:: \Delta^2 \sigma(z) = \sigma'''' G^2 + \sigma''' (2 L G + 4\, g^\top H g)
              + \sigma'' (2 \lVert H \rVert_F^2 + 4\, g \cdot \nabla L + L^2) + \sigma' \Delta^2 z

    (:math:`g, H, L` the gradient, Hessian and Laplacian of :math:`z`, :math:`G = \lVert g\rVert^2`).
    Cost: per layer :math:`d(d+1)/2 + 2d + 2` rows through each matrix product (170 at
    :math:`d = 16`), and a few elementwise passes over the packed Hessians.

    The same number from univariate Taylor coefficients (:func:`biharmonic_directions`: the axes
    and :math:`e_i \pm e_j`, :math:`d^2` directions of order 4, the fourth coefficient collapsed)
    carries :math:`3d^2 + 1` rows: exact too (the tests check one against the other), and 2 to 3
    times slower.  No formula from directions needs fewer than :math:`d(d+1)/2` of them (the rank
    of :math:`\lVert x\rVert^4` as a sum of fourth powers of linear forms), each carrying three
    coefficients; the Hessian carried here is what any exact method carries, since
    :math:`\Delta^2\sigma(z)` contains :math:`2\sigma''\lVert\nabla^2 z\rVert_F^2`.

    A Potential's :math:`\tfrac12 x^\top A x + c^\top x` adds nothing; composites follow the
    product rule (:class:`BiharmonicRule`).

    ``estimator="gaussian"`` estimates it instead from ``samples = k`` fourth directional
    derivatives along Gaussian directions :math:`v_j \sim N(0, I_d)` (one Taylor sweep of
    order 4, :math:`4k` rows, the top coefficient collapsed to one):

    .. math:: \widehat{\Delta^2 y} = \frac{1}{3k} \sum_{j=1}^k \partial_{v_j}^4 y, \qquad
              E\big[\partial_v^4 y\big] = \sum_{ijkl} T_{ijkl}\, E[v_i v_j v_k v_l] = 3\,\Delta^2 y,

    with :math:`T = \nabla^4 y` (Isserlis: the three pairings of four indices).  Unbiased, with
    variance (eight-index Isserlis: 9 + 72 + 24 of the 105 pairings)

    .. math:: \mathrm{Var}\,\widehat{\Delta^2 y} = \frac{1}{k}\Big(8\,\lVert \nabla^2 \Delta y \rVert_F^2
              + \frac83\, \lVert \nabla^4 y \rVert_F^2\Big),

    at cost :math:`4k` rows per layer instead of :math:`d(d+1)/2 + 2d + 2`.  Only Gaussian
    directions give :math:`E[v_i^4] = 3 = 3 E[v_i^2 v_j^2]`, the weights :math:`\Delta^2`
    needs.  The directions are those of ``laplacian(..., estimator="gaussian")`` for the same
    seed (:mod:`xderiv.operators.estimators`); a composite is estimated whole, along the same
    directions for all its parts.

    Parameters
    ----------
    net : Sequential, Potential, layer or composite
    x : array (..., d)
    chunk_size : int, optional
    estimator : {None, "gaussian"}
        None (default): exact.
    samples : int
        ``k`` directions (with an estimator).
    seed : int, 0-d integer array or numpy.random.Generator
        As in :func:`xderiv.laplacian`: the same seed, the same directions, on every backend.
    per_point : bool, optional
        Directions per point (default) or shared by the batch.
    """
    if is_graph(net) and estimator is None and samples is None and seed is None and per_point is None:
        return _graph_biharmonic(net, x, chunk_size)
    if estimator is not None:
        return _estimated_biharmonic(net, x, chunk_size, estimator, samples, seed, per_point)
    if samples is not None or seed is not None or per_point is not None:
        raise TypeError(
            "samples=, seed= and per_point= belong to a randomized estimate: pass estimator='gaussian', "
            "or leave them out for the exact biharmonic"
        )
    network = as_network(net)
    if isinstance(network, Composite):
        rule = BiharmonicRule(lambda part, x: _fourth_order(part, x, True, chunk_size))
        out = fold(network, x, rule).terms[-1]
        assert out is not None
        return out
    return _fourth_order(network, x, False, chunk_size)[0]


def _estimated_biharmonic(
    net: Any, x: Array, chunk_size: int | None, estimator: Any, samples: Any, seed: Any, per_point: bool | None
) -> Array:
    r""":math:`\frac{1}{3k}\sum_j \partial^4_{v_j} y` along Gaussian directions, by one weighted Taylor sweep."""
    if estimator != "gaussian":
        raise ValueError(
            f"biharmonic's estimator must be None (exact) or 'gaussian', got {estimator!r}: "
            "E[d^4 y / dt^4 (x + t v)] = 3 biharmonic(y) holds for Gaussian directions v"
        )
    k = check_samples(samples)
    check_seed(seed)
    network, ctx, x, d = resolved(net, x)
    v, _ = draw_directions(ESTIMATORS["gaussian"], k, seed, per_point, ctx, tuple(x.shape[:-1]), d)
    if v.ndim == 2 and tuple(v.shape) == tuple(x.shape):  # (d, k) shared would read as one direction per point
        v = ctx.xp.broadcast_to(v, tuple(x.shape[:-1]) + (d, k))
    return taylor(network, x, v, 4, weights=[1.0 / (3.0 * k)] * k, chunk_size=chunk_size)[-1]


def biharmonic_by_directions(net: Any, x: Array, *, chunk_size: int | None = None) -> Array:
    r""":math:`\Delta^2 y` from one order-4 Taylor sweep along :func:`biharmonic_directions` (:func:`biharmonic`)."""
    if is_graph(net):
        return _graph_biharmonic(net, x, chunk_size)
    network = as_network(net)
    rows, weights = biharmonic_directions(network.in_features)
    return _combination(network, x, rows, weights, 4, chunk_size)


def _graph_biharmonic(net: Any, x: Any, chunk_size: int | None = None) -> Array:
    r""":math:`\Delta^2 y` from one Taylor jet of order 4 along :mod:`~xderiv.operators.directions`."""
    s = Setup(net, x)
    rows, weights = biharmonic_directions(s.d)
    return graph_combination(s, rows, weights, 4, chunk_size)


def _plan(d: int, a: dict) -> Need:
    if a.get("estimator") is not None:
        k = check_samples(a.get("samples"))
        chain = {"forward": f"Taylor mode of order 4 along {k} Gaussian directions, the top one collapsed"}
        return Need(taylor_quantity(4), k, chain, f"a Taylor jet of order 4 along {k} directions")
    rows = len(biharmonic_directions(d)[0])
    chain = {
        "forward": "the forward biharmonic: gradient, packed Hessian, grad of the Laplacian, Laplacian, bi-Laplacian"
    }
    return Need(BIHARMONIC, None, chain, f"a Taylor jet of order 4 along {rows} directions, the top term collapsed")


def _plan_by_directions(d: int, a: dict) -> Need:
    rows = len(biharmonic_directions(d)[0])
    chain = {"forward": f"Taylor mode of order 4 along {rows} directions, the top one collapsed"}
    return Need(taylor_quantity(4), rows, chain, f"a Taylor jet of order 4 along {rows} directions")


register_plan(biharmonic, _plan)
register_plan(biharmonic_by_directions, _plan_by_directions)
