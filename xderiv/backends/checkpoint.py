r"""Recomputing a chunk of points in the backward pass: ``torch.utils.checkpoint`` and ``jax.checkpoint``.

A call split into chunks of points (:func:`xderiv.set_memory_budget`) bounds its working memory,
but under autodiff every chunk's intermediates stay alive until the gradient is taken: a training
step keeps ``n / chunk`` chunks' worth of activations.  With ``checkpoint=True`` each chunk runs
as a *checkpointed* function instead: autodiff keeps only its inputs (a slice of ``x``, the
weights, which the caller holds anyway) and its outputs, and runs the chunk again, one at a time,
when the backward pass reaches it.  What the backward pass holds is then one chunk's
intermediates, at the cost of a second forward pass of every chunk (about a third more time for
a value-and-gradient step of a second-order operator).

:func:`recomputing` chooses the wrapper for a call's namespace:

- **torch**: ``torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False)``, only while
  autograd records the call (``torch.is_grad_enabled()`` and ``x`` or a weight requires grad),
  so inference (``torch.no_grad()``, or nothing requiring grad) runs exactly as without it.  The
  non-reentrant form sees tensors the chunk closes over (the weights) and traces under
  ``torch.compile(fullgraph=True)``, where it becomes the region AOTAutograd recomputes.
- **JAX**: ``jax.checkpoint(fn)`` (remat), only while the call is traced (``x`` or a weight is a
  ``jax.core.Tracer``: under ``jax.grad``, ``jax.jit``, ``jax.vmap``; for a function of ``x``,
  whenever JAX is tracing); a checkpoint changes nothing but what differentiation saves, so
  under ``jit`` alone it costs nothing, and eager calls on concrete arrays skip it.  The setting
  is read when the call is traced: a function ``jax.jit`` already traced keeps what it saw.
- any other namespace (NumPy, CuPy, array-api-strict, dask): None, nothing is differentiated.

This module and :mod:`xderiv.backends.compile` are the only core modules that import torch or
JAX, inside the function, when asked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")

Wrapper = Callable[[Callable[..., T]], Callable[..., T]]


def recomputing(xp: Any, arrays: Iterable[Any], *, opaque: bool = False) -> Wrapper[Any] | None:
    """The wrapper that makes a chunk's function recompute in the backward pass, or None.

    Parameters
    ----------
    xp : namespace
        The call's array namespace (by its name: torch's and JAX's are recognised).
    arrays : iterable of arrays or None
        What the chunk is differentiated with respect to: the points ``x`` and the weights
        (None entries skipped).
    opaque : bool, default False
        The chunk may close over arrays not in ``arrays`` (a function of ``x``): wrap whenever
        differentiation could be recording, torch's grad mode on or JAX tracing.

    Returns
    -------
    callable or None
        ``wrap(fn)``, a function with ``fn``'s arguments and results (arrays, or lists and
        tuples of arrays and None) that recomputes ``fn`` when its gradient is taken; None when
        nothing is being differentiated, and the chunk runs as it is.
    """
    name = getattr(xp, "__name__", "")
    if name in ("array_api_compat.torch", "torch"):
        return _torch(arrays, opaque)
    if name == "jax.numpy":
        return _jax(arrays, opaque)
    return None


def _torch(arrays: Iterable[Any], opaque: bool) -> Wrapper[Any] | None:
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


def _jax(arrays: Iterable[Any], opaque: bool) -> Wrapper[Any] | None:
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
