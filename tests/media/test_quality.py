"""A leg's quality (``rtp2ws.media.quality``): RFC 3550 A.3 loss and Wireshark's max delta
(by hand, and against ``tshark -z rtp,streams`` on real and generated captures with loss,
reordering and duplicates, through ``rtp2ws replay``), round trips from RTCP by hand, and
the simplified E-model's R and MOS for inputs computed by hand from G.107's formulas."""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import sys

import jsonschema
import pytest

from rtp2ws import cli
from rtp2ws.media.leg import MediaLeg
from rtp2ws.media.quality import NO_DELTA, LegQuality, apply_rtcp, idd, mos, pair, r_factor
from rtp2ws.media.rtcp import Dlrr, DlrrItem, ReceiverReport, ReportBlock, Rrtr, SenderReport, VoipMetrics, Xr
from rtp2ws.media.rtp import RtpPacket
from rtp2ws.ws import protocol

import callgen
import fastcheck
from callgen import Call, Party, frames_of, rtp_packets, tone
from paths import DATA

A = Party("10.0.0.1", 5060, 4000, "1000")
B = Party("10.0.0.2", 5060, 5000, "2000")


# -- the E-model ---------------------------------------------------------------------------------

def test_r_and_mos_for_inputs_computed_by_hand():
    """G.107: R = 93.2 - Idd - Ie,eff; Ie,eff = Ie + (95 - Ie) Ppl / (Ppl + Bpl);
    MOS = 1 + 0.035 R + R (R - 60)(100 - R) 7e-6.  The expected values were worked out
    by hand from those formulas (the digits below), not by the module."""
    # G.711, no loss, 60 ms one way: R = 93.2, MOS = 1 + 3.262 + 93.2 * 33.2 * 6.8 * 7e-6
    assert r_factor("PCMU", 0.0, 60.0) == pytest.approx(93.2)
    assert mos(93.2) == pytest.approx(4.409285824, abs=1e-9)
    # G.711 (Bpl 25.1), 1 % loss: Ie,eff = 95 / 26.1 = 3.63985; R = 89.56015
    assert r_factor("PCMA", 1.0, 100.0) == pytest.approx(89.560153257, abs=1e-6)
    assert mos(89.560153257) == pytest.approx(4.328075382, abs=1e-6)
    # G.711, 20 % loss: Ie,eff = 95 * 20 / 45.1 = 42.12860; R = 51.07140, MOS 2.63132
    assert r_factor("PCMU", 20.0, 0.0) == pytest.approx(51.071396896, abs=1e-6)
    assert mos(51.071396896) == pytest.approx(2.631320080, abs=1e-6)
    # G.729A (Ie 11, Bpl 19), 2 % loss, 250 ms: X = log2(2.5) = 1.32193, Idd = 8.91671,
    # Ie,eff = 11 + 84 * 2 / 21 = 19; R = 93.2 - 8.91671 - 19 = 65.28329, MOS 3.36873
    assert idd(250.0) == pytest.approx(8.916709831, abs=1e-6)
    assert r_factor("G729", 2.0, 250.0) == pytest.approx(65.283290169, abs=1e-6)
    assert mos(65.283290169) == pytest.approx(3.368734276, abs=1e-6)
    assert idd(100.0) == 0.0 and idd(400.0) == pytest.approx(24.070089220, abs=1e-6)
    # not rated; and the clip to [1, 4.5]
    assert r_factor("G722", 0.0, 0.0) is None and r_factor("opus", 0.0, 0.0) is None
    assert mos(-5) == 1.0 and mos(0) == 1.0 and mos(100) == 4.5 and mos(120) == 4.5


# -- loss and max delta, by hand ------------------------------------------------------------------

def feed(q: LegQuality, packets):
    """packets: (arrival, seq, ts, marker, pt, ssrc)."""
    for t, seq, ts, marker, pt, ssrc in packets:
        q.on_rtp(ssrc, seq & 0xFFFF, ts & 0xFFFFFFFF, marker, pt, t)


def test_a3_loss_over_streams_with_wrap_duplicates_and_a_restart():
    q = LegQuality()
    s1 = [(i * 0.02, 65530 + i, 160 * i, False, 0, 1) for i in range(12) if i not in (3, 4)]   # wraps; 2 lost
    s1.append((0.3, 65530 + 7, 160 * 7, False, 0, 1))          # a duplicate: received, not expected
    s1.append((0.31, 65530 + 12, 160 * 12, False, 0, 1))
    feed(q, s1)
    assert q.counts == (13, 12)                                   # 65530 .. 65541 (ext), 11 + duplicate
    # a jump of 5000 within the SSRC: the first packet stays aside, the next confirms a restart
    feed(q, [(0.4, 65530 + 5013, 0, False, 0, 1)])
    assert q.counts == (13, 12) and not q.fast_ok(1)
    feed(q, [(0.42, 65530 + 5014 + i, 160 * i, False, 0, 1) for i in range(5) if i != 2])
    assert q.counts == (13 + 5, 12 + 4)
    # a new SSRC: a new stream
    feed(q, [(1.0 + 0.02 * i, 100 + i, 0, False, 0, 2) for i in range(3)])
    assert q.counts == (13 + 5 + 3, 12 + 4 + 3) and q.fast_ok(2)


def test_max_delta_follows_wiresharks_rules():
    q = LegQuality()
    pk = [
        (0.000, 1, 0, True, 0),        # first: the reference only
        (0.020, 2, 160, False, 0),     # 20 ms
        (0.070, 3, 320, True, 0),      # 50 ms but a marker: not counted, moves the reference
        (0.095, 4, 480, False, 0),     # 25 ms
        (0.140, 6, 800, False, 0),     # 45 ms (a packet lost before it: the interval spans it)
        (0.150, 5, 640, False, 0),     # timestamp behind: neither counted nor the reference
        (0.180, 7, 960, False, 13),    # comfort noise: not counted
        (0.300, 8, 1120, False, 0),    # follows comfort noise: not counted
        (0.330, 9, 1280, False, 0),    # 30 ms
    ]
    feed(q, [(*p, 7) for p in pk])
    assert q.peak == pytest.approx(0.045) and q.ref == 0.33
    assert q.counts == (9, 9)
    fresh = LegQuality()
    assert fresh.peak == NO_DELTA and fresh.report("PCMU", 0.06, None, None)["max_delta_ms"] is None


# -- RTCP: what the far end says, round trips ------------------------------------------------------

def test_round_trip_and_remote_reports_by_hand():
    """The caller's SR leaves at 10.000 (capture time); the callee's RR naming it (LSR =
    the SR's NTP middle bits) passes at 10.250 with DLSR 0.200 s: 50 ms round trip from
    the capture point to the callee (the caller's leg's receiver).  The caller's XR RRTR
    at 11.000 answered by the callee's DLRR at 11.130 after 0.100 s: 30 ms, the callee's
    leg's (capture point to the caller)."""
    caller, callee = MediaLeg("caller"), MediaLeg("callee")
    pair(caller.quality, callee.quality)
    for i in range(50):
        caller.push(RtpPacket(1000 + i, 160 * i, 0xAAAA, 0, i == 0, b"\xff" * 160), 9.0 + 0.02 * i)
        callee.push(RtpPacket(7000 + i, 160 * i, 0xBBBB, 0, i == 0, b"\xff" * 160), 9.0 + 0.02 * i)
    by_ssrc = {0xAAAA: caller.quality, 0xBBBB: callee.quality}
    ntp = (3_900_000_000 << 32) | 0x12345678
    assert apply_rtcp((SenderReport(0xAAAA, ntp, 0, 50, 8000, ()),), caller.quality, by_ssrc, 10.0) == 0
    rr = ReceiverReport(0xBBBB, (ReportBlock(0xAAAA, 26, 5, 1049, 24, (ntp >> 16) & 0xFFFFFFFF, 13107),
                                 ReportBlock(0xCCCC, 0, 0, 0, 0, 0, 0)))      # a source of no leg of the call
    assert apply_rtcp((rr,), callee.quality, by_ssrc, 10.25) == 1
    rrtr_ntp = (3_900_000_001 << 32) | 0x80000000
    apply_rtcp((Xr(0xAAAA, (Rrtr(rrtr_ntp),)),), caller.quality, by_ssrc, 11.0)
    apply_rtcp((Xr(0xBBBB, (Dlrr((DlrrItem(0xAAAA, (rrtr_ntp >> 16) & 0xFFFFFFFF, 6554),)),
                            VoipMetrics(0xAAAA, 26, 0, 0, 0, 0, 0, 80, 40, -20, -70, 127, 16, 85, 127, 42,
                                        127, 0, 60, 80, 200))),), callee.quality, by_ssrc, 11.13)
    q = caller.quality_report
    # the SR's 50 ms and the RRTR's (11.13 - 11.0 - 6554/65536) 30.0 ms are both the caller's leg's
    sr_rtt, rrtr_rtt = 0.25 - 13107 / 65536, 0.13 - 6554 / 65536        # 50.003 and 29.994 ms
    assert q["rtt_ms"] == pytest.approx(1000 * (sr_rtt + rrtr_rtt) / 2, abs=1e-3)
    assert q["max_rtt_ms"] == pytest.approx(1000 * sr_rtt, abs=1e-3)
    assert q["remote"] == {"reports": 1, "fraction_lost_pct": round(100 * 26 / 256, 3), "cumulative_lost": 5,
                           "loss_pct": 10.0, "jitter_ms": 3.0, "max_jitter_ms": 3.0}   # 5 of 1049 - 1000 + 1
    assert q["xr"] == {"loss_pct": round(100 * 26 / 256, 3), "discard_pct": 0.0, "round_trip_ms": 80,
                       "end_system_delay_ms": 40, "r_factor": 85, "mos_lq": 4.2, "mos_cq": None}
    assert q["expected"] == 50 and q["lost"] == 0 and q["loss_pct"] == 0.0
    # the E-model: Ppl is the far end's 10 %; Ta = half the round trips of both directions
    # (the callee's leg has none) plus the 60 ms jitter buffer
    assert q["delay_ms"] == pytest.approx(q["rtt_ms"] / 2 + 60, abs=1e-3)
    assert q["r_factor"] == round(93.2 - 95 * 10 / (10 + 25.1), 2) and q["mos"] == round(mos(q["r_factor"]), 2)
    assert callee.quality_report["rtt_ms"] is None and callee.quality_report["remote"] is None
    assert callee.quality_report["delay_ms"] == pytest.approx(q["delay_ms"], abs=1e-3)   # the caller's round trip


def test_a_report_naming_no_sr_seen_gives_no_round_trip():
    q = LegQuality()
    q.on_rtp(1, 5, 0, False, 0, 1.0)
    q.on_report(ReportBlock(1, 0, 0, 5, 0, 0x1234, 100), 2.0)     # LSR of an SR never seen
    q.on_report(ReportBlock(1, 0, 0, 5, 0, 0, 0), 2.5)            # no SR yet (LSR 0)
    q.on_sender_time(0x5678, 3.0)
    q.on_report(ReportBlock(1, 0, 0, 5, 0, 0x5678, 65536 * 2), 4.0)   # answered before it was sent: refused
    assert q.rtt is None and q.remote is not None and q.remote.reports == 3


def _valid_quality(report):
    json.dumps(report, allow_nan=False)
    jsonschema.validate(report, protocol.SCHEMAS["end"]["properties"]["quality"])


def test_capture_time_stepping_back_gives_no_negative_max_delta():
    """fuzz/crashes/rtcp/max-delta-negative-capture-time-back: the second packet captured
    20 ms before the first (merged interfaces) was the only delta counted, and the report
    said -20 ms, which the end message's schema refuses (a sink closes with 1008)."""
    q = LegQuality()
    q.on_rtp(1, 10, 0, False, 0, 100.0)
    q.on_rtp(1, 11, 160, False, 0, 99.98)
    r = q.report("PCMU", 0.06, None, None)
    assert r["max_delta_ms"] == 0.0
    _valid_quality(r)
    q.on_rtp(1, 12, 320, False, 0, 100.0)
    assert q.report("PCMU", 0.06, None, None)["max_delta_ms"] == pytest.approx(20.0)


def test_capture_times_1e308_apart_give_finite_json():
    """Capture times are any finite floats (the registry's contract): intervals and round
    trips of 1e308 s overflowed to infinity in milliseconds (json.dumps wrote Infinity,
    and Idd(inf) made R NaN).  They stay the largest float."""
    a, b = LegQuality(), LegQuality()
    pair(a, b)
    big = 1.7976931348623157e308
    for i, t in enumerate((-big, big)):
        a.on_rtp(1, i, 160 * i, False, 0, t)
        b.on_rtp(2, i, 160 * i, False, 0, t)
    ntp = 0x0000_1234_5678_0000
    apply_rtcp((SenderReport(1, ntp, 0, 1, 160, ()),), a, {1: a, 2: b}, -big)
    apply_rtcp((ReceiverReport(2, (ReportBlock(1, 0, 0, 1, 0, (ntp >> 16) & 0xFFFFFFFF, 0),)),), b, {1: a, 2: b}, big)
    assert a.rtt == float("inf")
    for q in (a, b):
        r = q.report("PCMU", 0.06, None, None)
        _valid_quality(r)
        assert r["max_delta_ms"] == r["delay_ms"] == sys.float_info.max
        assert r["r_factor"] == pytest.approx(93.2 - 50, abs=0.01)     # Idd's limit for an endless delay: 50
    assert a.report("PCMU", 0.06, None, None)["rtt_ms"] == sys.float_info.max


# -- against tshark, through rtp2ws replay ------------------------------------------------------------

TSHARK = shutil.which("tshark")
needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed (install.sh installs it)")
_STREAM = re.compile(r"(?P<src>\S+)\s+(?P<sport>\d+)\s+(?P<dst>\S+)\s+(?P<dport>\d+)\s+0x[0-9A-Fa-f]{8}\s+"
                     r"(?P<payload>\S+)\s+(?P<pkts>\d+)\s+(?P<lost>-?\d+)\s+\((?P<pct>-?[\d.]+)%\)\s+(?P<rest>.*)$")


def tshark_streams(path, *decode) -> dict:
    """``tshark -q -z rtp,streams``: (src, dst) as ip:port -> [(pkts, lost, max delta ms)] per stream."""
    args = [x for port in decode for x in ("-d", f"udp.port=={port},rtp")]
    out = subprocess.run([TSHARK, "-q", "-n", *args, "-z", "rtp,streams", "-r", str(path)], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    lines = out.splitlines()
    names = re.findall(r"\w+ \w+\(ms\)", next(line for line in lines if "Src IP addr" in line))
    streams: dict = {}
    for line in lines:
        m = _STREAM.search(line)
        if m is None:
            continue
        numbers = [float(x) for x in re.findall(r"-?\d+\.\d+", m["rest"])]
        by_name = dict(zip(names, numbers, strict=True))
        streams.setdefault((f"{m['src']}:{m['sport']}", f"{m['dst']}:{m['dport']}"), []).append(
            (int(m["pkts"]), int(m["lost"]), by_name["Max Delta(ms)"]))
    return streams


def replay_quality(path, out) -> dict:
    """calls.json: (src, dst) -> the leg's quality."""
    assert cli.main(["replay", str(path), "--out-dir", str(out), "--no-progress"]) == 0
    return {(leg["src"], leg["dst"]): leg["quality"] for call in json.loads((out / "calls.json").read_text())["calls"]
            for leg in call["legs"]}


def impaired_call(path, *, seed=3, seconds=4.0, lose=(), swap=(), dup=(), max_delay=0.008):
    """A call with random transit delays (below the 20 ms spacing); the caller's packets at
    the indexes ``lose`` never arrive, those at ``swap`` trade arrival times with the next,
    those at ``dup`` arrive twice (3 ms apart)."""
    rng = random.Random(seed)
    call = Call("quality@test", A, B)
    n = round(seconds / 0.02)
    frames = call.setup(0.0)
    for tag, src, dst, ssrc, freq in (("caller", A, B, 0x1111, 440), ("callee", B, A, 0x2222, 1000)):
        s = rtp_packets(src, dst, 0.2, tone(freq, 160 * n), ssrc=ssrc, seq0=65000, ts0=50_000)   # wraps
        s = [(round(t + rng.uniform(0, max_delay), 6), q, ip) for t, q, ip in s]
        if tag == "caller":
            s = callgen.reorder(s, [(i, i + 1) for i in swap])
            s = callgen.duplicate(s, dup, delay=0.003)
            s = callgen.drop(s, [(65000 + i) & 0xFFFF for i in lose])
        frames += frames_of(s)
    frames += call.bye(0.2 + seconds + 0.5)
    frames.sort(key=lambda f: f[0])
    return callgen.write(path, frames)


TOLERANCE_MS = 0.001 + 1e-9      # both print to the microsecond (tests/media/test_leg_jitter.py)


@needs_tshark
@pytest.mark.parametrize("capture", ["demo_speech.pcap", "relay_call.pcap", "sipp_uac_pcap.pcap", "loss",
                                     "reorder_and_duplicates"])
def test_loss_and_max_delta_are_tsharks(tmp_path, capture):
    """Every leg's lost packets (expected less received, A.3) and max delta against tshark's
    "Lost" and "Max Delta" for the same flow (summed and maxed over tshark's streams of it:
    SIPp sends its DTMF on an SSRC of its own)."""
    if capture == "loss":
        path = impaired_call(tmp_path / "q.pcap", lose=(10, 11, 12, 90, 150))
    elif capture == "reorder_and_duplicates":
        path = impaired_call(tmp_path / "q.pcap", swap=(20, 60, 61), dup=(30, 100), lose=(120,))
    else:
        path = DATA / capture
    theirs = tshark_streams(path)
    ours = replay_quality(path, tmp_path / "out")
    assert theirs
    for flow, streams in theirs.items():
        assert flow in ours, (flow, sorted(ours))
        q = ours[flow]
        assert q["lost"] == sum(lost for _, lost, _ in streams), (flow, q, streams)
        assert q["expected"] - q["lost"] == sum(pkts for pkts, _, _ in streams)
        assert abs(q["max_delta_ms"] - max(d for _, _, d in streams)) <= TOLERANCE_MS, (flow, q, streams)
    if capture == "loss":
        lost = [q["lost"] for q in ours.values()]
        assert sorted(lost) == [0, 5]
    if capture == "reorder_and_duplicates":
        assert sorted(q["lost"] for q in ours.values()) == [-1, 0]       # 1 lost, 2 duplicates


def test_the_fast_path_measures_quality_as_the_slow_path(tmp_path):
    """fastcheck's comparison (every backend and way in, streams, shards) on a call with loss,
    reordering and duplicates: its recorder keeps each leg's quality."""
    path = impaired_call(tmp_path / "q.pcap", seconds=1.5, swap=(20,), dup=(30,), lose=(40,))
    assert fastcheck.check_equivalent(path, budgets=(1024,)) > 0
