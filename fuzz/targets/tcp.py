"""tcpstream.SipTcpReassembler.feed: TCP segments in any order, SIP framing, with an oracle."""

from __future__ import annotations

import atheris

from rtp2ws.net import tcpstream
from rtp2ws.net.packet import IPPROTO_TCP, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, Packet
from rtp2ws.net.tcpstream import SipTcpReassembler

from .. import gen
from ..common import check, entry

A = b"\x0a\x00\x00\x01"
B = b"\x0a\x00\x00\x02"

INVARIANT = """\
feed(segment, now) never raises and returns a list of bytes.  Oracle: a stream of SIP
messages (each with a correct Content-Length, keep-alive CRLFs between them), opened by
a SYN and cut into segments that are delivered in any order, with retransmissions and
overlaps, is returned exactly: the same messages, in order, each once, as soon as the
stream is contiguous up to its end, unless the reassembler gave data up as its bounds
document (and counted it: overflows, segment_overflows, gaps, holes_timed_out,
flows_evicted, flows_expired).  After each segment, held bytes are within max_buffer per
flow and within max_bytes in all (or max_buffer, when one flow is all there is), held
runs within max_segments per flow, flows within max_flows.  Other flows' garbage in
between changes none of that.
No call takes more than the per-call limit (many one-byte segments included), and the
work is not quadratic: at most 32 sequence-number comparisons per segment fed, plus 256
(counted, so the bound does not depend on the machine's speed)."""

COMPARISONS_PER_SEGMENT = 32
MSS = 1460
MAX_SEGMENT = 65535 - 20 - 20    # the most TCP payload one IPv4 packet can carry (IPv6's 16-bit length: about as much)


# counters of data the reassembler gave up on, by its documented bounds (max_buffer,
# max_segments, max_flows, max_bytes, hole and idle timeouts): the oracle holds when none moved
LOSSES = ("overflows", "segment_overflows", "gaps", "holes_timed_out", "flows_evicted", "flows_evicted_bytes",
          "flows_expired")


def _messages(fdp) -> list[bytes]:
    out = []
    for _ in range(fdp.ConsumeIntInRange(1, 4)):
        method = fdp.PickValueInList(["INVITE", "BYE", "ACK", "OPTIONS"])
        body = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 300))
        if fdp.ConsumeIntInRange(0, 7) == 0:
            body = b"x" * fdp.ConsumeIntInRange(0, 30000)       # a long one
        head = (f"{method} sip:b@10.0.0.2 SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.1\r\nCall-ID: c{len(out)}@t\r\n"
                f"{'l' if fdp.ConsumeBool() else 'Content-Length'}: {len(body)}\r\n\r\n").encode()
        if not body and fdp.ConsumeBool():
            head = head.replace(b"Content-Length: 0\r\n", b"").replace(b"l: 0\r\n", b"")
        out.append(head + body)
    return out


def _check_bounds(r: SipTcpReassembler) -> None:
    check(len(r._flows) <= r.max_flows, "more flows than max_flows")
    check(r.held_bytes <= max(r.max_bytes, r.max_buffer), f"{r.held_bytes} bytes held, max_bytes {r.max_bytes}")
    for flow in r._flows.values():
        check(len(flow.buf) + flow.pending_bytes <= r.max_buffer,
              f"flow holds {len(flow.buf) + flow.pending_bytes} bytes, max_buffer {r.max_buffer}")
        check(len(flow.runs) <= r.max_segments, f"flow holds {len(flow.runs)} runs, max_segments {r.max_segments}")


def run(data: bytes, clock) -> None:
    counted = [0, 0]      # sequence comparisons, segments fed
    seq_diff = tcpstream._seq_diff

    def counting(a, b):
        counted[0] += 1
        return seq_diff(a, b)

    tcpstream._seq_diff = counting
    try:
        _run(data, clock, counted)
    finally:
        tcpstream._seq_diff = seq_diff
    check(counted[0] <= COMPARISONS_PER_SEGMENT * counted[1] + 256,
          f"SipTcpReassembler made {counted[0]} sequence comparisons for {counted[1]} segments")


def _run(data: bytes, clock, counted) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    r = SipTcpReassembler(max_buffer=1 << fdp.ConsumeIntInRange(10, 20), max_flows=fdp.ConsumeIntInRange(1, 64))
    now = 1000.0

    def feed(src, sport, dst, dport, seq, flags, payload):
        counted[1] += 1
        out = clock.call(r.feed, Packet(IPPROTO_TCP, src, sport, dst, dport, payload, seq & 0xFFFFFFFF, flags), now)
        check(type(out) is list and all(type(m) is bytes for m in out), "feed returned something other than [bytes]")
        return out

    for round_ in range(fdp.ConsumeIntInRange(1, 3)):
        op = fdp.ConsumeIntInRange(0, 9)
        if op <= 5:
            # the oracle: one SYN-opened stream, fuzz-cut and fuzz-ordered
            msgs = _messages(fdp)
            stream = b"".join((b"\r\n" if fdp.ConsumeIntInRange(0, 3) == 0 else b"") + m for m in msgs)
            isn = fdp.ConsumeIntInRange(0, 0xFFFFFFFF)
            sport = 20000 + 2 * round_             # a new flow each time
            tiny = fdp.ConsumeIntInRange(0, 15) == 15 and len(stream) <= 4000      # one-byte segments
            # (rare choices test for the top of their range: an input that ran out reads the bottom)
            cuts = []
            pos = 0
            while pos < len(stream):
                if tiny:
                    n = 1
                elif fdp.remaining_bytes():
                    n = min(MAX_SEGMENT, fdp.ConsumeIntInRange(1, max(1, len(stream) - pos)))
                else:       # input used up: full-sized segments, not the 1-byte ones ConsumeIntInRange would give
                    n = MSS
                cuts.append((pos, pos + n))
                pos += n
            order = list(range(len(cuts)))
            how = fdp.ConsumeIntInRange(0, 3)
            if how == 1:
                order.reverse()
            elif how == 2:
                for i in range(len(order) - 1, 0, -1):
                    j = fdp.ConsumeIntInRange(0, i)
                    order[i], order[j] = order[j], order[i]
            lost_before = {k: r.stats.get(k, 0) for k in LOSSES}
            got = feed(A, sport, B, 5060, isn, TCP_SYN, b"")
            check(got == [], "messages out of a SYN")
            fits = len(stream) <= r.max_buffer
            for k, i in enumerate(order):
                s, e = cuts[i]
                if fdp.ConsumeIntInRange(0, 7) == 7:           # a retransmission with a bit more before it
                    s = max(0, s - fdp.ConsumeIntInRange(0, 8))
                got += feed(A, sport, B, 5060, isn + 1 + s, TCP_ACK, stream[s:e])
                if fdp.ConsumeIntInRange(0, 15) == 15:         # another flow's garbage
                    feed(B, 5060, A, sport + 1, fdp.ConsumeIntInRange(0, 0xFFFFFFFF), TCP_ACK,
                         fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 40)))
                _check_bounds(r)
            gave_up = any(r.stats.get(k, 0) != v for k, v in lost_before.items())
            if fits and r.max_flows >= 2 and not gave_up:
                check(got == msgs, f"stream of {len(msgs)} messages came out as {len(got)} "
                                   f"({[len(m) for m in msgs]} -> {[len(m) for m in got]})")
        else:
            # anything: segments of fuzz bytes on a few flows, any flags, any sequence numbers
            for _ in range(fdp.ConsumeIntInRange(1, 24)):
                src, dst = (A, B) if fdp.ConsumeBool() else (B, A)
                flags = fdp.PickValueInList([TCP_ACK, TCP_SYN, TCP_FIN | TCP_ACK, TCP_RST, 0, 0xFF])
                payload = gen.sip_message(fdp) if fdp.ConsumeIntInRange(0, 2) == 0 else \
                    fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 200))
                feed(src, fdp.ConsumeIntInRange(5060, 5062), dst, 5060, fdp.ConsumeIntInRange(0, 0xFFFFFFFF) if
                     fdp.ConsumeIntInRange(0, 3) == 0 else fdp.ConsumeIntInRange(0, 4000), flags, payload)
                _check_bounds(r)
        now += fdp.PickValueInList([0.0, 0.5, 301.0])
        clock.call(r.expire, now)


TestOneInput = entry("tcp", run)
