"""RTCP (RFC 3550 section 6, RFC 3611 XR): compound packets parsed, sans-I/O.

``parse_compound(data)`` reads a compound RTCP datagram into a tuple of typed packets,
or raises ``RtcpError`` (a ``ValueError``) with an exact reason.  The datagram must
parse *cleanly*, as RFC 3550 appendix A.2 checks a compound packet: every packet of
version 2 and of a type in RTCP's range (192-223, which RFC 5761 keeps apart from RTP's
payload types), a length that stays inside the datagram, padding only on the last
packet, and the lengths adding up to the datagram's exactly.  Nothing else is required (the
first packet need not be SR or RR: reduced-size RTCP, RFC 5506, sends feedback alone).

That exact sum is what keeps SRTCP (RFC 3711 3.4) out: an SRTCP packet carries, after
its (encrypted) RTCP, 4 bytes of E flag and index and an authentication tag (usually
10 bytes), which no RTCP length covers (14 bytes, never a whole packet; a 4-byte tag's
8 bytes would have to start with a type in range), so it raises ``RtcpError`` and is
counted by the caller, never read as reports; past the first 8 bytes the rest of an
encrypted one is random to the parser, and the lengths it reads there end the same way.

Packets (RFC 3550 6.4-6.7, RFC 3611 4):

=====================  =================================================================
``SenderReport``       PT 200: sender info (NTP and RTP time, packets, octets), blocks
``ReceiverReport``     PT 201: report blocks
``ReportBlock``        of SR/RR: fraction lost, cumulative lost (signed 24 bits), extended
                       highest sequence, jitter (RTP units), LSR, DLSR (1/65536 s)
``Sdes``               PT 202: chunks of (SSRC, items (type, bytes))
``Bye``                PT 203: SSRCs, reason
``App``                PT 204: subtype, SSRC, name (4 bytes), data
``Xr``                 PT 207: SSRC, blocks: ``Rrtr`` (BT 4), ``Dlrr`` (BT 5),
                       ``VoipMetrics`` (BT 7), ``XrBlock`` (any other type, raw)
``Other``              any other packet type (RTPFB/PSFB feedback, RFC 4585 ...), raw
=====================  =================================================================

The ``serialize_*`` functions build the same bytes (tests and generators).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

RTCP_SR = 200
RTCP_RR = 201
RTCP_SDES = 202
RTCP_BYE = 203
RTCP_APP = 204
RTCP_XR = 207

XR_RRTR = 4
XR_DLRR = 5
XR_VOIP_METRICS = 7

_HDR = struct.Struct("!BBH")
_SENDER = struct.Struct("!IIIIII")          # SSRC, NTP msw, NTP lsw, RTP ts, packets, octets
_BLOCK = struct.Struct("!IB3sIIII")         # SSRC, fraction, cumulative (3 bytes), highest, jitter, LSR, DLSR
_XR_BLOCK = struct.Struct("!BBH")
_DLRR_ITEM = struct.Struct("!III")
_VOIP = struct.Struct("!IBBBBHHHHbbBBBBBBBBHHH")


class RtcpError(ValueError):
    """A datagram that is not (clean) compound RTCP."""


class ReportBlock(NamedTuple):
    ssrc: int                # the source reported on
    fraction_lost: int       # of 256, since the previous report
    cumulative_lost: int     # signed (RFC 3550's errata: duplicates can make it negative)
    highest_seq: int         # extended highest sequence number received
    jitter: int              # interarrival jitter, RTP timestamp units
    lsr: int                 # middle 32 bits of the last SR's NTP time from the source (0: none)
    dlsr: int                # delay since that SR, 1/65536 s


class SenderReport(NamedTuple):
    ssrc: int
    ntp: int                 # 64-bit NTP timestamp
    rtp_timestamp: int
    packets: int
    octets: int
    reports: tuple[ReportBlock, ...]

    @property
    def ntp_middle(self) -> int:
        """The middle 32 bits of ``ntp``: what a report block's LSR names."""
        return (self.ntp >> 16) & 0xFFFFFFFF


class ReceiverReport(NamedTuple):
    ssrc: int
    reports: tuple[ReportBlock, ...]


class Sdes(NamedTuple):
    chunks: tuple[tuple[int, tuple[tuple[int, bytes], ...]], ...]   # (SSRC/CSRC, ((type, value) ...))


class Bye(NamedTuple):
    ssrcs: tuple[int, ...]
    reason: bytes


class App(NamedTuple):
    subtype: int
    ssrc: int
    name: bytes
    data: bytes


class Rrtr(NamedTuple):
    """XR block 4: the receiver's NTP time (its middle 32 bits come back as a DLRR's LRR)."""
    ntp: int

    @property
    def ntp_middle(self) -> int:
        return (self.ntp >> 16) & 0xFFFFFFFF


class DlrrItem(NamedTuple):
    ssrc: int                # the receiver whose RRTR this answers
    lrr: int                 # middle 32 bits of that RRTR's NTP time
    dlrr: int                # delay since it, 1/65536 s


class Dlrr(NamedTuple):
    """XR block 5."""
    items: tuple[DlrrItem, ...]


class VoipMetrics(NamedTuple):
    """XR block 7 (RFC 3611 4.7), fields as sent: rates of 256, delays in ms, R and MOS x10;
    127 (R, MOS) or 0 (some others) where the sender has no value."""
    ssrc: int
    loss_rate: int
    discard_rate: int
    burst_density: int
    gap_density: int
    burst_duration: int
    gap_duration: int
    round_trip_delay: int
    end_system_delay: int
    signal_level: int
    noise_level: int
    rerl: int
    gmin: int
    r_factor: int
    ext_r_factor: int
    mos_lq: int
    mos_cq: int
    rx_config: int
    jb_nominal: int
    jb_maximum: int
    jb_abs_max: int


class XrBlock(NamedTuple):
    """An XR block of a type not parsed here, raw."""
    block_type: int
    type_specific: int
    data: bytes


XrReport = Rrtr | Dlrr | VoipMetrics | XrBlock


class Xr(NamedTuple):
    ssrc: int
    blocks: tuple[XrReport, ...]


class Other(NamedTuple):
    """A packet of another type (feedback, RFC 4585; ...), raw: what follows its header."""
    packet_type: int
    rc: int                  # the header's count field
    body: bytes


RtcpPacket = SenderReport | ReceiverReport | Sdes | Bye | App | Xr | Other


def _blocks(body: bytes, pos: int, count: int, name: str) -> tuple[tuple[ReportBlock, ...], int]:
    end = pos + 24 * count
    if end > len(body):
        raise RtcpError(f"RTCP {name} has truncated report blocks")
    out = []
    for p in range(pos, end, 24):
        ssrc, fraction, cum, highest, jitter, lsr, dlsr = _BLOCK.unpack_from(body, p)
        cumulative = int.from_bytes(cum, "big", signed=True)
        out.append(ReportBlock(ssrc, fraction, cumulative, highest, jitter, lsr, dlsr))
    return tuple(out), end


def _sdes(body: bytes, count: int) -> Sdes:
    chunks = []
    pos = 0
    n = len(body)
    for _ in range(count):
        if pos + 4 > n:
            raise RtcpError("RTCP SDES has a truncated chunk")
        (ssrc,) = struct.unpack_from("!I", body, pos)
        pos += 4
        items = []
        while True:
            if pos >= n:
                raise RtcpError("RTCP SDES chunk has no end item")
            kind = body[pos]
            if kind == 0:                       # end: skip to the next 32-bit boundary
                pos = (pos + 4) & ~3
                break
            if pos + 2 > n or pos + 2 + body[pos + 1] > n:
                raise RtcpError("RTCP SDES item is truncated")
            length = body[pos + 1]
            items.append((kind, bytes(body[pos + 2:pos + 2 + length])))
            pos += 2 + length
        chunks.append((ssrc, tuple(items)))
    if pos > n:
        raise RtcpError("RTCP SDES chunk has no end item")
    return Sdes(tuple(chunks))


def _xr(body: bytes) -> Xr:
    if len(body) < 4:
        raise RtcpError("RTCP XR has no SSRC")
    (ssrc,) = struct.unpack_from("!I", body)
    pos = 4
    blocks: list[XrReport] = []
    while pos < len(body):
        if pos + 4 > len(body):
            raise RtcpError("RTCP XR block header is truncated")
        bt, specific, words = _XR_BLOCK.unpack_from(body, pos)
        start, end = pos + 4, pos + 4 + 4 * words
        if end > len(body):
            raise RtcpError(f"RTCP XR block {bt} is truncated")
        if bt == XR_RRTR:
            if words != 2:
                raise RtcpError("RTCP XR RRTR block length is not 2")
            hi, lo = struct.unpack_from("!II", body, start)
            blocks.append(Rrtr(hi << 32 | lo))
        elif bt == XR_DLRR:
            if words % 3:
                raise RtcpError("RTCP XR DLRR block length is not a multiple of 3")
            blocks.append(Dlrr(tuple(DlrrItem(*_DLRR_ITEM.unpack_from(body, p)) for p in range(start, end, 12))))
        elif bt == XR_VOIP_METRICS:
            if words != 8:
                raise RtcpError("RTCP XR VoIP Metrics block length is not 8")
            v = _VOIP.unpack_from(body, start)
            # v: ssrc, 4 densities/rates, 4 durations/delays, signal, noise, RERL, Gmin,
            # R, ext R, MOS-LQ, MOS-CQ, RX config, reserved, 3 jitter buffer figures
            blocks.append(VoipMetrics(*v[:18], *v[19:]))
        else:
            blocks.append(XrBlock(bt, specific, bytes(body[start:end])))
        pos = end
    return Xr(ssrc, tuple(blocks))


def _packet(pt: int, count: int, body: bytes) -> RtcpPacket:
    if pt == RTCP_SR:
        if len(body) < 24:
            raise RtcpError("RTCP SR is shorter than its sender info")
        ssrc, hi, lo, rtp_ts, packets, octets = _SENDER.unpack_from(body)
        reports, _ = _blocks(body, 24, count, "SR")      # what follows: profile extensions
        return SenderReport(ssrc, hi << 32 | lo, rtp_ts, packets, octets, reports)
    if pt == RTCP_RR:
        if len(body) < 4:
            raise RtcpError("RTCP RR has no SSRC")
        (ssrc,) = struct.unpack_from("!I", body)
        reports, _ = _blocks(body, 4, count, "RR")
        return ReceiverReport(ssrc, reports)
    if pt == RTCP_SDES:
        return _sdes(body, count)
    if pt == RTCP_BYE:
        if len(body) < 4 * count:
            raise RtcpError("RTCP BYE has truncated SSRCs")
        ssrcs = struct.unpack_from(f"!{count}I", body)
        reason = b""
        pos = 4 * count
        if pos < len(body):
            length = body[pos]
            if pos + 1 + length > len(body):
                raise RtcpError("RTCP BYE reason is truncated")
            reason = bytes(body[pos + 1:pos + 1 + length])
        return Bye(ssrcs, reason)
    if pt == RTCP_APP:
        if len(body) < 8:
            raise RtcpError("RTCP APP is shorter than its SSRC and name")
        (ssrc,) = struct.unpack_from("!I", body)
        return App(count, ssrc, bytes(body[4:8]), bytes(body[8:]))
    if pt == RTCP_XR:
        return _xr(body)
    return Other(pt, count, bytes(body))


def parse_compound(data: bytes) -> tuple[RtcpPacket, ...]:
    """The packets of a compound RTCP datagram; ``RtcpError`` unless it parses cleanly."""
    n = len(data)
    if n < 4:
        raise RtcpError("RTCP packet is shorter than 4 bytes")
    out: list[RtcpPacket] = []
    pos = 0
    while pos < n:
        if n - pos < 4:
            raise RtcpError("RTCP lengths do not add up to the datagram's")
        b0, pt, words = _HDR.unpack_from(data, pos)
        if b0 >> 6 != 2:
            raise RtcpError(f"RTCP packet has invalid version {b0 >> 6}")
        if not 192 <= pt <= 223:
            raise RtcpError(f"RTCP packet type {pt} is outside 192-223")
        end = pos + 4 * (words + 1)
        if end > n:
            raise RtcpError("RTCP lengths do not add up to the datagram's")
        body_end = end
        if b0 & 0x20:
            if end != n:
                raise RtcpError("RTCP padding on a packet that is not the last")
            padding = data[end - 1]
            if padding == 0 or padding > end - pos - 4:
                raise RtcpError("RTCP padding length is invalid")
            body_end -= padding
        out.append(_packet(pt, b0 & 0x1F, data[pos + 4:body_end]))
        pos = end
    return tuple(out)


# -- building (tests, generators) ------------------------------------------------------

def _wrap(pt: int, count: int, body: bytes) -> bytes:
    if len(body) % 4:
        raise ValueError("an RTCP packet's body is a whole number of 32-bit words")
    return _HDR.pack(0x80 | count, pt, len(body) // 4) + body


def serialize_block(b: ReportBlock) -> bytes:
    return _BLOCK.pack(b.ssrc, b.fraction_lost, (b.cumulative_lost & 0xFFFFFF).to_bytes(3, "big"),
                       b.highest_seq, b.jitter, b.lsr, b.dlsr)


def serialize(p: RtcpPacket) -> bytes:
    """One RTCP packet's bytes (join several for a compound datagram)."""
    if isinstance(p, SenderReport):
        body = _SENDER.pack(p.ssrc, p.ntp >> 32, p.ntp & 0xFFFFFFFF, p.rtp_timestamp, p.packets, p.octets)
        return _wrap(RTCP_SR, len(p.reports), body + b"".join(map(serialize_block, p.reports)))
    if isinstance(p, ReceiverReport):
        return _wrap(RTCP_RR, len(p.reports), struct.pack("!I", p.ssrc) + b"".join(map(serialize_block, p.reports)))
    if isinstance(p, Sdes):
        parts = []
        for ssrc, items in p.chunks:
            chunk = struct.pack("!I", ssrc) + b"".join(bytes([k, len(v)]) + v for k, v in items) + b"\x00"
            parts.append(chunk + b"\x00" * (-len(chunk) % 4))
        return _wrap(RTCP_SDES, len(p.chunks), b"".join(parts))
    if isinstance(p, Bye):
        body = struct.pack(f"!{len(p.ssrcs)}I", *p.ssrcs)
        if p.reason:
            body += bytes([len(p.reason)]) + p.reason
            body += b"\x00" * (-len(body) % 4)
        return _wrap(RTCP_BYE, len(p.ssrcs), body)
    if isinstance(p, App):
        return _wrap(RTCP_APP, p.subtype, struct.pack("!I", p.ssrc) + p.name + p.data)
    if isinstance(p, Xr):
        out = [struct.pack("!I", p.ssrc)]
        for b in p.blocks:
            if isinstance(b, Rrtr):
                out.append(_XR_BLOCK.pack(XR_RRTR, 0, 2) + struct.pack("!II", b.ntp >> 32, b.ntp & 0xFFFFFFFF))
            elif isinstance(b, Dlrr):
                out.append(_XR_BLOCK.pack(XR_DLRR, 0, 3 * len(b.items))
                           + b"".join(_DLRR_ITEM.pack(*i) for i in b.items))
            elif isinstance(b, VoipMetrics):
                v = tuple(b)
                out.append(_XR_BLOCK.pack(XR_VOIP_METRICS, 0, 8) + _VOIP.pack(*v[:18], 0, *v[18:]))
            else:
                out.append(_XR_BLOCK.pack(b.block_type, b.type_specific, len(b.data) // 4) + b.data)
        return _wrap(RTCP_XR, 0, b"".join(out))
    return _wrap(p.packet_type, p.rc, p.body)
