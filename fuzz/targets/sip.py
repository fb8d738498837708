"""sip.looks_like_sip / message_length / parse_message and the SipMessage accessors calls.py uses."""

from __future__ import annotations

import atheris

from rtp2ws.signalling import sip
from rtp2ws.signalling.sip import SipMessage, SipParseError

from .. import gen
from ..common import check, entry

INVARIANT = """\
looks_like_sip(payload) returns a bool.  message_length(buf) returns None or an int n with
0 < n <= len(buf), or raises SipParseError.  parse_message(data) returns a SipMessage or
raises SipParseError (exactly that class: a plain ValueError is a bug).  On a parsed
message every accessor calls.py uses (call_id, cseq, from/to tag, uri and user, vias,
top_via_branch, header, header_all, sdp_bodies, repr) returns a value of its type or,
for cseq only, raises SipParseError.  A message that parses with a Content-Length has a
body of exactly that length.  No call takes more than the per-call limit."""


def _accessors(msg: SipMessage, clock) -> None:
    check(isinstance(msg, SipMessage), f"parse_message returned {type(msg).__name__}")
    check(isinstance(clock.call(lambda: msg.call_id), str), "call_id")
    try:
        number, method = clock.call(lambda: msg.cseq)
        check(isinstance(number, int) and number >= 0 and isinstance(method, str), "cseq")
    except SipParseError:
        pass
    for name in ("from_tag", "to_tag", "from_user", "to_user"):
        v = clock.call(getattr, msg, name)
        check(v is None or isinstance(v, str), name)
    for name in ("from_uri", "to_uri"):
        check(isinstance(clock.call(getattr, msg, name), str), name)
    check(all(isinstance(v, str) for v in clock.call(msg.vias)), "vias")
    b = clock.call(lambda: msg.top_via_branch)
    check(b is None or isinstance(b, str), "top_via_branch")
    check(all(isinstance(v, bytes) for v in clock.call(msg.sdp_bodies)), "sdp_bodies")
    for name in ("content-type", "l", "i", "v"):
        clock.call(msg.header, name)
        clock.call(msg.header_all, name)
    clock.call(repr, msg)
    if msg.is_request:
        check(isinstance(msg.method, str) and isinstance(msg.uri, str), "request line")
    else:
        check(isinstance(msg.status, int) and 0 <= msg.status <= 999, "status")


def run(data: bytes, clock) -> None:
    if not data:
        return
    if data[0] < 0x80:
        payload = data[1:]                 # raw: the seeds are real messages
    else:
        fdp = atheris.FuzzedDataProvider(data[1:])
        payload = gen.sip_message(fdp)
        if fdp.ConsumeBool():
            payload = gen.corrupt(fdp, payload)
    check(type(clock.call(sip.looks_like_sip, payload)) is bool, "looks_like_sip")
    try:
        n = clock.call(sip.message_length, payload)
        check(n is None or (type(n) is int and 0 < n <= len(payload)), f"message_length {n}")
    except SipParseError:
        pass
    try:
        msg = clock.call(sip.parse_message, payload)
    except SipParseError as e:
        check(type(e) is SipParseError, "error class")
        return
    _accessors(msg, clock)
    cl = msg.header("content-length")
    if cl is not None:
        digits = cl.strip().lstrip("0") or "0"      # leading zeros are allowed, and not counted
        check(len(digits) <= sip.MAX_DIGITS and len(msg.body) == int(digits), "body length differs from Content-Length")


TestOneInput = entry("sip", run)
