"""Every network of the zoo, every mode: Jacobian, Hessian, Laplacian against finite differences."""

from __future__ import annotations

import numpy as np
import pytest

import xderiv as xd

from .helpers import fd_hessian, fd_jacobian, rel_err
from .networks_zoo import NAMES, points, zoo

MODES = ["forward", "backward", "auto"]

# Central differences with eps = 1e-5 in float64: truncation ~ eps^2 |f'''| ~ 1e-10,
# round-off ~ 1e-16 / eps ~ 1e-11, so 1e-7 relative leaves two orders of margin
# while any wrong term (O(1) relative) fails.
FD_TOL = 1e-7


@pytest.fixture(params=NAMES)
def net_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.mark.parametrize("mode", MODES)
def test_against_finite_differences(backend, net_name, mode):
    net = zoo(backend)[net_name]()
    x = points(net, backend)
    r = xd.derivatives(net, x, hessian=True, mode=mode)
    fd_j = fd_jacobian(net, x, backend)
    fd_h = fd_hessian(net, x, backend)
    jac = backend.to_numpy(r.jacobian).reshape(fd_j.shape)
    hess = backend.to_numpy(r.hessian).reshape(fd_h.shape)
    assert rel_err(jac, fd_j) < FD_TOL
    assert rel_err(hess, fd_h) < FD_TOL
    assert np.allclose(hess, np.swapaxes(hess, -1, -2), rtol=0, atol=1e-13 * max(1.0, np.abs(hess).max()))
    lap = backend.to_numpy(xd.laplacian(net, x, mode=mode)).reshape(fd_h.shape[:2])
    assert rel_err(lap, np.trace(fd_h, axis1=-2, axis2=-1)) < FD_TOL


def test_modes_agree_to_roundoff(backend, net_name):
    net = zoo(backend)[net_name]()
    x = points(net, backend, n=4)
    results = {m: xd.derivatives(net, x, hessian=True, mode=m) for m in ("forward", "backward")}
    laps = {m: backend.to_numpy(xd.laplacian(net, x, mode=m)) for m in ("forward", "backward")}
    jacs = {m: backend.to_numpy(xd.jacobian(net, x, mode=m)) for m in ("forward", "backward")}
    f, b = results["forward"], results["backward"]
    assert rel_err(backend.to_numpy(f.hessian), backend.to_numpy(b.hessian)) < 1e-13
    assert rel_err(backend.to_numpy(f.jacobian), backend.to_numpy(b.jacobian)) < 1e-13
    assert rel_err(jacs["forward"], jacs["backward"]) < 1e-13
    assert rel_err(laps["forward"], laps["backward"]) < 1e-12
    hess_trace = np.trace(backend.to_numpy(f.hessian), axis1=-2, axis2=-1)
    assert rel_err(laps["forward"], hess_trace) < 1e-12


def test_taylor_remainder_falls_as_eps_cubed(backend, net_name):
    """|f(x+ev) - f(x) - e J v - e^2/2 v^T H v| = O(e^3): ratio 8 per halving."""
    net = zoo(backend)[net_name]()
    x = points(net, backend, n=1)
    xn = backend.to_numpy(x)
    v = np.random.default_rng(11).standard_normal(xn.shape)
    r = xd.derivatives(net, x, hessian=True)
    f0 = backend.to_numpy(r.value).reshape(-1)
    jv = backend.to_numpy(r.jacobian).reshape(f0.size, -1) @ v[0]
    hvv = np.einsum("mij,i,j->m", backend.to_numpy(r.hessian).reshape(f0.size, v.size, v.size), v[0], v[0])
    remainders = []
    for k in range(7):
        e = 0.05 / 2**k
        fe = backend.to_numpy(net(backend.asarray(xn + e * v))).reshape(-1)
        remainders.append(np.max(np.abs(fe - f0 - e * jv - 0.5 * e * e * hvv)))
    remainders = np.array(remainders)
    if remainders[0] < 1e-12:  # quadratic in x (linear net, quadratic activation chains): exact to round-off
        assert remainders.max() < 1e-12
        return
    ratios = remainders[:-1] / remainders[1:]
    # Third-order remainder: each halving divides it by 2^3 = 8 (higher-order terms blur the
    # first ratios, so the last three are checked).  A wrong J or H leaves ratio 2 or 4.
    assert np.all(ratios[-3:] > 6.5) and np.all(ratios[-3:] < 9.5), ratios


@pytest.mark.parametrize("name", ["seed-pinn", "resnet", "residual-first", "potential-general"])
def test_float32_matches_float64(backend, name):
    """float32 stays float32; its error relative to float64 is ~ depth * width * eps32 (< 1e-4 here)."""
    net64, net32 = zoo(backend, "float64")[name](), zoo(backend, "float32")[name]()
    x64 = points(net64, backend)
    x32 = points(net32, backend, dtype="float32")
    r64 = xd.derivatives(net64, x64, hessian=True)
    r32 = xd.derivatives(net32, x32, hessian=True)
    for field in ("value", "jacobian", "hessian"):
        a32 = getattr(r32, field)
        assert a32.dtype == backend.dtype("float32")
        assert rel_err(backend.to_numpy(a32), backend.to_numpy(getattr(r64, field))) < 1e-4
    lap32 = xd.laplacian(net32, x32)
    assert lap32.dtype == backend.dtype("float32")
    assert rel_err(backend.to_numpy(lap32), np.trace(backend.to_numpy(r64.hessian), axis1=-2, axis2=-1)) < 1e-4


@pytest.mark.parametrize("batch", [(), (5,), (2, 3), (0,)])
def test_batch_shapes(backend, batch):
    net = xd.resnet(3, 4, 1, out_features=2, seed=0, xp=backend.module, device=backend.device)
    pot = xd.potential(3, 4, 1, seed=0, xp=backend.module, device=backend.device)
    rng = np.random.default_rng(0)
    xn = rng.standard_normal(batch + (3,))
    x = backend.asarray(xn)
    r = xd.derivatives(net, x, hessian=True)
    assert tuple(r.value.shape) == batch + (2,)
    assert tuple(r.jacobian.shape) == batch + (2, 3)
    assert tuple(r.hessian.shape) == batch + (2, 3, 3)
    assert tuple(xd.laplacian(net, x).shape) == batch + (2,)
    rp = xd.derivatives(pot, x, hessian=True, laplacian=True)
    assert tuple(rp.value.shape) == batch
    assert tuple(xd.gradient(pot, x).shape) == batch + (3,)
    assert tuple(rp.hessian.shape) == batch + (3, 3)
    assert tuple(rp.laplacian.shape) == batch
    # Batched results equal the per-point results.
    flat = xd.hessian(net, backend.asarray(xn.reshape(-1, 3)))
    assert np.allclose(backend.to_numpy(r.hessian).reshape(-1, 2, 3, 3), backend.to_numpy(flat), rtol=1e-14, atol=0)


def test_results_stay_on_input_device(backend):
    net = xd.resnet(3, 4, 1, seed=0, xp=backend.module, device=backend.device)
    x = points(net, backend)
    r = xd.derivatives(net, x, hessian=True)
    for a in (
        r.value,
        r.jacobian,
        r.hessian,
        xd.laplacian(net, x, mode="backward"),
        xd.laplacian(net, x, mode="forward"),
    ):
        assert backend.device_of(a) == backend.device_of(x)
