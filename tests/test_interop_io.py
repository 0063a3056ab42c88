"""xderiv.interop.io: save/load round trips on the session's backend and across backends."""

from __future__ import annotations

import json

import numpy as np
import pytest

import xderiv as xd
from xderiv.interop import io

from .helpers import rel_err


def _nets():
    pot = xd.potential(in_features=3, width=6, depth=2, rank=2, seed=0)
    res = xd.resnet(in_features=3, width=5, depth=2, out_features=2, activation="antitanh", step=0.5, seed=1)
    beta = xd.Sequential(
        xd.Dense(np.ones((3, 4)) * 0.3, np.zeros(4), activation=xd.activations.softplus(2.0)), xd.Dense(np.ones((4, 1)))
    )
    no_quad = xd.Potential(xd.mlp([3, 4, 4], "sin", "tanh", seed=2), np.ones(4), None, np.ones(3) * 0.1, 0.5)
    rng = np.random.default_rng(3)
    features = xd.Sequential(
        xd.InputScale(np.array([0.1, -0.2, 0.3]), np.array([1.5, 0.8, 1.2])),
        xd.fourier_features(rng.standard_normal((3, 2))),
        xd.mlp([4, 5, 1], "tanh", seed=3),
    )
    return {
        "potential": pot,
        "resnet": res,
        "softplus-beta": beta,
        "potential-linear-only": no_quad,
        "input-features": features,
    }


@pytest.mark.parametrize("name", list(_nets()))
def test_round_trip_into_backend(tmp_path, backend, name):
    net = _nets()[name]
    path = tmp_path / "net.npz"
    io.save(net, path)
    loaded = io.load(path, xp=backend.module, device=backend.device)
    assert type(loaded) is type(net)
    assert [type(a) for a in loaded.layers] == [type(a) for a in net.layers]
    assert [a.activation.name for a in loaded.layers] == [a.activation.name for a in net.layers]
    x_np = np.random.default_rng(0).normal(size=(4, 3))
    x = backend.asarray(x_np)
    r = xd.derivatives(loaded, x, hessian=True)
    ref = xd.derivatives(net, x_np, hessian=True)
    assert backend.device_of(r.hessian) == backend.device_of(x)
    assert rel_err(backend.to_numpy(r.value), ref.value) < 1e-14
    assert rel_err(backend.to_numpy(r.hessian), ref.hessian) < 1e-13
    assert rel_err(backend.to_numpy(xd.laplacian(loaded, x)), np.trace(ref.hessian, axis1=-2, axis2=-1)) < 1e-12


def test_save_from_backend_load_numpy_float32(tmp_path, backend):
    net = xd.resnet(in_features=2, width=4, depth=1, xp=backend.module, device=backend.device, seed=3)
    io.save(net, tmp_path / "a.npz")
    back = io.load(tmp_path / "a.npz")
    x = np.array([[0.2, -0.4]])
    assert rel_err(back(x), backend.to_numpy(net(backend.asarray(x)))) < 1e-15
    f32 = io.load(tmp_path / "a.npz", xp=backend.module, device=backend.device, dtype="float32")
    assert f32.dtype == backend.dtype("float32")
    io.save(f32, tmp_path / "b.npz")
    assert io.load(tmp_path / "b.npz").dtype == np.float32  # stored dtype is the default


def test_file_is_plain_npz(tmp_path):
    io.save(_nets()["potential"], tmp_path / "p.npz")
    with np.load(tmp_path / "p.npz", allow_pickle=False) as f:
        meta = json.loads(str(f["__xderiv__"][()]))
        assert meta["kind"] == "Potential" and meta["format"] == io.FORMAT
        assert {"layers.0.weight", "w", "b", "A", "c"} <= set(f.files)
        assert f["w"].shape == (6, 1)


def test_a_composite_is_saved_by_its_parts(tmp_path):
    with pytest.raises(TypeError, match="got Scaled; a composite .* save each part"):
        io.save(2.0 * xd.mlp([2, 3, 1], seed=0), tmp_path / "net.npz")


def test_errors(tmp_path):
    np.savez(tmp_path / "other.npz", a=np.ones(2))
    with pytest.raises(ValueError, match="not an xderiv network file"):
        io.load(tmp_path / "other.npz")
    io.save(_nets()["resnet"], tmp_path / "r.npz")
    with np.load(tmp_path / "r.npz") as f:
        data = {k: f[k] for k in f.files}
    meta = json.loads(str(data["__xderiv__"]))
    meta["format"] = io.FORMAT + 1
    data["__xderiv__"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "future.npz", **data)
    with pytest.raises(ValueError, match="newer than this xderiv reads"):
        io.load(tmp_path / "future.npz")


def test_torch_weights_with_grad_save(tmp_path, backend):
    if backend.name != "torch":
        pytest.skip("torch only")
    net = xd.mlp([2, 3, 1], xp=backend.module, device=backend.device, seed=0)
    for layer in net.layers:
        for a in layer.arrays():
            a.requires_grad_()
    io.save(net, tmp_path / "t.npz")
    assert (
        rel_err(io.load(tmp_path / "t.npz")(np.zeros(2)), backend.to_numpy(net(backend.asarray(np.zeros(2))))) < 1e-15
    )
