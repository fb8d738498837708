"""replay → NATS JetStream → rtp2ws consume, end to end, with a real nats-server on
loopback (tests/natsserver.py): the WAVs come out byte-identical to --out-dir's, a
broker killed mid-call loses nothing and stores nothing twice, and the workers of one
group share the streams."""

import asyncio
import re
import subprocess
import sys
import time
from collections import Counter

import pytest

import callgen
from callgen import Call, Party, frames_of, rtp_packets, tone
from natsserver import NatsServer, nats_server  # noqa: F401 - the fixture
from paths import DATA

PY = sys.executable
A = Party("10.0.0.1", 5060, 4000, "1000")
B = Party("10.0.0.2", 5060, 5000, "2000")


def rtp2ws(*args, timeout=120):
    return subprocess.run([PY, "-m", "rtp2ws.cli", *map(str, args)], capture_output=True, text=True, timeout=timeout)


def consume(url, out, *args, timeout=60):
    r = rtp2ws("consume", "--nats-url", url, "--out-dir", out, "--exit-idle", "2", *args, timeout=timeout)
    assert r.returncode == 0, r.stderr
    return r


def wavs(d):
    return {p.relative_to(d): p.read_bytes() for p in sorted(d.rglob("*.wav"))}


def make_capture(path, calls=1, seconds=2.0, t0=100.0):
    frames = []
    for i in range(calls):
        a = Party(f"10.0.{i}.1", 5060, 4000 + 2 * i, "1000")
        b = Party(f"10.0.{i}.2", 5060, 5000 + 2 * i, "2000")
        c = Call(f"nats-{i}.call@test", a, b)
        n = int(seconds * 8000)
        start = t0 + 0.05 * i
        frames.append(c.setup(start))
        frames.append(rtp_packets(a, b, start + 0.1, tone(440 + 10 * i, n), ssrc=1 + 2 * i))
        frames.append(rtp_packets(b, a, start + 0.103, tone(1000, n, amp=6000), ssrc=2 + 2 * i))
        frames.append(c.bye(start + 0.2 + seconds))
    return callgen.write(path, frames_of(*frames))


def stored(url, stream="RTP2WS"):
    """Every message the JetStream stream holds: (subject, headers, data)."""
    import nats
    from nats.js import api

    async def main():
        nc = await nats.connect(url)
        js = nc.jetstream()
        info = await js.stream_info(stream)
        sub = await js.pull_subscribe(">", stream=stream, config=api.ConsumerConfig(ack_policy=api.AckPolicy.NONE))
        out = []
        while len(out) < info.state.messages:
            out += [(m.subject, m.headers or {}, m.data) for m in await sub.fetch(1000, timeout=5)]
        await nc.close()
        return out

    return asyncio.run(main())


@pytest.mark.parametrize("mix", ["per-leg", "stereo"])
def test_replay_to_jetstream_then_consume_is_byte_identical_to_out_dir(tmp_path, nats_server, mix):
    demo = DATA / "demo_speech.pcap"
    ref = tmp_path / "ref"
    r = rtp2ws("replay", demo, "--nats-url", nats_server.url, "--out-dir", ref, "--mix", mix,
               "--sip-header", "User-Agent")
    assert r.returncode == 0, r.stderr
    want_streams = 1 if mix == "stereo" else 2
    assert f"published {want_streams} streams to NATS" in r.stdout and "0 ms dropped, 0 ms undelivered" in r.stdout
    got = tmp_path / "got"
    consume(nats_server.url, got)
    want = {k: v for k, v in wavs(ref / "calls").items() if (k.name == "stereo.wav") == (mix == "stereo")}
    assert wavs(got) == want and len(want) == want_streams
    msgs = stored(nats_server.url)
    records = [(s, h) for s, h, _ in msgs if s == "rtp2ws.calls"]
    import json
    kinds = Counter(json.loads(d)["type"] for s, _, d in msgs if s == "rtp2ws.calls")
    assert kinds["start"] == want_streams and kinds["end"] == want_streams
    starts = [json.loads(d) for s, _, d in msgs if s == "rtp2ws.calls" and json.loads(d)["type"] == "start"]
    assert all(m["sip_headers"] == {"User-Agent": "SIPp uac_play.xml"} and m["version"] == 1 for m in starts)
    audio = [(s, h) for s, h, _ in msgs if s.startswith("rtp2ws.audio.")]
    # the Call-ID 1-14710@127.0.0.1 as one subject token: its dots escaped
    assert {s.split(".")[2] for s, _ in audio} == {"1-14710@127%2E0%2E0%2E1"}
    assert all(h["Rtp2ws-Format"] == ("L16/16000/2" if mix == "stereo" else "L16/16000/1") for s, h in audio
               if "Rtp2ws-End" not in h)
    assert all(h["Rtp2ws-Subject"].startswith("rtp2ws.audio.") for _, h in records)


def test_broker_killed_mid_call_loses_nothing_and_stores_nothing_twice(tmp_path):
    pytest.importorskip("nats")
    import shutil
    if shutil.which("nats-server") is None:
        pytest.skip("nats-server is not installed (install.sh installs it)")
    cap = make_capture(tmp_path / "c.pcap", calls=2, seconds=6.0)
    ref = tmp_path / "ref"
    assert rtp2ws("replay", cap, "--out-dir", ref).returncode == 0
    server = NatsServer(tmp_path / "nats").start()
    try:
        proc = subprocess.Popen([PY, "-m", "rtp2ws.cli", "replay", str(cap), "--nats-url", server.url,
                                 "--speed", "realtime"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(2.5)
        server.kill()                    # the broker dies mid-call ...
        time.sleep(2.0)
        server.start()                   # ... and comes back on the same port and store
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "published 4 streams to NATS" in out and "0 ms dropped, 0 ms undelivered" in out, out
        assert " 0 reconnects" not in out, out
        got = tmp_path / "got"
        consume(server.url, got)
        assert wavs(got) == wavs(ref / "calls") and len(wavs(got)) == 4
        ids = Counter(h["Nats-Msg-Id"] for _, h, _ in stored(server.url))
        assert ids and max(ids.values()) == 1, [k for k, v in ids.items() if v > 1]
    finally:
        server.stop()


def test_a_broker_slower_than_the_ack_timeout_gets_the_resend_and_drops_it_as_duplicates(tmp_path, nats_server):
    """The server stops answering (SIGSTOP) for longer than --nats-ack-timeout: what was
    published meanwhile is published again with the same ids, and JetStream stores each
    message once (without Nats-Msg-Id it would store the resend too)."""
    import signal
    cap = make_capture(tmp_path / "c.pcap", calls=1, seconds=4.0)
    ref = tmp_path / "ref"
    assert rtp2ws("replay", cap, "--out-dir", ref).returncode == 0
    proc = subprocess.Popen([PY, "-m", "rtp2ws.cli", "replay", str(cap), "--nats-url", nats_server.url,
                             "--speed", "realtime", "--nats-ack-timeout", "0.5"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    nats_server.proc.send_signal(signal.SIGSTOP)
    time.sleep(2.0)
    nats_server.proc.send_signal(signal.SIGCONT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    m = re.search(r"(\d+) published again, (\d+) duplicates dropped by JetStream\), 0 reconnects, 0 ms dropped, "
                  r"0 ms undelivered", out)
    assert m and int(m.group(1)) > 0 and int(m.group(2)) > 0, out
    got = tmp_path / "got"
    consume(nats_server.url, got)
    assert wavs(got) == wavs(ref / "calls") and len(wavs(got)) == 2
    msgs = stored(nats_server.url)
    keys = Counter((s, h["Rtp2ws-Stream"], h.get("Rtp2ws-Offset") or d) for s, h, d in msgs)
    assert max(keys.values()) == 1


def test_two_consumers_of_one_group_share_the_streams(tmp_path, nats_server):
    cap = make_capture(tmp_path / "c.pcap", calls=8, seconds=1.0)
    ref = tmp_path / "ref"
    assert rtp2ws("replay", cap, "--out-dir", ref).returncode == 0
    # the stream made (a capture with no call), then both workers waiting on it before any
    # call is published: a worker started a second later than the other would find every
    # stream done (each takes milliseconds), which is sharing too, but shows nothing
    r = rtp2ws("replay", callgen.write(tmp_path / "empty.pcap", []), "--nats-url", nats_server.url)
    assert r.returncode == 0, r.stderr
    outs = [tmp_path / "w1", tmp_path / "w2"]
    procs = [subprocess.Popen([PY, "-m", "rtp2ws.cli", "consume", "--nats-url", nats_server.url, "--out-dir", str(o),
                               "--group", "asr", "--max-streams", "1", "--exit-idle", "3"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for o in outs]
    for p in procs:
        assert p.stdout is not None
        assert p.stdout.readline().startswith("rtp2ws consume: group asr"), p.communicate(timeout=10)
    r = rtp2ws("replay", cap, "--nats-url", nats_server.url)
    assert r.returncode == 0, r.stderr
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    w1, w2 = wavs(outs[0]), wavs(outs[1])
    assert w1 and w2, (len(w1), len(w2))              # both took some
    assert not w1.keys() & w2.keys()                  # none written twice
    assert {**w1, **w2} == wavs(ref / "calls")        # none lost, each byte-identical
    assert len(w1) + len(w2) == 16


def test_an_unreachable_server_is_a_clear_error_without_the_password(tmp_path):
    from natsserver import free_port
    r = rtp2ws("replay", DATA / "demo_speech.pcap", "--nats-url", f"nats://rtp2ws:s3cret@127.0.0.1:{free_port()}")
    assert r.returncode == 2 and "cannot connect to NATS at nats://<redacted>@127.0.0.1:" in r.stderr, r.stderr
    assert "s3cret" not in r.stderr + r.stdout


def test_replay_with_workers_prints_one_nats_summary_summed_over_them(tmp_path, nats_server):
    """``replay --workers 2 --nats-url``: each worker publishes its share of the calls,
    and the supervisor's summary line says what all of them published, once; its
    counts are what JetStream stored (two records and one message of audio or more per
    stream, plus each stream's end marker)."""
    import json
    cap = make_capture(tmp_path / "c.pcap", calls=6, seconds=1.0)
    ref = tmp_path / "ref"
    r = rtp2ws("replay", cap, "--nats-url", nats_server.url, "--out-dir", ref, "--workers", "2")
    assert r.returncode == 0, r.stderr
    assert "published" not in r.stderr, r.stderr           # no worker's own line
    lines = [line for line in r.stdout.splitlines() if "to NATS" in line]
    assert len(lines) == 1, r.stdout
    m = re.search(r"published (\d+) streams to NATS \((\d+) messages acknowledged, 0 published again, "
                  r"0 duplicates dropped by JetStream\), 0 reconnects, 0 ms dropped, 0 ms undelivered", lines[0])
    assert m, lines[0]
    calls = json.loads((ref / "calls.json").read_text())
    per_worker = calls["summary"]["workers"]["calls"]
    assert len(per_worker) == 2 and all(per_worker) and sum(per_worker) == 6, per_worker
    msgs = stored(nats_server.url)
    streams = {h["Rtp2ws-Stream"] for _, h, _ in msgs}
    assert int(m.group(1)) == len(streams) == 12
    assert int(m.group(2)) == len(msgs)
    got = tmp_path / "got"
    consume(nats_server.url, got)
    assert wavs(got) == wavs(ref / "calls") and len(wavs(got)) == 12


def test_a_consumer_killed_mid_stream_leaves_it_to_another_of_its_group(tmp_path, nats_server):
    """Worker A of group G takes the streams of a call published at realtime, has begun
    their files, and is killed (SIGKILL) before their ends: JetStream hands their
    unacknowledged starts to worker B of G after --ack-wait, and B writes them again from
    the start, at the same offsets, into the same directory: each WAV complete and
    byte-identical to --out-dir's."""
    cap = make_capture(tmp_path / "c.pcap", calls=1, seconds=2.0)
    ref = tmp_path / "ref"
    assert rtp2ws("replay", cap, "--out-dir", ref).returncode == 0
    r = rtp2ws("replay", callgen.write(tmp_path / "empty.pcap", []), "--nats-url", nats_server.url)
    assert r.returncode == 0, r.stderr               # the stream made, for A to wait on
    out = tmp_path / "out"
    group = ("consume", "--nats-url", nats_server.url, "--out-dir", str(out), "--group", "G", "--ack-wait", "1")
    a = subprocess.Popen([PY, "-m", "rtp2ws.cli", *group], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pub = None
    try:
        assert a.stdout is not None
        assert a.stdout.readline().startswith("rtp2ws consume: group G"), a.communicate(timeout=10)
        pub = subprocess.Popen([PY, "-m", "rtp2ws.cli", "replay", str(cap), "--nats-url", nats_server.url,
                                "--speed", "realtime"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10
        while len(list(out.rglob("*.wav"))) < 2 or min(p.stat().st_size for p in out.rglob("*.wav")) <= 44:
            assert time.monotonic() < deadline and pub.poll() is None, "A wrote no audio while the call lasted"
            time.sleep(0.05)
        a.kill()                                     # mid-call: both streams begun, neither ended
        a.wait(10)
        partial = {k: len(v) for k, v in wavs(out).items()}
        assert pub.poll() is None and all(n < len(wavs(ref / "calls")[k]) for k, n in partial.items()), partial
        b = rtp2ws(*group, "--exit-idle", "2", timeout=60)
        assert b.returncode == 0, b.stderr
        assert re.search(r"consumed 2 streams \(2 ended, 0 timed out, 2 read again\)", b.stdout), b.stdout
        out_pub, err_pub = pub.communicate(timeout=30)
        assert pub.returncode == 0, err_pub
    finally:
        for p in (a, pub):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(10)
    assert wavs(out) == wavs(ref / "calls") and len(wavs(out)) == 2
