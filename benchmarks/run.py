#!/usr/bin/env python
"""Side-by-side benchmark of xderiv against torch.func, torch autograd, hessQuik, jax and folx.

One process, the same weights for every method (issue 3).  Usage::

    python benchmarks/run.py                       # full suite, float64
    python benchmarks/run.py --quick               # smoke test, < 2 minutes
    python benchmarks/run.py --dtype float64,float32 --problems P2,P4
    python benchmarks/run.py --out benchmarks/results

For every problem and quantity each method is first *verified* against a float64
reference (xderiv on NumPy, mode auto; cross-checked against torch autograd), then
timed: median of repeats, ratio to the best verified peer, flop count by formula,
achieved fraction of the matrix-multiply rate measured in the same run, and peak
memory.  Writes ``results_<dtype>.json``, ``results.md`` and PNG plots to ``--out``.
See benchmarks/README.md for the meaning of each column.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import gc
import json
import os
import platform
import statistics
import sys
import threading
import time
import tracemalloc
import warnings
from pathlib import Path


def _early_threads(argv):
    """Apply --threads before numpy/torch/jax start their thread pools."""
    for i, a in enumerate(argv):
        val = (
            a.split("=", 1)[1]
            if a.startswith("--threads=")
            else (argv[i + 1] if a == "--threads" and i + 1 < len(argv) else None)
        )
        if val:
            for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
                os.environ[var] = val
            if val == "1":
                os.environ["XLA_FLAGS"] = (
                    os.environ.get("XLA_FLAGS", "")
                    + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
                )
            return int(val)
    return None


_THREADS = _early_threads(sys.argv[1:])

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
# Use the checkout's xderiv when it is not installed.
if str(HERE.parent) not in sys.path:
    sys.path.append(str(HERE.parent))

import bench_methods as bm  # noqa: E402
import bench_problems as bp  # noqa: E402
import bench_report as br  # noqa: E402

TOL = {"float64": 1e-8, "float32": 2e-3}
QUANTITIES = ("value", "gradient", "hessian", "laplacian")


# --------------------------------------------------------------------------- memory

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
try:
    _LIBC = ctypes.CDLL("libc.so.6")
except OSError:  # pragma: no cover - non-glibc
    _LIBC = None


def _rss() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except OSError:  # pragma: no cover - not Linux
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _trim():
    gc.collect()
    if _LIBC is not None:
        try:
            _LIBC.malloc_trim(0)
        except AttributeError:  # pragma: no cover
            pass


def peak_memory(fn, sync):
    """Peak extra memory of one call: max of an RSS sampler (every ~0.5 ms, after
    malloc_trim) and tracemalloc's peak (which sees NumPy's buffers, not torch's or
    XLA's).  Returns (bytes, which)."""
    _trim()
    base = _rss()
    peak = [base]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            r = _rss()
            if r > peak[0]:
                peak[0] = r
            time.sleep(0.0005)

    th = threading.Thread(target=sample, daemon=True)
    tracemalloc.start()
    th.start()
    try:
        out = fn()
        sync(out)
        r = _rss()
        peak[0] = max(peak[0], r)
    finally:
        stop.set()
        th.join()
        _, tm_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    del out
    rss_delta = peak[0] - base
    if tm_peak >= rss_delta:
        return tm_peak, "tracemalloc"
    return rss_delta, "rss"


# --------------------------------------------------------------------------- machine rate


def gemm_rates(dtype: str, size: int, repeats: int = 5):
    """Measured matrix-multiply rate (flop/s) for numpy and torch on this machine."""
    rates = {}
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size)).astype(dtype)
    b = rng.standard_normal((size, size)).astype(dtype)
    flop = 2.0 * size**3

    def best(fn):
        fn()
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return flop / min(ts), flop / statistics.median(ts)

    rates["numpy"] = best(lambda: a @ b)
    if bm.installed("torch"):
        import torch

        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        rates["torch"] = best(lambda: ta @ tb)
    if bm.installed("jax"):
        import jax.numpy as jnp

        ja, jb = jnp.asarray(a), jnp.asarray(b)
        rates["jax"] = best(lambda: (ja @ jb).block_until_ready())
    return {k: {"peak_flops": v[0], "median_flops": v[1]} for k, v in rates.items()}


# --------------------------------------------------------------------------- verification


def rel_err(got: np.ndarray, ref: np.ndarray):
    if got.shape != ref.shape:
        return None, f"shape {got.shape} != expected {ref.shape}"
    if not np.all(np.isfinite(got)):
        return float("inf"), "non-finite values"
    scale = max(float(np.max(np.abs(ref))), 1e-300) if ref.size else 1.0
    return float(np.max(np.abs(got - ref))) / scale if ref.size else 0.0, None


def reference(p: bp.Problem, quantity: str, budget: float):
    """Float64 reference: xderiv NumPy (mode auto), cross-checked with torch autograd."""
    ref, src, err = None, None, None
    try:
        ms = [
            m
            for m in bm.xderiv_methods(p, "float64", "numpy", (quantity,), modes=("auto",))
            if isinstance(m, bm.Method)
        ]
        if not ms:
            raise RuntimeError("xderiv unavailable")
        m = [x for x in ms if x.mode in ("auto", "")][0]
        if m.mem_estimate > budget:
            raise MemoryError("over the memory budget")
        ref, src = m.to_numpy(m.fn()), "xderiv-numpy[auto] float64"
    except Exception as exc:  # noqa: BLE001
        err = f"{type(exc).__name__}: {exc}"
    # independent torch autograd computation of the same quantity
    check, check_src = None, None
    if bm.installed("torch"):
        # on the first 32 points only: an independent check need not redo the whole batch
        k = min(p.n, 32)
        sub = dataclasses.replace(p, x=p.x[:k])
        peers = bm.torch_peer_methods(sub, "float64", (quantity,))
        pref = {
            "value": ["torch eager"],
            "gradient": ["torch autograd"],
            "hessian": ["torch.func vmap(hessian)"],
            "laplacian": ["torch.func tr(vmap(hessian))", "torch autograd double-backward loop"],
        }
        cands = [
            m
            for name in pref[quantity]
            for m in peers
            if isinstance(m, bm.Method) and m.name == name and m.mem_estimate <= budget / 4
        ]
        if cands:
            try:
                check, check_src = cands[0].to_numpy(cands[0].fn()), cands[0].name + " float64"
            except Exception as exc:  # noqa: BLE001
                check_src = f"{cands[0].name} failed: {exc}"
    cross = None
    if ref is not None and check is not None:
        e, why = rel_err(ref[:k], check)
        cross = {
            "against": f"{check_src} on the first {k} points",
            "rel_err": e,
            "problem": why,
            "ok": why is None and e is not None and e <= TOL["float64"],
        }
    if ref is None and check is not None and k == p.n:
        ref, src = check, check_src + f" (xderiv reference failed: {err})"
    return ref, src, cross


# --------------------------------------------------------------------------- timing


def time_method(m: bm.Method, repeats_min: int, repeats_max: int, target_s: float, max_s: float, t_est: float):
    gc.collect()
    if t_est > 0.2 * max_s:  # slow: the verification call was the warm-up, no estimate call
        pass
    else:
        t0 = time.perf_counter()
        out = m.fn()
        m.sync(out)
        t_est = time.perf_counter() - t0
        del out
    reps = int(min(repeats_max, max(repeats_min, round(target_s / max(t_est, 1e-9)))))
    if t_est * reps > max_s:
        reps = max(1, int(max_s // max(t_est, 1e-9)))
    ts = []
    gc.disable()
    try:
        for _ in range(reps):
            t0 = time.perf_counter()
            out = m.fn()
            m.sync(out)
            ts.append(time.perf_counter() - t0)
            del out
    finally:
        gc.enable()
    return ts


def run_problem(p: bp.Problem, dtype: str, args, rates, log):
    budget = args.mem_budget_gb * 2**30
    records = []
    methods = bm.all_methods(p, dtype, backends=args.backends, peers=args.peers)
    rate = max(r["peak_flops"] for r in rates.values())
    for q in p.quantities:
        qmethods = [m for m in methods if m.quantity == q]
        if args.methods:
            qmethods = [m for m in qmethods if any(s in m.name for s in args.methods)]
        if not qmethods:
            continue
        t0 = time.perf_counter()
        ref, ref_src, cross = reference(p, q, budget)
        log(
            f"  {p.label} {q}: reference {ref_src} ({time.perf_counter() - t0:.1f}s)"
            + ("" if cross is None else f", cross-check rel err {cross['rel_err']}")
        )
        min_flops = bp.flops(p, "min", q)
        for m in qmethods:
            rec = {
                "problem": p.family,
                "label": p.label,
                "n": p.n,
                "d": p.d,
                "width": p.width,
                "depth": p.depth,
                "m": p.m,
                "dtype": dtype,
                "quantity": q,
                "method": m.name,
                "is_xderiv": m.is_xderiv,
                "reference": ref_src,
                "reference_crosscheck": cross,
                "min_flops": min_flops,
            }
            records.append(rec)
            if isinstance(m, bm.Unavailable):
                rec.update(status="unavailable", note=m.reason)
                continue
            rec.update(
                backend=m.backend,
                mode=m.mode,
                flop_kind=m.flop_kind,
                flops=bp.flops(p, m.flop_kind, q),
                mem_estimate=m.mem_estimate,
            )
            if m.mem_estimate > budget:
                rec.update(
                    status="skipped",
                    note=f"estimated memory {m.mem_estimate / 2**30:.1f} GiB > budget {args.mem_budget_gb:g} GiB",
                )
                log(f"    {m.name:38s} skipped ({rec['note']})")
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    t1 = time.perf_counter()
                    out = m.fn()
                    m.sync(out)
                    rec["first_call_s"] = time.perf_counter() - t1
                    got = m.to_numpy(out)
                    del out
                    if ref is None:
                        err, why = None, "no reference"
                    else:
                        err, why = rel_err(got, ref)
                    rec["max_rel_err"] = err
                    ok = why is None and err is not None and err <= TOL[dtype]
                    rec["verified"] = ok
                    if why is not None:
                        rec["verify_note"] = why
                    t_first = rec["first_call_s"]
                    if t_first > args.max_s:
                        # too slow to repeat: the only sample is the (cold) verification call
                        ts = [t_first]
                        rec["note"] = "single cold call (too slow to repeat)"
                    else:
                        if args.memory and t_first < 0.25 * args.max_s:
                            pk, how = peak_memory(m.fn, m.sync)
                            rec.update(peak_mem=pk, peak_mem_method=how)
                        ts = time_method(m, args.repeats_min, args.repeats_max, args.target_s, args.max_s, t_first)
            except Exception as exc:  # noqa: BLE001
                rec.update(status="error", note=f"{type(exc).__name__}: {str(exc)[:300]}")
                log(f"    {m.name:38s} ERROR {rec['note']}")
                continue
            med = statistics.median(ts)
            status = "ok" if rec["verified"] else ("unverified" if ref is None else "mismatch")
            rec.update(
                status=status,
                times=ts,
                median_s=med,
                repeats=len(ts),
                gflops=rec["flops"] / med / 1e9,
                frac_matmul=rec["flops"] / med / rate,
                min_flops_frac=min_flops / med / rate,
            )
            log(
                f"    {m.name:38s} {med * 1e3:10.3f} ms  x{len(ts):<3d} err {err if err is not None else '-':<9.3g}"
                if err is not None
                else f"    {m.name:38s} {med * 1e3:10.3f} ms  (unverified: {why})"
            )
        # ratio to the best verified peer
        qrecs = [r for r in records if r["label"] == p.label and r["quantity"] == q and "median_s" in r]
        peers_ok = [r for r in qrecs if not r["is_xderiv"] and r["status"] == "ok"]
        best = min(peers_ok, key=lambda r: r["median_s"]) if peers_ok else None
        for r in qrecs:
            r["best_peer"] = best["method"] if best else None
            r["ratio_to_best_peer"] = r["median_s"] / best["median_s"] if best else None
    return records


# --------------------------------------------------------------------------- main


def environment(rates):
    env = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "numpy": np.__version__,
        "xderiv": bm.xderiv_version(),
        "gemm": rates,
        "threads_option": _THREADS,
        "loadavg_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    for mod in ("torch", "jax", "jaxlib", "folx", "hessQuik"):
        if bm.installed(mod):
            try:
                import importlib.metadata as md

                env[mod] = md.version({"hessQuik": "hessQuik"}.get(mod, mod))
            except Exception:  # noqa: BLE001
                env[mod] = "installed"
        else:
            env[mod] = "not installed"
    if bm.installed("torch"):
        import torch

        env["torch_threads"] = torch.get_num_threads()
    return env


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, few repeats (< 2 min smoke test)")
    ap.add_argument("--dtype", default="float64", help="float64, float32, or a comma list")
    ap.add_argument("--problems", default="P1,P2,P3,P4", help="comma list of P1..P4")
    ap.add_argument("--out", default=str(HERE / "results"), help="output folder")
    ap.add_argument("--backends", default="numpy,torch", help="xderiv backends to time")
    ap.add_argument("--peers", default="torch,hessQuik,jax", help="peers to time (folx rides with jax)")
    ap.add_argument("--methods", default="", help="only methods whose name contains one of these (comma list)")
    ap.add_argument(
        "--mem-budget-gb", type=float, default=6.0, help="skip a method whose estimated memory exceeds this (default 6)"
    )
    ap.add_argument("--target-s", type=float, default=None, help="timing time aimed at per method")
    ap.add_argument("--max-s", type=float, default=None, help="cap on timing time per method")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads for numpy/torch/jax (sets OMP/OPENBLAS/MKL_NUM_THREADS; default: libraries' own)",
    )
    ap.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory call")
    ap.add_argument("--no-plots", dest="plots", action="store_false")
    args = ap.parse_args(argv)
    args.dtypes = [s.strip() for s in args.dtype.split(",") if s.strip()]
    for dt in args.dtypes:
        if dt not in TOL:
            ap.error(f"unsupported dtype {dt!r}")
    args.families = [s.strip().upper() for s in args.problems.split(",") if s.strip()]
    args.backends = tuple(s.strip() for s in args.backends.split(",") if s.strip())
    args.peers = tuple(s.strip() for s in args.peers.split(",") if s.strip())
    args.methods = [s.strip() for s in args.methods.split(",") if s.strip()]
    if args.quick:
        args.repeats_min, args.repeats_max = 3, 5
        args.target_s = args.target_s or 0.05
        args.max_s = args.max_s or 0.5
        args.gemm_size = 1024
    else:
        args.repeats_min, args.repeats_max = 5, 30
        args.target_s = args.target_s or 1.0
        args.max_s = args.max_s or 20.0
        args.gemm_size = 2048
    return args


def main(argv=None):
    args = parse(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if bm.installed("jax"):
        import jax

        jax.config.update("jax_enable_x64", True)
    if args.threads and bm.installed("torch"):
        import torch

        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - t_start:7.1f}s] {msg}", flush=True)

    log(f"xderiv: {bm.xderiv_version()}; load average {os.getloadavg() if hasattr(os, 'getloadavg') else '?'}")
    for dtype in args.dtypes:
        rates = gemm_rates(dtype, args.gemm_size)
        log(
            f"{dtype} GEMM {args.gemm_size}^3: "
            + ", ".join(f"{k} {v['peak_flops'] / 1e9:.1f} GF/s" for k, v in rates.items())
        )
        records = []
        for p in bp.make_problems(args.families, quick=args.quick):
            log(f"{p.label} ({dtype})")
            records += run_problem(p, dtype, args, rates, log)
        result = {
            "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join([Path(sys.argv[0]).name] + (sys.argv[1:] if argv is None else list(argv))),
            "quick": args.quick,
            "dtype": dtype,
            "mem_budget_gb": args.mem_budget_gb,
            "tolerance": TOL[dtype],
            "environment": environment(rates),
            "machine_matmul_flops": max(r["peak_flops"] for r in rates.values()),
            "records": records,
        }
        result["targets"] = br.evaluate_targets(result)
        path = out / f"results_{dtype}.json"
        path.write_text(json.dumps(result, indent=1, default=float))
        log(f"wrote {path}")
    br.write_report(out, plots=args.plots, log=log)
    log("done")


if __name__ == "__main__":
    main()
