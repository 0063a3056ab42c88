"""xd.explain: the plan of every operator (mode, cost, chunking), what it would refuse, and one flop count."""

from __future__ import annotations

import numpy as np
import pytest

import xderiv as xd

from .networks_zoo import points

D = 4


def _net(backend, widths=(D, 16, 16, 1)):
    return xd.mlp(list(widths), activation="tanh", seed=0, xp=backend.module, device=backend.device)


def _calls(backend):
    v = backend.asarray(np.ones(D))
    s = backend.asarray(np.ones((D, 2)))
    return {
        "value": (xd.value, ()),
        "jacobian": (xd.jacobian, ()),
        "gradient": (xd.gradient, ()),
        "hessian": (xd.hessian, ()),
        "laplacian": (xd.laplacian, ()),
        "derivatives": (xd.derivatives, ()),
        "trace_hessian": (xd.trace_hessian, (s,)),
        "second_order": (xd.second_order, (backend.asarray(np.eye(D)),)),
        "hessian_diagonal": (xd.hessian_diagonal, ()),
        "hvp": (xd.hvp, (v,)),
        "directional": (xd.directional, (v,)),
        "taylor": (xd.taylor, (v, 3)),
        "partial": (xd.partial, ([1, 1, 0, 0],)),
        "biharmonic": (xd.biharmonic, ()),
    }


def test_every_operator_names_its_mode_cost_and_chunks(backend):
    net = _net(backend)
    x = points(net, backend, n=10)
    for name, (op, args) in _calls(backend).items():
        e = xd.explain(op, net, x, *args)
        assert e.operator == name and e.points == 10 and e.d == D and not e.refusals, name
        (part,) = e.parts
        assert part.kind == "chain" and part.mode in ("forward", "backward") and part.recursion, name
        assert part.memory_per_point > 0 and part.chunk_size == 10 and part.chunks == 1, name
        if part.multiply_adds is not None:  # two modes: "auto" took the cheaper
            assert part.multiply_adds[part.mode] == min(part.multiply_adds.values()), name
        text = str(e)
        assert name in text and f"mode {part.mode}" in text and "per point" in text
        assert e.as_dict()["parts"][0]["mode"] == part.mode


def test_chunks_follow_the_budget_and_refusals_are_reported(backend):
    net = _net(backend)
    x = points(net, backend, n=50)
    per_point = xd.explain(xd.hessian, net, x, mode="forward").parts[0].memory_per_point
    old = xd.get_memory_budget()
    try:
        xd.set_memory_budget(int(per_point * 7))
        part = xd.explain(xd.hessian, net, x, mode="forward").parts[0]
        assert (part.chunk_size, part.chunks) == (7, 8)
        xd.set_memory_budget(int(per_point / 2))
        assert "MemoryError" in xd.explain(xd.hessian, net, x, mode="forward").refusals[0]
    finally:
        xd.set_memory_budget(old)
    graph = xd.function(lambda z: net(z) * net(z))
    e = xd.explain(xd.laplacian, graph, x, mode="backward")
    assert e.parts[0].kind == "graph" and "backward" in e.refusals[0]
    assert "samples" in xd.explain(xd.laplacian, net, x, estimator="hutchinson").refusals[0]
    composite = 2.0 * net + net * _net(backend, (D, 8, 1))
    assert len(xd.explain(xd.laplacian, composite, x).parts) == 2  # net once, however often it appears


def test_multiply_adds_match_the_counted_matrix_products(backend):
    """Forward modes: the model counts the matrix products (as torch's flop counter sees them, less the value
    sweep) plus elementwise passes weighted by ELEMENTWISE; at width 128 those add 2-7%."""
    if backend.name != "torch" or not backend.on_cpu:
        pytest.skip("torch's flop counter, on the CPU session")
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    widths = (20, 128, 128, 128, 1)
    net = _net(backend, widths)
    n = 16
    x = points(net, backend, n=n)
    value_sweep = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    for op in (xd.jacobian, xd.laplacian, xd.hessian):
        model = xd.explain(op, net, x, mode="forward").multiply_adds
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            op(net, x, mode="forward")
        counted = counter.get_total_flops() / 2 / n - value_sweep
        assert 1.0 <= model / counted <= 1.1, (op.__name__, model, counted)
