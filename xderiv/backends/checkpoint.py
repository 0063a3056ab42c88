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

The torch and JAX wrappers are :mod:`xderiv.interop.adapters`'s, registered when xderiv is
imported (:func:`register_recomputer`): this module imports no array library.
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
    library = "torch" if name in ("array_api_compat.torch", "torch") else "jax" if name == "jax.numpy" else None
    recompute = _RECOMPUTERS.get(library) if library else None
    return recompute(arrays, opaque) if recompute is not None else None


_RECOMPUTERS: dict[str, Callable[[Iterable[Any], bool], Wrapper[Any] | None]] = {}


def register_recomputer(library: str, recompute: Callable[[Iterable[Any], bool], Wrapper[Any] | None]) -> None:
    """Register ``library``'s (``"torch"``, ``"jax"``) ``recompute(arrays, opaque)``, which is
    :func:`recomputing` for a call on that library's arrays."""
    _RECOMPUTERS[library] = recompute
