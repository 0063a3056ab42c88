"""Bad input fails loudly, naming what it saw; mixed dtypes promote by the standard."""

from __future__ import annotations

import re

import numpy as np
import pytest

import xderiv as xd

from .helpers import rel_err

# What each session's library is called in the messages' hints (the name a user imports).
LIBRARY = {
    "numpy": "numpy",
    "torch": "torch",
    "strict": "array_api_strict",
    "jax": "jax.numpy",
    "dask": "dask.array",
    "cupy": "cupy",
}


def _astype(backend, name, dtype="float64"):
    """The cast the messages suggest for array ``name`` in the session's library."""
    lib = LIBRARY[backend.name]
    if backend.name == "torch":
        return f"{name}.to(torch.{dtype})"
    if backend.name == "strict":
        return f"array_api_strict.astype({name}, array_api_strict.{dtype})"
    return f"{name}.astype({lib}.{dtype})"


def _net(backend, dtype="float64"):
    return xd.resnet(3, 4, 1, out_features=1, seed=0, xp=backend.module, device=backend.device, dtype=dtype)


def test_wrong_trailing_dimension(backend):
    net = _net(backend)
    with pytest.raises(ValueError, match=r"x has shape \(2, 5\).*\(\.\.\., 3\).*trailing dimension must be 3"):
        xd.hessian(net, backend.asarray(np.zeros((2, 5))))
    with pytest.raises(ValueError, match="trailing dimension must be 3"):
        net(backend.asarray(np.zeros(())))


def test_wrong_trailing_dimension_says_how_to_reshape(backend):
    lib = LIBRARY[backend.name]
    net = _net(backend)
    layout = re.escape("n points in d=3 are an array of shape (n, 3), one point has shape (3,)")
    with pytest.raises(ValueError, match=layout + re.escape(" (coordinates on the last axis)")):
        net(backend.asarray(np.zeros((2, 5))))
    with pytest.raises(ValueError, match=r"x has shape \(3, 10\).*looks transposed.*pass x\.T$"):
        net(backend.asarray(np.zeros((3, 10))))
    with pytest.raises(ValueError, match=r"x has shape \(\).*, not a scalar$"):
        net(backend.asarray(np.zeros(())))
    net1 = xd.mlp([1, 4, 1], seed=0, xp=backend.module, device=backend.device)
    fix = re.escape(f"add the trailing axis with x[..., None] or {lib}.reshape(x, (-1, 1))")
    with pytest.raises(ValueError, match=r"x has shape \(10,\).*must be 1; .*" + fix):
        xd.laplacian(net1, backend.asarray(np.zeros(10)))


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
    with pytest.raises(TypeError, match="weight must have a real floating dtype") as info:
        xd.Dense(backend.xp.asarray(np.ones((3, 4), dtype=np.int64), device=backend.device))
    assert f"cast it first, e.g. {_astype(backend, 'w')}" in str(info.value)


def _foreign(backend, a):
    """``a`` as an array of a different library than the session's backend."""
    if backend.name == "numpy":
        strict = pytest.importorskip("array_api_strict")
        return strict.asarray(a)
    return np.asarray(a)


def test_mixed_namespaces_are_an_error(backend):
    net = _net(backend)
    x = _foreign(backend, np.zeros((2, 3)))
    with pytest.raises(TypeError, match="x is an? .* but the network's weights belong to") as info:
        xd.hessian(net, x)
    # the conversion of x into the network's library, or a network in x's library
    convert = {
        "numpy": "numpy.asarray(x)",  # x: array_api_strict
        "torch": f"torch.as_tensor(x, dtype=torch.float64, device='{backend.device}')",
        "strict": "array_api_strict.asarray(x)",
        "jax": "jax.numpy.asarray(x)",
        "dask": "dask.array.from_array(x, chunks=(points_per_chunk, d))",
        "cupy": "cupy.asarray(x)",
    }[backend.name]
    other = "array_api_strict" if backend.name == "numpy" else "numpy"
    message = str(info.value)
    assert f"belong to {LIBRARY[backend.name]} " in message
    assert f"convert x with {convert}, or build the network with {other}: xd.mlp(..., xp={other})" in message
    with pytest.raises(TypeError, match="different array libraries"):
        xd.Sequential(xd.Dense(backend.asarray(np.ones((3, 4)))), xd.Dense(_foreign(backend, np.ones((4, 1)))))
    with pytest.raises(TypeError, match=r"Dense: weight is .* but bias is .*one array library"):
        xd.Dense(backend.asarray(np.ones((3, 4))), _foreign(backend, np.zeros(4)))
    with pytest.raises(TypeError, match=r"InputScale: mean is .* but std is .*one array library"):
        xd.InputScale(_foreign(backend, np.zeros(4)), backend.asarray(np.ones(4)))


def test_layer_arguments_that_cannot_work_are_named(backend):
    if backend.name != "dask":  # lazy weights are not computed at construction (as for NaN weights)
        with pytest.raises(ValueError, match=r"InputScale: std has a zero entry .*shape \(3,\)"):
            xd.InputScale(backend.asarray(np.zeros(3)), backend.asarray(np.array([1.0, 0.0, 2.0])))
    with pytest.raises(
        ValueError, match=r"quadratic: A must be square \(d, d\) or a diagonal \(d,\), got shape \(3, 1\)"
    ):
        xd.quadratic(backend.asarray(np.ones((3, 1))))


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
    with pytest.raises(ValueError, match="x is on device .* but the network's weights are on") as info:
        xd.laplacian(_net(backend), x)
    if backend.name == "torch":
        move, move_weights = f"x.to('{backend.device}')", f"w.to('{backend.device}')"
        assert "net.with_arrays([a.to(" in str(info.value)
    else:
        move, move_weights = f"x.to_device({backend.device!r})", f"w.to_device({backend.device!r})"
    assert f"move x with {move}" in str(info.value)
    with pytest.raises(ValueError, match="weights live on different devices") as info:
        xd.Sequential(xd.Dense(backend.asarray(np.ones((3, 4)))), xd.Dense(other))
    assert f"e.g. {move_weights} for each weight w" in str(info.value)


def test_bool_and_complex_input_refused(backend):
    net = _net(backend)
    cast = re.escape(f"cast it, e.g. {_astype(backend, 'x')}")
    with pytest.raises(TypeError, match="x must be real.*" + cast + "$"):
        net(backend.xp.asarray(np.ones((2, 3), dtype=bool), device=backend.device))
    with pytest.raises(TypeError, match="x must be real.*" + cast + re.escape(" (or take x.real")):
        net(backend.xp.asarray(np.ones((2, 3), dtype=np.complex128), device=backend.device))


def test_unreadable_sequences_say_what_to_pass(backend):
    lib = LIBRARY[backend.name]
    net = _net(backend)
    fix = f"pass one rectangular array of shape (..., d), e.g. {lib}.asarray(x, dtype={lib}.float64)"
    with pytest.raises(TypeError, match="x: cannot read list as real .*" + re.escape(fix)):
        net([[1.0, 2.0, 3.0], [1.0, 2.0]])
    if backend.name == "torch":  # a list of tensors: torch does not stack them itself
        rows = [backend.asarray(np.zeros(3)), backend.asarray(np.ones(3))]
        with pytest.raises(TypeError, match=re.escape("stack the arrays into one: torch.stack(x)")):
            net(rows)


def test_torch_tensor_into_a_numpy_network():
    torch = pytest.importorskip("torch")
    net = xd.mlp([3, 4, 1], seed=0)  # NumPy weights
    x = torch.zeros((2, 3), device="cpu", requires_grad=True)
    with pytest.raises(TypeError) as info:
        xd.laplacian(net, x)
    message = str(info.value)
    assert message.startswith("x is a torch.Tensor of shape (2, 3) and dtype torch.float32")
    assert "belong to numpy" in message
    assert "convert x with x.detach().cpu().numpy()" in message
    assert "build the network with torch: xd.mlp(..., xp=torch)" in message
    assert "xderiv.interop.torch.from_torch(model)" in message


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_numpy_array_into_a_torch_network(dtype):
    torch = pytest.importorskip("torch")
    net = xd.mlp([3, 4, 1], seed=0, xp=torch, device="cpu", dtype=dtype)
    with pytest.raises(TypeError) as info:
        net(np.zeros((2, 3)))
    message = str(info.value)
    assert message.startswith("x is a numpy.ndarray of shape (2, 3) and dtype float64")
    assert f"convert x with torch.as_tensor(x, dtype=torch.{dtype}, device='cpu')" in message


def test_other_arguments_are_converted_not_the_network(backend):
    net = _net(backend)
    x = backend.asarray(np.zeros((2, 3)))
    with pytest.raises(TypeError, match="^v is an? .* but the network's weights belong to .* convert v with ") as info:
        xd.hvp(net, x, _foreign(backend, np.ones(3)))
    assert "build the network" not in str(info.value)  # v follows x, whose library is right


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
