"""The seed notebook: its hand-written recursions reproduced, its unfinished ones completed."""

from __future__ import annotations

import numpy as np

import xderiv as xd
from xderiv.__main__ import main
from xderiv.models import notebook as seed

from .helpers import fd_hessian, fd_jacobian, rel_err


def _np_layers(net, backend):
    return [(backend.to_numpy(layer.weight), backend.to_numpy(layer.bias)) for layer in net.layers]


def _sig(z):
    return 1.0 / (1.0 + np.exp(-z))


def _notebook_fnn_gradient_hessian(layers, x):
    """The notebook's getHessian: backward (delta, theta) with column vectors, as written there."""
    acts = [x[None, :]]
    for w, b in layers:
        acts.append(_sig(acts[-1] @ w + b))

    def d1(z):
        return _sig(z) * (1 - _sig(z))

    def d2(z):
        return _sig(z) * (1 - _sig(z)) * (1 - 2 * _sig(z))

    w, b = layers[-1]
    z = (acts[-2] @ w + b).T
    delta = w @ (np.diag(d1(z).flatten("F")) @ np.identity(1))
    theta = w @ np.diag(d2(z).flatten("F")) @ w.T
    for k in range(len(layers) - 2, -1, -1):
        w, b = layers[k]
        z = (acts[k] @ w + b).T
        h1 = w @ np.diag((delta * d2(z)).flatten("F")) @ w.T
        ds = np.diag(d1(z).flatten("F"))
        h2 = w @ (ds @ theta @ ds) @ w.T
        delta, theta = w @ (ds @ delta), h1 + h2
    return delta[:, 0], theta


def test_seed_pinn_matches_the_notebooks_recursion(backend):
    net = seed.pinn(xp=backend.module, device=backend.device)
    x = backend.asarray(np.array(seed.SEED_POINT))
    g_ref, h_ref = _notebook_fnn_gradient_hessian(_np_layers(net, backend), np.array(seed.SEED_POINT))
    for mode in ("forward", "backward"):
        assert rel_err(backend.to_numpy(xd.gradient(net, x, mode=mode)), g_ref) < 1e-13
        assert rel_err(backend.to_numpy(xd.hessian(net, x, mode=mode))[0], h_ref) < 1e-13


def test_seed_resnet_gradient_matches_the_notebook(backend):
    """The notebook's getGradient_ResNet (head w, residual steps, opening layer), redone in NumPy."""
    net = seed.resnet(xp=backend.module, device=backend.device)
    (w0, b0), (w1, b1), (wo, _) = _np_layers(net, backend)
    s = np.array(seed.SEED_POINT)[None, :]
    u1 = _sig(s @ w0 + b0)
    z1 = (u1 @ w1 + b1).T
    delta = wo + 1.0 * (w1 @ (np.diag((_sig(z1) * (1 - _sig(z1))).flatten("F")) @ wo))
    z0 = (s @ w0 + b0).T
    grad = w0 @ (np.diag((_sig(z0) * (1 - _sig(z0))).flatten("F")) @ delta)
    x = backend.asarray(s[0])
    assert rel_err(backend.to_numpy(xd.gradient(net, x)), grad[:, 0]) < 1e-13


def test_seed_resnet_hessian_and_potential(backend):
    """The Hessians the notebook never finished: checked against finite differences."""
    x = backend.asarray(np.array([seed.SEED_POINT, (-0.3, 0.8)]))
    for net in (
        seed.resnet(xp=backend.module, device=backend.device),
        seed.potential(xp=backend.module, device=backend.device),
    ):
        r = xd.derivatives(net, x, hessian=True, laplacian=True)
        assert rel_err(backend.to_numpy(r.jacobian).reshape(2, 1, 2), fd_jacobian(net, x, backend)) < 1e-8
        h = backend.to_numpy(r.hessian).reshape(2, 1, 2, 2)
        assert rel_err(h, fd_hessian(net, x, backend)) < 1e-8
        assert rel_err(backend.to_numpy(r.laplacian).reshape(-1), np.trace(h, axis1=-2, axis2=-1)[:, 0]) < 1e-14


def test_potential_quadratic_term_is_symmetrised(backend):
    """With a zero trunk read-out, Phi = 1/2 s^T A s + c^T s: Hessian (A + A^T)/2, Laplacian tr A."""
    rng = np.random.default_rng(0)
    a, c = rng.standard_normal((3, 3)), rng.standard_normal(3)
    trunk = xd.Sequential(xd.Dense(backend.asarray(rng.standard_normal((3, 2))), activation="tanh"))
    phi = xd.Potential(trunk, backend.asarray(np.zeros(2)), backend.asarray(a), backend.asarray(c), 1.5)
    s = rng.standard_normal((4, 3))
    r = xd.derivatives(phi, backend.asarray(s), hessian=True)
    assert np.allclose(backend.to_numpy(r.value), 0.5 * np.einsum("ni,ij,nj->n", s, a, s) + s @ c + 1.5, rtol=1e-14)
    assert np.allclose(backend.to_numpy(r.jacobian), s @ (0.5 * (a + a.T)) + c, rtol=1e-14)
    assert np.allclose(backend.to_numpy(r.hessian), 0.5 * (a + a.T), rtol=1e-14, atol=0)
    for mode in ("forward", "backward"):
        assert np.allclose(backend.to_numpy(xd.laplacian(phi, backend.asarray(s), mode=mode)), np.trace(a), rtol=1e-14)


def test_demo_runs_and_agrees_with_finite_differences(backend, capsys):
    # The demo (python -m xderiv) has no device option: it builds its arrays on the library's
    # default device, which is made the session's device where the library has a settable one
    # (torch); array-api-strict's demo runs on its CPU_DEVICE.
    with backend.default_device():
        assert main(["--backend", backend.name, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "largest disagreement with central finite differences" in out and "(OK)" in out
