"""Train a PINN for -Δu = f on the unit cube in d = 10 with the PyTorch backend.

Exact solution u(x) = (1/d) Σ sin(π x_i), so f = π² u, with Dirichlet data u on
the faces.  The loss is the mean squared PDE residual, built from
``xd.laplacian(net, x)`` (exact, no Hessian formed), plus the boundary misfit;
Adam and then L-BFGS train the weights *through* xderiv's recursions.

Run ``python examples/poisson.py``; it prints the relative L2 error on 4096
held-out points and writes ``poisson.png`` (loss curve; a slice of the
solution against the exact one).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

import xderiv as xd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pinn_common import Timer, fit, plot  # noqa: E402


def exact(x: torch.Tensor) -> torch.Tensor:
    return torch.sin(math.pi * x).mean(-1)


def boundary_points(n: int, d: int, gen: torch.Generator) -> torch.Tensor:
    """Uniform points on the faces of [0, 1]^d: one random coordinate pinned to 0 or 1."""
    x = torch.rand(n, d, generator=gen, dtype=torch.float64)
    face = torch.randint(0, d, (n,), generator=gen)
    x[torch.arange(n), face] = torch.randint(0, 2, (n,), generator=gen).to(torch.float64)
    return x


def solve(
    d: int = 10,
    width: int = 32,
    depth: int = 2,
    adam_steps: int = 500,
    lbfgs_iters: int = 1500,
    points: int = 512,
    seed: int = 0,
    log_every: int = 0,
) -> tuple[xd.Sequential, list[float], float]:
    """Train; return the network, the loss history and the relative L2 error on held-out points.

    ``log_every=N`` prints the step, the loss and the elapsed time every N optimiser steps.
    """
    net = xd.mlp([d] + [width] * depth + [1], activation="tanh", xp=torch, seed=seed)
    params = [a.requires_grad_() for a in net.arrays()]

    def loss_on(gen: torch.Generator, n: int) -> torch.Tensor:
        x = torch.rand(n, d, generator=gen, dtype=torch.float64)
        xb = boundary_points(n, d, gen)
        residual = xd.laplacian(net, x)[:, 0] + math.pi**2 * exact(x)  # -Δu - f
        return (residual**2).mean() + 10.0 * ((net(xb)[:, 0] - exact(xb)) ** 2).mean()

    history = fit(
        params,
        loss_on,
        adam_steps=adam_steps,
        lbfgs_iters=lbfgs_iters,
        points=points,
        seed=seed,
        log_every=log_every,
    )
    test = torch.rand(4096, d, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    with torch.no_grad():
        err = torch.linalg.norm(net(test)[:, 0] - exact(test)) / torch.linalg.norm(exact(test))
    return net, history, float(err)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--adam", type=int, default=500, help="Adam steps, each on freshly drawn points")
    p.add_argument("--lbfgs", type=int, default=1500, help="L-BFGS iterations on one fixed sample of points")
    p.add_argument(
        "--points",
        type=int,
        default=512,
        help="points of each kind (interior, boundary) per Adam step; L-BFGS uses 4x as many",
    )
    p.add_argument(
        "--log-every", type=int, default=25, help="print step, loss and elapsed time every N steps (0: quiet)"
    )
    p.add_argument("--out", default="poisson.png", help="where to write the plot")
    return p


def main(argv: list[str] | None = None) -> float:
    args = parser().parse_args(argv)
    d = 10
    with Timer() as t:
        net, history, err = solve(
            d, adam_steps=args.adam, lbfgs_iters=args.lbfgs, points=args.points, log_every=args.log_every
        )
    s = torch.linspace(0, 1, 101, dtype=torch.float64)
    x = torch.full((101, d), 0.5, dtype=torch.float64)
    x[:, 0] = s
    with torch.no_grad():
        plot(history, s, net(x)[:, 0], exact(x), f"Poisson PINN, d = {d}", "x_1 (others 0.5)", args.out)
    print(
        f"Poisson d={d}: {t.seconds:.0f} s, final loss {history[-1]:.2e}, relative L2 error {err:.2e} "
        f"on 4096 held-out points; plot in {args.out}"
    )
    return err


if __name__ == "__main__":
    main()
