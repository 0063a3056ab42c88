r"""What a call would run, without running it: :func:`explain`.

Each operator registers a *planner* beside its public function (:func:`register_plan`): from the
call's arguments it names its cost row, the forward rows it carries and the recursion each mode
runs.  :func:`explain` then answers, for a chain of layers, exactly what :func:`~.call.run` would
decide: the mode (``"auto"`` takes the cheaper of the row's multiply-add counts per point), the
working memory per point, the chunk size under :func:`~.call.get_memory_budget` and the number of
chunks.  A composite is explained part by part (each leaf is one such call, combined by the product
rule); a graph names the jet it seeds (its memory is measured on one point at its first call).
Anything the call would refuse (a backward mode on a graph, a point above the budget, an argument)
is reported instead of raised.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ..backends.namespace import array_namespace_of, device_of, resolve_call
from ..jets import is_graph
from ..models.composition import Composite
from ..models.networks import as_network
from .call import MODES, RECOMPUTED, checkpointing, get_memory_budget
from .cost import Dims, Quantity


@dataclass(frozen=True)
class Need:
    """What one operator call needs of a chain and of a graph (a planner's answer).

    Attributes
    ----------
    quantity : Quantity
        The operator's cost row.
    rows : int or None
        Forward rows ``k`` carried (None: ``d``).
    chain : dict
        The recursion each mode runs on a chain, ``{"forward": ..., "backward": ...}`` (one key for
        an operator with one mode).
    graph : str
        The jet a graph is evaluated on.
    """

    quantity: Quantity
    rows: int | None
    chain: dict[str, str]
    graph: str


Planner = Callable[[int, dict[str, Any]], Need]
"""``(d, arguments) -> Need``: ``arguments`` are the call's, bound to the operator's signature."""

PLANS: dict[Callable[..., Any], Planner] = {}
"""Every public operator's planner."""


def register_plan(operator: Callable[..., Any], planner: Planner) -> None:
    """Register ``operator``'s planner (at import of its module)."""
    PLANS[operator] = planner


@dataclass(frozen=True)
class Part:
    """One call of the plan: a chain (or a composite's leaf), or a graph.

    Attributes
    ----------
    network : str
        ``repr`` of the network.
    kind : {"chain", "graph"}
    recursion : str
        What runs: the chain's recursion in the chosen mode, or the graph's jet.
    mode : str
    reason : str
        Why that mode.
    multiply_adds : dict or None
        Multiply-adds per point of each mode by the operator's cost row, beyond the value sweep
        both modes share: matrix products, plus elementwise passes over the carried arrays weighted
        by :data:`~.cost.ELEMENTWISE` (None for a graph, or an operator with one mode).
    memory_per_point : float or None
        Working bytes per point (outputs excluded); None where measured at the first call (graphs).
    chunk_size, chunks : int or None
        Points per chunk under the budget, and the number of chunks.
    """

    network: str
    kind: str
    recursion: str
    mode: str
    reason: str
    multiply_adds: dict[str, float] | None = None
    memory_per_point: float | None = None
    chunk_size: int | None = None
    chunks: int | None = None


@dataclass(frozen=True)
class Explanation:
    """The plan of ``op(net, x, ...)``: the operator, the points, the budget and one :class:`Part` per call.

    ``str()`` reads as a short report; :meth:`as_dict` gives the same as plain data.
    """

    operator: str
    points: int
    d: int
    backend: str
    dtype: str
    budget: int
    parts: tuple[Part, ...] = ()
    combined: str = ""
    refusals: tuple[str, ...] = field(default=())
    checkpoint: bool = False

    @property
    def mode(self) -> str | None:
        """The mode of the first part (every part of a composite runs its own)."""
        return self.parts[0].mode if self.parts else None

    @property
    def multiply_adds(self) -> float | None:
        """Multiply-adds per point of the chosen modes, summed over the parts (None if any is unknown)."""
        total = 0.0
        for p in self.parts:
            if p.multiply_adds is None or p.mode not in p.multiply_adds:
                return None
            total += p.multiply_adds[p.mode]
        return total

    def as_dict(self) -> dict[str, Any]:
        """The plan as plain data (dicts, lists, numbers and strings)."""
        out = asdict(self)
        out["mode"], out["total_multiply_adds"] = self.mode, self.multiply_adds
        return out

    def __str__(self) -> str:
        lines = [f"{self.operator} at {self.points} points, d = {self.d}, {self.backend} {self.dtype}"]
        lines.append(f"memory budget {_size(self.budget)}")
        if self.checkpoint:
            lines.append(
                f"checkpointing: a call autodiff records runs chunks {RECOMPUTED:g}x smaller than below, "
                "each recomputed in the backward pass"
            )
        for p in self.parts:
            lines.append(f"- {p.network} ({p.kind}): {p.recursion}")
            lines.append(f"    mode {p.mode}: {p.reason}")
            if p.memory_per_point is not None:
                lines.append(
                    f"    {_size(p.memory_per_point)} per point; {p.chunks} chunk(s) of up to {p.chunk_size} points"
                )
            elif p.kind == "graph":
                lines.append("    memory per point measured on one point at the first call; chunks sized from it")
        if self.combined:
            lines.append(self.combined)
        lines.extend(f"refused: {r}" for r in self.refusals)
        return "\n".join(lines)


def _size(nbytes: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes:.0f} B"


def _leaves(net: Any) -> list[Any]:
    """The distinct leaves of a composite (a network used twice is evaluated once)."""
    parts = getattr(net, "parts", None)
    if parts is None:
        return [net]
    seen: dict[int, Any] = {}
    for leaf in (leaf for p in parts for leaf in _leaves(p)):
        seen.setdefault(id(leaf), leaf)
    return list(seen.values())


def describe(net: Any) -> str:
    """One line naming a network: its class and widths (``Sequential 10-64-64-1``), or its ``repr``."""
    layers = getattr(getattr(net, "plan", None), "layers", None)
    if layers:
        widths = [layers[0].in_features] + [layer.out_features for layer in layers]
        return f"{type(net).__name__} {'-'.join(str(w) for w in widths)}"
    return " ".join(repr(net).split())


def _chain_part(network: Any, need: Need, mode: str, n: int, itemsize: int, chunk_size: Any) -> tuple[Part, str | None]:
    """The plan of one chain: mode and why, multiply-adds, memory, chunks (as :func:`~.call.run` decides)."""
    costs, q, k = network.plan.costs, need.quantity, need.rows
    dims = Dims(costs.shape)
    chosen = costs.mode(q, mode, k)
    if q.flops is None:
        flops, reason = None, "the operator has one mode"
    else:
        fwd, bwd = q.flops(dims, dims.d if k is None else k)
        flops = {"forward": fwd, "backward": bwd}
        if mode == "auto":
            reason = f"auto: forward {fwd:.3g} vs backward {bwd:.3g} multiply-adds per point"
        else:
            reason = f"as asked (forward {fwd:.3g}, backward {bwd:.3g} multiply-adds per point)"
    per_point = costs.floats_per_point(q, chosen, k) * itemsize
    budget, refusal = get_memory_budget(), None
    if chunk_size is not None:
        size = int(chunk_size)
    elif per_point > budget:
        size, refusal = (
            0,
            (
                f"MemoryError: one point needs {_size(per_point)} of working memory, above the budget of "
                f"{_size(budget)} (raise it with xderiv.set_memory_budget)"
            ),
        )
    else:
        size = max(1, int(budget // max(per_point, 1.0)))
    recursion = need.chain.get(chosen, next(iter(need.chain.values())))
    part = Part(
        describe(network),
        "chain",
        f"{recursion} ({q.name} row, {dims.d if k is None else k} forward rows)",
        chosen,
        reason,
        flops,
        per_point,
        min(size, n) if size else None,
        math.ceil(n / size) if size else None,
    )
    return part, refusal


def explain(op: Callable[..., Any], net: Any, x: Any, *args: Any, **kwargs: Any) -> Explanation:
    """The plan ``op(net, x, *args, **kwargs)`` would run, without running it.

    Parameters
    ----------
    op : a public operator (``xderiv.laplacian``, ``xderiv.hessian``, ...)
    net, x, *args, **kwargs
        As the call would take them.

    Returns
    -------
    Explanation
        For each network part (a chain, a composite's leaf, or a graph): the recursion, the mode and
        why (multiply-adds per point of each mode), the working memory per point, the chunk size
        and number of chunks under the current memory budget; what the call would refuse.
    """
    name = getattr(op, "__name__", repr(op))
    planner = PLANS.get(op)
    if planner is None:
        known = sorted(getattr(f, "__name__", "?") for f in PLANS)
        raise TypeError(f"explain: no plan for {name!r}; operators with one: {known}")
    bound = inspect.signature(op).bind(net, x, *args, **kwargs)
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    mode = arguments.get("mode", "auto")
    chunk_size = arguments.get("chunk_size")
    graph = is_graph(net)
    network = net if graph else as_network(net)
    xp, device, dtype = getattr(network, "xp", None), getattr(network, "device", None), getattr(network, "dtype", None)
    if xp is None:
        xp, device, dtype = array_namespace_of(x), device_of(x), x.dtype
    ctx, xr = resolve_call(x, xp, device, dtype)
    d = int(xr.shape[-1]) if graph or getattr(network, "in_features", None) is None else network.in_features
    n = math.prod(tuple(xr.shape[:-1]))
    itemsize = int(ctx.xp.finfo(ctx.dtype).bits // 8)
    head = {
        "operator": name,
        "points": n,
        "d": d,
        "backend": getattr(ctx.xp, "__name__", str(ctx.xp)),
        "dtype": str(ctx.dtype),
        "budget": get_memory_budget(),
        "checkpoint": checkpointing(),
    }
    if mode not in MODES:
        return Explanation(**head, refusals=(f"ValueError: mode must be one of {MODES}, got {mode!r}",))
    try:
        need = planner(d, arguments)
    except (TypeError, ValueError) as err:
        return Explanation(**head, refusals=(f"{type(err).__name__}: {err}",))
    if graph:
        refusals: tuple[str, ...] = ()
        if mode == "backward":
            refusals = ("ValueError: mode='backward' is not available for a graph (forward mode, jets)",)
        part = Part(
            describe(net),
            "graph",
            f"jet engine: {need.graph}; chains called on the input keep their own recursions",
            "forward",
            "graphs have one mode" if mode != "backward" else "backward refused",
        )
        return Explanation(**head, parts=(part,), refusals=refusals)
    leaves = _leaves(network) if isinstance(network, Composite) else [network]
    parts: list[Part] = []
    refused: list[str] = []
    for leaf in leaves:
        if getattr(leaf, "plan", None) is None:
            continue  # a constant or weightless part
        part, refusal = _chain_part(leaf, need, mode, n, itemsize, chunk_size)
        parts.append(part)
        if refusal:
            refused.append(refusal)
    combined = ""
    if isinstance(network, Composite):
        combined = (
            f"combined by the product rule over {len(parts)} part(s): each part's value, Jacobian and "
            f"{need.quantity.name} (products add their cross terms)"
        )
    return Explanation(**head, parts=tuple(parts), combined=combined, refusals=tuple(refused))
