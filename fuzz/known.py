"""Bugs the targets are known to hit and that are not fixed yet, recognised by where and
how they fail.

``classify(target, exc)`` names the bug an exception stands for, or None for a new one.
A long run (``fuzz.run --keep-going``) saves inputs that hit a known bug under
``out/fuzz/known/<target>/`` and goes on; everything else stops libFuzzer as a crash.
With ``--guard-known`` a target may also stop an input *before* it reaches a known hang
or blow-up (raise :class:`KnownBug` from a guard), so that a long run does not spend its
time there.  When a bug is fixed its entry and guard go, and its reproducer in
``fuzz/crashes/`` keeps it fixed (``tests/system/test_fuzz.py``).

``FIXED`` lists the bugs these targets found that are fixed, with the reproducers that
replay each; ``BUGS`` those still open."""

from __future__ import annotations

import os

GUARD = os.environ.get("RTP2WS_FUZZ_GUARD", "") not in ("", "0")


class KnownBug(Exception):
    """Raised by a guard: the input would hit the known bug ``bug``."""

    def __init__(self, bug: str, what: str) -> None:
        super().__init__(f"{bug}: {what}")
        self.bug = bug


# name -> (what it was, its reproducers); all fixed on main (issue 10)
FIXED = {
    "sip-content-length-digits": ("Content-Length of 4301+ digits: int() raised a plain ValueError "
                                  "(sip.parse_message / message_length / tcpstream framing)",
                                  ["sip/content-length-4301-digits", "tcp/content-length-4301-digits"]),
    "sip-cseq-digits": ("SipMessage.cseq raised a plain ValueError for a CSeq number of 4301+ digits, "
                        "which CallRegistry.on_message let escape", ["sip/cseq-4301-digits", "calls/cseq-4301-digits"]),
    "sdp-int-digits": ("parse_sdp raised a plain ValueError for a number of 4301+ digits (m= port, rtpmap, fmtp, "
                       "rtcp, ptime) or a format str.isdigit() accepts and int() does not ('\\u00b2')",
                       ["sdp/port-4301-digits", "sdp/format-superscript-two", "calls/sdp-number-4301-digits"]),
    "calls-expire-loop": ("CallRegistry.expire re-armed a timer due at now for now again, for ever (now - "
                          "last_activity == rtp_timeout, or timestamps so large that adding the timeout changes "
                          "nothing); and left a timer due at now (a call ended at 0.0, or at 1e300)",
                          ["calls/expire-loop", "calls/expire-deadline-at-now-1e300", "pipeline/expire-loop"]),
    "tcp-quadratic": ("SipTcpReassembler drained out-of-order segments with a min() over all held ones each "
                      "time: O(n^2) sequence comparisons", ["tcp/one-byte-segments-out-of-order"]),
    "fragments-unbounded": ("PacketDecoder held up to 4096 fragment buffers of 64 KiB (plus ~130 bytes per "
                            "piece) with no byte bound", ["fragments/flood-57MB"]),
    "sink-recursion": ("sinkserver.session.parse_message (then sinkserver.parse_message) let json's RecursionError escape on deeply nested JSON",
                       ["sink/nested-json"]),
    "pipeline-gap-fill": ("a gap in a leg's media was filled with silence in one array (a call kept up by SIP "
                          "alone for 3 h, then RTP: 345 MB in one hand-off)", ["pipeline/gap-fill-20min"]),
    "pipeline-stale-probation": ("RTP in probation never expired: two packets in sequence 20 minutes apart made a "
                                 "media-only call starting at the first", ["pipeline/media-only-stale-probation"]),
    "pipeline-fast-path-end-time": ("with the fast path (C and Python twin alike) a call that timed out ended at "
                                    "another last activity than packet-at-a-time (22347.34 against 22347.31): a "
                                    "SIP message stamped before the media moved the activity back, and the fast "
                                    "path had not yet handed the registry the media before it",
                                    ["pipeline/fast-path-end-time-differs"]),
    "pipeline-silence-in-one-call": ("a long gap in a leg's media was handed out a minute at a time but all of it "
                                     "in one feed or tick, each minute through the filter: 3.2 s of CPU for 85 "
                                     "hours of gaps in one batch (no input kept: tests/system/test_hostile_packets.py::"
                                     "test_a_gap_of_hours_goes_out_over_several_ticks_not_in_one_call)", []),
    "correlator-nul-address": ("correlator.pack_ip let inet_pton's ValueError ('embedded null character') escape "
                               "for an SDP c= address with a NUL byte", ["pipeline/sdp-address-with-nul"]),
    "audiohook-duration-infinity": ("an AudioHook server's 'opened' with a discardTo of 400 digits: the seconds "
                                    "are infinity as a float, and round() raised OverflowError out of "
                                    "Session.receive (parse_duration said ValueError only)",
                                    ["audiohook/opened-discardTo-400-digits"]),
    "quality-max-delta-out-of-schema": ("LegQuality.report gave a negative max_delta_ms when every delta counted "
                                        "was of capture times stepping back (-20 ms: the sink refuses the end "
                                        "message, 1008), and infinities (not JSON) for intervals, round trips "
                                        "and delays of capture times 1e306 s or more apart",
                                        ["rtcp/max-delta-negative-capture-time-back",
                                         "rtcp/max-delta-minus-1e303", "rtcp/max-delta-infinite-times-1e308-apart"]),
    "srtp-previous-keys-past-the-grace": ("SrtpStream kept the previous generation of keys for ever when the current "
                                          "key that authenticated packets was the one their SSRC had last used (a key "
                                          "kept across set_keys, or back again): only another current key started "
                                          "PREVIOUS_GRACE, so packets under the replaced keys went on decoding",
                                          ["srtp/previous-keys-kept-past-the-grace"]),
}


# name -> what it is (not fixed yet)
BUGS: dict[str, str] = {}


def classify(target: str, exc: BaseException) -> str | None:
    """The known, unfixed bug ``exc`` stands for, or None.  With no bug open, only a
    guard's ``KnownBug``; an open bug adds a test here on the exception's class and the
    frames it went through (``exc.__traceback__``)."""
    if isinstance(exc, KnownBug):
        return exc.bug
    return None
