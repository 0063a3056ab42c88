"""Measurements that need a fresh process each: what ``xd.tune_host_allocator()`` changes, and the memory budget.

    python benchmarks/fresh.py allocator [--repeats 2]   # results/host_allocator.json
    python benchmarks/fresh.py memory [--quick]          # results/memory_budget.json (--quick: 2000 points, unsaved)

``allocator``: one xderiv call in fresh processes without and with the tuning, alternated (each the median of a
second's calls).  ``memory``: one step ``mean(laplacian(net, x)**2).backward()`` (torch float32) under each budget,
with and without checkpointing: the peak resident set above the one before, what autograd saves, the best time.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
P1, P4 = "P1 d=16 n=1000", "P4 d=64 n=200"
CASES = [("numpy", P1, "hessian"), ("numpy", P1, "laplacian"), ("numpy", P4, "laplacian"), ("torch", P1, "hessian")]
BUDGETS = [("1024", "0"), ("64", "0"), ("64", "1"), ("1024", "1")]  # MiB, checkpoint


def allocator(library: str, problem: str, quantity: str, tune: str) -> float:
    """The median time of one call in this process."""
    import problems as P
    from methods import chain_net

    import xderiv as xd

    if tune == "1":
        xd.tune_host_allocator()
    arr, op = importlib.import_module(library).asarray, getattr(xd, quantity)
    p = P.resnet("P1", 16, 1000) if problem == P1 else P.resnet("P4", 64, 200, 64)
    net, x, times = chain_net(p, {k: {kk: arr(v) for kk, v in d.items()} for k, d in p.P.items()}), arr(p.x), []
    while sum(times) < 1.0 or len(times) < 6:  # the first call is the warm-up
        t0 = time.perf_counter()
        op(net, x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def memory(n: str, budget: str, checkpoint: str) -> dict:
    """Peak resident set, saved storages and time of one training step under one budget, in this process."""
    import torch

    import xderiv as xd

    net = xd.mlp([100, 128, 128, 128, 1], activation="tanh", xp=torch, dtype=torch.float32, seed=0)
    for w in net.arrays():
        w.requires_grad_(True)
    x, saved, times = torch.rand(int(n), 100, generator=torch.Generator().manual_seed(0)), {}, []
    xd.set_memory_budget(int(budget) * 2**20, checkpoint=checkpoint == "1")
    (xd.laplacian(net, x[:64]) ** 2).mean().backward()  # warm-up: lazy imports, first allocations
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux

    def pack(t):  # the first step counts the storages autograd saves for the backward pass
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    for hooks in [(pack, lambda t: t)] + [(lambda t: t, lambda t: t)] * 2:
        t0 = time.perf_counter()
        with torch.autograd.graph.saved_tensors_hooks(*hooks):
            lap = xd.laplacian(net, x)
        (lap**2).mean().backward()
        times.append(time.perf_counter() - t0)
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    out = {"budget_mib": int(budget), "checkpoint": checkpoint == "1", "peak_rss_mib": peak}
    return out | {"saved_mib": sum(saved.values()) / 2**20, "seconds": min(times[1:])}


def child(*args: str) -> object:
    """``fresh.py --child ARGS`` in a fresh interpreter with one thread: what it prints."""
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    env |= dict.fromkeys(("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"), "1")
    run = subprocess.run([sys.executable, __file__, "--child", *args], env=env, capture_output=True, check=True)
    return json.loads(run.stdout.decode().strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("allocator", "memory"), nargs="?")
    ap.add_argument("--repeats", type=int, default=2, help="allocator: alternations of the two settings per case")
    ap.add_argument("--quick", action="store_true", help="memory: n = 2000 points, nothing written")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        sys.path.insert(0, str(HERE))
        print(json.dumps((allocator if args.child[0] == "allocator" else memory)(*args.child[1:])))
        return
    cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
    machine = {
        "cpu": cpu[1] if cpu else platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes")
    rec, load = {"what": args.what, "datetime": now, "machine": machine, "rows": []}, os.getloadavg()[0]
    if args.what == "allocator":
        for lib, problem, q in CASES + [("torch", P4, "laplacian")]:
            runs = [child("allocator", lib, problem, q, tune) for _ in range(args.repeats) for tune in "01"]
            rec["rows"].append({"library": lib, "problem": problem, "quantity": q})
            rec["rows"][-1] |= {"default_s": runs[::2], "tuned_s": runs[1::2]}
            print(rec["rows"][-1], flush=True)
    else:
        rec |= {"n": 2000 if args.quick else 20_000, "torch": importlib.metadata.version("torch")}
        for budget, checkpoint in BUDGETS:
            rec["rows"].append(child("memory", str(rec["n"]), budget, checkpoint))
            print(rec["rows"][-1], flush=True)
    rec["load_average"] = {"start": load, "end": os.getloadavg()[0]}
    if not (args.what == "memory" and args.quick):
        out = HERE / "results" / ("host_allocator.json" if args.what == "allocator" else "memory_budget.json")
        out.write_text(json.dumps(rec, indent=1) + "\n")


if __name__ == "__main__":
    main()
