"""The ``backend`` fixture: one per nox session, chosen by ``XDERIV_BACKEND``.

``XDERIV_BACKEND`` is ``numpy`` (default), ``torch``, ``strict``
(array-api-strict with extensions disabled, arrays on its ``device1``),
``jax`` (float64 enabled), ``dask`` (dask.array, lazy) or ``cupy``;
``XDERIV_DEVICE=cuda`` puts the torch session on the GPU.  A backend that
cannot run here skips every test, saying why.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

BACKEND = os.environ.get("XDERIV_BACKEND", "numpy")


@dataclass
class Backend:
    """A backend under test: factory module, device, namespace and converters."""

    name: str
    module: Any  # what a user passes as xp= to the factories
    device: Any  # device of every array the tests create
    xp: Any  # the Array API namespace of those arrays

    def dtype(self, name: str) -> Any:
        return getattr(self.xp, name)

    def asarray(self, a: Any, dtype: str = "float64") -> Any:
        return self.xp.asarray(np.asarray(a), dtype=self.dtype(dtype), device=self.device)

    def to_numpy(self, a: Any) -> np.ndarray:
        if self.name == "torch":
            return a.detach().cpu().numpy()
        if self.name == "cupy":
            return a.get()
        if self.name == "dask":
            return np.asarray(a.compute())
        if self.name == "strict":
            import array_api_strict

            return np.asarray(a.to_device(array_api_strict.Device("CPU_DEVICE")))
        return np.asarray(a)

    def device_of(self, a: Any) -> Any:
        import array_api_compat

        return array_api_compat.device(a)


def _make_backend(name: str) -> Backend:
    import array_api_compat

    if name == "numpy":
        return Backend("numpy", np, None, array_api_compat.array_namespace(np.zeros(1)))
    if name == "torch":
        torch = pytest.importorskip("torch", reason="torch is not installed in this session")
        torch.set_num_threads(1)  # the test problems are tiny: threads only add dispatch overhead
        device = os.environ.get("XDERIV_DEVICE")  # e.g. "cuda" on a GPU machine
        if device is not None:
            if device.startswith("cuda") and not torch.cuda.is_available():
                pytest.skip(f"XDERIV_DEVICE={device} but torch sees no CUDA device")
            device = torch.device(device)
        return Backend("torch", torch, device, array_api_compat.array_namespace(torch.zeros(1)))
    if name == "strict":
        strict = pytest.importorskip("array_api_strict")
        strict.set_array_api_strict_flags(enabled_extensions=())
        dev = strict.Device("device1")
        return Backend("strict", strict, dev, strict)
    if name == "jax":
        jax = pytest.importorskip("jax", reason="jax is not installed in this session")
        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp

        return Backend("jax", jnp, None, array_api_compat.array_namespace(jnp.zeros(1)))
    if name == "dask":
        da = pytest.importorskip("dask.array", reason="dask is not installed in this session")
        return Backend("dask", da, None, array_api_compat.array_namespace(da.zeros(1)))
    if name == "cupy":
        try:
            import cupy
        except ImportError as exc:
            pytest.skip(f"CuPy is not installed: {exc}")
        try:
            if not cupy.is_available():
                pytest.skip("CuPy imports but cupy.is_available() is False: no usable CUDA GPU/driver here")
            cupy.zeros(1)
        except Exception as exc:  # the first allocation raises without a GPU
            pytest.skip(f"CuPy cannot allocate on a GPU here: {exc}")
        return Backend("cupy", cupy, None, array_api_compat.array_namespace(cupy.zeros(1)))
    raise ValueError(f"XDERIV_BACKEND={name!r}: expected numpy, torch, strict, jax, dask or cupy")


@pytest.fixture(scope="session")
def backend() -> Backend:
    """The backend this session tests (``XDERIV_BACKEND``)."""
    return _make_backend(BACKEND)


@pytest.fixture(scope="session")
def xp(backend: Backend) -> Any:
    """The Array API namespace of the session's backend."""
    return backend.xp
