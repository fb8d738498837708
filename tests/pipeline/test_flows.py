"""One timeline per leg: a second RTP flow matching the same SDP leg.

* *Concurrent* (a media relay in the path: the caller's SDP port sends to the relay
  while the relay sends on to the callee's SDP port): the second flow is a leg of its
  own, ``caller#2``, with its own src/dst, timeline, WAV, WebSocket stream and
  manifest entry.
* *Replacement* (the first flow goes silent: NAT rebinding; or a re-INVITE moved the
  media): the leg goes on with the new flow.

``relay_call.pcap`` was recorded with real tools (tests/data/make_captures.sh relay:
two SIPp and tests/tools/media_relay.py, a SIP proxy with a transcoding RTP relay, on
loopback, tcpdump).  Expected audio is computed on an independent path: dpkt parses
the capture and the stdlib ``audioop`` decodes G.711; only the 2x interpolator is
shared with the code under test.
"""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import dpkt
import numpy as np
import pytest

from rtp2ws import cli
from rtp2ws.codec.resample import upsample_2x
from rtp2ws.pipeline import pipeline
from rtp2ws.pipeline.pipeline import Pipeline
from rtp2ws.pipeline.sink import Sink
from rtp2ws.sinks.wav import iso, read_wav

import callgen
import netgen
from callgen import Call, Party, frames_of, rtp_packets, sdp, tone
from fastcheck import check_equivalent
from paths import DATA

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

RELAY = DATA / "relay_call.pcap"
PY = sys.executable

A = Party("10.0.0.1", 5060, 4000, "1000")
B = Party("10.0.0.2", 5060, 5000, "2000")
R1 = Party("10.0.0.9", 5060, 7000, "relay")     # the relay's side towards the caller
R2 = Party("10.0.0.9", 5060, 7002, "relay")     # ... towards the callee


# -- helpers --------------------------------------------------------------------------

def rtp_flows(path):
    """{(src, dst): {"first": capture time, "last": ..., "ssrcs": [...], "pcm": 8 kHz audio}}
    of each RTP flow of a pcap, in the order of their first packets (dpkt + audioop)."""
    flows = {}
    with open(path, "rb") as f:
        for ts, buf in dpkt.pcap.Reader(f):
            ip = dpkt.ethernet.Ethernet(buf).data
            if not isinstance(ip, dpkt.ip.IP) or not isinstance(ip.data, dpkt.udp.UDP):
                continue
            udp = ip.data
            data = bytes(udp.data)
            if len(data) < 12 or data[0] >> 6 != 2 or 192 <= data[1] <= 223:
                continue
            rtp = dpkt.rtp.RTP(data)
            key = (f"{dpkt.utils.inet_to_str(ip.src)}:{udp.sport}", f"{dpkt.utils.inet_to_str(ip.dst)}:{udp.dport}")
            fl = flows.setdefault(key, {"first": ts, "ssrcs": [], "pcm": [], "packets": 0})
            fl["last"] = ts
            fl["packets"] += 1
            if f"0x{rtp.ssrc:08x}" not in fl["ssrcs"]:
                fl["ssrcs"].append(f"0x{rtp.ssrc:08x}")
            if rtp.pt in (0, 8):
                lin = (audioop.alaw2lin if rtp.pt == 8 else audioop.ulaw2lin)(bytes(rtp.data), 2)
                fl["pcm"].append(np.frombuffer(lin, dtype="<i2"))
    for fl in flows.values():
        fl["pcm"] = np.concatenate(fl["pcm"]).astype(np.int16)
    return flows


def replay(tmp_path, capture, *args, name="out"):
    out = tmp_path / name
    assert cli.main(["replay", str(capture), "--out-dir", str(out), "--no-progress", *args]) == 0
    return json.loads((out / "calls.json").read_text()), out


def legs_by_tag(call):
    return {l["tag"]: l for l in call["legs"]}


def wav(out, entry):
    data, rate, ch = read_wav(os.path.join(out, entry["wav"]))
    assert rate == 16000 and ch == 1
    return data


def run_generated(tmp_path, frames, *args):
    path = callgen.write(tmp_path / "cap.pcap", frames)
    check_equivalent(path)           # the fast path (C and Python) decides exactly as packet-at-a-time
    return replay(tmp_path, path, *args)


# -- the real capture ---------------------------------------------------------------------

def test_relay_capture_each_flow_is_its_own_leg(tmp_path):
    """The SIP_DTMF2 topology, recorded with SIPp + a media relay: the caller's SDP port
    sends to the relay while the relay sends (transcoded, new SSRC) to the callee's SDP
    port, and the same the other way.  Each flow is its own leg, with exactly its own
    audio on its own capture time."""
    flows = rtp_flows(RELAY)
    assert len(flows) == 4
    check_equivalent(str(RELAY))     # the fast path (C and Python) splits exactly as packet-at-a-time
    m, out = replay(tmp_path, RELAY, "--stereo")
    (call,) = m["calls"]
    assert call["end_reason"] == "bye"
    legs = legs_by_tag(call)
    assert sorted(legs) == ["callee", "callee#2", "caller", "caller#2"]
    # caller: from the caller's SDP port (16000), or to the callee's (16100)
    caller_flows = [k for k in flows if k[0].endswith(":16000") or k[1].endswith(":16100")]
    callee_flows = [k for k in flows if k[0].endswith(":16100") or k[1].endswith(":16000")]
    for tag, mine in (("caller", caller_flows), ("callee", callee_flows)):
        first, second = sorted(mine, key=lambda k: flows[k]["first"])   # capture order
        for t, key in ((tag, first), (f"{tag}#2", second)):
            entry, fl = legs[t], flows[key]
            assert (entry["src"], entry["dst"]) == key, t
            assert entry["ssrcs"] == fl["ssrcs"] and entry["packets"] == fl["packets"] and entry["lost"] == 0
            got = wav(out, entry)
            assert np.array_equal(got, upsample_2x(fl["pcm"])), t
            # on its own capture time: starts at its first packet, ends with its last
            assert entry["start"] == iso(fl["first"])
            assert abs(fl["first"] + len(got) / 16000 - (fl["last"] + 0.02)) < 0.05, t
    # the words are where they belong: the caller talks from 0.3 s, the callee from 2.0 s
    for t in legs:
        x = wav(out, legs[t]).astype(float)
        early, late = np.sum(x[:int(1.9 * 16000)] ** 2), np.sum(x[int(2.2 * 16000):] ** 2)
        assert (early > 10 * late) if t.startswith("caller") else (late > 10 * early), t
    # the stereo WAV is the two SDP legs, caller left and callee right, on capture time
    stereo, rate, ch = read_wav(os.path.join(out, call["stereo_wav"]))
    assert ch == 2
    for channel, tag in enumerate(("caller", "callee")):
        x = wav(out, legs[tag])
        off = round((flows[(legs[tag]["src"], legs[tag]["dst"])]["first"] - min(f["first"] for f in flows.values()))
                    * 16000)
        assert np.array_equal(stereo[off:off + len(x), channel], x), tag
    assert m["summary"]["extra_legs"] == 2 and m["summary"]["extra_flow_dropped"] == 0


@pytest.mark.parametrize("stereo", [False, True])
def test_relay_capture_over_websocket_one_stream_per_flow(tmp_path, stereo):
    """replay → WebSocket → ``rtp2ws sink`` (real processes on loopback): the extra legs
    are streams of their own (tag caller#2, same call_id, their own src/dst), byte for
    byte their WAVs; with --stereo the stereo stream stays caller + callee."""
    sink = subprocess.Popen([PY, "-m", "rtp2ws.cli", "sink", "--listen", "127.0.0.1:0",
                             "--out-dir", str(tmp_path / "recv")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = sink.stdout.readline()
        assert "listening on" in line, sink.stderr.read()
        extra = ["--stereo"] if stereo else []
        r = subprocess.run([PY, "-m", "rtp2ws.cli", "replay", str(RELAY), "--ws-url", line.split()[-1] + "/",
                            *extra], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
    finally:
        sink.terminate()
        sink.wait(20)
    m, ref = replay(tmp_path, RELAY, *extra, name="ref")
    (call,) = m["calls"]
    legs = legs_by_tag(call)
    recv = tmp_path / "recv"
    got = {p.relative_to(recv): p.read_bytes() for p in recv.rglob("*.wav")}
    names = ["caller#2.wav", "callee#2.wav"] + (["stereo.wav"] if stereo else ["caller.wav", "callee.wav"])
    want = {Path(call["stereo_wav"] if n == "stereo.wav" else legs[n[:-4]]["wav"]).relative_to("calls"): n
            for n in names}
    assert set(got) == set(want)
    for rel in want:
        assert got[rel] == (ref / "calls" / rel).read_bytes(), rel
    with open(recv / "messages.jsonl") as f:
        msgs = [json.loads(line)["message"] for line in f]
    starts = {s["tag"]: s for s in msgs if s["type"] == "start"}
    assert set(starts) == {n[:-4] for n in names}
    for tag, s in starts.items():
        assert s["call_id"] == call["call_id"]
        assert s["channels"] == (2 if tag == "stereo" else 1)
        if tag != "stereo":
            assert (s["src"], s["dst"]) == (legs[tag]["src"], legs[tag]["dst"])
    ends = {e["tag"]: e for e in msgs if e["type"] == "end"}
    assert ends["caller#2"]["ssrcs"] == legs["caller#2"]["ssrcs"] and ends["caller#2"]["reason"] == "bye"
    if stereo:
        assert set(ends["stereo"]["legs"]) == {"caller", "callee"}


# -- generated captures: the decision, exactly -------------------------------------------

def relay_call(t0=100.0, n=16000, lag=0.0005, second_at=0.0):
    """Caller → relay (440 Hz) and relay → callee (1000 Hz, another SSRC), concurrent;
    the relay's flow starts ``second_at`` s after the caller's."""
    c = Call("relay@test", A, B)
    pa, pr = tone(440, n), tone(1000, n, amp=6000)
    skip = int(second_at * 8000) // 160 * 160
    s1 = rtp_packets(A, R1, t0 + 0.1, pa, ssrc=0xAAAA0001)
    s2 = rtp_packets(R2, B, t0 + 0.1 + skip / 8000 + lag, pr[skip:], ssrc=0xBBBB0002, seq0=30000, ts0=999)
    return c, c.setup(t0), s1, s2, pa, pr[skip:]


@pytest.mark.parametrize("second_at", [0.0, 0.5])
def test_concurrent_flow_gets_its_own_leg_sample_exact(tmp_path, second_at):
    c, setup, s1, s2, pa, pr = relay_call(second_at=second_at)
    m, out = run_generated(tmp_path, frames_of(setup, s1, s2, c.bye(102.2)))
    legs = legs_by_tag(m["calls"][0])
    assert sorted(legs) == ["callee", "caller", "caller#2"]
    one, two = legs["caller"], legs["caller#2"]
    assert (one["src"], one["dst"]) == ("10.0.0.1:4000", "10.0.0.9:7000")
    assert (two["src"], two["dst"]) == ("10.0.0.9:7002", "10.0.0.2:5000")
    assert one["ssrcs"] == ["0xaaaa0001"] and two["ssrcs"] == ["0xbbbb0002"]
    assert one["packets"] == 100 and two["packets"] == len(pr) // 160
    assert np.array_equal(wav(out, one), callgen.expected_16k(pa))
    assert np.array_equal(wav(out, two), callgen.expected_16k(pr))
    assert one["start"] == iso(s1[0][0]) and two["start"] == iso(s2[0][0])
    assert legs["callee"]["packets"] == 0
    assert "extra_flow_dropped" not in one


def test_replacement_flow_continues_the_leg(tmp_path):
    """The caller's flow stops; later another flow (NAT rebinding: new source port, new
    SSRC, no signalling) takes over: one leg, one timeline, both parts at their capture time."""
    c = Call("nat@test", A, B)
    pa, pb = tone(440, 8000), tone(700, 8000)
    s1 = rtp_packets(A, B, 100.1, pa, ssrc=1)                                  # 100.1 .. 101.1
    s2 = rtp_packets(A, B, 101.5, pb, ssrc=2, seq0=7000, ts0=123456, src_port=61000)
    m, out = run_generated(tmp_path, frames_of(c.setup(100), s1, s2, c.bye(103)))
    legs = legs_by_tag(m["calls"][0])
    assert sorted(legs) == ["callee", "caller"]
    caller = legs["caller"]
    assert caller["packets"] == 100 and caller["ssrcs"] == ["0x00000001", "0x00000002"]
    got = wav(out, caller)
    gap = round((101.5 - 101.1) * 16000)
    assert len(got) == 32000 + gap
    e1, e2 = callgen.expected_16k(pa), callgen.expected_16k(pb)
    assert np.array_equal(got[:16000 - 64], e1[:16000 - 64])
    assert not got[16000 + 64:16000 + gap - 64].any()
    assert np.array_equal(got[16000 + gap + 64:], e2[64:])


def test_nat_rebinding_at_the_next_packet_is_one_leg(tmp_path):
    """The flow's source port changes between two packets of one RTP stream: the old
    flow never sends again, so the new one replaces it (decided after FLOW_WINDOW)."""
    c = Call("rebind@test", A, B)
    pa = tone(440, 16000)
    s = rtp_packets(A, B, 100.1, pa, ssrc=5)
    moved = rtp_packets(A, B, 100.1, pa, ssrc=5, src_port=62000)
    frames = frames_of(c.setup(100), s[:40], moved[40:], c.bye(102.5))
    m, out = run_generated(tmp_path, frames)
    legs = legs_by_tag(m["calls"][0])
    assert sorted(legs) == ["callee", "caller"]
    caller = legs["caller"]
    assert caller["packets"] == 100 and caller["lost"] == 0
    assert np.array_equal(wav(out, caller), callgen.expected_16k(pa))


def test_reinvite_move_with_stragglers_stays_one_leg(tmp_path):
    """A re-INVITE moves the media; the old flow sends a few more packets after the new
    one began (make before break): signalling says it moved, so it is one leg."""
    c = Call("mbb@test", A, B)
    f = c.setup(100)
    pa = tone(440, 8000)
    s1 = rtp_packets(A, B, 100.1, pa[:4800], ssrc=1, seq0=1, ts0=0)          # until 100.7
    c.cseq = 2
    f += c.request(100.55, "INVITE", body=sdp(A.ip, 4100))
    f += c.response(100.56, 200, "OK", "INVITE", body=sdp(B.ip, 5100))
    f += c.request(100.57, "ACK")
    s2 = rtp_packets(Party(A.ip, 5060, 4100, A.user), Party(B.ip, 5060, 5100, B.user), 100.6, pa[4000:],
                     ssrc=1, seq0=26, ts0=4000)
    m, out = run_generated(tmp_path, frames_of(f, s1, s2, c.bye(102)))
    legs = legs_by_tag(m["calls"][0])
    assert sorted(legs) == ["callee", "caller"]
    caller = legs["caller"]
    assert caller["packets"] == 55 and caller["duplicates"] == 5
    assert np.array_equal(wav(out, caller), callgen.expected_16k(pa))


def test_extra_legs_are_bounded_the_rest_counted(tmp_path):
    """Six concurrent flows match the caller leg: caller, caller#2 .. caller#4, and the
    packets of the other two are counted and dropped."""
    c = Call("many@test", A, B)
    streams = [rtp_packets(A, R1, 100.1, tone(440, 8000), ssrc=1)]
    for i in range(5):
        relay = Party("10.0.0.9", 5060, 7002 + 2 * i, "relay")
        streams.append(rtp_packets(relay, B, 100.1 + 0.001 * (i + 1), tone(500 + 100 * i, 8000), ssrc=10 + i))
    m, out = run_generated(tmp_path, frames_of(c.setup(100), *streams, c.bye(101.5)))
    legs = legs_by_tag(m["calls"][0])
    assert sorted(legs) == ["callee", "caller", "caller#2", "caller#3", "caller#4"]
    for i, tag in enumerate(("caller#2", "caller#3", "caller#4")):
        assert legs[tag]["ssrcs"] == [f"0x{10 + i:08x}"] and legs[tag]["packets"] == 50
        assert np.array_equal(wav(out, legs[tag]), callgen.expected_16k(tone(500 + 100 * i, 8000)))
    assert legs["caller"]["extra_flow_dropped"] == 100
    assert m["summary"]["extra_legs"] == 3 and m["summary"]["extra_flow_dropped"] == 100


def test_both_directions_through_a_relay_and_stereo(tmp_path):
    """Each direction has a second flow; the stereo WAV is caller + callee, each extra
    leg a mono WAV of its own."""
    c = Call("both@test", A, B)
    pa, pb, ra, rb = tone(440, 8000), tone(1000, 8000, amp=6000), tone(300, 8000), tone(1300, 8000)
    frames = frames_of(c.setup(100), rtp_packets(A, R1, 100.1, pa, ssrc=1), rtp_packets(R2, B, 100.1005, ra, ssrc=2),
                       rtp_packets(B, R2, 100.103, pb, ssrc=3), rtp_packets(R1, A, 100.1035, rb, ssrc=4),
                       c.bye(101.5))
    m, out = run_generated(tmp_path, frames, "--stereo")
    (call,) = m["calls"]
    legs = legs_by_tag(call)
    assert [l["tag"] for l in call["legs"]] == ["caller", "callee", "caller#2", "callee#2"]
    for tag, pcm in (("caller", pa), ("callee", pb), ("caller#2", ra), ("callee#2", rb)):
        assert np.array_equal(wav(out, legs[tag]), callgen.expected_16k(pcm)), tag
    stereo, _, ch = read_wav(os.path.join(out, call["stereo_wav"]))
    off = round(0.003 * 16000)
    assert ch == 2 and len(stereo) == off + 16000
    assert np.array_equal(stereo[:16000, 0], callgen.expected_16k(pa))
    assert np.array_equal(stereo[off:, 1], callgen.expected_16k(pb))


# -- the pipeline's bounds and timers ---------------------------------------------------------

class Audio(Sink):
    def __init__(self):
        self.got = {}

    def leg_audio(self, call, leg, pcm):
        self.got.setdefault(leg.tag, []).append(pcm)


def test_undecided_flow_is_held_within_bounds_then_decided():
    """A new flow while the leg's own is silent: its packets are held (never more than
    MAX_HELD), then it takes over; nothing is lost."""
    c = Call("flood@test", A, B)
    sink = Audio()
    pipe = Pipeline(1, sink)
    first = rtp_packets(A, B, 100.1, tone(440, 1600), ssrc=1)                      # 10 packets
    flood = [(100.5 + i * 0.001, s, ip) for i, (_, s, ip) in
             enumerate(rtp_packets(A, B, 0, tone(700, 160 * 300), ssrc=2, seq0=5000, src_port=61000))]
    most = 0
    for t, ip in frames_of(c.setup(100), first, flood):
        pipe.feed(t, netgen.link(1, ip))
        most = max([most] + [len(u.packets) for u in pipe._undecided.values()])
    assert most == pipeline.MAX_HELD
    assert not pipe._undecided
    pipe.finish()
    assert pipe.stats["rtp"] == 10 + 300 and pipe.stats["extra_legs"] == 0
    assert pipe.stats["extra_flow_dropped"] == 0


def test_idle_tick_decides_at_the_deadline():
    """Live capture with nothing more coming: the tick that reaches the new flow's
    deadline decides it, and its audio goes out."""
    c = Call("idle@test", A, B)
    sink = Audio()
    pipe = Pipeline(1, sink)
    s1 = rtp_packets(A, B, 100.1, tone(440, 1600), ssrc=1)                          # until 100.3
    s2 = rtp_packets(A, B, 100.5, tone(700, 800), ssrc=2, src_port=61000)          # 100.5 .. 100.58
    for t, ip in frames_of(c.setup(100), s1, s2):
        pipe.feed(t, netgen.link(1, ip))
        pipe.tick(t)
    before = sum(len(x) for x in sink.got["caller"])
    assert len(pipe._undecided) == 1
    pipe.tick(100.5 + pipeline.FLOW_WINDOW - 0.001)
    assert len(pipe._undecided) == 1
    pipe.tick(100.5 + pipeline.FLOW_WINDOW)
    assert not pipe._undecided
    after = sum(len(x) for x in sink.got["caller"])
    assert after > before            # the held packets went on the leg's timeline and out
    assert set(sink.got) == {"caller"}
