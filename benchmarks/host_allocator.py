"""What ``xd.tune_host_allocator()`` changes: the same call timed in fresh processes, with and without it.

    python benchmarks/host_allocator.py [--out benchmarks/results/host_allocator.json] [--repeats 2]

Each case runs in a fresh interpreter (one thread, the problem's network built from
``problems.py``): the call once to warm up, then as many calls as fit in about a second,
and the median.  The two settings alternate, ``--repeats`` times each; the JSON keeps every
median, the machine, the date and the load average.  ``make_performance_page.py`` turns it
into the "Host allocator" table of ``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# (library, problem, quantity): P1 is hessQuik's timing net at d = 16, n = 1000; P4 d = w = 64, n = 200.
CASES = [
    ("numpy", "p1(16, 1000)", "hessian"),
    ("numpy", "p1(16, 1000)", "laplacian"),
    ("numpy", "p4()", "laplacian"),
    ("torch", "p1(16, 1000)", "hessian"),
    ("torch", "p4()", "laplacian"),
]

_CHILD = """
import statistics, sys, time
sys.path.insert(0, {here!r})
import numpy as np
import xderiv as xd
from problems import p1, p4

library, problem, quantity, tune = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
if tune:
    xd.tune_host_allocator()
p = eval(problem)
if library == "torch":
    import torch
    torch.set_num_threads(1)
    arr = lambda a: torch.tensor(np.asarray(a), dtype=torch.float64)
else:
    arr = np.asarray
layers = [xd.Dense(arr(L.W), arr(L.b), activation=L.activation) if L.kind == "dense"
          else xd.Residual(arr(L.W), arr(L.b), activation=L.activation, step=L.step) for L in p.layers]
net, x = xd.Sequential(*layers), arr(p.x)
op = getattr(xd, quantity)
op(net, x)
times, start = [], time.perf_counter()
while time.perf_counter() - start < 1.0 or len(times) < 5:
    t = time.perf_counter()
    op(net, x)
    times.append(time.perf_counter() - t)
print(statistics.median(times))
"""


def _median_s(library: str, problem: str, quantity: str, tune: bool) -> float:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    code = _CHILD.format(here=str(HERE))
    args = [sys.executable, "-c", code, library, problem, quantity, "1" if tune else "0"]
    out = subprocess.run(args, env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE / "results" / "host_allocator.json")
    ap.add_argument("--repeats", type=int, default=2, help="alternations of the two settings per case")
    args = ap.parse_args()
    load_start = os.getloadavg()[0]
    rows = []
    for library, problem, quantity in CASES:
        try:
            __import__(library)
        except ImportError:
            print(f"skipped {library} {problem} {quantity}: {library} is not installed")
            continue
        default, tuned = [], []
        for _ in range(args.repeats):
            default.append(_median_s(library, problem, quantity, tune=False))
            tuned.append(_median_s(library, problem, quantity, tune=True))
        rows.append(
            {"library": library, "problem": problem, "quantity": quantity, "default_s": default, "tuned_s": tuned}
        )
        print(f"{library:6} {problem:14} {quantity:10} default {[f'{t * 1e3:.2f}' for t in default]} ms, "
              f"tuned {[f'{t * 1e3:.2f}' for t in tuned]} ms")  # fmt: skip
    record = {
        "datetime": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
        "machine": {
            "cpu": _cpu(),
            "cpus": os.cpu_count(),
            "system": platform.system(),
            "python": platform.python_version(),
        },
        "threads": 1,
        "load_average": {"start": load_start, "end": os.getloadavg()[0]},
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
