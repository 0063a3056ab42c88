"""Laplacians over millions of collocation points with dask on a LocalCluster.

The same xderiv recursions run on ``dask.array``: points chunked along the
batch axis flow through unchanged and the cluster evaluates chunks in
parallel.  This script compares the result and the throughput with the
in-memory NumPy path on the same machine.

Run ``python examples/dask_laplacian.py --points 2000000`` (2 workers here);
on a real ``dask.distributed`` cluster pass its scheduler address with
``--scheduler tcp://...``.
"""

from __future__ import annotations

import argparse
import time

import dask.array as da
import numpy as np
from dask.distributed import Client, LocalCluster, as_completed

import xderiv as xd
from xderiv.interop.dask import to_dask


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--points", type=int, default=2_000_000, help="collocation points")
    p.add_argument("--chunk", type=int, default=100_000, help="points per dask chunk (one task chain each)")
    p.add_argument("--d", type=int, default=8, help="input dimension")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (one thread each)")
    p.add_argument("--scheduler", default=None, help="address of an existing dask scheduler (no LocalCluster)")
    p.add_argument("--log-every", type=int, default=5, help="print progress every N finished chunks (0: quiet)")
    return p


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parser().parse_args(argv)

    def say(text: str) -> None:
        if args.log_every > 0:
            print(text, flush=True)

    net = xd.resnet(args.d, 32, 3, activation="tanh", seed=0)
    dnet = to_dask(net)
    x = da.random.default_rng(0).standard_normal((args.points, args.d), chunks=(args.chunk, args.d))

    say(
        f"starting a LocalCluster of {args.workers} workers"
        if not args.scheduler
        else f"connecting to {args.scheduler}"
    )
    cluster = None if args.scheduler else LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True)
    with Client(args.scheduler or cluster) as client:
        lap = xd.laplacian(dnet, x)  # lazy: one task chain per chunk
        chunks = lap.to_delayed().ravel().tolist()  # the Laplacians of each chunk of points, in order
        say(f"{args.points} Laplacians in {len(chunks)} chunks of up to {args.chunk} points")
        t0 = time.perf_counter()
        futures = client.compute(chunks)
        for done, _ in enumerate(as_completed(futures), 1):
            if args.log_every > 0 and (done % args.log_every == 0 or done == len(futures)):
                say(f"dask   {done:>{len(str(len(futures)))}}/{len(futures)} chunks  {time.perf_counter() - t0:6.1f} s")
        lap_values = np.concatenate(client.gather(futures), axis=0)
        t_dask = time.perf_counter() - t0
        first = x[: args.chunk].compute()
    if cluster is not None:
        cluster.close()

    t0 = time.perf_counter()
    reference = xd.laplacian(net, first)  # in-memory NumPy on one chunk
    t_numpy = time.perf_counter() - t0
    err = float(np.max(np.abs(lap_values[: args.chunk] - reference)) / np.max(np.abs(reference)))
    out = {
        "points": args.points,
        "dask_points_per_s": args.points / t_dask,
        "numpy_points_per_s": args.chunk / t_numpy,
        "max_rel_diff": err,
    }
    print(
        f"dask ({args.workers} workers): {args.points} Laplacians in {t_dask:.1f} s = "
        f"{out['dask_points_per_s']:.3g} points/s; "
        f"in-memory NumPy: {out['numpy_points_per_s']:.3g} points/s; largest relative difference {err:.1e}"
    )
    return out


if __name__ == "__main__":
    main()
