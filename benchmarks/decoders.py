"""CPU cost of each codec's decoder per call-second, G.711 beside them, and what the
ctypes binding adds per call.

    python benchmarks/decoders.py [--seconds 20] [--rounds 5] [--rate 16000]

For each codec, 20 ms packets of speech (espeak-ng through sox, encoded by the reference
encoder: spandsp's G.722, bcg729, libopus at 24 kbit/s; G.711 by codec.g711) are:

* decoded alone, packet after packet, by the decoder the leg uses (G.711: its table,
  a packet at a time and a second at a time, as ``MediaLeg.take_audio`` does);
* pushed through a ``MediaLeg`` at ``--rate`` (jitter buffer, timeline, decoder,
  resampler: everything a leg does per packet, handing its audio out every second).

Prints CPU microseconds per second of one direction of a call (``time.process_time``,
best of the rounds), and the cost of one ctypes call that does nothing worth measuring
(``opus_packet_get_nb_samples`` on a 1-byte packet), the binding's own overhead.
Speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import ctypes
import shutil
import subprocess
import tempfile
import time
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rtp2ws.codec import g711
from rtp2ws.codec.clib import load
from rtp2ws.codec.g722 import G722Decoder, G722Encoder
from rtp2ws.codec.g729 import G729Decoder, G729Encoder
from rtp2ws.codec.opus import OpusDecoder, OpusEncoder
from rtp2ws.media.leg import MediaLeg
from rtp2ws.media.rtp import RtpPacket

SENTENCE = "The quick brown fox jumps over the lazy dog, then waits a while before it runs home."


def speech(rate: int, seconds: float) -> np.ndarray:
    """``seconds`` of speech at ``rate`` (the sentence repeated)."""
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        raise SystemExit("needs espeak-ng and sox (apt-get install espeak-ng sox)")
    with tempfile.TemporaryDirectory() as d:
        raw, out = Path(d) / "e.wav", Path(d) / "o.wav"
        subprocess.run(["espeak-ng", "-w", str(raw), SENTENCE], check=True)
        subprocess.run(["sox", "-R", str(raw), "-D", "-r", str(rate), "-c", "1", "-b", "16", "-e", "signed-integer",
                        str(out)], check=True)
        with wave.open(str(out)) as w:
            x = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.int16)
    n = int(seconds * rate)
    return np.tile(x, -(-n // len(x)))[:n]


def streams(seconds: float) -> dict[str, tuple[int, int, list[bytes]]]:
    """codec -> (payload type, RTP clock, 20 ms payloads)."""
    x8, x16, x48 = speech(8000, seconds), speech(16000, seconds), speech(48000, seconds)
    ulaw = g711.encode_ulaw(x8)
    g722 = G722Encoder().encode(x16)
    enc729 = G729Encoder()
    g729 = b"".join(enc729.encode_frame(x8[i:i + 80]) for i in range(0, len(x8) // 80 * 80, 80))
    opus = OpusEncoder(48000, 1, bitrate=24000)
    return {
        "PCMU": (0, 8000, [ulaw[i:i + 160] for i in range(0, len(ulaw), 160)]),
        "G722": (9, 8000, [g722[i:i + 160] for i in range(0, len(g722), 160)]),
        "G729": (18, 8000, [g729[i:i + 20] for i in range(0, len(g729), 20)]),
        "OPUS": (111, 48000, [opus.encode(x48[i:i + 960]) for i in range(0, len(x48) // 960 * 960, 960)]),
    }


def best(rounds: int, run: Callable[[], object]) -> float:
    times = []
    for _ in range(rounds):
        t = time.process_time()
        run()
        times.append(time.process_time() - t)
    return min(times)


def decode_alone(codec: str, payloads: list[bytes], rate: int) -> Callable[[], object]:
    if codec == "PCMU":
        return lambda: [g711.decode_ulaw(p) for p in payloads]
    if codec == "G722":
        dec = G722Decoder()
    elif codec == "G729":
        dec = G729Decoder()
    else:
        dec = OpusDecoder(rate)
    return lambda: [dec.decode(p) for p in payloads]


def through_a_leg(pt: int, clock: int, payloads: list[bytes], rate: int) -> Callable[[], object]:
    step = 160 * clock // 8000
    packets = [(100.0 + i * 0.02, RtpPacket(i & 0xFFFF, (i * step) & 0xFFFFFFFF, 0x5EED, pt, False, p))
               for i, p in enumerate(payloads)]

    def run() -> None:
        leg = MediaLeg("caller", rate=rate)
        leg.set_payload_map({111: ("OPUS", 48000)})
        for i, (t, p) in enumerate(packets):
            leg.push(p, t)
            if i % 50 == 49:
                while leg.pending_samples:
                    leg.take_audio()
        leg.close()
        leg.take_audio()
    return run


def ctypes_call_us(n: int = 200_000) -> float:
    lib = load("opus")
    f = lib.opus_packet_get_nb_samples
    f.restype = ctypes.c_int
    f.argtypes = [ctypes.c_char_p, ctypes.c_int32, ctypes.c_int32]
    packet = b"\x08"
    t = time.perf_counter()
    for _ in range(n):
        f(packet, 1, 48000)
    return (time.perf_counter() - t) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds of speech per codec")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--rate", type=int, default=16000, choices=(8000, 16000, 24000, 48000))
    args = ap.parse_args()
    s = streams(args.seconds)
    per = 1e6 / args.seconds
    print(f"CPU µs per call-second (one direction), best of {args.rounds}, {args.seconds:g} s of speech, "
          f"--rate {args.rate}")
    print(f"{'codec':8} {'decoder alone':>14} {'whole leg':>10}   payload")
    for codec, (pt, clock, payloads) in s.items():
        alone = best(args.rounds, decode_alone(codec, payloads, args.rate)) * per
        leg = best(args.rounds, through_a_leg(pt, clock, payloads, args.rate)) * per
        size = sum(map(len, payloads)) / len(payloads)
        print(f"{codec:8} {alone:14.0f} {leg:10.0f}   {size:.0f} B / 20 ms")
    run = g711.decode_ulaw(b"".join(s["PCMU"][2]))
    assert len(run)
    whole = b"".join(s["PCMU"][2])
    runs = [whole[i:i + 8000] for i in range(0, len(whole), 8000)]
    alone = best(args.rounds, lambda: [g711.decode_ulaw(r) for r in runs]) * per
    print(f"{'PCMU 1 s':8} {alone:14.0f} {'':>10}   (the leg's way: a second's run per table look-up)")
    print(f"one ctypes call: {ctypes_call_us():.2f} µs (the binding's overhead per packet decoded, 50 a second)")


if __name__ == "__main__":
    main()
