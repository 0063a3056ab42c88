"""The cost model's choice between the forward Hessian's two forms (engine/cost.py)."""

from __future__ import annotations

import pytest

import xderiv as xd
from xderiv.backends.primitives import XLA
from xderiv.engine.cost import Costs

from ..helpers import rel_err
from ..networks_zoo import NAMES, points, zoo


@pytest.mark.parametrize("net_name", NAMES)
@pytest.mark.parametrize("over_reverse", [False, True], ids=["sum_of_layers", "over_reverse"])
def test_forward_hessian_forms_agree(backend, net_name, over_reverse, monkeypatch):
    """Both forms of the forward Hessian, whichever the cost model would pick, equal the backward one."""
    monkeypatch.setattr(Costs, "hessian_over_reverse", lambda self, stacked=1.0: over_reverse)
    net = zoo(backend)[net_name]()
    x = points(net, backend, n=4)
    f = xd.derivatives(net, x, hessian=True, mode="forward")
    b = xd.derivatives(net, x, hessian=True, mode="backward")
    assert rel_err(backend.to_numpy(f.hessian), backend.to_numpy(b.hessian)) < 1e-13
    assert rel_err(backend.to_numpy(f.jacobian), backend.to_numpy(b.jacobian)) < 1e-13


def test_forward_hessian_form_follows_the_multiply_adds():
    """Forward-over-reverse where it needs fewer multiply-adds (d > w), the sum of layers where d < w;
    a namespace whose stacked per-point products are slow (XLA) takes forward-over-reverse at d = w."""

    def costs(d: int, w: int) -> Costs:
        return xd.mlp([d, w, w, 1], seed=0).plan.costs

    assert costs(128, 16).hessian_over_reverse() and costs(64, 16).hessian_over_reverse()
    assert not costs(3, 64).hessian_over_reverse() and not costs(16, 16).hessian_over_reverse()
    assert costs(16, 16).hessian_over_reverse(XLA.stacked_products)
    assert not costs(3, 64).hessian_over_reverse(1.5)
