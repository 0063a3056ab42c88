r"""Elementwise activations with their first and second derivatives.

Every built-in activation evaluates :math:`\sigma, \sigma', \sigma''` in one
fused call sharing intermediates, written so that nothing overflows or turns
into NaN for any finite ``z`` (checked at :math:`|z| = 10^4`): exponentials
only ever see :math:`-|z|`, and no formula subtracts two nearly equal numbers
where a stable form exists.

=============  ======================================  ==========================  ==============================
name           :math:`\sigma(z)`                        :math:`\sigma'(z)`           :math:`\sigma''(z)`
=============  ======================================  ==========================  ==============================
identity       :math:`z`                                1                           0
sigmoid        :math:`1/(1+e^{-z})`                     :math:`\sigma(1-\sigma)`     :math:`\sigma'(1-2\sigma)`
tanh           :math:`\tanh z`                          :math:`\mathrm{sech}^2 z`    :math:`-2\tanh z\,\mathrm{sech}^2`
softplus       :math:`\log(1+e^{z})`                    sigmoid                     sigmoid'
quadratic      :math:`z^2/2`                            :math:`z`                    1
sin            :math:`\sin z`                           :math:`\cos z`               :math:`-\sin z`
silu           :math:`z\,\mathrm{sigmoid}(z)`           :math:`s + z s'`             :math:`2s' + z s''`
antitanh       :math:`\log(2\cosh z)`                   :math:`\tanh z`              :math:`\mathrm{sech}^2 z`
logcosh        :math:`\log\cosh z`                      :math:`\tanh z`              :math:`\mathrm{sech}^2 z`
=============  ======================================  ==========================  ==============================

``antitanh`` is computed as :math:`|z| + \log(1 + e^{-2|z|}) = \log(2\cosh z)`,
exactly as the seed notebook, hessQuik and OT-Flow do, so their trained
weights port over unchanged.  ``logcosh`` is :math:`\log\cosh z =
\mathrm{antitanh}(z) - \log 2`: the constant offset shifts the pre-activations
of every later layer, so the two are **not** interchangeable for a given set
of weights (their derivatives agree).

A user registers an activation of their own with :func:`register_activation`.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._namespace import Array

Fused = Callable[[Array, Any, int], tuple[Array, ...]]

_LOG2 = math.log(2.0)


@dataclass(frozen=True)
class Activation:
    """An elementwise activation :math:`\\sigma` with :math:`\\sigma'` and :math:`\\sigma''`.

    Immutable and stateless, so one instance is safely shared by many layers
    and threads.

    Parameters
    ----------
    name : str
        Registry name.
    evaluate : callable ``(z, xp, order) -> tuple``
        Returns ``(sigma,)``, ``(sigma, dsigma)`` or ``(sigma, dsigma, d2sigma)``
        for ``order`` 0, 1, 2, each with the shape of ``z``.
    linear : bool
        True only for the identity: the recursions then skip the
        multiplications by :math:`\\sigma' = 1` and the zero :math:`\\sigma''` terms.
    """

    name: str
    evaluate: Fused = field(repr=False)
    linear: bool = False

    def __call__(self, z: Array, xp: Any) -> Array:
        """:math:`\\sigma(z)`."""
        return self.evaluate(z, xp, 0)[0]


def _sigmoid_parts(z: Array, xp: Any, order: int) -> tuple[Array, ...]:
    """Stable sigmoid and derivatives from ``e = exp(-|z|)``, ``r = 1/(1+e)``.

    sigmoid = r (z >= 0) or e r (z < 0); sigmoid' = e r^2;
    sigmoid'' = -sign(z) (1 - e) r sigmoid', with 1 - e = -expm1(-|z|).
    """
    a = xp.abs(z)
    e = xp.exp(-a)
    r = 1.0 / (1.0 + e)
    s = xp.where(z >= 0, r, e * r)
    if order == 0:
        return (s,)
    ds = e * r * r
    if order == 1:
        return (s, ds)
    d2s = -xp.sign(z) * (-xp.expm1(-a)) * r * ds
    return (s, ds, d2s)


def _sech2(z: Array, xp: Any) -> Array:
    """sech^2 z = 4 e / (1 + e)^2 with e = exp(-2|z|): no overflow, full relative accuracy."""
    e = xp.exp(-2.0 * xp.abs(z))
    q = 1.0 + e
    return 4.0 * e / (q * q)


def _identity(z: Array, xp: Any, order: int) -> tuple[Array, ...]:
    if order == 0:
        return (z,)
    return (z, xp.ones_like(z), xp.zeros_like(z))[: order + 1]


def _tanh(z: Array, xp: Any, order: int) -> tuple[Array, ...]:
    t = xp.tanh(z)
    if order == 0:
        return (t,)
    s2 = _sech2(z, xp)
    if order == 1:
        return (t, s2)
    return (t, s2, -2.0 * t * s2)


def _softplus(z: Array, xp: Any, order: int) -> tuple[Array, ...]:
    value = xp.maximum(z, xp.zeros_like(z)) + xp.log1p(xp.exp(-xp.abs(z)))
    if order == 0:
        return (value,)
    return (value,) + _sigmoid_parts(z, xp, order - 1)


def _quadratic(z: Array, xp: Any, order: int) -> tuple[Array, ...]:
    value = 0.5 * z * z
    return (value, z, xp.ones_like(z))[: order + 1] if order else (value,)


def _sin(z: Array, xp: Any, order: int) -> tuple[Array, ...]:
    s = xp.sin(z)
    return (s, xp.cos(z), -s)[: order + 1] if order else (s,)


def _silu(z: Array, xp: Any, order: int) -> tuple[Array, ...]:
    parts = _sigmoid_parts(z, xp, order)
    value = z * parts[0]
    if order == 0:
        return (value,)
    d1 = parts[0] + z * parts[1]
    if order == 1:
        return (value, d1)
    return (value, d1, 2.0 * parts[1] + z * parts[2])


def _log2cosh(z: Array, xp: Any) -> Array:
    a = xp.abs(z)
    return a + xp.log1p(xp.exp(-2.0 * a))


def _tanh_derivatives(z: Array, xp: Any, order: int, value: Array) -> tuple[Array, ...]:
    if order == 0:
        return (value,)
    t = xp.tanh(z)
    if order == 1:
        return (value, t)
    return (value, t, _sech2(z, xp))


def _antitanh(z: Array, xp: Any, order: int) -> tuple[Array, ...]:
    return _tanh_derivatives(z, xp, order, _log2cosh(z, xp))


def _logcosh(z: Array, xp: Any, order: int) -> tuple[Array, ...]:
    # |z| < 1: log cosh z = log1p(2 sinh^2(z/2)) keeps full relative accuracy
    # near 0, where log(2 cosh z) - log 2 would cancel.  The small branch sees
    # a clamped argument so its unused lanes never overflow (which would poison
    # autodiff through xp.where with inf * 0 = NaN).
    small = xp.abs(z) < 1.0
    zs = xp.where(small, z, xp.zeros_like(z))
    sh = xp.sinh(0.5 * zs)
    value = xp.where(small, xp.log1p(2.0 * sh * sh), _log2cosh(z, xp) - _LOG2)
    return _tanh_derivatives(z, xp, order, value)


_REGISTRY: dict[str, Activation] = {}


def _register(activation: Activation, overwrite: bool = False) -> Activation:
    if activation.name in _REGISTRY and not overwrite:
        raise ValueError(f"activation {activation.name!r} is already registered; pass overwrite=True to replace it")
    _REGISTRY[activation.name] = activation
    return activation


for _name, _fn in [
    ("sigmoid", _sigmoid_parts),
    ("tanh", _tanh),
    ("softplus", _softplus),
    ("quadratic", _quadratic),
    ("sin", _sin),
    ("silu", _silu),
    ("antitanh", _antitanh),
    ("logcosh", _logcosh),
]:
    _register(Activation(_name, _fn))
_register(Activation("identity", _identity, linear=True))


def _with_xp(fn: Callable[..., Array], what: str) -> Callable[[Array, Any], Array]:
    """Accept user functions written as ``f(z)`` or ``f(z, xp)``."""
    params: Any
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    if len(params) >= 2:
        return fn
    if len(params) == 1:
        return lambda z, xp: fn(z)
    raise TypeError(f"{what} must be a callable f(z) or f(z, xp), got {fn!r}")


def register_activation(
    name: str,
    function: Callable[..., Array],
    derivative: Callable[..., Array],
    second_derivative: Callable[..., Array],
    *,
    overwrite: bool = False,
) -> Activation:
    """Register a user activation under ``name``.

    Parameters
    ----------
    name : str
        Name used in ``Dense(..., activation=name)``.
    function, derivative, second_derivative : callable
        :math:`\\sigma`, :math:`\\sigma'`, :math:`\\sigma''`, each ``f(z)`` or
        ``f(z, xp)`` (``xp`` is the Array API namespace of ``z``; use it to stay
        backend-agnostic, e.g. ``lambda z, xp: xp.exp(-z * z)``).
    overwrite : bool
        Replace an existing registration of the same name.

    Returns
    -------
    Activation
    """
    f = _with_xp(function, "function")
    df = _with_xp(derivative, "derivative")
    d2f = _with_xp(second_derivative, "second_derivative")

    def evaluate(z: Array, xp: Any, order: int) -> tuple[Array, ...]:
        out = (f(z, xp), df(z, xp), d2f(z, xp))
        return out[: order + 1]

    return _register(Activation(name, evaluate), overwrite=overwrite)


def get_activation(activation: str | Activation) -> Activation:
    """Look up an activation by name (or pass an :class:`Activation` through)."""
    if isinstance(activation, Activation):
        return activation
    if not isinstance(activation, str):
        raise TypeError(f"activation must be a name or an Activation, got {activation!r}")
    try:
        return _REGISTRY[activation]
    except KeyError:
        raise ValueError(
            f"unknown activation {activation!r}; known: {', '.join(sorted(_REGISTRY))} "
            "(add your own with xderiv.register_activation)"
        ) from None


def available_activations() -> list[str]:
    """Names of all registered activations."""
    return sorted(_REGISTRY)
