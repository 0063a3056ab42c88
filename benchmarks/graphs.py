"""The "graphs" family: networks that are not chains, xderiv's jet engine against its peers, side by side.

    python benchmarks/graphs.py --quick                 # smoke test (well under a minute)
    python benchmarks/graphs.py                         # full: benchmarks/results/graphs_float64.json
    python benchmarks/graphs.py --networks mMLP --dims 10 --ops laplacian --out /tmp/g.json

Networks (``graph_nets.py``): the modified MLP, a PirateNet, an MLP with LayerNorm and the plain
tanh MLP, width 64, float64, CPU, one thread, n = 1000 points, d = 2, 10, 100.  Quantities:
the exact Laplacian (every d), the Hessian (d ≤ 10), one PINN training step (the loss
mean((Δu − f)²) + 100·mean(u_b²) and its gradient with respect to every weight), and the
forward pass itself (``value``: the unit "forward passes" of the summary).

Methods, all in this one process on the same weights:

- ``xderiv-torch xd.function``: ``xd.laplacian(xd.function(f), x)`` on the Array API function;
- ``xderiv-torch graph_function``: the same on ``graph_function(module)`` (the torch module translated);
- ``xderiv-torch chain``: the plain MLP as ``xd.Sequential`` (the specialised recursion; MLP only);
- ``xderiv-jax xd.function jit``: ``jax.jit(lambda x: xd.laplacian(xd.function(f_jax), x))``
  (and ``xderiv-jax chain jit`` for the MLP);
- ``torch.func tr(vmap(hessian))`` (``hessian`` is ``jacfwd(jacrev)``), ``torch autograd
  double-backward`` (one backward pass per coordinate, ``create_graph`` for training),
  ``jet-for-pytorch collapsed`` (``vmap(jet.laplacian(f, (x0,), collapsed=True))``),
  ``folx forward_laplacian jit`` (``jax.jit(jax.vmap(folx.forward_laplacian(f)))``), ``jax
  vmap(hessian) jit``.  A peer that is not installed is listed under "not timed".

Each method's first call is checked against an independent reference (torch.func's Hessian; for
training, torch autograd's loss and gradients) and not timed if it disagrees (1e-8 relative).
Then the methods of one case are timed round-robin (one call of each per round, so load drifts
hit all of them alike) for about ``--seconds`` per case; the JSON keeps every round, wall-clock
(``median``, ``data``: what the page shows) and the process's CPU time (``cpu_median``,
``cpu_data``: on a shared machine, the time the process was not descheduled).
"""

from __future__ import annotations

import argparse
import os
import sys

THREADS = 1


def _one_thread() -> list[int]:
    """Before numpy, torch and jax start their pools: one thread everywhere, the process on one core."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(THREADS)
    flags = " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + flags
    if hasattr(os, "sched_setaffinity"):  # XLA's CPU runtime runs its own pool whatever the flags say
        cores = sorted(os.sched_getaffinity(0))[:THREADS]
        os.sched_setaffinity(0, cores)
        return cores
    return []


if __name__ == "__main__":
    PINNED = _one_thread()

import datetime as _dt  # noqa: E402
import importlib.metadata as md  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import graph_nets as G  # noqa: E402

HERE = Path(__file__).resolve().parent
TOL = 1e-8
BOUNDARY_WEIGHT = 100.0


class Method:
    def __init__(self, name, fn, is_xderiv, unit="torch"):
        self.name, self.fn, self.is_xderiv, self.unit = name, fn, is_xderiv, unit


def _points(n, d, seed=0):
    """Laplacian/Hessian points N(0, 1); training: interior uniform in [-1, 1]^d, boundary on the faces, f."""
    rng = np.random.default_rng(seed + 1000 * d)
    x = rng.standard_normal((n, d))
    xi = rng.uniform(-1.0, 1.0, (n, d))
    nb = max(1, n // 2)
    xb = rng.uniform(-1.0, 1.0, (nb, d))
    xb[np.arange(nb), rng.integers(0, d, nb)] = rng.choice([-1.0, 1.0], nb)
    return x, xi, xb, np.sin(xi).sum(-1)


# --------------------------------------------------------------------------- methods


def torch_methods(name, P, d, pts, quantities, missing):
    import torch
    from array_api_compat import array_namespace
    from torch.func import hessian, vmap

    import xderiv as xd
    from xderiv.interop.torch_graph import graph_function

    module = G.torch_module(P, name)
    Pt = G.torch_params(module)
    ws = list(module.parameters())

    def f(x):
        return G.forward(array_namespace(x), Pt, x)

    fn_xd, fn_gf = xd.function(f), xd.function(graph_function(module))
    chain = None
    if name == "MLP":
        acts = ["tanh"] * 4 + ["identity"]
        keys = [f"L{i}" for i in range(4)] + ["out"]
        chain = xd.Sequential(*[xd.Dense(Pt[k]["W"], Pt[k]["b"], a) for k, a in zip(keys, acts)])
    x, xi, xb, fx = (torch.tensor(a, dtype=torch.float64) for a in pts)

    def one(xp):  # per point, a scalar
        return module(xp)[0]

    def lap_func(x):
        return torch.diagonal(vmap(hessian(one))(x), dim1=-2, dim2=-1).sum(-1)

    def lap_autograd(x, create_graph=False):
        xx = x.detach().requires_grad_(True) if not create_graph else x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(module(xx).sum(), xx, create_graph=True)
        return sum(
            torch.autograd.grad(g[:, i].sum(), xx, retain_graph=True, create_graph=create_graph)[0][:, i]
            for i in range(x.shape[1])
        )

    laps = {
        "xderiv-torch xd.function": (True, lambda x: xd.laplacian(fn_xd, x)[:, 0]),
        "xderiv-torch graph_function": (True, lambda x: xd.laplacian(fn_gf, x)[:, 0]),
        "torch.func tr(vmap(hessian))": (False, lap_func),
        "torch autograd double-backward": (False, lap_autograd),
    }
    if chain is not None:
        laps["xderiv-torch chain"] = (True, lambda x: xd.laplacian(chain, x)[:, 0])
    try:
        import jet

        jl = vmap(jet.laplacian(lambda xp: module(xp), (x[0],), collapsed=True))
        laps["jet-for-pytorch collapsed"] = (False, lambda x: jl(x)[:, 0])
    except ImportError as exc:
        missing.append(("jet-for-pytorch collapsed", f"{type(exc).__name__}: {exc}"))

    out = {}
    if "value" in quantities:
        out["value"] = [Method("torch eager", lambda: module(x).detach(), False)]
    if "laplacian" in quantities:
        out["laplacian"] = [Method(k, (lambda fn=fn: fn(x).detach()), isx) for k, (isx, fn) in laps.items()]
    if "hessian" in quantities:
        hs = [
            Method("xderiv-torch xd.function", lambda: xd.hessian(fn_xd, x)[:, 0].detach(), True),
            Method("xderiv-torch graph_function", lambda: xd.hessian(fn_gf, x)[:, 0].detach(), True),
            # the same call in chunks of 100 points: each (d, d, 100, 64) term stays small (see the README)
            Method(
                "xderiv-torch xd.function chunk_size=100",
                lambda: xd.hessian(fn_xd, x, chunk_size=100)[:, 0].detach(),
                True,
            ),
            Method("torch.func vmap(hessian)", lambda: vmap(hessian(one))(x).detach(), False),
        ]
        if chain is not None:
            hs.append(Method("xderiv-torch chain", lambda: xd.hessian(chain, x)[:, 0].detach(), True))
        out["hessian"] = hs
    if "training" in quantities:

        def step(lap):
            def run():
                u_b = module(xb)[:, 0]
                loss = ((lap(xi) - fx) ** 2).mean() + BOUNDARY_WEIGHT * (u_b**2).mean()
                grads = torch.autograd.grad(loss, ws)
                return loss.item(), np.concatenate([g.detach().numpy().ravel() for g in grads])

            return run

        tr = [
            Method("torch autograd double-backward", step(lambda x: lap_autograd(x, create_graph=True)), False),
            Method("torch.func tr(vmap(hessian))", step(lap_func), False),
            Method("xderiv-torch xd.function", step(lambda x: xd.laplacian(fn_xd, x)[:, 0]), True),
            Method("xderiv-torch graph_function", step(lambda x: xd.laplacian(fn_gf, x)[:, 0]), True),
        ]
        if chain is not None:
            tr.append(Method("xderiv-torch chain", step(lambda x: xd.laplacian(chain, x)[:, 0]), True))
        if "jet-for-pytorch collapsed" in laps:
            tr.append(Method("jet-for-pytorch collapsed", step(laps["jet-for-pytorch collapsed"][1]), False))
        out["training"] = tr
    return out


def jax_methods(name, P, d, pts, quantities, missing):
    try:
        import jax
        import jax.numpy as jnp
    except ImportError as exc:
        missing.append(("jax", f"{type(exc).__name__}: {exc}"))
        return {}
    from array_api_compat import array_namespace

    import xderiv as xd

    jax.config.update("jax_enable_x64", True)
    Pj = G.convert(P, name, jnp.asarray)
    params = {k: v for k, v in Pj.items() if k != "name"}
    x, xi, xb, fx = (jnp.asarray(a) for a in pts)

    def u(prm, x):
        return G.forward(array_namespace(x), {**prm, "name": name}, x)

    def done(fn):
        return lambda: np.asarray(fn(params, x).block_until_ready())

    def xd_lap(prm, x):
        return xd.laplacian(xd.function(lambda z: u(prm, z)), x)[:, 0]

    chain_net = None
    if name == "MLP":
        keys = [f"L{i}" for i in range(4)] + ["out"]

        def chain_net(prm):
            acts = ["tanh"] * 4 + ["identity"]
            return xd.Sequential(*[xd.Dense(prm[k]["W"], prm[k]["b"], a) for k, a in zip(keys, acts)])

    try:
        import folx

        def folx_lap(prm, x):
            return jax.vmap(lambda p: folx.forward_laplacian(lambda z: u(prm, z)[0])(p).laplacian)(x)

    except ImportError as exc:
        folx_lap = None
        missing.append(("folx forward_laplacian jit", f"{type(exc).__name__}: {exc}"))

    out = {}
    if "value" in quantities:
        out["value"] = [Method("jax jit", done(jax.jit(u)), False, "jax")]
    if "laplacian" in quantities:
        ls = [Method("xderiv-jax xd.function jit", done(jax.jit(xd_lap)), True, "jax")]
        if chain_net is not None:
            ls.append(
                Method(
                    "xderiv-jax chain jit",
                    done(jax.jit(lambda prm, x: xd.laplacian(chain_net(prm), x)[:, 0])),
                    True,
                    "jax",
                )
            )
        if folx_lap is not None:
            ls.append(Method("folx forward_laplacian jit", done(jax.jit(folx_lap)), False, "jax"))
        out["laplacian"] = ls
    if "hessian" in quantities:
        vh = jax.vmap(jax.hessian(lambda prm, p: u(prm, p)[0], argnums=1), in_axes=(None, 0))

        def xd_hess(prm, x):
            return xd.hessian(xd.function(lambda z: u(prm, z)), x)[:, 0]

        out["hessian"] = [
            Method("xderiv-jax xd.function jit", done(jax.jit(xd_hess)), True, "jax"),
            Method("jax vmap(hessian) jit", done(jax.jit(vh)), False, "jax"),
        ]
    if "training" in quantities:

        def step(lap):
            def loss(prm):
                ub = u(prm, xb)[:, 0]
                return jnp.mean((lap(prm, xi) - fx) ** 2) + BOUNDARY_WEIGHT * jnp.mean(ub**2)

            vg = jax.jit(jax.value_and_grad(loss))

            def run():
                val, g = vg(params)
                # the torch module's order: the drawing order of graph_nets.draw
                return float(val), np.concatenate([np.asarray(g[k][kk]).ravel() for k in params for kk in params[k]])

            return run

        tr = [Method("xderiv-jax xd.function jit", step(xd_lap), True, "jax")]
        if folx_lap is not None:
            tr.append(Method("folx forward_laplacian jit", step(folx_lap), False, "jax"))
        out["training"] = tr
    return out


# --------------------------------------------------------------------------- timing


def _rel_err(a, ref):
    a, ref = np.asarray(a, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if a.shape != ref.shape:
        raise AssertionError(f"shape {a.shape} against the reference's {ref.shape}")
    return float(np.max(np.abs(a - ref)) / max(np.max(np.abs(ref)), 1e-300))


def _check(q, out, ref):
    if q == "training":
        (loss, g), (rl, rg) = out, ref
        return max(abs(loss - rl) / abs(rl), _rel_err(g, rg))
    return _rel_err(out, ref)


REFERENCE = {
    "value": "torch eager",
    "laplacian": "torch.func tr(vmap(hessian))",
    "hessian": "torch.func vmap(hessian)",
    "training": "torch autograd double-backward",
}


def time_case(methods, q, seconds, max_rounds, not_timed, case):
    """First call of each (checked against the reference), then round-robin rounds; {name: [times]}."""
    ref = None
    firsts, ok = {}, []
    for m in sorted(methods, key=lambda m: m.name != REFERENCE[q]):
        t0 = time.perf_counter()
        try:
            out = m.fn()
        except Exception as exc:  # a peer that cannot run this network: listed, not timed
            not_timed.append(
                {**case, "method": m.name, "status": "failed", "reason": f"{type(exc).__name__}: {exc}"[:300]}
            )
            continue
        firsts[m.name] = time.perf_counter() - t0
        if m.name == REFERENCE[q]:
            ref, err = out, 0.0
        else:
            err = _check(q, out, ref)
            if err > TOL:
                not_timed.append(
                    {**case, "method": m.name, "status": "failed", "reason": f"max rel err {err:.1e} > {TOL}"}
                )
                continue
        ok.append((m, err))
    if not ok:
        return {}, {}, {}, {}
    for m, _ in ok:  # second call: warm (a jit's compile was the first)
        m.fn()
    times = {m.name: [] for m, _ in ok}
    cpu = {m.name: [] for m, _ in ok}
    t_start = time.perf_counter()
    while True:
        for m, _ in ok:
            c0, t0 = time.process_time(), time.perf_counter()
            m.fn()
            times[m.name].append(time.perf_counter() - t0)
            cpu[m.name].append(time.process_time() - c0)
        r = len(times[ok[0][0].name])
        if r >= max_rounds or (r >= 3 and time.perf_counter() - t_start > seconds):
            break
    return times, firsts, {m.name: err for m, err in ok}, cpu


def _versions():
    out = {}
    for pkg in ("xderiv", "numpy", "torch", "jax", "folx", "jet-for-pytorch", "array-api-compat"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def _cpu():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke test: mMLP and MLP, d = 2, 16 points, one round")
    ap.add_argument("--networks", default=None, help=f"default {','.join(G.NETWORKS)}; quick: mMLP,MLP")
    ap.add_argument("--dims", default=None, help="comma-separated d (default 2,10,100; quick: 2)")
    ap.add_argument("--ops", default="laplacian,hessian,training")
    ap.add_argument("-n", type=int, default=None, help="points (default 1000; quick: 16)")
    ap.add_argument("--n-large-d", type=int, default=250, help="points at d >= 100 (default 250: the peers' time)")
    ap.add_argument("--seconds", type=float, default=None, help="timing per case (default 4; quick: 0)")
    ap.add_argument("--max-rounds", type=int, default=15)
    ap.add_argument("--training-dims", default="2,10", help="d of the training step (default 2,10)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(THREADS)
    import xderiv as xd

    xd.tune_host_allocator()  # as in the other benchmarks: every method with glibc's heap reuse
    quick = args.quick
    dims = [int(v) for v in (args.dims or ("2" if quick else "2,10,100")).split(",")]
    n_default = args.n or (16 if quick else 1000)
    seconds = args.seconds if args.seconds is not None else (0.0 if quick else 4.0)
    max_rounds = 1 if quick else args.max_rounds
    ops = args.ops.split(",")
    tdims = {int(v) for v in args.training_dims.split(",")}
    out_path = args.out or (Path("/tmp/graphs_quick.json") if quick else HERE / "results" / "graphs_float64.json")
    load0 = os.getloadavg()[0]
    t_run = time.perf_counter()
    records, not_timed, order = [], [], 0
    print(f"xderiv from {xd.__file__}; load average {load0:.2f} on {os.cpu_count()} CPUs; pinned to {PINNED}")
    for name in (args.networks or ("mMLP,MLP" if quick else ",".join(G.NETWORKS))).split(","):
        for d in dims:
            n = min(args.n_large_d, n_default) if d >= 100 else n_default
            P = G.draw(name, d)
            pts = _points(n, d)
            qs = ["value"] + [
                q for q in ops if not (q == "hessian" and d > 10) and not (q == "training" and d not in tdims)
            ]
            missing = []
            ms = torch_methods(name, P, d, pts, qs, missing)
            for q, lst in jax_methods(name, P, d, pts, qs, missing).items():
                ms.setdefault(q, []).extend(lst)
            label = f"{name} d={d} n={n}"
            for peer, why in dict(missing).items():
                not_timed.append({"label": label, "quantity": "-", "method": peer, "status": "skipped", "reason": why})
            for q in qs:
                case = {"label": label, "quantity": q}
                t0, load = time.perf_counter(), os.getloadavg()[0]
                times, firsts, errs, cpu = time_case(ms[q], q, seconds, max_rounds, not_timed, case)
                line = []
                for m in ms[q]:
                    if m.name not in times:
                        continue
                    ts = times[m.name]
                    order += 1
                    records.append({
                        "extra_info": {
                            "order": order, "problem": "graphs", "network": name, "label": label, "quantity": q,
                            "method": m.name, "is_xderiv": m.is_xderiv, "unit": m.unit, "d": d, "n": n,
                            "max_rel_err": errs[m.name], "first_call_s": firsts[m.name],
                            "forward_flops": G.flops(name, d) * n,
                                "load_average": load,
                        },
                        "stats": {"median": statistics.median(ts), "min": min(ts), "rounds": len(ts), "data": ts,
                                  "cpu_median": statistics.median(cpu[m.name]), "cpu_data": cpu[m.name]},
                    })  # fmt: skip
                    line.append(f"{m.name} {statistics.median(ts) * 1e3:.3g}")
                print(f"{label:24s} {q:9s} ({time.perf_counter() - t0:5.1f} s): " + "; ".join(line), flush=True)
    run = {
        "datetime": _dt.datetime.now(_dt.timezone.utc).isoformat(),
        "machine_info": {"cpu": {"brand_raw": _cpu()}, "system": platform.system(), "python": platform.python_version(),
                         "node": platform.node()},
        "options": {"quick": quick, "dtype": "float64", "device": "cpu", "threads": THREADS, "pinned_cores": PINNED,
                    "seconds_per_case": seconds, "max_rounds": max_rounds, "host_allocator_tuned": True},
        "load_average": {"start": load0, "end": os.getloadavg()[0], "cpus": os.cpu_count()},
        "wall_s": time.perf_counter() - t_run,
        "versions": _versions(),
        "benchmarks": records,
        "not_timed": not_timed,
    }  # fmt: skip
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(run, indent=1) + "\n")
    print(
        f"wrote {out_path} ({time.perf_counter() - t_run:.0f} s; load average {load0:.2f} -> {os.getloadavg()[0]:.2f})"
    )
    for r in not_timed:
        print("not timed:", r)


if __name__ == "__main__":
    main()
