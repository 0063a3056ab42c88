r"""Host memory: keep the C library from handing every freed temporary back to the kernel.

A derivative sweep allocates many arrays of a few megabytes, ``(n, k, w)`` Jacobian rows
and ``(n, d, d)`` Hessian terms, and frees them before the next call.  glibc's ``malloc``
serves a block above its *mmap threshold* (initially 128 KiB) with a fresh ``mmap`` and
unmaps it when freed, so each call pages every such array in again: the kernel zeroes
each 4 KiB page on first touch, which on the development VM made a NumPy forward Hessian
at d = w = 16, n = 1000 take 22 ms instead of 7.

glibc adapts by itself: freeing a mapped block of up to 32 MiB raises the threshold to that
block's size and the heap's trim threshold to twice that (``mallopt(3)``, "dynamic mmap
threshold"), after which blocks of that size are reused from the heap.  A long-running
process that once freed a large array is in that state; a fresh one is not.
:func:`warm_host_allocator` puts it there at once, by allocating and freeing one
untouched 31 MiB array when the first network with weights in host memory is built (so
never while a call is traced).  The cost is one ``mmap``/``munmap`` pair; the effect
is glibc's own: blocks up to 31 MiB come from the heap, and up to 62 MiB of freed heap
stay in the process instead of going back to the kernel.  It does nothing on another C
library, on a GPU or lazy array, when ``GLIBC_TUNABLES``/``mallopt`` already fixed the
thresholds (glibc then keeps them), or with ``XDERIV_HOST_ALLOCATOR=default`` in the
environment.
"""

from __future__ import annotations

import os
from typing import Any

BLOCK_BYTES = 31 * 2**20
"""Size of the block allocated and freed: below glibc's 32 MiB cap on the dynamic threshold
(the block's chunk, with its header and page rounding, must not exceed the cap)."""

ENV = "XDERIV_HOST_ALLOCATOR"
"""Environment variable: ``default`` leaves the C library's allocator as it starts."""

_state = {"done": False}


def is_glibc() -> bool:
    """True when this process runs on the GNU C library (the allocator the warm-up addresses)."""
    try:
        version = os.confstr("CS_GNU_LIBC_VERSION")
    except (AttributeError, ValueError, OSError):  # not a glibc system (macOS, Windows, musl)
        return False
    return version is not None and version.startswith("glibc")


def on_host(device: Any) -> bool:
    """True for the device of an array in host memory: NumPy's and dask's ``"cpu"``, torch's ``device("cpu")``."""
    return str(getattr(device, "type", device)) == "cpu"


def warm_host_allocator(xp: Any, device: Any, lazy: bool = False) -> bool:
    """Raise glibc's dynamic mmap threshold once per process, if ``xp``'s arrays on ``device`` live in host memory.

    Parameters
    ----------
    xp : namespace
        The namespace of a network's weights.
    device : device of ``xp``
    lazy : bool
        True for a lazily evaluated namespace (dask): ``empty`` would allocate nothing.

    Returns
    -------
    bool
        True when this call allocated and freed the block (at most once per process).
    """
    if _state["done"] or lazy or not on_host(device) or os.environ.get(ENV, "") == "default":
        return False
    _state["done"] = True
    if not is_glibc():
        return False
    block = xp.empty((BLOCK_BYTES // 8,), dtype=xp.float64, device=device)
    del block
    return True
