"""second_order: sum a_ij d_ij y + b . grad y + c y on every backend, against the Hessian of the same network.

The reference is the network's own Hessian, Jacobian and value (``mode="backward"``, checked against
finite differences and autodiff elsewhere), contracted with the coefficients in NumPy.
"""

from __future__ import annotations

import numpy as np
import pytest

import xderiv as xd

from .helpers import rel_err
from .networks_zoo import points

TOL = 1e-12
MODES = ["forward", "backward", "auto"]
N = 3


def _parts(backend, net, x):
    d = net.in_features
    h = backend.to_numpy(xd.hessian(net, x, mode="backward")).reshape(N, -1, d, d)
    j = backend.to_numpy(xd.jacobian(net, x, mode="backward")).reshape(N, -1, d)
    y = backend.to_numpy(xd.value(net, x)).reshape(N, -1)
    return y, j, h


def _net(backend):
    return xd.mlp([3, 7, 6, 2], activation="tanh", seed=1, xp=backend.module, device=backend.device)


def _coefficients(d):
    rng = np.random.default_rng(0)
    m = rng.standard_normal((d, d))
    return m + m.T, rng.standard_normal(d), 0.7  # A indefinite


def _reference(y, j, h, a, b, c):
    a = np.broadcast_to(a, (N,) + a.shape[-2:])
    b = np.broadcast_to(b, (N, b.shape[-1]))
    c = np.broadcast_to(np.asarray(c, dtype=float), (N,))
    return np.einsum("nij,nmij->nm", a, h) + np.einsum("nmd,nd->nm", j, b) + c[:, None] * y


def _np(backend, a):
    return backend.to_numpy(a).reshape(N, -1)


@pytest.mark.parametrize("mode", MODES)
def test_shared_and_per_point_coefficients(backend, mode):
    net = _net(backend)
    x = points(net, backend, n=N)
    y, j, h = _parts(backend, net, x)
    a, b, c = _coefficients(3)
    got = xd.second_order(net, x, backend.asarray(a), backend.asarray(b), c, mode=mode)
    assert rel_err(_np(backend, got), _reference(y, j, h, a, b, c)) < TOL
    rng = np.random.default_rng(1)
    ap = rng.standard_normal((N, 3, 3))
    ap = ap + np.swapaxes(ap, -1, -2)
    bp, cp = rng.standard_normal((N, 3)), rng.standard_normal(N)
    got = xd.second_order(net, x, backend.asarray(ap), backend.asarray(bp), backend.asarray(cp), mode=mode)
    assert rel_err(_np(backend, got), _reference(y, j, h, ap, bp, cp)) < TOL


def test_diagonal_low_rank_factor_and_callables(backend):
    net = _net(backend)
    x = points(net, backend, n=N)
    y, j, h = _parts(backend, net, x)
    zero_b = np.zeros(3)
    assert rel_err(_np(backend, xd.second_order(net, x, c=2.0)), 2.0 * y) < TOL  # no A, no b: c y
    assert rel_err(_np(backend, xd.second_order(net, x, b=backend.asarray(np.ones(3)))), j.sum(-1)) < TOL
    diag = np.array([2.0, -1.0, 0.5])  # anisotropic: A = diag(...), given as (d,)
    got = xd.second_order(net, x, backend.asarray(diag))
    assert rel_err(_np(backend, got), _reference(y, j, h, np.diag(diag), zero_b, 0.0)) < TOL
    s = np.random.default_rng(2).standard_normal((3, 2))
    low = s @ np.diag([1.0, -3.0]) @ s.T  # rank 2, indefinite
    want = _reference(y, j, h, low, zero_b, 0.0)
    assert rel_err(_np(backend, xd.second_order(net, x, backend.asarray(low))), want) < TOL
    got = xd.second_order(net, x, factor=backend.asarray(s), signs=[1.0, -3.0])
    assert rel_err(_np(backend, got), want) < TOL
    # A = sigma(x) sigma(x)^T given as its factor, b and c functions of x
    xn = backend.to_numpy(x)
    sig = np.stack([np.diag(1.0 + p**2) for p in xn])
    want = _reference(y, j, h, sig @ np.swapaxes(sig, -1, -2), xn, np.sum(xn, axis=-1))
    xp = backend.xp

    def sigma(p):
        return xp.eye(3, dtype=p.dtype, device=backend.device_of(p)) * (1.0 + p * p)[..., None, :]

    got = xd.second_order(net, x, b=lambda p: p, c=lambda p: xp.sum(p, axis=-1), factor=sigma)
    assert rel_err(_np(backend, got), want) < TOL


@pytest.mark.parametrize("name", ["composite", "potential", "graph"])
def test_composites_potentials_and_graphs(backend, name):
    kw = {"xp": backend.module, "device": backend.device}
    f, g = _net(backend), xd.mlp([3, 5, 1], activation="sin", seed=4, **kw)
    a, b, c = _coefficients(3)
    net = {
        "composite": lambda: 2.0 * f + f * g,
        "potential": lambda: xd.potential(3, 6, 2, rank=2, seed=5, **kw),
        "graph": lambda: xd.function(lambda z: f(z) * g(z)),
    }[name]()
    x = points(f, backend, n=N)
    d = 3
    h = backend.to_numpy(xd.hessian(net, x)).reshape(N, -1, d, d)
    j = backend.to_numpy(xd.jacobian(net, x)).reshape(N, -1, d)
    y = backend.to_numpy(xd.value(net, x)).reshape(N, -1)
    got = _np(backend, xd.second_order(net, x, backend.asarray(a), backend.asarray(b), c))
    assert rel_err(got, _reference(y, j, h, a, b, c)) < TOL
    ap = np.stack([a * (1.0 + i) for i in range(N)])
    got = _np(backend, xd.second_order(net, x, backend.asarray(ap), backend.asarray(b), c))
    assert rel_err(got, _reference(y, j, h, ap, b, c)) < TOL


def test_refuses_asymmetric_a_and_bad_shapes(backend):
    net = _net(backend)
    x = points(net, backend, n=N)
    a = np.array([[1.0, 2.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    if backend.name not in ("dask", "jax"):  # values that can be read without computing a graph
        with pytest.raises(ValueError, match=r"symmetric.*max \|A - A\^T\| = 2"):
            xd.second_order(net, x, backend.asarray(a))
    with pytest.raises(ValueError, match=r"b has shape \(2,\)"):
        xd.second_order(net, x, backend.asarray(np.eye(3)), backend.asarray(np.ones(2)))
    with pytest.raises(ValueError, match=r"A has shape \(3, 2\)"):
        xd.second_order(net, x, backend.asarray(np.ones((3, 2))))
    with pytest.raises(TypeError, match="not both"):
        xd.second_order(net, x, backend.asarray(np.eye(3)), factor=backend.asarray(np.eye(3)))
