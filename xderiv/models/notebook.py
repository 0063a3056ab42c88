"""The networks of the seed notebook, rebuilt with xderiv (used by the demo and the tests).

- ``pinn``: the Keras PINN, 2 inputs, 3 hidden layers of 20, sigmoid everywhere
  including the output, evaluated at x = (0.15, 0.1).
- ``resnet``: the notebook's ResNet N(s) . w (opening Dense 2 -> 16, one residual
  layer with step 1, sigmoid), whose gradient the notebook computed by hand and
  whose Hessian it never finished.
- ``potential``: Phi(s) = N(s) . w + 1/2 s^T A s + c^T s + b with a general
  (non-symmetric, Keras ``Dense(2, use_bias=False)``) A.
"""

from __future__ import annotations

import math
from typing import Any

from ..backends.random import WeightSampler
from .layers import Dense, Residual
from .networks import Potential, Sequential, mlp

SEED_POINT = (0.15, 0.1)
"""The point at which the notebook evaluated its networks."""


def pinn(*, xp: Any = None, device: Any = None, dtype: Any = None, seed: int = 0) -> Sequential:
    """The notebook's PINN: ``mlp([2, 20, 20, 20, 1], "sigmoid", "sigmoid")``."""
    return mlp([2, 20, 20, 20, 1], "sigmoid", "sigmoid", xp=xp, device=device, dtype=dtype, seed=seed)


def _resnet_layers(s: Any, width: int = 16, step: float = 1.0) -> list[Dense]:
    scale0, scale1 = math.sqrt(2.0 / (2 + width)), math.sqrt(1.0 / width)
    return [
        Dense(s.normal((2, width), scale0), s.normal((width,), 0.1), "sigmoid"),
        Residual(s.normal((width, width), scale1), s.normal((width,), 0.1), "sigmoid", step=step),
    ]


def resnet(*, xp: Any = None, device: Any = None, dtype: Any = None, seed: int = 1) -> Sequential:
    """The notebook's ResNet read out by ``w``: ``s -> N(s) . w`` (one output)."""
    s = WeightSampler(seed, xp=xp, device=device, dtype=dtype)
    layers = _resnet_layers(s)
    return Sequential(*layers, Dense(s.normal((16, 1), 0.4)))


def potential(*, xp: Any = None, device: Any = None, dtype: Any = None, seed: int = 1) -> Potential:
    """The notebook's potential ``Phi(s) = N(s) . w + 1/2 s^T A s + c^T s + b`` (A not symmetric)."""
    s = WeightSampler(seed, xp=xp, device=device, dtype=dtype)
    trunk = Sequential(*_resnet_layers(s))
    w = s.normal((16,), 0.4)
    A, c = s.normal((2, 2), 0.7), s.normal((2,), 0.7)
    return Potential(trunk, w, A, c, 0.0)
