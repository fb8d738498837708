"""What a 20 ms frame costs in the stream queue: the C outbox's data-plane take
against the Python twin's, per frame of every stream.

    python benchmarks/outbox_plane.py [--streams 1000] [--ticks 200] [--rounds 3] [--sockets [--paced]]

Each tick pushes one 20 ms mono frame into every stream's outbox and takes it as
the sender writes it (masked client frames, the acknowledgement ping when due; the
server's pongs come back every 25 ticks), in four ways:

* ``c take_framed``: the C outbox's ``push_audio`` + ``take_framed`` (one call into
  native/outbox.c's ``ob_take_framed``, the data plane's entry);
* ``c take+encode``: the C outbox through the Python API the sender uses today
  (``take`` into a list, ``ws.frame.encode``, ``ping_due``);
* ``py take+encode``: the Python twin the same way, with the C ``encode``;
* ``py take+encode_py``: the Python twin with the pure-Python ``encode``.

The keys come from one buffer drawn beforehand (os.urandom's cost is the same for
all).  Prints microseconds per frame (best of the rounds) and what the C outboxes
hold in chunks.  Speed is measured here, never asserted in tests.

With ``--sockets``, the flush with its writes instead: every stream has a loopback
TCP connection whose other end a reader process drains (epoll), and each tick
pushes a frame into every (C) outbox and then flushes them all, timed, in three ways:

* ``py flush``: today's sender path per stream (``take`` into a list,
  ``ws.frame.encode`` with keys from an os.urandom pool, ``ping_due`` and the ping,
  ``WirePy.write``: one os.write each);
* ``send_batches_py``: the Python twin of the one-call flush (``take_framed`` +
  ``WirePy.write``);
* ``c send_batches``: the C one (C wires; one GIL release for all the writes), its
  writes as one write(2) each (``/write``) and as sends through one io_uring
  (``/io_uring``, when built with liburing and the kernel allows it).

``--paced`` sleeps to the next 20 ms between ticks, as a live sender does (caches
go cold between them).  Both the wall time and the CPU time of the flushing thread
(``time.thread_time``: the kernel's loopback work that the sends do included) are
printed; on this 2-core VM the CPU time is the one to compare.

The sender's checks before a stream is taken (``Stream._may_take``) are Python in
every case and not part of this.
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import time

from rtp2ws.speedups import load_native
from rtp2ws.ws import frame as wsframe
from rtp2ws.ws.outbox import OutboxPy, TotalsPy
from rtp2ws.ws.wire import KeyPool

FRAME = bytes(range(256)) * 2 + bytes(128)         # 640 bytes: 20 ms at 16 kHz, mono
KEYS = os.urandom(4 * 64)
BATCH = 64 * 1024


def make(cls, totals_cls, streams: int) -> list:
    totals = totals_cls()
    obs = [cls({"call_id": f"bench-{i}", "tag": "caller", "stream_id": f"s{i}"}, frame_ms=20, totals=totals)
           for i in range(streams)]
    for ob in obs:
        ob.connected()
    return obs


def pongs(obs) -> None:
    for ob in obs:
        at = ob.ping_at
        if at is not None:
            ob.pong(at.to_bytes(8, "big"))


def run_framed(obs, ticks: int) -> float:
    t = 0.0
    for k in range(ticks):
        t0 = time.perf_counter()
        for ob in obs:
            ob.push_audio(FRAME)
            ob.take_framed(KEYS, BATCH)
        t += time.perf_counter() - t0
        if k % 25 == 24:
            pongs(obs)
    return t


def run_take_encode(obs, ticks: int, encode) -> float:
    split = 640
    ping_frame = wsframe.ping_frame
    t = 0.0
    for k in range(ticks):
        t0 = time.perf_counter()
        for ob in obs:
            ob.push_audio(FRAME)
            msgs: list = []
            if ob.take(msgs, BATCH):
                data = encode(msgs, KEYS, split)
                at = ob.ping_due()
                if at is not None:
                    data += ping_frame(at.to_bytes(8, "big"), KEYS[:4])
        t += time.perf_counter() - t0
        if k % 25 == 24:
            pongs(obs)
    return t


def socket_pairs(n: int) -> tuple[list[socket.socket], int]:
    """n loopback TCP connections: the client ends, and the pid of a reader process
    that drains the server ends until it is killed."""
    from rtp2ws.ws.sender import raise_fd_limit
    raise_fd_limit(2 * n + 64)
    lsock = socket.create_server(("127.0.0.1", 0), backlog=n)
    port = lsock.getsockname()[1]
    clients, servers = [], []
    for _ in range(n):
        c = socket.create_connection(("127.0.0.1", port))
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        clients.append(c)
        servers.append(lsock.accept()[0])
    lsock.close()
    pid = os.fork()
    if pid == 0:                                  # the reader
        try:
            for c in clients:
                c.close()
            ep = select.epoll()
            for s in servers:
                s.setblocking(False)
                ep.register(s.fileno(), select.EPOLLIN)
            while True:
                for fd, _ in ep.poll():
                    try:
                        os.read(fd, 1 << 20)
                    except BlockingIOError:
                        pass
        finally:
            os._exit(0)
    for s in servers:
        s.close()
    return clients, pid


def run_flush(obs, wires, ticks: int, how: str, paced: bool = False) -> tuple[float, float]:
    """Ticks of one frame per stream, then the flush of every stream: its wall and CPU time."""
    import threading

    from rtp2ws.ws.wire import send_batches_py
    native = load_native("_wsframe")
    lock = threading.RLock()
    pool = KeyPool()       # masking keys as the sender draws them
    items = list(zip(obs, wires, strict=True))
    if native is not None:
        native.use_uring(how.endswith("/io_uring"))
    t = cpu = 0.0
    due = time.monotonic()
    for k in range(ticks):
        if paced:
            due += 0.020
            time.sleep(max(0.0, due - time.monotonic()))
        for ob in obs:
            ob.push_audio(FRAME)
        t0 = time.perf_counter()
        c0 = time.thread_time()
        with lock:
            if how == "py flush":
                for ob, wire in items:
                    msgs: list = []
                    n = ob.take(msgs, BATCH)
                    if n:
                        data = wsframe.encode(msgs, pool(4 * n), 640)
                        at = ob.ping_due()
                        if at is not None:
                            data += wsframe.ping_frame(at.to_bytes(8, "big"), pool(4))
                        wire.write(data)
            elif how == "send_batches_py":
                send_batches_py(items, BATCH)
            else:
                assert native is not None
                native.send_batches(items, BATCH)
        cpu += time.thread_time() - c0
        t += time.perf_counter() - t0
        if k % 25 == 24:
            pongs(obs)
    assert not any(w.blocked or w.broken for w in wires), "the reader fell behind: a socket filled"
    return t, cpu




def main_sockets(args) -> int:
    import signal
    import threading

    from rtp2ws.ws.wire import WirePy
    native = load_native("_wsframe")
    if native is None:
        print("rtp2ws._wsframe is not built")
        return 1
    clients, pid = socket_pairs(args.streams)
    try:
        frames = args.streams * args.ticks
        print(f"{args.streams} loopback TCP streams x {args.ticks} ticks of 20 ms ({frames} frames), "
              f"{'paced, ' if args.paced else ''}best of {args.rounds} (rounds interleaved): the flush "
              f"(take, frame, key, write), per frame")
        lock = threading.RLock()
        hows = ["py flush", "send_batches_py", "c send_batches/write"]
        if native.use_uring(True):
            hows.append("c send_batches/io_uring")
        else:
            print(f"  (no io_uring: {native.uring_info()})")
        best = {how: (float("inf"), float("inf")) for how in hows}
        for _ in range(args.rounds):
            for how in hows:
                obs = make(native.Outbox, native.Totals, args.streams)
                cls = native.Wire if how.startswith("c ") else WirePy
                wires = [cls(c.fileno(), lock) for c in clients]
                try:
                    wall, cpu = run_flush(obs, wires, args.ticks, how, args.paced)
                finally:
                    for w in wires:
                        w.close()
                best[how] = (min(best[how][0], wall), min(best[how][1], cpu))
        for how, (wall, cpu) in best.items():
            print(f"  {how:24s} {1e6 * wall / frames:6.2f} us wall  {1e6 * cpu / frames:6.2f} us CPU")
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        for c in clients:
            c.close()
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--ticks", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sockets", action="store_true", help="the flush with its socket writes (see above)")
    ap.add_argument("--paced", action="store_true", help="with --sockets: a tick every 20 ms, as live")
    args = ap.parse_args()
    if args.sockets:
        return main_sockets(args)
    native = load_native("_wsframe")
    cases = []
    if native is not None:
        cases += [("c take_framed", lambda: run_framed(make(native.Outbox, native.Totals, args.streams), args.ticks)),
                  ("c take+encode", lambda: run_take_encode(make(native.Outbox, native.Totals, args.streams),
                                                            args.ticks, wsframe.encode))]
    cases += [("py take+encode", lambda: run_take_encode(make(OutboxPy, TotalsPy, args.streams), args.ticks,
                                                         wsframe.encode)),
              ("py take+encode_py", lambda: run_take_encode(make(OutboxPy, TotalsPy, args.streams), args.ticks,
                                                            wsframe.encode_py))]
    frames = args.streams * args.ticks
    print(f"{args.streams} streams x {args.ticks} ticks of 20 ms ({frames} frames), best of {args.rounds}")
    for name, fn in cases:
        best = min(fn() for _ in range(args.rounds))
        print(f"  {name:18s} {1e6 * best / frames:6.2f} us/frame")
    if native is not None:
        obs = make(native.Outbox, native.Totals, args.streams)
        used0 = native.chunk_counts()[0]
        run_framed(obs, 60)                          # 1.2 s: a full resend window, pongs every 0.5 s
        used = native.chunk_counts()[0] - used0
        held = sum(ob.queued_bytes + ob.retained_bytes for ob in obs)
        print(f"  C outboxes hold {held / args.streams / 1024:.1f} KiB of audio per stream in "
              f"{used * (native.CHUNK_BYTES + 8) / args.streams / 1024:.1f} KiB of chunks "
              f"(resend window at the default 1000 ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
