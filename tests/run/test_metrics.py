"""``rtp2ws live --metrics``: the real endpoint of a live run on loopback, scraped over
HTTP and read with prometheus_client's own parser.  Base units, ``rtp2ws_build_info``,
the process and platform collectors, and the per-leg loss and jitter histograms, in one
process and merged from two workers.  (The snapshot and /healthz logic:
tests/system/test_metrics_config.py.)"""

from __future__ import annotations

import json
import platform
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

import rtp2ws
from rtp2ws.pipeline.shard import owner
from rtp2ws.run.metrics import (
    DELTA_BUCKETS,
    JITTER_BUCKETS,
    LOSS_BUCKETS,
    MOS_BUCKETS,
    RTT_BUCKETS,
    LegQualityHistograms,
    MetricsServer,
)
from rtp2ws.speedups import in_use

from livecall import LiveProcess
from skips import can_capture

needs_capture = pytest.mark.skipif(not can_capture(), reason="needs root or CAP_NET_RAW to capture on lo")

SIP_PORT, RTP_LO = 25770, 27200


def _filter() -> str:
    return f"udp and host 127.0.0.1 and (port {SIP_PORT} or portrange {RTP_LO}-{RTP_LO + 100})"


def scrape(port: int) -> dict:
    """name -> family, as prometheus_client parses the exposition."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def histogram(family) -> tuple[dict[float, float], float, float]:
    """(cumulative count by upper bound, sum, count) of a histogram family."""
    buckets, total, count = {}, None, None
    for s in family.samples:
        if s.name.endswith("_bucket"):
            buckets[float(s.labels["le"])] = s.value
        elif s.name.endswith("_sum"):
            total = s.value
        elif s.name.endswith("_count"):
            count = s.value
    return buckets, total, count


def wait_for_legs(port: int, legs: int, timeout: float = 10.0) -> dict:
    """Scrapes until the loss histogram has ``legs`` observations (snapshots are a second apart)."""
    deadline = time.monotonic() + timeout
    while True:
        families = scrape(port)
        if histogram(families["rtp2ws_leg_packet_loss_ratio"])[2] >= legs or time.monotonic() > deadline:
            return families
        time.sleep(0.1)


def _call_ids_one_per_worker() -> list[str]:
    ids: dict[int, str] = {}
    for i in range(100):
        ids.setdefault(owner(f"m{i}@test", 2), f"m{i}@test")
    return [ids[0], ids[1]]


def check_units_and_build(families: dict) -> None:
    names = set(families)
    # base units: nothing in ms; audio durations in seconds
    assert not [n for n in names if n.endswith("_ms") or "_ms_" in n], names
    assert {"rtp2ws_queued_audio_seconds", "rtp2ws_dropped_audio_seconds", "rtp2ws_captured_bytes"} <= names
    assert families["rtp2ws_queued_audio_seconds"].type == "gauge"
    assert families["rtp2ws_dropped_audio_seconds"].type == "counter"
    # rtp2ws_build_info: the version, Python's, and each part's backend as --version says
    (build,) = families["rtp2ws_build_info"].samples
    assert build.name == "rtp2ws_build_info" and build.value == 1
    assert build.labels == {"version": rtp2ws.__version__, "python": platform.python_version(), **in_use()}
    # the process and platform collectors are in the registry that is served
    for name in ("process_cpu_seconds", "process_resident_memory_bytes", "process_open_fds",
                 "process_start_time_seconds", "python_info"):
        assert name in names, sorted(names)
    (cpu,) = families["process_cpu_seconds"].samples
    assert cpu.value > 0
    (rss,) = families["process_resident_memory_bytes"].samples
    assert rss.value > 10 * 2 ** 20


@needs_capture
def test_live_metrics_in_base_units_with_build_process_and_leg_loss(tmp_path, call_factory):
    port = 9330
    live = LiveProcess("-i", "lo", "--bpf", _filter(), "--out-dir", tmp_path / "out", "--workers", 1,
                       "--metrics", f"127.0.0.1:{port}", "--stats-interval", "1")
    try:
        live.wait_for("capturing on lo")
        families = scrape(port)
        check_units_and_build(families)
        buckets, total, count = histogram(families["rtp2ws_leg_packet_loss_ratio"])
        assert families["rtp2ws_leg_packet_loss_ratio"].type == "histogram"
        assert sorted(buckets) == [*LOSS_BUCKETS, float("inf")]
        assert (count, total) == (0, 0) and set(buckets.values()) == {0}

        call = call_factory("loss@test", SIP_PORT, RTP_LO, RTP_LO + 2)
        call.setup()
        # the caller's leg loses 5 of 50 packets (0.1), the callee's none
        call.media(1.0, lose={"caller": {10, 11, 12, 13, 14}})
        call.bye()
        families = wait_for_legs(port, 2)
        rc, _, stderr = live.stop()
    finally:
        live.kill()
    assert rc == 0, stderr
    buckets, total, count = histogram(families["rtp2ws_leg_packet_loss_ratio"])
    assert count == 2 and total == pytest.approx(0.1)
    assert buckets[0.0] == 1                  # the callee's leg: nothing lost
    assert buckets[0.05] == 1 and buckets[0.1] == 2 and buckets[float("inf")] == 2
    assert families["rtp2ws_calls"].samples[0].value == 1


@needs_capture
def test_live_workers_merge_the_loss_histogram(tmp_path, call_factory):
    """Two workers, a call each: the supervisor's histogram adds both workers' buckets
    (a leg is observed only by the worker that owns its call)."""
    port = 9331
    live = LiveProcess("-i", "lo", "--bpf", _filter(), "--out-dir", tmp_path / "out", "--workers", 2,
                       "--metrics", f"127.0.0.1:{port}", "--stats-interval", "1")
    try:
        live.wait_for("capturing on lo")
        check_units_and_build(scrape(port))
        first, second = _call_ids_one_per_worker()
        a = call_factory(first, SIP_PORT, RTP_LO, RTP_LO + 2)
        a.setup()
        a.media(1.0, lose={"caller": {10, 11, 12, 13, 14}})        # 0.1
        a.bye()
        a.close()
        b = call_factory(second, SIP_PORT, RTP_LO + 10, RTP_LO + 12)
        b.setup()
        b.media(1.0, lose={"callee": {20}})                         # 0.02
        b.bye()
        families = wait_for_legs(port, 4)
        rc, _, stderr = live.stop()
    finally:
        live.kill()
    assert rc == 0, stderr
    assert families["rtp2ws_workers"].samples[0].value == 2
    buckets, total, count = histogram(families["rtp2ws_leg_jitter_seconds"])
    assert count == 4 and buckets[float("inf")] == 4      # every leg, observed by its worker
    buckets, total, count = histogram(families["rtp2ws_leg_packet_loss_ratio"])
    assert count == 4 and total == pytest.approx(0.12)
    assert buckets[0.0] == 2 and buckets[0.01] == 2 and buckets[0.02] == 3 and buckets[0.05] == 3
    assert buckets[0.1] == 4 and buckets[float("inf")] == 4
    for name in ("rtp2ws_leg_mos", "rtp2ws_leg_max_delta_seconds"):     # G.711 legs: every one rated
        assert histogram(families[name])[2] == 4, name
    assert histogram(families["rtp2ws_leg_rtt_seconds"])[2] == 0              # no RTCP in these calls
    _, total, _ = histogram(families["rtp2ws_leg_mos"])
    assert 4 * 3.5 < total < 4 * 4.5


@needs_capture
def test_live_leg_jitter_histogram_is_the_legs_mean_jitter(tmp_path, call_factory):
    """The callee sends its packets two at a time (every D 20 ms: its J climbs towards
    20 ms, a mean of about 17 ms over two seconds), the caller on time.  The histogram
    has one observation per leg, in seconds, whose sum and buckets are the legs'
    ``jitter_ms`` in calls.json."""
    port = 9332
    out = tmp_path / "out"
    live = LiveProcess("-i", "lo", "--bpf", _filter(), "--out-dir", out, "--workers", 1,
                       "--metrics", f"127.0.0.1:{port}", "--stats-interval", "1")
    try:
        live.wait_for("capturing on lo")
        families = scrape(port)
        assert families["rtp2ws_leg_jitter_seconds"].type == "histogram"
        buckets, total, count = histogram(families["rtp2ws_leg_jitter_seconds"])
        assert sorted(buckets) == [*JITTER_BUCKETS, float("inf")]
        assert (count, total) == (0, 0) and set(buckets.values()) == {0}
        call = call_factory("jitter@test", SIP_PORT, RTP_LO, RTP_LO + 2)
        call.setup()
        call.media(2.0, paired=("callee",))
        call.bye()
        families = wait_for_legs(port, 2)
        rc, _, stderr = live.stop()
    finally:
        live.kill()
    assert rc == 0, stderr
    (entry,) = json.loads((out / "calls.json").read_text())["calls"]
    legs = {leg["tag"]: leg for leg in entry["legs"]}
    assert 10.0 < legs["callee"]["jitter_ms"] < 25.0 and legs["callee"]["max_jitter_ms"] < 30.0
    assert legs["caller"]["jitter_ms"] < legs["callee"]["jitter_ms"]
    buckets, total, count = histogram(families["rtp2ws_leg_jitter_seconds"])
    seconds = [legs[tag]["jitter_ms"] / 1000 for tag in ("caller", "callee")]
    assert count == 2 and total == pytest.approx(sum(seconds), abs=2e-6)    # calls.json: to the microsecond
    for bound in JITTER_BUCKETS:
        assert buckets[bound] == sum(s <= bound for s in seconds), (bound, seconds)
    assert buckets[0.01] <= 1 and buckets[0.03] == 2 and buckets[float("inf")] == 2


def test_quality_histograms_are_the_legs_quality():
    """The real-RTCP capture (tests/data/gst_rtcp_call.pcap) through the pipeline with
    ``LegQualityHistograms`` on the way: the exposition's MOS, max-delta and round-trip
    histograms have one observation per leg, whose sums and buckets are the legs'
    ``quality`` (seconds for the times)."""
    from rtp2ws.pipeline.sink import Sink
    from rtp2ws.run.replay import replay

    from paths import DATA

    class Legs(Sink):
        def __init__(self):
            self.quality = {}

        def call_ended(self, call, legs):
            self.quality.update({tag: leg.quality for tag, leg in legs.items()})

    legs = Legs()
    hist = LegQualityHistograms(legs)
    replay(str(DATA / "gst_rtcp_call.pcap"), hist)
    assert set(legs.quality) == {"caller", "callee"}
    server = MetricsServer(lambda: hist.snapshot(), "127.0.0.1", 0).start()
    try:
        families = scrape(server.port)
    finally:
        server.close()
    for name, key, bounds, scale in (("rtp2ws_leg_mos", "mos", MOS_BUCKETS, 1),
                                     ("rtp2ws_leg_max_delta_seconds", "max_delta_ms", DELTA_BUCKETS, 1000),
                                     ("rtp2ws_leg_rtt_seconds", "rtt_ms", RTT_BUCKETS, 1000)):
        assert families[name].type == "histogram"
        values = [q[key] / scale for q in legs.quality.values()]
        buckets, total, count = histogram(families[name])
        assert count == 2 and total == pytest.approx(sum(values)), name
        assert sorted(buckets) == [*bounds, float("inf")]
        for bound in bounds:
            assert buckets[bound] == sum(v <= bound for v in values), (name, bound, values)
