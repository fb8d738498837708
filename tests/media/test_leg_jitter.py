"""Per-leg RTP interarrival jitter (``rtp2ws.media.leg``'s docstring): RFC 3550's J,
Wireshark's mean and maximum.

Every expected figure is computed here, by hand, from the capture times and RTP
timestamps the test gave the packets (``by_hand``: the RFC's formula in milliseconds,
as Wireshark's ui/tap-rtp-analysis.c computes it, with the leg's documented choices),
or in closed form; the leg's own arithmetic is in 8 kHz timestamp units.  Then: the
slow path, the fast path's C and Python twins, and a leg that goes from one to the
other (a reordered packet, a loss) give the same figures to the bit; and, when tshark is
installed, ``tshark -z rtp,streams`` prints the same means and maxima for the same
captures.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess

import pytest

from rtp2ws import cli
from rtp2ws.capture.file import BACKENDS
from rtp2ws.media.leg import CLOCK, NO_JITTER, MediaLeg, jitter_ms
from rtp2ws.media.rtp import RtpPacket, TelephoneEvent, serialize_telephone_event
from rtp2ws.pipeline.pipeline import Config
from rtp2ws.pipeline.sink import Sink

import callgen
import fastcheck
from callgen import Call, Party, frames_of, rtp_packets, tone
from paths import DATA

SSRC = 0x5EED0001
A = Party("10.0.0.1", 5060, 4000, "1000")
B = Party("10.0.0.2", 5060, 5000, "2000")


def by_hand(placed, *, resync_ms: float = 500.0):
    """RFC 3550 section 6.4.1 / A.8 in milliseconds, as Wireshark computes it, for
    ``placed``: [(capture time s, RTP timestamp (unwrapped), marker, new stream)] in the
    order the leg places them.  The first packet (and a new stream's) is the reference
    only, J starting again at 0 for a new stream; D = |(R - R') * 1000 - (S - S') / 8|;
    a D over ``resync_ms`` moves the reference and counts nothing; J += (D - J) / 16; a
    packet with the marker bit updates J but is left out of the mean and the maximum.
    Returns (mean ms, max ms, packets counted)."""
    j = total = peak = 0.0
    counted = 0
    ref = None
    for arrival, ts, marker, new in placed:
        if ref is None or new:
            if new:
                j = 0.0
            ref = (arrival, ts)
            continue
        d = abs((arrival - ref[0]) * 1000.0 - (ts - ref[1]) / 8.0)
        ref = (arrival, ts)
        if d > resync_ms:
            continue
        j += (d - j) / 16
        if not marker:
            total += j
            counted += 1
            peak = max(peak, j)
    return (total / counted if counted else None), (peak if counted else None), counted


def leg_ms(leg) -> tuple[float, float, int]:
    """A leg's (mean ms, max ms, counted), unrounded."""
    j = leg.jitter
    return j.total / j.counted / 8, j.peak / 8, j.counted


def pkt(seq, ts, *, marker=False, ssrc=SSRC, pt=8, payload=b"\xd5" * 160):
    return RtpPacket(seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc, pt, marker, payload)


# -- the slow path: MediaLeg on its own --------------------------------------------------

def test_a_constant_transit_difference_gives_the_closed_form():
    """Transit alternating 0 and 10 ms: every D is 10 ms, so J after k packets is
    10 (1 - (15/16)^k) ms; the mean over m of them is 10 (1 - 15 (1 - (15/16)^m) / m)."""
    leg = MediaLeg("caller")
    n = 400
    for i in range(n):
        leg.push(pkt(1000 + i, 50_000 + 160 * i, marker=i == 0), 100.0 + 0.02 * i + (0.010 if i % 2 else 0.0))
    leg.close()
    m = n - 1
    mean, peak, counted = leg_ms(leg)
    assert counted == m
    assert peak == pytest.approx(10 * (1 - (15 / 16) ** m), rel=1e-9)
    assert mean == pytest.approx(10 * (1 - 15 * (1 - (15 / 16) ** m) / m), rel=1e-9)
    st = leg.stats
    assert st["jitter_ms"] == round(mean, 3) and st["max_jitter_ms"] == round(peak, 3)
    assert 9.5 < st["jitter_ms"] < 10 and st["max_jitter_ms"] == 10.0


def test_random_transit_with_loss_and_a_marker_is_rfc3550_by_hand():
    """Random transit delays (never reordering: under the 20 ms spacing), 5 packets
    lost (D spans the gap), a marker bit mid-stream (J updated, not counted)."""
    rng = random.Random(7)
    lost = {40, 41, 120, 250, 251}
    leg = MediaLeg("caller")
    placed = []
    for i in range(300):
        if i in lost:
            continue
        t, ts, marker = 100.0 + 0.02 * i + rng.uniform(0, 0.015), 50_000 + 160 * i, i in (0, 150)
        leg.push(pkt(1000 + i, ts, marker=marker), t)
        placed.append((t, ts, marker, False))
    leg.close()
    mean, peak, counted = by_hand(placed)
    assert counted == 300 - len(lost) - 2
    assert leg_ms(leg) == (pytest.approx(mean, rel=1e-9), pytest.approx(peak, rel=1e-9), counted)
    assert leg.stats["lost"] == len(lost)
    # the marker packet counts nothing: the same stream without it counts one more
    unmarked = MediaLeg("caller")
    for t, ts, marker, _ in placed:
        unmarked.push(pkt(1000 + (ts - 50_000) // 160, ts, marker=ts == 50_000), t)
    unmarked.close()
    assert unmarked.jitter.counted == counted + 1


def test_a_timestamp_jump_moves_the_reference_and_a_new_ssrc_starts_j_again():
    leg = MediaLeg("caller")
    placed = []
    t, ts = 100.0, 50_000
    rng = random.Random(3)
    for i in range(60):
        if i == 20:
            ts += 8000 * 30               # hold with the RTP clock running on: 30 s ahead of the capture clock
        if i == 40:
            leg_j_before = leg.jitter
        ssrc = SSRC if i < 40 else SSRC + 1
        arrival = t + 0.02 * i + rng.uniform(0, 0.004)
        leg.push(pkt((1000 if i < 40 else 7000) + i, ts + 160 * i, marker=i == 0, ssrc=ssrc), arrival)
        placed.append((arrival, ts + 160 * i, i == 0, i == 40))
        if i == 20:                        # the jump counted nothing and kept J
            jump = leg.jitter
    leg.close()
    assert jump.counted == 19 and jump.current > 0
    assert leg_j_before.current > 0
    mean, peak, counted = by_hand(placed)
    assert counted == 60 - 3              # the first packet, the jump, the new SSRC's first
    assert leg_ms(leg) == (pytest.approx(mean, rel=1e-9), pytest.approx(peak, rel=1e-9), counted)
    assert leg.ssrcs == [SSRC, SSRC + 1]


def test_jitter_needs_two_audio_packets_and_measures_audio_only():
    leg = MediaLeg("caller")
    assert leg.stats["jitter_ms"] is None and leg.stats["max_jitter_ms"] is None and leg.jitter == NO_JITTER
    leg.push(pkt(1, 1000, marker=True), 10.0)
    assert leg.stats["jitter_ms"] is None and jitter_ms(leg.jitter) == (None, None)
    # comfort noise and DTMF between audio packets are not measured and do not move the
    # reference: the audio packet after them is measured against the audio before
    leg.push(pkt(2, 1160, pt=13, payload=b"\x40"), 10.0131)
    dtmf = serialize_telephone_event(TelephoneEvent(5, False, 10, 160))
    leg.set_payload_map({101: ("TELEPHONE-EVENT", 8000)})
    leg.push(pkt(3, 1320, pt=101, payload=dtmf), 10.0457)
    leg.push(pkt(4, 1480), 10.064)            # 3 packets (60 ms) after the first, 64 ms later
    leg.close()
    assert leg.counts["cn"] == 1 and leg.jitter.counted == 1
    assert leg.stats["jitter_ms"] == leg.stats["max_jitter_ms"] == 0.25    # D = 4 ms, J = D/16


# -- both paths: captures through the pipeline, slow and fast -------------------------------

class _Legs(Sink):
    """Each leg's jitter, raw, and the statistics the sinks report, when its call ends."""

    def __init__(self) -> None:
        self.legs: dict = {}

    def call_ended(self, call, legs):
        for tag, leg in legs.items():
            self.legs[tag] = (leg.jitter, leg.stats)


def jittered_call(path, *, seed=1, seconds=4.0, reorder=(), lose=(), max_delay=0.012):
    """A capture: SIP set-up, then each way G.711 every 20 ms with random transit delays
    (below ``max_delay``); the caller's packets at the indexes ``reorder`` swap arrival
    times with the next one, those at ``lose`` never arrive.  Returns (path, the
    caller's and the callee's packets as ``by_hand`` takes them, in sequence order)."""
    rng = random.Random(seed)
    call = Call("jitter@test", A, B)
    n = round(seconds / 0.02)
    frames = call.setup(0.0)
    placed = {}
    for tag, src, dst, ssrc, freq in (("caller", A, B, 0x1111, 440), ("callee", B, A, 0x2222, 1000)):
        s = rtp_packets(src, dst, 0.2, tone(freq, 160 * n), ssrc=ssrc, seq0=1000, ts0=50_000)
        # to the microsecond, as the capture file keeps them
        s = [(round(t + rng.uniform(0, max_delay), 6), q, ip) for t, q, ip in s]
        if tag == "caller":
            s = callgen.reorder(s, [(i, i + 1) for i in reorder])
            s = callgen.drop(s, [1000 + i for i in lose])
        s.sort(key=lambda p: p[0])
        placed[tag] = sorted(((t, 50_000 + 160 * (q - 1000), q == 1000, False) for t, q, _ in s),
                             key=lambda p: p[1])
        frames += frames_of(s)
    frames += call.bye(0.2 + seconds + 0.5)
    frames.sort(key=lambda f: f[0])
    return callgen.write(path, frames), placed["caller"], placed["callee"]


def _through(path, backend, how):
    """The legs' jitter after the capture went through the pipeline: packet at a time
    (``how`` None) or through the fast path of ``backend``; and the packets it took."""
    sink = _Legs()
    _, error, taken = fastcheck._drive(str(path), Config(), 1024, backend, how, sink)
    assert error is None
    return sink.legs, taken


@pytest.mark.parametrize("how", ["reader", "frames"])
@pytest.mark.parametrize("backend", ["native", "python"])
def test_the_fast_path_twins_measure_as_the_slow_path_to_the_bit(tmp_path, backend, how):
    """The caller's leg leaves the fast path twice (a reordered pair, then a loss: the
    slow path places those) and comes back to it; the callee's stays on it from its
    first packets.  Both twins give the slow path's figures exactly, which are the
    hand computation in sequence order (the leg's choice for reordered packets)."""
    if backend not in BACKENDS:
        from skips import native_skip_reason
        pytest.skip(native_skip_reason())
    path, caller, callee = jittered_call(tmp_path / "j.pcap", reorder=(60,), lose=(130, 131))
    slow, none = _through(path, None, None)
    fast, taken = _through(path, backend, how)
    assert none == 0 and taken > 300            # most of the 2 x 198 packets after the first ones
    assert fast == slow                          # raw state and the reported statistics
    for tag, placed in (("caller", caller), ("callee", callee)):
        mean, peak, counted = by_hand(placed)
        j, stats = fast[tag]
        assert j.counted == counted == len(placed) - 1
        assert j.total / j.counted / 8 == pytest.approx(mean, rel=1e-9)
        assert j.peak / 8 == pytest.approx(peak, rel=1e-9)
        assert (stats["jitter_ms"], stats["max_jitter_ms"]) == (round(j.total / j.counted / 8, 3),
                                                                round(j.peak / 8, 3))
    assert fast["caller"][1]["reordered"] == 1 and fast["caller"][1]["lost"] == 2


def test_the_fast_path_changes_nothing_on_a_jittered_call(tmp_path):
    """fastcheck's whole comparison (every backend and way in, streams and their end
    messages, shards) on a jittered call with reordering and loss: its Recorder keeps
    each leg's raw jitter."""
    path, _, _ = jittered_call(tmp_path / "j.pcap", seconds=1.5, reorder=(20,), lose=(40,), max_delay=0.03)
    assert fastcheck.check_equivalent(path, budgets=(1024,)) > 0


# -- tshark's figures -------------------------------------------------------------------------

TSHARK = shutil.which("tshark")
needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed (install.sh installs it)")

_STREAM = re.compile(r"(?P<src>\S+)\s+(?P<sport>\d+)\s+(?P<dst>\S+)\s+(?P<dport>\d+)\s+0x[0-9A-Fa-f]{8}\s+"
                     r"(?P<payload>\S+)\s+(?P<rest>.*)$")


def tshark_streams(path) -> dict:
    """``tshark -q -z rtp,streams``'s G.711 streams: (src, dst) as ip:port -> (mean, max)
    jitter in ms, read by the names of its columns (their order changed across versions)."""
    out = subprocess.run([TSHARK, "-q", "-n", "-z", "rtp,streams", "-r", str(path)], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    lines = out.splitlines()
    header = next(line for line in lines if "Src IP addr" in line)
    names = re.findall(r"\w+ \w+\(ms\)", header)
    streams = {}
    for line in lines:
        m = _STREAM.search(line)
        if m is None or not m["payload"].lower().startswith("g711"):
            continue
        numbers = [x for x in re.findall(r"-?\d+\.\d+", m["rest"].split(")", 1)[1])]
        assert len(numbers) == len(names), (names, line)
        by_name = dict(zip(names, map(float, numbers), strict=True))
        streams[(f"{m['src']}:{m['sport']}", f"{m['dst']}:{m['dport']}")] = (by_name["Mean Jitter(ms)"],
                                                                               by_name["Max Jitter(ms)"])
    return streams


def replay_legs(path, out) -> dict:
    """``rtp2ws replay``'s calls.json: (src, dst) -> (jitter_ms, max_jitter_ms) of every leg."""
    assert cli.main(["replay", str(path), "--out-dir", str(out), "--no-progress"]) == 0
    legs = {}
    for call in json.loads((out / "calls.json").read_text())["calls"]:
        for leg in call["legs"]:
            legs[(leg["src"], leg["dst"])] = (leg["jitter_ms"], leg["max_jitter_ms"])
    return legs


# Both print to the microsecond (3 decimals), rounded: the same value can print one
# apart at a rounding boundary; and rtp2ws reads capture times as seconds since 1970 in
# a double (steps of 0.24 us today) where Wireshark keeps nanoseconds since the first
# packet, which moves a figure by well under 0.1 us.  So: one in the last digit.
TOLERANCE_MS = 0.001 + 1e-9


@needs_tshark
@pytest.mark.parametrize("capture", ["demo_speech.pcap", "relay_call.pcap", "sipp_uac_pcap.pcap", "generated"])
def test_mean_and_max_jitter_are_tsharks(tmp_path, capture):
    """calls.json's jitter_ms and max_jitter_ms against tshark's "Mean Jitter" and "Max
    Jitter" for every G.711 stream: the bundled captures (real sockets on loopback,
    one through a relay, one from SIPp with DTMF on its own SSRC) and a generated call
    with up to 19 ms of random transit delay and loss."""
    if capture == "generated":
        path, _, _ = jittered_call(tmp_path / "j.pcap", seed=11, seconds=6.0, lose=(50, 51, 52, 200),
                                   max_delay=0.019)
    else:
        path = DATA / capture
    theirs = tshark_streams(path)
    ours = replay_legs(path, tmp_path / "out")
    assert theirs, "tshark found no G.711 stream"
    for flow, (mean, peak) in theirs.items():
        assert flow in ours, (flow, sorted(ours))
        got_mean, got_peak = ours[flow]
        assert abs(got_mean - mean) <= TOLERANCE_MS and abs(got_peak - peak) <= TOLERANCE_MS, (flow, ours[flow],
                                                                                                 (mean, peak))
    if capture == "generated":     # a figure worth comparing: milliseconds, not microseconds
        assert all(mean > 2.0 for mean, _ in theirs.values())


def test_per_ms_is_the_clock():
    """The report's unit: 8 timestamp units a millisecond at G.711's 8 kHz."""
    assert CLOCK == 8000 and jitter_ms(NO_JITTER._replace(total=80.0, counted=10, peak=16.0)) == (1.0, 2.0)

