"""Small networks covering every layer type, activation and head, built on any backend."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

import xderiv as xd

ACTIVATIONS = ["identity", "sigmoid", "tanh", "softplus", "quadratic", "sin", "silu", "antitanh", "logcosh"]
NAMES = [f"mlp-{act}" for act in ACTIVATIONS] + [
    "seed-pinn",
    "resnet",
    "residual-first",
    "potential-otflow",
    "potential-general",
    "linear",
]


def _arr(backend: Any, a: np.ndarray, dtype: str) -> Any:
    return backend.asarray(a, dtype)


def residual_first(backend: Any, dtype: str, seed: int = 3) -> xd.Sequential:
    """A residual layer straight on the input (J_u = I at a residual), then mixed layers."""
    rng = np.random.default_rng(seed)
    d = 3
    return xd.Sequential(
        xd.Residual(
            _arr(backend, 0.6 * rng.standard_normal((d, d)), dtype),
            _arr(backend, 0.1 * rng.standard_normal(d), dtype),
            "tanh",
            step=0.7,
        ),
        xd.Dense(
            _arr(backend, 0.6 * rng.standard_normal((d, 4)), dtype),
            _arr(backend, 0.1 * rng.standard_normal(4), dtype),
            "sigmoid",
        ),
        xd.Residual(
            _arr(backend, 0.6 * rng.standard_normal((4, 4)), dtype),
            _arr(backend, 0.1 * rng.standard_normal(4), dtype),
            "silu",
            step=0.3,
        ),
        xd.Dense(
            _arr(backend, 0.6 * rng.standard_normal((4, 2)), dtype), _arr(backend, 0.1 * rng.standard_normal(2), dtype)
        ),
    )


def general_potential(backend: Any, dtype: str, seed: int = 4) -> xd.Potential:
    """A Potential with a non-symmetric A, a 2-layer residual trunk and softplus."""
    rng = np.random.default_rng(seed)
    d, w = 4, 5
    trunk = xd.Sequential(
        xd.Dense(
            _arr(backend, 0.5 * rng.standard_normal((d, w)), dtype),
            _arr(backend, 0.1 * rng.standard_normal(w), dtype),
            "antitanh",
        ),
        xd.Residual(
            _arr(backend, 0.5 * rng.standard_normal((w, w)), dtype),
            _arr(backend, 0.1 * rng.standard_normal(w), dtype),
            "softplus",
            step=0.5,
        ),
    )
    return xd.Potential(
        trunk,
        _arr(backend, rng.standard_normal(w), dtype),
        _arr(backend, rng.standard_normal((d, d)), dtype),
        _arr(backend, rng.standard_normal(d), dtype),
        _arr(backend, np.array(0.3), dtype),
    )


def zoo(backend: Any, dtype: str = "float64") -> dict[str, Callable[[], Any]]:
    """Name -> builder of every test network on ``backend`` in ``dtype``."""
    kw = {"xp": backend.module, "device": backend.device, "dtype": dtype}
    nets: dict[str, Callable[[], Any]] = {
        f"mlp-{act}": (lambda act=act: xd.mlp([3, 6, 5, 2], activation=act, output_activation=act, seed=1, **kw))
        for act in ACTIVATIONS
    }
    nets.update(
        {
            "seed-pinn": lambda: xd.mlp([2, 20, 20, 20, 1], "sigmoid", "sigmoid", seed=0, **kw),
            "resnet": lambda: xd.resnet(
                3, 5, 2, out_features=2, activation="antitanh", residual_activation="tanh", step=0.5, seed=2, **kw
            ),
            "residual-first": lambda: residual_first(backend, dtype),
            "potential-otflow": lambda: xd.potential(4, 6, 2, rank=2, seed=5, **kw),
            "potential-general": lambda: general_potential(backend, dtype),
            "linear": lambda: xd.mlp([3, 2], seed=6, **kw),
        }
    )
    return nets


def points(net: Any, backend: Any, n: int = 3, dtype: str = "float64", seed: int = 7) -> Any:
    rng = np.random.default_rng(seed)
    return backend.asarray(0.8 * rng.standard_normal((n, net.in_features)), dtype)
