"""Train a PINN for the heat equation u_t = Δₓu in d = 5 space dimensions (PyTorch backend).

Exact solution u(t, x) = exp(-π² t) (1/d) Σ sin(π x_i) on [0, T] x [0, 1]^d, with
its initial and boundary values as data.  The network takes (t, x); one call

    r = xd.derivatives(net, tx, laplacian=True, coords=range(1, d + 1))

returns the value, the full gradient (so u_t = r.jacobian[..., 0]) and the
Laplacian over the space coordinates only, from a single forward sweep.

Run ``python examples/heat.py``; it prints the relative L2 error on held-out
points and writes ``heat.png`` (loss curve; u(t, x_1, 0.5, ...) at t = T/2).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

import xderiv as xd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pinn_common import Timer, fit, plot, relative_error  # noqa: E402

T = 0.25


def exact(tx: torch.Tensor) -> torch.Tensor:
    t, x = tx[..., 0], tx[..., 1:]
    return torch.exp(-(math.pi**2) * t) * torch.sin(math.pi * x).mean(-1)


def sample(n: int, d: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Interior points, initial points (t = 0) and boundary points (one space coordinate at 0 or 1)."""

    def cube(k: int) -> torch.Tensor:
        tx = torch.rand(k, d + 1, generator=gen, dtype=torch.float64)
        tx[:, 0] *= T
        return tx

    interior, initial, boundary = cube(n), cube(n), cube(n)
    initial[:, 0] = 0.0
    face = 1 + torch.randint(0, d, (n,), generator=gen)
    boundary[torch.arange(n), face] = torch.randint(0, 2, (n,), generator=gen).to(torch.float64)
    return interior, initial, boundary


def solve(
    d: int = 5,
    width: int = 32,
    depth: int = 2,
    adam_steps: int = 500,
    lbfgs_iters: int = 800,
    points: int = 512,
    seed: int = 0,
    log_every: int = 0,
) -> tuple[xd.Sequential, list[float], float]:
    """Train; return the network, the loss history and the relative L2 error on held-out points.

    ``log_every=N`` prints the step, the loss and the elapsed time every N optimiser steps.
    """
    net = xd.mlp([d + 1] + [width] * depth + [1], activation="tanh", xp=torch, seed=seed)
    params = [a.requires_grad_() for a in net.arrays()]
    space = list(range(1, d + 1))

    def loss_on(gen: torch.Generator, n: int) -> torch.Tensor:
        interior, initial, boundary = sample(n, d, gen)
        r = xd.derivatives(net, interior, laplacian=True, coords=space)  # value, gradient, spatial Laplacian
        residual = r.jacobian[:, 0, 0] - r.laplacian[:, 0]  # u_t - Δₓu
        data = torch.cat([initial, boundary])
        return (residual**2).mean() + 10.0 * ((net(data)[:, 0] - exact(data)) ** 2).mean()

    history = fit(
        params,
        loss_on,
        adam_steps=adam_steps,
        lbfgs_iters=lbfgs_iters,
        points=points,
        seed=seed,
        log_every=log_every,
    )
    test, _, _ = sample(4096, d, torch.Generator().manual_seed(seed + 1))
    return net, history, relative_error(net, exact, test)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--adam", type=int, default=500, help="Adam steps, each on freshly drawn points")
    p.add_argument("--lbfgs", type=int, default=800, help="L-BFGS iterations on one fixed sample of points")
    p.add_argument(
        "--points",
        type=int,
        default=512,
        help="points of each kind (interior, initial, boundary) per Adam step; L-BFGS uses 4x as many",
    )
    p.add_argument(
        "--log-every", type=int, default=25, help="print step, loss and elapsed time every N steps (0: quiet)"
    )
    p.add_argument("--out", default="heat.png", help="where to write the plot")
    return p


def main(argv: list[str] | None = None) -> float:
    args = parser().parse_args(argv)
    d = 5
    with Timer() as t:
        net, history, err = solve(
            d, adam_steps=args.adam, lbfgs_iters=args.lbfgs, points=args.points, log_every=args.log_every
        )
    s = torch.linspace(0, 1, 101, dtype=torch.float64)
    tx = torch.full((101, d + 1), 0.5, dtype=torch.float64)
    tx[:, 0], tx[:, 1] = T / 2, s
    with torch.no_grad():
        plot(history, s, net(tx)[:, 0], exact(tx), f"heat PINN, d = {d} (+ time)", f"x_1 at t = {T / 2}", args.out)
    print(
        f"heat d={d}: {t.seconds:.0f} s, final loss {history[-1]:.2e}, relative L2 error {err:.2e} "
        f"on 4096 held-out points; plot in {args.out}"
    )
    return err


if __name__ == "__main__":
    main()
