r"""Any function of ``x`` as an xderiv network, and any network evaluated on a jet.

:func:`function` wraps ``f(x)``, written against the Array API (``xp = array_namespace(x)``),
into an object every operator takes: ``xd.laplacian(xd.function(f), x)``.  The operators
call ``f`` once on a jet of ``x`` (:mod:`xderiv.jets.array`); ``f`` runs unchanged and its
result carries the derivatives.  Functions compose with networks and each other
(``g + phi * xd.function(f) * net``); a composite that holds a function is evaluated as one
function (:func:`evaluate`), and networks inside it (or called by ``f``) run their layers
through the same rules.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..backends.namespace import Array
from ..models.composition import Composable, Composite, Product, Scaled, Sum
from .array import JetArray
from .rules import add, expand_dims, is_jet, lift, matmul, multiply, scale, squeeze, sum_


class Function(Composable):
    """A function ``f(x)`` of points ``x`` of shape ``(..., d)``, returning ``(..., m)`` or ``(...,)``.

    Made by :func:`function`.  It has no weights of its own: the namespace, device and dtype
    of a call are those of ``x`` (and of whatever ``f`` closes over), and tensors ``f``
    closes over (torch Parameters) receive gradients through every operator.

    Attributes
    ----------
    f : callable
    in_features : int or None
        ``d`` when given: checked against ``x`` at every call.
    out_features : int or None
        ``m`` when given.
    """

    scalar = False
    xp: Any = None
    device: Any = None
    dtype: Any = None

    def __init__(self, f: Callable[[Any], Any], in_features: int | None = None, out_features: int | None = None):
        if not callable(f):
            raise TypeError(f"function: f must be callable, got {type(f).__name__}")
        self.f = f
        self.in_features = in_features
        self.out_features = out_features

    def __call__(self, x: Array) -> Array:
        """``f(x)``."""
        return self.f(x)

    def arrays(self) -> list[Array]:
        """A function holds no weight arrays of its own."""
        return []

    def with_arrays(self, arrays: list[Array]) -> Function:
        if arrays:
            raise ValueError(f"with_arrays: a function holds no arrays, got {len(arrays)}")
        return self

    def __repr__(self) -> str:
        name = getattr(self.f, "__name__", type(self.f).__name__)
        return f"function({name})"


def function(f: Callable[[Any], Any], *, in_features: int | None = None, out_features: int | None = None) -> Function:
    r"""Any function of ``x`` written against the Array API, as a network for every operator.

    ``f`` takes ``x`` of shape ``(..., d)`` and returns ``(..., m)`` (or ``(...,)``, a scalar
    field).  It gets its namespace from its input, ``xp = array_api_compat.array_namespace(x)``,
    and uses the standard's functions, operators and indexing (the supported set:
    :mod:`xderiv.jets.namespace`), plus xderiv's activations
    (``xd.get_activation("gelu")(z, xp)``) and xderiv networks (``net(x)``).  Every operator
    then differentiates it exactly: ``xd.laplacian(xd.function(f), x)``, ``xd.hessian``,
    ``xd.taylor``, on whatever backend ``x`` lives.

    Parameters
    ----------
    f : callable ``x -> y``
    in_features, out_features : int, optional
        ``d`` and ``m``, checked at every call when given.

    Examples
    --------
    >>> import numpy as np, xderiv as xd
    >>> from array_api_compat import array_namespace
    >>> def u(x):
    ...     xp = array_namespace(x)
    ...     return xp.sin(x[..., 0]) * xp.exp(x[..., 1])
    >>> float(xd.laplacian(xd.function(u), np.array([0.3, 0.0]))) # sin(x0) e^x1: -s e + s e = 0
    0.0
    """
    return Function(f, in_features, out_features)


def is_graph(net: Any) -> bool:
    """True when ``net`` needs the jet engine: a function, or a composite with one among its parts."""
    if isinstance(net, Function):
        return True
    if isinstance(net, Composite):
        return any(is_graph(p) for p in net.parts)
    return False


def _with_output_axis(a: Any) -> Any:
    """A scalar field's value ``(n,)`` as ``(n, 1)``, to broadcast against ``(n, m)``."""
    return expand_dims(a, -1) if is_jet(a) else a[..., None]


def _combine(parts: list[Any], combine: Callable[[Any, Any], Any]) -> Any:
    ranks = {p.ndim for p in parts}
    if len(ranks) > 1:
        parts = [_with_output_axis(p) if p.ndim == min(ranks) else p for p in parts]
    out = parts[0]
    for p in parts[1:]:
        out = combine(out, p)
    return out


def _chain(network: Any, u: JetArray) -> JetArray:
    """A Sequential or Potential on a jet: each layer ``z = u W + b``, ``σ(z)``, then a Potential's terms."""
    xp, dtype = u.xp, u.dtype
    plan = network.plan
    x = u
    for layer in plan.layers:
        w, b = layer.params(xp, dtype)
        z = add(matmul(u, w), b)
        a = z if layer.activation.linear else layer.activation(z, xp)
        u = add(u, scale(a, layer.step)) if layer.skip else a
    y = u
    if plan.quadratic is not None:
        q = xp.astype(plan.quadratic, dtype) if plan.quadratic.dtype != dtype else plan.quadratic
        xa = multiply(x, q) if q.ndim == 1 else matmul(x, q)
        y = add(y, scale(sum_(multiply(x, xa), axis=-1, keepdims=True), 0.5))
    if plan.linear is not None:
        c = xp.astype(plan.linear, dtype) if plan.linear.dtype != dtype else plan.linear
        y = add(y, matmul(x, c[:, None]))
    if plan.scalar:
        y = squeeze(y, -1)
    return y


ChainPath = Callable[[Any, JetArray], "JetArray | None"]
_CHAIN_PATHS: list[ChainPath] = []


def register_chain_path(path: ChainPath) -> None:
    """Set how a chain of layers called on an operator's input jet runs its own recursions.

    ``path(network, x)`` returns the chain's output jet at the seed jet ``x`` (see
    :class:`~xderiv.jets.array.Seed`), or None where the rules are as good.  The operators
    register it when they are imported (they sit above the engine).
    """
    _CHAIN_PATHS[:] = [path]


def evaluate(net: Any, x: JetArray) -> JetArray:
    """``net`` at the jet ``x``: a function's ``f``, a network's layers, a composite's parts combined."""
    if isinstance(net, Function):
        own = getattr(net, "evaluate_jet", None)  # a network with its own way to the output jet (autograd)
        out = own(x) if own is not None else net.f(x)
        if not isinstance(out, JetArray):  # does not depend on x: a constant of the jet
            out = lift(out, x.kind, x.xp)
        return out
    if isinstance(net, Composite):
        parts = [evaluate(p, x) for p in net.parts]
        if isinstance(net, Scaled):
            return scale(parts[0], net.factor)
        if isinstance(net, Sum):
            out = _combine(parts, add)
            return add(out, net.offset) if net.offset else out
        if isinstance(net, Product):
            return _combine(parts, multiply)
        raise TypeError(f"cannot evaluate composite {type(net).__name__} on a jet")
    network = net.resolve()
    if x.seed is not None and _CHAIN_PATHS:  # the operator's input itself: the chain's own recursions
        out = _CHAIN_PATHS[0](network, x)
        if out is not None:
            return out
    return _chain(network, x)
