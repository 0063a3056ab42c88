"""A network as (architecture, arrays) and back: shared by the converters, ``as_module`` and :mod:`~xderiv.interop.io`.

:func:`flatten` splits a :class:`~xderiv.Sequential` or :class:`~xderiv.Potential`
into a JSON-able ``spec`` and the list of its arrays in a fixed order;
:func:`unflatten` rebuilds an equal network from a spec and (possibly other)
arrays.  Array order: for every layer its arrays (:data:`LAYER_ARRAYS`: ``weight``
then ``bias``; an input scale's ``mean`` and ``std``; Fourier features' ``B``); a
Potential's trunk layers come first, then the read-out ``w`` (shape ``(k, 1)``)
and offset ``b`` (shape ``(1,)``), then ``A`` and ``c`` when present.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..activations import get_activation
from ..models.composition import Composite
from ..models.layers import Dense, FourierFeatures, InputScale, Residual
from ..models.networks import Potential, Sequential

LAYER_ARRAYS: dict[str, tuple[str, ...]] = {
    "Dense": ("weight", "bias"),
    "Residual": ("weight", "bias"),
    "InputScale": ("mean", "std"),
    "FourierFeatures": ("B",),
}
"""The layer types a spec describes, and the names of the arrays each holds (in :meth:`arrays` order)."""


def flatten(net: Any) -> tuple[dict[str, Any], list[Any]]:
    """``(spec, arrays)`` of a Sequential, Potential or single layer (see module docstring)."""
    if isinstance(net, Dense):
        net = Sequential(net)
    if isinstance(net, Potential):
        layers, kind = net.trunk.layers, "Potential"
    elif isinstance(net, Sequential):
        layers, kind = net.layers, "Sequential"
    else:
        hint = (
            "; a composite (Sum, Product, Scaled) is described by its parts: save each part and combine them again"
            if isinstance(net, Composite)
            else ""
        )
        raise TypeError(f"expected an xderiv Sequential, Potential or layer, got {type(net).__name__}{hint}")
    spec: dict[str, Any] = {"kind": kind, "layers": []}
    arrays: list[Any] = []
    for layer in layers:
        if type(layer) not in (Dense, Residual, InputScale, FourierFeatures):
            raise TypeError(f"cannot describe layer type {type(layer).__name__} (only {', '.join(LAYER_ARRAYS)})")
        spec["layers"].append(
            {
                "type": type(layer).__name__,
                "activation": layer.activation.name,
                "step": float(layer.step),
            }
        )
        arrays += layer.arrays()
    if isinstance(net, Potential):
        arrays += [net.w, net.b]
        spec["quadratic"] = net.A is not None
        spec["linear"] = net.c is not None
        arrays += [a for a in (net.A, net.c) if a is not None]
    return spec, arrays


def array_names(spec: dict[str, Any]) -> list[str]:
    """Readable names of the arrays of :func:`flatten`, in the same order."""
    names: list[str] = []
    for i, ls in enumerate(spec["layers"]):
        names += [f"layers.{i}.{name}" for name in _layer_arrays(ls["type"])]
    if spec["kind"] == "Potential":
        names += ["w", "b"]
        names += [n for n, on in (("A", spec.get("quadratic")), ("c", spec.get("linear"))) if on]
    return names


def _layer_arrays(kind: str) -> tuple[str, ...]:
    if kind not in LAYER_ARRAYS:
        raise ValueError(f"unknown layer type {kind!r} in network spec (known: {', '.join(LAYER_ARRAYS)})")
    return LAYER_ARRAYS[kind]


def unflatten(spec: dict[str, Any], arrays: list[Any]) -> Sequential | Potential:
    """Rebuild the network described by ``spec`` around ``arrays`` (no copies)."""
    expected = len(array_names(spec))
    if len(arrays) != expected:
        raise ValueError(f"network spec needs {expected} arrays, got {len(arrays)}")
    layers: list[Dense] = []
    rest = list(arrays)
    for ls in spec["layers"]:
        k = len(_layer_arrays(ls["type"]))
        mine, rest = rest[:k], rest[k:]
        if ls["type"] == "Residual":
            layers.append(Residual(mine[0], mine[1], activation=get_activation(ls["activation"]), step=ls["step"]))
        elif ls["type"] == "Dense":
            layers.append(Dense(mine[0], mine[1], activation=get_activation(ls["activation"])))
        elif ls["type"] == "InputScale":
            layers.append(InputScale(*mine))
        else:
            layers.append(FourierFeatures(*mine))
    if spec["kind"] == "Sequential":
        return Sequential(*layers)
    if spec["kind"] != "Potential":
        raise ValueError(f"unknown network kind {spec['kind']!r}")
    w, b, rest = rest[0], rest[1], rest[2:]
    A = rest.pop(0) if spec.get("quadratic") else None
    c = rest.pop(0) if spec.get("linear") else None
    return Potential(Sequential(*layers), w, A, c, b)


# --------------------------------------------------------------------------- array conversion


def to_numpy(a: Any) -> np.ndarray:
    """A NumPy copy (or view) of any array: torch (detached, moved to CPU), CuPy, array-api-strict, NumPy."""
    if isinstance(a, np.ndarray):
        return a
    mod = type(a).__module__
    if mod.startswith("torch"):
        return a.detach().cpu().numpy()
    if hasattr(a, "get") and mod.startswith("cupy"):
        return a.get()
    try:
        return np.asarray(a)
    except Exception:  # noqa: BLE001 - e.g. array-api-strict arrays on a non-CPU device
        pass
    if hasattr(a, "to_device"):
        import array_api_strict

        return np.asarray(a.to_device(array_api_strict.Device("CPU_DEVICE")))
    return np.from_dlpack(a)


def resolve_target(xp: Any, device: Any, dtype: Any, default_dtype: str = "float64") -> tuple[Any, Any, Any]:
    """``(namespace, device, dtype)`` for a module ``xp`` as the factories take it (NumPy when None)."""
    import array_api_compat

    module = np if xp is None else xp
    probe = module.asarray([0.0]) if device is None else module.asarray([0.0], device=device)
    ns = array_api_compat.array_namespace(probe)
    dev = array_api_compat.device(probe) if device is None else device
    if dtype is None:
        dtype = default_dtype
    if isinstance(dtype, str):
        dtype = getattr(ns, dtype)
    return ns, dev, dtype


def place(a: Any, xp: Any, device: Any, dtype: Any) -> Any:
    """Copy ``a`` (any library) into namespace ``xp`` on ``device`` with ``dtype``."""
    return xp.asarray(np.ascontiguousarray(to_numpy(a)), dtype=dtype, device=device)


def convert_all(arrays: list[Any], xp: Any, device: Any, dtype: Any) -> list[Any]:
    """Leave ``arrays`` alone when ``xp``, ``device`` and ``dtype`` are all None, else :func:`place` each.

    Python lists and scalars are always read with NumPy first.
    """
    if xp is None and device is None and dtype is None:
        return [np.asarray(a, dtype=np.float64) if isinstance(a, (list, tuple, float, int)) else a for a in arrays]
    if xp is None:
        import array_api_compat

        first = next((a for a in arrays if array_api_compat.is_array_api_obj(a)), None)
        xp = np if first is None else _module_of(first)
    ns, dev, dt = resolve_target(xp, device, dtype, default_dtype=_dtype_name(arrays))
    return [place(a, ns, dev, dt) for a in arrays]


def _module_of(a: Any) -> Any:
    import array_api_compat

    if array_api_compat.is_torch_array(a):
        import torch

        return torch
    return array_api_compat.array_namespace(a)


def _dtype_name(arrays: list[Any]) -> str:
    """``"float32"`` when every array is float32, else ``"float64"``."""
    names = [str(getattr(a, "dtype", "")) for a in arrays]
    return "float32" if names and all("float32" in n for n in names) else "float64"


__all__ = [
    "array_names",
    "convert_all",
    "flatten",
    "place",
    "resolve_target",
    "to_numpy",
    "unflatten",
]
