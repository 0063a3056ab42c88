"""One call to the fastest path each backend has: :func:`compile` specialises an operator to a network.

``f = xd.compile(xd.laplacian, net)`` returns ``f(x, ...)`` equal to
``xd.laplacian(net, x, ...)``, traced once by what the network's backend does
best:

- **torch**: ``torch.compile(fullgraph=True)``, which fuses the elementwise
  chains of every layer (σ′ ⊙ (J W), squares, reductions, the residual add)
  into a few kernels; on CUDA with static shapes also
  ``mode="reduce-overhead"``, which replays the call from a CUDA graph (no
  kernel-launch or Python cost per call).
- **JAX**: ``jax.jit`` over the network's weights (so an optimizer's new
  weights are used without retracing) and the arguments.
- **NumPy, CuPy, array-api-strict, dask**: the eager call (NumPy has nothing
  to trace into; dask builds its own graph).

The first call pays the trace and compile (seconds; recompiled when shapes,
dtypes or devices change), later calls only the compiled kernels.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import warnings
from collections.abc import Callable
from typing import Any

import array_api_compat

from ..jets import is_graph
from ..models.networks import as_network
from .namespace import is_array


def compile(  # noqa: A001 - xd.compile mirrors torch.compile / jax.jit
    operator: Callable[..., Any],
    net: Any,
    /,
    *,
    dynamic: bool | None = False,
    cuda_graphs: bool | None = None,
    **fixed: Any,
) -> Callable[..., Any]:
    """``f(x, *args, **kwargs) == operator(net, x, *args, **fixed, **kwargs)``, compiled for ``net``'s backend.

    Parameters
    ----------
    operator : callable
        Any xderiv operator taking ``(net, x, ...)``: ``xd.value``,
        ``xd.jacobian``, ``xd.gradient``, ``xd.hessian``, ``xd.laplacian``,
        ``xd.derivatives``, ``xd.trace_hessian``, ``xd.hessian_diagonal``,
        ``xd.hvp``, ``xd.directional``, ``xd.divergence``, ``xd.taylor``,
        ``xd.biharmonic``, ``xd.partial``.  On JAX, array arguments are
        traced and all others (orders, multi-indices, ``coords``, ``mode``)
        are static: each distinct value of those compiles once.
    net : network
        A Sequential, Potential, composite or converted torch module.  Its
        weights are read at every call (optimizer steps are seen).
    dynamic : bool or None, default False
        torch only: trace for varying batch sizes (``True``), specialise to
        each shape seen (``False``, fastest; a new shape recompiles), or let
        torch decide (``None``).
    cuda_graphs : bool, optional
        torch on CUDA only: replay from a CUDA graph (``mode="reduce-overhead"``).
        Default: on for CUDA with static shapes.  The outputs of a replayed
        call are overwritten by the next call: clone them to keep them.
    **fixed
        Keyword arguments of ``operator`` fixed for every call (``mode``,
        ``coords``, ``directions``, ...).

    Returns
    -------
    callable
        ``f(x, *args, **kwargs)``.

    Examples
    --------
    >>> lap = xd.compile(xd.laplacian, net, mode="forward")   # doctest: +SKIP
    >>> lap(x)                                                  # compiles on the first call
    """
    network = net if is_graph(net) else as_network(net)
    xp = getattr(network, "xp", None)

    def call(x: Any, *args: Any, **kwargs: Any) -> Any:
        return operator(net, x, *args, **fixed, **kwargs)

    if xp is None:  # a function of x without weights: the backend is the first x's
        return _by_input(call, operator, net, fixed)
    if array_api_compat.is_torch_namespace(xp) and is_graph(network):
        return _eager_graph(call, operator)
    if array_api_compat.is_torch_namespace(xp):
        return _torch(call, net, network.device, dynamic, cuda_graphs)
    if array_api_compat.is_jax_namespace(xp):
        return _jax(operator, net, fixed)
    return functools.wraps(operator)(call)


def _by_input(
    call: Callable[..., Any], operator: Callable[..., Any], net: Any, fixed: dict[str, Any]
) -> Callable[..., Any]:
    """The compiled call for the namespace of each ``x`` it meets, made on first use."""
    chosen: dict[int, Callable[..., Any]] = {}

    def run(x: Any, *args: Any, **kwargs: Any) -> Any:
        xp = array_api_compat.array_namespace(x)
        fn = chosen.get(id(xp))
        if fn is None:
            if array_api_compat.is_torch_namespace(xp):
                fn = _eager_graph(call, operator)
            elif array_api_compat.is_jax_namespace(xp):
                fn = _jax(operator, net, fixed)
            else:
                fn = call
            chosen[id(xp)] = fn
        return fn(x, *args, **kwargs)

    return functools.wraps(operator)(run)


def _eager_graph(call: Callable[..., Any], operator: Callable[..., Any]) -> Callable[..., Any]:
    """A graph on torch runs eagerly: Dynamo does not trace the jet array (a Python object meeting tensors)."""
    warnings.warn(
        "xd.compile: a network that is not a chain of layers runs eagerly on torch (torch.compile cannot "
        "trace the jet engine's arrays); on JAX it is traced by jax.jit",
        stacklevel=3,
    )
    return functools.wraps(operator)(call)


def _torch(call: Callable[..., Any], net: Any, device: Any, dynamic: bool | None, cuda_graphs: bool | None) -> Any:
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


def _own_code(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with a code object of its own.

    Dynamo keeps its compiled graphs, and its limit of recompilations (8), per
    code object: every ``xd.compile`` shares the one of ``call`` above, so
    without a copy the ninth network compiled in a process would fail
    (``fullgraph=True`` turns the limit into an error).
    """
    code = fn.__code__.replace()  # a new code object, equal to the old one
    return types.FunctionType(code, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)


def _jax(operator: Callable[..., Any], net: Any, fixed: dict[str, Any]) -> Any:
    """``jax.jit`` over the weights and the array arguments; every other argument is static.

    Orders, multi-indices, coordinates and modes (``order=3``, ``(2, 1, 0)``, ``coords=[0, 2]``)
    shape the trace, so they are not traced: each distinct set of them has a trace of its own.
    """
    import jax

    traces: dict[Any, Callable[..., Any]] = {}
    returned: dict[Any, type] = {}  # key -> the dataclass the operator returns (xd.derivatives), if any

    def run(x: Any, *args: Any, **kwargs: Any) -> Any:
        at = tuple(i for i, a in enumerate(args) if is_array(a))
        names = tuple(sorted(k for k, v in kwargs.items() if is_array(v)))
        static_args = {i: a for i, a in enumerate(args) if i not in at}
        static_kwargs = {k: v for k, v in kwargs.items() if k not in names}
        key = (len(args), at, names, _frozen(static_args), _frozen(static_kwargs))
        traced = traces.get(key)
        if traced is None:

            def call(arrays: list[Any], x: Any, positional: list[Any], named: dict[str, Any]) -> Any:
                given = dict(zip(at, positional))
                full = [given[i] if i in given else static_args[i] for i in range(len(args))]
                out = operator(net.with_arrays(arrays), x, *full, **fixed, **static_kwargs, **named)
                if dataclasses.is_dataclass(out):  # not a pytree: its fields cross the jit boundary
                    returned[key] = type(out)
                    return {f.name: getattr(out, f.name) for f in dataclasses.fields(out)}
                return out

            traced = traces[key] = jax.jit(call)
        out = traced(net.arrays(), x, [args[i] for i in at], {k: kwargs[k] for k in names})
        return returned[key](**out) if key in returned else out

    return run


def _frozen(value: Any) -> Any:
    """A hashable stand-in for a static argument (lists and dicts as tuples), or a TypeError naming it."""
    if isinstance(value, dict):
        return tuple((k, _frozen(v)) for k, v in sorted(value.items(), key=lambda kv: str(kv[0])))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, *(_frozen(v) for v in value))
    try:
        hash(value)
    except TypeError:
        raise TypeError(
            f"xd.compile on JAX: argument {value!r} is neither an array (traced) nor hashable (static)"
        ) from None
    return (type(value).__name__, value)
