"""Per-call cost on tiny batches (n = 1 and 10), where Python overhead, not arithmetic, decides.

Each xderiv call is timed beside the same network's forward pass written out by hand
in the same library (``u = tanh(u @ W + b)`` per layer): the ratio says how many
hand-written forward passes one call costs.  resnet d = 16, width 16, depth 4, float64.

Run: ``pytest benchmarks/test_overhead.py`` (``nox -s bench`` runs it with the others).
"""

from __future__ import annotations

import numpy as np
import pytest

import xderiv as xd

CALLS = {
    "forward pass by hand": None,
    "value": lambda net, x: xd.value(net, x),
    "gradient": lambda net, x: xd.gradient(net, x),
    "laplacian": lambda net, x: xd.laplacian(net, x),
    "hessian": lambda net, x: xd.hessian(net, x),
}


def _setup(lib: str, n: int):
    if lib == "torch":
        torch = pytest.importorskip("torch")
        xp = torch
    else:
        xp = np
    net = xd.resnet(16, 16, 4, step=0.5, activation="tanh", xp=xp, seed=0)
    x = np.random.default_rng(0).standard_normal((n, 16))
    x = xp.asarray(x) if lib == "numpy" else xp.tensor(x, dtype=xp.float64)
    params = [(layer.weight, layer.bias, layer.skip, layer.step, layer.activation.linear) for layer in net.layers]

    def by_hand():
        u = x
        for w, b, skip, h, linear in params:
            z = u @ w + b
            a = z if linear else xp.tanh(z)
            u = u + h * a if skip else a
        return u

    return net, x, by_hand


@pytest.mark.parametrize("call", list(CALLS))
@pytest.mark.parametrize("n", [1, 10])
@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_tiny_call(lib, n, call, benchmark):
    net, x, by_hand = _setup(lib, n)
    fn = by_hand if CALLS[call] is None else (lambda: CALLS[call](net, x))
    benchmark.extra_info.update({"lib": lib, "n": n, "call": call})
    benchmark.pedantic(fn, rounds=200, iterations=5, warmup_rounds=20)
