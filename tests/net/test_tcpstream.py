import json
import random
import tracemalloc

import numpy as np
import pytest

from rtp2ws import cli
from rtp2ws.capture.file import CaptureFile
from rtp2ws.net.packet import DLT_EN10MB, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, Packet, PacketDecoder
from rtp2ws.net.tcpstream import FlowKey, SipTcpReassembler
from rtp2ws.pipeline.pipeline import Pipeline
from rtp2ws.sinks.wav import read_wav

import callgen
import netgen
from callgen import Call, Party, expected_16k, frames_of, rtp_packets, tone
from fastcheck import Recorder, check_equivalent
from netgen import link, tcp

A = b"\xc0\x00\x02\x01"
B = b"\xc0\x00\x02\x02"

SDP = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\n"[:38]
INVITE = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK776asdhds\r\n"
    b"Call-ID: a84b4c76e66710@pc33.example.com\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 38\r\n"
    b"\r\n"
) + SDP
TRYING = b"SIP/2.0 100 Trying\r\nCall-ID: a84b4c76e66710@pc33.example.com\r\nContent-Length: 0\r\n\r\n"
OK_COMPACT = b"SIP/2.0 200 OK\r\ni: a84b4c76e66710@pc33.example.com\r\nc: application/sdp\r\nl: 12\r\n\r\nv=0\r\ns=-\r\nxy"
ACK_NO_LENGTH = b"ACK sip:bob@example.com SIP/2.0\r\nCall-ID: x\r\n\r\n"
BYE_LOWER = b"BYE sip:bob@example.com SIP/2.0\r\ncontent-LENGTH   :   4\r\n\r\nbody"

assert len(INVITE.split(b"\r\n\r\n", 1)[1]) == 38
assert len(OK_COMPACT.split(b"\r\n\r\n", 1)[1]) == 12


def seg(seq, data=b"", flags=TCP_PSH | TCP_ACK, src=A, sport=5060, dst=B, dport=40000):
    return Packet(6, src, sport, dst, dport, data, seq % 2**32, flags)


def feed_all(r, segments, now=0.0):
    out = []
    for s in segments:
        out += r.feed(s, now)
    return out


def cut(data, *points):
    """Split ``data`` at ``points``; return (offset, chunk) pairs."""
    bounds = [0, *points, len(data)]
    return [(a, data[a:b]) for a, b in zip(bounds, bounds[1:])]


def test_several_messages_in_one_segment():
    r = SipTcpReassembler()
    assert r.feed(seg(1000, flags=TCP_SYN), 0) == []
    stream = INVITE + TRYING + OK_COMPACT + ACK_NO_LENGTH + BYE_LOWER
    assert r.feed(seg(1001, stream), 0) == [INVITE, TRYING, OK_COMPACT, ACK_NO_LENGTH, BYE_LOWER]
    assert r.stats["messages"] == 5


def test_one_message_across_three_segments():
    r = SipTcpReassembler()
    r.feed(seg(0, flags=TCP_SYN), 0)
    parts = cut(INVITE, 20, 150)  # start line, headers, headers + body
    assert r.feed(seg(1 + parts[0][0], parts[0][1]), 0) == []
    assert r.feed(seg(1 + parts[1][0], parts[1][1]), 0) == []
    assert r.feed(seg(1 + parts[2][0], parts[2][1]), 0) == [INVITE]


@pytest.mark.parametrize("split", [len(INVITE) - 38, len(INVITE) - 1, len(INVITE) - 40])
def test_body_waits_for_content_length(split):
    r = SipTcpReassembler()
    r.feed(seg(0, flags=TCP_SYN), 0)
    assert r.feed(seg(1, INVITE[:split]), 0) == []
    assert r.feed(seg(1 + split, INVITE[split:] + TRYING[:5]), 0) == [INVITE]
    assert r.feed(seg(1 + len(INVITE) + 5, TRYING[5:]), 0) == [TRYING]


def test_compact_and_case_insensitive_content_length():
    r = SipTcpReassembler()
    stream = OK_COMPACT + BYE_LOWER
    out = feed_all(r, [seg(10, stream[:40]), seg(50, stream[40:])])
    assert out == [OK_COMPACT, BYE_LOWER]


def test_out_of_order_segments_wait_for_the_hole():
    r = SipTcpReassembler()
    r.feed(seg(99, flags=TCP_SYN), 0)
    stream = INVITE + TRYING
    parts = cut(stream, 30, 100, 200)
    order = [parts[2], parts[0], parts[3], parts[1]]
    results = [r.feed(seg(100 + off, data), 0) for off, data in order]
    assert results == [[], [], [], [INVITE, TRYING]]
    assert r.stats["out_of_order"] == 2


def test_retransmission_and_overlap_are_trimmed():
    r = SipTcpReassembler()
    r.feed(seg(0, flags=TCP_SYN), 0)
    stream = INVITE + TRYING
    out = []
    out += r.feed(seg(1, stream[:100]), 0)
    out += r.feed(seg(1, stream[:100]), 0)  # exact retransmission
    out += r.feed(seg(1 + 50, stream[50:180]), 0)  # overlaps 50 bytes
    out += r.feed(seg(1 + 10, stream[10:60]), 0)  # entirely old
    out += r.feed(seg(1 + 150, stream[150:]), 0)  # overlaps again, completes both
    out += r.feed(seg(1, stream), 0)  # whole stream again
    assert out == [INVITE, TRYING]
    assert r.stats["retransmissions"] == 3 and r.stats["overlaps"] == 2


def test_out_of_order_overlapping_held_segments():
    r = SipTcpReassembler()
    r.feed(seg(0, flags=TCP_SYN), 0)
    stream = INVITE + TRYING
    assert r.feed(seg(1 + 100, stream[100:]), 0) == []
    assert r.feed(seg(1 + 60, stream[60:140]), 0) == []
    assert r.feed(seg(1 + 100, stream[100:120]), 0) == []  # shorter copy of a held one
    assert r.feed(seg(1, stream[:70]), 0) == [INVITE, TRYING]


@pytest.mark.parametrize("isn", [2**32 - 1, 2**32 - 50, 2**32 - len(INVITE) - 1])
def test_sequence_wrap_around(isn):
    r = SipTcpReassembler()
    r.feed(seg(isn, flags=TCP_SYN), 0)
    stream = INVITE + TRYING + OK_COMPACT
    parts = cut(stream, 40, 120, len(INVITE) + 3, len(INVITE) + 60)
    order = [parts[1], parts[0], parts[4], parts[3], parts[2]]
    out = feed_all(r, [seg(isn + 1 + off, data) for off, data in order])
    assert out == [INVITE, TRYING, OK_COMPACT]


def test_mid_stream_start_without_syn():
    r = SipTcpReassembler()
    assert r.feed(seg(5000, b"", flags=TCP_ACK), 0) == []  # pure ACK: no flow yet
    assert len(r) == 0
    stream = INVITE + TRYING
    assert r.feed(seg(5000, stream[:90]), 0) == []
    assert r.feed(seg(5090, stream[90:]), 0) == [INVITE, TRYING]
    assert len(r) == 1


def test_mid_stream_start_inside_a_message_resynchronises():
    r = SipTcpReassembler()
    stream = INVITE[60:] + b"\r\n\r\n" + TRYING + BYE_LOWER
    assert r.feed(seg(777, stream), 0) == [TRYING, BYE_LOWER]
    assert r.stats["desyncs"] == 1
    assert r.stats["discarded_bytes"] == len(INVITE) - 60 + 4


def test_garbage_between_messages_resynchronises():
    r = SipTcpReassembler()
    stream = INVITE + b"\x16\x03\x01 binary junk\r\nmore: junk\r\n\r\n" + TRYING
    assert r.feed(seg(1, stream[:len(INVITE) + 10]), 0) == [INVITE]
    assert r.feed(seg(1 + len(INVITE) + 10, stream[len(INVITE) + 10 :]), 0) == [TRYING]
    assert r.stats["desyncs"] == 1


def test_partial_line_that_cannot_be_sip_is_dropped_early():
    r = SipTcpReassembler()
    assert r.feed(seg(1, b"\x00\x01\x02\x03binary"), 0) == []
    assert r.stats["desyncs"] == 1 and r.stats["discarded_bytes"] == 10
    # A partial start line is kept until the rest arrives.
    assert r.feed(seg(11, TRYING[:10]), 0) == []
    assert r.feed(seg(21, TRYING[10:]), 0) == [TRYING]
    assert r.stats["desyncs"] == 1


def test_crlf_keepalives_are_skipped():
    r = SipTcpReassembler()
    stream = b"\r\n\r\n" + INVITE + b"\r\n" + b"\r\n\r\n" + TRYING + b"\r\n"
    out = feed_all(r, [seg(1, stream[:3]), seg(4, stream[3:])])
    assert out == [INVITE, TRYING]
    assert r.stats["desyncs"] == 0


def test_directions_are_separate_flows():
    r = SipTcpReassembler()
    a = seg(1, INVITE[:50])
    b = seg(900, TRYING[:30], src=B, sport=40000, dst=A, dport=5060)
    assert r.feed(a, 0) == [] and r.feed(b, 0) == []
    assert r.feed(seg(51, INVITE[50:]), 0) == [INVITE]
    assert r.feed(seg(930, TRYING[30:], src=B, sport=40000, dst=A, dport=5060), 0) == [TRYING]
    assert len(r) == 2


def test_fin_and_rst_close_the_flow():
    r = SipTcpReassembler()
    r.feed(seg(0, flags=TCP_SYN), 0)
    assert r.feed(seg(1, INVITE, flags=TCP_FIN | TCP_ACK), 0) == [INVITE]
    assert len(r) == 0 and r.stats["flows_closed"] == 1
    # A FIN that arrives before the data it ends waits for it.
    r.feed(seg(0, flags=TCP_SYN), 0)
    assert r.feed(seg(1 + 60, INVITE[60:], flags=TCP_FIN | TCP_ACK), 0) == []
    assert len(r) == 1
    assert r.feed(seg(1, INVITE[:60]), 0) == [INVITE]
    assert len(r) == 0 and r.stats["flows_closed"] == 2
    # RST drops whatever was buffered.
    r.feed(seg(1, INVITE[:60]), 0)
    r.feed(seg(500, flags=TCP_RST), 0)
    assert len(r) == 0 and r.stats["flows_reset"] == 1 and r.stats["discarded_bytes"] == 60


def test_new_syn_restarts_the_flow():
    r = SipTcpReassembler()
    r.feed(seg(100, flags=TCP_SYN), 0)
    r.feed(seg(101, INVITE[:50]), 0)
    r.feed(seg(100, flags=TCP_SYN), 0)  # retransmitted SYN: same flow
    assert r.feed(seg(151, INVITE[50:]), 0) == [INVITE]
    r.feed(seg(101, TRYING[:20]), 0)
    r.feed(seg(7000, flags=TCP_SYN), 0)  # new connection on the same ports
    assert r.feed(seg(7001, TRYING), 0) == [TRYING]


def test_idle_flows_expire():
    r = SipTcpReassembler(idle_timeout=60)
    r.feed(seg(1, INVITE[:50]), 10.0)
    r.feed(seg(1, TRYING[:50], sport=5061), 40.0)
    r.expire(69.0)
    assert len(r) == 2
    r.expire(70.0)
    assert len(r) == 1 and r.stats["flows_expired"] == 1
    r.feed(seg(51, TRYING[50:], sport=5061), 80.0)
    r.expire(139.0)
    assert len(r) == 1
    r.expire(140.0)
    assert len(r) == 0 and r.stats["flows_expired"] == 2


def test_flow_count_is_bounded():
    r = SipTcpReassembler(max_flows=2)
    for port in (1, 2, 3):
        r.feed(seg(1, INVITE[:10], sport=port), 0)
    assert len(r) == 2 and r.stats["flows_evicted"] == 1


def test_unframed_data_is_bounded():
    r = SipTcpReassembler(max_buffer=200)
    # Headers that never end.
    r.feed(seg(1, b"INVITE sip:x SIP/2.0\r\n" + b"X-Pad: " + b"a" * 300), 0)
    assert r.stats["overflows"] == 1
    # After the overflow the stream resynchronises on the next message.
    assert r.feed(seg(330, b"aaa\r\n\r\n" + TRYING), 0) == [TRYING]


def test_content_length_beyond_the_bound_is_skipped():
    r = SipTcpReassembler(max_buffer=500)
    huge = b"MESSAGE sip:x SIP/2.0\r\nContent-Length: 100000\r\n\r\nabc"
    assert r.feed(seg(1, huge + b"\r\n" + TRYING), 0) == [TRYING]
    assert r.stats["bad_content_length"] == 1


def test_lost_segment_is_skipped_when_the_held_data_outgrows_the_bound():
    r = SipTcpReassembler(max_buffer=200)
    r.feed(seg(0, flags=TCP_SYN), 0)
    stream = INVITE + TRYING + OK_COMPACT + BYE_LOWER
    assert len(stream) - len(INVITE) + 30 > 200
    assert r.feed(seg(1, INVITE[:30]), 0) == []
    # INVITE[30:] is never captured; what follows is held, then the hole is jumped.
    out = r.feed(seg(1 + len(INVITE), stream[len(INVITE) :]), 0)
    assert out == [TRYING, OK_COMPACT, BYE_LOWER]
    assert r.stats["gaps"] == 1


def test_held_data_stays_within_the_bound_behind_several_holes():
    # fuzz/crashes/tcp/held-bytes-behind-several-holes: one hole skipped per segment left big runs
    # behind later holes, so a flow held 75,727 bytes with max_buffer 4096.
    r = SipTcpReassembler(max_buffer=4096)
    r.feed(seg(0, flags=TCP_SYN), 0)
    # The run behind the first hole is small, those behind the later ones big: one
    # skip frees too little.
    bodies = [8, 8, 380, 380, 380, 380]
    msgs = [b"MESSAGE sip:x SIP/2.0\r\nCall-ID: m%d\r\nContent-Length: %d\r\n\r\n" % (i, 5 * n) + b"a=%d\r\n" % i * n
            for i, n in enumerate(bodies)]
    stream = b"".join(msgs)
    starts = [sum(map(len, msgs[:i])) for i in range(len(msgs))]
    out = []
    # Every message but the first arrives, each with its first ten bytes lost: five
    # runs behind five holes, and the last one takes the flow over the bound.
    for i in range(1, len(msgs)):
        out += r.feed(seg(1 + starts[i] + 10, msgs[i][10:]), 0)
        assert len(flow_of(r).buf) + flow_of(r).pending_bytes <= r.max_buffer
    # The lost bytes are never seen: each skip drops only the message cut by its hole.
    assert out == []
    assert r.stats["gaps"] >= 2
    check_invariants(r)
    # A message that arrives whole after the holes comes out once the holes time out.
    tail = b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 0\r\n\r\n"
    out = r.feed(seg(1 + len(stream), tail), 0)
    for t in range(1, 10):
        out += r.expire(t * r.hole_timeout)
    assert out == [tail]


def test_whole_messages_behind_several_holes_survive_the_skips():
    # Framing runs between skips: a skip never discards a message that was whole.
    r = SipTcpReassembler(max_buffer=4096)
    r.feed(seg(0, flags=TCP_SYN), 0)
    bodies = [8, 8, 180, 180, 180, 180, 180, 180]
    msgs = [b"MESSAGE sip:x SIP/2.0\r\nCall-ID: m%d\r\nContent-Length: %d\r\n\r\n" % (i, 5 * n) + b"a=%d\r\n" % i * n
            for i, n in enumerate(bodies)]
    starts = [sum(map(len, msgs[:i])) for i in range(len(msgs))]
    out = []
    # Holes are ten bytes each, at the start of messages 0, 2, 4 and 6; messages 1, 3,
    # 5 and 7 arrive whole, right behind the (partial) message before them.
    for i in range(0, len(msgs), 2):
        pair = msgs[i][10:] + msgs[i + 1]
        out += r.feed(seg(1 + starts[i] + 10, pair), 0)
        assert len(flow_of(r).buf) + flow_of(r).pending_bytes <= r.max_buffer
    for t in range(1, 10):
        out += r.expire(t * r.hole_timeout)
    assert out == [msgs[1], msgs[3], msgs[5], msgs[7]]
    check_invariants(r)


def test_through_the_packet_decoder():
    client, server = "2001:db8::1", "2001:db8::2"
    stream = INVITE + TRYING
    frames = [link(DLT_EN10MB, tcp(client, 40000, server, 5060, b"", seq=2**32 - 2, flags="S"))]
    for off, data in reversed(cut(stream, 70, 140, 200)):
        frames.append(link(DLT_EN10MB, tcp(client, 40000, server, 5060, data, seq=2**32 - 1 + off)))
    d, r = PacketDecoder(DLT_EN10MB), SipTcpReassembler()
    out = []
    for f in frames:
        out += r.feed(d.decode(f, 0), 0)
    assert out == [INVITE, TRYING]


# --- Issue 10: bounded numbers, bounded work, bounded memory, expiry -----------------------------


def flow_of(r, src=A, sport=5060, dst=B, dport=40000):
    return r._flows[FlowKey(src, sport, dst, dport)]


def check_invariants(r):
    """What the reassembler holds adds up, and stays within its bounds."""
    total = 0
    for flow in r._flows.values():
        assert len(flow.runs) == len(flow.heap) <= r.max_segments
        assert sorted(flow.runs) == sorted(flow.heap)
        assert flow.pending_bytes == sum(len(run) for run in flow.runs.values())
        assert all(start > flow.delivered for start in flow.runs)
        assert len(flow.buf) <= r.max_buffer
        total += len(flow.buf) + flow.pending_bytes
    assert r.held_bytes == total
    assert len(r) <= r.max_flows


@pytest.mark.parametrize("digits", [b"9" * 4301, b"1" * 11, b"0" * 5000 + b"9" * 11])
def test_content_length_of_too_many_digits_is_skipped(digits):
    """int() of 4,301+ digits raised a plain ValueError out of feed()."""
    r = SipTcpReassembler()
    bad = b"MESSAGE sip:x SIP/2.0\r\nContent-Length: " + digits + b"\r\n\r\nabc\r\n"
    stream = bad + TRYING
    # whole, and cut so that the digits arrive over several segments
    assert r.feed(seg(1, stream), 0) == [TRYING]
    parts = cut(stream, 30, 2000, len(bad) - 2)
    assert feed_all(r, [seg(7000 + off, data, sport=5061) for off, data in parts]) == [TRYING]
    assert r.stats["bad_content_length"] == 2 and r.stats["desyncs"] == 2  # one resync per flow


def test_content_length_with_leading_zeros():
    r = SipTcpReassembler()
    msg = b"MESSAGE sip:x SIP/2.0\r\nl: " + b"0" * 5000 + b"3\r\n\r\nabc"
    assert r.feed(seg(1, msg + TRYING), 0) == [msg, TRYING]


def test_random_streams_only_yield_messages():
    """Any bytes in any segments: feed() answers, and what it holds stays bounded."""
    rng = random.Random(10)
    pieces = [INVITE, TRYING, OK_COMPACT, ACK_NO_LENGTH, BYE_LOWER, b"\r\n", b"SIP/2.0 ",
              b"Content-Length: " + b"7" * 4301 + b"\r\n", b"l: " + b"0" * 300 + b"12\r\n", b"\r\n\r\n",
              b"INVITE sip:a SIP/2.0\r\n", b"x" * 300, bytes(range(256))]
    r = SipTcpReassembler(max_buffer=2000, max_segments=8, max_flows=4, max_bytes=5000, idle_timeout=50)
    now = 0.0
    for _ in range(3000):
        stream = b"".join(rng.choice(pieces) for _ in range(rng.randrange(1, 6)))
        if rng.random() < 0.3:
            data = bytearray(stream)
            for _ in range(rng.randrange(1, 6)):
                data[rng.randrange(len(data))] = rng.choice(b"\r\n :0123456789aSIP/")
            stream = bytes(data)
        flags = TCP_PSH | TCP_ACK
        if rng.random() < 0.1:
            flags = rng.choice([TCP_ACK, TCP_SYN, TCP_FIN | TCP_ACK, TCP_RST])
        sport = rng.choice((5060, 5061, 5062, 5063, 5064, 5065))
        start = rng.randrange(len(stream))
        now += rng.choice((0.0, 0.001, 1.0, 60.0, -5.0))
        for m in r.feed(seg(rng.randrange(2**32) if rng.random() < 0.05 else 1000 * sport + start,
                            stream[start:start + rng.randrange(1, 400)], flags=flags, sport=sport), now):
            assert type(m) is bytes and m
        check_invariants(r)
        assert r.held_bytes <= r.max_bytes + r.max_buffer + 400


def test_held_runs_are_a_heap_not_a_rescan(monkeypatch):
    """min() over the held segments per delivered segment: 20,000 one-byte segments
    behind a hole took 21 s.  Count the sequence comparisons instead of the time."""
    from rtp2ws.net import tcpstream

    calls = [0]
    real = tcpstream._seq_diff

    def counted(a, b):
        calls[0] += 1
        return real(a, b)

    monkeypatch.setattr(tcpstream, "_seq_diff", counted)
    n = 1000
    body = bytes(97 + i % 26 for i in range(n))
    msg = b"MESSAGE sip:x SIP/2.0\r\nContent-Length: %d\r\n\r\n" % n + body
    head = msg.index(b"\r\n\r\n") + 4
    for order in ("in order", "reversed"):
        r = SipTcpReassembler()
        r.feed(seg(0, flags=TCP_SYN), 0)
        segments = [seg(1 + i, msg[i:i + 1]) for i in range(head, len(msg))]
        if order == "reversed":
            segments.reverse()
        calls[0] = 0
        assert feed_all(r, segments) == []
        assert r.feed(seg(1, msg[:head]), 0) == [msg]
        assert calls[0] <= 2 * n + 10, order
        check_invariants(r)
        assert r.stats["out_of_order"] == n
        # a stream going on in order behind a hole is held as one run
        r.feed(seg(1 + len(msg) + 1, b"abc"), 0)
        r.feed(seg(1 + len(msg) + 4, b"def"), 0)
        r.feed(seg(1 + len(msg) + 8, b"g"), 0)
        assert sorted(bytes(run) for run in flow_of(r).runs.values()) == [b"abcdef", b"g"]


class CountingBuffer(bytearray):
    """A flow's unframed bytes that count how many of them find() looks at."""

    looked = 0

    def find(self, sub, start=0, end=None):
        end = len(self) if end is None else end
        at = super().find(sub, start, end)
        CountingBuffer.looked += (at + len(sub) if at >= 0 else end) - start
        return at

    def rfind(self, sub, start=0, end=None):
        end = len(self) if end is None else end
        at = super().rfind(sub, start, end)
        CountingBuffer.looked += end - (at if at >= 0 else start)
        return at


@pytest.mark.parametrize("shape", ["headers in 1460-byte segments", "start line in 1-byte segments",
                                   "body in 1-byte segments"])
def test_framing_resumes_where_it_stopped(shape):
    """The unframed buffer was searched from its start on every segment (about
    275 µs a segment for 1 MiB).  Count the bytes searched instead of the time."""
    if shape.startswith("headers"):
        msg = (b"MESSAGE sip:x SIP/2.0\r\n" + (b"X-Pad: " + b"h" * 90 + b"\r\n") * 5000
               + b"Content-Length: 0\r\n\r\n")
        size = 1460
    elif shape.startswith("start"):
        msg = b"INVITE sip:" + b"u" * 8000 + b" SIP/2.0\r\nl: 0\r\n\r\n"
        size = 1
    else:
        msg = b"MESSAGE sip:x SIP/2.0\r\nContent-Length: 3000\r\n\r\n" + b"b" * 3000
        size = 1
    r = SipTcpReassembler()
    r.feed(seg(0, flags=TCP_SYN), 0)
    flow_of(r).buf = CountingBuffer()
    CountingBuffer.looked = 0
    out = feed_all(r, [seg(1 + i, msg[i:i + size]) for i in range(0, len(msg), size)] + [seg(1 + len(msg), TRYING)])
    assert out == [msg, TRYING]
    assert CountingBuffer.looked <= 2 * (len(msg) + len(TRYING))


def test_held_runs_are_capped():
    """1 MB of one-byte segments held 81 MB: their number is bounded, not only their bytes."""
    r = SipTcpReassembler(max_segments=16)
    r.feed(seg(0, flags=TCP_SYN), 0)
    for i in range(100):  # every other byte: no two runs adjacent
        r.feed(seg(1 + 2 + 2 * i, b"y"), 0)
        assert len(flow_of(r).runs) <= 16
        check_invariants(r)
    flow = flow_of(r)
    assert r.stats["segment_overflows"] == 100 - 16 and r.stats["gaps"] == 100 - 16
    assert len(flow.runs) == 16 and flow.pending_bytes == 16
    # the holes left fill, and what comes after is framed
    for hole in [flow.delivered + 2 * i for i in range(16)]:
        assert r.feed(seg(1 + hole, b"\n"), 0) == []
    assert len(flow.runs) == 0
    assert r.feed(seg(1 + flow.delivered, b"\r\n" + TRYING), 0) == [TRYING]
    assert r.stats["desyncs"] == 1


def test_one_byte_segments_stay_small():
    """tracemalloc's peak while one-byte segments arrive, each a new object as from
    a capture: a hole and the stream in order behind it (one run), then every other
    byte missing (runs capped).  Before, each held segment cost about 80 bytes more
    than its byte: over 2.5 MB here."""
    n = 1 << 14  # of each shape (the benchmark feeds 1 MiB: 84 MiB before, 0.3 MiB after)

    def segments():
        yield seg(0, flags=TCP_SYN)
        for i in range(1, n):
            yield seg(1 + 1 + i, b"z")  # behind a hole of one byte
        for i in range(n):
            yield seg(1 + 2 * n + 2 * i, b"y")  # then every other byte

    r = SipTcpReassembler()
    tracemalloc.start()
    try:
        for s in segments():
            r.feed(s, 0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 512 << 10, peak
    check_invariants(r)
    assert r.stats["segments"] == 2 * n
    assert len(flow_of(r).runs) == r.max_segments


def test_flows_expire_at_their_deadline():
    r = SipTcpReassembler()
    assert r.idle_timeout == 120 and r.next_deadline() is None
    # 0.1 + 120 - 120 < 0.1 in floating point: the deadline still expires the flow
    r.feed(seg(1, INVITE[:50]), 0.1)
    r.feed(seg(1, TRYING[:50], sport=5061), 40.0)
    assert r.next_deadline() == 0.1 + 120
    r.expire(120.09)
    assert len(r) == 2
    r.expire(r.next_deadline())
    assert len(r) == 1 and r.stats["flows_expired"] == 1 and r.next_deadline() == 160.0
    assert r.held_bytes == 50 and r.stats["discarded_bytes"] == 50
    # feed() expires what is due before it looks at the segment
    assert r.feed(seg(51, TRYING[50:], sport=5061), 170.0) == []
    assert r.stats["flows_expired"] == 2 and r.stats["desyncs"] == 1 and len(r) == 1
    r.expire(1e12)  # a jump: everything goes at once
    assert len(r) == 0 and r.held_bytes == 0 and r.next_deadline() is None


def test_every_deadline_makes_progress():
    rng = random.Random(3)
    for timeout in (120.0, 0.3, 7.7):
        r = SipTcpReassembler(idle_timeout=timeout)
        now = 0.0
        for i in range(300):
            now += rng.choice((0.0, 0.001, 0.1, 0.3, 986.218 - now if now < 986.218 else 0.0))
            r.feed(seg(1, b"x", sport=1000 + rng.randrange(50)), now)
        while (due := r.next_deadline()) is not None:
            before = len(r)
            r.expire(due)
            assert len(r) < before and (r.next_deadline() is None or r.next_deadline() >= due)
        assert r.stats["flows_expired"] == r.stats["flows_opened"] > 50


def test_capture_time_stepping_back_keeps_the_order():
    r = SipTcpReassembler(idle_timeout=10)
    r.feed(seg(1, b"a", sport=1), 100.0)
    r.feed(seg(1, b"b", sport=2), 95.0)  # earlier timestamp: counts as 100
    assert r.next_deadline() == 110.0
    r.expire(110.0)
    assert len(r) == 0


def test_flow_count_and_held_bytes_are_capped_over_all_flows():
    """Half-finished flows were never let go (200 of them held 207 MB a day later)."""
    pad = b"MESSAGE sip:x SIP/2.0\r\n" + b"X-Pad: " + b"p" * 1000  # headers that do not end
    r = SipTcpReassembler(max_flows=3, max_bytes=500)
    for port in range(1, 6):
        r.feed(seg(1, pad[:100], sport=port), port)
        check_invariants(r)
    assert len(r) == 3 and r.stats["flows_evicted"] == 2 and r.held_bytes == 300
    r.feed(seg(101, pad[100:150], sport=3), 10)  # flow 3 becomes the most recent
    r.feed(seg(1, pad[:200], sport=6), 11)  # flow 4 goes for the count: 300 + 50 - 100 + 200
    assert [k.sport for k in r._flows] == [5, 3, 6] and r.held_bytes == 450
    r.feed(seg(201, pad[200:300], sport=6), 12)  # 550: the least recently seen goes (5)
    assert [k.sport for k in r._flows] == [3, 6]
    assert r.stats["flows_evicted_bytes"] == 1 and r.held_bytes == 150 + 300
    assert r.stats["discarded_bytes"] == 100 * 4
    check_invariants(r)
    # a flow alone over max_bytes keeps its data (max_buffer bounds it)
    r.feed(seg(1, pad[:600], sport=7), 13)
    assert [k.sport for k in r._flows] == [7] and r.held_bytes == 600
    assert r.stats["flows_evicted_bytes"] == 3
    check_invariants(r)


# --- Through the pipeline -------------------------------------------------------------------

CALLER = Party("10.0.0.1", 5060, 4000, "1000")
CALLEE = Party("10.0.0.2", 5060, 5000, "2000")


def over_tcp(frames, src, sport, dst, dport, *, isn=1000, first=b""):
    """The SIP payloads of UDP ``frames`` as one TCP connection: SYN, then a
    segment per message (``first`` before them), each at its datagram's time."""
    out = [(frames[0][0] - 0.01, tcp(src, sport, dst, dport, b"", seq=isn, flags="S"))]
    seq = isn + 1
    for t, payload in [(frames[0][0] - 0.005, first)] * bool(first) + [
            (t, ip[(ip[0] & 15) * 4 + 8:]) for t, ip in frames]:
        out.append((t, tcp(src, sport, dst, dport, payload, seq=seq)))
        seq += len(payload)
    return out


def test_tcp_content_length_of_4301_digits_then_a_call(tmp_path):
    """The reassembler's int() raised a plain ValueError out of the pipeline:
    replay exited 2 without calls.json.  Now the message is skipped and counted,
    and the call that follows on the same connection is decoded."""
    bad = (b"MESSAGE sip:2000@10.0.0.2 SIP/2.0\r\nCall-ID: bad@test\r\nCSeq: 1 MESSAGE\r\n"
           b"Content-Length: " + b"9" * 4301 + b"\r\n\r\nhello\r\n")
    call = Call("tcp-good@test", CALLER, CALLEE)
    setup, bye = call.setup(100.0), call.bye(100.5)
    pcm = tone(440, 1600)
    a_to_b = over_tcp([setup[0], setup[4], bye[0]], CALLER.ip, 40000, CALLEE.ip, 5060, first=bad)
    b_to_a = over_tcp([setup[1], setup[2], setup[3], bye[1]], CALLEE.ip, 5060, CALLER.ip, 40000, isn=7)
    path = callgen.write(tmp_path / "bad_tcp.pcap", frames_of(
        a_to_b, b_to_a, rtp_packets(CALLER, CALLEE, 100.1, pcm, ssrc=0xAAAA0001)))
    check_equivalent(path)
    out = tmp_path / "out"
    assert cli.main(["replay", path, "--out-dir", str(out), "--no-progress"]) == 0
    with open(out / "calls.json") as f:
        (got,) = json.load(f)["calls"]
    assert got["call_id"] == "tcp-good@test" and got["end_reason"] == "bye"
    caller = next(leg for leg in got["legs"] if leg["tag"] == "caller")
    data, rate, _ = read_wav(str(out / caller["wav"]))
    assert np.array_equal(data, expected_16k(pcm))
    # the reassembler counted the message it could not frame
    with CaptureFile(path) as cap:
        pipe = Pipeline(cap.linktype, Recorder())
        for batch in cap.batches():
            pipe.feed_batch(batch)
    st = pipe.tcp.stats
    assert st["bad_content_length"] == 1 and st["desyncs"] == 1 and st["messages"] == 7
    assert pipe.stats["sip"] == 7 and pipe.stats["malformed"] == 0


def half_finished_flows(n, t0):
    """``n`` connections that each sent the start of an INVITE and then nothing."""
    frames = []
    head = b"INVITE sip:2000@10.0.0.2 SIP/2.0\r\nX-Pad: " + b"p" * 1000
    for i in range(n):
        src = f"10.0.{1 + i // 250}.{1 + i % 250}"
        frames.append((t0 + i * 0.01, tcp(src, 40000 + i, "10.0.0.2", 5060, b"", seq=i, flags="S")))
        frames.append((t0 + i * 0.01 + 0.001, tcp(src, 40000 + i, "10.0.0.2", 5060, head, seq=i + 1)))
    return frames, len(head)


def test_pipeline_lets_half_finished_tcp_flows_go(tmp_path):
    """Nothing called SipTcpReassembler.expire: 200 half-finished flows held 207 MB
    a day later.  Now a jump in capture time lets them all go at once."""
    flows, size = half_finished_flows(200, 10.0)
    call = Call("later@test", CALLER, CALLEE)
    t1 = 1e9  # capture time jumps by some thirty years
    pcm = tone(440, 1600)
    later = frames_of(call.setup(t1), rtp_packets(CALLER, CALLEE, t1 + 0.1, pcm, ssrc=0xAAAA0001),
                      call.bye(t1 + 0.5))
    path = callgen.write(tmp_path / "half.pcap", frames_of(flows, later))
    check_equivalent(path)
    for fast in (False, True):  # packet at a time, and as replay reads it (fast path, ticks per budget)
        rec = Recorder()
        with CaptureFile(path, batch=100, native=fast) as cap:
            pipe = Pipeline(cap.linktype, rec)
            if fast:
                while pipe.run_reader(cap.reader, 100):
                    if pipe.now < t1:
                        assert len(pipe.tcp) == pipe.stats["frames"] // 2  # held until time passes
            else:
                for batch in cap.batches():
                    pipe.feed_batch(batch)
                    if pipe.now < t1:
                        assert len(pipe.tcp) == pipe.stats["frames"] // 2
        assert len(pipe.tcp) == 0
        st = pipe.tcp.stats
        assert st["flows_expired"] == 200 and st["discarded_bytes"] == 200 * size
        pipe.finish()
        assert [e[1] for e in rec.log if e[0] == "start"] == ["later@test"]


def test_pipeline_tcp_timer_fires_once_per_deadline():
    """The tick expires the flows that are due, and then has nothing due at that time."""
    flows, size = half_finished_flows(200, 10.0)
    pipe = Pipeline(1, Recorder())
    expiries = []
    real = pipe.tcp.expire
    pipe.tcp.expire = lambda now: expiries.append(now) or real(now)
    pipe.feed_batch([(t, link(1, ip)) for t, ip in flows])
    assert len(pipe.tcp) == 200 and pipe.tcp.held_bytes == 200 * size
    due = pipe.tcp.next_deadline()
    assert due == 10.001 + 120.0  # the first flow's last segment, plus idle_timeout
    pipe.tick(due)
    assert len(pipe.tcp) == 199 and pipe.tcp.next_deadline() > due
    pipe.tick(due)
    assert expiries == [due]  # nothing due: no second call at the same time
    pipe.feed_batch([(1e9, link(1, netgen.udp(CALLER.ip, 9, CALLEE.ip, 9, b"later")))])
    assert expiries == [due, 1e9]
    assert len(pipe.tcp) == 0 and pipe.tcp.held_bytes == 0 and pipe.tcp.next_deadline() is None
    pipe.tick(2e9)
    assert expiries == [due, 1e9]


# -- a segment lost in capture is waited for hole_timeout, not forever ----------------

def test_data_behind_a_hole_waits_hole_timeout_then_goes_on():
    """The mirror lost a segment the receiver got: nothing retransmits it.  The
    messages behind the hole come out hole_timeout (2 s) later, not when 1 MiB has
    piled up or the connection goes idle."""
    r = SipTcpReassembler()
    assert r.feed(seg(1000, flags=TCP_SYN), 10.0) == []
    assert r.feed(seg(1001, INVITE), 10.0) == [INVITE]
    lost = 1001 + len(INVITE)                               # TRYING: never seen
    assert r.feed(seg(lost + len(TRYING), OK_COMPACT), 10.5) == []
    assert r.next_deadline() == 12.5
    assert r.expire(12.4999) == [] and r.held_bytes == len(OK_COMPACT)
    assert r.expire(12.5) == [OK_COMPACT]
    assert r.stats["holes_timed_out"] == 1 and r.stats["gaps"] == 1 and r.stats["overflows"] == 0
    assert r.held_bytes == 0 and r.next_deadline() == 10.5 + 120.0   # only the idle timer is left
    after = lost + len(TRYING) + len(OK_COMPACT)
    assert r.feed(seg(after, BYE_LOWER), 13.0) == [BYE_LOWER]             # in order from there


def test_a_hole_due_is_skipped_by_the_next_segment_of_any_flow():
    r = SipTcpReassembler()
    r.feed(seg(1000, flags=TCP_SYN), 0.0)
    r.feed(seg(1001 + 50, TRYING), 0.0)                       # 50 bytes never seen
    other = seg(5000, ACK_NO_LENGTH, src=B, sport=40001, dst=A, dport=5060)
    assert r.feed(other, 2.0) == [TRYING, ACK_NO_LENGTH]   # what the timer completed comes first


def test_a_hole_that_fills_in_time_is_not_skipped():
    r = SipTcpReassembler()
    r.feed(seg(1000, flags=TCP_SYN), 0.0)
    r.feed(seg(1001 + len(INVITE), TRYING), 0.0)
    assert r.feed(seg(1001, INVITE), 1.5) == [INVITE, TRYING]     # a real retransmission
    assert r.expire(2.0) == [] and r.stats["holes_timed_out"] == 0 and r.stats["gaps"] == 0
    # a second hole waits from when data first waited behind it
    r.feed(seg(1001 + len(INVITE) + len(TRYING) + 7, OK_COMPACT), 3.0)
    assert r.next_deadline() == 5.0 and r.expire(5.0) == [OK_COMPACT]


def test_hole_timers_stay_bounded_when_holes_move_on():
    """Every skip re-arms the flow's hole timer; stale entries do not pile up."""
    r = SipTcpReassembler(max_segments=4)
    r.feed(seg(1000, flags=TCP_SYN), 0.0)
    for k in range(20000):
        r.feed(seg(1001 + 2 * k + 1, b"Y"), k * 0.001)       # every other byte missing
    assert len(r._holes) <= 2 * len(r) + 64 + 1
    due = r.next_deadline()
    assert due is not None and r.expire(due) == [] and r.next_deadline() > due


def test_pipeline_a_bye_behind_a_lost_segment_still_ends_the_call(tmp_path):
    """SIP over TCP from the callee lost its 100 Trying in capture: the 180, the 200 OK
    and, 5 s later, the callee's BYE sat behind the hole for good, and the call ended
    as capture_end.  Now the hole is given up 2 s later and the BYE ends it."""
    call = Call("tcp-hole@test", CALLER, CALLEE)
    setup = call.setup(100.0)
    bye = call.bye(105.0, from_a=False)
    pcm = tone(440, 1600)
    a_to_b = over_tcp([setup[0], setup[4], bye[1]], CALLER.ip, 40000, CALLEE.ip, 5060)
    b_to_a = over_tcp([setup[1], setup[2], setup[3], bye[0]], CALLEE.ip, 5060, CALLER.ip, 40000, isn=7)
    del b_to_a[1]                                            # the 100 Trying, lost by the mirror
    path = callgen.write(tmp_path / "hole.pcap", frames_of(
        a_to_b, b_to_a, rtp_packets(CALLER, CALLEE, 100.1, pcm, ssrc=0xAAAA0001)))
    check_equivalent(path)
    out = tmp_path / "out"
    assert cli.main(["replay", path, "--out-dir", str(out), "--no-progress"]) == 0
    with open(out / "calls.json") as f:
        (got,) = json.load(f)["calls"]
    assert got["end_reason"] == "bye" and got["end"].startswith("1970-01-01T00:01:45.000")
    assert got["sip_messages"] == 5     # INVITE, 180, 200, ACK, BYE: all but the lost 100 (and the 200 to the BYE, after the end)
