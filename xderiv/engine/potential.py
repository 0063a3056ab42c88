r"""The quadratic and linear terms of a :class:`~xderiv.Potential`, for every operator.

A Potential is ``layers(x) + q(x)`` with

.. math:: q(x) = \tfrac12 x^\top A x + c^\top x, \qquad \nabla q = A_s x + c, \qquad
          \nabla^2 q = A_s = \tfrac12 (A + A^\top),

either term optional.  :class:`PotentialTerms` is built once per call in the
working dtype (:math:`A_s` formed once) and adds ``q``'s contribution to each
result; for a network without these terms every method returns its input
unchanged, so an operator calls them unconditionally and cannot forget them.

``A`` of shape ``(d,)`` is the diagonal matrix :math:`\operatorname{diag}(A)`:
every term then costs ``O(d)`` per point instead of ``O(d^2)`` (the hard
constraint :math:`1 - \lVert x\rVert^2` in high dimension), and no ``d x d``
array is formed except the Hessian's own.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..backends.namespace import Array, Context, diagonal, trace


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

    def _times_a(self, v: Array) -> Array:
        """:math:`v A_s` for rows ``v`` (..., d)."""
        return v * self.sym if self.diagonal_a else v @ self.sym

    def gradient(self, x: Array) -> Array | None:
        """:math:`A_s x + c`, shape (n, d); None without terms."""
        grad = None if self.sym is None else self._times_a(x)
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

    def add_directional(self, first: Array, x: Array, seed: Array) -> Array:
        """``first`` (n, m) plus :math:`\\nabla q(x) \\cdot v` for the single direction ``seed`` (1, d) or (n, 1, d)."""
        grad = self.gradient(x)
        return first if grad is None else first + self.ctx.xp.sum(grad * seed[..., 0, :], axis=-1)[:, None]

    def add_hessian(self, hess: Array) -> Array:
        """``hess`` (n, m, d, d) plus :math:`A_s`."""
        if self.sym is None:
            return hess
        if self.diagonal_a:
            ctx = self.ctx
            return hess + ctx.xp.eye(self.sym.shape[0], dtype=ctx.dtype, device=ctx.device) * self.sym
        return hess + self.sym

    def add_trace(self, out: Array, seed: Array | None) -> Array:
        """``out`` (n, m) plus :math:`\\mathrm{tr}(S^\\top A_s S)` (:math:`\\mathrm{tr} A` when ``seed`` is None).

        ``seed`` is :math:`S^\\top`, shape (k, d) shared or (n, k, d) per point.
        """
        if self.a is None:
            return out
        xp = self.ctx.xp
        if seed is None:
            return out + (xp.sum(self.a) if self.diagonal_a else trace(self.a, xp, self.ctx))
        extra = xp.sum(xp.sum(self._times_a(seed) * seed, axis=-1), axis=-1)  # () or (n,)
        return out + (extra if extra.ndim == 0 else extra[:, None])

    def add_diagonal(self, diag: Array) -> Array:
        """``diag`` (n, m, d) plus the diagonal of :math:`A`."""
        if self.a is None:
            return diag
        return diag + (self.a if self.diagonal_a else diagonal(self.a, self.ctx.xp, self.ctx.device))

    def add_hvp(self, out: Array, seed: Array) -> Array:
        """``out`` (n, m, d) plus :math:`A_s v` for ``seed`` = :math:`v^\\top`, shape (1, d) or (n, 1, d)."""
        return out if self.sym is None else out + self._times_a(seed)

    def add_taylor(self, coeffs: list[Array], x: Array, seed: Array, weights: Array | None = None) -> list[Array]:
        r"""Normalised Taylor coefficients ``[y_0, ..., y_K]`` (each (n, m, r)) plus those of :math:`q(x + tv)`.

        :math:`q(x + tv) = q(x) + t\,\nabla q(x) \cdot v + t^2\, \tfrac12 v^\top A v` exactly, so only
        :math:`y_1` and :math:`y_2` change (the value, :math:`y_0`, takes :meth:`add_value` before the
        direction axis is added).  ``seed`` holds the directions as rows, (r, d) or (n, r, d).  With
        ``weights`` the top coefficient is the collapsed :math:`\sum_\rho \omega_\rho y_{K,\rho}`
        (direction axis of length 1).
        """
        xp, order = self.ctx.xp, len(coeffs) - 1
        out = list(coeffs)
        extra: list[Array | None] = [None, None, None]
        grad = self.gradient(x)
        if grad is not None and order >= 1:
            first = grad @ xp.matrix_transpose(seed) if seed.ndim == 2 else xp.sum(grad[:, None, :] * seed, axis=-1)
            extra[1] = first[:, None, :]  # (n, 1, r)
        if self.a is not None and order >= 2:
            second = 0.5 * xp.sum(self._times_a(seed) * seed, axis=-1)  # v^T A v = v^T A_s v: (r,) or (n, r)
            extra[2] = second if second.ndim == 1 else second[:, None, :]
        for k in (1, 2):
            e = extra[k]
            if e is None:
                continue
            if k == order and weights is not None:
                e = xp.sum(weights * e, axis=-1, keepdims=True)
            out[k] = out[k] + e
        return out
