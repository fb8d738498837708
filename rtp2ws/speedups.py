"""Where the C twins come from: the extension modules ``rtp2ws._native``,
``_fastpath`` and ``_wsframe``, unless one is not built or
``RTP2WS_NO_NATIVE`` is set (to anything but empty or ``0``), in which case the
modules that use them fall back to their pure-Python/numpy code."""

from __future__ import annotations

import os


def disabled() -> bool:
    return os.environ.get("RTP2WS_NO_NATIVE", "") not in ("", "0")


def load_native(name: str = "_native"):
    """The extension module ``rtp2ws.<name>`` (``_native``, ``_fastpath``, ``_wsframe``), or None."""
    if disabled():
        return None
    import importlib

    try:
        return importlib.import_module(f"rtp2ws.{name}")
    except ImportError:
        return None
