"""What a 20 ms frame costs in the stream queue: the C outbox's data-plane take
against the Python twin's, per frame of every stream.

    python benchmarks/outbox_plane.py [--streams 1000] [--ticks 200] [--rounds 3]

Each tick pushes one 20 ms mono frame into every stream's outbox and takes it as
the sender writes it (masked client frames, the acknowledgement ping when due; the
server's pongs come back every 25 ticks), in four ways:

* ``c take_framed``: the C outbox's ``push_audio`` + ``take_framed`` (one call into
  native/outbox.c's ``ob_take_framed``, the data plane's entry);
* ``c take+encode``: the C outbox through the Python API the sender uses today
  (``take`` into a list, ``ws.frame.encode``, ``ping_due``);
* ``py take+encode``: the Python twin the same way, with the C ``encode``;
* ``py take+encode_py``: the Python twin with the pure-Python ``encode``.

The keys come from one buffer drawn beforehand (os.urandom's cost is the same for
all).  Prints microseconds per frame (best of the rounds) and what the C outboxes
hold in chunks.  Speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import os
import time

from rtp2ws.speedups import load_native
from rtp2ws.ws import frame as wsframe
from rtp2ws.ws.outbox import OutboxPy, TotalsPy

FRAME = bytes(range(256)) * 2 + bytes(128)         # 640 bytes: 20 ms at 16 kHz, mono
KEYS = os.urandom(4 * 64)
BATCH = 64 * 1024


def make(cls, totals_cls, streams: int) -> list:
    totals = totals_cls()
    obs = [cls({"call_id": f"bench-{i}", "tag": "caller", "stream_id": f"s{i}"}, frame_ms=20, totals=totals)
           for i in range(streams)]
    for ob in obs:
        ob.connected()
    return obs


def pongs(obs) -> None:
    for ob in obs:
        at = ob.ping_at
        if at is not None:
            ob.pong(at.to_bytes(8, "big"))


def run_framed(obs, ticks: int) -> float:
    t = 0.0
    for k in range(ticks):
        t0 = time.perf_counter()
        for ob in obs:
            ob.push_audio(FRAME)
            ob.take_framed(KEYS, BATCH)
        t += time.perf_counter() - t0
        if k % 25 == 24:
            pongs(obs)
    return t


def run_take_encode(obs, ticks: int, encode) -> float:
    split = 640
    ping_frame = wsframe.ping_frame
    t = 0.0
    for k in range(ticks):
        t0 = time.perf_counter()
        for ob in obs:
            ob.push_audio(FRAME)
            msgs: list = []
            if ob.take(msgs, BATCH):
                data = encode(msgs, KEYS, split)
                at = ob.ping_due()
                if at is not None:
                    data += ping_frame(at.to_bytes(8, "big"), KEYS[:4])
        t += time.perf_counter() - t0
        if k % 25 == 24:
            pongs(obs)
    return t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--ticks", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    native = load_native("_wsframe")
    cases = []
    if native is not None:
        cases += [("c take_framed", lambda: run_framed(make(native.Outbox, native.Totals, args.streams), args.ticks)),
                  ("c take+encode", lambda: run_take_encode(make(native.Outbox, native.Totals, args.streams),
                                                            args.ticks, wsframe.encode))]
    cases += [("py take+encode", lambda: run_take_encode(make(OutboxPy, TotalsPy, args.streams), args.ticks,
                                                         wsframe.encode)),
              ("py take+encode_py", lambda: run_take_encode(make(OutboxPy, TotalsPy, args.streams), args.ticks,
                                                            wsframe.encode_py))]
    frames = args.streams * args.ticks
    print(f"{args.streams} streams x {args.ticks} ticks of 20 ms ({frames} frames), best of {args.rounds}")
    for name, fn in cases:
        best = min(fn() for _ in range(args.rounds))
        print(f"  {name:18s} {1e6 * best / frames:6.2f} us/frame")
    if native is not None:
        obs = make(native.Outbox, native.Totals, args.streams)
        used0 = native.chunk_counts()[0]
        run_framed(obs, 60)                          # 1.2 s: a full resend window, pongs every 0.5 s
        used = native.chunk_counts()[0] - used0
        held = sum(ob.queued_bytes + ob.retained_bytes for ob in obs)
        print(f"  C outboxes hold {held / args.streams / 1024:.1f} KiB of audio per stream in "
              f"{used * (native.CHUNK_BYTES + 8) / args.streams / 1024:.1f} KiB of chunks "
              f"(resend window at the default 1000 ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
