r"""Torch modules that are not chains of layers, as xderiv networks (what :func:`from_torch` returns for them).

:class:`TorchGraph` differentiates the module with the jet engine: its ``forward`` is translated
into a function of ``x`` written against the Array API (:func:`~xderiv.interop.torch_graph.graph_function`,
every tensor read from the module at each call), which every operator runs once on a jet of ``x``.

:class:`AutogradGraph` is the opt-in fallback for a module with an operation the engine has no rule
for (``from_torch(module, fallback="autograd")``): the same operators, with the jet's terms computed
by nested forward-mode autodiff of ``module`` itself (:func:`torch.func.jvp`): the Taylor coefficient
:math:`y_k = \partial_v^k y / k!` along each direction :math:`v` costs :math:`k` nested ``jvp``\ s, a
Hessian :math:`d` ``jacfwd`` of ``jacrev``.  It is correct for any module torch differentiates,
and several times slower than the jet engine; it warns once, when it is made.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from array_api_compat import array_namespace
from torch import nn

from ..jets import Function, JetArray
from ..jets.kinds import Hessian
from ._torch_fx import ActivationSpec
from .torch_graph import _fingerprint, graph_function


def _reference_tensor(module: nn.Module) -> torch.Tensor:
    for t in list(module.parameters()) + list(module.buffers()):
        if t.is_floating_point():
            return t
    raise ValueError(
        f"from_torch: {type(module).__name__} holds no floating-point tensor to take dtype and device from"
    )


class _ModuleNetwork(Function):
    """What both graph networks share: namespace, device and dtype read from the module's tensors now."""

    module: nn.Module

    @property  # type: ignore[override]
    def xp(self) -> Any:
        """The array-api-compat namespace of the module's tensors."""
        return array_namespace(_reference_tensor(self.module))

    @property  # type: ignore[override]
    def device(self) -> Any:
        return _reference_tensor(self.module).device

    @property  # type: ignore[override]
    def dtype(self) -> Any:
        return _reference_tensor(self.module).dtype

    def parameters(self) -> Any:
        """The module's Parameters (what training updates)."""
        return self.module.parameters()


class TorchGraph(_ModuleNetwork):
    """A torch module differentiated by the jet engine (made by :func:`~xderiv.interop.torch.from_torch`).

    Its ``module`` is the converted module, read at every call: never stale, and gradients reach
    every Parameter.
    """

    def __init__(self, module: nn.Module, activations: Mapping[Any, ActivationSpec] | None = None) -> None:
        _reference_tensor(module)
        super().__init__(graph_function(module, activations))
        self.module = module
        self._checked: set[Any] = set()

    def evaluate_jet(self, x: JetArray) -> JetArray:
        """The translated ``forward`` on the jet ``x``, after the once-per-structure check (:meth:`check`)."""
        self.check(x.value)
        return self.f(x)

    def check(self, points: torch.Tensor) -> None:
        """Compare the translation with ``module`` itself at up to 4 of ``points``, once per module structure.

        Raises ``ValueError`` naming the module and the largest difference when they disagree beyond
        ``rtol * max(1, max|module(x)|)`` (``rtol`` 1e-9 in float64, 1e-5 in float32).  Skipped inside
        ``torch.compile`` and on ``meta`` tensors; torch's random state is left as it was.
        """
        key = _fingerprint(self.module)
        if key in self._checked or torch.compiler.is_compiling() or points.device.type == "meta":
            return
        rtol = {torch.float64: 1e-9, torch.float32: 1e-5}.get(points.dtype)
        if rtol is not None and points.ndim >= 1 and points.shape[0] > 0:
            probe = points[:4].detach()
            devices = [probe.device] if probe.device.type == "cuda" else []
            with torch.no_grad(), torch.random.fork_rng(devices=devices):
                want, got = self.module(probe), self.f(probe)
            name = type(self.module).__name__
            if tuple(want.shape) != tuple(got.shape):
                raise ValueError(
                    f"from_torch: the translation of {name}.forward returns {tuple(got.shape)} where {name} "
                    f"returns {tuple(want.shape)}"
                )
            tol = rtol * max(1.0, float(want.abs().max()))
            err = float((got - want).abs().max())
            if not err <= tol:
                raise ValueError(
                    f"from_torch: the translation of {name}.forward does not compute what {name} computes: "
                    f"max |f(x) - {name}(x)| = {err:.3g} at {probe.shape[0]} points (tolerance {tol:.3g})"
                )
        self._checked.add(key)

    def __repr__(self) -> str:
        return f"from_torch({type(self.module).__name__}): a graph (jet engine)"


class AutogradGraph(_ModuleNetwork):
    """A torch module differentiated by nested torch autograd behind the operator API (see the module docstring).

    Parameters
    ----------
    module : torch.nn.Module
        The module, called as it is.
    reason : str
        Why the jet engine could not take it (named in the warning).
    """

    def __init__(self, module: nn.Module, reason: str) -> None:
        _reference_tensor(module)
        super().__init__(module)
        self.module = module
        warnings.warn(
            f"from_torch: {type(module).__name__} is differentiated by nested torch autograd ({reason}). "
            "Every operator works, at about K nested jvps per direction for a Taylor coefficient of order K "
            "(a Laplacian: 2 per input dimension), several times the jet engine's cost; add the missing "
            "operation or rewrite it with supported ones to get the fast path",
            stacklevel=3,
        )

    def evaluate_jet(self, x: JetArray) -> JetArray:
        """The output jet of ``module`` at the input jet ``x`` (the seed of an operator: value and directions)."""
        kind = x.kind
        terms = x.terms
        if any(t is not None for t in terms[2:]):
            raise ValueError(
                "a module differentiated by autograd (fallback='autograd') takes the operator's input itself, "
                "not a value computed from it inside another function"
            )
        lead = kind.lead
        x0: Any = terms[0]
        shape = tuple(x0.shape[lead:])
        point = torch.reshape(x0, shape)
        f = self.module
        if isinstance(kind, Hessian):
            flat = torch.reshape(point, (-1, shape[-1]))
            jac = torch.func.vmap(torch.func.jacrev(f))(flat)  # (n, m, d)
            hess = torch.func.vmap(torch.func.hessian(f))(flat)  # (n, m, d, d)
            y = f(point)
            d = shape[-1]
            first = torch.movedim(torch.reshape(jac, y.shape + (d,)), -1, 0)[:, None]
            full = torch.movedim(torch.movedim(torch.reshape(hess, y.shape + (d, d)), -1, 0), -1, 0)
            second = 0.5 * kind.pack(full, array_namespace(full))
            return JetArray((torch.reshape(y, (1, 1) + tuple(y.shape)), first, second), kind)
        seed: Any = terms[1] if kind.order >= 1 else None
        directions = torch.broadcast_to(seed, (seed.shape[0],) + shape) if seed is not None else None
        y = f(point)
        out: list[Any] = [torch.reshape(y, (1,) + tuple(y.shape))]
        if kind.order == 0:
            return JetArray(tuple(out), kind)
        per_direction: list[list[torch.Tensor]] = [[] for _ in range(kind.order)]
        for v in directions:  # type: ignore[union-attr]
            g = f
            for k in range(kind.order):
                g = _directional(g, v)
                per_direction[k].append(g(point) / math.factorial(k + 1))
        for k in range(kind.order):
            stacked = torch.stack(per_direction[k])
            if kind.collapsed(k + 1):
                weights: Any = kind.weights
                w = torch.reshape(weights, (-1,) + (1,) * (stacked.ndim - 1))
                stacked = torch.sum(w * stacked, dim=0, keepdim=True)
            out.append(stacked)
        return JetArray(tuple(out), kind)

    def __repr__(self) -> str:
        return f"from_torch({type(self.module).__name__}): nested autograd (fallback)"


def _directional(g: Any, v: torch.Tensor) -> Any:
    """``x -> d/dt g(x + t v)`` at ``t = 0`` (one forward-mode product)."""

    def h(x: torch.Tensor) -> torch.Tensor:
        return torch.func.jvp(g, (x,), (v,))[1]

    return h
