"""A leg's quality: loss, max delta, what RTCP says about it, and an E-model MOS.

``LegQuality`` is owned by its ``MediaLeg`` (``leg.quality``), sans-I/O: the leg feeds it
every RTP packet it is pushed (``on_rtp``) and what the fast path took (``on_taken``);
the pipeline feeds it the RTCP that concerns the leg (``on_sender_time``,
``on_report``, ``on_dlrr``, ``on_voip_metrics``: ``apply_rtcp``).  ``report()`` gives
the figures calls.json and the WebSocket ``end`` carry as ``quality``.

Loss (RFC 3550 appendix A.3, over the leg's streams)
----------------------------------------------------
Each stream (an SSRC; a sequence restart within one, confirmed as appendix A.1 does:
a jump of more than 3000 forward or 100 back, then the next packet in sequence)
expects ``extended highest - base + 1`` packets; ``lost`` is what the leg's streams
expected less the packets they received (duplicates included, so it can be negative,
as RFC 3550 and tshark's "Lost" say), ``loss_pct`` that of the expected (0 when
negative).  The packet that starts a restart is counted in neither stream (A.1).
Every RTP packet of the leg counts, whatever its payload type (DTMF, comfort noise).

Max delta (as Wireshark's "Max Delta", ui/tap-rtp-analysis.c)
------------------------------------------------------------
In arrival order, per stream: the interval between a packet's capture time and that of
the last packet before it whose RTP timestamp was not behind it; the largest such
interval over packets that are not the stream's first, do not carry the marker bit,
are not comfort noise (PT 13 or 19) nor follow one, and whose timestamp is not behind
(a reordered packet neither counts nor moves the reference).  The fast path takes
in-order packets only and measures them the same way (the slot's ``delta`` state).
Unlike Wireshark, a leg continues over a new flow of the same SSRC (NAT rebinding).
The report says 0 when every delta counted was negative (capture times that stepped
back), and its milliseconds stay finite (the largest float) for capture times any
distance apart.

RTCP about the leg
------------------
Report blocks (SR/RR) about one of the leg's SSRCs are what the leg's receiver (the far
end) says: the last one's fraction lost, cumulative lost and jitter (RTP units at
8 kHz to ms), their count and the largest jitter.  ``remote_loss_pct`` is its
cumulative lost over what its extended highest sequence number says it expected,
counted from the first sequence number this leg saw of that SSRC.

Round trip (RFC 3550 6.4.1, as Wireshark's "roundtrip delay"): the capture point sees
an SR (or an XR RRTR) leave, keeps its capture time by the middle 32 bits of its NTP
time, and when a report block (or an XR DLRR item) names it in LSR (LRR), the round
trip is the time between the two at the capture point less the DLSR (DLRR) the far end
waited.  That is the round trip between the capture point and the end that answered:
the whole path when the capture point is at one end, one part of it otherwise.
``rtt_ms`` is the mean of those samples for the leg (capture point <-> the leg's
receiver), ``max_rtt_ms`` their largest.

The E-model (ITU-T G.107), simplified
-------------------------------------
``R = 93.2 - Idd - Ie,eff + A`` and ``MOS = 1 + 0.035 R + R (R - 60) (100 - R) 7e-6``
(0 < R < 100; 1 below, 4.5 above):

* 93.2 is G.107's R0 - Is with every parameter at its default, with the echo terms Idte
  and Idle at their defaults (the talker echo is assumed as well controlled as G.107's
  default), so only the pure-delay term Idd moves with delay; A (advantage) = 0.
* ``Idd`` = 0 for Ta <= 100 ms, else ``25 ((1 + X^6)^(1/6) - 3 (1 + (X/3)^6)^(1/6) + 2)``
  with ``X = log2(Ta / 100 ms)`` (G.107 with mT = 100 ms, sT = 1).  Ta, the mouth-to-ear
  one-way delay, is taken as half the end-to-end round trip plus the jitter buffer's
  depth (``--jitter-ms``): the end-to-end round trip is the sum of the two directions'
  ``rtt_ms`` (capture point to each end) when both are known, the one known otherwise;
  with no RTCP round trip, 0 (the network's delay is then left out: the MOS is an upper
  bound).  Codec and packetisation delay are left out.
* ``Ie,eff = Ie + (95 - Ie) Ppl / (Ppl / BurstR + Bpl)`` with random loss (BurstR = 1),
  Ppl the larger of the loss this leg saw (``loss_pct``) and the far end's
  (``remote_loss_pct``), and Ie/Bpl from G.113 Appendix I: G.711 (PCMU, PCMA) Ie 0,
  Bpl 25.1 (with packet loss concealment, which the far end is assumed to have);
  G.729/G.729A Ie 11, Bpl 19.0; G.723.1 (6.3 kbit/s) Ie 15, Bpl 16.1.  A leg of any other
  codec (or none) is not rated: ``mos`` and ``r_factor`` are null.
"""

from __future__ import annotations

import math
import sys
import weakref
from typing import Any, NamedTuple

from .rtcp import (
    Dlrr,
    ReceiverReport,
    ReportBlock,
    Rrtr,
    RtcpPacket,
    SenderReport,
    VoipMetrics,
    Xr,
)
from .seq import uint16_delta

MAX_DROPOUT = 3000       # RFC 3550 A.1
MAX_MISORDER = 100
CN_TYPES = (13, 19)      # comfort noise, as Wireshark tells it (PT_CN, PT_CN_OLD)
SENDER_TIMES = 16        # SR/RRTR times a leg keeps for round trips (the newest)
FIRST_SEQS = 8           # SSRCs whose first sequence number a leg keeps (remote loss)
NO_DELTA = float("-inf")

# G.113 Appendix I (Ie, Bpl) by codec name as the legs name codecs
CODECS: dict[str, tuple[float, float]] = {
    "PCMU": (0.0, 25.1),
    "PCMA": (0.0, 25.1),
    "G729": (11.0, 19.0),
    "G729A": (11.0, 19.0),
    "G723": (15.0, 16.1),
}
R_DEFAULT = 93.2         # G.107's R0 - Is (and the echo terms) at default parameters


class Delta(NamedTuple):
    """The max-delta state the fast path is given at ``arm`` and hands back at ``take``:
    the reference packet's capture time and RTP timestamp, the largest delta so far
    (seconds; ``NO_DELTA`` before one was counted)."""

    ref: float
    ref_ts: int
    peak: float


def _ms(seconds: float) -> float:
    """Seconds as the report's milliseconds: rounded to the microsecond and finite (capture
    times may be any finite floats, so an interval of 1e306 s is possible; it stays the
    largest float rather than becoming an infinity that JSON cannot carry)."""
    return round(min(1000.0 * seconds, sys.float_info.max), 3)


def idd(ta_ms: float) -> float:
    """G.107's delay impairment Idd for a one-way delay ``ta_ms`` (mT = 100 ms, sT = 1)."""
    if ta_ms <= 100.0:
        return 0.0
    x = math.log2(ta_ms / 100.0)
    return 25.0 * (float((1 + x ** 6) ** (1 / 6)) - 3 * float((1 + (x / 3) ** 6) ** (1 / 6)) + 2)


def ie_eff(ie: float, bpl: float, ppl: float, burst_r: float = 1.0) -> float:
    """G.107's effective equipment impairment for ``ppl`` % packet loss."""
    return ie + (95.0 - ie) * ppl / (ppl / burst_r + bpl)


def r_factor(codec: str, loss_pct: float, ta_ms: float) -> float | None:
    """R by the simplified E-model (module docstring); None for a codec not rated."""
    rating = CODECS.get(codec)
    if rating is None:
        return None
    return R_DEFAULT - idd(ta_ms) - ie_eff(rating[0], rating[1], max(0.0, loss_pct))


def mos(r: float) -> float:
    """G.107's MOS (conversational quality, estimated) for a rating ``r``."""
    if r <= 0:
        return 1.0
    if r >= 100:
        return 4.5
    return min(4.5, max(1.0, 1 + 0.035 * r + r * (r - 60) * (100 - r) * 7e-6))


class _Remote:
    """What the far end said about the leg in report blocks."""

    __slots__ = ("reports", "last", "max_jitter", "base")

    def __init__(self) -> None:
        self.reports = 0
        self.last: ReportBlock | None = None
        self.max_jitter = 0
        self.base: int | None = None     # the leg's first sequence number of that SSRC


class LegQuality:
    # Slots, and what only RTCP fills made when it comes: a leg is kept small
    # (tests/media/test_leg.py measures it).
    __slots__ = ("_ssrc", "_base", "_max", "_received", "_probe", "expected", "received",
                 "ref", "ref_ts", "peak", "_prev_cn", "_first_seq", "_sent", "remote", "rtt_count",
                 "rtt_sum", "rtt_max", "voip", "malformed", "peer", "__weakref__")

    def __init__(self) -> None:
        self._ssrc: int | None = None     # the stream counted now (A.3)
        self._base = 0                    # its first extended sequence number
        self._max = 0                     # its extended highest
        self._received = 0
        self._probe: int | None = None    # A.1: the sequence number that confirms a restart
        self.expected = 0                 # of the streams closed
        self.received = 0
        self.ref = 0.0                    # max delta: the reference packet's capture time
        self.ref_ts = 0                   # ... its RTP timestamp
        self.peak = NO_DELTA              # ... the largest delta counted, seconds
        self._prev_cn = False
        self._first_seq: dict[int, int] | None = None   # SSRC -> its first sequence number seen
        self._sent: dict[int, float] | None = None      # NTP middle 32 bits -> capture time (SR, RRTR)
        self.remote: _Remote | None = None
        self.rtt_count = 0                        # round trips measured, their sum and maximum (s)
        self.rtt_sum = 0.0
        self.rtt_max = 0.0
        self.voip: VoipMetrics | None = None
        self.malformed = 0                        # RTCP on the leg's addresses that did not parse cleanly
        # the other direction's, for the E-model's delay (``pair``); weak: no cycle to collect
        self.peer: weakref.ReferenceType[LegQuality] | None = None

    # -- RTP -------------------------------------------------------------------------------

    def on_rtp(self, ssrc: int, seq: int, ts: int, marker: bool, pt: int, arrival: float) -> None:
        """Every RTP packet pushed to the leg, in arrival order."""
        cn = pt in CN_TYPES
        if ssrc != self._ssrc:
            self._start(ssrc, seq)
            first = self._first_seq
            if first is None:
                first = self._first_seq = {}
            if ssrc not in first and len(first) < FIRST_SEQS:
                first[ssrc] = seq
            self.ref, self.ref_ts, self._prev_cn = arrival, ts, cn
            return
        d = uint16_delta(seq, self._max)
        if self._probe is not None or d > MAX_DROPOUT or d < -MAX_MISORDER:
            if self._probe is not None and seq == self._probe:
                self._start(ssrc, seq)                 # A.1: confirmed, a new stream
                self.ref, self.ref_ts, self._prev_cn = arrival, ts, cn
                return
            if d > MAX_DROPOUT or d < -MAX_MISORDER:
                self._probe = (seq + 1) & 0xFFFF       # counted nowhere unless confirmed
                return
            self._probe = None
        self._received += 1
        if d > 0:
            self._max += d
        # max delta, as Wireshark (module docstring)
        dts = (ts - self.ref_ts) & 0xFFFFFFFF            # seq.uint32_delta >= 0, inlined
        if dts < 0x80000000:
            delta = arrival - self.ref
            if not marker and not cn and not self._prev_cn and delta > self.peak:
                self.peak = delta
            self.ref, self.ref_ts = arrival, ts
        self._prev_cn = cn

    def _start(self, ssrc: int, seq: int) -> None:
        if self._ssrc is not None:
            self.expected += self._max - self._base + 1
            self.received += self._received
        self._ssrc = ssrc
        self._base = self._max = seq
        self._received = 1
        self._probe = None

    def fast_ok(self, ssrc: int) -> bool:
        """May the fast path take packets of ``ssrc`` now (``on_taken`` then accounts for
        them exactly)?"""
        return self._ssrc == ssrc and self._probe is None and not self._prev_cn

    @property
    def delta(self) -> Delta:
        return Delta(self.ref, self.ref_ts, self.peak)

    def on_taken(self, first_seq: int, packets: int, delta: tuple[float, int, float]) -> None:
        """The fast path took ``packets`` in-order packets of the stream, sequence numbers
        from ``first_seq``; ``delta`` is its max-delta state after them."""
        if packets:
            self._received += packets
            first = self._max + uint16_delta(first_seq, self._max)
            last = first + packets - 1
            if last > self._max:
                self._max = last
        self.ref, self.ref_ts, self.peak = delta

    @property
    def counts(self) -> tuple[int, int]:
        """(expected, received) over the leg's streams so far (A.3)."""
        if self._ssrc is None:
            return self.expected, self.received
        return self.expected + self._max - self._base + 1, self.received + self._received

    # -- RTCP ------------------------------------------------------------------------------

    def on_sender_time(self, ntp_middle: int, arrival: float) -> None:
        """An SR or XR RRTR the leg's sender sent: kept for the reports that name it."""
        sent = self._sent
        if sent is None:
            sent = self._sent = {}
        if ntp_middle not in sent and len(sent) >= SENDER_TIMES:
            del sent[next(iter(sent))]
        sent[ntp_middle] = arrival

    def _rtt(self, ref: int, delay: int, arrival: float) -> None:
        if not ref:
            return
        at = self._sent.get(ref) if self._sent is not None else None
        if at is None:
            return
        rtt = arrival - at - delay / 65536
        if rtt < 0:
            return            # a report older than the capture, or clocks that disagree
        self.rtt_count += 1
        self.rtt_sum += rtt
        if rtt > self.rtt_max:
            self.rtt_max = rtt

    def on_report(self, block: ReportBlock, arrival: float) -> None:
        """A report block about one of the leg's SSRCs (the far end's view of the leg)."""
        rem = self.remote
        if rem is None:
            rem = self.remote = _Remote()
        rem.reports += 1
        rem.last = block
        rem.base = self._first_seq.get(block.ssrc) if self._first_seq is not None else None
        if block.jitter > rem.max_jitter:
            rem.max_jitter = block.jitter
        self._rtt(block.lsr, block.dlsr, arrival)

    def on_dlrr(self, lrr: int, dlrr: int, arrival: float) -> None:
        """An XR DLRR item answering an RRTR of the leg's sender."""
        self._rtt(lrr, dlrr, arrival)

    def on_voip_metrics(self, block: VoipMetrics) -> None:
        self.voip = block

    # -- the report ------------------------------------------------------------------------

    @property
    def rtt(self) -> float | None:
        """Mean round trip (seconds) capture point <-> the leg's receiver, None without one."""
        return self.rtt_sum / self.rtt_count if self.rtt_count else None

    def remote_loss_pct(self) -> float | None:
        rem = self.remote
        if rem is None or rem.last is None or rem.base is None:
            return None
        expected = rem.last.highest_seq - rem.base + 1
        if expected <= 0:
            return None
        return 100.0 * max(0, rem.last.cumulative_lost) / expected

    def report(self, codec: str | None, depth_s: float, jitter_ms: float | None,
               max_jitter_ms: float | None, clock: int = 8000) -> dict[str, Any]:
        """The ``quality`` object of calls.json and the ``end`` message."""
        expected, received = self.counts
        lost = expected - received
        loss = 100.0 * max(0, lost) / expected if expected > 0 else 0.0
        remote_loss = self.remote_loss_pct()
        peer = self.peer() if self.peer is not None else None
        mine, theirs = self.rtt, peer.rtt if peer is not None else None
        known = [r for r in (mine, theirs) if r is not None]
        round_trip = sum(known) if known else 0.0
        ta_ms = min(1000.0 * (round_trip / 2 + depth_s), sys.float_info.max)
        r = r_factor(codec, max(loss, remote_loss or 0.0), ta_ms) if codec and expected > 0 else None
        rem = self.remote
        per_ms = clock / 1000
        out: dict[str, Any] = {
            "expected": expected,
            "lost": lost,
            "loss_pct": round(loss, 3),
            # a negative peak: every delta counted was of capture times stepping back (as
            # the schema asks, reported as 0)
            "max_delta_ms": _ms(max(0.0, self.peak)) if self.peak > NO_DELTA else None,
            "jitter_ms": jitter_ms,
            "max_jitter_ms": max_jitter_ms,
            "rtt_ms": _ms(mine) if mine is not None else None,
            "max_rtt_ms": _ms(self.rtt_max) if self.rtt_count else None,
            "remote": None if rem is None or rem.last is None else {
                "reports": rem.reports,
                "fraction_lost_pct": round(100 * rem.last.fraction_lost / 256, 3),
                "cumulative_lost": rem.last.cumulative_lost,
                "loss_pct": round(remote_loss, 3) if remote_loss is not None else None,
                "jitter_ms": round(rem.last.jitter / per_ms, 3),
                "max_jitter_ms": round(rem.max_jitter / per_ms, 3),
            },
            "xr": None if self.voip is None else _voip(self.voip),
            "rtcp_malformed": self.malformed,
            "r_factor": round(r, 2) if r is not None else None,
            "mos": round(mos(r), 2) if r is not None else None,
            "delay_ms": round(ta_ms, 3),
        }
        return out


def pair(a: LegQuality, b: LegQuality) -> None:
    """``a`` and ``b`` are a call's two directions (caller, callee): each one's E-model
    delay takes the other's round trip too."""
    a.peer, b.peer = weakref.ref(b), weakref.ref(a)


def _voip(v: VoipMetrics) -> dict[str, Any]:
    """An XR VoIP Metrics block as the far end sent it, in plain units (None: unavailable)."""
    return {
        "loss_pct": round(100 * v.loss_rate / 256, 3),
        "discard_pct": round(100 * v.discard_rate / 256, 3),
        "round_trip_ms": v.round_trip_delay or None,
        "end_system_delay_ms": v.end_system_delay or None,
        "r_factor": v.r_factor if v.r_factor != 127 else None,
        "mos_lq": v.mos_lq / 10 if v.mos_lq != 127 else None,
        "mos_cq": v.mos_cq / 10 if v.mos_cq != 127 else None,
    }


def apply_rtcp(packets: tuple[RtcpPacket, ...], sender: LegQuality, by_ssrc: dict[int, LegQuality],
               arrival: float) -> int:
    """Hand a compound RTCP datagram's contents to the legs it concerns: its sender's times
    (SR, XR RRTR) to ``sender`` (the quality of the leg whose addresses it came on), each
    report block, DLRR item and VoIP Metrics block to the leg of the SSRC it names
    (``by_ssrc``: the call's legs).  Returns how many of those named no leg's SSRC."""
    unmatched = 0
    for p in packets:
        if isinstance(p, SenderReport | ReceiverReport):
            if isinstance(p, SenderReport):
                sender.on_sender_time(p.ntp_middle, arrival)
            for block in p.reports:
                q = by_ssrc.get(block.ssrc)
                if q is None:
                    unmatched += 1
                else:
                    q.on_report(block, arrival)
        elif isinstance(p, Xr):
            for b in p.blocks:
                if isinstance(b, Rrtr):
                    sender.on_sender_time(b.ntp_middle, arrival)
                elif isinstance(b, Dlrr):
                    for item in b.items:
                        q = by_ssrc.get(item.ssrc)
                        if q is None:
                            unmatched += 1
                        else:
                            q.on_dlrr(item.lrr, item.dlrr, arrival)
                elif isinstance(b, VoipMetrics):
                    q = by_ssrc.get(b.ssrc)
                    if q is None:
                        unmatched += 1
                    else:
                        q.on_voip_metrics(b)
    return unmatched
