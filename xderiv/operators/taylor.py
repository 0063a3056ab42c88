r"""Beyond second order: Taylor mode (``taylor``) and any mixed partial derivative (``partial``).

:func:`taylor` carries the truncated Taylor series of :math:`t \mapsto y(x + t v)`
through the network in one forward sweep (:mod:`xderiv.engine.higher_sweeps`), giving the exact
directional derivatives :math:`\partial_v^k y = \frac{d^k}{dt^k} y(x + tv)\big|_{t=0}`
for :math:`k = 0, \dots, K`.  Mixed partial derivatives are exact linear
combinations of such univariate derivatives along a few directions (the
interpolation of Griewank, Utke and Walther), so :func:`partial` (and
:func:`~xderiv.operators.biharmonic.biharmonic_by_directions`) is one multi-direction sweep.

======================================  ============================  =======================================
operator                                result shape                  cost (rows carried per layer)
======================================  ============================  =======================================
``taylor(net, x, v, order=K)``          ``K + 1`` arrays, ``y.shape``  ``K`` per direction (+ the value sweep)
                                        (``+ (r,)`` for ``r``
                                        directions)
``partial(net, x, alpha)``              ``y.shape``                   ``(|alpha| - 1) p + 1`` for ``p`` lines
                                                                      (``p < prod(alpha_i + 1)``)
======================================  ============================  =======================================

Every activation needs :math:`\sigma', \dots, \sigma^{(K)}`; all built-ins supply
them to any order (:mod:`xderiv.activations`), a registered one through
``nth_derivative``.  Composites (``f + g``, ``f * g``, ``c * f``) follow Leibniz's
rule on the Taylor coefficients (:class:`TaylorRule`).  Cost row: :func:`taylor_quantity`; a
Potential adds :func:`potential_taylor`; on a graph, a Taylor jet of order ``K`` along the directions
(the top term collapsed for ``partial``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..activations import order_error
from ..backends.namespace import Array, check_int, device_of, materialize
from ..engine.call import Call, per_point, run
from ..engine.cost import Dims, Quantity, register
from ..engine.explain import Need, register_plan
from ..engine.forward import Tape
from ..engine.higher_sweeps import taylor_sweep
from ..engine.potential import PotentialTerms
from ..engine.series import add, cauchy, mul
from ..jets import is_graph
from ..jets.call import Setup, direction_rows, lead_last, one_direction
from ..jets.kinds import Taylor
from ..models.composition import Composite, Leaf, Terms, fold
from ..models.networks import as_network
from .directions import multi_index, partial_directions
from .first_order import value


def taylor_quantity(order: int) -> Quantity:
    r"""Taylor mode of order :math:`K` along ``k`` directions (:mod:`xderiv.engine.higher_sweeps`): one row per order.

    Forward only.  Per point: the value sweep keeps :math:`\sigma', \dots, \sigma^{(K)}` of every layer
    (:math:`K - 2` more than :meth:`~xderiv.engine.cost.Dims.kept` counts), and at the widest layer the
    sweep holds the carried coefficients, their pre-activations and activations (``3 K`` rows of ``k``)
    and the Bell table of Faà di Bruno's formula (:math:`K(K - 1)/2` more).
    """

    def memory(s: Dims, direction: str, k: int) -> float:
        rows = 3.0 * order + order * (order - 1) / 2.0 + 1.0
        return rows * k * s.widest + max(order - 2, 0) * s.widest * s.depth

    return Quantity(f"taylor{order}", order, memory)


TAYLOR = register(taylor_quantity(4))
"""The fourth-order row; other orders build theirs with :func:`taylor_quantity` per call."""


def potential_taylor(
    terms: PotentialTerms, coeffs: list[Array], x: Array, seed: Array, weights: Array | None = None
) -> list[Array]:
    r"""Normalised Taylor coefficients ``[y_0, ..., y_K]`` (each (n, m, r)) plus those of :math:`q(x + tv)`.

    :math:`q(x + tv) = q(x) + t\,\nabla q(x) \cdot v + t^2\, \tfrac12 v^\top A v` exactly, so only
    :math:`y_1` and :math:`y_2` change (the value, :math:`y_0`, takes :meth:`~.PotentialTerms.add_value` before the
    direction axis is added).  ``seed`` holds the directions as rows, (r, d) or (n, r, d).  With
    ``weights`` the top coefficient is the collapsed :math:`\sum_\rho \omega_\rho y_{K,\rho}`
    (direction axis of length 1).
    """
    xp, order = terms.ctx.xp, len(coeffs) - 1
    out = list(coeffs)
    extra: list[Array | None] = [None, None, None]
    grad = terms.gradient(x)
    if grad is not None and order >= 1:
        first = grad @ xp.matrix_transpose(seed) if seed.ndim == 2 else xp.sum(grad[:, None, :] * seed, axis=-1)
        extra[1] = first[:, None, :]  # (n, 1, r)
    if terms.a is not None and order >= 2:
        second = 0.5 * xp.sum(terms.times_a(seed) * seed, axis=-1)  # v^T A v = v^T A_s v: (r,) or (n, r)
        extra[2] = second if second.ndim == 1 else second[:, None, :]
    for k in (1, 2):
        e = extra[k]
        if e is None:
            continue
        if k == order and weights is not None:
            e = xp.sum(weights * e, axis=-1, keepdims=True)
        out[k] = out[k] + e
    return out


@dataclass(frozen=True)
class TaylorRule:
    r"""Taylor mode: terms are the normalised coefficients :math:`y_0, \dots, y_K` along the directions.

    A product is Leibniz's rule on normalised coefficients, the Cauchy product
    :math:`(fg)_k = \sum_{j=0}^{k} f_j\, g_{k-j}` (:func:`xderiv.engine.series.cauchy`).

    Attributes
    ----------
    leaf : callable ``(network, x) -> (y_0, ..., y_K)``
    order : int
        :math:`K`.
    rank : int
        Trailing axes of every coefficient after the output axis: 1 with a
        direction axis ``r``, 0 for a single direction.
    weights : tuple of float (one per direction), optional
        The top coefficient is collapsed, :math:`\sum_\rho \omega_\rho y_{K,\rho}`
        (direction axis of length 1, see :mod:`xderiv.engine.higher_sweeps`); the lower ones
        carry the direction axis.  Their products stay exact because
        :math:`y_0` is the same along every direction.
    """

    leaf: Leaf
    order: int
    rank: int = 0
    weights: tuple[float, ...] | None = None

    @property
    def ranks(self) -> tuple[int, ...]:
        return (self.rank,) * (self.order + 1)

    def multiply(self, f: Terms, g: Terms, xp: Any) -> Terms:
        order = self.order
        out = [cauchy(f, g, k) for k in range(order + (self.weights is None))]
        if self.weights is not None:
            mixed = None
            for j in range(1, order):
                mixed = add(mixed, mul(f[j], g[order - j]))
            f0, g0 = f[0], g[0]
            assert f0 is not None and g0 is not None
            top = add(mul(f0[..., :1], g[order]), mul(g0[..., :1], f[order]))
            if mixed is not None:
                w = xp.asarray(self.weights, dtype=mixed.dtype, device=device_of(mixed))
                top = add(top, xp.sum(w * mixed, axis=-1, keepdims=True))
            out.append(top)
        return tuple(out)


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
        return potential_taylor(call.terms, out, call.x, seed, w)

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
        return _graph_taylor(net, x, v, order, weights, chunk_size)
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
        return _graph_partial(net, x, alpha, chunk_size)
    network = as_network(net)
    counts = multi_index(alpha, network.in_features)
    order = sum(counts)
    if order == 0:
        return value(network, x, chunk_size=chunk_size)
    rows, weights = partial_directions(counts)
    return _combination(network, x, [[float(a) for a in row] for row in rows], weights, order, chunk_size)


def _graph_taylor(
    net: Any, x: Any, v: Any, order: int, weights: Sequence[float] | None = None, chunk_size: int | None = None
) -> tuple[Array, ...]:
    r""":math:`(y, \partial_v y, \dots, \partial_v^K y)` along one or ``r`` directions (see :func:`xderiv.taylor`)."""
    order = check_int(order, "order", 0)
    s = Setup(net, x)
    xp = s.xp
    if not hasattr(v, "shape"):
        raise TypeError(f"v must be an array of shape (d,), x.shape, (d, r) or x.shape[:-1] + (d, r), got {v!r}")
    vshape = tuple(v.shape)
    if len(vshape) == 1 or vshape == s.batch + (s.d,):
        rows, multi = one_direction(s, v), False
    else:
        rows, multi = direction_rows(s, v, None, "taylor"), True
    r = int(rows.shape[-2])
    summed = None
    if weights is not None:
        summed = [float(w) for w in weights]
        if not multi or order < 1 or len(summed) != r:
            raise ValueError(
                f"weights sum the top derivative over r directions: give r = {r} numbers with v of shape (d, r) "
                f"or x.shape[:-1] + (d, r) and order >= 1; got {len(summed)} weights, v of shape {vshape} and "
                f"order {order}"
            )
    kind = Taylor(order, None if summed is None else s.weights(summed))
    terms = s.run(kind, rows, chunk_size)
    out = []
    for k, t in enumerate(terms):
        t = float(math.factorial(k)) * t if k >= 2 else t
        if kind.collapsed(k):
            out.append(s.shape(t[0, ...]))
        elif multi:
            t = xp.broadcast_to(t, (r,) + tuple(t.shape[1:])) if k == 0 else t
            out.append(s.shape(lead_last(t, 1, xp)))
        else:
            out.append(s.shape(t[0, ...]))
    return tuple(out)


def graph_combination(
    s: Setup, rows: Sequence[Sequence[float]], weights: Sequence[float], order: int, chunk: Any
) -> Array:
    r""":math:`\sum_\rho \omega_\rho\, y_{K,\rho}` (normalised) along ``rows``, the top term collapsed."""
    directions = s.xp.asarray([[float(a) for a in row] for row in rows], dtype=s.ctx.dtype, device=s.ctx.device)
    terms = s.run(Taylor(order, s.weights(weights)), directions, chunk)
    return s.shape(terms[-1][0, ...])


def _graph_partial(net: Any, x: Any, alpha: Sequence[int], chunk_size: int | None = None) -> Array:
    r""":math:`\partial^\alpha y` from one Taylor jet of order :math:`|\alpha|` (:func:`xderiv.partial`)."""
    s = Setup(net, x)
    counts = multi_index(alpha, s.d)
    order = sum(counts)
    if order == 0:
        return value(net, x, chunk_size=chunk_size)
    rows, weights = partial_directions(counts)
    return graph_combination(s, rows, weights, order, chunk_size)


def _plan_taylor(d: int, a: dict) -> Need:
    order, v, x = check_int(a["order"], "order", 0), a["v"], a["x"]
    vshape = tuple(getattr(v, "shape", ()))
    r = 1 if len(vshape) <= 1 or vshape == tuple(getattr(x, "shape", ())) else int(vshape[-1])
    chain = {"forward": f"Taylor mode of order {order} along {r} direction(s) (taylor_sweep)"}
    return Need(taylor_quantity(order), r, chain, f"a Taylor jet of order {order} along {r} direction(s)")


def _plan_partial(d: int, a: dict) -> Need:
    counts = multi_index(a["alpha"], d)
    order = sum(counts)
    rows, _ = partial_directions(counts) if order else ([[0.0] * d], None)
    p = len(rows)
    chain = {"forward": f"Taylor mode of order {order} along {p} directions, the top one collapsed"}
    return Need(taylor_quantity(order), p, chain, f"a Taylor jet of order {order} along {p} directions")


register_plan(taylor, _plan_taylor)
register_plan(partial, _plan_partial)
