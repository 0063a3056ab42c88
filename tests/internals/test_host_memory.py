"""The opt-in host allocator tuning: building networks leaves glibc alone; ``xd.tune_host_allocator()`` does not."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import xderiv as xd
from xderiv.backends import host_memory as _host_memory


@pytest.fixture
def fresh(monkeypatch):
    """A process that has not tuned its allocator yet, on glibc, the allocation recorded instead of made."""
    monkeypatch.setitem(_host_memory._state, "done", False)
    monkeypatch.setattr(_host_memory, "is_glibc", lambda: True)
    calls: list[int] = []
    monkeypatch.setattr(_host_memory, "_malloc_and_free", lambda nbytes: calls.append(nbytes) or True)
    return calls


def test_public_and_once_per_process(fresh):
    assert xd.tune_host_allocator is _host_memory.tune_host_allocator
    assert "tune_host_allocator" in xd.__all__
    assert xd.tune_host_allocator()
    assert fresh == [_host_memory.BLOCK_BYTES]
    assert not xd.tune_host_allocator()  # once per process
    assert len(fresh) == 1


def test_building_networks_does_not_tune(fresh):
    import numpy as np

    xd.mlp([2, 8, 1], seed=0)
    xd.potential(in_features=2, width=4, depth=1, rank=1, seed=0)
    xd.Sequential(xd.Dense(np.ones((2, 3)), np.zeros(3), activation="tanh"))
    assert fresh == []
    assert not _host_memory._state["done"]


def test_nothing_on_other_c_libraries(fresh, monkeypatch):
    monkeypatch.setattr(_host_memory, "is_glibc", lambda: False)
    assert not xd.tune_host_allocator()
    assert fresh == []


def test_block_stays_under_glibcs_cap():
    # glibc raises its threshold only for a freed mapped chunk of at most 32 MiB (header and page rounding included)
    assert _host_memory.BLOCK_BYTES + 2 * 4096 <= 32 * 2**20


# Run in a fresh interpreter: how many blocks glibc serves by mmap (mallinfo's hblks) while a
# 4 MiB array is alive, after building a network of the session's library (and tuning, if asked).
_PROBE = textwrap.dedent(
    """
    import ctypes, sys
    import xderiv as xd

    class MallInfo(ctypes.Structure):
        _fields_ = [(f, ctypes.c_int) for f in
                    "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

    libc = ctypes.CDLL(None)
    libc.mallinfo.restype = MallInfo
    if sys.argv[2] == "tune":
        assert xd.tune_host_allocator()
    if sys.argv[1] == "torch":
        import torch
        net = xd.mlp([2, 8, 1], xp=torch, seed=0)
        before = libc.mallinfo().hblks
        block = torch.ones(2**19, dtype=torch.float64)
    else:
        import numpy as np
        net = xd.mlp([2, 8, 1], xp=np, seed=0)
        before = libc.mallinfo().hblks
        block = np.ones(2**19)
    print(libc.mallinfo().hblks - before)
    """
)


def _mapped_blocks(library: str, tune: bool) -> int:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    args = [sys.executable, "-c", _PROBE, library, "tune" if tune else "build-only"]
    out = subprocess.run(args, env=env, capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def test_only_the_opt_in_makes_glibc_reuse_freed_blocks(backend):
    """A fresh process that built a network still maps a 4 MiB array afresh; after the opt-in, the heap serves it."""
    if not _host_memory.is_glibc():
        pytest.skip("the tuning addresses glibc's allocator; this process runs on another C library")
    if backend.name not in ("numpy", "torch") or not backend.on_cpu:
        pytest.skip("host-memory NumPy and torch: the numpy and torch sessions run it")
    assert _mapped_blocks(backend.name, tune=False) == 1  # building the network changed nothing
    assert _mapped_blocks(backend.name, tune=True) == 0
