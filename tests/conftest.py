"""Shared test helpers."""

import pytest

from rtp2ws.speedups import disabled


def native_skip_reason() -> str:
    if disabled():
        return "native backend disabled by RTP2WS_NO_NATIVE"
    return "rtp2ws._native is not built (no C compiler at install time?)"


def can_capture() -> bool:
    """Whether this process may capture on lo (root or CAP_NET_RAW)."""
    from rtp2ws.capture.live import CaptureOpenError, LiveCapture

    try:
        LiveCapture("lo", bpf="udp port 9").stop()
        return True
    except CaptureOpenError:
        return False


@pytest.fixture(autouse=True)
def _collector_as_it_was():
    """Commands run in-process (``cli.main``) set the collector for a long-running
    decoder (``rtp2ws.run.gcpolicy``): give the next test CPython's own settings back,
    with nothing frozen, so that no test depends on which ran before it."""
    import gc
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)
