"""Every ```python block of the README and of the manual's Markdown pages (``docs/*.md``) runs as written.

The blocks are read from the fences (any ```python / ```py block, indented ones
included), so a new block is picked up without touching this file.  What a block
needs is read from its own imports: it runs whenever every library it imports
is installed, whatever the session's backend (NumPy blocks always, torch blocks
wherever torch imports, dask and JAX blocks where they are installed), and CuPy
blocks only where CuPy can allocate on a GPU.  Otherwise the block is skipped,
saying which library is missing.  A torch block runs on the session's device
(``XDERIV_BACKEND=torch XDERIV_DEVICE=cuda`` puts it on the GPU).

A block that must not run says so on its first line, with the reason::

    # readme: no-run (why)

Each block runs in a fresh module of its own, in a temporary working directory, once:
in the session of the array library it is written for.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import linecache
import re
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCUMENTS = [README, *sorted((ROOT / "docs").glob("*.md"))]  # the README, then the manual's pages
LANGUAGES = ("python", "py", "python3")
NO_RUN = re.compile(r"#\s*readme:\s*no-run\b\s*(.*)")
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[\w+-]*)")
# xderiv modules that exist to talk to one library: importing them needs that library.
INTEROP_LIBRARY = {"xderiv.interop.torch": "torch", "xderiv.interop.dask": "dask"}


@dataclass(frozen=True)
class Block:
    """One fenced Python block of a Markdown document."""

    line: int  # line of its opening fence (1-based)
    section: str  # the heading it sits under
    code: str
    modules: tuple[str, ...]  # every module it imports, in order
    libraries: tuple[str, ...]  # the third-party libraries among them (the backends it runs on)
    no_run: str | None  # the reason given by a ``# readme: no-run`` marker
    document: str = "README.md"  # where it is, relative to the repository root

    @property
    def id(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.section.lower()).strip("-") or "top"
        return f"L{self.line}-{slug}-{'+'.join(self.libraries) or 'numpy'}"

    @property
    def where(self) -> str:
        return f"{self.document} block at line {self.line}"


def _imports(code: str) -> tuple[str, ...]:
    """The modules ``code`` imports (``import a.b``: ``a.b``; ``from a.b import c``: ``a.b``), in order."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return ()  # reported when the block runs
    modules: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules.append(node.module)
    return tuple(dict.fromkeys(modules))


def _library(module: str) -> str | None:
    """The third-party library importing ``module`` needs (None for the standard library and xderiv's core)."""
    root = module.partition(".")[0]
    if root == "xderiv":
        return next((lib for prefix, lib in INTEROP_LIBRARY.items() if module.startswith(prefix)), None)
    return None if root in sys.stdlib_module_names else root


def parse(text: str, document: str = "README.md") -> list[Block]:
    """The fenced Python blocks of a Markdown ``text`` (the file ``document``), dedented."""
    blocks: list[Block] = []
    section = ""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            section = line.lstrip("#").strip()
        m = FENCE.match(line)
        if m is None:
            i += 1
            continue
        indent, fence, lang = m["indent"], m["fence"], m["lang"].lower()
        start, body = i, []
        i += 1
        while i < len(lines) and not re.match(rf"^{re.escape(indent)}{fence[0]}{{{len(fence)},}}[ \t]*$", lines[i]):
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        i += 1  # past the closing fence
        if lang not in LANGUAGES:
            continue
        code = "\n".join(body) + "\n"
        modules = _imports(code)
        libraries = tuple(dict.fromkeys(lib for lib in map(_library, modules) if lib is not None))
        marker = NO_RUN.match(next((s for s in body if s.strip()), "").strip())
        no_run = (marker[1].strip() or "no reason given") if marker else None
        blocks.append(Block(start + 1, section, code, modules, libraries, no_run, document))
    return blocks


def _parse_file(path: Path) -> list[Block]:
    return parse(path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix())


BLOCKS = [block for path in DOCUMENTS for block in _parse_file(path)]


def _missing(block: Block) -> str | None:
    """Why ``block`` cannot run here (a library it imports is missing, or CuPy has no GPU), or None."""
    for module in block.modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            missing = (exc.name or module).partition(".")[0]
            if missing == "xderiv":
                raise  # xderiv itself must import: that is a failure, not a skip
            return f"{block.where} ({block.section}) imports {module}: {missing} is not installed"
    if "cupy" in block.libraries:
        import cupy

        try:
            if not cupy.is_available():
                return f"{block.where} is a CuPy example: CuPy sees no CUDA GPU here"
            cupy.zeros(1)
        except Exception as exc:  # the first allocation raises without a GPU or driver
            return f"{block.where} is a CuPy example: CuPy cannot allocate on a GPU here ({exc})"
    return None


ARRAY_LIBRARIES = ("torch", "cupy", "dask", "jax", "numpy")  # a block runs in the first of these it imports


def _session_of(block: Block) -> str:
    """The test session that runs ``block``: the backend of the array library it is written for.

    A block is the user's own code, whatever session's backend the suite is on: running it once, on
    its own library, is the whole check (the torch session runs the torch blocks on its device).
    """
    return next((lib for lib in ARRAY_LIBRARIES if lib in block.libraries), "numpy")


def test_readme_starts_with_the_two_commands():
    """The README opens with the install-and-demo command and CI's test command, under 250 lines."""
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) < 250
    first = re.search(r"```bash\n(.*?)```", text, re.S)
    assert first is not None
    assert first[1].splitlines() == ["pip install -e . && python -m xderiv", "pip install nox uv && nox"]
    assert text.index(first[0]) < text.index("\n## ")  # before the first section
    ci = (ROOT / ".ci" / "run").read_text()
    lines = ci.splitlines()
    assert "pip install -q nox uv" in lines and "nox" in lines  # CI runs the README's test command


def test_readme_has_the_quick_start_blocks():
    """The parser finds the blocks (a broken fence would silently drop them from the next test)."""
    readme = [block for block in BLOCKS if block.document == "README.md"]
    assert [block.section for block in readme][:3] == ["Quick start"] * 3
    assert {"numpy", "torch", "cupy"} <= {lib for block in readme for lib in block.libraries}
    assert len(BLOCKS) >= 14
    assert sum(block.libraries == ("numpy",) for block in BLOCKS) >= 4
    for path in DOCUMENTS:
        opened = sum(1 for line in path.read_text(encoding="utf-8").splitlines() if FENCE.match(line))
        assert opened % 2 == 0, f"an unclosed ``` fence in {path.relative_to(ROOT)}"
    no_run = [block for block in BLOCKS if block.no_run is not None]
    assert len(no_run) <= 2, f"nearly every block should run; marked no-run: {[b.where for b in no_run]}"
    ids = [f"{block.document}:{block.id}" for block in BLOCKS]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("block", BLOCKS, ids=[f"{Path(block.document).stem}-{block.id}" for block in BLOCKS])
def test_readme_block_runs(backend, block, tmp_path, monkeypatch):
    if block.no_run is not None:
        pytest.skip(f"{block.where} is marked no-run: {block.no_run}")
    if (session := _session_of(block)) != backend.name:
        pytest.skip(f"{block.where} uses {session}: it runs in the {session} session")
    why = _missing(block)
    if why is not None:
        pytest.skip(why)
    monkeypatch.chdir(tmp_path)  # whatever a block writes lands here
    monkeypatch.setenv("MPLBACKEND", "Agg")  # a plotting block draws off screen
    name = f"{re.sub(r'[^a-z0-9]+', '_', Path(block.document).stem.lower())}_block_line_{block.line}"
    module = types.ModuleType(name)
    module.__file__ = str(ROOT / block.document)
    monkeypatch.setitem(sys.modules, name, module)  # dataclasses and pickling look their module up
    filename = f"{block.document}, block at line {block.line}"  # tracebacks show the block and its own lines
    linecache.cache[filename] = (len(block.code), None, block.code.splitlines(True), filename)
    code = compile(block.code, filename, "exec")
    with contextlib.ExitStack() as stack:
        stack.enter_context(_activations_restored())  # a block may register activations: not for later tests
        if "torch" in block.libraries:
            stack.enter_context(_torch_threads(1))  # tiny problems: a second thread only contends (as in conftest)
            if backend.name == "torch":  # the block builds its tensors on torch's default device: the session's
                stack.enter_context(backend.default_device())
        exec(code, module.__dict__)


@contextlib.contextmanager
def _activations_restored() -> Iterator[None]:
    """The activation registry as it was before (``xd.register_activation`` is process-wide)."""
    import xderiv.activations

    registry = getattr(xderiv.activations, "_REGISTRY", None)
    before = dict(registry) if isinstance(registry, dict) else None
    try:
        yield
    finally:
        if registry is not None and before is not None:
            registry.clear()
            registry.update(before)


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def test_parse_keys_blocks_by_their_imports():
    """The mechanism itself, on a Markdown sample: fences, libraries from imports, the no-run marker."""
    sample = "\n".join(
        [
            "# Title",
            "```bash",
            "pip install xderiv",
            "```",
            "## NumPy",
            "```python",
            "import math",
            "import xderiv as xd",
            "```",
            "## Lists",
            "- a step:",
            "  ```py",
            "  from xderiv.interop.torch import from_torch",
            "  import numpy as np",
            "  ```",
            "````python",
            "# readme: no-run (needs a cluster)",
            "import dask.array as da",
            "````",
        ]
    )
    blocks = parse(sample)
    assert [(b.line, b.section, b.libraries, b.no_run) for b in blocks] == [
        (6, "NumPy", (), None),
        (12, "Lists", ("torch", "numpy"), None),
        (16, "Lists", ("dask",), "(needs a cluster)"),
    ]
    assert blocks[1].code == "from xderiv.interop.torch import from_torch\nimport numpy as np\n"
    assert [b.id for b in blocks] == ["L6-numpy-numpy", "L12-lists-torch+numpy", "L16-lists-dask"]
