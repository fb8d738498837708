"""Giving the C heap's free memory back to the system, now and then.

Start-up is a burst: thousands of WebSocket handshakes, SIP parsing, the first
queues.  What it frees stays in glibc's malloc arenas, scattered between the
blocks still in use, and so in the process's RSS: at 1,000 live calls that was
about 88 KB a call on top of the 85 KB a call actually holds (``python -m
rtp2ws.bench memory --calls 1000``).  glibc does not hand back memory in the
middle of a heap by itself; ``malloc_trim(0)`` does (it releases every free
page, wherever it is).  ``trim()`` calls it; the long-running modes call it
every ``TRIM_EVERY_S`` (``ws.bridge.run_with_sender``), which costs a few
milliseconds of one thread, without the GIL.  Elsewhere than glibc it does
nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["TRIM_EVERY_S", "trim"]

TRIM_EVERY_S = 10.0

_trim = None
try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    _trim = _libc.malloc_trim
    _trim.argtypes = [ctypes.c_size_t]
    _trim.restype = ctypes.c_int
except (OSError, AttributeError):  # pragma: no cover - not glibc
    _trim = None


def trim() -> bool:
    """Hand the heap's free pages back to the system; True if any was (glibc only)."""
    if _trim is None:  # pragma: no cover - not glibc
        return False
    return bool(_trim(0))
