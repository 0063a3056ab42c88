r"""Truncated power series with array coefficients: products and composition (Faà di Bruno).

A function of one variable :math:`t` near 0 is held by its *normalised* Taylor
coefficients :math:`f(t) = \sum_k f_k t^k`, :math:`f_k = f^{(k)}(0)/k!`, as a
sequence ``[f_0, f_1, ..., f_K]`` of arrays that broadcast against each other.
``None`` stands for a coefficient that is exactly zero: the operations below
skip it, so the input of a Taylor sweep (:math:`x + t v`, where every
coefficient past the first is zero) costs nothing for the terms it does not
have.

Two operations, both exact on the first ``K + 1`` coefficients:

* :func:`cauchy`, the product :math:`(fg)_k = \sum_{j=0}^k f_j\, g_{k-j}`
  (Leibniz's rule on normalised coefficients);
* :func:`compose`, :math:`a(t) = \sigma(z(t))` from :math:`c_j = \sigma^{(j)}(z_0)/j!`
  and :math:`z_1, \dots, z_K` by Faà di Bruno's formula in its partial-Bell form

  .. math:: a_k = \sum_{j=1}^{k} c_j\, B_{j,k}, \qquad
            B_{1,k} = z_k, \quad B_{j,k} = \sum_{i=1}^{k-j+1} z_i\, B_{j-1,k-i},

  where :math:`B_{j,k} = [t^k]\,(z(t) - z_0)^j`.  The table costs
  :math:`\sim K^3/6` products and the combination :math:`K(K+1)/2`, all elementwise.

Everything is plain arithmetic on the arrays given (any namespace, no
branches on values), so it traces under ``torch.compile`` and ``jax.jit``.

Both take an optional *pairing* ``pair(a, b, k)``: the product of two coefficients of
orders ``i, j >= 1`` with ``i + j = k``.  By default it is ``a * b`` (one direction per
row, every coefficient with the same direction axis).  The jets of :mod:`xderiv.jets`
pass their own: the top coefficient collapsed to a weighted sum over the directions, or
the symmetrised outer product of first-order rows that makes the second coefficient a
Hessian.  Products with a coefficient of order 0 are always plain ``*``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..backends.namespace import Array

Coefficients = Sequence[Array | None]
Pair = Callable[[Array, Array, int], Array]


def mul(a: Array | None, b: Array | None) -> Array | None:
    """``a * b``, None (zero) when either is."""
    return None if a is None or b is None else a * b


def add(a: Array | None, b: Array | None) -> Array | None:
    """``a + b`` with None as zero."""
    if a is None:
        return b
    return a if b is None else a + b


def paired(a: Array | None, b: Array | None, k: int, pair: Pair | None) -> Array | None:
    """``pair(a, b, k)`` (``a * b`` when ``pair`` is None), None when either is."""
    if a is None or b is None:
        return None
    return a * b if pair is None else pair(a, b, k)


def cauchy(
    f: Coefficients,
    g: Coefficients,
    k: int,
    pair: Pair | None = None,
    op: Callable[[Array, Array], Array] | None = None,
) -> Array | None:
    r"""Coefficient ``k`` of the product: :math:`\sum_{j=0}^{k} f_j\, g_{k-j}`.

    ``op`` is the product (``*`` by default; ``@`` for a matrix product, any bilinear map
    works), ``pair`` the product of the inner terms (:math:`0 < j < k`; see the module docstring).
    """
    out: Array | None = None
    for j in range(k + 1):
        a, b = f[j], g[k - j]
        if a is None or b is None:
            continue
        if j in (0, k):
            term = a * b if op is None else op(a, b)
        else:
            term = paired(a, b, k, pair)
        out = add(out, term)
    return out


def bell(z: Coefficients, order: int, pair: Pair | None = None) -> list[list[Array | None]]:
    r"""The table :math:`B_{j,k} = [t^k]\,(\sum_{i \ge 1} z_i t^i)^j` for :math:`1 \le j \le k \le` ``order``.

    ``z[i]`` is :math:`z_i` (``z[0]`` is not read).  Returns ``B`` with
    ``B[j][k]`` (other entries None).  :math:`B_{2,k}` is formed from its
    symmetric half (:math:`2 \sum_{i < k/2} z_i z_{k-i} + z_{k/2}^2`).  Every product is
    ``pair``'s (see the module docstring).
    """
    table: list[list[Array | None]] = [[None] * (order + 1) for _ in range(order + 1)]
    for k in range(1, order + 1):
        table[1][k] = z[k]
    for k in range(2, order + 1):
        half: Array | None = None
        for i in range(1, (k + 1) // 2):
            half = add(half, paired(z[i], z[k - i], k, pair))
        sq = paired(z[k // 2], z[k // 2], k, pair) if k % 2 == 0 else None
        table[2][k] = add(None if half is None else 2.0 * half, sq)
    for j in range(3, order + 1):
        for k in range(j, order + 1):
            acc: Array | None = None
            for i in range(1, k - j + 2):
                acc = add(acc, paired(z[i], table[j - 1][k - i], k, pair))
            table[j][k] = acc
    return table


def compose(
    c: Coefficients,
    z: Coefficients,
    order: int,
    start: Coefficients | None = None,
    fma: Callable[[Array, Array, Array], Array] | None = None,
    pair: Pair | None = None,
) -> list[Array | None]:
    r"""Coefficients :math:`a_1, \dots, a_K` of :math:`\sigma(z(t))` by Faà di Bruno's formula.

    Parameters
    ----------
    c : sequence
        ``c[j]`` is :math:`\sigma^{(j)}(z_0)/j!` for ``1 <= j <= order`` (``c[0]`` not read).
    z : sequence
        ``z[k]`` is :math:`z_k` for ``1 <= k <= order`` (``z[0]`` not read); None is zero.
    order : int
    start : sequence, optional
        ``start[k]`` is added to :math:`a_k` (a residual step's :math:`u_k`): accumulated
        into, so the sum costs no extra pass.
    fma : callable ``(y, a, b) -> y + a * b``, optional
        A fused multiply-add (e.g. the namespace's ``addcmul``); the plain expression when None.
    pair : callable ``(a, b, k) -> array``, optional
        The product of two coefficients of order >= 1 in the Bell table (see the module docstring).

    Returns
    -------
    list
        ``[None, a_1, ..., a_K]`` (index 0 left for the caller's :math:`\sigma(z_0)`).
    """
    table = bell(z, order, pair)
    out: list[Array | None] = [None] * (order + 1)
    for k in range(1, order + 1):
        acc: Array | None = None if start is None else start[k]
        for j in range(1, k + 1):
            a, b = c[j], table[j][k]
            if a is None or b is None:
                continue
            acc = a * b if acc is None else (acc + a * b if fma is None else fma(acc, a, b))
        out[k] = acc
    return out
