r"""Elementwise activations with their first and second derivatives.

Every built-in activation evaluates :math:`\sigma, \sigma', \sigma''` in one
fused call sharing intermediates, written so that nothing overflows or turns
into NaN for any finite ``z`` (checked at :math:`|z| = 10^4`): exponentials
only ever see :math:`-|z|`, and no formula subtracts two nearly equal numbers
where a stable form exists.  Differentiated by autodiff (torch, JAX: weight
gradients, ``jax.grad`` of a value), the formulas give the exact derivatives
at every ``z``, :math:`z = 0` included: there :math:`|z|` is written as
``where(z >= 0, z, -z)``, whose derivative is its branch's, not ``abs``'s 0.

=========  ==============================  ==============================  ==================================
name       :math:`\sigma(z)`               :math:`\sigma'(z)`              :math:`\sigma''(z)`
=========  ==============================  ==============================  ==================================
identity   :math:`z`                       1                               0
sigmoid    :math:`1/(1+e^{-z})`            :math:`\sigma(1-\sigma)`        :math:`\sigma'(1-2\sigma)`
tanh       :math:`\tanh z`                 :math:`\mathrm{sech}^2 z`       :math:`-2\tanh z\,\mathrm{sech}^2`
softplus   :math:`\log(1+e^{z})`           sigmoid                         sigmoid'
quadratic  :math:`z^2/2`                   :math:`z`                       1
sin        :math:`\sin z`                  :math:`\cos z`                  :math:`-\sin z`
silu       :math:`z\,\mathrm{sigmoid}(z)`  :math:`s + z s'`                :math:`2s' + z s''`
antitanh   :math:`\log(2\cosh z)`          :math:`\tanh z`                 :math:`\mathrm{sech}^2 z`
logcosh    :math:`\log\cosh z`             :math:`\tanh z`                 :math:`\mathrm{sech}^2 z`
gelu       :math:`z\,\Phi(z)`              :math:`\Phi + z\varphi`         :math:`\varphi\,(2 - z^2)`
gelu_tanh  :math:`z\,s(w)`                 :math:`s + z w' s'`             see :func:`gelu`
elu        :math:`z;\ e^z - 1`             :math:`1;\ e^z`                 :math:`0;\ e^z`
celu       :math:`z;\ e^z - 1`             :math:`1;\ e^z`                 :math:`0;\ e^z`
selu       :math:`\lambda\,\mathrm{elu}`   :math:`\lambda\,\mathrm{elu}'`  :math:`\lambda\,\mathrm{elu}''`
mish       :math:`z\,t`                    :math:`t + z s S`               :math:`S\,(2s + z(s' - 2ts^2))`
relu2      :math:`\max(z, 0)^2`            :math:`2\max(z, 0)`             :math:`2\,[z > 0]`
gaussian   :math:`e^{-z^2/2}`              :math:`-z\sigma`                :math:`(z^2 - 1)\,\sigma`
=========  ==============================  ==============================  ==================================

Here :math:`s, s', s''` are the sigmoid and its derivatives (for gelu_tanh at
:math:`w = 2\sqrt{2/\pi}\,(z + 0.044715 z^3)`, since :math:`\tfrac12(1 + \tanh\tfrac w2)
= s(w)`), :math:`\Phi, \varphi` the standard normal distribution and density,
and for mish :math:`t = \tanh(\mathrm{softplus}\,z)`, :math:`S = 1 - t^2`.
``a; b`` means ``a`` for :math:`z > 0` and ``b`` for :math:`z < 0` (for
:math:`z = 0` see below); ``selu`` is :math:`\lambda` times ``elu(alpha)``
with torch's constants :math:`\lambda, \alpha`.  The parametric forms (next
paragraph) rescale these: ``softplus(beta)`` is
:math:`\mathrm{softplus}(\beta z)/\beta`, ``sin(freq)`` :math:`\sin(\omega z)`,
``elu(alpha)`` :math:`\alpha(e^z - 1)` for :math:`z < 0`, ``celu(alpha)``
:math:`\alpha(e^{z/\alpha} - 1)`, ``gaussian(width)`` :math:`e^{-z^2/(2a^2)}`.

``antitanh`` is computed as :math:`|z| + \log(1 + e^{-2|z|}) = \log(2\cosh z)`,
exactly as the seed notebook, hessQuik and OT-Flow do, so their trained
weights port over unchanged.  ``logcosh`` is :math:`\log\cosh z =
\mathrm{antitanh}(z) - \log 2`: the constant offset shifts the pre-activations
of every later layer, so the two are **not** interchangeable for a given set
of weights (their derivatives agree).

Parametric activations
    :func:`softplus` (``beta``), :func:`sine` (``freq``), :func:`elu` and
    :func:`celu` (``alpha``), :func:`gaussian` (``width``) and :func:`gelu`
    (``approximate``) return an :class:`Activation` named canonically, e.g.
    ``"softplus(beta=2.0)"`` or ``"sin(freq=30.0)"``.  They are *not* added to
    the registry (no global side effects), the same parameters give the same
    object, and :func:`get_activation` reads such a name back, so saved
    networks load again.  With the default parameter each returns the plain
    registry entry (``softplus(1.0)`` is ``"softplus"``).

Non-smooth points (smooth branches documented)
    At :math:`z = 0` (where a zero bias and a zero input put every
    pre-activation) ``elu``, ``celu`` and ``selu`` return exactly what torch's
    autograd returns: :math:`\sigma'(0)` from the :math:`z < 0` branch
    (:math:`\alpha` for ``elu(alpha)``, 1 for ``celu``, :math:`\lambda\alpha`
    for ``selu``; :math:`\sigma'` is continuous for ``elu`` with
    :math:`\alpha = 1` and for ``celu``) and :math:`\sigma''(0) = 0`, from the
    :math:`z > 0` branch.  ``relu2`` has :math:`\sigma''(0) = 0`
    (:math:`2\,[z > 0]`); its :math:`\sigma, \sigma'` are continuous.

``gelu`` needs the error function, which the Array API standard does not
have: :math:`\Phi` is computed from standard operations with W. J. Cody's
rational Chebyshev approximations (Math. Comp. 23, 1969, the SPECFUN
``CALERF`` coefficients) and his splitting of :math:`e^{-z^2/2}`, to full
double precision and full *relative* precision in the lower tail
(:math:`\Phi(-30) \approx 4.9\cdot 10^{-198}` to a few ulps).

A user registers an activation of their own with :func:`register_activation`.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from .backends.namespace import Array, array_namespace_of
from .backends.primitives import has_autodiff
from .engine.series import compose

Fused = Callable[[Array, Any, int], tuple[Array, ...]]
After = Callable[[Array, tuple[Array, ...], Any], Array]

_LOG2 = math.log(2.0)
# Beyond |z| = _CLIP every exponential factor of the activations below is exactly 0 (in
# float32 too): their derivatives are evaluated at the clipped argument, which gives the same
# values and keeps z * 0 from becoming inf * 0 = NaN for z near the largest float.  Held as an
# int and passed to `clip` as float(_CLIP), which a tracer folds to a constant: torch.compile
# (dynamic=True) turns a float global into a graph input, on which array-api-compat's torch `clip`
# (a Python `math.isnan` check) cannot be traced; an int bound itself fails in older array-api-compat
# (an integer `iinfo` of the float dtype).  Literal bounds are constants to the tracer as they are.
_CLIP = 1000


@dataclass(frozen=True)
class Activation:
    """An elementwise activation :math:`\\sigma` with :math:`\\sigma'` and :math:`\\sigma''` (and, optionally, more).

    Immutable and stateless, so one instance is safely shared by many layers
    and threads.

    Parameters
    ----------
    name : str
        Registry name.
    evaluate : callable ``(z, xp, order) -> tuple``
        Returns ``(sigma,)``, ``(sigma, dsigma)`` or ``(sigma, dsigma, d2sigma)``
        for ``order`` 0, 1, 2, each with the shape of ``z``: the fused path every
        first- and second-order operator takes.
    linear : bool
        True only for the identity: the recursions then skip the
        multiplications by :math:`\\sigma' = 1` and the zero :math:`\\sigma''` terms.
    higher : callable ``(z, xp, order) -> tuple``, optional
        :math:`(\\sigma, \\sigma', \\dots, \\sigma^{(K)})` for any ``order`` :math:`K \\ge 0`,
        for Taylor mode (:func:`xderiv.taylor`).  Every built-in has one; without
        it, orders above 2 raise.
    """

    name: str
    evaluate: Fused = field(repr=False)
    linear: bool = False
    higher: Fused | None = field(default=None, repr=False)
    after: After | None = field(default=None, repr=False)
    r""":math:`\sigma^{(k+1)}(z)` from ``z`` and the ``parts`` :math:`(\sigma, \dots, \sigma^{(k)})`
    already evaluated there (:meth:`next_derivative`), used by the reverse pass on torch; None
    (the default) leaves that pass to autograd's derivative of ``evaluate``'s formulas."""
    kernel: str | None = field(default=None, repr=False)
    r"""CUDA-C body computing ``s``, ``d1``, ``d2`` (:math:`\sigma, \sigma', \sigma''`) from ``z``
    (all of type ``T``), the same formulas as ``evaluate``: on CuPy, orders 1 and 2 then take one
    elementwise kernel instead of one per operation.  None (the default): ``evaluate``'s operations."""

    def __call__(self, z: Array, xp: Any) -> Array:
        """:math:`\\sigma(z)`; on an array being differentiated (a jet), with its derivatives by the chain rule."""
        on_jet = getattr(z, "__xderiv_elementwise__", None)
        if on_jet is not None:
            return on_jet(lambda v, order: self.derivatives(v, array_namespace_of(v), order))
        return self.evaluate(z, xp, 0)[0]

    @property
    def max_order(self) -> int | None:
        """The highest derivative order available: None (any) when ``higher`` is given, else 2."""
        return None if self.higher is not None else 2

    def next_derivative(self, z: Array, parts: tuple[Array, ...], xp: Any) -> Array | None:
        r""":math:`\sigma^{(k+1)}(z)` given ``parts`` :math:`= (\sigma, \dots, \sigma^{(k)})` at ``z``.

        The derivative of every part at once (part :math:`j` has derivative part
        :math:`j + 1`), so that a reverse (or forward-mode) pass through
        :meth:`derivatives` costs a few elementwise operations instead of the
        derivative of each part's formula.  None when the activation has no such
        form (``after``): the caller then differentiates the formulas.  Built-ins:
        tanh, antitanh, logcosh and sin from the parts (e.g.
        :math:`\tanh^{(3)} = \mathrm{sech}^2 z\,(6 \tanh^2 z - 2)`); gelu, gelu_tanh,
        silu, mish and gaussian evaluated afresh by ``higher``, which costs less
        than autograd's derivative of their formulas.
        """
        return None if self.after is None else self.after(z, parts, xp)

    def derivatives(self, z: Array, xp: Any, order: int) -> tuple[Array, ...]:
        """:math:`(\\sigma, \\sigma', \\dots, \\sigma^{(\\mathrm{order})})` at ``z``.

        Orders up to 2 take the fused ``evaluate``; higher ones ``higher``.

        Raises
        ------
        ValueError
            For ``order > 2`` when the activation supplies no higher derivatives.
        """
        if order <= 2:
            return self.evaluate(z, xp, order)
        if self.higher is None:
            raise ValueError(order_error(self, order))
        return self.higher(z, xp, order)


def order_error(activation: Activation, order: int) -> str:
    """The message for an activation asked for derivatives beyond those it supplies."""
    return (
        f"activation {activation.name!r} supplies derivatives up to order 2 only, and order {order} was asked "
        "for; register it with xderiv.register_activation(..., nth_derivative=f) where f(z, k) (or f(z, xp, k)) "
        "returns its k-th derivative"
    )


def _abs(z: Array, xp: Any) -> Array:
    """|z|; with autodiff (torch, JAX) as ``where(z >= 0, z, -z)``, whose derivative at z = 0 is its branch's, +1.

    Autodiff gives ``abs`` the derivative sign(0) = 0 at z = 0, where the smooth activations below,
    written in |z| for stability, need their branch's: sigmoid'(0) would come out 0 instead of 1/4,
    and with it the weight gradients wherever a pre-activation is exactly 0 (zero biases at the
    origin).  Elsewhere ``abs`` itself, a third of the cost.
    """
    return xp.where(z >= 0, z, -z) if has_autodiff(xp) else xp.abs(z)


def _signed(z: Array, a: Array, xp: Any) -> Array:
    """``sign(z) * a`` with sign(0) = +1, the branch :func:`_abs` takes (``a`` vanishes at 0 where it is used)."""
    return xp.where(z >= 0, a, -a) if has_autodiff(xp) else xp.sign(z) * a


def _sigmoid_parts(z: Array, xp: Any, order: int, e: Array | None = None) -> tuple[Array, ...]:
    """Stable sigmoid and derivatives from ``e = exp(-|z|)``, ``r = 1/(1+e)``.

    sigmoid = r (z >= 0) or e r (z < 0); sigmoid' = e r^2;
    sigmoid'' = -sign(z) (1 - e) r sigmoid', with 1 - e = -expm1(-|z|).
    A caller that already has ``e`` passes it.
    """
    a = _abs(z, xp)
    if e is None:
        e = xp.exp(-a)
    r = 1.0 / (1.0 + e)
    s = xp.where(z >= 0, r, e * r)
    if order == 0:
        return (s,)
    ds = e * r * r
    if order == 1:
        return (s, ds)
    d2s = -_signed(z, -xp.expm1(-a), xp) * r * ds
    return (s, ds, d2s)


def _sech2(z: Array, xp: Any) -> Array:
    """sech^2 z = 4 e / (1 + e)^2 with e = exp(-2|z|): no overflow, full relative accuracy.

    (As (1 / cosh z)^2, z clipped below cosh's overflow, it takes fewer operations eagerly, but
    traced by XLA or inductor a tanh PINN training step took 1.3-3x as long.)
    """
    e = xp.exp(-2.0 * _abs(z, xp))
    q = 1.0 + e
    return 4.0 * e / (q * q)


def _clip(z: Array, xp: Any) -> Array:
    """``z`` clipped to ``[-_CLIP, _CLIP]`` (see ``_CLIP``)."""
    return xp.clip(z, min=-float(_CLIP), max=float(_CLIP))


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
    value = xp.where(z >= 0, z, xp.zeros_like(z)) + xp.log1p(xp.exp(-_abs(z, xp)))
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
    a = _abs(z, xp)
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


def _rescaled(
    z: Array, xp: Any, order: int, *, base: Fused, inner: float, coeffs: tuple[float, float, float]
) -> tuple[Array, ...]:
    r"""``c0 g(inner z)``, ``c1 g'(inner z)``, ``c2 g''(inner z)``, ... for a base activation ``g``.

    With ``coeffs = (c, c inner, c inner^2)`` these are :math:`\sigma(z) = c\,g(\mathrm{inner}\,z)`
    and its derivatives.  The caller passes the products, so that e.g. softplus(beta) gets exactly
    ``1`` for ``(1/beta) beta``; orders :math:`k > 2` (``base`` a ``higher`` function) take
    :math:`c_2\,\mathrm{inner}^{k-2}`.
    """
    parts = base(inner * z, xp, order)
    return tuple((coeffs[k] if k < 3 else coeffs[2] * inner ** (k - 2)) * p for k, p in enumerate(parts))


# --------------------------------------------------------------------------- the normal distribution

# W. J. Cody, "Rational Chebyshev approximations for the error function", Math. Comp. 23 (1969),
# as in his SPECFUN routine CALERF; coefficients highest degree first, for _horner.
# erf(x) = x N1(x^2)/D1(x^2) for |x| <= 0.46875;
_ERF_SPLIT = 0.46875
_ERF_N1 = (
    1.85777706184603153e-1,
    3.16112374387056560e00,
    1.13864154151050156e02,
    3.77485237685302021e02,
    3.20937758913846947e03,
)
_ERF_D1 = (1.0, 2.36012909523441209e01, 2.44024637934444173e02, 1.28261652607737228e03, 2.84423683343917062e03)
# erfc(x) = exp(-x^2) N2(x)/D2(x) for 0.46875 <= x <= 4;
_ERF_N2 = (
    2.15311535474403846e-8,
    5.64188496988670089e-1,
    8.88314979438837594e00,
    6.61191906371416295e01,
    2.98635138197400131e02,
    8.81952221241769090e02,
    1.71204761263407058e03,
    2.05107837782607147e03,
    1.23033935479799725e03,
)
_ERF_D2 = (
    1.0,
    1.57449261107098347e01,
    1.17693950891312499e02,
    5.37181101862009858e02,
    1.62138957456669019e03,
    3.29079923573345963e03,
    4.36261909014324716e03,
    3.43936767414372164e03,
    1.23033935480374942e03,
)
# erfc(x) = exp(-x^2) (1/sqrt(pi) - s N3(s)/D3(s)) / x, s = 1/x^2, for x > 4.
_ERF_N3 = (
    1.63153871373020978e-2,
    3.05326634961232344e-1,
    3.60344899949804439e-1,
    1.25781726111229246e-1,
    1.60837851487422766e-2,
    6.58749161529837803e-4,
)
_ERF_D3 = (
    1.0,
    2.56852019228982242e00,
    1.87295284992346047e00,
    5.27905102951428412e-1,
    6.05183413124413191e-2,
    2.33520497626869185e-3,
)
_INV_SQRT_PI = 1.0 / math.sqrt(math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_SQRT_HALF = math.sqrt(0.5)


def _horner(x: Array, coeffs: tuple[float, ...]) -> Array:
    """The polynomial with ``coeffs`` (highest degree first) at ``x``."""
    h = coeffs[0] * x + coeffs[1]
    for c in coeffs[2:]:
        h = h * x + c
    return h


def _exp_neg_square(y: Array, scale: float, xp: Any) -> Array:
    r""":math:`e^{-s y^2}` for :math:`s = 1` or :math:`1/2`, to full relative accuracy.

    Cody's splitting: with :math:`y_h = \lfloor 16|y| \rfloor / 16`, :math:`s y_h^2` is exact and
    :math:`e^{-s y^2} = e^{-s y_h^2} e^{-s (|y| - y_h)(|y| + y_h)}`, so the large exponent is not
    rounded (rounding :math:`s y^2 \approx 700` itself would cost 700 ulps of relative accuracy).
    """
    a = xp.clip(_abs(y, xp), max=float(_CLIP))
    high = xp.trunc(16.0 * a) / 16.0
    return xp.exp(-scale * high * high) * xp.exp(-scale * (a - high) * (a + high))


def _erf_small(x: Array, xp: Any) -> Array:
    """erf(x) for ``|x| <= 0.46875`` (other lanes: a finite value to be discarded)."""
    x = xp.clip(x, min=-1.0, max=1.0)  # the lanes kept are unchanged; the others stay finite
    t = x * x
    return x * _horner(t, _ERF_N1) / _horner(t, _ERF_D1)


def _erfc_ratio(a: Array, xp: Any) -> Array:
    """``exp(a^2) erfc(a)`` for ``a >= 0.46875`` (other lanes: a finite value to be discarded)."""
    mid = xp.clip(a, max=4.0)
    tail = xp.clip(a, min=4.0, max=float(_CLIP))
    s = 1.0 / (tail * tail)
    far = (_INV_SQRT_PI - s * _horner(s, _ERF_N3) / _horner(s, _ERF_D3)) / tail
    return xp.where(a <= 4.0, _horner(mid, _ERF_N2) / _horner(mid, _ERF_D2), far)


def _erfc_given(x: Array, exp_neg_x2: Array, xp: Any) -> Array:
    """erfc(x) given ``exp(-x^2)``, which the caller computes without rounding ``x^2``."""
    a = xp.abs(x)
    tail = exp_neg_x2 * _erfc_ratio(a, xp)  # erfc(|x|) for |x| > 0.46875
    return xp.where(a <= _ERF_SPLIT, 1.0 - _erf_small(x, xp), xp.where(x < 0, 2.0 - tail, tail))


def _erfc(x: Array, xp: Any) -> Array:
    """The complementary error function, full relative accuracy for every ``x``."""
    return _erfc_given(x, _exp_neg_square(x, 1.0, xp), xp)


def _erf(x: Array, xp: Any) -> Array:
    """The error function, full relative accuracy for every ``x``."""
    a = xp.abs(x)
    tail = _exp_neg_square(x, 1.0, xp) * _erfc_ratio(a, xp)
    return xp.where(a <= _ERF_SPLIT, _erf_small(x, xp), xp.sign(x) * (1.0 - tail))


def _normal_parts(z: Array, xp: Any) -> tuple[Array, Array]:
    r""":math:`(\Phi(z), \varphi(z))`, both to full relative accuracy, from one :math:`e^{-z^2/2}`.

    :math:`\Phi(z) = \mathrm{erfc}(-z/\sqrt 2)/2` with the exponential split in :math:`z` itself,
    so that the rounding of :math:`z/\sqrt 2` only reaches the slowly varying rational factor.
    """
    e = _exp_neg_square(z, 0.5, xp)
    return 0.5 * _erfc_given(-_SQRT_HALF * z, e, xp), _INV_SQRT_2PI * e


# --------------------------------------------------------------------------- more activations


def _gelu(z: Array, xp: Any, order: int) -> tuple[Array, ...]:
    cdf, pdf = _normal_parts(z, xp)
    value = z * cdf
    if order == 0:
        return (value,)
    zc = _clip(z, xp)
    d1 = cdf + zc * pdf
    if order == 1:
        return (value, d1)
    return (value, d1, pdf * (2.0 - zc * zc))


_GELU_TANH_C = math.sqrt(2.0 / math.pi)  # torch's kBeta
_GELU_TANH_K = 0.044715  # torch's kKappa


def _gelu_tanh(z: Array, xp: Any, order: int) -> tuple[Array, ...]:
    # 0.5 (1 + tanh u) = sigmoid(2u): the stable sigmoid parts of w = 2u give sigma and, through
    # sigmoid'(w) = sech^2(u) / 4, the derivatives with no 1 + tanh cancellation for z << 0.
    zc = _clip(z, xp)  # sigmoid(w) and its derivatives saturate exactly long before |z| = _CLIP
    z2 = zc * zc
    w = (2.0 * _GELU_TANH_C) * zc * (1.0 + _GELU_TANH_K * z2)
    e = xp.exp(-_abs(w, xp))
    s = _sigmoid_parts(w, xp, order, e)
    value = z * s[0]
    if order == 0:
        return (value,)
    dw = (2.0 * _GELU_TANH_C) * (1.0 + (3.0 * _GELU_TANH_K) * z2)
    d1 = s[0] + zc * dw * s[1]
    if order == 1:
        return (value, d1)
    # sigma'' = s'(w) [2 w' + z w'' + z w'^2 (1 - 2 s(w))], one rounding of s' for both terms;
    # 2 w' + z w'' = 2 a (1 + 6 k z^2) with a = 2 sqrt(2/pi); 1 - 2 s = s''/s' (no cancellation).
    inner = (4.0 * _GELU_TANH_C) * (1.0 + (6.0 * _GELU_TANH_K) * z2)
    one_minus_2s = -_signed(w, -xp.expm1(-_abs(w, xp)), xp) / (1.0 + e)  # tanh(-w/2), no cancellation
    return (value, d1, s[1] * (inner + (zc * dw * dw) * one_minus_2s))


def _elu_family(
    z: Array, xp: Any, order: int, *, slope: float, inner: float, coeffs: tuple[float, float, float]
) -> tuple[Array, ...]:
    r"""ELU, CELU and SELU: :math:`\sigma, \sigma', \sigma''` are ``slope z, slope, 0`` for :math:`z > 0`.

    For :math:`z < 0` they are ``c0 expm1(inner z)``, ``c1 exp(inner z)``, ``c2 exp(inner z)``.
    At :math:`z = 0`, as torch's autograd: :math:`\sigma' = c_1` (left branch) and
    :math:`\sigma'' = 0` (right branch).  The exponentials see :math:`\min(z, 0)` only.
    """
    pos = z > 0
    zn = inner * xp.minimum(z, xp.zeros_like(z))
    value = xp.where(pos, slope * z, coeffs[0] * xp.expm1(zn))
    if order == 0:
        return (value,)
    ex = xp.exp(zn)
    d1 = xp.where(pos, xp.full_like(z, slope), coeffs[1] * ex)
    if order == 1:
        return (value, d1)
    return (value, d1, xp.where(z < 0, coeffs[2] * ex, xp.zeros_like(z)))


# torch's SELU constants (Klambauer et al., 2017), to double precision.
_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def _tanh_softplus(z: Array, xp: Any, order: int) -> tuple[Array, Array | None, Array]:
    """``(T, sech^2(softplus z), e)`` with T = tanh(softplus z) and e = exp(-|z|); sech^2 only for ``order >= 1``.

    With q = e^z: T = q(q + 2) / (q(q + 2) + 2).  In e, numerator and gap = denominator - numerator
    are (1 + 2e, 2e^2) for z >= 0 and (e(e + 2), 2) for z < 0, all positive: T and
    sech^2 = (1 - T)(1 + T) = gap (num + den) / den^2 to full accuracy in both tails.
    """
    e = xp.exp(-_abs(z, xp))
    pos = z >= 0
    num = xp.where(pos, 1.0 + 2.0 * e, e * (e + 2.0))
    gap = xp.where(pos, 2.0 * e * e, xp.full_like(z, 2.0))
    den = num + gap
    sech2 = gap * (num + den) / (den * den) if order >= 1 else None
    return num / den, sech2, e


def _mish(z: Array, xp: Any, order: int) -> tuple[Array, ...]:
    t, sech2, e = _tanh_softplus(z, xp, order)
    value = z * t
    if order == 0:
        return (value,)
    assert sech2 is not None
    s = _sigmoid_parts(z, xp, order - 1, e)
    zc = _clip(z, xp)
    d1 = t + zc * s[0] * sech2
    if order == 1:
        return (value, d1)
    return (value, d1, sech2 * (2.0 * s[0] + zc * (s[1] - 2.0 * t * s[0] * s[0])))


def _relu2(z: Array, xp: Any, order: int) -> tuple[Array, ...]:
    p = xp.maximum(z, xp.zeros_like(z))
    value = p * p
    if order == 0:
        return (value,)
    return (value, 2.0 * p, 2.0 * xp.astype(z > 0, z.dtype))[: order + 1]


def _gaussian(z: Array, xp: Any, order: int) -> tuple[Array, ...]:
    g = _exp_neg_square(z, 0.5, xp)
    if order == 0:
        return (g,)
    zc = _clip(z, xp)
    d1 = -zc * g
    if order == 1:
        return (g, d1)
    return (g, d1, (zc - 1.0) * (zc + 1.0) * g)


# --------------------------------------------------------------------------- derivatives of any order
#
# The ``higher`` functions return (sigma, sigma', ..., sigma^(K)) for any K, from closed forms or
# exact recurrences whose coefficients are integers computed here (pure Python, no cache):
#
# - tanh: tanh^(k) = sech^2 z * Q_k(tanh z) with Q_1 = 1, Q_{k+1}(t) = d/dt [(1 - t^2) Q_k(t)]; the
#   factor sech^2 is computed directly (no 1 - t^2 cancellation), and Q_k(+-1) != 0, so the tails keep
#   full relative accuracy.  sigmoid^(k)(z) = 2^(1-k) sigmoid'(z) Q_k(tanh(z/2)) for k >= 1.
# - softplus' = sigmoid, antitanh' = logcosh' = tanh: their derivatives shift by one.
# - silu = z s, gelu = z Phi, mish = z T: (z g)^(k) = z g^(k) + k g^(k-1).
# - Phi^(k) = phi^(k-1) = (-1)^(k-1) He_{k-1} phi (probabilists' Hermite polynomials), so
#   gelu^(k) = (-1)^(k-1) phi (He_k - He_{k-2}) for k >= 2, and gaussian^(k) = (-1)^k He_k sigma.
# - gelu_tanh = z s(w(z)) with a cubic w and mish's T = tanh(softplus z): the inner function's
#   Taylor coefficients composed with the outer one's derivatives by Faa di Bruno's formula
#   (xderiv.engine.series.compose), elementwise.
# - sin: the cycle sin, cos, -sin, -cos; ELU-type: c_2 inner^(k-2) e^(inner z) for z < 0, 0 for z >= 0;
#   polynomials (quadratic, relu2, identity): their finitely many nonzero derivatives, then zeros.


def _shift(poly: list[int]) -> list[int]:
    """``t * poly`` (coefficients lowest degree first)."""
    return [0] + poly


def _derivative(poly: list[int]) -> list[int]:
    return [k * c for k, c in enumerate(poly)][1:] or [0]


def _tanh_polynomials(order: int) -> list[list[int]]:
    """``[Q_1, ..., Q_order]`` (lowest degree first): tanh^(k) = sech^2 * Q_k(tanh)."""
    polys = [[1]]
    while len(polys) < order:
        q = polys[-1]
        one_minus = [a - b for a, b in zip(q + [0, 0], [0, 0] + q)]  # (1 - t^2) q
        polys.append(_derivative(one_minus))
    return polys[:order]


def _hermite(order: int) -> list[list[int]]:
    """``[He_0, ..., He_order]`` (lowest degree first): He_{k+1} = x He_k - k He_{k-1}."""
    polys = [[1], [0, 1]]
    while len(polys) <= order:
        k = len(polys) - 1
        a, b = _shift(polys[k]), polys[k - 1] + [0, 0]
        polys.append([x - k * y for x, y in zip(a, b)])
    return polys[: order + 1]


def _parity_polynomial(poly: list[int], t: Array, t2: Array) -> Array | float:
    """``poly(t)`` for a polynomial with only even or only odd powers, by Horner's rule in ``t2 = t^2``."""
    odd = any(poly[1::2])
    half = [float(c) for c in (poly[1::2] if odd else poly[0::2])]
    while len(half) > 1 and half[-1] == 0.0:
        half.pop()
    if len(half) == 1:
        return half[0] * t if odd else half[0]
    h = half[-1] * t2 + half[-2]
    for c in reversed(half[:-2]):
        h = h * t2 + c
    return t * h if odd else h


def _tanh_tail(t: Array, sech2: Array, order: int) -> list[Array]:
    """``[tanh', ..., tanh^(order)]`` at the point where tanh is ``t`` and sech^2 is ``sech2``."""
    t2 = t * t
    return [sech2 * _parity_polynomial(q, t, t2) for q in _tanh_polynomials(order)]


def _tanh_after(z: Array, parts: tuple[Array, ...], xp: Any) -> Array:
    """tanh^(k+1) = sech^2 Q_{k+1}(tanh) from parts (tanh, sech^2, ...); sech^2 itself after k = 0."""
    k = len(parts) - 1
    if k == 0:
        return _sech2(z, xp)
    t = parts[0]
    return parts[1] * _parity_polynomial(_tanh_polynomials(k + 1)[k], t, t * t)


def _tanh_derivative_after(z: Array, parts: tuple[Array, ...], xp: Any) -> Array:
    """For antitanh and logcosh, whose derivatives are tanh and its derivatives."""
    return xp.tanh(z) if len(parts) == 1 else _tanh_after(z, parts[1:], xp)


def _sin_after(z: Array, parts: tuple[Array, ...], xp: Any) -> Array:
    """sin^(k+1) = -sin^(k-1) (the cycle sin, cos, -sin, -cos); cos after k = 0."""
    return xp.cos(z) if len(parts) == 1 else -parts[-2]


def _evaluated_after(z: Array, parts: tuple[Array, ...], xp: Any, *, higher: Fused) -> Array:
    """sigma^(k+1) evaluated afresh by the any-order function ``higher`` (the parts unused)."""
    k = len(parts)
    return higher(z, xp, k)[k]


def _tanh_higher(z: Array, xp: Any, order: int) -> tuple[Array, ...]:
    t = xp.tanh(z)
    return (t,) + tuple(_tanh_tail(t, _sech2(z, xp), order))


def _sigmoid_higher(z: Array, xp: Any, order: int, e: Array | None = None) -> tuple[Array, ...]:
    a = _abs(z, xp)
    if e is None:
        e = xp.exp(-a)
    r = 1.0 / (1.0 + e)
    s = xp.where(z >= 0, r, e * r)
    if order == 0:
        return (s,)
    ds = e * r * r
    th = _signed(z, -xp.expm1(-a), xp) * r  # tanh(z/2), from e = exp(-|z|)
    th2 = th * th
    polys = _tanh_polynomials(order)
    return (s, ds) + tuple(
        (2.0 ** (1 - k) * ds) * _parity_polynomial(polys[k - 1], th, th2) for k in range(2, order + 1)
    )


def _softplus_higher(z: Array, xp: Any, order: int) -> tuple[Array, ...]:
    value = _softplus(z, xp, 0)[0]
    return (value,) + (_sigmoid_higher(z, xp, order - 1) if order else ())


def _times_z(z: Array, xp: Any, g: tuple[Array, ...]) -> tuple[Array, ...]:
    """Derivatives of ``z * g(z)`` from those of ``g``: ``z g^(k) + k g^(k-1)`` (``z`` clipped past k = 0)."""
    zc = _clip(z, xp)
    return (z * g[0],) + tuple(zc * g[k] + k * g[k - 1] for k in range(1, len(g)))


def _silu_higher(z: Array, xp: Any, order: int) -> tuple[Array, ...]:
    return _times_z(z, xp, _sigmoid_higher(z, xp, order))


def _quadratic_higher(z: Array, xp: Any, order: int) -> tuple[Array, ...]:
    parts = (0.5 * z * z, z, xp.ones_like(z))
    return (parts + tuple(xp.zeros_like(z) for _ in range(order - 2)))[: order + 1]


def _identity_higher(z: Array, xp: Any, order: int) -> tuple[Array, ...]:
    parts = (z, xp.ones_like(z))
    return (parts + tuple(xp.zeros_like(z) for _ in range(order - 1)))[: order + 1]


def _sin_higher(z: Array, xp: Any, order: int) -> tuple[Array, ...]:
    s = xp.sin(z)
    if order == 0:
        return (s,)
    c = xp.cos(z)
    cycle = (s, c, -s, -c)
    return tuple(cycle[k % 4] for k in range(order + 1))


def _antitanh_higher(z: Array, xp: Any, order: int) -> tuple[Array, ...]:
    return (_log2cosh(z, xp),) + (_tanh_higher(z, xp, order - 1) if order else ())


def _logcosh_higher(z: Array, xp: Any, order: int) -> tuple[Array, ...]:
    return (_logcosh(z, xp, 0)[0],) + (_tanh_higher(z, xp, order - 1) if order else ())


def _gelu_higher(z: Array, xp: Any, order: int) -> tuple[Array, ...]:
    cdf, pdf = _normal_parts(z, xp)
    if order == 0:
        return (z * cdf,)
    zc = _clip(z, xp)
    z2 = zc * zc
    he = _hermite(order)
    tail = tuple(
        (-1.0) ** (k - 1) * pdf * _parity_polynomial([a - b for a, b in zip(he[k], he[k - 2] + [0, 0])], zc, z2)
        for k in range(2, order + 1)
    )
    return (z * cdf, cdf + zc * pdf) + tail


def _gaussian_higher(z: Array, xp: Any, order: int) -> tuple[Array, ...]:
    g = _exp_neg_square(z, 0.5, xp)
    zc = _clip(z, xp)
    z2 = zc * zc
    he = _hermite(order)
    return (g,) + tuple((-1.0) ** k * g * _parity_polynomial(he[k], zc, z2) for k in range(1, order + 1))


def _relu2_higher(z: Array, xp: Any, order: int) -> tuple[Array, ...]:
    parts = _relu2(z, xp, min(order, 2))
    return parts + tuple(xp.zeros_like(z) for _ in range(order - 2))


def _elu_family_higher(
    z: Array, xp: Any, order: int, *, slope: float, inner: float, coeffs: tuple[float, float, float]
) -> tuple[Array, ...]:
    parts = _elu_family(z, xp, min(order, 2), slope=slope, inner=inner, coeffs=coeffs)
    if order <= 2:
        return parts
    ex = xp.exp(inner * xp.minimum(z, xp.zeros_like(z)))
    neg = z < 0
    zero = xp.zeros_like(z)
    return parts + tuple(xp.where(neg, (coeffs[2] * inner ** (k - 2)) * ex, zero) for k in range(3, order + 1))


def _series_times_z(z: Array, xp: Any, g: list[Array], order: int) -> tuple[Array, ...]:
    """Derivatives of ``z g(z)`` from the normalised Taylor coefficients ``g`` of ``g`` at ``z``."""
    zc = _clip(z, xp)
    out = [z * g[0]]
    factorial = 1.0
    for k in range(1, order + 1):
        factorial *= k
        out.append(factorial * (zc * g[k] + g[k - 1]))
    return tuple(out)


def _gelu_tanh_higher(z: Array, xp: Any, order: int) -> tuple[Array, ...]:
    zc = _clip(z, xp)
    z2 = zc * zc
    w = (2.0 * _GELU_TANH_C) * zc * (1.0 + _GELU_TANH_K * z2)
    s = _sigmoid_higher(w, xp, order)
    if order == 0:
        return (z * s[0],)
    # w(z + t) = w + w1 t + w2 t^2 + w3 t^3 (normalised), composed with the sigmoid's derivatives at w
    w1 = (2.0 * _GELU_TANH_C) * (1.0 + (3.0 * _GELU_TANH_K) * z2)
    w2 = (6.0 * _GELU_TANH_C * _GELU_TANH_K) * zc
    w3 = xp.full_like(z, 2.0 * _GELU_TANH_C * _GELU_TANH_K)
    inner = [None, w1, w2, w3] + [None] * (order - 3)
    c = [None] + [s[j] / math.factorial(j) for j in range(1, order + 1)]
    g = compose(c, inner[: order + 1], order)
    return _series_times_z(z, xp, [s[0]] + g[1:], order)  # type: ignore[list-item]


def _mish_higher(z: Array, xp: Any, order: int) -> tuple[Array, ...]:
    # T = tanh(softplus z): softplus' Taylor coefficients s^(k-1)/k! composed with tanh's derivatives,
    # sech^2(softplus) * Q_j(T) (full accuracy in both tails, see _tanh_softplus).
    t, sech2, e = _tanh_softplus(z, xp, order)
    if order == 0:
        return (z * t,)
    assert sech2 is not None
    s = _sigmoid_higher(z, xp, order - 1, e)
    tails = _tanh_tail(t, sech2, order)
    c = [None] + [tails[j - 1] / math.factorial(j) for j in range(1, order + 1)]
    inner = [None] + [s[k - 1] / math.factorial(k) for k in range(1, order + 1)]
    g = compose(c, inner, order)
    return _series_times_z(z, xp, [t] + g[1:], order)  # type: ignore[list-item]


_REGISTRY: dict[str, Activation] = {}


def _register(activation: Activation, overwrite: bool = False) -> Activation:
    if activation.name in _REGISTRY and not overwrite:
        raise ValueError(f"activation {activation.name!r} is already registered; pass overwrite=True to replace it")
    _REGISTRY[activation.name] = activation
    return activation


# The built-ins, kept here too so that a factory's default parameter gives the built-in even
# after a user re-registers its name.
def _elu_pair(slope: float, inner: float, coeffs: tuple[float, float, float]) -> tuple[Fused, Fused]:
    return (
        partial(_elu_family, slope=slope, inner=inner, coeffs=coeffs),
        partial(_elu_family_higher, slope=slope, inner=inner, coeffs=coeffs),
    )


_BUILTIN_FUNCTIONS: list[tuple[str, Fused, Fused]] = [
    ("sigmoid", _sigmoid_parts, _sigmoid_higher),
    ("tanh", _tanh, _tanh_higher),
    ("softplus", _softplus, _softplus_higher),
    ("quadratic", _quadratic, _quadratic_higher),
    ("sin", _sin, _sin_higher),
    ("silu", _silu, _silu_higher),
    ("antitanh", _antitanh, _antitanh_higher),
    ("logcosh", _logcosh, _logcosh_higher),
    ("gelu", _gelu, _gelu_higher),
    ("gelu_tanh", _gelu_tanh, _gelu_tanh_higher),
    ("elu", *_elu_pair(1.0, 1.0, (1.0, 1.0, 1.0))),
    ("celu", *_elu_pair(1.0, 1.0, (1.0, 1.0, 1.0))),
    ("selu", *_elu_pair(_SELU_SCALE, 1.0, (_SELU_SCALE * _SELU_ALPHA,) * 3)),
    ("mish", _mish, _mish_higher),
    ("relu2", _relu2, _relu2_higher),
    ("gaussian", _gaussian, _gaussian_higher),
]
# The reverse pass's sigma^(k+1) (Activation.after): from the parts in a few operations where it can
# be, else evaluated afresh where that measured faster than autograd's derivative of the formulas (a
# 3-64-64-1 PINN training step with the activation, torch, one core: gelu -23 %, silu, mish,
# gelu_tanh, gaussian -15 %; sigmoid, softplus, elu and relu2 gained nothing and keep autograd's).
_AFTER: dict[str, After] = {
    "tanh": _tanh_after,
    "antitanh": _tanh_derivative_after,
    "logcosh": _tanh_derivative_after,
    "sin": _sin_after,
}
_EVALUATED_AFTER = ("gelu", "gelu_tanh", "silu", "mish", "gaussian")
# CuPy's one-kernel parts (Activation.kernel): the formulas above, operation for operation and in
# their order, so that the kernel agrees with the operations to round-off (tests/internals/test_primitives.py
# checks each as a kernel in the CuPy session, and as host C++ wherever a compiler is).
_KERNELS: dict[str, str] = {
    "tanh": "T e = exp(-2 * fabs(z)); T q = 1 + e; s = tanh(z); d1 = 4 * e / (q * q); d2 = -2 * s * d1;",
    "sigmoid": (
        "T a = fabs(z); T e = exp(-a); T r = 1 / (1 + e); s = z >= 0 ? r : e * r; d1 = e * r * r;"
        " T g = (z > 0) - (z < 0); d2 = -(g * -expm1(-a)) * r * d1;"
    ),
    "softplus": (
        "T a = fabs(z); T e = exp(-a); T r = 1 / (1 + e); s = (z >= 0 ? z : T(0)) + log1p(e);"
        " d1 = z >= 0 ? r : e * r; d2 = e * r * r;"
    ),
    "sin": "s = sin(z); d1 = cos(z); d2 = -s;",
}
_BUILTIN: dict[str, Activation] = {
    name: Activation(
        name,
        fn,
        higher=up,
        after=_AFTER.get(name, partial(_evaluated_after, higher=up) if name in _EVALUATED_AFTER else None),
        kernel=_KERNELS.get(name),
    )
    for name, fn, up in _BUILTIN_FUNCTIONS
}
_BUILTIN["identity"] = Activation("identity", _identity, linear=True, higher=_identity_higher)
for _activation in _BUILTIN.values():
    _register(_activation)


# --------------------------------------------------------------------------- parametric activations

# Factory results by (kind, parameter value): the same parameters give the same object.
_MADE: dict[tuple[str, float], Activation] = {}


def _parameter(kind: str, name: str, value: Any, *, positive: bool) -> float:
    """``value`` as a float, checked: finite, and positive when ``positive``; errors name the argument."""
    if isinstance(value, (bool, str, bytes)):
        raise TypeError(f"{kind}: {name} must be a real number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{kind}: {name} must be a real number, got {value!r}") from None
    if positive and not (number > 0.0 and math.isfinite(number)):
        raise ValueError(f"{kind}: {name} must be a positive finite number, got {value!r}")
    if not math.isfinite(number):
        raise ValueError(f"{kind}: {name} must be a finite number, got {value!r}")
    return number + 0.0  # -0.0 -> 0.0: one object, one name


def _made(kind: str, name: str, value: float, functions: Callable[[], tuple[Fused, Fused]]) -> Activation:
    """The cached ``Activation`` named ``kind(name=value)``, built from ``functions()`` (fused, higher) on first use."""
    key = (kind, value)
    act = _MADE.get(key)
    if act is None:
        fused, higher = functions()
        act = _MADE.setdefault(key, Activation(f"{kind}({name}={value!r})", fused, higher=higher))
    return act


def _rescaled_pair(base: Fused, higher: Fused, inner: float, coeffs: tuple[float, float, float]) -> tuple[Fused, Fused]:
    """The fused and any-order functions of :math:`c\\,g(\\mathrm{inner}\\,z)` (see :func:`_rescaled`)."""
    return (
        partial(_rescaled, base=base, inner=inner, coeffs=coeffs),
        partial(_rescaled, base=higher, inner=inner, coeffs=coeffs),
    )


def softplus(beta: float = 1.0) -> Activation:
    r"""Softplus with sharpness ``beta``: :math:`\sigma(z) = \log(1 + e^{\beta z}) / \beta`.

    :math:`\sigma'(z) = \mathrm{sigmoid}(\beta z)`,
    :math:`\sigma''(z) = \beta\,\mathrm{sigmoid}'(\beta z)`.  torch's and hessQuik's
    ``Softplus(beta)``.

    Parameters
    ----------
    beta : float, default 1.0
        Positive and finite.

    Returns
    -------
    Activation
        Named ``"softplus(beta=<beta>)"``; ``beta = 1`` gives the built-in ``"softplus"``.

    Notes
    -----
    torch and hessQuik switch to the identity where :math:`\beta z` exceeds their ``threshold``
    (default 20); xderiv evaluates the exact function everywhere, so values there differ by at
    most :math:`\log(1 + e^{-20})/\beta \approx 2\cdot 10^{-9}/\beta`.
    """
    beta = _parameter("softplus", "beta", beta, positive=True)
    if beta == 1.0:
        return _BUILTIN["softplus"]
    return _made(
        "softplus", "beta", beta, lambda: _rescaled_pair(_softplus, _softplus_higher, beta, (1.0 / beta, 1.0, beta))
    )


def sine(freq: float = 1.0) -> Activation:
    r"""Sine with frequency ``freq`` (SIREN): :math:`\sigma(z) = \sin(\omega z)`.

    :math:`\sigma'(z) = \omega\cos(\omega z)`, :math:`\sigma''(z) = -\omega^2 \sin(\omega z)`.

    Parameters
    ----------
    freq : float, default 1.0
        :math:`\omega`, finite (SIREN uses 30 in its first layer).

    Returns
    -------
    Activation
        Named ``"sin(freq=<freq>)"``; ``freq = 1`` gives the built-in ``"sin"``.

    Notes
    -----
    Like every sine of an argument beyond the float range, the result is NaN where
    :math:`\omega z` overflows (:math:`|z| > 1.8\cdot 10^{308}/|\omega|`).
    """
    freq = _parameter("sin", "freq", freq, positive=False)
    if freq == 1.0:
        return _BUILTIN["sin"]
    return _made("sin", "freq", freq, lambda: _rescaled_pair(_sin, _sin_higher, freq, (1.0, freq, freq * freq)))


def elu(alpha: float = 1.0) -> Activation:
    r"""ELU: :math:`\sigma(z) = z` for :math:`z > 0`, :math:`\alpha(e^z - 1)` for :math:`z \le 0`.

    :math:`\sigma' = 1` or :math:`\alpha e^z`, :math:`\sigma'' = 0` or :math:`\alpha e^z`;
    at :math:`z = 0` what torch's autograd of ``F.elu`` gives: :math:`\sigma'(0) = \alpha`
    (left branch), :math:`\sigma''(0) = 0` (right branch).

    Parameters
    ----------
    alpha : float, default 1.0
        Positive and finite.

    Returns
    -------
    Activation
        Named ``"elu(alpha=<alpha>)"``; ``alpha = 1`` gives the built-in ``"elu"``.
    """
    alpha = _parameter("elu", "alpha", alpha, positive=True)
    if alpha == 1.0:
        return _BUILTIN["elu"]
    return _made("elu", "alpha", alpha, lambda: _elu_pair(1.0, 1.0, (alpha,) * 3))


def celu(alpha: float = 1.0) -> Activation:
    r"""CELU: :math:`\sigma(z) = z` for :math:`z > 0`, :math:`\alpha(e^{z/\alpha} - 1)` for :math:`z \le 0`.

    :math:`\sigma' = 1` or :math:`e^{z/\alpha}`, :math:`\sigma'' = 0` or :math:`e^{z/\alpha}/\alpha`;
    at :math:`z = 0` what torch's autograd of ``F.celu`` gives: :math:`\sigma'(0) = 1`,
    :math:`\sigma''(0) = 0` (right branch).

    Parameters
    ----------
    alpha : float, default 1.0
        Positive and finite.

    Returns
    -------
    Activation
        Named ``"celu(alpha=<alpha>)"``; ``alpha = 1`` gives the built-in ``"celu"``.
    """
    alpha = _parameter("celu", "alpha", alpha, positive=True)
    if alpha == 1.0:
        return _BUILTIN["celu"]
    return _made(
        "celu",
        "alpha",
        alpha,
        lambda: _elu_pair(1.0, 1.0 / alpha, (alpha, 1.0, 1.0 / alpha)),
    )


def gaussian(width: float = 1.0) -> Activation:
    r"""Gaussian bump of width :math:`a`: :math:`\sigma(z) = e^{-z^2/(2a^2)}`.

    With :math:`y = z/a`: :math:`\sigma' = -(y/a)\,\sigma`, :math:`\sigma'' = (y^2 - 1)\,\sigma/a^2`.
    The built-in ``"gaussian"`` is :math:`a = 1`, :math:`e^{-z^2/2}` (peak 1, not a normalised
    density), evaluated to full relative accuracy in the tails.

    Parameters
    ----------
    width : float, default 1.0
        :math:`a`, positive and finite.

    Returns
    -------
    Activation
        Named ``"gaussian(width=<width>)"``; ``width = 1`` gives the built-in ``"gaussian"``.
    """
    width = _parameter("gaussian", "width", width, positive=True)
    if width == 1.0:
        return _BUILTIN["gaussian"]
    inv = 1.0 / width
    return _made(
        "gaussian", "width", width, lambda: _rescaled_pair(_gaussian, _gaussian_higher, inv, (1.0, inv, inv * inv))
    )


def gelu(approximate: str = "none") -> Activation:
    r"""GELU, exact or with torch's tanh approximation.

    ``approximate="none"`` (the built-in ``"gelu"``, torch's ``F.gelu``):
    :math:`\sigma(z) = z\,\Phi(z)`, :math:`\sigma' = \Phi(z) + z\varphi(z)`,
    :math:`\sigma'' = \varphi(z)(2 - z^2)`, with :math:`\Phi, \varphi` the standard normal
    distribution and density (computed with Cody's rational approximations of erfc; full
    relative accuracy also for :math:`z \ll 0`, where :math:`1 + \mathrm{erf}` would cancel).

    ``approximate="tanh"`` (the built-in ``"gelu_tanh"``, ``F.gelu(approximate="tanh")``):
    :math:`\sigma(z) = \tfrac12 z (1 + \tanh u)` with :math:`u = \sqrt{2/\pi}\,(z + 0.044715 z^3)`,
    and the exact derivatives of that formula, computed from
    :math:`\tfrac12(1 + \tanh u) = \mathrm{sigmoid}(2u)`: :math:`\sigma' = s + 2 z u' s'`,
    :math:`\sigma'' = 2 s'(2u' + z u'') + 4 z u'^2 s''` with :math:`s^{(k)}` at :math:`2u`.

    Parameters
    ----------
    approximate : {"none", "tanh"}

    Returns
    -------
    Activation
    """
    if approximate == "none":
        return _BUILTIN["gelu"]
    if approximate == "tanh":
        return _BUILTIN["gelu_tanh"]
    raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


# Canonical name "kind(parameter=value)" -> factory, for get_activation.
_PARAMETRIC: dict[str, tuple[str, Callable[[float], Activation]]] = {
    "softplus": ("beta", softplus),
    "sin": ("freq", sine),
    "elu": ("alpha", elu),
    "celu": ("alpha", celu),
    "gaussian": ("width", gaussian),
}
_CANONICAL = re.compile(r"^\s*(\w+)\(\s*(\w+)\s*=\s*([^()=,\s]+)\s*\)\s*$")


def _parse_parametric(name: str) -> Activation | None:
    """The activation a canonical parametric name describes, or None when ``name`` is not one."""
    m = _CANONICAL.match(name)
    if m is None or m.group(1) not in _PARAMETRIC or _PARAMETRIC[m.group(1)][0] != m.group(2):
        return None
    kind, param, text = m.groups()
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"activation {name!r}: {param}={text!r} is not a number") from None
    return _PARAMETRIC[kind][1](value)


def _positional(fn: Callable[..., Any]) -> int | None:
    """How many positional arguments ``fn`` takes (None when its signature cannot be read)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(p.kind in kinds for p in params)


def _like(out: Any, z: Array, xp: Any) -> Array:
    """A user function's result as an array of ``z``'s shape: a number (a constant derivative such as
    ``lambda z: 2.0``) or a 0-d array is spread over ``z``."""
    if isinstance(out, (int, float)) and not isinstance(out, bool):
        return xp.full_like(z, float(out))
    if getattr(out, "ndim", None) == 0:
        return xp.zeros_like(z) + out
    return out


def _with_xp(fn: Callable[..., Array], what: str) -> Callable[[Array, Any], Array]:
    """Accept user functions written as ``f(z)`` or ``f(z, xp)``; results of shape ``z.shape`` (:func:`_like`).

    A ufunc of one input (``np.tanh``, whose signature also lists ``out``) and a callable whose
    signature cannot be read (``torch.tanh``) are ``f(z)``.
    """
    n = 1 if getattr(fn, "nin", None) == 1 else _positional(fn)
    if n is not None and n >= 2:
        return lambda z, xp: _like(fn(z, xp), z, xp)
    if n is None or n == 1:
        return lambda z, xp: _like(fn(z), z, xp)
    raise TypeError(f"{what} must be a callable f(z) or f(z, xp), got {fn!r}")


def _nth_with_xp(fn: Callable[..., Array]) -> Callable[[Array, Any, int], Array]:
    """Accept a user's k-th derivative written as ``f(z, k)`` or ``f(z, xp, k)``; results as :func:`_like`."""
    n = _positional(fn)
    if n is not None and n >= 3:
        return lambda z, xp, k: _like(fn(z, xp, k), z, xp)
    if n == 2:
        return lambda z, xp, k: _like(fn(z, k), z, xp)
    raise TypeError(f"nth_derivative must be a callable f(z, k) or f(z, xp, k), got {fn!r}")


def register_activation(
    name: str,
    function: Callable[..., Array],
    derivative: Callable[..., Array],
    second_derivative: Callable[..., Array],
    *,
    nth_derivative: Callable[..., Array] | None = None,
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
        backend-agnostic, e.g. ``lambda z, xp: xp.exp(-z * z)``).  A one-input
        ufunc such as ``np.tanh`` is an ``f(z)``; a constant derivative may be
        a number (``lambda z: 2.0``).
    nth_derivative : callable, optional
        :math:`\\sigma^{(k)}` for any ``k >= 3``, as ``f(z, k)`` or ``f(z, xp, k)``
        (``k`` a Python int); called for ``k = 3, ..., K`` when Taylor mode
        (:func:`xderiv.taylor`, :func:`xderiv.biharmonic`, :func:`xderiv.partial`)
        asks for order ``K > 2``.  Without it those orders raise a ``ValueError``
        naming the activation; every operator up to second order works either way.
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

    higher: Fused | None = None
    if nth_derivative is not None:
        nth = _nth_with_xp(nth_derivative)

        def higher(z: Array, xp: Any, order: int) -> tuple[Array, ...]:
            return evaluate(z, xp, min(order, 2)) + tuple(nth(z, xp, k) for k in range(3, order + 1))

    return _register(Activation(name, evaluate, higher=higher), overwrite=overwrite)


def get_activation(activation: str | Activation) -> Activation:
    """Look up an activation by name (or pass an :class:`Activation` through).

    Parameters
    ----------
    activation : str or Activation
        A registered name (:func:`available_activations`) or the canonical name of a parametric
        activation, e.g. ``"softplus(beta=2.0)"``, ``"sin(freq=30.0)"``, ``"elu(alpha=0.5)"``,
        ``"celu(alpha=0.5)"``, ``"gaussian(width=0.5)"`` (the ``name`` of what :func:`softplus`,
        :func:`sine`, :func:`elu`, :func:`celu`, :func:`gaussian` return).

    Returns
    -------
    Activation

    Raises
    ------
    ValueError
        For an unknown name or an invalid parameter.
    """
    if isinstance(activation, Activation):
        return activation
    if not isinstance(activation, str):
        raise TypeError(f"activation must be a name or an Activation, got {activation!r}")
    found = _REGISTRY.get(activation)
    if found is None:
        found = _parse_parametric(activation)
    if found is None:
        parametric = ", ".join(f"{kind}({param}=...)" for kind, (param, _) in _PARAMETRIC.items())
        raise ValueError(
            f"unknown activation {activation!r}; known: {', '.join(sorted(_REGISTRY))}; parametric: {parametric} "
            "(add your own with xderiv.register_activation)"
        )
    return found


def available_activations() -> list[str]:
    """Names of all registered activations (parametric ones are made by their factories, e.g. :func:`softplus`)."""
    return sorted(_REGISTRY)
