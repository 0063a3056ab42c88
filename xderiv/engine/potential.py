r"""The quadratic and linear terms of a :class:`~xderiv.Potential`, for every operator.

A Potential is ``layers(x) + q(x)`` with

.. math:: q(x) = \tfrac12 x^\top A x + c^\top x, \qquad \nabla q = A_s x + c, \qquad
          \nabla^2 q = A_s = \tfrac12 (A + A^\top),

either term optional.  :class:`PotentialTerms` is built once per call in the
working dtype (:math:`A_s` formed once).  It adds ``q``'s value and gradient here; every other
operator adds its own term of ``q`` in its module under :mod:`xderiv.operators` from
:attr:`PotentialTerms.sym`, :meth:`PotentialTerms.times_a` and :meth:`PotentialTerms.gradient`.
For a network without these terms every addition returns its input unchanged, so an operator
calls them unconditionally and cannot forget them.

``A`` of shape ``(d,)`` is the diagonal matrix :math:`\operatorname{diag}(A)`:
every term then costs ``O(d)`` per point instead of ``O(d^2)`` (the hard
constraint :math:`1 - \lVert x\rVert^2` in high dimension), and no ``d x d``
array is formed except the Hessian's own.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..backends.namespace import Array, Context


def _cast(a: Array | None, ctx: Context) -> Array | None:
    return a if a is None or a.dtype == ctx.dtype else ctx.xp.astype(a, ctx.dtype)


@dataclass(frozen=True)
class PotentialTerms:
    """:math:`\\tfrac12 x^\\top A x + c^\\top x` in the working dtype.

    Attributes
    ----------
    a : array (d, d), (d,) or None
        :math:`A` (need not be symmetric), or the diagonal of a diagonal :math:`A`.
    sym : array (d, d), (d,) or None
        :math:`A_s = \\tfrac12 (A + A^\\top)` (the diagonal itself when ``a`` is one).
    c : array (d,) or None
    ctx : Context
    """

    a: Array | None
    sym: Array | None
    c: Array | None
    ctx: Context

    @classmethod
    def build(cls, quadratic: Array | None, linear: Array | None, ctx: Context) -> PotentialTerms:
        """Cast ``A`` and ``c`` once and form :math:`A_s`."""
        a, c = _cast(quadratic, ctx), _cast(linear, ctx)
        sym = None if a is None else (a if a.ndim == 1 else 0.5 * (a + ctx.xp.matrix_transpose(a)))
        return cls(a, sym, c, ctx)

    @property
    def diagonal_a(self) -> bool:
        """True when ``a`` holds the diagonal of a diagonal :math:`A` (shape (d,))."""
        return self.a is not None and self.a.ndim == 1

    def times_a(self, v: Array) -> Array:
        """:math:`v A_s` for rows ``v`` (..., d)."""
        return v * self.sym if self.diagonal_a else v @ self.sym

    def gradient(self, x: Array) -> Array | None:
        """:math:`A_s x + c`, shape (n, d); None without terms."""
        grad = None if self.sym is None else self.times_a(x)
        if self.c is not None:
            grad = self.ctx.xp.zeros_like(x) + self.c if grad is None else grad + self.c
        return grad

    def add_value(self, y: Array, x: Array) -> Array:
        """``y`` (n, m) plus :math:`q(x)`."""
        xp = self.ctx.xp
        if self.a is not None:
            xa = x * self.a if self.diagonal_a else x @ self.a
            y = y + 0.5 * xp.sum(x * xa, axis=-1)[:, None]
        if self.c is not None:
            y = y + (x @ self.c)[:, None]
        return y

    def add_jacobian(self, jac: Array, x: Array) -> Array:
        """``jac`` (n, m, d) plus :math:`\\nabla q(x)`."""
        grad = self.gradient(x)
        return jac if grad is None else jac + grad[..., None, :]
