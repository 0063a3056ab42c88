"""Thread safety: one network evaluated from several threads at once gives the sequential results.

Networks hold only references to their weights and an immutable plan; every call
keeps its state in local variables.  These tests start all threads together
behind a barrier, run every public operator in every mode many times, and
compare bit for bit with results computed beforehand on one thread.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

import xderiv as xd

from .networks_zoo import zoo

THREADS = 6
ROUNDS = 2
MODES = ("forward", "backward", "auto")


def _operators(net: Any, x: Any, mode: str) -> list[Any]:
    r = xd.derivatives(net, x, hessian=True, laplacian=True, mode=mode)
    outs = [
        net(x),
        xd.jacobian(net, x, mode=mode),
        xd.hessian(net, x, mode=mode),
        xd.laplacian(net, x, mode=mode),
        r.value,
        r.jacobian,
        r.hessian,
        r.laplacian,
    ]
    if net.out_features == 1:
        outs.append(xd.gradient(net, x, mode=mode))
    if hasattr(xd, "hessian_diagonal"):
        outs.append(xd.hessian_diagonal(net, x, mode=mode))
    if hasattr(xd, "hvp"):
        outs.append(xd.hvp(net, x, x))
    return outs


def _nets(backend: Any) -> dict[str, Any]:
    kw = {"xp": backend.module, "device": backend.device}
    return {
        "potential-general": zoo(backend)["potential-general"](),
        "residual-first": zoo(backend)["residual-first"](),
        # wide enough that BLAS kernels (which may use threads of their own) take their blocked paths
        "wide-resnet": xd.resnet(6, 32, 3, out_features=2, activation="antitanh", seed=11, **kw),
        "float32-mlp": xd.mlp([5, 32, 32, 3], activation="silu", seed=12, dtype="float32", **kw),
    }


def _same(backend: Any, got: list[Any], want: list[Any]) -> bool:
    return all(
        g.dtype == w.dtype and np.array_equal(backend.to_numpy(g), backend.to_numpy(w)) for g, w in zip(got, want)
    )


@pytest.mark.parametrize("name", ["potential-general", "residual-first", "wide-resnet", "float32-mlp"])
def test_concurrent_evaluation_matches_sequential(backend, name):
    net = _nets(backend)[name]
    dtype = "float32" if name.startswith("float32") else "float64"
    rng = np.random.default_rng(0)
    # Each thread gets its own points, and all threads also share one input array.
    inputs = [backend.asarray(rng.standard_normal((24, net.in_features)), dtype) for _ in range(THREADS)]
    shared = backend.asarray(rng.standard_normal((24, net.in_features)), dtype)
    want = {(i, mode): _operators(net, inputs[i], mode) for i in range(THREADS) for mode in MODES}
    want_shared = {mode: _operators(net, shared, mode) for mode in MODES}

    barrier = threading.Barrier(THREADS)

    def work(i: int) -> list[str]:
        barrier.wait()
        bad = []
        for r in range(ROUNDS):
            for mode in MODES[r % 3 :] + MODES[: r % 3]:  # threads interleave different modes
                if not _same(backend, _operators(net, inputs[i], mode), want[(i, mode)]):
                    bad.append(f"thread {i} round {r} mode {mode}: own input")
                if not _same(backend, _operators(net, shared, mode), want_shared[mode]):
                    bad.append(f"thread {i} round {r} mode {mode}: shared input")
        return bad

    with ThreadPoolExecutor(THREADS) as pool:
        failures = [msg for msgs in pool.map(work, range(THREADS)) for msg in msgs]
    assert not failures, failures[:5]


def test_concurrent_construction_and_evaluation(backend):
    """Building networks (factories, layers, Potentials) while others are evaluated interferes with nothing."""
    kw = {"xp": backend.module, "device": backend.device}
    x = backend.asarray(np.random.default_rng(1).standard_normal((16, 4)))
    want = [backend.to_numpy(xd.laplacian(xd.potential(4, 8, 2, seed=s, **kw), x)) for s in range(THREADS)]
    barrier = threading.Barrier(THREADS)

    def work(seed: int) -> bool:
        barrier.wait()
        ok = True
        for _ in range(ROUNDS):
            net = xd.potential(4, 8, 2, seed=seed, **kw)  # same seed, same weights, same result
            ok &= np.array_equal(backend.to_numpy(xd.laplacian(net, x)), want[seed])
        return ok

    with ThreadPoolExecutor(THREADS) as pool:
        assert all(pool.map(work, range(THREADS)))


def test_one_network_shared_by_threads_with_different_input_dtypes(backend):
    """Per-call dtype resolution: a float32 caller and a float64 caller of one float32 network do not
    see each other's working dtype."""
    kw = {"xp": backend.module, "device": backend.device}
    net = xd.resnet(3, 8, 2, seed=5, dtype="float32", **kw)
    xs = np.random.default_rng(2).standard_normal((32, 3))
    x32, x64 = backend.asarray(xs, "float32"), backend.asarray(xs, "float64")
    want32, want64 = _operators(net, x32, "auto"), _operators(net, x64, "auto")
    barrier = threading.Barrier(THREADS)

    def work(i: int) -> bool:
        barrier.wait()
        x, want = (x32, want32) if i % 2 else (x64, want64)
        return all(_same(backend, _operators(net, x, "auto"), want) for _ in range(ROUNDS))

    with ThreadPoolExecutor(THREADS) as pool:
        assert all(pool.map(work, range(THREADS)))
