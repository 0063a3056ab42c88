"""One public call, start to end: every operator's opening and closing, written once.

:func:`run` resolves namespace, dtype and device once (casting ``x`` once),
flattens the batch dims of ``x`` to ``(n, d)``, validates the operator's extra
arguments, chooses the mode and the chunk size from the operator's
:class:`~xderiv.engine.cost.Quantity`, runs the value sweep and then the operator's
*kernel* on each chunk of points, concatenates, and restores the batch dims
(dropping the output axis of a :class:`~xderiv.Potential`).

A kernel is ``kernel(call, tape, *extras) -> tuple`` of arrays shaped
``(n, m, ...)``: ``call`` says what was resolved (:class:`Call`, including the
mode and the Potential's terms), ``tape`` is the value sweep of this chunk.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from ..backends.checkpoint import recomputing
from ..backends.namespace import Array, Context, check_int, flatten_batch, resolve_call
from ..models.layers import Dense
from .cost import Costs, LayerShape, Quantity, costs_of, shape_of
from .forward import Tape, value_sweep
from .potential import PotentialTerms

MODES = ("auto", "forward", "backward")

_BUDGET: dict[str, Any] = {"bytes": 1 << 30, "checkpoint": False}

RECOMPUTED = 4.0
"""How many times a chunk's working memory its backward pass holds: the tensors autodiff saves for
the chunk's recomputed forward pass and the gradients flowing back through it (measured on the
forward and backward Laplacian and Hessian of tanh MLPs, torch: 2.2 to 3.6).  With ``checkpoint``
the chunks are this much smaller, so that a training step's peak stays within the budget."""


def set_memory_budget(nbytes: int, *, checkpoint: bool = False) -> None:
    """Set the memory budget of one call (default 1 GiB, no checkpointing).

    Requests whose temporaries would exceed it are split into chunks of points; the outputs
    themselves are not counted.  A request where a single point exceeds the budget raises
    :class:`MemoryError` before allocating.  The setting is process-wide; each call states the
    whole policy (``set_memory_budget(2**30)`` also turns checkpointing off).

    Parameters
    ----------
    nbytes : int
        Bytes of working memory one call may use.
    checkpoint : bool, default False
        Also bound what autodiff keeps for the backward pass.  Without it a call split in
        ``c`` chunks under torch autograd or ``jax.grad`` keeps every chunk's intermediates
        until the gradient is taken (several times the budget, growing with the number of
        points).  With it, a call that autodiff records runs each chunk as a checkpoint
        (:mod:`xderiv.backends.checkpoint`: ``torch.utils.checkpoint`` non-reentrant,
        ``jax.checkpoint``), chunks sized for its recomputation in the backward pass
        (:data:`RECOMPUTED` times smaller): autodiff keeps the call's inputs and outputs, and the
        backward pass recomputes one chunk at a time, so a training step stays within the budget
        for a second forward pass of every chunk in time.  Calls that nothing differentiates
        (inference, NumPy, ``torch.no_grad()``) are unaffected.
    """
    if int(nbytes) <= 0:
        raise ValueError(f"memory budget must be positive, got {nbytes}")
    if not isinstance(checkpoint, bool):
        raise TypeError(f"checkpoint must be True or False, got {checkpoint!r}")
    _BUDGET["bytes"] = int(nbytes)
    _BUDGET["checkpoint"] = checkpoint


def get_memory_budget() -> int:
    """The memory budget in bytes (see :func:`set_memory_budget`)."""
    return int(_BUDGET["bytes"])


def checkpointing() -> bool:
    """Whether calls that autodiff records recompute their chunks in the backward pass (:func:`set_memory_budget`)."""
    return bool(_BUDGET["checkpoint"])


@contextmanager
def memory_budget(nbytes: int, *, checkpoint: bool = False) -> Iterator[None]:
    """:func:`set_memory_budget` for the calls inside a ``with`` block; the previous setting is restored after.

    A call keeps the chunks and checkpoints it chose when it ran: its backward pass may run after
    the block.  The setting is process-wide, like :func:`set_memory_budget`'s: other threads'
    calls inside the block see it too.

    Examples
    --------
    >>> with xd.memory_budget(64 * 2**20, checkpoint=True):   # doctest: +SKIP
    ...     loss = (xd.laplacian(net, x) ** 2).mean()
    >>> loss.backward()                                        # recomputes one chunk at a time
    """
    before = dict(_BUDGET)
    set_memory_budget(nbytes, checkpoint=checkpoint)
    try:
        yield
    finally:
        _BUDGET.update(before)


def _size(nbytes: float) -> str:
    """``nbytes`` in B, KiB, MiB or GiB."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes:.0f} B"


@dataclass(frozen=True)
class Plan:
    """What the recursions see of any network.

    ``y = layers(x) [+ 1/2 x^T A x + c^T x]`` with ``A = quadratic`` and
    ``c = linear`` (both optional); ``scalar`` drops the single output axis.
    """

    layers: tuple[Dense, ...]
    quadratic: Array | None
    linear: Array | None
    scalar: bool
    shape: tuple[LayerShape, ...] = field(init=False)
    """What the cost model reads of the layers (:func:`~xderiv.engine.cost.shape_of`), computed once."""
    costs: Costs = field(init=False, repr=False)
    """The cost model's table for this shape (mode choices, memory per point), built here, read per call."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", shape_of(self.layers))
        object.__setattr__(self, "costs", costs_of(self.shape))

    @property
    def in_features(self) -> int:
        """Input dimension ``d``."""
        return self.layers[0].in_features

    @property
    def out_features(self) -> int:
        """Outputs ``m`` of the layers (1 for a Potential)."""
        return self.layers[-1].out_features


class NetworkLike(Protocol):
    """What :func:`run` needs of a network: its plan and the namespace, device and dtype of its weights."""

    plan: Plan
    xp: Any
    device: Any
    dtype: Any


@dataclass
class Call:
    """Everything one public call resolved at entry.

    :func:`run` builds it once, sets the mode, then copies it per chunk of
    points (only ``x`` changes); kernels read it and never change it.

    Attributes
    ----------
    plan : Plan
    ctx : Context
        Namespace, working dtype and device.
    x : array (n, d)
        The points of this chunk, in the working dtype.
    batch : tuple of int
        Batch shape of the caller's ``x``.
    params : tuple of (W, b)
        The layers' weights in the working dtype.
    terms : PotentialTerms
        A Potential's quadratic and linear terms (empty for a Sequential).
    d, m : int
        Input dimension and number of outputs of the layers.
    mode : str
        ``"forward"`` or ``"backward"``: the mode the kernel runs.
    """

    plan: Plan
    ctx: Context
    x: Array
    batch: tuple[int, ...]
    params: tuple[tuple[Array, Array], ...]
    terms: PotentialTerms
    d: int
    m: int
    mode: str = "forward"

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    def cast(self, a: Array) -> Array:
        """``a`` in the working dtype."""
        return a if a.dtype == self.ctx.dtype else self.ctx.xp.astype(a, self.ctx.dtype)


def check_mode(mode: str) -> None:
    """Raise ``ValueError`` unless ``mode`` is one of :data:`MODES`."""
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
    same = resolve_call(a, xp, call.ctx.device, call.ctx.dtype, name=name)[1]
    shape = tuple(same.shape)
    if shape == trailing:
        return call.cast(same), False
    if shape == call.batch + trailing:
        return call.cast(xp.reshape(same, (call.n,) + trailing)), True
    raise ValueError(
        f"{name} has shape {shape}; expected {trailing} (shared by the batch) or "
        f"{call.batch + trailing} (one per point of x with shape {call.batch + (call.d,)})"
    )


def coordinate_rows(call: Call, coords: Sequence[int] | None) -> Array | None:
    """Rows of the identity for ``coords`` (shape (k, d)), or None for all coordinates."""
    if coords is None:
        return None
    d = call.d
    try:  # integers only: a float (1.7) or a bool is refused, not truncated
        if isinstance(coords, (str, bytes)) or any(isinstance(i, bool) for i in coords):
            raise TypeError
        idx = [operator.index(i) for i in coords]
    except TypeError:
        raise TypeError(f"coords must be a sequence of integer coordinate indices, got {coords!r}") from None
    if not idx or any(i < -d or i >= d for i in idx) or len({i % d for i in idx}) != len(idx):
        raise ValueError(
            f"coords must be distinct indices in [0, {d}) (or counted from the end, -1 for the last) for "
            f"inputs of dimension d={d}, got {list(coords)}"
        )
    xp, ctx = call.ctx.xp, call.ctx
    rows = xp.asarray([i % d for i in idx], device=ctx.device)
    cols = xp.arange(d, device=ctx.device)
    # rows[k] == cols[j] selects e_{rows[k]}; built by comparison (dask's take misreports its shape)
    return xp.astype(rows[:, None] == cols[None, :], ctx.dtype)


Kernel = Callable[..., Sequence[Array | None]]
Extras = Callable[[Call], tuple[tuple[Array, bool], ...]]


def _chunk_size(call: Call, quantity: Quantity, k: int | None, chunk_size: int | None, recompute: bool) -> int:
    """Points per chunk: ``chunk_size``, all of a lazy array, or as many as fit the memory budget.

    ``recompute``: the chunks are checkpointed, and sized for their backward pass
    (:data:`RECOMPUTED` times the working memory of one point).
    """
    if chunk_size is not None:
        return check_int(chunk_size, "chunk_size", 1)
    if call.ctx.lazy:  # dask: its own chunks bound the memory
        return max(call.n, 1)
    itemsize = int(call.ctx.xp.finfo(call.ctx.dtype).bits // 8)
    need = call.plan.costs.floats_per_point(quantity, call.mode, k) * itemsize
    budget = get_memory_budget()
    if need > budget:
        raise MemoryError(
            f"xderiv: one point needs about {_size(need)} of working memory "
            f"(d={call.d}, widths={[layer.out_features for layer in call.plan.layers]}), above the "
            f"memory budget of {_size(budget)}; raise it with xderiv.set_memory_budget "
            "or ask for a cheaper operator (laplacian/trace_hessian instead of hessian)"
        )
    per_point = need * RECOMPUTED if recompute else need
    return max(1, int(budget // max(per_point, 1.0)))


def run(
    network: NetworkLike,
    x: Any,
    quantity: Quantity,
    kernel: Kernel,
    *,
    trailing: Sequence[tuple[int, ...] | None],
    mode: str = "auto",
    extras: Extras | None = None,
    rows: Callable[..., int] | None = None,
    chunk_size: int | None = None,
) -> list[Array | None]:
    """Run ``kernel`` over the points of ``x`` in chunks and restore their batch shape.

    Parameters
    ----------
    network : Sequential or Potential
    x : array (..., d)
    quantity : Quantity
        The operator's row of the cost table (activation order, costs, memory).
    kernel : callable ``(call, tape, *extras) -> sequence``
        Results of shape ``(n, m, *trailing[i])`` (None entries pass through).
    trailing : sequence of tuples
        Trailing shape of each result (after the output axis); None passes the result as is.
    mode : {"auto", "forward", "backward"}
    extras : callable ``call -> ((array, is_per_point), ...)``
        Extra arguments; per-point ones are chunked with ``x``.
    rows : callable ``(*extras) -> int``, optional
        The number of forward rows ``k`` the kernel carries (``d`` when omitted).
    chunk_size : int, optional
        Points per chunk; by default as many as fit :func:`get_memory_budget`.

    With :func:`set_memory_budget`'s ``checkpoint`` on and autodiff recording the call
    (:func:`~xderiv.backends.checkpoint.recomputing` of ``x`` and the weights), a call split into
    chunks runs each one as a checkpoint, recomputed in the backward pass.
    """
    check_mode(mode)
    plan = network.plan
    ctx, x = resolve_call(x, network.xp, network.device, network.dtype)
    x2, batch = flatten_batch(x, plan.in_features, ctx.xp)
    params = tuple(layer.params(ctx.xp, ctx.dtype) for layer in plan.layers)
    terms = PotentialTerms.build(plan.quadratic, plan.linear, ctx)
    call = Call(plan, ctx, x2, batch, params, terms, plan.in_features, plan.out_features)
    args = extras(call) if extras is not None else ()
    k = rows(*[a for a, _ in args]) if rows is not None else None
    call.mode = plan.costs.mode(quantity, mode, k)
    wrap = _recorded(call, args) if checkpointing() else None
    size = _chunk_size(call, quantity, k, chunk_size, wrap is not None)

    def kernel_on(sub: Call, sub_args: list[Array]) -> Sequence[Array | None]:
        tape: Tape = value_sweep(sub.plan.layers, sub.params, sub.x, ctx, quantity.order)
        return kernel(sub, tape, *sub_args)

    def chunk(x: Array, sub_args: list[Array]) -> Sequence[Array | None]:
        return kernel_on(replace(call, x=x), sub_args)

    n, xp = call.n, ctx.xp
    if n <= size:  # one chunk: what autodiff keeps of it fits the budget (its size counted it)
        results = list(kernel_on(call, [a for a, _ in args]))
    else:
        step = chunk if wrap is None else wrap(chunk)
        pieces = []
        for start in range(0, n, size):
            stop = min(n, start + size)
            sub_args = [a[start:stop, ...] if per_pt else a for a, per_pt in args]
            pieces.append(step(call.x[start:stop, ...], sub_args))
        results = [
            None if pieces[0][i] is None else xp.concat([p[i] for p in pieces], axis=0) for i in range(len(pieces[0]))
        ]
    m = () if plan.scalar else (call.m,)
    return [a if a is None or tail is None else xp.reshape(a, batch + m + tail) for a, tail in zip(results, trailing)]


def _recorded(call: Call, args: Sequence[tuple[Array, bool]]) -> Any:
    """The checkpoint wrapper of this call, or None when autodiff does not record it (see :func:`run`)."""
    weights = [a for pair in call.params for a in pair]
    terms = (call.terms.a, call.terms.c)
    return recomputing(call.ctx.xp, [call.x, *weights, *terms, *(a for a, _ in args)])


def value_kernel(call: Call, tape: Tape) -> tuple[Array]:
    """The network's value: the layers' output plus a Potential's terms, shape (n, m)."""
    return (call.terms.add_value(tape.y, call.x),)
