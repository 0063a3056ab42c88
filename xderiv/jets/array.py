r"""The jet array: a value with its Taylor or Hessian terms, behaving as an Array API array.

A :class:`JetArray` is what a function written against the Array API receives in place of
``x`` when xderiv differentiates it (:func:`xderiv.function`).  ``array_namespace(x)``
returns the jet namespace (:mod:`xderiv.jets.namespace`), whose functions apply the rules
of :mod:`xderiv.jets.rules`; operators (``+``, ``*``, ``@``, ``**``, indexing) do the
same.  Its ``shape``, ``ndim``, ``dtype`` and ``device`` are those of the value it stands
for, so code that reads shapes runs unchanged.  Python branches on its values are refused
(``bool(x > 0)`` raises): a derivative must not depend on which branch a point takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..backends.namespace import Array, array_namespace_of, device_of
from .kinds import Kind


@dataclass(frozen=True)
class Seed:
    """What an operator's input jet is: the points, the directions' rows, and whether they are the axes."""

    x: Array
    """The points, ``(n, d)``."""
    directions: Array | None
    """``(r, d)`` shared, ``(n, r, d)`` per point, or None for a Hessian jet (along the axes)."""
    axes: bool
    """True when the directions are :math:`e_1, \\dots, e_d` in order."""


_METER: list[float] = []
"""While an operator measures one point (:func:`metered`): the largest jet array made, in bytes."""


def metered(evaluate: Any) -> tuple[Any, float]:
    """``evaluate()`` and the size in bytes of the largest jet array it made (all its terms together)."""
    _METER.append(0.0)
    try:
        out = evaluate()
    finally:
        peak = _METER.pop()
    return out, peak


def _meter(terms: tuple[Array | None, ...]) -> None:
    total = 0.0
    for t in terms:
        if t is not None:
            count = 1
            for s in t.shape:
                count *= int(s)
            total += count * array_namespace_of(t).finfo(t.dtype).bits / 8
    _METER[-1] = max(_METER[-1], total)


class JetArray:
    """An array :math:`u` of shape ``shape`` with its jet terms (see :mod:`xderiv.jets.kinds`).

    Attributes
    ----------
    terms : tuple
        ``terms[k]`` is term ``k`` of the jet, an array of shape ``lead_k + shape``
        (broadcastable to it), or None where it is zero.  ``terms[0]`` is the value,
        with lead axes of length one.
    kind : Taylor or Hessian
        What the terms mean and how two of them multiply.
    shape : tuple of int
        Shape of the value (the value term's shape after its lead axes), read once at construction.
    seed : Seed or None
        For the jet of an operator's input ``x`` itself, what it was seeded with, so that a chain of
        layers called on it runs its own recursions (:func:`xderiv.jets.function.evaluate`).  None
        for every jet computed from it.
    """

    __slots__ = ("terms", "kind", "seed", "shape")

    __array_ufunc__ = None
    """NumPy scalars and arrays defer to the jet's reflected operators (``np.float64(2) * jet`` is a jet)."""

    def __init__(self, terms: tuple[Array | None, ...], kind: Kind, seed: Seed | None = None) -> None:
        self.terms = tuple(terms)
        self.kind = kind
        self.seed = seed
        self.shape: tuple[int, ...] = tuple(self.terms[0].shape[kind.lead :])  # type: ignore[union-attr]
        if _METER:
            _meter(self.terms)

    # ------------------------------------------------------------------ what it stands for
    @property
    def xp(self) -> Any:
        """The namespace of the terms (the backend's, not the jet namespace)."""
        return array_namespace_of(self.terms[0])

    @property
    def lead(self) -> int:
        """Number of lead axes in front of every term."""
        return self.kind.lead

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        out = 1
        for s in self.shape:
            out *= int(s)
        return out

    @property
    def dtype(self) -> Any:
        return self.terms[0].dtype  # type: ignore[union-attr]

    @property
    def device(self) -> Any:
        return device_of(self.terms[0])

    @property
    def value(self) -> Array:
        """The value as a plain array of shape ``shape``."""
        t = self.terms[0]
        return self.xp.reshape(t, self.shape)

    def __array_namespace__(self, api_version: str | None = None) -> Any:
        return _namespace.namespace_for(self.xp)

    def __repr__(self) -> str:
        return f"JetArray(shape={self.shape}, dtype={self.dtype}, kind={self.kind!r})"

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d jet array")
        return int(self.shape[0])

    # ------------------------------------------------------------------ refused: value-dependent Python
    def _refuse(self, what: str) -> Any:
        raise TypeError(
            f"{what} of an array that depends on the input being differentiated: the result would depend "
            "on the point's value; use xp.where(...) or take the value before differentiating"
        )

    def __bool__(self) -> bool:
        return self._refuse("bool()")

    def __float__(self) -> float:
        return self._refuse("float()")

    def __int__(self) -> int:
        return self._refuse("int()")

    def __index__(self) -> int:
        return self._refuse("index()")

    def __setitem__(self, key: Any, value: Any) -> None:
        raise TypeError(
            "in-place assignment into an array being differentiated is not supported; build the array "
            "with xp.concat/xp.stack/xp.where instead"
        )

    # ------------------------------------------------------------------ hooks for xderiv objects
    def __xderiv_elementwise__(self, derivatives: Any) -> JetArray:
        """:math:`\\sigma(u)` elementwise, from ``derivatives(z, order) -> (σ, σ', ..., σ^(order))``."""
        return _rules.compose(self, derivatives)

    def __xderiv_network__(self, net: Any) -> JetArray:
        """An xderiv network (or composite) evaluated on this jet (:func:`xderiv.jets.function.evaluate`)."""
        return _function.evaluate(net, self)

    # ------------------------------------------------------------------ operators
    def __neg__(self) -> JetArray:
        return _rules.scale(self, -1.0)

    def __pos__(self) -> JetArray:
        return self

    def __add__(self, other: Any) -> Any:
        return _rules.add(self, other)

    def __radd__(self, other: Any) -> Any:
        return _rules.add(other, self)

    def __sub__(self, other: Any) -> Any:
        return _rules.subtract(self, other)

    def __rsub__(self, other: Any) -> Any:
        return _rules.subtract(other, self)

    def __mul__(self, other: Any) -> Any:
        return _rules.multiply(self, other)

    def __rmul__(self, other: Any) -> Any:
        return _rules.multiply(other, self)

    def __truediv__(self, other: Any) -> Any:
        return _rules.divide(self, other)

    def __rtruediv__(self, other: Any) -> Any:
        return _rules.divide(other, self)

    def __pow__(self, other: Any) -> Any:
        return _rules.power(self, other)

    def __rpow__(self, other: Any) -> Any:
        return _rules.power(other, self)

    def __matmul__(self, other: Any) -> Any:
        return _rules.matmul(self, other)

    def __rmatmul__(self, other: Any) -> Any:
        return _rules.matmul(other, self)

    def __getitem__(self, key: Any) -> JetArray:
        return _rules.getitem(self, key)

    def __abs__(self) -> JetArray:
        return _rules.elementwise("abs", self)

    # comparisons compare values: masks are constants of the jet
    def __lt__(self, other: Any) -> Array:
        return self.value < _rules.value_of(other)

    def __le__(self, other: Any) -> Array:
        return self.value <= _rules.value_of(other)

    def __gt__(self, other: Any) -> Array:
        return self.value > _rules.value_of(other)

    def __ge__(self, other: Any) -> Array:
        return self.value >= _rules.value_of(other)

    def __eq__(self, other: Any) -> Array:  # type: ignore[override]
        return self.value == _rules.value_of(other)

    def __ne__(self, other: Any) -> Array:  # type: ignore[override]
        return self.value != _rules.value_of(other)

    __hash__ = None  # type: ignore[assignment]

    @property
    def mT(self) -> JetArray:
        return _rules.matrix_transpose(self)

    @property
    def T(self) -> JetArray:
        if self.ndim != 2:
            raise ValueError(f".T needs a 2-D array, this one has shape {self.shape}; use .mT or permute_dims")
        return _rules.permute_dims(self, (1, 0))


# The modules below build JetArrays: imported once this class exists.
from . import function as _function  # noqa: E402
from . import namespace as _namespace  # noqa: E402
from . import rules as _rules  # noqa: E402
