"""glibc's allocator set up for rendering on the CPU: freed tensors' memory is reused.

PyTorch allocates CPU tensors with the C library's malloc. glibc serves every block above
its mmap threshold (at most 32 MB, by default) with fresh pages from the kernel and unmaps
them when the block is freed, and gives threads arenas of their own that are trimmed as
they empty. A render allocates and frees dozens of activations of that size per tile, so
each tile page-faulted about 40,000 times and the kernel zeroed every page again: on a
2-core machine about 120 ms of system time per 512-px `lite` block of 215 ms.

`reuse_freed_memory` raises the mmap threshold to 1 GiB, lets up to TRIM_BYTES of free
memory stay at the top of the heap, and keeps every thread in one arena, so a render
thread reuses the pages the last tile freed (1.2 -> 1.6 MP/s on that machine).

The heap then keeps what was freed between longer-lived blocks: in the explorer window,
whose tile cache and images interleave with the renders, the peak memory grew from
2.3-2.6 GB to 3.0 GB while its small, changing render windows gained nothing visible. So
the command-line tools (render, export, bench, train, ...) call `reuse_freed_memory`; the
window does not. It pays a little with the model on a GPU too, for an export's host
buffers (its bands of rows and the encoders' arrays): without it a `paper` gigapixel
export on an H200 peaked at 1,552 MB instead of 1,511 MB and took 33.8 s instead of 33.0 s,
and `lite`'s took 5.2 s instead of 5.0 s. Linux with glibc only; anywhere else it does
nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

MMAP_THRESHOLD_BYTES = 1 << 30
TRIM_BYTES = 256 << 20
# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8

_done = False


def reuse_freed_memory() -> bool:
    """Set glibc's allocator up as described above (once per process); whether it is."""
    global _done
    if _done or not sys.platform.startswith("linux"):
        return _done
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    if not hasattr(libc, "gnu_get_libc_version"):  # not glibc (musl has other knobs)
        return False
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    settings = (
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES),
        (_M_TRIM_THRESHOLD, TRIM_BYTES),
        (_M_ARENA_MAX, 1),
    )
    _done = all(mallopt(option, value) == 1 for option, value in settings)
    if not _done:
        log.debug("glibc refused a mallopt setting; the allocator keeps (some of) its defaults")
    return _done
