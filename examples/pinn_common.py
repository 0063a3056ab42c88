"""Shared by the PINN examples: a two-phase trainer (Adam on fresh points, then L-BFGS) and plotting."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch


def training_parser(
    doc: str, *, adam: int, lbfgs: int, points: str, quick: tuple[int, int, int], out: str
) -> argparse.ArgumentParser:
    """The two-phase trainer's options (``--adam --lbfgs --points --width --depth --quick --log-every --out``).

    ``points`` says what is drawn per Adam step; ``quick`` is ``(adam, lbfgs, points)`` of ``--quick``
    (applied by :func:`quick_args`).
    """
    p = argparse.ArgumentParser(description=doc.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--adam", type=int, default=adam, help="Adam steps, each on freshly drawn points")
    p.add_argument("--lbfgs", type=int, default=lbfgs, help="L-BFGS iterations on one fixed sample of points")
    p.add_argument("--points", type=int, default=256, help=f"{points} per Adam step; L-BFGS uses 4x as many")
    p.add_argument("--width", type=int, default=32, help="hidden width")
    p.add_argument("--depth", type=int, default=3, help="hidden layers")
    a, b, n = quick
    p.add_argument(
        "--quick", action="store_true", help=f"a seconds-long run: {a} Adam steps, {b} L-BFGS iterations, {n} points"
    )
    p.add_argument(
        "--log-every", type=int, default=100, help="print step, loss and elapsed time every N steps (0: quiet)"
    )
    p.add_argument("--out", default=out, help="where to write the plot")
    p.set_defaults(quick_settings=quick)
    return p


def quick_args(args: argparse.Namespace) -> argparse.Namespace:
    """``args`` with ``--quick``'s Adam steps, L-BFGS iterations and points when it was given."""
    if args.quick:
        args.adam, args.lbfgs, args.points = args.quick_settings
    return args


class Progress:
    """Prints ``phase, step, loss, elapsed`` every ``every`` steps (``every=0``: silent), flushed at once."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.t0 = time.perf_counter()

    def say(self, text: str) -> None:
        if self.every > 0:
            print(text, flush=True)

    def step(self, phase: str, step: int, total: int, loss: float, extra: str = "") -> None:
        if self.every > 0 and (step % self.every == 0 or step == total):
            elapsed = time.perf_counter() - self.t0
            width = len(str(total))
            print(f"{phase:<6} {step:>{width}}/{total}{extra}  loss {loss:.3e}  {elapsed:6.1f} s", flush=True)


def fit(
    params: list[torch.Tensor],
    loss_on: Callable[[torch.Generator, int], torch.Tensor],
    *,
    adam_steps: int,
    lbfgs_iters: int,
    points: int,
    seed: int = 0,
    lr: float = 3e-3,
    log_every: int = 0,
) -> list[float]:
    """Minimise ``loss_on(generator, n_points)`` over ``params``; return the loss history.

    Adam sees freshly sampled points each step (robust start), then L-BFGS
    polishes on one fixed, larger sample (PINN losses are smooth in the
    weights, and quasi-Newton steps cut the residual by orders of magnitude).
    With ``log_every=N`` it prints the step, the loss and the elapsed time
    every N Adam steps and every N L-BFGS iterations.
    """
    progress = Progress(log_every)
    progress.say(
        f"training: {adam_steps} Adam steps on {points} fresh points each, "
        f"then up to {lbfgs_iters} L-BFGS iterations on {4 * points} fixed points"
    )
    gen = torch.Generator().manual_seed(seed)
    history: list[float] = []
    opt = torch.optim.Adam(params, lr=lr)
    for step in range(1, adam_steps + 1):
        loss = loss_on(gen, points)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
        progress.step("adam", step, adam_steps, history[-1])
    if lbfgs_iters:
        fixed = torch.Generator().manual_seed(seed + 12345)
        state = fixed.get_state()
        lbfgs = torch.optim.LBFGS(
            params,
            lr=1.0,
            max_iter=lbfgs_iters,
            history_size=50,
            line_search_fn="strong_wolfe",
            tolerance_grad=1e-12,
            tolerance_change=1e-15,
        )
        reported = [0]  # the last L-BFGS iteration reported

        def closure() -> torch.Tensor:
            fixed.set_state(state)  # the same points at every evaluation
            lbfgs.zero_grad()
            loss = loss_on(fixed, 4 * points)
            loss.backward()
            history.append(loss.item())
            it = lbfgs.state[params[0]].get("n_iter", 0)  # the iteration this evaluation belongs to
            if it > reported[0] and it % max(log_every, 1) == 0:
                reported[0] = it
                evals = len(history) - adam_steps
                progress.step("l-bfgs", it, lbfgs_iters, history[-1], f" ({evals} evaluations)")
            return loss

        lbfgs.step(closure)
        it, evals = lbfgs.state[params[0]].get("n_iter", 0), len(history) - adam_steps
        progress.say(f"l-bfgs stopped after {it} iterations ({evals} evaluations), loss {history[-1]:.3e}")
    return history


def relative_error(u: Callable[[torch.Tensor], torch.Tensor], exact: Callable, test: torch.Tensor) -> float:
    """Relative L2 error ||u - exact|| / ||exact|| on the points ``test`` (u's output axis dropped if it has one)."""
    with torch.no_grad():
        got, want = u(test), exact(test)
        got = got.reshape(want.shape)
        return float(torch.linalg.norm(got - want) / torch.linalg.norm(want))


def plot(
    history: list[float],
    slice_x: torch.Tensor,
    predicted: torch.Tensor,
    exact: torch.Tensor,
    title: str,
    xlabel: str,
    path: str,
) -> None:
    """Loss curve beside a 1-D slice of the solution against the exact one, saved to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.semilogy(history)
    a.set(xlabel="optimiser evaluation (Adam, then L-BFGS)", ylabel="loss", title=title)
    b.plot(slice_x, predicted, label="PINN (xderiv)")
    b.plot(slice_x, exact, "--", label="exact")
    b.set(xlabel=xlabel, ylabel="u", title="solution slice")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


class Timer:
    def __enter__(self) -> Timer:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.t0
