import pytest

from netgen import link, tcp
from rtp2ws.packet import DLT_EN10MB, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, Packet, PacketDecoder
from rtp2ws.tcpstream import SipTcpReassembler

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
