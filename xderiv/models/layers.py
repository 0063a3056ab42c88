r"""Layers: a dense layer and a residual layer, in the row-vector convention.

For an input row ``u`` (shape ``(..., in_features)``)::

    Dense:     u' = sigma(u @ W + b)                      W: (in, out)
    Residual:  u' = u + h * sigma(u @ W + b)              W: (w, w)

Both are instances of one update ``u' = skip * u + h * sigma(u W + b)`` with
``(skip, h) = (0, 1)`` for :class:`Dense` and ``(1, step)`` for
:class:`Residual`, so every derivative recursion is written once for both.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import array_api_compat

from ..activations import Activation, get_activation
from ..backends.namespace import (
    Array,
    array_namespace_of,
    check_finite,
    check_finite_number,
    check_nonzero,
    check_real_floating,
    describe,
    device_of,
    is_array,
)


class Dense:
    """Fully connected layer :math:`u' = \\sigma(u W + b)`.

    Parameters
    ----------
    weight : array, shape (in_features, out_features)
        Real floating weights ``W`` (Keras orientation: ``z = u @ W + b``).
    bias : array, shape (out_features,), optional
        Bias ``b``; zeros when omitted.
    activation : str or Activation, default "identity"
        Elementwise activation (see :mod:`xderiv.activations`).

    Raises
    ------
    ValueError
        Shapes that do not fit, or a NaN/infinity in ``weight`` or ``bias``
        (checked once here for concrete arrays; JAX tracers, torch meta/fake
        tensors and lazy arrays skip the check because their values are not
        known at construction).

    Notes
    -----
    The layer only holds references to the arrays it is given: torch tensors
    with ``requires_grad`` stay the user's Parameters, and gradients of any
    xderiv result flow back to them.  Weights changed in place after
    construction (an optimizer step) are not re-checked.
    """

    skip: bool = False

    def __init__(self, weight: Array, bias: Array | None = None, activation: str | Activation = "identity"):
        name = type(self).__name__
        if not is_array(weight):
            raise TypeError(f"{name}: weight must be an array, got {type(weight).__name__}")
        xp = array_api_compat.array_namespace(weight)
        if weight.ndim != 2:
            raise ValueError(f"{name}: weight must be 2-D (in_features, out_features), got shape {tuple(weight.shape)}")
        check_real_floating(xp, weight, f"{name}: weight")
        if 0 in tuple(weight.shape):
            raise ValueError(
                f"{name}: weight has shape {tuple(weight.shape)}; a layer needs at least one input "
                "and one output feature"
            )
        out = weight.shape[1]
        if bias is None:
            bias = xp.zeros((out,), dtype=weight.dtype, device=array_api_compat.device(weight))
        if not is_array(bias):
            raise TypeError(f"{name}: bias must be an array, got {type(bias).__name__}")
        if tuple(bias.shape) != (out,):
            raise ValueError(
                f"{name}: bias has shape {tuple(bias.shape)} but weight of shape "
                f"{tuple(weight.shape)} needs a bias of shape ({out},)"
            )
        if array_api_compat.array_namespace(bias) is not xp:
            raise TypeError(
                f"{name}: weight is {describe(weight)} but bias is {describe(bias)}; give both from one array "
                "library (xderiv never converts between libraries)"
            )
        check_real_floating(xp, bias, f"{name}: bias")
        check_finite(xp, weight, f"{name}: weight")
        check_finite(array_api_compat.array_namespace(bias), bias, f"{name}: bias")
        self.weight = weight
        self.bias = bias
        self.activation = get_activation(activation)
        self.step = 1.0

    @property
    def in_features(self) -> int:
        """Input width ``W.shape[0]``."""
        return int(self.weight.shape[0])

    @property
    def out_features(self) -> int:
        """Output width ``W.shape[1]``."""
        return int(self.weight.shape[1])

    def arrays(self) -> list[Array]:
        """The layer's weight arrays, in a fixed order: ``[weight, bias]``."""
        return [self.weight, self.bias]

    def params(self, xp: Any, dtype: Any) -> tuple[Array, Array]:
        """``(W, b)`` as a call uses them: in the call's working ``dtype`` (cast only when needed)."""
        return _astype(self.weight, xp, dtype), _astype(self.bias, xp, dtype)

    def with_arrays(self, weight: Array, bias: Array) -> Dense:
        """The same layer (type, activation, step) with other weight arrays of the same shapes."""
        if tuple(weight.shape) != tuple(self.weight.shape) or tuple(bias.shape) != tuple(self.bias.shape):
            raise ValueError(
                f"{type(self).__name__}.with_arrays: expected shapes {tuple(self.weight.shape)} and "
                f"{tuple(self.bias.shape)}, got {tuple(weight.shape)} and {tuple(bias.shape)}"
            )
        new = copy.copy(self)
        new.weight, new.bias = weight, bias
        return new

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.in_features} -> {self.out_features}, "
            f"activation={self.activation.name!r}{self._extra_repr()})"
        )

    def _extra_repr(self) -> str:
        return ""


class Residual(Dense):
    """Residual layer :math:`u' = u + h\\,\\sigma(u W + b)` with square ``W``.

    Parameters
    ----------
    weight : array, shape (width, width)
    bias : array, shape (width,), optional
    activation : str or Activation, default "tanh"
    step : float, default 1.0
        The step size ``h``.
    """

    skip = True

    def __init__(
        self,
        weight: Array,
        bias: Array | None = None,
        activation: str | Activation = "tanh",
        step: float = 1.0,
    ):
        super().__init__(weight, bias, activation)
        if self.in_features != self.out_features:
            raise ValueError(f"Residual: weight must be square (width, width), got shape {tuple(weight.shape)}")
        self.step = check_finite_number(step, "Residual: step")

    def _extra_repr(self) -> str:
        return f", step={self.step}"


class InputScale(Dense):
    r"""Input normalisation :math:`u' = (u - \mu) / s` as a linear layer.

    It is a :class:`Dense` layer with :math:`W = \mathrm{diag}(1/s)`,
    :math:`b = -\mu / s` and the identity activation, so every recursion
    treats it as an ordinary layer (it costs one ``d x d`` product per point).
    ``W`` and ``b`` are formed from ``mean`` and ``std`` at every call, so
    changes made to them in place (an optimizer step on trainable scales) are
    seen, and gradients of any result reach them.  Mapping a box ``[lo, hi]``
    to ``[-1, 1]`` is ``mean = (lo + hi) / 2``, ``std = (hi - lo) / 2``.

    Parameters
    ----------
    mean : array of shape (d,), or a number
    std : array of shape (d,), or a number
        Nonzero scales (a number must be positive); at least one of ``mean``
        and ``std`` is an array (its namespace, dtype and device are the
        layer's).  The layer holds the arrays it is given (a number becomes
        an array of shape ``(d,)``).
    """

    def __init__(self, mean: Array | float, std: Array | float):
        ref: Any = std if is_array(std) else mean
        if not is_array(ref):
            raise TypeError(
                "InputScale: mean or std must be an array of shape (d,) to fix d, the namespace and the device; "
                f"got {type(mean).__name__} and {type(std).__name__}"
            )
        if ref.ndim != 1:
            raise ValueError(f"InputScale: mean and std must have shape (d,), got shape {tuple(ref.shape)}")
        xp = array_api_compat.array_namespace(ref)
        check_real_floating(xp, ref, "InputScale: " + ("std" if ref is std else "mean"))
        d, dev = int(ref.shape[0]), array_api_compat.device(ref)

        def full(a: Any, name: str) -> Array:
            if is_array(a):
                return a
            return xp.full((d,), check_finite_number(a, f"InputScale: {name}"), dtype=ref.dtype, device=dev)

        mean_a, std_a = full(mean, "mean"), full(std, "std")
        for name, a in (("mean", mean_a), ("std", std_a)):
            if tuple(a.shape) != (d,):
                raise ValueError(f"InputScale: {name} has shape {tuple(a.shape)}, expected ({d},)")
            if array_api_compat.array_namespace(a) is not xp:
                raise TypeError(
                    f"InputScale: mean is {describe(mean_a)} but std is {describe(std_a)}; give both from one "
                    "array library (xderiv never converts between libraries)"
                )
            check_real_floating(xp, a, f"InputScale: {name}")
        if not is_array(std) and not float(std) > 0.0:
            raise ValueError(f"InputScale: std must be positive, got {std}")
        check_finite(xp, mean_a, "InputScale: mean")
        check_finite(xp, std_a, "InputScale: std")
        check_nonzero(xp, std_a, "InputScale: std")
        self.mean, self.std = mean_a, std_a
        self.activation = get_activation("identity")
        self.step = 1.0

    @property
    def weight(self) -> Array:  # type: ignore[override]
        r""":math:`\mathrm{diag}(1/s)`, shape (d, d), formed from the current ``std`` (as :meth:`params`)."""
        return self._own_params()[0]

    @property
    def bias(self) -> Array:  # type: ignore[override]
        r""":math:`-\mu / s`, shape (d,), formed from the current ``mean`` and ``std`` (as :meth:`params`)."""
        return self._own_params()[1]

    def _own_params(self) -> tuple[Array, Array]:
        xp = array_namespace_of(self.std)
        return self.params(xp, xp.result_type(self.mean, self.std))

    def params(self, xp: Any, dtype: Any) -> tuple[Array, Array]:
        """``(W, b)`` formed in the call's working ``dtype`` from ``mean`` and ``std`` cast to it (exactly,
        when widened: a float32 ``std`` in a float64 call gives float64's ``1/std``)."""
        mean, std = _astype(self.mean, xp, dtype), _astype(self.std, xp, dtype)
        return xp.eye(std.shape[0], dtype=dtype, device=device_of(std)) / std, -mean / std

    @property
    def in_features(self) -> int:
        """``d``."""
        return int(self.std.shape[0])

    out_features = in_features

    def arrays(self) -> list[Array]:
        """The arrays the layer holds: ``[mean, std]``."""
        return [self.mean, self.std]

    def with_arrays(self, mean: Array, std: Array) -> InputScale:  # type: ignore[override]
        """The same layer over other ``mean`` and ``std`` arrays of shape (d,)."""
        d = self.in_features
        if tuple(mean.shape) != (d,) or tuple(std.shape) != (d,):
            raise ValueError(
                f"InputScale.with_arrays: expected shapes ({d},) and ({d},), "
                f"got {tuple(mean.shape)} and {tuple(std.shape)}"
            )
        new = copy.copy(self)
        new.mean, new.std = mean, std
        return new

    def __repr__(self) -> str:
        return f"InputScale({self.in_features})"


class FourierFeatures(Dense):
    r"""Fourier features :math:`u' = [\sin(uB),\ \cos(uB)]` as one sine layer (made by :func:`fourier_features`).

    Because :math:`\sin(z + \pi/2) = \cos z`, this is exactly
    ``Dense(concat([B, B], axis=1), concat([0, ..., 0, pi/2, ..., pi/2]), "sin")``;
    that weight and bias are formed from ``B`` at every call, so changes made
    to ``B`` in place (trained frequencies) are seen, and gradients of any
    result reach ``B``.

    Parameters
    ----------
    B : array, shape (d, k)
        Frequencies; the layer holds this array.
    """

    def __init__(self, B: Array):
        if not is_array(B) or B.ndim != 2:
            raise ValueError(
                f"fourier_features: B must be a 2-D array (d, k), got {getattr(B, 'shape', type(B).__name__)}"
            )
        xp = array_api_compat.array_namespace(B)
        check_real_floating(xp, B, "fourier_features: B")
        if 0 in tuple(B.shape):
            raise ValueError(f"fourier_features: B has shape {tuple(B.shape)}; it needs at least one row and column")
        check_finite(xp, B, "fourier_features: B")
        self.B = B
        self.activation = get_activation("sin")
        self.step = 1.0

    @property
    def weight(self) -> Array:  # type: ignore[override]
        """``[B, B]``, shape (d, 2k) (as :meth:`params`)."""
        return self.params(array_namespace_of(self.B), self.B.dtype)[0]

    @property
    def bias(self) -> Array:  # type: ignore[override]
        """``[0, ..., 0, pi/2, ..., pi/2]``, shape (2k,), in ``B``'s dtype and on its device (as :meth:`params`)."""
        return self.params(array_namespace_of(self.B), self.B.dtype)[1]

    def params(self, xp: Any, dtype: Any) -> tuple[Array, Array]:
        r"""``(W, b)`` formed in the call's working ``dtype`` (the phase :math:`\pi/2` rounded to it)."""
        B = _astype(self.B, xp, dtype)
        zeros = xp.zeros((B.shape[1],), dtype=B.dtype, device=device_of(B))
        return xp.concat([B, B], axis=1), xp.concat([zeros, zeros + math.pi / 2], axis=0)

    @property
    def in_features(self) -> int:
        """``d``."""
        return int(self.B.shape[0])

    @property
    def out_features(self) -> int:
        """``2k``."""
        return 2 * int(self.B.shape[1])

    def arrays(self) -> list[Array]:
        """The array the layer holds: ``[B]``."""
        return [self.B]

    def with_arrays(self, B: Array) -> FourierFeatures:  # type: ignore[override]
        """The same layer over other frequencies of the same shape."""
        if tuple(B.shape) != tuple(self.B.shape):
            raise ValueError(f"FourierFeatures.with_arrays: expected shape {tuple(self.B.shape)}, got {tuple(B.shape)}")
        new = copy.copy(self)
        new.B = B
        return new

    def __repr__(self) -> str:
        return f"FourierFeatures({self.in_features} -> {self.out_features})"


def fourier_features(B: Array) -> FourierFeatures:
    r"""Fourier features :math:`u' = [\sin(uB),\ \cos(uB)]` as one sine layer.

    Because :math:`\sin(z + \pi/2) = \cos z`, this is exactly
    ``Dense(concat([B, B], axis=1), concat([0, ..., 0, pi/2, ..., pi/2]), "sin")``:
    every recursion treats it as an ordinary layer, and its derivatives are
    those of a sine layer.  That weight is formed from ``B`` at every call, so
    trained (or otherwise updated) frequencies are seen.

    Parameters
    ----------
    B : array, shape (d, k)
        Frequencies (e.g. ``2 * pi * sigma * N(0, 1)`` entries for random
        Fourier features).

    Returns
    -------
    FourierFeatures
        A :class:`Dense` layer ``d -> 2k``: the first ``k`` features are
        sines, the last ``k`` cosines.
    """
    return FourierFeatures(B)


Layer = Dense
"""Any layer type the recursions accept (Dense and its subclasses)."""


def _astype(a: Array, xp: Any, dtype: Any) -> Array:
    return a if a.dtype == dtype else xp.astype(a, dtype)
