"""torch and jax sessions: every operator, and its gradient with respect to the weights, against autodiff.

The reference differentiates an independent plain re-implementation of the
network (tests/reference.py) with torch.func or jax; xderiv's result is
differentiated by the same framework through the recursions.  float64,
agreement to ~1e-12 relative for the operators and 1e-10 for weight gradients
(one more level of round-off).
"""

from __future__ import annotations

import numpy as np
import pytest

import xderiv as xd

from .helpers import rel_err
from .reference import autodiff, network_function

NETS = ["resnet", "potential", "residual-first", "mlp-silu"]


@pytest.fixture(autouse=True)
def _autodiff_backends(backend):
    if backend.name not in ("torch", "jax"):
        pytest.skip("autodiff references run in the torch and jax sessions")


def _net(backend, name):
    kw = {"xp": backend.module, "device": backend.device}
    from .networks_zoo import residual_first

    return {
        "resnet": lambda: xd.resnet(3, 5, 2, out_features=2, residual_activation="tanh", step=0.5, seed=2, **kw),
        "potential": lambda: xd.potential(3, 6, 2, rank=2, seed=5, **kw),
        "residual-first": lambda: residual_first(backend, "float64"),
        "mlp-silu": lambda: xd.mlp([3, 6, 3], activation="silu", seed=1, **kw),
    }[name]()


def _operators(backend, d):
    """name -> (xderiv call on (net, x), reference from (values, jacobians, hessians)) with mode."""
    xp = backend.xp
    rng = np.random.default_rng(3)
    s = backend.asarray(rng.standard_normal((d, 2)))
    v = backend.asarray(rng.standard_normal(d))
    coords = [1, 2]

    def tr(h, m):  # h (..., d, d) times m (d, d)
        return xp.sum(xp.sum(h * m, axis=-1), axis=-1)

    eye = backend.asarray(np.eye(d))
    sel = backend.asarray(np.diag([0.0, 1.0, 1.0]))
    sst = s @ xp.matrix_transpose(s)
    a = backend.asarray(np.array([[1.0, 0.5, -0.3], [0.5, -2.0, 0.2], [-0.3, 0.2, 0.0]]))  # indefinite
    c = 0.7

    def lin(y, j, h):  # sum a_ij d_ij y + b . grad y + c y
        return tr(h, a) + j @ v + c * y

    return {
        "second_order": (lambda net, x, mode: xd.second_order(net, x, a, v, c, mode=mode), lin),
        "laplacian": (lambda net, x, mode: xd.laplacian(net, x, mode=mode), lambda y, j, h: tr(h, eye)),
        "laplacian-coords": (
            lambda net, x, mode: xd.laplacian(net, x, mode=mode, coords=coords),
            lambda y, j, h: tr(h, sel),
        ),
        "trace_hessian": (lambda net, x, mode: xd.trace_hessian(net, x, s, mode=mode), lambda y, j, h: tr(h, sst)),
        "hessian_diagonal": (
            lambda net, x, mode: xd.hessian_diagonal(net, x, mode=mode),
            lambda y, j, h: xp.sum(h * eye, axis=-1),
        ),
        "hessian": (lambda net, x, mode: xd.hessian(net, x, mode=mode), lambda y, j, h: h),
        "jacobian": (lambda net, x, mode: xd.jacobian(net, x, mode=mode), lambda y, j, h: j),
        "hvp": (lambda net, x, mode: xd.hvp(net, x, v), lambda y, j, h: h @ v),
        "directional": (lambda net, x, mode: xd.directional(net, x, v)[1], lambda y, j, h: (h @ v) @ v),
    }


def _reference_parts(backend, net, arrays, x):
    vmap, jacrev, hessian, _ = autodiff(backend)
    f = network_function(net, backend.xp)
    y = vmap(f, in_dims=(None, 0))(arrays, x)
    j = vmap(jacrev(f, argnums=1), in_dims=(None, 0))(arrays, x)
    h = vmap(hessian(f, argnums=1), in_dims=(None, 0))(arrays, x)
    return y, j, h


@pytest.mark.parametrize("name", NETS)
@pytest.mark.parametrize("mode", ["forward", "backward"])
@pytest.mark.parametrize(
    "op",
    [
        "laplacian",
        "laplacian-coords",
        "trace_hessian",
        "second_order",
        "hessian_diagonal",
        "hessian",
        "jacobian",
        "hvp",
        "directional",
    ],
)
def test_operator_and_weight_gradient_match_autodiff(backend, name, mode, op):
    xp = backend.xp
    net = _net(backend, name)
    x = backend.asarray(np.random.default_rng(0).standard_normal((4, 3)))
    ours, ref = _operators(backend, net.in_features)[op]
    arrays = net.arrays()
    _, _, _, grad = autodiff(backend)

    def loss_xd(ws):
        out = ours(net.with_arrays(ws), x, mode)
        return xp.sum(out * out) + xp.sum(xp.sin(out))

    def loss_ref(ws):
        out = ref(*_reference_parts(backend, net, ws, x))
        return xp.sum(out * out) + xp.sum(xp.sin(out))

    def reference(ws):
        return ref(*_reference_parts(backend, net, ws, x))

    grad_ours, grad_ref = grad(loss_xd), grad(loss_ref)
    if backend.name == "jax":  # the references and gradients traced whole: eager JAX compiles every operation
        import jax

        reference, grad_ours, grad_ref = jax.jit(reference), jax.jit(grad_ours), jax.jit(grad_ref)
    got = backend.to_numpy(ours(net, x, mode))  # eager (jitted: test_jax_jit_and_grad_through_the_laplacian)
    want = backend.to_numpy(reference(arrays))
    assert rel_err(got.reshape(want.shape), want) < 1e-12
    for a, b in zip(grad_ours(arrays), grad_ref(arrays)):
        assert rel_err(backend.to_numpy(a), backend.to_numpy(b)) < 1e-10


def test_jax_jit_and_grad_through_the_laplacian(backend):
    if backend.name != "jax":
        pytest.skip("jax only")
    import jax

    net = _net(backend, "potential")
    x = backend.asarray(np.random.default_rng(1).standard_normal((8, 3)))

    def loss(ws, x):
        return backend.xp.mean(xd.laplacian(net.with_arrays(ws), x) ** 2)

    eager, jitted = loss(net.arrays(), x), jax.jit(loss)(net.arrays(), x)
    assert abs(float(eager) - float(jitted)) <= 1e-13 * abs(float(eager))
    g_eager = jax.grad(loss)(net.arrays(), x)
    g_jit = jax.jit(jax.grad(loss))(net.arrays(), x)
    for a, b in zip(g_eager, g_jit):
        assert rel_err(np.asarray(b), np.asarray(a)) < 1e-12
