#!/usr/bin/env python3
"""Synthesize a sentence with espeak-ng and write it as a G.722 RTP pcap (PT 9) that
SIPp's play_pcap_audio can play.

Usage:
    make_g722_rtp.py SENTENCE OUT.pcap [--ssrc 0x...] [--seq N] [--ts N] [--voice en]

Pipeline: espeak-ng -> sox (16 kHz mono s16, no dither) -> spandsp's G.722 encoder at
64 kbit/s (through rtp2ws.codec.g722, so run it with rtp2ws importable: the project's
.venv/bin/python) -> one RTP packet per 20 ms (160 bytes, the timestamp +160: G.722's
RTP clock is 8000 Hz, RFC 3551), written with make_speech_rtp.py's pcap writer (classic
pcap, Ethernet, IPv4/UDP).  The last partial 20 ms is padded with the encoding of zeros.
Side output: OUT.pcap.raw.wav, the 16 kHz speech that was encoded.
"""

from __future__ import annotations

import argparse
import struct
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_speech_rtp import _hostport, build_frame  # noqa: E402  (the tool beside this one)

RATE = 16000
PACKET_BYTES = 160        # 20 ms of G.722 at 64 kbit/s


def synthesize_16k(sentence: str, voice: str, workdir: Path) -> bytes:
    raw, out = workdir / "espeak.wav", workdir / "speech_16k.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(raw), sentence], check=True, timeout=60)
    subprocess.run(["sox", "-R", str(raw), "-D", "-r", str(RATE), "-c", "1", "-b", "16", "-e", "signed-integer",
                    str(out)], check=True, timeout=60)
    with wave.open(str(out), "rb") as w:
        return w.readframes(w.getnframes())


def main(argv: list[str] | None = None) -> int:
    import numpy as np

    from rtp2ws.codec.g722 import G722Encoder

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sentence")
    ap.add_argument("out_pcap", type=Path)
    ap.add_argument("--voice", default="en")
    ap.add_argument("--ssrc", type=lambda s: int(s, 0), default=0x2A5E0722)
    ap.add_argument("--seq", type=int, default=1000)
    ap.add_argument("--ts", type=int, default=0)
    ap.add_argument("--src", type=_hostport, default=("10.0.0.1", 5000))
    ap.add_argument("--dst", type=_hostport, default=("10.0.0.2", 6000))
    ap.add_argument("--start-time", type=float, default=1700000000.0)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="make_g722_rtp.") as tmp:
        pcm = synthesize_16k(args.sentence, args.voice, Path(tmp))
    with wave.open(str(args.out_pcap) + ".raw.wav", "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm)
    x = np.frombuffer(pcm, "<i2").astype(np.int16)
    x = np.concatenate([x, np.zeros(-len(x) % (2 * PACKET_BYTES), np.int16)])
    bits = G722Encoder().encode(x)
    n = len(bits) // PACKET_BYTES
    with open(args.out_pcap, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i in range(n):
            rtp = struct.pack("!BBHII", 0x80, (0x80 if i == 0 else 0) | 9, (args.seq + i) & 0xFFFF,
                              (args.ts + i * PACKET_BYTES) & 0xFFFFFFFF, args.ssrc)
            frame = build_frame(args.src, args.dst, i + 1, rtp + bits[i * PACKET_BYTES:(i + 1) * PACKET_BYTES])
            t_us = round((args.start_time + i * 0.02) * 1_000_000)
            f.write(struct.pack("<IIII", t_us // 1_000_000, t_us % 1_000_000, len(frame), len(frame)))
            f.write(frame)
    print(f"{args.out_pcap}: {n} RTP packets, PT 9 (G.722), {n * 0.02:.2f} s, SSRC 0x{args.ssrc:08X}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
