"""rtp2ws.run.workers (and the worker's end, run.workerlink): ``--workers N`` gives
what one process gives, with real processes: replay into ``rtp2ws sink`` and
``--out-dir``, and live on loopback (SIGTERM, merged metrics, a worker killed)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from rtp2ws.bench.capgen import make_capture
from rtp2ws.pipeline.shard import owner
from rtp2ws.run import workers
from rtp2ws.run.workerlink import parse_worker
from rtp2ws.sinks.wav import read_wav

from livecall import LiveProcess
from paths import DATA
from sinkclient import SinkProcess
from skips import can_capture

PY = sys.executable
needs_capture = pytest.mark.skipif(not can_capture(), reason="needs CAP_NET_RAW on lo")

# summary fields that say when the run happened, not what it decoded; and ``foreign``
# (packets of other workers' calls, one worker's own business: pipeline.shard LOCAL)
TIMING = {"elapsed_s", "foreign"}


# --------------------------------------------------------------------------- merging

def test_parse_worker():
    assert parse_worker("1/2 7") == ((1, 2), 7)
    for bad in ("2/2 7", "1/2", "a/2 7", "1-2 7", "1/2 x"):
        with pytest.raises(ValueError):
            parse_worker(bad)


def test_exit_codes_and_deaths_are_described():
    assert workers.worst([0, 1, 0]) == 1 and workers.worst([1, 2]) == 2 and workers.worst([]) == 0
    assert workers.describe_exit(-9) == "killed by SIGKILL"
    assert workers.describe_exit(3) == "exited with status 3"


def test_snapshots_merge_once_what_every_worker_sees_and_sum_the_rest():
    a = {"monotonic": 10.0, "capture_running": True, "capture_error": None, "interface": "lo", "packets": 100,
         "bytes": 9000, "kernel_drops": 1, "malformed": 2, "active_calls": 3, "active_legs": 2, "calls": 2,
         "legs_with_audio": 4, "drops_recent": 1, "ws_open": 2, "ws_streams": 4, "ws_dropped_ms": 20}
    b = dict(a, monotonic=9.0, packets=101, kernel_drops=2, active_legs=4, calls=1, legs_with_audio=2, ws_open=4,
             ws_streams=2, ws_dropped_ms=0)
    m = workers.merge_snapshots([a, b])
    assert m["monotonic"] == 9.0 and m["capture_running"] is True
    assert (m["packets"], m["bytes"], m["malformed"], m["active_calls"]) == (101, 9000, 2, 3)
    assert (m["kernel_drops"], m["calls"], m["legs_with_audio"], m["active_legs"]) == (3, 3, 6, 6)
    assert (m["ws_open"], m["ws_streams"], m["ws_dropped_ms"], m["drops_recent"]) == (6, 6, 20, 2)
    # a worker that died: its counters stay in, its gauges go
    retired: dict = {}
    workers.retire(retired, b)
    m2 = workers.merge_snapshots([a], retired)
    assert (m2["calls"], m2["kernel_drops"], m2["active_legs"], m2["packets"]) == (3, 3, 2, 101)
    assert workers.merge_snapshots([dict(a, capture_running=False, capture_error="gone"), b])["capture_error"] \
        == "gone"


def test_the_per_leg_histograms_add_up_across_workers_and_deaths():
    """Loss and jitter histograms: each leg is observed by one worker, so the merged
    buckets, sums and counts are the workers' added, a dead worker's kept."""
    from rtp2ws.run.metrics import JITTER_BUCKETS, LOSS_BUCKETS, new_histogram, observe

    snaps = []
    for jitters, losses in (([0.0004, 0.012], [0.0, 0.02]), ([0.25], [0.5])):
        jh, lh = new_histogram(JITTER_BUCKETS), new_histogram(LOSS_BUCKETS)
        for j in jitters:
            observe(jh, JITTER_BUCKETS, j)
        for loss in losses:
            observe(lh, LOSS_BUCKETS, loss)
        snaps.append({"leg_jitter": jh, "leg_loss": lh})
    m = workers.merge_snapshots(snaps)
    # 0.4 ms under 1 ms, 12 ms under 20 ms, 250 ms above every bound
    assert m["leg_jitter"]["counts"] == [1, 0, 0, 0, 1, 0, 0, 0, 0, 1]
    assert m["leg_jitter"]["count"] == 3 and m["leg_jitter"]["sum"] == pytest.approx(0.2624)
    assert m["leg_loss"]["count"] == 3 and m["leg_loss"]["sum"] == pytest.approx(0.52)
    retired: dict = {}
    workers.retire(retired, snaps[1])
    m2 = workers.merge_snapshots([snaps[0]], retired)
    assert m2["leg_jitter"] == m["leg_jitter"] and m2["leg_loss"] == m["leg_loss"]
    # the quality histograms (MOS, max delta, round trip) merge the same way
    from rtp2ws.run.metrics import QUALITY_HISTOGRAMS
    qsnaps = []
    for values in ((4.41, 0.021, 0.04), (2.0, 0.5, None)):
        snap = {}
        for (key, buckets, _, _), v in zip(QUALITY_HISTOGRAMS, values, strict=True):
            snap[key] = new_histogram(buckets)
            if v is not None:
                observe(snap[key], buckets, v)
        qsnaps.append(snap)
    mq = workers.merge_snapshots(qsnaps)
    assert [mq[key]["count"] for key, _, _, _ in QUALITY_HISTOGRAMS] == [2, 2, 1]
    assert mq["leg_mos"]["sum"] == pytest.approx(6.41) and mq["leg_rtt"]["sum"] == pytest.approx(0.04)


def test_live_summaries_and_streams_merge():
    a = {"interface": "lo", "packets": 10, "bytes": 100, "kernel_drops": 0, "interface_drops": 0,
         "calls": 1, "legs": 2, "elapsed_s": 3.0, "end_reason": "shutdown", "frames": 10,
         "sip": 4, "rtp": 6, "foreign": 3, "decoder_fragments": 2}
    b = dict(a, calls=2, legs=4, elapsed_s=3.5, rtp=3, foreign=6, kernel_drops=1)
    m = workers.merge_live_summaries([a, b])
    assert (m["packets"], m["calls"], m["legs"], m["kernel_drops"], m["elapsed_s"]) == (10, 3, 6, 1, 3.5)
    assert (m["frames"], m["sip"], m["rtp"], m["decoder_fragments"]) == (10, 4, 9, 2)
    assert "foreign" not in m and m["end_reason"] == "shutdown"
    assert workers.merge_live_summaries([a, dict(b, end_reason="capture_end", capture_error="x")])["capture_error"] \
        == "x"
    assert workers.merge_streams([None, None]) is None
    assert workers.merge_streams([{"streams": 2, "dropped_ms": 0}, None, {"streams": 3, "dropped_ms": 40}]) == \
        {"streams": 5, "dropped_ms": 40}


# --------------------------------------------------------------------------- replay

def _replay(capture, out, sink_url, count, *extra):
    args = [PY, "-m", "rtp2ws.cli", "replay", str(capture), "--speed", "4", "--no-progress", "--workers",
            str(count), "--out-dir", str(out), "--ws-url", sink_url + "/audio", *extra]
    r = subprocess.run(args, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    return r


def _entries(out: Path) -> list[dict]:
    doc = json.loads((out / "calls.json").read_text())
    return sorted(doc["calls"], key=lambda c: c["call_id"])


def _wavs(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.wav"))}


def _by_stream(sink_dir: Path) -> dict:
    """What the sink was told, per call and tag (the ids and the time of arrival aside)."""
    streams: dict = {}
    for line in (sink_dir / "messages.jsonl").read_text().splitlines():
        m = json.loads(line)["message"]
        m = {k: v for k, v in m.items() if k not in ("stream_id",)}
        streams.setdefault((m.get("call_id"), m.get("tag")), []).append(m)
    return streams


def _line_counts(stdout: str) -> str:
    return re.sub(r", [\d.]+ s;", ", T s;", stdout.strip())


def _compare(tmp_path, capture, *extra):
    runs = {}
    for count in (1, 2):
        sink = SinkProcess(tmp_path / f"recv{count}")
        try:
            out = tmp_path / f"out{count}"
            r = _replay(capture, out, sink.url_base, count, *extra)
        finally:
            sink.stop()
        runs[count] = (r.stdout, out, tmp_path / f"recv{count}")
    (one, out1, recv1), (two, out2, recv2) = runs[1], runs[2]
    assert _line_counts(two) == _line_counts(one)
    assert _entries(out2) == _entries(out1)
    s1 = json.loads((out1 / "calls.json").read_text())["summary"]
    s2 = json.loads((out2 / "calls.json").read_text())["summary"]
    share = s2.pop("workers")
    assert {k: v for k, v in s2.items() if k not in TIMING} == {k: v for k, v in s1.items() if k not in TIMING}
    assert _wavs(out2) == _wavs(out1)
    assert _by_stream(recv2) == _by_stream(recv1)
    assert _wavs(recv1) and _wavs(recv2) == _wavs(recv1)
    return share, _entries(out1)


@pytest.mark.parametrize("name", ["demo_speech.pcap", "relay_call.pcap", "sipp_uac_pcap.pcap"])
def test_replay_with_two_workers_gives_what_one_gives(tmp_path, name):
    share, entries = _compare(tmp_path, DATA / name)
    assert share["count"] == 2 and sum(share["calls"]) == len(entries)


def test_replay_many_calls_each_worker_carries_its_share(tmp_path):
    cap = tmp_path / "many.pcap"
    make_capture(cap, 12, 2.0, loss=0.01, reorder=0.01, stagger=0.5)
    share, entries = _compare(tmp_path, cap, "--stereo")
    assert len(entries) == 12
    assert sum(share["calls"]) == 12 and min(share["calls"]) > 0, share


def test_replay_workers_default_and_errors(tmp_path):
    # a full-speed replay keeps one process unless --workers says otherwise
    r = subprocess.run([PY, "-m", "rtp2ws.cli", "replay", str(DATA / "demo_speech.pcap"), "--out-dir",
                        str(tmp_path / "a")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "workers" not in json.loads((tmp_path / "a" / "calls.json").read_text())["summary"]
    # --out-dir only, explicitly 2 workers: each decodes its share at full speed
    r = subprocess.run([PY, "-m", "rtp2ws.cli", "replay", str(DATA / "demo_speech.pcap"), "--out-dir",
                        str(tmp_path / "b"), "--workers", "2"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert _entries(tmp_path / "b") == _entries(tmp_path / "a")
    assert _wavs(tmp_path / "b") == _wavs(tmp_path / "a")
    # an unreadable capture is said once, by the supervisor
    r = subprocess.run([PY, "-m", "rtp2ws.cli", "replay", str(tmp_path / "none.pcap"), "--out-dir",
                        str(tmp_path / "c"), "--workers", "2"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.count("rtp2ws: error:") == 1, r.stderr


def test_replay_worker_killed_fails_the_replay(tmp_path):
    sink = SinkProcess(tmp_path / "recv")
    try:
        proc = subprocess.Popen([PY, "-m", "rtp2ws.cli", "replay", str(DATA / "demo_speech.pcap"), "--speed",
                                 "realtime", "--no-progress", "--workers", "2", "--ws-url", sink.url_base + "/a"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        kids = _children(proc.pid, 2)
        os.kill(kids[1], signal.SIGKILL)
        out, err = proc.communicate(timeout=60)
    finally:
        sink.stop()
    assert proc.returncode == 1, err
    assert re.search(r"worker 2 \(pid \d+\) killed by SIGKILL", err), err


def _children(pid: int, n: int, timeout: float = 20.0) -> list[int]:
    """The pids of ``pid``'s ``n`` children (the workers), in the order they started,
    once each has imported rtp2ws (its command line is in /proc)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = []
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                kids += map(int, Path(f"/proc/{pid}/task/{tid}/children").read_text().split())
            except FileNotFoundError:
                pass
        if len(kids) >= n:
            time.sleep(0.5)
            return sorted(kids)
        time.sleep(0.05)
    raise AssertionError(f"{n} workers not started within {timeout} s")


# --------------------------------------------------------------------------- live

METRIC = re.compile(r"^rtp2ws_(\w+) (\S+)$", re.MULTILINE)


def _metrics(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {k: float(v) for k, v in METRIC.findall(text)}


def _filter(sip_port: int, rtp_lo: int) -> str:
    return f"udp and host 127.0.0.1 and (port {sip_port} or portrange {rtp_lo}-{rtp_lo + 100})"


def _calls_owned_by_each(n_calls: int, prefix: str) -> list[str]:
    ids = [f"{prefix}-{i}@test" for i in range(n_calls)]
    assert {owner(i, 2) for i in ids} == {0, 1}, ids      # both workers own some
    return ids


@needs_capture
@pytest.mark.parametrize("count", [1, 2])
def test_live_workers_give_the_same_calls_and_audio(tmp_path, call_factory, count):
    """Three calls on loopback, to the sink and WAV files: every call and leg to the
    sample, whichever worker owns it; SIGTERM ends the workers and one merged line is
    printed; /metrics shows the merged counters."""
    sink = SinkProcess(tmp_path / "recv")
    port = 9300 + count
    out = tmp_path / "out"
    live = LiveProcess("-i", "lo", "--bpf", _filter(25570, 26700), "--out-dir", out, "--ws-url",
                       sink.url_base + "/audio", "--stats-interval", "1", "--workers", count,
                       "--metrics", f"127.0.0.1:{port}")
    try:
        live.wait_for("capturing on lo")
        calls = []
        for i, call_id in enumerate(_calls_owned_by_each(3, "w")):
            call = call_factory(call_id, 25570, 26700 + 10 * i, 26702 + 10 * i)
            call.setup()
            call.media(0.6)
            call.bye()
            call.close()
            calls.append(call)
        live.wait_for("3 calls so far", timeout=8)
        deadline = time.monotonic() + 5        # snapshots are a second apart
        while (m := _metrics(port))["captured_packets_total"] < 3 * (5 + 60) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert m["calls_total"] == 3 and m["websocket_streams_total"] == 6, m
        assert m["captured_packets_total"] >= 3 * (5 + 60) and m["kernel_dropped_packets_total"] == 0, m
        if count == 2:
            assert m["workers"] == 2 and m["worker_restarts_total"] == 0
        rc, stdout, stderr = live.stop()
    finally:
        live.kill()
        sink.stop()
    assert rc == 0, stderr
    assert len(stdout.strip().splitlines()) == 1, stdout
    assert "; 3 calls, 6 legs with audio" in stdout and "streamed 6 streams, 0 reconnects, 0 ms dropped" in stdout
    doc = json.loads((out / "calls.json").read_text())
    assert sorted(c["call_id"] for c in doc["calls"]) == [c.call_id for c in calls]
    assert doc["summary"]["calls"] == 3 and doc["summary"].get("workers", 1) == count
    journal = [json.loads(x) for x in (out / "calls.jsonl").read_text().splitlines()]
    assert sorted(journal, key=lambda c: c["call_id"]) == sorted(doc["calls"], key=lambda c: c["call_id"])
    for call in calls:
        for tag in ("caller", "callee"):
            want = call.expected(tag)
            got, _, _ = read_wav(str(sink.out_dir / call.call_id / f"{tag}.wav"))
            assert np.array_equal(got, want), (call.call_id, tag)
            local, _, _ = read_wav(str(out / "calls" / call.call_id / f"{tag}.wav"))
            assert np.array_equal(local, want), (call.call_id, tag)
    if count == 2:
        assert stderr.count("stopped (shutdown)") == 1         # the supervisor's one line


@needs_capture
def test_live_worker_killed_is_restarted_and_reported(tmp_path, call_factory):
    port = 9310
    out = tmp_path / "out"
    live = LiveProcess("-i", "lo", "--bpf", _filter(25670, 26800), "--out-dir", out, "--workers", 2,
                       "--metrics", f"127.0.0.1:{port}", "--stats-interval", "1")
    try:
        live.wait_for("capturing on lo")
        first = _children(live.proc.pid, 2)
        os.kill(first[1], signal.SIGKILL)
        live.wait_for("worker 2 started again", timeout=15)
        m = _metrics(port)
        assert m["worker_restarts_total"] == 1
        deadline = time.monotonic() + 10
        while _metrics(port)["workers"] != 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        # calls after the restart are carried by both workers again
        calls = []
        for i, call_id in enumerate(_calls_owned_by_each(3, "k")):
            call = call_factory(call_id, 25670, 26800 + 10 * i, 26802 + 10 * i)
            call.setup()
            call.media(0.4)
            call.bye()
            call.close()
            calls.append(call)
        live.wait_for("3 calls so far", timeout=8)
        rc, stdout, stderr = live.stop()
    finally:
        live.kill()
    assert re.search(r"worker 2 \(pid \d+\) killed by SIGKILL; starting it again in 1 s \(worker restarts: 1\)",
                     stderr), stderr
    assert rc == 0, stderr
    assert "3 calls, 6 legs with audio" in stdout, stdout
    doc = json.loads((out / "calls.json").read_text())
    assert doc["summary"]["worker_restarts"] == 1
    for call in calls:
        for tag in ("caller", "callee"):
            got, _, _ = read_wav(str(out / "calls" / call.call_id / f"{tag}.wav"))
            assert np.array_equal(got, call.expected(tag)), (call.call_id, tag)
