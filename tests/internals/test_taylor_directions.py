"""The direction sets behind partial and the biharmonic (operators/directions.py), against the exact operators."""

from __future__ import annotations

import math

import numpy as np
import pytest

import xderiv as xd
from xderiv.operators.biharmonic import biharmonic_by_directions
from xderiv.operators.directions import partial_directions

from ..helpers import rel_err
from ..test_taylor import (  # noqa: F401
    COMPOSITES,
    EXACT,
    OPERATOR_NETS,
    N,
    _biharmonic,
    _composite_function,
    _composite_parts,
    _operator_case,
    layers_net,
    point_function,
)


@pytest.mark.parametrize("name", OPERATOR_NETS)
def test_biharmonic_and_partials_agree_with_each_other_and_the_hessian(backend, name):
    """On every backend: the forward biharmonic against the d^2-direction Taylor formula and the sum of partials
    d_i^2 d_j^2; partials of order 1 and 2 against the Jacobian and Hessian; order 3 against differences of it."""
    net, _ = _operator_case(backend, name)
    d = net.in_features
    x = 0.7 * np.random.default_rng(5).standard_normal((N, d))
    xs = backend.asarray(x)
    bih = _biharmonic(backend, net, x)
    assert rel_err(backend.to_numpy(biharmonic_by_directions(net, xs)), bih) < EXACT
    total = sum(
        backend.to_numpy(xd.partial(net, xs, tuple(2 * (k == i) + 2 * (k == j) for k in range(d))))
        for i in range(d)
        for j in range(d)
    )
    assert rel_err(total, bih) < EXACT
    jac = backend.to_numpy(xd.jacobian(net, xs))
    hess = backend.to_numpy(xd.hessian(net, xs))
    for i in range(d):
        e = tuple(int(k == i) for k in range(d))
        assert rel_err(backend.to_numpy(xd.partial(net, xs, e)), jac[..., i]) < EXACT
        for j in range(d):
            a = tuple(int(k == i) + int(k == j) for k in range(d))
            assert rel_err(backend.to_numpy(xd.partial(net, xs, a)), hess[..., i, j]) < EXACT
    h = 1e-4
    a3 = (2, 1) + (0,) * (d - 2)
    e0 = np.eye(d)[0]
    plus, minus = (backend.to_numpy(xd.hessian(net, backend.asarray(x + s * h * e0))) for s in (1.0, -1.0))
    fd = (plus - minus) / (2 * h)
    assert rel_err(backend.to_numpy(xd.partial(net, xs, a3)), fd[..., 0, 1]) < 1e-6
    assert rel_err(backend.to_numpy(xd.partial(net, xs, (0,) * d)), backend.to_numpy(net(xs))) == 0.0


def test_partial_directions_are_few_and_exact():
    """sum_rho w_rho y_K(v_rho) picks d^alpha y out of any y_K(v) = sum_{|beta| = K} c_beta v^beta / beta!."""
    rows, _ = partial_directions((2, 2))
    assert len(rows) == 5  # (1, 0) and (2, 0) are one line, so are (1, 1) and (2, 2)
    rng = np.random.default_rng(0)
    for alpha in [(3,), (1, 1), (2, 1, 0), (2, 2), (1, 2, 1), (3, 0, 2), (2, 2, 2)]:
        k = sum(alpha)
        betas = [b for b in np.ndindex(*(k + 1,) * len(alpha)) if sum(b) == k]
        c = {b: rng.standard_normal() for b in betas}  # the partial derivatives d^beta y

        def y_k(r: tuple[int, ...], c: dict = c) -> float:
            return sum(cb * math.prod(ri**bi / math.factorial(bi) for ri, bi in zip(r, b)) for b, cb in c.items())

        rows, weights = partial_directions(alpha)
        assert len(rows) < math.prod(a + 1 for a in alpha)
        got = sum(w * y_k(r) for r, w in zip(rows, weights))
        assert abs(got - c[tuple(alpha)]) < 1e-10 * max(1.0, abs(c[tuple(alpha)])), alpha
