"""SIP over WebSocket (net.wsstream) through tcpstream.SipTcpReassembler.feed, with an oracle."""

from __future__ import annotations

import struct

import atheris

from rtp2ws.net.packet import IPPROTO_TCP, TCP_ACK, TCP_SYN, Packet
from rtp2ws.net.tcpstream import SipTcpReassembler

from ..common import check, entry
from .tcp import LOSSES, _messages

A = b"\x0a\x00\x00\x01"
B = b"\x0a\x00\x00\x02"
HEADER = 14         # the longest frame header: 2 bytes, a 64-bit length, a mask key

INVARIANT = f"""\
feed(segment, now) never raises and returns a list of bytes.  Oracle: on a flow that
opens with a SIP WebSocket handshake (the client's GET, masked frames; or the server's
101, unmasked), SIP messages sent as text or binary messages (whole or fragmented, with
pings and pongs between fragments) and cut into TCP segments of any size (one-byte
ones too; now and then two swapped or one sent again) come out exactly, in order, each
once; up to a close frame and nothing after it; up to the first bad frame (a reserved
opcode or RSV bit, wrong masking, a length over max_size, a control frame too long or
fragmented, a continuation out of place, invalid UTF-8 in text, garbage) and then
anything (the reader starts again at the next segment).  Not when the reassembler gave
data up as its bounds document (counted).  A handshake for another subprotocol gives
no WebSocket messages.  After each segment the WebSocket reader holds at most max_size
bytes and a frame header ({HEADER}), the flow's other held bytes at most max_buffer.
No call takes more than the per-call limit."""

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


def _frame(op: int, payload: bytes, mask: bytes | None, fin: bool = True, rsv: int = 0,
           length: int | None = None) -> bytes:
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | rsv << 4 | op
    mb = 0x80 if mask is not None else 0
    if n < 126:
        head = bytes([b0, mb | n])
    elif n < 65536:
        head = bytes([b0, mb | 126]) + struct.pack("!H", n)
    else:
        head = bytes([b0, mb | 127]) + struct.pack("!Q", n)
    if mask is None:
        return head + payload
    key = (mask * (len(payload) // 4 + 1))[:len(payload)]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(len(payload), "big")
    return head + mask + masked


def _handshake(fdp, client: bool) -> tuple[bytes, bool]:
    """(the header block, whether it is a SIP WebSocket one)."""
    proto = fdp.PickValueInList(["sip", "sip", "sip", "chat", "sip, chat"])
    if client:
        head = (f"GET / HTTP/1.1\r\nHost: 10.0.0.2\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: {proto}\r\n"
                f"Sec-WebSocket-Version: 13\r\n\r\n")
    else:
        head = (f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: {proto}\r\n\r\n")
    return head.encode(), "sip" in proto


def _bad(fdp, mask: bytes | None, max_size: int) -> tuple[bytes, str]:
    """A frame websockets refuses (or garbage), and what it is."""
    how = fdp.ConsumeIntInRange(0, 8)
    body = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 40))
    if how == 0:
        return _frame(fdp.PickValueInList([3, 4, 5, 6, 7, 11, 12, 15]), body, mask), "reserved opcode"
    if how == 1:
        return _frame(OP_TEXT, b"OPTIONS", mask, rsv=fdp.ConsumeIntInRange(1, 7)), "RSV bits"
    if how == 2:
        wrong = None if mask is not None else b"\x01\x02\x03\x04"
        return _frame(OP_BINARY, body, wrong), "wrong masking"
    if how == 3:
        n = fdp.PickValueInList([max_size + 1, 1 << 63, (1 << 64) - 1, 65536 + max_size])
        return _frame(OP_BINARY, b"", mask, length=n)[:10 + (4 if mask else 0)], "length over max_size"
    if how == 4:
        return _frame(OP_PING, bytes(126 + len(body)), mask), "control frame over 125 bytes"
    if how == 5:
        return _frame(OP_PING, body[:10], mask, fin=False), "fragmented control frame"
    if how == 6:
        return _frame(OP_CONT, body, mask), "continuation with no message"
    if how == 7:
        return _frame(OP_TEXT, b"INVITE \xff\xfe", mask), "invalid UTF-8"
    return body + b"\xff\x7f", "garbage"


def _control(fdp, mask: bytes | None) -> bytes:
    return _frame(fdp.PickValueInList([OP_PING, OP_PONG]), fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 125)), mask)


def _frames(fdp, client: bool, max_size: int) -> tuple[bytes, list[bytes], str]:
    """(the frames' bytes, the messages sent before anything bad, how they end:
    "", "close" or what was bad)."""
    out: list[bytes] = []
    sent: list[bytes] = []
    for _ in range(fdp.ConsumeIntInRange(1, 4)):
        mask = fdp.ConsumeBytes(4).ljust(4, b"\x00") if client else None
        kind = fdp.ConsumeIntInRange(0, 9)
        if kind <= 5:
            for msg in _messages(fdp):
                op = OP_TEXT if fdp.ConsumeBool() else OP_BINARY
                if op == OP_TEXT:
                    try:
                        msg.decode("utf-8")
                    except UnicodeDecodeError:
                        op = OP_BINARY
                pieces = fdp.ConsumeIntInRange(1, 4) if len(msg) > 1 else 1
                cuts = sorted({fdp.ConsumeIntInRange(0, len(msg)) for _ in range(pieces - 1)} | {0, len(msg)})
                if cuts == [0]:
                    cuts = [0, 0]
                for i in range(len(cuts) - 1):
                    last = i == len(cuts) - 2
                    out.append(_frame(op if i == 0 else OP_CONT, msg[cuts[i]:cuts[i + 1]], mask, fin=last))
                    if not last and fdp.ConsumeIntInRange(0, 3) == 0:
                        out.append(_control(fdp, mask))        # control frames may come between fragments
                if len(msg) > max_size:
                    return b"".join(out), sent, "a message over max_size"
                sent.append(msg)
        elif kind <= 7:
            out.append(_control(fdp, mask))
        elif kind == 8:
            out.append(_frame(OP_CLOSE, struct.pack("!H", 1000) + b"bye", mask))
            out.append(_frame(OP_TEXT, b"OPTIONS sip:x SIP/2.0\r\n\r\n", mask))      # never read
            return b"".join(out), sent, "close"
        else:
            frame, what = _bad(fdp, mask, max_size)
            out.append(frame)
            out.append(_frame(OP_TEXT, b"OPTIONS sip:x SIP/2.0\r\n\r\n", mask))      # perhaps read, perhaps not
            return b"".join(out), sent, what
    return b"".join(out), sent, ""


def _check_bounds(r: SipTcpReassembler) -> None:
    for flow in r._flows.values():
        check(len(flow.buf) + flow.pending_bytes <= r.max_buffer,
              f"flow holds {len(flow.buf) + flow.pending_bytes} bytes, max_buffer {r.max_buffer}")
        if flow.ws is not None:
            check(flow.ws.held <= flow.ws.max_size + HEADER,
                  f"WebSocket reader holds {flow.ws.held} bytes, max_size {flow.ws.max_size}")


def run(data: bytes, clock) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    r = SipTcpReassembler(max_buffer=1 << fdp.ConsumeIntInRange(10, 20))
    client = fdp.ConsumeBool()
    head, sip = _handshake(fdp, client)
    frames, sent, end = _frames(fdp, client, r.max_buffer)
    stream = head + frames
    now = 1000.0
    src, sport, dst, dport = (A, 40000, B, 80) if client else (B, 80, A, 40000)

    def feed(seq: int, payload: bytes, flags: int = TCP_ACK) -> list[bytes]:
        out = clock.call(r.feed, Packet(IPPROTO_TCP, src, sport, dst, dport, payload, seq & 0xFFFFFFFF, flags), now)
        check(type(out) is list and all(type(m) is bytes for m in out), "feed returned something other than [bytes]")
        _check_bounds(r)
        return out

    isn = fdp.ConsumeIntInRange(0, 0xFFFFFFFF)
    got = feed(isn, b"", TCP_SYN)
    cuts = []
    pos = 0
    tiny = fdp.ConsumeIntInRange(0, 15) == 15 and len(stream) <= 3000
    while pos < len(stream):
        n = 1 if tiny else fdp.ConsumeIntInRange(1, len(stream) - pos) if fdp.remaining_bytes() else 1460
        cuts.append((pos, pos + n))
        pos += n
    order = list(range(len(cuts)))
    for i in range(len(order) - 1):
        if fdp.ConsumeIntInRange(0, 7) == 7:
            order[i], order[i + 1] = order[i + 1], order[i]
    lost_before = {k: r.stats.get(k, 0) for k in LOSSES}
    for i in order:
        s, e = cuts[i]
        got += feed(isn + 1 + s, stream[s:e])
        if fdp.ConsumeIntInRange(0, 15) == 15:         # sent again
            got += feed(isn + 1 + s, stream[s:e])
        if fdp.ConsumeIntInRange(0, 31) == 31:          # another flow's garbage
            clock.call(r.feed, Packet(IPPROTO_TCP, dst, dport, src, sport, fdp.ConsumeBytes(30), 7, TCP_ACK), now)
    if any(r.stats.get(k, 0) != v for k, v in lost_before.items()):
        return
    if not sip:
        check(r.stats["ws_upgrades"] == 0 and r.stats["ws_messages"] == 0,
              "WebSocket messages after another subprotocol's handshake")     # (SIP framing may find a start line)
        return
    check(r.stats["ws_upgrades"] == 1, "the SIP WebSocket handshake was not seen")
    if end in ("", "close"):
        check(got == sent, f"{len(sent)} messages sent ({end or 'no close'}) came out as {len(got)} "
                           f"({[len(m) for m in sent]} -> {[len(m) for m in got]})")
    else:
        check(got[:len(sent)] == sent, f"{len(sent)} messages sent before {end} came out as "
                                       f"{[len(m) for m in got]} ({[len(m) for m in sent]})")


TestOneInput = entry("wsstream", run)
