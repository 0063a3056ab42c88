"""Options of the benchmark run (``pytest benchmarks/test_bench.py ...``; never part of ``pytest tests``)."""

from __future__ import annotations

import importlib.metadata as md
import os

_not_timed: list = []  # skipped or failed cases, for report.py
_load: list = []


def pytest_addoption(parser):
    g = parser.getgroup("xderiv benchmarks")
    g.addoption("--quick", action="store_true", help="the same networks at few points, few rounds (smoke test)")
    g.addoption("--dtype", default="float64", choices=("float64", "float32"))
    g.addoption(
        "--problems",
        default="cpu",
        choices=("cpu", "gpu", "second_order"),
        help="the CPU problem set, the GPU comparison or the second_order rows",
    )
    g.addoption("--device", default="cpu", choices=("cpu", "cuda"), help="cuda: xderiv on CuPy and torch-CUDA")
    g.addoption("--threads", default="1", help="numpy/torch/XLA threads (default 1; 0: the libraries' own)")
    g.addoption("--mem-budget-gb", type=float, default=6.0, help="skip a method whose estimated memory exceeds this")


_pinned: list = []


def pytest_configure(config):
    _load.append(os.getloadavg()[0])  # a busy machine shows up here (2 shared cores: read ratios, not times)
    threads = config.getoption("--threads", "0")
    if threads != "0":  # before numpy, torch and jax start their thread pools
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = threads
        if threads == "1":
            flags = " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
            os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + flags
        # XLA's CPU runtime runs its own thread pool whatever the flags say (jitted jax.hessian used two
        # cores' CPU time per wall-clock second here): pin the process, so every library gets N cores.
        if hasattr(os, "sched_setaffinity"):
            cores = sorted(os.sched_getaffinity(0))[: int(threads)]
            os.sched_setaffinity(0, cores)
            _pinned.extend(cores)
    # Every method of a run, peers included, is timed with glibc reusing freed blocks up to 31 MiB, as in
    # a long-running process (the opt-in tuning; the speed page of the manual measures what it changes).
    import xderiv

    xderiv.tune_host_allocator()


def pytest_runtest_logreport(report):
    """Remember what was skipped or failed, with the reason, for report.py."""
    case = dict(report.user_properties).get("case")
    if case and (report.skipped or report.failed):
        crash = getattr(report.longrepr, "reprcrash", None)  # a failure: the exception's first line
        msg = report.longrepr[2] if report.skipped else crash.message.split("\n")[0] if crash else "failed"
        _not_timed.append({**case, "status": "skipped" if report.skipped else "failed", "reason": msg[:300]})


def pytest_benchmark_update_json(config, benchmarks, output_json):
    output_json["not_timed"] = _not_timed
    output_json["load_average"] = {"start": _load[0], "end": os.getloadavg()[0], "cpus": os.cpu_count()}
    output_json["options"] = {k: config.getoption(k) for k in ("quick", "dtype", "device", "threads")}
    output_json["options"]["pinned_cores"] = _pinned
    versions = {}
    for pkg in ("xderiv", "numpy", "torch", "jax", "folx", "hessQuik", "cupy"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    output_json["versions"] = versions
