"""Write the manual's speed page, ``docs/performance.md``, and its plots from ``benchmarks/results/``.

    python benchmarks/make_performance_page.py [--results benchmarks/results] [--docs docs] [--check]

Reads every pytest-benchmark run ``bench_*.json`` (``nox -s bench``), every run of the
graphs family ``graphs_*.json`` (``python benchmarks/graphs.py``), the host allocator
measurement ``host_allocator.json`` (``python benchmarks/host_allocator.py``) and the
hand-recorded measurements of ``benchmarks/notes.md``, and writes the page (headline
table, then per benchmark family a plot of xderiv against its peers and the table of every
method) and ``docs/performance/<family>_<dtype>.png``.  Rerun it after a benchmark run and
commit the page and the plots; never edit the page by hand.  ``--check`` draws nothing and
fails if the committed page differs from what the results give (the ``docs`` nox session runs it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from report import plot_time_vs_d

HERE = Path(__file__).resolve().parent

FAMILIES = {
    "P1": "hessQuik's timing net: antitanh d→16, 4 residual tanh (h = 0.5), linear 16→1; d ∈ {2, 16, 128, 1024}",
    "P2": "PINN MLP 50→768→768→512→512→1, tanh, n = 256",
    "P3": "OT-Flow potential w·N(s) + ½sᵀAs + c·s + b, N: antitanh d→64, 2 residual antitanh; d ∈ {63, 784}",
    "P4": "antitanh 64→64, 4 residual tanh (h = 0.5), linear 64→1, n = 200",
    "OP": "P4's network at d ∈ {64, 256}: `trace_hessian` along k directions, the Laplacian over coordinates 1..d−1",
    "T4": "P4's network: ∂ᵥ⁴y along one direction (`xd.taylor(..., order=4)`)",
    "BH": "P4's network at d = 16: Δ²y (`xd.biharmonic`; `[directions]`: the d²-direction Taylor formula)",
    "SO": (
        "tanh MLP d→64→64→1, n = 1000, d ∈ {5, 20, 100}: `xd.second_order(net, x, A)` with a dense, symmetric, "
        "indefinite A of rank r = d and r = 2, against the Hessian (torch.func, jax) contracted with A and "
        "against `trace_hessian(S+) - trace_hessian(S-)` on A's positive and negative parts; `value`: one "
        "forward pass (`--problems second_order`)"
    ),
    "graphs": (
        "Networks that are not chains, differentiated by the jet engine (`xd.function`, and "
        "`graph_function(module)` of the same network written as a torch module): the modified MLP, a "
        "PirateNet, an MLP with LayerNorm, and the plain tanh MLP (also through the chain recursion: "
        "`chain`); width 64, float64, one thread, d ∈ {2, 10, 100} (`benchmarks/graphs.py`, "
        "`benchmarks/graph_nets.py`). `training`: one PINN step, mean((Δu − f)²) + 100·mean(u_b²) and "
        "its gradient with respect to every weight; `value`: one forward pass."
    ),
}

# The headline rows: (problem label, quantity).
HEADLINE = [
    ("P1 d=1024 n=10", "hessian"),
    ("P1 d=1024 n=1000", "laplacian"),
    ("P1 d=128 n=1000", "hessian"),
    ("P3 d=784 n=512", "laplacian"),
    ("P2 d=50 n=256", "laplacian"),
    ("P2 d=50 n=256", "hessian"),
    ("P4 d=64 n=200", "laplacian"),
    ("P4 d=64 n=200", "hessian"),
    ("P1 d=16 n=1000", "laplacian"),
    ("P1 d=16 n=1000", "hessian"),
    ("P1 d=2 n=10", "laplacian"),
    ("OP d=256 k=4 n=256", "trace_hessian"),
]


def _ms(s: float | None) -> str:
    return "–" if s is None else f"{s * 1e3:.3g} ms" if s < 1 else f"{s:.3g} s"


def _records(run: dict) -> list[dict]:
    return [
        {**b["extra_info"], **{k: b["stats"][k] for k in ("median", "rounds")}, "cpu": b["stats"].get("cpu_median")}
        for b in run["benchmarks"]
    ]


def _groups(recs: list[dict]) -> dict[tuple[str, str], list[dict]]:
    out: dict[tuple[str, str], list[dict]] = {}
    for r in sorted(recs, key=lambda r: r["order"]):
        out.setdefault((r["label"], r["quantity"]), []).append(r)
    return out


def _best(recs: list[dict], keep) -> dict | None:
    chosen = [r for r in recs if keep(r)]
    return min(chosen, key=lambda r: r["median"]) if chosen else None


def _run_line(run: dict, name: str) -> str:
    o, v = run["options"], run["versions"]
    cpu = run["machine_info"].get("cpu", {}).get("brand_raw", "?")
    la = run.get("load_average")
    load = (
        ""
        if not la
        else f" Load average {la['start']:.1f} at the start, {la['end']:.1f} at the end, on {la['cpus']} CPUs."
    )
    return (
        f"Run `{name}`, recorded {run['datetime'][:16].replace('T', ' ')} UTC on {cpu} "
        f"({run['machine_info'].get('system', '?')}), {o['dtype']}, device {o['device']}, "
        f"{o['threads']} thread(s), the process pinned to {len(o.get('pinned_cores') or []) or 'no'} core(s); "
        + ", ".join(f"{k} {x}" for k, x in v.items() if x)
        + "."
        + load
    )


def headline(run: dict) -> list[str]:
    groups = _groups(_records(run))
    lines = [
        "| problem | quantity | xderiv eager NumPy (auto) | `xd.compile` (torch or jax) | best peer | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for key in HEADLINE:
        recs = groups.get(key)
        if not recs:
            continue
        eager = _best(recs, lambda r: r["method"] == "xderiv-numpy[auto]")
        compiled = _best(recs, lambda r: r["method"].endswith("xd.compile"))
        peer = _best(recs, lambda r: not r["is_xderiv"])
        best = _best(recs, lambda r: r["is_xderiv"])
        comp = "–" if not compiled else f"{_ms(compiled['median'])} ({compiled['method'].split()[0][len('xderiv-') :]})"
        ratio = f"{best['median'] / peer['median']:.2f}" if best and peer else "–"
        lines.append(
            f"| {key[0]} | {key[1]} | {_ms(eager and eager['median'])} | {comp} "
            f"| {peer['method'] + ' ' + _ms(peer['median']) if peer else '–'} | {ratio} |"
        )
    return lines


def family_table(recs: list[dict]) -> list[str]:
    lines = ["| problem | quantity | method | median | rounds | ÷ best peer |", "|---|---|---|---|---|---|"]
    for (label, q), rs in _groups(recs).items():
        peer = _best(rs, lambda r: not r["is_xderiv"])
        for r in sorted(rs, key=lambda r: r["median"]):
            ratio = f"{r['median'] / peer['median']:.2f}" if peer else "–"
            name = f"**{r['method']}**" if r["is_xderiv"] else r["method"]
            lines.append(f"| {label} | {q} | {name} | {_ms(r['median'])} | {r['rounds']} | {ratio} |")
    return lines


def plot_family(fam: str, recs: list[dict], run: dict, png: Path) -> None:
    """P1, P3 (several d): median time against d, log-log; the others: one bar per method. xderiv solid/blue."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    o = run["options"]
    methods = sorted({r["method"] for r in recs})
    cmap = plt.get_cmap("tab20")
    colors = {m: cmap(i % 20) for i, m in enumerate(methods)}
    qs = list(dict.fromkeys(r["quantity"] for r in recs if r["quantity"] != "value"))
    if len({r["d"] for r in recs}) > 1 and fam in ("P1", "P3"):
        ns = sorted({r["n"] for r in recs})
        fig, axes = plt.subplots(len(ns), len(qs), figsize=(4.6 * len(qs), 3.8 * len(ns)), squeeze=False)
        for i, n in enumerate(ns):
            for j, q in enumerate(qs):
                ax, rr = axes[i][j], [r for r in recs if r["n"] == n and r["quantity"] == q]
                plot_time_vs_d(ax, rr, colors)
                ax.set_title(f"{fam} {q}, n={n}", fontsize=10)
                ax.grid(True, which="both", alpha=0.3)
                ax.legend(fontsize=6)
    else:
        panels = list(_groups([r for r in recs if r["quantity"] != "value"]).items())
        cols = min(len(panels), 4)
        rows = -(-len(panels) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 0.9 + 0.32 * len(methods) * rows), squeeze=False)
        for ax in axes.flat[len(panels) :]:
            ax.axis("off")
        for ax, ((label, q), rs) in zip(axes.flat, panels):
            rs = sorted(rs, key=lambda r: r["median"], reverse=True)
            ax.barh(
                [r["method"] for r in rs],
                [r["median"] for r in rs],
                color=["tab:blue" if r["is_xderiv"] else "tab:orange" for r in rs],
            )
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_xlabel("median time [s] (blue: xderiv)")
            ax.set_title(f"{label}: {q}", fontsize=10)
            ax.tick_params(axis="y", labelsize=7)
            ax.grid(True, axis="x", which="both", alpha=0.3)
    cpu = run["machine_info"].get("cpu", {}).get("brand_raw", "?")
    when = run["datetime"][:10]
    fig.suptitle(f"{fam}: {o['dtype']}, {o['device']} ({cpu}, {o['threads']} thread), {when}", fontsize=11)
    fig.tight_layout()
    fig.savefig(png, dpi=72)
    plt.close(fig)


GRAPH_QUANTITIES = ("laplacian", "hessian", "training")


def _median(recs: list[dict], label: str, q: str, method: str, key: str = "median") -> float | None:
    for r in recs:
        if r["label"] == label and r["quantity"] == q and r["method"] == method:
            return r.get(key)
    return None


def _ratio(a: float | None, b: float | None, fmt: str = "{:.2f}") -> str:
    return "–" if a is None or b is None else fmt.format(a / b)


def graphs_tables(recs: list[dict]) -> list[str]:
    """The targets of the graphs family: ratios of the same run, and the Laplacian in forward passes."""
    labels = list(dict.fromkeys(r["label"] for r in sorted(recs, key=lambda r: r["order"])))
    xf, gf, chain = "xderiv-torch xd.function", "xderiv-torch graph_function", "xderiv-torch chain"
    tf, jet, ag = "torch.func tr(vmap(hessian))", "jet-for-pytorch collapsed", "torch autograd double-backward"
    xj, folx = "xderiv-jax xd.function jit", "folx forward_laplacian jit"
    lines = [
        "**Laplacian.** Ratios of medians in the same run (below 1: xderiv faster); *passes*: the "
        "Laplacian's time in forward passes of the same network on the same library (torch eager, or "
        "`jax.jit`), against the forward Laplacian's flop count of d + 2 passes (the value, d tangents, "
        "one collapsed second-order term through every matrix product).",
        "",
        "| network | d | n | xd.function | ÷ torch.func | ÷ jet-for-pytorch | ÷ autograd "
        "| graph_function ÷ xd.function | chain ÷ xd.function | xderiv-jax jit ÷ folx "
        "| passes: xd.function / jet / xderiv-jax / folx | d + 2 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label in labels:
        q = "laplacian"
        t = {m: _median(recs, label, q, m) for m in (xf, gf, chain, tf, jet, ag, xj, folx)}
        if t[xf] is None:
            continue
        fwd_t, fwd_j = _median(recs, label, "value", "torch eager"), _median(recs, label, "value", "jax jit")
        net, d, n = next((r["network"], r["d"], r["n"]) for r in recs if r["label"] == label)
        passes = " / ".join(
            _ratio(t[m], fwd, "{:.0f}") for m, fwd in ((xf, fwd_t), (jet, fwd_t), (xj, fwd_j), (folx, fwd_j))
        )
        lines.append(
            f"| {net} | {d} | {n} | {_ms(t[xf])} | {_ratio(t[xf], t[tf])} | {_ratio(t[xf], t[jet])} "
            f"| {_ratio(t[xf], t[ag])} "
            f"| {_ratio(t[gf], t[xf])} | {_ratio(t[chain], t[xf])} | {_ratio(t[xj], t[folx])} | {passes} | {d + 2} |"
        )
    lines += [
        "",
        "**Hessian and training step.** Ratios of medians in the same run (below 1: xderiv faster).",
        "",
        "| network | d | n | Hessian xd.function | ÷ torch.func vmap(hessian) | xderiv-jax jit ÷ jax vmap(hessian) jit "
        "| training xd.function | ÷ torch autograd | ÷ torch.func | xderiv-jax jit ÷ folx jit |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label in labels:
        h = {
            m: _median(recs, label, "hessian", m) for m in (xf, "torch.func vmap(hessian)", xj, "jax vmap(hessian) jit")
        }
        t = {m: _median(recs, label, "training", m) for m in (xf, ag, tf, xj, folx)}
        if h[xf] is None and t[xf] is None:
            continue
        net, d, n = next((r["network"], r["d"], r["n"]) for r in recs if r["label"] == label)
        lines.append(
            f"| {net} | {d} | {n} | {_ms(h[xf])} | {_ratio(h[xf], h['torch.func vmap(hessian)'])} "
            f"| {_ratio(h[xj], h['jax vmap(hessian) jit'])} | {_ms(t[xf])} | {_ratio(t[xf], t[ag])} "
            f"| {_ratio(t[xf], t[tf])} | {_ratio(t[xj], t[folx])} |"
        )
    if not any(r.get("cpu") is not None for r in recs):
        return lines
    lines += [
        "",
        "**CPU time.** The same ratios from the process's CPU time in each round (on a machine shared "
        "with other work, the wall clock also counts the time the process waited for its core).",
        "",
        "| network | d | n | Laplacian xd.function | ÷ torch.func | ÷ jet-for-pytorch | ÷ autograd "
        "| training xd.function | ÷ torch autograd | ÷ torch.func |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label in labels:
        lap = {m: _median(recs, label, "laplacian", m, "cpu") for m in (xf, tf, jet, ag)}
        t = {m: _median(recs, label, "training", m, "cpu") for m in (xf, ag, tf)}
        if lap[xf] is None:
            continue
        net, d, n = next((r["network"], r["d"], r["n"]) for r in recs if r["label"] == label)
        lines.append(
            f"| {net} | {d} | {n} | {_ms(lap[xf])} | {_ratio(lap[xf], lap[tf])} | {_ratio(lap[xf], lap[jet])} "
            f"| {_ratio(lap[xf], lap[ag])} | {_ms(t[xf])} | {_ratio(t[xf], t[ag])} | {_ratio(t[xf], t[tf])} |"
        )
    return lines


def graphs_flops_table(path: Path) -> list[str]:
    """Matrix-product flops of each Laplacian in forward passes (``benchmarks/graph_flops.py``)."""
    if not path.exists():
        return []
    rec = json.loads(path.read_text())
    cols = ["xderiv-torch xd.function", "xderiv-torch chain", "jet-for-pytorch collapsed",
            "xderiv-jax xd.function jit", "folx forward_laplacian jit"]  # fmt: skip
    cells: dict[tuple[str, int], dict[str, str]] = {}
    for r in rec["rows"]:
        cells.setdefault((r["network"], r["d"]), {})[r["method"]] = f"{r['flops_per_forward']:.1f}"
    lines = [
        f"**Flops.** The Laplacian's flops in forward passes of the same network, n = {rec['n']} "
        "(`python benchmarks/graph_flops.py`): torch methods count matrix products "
        "(`FlopCounterMode`), jax methods XLA's `cost_analysis()` (elementwise included). A forward "
        "Laplacian needs d + 2 passes of products, fewer where the input layer's tangents are the "
        "identity (no product): every method does the same products; the time differences are elementwise "
        "passes, memory traffic and per-operation overhead.",
        "",
        "| network | d | " + " | ".join(cols) + " | d + 2 |",
        "|---|---|" + "---|" * len(cols) + "---|",
    ]
    for (net, d), row in cells.items():
        lines.append(f"| {net} | {d} | " + " | ".join(row.get(c, "–") for c in cols) + f" | {d + 2} |")
    return lines


def plot_graphs(recs: list[dict], run: dict, png: Path) -> None:
    """One figure: rows Laplacian / Hessian / training step, one column per network; time against d, log-log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    o = run["options"]
    nets = list(dict.fromkeys(r["network"] for r in sorted(recs, key=lambda r: r["order"])))
    qs = [q for q in GRAPH_QUANTITIES if any(r["quantity"] == q for r in recs)]
    methods = sorted({r["method"] for r in recs if r["quantity"] != "value"})
    cmap = plt.get_cmap("tab20")
    colors = {m: cmap(i % 20) for i, m in enumerate(methods)}
    fig, axes = plt.subplots(len(qs), len(nets), figsize=(4.4 * len(nets), 3.6 * len(qs)), squeeze=False)
    for i, q in enumerate(qs):
        for j, net in enumerate(nets):
            ax, rr = axes[i][j], [r for r in recs if r["network"] == net and r["quantity"] == q]
            plot_time_vs_d(ax, rr, colors)
            ns = sorted({r["n"] for r in rr})
            ax.set(xscale="log", yscale="log", xlabel="input dimension d", ylabel="median time [s]")
            ax.set_title(f"{net} {q}, n={'/'.join(map(str, ns))}", fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=6)
    cpu = run["machine_info"].get("cpu", {}).get("brand_raw", "?")
    fig.suptitle(
        f"graphs: {o['dtype']}, {o['device']} ({cpu}, {o['threads']} thread), {run['datetime'][:10]}", fontsize=11
    )
    fig.tight_layout()
    fig.savefig(png, dpi=72)
    plt.close(fig)


def host_allocator_section(path: Path) -> list[str]:
    if not path.exists():
        return ["No `benchmarks/results/host_allocator.json` yet: run `python benchmarks/host_allocator.py`.", ""]
    rec = json.loads(path.read_text())
    m, la = rec["machine"], rec["load_average"]
    lines = [
        f"Measured by `python benchmarks/host_allocator.py` on {rec['datetime'].replace('T', ' ')} "
        f"({m['cpu']}, {m['cpus']} CPUs shared with other work, load average {la['start']:.1f} at the start "
        f"and {la['end']:.1f} at the end; Python {m['python']}, {rec['threads']} thread): the same call in fresh "
        "processes without and with `xd.tune_host_allocator()`, the two alternated; median ms of each process.",
        "",
        "| library | problem | quantity | default allocator | after `xd.tune_host_allocator()` |",
        "|---|---|---|---|---|",
    ]
    for r in rec["rows"]:
        default = ", ".join(f"{t * 1e3:.1f}" for t in r["default_s"])
        tuned = ", ".join(f"{t * 1e3:.1f}" for t in r["tuned_s"])
        lines.append(f"| {r['library']} | `{r['problem']}` | {r['quantity']} | {default} | {tuned} |")
    return lines + [""]


INTRO = """\
# Speed

```{{note}}
This page is generated by `python benchmarks/make_performance_page.py` from the files in
`benchmarks/results/` (and the hand-recorded measurements of `benchmarks/notes.md`): rerun it
after a benchmark run, do not edit it by hand.
```

Every run times xderiv and its peers side by side in one process, on the same weights, each
method's result checked against xderiv's float64 answer before it is timed
(`benchmarks/README.md` says how, and how to run them). **Ratio** = best xderiv ÷ best peer:
**below 1, xderiv is faster.** The reference machine is small and shared: compare ratios
within one run, not absolute times across runs.
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=HERE / "results")
    ap.add_argument("--docs", type=Path, default=HERE.parent / "docs")
    ap.add_argument("--check", action="store_true", help="compare with the committed page; draw and write nothing")
    args = ap.parse_args()
    img = args.docs / "performance"
    if not args.check:
        img.mkdir(parents=True, exist_ok=True)
    lines = [INTRO.format()]
    runs = [(p.name, json.loads(p.read_text())) for p in sorted(args.results.glob("bench_*.json"))]
    for name, run in runs:
        o, rows = run["options"], headline(run)
        if len(rows) == 2:  # no headline row in this run (a family of its own): its section only
            continue
        lines += [f"## Headline: {o['dtype']} on {o['device']}", "", _run_line(run, name), ""]
        lines += ["The `xd.compile` column is the faster of torch (`torch.compile`) and jax (`jax.jit`).", ""]
        lines += [*rows, ""]
    for name, run in runs:
        o = run["options"]
        recs = _records(run)
        for fam in dict.fromkeys(r["problem"] for r in sorted(recs, key=lambda r: r["order"])):
            fr = [r for r in recs if r["problem"] == fam]
            png = img / f"{fam.lower()}_{o['dtype']}{'' if o['device'] == 'cpu' else '_' + o['device']}.png"
            if not args.check:
                plot_family(fam, fr, run, png)
            lines += [f"## {fam} ({o['dtype']}, {o['device']})", "", FAMILIES.get(fam, ""), ""]
            if len(headline(run)) == 2:
                lines += [_run_line(run, name), ""]
            lines += [f"![{fam}: xderiv against its peers]({png.relative_to(args.docs).as_posix()})", ""]
            lines += [*family_table(fr), ""]
        if run.get("not_timed"):
            lines += [f"## Not timed in `{name}`", "", "| problem | quantity | method | why |", "|---|---|---|---|"]
            for r in run["not_timed"]:
                why = r["reason"].removeprefix("Skipped: ").replace("|", "/").replace("\n", " ")
                lines.append(f"| {r['label']} | {r['quantity']} | {r['method']} | {r['status']}: {why} |")
            lines.append("")
    for name, run in [(p.name, json.loads(p.read_text())) for p in sorted(args.results.glob("graphs_*.json"))]:
        o = run["options"]
        recs = _records(run)
        png = img / f"graphs_{o['dtype']}{'' if o['device'] == 'cpu' else '_' + o['device']}.png"
        if not args.check:
            plot_graphs(recs, run, png)
        lines += [f"## graphs ({o['dtype']}, {o['device']})", "", FAMILIES["graphs"], "", _run_line(run, name), ""]
        lines += [*graphs_tables(recs), ""]
        flops = graphs_flops_table(args.results / "flops_graphs.json")
        lines += [*flops, ""] if flops else []
        lines += [f"![graphs: xderiv against its peers]({png.relative_to(args.docs).as_posix()})", ""]
        lines += [*family_table(recs), ""]
        if run.get("not_timed"):
            lines += [f"## Not timed in `{name}`", "", "| problem | quantity | method | why |", "|---|---|---|---|"]
            for r in run["not_timed"]:
                why = r["reason"].replace("|", "/").replace("\n", " ")
                lines.append(f"| {r['label']} | {r['quantity']} | {r['method']} | {r['status']}: {why} |")
            lines.append("")
    notes = (HERE / "notes.md").read_text(encoding="utf-8").rstrip().replace("{host_allocator_table}", "\n".join(
        host_allocator_section(args.results / "host_allocator.json")))  # fmt: skip
    lines += [notes, ""]
    out, text = args.docs / "performance.md", "\n".join(lines).rstrip() + "\n"
    if args.check:
        if not out.exists() or out.read_text(encoding="utf-8") != text:
            raise SystemExit(f"{out} differs from benchmarks/results/: run benchmarks/make_performance_page.py")
        print(f"{out} is up to date")
        return
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out} and {len(list(img.glob('*.png')))} plots in {img}")


if __name__ == "__main__":
    main()
