"""Flop counts of the graphs family's Laplacian, in forward passes of the same network (``benchmarks/graphs.py``).

    python benchmarks/graph_flops.py [--n 100] [--out benchmarks/results/flops_graphs.json]

A forward Laplacian carries, through every matrix product, the value, d tangents and one
collapsed second-order term: d + 2 rows where the forward pass carries one, so about d + 2
forward passes of matrix-product flops (fewer where the input layer's tangents are the identity,
which needs no product).  This counts what each method actually does, at a few points (flops
are linear in n):

- torch methods: the matrix-product flops of ``torch.utils.flop_counter.FlopCounterMode``
  (``mm``, ``addmm``, ``bmm``, ...; elementwise work is not counted; torch.func's ``hessian`` cannot
  run under the counter and is left out);
- jax methods: XLA's ``cost_analysis()`` of the compiled function, flops (elementwise included)
  and bytes accessed.

Each count is divided by the same library's count for one forward pass.  torch autograd's
double-backward loop is left out as well (the counter refuses its ``create_graph`` backward).
The speed page (``make_performance_page.py``) shows ``results/flops_graphs.json`` beside the timings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import graph_nets as G  # noqa: E402
import numpy as np  # noqa: E402


def torch_counts(name, d, n):
    import torch
    from array_api_compat import array_namespace
    from torch.func import hessian, vmap
    from torch.utils.flop_counter import FlopCounterMode

    import xderiv as xd
    from xderiv.interop.torch_graph import graph_function

    module = G.torch_module(G.draw(name, d), name)
    for p in module.parameters():
        p.requires_grad_(False)
    Pt = G.torch_params(module)
    f = xd.function(lambda x: G.forward(array_namespace(x), Pt, x))
    x = torch.tensor(np.random.default_rng(0).standard_normal((n, d)))

    def autograd(x):
        xx = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(module(xx).sum(), xx, create_graph=True)
        return sum(torch.autograd.grad(g[:, i].sum(), xx, retain_graph=True)[0][:, i] for i in range(d))

    calls = {
        "forward (torch eager)": lambda: module(x),
        "xderiv-torch xd.function": lambda: xd.laplacian(f, x),
        "xderiv-torch graph_function": lambda: xd.laplacian(xd.function(graph_function(module)), x),
        "torch.func tr(vmap(hessian))": lambda: vmap(hessian(lambda p: module(p)[0]))(x),
        "torch autograd double-backward": lambda: autograd(x),
    }
    if name == "MLP":
        keys = [f"L{i}" for i in range(4)] + ["out"]
        acts = ["tanh"] * 4 + ["identity"]
        chain = xd.Sequential(*[xd.Dense(Pt[k]["W"], Pt[k]["b"], a) for k, a in zip(keys, acts)])
        calls["xderiv-torch chain"] = lambda: xd.laplacian(chain, x)
    try:
        import jet

        jl = vmap(jet.laplacian(lambda p: module(p), (x[0],), collapsed=True))
        calls["jet-for-pytorch collapsed"] = lambda: jl(x)
    except ImportError:
        pass
    out = {}
    for k, c in calls.items():
        try:
            with FlopCounterMode(display=False) as fc:
                c()
        except RuntimeError:  # torch.func's hessian under the counter: autograd hooks it does not support
            continue
        out[k] = {"flops": fc.get_total_flops()}
    return out


def jax_counts(name, d, n):
    import jax
    import jax.numpy as jnp
    from array_api_compat import array_namespace

    import xderiv as xd

    jax.config.update("jax_enable_x64", True)
    P = G.convert(G.draw(name, d), name, jnp.asarray)

    def u(x):
        return G.forward(array_namespace(x), P, x)

    x = jnp.asarray(np.random.default_rng(0).standard_normal((n, d)))
    calls = {
        "forward (jax jit)": u,
        "xderiv-jax xd.function jit": lambda x: xd.laplacian(xd.function(u), x),
    }
    try:
        import folx

        calls["folx forward_laplacian jit"] = jax.vmap(lambda p: folx.forward_laplacian(lambda z: u(z)[0])(p).laplacian)
    except ImportError:
        pass
    out = {}
    for k, c in calls.items():
        ca = jax.jit(c).lower(x).compile().cost_analysis()
        ca = ca[0] if isinstance(ca, list) else ca
        out[k] = {"flops": float(ca.get("flops", 0.0)), "bytes": float(ca.get("bytes accessed", 0.0))}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--networks", default=",".join(G.NETWORKS))
    ap.add_argument("--dims", default="2,10,100")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "flops_graphs.json")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    rows = []
    print("| network | d | method | flops ÷ forward | bytes ÷ forward | d + 2 |")
    print("|---|---|---|---|---|---|")
    for name in args.networks.split(","):
        for d in (int(v) for v in args.dims.split(",")):
            for counts, fwd in ((torch_counts(name, d, args.n), "forward (torch eager)"),
                                (jax_counts(name, d, args.n), "forward (jax jit)")):  # fmt: skip
                base = counts[fwd]
                for k, v in counts.items():
                    if k == fwd:
                        continue
                    r = v["flops"] / base["flops"]
                    rb = v["bytes"] / base["bytes"] if "bytes" in v else None
                    rows.append({"network": name, "d": d, "n": args.n, "method": k, "flops": v, "forward": base,
                                 "flops_per_forward": r, "bytes_per_forward": rb})  # fmt: skip
                    rbs = "–" if rb is None else f"{rb:.1f}"
                    print(f"| {name} | {d} | {k} | {r:.1f} | {rbs} | {d + 2} |", flush=True)
    args.out.write_text(json.dumps({"n": args.n, "rows": rows}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
