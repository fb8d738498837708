"""Superseded by ``benchmarks/calls_per_core.py`` (``rtp2ws bench``); kept so the
old command line still works:

    python benchmarks/replay_throughput.py [--calls 200] [--seconds 30] [--loss 0.01] [--ws] [--frame-ms 20]

runs ``rtp2ws bench --calls N --seconds S --configs wav`` (``ws20``/``ws100``
with ``--ws``) and prints its table.
"""

from __future__ import annotations

import argparse
import sys

from rtp2ws.bench.harness import main


def run(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--loss", type=float, default=0.0)
    ap.add_argument("--ws", action="store_true", help="stream over WebSocket instead of writing WAV files")
    ap.add_argument("--frame-ms", type=int, choices=(20, 100), default=20)
    a = ap.parse_args(argv)
    config = f"ws{a.frame_ms}" if a.ws else "wav"
    return main(["--calls", str(a.calls), "--seconds", str(a.seconds), "--loss", str(a.loss),
                 "--configs", config, "--no-profile"])


if __name__ == "__main__":
    sys.exit(run())
