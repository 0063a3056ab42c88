r"""The rules: every primitive of the Array API on jets, written once for every jet kind and backend.

Three patterns cover the primitives (:mod:`xderiv.jets.kinds` says what a jet holds):

* **linear** maps (``+``, ``-``, scaling, ``reshape``, indexing, ``concat``, ``sum``, a matrix
  product with a constant, ...) move every term the same way: :math:`(Lu)_k = L u_k`;
* **bilinear** maps of two jets (``*``, ``@``) follow Leibniz's rule, the Cauchy product
  :math:`(a \cdot b)_k = \sum_{j=0}^k a_j \cdot b_{k-j}` with the kind's pairing for the
  inner terms (:func:`xderiv.engine.series.cauchy`);
* **functions of one variable** (``exp``, ``log``, ``sin``, ``tanh``, powers, every registered
  activation) follow Faà di Bruno's formula from :math:`f', \dots, f^{(K)}` at the value
  (:func:`xderiv.engine.series.compose`).

Everything else is built from these: division is a product with a reciprocal, ``max`` a
selection, ``var`` a mean of squares, ``tensordot`` reshapes and a matrix product, and the
determinant rules of :mod:`xderiv.jets.linalg` use the same Cauchy products.  A term is
``None`` where it is zero, and the rules skip it.

Terms carry lead axes in front of the primal shape (``lead + shape``) and may be broadcast
along primal axes (the seed's directions are shared by every point); a rule that moves
axes (reshape, indexing, reductions) first broadcasts the terms to the full shape.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Callable, Sequence
from typing import Any

from ..backends.namespace import Array, array_namespace_of, device_of
from ..backends.primitives import Primitives
from ..engine.series import add as series_add
from ..engine.series import cauchy
from ..engine.series import compose as series_compose
from .array import JetArray
from .kinds import Kind, ops_of

Terms = tuple[Array | None, ...]
Derivatives = Callable[[Array, int], Sequence[Any]]


# --------------------------------------------------------------------------- helpers


def is_jet(a: Any) -> bool:
    return isinstance(a, JetArray)


def value_of(a: Any) -> Any:
    """The value of a jet, anything else as it is."""
    return a.value if isinstance(a, JetArray) else a


def kind_of(*args: Any) -> Kind:
    """The kind shared by the jets among ``args`` (one call differentiates with one kind)."""
    kinds = [a.kind for a in args if isinstance(a, JetArray)]
    if any(k is not kinds[0] for k in kinds[1:]):
        raise ValueError(
            "arrays being differentiated by two different xderiv calls met in one operation; "
            "differentiate one function of x per call"
        )
    return kinds[0]


def primal_ndim(a: Any) -> int:
    """Number of axes of the value ``a`` stands for (0 for a Python number)."""
    if isinstance(a, JetArray):
        return len(a.shape)
    shape = getattr(a, "shape", None)
    return 0 if shape is None else len(shape)


def _normalise(axis: int, ndim: int, name: str = "axis") -> int:
    if not -ndim <= axis < ndim:
        raise IndexError(f"{name}={axis} is out of range for an array of {ndim} dimensions")
    return axis % ndim


def _axes(axis: Any, ndim: int) -> tuple[int, ...]:
    """``axis`` (None, int or tuple) as non-negative primal axes."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, int):
        return (_normalise(axis, ndim),)
    return tuple(sorted(_normalise(int(a), ndim) for a in axis))


def _pad(t: Array | None, lead: int, want: int, xp: Any) -> Array | None:
    """Term ``t`` with axes of length one inserted after the lead axes, to ``want`` primal axes."""
    if t is None:
        return None
    have = t.ndim - lead
    if have >= want:
        return t
    shape = tuple(t.shape)
    return xp.reshape(t, shape[:lead] + (1,) * (want - have) + shape[lead:])


def padded(a: JetArray, want: int) -> Terms:
    """``a``'s terms with ``want`` primal axes (leading ones of length one)."""
    if want <= a.ndim:
        return a.terms
    xp = a.xp
    return tuple(_pad(t, a.lead, want, xp) for t in a.terms)


def full_terms(a: JetArray) -> Terms:
    """``a``'s terms broadcast along the primal axes to the full shape (lead axes kept)."""
    xp, lead, shape = a.xp, a.lead, a.shape
    out = []
    for t in a.terms:
        if t is None or tuple(t.shape[lead:]) == shape:
            out.append(t)
        else:
            out.append(xp.broadcast_to(t, tuple(t.shape[:lead]) + shape))
    return tuple(out)


def lift(c: Any, kind: Kind, xp: Any) -> JetArray:
    """A constant as a jet: its value (with lead axes) and zero terms."""
    c = c if hasattr(c, "shape") else xp.asarray(c)
    value = xp.reshape(c, (1,) * kind.lead + tuple(c.shape))
    return JetArray((value,) + (None,) * kind.order, kind)


def linear(a: JetArray, fn: Callable[[Array], Array], *, full: bool = True) -> JetArray:
    """The linear map ``fn`` applied to every term (``fn`` sees the lead axes in front)."""
    terms = full_terms(a) if full else a.terms
    return JetArray(tuple(None if t is None else fn(t) for t in terms), a.kind)


def scale(a: JetArray, c: float) -> JetArray:
    """:math:`c\\,u` for a number ``c``."""
    return JetArray(tuple(None if t is None else c * t for t in a.terms), a.kind)


# --------------------------------------------------------------------------- sums and products


def add(a: Any, b: Any) -> Any:
    """:math:`a + b`: linear in each operand (one addition per term present in both)."""
    if not isinstance(a, JetArray):
        return add(b, a)
    if not isinstance(b, JetArray):
        terms = padded(a, primal_ndim(b))
        return JetArray((terms[0] + b,) + terms[1:], a.kind)
    if b.kind is not a.kind:
        kind_of(a, b)
    want = max(a.ndim, b.ndim)
    return JetArray(tuple(map(series_add, padded(a, want), padded(b, want))), a.kind)


def _minus(x: Array | None, y: Array | None) -> Array | None:
    """``x - y`` with None as zero."""
    if y is None:
        return x
    return -y if x is None else x - y


def subtract(a: Any, b: Any) -> Any:
    """:math:`a - b`: one subtraction per term (a negation where only ``b`` has the term)."""
    if isinstance(a, JetArray) and isinstance(b, JetArray):
        if b.kind is not a.kind:
            kind_of(a, b)
        want = max(a.ndim, b.ndim)
        return JetArray(tuple(map(_minus, padded(a, want), padded(b, want))), a.kind)
    if isinstance(a, JetArray):
        terms = padded(a, primal_ndim(b))
        return JetArray((terms[0] - b,) + terms[1:], a.kind)
    if isinstance(b, JetArray):
        terms = padded(b, primal_ndim(a))
        return JetArray((a - terms[0],) + tuple(None if t is None else -t for t in terms[1:]), b.kind)
    return a - b


def negative(a: Any) -> Any:
    return JetArray(tuple(None if t is None else -t for t in a.terms), a.kind) if is_jet(a) else -a


def _constant_product(a: JetArray, c: Any, op: Callable[[Array, Array], Array], left: bool) -> JetArray:
    """``op(u, c)`` (or ``op(c, u)``) for a constant ``c``: linear in ``u``."""
    terms = padded(a, primal_ndim(c))
    return JetArray(tuple(None if t is None else (op(t, c) if left else op(c, t)) for t in terms), a.kind)


def bilinear(a: Any, b: Any, op: Callable[[Array, Array], Array], want: int | None = None) -> Any:
    """``op(a, b)`` for a bilinear ``op``: Leibniz's rule on jets, linear when one side is constant."""
    if not is_jet(a) and not is_jet(b):
        return op(a, b)
    if not is_jet(b):
        return _constant_product(a, b, op, left=True)
    if not is_jet(a):
        return _constant_product(b, a, op, left=False)
    kind = kind_of(a, b)
    want = max(a.ndim, b.ndim) if want is None else want
    ta, tb = padded(a, want), padded(b, want)

    def pair(x: Array, y: Array, k: int) -> Array:
        return kind.pair(x, y, k, op)

    terms = tuple(cauchy(ta, tb, k, pair=pair, op=op) for k in range(kind.order + 1))
    return JetArray(terms, kind)


def _fma(acc: Array | None, x: Array, y: Array, ops: Primitives) -> Array:
    """``acc + x * y`` where ``acc`` is a fresh array of this rule's (or None): one fused pass."""
    if acc is None:
        return x * y
    if ops.in_place:
        return ops.plus(acc, x * y)
    return ops.addcmul(acc, x, y)


def _elementwise_product(a: JetArray, b: JetArray) -> JetArray:
    r"""Leibniz's rule for :math:`a \odot b`: :math:`(ab)_k = \sum_j a_j b_{k-j}`.

    The inner products (:math:`0 < j < k`) are the kind's pairing (contracted over the
    directions in a collapsed top term); the two outer ones are accumulated into them by
    fused multiply-adds, so term ``k`` costs one pass per product and no extra additions.
    """
    kind = a.kind
    want = max(a.ndim, b.ndim)
    ta, tb = padded(a, want), padded(b, want)
    ops = ops_of(a.xp)
    pair = kind.pair
    terms: list[Array | None] = []
    for k in range(kind.order + 1):
        acc: Array | None = None
        for j in range(1, k):
            x, y = ta[j], tb[k - j]
            if x is not None and y is not None:
                p = pair(x, y, k)
                acc = p if acc is None else acc + p
        x, y = ta[0], tb[k]
        if y is not None:
            acc = _fma(acc, x, y, ops)
        if k:
            x, y = ta[k], tb[0]
            if x is not None:
                acc = _fma(acc, x, y, ops)
        terms.append(acc)
    return JetArray(tuple(terms), kind)


def multiply(a: Any, b: Any) -> Any:
    """:math:`a b` elementwise."""
    if isinstance(a, JetArray):
        if isinstance(b, JetArray):
            if b.kind is not a.kind:
                kind_of(a, b)
            return _elementwise_product(a, b)
        if isinstance(b, numbers.Number):
            return scale(a, b)  # type: ignore[arg-type]
        return _constant_product(a, b, operator.mul, left=True)
    if isinstance(b, JetArray):
        if isinstance(a, numbers.Number):
            return scale(b, a)  # type: ignore[arg-type]
        return _constant_product(b, a, operator.mul, left=False)
    return a * b


def divide(a: Any, b: Any) -> Any:
    """:math:`a / b`: by a constant linearly, by a jet as :math:`a \\cdot b^{-1}`."""
    if not is_jet(b):
        if isinstance(b, numbers.Number):
            return scale(a, 1.0 / float(b))  # type: ignore[arg-type]
        return _constant_product(a, b, lambda x, y: x / y, left=True)
    return multiply(a, power(b, -1))


def _matmul_2d(a: Any, b: Any) -> Any:
    want = max(primal_ndim(a), primal_ndim(b))
    return bilinear(a, b, lambda x, y: x @ y, want)


def matmul(a: Any, b: Any) -> Any:
    """:math:`a\\,b` (matrix product with the Array API's broadcasting of batch axes)."""
    if isinstance(a, JetArray) and not isinstance(b, JetArray) and len(a.shape) >= 2 and primal_ndim(b) == 2:
        return JetArray(tuple(None if t is None else t @ b for t in a.terms), a.kind)  # by a weight matrix
    if primal_ndim(a) == 0 or primal_ndim(b) == 0:
        raise ValueError("matmul needs operands of at least one dimension")
    vec_a, vec_b = primal_ndim(a) == 1, primal_ndim(b) == 1
    a2 = expand_dims(a, 0) if vec_a else a
    b2 = expand_dims(b, -1) if vec_b else b
    out = _matmul_2d(a2, b2)
    if vec_b:
        out = squeeze(out, -1)
    if vec_a:
        out = squeeze(out, -2)
    return out


def tensordot(a: Any, b: Any, axes: Any = 2) -> Any:
    """``tensordot``: contracted axes moved together, reshaped, one matrix product."""
    na, nb = primal_ndim(a), primal_ndim(b)
    if isinstance(axes, int):
        ax_a, ax_b = list(range(na - axes, na)), list(range(axes))
    else:
        ax_a = [_normalise(int(i), na) for i in axes[0]]
        ax_b = [_normalise(int(i), nb) for i in axes[1]]
    free_a = [i for i in range(na) if i not in ax_a]
    free_b = [i for i in range(nb) if i not in ax_b]
    sa, sb = tuple(a.shape), tuple(b.shape)
    size = math.prod(sa[i] for i in ax_a)
    a2 = reshape(permute_dims(a, tuple(free_a + ax_a)), (math.prod(sa[i] for i in free_a), size))
    b2 = reshape(permute_dims(b, tuple(ax_b + free_b)), (size, math.prod(sb[i] for i in free_b)))
    return reshape(matmul(a2, b2), tuple(sa[i] for i in free_a) + tuple(sb[i] for i in free_b))


def vecdot(a: Any, b: Any, axis: int = -1) -> Any:
    """:math:`\\sum_i a_i b_i` along ``axis`` (real arrays)."""
    return sum_(multiply(a, b), axis=axis)


# --------------------------------------------------------------------------- functions of one variable


def _coefficient(p: Any, j: int, normalised: bool) -> Any:
    """:math:`f^{(j)}/j!` from part ``p`` (None for a number 0)."""
    if isinstance(p, numbers.Number):
        if p == 0:
            return None
        return float(p) if normalised else float(p) / math.factorial(j)  # type: ignore[arg-type]
    return p if normalised or j == 1 else p * (1.0 / math.factorial(j))


def compose(a: JetArray, derivatives: Derivatives, normalised: bool = False) -> JetArray:
    r""":math:`f(u)` elementwise by Faà di Bruno's formula.

    ``derivatives(z, K)`` returns :math:`(f(z), f'(z), \dots, f^{(K)}(z))` at the value (numbers
    allowed, 0 for a derivative known to vanish); with ``normalised`` it returns
    :math:`c_j = f^{(j)}(z)/j!` instead (the rules' own functions, which fold the factorials
    into their formulas).  Orders up to 2 (every first- and second-order operator) take the
    formula written out, :math:`a_1 = c_1 z_1` and :math:`a_2 = c_1 z_2 + c_2\,(z_1 z_1)` with
    the kind's pairing for :math:`z_1 z_1` and one fused multiply-add: two passes over the
    first-order rows; higher orders :func:`xderiv.engine.series.compose`.
    """
    kind = a.kind
    order = kind.order
    z = a.terms
    parts = list(derivatives(z[0], order))
    value = parts[0]
    if isinstance(value, numbers.Number):
        value = a.xp.zeros_like(z[0]) + value
    if order == 0:
        return JetArray((value,), kind)
    c: list[Any] = [None] + [_coefficient(parts[j], j, normalised) for j in range(1, order + 1)]
    if order > 2:
        rest = series_compose(c, list(z), order, pair=kind.pair)
        return JetArray((value,) + tuple(rest[1:]), kind)
    c1, z1 = c[1], z[1]
    first = None if c1 is None or z1 is None else c1 * z1
    if order == 1:
        return JetArray((value, first), kind)
    c2, z2 = c[2], z[2]
    second = None if c1 is None or z2 is None else c1 * z2
    if c2 is not None and z1 is not None:
        square = kind.pair(z1, z1, 2)
        if isinstance(c2, float):
            second = c2 * square if second is None else second + c2 * square
        elif second is None:
            second = c2 * square
        else:
            second = ops_of(a.xp).fma(second, c2, square)
    return JetArray((value, first, second), kind)


def _cycle(values: Sequence[Any], order: int) -> list[Any]:
    """``values[0], values[1], ...`` repeated to ``order + 1`` entries (sin, cos, exp, sinh)."""
    return [values[k % len(values)] for k in range(order + 1)]


def _power_parts(z: Array, p: float, order: int, xp: Any) -> list[Any]:
    """:math:`z^p` and its derivatives :math:`p (p-1) \\cdots (p-k+1)\\, z^{p-k}`."""
    out: list[Any] = [xp.pow(z, float(p)) if p != 2 else z * z]
    coefficient = 1.0
    for k in range(1, order + 1):
        coefficient *= p - (k - 1)
        if coefficient == 0:
            out.append(0)
        elif p - k == 0:
            out.append(coefficient)
        elif p - k == 1:
            out.append(coefficient * z)
        else:
            out.append(coefficient * xp.pow(z, float(p - k)))
    return out


def _log_parts(z: Array, value: Array, order: int, xp: Any, scale_by: float = 1.0) -> list[Any]:
    r""":math:`\log`-type value and :math:`(-1)^{k-1} (k-1)!\, z^{-k}` (times ``scale_by``)."""
    out: list[Any] = [value]
    r = 1.0 / z
    power = r
    for k in range(1, order + 1):
        out.append(((-1) ** (k - 1) * math.factorial(k - 1) * scale_by) * power)
        power = power * r
    return out


def _polynomial_parts(t: Array, order: int, square_sign: float) -> list[Any]:
    r"""Derivatives of :math:`f` with :math:`f' = 1 + s f^2` (tan: s = 1; tanh: s = -1) as polynomials in ``t``."""
    poly = [0.0, 1.0]  # f itself
    out: list[Any] = [t]
    for _ in range(order):
        deriv = [i * c for i, c in enumerate(poly)][1:] or [0.0]
        # P' (1 + s t^2)
        nxt = [0.0] * (len(deriv) + 2)
        for i, c in enumerate(deriv):
            nxt[i] += c
            nxt[i + 2] += square_sign * c
        poly = nxt
        while len(poly) > 1 and poly[-1] == 0.0:
            poly.pop()
        acc: Any = poly[-1]  # Horner's rule from the leading coefficient, zero coefficients skipped
        for c in reversed(poly[:-1]):
            acc = acc * t
            if c:
                acc = acc + c
        out.append(acc)
    return out


def _low_order_coefficients(name: str, z: Array, order: int, xp: Any) -> list[Any] | None:
    r"""Value and :math:`f^{(j)}/j!` for ``j <= order <= 2`` of the commonest functions, written out.

    Each costs one evaluation of the function and a few passes over the value's shape (tanh:
    :math:`t, 1 - t^2, -t (1 - t^2)`); None for a function or order not written out here.
    """
    if order > 2:
        return None
    if name == "tanh":
        t = xp.tanh(z)
        if order == 0:
            return [t]
        s = 1.0 - t * t
        return [t, s] if order == 1 else [t, s, -(t * s)]
    if name in ("sin", "cos"):
        if order == 0:
            return [xp.sin(z) if name == "sin" else xp.cos(z)]
        s, c = xp.sin(z), xp.cos(z)
        return ([s, c, -0.5 * s] if name == "sin" else [c, -s, -0.5 * c])[: order + 1]
    if name == "exp":
        e = xp.exp(z)
        return [e, e, 0.5 * e][: order + 1]
    return None


def _elementwise_parts(name: str, z: Array, order: int, xp: Any) -> list[Any]:
    """Value and derivatives to ``order`` of the Array API function ``name`` at ``z``."""
    if name == "exp":
        return [xp.exp(z)] * (order + 1)
    if name == "expm1":
        e = xp.exp(z)
        return [xp.expm1(z)] + [e] * order
    if name == "log":
        return _log_parts(z, xp.log(z), order, xp)
    if name == "log1p":
        return _log_parts(1.0 + z, xp.log1p(z), order, xp)
    if name == "log2":
        return _log_parts(z, xp.log2(z), order, xp, 1.0 / math.log(2.0))
    if name == "log10":
        return _log_parts(z, xp.log10(z), order, xp, 1.0 / math.log(10.0))
    if name in ("sin", "cos"):
        s, c = xp.sin(z), xp.cos(z)
        return _cycle([s, c, -s, -c] if name == "sin" else [c, -s, -c, s], order)
    if name in ("sinh", "cosh"):
        s, c = xp.sinh(z), xp.cosh(z)
        return _cycle([s, c] if name == "sinh" else [c, s], order)
    if name == "tan":
        return _polynomial_parts(xp.tan(z), order, 1.0)
    if name == "tanh":
        return _polynomial_parts(xp.tanh(z), order, -1.0)
    if name == "sqrt":
        s = xp.sqrt(z)
        out: list[Any] = [s]
        r, coefficient, power = 1.0 / z, 1.0, s
        for k in range(1, order + 1):
            coefficient *= 0.5 - (k - 1)
            power = power * r
            out.append(coefficient * power)
        return out
    if name == "square":
        return [z * z, 2.0 * z, 2.0] + [0] * max(order - 2, 0)
    if name == "abs":
        return [xp.abs(z), xp.sign(z)] + [0] * max(order - 1, 0)
    if name == "reciprocal":
        return _power_parts(z, -1.0, order, xp)
    raise NotImplementedError(f"no derivative rule for {name}")


ELEMENTWISE: tuple[str, ...] = (
    "exp",
    "expm1",
    "log",
    "log1p",
    "log2",
    "log10",
    "sin",
    "cos",
    "sinh",
    "cosh",
    "tan",
    "tanh",
)
ELEMENTWISE += ("sqrt", "square", "abs", "reciprocal")


def elementwise(name: str, a: JetArray) -> JetArray:
    """The Array API's elementwise function ``name`` on a jet."""
    xp = a.xp
    if a.kind.order <= 2 and name in ("tanh", "sin", "cos", "exp"):

        def low(z: Array, order: int) -> list[Any]:
            coefficients = _low_order_coefficients(name, z, order, xp)
            assert coefficients is not None  # written out for these names up to order 2
            return coefficients

        return compose(a, low, normalised=True)
    return compose(a, lambda z, order: _elementwise_parts(name, z, order, xp)[: order + 1])


def power(a: Any, b: Any) -> Any:
    r""":math:`a^b`: a number exponent by the power rule, otherwise :math:`\exp(b \log a)`."""
    if is_jet(a) and isinstance(b, numbers.Number):
        p = float(b)  # type: ignore[arg-type]
        if p == 0:
            return lift(a.xp.ones_like(a.value), a.kind, a.xp)
        if p == 1:
            return a
        if p == 0.5:
            return elementwise("sqrt", a)
        xp = a.xp
        return compose(a, lambda z, order: _power_parts(z, p, order, xp))
    if not is_jet(a):
        xp = array_namespace_of(b.terms[0])
        base = a if hasattr(a, "shape") else xp.asarray(float(a), dtype=b.dtype, device=b.device)
        return elementwise("exp", multiply(b, xp.log(base)))
    return elementwise("exp", multiply(b, elementwise("log", a)))


def maximum(a: Any, b: Any) -> Any:
    """Elementwise maximum: the larger operand's terms (a piecewise selection)."""
    return where(value_of(a) >= value_of(b), a, b)


def minimum(a: Any, b: Any) -> Any:
    """Elementwise minimum."""
    return where(value_of(a) <= value_of(b), a, b)


def clip(a: JetArray, min: Any = None, max: Any = None) -> Any:  # noqa: A002 (the standard's names)
    """Clipped to ``[min, max]``: the bound (a constant) where it is hit."""
    out: Any = a
    if min is not None:
        out = maximum(out, min)
    if max is not None:
        out = minimum(out, max)
    return out


# --------------------------------------------------------------------------- shapes and selections


def reshape(a: Any, shape: Sequence[int], **kwargs: Any) -> Any:
    if not is_jet(a):
        return array_namespace_of(a).reshape(a, tuple(shape), **kwargs)
    xp, lead = a.xp, a.lead
    return linear(a, lambda t: xp.reshape(t, tuple(t.shape[:lead]) + tuple(shape)))


def permute_dims(a: Any, axes: Sequence[int]) -> Any:
    if not is_jet(a):
        return array_namespace_of(a).permute_dims(a, tuple(axes))
    xp, lead, ndim = a.xp, a.lead, a.ndim
    perm = tuple(range(lead)) + tuple(lead + _normalise(int(i), ndim) for i in axes)
    return linear(a, lambda t: xp.permute_dims(t, perm), full=False)


def matrix_transpose(a: Any) -> Any:
    if not is_jet(a):
        return array_namespace_of(a).matrix_transpose(a)
    if a.ndim < 2:
        raise ValueError(f"matrix_transpose needs at least 2 dimensions, got shape {a.shape}")
    return linear(a, a.xp.matrix_transpose, full=False)


def expand_dims(a: Any, axis: int = 0) -> Any:
    if not is_jet(a):
        return array_namespace_of(a).expand_dims(a, axis=axis)
    ax = _normalise(axis, a.ndim + 1)
    xp, lead = a.xp, a.lead
    return linear(a, lambda t: xp.expand_dims(t, axis=lead + ax), full=False)


def squeeze(a: Any, axis: Any) -> Any:
    if not is_jet(a):
        return array_namespace_of(a).squeeze(a, axis=axis)
    axes = _axes(axis, a.ndim)
    if any(a.shape[i] != 1 for i in axes):
        raise ValueError(f"squeeze: axis {axis} of shape {a.shape} does not have length one")
    xp, lead = a.xp, a.lead
    return linear(a, lambda t: xp.squeeze(t, axis=tuple(lead + i for i in axes)), full=False)


def broadcast_to(a: Any, shape: Sequence[int]) -> Any:
    if not is_jet(a):
        return array_namespace_of(a).broadcast_to(a, tuple(shape))
    shape = tuple(shape)
    xp, lead = a.xp, a.lead
    terms = padded(a, len(shape))
    return JetArray(
        tuple(None if t is None else xp.broadcast_to(t, tuple(t.shape[:lead]) + shape) for t in terms), a.kind
    )


def flip(a: JetArray, axis: Any = None) -> JetArray:
    xp, lead = a.xp, a.lead
    axes = tuple(lead + i for i in _axes(axis, a.ndim))
    return linear(a, lambda t: xp.flip(t, axis=axes))


def roll(a: JetArray, shift: Any, axis: Any = None) -> JetArray:
    xp, lead = a.xp, a.lead
    if axis is None:
        flat = reshape(a, (a.size,))
        return reshape(linear(flat, lambda t: xp.roll(t, shift, axis=lead)), a.shape)
    axes = (
        tuple(lead + i for i in _axes(axis, a.ndim)) if not isinstance(axis, int) else lead + _normalise(axis, a.ndim)
    )
    return linear(a, lambda t: xp.roll(t, shift, axis=axes))


def astype(a: Any, dtype: Any, copy: bool = True, **kwargs: Any) -> Any:
    if not is_jet(a):
        return array_namespace_of(a).astype(a, dtype, copy=copy, **kwargs)
    xp = a.xp
    return linear(a, lambda t: xp.astype(t, dtype), full=False)


def getitem(a: JetArray, key: Any) -> JetArray:
    """``a[key]``: basic indexing (ints, slices, ``...``, None) and boolean or integer array keys."""
    parts = key if isinstance(key, tuple) else (key,)
    if any(is_jet(k) for k in parts):
        raise TypeError("an index cannot be an array being differentiated")
    full = (slice(None),) * a.lead + parts
    return linear(a, lambda t: t[full])


def _lead_axis(a: JetArray, axis: int | None, name: str) -> int:
    """``axis`` of the value as an axis of the terms (None: the only one of a 1-D array)."""
    if axis is None:
        if a.ndim != 1:
            raise ValueError(f"{name} needs axis= for arrays of more than one dimension")
        axis = 0
    return a.lead + _normalise(axis, a.ndim)


def take(a: JetArray, indices: Array, axis: int | None = None) -> JetArray:
    xp, ax = a.xp, _lead_axis(a, axis, "take")
    return linear(a, lambda t: xp.take(t, indices, axis=ax))


def concat(arrays: Sequence[Any], axis: int | None = 0) -> Any:
    """Concatenation along ``axis``: term by term, a constant contributing zero terms."""
    jets = [a for a in arrays if is_jet(a)]
    if not jets:
        return array_namespace_of(arrays[0]).concat(list(arrays), axis=axis)
    kind = kind_of(*jets)
    xp, lead = jets[0].xp, kind.lead
    if axis is None:
        return concat([reshape(a, (-1,)) if is_jet(a) else xp.reshape(a, (-1,)) for a in arrays], axis=0)
    ndim = primal_ndim(arrays[0])
    ax = _normalise(axis, ndim)
    lifted = [a if is_jet(a) else lift(a, kind, xp) for a in arrays]
    fulls = [full_terms(a) for a in lifted]
    terms: list[Array | None] = []
    for k in range(kind.order + 1):
        present: list[Any] = [f[k] for f in fulls if f[k] is not None]
        if not present:
            terms.append(None)
            continue
        leads = [tuple(t.shape[:lead]) for t in present]
        lead_shape = tuple(max(sizes) for sizes in zip(*leads))
        pieces = []
        for a, f in zip(lifted, fulls):
            t = f[k]
            if t is None:
                t = xp.zeros(lead_shape + a.shape, dtype=present[0].dtype, device=device_of(present[0]))
            elif tuple(t.shape[:lead]) != lead_shape:
                t = xp.broadcast_to(t, lead_shape + a.shape)
            pieces.append(t)
        terms.append(xp.concat(pieces, axis=lead + ax))
    return JetArray(tuple(terms), kind)


def stack(arrays: Sequence[Any], axis: int = 0) -> Any:
    if not any(is_jet(a) for a in arrays):
        return array_namespace_of(arrays[0]).stack(list(arrays), axis=axis)
    ax = _normalise(axis, primal_ndim(arrays[0]) + 1)
    return concat([expand_dims(a, ax) for a in arrays], axis=ax)


def unstack(a: JetArray, axis: int = 0) -> tuple[JetArray, ...]:
    ax = _normalise(axis, a.ndim)
    return tuple(getitem(a, (slice(None),) * ax + (i,)) for i in range(a.shape[ax]))


def moveaxis(a: JetArray, source: int, destination: int) -> JetArray:
    src, dst = _normalise(source, a.ndim), _normalise(destination, a.ndim)
    order = [i for i in range(a.ndim) if i != src]
    order.insert(dst, src)
    return permute_dims(a, tuple(order))


def where(condition: Any, a: Any, b: Any) -> Any:
    """``where(condition, a, b)``: each term from ``a`` or ``b`` by the (constant) mask."""
    condition = value_of(condition)
    if not is_jet(a) and not is_jet(b):
        return array_namespace_of(condition).where(condition, a, b)
    jets = [j for j in (a, b) if is_jet(j)]
    kind = kind_of(*jets)
    xp = jets[0].xp
    want = max(primal_ndim(condition), primal_ndim(a), primal_ndim(b))
    ja = a if is_jet(a) else lift(_as_array(a, jets[0]), kind, xp)
    jb = b if is_jet(b) else lift(_as_array(b, jets[0]), kind, xp)
    terms: list[Array | None] = []
    for x, y in zip(padded(ja, want), padded(jb, want)):
        if x is None and y is None:
            terms.append(None)
            continue
        x = xp.zeros_like(y) if x is None else x
        y = xp.zeros_like(x) if y is None else y
        terms.append(xp.where(condition, x, y))
    return JetArray(tuple(terms), kind)


def _as_array(c: Any, like: JetArray) -> Array:
    if hasattr(c, "shape"):
        return c
    return like.xp.asarray(c, dtype=like.dtype, device=like.device)


# --------------------------------------------------------------------------- reductions


def sum_(a: Any, axis: Any = None, keepdims: bool = False, **kwargs: Any) -> Any:
    if not is_jet(a):
        return array_namespace_of(a).sum(a, axis=axis, keepdims=keepdims, **kwargs)
    xp, lead = a.xp, a.lead
    axes = tuple(lead + i for i in _axes(axis, a.ndim))
    return linear(a, lambda t: xp.sum(t, axis=axes, keepdims=keepdims))


def mean(a: Any, axis: Any = None, keepdims: bool = False) -> Any:
    if not is_jet(a):
        return array_namespace_of(a).mean(a, axis=axis, keepdims=keepdims)
    count = math.prod(a.shape[i] for i in _axes(axis, a.ndim))
    return scale(sum_(a, axis=axis, keepdims=keepdims), 1.0 / count)


def var(a: Any, axis: Any = None, correction: float = 0.0, keepdims: bool = False) -> Any:
    """Variance: the mean square of the centred values (``correction`` as the standard's)."""
    if not is_jet(a):
        return array_namespace_of(a).var(a, axis=axis, correction=correction, keepdims=keepdims)
    count = math.prod(a.shape[i] for i in _axes(axis, a.ndim))
    centred = subtract(a, mean(a, axis=axis, keepdims=True))
    return scale(sum_(multiply(centred, centred), axis=axis, keepdims=keepdims), 1.0 / (count - correction))


def std(a: Any, axis: Any = None, correction: float = 0.0, keepdims: bool = False) -> Any:
    if not is_jet(a):
        return array_namespace_of(a).std(a, axis=axis, correction=correction, keepdims=keepdims)
    return elementwise("sqrt", var(a, axis=axis, correction=correction, keepdims=keepdims))


def prod(a: Any, axis: Any = None, keepdims: bool = False) -> Any:
    """Product along ``axis`` by repeated Leibniz products (no division: exact with zeros)."""
    if not is_jet(a):
        return array_namespace_of(a).prod(a, axis=axis, keepdims=keepdims)
    out: Any = a
    for i in sorted(_axes(axis, a.ndim), reverse=True):
        slices = unstack(out, axis=i)
        acc: Any = slices[0]
        for s in slices[1:]:
            acc = multiply(acc, s)
        out = expand_dims(acc, i) if keepdims else acc
    return out


def _select(a: JetArray, axis: Any, keepdims: bool, pick: Callable[..., Array]) -> JetArray:
    """``max``/``min``: each term averaged over the positions that attain the extreme value."""
    xp = a.xp
    v = a.value
    axes = _axes(axis, a.ndim)
    extreme = pick(v, axis=axes, keepdims=True)
    mask = xp.astype(v == extreme, v.dtype)
    weights = mask / xp.sum(mask, axis=axes, keepdims=True)
    return sum_(multiply(a, weights), axis=axes, keepdims=keepdims)


def max_(a: Any, axis: Any = None, keepdims: bool = False) -> Any:
    if not is_jet(a):
        return array_namespace_of(a).max(a, axis=axis, keepdims=keepdims)
    return _select(a, axis, keepdims, a.xp.max)


def min_(a: Any, axis: Any = None, keepdims: bool = False) -> Any:
    if not is_jet(a):
        return array_namespace_of(a).min(a, axis=axis, keepdims=keepdims)
    return _select(a, axis, keepdims, a.xp.min)


def cumulative_sum(a: JetArray, axis: int | None = None, include_initial: bool = False, **kw: Any) -> JetArray:
    xp, ax = a.xp, _lead_axis(a, axis, "cumulative_sum")
    return linear(a, lambda t: xp.cumulative_sum(t, axis=ax, include_initial=include_initial))


def diagonal(a: JetArray, offset: int = 0) -> JetArray:
    """The main diagonal of the last two axes (``linalg.diagonal``), as a masked sum."""
    if offset != 0:
        raise NotImplementedError("diagonal: only offset=0 is supported on arrays being differentiated")
    n = a.shape[-1]
    if a.shape[-2] != n:
        raise ValueError(f"diagonal needs square matrices in the last two axes, got shape {a.shape}")
    xp = a.xp
    eye = xp.eye(n, dtype=a.dtype, device=a.device)
    return sum_(multiply(a, eye), axis=-1)


def trace(a: JetArray, offset: int = 0, **kw: Any) -> JetArray:
    """:math:`\\mathrm{tr}` of the last two axes (``linalg.trace``)."""
    return sum_(diagonal(a, offset), axis=-1)
