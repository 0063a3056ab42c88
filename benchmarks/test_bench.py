"""xderiv against its peers: each problem x quantity x method of one family, checked, then timed by pytest-benchmark.

Each method's first call (the warm-up, jit compilation included) is compared with the float64 answer of torch's
autodiff (xderiv-NumPy's where that is over the memory budget); a method that disagrees fails here and is never
timed.  Then one call per round, enough rounds for about a second (5 to 30, at most 20 s).
"""

from __future__ import annotations

import functools
import statistics
import time

import methods as M
import numpy as np
import problems as P
import pytest

TOL = {"float64": 1e-8, "float32": 2e-3}
problems = functools.cache(P.problems)


def pytest_generate_tests(metafunc):
    if "case" in metafunc.fixturenames:
        opt = metafunc.config.getoption
        ps, dev = problems(opt("--family"), opt("--quick")), opt("--device")
        cases = [(i, q, m) for i, p in enumerate(ps) for q in p.quantities for m in M.build(p, q, device=dev)]
        ids = [f"{ps[i].label.replace(' ', '_').replace('=', '')}-{q}-{m}" for i, q, m in cases]
        metafunc.parametrize("case", cases, ids=ids)


@functools.lru_cache(maxsize=2)
def _methods(family: str, quick: bool, i: int, q: str, dtype: str, device: str) -> dict:
    return M.build(problems(family, quick)[i], q, dtype, device)


@functools.lru_cache(maxsize=2)
def _reference(family: str, quick: bool, i: int, q: str, budget: float) -> np.ndarray:
    p, fns = problems(family, quick)[i], _methods(family, quick, i, q, "float64", "cpu")
    name = next((k for k in sorted(fns, key=M.reference_rank) if M.memory(p, q, k, 8) <= budget), None)
    if name is None:
        pytest.skip("no reference within the memory budget")
    return M.to_numpy(fns[name]())


def test_bench(case, benchmark, request):
    (i, q, name), opt = case, request.config.getoption
    family, quick, dtype, device = opt("--family"), opt("--quick"), opt("--dtype"), opt("--device")
    p, budget = problems(family, quick)[i], opt("--mem-budget-gb") * 2**30
    request.node.user_properties.append(("case", {"group": f"{p.label} {q}", "name": name}))
    if (mem := M.memory(p, q, name, np.dtype(dtype).itemsize)) > budget:
        pytest.skip(f"estimated memory {mem / 2**30:.1f} GiB > budget {budget / 2**30:g} GiB")
    ref, fn = _reference(family, quick, i, q, budget), _methods(family, quick, i, q, dtype, device)[name]
    t = time.perf_counter()
    got = M.to_numpy(fn())
    t = first = time.perf_counter() - t
    assert got.shape == ref.shape, f"{got.size} numbers, the reference has {ref.size}"
    err = float(np.max(np.abs(got - ref)) / max(float(np.max(np.abs(ref))), 1e-300))
    assert err <= TOL[dtype], f"disagrees with the float64 reference: max rel err {err:.2e}"
    if first < (0.5 if quick else 20.0):  # a second call: the time without compilation
        t = time.perf_counter()
        fn()
        t = max(time.perf_counter() - t, 1e-9)
    target, lo, hi, cap = (0.05, 3, 5, 0.5) if quick else (1.0, 5, 30, 20.0)
    cpu: list[float] = []

    def timed():  # the process's CPU time besides the wall clock: on a shared machine, what waits for a core
        c = time.process_time()
        fn()
        cpu.append(time.process_time() - c)

    benchmark.group = f"{p.label} {q}"
    benchmark.extra_info.update(name=name, max_rel_err=err, first_call_s=first)
    benchmark.pedantic(timed, rounds=max(1, min(hi, max(lo, round(target / t)), int(cap // t))), iterations=1)
    benchmark.extra_info.update(cpu=statistics.median(cpu), flops=M.flops(fn) if opt("--flops") else None)
