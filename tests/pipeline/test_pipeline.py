"""Pipeline routing, small and direct: frames built by callgen/netgen in, a sink that
records what it hears out.  (tests/sinks/test_streams.py, pipeline/test_flows.py and run/test_replay.py
run whole calls end to end; these look at one routing decision each.)"""

import json
import os
import struct
import subprocess
import sys

import numpy as np

from rtp2ws.codec.resample import Upsampler2x
from rtp2ws.media.rtp import RtpPacket, serialize_rtp
from rtp2ws.net.packet import DLT_EN10MB
from rtp2ws.pipeline.pipeline import Config, Pipeline, Sink
from rtp2ws.signalling.correlator import pack_ip

import callgen
import netgen
from callgen import Call, Party, dtmf_packets, expected_16k, frames_of, rtp_packets, tone

A = Party("10.0.0.1", 5060, 4000, "1000")
B = Party("10.0.0.2", 5060, 5000, "2000")


class Recorder(Sink):
    """Every call the pipeline makes, in order."""

    def __init__(self):
        self.log = []
        self.ticks = []

    def call_started(self, call):
        self.log.append(("started", call.key))

    def leg_audio(self, call, leg, pcm):
        self.log.append(("audio", call.key, leg.tag, np.array(pcm)))

    def leg_event(self, call, leg, event):
        self.log.append(("leg_event", call.key, leg.tag, event))

    def call_event(self, call, event):
        self.log.append(("call_event", call.key, event))

    def call_ended(self, call, legs):
        self.log.append(("ended", call.key, call.end_reason, list(legs)))

    def tick(self, now):
        self.ticks.append(now)

    def kinds(self):
        return [e[0] for e in self.log]

    def audio(self, tag):
        parts = [e[3] for e in self.log if e[0] == "audio" and e[2] == tag]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)


def eth(ip):
    return netgen.link(DLT_EN10MB, ip)


def feed(pipe, frames):
    for t, ip in frames:
        pipe.feed(t, eth(ip))


def addr(party, port):
    return (pack_ip(party.ip), port)


def two_way(call_id="p@test", n=1600):
    """A call with tone both ways; returns (call, caller pcm, callee pcm, frames without BYE)."""
    c = Call(call_id, A, B)
    pa, pb = tone(440, n), tone(1000, n, amp=6000)
    frames = frames_of(c.setup(100), rtp_packets(A, B, 100.1, pa, ssrc=1), rtp_packets(B, A, 100.105, pb, ssrc=2))
    return c, pa, pb, frames


# -- signalling ----------------------------------------------------------------------------

def test_sip_over_udp_creates_the_call_and_sdp_binds_both_legs():
    c = Call("sip@test", A, B)
    invite, trying, ringing, ok, ack = c.setup(100)
    sink = Recorder()
    pipe = Pipeline(DLT_EN10MB, sink)
    feed(pipe, [invite])
    assert sink.log == [("started", "sip@test")]
    assert set(pipe.legs) == {("sip@test", "caller"), ("sip@test", "callee")}
    # The offer says where the caller receives: the callee's leg goes there, from nowhere known yet.
    assert pipe.correlator.expected(("sip@test", "callee")) == (addr(A, A.rtp_port), None)
    assert pipe.correlator.expected(("sip@test", "caller")) == (None, addr(A, A.rtp_port))
    feed(pipe, [trying, ringing, ok, ack])
    # The answer completes both: each leg from its sender's SDP port to the receiver's.
    assert pipe.correlator.expected(("sip@test", "caller")) == (addr(B, B.rtp_port), addr(A, A.rtp_port))
    assert pipe.correlator.expected(("sip@test", "callee")) == (addr(A, A.rtp_port), addr(B, B.rtp_port))
    assert pipe.stats["sip"] == 5 and pipe.stats["malformed"] == 0
    assert sink.kinds() == ["started"]
    # PT 101 in both SDPs: the legs know telephone-event as well as the static types.
    assert pipe.legs[("sip@test", "caller")].pt_map[101] == ("TELEPHONE-EVENT", 8000)


def test_rtp_to_the_sdp_addresses_reaches_the_right_leg():
    _, pa, pb, frames = two_way()
    sink = Recorder()
    pipe = Pipeline(DLT_EN10MB, sink)
    feed(pipe, frames)
    caller, callee = pipe.legs[("p@test", "caller")], pipe.legs[("p@test", "callee")]
    assert caller.ssrcs == [1] and callee.ssrcs == [2]
    assert caller.flows == [(f"{A.ip}:{A.rtp_port}", f"{B.ip}:{B.rtp_port}")]
    assert callee.flows == [(f"{B.ip}:{B.rtp_port}", f"{A.ip}:{A.rtp_port}")]
    assert caller.counts["packets"] == callee.counts["packets"] == len(pa) // 160
    assert pipe.stats["rtp"] == 2 * len(pa) // 160 and pipe.stats["unmatched_udp"] == 0
    pipe.finish()
    assert np.array_equal(sink.audio("caller"), expected_16k(pa))
    assert np.array_equal(sink.audio("callee"), expected_16k(pb))


def test_rtcp_and_stun_on_media_ports_are_counted_not_decoded():
    c = Call("rtcp@test", A, B)
    sr = bytes.fromhex("80c80006") + struct.pack("!I", 1) + bytes(20)          # sender report, 28 bytes
    stun = struct.pack("!HHI", 0x0001, 0, 0x2112A442) + bytes(range(12))        # binding request
    frames = c.setup(100) + [
        (100.2, netgen.udp(A.ip, A.rtp_port + 1, B.ip, B.rtp_port + 1, sr)),   # RTCP at the RTP port + 1
        (100.3, netgen.udp(A.ip, A.rtp_port, B.ip, B.rtp_port, sr)),           # ... muxed on the RTP port
        (100.4, netgen.udp(B.ip, B.rtp_port, A.ip, A.rtp_port, stun)),
    ]
    sink = Recorder()
    pipe = Pipeline(DLT_EN10MB, sink)
    feed(pipe, frames)
    caller, callee = pipe.legs[("rtcp@test", "caller")], pipe.legs[("rtcp@test", "callee")]
    assert pipe.stats["rtcp"] == 2 and pipe.stats["stun"] == 1
    assert caller.counts["rtcp"] == 2 and callee.counts["stun"] == 1
    assert pipe.stats["rtp"] == 0 and pipe.stats["malformed"] == 0 and pipe.stats["unmatched_udp"] == 0
    assert caller.counts["packets"] == callee.counts["packets"] == 0 and caller.ssrcs == []
    pipe.finish()
    assert "audio" not in sink.kinds()


def test_udp_no_call_claims_is_counted_unmatched():
    c = Call("none@test", A, B)
    stray_rtp = serialize_rtp(RtpPacket(7, 160, 9, 8, False, b"\xd5" * 160))
    frames = c.setup(100) + [
        (100.2, netgen.udp("10.9.9.9", 1234, "10.9.9.8", 5678, b"hello, not SIP and not media")),
        (100.3, netgen.udp("10.9.9.9", 1234, "10.9.9.8", 5678, stray_rtp)),
    ]
    sink = Recorder()
    pipe = Pipeline(DLT_EN10MB, sink, Config(media_only=False))
    feed(pipe, frames)
    assert pipe.stats["unmatched_udp"] == 2 and pipe.stats["rtp"] == 0
    assert list(pipe.calls) == ["none@test"]


# -- the end of a call ------------------------------------------------------------------------

def test_bye_ends_the_call_and_the_sink_hears_start_audio_end_in_order():
    c, pa, pb, frames = two_way("bye@test")
    frames = frames_of(frames, c.bye(100.5))
    sink = Recorder()
    pipe = Pipeline(DLT_EN10MB, sink)
    for t, ip in frames:
        pipe.feed(t, eth(ip))
        pipe.tick(t)
    kinds = sink.kinds()
    assert kinds[0] == "started" and kinds[-1] == "ended" and set(kinds[1:-1]) == {"audio"}
    assert sink.log[-1] == ("ended", "bye@test", "bye", ["caller", "callee"])
    assert pipe.calls == {} and pipe.legs == {}
    # Everything went out by the end: the tail of the filter too.
    assert np.array_equal(sink.audio("caller"), expected_16k(pa))
    assert np.array_equal(sink.audio("callee"), expected_16k(pb))
    pipe.finish()
    assert sink.kinds().count("ended") == 1


def test_finish_ends_open_calls_with_capture_end():
    _, pa, _, frames = two_way("open@test")
    sink = Recorder()
    pipe = Pipeline(DLT_EN10MB, sink)
    feed(pipe, frames)
    assert "ended" not in sink.kinds()
    pipe.finish()
    assert sink.log[-1] == ("ended", "open@test", "capture_end", ["caller", "callee"])
    assert np.array_equal(sink.audio("caller"), expected_16k(pa))
    assert pipe.calls == {}


def test_feed_and_feed_batch_agree():
    """``feed_batch`` is ``feed`` for each frame, then a tick at the latest capture time:
    the sink hears the same after every batch, not only at the end."""
    c, pa, _, frames = two_way("batch@test")
    frames = frames_of(frames, c.bye(100.5))
    one, many = Recorder(), Recorder()
    p1, p2 = Pipeline(DLT_EN10MB, one), Pipeline(DLT_EN10MB, many)
    linked = [(t, eth(ip)) for t, ip in frames]
    for i in range(0, len(linked), 7):
        batch = linked[i:i + 7]
        for t, frame in batch:
            p1.feed(t, frame)
        p1.tick(p1.now)
        p2.feed_batch(batch)
        assert p2.now == p1.now == batch[-1][0]
        assert p1.stats == p2.stats
        assert [e[:3] for e in one.log] == [e[:3] for e in many.log]
        for tag in ("caller", "callee"):
            assert np.array_equal(one.audio(tag), many.audio(tag))
    assert one.ticks == many.ticks
    assert many.log[-1] == ("ended", "batch@test", "bye", ["caller", "callee"])
    assert np.array_equal(many.audio("caller"), expected_16k(pa))


# -- timers ------------------------------------------------------------------------------------------

def test_tick_without_packets_delivers_held_audio_after_the_jitter_depth():
    """Packets behind a lost one wait in the jitter buffer; with nothing more captured,
    the tick that reaches the depth releases them (the hole concealed)."""
    c = Call("tick@test", A, B)
    stream = rtp_packets(A, B, 100.1, tone(440, 5 * 160), ssrc=1)      # seq 1000 .. 1004
    kept = [p for p in stream if p[1] != 1002]
    depth = 0.060
    sink = Recorder()
    pipe = Pipeline(DLT_EN10MB, sink, Config(jitter_depth=depth))
    for t, ip in frames_of(c.setup(100), kept):
        pipe.feed(t, eth(ip))
        pipe.tick(t)
    got = len(sink.audio("caller"))
    assert got == 2 * 2 * 160 - Upsampler2x.delay         # the two before the hole, less the filter delay
    first_held = kept[2][0]                                # seq 1003
    pipe.tick(first_held + depth - 0.001)
    assert len(sink.audio("caller")) == got
    pipe.tick(first_held + depth)
    # The concealed packet and the two held ones, each 160 samples at 8 kHz.
    assert len(sink.audio("caller")) - got == 2 * 3 * 160
    leg = pipe.legs[("tick@test", "caller")]
    assert leg.stats["lost"] == 1 and leg.concealed == 160
    assert sink.ticks[-1] == first_held + depth


_ORDER_SCRIPT = """
import json, sys
from rtp2ws.pipeline.pipeline import Config, Sink
from rtp2ws.run.replay import replay

class Order(Sink):
    def __init__(self):
        self.seen = []
    def leg_audio(self, call, leg, pcm):
        self.seen.append([call.call_id, leg.tag, "audio"])
    def leg_event(self, call, leg, event):
        self.seen.append([call.call_id, leg.tag, type(event).__name__])

sink = Order()
replay(sys.argv[1], sink, Config(deliver_ms=100))
print(json.dumps(sink.seen))
"""


def test_legs_are_handed_out_in_the_same_order_in_every_process(tmp_path):
    """Within a hand-out, the legs (and so their events, which a stereo or mixed stream
    takes in this order) go to the sink in the order of their keys: the same order in
    every process, whatever the string hashes (PYTHONHASHSEED), and with the fast path
    as without."""
    frames = []
    for i in range(6):
        a, b = Party(f"10.1.{i}.1", 5060, 4000, "1000"), Party(f"10.1.{i}.2", 5060, 5000, "2000")
        c = Call(f"order-{i}@test", a, b)
        n = 32000           # 4 s, the digits at 2 s: mid-call, handed out with the legs' audio
        frames += [c.setup(100.0), rtp_packets(a, b, 100.1, tone(440, n), ssrc=1),
                   rtp_packets(b, a, 100.1, tone(900, n), ssrc=2),
                   dtmf_packets(a, b, 102.0, 5, ssrc=1, seq0=2000, ts=60000),
                   dtmf_packets(b, a, 102.0, 7, ssrc=2, seq0=2000, ts=60000), c.bye(104.5)]
    path = callgen.write(tmp_path / "order.pcap", frames_of(*frames))
    runs = []
    for seed in ("1", "2", "3"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        r = subprocess.run([sys.executable, "-c", _ORDER_SCRIPT, path], capture_output=True, text=True, env=env,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        runs.append(json.loads(r.stdout))
    assert sum(e[2] == "DtmfEvent" for e in runs[0]) == 12
    assert sum(e[2] == "audio" for e in runs[0]) > 12     # more than one hand-out a leg
    assert runs[0] == runs[1] == runs[2]
