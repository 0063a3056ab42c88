"""PDE operators: traces along directions, partial Laplacians, diagonals, HVPs, divergence, chunking."""

from __future__ import annotations

import numpy as np
import pytest

import xderiv as xd

from .helpers import rel_err
from .networks_zoo import NAMES, points, zoo

MODES = ["forward", "backward", "auto"]
TOL = 1e-12  # against the FD-verified Hessian of the same network: round-off only


@pytest.fixture(params=NAMES)
def case(request, backend):
    net = zoo(backend)[request.param]()
    x = points(net, backend, n=3)
    h = backend.to_numpy(xd.hessian(net, x, mode="backward")).reshape(3, -1, net.in_features, net.in_features)
    j = backend.to_numpy(xd.jacobian(net, x, mode="backward")).reshape(3, -1, net.in_features)
    return net, x, h, j


def _np(backend, a, shape):
    return backend.to_numpy(a).reshape(shape)


@pytest.mark.parametrize("mode", MODES)
def test_trace_hessian_shared_and_per_point_directions(backend, case, mode):
    net, x, h, _ = case
    d, m = net.in_features, h.shape[1]
    rng = np.random.default_rng(0)
    s = rng.standard_normal((d, 2))
    got = _np(backend, xd.trace_hessian(net, x, backend.asarray(s), mode=mode), (3, m))
    assert rel_err(got, np.einsum("nmij,ik,jk->nm", h, s, s)) < TOL
    sp = rng.standard_normal((3, d, 3))
    got = _np(backend, xd.trace_hessian(net, x, backend.asarray(sp), mode=mode), (3, m))
    assert rel_err(got, np.einsum("nmij,nik,njk->nm", h, sp, sp)) < TOL


@pytest.mark.parametrize("mode", MODES)
def test_partial_laplacian_over_coordinates(backend, case, mode):
    net, x, h, j = case
    d, m = net.in_features, h.shape[1]
    coords = list(range(1, d)) if d > 1 else [0]
    diag = np.diagonal(h, axis1=-2, axis2=-1)
    got = _np(backend, xd.laplacian(net, x, mode=mode, coords=coords), (3, m))
    assert rel_err(got, diag[..., coords].sum(-1)) < TOL
    # One sweep: value, full Jacobian (du/dt = column 0) and the spatial Laplacian.
    r = xd.derivatives(net, x, laplacian=True, coords=coords, mode=mode)
    assert rel_err(_np(backend, r.laplacian, (3, m)), diag[..., coords].sum(-1)) < TOL
    assert rel_err(_np(backend, r.jacobian, (3, m, d)), j) < TOL
    r2 = xd.derivatives(net, x, hessian=True, laplacian=True, coords=coords, mode=mode)
    assert rel_err(_np(backend, r2.laplacian, (3, m)), diag[..., coords].sum(-1)) < TOL


@pytest.mark.parametrize("mode", MODES)
def test_hessian_diagonal(backend, case, mode):
    net, x, h, _ = case
    got = _np(backend, xd.hessian_diagonal(net, x, mode=mode), h.shape[:3])
    assert rel_err(got, np.diagonal(h, axis1=-2, axis2=-1)) < TOL


def test_hvp_and_directional_derivatives(backend, case):
    net, x, h, j = case
    d, m = net.in_features, h.shape[1]
    rng = np.random.default_rng(1)
    v = rng.standard_normal(d)
    got = _np(backend, xd.hvp(net, x, backend.asarray(v)), (3, m, d))
    assert rel_err(got, np.einsum("nmij,j->nmi", h, v)) < TOL
    vp = rng.standard_normal((3, d))
    got = _np(backend, xd.hvp(net, x, backend.asarray(vp)), (3, m, d))
    assert rel_err(got, np.einsum("nmij,nj->nmi", h, vp)) < TOL
    dv, dvv = xd.directional(net, x, backend.asarray(vp))
    assert rel_err(_np(backend, dv, (3, m)), np.einsum("nmi,ni->nm", j, vp)) < TOL
    assert rel_err(_np(backend, dvv, (3, m)), np.einsum("nmij,ni,nj->nm", h, vp, vp)) < TOL


@pytest.mark.parametrize("mode", ["forward", "backward"])
def test_divergence(backend, mode):
    net = xd.resnet(3, 5, 2, out_features=3, activation="tanh", seed=3, xp=backend.module, device=backend.device)
    x = points(net, backend, n=4)
    j = backend.to_numpy(xd.jacobian(net, x))
    assert rel_err(backend.to_numpy(xd.divergence(net, x, mode=mode)), np.trace(j, axis1=-2, axis2=-1)) < TOL
    with pytest.raises(ValueError, match="divergence needs as many outputs as inputs"):
        xd.divergence(xd.mlp([3, 4, 2], xp=backend.module, device=backend.device), x)


def test_operator_shapes_for_batches_and_potentials(backend):
    pot = xd.potential(3, 4, 1, seed=0, xp=backend.module, device=backend.device)
    net = xd.mlp([3, 4, 2], seed=0, xp=backend.module, device=backend.device)
    x = backend.asarray(np.random.default_rng(0).standard_normal((2, 5, 3)))
    v = backend.asarray(np.ones(3))
    assert tuple(xd.trace_hessian(pot, x, backend.asarray(np.ones((3, 2)))).shape) == (2, 5)
    assert tuple(xd.laplacian(net, x, coords=[0, 2]).shape) == (2, 5, 2)
    assert tuple(xd.hessian_diagonal(pot, x).shape) == (2, 5, 3)
    assert tuple(xd.hvp(net, x, v).shape) == (2, 5, 2, 3)
    assert [tuple(a.shape) for a in xd.directional(pot, x, v)] == [(2, 5), (2, 5)]


def test_operator_argument_errors(backend):
    net = xd.mlp([3, 4, 1], seed=0, xp=backend.module, device=backend.device)
    x = backend.asarray(np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"directions has shape \(2, 2\); expected \(3, 2\)"):
        xd.trace_hessian(net, x, backend.asarray(np.ones((2, 2))))
    with pytest.raises(TypeError, match="exactly one of directions= or coords="):
        xd.trace_hessian(net, x)
    with pytest.raises(ValueError, match=r"coords must be distinct indices in \[0, 3\)"):
        xd.laplacian(net, x, coords=[0, 3])
    with pytest.raises(ValueError, match=r"coords must be distinct .* got \[-1, 2\]"):
        xd.laplacian(net, x, coords=[-1, 2])  # -1 is coordinate 2
    for bad in ([1.7], [True], "01", 1):  # never truncated or read as something else
        with pytest.raises(TypeError, match="coords must be a sequence of integer coordinate indices"):
            xd.laplacian(net, x, coords=bad)
    last = xd.laplacian(net, x, coords=[-1], mode="forward")
    assert rel_err(backend.to_numpy(last), backend.to_numpy(xd.laplacian(net, x, coords=[2], mode="forward"))) == 0
    with pytest.raises(ValueError, match=r"v has shape \(4, 2\)"):
        xd.hvp(net, x, backend.asarray(np.ones((4, 2))))


@pytest.mark.parametrize("mode", ["forward", "backward"])
def test_chunking_gives_identical_results(backend, mode):
    net = xd.resnet(4, 6, 2, out_features=2, seed=0, xp=backend.module, device=backend.device)
    x = points(net, backend, n=7)
    whole = xd.derivatives(net, x, hessian=True, mode=mode)
    parts = xd.derivatives(net, x, hessian=True, mode=mode, chunk_size=3)
    for f in ("value", "jacobian", "hessian"):  # BLAS may block differently per chunk size: round-off only
        assert rel_err(backend.to_numpy(getattr(parts, f)), backend.to_numpy(getattr(whole, f))) < 1e-14
    lap = backend.to_numpy(xd.laplacian(net, x, mode=mode))
    if backend.name == "dask":
        return  # lazy arrays: dask's chunks bound the memory, xderiv applies no budget
    old = xd.get_memory_budget()
    try:
        xd.set_memory_budget(4000)  # a few points per chunk
        assert rel_err(backend.to_numpy(xd.laplacian(net, x, mode=mode)), lap) < 1e-14
        xd.set_memory_budget(100)  # not even one point fits: refuse before allocating
        match = r"one point needs about [0-9.]+ KiB .* budget of 100 B.*set_memory_budget"
        with pytest.raises(MemoryError, match=match):
            xd.hessian(net, x, mode=mode)
    finally:
        xd.set_memory_budget(old)
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        xd.hessian(net, x, chunk_size=0)
