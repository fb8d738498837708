"""``rtp2ws sink`` against hostile or broken clients: a real server on 127.0.0.1 and real websockets clients.

Log forging, deep JSON, NaN, integral floats, lone surrogates, huge identifiers, far offsets, connections that
never send start, path traversal, and the bound on what the sink keeps of streams that have no connection.
"""

import asyncio
import json
import logging
import os
import random
import re
import signal

import numpy as np
import pytest
from websockets.asyncio.client import connect

from rtp2ws.sinks.wav import read_wav
from rtp2ws.sinkserver import server as sinkserver
from rtp2ws.sinkserver import session as sinksession
from rtp2ws.sinkserver.server import StreamStore
from rtp2ws.sinkserver.session import Session, json_depth, load_json, printable
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


async def closed_by_sink(uri, msgs, wait=TIMEOUT):
    """Send raw messages (str or bytes); the code and reason the sink closed with (None if it did not within
    ``wait`` seconds: then this client closes)."""
    async with connect(uri, max_size=None) as ws:
        for m in msgs:
            await ws.send(m)
        try:
            await asyncio.wait_for(ws.wait_closed(), wait)
        except asyncio.TimeoutError:
            return None, None
    return ws.close_code, ws.close_reason


async def until(predicate, what):
    for _ in range(500):  # bounded: 5 s
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never: {what}")


def one_line(text):
    return "\n" not in text and "\r" not in text and text.isprintable()


def sink_records(caplog):
    return [r for r in caplog.records if r.name == "rtp2ws.sink"]


# -- logs --------------------------------------------------------------------------------


def test_printable():
    assert printable("plain text, é and 漢字") == "plain text, é and 漢字"
    assert printable("a\nb\r\tc\\d") == "a\\nb\\r\\tc\\\\d"
    assert printable("\x00\x1b[31m\x7f\x85") == "\\x00\\x1b[31m\\x7f\\x85"
    assert printable("\u2028\u2029\u202e\ufeff\ud800") == "\\u2028\\u2029\\u202e\\ufeff\\ud800"
    assert printable("\U000e0041") == "\\U000e0041"
    assert printable("a\\nb") != printable("a\nb")  # a literal backslash-n is not a newline


FORGED_SID = "s1\n2024-01-01 00:00:00,000 rtp2ws.sink refused 10.9.9.9:1: 1000 forged\x1b[2K\u2028"
FORGED_CALL = "call\r\n\x00\u202e@evil"


def test_log_records_are_one_line(tmp_path, caplog):
    """stream_id, call_id and reasons quoting the client (a schema error's property path) never split a record."""
    caplog.set_level("INFO", logger="rtp2ws.sink")
    bad_header = start_msg(stream_id="h", sip_headers={"X-Evil\nrefused 10.9.9.9:1: 1000 forged": 5})

    async def go():
        server, uri = await serving(tmp_path)
        try:
            ws = await connect(uri)  # started, then lost: "connection closed before end" names the stream
            await ws.send(protocol.encode(start_msg(stream_id=FORGED_SID, call_id=FORGED_CALL)))
            await ws.send(frame(0).tobytes())
            await until(lambda: server.stats["frames"] == 1, "frame written")
            await ws.close()
            await until(lambda: server.stats["active"] == 0, "connection gone")
            sid = FORGED_SID + "2"
            resumed = await send_stream(uri, [start_msg(stream_id=sid, call_id=FORGED_CALL, resumed=True, offset=FRAME),
                                              frame(1), end_msg(2 * FRAME, stream_id=sid, call_id=FORGED_CALL)])
            refused = await closed_by_sink(uri, [protocol.encode(bad_header)])
            return resumed, refused
        finally:
            await server.stop()

    resumed, refused = run(go())
    assert refused[0] == 1008 and "sip_headers.X-Evil\n" in refused[1]  # the client gets its own text back
    records = sink_records(caplog)
    messages = [r.getMessage() for r in records]
    assert len(records) >= 4
    assert all(one_line(m) for m in messages), messages
    escaped_sid = printable(FORGED_SID)
    assert sum(escaped_sid in m for m in messages) >= 3  # started, closed before end, resumed-but-unknown
    assert any("sip_headers.X-Evil\\nrefused" in m for m in messages)
    assert not any(m.startswith(("2024", "refused 10.9.9.9")) for m in messages)
    # the files keep the values exactly
    log = read_jsonl(tmp_path / "out" / "messages.jsonl")
    assert log[0]["stream_id"] == FORGED_SID and log[0]["message"]["call_id"] == FORGED_CALL


def _one_forged_stream_through_the_cli(tmp_path, *args):
    """``rtp2ws sink *args`` gets one stream with a forged stream_id and call_id, then
    SIGTERM; its exit status (stderr in tmp_path/sink.stderr)."""
    async def go():
        proc, base = await spawn_sink(tmp_path, *args)
        try:
            await send_stream(base, [start_msg(stream_id=FORGED_SID, call_id=FORGED_CALL), frame(0),
                                     end_msg(FRAME, stream_id=FORGED_SID, call_id=FORGED_CALL)])
        finally:
            proc.send_signal(signal.SIGTERM)
            return await asyncio.wait_for(proc.wait(), TIMEOUT)

    return run(go())


def test_cli_stderr_one_line_per_record(tmp_path):
    """Through the real CLI: every stderr line is a record that starts with its timestamp."""
    assert _one_forged_stream_through_the_cli(tmp_path) == 0
    lines = (tmp_path / "sink.stderr").read_text().splitlines()
    sink_lines = [line for line in lines if " rtp2ws.sink " in line]
    assert any(printable(FORGED_SID) in line for line in sink_lines)
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \S+ ", line) for line in lines), lines


def test_cli_json_log_one_object_per_record(tmp_path):
    """``rtp2ws sink --log-format json``: every stderr line is a JSON object, and the lines
    about a stream carry its stream_id, call_id and tag exactly as the client sent them."""
    assert _one_forged_stream_through_the_cli(tmp_path, "--log-format", "json") == 0
    text = (tmp_path / "sink.stderr").read_text()
    docs = [json.loads(line) for line in text.split("\n") if line]
    assert docs and all({"time", "level", "logger", "message"} <= set(d) for d in docs), docs
    about = [d for d in docs if d.get("stream_id") == FORGED_SID]
    assert about and all((d["call_id"], d["tag"]) == (FORGED_CALL, "caller") for d in about), docs
    assert any(d["message"].startswith("stopped:") for d in docs)


# -- JSON --------------------------------------------------------------------------------


def _random_json(rng, depth):
    kind = rng.randrange(7 if depth < 12 else 4)
    if kind == 0:
        return rng.randrange(-10 ** 6, 10 ** 6)
    if kind == 1:
        return rng.choice([True, False, None, 1.5])
    if kind in (2, 3):  # strings full of what a naive scan would miscount
        return "".join(rng.choice(['[', ']', '{', '}', '"', '\\', '\\"', 'a', 'é', '\n', '\u2028'])
                       for _ in range(rng.randrange(8)))
    if kind in (4, 5):
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {_random_json(rng, 12) if rng.random() < 0.5 else "k": _random_json(rng, depth + 1)
            for _ in range(rng.randrange(4))}


def _depth(value):
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


def test_json_depth_is_exact_on_valid_json():
    rng = random.Random(10)
    for _ in range(2000):
        value = _random_json(rng, 0)
        for ascii_only in (True, False):
            text = json.dumps(value, ensure_ascii=ascii_only)
            assert json_depth(text.encode()) == _depth(value), text
    assert json_depth(b'["\\\\", ["\\\\\\"]"]]') == 2  # an escaped backslash then a closing quote
    assert json_depth(b"") == 0


def test_load_json_refuses_depth_and_constants():
    assert load_json("[" * 32 + "]" * 32) is not None
    for text in ("[" * 33 + "]" * 33, "[" * 100000, '{"a":' * 100000 + "1" + "}" * 100000,
                 "[" * 50000 + "]" * 50000 + "[" * 40):
        with pytest.raises(ValueError, match="nested deeper than 32 levels"):
            load_json(text)
    for text in ('{"a": NaN}', '[Infinity]', '[-Infinity]'):
        with pytest.raises(ValueError, match="is not allowed"):
            load_json(text)
    assert load_json(json.dumps({"a": "[" * 40 + '\\"{' * 40}).encode()) == {"a": "[" * 40 + '\\"{' * 40}


def test_deep_or_huge_json_closes_1007_others_unaffected(tmp_path, caplog):
    caplog.set_level("INFO")

    def nested_start(sid, levels):  # start is one level, the extra field the rest
        m = start_msg(stream_id=sid, call_id=sid)
        inner = 1
        for _ in range(levels - 1):
            inner = [inner]
        m["extra"] = inner
        return protocol.encode(m)

    cases = [
        (["[" * 100000], 1007, "invalid JSON: nested deeper than 32 levels"),
        (['{"a":' * 100000 + "1" + "}" * 100000], 1007, "invalid JSON: nested deeper than 32 levels"),
        ([nested_start("d33", 33)], 1007, "invalid JSON: nested deeper than 32 levels"),
        ([protocol.encode(start_msg(stream_id="n")).replace('"resumed":false', '"resumed":false,"x":NaN')], 1007,
         "invalid JSON: NaN is not allowed"),
        (["[" + " " * sinksession.MAX_TEXT_CHARS + "]"], 1009, f"text message of {sinksession.MAX_TEXT_CHARS + 2} "),
        ([nested_start("d32", 32), protocol.encode(end_msg(0, stream_id="d32", call_id="d32"))], 1000,
         "end received"),
    ]

    async def go():
        server, uri = await serving(tmp_path, max_size=4 * 2 ** 20)
        try:
            good = await connect(uri)
            await good.send(protocol.encode(start_msg(stream_id="good", call_id="good@test")))
            for i in range(5):
                await good.send(frame(i).tobytes())
            results = await asyncio.gather(*(closed_by_sink(uri, msgs) for msgs, _, _ in cases))
            for i in range(5, 10):
                await good.send(frame(i).tobytes())
            await good.send(protocol.encode(end_msg(10 * FRAME, stream_id="good", call_id="good@test")))
            await asyncio.wait_for(good.wait_closed(), TIMEOUT)
            return server, results, good.close_code
        finally:
            await server.stop()

    server, results, good_code = run(go())
    for (_, code, prefix), got in zip(cases, results):
        assert got[0] == code and got[1].startswith(prefix), got
    assert good_code == 1000
    data, _, _ = read_wav(str(tmp_path / "out" / "good@test" / "caller.wav"))
    assert np.array_equal(data, frames(range(10)))
    assert server.stats["refused"] == {1007: 4, 1009: 1}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no "connection handler failed"
    assert "NaN" not in (tmp_path / "out" / "messages.jsonl").read_text()


def test_integral_floats_are_integers(tmp_path):
    """JSON Schema's integer includes 1.0: offsets and channels as floats were a TypeError (1011) in pwrite."""
    msgs = [start_msg(channels=1.0, offset=float(FRAME)), frame(1), event("drop", offset=3.0 * FRAME, samples=FRAME),
            frame(3), end_msg(4 * FRAME)]

    async def go():
        server, uri = await serving(tmp_path)
        try:
            return await send_stream(uri, msgs)
        finally:
            await server.stop()

    assert run(go()) == (1000, "end received")
    want = np.concatenate([np.zeros(FRAME, "<i2"), frame(1), np.zeros(FRAME, "<i2"), frame(3)])
    with open(tmp_path / "out" / "call-1@test" / "caller.wav", "rb") as f:
        assert f.read() == wav_bytes_like_wavout(tmp_path, want)
    assert read_jsonl(tmp_path / "out" / "streams.jsonl")[0]["channels"] == 1


def test_lone_surrogate_kept_and_logs_stay_utf8(tmp_path):
    """'\\ud800' in a call_id made the UTF-8 encoding of the log lines fail (1011)."""
    call_id = "x\ud800y"
    msgs = [json.dumps(start_msg(call_id=call_id)), frame(0).tobytes(), json.dumps(end_msg(FRAME, call_id=call_id))]

    async def go():
        server, uri = await serving(tmp_path)
        try:
            return await closed_by_sink(uri, msgs)
        finally:
            await server.stop()

    assert run(go()) == (1000, "end received")
    out = tmp_path / "out"
    for name in ("streams.jsonl", "messages.jsonl"):
        raw = (out / name).read_bytes()
        raw.decode("utf-8")  # strict
        records = [json.loads(line) for line in raw.splitlines()]
        assert records[0]["call_id" if name == "streams.jsonl" else "message"] in (call_id, json.loads(msgs[0]))
    data, _, _ = read_wav(str(out / "x_y" / "caller.wav"))
    assert np.array_equal(data, frame(0))


# -- identifiers, offsets, idle connections ------------------------------------------------


def test_huge_identifiers_refused_and_session_keeps_identity_only(tmp_path):
    s = Session()
    s.receive_text(json.dumps(start_msg(sip_headers={"X-Big": "v" * 100000})), 1.0)
    assert s.start == {"stream_id": "s1", "call_id": "call-1@test", "tag": "caller", "channels": 1,
                       "codec": "L16", "sample_rate": 16000}

    limit = sinksession.MAX_ID_CHARS
    cases = [start_msg(stream_id="s" * (limit + 1)), start_msg(stream_id="c", call_id="c" * (limit + 1))]

    async def go():
        server, uri = await serving(tmp_path)
        try:
            refused = [await closed_by_sink(uri, [protocol.encode(m)]) for m in cases]
            ok = await send_stream(uri, [start_msg(stream_id="s" * limit, call_id="c" * limit), frame(0),
                                         end_msg(FRAME, stream_id="s" * limit, call_id="c" * limit)])
            return refused, ok
        finally:
            await server.stop()

    refused, ok = run(go())
    assert refused == [(1008, f"invalid start: stream_id is longer than {limit} characters"),
                       (1008, f"invalid start: call_id is longer than {limit} characters")]
    assert ok == (1000, "end received")


def test_offset_far_beyond_the_end_refused(tmp_path):
    """One frame at offset 2**31 made a 4 GiB (sparse) WAV; a frame may land at most max_gap_s beyond the end."""
    async def go():
        default, uri = await serving(tmp_path)
        try:
            far = await closed_by_sink(uri, [protocol.encode(start_msg(stream_id="far", call_id="far",
                                                                       offset=2 ** 31 - 1000)),
                                             frame(0).tobytes()])
        finally:
            await default.stop()
        server, uri = await serving(tmp_path, max_gap_s=1)
        try:
            gap = [start_msg(), frame(0), event("drop", offset=FRAME + 16000, samples=16000), frame(1),
                   event("drop", offset=2 * FRAME + 2 * 16000 + 1, samples=32001), frame(2)]
            return far, await send_stream(uri, gap)
        finally:
            await server.stop()

    far, gap = run(go())
    assert far == (1008, f"offset {2 ** 31 - 1000} is more than 3600 s beyond the end of the stream (0 samples)")
    assert os.path.getsize(tmp_path / "out" / "far" / "caller.wav") == 44
    assert gap == (1008, f"offset {2 * FRAME + 32001} is more than 1 s beyond the end of the stream "
                         f"({2 * FRAME + 16000} samples)")
    data, _, _ = read_wav(str(tmp_path / "out" / "call-1@test" / "caller.wav"))
    assert np.array_equal(data, np.concatenate([frame(0), np.zeros(16000, "<i2"), frame(1)]))


def test_connection_without_start_is_closed(tmp_path, caplog):
    caplog.set_level("WARNING", logger="rtp2ws.sink")

    async def go():
        server, uri = await serving(tmp_path, start_timeout=0.3)
        try:
            silent = await closed_by_sink(uri, [])
            slow = await connect(uri)  # started in time, then idle longer than the timeout: kept
            await slow.send(protocol.encode(start_msg()))
            await asyncio.sleep(0.6)
            await slow.send(frame(0).tobytes())
            await slow.send(protocol.encode(end_msg(FRAME)))
            await asyncio.wait_for(slow.wait_closed(), TIMEOUT)
            await until(lambda: server.stats["active"] == 0, "connections gone")
            return server, silent, slow.close_code
        finally:
            await server.stop()

    server, silent, slow_code = run(go())
    assert silent == (1008, "no start within 0.3 s")
    assert slow_code == 1000
    assert server.stats["refused"] == {1008: 1}
    assert any("no start within 0.3 s" in r.getMessage() for r in sink_records(caplog))


# -- file names ------------------------------------------------------------------------------


def test_call_id_cannot_leave_the_output_directory(tmp_path):
    """call_id goes through safe_name and tag is an enum: every file lands inside --out-dir."""
    call_ids = ["../../../escape", "/etc/passwd", "..", ".", "a/../../b", "x\x00y", "..\\..\\win", "~root"]
    msgs = [[start_msg(stream_id=f"t{i}", call_id=c), frame(i), end_msg(FRAME, stream_id=f"t{i}", call_id=c)]
            for i, c in enumerate(call_ids)]

    async def go():
        server, uri = await serving(tmp_path)
        try:
            return [await send_stream(uri, m) for m in msgs]
        finally:
            await server.stop()

    assert [c for c, _ in run(go())] == [1000] * len(call_ids)
    assert sorted(os.listdir(tmp_path)) == ["out"]
    out = os.path.realpath(tmp_path / "out")
    wavs = [os.path.join(d, f) for d, _, fs in os.walk(out) for f in fs if f.endswith(".wav")]
    assert len(wavs) == len(call_ids)
    assert all(os.path.realpath(w).startswith(out + os.sep) for w in wavs)


def test_call_ids_naming_the_sinks_own_files_get_a_folder_of_their_own(tmp_path):
    """A call_id "streams.jsonl" or "messages.jsonl" would be a folder where the sink's own
    log is (issue 10, item 7, on the sink's side): it gets a hashed name instead."""
    call_ids = ["streams.jsonl", "messages.jsonl", "STREAMS.JSONL"]
    msgs = [[start_msg(stream_id=f"o{i}", call_id=c), frame(i), end_msg(FRAME, stream_id=f"o{i}", call_id=c)]
            for i, c in enumerate(call_ids)]

    async def go():
        server, uri = await serving(tmp_path)
        try:
            return [await send_stream(uri, m) for m in msgs]
        finally:
            await server.stop()

    assert [c for c, _ in run(go())] == [1000] * len(call_ids)
    out = tmp_path / "out"
    assert (out / "streams.jsonl").is_file() and (out / "messages.jsonl").is_file()
    opened = [r for r in read_jsonl(out / "streams.jsonl") if r.get("event") == "open"]
    assert len(opened) == 3 and len({r["path"] for r in opened}) == 3
    for r in opened:
        folder = r["path"].split("/")[0]
        assert folder.lower() not in ("streams.jsonl", "messages.jsonl") and "~" in folder
        assert (out / r["path"]).is_file()


def test_streams_jsonl_path_outside_the_directory_is_ignored(tmp_path, caplog):
    caplog.set_level("WARNING", logger="rtp2ws.sink")
    out = tmp_path / "out"
    out.mkdir()
    rec = {"event": "open", "stream_id": "s1", "call_id": "call-1@test", "tag": "caller", "channels": 1}
    with open(out / "streams.jsonl", "w") as f:
        for path in ("../escape.wav", "/tmp/abs.wav", "a/../../b.wav"):
            f.write(json.dumps(dict(rec, path=path)) + "\n")

    async def go():
        server, uri = await serving(tmp_path)
        try:
            return await send_stream(uri, [start_msg(resumed=True), frame(0), end_msg(FRAME)])
        finally:
            await server.stop()

    assert run(go())[0] == 1000
    assert sorted(os.listdir(tmp_path)) == ["out"]
    data, _, _ = read_wav(str(out / "call-1@test" / "caller.wav"))
    assert np.array_equal(data, frame(0))
    skipped = [r.getMessage() for r in sink_records(caplog) if "skipped" in r.getMessage()]
    assert len(skipped) == 3 and all("is not inside the output directory" in m for m in skipped)


# -- memory: what is kept of streams with no connection ------------------------------------------------


def test_ended_streams_are_bounded_and_resume_still_stitches(tmp_path, caplog):
    caplog.set_level("WARNING", logger="rtp2ws.sink")
    bound, n = 8, 30

    async def go():
        server, uri = await serving(tmp_path, max_idle=bound)
        store = server.store
        try:
            lost = await connect(uri)  # no end: a resume is expected, so it outlives ended streams
            await lost.send(protocol.encode(start_msg(stream_id="lost", call_id="lost")))
            await lost.send(frame(0).tobytes())
            await until(lambda: server.stats["frames"] == 1, "frame written")
            lost.transport.abort()
            await until(lambda: not store.active, "lost stream detached")
            for i in range(n):
                sid = f"e{i}"
                assert await send_stream(uri, [start_msg(stream_id=sid, call_id=sid), frame(i),
                                               end_msg(FRAME, stream_id=sid, call_id=sid)]) == (1000, "end received")
                assert len(store.idle_open) + len(store.idle_ended) <= bound
            sizes = (len(store.active), len(store.idle_open), len(store.idle_ended), len(store._paths),
                     len(store.streams), store.evicted)
            last = f"e{n - 1}"
            late = await send_stream(uri, [start_msg(stream_id=last, call_id=last, resumed=True, offset=FRAME),
                                           frame(100), end_msg(2 * FRAME, stream_id=last, call_id=last)])
            back = await send_stream(uri, [start_msg(stream_id="lost", call_id="lost", resumed=True, offset=FRAME),
                                           frame(1), end_msg(2 * FRAME, stream_id="lost", call_id="lost")])
            forgotten = await send_stream(uri, [start_msg(stream_id="e0", call_id="e0", resumed=True, offset=FRAME),
                                                frame(101), end_msg(2 * FRAME, stream_id="e0", call_id="e0")])
            return server, sizes, late, back, forgotten
        finally:
            await server.stop()

    server, sizes, late, back, forgotten = run(go())
    assert sizes == (0, 1, bound - 1, bound, bound, n + 1 - bound)
    assert late == back == forgotten == (1000, "end received")
    out = tmp_path / "out"
    data, _, _ = read_wav(str(out / f"e{n - 1}" / "caller.wav"))  # a recent ended stream: same file, stitched
    assert np.array_equal(data, np.concatenate([frame(n - 1), frame(100)]))
    data, _, _ = read_wav(str(out / "lost" / "caller.wav"))  # idle without end: kept over 30 ended ones
    assert np.array_equal(data, frames([0, 1]))
    assert sorted(os.listdir(out / "e0")) == ["caller-2.wav", "caller.wav"]  # forgotten: a new file, at its place
    data, _, _ = read_wav(str(out / "e0" / "caller-2.wav"))
    assert np.array_equal(data, np.concatenate([np.zeros(FRAME, "<i2"), frame(101)]))
    assert server.stats["unknown_resumes"] == 1 and server.stats["resumes"] == 2
    warnings = [r.getMessage() for r in sink_records(caplog)]
    assert len(warnings) == 1 and "stream e0 resumed at offset 320 but unknown here" in warnings[0]
    assert "new file e0/caller-2.wav" in warnings[0]


def test_restart_loads_a_bounded_table(tmp_path, caplog):
    """streams.jsonl of many streams: start-up keeps max_idle of them (open ones first, then the latest
    opened or ended), skips bad lines (deep, over-long) without holding them, and a kept stream resumes into
    its file."""
    caplog.set_level("WARNING", logger="rtp2ws.sink")
    out = tmp_path / "out"
    out.mkdir()
    with open(out / "streams.jsonl", "w") as f:
        def opened(sid):
            f.write(json.dumps({"event": "open", "stream_id": sid, "call_id": sid, "tag": "caller",
                                "path": f"{sid}/caller.wav", "channels": 1, "created": 0.0}) + "\n")

        opened("open-old")  # never ended: kept though 40 streams came after it
        f.write("[" * 100000 + "\n")
        f.write("x" * (sinkserver.MAX_INDEX_LINE + 10) + "\n")
        for i in range(40):
            opened(f"e{i}")
            f.write(json.dumps({"event": "end", "stream_id": f"e{i}", "received": 0.0, "end": {}}) + "\n")
        f.write(json.dumps({"event": "end", "stream_id": "e38", "received": 0.0, "end": {}}) + "\n")  # again
        opened("open-new")
    os.makedirs(out / "open-old")
    with open(out / "open-old" / "caller.wav", "wb") as f:
        f.write(b"\0" * 44 + frame(0).tobytes())  # a killed sink's file: header not yet fixed

    store = StreamStore(str(out), max_idle=5)
    try:
        assert list(store.idle_open) == ["open-old", "open-new"]
        assert list(store.idle_ended) == ["e37", "e39", "e38"]
        assert (len(store.active), len(store._paths), store.evicted) == (0, 5, 37)
        assert store.streams["open-old"].samples == FRAME
    finally:
        store.close()
    skipped = [r.getMessage() for r in sink_records(caplog)]
    assert skipped == ["streams.jsonl line 2 skipped: nested deeper than 32 levels",
                       f"streams.jsonl line 3 skipped: longer than {sinkserver.MAX_INDEX_LINE} bytes"]

    async def go():
        server, uri = await serving(tmp_path, max_idle=5)
        try:
            return await send_stream(uri, [start_msg(stream_id="open-old", call_id="open-old", resumed=True,
                                                     offset=FRAME), frame(1),
                                           end_msg(2 * FRAME, stream_id="open-old", call_id="open-old")])
        finally:
            await server.stop()

    assert run(go()) == (1000, "end received")
    with open(out / "open-old" / "caller.wav", "rb") as f:
        assert f.read() == wav_bytes_like_wavout(tmp_path, frames([0, 1]))

