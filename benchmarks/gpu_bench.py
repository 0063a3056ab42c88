"""GPU timings for issue 6: xderiv on CuPy and torch-CUDA against torch.func, jax and hessQuik.

``python benchmarks/gpu_bench.py --device cuda --dtype float32 --out DIR`` (``--device cpu``
runs the same comparison on the CPU, for a dry run).  Problems: P2 Laplacian (d = 50,
768-768-512-512, n = 2048), P4 Hessian (d = w = 64, 4 residual layers, n = 200) and
hessQuik's timing network at d = 1024, n = 10 (Hessian).  Same weights everywhere; each
result is checked against xderiv-torch before timing; medians of repeats with device
synchronisation.  Writes ``gpu_<dtype>.json`` and ``gpu_<dtype>.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import xderiv as xd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from reference import network_function  # noqa: E402


def timed(f, sync, repeats=10) -> float:
    f()
    sync()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        sync()
        ts.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(ts))


def problems():
    yield (
        "P2 laplacian",
        "laplacian",
        lambda xp, **kw: xd.mlp([50, 768, 768, 512, 512, 1], "tanh", xp=xp, seed=0, **kw),
        50,
        2048,
    )
    yield (
        "P4 hessian",
        "hessian",
        lambda xp, **kw: xd.resnet(64, 64, 4, activation="tanh", xp=xp, seed=0, **kw),
        64,
        200,
    )
    yield (
        "P1 d=1024 n=10 hessian",
        "hessian",
        lambda xp, **kw: xd.resnet(
            1024, 16, 4, activation="antitanh", residual_activation="tanh", step=0.5, xp=xp, seed=0, **kw
        ),
        1024,
        10,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--out", default="benchmarks/results/gpu")
    p.add_argument("--shrink", type=int, default=1, help="divide every n by this (CPU dry runs)")
    args = p.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False  # TF32 silently drops second-derivative precision
    dev = torch.device(args.device)
    tdtype = getattr(torch, args.dtype)
    sync_t = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    a = torch.randn(4096, 4096, dtype=tdtype, device=dev)
    t = timed(lambda: a @ a, sync_t, 5)
    rate = 2 * 4096**3 / (t * 1e-3) / 1e9
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    rows, records = (
        [
            f"device {name}, {args.dtype}, torch matmul {rate:.0f} GF/s",
            "",
            "| problem | method | ms | time / best xderiv |",
            "|---|---|---|---|",
        ],
        [],
    )
    for label, quantity, make, d, n in problems():
        n = max(2, n // args.shrink)
        op = xd.laplacian if quantity == "laplacian" else xd.hessian
        xn = np.random.default_rng(0).standard_normal((n, d))
        net_t = make(torch, device=dev, dtype=args.dtype)
        x_t = torch.asarray(xn, dtype=tdtype, device=dev)
        ref = op(net_t, x_t)
        methods = {"xderiv-torch[auto]": (lambda: op(net_t, x_t), sync_t)}
        for mode in ("forward", "backward"):
            methods[f"xderiv-torch[{mode}]"] = (lambda mode=mode: op(net_t, x_t, mode=mode), sync_t)
        if dev.type == "cuda":
            try:
                import cupy

                net_c = make(cupy, dtype=args.dtype)
                x_c = cupy.asarray(xn, dtype=args.dtype)
                methods["xderiv-cupy[auto]"] = (lambda: op(net_c, x_c), cupy.cuda.Device().synchronize)
            except Exception as exc:  # noqa: BLE001
                print("cupy unavailable:", exc)
        from torch.func import hessian, vmap

        f = network_function(net_t, torch)
        ws = net_t.arrays()

        def tf():
            h = vmap(hessian(f, argnums=1), in_dims=(None, 0))(ws, x_t)
            return torch.diagonal(h, dim1=-2, dim2=-1).sum(-1) if quantity == "laplacian" else h

        methods["torch.func vmap(hessian)"] = (tf, sync_t)
        try:
            import jax
            import jax.numpy as jnp

            jax.config.update("jax_enable_x64", args.dtype == "float64")
            fj = network_function(net_t, jnp)
            wj = [jnp.asarray(w.detach().cpu().numpy()) for w in ws]
            xj = jnp.asarray(xn, dtype=args.dtype)
            hj = jax.jit(jax.vmap(jax.hessian(fj, argnums=1), in_axes=(None, 0)))
            lj = jax.jit(
                lambda w, x: jnp.trace(
                    jax.vmap(jax.hessian(fj, argnums=1), in_axes=(None, 0))(w, x), axis1=-2, axis2=-1
                )
            )
            g = lj if quantity == "laplacian" else hj
            methods["jax.hessian jit"] = (lambda: g(wj, xj).block_until_ready(), lambda: None)
        except Exception as exc:  # noqa: BLE001
            print("jax unavailable:", exc)
        times = {}
        for mname, (fn, sync) in methods.items():
            try:
                out = fn()
                got = np.asarray(
                    out.get()
                    if hasattr(out, "get")
                    else (out.detach().cpu().numpy() if hasattr(out, "detach") else out)
                )
                err = float(
                    np.max(np.abs(got.reshape(-1) - ref.detach().cpu().numpy().reshape(-1)))
                    / np.max(np.abs(ref.detach().cpu().numpy()))
                )
                times[mname] = timed(fn, sync)
                records.append({"problem": label, "method": mname, "ms": times[mname], "rel_err_vs_xderiv_torch": err})
            except Exception as exc:  # noqa: BLE001 - record and go on (out of memory, missing peer)
                records.append({"problem": label, "method": mname, "error": repr(exc)[:200]})
        best = min(v for k, v in times.items() if k.startswith("xderiv"))
        for mname, ms in times.items():
            rows.append(f"| {label} | {mname} | {ms:.3f} | {ms / best:.2f}x |")
    text = "\n".join(rows)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"gpu_{args.dtype}.md").write_text(text + "\n")
    (out / f"gpu_{args.dtype}.json").write_text(
        json.dumps({"device": name, "matmul_gflops": rate, "records": records}, indent=1)
    )


if __name__ == "__main__":
    main()
