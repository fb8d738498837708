"""The discard sink: the WebSocket server the bench streams to, in a process of its own.

    python -m rtp2ws.bench sink [--listen 127.0.0.1:0] [--tick-ms 0]

A minimal WebSocket server (``_DiscardProtocol``): the handshake, then frame
headers walked and payloads skipped without unmasking, pings answered and
closes echoed, frames counted.  It takes as little CPU as possible from the
process being measured, and its own CPU is never counted.  After the handshake
(done here, with asyncio) each connection's socket goes to the C drain,
``rtp2ws._wsframe.Drain`` (native/drain.c: a thread of its own, without the GIL,
an epoll loop over every connection); without the extension, or with
``RTP2WS_NO_NATIVE=1``, the frames are walked here by ``WalkerPy``, the drain's
Python twin (the same counts and replies from the same bytes).  It prints
``listening on ws://HOST:PORT/audio`` when ready and its counters as one JSON
line when stopped (SIGTERM or SIGINT).  ``SinkProcess`` starts it, or
``rtp2ws sink``, and stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..speedups import load_native

if TYPE_CHECKING:
    from .._wsframe import Drain

CONTROL_MAX = 125      # the longest control frame payload (RFC 6455 5.5)


class WalkerPy:
    """One connection's frames after the handshake, walked: the Python twin of
    ``rtp2ws._wsframe.DrainWalker`` (native/drain.c), which the C drain runs per
    connection.  Sans-I/O: ``feed(data)`` takes the bytes as they were read (a frame
    may be cut anywhere) and returns the replies to write, a pong with the unmasked
    payload for every ping and the close frame echoed (its status code); ``binary``
    and ``text`` count data frames, whose headers are walked and payloads skipped
    without unmasking.  Once a close frame is met (or a control frame longer than
    125 bytes, a protocol error: no reply) ``closing`` is set, the connection is to
    be closed, and nothing more is walked."""

    def __init__(self) -> None:
        self.binary = 0
        self.text = 0
        self.closing = False
        self.head = b""          # an incomplete frame header, or control frame, carried over
        self.skip = 0            # payload bytes still to skip

    def feed(self, data: bytes) -> bytes:
        if self.closing:
            return b""
        if self.skip >= len(data):
            self.skip -= len(data)
            return b""
        if self.head:
            data = self.head + data[self.skip:]
            self.head = b""
            pos = 0
        else:
            pos = self.skip
        self.skip = 0
        replies = b""
        n = len(data)
        while pos < n:
            if n - pos < 2:
                self.head = data[pos:]
                return replies
            b0, b1 = data[pos], data[pos + 1]
            length = b1 & 0x7F
            hl = 2 + (4 if b1 & 0x80 else 0) + (2 if length == 126 else 8 if length == 127 else 0)
            op = b0 & 0x0F
            if op >= 8 and length > CONTROL_MAX:           # a control frame that long: a protocol error
                self.closing = True
                return replies
            if n - pos < hl:
                self.head = data[pos:]
                return replies
            if length == 126:
                length = int.from_bytes(data[pos + 2:pos + 4], "big")
            elif length == 127:
                length = int.from_bytes(data[pos + 2:pos + 10], "big")
            if op >= 8:                                    # control frame: needs its payload
                if n - pos < hl + length:
                    self.head = data[pos:]
                    return replies
                mask = data[pos + hl - 4:pos + hl] if b1 & 0x80 else b"\0\0\0\0"
                payload = bytes(c ^ mask[i % 4] for i, c in enumerate(data[pos + hl:pos + hl + length]))
                if op == 8:
                    self.closing = True
                    return replies + b"\x88" + bytes([len(payload[:2])]) + payload[:2]
                if op == 9:
                    replies += b"\x8a" + bytes([len(payload)]) + payload
            elif op == 2:
                self.binary += 1
            elif op == 1:
                self.text += 1
            pos += hl + length
        self.skip = pos - n
        return replies


class _DiscardProtocol(asyncio.Protocol):
    """Server side of a WebSocket connection that takes every frame and throws it
    away: the handshake, then the frames walked (``WalkerPy``), or the socket handed
    over to the C drain (``rtp2ws._wsframe.Drain``) when there is one."""

    GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    def __init__(self, stats: dict, drain: Drain | None = None) -> None:
        self.stats = stats
        self.drain = drain
        self.transport: asyncio.Transport | None = None
        self.shaken = False
        self.handed = False      # the drain has the socket: its counters count it from then on
        self.head = b""          # incomplete handshake
        self.walker = WalkerPy()

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.stats["connections"] += 1

    def connection_lost(self, exc) -> None:
        if not self.handed:
            self.stats["closed"] += 1

    def data_received(self, data: bytes) -> None:
        st = self.stats
        transport = self.transport
        assert transport is not None  # asyncio calls connection_made first
        st["bytes"] += len(data)
        if not self.shaken:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                if len(self.head) > 65536:
                    transport.close()
                return
            key = b""
            for line in self.head[:end].split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"sec-websocket-key":
                    key = value.strip()
            accept = base64.b64encode(hashlib.sha1(key + self.GUID).digest())
            reply = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            self.shaken = True
            data, self.head = self.head[end + 4:], b""
            sock = transport.get_extra_info("socket")
            if self.drain is not None and sock is not None:
                # the drain writes the reply, walks what followed the request and reads
                # the rest from its own duplicate of the socket; asyncio lets go of ours
                self.drain.add(sock.fileno(), reply, data)
                self.handed = True
                transport.close()
                return
            transport.write(reply)
            if not data:
                return
        walker = self.walker
        binary, text = walker.binary, walker.text
        replies = walker.feed(data)
        st["binary"] += walker.binary - binary
        st["text"] += walker.text - text
        if replies:
            transport.write(replies)
        if walker.closing:
            transport.close()


# --tick-ms: the C drain reads a socket at most once per tick (unless it streams, as at
# --speed max): a 20 ms frame stream then gives 5 frames to a recv instead of 1 at 100 ms,
# and a recv costs about 4 us here (most of it the ACK it sends).  Measured with 1,200
# connections of 20 ms frames: 2.3 us a frame with no tick, 0.9 us at 100 ms.  But pongs
# and close echoes wait up to a tick, and a client that awaits each close in turn (the
# bench's reference pipeline, at realtime) falls behind by as much: so 0 by default.
DRAIN_TICK_MS = 0.0


def _drain(tick_ms: float = DRAIN_TICK_MS) -> Drain | None:
    """The C drain, unless rtp2ws._wsframe is not built or RTP2WS_NO_NATIVE is set."""
    native = load_native("_wsframe")
    return None if native is None else native.Drain(tick_ms=tick_ms)


async def _serve_discard(host: str, port: int, tick_ms: float = DRAIN_TICK_MS) -> None:
    from ..ws.sender import raise_fd_limit

    raise_fd_limit(65536)
    stats = {"connections": 0, "closed": 0, "binary": 0, "text": 0, "bytes": 0}
    drain = _drain(tick_ms)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _DiscardProtocol(stats, drain), host, port, backlog=4096)
    bound = server.sockets[0].getsockname()
    print(f"listening on ws://{bound[0]}:{bound[1]}/audio", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    if drain is not None:
        counts = drain.counts()
        drain.stop()
        for name in ("closed", "binary", "text", "bytes"):    # its connections were counted here
            stats[name] += counts[name]
    print(json.dumps(stats), flush=True)
    server.close()


class SinkProcess:
    """The WebSocket server the benchmark streams to, in a process of its own."""

    def __init__(self, kind: str = "discard", out_dir: str | None = None, *, listen: str = "127.0.0.1:0",
                 prefix: Sequence[str] = ()) -> None:
        """``listen``: HOST:PORT (port 0: any free one); ``prefix``: a command the sink runs
        under (e.g. ``ip netns exec NS`` and ``taskset -c CPUS``: it must exec the sink,
        so that its signals reach it)."""
        self.kind = kind
        self._tmp = None
        if kind == "discard":
            cmd = [sys.executable, "-m", "rtp2ws.bench", "sink", "--listen", listen]
        elif kind == "rtp2ws":
            if out_dir is None:
                self._tmp = tempfile.mkdtemp(prefix="rtp2ws-bench-sink-")
                out_dir = self._tmp
            cmd = [sys.executable, "-m", "rtp2ws.cli", "sink", "--listen", listen, "--out-dir", out_dir]
        else:
            raise ValueError(f"unknown sink {kind!r}: discard or rtp2ws")
        self.proc = subprocess.Popen([*prefix, *cmd], stdout=subprocess.PIPE, text=True)
        stdout = self.proc.stdout
        assert stdout is not None  # stdout=PIPE
        line = stdout.readline()
        if "ws://" not in line:
            self.proc.kill()
            raise RuntimeError(f"the {kind} sink did not start: {line!r}")
        url = line.split()[-1]
        self.url = url if url.rstrip("/").endswith("audio") else url.rstrip("/") + "/audio"

    def stop(self) -> dict | None:
        """Stop the sink; the discard sink's counters (connections, frames, bytes)."""
        stats = None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=30)
            for line in out.splitlines():
                if line.startswith("{"):
                    stats = json.loads(line)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
        return stats



def main(argv: list[str]) -> int:
    """``python -m rtp2ws.bench sink [--listen HOST:PORT] [--tick-ms MS]``: serve until SIGTERM or SIGINT."""
    sp = argparse.ArgumentParser(prog="python -m rtp2ws.bench sink")
    sp.add_argument("--listen", default="127.0.0.1:0")
    sp.add_argument("--tick-ms", type=float, default=DRAIN_TICK_MS,
                    help="the C drain reads each socket at most once per tick, unless it streams: "
                         "cheaper per frame at realtime, but pongs and close echoes wait up to a tick "
                         f"(default {DRAIN_TICK_MS:g}: as soon as data comes)")
    a = sp.parse_args(argv)
    host, _, port = a.listen.rpartition(":")
    from ..ws.bridge import new_event_loop

    loop = new_event_loop()
    try:
        loop.run_until_complete(_serve_discard(host or "127.0.0.1", int(port), a.tick_ms))
    finally:
        loop.close()
    return 0
