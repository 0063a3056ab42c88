"""xd.check: every operator passes against its reference, and a result perturbed by 1e-6 is caught.

The reference is nested autodiff in the torch and JAX sessions and Richardson-extrapolated
central differences in the others; the report says which, and its tolerance.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np
import pytest

import xderiv as xd

from .networks_zoo import residual_first

AUTODIFF = ("torch", "jax")


def _perturbed(op: Any, factor: float) -> Any:
    """``op`` with every array of its result multiplied by ``1 + factor`` (checked as ``op``)."""

    @functools.wraps(op)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        out = op(*args, **kwargs)
        if isinstance(out, tuple):
            return tuple(o * (1.0 + factor) for o in out)
        if isinstance(out, xd.Derivatives):
            scaled = {f.name: getattr(out, f.name) for f in dataclasses.fields(out)}
            return xd.Derivatives(**{k: None if v is None else v * (1.0 + factor) for k, v in scaled.items()})
        return out * (1.0 + factor)

    return wrapper


def _x(backend: Any, shape: tuple[int, ...], seed: int = 7) -> Any:
    return backend.asarray(0.8 * np.random.default_rng(seed).standard_normal(shape))


def _networks(backend: Any) -> dict[str, Any]:
    kw = {"xp": backend.module, "device": backend.device}
    return {
        "chain": residual_first(backend, "float64"),  # d = 3, m = 2: Residual, Dense, Residual, Dense
        "scalar": xd.potential(3, 5, 1, rank=2, seed=5, **kw),  # a Potential: no output axis
        "square": xd.mlp([3, 5, 3], activation="tanh", seed=3, **kw),  # m = d, for the divergence
    }


_INDEFINITE = np.array([[1.0, 0.5, 0.0], [0.5, -1.0, 0.2], [0.0, 0.2, 2.0]])

# (id, operator, network, args builder, kwargs, derivative order)
CASES = [
    ("value", xd.value, "chain", lambda b: (), {}, 0),
    ("jacobian", xd.jacobian, "chain", lambda b: (), {"mode": "backward"}, 1),
    ("gradient", xd.gradient, "scalar", lambda b: (), {}, 1),
    ("hessian", xd.hessian, "chain", lambda b: (), {}, 2),
    ("laplacian", xd.laplacian, "chain", lambda b: (), {}, 2),
    ("laplacian-coords", xd.laplacian, "chain", lambda b: (), {"coords": [0, -1]}, 2),
    (
        "laplacian-hutchinson",
        xd.laplacian,
        "scalar",
        lambda b: (),
        {"estimator": "hutchinson", "samples": 3, "seed": 5},
        2,
    ),
    ("laplacian-sdgd", xd.laplacian, "scalar", lambda b: (), {"estimator": "sdgd", "samples": 2, "seed": 1}, 2),
    ("derivatives", xd.derivatives, "chain", lambda b: (), {"hessian": True, "laplacian": True}, 2),
    ("trace_hessian", xd.trace_hessian, "chain", lambda b: (_x(b, (3, 2), 1),), {}, 2),
    ("hessian_diagonal", xd.hessian_diagonal, "scalar", lambda b: (), {"mode": "forward"}, 2),
    ("hvp", xd.hvp, "chain", lambda b: (_x(b, (2, 3, 3), 2),), {}, 2),  # one v per point
    ("directional", xd.directional, "scalar", lambda b: (_x(b, (3,), 3),), {}, 2),
    ("divergence", xd.divergence, "square", lambda b: (), {}, 1),
    ("taylor", xd.taylor, "chain", lambda b: (_x(b, (3, 2), 4),), {"order": 4}, 4),  # two shared directions
    ("partial", xd.partial, "chain", lambda b: ((2, 1, 0),), {}, 3),
    ("partial-4", xd.partial, "scalar", lambda b: ((2, 1, 1),), {}, 4),
    ("biharmonic", xd.biharmonic, "chain", lambda b: (), {}, 4),
    ("second_order", xd.second_order, "chain", lambda b: (b.asarray(_INDEFINITE), _x(b, (3,), 5), 0.5), {}, 2),
]


@pytest.fixture(scope="module")
def nets(backend: Any) -> dict[str, Any]:
    return _networks(backend)


BY_ID = {c[0]: c for c in CASES}


@pytest.mark.parametrize("case", list(BY_ID))
def test_every_operator_passes_and_catches_a_perturbation(backend, nets, case):
    _, op, net_name, build, kwargs, order = BY_ID[case]
    net = nets[net_name]
    x = _x(backend, (2, 3, 3))  # a (2, 3) batch: the first 3 of its 6 points are checked
    args = build(backend)
    report = xd.check(op, net, x, *args, points=3, **kwargs)
    assert report.passed and report.points == 3 and report.operator == op.__name__
    autodiff = backend.name in AUTODIFF
    assert ("differences" in report.reference) != autodiff
    # the tolerance a float64 result is held to: 1e-9 against autodiff, 1e-8 against differences up to
    # order 2; third and fourth derivatives by differences are good to about 1e-10..1e-5 (the Richardson
    # error estimate sets the tolerance), so a 1e-6 perturbation is caught wherever the tolerance is below it
    assert report.rtol <= (1e-9 if autodiff else 1e-8 if order <= 2 else 1e-4), report
    factor = max(1e-6, 3.0 * report.rtol)
    with pytest.raises(xd.CheckError) as caught:
        xd.check(_perturbed(op, factor), net, x, *args, points=3, **kwargs)
    assert isinstance(caught.value, AssertionError)
    bad = caught.value.report
    assert not bad.passed and bad.error > bad.rtol and bad.operator == report.operator


def test_report_is_a_small_frozen_record(backend, nets):
    x = _x(backend, (5, 3))
    report = xd.check(xd.hessian, nets["chain"], x, points=2)
    assert "operator='hessian'" in repr(report) and "points=2" in repr(report)
    assert "passed" in str(report)
    as_dict = report.as_dict()
    assert {"operator", "reference", "error", "rtol", "points", "passed"} <= set(as_dict)
    assert as_dict["passed"] is True and as_dict["points"] == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.error = 1.0  # type: ignore[misc]
    single = xd.check(xd.laplacian, nets["chain"], x[0, :], rtol=1e-6)  # one point (d,)
    assert single.points == 1 and single.rtol == 1e-6


def test_every_checks_one_call_in_n(backend, nets):
    checker = xd.check.every(3, points=2)
    x = _x(backend, (4, 3))
    reports = [checker(xd.laplacian, nets["scalar"], x) for _ in range(7)]
    assert [r is not None for r in reports] == [True, False, False, True, False, False, True]
    assert all(r.passed for r in reports if r is not None)
    with pytest.raises(xd.CheckError):
        xd.check.every(1)(_perturbed(xd.laplacian, 1e-6), nets["scalar"], x)


def test_graphs_and_composites(backend, nets):
    """A function of x (jet engine) times a chain, plus a quadratic: Hessian and Laplacian."""

    def bump(x):
        from array_api_compat import array_namespace

        xp = array_namespace(x)
        return xp.exp(-xp.sum(x * x, axis=-1, keepdims=True))

    A = backend.asarray(np.diag([1.0, 2.0, 3.0]))
    u = xd.function(bump) * nets["chain"] + xd.quadratic(A)
    x = _x(backend, (3, 3))
    try:
        xd.value(u, x)  # what the difference reference evaluates
    except IndexError as exc:  # pragma: no cover - array-api-strict: the graph value reads a 2-D eye with one index
        pytest.skip(f"xd.value of a graph fails on {backend.name}: {exc}")
    for op in (xd.hessian, xd.laplacian) if backend.name not in ("jax", "dask") else (xd.laplacian,):
        assert xd.check(op, u, x, points=2).passed
        with pytest.raises(xd.CheckError):
            xd.check(_perturbed(op, 1e-6), u, x, points=2)


def test_generator_seed_draws_what_the_call_drew(backend, nets):
    x = _x(backend, (4, 3))
    rng = np.random.default_rng(0)
    report = xd.check(xd.laplacian, nets["scalar"], x, estimator="gaussian", samples=2, seed=rng, points=2)
    assert report.passed


def test_float32_result_is_held_to_its_precision(backend):
    net = xd.mlp([3, 8, 1], activation="tanh", seed=0, xp=backend.module, device=backend.device, dtype="float32")
    x = backend.asarray(np.random.default_rng(0).standard_normal((4, 3)), "float32")
    report = xd.check(xd.laplacian, net, x, points=2)
    assert report.passed and report.rtol == pytest.approx(1e4 * np.finfo(np.float32).eps)


def test_refusals(backend, nets):
    x = _x(backend, (3, 3))
    with pytest.raises(TypeError, match="not an xderiv operator"):
        xd.check(lambda net, x: x, nets["chain"], x)
    with pytest.raises(ValueError, match="composite"):
        xd.check(xd.laplacian, 2.0 * nets["scalar"], x, estimator="hutchinson", samples=2, seed=0)
    with pytest.raises(ValueError, match="biharmonic"):
        xd.check(xd.biharmonic, nets["scalar"], x, estimator="gaussian", samples=2, seed=0)
    with pytest.raises(ValueError, match="points"):
        xd.check(xd.value, nets["chain"], x, points=0)
    with pytest.raises(ValueError, match="reference"):
        xd.check(xd.value, nets["chain"], x, reference="symbolic")


def test_differences_on_any_backend(backend, nets):
    """``reference="differences"`` forces the finite-difference reference (the default off torch and JAX)."""
    if backend.name == "jax":
        pytest.skip("differences evaluate the network at many points op by op: slow on eager JAX (torch runs it)")
    x = _x(backend, (3, 3))
    report = xd.check(xd.hvp, nets["chain"], x, _x(backend, (3,), 1), points=2, reference="differences")
    assert "differences" in report.reference and report.rtol <= 1e-8
    if backend.name not in AUTODIFF:
        with pytest.raises(ValueError, match="autodiff"):
            xd.check(xd.hvp, nets["chain"], x, _x(backend, (3,), 1), reference="autodiff")
