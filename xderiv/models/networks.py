r"""Networks built from layers: :class:`Sequential`, :class:`Potential`, and seeded factories.

A network is an immutable description (references to weight arrays plus
architecture); evaluating it or any of its derivatives goes through
:func:`xderiv.engine.call.run`, which holds no per-call state on the network, so one
network may be used from several threads at once.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import array_api_compat

from ..activations import Activation
from ..backends.namespace import (
    Array,
    check_finite,
    check_finite_number,
    check_real_floating,
    is_array,
    namespace_of_weights,
)
from ..backends.random import WeightSampler
from ..engine.call import Plan, run, value_kernel
from ..engine.cost import VALUE
from .composition import Composable, Composite
from .layers import Dense, Residual


class _Network(Composable):
    """Common behaviour: namespace, device and dtype bookkeeping, evaluation, and ``+``/``*`` (:class:`Composable`)."""

    plan: Plan
    xp: Any
    device: Any
    dtype: Any

    def _bind(self, plan: Plan, owner: str) -> None:
        arrays = [a for layer in plan.layers for a in layer.arrays()]
        arrays += [a for a in (plan.quadratic, plan.linear) if a is not None]
        self.plan = plan
        self.xp, self.device = namespace_of_weights(arrays, owner)
        self.dtype = self.xp.result_type(*[a.dtype for a in arrays])

    @property
    def layers(self) -> tuple[Dense, ...]:
        """The layers, first to last (for a Potential: trunk layers, then the head)."""
        return self.plan.layers

    @property
    def in_features(self) -> int:
        """Input dimension ``d``."""
        return self.plan.in_features

    @property
    def out_features(self) -> int:
        """Number of outputs ``m`` (1 for a Potential)."""
        return self.plan.out_features

    @property
    def scalar(self) -> bool:
        """True for a Potential: results have no output axis."""
        return self.plan.scalar

    def __call__(self, x: Array) -> Array:
        """Evaluate the network: ``x`` of shape ``(..., d)`` to ``(..., m)`` (Potential: ``(...,)``)."""
        on_jet = getattr(x, "__xderiv_network__", None)
        if on_jet is not None:  # called inside a function being differentiated
            return on_jet(self)
        return run(self.resolve(), x, VALUE, value_kernel, trailing=[()])[0]

    def resolve(self) -> _Network:
        """The network a call evaluates now: itself.

        A network that reads its weights from elsewhere (a converted torch
        module) returns a network over the weights as they are at this moment.
        """
        return self

    def arrays(self) -> list[Array]:
        """All weight arrays in a fixed order: each layer's arrays (``[weight, bias]``; an InputScale's
        ``[mean, std]``, Fourier features' ``[B]``), then ``A`` and ``c`` if present.

        With :meth:`with_arrays` this makes a network a function of its
        weights, for ``jax.grad``/``jax.jit`` or ``torch.func``.
        """
        out = [a for layer in self.plan.layers for a in layer.arrays()]
        return out + [a for a in (self.plan.quadratic, self.plan.linear) if a is not None]

    def with_arrays(self, arrays: list[Array]) -> _Network:
        """The same architecture with the weight arrays of :meth:`arrays` replaced (same order and shapes)."""
        arrays = list(arrays)
        if len(arrays) != len(self.arrays()):
            raise ValueError(f"with_arrays: expected {len(self.arrays())} arrays, got {len(arrays)}")
        layers, rest = [], arrays
        for layer in self.plan.layers:
            k = len(layer.arrays())  # weight and bias; an InputScale's mean and std; Fourier features' B
            layers.append(layer.with_arrays(*rest[:k]))
            rest = rest[k:]
        quadratic = rest.pop(0) if self.plan.quadratic is not None else None
        linear = rest.pop(0) if self.plan.linear is not None else None
        new = copy.copy(self)
        new._bind(Plan(tuple(layers), quadratic, linear, self.plan.scalar), type(self).__name__)
        if isinstance(new, Potential):
            new.trunk = Sequential(*layers[:-1])
        return new


def as_network(net: Any) -> _Network | Composite:
    """Accept a Sequential/Potential/composite, or a single layer (wrapped in a Sequential)."""
    if isinstance(net, (_Network, Composite)):
        return net.resolve()
    if isinstance(net, Dense):
        return Sequential(net)
    raise TypeError(
        f"net must be an xderiv Sequential, Potential, layer or composite (Sum/Product), got {type(net).__name__}"
    )


def _check_chain(layers: tuple[Dense, ...], owner: str) -> None:
    for i, (a, b) in enumerate(zip(layers[:-1], layers[1:])):
        if a.out_features != b.in_features:
            raise ValueError(
                f"{owner}: layer {i} ({a!r}) outputs {a.out_features} features but layer "
                f"{i + 1} ({b!r}) takes {b.in_features}; widths must chain"
            )


class Sequential(_Network):
    """A chain of layers :math:`x \\mapsto L_k(\\cdots L_1(x))`.

    Parameters
    ----------
    *layers : Dense or Residual or Sequential
        Layers in order; nested Sequentials are flattened.

    Examples
    --------
    >>> import numpy as np, xderiv as xd
    >>> net = xd.Sequential(xd.Dense(np.ones((2, 3)), activation="tanh"), xd.Dense(np.ones((3, 1))))
    >>> net(np.zeros(2)).shape
    (1,)
    """

    def __init__(self, *layers: Dense | Sequential):
        flat: list[Dense] = []
        for layer in layers:
            if isinstance(layer, Sequential):
                flat.extend(layer.layers)
            elif isinstance(layer, Dense):
                flat.append(layer)
            else:
                raise TypeError(f"Sequential: expected Dense/Residual layers, got {type(layer).__name__}")
        if not flat:
            raise ValueError("Sequential: needs at least one layer")
        _check_chain(tuple(flat), "Sequential")
        self._bind(Plan(tuple(flat), None, None, scalar=False), "Sequential")

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(layer) for layer in self.layers)
        return f"Sequential(\n  {inner}\n)"


class Potential(_Network):
    r"""Scalar potential :math:`\Phi(s) = N(s) \cdot w + \tfrac12 s^\top A s + c^\top s + b`.

    Parameters
    ----------
    trunk : Sequential
        The network :math:`N`, mapping ``d`` inputs to ``k`` features.
    w : array, shape (k,) or (k, 1)
        Weights of the linear read-out of the trunk.
    A : array, shape (d, d) or (d,), optional
        Quadratic term; need not be symmetric (its Hessian contribution is
        :math:`\tfrac12 (A + A^\top)`, its Laplacian contribution :math:`\mathrm{tr} A`).
        A vector of shape ``(d,)`` stands for the diagonal matrix
        :math:`\operatorname{diag}(A)`, at ``O(d)`` cost per point instead of ``O(d^2)``.
    c : array, shape (d,), optional
        Linear term.
    b : array of shape () or (1,), or float, default 0
        Constant offset.

    Notes
    -----
    Evaluates to shape ``(...,)`` for ``s`` of shape ``(..., d)``; the gradient
    has the shape of ``s``.
    """

    def __init__(self, trunk: Sequential, w: Array, A: Array | None = None, c: Array | None = None, b: Any = 0.0):
        if isinstance(trunk, Dense):
            trunk = Sequential(trunk)
        if not isinstance(trunk, Sequential):
            raise TypeError(f"Potential: trunk must be a Sequential, got {type(trunk).__name__}")
        xp = trunk.xp
        k, d = trunk.out_features, trunk.in_features
        if not is_array(w) or tuple(w.shape) not in ((k,), (k, 1)):
            raise ValueError(
                f"Potential: w must have shape ({k},) or ({k}, 1) to read out the trunk's "
                f"{k} features, got {getattr(w, 'shape', type(w).__name__)}"
            )
        check_real_floating(array_api_compat.array_namespace(w), w, "Potential: w")
        w = xp.reshape(w, (k, 1))
        if not is_array(b):
            b = xp.asarray([check_finite_number(b, "Potential: b")], dtype=w.dtype, device=trunk.device)
        if math.prod(b.shape) != 1:
            raise ValueError(f"Potential: b must be a scalar, got shape {tuple(b.shape)}")
        b = xp.reshape(b, (1,))
        if A is not None and (not is_array(A) or tuple(A.shape) not in ((d, d), (d,))):
            raise ValueError(
                f"Potential: A must have shape ({d}, {d}), or ({d},) for a diagonal A, "
                f"got {getattr(A, 'shape', type(A).__name__)}"
            )
        if c is not None and (not is_array(c) or tuple(c.shape) != (d,)):
            raise ValueError(f"Potential: c must have shape ({d},), got {getattr(c, 'shape', type(c).__name__)}")
        for name, a in (("A", A), ("c", c)):
            if a is not None:
                check_real_floating(array_api_compat.array_namespace(a), a, f"Potential: {name}")
                check_finite(array_api_compat.array_namespace(a), a, f"Potential: {name}")
        self.trunk = trunk
        head = Dense(w, b)
        self._bind(Plan(trunk.layers + (head,), A, c, scalar=True), "Potential")

    @property
    def w(self) -> Array:
        """Read-out weights, shape ``(k, 1)``."""
        return self.plan.layers[-1].weight

    @property
    def b(self) -> Array:
        """Constant offset, shape ``(1,)``."""
        return self.plan.layers[-1].bias

    @property
    def A(self) -> Array | None:
        """Quadratic term."""
        return self.plan.quadratic

    @property
    def c(self) -> Array | None:
        """Linear term."""
        return self.plan.linear

    def __repr__(self) -> str:
        return f"Potential(trunk={self.trunk!r}, quadratic={self.A is not None}, linear={self.c is not None})"


# --------------------------------------------------------------------------- factories


def _dense(s: Any, n_in: int, n_out: int, activation: str | Activation, cls: type = Dense, **kw: Any) -> Dense:
    """Glorot-normal weights, N(0, 0.1^2) biases (nonzero, so tests see every term)."""
    w = s.normal((n_in, n_out), math.sqrt(2.0 / (n_in + n_out)))
    b = s.normal((n_out,), 0.1)
    return cls(w, b, activation=activation, **kw)


def mlp(
    sizes: list[int],
    activation: str | Activation = "tanh",
    output_activation: str | Activation = "identity",
    *,
    xp: Any = None,
    device: Any = None,
    dtype: Any = None,
    seed: int | None = 0,
) -> Sequential:
    """Multilayer perceptron ``sizes[0] -> sizes[1] -> ... -> sizes[-1]``.

    Parameters
    ----------
    sizes : list of int
        Layer widths, input first, at least two entries.
    activation, output_activation : str or Activation
        Activation of the hidden layers and of the last layer.
    xp, device, dtype
        Namespace (module such as ``numpy`` or ``torch``; NumPy when None),
        device and dtype (float64 when None) of the weights.
    seed : int
        Seed of ``numpy.random.default_rng``; same seed, same weights on every backend.

    Examples
    --------
    The seed notebook's PINN: ``mlp([2, 20, 20, 20, 1], "sigmoid", "sigmoid")``.
    """
    if len(sizes) < 2 or any(int(n) < 1 for n in sizes):
        raise ValueError(f"mlp: sizes must list at least two positive widths, got {sizes}")
    s = WeightSampler(seed, xp=xp, device=device, dtype=dtype)
    layers = [
        _dense(s, a, b, activation if i < len(sizes) - 2 else output_activation)
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))
    ]
    return Sequential(*layers)


def resnet(
    in_features: int,
    width: int,
    depth: int,
    out_features: int | None = 1,
    activation: str | Activation = "antitanh",
    step: float = 1.0,
    *,
    residual_activation: str | Activation | None = None,
    xp: Any = None,
    device: Any = None,
    dtype: Any = None,
    seed: int | None = 0,
) -> Sequential:
    """ResNet: opening ``Dense(d -> width)``, ``depth`` residual layers, linear read-out.

    ``u1 = sigma(x K0 + b0)``, ``u_{l+1} = u_l + h sigma(u_l K_l + b_l)``, ``y = u W + b``.

    Parameters
    ----------
    in_features, width, depth : int
        ``d``, the width ``w`` and the number of residual layers.
    out_features : int or None
        Outputs ``m`` of the final linear layer; None leaves it out (a trunk).
    activation : str or Activation
        Activation of the opening layer (and of the residual layers unless
        ``residual_activation`` is given).
    step : float
        Residual step ``h``.
    residual_activation : str or Activation, optional
    xp, device, dtype, seed
        As in :func:`mlp`.
    """
    s = WeightSampler(seed, xp=xp, device=device, dtype=dtype)
    res_act = activation if residual_activation is None else residual_activation
    layers: list[Dense] = [_dense(s, in_features, width, activation)]
    layers += [_dense(s, width, width, res_act, cls=Residual, step=step) for _ in range(depth)]
    if out_features is not None:
        layers.append(_dense(s, width, out_features, "identity"))
    return Sequential(*layers)


def quadratic(A: Array | None = None, c: Array | None = None, b: float = 0.0) -> Potential:
    r"""The quadratic :math:`q(x) = \tfrac12 x^\top A x + c^\top x + b` as a :class:`Potential` (no network).

    The building block of hard constraints: :math:`\varphi(x) = 1 - \lVert x\rVert^2`
    is ``quadratic(-2 * I, b=1.0)``, and ``u = g + phi * N`` equals ``g`` on the
    unit sphere whatever the network ``N`` (:mod:`xderiv.models.composition`).  In high
    dimension give the diagonal instead, ``quadratic(-2 * ones(d), b=1.0)``:
    the same function at ``O(d)`` instead of ``O(d^2)`` per point (a dense
    ``A`` at ``d = 10^4`` is 800 MB and ``10^8`` multiply-adds per point).

    Parameters
    ----------
    A : array (d, d) or (d,), optional
        The matrix, or the diagonal of a diagonal one.
    c : array (d,), optional
        At least one of ``A`` and ``c`` (it fixes ``d``, namespace and device).
    b : float

    Notes
    -----
    The Potential's trunk is a single ``d -> 1`` linear layer with zero
    weights and zero read-out: its cost is one extra dot product per point.
    """
    ref = A if A is not None else c
    if ref is None or not is_array(ref):
        raise TypeError("quadratic: give A (d, d), its diagonal (d,), or c (d,) as an array")
    if ref.ndim not in (1, 2) or (ref.ndim == 2 and ref.shape[0] != ref.shape[1]):
        name = "A" if ref is A else "c"
        want = "square (d, d) or a diagonal (d,)" if ref is A else "of shape (d,)"
        raise ValueError(f"quadratic: {name} must be {want}, got shape {tuple(ref.shape)}")
    xp, dev = array_api_compat.array_namespace(ref), array_api_compat.device(ref)
    d = int(ref.shape[-1])
    zeros = xp.zeros((d, 1), dtype=ref.dtype, device=dev)
    trunk = Sequential(Dense(zeros))
    return Potential(trunk, xp.zeros((1,), dtype=ref.dtype, device=dev), A, c, b)


def potential(
    in_features: int,
    width: int,
    depth: int,
    rank: int | None = None,
    activation: str | Activation = "antitanh",
    step: float = 1.0,
    *,
    xp: Any = None,
    device: Any = None,
    dtype: Any = None,
    seed: int | None = 0,
) -> Potential:
    r"""OT-Flow style potential :math:`\Phi(s) = w^\top N(s) + \tfrac12 s^\top A s + c^\top s + b`.

    ``N`` is :func:`resnet` without read-out; :math:`A = K^\top K` with ``K`` of
    shape ``(rank, d)`` (``rank=None``: ``min(d, 10)``), ``c`` and ``w`` random,
    ``b = 0``.
    """
    s = WeightSampler(seed, xp=xp, device=device, dtype=dtype)
    layers: list[Dense] = [_dense(s, in_features, width, activation)]
    layers += [_dense(s, width, width, activation, cls=Residual, step=step) for _ in range(depth)]
    trunk = Sequential(*layers)
    r = min(in_features, 10) if rank is None else int(rank)
    w = s.normal((width,), 1.0 / math.sqrt(width))
    K = s.normal((r, in_features), 1.0 / math.sqrt(in_features))
    A = s.xp.matrix_transpose(K) @ K
    c = s.normal((in_features,), 0.1)
    return Potential(trunk, w, A, c, 0.0)
