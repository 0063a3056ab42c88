"""Shared by the PINN examples: a two-phase trainer (Adam on fresh points, then L-BFGS) and plotting."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def fit(
    params: list[torch.Tensor],
    loss_on: Callable[[torch.Generator, int], torch.Tensor],
    *,
    adam_steps: int,
    lbfgs_iters: int,
    points: int,
    seed: int = 0,
    lr: float = 3e-3,
) -> list[float]:
    """Minimise ``loss_on(generator, n_points)`` over ``params``; return the loss history.

    Adam sees freshly sampled points each step (robust start), then L-BFGS
    polishes on one fixed, larger sample (PINN losses are smooth in the
    weights, and quasi-Newton steps cut the residual by orders of magnitude).
    """
    gen = torch.Generator().manual_seed(seed)
    history: list[float] = []
    opt = torch.optim.Adam(params, lr=lr)
    for _ in range(adam_steps):
        loss = loss_on(gen, points)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
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

        def closure() -> torch.Tensor:
            fixed.set_state(state)  # the same points at every evaluation
            lbfgs.zero_grad()
            loss = loss_on(fixed, 4 * points)
            loss.backward()
            history.append(loss.item())
            return loss

        lbfgs.step(closure)
    return history


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
