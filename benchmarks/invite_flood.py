"""An INVITE flood through ``--out-dir``: what it leaves on disk and in memory.

    python benchmarks/invite_flood.py [--invites 20000] [--talking 20]

Writes a capture of ``--invites`` INVITEs (each with an SDP offer, nothing after
them) and ``--talking`` ordinary calls with audio, replays it into a WavSink as
``rtp2ws replay`` does and, where this version has it, in journal mode as
``rtp2ws live`` does, and prints per mode: seconds, folders made, calls.json
size, calls.jsonl size, and what the sink still held before ``close`` (manifest
entries and calls in progress).  Speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import inspect
import os
import struct
import sys
import tempfile
import time

from rtp2ws.bench.capgen import make_capture, sip_messages
from rtp2ws.run.replay import replay
from rtp2ws.sinks.wav import WavSink


def flood_capture(path: str, invites: int, talking: int) -> None:
    """``talking`` bench calls of 2 s, then the INVITEs, 50 µs apart, merged by time."""
    tmp = path + ".talk"
    make_capture(tmp, calls=talking, seconds=2.0)
    with open(tmp, "rb") as f:
        header = f.read(24)
        records = []
        while True:
            h = f.read(16)
            if len(h) < 16:
                break
            sec, usec, incl, _ = struct.unpack("<IIII", h)
            records.append((sec * 1_000_000 + usec, h + f.read(incl)))
    os.unlink(tmp)
    t0 = records[0][0]
    for i in range(invites):
        at, rec = sip_messages(talking + i, f"flood-{i}@bench", t0 + 50 * i, t0 + 50 * i, "8")[0]
        records.append((at, rec))
    records.sort(key=lambda r: r[0])
    with open(path, "wb") as f:
        f.write(header)
        for _, rec in records:
            f.write(rec)


def folders(out: str) -> int:
    return sum(len(dirs) for _, dirs, _ in os.walk(out))


def size(path: str) -> int:
    return os.path.getsize(path) if os.path.exists(path) else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--invites", type=int, default=20000)
    ap.add_argument("--talking", type=int, default=20)
    a = ap.parse_args(argv)
    modes = ["replay"]
    if "journal" in inspect.signature(WavSink).parameters:
        modes.append("journal")
    with tempfile.TemporaryDirectory(prefix="rtp2ws-flood-") as tmp:
        cap = os.path.join(tmp, "flood.pcap")
        flood_capture(cap, a.invites, a.talking)
        print(f"{a.invites} INVITEs without audio + {a.talking} calls with audio, {size(cap) / 1e6:.1f} MB capture")
        for mode in modes:
            out = os.path.join(tmp, mode)
            sink = WavSink(out, journal=True) if mode == "journal" else WavSink(out)
            t = time.perf_counter()
            result = replay(cap, sink)
            held = len(sink.manifest), len(getattr(sink, "_dirs", {}))
            sink.close(result.summary())
            elapsed = time.perf_counter() - t
            print(f"{mode:8s} {elapsed:6.2f} s  {result.calls} calls  {folders(out)} folders  "
                  f"calls.json {size(os.path.join(out, 'calls.json')) / 1e6:.1f} MB  "
                  f"calls.jsonl {size(os.path.join(out, 'calls.jsonl')) / 1e6:.1f} MB  "
                  f"held before close: {held[0]} manifest entries, {held[1]} call folders")
    return 0


if __name__ == "__main__":
    sys.exit(main())
