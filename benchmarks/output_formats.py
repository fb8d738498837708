"""What each output audio format costs (``--rate``, ``--encoding``, ``--mix``): the same
capture replayed at full speed into the discard WebSocket server, once per format, and
the CPU the replay took (user + sys of the ``rtp2ws replay`` process), as calls per core
= calls x call seconds / CPU seconds.

    python benchmarks/output_formats.py [--calls 200] [--seconds 20] [--rounds 2]

Only 16 kHz L16 per-leg streams are streamed by the C fast path; every other format goes
through the Python path (the leg's samples handed to ``StreamSink``, encoded and cut
there), which is what the table shows.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile

from rtp2ws.bench.capgen import cached_capture
from rtp2ws.bench.discard import SinkProcess

FORMATS = [
    ("16 kHz L16 per leg (default)", []),
    ("8 kHz L16 per leg", ["--rate", "8000"]),
    ("8 kHz mu-law per leg", ["--rate", "8000", "--encoding", "mulaw"]),
    ("16 kHz mu-law per leg", ["--encoding", "mulaw"]),
    ("24 kHz L16 per leg", ["--rate", "24000"]),
    ("48 kHz L16 per leg", ["--rate", "48000"]),
    ("16 kHz L16 stereo", ["--mix", "stereo"]),
    ("16 kHz L16 mixed", ["--mix", "mixed"]),
    ("8 kHz A-law mixed", ["--rate", "8000", "--encoding", "alaw", "--mix", "mixed"]),
]


def cpu_of(cmd: list[str]) -> float:
    """user + sys seconds of a child process run to its end (it must succeed)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(cmd, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {r.stderr}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rounds", type=int, default=2, help="best of this many runs per format (default 2)")
    a = ap.parse_args(argv)
    cache = os.path.join(tempfile.gettempdir(), "rtp2ws-bench-captures")
    cap, _ = cached_capture(cache, a.calls, a.seconds)
    sink = SinkProcess("discard")
    try:
        print(f"{a.calls} calls of {a.seconds:g} s, full-speed replay into a discard server, 20 ms frames")
        print(f"{'output audio':32s} {'CPU s':>7s} {'calls/core':>11s}")
        for name, options in FORMATS:
            cpu = min(cpu_of([sys.executable, "-m", "rtp2ws.cli", "replay", cap, "--ws-url", sink.url, *options])
                      for _ in range(a.rounds))
            print(f"{name:32s} {cpu:7.2f} {a.calls * a.seconds / cpu:11.0f}", flush=True)
    finally:
        sink.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
