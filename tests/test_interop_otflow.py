"""xderiv.interop.otflow against numbers saved from OT-Flow's own ``Phi`` (src/Phi.py) and torch autodiff.

``tests/data/otflow_phi.npz`` holds a ``Phi(nTh=3, m=8, d=3, r=2)`` state dict
(``state.*``, with the zero-initialised ``w``, ``c`` and biases perturbed),
six space-time points ``x`` (shape (6, 4)), and what OT-Flow computed there:
``value`` (``Phi.forward``), ``gradient`` and ``trHess_space`` (``Phi.trHess``:
the Hessian's trace over the 3 spatial coordinates only).
"""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pytest

import xderiv as xd
from xderiv.interop import otflow

from .helpers import rel_err

DATA = os.path.join(os.path.dirname(__file__), "data", "otflow_phi.npz")


@pytest.fixture(scope="module")
def saved():
    with np.load(DATA) as f:
        return {k: f[k] for k in f.files}


def _state(saved):
    return {k[len("state.") :]: v for k, v in saved.items() if k.startswith("state.")}


def test_from_state_dict_matches_otflow(saved, backend):
    phi = otflow.from_state_dict(_state(saved), xp=backend.module, device=backend.device)
    x = backend.asarray(saved["x"])
    d = x.shape[-1] - 1
    r = xd.derivatives(phi, x, hessian=True)
    assert rel_err(backend.to_numpy(r.value), saved["value"]) < 1e-12
    assert rel_err(backend.to_numpy(r.jacobian), saved["gradient"]) < 1e-12
    H = backend.to_numpy(r.hessian)
    spatial = np.trace(H[:, :d, :d], axis1=-2, axis2=-1)
    assert rel_err(spatial, saved["trHess_space"]) < 1e-12
    partial = xd.laplacian(phi, x, coords=list(range(d)))  # OT-Flow's trHess without the Hessian
    assert rel_err(backend.to_numpy(partial), saved["trHess_space"]) < 1e-12
    assert rel_err(backend.to_numpy(xd.laplacian(phi, x)), np.trace(H, axis1=-2, axis2=-1)) < 1e-12


def test_potential_from_arrays_matches_state_dict(saved):
    s = _state(saved)
    phi = otflow.potential(
        s["N.layers.0.weight"],
        s["N.layers.0.bias"],
        [s["N.layers.1.weight"], s["N.layers.2.weight"]],
        [s["N.layers.1.bias"], s["N.layers.2.bias"]],
        s["w.weight"],
        A=s["A"],
        c=s["c.weight"],
        c0=float(s["c.bias"][0]),
    )
    assert phi.layers[1].step == 0.5  # OT-Flow's h = 1 / (nTh - 1)
    assert rel_err(phi(saved["x"]), saved["value"]) < 1e-12
    assert rel_err(xd.gradient(phi, saved["x"]), saved["gradient"]) < 1e-12


def test_float32_target(saved, backend):
    phi = otflow.from_state_dict(_state(saved), xp=backend.module, device=backend.device, dtype="float32")
    x = backend.asarray(saved["x"], "float32")
    lap = xd.laplacian(phi, x)
    assert lap.dtype == backend.dtype("float32")
    assert backend.device_of(lap) == backend.device_of(x)
    assert rel_err(backend.to_numpy(phi(x)), saved["value"]) < 1e-5


def _torch_phi(saved, backend):
    """OT-Flow's Phi as torch Modules with the saved weights (only the attributes from_phi reads)."""
    torch = pytest.importorskip("torch")
    s = {k: backend.asarray(v) for k, v in _state(saved).items()}
    kw = {"device": backend.device, "dtype": torch.float64}
    layers = torch.nn.ModuleList()
    for i in range(3):
        w = s[f"N.layers.{i}.weight"]
        lin = torch.nn.Linear(w.shape[1], w.shape[0], **kw)
        lin.weight.data, lin.bias.data = w.clone(), s[f"N.layers.{i}.bias"].clone()
        layers.append(lin)
    wlin = torch.nn.Linear(8, 1, bias=False, **kw)
    wlin.weight.data = s["w.weight"].clone()
    clin = torch.nn.Linear(4, 1, **kw)
    clin.weight.data, clin.bias.data = s["c.weight"].clone(), s["c.bias"].clone()
    A = torch.nn.Parameter(s["A"].clone())
    return SimpleNamespace(N=SimpleNamespace(layers=layers, h=0.5), w=wlin, c=clin, A=A)


def _reference(phi, x):
    """OT-Flow's Phi.forward written out in torch."""
    import torch

    def act(z):
        return torch.abs(z) + torch.log1p(torch.exp(-2 * torch.abs(z)))

    u = act(phi.N.layers[0](x))
    for lin in phi.N.layers[1:]:
        u = u + phi.N.h * act(lin(u))
    symA = phi.A.T @ phi.A
    return (phi.w(u) + 0.5 * ((x @ symA) * x).sum(-1, keepdim=True) + phi.c(x))[..., 0]


def test_from_phi_matches_autodiff_and_shares(saved, backend):
    if backend.name != "torch":
        pytest.skip("torch autodiff comparison runs in the torch sessions")
    import torch
    from torch.func import hessian, vmap

    phi_t = _torch_phi(saved, backend)
    phi = otflow.from_phi(phi_t)
    x = backend.asarray(saved["x"])
    H_ref = vmap(hessian(lambda p: _reference(phi_t, p[None])[0]))(x)
    torch.testing.assert_close(xd.hessian(phi, x), H_ref, rtol=1e-11, atol=1e-12)
    torch.testing.assert_close(phi(x), _reference(phi_t, x), rtol=1e-12, atol=1e-12)
    assert phi.layers[0].weight.data_ptr() == phi_t.N.layers[0].weight.data_ptr()
    xd.laplacian(phi, x).sum().backward()
    assert phi_t.N.layers[0].weight.grad is not None and phi_t.A.grad is not None


def test_mismatched_lists():
    with pytest.raises(ValueError, match="2 residual weights K but 1 biases"):
        otflow.potential(np.ones((3, 2)), np.ones(3), [np.eye(3), np.eye(3)], [np.ones(3)], np.ones(3))
