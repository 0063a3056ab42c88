"""One public call: resolve namespace/dtype/device once, flatten the batch, chunk, restore shapes.

Every public operator is a *kernel* ``kernel(call, *per_point) -> tuple`` on
flattened points ``(n, d)`` returning arrays of shape ``(n, m, ...)``;
:func:`run` prepares the call, splits ``n`` into chunks that fit the memory
budget, concatenates, and restores the batch dims of ``x`` (dropping the
output axis of a :class:`~xderiv.Potential`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ._namespace import Array, Context, flatten_batch, is_lazy, resolve_call
from .layers import Dense, layer_params
from .networks import Plan, Sequential, _Network

MODES = ("auto", "forward", "backward")

_BUDGET = {"bytes": 1 << 30}


def set_memory_budget(nbytes: int) -> None:
    """Set the working-memory budget of one call (default 1 GiB).

    Requests whose temporaries would exceed it are split into chunks of
    points; the outputs themselves are not counted.  A request where a single
    point exceeds the budget raises :class:`MemoryError` before allocating.
    """
    if int(nbytes) <= 0:
        raise ValueError(f"memory budget must be positive, got {nbytes}")
    _BUDGET["bytes"] = int(nbytes)


def _size(nbytes: float) -> str:
    """``nbytes`` in B, KiB, MiB or GiB."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes:.0f} B"


def get_memory_budget() -> int:
    """The working-memory budget in bytes (see :func:`set_memory_budget`)."""
    return _BUDGET["bytes"]


@dataclass(frozen=True)
class Call:
    """Everything one public call resolved at entry."""

    plan: Plan
    ctx: Context
    x: Array  # (n, d), working dtype
    batch: tuple[int, ...]
    params: list[tuple[Array, Array]]

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    @property
    def layers(self) -> tuple[Dense, ...]:
        return self.plan.layers

    @property
    def d(self) -> int:
        return self.plan.layers[0].in_features

    @property
    def m(self) -> int:
        return self.plan.layers[-1].out_features

    def cast(self, a: Array) -> Array:
        """``a`` in the working dtype."""
        return a if a.dtype == self.ctx.dtype else self.ctx.xp.astype(a, self.ctx.dtype)


def as_network(net: Any) -> _Network:
    """Accept a Sequential/Potential, or a single layer (wrapped)."""
    if isinstance(net, _Network):
        return net
    if isinstance(net, Dense):
        return Sequential(net)
    raise TypeError(f"net must be an xderiv Sequential, Potential or layer, got {type(net).__name__}")


def prepare(net: Any, x: Any) -> Call:
    """Validate ``x`` against ``net``, cast once, flatten to ``(n, d)``."""
    network = as_network(net)
    ctx, x = resolve_call(x, network.xp, network.device, network.dtype)
    x2, batch = flatten_batch(x, network.in_features, ctx.xp)
    params = [layer_params(layer, ctx.xp, ctx.dtype) for layer in network.plan.layers]
    return Call(network.plan, ctx, x2, batch, params)


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def per_point(call: Call, a: Any, name: str, trailing: tuple[int, ...]) -> tuple[Array, bool]:
    """Validate an extra argument shared by the batch (``trailing``) or given per point (``batch + trailing``).

    Returns the array in the working dtype, flattened to ``(n,) + trailing``
    when per point, and whether it is per point.
    """
    xp = call.ctx.xp
    if a is None or not hasattr(a, "shape"):
        raise TypeError(
            f"{name} must be an array of shape {trailing} or {call.batch + trailing}, got {type(a).__name__}"
        )
    try:
        same = resolve_call(a, xp, call.ctx.device, call.ctx.dtype)[1]
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{name}: {exc}") from None
    shape = tuple(same.shape)
    if shape == trailing:
        return call.cast(same), False
    if shape == call.batch + trailing:
        return call.cast(xp.reshape(same, (call.n,) + trailing)), True
    raise ValueError(
        f"{name} has shape {shape}; expected {trailing} (shared by the batch) or "
        f"{call.batch + trailing} (one per point of x with shape {call.batch + (call.d,)})"
    )


def run(
    net: Any,
    x: Any,
    kernel: Callable[..., Sequence[Array | None]],
    *,
    trailing: Sequence[tuple[int, ...] | None],
    bytes_per_point: Callable[[Call], float],
    extras: Callable[[Call], tuple[tuple[Array, bool], ...]] | None = None,
    chunk_size: int | None = None,
) -> list[Array | None]:
    """Run ``kernel`` over the points of ``x`` in chunks and restore their batch shape.

    Parameters
    ----------
    kernel : callable ``(call, *extras) -> sequence``
        Results of shape ``(n, m, *trailing[i])`` (None entries pass through).
    trailing : sequence of tuples
        Trailing shape of each result (after the output axis).
    bytes_per_point : callable
        Working memory one point needs (for automatic chunking).
    extras : callable ``call -> ((array, is_per_point), ...)``
        Extra arguments; per-point ones are chunked with ``x``.
    chunk_size : int, optional
        Points per chunk; by default as many as fit :func:`get_memory_budget`.
    """
    call = prepare(net, x)
    args = extras(call) if extras is not None else ()
    n = call.n
    if chunk_size is None and is_lazy(call.x):  # dask: its own chunks bound the memory
        chunk_size = max(n, 1)
    if chunk_size is None:
        need = bytes_per_point(call)
        budget = get_memory_budget()
        if need > budget:
            raise MemoryError(
                f"xderiv: one point needs about {_size(need)} of working memory "
                f"(d={call.d}, widths={[layer.out_features for layer in call.layers]}), above the "
                f"memory budget of {_size(budget)}; raise it with xderiv.set_memory_budget "
                "or ask for a cheaper operator (laplacian/trace_hessian instead of hessian)"
            )
        chunk_size = max(1, int(budget // max(need, 1.0)))
    elif int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")
    chunk_size = int(chunk_size)

    if n <= chunk_size:
        results = list(kernel(call, *[a for a, _ in args]))
    else:
        xp = call.ctx.xp
        pieces: list[Sequence[Array | None]] = []
        for start in range(0, n, chunk_size):
            stop = min(n, start + chunk_size)
            sub = replace(call, x=call.x[start:stop, ...])
            sub_args = [a[start:stop, ...] if pp else a for a, pp in args]
            pieces.append(kernel(sub, *sub_args))
        results = [
            None if pieces[0][i] is None else xp.concat([p[i] for p in pieces], axis=0) for i in range(len(pieces[0]))
        ]
    out: list[Array | None] = []
    for a, tail in zip(results, trailing):
        if a is None or tail is None:
            out.append(a)
            continue
        m = () if call.plan.scalar else (call.m,)
        out.append(call.ctx.xp.reshape(a, call.batch + m + tail))
    return out
