"""Train a PINN for the clamped plate Δ²u = f on the unit square with the PyTorch backend.

A fourth-order problem: Δ²u = ∂⁴ₓu + 2∂²ₓ∂²ᵧu + ∂⁴ᵧu = f on [0, 1]², clamped edges
u = ∂u/∂n = 0. Exact solution u*(x, y) = sin²(πx) sin²(πy), so with a = 2π

    f = Δ²u* = (a⁴/4) (4 cos ax cos ay − cos ax − cos ay).

Both boundary conditions hold exactly by construction: u = B·(s·N) with
B = (x(1 − x) y(1 − y))², which vanishes with its gradient on every edge, built
from ``xd.quadratic`` factors (x(1 − x) = ½xᵀAx + cᵀx with A = diag(−2, 0),
c = e₀), N an MLP and s a fixed output scale. The loss is the residual alone,
mean((Δ²u − f)²)/a⁸, with ``xd.biharmonic(u, x)`` exact through the product rule
(one fourth-order forward sweep of N; the polynomial factors' derivatives in
closed form). Adam on fresh points, then L-BFGS on a fixed sample.

Run ``python examples/biharmonic.py``: it prints the relative L2 error on
4096 held-out points and writes ``biharmonic.png`` (loss curve; the slice
y = 1/2 against the exact solution).
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

A = 2.0 * math.pi


def exact(x: torch.Tensor) -> torch.Tensor:
    """u*(x, y) = sin²(πx) sin²(πy), shape (n,)."""
    return (torch.sin(math.pi * x[:, 0]) * torch.sin(math.pi * x[:, 1])) ** 2


def source(x: torch.Tensor) -> torch.Tensor:
    """f = Δ²u* in closed form, shape (n,)."""
    cx, cy = torch.cos(A * x[:, 0]), torch.cos(A * x[:, 1])
    return A**4 / 4.0 * (4.0 * cx * cy - cx - cy)


def clamp_factor(dtype: torch.dtype = torch.float64) -> xd.Product:
    """B = (x(1 − x) y(1 − y))²: zero with its gradient on the edges of the unit square."""
    bump = [
        xd.quadratic(torch.diag(torch.tensor(a, dtype=dtype)), torch.tensor(c, dtype=dtype))
        for a, c in (([-2.0, 0.0], [1.0, 0.0]), ([0.0, -2.0], [0.0, 1.0]))
    ]
    q = bump[0] * bump[1]  # x(1 - x) y(1 - y)
    return q * q


def solve(
    width: int = 32,
    depth: int = 3,
    adam_steps: int = 500,
    lbfgs_iters: int = 500,
    points: int = 256,
    scale: float = 100.0,
    seed: int = 0,
    log_every: int = 0,
) -> tuple[xd.Product, list[float], float]:
    """Train; return the composite u = B·(scale·N), the loss history and the relative L2 error.

    ``scale`` brings N's output to O(1): u*/B runs from π⁴ ≈ 97 at the corners to 256 at the centre.
    """
    net = xd.mlp([2] + [width] * depth + [1], activation="tanh", xp=torch, seed=seed)
    params = [a.requires_grad_() for a in net.arrays()]
    u = clamp_factor() * (scale * net)

    def loss_on(gen: torch.Generator, n: int) -> torch.Tensor:
        x = torch.rand(n, 2, generator=gen, dtype=torch.float64)
        residual = (xd.biharmonic(u, x)[:, 0] - source(x)) / A**4
        return (residual**2).mean()

    history = fit(
        params,
        loss_on,
        adam_steps=adam_steps,
        lbfgs_iters=lbfgs_iters,
        points=points,
        seed=seed,
        log_every=log_every,
    )
    test = torch.rand(4096, 2, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    return u, history, relative_error(u, exact, test)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--adam", type=int, default=500, help="Adam steps, each on freshly drawn points")
    p.add_argument("--lbfgs", type=int, default=500, help="L-BFGS iterations on one fixed sample of points")
    p.add_argument("--points", type=int, default=256, help="points per Adam step; L-BFGS uses 4x as many")
    p.add_argument("--width", type=int, default=32, help="hidden width of N")
    p.add_argument("--depth", type=int, default=3, help="hidden layers of N")
    p.add_argument(
        "--log-every", type=int, default=100, help="print step, loss and elapsed time every N steps (0: quiet)"
    )
    p.add_argument("--out", default="biharmonic.png", help="where to write the plot")
    return p


def main(argv: list[str] | None = None) -> float:
    args = parser().parse_args(argv)
    with Timer() as t:
        u, history, err = solve(
            args.width,
            args.depth,
            adam_steps=args.adam,
            lbfgs_iters=args.lbfgs,
            points=args.points,
            log_every=args.log_every,
        )
    s = torch.linspace(0, 1, 101, dtype=torch.float64)
    x = torch.stack([s, torch.full_like(s, 0.5)], dim=1)
    with torch.no_grad():
        plot(history, s, u(x)[:, 0], exact(x), "clamped plate Δ²u = f, unit square", "x (y = 1/2)", args.out)
    print(
        f"biharmonic (clamped plate): {t.seconds:.0f} s, final loss {history[-1]:.2e}, "
        f"relative L2 error {err:.2e} on 4096 held-out points; plot in {args.out}"
    )
    return err


if __name__ == "__main__":
    main()
