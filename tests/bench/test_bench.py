"""The capacity benchmark (rtp2ws.bench): generated captures (capgen, netgen), the discard
sink, the run end to end (harness), the report, and the reference pipeline.  Behaviour only:
no timing is asserted."""

import argparse
import asyncio
import hashlib
import json
import os
import struct
import sys
import warnings

import numpy as np
import pytest

from rtp2ws import cli
from rtp2ws.bench import capgen, discard, harness, netgen, report
from rtp2ws.sinks.wav import read_wav, safe_name

from paths import ROOT


def replay_manifest(path, out):
    assert cli.main(["replay", str(path), "--out-dir", str(out), "--no-progress"]) == 0
    return json.loads((out / "calls.json").read_text())


def legs_by_key(manifest):
    return {(c["call_id"], l["tag"]): l for c in manifest["calls"] for l in c["legs"]}


@pytest.mark.parametrize("law", ["alaw", "ulaw"])
def test_capture_decodes_into_n_calls_with_two_full_legs(tmp_path, law):
    info = capgen.make_capture(tmp_path / "c.pcap", 7, 2.0, law=law)
    m = replay_manifest(tmp_path / "c.pcap", tmp_path / "out")
    assert len(m["calls"]) == 7
    assert len({c["call_id"] for c in m["calls"]}) == 7
    assert m["summary"]["malformed"] == 0 and m["summary"]["unmatched_udp"] == 0
    assert m["summary"]["packets"] == info["packets"] == 7 * (2 * 100 + 7)
    for c in m["calls"]:
        assert c["end_reason"] == "bye"
        assert sorted(l["tag"] for l in c["legs"]) == ["callee", "caller"]
        for leg in c["legs"]:
            assert leg["packets"] == 100
            assert leg["lost"] == 0 and leg["reordered"] == 0
            assert leg["codecs"] == ["PCMA" if law == "alaw" else "PCMU"]
            assert leg["duration_ms"] == 2000
            data, rate, _ = read_wav(os.path.join(tmp_path / "out", leg["wav"]))
            assert rate == 16000 and np.abs(data).max() > 1000       # speech-like, not silence
    # every call has its own addresses
    assert len({l["src"] for c in m["calls"] for l in c["legs"]}) == 14


def test_loss_and_reordering_are_counted_as_generated(tmp_path):
    info = capgen.make_capture(tmp_path / "c.pcap", 6, 3.0, loss=0.03, reorder=0.03, seed=5)
    expected = {(l["call_id"], l["tag"]): l for l in info["legs"]}
    assert sum(l["lost"] for l in info["legs"]) > 0
    assert sum(l["reordered"] for l in info["legs"]) > 0
    got = legs_by_key(replay_manifest(tmp_path / "c.pcap", tmp_path / "out"))
    assert set(got) == set(expected)
    for key, e in expected.items():
        g = got[key]
        assert (g["packets"], g["lost"], g["reordered"]) == (e["packets"], e["lost"], e["reordered"]), key
        assert g["late"] == 0 and g["duplicates"] == 0


def test_captures_are_cached_by_parameters(tmp_path):
    p1, i1 = capgen.cached_capture(tmp_path, 3, 1.0)
    mtime = os.stat(p1).st_mtime_ns
    p2, i2 = capgen.cached_capture(tmp_path, 3, 1.0)
    assert p1 == p2 and i1 == i2 and os.stat(p2).st_mtime_ns == mtime
    p3, _ = capgen.cached_capture(tmp_path, 3, 1.0, loss=0.01)
    assert p3 != p1
    assert capgen.make_capture(tmp_path / "a.pcap", 3, 1.0)["bytes"] == os.path.getsize(tmp_path / "a.pcap")


def test_bench_end_to_end(tmp_path, capsys):
    out = tmp_path / "res"
    rc = cli.main(["bench", "--quick", "--calls", "5", "--seconds", "2", "--configs", "wav,ws20,reference",
                   "--out", str(out), "--latency", "--latency-calls", "4", "--latency-seconds", "2"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "calls/core" in printed and "ws20 / reference" in printed
    doc = json.loads((out / "calls_per_core.json").read_text())
    for key in ("machine", "settings", "runs", "ratios", "stages", "latency", "summary"):
        assert key in doc
    assert [r["config"] for r in doc["runs"]] == ["wav", "ws20", "reference"]
    for r in doc["runs"]:
        for key in ("calls", "seconds", "cpu_s", "calls_per_core", "peak_rss_bytes", "us_per_packet",
                    "mem_per_call_kb", "wall_s"):
            assert key in r, (r["config"], key)
        assert r["calls"] == 5 and r["seconds"] == 2.0 and r["calls_per_core"] > 0
        assert r["packets"] == 5 * (2 * 100 + 7) and r["calls"] == 5
    ws = doc["runs"][1]
    assert ws["sent"]["sent_frames"] == 5 * 2 * 100 and ws["sent"]["dropped_ms"] == 0
    assert ws["sink"]["binary"] == 5 * 2 * 100 and ws["sink"]["connections"] == 10
    assert doc["runs"][2]["sink"]["binary"] == 5 * 2 * 100
    assert doc["ratios"][0]["config"] == "ws20" and doc["ratios"][0]["reference"] == "reference"
    assert set(doc["stages"]) == {"wav", "ws20", "reference"}
    for v in doc["stages"].values():
        assert sum(v["shares"].values()) == pytest.approx(1.0)
    assert doc["stages"]["ws20"]["shares"]["websocket"] > 0
    assert doc["stages"]["wav"]["shares"]["decode"] > 0
    lat = doc["latency"]
    assert lat["frames"] == 4 * 2 * 100 and lat["p50_ms"] <= lat["p99_ms"] <= lat["max_ms"]
    # the reference at realtime in the same run, on the same capture, into a discard sink of its own
    ref = lat["reference"]
    assert ref["config"] == "reference" and (ref["calls"], ref["seconds"]) == (4, 2.0)
    for r in (lat, ref):
        assert r["kept_up"] and r["behind_s"] <= harness.BEHIND_LIMIT_S, r
        assert r["realtime_calls_per_core"] == pytest.approx(4 * 2.0 / r["cpu_s"])
        assert r["sent_frames"] == r["sink_frames"] == 4 * 2 * 100
        assert r["wall_s"] >= 2.0 and r["sink_cpu_s"] >= 0 and r["sink_us_per_frame"] is not None
    assert lat["ratio"] == pytest.approx(lat["realtime_calls_per_core"] / ref["realtime_calls_per_core"])
    assert "ws20 / reference at realtime = " in printed
    assert ws["sink"]["cpu_s"] >= 0 and "us_per_frame" in ws["sink"]
    assert (out / "calls_per_core.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "calls_per_core.txt").exists()
    assert list((out / "captures").glob("*.pcap"))


def reference_module():
    """benchmarks/reference_pipeline.py, imported."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)      # audioop, Python 3.11/3.12
            import reference_pipeline
    finally:
        sys.path.pop(0)
    return reference_pipeline


def test_reference_pipeline_output_is_close_to_rtp2ws(tmp_path):
    reference_pipeline = reference_module()
    cap = tmp_path / "c.pcap"
    capgen.make_capture(cap, 3, 2.0)
    stats = reference_pipeline.run(str(cap), out_dir=str(tmp_path / "ref"))
    assert stats == {"packets": 3 * 207, "calls": 3, "legs": 6}
    m = replay_manifest(cap, tmp_path / "out")
    for c in m["calls"]:
        for leg in c["legs"]:
            ours, _, _ = read_wav(os.path.join(tmp_path / "out", leg["wav"]))
            ref, rate, _ = read_wav(str(tmp_path / "ref" / safe_name(c["call_id"]) / f"{leg['tag']}.wav"))
            assert rate == 16000 and abs(len(ref) - len(ours)) <= 2
            n = min(len(ref), len(ours))
            r = np.corrcoef(ours[:n].astype(float), ref[:n].astype(float))[0, 1]
            assert r > 0.99, (c["call_id"], leg["tag"], r)


def test_reference_pipeline_at_realtime_takes_the_capture_time_and_delivers_every_frame(tmp_path, capsys):
    """``--realtime``: no packet is handed on before its time on the capture clock, so the
    run takes at least the capture's span of wall time; every 20 ms frame still reaches
    the sink as a send of its own."""
    import time

    reference_pipeline = reference_module()
    cap = tmp_path / "c.pcap"
    info = capgen.make_capture(cap, 3, 1.0, stagger=0.5)
    span = info["last_ts"] - info["first_ts"]
    assert span > 1.4
    sink = discard.SinkProcess("discard")
    try:
        t0 = time.monotonic()
        assert reference_pipeline.main([str(cap), "--ws-url", sink.url, "--realtime"]) == 0
        wall = time.monotonic() - t0
    finally:
        stats = sink.stop()
    out = json.loads(capsys.readouterr().out)
    assert wall >= span, (wall, span)
    assert out["packets"] == 3 * (2 * 50 + 7) and out["sent_frames"] == 3 * 2 * 50
    assert 0 <= out["behind_s"] <= out["max_behind_s"]
    assert stats["binary"] == 3 * 2 * 50 and stats["connections"] == stats["closed"] == 6
    assert stats["text"] == 2 * 6                                   # a start and an end per leg
    with pytest.raises(SystemExit):
        reference_pipeline.main([str(cap), "--out-dir", str(tmp_path / "w"), "--realtime"])   # WebSocket only


def test_reference_reads_a_file_or_an_interface_and_paces_only_a_file(capsys):
    """``--live IFACE`` replaces the capture file (tests/bench/test_live_capacity.py runs it);
    one of the two is needed, not both, and ``--realtime`` paces a file only."""
    reference_pipeline = reference_module()
    for argv in ([], ["c.pcap", "--live", "lo", "--ws-url", "ws://x/"], ["--live", "lo", "--ws-url", "ws://x/", "--realtime"]):
        with pytest.raises(SystemExit):
            reference_pipeline.main(argv)
    err = capsys.readouterr().err
    assert err.count("give a capture file or --live IFACE") == 2
    assert "--realtime needs --ws-url and a capture file" in err
    with pytest.raises(ValueError, match="from a file"):
        reference_pipeline.run(None, url="ws://x/", realtime=True, live="lo")


def test_reference_clock_waits_until_due_and_measures_how_late():
    """``Clock.until``: the first packet sets the origin; a later one returns no earlier than
    its capture offset after it, and a packet met late is counted behind by how late."""
    import time

    clock = reference_module().Clock()

    async def run():
        await clock.until(100.0)
        w0 = clock.origin[1]
        await clock.until(100.05)
        early = time.monotonic() - (w0 + 0.05)
        time.sleep(0.25)                        # busy elsewhere: the next packet is met late
        await clock.until(100.1)
        late = clock.behind
        await clock.until(100.4)                # due again: waits, and is met on time
        return early, late, time.monotonic() - (w0 + 0.3)

    early, late, after = asyncio.run(run())
    assert early >= 0 and after >= 0
    assert late >= 0.2 and clock.max_behind == late
    assert clock.behind < late


def test_realtime_figures_are_withheld_when_a_run_fell_behind():
    """A realtime run whose last packet was met later than BEHIND_LIMIT_S did not carry
    its load: no calls per core, no ratio, and the table says how far behind it ended."""
    def res(config, behind):
        return {"config": config, "cpu_s": 20.0, "wall_s": 25.0, "behind_s": behind, "max_behind_s": 4.0,
                "sent": {"sent_frames": 4000}, "sink": {"binary": 4000, "cpu_s": 0.4, "us_per_frame": 100.0}}

    ok = harness.realtime_entry(res("ws20", 0.001), 100, 20.0)
    late = harness.realtime_entry(res("reference", harness.BEHIND_LIMIT_S + 3.0), 100, 20.0)
    assert ok["kept_up"] and ok["realtime_calls_per_core"] == pytest.approx(100.0)
    assert not late["kept_up"] and late["realtime_calls_per_core"] is None
    assert late["sink_us_per_frame"] == 100.0 and late["sink_frames"] == 4000
    lat = dict(ok, frames=0, reference=late, ratio=None)
    text = report.format_table({"machine": {"cpu": "x", "cores": 2, "python": "3", "native": True},
                                "settings": {"sink": "discard"}, "runs": [], "ratios": [], "stages": {},
                                "latency": lat})
    (line,) = [x for x in text.splitlines() if x.strip().startswith("reference")]
    assert "fell behind: ended 3.10 s behind" in line and "no figure" in line
    assert "ws20 / reference at realtime = no ratio" in text


def test_latency_reference_can_be_left_out():
    p = argparse.ArgumentParser()
    harness.add_arguments(p)
    assert harness.options_from_args(p.parse_args(["--latency"])).latency_reference is True
    assert harness.options_from_args(p.parse_args(["--latency", "--no-latency-reference"])).latency_reference is False


def test_stage_attribution_charges_helpers_to_their_callers():
    class Stats:
        stats = {
            ("/x/rtp2ws/net/packet.py", 1, "decode"): (1, 1, 2.0, 3.0, {}),
            ("/x/rtp2ws/codec/g711.py", 1, "dec"): (1, 1, 1.0, 2.0, {}),
            ("~", 0, "<method 'tobytes' of 'numpy.ndarray' objects>"): (
                2, 2, 1.0, 1.0, {("/x/rtp2ws/net/packet.py", 1, "decode"): (1, 1, 0.25, 0.25),
                                 ("/x/rtp2ws/codec/g711.py", 1, "dec"): (1, 1, 0.75, 0.75)}),
            ("~", 0, "<built-in method audioop.alaw2lin>"): (1, 1, 0.5, 0.5, {}),
        }

    s = report.stage_seconds(Stats())
    assert s["decode"] == pytest.approx(2.25)
    assert s["codec"] == pytest.approx(1.0 + 0.75 + 0.5)


def test_pcap_header_is_little_endian_ethernet(tmp_path):
    capgen.make_capture(tmp_path / "c.pcap", 1, 1.0)
    head = (tmp_path / "c.pcap").read_bytes()[:24]
    magic, major, minor, _, _, snap, link = struct.unpack("<IHHiIII", head)
    assert (magic, major, minor, link) == (0xA1B2C3D4, 2, 4, 1)


def test_latency_counts_the_wait_of_frames_gathered_by_flush_ms(tmp_path):
    """A frame handed on with later ones (``--flush-ms``) is stamped with the packet
    that completed it, not the newest packet of the hand-off: with 100 ms flushes
    the median frame has waited about 50 ms, whatever the machine's speed."""
    capture, info = capgen.cached_capture(tmp_path, 4, 2.0)
    sink = discard.SinkProcess("discard")
    try:
        res = harness.measure("ws20", capture, info, url=sink.url, speed=1.0, latency=True, flush_ms=100)
    finally:
        sink.stop()
    assert res["flush_ms"] == 100
    lat = res["latency"]
    assert lat["frames"] == 4 * 2 * 100
    assert lat["p50_ms"] >= 30.0, lat
    assert lat["min_ms"] < 30.0, lat          # the frame of a flush's newest packet waited for nothing
    assert 0 < lat["steady"]["frames"] < lat["frames"]


def test_cost_model_separates_set_up_from_running_cost():
    """Two call lengths at one N give what a call costs to set up and what each of its
    seconds costs; calls per core at steady state and at SIZING_SECONDS follow."""
    runs = [{"config": "ws20", "calls": 100, "seconds": L, "cpu_s": 100 * (0.003 + L * 0.0002)}
            for L in (10.0, 60.0)]
    runs.append({"config": "wav", "calls": 100, "seconds": 10.0, "cpu_s": 1.0})     # one length: no fit
    (m,) = report.cost_model(runs)
    assert m["config"] == "ws20" and m["calls"] == 100 and m["lengths"] == [10.0, 60.0]
    assert m["setup_ms"] == pytest.approx(3.0) and m["per_call_second_us"] == pytest.approx(200.0)
    assert m["steady_calls_per_core"] == pytest.approx(5000.0)
    assert m["at_sizing"] == pytest.approx(180 / (0.003 + 180 * 0.0002))
    assert report._find(runs, "ws20", 100)["seconds"] == 60.0
    assert report._find(runs, "ws20", 100, 10.0)["seconds"] == 10.0


def test_seconds_take_a_list():
    p = argparse.ArgumentParser()
    harness.add_arguments(p)
    assert p.parse_args(["--seconds", "10,60"]).seconds == (10.0, 60.0)
    assert harness.lengths_of(2.0) == (2.0,) and harness.lengths_of(None) == ()
    with pytest.raises(SystemExit):
        p.parse_args(["--seconds", "0"])


# sha256 of make_capture's pcap for fixed parameters, per FORMAT_VERSION: cached captures are
# keyed by FORMAT_VERSION, so a change to the generated bytes must bump it and record new digests.
CAPTURE_SHA256 = {
    2: {"plain": "87808bbac214b362716a13aeb8d14becbb6498b7d74c57f37292226b2876dc53",
        "lossy": "1e76a3bc1c15a160ec013d74b3ca1bcc651d3ce3f30b850f062714d66d22e58f"},
}


@pytest.mark.parametrize("name, kw", [
    ("plain", {"calls": 3, "seconds": 1.0}),
    ("lossy", {"calls": 5, "seconds": 2.0, "loss": 0.05, "reorder": 0.05, "seed": 3, "law": "ulaw", "stagger": 0.5}),
])
def test_capture_bytes_are_pinned_per_format_version(tmp_path, name, kw):
    capgen.make_capture(tmp_path / "c.pcap", **kw)
    digest = hashlib.sha256((tmp_path / "c.pcap").read_bytes()).hexdigest()
    assert digest == CAPTURE_SHA256[capgen.FORMAT_VERSION][name]


def test_tests_build_packets_with_the_bench_generator():
    """One generator: the tests' netgen and callgen re-export the package's builders
    rather than keeping copies of their own."""
    import callgen
    import netgen as tests_netgen

    for name in ("checksum", "ip_packet", "chain_ext", "udp", "_pack"):
        assert getattr(tests_netgen, name) is getattr(netgen, name), name
    assert callgen.sdp is capgen.sdp and callgen.sip is capgen.sip


def test_udp_without_checksum_and_with_dont_fragment():
    """What the bench's frames use: only the DF flag, the IP checksum and the UDP checksum differ."""
    plain = netgen.udp("10.1.0.1", 5060, "10.2.0.1", 5062, b"INVITE")
    bench = netgen.udp("10.1.0.1", 5060, "10.2.0.1", 5062, b"INVITE", df=True, udp_checksum=False)
    assert len(bench) == len(plain) == 20 + 8 + 6
    assert plain[6:8] == b"\0\0" and bench[6:8] == b"\x40\0"
    assert netgen.checksum(bench[:20]) == 0 and netgen.checksum(plain[:20]) == 0
    assert plain[26:28] != b"\0\0" and bench[26:28] == b"\0\0"
    assert bench[:6] + bench[8:10] + bench[12:26] + bench[28:] == plain[:6] + plain[8:10] + plain[12:26] + plain[28:]
    frame = netgen.ethernet(bench)
    assert frame[:14] == netgen.DST_MAC + netgen.SRC_MAC + b"\x08\x00" and frame[14:] == bench


def test_discard_sink_counts_frames_and_answers_pings_and_close():
    """``python -m rtp2ws.bench sink`` with a real websockets client: frames of every length
    encoding (7-bit, 16-bit, 64-bit) counted and skipped, a ping answered, the close echoed."""
    from websockets.asyncio.client import connect

    sink = discard.SinkProcess("discard")

    async def client():
        async with connect(sink.url, max_size=None, compression=None) as ws:
            for size in (100, 1000, 70000):
                await ws.send(b"\x01" * size)
            await ws.send("text")
            await asyncio.wait_for(await ws.ping(), 10)

    try:
        asyncio.run(client())
    finally:
        stats = sink.stop()
    assert stats["connections"] == stats["closed"] == 1
    assert stats["binary"] == 3 and stats["text"] == 1
    assert stats["bytes"] > 71100


def test_memory_breakdown_end_to_end(tmp_path, capsys):
    """``python -m rtp2ws.bench memory``: RSS per active call at realtime, the outboxes'
    chunks and resend windows, malloc, and (its second run) tracemalloc by package, file
    and line, and objects by type."""
    from rtp2ws.bench import memory

    out = tmp_path / "res"
    assert harness.main(["memory", "--calls", "3", "--seconds", "2", "--out", str(out), "--top", "5"]) == 0
    printed = capsys.readouterr().out
    for line in ("RSS per active call", "outbox chunks per call", "resend window per stream",
                 "traced Python per call", "by package:", "by line:", "objects by type per call:"):
        assert line in printed
    doc = json.loads((out / "memory_per_call.json").read_text())
    run = doc["runs"][0]
    assert run["calls"] == 3 and run["plain"]["active_calls"] == 3 and run["plain"]["legs"] == 6
    plain, traced = run["plain"]["probe"], run["traced"]["probe"]
    assert plain["rss"] > 0 and plain["outbox"]["streams"] == 6 and "traced" not in plain
    assert plain["outbox"]["chunks_in_use"] >= plain["outbox"]["retained_bytes"]["sum"] // 1024
    assert traced["traced"] > 0 and any(a.startswith("rtp2ws/") for a in traced["by_area"])
    assert len(traced["by_line"]) == 5 and len(traced["objects"]) == 5
    assert memory.area_of("/x/lib/python3.11/site-packages/websockets/asyncio/client.py") == "websockets"
    assert memory.area_of("/x/rtp2ws/ws/sender.py") == "rtp2ws/ws"
    assert memory.area_of("/usr/lib/python3.11/asyncio/tasks.py") == "python/asyncio"


def test_worker_results_merge_as_one_run():
    from rtp2ws.bench.harness import merge_worker_results

    a = {"config": "ws20", "user_s": 1.0, "sys_s": 0.5, "peak_rss_bytes": 10, "baseline_rss_bytes": 4,
         "steady_rss_bytes": 8, "calls": 3, "legs": 6, "packets": 100, "wall_s": 10.0, "behind_s": 0.01,
         "max_behind_s": 0.2, "sent": {"sent_frames": 30, "dropped_ms": 0}, "latency_samples": [0.01],
         "latency_stamps": [1.0]}
    b = dict(a, user_s=2.0, calls=2, legs=4, wall_s=10.5, behind_s=0.02, sent={"sent_frames": 20, "dropped_ms": 40},
             latency_samples=[0.02, 0.03], latency_stamps=[2.0, 3.0])
    m = merge_worker_results([a, b])
    assert (m["user_s"], m["sys_s"], m["calls"], m["legs"], m["peak_rss_bytes"]) == (3.0, 1.0, 5, 10, 20)
    assert (m["packets"], m["wall_s"], m["behind_s"], m["max_behind_s"]) == (100, 10.5, 0.02, 0.2)
    assert m["sent"] == {"sent_frames": 50, "dropped_ms": 40} and m["worker_calls"] == [3, 2]
    assert m["latency_samples"] == [0.01, 0.02, 0.03] and m["latency_stamps"] == [1.0, 2.0, 3.0]
