"""The README's self-contained examples (blocks that start with an import) run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
BLOCKS = [b for b in re.findall(r"```python\n(.*?)```", README, re.S) if b.startswith("import")]
LIBRARY = {"numpy": "import numpy", "torch": "import torch", "cupy": "import cupy"}


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(backend, index):
    block = BLOCKS[index]
    needs = [name for name, line in LIBRARY.items() if line in block.splitlines()[0]]
    if backend.name not in needs:
        pytest.skip(f"README block {index} is a {needs} example; this session is {backend.name}")
    # The blocks create their arrays on the library's default device: make it the session's device.
    with backend.default_device():
        exec(compile(block, f"README block {index}", "exec"), {"__name__": "readme"})
