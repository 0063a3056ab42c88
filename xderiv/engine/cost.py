r"""The cost model: what ``"auto"`` picks and how many points a chunk holds.

Every operator computes one :class:`Quantity`, defined and registered (:func:`register`) in its
module under :mod:`xderiv.operators`: how many derivatives of the activations its value sweep
keeps, the multiply-adds per point of its ``forward`` and ``backward`` recursions (when it has
both), and the floats per point its working arrays hold.  Counts cover the dominant matrix
products plus the elementwise passes over the carried arrays (weighted by :data:`ELEMENTWISE`,
since they cost as much as the products at small widths), in terms of :class:`Dims`: widths
``w_0 = d, w_1, ..., w_L = m`` and ``k`` forward rows (``k = d``, or the number of
directions/coordinates).  :class:`Costs` holds every registered row's answers for one network
shape, tabulated when the network is built, so that a call only reads them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..models.layers import Dense

ELEMENTWISE = 3.0
"""Weight of one elementwise pass relative to one multiply-add of a matrix product."""

LayerShape = tuple[int, int, bool, bool]
"""``(in_features, out_features, skip, linear)`` of one layer: all the model reads of it."""


class Dims:
    """The widths of a network as the cost model sees them.

    Attributes
    ----------
    shape : tuple of LayerShape
    widths : list of int
        ``[d, w_1, ..., w_L = m]``.
    d, m, w1, widest, depth : int
        Input and output dimensions, first and largest layer widths, number of layers.
    """

    def __init__(self, shape: tuple[LayerShape, ...]):
        self.shape = shape
        self.widths = [shape[0][0]] + [s[1] for s in shape]
        self.d, self.m, self.w1 = self.widths[0], self.widths[-1], self.widths[1]
        self.widest, self.depth = max(self.widths[1:]), len(shape)

    def forward_rows(self, k: int) -> float:
        """Carrying ``k`` Jacobian rows through every layer (the first one is ``W`` itself)."""
        dims = self.widths
        cost = sum(k * a * b + ELEMENTWISE * k * b for a, b in zip(dims[1:-1], dims[2:]))
        return float(cost + ELEMENTWISE * k * dims[1])

    def adjoints(self) -> float:
        """The first-order adjoints from the ``m`` outputs to the input."""
        dims = self.widths
        return float(sum(self.m * a * b + ELEMENTWISE * self.m * b for a, b in zip(dims[:-1], dims[1:])))

    def theta(self) -> float:
        """The second-order adjoint through every layer but the first.

        Per layer ``a -> b`` and output: two products (``b^2 a + a^2 b``) and the elementwise passes of
        :func:`xderiv.engine.backward.backward_second_order` (``Theta S`` over ``b x b``; ``h S B``,
        ``diag(c) W^T`` and their sum over ``b x a``; at a residual layer also the two steps ``h``, the
        skip term of ``B`` and the final sum over ``a x a``).
        """
        total = 0.0
        for a, b, skip, _ in self.shape[1:]:
            passes = b * b + 3 * a * b + (3 * a * b + a * a if skip else 0)
            total += self.m * (b * b * a + a * a * b + ELEMENTWISE * passes)
        return total

    def first_theta(self, closing: float) -> float:
        """The first layer of the backward second-order sweep: ``closing`` per output, or a full step if residual."""
        d, w1 = self.d, self.w1
        return float(self.m * (w1 * w1 * d + d * d * w1 if self.shape[0][2] else closing))

    def kept(self) -> float:
        """Floats per point the value sweep keeps for the derivative sweeps (``z``, ``sigma'``, ``sigma''``)."""
        return 3.0 * self.widest * self.depth


Flops = Callable[[Dims, int], tuple[float, float]]
Memory = Callable[[Dims, str, int], float]


@dataclass(frozen=True)
class Quantity:
    """One row of the cost table.

    Attributes
    ----------
    name : str
    order : int
        Derivatives of the activations the value sweep keeps (0, 1, 2, or :math:`K` for Taylor mode).
    memory : callable ``(dims, direction, k) -> float``
        Floats per point alive in the working arrays (outputs excluded),
        besides those :meth:`Dims.kept` counts.
    flops : callable ``(dims, k) -> (forward, backward)``, optional
        Multiply-adds per point of each mode; None for a quantity computed one
        way only (``"forward"``).
    """

    name: str
    order: int
    memory: Memory
    flops: Flops | None = None


def hessian_forward_forms(s: Dims) -> tuple[float, float]:
    r"""Multiply-adds per point of the forward Hessian's two forms: (sum of layers, forward-over-reverse).

    Both carry the ``d`` Jacobian rows forward and the ``m`` adjoints back.  The sum of layers then
    adds :math:`J_z^\top \operatorname{diag}(c) J_z` per nonlinear layer (a ``d x w`` by ``w x d``
    product per point and output, plus scaling the rows and accumulating); forward-over-reverse
    carries the adjoints' ``d`` tangent rows back through every layer (a 2-D product per layer, plus
    three elementwise passes over them per nonlinear layer).
    """
    d, m = s.d, s.m
    nonlinear = [shape[1] for shape in s.shape if not shape[3]]
    both = s.forward_rows(d) + s.adjoints()
    layers = both + sum(m * (d * d * b + ELEMENTWISE * (d * b + d * d)) for b in nonlinear)
    over_reverse = (
        both
        + sum(m * d * a * b for a, b in zip(s.widths[:-1], s.widths[1:]))
        + sum(3.0 * ELEMENTWISE * m * d * b for b in nonlinear)
    )
    return layers, over_reverse


QUANTITIES: dict[str, Quantity] = {}
"""Every quantity an operator computes, by name: tabulated for each network shape at construction."""


def register(quantity: Quantity) -> Quantity:
    """Add an operator's row to :data:`QUANTITIES` (at import of its module) and return it."""
    QUANTITIES[quantity.name] = quantity
    return quantity


VALUE = register(Quantity("value", 0, lambda s, direction, k: 2.0 * s.widest))
"""The value sweep's row (every network's call)."""


def shape_of(layers: Sequence[Dense]) -> tuple[LayerShape, ...]:
    """What the cost model reads of a network (hashable, holds no weights)."""
    return tuple((layer.in_features, layer.out_features, layer.skip, layer.activation.linear) for layer in layers)


def _flops(shape: tuple[LayerShape, ...], quantity: Quantity, k: int | None) -> tuple[float, float]:
    dims = Dims(shape)
    assert quantity.flops is not None
    return quantity.flops(dims, dims.d if k is None else k)


def _cheaper(shape: tuple[LayerShape, ...], quantity: Quantity, k: int | None) -> str:
    fwd, bwd = _flops(shape, quantity, k)
    return "forward" if fwd <= bwd else "backward"


def _floats(shape: tuple[LayerShape, ...], quantity: Quantity, direction: str, k: int | None) -> float:
    dims = Dims(shape)
    return dims.kept() + quantity.memory(dims, direction, dims.d if k is None else k)


_COMMON_ROWS = (None, 1)
"""Forward-row counts tabulated up front: ``d`` (None) and the single direction of ``hvp``/``directional``."""


class Costs:
    """The cost model's answers for one network shape, tabulated once and read-only afterwards.

    Built when a :class:`~xderiv.engine.call.Plan` is (networks of one shape share a
    table), so that a call only reads it: nothing is computed or cached while
    ``torch.compile`` or ``jax.jit`` trace a call.  Other forward-row counts
    ``k`` (``trace_hessian`` with ``k`` directions) are computed per call, a
    pure function of the shape.
    """

    def __init__(self, shape: tuple[LayerShape, ...]) -> None:
        self.shape = shape
        self._hessian_forms = hessian_forward_forms(Dims(shape))
        self._modes = {(q.name, k): _cheaper(shape, q, k) for q in QUANTITIES.values() if q.flops for k in _COMMON_ROWS}
        self._floats = {
            (q.name, direction, k): _floats(shape, q, direction, k)
            for q in QUANTITIES.values()
            for direction in ("forward", "backward")
            for k in _COMMON_ROWS
        }

    def mode(self, quantity: Quantity, mode: str, k: int | None = None) -> str:
        """``mode`` itself, or for ``"auto"`` the cheaper of ``"forward"`` and ``"backward"``.

        A quantity computed one way only is always ``"forward"``.
        """
        if quantity.flops is None:
            return "forward"
        if mode != "auto":
            return mode
        known = self._modes.get((quantity.name, k))
        return known if known is not None else _cheaper(self.shape, quantity, k)

    def hessian_over_reverse(self, stacked: float = 1.0) -> bool:
        """True when the forward Hessian is cheaper as forward-over-reverse than as the sum of layers.

        ``stacked`` is how much slower than its multiply-add count the sum of layers (stacks of
        small per-point products) runs on the namespace at hand
        (:attr:`~xderiv.backends.primitives.Primitives.stacked_products`); 1 where such stacks run as fast as
        2-D products.
        """
        layers, over_reverse = self._hessian_forms
        return over_reverse < stacked * layers

    def floats_per_point(self, quantity: Quantity, direction: str, k: int | None = None) -> float:
        """Working floats one point needs (outputs excluded), for automatic chunking.

        The arrays alive at the widest layer: carried Jacobian rows and their
        products (forward), or second-order adjoints (backward), plus the
        per-layer activation derivatives kept from the value sweep.
        """
        known = self._floats.get((quantity.name, direction, k))
        return known if known is not None else _floats(self.shape, quantity, direction, k)


_TABLES: dict[tuple[LayerShape, ...], Costs] = {}


def costs_of(shape: tuple[LayerShape, ...]) -> Costs:
    """The :class:`Costs` of ``shape`` (shared by every network of that shape; called at construction)."""
    table = _TABLES.get(shape)
    if table is None:
        if len(_TABLES) >= 1024:
            _TABLES.clear()
        table = _TABLES[shape] = Costs(shape)
    return table
