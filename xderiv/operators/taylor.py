r"""Beyond second order: Taylor mode, and the exact higher-order operators built on it.

:func:`taylor` carries the truncated Taylor series of :math:`t \mapsto y(x + t v)`
through the network in one forward sweep (:mod:`xderiv.engine.higher_sweeps`), giving the exact
directional derivatives :math:`\partial_v^k y = \frac{d^k}{dt^k} y(x + tv)\big|_{t=0}`
for :math:`k = 0, \dots, K`.  Mixed partial derivatives are exact linear
combinations of such univariate derivatives along a few directions (the
interpolation of Griewank, Utke and Walther), so :func:`biharmonic` and
:func:`partial` are one multi-direction sweep each.

======================================  ============================  =======================================
operator                                result shape                  cost (rows carried per layer)
======================================  ============================  =======================================
``taylor(net, x, v, order=K)``          ``K + 1`` arrays, ``y.shape``  ``K`` per direction (+ the value sweep)
                                        (``+ (r,)`` for ``r``
                                        directions)
``biharmonic(net, x)``                  ``y.shape``                   ``3 d^2 + 1`` (``3 d(d-1) + 1`` at d = 4)
``partial(net, x, alpha)``              ``y.shape``                   ``(|alpha| - 1) p + 1`` for ``p`` lines
                                                                      (``p < prod(alpha_i + 1)``)
``biharmonic(net, x,``                  ``y.shape``                   ``3 k + 1`` (Gaussian estimate, unbiased)
``estimator="gaussian", samples=k)``
======================================  ============================  =======================================

Every activation needs :math:`\sigma', \dots, \sigma^{(K)}`; all built-ins supply
them to any order (:mod:`xderiv.activations`), a registered one through
``nth_derivative``.  Composites (``f + g``, ``f * g``, ``c * f``) follow Leibniz's
rule on the Taylor coefficients (:class:`xderiv.models.composition.TaylorRule`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..activations import order_error
from ..backends.namespace import Array, array_namespace_of, check_int, materialize
from ..engine.call import Call, per_point, run
from ..engine.cost import BIHARMONIC, TAYLOR
from ..engine.cost import taylor as taylor_quantity
from ..engine.forward import Tape
from ..engine.higher_sweeps import forward_biharmonic, taylor_sweep
from ..jets import JetArray, is_graph
from ..jets import call as graph
from ..jets.function import register_chain_path
from ..jets.kinds import Hessian
from ..models.composition import Composite, TaylorRule, fold
from ..models.networks import as_network
from .directions import biharmonic_directions, multi_index, partial_directions
from .estimators import ESTIMATORS, check_samples, check_seed, draw_directions
from .jacobian_hessian import derivatives, resolved, value


def _check_activations(network: Any, order: int) -> None:
    """Refuse, before any work, an order some layer's activation cannot differentiate to."""
    if order <= 2:
        return
    for i, layer in enumerate(network.plan.layers):
        act = layer.activation
        if act.max_order is not None and order > act.max_order:
            raise ValueError(f"layer {i} ({layer!r}): {order_error(act, order)}")


def _layout(network: Any, x: Any, v: Any) -> tuple[bool, int]:
    """Whether ``v`` holds several directions (as columns), and how many: ``(multi, r)``."""
    d = network.in_features
    if not hasattr(v, "shape"):
        raise TypeError(f"v must be an array of shape (d,), x.shape, (d, r) or x.shape[:-1] + (d, r), got {v!r}")
    vshape, xshape = tuple(v.shape), tuple(getattr(x, "shape", ()))
    if len(vshape) == 1 or vshape == xshape:
        return False, 1
    if len(vshape) >= 2 and vshape[-2] == d:
        return True, int(vshape[-1])
    raise ValueError(
        f"v has shape {vshape}; expected ({d},) or x.shape = {xshape} (one direction, shared or per point), "
        f"or ({d}, r) or x.shape[:-1] + ({d}, r) (r directions as columns)"
    )


def _seed(call: Call, v: Any, multi: bool, r: int) -> tuple[tuple[Array, bool]]:
    """The directions as rows: (r, d) shared or (n, r, d) per point."""
    if multi:
        s, pp = per_point(call, v, "v", (call.d, r))
        return ((call.ctx.xp.matrix_transpose(s), pp),)
    a, pp = per_point(call, v, "v", (call.d,))
    return ((a[..., None, :], pp),)


def _coefficients(
    network: Any,
    x: Any,
    v: Any,
    order: int,
    multi: bool,
    r: int,
    chunk_size: int | None,
    weights: tuple[float, ...] | None = None,
) -> tuple[Array, ...]:
    """Normalised Taylor coefficients :math:`y_0, \\dots, y_K` in public shapes (``batch + (m,) [+ (r,)]``).

    With ``weights`` (one per direction) the top one is collapsed,
    :math:`\\sum_\\rho \\omega_\\rho\\, y_{K,\\rho}`, with a direction axis of length 1.
    """
    if isinstance(network, Composite):

        def leaf(part: Any, x: Any) -> tuple:
            return _coefficients(part, x, v, order, multi, r, chunk_size, weights)

        return fold(network, x, TaylorRule(leaf, order, 1 if multi else 0, weights)).terms  # type: ignore[return-value]
    _check_activations(network, order)

    def kernel(call: Call, tape: Tape, seed: Array) -> list[Array]:
        xp, ctx = call.ctx.xp, call.ctx
        n, m = call.n, call.m
        w = None if weights is None else xp.asarray(weights, dtype=ctx.dtype, device=ctx.device)
        ys = taylor_sweep(tape, seed, order, w) if order else [None]
        out = [materialize(call.terms.add_value(tape.y, call.x)[:, :, None], (n, m, r), xp, ctx.device)]
        for k in range(1, order + 1):
            rk = 1 if w is not None and k == order else r
            c = ys[k]
            if c is None:
                out.append(xp.zeros((n, m, rk), dtype=ctx.dtype, device=ctx.device))
            else:
                out.append(xp.matrix_transpose(materialize(c, (n, rk, m), xp, ctx.device)))
        return call.terms.add_taylor(out, call.x, seed, w)

    tail = (r,) if multi else ()
    trailing: list[tuple[int, ...] | None] = [tail] * (order + 1)
    if weights is not None and order:
        trailing[-1] = (1,)
    out = run(
        network,
        x,
        TAYLOR if order == TAYLOR.order else taylor_quantity(order),
        kernel,
        trailing=trailing,
        extras=lambda call: _seed(call, v, multi, r),
        rows=lambda seed: seed.shape[-2],
        chunk_size=chunk_size,
    )
    return tuple(out)  # type: ignore[arg-type]


def taylor(
    net: Any,
    x: Array,
    v: Array,
    order: int,
    *,
    weights: Sequence[float] | None = None,
    chunk_size: int | None = None,
) -> tuple[Array, ...]:
    r"""Exact directional derivatives :math:`(y, \partial_v y, \partial_v^2 y, \dots, \partial_v^K y)` by Taylor mode.

    .. math:: \partial_v^k y(x) = \frac{d^k}{dt^k}\, y(x + t v)\Big|_{t=0}
              = \sum_{|\beta| = k} \frac{k!}{\beta!}\, v^\beta\, \partial^\beta y(x),

    e.g. :math:`\partial_v y = \nabla y \cdot v` and :math:`\partial_v^2 y = v^\top \nabla^2 y\, v`.
    One forward sweep carries the normalised Taylor coefficients
    :math:`y_k = \partial_v^k y / k!` of :math:`y(x + tv)` through every layer: a linear map
    moves each coefficient with one matrix product, an activation combines them by
    Faà di Bruno's formula with :math:`\sigma', \dots, \sigma^{(K)}` at the layer's
    pre-activation (:mod:`xderiv.engine.higher_sweeps`), a residual step adds them, and a
    Potential's :math:`\tfrac12 x^\top A x + c^\top x` adds :math:`\nabla q \cdot v` and
    :math:`v^\top A v` exactly.  Cost about :math:`K` forward passes per direction
    after the value sweep; no derivative tensor is formed.

    Parameters
    ----------
    net : Sequential, Potential, layer or composite
    x : array (..., d)
    v : array
        The direction(s), in one of four layouts:

        - ``(d,)``: one direction shared by every point;
        - ``x.shape``: one direction per point;
        - ``(d, r)``: ``r`` directions as columns (the convention of
          :func:`xderiv.trace_hessian`), shared by every point;
        - ``x.shape[:-1] + (d, r)``: ``r`` directions per point.

        A ``v`` of exactly ``x.shape`` is read as one direction per point (this
        decides the one ambiguous case, ``x`` of shape ``(d, d)`` with ``r = d``).
    order : int
        :math:`K \ge 0`.  Orders above 2 need :math:`\sigma^{(k)}` of every
        activation to order :math:`K`: all built-ins have them; a registered
        activation without ``nth_derivative`` raises a ``ValueError`` naming it.
    weights : sequence of r numbers, optional
        With ``r`` directions and :math:`K \ge 1`: return the top entry as the
        weighted sum :math:`\sum_\rho \omega_\rho\, \partial_{v_\rho}^K y` (shape
        ``y.shape``) instead of one per direction, e.g. ``1/(3r)`` each for the
        Gaussian estimate :math:`\Delta^2 y \approx \frac{1}{3r}\sum_\rho \partial^4_{v_\rho} y`.
        The sum is carried through the sweep (the top coefficient enters every
        layer linearly): one row instead of ``r`` in its matrix products.
    chunk_size : int, optional
        Points per chunk; by default as many as fit the memory budget.

    Returns
    -------
    tuple of K + 1 arrays
        ``(y, d1, ..., dK)`` with ``dk`` :math:`= \partial_v^k y` (derivatives, not
        divided by :math:`k!`), each of shape ``y.shape`` for one direction, or
        ``y.shape + (r,)`` for ``r`` directions (the value too, repeated along
        the direction axis, so that the entries stack; with ``weights`` the
        last is the weighted sum, of shape ``y.shape``).

    Examples
    --------
    >>> import numpy as np, xderiv as xd
    >>> net = xd.mlp([2, 8, 1], activation="tanh", seed=0)
    >>> y, d1, d2, d3 = xd.taylor(net, np.zeros((5, 2)), np.array([1.0, 0.0]), order=3)
    >>> d3.shape
    (5, 1)
    """
    if is_graph(net):
        return graph.taylor(net, x, v, order, weights, chunk_size)
    network = as_network(net)
    order = check_int(order, "order", 0)
    multi, r = _layout(network, x, v)
    summed = None
    if weights is not None:
        summed = tuple(float(w) for w in weights)
        if not multi or order < 1 or len(summed) != r:
            raise ValueError(
                f"weights sum the top derivative over r directions: give r = {r if multi else 'the number of'} "
                f"numbers with v of shape (d, r) or x.shape[:-1] + (d, r) and order >= 1; got {len(summed)} "
                f"weights, v of shape {tuple(v.shape)} and order {order}"
            )
    coeffs = _coefficients(network, x, v, order, multi, r, chunk_size, summed)
    out = [c if k < 2 else float(math.factorial(k)) * c for k, c in enumerate(coeffs)]
    if summed is not None:
        out[-1] = out[-1][..., 0]
    return tuple(out)


def _combination(
    network: Any, x: Any, rows: list[list[float]], weights: list[float], order: int, chunk_size: int | None
) -> Array:
    r""":math:`\sum_\rho \omega_\rho\, y_{K,\rho}` along the directions ``rows`` (the top coefficient collapsed)."""
    xp, d = network.xp, network.in_features
    columns = xp.asarray([[row[i] for row in rows] for i in range(d)], dtype=network.dtype, device=network.device)
    top = _coefficients(network, x, columns, order, True, len(rows), chunk_size, tuple(weights))[-1]
    return top[..., 0]


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
            call.terms.add_hessian(hess),
            _rows(jet.grad_lap, call, d),
            call.terms.add_trace(_rows(jet.lap, call, 1)[..., 0], None),
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
        return graph.biharmonic(net, x, chunk_size)
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
        return graph.biharmonic(net, x, chunk_size)
    network = as_network(net)
    rows, weights = biharmonic_directions(network.in_features)
    return _combination(network, x, rows, weights, 4, chunk_size)


def partial(net: Any, x: Array, alpha: Sequence[int], *, chunk_size: int | None = None) -> Array:
    r"""The exact partial derivative :math:`\partial^\alpha y` of any order, for a multi-index ``alpha``.

    ``alpha`` counts the derivatives along each coordinate (a multi-index):
    ``partial(net, x, (2, 1, 0))`` is :math:`\partial^3 y / \partial x_0^2 \partial x_1`.
    It is recovered from the :math:`K`-th Taylor coefficients (:math:`K = |\alpha|`)
    along the directions :math:`0 < j \le \alpha` (componentwise), merged by line,

    .. math:: \partial^\alpha y = \frac{1}{K!} \sum_{0 < j \le \alpha} (-1)^{|\alpha - j|}
              \binom{\alpha}{j}\, \partial_j^K y

    (:func:`partial_directions`), in one Taylor sweep of order :math:`K` along those
    :math:`p < \prod_i (\alpha_i + 1)` directions with the top coefficient carried as
    the weighted sum: per layer :math:`(K - 1) p + 1` rows through each matrix product.
    For large :math:`K` the alternating sum loses accuracy (the binomial weights grow
    like :math:`2^K`); up to :math:`K \approx 8` it stays near round-off.

    Parameters
    ----------
    net : Sequential, Potential, layer or composite
    x : array (..., d)
    alpha : sequence of d non-negative ints
    chunk_size : int, optional

    Returns
    -------
    array of shape ``y.shape``
    """
    if is_graph(net):
        return graph.partial(net, x, alpha, chunk_size)
    network = as_network(net)
    counts = multi_index(alpha, network.in_features)
    order = sum(counts)
    if order == 0:
        return value(network, x, chunk_size=chunk_size)
    rows, weights = partial_directions(counts)
    return _combination(network, x, [[float(a) for a in row] for row in rows], weights, order, chunk_size)


def _chain_jet(network: Any, x: JetArray) -> JetArray | None:
    r"""A chain's output jet at an operator's input jet ``x``, from the chain's own recursions.

    A chain of layers inside a graph (a network in a composite with functions, or ``net(x)`` called
    by a function on its input) keeps its fast paths: the Hessian jet from
    :func:`~xderiv.operators.jacobian_hessian` (sum of layers or backward sweeps, the cheaper by the cost model), a
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
        return done([xp.reshape(y, (1, 1, n, -1)), first, 0.5 * lead_first(hess, 2)])
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


register_chain_path(_chain_jet)
