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
from typing import Any

import array_api_compat

from ._namespace import Array, check_finite, check_finite_number, check_real_floating, is_array
from .activations import Activation, get_activation


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
        check_real_floating(array_api_compat.array_namespace(bias), bias, f"{name}: bias")
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


Layer = Dense
"""Any layer type the recursions accept (Dense and its subclasses)."""


def layer_params(layer: Dense, xp: Any, dtype: Any) -> tuple[Array, Array]:
    """``(W, b)`` of ``layer`` in the working dtype (cast only when needed)."""
    w, b = layer.weight, layer.bias
    if w.dtype != dtype:
        w = xp.astype(w, dtype)
    if b.dtype != dtype:
        b = xp.astype(b, dtype)
    return w, b
