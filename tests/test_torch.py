"""torch session: agreement with torch.func to ~1e-12, and weight gradients through xderiv results."""

from __future__ import annotations

import numpy as np
import pytest

import xderiv as xd

from .helpers import rel_err
from .networks_zoo import NAMES, points, zoo
from .reference import network_function

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(autouse=True)
def _torch_only(backend):
    if backend.name != "torch":
        pytest.skip("torch.func comparisons run in the torch session")


def _params(net):
    return net.arrays()


def _reference(net):
    import torch

    return network_function(net, torch)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("mode", ["forward", "backward"])
def test_matches_torch_func(backend, name, mode):
    import torch
    from torch.func import hessian, jacrev, vmap

    net = zoo(backend)[name]()
    x = points(net, backend, n=4)
    f = _reference(net)
    params = _params(net)
    ref_val = vmap(f, in_dims=(None, 0))(params, x)
    ref_jac = vmap(jacrev(f, argnums=1), in_dims=(None, 0))(params, x)
    ref_hess = vmap(hessian(f, argnums=1), in_dims=(None, 0))(params, x)
    ref_hess2 = vmap(jacrev(jacrev(f, argnums=1), argnums=1), in_dims=(None, 0))(params, x)
    assert torch.allclose(ref_hess, ref_hess2, rtol=1e-13, atol=1e-15)
    r = xd.derivatives(net, x, hessian=True, mode=mode)
    lap = xd.laplacian(net, x, mode=mode)
    # float64: both are exact up to round-off, so 1e-12 relative to the largest entry.
    np_ = backend.to_numpy
    assert rel_err(np_(r.value), np_(ref_val)) < 1e-12
    assert rel_err(np_(r.jacobian), np_(ref_jac)) < 1e-12
    assert rel_err(np_(r.hessian), np_(ref_hess)) < 1e-12
    ref_lap = torch.diagonal(ref_hess, dim1=-2, dim2=-1).sum(-1)
    assert rel_err(np_(lap), np_(ref_lap)) < 1e-12


@pytest.mark.parametrize("name", ["seed-pinn", "resnet", "residual-first", "potential-general", "mlp-silu"])
@pytest.mark.parametrize("mode", ["forward", "backward"])
def test_weight_gradients_of_a_laplacian_loss(backend, name, mode):
    """PINN training: d/dweights of mean((lap u)^2) + mean(|grad u|^2) equals torch.func's."""
    import torch
    from torch.func import grad, hessian, jacrev, vmap

    net = zoo(backend)[name]()
    params = _params(net)
    for p in params:
        p.requires_grad_(True)
    x = points(net, backend, n=5)

    lap = xd.laplacian(net, x, mode=mode)
    jac = xd.jacobian(net, x, mode=mode)
    loss = (lap**2).mean() + (jac**2).sum(-1).mean()
    # The read-out bias does not enter derivatives: unused in the graph, zero gradient.
    got = [
        torch.zeros_like(p) if g is None else g
        for p, g in zip(params, torch.autograd.grad(loss, params, allow_unused=True))
    ]

    f = _reference(net)

    def ref_loss(ps):
        h = vmap(hessian(f, argnums=1), in_dims=(None, 0))(ps, x)
        j = vmap(jacrev(f, argnums=1), in_dims=(None, 0))(ps, x)
        return (torch.diagonal(h, dim1=-2, dim2=-1).sum(-1) ** 2).mean() + (j**2).sum(-1).mean()

    want = grad(ref_loss)([p.detach() for p in params])
    assert abs(loss.item() - ref_loss([p.detach() for p in params]).item()) <= 1e-12 * abs(loss.item())
    for g, w in zip(got, want):
        assert rel_err(backend.to_numpy(g), backend.to_numpy(w)) < 1e-10


def test_hessian_loss_trains_weights(backend):
    """A few Adam steps on a Hessian-based loss reduce it: the graph is connected end to end."""
    import torch

    net = xd.resnet(2, 8, 2, seed=0, xp=backend.module, device=backend.device)
    params = [a for layer in net.layers for a in layer.arrays()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=1e-2)
    x = backend.asarray(np.random.default_rng(0).standard_normal((32, 2)))
    target = backend.asarray(np.eye(2))
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = ((xd.hessian(net, x)[:, 0] - target) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
