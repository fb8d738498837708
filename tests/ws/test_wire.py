"""ws.wire: one connection's writes, straight to its socket, in order, from any thread,
and send_batches, the sender's flush of many streams' batches to their wires.  Both
twins (WirePy / send_batches_py and the C ones of rtp2ws._wsframe) run every test;
real sockets only (socket pairs and loopback TCP)."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import random
import socket
import threading
import time

import pytest
from websockets.frames import Opcode
from wsparse import parse_frames

from rtp2ws.ws import outbox as outbox_mod
from rtp2ws.ws import wire as wire_mod
from rtp2ws.ws.outbox import OutboxPy, TotalsPy
from rtp2ws.ws.wire import BLOCKED, BROKE, ENDED, FAILED, PENDING, SENT, WirePy, WireTransport, writable

send_batches_py = wire_mod.send_batches_py


def uring_default() -> bool:
    return os.environ.get("RTP2WS_NO_URING", "") in ("", "0")


@pytest.fixture(params=["python", "native", "native/write"])
def twin(request):
    """The twin under test: its name; Wire, send_batches and Outbox are looked up by it.
    The C send_batches runs twice: its writes through io_uring (skipped where it is not
    built or the kernel refuses it) and as write(2)s (``use_uring(False)``)."""
    name, _, how = request.param.partition("/")
    if name not in wire_mod.TWINS:
        pytest.skip("rtp2ws._wsframe is not built (or RTP2WS_NO_NATIVE is set)")
    if name == "native":
        from rtp2ws import _wsframe
        on = _wsframe.use_uring(how != "write")
        request.addfinalizer(lambda: _wsframe.use_uring(uring_default()))
        if how != "write" and not on:
            pytest.skip(f"io_uring is not in use: {_wsframe.uring_info()}")
    return name


@pytest.fixture
def ring():
    """rtp2ws._wsframe with its writes through io_uring (skipped where they cannot be),
    put back as the environment says afterwards."""
    if "native" not in wire_mod.TWINS:
        pytest.skip("rtp2ws._wsframe is not built (or RTP2WS_NO_NATIVE is set)")
    from rtp2ws import _wsframe
    try:
        if not _wsframe.use_uring(True):
            pytest.skip(f"io_uring is not in use: {_wsframe.uring_info()}")
        yield _wsframe
    finally:
        _wsframe.use_uring(uring_default())


@pytest.fixture
def Wire(twin):  # noqa: N802 - the class under test
    return wire_mod.TWINS[twin][0]


def outbox_of(twin: str, i: int = 0, **kw):
    cls = outbox_mod.TWINS[twin][0]
    ob = cls({"call_id": f"c{i}", "tag": "caller", "stream_id": f"s{i}"}, frame_ms=20, **kw)
    ob.connected()
    return ob


def small_pair():
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return a, b


def read_all(sock, into: bytearray, until: int) -> None:
    while len(into) < until:
        chunk = sock.recv(65536)
        if not chunk:
            return
        into += chunk


def test_what_the_socket_cannot_take_waits_and_leaves_in_order(Wire):
    a, b = small_pair()
    lock = threading.RLock()
    with a, b:
        wire = Wire(a.fileno(), lock)
        pieces = [bytes([i % 251]) * (1000 + i) for i in range(200)]
        sent = b"".join(pieces)
        with lock:
            for p in pieces:
                wire.write(p)
        assert wire.blocked and 0 < wire.written < len(sent)      # the socket took only part of it
        got = bytearray()
        reader = threading.Thread(target=read_all, args=(b, got, len(sent)))
        reader.start()
        deadline = time.monotonic() + 10
        while wire.blocked and time.monotonic() < deadline:
            if writable([wire]):
                with lock:
                    wire.retry()
            else:
                time.sleep(0.001)
        reader.join(10)
        assert not wire.blocked and wire.written == len(sent)
        assert bytes(got) == sent
        with lock:
            wire.close()


def test_the_wire_keeps_its_own_descriptor(Wire):
    a, b = socket.socketpair()
    with b:
        wire = Wire(a.fileno(), threading.RLock())
        a.close()                       # asyncio closes its descriptor: the wire still writes
        wire.write(b"still here")
        assert b.recv(100) == b"still here"
        assert wire.close() == b""
        b.settimeout(5)
        assert b.recv(100) == b""       # the last descriptor closed: the peer sees the end


def test_a_reset_peer_breaks_the_wire_and_it_keeps_nothing(Wire):
    a, b = small_pair()
    with a:
        wire = Wire(a.fileno(), threading.RLock())
        b.close()
        for _ in range(100):
            wire.write(b"x" * 10000)
            if wire.broken is not None:
                break
        assert wire.broken is not None and not wire.open and not wire.blocked
        before = wire.written
        wire.write(b"y" * 100)          # ignored
        assert wire.written == before and wire.close() == b""


def test_close_hands_back_the_tail(Wire):
    a, b = small_pair()
    with a, b:
        wire = Wire(a.fileno(), threading.RLock())
        data = os.urandom(200_000)
        wire.write(data)
        assert wire.blocked
        tail = wire.close()
        assert wire.written + len(tail) == len(data) and data.endswith(tail)
        assert wire.fd == -1
        wire.write(b"after")            # a closed wire writes nothing
        assert wire.written + len(tail) == len(data)


def test_the_transport_websockets_writes_to_queues_behind_the_wire_and_hands_over_its_tail(Wire):
    """Through WireTransport: writes go behind what the wire holds; close() hands the
    tail to asyncio's transport, which writes it before it closes the connection."""
    async def main():
        received = bytearray()
        done = asyncio.Event()

        async def serve(reader, writer):
            await asyncio.sleep(0.2)        # let the client's socket fill first
            while chunk := await reader.read(65536):
                received.extend(chunk)
            done.set()
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport, _ = await asyncio.get_running_loop().create_connection(asyncio.Protocol, "127.0.0.1", port)
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        lock = threading.RLock()
        wire = Wire(sock.fileno(), lock)
        proxy = WireTransport(transport, wire)
        big = os.urandom(3_000_000)
        with lock:
            wire.write(big)
        assert wire.blocked
        proxy.write(b"CONTROL")         # e.g. websockets' pong: after the audio, never inside it
        assert proxy.get_write_buffer_size() >= len(wire.tail)
        proxy.close()
        assert wire.fd == -1
        await asyncio.wait_for(done.wait(), 20)
        server.close()
        assert bytes(received) == big + b"CONTROL"

    asyncio.run(main())


@pytest.mark.parametrize("thread", ["loop", "worker"])
def test_audio_written_from_a_worker_thread_between_websockets_pongs(thread, twin, monkeypatch):
    """The bridge's way: audio queued and flushed from another thread than the event
    loop's, while the server pings every 5 ms and websockets answers through the
    wire.  The server's strict reader (websockets) accepts every byte, every frame
    arrives once and in order, and the stream ends delivered."""
    from websockets.asyncio.server import serve

    from rtp2ws.ws import sender as sender_mod
    from rtp2ws.ws.sender import Sender, SenderConfig

    monkeypatch.setattr(sender_mod, "Wire", wire_mod.TWINS[twin][0])
    monkeypatch.setattr(sender_mod, "send_batches", wire_mod.TWINS[twin][1])
    frames = [bytes([i % 256]) * 640 for i in range(400)]

    async def main():
        got: list = []
        closed: list = []

        async def handler(ws):
            try:
                async for m in ws:
                    got.append(m)
            finally:
                closed.append(ws.close_code)

        async with serve(handler, "127.0.0.1", 0, ping_interval=0.005, ping_timeout=0.1, compression=None) as server:
            port = server.sockets[0].getsockname()[1]
            s = Sender(SenderConfig(url=f"ws://127.0.0.1:{port}/", close_timeout=2))
            s.use_loop()
            start = {"type": "start", "call_id": "c", "tag": "caller", "frame_ms": 20}

            def produce():
                st = s.open_stream("s1", start)
                for i, f in enumerate(frames):
                    st.send_audio(f)
                    if thread == "worker":
                        s.flush()
                    if i % 20 == 0:
                        time.sleep(0.02)      # 0.4 s in all: pongs late by 0.1 s would end it
                st.end({"reason": "bye"})
                return st

            if thread == "worker":
                st = await asyncio.to_thread(produce)
            else:
                st = produce()
            for _ in range(500):
                if st.done:
                    break
                await asyncio.sleep(0.01)
            assert st.done and not st.given_up
            assert s.stats["undelivered_ms"] == 0 and s.stats["dropped_ms"] == 0
            await s.close()
        audio = [m for m in got if isinstance(m, bytes)]
        assert audio == frames
        assert json.loads(got[-1])["type"] == "end"
        assert closed == [1000]

    asyncio.run(main())


# --------------------------------------------------------------------------- the C wire's own contract


def test_the_wire_twins_have_the_same_face():
    assert wire_mod.BACKEND == wire_mod.BACKENDS[0] and set(wire_mod.TWINS) == set(wire_mod.BACKENDS)
    if "native" in wire_mod.TWINS:
        from rtp2ws import _wsframe
        assert (_wsframe.PENDING, _wsframe.ENDED, _wsframe.BLOCKED, _wsframe.BROKE, _wsframe.SENT,
                _wsframe.FAILED) == (PENDING, ENDED, BLOCKED, BROKE, SENT, FAILED)
        assert _wsframe.KEY_POOL == wire_mod.KEY_POOL


def test_wire_attributes(Wire):
    a, b = small_pair()
    lock = threading.RLock()
    with a, b:
        wire = Wire(a.fileno(), lock)
        assert wire.fd not in (-1, a.fileno()) and wire.lock is lock
        assert os.get_blocking(wire.fd) is False and os.get_inheritable(wire.fd) is False
        assert (wire.broken, wire.written, wire.blocked, wire.open, bytes(wire.tail)) == (None, 0, False, True, b"")
        assert repr(wire) == f"Wire(fd={wire.fd}, tail=0, broken=False)"
        wire.write(b"")                   # nothing to write: nothing happens
        wire.write(memoryview(b"abc"))
        assert wire.written == 3 and b.recv(10) == b"abc" and wire.retry() is True
        assert wire.close() == b"" and not wire.open and wire.fd == -1
        assert wire.retry() is True and wire.close() == b""
    with pytest.raises(OSError) as e:
        Wire(-1, lock)
    assert e.value.errno == errno.EBADF


def test_retry_writes_what_it_can_and_keeps_the_rest_in_order(Wire):
    a, b = small_pair()
    with a, b:
        wire = Wire(a.fileno(), threading.RLock())
        data = os.urandom(300_000)
        wire.write(data)
        assert wire.blocked and wire.retry() is False       # nobody reads: still full
        got = bytearray()
        while wire.blocked:
            got += b.recv(65536)
            wire.retry()
        read_all(b, got, len(data))
        assert bytes(got) == data and wire.written == len(data)


# --------------------------------------------------------------------------- send_batches




def drain(sock) -> bytes:
    got = bytearray()
    while True:
        try:
            chunk = sock.recv(1 << 20, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return bytes(got)
        if not chunk:
            return bytes(got)
        got += chunk


def pcm(offset: int, n: int = 320) -> bytes:
    return b"".join(((offset + i) & 0x7FFF).to_bytes(2, "little") for i in range(n))


def close_all(wires, pairs) -> None:
    """Close the wires, then both ends of every socket pair."""
    for w in wires:
        w.close()
    for a, b in pairs:
        a.close()
        b.close()


def big_pair():
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    return a, b


def test_send_batches_writes_frames_a_server_accepts_in_order_with_the_pings(twin, Wire):
    send = wire_mod.TWINS[twin][1]
    lock = threading.RLock()
    pairs = [big_pair() for _ in range(4)]
    obs = [outbox_of(twin, i) for i in range(4)]
    wires = [Wire(a.fileno(), lock) for a, _ in pairs]
    obs[2].note_sent = True
    received = [bytearray() for _ in pairs]
    try:
        for tick in range(60):                        # 1.2 s of 20 ms frames: pings after 500 ms
            for i, ob in enumerate(obs):
                if i == 1 and tick == 10:
                    ob.push_event({"type": "dtmf", "digit": "5"})
                ob.push_audio(pcm(tick * 320))
            if tick == 59:
                obs[3].end({"type": "end"})
            with lock:
                attention = send(list(zip(obs, wires, strict=True)), 64 * 1024)
            expect = [(2, SENT, None)] + ([(3, ENDED, None)] if tick == 59 else [])
            assert attention == expect
            assert obs[2].sent == (tick * 320, tick * 320 + 320)
            obs[2].sent = None
            for k, (_, b) in enumerate(pairs):
                received[k] += drain(b)
        for k, ob in enumerate(obs):
            frames = parse_frames(bytes(received[k]))
            audio = [f.data for f in frames if f.opcode is Opcode.BINARY]
            assert audio == [pcm(t * 320) for t in range(60)]
            pings = [(n, int.from_bytes(f.data, "big")) for n, f in enumerate(frames) if f.opcode is Opcode.PING]
            # the first ping right after the audio that makes ping_every (500 ms) unacknowledged
            assert pings == [(25 + (k == 1), 25 * 320)]
            assert ob.ping_at == 25 * 320 and wires[k].written == len(received[k])
            texts = [json.loads(f.data) for f in frames if f.opcode is Opcode.TEXT]
            assert texts == ([{"type": "dtmf", "digit": "5"}] if k == 1 else [])
            if k == 1:
                assert frames[10].opcode is Opcode.TEXT        # at its place between the audio
            assert all(f.fin and not (f.rsv1 or f.rsv2 or f.rsv3) for f in frames)
            assert not ob.pending and ob.expected == 60 * 320 and ob.retained_samples == 1000 * 16   # resend_ms
    finally:
        close_all(wires, pairs)


def test_a_full_socket_keeps_the_tail_and_the_rest_waits_in_the_outbox(twin, Wire):
    """More than a batch queued on a socket that takes little: the batch's rest is the
    wire's tail (BLOCKED), the outbox keeps the rest (PENDING); once the peer read and
    the tail left, the next batch follows, and the peer has every frame, in order."""
    send = wire_mod.TWINS[twin][1]
    a, b = small_pair()
    lock = threading.RLock()
    with a, b:
        ob = outbox_of(twin, max_buffer_ms=60_000, resend_ms=60_000)
        wire = Wire(a.fileno(), lock)
        for t in range(300):                           # 6 s: 192,000 bytes, three batches
            ob.push_audio(pcm(t * 320))
        with lock:
            assert send([(ob, wire)], 64 * 1024) == [(0, PENDING | BLOCKED, None)]
        assert wire.blocked and 0 < wire.written < 64 * 1024
        taken = ob.expected
        assert 0 < taken < 300 * 320 and ob.queued_samples == 300 * 320 - taken
        got = bytearray()
        rounds = 0
        b.settimeout(10)
        while ob.pending or wire.blocked:
            got += b.recv(1 << 20)
            with lock:
                if wire.blocked:
                    wire.retry()
                else:                                  # the sender's rule: no batch while blocked
                    assert ob.expected == taken
                    attention = send([(ob, wire)], 64 * 1024)
                    assert all(i == 0 and not flags & ~(PENDING | BLOCKED) for i, flags, _ in attention)
                    taken = ob.expected
                    rounds += 1
        read_all(b, got, wire.written)
        assert rounds >= 1 and len(got) == wire.written
        frames = parse_frames(bytes(got))
        assert [f.data for f in frames if f.opcode is Opcode.BINARY] == [pcm(t * 320) for t in range(300)]
        wire.close()


def test_a_broken_peer_breaks_the_wire_once(twin, Wire):
    send = wire_mod.TWINS[twin][1]
    a, b = small_pair()
    lock = threading.RLock()
    with a:
        ob = outbox_of(twin)
        wire = Wire(a.fileno(), lock)
        b.close()
        with lock:
            ob.push_audio(pcm(0))
            assert send([(ob, wire)], 64 * 1024) == [(0, BROKE, None)]
            assert isinstance(wire.broken, OSError) and wire.broken.errno in (errno.EPIPE, errno.ECONNRESET)
            assert isinstance(wire.broken, (BrokenPipeError, ConnectionResetError))   # as os.write raises
            assert not wire.open and not wire.blocked and wire.written == 0
            ob.push_audio(pcm(320))
            assert send([(ob, wire)], 64 * 1024) == []   # taken, nothing written, no news
            assert ob.expected == 640 and wire.close() == b""


def test_send_batches_refuses_a_wire_twice_before_taking_anything(twin, Wire):
    send = wire_mod.TWINS[twin][1]
    a, b = big_pair()
    with a, b:
        ob = outbox_of(twin)
        ob.push_audio(pcm(0))
        wire = Wire(a.fileno(), threading.RLock())
        with pytest.raises(ValueError, match="twice"):
            send([(ob, wire), (outbox_of(twin, 1), wire)], 1000)
        assert ob.pending and wire.written == 0
        assert send([], 1000) == []
        assert send([(ob, wire)], 1000) == [] and wire.written == 8 + 640
        wire.close()


def test_a_failing_take_is_handed_back_and_the_others_go_on(twin, Wire):
    send = wire_mod.TWINS[twin][1]
    pairs = [big_pair() for _ in range(3)]
    obs = [outbox_of(twin, i, totals=TotalsPy()) for i in range(3)]
    wires = [Wire(a.fileno(), threading.RLock()) for a, _ in pairs]
    try:
        for ob in obs:
            ob.push_audio(pcm(0))
        obs[1].push_audio(pcm(1000))                   # a gap: a drop message is made ...
        obs[1].totals.sent_frames = "not a number"     # ... and the counts updated: that raises (a bug)
        attention = send(list(zip(obs, wires, strict=True)), 64 * 1024)
        assert [(i, flags, type(e)) for i, flags, e in attention] == [(1, FAILED, TypeError)]
        assert wires[0].written == wires[2].written == 8 + 640 and wires[1].written == 0
    finally:
        close_all(wires, pairs)


@pytest.mark.skipif("native" not in wire_mod.TWINS, reason="rtp2ws._wsframe is not built")
def test_the_c_send_batches_takes_only_c_outboxes_and_wires():
    from rtp2ws import _wsframe
    a, b = big_pair()
    with a, b:
        py_ob = OutboxPy({"stream_id": "s"})
        py_ob.push_audio(pcm(0))
        c_wire = _wsframe.Wire(a.fileno(), threading.RLock())
        with pytest.raises(TypeError, match="item 0"):
            _wsframe.send_batches([(py_ob, c_wire)], 1000)
        with pytest.raises(TypeError, match="item 0"):
            _wsframe.send_batches([(_wsframe.Outbox({"stream_id": "s"}), WirePy(a.fileno(), threading.RLock()))],
                                  1000)
        with pytest.raises(TypeError):
            _wsframe.send_batches(iter([]), 1000)
        assert py_ob.pending and c_wire.written == 0
        # the Python twin takes either
        assert send_batches_py([(py_ob, c_wire)], 1000) == [] and c_wire.written == 8 + 640
        c_wire.close()


@pytest.mark.skipif("native" not in wire_mod.TWINS, reason="rtp2ws._wsframe is not built")
@pytest.mark.parametrize("seed", range(4))
def test_the_c_send_batches_does_what_the_python_twin_does(seed):
    """The same pushes, events, ends, pongs and budgets into C outboxes and wires and into
    the Python twins: the same attention lists, the same outbox states, and the peers read
    the same frames (unmasked: the keys differ)."""
    from rtp2ws import _wsframe
    rng = random.Random(seed)
    n = 6
    sides = {}
    for name, (ob_cls, send, wire_cls) in {"c": (_wsframe.Outbox, _wsframe.send_batches, _wsframe.Wire),
                                          "py": (OutboxPy, send_batches_py, WirePy)}.items():
        pairs = [big_pair() for _ in range(n)]
        obs = [ob_cls({"call_id": f"c{i}", "tag": "t", "stream_id": f"s{i}"}, frame_ms=20, max_buffer_ms=400,
                      resend_ms=600) for i in range(n)]
        for i, ob in enumerate(obs):
            ob.connected()
            ob.note_sent = i % 2 == 0
        wires = [wire_cls(a.fileno(), threading.RLock()) for a, _ in pairs]
        sides[name] = (obs, send, wires, pairs, [bytearray() for _ in range(n)])

    def state(ob):
        return (ob.pending, ob.ended, ob.queued_samples, ob.retained_samples, ob.expected, ob.ping_at, ob.sent,
                ob.acknowledged, ob.dropped_samples, ob.offset, ob.sent_samples, ob.unkept_samples)

    try:
        for _step in range(150):
            ops = []
            for i in range(n):
                r = rng.random()
                if r < 0.5:
                    ops.append((i, "audio", rng.choice([1, 1, 2, 5, 40]) * 320))
                elif r < 0.55:
                    ops.append((i, "gap", rng.randrange(1, 3000)))
                elif r < 0.6:
                    ops.append((i, "event", rng.randrange(100)))
                elif r < 0.62:
                    ops.append((i, "end", 0))
                elif r < 0.7:
                    ops.append((i, "pong", 0))
            chosen = sorted(rng.sample(range(n), rng.randrange(n + 1)))
            budget = rng.choice([1, 700, 5000, 64 * 1024])
            results = {}
            for name, (obs, send, wires, pairs, got) in sides.items():
                for i, kind, x in ops:
                    ob = obs[i]
                    if kind == "audio":
                        ob.push_audio(bytes(2 * x))
                    elif kind == "gap":               # a drop: the queue over max_buffer_ms
                        ob.push_audio(bytes(2 * 320 * 25))
                    elif kind == "event":
                        ob.push_event({"type": "dtmf", "n": x})
                    elif kind == "end":
                        ob.end({"type": "end"})
                    elif kind == "pong" and ob.ping_at is not None:
                        ob.pong(ob.ping_at.to_bytes(8, "big"))
                attention = send([(obs[i], wires[i]) for i in chosen], budget)
                for ob in obs:
                    ob.sent = None
                for k, (_, b) in enumerate(pairs):
                    got[k] += drain(b)
                results[name] = (attention, [state(ob) for ob in obs], [w.written for w in wires],
                                 [w.blocked for w in wires])
            assert results["c"] == results["py"]
        pings = 0
        for k in range(n):
            c, py = (parse_frames(bytes(sides[s][4][k])) for s in ("c", "py"))
            assert [(f.opcode, f.data) for f in c] == [(f.opcode, f.data) for f in py]
            pings += sum(f.opcode is Opcode.PING for f in c)
        assert pings >= 1
    finally:
        for obs, _, wires, pairs, _ in sides.values():
            close_all(wires, pairs)


def test_the_c_writes_go_through_io_uring_and_a_forked_child_makes_its_own_ring(ring):
    """With io_uring on, send_batches' writes are sends through the ring (counted), the
    peers read every frame; a forked child (``--workers``) does not use its parent's
    ring but makes its own, and the parent's still works after."""
    _wsframe = ring

    def one_round(n):
        pairs = [big_pair() for _ in range(n)]
        obs = [outbox_of("native", i) for i in range(n)]
        wires = [_wsframe.Wire(a.fileno(), threading.RLock()) for a, _ in pairs]
        try:
            before = _wsframe.uring_info()
            for ob in obs:
                ob.push_audio(pcm(0))
            assert _wsframe.send_batches(list(zip(obs, wires, strict=True)), 64 * 1024) == []
            after = _wsframe.uring_info()
            got = [parse_frames(drain(b)) for _, b in pairs]
            return (after["sends"] - before["sends"], after["calls"] - before["calls"],
                    [[f.data for f in frames] for frames in got])
        finally:
            close_all(wires, pairs)

    assert one_round(3) == (3, 1, [[pcm(0)]] * 3)
    pid = os.fork()
    if pid == 0:                                  # the child: exit code says how it went
        ok = False
        try:
            ok = one_round(2) == (2, 1, [[pcm(0)]] * 2) and _wsframe.uring_info()["state"] == "on"
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert one_round(2) == (2, 1, [[pcm(0)]] * 2)
    assert not _wsframe.use_uring(False)           # off: write(2)s, not counted
    assert one_round(2)[:2] == (0, 0)


def test_the_c_writes_to_a_descriptor_that_is_no_socket_fall_back_to_write(ring):
    """A send through the ring on a pipe answers ENOTSOCK: the bytes go by write(2)
    instead, as before the ring, and the wire is not broken."""
    _wsframe = ring
    r, w = os.pipe()
    try:
        ob = outbox_of("native")
        wire = _wsframe.Wire(w, threading.RLock())
        ob.push_audio(pcm(0))
        sends = _wsframe.uring_info()["sends"]
        assert _wsframe.send_batches([(ob, wire)], 64 * 1024) == []
        assert _wsframe.uring_info()["sends"] == sends + 1
        assert wire.open and not wire.blocked and wire.broken is None
        assert [f.data for f in parse_frames(os.read(r, 1 << 16))] == [pcm(0)]
        wire.close()
    finally:
        os.close(r)
        os.close(w)
