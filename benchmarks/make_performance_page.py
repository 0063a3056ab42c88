"""Write the manual's speed page, ``docs/performance.md``, and one plot per benchmark run, from ``benchmarks/results/``.

    python benchmarks/make_performance_page.py [--results benchmarks/results] [--docs docs] [--check]

The page is ``benchmarks/page.md`` with each ``<!-- name -->`` line replaced by what the results give: each
family's runs of ``test_bench.py`` (``<family>_<dtype>.json``; another machine's in a folder of its own) as a plot
and tables, and ``fresh.py``'s measurements.  ``--check`` draws nothing and fails if the committed page differs.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
HEADLINE = [
    "P1 d=1024 n=10 hessian", "P1 d=1024 n=1000 laplacian", "P1 d=128 n=1000 hessian", "P3 d=784 n=512 laplacian",
    "P2 d=50 n=256 laplacian", "P2 d=50 n=256 hessian", "P4 d=64 n=200 laplacian", "P4 d=64 n=200 hessian",
    "P1 d=16 n=1000 laplacian", "P1 d=16 n=1000 hessian", "P1 d=2 n=10 laplacian", "OP d=256 k=4 n=256 trace_hessian",
]  # fmt: skip


def _ms(s: float) -> str:
    return f"{s * 1e3:.3g} ms" if s < 1 else f"{s:.3g} s"


def _groups(run: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for b in run["benchmarks"]:
        label, q = b["group"].rsplit(" ", 1)
        out.setdefault(b["group"], []).append({**b, "label": label, "q": q, "x": b["name"].startswith("xderiv")})
    return out


def _best(rs: list[dict], keep: Callable[[dict], bool]) -> dict | None:
    return min((r for r in rs if keep(r)), key=lambda r: r["median"], default=None)


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|---" * len(header) + "|", *("| " + " | ".join(r) + " |" for r in rows)]


def run_line(name: str, run: dict) -> str:
    o, m, la = run["options"], run["machine_info"], run["load_average"]
    versions = ", ".join(f"{k} {v}" for k, v in run["versions"].items() if v)
    return (
        f"Run `{name}`{' (quick)' * o['quick']}, recorded {run['datetime'][:16].replace('T', ' ')} UTC on {m['cpu']} "
        f"({m['system']}, {m['cpus']} CPUs), {o['dtype']}, device {o['device']}, {o['threads']} thread(s) on "
        f"{o['cores']} core(s); {versions}. Load average {la['start']:.1f} at the start, {la['end']:.1f} at the end."
    )


def _lib(name: str) -> str:
    lib = name.split()[0].split("[")[0]
    return "jax" if lib.startswith("jax") else "torch autograd" if lib == "torch" else lib


def summary(groups: dict, only: list[str] | None = None) -> list[str]:
    """Per problem and quantity (not ``value``): the best xderiv method; its time ÷ the best peer's, each library's."""
    groups = {g: rs for g, rs in groups.items() if (g in only if only else not g.endswith(" value"))}
    libs = sorted({_lib(r["name"]) for rs in groups.values() for r in rs if not r["x"]})
    rows = []
    for g, rs in groups.items():
        best, cells = _best(rs, lambda r: r["x"]), []
        for lib in [None, *libs]:
            peer = _best(rs, lambda r: not r["x"] and lib in (None, _lib(r["name"])))
            cells.append(f"{best['median'] / peer['median']:.2g}" if best and peer else "–")
        rows.append([*g.rsplit(" ", 1), f"{best['name']} {_ms(best['median'])}" if best else "–", *cells])
    return table(["problem", "quantity", "best xderiv", "÷ best peer", *(f"÷ {lib}" for lib in libs)], rows)


def every_method(groups: dict) -> list[str]:
    """Every method's times; ``÷ forward``: in forward passes of the network on the same library (time, flops)."""
    value = {(r["label"], r["name"]): r["median"] for rs in groups.values() for r in rs if r["q"] == "value"}
    rows = []
    for rs in groups.values():
        peer = _best(rs, lambda r: not r["x"])
        for r in sorted(rs, key=lambda r: r["median"]):
            lib = "jax jit" if r["name"].endswith("jit") else "numpy eager" if "numpy" in r["name"] else "torch eager"
            fwd, cpu = value.get((r["label"], lib)), _ms(r["cpu"]) if "cpu" in r else "–"
            ratio, name = (
                f"{r['median'] / peer['median']:.2f}" if peer else "–",
                f"**{r['name']}**" * r["x"] or r["name"],
            )
            rows.append([r["label"], r["q"], name, _ms(r["median"]), cpu, str(r["rounds"]), ratio])
            rows[-1] += [f"{r['median'] / fwd:.3g}" if fwd else "–", f"{r['passes']:.3g}" if "passes" in r else "–"]
    header = ["problem", "quantity", "method", "median", "CPU", "rounds", "÷ best peer", "time ÷ forward"]
    return table([*header, "flops ÷ forward"], rows)


def plot(groups: dict, title: str, png: Path) -> None:
    """Per problem and quantity: the best xderiv method's time ÷ each peer library's best, on a log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = {g: rs for g, rs in groups.items() if not g.endswith(" value")}
    fig, ax = plt.subplots(figsize=(7.5, 1.3 + 0.17 * len(groups)))
    for j, peer in enumerate(sorted({_lib(r["name"]) for rs in groups.values() for r in rs if not r["x"]})):
        pairs = [(_best(rs, lambda r: r["x"]), _best(rs, lambda r: _lib(r["name"]) == peer)) for rs in groups.values()]
        pts = [(x["median"] / p["median"], y) for y, (x, p) in enumerate(pairs) if x and p]
        if pts:
            ax.scatter(*zip(*pts), marker="osD^v<>ph*"[j % 10], s=18, label=peer)
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set(xscale="log", ylim=(len(groups) - 0.5, -0.5), xlabel="best xderiv ÷ the peer's best (< 1: xderiv faster)")
    ax.set_yticks(range(len(groups)), list(groups), fontsize=6)
    ax.grid(True, axis="x", which="both", alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=72)
    plt.close(fig)


def fresh(run: dict) -> list[str]:
    """The table of one of ``fresh.py``'s measurements."""
    head = f"`python benchmarks/fresh.py {run['what']}`, {run['datetime'].replace('T', ' ')}: "
    head += ", ".join(f"{k} {v}" for k, v in run["machine"].items()) + ", one thread"
    if la := run.get("load_average"):
        head += f", load average {la['start']:.1f} to {la['end']:.1f}"
    if run["what"] == "allocator":
        ms = lambda ts: ", ".join(f"{t * 1e3:.1f}" for t in ts)  # noqa: E731
        rows = [[r["library"], r["problem"], r["quantity"], ms(r["default_s"]), ms(r["tuned_s"])] for r in run["rows"]]
        header = ["library", "problem", "quantity", "default allocator, ms", "after `xd.tune_host_allocator()`, ms"]
        return [head + "; each process's median.", "", *table(header, rows)]
    fmt = "{budget_mib} MiB|{checkpoint}|{peak_rss_mib:.0f} MiB|{saved_mib:.1f} MiB|{seconds:.1f} s"
    header = ["budget", "checkpoint", "peak resident set", "kept for the backward pass", "time"]
    head += f"; torch {run['torch']}, n = {run['n']}."
    return [head, "", *table(header, [fmt.format(**r).split("|") for r in run["rows"]])]


def sections(args: argparse.Namespace) -> dict[str, list[str]]:
    """The generated text for each ``<!-- name -->`` of the template (drawing the plots unless ``--check``)."""
    out: dict[str, list[str]] = {}
    not_timed: list[list[str]] = []
    for path in sorted(args.results.glob("*.json")) + sorted(args.results.glob("*/*.json")):
        name, run = path.relative_to(args.results).as_posix(), json.loads(path.read_text())
        if "benchmarks" not in run:
            out[path.stem] = fresh(run)
            continue
        o, groups, m = run["options"], _groups(run), run["machine_info"]
        png = args.docs / "performance" / (name.removesuffix(".json").replace("/", "_") + ".png")
        if not args.check:
            png.parent.mkdir(parents=True, exist_ok=True)
            plot(groups, f"{o['family']}, {o['dtype']}, {o['device']}: {m['cpu']}, {run['datetime'][:10]}", png)
        if o["family"] == "chain":
            out.setdefault("headline", []).extend([run_line(name, run), "", *summary(groups, HEADLINE), ""])
        plot_line = f"![{o['family']}: xderiv against its peers]({png.relative_to(args.docs).as_posix()})"
        out.setdefault(o["family"], []).extend([run_line(name, run), "", plot_line, "", *summary(groups), ""])
        out[o["family"]] += ["Every method:", "", *every_method(groups), ""]
        not_timed += [[name, *r["group"].rsplit(" ", 1), r["name"], r["why"]] for r in run["not_timed"]]
    if not_timed:
        out["not_timed"] = ["## Not timed", "", *table(["run", "problem", "quantity", "method", "why"], not_timed)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=HERE / "results")
    ap.add_argument("--docs", type=Path, default=HERE.parent / "docs")
    ap.add_argument("--check", action="store_true", help="compare with the committed page; draw and write nothing")
    args = ap.parse_args()
    generated = sections(args)
    lines = []
    for line in (HERE / "page.md").read_text(encoding="utf-8").splitlines():
        m = re.fullmatch(r"<!-- (\w+) -->", line)
        lines += (generated.get(m[1]) or ["No run recorded yet."] * (m[1] != "not_timed")) if m else [line]
    out, text = args.docs / "performance.md", re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).rstrip() + "\n"
    if args.check:
        if not out.exists() or out.read_text(encoding="utf-8") != text:
            raise SystemExit(f"{out} differs from benchmarks/results/: run benchmarks/make_performance_page.py")
        print(f"{out} is up to date")
        return
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out} and its plots in {args.docs / 'performance'}")


if __name__ == "__main__":
    main()
