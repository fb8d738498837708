"""``rtp2ws sink``: a real server on 127.0.0.1, real websockets clients, and the CLI as a subprocess."""

import asyncio
import json
import os
import signal
import ssl
import struct

import numpy as np
import pytest
import trustme
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from rtp2ws.sinks.wav import read_wav, safe_name, wav_header
from rtp2ws.sinkserver import server as sinkserver
from rtp2ws.sinkserver.server import SinkServer
from rtp2ws.sinkserver.session import Refusal, Session, parse_message
from rtp2ws.ws import protocol

from sinkclient import (
    FRAME,
    TIMEOUT,
    end_msg,
    event,
    frame,
    frames,
    read_jsonl,
    run,
    send_stream,
    serving,
    spawn_sink,
    start_msg,
    wav_bytes_like_wavout,
)


def header_of(path):
    with open(path, "rb") as f:
        return f.read(44)


async def refused(uri, msgs):
    """Send raw messages (bytes or str) and return the close code and reason the sink sent."""
    async with connect(uri, max_size=None) as ws:
        for m in msgs:
            await ws.send(m)
        await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
    return ws.close_code, ws.close_reason


# -- sans-I/O core -------------------------------------------------------------------


def test_session_counts_g711_frames_in_bytes_and_keeps_the_format():
    """A PCMU/PCMA stream's samples are one byte each; a start that resumes the stream in
    another codec or rate is refused."""
    s = Session()
    s.receive_text(json.dumps(start_msg(channels=2, codec="PCMU", sample_rate=8000)), 1.0)
    assert s.receive_binary(b"\xff" * 8).offset == 0 and s.position == 4
    with pytest.raises(Refusal) as e:
        s.receive_binary(b"\xff" * 3)
    assert (e.value.code, e.value.reason) == (1007, "binary frame of 3 bytes is not a multiple of 2 "
                                                    "(2 channels of G.711 bytes)")
    for change in ({"codec": "PCMA"}, {"sample_rate": 16000}):
        with pytest.raises(Refusal) as e:
            s.receive_text(json.dumps(dict(start_msg(channels=2, codec="PCMU", sample_rate=8000, resumed=True),
                                           **change)), 2.0)
        assert e.value.reason == f"invalid start: {next(iter(change))} changed on this connection"


def test_store_writes_each_streams_format_and_reloads_it(tmp_path):
    """The WAV of a PCMA stream at 24 kHz: format tag 6, 8 bits, its rate, the fact chunk;
    after a restart of the store (streams.jsonl) a resume goes on in the same format."""
    from rtp2ws.sinks.wav import read_wav_format
    from rtp2ws.sinkserver.server import StreamStore

    store = StreamStore(str(tmp_path))
    st, _ = store.attach(start_msg(codec="PCMA", sample_rate=24000), 1.0)
    store.write(st, 0, bytes(range(100)))
    store.detach(st)
    store.close()
    again = StreamStore(str(tmp_path))
    st, created = again.attach(start_msg(codec="PCMA", sample_rate=24000, resumed=True, offset=100), 3.0)
    assert not created and (st.codec, st.sample_rate, st.samples) == ("PCMA", 24000, 100)
    again.write(st, 100, b"\xd5" * 20)
    again.detach(st)
    again.close()
    data, audio, ch = read_wav_format(str(tmp_path / st.path))
    assert (audio.rate, audio.encoding, ch, data) == (24000, "alaw", 1, bytes(range(100)) + b"\xd5" * 20)
    raw = (tmp_path / st.path).read_bytes()
    assert raw[38:50] == b"fact" + (4).to_bytes(4, "little") + (120).to_bytes(4, "little")


def test_session_offsets_and_refusals():
    s = Session()
    with pytest.raises(Refusal) as e:
        s.receive_binary(b"\0\0")
    assert (e.value.code, e.value.reason) == (1008, "binary frame before start")
    with pytest.raises(Refusal) as e:
        s.receive_text(json.dumps(event("dtmf", digit="1", duration_ms=100, offset=0)), 1.0)
    assert (e.value.code, e.value.reason) == (1008, "first message must be start, not dtmf")
    s.receive_text(json.dumps(start_msg(channels=2, offset=100)), 1.0)
    a = s.receive_binary(b"\0" * 8)
    assert (a.offset, s.position) == (100, 102)
    with pytest.raises(Refusal) as e:
        s.receive_binary(b"\0" * 6)
    assert (e.value.code, e.value.reason) == (1007, "binary frame of 6 bytes is not a multiple of 4 (2 channels of int16)")
    s.receive_text(json.dumps(event("drop", offset=500, samples=398)), 2.0)
    assert s.receive_binary(b"\0" * 4).offset == 500
    with pytest.raises(Refusal) as e:
        s.receive_text(json.dumps(start_msg(stream_id="other", channels=2)), 3.0)
    assert (e.value.code, e.value.reason) == (1008, "start stream_id does not match this connection's start")
    s.receive_text(json.dumps(end_msg(501)), 4.0)
    with pytest.raises(Refusal) as e:
        s.receive_binary(b"\0" * 4)
    assert e.value.reason == "binary frame after end"


def test_parse_message_reasons():
    def reason(text):
        with pytest.raises(Refusal) as e:
            parse_message(text)
        return e.value.code, e.value.reason

    invalid = "invalid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"
    assert reason("{nope") == (1007, invalid)
    assert reason("[1]") == (1008, "message is not a JSON object")
    assert reason("{}") == (1008, "message has no type")
    assert reason('{"type": "hello"}') == (1008, 'unknown message type "hello"')
    assert reason(json.dumps(start_msg(channels=3))) == (1008, "invalid start: channels: 3 is not one of [1, 2]")
    m = start_msg()
    del m["frame_ms"]
    assert reason(json.dumps(m)) == (1008, "invalid start: 'frame_ms' is a required property")
    code, text = reason(json.dumps(start_msg(call_id="x" * 500, tag="x" * 500)))
    assert code == 1008 and text.startswith("invalid start: tag: ") and len(text.encode()) <= 123


def test_safe_name():
    assert safe_name("a b/c@d.e") == "a_b_c@d.e"
    assert safe_name("..") == "__"
    assert safe_name(".") == "_"
    assert safe_name("") == "call"
    assert len(safe_name("x" * 500)) == 120


def test_parse_listen():
    assert sinkserver.parse_listen("127.0.0.1:0") == ("127.0.0.1", 0)
    assert sinkserver.parse_listen("[::1]:8765") == ("::1", 8765)
    with pytest.raises(ValueError, match="listen address must be host:port, not '8765'"):
        sinkserver.parse_listen("8765")


# -- server ----------------------------------------------------------------------------


def test_leg_stream_wav_and_messages(tmp_path):
    sent = frames(range(12))
    dtmf = event("dtmf", digit="5", duration_ms=120, offset=6 * FRAME, time="2024-01-01T00:00:00.120+00:00")
    msgs = [start_msg()] + [frame(i) for i in range(6)] + [dtmf] + [frame(i) for i in range(6, 12)]
    msgs.append(end_msg(12 * FRAME, packets=600, dtmf=[{"digit": "5", "duration_ms": 120}]))

    async def go():
        server, uri = await serving(tmp_path)
        try:
            code, reason = await send_stream(uri + "some/path", msgs)
        finally:
            await server.stop()
        return server, code, reason

    server, code, reason = run(go())
    assert (code, reason) == (1000, "end received")
    out = tmp_path / "out"
    path = out / "call-1@test" / "caller.wav"
    with open(path, "rb") as f:
        assert f.read() == wav_bytes_like_wavout(tmp_path, sent)
    data, rate, ch = read_wav(str(path))
    assert rate == 16000 and ch == 1 and np.array_equal(data, sent)
    s = server.streams["s1"]
    assert (s.path, s.channels, s.samples, s.ended) == ("call-1@test/caller.wav", 1, 12 * FRAME, True)
    assert not hasattr(s, "end")  # the end message is in streams.jsonl, not kept in memory
    assert server.stats["frames"] == 12 and server.stats["bytes"] == sent.nbytes and server.stats["ends"] == 1
    assert server.stats["refused"] == {}
    log = read_jsonl(out / "messages.jsonl")
    assert [r["message"] for r in log] == [msgs[0], dtmf, msgs[-1]]
    assert all(r["stream_id"] == "s1" and r["remote"].startswith("127.0.0.1:") for r in log)
    assert all(isinstance(r["received"], float) for r in log)
    index = read_jsonl(out / "streams.jsonl")
    assert [r["event"] for r in index] == ["open", "end"]
    assert index[0]["path"] == "call-1@test/caller.wav"
    assert index[1]["end"]["packets"] == 600


def test_stereo_stream(tmp_path):
    sent = frames(range(5), channels=2)
    msgs = [start_msg(tag="stereo", channels=2)] + [frame(i, 2) for i in range(5)] + [end_msg(5 * FRAME, tag="stereo")]

    async def go():
        server, uri = await serving(tmp_path)
        try:
            return await send_stream(uri, msgs)
        finally:
            await server.stop()

    assert run(go())[0] == 1000
    path = tmp_path / "out" / "call-1@test" / "stereo.wav"
    with open(path, "rb") as f:
        assert f.read() == wav_bytes_like_wavout(tmp_path, sent, channels=2)
    data, _, ch = read_wav(str(path))
    assert ch == 2 and data.shape == (5 * FRAME, 2)


def test_resume_after_abort_stitches(tmp_path):
    async def go():
        server, uri = await serving(tmp_path)
        try:
            ws = await connect(uri)
            await ws.send(protocol.encode(start_msg()))
            for i in range(10):
                await ws.send(frame(i).tobytes())
            for _ in range(200):  # until the sink has the ten frames (bounded)
                if server.stats["frames"] == 10:
                    break
                await asyncio.sleep(0.01)
            ws.transport.abort()  # no close frame: the sink sees a dropped connection
            msgs = [start_msg(resumed=True, offset=7 * FRAME)] + [frame(i) for i in range(7, 16)]
            msgs.append(end_msg(16 * FRAME, reconnects=1))
            code = await send_stream(uri, msgs)
        finally:
            await server.stop()
        return server, code

    server, code = run(go())
    assert code == (1000, "end received")
    assert server.stats["streams"] == 1 and server.stats["resumes"] == 1
    path = tmp_path / "out" / "call-1@test" / "caller.wav"
    with open(path, "rb") as f:
        assert f.read() == wav_bytes_like_wavout(tmp_path, frames(range(16)))
    assert sorted(os.listdir(path.parent)) == ["caller.wav"]


def test_drop_zero_fills_hole(tmp_path):
    msgs = [start_msg(), frame(0), frame(1), event("drop", offset=4 * FRAME, samples=2 * FRAME), frame(4), frame(5),
            end_msg(6 * FRAME)]

    async def go():
        server, uri = await serving(tmp_path)
        try:
            return await send_stream(uri, msgs)
        finally:
            await server.stop()

    assert run(go())[0] == 1000
    want = np.concatenate([frame(0), frame(1), np.zeros(2 * FRAME, "<i2"), frame(4), frame(5)])
    with open(tmp_path / "out" / "call-1@test" / "caller.wav", "rb") as f:
        assert f.read() == wav_bytes_like_wavout(tmp_path, want)


def test_resumed_start_for_unknown_stream_keeps_place_in_time(tmp_path):
    msgs = [start_msg(resumed=True, offset=2 * FRAME), frame(2), end_msg(3 * FRAME)]

    async def go():
        server, uri = await serving(tmp_path)
        try:
            return await send_stream(uri, msgs)
        finally:
            await server.stop()

    assert run(go())[0] == 1000
    data, _, _ = read_wav(str(tmp_path / "out" / "call-1@test" / "caller.wav"))
    assert np.array_equal(data, np.concatenate([np.zeros(2 * FRAME, "<i2"), frame(2)]))


def test_restart_in_process_continues_the_file(tmp_path):
    async def go():
        server, uri = await serving(tmp_path)
        ws = await connect(uri)
        await ws.send(protocol.encode(start_msg()))
        for i in range(3):
            await ws.send(frame(i).tobytes())
        for _ in range(200):
            if server.stats["frames"] == 3:
                break
            await asyncio.sleep(0.01)
        await server.stop()  # closes the connection with 1001 and fixes the header
        await ws.wait_closed()
        path = tmp_path / "out" / "call-1@test" / "caller.wav"
        assert header_of(path) == wav_header(3 * FRAME * 2)
        server, uri = await serving(tmp_path)
        try:
            assert server.streams["s1"].samples == 3 * FRAME and not server.streams["s1"].ended
            msgs = [start_msg(resumed=True, offset=2 * FRAME), frame(2), frame(3), end_msg(4 * FRAME)]
            return await send_stream(uri, msgs)
        finally:
            await server.stop()

    assert run(go())[0] == 1000
    with open(tmp_path / "out" / "call-1@test" / "caller.wav", "rb") as f:
        assert f.read() == wav_bytes_like_wavout(tmp_path, frames(range(4)))


def test_call_id_reused_by_another_stream(tmp_path):
    async def go():
        server, uri = await serving(tmp_path)
        try:
            a = await send_stream(uri, [start_msg(stream_id="A", tag="callee"), frame(0), end_msg(FRAME, "A")])
            b = await send_stream(uri, [start_msg(stream_id="B", tag="callee"), frame(1), end_msg(FRAME, "B")])
            c = await send_stream(uri, [start_msg(stream_id="C", tag="callee"), frame(2), end_msg(FRAME, "C")])
        finally:
            await server.stop()
        return server, a, b, c

    server, *codes = run(go())
    assert [c[0] for c in codes] == [1000, 1000, 1000]
    assert [server.streams[k].path for k in "ABC"] == ["call-1@test/callee.wav", "call-1@test/callee-2.wav",
                                                      "call-1@test/callee-3.wav"]
    for k, i in zip("ABC", range(3)):
        data, _, _ = read_wav(str(tmp_path / "out" / server.streams[k].path))
        assert np.array_equal(data, frame(i))


def test_malformed_input_refused_others_unaffected(tmp_path, caplog):
    caplog.set_level("WARNING", logger="rtp2ws.sink")
    good_start = protocol.encode(start_msg(stream_id="bad"))
    stereo_start = protocol.encode(start_msg(stream_id="bad2", channels=2))
    cases = [
        (["{not json"], 1007, "invalid JSON: "),
        ([protocol.encode({"type": "hello", "call_id": "c", "tag": "caller", "stream_id": "x"})], 1008,
         'unknown message type "hello"'),
        ([protocol.encode(start_msg(channels=3))], 1008, "invalid start: channels: 3 is not one of [1, 2]"),
        ([good_start, protocol.encode(event("dtmf", stream_id="bad", digit="", duration_ms=1, offset=0))], 1008,
         "invalid dtmf: digit: "),
        ([b"\x00\x00"], 1008, "binary frame before start"),
        ([stereo_start, b"\x00" * 6], 1007, "binary frame of 6 bytes is not a multiple of 4 (2 channels of int16)"),
        ([good_start, b"\x00" * (2 ** 16 + 2)], 1009, ""),
        ([good_start, protocol.encode(start_msg(stream_id="other"))], 1008,
         "start stream_id does not match this connection's start"),
    ]

    async def go():
        server, uri = await serving(tmp_path, max_size=2 ** 16)
        try:
            good = await connect(uri)
            await good.send(protocol.encode(start_msg(stream_id="good", call_id="good@test")))
            for i in range(5):
                await good.send(frame(i).tobytes())
            results = await asyncio.gather(*(refused(uri, msgs) for msgs, _, _ in cases))
            for i in range(5, 10):
                await good.send(frame(i).tobytes())
            await good.send(protocol.encode(end_msg(10 * FRAME, stream_id="good", call_id="good@test")))
            await asyncio.wait_for(good.wait_closed(), TIMEOUT)
            return server, results, good.close_code
        finally:
            await server.stop()

    server, results, good_code = run(go())
    for (msgs, code, prefix), (got_code, got_reason) in zip(cases, results):
        assert got_code == code, (msgs[:1], got_code, got_reason)
        assert got_reason.startswith(prefix), got_reason
        assert len(got_reason.encode()) <= 123
    assert good_code == 1000
    data, _, _ = read_wav(str(tmp_path / "out" / "good@test" / "caller.wav"))
    assert np.array_equal(data, frames(range(10)))
    assert server.stats["refused"] == {1007: 2, 1008: 5, 1009: 1}
    warnings = [r.getMessage() for r in caplog.records if r.name == "rtp2ws.sink"]
    assert len(warnings) == 8 and all(w.startswith("refused 127.0.0.1:") for w in warnings)
    # a refused stream that got as far as start still has a valid (empty) WAV
    data, _, _ = read_wav(str(tmp_path / "out" / "call-1@test" / "caller.wav"))
    assert len(data) == 0


def test_token(tmp_path, caplog):
    caplog.set_level("WARNING", logger="rtp2ws.sink")

    async def go():
        server, uri = await serving(tmp_path, token="s3cret")
        try:
            ok = await send_stream(uri, [start_msg(), frame(0), end_msg(FRAME)],
                                   additional_headers={"Authorization": "Bearer s3cret"})
            statuses = []
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
                with pytest.raises(InvalidStatus) as e:
                    await connect(uri, additional_headers=headers)
                statuses.append(e.value.response.status_code)
            return server, ok, statuses
        finally:
            await server.stop()

    server, ok, statuses = run(go())
    assert ok[0] == 1000
    assert statuses == [401, 401, 401]
    assert server.stats["refused"] == {401: 3}
    assert not any("s3cret" in r.getMessage() for r in caplog.records)


def test_wss(tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)

    async def go():
        server = SinkServer(str(tmp_path / "out"), ssl_context=server_ctx)
        port = await server.start()
        uri = f"wss://127.0.0.1:{port}/"
        try:
            ok = await send_stream(uri, [start_msg(), frame(0), end_msg(FRAME)], ssl=client_ctx)
            with pytest.raises(ssl.SSLCertVerificationError):
                await connect(uri, ssl=ssl.create_default_context())
            return ok
        finally:
            await server.stop()

    assert run(go())[0] == 1000
    data, _, _ = read_wav(str(tmp_path / "out" / "call-1@test" / "caller.wav"))
    assert np.array_equal(data, frame(0))


# -- command line ----------------------------------------------------------------------


async def wait_for_size(path, size):
    for _ in range(500):
        if os.path.exists(path) and os.path.getsize(path) >= size:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{path} never reached {size} bytes")


def test_cli_sigkill_restart_resume(tmp_path):
    path = tmp_path / "out" / "call-1@test" / "caller.wav"

    async def go():
        proc, base = await spawn_sink(tmp_path)
        assert base.startswith("ws://127.0.0.1:") and not base.endswith(":0")
        try:
            ws = await connect(base)
            await ws.send(protocol.encode(start_msg()))
            for i in range(10):
                await ws.send(frame(i).tobytes())
            await wait_for_size(path, 44 + 10 * FRAME * 2)  # the frames reached the OS
        finally:
            proc.send_signal(signal.SIGKILL)
            await asyncio.wait_for(proc.wait(), TIMEOUT)
        ws.transport.abort()
        assert struct.unpack_from("<I", header_of(path), 40)[0] < 10 * FRAME * 2  # header not yet fixed
        proc, base = await spawn_sink(tmp_path, name="sink2")
        try:
            assert header_of(path) == wav_header(10 * FRAME * 2)  # start-up fixed the killed sink's file
            msgs = [start_msg(resumed=True, offset=7 * FRAME)] + [frame(i) for i in range(7, 16)]
            code = await send_stream(base, msgs + [end_msg(16 * FRAME, reconnects=1)])
        finally:
            proc.send_signal(signal.SIGTERM)
            rc = await asyncio.wait_for(proc.wait(), TIMEOUT)
        return code, rc

    code, rc = run(go())
    assert code == (1000, "end received") and rc == 0
    with open(path, "rb") as f:
        assert f.read() == wav_bytes_like_wavout(tmp_path, frames(range(16)))
    assert [r["event"] for r in read_jsonl(tmp_path / "out" / "streams.jsonl")] == ["open", "end"]
    assert [r["message"]["type"] for r in read_jsonl(tmp_path / "out" / "messages.jsonl")] == ["start", "start",
                                                                                                 "end"]


def test_cli_wss_token_file_sigterm_fixes_header(tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "server.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    (tmp_path / "token").write_text("tok-123\n")
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    path = tmp_path / "out" / "call-1@test" / "caller.wav"

    async def go():
        proc, base = await spawn_sink(tmp_path, "--cert", str(tmp_path / "server.pem"), "--key",
                                      str(tmp_path / "server.key"), "--token-file", str(tmp_path / "token"),
                                      "--ping-interval", "1", "--ping-timeout", "1")
        try:
            assert base.startswith("wss://127.0.0.1:")
            with pytest.raises(InvalidStatus) as e:
                await connect(base, ssl=client_ctx)
            assert e.value.response.status_code == 401
            ws = await connect(base, ssl=client_ctx, additional_headers={"Authorization": "Bearer tok-123"})
            await ws.send(protocol.encode(start_msg()))
            for i in range(3):
                await ws.send(frame(i).tobytes())
            await wait_for_size(path, 44 + 3 * FRAME * 2)
        finally:
            proc.send_signal(signal.SIGTERM)
            rc = await asyncio.wait_for(proc.wait(), TIMEOUT)
        await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
        return rc, ws.close_code

    rc, code = run(go())
    assert (rc, code) == (0, 1001)
    with open(path, "rb") as f:
        assert f.read() == wav_bytes_like_wavout(tmp_path, frames(range(3)))
    stderr = (tmp_path / "sink.stderr").read_text()
    assert "refused 127.0.0.1:" in stderr and "tok-123" not in stderr
