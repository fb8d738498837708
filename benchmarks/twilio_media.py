"""What ``--ws-format twilio`` costs per 20 ms of a call on the sender's Python path,
against the binary frame the other formats write for the same audio.

    python benchmarks/twilio_media.py [--calls 200] [--seconds 10] [--rounds 3]

For each call, a ``ws.twilio.TwilioStream`` with both tracks begun converts the
call's two-channel 16 kHz PCM as the outbox hands it out (runs of 50 frames: 1 s),
and ``ws.frame.encode`` masks the text messages (two per 20 ms: inbound and
outbound; keys from one buffer drawn beforehand); against it, ``ws.frame.encode``
of the same PCM as binary frames of 20 ms (one per 20 ms, as ``--stereo`` sends).
Prints microseconds per 20 ms of a call (best of the rounds) and the bytes on the
wire.  Speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from rtp2ws.ws import frame as wsframe
from rtp2ws.ws.protocol import encode
from rtp2ws.ws.twilio import TwilioStream

FRAME_BYTES = 320 * 2 * 2      # 20 ms, two channels, 16 kHz, int16


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    second = rng.integers(-8000, 8000, (16000, 2)).astype("<i2").tobytes()     # 1 s: 50 frames
    frames = args.calls * args.seconds * 50
    keys = os.urandom(4 * 2 * frames + 64)
    best_text = best_bin = float("inf")
    text_bytes = bin_bytes = 0
    for _ in range(args.rounds):
        streams = []
        for i in range(args.calls):
            t = TwilioStream({"stream_id": f"{i:032x}", "call_id": f"call{i}"})
            t.connect()
            t.convert([encode({"type": "track", "leg": "caller", "offset": 0}),
                       encode({"type": "track", "leg": "callee", "offset": 0})])
            streams.append(t)
        t0 = time.perf_counter()
        n = 0
        for _ in range(args.seconds):
            for t in streams:
                texts = t.convert([second])
                data = wsframe.encode(texts, keys[:4 * len(texts)], FRAME_BYTES)
                n += len(data)
        best_text = min(best_text, time.perf_counter() - t0)
        text_bytes = n
        t0 = time.perf_counter()
        n = 0
        for _ in range(args.seconds):
            for _ in streams:
                data = wsframe.encode([second], keys[:4 * 50], FRAME_BYTES)
                n += len(data)
        best_bin = min(best_bin, time.perf_counter() - t0)
        bin_bytes = n
    per = 1e6 / frames
    print(f"{args.calls} calls x {args.seconds} s ({frames} frames of 20 ms, both legs), best of {args.rounds}:")
    print(f"  twilio text (convert + encode): {best_text * per:7.2f} us per 20 ms of a call, "
          f"{text_bytes / frames:6.0f} bytes on the wire")
    print(f"  binary stereo frame (encode):   {best_bin * per:7.2f} us per 20 ms of a call, "
          f"{bin_bytes / frames:6.0f} bytes on the wire")


if __name__ == "__main__":
    main()
