"""The Array API namespace of jet arrays: what ``array_namespace(x)`` returns when ``x`` is a jet.

Every function of the standard that a network uses has a rule (:mod:`xderiv.jets.rules`,
:mod:`xderiv.jets.linalg`); called without a jet argument it is the backend's own function,
so constants a function builds (``xp.asarray``, ``xp.zeros``, ``xp.linspace``, dtypes, ``pi``)
are the backend's arrays.  A function of the standard without a rule raises
``NotImplementedError`` naming it when a jet reaches it; nothing is silently treated as a
constant.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import linalg as jet_linalg
from . import rules
from .array import JetArray

_NAMESPACES: dict[int, JetNamespace] = {}


def _has_jet(args: Any) -> bool:
    for a in args:
        if isinstance(a, JetArray):
            return True
        if isinstance(a, (list, tuple)) and _has_jet(a):
            return True
    return False


def _no_rule(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        if _has_jet(args) or _has_jet(kwargs.values()):
            raise NotImplementedError(
                f"xderiv has no derivative rule for {name}: it was called on an array that depends on the "
                "input being differentiated. Supported: arithmetic, matmul/tensordot/vecdot, the smooth "
                "elementwise functions, sum/mean/prod/max/min/var/std, reshapes, indexing, concat/stack, "
                "where, linalg inv/solve/det/slogdet, and every xderiv activation"
            )
        return fn(*args, **kwargs)

    call.__name__ = name
    return call


def _elementwise(name: str, backend: Callable[..., Any]) -> Callable[..., Any]:
    def call(x: Any) -> Any:
        return rules.elementwise(name, x) if isinstance(x, JetArray) else backend(x)

    call.__name__ = name
    return call


def _constant(name: str, backend: Callable[..., Any]) -> Callable[..., Any]:
    """A function whose result has zero derivative (sign, floor, comparisons): on the value."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return backend(*[rules.value_of(a) for a in args], **{k: rules.value_of(v) for k, v in kwargs.items()})

    call.__name__ = name
    return call


def _dispatch(name: str, rule: Callable[..., Any], backend: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        if _has_jet(args) or _has_jet(kwargs.values()):
            return rule(*args, **kwargs)
        return backend(*args, **kwargs)

    call.__name__ = name
    return call


RULES: dict[str, Callable[..., Any]] = {
    "add": rules.add,
    "subtract": rules.subtract,
    "multiply": rules.multiply,
    "divide": rules.divide,
    "negative": rules.negative,
    "positive": lambda a: a,
    "pow": rules.power,
    "matmul": rules.matmul,
    "tensordot": rules.tensordot,
    "vecdot": rules.vecdot,
    "maximum": rules.maximum,
    "minimum": rules.minimum,
    "clip": rules.clip,
    "reshape": rules.reshape,
    "permute_dims": rules.permute_dims,
    "matrix_transpose": rules.matrix_transpose,
    "expand_dims": rules.expand_dims,
    "squeeze": rules.squeeze,
    "broadcast_to": rules.broadcast_to,
    "flip": rules.flip,
    "roll": rules.roll,
    "astype": rules.astype,
    "take": rules.take,
    "concat": rules.concat,
    "stack": rules.stack,
    "unstack": rules.unstack,
    "moveaxis": rules.moveaxis,
    "where": rules.where,
    "sum": rules.sum_,
    "mean": rules.mean,
    "var": rules.var,
    "std": rules.std,
    "prod": rules.prod,
    "max": rules.max_,
    "min": rules.min_,
    "cumulative_sum": rules.cumulative_sum,
}

CONSTANT = (
    "sign",
    "floor",
    "ceil",
    "round",
    "trunc",
    "equal",
    "not_equal",
    "less",
    "less_equal",
    "greater",
    "greater_equal",
    "isfinite",
    "isinf",
    "isnan",
    "argmax",
    "argmin",
    "argsort",
    "sort",
    "all",
    "any",
    "nonzero",
    "zeros_like",
    "ones_like",
    "empty_like",
    "full_like",
)

LINALG: dict[str, Callable[..., Any]] = {
    "inv": jet_linalg.inv,
    "det": jet_linalg.det,
    "slogdet": jet_linalg.slogdet,
    "solve": jet_linalg.solve,
    "matmul": rules.matmul,
    "tensordot": rules.tensordot,
    "vecdot": rules.vecdot,
    "matrix_transpose": rules.matrix_transpose,
    "diagonal": rules.diagonal,
    "trace": rules.trace,
}


class _Linalg:
    """The ``linalg`` extension over jets (present where the backend has it)."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        for name, rule in LINALG.items():
            if hasattr(backend, name):
                setattr(self, name, _dispatch(name, rule, getattr(backend, name)))

    def __getattr__(self, name: str) -> Any:
        return _no_rule(f"linalg.{name}", getattr(self._backend, name))


class JetNamespace:
    """The backend namespace ``xp`` with every function that can meet a jet replaced by its rule.

    Parameters
    ----------
    xp : namespace
        The backend's (array-api-compat) namespace.
    """

    def __init__(self, xp: Any) -> None:
        self._xp = xp
        self.__name__ = f"xderiv.jets[{getattr(xp, '__name__', type(xp).__name__)}]"
        for name in rules.ELEMENTWISE:
            if hasattr(xp, name):
                setattr(self, name, _elementwise(name, getattr(xp, name)))
        for name, rule in RULES.items():
            if hasattr(xp, name):
                setattr(self, name, _dispatch(name, rule, getattr(xp, name)))
        for name in CONSTANT:
            if hasattr(xp, name):
                setattr(self, name, _constant(name, getattr(xp, name)))
        if hasattr(xp, "linalg"):
            self.linalg = _Linalg(xp.linalg)

    def asarray(self, obj: Any, *args: Any, **kwargs: Any) -> Any:
        """A jet passes through; anything else is the backend's ``asarray``."""
        if isinstance(obj, JetArray):
            return obj
        return self._xp.asarray(obj, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._xp, name)
        return _no_rule(name, attr) if callable(attr) and not isinstance(attr, type) else attr


def namespace_for(xp: Any) -> JetNamespace:
    """The jet namespace over the backend namespace ``xp`` (one per backend)."""
    space = _NAMESPACES.get(id(xp))
    if space is None or space._xp is not xp:
        space = _NAMESPACES[id(xp)] = JetNamespace(xp)
    return space
