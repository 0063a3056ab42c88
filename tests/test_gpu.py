"""GPU-only checks (cupy, torch on CUDA): no host round-trips, and why TF32 stays off."""

from __future__ import annotations

import numpy as np
import pytest

import xderiv as xd

from .helpers import rel_err


def _on_gpu(backend) -> bool:
    return backend.name == "cupy" or (backend.name == "torch" and getattr(backend.device, "type", None) == "cuda")


@pytest.fixture(autouse=True)
def _gpu_only(backend):
    if not _on_gpu(backend):
        pytest.skip("GPU checks run with XDERIV_BACKEND=cupy or XDERIV_BACKEND=torch XDERIV_DEVICE=cuda")


def test_every_operator_stays_on_the_gpu(backend):
    net = xd.resnet(8, 32, 3, out_features=2, seed=0, xp=backend.module, device=backend.device)
    x = backend.asarray(np.random.default_rng(0).standard_normal((64, 8)))
    v = backend.asarray(np.ones(8))
    outs = [
        xd.hessian(net, x, mode="forward"),
        xd.hessian(net, x, mode="backward"),
        xd.laplacian(net, x, mode="forward"),
        xd.laplacian(net, x, mode="backward"),
        xd.trace_hessian(net, x, backend.asarray(np.ones((8, 3)))),
        xd.hvp(net, x, v),
        xd.hessian_diagonal(net, x),
    ]
    for out in outs:
        assert backend.device_of(out) == backend.device_of(x)


def test_tf32_degrades_second_derivatives(backend):
    """float32 with TF32 matmuls (10-bit mantissa) is far less accurate than plain float32: keep it off."""
    net64 = xd.mlp([16, 256, 256, 1], activation="tanh", seed=0, xp=backend.module, device=backend.device)
    net32 = xd.mlp(
        [16, 256, 256, 1], activation="tanh", seed=0, xp=backend.module, device=backend.device, dtype="float32"
    )
    xn = np.random.default_rng(0).standard_normal((256, 16))
    ref = backend.to_numpy(xd.hessian(net64, backend.asarray(xn)))
    plain = rel_err(backend.to_numpy(xd.hessian(net32, backend.asarray(xn, "float32"))), ref)
    if backend.name == "torch":
        import torch

        old = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = True
        try:
            tf32 = rel_err(backend.to_numpy(xd.hessian(net32, backend.asarray(xn, "float32"))), ref)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = old
    else:
        pytest.skip("CuPy enables TF32 only through the CUPY_TF32 environment variable at import")
    print(f"float32 Hessian error: {plain:.1e} without TF32, {tf32:.1e} with TF32")
    assert plain < 1e-4
    assert tf32 > 10 * plain
