"""What SRTP decryption (SDES keys, ``rtp2ws.media.srtp``) costs per call-second.

    python benchmarks/srtp_cost.py [--calls 50] [--seconds 20] [--rounds 3]

1. Decryption alone: ``SrtpStream.unprotect`` of one call's two legs (50 G.711
   packets of 160 bytes a second each, protected beforehand by libsrtp itself), for
   each suite: microseconds per packet and per call-second.
2. The whole replay (``Pipeline.run_reader`` from a pcap file, a sink that discards):
   the same calls in clear and in SRTP (AES_CM_128_HMAC_SHA1_80).  An SRTP leg goes
   packet at a time through the Python stages (the C fast path takes only clear
   G.711), so this is what an SRTP call costs against a clear one, all told.
Prints CPU microseconds per call-second (best of the rounds).  Speed is measured here,
never asserted in tests.
"""

from __future__ import annotations

import argparse
import base64
import os
import tempfile
import time

import numpy as np
import pylibsrtp

from rtp2ws.bench.capgen import sdp, sip
from rtp2ws.bench.netgen import ethernet, pcap_header, pcap_record, udp
from rtp2ws.capture.file import CaptureFile
from rtp2ws.media.rtp import RtpPacket, serialize_rtp
from rtp2ws.media.srtp import PROFILES, SrtpKey, SrtpStream
from rtp2ws.pipeline.pipeline import Config, Pipeline
from rtp2ws.pipeline.sink import Sink
from rtp2ws.signalling.sdp import CRYPTO_SUITES

PPS = 50        # packets a second per leg (20 ms of G.711)


def key_of(suite: str, seed: int) -> bytes:
    return np.random.default_rng(seed).bytes(sum(CRYPTO_SUITES[suite]))


def sender(suite: str, key: bytes) -> pylibsrtp.Session:
    return pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
                                              srtp_profile=PROFILES[suite]))


def packets(n: int, ssrc: int) -> list[bytes]:
    payload = np.random.default_rng(ssrc).integers(0, 256, 160, dtype=np.uint8).tobytes()
    return [serialize_rtp(RtpPacket(i & 0xFFFF, i * 160 & 0xFFFFFFFF, ssrc, 8, False, payload)) for i in range(n)]


def decrypt_alone(seconds: int, rounds: int) -> None:
    print(f"decryption alone, one call's two legs, {seconds} s ({2 * PPS * seconds} packets):")
    for n, suite in enumerate((next(iter(PROFILES)), *PROFILES)):     # the first a warm-up, not printed
        keys = key_of(suite, 1), key_of(suite, 2)
        sealed = [[sender(suite, k).protect(p) for p in packets(PPS * seconds, ssrc)]
                  for k, ssrc in zip(keys, (1, 2))]
        best = float("inf")
        for _ in range(rounds):
            legs = []
            for k in keys:
                s = SrtpStream()
                s.set_keys([SrtpKey(suite, k)], 0.0)
                legs.append(s)
            t0 = time.process_time()
            for s, leg in zip(legs, sealed):
                for p in leg:
                    if s.unprotect(p, 0.0) is None:
                        raise SystemExit("a packet did not decrypt")
            best = min(best, time.process_time() - t0)
        per_packet = best / (2 * PPS * seconds) * 1e6
        if n:
            print(f"  {suite:26s} {per_packet:6.2f} us/packet  {per_packet * 2 * PPS:7.1f} us per call-second")


def capture(path: str, calls: int, seconds: int, suite: str | None) -> None:
    """``calls`` calls of ``seconds``, each INVITE/200/ACK then both legs, then BYE."""
    records = []
    for c in range(calls):
        a, b = f"10.1.{c // 250}.{c % 250 + 1}", f"10.2.{c // 250}.{c % 250 + 1}"
        cid = f"bench-{c}@srtp"
        t0 = 1000.0 + c * 0.01
        crypto = {}
        sess = {}
        for side, seed in (("a", 2 * c + 1), ("b", 2 * c + 2)):
            if suite is not None:
                k = key_of(suite, seed)
                crypto[side] = f"a=crypto:1 {suite} inline:{base64.b64encode(k).decode()}"
                sess[side] = sender(suite, k)
        proto = "RTP/SAVP" if suite else "RTP/AVP"
        hdr = [("Via", f"SIP/2.0/UDP {a}:5060;branch=z9hG4bK{c}"), ("From", f"<sip:a@{a}>;tag=a{c}"),
               ("To", f"<sip:b@{b}>"), ("Call-ID", cid), ("CSeq", "1 INVITE")]
        invite = sip(f"INVITE sip:b@{b} SIP/2.0", hdr, sdp(a, 4000, pts=(8,), proto=proto, extra=crypto.get("a", "")))
        hdr_ok = [*hdr[:2], ("To", f"<sip:b@{b}>;tag=b{c}"), *hdr[3:]]
        ok = sip("SIP/2.0 200 OK", hdr_ok, sdp(b, 5000, pts=(8,), proto=proto, extra=crypto.get("b", "")))
        bye = sip(f"BYE sip:b@{b} SIP/2.0", [*hdr_ok[:4], ("CSeq", "2 BYE")])
        records += [(t0, udp(a, 5060, b, 5060, invite)), (t0 + 0.01, udp(b, 5060, a, 5060, ok))]
        for side, (src, sp, dst, dp), ssrc in (("a", (a, 4000, b, 5000), 2 * c + 1), ("b", (b, 5000, a, 4000), 2 * c + 2)):
            for i, p in enumerate(packets(PPS * seconds, ssrc)):
                data = sess[side].protect(p) if suite else p
                records.append((t0 + 0.05 + i / PPS, udp(src, sp, dst, dp, data)))
        records.append((t0 + 0.1 + seconds, udp(a, 5060, b, 5060, bye)))
    records.sort(key=lambda r: r[0])
    with open(path, "wb") as f:
        f.write(pcap_header(1))
        for t, ip in records:
            f.write(pcap_record(round(t * 1e6), ethernet(ip)))


def replay_cpu(path: str) -> float:
    pipe = Pipeline(1, Sink(), Config(deliver_ms=1000))
    t0 = time.process_time()
    with CaptureFile(path, native=True) as cap:
        reader = cap.reader
        while pipe.run_reader(reader):
            pass
    pipe.finish()
    return time.process_time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=50)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    decrypt_alone(args.seconds, args.rounds)
    call_seconds = args.calls * args.seconds
    print(f"replay, {args.calls} calls x {args.seconds} s ({call_seconds} call-seconds), the fast path on:")
    with tempfile.TemporaryDirectory() as d:
        for label, suite in (("clear G.711", None), ("SRTP AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_80")):
            path = os.path.join(d, "cap.pcap")
            capture(path, args.calls, args.seconds, suite)
            best = min(replay_cpu(path) for _ in range(args.rounds))
            print(f"  {label:30s} {best / call_seconds * 1e6:7.1f} us CPU per call-second")


if __name__ == "__main__":
    main()
