"""Demo: the seed notebook's networks, their exact derivatives and a finite-difference check.

Run ``python -m xderiv`` (NumPy), or ``python -m xderiv --backend torch``
(``strict`` for array-api-strict, ``jax``, ``dask``, ``cupy`` on a GPU).  For each network it
prints value, gradient, Hessian and Laplacian at x = (0.15, 0.1) and the
largest disagreement with central finite differences (value differences for
the gradient, gradient differences for the Hessian).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np

import xderiv as xd
from xderiv.models import notebook as seed


def _backend(name: str) -> tuple[Any, Any, Any]:
    """(module for the factories, device, to-numpy converter)."""
    if name == "numpy":
        return np, None, np.asarray
    if name == "torch":
        import torch

        return torch, None, lambda a: a.detach().cpu().numpy()
    if name == "strict":
        import array_api_strict as strict

        return strict, None, np.asarray
    if name == "jax":
        import jax
        import jax.numpy as jnp

        jax.config.update("jax_enable_x64", True)
        return jnp, None, np.asarray
    if name == "dask":
        import dask.array as da

        return da, None, lambda a: np.asarray(a.compute())
    if name == "cupy":
        import cupy

        return cupy, None, cupy.asnumpy
    raise SystemExit(f"unknown backend {name!r}: choose numpy, torch, strict, jax, dask or cupy")


def _fd_check(net: Any, x: Any, to_np: Any, module: Any, eps: float = 1e-5) -> tuple[float, float]:
    """Largest |exact - central difference| for the gradient and for the Hessian."""
    x0 = to_np(x)
    d = x0.size
    steps = eps * np.eye(d)

    def ev(f: Any, pts: np.ndarray) -> np.ndarray:
        return to_np(f(net, module.asarray(pts, dtype=x.dtype))).reshape(pts.shape[0], -1)

    grad = to_np(xd.gradient(net, x))
    hess = to_np(xd.hessian(net, x)).reshape(d, d)
    fd_grad = ((ev(xd.value, x0 + steps) - ev(xd.value, x0 - steps)) / (2 * eps)).reshape(d)
    fd_hess = (ev(xd.gradient, x0 + steps) - ev(xd.gradient, x0 - steps)) / (2 * eps)
    return float(np.max(np.abs(grad - fd_grad))), float(np.max(np.abs(hess - 0.5 * (fd_hess + fd_hess.T))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xderiv", description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numpy", help="numpy (default), torch, strict, jax, dask or cupy")
    parser.add_argument("--quiet", action="store_true", help="only the finite-difference summary")
    args = parser.parse_args(argv)
    module, device, to_np = _backend(args.backend)
    np.set_printoptions(precision=6, suppress=False, linewidth=100)

    nets = {
        "seed PINN 2-20-20-20-1, sigmoid": seed.pinn(xp=module, device=device),
        "seed ResNet N(s).w": seed.resnet(xp=module, device=device),
        "seed potential N(s).w + 1/2 s^T A s + c^T s + b": seed.potential(xp=module, device=device),
    }
    x = module.asarray(np.asarray(seed.SEED_POINT), dtype=module.float64)
    worst = 0.0
    print(f"xderiv {xd.__version__} on {args.backend}, float64, x = {seed.SEED_POINT}")
    for name, net in nets.items():
        r = xd.derivatives(net, x, hessian=True, laplacian=True)
        g_err, h_err = _fd_check(net, x, to_np, module)
        worst = max(worst, g_err, h_err)
        print(f"\n== {name}")
        if not args.quiet:
            print("value     ", to_np(r.value).reshape(-1))
            print("gradient  ", to_np(r.jacobian).reshape(-1))
            print("Hessian   ", np.array2string(to_np(r.hessian).reshape(2, 2), prefix=" " * 11))
            print("Laplacian ", to_np(r.laplacian).reshape(-1))
        print(f"max |gradient - FD| = {g_err:.2e}   max |Hessian - FD| = {h_err:.2e}")
    ok = worst < 1e-8
    print(f"\nlargest disagreement with central finite differences: {worst:.2e} ({'OK' if ok else 'FAILED'})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
