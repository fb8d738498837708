"""replay → WebSocket → sink, end to end, with real processes on loopback."""

import asyncio
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import trustme

from rtp2ws.sinks.wav import read_wav

import callgen
from callgen import Call, Party, frames_of, rtp_packets, tone
from sinkclient import SinkProcess

A = Party("10.0.0.1", 5060, 4000, "1000")
B = Party("10.0.0.2", 5060, 5000, "2000")
PY = sys.executable


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThreadedServer:
    """A plain ``websockets`` server in a thread of its own, for the tests that need
    a server behaving differently from ``rtp2ws sink``."""

    def __init__(self, handler, *, rcvbuf=None, **kw):
        from websockets.asyncio.server import serve

        self._ready = threading.Event()
        self._loop = None
        self._stop = None

        async def main():
            self._loop = asyncio.get_running_loop()
            self._stop = self._loop.create_future()
            async with serve(handler, "127.0.0.1", 0, **kw) as srv:
                if rcvbuf:
                    for sock in srv.sockets:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
                self.port = srv.sockets[0].getsockname()[1]
                self._ready.set()
                await self._stop

        self._thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
        self._thread.start()
        assert self._ready.wait(10)
        self.url = f"ws://127.0.0.1:{self.port}/"

    def close(self):
        self._loop.call_soon_threadsafe(self._stop.set_result, None)
        self._thread.join(10)


@pytest.fixture
def sink(tmp_path):
    sinks = []

    def make(*args, port=0, name="recv"):
        s = SinkProcess(tmp_path / name, *args, port=port)
        sinks.append(s)
        return s
    yield make
    for s in sinks:
        s.stop()


def replay(*args, timeout=120, env=None):
    return subprocess.run([PY, "-m", "rtp2ws.cli", "replay", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


def make_capture(path, seconds=2.0, call_id="ws@test", headers=()):
    c = Call(call_id, A, B, invite_headers=list(headers))
    n = int(seconds * 8000)
    sa = rtp_packets(A, B, 100.1, tone(440, n), ssrc=1)
    sb = rtp_packets(B, A, 100.103, tone(1000, n, amp=6000), ssrc=2)
    return callgen.write(path, frames_of(c.setup(100), sa, sb, c.bye(100.2 + seconds)))


def wavs(d):
    return {p.relative_to(d): p.read_bytes() for p in sorted(d.rglob("*.wav"))}


@pytest.mark.parametrize("stereo", [False, True])
def test_streams_are_byte_identical_to_replay_files(tmp_path, sink, stereo):
    from paths import DATA
    demo = DATA / "demo_speech.pcap"
    s = sink()
    extra = ["--stereo"] if stereo else []
    r = replay(demo, "--ws-url", s.url_base + "/audio", *extra, "--sip-header", "User-Agent",
               "--sip-header", "X-Missing")
    assert r.returncode == 0, r.stderr
    assert "0 ms dropped" in r.stdout and "0 reconnects" in r.stdout
    ref = tmp_path / "ref"
    assert replay(demo, "--out-dir", ref, *extra).returncode == 0
    s.stop()
    got = wavs(s.out_dir)
    want = {k: v for k, v in wavs(ref / "calls").items() if (k.name == "stereo.wav") == stereo}
    assert got.keys() == want.keys() and len(got) == (1 if stereo else 2)
    for k in got:
        assert got[k] == want[k], k
    msgs = s.messages()
    starts = [m for m in msgs if m["type"] == "start"]
    assert len(starts) == len(got)
    assert all(m["sip_headers"] == {"User-Agent": "SIPp uac_play.xml", "X-Missing": None} for m in starts), starts[0]
    ends = [m for m in msgs if m["type"] == "end"]
    assert [e["reason"] for e in ends] == ["bye"] * len(got)
    assert all(e["dropped_ms"] == 0 and e["reconnects"] == 0 for e in ends)


@pytest.mark.parametrize("native", [True, False])
def test_paced_streams_go_through_the_lanes_byte_identical(tmp_path, sink, native):
    """A paced replay (as live runs): the fast path pushes each leg's frames into its
    stream's lane and the sender's flush writes them (ws.lane); the server gets
    exactly what replay writes to files.  Both twins:
    the C lane and send_batches, and the Python ones."""
    from rtp2ws.pipeline.pipeline import Config
    from rtp2ws.run.replay import stream_replay
    from rtp2ws.sinks.streams import StreamSink
    from rtp2ws.ws import lane as lane_mod
    from rtp2ws.ws import sender as sender_mod
    from rtp2ws.ws.sender import Sender, SenderConfig

    from paths import DATA

    if native and "native" not in lane_mod._BACKENDS:
        pytest.skip("rtp2ws._wsframe is not built")
    demo = DATA / "demo_speech.pcap"
    ref = tmp_path / "ref"
    assert replay(demo, "--out-dir", ref).returncode == 0
    s = sink()
    lanes = []

    class Recording(Sender):
        def open_stream(self, stream_id, start, *, channels=1):
            st = super().open_stream(stream_id, start, channels=channels)
            lanes.append(st.lane)
            return st

    if not native:      # the Python twins of the outbox, the lane and send_batches
        from rtp2ws.ws.outbox import OutboxPy
        from rtp2ws.ws.wire import WirePy, send_batches_py
        patch = {"Outbox": OutboxPy, "Wire": WirePy, "send_batches": send_batches_py}
        saved = {k: getattr(sender_mod, k) for k in patch}
        for k, v in patch.items():
            setattr(sender_mod, k, v)
    try:
        result, stats = stream_replay(str(demo), Config(flush_ms=20), SenderConfig(url=s.url_base + "/audio"),
                                      StreamSink(frame_ms=20), speed=8.0, sender_cls=Recording)
    finally:
        if not native:
            for k, v in saved.items():
                setattr(sender_mod, k, v)
    assert stats["dropped_ms"] == 0 and stats["undelivered_ms"] == 0 and stats["streams"] == 2
    assert all((type(lane) is lane_mod.LanePy) != native for lane in lanes)
    pushed = sum(lane.pushed for lane in lanes)
    samples = sum(len(v) - 44 for v in wavs(ref / "calls").values()) // 2
    assert pushed > 0.9 * samples       # all but what each leg's first hand-outs and its end carry
    s.stop()
    got = wavs(s.out_dir)
    want = wavs(ref / "calls")
    assert got.keys() == want.keys() and len(got) == 2
    for k in got:
        assert got[k] == want[k], k
    ends = [m for m in s.messages() if m["type"] == "end"]
    assert [e["reason"] for e in ends] == ["bye"] * 2


def test_sink_restart_mid_call_loses_nothing_in_the_buffer(tmp_path, sink):
    cap = make_capture(tmp_path / "c.pcap", seconds=6.0)
    ref = tmp_path / "ref"
    assert replay(cap, "--out-dir", ref).returncode == 0
    port = free_port()
    s = sink(port=port)
    proc = subprocess.Popen([PY, "-m", "rtp2ws.cli", "replay", str(cap), "--ws-url", f"ws://127.0.0.1:{port}/",
                             "--speed", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # both streams are up (a busy machine may take seconds to start the replay): then the
    # audio of the call's first half-second (at speed 2) reaches the sink before it dies
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if sum(m["type"] == "start" for m in s.messages()) >= 2:
                break
        except (OSError, ValueError):      # not written yet, or a line half written
            pass
        time.sleep(0.05)
    time.sleep(0.5)
    assert proc.poll() is None, "the replay ended before the sink was killed"
    s.kill()                 # the analysis server dies mid-call ...
    time.sleep(1.0)
    s.start(port)            # ... and comes back a second later
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    s.stop()
    got = wavs(s.out_dir)
    assert got == {k: v for k, v in wavs(ref / "calls").items()}
    ends = [m for m in s.messages() if m["type"] == "end"]
    assert len(ends) == 2 and all(e["reconnects"] >= 1 and e["dropped_ms"] == 0 for e in ends)
    resumed = [m for m in s.messages() if m["type"] == "start" and m["resumed"]]
    assert len(resumed) == 2


def _messages_so_far(s):
    try:
        return s.messages()
    except (FileNotFoundError, ValueError):     # not created yet, or a line being written
        return []


def test_outage_longer_than_the_buffer_loses_exactly_the_drops(tmp_path, sink):
    # 10 s of audio at speed 2: even if the streams' starts reach the sink's log late on
    # a loaded machine (CI once saw a stream finish before the outage began), seconds of
    # audio are still to come when the server dies.
    cap = make_capture(tmp_path / "c.pcap", seconds=10.0)
    ref = tmp_path / "ref"
    assert replay(cap, "--out-dir", ref).returncode == 0
    port = free_port()
    s = sink(port=port)
    proc = subprocess.Popen([PY, "-m", "rtp2ws.cli", "replay", str(cap), "--ws-url", f"ws://127.0.0.1:{port}/",
                             "--speed", "2", "--max-buffer-ms", "400"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # The outage starts once both streams are open (a fixed sleep raced the replay's
    # start-up on a loaded machine: an outage before any audio dropped nothing).
    deadline = time.monotonic() + 30
    while sum(m["type"] == "start" for m in _messages_so_far(s)) < 2:
        assert time.monotonic() < deadline and proc.poll() is None, "the streams never opened"
        time.sleep(0.05)
    s.kill()
    assert proc.poll() is None, "the replay ended before the outage began"
    time.sleep(1.5)          # 3 s of audio at speed 2, far more than 400 ms of buffer
    s.start(port)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    s.stop()
    msgs = s.messages()
    ends = {m["stream_id"]: m for m in msgs if m["type"] == "end"}
    starts = {m["stream_id"]: m for m in msgs if m["type"] == "start"}
    total_dropped = 0
    for sid, end in ends.items():
        tag = starts[sid]["tag"]
        # a drop repeated after a reconnect is the same message: counted once per offset
        drops = list({m["offset"]: m for m in msgs if m["type"] == "drop" and m["stream_id"] == sid}.values())
        dropped = sum(m["samples"] for m in drops)
        assert dropped > 0 and end["dropped_ms"] == dropped // 16
        got, _, _ = read_wav(str(next(s.out_dir.rglob(f"{tag}.wav"))))
        want, _, _ = read_wav(str(next(ref.rglob(f"{tag}.wav"))))
        assert len(got) == len(want)
        # every sample outside the dropped ranges arrived; inside them is silence
        hole = np.zeros(len(want), bool)
        for m in drops:
            hole[m["offset"] - m["samples"]:m["offset"]] = True
        assert np.array_equal(got[~hole], want[~hole])
        assert not got[hole].any()
        assert hole.sum() == dropped
        total_dropped += end["dropped_ms"]
    assert f"{total_dropped} ms dropped" in out


def test_server_that_never_reads_does_not_stall_replay(tmp_path):
    """The server accepts and never reads: replay still finishes, drops are counted."""
    # 300 s per leg is ~10 MB: more than the kernel's socket buffers can absorb
    cap = make_capture(tmp_path / "c.pcap", seconds=300.0)

    async def handler(ws):
        await asyncio.sleep(3600)   # never reads

    server = ThreadedServer(handler, rcvbuf=4096, max_size=None)
    try:
        r = replay(cap, "--ws-url", server.url, "--max-buffer-ms", "1000", "--out-dir", tmp_path / "o", timeout=90)
    finally:
        server.close()
    assert r.returncode == 1     # streams given up: reported, not hidden
    assert "given up" in r.stderr and "dropping the oldest" in r.stderr
    m = json.load(open(tmp_path / "o" / "calls.json"))
    assert m["summary"]["streams"]["dropped_ms"] > 100000
    # the files were still written in full
    assert all(l["duration_ms"] > 299000 for l in m["calls"][0]["legs"])


def test_server_that_accepts_and_never_reads_is_reported_undelivered(tmp_path):
    """A short call fits in the kernel's buffers, so every write succeeds, ``end``
    included; the server never reads any of it.  Nothing was acknowledged: exit
    status 1, and the summary says how much audio is undelivered."""
    from rawws import ThreadedRawServer

    cap = make_capture(tmp_path / "c.pcap", seconds=1.0)
    server = ThreadedRawServer(read=False)
    try:
        t0 = time.monotonic()
        r = replay(cap, "--ws-url", server.url, timeout=60)
        took = time.monotonic() - t0
    finally:
        server.close()
    assert r.returncode == 1, r.stdout + r.stderr
    assert took < 30            # the linger time (10 s), not forever
    m = re.search(r"streamed 2 streams, \d+ reconnects, 0 ms dropped, (\d+) ms undelivered", r.stdout)
    assert m and 1900 <= int(m.group(1)) <= 2200, r.stdout        # both legs, a second each
    assert "2 given up" in r.stderr and "not acknowledged by the server" in r.stderr


def test_sink_stopped_after_end_gets_the_call_when_restarted(tmp_path, sink):
    """``rtp2ws sink`` is frozen (SIGSTOP) in the middle of a call: the rest of it and
    ``end`` are written into its socket buffers, never read.  Then it is killed and
    started again: the unacknowledged audio (the resend window holds all of it here)
    goes to the new sink, which ends up with the whole call."""
    cap = make_capture(tmp_path / "c.pcap", seconds=3.0)
    ref = tmp_path / "ref"
    assert replay(cap, "--out-dir", ref).returncode == 0
    port = free_port()
    s = sink(port=port)
    proc = subprocess.Popen([PY, "-m", "rtp2ws.cli", "replay", str(cap), "--ws-url", f"ws://127.0.0.1:{port}/",
                             "--speed", "realtime", "--resend-ms", "10000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 15      # until both legs have streamed a second (bounded)
    while time.monotonic() < deadline:
        got = wavs(s.out_dir) if os.path.isdir(s.out_dir) else {}
        if len(got) == 2 and all((len(v) - 44) // 2 > 16000 for v in got.values()):
            break
        time.sleep(0.05)
    s.proc.send_signal(signal.SIGSTOP)
    time.sleep(3.0)          # the call ends meanwhile: its last 2 s and end are written, unread
    s.kill()
    s.start(port)
    out, err = proc.communicate(timeout=60)
    s.stop()
    assert proc.returncode == 0, err
    assert wavs(s.out_dir) == wavs(ref / "calls")
    assert "0 ms dropped, 0 ms undelivered" in out
    ends = [m for m in s.messages() if m["type"] == "end"]
    assert len(ends) == 2 and all(e["reconnects"] >= 1 and e["dropped_ms"] == 0 for e in ends)


def test_wss_with_private_ca_and_token(tmp_path, sink):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    cap = make_capture(tmp_path / "c.pcap", seconds=1.0)
    s = sink("--cert", tmp_path / "server.pem", "--token", "right-token")
    assert s.url_base.startswith("wss://")
    url = s.url_base + "/audio"
    # right token, from an environment variable so it is not on the command line
    env = dict(os.environ, RTP2WS_AUTH="Authorization: Bearer right-token")
    r = replay(cap, "--ws-url", url, "--ca-file", tmp_path / "ca.pem", "--header-env", "RTP2WS_AUTH", env=env)
    assert r.returncode == 0, r.stderr
    assert len(wavs(s.out_dir)) == 2
    # wrong token: refused by the sink, reported clearly, secret never printed
    r = replay(cap, "--ws-url", url, "--ca-file", tmp_path / "ca.pem", "--header", "Authorization: Bearer s3cr3t-wrong")
    assert r.returncode == 1
    assert "server refused the connection: HTTP 401" in r.stderr
    assert "s3cr3t-wrong" not in r.stderr + r.stdout
    # no CA: the certificate is not trusted, and that is said
    r = replay(cap, "--ws-url", url, "--max-buffer-ms", "200", timeout=60,
               env=dict(env, SSL_CERT_FILE="/nonexistent"))
    assert r.returncode == 1
    assert "certificate" in r.stderr.lower()


def test_realtime_delivers_frames_on_capture_timing(tmp_path):
    """Frames arrive paced like the capture (tolerance, not a speed assertion)."""
    cap = make_capture(tmp_path / "c.pcap", seconds=3.0)
    arrivals = {}

    async def handler(ws):
        tag = None
        async for msg in ws:
            if isinstance(msg, str):
                m = json.loads(msg)
                tag = m.get("tag", tag)
                if m["type"] == "end":
                    break
            else:
                arrivals.setdefault(tag, []).append((time.monotonic(), len(msg)))

    server = ThreadedServer(handler)
    try:
        r = replay(cap, "--ws-url", server.url, "--speed", "realtime")
    finally:
        server.close()
    assert r.returncode == 0, r.stderr
    assert set(arrivals) == {"caller", "callee"}
    for tag, frames in arrivals.items():
        times = np.array([t for t, _ in frames])
        n = len(frames)
        assert n == 150                       # 3 s of 20 ms frames
        expected = times[0] + np.arange(n) * 0.020
        # each frame within 150 ms of its capture schedule (jitter buffer, resampler
        # look-ahead and a loaded CI machine included), and the whole stream takes ~3 s
        assert np.abs(times - expected).max() < 0.15, tag
        assert 2.7 < times[-1] - times[0] < 3.3


def test_sigterm_ends_every_leg_with_shutdown(tmp_path, sink):
    cap = make_capture(tmp_path / "c.pcap", seconds=20.0)
    s = sink()
    proc = subprocess.Popen([PY, "-m", "rtp2ws.cli", "replay", str(cap), "--ws-url", s.url_base + "/",
                             "--speed", "realtime"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 15      # until both legs have streamed over a second (bounded)
    while time.monotonic() < deadline:
        got = wavs(s.out_dir) if os.path.isdir(s.out_dir) else {}
        if len(got) == 2 and all((len(v) - 44) // 2 > 1.2 * 16000 for v in got.values()):
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    s.stop()
    ends = [m for m in s.messages() if m["type"] == "end"]
    assert [e["reason"] for e in ends] == ["shutdown", "shutdown"], (err, s.messages())
    got = wavs(s.out_dir)
    assert len(got) == 2 and all(16000 < (len(v) - 44) // 2 < 5 * 16000 for v in got.values())


def test_keepalive_pings_answered_under_full_load(tmp_path):
    """A server pinging every 100 ms with a 400 ms timeout keeps every connection
    while replay decodes 40 concurrent calls at full speed."""
    rows = []
    for i in range(40):
        a = Party(f"10.1.0.{i + 1}", 5060, 4000, f"1{i}")
        b = Party("10.2.0.1", 5060, 6000 + 2 * i, f"2{i}")
        c = Call(f"load{i}@test", a, b)
        n = 8000 * 15
        rows += [c.setup(100 + i * 0.01),
                 rtp_packets(a, b, 100.1 + i * 0.01, tone(300 + i, n), ssrc=i + 1),
                 rtp_packets(b, a, 100.1 + i * 0.01, tone(500 + i, n), ssrc=1000 + i),
                 c.bye(116 + i * 0.01)]
    cap = callgen.write(tmp_path / "load.pcap", frames_of(*rows))
    closes = []

    async def handler(ws):
        ended = False
        try:
            async for msg in ws:
                if isinstance(msg, str) and json.loads(msg)["type"] == "end":
                    ended = True
        finally:
            closes.append((ended, ws.close_code, ws.close_reason))

    server = ThreadedServer(handler, ping_interval=0.1, ping_timeout=0.4)
    try:
        r = replay(cap, "--ws-url", server.url, timeout=300)
        time.sleep(0.3)
    finally:
        server.close()
    assert r.returncode == 0, r.stderr
    assert len(closes) == 80
    assert all(ended and code == 1000 for ended, code, _ in closes), [c for c in closes if c[1] != 1000][:3]
    assert "keepalive" not in r.stderr


@pytest.mark.parametrize("options,workers", [
    (["--rate", "8000", "--encoding", "mulaw"], 1),
    (["--rate", "24000", "--encoding", "alaw", "--mix", "mixed"], 1),
    (["--rate", "48000", "--stereo"], 2),
])
def test_replay_streams_in_the_format_asked_for(tmp_path, sink, options, workers):
    """Replay at full speed into ``rtp2ws sink`` with a rate, encoding and mix other than the
    default (and with --workers): the sink's WAVs are byte-identical to --out-dir's, in
    that format (WAV header fields), and hold the L16 audio of a run at the same rate and
    mix, encoded with the test's own G.711 compressor."""
    import g191

    from rtp2ws.sinks.wav import read_wav_format

    from paths import DATA

    demo = DATA / "demo_speech.pcap"
    s = sink()
    more = ["--workers", str(workers)] if workers > 1 else []
    r = replay(demo, "--ws-url", s.url_base + "/audio", *options, *more)
    assert r.returncode == 0, r.stderr
    assert "0 ms dropped" in r.stdout and "0 reconnects" in r.stdout
    ref, lin = tmp_path / "ref", tmp_path / "lin"
    assert replay(demo, "--out-dir", ref, *options, *more).returncode == 0
    rate = options[options.index("--rate") + 1]
    mix = "stereo" if "--stereo" in options else options[options.index("--mix") + 1] if "--mix" in options \
        else "per-leg"
    assert replay(demo, "--out-dir", lin, "--rate", rate, "--mix", mix).returncode == 0   # L16, one process
    s.stop()
    got = wavs(s.out_dir)
    combined = mix != "per-leg"
    want = {k: v for k, v in wavs(ref / "calls").items() if (k.name in ("stereo.wav", "mixed.wav")) == combined}
    assert got.keys() == want.keys() and len(got) == (1 if combined else 2)
    encoding = options[options.index("--encoding") + 1] if "--encoding" in options else "l16"
    channels = 2 if mix == "stereo" else 1
    for k in got:
        assert got[k] == want[k], k
        data, audio, ch = read_wav_format(str(s.out_dir / k))
        head = got[k][:60]
        tag, ch2, rate2, byte_rate, block, bits = struct.unpack_from("<HHIIHH", head, 20)
        sample = 2 if encoding == "l16" else 1
        assert (tag, ch2, rate2, bits) == ({"l16": 1, "mulaw": 7, "alaw": 6}[encoding], channels, int(rate), 8 * sample)
        assert (byte_rate, block) == (int(rate) * sample * channels, sample * channels)
        linear, _, _ = read_wav_format(str(lin / "calls" / k))
        pcm = np.frombuffer(linear, "<i2")
        assert data == (pcm.tobytes() if encoding == "l16" else
                        g191.compress(pcm, "ulaw" if encoding == "mulaw" else "alaw")), k
    starts = [m for m in s.messages() if m["type"] == "start"]
    assert {(m["codec"], m["sample_rate"], m["channels"]) for m in starts} == \
        {({"l16": "L16", "mulaw": "PCMU", "alaw": "PCMA"}[encoding], int(rate), channels)}


MIX_CALLS = [("mix-1@test", Party("10.0.1.1", 5060, 4000, "1001"), Party("10.0.1.2", 5060, 5000, "2001"), 0.3375),
             ("mix-2@test", Party("10.0.2.1", 5060, 4000, "1002"), Party("10.0.2.2", 5060, 5000, "2002"), 0.0225)]


def _mix_capture(path):
    """Two calls whose callee starts ``late`` s after the caller (not a whole frame: 2,700 and
    180 samples at 8 kHz), both full-scale 440 Hz tones in phase where they overlap (their sum
    does not fit int16: saturation, not wrap-around, is seen); caller A-law, callee µ-law.
    Returns the capture and each call's (caller payloads, callee payloads, late)."""
    parts, sent = [], {}
    for i, (call_id, a, b, late) in enumerate(MIX_CALLS):
        c = Call(call_id, a, b)
        t0 = 100.0 + i * 0.01
        n = 12000
        sa = rtp_packets(a, b, t0 + 0.1, tone(440, n, amp=30000.0), ssrc=1 + i)
        sb = rtp_packets(b, a, t0 + 0.1 + late, tone(440, n, start=round(late * 8000), amp=30000.0), ssrc=11 + i,
                         pt=0, law="ulaw")
        sent[call_id] = (b"".join(ip[40:] for _, _, ip in sa), b"".join(ip[40:] for _, _, ip in sb), late)
        parts += [c.setup(t0), sa, sb, c.bye(t0 + 0.3 + late + n / 8000)]
    return callgen.write(path, frames_of(*parts)), sent


@pytest.mark.parametrize("options,workers", [
    (["--rate", "8000", "--encoding", "alaw"], 1),
    (["--rate", "16000", "--encoding", "l16"], 2),
    (["--rate", "48000", "--encoding", "mulaw"], 1),
])
def test_mixed_is_the_saturating_sum_of_the_legs_aligned_on_capture_time(tmp_path, sink, options, workers):
    """--mix mixed into ``rtp2ws sink`` (and --out-dir in the same run): one stream per call,
    whose audio is the two legs summed with saturation, the callee's placed where its
    first packet was captured.  At 8 kHz the legs are the G.711 expansion of the payloads
    sent (audioop's, the ITU levels); at other rates the per-leg 16-bit WAVs at that rate
    (of the same run for l16, else of a run with --encoding l16: the mix is made of linear
    samples, then encoded); the sum is the test's own, encoded by the test's own G.711
    compressor; the lengths are exact: from the caller's first sample to the callee's
    last."""
    import g191

    from rtp2ws.sinks.wav import read_wav_format

    cap, sent = _mix_capture(tmp_path / "mix.pcap")
    rate, encoding = int(options[1]), options[3]
    s = sink()
    out = tmp_path / "out"
    more = ["--workers", str(workers)] if workers > 1 else []
    r = replay(cap, "--ws-url", s.url_base + "/audio", "--out-dir", out, "--mix", "mixed", *options, *more)
    assert r.returncode == 0, r.stderr
    assert "streamed 2 streams, 0 reconnects, 0 ms dropped" in r.stdout
    s.stop()
    starts = [m for m in s.messages() if m["type"] == "start"]
    assert sorted((m["call_id"], m["tag"], m["channels"], m["sample_rate"], m["codec"]) for m in starts) == \
        [(c, "mixed", 1, rate, {"l16": "L16", "mulaw": "PCMU", "alaw": "PCMA"}[encoding]) for c, *_ in MIX_CALLS]
    manifest = {c["call_id"]: c for c in json.loads((out / "calls.json").read_text())["calls"]}
    lin = out
    if encoding != "l16" and rate != 8000:
        lin = tmp_path / "lin"
        assert replay(cap, "--out-dir", lin, "--rate", str(rate)).returncode == 0
    linear = {c["call_id"]: c for c in json.loads((lin / "calls.json").read_text())["calls"]}
    for call_id, (pay_a, pay_b, late) in sent.items():
        if rate == 8000:
            legs = [g191.expand(pay_a, "alaw").astype(np.int32), g191.expand(pay_b, "ulaw").astype(np.int32)]
        else:
            legs = []
            for tag in ("caller", "callee"):
                (leg,) = [x for x in linear[call_id]["legs"] if x["tag"] == tag]
                data, audio, _ = read_wav_format(str(lin / leg["wav"]))
                assert (audio.rate, audio.encoding) == (rate, "l16")
                legs.append(np.frombuffer(data, "<i2").astype(np.int32))
        assert len(legs[0]) == len(legs[1]) == 12000 * rate // 8000
        off = round(late * rate)
        total = np.zeros(off + len(legs[1]), dtype=np.int32)
        total[:len(legs[0])] += legs[0]
        total[off:] += legs[1]
        assert (np.abs(total) > 32767).sum() > rate // 10        # it saturates, often
        want = np.clip(total, -32768, 32767).astype("<i2")
        want_bytes = want.tobytes() if encoding == "l16" else g191.compress(want, "ulaw" if encoding == "mulaw"
                                                                              else "alaw")
        for path in (s.out_dir / call_id / "mixed.wav", out / manifest[call_id]["mixed_wav"]):
            data, audio, ch = read_wav_format(str(path))
            assert (audio.rate, audio.encoding, ch) == (rate, encoding, 1)
            assert data == want_bytes, (call_id, path)
