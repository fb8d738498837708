"""Time and memory of rtp2ws.net.tcpstream.SipTcpReassembler on hard stream shapes.

    python benchmarks/tcp_reassembly.py [--scale 1.0] [--memory] [--only NAME ...]

Scenarios (segments are built as ``Packet`` objects first; only ``feed`` is timed):

- ``hole-20k``: one SIP message of 20,000 bytes after its start line sent as
  one-byte segments, all behind a one-byte hole; then the hole arrives.
- ``hole-1MiB``: the same with 1 MiB of one-byte segments (the byte bound and,
  since the fix, the segment bound decide what is held).
- ``gappy-20k``: 20,000 one-byte segments each one byte apart (every other byte
  missing), so no two held segments are adjacent.
- ``gappy-1MiB``: the same with a million segments (1 MiB held, just within the
  byte bound): the memory that one-byte segments cost beyond their bytes.
- ``msg-1MiB``: a message with a 1,000,000-byte body arriving in 1,460-byte segments.
- ``headers-1MiB``: a header section of almost 1 MiB (never-ending headers, then
  the empty line) in 1,460-byte segments: the framing looks for the end of the
  headers as each segment arrives.
- ``lines-1byte``: 64 KiB of a start line arriving in one-byte segments.
- ``parse-folded``: ``sip.parse_message`` of the message such a stream can carry
  at most, 1 MiB with 200,000 folded continuation lines of one header.

``--scale`` multiplies every size (use it to measure the code before a fix,
whose times grow with the square of the size: 0.25 is 16 times cheaper).
``--memory`` also reports the tracemalloc peak of each scenario (slower).
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

from rtp2ws.net.packet import TCP_ACK, TCP_PSH, TCP_SYN, Packet
from rtp2ws.net.tcpstream import SipTcpReassembler
from rtp2ws.signalling.sip import parse_message

A = b"\xc0\x00\x02\x01"
B = b"\xc0\x00\x02\x02"
ISN = 4_000_000_000  # the stream wraps around 2**32 in the big scenarios


def seg(offset: int, data: bytes) -> Packet:
    return Packet(6, A, 5060, B, 40000, data, (ISN + offset) % 2**32, TCP_PSH | TCP_ACK)


def syn() -> Packet:
    return Packet(6, A, 5060, B, 40000, b"", (ISN - 1) % 2**32, TCP_SYN)


def message(body_len: int) -> bytes:
    head = (b"MESSAGE sip:bob@example.com SIP/2.0\r\nCall-ID: bench\r\nCSeq: 1 MESSAGE\r\n"
            b"Content-Length: %d\r\n\r\n" % body_len)
    return head + b"x" * body_len


def one_byte_behind_hole(n: int):
    data = message(n)
    first = data.index(b"\r\n") + 2 + 1
    yield syn()
    for i in range(first, len(data)):
        yield seg(i, data[i:i + 1])
    yield seg(0, data[:first])  # the hole


def one_byte(data: bytes):
    return (seg(i, data[i:i + 1]) for i in range(len(data)))


def gappy(n: int):
    yield syn()
    for i in range(n):
        yield seg(2 + 2 * i, b"y")
    yield seg(0, b"M")


def chunked(data: bytes, size: int = 1460):
    return (seg(i, data[i:i + size]) for i in range(0, len(data), size))


def big_headers(total: int) -> bytes:
    line = b"X-Pad: " + b"h" * 90 + b"\r\n"
    head = b"MESSAGE sip:bob@example.com SIP/2.0\r\n" + line * (total // len(line))
    return head + b"Content-Length: 0\r\n\r\n"


def scenarios(scale: float) -> dict:
    """Name -> a function that yields the scenario's segments, made as they are fed."""
    k = lambda n: max(1, int(n * scale))  # noqa: E731
    return {
        "hole-20k": lambda: one_byte_behind_hole(k(20_000)),
        "hole-1MiB": lambda: one_byte_behind_hole(k(1 << 20)),
        "gappy-20k": lambda: gappy(k(20_000)),
        "gappy-1MiB": lambda: gappy(k((1 << 20) - 2)),
        "msg-1MiB": lambda: chunked(message(k(1_000_000))),
        "headers-1MiB": lambda: chunked(big_headers(k(1_000_000))),
        "lines-1byte": lambda: one_byte(b"INVITE sip:" + b"u" * k(65_000)),
    }


def run(segments) -> tuple[float, SipTcpReassembler, int]:
    r = SipTcpReassembler()
    feed = r.feed
    out = 0
    t0 = time.perf_counter()
    for s in segments:
        out += len(feed(s, 1.0))
    return time.perf_counter() - t0, r, out


def peak_memory(segments) -> int:
    """tracemalloc's peak while feeding segments made one at a time (as a capture
    makes them: what the reassembler keeps is all that stays)."""
    tracemalloc.start()
    try:
        run(segments)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def time_folded(scale: float) -> str:
    lines = max(1, int(200_000 * scale))
    msg = b"MESSAGE sip:bob@example.com SIP/2.0\r\nSubject: a\r\n" + b" bc\r\n" * lines + b"\r\n"
    t0 = time.perf_counter()
    parse_message(msg)
    seconds = time.perf_counter() - t0
    return f"{'parse-folded':13} {len(msg):9,} bytes    {seconds:9.3f} s  ({lines:,} continuation lines)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--memory", action="store_true")
    ap.add_argument("--only", nargs="*")
    args = ap.parse_args()
    for name, make in scenarios(args.scale).items():
        if args.only and name not in args.only:
            continue
        segments = list(make())  # built before the clock starts
        seconds, r, out = run(segments)
        del segments
        st = r.stats
        line = (f"{name:13} {st['segments']:9,} segments {seconds:9.3f} s "
                f"{seconds / st['segments'] * 1e6:9.2f} µs/segment  messages {out}  "
                f"gaps {st['gaps']}  overflows {st['overflows']}  discarded {st['discarded_bytes']:,}")
        if args.memory:
            line += f"  peak {peak_memory(make()) / 2**20:.1f} MiB"
        print(line, flush=True)
    if not args.only or "parse-folded" in args.only:
        print(time_folded(args.scale), flush=True)


if __name__ == "__main__":
    main()
