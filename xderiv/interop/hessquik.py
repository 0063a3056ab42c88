r"""Import a `hessQuik <https://github.com/EmoryMLIP/hessQuik>`_ network, sharing its tensors.

>>> import torch, hessQuik.networks as net, hessQuik.activations as act, xderiv as xd
>>> from xderiv.interop.hessquik import from_hessquik
>>> f = net.NN(net.fullyConnectedNN([3, 16], act=act.antiTanhActivation()),
...            net.resnetNN(16, 2, h=0.5, act=act.tanhActivation()),
...            net.fullyConnectedNN([16, 1], act=act.identityActivation())).double()
>>> x = torch.randn(100, 3, dtype=torch.float64)
>>> u = from_hessquik(f)
>>> H, lap = xd.hessian(u, x), xd.laplacian(u, x)      # (100, 1, 3, 3), (100, 1)

hessQuik already uses xderiv's orientation (``singleLayer.K`` has shape
``(in, out)``, ``z = u K + b``), so the xderiv layers hold its Parameters
``K`` and ``b`` themselves: no copy, gradients of xderiv results reach the
hessQuik model.  Layers: ``singleLayer`` (:class:`xderiv.Dense`),
``resnetLayer`` (:class:`xderiv.Residual` with its step ``h``), and the
containers ``NN``, ``fullyConnectedNN``, ``resnetNN`` (nested at any depth).
Activations: ``antiTanhActivation`` (xderiv ``"antitanh"``, the same
:math:`|z| + \log(1 + e^{-2|z|})`), ``tanhActivation``, ``sigmoidActivation``,
``softplusActivation`` (any ``beta``), ``quadraticActivation`` (:math:`z^2/2`),
``identityActivation``.  ICNN and quadratic layers are refused with a clear
error.

Shapes differ: hessQuik returns the gradient as ``(n, d, m)`` and the Hessian
as ``(n, d, d, m)``; xderiv returns ``(n, m, d)`` and ``(n, m, d, d)``.

hessQuik is not imported here: the converter reads the objects' attributes
(duck typing), so this module loads without hessQuik installed.
"""

from __future__ import annotations

from typing import Any

from ..models.layers import Dense, Residual
from ..models.networks import Sequential
from ._softplus import torch_softplus

_ACTIVATIONS = {
    "antiTanhActivation": "antitanh",
    "tanhActivation": "tanh",
    "sigmoidActivation": "sigmoid",
    "quadraticActivation": "quadratic",
    "identityActivation": "identity",
}


def _activation(act: Any, where: str) -> Any:
    """The xderiv activation of a hessQuik activation object."""
    kind = type(act).__name__
    if kind in _ACTIVATIONS:
        return _ACTIVATIONS[kind]
    if kind == "softplusActivation":
        return torch_softplus(getattr(act, "beta", 1.0), getattr(act, "threshold", 20.0), f"from_hessquik: {where}")
    raise TypeError(
        f"from_hessquik: {where} uses activation {kind}, which has no xderiv counterpart; "
        f"supported: {', '.join(sorted(_ACTIVATIONS))}, softplusActivation"
    )


def _single(layer: Any, where: str) -> tuple[Any, Any, Any]:
    """``(K, b, activation)`` of a hessQuik ``singleLayer``."""
    import torch

    K, b = layer.K, layer.b
    if b is None:
        b = torch.zeros(K.shape[1], dtype=K.dtype, device=K.device)
    return K, b, _activation(layer.act, where)


def _collect(block: Any, out: list[Dense], where: str) -> None:
    kind = type(block).__name__
    if kind == "singleLayer":
        K, b, act = _single(block, where)
        out.append(Dense(K, b, activation=act))
    elif kind == "resnetLayer":
        K, b, act = _single(block.layer, where)
        out.append(Residual(K, b, activation=act, step=float(block.h)))
    elif hasattr(block, "dim_input") and hasattr(block, "__iter__") and hasattr(block, "__len__"):
        # NN and its subclasses (fullyConnectedNN, resnetNN) are torch.nn.Sequential containers
        for j, child in enumerate(block):
            _collect(child, out, f"{where}[{j}]")
    else:
        raise TypeError(
            f"from_hessquik: {where} is a {kind}; supported are NN, fullyConnectedNN, resnetNN, "
            "singleLayer and resnetLayer (ICNN and quadratic layers have no xderiv counterpart)"
        )


def from_hessquik(model: Any) -> Sequential:
    """Convert a hessQuik network or layer into an xderiv :class:`~xderiv.Sequential`.

    Parameters
    ----------
    model : hessQuik NN, fullyConnectedNN, resnetNN, singleLayer or resnetLayer
        Containers may nest.

    Returns
    -------
    Sequential
        Holding hessQuik's own ``K`` and ``b`` Parameters (a layer without bias
        gets a constant zero tensor).  ``xd.jacobian(net, x)`` equals hessQuik's
        ``dfdx`` with the last two axes swapped, ``xd.hessian(net, x)`` its
        ``d2fd2x`` moved from ``(n, d, d, m)`` to ``(n, m, d, d)``.

    Raises
    ------
    TypeError
        For a layer or activation without an xderiv counterpart (named, with its position).

    Notes
    -----
    hessQuik's ``softplusActivation`` uses the identity where ``beta * z >
    threshold`` (default 20); xderiv evaluates the exact softplus there, a
    difference of at most ``log(1 + exp(-threshold)) / beta`` in value
    (2.1e-9 / beta at the default).  A threshold below 20 raises
    ``ValueError``.
    """
    layers: list[Dense] = []
    _collect(model, layers, type(model).__name__)
    if not layers:
        raise ValueError("from_hessquik: the model holds no layer")
    return Sequential(*layers)


__all__ = ["from_hessquik"]
