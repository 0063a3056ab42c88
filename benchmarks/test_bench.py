"""xderiv against its peers: every problem x quantity x method, checked, then timed by pytest-benchmark.

Each method's first call is compared with xderiv's float64 answer (NumPy, mode auto); a
method that disagrees fails here and is never timed.  That first call is the warm-up
(jit compilation included); the rounds that follow are timed one call each.
"""

from __future__ import annotations

import functools
import time

import methods as M
import numpy as np
import problems as P
import pytest

TOL = {"float64": 1e-8, "float32": 2e-3}


_SET = {"which": "cpu"}


@functools.cache
def _problems(quick):
    return P.make_problems(quick, _SET["which"])


def pytest_generate_tests(metafunc):
    if "case" in metafunc.fixturenames:
        _SET["which"] = metafunc.config.getoption("--problems")
        quick, device = metafunc.config.getoption("--quick"), metafunc.config.getoption("--device")
        cases = [
            (i, q, name) for i, p in enumerate(_problems(quick)) for q in p.quantities for name in M.names(q, device)
        ]
        ids = [f"{_problems(quick)[i].label.replace(' ', '_').replace('=', '')}-{q}-{name}" for i, q, name in cases]
        metafunc.parametrize("case", cases, ids=ids)


@functools.lru_cache(maxsize=1)
def _methods(quick, i, dtype, device):
    return M.build(_problems(quick)[i], dtype, device)


@functools.lru_cache(maxsize=8)
def _reference(quick, i, q, budget):
    name = M.reference_name(q)
    ref = M.build(_problems(quick)[i], "float64", "cpu")[0][(q, name)]
    if ref.mem > budget:
        pytest.skip(f"no reference: xderiv's estimated memory {ref.mem / 2**30:.1f} GiB is over the budget")
    return ref.conv(ref.fn())


def _rounds(first, second, quick):
    """Enough rounds for about ``target`` seconds, between ``lo`` and ``hi``, at most ``cap`` seconds."""
    target, lo, hi, cap = (0.05, 3, 5, 0.5) if quick else (1.0, 5, 30, 20.0)
    t = max(second or first, 1e-9)
    return max(1, min(hi, max(lo, round(target / t)), int(cap // t)))


def test_bench(case, benchmark, request):
    i, q, name = case
    opt = request.config.getoption
    quick, dtype, device, budget = opt("--quick"), opt("--dtype"), opt("--device"), opt("--mem-budget-gb") * 2**30
    p = _problems(quick)[i]
    info = {"order": i, "label": p.label, "problem": p.family, "n": p.n, "d": p.d, "quantity": q, "method": name}
    request.node.user_properties.append(("case", info))
    methods, missing = _methods(quick, i, dtype, device)
    m = methods.get((q, name))
    if m is None:
        pytest.skip(next((why for peer, why in missing.items() if name.startswith(peer)), "not installed"))
    if m.mem > budget:
        pytest.skip(f"estimated memory {m.mem / 2**30:.1f} GiB > budget {budget / 2**30:g} GiB")
    ref = _reference(quick, i, q, budget)

    t0 = time.perf_counter()
    got = m.fn()
    first = time.perf_counter() - t0
    got = m.conv(got)
    assert got.shape == ref.shape, f"shape {got.shape}, expected {ref.shape}"
    err = float(np.max(np.abs(got - ref)) / max(float(np.max(np.abs(ref))), 1e-300))
    assert err <= TOL[dtype], f"disagrees with xderiv's float64 answer: max rel err {err:.2e}"
    del got
    second = None
    if first < (0.5 if quick else 20.0):  # a second call estimates the time without compilation
        t0 = time.perf_counter()
        m.fn()
        second = time.perf_counter() - t0

    benchmark.group = f"{p.label} {q}"
    benchmark.extra_info.update(info, dtype=dtype, device=device, max_rel_err=err, first_call_s=first)
    benchmark.extra_info["is_xderiv"] = name.startswith("xderiv")
    benchmark.pedantic(m.fn, rounds=_rounds(first, second, quick), iterations=1, warmup_rounds=0)
