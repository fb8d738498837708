"""The WebSocket sender against real websockets servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import errno
import gc
import inspect
import json
import logging
import socket
import ssl
import time
from http import HTTPStatus

import numpy as np
import pytest
import trustme
from websockets.asyncio.server import serve

from rtp2ws.ws import sender as sender_mod
from rtp2ws.ws.outbox import MAX_EVENTS
from rtp2ws.ws.sender import Sender, SenderConfig, load_headers, raise_fd_limit, redact_url

FRAME = 320                     # 20 ms at 16 kHz
QUIET = logging.getLogger("tests.sink")
QUIET.setLevel(logging.CRITICAL)  # the test server's own logs (it would print request headers at DEBUG)


def run(coro, timeout: float = 20.0):
    async def bounded():
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


def start_msg(stream_id: str, channels: int = 1) -> dict:
    return {"type": "start", "call_id": "call-1", "tag": "caller", "stream_id": stream_id, "from": "a", "to": "b",
            "src": None, "dst": None, "codec": "L16", "sample_rate": 16000, "channels": channels,
            "frame_ms": 20, "sip_headers": {}, "version": 1}


def end_msg(stream_id: str) -> dict:
    return {"type": "end", "call_id": "call-1", "tag": "caller", "stream_id": stream_id, "reason": "bye"}


def frame(offset: int, n: int = FRAME, channels: int = 1) -> bytes:
    """Recognisable audio: each sample holds its own offset (mod 2**15)."""
    return (np.repeat(np.arange(offset, offset + n) & 0x7FFF, channels).astype("<i2")).tobytes()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(port: int, **kw) -> SenderConfig:
    kw.setdefault("backoff_initial", 0.05)
    kw.setdefault("backoff_max", 0.2)
    kw.setdefault("close_timeout", 1.0)
    return SenderConfig(url=f"ws://127.0.0.1:{port}/audio", **kw)


class Sink:
    """A test server recording every message of every connection.

    ``on_message(ws, conn_index, messages)`` may misbehave (abort, pause)."""

    def __init__(self, on_connect=None, on_message=None) -> None:
        self.conns: list[list] = []
        self.requests = []
        self.close_codes: list[int | None] = []
        self.on_connect = on_connect
        self.on_message = on_message
        self.server = None
        self.port = None

    async def start(self, port: int = 0, **kw):
        kw.setdefault("close_timeout", 0.5)
        where = () if "sock" in kw else ("127.0.0.1", port)
        self.server = await serve(self.handler, *where, logger=QUIET, **kw)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self):
        self.server.close()
        await self.server.wait_closed()

    async def handler(self, ws):
        index = len(self.conns)
        msgs: list = []
        self.conns.append(msgs)
        self.requests.append(ws.request)
        if self.on_connect is not None:
            await self.on_connect(ws, index)
        try:
            async for m in ws:
                msgs.append(m)
                if self.on_message is not None:
                    await self.on_message(ws, index, msgs)
        finally:
            self.close_codes.append(ws.close_code)


def texts(msgs):
    return [json.loads(m) for m in msgs if isinstance(m, str)]


def assemble(conns, channels: int = 1):
    """Rebuild a stream as a server must: frames at the offsets that start and
    drop messages announce.  Returns (audio by offset, messages, end)."""
    audio: dict[int, bytes] = {}
    events, end = [], None
    for msgs in conns:
        if not msgs:
            continue
        first = json.loads(msgs[0])
        assert first["type"] == "start"
        pos = first["offset"]
        for m in msgs[1:]:
            if isinstance(m, bytes):
                audio[pos] = m
                pos += len(m) // (2 * channels)
            else:
                msg = json.loads(m)
                if msg["type"] == "drop":
                    assert msg["offset"] >= pos
                    pos = msg["offset"]
                elif msg["type"] == "end":
                    end = msg
                else:
                    events.append(msg)
    return audio, events, end


async def wait_for(predicate, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


@pytest.fixture(params=["native", "python"])
def framing(request, monkeypatch):
    """Run a test with the C framing (rtp2ws._wsframe) and with its pure-Python twin."""
    from rtp2ws.ws import frame as wsframe
    if request.param == "python":
        monkeypatch.setattr(wsframe, "encode", wsframe.encode_py)
    elif wsframe.BACKEND != "native":
        pytest.skip("rtp2ws._wsframe is not built (or RTP2WS_NO_NATIVE is set)")
    return request.param


# --------------------------------------------------------------------------- helpers


def test_load_headers(tmp_path, monkeypatch):
    monkeypatch.setenv("RTP2WS_TEST_HDR", "X-Tenant: acme\nX-Other: 1")
    f = tmp_path / "headers"
    f.write_text("# auth\nAuthorization: Bearer abc:def\n\n  # indented comment\nX-Env:prod\n")
    got = load_headers(["X-A: 1 2 "], ["RTP2WS_TEST_HDR"], [str(f)])
    assert got == [("X-A", "1 2"), ("X-Tenant", "acme"), ("X-Other", "1"),
                   ("Authorization", "Bearer abc:def"), ("X-Env", "prod")]

    for bad in ["Bearer s3cr3t-token", "Bad Name: s3cr3t-token", ": s3cr3t-token", "X-Empty:  "]:
        with pytest.raises(ValueError) as e:
            load_headers([bad])
        assert "s3cr3t-token" not in str(e.value)
        assert "--header #1" in str(e.value)
    f.write_text("ok: 1\ns3cr3t-token\n")
    with pytest.raises(ValueError, match=r"line 2: expected 'Name: value'") as e:
        load_headers([], [], [str(f)])
    assert "s3cr3t-token" not in str(e.value)
    monkeypatch.delenv("RTP2WS_TEST_MISSING", raising=False)
    with pytest.raises(ValueError, match="RTP2WS_TEST_MISSING: environment variable is not set"):
        load_headers([], ["RTP2WS_TEST_MISSING"])


def test_redact_url():
    assert redact_url("wss://user:pw@example.com:8443/a/b?token=x#f") == "wss://example.com:8443/a/b"
    assert redact_url("ws://[::1]:9000/x?k=v") == "ws://[::1]:9000/x"
    assert redact_url("ws://host/") == "ws://host/"
    with pytest.raises(ValueError, match="ws:// or wss://") as e:
        Sender(SenderConfig(url="http://u:s3cr3t@host/?t=s3cr3t"))
    assert "s3cr3t" not in str(e.value)


def test_raise_fd_limit():
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert raise_fd_limit(16) == soft                    # never lowers
    got = raise_fd_limit(soft + 10)
    assert got >= min(soft + 10, hard) if hard != resource.RLIM_INFINITY else got >= soft + 10


def test_raise_fd_limit_past_the_hard_limit_when_privileged():
    """20,000 connections need more descriptors than many hosts' hard limit: with
    CAP_SYS_RESOURCE (root, unless a container took it away) it is raised; without,
    the soft limit stops at the hard one."""
    import subprocess
    import sys
    code = ("import resource; resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 2048)); "
            "from rtp2ws.ws.sender import raise_fd_limit; print(raise_fd_limit(4096), "
            "resource.getrlimit(resource.RLIMIT_NOFILE)[1])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    with open("/proc/self/status") as f:
        caps = int(next(line for line in f if line.startswith("CapEff:")).split()[1], 16)
    if caps & (1 << 24):        # CAP_SYS_RESOURCE (root outside a restricted container)
        assert out == ["4096", "4096"]
    else:
        assert out == ["2048", "2048"]


def test_capture_side_is_synchronous():
    from rtp2ws.ws.sender import Stream
    for name in ("send_audio", "send_event", "end"):
        assert not inspect.iscoroutinefunction(getattr(Stream, name))


# --------------------------------------------------------------------------- streams


def test_stream_delivers_start_audio_events_end(framing):
    async def main():
        sink = await Sink().start()
        s = Sender(config(sink.port))
        st = s.open_stream("s1", start_msg("s1"))
        for i in range(10):
            if i == 4:
                st.send_event({"type": "dtmf", "call_id": "call-1", "tag": "caller", "stream_id": "s1",
                               "digit": "5", "duration_ms": 100, "offset": 4 * FRAME})
            st.send_audio(frame(i * FRAME))
        st.send_audio(frame(10 * FRAME, 100))        # a short last frame
        st.end(end_msg("s1"))
        await s.drain(5)
        assert st.done and not st.connected
        await s.close()
        await sink.stop()
        return sink, s, st

    sink, s, st = run(main())
    assert len(sink.conns) == 1
    msgs = sink.conns[0]
    start = json.loads(msgs[0])
    assert start["resumed"] is False and start["offset"] == 0 and start["stream_id"] == "s1"
    kinds = ["audio" if isinstance(m, bytes) else json.loads(m)["type"] for m in msgs]
    assert kinds == ["start"] + ["audio"] * 4 + ["dtmf"] + ["audio"] * 7 + ["end"]
    audio, _, end = assemble(sink.conns)
    assert b"".join(audio[k] for k in sorted(audio)) == b"".join(frame(i * FRAME) for i in range(10)) + frame(3200, 100)
    assert end == {**end_msg("s1"), "samples": 3300, "dropped_ms": 0, "reconnects": 0}
    assert sink.close_codes == [1000]
    assert sink.requests[0].headers["User-Agent"].startswith("rtp2ws/")
    assert st.offset == 3300 and st.dropped_samples == 0
    assert s.stats["streams"] == 1 and s.stats["connects"] == 1 and s.stats["open"] == 0
    assert s.stats["sent_frames"] == 11 and s.stats["sent_bytes"] == 3300 * 2
    assert s.stats["dropped_ms"] == 0 and s.stats["given_up"] == 0 and s.stats["active"] == 0
    with pytest.raises(ValueError, match="not a whole number"):
        async def bad():
            Sender(config(1)).open_stream("x", start_msg("x")).send_audio(b"\0\0\0")
        run(bad())


def test_server_down_at_start_drops_oldest_and_marks_the_gap(caplog):
    caplog.set_level(logging.INFO, logger="rtp2ws.sender")
    port = free_port()

    async def main():
        s = Sender(config(port, max_buffer_ms=100, linger_s=3))      # 5 frames
        st = s.open_stream("s2", start_msg("s2"))
        for i in range(20):
            if i in (3, 18):
                st.send_event({"type": "hold", "call_id": "call-1", "tag": "caller", "stream_id": "s2",
                               "by": "caller", "offset": i * FRAME})
            st.send_audio(frame(i * FRAME))
            assert st.queued_samples <= 5 * FRAME
        assert st.dropped_samples == 15 * FRAME
        await asyncio.sleep(0.3)                         # several refused connects
        assert not st.done and not st.connected
        sink = await Sink().start(port)
        st.end(end_msg("s2"))
        await s.drain(5)
        await s.close()
        await sink.stop()
        return sink, s, st

    sink, s, _ = run(main())
    msgs = sink.conns[0]
    kinds = ["audio" if isinstance(m, bytes) else json.loads(m)["type"] for m in msgs]
    assert kinds == ["start", "hold", "drop", "audio", "audio", "audio", "hold", "audio", "audio", "end"]
    start, drop = json.loads(msgs[0]), json.loads(msgs[2])
    assert start["resumed"] is False and start["offset"] == 0
    assert drop == {"type": "drop", "call_id": "call-1", "tag": "caller", "stream_id": "s2",
                    "offset": 15 * FRAME, "samples": 15 * FRAME}
    audio, _, end = assemble(sink.conns)
    assert sorted(audio) == [i * FRAME for i in range(15, 20)]
    assert all(audio[i * FRAME] == frame(i * FRAME) for i in range(15, 20))
    assert end["samples"] == 20 * FRAME and end["dropped_ms"] == 300 and end["reconnects"] == 0
    assert s.stats["dropped_ms"] == 300 and s.stats["connect_failures"] >= 2
    lines = [r.getMessage() for r in caplog.records if r.name == "rtp2ws.sender"]
    assert sum("dropping the oldest" in m for m in lines) == 1
    assert sum("stopped dropping audio; 300 ms dropped" in m for m in lines) == 1
    # connect failures are rate-limited: one line for the whole outage
    fails = [m for m in lines if "cannot connect" in m]
    assert len(fails) == 1 and "connection refused" in fails[0] and f"ws://127.0.0.1:{port}/audio" in fails[0]


def test_reconnect_resumes_with_resent_audio(framing):
    total = 60

    async def crash_after_ten_frames(ws, index, msgs):
        if index == 0 and sum(isinstance(m, bytes) for m in msgs) == 10:
            ws.transport.abort()                          # the server dies; what is in flight is lost

    async def main():
        sink = await Sink(on_message=crash_after_ten_frames).start()
        s = Sender(config(sink.port, resend_ms=100))
        st = s.open_stream("s3", start_msg("s3"))
        for i in range(total):
            st.send_audio(frame(i * FRAME))
            await asyncio.sleep(0.003)
        st.end(end_msg("s3"))
        await s.drain(5)
        await s.close()
        await sink.stop()
        return sink, s, st

    sink, s, st = run(main())
    assert len(sink.conns) == 2
    received_first = sum(isinstance(m, bytes) for m in sink.conns[0])
    resumed = json.loads(sink.conns[1][0])
    assert resumed["type"] == "start" and resumed["resumed"] is True and resumed["stream_id"] == "s3"
    assert 0 < resumed["offset"] <= received_first * FRAME          # nothing lost in flight
    assert resumed["offset"] >= received_first * FRAME - 100 * 16   # at most resend_ms repeated
    audio, _, end = assemble(sink.conns)
    assert sorted(audio) == [i * FRAME for i in range(total)]
    assert all(audio[i * FRAME] == frame(i * FRAME) for i in range(total))
    assert end["reconnects"] == 1 and end["dropped_ms"] == 0 and end["samples"] == total * FRAME
    assert st.reconnects == 1 and s.stats["reconnects"] == 1 and s.stats["connects"] == 2


def test_keepalive_detects_a_dead_server():
    async def play_dead(ws, index):
        if index == 0:
            ws.transport.pause_reading()                  # no pongs, nothing read

    async def main():
        sink = await Sink(on_connect=play_dead).start(ping_interval=None)
        s = Sender(config(sink.port, ping_interval=0.2, ping_timeout=0.2, close_timeout=0.2))
        st = s.open_stream("s4", start_msg("s4"))
        st.send_audio(frame(0))
        t0 = time.monotonic()
        await wait_for(lambda: st.reconnects == 1, 5)
        detected = time.monotonic() - t0
        st.send_audio(frame(FRAME))
        st.end(end_msg("s4"))
        await s.drain(5)
        await s.close()
        await sink.stop()
        return sink, st, detected

    sink, st, detected = run(main())
    assert detected < 3
    assert st.done and not st.given_up
    audio, _, end = assemble(sink.conns[1:])
    assert sorted(audio) == [0, FRAME] and end["reconnects"] == 1


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def test_server_that_never_reads_keeps_memory_bounded(framing):
    channels = 2
    max_buffer_ms, resend_ms = 2000, 500
    frame_bytes = FRAME * 2 * channels
    seconds = 600                                         # 600 s of stereo: 38 MB pushed

    async def main():
        go = asyncio.Event()

        async def read_later(ws, index):
            await go.wait()

        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)   # inherited by accepted sockets
        listener.bind(("127.0.0.1", 0))
        sink = await Sink(on_connect=read_later).start(sock=listener, max_queue=1, ping_interval=None)
        s = Sender(config(sink.port, max_buffer_ms=max_buffer_ms, resend_ms=resend_ms, ping_interval=None))
        st = s.open_stream("s5", start_msg("s5", channels), channels=channels)
        await wait_for(lambda: st.connected)
        gc.collect()
        rss0 = _rss_bytes()
        peak = 0
        for i in range(seconds * 50):
            st.send_audio(frame(i * FRAME, channels=channels))   # a fresh bytes object each time
            if i % 50 == 49:                                      # hand the loop a chance every second of audio
                await asyncio.sleep(0)
                held = st.queued_bytes + st.retained_bytes
                peak = max(peak, held)
                assert st.queued_bytes <= max_buffer_ms * 32 * channels
                assert st.retained_bytes <= resend_ms * 32 * channels
                assert st.offset == st.dropped_samples + st.queued_samples + st.sent_samples
        rss1 = _rss_bytes()
        total = st.offset
        assert total == seconds * 16000
        assert st.dropped_samples > 0
        # the socket took only a small part: send() waited instead of buffering
        assert st.sent_samples * 2 * channels < 16 * 1024 * 1024
        assert st.sent_samples + st.dropped_samples + st.queued_samples == total
        dropped_before_end = st.dropped_samples
        go.set()                                                  # the server reads at last
        st.end(end_msg("s5"))
        await s.drain(10)
        await s.close()
        await sink.stop()
        return sink, s, st, total, dropped_before_end, peak, rss0, rss1

    sink, s, st, total, dropped_before_end, peak, rss0, rss1 = run(main(), 40)
    assert peak <= (max_buffer_ms + resend_ms) * 32 * channels + frame_bytes
    if rss0 is not None:
        assert rss1 - rss0 < 20 * 1024 * 1024, (rss0, rss1)
    audio, _, end = assemble(sink.conns, channels)
    received = sum(len(b) // (2 * channels) for b in audio.values())
    drops = [json.loads(m) for m in sink.conns[0] if isinstance(m, str) and json.loads(m)["type"] == "drop"]
    # what the server did not get is exactly what the sender counted as dropped
    assert st.dropped_samples == dropped_before_end == total - received == sum(d["samples"] for d in drops)
    assert end["samples"] == total and end["dropped_ms"] == st.dropped_samples // 16
    assert all(audio[k] == frame(k, len(audio[k]) // 4, channels) for k in list(audio)[:50])
    assert s.stats["dropped_ms"] == st.dropped_samples // 16


def test_gives_up_only_after_end_and_linger(caplog):
    caplog.set_level(logging.INFO, logger="rtp2ws.sender")
    port = free_port()

    async def main():
        s = Sender(config(port, linger_s=0.3))
        st = s.open_stream("s6", start_msg("s6"))
        for i in range(10):
            st.send_audio(frame(i * FRAME))
        await asyncio.sleep(0.6)
        assert not st.done                                # never gives up before end()
        t0 = time.monotonic()
        st.end(end_msg("s6"))
        await wait_for(lambda: st.done, 3)
        took = time.monotonic() - t0
        await s.close()
        return s, st, took

    s, st, took = run(main())
    assert 0.25 < took < 1.5
    assert st.given_up and st.dropped_samples == 10 * FRAME
    assert s.stats["given_up"] == 1 and s.stats["dropped_ms"] == 200
    lines = [r.getMessage() for r in caplog.records if "giving up" in r.getMessage()]
    assert lines == [("stream s6: giving up (could not deliver within 0.3 s of the end of the stream); "
                      "200 ms of audio not delivered")]


def test_drain_timeout_and_close():
    port = free_port()

    async def main():
        s = Sender(config(port))                          # default linger: 10 s
        ended = s.open_stream("s7", start_msg("s7"))
        live = s.open_stream("s8", start_msg("s8"))
        for st in (ended, live):
            for i in range(5):
                st.send_audio(frame(i * FRAME))
        ended.end(end_msg("s7"))
        t0 = time.monotonic()
        await s.drain(0.3)
        took = time.monotonic() - t0
        assert ended.done and ended.given_up and ended.dropped_samples == 5 * FRAME
        assert not live.done                              # drain waits for ended streams only
        await s.close()
        assert live.done and not live.given_up and live.dropped_samples == 5 * FRAME
        with pytest.raises(RuntimeError):
            s.open_stream("s9", start_msg("s9"))
        return s, took

    s, took = run(main())
    assert took < 1
    assert s.stats["given_up"] == 1 and s.stats["dropped_ms"] == 200 and s.stats["active"] == 0


def _refusing(status: HTTPStatus, counter: list):
    def process_request(connection, request):
        counter.append(request.path)
        return connection.respond(status, "no\n")
    return process_request


def test_refused_is_fatal_but_408_429_503_are_retried(caplog):
    caplog.set_level(logging.INFO, logger="rtp2ws.sender")

    async def main():
        hits = {}
        results = {}
        for status in (HTTPStatus.UNAUTHORIZED, HTTPStatus.NOT_FOUND, HTTPStatus.TOO_MANY_REQUESTS,
                       HTTPStatus.SERVICE_UNAVAILABLE, HTTPStatus.REQUEST_TIMEOUT):
            hits[status] = []
            server = await serve(lambda ws: None, "127.0.0.1", 0, logger=QUIET,
                                 process_request=_refusing(status, hits[status]))
            port = server.sockets[0].getsockname()[1]
            s = Sender(config(port, linger_s=0.2))
            st = s.open_stream(f"r{status.value}", start_msg(f"r{status.value}"))
            st.send_audio(frame(0))
            await asyncio.sleep(0.5)
            results[status] = (st.done, st.refused, s.stats["refused"])
            st.send_audio(frame(FRAME))
            st.end(end_msg(st.stream_id))
            await s.drain(2)
            assert st.dropped_samples == 2 * FRAME
            await s.close()
            server.close()
            await server.wait_closed()
        return hits, results

    hits, results = run(main())
    for status in (HTTPStatus.UNAUTHORIZED, HTTPStatus.NOT_FOUND):
        assert len(hits[status]) == 1                     # no retry
        assert results[status] == (True, True, 1)
    for status in (HTTPStatus.TOO_MANY_REQUESTS, HTTPStatus.SERVICE_UNAVAILABLE, HTTPStatus.REQUEST_TIMEOUT):
        assert len(hits[status]) >= 2                     # retried
        assert results[status] == (False, False, 0)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        "stream r401: server refused the connection: HTTP 401 Unauthorized (check --header / the token)",
        "stream r404: server refused the connection: HTTP 404 Not Found (check the URL)",
    ]


def test_wss_with_a_private_ca(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="rtp2ws.sender")
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))

    async def main():
        sink = await Sink().start(ssl=server_ctx)
        url = f"wss://127.0.0.1:{sink.port}/audio"
        good = Sender(SenderConfig(url=url, ca_file=str(ca_file), backoff_initial=0.05, backoff_max=0.1))
        st = good.open_stream("t1", start_msg("t1"))
        st.send_audio(frame(0))
        st.end(end_msg("t1"))
        await good.drain(5)
        assert st.done and not st.given_up
        await good.close()

        bad = Sender(SenderConfig(url=url, backoff_initial=0.05, backoff_max=0.1, linger_s=0.4))
        st2 = bad.open_stream("t2", start_msg("t2"))
        st2.send_audio(frame(0))
        await asyncio.sleep(0.3)
        st2.end(end_msg("t2"))
        await bad.drain(3)
        await bad.close()
        await sink.stop()
        return sink, bad, st2

    sink, bad, st2 = run(main())
    audio, _, end = assemble(sink.conns[:1])
    assert audio == {0: frame(0)} and end["stream_id"] == "t1"
    assert len(sink.conns) == 1                           # the unverified client never got through
    assert st2.given_up and bad.stats["connect_failures"] >= 2
    lines = [r.getMessage() for r in caplog.records if "t2" in r.getMessage() and "cannot connect" in r.getMessage()]
    assert len(lines) == 1
    assert "TLS certificate verification failed" in lines[0] and "--ca-file" in lines[0]


def test_secrets_never_logged(caplog):
    caplog.set_level(logging.DEBUG)
    secrets = ["s3cr3t-token", "pa55word-x", "qu3ry-s3cret", "dXNlcjpwYTU1d29yZC14"]  # last: base64("user:pa55word-x")

    async def main():
        sink = await Sink().start()
        refusing = await serve(lambda ws: None, "127.0.0.1", 0, logger=QUIET,
                               process_request=_refusing(HTTPStatus.UNAUTHORIZED, []))
        ports = [sink.port, refusing.sockets[0].getsockname()[1], free_port()]
        streams = []
        for i, port in enumerate(ports):
            cfg = SenderConfig(url=f"ws://user:pa55word-x@127.0.0.1:{port}/a?token=qu3ry-s3cret&x=1",
                               headers=[("Authorization", "Bearer s3cr3t-token")],
                               backoff_initial=0.05, backoff_max=0.1, linger_s=0.3)
            s = Sender(cfg)
            st = s.open_stream(f"x{i}", start_msg(f"x{i}"))
            st.send_audio(frame(0))
            streams.append((s, st))
        await asyncio.sleep(0.3)
        for s, st in streams:
            st.end(end_msg(st.stream_id))
            await s.drain(2)
            await s.close()
        await sink.stop()
        refusing.close()
        await refusing.wait_closed()
        return sink, streams

    sink, streams = run(main())
    # the secrets did go out on the wire
    assert sink.requests[0].headers.get_all("Authorization") == ["Basic dXNlcjpwYTU1d29yZC14",
                                                                 "Bearer s3cr3t-token"]
    assert "qu3ry-s3cret" in sink.requests[0].path
    assert streams[0][1].done and streams[1][1].refused and streams[2][1].given_up
    records = caplog.records
    assert any(r.name.startswith("websockets") and r.levelno == logging.DEBUG for r in records)
    assert any("Authorization: <redacted>" in r.getMessage() for r in records)
    for r in records:
        text = r.getMessage() + (logging.Formatter().formatException(r.exc_info) if r.exc_info else "")
        for secret in secrets:
            assert secret not in text, (r.name, text)
    assert "127.0.0.1" in caplog.text


def test_many_streams_concurrently():
    n = 300
    raise_fd_limit(4 * n + 256)

    async def main():
        sink = await Sink().start()
        s = Sender(config(sink.port))
        streams = [s.open_stream(f"m{i}", start_msg(f"m{i}")) for i in range(n)]
        for f in range(5):
            for st in streams:
                st.send_audio(frame(f * FRAME))
            await asyncio.sleep(0.01)
        for st in streams:
            st.end(end_msg(st.stream_id))
        await s.drain(20)
        await s.close()
        await sink.stop()
        return sink, s, streams

    import uvloop
    sink, s, streams = uvloop.run(asyncio.wait_for(main(), 30))
    assert all(st.done and not st.given_up for st in streams)
    assert len(sink.conns) == n and sink.close_codes == [1000] * n
    ends = [assemble([c])[2] for c in sink.conns]
    assert sorted(e["stream_id"] for e in ends) == sorted(f"m{i}" for i in range(n))
    assert all(e["samples"] == 5 * FRAME and e["dropped_ms"] == 0 for e in ends)
    assert s.stats["streams"] == n and s.stats["connects"] == n and s.stats["sent_frames"] == 5 * n


def test_out_of_file_descriptors_is_explained(caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="rtp2ws.sender")

    async def emfile(self):
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(sender_mod.Sender, "_connect", emfile)

    async def main():
        s = Sender(config(free_port(), linger_s=0.1))
        st = s.open_stream("e1", start_msg("e1"))
        await asyncio.sleep(0.2)
        st.end(end_msg("e1"))
        await s.drain(1)
        await s.close()

    run(main())
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "too many open files" in errors[0] and "ulimit -n" in errors[0] and "LimitNOFILE=" in errors[0]


def test_events_are_capped_and_counted(caplog):
    port = free_port()

    async def main():
        s = Sender(config(port))
        st = s.open_stream("v1", start_msg("v1"))
        for i in range(MAX_EVENTS + 5):
            st.send_event({"type": "dtmf", "call_id": "call-1", "tag": "caller", "stream_id": "v1",
                           "digit": "1", "duration_ms": 40, "offset": 0})
        sink = await Sink().start(port)
        st.end(end_msg("v1"))
        await s.drain(5)
        await s.close()
        await sink.stop()
        return sink, s, st

    sink, s, st = run(main())
    assert st.dropped_events == 5 and s.stats["dropped_events"] == 5
    _, events, end = assemble(sink.conns)
    assert len(events) == MAX_EVENTS and end["samples"] == 0
    assert sum("dropping new ones" in r.getMessage() for r in caplog.records) == 1


def test_protocol_refusal_close_is_not_retried(caplog):
    """A server that closes with 1008 refused the stream itself: no reconnect loop."""
    import asyncio

    from websockets.asyncio.server import serve

    from rtp2ws.ws.sender import Sender, SenderConfig

    async def main():
        seen = []

        async def handler(ws):
            seen.append(await ws.recv())
            await ws.close(1008, "invalid start: channels")

        async with serve(handler, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            sender = Sender(SenderConfig(url=f"ws://127.0.0.1:{port}/", backoff_initial=0.05))
            st = sender.open_stream("s1008", {"type": "start", "call_id": "c", "tag": "caller"})
            st.send_audio(b"\x00\x00" * 320)
            for _ in range(100):
                await asyncio.sleep(0.02)
                if st.done:
                    break
            await asyncio.sleep(0.3)   # a retry would have connected again by now
            stats = sender.stats
            await sender.close()
            return seen, st, stats

    with caplog.at_level("ERROR", logger="rtp2ws.sender"):
        seen, st, stats = asyncio.run(main())
    assert len(seen) == 1 and st.refused and stats["refused"] == 1
    assert "server refused the stream (code 1008 invalid start: channels)" in caplog.text


# --------------------------------------------------------------------------- batched writes


def test_a_run_of_frames_goes_out_as_frame_ms_messages(framing):
    async def main():
        sink = await Sink().start()
        s = Sender(config(sink.port))
        st = s.open_stream("b1", start_msg("b1"))           # frame_ms 20: 320 samples a message
        st.send_audio(b"".join(frame(i * FRAME) for i in range(3)) + frame(3 * FRAME, 160))   # 3.5 frames
        st.send_event({"type": "dtmf", "call_id": "call-1", "tag": "caller", "stream_id": "b1",
                       "digit": "1", "duration_ms": 40, "offset": 1120})
        st.send_audio(b"".join(frame(1120 + i * FRAME) for i in range(2)))
        st.end(end_msg("b1"))
        await s.drain(5)
        await s.close()
        await sink.stop()
        return sink, s

    sink, s = run(main())
    msgs = sink.conns[0]
    kinds = [len(m) // 2 if isinstance(m, bytes) else json.loads(m)["type"] for m in msgs]
    assert kinds == ["start", 320, 320, 320, 160, "dtmf", 320, 320, "end"]
    audio, _, end = assemble(sink.conns)
    assert b"".join(audio[k] for k in sorted(audio)) == b"".join(frame(i * FRAME) for i in range(5)) + frame(1600, 160)
    assert sorted(audio) == [0, 320, 640, 960, 1120, 1440]
    assert end["samples"] == 1760 and s.stats["sent_frames"] == 6 and s.stats["sent_bytes"] == 1760 * 2
    # no extension was negotiated, so every frame went out as rtp2ws framed it
    assert "Sec-WebSocket-Extensions" not in sink.requests[0].headers


def test_what_one_wake_queued_leaves_in_one_write():
    async def main():
        sink = await Sink().start()
        s = Sender(config(sink.port))
        st = s.open_stream("b2", start_msg("b2"))
        writes = []
        st.on_write = lambda first, end: writes.append((first, end))
        await wait_for(lambda: st.connected)
        await asyncio.sleep(0.05)                          # start is out
        for i in range(10):                                # one wake of the loop: ten frames and an event
            st.send_audio(frame(i * FRAME))
            if i == 4:
                st.send_event({"type": "hold", "call_id": "call-1", "tag": "caller", "stream_id": "b2",
                               "by": "caller", "offset": 5 * FRAME})
        await wait_for(lambda: st.sent_samples == 10 * FRAME)
        first_round = list(writes)
        for i in range(10, 13):
            st.send_audio(frame(i * FRAME))
            await asyncio.sleep(0.01)                      # a wake each
        st.end(end_msg("b2"))
        await s.drain(5)
        await s.close()
        await sink.stop()
        return sink, first_round, writes

    sink, first_round, writes = run(main())
    assert first_round == [(0, 10 * FRAME)]
    assert writes == [(0, 10 * FRAME)] + [(i * FRAME, (i + 1) * FRAME) for i in range(10, 13)]
    kinds = ["audio" if isinstance(m, bytes) else json.loads(m)["type"] for m in sink.conns[0]]
    assert kinds == ["start"] + ["audio"] * 5 + ["hold"] + ["audio"] * 8 + ["end"]
    audio, _, _ = assemble(sink.conns)
    assert all(audio[i * FRAME] == frame(i * FRAME) for i in range(13))


def test_runs_are_dropped_and_resent_by_whole_frames(framing):
    """Drop-oldest and the resend window cut runs at frame boundaries."""
    port = free_port()
    run3 = lambda k: b"".join(frame((3 * k + i) * FRAME) for i in range(3))   # noqa: E731

    async def crash_after_six_frames(ws, index, msgs):
        if index == 0 and sum(isinstance(m, bytes) for m in msgs) == 6:
            ws.transport.abort()

    async def main():
        s = Sender(config(port, max_buffer_ms=100, resend_ms=100, linger_s=5))   # 5 frames queued, 5 resent
        st = s.open_stream("b3", start_msg("b3"))
        for k in range(6):                                 # 18 frames while the server is down
            st.send_audio(run3(k))
        assert st.queued_samples == 5 * FRAME and st.dropped_samples == 13 * FRAME
        sink = await Sink(on_message=crash_after_six_frames).start(port)
        await wait_for(lambda: st.sent_samples == 5 * FRAME)
        for k in range(6, 8):                              # 6 more once the first five are out
            st.send_audio(run3(k))
            await asyncio.sleep(0.1)
        await wait_for(lambda: st.reconnects == 1)
        st.end(end_msg("b3"))
        await s.drain(5)
        await s.close()
        await sink.stop()
        return sink, st

    sink, st = run(main())
    first = sink.conns[0]
    assert json.loads(first[1]) == {"type": "drop", "call_id": "call-1", "tag": "caller", "stream_id": "b3",
                                    "offset": 13 * FRAME, "samples": 13 * FRAME}
    assert all(len(m) == 2 * FRAME for m in first if isinstance(m, bytes))
    resumed = json.loads(sink.conns[1][0])
    got = 13 + sum(isinstance(m, bytes) for m in first)                 # frames 13 to 18 at least
    assert got >= 19
    assert resumed["resumed"] is True and resumed["offset"] % FRAME == 0  # resent from a frame boundary
    assert (got - 5) * FRAME <= resumed["offset"] <= got * FRAME         # nothing lost, at most 100 ms again
    audio, _, end = assemble(sink.conns)
    assert sorted(audio) == [i * FRAME for i in range(13, 24)]
    assert all(audio[i * FRAME] == frame(i * FRAME) for i in range(13, 24))
    assert end["samples"] == 24 * FRAME and end["dropped_ms"] == 13 * 20 and end["reconnects"] == 1


def test_no_data_frame_once_websockets_is_closing():
    """A raw server closes the first connection (a close frame, then the TCP
    connection held open for a while): once websockets has answered the close,
    the sender writes nothing more on it; audio queued meanwhile goes out on the
    next connection.  Frames are read off the socket as they come, whatever the
    WebSocket state."""
    from websockets.frames import Close, Frame, Opcode
    from websockets.server import ServerProtocol
    from websockets.streams import StreamReader

    conns: list[list] = []

    async def handle(reader, writer):
        index = len(conns)
        frames: list = []
        conns.append(frames)
        proto = ServerProtocol()                           # the opening handshake, sans-I/O
        events: list = []
        while not events:
            data = await reader.read(65536)
            if not data:
                return
            proto.receive_data(data)
            events = proto.events_received()
        proto.send_response(proto.accept(events[0]))
        writer.write(b"".join(proto.data_to_send()))
        stream = StreamReader()
        closing = False

        def frames_in():
            while True:
                parser = Frame.parse(stream.read_exact, mask=True)
                try:
                    next(parser)
                    return                              # incomplete: wait for more
                except StopIteration as done:
                    frames.append(done.value)

        while True:
            data = await reader.read(65536)
            if not data:
                break
            stream.feed_data(data)
            frames_in()
            if index == 0 and not closing and frames:
                closing = True                          # after start: close, but keep the TCP connection
                writer.write(Frame(Opcode.CLOSE, Close(1001, "going away").serialize()).serialize(mask=False))
                asyncio.get_running_loop().call_later(0.5, writer.close)
            if index > 0 and frames and frames[-1].opcode is Opcode.CLOSE:
                writer.write(Frame(Opcode.CLOSE, frames[-1].data).serialize(mask=False))
                writer.close()
                break
        writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        s = Sender(config(port))
        st = s.open_stream("b4", start_msg("b4"))
        await wait_for(lambda: conns and any(f.opcode is Opcode.CLOSE for f in conns[0]))   # websockets answered
        for i in range(20):                                # queued while the first connection closes
            st.send_audio(frame(i * FRAME))
            await asyncio.sleep(0.01)
        await wait_for(lambda: st.sent_samples == 20 * FRAME and st.reconnects == 1, 5)
        st.end(end_msg("b4"))
        await s.drain(5)
        await s.close()
        server.close()
        await server.wait_closed()
        return st

    run(main())
    first = [(f.opcode, f.data) for f in conns[0]]
    assert [op for op, _ in first] == [Opcode.TEXT, Opcode.CLOSE]          # start, the answer to the close
    assert json.loads(first[0][1])["resumed"] is False
    messages = [bytes(f.data) if f.opcode is Opcode.BINARY else f.data.decode()
                for f in conns[1] if f.opcode in (Opcode.TEXT, Opcode.BINARY)]
    audio, _, end = assemble([messages])
    assert sorted(audio) == [i * FRAME for i in range(20)] and end["dropped_ms"] == 0 and end["reconnects"] == 1


def test_handshakes_are_ramped_by_max_connecting():
    """Many streams opened at once (calls in progress when rtp2ws starts) connect at
    most ``max_connecting`` at a time; the others wait their turn with their audio
    queued, and every stream is delivered whole."""
    n, limit = 40, 4
    raise_fd_limit(4 * n + 256)
    state = {"now": 0, "max": 0}

    async def slow_handshake(connection, request):
        state["now"] += 1
        state["max"] = max(state["max"], state["now"])
        try:
            await asyncio.sleep(0.1)
        finally:
            state["now"] -= 1
        return None

    async def main():
        sink = await Sink().start(process_request=slow_handshake)
        s = Sender(config(sink.port, max_connecting=limit))
        streams = [s.open_stream(f"r{i}", start_msg(f"r{i}")) for i in range(n)]
        for st in streams:
            st.send_audio(frame(0))
        await wait_for(lambda: all(st.connected for st in streams), 20)
        for st in streams:
            st.send_audio(frame(FRAME))
            st.end(end_msg(st.stream_id))
        await s.drain(10)
        await s.close()
        await sink.stop()
        return sink, s, streams

    sink, s, streams = run(main(), 30)
    assert state["max"] == limit
    assert len(sink.conns) == n and s.stats["connects"] == n and s.stats["connect_failures"] == 0
    ends = [assemble([c])[2] for c in sink.conns]
    assert all(e["samples"] == 2 * FRAME and e["dropped_ms"] == 0 for e in ends)
    with pytest.raises(ValueError):
        Sender(config(sink.port, max_connecting=0))


def test_masking_keys_come_from_a_pool_each_byte_used_once(monkeypatch):
    """os.urandom lets the other thread take the GIL, so the keys of many flushes
    come from one call; no key byte is ever handed out twice."""
    calls = []
    counter = iter(range(10 ** 9))

    def fake_urandom(n):
        calls.append(n)
        return b"".join(next(counter).to_bytes(4, "big") for _ in range(n // 4))

    monkeypatch.setattr(sender_mod.os, "urandom", fake_urandom)
    s = Sender(config(1))
    got = [s._mask_keys(4 * k) for k in [1, 7, 50, 3] * 1000]
    joined = b"".join(got)
    assert len(joined) == 4 * 61 * 1000
    words = [joined[i:i + 4] for i in range(0, len(joined), 4)]
    assert len(set(words)) == len(words)                    # never the same key twice
    assert len(calls) == -(-len(joined) // sender_mod.KEY_POOL)   # one call per pool
    big = s._mask_keys(sender_mod.KEY_POOL + 8)             # more than a pool at once
    assert len(big) == sender_mod.KEY_POOL + 8 and big[:4] not in set(words)


# --------------------------------------------------------------------------- delivery needs evidence
#
# A stream is delivered once the server answered the closing handshake that follows
# ``end``: WebSocket frames are read in order, so its close frame says it read all
# that came before.  Audio written but not yet acknowledged (by that close, or by
# the pong to a ping written after it) stays in the resend window; what had to
# leave it before any acknowledgement is counted as undelivered when a connection
# breaks, and so is what is left unacknowledged when the stream gives up.


def _audio_received(conns) -> set[int]:
    """Offsets of the frames a server received, over all its connections."""
    audio, _, _ = assemble([c for c in conns if c])
    return set(audio)


async def _send_paced(st, first: int, count: int) -> None:
    for i in range(first, first + count):
        st.send_audio(frame(i * FRAME))
        await asyncio.sleep(0.003)                       # a write (and a server read) per frame


def test_end_counts_only_once_the_server_answers_the_close(framing):
    """The server reads everything, ``end`` included, and dies before it answers the
    close: the stream reconnects and sends again everything not acknowledged, then
    ``end``, to the restarted server."""
    from rawws import RawServer
    total = 60

    def crash_on_end(index, msgs):
        return index == 0 and isinstance(msgs[-1], str) and json.loads(msgs[-1])["type"] == "end"

    async def main():
        sink = await RawServer(crash=crash_on_end).start()
        s = Sender(config(sink.port, resend_ms=2000))
        st = s.open_stream("d1", start_msg("d1"))
        await _send_paced(st, 0, total)
        st.end(end_msg("d1"))
        await s.drain(5)
        await s.close()
        await sink.stop()
        return sink, s, st

    sink, s, st = run(main())
    assert len(sink.conns) == 2
    assert [m["type"] for m in texts(sink.conns[0])] == ["start", "end"]
    resumed = json.loads(sink.conns[1][0])
    assert resumed["resumed"] is True and resumed["offset"] < total * FRAME
    again, _, end = assemble(sink.conns[1:])
    assert sorted(again) == list(range(resumed["offset"], total * FRAME, FRAME))   # all of it, from there on
    assert end["samples"] == total * FRAME and end["reconnects"] == 1
    audio, _, _ = assemble(sink.conns)
    assert sorted(audio) == [i * FRAME for i in range(total)]
    assert all(audio[i * FRAME] == frame(i * FRAME) for i in range(total))
    assert st.done and not st.given_up and st.reconnects == 1
    assert st.undelivered_samples == 0 and st.acknowledged == total * FRAME and st.retained_samples == 0
    assert s.stats["undelivered_ms"] == 0 and s.stats["given_up"] == 0


def _stop_reading_at(n: int, stuck: list, crash_after: float | None = None):
    """on_message: the first connection to have ``n`` frames stops reading the
    socket (what websockets already parsed is still handed over) and holds the
    connection, or dies ``crash_after`` seconds later."""
    async def on_message(ws, index, msgs):
        if not stuck and sum(isinstance(m, bytes) for m in msgs) == n:
            ws.transport.pause_reading()
            stuck.append(index)
            if crash_after is not None:
                asyncio.get_running_loop().call_later(crash_after, ws.transport.abort)
    return on_message


def test_server_stopped_near_the_end_gets_the_rest_when_it_is_back(framing):
    """The server stops reading 40 frames into 100 (the rest and ``end`` sit in the
    kernel's buffers), then dies without a close: everything it had not acknowledged
    is sent again to the next server, which gets the whole stream."""
    total, n = 100, 40
    stuck: list = []

    async def main():
        sink = await Sink(on_message=_stop_reading_at(n, stuck, crash_after=0.5)).start()
        s = Sender(config(sink.port, resend_ms=total * 20))       # the window holds the whole stream
        st = s.open_stream("d2", start_msg("d2"))
        await _send_paced(st, 0, total)
        st.end(end_msg("d2"))
        await s.drain(5)
        await s.close()
        await sink.stop()
        return sink, s, st

    sink, s, st = run(main())
    assert stuck == [0] and len(sink.conns) == 2
    got0 = _audio_received(sink.conns[:1])
    resumed = json.loads(sink.conns[1][0])
    assert resumed["resumed"] is True and resumed["offset"] <= max(got0) + FRAME   # no hole between them
    audio, _, end = assemble(sink.conns)
    assert sorted(audio) == [i * FRAME for i in range(total)] and end["samples"] == total * FRAME
    assert all(audio[i * FRAME] == frame(i * FRAME) for i in range(total))
    assert st.done and not st.given_up and st.undelivered_samples == 0 and s.stats["undelivered_ms"] == 0


def test_what_left_the_resend_window_unacknowledged_is_counted_undelivered(caplog, framing):
    """Same server, a 100 ms window: the audio written after the last acknowledgement
    that no longer fits the window is lost with the connection.  It is counted (log,
    ``undelivered_ms``), never more than was acknowledged-late, never less than lost."""
    caplog.set_level(logging.INFO, logger="rtp2ws.sender")
    total, n = 100, 40
    stuck: list = []

    async def main():
        sink = await Sink(on_message=_stop_reading_at(n, stuck, crash_after=0.5)).start()
        s = Sender(config(sink.port, resend_ms=100))              # 5 frames
        st = s.open_stream("d3", start_msg("d3"))
        await _send_paced(st, 0, total)
        st.end(end_msg("d3"))
        await s.drain(5)
        await s.close()
        await sink.stop()
        return sink, s, st

    sink, s, st = run(main())
    assert stuck == [0] and len(sink.conns) == 2
    resumed = json.loads(sink.conns[1][0])
    assert resumed["offset"] == (total - 5) * FRAME                # the window: the last 5 frames
    missing = total - len(_audio_received(sink.conns))
    assert missing > 0
    lost = st.undelivered_samples
    # counted, never silently lost; over-counted by at most what was read after the last
    # acknowledgement: a ping interval (25 frames) and what was written while its pong came back
    assert missing * FRAME <= lost <= (missing + 40) * FRAME
    assert st.done and not st.given_up                             # the end itself was delivered
    assert s.stats["undelivered_ms"] == -(-lost // 16)
    lines = [r.getMessage() for r in caplog.records if "counted as undelivered" in r.getMessage()]
    assert lines == [f"stream d3: {-(-lost // 16)} ms of audio sent before the connection ended was not "
                     f"acknowledged and no longer fits the resend window (--resend-ms 100): counted as undelivered"]


def test_server_that_stops_reading_near_the_end_is_given_up(caplog):
    """The server stops reading 40 frames into 100 and holds the connection; so do its
    next connections.  The stream gives up at the end of the linger time, and all it
    could not prove delivered is reported."""
    caplog.set_level(logging.INFO, logger="rtp2ws.sender")
    total, n = 100, 40
    stuck: list = []

    def stay_stuck(connection, request, response):
        if stuck:
            connection.transport.pause_reading()     # reads nothing after the handshake
        return None

    async def main():
        sink = await Sink(on_message=_stop_reading_at(n, stuck)).start(process_response=stay_stuck)
        s = Sender(config(sink.port, resend_ms=200, close_timeout=0.3, linger_s=1.2))
        st = s.open_stream("d4", start_msg("d4"))
        await _send_paced(st, 0, total)
        t0 = time.monotonic()
        st.end(end_msg("d4"))
        await s.drain(5)
        took = time.monotonic() - t0
        await s.close()
        await sink.stop()
        return sink, s, st, took

    sink, s, st, took = run(main())
    assert took < 4                                          # bounded by the linger time
    assert st.done and st.given_up and s.stats["given_up"] == 1
    missing = total - len(_audio_received(sink.conns))
    lost = st.undelivered_samples
    assert missing >= total - n - 20 and missing * FRAME <= lost <= (missing + 40) * FRAME
    assert st.dropped_samples == 0 and s.stats["undelivered_ms"] == lost // 16
    assert len(sink.conns) >= 2                              # it did try again
    gave_up = [r.getMessage() for r in caplog.records if "giving up" in r.getMessage()]
    assert len(gave_up) == 1 and "not acknowledged by the server" in gave_up[0]


def test_server_that_accepts_and_never_reads_is_given_up():
    """Nothing after the handshake is ever read: the short stream fits in the kernel's
    buffers, ``end`` is written, and still the stream is not delivered."""
    from rawws import RawServer

    async def main():
        server = await RawServer(read=False).start()
        s = Sender(config(server.port, close_timeout=0.2, linger_s=0.8))
        st = s.open_stream("d5", start_msg("d5"))
        for i in range(10):
            st.send_audio(frame(i * FRAME))
        await wait_for(lambda: st.sent_samples == 10 * FRAME)
        t0 = time.monotonic()
        st.end(end_msg("d5"))
        await s.drain(5)
        took = time.monotonic() - t0
        await s.close()
        await server.stop()
        return server, s, st, took

    server, s, st, took = run(main())
    assert took < 3
    assert st.done and st.given_up and st.acknowledged == 0
    assert st.undelivered_samples == 10 * FRAME and st.dropped_samples == 0
    assert s.stats["undelivered_ms"] == 200 and s.stats["given_up"] == 1
    assert server.accepted >= 2


def test_pongs_acknowledge_audio_and_free_the_resend_window():
    """A long stream to a server that reads: pings written after the audio are answered,
    so the resend window holds only the last half-second or so, never resend_ms."""
    total = 300                                               # 6 s

    async def main():
        sink = await Sink().start()
        s = Sender(config(sink.port, resend_ms=2000))         # a ping every 1000 ms of audio
        st = s.open_stream("d6", start_msg("d6"))
        peak = 0
        for i in range(total):
            st.send_audio(frame(i * FRAME))
            await asyncio.sleep(0.002)
            peak = max(peak, st.retained_samples)
        acknowledged = st.acknowledged
        st.end(end_msg("d6"))
        await s.drain(5)
        await s.close()
        await sink.stop()
        return sink, st, peak, acknowledged

    sink, st, peak, acknowledged = run(main())
    assert acknowledged >= (total - 60) * FRAME               # acknowledged while the stream went on
    assert peak <= 1000 * 16 + 20 * FRAME                     # one ping interval and a pong's delay
    audio, events, end = assemble(sink.conns)
    assert len(sink.conns) == 1 and not events and sorted(audio) == [i * FRAME for i in range(total)]
    assert st.acknowledged == total * FRAME and st.retained_samples == 0 and st.undelivered_samples == 0


def test_summary_and_exit_status_report_undelivered_audio():
    """The summary line (replay and live) shows undelivered audio, and any of it
    (or a stream refused or given up) is an error: exit status 1."""
    from rtp2ws.run.live import summary_line
    from rtp2ws.ws.bridge import stream_summary
    from rtp2ws.ws.protocol import delivery_error

    ok = {"streams": 2, "reconnects": 1, "dropped_ms": 0, "undelivered_ms": 0, "given_up": 0, "refused": 0}
    assert stream_summary(ok) == "streamed 2 streams, 1 reconnects, 0 ms dropped, 0 ms undelivered"
    assert delivery_error(ok) is None and delivery_error(None) is None
    lost = dict(ok, undelivered_ms=120)
    assert stream_summary(lost).endswith(", 0 ms dropped, 120 ms undelivered")
    assert delivery_error(lost) == ("0 streams refused by the server, 0 given up, 120 ms of audio sent but not "
                                    "acknowledged by the server (see the log above)")
    assert delivery_error(dict(ok, given_up=1)).startswith("0 streams refused by the server, 1 given up")
    live = {"interface": "lo", "packets": 10, "kernel_drops": 0, "interface_drops": 0,
            "calls": 1, "legs": 2, "elapsed_s": 1.0}
    assert summary_line(live, lost).endswith("; streamed 2 streams, 1 reconnects, 0 ms dropped, 120 ms undelivered")


def test_a_live_stream_holds_one_task_no_handshake_headers_and_drops_what_the_server_sends():
    """What a live stream keeps in Python, beyond websockets' connection: its own task
    (websockets reads without a reader task: the server's data frames are dropped as they
    arrive, so none queue up), none of the handshake's headers, and a wake-up that keeps
    no list of waiters.  A server that sends messages all along still has its pongs read,
    so the resend window is freed as usual."""
    total = 150                                               # 3 s

    async def chatty(ws, index):
        for i in range(50):                                   # beyond websockets' max_queue (16)
            await ws.send(f"hello {i}")
            await ws.send(b"\x00" * 200)

    async def main():
        sink = await Sink(on_connect=chatty).start()
        s = Sender(config(sink.port))                         # a ping every 500 ms of audio
        streams = [s.open_stream(f"h{k}", start_msg(f"h{k}")) for k in range(3)]
        seen = {}
        for i in range(total):
            for st in streams:
                st.send_audio(frame(i * FRAME))
            await asyncio.sleep(0.002)
            if i == total // 2:
                seen["tasks"] = [t.get_coro().__qualname__ for t in asyncio.all_tasks()
                                 if t.get_coro().__qualname__.startswith(("Stream.", "StreamTask."))]
                seen["live"] = [st._live for st in streams]
                seen["wake"] = [gc.get_referents(st._wakeup) for st in streams]
        acknowledged = [st.acknowledged for st in streams]
        for k, st in enumerate(streams):
            st.end(end_msg(f"h{k}"))
        await s.drain(5)
        await s.close()
        await sink.stop()
        return streams, seen, acknowledged

    streams, seen, acknowledged = run(main())
    assert sorted(seen["tasks"]) == ["StreamTask._run"] * 3     # ws.streamtask: a stream's one task
    for ws in seen["live"]:
        assert ws is not None and ws.request is None and len(ws.response.headers) == 0
    assert all(not any(isinstance(r, (list, set)) or type(r).__name__ == "deque" for r in refs)
               for refs in seen["wake"])
    assert all(a >= (total - 60) * FRAME for a in acknowledged)      # pongs read while messages came
    assert all(st.done and st.acknowledged == total * FRAME and st.undelivered_samples == 0 for st in streams)


def test_a_task_flush_that_leaves_more_does_not_mark_a_marked_stream_twice(tmp_path):
    """A TLS stream (no wire: the sender takes its batch itself) marked by the audio it was
    given, then flushed by its own task (``_flush_now``, as after connecting or a drain)
    with more left than a batch: the task's take must not mark it a second time, else the
    next flush took two batches into one write with keys for one, and the stream was
    given up as an internal error.  Every frame arrives once, in order."""
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    n = 400                                             # 8 s of frames: 256 KB, four batches

    async def main():
        sink = await Sink().start(ssl=server_ctx)
        sender = Sender(SenderConfig(url=f"wss://127.0.0.1:{sink.port}/audio", ca_file=str(ca_file),
                                     max_buffer_ms=60_000, resend_ms=60_000))
        st = sender.open_stream("m1", start_msg("m1"))
        for _ in range(200):
            if st._live is not None:
                break
            await asyncio.sleep(0.01)
        assert st._live is not None and st._wire is None    # TLS: no wire
        with sender._lock:
            for i in range(n):
                st.send_audio(frame(i * FRAME))             # marks it, the loop's flush is due
            st._flush_now()                                 # the task's own flush, before it
            assert sender._dirty.count(st) == 1
        st.end(end_msg("m1"))
        await sender.drain(10)
        await sender.close()
        await sink.stop()
        return sink, st

    sink, st = run(main())
    assert st.done and not st.given_up
    audio, _, end = assemble(sink.conns)
    assert [audio[k] for k in sorted(audio)] == [frame(i * FRAME) for i in range(n)]
    assert sorted(audio) == [i * FRAME for i in range(n)] and end["stream_id"] == "m1"
