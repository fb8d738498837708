"""ws.wire: one connection's writes, straight to its socket, in order, from any thread.
Real sockets only (socket pairs and loopback TCP)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time

import pytest

from rtp2ws.ws.wire import Wire, WireTransport, writable


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


def test_what_the_socket_cannot_take_waits_and_leaves_in_order():
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


def test_the_wire_keeps_its_own_descriptor():
    a, b = socket.socketpair()
    with b:
        wire = Wire(a.fileno(), threading.RLock())
        a.close()                       # asyncio closes its descriptor: the wire still writes
        wire.write(b"still here")
        assert b.recv(100) == b"still here"
        assert wire.close() == b""
        b.settimeout(5)
        assert b.recv(100) == b""       # the last descriptor closed: the peer sees the end


def test_a_reset_peer_breaks_the_wire_and_it_keeps_nothing():
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


def test_close_hands_back_the_tail():
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


def test_the_transport_websockets_writes_to_queues_behind_the_wire_and_hands_over_its_tail():
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
def test_audio_written_from_a_worker_thread_between_websockets_pongs(thread):
    """The bridge's way: audio queued and flushed from another thread than the event
    loop's, while the server pings every 5 ms and websockets answers through the
    wire.  The server's strict reader (websockets) accepts every byte, every frame
    arrives once and in order, and the stream ends delivered."""
    from websockets.asyncio.server import serve

    from rtp2ws.ws.sender import Sender, SenderConfig

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
