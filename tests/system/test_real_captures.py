"""Captures made by real tools: sipp calls recorded with tcpdump on loopback.

The expected audio is computed on an independent path: dpkt parses the
capture, the stdlib ``audioop`` decodes G.711, and only the (separately
tested) 2x interpolator is shared with the code under test.
"""

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import dpkt
import dpkt.sll
import dpkt.sll2
import numpy as np
import pytest

from rtp2ws import cli
from rtp2ws.codec.resample import upsample_2x
from rtp2ws.sinks.wav import read_wav

from paths import DATA, TOOLS

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop


def rtp_streams(path):
    """{(src ip:port, dst ip:port): [(seq, pt, payload), ...]} via dpkt, in capture order."""
    streams = {}
    with open(path, "rb") as f:
        reader = dpkt.pcap.Reader(f)
        link = {1: dpkt.ethernet.Ethernet, 113: dpkt.sll.SLL, 276: dpkt.sll2.SLL2}[reader.datalink()]
        for ts, buf in reader:
            ip = link(buf).data
            if not isinstance(ip, dpkt.ip.IP) or not isinstance(ip.data, dpkt.udp.UDP):
                continue
            udp = ip.data
            data = bytes(udp.data)
            if len(data) < 12 or data[0] >> 6 != 2 or 192 <= data[1] <= 223:
                continue
            rtp = dpkt.rtp.RTP(data)
            key = (f"{dpkt.utils.inet_to_str(ip.src)}:{udp.sport}", f"{dpkt.utils.inet_to_str(ip.dst)}:{udp.dport}")
            streams.setdefault(key, []).append((rtp.seq, rtp.pt, bytes(rtp.data)))
    return streams


def expected_leg(packets, pt=8):
    payload = b"".join(p for _, t, p in packets if t == pt)
    lin = np.frombuffer(audioop.alaw2lin(payload, 2), dtype="<i2")
    return upsample_2x(lin.astype(np.int16))


def replay(tmp_path, capture, *args):
    out = tmp_path / "out"
    assert cli.main(["replay", str(capture), "--out-dir", str(out), "--no-progress", *args]) == 0
    return json.loads((out / "calls.json").read_text()), out


def leg_audio(out, call, tag):
    entry = next(l for l in call["legs"] if l["tag"] == tag)
    data, rate, ch = read_wav(os.path.join(out, entry["wav"]))
    return entry, data


def test_sipp_uac_pcap_call(tmp_path):
    cap = DATA / "sipp_uac_pcap.pcap"
    m, out = replay(tmp_path, cap)
    (call,) = m["calls"]
    assert call["end_reason"] == "bye"
    entry, got = leg_audio(out, call, "caller")
    (key, pkts), = [(k, v) for k, v in rtp_streams(cap).items() if k == (entry["src"], entry["dst"])]
    assert np.array_equal(got, expected_leg(pkts))
    assert entry["packets"] == len(pkts) and entry["lost"] == 0
    # the DTMF "1" sipp plays after the audio is one event, not one per packet
    assert [d["digit"] for d in entry["dtmf"]] == ["1"]
    callee = next(l for l in call["legs"] if l["tag"] == "callee")
    assert callee["packets"] == 0 and callee["wav"] is None


def test_demo_speech_both_legs(tmp_path):
    cap = DATA / "demo_speech.pcap"
    m, out = replay(tmp_path, cap, "--stereo")
    (call,) = m["calls"]
    assert call["end_reason"] == "bye"
    streams = rtp_streams(cap)
    refs = {}
    for tag in ("caller", "callee"):
        entry, got = leg_audio(out, call, tag)
        pkts = streams[(entry["src"], entry["dst"])]
        assert np.array_equal(got, expected_leg(pkts))
        refs[tag] = got
    # and the words are where they belong: each leg correlates with its own sentence
    def similarity(x, ref):
        """Peak normalised cross-correlation of ``ref`` inside ``x``."""
        x, ref = x.astype(float), ref.astype(float)
        c = np.correlate(x, ref, "valid")
        return c.max() / (np.linalg.norm(ref) * np.linalg.norm(x))

    for tag, other in (("caller", "callee"), ("callee", "caller")):
        src, rate, _ = read_wav(str(DATA / f"demo_speech_{tag}_8k.wav"))
        assert rate == 8000
        ref = upsample_2x(src.astype(np.int16))
        assert similarity(refs[tag], ref) > 0.9 > 0.3 > similarity(refs[other], ref)
    stereo, rate, ch = read_wav(os.path.join(out, call["stereo_wav"]))
    assert ch == 2 and rate == 16000


def _any_call_matches(tmp_path, cap) -> None:
    """``tcpdump -i any``'s capture of tests/tools/record_any_call.py's call: both legs,
    the audio of every RTP packet (as dpkt reads the cooked capture) to the sample."""
    m, out = replay(tmp_path, cap)
    (call,) = m["calls"]
    assert call["call_id"] == "any-call@loopback" and call["end_reason"] == "bye"
    streams = rtp_streams(cap)
    assert len(streams) == 2
    for tag, src in (("caller", "127.0.0.1:20000"), ("callee", "127.0.0.2:20002")):
        entry, got = leg_audio(out, call, tag)
        assert entry["src"] == src
        pkts = streams[(entry["src"], entry["dst"])]
        assert entry["packets"] == len(pkts) == 50 and entry["lost"] == 0
        assert np.array_equal(got, expected_leg(pkts))


@pytest.mark.parametrize("name,linktype", [("any_call_sll.pcap", 113), ("any_call_sll2.pcap", 276)])
def test_tcpdump_any_captures(tmp_path, name, linktype):
    """Linux cooked captures v1 and v2 as ``tcpdump -i any`` wrote them (tests/data/README.md)."""
    with open(DATA / name, "rb") as f:
        assert dpkt.pcap.Reader(f).datalink() == linktype
    _any_call_matches(tmp_path, DATA / name)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("tcpdump") is None, reason="needs root and tcpdump")
def test_tcpdump_any_capture_recorded_now(tmp_path):
    cap = tmp_path / "any.pcap"
    r = subprocess.run([sys.executable, str(TOOLS / "record_any_call.py"), str(cap)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    _any_call_matches(tmp_path, cap)


def _webrtc_call_matches(tmp_path, cap) -> None:
    """tests/tools/record_webrtc_call.py's capture: the WebRTC call, signalled in SIP over
    WebSocket, with its DTLS legs flagged encrypted and no audio written; the PBX's plain
    B leg decoded to the audio of every RTP packet."""
    m, out = replay(tmp_path, cap)
    calls = {c["call_id"]: c for c in m["calls"]}
    assert sorted(calls) == ["pstn-bleg@pbx", "webrtc-call@sipjs.invalid"]
    webrtc = calls["webrtc-call@sipjs.invalid"]
    assert webrtc["end_reason"] == "bye"
    legs = {leg["tag"]: leg for leg in webrtc["legs"]}
    assert (legs["caller"]["src"], legs["callee"]["src"]) == ("127.0.0.1:30000", "127.0.0.1:30002")
    for leg in legs.values():
        assert leg["encrypted"] and leg["wav"] is None and leg["packets"] == 0 and leg["dtls"] > 0
    assert not list((out / "calls").glob("webrtc*/*.wav"))
    # the DTLS records tshark finds on each leg's flow, each counted on its leg
    dtls = subprocess.run(["tshark", "-r", str(cap), "-Y", "dtls", "-T", "fields", "-e", "udp.srcport"],
                          capture_output=True, text=True, check=True).stdout.split()
    assert (legs["caller"]["dtls"], legs["callee"]["dtls"]) == (dtls.count("30000"), dtls.count("30002"))
    assert m["summary"]["tcp_ws_upgrades"] == 2 and m["summary"]["tcp_ws_messages"] == 8
    assert "tcp_ws_errors" not in m["summary"] and "tcp_desyncs" not in m["summary"]
    pstn = calls["pstn-bleg@pbx"]
    assert pstn["end_reason"] == "bye"
    streams = rtp_streams(cap)
    for tag in ("caller", "callee"):
        entry, got = leg_audio(out, pstn, tag)
        pkts = streams[(entry["src"], entry["dst"])]
        assert entry["packets"] == len(pkts) == 50 and not entry["encrypted"]
        assert np.array_equal(got, expected_leg(pkts))


needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")


@needs_tshark
def test_webrtc_call_over_websocket(tmp_path):
    _webrtc_call_matches(tmp_path, DATA / "webrtc_ws_call.pcap")


@needs_tshark
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("tcpdump") is None or shutil.which("openssl") is None,
                    reason="needs root, tcpdump and openssl")
def test_webrtc_call_over_websocket_recorded_now(tmp_path):
    cap = tmp_path / "webrtc.pcap"
    r = subprocess.run([sys.executable, str(TOOLS / "record_webrtc_call.py"), str(cap)], capture_output=True,
                       text=True, timeout=90)
    assert r.returncode == 0, r.stderr[-2000:]
    _webrtc_call_matches(tmp_path, cap)


def _can_record():
    if os.geteuid() != 0:
        return "needs root (tcpdump on lo, sipp raw-socket RTP)"
    for tool in ("sipp", "tcpdump"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (install.sh installs it)"
    if not Path("/usr/share/sip-tester/g711a.pcap").exists():
        return "sip-tester's g711a.pcap sample is missing"
    return None


@pytest.mark.skipif(_can_record() is not None, reason=str(_can_record()))
def test_live_sipp_call_recorded_now(tmp_path):
    """Record a fresh sipp call with tcpdump and check the caller leg carries exactly
    the A-law audio of the sample sipp ships."""
    cap = tmp_path / "live.pcap"
    r = subprocess.run(["bash", str(TOOLS / "record_sipp_call.sh"), str(cap),
                        "--uac-sip-port", "25060", "--uas-sip-port", "25062",
                        "--uac-rtp-port", "26000", "--uas-rtp-port", "26100"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    m, out = replay(tmp_path, cap)
    (call,) = m["calls"]
    assert call["end_reason"] == "bye"
    entry, got = leg_audio(out, call, "caller")
    assert entry["src"] == "127.0.0.1:26000" and entry["dst"] == "127.0.0.1:26100"
    # what sipp was told to play, read from the sample itself
    sample = rtp_streams("/usr/share/sip-tester/g711a.pcap")
    (pkts,) = sample.values()
    assert np.array_equal(got, expected_leg(pkts))


def test_native_and_numpy_backends_write_identical_audio(tmp_path):
    """The whole pipeline, once with the C twin and once with numpy only."""
    import sys

    from rtp2ws.codec import g711
    if "native" not in g711.BACKENDS:
        pytest.skip("rtp2ws._native is not built")
    outs = {}
    for name, env in (("native", {}), ("numpy", {"RTP2WS_NO_NATIVE": "1"})):
        out = tmp_path / name
        r = subprocess.run([sys.executable, "-c",
                            "import sys, rtp2ws.codec.g711 as g; from rtp2ws import cli; print(g.BACKEND, file=sys.stderr);"
                            "sys.exit(cli.main(sys.argv[1:]))",
                            "replay", str(DATA / "demo_speech.pcap"), "--out-dir", str(out), "--stereo"],
                           env={**os.environ, **env}, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert r.stderr.strip().splitlines()[0] == name
        outs[name] = out
    wavs = sorted(p.relative_to(outs["native"]) for p in outs["native"].rglob("*.wav"))
    assert len(wavs) == 3
    for rel in wavs:
        assert (outs["native"] / rel).read_bytes() == (outs["numpy"] / rel).read_bytes()
