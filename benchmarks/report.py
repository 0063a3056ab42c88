"""Tables and plots from pytest-benchmark JSON files.

    python benchmarks/report.py benchmarks/results/bench_float64.json [more.json ...] [--out benchmarks/results]

Writes ``results.md`` (per run: best xderiv against the best peer for every problem and
quantity, then every method, then what was not timed and why) and, where a run has P1 or
P3 at several d, ``p1_time_vs_d_<dtype>.png`` / ``p3_time_vs_d_<dtype>.png``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _ms(s):
    return "-" if s is None else f"{s * 1e3:.3g} ms" if s < 1 else f"{s:.3g} s"


def _groups(benchmarks):
    """{(label, quantity): [records]} in the order the problems were run."""
    out = {}
    for b in sorted(benchmarks, key=lambda b: b["extra_info"]["order"]):
        e = b["extra_info"]
        out.setdefault((e["label"], e["quantity"]), []).append({**e, **b["stats"]})
    return out


def section(run, name):
    o, v = run["options"], run["versions"]
    tag = f"{o['dtype']}, {o['device']}" + (", quick" if o["quick"] else "")
    lines = [f"## {tag}", ""]
    lines.append(
        f"`{name}`, {run['datetime'][:16]}; {run['machine_info'].get('cpu', {}).get('brand_raw', '?')}, "
        f"{o['threads']} thread(s); " + ", ".join(f"{k} {x}" for k, x in v.items() if x) + "."
    )
    if "load_average" in run:
        la = run["load_average"]
        lines[-1] += f" Load average {la['start']:.1f} at the start, {la['end']:.1f} at the end, on {la['cpus']} CPUs."
    summary = [
        "| problem | quantity | best xderiv | time | best peer | time | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    detail = ["| problem | quantity | method | median | rounds | ratio to best peer | max rel err |", "|---" * 7 + "|"]
    for (label, q), recs in _groups(run["benchmarks"]).items():
        xs = [r for r in recs if r["is_xderiv"]]
        peers = [r for r in recs if not r["is_xderiv"]]
        bx = min(xs, key=lambda r: r["median"]) if xs else None
        bp = min(peers, key=lambda r: r["median"]) if peers else None
        ratio = f"{bx['median'] / bp['median']:.2f}" if bx and bp else "-"
        summary.append(
            f"| {label} | {q} | {bx['method'] if bx else '-'} | {_ms(bx and bx['median'])} "
            f"| {bp['method'] if bp else '-'} | {_ms(bp and bp['median'])} | {ratio} |"
        )
        for r in sorted(recs, key=lambda r: r["median"]):
            rr = f"{r['median'] / bp['median']:.2f}" if bp else "-"
            detail.append(
                f"| {label} | {q} | {r['method']} | {_ms(r['median'])} | {r['rounds']} | {rr} "
                f"| {r['max_rel_err']:.1e} |"
            )
    lines += ["", "### Best xderiv against the best peer (ratio < 1: xderiv faster)", "", *summary, ""]
    lines += ["### Every method", "", *detail, ""]
    if run.get("not_timed"):
        lines += ["### Not timed", "", "| problem | quantity | method | status | reason |", "|---|---|---|---|---|"]
        for r in run["not_timed"]:
            why = r["reason"].removeprefix("Skipped: ").replace("|", "/").replace("\n", " ")
            lines.append(f"| {r['label']} | {r['quantity']} | {r['method']} | {r['status']} | {why} |")
        lines.append("")
    return lines


def plot(run, out: Path):
    """Median time against d, log-log, one line per method (xderiv solid, peers dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    o = run["options"]
    recs = [r for rs in _groups(run["benchmarks"]).values() for r in rs]
    pngs = []
    for fam, qs in (("P1", ("gradient", "hessian", "laplacian")), ("P3", ("gradient", "laplacian"))):
        fr = [r for r in recs if r["problem"] == fam]
        ns = sorted({r["n"] for r in fr})
        if len({r["d"] for r in fr}) < 2:
            continue
        cmap = plt.get_cmap("tab20")
        colors = {m: cmap(i % 20) for i, m in enumerate(sorted({r["method"] for r in fr}))}
        fig, axes = plt.subplots(len(ns), len(qs), figsize=(5.2 * len(qs), 4.2 * len(ns)), squeeze=False)
        for i, n in enumerate(ns):
            for j, q in enumerate(qs):
                ax, rr = axes[i][j], [r for r in fr if r["n"] == n and r["quantity"] == q]
                plot_time_vs_d(ax, rr, colors)
                ax.set_title(f"{fam} {q}, n={n} ({o['dtype']}, {o['device']})")
                ax.grid(True, which="both", alpha=0.3)
                ax.legend(fontsize=7)
        fig.tight_layout()
        suffix = "" if o["device"] == "cpu" else f"_{o['device']}"
        png = out / f"{fam.lower()}_time_vs_d_{o['dtype']}{suffix}.png"
        fig.savefig(png, dpi=90)
        plt.close(fig)
        pngs.append(png)
    return pngs


def plot_time_vs_d(ax, recs: list[dict], colors: dict) -> None:
    """Each method's median time against d on ``ax``, log-log: xderiv solid with circles, peers dashed."""
    for m in sorted({r["method"] for r in recs}):
        pts = sorted((r["d"], r["median"]) for r in recs if r["method"] == m)
        x = m.startswith("xderiv")
        ax.plot(*zip(*pts), marker="o" if x else "s", ls="-" if x else "--", lw=2 if x else 1.2,
                color=colors[m], label=m)  # fmt: skip
    ax.set(xscale="log", yscale="log", xlabel="input dimension d", ylabel="median time [s]")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", nargs="+", type=Path, help="pytest-benchmark JSON files (--benchmark-json)")
    ap.add_argument("--out", type=Path, default=None, help="folder for results.md and the PNGs (default: the JSON's)")
    args = ap.parse_args()
    out = args.out or args.json[0].parent
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        "# xderiv benchmark results",
        "",
        "Made by `benchmarks/report.py` from pytest-benchmark JSON; see benchmarks/README.md. Medians of "
        "one-call rounds in one process, same weights for every method; each method was first checked "
        "against xderiv's float64 answer (NumPy, mode auto).",
        "",
    ]
    for path in args.json:
        run = json.loads(path.read_text())
        lines += section(run, path.name)
        lines += [f"![{png.stem}]({png.name})\n" for png in plot(run, out)]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / 'results.md'}")


if __name__ == "__main__":
    main()
