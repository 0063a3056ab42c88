"""Helmholtz PINN with torch-module architectures: the modified MLP and a PirateNet, through ``xd.function``.

The 2-D Helmholtz benchmark of the PirateNet paper (Wang, Li, Chen & Perdikaris, 2024), reduced:

    Δu + k²u = q  on [-1, 1]²,   u = 0 on the boundary,
    u*(x, y) = sin(a₁πx) sin(a₂πy),   q = (k² − (a₁² + a₂²)π²) u*,

with k = 1 and (a₁, a₂) = (1, 2) by default (the paper's a₂ = 4 needs far longer training
than a 2-core CPU allows; ``--a2 4`` runs it).  Two architectures from the PINN literature
are written as ordinary torch ``nn.Module`` s:

- the **modified MLP** of Wang, Teng & Perdikaris (2021): two encoders U = σ(xW_U + b_U),
  V = σ(xW_V + b_V) gate every hidden layer, Z = σ(HW + b), H ← (1 − Z)⊙U + Z⊙V;
- a **PirateNet**: random Fourier features γ(x) = [cos(xB), sin(xB)], the same U, V gates,
  and adaptive residual blocks x' = α·f(x) + (1 − α)·x of three gated layers each, with a
  trainable α per block initialised at 0 (so the untrained network is linear in γ(x)).

xderiv differentiates them without any xderiv-specific layer: ``graph_function(module)``
translates ``forward`` to the Array API and ``xd.function`` makes it a network every operator
takes.  The boundary condition is exact, u = φ·N with φ = (1 − x²)(1 − y²) built from
``xd.quadratic`` factors, so the loss is the PDE residual alone, mean((Δu + k²u − q)²)/s²
(s = (a₁² + a₂²)π² normalises it), with Δu from ``xd.laplacian(u, x)``.  Adam with an
exponentially decaying step on fresh uniform points; a plain ``xd.mlp`` of the same width
is trained the same way for comparison.

Run ``python examples/modified_mlp.py``: it prints the relative L2 error of each network on
a 101 × 101 grid against u* and writes ``modified_mlp.png`` (loss and error curves, the
exact solution and each network's pointwise error).  ``--quick`` is a seconds-long run.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
from torch import nn

import xderiv as xd
from xderiv.interop.torch_graph import graph_function

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pinn_common import Progress, Timer  # noqa: E402

NETWORKS = ("modified", "pirate", "mlp")
LABELS = {"modified": "modified MLP", "pirate": "PirateNet", "mlp": "plain MLP (xd.mlp)"}


class ModifiedMLP(nn.Module):
    """Wang, Teng & Perdikaris (2021): every hidden layer mixes two input encoders U and V."""

    def __init__(self, d: int = 2, width: int = 64, depth: int = 4) -> None:
        super().__init__()
        self.enc_u = nn.Linear(d, width)
        self.enc_v = nn.Linear(d, width)
        self.hidden = nn.ModuleList([nn.Linear(d if i == 0 else width, width) for i in range(depth)])
        self.out = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = torch.tanh(self.enc_u(x))
        v = torch.tanh(self.enc_v(x))
        h = x
        for layer in self.hidden:
            z = torch.tanh(layer(h))
            h = (1 - z) * u + z * v
        return self.out(h)


class PirateBlock(nn.Module):
    """Three gated dense layers f(x), then the adaptive skip x' = α f(x) + (1 − α) x, α = 0 at start."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.dense = nn.ModuleList([nn.Linear(width, width) for _ in range(3)])
        self.alpha = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        h = x
        for i, layer in enumerate(self.dense):
            z = torch.tanh(layer(h))
            h = z * u + (1 - z) * v if i < 2 else z  # the last layer of the block is ungated
        return self.alpha * h + (1 - self.alpha) * x


class PirateNet(nn.Module):
    """Random Fourier features, U/V gates and adaptive residual blocks (Wang, Li, Chen & Perdikaris 2024)."""

    def __init__(self, d: int = 2, width: int = 64, blocks: int = 2, fourier_scale: float = 1.0) -> None:
        super().__init__()
        if width % 2:
            raise ValueError(f"PirateNet: width must be even (cos and sin features), got {width}")
        self.register_buffer("B", fourier_scale * torch.randn(d, width // 2))
        self.enc_u = nn.Linear(width, width)
        self.enc_v = nn.Linear(width, width)
        self.blocks = nn.ModuleList([PirateBlock(width) for _ in range(blocks)])
        self.out = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xb = x @ self.B
        h = torch.cat([torch.cos(xb), torch.sin(xb)], dim=-1)  # random Fourier features
        u = torch.tanh(self.enc_u(h))
        v = torch.tanh(self.enc_v(h))
        for block in self.blocks:
            h = block(h, u, v)
        return self.out(h)


def exact(x: torch.Tensor, a1: float = 1.0, a2: float = 2.0) -> torch.Tensor:
    """u*(x, y) = sin(a₁πx) sin(a₂πy), shape (n,)."""
    return torch.sin(a1 * math.pi * x[..., 0]) * torch.sin(a2 * math.pi * x[..., 1])


def source(x: torch.Tensor, a1: float = 1.0, a2: float = 2.0, k: float = 1.0) -> torch.Tensor:
    """q = Δu* + k²u* = (k² − (a₁² + a₂²)π²) u*, shape (n,)."""
    return (k**2 - (a1**2 + a2**2) * math.pi**2) * exact(x, a1, a2)


def boundary_factor(dtype: torch.dtype = torch.float64) -> xd.Product:
    """φ = (1 − x²)(1 − y²), zero on the edges of [-1, 1]²: a product of two ``xd.quadratic`` s."""
    return xd.quadratic(torch.diag(torch.tensor([-2.0, 0.0], dtype=dtype)), b=1.0) * xd.quadratic(
        torch.diag(torch.tensor([0.0, -2.0], dtype=dtype)), b=1.0
    )


def build(kind: str, width: int = 64, depth: int = 4, seed: int = 0) -> tuple[xd.Product, list[torch.Tensor]]:
    """u = φ·N for the network ``kind`` (``modified``, ``pirate``, ``mlp``); its trainable tensors.

    ``depth`` is the number of hidden layers; a PirateNet gets ``depth // 2`` blocks of three layers.
    """
    if kind == "mlp":
        net = xd.mlp([2] + [width] * depth + [1], activation="tanh", xp=torch, seed=seed)
        params = [a.requires_grad_() for a in net.arrays()]
    else:
        with torch.random.fork_rng():  # torch's initialisers, seeded without touching the global stream
            torch.manual_seed(seed)
            module = ModifiedMLP(2, width, depth) if kind == "modified" else PirateNet(2, width, max(depth // 2, 1))
        module = module.double()
        net = xd.function(graph_function(module), in_features=2, out_features=1)
        params = list(module.parameters())
    return boundary_factor() * net, params


def solve(
    kind: str = "modified",
    width: int = 64,
    depth: int = 4,
    steps: int = 2000,
    points: int = 256,
    lr: float = 2e-3,
    decay: float = 0.1,
    a1: float = 1.0,
    a2: float = 2.0,
    k: float = 1.0,
    seed: int = 0,
    log_every: int = 0,
    eval_every: int = 100,
    compiled: bool = False,
) -> dict:
    """Train u = φ·N with Adam (step ``lr`` decaying to ``decay·lr``); return what happened.

    ``compiled``: the Laplacian by ``xd.compile`` (same numbers; a one-off compile, then faster steps).

    The result has ``u``, ``history`` (loss per step), ``errors`` ((step, relative L2 error on the
    test grid) every ``eval_every`` steps, step 0 included), ``error`` (the final one) and ``seconds``.
    """
    u, params = build(kind, width, depth, seed)
    scale = (a1**2 + a2**2) * math.pi**2
    gen = torch.Generator().manual_seed(seed)
    s = torch.linspace(-1, 1, 101, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(s, s, indexing="ij"), dim=-1).reshape(-1, 2)
    want = exact(grid, a1, a2)

    def error() -> float:
        with torch.no_grad():
            return float(torch.linalg.norm(u(grid)[:, 0] - want) / torch.linalg.norm(want))

    # xd.compile: the Laplacian traced once (make_fx, then torch.compile) and reused at every step, which
    # draws the same number of points; the first step pays the compile
    laplacian = xd.compile(xd.laplacian, u) if compiled else (lambda x: xd.laplacian(u, x))
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=decay ** (1.0 / max(steps, 1)))
    progress = Progress(log_every)
    progress.say(f"{LABELS[kind]}: {sum(p.numel() for p in params)} weights, {steps} Adam steps on {points} points")
    history: list[float] = []
    errors = [(0, error())]
    with Timer() as t:
        for step in range(1, steps + 1):
            x = 2.0 * torch.rand(points, 2, generator=gen, dtype=torch.float64) - 1.0
            residual = laplacian(x)[:, 0] + k**2 * u(x)[:, 0] - source(x, a1, a2, k)
            loss = ((residual / scale) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            history.append(loss.item())
            if step % eval_every == 0 or step == steps:
                errors.append((step, error()))
            progress.step("adam", step, steps, history[-1], f"  rel-L2 {errors[-1][1]:.2e}")
    return {"kind": kind, "u": u, "history": history, "errors": errors, "error": errors[-1][1], "seconds": t.seconds}


def plot(results: list[dict], a1: float, a2: float, path: str) -> None:
    """Loss and error curves, the exact solution, and each network's pointwise error on the grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(results)
    fig, axes = plt.subplots(2, max(n, 3), figsize=(4.2 * max(n, 3), 7.5))
    top, bottom = axes
    for r in results:
        top[0].semilogy(r["history"], label=LABELS[r["kind"]], lw=0.8)
        top[1].semilogy(*zip(*r["errors"]), "o-", ms=3, label=LABELS[r["kind"]])
    top[0].set(xlabel="Adam step", ylabel="residual loss", title=f"Helmholtz, a = ({a1:g}, {a2:g})")
    top[1].set(xlabel="Adam step", ylabel="relative L2 error", title="error against u*")
    top[0].legend()
    top[1].legend()
    s = torch.linspace(-1, 1, 101, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(s, s, indexing="ij"), dim=-1)
    want = exact(grid, a1, a2)
    im = top[2].imshow(want.T.numpy(), origin="lower", extent=(-1, 1, -1, 1), cmap="RdBu_r")
    top[2].set(title="exact u*", xlabel="x", ylabel="y")
    fig.colorbar(im, ax=top[2])
    for ax in top[3:]:
        ax.axis("off")
    for ax, r in zip(bottom, results):
        with torch.no_grad():
            err = (r["u"](grid.reshape(-1, 2))[:, 0].reshape(101, 101) - want).abs()
        im = ax.imshow(err.T.numpy(), origin="lower", extent=(-1, 1, -1, 1), cmap="viridis")
        ax.set(title=f"|u − u*|, {LABELS[r['kind']]}\nrel. L2 {r['error']:.1e}", xlabel="x", ylabel="y")
        fig.colorbar(im, ax=ax)
    for ax in bottom[n:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--nets", default="modified,pirate,mlp", help="comma-separated networks: modified, pirate, mlp")
    p.add_argument("--steps", type=int, default=2000, help="Adam steps, each on freshly drawn points")
    p.add_argument("--points", type=int, default=256, help="collocation points per step")
    p.add_argument("--width", type=int, default=64, help="hidden width (PirateNet: Fourier features too)")
    p.add_argument("--depth", type=int, default=4, help="hidden layers (PirateNet: depth // 2 blocks of three)")
    p.add_argument("--lr", type=float, default=2e-3, help="initial Adam step")
    p.add_argument("--decay", type=float, default=0.1, help="the step decays exponentially to decay * lr")
    p.add_argument("--a1", type=float, default=1.0, help="u* = sin(a1 pi x) sin(a2 pi y)")
    p.add_argument("--a2", type=float, default=2.0, help="u* = sin(a1 pi x) sin(a2 pi y); the paper uses 4")
    p.add_argument("--k", type=float, default=1.0, help="wave number in Δu + k²u = q")
    p.add_argument("--seed", type=int, default=0, help="seed of weights and points")
    p.add_argument(
        "--quick", action="store_true", help="a seconds-long run: 150 steps of 64 points, width 32, depth 2, lr 1e-2"
    )
    p.add_argument(
        "--log-every", type=int, default=100, help="print step, loss and elapsed time every N steps (0: quiet)"
    )
    p.add_argument("--eval-every", type=int, default=100, help="relative L2 error on the grid every N steps")
    p.add_argument(
        "--compile",
        action="store_true",
        help="the Laplacian by xd.compile: the same numbers after a compile of 10-30 s; pays at larger batches "
        "(at 256 points a step takes about as long as eager: 20 vs 22 ms on one core)",
    )
    p.add_argument("--out", default="modified_mlp.png", help="where to write the plot")
    return p


def main(argv: list[str] | None = None) -> list[dict]:
    args = parser().parse_args(argv)
    if args.quick:
        args.steps, args.points, args.width, args.depth, args.lr = 150, 64, 32, 2, 1e-2
        args.eval_every = min(args.eval_every, 50)
    kinds = [n.strip() for n in args.nets.split(",") if n.strip()]
    for kind in kinds:
        if kind not in NETWORKS:
            raise SystemExit(f"unknown network {kind!r}: choose from {', '.join(NETWORKS)}")
    results = []
    for kind in kinds:
        r = solve(
            kind,
            args.width,
            args.depth,
            steps=args.steps,
            points=args.points,
            lr=args.lr,
            decay=args.decay,
            a1=args.a1,
            a2=args.a2,
            k=args.k,
            seed=args.seed,
            log_every=args.log_every,
            eval_every=args.eval_every,
            compiled=args.compile,
        )
        print(
            f"{LABELS[r['kind']]}: {r['seconds']:.0f} s, final loss {r['history'][-1]:.2e}, "
            f"relative L2 error {r['error']:.2e} (untrained {r['errors'][0][1]:.2e}) on a 101 x 101 grid",
            flush=True,
        )
        results.append(r)
    plot(results, args.a1, args.a2, args.out)
    print(f"Helmholtz a = ({args.a1:g}, {args.a2:g}), k = {args.k:g}: plot in {args.out}")
    return results


if __name__ == "__main__":
    main()
