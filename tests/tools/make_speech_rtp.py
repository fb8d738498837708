#!/usr/bin/env python3
"""Synthesize a sentence with espeak-ng and write it as a G.711 RTP pcap.

Usage:
    make_speech_rtp.py SENTENCE OUT.pcap [--law alaw|ulaw] [--voice en]
                       [--lead-silence S] [--tail-silence S] [--pad-to S]
                       [--ssrc 0x...] [--seq N] [--ts N] [--speed WPM]

Pipeline:
    espeak-ng -v VOICE -w tmp.wav SENTENCE      (22.05 kHz mono)
    sox tmp.wav -r 8000 -c 1 -b 16 -e signed    (8 kHz mono s16)
    local G.711 encoder (A-law / u-law, no audioop needed)
    pcap writer (stdlib only)

The pcap mimics the sample shipped with SIPp (/usr/share/sip-tester/g711a.pcap):
classic libpcap v2.4, microsecond timestamps, snaplen 65535, link type
Ethernet (DLT_EN10MB), IPv4/UDP, one RTP packet per frame.  Differences from
that sample: 20 ms packetization (160 payload bytes) instead of 30 ms/240 bytes.

RTP headers: V=2, no padding/extension/CSRC, PT 8 (PCMA) or 0 (PCMU), marker
bit on the first packet only, sequence number +1 and timestamp +160 per
packet, fixed SSRC.  SIPp's play_pcap_audio copies the RTP header and payload
verbatim (only the IP addresses/UDP ports are rewritten), so these values are
what ends up on the wire.

Optional --lead-silence/--tail-silence/--pad-to add G.711 "digital silence"
frames so that a call leg keeps sending RTP while the other party is talking
(like a real phone without VAD).

Side output: OUT.pcap.raw.wav -- the 8 kHz mono 16-bit speech (without the
silence padding) that was encoded, for reference.
"""

from __future__ import annotations

import argparse
import shutil
import struct
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

SAMPLE_RATE = 8000
FRAME_SAMPLES = 160  # 20 ms at 8 kHz
FRAME_SECONDS = FRAME_SAMPLES / SAMPLE_RATE

# ---------------------------------------------------------------------------
# G.711 encoders (after the classic Sun Microsystems g711.c reference code)
# ---------------------------------------------------------------------------
_SEG_AEND = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)
_SEG_UEND = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)


def _segment(value: int, table: tuple[int, ...]) -> int:
    for i, end in enumerate(table):
        if value <= end:
            return i
    return len(table)


def linear_to_alaw(sample: int) -> int:
    """16-bit signed linear PCM -> 8-bit A-law (G.711), with even-bit inversion."""
    pcm = sample >> 3  # 13-bit magnitude range
    if pcm >= 0:
        mask = 0xD5
    else:
        mask = 0x55
        pcm = -pcm - 1
    seg = _segment(pcm, _SEG_AEND)
    if seg >= 8:
        return 0x7F ^ mask
    aval = seg << 4
    if seg < 2:
        aval |= (pcm >> 1) & 0x0F
    else:
        aval |= (pcm >> seg) & 0x0F
    return aval ^ mask


def linear_to_ulaw(sample: int) -> int:
    """16-bit signed linear PCM -> 8-bit u-law (G.711)."""
    bias = 0x84
    clip = 8159
    pcm = sample >> 2  # 14-bit range
    if pcm < 0:
        pcm = -pcm
        mask = 0x7F
    else:
        mask = 0xFF
    if pcm > clip:
        pcm = clip
    pcm += bias >> 2
    seg = _segment(pcm, _SEG_UEND)
    if seg >= 8:
        return 0x7F ^ mask
    uval = (seg << 4) | ((pcm >> (seg + 1)) & 0x0F)
    return uval ^ mask


def build_table(law: str) -> bytes:
    """Lookup table indexed by the unsigned 16-bit view of a sample."""
    enc = linear_to_alaw if law == "alaw" else linear_to_ulaw
    return bytes(enc(i - 65536 if i >= 32768 else i) for i in range(65536))


def encode(pcm16le: bytes, law: str) -> bytes:
    table = build_table(law)
    n = len(pcm16le) // 2
    samples = struct.unpack(f"<{n}H", pcm16le[: 2 * n])  # unsigned view
    return bytes(table[s] for s in samples)


SILENCE_BYTE = {"alaw": 0xD5, "ulaw": 0xFF}  # encoding of linear 0
PAYLOAD_TYPE = {"alaw": 8, "ulaw": 0}

# ---------------------------------------------------------------------------
# Audio synthesis
# ---------------------------------------------------------------------------


def synthesize_8k(sentence: str, voice: str, speed: int | None, workdir: Path) -> bytes:
    """Return 8 kHz mono signed 16-bit little-endian PCM of the sentence."""
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            sys.exit(f"error: '{tool}' not found in PATH (apt-get install espeak-ng sox)")
    raw_wav = workdir / "espeak.wav"
    cmd = ["espeak-ng", "-v", voice, "-w", str(raw_wav)]
    if speed:
        cmd += ["-s", str(speed)]
    cmd.append(sentence)
    subprocess.run(cmd, check=True, timeout=60)
    wav8k = workdir / "speech_8k.wav"
    subprocess.run(
        ["sox", str(raw_wav), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16",
         "-e", "signed-integer", str(wav8k)],
        check=True, timeout=60,
    )
    with wave.open(str(wav8k), "rb") as w:
        if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (SAMPLE_RATE, 1, 2):
            sys.exit(f"error: unexpected sox output format {w.getparams()}")
        return w.readframes(w.getnframes())


def write_wav(path: Path, pcm16le: bytes) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm16le)


# ---------------------------------------------------------------------------
# pcap writer (libpcap classic format, Ethernet / IPv4 / UDP / RTP)
# ---------------------------------------------------------------------------


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def _ip4(addr: str) -> bytes:
    return bytes(int(x) for x in addr.split("."))


def build_frame(src: tuple[str, int], dst: tuple[str, int], ip_id: int, payload: bytes) -> bytes:
    sip, sport = src
    dip, dport = dst
    udp_len = 8 + len(payload)
    pseudo = _ip4(sip) + _ip4(dip) + struct.pack("!BBH", 0, 17, udp_len)
    udp_hdr = struct.pack("!HHHH", sport, dport, udp_len, 0)
    ucs = _csum(pseudo + udp_hdr + payload) or 0xFFFF
    udp = struct.pack("!HHHH", sport, dport, udp_len, ucs) + payload
    ip_hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, ip_id & 0xFFFF, 0x4000,
                         64, 17, 0, _ip4(sip), _ip4(dip))
    ip_hdr = ip_hdr[:10] + struct.pack("!H", _csum(ip_hdr)) + ip_hdr[12:]
    eth = bytes.fromhex("00d050100166") + bytes.fromhex("000476222017") + b"\x08\x00"
    return eth + ip_hdr + udp


def write_rtp_pcap(path: Path, g711: bytes, law: str, ssrc: int, seq0: int, ts0: int,
                   src: tuple[str, int], dst: tuple[str, int], start_time: float) -> int:
    pt = PAYLOAD_TYPE[law]
    nframes = len(g711) // FRAME_SAMPLES
    with open(path, "wb") as f:
        # magic, v2.4, thiszone, sigfigs, snaplen, linktype 1 (Ethernet)
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i in range(nframes):
            marker = 0x80 if i == 0 else 0x00
            rtp = struct.pack("!BBHII", 0x80, marker | pt, (seq0 + i) & 0xFFFF,
                              (ts0 + i * FRAME_SAMPLES) & 0xFFFFFFFF, ssrc & 0xFFFFFFFF)
            payload = rtp + g711[i * FRAME_SAMPLES:(i + 1) * FRAME_SAMPLES]
            frame = build_frame(src, dst, i + 1, payload)
            t_us = round((start_time + i * FRAME_SECONDS) * 1_000_000)
            f.write(struct.pack("<IIII", t_us // 1_000_000, t_us % 1_000_000, len(frame), len(frame)))
            f.write(frame)
    return nframes


def _hostport(s: str) -> tuple[str, int]:
    host, _, port = s.rpartition(":")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sentence")
    ap.add_argument("out_pcap", type=Path)
    ap.add_argument("--law", choices=("alaw", "ulaw"), default="alaw")
    ap.add_argument("--voice", default="en", help="espeak-ng voice (default: en)")
    ap.add_argument("--speed", type=int, default=None, help="espeak-ng words per minute")
    ap.add_argument("--lead-silence", type=float, default=0.0, metavar="SEC",
                    help="silence frames before the speech")
    ap.add_argument("--tail-silence", type=float, default=0.0, metavar="SEC",
                    help="silence frames after the speech")
    ap.add_argument("--pad-to", type=float, default=0.0, metavar="SEC",
                    help="append silence until the stream lasts at least SEC seconds")
    ap.add_argument("--ssrc", type=lambda s: int(s, 0), default=0x2A5E0001)
    ap.add_argument("--seq", type=int, default=1000, help="first RTP sequence number")
    ap.add_argument("--ts", type=int, default=0, help="first RTP timestamp")
    ap.add_argument("--src", type=_hostport, default=("10.0.0.1", 5000),
                    help="src ip:port written into the pcap (SIPp rewrites it)")
    ap.add_argument("--dst", type=_hostport, default=("10.0.0.2", 6000),
                    help="dst ip:port written into the pcap (SIPp rewrites it)")
    ap.add_argument("--start-time", type=float, default=1700000000.0,
                    help="pcap timestamp of the first packet (epoch seconds)")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="make_speech_rtp.") as tmp:
        pcm = synthesize_8k(args.sentence, args.voice, args.speed, Path(tmp))
    if not pcm:
        sys.exit("error: espeak-ng produced no audio")
    write_wav(Path(str(args.out_pcap) + ".raw.wav"), pcm)

    g711 = encode(pcm, args.law)
    sil = bytes([SILENCE_BYTE[args.law]])
    lead = round(args.lead_silence / FRAME_SECONDS) * FRAME_SAMPLES
    g711 = sil * lead + g711
    g711 += sil * (-len(g711) % FRAME_SAMPLES)  # complete the last frame
    g711 += sil * (round(args.tail_silence / FRAME_SECONDS) * FRAME_SAMPLES)
    want = round(args.pad_to / FRAME_SECONDS) * FRAME_SAMPLES
    if len(g711) < want:
        g711 += sil * (want - len(g711))

    n = write_rtp_pcap(args.out_pcap, g711, args.law, args.ssrc, args.seq, args.ts,
                       args.src, args.dst, args.start_time)
    print(f"{args.out_pcap}: {n} RTP packets, PT {PAYLOAD_TYPE[args.law]} "
          f"({args.law}), {n * FRAME_SECONDS:.2f} s, SSRC 0x{args.ssrc:08X}, "
          f"speech {len(pcm) / 2 / SAMPLE_RATE:.2f} s starting at "
          f"{lead / SAMPLE_RATE:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
