"""TCP stream reassembly and SIP message framing (sans-I/O).

``SipTcpReassembler.feed(packet, now)`` takes decoded TCP segments (see
``rtp2ws.packet``) and returns the SIP messages they complete, in stream
order, one ``bytes`` per message (start line, headers, body).

Each direction of a connection is a separate flow keyed by
``(src, sport, dst, dport)``.  A SYN sets the initial sequence number; a flow
seen mid-stream starts at its first segment that carries data.  Segments
ahead of the next expected byte wait until the hole fills; data already
delivered is trimmed from retransmissions.  Sequence numbers compare modulo
2**32.  FIN (once the stream is complete up to it) and RST end the flow.

Framing follows RFC 3261 section 18.3 (and 7.5 for keep-alives): a message
is its header section up to the first empty line, then ``Content-Length``
(compact form ``l``) bytes of body; a missing length means no body.  CRLFs
between messages (RFC 5626 keep-alives) are skipped.  When the stream does
not start with a SIP start line (capture started mid-message, a lost
segment, garbage), the event is counted and framing resumes at the next
line that looks like a request or status line.

Memory is bounded: per flow, held bytes (unframed plus out-of-order) never
exceed ``max_buffer``; when they would, the oldest hole is skipped or the
unframed data is dropped, and this is counted.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from .packet import TCP_FIN, TCP_RST, TCP_SYN, Packet

__all__ = ["SipTcpReassembler", "FlowKey"]

SEQ_MOD = 1 << 32
SEQ_HALF = 1 << 31

# RFC 3261 25.1:
#   Request-Line = Method SP Request-URI SP SIP-Version CRLF
#   Method = token; token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
#   Status-Line = SIP-Version SP Status-Code SP Reason-Phrase CRLF
# Matched per line (re.M) without the CRLF; lenient about the reason phrase.
_START_LINE_RE = rb"(?:[A-Za-z0-9.!%*_+`'~-]+ [^ \r\n]+ SIP/2\.0|SIP/2\.0 [1-6][0-9][0-9](?: [^\r\n]*)?)\r?$"
_START_LINE = re.compile(_START_LINE_RE, re.M)  # match() at a line start
_NEXT_START_LINE = re.compile(rb"^" + _START_LINE_RE, re.M)  # search() for one
# message-header = field-name HCOLON value; Content-Length / compact "l".
_CONTENT_LENGTH = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*([0-9]+)[ \t]*\r?$", re.I | re.M)
_CONTENT_LENGTH_ANY = re.compile(rb"^(?:content-length|l)[ \t]*:", re.I | re.M)
_TOKEN_PREFIX = re.compile(rb"[A-Za-z0-9.!%*_+`'~/-]*")  # method token, or "SIP/2.0"
MAX_START_LINE = 8192
_END_OF_HEADERS = b"\r\n\r\n"


class FlowKey(NamedTuple):
    src: bytes
    sport: int
    dst: bytes
    dport: int


def _seq_diff(a: int, b: int) -> int:
    """``a - b`` in sequence space, as a signed 32-bit value."""
    d = (a - b) % SEQ_MOD
    return d - SEQ_MOD if d >= SEQ_HALF else d


class _Flow:
    __slots__ = ("next_seq", "isn", "pending", "pending_bytes", "buf", "fin_seq", "last_seen", "in_sync")

    def __init__(self, next_seq: int, isn: int | None, now: float) -> None:
        self.next_seq = next_seq  # sequence number of the next byte to deliver
        self.isn = isn  # initial sequence number if the SYN was seen
        self.pending: dict[int, bytes] = {}  # out-of-order segments by sequence number
        self.pending_bytes = 0
        self.buf = bytearray()  # in-order bytes not yet framed
        self.fin_seq: int | None = None  # sequence number just past the last byte
        self.last_seen = now
        self.in_sync = True  # False from a desync until the next start line


class SipTcpReassembler:
    """Reassemble TCP flows and cut them into SIP messages."""

    def __init__(
        self,
        *,
        max_buffer: int = 1 << 20,
        idle_timeout: float = 300.0,
        max_flows: int = 65536,
    ) -> None:
        if max_buffer < 1:
            raise ValueError("max_buffer must be at least 1")
        if max_flows < 1:
            raise ValueError("max_flows must be at least 1")
        self.max_buffer = max_buffer
        self.idle_timeout = idle_timeout
        self.max_flows = max_flows
        # Ordered by last activity: feed() moves a flow to the end.
        self._flows: dict[FlowKey, _Flow] = {}
        self.stats: dict[str, int] = {
            "segments": 0,
            "messages": 0,
            "flows_opened": 0,
            "flows_closed": 0,
            "flows_reset": 0,
            "flows_expired": 0,
            "flows_evicted": 0,
            "out_of_order": 0,
            "retransmissions": 0,
            "overlaps": 0,
            "gaps": 0,
            "overflows": 0,
            "desyncs": 0,
            "discarded_bytes": 0,
            "bad_content_length": 0,
        }

    def __repr__(self) -> str:
        return f"SipTcpReassembler({len(self._flows)} flows)"

    def __len__(self) -> int:
        return len(self._flows)

    # -- input ----------------------------------------------------------------

    def feed(self, pkt: Packet, now: float) -> list[bytes]:
        stats = self.stats
        stats["segments"] += 1
        key = FlowKey(pkt.src, pkt.sport, pkt.dst, pkt.dport)
        flags = pkt.tcp_flags
        seq = pkt.tcp_seq
        data = pkt.payload
        flows = self._flows
        flow = flows.pop(key, None)  # re-inserted below, at the end (most recent)

        if flags & TCP_RST:
            if flow is not None:
                self._discard(flow)
                stats["flows_reset"] += 1
            return []

        if flags & TCP_SYN:
            if flow is None or flow.isn != seq:
                if flow is not None:
                    self._discard(flow)
                    stats["flows_closed"] += 1
                flow = self._open((seq + 1) % SEQ_MOD, seq, now)
            seq = (seq + 1) % SEQ_MOD  # the SYN occupies one sequence number
        elif flow is None:
            if not data:
                return []  # a pure ACK or FIN of a flow we never saw
            flow = self._open(seq, None, now)

        flows[key] = flow
        flow.last_seen = now
        if flags & TCP_FIN:
            flow.fin_seq = (seq + len(data)) % SEQ_MOD
        if data:
            self._add_segment(flow, seq, data)
        messages = self._frame(flow)
        if len(flow.buf) > self.max_buffer:
            # No message boundary within max_buffer bytes: give up on this
            # data; framing resynchronises on the next start line.
            stats["overflows"] += 1
            stats["discarded_bytes"] += len(flow.buf)
            flow.buf.clear()
        if flow.fin_seq is not None and flow.next_seq == flow.fin_seq:
            del flows[key]
            self._discard(flow)
            stats["flows_closed"] += 1
        return messages

    def expire(self, now: float) -> None:
        """Forget flows idle for ``idle_timeout`` seconds."""
        flows = self._flows
        limit = now - self.idle_timeout
        while flows:
            key = next(iter(flows))
            flow = flows[key]
            if flow.last_seen > limit:
                break
            del flows[key]
            self._discard(flow)
            self.stats["flows_expired"] += 1

    # -- sequence space ---------------------------------------------------------

    def _open(self, next_seq: int, isn: int | None, now: float) -> _Flow:
        flows = self._flows
        if len(flows) >= self.max_flows:
            oldest = next(iter(flows))
            self._discard(flows.pop(oldest))
            self.stats["flows_evicted"] += 1
        self.stats["flows_opened"] += 1
        return _Flow(next_seq, isn, now)

    def _discard(self, flow: _Flow) -> None:
        dropped = len(flow.buf) + flow.pending_bytes
        if dropped:
            self.stats["discarded_bytes"] += dropped
        flow.buf.clear()
        flow.pending.clear()
        flow.pending_bytes = 0

    def _add_segment(self, flow: _Flow, seq: int, data: bytes) -> None:
        stats = self.stats
        delta = _seq_diff(seq, flow.next_seq)
        if delta > 0:
            # Ahead of the stream: hold it until the hole before it fills.
            stats["out_of_order"] += 1
            held = flow.pending.get(seq)
            if held is not None and len(held) >= len(data):
                stats["retransmissions"] += 1
                return
            flow.pending[seq] = data
            flow.pending_bytes += len(data) - (len(held) if held is not None else 0)
            if flow.pending_bytes + len(flow.buf) > self.max_buffer:
                self._skip_hole(flow)
            return
        self._append(flow, delta, data)
        if flow.pending:
            self._drain(flow)

    def _append(self, flow: _Flow, delta: int, data: bytes) -> None:
        """Deliver ``data`` that starts ``-delta`` bytes before ``next_seq``."""
        if delta < 0:
            if len(data) <= -delta:
                self.stats["retransmissions"] += 1
                return
            self.stats["overlaps"] += 1
            data = data[-delta:]
        flow.buf += data
        flow.next_seq = (flow.next_seq + len(data)) % SEQ_MOD

    def _drain(self, flow: _Flow) -> None:
        """Deliver held segments that the stream has reached."""
        pending = flow.pending
        while pending:
            seq = min(pending, key=lambda s: _seq_diff(s, flow.next_seq))
            delta = _seq_diff(seq, flow.next_seq)
            if delta > 0:
                return
            data = pending.pop(seq)
            flow.pending_bytes -= len(data)
            self._append(flow, delta, data)

    def _skip_hole(self, flow: _Flow) -> None:
        """Too much held behind a hole (probably lost in capture): jump it."""
        self.stats["overflows"] += 1
        self.stats["gaps"] += 1
        # The partial message before the hole can never complete.
        self.stats["discarded_bytes"] += len(flow.buf)
        flow.buf.clear()
        flow.next_seq = min(flow.pending, key=lambda s: _seq_diff(s, flow.next_seq))
        self._drain(flow)

    # -- SIP framing -------------------------------------------------------------

    def _frame(self, flow: _Flow) -> list[bytes]:
        buf = flow.buf
        if not buf:
            return []
        stats = self.stats
        out: list[bytes] = []
        pos = 0
        size = len(buf)
        while pos < size:
            # Keep-alives (CRLF, CRLFCRLF) between messages.
            while pos < size and buf[pos] in b"\r\n":
                pos += 1
            if pos >= size:
                break
            eol = buf.find(b"\n", pos)
            if eol < 0:
                # Partial first line; give up early if it cannot be SIP.
                if not self._could_start(buf, pos, size):
                    pos = self._resync(flow, pos, size)
                    continue
                break
            if not _START_LINE.match(buf, pos, eol):
                pos = self._resync(flow, pos, size)
                continue
            flow.in_sync = True
            hdr_end = buf.find(_END_OF_HEADERS, pos)
            if hdr_end < 0:
                break
            body = hdr_end + 4
            m = _CONTENT_LENGTH.search(buf, pos, hdr_end + 2)
            if m is not None:
                length = int(m.group(1))
            else:
                length = 0
                if _CONTENT_LENGTH_ANY.search(buf, pos, hdr_end + 2):
                    stats["bad_content_length"] += 1
            if length > self.max_buffer:
                # Cannot be held: skip past this start line and resync.
                stats["bad_content_length"] += 1
                pos = self._resync(flow, pos, size)
                continue
            end = body + length
            if end > size:
                break
            out.append(bytes(buf[pos:end]))
            pos = end
        if pos:
            del buf[:pos]
        stats["messages"] += len(out)
        return out

    @staticmethod
    def _could_start(buf: bytearray, pos: int, size: int) -> bool:
        """Whether the unterminated line at ``pos`` may still become a start line."""
        if size - pos > MAX_START_LINE:
            return False
        end = _TOKEN_PREFIX.match(buf, pos).end()
        return end == size or buf[end] == 0x20

    def _resync(self, flow: _Flow, pos: int, size: int) -> int:
        """The line at ``pos`` is not a start line: skip to the next one that is.

        Without one, keep only the last, unterminated line, which may become
        one.  A desync is counted once, however many segments it spans.
        """
        if flow.in_sync:
            flow.in_sync = False
            self.stats["desyncs"] += 1
        buf = flow.buf
        nl = buf.find(b"\n", pos)
        if nl < 0:
            new = size
        else:
            m = _NEXT_START_LINE.search(buf, nl + 1)
            new = m.start() if m is not None else buf.rfind(b"\n", nl, size) + 1
        self.stats["discarded_bytes"] += new - pos
        return new
