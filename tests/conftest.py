"""Shared test helpers."""

from rtp2ws.speedups import disabled


def native_skip_reason() -> str:
    if disabled():
        return "native backend disabled by RTP2WS_NO_NATIVE"
    return "rtp2ws._native is not built (no C compiler at install time?)"
