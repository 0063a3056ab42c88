r"""What a jet carries, and the one place where its kinds differ: how two first-order parts multiply.

A jet of a quantity :math:`u(x)` holds truncated Taylor coefficients of :math:`u(x + t v)`
in :math:`t`, *normalised* (:math:`u_k = \partial_v^k u / k!`), as arrays with a few
*lead* axes in front of :math:`u`'s own shape (the *primal* shape):

========================  ====================  =============================================
kind                      lead axes             term ``k`` (``k >= 1``)
========================  ====================  =============================================
:class:`Taylor` (``K``)   ``(r,)``              :math:`u_k` along each of ``r`` directions
:class:`Taylor` with      ``(r,)``, the top     the top one is :math:`\sum_\rho \omega_\rho\,
``weights``               one ``(1,)``          u_{K,\rho}` (a Laplacian is ``K = 2``,
                                                :math:`\omega = 1`, directions :math:`e_i`)
:class:`Hessian`          ``(D, 1)``, ``(P, 1)``  :math:`u_1`: the ``D`` first derivatives;
                                                :math:`u_2`: half the ``D x D`` Hessian, packed:
                                                its ``P = D(D+1)/2`` entries ``i <= j``
========================  ====================  =============================================

The value (term 0) has lead axes of length one.  ``None`` stands for a term that is exactly
zero.  Every rule of :mod:`xderiv.jets.rules` is written once with truncated power series
(:mod:`xderiv.engine.series`): a linear map moves every term, a product is Leibniz's rule
(the Cauchy product), a function of one variable is Faà di Bruno's formula.  The kinds
differ in one operation only, :meth:`Taylor.pair` / :meth:`Hessian.pair`: the product of
two terms of orders :math:`i, j \ge 1` landing in term :math:`k = i + j`.  Along one
direction it is the plain product; collapsed to the weighted sum when it lands in a
collapsed top term; and for a Hessian the symmetrised outer product
:math:`\tfrac12 (a_i b_j + a_j b_i)` of two first-order rows, which is what
:math:`\tfrac12 \partial_i \partial_j (ab) = a\,\tfrac12 \partial_{ij} b + b\,\tfrac12 \partial_{ij} a
+ \tfrac12 (\partial_i a\,\partial_j b + \partial_j a\,\partial_i b)` needs.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..backends.namespace import Array, array_namespace_of
from ..backends.primitives import Primitives, primitives

Op = Callable[[Array, Array], Array]

_OPS: dict[int, tuple[Any, Primitives]] = {}
"""Each backend namespace's fused primitives, chosen once (:func:`ops_of`)."""


def ops_of(xp: Any) -> Primitives:
    """The fused primitives of the namespace ``xp`` (:func:`~xderiv.backends.primitives.primitives`), once each."""
    hit = _OPS.get(id(xp))
    if hit is None or hit[0] is not xp:
        hit = _OPS[id(xp)] = (xp, primitives(xp))
    return hit[1]


@dataclass(frozen=True)
class Taylor:
    r"""``order`` normalised Taylor coefficients along ``r`` directions (lead axis ``(r,)``).

    Attributes
    ----------
    order : int
        :math:`K \ge 0`.
    weights : array (r,) or None
        With weights the top coefficient is carried as :math:`\sum_\rho \omega_\rho u_{K,\rho}`
        (lead axis of length one), which costs one row instead of ``r`` in every linear map:
        a Laplacian, a trace along directions, an estimator, a partial derivative.
    """

    order: int
    weights: Array | None = None
    unit: bool = False
    """True when every weight is 1 (a Laplacian, a trace): the collapse is a plain sum."""
    lead: int = 1

    def collapsed(self, k: int) -> bool:
        """True when term ``k`` is the collapsed top coefficient."""
        return self.weights is not None and k == self.order

    def pair(self, a: Array, b: Array, k: int, op: Op = operator.mul) -> Array:
        """``op(a, b)`` per direction for terms of orders >= 1 summing to ``k`` (weighted and summed at the top).

        An elementwise product landing in the collapsed top term is contracted over the
        directions in one primitive (:attr:`~xderiv.backends.primitives.Primitives.lead_dot`,
        :math:`\\sum_\\rho \\omega_\\rho a_\\rho b_\\rho`: no ``(r, ...)`` temporary where the
        namespace has a fused form).
        """
        if not self.collapsed(k):
            return op(a, b)
        xp = array_namespace_of(a)
        if op is operator.mul:
            return ops_of(xp).lead_dot(a, b, None if self.unit else self.weights, xp)
        out = op(a, b)
        if self.unit:
            return ops_of(xp).lead_sum(out, xp)
        w = self.weights
        assert w is not None
        w = xp.reshape(w, (w.shape[0],) + (1,) * (out.ndim - 1))
        return ops_of(xp).lead_sum(w * out, xp)


@dataclass(frozen=True)
class Hessian:
    r"""Value, ``D`` first derivatives (lead ``(D, 1)``) and half the Hessian, packed (lead ``(P, 1)``).

    ``order`` is 2; there is no collapsed term.  The second term holds the entries
    :math:`i \le j` of the symmetric :math:`\tfrac12 \nabla^2 u` in the order of ``pairs``
    (:class:`~xderiv.engine.higher_sweeps.Pairs`: ``first``/``second`` their :math:`i, j`, ``full`` the
    stored row of every :math:`(i, j)`), ``P = D(D+1)/2`` rows instead of ``D^2`` through every linear
    map and elementwise pass.

    Attributes
    ----------
    pairs : Pairs
        The packing, with its index arrays on the call's device.
    """

    pairs: Any
    order: int = 2
    weights: None = None
    lead: int = 2

    def collapsed(self, k: int) -> bool:
        return False

    def pair(self, a: Array, b: Array, k: int, op: Op = operator.mul) -> Array:
        r""":math:`\tfrac12 (\mathrm{op}(a_i, b_j) + \mathrm{op}(a_j, b_i))` for first-order rows ``a``, ``b``,
        at the packed pairs :math:`i \le j` (``(D, 1, ...)`` rows in, ``(P, 1, ...)`` out)."""
        xp = array_namespace_of(a)
        ai, aj = self.rows(a, self.pairs.first, xp), self.rows(a, self.pairs.second, xp)
        if a is b and op is operator.mul:  # a_i a_j is symmetric already
            return ai * aj
        bi, bj = self.rows(b, self.pairs.first, xp), self.rows(b, self.pairs.second, xp)
        return 0.5 * (op(ai, bj) + op(aj, bi))

    @staticmethod
    def rows(a: Array, index: Array, xp: Any) -> Array:
        """Rows ``index`` of ``a`` along its first axis (a row broadcast over every direction stays one row)."""
        return a if a.shape[0] == 1 else xp.take(a, index, axis=0)

    def pack(self, full: Array, xp: Any) -> Array:
        """A symmetric ``(D, D, ...)`` lead as the packed ``(P, 1, ...)`` one."""
        d = int(full.shape[0])
        flat = xp.reshape(full, (d * d,) + tuple(full.shape[2:]))
        return xp.expand_dims(xp.take(flat, self.pairs.first * d + self.pairs.second, axis=0), axis=1)

    def unpack(self, packed: Array, xp: Any) -> Array:
        """The packed ``(P, 1, ...)`` lead as the full symmetric ``(D, D, ...)`` one."""
        d = math.isqrt(int(self.pairs.full.shape[0]))
        full = xp.take(packed[:, 0, ...], self.pairs.full, axis=0)
        return xp.reshape(full, (d, d) + tuple(packed.shape[2:]))


Kind = Taylor | Hessian
