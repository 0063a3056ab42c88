r"""Cost model behind ``mode="auto"``: multiply-adds per sample of each sweep.

Counts the dominant matrix products and the elementwise passes over the
carried arrays (which cost as much as the products at small widths).  With
widths ``w_0 = d, w_1, ..., w_L = m``:

- Jacobian: forward ``d sum w_{l-1} w_l``; backward ``m sum w_{l-1} w_l``.
- Laplacian: forward as the Jacobian plus ``3 d sum w_l``; backward
  ``m sum w_l w_{l-1} (w_l + w_{l-1})`` after the first layer, whose Gram
  trace costs ``m w_1^2``.
- Hessian: forward (sum of layers) the Jacobian, the adjoints and
  ``m d^2 sum w_l``; backward as the Laplacian but the first layer costs
  ``m (w_1^2 d + d^2 w_1)``.
"""

from __future__ import annotations

from collections.abc import Sequence

from .layers import Dense

ELEMENTWISE = 3.0
"""Weight of one elementwise pass relative to one multiply-add of a matrix product."""


def _dims(layers: Sequence[Dense]) -> list[int]:
    return [layers[0].in_features] + [layer.out_features for layer in layers]


def jacobian_costs(layers: Sequence[Dense]) -> dict[str, float]:
    """Per-sample cost of the forward and backward Jacobian."""
    dims = _dims(layers)
    d, m = dims[0], dims[-1]
    fwd = sum(d * a * b + ELEMENTWISE * d * b for a, b in zip(dims[1:-1], dims[2:]))
    fwd += ELEMENTWISE * d * dims[1]
    bwd = sum(m * a * b + ELEMENTWISE * m * b for a, b in zip(dims[:-1], dims[1:]))
    return {"forward": float(fwd), "backward": float(bwd)}


def _second_order_backward(layers: Sequence[Dense], first_layer: float) -> float:
    dims = _dims(layers)
    m = dims[-1]
    cost = first_layer
    for _layer, a, b in list(zip(layers, dims[:-1], dims[1:]))[1:]:
        cost += m * (b * b * a + a * a * b + ELEMENTWISE * (b * b + a * b))
    return float(cost)


def laplacian_costs(layers: Sequence[Dense]) -> dict[str, float]:
    """Per-sample cost of the forward Laplacian and the backward (Gram) Laplacian."""
    dims = _dims(layers)
    d, m, w1 = dims[0], dims[-1], dims[1]
    fwd = jacobian_costs(layers)["forward"] + sum(ELEMENTWISE * d * b + a * b for a, b in zip(dims[:-1], dims[1:]))
    first = m * ELEMENTWISE * w1 * w1 if not layers[0].skip else m * (w1 * w1 * d + d * d * w1)
    return {"forward": float(fwd), "backward": _second_order_backward(layers, first)}


def hessian_costs(layers: Sequence[Dense]) -> dict[str, float]:
    """Per-sample cost of the sum-of-layers (forward) and the backward Hessian."""
    dims = _dims(layers)
    d, m, w1 = dims[0], dims[-1], dims[1]
    nonlinear = [layer.out_features for layer in layers if not layer.activation.linear]
    fwd = jacobian_costs(layers)["forward"] + jacobian_costs(layers)["backward"]
    fwd += sum(m * (d * d * b + ELEMENTWISE * d * b) for b in nonlinear)
    first = m * (w1 * w1 * d + d * d * w1 + ELEMENTWISE * d * w1)
    return {"forward": float(fwd), "backward": _second_order_backward(layers, first)}


COSTS = {"jacobian": jacobian_costs, "laplacian": laplacian_costs, "hessian": hessian_costs}


def choose_mode(layers: Sequence[Dense], quantity: str) -> str:
    """The cheaper of ``"forward"`` and ``"backward"`` for ``quantity`` by the model above."""
    costs = COSTS[quantity](layers)
    return "forward" if costs["forward"] <= costs["backward"] else "backward"
