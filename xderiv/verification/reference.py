r"""What an operator is checked against: the quantities of the one-point function ``xd.value(net, p)``.

:class:`Reference` computes the value, and from the Jacobian and Hessian (which subclasses supply)
the directional derivatives, the biharmonic and mixed partials; :mod:`~xderiv.verification.check`
supplies finite differences, :mod:`~xderiv.interop.autodiff` nested autodiff.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import array_api_compat

from .. import operators as ops

Array = Any
Estimate = tuple[Array, Array | None]
"""A reference array and an estimate of its absolute error (``None``: exact up to round-off)."""

AUTODIFF: list[Any] = []
"""The nested-autodiff reference factory, ``(net, x) -> Reference`` for torch and JAX arrays: registered by
:mod:`xderiv.interop.autodiff` (the array libraries are imported there, on use)."""


def register_autodiff(factory: Any) -> None:
    """Register the autodiff reference factory (once, at import of :mod:`xderiv.interop.autodiff`)."""
    AUTODIFF[:] = [factory]


def _namespace(a: Array) -> Any:
    return array_api_compat.array_namespace(a)


def _eye(xp: Any, d: int, dtype: Any, device: Any) -> Array:
    return xp.eye(d, dtype=dtype, device=device)


def _rows(xp: Any, a: Array, n: int, p: int, batch: tuple[int, ...], trailing: int) -> Array:
    """The first ``p`` of ``n`` points' rows of a per-point argument, or a shared one broadcast to ``p`` rows."""
    tail = tuple(a.shape[a.ndim - trailing :]) if trailing else ()
    if a.ndim == len(batch) + trailing and tuple(a.shape[: len(batch)]) == batch and batch:
        return xp.reshape(a, (n, *tail))[:p, ...]
    if a.ndim != trailing:
        raise ValueError(f"xd.check: an argument of shape {tuple(a.shape)} is neither shared nor one per point")
    return xp.broadcast_to(a[None, ...], (p, *tail))


def _contract1(xp: Any, J: Array, V: Array) -> Array:
    """:math:`J v` for each direction: ``J`` (P, *out, d), ``V`` (P, d, r) -> (P, *out, r)."""
    extra = J.ndim - 2
    Vb = xp.reshape(V, (V.shape[0],) + (1,) * extra + tuple(V.shape[1:]))
    return xp.sum(J[..., None] * Vb, axis=-2)


def _contract2(xp: Any, H: Array, V: Array) -> Array:
    """:math:`v^\\top H v` for each direction: ``H`` (P, *out, d, d), ``V`` (P, d, r) -> (P, *out, r)."""
    extra = H.ndim - 3
    Vb = xp.reshape(V, (V.shape[0],) + (1,) * extra + tuple(V.shape[1:]))
    return xp.sum(Vb * (H @ Vb), axis=-2)


def _weighted(xp: Any, est: Estimate, weights: Sequence[float]) -> Estimate:
    r""":math:`\sum_i w_i a_i` over the last axis, with the error bound :math:`\sum_i |w_i| e_i`."""
    a, e = est
    w = xp.asarray([float(c) for c in weights], dtype=a.dtype, device=array_api_compat.device(a))
    return xp.sum(a * w, axis=-1), (None if e is None else xp.sum(e * xp.abs(w), axis=-1))


def _pair_rows(d: int) -> tuple[list[list[float]], list[tuple[int, int]]]:
    """The directions :math:`e_i`, then :math:`e_i + e_j, e_i - e_j` for :math:`i < j`, as rows."""
    pairs = [(i, j) for i in range(d) for j in range(i + 1, d)]
    rows = [[float(i == k) for k in range(d)] for i in range(d)]
    for i, j in pairs:
        rows.append([float(k == i) + float(k == j) for k in range(d)])
        rows.append([float(k == i) - float(k == j) for k in range(d)])
    return rows, pairs


def _shared(xp: Any, P: Array, rows: list[list[float]]) -> Array:
    """Directions given as rows, as the (P, d, r) array shared by every point."""
    V = xp.asarray(rows, dtype=P.dtype, device=array_api_compat.device(P)).T
    return xp.broadcast_to(V[None, ...], (P.shape[0], *V.shape))


def _unit_rows(counts: Sequence[int]) -> list[tuple[list[int], float]]:
    r"""Directions :math:`j` and weights of :math:`\partial^\alpha = \frac{1}{K!}\sum_{0<j\le\alpha}
    (-1)^{|\alpha-j|}\binom{\alpha}{j}\partial_j^K` (:math:`K = |\alpha|`)."""
    order = sum(counts)
    out = []
    ranges = [range(a + 1) for a in counts]
    for j in _product(ranges):
        if not any(j):
            continue
        w = 1.0
        for a, ji in zip(counts, j, strict=True):
            w *= math.comb(a, ji)
        sign = -1.0 if (order - sum(j)) % 2 else 1.0
        out.append((list(j), sign * w / math.factorial(order)))
    return out


def _product(ranges: list[range]) -> list[tuple[int, ...]]:
    out: list[tuple[int, ...]] = [()]
    for r in ranges:
        out = [p + (i,) for p in out for i in r]
    return out


@functools.cache
def _stencil(order: int) -> tuple[tuple[int, float], ...]:
    """Weights of the central difference of ``order`` on the offsets :math:`-J..J`, :math:`J = \\lceil k/2\\rceil`.

    Solves :math:`\\sum_o w_o o^q / q! = \\delta_{qk}` for :math:`q = 0..2J` exactly (fractions):
    the symmetric stencil whose error is a series in :math:`h^2`.
    """
    half = (order + 1) // 2
    offsets = list(range(-half, half + 1))
    n = len(offsets)
    rows = [[Fraction(o) ** q / math.factorial(q) for o in offsets] + [Fraction(int(q == order))] for q in range(n)]
    for c in range(n):  # Gauss-Jordan elimination on exact fractions
        pivot = next(r for r in range(c, n) if rows[r][c] != 0)
        rows[c], rows[pivot] = rows[pivot], rows[c]
        rows[c] = [v / rows[c][c] for v in rows[c]]
        for r in range(n):
            if r != c and rows[r][c] != 0:
                rows[r] = [a - rows[r][c] * b for a, b in zip(rows[r], rows[c], strict=True)]
    return tuple((o, float(rows[i][-1])) for i, o in enumerate(offsets) if rows[i][-1] != 0)


# --------------------------------------------------------------------------- references


class Reference:
    """The quantities of the one-point function :math:`f(p) = ` ``xd.value(net, p)`` an operator is checked against.

    This base class computes them by central differences (:class:`Differences`); the autodiff
    references of :mod:`xderiv.interop.autodiff` override each method with exact ones.  Every
    method takes the checked points ``P`` of shape ``(P, d)`` (float64) and returns
    :data:`Estimate` pairs with the point axis first and ``out`` the value's trailing shape.
    """

    name = "reference"
    exact = True

    def __init__(self, net: Any, xp: Any) -> None:
        self.net, self.xp = net, xp

    def value(self, P: Array) -> Estimate:
        """:math:`f(p)`, (P, *out)."""
        return ops.value(self.net, P), None

    def jacobian(self, P: Array) -> Estimate:  # pragma: no cover - overridden
        """:math:`\\partial f / \\partial p_i`, (P, *out, d)."""
        raise NotImplementedError

    def hessian(self, P: Array) -> Estimate:  # pragma: no cover - overridden
        """:math:`\\partial^2 f / \\partial p_i \\partial p_j`, (P, *out, d, d)."""
        raise NotImplementedError

    def taylor(self, P: Array, V: Array, order: int) -> list[Estimate]:
        """:math:`g^{(k)}(0)`, :math:`g(t) = f(p + t v)`, for :math:`k = 0..K`; ``V`` (P, d, r) -> each (P, *out, r).

        Orders up to 2 from the Jacobian and Hessian (:math:`J v`, :math:`v^\\top H v`).
        """
        xp = self.xp
        y, _ = self.value(P)
        out: list[Estimate] = [(xp.broadcast_to(y[..., None], tuple(y.shape) + (V.shape[-1],)), None)]
        if order >= 1:
            J, e = self.jacobian(P)
            out.append((_contract1(xp, J, V), None if e is None else _contract1(xp, e, xp.abs(V))))
        if order >= 2:
            H, e = self.hessian(P)
            out.append((_contract2(xp, H, V), None if e is None else _contract2(xp, e, xp.abs(V))))
        if order >= 3:
            out.extend(self.higher(P, V, order)[3:])
        return out

    def higher(self, P: Array, V: Array, order: int) -> list[Estimate]:  # pragma: no cover - overridden
        """:meth:`taylor` to any order (the orders above 2 are read from it)."""
        raise NotImplementedError

    def biharmonic(self, P: Array) -> Estimate:
        """:math:`\\Delta^2 f = \\sum_{ij} \\partial_i^2 \\partial_j^2 f`, (P, *out).

        From fourth directional derivatives: with :math:`T = \\nabla^4 f`,
        :math:`T[e_i \\pm e_j]^4 = T_{iiii} \\pm 4T_{iiij} + 6T_{iijj} \\pm 4T_{ijjj} + T_{jjjj}`, so
        :math:`T_{iijj} = (g^{(4)}_{e_i+e_j} + g^{(4)}_{e_i-e_j} - 2T_{iiii} - 2T_{jjjj}) / 12`.
        """
        xp = self.xp
        d = P.shape[-1]
        rows, pairs = _pair_rows(d)
        g4 = self.taylor(P, _shared(xp, P, rows), 4)[4]
        return _weighted(xp, g4, [1.0 - (d - 1) / 3.0] * d + [1.0 / 6.0] * (2 * len(pairs)))

    def partial(self, P: Array, alpha: Sequence[int]) -> Estimate:
        r""":math:`\partial^\alpha f`, (P, *out), from directional derivatives of order :math:`|\alpha|`."""
        xp = self.xp
        order = sum(alpha)
        if order == 0:
            return self.value(P)
        rows = _unit_rows(alpha)
        gK = self.taylor(P, _shared(xp, P, [[float(v) for v in r] for r, _ in rows]), order)[order]
        return _weighted(xp, gK, [w for _, w in rows])
