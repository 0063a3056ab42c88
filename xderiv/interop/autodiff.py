r"""Nested-autodiff references for :func:`xderiv.check`: ``torch.func`` and JAX.

Both differentiate the one-point function :math:`f(p) = ` ``xd.value(net, p)`` with the
backend's own autodiff, which goes through xderiv's value computation only (none of its
derivative recursions), in float64:

- **torch** (:class:`TorchReference`): one point at a time, ``torch.func.jacfwd`` for the
  Jacobian, ``torch.func.hessian`` for the Hessian, nested ``torch.func.jvp`` for directional
  derivatives above order 2 and mixed partials, the Hessian of the Laplacian for the
  biharmonic.  Points are looped over rather than ``vmap``-ed: in torch 2.13,
  ``vmap(hessian(f))`` over points returns wrong Hessians for an ``f`` ending in
  ``torch.linalg.slogdet``.
- **JAX** (:class:`JaxReference`): the same transforms (``jax.jacfwd``, ``jax.hessian``,
  nested ``jax.jvp``) under ``jax.vmap`` over the points, compiled by ``jax.jit`` (one compile
  per check: eagerly, JAX dispatches and compiles each primitive of the nested transforms
  on its own, several times slower).

torch and jax are imported inside the functions: importing this module imports neither.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from .. import operators as ops
from ..verification.reference import Estimate, Reference, register_autodiff

Array = Any


_RECENT: OrderedDict[int, JaxReference] = OrderedDict()
"""The JAX references of the last few networks checked, with their compiled functions (by ``id``).

Each holds its network, so an ``id`` is not reused while its entry is kept."""

_KEEP = 4


def reference(net: Any, x: Array) -> Reference:
    """The autodiff reference for ``net`` at arrays like ``x`` (a torch tensor or a JAX array)."""
    import array_api_compat

    if array_api_compat.is_torch_array(x):
        return TorchReference(net, array_api_compat.array_namespace(x))
    if array_api_compat.is_jax_array(x):
        cached = _RECENT.get(id(net))
        if cached is None or cached.net is not net:
            cached = JaxReference(net, array_api_compat.array_namespace(x))
        _RECENT[id(net)] = cached
        _RECENT.move_to_end(id(net))
        while len(_RECENT) > _KEEP:
            _RECENT.popitem(last=False)
        return cached
    raise TypeError(f"no autodiff reference for {type(x).__module__}.{type(x).__name__} arrays")


def _orders(g: Callable[[Any], Any], order: int, jvp: Callable[..., Any], one: Any) -> Callable[[Any], tuple]:
    """``t -> (g(t), g'(t), ..., g^(K)(t))`` by ``K`` nested forward-mode derivatives of a scalar variable."""
    if order == 0:
        return lambda t: (g(t),)
    inner = _orders(g, order - 1, jvp, one)

    def outer(t: Any) -> tuple:
        primal, tangent = jvp(inner, (t,), (one,))
        return (*primal, tangent[-1])

    return outer


def _along(f: Callable[[Any], Any], units: Sequence[Any], jvp: Callable[..., Any]) -> Callable[[Any], Any]:
    """``p -> d/du_1 ... d/du_K f(p)``: nested directional derivatives along ``units``."""

    def step(h: Callable[[Any], Any], u: Any) -> Callable[[Any], Any]:
        return lambda p: jvp(h, (p,), (u,))[1]

    for u in units:
        f = step(f, u)
    return f


class TorchReference(Reference):
    """``torch.func`` per point (see the module docstring)."""

    name = "torch.func, per point"
    exact = True

    def __init__(self, net: Any, xp: Any) -> None:
        super().__init__(net, xp)
        self.f = lambda p: ops.value(net, p)

    def _each(self, g: Callable[[Any], Any], P: Array) -> Array:
        import torch

        with torch.no_grad():  # the transforms still differentiate; no graph of the weights is kept
            return torch.stack([g(p) for p in P])

    def jacobian(self, P: Array) -> Estimate:
        from torch.func import jacfwd

        return self._each(jacfwd(self.f), P), None

    def hessian(self, P: Array) -> Estimate:
        from torch.func import hessian

        return self._each(hessian(self.f), P), None

    def higher(self, P: Array, V: Array, order: int) -> list[Estimate]:
        import torch
        from torch.func import jvp

        one = torch.ones((), dtype=P.dtype, device=P.device)
        zero = torch.zeros((), dtype=P.dtype, device=P.device)
        rows = []
        with torch.no_grad():
            for p, vs in zip(P, V, strict=True):
                per_direction = []
                for v in vs.T:
                    g = self._line(p, v)
                    per_direction.append(torch.stack(_orders(g, order, jvp, one)(zero)))  # (K+1, *out)
                rows.append(torch.stack(per_direction, dim=-1))  # (K+1, *out, r)
        out = torch.stack(rows, dim=1)  # (K+1, P, *out, r)
        return [(out[k], None) for k in range(order + 1)]

    def _line(self, p: Array, v: Array) -> Callable[[Any], Any]:
        return lambda t: self.f(p + t * v)

    def biharmonic(self, P: Array) -> Estimate:
        import torch
        from torch.func import hessian

        def laplacian(p: Array) -> Array:
            return torch.diagonal(hessian(self.f)(p), dim1=-2, dim2=-1).sum(-1)

        return self._each(lambda p: torch.diagonal(hessian(laplacian)(p), dim1=-2, dim2=-1).sum(-1), P), None

    def partial(self, P: Array, alpha: Sequence[int]) -> Estimate:
        import torch
        from torch.func import jvp

        eye = torch.eye(P.shape[-1], dtype=P.dtype, device=P.device)
        units = [eye[i] for i, a in enumerate(alpha) for _ in range(int(a))]
        return self._each(_along(self.f, units, jvp), P), None


class JaxReference(Reference):
    """``jax.jacfwd``, ``jax.hessian``, nested ``jax.jvp``, under ``jax.vmap`` and ``jax.jit`` (module docstring).

    The compiled functions are kept with the reference, which :func:`reference` keeps for the
    last few networks checked: checking one network again (another operator, another batch of
    the same size) compiles nothing.
    """

    name = "jax, vmapped over points and jitted"
    exact = True

    def __init__(self, net: Any, xp: Any) -> None:
        super().__init__(net, xp)
        self.f = lambda p: ops.value(net, p)
        self.compiled: dict[tuple, Callable[..., Any]] = {}

    def _jit(self, key: tuple, build: Callable[[], Callable[..., Any]]) -> Callable[..., Any]:
        import jax

        if key not in self.compiled:
            self.compiled[key] = jax.jit(build())
        return self.compiled[key]

    def jacobian(self, P: Array) -> Estimate:
        import jax

        return self._jit(("jacobian",), lambda: jax.vmap(jax.jacfwd(self.f)))(P), None

    def hessian(self, P: Array) -> Estimate:
        import jax

        return self._jit(("hessian",), lambda: jax.vmap(jax.hessian(self.f)))(P), None

    def higher(self, P: Array, V: Array, order: int) -> list[Estimate]:
        import jax
        import jax.numpy as jnp

        def build() -> Callable[..., Any]:
            one, zero = jnp.ones((), dtype=P.dtype), jnp.zeros((), dtype=P.dtype)

            def at(p: Array, v: Array) -> tuple:
                return _orders(lambda t: self.f(p + t * v), order, jax.jvp, one)(zero)

            return jax.vmap(jax.vmap(at, in_axes=(None, 1), out_axes=-1))  # V[p] is (d, r)

        out = self._jit(("taylor", order), build)(P, V)
        return [(o, None) for o in out]

    def biharmonic(self, P: Array) -> Estimate:
        import jax
        import jax.numpy as jnp

        def laplacian(p: Array) -> Array:
            return jnp.trace(jax.hessian(self.f)(p), axis1=-2, axis2=-1)

        def build() -> Callable[..., Any]:
            return jax.vmap(lambda p: jnp.trace(jax.hessian(laplacian)(p), axis1=-2, axis2=-1))

        return self._jit(("biharmonic",), build)(P), None

    def partial(self, P: Array, alpha: Sequence[int]) -> Estimate:
        import jax
        import jax.numpy as jnp

        def build() -> Callable[..., Any]:
            eye = jnp.eye(P.shape[-1], dtype=P.dtype)
            units = [eye[i] for i, a in enumerate(alpha) for _ in range(int(a))]
            return jax.vmap(_along(self.f, units, jax.jvp))

        return self._jit(("partial", tuple(int(a) for a in alpha)), build)(P), None


register_autodiff(reference)
