r"""PyTorch bridge: torch modules to xderiv and back, sharing the tensors.

>>> import torch, xderiv as xd
>>> from xderiv.interop.torch import from_torch
>>> model = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)).double()
>>> x = torch.randn(100, 3, dtype=torch.float64)
>>> net = from_torch(model)
>>> H, lap = xd.hessian(net, x), xd.laplacian(net, x)      # (100, 1, 3, 3), (100, 1)

:func:`from_torch` reads a module's ``forward`` by tracing it with
``torch.fx``, so ``nn.Sequential`` s and custom modules convert alike: chains
of ``Linear`` layers, elementwise activations (modules such as ``nn.Tanh()``
or functions such as ``torch.tanh``, ``F.gelu``, ``torch.sin(w0 * z)``;
the tables :data:`MODULE_ACTIVATIONS` and :data:`FUNCTION_ACTIVATIONS`, plus
the caller's ``activations=`` mapping), residual updates ``u + h *
act(linear(u))`` (as in :class:`ResidualBlock`) and affine input/output
scalings such as ``(x - mu) / sigma``.  The xderiv layers hold
``linear.weight.mT`` -- a *view* of the Parameter (torch stores ``(out,
in)``, xderiv wants ``(in, out)``) -- and ``linear.bias`` itself; a weight
computed from tensors (``diag(1/sigma)`` of a scaling) is recomputed
at every call.  Nothing is copied, an optimizer step on the module is
seen by the xderiv network, and gradients of any xderiv result flow back
into the module's Parameters.  Graphs that are not such a chain are refused
with an error naming the ``torch.fx`` node.

:func:`as_module` goes the other way: an ``nn.Module`` whose ``parameters()``
an optimizer takes, whose ``forward`` is the value, with ``jacobian``,
``gradient``, ``hessian``, ``laplacian`` and ``derivatives`` methods.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import xderiv as _d

from .. import activations as _activations
from ..activations import Activation
from ..models.layers import Dense, Residual
from ..models.networks import Sequential
from ._softplus import torch_softplus
from ._structure import flatten, unflatten
from ._torch_fx import (
    ActivationSpec,
    ActivationTable,
    MappingError,
    Program,
    merged_tables,
    not_elementwise,
    read,
)

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


# --------------------------------------------------------------------------- activation tables

# One line per activation.  A value is an xderiv activation name, an xderiv Activation, or a callable
# returning one: called with the module (module classes) or with the call's arguments after the input
# (functions; ``F.softplus(x, beta=2.0)`` calls ``spec(beta=2.0)``).  Strings as keys are Tensor
# methods (``z.tanh()``; ``F.tanh`` and ``F.sigmoid`` trace as those).  Read-only for users: pass
# ``from_torch(..., activations=...)`` to add or override entries for one conversion.
MODULE_ACTIVATIONS: dict[type[nn.Module], ActivationSpec] = {
    nn.Identity: "identity",
    nn.Tanh: "tanh",
    nn.Sigmoid: "sigmoid",
    nn.SiLU: "silu",
    nn.Softplus: lambda m: torch_softplus(m.beta, m.threshold),
    nn.GELU: lambda m: _activations.gelu(m.approximate),
    nn.ELU: lambda m: _activations.elu(m.alpha),
    nn.CELU: lambda m: _activations.celu(m.alpha),
    nn.SELU: "selu",
    nn.Mish: "mish",
    AntiTanh: "antitanh",
    LogCosh: "logcosh",
    Quadratic: "quadratic",
    Sin: "sin",
}
FUNCTION_ACTIVATIONS: dict[Any, ActivationSpec] = {
    torch.tanh: "tanh",
    "tanh": "tanh",
    torch.sigmoid: "sigmoid",
    "sigmoid": "sigmoid",
    F.silu: lambda inplace=False: "silu",
    torch.sin: "sin",
    "sin": "sin",
    F.softplus: lambda beta=1.0, threshold=20.0: torch_softplus(beta, threshold),
    F.gelu: lambda approximate="none": _activations.gelu(approximate),
    F.elu: lambda alpha=1.0, inplace=False: _activations.elu(alpha),
    F.celu: lambda alpha=1.0, inplace=False: _activations.celu(alpha),
    F.selu: lambda inplace=False: "selu",
    torch.selu: "selu",
    F.mish: lambda inplace=False: "mish",
}
# sigma(a z) for a Python number a, as one activation (keeps the Linear's weight a view); without an
# entry, a is folded into the Linear's weight and bias.
SCALED_ACTIVATIONS: dict[str, Callable[[float], Activation]] = {
    "sin": _activations.sine,  # SIREN's sin(w0 * linear(x))
}


def _activation_table(activations: Mapping[Any, ActivationSpec] | None) -> ActivationTable:
    """The built-in tables with the user's ``activations`` on top (nothing global changes)."""

    def check(key: Any) -> None:
        why = not_elementwise(key)
        if why is not None:
            raise ValueError(
                f"from_torch: activations maps {getattr(key, '__name__', key)}, but {why}; an activations= entry "
                "is only for elementwise activations (one scalar function applied to every feature alone), and no "
                "xderiv layer computes this one: take it out of forward"
            )

    modules, functions, wrapped = merged_tables(
        MODULE_ACTIVATIONS, FUNCTION_ACTIVATIONS, activations, "from_torch", check
    )
    return ActivationTable(modules, functions, SCALED_ACTIVATIONS, wrapped)


def from_torch(
    module: nn.Module,
    activations: Mapping[Any, ActivationSpec] | None = None,
    *,
    check: bool = True,
    fallback: str | None = None,
) -> Any:
    r"""Convert a torch module into an xderiv network sharing its tensors: a chain of layers, or any graph.

    A module whose ``forward`` is a chain of the pieces below becomes a
    :class:`TorchSequential`, differentiated by the chain recursions (both
    modes, Gram forms, chunking).  Any other module built from supported
    operations (gated MLPs, PirateNets, LayerNorm, ``torch.cat`` skips,
    Fourier features written with ``torch.cos``/``torch.sin``, attention,
    log-determinants: see :mod:`xderiv.interop.torch_graph`) becomes a
    :class:`~xderiv.interop.torch_network.TorchGraph`, differentiated by the
    jet engine (:mod:`xderiv.jets`) in forward mode; every operator takes
    both, and both read the module's tensors at every call.

    The module's ``forward`` is read by tracing it with ``torch.fx`` (not by
    class names), so ``nn.Sequential`` s (nested at any depth) and custom
    modules whose ``forward`` is a chain of the pieces below both convert,
    typically a Python loop over an ``nn.ModuleList``.

    Parameters
    ----------
    module : nn.Module
        ``forward(x)`` of one tensor ``x`` of shape ``(..., d)``, built from:

        - ``nn.Linear`` modules (also ``F.linear(u, W, b)`` and ``u @ W`` with
          tensors of the module);
        - elementwise activations after a Linear, as modules (``nn.Tanh()``,
          ``nn.Sigmoid()``, ``nn.Softplus(beta)``, ``nn.SiLU()``,
          ``nn.GELU()`` in both ``approximate`` forms, ``nn.ELU(alpha)``,
          ``nn.CELU(alpha)``, ``nn.SELU()``, ``nn.Mish()``,
          ``nn.Identity()``, :class:`AntiTanh`, :class:`LogCosh`,
          :class:`Quadratic`, :class:`Sin`) or functions (``torch.tanh``,
          ``F.tanh``, ``z.tanh()``, ``torch.sigmoid``, ``F.silu``,
          ``F.softplus``, ``F.gelu``, ``F.elu``, ``F.celu``, ``F.selu``,
          ``F.mish``, ``torch.sin``; ``torch.sin(w0 * z)`` with a Python
          ``w0`` is xderiv's ``sine(w0)``), or any in ``activations``;
        - residual updates ``u + h * act(linear(u))`` (also ``u - ...``, and
          ``u + linear(u)``) with ``h`` a Python number, as in
          :class:`ResidualBlock`;
        - affine maps with constants anywhere: ``(x - mu) / sigma``,
          ``x * s + t``, ``2 * (x - lo) / (hi - lo) - 1``, ``torch.sin(w0 *
          linear(x))``, where the constants are Python numbers or tensors of
          the module (Parameters, buffers, tensor attributes) of shape ``()``,
          ``(w,)`` or ``(1, w)``, and expressions of them.

        ``nn.Identity`` and identity activations are skipped.
    activations : dict, optional
        More activations, or other readings of the built-in ones, for this
        conversion only (nothing global changes).  Keys are ``nn.Module``
        classes (matched by exact class; the module is kept whole while
        tracing) or functions called in ``forward`` (a plain Python function
        is kept whole when ``forward`` calls it by its global name).  Values
        are an xderiv activation name (``"tanh"``, or one registered with
        :func:`xderiv.register_activation`), an :class:`xderiv.Activation`,
        or a callable returning one of those: called with the module for a
        class (``{nn.Softplus: lambda m: ...}``, read again whenever the
        module's Python attributes change), with the call's arguments after
        the input for a function.  Only for *elementwise* activations, one
        scalar function applied to every feature alone: known non-elementwise
        keys (``nn.LayerNorm``, ``nn.BatchNorm1d``, ``nn.Softmax``,
        ``nn.Linear``, ``F.layer_norm``, ``F.softmax``, ...) raise
        ``ValueError``, and so does a mapped module holding Parameters or a
        tensor of more than one element.
    fallback : {None, "autograd"}
        With ``"autograd"``, a module with an operation neither reader
        supports is differentiated by nested torch autograd behind the same
        operators (:class:`~xderiv.interop.torch_network.AutogradGraph`, with
        a warning, once, naming the operation and the cost).  Without it such
        a module raises ``NotImplementedError`` naming the node, the
        operation and the module path.
    check : bool, default True
        Compare the network with ``module(x)`` at a few fixed points whenever
        ``forward`` is read (at conversion, and when a changed structure is
        traced again); see Notes.  ``False`` accepts a network that computes
        something else (a mapping you chose knowing it differs).

    Returns
    -------
    TorchSequential or TorchGraph or AutogradGraph
        For a chain, an xderiv :class:`~xderiv.Sequential` that reads the module at every
        call, always over the tensors the module holds *now*: a Linear's
        weight is ``linear.weight.mT`` (a view) and its bias the Parameter
        itself; a weight or bias computed from tensors (a scaling's
        ``diag(1/sigma)``, a Linear with a scale folded in) is recomputed at
        every call, so any change of them is seen, also in-place edits through
        ``.data`` (which leave no trace on the tensor).  Gradients of xderiv results reach the
        module's Parameters; optimizer steps, ``load_state_dict`` (with or
        without ``assign=True``), ``.double()``, ``.float()``, ``.half()``,
        ``.to(device)``, replaced Parameters, buffers or submodules and
        changed Python attributes (a step ``h``) are all seen.

    Raises
    ------
    TypeError
        For a module class or function it does not know, naming the fx node
        (name, op, target, module path and class).
    ValueError
        For a graph that is not a chain of xderiv layers, naming the fx node
        and why: two activations in a row, an activation with no Linear
        before it, inputs joined (``torch.cat``) or multiplied together, a
        residual branch with two Linears, several inputs, a ``forward`` that
        ``torch.fx`` cannot trace (control flow on values), or no Linear.  For
        an ``activations=`` entry that is not elementwise.  When the network
        read does not compute ``module(x)`` at the probe points (see Notes),
        naming the module and the largest difference.

    Notes
    -----
    How the graph becomes layers: a Linear and the activation after it are
    one :class:`~xderiv.Dense` over the Linear's own tensors; a scale or
    shift *between* a Linear and its activation (``tanh(a * z + c)``) is
    folded into that layer's weight and bias, except a Python factor on an
    activation with a frequency form in :data:`SCALED_ACTIVATIONS`
    (``sin(w0 * z)`` becomes :func:`xderiv.activations.sine` ``(w0)`` over
    the Linear's own tensors).  A scale or shift of anything else
    -- the input (``(x - mu) / sigma``), an activation's output, a Linear's
    output with no activation (``y * s + t``) -- becomes its own
    :class:`~xderiv.Dense` with identity activation, weight ``diag(s)`` and
    bias ``t``, so the Linears around it keep their Parameters as views.

    Tracing and matching run once per module *structure*: the tree of
    submodules and their Python attributes (numbers, strings, booleans,
    None and tuples of those), so a changed step ``h`` traces again, while
    ``train()``/``eval()`` switch between remembered structures.  Each call
    only compares a fingerprint of the tensors the network reads (identity,
    storage, dtype, device and shape) and rebuilds the views when it
    changed: a few microseconds per call when nothing changed.  Arrays
    *computed* from tensors (folded weights, a scaling's diagonal and shift)
    are recomputed at every call (a few small tensor operations; each call
    has its own autograd graph), since no version counter sees edits through
    ``.data``; arrays that are a Parameter or a view of one are never
    rebuilt.  Tensors created inside ``forward`` from Python values
    (``torch.tensor(2.0)``) are taken as traced.  A callable in
    ``activations`` runs when the structure is read, and again when a
    tensor of its module changes; gradients do not reach tensors it reads
    (write a learnable slope as ``torch.tanh(self.a * z)`` in ``forward``
    instead: it is folded, and differentiated).  A mapped module's scalar
    tensors are compared by value at every call.

    With ``check=True`` every structure read is verified once: ``net(x)`` and
    ``module(x)`` (under ``torch.no_grad()``) at 4 fixed points
    :math:`x_{ij} = r_i \sin(0.618\,(i d + j) + 0.5)`, :math:`r_i = 0.5, 1,
    1.5, 2` (a formula: torch's random state is untouched), in the module's
    dtype and on its device, must agree to ``rtol * max(1, max|module(x)|)``
    with ``rtol`` 1e-9 (float64), 1e-5 (float32), 1e-2 (float16), 5e-2
    (bfloat16).  It runs when ``forward`` is traced, never per call nor
    inside ``torch.compile``; it is skipped on ``meta`` tensors and while a
    dropout in the graph is in training mode (random outputs; it runs when
    ``eval()`` changes the structure).

    ``nn.Softplus`` uses the identity where ``beta * z > threshold`` (default
    20); xderiv evaluates the exact softplus there (a difference of at most
    ``log(1 + exp(-threshold)) / beta``, 2.1e-9 / beta at the default).  A
    threshold below 20 raises ``ValueError`` instead of converting to a
    different function.

    Examples
    --------
    >>> import torch, xderiv as xd
    >>> from torch import nn
    >>> class PINN(nn.Module):
    ...     def __init__(self, lo, hi, width=32, depth=3):
    ...         super().__init__()
    ...         self.register_buffer("lo", lo)
    ...         self.register_buffer("hi", hi)
    ...         self.inp = nn.Linear(lo.numel(), width)
    ...         self.hidden = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
    ...         self.out = nn.Linear(width, 1)
    ...     def forward(self, x):
    ...         u = torch.tanh(self.inp(2 * (x - self.lo) / (self.hi - self.lo) - 1))
    ...         for layer in self.hidden:
    ...             u = u + 0.5 * torch.tanh(layer(u))
    ...         return self.out(u)
    >>> model = PINN(torch.zeros(2), torch.ones(2)).double()
    >>> net = from_torch(model)
    >>> [type(layer).__name__ for layer in net.layers]
    ['Dense', 'Dense', 'Residual', 'Residual', 'Residual', 'Dense']
    >>> xd.laplacian(net, torch.rand(5, 2, dtype=torch.float64)).shape
    torch.Size([5, 1])
    """
    if fallback not in (None, "autograd"):
        raise ValueError(f"from_torch: fallback must be None or 'autograd', got {fallback!r}")
    try:
        return TorchSequential(module, activations, check=check)
    except (TypeError, ValueError) as exc:
        if not _not_a_chain(exc):
            raise
        chain_error = exc
    from .torch_network import AutogradGraph, TorchGraph

    try:
        return TorchGraph(module, activations)
    except NotImplementedError as exc:
        if fallback == "autograd":
            return AutogradGraph(module, str(exc))
        raise NotImplementedError(
            f"{exc}\n(as a chain of layers: {chain_error}). Write that operation with supported ones, or pass "
            "from_torch(module, fallback='autograd') to differentiate the whole module by nested torch autograd"
        ) from exc


def _not_a_chain(exc: Exception) -> bool:
    """Whether the chain reader refused the module's structure (a graph may still take it)."""
    if isinstance(exc, MappingError):  # a refused activations= entry is the caller's to fix, not a structure
        return False
    text = str(exc)
    return text.startswith("from_torch: cannot convert") or "holds no Linear layer" in text


def _current(name: str, doc: str) -> Any:
    """A read-only property forwarding ``name`` to the network over the module's current Parameters."""
    return property(lambda self: getattr(self.resolve(), name), doc=doc)


class TorchSequential(Sequential):
    """A :class:`~xderiv.Sequential` over a torch module's current tensors (made by :func:`from_torch`).

    Every xderiv call on it asks :meth:`resolve` for the network to evaluate,
    which works in two levels:

    1. *structure*: the submodule tree and the modules' Python attributes
       (a tuple per module, a dict lookup per attribute).  When it changed,
       ``forward`` is traced and matched again (a few milliseconds; the last
       eight structures are remembered, so ``model.train()``/``model.eval()``
       does not trace again);
    2. *arrays*: per tensor the network reads, its identity, storage address,
       dtype, device and shape.  When it changed, the layers are rebuilt over
       the current tensors (views where possible, nothing copied).

    In-place updates of a Parameter used as a Linear's weight or bias are
    seen through the views without any rebuild.  Arrays computed from
    tensors (folded scales, a scaling's diagonal) are recomputed at every
    call: in-place edits through ``.data`` bump no version counter, so no
    cheaper test could see them.  A newly traced structure is checked
    against the module at a few points (see :func:`from_torch`).

    Attributes
    ----------
    module : nn.Module
        The converted module.
    """

    def __init__(
        self, module: nn.Module, activations: Mapping[Any, ActivationSpec] | None = None, *, check: bool = True
    ) -> None:
        self.module = module
        self.check = check
        self._table = _activation_table(activations)
        self._programs: dict[tuple[Any, ...], Program] = {}
        self._program: Program | None = None
        self._structure: tuple[Any, ...] | None = None
        self._key: tuple[Any, ...] | None = None
        self._net: Sequential | None = None
        self._arrays: list[Any] = []
        self._live: list[int] = []  # indices of the computed arrays: recomputed at every call
        self._held: list[Any] = []  # the fingerprinted tensors, kept alive so their ids stay theirs
        self._unchecked = False  # the program was just read: probe it against the module once built
        self.resolve()  # convert (and validate) now, not at the first call

    def resolve(self) -> Sequential:
        """The module as an xderiv network over its tensors as they are now."""
        net = self._net
        if net is not None and _compiling():  # traced: the guards of the compiled graph own staleness
            return net if not self._live else self._refresh(self._program.values())  # type: ignore[union-attr]
        program = self._program
        if program is None or program.structure() != self._structure:
            program = self._replan()
        vals = program.values()
        key = program.array_key(vals)
        if key is None:  # a source vanished, is no tensor any more or changed shape: the structure changed
            program = self._replan(force=True)
            vals = program.values()
            key = program.array_key(vals)
            if key is None:
                raise RuntimeError(f"from_torch: {type(self.module).__name__} changed while it was read")
        if key != self._key or net is None:
            net = self._build(program, vals, key)
            if self._unchecked:
                self._probe(program, net)
            return net
        if self._live:  # computed arrays are never cached: .data edits change tensors without a trace
            return self._refresh(vals)
        return net

    def _replan(self, force: bool = False) -> Program:
        """Trace and match again, or take the program of a structure seen (and checked) before."""
        program = None
        if not force and self._program is not None:
            structure = self._program.structure()
            cached = self._programs.get(structure)
            if cached is not None and cached.structure() == structure:
                program = cached
        self._unchecked = program is None
        if program is None:
            program = read(self.module, self._table)
        self._program, self._structure, self._key = program, program.structure(), None
        return program

    def _build(self, program: Program, vals: list[Any], key: tuple[Any, ...] | None) -> Sequential:
        with torch.enable_grad():  # views and computed arrays record autograd even if called under no_grad
            arrays = [e(vals) for e in program.arrays]
            layers: list[Dense] = []
            for i, recipe in enumerate(program.layers):
                w, b = arrays[2 * i], arrays[2 * i + 1]
                if recipe.residual:
                    layers.append(Residual(w, b, activation=recipe.activation, step=recipe.step))
                else:
                    layers.append(Dense(w, b, activation=recipe.activation))
            net = Sequential(*layers)
        self._net, self._arrays, self._key, self._held = net, arrays, key, vals
        self._live = list(program.derived)
        return net

    def _refresh(self, vals: list[Any]) -> Sequential:
        """The network with its computed arrays recomputed (fresh autograd graphs), the views reused."""
        net, program = self._net, self._program
        assert net is not None and program is not None
        arrays = list(self._arrays)
        layers = list(net.layers)
        for j in self._live:
            arrays[j] = program.arrays[j](vals)
        for i in sorted({j // 2 for j in self._live}):
            layers[i] = layers[i].with_arrays(arrays[2 * i], arrays[2 * i + 1])
        plan = copy.copy(net.plan)  # same shapes, so the same cost table: only the layers change
        object.__setattr__(plan, "layers", tuple(layers))
        new = copy.copy(net)  # same namespace, device and dtype: only the plan changes
        new.plan = plan
        return new

    def _probe(self, program: Program, net: Sequential) -> None:
        """Compare ``net(x)`` with ``module(x)`` at a few fixed points; remember the program when they agree.

        Raises ValueError naming the module and the mismatch otherwise (and
        forgets the program, so the next call reads the module again).
        """
        try:
            if self.check:
                _probe(self.module, net, program)
        except Exception:
            self._program, self._structure, self._key, self._net = None, None, None, None
            raise
        self._unchecked = False
        if len(self._programs) >= 8:
            self._programs.pop(next(iter(self._programs)))
        self._programs[program.structure()] = program

    plan = _current("plan", "The current network's :class:`~xderiv.engine.call.Plan`.")  # type: ignore[assignment]
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


# Relative tolerance of the conversion probe, per dtype (times max(1, max |module(x)|)).  float64 leaves
# room for the Softplus threshold (2.1e-9 / beta per unit, see from_torch); a wrong reading is off by
# far more (1e-2 and up).
_PROBE_RTOL = {torch.float64: 1e-9, torch.float32: 1e-5, torch.bfloat16: 5e-2, torch.float16: 1e-2}
_PROBE_POINTS = 4


def _probe_points(d: int, dtype: torch.dtype, device: torch.device, n: int = _PROBE_POINTS) -> torch.Tensor:
    r"""``n`` fixed points in :math:`\mathbb{R}^d`: :math:`x_{ij} = r_i \sin(0.618\,(i d + j) + 0.5)`.

    The radii :math:`r_i = 0.5, 1, 1.5, 2, \dots` spread them over the scales
    inputs usually have.  Drawn from a formula, not a generator: torch's
    random state is never touched.
    """
    k = torch.arange(n * d, device=device).reshape(n, d).to(dtype)
    radius = (torch.arange(n, device=device).to(dtype) + 1.0) * 0.5
    return torch.sin(0.618 * k + 0.5) * radius[:, None]


def _probe(module: nn.Module, net: Sequential, program: Program) -> None:
    """Raise ValueError when ``net`` does not compute ``module.forward`` at :func:`_probe_points`.

    Run once per traced structure (never per call, never under
    ``torch.compile``), under ``torch.no_grad()`` and with torch's CPU (and the
    module's CUDA device's) random state restored afterwards.  Skipped on
    ``meta`` tensors (no values), for non-floating dtypes, and when the graph
    holds a dropout in training mode (the module's output is random there; the
    probe runs again once ``eval()`` changes the structure).
    """
    device, dtype = net.device, net.dtype
    if _compiling() or program.stochastic or device.type == "meta" or dtype not in _PROBE_RTOL:
        return
    x = _probe_points(program.in_features, dtype, device)
    devices = [device] if device.type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=devices):
        want = module(x)
        got = _d.value(net, x)
    name = type(module).__name__
    if not isinstance(want, torch.Tensor) or tuple(want.shape) != tuple(got.shape):
        shape = tuple(want.shape) if isinstance(want, torch.Tensor) else type(want).__name__
        raise ValueError(
            f"from_torch: the network read from {name}.forward maps {tuple(x.shape)} to {tuple(got.shape)}, "
            f"but {name} returns {shape} there"
        )
    want, got = want.to(dtype), got.to(dtype)
    finite = want[torch.isfinite(want)]
    scale = max(1.0, float(finite.abs().max())) if finite.numel() else 1.0
    tol = _PROBE_RTOL[dtype] * scale
    if bool(torch.isclose(got, want, rtol=0.0, atol=tol, equal_nan=True).all()):
        return
    err = float((got - want).abs().nan_to_num(nan=math.inf).max())
    acts = ", ".join(f"{type(layer).__name__}({layer.activation.name})" for layer in net.layers)
    raise ValueError(
        f"from_torch: the network read from {name}.forward does not compute what {name} computes: "
        f"max |net(x) - {name}(x)| = {err:.3g} at {x.shape[0]} probe points (tolerance {tol:.3g} for "
        f"{dtype}); the layers read: {acts}. An activations= entry probably maps a module or function to "
        "an activation it does not compute"
    )


# --------------------------------------------------------------------------- as_module


class XDerivModule(nn.Module):
    """A torch module evaluating an xderiv network; made by :func:`as_module`.

    ``forward(x)`` is the value; :meth:`jacobian`, :meth:`gradient`,
    :meth:`hessian`, :meth:`laplacian` and :meth:`derivatives` are the xderiv
    operators: every argument after ``x`` (``mode``, ``coords``,
    ``chunk_size``, ``estimator``, ``samples``, ``seed``, ``per_point``, ...)
    is passed on to the public function as it is.  The network is rebuilt
    from the module's current Parameters on every call (a few Python objects,
    no copies), so ``.to(device)``, ``.double()`` and ``load_state_dict`` work.

    Attributes
    ----------
    source : nn.Module or None
        The wrapped torch module when built from one (or from
        :func:`from_torch` of one): its Parameters are this module's, its
        buffers stay buffers.
    """

    def __init__(
        self,
        source: nn.Module | None = None,
        spec: dict[str, Any] | None = None,
        converted: Any = None,
    ) -> None:
        super().__init__()
        if converted is not None:
            source = converted.module
        self.source = source
        self._converted = converted if converted is not None or source is None else from_torch(source)
        self._spec = spec
        self._recipe: list[tuple[str, str, tuple[int, ...]]] = []

    @property
    def net(self) -> Any:
        """The xderiv network over the current Parameters."""
        if self.source is not None:
            assert self._converted is not None
            return self._converted.resolve()
        assert self._spec is not None
        arrays = []
        for name, how, shape in self._recipe:
            p = self.get_parameter(name)
            arrays.append(p.mT if how == "mT" else p.reshape(shape) if how == "reshape" else p)
        return unflatten(self._spec, arrays)

    def forward(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """:func:`xderiv.value`: ``(..., d)`` to ``(..., m)`` (Potential: ``(...,)``), ``chunk_size`` passed on."""
        return _d.value(self.net, x, **kwargs)

    def jacobian(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """:func:`xderiv.jacobian` of the network (the other arguments passed on)."""
        return _d.jacobian(self.net, x, *args, **kwargs)

    def gradient(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """:func:`xderiv.gradient` of the (single-output) network (the other arguments passed on)."""
        return _d.gradient(self.net, x, *args, **kwargs)

    def hessian(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """:func:`xderiv.hessian` of the network (the other arguments passed on)."""
        return _d.hessian(self.net, x, *args, **kwargs)

    def laplacian(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """:func:`xderiv.laplacian` of the network (``mode``, ``coords``, ``estimator``, ... passed on)."""
        return _d.laplacian(self.net, x, *args, **kwargs)

    def derivatives(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        """:func:`xderiv.derivatives` of the network (the other arguments passed on)."""
        return _d.derivatives(self.net, x, *args, **kwargs)


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
    net : Sequential, Potential, layer, TorchSequential or nn.Module
        An xderiv network with torch weights, a torch module that
        :func:`from_torch` converts, or the result of :func:`from_torch`
        (then the module is wrapped as it is: ``parameters()`` are exactly the
        module's Parameters, registered under ``source.``, and its buffers
        stay buffers, never trained; an optimizer over them trains the module).

    Returns
    -------
    XDerivModule
        For an xderiv network, ``parameters()`` lists every weight once:
        Parameters the network already holds (directly, or through a
        ``.mT``/reshape view) are registered as they are; plain tensors are
        wrapped in new Parameters sharing their storage.

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
    from .torch_network import AutogradGraph, TorchGraph

    if isinstance(net, (TorchSequential, TorchGraph, AutogradGraph)):  # the module's own Parameters and buffers
        return XDerivModule(converted=net)
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
    "FUNCTION_ACTIVATIONS",
    "MODULE_ACTIVATIONS",
    "SCALED_ACTIVATIONS",
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
