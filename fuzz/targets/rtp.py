"""rtp.classify, parse_rtp, parse_telephone_event, and their serialisers as an oracle."""

from __future__ import annotations

import struct

from rtp2ws.media import rtp
from rtp2ws.media.rtp import KIND_DTLS, KIND_OTHER, KIND_RTCP, KIND_RTP, KIND_STUN, KIND_ZRTP

from ..common import check, entry

INVARIANT = """\
classify(data) returns one of rtp/rtcp/stun/zrtp/other and never raises; "rtp" only for
12+ bytes of version 2 outside RTCP's packet types 192-223, "stun" only with the magic
cookie.  parse_rtp(data) returns an RtpPacket or raises ValueError; a parsed packet
serialises back (serialize_rtp) to a packet that parses to the same fields, and its
payload lies within the input.  parse_telephone_event(payload) raises ValueError under 4
bytes, else round-trips its 4 bytes (but the reserved bit).  No call takes more than
the per-call limit."""

KINDS = (KIND_RTP, KIND_RTCP, KIND_STUN, KIND_ZRTP, KIND_DTLS, KIND_OTHER)


def run(data: bytes, clock) -> None:
    kind = clock.call(rtp.classify, data)
    check(kind in KINDS, f"classify returned {kind!r}")
    if kind == KIND_RTP:
        check(len(data) >= 12 and data[0] >> 6 == 2 and not 192 <= data[1] <= 223, "rtp verdict")
    if kind == KIND_STUN:
        check(len(data) >= 20 and struct.unpack_from("!I", data, 4)[0] == rtp.STUN_MAGIC_COOKIE, "stun verdict")
    try:
        pkt = clock.call(rtp.parse_rtp, data)
    except ValueError:
        pkt = None
    if pkt is not None:
        check(len(pkt.payload) <= len(data) - 12 and data.find(pkt.payload, 12) >= 0,
              "payload not within the packet")
        again = clock.call(rtp.parse_rtp, rtp.serialize_rtp(pkt))
        check(again == pkt, f"round trip {pkt!r} -> {again!r}")
        clock.call(repr, pkt)
    try:
        ev = clock.call(rtp.parse_telephone_event, data)
    except ValueError:
        check(len(data) < 4, "telephone-event of 4+ bytes refused")
        return
    check(len(data) >= 4, "telephone-event under 4 bytes accepted")
    check(rtp.serialize_telephone_event(ev) == bytes([data[0], data[1] & 0xBF]) + data[2:4], "event round trip")
    check(isinstance(ev.digit, str), "digit")


TestOneInput = entry("rtp", run)
