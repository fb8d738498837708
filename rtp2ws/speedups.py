"""Where the C twin comes from: ``rtp2ws._native``, unless it is not built or
``RTP2WS_NO_NATIVE`` is set (to anything but empty or ``0``), in which case the
modules that use it fall back to their numpy code."""

from __future__ import annotations

import os


def disabled() -> bool:
    return os.environ.get("RTP2WS_NO_NATIVE", "") not in ("", "0")


def load_native():
    """The extension module, or None."""
    if disabled():
        return None
    try:
        from . import _native
    except ImportError:
        return None
    return _native
