"""Issue-3 target checks, the markdown report and the PNG plots."""

from __future__ import annotations

import json
from pathlib import Path

BACKENDS = ("numpy", "torch")


# --------------------------------------------------------------------------- helpers


def _ok(recs):
    return [r for r in recs if r.get("status") == "ok"]


def _sel(records, label=None, quantity=None, method=None, family=None):
    out = records
    if label is not None:
        out = [r for r in out if r["label"] == label]
    if family is not None:
        out = [r for r in out if r["problem"] == family]
    if quantity is not None:
        out = [r for r in out if r["quantity"] == quantity]
    if method is not None:
        out = [r for r in out if r["method"] == method]
    return out


def _best_x(records, label, quantity, backend=None):
    recs = [
        r
        for r in _ok(_sel(records, label, quantity))
        if r["is_xderiv"] and (backend is None or r.get("backend") == backend)
    ]
    return min(recs, key=lambda r: r["median_s"]) if recs else None


def _peer(records, label, quantity, method):
    recs = _sel(records, label, quantity, method)
    return recs[0] if recs else None


def _why_missing(rec):
    if rec is None:
        return "not run"
    return f"{rec.get('status')}: {rec.get('note') or rec.get('verify_note') or ''}".strip()


def _labels(records, family=None):
    seen = []
    for r in records:
        if (family is None or r["problem"] == family) and r["label"] not in seen:
            seen.append(r["label"])
    return seen


# --------------------------------------------------------------------------- targets


def evaluate_targets(result):
    """Evaluate the issue-3 targets that this run measured. Returns a list of dicts."""
    R = result["records"]
    T = []

    def add(target, label, measured, threshold, met, detail):
        T.append(
            {
                "target": target,
                "problem": label,
                "measured": measured,
                "threshold": threshold,
                "met": met,
                "detail": detail,
            }
        )

    def faster(target, label, q, xrec, peer_name, factor, xlabel="best xderiv"):
        p = _peer(R, label, q, peer_name)
        xs = [r for r in _sel(R, label, q) if r["is_xderiv"]]
        if xrec is None and xs and all(r.get("status") == "skipped" for r in xs):
            add(target, label, None, factor, None, f"xderiv skipped: {xs[0].get('note')}")
        elif xrec is None:
            add(target, label, None, factor, False, f"{xlabel}: no verified result")
        elif p is None or p.get("status") != "ok":
            add(target, label, None, factor, None, f"{peer_name} {_why_missing(p)}")
        else:
            s = p["median_s"] / xrec["median_s"]
            add(
                target,
                label,
                s,
                factor,
                s >= factor,
                f"{xrec['method']} {xrec['median_s'] * 1e3:.3g} ms vs {peer_name} {p['median_s'] * 1e3:.3g} ms "
                f"(speed-up {s:.2f}x, need >= {factor:g}x)",
            )

    # Laplacian vs folx on P2, P4, each backend
    for fam in ("P2", "P4"):
        for label in _labels(R, fam):
            for b in BACKENDS:
                faster(
                    f"Laplacian no slower than folx jit ({b})",
                    label,
                    "laplacian",
                    _best_x(R, label, "laplacian", b),
                    "folx forward_laplacian jit",
                    1.0,
                    b,
                )
    # Laplacian >= 3x torch.func and hessQuik where n d w^2 >= 1e6
    for label in _labels(R):
        recs = _sel(R, label, "laplacian")
        if not recs:
            continue
        r0 = recs[0]
        if r0["n"] * r0["d"] * r0["width"] ** 2 < 1e6:
            continue
        xb = _best_x(R, label, "laplacian")
        for peer in ("torch.func tr(vmap(hessian))", "hessQuik[laplacian]"):
            faster(f"Laplacian >= 3x faster than {peer} (n d w^2 >= 1e6)", label, "laplacian", xb, peer, 3.0)
    # Laplacian at >= 60% of the matmul rate on P2 and P4
    for fam in ("P2", "P4"):
        for label in _labels(R, fam):
            xb = _best_x(R, label, "laplacian")
            if xb is None:
                add("Laplacian >= 60% of matmul rate", label, None, 0.6, False, "no verified xderiv result")
            else:
                f = xb["frac_matmul"]
                add(
                    "Laplacian >= 60% of matmul rate",
                    label,
                    f,
                    0.6,
                    f >= 0.6,
                    f"{xb['method']}: {xb['gflops']:.2f} GF/s by formula ({xb['flop_kind']}) = {f:.0%} of "
                    f"{result['machine_matmul_flops'] / 1e9:.1f} GF/s",
                )
    # Hessian faster than jax.hessian jit on P1 (d = 16, 128) and P4, each backend
    for label in _labels(R):
        recs = _sel(R, label, "hessian")
        if not recs:
            continue
        r0 = recs[0]
        if (r0["problem"] == "P1" and r0["d"] in (16, 128)) or r0["problem"] == "P4":
            for b in BACKENDS:
                faster(
                    f"Hessian faster than jax.hessian jit ({b})",
                    label,
                    "hessian",
                    _best_x(R, label, "hessian", b),
                    "jax.hessian jit",
                    1.0,
                    b,
                )
    # Hessian vs torch.func, hessQuik; memory
    for label in _labels(R):
        recs = _sel(R, label, "hessian")
        if not recs:
            continue
        r0 = recs[0]
        xb = _best_x(R, label, "hessian")
        faster(
            "Hessian >= 5x faster than torch.func vmap(hessian)", label, "hessian", xb, "torch.func vmap(hessian)", 5.0
        )
        faster(
            "Hessian >= 3x faster than torch.func vmap(jacrev(jacrev))",
            label,
            "hessian",
            xb,
            "torch.func vmap(jacrev(jacrev))",
            3.0,
        )
        factor = 20.0 if r0["width"] >= 64 else 3.0
        hq = [r for r in _ok(recs) if r["method"].startswith("hessQuik")]
        xs = [r for r in recs if r["is_xderiv"]]
        if xb is None and xs and all(r.get("status") == "skipped" for r in xs):
            add(
                f"Hessian >= {factor:g}x faster than hessQuik's best mode",
                label,
                None,
                factor,
                None,
                f"xderiv skipped: {xs[0].get('note')}",
            )
        elif xb is None:
            add(
                f"Hessian >= {factor:g}x faster than hessQuik's best mode",
                label,
                None,
                factor,
                False,
                "no verified xderiv result",
            )
        elif not hq:
            add(
                f"Hessian >= {factor:g}x faster than hessQuik's best mode",
                label,
                None,
                factor,
                None,
                "hessQuik: "
                + "; ".join(f"{r['method']} {_why_missing(r)}" for r in recs if r["method"].startswith("hessQuik")),
            )
        else:
            hb = min(hq, key=lambda r: r["median_s"])
            s = hb["median_s"] / xb["median_s"]
            add(
                f"Hessian >= {factor:g}x faster than hessQuik's best mode",
                label,
                s,
                factor,
                s >= factor,
                f"{xb['method']} {xb['median_s'] * 1e3:.3g} ms vs {hb['method']} {hb['median_s'] * 1e3:.3g} ms",
            )
        isz = 8 if result["dtype"] == "float64" else 4
        bound = 2.0 * (r0["n"] * r0["m"] * r0["d"] ** 2 + r0["n"] * r0["d"] * r0["width"]) * isz
        for b in BACKENDS:
            a = [r for r in _ok(recs) if r["method"] == f"xderiv-{b}[auto]" and "peak_mem" in r]
            if a and bound < 8 * 2**20:
                add(
                    f"Hessian peak memory <= 2x (output + one layer's Jacobian) ({b})",
                    label,
                    None,
                    1.0,
                    None,
                    f"bound {bound / 2**20:.2f} MiB too small to measure against RSS noise",
                )
            elif a:
                ratio = a[0]["peak_mem"] / bound
                add(
                    f"Hessian peak memory <= 2x (output + one layer's Jacobian) ({b})",
                    label,
                    ratio,
                    1.0,
                    ratio <= 1.0,
                    f"peak {a[0]['peak_mem'] / 2**20:.1f} MiB ({a[0]['peak_mem_method']}) vs "
                    f"bound {bound / 2**20:.1f} MiB",
                )
    # P3 d = 784
    for label in _labels(R, "P3"):
        recs = _sel(R, label, "laplacian")
        if not recs or recs[0]["d"] != 784:
            continue
        xb = _best_x(R, label, "laplacian")
        faster(
            "P3: Laplacian >= 10x faster than torch.func's",
            label,
            "laplacian",
            xb,
            "torch.func tr(vmap(hessian))",
            10.0,
        )
        d = recs[0]["d"]
        for b in BACKENDS:
            xl = _best_x(R, label, "laplacian", b)
            v = _sel(R, label, "value", f"xderiv-{b}")
            if xl is None or not v or v[0].get("status") != "ok":
                add(
                    f"P3: Laplacian cheaper than (d+2) forward passes ({b})",
                    label,
                    None,
                    d + 2,
                    False,
                    "missing result",
                )
                continue
            k = xl["median_s"] / v[0]["median_s"]
            add(
                f"P3: Laplacian cheaper than (d+2) forward passes ({b})",
                label,
                k,
                d + 2,
                k < d + 2,
                f"{xl['method']} = {k:.1f} forward passes",
            )
    # Gradient <= 2.5 forward passes; auto within 10% of the best mode
    for label in _labels(R):
        for b in BACKENDS:
            g = _sel(R, label, "gradient", f"xderiv-{b}[auto]")
            v = _sel(R, label, "value", f"xderiv-{b}")
            if g and v and g[0].get("status") == "ok" and v[0].get("status") == "ok":
                k = g[0]["median_s"] / v[0]["median_s"]
                add(
                    f"Gradient <= 2.5 forward passes ({b})",
                    label,
                    k,
                    2.5,
                    k <= 2.5,
                    f"{g[0]['median_s'] * 1e3:.3g} ms / {v[0]['median_s'] * 1e3:.3g} ms",
                )
            for q in ("gradient", "hessian", "laplacian"):
                recs = [r for r in _ok(_sel(R, label, q)) if r["method"].startswith(f"xderiv-{b}[")]
                auto = [r for r in recs if r["mode"] == "auto"]
                if not auto or len(recs) < 2:
                    continue
                best = min(recs, key=lambda r: r["median_s"])
                k = auto[0]["median_s"] / best["median_s"]
                add(
                    f"auto within 10% of the best mode ({b}, {q})",
                    label,
                    k,
                    1.1,
                    k <= 1.1,
                    f"auto {auto[0]['median_s'] * 1e3:.3g} ms, best {best['method']} {best['median_s'] * 1e3:.3g} ms",
                )
    # correctness: every xderiv method verified, reference cross-checked
    for label in _labels(R):
        for r in _sel(R, label):
            if r["is_xderiv"] and r.get("status") in ("mismatch", "error"):
                add(
                    "xderiv result verified",
                    label,
                    r.get("max_rel_err"),
                    result["tolerance"],
                    False,
                    f"{r['method']} {r['quantity']}: {_why_missing(r)}",
                )
        seen = set()
        for r in _sel(R, label):
            c = r.get("reference_crosscheck")
            if c and r["quantity"] not in seen:
                seen.add(r["quantity"])
                if not c["ok"]:
                    add(
                        "reference agrees with torch autograd",
                        label,
                        c["rel_err"],
                        1e-8,
                        False,
                        f"{r['quantity']}: {c['against']}: {c['problem'] or ''}",
                    )
    return T


# --------------------------------------------------------------------------- markdown


def _fmt_t(s):
    if s is None:
        return "-"
    return f"{s * 1e3:.3g} ms" if s < 1 else f"{s:.3g} s"


def _fmt(x, f="{:.3g}"):
    return "-" if x is None else f.format(x)


def _md_summary(res):
    R = res["records"]
    lines = ["| problem | quantity | best xderiv | time | best peer | time | ratio |", "|---|---|---|---|---|---|---|"]
    for label in _labels(R):
        for q in ("value", "gradient", "hessian", "laplacian"):
            recs = _sel(R, label, q)
            if not recs:
                continue
            xb = _best_x(R, label, q)
            pk = [r for r in _ok(recs) if not r["is_xderiv"]]
            pb = min(pk, key=lambda r: r["median_s"]) if pk else None
            ratio = xb["median_s"] / pb["median_s"] if xb and pb else None
            lines.append(
                f"| {label} | {q} | {xb['method'] if xb else '-'} | {_fmt_t(xb['median_s'] if xb else None)}"
                f" | {pb['method'] if pb else '-'} | {_fmt_t(pb['median_s'] if pb else None)}"
                f" | {_fmt(ratio, '{:.2f}')} |"
            )
    return lines


def _md_result(res):
    R = res["records"]
    env = res["environment"]
    lines = [f"## {res['dtype']}" + (" (quick)" if res["quick"] else ""), ""]
    lines.append(
        f"Run {res['created']}: `{res['command']}`; xderiv {env.get('xderiv')}, numpy {env.get('numpy')}, "
        f"torch {env.get('torch')} ({env.get('torch_threads', '?')} threads), jax {env.get('jax')}, "
        f"folx {env.get('folx')}, hessQuik {env.get('hessQuik')}; {env.get('cpus')} CPUs."
    )
    lines.append(
        "Matrix-multiply rate measured in this run: "
        + ", ".join(f"{k} {v['peak_flops'] / 1e9:.1f} GF/s" for k, v in env["gemm"].items())
        + f" (the fraction column divides by the best, {res['machine_matmul_flops'] / 1e9:.1f} GF/s)."
    )
    lines.append("")
    # targets
    T = res.get("targets", [])
    if T:
        lines += [
            "### Issue-3 targets",
            "",
            "| target | problem | measured | need | met | detail |",
            "|---|---|---|---|---|---|",
        ]
        for t in T:
            met = {True: "yes", False: "**NO**", None: "n/a"}[t["met"]]
            lines.append(
                f"| {t['target']} | {t['problem']} | {_fmt(t['measured'])} | {_fmt(t['threshold'], '{:g}')}"
                f" | {met} | {t['detail']} |"
            )
        lines.append("")
    # summary
    lines += ["### Summary (best verified xderiv vs best verified peer)", ""] + _md_summary(res) + [""]
    # detail
    lines += [
        "### All methods",
        "",
        "| problem | quantity | method | median | reps | ratio to best peer | GFLOP (formula) | GF/s "
        "| % matmul | peak MiB | max rel err | status |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in R:
        st = r.get("status", "?")
        if st != "ok":
            st = f"{st}: {r.get('note') or r.get('verify_note') or ''}".strip()
        mem = r.get("peak_mem")
        lines.append(
            f"| {r['label']} | {r['quantity']} | {r['method']} | {_fmt_t(r.get('median_s'))} | {r.get('repeats', '-')}"
            f" | {_fmt(r.get('ratio_to_best_peer'), '{:.2f}')} | {_fmt(r['flops'] / 1e9 if 'flops' in r else None)}"
            f" ({r.get('flop_kind', '-')}) | {_fmt(r.get('gflops'), '{:.2f}')}"
            f" | {_fmt(100 * r['frac_matmul'] if 'frac_matmul' in r else None, '{:.1f}')}"
            f" | {_fmt(mem / 2**20 if mem is not None else None, '{:.1f}')}"
            f"{'' if mem is None else ' ' + r['peak_mem_method'][:3]}"
            f" | {_fmt(r.get('max_rel_err'), '{:.1e}')} | {st} |"
        )
    lines.append("")
    return lines


def write_report(out: Path, plots=True, log=print):
    out = Path(out)
    results = []
    for dt in ("float64", "float32"):
        path = out / f"results_{dt}.json"
        if path.exists():
            res = json.loads(path.read_text())
            res["targets"] = evaluate_targets(res)  # re-evaluated, so a report rebuild sees the current rules
            results.append(res)
    lines = [
        "# xderiv benchmark results",
        "",
        "Generated by `python benchmarks/run.py`; columns are explained in benchmarks/README.md. "
        "Times are medians of repeats in one process; every method was first checked against the "
        "float64 reference (xderiv on NumPy, mode auto, itself cross-checked against torch autograd).",
        "",
    ]
    for res in results:
        lines += _md_result(res)
        if plots:
            for png in make_plots(res, out, log):
                lines += [f"![{png.stem}]({png.name})", ""]
    (out / "results.md").write_text("\n".join(lines))
    log(f"wrote {out / 'results.md'}")
    readme = Path(__file__).resolve().parent / "README.md"
    if out.resolve() == readme.parent / "results" and readme.exists():
        _update_readme(readme, results, log)


START, END = "<!-- results:start -->", "<!-- results:end -->"


def _update_readme(readme: Path, results, log=print):
    """Replace the README's results section by the latest summary (default --out only)."""
    text = readme.read_text()
    if START not in text or END not in text:
        return
    lines = [START, ""]
    for res in results:
        T = res.get("targets", [])
        met = sum(t["met"] is True for t in T)
        missed = sum(t["met"] is False for t in T)
        lines += [
            f"### {res['dtype']}{' (quick)' if res['quick'] else ''} — {res['created']}",
            "",
            f"`{res['command']}`; matrix-multiply rate {res['machine_matmul_flops'] / 1e9:.1f} GF/s; "
            f"issue-3 targets: {met} met, {missed} missed, {len(T) - met - missed} n/a "
            "(details in [results/results.md](results/results.md)).",
            "",
        ]
        lines += _md_summary(res) + [""]
        for png in sorted(readme.parent.glob(f"results/p*_time_vs_d_{res['dtype']}.png")):
            lines += [f"![{png.stem}](results/{png.name})", ""]
    lines.append(END)
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    readme.write_text(head + "\n".join(lines) + tail)
    log(f"updated {readme}")


# --------------------------------------------------------------------------- plots


def make_plots(res, out: Path, log=print):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib not installed: no plots")
        return []
    R = [r for r in res["records"] if r.get("status") == "ok"]
    dtype = res["dtype"]
    pngs = []
    for fam, qs in (("P1", ("gradient", "hessian", "laplacian")), ("P3", ("gradient", "laplacian"))):
        recs = [r for r in R if r["problem"] == fam]
        ns = sorted({r["n"] for r in recs})
        if not recs or len({r["d"] for r in recs}) < 2:
            continue
        cmap = plt.get_cmap("tab20")
        colors = {meth: cmap(i % 20) for i, meth in enumerate(sorted({r["method"] for r in recs}))}
        fig, axes = plt.subplots(len(ns), len(qs), figsize=(5.2 * len(qs), 4.2 * len(ns)), squeeze=False)
        for i, n in enumerate(ns):
            for j, q in enumerate(qs):
                ax = axes[i][j]
                rr = [r for r in recs if r["n"] == n and r["quantity"] == q]
                for meth in sorted({r["method"] for r in rr}):
                    pts = sorted((r["d"], r["median_s"]) for r in rr if r["method"] == meth)
                    x = meth.startswith("xderiv")
                    ax.plot(
                        [p[0] for p in pts],
                        [p[1] for p in pts],
                        marker="o" if x else "s",
                        ls="-" if x else "--",
                        lw=2 if x else 1.2,
                        color=colors[meth],
                        label=meth,
                    )
                ax.set_xscale("log")
                ax.set_yscale("log")
                ax.set_xlabel("input dimension d")
                ax.set_ylabel("median time [s]")
                ax.set_title(f"{fam} {q}, n={n} ({dtype})")
                ax.grid(True, which="both", alpha=0.3)
                ax.legend(fontsize=7)
        fig.tight_layout()
        png = out / f"{fam.lower()}_time_vs_d_{dtype}.png"
        fig.savefig(png, dpi=90)
        plt.close(fig)
        pngs.append(png)
        log(f"wrote {png}")
    return pngs


if __name__ == "__main__":
    import sys

    write_report(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "results"))
