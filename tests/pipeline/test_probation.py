"""Calls in progress on a busy PBX: every unsignalled flow is picked up (issue 10, item 8).

RTP that no SDP claims waits in probation until its second packet in sequence
makes it a media-only call.  The table was a FIFO capped at 4,096 flows: with
4,100 calls in progress each new flow pushed out the oldest before its second
packet came, and not one call was picked up (4,000 gave 4,000).  Now a flow only
makes room when the oldest has been quiet for PROBATION_STALE; otherwise its
packet waits outside (counted) and the flow tries again with the next one.
"""

from __future__ import annotations

import numpy as np
import pytest

from rtp2ws.pipeline.pipeline import PROBATION_STALE, Config, Pipeline
from rtp2ws.pipeline.sink import Sink

from callgen import Party, rtp_packets, tone


class Calls(Sink):
    def __init__(self):
        self.started = []
        self.samples: dict = {}

    def call_started(self, call):
        self.started.append(call.call_id)

    def leg_audio(self, call, leg, pcm):
        self.samples[(call.call_id, leg.tag)] = self.samples.get((call.call_id, leg.tag), 0) + len(pcm)


def flows(n: int, rounds: int, t0: float = 10.0, net: int = 1):
    """``n`` calls in progress, one direction each, packets interleaved round by round
    (every flow's 1st packet, then every flow's 2nd ...), as a mirror port sees them."""
    per_flow = []
    pcm = tone(440, 160 * rounds)
    for i in range(n):
        a = Party(f"10.{net}.{i // 250}.{i % 250 + 1}", 5060, 20000 + 2 * (i % 1000), "a")
        b = Party(f"10.{net + 100}.{i // 250}.{i % 250 + 1}", 5060, 30000 + 2 * (i % 1000), "b")
        per_flow.append(rtp_packets(a, b, t0, pcm, ssrc=0x1000 + i, seq0=(7 * i) & 0xFFFF))
    out = []
    for r in range(rounds):
        for i, pkts in enumerate(per_flow):
            t, _, ip = pkts[r]
            out.append((t + i * 1e-6, ip))
    return out


def run(frames, config=None, watch=None):
    sink = Calls()
    pipe = Pipeline(101, sink, config)
    for ts, frame in frames:
        pipe.feed(ts, frame)
        if watch is not None:
            watch(pipe)
    pipe.finish()
    return pipe, sink


@pytest.mark.parametrize("n", [4000, 4100])
def test_thousands_of_calls_in_progress_are_all_picked_up(n):
    pipe, sink = run(flows(n, 3))
    assert len(sink.started) == n
    assert all(sink.samples.get((cid, "caller"), 0) == 3 * 320 for cid in sink.started)


def test_more_flows_than_slots_still_all_become_calls_in_bounded_memory():
    """With room for 64 flows, 150 flows come in turn: each waits for a slot, none is
    lost, and the table never holds more than its 64."""
    sizes = []
    cap = 64
    pipe, sink = run(flows(150, 6), Config(probation_flows=cap), watch=lambda p: sizes.append(len(p._probation)))
    assert max(sizes) == cap
    assert len(sink.started) == 150
    assert pipe.stats["probation_full"] > 0                 # the wait is counted
    assert pipe._probation == {}


def test_a_quiet_flow_makes_room_for_a_new_one():
    """Single packets that never continue (scans, junk) hold their slot only
    PROBATION_STALE seconds."""
    cap = 16
    junk = flows(cap, 1, t0=0.0)
    real = flows(1, 3, t0=PROBATION_STALE + 0.5, net=5)
    pipe, sink = run(junk + real, Config(probation_flows=cap))
    assert len(sink.started) == 1 and pipe.stats["probation_full"] == 0
    assert sink.samples[(sink.started[0], "caller")] == 3 * 320


def test_a_full_table_of_fresh_flows_is_not_disturbed():
    cap = 16
    first = flows(cap, 1, t0=0.0)
    late = flows(4, 1, t0=0.5, net=9)
    sizes = []
    pipe, sink = run(first + late, Config(probation_flows=cap), watch=lambda p: sizes.append(len(p._probation)))
    assert pipe.stats["probation_full"] == 4 and max(sizes) == cap
    assert np.all(np.diff([t for t, _ in first + late]) >= 0)


def test_counting_forgets_the_legs_of_calls_that_ended():
    """``legs with audio`` is a running count: a live run does not keep a set entry for
    every leg it ever saw."""
    from rtp2ws.pipeline.sink import Counting

    counting = Counting(Sink())
    pipe = Pipeline(101, counting)
    for ts, frame in flows(300, 3):
        pipe.feed(ts, frame)
    pipe.tick(pipe.now)
    assert len(counting.legs) == 300 and counting.legs_with_audio == 300
    pipe.finish()
    assert counting.legs == set() and counting.legs_with_audio == 300


def test_two_packets_in_sequence_hours_apart_are_not_a_call():
    """The first packet waited in probation with no expiry: its successor hours later
    made a media-only call starting at the first, hours of silence on its leg (found by
    fuzz/targets/pipeline.py)."""
    one = flows(1, 2)
    late = [one[0], (one[1][0] + 3 * 3600, one[1][1])]
    pipe, sink = run(late)
    assert sink.started == [] and len(pipe._probation) == 1
    pipe, sink = run(late + [(late[1][0] + 0.02, flows(1, 3)[2][1])])      # then a third, in time
    assert len(sink.started) == 1


def test_an_sdp_address_with_a_nul_byte_is_no_address():
    """socket.inet_pton raises ValueError, not OSError, for an embedded NUL: it escaped
    the correlator (found by fuzz/targets/pipeline.py)."""
    from rtp2ws.signalling.correlator import pack_ip

    assert pack_ip("10.0.0.1\x00") is None and pack_ip("::1\x00x") is None
    assert pack_ip("10.0.0.1") == bytes([10, 0, 0, 1])
