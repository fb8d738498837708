"""The recording scripts' network namespace: a script re-runs itself inside one of its
own (``ip netns``), which goes when it ends, so that what it records is only its call."""

from __future__ import annotations

import os
import subprocess
import sys


def rerun_inside(prefix: str, script: str, args: list[str], timeout: float) -> int:
    """Run ``script`` again with ``args`` and ``--in-namespace`` inside a namespace named
    ``prefix`` + this pid, made for it and deleted after; its exit status."""
    ns = f"{prefix}{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        return subprocess.run(["ip", "netns", "exec", ns, sys.executable, script, *args, "--in-namespace"],
                              timeout=timeout).returncode
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
