"""Reading values only where they exist: the finiteness check and backends.namespace._concrete_bool."""

from __future__ import annotations

import numpy as np
import pytest

import xderiv as xd


def test_finiteness_check_keeps_autograd_and_skips_unknowable_values(backend):
    """requires_grad weights pass the check untouched; values that cannot be read (meta tensors,
    tracers) skip it instead of raising or forcing a computation."""
    from xderiv.backends.namespace import _concrete_bool

    class Tracer:  # what jax.jit hands in: bool() is an error, not a value
        def __bool__(self):
            raise RuntimeError("abstract value has no truth value")

    assert _concrete_bool(Tracer()) is None
    if backend.name == "jax":
        import jax

        w = backend.asarray(np.full((3, 2), np.nan))
        with pytest.raises(ValueError, match="Dense: weight contains NaN"):
            xd.Dense(w)  # concrete JAX arrays are checked

        def f(weight, x):  # under jit the weights are tracers: the check is skipped, not an error
            return xd.laplacian(xd.Sequential(xd.Dense(weight, activation="tanh")), x).sum()

        assert np.isnan(float(jax.jit(f)(w, backend.asarray(np.zeros((2, 3))))))
        return
    if backend.name != "torch":
        pytest.skip("requires_grad and meta tensors are torch notions")
    import torch

    w = backend.asarray(np.ones((3, 2))).requires_grad_(True)
    layer = xd.Dense(w, activation="tanh")
    assert layer.weight is w and w.grad is None and w.requires_grad
    y = xd.laplacian(xd.Sequential(layer), backend.asarray(np.zeros((2, 3)))).sum()
    y.backward()
    assert w.grad is not None
    meta = torch.full((3, 2), float("nan"), dtype=torch.float64, device="meta")
    assert xd.Dense(meta).weight is meta
