"""Train a Poisson PINN on several processes with torch DistributedDataParallel.

-Δu = f on the unit cube [0, 1]^d with u*(x) = (1/d) Σ sin(π x_i), f = π² u* and
Dirichlet data u* on the faces (the problem of ``examples/poisson.py``, soft boundary
condition).  The loss is the mean squared residual of ``xd.laplacian`` plus the boundary
misfit, computed in the ``forward`` of a torch module (:class:`PoissonLoss`) so that
DistributedDataParallel wraps it like any model: every process evaluates the loss on
its own slice of the collocation points, and ``loss.backward()`` all-reduces the weight
gradients and averages them.  With equal slices the average is the gradient of the
mean loss over all the points, so N processes take the same steps as one process
would on the union of their slices (to round-off).

Run it with ``torchrun --nproc_per_node=2 examples/ddp_poisson.py`` (gloo on the CPU;
NCCL, one GPU per process, where CUDA is available); ``python examples/ddp_poisson.py``
alone runs it as a single process.  Every step draws one global batch from a seed that
all processes share and each process keeps its rows ``rank::world`` of it.  Rank 0
prints the loss (the mean over all the points) and, at the end, the relative L2 error
against u* on held-out points, also evaluated in slices and summed across processes.

``--grad-out FILE`` also writes, before training, the points of every process and the
averaged weight gradients of the first batch (``torch.save``): the test suite compares
them with one process's gradient on the union of the points.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import xderiv as xd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from poisson import boundary_points, exact  # noqa: E402


class PoissonLoss(torch.nn.Module):
    """The PINN loss of ``u`` on interior points ``x`` and boundary points ``xb``, as a module.

    Parameters
    ----------
    u : torch.nn.Module
        The solution network, e.g. ``xd.as_module(xd.mlp(...))``; it needs a
        ``laplacian`` method (every module made by ``xd.as_module`` has one).
    boundary_weight : float
        Weight of the boundary misfit beside the mean squared residual.
    """

    def __init__(self, u: torch.nn.Module, boundary_weight: float = 10.0) -> None:
        super().__init__()
        self.u = u
        self.boundary_weight = boundary_weight

    def forward(self, x: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
        """Mean of (-Δu - f)² over ``x`` plus the weighted mean of (u - u*)² over ``xb``."""
        residual = self.u.laplacian(x)[:, 0] + math.pi**2 * exact(x)  # -Δu - f, exact Laplacian
        misfit = self.u(xb)[:, 0] - exact(xb)
        return (residual**2).mean() + self.boundary_weight * (misfit**2).mean()


def build(d: int, width: int, depth: int, seed: int, device: torch.device | str = "cpu") -> PoissonLoss:
    """The loss module around a tanh MLP ``d -> width x depth -> 1`` with float64 weights drawn from ``seed``."""
    net = xd.mlp([d] + [width] * depth + [1], activation="tanh", xp=torch, device=device, seed=seed)
    return PoissonLoss(xd.as_module(net))


def batch(
    n: int, d: int, seed: int, step: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch of step ``step``: ``n`` interior and ``n`` boundary points, the same in every process."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    x = torch.rand(n, d, generator=gen, dtype=torch.float64)
    return x.to(device), boundary_points(n, d, gen).to(device)


def shard(points: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """Rows ``rank::world`` of ``points``: the slice of process ``rank`` (equal sizes when ``world`` divides n)."""
    return points[rank::world]


def setup(backend: str) -> tuple[int, int, torch.device]:
    """Join the process group torchrun describes (or a group of one); return rank, world size and device."""
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if "WORLD_SIZE" in os.environ:  # launched by torchrun: it sets RANK, WORLD_SIZE, MASTER_ADDR, ...
        dist.init_process_group(backend)
    else:  # plain `python examples/ddp_poisson.py`: one process
        store = os.path.join(tempfile.mkdtemp(prefix="ddp-poisson-"), "store")
        dist.init_process_group(backend, init_method=f"file://{store}", rank=0, world_size=1)
    rank, world = dist.get_rank(), dist.get_world_size()
    if backend == "nccl":
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")  # torchrun gives each of several processes one thread


def relative_error(model: PoissonLoss, d: int, n: int, seed: int, rank: int, world: int, device: torch.device) -> float:
    """Relative L2 error of u against u* on ``n`` held-out points, each process evaluating its slice."""
    test = torch.rand(n, d, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    x = shard(test, rank, world).to(device)
    with torch.no_grad():
        want = exact(x)
        sums = torch.stack([((model.u(x)[:, 0] - want) ** 2).sum(), (want**2).sum()])
    dist.all_reduce(sums)  # sums over every process's slice
    return float(torch.sqrt(sums[0] / sums[1]))


def parser() -> argparse.ArgumentParser:
    """The command line; ``--help`` shows every default."""
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--dim", type=int, default=3, help="dimension d of the unit cube")
    p.add_argument("--width", type=int, default=32, help="hidden width of the MLP")
    p.add_argument("--depth", type=int, default=2, help="hidden layers of the MLP")
    p.add_argument("--steps", type=int, default=2000, help="Adam steps, each on a fresh global batch")
    p.add_argument(
        "--points", type=int, default=1024, help="interior (and boundary) points per step, all processes together"
    )
    p.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (decayed 10x over the run)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and of the points")
    p.add_argument("--log-every", type=int, default=250, help="rank 0 prints the loss every N steps (0: quiet)")
    p.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "gloo", "nccl"],
        help="process-group backend (auto: nccl with CUDA)",
    )
    p.add_argument("--quick", action="store_true", help="a small run of seconds: 300 steps on 256 points")
    p.add_argument("--grad-out", default=None, help="write the points and the first batch's averaged gradients here")
    return p


def train(args: argparse.Namespace, rank: int, world: int, device: torch.device) -> dict[str, float]:
    """Adam on the sharded loss; rank 0 prints the loss and the final error. Every process returns the summary."""
    model = DistributedDataParallel(build(args.dim, args.width, args.depth, args.seed, device))
    if args.grad_out:
        x, xb = batch(args.points, args.dim, args.seed, 0, device)
        xs, xbs = shard(x, rank, world), shard(xb, rank, world)
        model(xs, xbs).backward()  # DDP all-reduces and averages the gradients
        shards = [[torch.empty_like(xs) for _ in range(world)], [torch.empty_like(xbs) for _ in range(world)]]
        dist.all_gather(shards[0], xs)
        dist.all_gather(shards[1], xbs)
        if rank == 0:
            grads = [p.grad.detach().cpu() for p in model.module.parameters()]
            points = {"x": [s.cpu() for s in shards[0]], "xb": [s.cpu() for s in shards[1]]}
            torch.save({**points, "grads": grads}, args.grad_out)
        model.zero_grad()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.1 ** (step / max(args.steps, 1)))
    procs = f"{world} process{'es' if world > 1 else ''}"
    if rank == 0 and args.log_every:
        each = args.points // world
        print(
            f"{procs} ({dist.get_backend()}, {device.type}), {each} interior and boundary points "
            f"each per step, d={args.dim}",
            flush=True,
        )
    t0, loss = time.perf_counter(), torch.zeros((), dtype=torch.float64, device=device)
    for step in range(1, args.steps + 1):
        x, xb = batch(args.points, args.dim, args.seed, step, device)
        loss = model(shard(x, rank, world), shard(xb, rank, world))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if args.log_every and (step % args.log_every == 0 or step == args.steps):
            mean = loss.detach().clone()
            dist.all_reduce(mean)  # the loss over all the points: the mean of the equal slices' means
            if rank == 0:
                print(
                    f"adam {step:>{len(str(args.steps))}}/{args.steps}  loss {float(mean) / world:.3e}  "
                    f"{time.perf_counter() - t0:6.1f} s",
                    flush=True,
                )
    final = loss.detach().clone()
    dist.all_reduce(final)
    err = relative_error(model.module, args.dim, 4096, args.seed, rank, world, device)
    seconds = time.perf_counter() - t0
    if rank == 0:
        print(
            f"DDP Poisson d={args.dim} on {procs}: {args.steps} steps in {seconds:.1f} s, final loss "
            f"{float(final) / world:.2e}, relative L2 error {err:.2e} on 4096 held-out points",
            flush=True,
        )
    return {"loss": float(final) / world, "error": err, "seconds": seconds, "world": world}


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Join the process group, train, leave the group; return this process's summary (loss, error, seconds)."""
    args = parser().parse_args(argv)
    if args.quick:
        args.steps, args.points = 300, 256
    rank, world, device = setup(args.backend)
    try:
        if args.points % world:
            raise SystemExit(f"--points {args.points} must be a multiple of the {world} processes")
        return train(args, rank, world, device)
    finally:
        # DDP sits in reference cycles that hold the process group: free them before the group goes,
        # not at interpreter exit, where gloo's threads can abort the process.
        gc.collect()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
