"""Peak memory and time of one training step under the memory budget, with and without checkpointing.

The step: ``loss = mean(laplacian(net, x) ** 2)`` and ``loss.backward()`` on torch (CPU, float32,
one thread), for a tanh MLP d -> 128 -> 128 -> 128 -> 1, d = 100, n = 20 000 points.  Each
configuration (budget, checkpoint) runs in a fresh subprocess, so that its numbers are its own:

- ``peak_rss_mib``: the process's peak resident set (``getrusage(...).ru_maxrss``) minus its
  resident set just before the step (torch imported, network and points built, one warm-up step
  on 64 points).  torch's CPU tensors come from glibc's ``malloc``, which Python's
  ``tracemalloc`` does not see; the resident set is what the machine pays, an upper bound on the
  live tensors (the allocator may keep freed blocks).
- ``saved_mib``: the distinct storages autograd saves for the backward pass during the forward
  call (``torch.autograd.graph.saved_tensors_hooks``): what the budget alone does not bound.
- ``seconds``: wall time of the step (forward and backward), best of ``--repeat`` steps after
  the one that counts the saved tensors.

Run: ``python benchmarks/memory_budget.py`` (a few minutes; ``--quick``: n = 2000, seconds).
Writes ``benchmarks/results/memory_budget.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = [  # (budget in MiB, checkpoint)
    (1024, False),
    (64, False),
    (64, True),
    (1024, True),
]


def one(d: int, n: int, budget_mib: int, checkpoint: bool, repeat: int) -> dict:
    """One configuration, in this process (called in a fresh subprocess)."""
    import torch

    import xderiv as xd

    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = xd.mlp([d, 128, 128, 128, 1], activation="tanh", xp=torch, dtype=torch.float32, seed=0)
    for w in net.arrays():
        w.requires_grad_(True)
    x = torch.rand(n, d)
    xd.set_memory_budget(budget_mib * 2**20, checkpoint=checkpoint)

    def step(points):
        lap = xd.laplacian(net, points)
        (lap**2).mean().backward()

    step(x[:64])  # warm-up: lazy imports, first allocations
    storages: dict[int, int] = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        lap = xd.laplacian(net, x)
    (lap**2).mean().backward()
    del lap
    times = []
    for _ in range(repeat):
        for w in net.arrays():
            w.grad = None
        t0 = time.perf_counter()
        step(x)
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    grad = float(sum(float((w.grad.double() ** 2).sum()) for w in net.arrays() if w.grad is not None))
    return {
        "budget_mib": budget_mib,
        "checkpoint": checkpoint,
        "peak_rss_mib": round((peak - before) / 1024, 1),
        "saved_mib": round(sum(storages.values()) / 2**20, 1),
        "seconds": round(min(times), 2),
        "grad_sq_sum": grad,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n = 2000 points")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--one", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "memory_budget.json"))
    args = parser.parse_args()
    if args.one:
        d, n, budget, checkpoint = args.one
        print(json.dumps(one(int(d), int(n), int(budget), checkpoint == "1", args.repeat)))
        return
    d, n = 100, 2000 if args.quick else 20_000
    rows = []
    for budget, checkpoint in CONFIGS:
        cmd = [sys.executable, __file__, "--repeat", str(args.repeat), "--one", str(d), str(n), str(budget)]
        out = subprocess.run([*cmd, "1" if checkpoint else "0"], capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        print(row, flush=True)
        rows.append(row)
    import torch

    result = {
        "step": "mean(laplacian(net, x)**2).backward(), torch CPU float32, 1 thread",
        "network": f"tanh MLP {d} -> 128 -> 128 -> 128 -> 1",
        "d": d,
        "n": n,
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {platform.processor() or platform.system()}",
        "rows": rows,
    }
    if not args.quick:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
