"""sdp.parse_sdp and what calls.py reads from its result."""

from __future__ import annotations

import atheris

from rtp2ws.media.srtp import keys_for
from rtp2ws.signalling.sdp import DIRECTIONS, MediaDescription, SdpParseError, SessionDescription, parse_sdp

from .. import gen
from ..common import check, entry

INVARIANT = """\
parse_sdp(bytes or str) returns a SessionDescription or raises SdpParseError (exactly:
calls.py catches only that).  In the result every media port, rtcp_port and payload
type fits its field (0..65535, 0..127), rtpmap entries are (name, rate, channels) of
str/int/int, direction is one of the four, audio() is one of media or None, and repr
works.  Each a=crypto line is parsed (tag, suite, inline keys as bytes, MKI length
1..128) or counted in crypto_errors, and media.srtp.keys_for takes what was parsed.  No call takes more than the per-call limit."""


def run(data: bytes, clock) -> None:
    if not data:
        return
    if data[0] < 0x80:
        body = data[1:]
    else:
        fdp = atheris.FuzzedDataProvider(data[1:])
        body = gen.sdp(fdp)
        if fdp.ConsumeBool():
            body = gen.corrupt(fdp, body)
        if fdp.ConsumeBool():
            body = body.decode("utf-8", "replace")
    try:
        s = clock.call(parse_sdp, body)
    except SdpParseError as e:
        check(type(e) is SdpParseError, "error class")
        return
    check(isinstance(s, SessionDescription), "result type")
    check(s.direction in DIRECTIONS, "session direction")
    for m in s.media:
        check(isinstance(m, MediaDescription), "media type")
        check(type(m.port) is int and 0 <= m.port <= 65535, f"port {m.port}")
        check(all(type(pt) is int and 0 <= pt <= 127 for pt in m.formats), "formats")
        check(m.rtcp_port is None or 0 <= m.rtcp_port <= 65535, "rtcp_port")
        check(m.direction in DIRECTIONS, "direction")
        for pt, enc in m.rtpmap.items():
            check(type(pt) is int and isinstance(enc[0], str) and type(enc[1]) is int and type(enc[2]) is int,
                  "rtpmap entry")
        check(m.ptime is None or type(m.ptime) is int, "ptime")
        for c in m.crypto:      # a=crypto (SDES): what media.srtp.keys_for reads
            check(type(c.tag) is int and 0 <= c.tag < 10**9 and c.suite.isascii() and c.keys, "crypto")
            check(all(type(k.key_salt) is bytes and 0 <= k.mki_length <= 128 for k in c.keys), "crypto key")
            clock.call(keys_for, [c])
        lines = sum(1 for n, _ in m.attributes if n.lower() == "crypto")
        check(len(m.crypto) + m.crypto_errors == lines, "each a=crypto parsed or counted")
        clock.call(repr, m)
        _ = m.on_hold
    a = clock.call(s.audio)
    check(a is None or any(a is m for m in s.media), "audio() is not one of media")


TestOneInput = entry("sdp", run)
