r"""PyTorch bridge: ``torch.nn.Sequential`` to xderiv and back, sharing the tensors.

>>> import torch, xderiv as xd
>>> from xderiv.interop.torch import from_torch
>>> model = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)).double()
>>> x = torch.randn(100, 3, dtype=torch.float64)
>>> net = from_torch(model)
>>> H, lap = xd.hessian(net, x), xd.laplacian(net, x)      # (100, 1, 3, 3), (100, 1)

:func:`from_torch` reads ``Linear`` layers and the activation module that
follows each (``Tanh``, ``Sigmoid``, ``Softplus``, ``SiLU``, ``GELU``, ``ELU``,
``CELU``, ``SELU``, ``Mish``, ``Identity`` and the small modules defined here:
:class:`AntiTanh`, :class:`LogCosh`, :class:`Quadratic`, :class:`Sin`,
:class:`ResidualBlock`).  The xderiv layers
hold ``linear.weight.mT`` — a *view* of the Parameter (torch stores ``(out,
in)``, xderiv wants ``(in, out)``) — and ``linear.bias`` itself: nothing is
copied, an optimizer step on the module is seen by the xderiv network, and
gradients of any xderiv result flow back into the module's Parameters.

:func:`as_module` goes the other way: an ``nn.Module`` whose ``parameters()``
an optimizer takes, whose ``forward`` is the value, with ``jacobian``,
``gradient``, ``hessian``, ``laplacian`` and ``derivatives`` methods.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

import xderiv as _d

from .. import activations as _activations
from ..layers import Dense, Residual
from ..networks import Potential, Sequential
from ._structure import flatten, unflatten

# --------------------------------------------------------------------------- activation modules


class AntiTanh(nn.Module):
    r""":math:`\sigma(z) = |z| + \log(1 + e^{-2|z|}) = \log(2\cosh z)`, xderiv's ``"antitanh"``.

    The antiderivative of tanh used by hessQuik and OT-Flow (note the ``log 2``
    offset against :class:`LogCosh`).
    """

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        a = torch.abs(z)
        return a + torch.log1p(torch.exp(-2.0 * a))


class LogCosh(nn.Module):
    r""":math:`\sigma(z) = \log\cosh z = \mathrm{antitanh}(z) - \log 2`, xderiv's ``"logcosh"``."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        a = torch.abs(z)
        return a + torch.log1p(torch.exp(-2.0 * a)) - math.log(2.0)


class Quadratic(nn.Module):
    r""":math:`\sigma(z) = z^2 / 2`, xderiv's ``"quadratic"``."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return 0.5 * z * z


class Sin(nn.Module):
    r""":math:`\sigma(z) = \sin z`, xderiv's ``"sin"`` (SIREN-style layers; scale the weights yourself)."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sin(z)


class ResidualBlock(nn.Module):
    r"""Residual layer :math:`u' = u + h\,\sigma(u W^\top + b)`, read by :func:`from_torch` as :class:`xderiv.Residual`.

    Parameters
    ----------
    width : int
        Input and output width ``w``.
    activation : nn.Module, default ``nn.Tanh()``
        Any activation module :func:`from_torch` understands.
    step : float, default 1.0
        The step ``h``.
    bias : bool, default True
    device, dtype
        Passed to the inner ``nn.Linear``.

    Attributes
    ----------
    linear : nn.Linear
        The square map (torch orientation: ``linear.weight`` is ``(out, in)``).
    activation : nn.Module
    step : float
    """

    def __init__(
        self,
        width: int,
        activation: nn.Module | None = None,
        step: float = 1.0,
        bias: bool = True,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width, bias=bias, device=device, dtype=dtype)
        self.activation = nn.Tanh() if activation is None else activation
        self.step = float(step)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return u + self.step * self.activation(self.linear(u))

    def extra_repr(self) -> str:
        return f"step={self.step}"


def _activation_of(module: nn.Module) -> Any:
    """xderiv activation (name or Activation) for a torch activation module, or None if not one."""
    simple = {
        nn.Tanh: "tanh",
        nn.Sigmoid: "sigmoid",
        nn.SiLU: "silu",
        nn.Identity: "identity",
        AntiTanh: "antitanh",
        LogCosh: "logcosh",
        Quadratic: "quadratic",
        Sin: "sin",
        nn.SELU: "selu",
        nn.Mish: "mish",
    }
    for cls, name in simple.items():
        if type(module) is cls:
            return name
    if type(module) is nn.Softplus:
        return _activations.softplus(float(module.beta))
    if type(module) is nn.GELU:
        return _activations.gelu(module.approximate)
    if type(module) is nn.ELU:
        return _activations.elu(float(module.alpha))
    if type(module) is nn.CELU:
        return _activations.celu(float(module.alpha))
    return None


def _leaves(module: nn.Module) -> list[nn.Module]:
    """Children of (nested) ``nn.Sequential`` containers, flattened."""
    if isinstance(module, nn.Sequential):
        out: list[nn.Module] = []
        for child in module:
            out += _leaves(child)
        return out
    return [module]


def _linear_arrays(linear: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
    w = linear.weight.mT  # (in, out) view of the (out, in) Parameter
    b = linear.bias
    if b is None:
        b = torch.zeros(w.shape[1], dtype=w.dtype, device=w.device)
    return w, b


def from_torch(module: nn.Module) -> TorchSequential:
    """Convert a ``torch.nn.Sequential`` into an xderiv :class:`~xderiv.Sequential` sharing its tensors.

    Parameters
    ----------
    module : nn.Sequential or nn.Linear or ResidualBlock
        ``Linear`` layers, each optionally followed by one activation module
        (``Tanh``, ``Sigmoid``, ``Softplus`` with any ``beta``, ``SiLU``,
        ``GELU`` (both ``approximate`` forms), ``ELU`` and ``CELU`` with any
        positive ``alpha``, ``SELU``, ``Mish``, ``Identity``, :class:`AntiTanh`,
        :class:`LogCosh`, :class:`Quadratic`, :class:`Sin`), and
        :class:`ResidualBlock` s.  Nested ``Sequential`` s
        are flattened; ``Identity`` modules between layers are skipped; a
        ``Linear`` with no activation after it is linear.

    Returns
    -------
    TorchSequential
        An xderiv :class:`~xderiv.Sequential` that reads the module at every
        call: its weights are ``linear.weight.mT`` (views) and its biases the
        ``linear.bias`` Parameters themselves (a ``Linear`` without bias gets a
        constant zero tensor), always those the module holds *now*.  Gradients
        of xderiv results reach the module's Parameters; optimizer steps,
        ``load_state_dict`` (with or without ``assign=True``), ``.double()``,
        ``.float()``, ``.half()`` and ``.to(device)`` on the module are all seen
        by the network, and nothing is copied.

    Raises
    ------
    TypeError
        For a module type it does not know (the message names it and its position).
    ValueError
        For two activations in a row or an activation with no ``Linear`` before it.

    Notes
    -----
    ``nn.Softplus`` uses the identity where ``beta * z > threshold`` (default
    20); xderiv evaluates the exact softplus there (a difference below
    ``2e-9 / beta``).
    """
    return TorchSequential(module)


def _current(name: str, doc: str) -> Any:
    """A read-only property forwarding ``name`` to the network over the module's current Parameters."""
    return property(lambda self: getattr(self.resolve(), name), doc=doc)


class TorchSequential(Sequential):
    """A :class:`~xderiv.Sequential` over a torch module's current Parameters (made by :func:`from_torch`).

    Every xderiv call on it asks :meth:`resolve` for the network to evaluate.
    That compares a fingerprint of the module -- each leaf module and, per
    Parameter, its identity, storage address, dtype and device (a few
    attribute reads per Parameter) -- with the one of the last conversion and
    converts again only when it changed, so the network never computes with
    stale tensors: a moved, cast or replaced Parameter is picked up at the next
    call, while in-place updates (optimizer steps) are seen through the views
    anyway.  Nothing is copied either way.

    Attributes
    ----------
    module : nn.Module
        The converted module.
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self._key: tuple[Any, ...] | None = None
        self._net: Sequential | None = None
        self.resolve()  # convert (and validate) now, not at the first call

    def _fingerprint(self) -> tuple[Any, ...]:
        key: list[Any] = []
        for leaf in _leaves(self.module):
            key += [id(leaf), getattr(leaf, "step", None), getattr(leaf, "beta", None)]
            for p in leaf.parameters():
                key += [id(p), p.data_ptr(), p.dtype, p.device]
        return tuple(key)

    def resolve(self) -> Sequential:
        """The module as an xderiv network over its Parameters as they are now."""
        if self._net is not None and _compiling():  # traced: the guards of the compiled graph own staleness
            return self._net
        key = self._fingerprint()
        if key != self._key or self._net is None:
            self._net, self._key = _convert(self.module), key
        return self._net

    plan = _current("plan", "The current network's :class:`~xderiv._call.Plan`.")  # type: ignore[assignment]
    xp = _current("xp", "Namespace of the module's current Parameters.")  # type: ignore[assignment]
    device = _current("device", "Device of the module's current Parameters.")  # type: ignore[assignment]
    dtype = _current("dtype", "dtype of the module's current Parameters.")  # type: ignore[assignment]

    def with_arrays(self, arrays: list[Any]) -> Any:
        """A plain :class:`~xderiv.Sequential` of the same architecture over ``arrays``."""
        return self.resolve().with_arrays(arrays)

    def __repr__(self) -> str:
        return f"from_torch({type(self.module).__name__}): {self.resolve()!r}"


def _compiling() -> bool:
    """True while torch.compile traces the call."""
    check = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    return bool(check()) if check is not None else False


def _convert(module: nn.Module) -> Sequential:
    """One conversion of ``module`` into a plain Sequential over views of its current Parameters."""
    layers: list[Dense] = []
    items = _leaves(module)
    with torch.enable_grad():  # the .mT views must record autograd even if called under no_grad
        i = 0
        while i < len(items):
            item = items[i]
            where = f"module {i} ({type(item).__name__})"
            if isinstance(item, nn.Linear):
                act: Any = "identity"
                if i + 1 < len(items) and not isinstance(items[i + 1], (nn.Linear, ResidualBlock)):
                    act = _activation_of(items[i + 1])
                    if act is None:
                        raise TypeError(_unsupported(items[i + 1], i + 1))
                    i += 1
                layers.append(Dense(*_linear_arrays(item), activation=act))
            elif isinstance(item, ResidualBlock):
                act = _activation_of(item.activation)
                if act is None:
                    raise TypeError(_unsupported(item.activation, i) + " (inside a ResidualBlock)")
                w, b = _linear_arrays(item.linear)
                layers.append(Residual(w, b, activation=act, step=item.step))
            elif isinstance(item, nn.Identity):
                pass
            elif _activation_of(item) is not None:
                raise ValueError(
                    f"from_torch: {where} is an activation with no Linear layer right before it; "
                    "xderiv layers are Linear followed by at most one activation"
                )
            else:
                raise TypeError(_unsupported(item, i))
            i += 1
    if not layers:
        raise ValueError("from_torch: the module holds no Linear layer")
    return Sequential(*layers)


def _unsupported(item: nn.Module, i: int) -> str:
    return (
        f"from_torch: module {i} ({type(item).__name__}) is not supported; use nn.Linear, "
        "ResidualBlock and the activations Tanh, Sigmoid, Softplus, SiLU, GELU, ELU, CELU, SELU, Mish, Identity, "
        "xderiv.interop.torch.AntiTanh/LogCosh/Quadratic/Sin"
    )


# --------------------------------------------------------------------------- as_module


class XDerivModule(nn.Module):
    """A torch module evaluating an xderiv network; made by :func:`as_module`.

    ``forward(x)`` is the value; :meth:`jacobian`, :meth:`gradient`,
    :meth:`hessian`, :meth:`laplacian` and :meth:`derivatives` are the xderiv
    operators (same arguments, minus the network).  The network is rebuilt
    from the module's current Parameters on every call (a few Python objects,
    no copies), so ``.to(device)``, ``.double()`` and ``load_state_dict`` work.

    Attributes
    ----------
    source : nn.Module or None
        The wrapped ``nn.Sequential`` when built from one.
    """

    def __init__(self, source: nn.Module | None = None, spec: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.source = source
        self._live = None if source is None else from_torch(source)
        self._spec = spec
        self._recipe: list[tuple[str, str, tuple[int, ...]]] = []

    @property
    def net(self) -> Sequential | Potential:
        """The xderiv network over the current Parameters."""
        if self.source is not None:
            assert self._live is not None
            return self._live.resolve()
        assert self._spec is not None
        arrays = []
        for name, how, shape in self._recipe:
            p = self.get_parameter(name)
            arrays.append(p.mT if how == "mT" else p.reshape(shape) if how == "reshape" else p)
        return unflatten(self._spec, arrays)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The network's value at ``x``: ``(..., d)`` to ``(..., m)`` (Potential: ``(...,)``)."""
        return _d.value(self.net, x)

    def jacobian(self, x: torch.Tensor, mode: str = "auto") -> torch.Tensor:
        """:func:`xderiv.jacobian` of the network."""
        return _d.jacobian(self.net, x, mode=mode)

    def gradient(self, x: torch.Tensor, mode: str = "auto") -> torch.Tensor:
        """:func:`xderiv.gradient` of the (single-output) network."""
        return _d.gradient(self.net, x, mode=mode)

    def hessian(self, x: torch.Tensor, mode: str = "auto") -> torch.Tensor:
        """:func:`xderiv.hessian` of the network."""
        return _d.hessian(self.net, x, mode=mode)

    def laplacian(self, x: torch.Tensor, mode: str = "auto") -> torch.Tensor:
        """:func:`xderiv.laplacian` of the network."""
        return _d.laplacian(self.net, x, mode=mode)

    def derivatives(self, x: torch.Tensor, **kwargs: Any) -> Any:
        """:func:`xderiv.derivatives` of the network (keyword arguments passed on)."""
        return _d.derivatives(self.net, x, **kwargs)


def _view_recipe(a: torch.Tensor) -> tuple[nn.Parameter, str] | None:
    """``(base Parameter, "mT" | "reshape" | "same")`` when ``a`` is a simple view of a Parameter."""
    base = a._base
    if not isinstance(base, nn.Parameter) or not a.requires_grad:
        return None
    if a.data_ptr() != base.data_ptr():
        return None
    if base.ndim == 2 and a.shape == base.mT.shape and a.stride() == base.mT.stride():
        return base, "mT"
    if a.numel() == base.numel() and a.is_contiguous() and base.is_contiguous():
        return base, "reshape"
    return None


def as_module(net: Any) -> XDerivModule:
    """A ``torch.nn.Module`` around an xderiv network (or a ``torch.nn.Sequential``).

    Parameters
    ----------
    net : Sequential, Potential, layer, or nn.Sequential
        An xderiv network with torch weights, or a torch ``nn.Sequential``
        that :func:`from_torch` converts (then the module's Parameters *are*
        the Sequential's, registered under ``source.``).

    Returns
    -------
    XDerivModule
        ``parameters()`` lists every weight once: Parameters the network
        already holds (directly, or through a ``.mT``/reshape view such as
        :func:`from_torch` makes) are registered as they are; plain tensors
        are wrapped in new Parameters sharing their storage.

    Examples
    --------
    >>> import torch, xderiv as xd
    >>> from xderiv.interop.torch import as_module
    >>> u = as_module(xd.mlp([2, 16, 1], activation="tanh", xp=torch, seed=0))
    >>> opt = torch.optim.Adam(u.parameters(), lr=1e-3)
    >>> x = torch.rand(64, 2, dtype=torch.float64)
    >>> loss = (u.laplacian(x) + 1.0).square().mean()
    >>> loss.backward(); opt.step()
    """
    if isinstance(net, nn.Module):
        return XDerivModule(source=net)
    spec, arrays = flatten(net)
    for a in arrays:
        if not isinstance(a, torch.Tensor):
            raise TypeError(
                f"as_module: the network's weights must be torch tensors, got {type(a).__name__}; "
                "build it with xp=torch or load it with xderiv.interop.io.load(path, xp=torch)"
            )
    module = XDerivModule(spec=spec)
    seen: dict[int, str] = {}
    names = iter(_param_names(spec))
    for a in arrays:
        name = next(names)
        if isinstance(a, nn.Parameter):
            base, how = a, "same"
        else:
            found = _view_recipe(a)
            if found is None:
                base, how = nn.Parameter(a.detach(), requires_grad=True), "same"
            else:
                base, how = found
        if id(base) not in seen:
            seen[id(base)] = name
            module.register_parameter(name, base)
        module._recipe.append((seen[id(base)], how, tuple(a.shape)))
    return module


def _param_names(spec: dict[str, Any]) -> list[str]:
    from ._structure import array_names

    return [n.replace(".", "_") for n in array_names(spec)]


__all__ = [
    "AntiTanh",
    "LogCosh",
    "Quadratic",
    "ResidualBlock",
    "Sin",
    "TorchSequential",
    "XDerivModule",
    "as_module",
    "from_torch",
]
