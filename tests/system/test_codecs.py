"""The codecs beside G.711 end to end: SIP calls (tests/callgen.py) whose RTP carries speech
encoded by the reference encoders (tests/codecgen.py), replayed to WAV files at every
--rate and to WebSocket streams (rtp2ws sink); the issue's PCMU -> G.722 re-INVITE call;
G.729 with Annex B; Opus mono and stereo with a packet lost and recovered by FEC."""

import json
import subprocess
import sys
from datetime import datetime

import numpy as np
import pytest

from rtp2ws import cli
from rtp2ws.codec import g711
from rtp2ws.codec.resample import RATES, upsample
from rtp2ws.media.rtp import RtpPacket, serialize_rtp
from rtp2ws.sinks.wav import read_wav

import callgen
import codecgen
import netgen
from callgen import Call, Party, sdp
from fastcheck import check_equivalent
from sinkclient import SinkProcess

A = Party("10.0.0.1", 5060, 4000, "1000")
B = Party("10.0.0.2", 5060, 5000, "2000")
PY = sys.executable
OPUS_SDP = "a=rtpmap:111 opus/48000/2\r\na=fmtp:111 useinbandfec=1"


class Stream:
    """One party's RTP (one SSRC, real time): [(time, seq, IP packet)], the timestamp
    moving by ``clock`` / 8000 per 8 kHz unit."""

    def __init__(self, src, dst, ssrc, t, seq=3000, ts=160_000):
        self.src, self.dst, self.ssrc, self.t, self.seq, self.ts = src, dst, ssrc, t, seq, ts
        self.packets = []

    def send(self, pt, payload, ticks, clock=8000, *, skip=0, drop=False):
        self.ts += skip * clock // 8000
        self.t += skip / 8000
        if not drop:
            rtp = serialize_rtp(RtpPacket(self.seq & 0xFFFF, self.ts & 0xFFFFFFFF, self.ssrc, pt, False, payload))
            self.packets.append((self.t, self.seq, netgen.udp(self.src.ip, self.src.rtp_port, self.dst.ip,
                                                              self.dst.rtp_port, rtp)))
        self.seq += 1
        self.ts += ticks * clock // 8000
        self.t += ticks / 8000


def reinvite(c, t, pts, *, extra=""):
    """A re-INVITE from the caller with SDP ``pts``, its 200 OK and ACK."""
    c.cseq += 1
    return (c.request(t, "INVITE", body=sdp(A.ip, A.rtp_port, pts=pts, extra=extra, origin="- 1234 2"))
            + c.response(t + 0.01, 200, "OK", "INVITE", body=sdp(B.ip, B.rtp_port, pts=pts, extra=extra,
                                                                  origin="- 5678 2"))
            + c.request(t + 0.02, "ACK"))


def replay(tmp_path, frames, *args, name="cap.pcap"):
    path = callgen.write(tmp_path / name, frames)
    out = tmp_path / f"out{'-'.join(args)}"
    assert cli.main(["replay", path, "--out-dir", str(out), "--no-progress", *args]) == 0
    with open(out / "calls.json") as f:
        (call,) = json.load(f)["calls"]
    legs = {leg["tag"]: leg for leg in call["legs"]}
    return path, legs, {tag: read_wav(str(out / leg["wav"])) for tag, leg in legs.items() if leg["wav"]}


def pcmu_to_g722_call():
    """The issue's call: PCMU for 1 s, a re-INVITE to G.722 (both parties go on with the
    same SSRC and RTP clock; the callee 1.2 s later), G.722 speech to the end.  Returns
    frames, and per leg its PCMU payloads and G.722 payloads."""
    c = Call("reinvite@codecs", A, B)
    frames = c.setup(100.0, pts=(0, 101))
    g = codecgen.g722_payloads()
    rng = np.random.default_rng(3)
    legs = {}
    for tag, src, dst, ssrc, t0, later in (("caller", A, B, 0xCA11E4, 100.1, 0),
                                           ("callee", B, A, 0xCA11EE, 100.103, 60)):
        s = Stream(src, dst, ssrc, t0)
        u = [g711.encode_ulaw(rng.integers(-3000, 3000, 160).astype(np.int16)) for _ in range(50 + later)]
        for p in u:
            s.send(0, p, 160)
        for p in g[later:]:
            s.send(9, p, 160)
        frames += [(t, ip) for t, _, ip in s.packets]
        legs[tag] = (u, g[later:])
    frames += reinvite(c, 101.095, (9, 101))
    frames += c.bye(100.2 + 1 + len(g) * 0.02)
    frames.sort(key=lambda f: f[0])
    return frames, legs


@pytest.mark.parametrize("rate", RATES)
def test_pcmu_reinvited_to_g722_is_one_timeline_at_every_rate(tmp_path, rate):
    frames, sent = pcmu_to_g722_call()
    path, legs, wavs = replay(tmp_path, frames, "--rate", str(rate))
    for tag, (u, g) in sent.items():
        leg = legs[tag]
        assert leg["codecs"] == ["PCMU", "G722"] and "unknown_pt" not in leg and "malformed" not in leg
        assert leg["packets"] == len(u) + len(g) and leg["lost"] == 0
        t0 = {"caller": 100.1, "callee": 100.103}[tag]
        segments = [(seg["codec"], datetime.fromisoformat(seg["start"]).timestamp()) for seg in leg["codec_segments"]]
        assert [c for c, _ in segments] == ["PCMU", "G722"]
        assert segments[0][1] == pytest.approx(t0, abs=0.001)
        assert segments[1][1] == pytest.approx(t0 + len(u) * 0.02, abs=0.001)
        data, got_rate, channels = wavs[tag]
        assert (got_rate, channels) == (rate, 1)
        expected = np.concatenate([upsample(g711.decode_ulaw(b"".join(u)), rate), codecgen.g722_reference(g, rate)])
        assert len(data) == len(expected) == (len(u) + len(g)) * 160 * rate // 8000
        assert np.array_equal(data, expected), tag
    if rate == 16000:
        check_equivalent(path)     # the fast path takes the PCMU part and hands the rest back unchanged


def test_pcmu_reinvited_to_g722_over_websocket(tmp_path):
    """The same call through replay -> WebSocket -> rtp2ws sink: the streams are the WAV
    files' bytes, and each carries a codec event where the codec changed."""
    frames, sent = pcmu_to_g722_call()
    path = callgen.write(tmp_path / "cap.pcap", frames)
    sink = SinkProcess(tmp_path / "recv")
    try:
        r = subprocess.run([PY, "-m", "rtp2ws.cli", "replay", path, "--ws-url", sink.url_base + "/audio"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
    finally:
        sink.stop()
    _, legs, wavs = replay(tmp_path, frames)
    got = {p.name: p for p in (tmp_path / "recv").rglob("*.wav")}
    assert len(got) == 2
    streamed = sorted(read_wav(str(p))[0].tobytes() for p in got.values())
    assert streamed == sorted(w[0].tobytes() for w in wavs.values())
    msgs = sink.messages()
    codec_events = [m for m in msgs if m["type"] == "codec"]
    assert sorted(m["codec"] for m in codec_events) == ["G722", "G722"]
    ends = [m for m in msgs if m["type"] == "end"]
    assert all(e["legs"][0]["codecs"] == ["PCMU", "G722"] if "legs" in e else e["codecs"] == ["PCMU", "G722"]
               for e in ends)


@pytest.mark.parametrize("rate", [8000, 16000])
def test_g729_with_annex_b(tmp_path, rate):
    frames_729 = codecgen.g729_frames(vad=True)
    c = Call("g729@codecs", A, B)
    frames = c.setup(100.0, pts=(18, 101))
    s = Stream(A, B, 0x729, 100.1)
    for payload, skip in codecgen.g729_packets(frames_729):
        s.send(18, payload, (len(payload) // 10 + (len(payload) % 10 == 2)) * 80, skip=skip)
    frames += [(t, ip) for t, _, ip in s.packets] + c.bye(s.t + 0.1)
    _, legs, wavs = replay(tmp_path, sorted(frames, key=lambda f: f[0]), "--rate", str(rate))
    assert legs["caller"]["codecs"] == ["G729"] and legs["caller"]["lost"] == 0
    assert np.array_equal(wavs["caller"][0], upsample(codecgen.g729_reference(frames_729), rate))


@pytest.mark.parametrize("channels", [1, 2])
def test_opus_with_a_packet_recovered_by_fec(tmp_path, channels):
    pk = codecgen.opus_payloads(channels, fec=True, loss_perc=20)[:120]
    c = Call(f"opus{channels}@codecs", A, B)
    frames = c.setup(100.0, pts=(111, 101), answer_pts=(111, 101))
    # the setup's SDP has no rtpmap for 111: a re-INVITE gives it, before any media
    frames += reinvite(c, 100.07, (111, 101), extra=OPUS_SDP)
    s = Stream(A, B, 0x0905, 100.1, ts=3_000_001)
    for i, p in enumerate(pk):
        s.send(111, p, 160, clock=48000, drop=i == 50)
    frames += [(t, ip) for t, _, ip in s.packets] + c.bye(s.t + 0.1)
    _, legs, wavs = replay(tmp_path, sorted(frames, key=lambda f: f[0]), "--rate", "24000")
    assert legs["caller"]["codecs"] == ["OPUS"] and legs["caller"]["lost"] == 1
    assert legs["caller"]["concealed_ms"] == 20
    assert np.array_equal(wavs["caller"][0], codecgen.opus_reference(pk, 24000, lost=(50,)))


def rtp_payloads(path):
    """(payload type, payload) of every RTP packet in a capture, read by dpkt."""
    import dpkt
    out = []
    with open(path, "rb") as f:
        for _, buf in dpkt.pcap.Reader(f):
            udp = dpkt.ethernet.Ethernet(buf).data.data
            if isinstance(udp, dpkt.udp.UDP) and udp.data[:1] == b"\x80" and len(udp.data) > 12:
                rtp = dpkt.rtp.RTP(udp.data)
                out.append((rtp.pt, rtp.data))
    return out


@pytest.mark.parametrize("rate", [16000, 48000])
def test_sipp_call_reinvited_to_g722_on_loopback(tmp_path, rate):
    """A capture made by real tools (tests/data/make_captures.sh g722): SIPp plays a PCMU
    pcap, re-INVITEs to G.722, plays a G.722 pcap (spandsp's encoder), tcpdump records it.
    Before: the G.722 half was 206 packets of unknown_pt and 2.42 s of audio.  Now the
    leg is both halves on one timeline: the PCMU audio, the short pause of the re-INVITE
    (silence: the RTP clock says so), then spandsp's decode of the G.722 payloads."""
    from paths import DATA
    path = DATA / "sipp_g722_reinvite.pcap"
    out = tmp_path / "out"
    assert cli.main(["replay", str(path), "--out-dir", str(out), "--no-progress", "--rate", str(rate)]) == 0
    with open(out / "calls.json") as f:
        (call,) = json.load(f)["calls"]
    caller = next(leg for leg in call["legs"] if leg["tag"] == "caller")
    assert caller["codecs"] == ["PCMU", "G722"] and "unknown_pt" not in caller
    assert caller["packets"] == 327 and caller["lost"] == 0
    data, got_rate, _ = read_wav(str(out / caller["wav"]))
    payloads = rtp_payloads(path)
    u = b"".join(p for pt, p in payloads if pt == 0)
    g = [p for pt, p in payloads if pt == 9]
    assert len(u) == 121 * 160 and len(g) == 206
    wide = codecgen.g722_reference(g, rate)
    gap = (len(data) - len(wide)) * 8000 // rate - len(u)
    assert 0 <= gap < 4000
    expected = np.concatenate([upsample(np.concatenate([g711.decode_ulaw(u), np.zeros(gap, np.int16)]), rate), wide])
    assert got_rate == rate and np.array_equal(data, expected)
    assert caller["duration_ms"] == len(expected) * 1000 // rate
    if rate == 16000:
        check_equivalent(str(path))
