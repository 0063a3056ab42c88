"""Sphinx configuration: the manual in Markdown (MyST), API reference from the numpydoc docstrings (napoleon), furo."""

from __future__ import annotations

import glob
import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)

import xderiv  # noqa: E402

project = "xderiv"
author = "xderiv contributors"
release = version = xderiv.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
myst_heading_anchors = 3
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
html_title = f"xderiv {release}"
suppress_warnings = ["config.cache"]


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


_example_scripts()
