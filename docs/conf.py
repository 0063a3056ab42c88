"""Sphinx configuration: API reference from the numpydoc docstrings (napoleon), MathJax, furo theme."""

from __future__ import annotations

import glob
import os
import shutil
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)

import xderiv  # noqa: E402

project = "xderiv"
author = "xderiv contributors"
release = version = xderiv.__version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax", "sphinx.ext.viewcode"]
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": False}
exclude_patterns = ["_build", "_generated/*.inc"]
try:
    import furo  # noqa: F401

    html_theme = "furo"
except ImportError:  # pragma: no cover - the docs extra installs furo
    html_theme = "alabaster"
html_static_path = ["_static"]
html_title = f"xderiv {release}"
suppress_warnings = ["config.cache"]


def _benchmark_plot() -> None:
    """Copy the newest benchmark plot (``benchmarks/results/*_time_vs_d_*.png``) into the docs, if there is one."""
    gen = os.path.join(os.path.dirname(__file__), "_generated")
    os.makedirs(gen, exist_ok=True)
    pngs = sorted(glob.glob(os.path.join(ROOT, "benchmarks", "results", "*_time_vs_d_*.png")))
    static = os.path.join(os.path.dirname(__file__), "_static")
    os.makedirs(static, exist_ok=True)  # git keeps no empty folder; html_static_path needs it
    lines = []
    for png in pngs:
        shutil.copy(png, os.path.join(os.path.dirname(__file__), "_static", os.path.basename(png)))
        lines += [f".. image:: /_static/{os.path.basename(png)}", f"   :alt: {os.path.basename(png)}", ""]
    if not lines:
        lines = [
            ".. note::",
            "",
            "   No benchmark plot in this build: run ``nox -s bench`` (it writes",
            "   ``benchmarks/results/*_time_vs_d_*.png``) and rebuild the docs to show it here.",
            "",
        ]
    with open(os.path.join(gen, "benchplot.inc"), "w") as f:
        f.write("\n".join(lines) + "\n")


def _example_scripts() -> None:
    """One section per ``examples/*.py`` script (title: its docstring's first line), included in full."""
    gen = os.path.join(os.path.dirname(__file__), "_generated")
    os.makedirs(gen, exist_ok=True)
    lines: list[str] = []
    for path in sorted(glob.glob(os.path.join(ROOT, "examples", "*.py"))):
        name = os.path.basename(path)
        with open(path) as f:
            head = f.read(2000).lstrip()
        title = head.strip("\"'rb ").splitlines()[0].strip().strip('"') if head else name
        title = f"``{name}``: {title}"
        lines += [title, "-" * len(title), "", f".. literalinclude:: ../../examples/{name}", "   :language: python", ""]
    if not lines:
        lines = ["No scripts in ``examples/`` yet.", ""]
    with open(os.path.join(gen, "scripts.inc"), "w") as f:
        f.write("\n".join(lines) + "\n")


_benchmark_plot()
_example_scripts()
