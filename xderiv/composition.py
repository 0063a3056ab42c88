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
from typing import Any

import array_api_compat

from ._namespace import Array


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
    ms = {p.out_features for p in parts if not p.scalar}
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
        d = {p.in_features for p in parts}
        if len(d) != 1:
            raise ValueError(
                f"{owner}: parts take {[p.in_features for p in parts]} inputs; composed networks share one input"
            )
        xps = {id(p.xp) for p in parts}
        if len(xps) != 1:
            names = [getattr(p.xp, "__name__", repr(p.xp)) for p in parts]
            raise TypeError(f"{owner}: parts hold weights of different array libraries {names}; use one")
        devices = [p.device for p in parts]
        if any(dev != devices[0] for dev in devices[1:]):
            raise ValueError(f"{owner}: parts hold weights on different devices {devices}; move them to one")
        self.parts = tuple(parts)
        self.in_features = parts[0].in_features
        self.out_features, self.scalar = _outputs(self.parts, owner)

    @property
    def xp(self) -> Any:
        """Namespace of the parts' weights."""
        return self.parts[0].xp

    @property
    def device(self) -> Any:
        """Device of the parts' weights."""
        return self.parts[0].device

    @property
    def dtype(self) -> Any:
        """Promoted dtype of the parts' weights."""
        return self.xp.result_type(*[p.dtype for p in self.parts])

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
    """A network's value, a first derivative and a second-order quantity at a batch of points.

    All keep the output axis: ``value`` is ``batch + (m,)``, ``first`` is
    ``batch + (m,) + first_tail`` and ``second`` ``batch + (m,) + second_tail``
    (the tails are the operator's, e.g. ``(d,)`` and ``(d, d)`` for the
    Hessian).  ``first``/``second`` are None where the operator needs neither.
    """

    value: Array
    first: Array | None = None
    second: Array | None = None


Leaf = Callable[[Any, Any], tuple[Array, Array | None, Array | None]]
Cross = Callable[[Array, Array], Array]


@dataclass(frozen=True)
class Rule:
    """How one operator evaluates a leaf network and combines two factors.

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


VALUE_RULE = Rule(leaf=lambda net, x: (net(x), None, None))


def _expand(a: Array, rank: int, xp: Any) -> Array:
    """``a`` with ``rank`` trailing axes of length one (to multiply a derivative of that rank)."""
    return xp.reshape(a, tuple(a.shape) + (1,) * rank)


def _add(a: Array | None, b: Array | None) -> Array | None:
    if a is None:
        return b
    return a if b is None else a + b


def _leaf_jet(net: Any, x: Any, rule: Rule) -> Jet:
    value, first, second = rule.leaf(net, x)
    if not net.scalar:
        return Jet(value, first, second)
    xp = array_api_compat.array_namespace(value)
    nb = value.ndim  # a scalar network's value is batch-shaped: its output axis goes at the end of the batch

    def keep(a: Array | None) -> Array | None:
        return None if a is None else xp.reshape(a, tuple(a.shape[:nb]) + (1,) + tuple(a.shape[nb:]))

    return Jet(keep(value), keep(first), keep(second))  # type: ignore[arg-type]


def _jet(net: Any, x: Any, rule: Rule, seen: dict[int, Jet]) -> Jet:
    """``net``'s jet; ``seen`` holds the leaves evaluated so far (a network used twice is evaluated once)."""
    if not isinstance(net, Composite):
        if id(net) not in seen:
            seen[id(net)] = _leaf_jet(net.resolve(), x, rule)
        return seen[id(net)]
    jets = [_jet(p, x, rule, seen) for p in net.parts]
    xp = array_api_compat.array_namespace(jets[0].value)
    if isinstance(net, Scaled):
        (j,) = jets
        c = net.factor
        return Jet(c * j.value, None if j.first is None else c * j.first, None if j.second is None else c * j.second)
    if isinstance(net, Sum):
        value, first, second = jets[0].value, jets[0].first, jets[0].second
        for j in jets[1:]:
            value, first, second = value + j.value, _add(first, j.first), _add(second, j.second)
        return Jet(value + net.offset if net.offset else value, first, second)
    f, g = jets
    value = f.value * g.value
    first = second = None
    if f.first is not None and g.first is not None:
        fv, gv = _expand(f.value, rule.first_rank, xp), _expand(g.value, rule.first_rank, xp)
        first = fv * g.first + gv * f.first
    if f.second is not None and g.second is not None and rule.cross is not None:
        fv, gv = _expand(f.value, rule.second_rank, xp), _expand(g.value, rule.second_rank, xp)
        second = fv * g.second + gv * f.second + rule.cross(f.first, g.first)  # type: ignore[arg-type]
    return Jet(value, first, second)


def _drop_output_axis(a: Array | None, nb: int, xp: Any) -> Array | None:
    return None if a is None else xp.reshape(a, tuple(a.shape[:nb]) + tuple(a.shape[nb + 1 :]))


def fold(net: Composite, x: Any, rule: Rule) -> Jet:
    """Evaluate ``rule`` on every leaf of ``net`` and combine up the tree.

    Returns the composite's :class:`Jet` in public shapes: with the output
    axis, or without it when the composite is scalar.
    """
    jet = _jet(net, x, rule, {})
    if not net.scalar:
        return jet
    xp = array_api_compat.array_namespace(jet.value)
    nb = jet.value.ndim - 1
    return Jet(
        _drop_output_axis(jet.value, nb, xp),  # type: ignore[arg-type]
        _drop_output_axis(jet.first, nb, xp),
        _drop_output_axis(jet.second, nb, xp),
    )
