"""The host allocator warm-up: when it allocates, and that glibc then reuses freed blocks."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from xderiv import _host_memory


class _RecordingNamespace:
    """Just enough of a namespace for the warm-up: ``empty`` records what it is asked for."""

    float64 = "float64"

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def empty(self, shape, dtype=None, device=None):
        self.calls.append((shape, dtype, device))
        return object()


@pytest.fixture
def fresh(monkeypatch):
    """A process that has not warmed its allocator yet, on glibc, with no opt-out set."""
    monkeypatch.setitem(_host_memory._state, "done", False)
    monkeypatch.setattr(_host_memory, "is_glibc", lambda: True)
    monkeypatch.delenv(_host_memory.ENV, raising=False)


def test_first_host_network_allocates_one_block_once(fresh):
    xp = _RecordingNamespace()
    assert _host_memory.warm_host_allocator(xp, "cpu")
    assert xp.calls == [((_host_memory.BLOCK_BYTES // 8,), "float64", "cpu")]
    assert not _host_memory.warm_host_allocator(xp, "cpu")  # once per process
    assert len(xp.calls) == 1


class _Device:
    def __init__(self, type: str) -> None:
        self.type = type


@pytest.mark.parametrize(
    ("device", "lazy", "why"),
    [
        (_Device("cuda"), False, "a GPU array"),
        ("TFRT_CPU_0", False, "XLA's own allocator"),
        ("cpu", True, "a lazy array allocates nothing on empty"),
    ],
)
def test_no_allocation_off_the_host_or_lazy(fresh, device, lazy, why):
    xp = _RecordingNamespace()
    assert not _host_memory.warm_host_allocator(xp, device, lazy), why
    assert xp.calls == []
    assert _host_memory.warm_host_allocator(xp, _Device("cpu"))  # torch's CPU device counts as host memory
    assert len(xp.calls) == 1


def test_opt_out_and_other_c_libraries(fresh, monkeypatch):
    xp = _RecordingNamespace()
    monkeypatch.setenv(_host_memory.ENV, "default")
    assert not _host_memory.warm_host_allocator(xp, "cpu")
    monkeypatch.delenv(_host_memory.ENV)
    monkeypatch.setattr(_host_memory, "is_glibc", lambda: False)
    assert not _host_memory.warm_host_allocator(xp, "cpu")
    assert xp.calls == []


def test_block_stays_under_glibcs_cap():
    # glibc raises its threshold only for a freed mapped chunk of at most 32 MiB (header and page rounding included)
    assert _host_memory.BLOCK_BYTES + 2 * 4096 <= 32 * 2**20


# Run in a fresh interpreter: how many blocks glibc serves by mmap (mallinfo's hblks) while a
# 4 MiB array is alive, after building a network of the session's library.
_PROBE = textwrap.dedent(
    """
    import ctypes, sys
    import xderiv as xd

    class MallInfo(ctypes.Structure):
        _fields_ = [(f, ctypes.c_int) for f in
                    "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

    libc = ctypes.CDLL(None)
    libc.mallinfo.restype = MallInfo
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


def _mapped_blocks(library: str, opt_out: bool) -> int:
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", _host_memory.ENV)}
    if opt_out:
        env[_host_memory.ENV] = "default"
    out = subprocess.run([sys.executable, "-c", _PROBE, library], env=env, capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def test_after_the_first_network_glibc_reuses_freed_blocks(backend):
    """With the warm-up a fresh process serves a 4 MiB array from the heap; without it, by a new mapping."""
    if not _host_memory.is_glibc():
        pytest.skip("the warm-up addresses glibc's allocator; this process runs on another C library")
    if backend.name not in ("numpy", "torch") or not backend.on_cpu:
        pytest.skip("host-memory NumPy and torch: the numpy and torch sessions run it")
    assert _mapped_blocks(backend.name, opt_out=True) == 1
    assert _mapped_blocks(backend.name, opt_out=False) == 0
