"""xderiv.interop.keras: Keras-style weight lists against a Keras-semantics forward pass and torch autodiff.

Keras itself is not installed in the test sessions: the "original model" is
``keras_forward`` below, which applies ``Dense`` exactly as Keras does
(``activation(u @ kernel + bias)``) to the saved weight list.
"""

from __future__ import annotations

import numpy as np
import pytest

import xderiv as xd
from xderiv.interop.keras import from_keras, from_keras_model

from .helpers import fd_jacobian, rel_err

KERAS_ACT = {
    "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
    "tanh": np.tanh,
    "softplus": lambda z: np.log1p(np.exp(z)),
    "swish": lambda z: z / (1 + np.exp(-z)),
    "linear": lambda z: z,
    None: lambda z: z,
}


def keras_forward(weights, acts, x, residual=None, step=1.0):
    u, k = x, 0
    for i, act in enumerate(acts):
        W, b = weights[k], weights[k + 1]
        k += 2
        a = KERAS_ACT[act](u @ W + b)
        u = u + step * a if residual and residual[i] else a
    return u


def seed_pinn_weights(seed=0):
    """Weights shaped like the seed notebook's PINN: 2 -> 20 -> 20 -> 20 -> 1, sigmoid everywhere."""
    rng = np.random.default_rng(seed)
    sizes = [2, 20, 20, 20, 1]
    out = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        out += [rng.normal(size=(a, b)) * np.sqrt(2 / (a + b)), rng.normal(size=b) * 0.1]
    return out


def test_seed_pinn_matches_keras_forward_and_fd(backend):
    weights = seed_pinn_weights()
    acts = ["sigmoid"] * 4
    net = from_keras(weights, "sigmoid", "sigmoid", xp=backend.module, device=backend.device)
    x_np = np.array([[0.15, 0.1], [0.3, -0.2], [1.0, 2.0]])
    x = backend.asarray(x_np)
    assert rel_err(backend.to_numpy(net(x)), keras_forward(weights, acts, x_np)) < 1e-13
    assert rel_err(backend.to_numpy(xd.jacobian(net, x)), fd_jacobian(net, x, backend)) < 1e-8


def test_weights_used_as_given_without_target():
    weights = seed_pinn_weights()
    net = from_keras(weights, "sigmoid", "sigmoid")
    assert net.layers[0].weight is weights[0]


def test_per_layer_activations_residual_and_no_bias():
    rng = np.random.default_rng(1)
    weights = [rng.normal(size=(3, 6)), rng.normal(size=6), rng.normal(size=(6, 6)) * 0.3, rng.normal(size=6)]
    weights += [rng.normal(size=(6, 2))]  # Dense(2, use_bias=False)
    net = from_keras(weights, activations=["softplus", "tanh", "linear"], residual=[False, True, False], step=0.5)
    x = rng.normal(size=(4, 3))
    full = weights[:4] + [weights[4], np.zeros(2)]
    ref = keras_forward(full, ["softplus", "tanh", "linear"], x, residual=[False, True, False], step=0.5)
    assert rel_err(net(x), ref) < 1e-13
    assert isinstance(net.layers[1], xd.Residual) and net.layers[1].step == 0.5


def test_matches_torch_autodiff(backend):
    if backend.name != "torch":
        pytest.skip("torch autodiff comparison runs in the torch sessions")
    import torch
    from torch.func import hessian, jacrev, vmap

    weights = seed_pinn_weights(3)
    net = from_keras(weights, "swish", "sigmoid", xp=backend.module, device=backend.device)
    W = [backend.asarray(w) for w in weights]

    def f(p):
        u = p
        for i in range(0, 8, 2):
            z = u @ W[i] + W[i + 1]
            u = torch.sigmoid(z) if i == 6 else torch.nn.functional.silu(z)
        return u

    x = backend.asarray(np.random.default_rng(4).standard_normal((5, 2)))
    r = xd.derivatives(net, x, hessian=True)
    torch.testing.assert_close(r.jacobian, vmap(jacrev(f))(x), rtol=1e-11, atol=1e-12)
    torch.testing.assert_close(r.hessian, vmap(hessian(f))(x), rtol=1e-10, atol=1e-12)


class _FakeDense:
    def __init__(self, weights, activation):
        self._w, self._a = weights, activation

    def get_weights(self):
        return self._w

    def get_config(self):
        return {"activation": self._a}


def test_from_keras_model_duck_typed():
    weights = seed_pinn_weights(2)
    layers = [_FakeDense([], None)]  # an InputLayer
    layers += [_FakeDense(weights[i : i + 2], "tanh" if i < 6 else "linear") for i in range(0, 8, 2)]
    net = from_keras_model(type("Model", (), {"layers": layers})())
    x = np.random.default_rng(0).normal(size=(3, 2))
    assert rel_err(net(x), keras_forward(weights, ["tanh"] * 3 + ["linear"], x)) < 1e-13


def test_bad_lists():
    with pytest.raises(ValueError, match=r"weights\[0\] has shape \(3,\)"):
        from_keras([np.ones(3)])
    with pytest.raises(ValueError, match="2 layers but 1 activations"):
        from_keras([np.ones((2, 2)), np.ones((2, 1))], activations=["tanh"])
    with pytest.raises(ValueError, match="unknown activation 'relu'"):
        from_keras([np.ones((2, 2))], activations=["relu"])
