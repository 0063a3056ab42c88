r"""Networks combined by sums, products and scalar factors, with exact derivatives by the product rule.

For networks :math:`f, g` of the same input :math:`x \in \mathbb{R}^d`:

.. math::

    \nabla(fg) &= f\,\nabla g + g\,\nabla f, \\
    \nabla^2(fg) &= f\,\nabla^2 g + g\,\nabla^2 f + \nabla f\,\nabla g^\top + \nabla g\,\nabla f^\top, \\
    \Delta(fg) &= f\,\Delta g + g\,\Delta f + 2\,\nabla f \cdot \nabla g,

and every second-order operator :math:`Q` (Hessian, Laplacian, ``trace_hessian``,
``hessian_diagonal``, ``hvp``, the second directional derivative) follows one pattern,

.. math:: Q(fg) = f\,Q(g) + g\,Q(f) + C(\nabla f, \nabla g),

with a symmetric bilinear *cross term* :math:`C` that each operator states
(:class:`Rule`).  Sums and scalar factors are linear in everything.  So a
composite is evaluated by asking each leaf network for its value, its first
derivative and :math:`Q` (the leaf's own recursions, one pass where the
operator allows) and folding them up the tree (:func:`fold`).  A network
that appears several times in one composite is evaluated once per call.

A hard boundary condition :math:`u = g + \varphi\,N` with :math:`\varphi = 1 - \lVert x\rVert^2`
is ``g + phi * N`` with ``phi = xd.quadratic(-2 * I, b=1.0)``.

Outputs broadcast like this: a scalar network (a :class:`~xderiv.Potential`,
results without an output axis) multiplies or adds to every output of the
other; two networks with output axes need the same number of outputs ``m`` or
``m = 1``.  A composite is scalar only when all its parts are.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..backends.namespace import Array, array_namespace_of
from ..engine.series import add


def _is_number(c: Any) -> bool:
    return isinstance(c, (int, float)) and not isinstance(c, bool)


class Composable:
    """What every network shares: ``+``, ``-``, ``*`` and ``/`` by numbers build composites.

    ``f + g`` is :class:`Sum`, ``f * g`` is :class:`Product`, ``2.0 * f`` and
    ``f / 2`` are :class:`Scaled`, ``f + 1.0`` a :class:`Sum` with an offset.
    Subclasses provide ``in_features``, ``out_features``, ``scalar``, ``xp``,
    ``device``, ``dtype`` and ``resolve()``.
    """

    def resolve(self) -> Any:
        """The object a call evaluates now (itself unless it reads weights from elsewhere)."""
        return self

    def __add__(self, other: Any) -> Composable:
        if _is_number(other):
            return Sum(self, offset=float(other))
        if isinstance(other, Composable):
            return Sum(self, other)
        return NotImplemented

    def __radd__(self, other: Any) -> Composable:
        return self.__add__(other)

    def __neg__(self) -> Composable:
        return Scaled(self, -1.0)

    def __sub__(self, other: Any) -> Composable:
        if _is_number(other):
            return Sum(self, offset=-float(other))
        if isinstance(other, Composable):
            return Sum(self, Scaled(other, -1.0))
        return NotImplemented

    def __rsub__(self, other: Any) -> Composable:
        if _is_number(other):
            return Sum(Scaled(self, -1.0), offset=float(other))
        return NotImplemented

    def __mul__(self, other: Any) -> Composable:
        if _is_number(other):
            return Scaled(self, float(other))
        if isinstance(other, Composable):
            return Product(self, other)
        return NotImplemented

    def __rmul__(self, other: Any) -> Composable:
        return self.__mul__(other)

    def __truediv__(self, other: Any) -> Composable:
        if _is_number(other):
            if other == 0:
                raise ZeroDivisionError("cannot divide a network by zero")
            return Scaled(self, 1.0 / float(other))
        return NotImplemented


def _outputs(parts: tuple[Any, ...], owner: str) -> tuple[int, bool]:
    """Number of outputs and scalarness of a broadcast combination of ``parts``."""
    ms = {p.out_features for p in parts if not p.scalar and p.out_features is not None}
    if len(ms - {1}) > 1:
        raise ValueError(
            f"{owner}: parts have {sorted(ms)} outputs; parts combine when their numbers of outputs "
            "are equal or 1 (a Potential's scalar output broadcasts over the other's)"
        )
    return max(ms or {1}), all(p.scalar for p in parts)


class Composite(Composable):
    """A combination of networks of one input (base of :class:`Sum`, :class:`Product`, :class:`Scaled`).

    Attributes
    ----------
    parts : tuple
        The combined networks (xderiv networks, converted torch modules or composites).
    """

    parts: tuple[Any, ...]

    def __init__(self, *parts: Any) -> None:
        owner = type(self).__name__
        for i, p in enumerate(parts):
            if not isinstance(p, Composable):
                raise TypeError(
                    f"{owner}: part {i} must be an xderiv network (Sequential, Potential, from_torch(...) "
                    f"or a composite), got {type(p).__name__}"
                )
        if not parts:
            raise ValueError(f"{owner}: needs at least one network")
        # a function of x (xd.function) has no weights and may leave d and m open: it adapts to the others
        weighted = [p for p in parts if p.xp is not None]
        d = {p.in_features for p in parts if p.in_features is not None}
        if len(d) > 1:
            raise ValueError(
                f"{owner}: parts take {[p.in_features for p in parts]} inputs; composed networks share one input"
            )
        xps = {id(p.xp) for p in weighted}
        if len(xps) > 1:
            names = [getattr(p.xp, "__name__", repr(p.xp)) for p in weighted]
            raise TypeError(f"{owner}: parts hold weights of different array libraries {names}; use one")
        devices = [p.device for p in weighted]
        if any(dev != devices[0] for dev in devices[1:]):
            raise ValueError(f"{owner}: parts hold weights on different devices {devices}; move them to one")
        self.parts = tuple(parts)
        self.in_features: Any = next(iter(d)) if d else None
        self.out_features, self.scalar = _outputs(self.parts, owner)

    def _weighted(self) -> list[Any]:
        return [p for p in self.parts if p.xp is not None]

    @property
    def xp(self) -> Any:
        """Namespace of the parts' weights (None when no part holds weights: functions of x only)."""
        weighted = self._weighted()
        return weighted[0].xp if weighted else None

    @property
    def device(self) -> Any:
        """Device of the parts' weights."""
        weighted = self._weighted()
        return weighted[0].device if weighted else None

    @property
    def dtype(self) -> Any:
        """Promoted dtype of the parts' weights."""
        weighted = self._weighted()
        return self.xp.result_type(*[p.dtype for p in weighted]) if weighted else None

    def arrays(self) -> list[Array]:
        """Every part's weight arrays (see :meth:`xderiv.Sequential.arrays`), part after part."""
        return [a for p in self.parts for a in p.arrays()]  # type: ignore[attr-defined]

    def with_arrays(self, arrays: list[Array]) -> Composite:
        """The same composite over other weight arrays (the order of :meth:`arrays`)."""
        arrays, parts = list(arrays), []
        for p in self.parts:
            k = len(p.arrays())  # type: ignore[attr-defined]
            parts.append(p.with_arrays(arrays[:k]))  # type: ignore[attr-defined]
            arrays = arrays[k:]
        if arrays:
            raise ValueError(f"with_arrays: {len(arrays)} arrays left over")
        return self._rebuild(tuple(parts))

    def _rebuild(self, parts: tuple[Any, ...]) -> Composite:
        raise NotImplementedError

    def __call__(self, x: Array) -> Array:
        """The composite's value at ``x`` (shape ``(..., d)``): ``(..., m)``, or ``(...,)`` when scalar."""
        on_jet = getattr(x, "__xderiv_network__", None)
        if on_jet is not None:  # called inside a function being differentiated
            return on_jet(self)
        return fold(self, x, VALUE_RULE).value


class Sum(Composite):
    r""":math:`f_1 + f_2 + \dots + c`: the sum of networks of one input (and a constant ``offset``).

    Every derivative is the sum of the parts' derivatives.

    Parameters
    ----------
    *parts : networks
        Networks with the same ``in_features`` (nested sums are flattened).
    offset : float, default 0
        A constant added to the value.
    """

    offset: float

    def __init__(self, *parts: Any, offset: float = 0.0) -> None:
        flat: list[Any] = []
        for p in parts:
            if isinstance(p, Sum):
                flat.extend(p.parts)
                offset += p.offset
            else:
                flat.append(p)
        super().__init__(*flat)
        if not math.isfinite(offset):
            raise ValueError(f"Sum: offset must be finite, got {offset}")
        self.offset = float(offset)

    def _rebuild(self, parts: tuple[Any, ...]) -> Composite:
        return Sum(*parts, offset=self.offset)

    def __repr__(self) -> str:
        terms = " + ".join(repr(p) for p in self.parts)
        return f"Sum({terms}{f' + {self.offset}' if self.offset else ''})"


class Product(Composite):
    r""":math:`f\,g`: the product of two networks of one input, differentiated by the product rule.

    Parameters
    ----------
    f, g : networks
        Same ``in_features``; outputs broadcast (a scalar network scales every
        output of the other).
    """

    def __init__(self, f: Any, g: Any) -> None:
        super().__init__(f, g)

    def _rebuild(self, parts: tuple[Any, ...]) -> Composite:
        return Product(*parts)

    def __repr__(self) -> str:
        return f"Product({self.parts[0]!r}, {self.parts[1]!r})"


class Scaled(Composite):
    """:math:`c\\,f` for a number ``c``: every derivative scaled by ``c``.

    Parameters
    ----------
    f : network
    factor : float
    """

    def __init__(self, f: Any, factor: float) -> None:
        super().__init__(f)
        if not _is_number(factor) or not math.isfinite(factor):
            raise ValueError(f"Scaled: factor must be a finite number, got {factor!r}")
        self.factor = float(factor)

    def _rebuild(self, parts: tuple[Any, ...]) -> Composite:
        return Scaled(parts[0], self.factor)

    def __repr__(self) -> str:
        return f"Scaled({self.factor} * {self.parts[0]!r})"


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class Jet:
    """A network's value and the derivative terms one operator carries, at a batch of points.

    ``terms[0]`` is the value; what follows is the rule's (for :class:`Rule`: a
    first derivative and a second-order quantity; for :class:`TaylorRule`: the
    normalised Taylor coefficients).  All keep the output axis: term ``i`` is
    ``batch + (m,) + tail_i`` with ``len(tail_i) = rule.ranks[i]``.  A term is
    None where the operator needs none.
    """

    terms: tuple[Array | None, ...]

    @property
    def value(self) -> Array:
        return self.terms[0]  # type: ignore[return-value]

    @property
    def first(self) -> Array | None:
        return self.terms[1] if len(self.terms) > 1 else None

    @property
    def second(self) -> Array | None:
        return self.terms[2] if len(self.terms) > 2 else None


Terms = tuple[Array | None, ...]
Leaf = Callable[[Any, Any], Terms]
Cross = Callable[[Array, Array], Array]


class Algebra(Protocol):
    """What :func:`fold` needs of an operator: evaluate a leaf, and multiply two jets.

    Sums and scalar factors are linear in every term, so they need nothing
    more; a product of two networks is the operator's own rule.
    """

    @property
    def leaf(self) -> Leaf:
        """``(network, x) -> terms``: the leaf network's results in its public shapes (no output axis
        for a scalar network), from the leaf's own recursions."""
        ...

    @property
    def ranks(self) -> tuple[int, ...]:
        """Number of trailing axes of each term after the output axis."""
        ...

    def multiply(self, f: Terms, g: Terms, xp: Any) -> Terms:
        """The terms of the product of two networks from theirs (broadcast over outputs)."""
        ...


@dataclass(frozen=True)
class Rule:
    """How a first- or second-order operator evaluates a leaf network and combines two factors.

    Terms ``(value, first, second)``, multiplied by

    .. math:: (fg) = f g, \\quad (fg)' = f g' + g f', \\quad Q(fg) = f\\,Q(g) + g\\,Q(f) + C(f', g').

    Attributes
    ----------
    leaf : callable ``(network, x) -> (value, first, second)``
        The leaf network's results in its public shapes (no output axis for a
        scalar network), from the leaf's own recursions.
    first_rank, second_rank : int
        Number of trailing axes of ``first`` and ``second`` after the output axis.
    cross : callable ``(first_f, first_g) -> array``, optional
        The symmetric cross term :math:`C(\\nabla f, \\nabla g)` of a product, of
        the shape of ``second`` (broadcast over outputs).
    """

    leaf: Leaf
    first_rank: int = 0
    second_rank: int = 0
    cross: Cross | None = None

    @property
    def ranks(self) -> tuple[int, ...]:
        return (0, self.first_rank, self.second_rank)

    def multiply(self, f: Terms, g: Terms, xp: Any) -> Terms:
        fv, gv = f[0], g[0]
        assert fv is not None and gv is not None
        first = second = None
        if f[1] is not None and g[1] is not None:
            first = _expand(fv, self.first_rank, xp) * g[1] + _expand(gv, self.first_rank, xp) * f[1]
        if f[2] is not None and g[2] is not None and self.cross is not None:
            fe, ge = _expand(fv, self.second_rank, xp), _expand(gv, self.second_rank, xp)
            second = fe * g[2] + ge * f[2] + self.cross(f[1], g[1])  # type: ignore[arg-type]
        return (fv * gv, first, second)


VALUE_RULE = Rule(leaf=lambda net, x: (net(x), None, None))


def _expand(a: Array, rank: int, xp: Any) -> Array:
    """``a`` with ``rank`` trailing axes of length one (to multiply a derivative of that rank)."""
    return xp.reshape(a, tuple(a.shape) + (1,) * rank)


def _with_axis(a: Array | None, at: int, xp: Any) -> Array | None:
    """``a`` with an axis of length one inserted ``at`` axes from the end (after the batch)."""
    if a is None:
        return None
    cut = a.ndim - at
    return xp.reshape(a, tuple(a.shape[:cut]) + (1,) + tuple(a.shape[cut:]))


def _without_axis(a: Array | None, at: int, xp: Any) -> Array | None:
    """``a`` without its axis ``at + 1`` from the end (a scalar composite's output axis)."""
    if a is None:
        return None
    cut = a.ndim - at - 1
    return xp.reshape(a, tuple(a.shape[:cut]) + tuple(a.shape[cut + 1 :]))


def _leaf_jet(net: Any, x: Any, rule: Algebra) -> Jet:
    terms = tuple(rule.leaf(net, x))
    if not net.scalar:
        return Jet(terms)
    # a scalar network's results have no output axis: it goes after the batch, before each term's tail
    xp = array_namespace_of(terms[0])
    return Jet(tuple(_with_axis(a, rank, xp) for a, rank in zip(terms, rule.ranks)))


def _jet(net: Any, x: Any, rule: Algebra, seen: dict[int, Jet]) -> Jet:
    """``net``'s jet; ``seen`` holds the leaves evaluated so far (a network used twice is evaluated once)."""
    if not isinstance(net, Composite):
        if id(net) not in seen:
            seen[id(net)] = _leaf_jet(net.resolve(), x, rule)
        return seen[id(net)]
    jets = [_jet(p, x, rule, seen) for p in net.parts]
    xp = array_namespace_of(jets[0].value)
    if isinstance(net, Scaled):
        (j,) = jets
        return Jet(tuple(None if a is None else net.factor * a for a in j.terms))
    if isinstance(net, Sum):
        terms = jets[0].terms
        for j in jets[1:]:
            terms = tuple(add(a, b) for a, b in zip(terms, j.terms))
        if net.offset:
            terms = (terms[0] + net.offset,) + terms[1:]  # type: ignore[operator]
        return Jet(terms)
    f, g = jets
    return Jet(tuple(rule.multiply(f.terms, g.terms, xp)))


def fold(net: Composite, x: Any, rule: Algebra) -> Jet:
    """Evaluate ``rule`` on every leaf of ``net`` and combine up the tree.

    Returns the composite's :class:`Jet` in public shapes: with the output
    axis, or without it when the composite is scalar.
    """
    jet = _jet(net, x, rule, {})
    if not net.scalar:
        return jet
    xp = array_namespace_of(jet.value)
    return Jet(tuple(_without_axis(a, rank, xp) for a, rank in zip(jet.terms, rule.ranks)))
