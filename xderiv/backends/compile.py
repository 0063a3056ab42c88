"""One call to the fastest path each backend has: :func:`compile` specialises an operator to a network.

``f = xd.compile(xd.laplacian, net)`` returns ``f(x, ...)`` equal to
``xd.laplacian(net, x, ...)``, traced once by what the network's backend does
best:

- **torch**: ``torch.compile(fullgraph=True)``, which fuses the elementwise
  chains of every layer (σ′ ⊙ (J W), squares, reductions, the residual add)
  into a few kernels; on CUDA with static shapes also
  ``mode="reduce-overhead"``, which replays the call from a CUDA graph (no
  kernel-launch or Python cost per call).  A graph (``xd.function``, a converted
  module that is not a chain) is first traced to core aten operations by
  ``make_fx`` (Dynamo cannot trace the jet engine's arrays), then compiled the
  same way; a new input signature, or a converted module whose structure or
  tensors' dtypes change, traces again.
- **JAX**: ``jax.jit`` over the network's weights (so an optimizer's new
  weights are used without retracing) and the arguments.
- **NumPy, CuPy, array-api-strict, dask**: the eager call (NumPy has nothing
  to trace into; dask builds its own graph).

The first call pays the trace and compile (seconds; recompiled when shapes,
dtypes or devices change), later calls only the compiled kernels.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import array_api_compat

from ..jets import is_graph
from ..models.networks import as_network

_COMPILERS: dict[str, Callable[..., Callable[..., Any]]] = {}
"""The compilers of the libraries that have one, by name: ``"torch"`` (``torch.compile``), ``"torch-graph"``
(``make_fx`` then ``torch.compile``, for graphs) and ``"jax"`` (``jax.jit``), registered by
:mod:`xderiv.interop.adapters` when xderiv is imported."""


def register_compiler(library: str, compiler: Callable[..., Callable[..., Any]]) -> None:
    """Register ``library``'s compiler (``"torch"``: ``compiler(call, net, device, dynamic, cuda_graphs)``;
    ``"torch-graph"``: ``compiler(call, net, dynamic, cuda_graphs)``; ``"jax"``: ``compiler(operator, net, fixed)``),
    each returning the compiled ``f(x, *args, **kwargs)``."""
    _COMPILERS[library] = compiler


def _torch(call: Callable[..., Any], net: Any, device: Any, dynamic: bool | None, cuda_graphs: bool | None) -> Any:
    return _COMPILERS["torch"](call, net, device, dynamic, cuda_graphs)


def _jax(operator: Callable[..., Any], net: Any, fixed: dict[str, Any]) -> Any:
    return _COMPILERS["jax"](operator, net, fixed)


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
        A Sequential, Potential, composite, converted torch module or
        ``xd.function``.  Its weights are read at every call (optimizer steps
        are seen).  A graph on torch is traced to core aten operations first;
        a function that starts reading other tensor objects (a closure
        variable rebound) must be compiled again.
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
        return _by_input(call, operator, net, fixed, dynamic, cuda_graphs)
    if array_api_compat.is_torch_namespace(xp) and is_graph(network):
        return functools.wraps(operator)(_COMPILERS["torch-graph"](call, net, dynamic, cuda_graphs))
    if array_api_compat.is_torch_namespace(xp):
        return _torch(call, net, network.device, dynamic, cuda_graphs)
    if array_api_compat.is_jax_namespace(xp):
        return _jax(operator, net, fixed)
    return functools.wraps(operator)(call)


def _by_input(
    call: Callable[..., Any],
    operator: Callable[..., Any],
    net: Any,
    fixed: dict[str, Any],
    dynamic: bool | None,
    cuda_graphs: bool | None,
) -> Callable[..., Any]:
    """The compiled call for the namespace of each ``x`` it meets, made on first use."""
    chosen: dict[int, Callable[..., Any]] = {}

    def run(x: Any, *args: Any, **kwargs: Any) -> Any:
        xp = array_api_compat.array_namespace(x)
        fn = chosen.get(id(xp))
        if fn is None:
            if array_api_compat.is_torch_namespace(xp):
                fn = _COMPILERS["torch-graph"](call, net, dynamic, cuda_graphs)
            elif array_api_compat.is_jax_namespace(xp):
                fn = _jax(operator, net, fixed)
            else:
                fn = call
            chosen[id(xp)] = fn
        return fn(x, *args, **kwargs)

    return functools.wraps(operator)(run)
