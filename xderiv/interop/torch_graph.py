r"""Any torch module's ``forward`` as a function written against the Array API.

>>> import torch
>>> from xderiv.interop.torch_graph import graph_function
>>> model = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.LayerNorm(8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
>>> x = torch.randn(5, 2)
>>> f = graph_function(model)              # any nn.Module mapping x of shape (..., d)
>>> torch.allclose(f(x), model(x))         # through xp = array_namespace(x) only
True

:func:`graph_function` traces ``module.forward`` once per module *structure*
with :mod:`torch.fx` and replays the graph node by node.  A node whose value
depends on the input ``x`` is *translated*: it runs as operations of ``xp =
array_api_compat.array_namespace(x)``, Python operators and basic indexing,
so that an array type implementing ``__array_namespace__`` (such as a Taylor
jet) flows through it.  A node that only reads the module's tensors (a
Parameter, ``torch.exp(self.log_alpha)``, a parametrized weight) runs as the
torch operation itself; its result is a constant of the computation.  Every
tensor is read from the module at each call, never captured while tracing.

Translated (on input-dependent values; Tensor methods of the same name too):

- arithmetic: ``+ - * / **``, unary ``-``, ``torch.add/sub/mul/div/pow/neg/square/reciprocal/rsqrt``,
  comparisons and ``& | ~`` (for ``torch.where`` conditions);
- products: ``@``, ``torch.matmul/mm/bmm``, ``F.linear``, ``torch.tensordot``, ``torch.outer``,
  ``torch.einsum`` (lowered to permutes, reshapes, products and sums, any number of operands, ``...``);
- elementwise: ``exp log log1p expm1 sqrt sin cos tan tanh sinh cosh abs sign``, the activations of
  :mod:`xderiv.interop.torch`'s tables (``torch.sigmoid``, ``F.silu``, ``F.gelu``, ``F.softplus``
  (threshold of 20 or more), ``F.mish``, ``F.elu``, ...) through :func:`xderiv.activations.get_activation`;
- reductions: ``sum mean prod amax amin max min var std logsumexp`` (``dim``, ``keepdim``);
  ``F.softmax``, ``F.log_softmax``, ``F.layer_norm``, ``F.rms_norm``, ``F.dropout`` (not training);
- shapes: ``reshape view flatten unflatten unsqueeze squeeze permute transpose swapaxes .T .mT expand
  expand_as broadcast_to cat stack flip chunk split narrow unbind contiguous clone``, basic indexing,
  ``x.shape``, ``x.size(i)``, ``x.dim()``, ``x.dtype`` (shape arithmetic runs in Python),
  ``torch.where``, ``.to(dtype)``, ``.double()``, ``.float()``, ``torch.zeros_like`` and factories
  (``torch.eye/zeros/ones/full/arange/tensor`` with ``dtype=x.dtype``);
- linear algebra: ``torch.linalg.det/slogdet/inv/solve``, ``torch.det``, ``torch.logdet``,
  ``torch.slogdet``, ``torch.inverse``;
- modules kept whole: ``nn.Linear`` (parametrized ones too, e.g. ``weight_norm``), ``nn.LayerNorm``,
  ``nn.RMSNorm``, ``nn.Softmax``, ``nn.LogSoftmax``, ``nn.Flatten``, ``nn.Identity``, ``nn.Dropout``
  (identity in ``eval()``), and the activation modules of :data:`xderiv.interop.torch.MODULE_ACTIVATIONS`
  plus the caller's ``activations=``.

Anything else on an input-dependent value (``torch.fft.fft``, ``torch.argsort``, ``nn.ReLU``, in-place
operations, advanced indexing) raises ``NotImplementedError`` naming the fx node, the operation and
the module path; so does a ``forward`` that torch.fx cannot trace (control flow on values).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from array_api_compat import array_namespace
from torch import fx, nn
from torch.nn.utils import parametrize

from ..activations import Activation
from ._torch_fx import ActivationSpec, ActivationTable, _activation, _is_scalar, merged_tables

Translator = Callable[..., Any]
"""``translator(xp, *args, **kwargs)`` for functions and methods, ``translator(xp, module, *args, **kwargs)``
for modules: the node's value from its arguments' values."""


class _Refused(Exception):
    """A translator's refusal; re-raised as ``NotImplementedError`` naming the node."""


def _dims(dim: Any) -> tuple[int, ...] | None:
    if dim is None:
        return None
    return (int(dim),) if isinstance(dim, int) else tuple(int(d) for d in dim)


def _axis(dim: Any) -> int | tuple[int, ...] | None:
    """torch's ``dim`` (None, int or sequence) as an Array API ``axis``."""
    dims = _dims(dim)
    return dims if dims is None or len(dims) != 1 else dims[0]


def _shape(size: tuple[Any, ...]) -> tuple[int, ...]:
    """``(2, 3)`` or ``((2, 3),)`` (torch's ``*size`` or ``size``) as a tuple of ints."""
    if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)):
        size = tuple(size[0])
    return tuple(int(s) for s in size)


# --------------------------------------------------------------------------- arithmetic


def _add(xp: Any, a: Any, b: Any, *, alpha: Any = 1) -> Any:
    return a + (b if alpha == 1 else alpha * b)


def _sub(xp: Any, a: Any, b: Any, *, alpha: Any = 1) -> Any:
    return a - (b if alpha == 1 else alpha * b)


def _rsub(xp: Any, a: Any, b: Any, *, alpha: Any = 1) -> Any:
    return b - (a if alpha == 1 else alpha * a)


def _div(xp: Any, a: Any, b: Any, *, rounding_mode: str | None = None) -> Any:
    if rounding_mode is not None:
        raise _Refused(f"rounding_mode={rounding_mode!r} is not smooth")
    return a / b


def _python(op: Callable[..., Any]) -> Translator:
    """A Python operator as it is (arrays, Python numbers and shapes alike)."""

    def translate(xp: Any, *args: Any) -> Any:
        return op(*args)

    return translate


def _elementwise(name: str) -> Translator:
    def translate(xp: Any, a: Any) -> Any:
        return getattr(xp, name)(a)

    return translate


def _reciprocal(xp: Any, a: Any) -> Any:
    return 1.0 / a


def _rsqrt(xp: Any, a: Any) -> Any:
    return 1.0 / xp.sqrt(a)


def _where(xp: Any, condition: Any, a: Any, b: Any) -> Any:
    return xp.where(condition, a, b)


# --------------------------------------------------------------------------- products


def _matmul(xp: Any, a: Any, b: Any) -> Any:
    return xp.matmul(a, b)


def _linear(xp: Any, x: Any, weight: Any, bias: Any = None) -> Any:
    y = xp.matmul(x, xp.matrix_transpose(weight))
    return y if bias is None else y + bias


def _tensordot(xp: Any, a: Any, b: Any, dims: Any = 2) -> Any:
    if not isinstance(dims, int):
        dims = tuple(tuple(int(i) for i in d) for d in dims)
    return xp.tensordot(a, b, axes=dims)


def _outer(xp: Any, a: Any, b: Any) -> Any:
    return a[:, None] * b[None, :]


def _einsum(xp: Any, equation: str, *operands: Any) -> Any:
    """``torch.einsum`` as pairwise contractions, each a permute, reshape and matmul (no ``einsum``)."""
    if len(operands) == 1 and isinstance(operands[0], (tuple, list)):
        operands = tuple(operands[0])
    lhs, arrow, out = equation.replace(" ", "").partition("->")
    terms = lhs.split(",")
    if len(terms) != len(operands):
        raise _Refused(f"einsum {equation!r} names {len(terms)} operands, got {len(operands)}")
    if not arrow:  # implicit output: "..." and the letters seen once, sorted
        seen = lhs.replace(".", "").replace(",", "")
        out = ("..." if "..." in lhs else "") + "".join(sorted(c for c in set(seen) if seen.count(c) == 1))
    unused = sorted(set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") - set(equation))
    extra = [a.ndim - len(t) + 3 if "..." in t else 0 for t, a in zip(terms, operands)]
    dots = "".join(unused[: max(extra, default=0)])
    terms = [t.replace("...", dots[len(dots) - k :]) for t, k in zip(terms, extra)]
    out = out.replace("...", dots)
    if any(len(set(t)) != len(t) for t in [*terms, out]):
        raise _Refused(f"einsum {equation!r} repeats an index within one operand (a diagonal or a trace)")
    arrays = list(operands)
    while len(arrays) > 1:
        keep = set(out).union(*terms[2:])
        term, array = _contract(xp, terms[0], arrays[0], terms[1], arrays[1], keep)
        terms, arrays = [term, *terms[2:]], [array, *arrays[2:]]
    term, array = _sum_out(xp, terms[0], arrays[0], set(out))
    return xp.permute_dims(array, tuple(term.index(c) for c in out))


def _sum_out(xp: Any, term: str, a: Any, keep: set[str]) -> tuple[str, Any]:
    """``a`` summed over its letters not in ``keep``."""
    drop = tuple(i for i, c in enumerate(term) if c not in keep)
    return "".join(c for c in term if c in keep), (xp.sum(a, axis=drop) if drop else a)


def _contract(xp: Any, ta: str, a: Any, tb: str, b: Any, keep: set[str]) -> tuple[str, Any]:
    """``a`` times ``b`` summed over their shared letters not in ``keep``: one batched matmul."""
    ta, a = _sum_out(xp, ta, a, keep | set(tb))
    tb, b = _sum_out(xp, tb, b, keep | set(ta))
    size: dict[str, int] = {}
    for t, arr in ((ta, a), (tb, b)):
        for c, n in zip(t, arr.shape):
            size[c] = max(size.get(c, 1), int(n))
    shared = [c for c in ta if c in tb]
    batch, summed = [c for c in shared if c in keep], [c for c in shared if c not in keep]
    left, right = [c for c in ta if c not in tb], [c for c in tb if c not in ta]
    a = _arranged(xp, a, ta, batch + left + summed, size)
    b = _arranged(xp, b, tb, batch + summed + right, size)
    nb = tuple(size[c] for c in batch)
    nl, ns, nr = (math.prod(size[c] for c in group) for group in (left, summed, right))
    ab = xp.matmul(xp.reshape(a, (*nb, nl, ns)), xp.reshape(b, (*nb, ns, nr)))
    return "".join(batch + left + right), xp.reshape(ab, (*nb, *(size[c] for c in left + right)))


def _arranged(xp: Any, a: Any, term: str, order: list[str], size: dict[str, int]) -> Any:
    """``a`` with its letters in ``order``, broadcast to the full sizes."""
    a = xp.permute_dims(a, tuple(term.index(c) for c in order))
    shape = tuple(size[c] for c in order)
    return a if tuple(a.shape) == shape else xp.broadcast_to(a, shape)


# --------------------------------------------------------------------------- reductions and normalizations


def _reducer(name: str) -> Translator:
    """``xp.sum``/``mean``/``prod`` with torch's ``dim``, ``keepdim``, ``dtype``."""

    def translate(xp: Any, a: Any, dim: Any = None, keepdim: bool = False, *, dtype: Any = None) -> Any:
        if dtype is not None:
            a = xp.astype(a, dtype)
        return getattr(xp, name)(a, axis=_axis(dim), keepdims=keepdim)

    return translate


class _ValuesOnly(tuple):  # type: ignore[type-arg]
    """``(values, indices)`` of ``torch.max(a, dim)``: the indices (integers, no derivative) are refused."""

    @property
    def values(self) -> Any:
        return self[0]

    @property
    def indices(self) -> Any:
        raise _Refused("the indices of max/min are not supported (only their values)")

    def __getitem__(self, i: Any) -> Any:
        if i not in (0, -2):
            raise _Refused("the indices of max/min are not supported (only their values)")
        return tuple.__getitem__(self, 0)


def _extremum(name: str, indices: bool) -> Translator:
    """``torch.max(a)``, ``torch.max(a, dim, keepdim)`` and ``amax(a, dim=())``."""

    def translate(xp: Any, a: Any, dim: Any = None, keepdim: bool = False) -> Any:
        if dim is not None and not isinstance(dim, (int, tuple, list)):
            raise _Refused(f"the elementwise {name}imum of two tensors is not smooth")
        return getattr(xp, name)(a, axis=None if dim in (None, (), []) else _axis(dim), keepdims=keepdim)

    def with_indices(xp: Any, a: Any, dim: Any = None, keepdim: bool = False) -> Any:
        value = translate(xp, a, dim, keepdim)
        return value if dim is None else _ValuesOnly((value,))

    return with_indices if indices else translate


def _var(
    xp: Any, a: Any, dim: Any = None, unbiased: Any = None, keepdim: bool = False, *, correction: Any = None
) -> Any:
    """The mean of squared deviations from the mean, over ``n - correction``."""
    if isinstance(dim, bool):  # torch.var(a, unbiased)
        dim, unbiased = None, dim
    if correction is None:
        correction = 0 if unbiased is False else 1
    dims = tuple(range(a.ndim)) if _dims(dim) is None else _dims(dim)
    n = math.prod(int(a.shape[d]) for d in dims)  # type: ignore[union-attr, misc]
    c = a - xp.mean(a, axis=dims, keepdims=True)
    return xp.sum(c * c, axis=dims, keepdims=keepdim) / (n - correction)


def _std(xp: Any, a: Any, *args: Any, **kwargs: Any) -> Any:
    return xp.sqrt(_var(xp, a, *args, **kwargs))


def _logsumexp(xp: Any, a: Any, dim: Any, keepdim: bool = False) -> Any:
    axis = _axis(dim)
    m = xp.max(a, axis=axis, keepdims=True)
    out = xp.log(xp.sum(xp.exp(a - m), axis=axis, keepdims=True)) + m
    return out if keepdim else xp.squeeze(out, axis=axis)


def _softmax(xp: Any, a: Any, dim: Any = None, _stacklevel: int = 3, dtype: Any = None) -> Any:
    if dim is None:
        raise _Refused("softmax needs dim=")
    e = xp.exp(a - xp.max(a, axis=dim, keepdims=True))
    return e / xp.sum(e, axis=dim, keepdims=True)


def _log_softmax(xp: Any, a: Any, dim: Any = None, _stacklevel: int = 3, dtype: Any = None) -> Any:
    if dim is None:
        raise _Refused("log_softmax needs dim=")
    s = a - xp.max(a, axis=dim, keepdims=True)
    return s - xp.log(xp.sum(xp.exp(s), axis=dim, keepdims=True))


def _layer_norm(xp: Any, a: Any, normalized_shape: Any, weight: Any = None, bias: Any = None, eps: float = 1e-5) -> Any:
    dims = tuple(range(-len(_shape((normalized_shape,))), 0))
    c = a - xp.mean(a, axis=dims, keepdims=True)
    y = c / xp.sqrt(xp.mean(c * c, axis=dims, keepdims=True) + eps)
    y = y if weight is None else y * weight
    return y if bias is None else y + bias


def _rms_norm(xp: Any, a: Any, normalized_shape: Any, weight: Any = None, eps: float | None = None) -> Any:
    dims = tuple(range(-len(_shape((normalized_shape,))), 0))
    eps = float(xp.finfo(a.dtype).eps) if eps is None else eps
    y = a / xp.sqrt(xp.mean(a * a, axis=dims, keepdims=True) + eps)
    return y if weight is None else y * weight


def _dropout(xp: Any, a: Any, p: float = 0.5, training: bool = True, inplace: bool = False) -> Any:
    if training and p > 0:
        raise _Refused(f"dropout with p={p} in training mode is random; call module.eval() first")
    return a


# --------------------------------------------------------------------------- shapes


def _reshape(xp: Any, a: Any, *shape: Any) -> Any:
    if shape and isinstance(shape[0], torch.dtype):
        raise _Refused("view(dtype) reinterprets bits")
    return xp.reshape(a, _shape(shape))


def _flatten(xp: Any, a: Any, start_dim: int = 0, end_dim: int = -1) -> Any:
    if a.ndim == 0:
        return xp.reshape(a, (1,))
    s, e, shape = start_dim % a.ndim, end_dim % a.ndim, tuple(a.shape)
    return xp.reshape(a, (*shape[:s], math.prod(shape[s : e + 1]), *shape[e + 1 :]))


def _unflatten(xp: Any, a: Any, dim: int, sizes: Any) -> Any:
    d, shape = dim % a.ndim, tuple(a.shape)
    return xp.reshape(a, (*shape[:d], *_shape((sizes,)), *shape[d + 1 :]))


def _unsqueeze(xp: Any, a: Any, dim: int) -> Any:
    return xp.expand_dims(a, axis=dim)


def _squeeze(xp: Any, a: Any, dim: Any = None) -> Any:
    dims = range(a.ndim) if dim is None else _dims(dim)
    axes = tuple(d % a.ndim for d in dims if a.shape[d] == 1)  # type: ignore[union-attr]
    return xp.squeeze(a, axis=axes) if axes else a


def _permute(xp: Any, a: Any, *dims: Any) -> Any:
    return xp.permute_dims(a, tuple(d % a.ndim for d in _shape(dims)))


def _transpose(xp: Any, a: Any, dim0: int, dim1: int) -> Any:
    perm = list(range(a.ndim))
    perm[dim0], perm[dim1] = perm[dim1], perm[dim0]
    return xp.permute_dims(a, tuple(perm))


def _expand(xp: Any, a: Any, *sizes: Any) -> Any:
    size, lead = _shape(sizes), len(_shape(sizes)) - a.ndim
    return xp.broadcast_to(a, tuple(int(a.shape[i - lead]) if s == -1 else s for i, s in enumerate(size)))


def _expand_as(xp: Any, a: Any, other: Any) -> Any:
    return xp.broadcast_to(a, tuple(other.shape))


def _broadcast_to(xp: Any, a: Any, size: Any) -> Any:
    return xp.broadcast_to(a, _shape((size,)))


def _cat(xp: Any, tensors: Any, dim: int = 0) -> Any:
    return xp.concat(list(tensors), axis=dim)


def _stack(xp: Any, tensors: Any, dim: int = 0) -> Any:
    return xp.stack(list(tensors), axis=dim)


def _flip(xp: Any, a: Any, *dims: Any) -> Any:
    return xp.flip(a, axis=_shape(dims))


def _narrow(xp: Any, a: Any, dim: int, start: int, length: int) -> Any:
    return a[(slice(None),) * (dim % a.ndim) + (slice(start, start + length), Ellipsis)]


def _split(xp: Any, a: Any, split_size_or_sections: Any, dim: int = 0) -> tuple[Any, ...]:
    n = int(a.shape[dim])
    if isinstance(split_size_or_sections, int):
        sizes = [min(split_size_or_sections, n - s) for s in range(0, n, split_size_or_sections)]
    else:
        sizes = [int(s) for s in split_size_or_sections]
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return tuple(_narrow(xp, a, dim, s, k) for s, k in zip(starts, sizes))


def _chunk(xp: Any, a: Any, chunks: int, dim: int = 0) -> tuple[Any, ...]:
    return _split(xp, a, max(1, -(-int(a.shape[dim]) // chunks)), dim)


def _unbind(xp: Any, a: Any, dim: int = 0) -> tuple[Any, ...]:
    lead = (slice(None),) * (dim % a.ndim)
    return tuple(a[(*lead, i, Ellipsis)] for i in range(int(a.shape[dim])))


def _same(xp: Any, a: Any, *args: Any, **kwargs: Any) -> Any:
    """``contiguous``, ``clone``: the array itself (translated code never writes to arrays)."""
    return a


def _is_sequence(a: Any) -> bool:
    return isinstance(a, (tuple, list, torch.Size))


def _getitem(xp: Any, a: Any, index: Any) -> Any:
    if _is_sequence(a):  # a shape, the pieces of a split, (sign, logabsdet)
        return a[index]
    index = index if isinstance(index, tuple) else (index,)
    for i in index:
        if not (i is None or i is Ellipsis or isinstance(i, slice) or (isinstance(i, int) and not isinstance(i, bool))):
            raise _Refused(f"only basic indexing (ints, slices, ..., None) is supported, not {type(i).__name__}")
    if not any(i is Ellipsis for i in index):
        index = (*index, Ellipsis)
    return a[index]


_ATTRIBUTES = {"shape", "ndim", "dtype", "device", "values", "sign", "logabsdet"}


def _getattr(xp: Any, a: Any, name: str) -> Any:
    if name == "mT":
        return xp.matrix_transpose(a)
    if name == "T":
        return xp.permute_dims(a, tuple(reversed(range(a.ndim))))
    if name not in _ATTRIBUTES and not (name == "indices" and isinstance(a, _ValuesOnly)):
        raise _Refused(f"attribute {name!r} is not supported")
    return getattr(a, name)


def _size(xp: Any, a: Any, dim: int | None = None) -> Any:
    return tuple(a.shape) if dim is None else int(a.shape[dim])


def _ndim(xp: Any, a: Any) -> int:
    return int(a.ndim)


def _numel(xp: Any, a: Any) -> int:
    return math.prod(int(n) for n in a.shape)


def _to(xp: Any, a: Any, *args: Any, **kwargs: Any) -> Any:
    dtype = kwargs.pop("dtype", None)
    for arg in (*args, kwargs.pop("device", None)):
        if isinstance(arg, torch.dtype):
            dtype = arg
        elif hasattr(arg, "dtype") and hasattr(arg, "shape"):  # .to(other)
            dtype = arg.dtype
        elif arg is not None and torch.device(arg) != a.device:
            raise _Refused(f"moving to device {arg} inside forward; move the module and x instead")
    if set(kwargs) - {"non_blocking", "copy", "memory_format"}:
        raise _Refused(f"unsupported arguments {sorted(kwargs)}")
    return a if dtype is None or dtype == a.dtype else xp.astype(a, dtype)


def _cast(dtype: torch.dtype) -> Translator:
    def translate(xp: Any, a: Any) -> Any:
        return a if a.dtype == dtype else xp.astype(a, dtype)

    return translate


def _type_as(xp: Any, a: Any, other: Any) -> Any:
    return a if a.dtype == other.dtype else xp.astype(a, other.dtype)


def _factory(name: str, sized: bool) -> Translator:
    """``torch.zeros(*size, dtype=x.dtype)`` (``sized``) or ``torch.eye/arange/full(...)`` as ``xp.<name>``."""

    def translate(xp: Any, *args: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Any:
        if requires_grad:
            raise _Refused("requires_grad=True inside forward")
        args = (_shape(args),) if sized else args
        return getattr(xp, name)(*args, dtype=dtype, device=device)

    return translate


def _asarray(xp: Any, data: Any, *, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Any:
    """``torch.tensor(data, dtype=x.dtype, device=x.device)``: a constant made like the input."""
    if requires_grad:
        raise _Refused("requires_grad=True inside forward")
    return xp.asarray(data, dtype=dtype, device=device)


def _like(name: str) -> Translator:
    def translate(xp: Any, a: Any, *args: Any, dtype: Any = None, memory_format: Any = None) -> Any:
        return getattr(xp, name)(a, *args, dtype=dtype)

    return translate


# --------------------------------------------------------------------------- linear algebra


def _det(xp: Any, a: Any) -> Any:
    return xp.linalg.det(a)


def _slogdet(xp: Any, a: Any) -> Any:
    return xp.linalg.slogdet(a)


def _logdet(xp: Any, a: Any) -> Any:
    """torch's ``logdet``: ``log|det|`` plus ``log(sign)`` (0, NaN for a negative determinant)."""
    sign, logabsdet = xp.linalg.slogdet(a)
    return logabsdet + xp.log(sign)


def _inv(xp: Any, a: Any) -> Any:
    return xp.linalg.inv(a)


def _solve(xp: Any, a: Any, b: Any, *, left: bool = True) -> Any:
    if not left:  # X A = B
        return xp.matrix_transpose(_solve(xp, xp.matrix_transpose(a), xp.matrix_transpose(b)))
    if b.ndim == a.ndim - 1:  # a batch of vectors
        return xp.linalg.solve(a, b[..., None])[..., 0]
    return xp.linalg.solve(a, b)


# --------------------------------------------------------------------------- modules


def _linear_module(xp: Any, m: nn.Linear, x: Any) -> Any:
    return _linear(xp, x, m.weight, m.bias)  # read now: a parametrized weight is recomputed


def _layer_norm_module(xp: Any, m: nn.LayerNorm, x: Any) -> Any:
    return _layer_norm(xp, x, m.normalized_shape, m.weight, m.bias, m.eps)


def _rms_norm_module(xp: Any, m: Any, x: Any) -> Any:
    return _rms_norm(xp, x, m.normalized_shape, m.weight, m.eps)


def _softmax_module(xp: Any, m: nn.Softmax, x: Any) -> Any:
    return _softmax(xp, x, m.dim)


def _log_softmax_module(xp: Any, m: nn.LogSoftmax, x: Any) -> Any:
    return _log_softmax(xp, x, m.dim)


def _flatten_module(xp: Any, m: nn.Flatten, x: Any) -> Any:
    return _flatten(xp, x, m.start_dim, m.end_dim)


def _unflatten_module(xp: Any, m: nn.Unflatten, x: Any) -> Any:
    return _unflatten(xp, x, m.dim, m.unflattened_size)


def _identity_module(xp: Any, m: nn.Module, x: Any, *args: Any, **kwargs: Any) -> Any:
    return x


def _dropout_module(xp: Any, m: Any, x: Any) -> Any:
    return _dropout(xp, x, m.p, m.training)


# --------------------------------------------------------------------------- the tables

_UNARY = {
    name: _elementwise(name)
    for name in ("exp", "log", "log1p", "expm1", "sqrt", "sin", "cos", "tan", "tanh", "sinh", "cosh", "abs", "square")
}
_UNARY["sign"] = _elementwise("sign")  # a constant: its derivatives are 0


def _numbers_only(op: Callable[..., Any]) -> Translator:
    """``//``, ``%`` and ``math`` functions: shape arithmetic on Python numbers only."""

    def translate(xp: Any, *args: Any) -> Any:
        if not all(isinstance(v, (int, float)) for v in args):
            raise _Refused(f"{op.__name__} of arrays is not supported")
        return op(*args)

    return translate


TRANSLATORS: dict[Any, Translator] = {
    **{op: _python(op) for op in (operator.add, operator.sub, operator.mul, operator.truediv, operator.pow)},
    **{op: _python(op) for op in (operator.neg, operator.pos, operator.and_, operator.or_, operator.invert)},
    **{op: _python(op) for op in (operator.lt, operator.le, operator.gt, operator.ge, operator.eq, operator.ne)},
    **{op: _numbers_only(op) for op in (operator.floordiv, operator.mod)},
    **{op: _numbers_only(op) for op in (math.sqrt, math.log, math.exp, math.ceil, math.floor)},
    **{k: _add for k in (torch.add, "add")},
    **{k: _sub for k in (torch.sub, torch.subtract, "sub", "subtract")},
    **{k: _rsub for k in (torch.rsub, "rsub")},
    **{k: _python(operator.mul) for k in (torch.mul, torch.multiply, "mul", "multiply")},
    **{k: _div for k in (torch.div, torch.divide, torch.true_divide, "div", "divide", "true_divide")},
    **{k: _python(operator.pow) for k in (torch.pow, "pow")},
    **{k: _python(operator.neg) for k in (torch.neg, torch.negative, "neg", "negative")},
    **{k: _reciprocal for k in (torch.reciprocal, "reciprocal")},
    **{k: _rsqrt for k in (torch.rsqrt, "rsqrt")},
    **{k: fn for name, fn in _UNARY.items() for k in (getattr(torch, name), name)},
    **{k: _python(operator.gt) for k in (torch.gt, "gt")},
    **{k: _python(operator.lt) for k in (torch.lt, "lt")},
    **{k: _where for k in (torch.where, "where")},
    **{k: _matmul for k in (operator.matmul, torch.matmul, torch.mm, torch.bmm, "matmul", "mm", "bmm")},
    F.linear: _linear,
    torch.tensordot: _tensordot,
    **{k: _outer for k in (torch.outer, torch.ger, "outer")},
    torch.einsum: _einsum,
    **{k: _reducer("sum") for k in (torch.sum, "sum")},
    **{k: _reducer("mean") for k in (torch.mean, "mean")},
    **{k: _reducer("prod") for k in (torch.prod, "prod")},
    **{k: _extremum(name, True) for name in ("max", "min") for k in (getattr(torch, name), name)},
    **{k: _extremum(name[1:], False) for name in ("amax", "amin") for k in (getattr(torch, name), name)},
    **{k: _var for k in (torch.var, "var")},
    **{k: _std for k in (torch.std, "std")},
    **{k: _logsumexp for k in (torch.logsumexp, torch.special.logsumexp, "logsumexp")},
    **{k: _softmax for k in (F.softmax, torch.softmax, "softmax")},
    **{k: _log_softmax for k in (F.log_softmax, torch.log_softmax, "log_softmax")},
    F.layer_norm: _layer_norm,
    F.rms_norm: _rms_norm,
    F.dropout: _dropout,
    **{k: _reshape for k in (torch.reshape, "reshape", "view")},
    **{k: _flatten for k in (torch.flatten, "flatten")},
    **{k: _unflatten for k in (torch.unflatten, "unflatten")},
    **{k: _unsqueeze for k in (torch.unsqueeze, "unsqueeze")},
    **{k: _squeeze for k in (torch.squeeze, "squeeze")},
    **{k: _permute for k in (torch.permute, "permute")},
    **{k: _transpose for k in (torch.transpose, torch.swapaxes, torch.swapdims, "transpose", "swapaxes", "swapdims")},
    **{k: _expand for k in ("expand",)},
    **{k: _expand_as for k in ("expand_as",)},
    **{k: _broadcast_to for k in (torch.broadcast_to, "broadcast_to")},
    **{k: _cat for k in (torch.cat, torch.concat, torch.concatenate)},
    torch.stack: _stack,
    **{k: _flip for k in (torch.flip, "flip")},
    **{k: _narrow for k in (torch.narrow, "narrow")},
    **{k: _split for k in (torch.split, "split")},
    **{k: _chunk for k in (torch.chunk, "chunk")},
    **{k: _unbind for k in (torch.unbind, "unbind")},
    **{k: _same for k in ("contiguous", "clone", torch.clone)},
    operator.getitem: _getitem,
    getattr: _getattr,
    **{k: _size for k in ("size",)},
    **{k: _ndim for k in ("dim", "ndimension")},
    **{k: _numel for k in ("numel", torch.numel)},
    "to": _to,
    "double": _cast(torch.float64),
    "float": _cast(torch.float32),
    "type_as": _type_as,
    **{getattr(torch, name): _factory(name, True) for name in ("zeros", "ones", "empty")},
    **{getattr(torch, name): _factory(name, False) for name in ("eye", "arange", "full", "linspace")},
    **{getattr(torch, f"{name}_like"): _like(f"{name}_like") for name in ("zeros", "ones", "full")},
    **{k: _asarray for k in (torch.tensor, torch.as_tensor, torch.asarray)},
    **{k: _det for k in (torch.linalg.det, torch.det, "det")},
    **{k: _slogdet for k in (torch.linalg.slogdet, torch.slogdet, "slogdet")},
    **{k: _logdet for k in (torch.logdet, "logdet")},
    **{k: _inv for k in (torch.linalg.inv, torch.inverse, "inverse")},
    torch.linalg.solve: _solve,
}
"""Torch functions (objects) and Tensor methods (names) to translators on input-dependent values."""

MODULE_TRANSLATORS: dict[type[nn.Module], Translator] = {
    nn.Linear: _linear_module,
    nn.LayerNorm: _layer_norm_module,
    nn.RMSNorm: _rms_norm_module,
    nn.Softmax: _softmax_module,
    nn.LogSoftmax: _log_softmax_module,
    nn.Flatten: _flatten_module,
    nn.Unflatten: _unflatten_module,
    nn.Identity: _identity_module,
    nn.Dropout: _dropout_module,
    nn.AlphaDropout: _dropout_module,
}
"""Modules kept whole while tracing (matched by class when the class keeps its ``forward``)."""

_ELEMENTWISE = {
    *_UNARY.values(),
    _reciprocal,
    _rsqrt,
    _identity_module,
    _dropout_module,
    _dropout,
}


def _module_translator(m: nn.Module) -> Translator | None:
    for cls, fn in MODULE_TRANSLATORS.items():
        if isinstance(m, cls) and type(m).forward is cls.forward:
            return fn
    return None


# --------------------------------------------------------------------------- activations=


def _activation_table(activations: Mapping[Any, ActivationSpec] | None) -> tuple[ActivationTable, set[Any]]:
    """The built-in activation tables with the caller's mapping on top, and the caller's keys."""
    from .torch import FUNCTION_ACTIVATIONS, MODULE_ACTIVATIONS  # here: xderiv.interop.torch may import this module

    def check(key: Any) -> None:
        if isinstance(key, type) and issubclass(key, nn.Module):
            known = next((fn for cls, fn in MODULE_TRANSLATORS.items() if issubclass(key, cls)), None)
        else:
            known = TRANSLATORS.get(key) if isinstance(key, str) or callable(key) else None
        if known is not None and known not in _ELEMENTWISE:
            raise TypeError(f"graph_function: activations maps {_name(key)}, which is not an elementwise function")

    modules, functions, wrapped = merged_tables(
        MODULE_ACTIVATIONS, FUNCTION_ACTIVATIONS, activations, "graph_function", check, names=True
    )
    return ActivationTable(modules, functions, {}, wrapped), set((activations or {}).keys())


def _name(target: Any) -> str:
    """``torch.fft.fft``, ``torch.argsort``, ``F.relu``, ``operator.add``, ``Tensor.sum``, a class name."""
    if isinstance(target, str):
        return f"Tensor.{target}"
    if isinstance(target, type):
        return target.__name__
    try:
        name = fx.node._get_qualified_name(target)
    except Exception:  # noqa: BLE001 - any callable fx accepted; fall back on its name
        name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None) or repr(target)
    for private, public in _PUBLIC:
        if name.startswith(private):
            return public + name[len(private) :]
    return name


_PUBLIC = (
    ("_operator.", "operator."),
    ("torch._C._nn.", "F."),
    ("torch.nn.functional.", "F."),
    ("torch._C._fft.fft_", "torch.fft."),
    ("torch._C._linalg.linalg_", "torch.linalg."),
    ("torch._C._special.special_", "torch.special."),
)


def _check_elementwise(fn: Callable[[Any], Any], what: str, dtype: torch.dtype, device: torch.device) -> None:
    """Refuse a mapped activation that changes shapes or mixes entries (probed on a 3 x 4 grid and its transpose).

    On the module's device; not on ``meta``, where no values exist to compare.
    """
    if device.type == "meta":
        return
    z = torch.linspace(-2.0, 2.0, 12, dtype=dtype, device=device).reshape(3, 4)
    try:
        with torch.no_grad():
            y, yt = fn(z), fn(z.mT.contiguous())
        ok = tuple(y.shape) == (3, 4) and bool(torch.allclose(yt.mT, y, rtol=1e-6, atol=1e-9, equal_nan=True))
    except Exception:  # noqa: BLE001 - a function that fails on this probe is not elementwise either
        ok = False
    if not ok:
        raise TypeError(
            f"graph_function: activations maps {what}, which is not elementwise (it changes the shape of a 3 x 4 "
            "input or mixes its entries); map only elementwise activations"
        )


# --------------------------------------------------------------------------- tracing and replay


class _Tracer(fx.Tracer):
    """Keeps the known modules whole and never writes to the traced module (constants go to ``constants``)."""

    def __init__(self, acts: ActivationTable) -> None:
        super().__init__(autowrap_functions=acts.wrapped)
        self.acts = acts
        self.constants: dict[str, torch.Tensor] = {}

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if self.acts.is_module(m) or _module_translator(m) is not None:
            return True
        return isinstance(m, parametrize.ParametrizationList) or super().is_leaf_module(m, module_qualified_name)

    def create_arg(self, a: Any) -> Any:
        if isinstance(a, torch.Tensor) and not isinstance(a, nn.Parameter) and a not in self.tensor_attrs:
            if not any(a is b for b in self.root.buffers()):  # a tensor made inside forward from Python values
                name = f"<constant {len(self.constants)}>"
                self.constants[name] = a
                self.tensor_attrs[a] = name
        return super().create_arg(a)


def _location(root: nn.Module, node: fx.Node) -> str:
    """``node 'name' (call_function torch.cat) in module blocks.0 (Block)``."""
    stack = list(node.meta.get("nn_module_stack", {}).values())
    if node.op == "call_module":
        path, cls = str(node.target), type(root.get_submodule(str(node.target)))
    elif stack:
        path, cls = stack[-1]
    else:
        path, cls = "", type(root)
    op = _name(node.target) if node.op in ("call_function", "call_method") else str(node.target)
    return f"node {node.name!r} ({node.op} {op}) in module {path or '<root>'} ({getattr(cls, '__name__', cls)})"


class _Program:
    """One traced structure: per fx node, a function ``fn(xp, *args, **kwargs)`` of its arguments' values."""

    def __init__(self, root: nn.Module, graph: fx.Graph, tracer: _Tracer, user: set[Any]) -> None:
        self.root, self.graph, self.tracer, self.acts, self.user = root, graph, tracer, tracer.acts, user
        self.input: fx.Node | None = None
        self.steps: list[tuple[fx.Node, Callable[..., Any], str]] = []
        self.dependent: set[fx.Node] = set()
        self.output: Any = None
        self.dtype = next((p.dtype for p in root.parameters() if p.is_floating_point()), torch.float64)
        self.device = next((p.device for p in root.parameters() if p.is_floating_point()), torch.device("cpu"))
        for node in graph.nodes:
            if node.op == "output":
                self.output = node.args[0]
                continue
            fn = self.compile(node)
            if fn is not None:
                self.steps.append((node, fn, _location(root, node)))
        if self.input is None:
            raise TypeError(f"graph_function: {type(root).__name__}.forward takes no input")

    def refuse(self, node: fx.Node, why: str) -> NotImplementedError:
        return NotImplementedError(f"graph_function: cannot translate {_location(self.root, node)}: {why}")

    def compile(self, node: fx.Node) -> Callable[..., Any] | None:
        if node.op == "placeholder":
            if self.input is None:
                self.input = node
                self.dependent.add(node)
                return None
            if node.args:  # an argument with a default
                default = node.args[0]
                return lambda xp, *_: default
            raise self.refuse(node, "forward takes several inputs; it must take one x of shape (..., d)")
        if node.op == "get_attr":
            target = str(node.target)
            if target in self.tracer.constants:
                value = self.tracer.constants[target]
                return lambda xp: value
            path, _, name = target.rpartition(".")
            owner = self.root.get_submodule(path)
            return lambda xp: getattr(owner, name)  # read at each call: never stale
        name = _name(node.target) if node.op != "call_module" else ""
        if name.endswith("_") and not name.endswith("__") or node.target is operator.setitem:
            raise self.refuse(node, "in-place operations are not supported")
        if "out" in node.kwargs:
            if node.kwargs["out"] is not None:
                raise self.refuse(node, "out= writes in place")
            node.kwargs = {k: v for k, v in node.kwargs.items() if k != "out"}
        if not any(n in self.dependent for n in node.all_input_nodes):
            return self.constant(node)
        self.dependent.add(node)
        if node.op == "call_module":
            return self.module(node, self.root.get_submodule(str(node.target)))
        return self.function(node)

    def constant(self, node: fx.Node) -> Callable[..., Any]:
        """A node of the module's tensors only: the torch operation itself, at each call."""
        target = node.target
        if node.op == "call_module":
            m = self.root.get_submodule(str(target))
            return lambda xp, *a, **k: m(*a, **k)
        if node.op == "call_method":
            return lambda xp, obj, *a, **k: getattr(obj, str(target))(*a, **k)
        assert callable(target)
        return lambda xp, *a, **k: target(*a, **k)

    def module(self, node: fx.Node, m: nn.Module) -> Callable[..., Any]:
        translate = _module_translator(m)
        if type(m) in self.user or (translate is None and self.acts.is_module(m)):
            if type(m) in self.user:
                _check_elementwise(m, type(m).__name__, self.dtype, self.device)
            self.activation(node, lambda: self.acts.of_module(m))
            return lambda xp, z: self.acts.of_module(m)(z, xp)
        if translate is None:
            raise self.refuse(
                node,
                f"{type(m).__name__} is not supported (an elementwise activation can be mapped with "
                f"graph_function(..., activations={{{type(m).__name__}: name}}))",
            )
        return lambda xp, *a, **k: translate(xp, m, *a, **k)

    def function(self, node: fx.Node) -> Callable[..., Any]:
        target = node.target
        try:
            user, translate = target in self.user, TRANSLATORS.get(target)
            mapped = target in self.acts.functions
        except TypeError:  # an unhashable target
            user, translate, mapped = False, None, False
        if user or (translate is None and mapped):
            first = node.args[0] if node.args else None
            if any(n in self.dependent and n is not first for n in node.all_input_nodes):
                raise self.refuse(node, "an activation takes one input-dependent tensor, its first argument")
            if user and callable(target) and len(node.args) == 1 and not node.kwargs:
                _check_elementwise(target, _name(target), self.dtype, self.device)

            def resolve(a: tuple[Any, ...] = (), k: dict[str, Any] | None = None) -> Activation:
                return _activation(self.acts.functions[target], a, k or {})

            constant_args = all(not isinstance(a, fx.Node) for a in (*node.args[1:], *node.kwargs.values()))
            if constant_args:
                self.activation(node, lambda: resolve(tuple(node.args[1:]), dict(node.kwargs)))
            return lambda xp, z, *a, **k: resolve(a, k)(z, xp)
        if translate is None:
            hint = " (map an elementwise activation with graph_function(..., activations=...))"
            raise self.refuse(node, f"{_name(target)} is not supported on input-dependent values{hint}")
        return translate

    def activation(self, node: fx.Node, resolve: Callable[[], Activation]) -> None:
        """Resolve a mapped activation once while tracing, so that a bad mapping names its node."""
        try:
            resolve()
        except (TypeError, ValueError) as e:
            raise type(e)(f"graph_function: cannot translate {_location(self.root, node)}: {e}") from e

    def run(self, x: Any) -> Any:
        xp = array_namespace(x)
        env: dict[fx.Node, Any] = {self.input: x}  # type: ignore[dict-item]
        for node, fn, where in self.steps:
            args = fx.node.map_arg(node.args, env.__getitem__)
            kwargs = fx.node.map_arg(node.kwargs, env.__getitem__)
            try:
                env[node] = fn(xp, *args, **kwargs)
            except _Refused as e:
                raise NotImplementedError(f"graph_function: cannot translate {where}: {e}") from None
            except Exception as e:
                e.add_note(f"graph_function: raised at {where}")
                raise
        return fx.node.map_arg(self.output, env.__getitem__)


def _fingerprint(root: nn.Module) -> tuple[Any, ...]:
    """What a traced graph depends on: the module tree, its tensors' names and its Python attributes."""
    out = []
    for path, m in root.named_modules():
        d = m.__dict__
        out.append(
            (
                path,
                id(m),
                type(m),
                tuple(m._parameters),
                tuple(m._buffers),
                tuple((k, v) for k, v in d.items() if not k.startswith("_") and _is_scalar(v)),
                tuple(k for k, v in d.items() if isinstance(v, torch.Tensor)),
            )
        )
    return tuple(out)


# --------------------------------------------------------------------------- the API


class GraphFunction:
    """``module.forward`` as a function of ``x`` through ``xp = array_namespace(x)`` (see :func:`graph_function`).

    Parameters
    ----------
    module : nn.Module
    activations : mapping, optional
        Elementwise modules (by class) or functions to xderiv activations.

    Attributes
    ----------
    module : nn.Module
        The module, read at every call.
    """

    _CACHE = 8  # traced structures kept (train/eval, attribute values)

    def __init__(self, module: nn.Module, activations: Mapping[Any, ActivationSpec] | None = None) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(f"graph_function: expected a torch.nn.Module, got {type(module).__name__}")
        self.module = module
        self._acts, self._user = _activation_table(activations)
        self._programs: dict[tuple[Any, ...], _Program] = {}
        self._program()  # trace now: an unsupported operation is reported at construction

    def _program(self) -> _Program:
        key = _fingerprint(self.module)
        program = self._programs.get(key)
        if program is None:
            tracer = _Tracer(self._acts)
            try:
                graph = tracer.trace(self.module)
            except Exception as e:  # noqa: BLE001 - any failure of fx is reported the same way
                raise NotImplementedError(
                    f"graph_function: torch.fx cannot trace {type(self.module).__name__}.forward: "
                    f"{type(e).__name__}: {e} (forward is read by symbolic tracing: no Python control flow on "
                    "the input's values or shapes, no iteration over tensors)"
                ) from e
            program = _Program(self.module, graph, tracer, self._user)
            if len(self._programs) >= self._CACHE:
                self._programs.pop(next(iter(self._programs)))
            self._programs[key] = program
        return program

    @property
    def graph(self) -> fx.Graph:
        """The torch.fx graph for the module's current structure."""
        return self._program().graph

    def __call__(self, x: Any) -> Any:
        """``module(x)`` computed with the operations of ``array_namespace(x)``.

        Parameters
        ----------
        x : array of shape ``(..., d)``
            A torch tensor, or any array whose namespace implements the operations used.

        Returns
        -------
        array
            What ``module.forward`` returns (an array, or a tuple/dict of them).
        """
        return self._program().run(x)

    def __repr__(self) -> str:
        return f"graph_function({type(self.module).__name__})"


def graph_function(module: nn.Module, activations: Mapping[Any, ActivationSpec] | None = None) -> GraphFunction:
    """Translate a torch module's ``forward`` into a function written against the Array API.

    Parameters
    ----------
    module : torch.nn.Module
        ``forward(x)`` of one tensor ``x`` of shape ``(..., d)`` (more arguments need defaults), built
        from the operations listed in the module docstring of :mod:`xderiv.interop.torch_graph`.
    activations : mapping, optional
        More activations, for this translation only: keys are elementwise ``nn.Module`` classes or
        functions called in ``forward``; values an xderiv activation name, an
        :class:`~xderiv.activations.Activation` or a callable returning one (called with the module,
        or with the call's arguments after the input), as for
        :func:`xderiv.interop.torch.from_torch`.  Keys that are not elementwise are refused.

    Returns
    -------
    GraphFunction
        ``f(x)`` equal to ``module(x)``.  It reads every Parameter and buffer from the module at each
        call (parametrized weights are recomputed), so gradients reach them and updates are seen;
        a changed module structure (submodules, Python attributes, ``train()``/``eval()``) traces
        ``forward`` again.

    Raises
    ------
    NotImplementedError
        For an operation on input-dependent values that is not supported, or a ``forward`` that
        torch.fx cannot trace, naming the fx node, the operation and the module path.
    TypeError
        For a bad ``activations`` mapping (a key that is not elementwise, a value that is not an activation).

    Examples
    --------
    >>> import torch
    >>> class Gated(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.u, self.v, self.h = (torch.nn.Linear(2, 8) for _ in range(3))
    ...         self.out = torch.nn.Linear(8, 1)
    ...     def forward(self, x):
    ...         z = torch.tanh(self.h(x))
    ...         return self.out((1 - z) * torch.tanh(self.u(x)) + z * torch.tanh(self.v(x)))
    >>> model, x = Gated(), torch.randn(5, 2)
    >>> f = graph_function(model)
    >>> torch.allclose(f(x), model(x))
    True
    """
    return GraphFunction(module, activations)


__all__ = ["MODULE_TRANSLATORS", "TRANSLATORS", "GraphFunction", "graph_function"]
