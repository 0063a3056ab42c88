"""Options and output of a benchmark run (``pytest benchmarks/test_bench.py ...``; never part of ``pytest tests``)."""

from __future__ import annotations

import importlib.metadata as md
import json
import os
from pathlib import Path

PACKAGES = ("xderiv", "numpy", "torch", "jax", "folx", "hessQuik", "jet-for-pytorch", "cupy")
_run: dict = {"not_timed": []}


def pytest_addoption(parser):
    g = parser.getgroup("xderiv benchmarks")
    g.addoption("--family", default="chain", help="chain, second_order, graphs, training, overhead or gpu")
    g.addoption("--quick", action="store_true", help="the same networks at few points, few rounds (smoke test)")
    g.addoption("--dtype", default="float64", choices=("float64", "float32"))
    g.addoption("--device", default="cpu", choices=("cpu", "cuda"), help="cuda: xderiv on CuPy and torch-CUDA")
    g.addoption("--threads", default="1", help="threads of numpy, torch and XLA, and cores the run is pinned to")
    g.addoption("--mem-budget-gb", type=float, default=6.0, help="skip a method whose estimated memory exceeds this")
    g.addoption("--flops", action="store_true", help="also count each method's flops (one more call)")


def pytest_configure(config):
    _run["load"] = os.getloadavg()[0]
    threads = config.getoption("--threads", "0")
    if threads != "0":  # before numpy, torch and jax start their thread pools
        os.environ.update(dict.fromkeys(("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"), threads))
        if threads == "1":
            os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
        if hasattr(os, "sched_setaffinity"):  # XLA's CPU runtime keeps a thread pool whatever the flags say
            os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: int(threads)])
    import xderiv

    xderiv.tune_host_allocator()  # every method, peers included, with freed blocks reused as in a long-running process


def pytest_runtest_logreport(report):
    case = dict(report.user_properties).get("case")
    if case and (report.skipped or report.failed) and report.when != "teardown":
        crash = getattr(report.longrepr, "reprcrash", None)
        why = report.longrepr[2].removeprefix("Skipped: ") if report.skipped else getattr(crash, "message", "?")
        _run["not_timed"].append({**case, "why": ("skipped: " if report.skipped else "failed: ") + why.split("\n")[0]})


def pytest_benchmark_update_json(config, benchmarks, output_json):
    """pytest-benchmark's JSON cut to what the speed page reads: no per-round data, no bulky machine details."""
    m, dists = output_json["machine_info"], {d.metadata["Name"].lower(): d.version for d in md.distributions()}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    runs = [b["extra_info"] | {"group": b["group"]} | b["stats"] for b in output_json["benchmarks"]]
    forward = {(r["group"], r["name"]): r.get("flops") for r in runs}
    for r in runs:  # flops in forward passes of the same network on the same library
        value = r["group"].rsplit(" ", 1)[0] + " value"
        fwd = forward.get((value, "jax jit" if r["name"].endswith("jit") else "torch eager"))
        r["passes"] = r["flops"] / fwd if r.get("flops") and fwd else None
    slim = [{k: r[k] for k in ("group", "name", "median", "rounds", "cpu", "passes") if r.get(k)} for r in runs]
    output_json.update(
        machine_info={"cpu": m["cpu"].get("brand_raw", "?"), "system": m["system"], "cpus": os.cpu_count()},
        commit_info={k: output_json["commit_info"].get(k) for k in ("id", "branch", "dirty")},
        options={k: config.getoption(k) for k in ("family", "quick", "dtype", "device", "threads")} | {"cores": cores},
        versions={p: dists.get(p.lower()) for p in PACKAGES},
        load_average={"start": _run["load"], "end": os.getloadavg()[0]},
        not_timed=_run["not_timed"],
        benchmarks=[{k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in r.items()} for r in slim],
    )


def pytest_unconfigure(config):
    """The JSON rewritten with one benchmark per line: small, and readable in a diff."""
    path = config.getoption("benchmark_json", None)
    if path and Path(path).exists():
        run = json.loads(Path(path).read_text())
        rows = ",\n".join("  " + json.dumps(b, ensure_ascii=False) for b in run.pop("benchmarks"))
        head = json.dumps(run, indent=1, ensure_ascii=False)[:-2]
        Path(path).write_text(head + ',\n "benchmarks": [\n' + rows + "\n ]\n}\n", encoding="utf-8")
