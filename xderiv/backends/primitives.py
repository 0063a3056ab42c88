"""Fused forms of the expressions every layer evaluates, chosen once per array namespace.

The recursions are written once against the Array API standard; where a library
has a fused or in-place form of one of their expressions (torch's ``addmm`` and
``addcmul``, NumPy's ``einsum`` reductions, CuPy's elementwise kernels), the
:class:`Primitives` of its namespace supply it, read from the namespace itself,
so this module, like the rest of the core, imports no array library.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Array = Any
"""Any array of an Array API compliant namespace."""


def matmul_last(a: Array, w: Array, xp: Any) -> Array:
    """``a @ w`` contracting the last axis of ``a`` (shape ``(..., k)``) with ``w`` (``(k, j)``).

    Stacks of matrices are flattened to one 2-D product so that every backend
    issues a single GEMM instead of one per leading index.
    """
    if a.ndim <= 2:
        return a @ w
    lead = tuple(a.shape[:-1])
    out = xp.reshape(a, (math.prod(lead), a.shape[-1])) @ w
    return xp.reshape(out, lead + (w.shape[-1],))


def scale(a: Array, h: float) -> Array:
    """``h * a``, skipping the pass over ``a`` when ``h == 1`` (the step of every Dense layer)."""
    return a if h == 1.0 else h * a


def _plain_affine(u: Array, w: Array, b: Array) -> Array:
    return u @ w + b


def _plain_axpy(y: Array, h: float, a: Array) -> Array:
    return y + scale(a, h)


def _plain_addcmul(y: Array, a: Array, b: Array) -> Array:
    return y + a * b


def _plain_matmul_add(y: Array, a: Array, w: Array, xp: Any) -> Array:
    return y + matmul_last(a, w, xp)


def _numpy_matmul(a: Array, w: Array, xp: Any) -> Array:
    """``a @ w`` over the last axis on NumPy: one small product per point where that beats :func:`matmul_last`.

    ``a`` of shape (n, k, w_in), ``w`` (w_in, w_out). OpenBLAS runs a tall product of narrow widths,
    ``(n k x w_in) . (w_in x w_out)``, slower than the ``n`` products ``(k x w_in) . (w_in x w_out)``
    that NumPy's stacked ``matmul`` issues (its small-matrix kernels skip packing the tall operand).
    Taken for at least 4 rows per point and widths of 8 to 256 (fewer rows, wider layers and single
    outputs run faster as one product; measurements: ``benchmarks/``, the manual's speed page). The
    same multiply-adds (n k w_in w_out), so the same results to round-off.
    """
    if a.ndim >= 3 and a.shape[-2] >= 4 and w.shape[0] <= 256 and 8 <= w.shape[1] <= 256:
        return a @ w
    return matmul_last(a, w, xp)


def _numpy_matmul_add(y: Array, a: Array, w: Array, xp: Any) -> Array:
    return y + _numpy_matmul(a, w, xp)


def _plain_activation(activation: Any, z: Array, xp: Any, order: int) -> tuple[Array, ...]:
    return tuple(activation.derivatives(z, xp, order))


def _plain_sum_squares(a: Array, axis: int, xp: Any) -> Array:
    return xp.sum(a * a, axis=axis)


def _einsum_sum_squares(a: Array, axis: int, xp: Any) -> Array:
    """NumPy's ``einsum`` sums ``(n, k, w)`` rows over ``k`` without materialising ``a * a`` (one pass)."""
    if a.ndim == 3 and axis in (-2, 1):
        return xp.einsum("nkw,nkw->nw", a, a)
    return _plain_sum_squares(a, axis, xp)


def _plain_lead_sum(a: Array, xp: Any) -> Array:
    return xp.sum(a, axis=0, keepdims=True)


def _pairwise_sum(a: Array, axis: int) -> Array:
    """``sum(a, axis=axis, keepdims=True)`` as halves added pairwise: ``a[:h] + a[h:2h]`` along ``axis``
    until one row is left (an odd row out is kept aside and added at the end).

    Elementwise additions only, about ``log2 r`` of them: XLA's CPU fusions (YNNPACK, the default in
    jaxlib 0.8) run a reduction over the leading axis of an ``(r, n, w)`` array 10-50x slower than
    any elementwise pass, and one over the middle axis of ``(n, k, w)`` 1.5-2x slower than these additions.
    """
    axis %= a.ndim

    def part(start: int, stop: int) -> tuple[Any, ...]:
        return (slice(None),) * axis + (slice(start, stop), Ellipsis)

    rest = None
    while a.shape[axis] > 1:
        r, h = a.shape[axis], a.shape[axis] // 2
        if r % 2:
            rest = a[part(2 * h, r)] if rest is None else rest + a[part(2 * h, r)]
        a = a[part(0, h)] + a[part(h, 2 * h)]
    return a if rest is None else a + rest


def _pairwise_lead_sum(a: Array, xp: Any) -> Array:
    return _pairwise_sum(a, 0)


def _pairwise_sum_squares(a: Array, axis: int, xp: Any) -> Array:
    return xp.squeeze(_pairwise_sum(a * a, axis), axis=axis)


def _weighted(a: Array, b: Array, w: Array | None, xp: Any) -> Array:
    out = a * b
    if w is not None:
        out = xp.reshape(w, (w.shape[0],) + (1,) * (out.ndim - 1)) * out
    return out


def _plain_lead_dot(a: Array, b: Array, w: Array | None, xp: Any) -> Array:
    return xp.sum(_weighted(a, b, w, xp), axis=0, keepdims=True)


def _pairwise_lead_dot(a: Array, b: Array, w: Array | None, xp: Any) -> Array:
    return _pairwise_lead_sum(_weighted(a, b, w, xp), xp)


def _same_lead(a: Array, b: Array) -> bool:
    return a.ndim == b.ndim and a.ndim > 0 and a.shape[0] == b.shape[0] and a.dtype == b.dtype


def _einsum_lead_dot(a: Array, b: Array, w: Array | None, xp: Any) -> Array:
    """NumPy's ``einsum`` contracts the first axis in one pass, without the ``(r, ...)`` product."""
    if not _same_lead(a, b):
        return _plain_lead_dot(a, b, w, xp)
    if w is None:
        return xp.einsum("i...,i...->...", a, b)[None, ...]
    return xp.einsum("i,i...,i...->...", xp.astype(w, a.dtype), a, b)[None, ...]


LEAD_DOT_ROW = 2048
"""Elements per row from which torch's :attr:`Primitives.lead_dot` accumulates row by row."""


@dataclass(frozen=True)
class Primitives:
    """Fused forms of the expressions every layer evaluates, chosen once per namespace.

    The recursions call these instead of writing the expressions out, so that a
    namespace with a fused kernel runs one array operation (one kernel launch)
    where the plain form runs two; results are identical to round-off.

    Attributes
    ----------
    affine : callable ``(u, w, b) -> u @ w + b``
        ``u`` of shape (n, k), ``w`` (k, j), ``b`` (j,).
    axpy : callable ``(y, h, a) -> y + h * a``
        ``h`` a Python float.
    addcmul : callable ``(y, a, b) -> y + a * b``
        Elementwise, broadcasting.
    matmul_add : callable ``(y, a, w, xp) -> y + matmul(a, w, xp)``
        ``a`` of shape (..., k), ``w`` (k, j), ``y`` broadcastable to (..., j).
    activation : callable ``(activation, z, xp, order) -> activation.derivatives(z, xp, order)``
        :math:`(\\sigma, \\sigma', \\dots, \\sigma^{(k)})` at ``z``.  On torch, where
        ``z`` takes part in autograd and the activation has
        :meth:`~xderiv.activations.Activation.next_derivative`, one autograd node
        whose reverse and forward-mode derivative is part :math:`j` to part
        :math:`j + 1` (:math:`\\bar z = \\sum_j \\bar g_j \\odot \\sigma^{(j+1)}`)
        instead of the graph of every part's formula.  On CuPy, orders 1 and 2 of an
        activation with a :attr:`~xderiv.activations.Activation.kernel` are one
        elementwise kernel.
    sum_squares : callable ``(a, axis, xp) -> sum(a * a, axis=axis)``
        The column sums of squares of the Jacobian rows (the forward Laplacian's
        curvature term), without the temporary ``a * a`` on NumPy (``einsum``) and
        CuPy (a reduction kernel); torch fuses the standard form itself; JAX adds
        halves pairwise (:func:`_pairwise_sum`).
    stacked_products : float
        How much slower than its multiply-add count a recursion made of stacks of small
        per-point matrix products (the sum-of-layers Hessian) runs here, relative to one made of
        2-D products: 1 on NumPy and torch; more under XLA, whose batched products of small
        matrices are slow (it picks :meth:`xderiv.engine.cost.Costs.hessian_over_reverse`'s form).
    in_place : bool
        Whether :meth:`times`, :meth:`plus` and :meth:`fma` write into the temporary they are
        handed (NumPy only; autodiff and tracing namespaces never): a fresh array costs its
        allocation and a pass over memory not yet in cache.
    matmul : callable ``(a, w, xp) -> a @ w``
        ``a`` of shape (..., k) contracted with ``w`` (k, j): :func:`matmul_last` (one 2-D
        product), or on NumPy one small product per point where that is faster.
    lead_dot : callable ``(a, b, w, xp) -> sum(w * a * b, axis=0, keepdims=True)``
        :math:`\\sum_\\rho \\omega_\\rho a_\\rho b_\\rho` over the first axis of ``a`` and ``b``
        (shapes ``(r, ...)``, broadcasting; ``w`` of shape ``(r,)``, or None for weights of one):
        the collapsed top term of a jet (:mod:`xderiv.jets.kinds`).  The plain form writes the
        ``(r, ...)`` product and reads it again; NumPy contracts in one pass (``einsum``); torch,
        outside autograd, accumulates row by row with ``addcmul`` (the accumulator stays in cache),
        and where autograd records takes the plain form, whose reverse pass stacks no rows'
        gradients; JAX adds halves pairwise (:func:`_pairwise_sum`).  ``r`` multiply-adds per
        element either way.
    lead_sum : callable ``(a, xp) -> sum(a, axis=0, keepdims=True)``
        The same sum without the product (a collapsed term of any other bilinear map, such as
        ``a @ b``): the reduction, or JAX's pairwise additions.
    """

    affine: Callable[[Array, Array, Array], Array] = _plain_affine
    axpy: Callable[[Array, float, Array], Array] = _plain_axpy
    addcmul: Callable[[Array, Array, Array], Array] = _plain_addcmul
    matmul_add: Callable[[Array, Array, Array, Any], Array] = _plain_matmul_add
    activation: Callable[[Any, Array, Any, int], tuple[Array, ...]] = _plain_activation
    sum_squares: Callable[[Array, int, Any], Array] = _plain_sum_squares
    stacked_products: float = 1.0
    in_place: bool = False
    matmul: Callable[[Array, Array, Any], Array] = matmul_last
    lead_dot: Callable[[Array, Array, Array | None, Any], Array] = _plain_lead_dot
    lead_sum: Callable[[Array, Any], Array] = _plain_lead_sum

    def times(self, owned: Array, a: Array) -> Array:
        """``owned * a``, where ``owned`` is a temporary of the caller's, read no more: with
        :attr:`in_place`, written into ``owned`` (same values: the product is commutative)."""
        if self.in_place and _fits(owned, a):
            owned *= a
            return owned
        return owned * a

    def plus(self, owned: Array, a: Array) -> Array:
        """``owned + a`` for a temporary ``owned`` (see :meth:`times`)."""
        if self.in_place and _fits(owned, a):
            owned += a
            return owned
        return owned + a

    def fma(self, y: Array, a: Array, owned: Array) -> Array:
        """``y + a * owned`` (:attr:`addcmul`) for a temporary ``owned`` (see :meth:`times`)."""
        if self.in_place and _fits(owned, a) and _fits(owned, y):
            owned *= a
            owned += y
            return owned
        return self.addcmul(y, a, owned)


def _fits(owned: Array, a: Array) -> bool:
    """Whether ``owned op= a`` gives ``owned op a``: ``a`` a Python float, or an array of
    ``owned``'s dtype that broadcasts to ``owned``'s shape without enlarging it."""
    if isinstance(a, float):
        return True
    if a.dtype != owned.dtype or a.ndim > owned.ndim:
        return False
    return all(i == 1 or i == j for i, j in zip(reversed(a.shape), reversed(owned.shape)))


PLAIN = Primitives()
"""The standard's expressions, for every namespace without fused kernels."""

NUMPY = Primitives(
    matmul_add=_numpy_matmul_add,
    matmul=_numpy_matmul,
    sum_squares=_einsum_sum_squares,
    in_place=True,
    lead_dot=_einsum_lead_dot,
)
"""NumPy: the plain expressions, per-point products where OpenBLAS runs them faster
(:func:`_numpy_matmul`), ``einsum`` for the sums of squares, and products and sums written into
the temporaries the recursions hand over (:attr:`Primitives.in_place`), the jets' collapsed
terms contracted by ``einsum`` (:attr:`Primitives.lead_dot`)."""

XLA = Primitives(
    stacked_products=1.8,
    lead_dot=_pairwise_lead_dot,
    lead_sum=_pairwise_lead_sum,
    sum_squares=_pairwise_sum_squares,
)
"""JAX: the plain expressions (``jit`` fuses them); stacked per-point products weighed 1.8x
their multiply-adds against 2-D ones (XLA's batched products of small matrices are slow, so the
forward Hessian takes its forward-over-reverse form unless that needs more than 1.8x the
multiply-adds); the jets' collapsed terms and the chains' sums of squares added pairwise
(:func:`_pairwise_sum`: XLA's CPU fusions reduce over a leading or middle axis slowly)."""


def primitives(xp: Any) -> Primitives:
    """The :class:`Primitives` of namespace ``xp``, chosen by its name.

    torch: ``addmm`` (also for the accumulated products), ``add(alpha=)``,
    ``addcmul``, and the activation's autograd node; CuPy: elementwise and
    reduction kernels (:func:`_cupy_primitives`); JAX: :data:`XLA`; NumPy:
    :data:`NUMPY`; any other namespace: :data:`PLAIN`.

    Read from the namespace itself (array-api-compat's torch and CuPy namespaces
    export their library's functions), so the core imports no array library.
    """
    name = getattr(xp, "__name__", "")
    if name == "jax.numpy":
        return XLA
    if is_numpy_namespace(xp):
        return NUMPY
    if name == "array_api_compat.cupy":
        return _cupy_primitives(xp)
    if name != "array_api_compat.torch":
        return PLAIN
    addmm, add, addcmul = xp.addmm, xp.add, xp.addcmul

    def affine(u: Array, w: Array, b: Array) -> Array:
        return addmm(b, u, w) if u.ndim == 2 and w.ndim == 2 and b.ndim == 1 else u @ w + b

    def axpy(y: Array, h: float, a: Array) -> Array:
        return add(y, a, alpha=h) if h != 1.0 else y + a

    def both(y: Array, a: Array, b: Array) -> Array:
        return addcmul(y, a, b) if y.dtype == a.dtype == b.dtype else y + a * b

    def matmul_add(y: Array, a: Array, w: Array, xp: Any) -> Array:
        out_shape = tuple(a.shape[:-1]) + (w.shape[-1],)
        if a.ndim < 2 or tuple(y.shape) != out_shape or not y.dtype == a.dtype == w.dtype:
            return y + matmul_last(a, w, xp)
        rows = math.prod(out_shape[:-1])
        out = addmm(xp.reshape(y, (rows, w.shape[-1])), xp.reshape(a, (rows, a.shape[-1])), w)
        return xp.reshape(out, out_shape)

    unbind = xp.unstack

    def lead_dot(a: Array, b: Array, w: Array | None, xp_: Any) -> Array:
        row = max(math.prod(a.shape[1:]), math.prod(b.shape[1:]))
        plain = w is not None or not _same_lead(a, b) or a.shape[0] < 2 or row < LEAD_DOT_ROW
        if plain or a.requires_grad or b.requires_grad:  # reversed, the rows' gradients would be stacked again
            return _plain_lead_dot(a, b, w, xp_)
        rows_a = unbind(a, axis=0)
        rows_b = rows_a if b is a else unbind(b, axis=0)
        acc = rows_a[0] * rows_b[0]
        for x, y in zip(rows_a[1:], rows_b[1:]):
            acc = addcmul(acc, x, y)
        return acc[None, ...]

    return Primitives(affine, axpy, both, matmul_add, _torch_activation(xp), lead_dot=lead_dot)


def _torch_activation(xp: Any) -> Callable[[Any, Array, Any, int], tuple[Array, ...]]:
    r"""torch's :attr:`Primitives.activation`: the parts as one autograd node (``xp.autograd.Function``).

    The node's derivative maps the tangent :math:`\dot z` (or the cotangents
    :math:`\bar g_j` of the parts) through :math:`\partial \sigma^{(j)}/\partial z =
    \sigma^{(j+1)}`, with the last one from ``next_derivative``: a handful of
    operations where autograd would record and differentiate every operation of
    the stable formulas.  Both are written with differentiable operations on the
    saved parts, so gradients of gradients go through the node again.
    """
    addcmul = xp.addcmul

    def chain(activation: Any, z: Array, parts: tuple[Array, ...], seeds: tuple[Array | None, ...]) -> Array | None:
        r""":math:`\sum_j s_j \odot \sigma^{(j+1)}(z)` over the seeds given (None: no seed)."""
        out = None
        for j, seed in enumerate(seeds):
            if seed is not None:
                derivative = parts[j + 1] if j + 1 < len(parts) else activation.next_derivative(z, parts, xp)
                out = seed * derivative if out is None else addcmul(out, seed, derivative)
        return out

    class ActivationParts(xp.autograd.Function):  # type: ignore[misc, name-defined]
        generate_vmap_rule = True

        @staticmethod
        def forward(z: Array, activation: Any, order: int) -> tuple[Array, ...]:
            return tuple(activation.derivatives(z, xp, order))

        @staticmethod
        def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Array, ...]) -> None:
            ctx.activation = inputs[1]
            ctx.set_materialize_grads(False)
            ctx.save_for_backward(inputs[0], *output)
            ctx.save_for_forward(inputs[0], *output)

        @staticmethod
        def backward(ctx: Any, *grads: Array | None) -> tuple[Array | None, None, None]:
            z, *parts = ctx.saved_tensors
            return chain(ctx.activation, z, tuple(parts), grads), None, None

        @staticmethod
        def jvp(ctx: Any, z_dot: Array | None, *_: None) -> tuple[Array | None, ...]:
            z, *parts = ctx.saved_tensors
            if z_dot is None:
                return (None,) * len(parts)
            higher = (*parts[1:], ctx.activation.next_derivative(z, tuple(parts), xp))
            return tuple(derivative * z_dot for derivative in higher)

    is_compiling = xp.compiler.is_compiling

    def activation(act: Any, z: Array, xp_: Any, order: int) -> tuple[Array, ...]:
        # torch.compile traces no Function with a jvp; it fuses the formulas' derivatives itself.
        if order >= 1 and z.requires_grad and act.after is not None and not is_compiling():
            return tuple(ActivationParts.apply(z, act, order))
        return tuple(act.derivatives(z, xp_, order))

    return activation


def has_autodiff(xp: Any) -> bool:
    """True for torch and JAX, whose arrays are differentiated through the formulas xderiv evaluates.

    By name (traceable, no cache), like :func:`is_numpy_namespace`.  Formulas whose plain form
    autodiff differentiates wrongly somewhere (``abs`` at 0) take an exact form there only.
    """
    return getattr(xp, "__name__", "") in ("array_api_compat.torch", "torch", "jax.numpy")


def is_numpy_namespace(xp: Any) -> bool:
    """True for NumPy's namespace (array-api-compat's wrapper or NumPy itself), by name: traceable, no cache."""
    return getattr(xp, "__name__", "") in ("numpy", "array_api_compat.numpy")


def _cupy_primitives(xp: Any) -> Primitives:
    """CuPy's :class:`Primitives`: each layer's elementwise chains as one kernel launch each.

    CuPy runs every array operation as its own kernel and refuses CUDA-graph capture around
    cuBLAS calls, so eagerly it pays a launch and a full pass over memory per operation.
    Here ``y + a * b``, ``y + h * a`` and the activations' parts (their
    :attr:`~xderiv.activations.Activation.kernel`, σ, σ′, σ″ in one pass) are
    ``ElementwiseKernel`` s and the sums of squares a ``ReductionKernel``: a tanh layer of the
    forward Laplacian takes 9 launches instead of 20.  Only for float32 and float64 operands of
    one dtype; anything else takes the plain expressions.  The plain expressions throughout when
    the namespace exports no kernel classes.
    """
    elementwise = getattr(xp, "ElementwiseKernel", None)
    reduction = getattr(xp, "ReductionKernel", None)
    if elementwise is None or reduction is None:
        return PLAIN
    multiply_add = elementwise("T y, T a, T b", "T out", "out = y + a * b", "xderiv_addcmul")
    scaled_add = elementwise("T y, T a, T h", "T out", "out = y + h * a", "xderiv_axpy")
    squares = reduction("T x", "T y", "x * x", "a + b", "y = a", "0", "xderiv_sum_squares")
    floating = (xp.float32, xp.float64)
    parts: dict[str, Any] = {}  # activation kernel body -> its ElementwiseKernel

    def kernel_dtype(*arrays: Any) -> bool:
        dtype = getattr(arrays[0], "dtype", None)
        return dtype in floating and all(getattr(a, "dtype", None) == dtype for a in arrays[1:])

    def axpy(y: Array, h: float, a: Array) -> Array:
        if h == 1.0 or not kernel_dtype(y, a):
            return _plain_axpy(y, h, a)
        return scaled_add(y, a, a.dtype.type(h))

    def addcmul(y: Array, a: Array, b: Array) -> Array:
        return multiply_add(y, a, b) if kernel_dtype(y, a, b) else _plain_addcmul(y, a, b)

    def sum_squares(a: Array, axis: int, xp_: Any) -> Array:
        return squares(a, axis=axis % a.ndim) if kernel_dtype(a) and a.ndim > 0 else _plain_sum_squares(a, axis, xp_)

    def activation(act: Any, z: Array, xp_: Any, order: int) -> tuple[Array, ...]:
        body = act.kernel
        if body is None or order not in (1, 2) or not kernel_dtype(z):
            return tuple(act.derivatives(z, xp_, order))
        fused = parts.get(body)
        if fused is None:
            fused = parts.setdefault(body, elementwise("T z", "T s, T d1, T d2", body, "xderiv_activation"))
        return tuple(fused(z))[: order + 1]

    return Primitives(axpy=axpy, addcmul=addcmul, activation=activation, sum_squares=sum_squares)
