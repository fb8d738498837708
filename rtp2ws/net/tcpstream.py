"""TCP stream reassembly and SIP message framing (sans-I/O).

``SipTcpReassembler.feed(packet, now)`` takes decoded TCP segments (see
``rtp2ws.net.packet``) and returns the SIP messages they complete, in stream
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
line that looks like a request or status line.  A Content-Length that
cannot be held (more than ``max_buffer``, or more than ``MAX_LENGTH_DIGITS``
significant digits) is counted in ``bad_content_length`` and framing resumes
at the next start line after that message's.

Memory and work are bounded, whatever arrives:

* per flow, held bytes (unframed plus out-of-order) are within
  ``max_buffer`` once a segment has been taken: beyond it the oldest hole is
  skipped (``overflows``, ``gaps``), the messages that completes are framed,
  and the next hole is skipped while the flow is still over; unframed data
  without a message boundary is dropped (``overflows``); dropped bytes are
  counted in ``discarded_bytes``;
* per flow, at most ``max_segments`` runs of out-of-order data are held (a
  segment that continues a held run joins it, so a stream that goes on in
  order behind one lost segment is one run); a segment that would make one
  more skips the oldest hole in the same way (``segment_overflows``);
* at most ``max_flows`` flows and ``max_bytes`` held bytes over all flows:
  beyond either, the least recently seen flows are forgotten
  (``flows_evicted``, ``flows_evicted_bytes``);
* data held behind a hole for ``hole_timeout`` seconds of capture time (2 s)
  stops waiting: the hole is skipped (``holes_timed_out``, ``gaps``).  A
  mirror that lost a segment never sees it again (the receiver got it, so
  nothing is retransmitted), and a quiet SIP trunk would otherwise hold every
  later message until ``max_buffer`` fills or the connection goes idle; a real
  retransmission comes well within 2 s (RFC 6298's initial RTO is 1 s);
* a flow that has seen no segment for ``idle_timeout`` seconds of capture
  time (120 s, as Kamailio's and OpenSIPS's ``tcp_connection_lifetime`` and
  the usual two-minute flush of gopacket's assembler) is forgotten
  (``flows_expired``).  ``next_deadline()`` says when the next flow or hole
  is due; ``expire(now)`` forgets the flow or skips the hole (returning the
  messages that completes), and ``feed`` does so first, so what comes out
  never depends on how often the owner ticks.  A flow that resumes after
  expiry starts mid-stream again at its next segment, which usually begins
  a message.

SIP over WebSocket (RFC 7118, ``ws://``: plain TCP) is read on any flow: where a start
line would be, an HTTP request or status line begins a header block (at most
``wsstream.MAX_HTTP_HEAD`` bytes); when it is the client's upgrade to WebSocket with the
``sip`` subprotocol, or the server's ``101`` that picked it, the rest of that direction
is WebSocket frames, each whole text or binary message one SIP message
(``rtp2ws.net.wsstream``; its counters are this reassembler's).  Skipping a hole
restarts the frame reader at the next data.

Held runs sit in a heap by stream offset, so a segment costs O(log n)
however many are held, and framing resumes where it stopped: each byte is
scanned a bounded number of times, whatever the segmentation.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from heapq import heapify, heappop, heappush
from typing import NamedTuple

from .packet import TCP_FIN, TCP_RST, TCP_SYN, Packet
from .wsstream import HTTP_LINE, MAX_HTTP_HEAD, WsSipReader, upgrade

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
# A Content-Length of more significant digits than this (10**10 bytes and up) cannot
# be held whatever max_buffer is; bounding it keeps int() cheap and within Python's
# limit on the digits it converts.
MAX_LENGTH_DIGITS = 10
_END_OF_HEADERS = b"\r\n\r\n"

# Framing phases of a flow.  ``scan`` is relative to the start of the message
# being framed (the start of ``buf`` between calls), so that framing resumes
# where it stopped instead of looking at the unframed bytes again:
#
#   phase      what is known                              scan
#   _START     nothing (keep-alive CRLFs may come first)   0
#   _LINE      the start line has begun: only token        bytes looked at, all token
#              characters so far, no LF                    characters
#   _LINE_SP   the start line has begun "token SP", no LF  bytes looked at for the LF
#   _HEAD      the start line is valid; headers not ended   where to look for CRLFCRLF next
#   _BODY      the headers are whole                        the message's length
#   _HTTP      an HTTP request or status line: its header   where to look for CRLFCRLF next
#              block is not whole yet
_START, _LINE, _LINE_SP, _HEAD, _BODY, _HTTP = range(6)


class FlowKey(NamedTuple):
    src: bytes
    sport: int
    dst: bytes
    dport: int


def _seq_diff(a: int, b: int) -> int:
    """``a - b`` in sequence space, as a signed 32-bit value."""
    d = (a - b) % SEQ_MOD
    return d - SEQ_MOD if d >= SEQ_HALF else d


def _length(digits: bytes) -> int | None:
    """The value of a Content-Length's digits; None past MAX_LENGTH_DIGITS significant ones."""
    digits = digits.lstrip(b"0")
    return int(digits or b"0") if len(digits) <= MAX_LENGTH_DIGITS else None


class _Flow:
    __slots__ = ("next_seq", "delivered", "isn", "heap", "runs", "ends", "pending_bytes", "buf", "fin_seq",
                 "last_seen", "in_sync", "phase", "scan", "hole_since", "hole_serial", "key", "ws")

    def __init__(self, next_seq: int, isn: int | None, now: float) -> None:
        self.next_seq = next_seq  # sequence number of the next byte to deliver
        self.delivered = 0  # stream offset of next_seq: bytes delivered (or skipped) so far
        self.isn = isn  # initial sequence number if the SYN was seen
        # Out-of-order data as runs of contiguous bytes, by stream offset:
        self.heap: list[int] = []  # start offsets, a heap (the same keys as runs)
        self.runs: dict[int, bytearray] = {}  # start offset -> bytes held from there
        self.ends: dict[int, int] = {}  # end offset -> start offset, to extend a run in place
        self.pending_bytes = 0  # bytes in runs
        self.buf = bytearray()  # in-order bytes not yet framed
        self.fin_seq: int | None = None  # sequence number just past the last byte
        self.last_seen = now
        self.in_sync = True  # False from a desync until the next start line
        self.phase = _START  # framing of the message at the start of buf (see above)
        self.scan = 0
        self.hole_since: float | None = None  # capture time data began to wait behind the hole
        self.hole_serial = 0  # which entry of the reassembler's hole heap is this flow's
        self.key: FlowKey | None = None  # set by feed
        self.ws: WsSipReader | None = None  # after a SIP WebSocket handshake: its frames

    @property
    def held(self) -> int:
        """Bytes held: unframed, out of order, in the WebSocket reader."""
        return len(self.buf) + self.pending_bytes + (self.ws.held if self.ws is not None else 0)


class SipTcpReassembler:
    """Reassemble TCP flows and cut them into SIP messages."""

    def __init__(
        self,
        *,
        max_buffer: int = 1 << 20,
        max_segments: int = 1024,
        idle_timeout: float = 120.0,
        hole_timeout: float = 2.0,
        max_flows: int = 65536,
        max_bytes: int = 64 << 20,
    ) -> None:
        if max_buffer < 1:
            raise ValueError("max_buffer must be at least 1")
        if max_segments < 1:
            raise ValueError("max_segments must be at least 1")
        if not idle_timeout > 0:
            raise ValueError("idle_timeout must be positive")
        if not hole_timeout > 0:
            raise ValueError("hole_timeout must be positive")
        if max_flows < 1:
            raise ValueError("max_flows must be at least 1")
        if max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        self.max_buffer = max_buffer
        self.max_segments = max_segments
        self.idle_timeout = idle_timeout
        self.hole_timeout = hole_timeout
        self.max_flows = max_flows
        self.max_bytes = max_bytes
        # Ordered by last activity: feed() moves a flow to the end.  An OrderedDict,
        # because a dict whose front keeps being removed finds its first entry slowly.
        self._flows: OrderedDict[FlowKey, _Flow] = OrderedDict()
        self._now = float("-inf")  # the latest capture time seen (capture time may step back)
        # (due, serial, key, flow) of flows with data waiting behind a hole; an entry is
        # stale once its flow is gone or waits since another time (checked when popped).
        self._holes: list[tuple[float, int, FlowKey, _Flow]] = []
        self._serial = 0
        self.held_bytes = 0  # unframed plus out-of-order bytes over all flows
        self.stats: dict[str, int] = {
            "segments": 0,
            "messages": 0,
            "flows_opened": 0,
            "flows_closed": 0,
            "flows_reset": 0,
            "flows_expired": 0,
            "flows_evicted": 0,
            "flows_evicted_bytes": 0,
            "out_of_order": 0,
            "retransmissions": 0,
            "overlaps": 0,
            "gaps": 0,
            "overflows": 0,
            "segment_overflows": 0,
            "desyncs": 0,
            "discarded_bytes": 0,
            "bad_content_length": 0,
            "holes_timed_out": 0,
            "ws_upgrades": 0,
            "ws_messages": 0,
            "ws_control": 0,
            "ws_errors": 0,
            "http_other": 0,
        }

    def __repr__(self) -> str:
        return f"SipTcpReassembler({len(self._flows)} flows, {self.held_bytes} bytes held)"

    def __len__(self) -> int:
        return len(self._flows)

    # -- input ----------------------------------------------------------------

    def feed(self, pkt: Packet, now: float) -> list[bytes]:
        stats = self.stats
        stats["segments"] += 1
        if now > self._now:
            self._now = now
        now = self._now
        flows = self._flows
        due = self.next_deadline()
        early = self.expire(now) if due is not None and due <= now else []
        key = FlowKey(pkt.src, pkt.sport, pkt.dst, pkt.dport)
        flags = pkt.tcp_flags
        seq = pkt.tcp_seq
        data = pkt.payload
        flow = flows.pop(key, None)  # re-inserted below, at the end (most recent)

        if flags & TCP_RST:
            if flow is not None:
                self._discard(flow)
                stats["flows_reset"] += 1
            return early

        if flags & TCP_SYN:
            if flow is None or flow.isn != seq:
                if flow is not None:
                    self._discard(flow)
                    stats["flows_closed"] += 1
                flow = self._open((seq + 1) % SEQ_MOD, seq, now)
            seq = (seq + 1) % SEQ_MOD  # the SYN occupies one sequence number
        elif flow is None:
            if not data:
                return early  # a pure ACK or FIN of a flow we never saw
            flow = self._open(seq, None, now)

        flows[key] = flow
        flow.key = key
        flow.last_seen = now
        held = flow.held
        if flags & TCP_FIN:
            flow.fin_seq = (seq + len(data)) % SEQ_MOD
        if data:
            self._add_segment(flow, seq, data)
        messages = self._frame(flow)
        while flow.runs and len(flow.buf) + flow.pending_bytes > self.max_buffer:
            # Too much held behind holes: skip the oldest, frame what that
            # completes, and go on while still over.  Framing between skips keeps
            # every whole message; one skip per segment is not enough, as the
            # runs behind later holes can each be nearly a segment long.
            self._skip_hole(flow)
            messages += self._frame(flow)
        if early:
            messages = early + messages
        if len(flow.buf) > self.max_buffer:
            # No message boundary within max_buffer bytes: give up on this
            # data; framing resynchronises on the next start line.
            stats["overflows"] += 1
            stats["discarded_bytes"] += len(flow.buf)
            flow.buf.clear()
            flow.phase, flow.scan = _START, 0
        self.held_bytes += flow.held - held
        if flow.fin_seq is not None and flow.next_seq == flow.fin_seq:
            del flows[key]
            self._discard(flow)
            stats["flows_closed"] += 1
        elif self.held_bytes > self.max_bytes:
            self._evict_bytes(key)
        return messages

    def next_deadline(self) -> float | None:
        """Capture time at which the least recently seen flow has been idle for
        ``idle_timeout``, or data has waited ``hole_timeout`` behind a hole
        (``expire`` then forgets the flow or skips the hole), or None."""
        flows = self._flows
        if not flows:
            return None
        due = flows[next(iter(flows))].last_seen + self.idle_timeout
        hole = self._next_hole()
        return hole if hole is not None and hole < due else due

    def _next_hole(self) -> float | None:
        holes = self._holes
        while holes:
            due, serial, key, flow = holes[0]
            if flow.hole_serial == serial and flow.hole_since is not None and self._flows.get(key) is flow:
                return due
            heappop(holes)            # stale: the hole filled, was skipped, or the flow went
        return None

    def expire(self, now: float) -> list[bytes]:
        """Skip holes data has waited behind for ``hole_timeout``, and forget flows
        idle for ``idle_timeout`` seconds at ``now``; returns the messages skipping
        completed, in the order of the holes' deadlines.

        Called at or after ``next_deadline()``, it skips or forgets at least what
        was due then, so a timer armed on the deadline always makes progress."""
        if now > self._now:
            self._now = now
        messages: list[bytes] = []
        holes = self._holes
        while True:
            due = self._next_hole()
            if due is None or due > now:
                break
            _, _, key, flow = heappop(holes)
            held = flow.held
            self.stats["holes_timed_out"] += 1
            self._skip_hole(flow, timed_out=True)
            messages += self._frame(flow)
            self.held_bytes += flow.held - held
        flows = self._flows
        timeout = self.idle_timeout
        while flows:
            key = next(iter(flows))
            flow = flows[key]
            if flow.last_seen + timeout > now:  # the same sum as next_deadline()
                break
            del flows[key]
            self._discard(flow)
            self.stats["flows_expired"] += 1
        return messages

    # -- flows --------------------------------------------------------------------

    def _open(self, next_seq: int, isn: int | None, now: float) -> _Flow:
        flows = self._flows
        if len(flows) >= self.max_flows:
            self._discard(flows.popitem(last=False)[1])
            self.stats["flows_evicted"] += 1
        self.stats["flows_opened"] += 1
        return _Flow(next_seq, isn, now)

    def _evict_bytes(self, keep: FlowKey) -> None:
        """Over ``max_bytes`` in all: forget the least recently seen flows, not ``keep``."""
        flows = self._flows
        while self.held_bytes > self.max_bytes:
            oldest = next(iter(flows))
            if oldest == keep:
                break
            self._discard(flows.pop(oldest))
            self.stats["flows_evicted_bytes"] += 1

    def _discard(self, flow: _Flow) -> None:
        dropped = flow.held
        if flow.ws is not None:
            flow.ws.restart()
        if dropped:
            self.held_bytes -= dropped
            self.stats["discarded_bytes"] += dropped
        flow.buf.clear()
        flow.heap.clear()
        flow.runs.clear()
        flow.ends.clear()
        flow.pending_bytes = 0
        flow.phase, flow.scan = _START, 0
        flow.hole_since = None

    # -- sequence space ---------------------------------------------------------

    def _add_segment(self, flow: _Flow, seq: int, data: bytes) -> None:
        delta = _seq_diff(seq, flow.next_seq)
        if delta <= 0:
            self._append(flow, delta, data)
            if flow.runs:
                self._drain(flow)
            return
        # Ahead of the stream: hold it until the hole before it fills.
        stats = self.stats
        stats["out_of_order"] += 1
        start = flow.delivered + delta
        runs, ends = flow.runs, flow.ends
        run = runs.get(start)
        if run is not None:
            # A held run starts here: this is a copy of it, or a longer one.
            if len(run) >= len(data):
                stats["retransmissions"] += 1
                return
            end = start + len(run)
            if ends.get(end) == start:
                del ends[end]
            added = len(data) - len(run)
            run += data[len(run):]
            ends[start + len(run)] = start
        else:
            head = ends.pop(start, None)
            if head is not None:
                # The stream goes on in order behind a hole: extend that run.
                run = runs[head]
                run += data
                ends[start + len(data)] = head
            elif len(runs) >= self.max_segments:
                # One run too many: skip the oldest hole, then place the segment.
                # (The skip frees a run, so this recursion is one level deep.)
                stats["segment_overflows"] += 1
                self._skip_hole(flow)
                self._add_segment(flow, seq, data)
                return
            else:
                runs[start] = bytearray(data)
                heappush(flow.heap, start)
                ends[start + len(data)] = start
                if flow.hole_since is None:
                    self._wait(flow)
            added = len(data)
        flow.pending_bytes += added

    def _append(self, flow: _Flow, delta: int, data: bytes | bytearray) -> None:
        """Deliver ``data`` that starts ``-delta`` bytes before ``next_seq``."""
        if delta < 0:
            if len(data) <= -delta:
                self.stats["retransmissions"] += 1
                return
            self.stats["overlaps"] += 1
            data = data[-delta:]
        flow.buf += data
        flow.next_seq = (flow.next_seq + len(data)) % SEQ_MOD
        flow.delivered += len(data)

    def _drain(self, flow: _Flow) -> None:
        """Deliver held runs that the stream has reached."""
        heap, runs, ends = flow.heap, flow.runs, flow.ends
        filled = False
        while heap and heap[0] <= flow.delivered:
            start = heappop(heap)
            run = runs.pop(start)
            end = start + len(run)
            if ends.get(end) == start:
                del ends[end]
            flow.pending_bytes -= len(run)
            self._append(flow, start - flow.delivered, run)
            filled = True
        if filled:
            # The hole data waited behind is gone: the next one (if any) waits from now.
            if not runs:
                flow.hole_since = None
            elif flow.hole_since != self._now:
                self._wait(flow)

    def _wait(self, flow: _Flow) -> None:
        """Data now waits behind a hole: arm its ``hole_timeout``."""
        flow.hole_since = self._now
        self._serial += 1
        flow.hole_serial = self._serial
        holes = self._holes
        assert flow.key is not None  # feed() keys a flow before it takes data
        heappush(holes, (self._now + self.hole_timeout, self._serial, flow.key, flow))
        if len(holes) > 2 * len(self._flows) + 64:
            # Mostly stale entries (holes that filled or moved on): keep the live ones,
            # so the heap stays within about two entries per flow.
            flows = self._flows
            holes[:] = [e for e in holes if e[3].hole_serial == e[1] and e[3].hole_since is not None
                        and flows.get(e[2]) is e[3]]
            heapify(holes)

    def _skip_hole(self, flow: _Flow, timed_out: bool = False) -> None:
        """Too much held behind a hole, or held too long (probably lost in capture): jump it."""
        if not timed_out:
            self.stats["overflows"] += 1
        self.stats["gaps"] += 1
        # The partial message before the hole can never complete.
        self.stats["discarded_bytes"] += len(flow.buf)
        flow.buf.clear()
        flow.phase, flow.scan = _START, 0
        if flow.ws is not None:
            self.stats["discarded_bytes"] += flow.ws.held
            flow.ws.restart()
        start = flow.heap[0]
        flow.next_seq = (flow.next_seq + start - flow.delivered) % SEQ_MOD
        flow.delivered = start
        self._drain(flow)

    # -- SIP framing -------------------------------------------------------------

    def _frame(self, flow: _Flow) -> list[bytes]:
        buf = flow.buf
        size = len(buf)
        if not size:
            return []
        stats = self.stats
        if flow.ws is not None:
            data = bytes(buf)
            buf.clear()
            messages = flow.ws.feed(data, stats)
            stats["messages"] += len(messages)
            return messages
        out: list[bytes] = []
        pos = 0  # start of the message being framed
        phase, scan = flow.phase, flow.scan
        while True:
            if phase == _START:
                # Keep-alives (CRLF, CRLFCRLF) between messages.
                while pos < size and buf[pos] in b"\r\n":
                    pos += 1
                if pos >= size:
                    break
                phase, scan = _LINE, 0
            if phase == _BODY:
                end = pos + scan
                if end > size:
                    break
                out.append(bytes(buf[pos:end]))
                pos = end
                phase, scan = _START, 0
                continue
            if phase == _HTTP:
                hdr_end = buf.find(_END_OF_HEADERS, pos + scan)
                if hdr_end < 0:
                    if size - pos > MAX_HTTP_HEAD:
                        pos = self._resync(flow, pos, size)
                        phase, scan = _START, 0
                        continue
                    scan = max(size - pos - 3, scan)
                    break
                ws, client = upgrade(bytes(buf[pos:hdr_end]))
                pos = hdr_end + 4
                phase, scan = _START, 0
                if not ws:
                    stats["http_other"] += 1
                    continue
                stats["ws_upgrades"] += 1
                flow.ws = WsSipReader(client, self.max_buffer)
                out += flow.ws.feed(bytes(buf[pos:size]), stats)
                stats["messages"] += len(out)
                buf.clear()
                flow.phase, flow.scan = _START, 0
                return out
            if phase != _HEAD:  # _LINE or _LINE_SP
                eol = buf.find(b"\n", pos + scan)
                if eol < 0:
                    # Partial first line; give up early if it cannot be SIP.
                    if size - pos > MAX_START_LINE:
                        pos = self._resync(flow, pos, size)
                        phase, scan = _START, 0
                        continue
                    if phase == _LINE:
                        token = _TOKEN_PREFIX.match(buf, pos + scan)
                        assert token is not None  # the pattern matches the empty string
                        end = token.end()
                        if end < size:
                            if buf[end] != 0x20:
                                pos = self._resync(flow, pos, size)
                                phase, scan = _START, 0
                                continue
                            phase = _LINE_SP
                    scan = size - pos
                    break
                if not _START_LINE.match(buf, pos, eol):
                    if HTTP_LINE.match(buf, pos, eol):
                        phase, scan = _HTTP, max(eol - 1 - pos, 0)
                        continue
                    pos = self._resync(flow, pos, size)
                    phase, scan = _START, 0
                    continue
                flow.in_sync = True
                # CRLFCRLF can begin at the start line's CR.
                phase, scan = _HEAD, max(eol - 1 - pos, 0)
            hdr_end = buf.find(_END_OF_HEADERS, pos + scan)
            if hdr_end < 0:
                scan = max(size - pos - 3, scan)
                break
            m = _CONTENT_LENGTH.search(buf, pos, hdr_end + 2)
            if m is not None:
                length = _length(m.group(1))
            else:
                length = 0
                if _CONTENT_LENGTH_ANY.search(buf, pos, hdr_end + 2):
                    stats["bad_content_length"] += 1
            if length is None or length > self.max_buffer:
                # Cannot be held: skip past this start line and resync.
                stats["bad_content_length"] += 1
                pos = self._resync(flow, pos, size)
                phase, scan = _START, 0
                continue
            phase, scan = _BODY, hdr_end + 4 + length - pos
        flow.phase, flow.scan = phase, scan
        if pos:
            del buf[:pos]
        stats["messages"] += len(out)
        return out

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
