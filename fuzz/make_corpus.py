"""Write the committed seed corpora, fuzz/corpus/<target>/: ``python -m fuzz.make_corpus``.

Seeds come from the project's real captures (tests/data/*.pcap, made with SIPp, tcpdump,
espeak-ng and sox) and its call generator (tests/callgen.py), in the raw mode of the
targets that have one (first byte below their structured-mode threshold), and from a
fixed pseudo-random generator for the structured (FuzzedDataProvider) targets.  Small
files, deterministic: running this again gives the same bytes."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from rtp2ws.capture.file import CaptureFile  # noqa: E402
from rtp2ws.media.rtp import KIND_RTCP, classify  # noqa: E402
from rtp2ws.net.packet import PacketDecoder  # noqa: E402
from rtp2ws.signalling.sip import looks_like_sip  # noqa: E402

import callgen  # noqa: E402
import netgen  # noqa: E402
from .common import encode_frames  # noqa: E402
from .gen import LINKTYPES  # noqa: E402
from .targets import TARGETS  # noqa: E402

OUT = os.path.join(ROOT, "fuzz", "corpus")
CAPTURES = ("demo_speech.pcap", "sipp_uac_pcap.pcap")
RTCP_CAPTURE = "gst_rtcp_call.pcap"        # GStreamer's rtpbin: SR, RR, SDES
MAX_SEED = 8000       # under fuzz.run's default -max_len


def _frames(name: str) -> list[tuple[float, bytes]]:
    with CaptureFile(os.path.join(ROOT, "tests", "data", name)) as cap:
        return [item for batch in cap.batches() for item in batch]


def _payloads(frames) -> list[bytes]:
    dec = PacketDecoder(1)
    out = []
    for ts, f in frames:
        pkt = dec.decode(f, ts)
        if pkt is not None:
            out.append(pkt.payload)
    return out


def _fit(frames, budget: int = MAX_SEED - 8) -> list:
    """The first frames (all the SIP, then media) that fit in one seed."""
    out, size = [], 0
    for t, f in frames:
        if size + len(f) + 4 > budget:
            break
        out.append((t, f))
        size += len(f) + 4
    return out


def seeds() -> dict[str, list[bytes]]:
    rnd = random.Random(10)
    blobs = [bytes(rnd.getrandbits(8) for _ in range(n)) for n in (16, 64, 256, 1024, 4000)]
    real = {name: _frames(name) for name in CAPTURES}
    payloads = [p for name in CAPTURES for p in _payloads(real[name])]
    sips = [p for p in payloads if looks_like_sip(p)]
    rtps = [p for p in payloads if p[:1] >= b"\x80"][:6]
    sdps = [m[m.find(b"\r\n\r\n") + 4:] for m in sips if b"application/sdp" in m]
    a, b = callgen.Party("10.0.0.1", 5060, 4000, "1000"), callgen.Party("2001:db8::2", 5060, 5000, "2000")
    call = callgen.Call("seed@test", callgen.Party("10.0.0.1", 5060, 4000, "1000"),
                        callgen.Party("10.0.0.2", 5060, 5000, "2000"), compact=True)
    generated = [ip for _, ip in call.setup(100.0)] + [ip for _, ip in call.bye(101.0)]
    gen_sips = _payloads([(0.0, netgen.link(1, ip)) for ip in generated])
    sdps += [callgen.sdp(a.ip, a.rtp_port).encode(), callgen.sdp(b.ip, b.rtp_port, direction="sendonly").encode()]
    sdps.append(callgen.sdp(a.ip, a.rtp_port, proto="RTP/SAVP", extra="\n".join([       # SDES, RFC 4568
        "a=crypto:1 AEAD_AES_128_GCM inline:3ThJHRDWhBIrnk1Yn91NjQZkG7sOvHdoWJeLKc",
        "a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4;"
        "inline:QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNk|2^20|2:4 KDR=0 UNENCRYPTED_SRTCP",
        "a=crypto:x broken"])).encode())

    out: dict[str, list[bytes]] = {t: list(blobs) for t in TARGETS}
    # packet: every link type, the real frames re-wrapped (raw mode: 0x00, link type index, frames)
    for i, lt in enumerate(LINKTYPES):
        frames = []
        for t, f in real["demo_speech.pcap"][:8]:
            ip = f[14:]
            if lt == 229:
                continue
            frames.append((t, netgen.link(lt, ip) if lt != 1 else f))
        out["packet"].append(b"\x00" + bytes([i]) + encode_frames(_fit(frames)))
    frags = netgen.fragment(real["demo_speech.pcap"][0][1][14:], 200)
    out["packet"].append(b"\x00\x00" + encode_frames([(1.0, netgen.link(1, f)) for f in frags]))
    out["sip"] += [b"\x00" + m for m in sips + gen_sips]
    out["sdp"] += [b"\x00" + s for s in sdps]
    out["rtp"] += rtps + [b"\x81\xc8\x00\x06" + bytes(24), b"\x00\x01\x00\x00\x21\x12\xa4\x42" + bytes(12),
                          b"\x10\x00\x00\x00ZRTP" + bytes(12)]
    # rtcp: the real compounds (raw mode: 0x00, the datagram) and structured ones
    rtcps = [p for p in _payloads(_frames(RTCP_CAPTURE)) if classify(p) == KIND_RTCP]
    out["rtcp"] += [b"\x00" + p for p in rtcps] + [b"\xff" + bytes(rnd.getrandbits(8) for _ in range(n))
                                                   for n in (40, 200, 800)]
    # srtp: structured inputs (keys, set_keys, packets: first byte 0x20 or more) and garbage (below)
    out["srtp"] += [b"\x00" + p for p in rtps[:2]] + [bytes([0x20 + i]) + bytes(rnd.getrandbits(8) for _ in range(n))
                                                     for i, n in enumerate((100, 400, 1500, 4000))]
    for name in CAPTURES:
        out["pipeline"].append(b"\x00\x00" + encode_frames(_fit(real[name])))
    out["pipeline"].append(b"\x00\x00" + encode_frames(_fit([(100.0 + i * 0.01, netgen.link(1, ip))
                                                           for i, ip in enumerate(generated)])))
    return out


def main() -> int:
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    total = 0
    for target, items in seeds().items():
        folder = os.path.join(OUT, target)
        os.makedirs(folder)
        for data in items:
            data = data[:MAX_SEED]
            with open(os.path.join(folder, hashlib.sha1(data).hexdigest()[:16]), "wb") as f:
                f.write(data)
            total += len(data)
        print(f"{target}: {len(items)} seeds")
    print(f"{total} bytes in {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
