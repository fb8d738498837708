"""Skip conditions shared by the tests: the C extensions, permission to capture, network namespaces."""

import os
import subprocess

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


def netns_problem() -> str | None:
    """Why this process cannot make a network namespace (tried: one is added and
    deleted again), or None when it can.  Needs root and ip(8)."""
    name = f"r2wprobe{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if r.returncode != 0:
        return f"cannot create network namespaces here: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None
