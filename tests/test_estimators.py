"""Randomized Laplacian estimators and the counter-based generator behind them, on every backend.

Statistical checks
    Each check compares a sample statistic with its exact value and passes when
    they differ by less than 5 standard errors, the standard error computed
    from the *stated* variance formula (or, for a sample variance, from the
    sample's fourth moment).  Under the central limit theorem a correct
    estimator fails one such check with probability about 5.7e-7
    (2 * Phi(-5)); every draw uses a fixed seed, so a run is deterministic and
    a failure is a real discrepancy or that rare draw, reproducible either way.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import xderiv as xd
from xderiv.backends.rng import Stream

from .helpers import quiet_compile, rel_err

Z = 5.0  # standard errors a statistic may stray: false alarm about 5.7e-7 per two-sided check
D = 5
ESTIMATORS = ["hutchinson", "gaussian", "sdgd"]


def _kw(backend):
    return {"xp": backend.module, "device": backend.device}


def _stream(backend, seed):
    return Stream.of(seed, backend.xp, backend.device)


def _inner(backend):
    return xd.mlp([D, 10, 1], "sin", seed=5, **_kw(backend))


def _nets(backend):
    kw = _kw(backend)
    ones = backend.asarray(np.ones(D))
    return {
        "mlp": lambda: xd.mlp([D, 12, 12, 2], activation="tanh", seed=3, **kw),  # two outputs
        "potential": lambda: xd.potential(D, 8, 1, rank=2, seed=4, **kw),  # dense A, linear term, scalar
        "hard-bc": lambda: xd.quadratic(-2.0 * ones, b=1.0) * _inner(backend),  # phi * N
    }


def _exact(backend, net, x):
    """Laplacian (m,) and Hessian (m, d, d) at the single point ``x`` (1, d)."""
    h = backend.to_numpy(xd.hessian(net, x)).reshape(-1, D, D)
    return np.trace(h, axis1=-2, axis2=-1), h


def _stated_variance(backend, name, estimator, x, k):
    """The documented variance at the point ``x`` (1, d): of the network, or phi^2 times N's for phi * N."""
    if name != "hard-bc":
        return _variance(estimator, _exact(backend, _nets(backend)[name](), x)[1], k)
    phi = 1.0 - float(np.sum(backend.to_numpy(x) ** 2))
    return phi**2 * _variance(estimator, _exact(backend, _inner(backend), x)[1], k)


def _variance(estimator, h, k):
    """The documented variance of one estimate with ``k`` samples, per output (h: (m, d, d))."""
    frob = np.sum(h * h, axis=(-2, -1))
    diag = np.diagonal(h, axis1=-2, axis2=-1)
    if estimator == "hutchinson":
        return 2.0 / k * (frob - np.sum(diag * diag, axis=-1))
    if estimator == "gaussian":
        return 2.0 / k * frob
    d = h.shape[-1]
    return d * d / k * (d - k) / (d - 1) * np.var(diag, axis=-1)


# --------------------------------------------------------------------------- the generator


def test_known_answers_on_every_backend(backend):
    """Seed 2024 gives these numbers everywhere: the integer streams bit for bit, normals to round-off."""
    xp = backend.xp
    s = _stream(backend, 2024)
    signs = backend.to_numpy(s.rademacher((40,), xp.float64))
    assert "".join("+" if v > 0 else "-" for v in signs) == "--++++--+---++++-++-+-+++-++++++-+------"
    want = [1.8720312646747908, 2.4587159598333295, 0.11338345046040871, 0.2596030864502111, -1.2692892982981139]
    assert rel_err(backend.to_numpy(s.normal((5,), xp.float64)), np.array(want)) < 1e-14
    z32 = backend.to_numpy(s.normal((5,), xp.float32))
    assert z32.dtype == np.float32 and rel_err(z32, np.array(want)) < 1e-6  # 24-bit uniforms: f64 rounded
    u = [0.00843899027217448, 0.9606695548427031, 0.3853207619022489]
    assert rel_err(backend.to_numpy(s.uniform((3,), xp.float64)), np.array(u)) < 1e-15
    assert backend.to_numpy(s.choose(2, 10, 4)).tolist() == [[0, 1, 7, 2], [1, 6, 2, 4]]
    # an integer array seed (e.g. traced by jax.jit) gives the key of the same int, negatives modulo 2^64
    for seed in (2024, -5):
        arr = _stream(backend, backend.xp.asarray(seed, dtype=xp.int64, device=backend.device))
        ref = _stream(backend, seed)
        assert [int(backend.to_numpy(k)) for k in (arr.key.k0, arr.key.k1)] == [ref.key.k0, ref.key.k1]
    assert _stream(backend, -5).key == _stream(backend, 2**64 - 5).key


def test_generator_statistics(backend):
    xp = backend.xp
    n = 1 << 18
    s = _stream(backend, 7)
    signs = backend.to_numpy(s.rademacher((n,), xp.float64))
    assert set(np.unique(signs)) == {-1.0, 1.0}
    se = 1.0 / math.sqrt(n)
    assert abs(signs.mean()) < Z * se  # sign balance
    for lag in (1, 8, 31, 32, 33):  # within and across the bytes and words signs are cut from
        assert abs(np.mean(signs[:-lag] * signs[lag:])) < Z / math.sqrt(n - lag)

    z = backend.to_numpy(s.normal((n,), xp.float64))
    assert abs(z.mean()) < Z * se
    assert abs(np.mean(z * z) - 1.0) < Z * math.sqrt(2.0 / n)  # Var(z^2) = 2
    assert abs(np.mean(z**4) - 3.0) < Z * math.sqrt(96.0 / n)  # Var(z^4) = 105 - 9
    assert abs(np.mean(z[0::2] * z[1::2])) < Z / math.sqrt(n / 2)  # the two normals of one Box-Muller pair
    assert abs(np.mean(z[:-2] * z[2:])) < Z / math.sqrt(n)
    other = backend.to_numpy(_stream(backend, 8).normal((n,), xp.float64))  # neighbouring seeds: unrelated
    assert abs(np.mean(z * other)) < Z * se

    u = backend.to_numpy(s.uniform((n,), xp.float64))
    assert 0.0 < u.min() and u.max() < 1.0
    assert abs(u.mean() - 0.5) < Z * math.sqrt(1.0 / 12.0 / n)

    rows, d, k = 30000, 6, 2
    idx = backend.to_numpy(s.choose(rows, d, k))
    assert idx.shape == (rows, k) and np.all(idx[:, 0] != idx[:, 1])
    for column in (idx[:, 0], idx[:, 1]):  # each position uniform over the d coordinates
        freq = np.bincount(column, minlength=d) / rows
        assert np.all(np.abs(freq - 1 / d) < Z * math.sqrt((1 / d) * (1 - 1 / d) / rows))


# --------------------------------------------------------------------------- the estimators


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("name", ["mlp", "potential", "hard-bc"])
def test_mean_converges_to_the_laplacian_within_the_stated_standard_error(backend, estimator, name):
    """4000 independent estimates at one point (per-point directions on copies of it)."""
    net = _nets(backend)[name]()
    x0 = np.random.default_rng(1).standard_normal((1, D)) * 0.25
    lap = _exact(backend, net, backend.asarray(x0))[0]
    n, k = 4000, 2
    x = backend.asarray(np.repeat(x0, n, axis=0))
    est = backend.to_numpy(xd.laplacian(net, x, estimator=estimator, samples=k, seed=11, per_point=True))
    est = est.reshape(n, -1)
    var = _stated_variance(backend, name, estimator, backend.asarray(x0), k)
    assert np.all(var > 1e-4 * lap**2)  # a case where the estimator is really random (sd above 1 %)
    mean = est.mean(axis=0)
    assert np.all(np.abs(mean - lap) < Z * np.sqrt(var / n)), (mean, lap, np.sqrt(var / n))
    # the sample variance against the formula; its standard error from the sample's fourth moment
    centred = est - mean
    s2, m4 = np.mean(centred**2, axis=0), np.mean(centred**4, axis=0)
    assert np.all(np.abs(s2 - var) < Z * np.sqrt((m4 - s2 * s2) / n)), (s2, var)


def test_a_composite_randomizes_only_its_networks(backend):
    """phi * N: phi times N's estimate, plus the exact cross term 2 grad phi . grad N and N's value times lap phi."""
    xp = backend.xp
    u = _nets(backend)["hard-bc"]()
    phi, n = u.parts
    x = backend.asarray(np.random.default_rng(9).standard_normal((6, D)) * 0.5)
    r_phi, r_n = xd.derivatives(phi, x, laplacian=True), xd.derivatives(n, x)
    cross = 2.0 * xp.sum(r_phi.jacobian[:, None, :] * r_n.jacobian, axis=-1)
    for estimator in ESTIMATORS:
        est_n = xd.laplacian(n, x, estimator=estimator, samples=2, seed=6)  # the same seed: the same directions
        want = r_phi.value[:, None] * est_n + cross + r_phi.laplacian[:, None] * r_n.value
        for mode in ("auto", "forward", "backward"):
            got = xd.laplacian(u, x, mode, estimator=estimator, samples=2, seed=6)
            assert rel_err(backend.to_numpy(got), backend.to_numpy(want)) < 1e-13
    # no randomness left where phi vanishes: on the unit sphere the estimate is the exact Laplacian
    on_sphere = x / xp.sqrt(xp.sum(x * x, axis=-1, keepdims=True))
    exact = backend.to_numpy(xd.laplacian(u, on_sphere))
    est = backend.to_numpy(xd.laplacian(u, on_sphere, estimator="gaussian", samples=1, seed=0))
    assert rel_err(est, exact) < 1e-12


def test_stde_is_sdgd(backend):
    """Sparse random 2-jets and sampled coordinates are one estimator and, here, one computation."""
    net = _nets(backend)["mlp"]()
    x = backend.asarray(np.random.default_rng(2).standard_normal((6, D)))
    for per_point in (False, True):
        a = xd.laplacian(net, x, estimator="sdgd", samples=3, seed=4, per_point=per_point)
        b = xd.laplacian(net, x, estimator="stde", samples=3, seed=4, per_point=per_point)
        assert np.array_equal(backend.to_numpy(a), backend.to_numpy(b))


def test_all_coordinates_give_the_exact_laplacian(backend):
    net = _nets(backend)["potential"]()
    x = backend.asarray(np.random.default_rng(3).standard_normal((4, D)))
    exact = backend.to_numpy(xd.laplacian(net, x))
    for per_point in (False, True):
        est = backend.to_numpy(xd.laplacian(net, x, estimator="sdgd", samples=D, seed=0, per_point=per_point))
        assert rel_err(est, exact) < 1e-13


def test_directions_follow_the_documented_layout(backend):
    """Per point: element (p k + j) d + i of the stream is coordinate i of direction j at point p."""
    xp = backend.xp
    net = _nets(backend)["mlp"]()
    n, k = 3, 4
    x = backend.asarray(np.random.default_rng(4).standard_normal((n, D)))
    s = _stream(backend, 9)
    signs = xp.matrix_transpose(s.rademacher((n, k, D), xp.float64))  # (n, d, k)
    want = backend.to_numpy(xd.trace_hessian(net, x, signs)) / k
    got = backend.to_numpy(xd.laplacian(net, x, estimator="hutchinson", samples=k, seed=9))
    assert rel_err(got, want) < 1e-14
    normals = xp.matrix_transpose(s.normal((k, D), xp.float64))  # shared: element j d + i
    want = backend.to_numpy(xd.trace_hessian(net, x, normals)) / k
    got = backend.to_numpy(xd.laplacian(net, x, estimator="gaussian", samples=k, seed=9, per_point=False))
    assert rel_err(got, want) < 1e-14
    coords = backend.to_numpy(s.choose(1, D, 2))[0]  # sdgd shares k distinct coordinates
    want = D / 2 * backend.to_numpy(xd.laplacian(net, x, coords=[int(i) for i in coords]))
    assert rel_err(backend.to_numpy(xd.laplacian(net, x, estimator="sdgd", samples=2, seed=9)), want) < 1e-14


def test_same_seed_same_estimate_whatever_the_batch_layout(backend):
    xp = backend.xp
    net = _nets(backend)["hard-bc"]()
    x = np.random.default_rng(5).standard_normal((6, D)) * 0.5
    for estimator in ESTIMATORS:
        kw = {"estimator": estimator, "samples": 3, "seed": 123}
        flat = backend.to_numpy(xd.laplacian(net, backend.asarray(x), **kw))
        again = backend.to_numpy(xd.laplacian(net, backend.asarray(x), **kw))
        assert np.array_equal(flat, again)
        batched = backend.to_numpy(xd.laplacian(net, backend.asarray(x.reshape(2, 3, D)), **kw))
        assert rel_err(batched.reshape(flat.shape), flat) < 1e-14
        if backend.name != "dask":  # dask: its own chunks, xderiv does not chunk
            chunked = backend.to_numpy(xd.laplacian(net, backend.asarray(x), chunk_size=1, **kw))
            assert rel_err(chunked, flat) < 1e-14
        seed = xp.asarray(123, dtype=xp.int64, device=backend.device)
        as_array = backend.to_numpy(xd.laplacian(net, backend.asarray(x), **{**kw, "seed": seed}))
        assert np.array_equal(as_array, flat)
        other = backend.to_numpy(xd.laplacian(net, backend.asarray(x), **{**kw, "seed": 124}))
        assert not np.allclose(other, flat)
    # a generator is drawn from: a new estimate per call, the same sequence from the same generator seed
    one = [
        xd.laplacian(net, backend.asarray(x), estimator="hutchinson", samples=2, seed=g)
        for g in [np.random.default_rng(0)] * 2
    ]
    two = [
        xd.laplacian(net, backend.asarray(x), estimator="hutchinson", samples=2, seed=g)
        for g in [np.random.default_rng(0)] * 2
    ]
    assert not np.allclose(backend.to_numpy(one[0]), backend.to_numpy(one[1]))
    assert all(np.array_equal(backend.to_numpy(a), backend.to_numpy(b)) for a, b in zip(one, two))


def test_shared_directions_are_those_of_a_single_point(backend):
    """Shared by the batch: every point's estimate is the estimate it gets alone with that seed."""
    net = _nets(backend)["potential"]()
    x = backend.asarray(np.random.default_rng(6).standard_normal((4, D)))
    for estimator in ESTIMATORS:
        shared = backend.to_numpy(xd.laplacian(net, x, estimator=estimator, samples=2, seed=5, per_point=False))
        alone = [
            backend.to_numpy(xd.laplacian(net, x[p : p + 1, :], estimator=estimator, samples=2, seed=5))
            for p in range(4)
        ]
        assert rel_err(shared, np.concatenate(alone)) < 1e-14
        if estimator != "sdgd":  # per point (the default): the points' directions differ
            per_point = backend.to_numpy(xd.laplacian(net, x, estimator=estimator, samples=2, seed=5))
            assert rel_err(per_point[:1], shared[:1]) < 1e-14 and not np.allclose(per_point[1:], shared[1:])


def test_argument_errors(backend):
    net = _nets(backend)["mlp"]()
    x = backend.asarray(np.zeros((2, D)))
    with pytest.raises(ValueError, match=r"estimator must be None \(exact\) or one of \['gaussian', 'hutchinson'"):
        xd.laplacian(net, x, estimator="rademacher", samples=2, seed=0)
    with pytest.raises(TypeError, match="needs samples=k"):
        xd.laplacian(net, x, estimator="hutchinson", seed=0)
    for bad in (2.5, True, "4"):
        with pytest.raises(TypeError, match="samples must be a positive integer"):
            xd.laplacian(net, x, estimator="hutchinson", samples=bad, seed=0)
    with pytest.raises(ValueError, match="samples must be a positive integer, got 0"):
        xd.laplacian(net, x, estimator="gaussian", samples=0, seed=0)
    with pytest.raises(TypeError, match="needs seed="):
        xd.laplacian(net, x, estimator="hutchinson", samples=2)
    with pytest.raises(TypeError, match="seed must be an int, a 0-d integer array or a random generator"):
        xd.laplacian(net, x, estimator="hutchinson", samples=2, seed="abc")
    with pytest.raises(TypeError, match="seed must be an int"):
        xd.laplacian(net, x, estimator="hutchinson", samples=2, seed=False)
    with pytest.raises(TypeError, match="0-d integer array, got shape"):
        xd.laplacian(net, x, estimator="hutchinson", samples=2, seed=backend.asarray([1.0]))
    with pytest.raises(ValueError, match=r"samples k distinct coordinates out of d=5, got samples=6; use samples <= 5"):
        xd.laplacian(net, x, estimator="sdgd", samples=6, seed=0)
    with pytest.raises(TypeError, match="belong to a randomized estimate: pass estimator="):
        xd.laplacian(net, x, seed=3)
    with pytest.raises(ValueError, match="coords= and estimator= do not combine"):
        xd.laplacian(net, x, coords=[0, 1], estimator="sdgd", samples=1, seed=0)
    with pytest.raises(TypeError, match="per_point must be True, False or None"):
        xd.laplacian(net, x, estimator="sdgd", samples=1, seed=0, per_point="yes")


def test_weight_gradients_flow(backend):
    """A loss of the estimate trains the weights: its gradient is that of the same trace along the same directions."""
    if backend.name not in ("torch", "jax"):
        pytest.skip("weight gradients: the torch and jax sessions")
    xp = backend.xp
    net = _nets(backend)["hard-bc"]()
    x = backend.asarray(np.random.default_rng(7).standard_normal((5, D)) * 0.5)
    signs = xp.matrix_transpose(_stream(backend, 3).rademacher((5, 4, D), xp.float64))

    def loss_est(ws):
        return xp.sum(xd.laplacian(net.with_arrays(ws), x, estimator="hutchinson", samples=4, seed=3) ** 2)

    def loss_ref(ws):  # phi * N: phi tr(S^T H_N S) / k + 2 grad phi . grad N + N lap phi, only N's trace estimated
        phi, n = net.with_arrays(ws).parts
        r_phi, r_n = xd.derivatives(phi, x, laplacian=True), xd.derivatives(n, x)
        cross = 2.0 * xp.sum(r_phi.jacobian[:, None, :] * r_n.jacobian, axis=-1)
        est = r_phi.value[:, None] * xd.trace_hessian(n, x, signs) / 4 + cross + r_phi.laplacian[:, None] * r_n.value
        return xp.sum(est**2)

    if backend.name == "torch":
        import torch

        arrays = [a.detach().clone().requires_grad_() for a in net.arrays()]
        got = torch.autograd.grad(loss_est(arrays), arrays)
        want = torch.autograd.grad(loss_ref(arrays), arrays)
    else:
        import jax

        arrays = net.arrays()
        got, want = jax.grad(loss_est)(arrays), jax.grad(loss_ref)(arrays)
        jitted = jax.jit(
            lambda ws, seed: xp.sum(xd.laplacian(net.with_arrays(ws), x, estimator="gaussian", samples=3, seed=seed))
        )
        eager = xd.laplacian(net, x, estimator="gaussian", samples=3, seed=21)
        for step in (21, 22):  # a traced seed: one compilation, new directions per step
            out = jitted(arrays, xp.asarray(step, dtype=xp.int64))
            if step == 21:
                assert abs(float(out) - float(xp.sum(eager))) < 1e-12 * abs(float(xp.sum(eager)))
    for a, b in zip(got, want):
        assert rel_err(backend.to_numpy(a), backend.to_numpy(b)) < 1e-12
    # the trained network N (the last four arrays; phi's zero trunk has zero gradients) gets a gradient
    assert all(np.any(backend.to_numpy(a) != 0) for a in got[-4:])


def test_torch_compile_traces_the_estimators(backend):
    if backend.name != "torch":
        pytest.skip("torch.compile: the torch session")
    import os

    if os.environ.get("XDERIV_TORCH_DEFAULT_DEVICE"):
        pytest.skip("compiled code is device-checked by the main torch pass")

    net, u = _nets(backend)["potential"](), _nets(backend)["hard-bc"]()
    x = backend.asarray(np.random.default_rng(8).standard_normal((6, D)))

    def both(x):
        g = xd.laplacian(net, x, estimator="gaussian", samples=3, seed=1)
        return (
            g,
            xd.laplacian(u, x, estimator="sdgd", samples=2, seed=1),
            xd.laplacian(u, x, estimator="hutchinson", samples=2, seed=1),
        )

    for a, b in zip(quiet_compile(both, x), both(x)):
        assert rel_err(backend.to_numpy(a), backend.to_numpy(b)) < 1e-12


# --------------------------------------------------------------------------- the biharmonic


def _fourth_derivatives(backend, net, x):
    """The tensor T = nabla^4 y (d, d, d, d) at the single point ``x`` (1, d), from xd.partial."""
    d = net.in_features
    t = np.zeros((d,) * 4)
    done = {}
    for idx in itertools.product(range(d), repeat=4):
        alpha = tuple(idx.count(i) for i in range(d))
        if alpha not in done:
            done[alpha] = float(backend.to_numpy(xd.partial(net, x, alpha)).reshape(-1)[0])
        t[idx] = done[alpha]
    return t


def test_biharmonic_estimate_converges_within_the_stated_standard_error(backend):
    """E[d^4/dt^4 y(x + t v)] = 3 biharmonic for Gaussian v; variance (8 |grad^2 lap|^2 + 8/3 |T|^2) / k."""
    net = xd.mlp([3, 8, 8, 1], activation="tanh", seed=1, **_kw(backend))
    x0 = np.random.default_rng(0).standard_normal((1, 3)) * 0.5
    exact = float(backend.to_numpy(xd.biharmonic(net, backend.asarray(x0))).reshape(-1)[0])
    t = _fourth_derivatives(backend, net, backend.asarray(x0))
    assert abs(np.einsum("iijj->", t) - exact) < 1e-10 * abs(exact)
    m = np.einsum("ijkk->ij", t)
    n, k = 8000, 2
    var = (8.0 * np.sum(m * m) + 8.0 / 3.0 * np.sum(t * t)) / k
    x = backend.asarray(np.repeat(x0, n, axis=0))
    est = backend.to_numpy(xd.biharmonic(net, x, estimator="gaussian", samples=k, seed=4)).reshape(n)
    assert abs(est.mean() - exact) < Z * math.sqrt(var / n), (est.mean(), exact, math.sqrt(var / n))
    centred = est - est.mean()
    s2, m4 = np.mean(centred**2), np.mean(centred**4)
    assert abs(s2 - var) < Z * math.sqrt((m4 - s2 * s2) / n), (s2, var)


def test_biharmonic_estimate_is_the_weighted_taylor_sweep(backend):
    """Along the directions of laplacian(estimator="gaussian") for the seed, per point or shared."""
    xp = backend.xp
    net = _nets(backend)["hard-bc"]()  # a composite: estimated whole, Leibniz's rule on the coefficients
    n, k = 4, 3
    x = backend.asarray(np.random.default_rng(10).standard_normal((n, D)) * 0.5)
    s = _stream(backend, 8)
    v = xp.matrix_transpose(s.normal((n, k, D), xp.float64))  # (n, d, k)
    want = backend.to_numpy(xd.taylor(net, x, v, order=4, weights=[1.0 / (3 * k)] * k)[-1])
    got = backend.to_numpy(xd.biharmonic(net, x, estimator="gaussian", samples=k, seed=8))
    assert rel_err(got, want) < 1e-13
    v = xp.matrix_transpose(s.normal((k, D), xp.float64))  # shared: (d, k)
    want = backend.to_numpy(xd.taylor(net, x, v, order=4, weights=[1.0 / (3 * k)] * k)[-1])
    got = backend.to_numpy(xd.biharmonic(net, x, estimator="gaussian", samples=k, seed=8, per_point=False))
    assert rel_err(got, want) < 1e-13
    square = backend.asarray(np.random.default_rng(11).standard_normal((D, D)) * 0.5)  # x of shape (d, d), k = d
    shared = xd.biharmonic(net, square, estimator="gaussian", samples=D, seed=1, per_point=False)
    alone = xd.biharmonic(net, square[:1, :], estimator="gaussian", samples=D, seed=1)
    assert rel_err(backend.to_numpy(shared)[:1], backend.to_numpy(alone)) < 1e-13
    with pytest.raises(ValueError, match="biharmonic's estimator must be None \\(exact\\) or 'gaussian'"):
        xd.biharmonic(net, x, estimator="hutchinson", samples=2, seed=0)
    with pytest.raises(TypeError, match="needs samples=k"):
        xd.biharmonic(net, x, estimator="gaussian", seed=0)
    with pytest.raises(TypeError, match="needs seed="):
        xd.biharmonic(net, x, estimator="gaussian", samples=2)
    with pytest.raises(TypeError, match="belong to a randomized estimate"):
        xd.biharmonic(net, x, samples=2)


def test_biharmonic_estimate_weight_gradients(backend):
    if backend.name not in ("torch", "jax"):
        pytest.skip("weight gradients: the torch and jax sessions")
    xp = backend.xp
    net = xd.mlp([D, 6, 1], activation="tanh", seed=2, **_kw(backend))
    x = backend.asarray(np.random.default_rng(12).standard_normal((3, D)) * 0.5)
    v = xp.matrix_transpose(_stream(backend, 5).normal((3, 2, D), xp.float64))

    def loss_est(ws):
        return xp.sum(xd.biharmonic(net.with_arrays(ws), x, estimator="gaussian", samples=2, seed=5) ** 2)

    def loss_ref(ws):
        return xp.sum(xd.taylor(net.with_arrays(ws), x, v, order=4, weights=[1 / 6, 1 / 6])[-1] ** 2)

    if backend.name == "torch":
        import torch

        arrays = [a.detach().clone().requires_grad_() for a in net.arrays()[:-1]]  # the output bias drops out
        got = torch.autograd.grad(loss_est([*arrays, net.arrays()[-1]]), arrays)
        want = torch.autograd.grad(loss_ref([*arrays, net.arrays()[-1]]), arrays)
    else:
        import jax

        got, want = jax.grad(loss_est)(net.arrays())[:-1], jax.grad(loss_ref)(net.arrays())[:-1]
    for a, b in zip(got, want):
        assert rel_err(backend.to_numpy(a), backend.to_numpy(b)) < 1e-12
        assert np.any(backend.to_numpy(a) != 0)
