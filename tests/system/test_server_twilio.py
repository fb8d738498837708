"""``--ws-format twilio`` against a server written from Twilio's description of
Media Streams (https://www.twilio.com/docs/voice/media-streams/websocket-messages),
on loopback, fed by real replays of generated calls.

The server knows nothing of rtp2ws.  What it checks is what Twilio says a
receiver gets, on one connection per call:

* JSON text frames only, each with an ``event``;
* ``connected`` first: ``protocol`` "Call", ``version`` "1.0.0";
* ``start`` next, ``sequenceNumber`` "1", with ``start``: ``streamSid`` (MZ + 32
  hex), ``accountSid`` (AC + 32 hex), ``callSid`` (CA + 32 hex), ``tracks``,
  ``customParameters``, ``mediaFormat`` (audio/x-mulaw, 8000, 1 channel); and
  ``streamSid`` at the top level too;
* ``media``: ``sequenceNumber``, ``media`` (``track``, ``chunk``, ``timestamp``,
  ``payload``: base64 of µ-law at 8 kHz) and ``streamSid``, the numbers as strings;
* ``dtmf``: ``streamSid``, ``sequenceNumber``, ``dtmf`` (``track``, ``digit``);
* ``stop`` last: ``sequenceNumber``, ``streamSid``, ``stop`` (``accountSid``, ``callSid``);
* ``sequenceNumber`` counting every message after ``connected`` by one.

The audio is checked against the WAVs ``--out-dir`` writes in the same run: a
leg's WAV is 16 kHz, and its even samples are the 8 kHz samples G.711 decoded
to; the server decodes µ-law by G.711's formula, written here.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pytest

from rtp2ws.sinks.wav import read_wav

import callgen
from callgen import Call, Party, frames_of, rtp_packets

PY = sys.executable
CUSTOMER = ("X-Customer-Id", "cust-42")
DTMF_AT = 8000               # caller samples (8 kHz) before the key press
CALLEE_LATE = 0.5033         # the callee's first packet, after the caller's (s)
GAP_AT, GAP = 12000, 3200    # the caller sends nothing for 400 ms (silence suppression) at 1.5 s
SID = {"streamSid": r"^MZ[0-9a-f]{32}$", "callSid": r"^CA[0-9a-f]{32}$", "accountSid": r"^AC[0-9a-f]{32}$"}


def ulaw_decode(data: bytes) -> np.ndarray:
    """G.711 µ-law to linear (16-bit scale): sign, 3-bit exponent, 4-bit mantissa, inverted."""
    u = ~np.frombuffer(data, dtype=np.uint8).astype(np.int32) & 0xFF
    exponent = (u >> 4) & 7
    magnitude = ((((u & 0x0F) << 3) + 0x84) << exponent) - 0x84
    return np.where(u & 0x80, -magnitude, magnitude).astype(np.int16)


@dataclass
class Conn:
    """One connection as the server saw it."""
    msgs: list = field(default_factory=list)       # parsed text messages, in order
    binary: int = 0                                # binary messages (Twilio sends none)
    close_code: int | None = None
    dropped: bool = False

    @property
    def stream_sid(self):
        return self.msgs[1]["start"]["streamSid"] if len(self.msgs) > 1 and "start" in self.msgs[1] else None

    def media(self, track: str) -> list[dict]:
        return [m["media"] for m in self.msgs if m["event"] == "media" and m["media"]["track"] == track]


class TwilioServer:
    """A ``websockets`` server reading each connection as a Twilio receiver does.
    ``drop_after``: each stream's first connection is dropped (TCP aborted, no close
    frame) after that many media messages; then for ``outage_s`` every opening
    handshake is answered 503."""

    def __init__(self, drop_after=None, outage_s=0.0):
        from websockets.asyncio.server import serve

        self.conns: list[Conn] = []
        self.drop_after = drop_after
        self.outage_s = outage_s
        self.refuse_until = 0.0
        self.refused = 0
        self._dropped: set = set()
        ready = threading.Event()

        async def main():
            self._loop = asyncio.get_running_loop()
            self._stop = self._loop.create_future()
            async with serve(self._handler, "127.0.0.1", 0, process_request=self._process_request) as srv:
                self.url = f"ws://127.0.0.1:{srv.sockets[0].getsockname()[1]}/media"
                ready.set()
                await self._stop

        self._thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
        self._thread.start()
        assert ready.wait(10)

    def _process_request(self, connection, request):
        import http

        if time.monotonic() < self.refuse_until:
            self.refused += 1
            return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "restarting\n")
        return None

    async def _handler(self, ws):
        from websockets.exceptions import ConnectionClosed

        conn = Conn()
        self.conns.append(conn)
        media = 0
        try:
            async for msg in ws:
                if not isinstance(msg, str):
                    conn.binary += 1
                    continue
                conn.msgs.append(json.loads(msg))
                if conn.msgs[-1].get("event") != "media":
                    continue
                media += 1
                sid = conn.stream_sid
                if self.drop_after is not None and sid not in self._dropped and media >= self.drop_after:
                    self._dropped.add(sid)
                    conn.dropped = True
                    # what websockets read already (it answered the pings among it) was received:
                    # nothing more is read from the socket, what websockets holds is taken, then
                    # the connection is dropped with what is still unread
                    ws.transport.pause_reading()
                    ws.transport.resume_reading = lambda: None     # (websockets' flow control would)
                    while True:
                        try:
                            msg = await asyncio.wait_for(ws.recv(), 0.05)
                        except TimeoutError:
                            break
                        conn.msgs.append(json.loads(msg))
                    self.refuse_until = time.monotonic() + self.outage_s
                    ws.transport.abort()
                    return
        except ConnectionClosed:
            pass
        finally:
            conn.close_code = ws.close_code

    def streams(self) -> dict[str, list[Conn]]:
        out: dict[str, list[Conn]] = {}
        for c in self.conns:
            out.setdefault(c.stream_sid, []).append(c)
        return out

    def close(self):
        self._loop.call_soon_threadsafe(self._stop.set_result, None)
        self._thread.join(10)


@pytest.fixture
def server():
    made = []

    def make(**kw):
        s = TwilioServer(**kw)
        made.append(s)
        return s
    yield make
    for s in made:
        s.close()


def check_connection(conn: Conn, *, last: bool) -> dict:
    """Everything Twilio's description says of one connection's messages; returns its
    start message's ``start``."""
    assert conn.binary == 0
    msgs = conn.msgs
    assert msgs[0] == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    start = msgs[1]
    assert start["event"] == "start" and set(start) == {"event", "sequenceNumber", "start", "streamSid"}
    s = start["start"]
    assert set(s) == {"streamSid", "accountSid", "callSid", "tracks", "customParameters", "mediaFormat"}
    for k, pattern in SID.items():
        assert re.match(pattern, s[k]), (k, s[k])
    assert start["streamSid"] == s["streamSid"]
    assert s["tracks"] == ["inbound", "outbound"]
    assert s["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    assert isinstance(s["customParameters"], dict)
    # every message after connected: sequenceNumber "1", "2", ... with no gap
    assert [m["sequenceNumber"] for m in msgs[1:]] == [str(i) for i in range(1, len(msgs))]
    for m in msgs[2:]:
        assert m["streamSid"] == s["streamSid"]
        if m["event"] == "media":
            assert set(m) == {"event", "sequenceNumber", "media", "streamSid"}
            md = m["media"]
            assert set(md) == {"track", "chunk", "timestamp", "payload"}
            assert md["track"] in s["tracks"]
            assert all(isinstance(md[k], str) for k in md)
            assert md["chunk"].isdigit() and md["timestamp"].isdigit()
            assert len(base64.b64decode(md["payload"], validate=True)) == 160     # 20 ms at 8 kHz
        elif m["event"] == "dtmf":
            assert set(m) == {"event", "streamSid", "sequenceNumber", "dtmf"}
            assert set(m["dtmf"]) == {"track", "digit"} and m["dtmf"]["track"] in ("inbound_track", "outbound_track")
        else:
            assert m["event"] == "stop" and m is msgs[-1], m
    if last:
        stop = msgs[-1]
        assert set(stop) == {"event", "sequenceNumber", "streamSid", "stop"} and stop["event"] == "stop"
        assert stop["stop"] == {"accountSid": s["accountSid"], "callSid": s["callSid"]}
        assert conn.close_code == 1000
    else:
        assert msgs[-1]["event"] != "stop"
    return s


def noise(n: int, seed: int) -> np.ndarray:
    return np.clip(np.random.default_rng(seed).normal(0, 3000, n), -32000, 32000).astype(np.int16)


def make_call(call_id: str, n: int, t0: float, seed: int, *, a_ip="10.0.0.1", b_ip="10.0.0.2",
              callee_law: str = "alaw") -> list:
    """A call: the caller (µ-law) presses 5 after a second and is silent (no RTP) for
    400 ms at 1.5 s; the callee (A-law) starts CALLEE_LATE after the caller; the
    caller puts the call on hold (a re-INVITE) half-way; the INVITE has X-Customer-Id."""
    a, b = Party(a_ip, 5060, 4000, "1000"), Party(b_ip, 5060, 5000, "2000")
    c = Call(call_id, a, b, invite_headers=[CUSTOMER])
    setup = c.setup(t0, pts=(0, 8, 101))
    pa, pb = noise(n, seed), noise(n, seed + 100)
    t = t0 + 0.1
    s1 = rtp_packets(a, b, t, pa[:DTMF_AT], ssrc=7, seq0=10, ts0=0, pt=0, law="ulaw")
    d = callgen.dtmf_packets(a, b, t + DTMF_AT / 8000, 5, ssrc=7, seq0=60, ts=DTMF_AT)
    s2 = rtp_packets(a, b, t + DTMF_AT / 8000 + 0.2, pa[DTMF_AT + 1600:GAP_AT], ssrc=7, seq0=68,
                     ts0=DTMF_AT + 1600, pt=0, law="ulaw")
    s3 = rtp_packets(a, b, t + (GAP_AT + GAP) / 8000, pa[GAP_AT + GAP:], ssrc=7, seq0=68 + len(s2),
                     ts0=GAP_AT + GAP, pt=0, law="ulaw")
    sb = rtp_packets(b, a, t + CALLEE_LATE, pb[:n - int(CALLEE_LATE * 8000)], ssrc=2,
                     pt=8 if callee_law == "alaw" else 0, law=callee_law)
    c.cseq = 2
    hold = c.request(t + n / 16000, "INVITE", body=callgen.sdp(a.ip, a.rtp_port, direction="sendonly"))
    return frames_of(setup, s1, d, s2, s3, sb, hold, c.bye(t + n / 8000 + 0.4))


def replay(*args, timeout=120):
    return subprocess.run([PY, "-m", "rtp2ws.cli", "replay", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def reference(out, rate: int = 16000) -> dict[str, dict]:
    """Per call: each leg's 8 kHz samples (every rate/8000-th sample of its WAV: the
    G.711 samples themselves) and start time."""
    manifest = json.loads((out / "calls.json").read_text())
    calls = {}
    for call in manifest["calls"]:
        legs = {}
        for leg in call["legs"]:
            samples, wav_rate, _ = read_wav(str(out / leg["wav"]))
            assert wav_rate == rate
            legs[leg["tag"]] = {"pcm": samples[::rate // 8000], "start": datetime.fromisoformat(leg["start"]).timestamp()}
        calls[call["call_id"]] = {"legs": legs, "summary": manifest["summary"], "call": call}
    return calls


def summary_counts(stdout: str) -> dict[str, int]:
    m = re.search(r"streamed (\d+) streams, (\d+) reconnects, (\d+) ms dropped, (\d+) ms undelivered", stdout)
    assert m, stdout
    return dict(zip(("streams", "reconnects", "dropped_ms", "undelivered_ms"), map(int, m.groups()), strict=True))


def track_of(conns: list[Conn], track: str) -> list[tuple[int, int, np.ndarray]]:
    """(chunk, timestamp ms, decoded samples) of a track over a stream's connections."""
    return [(int(md["chunk"]), int(md["timestamp"]), ulaw_decode(base64.b64decode(md["payload"])))
            for c in conns for md in c.media(track)]


def check_track(chunks, ref: np.ndarray, *, law: str, begin_ms: float) -> int:
    """A track with no gap: chunks 1, 2, 3 ... every 20 ms from ``begin_ms`` on; together
    the leg's audio from its first sample (µ-law exact for a µ-law leg, within µ-law's
    step for an A-law one), then silence to the end of the stream (the other leg's end
    at most a chunk later here), the last chunk completed with it.  Returns its samples."""
    assert [c for c, _, _ in chunks] == list(range(1, len(chunks) + 1))
    first = chunks[0][1]
    assert abs(first - begin_ms) <= 1.0, (first, begin_ms)
    assert [t for _, t, _ in chunks] == [first + 20 * i for i in range(len(chunks))]
    audio = np.concatenate([s for _, _, s in chunks])
    assert len(ref) <= len(audio) <= -(-len(ref) // 160) * 160 + 160
    got, tail = audio[:len(ref)], audio[len(ref):]
    assert not tail.any()
    if law == "ulaw":
        assert np.array_equal(got, ref)
    else:     # transcoded: µ-law's quantisation step is at most 1/16 of the value (and 4 near zero)
        err = np.abs(got.astype(np.int32) - ref)
        assert (err <= np.maximum(4, np.abs(ref.astype(np.int32)) // 16 + 8)).all()
        assert np.corrcoef(got, ref)[0, 1] > 0.999
    return len(ref)


# --------------------------------------------------------------------------- one call


@pytest.mark.parametrize("rate", [16000, 8000, 48000])
def test_twilio_gets_what_twilio_sends(tmp_path, server, rate):
    """Whatever --rate the run has (its WAVs'), Twilio gets µ-law at 8 kHz: the G.711 samples."""
    cap = callgen.write(tmp_path / "c.pcap", make_call("tw@test", 3 * 8000, 100, 1))
    srv = server()
    out = tmp_path / "out"
    r = replay(cap, "--ws-url", srv.url, "--ws-format", "twilio", "--out-dir", out, "--speed", "4",
               "--sip-header", CUSTOMER[0], "--sip-header", "X-Missing", "--rate", rate)
    assert r.returncode == 0, r.stderr
    ref = reference(out, rate)["tw@test"]
    # one connection for the call, both legs in it
    (conn,) = srv.conns
    s = check_connection(conn, last=True)
    assert s["callSid"] == "CA" + hashlib.sha256(b"tw@test").hexdigest()[:32]
    assert s["accountSid"] == "AC" + "0" * 32
    assert s["customParameters"] == {CUSTOMER[0]: CUSTOMER[1]}       # the header the INVITE had, not the other
    # caller inbound (µ-law: the same bytes back), callee outbound (A-law, transcoded), each from its own
    # first sample at its own time on the stream; the caller's silence is in the timeline
    legs = ref["legs"]
    t0 = legs["caller"]["start"]
    inbound, outbound = track_of([conn], "inbound"), track_of([conn], "outbound")
    check_track(inbound, legs["caller"]["pcm"], law="ulaw", begin_ms=0)
    assert not legs["caller"]["pcm"][GAP_AT + 80:GAP_AT + GAP - 80].any()       # the gap: silence, in place
    check_track(outbound, legs["callee"]["pcm"], law="alaw", begin_ms=(legs["callee"]["start"] - t0) * 1000)
    assert abs(outbound[0][1] - CALLEE_LATE * 1000) <= 2
    # the media in time order: inbound and outbound chunks interleaved by timestamp
    stamps = [int(m["media"]["timestamp"]) for m in conn.msgs if m["event"] == "media"]
    assert all(b >= a - 20 for a, b in zip(stamps, stamps[1:]))
    # the caller's key press, where it happened (1 s: timestamp 1000 .. 1120), and nothing for the hold
    dtmf = [(i, m) for i, m in enumerate(conn.msgs) if m["event"] == "dtmf"]
    assert [m["dtmf"] for _, m in dtmf] == [{"track": "inbound_track", "digit": "5"}]
    before = [int(m["media"]["timestamp"]) for m in conn.msgs[:dtmf[0][0]] if m["event"] == "media"
              and m["media"]["track"] == "inbound"]
    assert 1000 - 300 <= before[-1] <= 1120 + 100
    assert {m["event"] for m in conn.msgs} == {"connected", "start", "media", "dtmf", "stop"}
    # the events are recorded where they are with any format
    call = ref["call"]
    assert [h["by"] for h in call["holds"]] == ["caller"]
    assert ref["summary"]["streams"]["streams"] == 1 and ref["summary"]["streams"]["dropped_ms"] == 0
    assert "streamed 1 streams, 0 reconnects, 0 ms dropped, 0 ms undelivered" in r.stdout


def test_twilio_refuses_what_contradicts_its_protocol(tmp_path, server):
    cap = callgen.write(tmp_path / "c.pcap", make_call("tw@test", 4000, 100, 1))
    srv = server()
    for extra, said in [(["--frame-ms", "40"], "--ws-format twilio sends 20 ms frames, as its protocol fixes; "
                                               "--frame-ms 40 contradicts it"),
                        (["--header", "Sec-WebSocket-Protocol: x"],
                         "--header Sec-WebSocket-Protocol: the WebSocket subprotocol comes from --ws-format"),
                        (["--twilio-account-sid", "AC123"],
                         "argument --twilio-account-sid: a Twilio Account SID is AC and 32 hex digits")]:
        r = replay(cap, "--ws-url", srv.url, "--ws-format", "twilio", *extra)
        assert r.returncode == 2 and re.search(rf"rtp2ws( replay)?: error: {re.escape(said)}", r.stderr), \
            (extra, r.stderr)
    assert srv.conns == []


# --------------------------------------------------------------------------- concurrent calls

def test_concurrent_calls_each_have_their_own_connection(tmp_path, server):
    ids = [f"c{i}@test" for i in range(3)]
    frames = []
    for i, cid in enumerate(ids):
        frames += make_call(cid, 2 * 8000, 100 + 0.05 * i, 10 * i + 1, a_ip=f"10.0.{i}.1", b_ip=f"10.0.{i}.2")
    cap = callgen.write(tmp_path / "c.pcap", sorted(frames, key=lambda f: f[0]))
    srv = server()
    out = tmp_path / "out"
    account = "AC" + "ab" * 16
    r = replay(cap, "--ws-url", srv.url, "--ws-format", "twilio", "--out-dir", out,
               "--twilio-account-sid", account)
    assert r.returncode == 0, r.stderr
    ref = reference(out)
    assert len(srv.conns) == 3
    by_call = {}
    for conn in srv.conns:
        s = check_connection(conn, last=True)
        assert s["accountSid"] == account
        by_call[s["callSid"]] = (conn, s)
    assert len({s["streamSid"] for _, s in by_call.values()}) == 3
    for cid in ids:
        conn, _ = by_call["CA" + hashlib.sha256(cid.encode()).hexdigest()[:32]]
        legs = ref[cid]["legs"]
        check_track(track_of([conn], "inbound"), legs["caller"]["pcm"], law="ulaw", begin_ms=0)
        check_track(track_of([conn], "outbound"), legs["callee"]["pcm"], law="alaw",
                    begin_ms=(legs["callee"]["start"] - legs["caller"]["start"]) * 1000)


# --------------------------------------------------------------------------- reconnects

@pytest.mark.parametrize("outage_s, max_buffer_ms", [(0.0, 10000), (1.5, 400)])
def test_a_dropped_connection_starts_again_and_goes_on_where_it_was(tmp_path, server, outage_s, max_buffer_ms):
    """The server drops the first connection after 75 media messages (and then, in an
    outage, answers 503 for 1.5 s while --max-buffer-ms is 400): the next connection
    gets connected and start again (the same streamSid and callSid, sequenceNumber from
    "1"), then the media go on: chunk numbers on by one, nothing sent twice, every
    chunk the leg's audio at its timestamp; what the server lacks was counted as
    dropped or undelivered, and never announced."""
    cap = callgen.write(tmp_path / "c.pcap", make_call("re@test", 6 * 8000, 100, 3, callee_law="ulaw"))
    srv = server(drop_after=75, outage_s=outage_s)
    out = tmp_path / "out"
    r = replay(cap, "--ws-url", srv.url, "--ws-format", "twilio", "--out-dir", out, "--speed", "4",
               "--max-buffer-ms", max_buffer_ms, "--log-level", "info")
    counts = summary_counts(r.stdout)
    assert r.returncode == (1 if counts["undelivered_ms"] else 0), r.stderr
    ref = reference(out)["re@test"]
    (conns,) = srv.streams().values()
    assert [c.dropped for c in conns] == [True, False] and counts["reconnects"] == 1
    assert (srv.refused > 0) == (outage_s > 0)
    first, second = check_connection(conns[0], last=False), check_connection(conns[1], last=True)
    assert first == second                                          # the same ids, the same start
    legs = ref["legs"]
    missing = []
    for track, tag in (("inbound", "caller"), ("outbound", "callee")):
        per_conn = [track_of([c], track) for c in conns]
        for chunks in per_conn:          # within a connection, chunk numbers on by one
            assert [c for c, _, _ in chunks] == list(range(chunks[0][0], chunks[0][0] + len(chunks)))
        chunks = per_conn[0] + per_conn[1]
        pcm = legs[tag]["pcm"]
        begin = round((legs[tag]["start"] - legs["caller"]["start"]) * 8000)
        # where each chunk sits in the leg: at its timestamp, to the sample (the millisecond it
        # starts in, and the leg's start to the ms in calls.json: within 16 samples), found by
        # its audio; the leg's own audio there, or, cut short by a gap or the end, the leg's
        # audio up to a point and silence after it
        place = []
        last = 0
        for _, ts, got in chunks:
            for d in (last, *range(-16, 17)):     # (silence matches anywhere: the last place first)
                at = ts * 8 + d - begin
                want = pcm[at:at + 160]
                k = min(len(want), 160)
                while k and not np.array_equal(got[:k], want[:k]):
                    k -= 1
                if (k >= 16 or at >= len(pcm)) and not got[k:].any():     # (silence past the leg's end)
                    place.append((at, k))
                    last = d
                    break
            else:
                raise AssertionError(f"{track} chunk at {ts} ms is not the leg's audio there")
        lacking = place[0][0] if tag == "caller" else 0     # audio dropped before the first chunk
        for (c0, t0, _), (c1, t1, _), (a0, k0), (a1, _) in zip(chunks, chunks[1:], place, place[1:]):
            assert a1 >= a0 + 160 and t1 >= t0 + 20                          # nothing twice
            if k0 < 160:
                assert a1 > a0 + k0                                           # silence only where audio lacks
            if c1 != c0 + 1:      # chunks lost with the connection: the timestamps jump as much
                assert a1 - a0 == 160 * (c1 - c0)
            lacking += a1 - a0 - 160
        missing.append(lacking)
    # what the server lacks (8 kHz samples a track) was dropped (the outage) or sent and never acknowledged
    # (the inbound track begins with the stream, the outbound one 503 ms later: what was dropped
    # before it is not its loss; dropped_ms is rounded down)
    dropped, undelivered = counts["dropped_ms"] * 8, counts["undelivered_ms"] * 8
    inbound, outbound = missing
    assert dropped <= inbound <= dropped + 8 + undelivered, (missing, counts)
    assert dropped - CALLEE_LATE * 8000 <= outbound <= dropped + 8 + undelivered, (missing, counts)
    assert (counts["dropped_ms"] > 0) == (outage_s > 0)
    assert ref["summary"]["streams"]["dropped_ms"] == counts["dropped_ms"]
    assert r.stderr.count("reconnected, the first message again and then the audio still queued") == 1
