"""benchmarks/live_capacity.py: ``rtp2ws live`` and the reference capturing on a veth of a
namespace of the benchmark's own, fed at realtime by its raw-socket sender.  Run tiny
(4 calls of 2 s): the figures are there, both pipelines carried every call, and the
namespace and the veth are gone afterwards, after a SIGINT too.  Speed is never asserted."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from rtp2ws.bench import capgen

from paths import ROOT
from skips import netns_problem

PY = sys.executable
SCRIPT = ROOT / "benchmarks" / "live_capacity.py"


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root: a network namespace, a veth pair, capture and an AF_PACKET sender"
    if shutil.which("ip") is None:
        return "needs ip(8) (iproute2)"
    if importlib.util.find_spec("dpkt") is None:
        return "the reference pipeline needs dpkt: pip install 'rtp2ws[bench]'"
    return netns_problem()


SKIP = _skip_reason()
needs_netns = pytest.mark.skipif(SKIP is not None, reason=str(SKIP))


def live_capacity():
    """benchmarks/live_capacity.py, imported."""
    spec = importlib.util.spec_from_file_location("live_capacity", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def gone(ns: str, *links: str) -> bool:
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    shown = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    return ns not in names and not any(f" {link}:" in shown or f" {link}@" in shown for link in links)


def test_the_senders_frames_are_the_captures_records_on_its_clock(tmp_path):
    """``read_frames``: every record of the bench's capture, its bytes where they are in the
    file, times from 0 rising to the capture's span."""
    cap = tmp_path / "c.pcap"
    info = capgen.make_capture(cap, 2, 1.0)
    data, offsets, lengths, times = live_capacity().read_frames(str(cap))
    assert len(offsets) == len(lengths) == len(times) == info["packets"]
    assert times[0] == 0.0 and times == sorted(times)
    assert times[-1] == pytest.approx(info["last_ts"] - info["first_ts"], abs=1e-6)
    assert {lengths[i] for i in range(len(lengths)) if data[offsets[i] + 23] == 17} >= {capgen.RTP_FRAME_LEN}
    assert offsets[-1] + lengths[-1] == len(data)


def test_the_summary_line_of_rtp2ws_live_is_read_as_numbers():
    line = ("r2wlb1: 828 packets captured, 1 dropped by the kernel, 2 by the interface; "
            "4 calls, 8 legs with audio, 800 RTP, 28 SIP, 0 malformed, 4.2 s; streamed 8 streams, "
            "0 reconnects, 5 ms dropped, 6 ms undelivered\n")
    assert live_capacity().parse_summary(line) == {
        "packets": 828, "kernel_drops": 1, "interface_drops": 2, "calls": 4, "legs": 8,
        "streams": 8, "reconnects": 0, "dropped_ms": 5, "undelivered_ms": 6}
    with pytest.raises(RuntimeError, match="no summary line"):
        live_capacity().parse_summary("rtp2ws: error: something\n")


@needs_netns
def test_both_pipelines_carry_a_tiny_load_and_the_namespace_goes(tmp_path):
    out = tmp_path / "out"
    r = subprocess.run([PY, str(SCRIPT), "--calls", "4", "--seconds", "2", "--settle", "0.5", "--out", str(out)],
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    doc = json.loads((out / "live_capacity.json").read_text())
    assert gone(doc["netns"], doc["interface"], doc["peer"])
    frames = 4 * 2 * 100
    for name in ("rtp2ws", "reference"):
        e = doc[name]
        assert e["carried"] and e["exit_code"] == 0, e
        assert e["cpu_s"] > 0 and e["window_s"] >= 2.0 and e["cpu_total_s"] >= e["cpu_s"]
        assert e["cpu_user_s"] + e["cpu_sys_s"] == pytest.approx(e["cpu_s"])
        assert e["threads"] and sum(u + k for _, _, u, k in e["threads"]) <= e["cpu_s"] + 0.05   # one process each
        assert e["calls_per_core"] == pytest.approx(4 * 2.0 / e["cpu_s"]) and e["calls_per_core"] > 0
        assert e["kernel_drops"] == e["interface_drops"] == 0
        assert e["pipeline_calls"] == 4 and e["pipeline_legs"] == 8
        assert e["sink_frames"] == e["expected_frames"] == frames
        assert e["sink"]["connections"] == e["sink"]["closed"] == 8
        sent = e["sender"]
        assert sent["frames"] == e["captured_packets"] == doc["capture_packets"] and sent["errors"] == 0
        assert 0 <= sent["behind_s"] <= sent["max_behind_s"]
        assert e["veth"]["rx_packets"] == sent["frames"]
    assert "overflow_packets" not in doc["rtp2ws"] and doc["rtp2ws"]["summary"]["streams"] == 8
    assert doc["reference"]["sent_frames"] == frames
    assert doc["ratio"] == pytest.approx(doc["rtp2ws"]["calls_per_core"] / doc["reference"]["calls_per_core"])
    assert "rtp2ws / reference at live realtime = " in r.stderr


@needs_netns
def test_remote_sink_runs_each_pipeline_pinned_and_its_sink_in_a_namespace_of_its_own(tmp_path):
    """``--remote-sink`` (twice, ``--repeat 2``): every run carried the load into a sink
    listening in the second namespace, the pipeline pinned to the first CPU; the median
    run stands; both namespaces and both veth pairs are gone afterwards."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("--remote-sink needs 2 CPUs: one for the pipeline, one for the sink")
    out = tmp_path / "out"
    r = subprocess.run([PY, str(SCRIPT), "--calls", "2", "--seconds", "2", "--settle", "0.5", "--remote-sink",
                        "--repeat", "2", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    doc = json.loads((out / "live_capacity.json").read_text())
    host = doc["remote_sink"]
    first = sorted(os.sched_getaffinity(0))[0]
    assert host["pipeline_cpus"] == [first] and first not in host["sink_cpus"]
    assert gone(doc["netns"], doc["interface"], doc["peer"]) and gone(host["netns"], host["netns"])
    assert len(doc["runs"]) == 2
    for one in doc["runs"]:
        for name in ("rtp2ws", "reference"):
            e = one[name]
            assert e["carried"] and e["affinity"] == [first], e
            assert e["sink_frames"] == e["expected_frames"] == 2 * 2 * 100
            assert "ws://10.211.0.2:" in " ".join(e["command"])
    figures = sorted(one["rtp2ws"]["calls_per_core"] for one in doc["runs"])
    assert doc["rtp2ws"]["calls_per_core"] == figures[0]          # the lower of two is the median run
    assert "rtp2ws calls per core over 2 runs: " in r.stderr


@needs_netns
def test_sigint_midway_removes_the_namespace_and_ends_every_process(tmp_path):
    proc = subprocess.Popen([PY, str(SCRIPT), "--calls", "2", "--seconds", "30", "--no-reference",
                             "--out", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ns = f"r2wlb{proc.pid}"
    try:
        deadline = time.monotonic() + 60
        while gone(ns) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not gone(ns), "the namespace never appeared"
        time.sleep(3)                       # rtp2ws live and the sender started, or starting
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 130 and "interrupted; its processes ended, the namespace and the veth removed" in err
    assert gone(ns, ns, f"r2wlbp{proc.pid}")
    left = subprocess.run(["pgrep", "-f", f"r2wlbp?{proc.pid}"], capture_output=True, text=True).stdout.split()
    assert left == []                       # neither rtp2ws live nor the sender still runs
