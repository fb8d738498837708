"""The bench's discard sink (rtp2ws.bench.discard): the C drain (rtp2ws._wsframe.Drain and
DrainWalker, native/drain.c) that takes each connection after its handshake, and its Python
twin WalkerPy: the same counts and replies from the same bytes cut anywhere, pings answered
and closes echoed over a real socket, and every frame of a real rtp2ws run counted."""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import time

import pytest

from rtp2ws.bench import capgen, discard, harness
from rtp2ws.speedups import load_native

from skips import native_skip_reason

_wsframe = load_native("_wsframe")
needs_native = pytest.mark.skipif(_wsframe is None, reason=native_skip_reason())

REPLY = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"


def frame(op: int, payload: bytes, mask: bytes | None = b"\x12\x34\x56\x78", fin: bool = True) -> bytes:
    """One client frame (masked unless ``mask`` is None), the shortest length encoding."""
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | op])
    bit = 0x80 if mask is not None else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + struct.pack(">H", n)
    else:
        head += bytes([bit | 127]) + struct.pack(">Q", n)
    if mask is None:
        return head + payload
    return head + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(payload))


def walkers() -> list:
    """Both twins, or only the Python one without the extension."""
    return [discard.WalkerPy] + ([_wsframe.DrainWalker] if _wsframe is not None else [])


# ------------------------------------------------------------------ the walk, either twin

@pytest.mark.parametrize("twin", walkers(), ids=lambda t: t.__name__)
def test_walk_counts_data_frames_and_answers_control_frames(twin):
    """Every length encoding counted, fragments by their first frame only, a ping answered
    with its unmasked payload (an unmasked ping too), a pong and a reserved opcode ignored,
    the close echoed with its status code and nothing after it walked."""
    w = twin()
    data = (frame(2, b"a" * 125) + frame(2, b"b" * 126) + frame(2, b"c" * 65536) + frame(1, b"hi")
            + frame(2, b"x", fin=False) + frame(0, b"y")
            + frame(9, b"ping-1") + frame(9, b"", mask=None) + frame(9, b"u" * 125, mask=None)
            + frame(0xA, b"pong") + frame(3, b"reserved")
            + frame(8, b"\x03\xe8going away") + frame(2, b"after the close"))
    replies = w.feed(data)
    assert replies == b"\x8a\x06ping-1" + b"\x8a\x00" + b"\x8a\x7d" + b"u" * 125 + b"\x88\x02\x03\xe8"
    assert (w.binary, w.text, w.closing) == (4, 1, True)
    assert w.feed(frame(9, b"more") + frame(2, b"more")) == b"" and w.binary == 4


@pytest.mark.parametrize("twin", walkers(), ids=lambda t: t.__name__)
def test_walk_carries_frames_cut_anywhere(twin):
    """Fed a byte at a time: headers of every size and control payloads carried across feeds;
    a data payload skipped across them; a close without a code echoed empty."""
    w = twin()
    data = frame(2, b"z" * 300) + frame(9, b"abc") + frame(2, bytes(70000)) + frame(1, b"t") + frame(8, b"")
    replies = b"".join(w.feed(data[i:i + 1]) for i in range(len(data)))
    assert replies == b"\x8a\x03abc\x88\x00"
    assert (w.binary, w.text, w.closing) == (2, 1, True)


@pytest.mark.parametrize("twin", walkers(), ids=lambda t: t.__name__)
@pytest.mark.parametrize("second", [b"\x89\xfe", b"\x88\xff", b"\x89\x7e"])
def test_a_control_frame_longer_than_125_bytes_closes_without_a_reply(twin, second):
    """RFC 6455 5.5: a control frame's payload is at most 125 bytes; a longer one is a
    protocol error known from its first two bytes: the walk stops, nothing is answered."""
    w = twin()
    assert w.feed(frame(9, b"ok") + frame(2, b"d")) == b"\x8a\x02ok"
    assert w.feed(second) == b""
    assert w.closing and w.binary == 1
    assert w.feed(frame(9, b"late")) == b""


def random_stream(rng: random.Random, count: int) -> bytes:
    """``count`` random client frames (random payload bytes, so headers look like payload and
    the other way round), sometimes ending in a close, or in a control frame too long, and junk."""
    out = bytearray()
    for _ in range(count):
        kind = rng.choices(["binary", "text", "cont", "ping", "pong", "reserved"], [40, 10, 5, 25, 10, 3])[0]
        mask = rng.randbytes(4) if rng.random() < 0.9 else None
        if kind in ("ping", "pong"):
            size = rng.choice([0, 1, 2, 3, 4, 5, 124, 125, rng.randrange(126)])
        else:
            size = rng.choice([0, 1, 125, 126, 127, 65535, 65536, rng.randrange(2000), rng.randrange(200, 700)])
        op = {"binary": 2, "text": 1, "cont": 0, "ping": 9, "pong": 0xA, "reserved": rng.choice([3, 0xB])}[kind]
        out += frame(op, rng.randbytes(size), mask, fin=rng.random() < 0.9)
    end = rng.random()
    if end < 0.4:
        out += frame(8, rng.randbytes(rng.choice([0, 2, 9])), rng.randbytes(4))
        out += rng.randbytes(rng.randrange(50))
    elif end < 0.5:
        out += bytes([0x89, rng.choice([0x80 | 126, 0x80 | 127, 126, 0xFF])]) + rng.randbytes(20)
    return bytes(out)


@pytest.mark.skipif(_wsframe is None, reason=native_skip_reason())
@pytest.mark.parametrize("seed", range(40))
def test_c_walker_twins_the_python_walker_on_random_streams_cut_at_random(seed):
    """DrainWalker (what the C drain runs per connection) and WalkerPy, fed the same bytes cut
    at the same random places (single bytes too): after every feed the same replies, counts
    and closing."""
    assert _wsframe is not None
    rng = random.Random(seed)
    data = random_stream(rng, rng.randrange(1, 60))
    cuts = sorted(set(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randrange(1, 80)))))
    if rng.random() < 0.3:                                   # a stretch fed a byte at a time
        at = rng.randrange(len(data))
        cuts = sorted(set(cuts) | set(range(at, min(len(data), at + 40))))
    py, c = discard.WalkerPy(), _wsframe.DrainWalker()
    replies = b""
    for a, b in zip([0, *cuts], [*cuts, len(data)]):
        got_py, got_c = py.feed(data[a:b]), c.feed(data[a:b])
        assert got_c == got_py, (seed, a, b)
        assert (c.binary, c.text, c.closing) == (py.binary, py.text, py.closing), (seed, a, b)
        replies += got_py
    whole = discard.WalkerPy()                                # and the cuts change nothing
    assert whole.feed(data) == replies
    assert (whole.binary, whole.text, whole.closing) == (py.binary, py.text, py.closing)


# ------------------------------------------------------------------ the C drain over real sockets

def pair() -> tuple[socket.socket, socket.socket]:
    """(client, server) ends of a loopback TCP connection."""
    with socket.create_server(("127.0.0.1", 0)) as srv:
        client = socket.create_connection(srv.getsockname())
        server, _ = srv.accept()
    client.settimeout(10)
    return client, server


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    got = b""
    while len(got) < n:
        chunk = sock.recv(n - len(got))
        if not chunk:
            break
        got += chunk
    return got


def wait_for(cond, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


@needs_native
@pytest.mark.parametrize("tick_ms", [0.0, 50.0])
def test_drain_answers_pings_and_echoes_the_close_over_a_real_socket(tick_ms):
    """A connection handed over mid-frame: the reply written first, the head walked, a ping
    split across the head and later sends answered, large frames read in many recvs, the
    close echoed and the socket then closed (the client reads EOF); counts as sent.  With
    a tick or without."""
    assert _wsframe is not None
    drain = _wsframe.Drain(tick_ms=tick_ms)
    client, server = pair()
    try:
        ping = frame(9, b"ack 4200")
        head = frame(2, b"a" * 10) + ping[:3]
        drain.add(server.fileno(), REPLY, head)
        server.close()                                          # the drain holds its own duplicate
        assert recv_exactly(client, len(REPLY)) == REPLY
        sent = 0
        rest = ping[3:] + frame(2, bytes(200000)) + frame(1, b"start")
        for i in range(0, len(rest), 7000):
            client.sendall(rest[i:i + 7000])
            sent += len(rest[i:i + 7000])
        assert recv_exactly(client, 10) == b"\x8a\x08ack 4200"
        second = frame(9, b"keepalive")
        for i in range(len(second)):                            # a byte at a time
            client.sendall(second[i:i + 1])
            sent += 1
            time.sleep(0.002)
        assert recv_exactly(client, 11) == b"\x8a\x09keepalive"
        close = frame(8, b"\x03\xe8bye")
        client.sendall(close)
        sent += len(close)
        assert recv_exactly(client, 4) == b"\x88\x02\x03\xe8"
        assert client.recv(100) == b""                           # closed after the echo
        assert wait_for(lambda: drain.counts()["closed"] == 1)
        assert drain.counts() == {"connections": 1, "closed": 1, "binary": 2, "text": 1, "bytes": sent}
    finally:
        client.close()
        drain.stop()


@needs_native
def test_drain_serves_many_connections_and_counts_a_peer_that_goes_away():
    """Connections that end without a close frame are counted closed; stop() closes those
    still open (their clients read EOF) and add() then refuses."""
    assert _wsframe is not None
    drain = _wsframe.Drain()
    ends = [pair() for _ in range(20)]
    try:
        for client, server in ends:
            drain.add(server.fileno())
            server.close()
        for i, (client, _) in enumerate(ends):
            client.sendall(frame(2, bytes(640)) * (i + 1) + frame(9, bytes([i])))
        for i, (client, _) in enumerate(ends):
            assert recv_exactly(client, 3) == b"\x8a\x01" + bytes([i])
        for client, _ in ends[:5]:
            client.close()
        assert wait_for(lambda: drain.counts()["closed"] == 5)
        assert drain.counts()["binary"] == sum(range(1, 21)) and drain.counts()["connections"] == 20
        drain.stop()
        for client, _ in ends[5:]:
            assert client.recv(10) == b""
        assert drain.counts()["closed"] == 20
        spare_client, spare_server = pair()
        with spare_client, spare_server, pytest.raises(ValueError, match="stopped"):
            drain.add(spare_server.fileno())
    finally:
        for client, _ in ends:
            client.close()
        drain.stop()


@needs_native
def test_drain_tick_gathers_frames_but_never_throttles_a_streaming_socket():
    """With a tick the drain reads a socket at most once per tick, so a pong waits for it,
    but not a handed-over connection's reply (add() writes it); a socket that streams (a recv of 64 KB or more) is read again at once: 32 MB through
    one socket take far less than the 128 ticks of one 256 KB read per tick."""
    assert _wsframe is not None
    with pytest.raises(ValueError, match="tick_ms"):
        _wsframe.Drain(tick_ms=-1)
    drain = _wsframe.Drain(tick_ms=250.0)
    client, server = pair()
    try:
        drain.add(server.fileno())
        server.close()
        client.sendall(frame(9, b"first"))
        assert recv_exactly(client, 7) == b"\x8a\x05first"          # idle: read at once
        t0 = time.monotonic()
        client.sendall(frame(9, b"second"))
        assert recv_exactly(client, 8) == b"\x8a\x06second"         # within the tick of that wake
        assert time.monotonic() - t0 >= 0.1
        client.sendall(frame(9, b"third"))                            # the thread pauses again
        other, other_server = pair()
        with other:
            t0 = time.monotonic()
            drain.add(other_server.fileno(), REPLY)                    # the reply goes at once
            other_server.close()
            assert recv_exactly(other, len(REPLY)) == REPLY
            assert time.monotonic() - t0 < 0.1
            assert recv_exactly(client, 7) == b"\x8a\x05third"
        t0 = time.monotonic()
        chunk = frame(2, bytes(1 << 20), mask=None)
        for _ in range(32):
            client.sendall(chunk)
        client.sendall(frame(9, b"done"))
        assert recv_exactly(client, 6) == b"\x8a\x04done"
        assert time.monotonic() - t0 < 8.0
        assert drain.counts()["binary"] == 32
    finally:
        client.close()
        drain.stop()


# ------------------------------------------------------------------ the sink process, either walker

SINKS = [pytest.param("native", marks=needs_native), "python"]


@pytest.fixture
def sink_walker(request, monkeypatch):
    """The sink process with the C drain, or with RTP2WS_NO_NATIVE=1 (its Python walker)."""
    if request.param == "python":
        monkeypatch.setenv("RTP2WS_NO_NATIVE", "1")
    return request.param


@pytest.mark.parametrize("sink_walker", SINKS, indirect=True)
def test_sink_counts_frames_answers_pings_and_echoes_closes(sink_walker):
    """``python -m rtp2ws.bench sink`` with real websockets clients, with and without the C
    drain: frames of every length encoding counted, pings answered, closes echoed, the same
    counters either way."""
    from websockets.asyncio.client import connect

    sink = discard.SinkProcess("discard")

    async def client(i):
        async with connect(sink.url, max_size=None, compression=None) as ws:
            for size in (100, 1000, 70000):
                await ws.send(bytes([i]) * size)
            await ws.send("text")
            for _ in range(3):
                await asyncio.wait_for(await ws.ping(), 10)

    async def clients():
        await asyncio.gather(*(client(i) for i in range(5)))

    try:
        asyncio.run(clients())
        time.sleep(0.2)
    finally:
        stats = sink.stop()
    assert stats == {"connections": 5, "closed": 5, "binary": 15, "text": 5, "bytes": stats["bytes"]}
    assert stats["bytes"] > 5 * 71100


@pytest.mark.parametrize("sink_walker", SINKS, indirect=True)
def test_sink_counts_every_frame_of_a_real_replay(tmp_path, sink_walker):
    """rtp2ws streams a generated capture at realtime into the sink, relying on its pongs (the
    acknowledgement pings of the resend window): every frame it sent is counted, a start and an
    end per leg, every connection closed, nothing dropped."""
    capture, info = capgen.cached_capture(tmp_path, 4, 2.0)
    sink = discard.SinkProcess("discard")
    try:
        res = harness.measure("ws20", capture, info, url=sink.url, speed=1.0)
    finally:
        stats = sink.stop()
    assert res["sent"]["sent_frames"] == 4 * 2 * 100
    assert stats["binary"] == res["sent"]["sent_frames"]
    assert stats["text"] == 2 * 8 and stats["connections"] == stats["closed"] == 8
    assert res["sent"].get("dropped_ms", 0) == 0


@needs_native
def test_the_sink_uses_the_c_drain_when_built(monkeypatch):
    assert type(discard._drain()).__name__ == "Drain"
    monkeypatch.setenv("RTP2WS_NO_NATIVE", "1")
    assert discard._drain() is None
