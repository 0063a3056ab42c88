"""Train a PINN for the 1-D wave equation u_tt = c²u_xx with an indefinite operator (PyTorch backend).

    u_tt − c²u_xx = 0  on x ∈ [0, 1], t ∈ [0, T],
    u(x, 0) = sin(πx),  u_t(x, 0) = 0,  u(0, t) = u(1, t) = 0,

exact solution u*(x, t) = sin(πx) cos(cπt) (a standing wave; c = 1, T = 1/2 by default).
The network takes the points (x, t), and the residual is one call with an indefinite
coefficient matrix,

    r = xd.second_order(net, xt, A=diag(−c², 1))    # Σᵢⱼ aᵢⱼ ∂ᵢⱼu = u_tt − c²u_xx

split inside into its two signed directions (eigenvalues −c² and 1), carried through one sweep
with the value and one second-order row: a few forward passes, no Hessian formed.  The initial
velocity u_t(x, 0) comes from ``xd.derivatives(..., jacobian=True)``.  Adam on fresh
points, then L-BFGS on a fixed sample (``pinn_common.fit``).

Run ``python examples/wave.py``: it prints the relative L2 error on 4096 held-out points
and writes ``wave.png`` (loss curve; u(x, T) against the exact solution).  ``--quick`` is a
seconds-long run.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
from array_api_compat import array_namespace

import xderiv as xd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pinn_common import Timer, fit, plot, quick_args, relative_error, training_parser  # noqa: E402

T = 0.5


def exact(xt, c: float = 1.0):
    """u*(x, t) = sin(πx) cos(cπt), shape (n,); Array API code, so ``xd.function`` takes it."""
    xp = array_namespace(xt)
    return xp.sin(math.pi * xt[..., 0]) * xp.cos(c * math.pi * xt[..., 1])


def wave_operator(c: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A = diag(−c², 1): Σᵢⱼ aᵢⱼ ∂ᵢⱼu = u_tt − c²u_xx for points (x, t); indefinite."""
    return torch.diag(torch.tensor([-(c**2), 1.0], dtype=dtype))


def sample(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Interior points, initial points (t = 0) and boundary points (x = 0 or 1), each (n, 2) as (x, t)."""

    def box(k: int) -> torch.Tensor:
        xt = torch.rand(k, 2, generator=gen, dtype=torch.float64)
        xt[:, 1] *= T
        return xt

    interior, initial, boundary = box(n), box(n), box(n)
    initial[:, 1] = 0.0
    boundary[:, 0] = torch.randint(0, 2, (n,), generator=gen).to(torch.float64)
    return interior, initial, boundary


def solve(
    c: float = 1.0,
    width: int = 32,
    depth: int = 3,
    adam_steps: int = 500,
    lbfgs_iters: int = 1000,
    points: int = 256,
    seed: int = 0,
    log_every: int = 0,
) -> tuple[xd.Sequential, list[float], float]:
    """Train; return the network, the loss history and the relative L2 error on held-out points.

    The residual is divided by π²(1 + c²), the size of each of its terms, so that it weighs
    like the initial and boundary data.  ``log_every=N`` prints the step, the loss and the
    elapsed time every N optimiser steps.
    """
    net = xd.mlp([2] + [width] * depth + [1], activation="tanh", xp=torch, seed=seed)
    params = [a.requires_grad_() for a in net.arrays()]
    A = wave_operator(c)
    scale = math.pi**2 * (1.0 + c**2)

    def loss_on(gen: torch.Generator, n: int) -> torch.Tensor:
        interior, initial, boundary = sample(n, gen)
        residual = xd.second_order(net, interior, A=A)[:, 0] / scale  # (u_tt − c²u_xx) / scale
        r0 = xd.derivatives(net, initial, jacobian=True)  # u and u_t at t = 0, one sweep
        u0, v0 = r0.value[:, 0], r0.jacobian[:, 0, 1]
        data = (u0 - exact(initial, c)) ** 2 + v0**2 + net(boundary)[:, 0] ** 2
        return (residual**2).mean() + 10.0 * data.mean()

    history = fit(
        params,
        loss_on,
        adam_steps=adam_steps,
        lbfgs_iters=lbfgs_iters,
        points=points,
        seed=seed,
        log_every=log_every,
    )
    test, _, _ = sample(4096, torch.Generator().manual_seed(seed + 1))
    return net, history, relative_error(net, lambda p: exact(p, c), test)


def parser() -> argparse.ArgumentParser:
    p = training_parser(
        __doc__,
        adam=500,
        lbfgs=1000,
        points="points of each kind (interior, initial, boundary)",
        quick=(200, 150, 128),
        out="wave.png",
    )
    p.add_argument("--c", type=float, default=1.0, help="wave speed: u_tt = c² u_xx")
    return p


def main(argv: list[str] | None = None) -> float:
    args = quick_args(parser().parse_args(argv))
    with Timer() as t:
        net, history, err = solve(
            args.c,
            args.width,
            args.depth,
            adam_steps=args.adam,
            lbfgs_iters=args.lbfgs,
            points=args.points,
            log_every=args.log_every,
        )
    s = torch.linspace(0, 1, 101, dtype=torch.float64)
    xt = torch.stack([s, torch.full_like(s, T)], dim=1)
    with torch.no_grad():
        title = f"wave u_tt = c²u_xx, c = {args.c:g}"
        plot(history, s, net(xt)[:, 0], exact(xt, args.c), title, f"x at t = {T}", args.out)
    print(
        f"wave c={args.c:g}: {t.seconds:.0f} s, final loss {history[-1]:.2e}, relative L2 error {err:.2e} "
        f"on 4096 held-out points; plot in {args.out}"
    )
    return err


if __name__ == "__main__":
    main()
