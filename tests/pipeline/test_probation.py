"""Calls in progress on a busy PBX: every unsignalled flow is picked up (issue 10, item 8).

RTP that no SDP claims waits in probation until its second packet in sequence
makes it a media-only call.  The table was a FIFO capped at 4,096 flows: with
4,100 calls in progress each new flow pushed out the oldest before its second
packet came, and not one call was picked up (4,000 gave 4,000).  Now a flow only
makes room when the oldest has been quiet for PROBATION_STALE; otherwise its
packet waits outside (counted) and the flow tries again with the next one.

The tests from ``test_probation_promotes_...`` on drive that table, the sans-I/O
``rtp2ws.pipeline.probation.Probation``, on its own: no Pipeline, no sink.
"""

from __future__ import annotations

import numpy as np
import pytest

from rtp2ws.media.rtp import RtpPacket, parse_rtp, serialize_rtp
from rtp2ws.pipeline.pipeline import PROBATION_STALE, Config, Pipeline
from rtp2ws.pipeline.probation import (
    AFTER_END,
    ENDED_MEDIA_GRACE,
    FULL,
    NOT_AUDIO,
    PROBATION_FLOWS,
    WAITING,
    Probation,
    Promoted,
)
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


# -- the Probation class on its own (rtp2ws/pipeline/probation.py): no Pipeline, no sink ----


A = (bytes([10, 0, 0, 1]), 4000)
B = (bytes([10, 0, 0, 2]), 5000)
C = (bytes([10, 0, 0, 3]), 6000)
AB = A + B
BA = B + A


def rtp(seq: int, ssrc: int = 0x1234, pt: int = 8, size: int = 160) -> bytes:
    return serialize_rtp(RtpPacket(seq & 0xFFFF, 160 * seq & 0xFFFFFFFF, ssrc, pt, False, b"\xd5" * size))


def test_probation_promotes_a_flow_at_its_second_packet_in_sequence():
    p = Probation()
    assert p.offer(AB, rtp(7), 10.0) is WAITING
    assert list(p.flows) == [AB] and p.flows[AB] == (parse_rtp(rtp(7)), 10.0)
    got = p.offer(AB, rtp(8), 10.02)
    assert got == Promoted("rtp:10.0.0.1:4000-10.0.0.2:5000", A, B, (parse_rtp(rtp(7)), 10.0), None)
    assert p.flows == {} and p.calls == {got.call_id: {A, B}}


def test_probation_takes_the_other_directions_waiting_packet_along():
    p = Probation()
    assert p.offer(BA, rtp(500, ssrc=9), 10.0) is WAITING
    assert p.offer(AB, rtp(1), 10.01) is WAITING
    got = p.offer(AB, rtp(2), 10.03)
    assert got.back == (parse_rtp(rtp(500, ssrc=9)), 10.0)
    assert got.first == (parse_rtp(rtp(1)), 10.01) and p.flows == {}


def test_probation_sequence_wraps_at_16_bits():
    p = Probation()
    p.offer(AB, rtp(0xFFFF), 1.0)
    assert isinstance(p.offer(AB, rtp(0), 1.02), Promoted)
    p = Probation()
    p.offer(AB, rtp(0xFFFE), 1.0)
    assert p.offer(AB, rtp(0), 1.02) is WAITING       # one missing: not in sequence


@pytest.mark.parametrize("second, at", [
    (rtp(9), 10.02),                        # a packet missing
    (rtp(7), 10.02),                        # the same sequence again
    (rtp(8, ssrc=0x99), 10.02),             # another source
    (rtp(8), 10.0 + PROBATION_STALE),       # too late (exactly PROBATION_STALE is too late)
    (rtp(8), 9.99),                         # capture time went back
])
def test_probation_a_packet_out_of_sequence_starts_probation_again(second, at):
    p = Probation()
    p.offer(AB, rtp(7), 10.0)
    assert p.offer(AB, second, at) is WAITING
    assert list(p.flows) == [AB] and p.flows[AB] == (parse_rtp(second), at) and p.calls == {}


@pytest.mark.parametrize("payload", [
    b"\x81\xc8\x00\x06" + bytes(24),        # RTCP
    b"\x00\x01\x00\x00\x21\x12\xa4\x42" + bytes(12),     # STUN
    rtp(1, pt=18),                          # G.729: not a codec a media-only call decodes
    rtp(1, size=39), rtp(1, size=481),      # packet times no call uses
])
def test_probation_keeps_nothing_but_g711_of_a_call_sized_packet(payload):
    p = Probation()
    assert p.offer(AB, payload, 1.0) is NOT_AUDIO and p.flows == {}
    assert p.offer(AB, rtp(1, size=40), 1.0) is WAITING           # the bounds themselves are in
    assert p.offer(BA, rtp(1, pt=0, size=480), 1.0) is WAITING
    assert list(p.flows) == [AB, BA]


def test_probation_table_is_bounded_and_only_a_quiet_flow_makes_room():
    p = Probation(max_flows=2)
    f1, f2, f3 = A + B, A + C, B + C
    assert p.offer(f1, rtp(1), 0.0) is WAITING
    assert p.offer(f2, rtp(1), 0.5) is WAITING
    assert p.offer(f3, rtp(1), 1.0) is FULL and list(p.flows) == [f1, f2]     # both fresh: the packet waits outside
    assert p.offer(f1, rtp(5), 1.5) is WAITING and list(p.flows) == [f2, f1]  # in order of each flow's latest packet
    assert p.offer(f3, rtp(2), 0.5 + PROBATION_STALE - 0.001) is FULL
    assert p.offer(f3, rtp(2), 0.5 + PROBATION_STALE) is WAITING              # f2 quiet long enough: it goes
    assert list(p.flows) == [f1, f3]
    assert isinstance(p.offer(f1, rtp(6), 2.6), Promoted)                     # a flow inside goes on while full


def test_probation_memory_is_one_entry_per_flow_and_at_most_max_flows():
    p = Probation(max_flows=64)
    most = 0
    for r in range(5):
        for i in range(200):
            flow = (bytes([10, 1, i // 250, i % 250 + 1]), 4000, B[0], 5000 + i)
            p.offer(flow, rtp(3 * r), 100.0 * r + i * 1e-3)      # never in sequence
            most = max(most, len(p.flows))
    assert most == 64 and len(p.flows) == 64 and p.calls == {}


def test_probation_identify_names_the_media_only_calls_signalling_names():
    p = Probation()
    p.offer(AB, rtp(1), 1.0)
    call_id = p.offer(AB, rtp(2), 1.02).call_id
    assert p.identify({C}) == [] and p.identify({B, C}) == [call_id] and p.identify({A}) == [call_id]
    p.call_ended(call_id, [], 5.0)
    assert p.identify({A, B}) == [] and p.calls == {}


def test_probation_rtp_just_after_a_call_ended_is_a_straggler():
    p = Probation()
    p.call_ended("sig@x", [B], 100.0)
    assert p.offer(AB, rtp(1), 100.0 + ENDED_MEDIA_GRACE - 0.01) is AFTER_END     # to the ended address
    assert p.offer(BA, rtp(1), 101.0) is AFTER_END                                # from it
    assert p.flows == {}
    assert p.offer(AB, rtp(1), 100.0 + ENDED_MEDIA_GRACE) is WAITING
    assert p.offer(A + C, rtp(1), 101.0) is WAITING                               # other addresses


def test_probation_forgets_ended_addresses_after_the_grace():
    p = Probation()
    p.call_ended("one", [A], 10.0)
    p.call_ended("two", [B], 10.0 + ENDED_MEDIA_GRACE)
    assert list(p.ended) == [A, B]                     # exactly the grace apart: kept
    p.call_ended("three", [C, A], 10.0 + ENDED_MEDIA_GRACE + 0.5)
    # in order of end time (A moved to the back), as the expiry reads them from the front
    assert list(p.ended.items()) == [(B, 10.0 + ENDED_MEDIA_GRACE), (C, 10.5 + ENDED_MEDIA_GRACE),
                                     (A, 10.5 + ENDED_MEDIA_GRACE)]
    p.call_ended("four", [], 100.0)
    assert p.ended == {}


def test_probation_rejects_an_empty_table():
    with pytest.raises(ValueError):
        Probation(0)
    assert Probation().max_flows == PROBATION_FLOWS


def test_registry_identify_ends_the_media_only_call_naming_the_real_one():
    """The pipeline asks the registry (``CallRegistry.identify``) instead of writing into its Call."""
    from rtp2ws.signalling.calls import CallEnded, CallRegistry

    reg = CallRegistry()
    (started,) = reg.adopt("rtp:10.0.0.1:4000-10.0.0.2:5000", 1.0)
    events = reg.identify(started.call, "real@x", 2.0)
    assert [type(e) for e in events] == [CallEnded] and events[0].call is started.call
    assert started.call.identified_as == "real@x" and started.call.end_reason == "identified"
    assert started.call.ended and started.call.end == 2.0
