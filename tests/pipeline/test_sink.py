"""``rtp2ws.pipeline.sink``: the Sink interface, Forward, Counting, Tee, and the read-only
view of a leg (``LegView``) that sinks get, on real pipeline runs over callgen calls."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from rtp2ws.media.leg import MediaLeg
from rtp2ws.pipeline.pipeline import Pipeline
from rtp2ws.pipeline.sink import Counting, Forward, LegView, Sink, Tee
from rtp2ws.run.replay import replay

import callgen
import netgen
from callgen import Call, Party, frames_of, rtp_packets, tone

A = Party("10.0.0.1", 5060, 4000, "1000")
B = Party("10.0.0.2", 5060, 5000, "2000")
C = Party("10.0.0.3", 5060, 4100, "3000")
D = Party("10.0.0.4", 5060, 5100, "4000")
SILENT_A = Party("10.0.0.5", 5060, 4200, "5000")
SILENT_B = Party("10.0.0.6", 5060, 5200, "6000")


def two_calls():
    """``talk@x``: audio both ways, a key press (5) on the caller leg, a hold by the
    caller, ended by BYE.  ``one@x``: the caller's audio only, ended at capture end.
    Returns the frames and the caller's 8 kHz tone of ``talk@x``."""
    c = Call("talk@x", A, B)
    f = c.setup(100)
    pa = tone(440, 4000)
    s1 = rtp_packets(A, B, 100.1, pa[:1920], ssrc=7, seq0=10, ts0=0)
    dtmf = callgen.dtmf_packets(A, B, 100.1 + 0.24, 5, ssrc=7, seq0=22, ts=1920)
    s2 = rtp_packets(A, B, 100.1 + 0.44, pa[1920:3840], ssrc=7, seq0=30, ts0=1920 + 1600)
    sb = rtp_packets(B, A, 100.15, tone(1000, 4000, amp=6000), ssrc=8)
    c.cseq = 2
    hold = c.request(100.9, "INVITE", body=callgen.sdp(A.ip, A.rtp_port, direction="sendonly"))
    hold += c.response(100.91, 200, "OK", "INVITE", body=callgen.sdp(B.ip, B.rtp_port, direction="recvonly"))
    one = Call("one@x", C, D)
    so = rtp_packets(C, D, 100.3, tone(300, 3200), ssrc=9)
    return frames_of(f, s1, dtmf, s2, sb, hold, c.bye(101.2), one.setup(100.2), so), pa


class Recorder(Sink):
    """Everything a sink is told, in order, in comparable form; ``name`` marks whose
    entry it is when several share one ``log``."""

    def __init__(self, name: str = "", log: list | None = None) -> None:
        self.name = name
        self.log = log if log is not None else []

    def call_started(self, call):
        self.log.append((self.name, "start", call.key))

    def leg_audio(self, call, leg, pcm):
        self.log.append((self.name, "audio", call.key, leg.tag, pcm.tobytes()))

    def leg_event(self, call, leg, event):
        self.log.append((self.name, "leg_event", call.key, leg.tag, repr(event)))

    def call_event(self, call, event):
        self.log.append((self.name, "call_event", call.key, repr(event)))

    def call_ended(self, call, legs):
        self.log.append((self.name, "end", call.key, call.end_reason,
                         [(tag, leg.stats, dict(leg.counts), leg.samples_out) for tag, leg in legs.items()]))

    def tick(self, now):
        self.log.append((self.name, "tick", now))


def told(log: list) -> list:
    """The entries without their sink's name."""
    return [e[1:] for e in log]


@pytest.fixture
def capture(tmp_path):
    frames, _ = two_calls()
    return callgen.write(tmp_path / "calls.pcap", frames)


@pytest.fixture
def alone(capture):
    """What one sink is told replaying the capture by itself."""
    rec = Recorder()
    replay(capture, rec)
    kinds = {e[1] for e in rec.log}
    assert kinds == {"start", "audio", "leg_event", "call_event", "end", "tick"}
    return told(rec.log)


# -- Tee, Forward, Counting -------------------------------------------------------------

def test_tee_hands_everything_to_each_sink_in_the_order_given(capture, alone):
    log: list = []
    replay(capture, Tee(Recorder("first", log), Recorder("second", log), Recorder("third", log)))
    assert [e[0] for e in log] == ["first", "second", "third"] * len(alone)
    for i, name in enumerate(("first", "second", "third")):
        assert told(log[i::3]) == alone      # each sink as if it were alone


def test_tee_of_tees_and_of_no_sink(capture, alone):
    log: list = []
    replay(capture, Tee(Tee(Recorder("a", log)), Tee(), Tee(Recorder("b", log), Recorder("c", log))))
    assert [e[0] for e in log] == ["a", "b", "c"] * len(alone)
    assert told(log[2::3]) == alone


def test_forward_passes_on_what_a_subclass_does_not_override(capture, alone):
    class Ticks(Forward):
        def __init__(self, inner):
            super().__init__(inner)
            self.ticks = 0

        def tick(self, now):
            self.ticks += 1
            super().tick(now)

    rec = Recorder()
    fwd = Ticks(rec)
    replay(capture, fwd)
    assert fwd.inner is rec and told(rec.log) == alone
    assert fwd.ticks == sum(1 for e in alone if e[0] == "tick") > 0


def test_counting_counts_calls_and_legs_with_audio():
    """Legs that got audio, not legs: ``one@x``'s callee sent nothing, and the INVITE-only
    call has no audio at all.  A leg is in ``legs`` while its call is in progress, then
    only counted."""
    frames, _ = two_calls()
    silent = Call("silent@x", SILENT_A, SILENT_B)
    frames = sorted(frames + frames_of(silent.setup(100.05), silent.bye(100.5)), key=lambda f: f[0])
    rec = Recorder()
    counting = Counting(rec)
    pipe = Pipeline(1, counting)
    seen = []
    for t, ip in frames:
        pipe.feed(t, netgen.link(1, ip))
        pipe.tick(t)
        seen.append((counting.calls, sorted(counting.legs), counting.legs_with_audio))
    assert (3, [("one@x", "caller"), ("talk@x", "callee"), ("talk@x", "caller")], 3) in seen
    assert max(n for n, _, _ in seen) == 3
    pipe.finish()
    assert counting.calls == 3 and counting.legs == set()
    assert counting.legs_ended == 3 and counting.legs_with_audio == 3
    assert {e[2] for e in rec.log if e[1] == "end"} == {"talk@x", "one@x", "silent@x"}   # all passed on


def test_replay_reports_what_counting_counted(capture):
    result = replay(capture, Sink())
    assert (result.calls, result.legs) == (2, 3)


# -- the leg a sink sees ----------------------------------------------------------------

class Views(Sink):
    """Keeps every leg object the pipeline hands over, per (call, tag), in order."""

    def __init__(self) -> None:
        self.seen: dict = {}
        self.ended: dict = {}
        self.audio: dict = {}

    def leg_audio(self, call, leg, pcm):
        self.seen.setdefault((call.key, leg.tag), []).append(leg)
        self.audio.setdefault((call.key, leg.tag), []).append(pcm)

    def leg_event(self, call, leg, event):
        self.seen.setdefault((call.key, leg.tag), []).append(leg)

    def call_ended(self, call, legs):
        self.ended[call.key] = legs


def _same(view: LegView, leg: MediaLeg) -> None:
    assert view.tag == leg.tag
    assert view.start_time == leg.start_time and view.encrypted == leg.encrypted and view.closed == leg.closed
    assert view.counts == leg.counts and view.stats == leg.stats and view.jitter_stats == leg.jb.stats
    assert view.ssrcs == tuple(leg.ssrcs) and view.codecs == tuple(leg.codecs) and view.flows == tuple(leg.flows)
    assert view.dtmf_events == tuple(leg.dtmf_events)
    assert (view.last_arrival, view.last_packet_samples, view.samples_out) == \
        (leg.last_arrival, leg.last_packet_samples, leg.samples_out)
    assert (view.concealed, view.filled, view.decoded) == (leg.concealed, leg.filled, leg.decoded)


def test_a_sink_gets_one_view_per_leg_that_reads_the_legs_current_values():
    frames, _ = two_calls()
    sink = Views()
    pipe = Pipeline(1, sink)
    moved: dict = {}
    for t, ip in frames:
        pipe.feed(t, netgen.link(1, ip))
        pipe.tick(t)
        for key, views in sink.seen.items():
            leg = pipe.legs.get(key)
            if leg is not None:
                _same(views[-1], leg)           # after every packet: what the leg holds now
                moved.setdefault(key, set()).add(views[-1].counts["packets"])
    legs = dict(pipe.legs)
    pipe.finish()
    assert set(moved) == {("talk@x", "caller"), ("talk@x", "callee"), ("one@x", "caller")}
    for (call_key, tag), counts in moved.items():     # every count from the first hand-off to the end
        assert counts == set(range(min(counts), sink.ended[call_key][tag].counts["packets"] + 1))
        assert len(counts) > 10
    for key, views in sink.seen.items():
        view = views[0]
        assert type(view) is LegView and all(v is view for v in views)     # one object, every time
        assert sink.ended[key[0]][key[1]] is view                          # ... at the end too
        assert view.closed
    _same(sink.ended["one@x"]["caller"], legs[("one@x", "caller")])
    talk = sink.ended["talk@x"]["caller"]
    assert [d.digit for d in talk.dtmf_events] == ["5"] and talk.ssrcs == (7,) and talk.codecs == ("PCMA",)
    assert talk.flows == (("10.0.0.1:4000", "10.0.0.2:5000"),)
    assert list(sink.ended["one@x"]) == ["caller", "callee"] and sink.ended["one@x"]["callee"].start_time is None


def test_a_sink_cannot_change_the_leg():
    """No assignment, no deletion, no way to the jitter buffer or the leg's methods, no
    writing into its counts or lists; the audio is what it would have been."""
    frames, _ = two_calls()
    untouched = Views()
    pipe = Pipeline(1, untouched)
    for t, ip in frames:
        pipe.feed(t, netgen.link(1, ip))
        pipe.tick(t)
    pipe.finish()
    sink = Views()
    pipe = Pipeline(1, sink)
    tried = 0
    for t, ip in frames:
        pipe.feed(t, netgen.link(1, ip))
        pipe.tick(t)
        views = sink.seen.get(("talk@x", "caller"))
        if not views or tried:
            continue
        tried += 1
        view, leg = views[-1], pipe.legs[("talk@x", "caller")]
        for name, value in (("tag", "callee"), ("start_time", 0.0), ("counts", {}), ("encrypted", True),
                            ("samples_out", 0), ("jb", None), ("_leg", None), ("anything", 1)):
            with pytest.raises(AttributeError, match="read-only"):
                setattr(view, name, value)
        for name in ("tag", "counts", "start_time", "_leg"):
            with pytest.raises(AttributeError, match="read-only"):
                delattr(view, name)
        for name in ("jb", "dtmf", "pt_map", "push", "poll", "take_audio", "take_events", "close",
                     "take_flow", "count_other", "mark_encrypted", "__dict__"):
            with pytest.raises(AttributeError):
                getattr(view, name)
        with pytest.raises(TypeError):
            view.counts["packets"] = 0
        with pytest.raises(AttributeError):
            view.ssrcs.append(1)
        stats = view.stats
        stats["packets"] = -1                   # a copy: the leg's are its own
        jstats = view.jitter_stats
        jstats["lost"] = 99
        assert view.stats["packets"] == leg.counts["packets"] > 0 and view.jitter_stats["lost"] == 0
        assert view.tag == "caller" and view.start_time == 100.1
    assert tried == 1
    pipe.finish()
    assert sink.audio.keys() == untouched.audio.keys()
    for key, chunks in sink.audio.items():
        assert np.array_equal(np.concatenate(chunks), np.concatenate(untouched.audio[key]))


def test_counts_the_pipeline_saw_reach_the_sink_as_the_leg_keeps_them():
    """Packets on a leg's addresses that are not its audio: the pipeline classifies them,
    the leg counts them (``count_malformed``, ``count_other``), the sink reads them."""
    c = Call("odd@x", A, B)
    stun = struct.pack("!HHI", 1, 0, 0x2112A442) + b"\x00" * 12
    rtcp = bytes.fromhex("80c80006aaaa0001") + b"\x00" * 20
    zrtp = b"\x10\x00\x00\x01" + struct.pack("!I", 0x5A525450) + b"\x00" * 40
    truncated_csrc = bytes([0x8F, 8]) + b"\x00" * 10
    odd = [(100.12, netgen.udp(A.ip, A.rtp_port, B.ip, B.rtp_port, truncated_csrc)),
           (100.13, netgen.udp(A.ip, A.rtp_port, B.ip, B.rtp_port, stun)),
           (100.14, netgen.udp(A.ip, A.rtp_port + 1, B.ip, B.rtp_port + 1, rtcp)),
           (100.15, netgen.udp(A.ip, A.rtp_port, B.ip, B.rtp_port, rtcp)),
           (100.16, netgen.udp(B.ip, B.rtp_port, A.ip, A.rtp_port, zrtp))]
    sa = rtp_packets(A, B, 100.1, tone(440, 1600), ssrc=1)
    sink = Views()
    pipe = Pipeline(1, sink)
    for t, ip in frames_of(c.setup(100), sa, odd, c.bye(101)):
        pipe.feed(t, netgen.link(1, ip))
        pipe.tick(t)
    pipe.finish()
    caller, callee = sink.ended["odd@x"]["caller"], sink.ended["odd@x"]["callee"]
    assert {k: v for k, v in caller.counts.items() if v and k not in ("packets", "bytes")} == \
        {"malformed": 1, "stun": 1, "rtcp": 2}
    assert caller.counts["packets"] == 10 and not caller.encrypted
    assert {k: v for k, v in callee.counts.items() if v} == {"zrtp": 1} and callee.encrypted
    assert callee.flows == (("10.0.0.2:5000", "10.0.0.1:4000"),)    # listed from its first packet, ZRTP
    assert pipe.stats["malformed_rtp"] == 1 and pipe.stats["rtcp"] == 2 and pipe.stats["zrtp"] == 1
