"""Train a PINN for the Black–Scholes equation of five correlated assets, diffusion σ(x) per point (PyTorch).

The price V(x, t) of a claim on d = 5 assets following correlated geometric Brownian motions,
dxᵢ = r xᵢ dt + sᵢ xᵢ dWᵢ with corr(dWᵢ, dWⱼ) = ρᵢⱼ, solves backward in time

    V_t + ½ tr(σ(x)σ(x)ᵀ ∇²V) + r x·∇V − r V = 0,   σ(x) = diag(s₁x₁, …, s_dx_d) C,  CCᵀ = ρ,

on x ∈ [1/2, 3/2]^d, t ∈ [0, T], with the payoff V(x, T) at maturity.  For the power claim
with payoff Πᵢ xᵢ^pᵢ the price is known in closed form,

    V*(x, t) = exp(λ (T − t)) Πᵢ xᵢ^pᵢ,   λ = ½ Σᵢⱼ ρᵢⱼ sᵢ sⱼ pᵢ (pⱼ − δᵢⱼ) + r Σᵢ pᵢ − r,

(x ∂ᵢ and xᵢxⱼ ∂ᵢⱼ act on the product as multiplication by pᵢ and pᵢ(pⱼ − δᵢⱼ)), and serves as
the reference and as the data on the faces of the cube.  The network takes the points (x, t),
d + 1 = 6 inputs, and the whole left-hand side is one call:

    xd.second_order(net, xt, b=drift, c=-r, factor=sigma, signs=[0.5] * d)

with ``sigma(xt)`` the per-point factor σ(x) (its time row zero), so A = ½ σσᵀ is never
formed, and ``drift(xt)`` = (r x, 1), whose last entry adds V_t.  Cost: d + 3 forward passes
at every point (the value, the d directions of σ, the drift, one second-order row), no Hessian
formed.  Adam on fresh points, then L-BFGS on a fixed sample (``pinn_common.fit``).

Run ``python examples/black_scholes.py``: it prints the relative L2 error on 4096 held-out
points and writes ``black_scholes.png`` (loss curve; V along the diagonal x = (s, …, s) at
t = 0 against V*).  ``--quick`` is a seconds-long run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from array_api_compat import array_namespace

import xderiv as xd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pinn_common import Timer, fit, plot, quick_args, relative_error, training_parser  # noqa: E402

D = 5
T = 1.0
R = 0.05
LOW, HIGH = 0.5, 1.5
# constants on the CPU whatever torch's default device; moved to the points' device where used
VOL = torch.tensor([0.2, 0.25, 0.3, 0.35, 0.4], dtype=torch.float64, device="cpu")
POWERS = torch.tensor([1.0, 0.5, 1.5, -0.5, 1.0], dtype=torch.float64, device="cpu")
RHO = 0.5 * torch.eye(D, dtype=torch.float64, device="cpu") + 0.5  # correlation 1/2 between every pair
CHOL = torch.linalg.cholesky(RHO)


def rate() -> float:
    """λ of the closed-form price: ½ Σᵢⱼ ρᵢⱼ sᵢsⱼ pᵢ(pⱼ − δᵢⱼ) + r Σᵢ pᵢ − r."""
    p, s = POWERS, VOL
    second = p[:, None] * (p[None, :] - torch.eye(D, dtype=torch.float64, device="cpu"))
    return float(0.5 * (RHO * s[:, None] * s[None, :] * second).sum() + R * p.sum() - R)


def exact(xt):
    """V*(x, t) = exp(λ(T − t) + Σᵢ pᵢ log xᵢ), shape (n,); Array API code, so ``xd.function(exact)`` takes it."""
    xp = array_namespace(xt)
    log_payoff = sum(float(p) * xp.log(xt[..., i]) for i, p in enumerate(POWERS))
    return xp.exp(rate() * (T - xt[..., D]) + log_payoff)


def sigma(xt: torch.Tensor) -> torch.Tensor:
    """The per-point factor: σ(x) = diag(s x) C for the asset rows, zero for the time row; (..., d + 1, d)."""
    x = xt[..., :D]
    rows = (VOL.to(x.device) * x)[..., :, None] * CHOL.to(x.device)  # diag(s x) C
    return torch.cat([rows, torch.zeros_like(rows[..., :1, :])], dim=-2)


def drift(xt: torch.Tensor) -> torch.Tensor:
    """(r x, 1): the drift r x·∇V and, in the time coordinate, V_t; (..., d + 1)."""
    return torch.cat([R * xt[..., :D], torch.ones_like(xt[..., D:])], dim=-1)


def operator(u, xt: torch.Tensor) -> torch.Tensor:
    """V_t + ½ tr(σσᵀ∇²V) + r x·∇V − rV for any network ``u`` at the points ``xt``, shape (n, 1)."""
    return xd.second_order(u, xt, b=drift, c=-R, factor=sigma, signs=[0.5] * D)


def sample(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Interior points, points at maturity (t = T) and points on a face of the cube, each (n, d + 1)."""

    def box(k: int) -> torch.Tensor:
        xt = torch.rand(k, D + 1, generator=gen, dtype=torch.float64)
        xt[:, :D] = LOW + (HIGH - LOW) * xt[:, :D]
        xt[:, D] *= T
        return xt

    interior, final, boundary = box(n), box(n), box(n)
    final[:, D] = T
    face = torch.randint(0, D, (n,), generator=gen)
    side = torch.randint(0, 2, (n,), generator=gen).to(torch.float64)
    boundary[torch.arange(n), face] = LOW + (HIGH - LOW) * side
    return interior, final, boundary


def solve(
    width: int = 32,
    depth: int = 3,
    adam_steps: int = 500,
    lbfgs_iters: int = 500,
    points: int = 256,
    seed: int = 0,
    log_every: int = 0,
) -> tuple[xd.Sequential, list[float], float]:
    """Train; return the network, the loss history and the relative L2 error on held-out points.

    ``log_every=N`` prints the step, the loss and the elapsed time every N optimiser steps.
    """
    net = xd.mlp([D + 1] + [width] * depth + [1], activation="tanh", xp=torch, seed=seed)
    params = [a.requires_grad_() for a in net.arrays()]

    def loss_on(gen: torch.Generator, n: int) -> torch.Tensor:
        interior, final, boundary = sample(n, gen)
        residual = operator(net, interior)[:, 0]
        data = torch.cat([final, boundary])
        return (residual**2).mean() + ((net(data)[:, 0] - exact(data)) ** 2).mean()

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
    return net, history, relative_error(net, exact, test)


def parser() -> argparse.ArgumentParser:
    return training_parser(
        __doc__,
        adam=500,
        lbfgs=500,
        points="points of each kind (interior, maturity, faces)",
        quick=(150, 100, 128),
        out="black_scholes.png",
    )


def main(argv: list[str] | None = None) -> float:
    args = quick_args(parser().parse_args(argv))
    with Timer() as t:
        net, history, err = solve(
            args.width,
            args.depth,
            adam_steps=args.adam,
            lbfgs_iters=args.lbfgs,
            points=args.points,
            log_every=args.log_every,
        )
    s = torch.linspace(LOW, HIGH, 101, dtype=torch.float64)
    xt = torch.cat([s[:, None].expand(101, D), torch.zeros(101, 1, dtype=torch.float64)], dim=1)
    with torch.no_grad():
        title = f"Black–Scholes, {D} correlated assets, σ(x) per point"
        plot(history, s, net(xt)[:, 0], exact(xt), title, "x = (s, ..., s) at t = 0", args.out)
    print(
        f"black-scholes d={D}: {t.seconds:.0f} s, final loss {history[-1]:.2e}, relative L2 error {err:.2e} "
        f"on 4096 held-out points; plot in {args.out}"
    )
    return err


if __name__ == "__main__":
    main()
