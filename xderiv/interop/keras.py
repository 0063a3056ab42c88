"""Keras-style weights: ``model.get_weights()`` (``W`` of shape ``(in, out)``) to a :class:`~xderiv.Sequential`.

>>> import numpy as np, xderiv as xd
>>> from xderiv.interop.keras import from_keras
>>> rng = np.random.default_rng(0)
>>> weights = [rng.normal(size=(2, 20)), np.zeros(20), rng.normal(size=(20, 1)), np.zeros(1)]
>>> net = from_keras(weights, activation="sigmoid", output_activation="sigmoid")
>>> xd.hessian(net, np.array([0.15, 0.1])).shape
(1, 2, 2)

Keras uses xderiv's orientation (``z = u @ W + b``), so weights pass through
unchanged.  The list is read in order: every 2-D array starts a layer, and a
1-D array right after it is that layer's bias (``use_bias=False`` layers just
have none).  Keras activation names map as ``linear``/None → ``identity``,
``swish`` → ``silu``; ``sigmoid``, ``tanh``, ``softplus``, ``silu`` and any
name registered with xderiv pass through.  Keras itself is never imported.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..models.layers import Dense, Residual
from ..models.networks import Sequential
from ._structure import convert_all

_NAMES = {None: "identity", "linear": "identity", "swish": "silu"}


def _name(act: Any) -> Any:
    if callable(act) and not isinstance(act, str):
        act = getattr(act, "__name__", act)
    return _NAMES.get(act, act)


def from_keras(
    weights: Sequence[Any],
    activation: Any = "tanh",
    output_activation: Any = "linear",
    *,
    activations: Sequence[Any] | None = None,
    residual: Sequence[bool] | None = None,
    step: float = 1.0,
    xp: Any = None,
    device: Any = None,
    dtype: Any = None,
) -> Sequential:
    """Build a :class:`~xderiv.Sequential` from a Keras-style weight list.

    Parameters
    ----------
    weights : sequence of arrays
        ``[W0, b0, W1, b1, ...]`` as ``model.get_weights()`` returns them, ``W``
        of shape ``(in, out)``; biases optional per layer.
    activation, output_activation : str
        Activation of every layer but the last, and of the last (Keras names).
    activations : sequence of str, optional
        One activation per layer, overriding the two above.
    residual : sequence of bool, optional
        Which layers are residual ``u + step * sigma(u W + b)`` (square ``W``),
        as in the seed notebook's ResNet.
    step : float
        Residual step.
    xp, device, dtype : optional
        Copy the arrays into this namespace/device/dtype (e.g. ``xp=torch``);
        when all are None the arrays are used as given (NumPy from Keras).

    Returns
    -------
    Sequential
    """
    arrays = convert_all(list(weights), xp, device, dtype)
    pairs: list[tuple[Any, Any]] = []
    for i, a in enumerate(arrays):
        if a.ndim == 2:
            pairs.append((a, None))
        elif a.ndim == 1 and pairs and pairs[-1][1] is None:
            pairs[-1] = (pairs[-1][0], a)
        else:
            raise ValueError(
                f"from_keras: weights[{i}] has shape {tuple(a.shape)}; expected a 2-D kernel "
                "or the 1-D bias right after one"
            )
    n = len(pairs)
    if n == 0:
        raise ValueError("from_keras: no 2-D kernel in the weight list")
    if activations is None:
        activations = [activation] * (n - 1) + [output_activation]
    if len(activations) != n:
        raise ValueError(f"from_keras: {n} layers but {len(activations)} activations")
    res = [False] * n if residual is None else list(residual)
    if len(res) != n:
        raise ValueError(f"from_keras: {n} layers but {len(res)} residual flags")
    layers: list[Dense] = []
    for (w, b), act, is_res in zip(pairs, activations, res):
        if is_res:
            layers.append(Residual(w, b, activation=_name(act), step=step))
        else:
            layers.append(Dense(w, b, activation=_name(act)))
    return Sequential(*layers)


def from_keras_model(model: Any, **kwargs: Any) -> Sequential:
    """Convert a Keras model made of ``Dense`` layers (duck typing: ``model.layers``, ``get_weights``, ``get_config``).

    Each layer with weights contributes its ``get_weights()`` and its
    ``get_config()["activation"]``; layers without weights (``InputLayer``)
    are skipped.  ``kwargs`` go to :func:`from_keras` (``xp``, ``device``,
    ``dtype``, ``residual``, ``step``).
    """
    weights: list[Any] = []
    acts: list[Any] = []
    for layer in model.layers:
        ws = layer.get_weights()
        if not ws:
            continue
        if ws[0].ndim != 2 or len(ws) > 2:
            raise TypeError(f"from_keras_model: layer {getattr(layer, 'name', layer)!r} is not a Dense layer")
        weights += list(ws)
        acts.append(layer.get_config().get("activation", "linear"))
    return from_keras(weights, activations=acts, **kwargs)


__all__ = ["from_keras", "from_keras_model"]
