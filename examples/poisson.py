"""Train a PINN for -Δu = f on the unit cube in d = 10 with the PyTorch backend.

Exact solution u(x) = (1/d) Σ sin(π x_i), so f = π² u, with Dirichlet data u on
the faces.  The loss is the mean squared PDE residual, built from
``xd.laplacian(net, x)`` (exact, no Hessian formed), plus the boundary misfit;
Adam and then L-BFGS train the weights *through* xderiv's recursions.

Run ``python examples/poisson.py``; it prints the relative L2 error on 4096
held-out points and writes ``poisson.png`` (loss curve; a slice of the
solution against the exact one).

``--hard-bc`` solves -Δu = f on the unit *ball* instead, with the boundary
condition imposed exactly: u = g + φ·N with φ = 1 − ‖x‖² (``xd.quadratic``) and
g a fixed network carrying the boundary data, so the loss is the PDE residual
alone.  The exact solution there is u* = g + φ·S with S(x) = (1/d) Σ sin(x_i)
(itself an xderiv network), and f = −Δu* is computed exactly by xderiv.
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
    return net, history, relative_error(net, exact, test)


def ball_points(n: int, d: int, gen: torch.Generator) -> torch.Tensor:
    """Uniform points in the unit ball of R^d."""
    g = torch.randn(n, d, generator=gen, dtype=torch.float64)
    r = torch.rand(n, 1, generator=gen, dtype=torch.float64) ** (1.0 / d)
    return r * g / torch.linalg.norm(g, dim=1, keepdim=True)


def solve_hard_bc(
    d: int = 10,
    width: int = 32,
    depth: int = 2,
    adam_steps: int = 500,
    lbfgs_iters: int = 1500,
    points: int = 512,
    seed: int = 0,
    log_every: int = 0,
) -> tuple[xd.Sum, list[float], float]:
    """-Δu = f on the unit ball with u = g + φ·N: the boundary condition holds exactly, the loss is the residual.

    Returns the composite ``u``, the loss history and the relative L2 error on held-out points.
    """
    phi = xd.quadratic(-2.0 * torch.eye(d, dtype=torch.float64), b=1.0)  # 1 - |x|^2, zero on the sphere
    g = xd.mlp([d, 8, 1], activation="tanh", xp=torch, seed=seed + 100)  # boundary data, fixed
    mean_sin = xd.Sequential(
        xd.Dense(torch.eye(d, dtype=torch.float64), activation="sin"),
        xd.Dense(torch.full((d, 1), 1.0 / d, dtype=torch.float64)),
    )
    exact_u = g + phi * mean_sin  # u* = g + φ S, equal to g on the sphere
    net = xd.mlp([d] + [width] * depth + [1], activation="tanh", xp=torch, seed=seed)
    params = [a.requires_grad_() for a in net.arrays()]
    u = g + phi * net

    def loss_on(gen: torch.Generator, n: int) -> torch.Tensor:
        x = ball_points(n, d, gen)
        f = -xd.laplacian(exact_u, x)  # exact right-hand side
        return ((xd.laplacian(u, x) + f) ** 2).mean()  # -Δu - f; no boundary term needed

    history = fit(
        params,
        loss_on,
        adam_steps=adam_steps,
        lbfgs_iters=lbfgs_iters,
        points=points,
        seed=seed,
        log_every=log_every,
    )
    test = ball_points(4096, d, torch.Generator().manual_seed(seed + 1))
    return u, history, relative_error(u, exact_u, test)


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
    p.add_argument(
        "--hard-bc",
        action="store_true",
        help="the unit ball with u = g + (1 - |x|^2) N: the boundary condition holds exactly",
    )
    p.add_argument("--out", default="poisson.png", help="where to write the plot")
    return p


def main(argv: list[str] | None = None) -> float:
    args = parser().parse_args(argv)
    d = 10
    train = solve_hard_bc if args.hard_bc else solve
    with Timer() as t:
        net, history, err = train(
            d, adam_steps=args.adam, lbfgs_iters=args.lbfgs, points=args.points, log_every=args.log_every
        )
    s = torch.linspace(0, 1, 101, dtype=torch.float64)
    if args.hard_bc:  # along the x_1 axis from the centre to the sphere
        x = torch.zeros((101, d), dtype=torch.float64)
        x[:, 0] = s
        phi = 1.0 - (x * x).sum(-1)
        with torch.no_grad():
            want = net.parts[0](x)[:, 0] + phi * torch.sin(x).mean(-1)
            plot(history, s, net(x)[:, 0], want, f"Poisson, hard BC, unit ball d = {d}", "x_1 (others 0)", args.out)
    else:
        x = torch.full((101, d), 0.5, dtype=torch.float64)
        x[:, 0] = s
        with torch.no_grad():
            plot(history, s, net(x)[:, 0], exact(x), f"Poisson PINN, d = {d}", "x_1 (others 0.5)", args.out)
    print(
        f"Poisson{' (hard BC, unit ball)' if args.hard_bc else ''} d={d}: {t.seconds:.0f} s, final loss "
        f"{history[-1]:.2e}, relative L2 error {err:.2e} on 4096 held-out points; plot in {args.out}"
    )
    return err


if __name__ == "__main__":
    main()
