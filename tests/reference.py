"""Independent re-implementation of a network as ``f(arrays, x)`` for autodiff references.

Written with plain formulas (not xderiv's activations) in the backend's own
namespace, so torch.func and jax differentiate code that shares nothing
with the recursions under test.
"""

from __future__ import annotations

import math
from typing import Any


def _erf(xp: Any):
    """The backend's own erf (torch and JAX, the sessions with autodiff references)."""
    name = getattr(xp, "__name__", "")
    if "torch" in name:
        import torch

        return torch.special.erf
    if "jax" in name:
        import jax.scipy.special

        return jax.scipy.special.erf
    raise ValueError(f"no reference erf for {name}")


def activation(name: str, xp: Any):
    def anti(z):
        return xp.abs(z) + xp.log1p(xp.exp(-2 * xp.abs(z)))

    def sig(z):
        return 1 / (1 + xp.exp(-z))

    def negative(z):  # min(z, 0): the exponential branches never see z > 0 (no inf * 0 in autodiff)
        return xp.minimum(z, xp.zeros_like(z))

    def elu(z, alpha=1.0):
        return xp.where(z > 0, z, alpha * xp.expm1(negative(z)))

    selu_alpha, selu_scale = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
    c, k = math.sqrt(2.0 / math.pi), 0.044715

    return {
        "gelu": lambda z: 0.5 * z * (1.0 + _erf(xp)(z / math.sqrt(2.0))),
        "gelu_tanh": lambda z: 0.5 * z * (1.0 + xp.tanh(c * (z + k * z * z * z))),
        "elu": elu,
        "celu": elu,
        "selu": lambda z: selu_scale * elu(z, selu_alpha),
        "mish": lambda z: z * xp.tanh(xp.log1p(xp.exp(z))),
        "relu2": lambda z: xp.maximum(z, xp.zeros_like(z)) ** 2,
        "gaussian": lambda z: xp.exp(-0.5 * z * z),
        "identity": lambda z: z,
        "sigmoid": sig,
        "tanh": xp.tanh,
        "softplus": lambda z: xp.log1p(xp.exp(z)),
        "quadratic": lambda z: 0.5 * z * z,
        "sin": xp.sin,
        "silu": lambda z: z * sig(z),
        "antitanh": anti,
        "logcosh": lambda z: anti(z) - math.log(2.0),
    }[name]


def network_function(net: Any, xp: Any):
    """``f(arrays, x)`` for one point ``x`` (d,), arrays in the order of ``net.arrays()``."""
    layers, plan = net.layers, net.plan
    acts = [activation(layer.activation.name, xp) for layer in layers]

    def f(arrays, x):
        u = x
        for i, layer in enumerate(layers):
            a = acts[i](u @ arrays[2 * i] + arrays[2 * i + 1])
            u = u + layer.step * a if layer.skip else a
        k = 2 * len(layers)
        if plan.quadratic is not None:
            u = u + 0.5 * (x @ (arrays[k] @ x))
            k += 1
        if plan.linear is not None:
            u = u + x @ arrays[k]
        return u[0] if plan.scalar else u

    return f


def autodiff(backend: Any):
    """``(vmap, jacrev, hessian, grad)`` of the backend's function transforms."""
    if backend.name == "torch":
        from torch.func import grad, hessian, jacrev, vmap

        return vmap, jacrev, hessian, grad
    if backend.name == "jax":
        import jax

        def vmap(f, in_dims):
            return jax.vmap(f, in_axes=in_dims)

        return vmap, jax.jacrev, jax.hessian, jax.grad
    raise ValueError(f"{backend.name} has no autodiff")
