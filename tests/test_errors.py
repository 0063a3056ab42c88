"""Bad input fails loudly, naming what it saw; mixed dtypes promote by the standard."""

from __future__ import annotations

import numpy as np
import pytest

import xderiv as xd

from .helpers import rel_err


def _net(backend, dtype="float64"):
    return xd.resnet(3, 4, 1, out_features=1, seed=0, xp=backend.module, device=backend.device, dtype=dtype)


def test_wrong_trailing_dimension(backend):
    net = _net(backend)
    with pytest.raises(ValueError, match=r"x has shape \(2, 5\).*\(\.\.\., 3\).*trailing dimension must be 3"):
        xd.hessian(net, backend.asarray(np.zeros((2, 5))))
    with pytest.raises(ValueError, match="trailing dimension must be 3"):
        net(backend.asarray(np.zeros(())))


def test_widths_must_chain(backend):
    a = xd.Dense(backend.asarray(np.ones((3, 4))), activation="tanh")
    b = xd.Dense(backend.asarray(np.ones((5, 1))))
    with pytest.raises(ValueError, match="outputs 4 features but layer 1.*takes 5"):
        xd.Sequential(a, b)
    with pytest.raises(ValueError, match=r"Residual: weight must be square.*\(3, 4\)"):
        xd.Residual(backend.asarray(np.ones((3, 4))))
    with pytest.raises(ValueError, match=r"bias has shape \(3,\).*needs a bias of shape \(4,\)"):
        xd.Dense(backend.asarray(np.ones((3, 4))), backend.asarray(np.ones(3)))
    with pytest.raises(ValueError, match="weight must be 2-D"):
        xd.Dense(backend.asarray(np.ones(3)))
    with pytest.raises(ValueError, match=r"w must have shape \(4,\)"):
        xd.Potential(xd.Sequential(a), backend.asarray(np.ones(5)))
    with pytest.raises(ValueError, match=r"A must have shape \(3, 3\)"):
        xd.Potential(xd.Sequential(a), backend.asarray(np.ones(4)), backend.asarray(np.ones((4, 4))))


def test_unknown_activation_name(backend):
    with pytest.raises(ValueError, match="unknown activation 'tanhh'"):
        xd.Dense(backend.asarray(np.ones((3, 4))), activation="tanhh")


def test_integer_weights_are_refused(backend):
    with pytest.raises(TypeError, match="weight must have a real floating dtype"):
        xd.Dense(backend.xp.asarray(np.ones((3, 4), dtype=np.int64), device=backend.device))


def _foreign(backend, a):
    """``a`` as an array of a different library than the session's backend."""
    if backend.name == "numpy":
        strict = pytest.importorskip("array_api_strict")
        return strict.asarray(a)
    return np.asarray(a)


def test_mixed_namespaces_are_an_error(backend):
    net = _net(backend)
    x = _foreign(backend, np.zeros((2, 3)))
    with pytest.raises(TypeError, match="x is a .* but the network's weights belong to"):
        xd.hessian(net, x)
    with pytest.raises(TypeError, match="different array libraries"):
        xd.Sequential(xd.Dense(backend.asarray(np.ones((3, 4)))), xd.Dense(_foreign(backend, np.ones((4, 1)))))


def test_mixed_devices_are_an_error(backend):
    if backend.name == "strict":
        import array_api_strict as strict

        x = strict.asarray(np.zeros((2, 3)), device=strict.Device("CPU_DEVICE"))
        other = strict.asarray(np.ones((4, 1)), device=strict.Device("CPU_DEVICE"))
    elif backend.name == "torch":
        import torch

        elsewhere = "cpu" if backend.device.type == "meta" else "meta"  # any device but the session's
        x = torch.zeros((2, 3), dtype=torch.float64, device=elsewhere)
        other = torch.ones((4, 1), dtype=torch.float64, device=elsewhere)
    else:
        pytest.skip(f"{backend.name}: only one device on this machine")
    with pytest.raises(ValueError, match="x is on device .* but the network's weights are on"):
        xd.laplacian(_net(backend), x)
    with pytest.raises(ValueError, match="weights live on different devices"):
        xd.Sequential(xd.Dense(backend.asarray(np.ones((3, 4)))), xd.Dense(other))


def test_bool_and_complex_input_refused(backend):
    net = _net(backend)
    with pytest.raises(TypeError, match="x must be real"):
        net(backend.xp.asarray(np.ones((2, 3), dtype=bool), device=backend.device))
    with pytest.raises(TypeError, match="x must be real"):
        net(backend.xp.asarray(np.ones((2, 3), dtype=np.complex128), device=backend.device))


def test_integer_and_list_input_take_the_weight_dtype(backend):
    for dtype in ("float64", "float32"):
        net = _net(backend, dtype)
        xi = backend.xp.asarray(np.array([[1, 2, 3], [0, -1, 2]]), device=backend.device)
        xf = backend.asarray(np.array([[1.0, 2, 3], [0, -1, 2]]), dtype)
        hi, hf = xd.hessian(net, xi), xd.hessian(net, xf)
        assert hi.dtype == backend.dtype(dtype)
        assert np.array_equal(backend.to_numpy(hi), backend.to_numpy(hf))
        from_list = net([[1.0, 2.0, 3.0], [0.0, -1.0, 2.0]])
        assert np.array_equal(backend.to_numpy(from_list), backend.to_numpy(net(xf)))


def test_mixed_float_dtypes_promote(backend):
    net32, net64 = _net(backend, "float32"), _net(backend, "float64")
    xn = np.random.default_rng(0).standard_normal((2, 3))
    # float64 points into float32 weights: computed in float64 from the float32 weights.
    r = xd.derivatives(net32, backend.asarray(xn, "float64"), hessian=True)
    assert r.hessian.dtype == backend.dtype("float64")
    assert rel_err(backend.to_numpy(r.hessian), backend.to_numpy(xd.hessian(net64, backend.asarray(xn)))) < 1e-5
    lap = xd.laplacian(net64, backend.asarray(xn, "float32"))
    assert lap.dtype == backend.dtype("float64")


def test_gradient_needs_one_output_and_mode_must_be_known(backend):
    net = xd.mlp([3, 4, 2], seed=0, xp=backend.module, device=backend.device)
    x = backend.asarray(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="gradient needs a single-output network, this one has 2"):
        xd.gradient(net, x)
    with pytest.raises(ValueError, match="mode must be one of"):
        xd.hessian(net, x, mode="sideways")
    with pytest.raises(TypeError, match="net must be an xderiv"):
        xd.hessian(lambda z: z, x)


def test_inputs_and_weights_are_not_mutated(backend):
    net = _net(backend)
    xn = np.random.default_rng(1).standard_normal((4, 3))
    x = backend.asarray(xn)
    before = [backend.to_numpy(a).copy() for layer in net.layers for a in layer.arrays()]
    for mode in ("forward", "backward"):
        xd.derivatives(net, x, hessian=True, mode=mode)
        xd.laplacian(net, x, mode=mode)
    after = [backend.to_numpy(a) for layer in net.layers for a in layer.arrays()]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    assert np.array_equal(backend.to_numpy(x), xn)
