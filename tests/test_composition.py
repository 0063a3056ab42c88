"""Sums, products and scalings of networks: every operator by the product rule, input features as layers."""

from __future__ import annotations

import math

import numpy as np
import pytest

import xderiv as xd

from .helpers import fd_hessian, fd_jacobian, rel_err
from .networks_zoo import residual_first

MODES = ["forward", "backward"]
TOL = 1e-12  # operators against the composite's Hessian: round-off only
N = 4


def _parts(backend):
    kw = {"xp": backend.module, "device": backend.device, "dtype": "float64"}
    eye = backend.asarray(np.eye(3))
    return {
        "g": xd.mlp([3, 4, 1], "tanh", seed=11, **kw),
        "N": xd.resnet(3, 5, 2, activation="tanh", step=0.5, seed=12, **kw),
        "phi": xd.quadratic(-2.0 * eye, b=1.0),
        "D": xd.quadratic(backend.asarray([-2.0, 0.5, 1.5]), c=backend.asarray([0.3, -0.2, 0.1]), b=1.0),  # diag A
        "P": xd.potential(3, 4, 1, rank=2, seed=13, **kw),
        "V": residual_first(backend, "float64"),  # 3 -> 2
        "W": xd.mlp([3, 5, 2], "silu", "sigmoid", seed=14, **kw),
    }


CASES = {
    "hard-bc": lambda p: p["g"] + p["phi"] * p["N"],  # (n, 1)
    "vector": lambda p: p["V"] * p["W"] + 0.5 * p["W"] - 1.0,  # (n, 2)
    "scalar": lambda p: p["P"] * p["phi"] - 2.0 * p["P"] + 3.0,  # (n,)
    "broadcast": lambda p: p["P"] * p["V"] + p["N"],  # scalar x 2 outputs + 1 output: (n, 2)
    "nested": lambda p: (p["g"] * p["N"]) * (p["N"] - p["g"] / 4.0),  # (n, 1)
    "diagonal": lambda p: p["D"] * p["W"] + p["N"],  # a diagonal quadratic times 2 outputs: (n, 2)
}


@pytest.fixture(params=sorted(CASES))
def case(request, backend):
    u = CASES[request.param](_parts(backend))
    x = backend.asarray(0.6 * np.random.default_rng(5).standard_normal((N, 3)))
    m = 1 if u.scalar else u.out_features
    h = backend.to_numpy(xd.hessian(u, x, mode="backward")).reshape(N, m, 3, 3)
    j = backend.to_numpy(xd.jacobian(u, x, mode="backward")).reshape(N, m, 3)
    return u, x, m, h, j


def test_shapes_follow_the_parts(backend):
    p = _parts(backend)
    x = backend.asarray(np.zeros((2, 5, 3)))
    assert tuple(CASES["hard-bc"](p)(x).shape) == (2, 5, 1)
    assert tuple(CASES["vector"](p)(x).shape) == (2, 5, 2)
    scalar = CASES["scalar"](p)
    assert scalar.scalar and tuple(scalar(x).shape) == (2, 5)
    assert tuple(xd.gradient(scalar, x).shape) == (2, 5, 3)
    assert tuple(xd.hessian(CASES["broadcast"](p), x).shape) == (2, 5, 2, 3, 3)
    assert tuple(xd.laplacian(scalar, backend.asarray(np.zeros(3))).shape) == ()


def test_value_is_the_combination(backend):
    p = _parts(backend)
    x = backend.asarray(np.random.default_rng(1).standard_normal((N, 3)))
    v = {k: backend.to_numpy(net(x)) for k, net in p.items()}
    got = backend.to_numpy(CASES["hard-bc"](p)(x))
    assert rel_err(got, v["g"] + v["phi"][:, None] * v["N"]) < 1e-15
    got = backend.to_numpy(CASES["broadcast"](p)(x))
    assert rel_err(got, v["P"][:, None] * v["V"] + v["N"]) < 1e-15
    xn = backend.to_numpy(x)
    assert rel_err(v["phi"], 1.0 - (xn**2).sum(-1)) < 1e-15


def test_a_diagonal_quadratic_is_the_dense_one(backend):
    """``quadratic(a)`` with ``a`` of shape (d,) is ``quadratic(diag(a))`` for every operator, at O(d) per point."""
    rng = np.random.default_rng(10)
    a, c = rng.standard_normal(3), rng.standard_normal(3)
    n = xd.mlp([3, 5, 1], "tanh", seed=6, xp=backend.module, device=backend.device)
    dense = xd.quadratic(backend.asarray(np.diag(a)), backend.asarray(c), b=0.5)
    diag = xd.quadratic(backend.asarray(a), backend.asarray(c), b=0.5)
    x = backend.asarray(rng.standard_normal((N, 3)))
    s, v = backend.asarray(rng.standard_normal((N, 3, 2))), backend.asarray(rng.standard_normal(3))
    ops = [
        lambda u: u(x),
        lambda u: xd.jacobian(u, x),
        lambda u: xd.hessian(u, x),
        lambda u: xd.laplacian(u, x, mode="forward"),
        lambda u: xd.laplacian(u, x, mode="backward"),
        lambda u: xd.trace_hessian(u, x, s),
        lambda u: xd.hessian_diagonal(u, x),
        lambda u: xd.hvp(u, x, v),
        lambda u: xd.directional(u, x, v)[0],
        lambda u: xd.directional(u, x, v)[1],
    ]
    for u_dense, u_diag in ((dense, diag), (dense * n, diag * n)):
        for op in ops:
            assert rel_err(backend.to_numpy(op(u_diag)), backend.to_numpy(op(u_dense))) < 1e-14
    assert tuple(diag.A.shape) == (3,)
    with pytest.raises(ValueError, match=r"A must be square \(d, d\) or a diagonal \(d,\), got shape \(2, 3\)"):
        xd.quadratic(backend.asarray(np.ones((2, 3))))


def test_hard_boundary_condition_holds_on_the_sphere(backend):
    p = _parts(backend)
    u = CASES["hard-bc"](p)
    s = np.random.default_rng(2).standard_normal((N, 3))
    on_sphere = backend.asarray(s / np.linalg.norm(s, axis=1, keepdims=True))
    assert rel_err(backend.to_numpy(u(on_sphere)), backend.to_numpy(p["g"](on_sphere))) < 1e-14


def test_jacobian_and_hessian_match_finite_differences(backend, case):
    u, x, m, h, j = case
    assert rel_err(j, fd_jacobian(u, x, backend)) < 1e-8
    assert rel_err(h, fd_hessian(u, x, backend)) < 1e-7


@pytest.mark.parametrize("mode", MODES)
def test_every_operator_by_the_product_rule(backend, case, mode):
    u, x, m, h, j = case
    rng = np.random.default_rng(3)
    diag = np.diagonal(h, axis1=-2, axis2=-1)

    def got(a, *tail):
        return backend.to_numpy(a).reshape((N, m) + tail)

    assert rel_err(got(xd.hessian(u, x, mode=mode), 3, 3), h) < TOL
    assert rel_err(got(xd.jacobian(u, x, mode=mode), 3), j) < TOL
    assert rel_err(got(xd.laplacian(u, x, mode=mode)), diag.sum(-1)) < TOL
    assert rel_err(got(xd.laplacian(u, x, mode=mode, coords=[0, 2])), diag[..., [0, 2]].sum(-1)) < TOL
    assert rel_err(got(xd.hessian_diagonal(u, x, mode=mode), 3), diag) < TOL
    s = rng.standard_normal((3, 2))
    want = np.einsum("nmij,ik,jk->nm", h, s, s)
    assert rel_err(got(xd.trace_hessian(u, x, backend.asarray(s), mode=mode)), want) < TOL
    sp = rng.standard_normal((N, 3, 2))
    want = np.einsum("nmij,nik,njk->nm", h, sp, sp)
    assert rel_err(got(xd.trace_hessian(u, x, backend.asarray(sp), mode=mode)), want) < TOL
    r = xd.derivatives(u, x, hessian=True, laplacian=True, coords=[1], mode=mode)
    assert rel_err(got(r.laplacian), diag[..., 1]) < TOL
    assert rel_err(got(r.jacobian, 3), j) < TOL
    r = xd.derivatives(u, x, laplacian=True, mode=mode)
    assert rel_err(got(r.laplacian), diag.sum(-1)) < TOL and r.hessian is None


def test_directional_and_hvp(backend, case):
    u, x, m, h, j = case
    v = np.random.default_rng(4).standard_normal(3)
    hv = backend.to_numpy(xd.hvp(u, x, backend.asarray(v))).reshape(N, m, 3)
    assert rel_err(hv, h @ v) < TOL
    vp = np.random.default_rng(5).standard_normal((N, 3))
    hv = backend.to_numpy(xd.hvp(u, x, backend.asarray(vp))).reshape(N, m, 3)
    assert rel_err(hv, np.einsum("nmij,nj->nmi", h, vp)) < TOL
    dv, dvv = xd.directional(u, x, backend.asarray(v))
    assert rel_err(backend.to_numpy(dv).reshape(N, m), j @ v) < TOL
    assert rel_err(backend.to_numpy(dvv).reshape(N, m), np.einsum("nmij,i,j->nm", h, v, v)) < TOL


def test_divergence_of_a_composite_field(backend):
    p = _parts(backend)
    field = xd.mlp([3, 6, 3], "tanh", seed=3, xp=backend.module, device=backend.device) * p["phi"]
    x = backend.asarray(np.random.default_rng(6).standard_normal((N, 3)))
    j = backend.to_numpy(xd.jacobian(field, x))
    assert rel_err(backend.to_numpy(xd.divergence(field, x)), np.trace(j, axis1=-2, axis2=-1)) < TOL


def test_arrays_round_trip(backend):
    u = CASES["nested"](_parts(backend))
    x = backend.asarray(np.random.default_rng(7).standard_normal((N, 3)))
    doubled = u.with_arrays([2.0 * a for a in u.arrays()])
    assert len(u.arrays()) == 2 * (2 * 2 + 2 * 4)  # g (2 layers) and N (4 layers) each appear twice
    assert rel_err(backend.to_numpy(u.with_arrays(u.arrays())(x)), backend.to_numpy(u(x))) == 0.0
    assert rel_err(backend.to_numpy(doubled(x)), backend.to_numpy(u(x))) > 1e-3


def test_bad_compositions_are_refused(backend):
    p = _parts(backend)
    other_d = xd.mlp([2, 3, 1], xp=backend.module, device=backend.device)
    with pytest.raises(ValueError, match=r"take \[3, 2\] inputs"):
        _ = p["g"] + other_d
    three = xd.mlp([3, 3], xp=backend.module, device=backend.device)
    with pytest.raises(ValueError, match=r"\[2, 3\] outputs"):
        _ = p["V"] * three
    with pytest.raises(TypeError, match="part 1 must be an xderiv network"):
        xd.Product(p["g"], "tanh")
    with pytest.raises(ValueError, match="finite"):
        _ = p["g"] * math.inf
    with pytest.raises(ZeroDivisionError):
        _ = p["g"] / 0
    if backend.name != "numpy":
        with pytest.raises(TypeError, match="different array libraries"):
            _ = p["g"] + xd.mlp([3, 1])


# --------------------------------------------------------------------------- input features


def test_input_scale_is_the_normalisation(backend):
    rng = np.random.default_rng(8)
    mean, std = rng.standard_normal(3), rng.uniform(0.5, 2.0, 3)
    scale = xd.InputScale(backend.asarray(mean), backend.asarray(std))
    head = xd.mlp([3, 4, 1], "tanh", seed=2, xp=backend.module, device=backend.device)
    net = xd.Sequential(scale, *head.layers)
    x = rng.standard_normal((N, 3))
    xs = backend.asarray((x - mean) / std)
    assert rel_err(backend.to_numpy(net(backend.asarray(x))), backend.to_numpy(head(xs))) < 1e-14
    # chain rule: H_net = D H_head D with D = diag(1/std)
    h = backend.to_numpy(xd.hessian(net, backend.asarray(x))).reshape(N, 3, 3)
    h_head = backend.to_numpy(xd.hessian(head, xs)).reshape(N, 3, 3)
    assert rel_err(h, h_head / std[:, None] / std[None, :]) < TOL
    box = xd.InputScale(backend.asarray(np.zeros(3)), 2.0)  # a number broadcasts
    assert rel_err(backend.to_numpy(xd.value(box, backend.asarray(x))), x / 2.0) < 1e-15
    with pytest.raises(ValueError, match="positive"):
        xd.InputScale(backend.asarray(np.zeros(3)), -1.0)
    with pytest.raises(TypeError, match="mean or std must be an array"):
        xd.InputScale(0.0, 1.0)


def test_fourier_features_are_sines_and_cosines(backend):
    rng = np.random.default_rng(9)
    b = rng.standard_normal((3, 4))
    layer = xd.fourier_features(backend.asarray(b))
    assert (layer.in_features, layer.out_features, layer.activation.name) == (3, 8, "sin")
    x = rng.standard_normal((N, 3))
    z = x @ b
    want = np.concatenate([np.sin(z), np.cos(z)], -1)
    assert rel_err(backend.to_numpy(xd.value(layer, backend.asarray(x))), want) < 1e-14
    net = xd.Sequential(layer, *xd.mlp([8, 5, 1], "tanh", seed=4, xp=backend.module, device=backend.device).layers)
    xa = backend.asarray(x)
    h = backend.to_numpy(xd.hessian(net, xa)).reshape(N, 1, 3, 3)
    assert rel_err(h, fd_hessian(net, xa, backend)) < 1e-7
    lap = backend.to_numpy(xd.laplacian(net, xa, mode="forward")).reshape(N, 1)
    assert rel_err(lap, np.trace(h, axis1=-2, axis2=-1)) < TOL


def _features_net(backend, mean, std, b, head, dtype="float64"):
    return xd.Sequential(
        xd.InputScale(backend.asarray(mean, dtype), backend.asarray(std, dtype)),
        xd.fourier_features(backend.asarray(b, dtype)),
        *head.layers,
    )


def test_feature_layers_read_their_arrays_at_every_call(backend):
    """mean, std and B changed in place after the network is built (an optimizer step on trained
    features) change every result, as a freshly built network's."""
    if backend.name in ("jax", "dask"):
        pytest.skip("arrays of this library cannot be changed in place")
    rng = np.random.default_rng(10)
    head = xd.mlp([4, 5, 1], "tanh", seed=5, xp=backend.module, device=backend.device)
    mean, std, b = rng.standard_normal(3), rng.uniform(0.5, 2.0, 3), rng.standard_normal((3, 2))
    net = _features_net(backend, mean, std, b, head)
    scale, features = net.layers[0], net.layers[1]
    x = backend.asarray(rng.standard_normal((N, 3)))
    before = backend.to_numpy(xd.hessian(net, x))
    new_mean, new_std, new_b = mean + 0.3, 2.0 * std, 1.5 * b
    scale.mean[...] = backend.asarray(new_mean)
    scale.std[...] = backend.asarray(new_std)
    features.B[...] = backend.asarray(new_b)
    fresh = _features_net(backend, new_mean, new_std, new_b, head)
    for op in (xd.value, xd.hessian, xd.laplacian):
        assert rel_err(backend.to_numpy(op(net, x)), backend.to_numpy(op(fresh, x))) < 1e-15
    assert rel_err(backend.to_numpy(xd.hessian(net, x)), before) > 0.1


def test_feature_layers_arrays_round_trip(backend):
    """``arrays()``/``with_arrays`` hold a feature layer's own arrays (mean, std; B), not its weight."""
    rng = np.random.default_rng(11)
    head = xd.mlp([4, 3, 1], "sin", seed=6, xp=backend.module, device=backend.device)
    mean, std, b = rng.standard_normal(3), rng.uniform(0.5, 2.0, 3), rng.standard_normal((3, 2))
    net = _features_net(backend, mean, std, b, head)
    arrays = net.arrays()
    assert [tuple(a.shape) for a in arrays[:3]] == [(3,), (3,), (3, 2)]
    other = net.with_arrays([backend.asarray(2.0 * backend.to_numpy(a)) for a in arrays])
    want = _features_net(backend, 2.0 * mean, 2.0 * std, 2.0 * b, head.with_arrays([2.0 * a for a in head.arrays()]))
    x = backend.asarray(rng.standard_normal((N, 3)))
    assert rel_err(backend.to_numpy(xd.laplacian(other, x)), backend.to_numpy(xd.laplacian(want, x))) < 1e-14
    with pytest.raises(ValueError, match="InputScale.with_arrays: expected shapes"):
        net.layers[0].with_arrays(arrays[0], arrays[2])
    with pytest.raises(ValueError, match="FourierFeatures.with_arrays: expected shape"):
        net.layers[1].with_arrays(arrays[0])


def test_float32_feature_layers_in_a_float64_call_are_widened_before_use(backend):
    """A float64 input promotes float32 weights exactly; the feature layers' 1/std, -mean/std and
    pi/2 are then formed in float64 too, so the result equals that of the widened network."""
    rng = np.random.default_rng(13)
    mean, std, b = rng.standard_normal(3), rng.uniform(0.5, 2.0, 3), rng.standard_normal((3, 2))
    f32 = [a.astype(np.float32) for a in (mean, std, b)]
    head = xd.mlp([4, 5, 1], "tanh", seed=8, xp=backend.module, device=backend.device, dtype="float32")
    head64 = head.with_arrays([backend.asarray(backend.to_numpy(a)) for a in head.arrays()])
    net = _features_net(backend, *f32, head, dtype="float32")
    assert all(a.dtype == backend.dtype("float32") for a in net.arrays())
    widened = _features_net(backend, *f32, head64)  # the float32 values, held as float64
    x = backend.asarray(rng.standard_normal((N, 3)))
    for op in (xd.value, xd.laplacian):
        got = op(net, x)
        assert got.dtype == x.dtype
        assert rel_err(backend.to_numpy(got), backend.to_numpy(op(widened, x))) < 1e-14


def test_trained_feature_layers_get_the_gradients_of_their_weights(backend):
    """Gradients reach mean, std and B through every training step, equal to those through plain
    Dense layers whose weights are built from them by hand."""
    if backend.name != "torch":
        pytest.skip("weight gradients by torch autograd")
    import torch

    rng = np.random.default_rng(12)
    head = xd.mlp([4, 5, 1], "tanh", seed=7, xp=torch, device=backend.device)
    mean, std, b = (
        torch.tensor(a, dtype=torch.float64, device=backend.device, requires_grad=True)
        for a in (rng.standard_normal(3), rng.uniform(0.5, 2.0, 3), rng.standard_normal((3, 2)))
    )
    net = xd.Sequential(xd.InputScale(mean, std), xd.fourier_features(b), *head.layers)
    x = backend.asarray(rng.standard_normal((N, 3)))

    def by_hand():
        half = torch.full((2,), math.pi / 2, dtype=torch.float64, device=backend.device)
        return xd.Sequential(
            xd.Dense(torch.diag(1.0 / std), -mean / std),
            xd.Dense(torch.cat([b, b], 1), torch.cat([torch.zeros_like(half), half]), "sin"),
            *head.layers,
        )

    for _ in range(2):  # a second step: fresh graphs, nothing consumed by the first backward
        for mode in ("forward", "backward"):
            got = torch.autograd.grad(xd.laplacian(net, x, mode=mode).square().sum(), (mean, std, b))
            want = torch.autograd.grad(xd.laplacian(by_hand(), x, mode=mode).square().sum(), (mean, std, b))
            for g, w in zip(got, want):
                assert rel_err(backend.to_numpy(g), backend.to_numpy(w)) < 1e-13
        with torch.no_grad():
            for a, g in zip((mean, std, b), got):
                a -= 0.05 * g


# --------------------------------------------------------------------------- a hard-constraint PINN in torch


def test_hard_constraint_pinn_matches_torch_func_and_trains(backend):
    """u = g + phi * N with N a converted torch module: operators and weight gradients equal torch.func's."""
    if backend.name != "torch":
        pytest.skip("a torch training loop: the torch session runs it")
    import torch
    from torch.func import hessian, vmap

    from xderiv.interop.torch import from_torch

    dev = backend.device
    torch.manual_seed(0)
    with torch.device(dev):
        model = torch.nn.Sequential(
            torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)
        ).double()
    eye = torch.eye(3, dtype=torch.float64, device=dev)
    x = 0.5 * torch.randn(64, 3, dtype=torch.float64, device=dev)
    s = torch.randn(3, 2, dtype=torch.float64, device=dev)
    g = xd.mlp([3, 1], "identity", seed=0, xp=torch, device=dev)  # boundary data: an affine g
    u = g + xd.quadratic(-2.0 * eye, b=1.0) * from_torch(model)

    def reference(xx):  # the same function written out in torch
        phi = 1.0 - (xx * xx).sum(-1, keepdim=True)
        return g(xx) + phi * model(xx)

    hess = vmap(hessian(lambda p: reference(p[None])[0]))(x)  # (n, 1, 3, 3)
    tol = 1e-12 * hess.abs().max().item()
    assert (xd.hessian(u, x) - hess).abs().max().item() < tol
    assert (xd.laplacian(u, x) - hess.diagonal(dim1=-2, dim2=-1).sum(-1)).abs().max().item() < tol
    trace = torch.einsum("nmij,ik,jk->nm", hess, s, s)
    assert (xd.trace_hessian(u, x, s) - trace).abs().max().item() < 10 * tol

    f = torch.ones(64, 1, dtype=torch.float64, device=x.device)
    loss = ((xd.laplacian(u, x) + f) ** 2).mean()
    grads = torch.autograd.grad(loss, list(model.parameters()))
    ref_lap = vmap(hessian(lambda p: reference(p[None])[0]))(x).diagonal(dim1=-2, dim2=-1).sum(-1)
    ref_grads = torch.autograd.grad(((ref_lap + f) ** 2).mean(), list(model.parameters()))
    for a, b in zip(grads, ref_grads):
        assert (a - b).abs().max().item() <= 1e-12 * max(b.abs().max().item(), 1.0)

    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        opt.zero_grad()
        loss = ((xd.laplacian(u, x) + f) ** 2).mean()
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    assert loss.item() < 0.5 * first
    on_sphere = x / x.norm(dim=-1, keepdim=True)
    assert (u(on_sphere) - g(on_sphere)).abs().max().item() < 1e-14
