r"""Matrix functions of jets: inverse, log-determinant, determinant, solve.

With :math:`A(t) = \sum_k A_k t^k` (normalised terms, the last two axes a square matrix) and
:math:`B = A_0^{-1}`:

* the inverse :math:`A(t)^{-1} = \sum_k B_k t^k` follows from :math:`A(t) A(t)^{-1} = I`,

  .. math:: B_0 = A_0^{-1}, \qquad B_k = -B_0 \sum_{j=1}^{k} A_j B_{k-j};

* the log-determinant from :math:`\log\lvert\det A(t)\rvert = \log\lvert\det A_0\rvert
  + \mathrm{tr} \log(I + M(t))`, :math:`M(t) = B_0 (A(t) - A_0)`,

  .. math:: \log\lvert\det A(t)\rvert = \log\lvert\det A_0\rvert
            + \sum_{m=1}^{K} \frac{(-1)^{m+1}}{m}\, \mathrm{tr}\, M(t)^m + O(t^{K+1}),

  whose first term is :math:`d \log\lvert\det A\rvert = \mathrm{tr}(A^{-1} dA)` and second
  :math:`-\mathrm{tr}(A^{-1} dA\, A^{-1} dA)/2 + \mathrm{tr}(A^{-1} d^2A)/2`;
* :math:`\det A = \mathrm{sign} \cdot \exp \log\lvert\det A\rvert` (the sign is constant near
  a point where :math:`\det A \ne 0`), and :math:`A^{-1} b` as the product of the inverse with
  :math:`b`.

All products of terms are the kind's pairings of matrix products, so the same lines serve
Taylor jets, collapsed Laplacian jets and Hessian jets.  Cost: one inverse of the value and
:math:`O(K^2)` (:math:`O(K^3)` for the log-determinant) matrix products per term.
"""

from __future__ import annotations

from collections import namedtuple
from typing import Any

from ..backends.namespace import Array, device_of
from ..engine.series import add
from .array import JetArray
from .rules import elementwise, is_jet, matmul, multiply

SlogdetResult = namedtuple("SlogdetResult", ["sign", "logabsdet"])


def _matmul(x: Array, y: Array) -> Array:
    return x @ y


def _check_square(a: JetArray, name: str) -> None:
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"{name} needs square matrices in the last two axes, got shape {a.shape}")


def inv(a: JetArray) -> JetArray:
    """:math:`A^{-1}` of a jet of matrices (see the module docstring)."""
    _check_square(a, "inv")
    xp, kind = a.xp, a.kind
    b0 = xp.linalg.inv(a.terms[0])
    terms: list[Array | None] = [b0]
    for k in range(1, kind.order + 1):
        acc: Array | None = None
        for j in range(1, k + 1):
            x, y = a.terms[j], terms[k - j]
            if x is None or y is None:
                continue
            acc = add(acc, x @ y if j == k else kind.pair(x, y, k, _matmul))
        terms.append(None if acc is None else -(b0 @ acc))
    return JetArray(tuple(terms), kind)


def _trace(t: Array, xp: Any) -> Array:
    n = t.shape[-1]
    eye = xp.eye(n, dtype=t.dtype, device=device_of(t))
    return xp.sum(xp.sum(t * eye, axis=-1), axis=-1)


def logabsdet(a: JetArray) -> tuple[Array, JetArray]:
    r"""``(sign, log|det A|)`` of a jet of matrices; the sign is a constant of the jet."""
    _check_square(a, "slogdet")
    xp, kind = a.xp, a.kind
    order = kind.order
    a0 = a.terms[0]
    sign, value = xp.linalg.slogdet(a0)
    b0 = xp.linalg.inv(a0)
    m = [None] + [None if t is None else b0 @ t for t in a.terms[1:]]
    terms: list[Array | None] = [value] + [None] * order
    power: list[Array | None] = list(m)  # M(t)^1
    for p in range(1, order + 1):
        if p > 1:  # M^p = M * M^(p-1): every factor of order >= 1, so every product is a pairing
            nxt: list[Array | None] = [None] * (order + 1)
            for k in range(p, order + 1):
                acc: Array | None = None
                for i in range(1, k - p + 2):
                    x, y = m[i], power[k - i]
                    if x is not None and y is not None:
                        acc = add(acc, kind.pair(x, y, k, _matmul))
                nxt[k] = acc
            power = nxt
        c = (-1.0) ** (p + 1) / p
        for k in range(p, order + 1):
            if power[k] is not None:
                terms[k] = add(terms[k], c * _trace(power[k], xp))
    return xp.reshape(sign, a.shape[:-2]), JetArray(tuple(terms), kind)


def slogdet(a: JetArray) -> SlogdetResult:
    """``(sign, logabsdet)`` as the Array API's ``linalg.slogdet`` returns them."""
    sign, log = logabsdet(a)
    return SlogdetResult(sign, log)


def det(a: JetArray) -> JetArray:
    r""":math:`\det A = \mathrm{sign} \cdot \exp \log\lvert\det A\rvert`."""
    sign, log = logabsdet(a)
    return multiply(elementwise("exp", log), sign)


def solve(a: Any, b: Any) -> Any:
    r""":math:`A^{-1} b` (``b`` a matrix ``(..., M, K)``, or a vector ``(M,)``)."""
    if not is_jet(a):
        xp = b.xp
        ainv = xp.linalg.inv(a)
    else:
        ainv = inv(a)
    return matmul(ainv, b)
