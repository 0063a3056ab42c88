"""High-dimensional PINNs with randomized Laplacians: the SDGD/STDE benchmark on the unit ball.

Exact solution (inseparable, every coordinate coupled to the next one)

    u*(x) = (1 - ‖x‖²) Σ_{i=1}^{d-1} c_i sin(x_i + cos(x_{i+1}) + x_{i+1} cos(x_i)),   c_i ~ N(0, 1),

on the unit ball in d dimensions, for three equations whose source g is computed exactly
from the closed-form Laplacian of u* (:func:`exact_laplacian`):

    poisson       Δu = g
    allen-cahn    Δu + u - u³ = g
    sine-gordon   Δu + sin u = g

The boundary condition u = 0 on the sphere is built in: u_θ = φ · (√d · N_θ) with
φ(x) = 1 - ‖x‖² = ``xd.quadratic(-2 * ones(d), b=1.0)`` (a diagonal quadratic: O(d) per
point; ``-2 * I`` would be a d x d matrix) and N_θ an MLP whose first layer sees
√(d/2)-scaled weights (the points have ‖x‖ ≤ 1, so each coordinate is O(1/√d)).  The loss
is the mean squared PDE residual (divided by d²) at fresh uniform points of the ball each
step, with Δu_θ from ``xd.laplacian(u, x, estimator=..., samples=k, seed=step)``: one set
of random directions per step, shared by the loss and its weight gradient.

``--compare`` times one training step (loss, weight gradient, Adam update) of every
estimator side by side at the same batch and sample count, in xderiv and written with
torch.func (HVPs by forward-over-reverse ``jvp(grad(u))`` for HTE and SDGD, 2-jets by
forward-over-forward ``jvp(jvp(u))`` for STDE, d HVPs for the exact Laplacian).

Run ``python examples/high_dim.py --d 1000`` (training) or ``--compare``; it prints the
relative L2 error on held-out points of the ball, the wall time and the peak memory, and
writes a plot of the loss and error curves under examples/output/ (when matplotlib is
installed).
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

import xderiv as xd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pinn_common import Progress  # noqa: E402

EQUATIONS = ("poisson", "allen-cahn", "sine-gordon")
ESTIMATORS = ("hutchinson", "gaussian", "sdgd", "stde", "exact")
OUTPUT = Path(__file__).resolve().parent / "output"


# --------------------------------------------------------------------------- the exact solution


def coefficients(d: int, seed: int, dtype: torch.dtype) -> torch.Tensor:
    """c_1, ..., c_{d-1} ~ N(0, 1)."""
    return torch.randn(d - 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def _pieces(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """θ_i = a + cos b + b cos a for a = x_i, b = x_{i+1}, and its partial derivatives."""
    a, b = x[..., :-1], x[..., 1:]
    sx, cx = torch.sin(x), torch.cos(x)  # once per coordinate: b is a shifted by one
    sa, ca, sb, cb = sx[..., :-1], cx[..., :-1], sx[..., 1:], cx[..., 1:]
    theta = a + cb + b * ca
    ta, tb = 1.0 - b * sa, ca - sb  # ∂θ/∂a, ∂θ/∂b
    taa, tbb = -b * ca, -cb  # ∂²θ/∂a², ∂²θ/∂b²
    return a, b, theta, ta, tb, taa, tbb


def exact_solution(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """u*(x) = φ(x) ψ(x), φ = 1 - ‖x‖², ψ = Σ c_i sin θ_i; shape x.shape[:-1]."""
    theta = _pieces(x)[2]
    return (1.0 - (x * x).sum(-1)) * (c * torch.sin(theta)).sum(-1)


def exact_laplacian(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Δu* in closed form, O(d) per point.

    With ψ = Σ c_i sin θ_i and θ_i a function of (a, b) = (x_i, x_{i+1}) only,

        Δ sin θ = -sin θ (θ_a² + θ_b²) + cos θ (θ_aa + θ_bb),   x·∇ sin θ = cos θ (a θ_a + b θ_b),

    and Δ(φψ) = φ Δψ + 2 ∇φ·∇ψ + ψ Δφ = φ Δψ - 4 x·∇ψ - 2 d ψ.
    """
    a, b, theta, ta, tb, taa, tbb = _pieces(x)
    s, co = torch.sin(theta), torch.cos(theta)
    psi = (c * s).sum(-1)
    lap_psi = (c * (co * (taa + tbb) - s * (ta * ta + tb * tb))).sum(-1)
    x_grad_psi = (c * co * (a * ta + b * tb)).sum(-1)
    phi = 1.0 - (x * x).sum(-1)
    return phi * lap_psi - 4.0 * x_grad_psi - 2.0 * x.shape[-1] * psi


def reaction(equation: str, u: torch.Tensor) -> torch.Tensor:
    """The zeroth-order part: 0, u - u³ or sin u."""
    if equation == "poisson":
        return torch.zeros_like(u)
    if equation == "allen-cahn":
        return u - u**3
    return torch.sin(u)


def source(equation: str, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """g = Δu* + reaction(u*): the exact right-hand side."""
    return exact_laplacian(x, c) + reaction(equation, exact_solution(x, c))


def ball(n: int, d: int, gen: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """n points uniform in the unit ball: a uniform direction times a radius U^(1/d)."""
    z = torch.randn(n, d, generator=gen, dtype=dtype)
    r = torch.rand(n, 1, generator=gen, dtype=torch.float64) ** (1.0 / d)
    return r.to(dtype) * z / z.norm(dim=-1, keepdim=True)


# --------------------------------------------------------------------------- the model


def build(
    d: int, hidden: tuple[int, ...], seed: int, dtype: torch.dtype, preact: float = 0.0
) -> tuple[xd.Product, list[torch.Tensor]]:
    """u_θ = φ · (√d N_θ) with φ = 1 - ‖x‖² (diagonal quadratic); returns u and N's trainable weights.

    ``hidden`` are N's hidden widths.  N's first weights are Glorot's (standard deviation
    √(2/(d+w₁)): pre-activations of order 1/√d·‖x‖) unless ``preact > 0``, which draws them
    so that the pre-activations have that standard deviation at ‖x‖ = 1.
    """
    n = xd.mlp([d, *hidden, 1], activation="tanh", xp=torch, dtype=dtype, seed=seed)
    arrays = [a.detach().clone() for a in n.arrays()]
    if preact > 0:
        arrays[0] = arrays[0] * (preact * math.sqrt((d + hidden[0]) / 2.0))
    params = [a.requires_grad_() for a in arrays]
    phi = xd.quadratic(torch.full((d,), -2.0, dtype=dtype), b=1.0)
    return phi * (math.sqrt(d) * n.with_arrays(params)), params


def plain(params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """u_θ at one point x (d,), written in torch: the function torch.func differentiates."""
    h = x
    for w, b in zip(params[0:-2:2], params[1:-2:2]):
        h = torch.tanh(h @ w + b)
    n = (h @ params[-2] + params[-1])[0]
    # (scale first: torch 2.13's jvp(grad) of (1 - x·x) * (c * n) in float32 fails on a dtype mismatch)
    return math.sqrt(x.shape[-1]) * ((1.0 - x @ x) * n)


# --------------------------------------------------------------------------- Laplacians (estimated or exact)

Laplacian = Callable[[torch.Tensor, int], torch.Tensor]


def xderiv_laplacian(u: xd.Product, estimator: str, samples: int) -> Laplacian:
    """Δu_θ at the points (n, d) with the step's seed, by xderiv."""
    if estimator == "exact":
        return lambda x, seed: xd.laplacian(u, x)[:, 0]
    return lambda x, seed: xd.laplacian(u, x, estimator=estimator, samples=samples, seed=seed)[:, 0]


def torch_func_laplacian(params: list[torch.Tensor], estimator: str, samples: int) -> Laplacian:
    """The same estimators written with torch.func, drawing directions with torch's generator.

    HTE (Rademacher/Gaussian, per point) and SDGD (k coordinates shared by the batch): HVPs
    ``jvp(grad(u), x, v)`` (forward-over-reverse) contracted with v.  STDE: 2-jets
    ``jvp(jvp(u))`` along the sampled coordinates (forward-over-forward).  Exact: d HVPs.
    """
    from torch.func import grad, jvp, vmap

    def f(x: torch.Tensor) -> torch.Tensor:
        return plain(params, x)

    def hvp_quad(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:  # vᵀ∇²u v by forward-over-reverse
        return (jvp(grad(f), (x,), (v,))[1] * v).sum()

    def jet2(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:  # ∂²/∂t² u(x + t v) by forward-over-forward
        return jvp(lambda y: jvp(f, (y,), (v,))[1], (x,), (v,))[1]

    def run(x: torch.Tensor, seed: int) -> torch.Tensor:
        n, d = x.shape
        gen = torch.Generator().manual_seed(seed)
        if estimator in ("hutchinson", "gaussian"):
            if estimator == "hutchinson":
                v = torch.randint(0, 2, (n, samples, d), generator=gen).to(x.dtype) * 2 - 1
            else:
                v = torch.randn(n, samples, d, generator=gen, dtype=x.dtype)
            return vmap(vmap(hvp_quad, in_dims=(None, 0)))(x, v).mean(-1)
        if estimator == "exact":
            e = torch.eye(d, dtype=x.dtype)
            return vmap(lambda p: vmap(hvp_quad, in_dims=(None, 0))(p, e).sum())(x)
        idx = torch.randperm(d, generator=gen)[:samples]
        e = (idx[:, None] == torch.arange(d)).to(x.dtype)  # the sampled rows of the identity
        inner = hvp_quad if estimator == "sdgd" else jet2
        return (d / samples) * vmap(lambda p: vmap(inner, in_dims=(None, 0))(p, e).sum())(x)

    return run


# --------------------------------------------------------------------------- training


def relative_error(u: xd.Product, x: torch.Tensor, c: torch.Tensor, chunk: int = 500) -> float:
    """‖u_θ − u*‖ / ‖u*‖ over the points ``x``, evaluated ``chunk`` points at a time."""
    num = den = 0.0
    with torch.no_grad():
        for part in torch.split(x, chunk):
            want = exact_solution(part, c)
            num += float(((u(part)[:, 0] - want) ** 2).sum())
            den += float((want**2).sum())
    return math.sqrt(num / den)


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def solve(
    d: int = 1000,
    equation: str = "poisson",
    estimator: str = "sdgd",
    samples: int = 16,
    points: int = 100,
    steps: int = 2000,
    lr: float = 1e-3,
    hidden: tuple[int, ...] = (128, 128, 128),
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    test_points: int = 2000,
    log_every: int = 0,
    eval_every: int = 100,
    target: float = 0.0,
    preact: float = 0.0,
    time_limit: float = 0.0,
) -> dict:
    """Train u_θ for ``equation`` in ``d`` dimensions; return losses, the error curve, times and memory.

    Adam with the learning rate decayed exponentially to lr/10 over ``steps``; each step draws
    ``points`` fresh points and one seed for the estimator.  ``target > 0`` stops at the first
    evaluation whose relative L2 error is at or below it; ``time_limit > 0`` stops (after an
    evaluation) once that many seconds have passed.
    """
    if equation not in EQUATIONS:
        raise ValueError(f"equation must be one of {EQUATIONS}, got {equation!r}")
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    c = coefficients(d, seed, dtype)
    u, params = build(d, hidden, seed, dtype, preact)
    laplacian = xderiv_laplacian(u, estimator, samples)
    test = ball(test_points, d, torch.Generator().manual_seed(seed + 1), dtype)
    gen = torch.Generator().manual_seed(seed + 2)
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.1 ** (1.0 / max(steps, 1)))
    progress = Progress(log_every)
    progress.say(
        f"{equation}, d={d}: {estimator} Laplacian (k={samples}), {points} points per step, "
        f"{steps} Adam steps, {str(dtype).removeprefix('torch.')}"
    )
    losses: list[float] = []
    errors: list[tuple[int, float]] = [(0, relative_error(u, test, c))]
    reached: tuple[int, float] | None = None  # first (step, seconds) with a relative error <= 1e-2
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        x = ball(points, d, gen, dtype)
        g = source(equation, x, c)
        residual = laplacian(x, seed * 1_000_003 + step) - g
        if equation != "poisson":
            residual = residual + reaction(equation, u(x)[:, 0])
        loss = ((residual / d) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % eval_every == 0 or step == steps:
            errors.append((step, relative_error(u, test, c)))
            if reached is None and errors[-1][1] <= 1e-2:
                reached = (step, time.perf_counter() - t0)
        progress.step("adam", step, steps, losses[-1], f"  rel-L2 {errors[-1][1]:.2e}")
        if target > 0 and errors[-1][0] == step and errors[-1][1] <= target:
            progress.say(f"reached relative L2 error {errors[-1][1]:.2e} <= {target:g} at step {step}")
            break
        if time_limit > 0 and time.perf_counter() - t0 > time_limit:
            if errors[-1][0] != step:
                errors.append((step, relative_error(u, test, c)))
            progress.say(f"stopped at the time limit ({time_limit:g} s) after step {step}")
            break
    seconds = time.perf_counter() - t0
    return {
        "d": d,
        "equation": equation,
        "estimator": estimator,
        "samples": samples,
        "points": points,
        "steps": len(losses),
        "losses": losses,
        "errors": errors,
        "error": errors[-1][1],
        "reached_1e-2": reached,
        "seconds": seconds,
        "ms_per_step": 1e3 * seconds / max(len(losses), 1),
        "peak_mb": peak_memory_mb(),
    }


def plot(result: dict, path: Path) -> bool:
    """Loss and error curves side by side; False (nothing written) without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    title = f"{result['equation']}, d = {result['d']}, {result['estimator']} (k = {result['samples']})"
    a.semilogy(result["losses"])
    a.set(xlabel="Adam step", ylabel="loss (residual² / d²)", title=title)
    steps, errs = zip(*result["errors"])
    b.semilogy(steps, errs, "o-")
    b.axhline(1e-2, color="gray", ls="--", lw=1)
    b.set(xlabel="Adam step", ylabel="relative L2 error", title="held-out points of the ball")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------- per-step timing


def time_steps(
    d: int,
    methods: list[str],
    samples: int = 16,
    points: int = 100,
    hidden: tuple[int, ...] = (128, 128, 128),
    dtype: torch.dtype = torch.float32,
    repeats: int = 5,
    seed: int = 0,
    budget_s: float = 60.0,
    preact: float = 0.0,
) -> list[dict]:
    """Milliseconds per training step (loss, weight gradient, Adam update) per method.

    A method is ``"<library>:<estimator>"`` with library ``xderiv`` or ``torch.func``.  One
    warm-up step, then the median of ``repeats`` steps; a method whose warm-up takes longer
    than ``budget_s`` is reported with that time and not repeated.
    """
    c = coefficients(d, seed, dtype)
    gen = torch.Generator().manual_seed(seed + 2)
    x = ball(points, d, gen, dtype)
    g = source("poisson", x, c)
    rows = []
    for method in methods:
        library, estimator = method.split(":")
        u, params = build(d, hidden, seed, dtype, preact)
        lap = (
            xderiv_laplacian(u, estimator, samples)
            if library == "xderiv"
            else torch_func_laplacian(params, estimator, samples)
        )
        opt = torch.optim.Adam(params, lr=1e-3)

        def step(i: int, lap: Laplacian = lap, params: list[torch.Tensor] = params, opt=opt) -> None:
            loss = (((lap(x, i) - g) / d) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

        times: list[float] = []
        try:
            for i in range(repeats + 1):
                t0 = time.perf_counter()
                step(i)
                times.append(time.perf_counter() - t0)
                if i == 0 and times[0] > budget_s:
                    break
        except (MemoryError, RuntimeError) as exc:  # e.g. a d-sized dense temporary that does not fit
            rows.append({"method": method, "ms": float("nan"), "repeats": 0, "failed": str(exc).splitlines()[0]})
            print(f"{method:<24} failed: {rows[-1]['failed'][:100]}", flush=True)
            continue
        measured = sorted(times[1:]) if len(times) > 1 else times
        rows.append({"method": method, "ms": 1e3 * measured[len(measured) // 2], "repeats": len(times) - 1})
        print(f"{method:<24} {rows[-1]['ms']:>10.1f} ms/step", flush=True)
    return rows


def print_table(rows: list[dict], d: int, samples: int, points: int) -> None:
    print(f"\ntime per training step, d={d}, {points} points, k={samples} (median; ms)")
    print(f"{'method':<24} {'ms/step':>10}")
    for r in rows:
        note = (
            f"  failed: {r['failed'][:60]}" if "failed" in r else ("" if r["repeats"] else "  (one step, over budget)")
        )
        print(f"{r['method']:<24} {r['ms']:>10.1f}{note}")


# --------------------------------------------------------------------------- command line


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--d", type=int, default=1000, help="dimension")
    p.add_argument("--equation", default="poisson", choices=[*EQUATIONS, "all"], help="which PDE ('all': each)")
    p.add_argument("--estimator", default="sdgd", choices=ESTIMATORS, help="Laplacian estimator in the loss")
    p.add_argument("--samples", type=int, default=16, help="random directions or coordinates per step (k)")
    p.add_argument("--points", type=int, default=100, help="fresh residual points per step")
    p.add_argument("--steps", type=int, default=2000, help="Adam steps")
    p.add_argument("--lr", type=float, default=1e-3, help="initial learning rate (decays to a tenth)")
    p.add_argument("--hidden", default="128,128,128", help="hidden widths of N, comma-separated")
    p.add_argument("--preact", type=float, default=0.0, help="std of N's first pre-activations at init (0: Glorot's)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"], help="torch dtype")
    p.add_argument("--target", type=float, default=0.0, help="stop once the relative L2 error is at most this")
    p.add_argument("--time-limit", type=float, default=0.0, help="stop training after this many seconds (0: none)")
    p.add_argument("--seed", type=int, default=0, help="seed of c, the weights and the points")
    p.add_argument("--test-points", type=int, default=2000, help="held-out points for the relative L2 error")
    p.add_argument("--eval-every", type=int, default=100, help="evaluate the error every N steps")
    p.add_argument("--log-every", type=int, default=100, help="print step, loss, error, time every N steps (0: quiet)")
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: timings hold up on a shared machine; 0: torch's)"
    )
    p.add_argument("--compare", action="store_true", help="time one training step of every estimator instead")
    p.add_argument("--repeats", type=int, default=5, help="--compare: timed steps per method")
    p.add_argument("--out", default="", help="directory for the plots (empty: examples/output)")
    return p


def main(argv: list[str] | None = None) -> list[dict]:
    args = parser().parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    hidden = tuple(int(w) for w in args.hidden.split(","))
    if args.compare:
        methods = [f"xderiv:{e}" for e in ESTIMATORS] + [f"torch.func:{e}" for e in ESTIMATORS if e != "gaussian"]
        if args.d > 2000:  # d HVPs per point: minutes per step
            methods.remove("torch.func:exact")
            print(f"torch.func:exact not run at d={args.d}: d HVPs per point (5 s per step at d=1000 here)")
        rows = time_steps(
            args.d,
            methods,
            args.samples,
            args.points,
            hidden,
            dtype,
            repeats=args.repeats,
            preact=args.preact,
        )
        print_table(rows, args.d, args.samples, args.points)
        return rows
    results = []
    for equation in EQUATIONS if args.equation == "all" else (args.equation,):
        r = solve(
            args.d,
            equation,
            args.estimator,
            args.samples,
            args.points,
            args.steps,
            args.lr,
            hidden,
            dtype,
            args.seed,
            args.test_points,
            args.log_every,
            args.eval_every,
            args.target,
            args.preact,
            args.time_limit,
        )
        path = Path(args.out or OUTPUT) / f"high_dim_{equation}_d{args.d}.png"
        plotted = plot(r, path)
        curve = " ".join(f"{s}:{e:.1e}" for s, e in r["errors"])
        print(f"error curve (step:relative L2) {curve}")
        if r["reached_1e-2"] is not None:
            print(f"relative L2 error <= 1e-2 at step {r['reached_1e-2'][0]}, {r['reached_1e-2'][1]:.0f} s")
        print(
            f"{equation} d={args.d} {args.estimator} k={args.samples}: relative L2 error {r['error']:.2e} "
            f"on {args.test_points} held-out points after {r['steps']} steps, {r['seconds']:.0f} s "
            f"({r['ms_per_step']:.1f} ms/step), peak memory {r['peak_mb']:.0f} MB"
            + (f"; plot in {path}" if plotted else "")
        )
        results.append(r)
    return results


if __name__ == "__main__":
    main()
