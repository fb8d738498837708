"""rtp2ws.net.wsstream, and SIP over WebSocket (RFC 7118) through the TCP reassembler:
frames made by websockets' own serializer (masked as a client sends them), cut into TCP
segments in every way."""

from __future__ import annotations

import random

import pytest
from websockets.frames import Close, Frame, Opcode

from rtp2ws.net.packet import TCP_ACK, TCP_PSH, TCP_SYN, Packet
from rtp2ws.net.tcpstream import SipTcpReassembler
from rtp2ws.net.wsstream import WsSipReader, upgrade

A = b"\xc0\x00\x02\x01"
B = b"\xc0\x00\x02\x02"

UPGRADE = (b"GET /ws HTTP/1.1\r\nHost: pbx.example.com:5066\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: https://app.example.com\r\n"
           b"Sec-WebSocket-Protocol: sip\r\nSec-WebSocket-Version: 13\r\n\r\n")
SWITCHED = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: sip\r\n\r\n")
REGISTER = (b"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bKasudf\r\n"
            b"From: <sip:alice@example.com>;tag=65bnmj.34asd\r\nTo: <sip:alice@example.com>\r\n"
            b"Call-ID: aiuy7k9njasd\r\nCSeq: 1 REGISTER\r\nContact: <sip:alice@df7jal23ls0d.invalid;transport=ws>\r\n"
            b"\r\n")
OK = b"SIP/2.0 200 OK\r\nCall-ID: aiuy7k9njasd\r\nCSeq: 1 REGISTER\r\n\r\n"


def frame(data: bytes, op=Opcode.TEXT, fin=True, mask=True, rsv1=False) -> bytes:
    out = Frame(op, data, fin).serialize(mask=mask, extensions=[])
    return bytes([out[0] | 0x40]) + out[1:] if rsv1 else out       # RSV1: permessage-deflate's


def seg(seq, data=b"", flags=TCP_PSH | TCP_ACK, client=True):
    src, sport, dst, dport = (A, 40000, B, 5066) if client else (B, 5066, A, 40000)
    return Packet(6, src, sport, dst, dport, data, seq % 2**32, flags)


def stream(data: bytes, cuts, *, client=True, isn=1000, syn=True, order=None) -> list[Packet]:
    bounds = [0, *sorted(set(cuts)), len(data)]
    segs = [seg(isn + 1 + a, data[a:b], client=client) for a, b in zip(bounds, bounds[1:]) if b > a]
    if order is not None:
        segs = [segs[i] for i in order]
    return ([seg(isn, flags=TCP_SYN, client=client)] if syn else []) + segs


def feed(r, segments, now=0.0):
    out = []
    for s in segments:
        out += r.feed(s, now)
    return out


def test_upgrade_reads_the_handshake():
    assert upgrade(UPGRADE[:-4]) == (True, True)
    assert upgrade(SWITCHED[:-4]) == (True, False)
    # several subprotocols offered, any case, sip among them
    assert upgrade(UPGRADE.replace(b"Protocol: sip", b"Protocol: xmpp, SIP").replace(b"websocket", b"WebSocket")
                   [:-4]) == (True, True)
    assert upgrade(UPGRADE.replace(b"Protocol: sip", b"Protocol: xmpp")[:-4]) == (False, False)
    assert upgrade(UPGRADE.replace(b"Upgrade: websocket", b"Upgrade: h2c")[:-4]) == (False, False)
    assert upgrade(SWITCHED.replace(b" 101 ", b" 400 ")[:-4]) == (False, False)


@pytest.mark.parametrize("step", [1, 3, 7, 64, 10_000])
def test_a_conversation_cut_into_segments_of_any_size(step):
    """Both directions, every byte boundary: the handshake, masked client frames and the
    server's unmasked ones, a ping and a pong among them."""
    client = UPGRADE + frame(REGISTER) + frame(b"", Opcode.PING) + frame(REGISTER.replace(b"CSeq: 1", b"CSeq: 2"))
    server = SWITCHED + frame(OK, mask=False) + frame(b"", Opcode.PONG, mask=False)
    r = SipTcpReassembler()
    got_c = feed(r, stream(client, range(step, len(client), step)))
    got_s = feed(r, stream(server, range(step, len(server), step), client=False, isn=9000))
    assert got_c == [REGISTER, REGISTER.replace(b"CSeq: 1", b"CSeq: 2")] and got_s == [OK]
    st = r.stats
    assert (st["ws_upgrades"], st["ws_messages"], st["ws_control"], st["messages"]) == (2, 3, 2, 3)
    assert st["desyncs"] == st["ws_errors"] == st["http_other"] == 0 and r.held_bytes == 0


def test_out_of_order_segments():
    client = UPGRADE + frame(REGISTER) + frame(OK)
    cuts = [50, len(UPGRADE) + 10, len(UPGRADE) + 100, len(UPGRADE) + len(REGISTER)]
    r = SipTcpReassembler()
    assert feed(r, stream(client, cuts, order=[4, 2, 0, 3, 1])) == [REGISTER, OK]
    assert r.stats["out_of_order"] == 3 and r.held_bytes == 0


@pytest.mark.parametrize("pieces", [2, 3, 17])
def test_fragmented_messages_are_reassembled(pieces):
    """RFC 6455 5.4: a text frame without FIN, continuations, control frames between them."""
    step = -(-len(REGISTER) // pieces)
    parts = [REGISTER[i:i + step] for i in range(0, len(REGISTER), step)]
    data = frame(parts[0], fin=len(parts) == 1)
    for i, part in enumerate(parts[1:], 1):
        data += frame(b"keep", Opcode.PING) + frame(part, Opcode.CONT, fin=i == len(parts) - 1)
    r = SipTcpReassembler()
    assert feed(r, stream(UPGRADE + data + frame(OK, Opcode.BINARY), [len(UPGRADE) + 5])) == [REGISTER, OK]
    assert r.stats["ws_control"] == len(parts) - 1


def test_masking_is_checked_by_direction():
    """A client's frames must be masked and a server's must not (RFC 6455 5.1): websockets
    refuses the others; the reader starts afresh at the next segment."""
    r = SipTcpReassembler()
    out = feed(r, stream(UPGRADE + frame(REGISTER, mask=False) + frame(OK), [len(UPGRADE), len(UPGRADE) + 30]))
    # the bad frame's first segment is refused, and its rest read as frames is garbage too
    assert out == [] and r.stats["ws_errors"] == 2
    r = SipTcpReassembler()
    out = feed(r, stream(UPGRADE + frame(REGISTER, mask=False), [len(UPGRADE)]) +
               [seg(1001 + len(UPGRADE) + len(frame(REGISTER, mask=False)), frame(OK))])
    assert out == [OK] and r.stats["ws_errors"] == 1
    r = SipTcpReassembler()
    masked = frame(OK, mask=True)
    out = feed(r, stream(SWITCHED + masked + frame(OK, mask=False), [len(SWITCHED) + len(masked)], client=False))
    assert out == [OK] and r.stats["ws_errors"] == 1


def test_garbage_compression_and_oversize_are_counted():
    r = SipTcpReassembler(max_buffer=4096)
    rnd = random.Random(5)
    junk = bytes(rnd.randrange(256) for _ in range(3000))
    segs = stream(UPGRADE + frame(REGISTER), [len(UPGRADE)])
    pos = 1001 + len(UPGRADE) + len(frame(REGISTER))
    for data in (b"\x8f\x80" + junk[:40], frame(REGISTER, rsv1=True), frame(b"x" * 5000), frame(OK)):
        segs.append(seg(pos, data))
        pos += len(data)
    assert feed(r, segs) == [REGISTER, OK]
    assert r.stats["ws_errors"] == 3 and r.held_bytes == 0


def test_close_ends_the_direction():
    data = UPGRADE + frame(REGISTER) + frame(Close(1000, "bye").serialize(), Opcode.CLOSE) + frame(OK)
    r = SipTcpReassembler()
    assert feed(r, stream(data, [])) == [REGISTER]
    assert r.stats["ws_control"] == 1


def test_a_skipped_hole_restarts_the_frame_reader():
    """A segment lost in capture: the frame it cut is gone, the reader starts again at the
    next data (a segment starts a frame) once the hole is skipped (hole_timeout)."""
    f1, f2, f3 = frame(REGISTER), frame(OK), frame(REGISTER)
    data = UPGRADE + f1 + f2 + f3
    segs = stream(data, [len(UPGRADE) + 20, len(UPGRADE) + len(f1), len(UPGRADE) + len(f1) + len(f2)])
    del segs[2]                                          # the end of f1
    r = SipTcpReassembler(hole_timeout=1.0)
    assert feed(r, segs[:3], 0.0) == []
    assert r.expire(2.0) == [OK]
    assert feed(r, segs[3:], 2.0) == [REGISTER]
    assert r.stats["gaps"] == 1 and r.stats["ws_errors"] == 0


def test_http_that_is_not_a_sip_upgrade_is_skipped():
    r = SipTcpReassembler()
    other = UPGRADE.replace(b"Protocol: sip", b"Protocol: mqtt")
    out = feed(r, stream(other + b"INVITE sip:b SIP/2.0\r\nContent-Length: 0\r\n\r\n", [10]))
    assert out == [b"INVITE sip:b SIP/2.0\r\nContent-Length: 0\r\n\r\n"]
    assert r.stats["http_other"] == 1 and r.stats["ws_upgrades"] == 0
    # a header block that never ends is given up on, as a start line is
    r = SipTcpReassembler()
    assert feed(r, stream(b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 5000, [])) == []
    assert r.stats["desyncs"] == 1 and r.held_bytes < 20_000


def test_reader_holds_at_most_max_size():
    reader = WsSipReader(client=True, max_size=1000)
    stats = dict.fromkeys(("ws_messages", "ws_control", "ws_errors"), 0)
    big = frame(b"a" * 900, fin=False)
    assert reader.feed(big + frame(b"b" * 50, Opcode.CONT, fin=False), stats) == []
    assert reader.held == 950
    assert reader.feed(frame(b"c" * 100, Opcode.CONT), stats) == [] and stats["ws_errors"] == 1
    assert reader.held == 0
    assert reader.feed(frame(OK), stats) == [OK]
    assert repr(reader) == "WsSipReader(client, 0 bytes held)"


def test_fuzz_only_messages_or_counts():
    rnd = random.Random(7)
    good = UPGRADE + frame(REGISTER) + frame(REGISTER[:30], fin=False) + frame(REGISTER[30:], Opcode.CONT)
    for _ in range(300):
        b = bytearray(good)
        for _ in range(rnd.randrange(1, 6)):
            b[rnd.randrange(len(UPGRADE) - 4, len(b))] = rnd.randrange(256)
        cuts = sorted(rnd.sample(range(1, len(b)), 5))
        r = SipTcpReassembler(max_buffer=2048)
        for m in feed(r, stream(bytes(b), cuts)):
            assert isinstance(m, bytes)
        assert r.held_bytes <= 2 * 2048
