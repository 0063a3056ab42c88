"""Finite-difference references computed in the backend under test."""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

import xderiv as xd
from xderiv.jets import is_graph


def fd_jacobian(net: Any, x: Any, backend: Any, eps: float = 1e-5) -> np.ndarray:
    """Central differences of the value: ``(f(x + eps e_i) - f(x - eps e_i)) / 2 eps``, shape ``(n, m, d)``.

    ``x`` has shape ``(n, d)``; the network output is reshaped to ``(n, m)``.
    """
    xn = backend.to_numpy(x)
    n, d = xn.shape
    shifted = xn[:, None, :] + eps * np.eye(d)[None]
    back = xn[:, None, :] - eps * np.eye(d)[None]
    fp = backend.to_numpy(net(backend.asarray(shifted, str(xn.dtype)))).reshape(n, d, -1)
    fm = backend.to_numpy(net(backend.asarray(back, str(xn.dtype)))).reshape(n, d, -1)
    return np.transpose((fp - fm) / (2 * eps), (0, 2, 1))


def fd_hessian(net: Any, x: Any, backend: Any, eps: float = 1e-5) -> np.ndarray:
    """Central differences of xderiv's Jacobian, symmetrised, shape ``(n, m, d, d)``."""
    xn = backend.to_numpy(x)
    n, d = xn.shape

    def jac(points: np.ndarray) -> np.ndarray:
        mode = "auto" if is_graph(net) else "backward"  # a graph has one mode, forward
        j = backend.to_numpy(xd.jacobian(net, backend.asarray(points, str(xn.dtype)), mode=mode))
        return j.reshape(n, d, -1, d)  # (n, i, m, j)

    jp = jac(xn[:, None, :] + eps * np.eye(d)[None])
    jm = jac(xn[:, None, :] - eps * np.eye(d)[None])
    h = np.transpose((jp - jm) / (2 * eps), (0, 2, 1, 3))  # (n, m, i, j)
    return 0.5 * (h + np.swapaxes(h, -1, -2))


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """Largest absolute difference relative to the largest magnitude of ``b``."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(float(np.max(np.abs(b))), 1e-30) if b.size else 1.0
    return float(np.max(np.abs(a - b))) / scale if a.size else 0.0


@contextlib.contextmanager
def torch_on_cpu() -> Iterator[None]:
    """Build torch modules on the CPU (then ``.to(device)``): the same weights on every device.

    Explicit, so that a session that changes torch's default device (``XDERIV_TORCH_DEFAULT_DEVICE``)
    does not build them elsewhere.
    """
    import torch

    with torch.device("cpu"):
        yield


# What torch.compile hands the traced graph to in the tests that check tracing (no graph break, no
# warning, the eager results): "aot_eager", which runs Dynamo and AOT autograd (the forward and backward
# graphs) as inductor does but skips its code generation (cold, ~4x the tracing time per case; what
# xderiv hands it is the same traced graph). Inductor itself compiles the training step below and every
# xd.compile test (its default backend); XDERIV_TEST_COMPILE_BACKEND=inductor compiles every case with it.
COMPILE_BACKEND = os.environ.get("XDERIV_TEST_COMPILE_BACKEND", "aot_eager")


def torch_compile(fn, *, backend: str | None = None, **kw):
    """``torch.compile(fn, fullgraph=True, backend=backend or COMPILE_BACKEND, **kw)``."""
    import torch

    return torch.compile(fn, fullgraph=True, backend=backend or COMPILE_BACKEND, **kw)


def quiet_compile(fn, *args, backend: str | None = None, **kw):
    """``fn`` compiled (:func:`torch_compile`) and called; fails on any warning raised while tracing."""
    compiled = torch_compile(fn, backend=backend, **kw)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = compiled(*args)
    ours = [str(w.message)[:200] for w in caught if "deprecated" not in str(w.message)]
    assert not ours, f"tracing warned: {ours}"
    return out
