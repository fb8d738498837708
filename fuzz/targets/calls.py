"""calls.CallRegistry fed parsed SIP messages with arbitrary timestamps."""

from __future__ import annotations

import math

import atheris

from rtp2ws.signalling.calls import Call, CallEnded, CallRegistry, CallStarted, HoldChanged, MediaUpdated
from rtp2ws.signalling.sip import SipParseError, parse_message

from .. import gen
from ..common import check, entry

INVARIANT = """\
Timestamps: any finite float, in any order (equal, backwards, exactly rtp_timeout or the
32 s linger apart, negative, 1e300); capture timestamps are always finite, so NaN and
infinities are outside the contract.  For any sequence of parsed messages and calls of
touch, adopt, end, expire, due, next_deadline and finish: nothing raises (a message
without Call-ID or with a bad CSeq is counted), every call returns, events are
CallStarted / MediaUpdated / HoldChanged / CallEnded, and timers make progress: after
expire(now), next_deadline() is None or later than now.  An active call is not ended,
an ended one has its end time and reason; after finish(now) no call is active.  The
timer heap never holds more entries than calls plus messages.  No call takes more than
the per-call limit."""

EVENTS = (CallStarted, MediaUpdated, HoldChanged, CallEnded)
HUGE = [1e15, 2.0 ** 53, 1e17, 1e300, -1e300, 4294967296.0, -1.0, 0.0]


def _sdp_body(fdp) -> str:
    if fdp.ConsumeIntInRange(0, 3) == 0:
        return gen.sdp(fdp).decode("utf-8", "replace")
    addr = fdp.PickValueInList(["10.0.0.1", "10.0.0.2", "0.0.0.0", "2001:db8::1", "::"])
    port = fdp.PickValueInList([4000, 5000, 0, 65535])
    d = fdp.PickValueInList(["", "a=sendonly\r\n", "a=inactive\r\n", "a=recvonly\r\n", "a=crypto:1 x\r\n"])
    return (f"v=0\r\no=- 1 1 IN IP4 {addr}\r\ns=-\r\nc=IN IP4 {addr}\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\n{d}")


def _message(fdp) -> bytes:
    """A message of one of a few dialogs: usually well formed, sometimes not at all."""
    if fdp.ConsumeIntInRange(0, 7) == 0:
        return gen.sip_message(fdp)
    cid = fdp.PickValueInList(gen.CALL_IDS[:3])
    request = fdp.ConsumeBool()
    method = fdp.PickValueInList(["INVITE", "ACK", "BYE", "CANCEL", "UPDATE", "PRACK", "INFO"])
    n = fdp.ConsumeIntInRange(1, 4)
    ftag = fdp.PickValueInList(["ftag1", "ttag1", ""])
    ttag = fdp.PickValueInList(["", "ttag1", "ftag1", "t2"])
    frm, to = ("A", "B") if fdp.ConsumeBool() else ("B", "A")
    start = f"{method} sip:{to}@x SIP/2.0" if request else \
        f"SIP/2.0 {fdp.PickValueInList([100, 180, 183, 200, 401, 407, 486, 487, 603])} R"
    body = _sdp_body(fdp) if fdp.ConsumeIntInRange(0, 2) == 0 else ""
    lines = [start, f"Call-ID: {cid}", f"CSeq: {n} {method}",
             f"From: <sip:{frm}@x>" + (f";tag={ftag}" if ftag else ""),
             f"To: <sip:{to}@x>" + (f";tag={ttag}" if ttag else "")]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body.encode())}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def _time(fdp, prev: float, timeout: float) -> float:
    how = fdp.ConsumeIntInRange(0, 11)
    if how == 0:
        t = prev
    elif how == 1:
        t = prev + timeout
    elif how == 2:
        t = prev + 32.0
    elif how == 3:
        t = prev - fdp.ConsumeFloatInRange(0.0, 100.0)
    elif how == 4:
        t = fdp.PickValueInList(HUGE)
    elif how == 5:
        t = fdp.ConsumeRegularFloat()
    elif how == 6:
        t = prev + fdp.ConsumeFloatInRange(0.0, 1000.0)
    else:
        t = prev + fdp.PickValueInList([0.02, 1.0, 5.0])
    return t if math.isfinite(t) else prev


def _check_events(events) -> None:
    check(isinstance(events, list), "events are not a list")
    for ev in events:
        check(isinstance(ev, EVENTS), f"event {type(ev).__name__}")
        if isinstance(ev, CallEnded):
            check(ev.call.ended and ev.call.end is not None and ev.call.end_reason, "CallEnded without end")


def _check_state(reg: CallRegistry) -> None:
    for cid, call in reg.active.items():
        check(not call.ended and call.call_id == cid, "an ended call is active")
    for call in reg._ended.values():
        check(call.ended and call.end is not None and call.end_reason, "ended call without its end")
    check(len(reg._timers) <= reg.stats["calls"] + reg.stats["sip_messages"] + 1, "timer heap grows")


def run(data: bytes, clock) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    timeout = fdp.PickValueInList([300.0, 0.0, 1.0, 32.0, 1e-9, 86400.0])
    reg = CallRegistry(rtp_timeout=timeout)
    now = fdp.PickValueInList([1000.0, 0.0, -5.0, 1.7e9])
    calls: list[Call] = []
    for _ in range(fdp.ConsumeIntInRange(1, 48)):
        now = _time(fdp, now, timeout)
        op = fdp.ConsumeIntInRange(0, 15)
        if op <= 8:
            try:
                msg = parse_message(_message(fdp))
            except SipParseError:
                continue
            events = clock.call(reg.on_message, msg, now)
        elif op == 9 and calls:
            clock.call(reg.touch, calls[fdp.ConsumeIntInRange(0, len(calls) - 1)], now)
            events = []
        elif op == 10:
            events = clock.call(reg.adopt, f"rtp:{fdp.ConsumeIntInRange(0, 3)}", now)
        elif op == 11 and calls:
            events = clock.call(reg.end, calls[fdp.ConsumeIntInRange(0, len(calls) - 1)], "identified", now)
        elif op == 12:
            check(all(isinstance(c, Call) for c in clock.call(reg.due, now)), "due")
            events = []
        else:
            events = clock.call(reg.expire, now)
            dl = clock.call(reg.next_deadline)
            check(dl is None or dl > now, f"CallRegistry: a timer due at or before now after expire({now!r}): {dl!r}")
        _check_events(events)
        calls += [ev.call for ev in events if isinstance(ev, CallStarted)]
        _check_state(reg)
    now = _time(fdp, now, timeout)
    events = clock.call(reg.finish, now)
    _check_events(events)
    check(not reg.active, "calls still active after finish")
    _check_state(reg)


TestOneInput = entry("calls", run)
