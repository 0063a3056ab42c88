"""Independent references: a network as ``f(arrays, x)`` for autodiff, and activation derivatives in mpmath.

:func:`network_function` is written with plain formulas (not xderiv's
activations) in the backend's own namespace, so torch.func and jax
differentiate code that shares nothing with the recursions under test.

:func:`mp_derivatives` gives :math:`\\sigma, \\sigma', \\dots, \\sigma^{(K)}` of an activation at
50 digits from truncated power series arithmetic on its definition (products,
reciprocals, exponentials, antiderivatives), written so that no coefficient is
a difference of nearly equal numbers: the reference for every order, also at
:math:`|z| = 10^4`, where numerical differentiation would need thousands of digits.
"""

from __future__ import annotations

import math
from typing import Any

import xderiv as xd
from xderiv.models.layers import FourierFeatures


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
    """The plain formula of a built-in activation, or of a parametric one named ``kind(param=value)``."""
    if "(" in name:
        kind, _, rest = name.partition("(")
        p = float(rest.split("=")[1].rstrip(")"))
        base = activation(kind, xp)
        if kind == "softplus":
            return lambda z: base(p * z) / p
        if kind == "sin":
            return lambda z: base(p * z)
        if kind == "gaussian":
            return lambda z: base(z / p)
        if kind == "elu":
            return lambda z: xp.where(z > 0, z, p * xp.expm1(xp.minimum(z, xp.zeros_like(z))))
        if kind == "celu":
            return lambda z: xp.where(z > 0, z, p * xp.expm1(xp.minimum(z, xp.zeros_like(z)) / p))
        raise ValueError(f"no reference for {name}")

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
        u, k = x, 0
        for layer, act in zip(layers, acts):
            if isinstance(layer, xd.InputScale):  # its arrays are mean and std
                a, k = (u - arrays[k]) / arrays[k + 1], k + 2
            elif isinstance(layer, FourierFeatures):  # its array is B
                z, k = u @ arrays[k], k + 1
                a = xp.concat([xp.sin(z), xp.cos(z)], axis=-1)
            else:
                a, k = act(u @ arrays[k] + arrays[k + 1]), k + 2
            u = u + layer.step * a if layer.skip else a
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


# --------------------------------------------------------------------------- mpmath: derivatives of any order


class MpSeries:
    """A truncated power series in ``t`` with mpmath coefficients ``c_k = f^(k)(z0) / k!``."""

    def __init__(self, coefficients):
        from mpmath import mp

        self.c = [mp.mpf(v) for v in coefficients]

    def __len__(self):
        return len(self.c)

    def __add__(self, other):
        if not isinstance(other, MpSeries):
            return MpSeries([self.c[0] + other] + self.c[1:])
        return MpSeries([a + b for a, b in zip(self.c, other.c)])

    __radd__ = __add__

    def __neg__(self):
        return MpSeries([-a for a in self.c])

    def __sub__(self, other):
        return self + (-other)

    def __mul__(self, other):
        if not isinstance(other, MpSeries):
            return MpSeries([a * other for a in self.c])
        return MpSeries([sum(self.c[j] * other.c[k - j] for j in range(k + 1)) for k in range(len(self))])

    __rmul__ = __mul__


def _mp_exp(a, value=None):
    """exp(a); the higher coefficients from e' = a' e."""
    from mpmath import mp

    e = [mp.exp(a.c[0])]
    for k in range(1, len(a)):
        e.append(sum(j * a.c[j] * e[k - j] for j in range(1, k + 1)) / k)
    if value is not None:  # e.g. expm1: the same series with another constant term
        e[0] = value
    return MpSeries(e)


def _mp_reciprocal(a):
    r = [1 / a.c[0]]
    for k in range(1, len(a)):
        r.append(-sum(a.c[j] * r[k - j] for j in range(1, k + 1)) / a.c[0])
    return MpSeries(r)


def _mp_integral(a, value):
    """The antiderivative of the series ``a`` (in t) with constant term ``value``."""
    return MpSeries([value] + [a.c[k - 1] / k for k in range(1, len(a))])


def _mp_derivative(a):
    return MpSeries([a.c[k + 1] * (k + 1) for k in range(len(a) - 1)] + [0])


def _mp_sigmoid(a):
    return _mp_reciprocal(1 + _mp_exp(-a))


def _mp_tanh(a):
    """(1 - e^{-2a}) / (1 + e^{-2a}), the numerator from expm1: no cancellation for tiny a."""
    from mpmath import mp

    e = _mp_exp(-2 * a)
    return -_mp_exp(-2 * a, mp.expm1(-2 * a.c[0])) * _mp_reciprocal(1 + e)


def _mp_softplus(a):
    from mpmath import mp

    z = a.c[0]
    value = mp.log1p(mp.exp(z)) if z < 0 else z + mp.log1p(mp.exp(-z))
    return _mp_integral(_mp_sigmoid(a) * _mp_derivative(a), value)


def mp_series(name: str, z0: float, terms: int) -> MpSeries:
    """Taylor coefficients of activation ``name`` (a built-in or ``kind(param=value)``) at ``z0``."""
    from mpmath import mp

    z0 = mp.mpf(z0)
    a = MpSeries([z0, 1] + [0] * (terms - 2))
    kind, _, rest = name.partition("(")
    p = mp.mpf(float(rest.split("=")[1].rstrip(")"))) if rest else None
    if kind == "identity":
        return a
    if kind == "quadratic":
        return a * a * mp.mpf(0.5)
    if kind == "sigmoid":
        return _mp_sigmoid(a)
    if kind == "tanh":
        return _mp_tanh(a)
    if kind == "softplus":
        beta = p or mp.mpf(1)
        return _mp_softplus(a * beta) * (1 / beta)
    if kind == "sin":
        w = p or mp.mpf(1)
        return MpSeries([w**k * mp.sin(w * z0 + k * mp.pi / 2) / mp.factorial(k) for k in range(terms)])
    if kind == "silu":
        return a * _mp_sigmoid(a)
    if kind in ("antitanh", "logcosh"):
        value = abs(z0) + mp.log1p(mp.exp(-2 * abs(z0))) - (mp.log(2) if kind == "logcosh" else 0)
        return _mp_integral(_mp_tanh(a), value)
    if kind == "gelu":
        density = _mp_exp(-(a * a) * mp.mpf(0.5)) * (1 / mp.sqrt(2 * mp.pi))
        return a * _mp_integral(density, mp.ncdf(z0))
    if kind == "gelu_tanh":  # 0.5 z (1 + tanh u) = z sigmoid(2u)
        c, k = mp.sqrt(2 / mp.pi), mp.mpf("0.044715")
        return a * _mp_sigmoid(2 * c * (a + k * a * a * a))
    if kind == "mish":
        return a * _mp_tanh(_mp_softplus(a))
    if kind == "gaussian":
        w = p or mp.mpf(1)
        return _mp_exp(-(a * a) * (1 / (2 * w * w)))
    if kind == "relu2":
        return a * a if z0 > 0 else MpSeries([0] * terms)
    if kind in ("elu", "celu", "selu"):
        selu = kind == "selu"
        alpha = mp.mpf(SELU_ALPHA) if selu else (p or mp.mpf(1))
        scale = mp.mpf(SELU_SCALE) if selu else mp.mpf(1)
        inner = 1 / alpha if kind == "celu" else mp.mpf(1)
        if z0 > 0:
            return a * scale
        out = _mp_exp(a * inner, mp.expm1(inner * z0)) * (alpha * scale)
        if z0 == 0:  # torch's autograd at the kink: sigma' from the left branch, the higher ones from the right
            out.c[2:] = [mp.mpf(0)] * (terms - 2)
        return out
    raise KeyError(name)


def mp_derivatives(name: str, z0: float, order: int) -> list:
    """:math:`\\sigma^{(k)}(z_0)`, ``k = 0, ..., order``, as mpf numbers."""
    from mpmath import mp

    return [c * mp.factorial(k) for k, c in enumerate(mp_series(name, z0, order + 1).c)]


SELU_ALPHA = "1.6732632423543772848170429916717"  # torch's constants, as decimal strings
SELU_SCALE = "1.0507009873554804934193349852946"
