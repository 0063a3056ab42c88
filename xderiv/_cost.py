r"""Cost model behind ``mode="auto"``, and the working memory behind automatic chunking.

Counts multiply-adds per point of the dominant matrix products plus the
elementwise passes over the carried arrays (which cost as much as the products
at small widths).  With widths ``w_0 = d, w_1, ..., w_L = m`` and ``k``
forward rows (``k = d``, or the number of directions/coordinates):

- Jacobian: forward ``k sum w_{l-1} w_l``; backward ``m sum w_{l-1} w_l``.
- Laplacian / trace along ``k`` directions: forward as the Jacobian plus
  ``3 k sum w_l``; backward ``m sum w_l w_{l-1} (w_l + w_{l-1})`` after the
  first layer, whose Gram trace costs ``m w_1^2``.
- Hessian: forward (sum of layers) the Jacobian, the adjoints and
  ``m d^2 sum w_l``; backward as the Laplacian but the first layer costs
  ``m (w_1^2 d + d^2 w_1)``.
- Hessian diagonal: forward twice the Jacobian; backward as the Laplacian
  plus ``m d w_1^2`` at the first layer.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .layers import Dense

if TYPE_CHECKING:
    from ._call import Call

ELEMENTWISE = 3.0
"""Weight of one elementwise pass relative to one multiply-add of a matrix product."""


def _dims(layers: Sequence[Dense]) -> list[int]:
    return [layers[0].in_features] + [layer.out_features for layer in layers]


def _forward_rows(layers: Sequence[Dense], k: int) -> float:
    """Carrying ``k`` Jacobian rows through every layer (the first one is ``W`` itself)."""
    dims = _dims(layers)
    cost = sum(k * a * b + ELEMENTWISE * k * b for a, b in zip(dims[1:-1], dims[2:]))
    return float(cost + ELEMENTWISE * k * dims[1])


def _adjoints(layers: Sequence[Dense]) -> float:
    dims = _dims(layers)
    m = dims[-1]
    return float(sum(m * a * b + ELEMENTWISE * m * b for a, b in zip(dims[:-1], dims[1:])))


def _theta(layers: Sequence[Dense]) -> float:
    """The second-order adjoint through every layer but the first."""
    dims = _dims(layers)
    m = dims[-1]
    return float(sum(m * (b * b * a + a * a * b + ELEMENTWISE * (b * b + a * b)) for a, b in zip(dims[1:-1], dims[2:])))


def costs(layers: Sequence[Dense], quantity: str, k: int | None = None) -> dict[str, float]:
    """Per-point cost of ``quantity`` (jacobian, laplacian, hessian, diagonal) in each mode."""
    dims = _dims(layers)
    d, m, w1 = dims[0], dims[-1], dims[1]
    k = d if k is None else k
    first_theta = (lambda extra: m * extra) if not layers[0].skip else (lambda extra: m * (w1 * w1 * d + d * d * w1))
    if quantity == "jacobian":
        return {"forward": _forward_rows(layers, k), "backward": _adjoints(layers)}
    if quantity == "laplacian":
        fwd = _forward_rows(layers, k) + sum(ELEMENTWISE * k * b + a * b for a, b in zip(dims[:-1], dims[1:]))
        # The Gram matrix of S^T W_0 is shared by the batch: no per-point cost beyond K * G.
        return {"forward": fwd, "backward": _theta(layers) + first_theta(ELEMENTWISE * w1 * w1)}
    if quantity == "diagonal":
        return {"forward": 2.0 * _forward_rows(layers, d), "backward": _theta(layers) + first_theta(2 * d * w1 * w1)}
    if quantity == "hessian":
        nonlinear = [layer.out_features for layer in layers if not layer.activation.linear]
        fwd = _forward_rows(layers, d) + _adjoints(layers)
        fwd += sum(m * (d * d * b + ELEMENTWISE * d * b) for b in nonlinear)
        bwd = _theta(layers) + first_theta(w1 * w1 * d + d * d * w1 + ELEMENTWISE * d * w1)
        return {"forward": float(fwd), "backward": float(bwd)}
    raise ValueError(f"unknown quantity {quantity!r}")


def choose(layers: Sequence[Dense], quantity: str, mode: str, k: int | None = None) -> str:
    """``mode`` itself, or for ``"auto"`` the cheaper of ``"forward"`` and ``"backward"`` (memoised per shape)."""
    if mode != "auto":
        return mode
    shape = tuple((layer.in_features, layer.out_features, layer.skip, layer.activation.linear) for layer in layers)
    return _cheaper(shape, quantity, k)


class _Shape:
    """Just what the cost model reads of a layer (so the memo holds no weights)."""

    def __init__(self, n_in: int, n_out: int, skip: bool, linear: bool):
        self.in_features, self.out_features, self.skip = n_in, n_out, skip
        self.activation = self
        self.linear = linear


@functools.lru_cache(maxsize=1024)
def _cheaper(shape: tuple[tuple[int, int, bool, bool], ...], quantity: str, k: int | None) -> str:
    c = costs([_Shape(*s) for s in shape], quantity, k)  # type: ignore[misc]
    return "forward" if c["forward"] <= c["backward"] else "backward"


def bytes_per_point(call: Call, quantity: str, mode: str) -> float:
    """Working memory one point needs (outputs excluded), for automatic chunking.

    Counts the arrays alive at the widest layer: carried Jacobian rows and
    their products (forward), or second-order adjoints (backward), plus the
    per-layer activation derivatives kept from the value sweep.
    """
    layers = call.layers
    d, m = call.d, call.m
    w = max(layer.out_features for layer in layers)
    kept = 3.0 * w * len(layers)
    direction = "forward" if quantity == "hvp" else choose(layers, quantity, mode)
    if quantity == "jacobian":
        live = 3.0 * (d * w if direction == "forward" else m * w)
    elif quantity == "hvp":
        live = w * len(layers) + 4.0 * m * w
    elif quantity in ("laplacian", "diagonal"):
        live = 4.0 * d * w if direction == "forward" else 4.0 * m * w * w + 2.0 * m * d * w
    else:  # hessian
        live = (3.0 * d * w + 2.0 * m * d * w) if direction == "forward" else (4.0 * m * w * w + 2.0 * m * d * w)
        live += m * w * len(layers) + m * d * d
    itemsize = int(call.ctx.xp.finfo(call.ctx.dtype).bits // 8)
    return (kept + live) * itemsize
