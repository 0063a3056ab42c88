"""How many array operations (kernel launches on a GPU) each layer costs, per quantity and mode.

Counted on torch with a dispatch mode that sees every ATen call, as the difference
between networks one hidden layer apart, so the fixed cost of a call (input checks,
the first and last layers, the Potential's terms) cancels.  The table is the
budget: a change that adds operations to a layer fails here and must update it
on purpose; one that removes some should lower it.
"""

from __future__ import annotations

import collections
import os

import numpy as np
import pytest

import xderiv as xd
from xderiv.engine.cost import Costs

# (layer kind, quantity, mode) -> array operations per hidden layer (tanh, width 16, n = 10, float64),
# reshapes and transposes (views, no kernel) not counted.  Of the forward Laplacian's 20 per Dense
# layer, 12 evaluate tanh, sech^2 and the second derivative (stably, from exp(-2|z|), with |z| as
# where(z >= 0, z, -z) on torch so that autodiff through it is exact at z = 0); the rest is
# two GEMMs (J_z = J_u W and the Laplacian row), sigma' * J_z, the column sums of J_z^2, and one
# fused multiply-add.  On torch, addmm (z = uW + b, and a residual layer's adjoint accumulated with
# its product), add(alpha=h) (residual steps) and addcmul (y + a * b) replace two operations each;
# CuPy has elementwise and reduction kernels of its own (9 launches where this table's torch row
# has 20); other namespaces evaluate the plain expressions.  "over_reverse" is the forward
# Hessian's other form (d Hessian-vector products), counted whatever the widths would pick.
BUDGET = {
    ("dense", "value", "auto"): 2,  # addmm, tanh
    ("dense", "jacobian", "forward"): 13,
    ("dense", "jacobian", "backward"): 14,
    ("dense", "laplacian", "forward"): 20,
    ("dense", "laplacian", "backward"): 26,
    ("dense", "hessian", "forward"): 25,
    ("dense", "hessian", "backward"): 26,
    ("dense", "hessian", "over_reverse"): 22,
    ("residual", "value", "auto"): 3,  # addmm, tanh, add(alpha=h)
    ("residual", "jacobian", "forward"): 15,
    ("residual", "jacobian", "backward"): 16,
    ("residual", "laplacian", "forward"): 23,
    ("residual", "laplacian", "backward"): 32,
    ("residual", "hessian", "forward"): 28,
    ("residual", "hessian", "backward"): 32,
    ("residual", "hessian", "over_reverse"): 26,
}

CALLS = {
    "value": lambda net, x, mode: xd.value(net, x),
    "jacobian": lambda net, x, mode: xd.jacobian(net, x, mode=mode),
    "laplacian": lambda net, x, mode: xd.laplacian(net, x, mode=mode),
    "hessian": lambda net, x, mode: xd.hessian(net, x, mode=mode),
}


def _count(fn) -> int:
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ops: collections.Counter[str] = collections.Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops[func.overloadpacket.__name__] += 1
            return func(*args, **(kwargs or {}))

    with Count() as counter:
        fn()
    return sum(n for name, n in counter.ops.items() if name not in ("view", "_unsafe_view", "t", "unsqueeze"))


def _net(backend, kind: str, hidden: int):
    kw = {"xp": backend.module, "device": backend.device, "seed": 0}
    if kind == "dense":
        return xd.mlp([3] + [16] * hidden + [1], "tanh", **kw)
    return xd.resnet(3, 16, hidden, activation="tanh", step=0.5, **kw)


@pytest.mark.parametrize(("kind", "quantity", "mode"), sorted(BUDGET))
def test_operations_per_layer(backend, kind, quantity, mode, monkeypatch):
    if backend.name != "torch":
        pytest.skip("counted with torch's dispatch mode: the torch session runs it")
    if os.environ.get("XDERIV_TORCH_DEFAULT_DEVICE"):
        pytest.skip("counted by the main torch pass")
    form = mode
    if mode == "over_reverse":  # forward mode, its forward-over-reverse form whatever the widths
        monkeypatch.setattr(Costs, "hessian_over_reverse", lambda self, stacked=1.0: True)
        mode = "forward"
    x = backend.asarray(0.5 + np.arange(30.0).reshape(10, 3) / 60.0)
    nets = [_net(backend, kind, hidden) for hidden in (2, 3)]
    counts = [_count(lambda net=net: CALLS[quantity](net, x, mode)) for net in nets]
    per_layer = counts[1] - counts[0]
    budget = BUDGET[(kind, quantity, form)]
    assert per_layer == budget, f"{kind} {quantity} ({form}): {per_layer} array operations per layer, budget {budget}"
