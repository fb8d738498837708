"""RTP (RFC 3550) header parsing, media-port packet classification, and
RFC 4733 telephone-event payloads.  Sans-I/O and allocation-light: the
hot path is one ``struct.unpack_from`` per packet.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from .seq import uint16, uint32

RTP_HEADER_LENGTH = 12
RTP_VERSION = 2
STUN_MAGIC_COOKIE = 0x2112A442
ZRTP_MAGIC_COOKIE = 0x5A525450  # "ZRTP"

PT_CN = 13

# What a datagram on a media port is.
KIND_RTP = "rtp"
KIND_RTCP = "rtcp"
KIND_STUN = "stun"
KIND_ZRTP = "zrtp"
KIND_DTLS = "dtls"
KIND_OTHER = "other"

_HDR = struct.Struct("!BBHII")
_STUN = struct.Struct("!HHI")
_EVENT = struct.Struct("!BBH")

DTMF_DIGITS = "0123456789*#ABCD"


class RtpPacket(NamedTuple):
    sequence: int
    timestamp: int
    ssrc: int
    payload_type: int
    marker: bool
    payload: bytes
    csrcs: tuple[int, ...] = ()
    extension: tuple[int, bytes] | None = None  # (profile, bytes)

    def __repr__(self) -> str:
        return (
            f"RtpPacket(seq={self.sequence}, ts={self.timestamp}, ssrc={self.ssrc:#010x}, "
            f"marker={int(self.marker)}, payload={self.payload_type}, {len(self.payload)} bytes)"
        )


def parse_rtp(data: bytes) -> RtpPacket:
    """Parse an RTP packet; ``ValueError`` with an exact reason otherwise."""
    if len(data) < RTP_HEADER_LENGTH:
        raise ValueError("RTP packet length is less than 12 bytes")
    b0, b1, seq, ts, ssrc = _HDR.unpack_from(data)
    if b0 >> 6 != RTP_VERSION:
        raise ValueError(f"RTP packet has invalid version {b0 >> 6}")
    pos = RTP_HEADER_LENGTH
    cc = b0 & 0x0F
    csrcs: tuple[int, ...] = ()
    if cc:
        end = pos + 4 * cc
        if len(data) < end:
            raise ValueError("RTP packet has truncated CSRC")
        csrcs = struct.unpack_from(f"!{cc}I", data, pos)
        pos = end
    extension: tuple[int, bytes] | None = None
    if b0 & 0x10:
        if len(data) < pos + 4:
            raise ValueError("RTP packet has truncated extension profile / length")
        profile, words = struct.unpack_from("!HH", data, pos)
        pos += 4
        end = pos + 4 * words
        if len(data) < end:
            raise ValueError("RTP packet has truncated extension value")
        extension = (profile, bytes(data[pos:end]))
        pos = end
    end = len(data)
    if b0 & 0x20:
        padding = data[-1]
        if padding == 0 or end - padding < pos:
            raise ValueError("RTP packet padding length is invalid")
        end -= padding
    return RtpPacket(seq, ts, ssrc, b1 & 0x7F, bool(b1 & 0x80), bytes(data[pos:end]), csrcs, extension)


def serialize_rtp(pkt: RtpPacket, padding: int = 0) -> bytes:
    """Build the bytes of an RTP packet (used by tests and generators)."""
    b0 = 0x80 | len(pkt.csrcs)
    if pkt.extension is not None:
        b0 |= 0x10
    if padding:
        b0 |= 0x20
    out = [_HDR.pack(b0, (0x80 if pkt.marker else 0) | pkt.payload_type, uint16(pkt.sequence),
                     uint32(pkt.timestamp), pkt.ssrc)]
    for c in pkt.csrcs:
        out.append(struct.pack("!I", c))
    if pkt.extension is not None:
        profile, value = pkt.extension
        if len(value) % 4:
            raise ValueError("RTP extension value length must be a multiple of 4")
        out.append(struct.pack("!HH", profile, len(value) // 4) + value)
    out.append(pkt.payload)
    if padding:
        out.append(b"\x00" * (padding - 1) + bytes([padding]))
    return b"".join(out)


def classify(data: bytes) -> str:
    """Tell RTP from RTCP, STUN, ZRTP and DTLS arriving on a media port.

    RFC 7983 demultiplexes by the first byte (0-3 STUN, 20-63 DTLS: a record's
    content type, or DTLS 1.3's unified header, 128-191 RTP/RTCP);
    RFC 5761 separates RTCP from RTP by the second byte (192-223 is RTCP's
    packet type range, which RTP payload types 64-95 would collide with and
    so are not used).  ZRTP (RFC 6189) uses version bits 0b00 with its own
    magic cookie at offset 4.
    """
    n = len(data)
    if n < 8:
        return KIND_OTHER
    b0 = data[0]
    top = b0 >> 6
    if top == 2:
        if n < RTP_HEADER_LENGTH and not (192 <= data[1] <= 223):
            return KIND_OTHER
        return KIND_RTCP if 192 <= data[1] <= 223 else KIND_RTP
    if top == 0 and n >= 20:
        _, _, cookie = _STUN.unpack_from(data)
        if cookie == STUN_MAGIC_COOKIE:
            return KIND_STUN
        if b0 == 0x10 and cookie == ZRTP_MAGIC_COOKIE:
            return KIND_ZRTP
    if 20 <= b0 <= 63:
        return KIND_DTLS
    return KIND_OTHER


class TelephoneEvent(NamedTuple):
    """RFC 4733 section 2.3 payload."""

    event: int
    end: bool
    volume: int
    duration: int  # in RTP timestamp units

    @property
    def digit(self) -> str:
        return DTMF_DIGITS[self.event] if self.event < 16 else f"event-{self.event}"


def parse_telephone_event(payload: bytes) -> TelephoneEvent:
    if len(payload) < 4:
        raise ValueError("telephone-event payload is shorter than 4 bytes")
    event, flags, duration = _EVENT.unpack_from(payload)
    return TelephoneEvent(event, bool(flags & 0x80), flags & 0x3F, duration)


def serialize_telephone_event(ev: TelephoneEvent) -> bytes:
    return _EVENT.pack(ev.event, (0x80 if ev.end else 0) | (ev.volume & 0x3F), ev.duration)
