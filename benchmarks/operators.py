"""Issue-4 rows: trace_hessian with k << d and the partial (spatial) Laplacian, against torch.func.

Run ``python benchmarks/operators.py [--threads 1]``; prints a markdown table and
writes ``benchmarks/results/operators.md``.  Same weights for every method, each
result checked against the others before timing; medians of repeats in one process.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

import xderiv as xd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from reference import network_function  # noqa: E402  (plain-torch re-implementation)


def median_ms(f, repeats: int = 7) -> float:
    f()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--n", type=int, default=256)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from torch.func import hessian, vmap

    rows = ["| problem | operator | method | ms | speed-up vs torch.func |", "|---|---|---|---|---|"]
    for d, k in [(64, 4), (256, 4), (256, 16)]:
        net = xd.resnet(d, 64, 4, activation="tanh", step=0.5, xp=torch, seed=0)
        x = torch.asarray(np.random.default_rng(0).standard_normal((args.n, d)))
        s = torch.asarray(np.random.default_rng(1).standard_normal((d, k)))
        f = network_function(net, torch)
        ws = net.arrays()
        coords = list(range(1, d))

        def tf_hess():
            return vmap(hessian(f, argnums=1), in_dims=(None, 0))(ws, x)[:, 0]

        cases = {
            f"trace_hessian k={k}": (
                {m: (lambda m=m: xd.trace_hessian(net, x, s, mode=m)) for m in ("forward", "backward", "auto")},
                lambda: torch.einsum("nij,ik,jk->n", tf_hess(), s, s),
            ),
            "laplacian over d-1 coords": (
                {m: (lambda m=m: xd.laplacian(net, x, mode=m, coords=coords)) for m in ("forward", "backward", "auto")},
                lambda: torch.diagonal(tf_hess(), dim1=-2, dim2=-1)[:, 1:].sum(-1),
            ),
        }
        for name, (ours, theirs) in cases.items():
            ref = theirs()
            t_ref = median_ms(theirs, 3)
            for mode, fn in ours.items():
                got = fn()[:, 0]
                err = float((got - ref).abs().max() / ref.abs().max())
                assert err < 1e-10, (name, mode, err)
                t = median_ms(fn)
                problem = f"d={d}, w=64, 4 res, n={args.n}"
                rows.append(f"| {problem} | {name} | xderiv-torch[{mode}] | {t:.2f} | {t_ref / t:.1f}x |")
            rows.append(f"| d={d}, w=64, 4 res, n={args.n} | {name} | torch.func full Hessian | {t_ref:.2f} | 1.0x |")
    table = "\n".join(rows)
    print(table)
    out = Path(__file__).resolve().parent / "results" / "operators.md"
    out.write_text(f"# Operators (issue 4), float64, torch CPU, {args.threads} thread(s)\n\n{table}\n")


if __name__ == "__main__":
    main()
