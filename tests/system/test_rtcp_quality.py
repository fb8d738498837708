"""RTCP and per-leg quality end to end, on a capture of real RTCP (GStreamer's rtpbin,
tests/tools/record_gst_rtcp.sh: SR/RR with report blocks, SDES, BYE, RTP port + 1,
4 % of one direction's RTP dropped): ``rtp2ws replay``'s calls.json carries each leg's
``quality``, whose loss, max delta and jitter are tshark's ``rtp,streams`` figures, whose
far-end view is the last report block tshark reads about the leg's SSRC, and whose
round trip is computed here by hand from tshark's fields (SR capture time by its NTP
middle bits, the report's capture time, DLSR); the WebSocket ``end`` message of each leg
through ``rtp2ws sink`` carries the same ``quality``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from paths import DATA
from sinkclient import SinkProcess

CAPTURE = DATA / "gst_rtcp_call.pcap"
TSHARK = shutil.which("tshark")
needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed (install.sh installs it)")


def replay(*args):
    r = subprocess.run([sys.executable, "-m", "rtp2ws.cli", "replay", *map(str, args), "--no-progress"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r


def calls_json(tmp_path) -> dict:
    replay(CAPTURE, "--out-dir", tmp_path / "out")
    (call,) = json.loads((tmp_path / "out" / "calls.json").read_text())["calls"]
    return {leg["tag"]: leg for leg in call["legs"]}


def rtcp_rows():
    fields = ("frame.time_epoch", "rtcp.pt", "rtcp.senderssrc", "rtcp.timestamp.ntp.msw", "rtcp.timestamp.ntp.lsw",
              "rtcp.ssrc.identifier", "rtcp.ssrc.fraction", "rtcp.ssrc.cum_nr", "rtcp.ssrc.jitter", "rtcp.ssrc.lsr",
              "rtcp.ssrc.dlsr")
    out = subprocess.run([TSHARK, "-n", "-r", str(CAPTURE), "-Y", "rtcp", "-T", "fields", "-E", "occurrence=a",
                          "-E", "aggregator=|", *[x for f in fields for x in ("-e", f)]],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return [dict(zip(fields, (v.split("|") if v else [] for v in line.split("\t")), strict=True))
            for line in out.splitlines()]


@needs_tshark
def test_calls_json_quality_is_tsharks_and_rtcps(tmp_path):
    legs = calls_json(tmp_path)
    stats = subprocess.run([TSHARK, "-q", "-n", "-z", "rtp,streams", "-r", str(CAPTURE)], capture_output=True,
                           text=True, check=True, timeout=60).stdout
    for leg in legs.values():
        src, dst = leg["src"].replace(":", " "), leg["dst"].replace(":", " ")
        (line,) = [x for x in stats.splitlines() if f"{src.split()[0]} {src.split()[1]}" in " ".join(x.split())
                   and " ".join(dst.split()) in " ".join(x.split())]
        cols = line.split()
        # start, end, src, port, dst, port, SSRC, payload, packets, lost, (%), min/mean/max delta, min/mean/max jitter
        lost, max_delta, mean_jitter, max_jitter = int(cols[9]), float(cols[13]), float(cols[15]), float(cols[16])
        q = leg["quality"]
        assert (q["lost"], q["expected"] - q["lost"]) == (lost, int(cols[8]))
        assert abs(q["max_delta_ms"] - max_delta) <= 0.0011 and abs(q["jitter_ms"] - mean_jitter) <= 0.0011
        assert abs(q["max_jitter_ms"] - max_jitter) <= 0.0011
    assert legs["caller"]["quality"]["lost"] > 5 and legs["callee"]["quality"]["lost"] == 0    # the 4 % dropped

    # the far end's view and the round trips, by hand from tshark's fields
    rows = rtcp_rows()
    sent = {}            # NTP middle 32 bits of each SR -> its capture time
    last, rtts = {}, {}  # per reported SSRC: its last block; round trips
    for r in rows:
        t = float(r["frame.time_epoch"][0])
        if "200" in r["rtcp.pt"]:
            msw, lsw = int(r["rtcp.timestamp.ntp.msw"][0]), int(r["rtcp.timestamp.ntp.lsw"][0])
            sent[((msw << 32 | lsw) >> 16) & 0xFFFFFFFF] = t
        ids = [int(x, 16) for x in r["rtcp.ssrc.identifier"]]
        n = len(r["rtcp.ssrc.lsr"])
        # report blocks come first among the identifiers (then the SDES chunk's)
        for i in range(n):
            ssrc = ids[i]
            last[ssrc] = (int(r["rtcp.ssrc.fraction"][i]), int(r["rtcp.ssrc.cum_nr"][i]),
                          int(r["rtcp.ssrc.jitter"][i]))
            lsr = int(r["rtcp.ssrc.lsr"][i])
            if lsr in sent:
                rtts.setdefault(ssrc, []).append(t - sent[lsr] - int(r["rtcp.ssrc.dlsr"][i]) / 65536)
    assert len(rtts) == 2 and all(len(v) >= 2 for v in rtts.values())
    for leg in legs.values():
        (ssrc,) = [int(s, 16) for s in leg["ssrcs"]]
        q = leg["quality"]
        fraction, cumulative, jitter = last[ssrc]
        assert q["remote"]["fraction_lost_pct"] == round(100 * fraction / 256, 3)
        assert q["remote"]["cumulative_lost"] == cumulative and q["remote"]["jitter_ms"] == round(jitter / 8, 3)
        assert q["remote"]["reports"] == sum(1 for r in rows for i in range(len(r["rtcp.ssrc.lsr"]))
                                             if int(r["rtcp.ssrc.identifier"][i], 16) == ssrc)
        assert q["rtt_ms"] == pytest.approx(1000 * sum(rtts[ssrc]) / len(rtts[ssrc]), abs=0.001)
        assert q["max_rtt_ms"] == pytest.approx(1000 * max(rtts[ssrc]), abs=0.001)
        assert leg["rtcp"] >= 3 and q["rtcp_malformed"] == 0
        assert 1.0 <= q["mos"] <= 4.5
    assert legs["caller"]["quality"]["mos"] < legs["callee"]["quality"]["mos"] == 4.41      # the loss costs


def test_the_end_message_through_rtp2ws_sink_carries_the_quality(tmp_path):
    ref = calls_json(tmp_path)
    sink = SinkProcess(tmp_path / "recv")
    try:
        r = replay(CAPTURE, "--ws-url", sink.url_base + "/audio")
        assert "0 ms dropped" in r.stdout
    finally:
        sink.stop()
    ends = {m["tag"]: m for m in sink.messages() if m["type"] == "end"}
    assert set(ends) == {"caller", "callee"}
    for tag, m in ends.items():
        assert m["quality"] == ref[tag]["quality"]
        assert m["quality"]["remote"]["reports"] >= 3 and m["quality"]["rtt_ms"] is not None
