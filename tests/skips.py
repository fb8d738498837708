"""Skip conditions shared by the tests: the C extensions, and permission to capture."""

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
