"""Build SIP/RTP call captures for tests: signalling text, SDP, RTP streams
with tones, loss, reordering, duplicates, DTMF; written through netgen.

``sdp`` and ``sip`` are the bench capture generator's (``rtp2ws.bench.capgen``),
re-exported here."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import numpy as np

from rtp2ws.bench.capgen import sdp, sip
from rtp2ws.codec import g711
from rtp2ws.media.rtp import RtpPacket, TelephoneEvent, serialize_rtp, serialize_telephone_event

import netgen


def tone(freq: float, n: int, start: int = 0, amp: float = 8000.0, rate: int = 8000) -> np.ndarray:
    t = np.arange(start, start + n) / rate
    return np.round(amp * np.sin(2 * math.pi * freq * t)).astype(np.int16)


@dataclass
class Party:
    ip: str
    sip_port: int
    rtp_port: int
    user: str


@dataclass
class Call:
    """A two-party call; methods return lists of (time, IP packet bytes)."""

    call_id: str
    a: Party       # caller
    b: Party       # callee
    from_tag: str = "ftag1"
    to_tag: str = "ttag1"
    cseq: int = 1
    compact: bool = False
    invite_headers: list = field(default_factory=list)   # extra (name, value) on INVITEs
    frames: list = field(default_factory=list)

    def _hdrs(self, method_cseq: str, cseq: int, sender_is_a: bool, to_tag: bool, branch: str) -> list:
        src = self.a if sender_is_a else self.b
        c = self.compact
        h = [
            ("v" if c else "Via", f"SIP/2.0/UDP {src.ip}:{src.sip_port};branch=z9hG4bK{branch}"),
            ("f" if c else "From", f"<sip:{self.a.user}@{self.a.ip}>;tag={self.from_tag}"),
            ("t" if c else "To", f"<sip:{self.b.user}@{self.b.ip}>" + (f";tag={self.to_tag}" if to_tag else "")),
            ("i" if c else "Call-ID", self.call_id),
            ("CSeq", f"{cseq} {method_cseq}"),
            ("m" if c else "Contact", f"<sip:{src.user}@{src.ip}:{src.sip_port}>"),
        ]
        if method_cseq == "INVITE":
            h += self.invite_headers
        return h

    def request(self, t: float, method: str, *, from_a: bool = True, body: str = "", cseq: int | None = None,
                to_tag: bool = True, branch: str | None = None) -> list:
        cseq = self.cseq if cseq is None else cseq
        src, dst = (self.a, self.b) if from_a else (self.b, self.a)
        h = self._hdrs(method, cseq, from_a, to_tag, branch or f"{method}{cseq}{int(from_a)}")
        if not from_a:  # in-dialog request from the callee: From/To swap roles
            h[1] = (h[1][0], f"<sip:{self.b.user}@{self.b.ip}>;tag={self.to_tag}")
            h[2] = (h[2][0], f"<sip:{self.a.user}@{self.a.ip}>;tag={self.from_tag}")
        msg = sip(f"{method} sip:{dst.user}@{dst.ip}:{dst.sip_port} SIP/2.0", h, body, compact=self.compact)
        return [(t, netgen.udp(src.ip, src.sip_port, dst.ip, dst.sip_port, msg))]

    def response(self, t: float, status: int, reason: str, method: str, *, req_from_a: bool = True,
                 body: str = "", cseq: int | None = None, to_tag: bool = True) -> list:
        cseq = self.cseq if cseq is None else cseq
        # sent by the receiver of the request
        src, dst = (self.b, self.a) if req_from_a else (self.a, self.b)
        h = self._hdrs(method, cseq, req_from_a, to_tag, f"{method}{cseq}{int(req_from_a)}")
        if not req_from_a:
            h[1] = (h[1][0], f"<sip:{self.b.user}@{self.b.ip}>;tag={self.to_tag}")
            h[2] = (h[2][0], f"<sip:{self.a.user}@{self.a.ip}>;tag={self.from_tag}")
        msg = sip(f"SIP/2.0 {status} {reason}", h, body, compact=self.compact)
        return [(t, netgen.udp(src.ip, src.sip_port, dst.ip, dst.sip_port, msg))]

    def setup(self, t: float, *, pts=(8, 101), answer_pts=None) -> list:
        """INVITE(SDP) / 100 / 180 / 200(SDP) / ACK starting at t; media may start at t+0.1."""
        f = []
        f += self.request(t, "INVITE", body=sdp(self.a.ip, self.a.rtp_port, pts=pts), to_tag=False)
        f += self.response(t + 0.01, 100, "Trying", "INVITE", to_tag=False)
        f += self.response(t + 0.02, 180, "Ringing", "INVITE")
        f += self.response(t + 0.05, 200, "OK", "INVITE", body=sdp(self.b.ip, self.b.rtp_port, pts=answer_pts or pts))
        f += self.request(t + 0.06, "ACK")
        return f

    def bye(self, t: float, from_a: bool = True) -> list:
        self.cseq += 1
        return self.request(t, "BYE", from_a=from_a) + self.response(t + 0.01, 200, "OK", "BYE", req_from_a=from_a)


def rtp_packets(src: Party, dst: Party, t0: float, pcm: np.ndarray, *, ssrc: int = 0x11223344, pt: int = 8,
                seq0: int = 1000, ts0: int = 50000, frame: int = 160, law: str = "alaw",
                src_port: int | None = None) -> list:
    """One RTP packet per ``frame`` samples of ``pcm``; returns [(time, seq, ip_packet)]."""
    enc = g711.encode_alaw if law == "alaw" else g711.encode_ulaw
    out = []
    for i in range(0, len(pcm) // frame):
        payload = enc(pcm[i * frame:(i + 1) * frame])
        pkt = RtpPacket((seq0 + i) & 0xFFFF, (ts0 + i * frame) & 0xFFFFFFFF, ssrc, pt, i == 0, payload)
        data = serialize_rtp(pkt)
        out.append((t0 + i * frame / 8000, (seq0 + i) & 0xFFFF,
                    netgen.udp(src.ip, src_port or src.rtp_port, dst.ip, dst.rtp_port, data)))
    return out


def dtmf_packets(src: Party, dst: Party, t0: float, digit_event: int, *, ssrc: int, seq0: int, ts: int,
                 packets: int = 5, pt: int = 101) -> list:
    """An RFC 4733 event: ``packets`` updates every 20 ms then three end packets."""
    out = []
    seq = seq0
    for i in range(packets):
        ev = TelephoneEvent(digit_event, False, 10, 160 * (i + 1))
        out.append((t0 + 0.02 * i, serialize_rtp(RtpPacket(seq & 0xFFFF, ts, ssrc, pt, i == 0, serialize_telephone_event(ev)))))
        seq += 1
    for j in range(3):
        ev = TelephoneEvent(digit_event, True, 10, 160 * (packets + 1))
        out.append((t0 + 0.02 * packets + 0.001 * j, serialize_rtp(RtpPacket(seq & 0xFFFF, ts, ssrc, pt, False, serialize_telephone_event(ev)))))
        seq += 1
    return [(t, s, netgen.udp(src.ip, src.rtp_port, dst.ip, dst.rtp_port, d)) for (t, d), s in
            zip(out, range(seq0, seq0 + len(out)))]


def drop(stream: list, seqs) -> list:
    seqs = set(seqs)
    return [p for p in stream if p[1] not in seqs]


def reorder(stream: list, swaps: list[tuple[int, int]]) -> list:
    """Swap arrival times of packets by index pairs (i, j) — network reordering."""
    s = list(stream)
    for i, j in swaps:
        (ti, qi, pi), (tj, qj, pj) = s[i], s[j]
        s[i], s[j] = (ti, qj, pj), (tj, qi, pi)
    return s


def duplicate(stream: list, idx, delay: float = 0.005) -> list:
    s = list(stream)
    for i in idx:
        t, q, p = stream[i]
        s.append((t + delay, q, p))
    return s


def frames_of(*parts) -> list:
    """Merge lists of (t, ip) and (t, seq, ip) into time-sorted (t, ip)."""
    out = []
    for part in parts:
        for item in part:
            out.append((item[0], item[-1]))
    out.sort(key=lambda x: x[0])
    return out


def write(path, frames, linktype: int = 1, *, vlans=(), pcapng: bool = False) -> str:
    linked = [(t, netgen.link(linktype, ip, vlans=vlans)) for t, ip in frames]
    (netgen.write_pcapng if pcapng else netgen.write_pcap)(str(path), linked, linktype)
    return str(path)


def expected_16k(pcm8k: np.ndarray) -> np.ndarray:
    """What a leg should contain for lossless audio: G.711 round trip then 2x upsampling."""
    from rtp2ws.codec.resample import upsample_2x
    return upsample_2x(g711.decode_alaw(g711.encode_alaw(pcm8k)))


def rng(seed: int = 1) -> random.Random:
    return random.Random(seed)
