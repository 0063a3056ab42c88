r"""Read a torch module's ``forward`` as a chain of xderiv layers: trace it with torch.fx, match the graph.

:func:`read` runs once per module *structure*.  It traces ``forward`` with a
:class:`torch.fx.Tracer` that keeps ``nn.Linear`` and the activation modules
as leaves, then interprets the graph node by node over four kinds of values:

- a *constant*: an :class:`Expr` computed from the module's tensors (buffers,
  Parameters, plain tensor attributes) and Python numbers, never from ``x``;
- ``Out(k, s, t)``: the output of layer ``k`` (``-1``: the input ``x``) times
  ``s`` plus ``t`` (elementwise, ``s``/``t`` constants or ``None``);
- ``Pre(k, W, b, s, t)``: a pre-activation ``(u_k W + b) s + t``;
- ``Act(pre, σ, h)``: ``h σ(pre)`` with ``h`` a Python number.

A Linear turns an ``Out`` into a ``Pre``, an activation a ``Pre`` into an
``Act``, arithmetic with constants updates ``s``, ``t`` and ``h``, and
``u_k + h σ(u_k W + b)`` becomes a :class:`~xderiv.Residual`.  Whenever a value
must become a layer output (the input of the next Linear, the module's
output), it is *committed* as the next layer of the chain:

- ``Act``: a :class:`~xderiv.Dense` with the pre-activation's ``s`` and ``t``
  folded into ``W`` and ``b`` (``W diag(s)``, ``b s + t``: the one place a
  scaling has no layer of its own, ``tanh(a * linear(u))``); a factor ``h``
  left on the activation becomes the ``s`` of the layer's ``Out``;
- ``Pre`` (a Linear with no activation): a :class:`~xderiv.Dense` over the
  Linear's own tensors, its ``s`` and ``t`` left on the layer's ``Out``;
- ``Out`` with ``s`` or ``t``: a :class:`~xderiv.Dense` with identity
  activation, weight ``diag(s)`` and bias ``t`` (input and output scaling,
  ``(x - mu) / sigma``, ``y * s + t``), so the Linears around it keep their
  Parameters as views.

Layers hold *recipes* (:class:`Expr`), not arrays: :class:`Program` evaluates
them against the module's current tensors, so a Linear's weight is
``linear.weight.mT`` (a view) and a folded or diagonal weight is recomputed
from its sources (with autograd, so gradients reach them).  Anything that is
not such a chain is refused with an error naming the fx node.
"""

from __future__ import annotations

import operator
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn
from torch.nn import functional as F
from torch.nn.utils import parametrize

from ..activations import Activation, get_activation

_MISSING = object()
_SCALARS = (bool, int, float, str, type(None))

# --------------------------------------------------------------------------- activations

ActivationSpec = Any
"""How an activation is named: an xderiv activation name, an :class:`~xderiv.Activation`, or a callable
returning one of those (called with the module for module classes, with the call's extra arguments for
functions)."""


class MappingError(ValueError):
    """An ``activations=`` entry refused for this module (not elementwise, or holding per-feature tensors)."""


def merged_tables(
    modules: Mapping[type, ActivationSpec],
    functions: Mapping[Any, ActivationSpec],
    activations: Mapping[Any, ActivationSpec] | None,
    owner: str,
    check: Callable[[Any], None],
    names: bool = False,
) -> tuple[dict[type, ActivationSpec], dict[Any, ActivationSpec], tuple[Callable[..., Any], ...]]:
    """The tables ``modules`` and ``functions`` with the caller's ``activations`` on top (copies).

    Every value must be an activation name, an :class:`~xderiv.Activation` or a callable returning one;
    ``check(key)`` refuses a key that is not elementwise; keys are ``nn.Module`` classes or functions
    (and Tensor method names when ``names``).  Also returns the plain Python functions among the keys,
    which tracing keeps whole.
    """
    modules, functions = dict(modules), dict(functions)
    wrapped: list[Callable[..., Any]] = []
    for key, spec in (activations or {}).items():
        if not (isinstance(spec, (str, Activation)) or callable(spec)):
            raise TypeError(
                f"{owner}: activations[{key!r}] must be an activation name, an xderiv Activation or a "
                f"callable returning one, got {spec!r}"
            )
        check(key)
        if isinstance(key, type) and issubclass(key, nn.Module):
            modules[key] = spec
        elif (names and isinstance(key, str)) or (callable(key) and not isinstance(key, type)):
            functions[key] = spec
            if isinstance(key, types.FunctionType):
                wrapped.append(key)  # kept whole while tracing
        else:
            raise TypeError(f"{owner}: activations keys must be nn.Module classes or functions, got {key!r}")
    return modules, functions, tuple(wrapped)


class ActivationTable:
    """Torch activation modules and functions to xderiv activations.

    Parameters
    ----------
    modules : mapping of nn.Module class to spec
        Keyed by exact class; a callable spec gets the module instance.
    functions : mapping of function (or Tensor method name) to spec
        A callable spec gets the call's arguments after the input
        (``F.softplus(x, beta=2.0)`` calls ``spec(beta=2.0)``).
    scaled : mapping of activation name to factory
        ``factory(a)`` is the activation :math:`\\sigma(a z)`, used for
        ``σ(a * linear(u))`` with a Python number ``a`` so the Linear's
        weight stays a view (SIREN's ``sin(w0 z)``).
    wrapped : tuple of functions
        User functions to keep whole while tracing (``torch.fx`` autowrap).
    """

    def __init__(
        self,
        modules: Mapping[type, ActivationSpec],
        functions: Mapping[Any, ActivationSpec],
        scaled: Mapping[str, Callable[[float], Activation]],
        wrapped: tuple[Callable[..., Any], ...] = (),
    ) -> None:
        self.modules = dict(modules)
        self.functions = dict(functions)
        self.scaled = dict(scaled)
        self.wrapped = wrapped

    def is_module(self, m: nn.Module) -> bool:
        return type(m) in self.modules

    def of_module(self, m: nn.Module) -> Activation:
        return _activation(self.modules[type(m)], (m,), {})

    def of_function(self, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Activation | None:
        try:
            spec = self.functions.get(target, _MISSING)
        except TypeError:  # an unhashable target
            return None
        return None if spec is _MISSING else _activation(spec, args, kwargs)

    def with_scale(self, act: Activation, a: float) -> Activation | None:
        factory = self.scaled.get(act.name)
        return None if factory is None else _activation(factory(a), (), {})


def _activation(spec: ActivationSpec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Activation:
    if isinstance(spec, Activation):
        return spec
    if isinstance(spec, str):
        return get_activation(spec)
    if callable(spec):
        out = spec(*args, **kwargs)
        if isinstance(out, (str, Activation)):
            return _activation(out, (), {})
        raise TypeError(f"an activation mapping returned {out!r}; expected an activation name or an xderiv Activation")
    raise TypeError(f"an activation mapping must be a name, an xderiv Activation or a callable, got {spec!r}")


# --------------------------------------------------------------------------- expressions


class Expr:
    """A value computed at resolve time from the module's current tensors (``vals``, indexed like the sources).

    ``sources`` are the sources whose *values* flow into it; ``derived`` is
    False for a source itself or a view of one (which sees in-place updates).
    """

    sources: frozenset[int] = frozenset()
    derived: bool = True

    def __call__(self, vals: list[Any]) -> Any:
        raise NotImplementedError


class Source(Expr):
    def __init__(self, i: int) -> None:
        self.i, self.sources, self.derived = i, frozenset((i,)), False

    def __call__(self, vals: list[Any]) -> Any:
        return vals[self.i]


class Transposed(Expr):
    """``inner.mT``: a view."""

    def __init__(self, inner: Expr) -> None:
        self.inner, self.sources, self.derived = inner, inner.sources, inner.derived

    def __call__(self, vals: list[Any]) -> Any:
        return self.inner(vals).mT


class Constant(Expr):
    """A tensor captured while tracing (created inside ``forward`` from Python values)."""

    derived = False

    def __init__(self, value: Any) -> None:
        self.value = value

    def __call__(self, vals: list[Any]) -> Any:
        return self.value


class Reference(Expr):
    """The tensor whose dtype and device new arrays take (its values are not read)."""

    def __init__(self, cell: list[Expr | None]) -> None:
        self.cell = cell

    def __call__(self, vals: list[Any]) -> Any:
        ref = self.cell[0]
        assert ref is not None
        return ref(vals)


class Apply(Expr):
    """``fn(*args, **kwargs)`` with every :class:`Expr` among them evaluated first."""

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any] | None = None) -> None:
        self.fn, self.args, self.kwargs = fn, args, kwargs or {}
        found: set[int] = set()
        for a in _flat(args) + _flat(tuple(self.kwargs.values())):
            if isinstance(a, Expr):
                found |= a.sources
        self.sources = frozenset(found)

    def __call__(self, vals: list[Any]) -> Any:  # run at every call: the flat case without recursion
        args = [a(vals) if isinstance(a, Expr) else _evaluate(a, vals) for a in self.args]
        kwargs = {k: _evaluate(v, vals) for k, v in self.kwargs.items()} if self.kwargs else {}
        return self.fn(*args, **kwargs)


def _flat(a: Any) -> list[Any]:
    if isinstance(a, (tuple, list)):
        return [y for x in a for y in _flat(x)]
    if isinstance(a, dict):
        return _flat(tuple(a.values()))
    return [a]


def _evaluate(a: Any, vals: list[Any]) -> Any:
    if isinstance(a, Expr):
        return a(vals)
    if isinstance(a, (tuple, list)) and a:
        return type(a)(_evaluate(x, vals) for x in a)
    if isinstance(a, dict):
        return {k: _evaluate(v, vals) for k, v in a.items()}
    return a


def _method(name: str) -> Callable[..., Any]:
    def call(obj: Any, *args: Any, **kwargs: Any) -> Any:
        return getattr(obj, name)(*args, **kwargs)

    call.__name__ = name
    return call


# Affine coefficients are None (1 for a scale, 0 for a shift), Python numbers or Exprs.


def _is_number(a: Any) -> bool:
    return isinstance(a, (int, float)) and not isinstance(a, bool)


def _arith(op: Callable[[Any, Any], Any], a: Any, b: Any) -> Any:
    if _is_number(a) and _is_number(b):
        return op(a, b)
    return Apply(op, (a, b))


def _times(a: Any, b: Any) -> Any:
    if a is None or (_is_number(a) and a == 1):
        return b
    if b is None or (_is_number(b) and b == 1):
        return a
    return _arith(operator.mul, a, b)


def _plus(a: Any, b: Any) -> Any:
    if a is None or (_is_number(a) and a == 0):
        return b
    if b is None or (_is_number(b) and b == 0):
        return a
    return _arith(operator.add, a, b)


def _negative(a: Any) -> Any:
    return -1.0 if a is None else (-a if _is_number(a) else Apply(operator.neg, (a,)))


def _affine(scale: Any, shift: Any, how: str, c: Any) -> tuple[Any, Any]:
    """``(s, t)`` of ``(u s + t) <how> c``."""
    if how == "mul":
        return _times(scale, c), (None if shift is None else _times(shift, c))
    if how == "div":
        inv = 1.0 / c if _is_number(c) else Apply(torch.reciprocal, (c,))
        return _times(scale, inv), (None if shift is None else _times(shift, inv))
    if how == "add":
        return scale, _plus(shift, c)
    if how == "sub":
        return scale, _plus(shift, _negative(c))
    if how == "rsub":  # c - (u s + t)
        return _negative(scale), _plus(c, None if shift is None else _negative(shift))
    if how == "neg":
        return _negative(scale), (None if shift is None else _negative(shift))
    raise AssertionError(how)


def _vector(ref: torch.Tensor, width: int, v: Any, fill: float) -> torch.Tensor:
    """``v`` (None, number, or a tensor of 1 or ``width`` elements) as a ``(width,)`` tensor."""
    if isinstance(v, torch.Tensor):
        v = v.reshape(-1)
        if v.shape[0] == width and v.dtype == ref.dtype:
            return v
    base = torch.full((width,), fill, dtype=ref.dtype, device=ref.device)
    if v is None:
        return base
    return base * v if fill == 1.0 else base + v


def _diagonal(ref: torch.Tensor, width: int, scale: Any) -> torch.Tensor:
    return torch.diag(_vector(ref, width, scale, 1.0))


def _columns(weight: torch.Tensor, scale: Any) -> torch.Tensor:
    """``W diag(s)``."""
    return weight * (scale.reshape(-1) if isinstance(scale, torch.Tensor) else scale)


def _folded_bias(ref: torch.Tensor, width: int, bias: Any, scale: Any, shift: Any) -> torch.Tensor:
    """``b s + t``."""
    if isinstance(bias, torch.Tensor) and tuple(bias.shape) == (width,):
        b = bias
    else:
        b = _vector(ref, width, bias, 0.0)
    if scale is not None:
        b = b * (scale.reshape(-1) if isinstance(scale, torch.Tensor) else scale)
    if shift is not None:
        b = b + (shift.reshape(-1) if isinstance(shift, torch.Tensor) else shift)
    return b


# --------------------------------------------------------------------------- values of the graph


@dataclass(frozen=True)
class Out:
    """``u_k s + t``: the output of layer ``k`` (``-1``: the input), scaled and shifted."""

    k: int
    scale: Any = None
    shift: Any = None

    @property
    def plain(self) -> bool:
        return self.scale is None and self.shift is None


@dataclass(frozen=True)
class Pre:
    """``(u_k W + b) s + t``: a pre-activation, ``n_in`` to ``width`` features, made at fx node ``node``."""

    k: int
    weight: Expr
    bias: Expr | None
    n_in: int
    width: int
    node: str
    scale: Any = None
    shift: Any = None


@dataclass(frozen=True)
class Act:
    """``h σ(pre)`` with ``h`` a Python number."""

    pre: Pre
    activation: Activation
    factor: float = 1.0


Stream = (Out, Pre, Act)


@dataclass(frozen=True)
class LayerRecipe:
    """One xderiv layer: ``Dense``/``Residual`` over the arrays ``weight(vals)``, ``bias(vals)``."""

    weight: Expr
    bias: Expr
    activation: Activation
    residual: bool
    step: float
    node: str


# --------------------------------------------------------------------------- program


class Program:
    """The result of one :func:`read`: layer recipes, and what to watch in the module.

    Attributes
    ----------
    layers : list of LayerRecipe
    arrays : list of Expr
        ``[W_0, b_0, W_1, b_1, ...]``.
    sources : list of (dict, str)
        Where each tensor lives: a module's ``_parameters``, ``_buffers`` or
        ``__dict__`` and the key in it (read with a dict lookup per call).
    shapes : list of tuple or None
        Each source's shape when the graph was read (the recipes assume it).
    derived : list of int
        Indices into ``arrays`` of the arrays *computed* from the sources
        (folded weights, a scaling's diagonal): recomputed at every call,
        never cached, since in-place edits through ``.data`` change a tensor
        without a trace (no ``_version`` bump).  The other arrays are sources
        or views of them, which see any in-place edit by themselves, or
        computed from Python numbers alone (``y * 3 + 0.5``), kept until the
        dtype or device of the network changes.
    in_features : int
        The input width ``d``.
    stochastic : bool
        The graph holds a dropout module in training mode or a dropout
        function call: the module's outputs are random.
    """

    def __init__(
        self,
        layers: list[LayerRecipe],
        sources: list[tuple[dict[str, Any], str]],
        shapes: list[tuple[int, ...] | None],
        in_features: int,
        stochastic: bool,
        children: list[dict[str, Any]],
        scalars: list[tuple[dict[str, Any], tuple[str, ...]]],
        tensors: list[tuple[dict[str, Any], str]],
    ) -> None:
        self.layers = layers
        self.arrays = [e for layer in layers for e in (layer.weight, layer.bias)]
        self.sources = sources
        self.shapes = shapes
        self.in_features = in_features
        self.stochastic = stochastic
        self.derived = [j for j, e in enumerate(self.arrays) if e.derived and e.sources]
        self._children = children
        self._attributes = [(d, name) for d, names in scalars for name in names]
        self._tensors = tensors

    def structure(self) -> tuple[Any, ...]:
        """What the traced graph depends on: the module tree and the Python attributes of its modules."""
        return (
            *[tuple(d.values()) for d in self._children],
            *[d.get(name, _MISSING) for d, name in self._attributes],
            *[_state(d.get(name)) for d, name in self._tensors],
        )

    def values(self) -> list[Any]:
        """The current source tensors (``_MISSING`` where one vanished)."""
        return [d.get(k, _MISSING) for d, k in self.sources]

    def array_key(self, vals: list[Any]) -> tuple[Any, ...] | None:
        """Identity, storage, dtype and device of every source.

        None when a source is no longer a tensor or changed shape (``p.data =
        a tensor of another shape``): the structure changed.  Values are not
        part of the key: views see them, derived arrays are recomputed anyway.
        """
        try:
            key: list[Any] = []
            for t, shape in zip(vals, self.shapes):
                if t is None:
                    if shape is not None:
                        return None
                    key.append(None)
                elif tuple(t.shape) != shape:
                    return None
                else:
                    key.append((id(t), t.data_ptr(), t.dtype, t.device))
        except (AttributeError, TypeError):
            return None
        return tuple(key)


# --------------------------------------------------------------------------- tracing


def _is_linear(m: nn.Module) -> bool:
    return isinstance(m, nn.Linear) and type(m).forward is nn.Linear.forward


class _Tracer(fx.Tracer):
    """Keeps Linear and activation modules whole and never writes to the traced module.

    (The stock tracer stores tensors created inside ``forward`` as
    ``_tensor_constant<i>`` attributes of the root module; this one keeps them.)
    """

    def __init__(self, acts: ActivationTable) -> None:
        super().__init__(autowrap_functions=acts.wrapped)
        self.acts = acts
        self.constants: dict[str, torch.Tensor] = {}

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return _is_linear(m) or self.acts.is_module(m) or super().is_leaf_module(m, module_qualified_name)

    def create_arg(self, a: Any) -> Any:
        if isinstance(a, torch.Tensor) and not isinstance(a, nn.Parameter) and a not in self.tensor_attrs:
            if not any(a is b for b in self.root.buffers()):
                name = f"<constant {len(self.constants)}>"
                self.constants[name] = a
                self.tensor_attrs[a] = name
        return super().create_arg(a)


def read(root: nn.Module, acts: ActivationTable) -> Program:
    """Trace ``root`` and match its graph into a chain of layer recipes (see the module docstring)."""
    for path, m in root.named_modules():
        if parametrize.is_parametrized(m):
            raise TypeError(
                f"from_torch: module {path or '<root>'} ({type(m).__name__}) has parametrizations "
                "(torch.nn.utils.parametrize); remove them first (parametrize.remove_parametrizations)"
            )
    tracer = _Tracer(acts)
    try:
        graph = tracer.trace(root)
    except Exception as e:  # noqa: BLE001 - any failure of fx is reported the same way
        raise ValueError(
            f"from_torch: torch.fx cannot trace {type(root).__name__}.forward: {type(e).__name__}: {e} "
            "(from_torch reads forward by symbolic tracing: no control flow on the input's values, "
            "no shape-dependent Python code)"
        ) from e
    return _Reader(root, tracer, acts).run(_needed(graph))


def _needed(graph: fx.Graph) -> list[fx.Node]:
    """The nodes the output depends on, in order, plus any in-place operation (to be refused, not dropped)."""
    keep: set[fx.Node] = set()
    for node in reversed(graph.nodes):
        inplace = node.op in ("call_method", "call_function") and _target_name(node).endswith("_")
        if node.op in ("output", "placeholder") or inplace or any(u in keep for u in node.users):
            keep.add(node)
    return [n for n in graph.nodes if n in keep]


def _target_name(node: fx.Node) -> str:
    """``torch.cat``, ``operator.add``, ``F.linear``, a method or module path as it is."""
    t = node.target
    if isinstance(t, str):
        return t
    try:
        name = fx.node._get_qualified_name(t)
    except Exception:  # noqa: BLE001 - any callable fx accepted; fall back on its name
        name = getattr(t, "__qualname__", None) or getattr(t, "__name__", None) or repr(t)
    for long, short in (("_operator.", "operator."), ("torch._C._nn.", "F."), ("torch.nn.functional.", "F.")):
        if name.startswith(long):
            return short + name[len(long) :]
    return name


def _where(root: nn.Module, node: fx.Node) -> str:
    """``node 'name' (op target, module path (Class) inside ...)``."""
    text = f"node {node.name!r} ({node.op} {_target_name(node)}"
    stack = list(node.meta.get("nn_module_stack", {}).values())
    if node.op == "call_module":
        text += f": module {node.target} ({type(root.get_submodule(str(node.target))).__name__})"
        stack = stack[:-1]
    if stack:
        path, cls = stack[-1]
        text += f", inside a {getattr(cls, '__name__', cls)} (module {path})"
    return text + ")"


_ARITH: dict[Any, str] = {
    operator.add: "add",
    torch.add: "add",
    "add": "add",
    operator.sub: "sub",
    torch.sub: "sub",
    torch.subtract: "sub",
    "sub": "sub",
    operator.mul: "mul",
    torch.mul: "mul",
    torch.multiply: "mul",
    "mul": "mul",
    operator.truediv: "div",
    torch.div: "div",
    torch.true_divide: "div",
    "div": "div",
    "true_divide": "div",
    operator.neg: "neg",
    torch.neg: "neg",
    "neg": "neg",
    operator.pos: "pos",
}
_MATMUL = {operator.matmul, torch.matmul, torch.mm, "matmul", "mm"}
_JOINS = {torch.cat, torch.concat, torch.stack, torch.hstack, torch.column_stack, "cat"}

# Torch modules and functions that mix the features of a point (or hold per-feature weights): no xderiv
# activation can stand for them, so an ``activations=`` mapping of one is refused.
NOT_ELEMENTWISE_MODULES: tuple[type[nn.Module], ...] = tuple(
    cls
    for cls in (
        nn.Linear,
        nn.Bilinear,
        getattr(nn, "LazyLinear", None),
        nn.modules.conv._ConvNd,
        nn.modules.batchnorm._NormBase,  # BatchNorm*, InstanceNorm*
        nn.LayerNorm,
        nn.GroupNorm,
        getattr(nn, "RMSNorm", None),
        nn.LocalResponseNorm,
        nn.Softmax,
        nn.Softmin,
        nn.LogSoftmax,
        nn.Softmax2d,
        nn.GLU,
        nn.MultiheadAttention,
        nn.Embedding,
        nn.Flatten,
        nn.Unflatten,
        nn.modules.rnn.RNNBase,
        nn.Sequential,
        nn.ModuleList,
        nn.ModuleDict,
    )
    if cls is not None
)
NOT_ELEMENTWISE_FUNCTIONS: frozenset[Any] = frozenset(
    f
    for f in (
        F.linear,
        F.bilinear,
        F.layer_norm,
        F.batch_norm,
        F.group_norm,
        F.instance_norm,
        getattr(F, "rms_norm", None),
        F.local_response_norm,
        F.normalize,
        F.softmax,
        F.softmin,
        F.log_softmax,
        F.glu,
        torch.layer_norm,
        torch.batch_norm,
        torch.group_norm,
        torch.softmax,
        torch.log_softmax,
        torch.matmul,
        torch.mm,
        torch.sum,
        torch.mean,
        torch.cumsum,
        torch.norm,
        torch.cat,
        "softmax",
        "log_softmax",
        "matmul",
        "sum",
        "mean",
        "cumsum",
        "norm",
    )
    if f is not None
)
_DROPOUT_FUNCTIONS = frozenset(
    (F.dropout, F.alpha_dropout, F.feature_alpha_dropout, F.dropout1d, F.dropout2d, F.dropout3d, torch.dropout)
)


def not_elementwise(key: Any) -> str | None:
    """Why an ``activations=`` key cannot be an elementwise activation (None when nothing is known against it)."""
    if isinstance(key, type) and issubclass(key, NOT_ELEMENTWISE_MODULES):
        return f"{key.__name__} is not elementwise (it mixes the features of a point or holds per-feature weights)"
    try:
        if key in NOT_ELEMENTWISE_FUNCTIONS:
            name = getattr(key, "__name__", key)
            return f"{name} is not elementwise (it mixes the features of a point)"
    except TypeError:  # unhashable
        pass
    return None


class _Reader:
    """One pass over the graph (see the module docstring)."""

    def __init__(self, root: nn.Module, tracer: _Tracer, acts: ActivationTable) -> None:
        self.root, self.tracer, self.acts = root, tracer, acts
        self.env: dict[fx.Node, Any] = {}
        self.layers: list[LayerRecipe] = []
        self.widths: list[int] = []  # output width of each layer
        self.d: int | None = None  # input width, once a layer fixes it
        self.sources: list[tuple[dict[str, Any], str]] = []
        self.now: list[Any] = []  # the sources' values while reading (for shapes)
        self._index: dict[tuple[int, str], int] = {}
        self.ref: list[Expr | None] = [None]
        self.inputs = 0
        self.stochastic = False  # a dropout in training mode, or a dropout function, was read

    # ----------------------------------------------------------------- helpers

    def fail(self, node: fx.Node, why: str, kind: type[Exception] = ValueError) -> Exception:
        return kind(f"from_torch: cannot convert {_where(self.root, node)}: {why}")

    def source(self, owner: nn.Module, name: str) -> Source:
        for d in (owner._parameters, owner._buffers, owner.__dict__):
            if name in d:
                break
        else:
            raise AttributeError(name)
        key = (id(d), name)
        if key not in self._index:
            self._index[key] = len(self.sources)
            self.sources.append((d, name))
            self.now.append(d[name])
        return Source(self._index[key])

    def value(self, e: Any) -> Any:
        """A constant's value now (for shapes)."""
        return e(self.now) if isinstance(e, Expr) else e

    def width(self, k: int) -> int | None:
        return self.d if k < 0 else self.widths[k]

    def head(self, k: int, node: fx.Node) -> None:
        last = len(self.layers) - 1
        if k != last:
            what = "the input" if k < 0 else f"the output of layer {k}"
            raise self.fail(
                node,
                f"it reads {what}, but layer {last} ({self.layers[last].node}) already follows that: the graph "
                "branches, and an xderiv network is one chain (a skip connection must have the form "
                "u + h*act(linear(u)) with a single Linear)",
            )

    def append(self, recipe: LayerRecipe, k: int, n_in: int, n_out: int, node: fx.Node) -> Out:
        have = self.width(k)
        if have is not None and have != n_in:
            raise self.fail(node, f"it takes {n_in} features but its input has {have}")
        if k < 0:
            self.d = n_in
        self.layers.append(recipe)
        self.widths.append(n_out)
        return Out(len(self.layers) - 1)

    def like(self, fn: Callable[..., Any], *args: Any) -> Apply:
        return Apply(fn, (Reference(self.ref), *args))

    def vector(self, v: Any, width: int, fill: float) -> Expr:
        """``v`` as a ``(width,)`` array: itself when it already is one (a view), else a derived array."""
        if isinstance(v, Expr) and not v.derived:
            now = self.value(v)
            if isinstance(now, torch.Tensor) and tuple(now.shape) == (width,) and now.is_floating_point():
                return v
        return self.like(_vector, width, v, fill)

    def fold(self, pre: Pre) -> tuple[Expr, Expr]:
        """``(W s, b s + t)`` of a pre-activation."""
        weight = pre.weight if pre.scale is None else Apply(_columns, (pre.weight, pre.scale))
        if pre.scale is None and pre.shift is None:
            bias = self.vector(pre.bias, pre.width, 0.0)
        elif pre.scale is None and pre.bias is None:
            bias = self.vector(pre.shift, pre.width, 0.0)
        else:
            bias = self.like(_folded_bias, pre.width, pre.bias, pre.scale, pre.shift)
        return weight, bias

    def input_width(self, v: Out, hint: int | None, node: fx.Node) -> int:
        w = self.width(v.k) or hint
        if w is None:
            for c in (v.scale, v.shift):
                now = self.value(c)
                if isinstance(now, torch.Tensor) and now.numel() > 1:
                    w = int(now.shape[-1])
        if w is None:
            raise self.fail(node, "cannot tell the input's width here; start with a Linear layer")
        for c in (v.scale, v.shift):
            now = self.value(c)
            if isinstance(now, torch.Tensor) and now.numel() not in (1, w):
                raise self.fail(node, f"a scale or shift of shape {tuple(now.shape)} does not fit {w} features")
        return w

    # ----------------------------------------------------------------- committing values to layers

    def settle(self, n: fx.Node, at: fx.Node) -> Out:
        """The value of node ``n`` as a layer output, committing a pending Linear or activation (for node ``at``)."""
        v = self.env[n]
        if isinstance(v, Pre):  # the Linear as it is (a view); its scale and shift stay on its output
            pre = Pre(v.k, v.weight, v.bias, v.n_in, v.width, v.node)
            v = Out(self.commit(Act(pre, get_activation("identity")), at).k, v.scale, v.shift)
        elif isinstance(v, Act):
            v = self.commit(v, at)
        if not isinstance(v, Out):
            raise self.fail(at, f"expected a tensor computed from the input for {n.name!r}, got a constant")
        self.env[n] = v
        return v

    def commit(self, v: Act, at: fx.Node) -> Out:
        """Append ``σ(pre)`` as a Dense layer; its factor ``h`` stays on the output."""
        pre = v.pre
        self.head(pre.k, at)
        w, b = self.fold(pre)
        out = self.append(LayerRecipe(w, b, v.activation, False, 1.0, pre.node), pre.k, pre.n_in, pre.width, at)
        return Out(out.k, None if v.factor == 1.0 else v.factor)

    def base(self, n: fx.Node, at: fx.Node, hint: int | None = None) -> int:
        """Commit node ``n`` down to a plain layer output (for node ``at``); its layer index."""
        v = self.settle(n, at)
        self.head(v.k, at)
        if not v.plain:
            w = self.input_width(v, hint, at)
            diag = self.like(_diagonal, w, v.scale)
            recipe = LayerRecipe(diag, self.vector(v.shift, w, 0.0), get_activation("identity"), False, 1.0, n.name)
            v = self.append(recipe, v.k, w, w, at)
            self.env[n] = v
        return v.k

    # ----------------------------------------------------------------- the walk

    def run(self, nodes: list[fx.Node]) -> Program:
        for node in nodes:
            if node.op == "placeholder":
                self.env[node] = self.placeholder(node)
            elif node.op == "get_attr":
                self.env[node] = self.get_attr(node)
            elif node.op == "output":
                self.output(node)
            else:
                self.env[node] = self.call(node)
        shapes = [None if t is None else tuple(t.shape) for t in self.now]
        assert self.d is not None  # output() made sure a Linear read the input
        return Program(self.layers, self.sources, shapes, self.d, self.stochastic, *self.watch())

    def placeholder(self, node: fx.Node) -> Any:
        if self.inputs == 0:
            self.inputs = 1
            return Out(-1)
        if node.args:  # an argument with a default: a constant
            return node.args[0]
        raise self.fail(
            node,
            "forward takes more than one tensor; an xderiv network maps one input x of shape (..., d) "
            "(concatenate the inputs, e.g. torch.cat([x, t], -1), before calling the module)",
        )

    def get_attr(self, node: fx.Node) -> Expr:
        target = str(node.target)
        if target in self.tracer.constants:
            return Constant(self.tracer.constants[target])
        path, _, name = target.rpartition(".")
        try:
            return self.source(self.root.get_submodule(path), name)
        except AttributeError:
            raise self.fail(node, f"{target} is not a tensor of the module") from None

    def output(self, node: fx.Node) -> None:
        (out,) = node.args
        if not isinstance(out, fx.Node) or not isinstance(self.env.get(out), Stream):
            raise self.fail(node, "forward must return one tensor computed from its input")
        if self.base(out, node) < 0:
            raise ValueError("from_torch: the module holds no Linear layer")

    def watch(
        self,
    ) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], tuple[str, ...]]], list[tuple[dict[str, Any], str]]]:
        """What the program depends on: children of traced modules, Python attributes, mapped modules' tensors."""
        ref = next((layer.weight for layer in self.layers if not layer.weight.derived), None)
        while isinstance(ref, Transposed):
            ref = ref.inner
        self.ref[0] = ref if ref is not None else self._any_tensor()
        children: list[dict[str, Any]] = []
        scalars: list[tuple[dict[str, Any], tuple[str, ...]]] = []
        tensors: list[tuple[dict[str, Any], str]] = []
        for _, m in self.root.named_modules():
            if _is_linear(m):
                continue
            if not self.acts.is_module(m):
                children.append(m._modules)
            names = tuple(k for k, v in m.__dict__.items() if not k.startswith("_") and _is_scalar(v))
            if names:
                scalars.append((m.__dict__, names))
            if self.acts.is_module(m):  # a mapping may read its tensors: read it again when they change
                for d in (m._parameters, m._buffers, m.__dict__):
                    tensors += [(d, k) for k, v in d.items() if isinstance(v, torch.Tensor)]
        return children, scalars, tensors

    def _any_tensor(self) -> Expr:
        for i, t in enumerate(self.now):
            if isinstance(t, torch.Tensor) and t.is_floating_point():
                return Source(i)
        raise ValueError("from_torch: the module holds no floating-point tensor to take dtype and device from")

    # ----------------------------------------------------------------- calls

    def call(self, node: fx.Node) -> Any:
        args = fx.node.map_arg(node.args, self.env.__getitem__)
        kwargs = fx.node.map_arg(node.kwargs, self.env.__getitem__)
        streams = [a for a in _flat((args, kwargs)) if isinstance(a, Stream)]
        if node.op == "call_module":
            return self.call_module(node, args, kwargs, streams)
        target = node.target if node.op == "call_function" else str(node.target)
        if not streams:
            fn = node.target if node.op == "call_function" else _method(str(node.target))
            return Apply(fn, args, kwargs)  # type: ignore[arg-type]
        if target in _JOINS:
            raise self.fail(node, "it joins several tensors; an xderiv network is one chain of layers")
        first = node.args[0] if node.args else None
        if not isinstance(first, fx.Node) or not isinstance(self.env[first], Stream):
            if target in _ARITH and len(streams) == 1:
                return self.arithmetic(node, _ARITH[target], args, kwargs)
            raise self.fail(node, "the input-dependent tensor must be its first argument")
        act = self.activation_call(node, target, args, kwargs)
        if act is not None:
            if target in _DROPOUT_FUNCTIONS and _training_arg(node):
                self.stochastic = True
            return self.activate(node, first, act)
        if target in _ARITH:
            return self.arithmetic(node, _ARITH[target], args, kwargs)
        if target is torch.nn.functional.linear:
            return self.functional_linear(node, first, args, kwargs)
        if target in _MATMUL and len(args) == 2 and not kwargs:
            return self.matmul(node, first, args[1])
        why = not_elementwise(target)
        raise self.fail(
            node,
            f"{_target_name(node)} is not a Linear, a known activation or an affine operation "
            + (
                f"({why}: no xderiv layer computes it; take it out of forward)"
                if why
                else "(if it is an elementwise activation, the same scalar function on every feature, map it "
                "with from_torch(..., activations={fn: 'name' or an xderiv Activation}))"
            ),
            TypeError,
        )

    def activation_call(self, node: fx.Node, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        rest = args[1:]
        if any(isinstance(a, Stream) for a in _flat((rest, kwargs))):
            return None
        constant = [self.value(a) for a in rest]
        try:
            return self.acts.of_function(target, tuple(constant), {k: self.value(v) for k, v in kwargs.items()})
        except (TypeError, ValueError) as e:  # the activation's reading was refused: no other reading is tried
            raise self.mapping_error(node, str(e)) from e

    def call_module(self, node: fx.Node, args: tuple[Any, ...], kwargs: dict[str, Any], streams: list[Any]) -> Any:
        m = self.root.get_submodule(str(node.target))
        first = node.args[0] if node.args else None
        if not (_is_linear(m) or self.acts.is_module(m)):
            known = ", ".join(sorted({cls.__name__ for cls in self.acts.modules}))
            name = type(m).__name__
            why = not_elementwise(type(m))
            raise self.fail(
                node,
                f"{name} is not supported; use nn.Linear and the activation modules {known}"
                + (
                    f". {why}: no xderiv layer computes it (xderiv networks chain Linear maps, elementwise "
                    "activations and per-feature affine maps); take it out of forward"
                    if why
                    else f", or, if {name} is an elementwise activation (the same scalar function on every "
                    f"feature, holding no Parameters), map it with from_torch(..., activations={{{name}: "
                    "'name' or an xderiv Activation})"
                ),
                TypeError,
            )
        if len(node.args) != 1 or kwargs or not isinstance(first, fx.Node) or len(streams) != 1:
            raise self.fail(node, "expected one input tensor computed from the module's input")
        if _is_linear(m):
            weight, bias = self.source(m, "weight"), self.source(m, "bias")
            n_in, n_out = (int(n) for n in self.value(weight).shape[::-1])  # (out, in)
            return self.linear(node, first, Transposed(weight), bias, n_in, n_out)
        self.check_elementwise(node, m)
        try:
            act = self.acts.of_module(m)
        except (TypeError, ValueError) as e:  # the activation's reading was refused: no other reading is tried
            raise self.mapping_error(node, str(e)) from e
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.training:
            self.stochastic = True
        return self.activate(node, first, act)

    def mapping_error(self, node: fx.Node, why: str) -> MappingError:
        """A refused ``activations=`` entry (the caller's to fix: no other reading of the module is tried)."""
        return MappingError(str(self.fail(node, why)))

    def check_elementwise(self, node: fx.Node, m: nn.Module) -> None:
        """Refuse a mapped activation module that cannot be one scalar function for every feature."""
        for path, sub in m.named_modules():
            why = not_elementwise(type(sub))
            if why is not None:
                where = f" (its submodule {path})" if path else ""
                raise self.mapping_error(node, f"{why}{where}; an activations= entry must be an elementwise function")
        params = [name for name, _ in m.named_parameters()]
        if params:
            raise self.mapping_error(
                node,
                f"{type(m).__name__} is mapped as an activation but holds Parameters ({', '.join(params)}): an "
                "activation is one fixed scalar function for every feature, gradients would not reach them. "
                "Write the parameter in forward instead (torch.tanh(self.a * z) is folded into the layer)",
            )
        tensors = [(name, t) for name, t in m.named_buffers()]
        tensors += [(k, v) for k, v in m.__dict__.items() if isinstance(v, torch.Tensor)]
        for name, t in tensors:
            if t.numel() > 1:
                raise self.mapping_error(
                    node,
                    f"{type(m).__name__} is mapped as an activation but holds the tensor {name} of shape "
                    f"{tuple(t.shape)}: an xderiv activation is one scalar function for every feature "
                    "(only scalar tensors can parametrise it)",
                )

    def linear(self, node: fx.Node, x: fx.Node, weight: Expr, bias: Expr | None, n_in: int, n_out: int) -> Pre:
        k = self.base(x, node, hint=n_in)
        have = self.width(k)
        if have is not None and have != n_in:
            raise self.fail(node, f"it takes {n_in} features but its input has {have}")
        if k < 0:
            self.d = n_in
        now = self.value(bias)
        if now is not None and (not isinstance(now, torch.Tensor) or tuple(now.shape) != (n_out,)):
            raise self.fail(node, f"its bias must have shape ({n_out},)")
        return Pre(k, weight, bias, n_in, n_out, node.name)

    def functional_linear(self, node: fx.Node, x: fx.Node, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Pre:
        params = dict(zip(("input", "weight", "bias"), args))
        params.update(kwargs)
        weight, bias = params.get("weight"), params.get("bias")
        if not isinstance(weight, Expr) or not (bias is None or isinstance(bias, Expr)):
            raise self.fail(node, "F.linear needs a constant weight and bias (tensors of the module)")
        w = self.value(weight)
        if not isinstance(w, torch.Tensor) or w.ndim != 2:
            raise self.fail(node, "F.linear needs a 2-D weight")
        return self.linear(node, x, Transposed(weight), bias, int(w.shape[1]), int(w.shape[0]))

    def matmul(self, node: fx.Node, x: fx.Node, weight: Any) -> Pre:
        w = self.value(weight)
        if not isinstance(weight, Expr) or not isinstance(w, torch.Tensor) or w.ndim != 2:
            raise self.fail(node, "only u @ W with a constant 2-D W (a tensor of the module) is supported")
        return self.linear(node, x, weight, None, int(w.shape[0]), int(w.shape[1]))

    def activate(self, node: fx.Node, x: fx.Node, act: Activation) -> Any:
        v = self.env[x]
        if act.linear:
            return v
        if isinstance(v, Act):
            raise self.fail(
                node,
                f"it applies {act.name} to the output of {v.activation.name}: two activations in a row; "
                "xderiv layers are Linear followed by at most one activation",
            )
        if isinstance(v, Out):
            if v.plain:
                raise self.fail(
                    node,
                    f"{act.name} is an activation with no Linear layer right before it; xderiv layers are "
                    "Linear followed by at most one activation",
                )
            k = v.k
            self.head(k, node)
            w = self.input_width(v, None, node)
            diag = self.like(_diagonal, w, v.scale)
            v = Pre(k, diag, self.vector(v.shift, w, 0.0), w, w, node.name)
            if k < 0:
                self.d = w
        assert isinstance(v, Pre)
        if _is_number(v.scale) and v.shift is None and v.scale != 1.0:
            scaled = self.acts.with_scale(act, float(v.scale))
            if scaled is not None:  # σ(a z) as an activation: W and b stay views
                return Act(Pre(v.k, v.weight, v.bias, v.n_in, v.width, v.node), scaled)
        return Act(v, act)

    def constant_operand(self, node: fx.Node, c: Any) -> Any:
        if _is_number(c):
            return float(c)
        now = self.value(c)
        if not isinstance(c, Expr) or not isinstance(now, torch.Tensor):
            raise self.fail(node, f"unsupported operand {now!r}")
        if not (now.ndim <= 1 or (now.ndim == 2 and now.shape[0] == 1)):
            raise self.fail(
                node,
                f"a constant of shape {tuple(now.shape)} here is not a per-feature scale or shift "
                "(shapes (), (w,) or (1, w))",
            )
        return c

    def arithmetic(self, node: fx.Node, how: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        kwargs = dict(kwargs)
        alpha = kwargs.pop("alpha", 1)
        if kwargs.pop("rounding_mode", None) is not None or kwargs:
            raise self.fail(node, f"unsupported arguments {sorted(kwargs) or ['rounding_mode']}")
        if len(args) != (1 if how in ("neg", "pos") else 2):
            raise self.fail(node, "unsupported call form (pass the operands positionally)")
        if how in ("neg", "pos"):
            n = node.args[0]
            assert isinstance(n, fx.Node)
            return self.scaled(node, n, "neg", None) if how == "neg" else self.env[n]
        a, b = args
        if alpha != 1:
            if isinstance(b, Stream):
                raise self.fail(node, "alpha= on an input-dependent tensor is not supported")
            b = _times(b, self.constant_operand(node, alpha))
        na, nb = node.args[0], node.args[1]
        if isinstance(a, Stream) and isinstance(b, Stream):
            if how in ("add", "sub"):
                return self.residual(node, na, nb, how)  # type: ignore[arg-type]
            raise self.fail(
                node,
                f"it {'multiplies' if how == 'mul' else 'divides'} two tensors that both depend on the input; "
                "xderiv layers are affine maps followed by elementwise activations",
            )
        if isinstance(a, Stream):
            return self.scaled(node, na, how, self.constant_operand(node, b))  # type: ignore[arg-type]
        if how == "div":
            raise self.fail(node, "it divides by a tensor that depends on the input")
        c = self.constant_operand(node, a)
        return self.scaled(node, nb, {"sub": "rsub"}.get(how, how), c)  # type: ignore[arg-type]

    def scaled(self, node: fx.Node, n: fx.Node, how: str, c: Any) -> Any:
        v = self.env[n]
        if isinstance(v, Act):
            if how in ("mul", "div", "neg") and (c is None or _is_number(c)):
                f = -1.0 if c is None else (c if how == "mul" else 1.0 / c)
                return Act(v.pre, v.activation, v.factor * f)
            v = self.settle(n, node)
        if isinstance(v, Out):
            s, t = _affine(v.scale, v.shift, how, c)
            return Out(v.k, s, t)
        s, t = _affine(v.scale, v.shift, how, c)
        return Pre(v.k, v.weight, v.bias, v.n_in, v.width, v.node, s, t)

    def residual(self, node: fx.Node, na: fx.Node, nb: fx.Node, how: str) -> Out:
        a, b = self.env[na], self.env[nb]
        if isinstance(a, Out) and a.plain and isinstance(b, (Act, Pre)):
            skip, branch, sign = a, b, (1.0 if how == "add" else -1.0)
        elif isinstance(b, Out) and b.plain and isinstance(a, (Act, Pre)) and how == "add":
            skip, branch, sign = b, a, 1.0
        else:
            raise self.not_residual(node, "one side must be u and the other h*act(linear(u))")
        if isinstance(branch, Pre):
            branch = Act(branch, get_activation("identity"))
        pre = branch.pre
        if pre.k != skip.k:
            raise self.not_residual(node, "the branch does not start from the tensor it is added to")
        if pre.n_in != pre.width:
            raise self.not_residual(node, f"its Linear maps {pre.n_in} to {pre.width} features; it must be square")
        self.head(skip.k, node)
        w, bias = self.fold(pre)
        recipe = LayerRecipe(w, bias, branch.activation, True, sign * branch.factor, pre.node)
        return self.append(recipe, skip.k, pre.n_in, pre.n_in, node)

    def not_residual(self, node: fx.Node, why: str) -> Exception:
        return self.fail(
            node,
            f"it adds two tensors that both depend on the input but is not a residual update "
            f"u + h*act(linear(u)) (one square Linear reading u, h a Python number): {why}",
        )


def _training_arg(node: fx.Node) -> bool:
    """The ``training`` argument of a dropout function call (``F.dropout(x, p, training)``; default True)."""
    if "training" in node.kwargs:
        return bool(node.kwargs["training"])
    if "train" in node.kwargs:
        return bool(node.kwargs["train"])
    return bool(node.args[2]) if len(node.args) > 2 else True


def _state(t: Any) -> Any:
    """Identity, storage, version and (a scalar's) value of a tensor (anything else as it is).

    The value is there for edits through ``.data`` (``m.a.data.fill_(2.0)``),
    which bump no ``_version``; a mapped activation module holds only scalar
    tensors (:meth:`_Reader.check_elementwise`).
    """
    if not isinstance(t, torch.Tensor):
        return t
    value = repr(t.detach().item()) if t.numel() == 1 and t.device.type != "meta" else None
    return (id(t), t.data_ptr(), t.dtype, t.device, tuple(t.shape), t._version, value)


def _is_scalar(v: Any) -> bool:
    if isinstance(v, tuple):
        return all(_is_scalar(x) for x in v)
    return type(v) in _SCALARS


__all__ = [
    "NOT_ELEMENTWISE_FUNCTIONS",
    "NOT_ELEMENTWISE_MODULES",
    "ActivationTable",
    "Program",
    "not_elementwise",
    "read",
]
