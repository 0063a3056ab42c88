"""Seeded weight draws, placed on any namespace.

The draws come from a host-side generator that :mod:`xderiv.interop.adapters` registers when
xderiv is imported (NumPy's ``default_rng``, NumPy being the default backend too): this module
imports no array library.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import array_api_compat

_GENERATOR: dict[str, Any] = {}


def register_generator(make: Callable[[int | None], Any], default_xp: Any) -> None:
    """Register the weights' generator: ``make(seed)`` returns an object whose
    ``standard_normal(shape)`` draws host arrays in a fixed order; ``default_xp`` is the namespace
    the weights go to when none is named."""
    _GENERATOR.update(make=make, default_xp=default_xp)


class WeightSampler:
    """Draws arrays in a fixed order from the registered generator (NumPy's ``default_rng(seed)``).

    Parameters
    ----------
    seed : int or None
        Seed of the generator; the same seed gives the same weights on every backend.
    xp : module or None
        Target namespace (``numpy``, ``torch``, ``cupy``, ``array_api_strict``,
        ``jax.numpy`` ...); NumPy when None.
    device : optional
        Target device, passed to ``xp.asarray``.
    dtype : dtype or str or None
        Target dtype (``xp.float64`` when None).
    """

    def __init__(self, seed: int | None, xp: Any = None, device: Any = None, dtype: Any = None):
        self.rng = _GENERATOR["make"](seed)
        module = _GENERATOR["default_xp"] if xp is None else xp
        probe = module.asarray([0.0]) if device is None else module.asarray([0.0], device=device)
        self.xp = array_api_compat.array_namespace(probe)
        self.device = array_api_compat.device(probe) if device is None else device
        if dtype is None:
            dtype = self.xp.float64
        elif isinstance(dtype, str):
            dtype = getattr(self.xp, dtype)
        self.dtype = dtype

    def normal(self, shape: tuple[int, ...], scale: float) -> Any:
        """An array of the given shape with N(0, scale^2) entries."""
        a = self.rng.standard_normal(shape) * scale
        return self.xp.asarray(a, dtype=self.dtype, device=self.device)
