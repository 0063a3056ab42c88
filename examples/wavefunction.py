"""Variational Monte Carlo for N fermions in a 1-D harmonic trap: a determinant wave function through ``xd.function``.

N non-interacting same-spin fermions in V(x) = ½ Σ xᵢ² (ħ = m = ω = 1).  The ansatz is a
Slater determinant of learned orbitals,

    ψ(x₁, …, x_N) = det[φⱼ(xᵢ)],   φⱼ(x) = N(x)ⱼ · exp(−c x²),

with N: R → R^N a small ``xd.mlp`` applied to every particle and a trainable envelope width
c > 0.  ``log_abs_psi(x)`` is written against the Array API, ending in
``xp.linalg.slogdet``; ``xd.derivatives(xd.function(log_abs_psi), x, laplacian=True)``
returns log|ψ|, its gradient and its Laplacian in one forward sweep, exact, and so the
local energy

    E_L = −½ Δψ/ψ + V = −½ (Δ log|ψ| + |∇ log|ψ||²) + V.

Training is plain VMC: walkers sample |ψ|² by Metropolis (a fixed seed: the run is
deterministic), the energy gradient is 2 E[(E_L − E) ∇ log|ψ|] (local energies clipped at
five mean deviations from the median), and Adam takes the steps.  The exact ground state
fills the N lowest oscillator levels, E₀ = Σⱼ (j + ½) = N²/2 (2 for N = 2, 4.5 for N = 3),
and is an eigenstate, so E_L ≡ E₀ there: the zero-variance principle makes var(E_L) a
second measure of the error.  ``exact_log_abs_psi`` (Hermite orbitals) checks the machinery:
its local energy is E₀ at every point.

Run ``python examples/wavefunction.py``: it prints the VMC energy (with its standard error,
from batch means over a final sampling run) against E₀, var(E_L), and the infidelity
1 − |⟨ψ|ψ₀⟩|²/(⟨ψ|ψ⟩⟨ψ₀|ψ₀⟩) on a grid; it writes ``wavefunction.png``.
``--quick`` is a seconds-long run.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
from array_api_compat import array_namespace

import xderiv as xd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pinn_common import Progress, Timer  # noqa: E402


def exact_energy(n: int) -> float:
    """E₀ = Σ_{j<N} (j + ½) = N²/2."""
    return n * n / 2.0


def hermite_orbitals(x, n: int):
    """φⱼ(xᵢ) = Hⱼ(xᵢ) exp(−xᵢ²/2), j < n, as a matrix (..., N, n); any Array API namespace."""
    xp = array_namespace(x)
    h = [xp.ones_like(x), 2.0 * x]
    for j in range(2, n):
        h.append(2.0 * x * h[-1] - 2.0 * (j - 1) * h[-2])
    envelope = xp.exp(-0.5 * x * x)
    return xp.stack([hj * envelope for hj in h[:n]], axis=-1)


def exact_log_abs_psi(x):
    """log|ψ₀| of the ground state, x of shape (..., N)."""
    xp = array_namespace(x)
    return xp.linalg.slogdet(exact_orbitals(x))[1]


class Ansatz:
    """ψ = det[N(xᵢ)ⱼ exp(−c xᵢ²)]: a per-particle ``xd.mlp`` and a trainable envelope width c = softplus(ρ)."""

    def __init__(self, particles: int = 2, width: int = 16, depth: int = 2, c0: float = 0.3, seed: int = 0) -> None:
        self.particles = particles
        self.net = xd.mlp([1] + [width] * depth + [particles], activation="tanh", xp=torch, seed=seed)
        self.rho = torch.tensor(math.log(math.expm1(c0)), dtype=torch.float64)  # softplus(ρ) = c0
        self.params = [a.requires_grad_() for a in [*self.net.arrays(), self.rho]]

    def envelope_width(self) -> float:
        return float(torch.nn.functional.softplus(self.rho.detach()))

    def orbitals(self, x):
        """The N × N matrix φⱼ(xᵢ), shape (..., N, N); x of shape (..., N)."""
        xp = array_namespace(x)
        c = torch.nn.functional.softplus(self.rho)  # a constant of the jet: gradients reach ρ
        xi = x[..., None]  # every particle is a point of R¹
        return self.net(xi) * xp.exp(-c * xi * xi)

    def log_abs_psi(self, x):
        """log|ψ(x)|, shape (...,), written against the Array API (slogdet of the orbital matrix)."""
        xp = array_namespace(x)
        return xp.linalg.slogdet(self.orbitals(x))[1]


def local_energy(log_abs_psi, x: torch.Tensor) -> torch.Tensor:
    """E_L = −½ (Δ log|ψ| + |∇ log|ψ||²) + ½ |x|², from one ``xd.derivatives`` sweep; shape (n,)."""
    d = xd.derivatives(xd.function(log_abs_psi), x, laplacian=True)
    grad = d.jacobian.reshape(x.shape)
    lap = d.laplacian.reshape(x.shape[:-1])
    return -0.5 * (lap + (grad * grad).sum(-1)) + 0.5 * (x * x).sum(-1)


class Walkers:
    """Metropolis walkers sampling |ψ|²: Gaussian proposals of all coordinates at once, a seeded stream."""

    def __init__(self, log_abs_psi, n: int, particles: int, step: float = 0.6, seed: int = 0) -> None:
        self.log_abs_psi = log_abs_psi
        self.gen = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, particles, generator=self.gen, dtype=torch.float64)
        self.step_size = step
        self.accepted = 0.0

    @torch.no_grad()
    def advance(self, steps: int) -> torch.Tensor:
        logp = 2.0 * self.log_abs_psi(self.x)
        acc = 0.0
        for _ in range(steps):
            proposal = self.x + self.step_size * torch.randn(self.x.shape, generator=self.gen, dtype=self.x.dtype)
            logq = 2.0 * self.log_abs_psi(proposal)
            u = torch.rand(self.x.shape[0], generator=self.gen, dtype=self.x.dtype)
            take = torch.log(u) < logq - logp
            self.x = torch.where(take[:, None], proposal, self.x)
            logp = torch.where(take, logq, logp)
            acc += float(take.double().mean())
        self.accepted = acc / max(steps, 1)
        return self.x


def clipped(e: torch.Tensor, width: float = 5.0) -> torch.Tensor:
    """Local energies clipped to median ± width · mean absolute deviation (outliers near the nodes)."""
    med = e.median()
    mad = (e - med).abs().mean()
    return e.clamp(med - width * mad, med + width * mad)


def exact_orbitals(x):
    """The Hermite orbital matrix of the ground state, shape (..., N, N)."""
    return hermite_orbitals(x, x.shape[-1])


def signed_psi(orbitals, x: torch.Tensor) -> torch.Tensor:
    """ψ(x) = det[φⱼ(xᵢ)] with its sign, from the orbital matrix function ``orbitals``."""
    sign, logabs = torch.linalg.slogdet(orbitals(x))
    return sign * torch.exp(logabs)


def infidelity(orbitals, particles: int, points: int = 0) -> float:
    """1 − ⟨ψ|ψ₀⟩²/(⟨ψ|ψ⟩⟨ψ₀|ψ₀⟩) by the trapezoid rule on [−L, L]^N (N ≤ 3); nan above."""
    if particles > 3:
        return float("nan")
    points = points or {1: 401, 2: 161, 3: 61}[particles]
    length = 4.5 + 0.5 * particles
    s = torch.linspace(-length, length, points, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(*[s] * particles, indexing="ij"), dim=-1).reshape(-1, particles)
    with torch.no_grad():
        psi, psi0 = signed_psi(orbitals, grid), signed_psi(exact_orbitals, grid)
    overlap = (psi * psi0).sum() ** 2 / ((psi * psi).sum() * (psi0 * psi0).sum())
    return float(1.0 - overlap)


def solve(
    particles: int = 2,
    width: int = 16,
    depth: int = 2,
    steps: int = 400,
    walkers: int = 512,
    mcmc_steps: int = 10,
    burn_in: int = 200,
    lr: float = 1e-2,
    eval_iters: int = 100,
    seed: int = 0,
    log_every: int = 0,
) -> dict:
    """Train the determinant ansatz by VMC; return energies, variances and the final estimate.

    The result has ``ansatz``, ``energy`` (per step: the mean clipped local energy of the walkers),
    ``variance`` (per step: var(E_L), unclipped), ``final_energy`` and ``final_stderr`` (mean of
    E_L over ``eval_iters`` further sampling rounds, standard error by batch means), ``final_variance``,
    ``infidelity``, ``exact`` (E₀), ``acceptance`` and ``seconds``.
    """
    ansatz = Ansatz(particles, width, depth, seed=seed)
    chain = Walkers(ansatz.log_abs_psi, walkers, particles, seed=seed + 1)
    opt = torch.optim.Adam(ansatz.params, lr=lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.1 ** (1.0 / max(steps, 1)))
    progress = Progress(log_every)
    e0 = exact_energy(particles)
    progress.say(
        f"VMC, N = {particles} fermions: {sum(p.numel() for p in ansatz.params)} parameters, {walkers} walkers, "
        f"{steps} steps of {mcmc_steps} Metropolis moves; exact E0 = {e0:g}"
    )
    energies: list[float] = []
    variances: list[float] = []
    with Timer() as t:
        chain.advance(burn_in)
        for step in range(1, steps + 1):
            x = chain.advance(mcmc_steps)
            with torch.no_grad():
                e_local = local_energy(ansatz.log_abs_psi, x)
            e_clip = clipped(e_local)
            centred = e_clip - e_clip.mean()
            loss = 2.0 * (centred * ansatz.log_abs_psi(x)).mean()  # its gradient is the energy gradient
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            energies.append(float(e_clip.mean()))
            variances.append(float(e_local.var()))
            if log_every > 0 and (step == 1 or step % log_every == 0 or step == steps):
                progress.say(
                    f"vmc {step:>{len(str(steps))}}/{steps}  E {energies[-1]:.4f} (exact {e0:g})  "
                    f"var(E_L) {variances[-1]:.2e}  {time.perf_counter() - progress.t0:6.1f} s"
                )
        means, varis = [], []
        with torch.no_grad():
            for _ in range(eval_iters):
                e_local = local_energy(ansatz.log_abs_psi, chain.advance(mcmc_steps))
                means.append(float(e_local.mean()))
                varis.append(float(e_local.var()))
    batch = torch.tensor(means, dtype=torch.float64)
    stderr = float(batch.std() / math.sqrt(len(means))) if len(means) > 1 else float("nan")
    return {
        "ansatz": ansatz,
        "energy": energies,
        "variance": variances,
        "final_energy": float(batch.mean()) if means else float("nan"),
        "final_stderr": stderr,
        "final_variance": sum(varis) / len(varis) if varis else float("nan"),
        "infidelity": infidelity(ansatz.orbitals, particles),
        "exact": e0,
        "acceptance": chain.accepted,
        "seconds": t.seconds,
    }


def plot(result: dict, path: str) -> None:
    """Energy and var(E_L) per step; a slice of ψ against the exact ground state."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ansatz, e0, n = result["ansatz"], result["exact"], result["ansatz"].particles
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(14, 4))
    a.plot([e - e0 for e in result["energy"]], lw=0.8)
    a.axhline(0.0, color="k", ls="--", lw=0.8)
    a.set_yscale("symlog", linthresh=1e-3)
    a.set(xlabel="step", ylabel="E − E0 (symlog)", title=f"{n} fermions, 1-D harmonic trap: E0 = {e0:g}")
    b.semilogy(result["variance"], lw=0.8)
    b.set(xlabel="step", ylabel="var(E_L)", title="local-energy variance (0 at an eigenstate)")
    s = torch.linspace(-4, 4, 201, dtype=torch.float64)
    others = torch.tensor([0.5, -0.8, 1.3, -1.6, 2.0][: n - 1], dtype=torch.float64)  # fixed particles 2..N
    x = torch.cat([s[:, None], others.expand(201, n - 1)], dim=1)
    with torch.no_grad():
        psi, psi0 = signed_psi(ansatz.orbitals, x), signed_psi(exact_orbitals, x)
    psi = psi * (psi @ psi0).sign() * psi0.norm() / psi.norm()  # the same sign and norm on the slice
    c.plot(s.numpy(), psi.numpy(), label="VMC ansatz")
    c.plot(s.numpy(), psi0.numpy(), "--", label="exact")
    fixed = ", ".join(f"x_{i + 2} = {v:g}" for i, v in enumerate(others.tolist()))
    c.set(xlabel="x_1", ylabel="ψ (scaled)", title=f"ψ(x_1, ...) with {fixed}")
    c.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--particles", type=int, default=2, help="number of same-spin fermions N")
    p.add_argument("--steps", type=int, default=400, help="VMC optimisation steps")
    p.add_argument("--walkers", type=int, default=512, help="Metropolis walkers")
    p.add_argument("--mcmc-steps", type=int, default=10, help="Metropolis moves between optimisation steps")
    p.add_argument("--burn-in", type=int, default=200, help="Metropolis moves before the first step")
    p.add_argument("--width", type=int, default=16, help="hidden width of the orbital network")
    p.add_argument("--depth", type=int, default=2, help="hidden layers of the orbital network")
    p.add_argument("--lr", type=float, default=1e-2, help="initial Adam step (decays tenfold over the run)")
    p.add_argument("--eval-iters", type=int, default=100, help="sampling rounds for the final energy estimate")
    p.add_argument("--seed", type=int, default=0, help="seed of weights and walkers")
    p.add_argument("--quick", action="store_true", help="a seconds-long run: 60 steps, 128 walkers")
    p.add_argument("--log-every", type=int, default=50, help="print step, energy and var(E_L) every N steps (0: quiet)")
    p.add_argument("--out", default="wavefunction.png", help="where to write the plot")
    return p


def main(argv: list[str] | None = None) -> dict:
    args = parser().parse_args(argv)
    if args.quick:
        args.steps, args.walkers, args.burn_in, args.eval_iters = 60, 128, 50, 20
    r = solve(
        args.particles,
        args.width,
        args.depth,
        steps=args.steps,
        walkers=args.walkers,
        mcmc_steps=args.mcmc_steps,
        burn_in=args.burn_in,
        lr=args.lr,
        eval_iters=args.eval_iters,
        seed=args.seed,
        log_every=args.log_every,
    )
    plot(r, args.out)
    err = r["final_energy"] - r["exact"]
    print(
        f"VMC, {args.particles} fermions in a 1-D harmonic trap: {r['seconds']:.0f} s, "
        f"energy {r['final_energy']:.5f} +- {r['final_stderr']:.5f} (exact {r['exact']:g}, error {err:+.1e}), "
        f"var(E_L) {r['final_variance']:.1e}, infidelity {r['infidelity']:.1e}, "
        f"envelope c = {r['ansatz'].envelope_width():.3f}, acceptance {r['acceptance']:.2f}; plot in {args.out}"
    )
    return r


if __name__ == "__main__":
    main()
