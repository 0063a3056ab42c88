"""The test files themselves: device-clean array construction and conversion, no stray references.

A GPU session fails on a test that converts with ``.numpy()`` or builds a tensor on
torch's default (CPU) device; on a CPU machine such a test passes.  This static check
finds them anywhere: every conversion goes through ``backend.to_numpy`` and every torch
tensor a test builds names its device (tests/conftest.py is the one place that converts).
``XDERIV_TORCH_DEFAULT_DEVICE=meta`` checks the same at run time (see tests/conftest.py).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
SOURCES = sorted(p for p in TESTS.rglob("*.py") if p.name != "conftest.py")

# Converting methods called without arguments: host copies that only work on CPU arrays
# (torch .numpy()), or that belong in backend.to_numpy (.cpu(), .cuda(), CuPy's .get()).
CONVERSIONS = {"numpy", "cpu", "cuda", "get"}
# torch functions that create a tensor on the default device unless given device=.
FACTORIES = {
    "tensor",
    "as_tensor",
    "asarray",
    "from_numpy",
    "zeros",
    "ones",
    "empty",
    "full",
    "eye",
    "arange",
    "linspace",
    "logspace",
    "rand",
    "randn",
    "randint",
    "randperm",
    "normal",
}


def _violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        attr, base = node.func.attr, node.func.value
        where = f"{path.name}:{node.lineno}"
        if attr in CONVERSIONS and not node.args and not node.keywords:
            found.append(f"{where}: .{attr}() (convert with backend.to_numpy)")
        if (
            isinstance(base, ast.Name)
            and base.id == "torch"
            and attr in FACTORIES
            and not any(k.arg == "device" for k in node.keywords)
        ):
            if attr == "from_numpy":
                found.append(f"{where}: torch.from_numpy (always CPU: use backend.asarray)")
            else:
                found.append(f"{where}: torch.{attr} without device= (use backend.asarray or device=...)")
    return found


@pytest.mark.parametrize("path", SOURCES, ids=[p.name for p in SOURCES])
def test_arrays_are_built_and_converted_through_the_backend(path):
    found = _violations(path)
    assert not found, "\n".join(found)


def test_the_check_finds_what_it_looks_for(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import torch\n"
        "a = torch.randn(3)\n"
        "b = torch.zeros(2, device=dev)\n"
        "c = a.numpy()\n"
        "d = torch.from_numpy(c)\n"
        "e = {}.get('k')\n"
    )
    assert [v.split(":")[1] for v in _violations(bad)] == ["2", "4", "5"]


def test_no_tracker_or_out_of_repo_references():
    """Comments and docstrings cite nothing outside the repository (tracker numbers, design notes)."""
    pattern = re.compile(r"[Ii]ssue [0-9]+|DESIGN" + r"\.md")
    hits = [
        f"{path.name}:{i}: {line.strip()}"
        for path in sorted(TESTS.glob("*.py"))
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not hits, "\n".join(hits)


def test_the_wheel_lists_every_subpackage():
    """``[tool.setuptools] packages`` names every folder of ``xderiv/`` with an ``__init__.py``: a wheel ships them."""
    import tomllib

    root = Path(__file__).resolve().parent.parent
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(root).parts) for p in (root / "xderiv").rglob("__init__.py")}
    assert found <= listed, f"missing from pyproject.toml's packages: {sorted(found - listed)}"
