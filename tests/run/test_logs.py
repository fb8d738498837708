"""``rtp2ws.run.logs``: --log-level, --log-format text|json, and the line per call
start and end, in ``live`` (a real process capturing lo) and ``replay``."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from datetime import datetime, timedelta

import pytest

from rtp2ws import cli
from rtp2ws.run import logs

import paths
from livecall import _filter
from skips import can_capture

DEMO = str(paths.DATA / "demo_speech.pcap")
DEMO_CALL = "1-14710@127.0.0.1"
# what a Call-ID can carry through SIP's line splitting (CR alone, VT, NEL, LINE SEPARATOR
# and a quote): each would start a line of its own, or end a JSON string, if logged raw
HOSTILE_CALL = 'q"uote\rCR\x0bVT\x85NEL\u2028LS\\n@test'
TEXT_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) \S+"
                       r"( \(worker \d+/\d+\))?: ")

needs_capture = pytest.mark.skipif(not can_capture(), reason="needs root or CAP_NET_RAW to capture on lo")


def _records(text: str) -> list[dict]:
    """Every line of ``text`` as a JSON object (a line that is not one fails)."""
    out = []
    for line in text.split("\n"):
        if line:
            doc = json.loads(line)
            assert isinstance(doc, dict), line
            out.append(doc)
    return out


def _check_json_line(doc: dict) -> None:
    assert {"time", "level", "logger", "message"} <= set(doc), doc
    assert doc["level"] in ("debug", "info", "warning", "error", "critical")
    t = datetime.fromisoformat(doc["time"])
    assert t.utcoffset() == timedelta(0) and doc["time"].endswith("+00:00"), doc["time"]


# --------------------------------------------------------------------------- formatters

def _record(msg, *args, exc_info=None, **extra):
    record = logging.LogRecord("rtp2ws.test", logging.WARNING, __file__, 1, msg, args, exc_info)
    record.__dict__.update(extra)
    return record


def test_json_formatter_one_object_a_line_with_extras():
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        exc = sys.exc_info()
    f = logs.JsonFormatter(worker="2/4")
    line = f.format(_record("stream %s: %s", "s-1", HOSTILE_CALL, exc_info=exc, call_id=HOSTILE_CALL,
                            stream_id="s-1", tag="caller"))
    assert "\n" not in line and line.isascii()
    doc = json.loads(line)
    _check_json_line(doc)
    assert doc["message"] == f"stream s-1: {HOSTILE_CALL}" and doc["level"] == "warning"
    assert (doc["call_id"], doc["stream_id"], doc["tag"], doc["worker"]) == (HOSTILE_CALL, "s-1", "caller", "2/4")
    assert doc["logger"] == "rtp2ws.test" and "ValueError: boom" in doc["exception"]
    assert "args" not in doc and "msg" not in doc and "exc_info" not in doc


def test_text_formatter_keeps_a_record_on_one_line():
    f = logs.TextFormatter(logs.TEXT_FORMAT)
    line = f.format(_record("call started: %s", HOSTILE_CALL))
    assert len(line.splitlines()) == 1 and line.isprintable()
    assert TEXT_LINE.match(line) and line.endswith(f"call started: {logs.printable(HOSTILE_CALL)}")
    assert "\\\\n@test" in line            # a backslash in the Call-ID is doubled: no escape is forged


def test_setup_and_restore(tmp_path):
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    done = logs.setup("debug", "json", str(tmp_path / "x.log"), worker="1/2")
    try:
        assert root.handlers == [done.handler] and done.file is done.handler and root.level == logging.DEBUG
        logging.getLogger("rtp2ws.calls").debug("hello", extra={"call_id": "c"})
    finally:
        done.restore()
    assert root.handlers == before and root.level == level
    (doc,) = _records((tmp_path / "x.log").read_text())
    assert (doc["message"], doc["call_id"], doc["worker"], doc["level"]) == ("hello", "c", "1/2", "debug")
    with pytest.raises(ValueError, match="log level must be one of debug, info, warning, error"):
        logs.setup("loud")


# --------------------------------------------------------------------------- replay

def test_replay_logs_calls_only_when_info_is_asked_for(tmp_path, capsys):
    """replay's default level is warning: a replay of thousands of calls does not print
    a line per call unless --log-level info says so; its stdout summary is the same."""
    assert cli.main(["replay", DEMO, "--out-dir", str(tmp_path / "a"), "--no-progress"]) == 0
    quiet = capsys.readouterr()
    assert "call started" not in quiet.err and "call ended" not in quiet.err
    assert cli.main(["replay", DEMO, "--out-dir", str(tmp_path / "b"), "--no-progress", "--log-level", "info",
                     "--log-format", "json"]) == 0
    loud = capsys.readouterr()
    # the same summary, but for the wall-clock time it took ("0.01 s")
    elapsed = re.compile(r"\b\d+\.\d\d s\b")
    assert (elapsed.sub("T s", loud.out.replace(str(tmp_path / "b"), ""))
            == elapsed.sub("T s", quiet.out.replace(str(tmp_path / "a"), "")))
    docs = _records(loud.err)
    for doc in docs:
        _check_json_line(doc)
    calls = [d for d in docs if d["logger"] == "rtp2ws.calls"]
    assert [(d["message"], d["call_id"]) for d in calls] == [
        (f"call started: {DEMO_CALL}", DEMO_CALL), (f"call ended: {DEMO_CALL} (bye, 12.4 s)", DEMO_CALL)]
    assert calls[1]["reason"] == "bye" and calls[1]["duration_s"] == pytest.approx(12.448, abs=0.01)
    assert cli.main(["replay", DEMO, "--out-dir", str(tmp_path / "c"), "--no-progress", "--log-level", "info"]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert all(TEXT_LINE.match(line) for line in lines), lines
    assert [line.split(": ", 1)[1] for line in lines] == [f"call started: {DEMO_CALL}",
                                                          f"call ended: {DEMO_CALL} (bye, 12.4 s)"]


# --------------------------------------------------------------------------- live

@needs_capture
@pytest.mark.parametrize("fmt", ["json", "text"])
def test_live_log_lines_per_call(tmp_path, live_factory, call_factory, fmt):
    """``live --log-format json``: every line of stderr is a JSON object with time (UTC),
    level, logger and message; the call's start and end lines carry its call_id, however
    hostile; in text, the same lines are one printable line each."""
    out = tmp_path / "out"
    live = live_factory("-i", "lo", "--bpf", _filter(25770, 26900), "--out-dir", out, "--log-format", fmt,
                        "--stats-interval", "1")
    live.wait_for("capturing on lo")
    call = call_factory(HOSTILE_CALL, 25770, 26900, 26902)
    call.setup()
    call.media(0.2)
    call.bye()
    live.wait_for("call ended", timeout=10)
    live.wait_for("calls so far", timeout=10)
    rc, stdout, stderr = live.stop()
    assert rc == 0, stderr
    assert "1 calls, 2 legs with audio" in stdout
    if fmt == "text":
        lines = stderr.split("\n")[:-1]
        assert all(TEXT_LINE.match(line) and line.isprintable() for line in lines), lines
        started = [line for line in lines if " rtp2ws.calls" in line and ": call started: " in line]
        ended = [line for line in lines if " rtp2ws.calls" in line and ": call ended: " in line]
        assert [line.split("call started: ", 1)[1] for line in started] == [logs.printable(HOSTILE_CALL)]
        assert [line.split("call ended: ", 1)[1] for line in ended] == [f"{logs.printable(HOSTILE_CALL)} (bye, "
                                                                         f"{ended[0].rsplit(', ', 1)[1]}"]
        return
    docs = _records(stderr)
    for doc in docs:
        _check_json_line(doc)
    messages = [d["message"] for d in docs]
    assert any(m.startswith("capturing on lo") for m in messages)
    assert any(m.startswith("stopped (shutdown)") for m in messages)
    about_calls = [d for d in docs if HOSTILE_CALL in d["message"]]
    assert about_calls and all(d.get("call_id") == HOSTILE_CALL for d in about_calls), about_calls
    calls = [d for d in docs if d["logger"] == "rtp2ws.calls"]
    assert [d["message"].split(":")[0] for d in calls] == ["call started", "call ended"]
    assert all(d["call_id"] == HOSTILE_CALL and d["level"] == "info" for d in calls)
    assert calls[1]["reason"] == "bye" and 0.1 < calls[1]["duration_s"] < 5


@needs_capture
def test_live_log_level_warning_leaves_out_the_info_lines(tmp_path, live_factory, call_factory):
    log = tmp_path / "live.log"
    live = live_factory("-i", "lo", "--bpf", _filter(25870, 27000), "--out-dir", tmp_path / "out",
                        "--log-level", "warning", "--log-file", log, "--log-format", "json")
    call = call_factory("quiet@test", 25870, 27000, 27002)
    deadline = time.monotonic() + 15
    while live.proc.poll() is None and not log.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)            # no "capturing on" line to wait for at this level
    call.setup()
    call.bye()
    rc, stdout, stderr = live.stop()
    assert rc == 0, stderr
    assert "1 calls" in stdout
    assert [d for d in _records(log.read_text()) if d["level"] in ("debug", "info")] == []
