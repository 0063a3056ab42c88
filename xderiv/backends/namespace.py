"""Array-namespace glue: the one place that talks to ``array-api-compat``.

Everything else in the core receives ``xp`` (an Array API namespace) from
here and never asks which library it is.  Each array type's backend-tuned
primitives (:mod:`xderiv.backends.primitives`) are looked up here once, when a network
is built; the recursions stay written once.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any

import array_api_compat

from .primitives import PLAIN, Array, Primitives, primitives


@dataclass(frozen=True)
class Context:
    """Namespace, working dtype and device of one public call.

    Resolved once at entry (:func:`resolve_call`) and threaded through the
    recursions so that no recursion re-derives them.
    """

    xp: Any
    dtype: Any
    device: Any
    lazy: bool = False
    """True for arrays evaluated lazily in chunks of their own library (dask): xderiv does not chunk them."""
    prims: Primitives | None = None
    """The namespace's fused primitives (:func:`primitives`); None reads as :data:`PLAIN`."""

    @property
    def ops(self) -> Primitives:
        """:attr:`prims`, or the plain expressions."""
        return self.prims if self.prims is not None else PLAIN


def describe(a: object) -> str:
    """Short human description of an array for error messages."""
    kind = f"{type(a).__module__}.{type(a).__qualname__}"
    shape = getattr(a, "shape", None)
    dtype = getattr(a, "dtype", None)
    if shape is None:
        return kind
    return f"{kind} of shape {tuple(shape)} and dtype {dtype}"


# What the namespace of each library is called where a user types it (array-api-compat wraps some).
_LIBRARIES = (
    ("numpy", "is_numpy_namespace"),
    ("torch", "is_torch_namespace"),
    ("cupy", "is_cupy_namespace"),
    ("jax.numpy", "is_jax_namespace"),
    ("dask.array", "is_dask_namespace"),
    ("array_api_strict", "is_array_api_strict_namespace"),
)


def library(xp: Any) -> str:
    """The name a user imports the array library of namespace ``xp`` by (``numpy``, ``torch``, ``jax.numpy``...).

    For error messages only: the core names libraries, it never imports them.
    """
    for name, check in _LIBRARIES:
        if getattr(array_api_compat, check)(xp):
            return name
    return str(getattr(xp, "__name__", type(xp).__name__))


def _dtype_expr(lib: str, dtype: Any) -> str:
    """``dtype`` spelled in library ``lib`` (``torch.float64``, ``numpy.float32``...)."""
    return f"{lib}.{str(dtype).rpartition('.')[2]}"


def _device_expr(device: Any) -> str:
    """``device`` as a user would type it: ``'cuda:0'`` for torch devices, its repr otherwise."""
    return repr(str(device)) if type(device).__module__.startswith("torch") else repr(device)


def convert_hint(name: str, src: str, dst: str, dtype: Any, device: Any) -> str:
    """An expression that turns the array ``name`` of library ``src`` into one of library ``dst``."""
    if dst == "numpy":
        return {
            "torch": f"{name}.detach().cpu().numpy()",
            "cupy": f"{name}.get()",
            "dask.array": f"{name}.compute()",
        }.get(src, f"numpy.asarray({name})")
    if dst == "torch":
        if src in ("numpy", "array_api_strict", "dask.array"):
            return f"torch.as_tensor({name}, dtype={_dtype_expr('torch', dtype)}, device={_device_expr(device)})"
        return f"torch.from_dlpack({name})"
    if dst == "dask.array":
        return f"dask.array.from_array({name}, chunks=(points_per_chunk, d))"
    return f"{dst}.asarray({name})"


def _rebuild_hint(lib: str, net_lib: str) -> str:
    """How to get a network whose weights belong to library ``lib`` (one that ``net_lib`` weights came from)."""
    if lib == "dask.array" and net_lib == "numpy":
        return "wrap the network's weights with xderiv.interop.dask.to_dask(net)"
    hint = (
        f"build the network with {lib}: xd.mlp(..., xp={lib}) (likewise xd.resnet, xd.potential, "
        f"xderiv.interop.io.load(path, xp={lib}))"
    )
    if lib == "torch":
        hint += ", or convert an nn.Sequential with xderiv.interop.torch.from_torch(model)"
    return hint


def move_hint(name: str, lib: str, device: Any) -> str:
    """An expression that moves the array ``name`` of library ``lib`` to ``device``."""
    if lib == "torch":
        return f"{name}.to({_device_expr(device)})"
    if lib == "cupy" and hasattr(device, "id"):
        return f"with cupy.cuda.Device({device.id}): {name} = cupy.asarray({name})"
    if lib == "jax.numpy":
        return f"jax.device_put({name}, {device!r})"
    return f"{name}.to_device({device!r})"


def astype_hint(name: str, lib: str, dtype: Any) -> str:
    """An expression that casts the array ``name`` of library ``lib`` to ``dtype``."""
    if lib == "torch":
        return f"{name}.to({_dtype_expr('torch', dtype)})"
    if lib in ("numpy", "cupy", "jax.numpy", "dask.array"):
        return f"{name}.astype({_dtype_expr(lib, dtype)})"
    return f"{lib}.astype({name}, {_dtype_expr(lib, dtype)})"


def is_lazy(a: object) -> bool:
    """True for arrays whose library evaluates lazily in chunks of its own (dask): xderiv then does not chunk."""
    check = getattr(array_api_compat, "is_lazy_array", None)
    if check is not None:
        try:
            return bool(check(a)) and not array_api_compat.is_jax_array(a)
        except Exception:  # pragma: no cover - defensive against exotic arrays
            return False
    return array_api_compat.is_dask_array(a)


def is_array(a: object) -> bool:
    """True for an array of any namespace array-api-compat recognises."""
    return array_api_compat.is_array_api_obj(a)


@dataclass(frozen=True)
class ArrayKind:
    """What a call needs to know of an array type: its namespace and whether it is lazy."""

    xp: Any
    lazy: bool
    device_attribute: bool
    """Whether ``a.device`` is the device array-api-compat reports (then read directly, cheaper and traceable)."""
    prims: Primitives


_KINDS: dict[type, ArrayKind] = {}
"""Array types seen in network weights (and their namespace's own array type), filled at construction.

A call looks its input's type up here instead of asking array-api-compat,
whose type checks torch.compile cannot trace without warnings; nothing is
added while a call runs, so a traced call mutates no state.
"""


def learn_array_types(arrays: list[Array], xp: Any, device: Any) -> None:
    """Record the types of ``arrays`` and of ``xp``'s arrays on ``device`` in the table :func:`resolve_call` reads.

    Called when a network is built.
    """
    probe = xp.asarray(0.0, device=device) if device is not None else xp.asarray(0.0)
    for a in [*arrays, probe]:
        if type(a) not in _KINDS:
            _KINDS[type(a)] = _kind(a)


def known_array_type(a: Array) -> bool:
    """Whether the type of ``a`` is in the table :func:`learn_array_types` fills."""
    return type(a) in _KINDS


def array_namespace_of(a: Array) -> Any:
    """The namespace of the array ``a``: read from the table of learnt types (traceable), else array-api-compat."""
    kind = _KINDS.get(type(a))
    return (kind or _kind(a)).xp


def device_of(a: Array) -> Any:
    """The device of the array ``a``: its ``.device`` where that is what array-api-compat reports (traceable)."""
    kind = _KINDS.get(type(a)) or _kind(a)
    return a.device if kind.device_attribute else array_api_compat.device(a)  # type: ignore[attr-defined]


def _kind(a: Array) -> ArrayKind:
    dev = array_api_compat.device(a)
    try:
        own = a.device  # type: ignore[attr-defined]
        attribute = type(own) is type(dev) and bool(own == dev)
    except Exception:  # no attribute (NumPy < 2), or one a traced array cannot give
        attribute = False
    xp = array_api_compat.array_namespace(a)
    return ArrayKind(xp, is_lazy(a), attribute, primitives(xp))


def namespace_of_weights(arrays: list[Array], owner: str) -> tuple[Any, Any]:
    """Common namespace and device of a network's weights.

    Parameters
    ----------
    arrays : list of arrays
        All weights of one network.
    owner : str
        Name used in error messages (e.g. ``"Sequential"``).

    Returns
    -------
    xp, device

    Raises
    ------
    TypeError
        If the weights come from different array libraries.
    ValueError
        If the weights live on different devices.
    """
    try:
        xp = array_api_compat.array_namespace(*arrays)
    except TypeError as exc:
        kinds = sorted({describe(a).split(" of shape")[0] for a in arrays})
        raise TypeError(
            f"{owner}: weights come from different array libraries ({', '.join(kinds)}); "
            "build every layer's weights in one namespace (e.g. torch.as_tensor(w) for a NumPy "
            "weight in a torch network)"
        ) from exc
    # A traced array (jax.grad/jit) may report no device: nothing to compare then.
    devices = [dev for dev in (array_api_compat.device(a) for a in arrays) if dev is not None] or [None]
    for dev in devices[1:]:
        if dev != devices[0]:
            raise ValueError(
                f"{owner}: weights live on different devices ({devices[0]} and {dev}); "
                f"move them to one device first, e.g. {move_hint('w', library(xp), devices[0])} "
                "for each weight w (xderiv never copies silently)"
            )
    learn_array_types(arrays, xp, devices[0])
    return xp, devices[0]


def check_int(value: Any, name: str, minimum: int) -> int:
    """``value`` as a Python int of at least ``minimum`` (bools refused), or an error naming ``name`` and the value."""
    kind = "positive" if minimum == 1 else "non-negative" if minimum == 0 else f">= {minimum}"
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a {kind} integer, got {value!r}")
    try:
        k = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be a {kind} integer, got {value!r}") from None
    if k < minimum:
        raise ValueError(f"{name} must be a {kind} integer, got {k}")
    return k


def check_real_floating(xp: Any, a: Array, name: str) -> None:
    """Raise ``TypeError`` unless ``a`` has a real floating dtype."""
    if not xp.isdtype(a.dtype, "real floating"):
        lib = library(xp)
        raise TypeError(
            f"{name} must have a real floating dtype, got {a.dtype}; "
            f"cast it first, e.g. {astype_hint('w', lib, 'float64')}"
        )


def _concrete_bool(flag: Any) -> bool | None:
    """``bool(flag)`` for a concrete 0-d array, or None when it has no value yet.

    A JAX tracer, a torch meta/fake tensor, a tensor under ``torch.compile`` or a lazy
    (dask-like) array cannot be read without tracing errors or forced computation; those
    return None.
    """
    # array-api-compat calls every JAX array lazy; a concrete one has a value, a tracer raises below.
    kind = _KINDS.get(type(flag))  # the learnt table first: traceable
    if kind is None:
        try:
            kind = _kind(flag)
        except Exception:  # a tracer without a device, or another array of no readable value
            return None
    if kind.lazy:
        return None  # dask & co.: bool() would compute the whole graph
    compiling = getattr(getattr(kind.xp, "compiler", None), "is_compiling", None)
    if compiling is not None and compiling():
        return None  # torch.compile: a tensor's value is data-dependent while tracing
    try:
        return bool(flag)
    except Exception:  # tracer / meta tensor / data-dependent value: unknowable here
        return None


def check_finite(xp: Any, a: Array, name: str) -> None:
    """Raise ``ValueError`` if the concrete array ``a`` holds a NaN or an infinity.

    Called once per weight array at construction (one reduction, no copy;
    reading the flag synchronises a GPU stream once).  Arrays whose values
    cannot be read at construction time -- JAX tracers inside ``jit``/``grad``,
    torch ``meta``/fake tensors, lazy arrays -- skip the check: their values are
    not known yet.  Torch weights with ``requires_grad`` are checked without
    touching the autograd graph (``isfinite`` is not differentiable).
    """
    if math.prod(a.shape) == 0:
        return
    flag = xp.all(xp.isfinite(a))
    if _concrete_bool(flag) is False:
        nan = _concrete_bool(xp.any(xp.isnan(a)))
        what = "NaN" if nan else "an infinite value"
        raise ValueError(
            f"{name} contains {what} ({describe(a)}); xderiv refuses non-finite weights at "
            "construction because every derivative would silently be NaN"
        )


def check_nonzero(xp: Any, a: Array, name: str) -> None:
    """Raise ``ValueError`` if the concrete array ``a`` holds a zero (skipped, as :func:`check_finite`, for
    arrays whose values are not known yet)."""
    if math.prod(a.shape) and _concrete_bool(xp.any(a == 0)):
        raise ValueError(f"{name} has a zero entry ({describe(a)}); it divides, so every entry must be nonzero")


def check_finite_number(value: Any, name: str) -> float:
    """``float(value)``, refusing NaN, infinities and non-numbers with a message naming ``name``."""
    try:
        out = float(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a real number, got {value!r}") from exc
    if not math.isfinite(out):
        raise ValueError(f"{name} must be finite, got {out}")
    return out


def resolve_call(x: Any, net_xp: Any, net_device: Any, weight_dtype: Any, name: str = "x") -> tuple[Context, Array]:
    """Validate the input of a public call and cast it once.

    Parameters
    ----------
    x : array or nested sequence of numbers
        The input points, shape ``(..., d)``.  A Python sequence is converted
        with the network's own namespace, device and weight dtype.
    net_xp, net_device, weight_dtype
        Namespace, device and (promoted) floating dtype of the network weights.
    name : str
        What the caller calls ``x`` (``"v"``, ``"S"``...), for error messages.

    Returns
    -------
    ctx : Context
        Namespace, working dtype ``result_type(x.dtype, weight_dtype)`` (or
        ``weight_dtype`` for integer ``x``) and device.
    x : array
        The input cast to the working dtype (no copy when already there).

    Raises
    ------
    TypeError
        ``x`` from another array library than the weights, complex or boolean
        ``x``, or a sequence that is not a rectangular array of numbers.
    ValueError
        ``x`` on another device than the weights.

    Every message names what it saw and how to fix it (the conversion, move
    or cast to write, in the libraries involved).
    """
    if x is None:
        raise TypeError(f"{name}: expected an array of points of shape (..., d), got None")
    if type(x).__name__ == "MaskedArray":
        raise TypeError(
            f"{name} is a masked array ({describe(x)}); xderiv would ignore its mask: "
            f"pass {name}.filled(value) or {name}.data explicitly"
        )
    kind = _KINDS.get(type(x))
    if kind is None:
        if not is_array(x):
            try:
                x = net_xp.asarray(x, dtype=weight_dtype, device=net_device)
            except (TypeError, ValueError, RuntimeError) as exc:
                if isinstance(x, (list, tuple)) and any(is_array(item) for item in x):
                    fix = f"stack the arrays into one: {library(net_xp)}.stack({name})"
                else:
                    fix = (
                        f"pass one rectangular array of shape (..., d), e.g. "
                        f"{library(net_xp)}.asarray({name}, dtype={_dtype_expr(library(net_xp), weight_dtype)})"
                    )
                why = str(exc).strip().rstrip(".")
                raise TypeError(
                    f"{name}: cannot read {type(x).__name__} as real {weight_dtype} points: {why}; {fix}"
                ) from exc
        try:
            kind = _kind(x)
        except TypeError as exc:  # pragma: no cover - is_array was True
            raise TypeError(f"{name}: unsupported array type {describe(x)}") from exc
    xp = kind.xp
    if xp is not net_xp:
        lib, seen, net_lib = library(xp), describe(x), library(net_xp)
        # The points may come from the library the user meant the network for; other arguments follow x.
        rebuild = f", or {_rebuild_hint(lib, net_lib)}" if name == "x" else ""
        raise TypeError(
            f"{name} is {'an' if seen[0] in 'aeiou' else 'a'} {seen} but the network's weights belong to {net_lib} "
            f"(xderiv never copies between libraries or devices): convert {name} with "
            f"{convert_hint(name, lib, net_lib, weight_dtype, net_device)}{rebuild}"
        )
    device = x.device if kind.device_attribute else array_api_compat.device(x)
    if device is None:  # traced input (jax): take the weights' device
        device = net_device
    if device != net_device and net_device is not None:
        net_lib = library(net_xp)
        raise ValueError(
            f"{name} is on device {device} but the network's weights are on {net_device} "
            f"(xderiv never copies between devices): move {name} with {move_hint(name, net_lib, net_device)}, "
            f"or move the network with net.with_arrays([{move_hint('a', net_lib, device)} for a in net.arrays()])"
        )
    if not _is_real_dtype(xp, x.dtype):
        raise TypeError(
            f"{name} must be real (floating or integer), got dtype {x.dtype}; "
            f"cast it, e.g. {astype_hint(name, library(net_xp), weight_dtype)}"
            + (f" (or take {name}.real if its imaginary part is zero)" if _is_complex(xp, x.dtype) else "")
        )
    if xp.isdtype(x.dtype, "integral"):
        dtype = weight_dtype
    else:
        dtype = xp.result_type(x.dtype, weight_dtype)
    if x.dtype != dtype:
        x = xp.astype(x, dtype)
    return Context(xp=xp, dtype=dtype, device=device, lazy=kind.lazy, prims=kind.prims), x


def _is_complex(xp: Any, dtype: Any) -> bool:
    try:
        return bool(xp.isdtype(dtype, "complex floating"))
    except (TypeError, ValueError):
        return False


def _is_real_dtype(xp: Any, dtype: Any) -> bool:
    """True for real floating and integer dtypes (False for bool, complex, object, strings...)."""
    try:
        return bool(xp.isdtype(dtype, ("real floating", "integral")))
    except (TypeError, ValueError):  # a dtype the namespace does not know (e.g. NumPy object)
        return False


def flatten_batch(x: Array, in_features: int, xp: Any) -> tuple[Array, tuple[int, ...]]:
    """Reshape ``x`` of shape ``(..., d)`` to ``(n, d)``; return it and the batch shape."""
    if x.ndim == 0 or x.shape[-1] != in_features:
        raise ValueError(
            f"x has shape {tuple(x.shape)}, but the network takes inputs of shape "
            f"(..., {in_features}): the trailing dimension must be {in_features}; "
            + _shape_hint(tuple(x.shape), in_features, library(xp))
        )
    batch = tuple(x.shape[:-1])
    n = math.prod(batch)
    if x.ndim != 2:
        x = xp.reshape(x, (n, in_features))
    return x, batch


def _shape_hint(shape: tuple[int, ...], d: int, lib: str) -> str:
    """How to reshape points of ``shape`` for a network of input dimension ``d``."""
    layout = f"n points in d={d} are an array of shape (n, {d}), one point has shape ({d},)"
    if d == 1 and len(shape) >= 1:
        return f"{layout}: add the trailing axis with x[..., None] or {lib}.reshape(x, (-1, 1))"
    if len(shape) >= 2 and shape[-2] == d:
        swap = (
            "x.T"
            if len(shape) == 2
            else {"torch": "x.mT", "array_api_strict": "array_api_strict.matrix_transpose(x)"}.get(
                lib, f"{lib}.swapaxes(x, -1, -2)"
            )
        )
        return f"{layout}: x looks transposed (d={d} on its second-to-last axis), pass {swap}"
    if len(shape) == 0:
        return f"{layout}, not a scalar"
    return f"{layout} (coordinates on the last axis)"


def diagonal(a: Array, xp: Any, device: Any) -> Array:
    """Diagonal of the last two (square) axes, without the ``linalg`` extension."""
    return xp.sum(a * xp.eye(a.shape[-1], dtype=a.dtype, device=device), axis=-1)


def trace(a: Array, xp: Any, ctx: Context) -> Array:
    """Trace over the last two (square) axes, without the ``linalg`` extension."""
    return xp.sum(diagonal(a, xp, ctx.device), axis=-1)


def materialize(a: Array, shape: tuple[int, ...], xp: Any, device: Any = None) -> Array:
    """Return ``a`` broadcast to ``shape`` as a fresh array (not a read-only view).

    A caller that knows the device passes it (asking array-api-compat is a type check, best kept out of a
    traced call).
    """
    if tuple(a.shape) == tuple(shape):
        return a
    return xp.zeros(shape, dtype=a.dtype, device=device_of(a) if device is None else device) + a
