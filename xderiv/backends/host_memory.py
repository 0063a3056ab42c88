r"""Host memory: an opt-in tuning of the C library's allocator for the derivative sweeps' temporaries.

A derivative sweep allocates many arrays of a few megabytes, ``(n, k, w)`` Jacobian rows
and ``(n, d, d)`` Hessian terms, and frees them before the next call.  glibc's ``malloc``
serves a block above its *mmap threshold* (initially 128 KiB) with a fresh ``mmap`` and
unmaps it when freed, so each call pages every such array in again: the kernel zeroes
each 4 KiB page on first touch.

glibc adapts by itself: freeing a mapped block of up to 32 MiB raises the threshold to that
block's size and the heap's trim threshold to twice that (``mallopt(3)``, "dynamic mmap
threshold"), after which blocks of that size are reused from the heap.  A long-running
process that once freed a large array is in that state; a fresh one is not.
:func:`tune_host_allocator` puts the process there at once, by allocating and freeing one
untouched 31 MiB block with the C library's own ``malloc``/``free``.  It changes the whole
process, not only xderiv, so xderiv never calls it by itself: building a network or calling
an operator leaves the allocator as it is.  What it buys, measured, is on the speed page
of the manual (``docs/performance.md``).
"""

from __future__ import annotations

import ctypes
import os

BLOCK_BYTES = 31 * 2**20
"""Size of the block allocated and freed: below glibc's 32 MiB cap on the dynamic threshold
(the block's chunk, with its header and page rounding, must not exceed the cap)."""

_state = {"done": False}


def is_glibc() -> bool:
    """True when this process runs on the GNU C library (the allocator the tuning addresses)."""
    try:
        version = os.confstr("CS_GNU_LIBC_VERSION")
    except (AttributeError, ValueError, OSError):  # not a glibc system (macOS, Windows, musl)
        return False
    return version is not None and version.startswith("glibc")


def _malloc_and_free(nbytes: int) -> bool:
    """Allocate ``nbytes`` with the C library's ``malloc`` (untouched: no page is faulted in) and free it."""
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.restype = None
    libc.free.argtypes = [ctypes.c_void_p]
    block = libc.malloc(nbytes)
    if not block:
        return False
    libc.free(block)
    return True


def tune_host_allocator() -> bool:
    """Raise glibc's dynamic mmap threshold for this process, once: freed temporaries up to 31 MiB are reused.

    Opt-in and process-wide.  It allocates and frees one untouched 31 MiB block (one
    ``mmap``/``munmap`` pair); glibc then serves blocks up to 31 MiB from its heap instead of
    fresh mappings, and keeps up to 62 MiB of freed heap in the process instead of returning
    it to the kernel.  A fresh process then times like a long-running one, whose allocator
    glibc has already adapted the same way.  Call it once, early, in a program that
    evaluates derivatives of networks in host memory (NumPy, torch on the CPU) repeatedly;
    it does nothing for arrays on a GPU or in JAX's or dask's own memory.

    Nothing happens on another C library (macOS, Windows, musl), after the first call, or
    when ``GLIBC_TUNABLES`` or ``mallopt`` already fixed the thresholds (glibc then keeps
    them).  Arrays above 31 MiB are still mapped and paged in at every call.

    Returns
    -------
    bool
        True when this call allocated and freed the block (at most once per process).

    Examples
    --------
    >>> import xderiv as xd
    >>> _ = xd.tune_host_allocator()  # once, at start-up
    >>> xd.tune_host_allocator()  # later calls do nothing
    False
    """
    if _state["done"]:
        return False
    _state["done"] = True
    if not is_glibc():
        return False
    return _malloc_and_free(BLOCK_BYTES)
