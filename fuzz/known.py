"""Bugs the targets are known to hit, recognised by where and how they fail.

``classify(target, exc)`` names the bug an exception stands for, or None for a new
one.  A long run (``fuzz.run --keep-going``) saves inputs that hit a known bug under
``out/fuzz/known/<target>/`` and goes on; everything else stops libFuzzer as a crash.
Once a bug is fixed its entry can go: the saved reproducers then replay clean
(``tests/test_fuzz.py::test_crash_reproducers_replay_clean``)."""

from __future__ import annotations

import os

from .common import Hang, InvariantViolation, SlowCall

# --guard-known (RTP2WS_FUZZ_GUARD=1): while a known bug is unfixed, predict the inputs
# that would hit its hang or its huge allocation and stop them at once (saved like any
# known-bug input), so a long run spends its time on the rest.  Off by default, in the
# test suite and in replays, where the real code runs.
GUARD = os.environ.get("RTP2WS_FUZZ_GUARD", "") not in ("", "0")


class KnownBug(Exception):
    """Raised by a guard: the input would hit the known bug ``bug``."""

    def __init__(self, bug: str, what: str) -> None:
        super().__init__(f"{bug}: {what}")
        self.bug = bug


def expire_would_loop(registry, now: float) -> bool:
    """Would ``CallRegistry.expire(now)`` as written before the fix re-arm a timer at or
    before ``now`` (and so loop for ever)?  Mirrors its tests; only used as a guard."""
    from rtp2ws.calls import AUTH_RETRY_SECONDS

    for due, _, call in registry._timers:
        if due > now or call.ended:
            continue
        if call.challenged_at is not None and now - call.challenged_at > AUTH_RETRY_SECONDS:
            continue
        if now - call.last_activity > registry.rtp_timeout:
            continue
        again = call.last_activity + registry.rtp_timeout
        if call.challenged_at is not None:
            again = min(again, call.challenged_at + AUTH_RETRY_SECONDS)
        if again <= now:
            return True
    return False


def guard_expire(registry, now: float) -> None:
    if GUARD and expire_would_loop(registry, now):
        raise KnownBug("calls-expire-loop", f"expire({now!r}) would re-arm a timer due at or before now")

INT_DIGITS = "Exceeds the limit"     # int() of more than sys.get_int_max_str_digits() digits


def _frames(exc: BaseException) -> list[tuple[str, str]]:
    """(file name, function) of every frame the exception went through, innermost last."""
    out = []
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        out.append((os.path.basename(code.co_filename), code.co_name))
        tb = tb.tb_next
    return out


def _in(frames, filename: str, *functions: str) -> bool:
    return any(f == filename and (not functions or fn in functions) for f, fn in frames)


def _innermost_product_frame(frames) -> tuple[str, str] | None:
    """The innermost frame in rtp2ws itself (not the stdlib, not the target)."""
    for f, fn in reversed(frames):
        if f in _PRODUCT_FILES:
            return f, fn
    return None


_PRODUCT_FILES = frozenset(
    n for n in os.listdir(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "rtp2ws"))
    if n.endswith(".py")
)

# name -> what it is and who fixes it (shown in reports and README)
BUGS = {
    # being fixed on other branches (issue 10)
    "sip-content-length-digits": "Content-Length of 4301+ digits: int() raises a plain ValueError "
                                 "(sip.parse_message / sip.message_length / tcpstream framing)",
    "calls-expire-loop": "CallRegistry.expire re-arms a timer due at now for now again and never returns "
                         "(now - last_activity == rtp_timeout, or a timestamp so large that adding the timeout "
                         "changes nothing)",
    "tcp-quadratic": "SipTcpReassembler: draining many small out-of-order segments costs O(n^2)",
    "fragments-unbounded": "PacketDecoder holds more fragment memory than the bound, or one fragment costs "
                           "more than the per-call limit",
    "sink-recursion": "sinkserver: deeply nested JSON raises RecursionError instead of Refusal",
    # found by these targets (see the report of issue 10; for the lead to fix)
    "sdp-int-digits": "sdp.parse_sdp raises a plain ValueError, not SdpParseError, for a number of 4301+ digits "
                      "(m= port, a=rtpmap/fmtp/rtcp/ptime) or a format that str.isdigit() accepts but int() "
                      "does not (m=audio 4000 RTP/AVP \u00b2); calls.CallRegistry lets it escape on_message",
    "pipeline-gap-fill": "leg.MediaLeg fills a gap in a leg's media with silence in one piece: a call kept up "
                         "by SIP alone for 3 hours and then one RTP packet make a 345 MB hand-off (RSS +490 MB); "
                         "and pipeline._unclaimed keeps RTP in probation with no expiry, so two packets in "
                         "sequence hours apart make a media-only call that starts at the first one",
    "correlator-nul-address": "correlator.pack_ip lets socket.inet_pton's ValueError ('embedded null character') "
                              "escape for an SDP c= address with a NUL byte; Pipeline.feed raises",
    "sip-cseq-digits": "SipMessage.cseq raises a plain ValueError for a CSeq number of 4301+ digits; "
                       "calls.CallRegistry.on_message catches only SipParseError",
}


def classify(target: str, exc: BaseException) -> str | None:
    if isinstance(exc, KnownBug):
        return exc.bug
    frames = _frames(exc)
    inner = _innermost_product_frame(frames)
    if isinstance(exc, ValueError) and INT_DIGITS in str(exc) and inner is not None:
        if inner in (("sip.py", "parse_message"), ("sip.py", "message_length"), ("tcpstream.py", "_frame")):
            return "sip-content-length-digits"
    if isinstance(exc, ValueError) and not isinstance(exc, AssertionError) and inner is not None \
            and inner[0] == "sdp.py" and type(exc).__name__ == "ValueError":
        return "sdp-int-digits"
    if isinstance(exc, ValueError) and INT_DIGITS in str(exc) and inner == ("sip.py", "cseq"):
        return "sip-cseq-digits"
    if isinstance(exc, InvariantViolation) and str(exc).startswith("audio hand-off of"):
        return "pipeline-gap-fill"
    if isinstance(exc, (Hang, SlowCall)) and target == "pipeline" and (
            _in(frames, "leg.py", "take_audio", "_place") or "MediaLeg" in str(exc)):
        return "pipeline-gap-fill"
    if isinstance(exc, ValueError) and inner == ("correlator.py", "pack_ip"):
        return "correlator-nul-address"
    if isinstance(exc, Hang) and _in(frames, "calls.py", "expire"):
        return "calls-expire-loop"
    if isinstance(exc, InvariantViolation) and "timer due at or before now" in str(exc) \
            and "CallRegistry" in str(exc):
        return "calls-expire-loop"
    if isinstance(exc, Hang) and _in(frames, "tcpstream.py", "_drain", "_skip_hole"):
        return "tcp-quadratic"
    if isinstance(exc, InvariantViolation) and "SipTcpReassembler" in str(exc) and "comparisons" in str(exc):
        return "tcp-quadratic"
    if isinstance(exc, SlowCall) and "SipTcpReassembler" in str(exc):
        return "tcp-quadratic"
    if isinstance(exc, InvariantViolation) and str(exc).startswith("fragment memory"):
        return "fragments-unbounded"
    if isinstance(exc, (SlowCall, Hang)) and target == "fragments":
        return "fragments-unbounded"
    if isinstance(exc, RecursionError) and _in(frames, "sinkserver.py"):
        return "sink-recursion"
    return None
