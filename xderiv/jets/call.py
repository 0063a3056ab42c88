r"""One operator call on a graph: the jet it seeds, chunking under the memory budget, the terms read back.

A graph (an :func:`xderiv.function`, a converted torch module that is not a chain, or a
composite holding one) is differentiated by evaluating it once on a jet of ``x``
(:mod:`xderiv.jets.array`).  :class:`Setup` resolves the call (namespace, dtype, the batch
flattened to ``(n, d)``), seeds the jet of the kind and directions an operator asks for, runs the
graph in chunks of points that fit :func:`xderiv.get_memory_budget`, and returns every term at
full size.  Each operator's read-out of those terms lives in its module under
:mod:`xderiv.operators`.  Graphs have one mode, forward: a ``mode="backward"`` request raises;
``"auto"`` takes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import array_api_compat

from ..backends.checkpoint import recomputing
from ..backends.namespace import (
    Array,
    Context,
    check_int,
    flatten_batch,
    is_array,
    known_array_type,
    learn_array_types,
    resolve_call,
)
from ..engine.call import RECOMPUTED, check_mode, checkpointing, coordinate_rows, get_memory_budget
from .array import JetArray, Seed, metered
from .function import evaluate
from .kinds import Hessian, Kind, Taylor
from .rules import full_terms


def resolve_points(net: Any, x: Any) -> tuple[Context, Array]:
    """The context of a call on a graph and ``x`` cast to its working dtype (its batch shape kept)."""
    if is_array(x) and not known_array_type(x):
        learn_array_types([x], array_api_compat.array_namespace(x), array_api_compat.device(x))
    net_xp = getattr(net, "xp", None)
    if net_xp is not None:
        return resolve_call(x, net_xp, net.device, net.dtype)
    if not is_array(x):
        raise TypeError(
            f"x: a function of x takes an array of points of shape (..., d) (its namespace decides the "
            f"backend), got {type(x).__name__}"
        )
    xp = array_api_compat.array_namespace(x)
    device = array_api_compat.device(x)
    dtype = x.dtype if xp.isdtype(x.dtype, "real floating") else xp.asarray(0.0, device=device).dtype
    return resolve_call(x, xp, device, dtype)


LIVE = 8
"""Jet arrays of the largest size a chunk is sized for (an operator holds a few alive at once)."""


_PEAKS: dict[tuple[Any, ...], float] = {}
"""One point's largest jet array in bytes, by (network, jet kind, directions, d, dtype): measured once."""


class Setup:
    """One call on a graph: the points ``x`` flattened to ``(n, d)``, their batch shape and context."""

    def __init__(self, net: Any, x: Any, mode: str = "auto") -> None:
        check_mode(mode)
        if mode == "backward":
            raise ValueError(
                f"mode='backward' is not available for {net!r}: a network that is not a chain of layers is "
                "differentiated in forward mode (jets); use mode='auto' or 'forward'"
            )
        self.net = net
        ctx, x = resolve_points(net, x)
        d = getattr(net, "in_features", None)
        if x.ndim == 0:
            raise ValueError("x must have at least one dimension (..., d), got a 0-d array")
        if d is None:
            d = int(x.shape[-1])
        self.ctx = ctx
        self.d = d
        self.x, self.batch = flatten_batch(x, d, ctx.xp)

    @property
    def xp(self) -> Any:
        return self.ctx.xp

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    def eye(self) -> Array:
        """The rows :math:`e_1, \\dots, e_d`, shape ``(d, d)``."""
        return self.xp.eye(self.d, dtype=self.ctx.dtype, device=self.ctx.device)

    def weights(self, values: Sequence[float] | Array) -> Array:
        if is_array(values):
            return self.xp.astype(values, self.ctx.dtype)
        return self.xp.asarray([float(w) for w in values], dtype=self.ctx.dtype, device=self.ctx.device)

    def run(
        self, kind: Kind, directions: Array | None, chunk_size: int | None = None, axes: bool = False
    ) -> list[Array]:
        """Evaluate the graph on the jet seeded with ``directions`` and return its terms at full size.

        ``directions``: ``(r, d)`` shared or ``(n, r, d)`` per point (Taylor), None for a Hessian
        jet along the axes.  Every term is returned as ``lead + (n,) + out`` (zeros where the
        jet had none), lead axes first.  With :func:`xderiv.set_memory_budget`'s ``checkpoint`` on,
        chunks are checkpointed whenever autodiff may record the call
        (:func:`~xderiv.backends.checkpoint.recomputing`, ``opaque``: the graph's weights are
        closed over, unseen).
        """
        xp, n = self.xp, self.n
        # a function of x closes over weights the call cannot see: whenever autodiff may record
        wrap = recomputing(xp, [self.x, directions], opaque=True) if checkpointing() else None
        if chunk_size is None:
            size = self._fitting(kind, directions, axes, wrap is not None)
        else:
            size = check_int(chunk_size, "chunk_size", 1)
        if n <= size:
            return self._terms(kind, self.x, directions, axes)

        def chunk(x: Array, sub: Array | None) -> list[Array]:
            return self._terms(kind, x, sub, axes)

        step = chunk if wrap is None else wrap(chunk)
        pieces = []
        for start in range(0, n, size):
            stop = min(n, start + size)
            sub = directions
            if directions is not None and directions.ndim == 3:
                sub = directions[start:stop, ...]
            pieces.append(step(self.x[start:stop, ...], sub))
        lead = kind.lead
        return [xp.concat([p[k] for p in pieces], axis=lead) for k in range(len(pieces[0]))]

    def _fitting(self, kind: Kind, directions: Array | None, axes: bool, recompute: bool = False) -> int:
        """Points per chunk under the memory budget, from the largest jet array of one point.

        The graph runs once on the first point, measuring its largest jet array (all terms); a chunk
        holds :data:`LIVE` such arrays per point within :func:`xderiv.get_memory_budget`.  The
        measurement is kept per network, jet kind, number of directions, ``d`` and dtype
        (:data:`_PEAKS`), so a training loop measures once.  Lazy arrays (dask) are not chunked
        here: their own chunks bound the memory.  Checkpointed chunks (``recompute``) are
        :data:`~xderiv.engine.call.RECOMPUTED` times smaller, sized for their backward pass.
        """
        n = self.n
        if n <= 1 or self.ctx.lazy:
            return max(n, 1)
        rows = 0 if directions is None else int(directions.shape[-2])
        key = (id(self.net), type(kind), kind.order, kind.weights is None, rows, self.d, str(self.ctx.dtype))
        peak = _PEAKS.get(key)
        if peak is None:
            first = directions[:1, ...] if directions is not None and directions.ndim == 3 else directions
            _, peak = metered(lambda: self._terms(kind, self.x[:1, ...], first, axes))
            if len(_PEAKS) >= 256:
                _PEAKS.pop(next(iter(_PEAKS)))
            _PEAKS[key] = peak
        budget = get_memory_budget()
        per_point = LIVE * max(peak, 1.0) * (RECOMPUTED if recompute else 1.0)
        if LIVE * peak > budget:
            raise MemoryError(
                f"xderiv: one point of {self.net!r} needs about {LIVE * peak / 2**20:.1f} MiB of working memory "
                f"for this operator (d={self.d}), above the memory budget of {budget / 2**20:.1f} MiB; raise it "
                "with xderiv.set_memory_budget or ask for a cheaper operator (laplacian/trace_hessian instead "
                "of hessian)"
            )
        return max(1, int(budget // per_point))

    def _terms(self, kind: Kind, x: Array, directions: Array | None, axes: bool) -> list[Array]:
        xp, lead = self.xp, kind.lead
        value = xp.reshape(x, (1,) * lead + tuple(x.shape))
        if isinstance(kind, Hessian):
            first = xp.reshape(self.eye(), (self.d, 1, 1, self.d))
        else:
            assert directions is not None
            if directions.ndim == 2:  # (r, d) shared: broadcast over the points
                first = xp.reshape(directions, (directions.shape[0], 1, self.d))
            else:  # (n, r, d) per point
                first = xp.permute_dims(directions, (1, 0, 2))
        seeds = (value, first) + (None,) * (kind.order - 1) if kind.order >= 1 else (value,)
        y = evaluate(self.net, JetArray(seeds, kind, seed=Seed(x, directions, axes or isinstance(kind, Hessian))))
        if not isinstance(y, JetArray) or y.ndim not in (1, 2) or y.shape[0] != x.shape[0]:
            got = getattr(y, "shape", type(y).__name__)
            raise ValueError(
                f"{self.net!r} returned {got} for points of shape {tuple(x.shape)}: a function of x of shape "
                "(..., d) must return (..., m) or (...,)"
            )
        out = []
        for k, t in enumerate(full_terms(y)):
            if t is None:
                t0: Any = y.terms[0]
                shape = tuple(t0.shape[:lead]) if k == 0 else _lead_shape(kind, k, seeds)
                t = xp.zeros(shape + y.shape, dtype=self.ctx.dtype, device=self.ctx.device)
            out.append(t)
        return out

    def run_value(self, chunk_size: int | None = None) -> tuple[Array]:
        """The graph's value alone, ``(n, m)``: a jet without derivative terms."""
        (y,) = self.run(Taylor(0), self.eye()[:1, ...], chunk_size)
        return (y[0, ...],)

    def shape(self, a: Array) -> Array:
        """``a`` of shape ``(n,) + rest`` as ``batch + rest``."""
        return self.xp.reshape(a, self.batch + tuple(a.shape[1:]))


def _lead_shape(kind: Kind, k: int, seeds: tuple[Any, ...]) -> tuple[int, ...]:
    first = seeds[1]
    if isinstance(kind, Hessian):
        return (int(first.shape[0]), 1) if k == 1 else (int(kind.pairs.first.shape[0]), 1)
    return (1,) if kind.collapsed(k) else (int(first.shape[0]),)


def lead_last(a: Array, lead: int, xp: Any) -> Array:
    """Move the ``lead`` first axes behind the others: ``(r, n, ...) -> (n, ..., r)``."""
    return xp.permute_dims(a, tuple(range(lead, a.ndim)) + tuple(range(lead)))


class CoordCall:
    """What :func:`xderiv.engine.call.coordinate_rows` reads of a call: ``d`` and the context."""

    def __init__(self, s: Setup) -> None:
        self.d, self.ctx = s.d, s.ctx


def direction_rows(s: Setup, directions: Any, coords: Sequence[int] | None, owner: str) -> Array:
    """``S^T``: ``(k, d)`` shared or ``(n, k, d)`` per point, from ``directions`` ``(..., d, k)`` or ``coords``."""
    if (directions is None) == (coords is None):
        raise TypeError(f"{owner} takes exactly one of directions= or coords=")
    if coords is not None:
        return coordinate_rows(CoordCall(s), coords)  # type: ignore[arg-type]
    xp = s.xp
    _, directions = resolve_call(directions, xp, s.ctx.device, s.ctx.dtype, name="directions")
    shape = tuple(directions.shape)
    if len(shape) == 2 and shape[0] == s.d:
        return xp.matrix_transpose(directions)
    if len(shape) == len(s.batch) + 2 and shape[:-2] == s.batch and shape[-2] == s.d:
        return xp.matrix_transpose(xp.reshape(directions, (s.n, s.d, shape[-1])))
    raise ValueError(
        f"directions has shape {shape}; expected ({s.d}, k) (shared by the batch) or "
        f"{s.batch + (s.d, 'k')} (one set per point of x with shape {s.batch + (s.d,)})"
    )


def one_direction(s: Setup, v: Any, name: str = "v") -> Array:
    """``v`` of shape ``(d,)`` or ``x.shape`` as rows ``(1, d)`` or ``(n, 1, d)``."""
    xp = s.xp
    if not hasattr(v, "shape"):
        raise TypeError(f"{name} must be an array of shape ({s.d},) or {s.batch + (s.d,)}, got {type(v).__name__}")
    _, v = resolve_call(v, xp, s.ctx.device, s.ctx.dtype, name=name)
    shape = tuple(v.shape)
    if shape == (s.d,):
        return xp.reshape(v, (1, s.d))
    if shape == s.batch + (s.d,):
        return xp.reshape(v, (s.n, 1, s.d))
    raise ValueError(
        f"{name} has shape {shape}; expected ({s.d},) (shared by the batch) or {s.batch + (s.d,)} (one per point)"
    )
