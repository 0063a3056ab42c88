"""What the core asks of particular array libraries, registered with it when xderiv is imported.

- NumPy's ``default_rng`` draws the factories' weights (:mod:`xderiv.backends.random`), the same
  numbers on every backend.
- ``torch.compile`` and ``jax.jit`` are :func:`xderiv.compile`'s compilers
  (:mod:`xderiv.backends.compile`).
- ``torch.utils.checkpoint`` and ``jax.checkpoint`` recompute a chunk of points in the backward pass
  under ``set_memory_budget(..., checkpoint=True)`` (:mod:`xderiv.backends.checkpoint`).

torch and JAX are imported inside the functions, when a call on their arrays asks: importing this
module imports neither.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import warnings
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import numpy as np

from ..backends.checkpoint import Wrapper, register_recomputer
from ..backends.compile import register_compiler
from ..backends.namespace import is_array
from ..backends.random import register_generator

T = TypeVar("T")


# --------------------------------------------------------------------------- xd.compile


@dataclasses.dataclass(frozen=True)
class _Arguments:
    """A compiled call's extra arguments split in two: arrays (inputs of the trace) and the rest (static: each
    distinct set of them has a trace of its own, ``key``).  Shared by the JAX and torch-graph compilers."""

    count: int
    at: tuple[int, ...]  # positions of the array positional arguments
    names: tuple[str, ...]  # names of the array keyword arguments
    static_args: dict[int, Any]
    static_kwargs: dict[str, Any]
    key: tuple[Any, ...]

    @classmethod
    def split(cls, args: tuple[Any, ...], kwargs: dict[str, Any], library: str) -> _Arguments:
        at = tuple(i for i, a in enumerate(args) if is_array(a))
        names = tuple(sorted(k for k, v in kwargs.items() if is_array(v)))
        static_args = {i: a for i, a in enumerate(args) if i not in at}
        static_kwargs = {k: v for k, v in kwargs.items() if k not in names}
        key = (len(args), at, names, _frozen(static_args, library), _frozen(static_kwargs, library))
        return cls(len(args), at, names, static_args, static_kwargs, key)

    def arrays(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        """The array arguments of a call: positional ones in order, keyword ones by name."""
        return [args[i] for i in self.at], {k: kwargs[k] for k in self.names}

    def call(self, fn: Callable[..., Any], x: Any, positional: list[Any], named: dict[str, Any]) -> Any:
        """``fn(x, *args, **kwargs)`` with the arrays given here and the static arguments put back."""
        given = dict(zip(self.at, positional))
        full = [given[i] if i in given else self.static_args[i] for i in range(self.count)]
        return fn(x, *full, **self.static_kwargs, **named)


class _Results:
    """A dataclass result (``xd.derivatives``) crossing a trace boundary as a dict of its fields, per trace key."""

    def __init__(self) -> None:
        self.types: dict[Any, type] = {}

    def out(self, key: Any, value: Any) -> Any:
        if dataclasses.is_dataclass(value):  # not a pytree
            self.types[key] = type(value)
            return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return value

    def back(self, key: Any, value: Any) -> Any:
        return self.types[key](**value) if key in self.types else value


def _torch_compile(
    call: Callable[..., Any], net: Any, device: Any, dynamic: bool | None, cuda_graphs: bool | None
) -> Any:
    import torch

    on_cuda = getattr(device, "type", None) == "cuda"
    graphs = (on_cuda and dynamic is False) if cuda_graphs is None else bool(cuda_graphs)
    if graphs and not on_cuda:
        raise ValueError(f"cuda_graphs=True needs a network on a CUDA device, this one is on {device}")
    compiled = torch.compile(
        _own_code(call), fullgraph=True, dynamic=dynamic, mode="reduce-overhead" if graphs else None
    )

    def run(x: Any, *args: Any, **kwargs: Any) -> Any:
        net.resolve()  # a converted module re-reads its Parameters here, outside the trace
        return compiled(x, *args, **kwargs)

    return run


def _torch_graph_compile(call: Callable[..., Any], net: Any, dynamic: bool | None, cuda_graphs: bool | None) -> Any:
    """A graph's operator on torch, traced to core aten operations by ``make_fx`` and compiled by ``torch.compile``.

    Dynamo cannot trace the jet engine's arrays (Python objects meeting tensors in ``x @ W``), so the
    call is first run once under ``make_fx``: every jet rule becomes the aten operations it issues, and
    the tensors the network reads (a converted module's Parameters and buffers, the tensors a function
    closes over) stay in the graph as references to those very tensors.  ``torch.compile`` then fuses the
    graph's elementwise chains; Parameters in it receive gradients as usual, and in-place updates
    (optimizer steps, ``.data`` edits) are read at every call.

    A trace is kept per input signature: the shapes (also with ``dynamic=True``, which warns so), dtypes
    and devices of ``x`` and the array arguments, every other argument's value, grad mode, the tree and
    attributes of every converted module in ``net``, and the dtype, device and shape of every tensor the
    trace read, and which tensor objects a converted module holds.  A change in any of them traces again,
    so a cast module (``model.double()``), a new activation or a reassigned buffer is never served a stale
    graph.  What a trace cannot see is a function that starts reading *other* tensor objects
    (a closure variable rebound to a new tensor): compile it again.
    """
    import torch
    from torch.fx.experimental.proxy_tensor import make_fx

    if dynamic:
        warnings.warn(
            "xd.compile(..., dynamic=True): a graph on torch is traced per batch shape (the jet engine computes "
            "its shapes as Python integers), so each new shape traces and compiles again",
            stacklevel=3,
        )
        dynamic = False
    traces: dict[Any, tuple[Callable[..., Any], list[tuple[Any, tuple[Any, ...]]]]] = {}
    results = _Results()

    def run(x: Any, *args: Any, **kwargs: Any) -> Any:
        split = _Arguments.split(args, kwargs, "torch")
        for value in (*split.static_args.values(), *split.static_kwargs.values()):
            if hasattr(value, "bit_generator"):
                raise TypeError(
                    "xd.compile of a graph on torch: a numpy.random.Generator would be drawn once, when the call is "
                    "traced; pass seed= as an int or a 0-d integer tensor (a new value per call draws anew)"
                )
        positional, named = split.arrays(args, kwargs)
        arrays = [x, *positional, *named.values()]
        key = (split.key, tuple(_signature(a) for a in arrays), torch.is_grad_enabled(), _structure(net))
        entry = traces.get(key)
        if entry is not None and any(_signature(t) != sig for t, sig in entry[1]):
            entry = None  # a tensor the trace reads changed dtype, device or shape: trace again
        if entry is None:

            def traced(x: Any, *given: Any) -> Any:
                k = len(split.at)
                out = split.call(call, x, list(given[:k]), dict(zip(split.names, given[k:])))
                return results.out(key, out)

            _probe_converted(net, x)  # outside the trace: the probe reads numbers back to the host
            graph = make_fx(traced)(*arrays)
            read = [getattr(graph, n.target) for n in graph.graph.nodes if n.op == "get_attr"]
            tensors = [(t, _signature(t)) for t in read if isinstance(t, torch.Tensor)]
            on_cuda = x.device.type == "cuda"
            replay = on_cuda if cuda_graphs is None else bool(cuda_graphs)
            if replay and not on_cuda:
                raise ValueError(f"cuda_graphs=True needs points on a CUDA device, these are on {x.device}")
            compiled = torch.compile(graph, fullgraph=True, dynamic=False, mode="reduce-overhead" if replay else None)
            entry = traces[key] = (compiled, tensors)
        return results.back(key, entry[0](*arrays))

    return run


def _structure(net: Any) -> tuple[Any, ...]:
    """What a trace follows in every converted torch module among ``net`` and its parts: the module tree and
    attributes, and the identity of every tensor it holds (a reassigned buffer or Parameter traces again)."""
    from .torch_graph import _fingerprint

    module = getattr(net, "module", None)
    own: tuple[Any, ...] = ()
    if module is not None and hasattr(module, "named_modules"):
        held = [
            id(v)
            for m in module.modules()
            for v in (*m._parameters.values(), *m._buffers.values(), *m.__dict__.values())
            if hasattr(v, "data_ptr")
        ]
        own = (_fingerprint(module), tuple(held))
    return own + tuple(s for part in getattr(net, "parts", ()) for s in _structure(part))


def _probe_converted(net: Any, x: Any) -> None:
    """Run the conversion probe (``module(x) == translation(x)``) of every converted module among ``net``'s parts."""
    check = getattr(net, "check", None)
    if callable(check) and hasattr(getattr(net, "module", None), "named_modules"):
        check(x.detach())
    for part in getattr(net, "parts", ()):
        _probe_converted(part, x)


def _signature(t: Any) -> tuple[Any, ...]:
    """What a trace depends on in a tensor: its shape, dtype, device and whether it requires gradients."""
    return (tuple(t.shape), t.dtype, t.device, t.requires_grad)


def _own_code(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with a code object of its own.

    Dynamo keeps its compiled graphs, and its limit of recompilations (8), per
    code object: every ``xd.compile`` shares the one of its ``call``, so
    without a copy the ninth network compiled in a process would fail
    (``fullgraph=True`` turns the limit into an error).
    """
    code = fn.__code__.replace()  # a new code object, equal to the old one
    return types.FunctionType(code, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)


def _jax_compile(operator: Callable[..., Any], net: Any, fixed: dict[str, Any]) -> Any:
    """``jax.jit`` over the weights and the array arguments; every other argument is static.

    Orders, multi-indices, coordinates and modes (``order=3``, ``(2, 1, 0)``, ``coords=[0, 2]``)
    shape the trace, so they are not traced: each distinct set of them has a trace of its own.
    """
    import jax

    traces: dict[Any, Callable[..., Any]] = {}
    results = _Results()

    def run(x: Any, *args: Any, **kwargs: Any) -> Any:
        split = _Arguments.split(args, kwargs, "JAX")
        traced = traces.get(split.key)
        if traced is None:

            def call(arrays: list[Any], x: Any, positional: list[Any], named: dict[str, Any]) -> Any:
                op = functools.partial(operator, net.with_arrays(arrays), **fixed)
                return results.out(split.key, split.call(op, x, positional, named))

            traced = traces[split.key] = jax.jit(call)
        return results.back(split.key, traced(net.arrays(), x, *split.arrays(args, kwargs)))

    return run


def _frozen(value: Any, library: str = "JAX") -> Any:
    """A hashable stand-in for a static argument (lists and dicts as tuples), or a TypeError naming it."""
    if isinstance(value, dict):
        return tuple((k, _frozen(v, library)) for k, v in sorted(value.items(), key=lambda kv: str(kv[0])))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, *(_frozen(v, library) for v in value))
    try:
        hash(value)
    except TypeError:
        raise TypeError(
            f"xd.compile on {library}: argument {value!r} is neither an array (traced) nor hashable (static)"
        ) from None
    return (type(value).__name__, value)


# --------------------------------------------------------------------------- checkpointed chunks


def _torch_recompute(arrays: Iterable[Any], opaque: bool) -> Wrapper[Any] | None:
    import torch
    from torch.utils.checkpoint import checkpoint

    if not torch.is_grad_enabled():
        return None
    if not opaque and not any(a is not None and a.requires_grad for a in arrays):
        return None

    def wrap(fn: Callable[..., T]) -> Callable[..., T]:
        def run(*args: Any) -> T:
            # A chain's chunk draws no random numbers (xderiv's directions come from its
            # counter-based generator, before the chunks); a function of x may (dropout), so
            # torch's RNG state is restored for its recomputation.
            return checkpoint(fn, *args, use_reentrant=False, preserve_rng_state=opaque)  # type: ignore[no-any-return]

        return run

    return wrap


def _jax_recompute(arrays: Iterable[Any], opaque: bool) -> Wrapper[Any] | None:
    import jax

    traced = any(isinstance(a, jax.core.Tracer) for a in arrays if a is not None)
    if not traced and not (opaque and _transforming()):
        return None
    return jax.checkpoint  # type: ignore[no-any-return]


def _transforming() -> bool:
    """Whether JAX is tracing (``grad``, ``jit``, ``vmap``...) rather than running eagerly.

    A function of ``x`` may close over traced weights while ``x`` itself is concrete
    (``jax.grad`` of a loss in the weights).  JAX's trace context says so; where this JAX has
    none to read, the answer is yes (a checkpoint of an eager call costs a retrace, never a
    wrong result).
    """
    try:
        from jax._src import core

        return not core.trace_ctx.is_top_level()
    except (ImportError, AttributeError):  # pragma: no cover - other JAX versions
        return True


# --------------------------------------------------------------------------- registration

register_generator(np.random.default_rng, np)
register_compiler("torch", _torch_compile)
register_compiler("jax", _jax_compile)
register_compiler("torch-graph", _torch_graph_compile)
register_recomputer("torch", _torch_recompute)
register_recomputer("jax", _jax_recompute)
