r"""OT-Flow potentials :math:`\Phi(s) = w^\top N(s) + \tfrac12 s^\top A^\top A s + c^\top s + b` from their weights.

`OT-Flow <https://github.com/EmoryMLIP/OT-Flow>`_ (``src/Phi.py``) models

.. math::

    N(s):\ u_0 = \sigma(K_0 s + b_0),\quad u_i = u_{i-1} + h\,\sigma(K_i u_{i-1} + b_i)\ (i = 1..n_{Th}-1),
    \qquad h = 1/(n_{Th} - 1),

with :math:`\sigma` = antiderivative of tanh (xderiv's ``"antitanh"``), a
rank-``r`` factor ``A`` of shape ``(r, d+1)`` giving ``symA = AᵀA``, a
linear term and a constant.  Name mapping (OT-Flow ``Phi`` attribute →
argument here):

==========================  ==================  ==================================
OT-Flow                     here                shape
==========================  ==================  ==================================
``N.layers[0].weight``      ``K0``              ``(m, d)``  (torch ``(out, in)``)
``N.layers[0].bias``        ``b0``              ``(m,)``
``N.layers[i].weight``      ``K[i-1]``          ``(m, m)``
``N.layers[i].bias``        ``b[i-1]``          ``(m,)``
``w.weight``                ``w``               ``(1, m)`` or ``(m,)``
``A``                       ``A``               ``(r, d)``  (the factor, not ``symA``)
``c.weight``                ``c``               ``(1, d)`` or ``(d,)``
``c.bias``                  ``c0``              ``(1,)`` or scalar
``N.h``                     ``step``            default ``1 / len(K)``
==========================  ==================  ==================================

(Here ``d`` counts every input of ``Phi``: OT-Flow's space-time input has
``d + 1`` entries.)  OT-Flow's paper calls the linear term ``b`` and the
constant ``c``; :class:`xderiv.Potential` calls them ``c`` and ``b``.

OT-Flow's ``Phi.trHess`` returns the trace of the Hessian over the *spatial*
coordinates only (the first ``d`` of ``d + 1``); ``xd.laplacian(phi, x)``
traces all inputs, ``xd.laplacian(phi, x, coords=range(d))`` gives OT-Flow's
quantity (no Hessian formed).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import array_api_compat

from ..models.layers import Dense, Residual
from ..models.networks import Potential, Sequential
from ._structure import convert_all


def potential(
    K0: Any,
    b0: Any,
    K: Sequence[Any],
    b: Sequence[Any],
    w: Any,
    A: Any = None,
    c: Any = None,
    c0: Any = 0.0,
    *,
    step: float | None = None,
    activation: str = "antitanh",
    xp: Any = None,
    device: Any = None,
    dtype: Any = None,
) -> Potential:
    r"""An xderiv :class:`~xderiv.Potential` from OT-Flow-layout weights (see the module table).

    Parameters
    ----------
    K0, b0 : arrays, shapes ``(m, d)`` and ``(m,)``
        Opening layer, torch orientation (``z = s K0ᵀ + b0``).
    K, b : sequences of arrays, shapes ``(m, m)`` and ``(m,)``
        The ``nTh - 1`` residual layers, torch orientation.
    w : array, shape ``(1, m)`` or ``(m,)``
    A : array, shape ``(r, d)``, optional
        The low-rank factor; the potential's quadratic term is ``AᵀA``.
    c : array, shape ``(1, d)`` or ``(d,)``, optional
        Linear term.
    c0 : array of one element or float, default 0
        Constant.
    step : float, optional
        Residual step ``h``; OT-Flow's ``1 / (nTh - 1) = 1 / len(K)`` when None.
    activation : str, default "antitanh"
        OT-Flow's :math:`\log(2\cosh z)` (computed stably).
    xp, device, dtype : optional
        Place copies of the arrays in this namespace/device/dtype (e.g. NumPy
        arrays from a saved checkpoint into ``torch`` on ``"cuda"``).  When all
        three are None the arrays are used as given (torch Parameters stay
        shared: the transposes are views; ``AᵀA`` is computed once here).

    Returns
    -------
    Potential
    """
    K, b = list(K), list(b)
    if len(K) != len(b):
        raise ValueError(f"otflow.potential: got {len(K)} residual weights K but {len(b)} biases b")
    has_A, has_c = A is not None, c is not None
    has_c0 = array_api_compat.is_array_api_obj(c0) or isinstance(c0, (list, tuple))
    extra = [a for a, on in ((A, has_A), (c, has_c), (c0, has_c0)) if on]
    arrays = convert_all([K0, b0, *K, *b, w, *extra], xp, device, dtype)
    K0, b0 = arrays[0], arrays[1]
    n = len(K)
    K, b = arrays[2 : 2 + n], arrays[2 + n : 2 + 2 * n]
    w, rest = arrays[2 + 2 * n], arrays[3 + 2 * n :]
    A = rest.pop(0) if has_A else None
    c = rest.pop(0) if has_c else None
    c0 = rest.pop(0) if has_c0 else c0
    ns = array_api_compat.array_namespace(K0)
    h = (1.0 / n if n else 1.0) if step is None else float(step)
    layers: list[Dense] = [Dense(ns.matrix_transpose(K0), b0, activation=activation)]
    layers += [Residual(ns.matrix_transpose(k), bi, activation=activation, step=h) for k, bi in zip(K, b)]
    w = ns.reshape(w, (-1,))
    quad = None if A is None else ns.matrix_transpose(A) @ A
    lin = None if c is None else ns.reshape(c, (-1,))
    if not array_api_compat.is_array_api_obj(c0):
        c0 = ns.asarray([float(c0)], dtype=w.dtype, device=array_api_compat.device(w))
    return Potential(Sequential(*layers), w, quad, lin, ns.reshape(c0, (1,)))


def from_phi(phi: Any) -> Potential:
    """Convert an OT-Flow ``Phi`` module (``src/Phi.py``) into a :class:`~xderiv.Potential`, sharing its tensors.

    Reads ``phi.N.layers``, ``phi.N.h``, ``phi.w``, ``phi.A``, ``phi.c`` (duck
    typing; OT-Flow is not imported).  ``symA = AᵀA`` is formed once here, so
    after training ``phi`` further, convert it again.
    """
    layers = list(phi.N.layers)
    K0, b0 = layers[0].weight, layers[0].bias
    K = [layer.weight for layer in layers[1:]]
    b = [layer.bias for layer in layers[1:]]
    return potential(K0, b0, K, b, phi.w.weight, phi.A, phi.c.weight, phi.c.bias, step=float(phi.N.h))


def from_state_dict(state: Any, *, xp: Any = None, device: Any = None, dtype: Any = None) -> Potential:
    """A :class:`~xderiv.Potential` from an OT-Flow ``Phi.state_dict()`` (e.g. ``torch.load(ckpt)["state_dict"]``).

    Keys used: ``A``, ``c.weight``, ``c.bias``, ``w.weight``, ``N.layers.<i>.weight``,
    ``N.layers.<i>.bias``; the step is ``1 / (number of layers - 1)`` as in OT-Flow.
    """
    n_layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("N.layers."))
    W = [state[f"N.layers.{i}.weight"] for i in range(n_layers)]
    B = [state[f"N.layers.{i}.bias"] for i in range(n_layers)]
    return potential(
        W[0],
        B[0],
        W[1:],
        B[1:],
        state["w.weight"],
        state.get("A"),
        state.get("c.weight"),
        state.get("c.bias", 0.0),
        xp=xp,
        device=device,
        dtype=dtype,
    )


__all__ = ["from_phi", "from_state_dict", "potential"]
