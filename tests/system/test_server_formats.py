"""``--ws-format vonage``, ``audiofork`` and ``jambonz`` against servers written from
those protocols' published descriptions (docs/protocol.md names them), on loopback,
fed by a real replay of a generated call: every field of the first message, every
later message, the audio bytes (against the WAVs ``--out-dir`` writes in the same
run), a server that drops the connection mid-call (and one that then refuses for a
while), and a server that requires a subprotocol the default format does not offer.

The servers know nothing of rtp2ws's protocol.  What they check is what the vendors
say a receiver gets:

* Vonage (https://developer.vonage.com/en/voice/voice-api/concepts/websockets): a
  text ``websocket:connected`` first, with ``content-type`` and the endpoint's
  ``headers`` at the top level; binary messages of 20 ms of L16 (640 bytes at
  16 kHz); JSON text messages with an ``event`` field (``websocket:dtmf``: one
  digit, ``duration`` in ms) between them.
* mod_audio_fork (drachtio-freeswitch-modules, modules/mod_audio_fork/README.md) and
  jambonz ``listen`` (https://docs.jambonz.org/verbs/verbs/listen): the connection
  asks for subprotocol ``audio.drachtio.org`` / ``audio.jambonz.org``; one JSON text
  frame of metadata (jambonz: the call's attributes, ``sampleRate``, ``mixType``),
  then binary L16 only.
"""

from __future__ import annotations

import asyncio
import http
import json
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import pytest

from rtp2ws.sinks.wav import read_wav

import callgen
from callgen import Call, Party, frames_of, rtp_packets

PY = sys.executable
A = Party("10.0.0.1", 5060, 4000, "1000")
B = Party("10.0.0.2", 5060, 5000, "2000")
CALL_ID = "fmt@test"
CUSTOMER = ("X-Customer-Id", "cust-42")
DTMF_AT = 8000               # caller samples (8 kHz) before the key press


@dataclass
class Conn:
    """One connection as the server saw it."""
    subprotocol: str | None
    first: dict | None = None                          # the first message, parsed
    texts: list = field(default_factory=list)          # later text messages (raw)
    frames: list = field(default_factory=list)         # binary messages, in order
    texts_at: list = field(default_factory=list)       # binary messages received before each later text
    errors: list = field(default_factory=list)         # what broke the protocol
    close_code: int | None = None
    dropped: bool = False                              # the server dropped it

    @property
    def audio(self) -> bytes:
        return b"".join(self.frames)


class Server:
    """A ``websockets`` server in a thread of its own, reading a connection as the
    protocol's receiver does (the first message text JSON, then the rest), keyed
    per stream by ``key`` (a field of the first message).  ``subprotocols``: the
    ones it requires (websockets refuses a client that offers none of them: HTTP
    400).  ``drop_after``: the first connection of each stream is dropped (its TCP
    connection aborted, no close frame) after that many binary messages; then for
    ``outage_s`` every opening handshake is answered 503."""

    def __init__(self, key: str, *, subprotocols=None, select_subprotocol=None, drop_after=None, outage_s=0.0):
        from websockets.asyncio.server import serve

        self.key = key
        self.conns: list[Conn] = []
        self.drop_after = drop_after
        self.outage_s = outage_s
        self.refuse_until = 0.0
        self.refused = 0
        self._dropped: set = set()
        self._ready = threading.Event()
        kw = {}
        if subprotocols:
            kw["subprotocols"] = subprotocols
        if select_subprotocol:
            kw["select_subprotocol"] = select_subprotocol

        async def main():
            self._loop = asyncio.get_running_loop()
            self._stop = self._loop.create_future()
            async with serve(self._handler, "127.0.0.1", 0, process_request=self._process_request, **kw) as srv:
                self.url = f"ws://127.0.0.1:{srv.sockets[0].getsockname()[1]}/"
                self._ready.set()
                await self._stop

        self._thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
        self._thread.start()
        assert self._ready.wait(10)

    def _process_request(self, connection, request):
        if time.monotonic() < self.refuse_until:
            self.refused += 1
            return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "restarting\n")
        return None

    async def _handler(self, ws):
        from websockets.exceptions import ConnectionClosed

        conn = Conn(ws.subprotocol)
        self.conns.append(conn)
        try:
            first = await ws.recv()
            if not isinstance(first, str):
                conn.errors.append("the first message is binary")
                return
            conn.first = json.loads(first)
            async for msg in ws:
                if isinstance(msg, str):
                    conn.texts.append(msg)
                    conn.texts_at.append(len(conn.frames))
                    continue
                conn.frames.append(msg)
                key = conn.first.get(self.key)
                if self.drop_after is not None and key not in self._dropped \
                        and len(conn.frames) >= self.drop_after:
                    self._dropped.add(key)
                    conn.dropped = True
                    self.refuse_until = time.monotonic() + self.outage_s
                    ws.transport.abort()
                    return
        except ConnectionClosed:
            pass
        finally:
            conn.close_code = ws.close_code

    def streams(self) -> dict[str, list[Conn]]:
        """The connections of each stream (by ``key``), in the order they came."""
        out: dict[str, list[Conn]] = {}
        for c in self.conns:
            out.setdefault(c.first[self.key] if c.first else None, []).append(c)
        return out

    def close(self):
        self._loop.call_soon_threadsafe(self._stop.set_result, None)
        self._thread.join(10)


@pytest.fixture
def servers():
    made = []

    def make(*args, **kw):
        s = Server(*args, **kw)
        made.append(s)
        return s
    yield make
    for s in made:
        s.close()


def noise(n: int, seed: int) -> np.ndarray:
    """Audio no stretch of which looks like another: where a connection's audio sits
    in the leg is found by searching for it."""
    return np.clip(np.random.default_rng(seed).normal(0, 3000, n), -32000, 32000).astype(np.int16)


def make_capture(path, seconds: float = 3.0) -> str:
    """One call: the caller presses 5 after a second, then puts the call on hold
    (a re-INVITE, sendonly); both legs talk (noise) until the BYE; the INVITE has an
    X-Customer-Id header."""
    c = Call(CALL_ID, A, B, invite_headers=[CUSTOMER])
    setup = c.setup(100)
    n = int(seconds * 8000)
    pa, pb = noise(n, 1), noise(n, 2)
    s1 = rtp_packets(A, B, 100.1, pa[:DTMF_AT], ssrc=7, seq0=10, ts0=0)
    d = callgen.dtmf_packets(A, B, 100.1 + DTMF_AT / 8000, 5, ssrc=7, seq0=60, ts=DTMF_AT)
    s2 = rtp_packets(A, B, 100.1 + DTMF_AT / 8000 + 0.2, pa[DTMF_AT:], ssrc=7, seq0=68, ts0=DTMF_AT + 1600)
    sb = rtp_packets(B, A, 100.103, pb, ssrc=2)
    c.cseq = 2
    hold = c.request(100.1 + seconds / 2 + 0.1, "INVITE", body=callgen.sdp(A.ip, A.rtp_port, direction="sendonly"))
    return callgen.write(path, frames_of(setup, s1, d, s2, sb, hold, c.bye(100.5 + seconds)))


def replay(*args, timeout=120):
    return subprocess.run([PY, "-m", "rtp2ws.cli", "replay", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def reference(out) -> tuple[dict[str, bytes], dict]:
    """The leg WAVs (and the stereo one) of the run's --out-dir, by tag, as int16 LE
    bytes; and its calls.json."""
    manifest = json.loads((out / "calls.json").read_text())
    (call,) = manifest["calls"]
    wavs = {leg["tag"]: leg["wav"] for leg in call["legs"]}
    for mix in ("stereo", "mixed"):
        if call.get(f"{mix}_wav"):
            wavs[mix] = call[f"{mix}_wav"]
    ref = {}
    for tag, rel in wavs.items():
        samples, _, _ = read_wav(str(out / rel))
        ref[tag] = samples.astype("<i2").tobytes()
    return ref, manifest


def summary_counts(stdout: str) -> dict[str, int]:
    m = re.search(r"streamed (\d+) streams, (\d+) reconnects, (\d+) ms dropped, (\d+) ms undelivered", stdout)
    assert m, stdout
    return dict(zip(("streams", "reconnects", "dropped_ms", "undelivered_ms"), map(int, m.groups()), strict=True))


# --------------------------------------------------------------------------- vonage


def test_vonage_gets_what_vonage_sends(tmp_path, servers):
    cap = make_capture(tmp_path / "c.pcap")
    srv = servers("stream_id")
    out = tmp_path / "out"
    r = replay(cap, "--ws-url", srv.url, "--ws-format", "vonage", "--out-dir", out,
               "--sip-header", CUSTOMER[0], "--sip-header", "X-Missing", "--speed", "4")
    assert r.returncode == 0, r.stderr
    ref, manifest = reference(out)
    streams = srv.streams()
    assert len(streams) == 2
    tags = set()
    for sid, (conn,) in streams.items():
        assert not conn.errors and conn.subprotocol is None
        first = conn.first
        tag = first["tag"]
        tags.add(tag)
        # event and content-type, then the endpoint's headers at the top level: the call's
        # identity and the SIP header the INVITE had (not the one it lacked)
        assert first == {"event": "websocket:connected", "content-type": "audio/l16;rate=16000",
                         "call_id": CALL_ID, "tag": tag, "stream_id": sid, "from": "sip:1000@10.0.0.1",
                         "to": "sip:2000@10.0.0.2", CUSTOMER[0]: CUSTOMER[1]}
        # every binary message 20 ms of L16 at 16 kHz; together the leg's WAV, the last
        # one completed with silence
        assert conn.frames and all(len(f) == 640 for f in conn.frames)
        want = ref[tag]
        assert len(conn.audio) == -(-len(want) // 640) * 640
        assert conn.audio[:len(want)] == want and not any(conn.audio[len(want):])
        # the caller's key press as Vonage sends DTMF, where it happened; nothing else:
        # no hold (the re-INVITE), no codec, drop or end; the stream ends with a close 1000
        texts = [json.loads(t) for t in conn.texts]
        if tag == "caller":
            assert texts == [{"event": "websocket:dtmf", "digit": "5", "duration": 120}]
            # between the frames around the key press (1 s to 1.12 s: frames 50 to 56): it goes
            # when rtp2ws decodes its end, ahead of audio still in the jitter buffer (140 ms here)
            assert 50 - 15 <= conn.texts_at[0] <= 56 + 5
        else:
            assert texts == []
        assert conn.close_code == 1000
    assert tags == {"caller", "callee"}
    # the events and the streams' counts are where they are with any format
    (call,) = manifest["calls"]
    assert [d["digit"] for leg in call["legs"] if leg["tag"] == "caller" for d in leg["dtmf"]] == ["5"]
    assert [h["by"] for h in call["holds"]] == ["caller"]
    assert manifest["summary"]["streams"]["streams"] == 2 and manifest["summary"]["streams"]["dropped_ms"] == 0
    assert "streamed 2 streams, 0 reconnects, 0 ms dropped, 0 ms undelivered" in r.stdout


def test_vonage_refuses_what_contradicts_its_protocol(tmp_path, servers):
    cap = make_capture(tmp_path / "c.pcap", seconds=0.5)
    srv = servers("stream_id")
    for extra, said in [(["--frame-ms", "100"], "--ws-format vonage sends 20 ms frames, as its protocol fixes; "
                                                "--frame-ms 100 contradicts it"),
                        (["--stereo"], "--ws-format vonage carries one channel"),
                        (["--sip-header", "From"], "--sip-header From: with --ws-format vonage"),
                        (["--header", "Sec-WebSocket-Protocol: audio.drachtio.org"],
                         "--header Sec-WebSocket-Protocol: the WebSocket subprotocol comes from --ws-format")]:
        r = replay(cap, "--ws-url", srv.url, "--ws-format", "vonage", *extra)
        assert r.returncode == 2 and f"rtp2ws: error: {said}" in r.stderr, (extra, r.stderr)
    assert srv.conns == []


# --------------------------------------------------------------------------- audiofork, jambonz

@pytest.mark.parametrize("fmt, subprotocol, options, mix_type, rate", [
    ("audiofork", "audio.drachtio.org", [], "mono", 16000),
    ("audiofork", "audio.drachtio.org", ["--stereo"], "stereo", 16000),
    ("audiofork", "audio.drachtio.org", ["--mix", "mixed", "--rate", "8000"], "mixed", 8000),
    ("jambonz", "audio.jambonz.org", [], "mono", 16000),
    ("jambonz", "audio.jambonz.org", ["--rate", "24000", "--mix", "stereo"], "stereo", 24000)])
def test_audiofork_servers_get_the_metadata_then_audio_only(tmp_path, servers, fmt, subprotocol, options, mix_type,
                                                            rate):
    """``mixType`` and ``sampleRate`` follow --mix and --rate; the audio is the WAV
    --out-dir writes in the same run (leg, stereo or mixed), at that rate."""
    cap = make_capture(tmp_path / "c.pcap")
    srv = servers("callSid", subprotocols=[subprotocol])
    out = tmp_path / "out"
    r = replay(cap, "--ws-url", srv.url, "--ws-format", fmt, "--out-dir", out, "--sip-header", CUSTOMER[0], *options)
    assert r.returncode == 0, r.stderr
    ref, _ = reference(out)
    streams = srv.streams()
    assert len(streams) == (2 if mix_type == "mono" else 1)
    for sid, (conn,) in streams.items():
        assert not conn.errors and conn.subprotocol == subprotocol
        tag = conn.first["tag"]
        assert conn.first == {"callSid": sid, "callId": CALL_ID, "from": "1000", "to": "2000", "sampleRate": rate,
                              "mixType": mix_type, "tag": tag, CUSTOMER[0]: CUSTOMER[1]}
        assert tag in ("caller", "callee") if mix_type == "mono" else tag == mix_type
        # then binary L16 only: no DTMF, hold, drop or end; the leg's (or the call's stereo or
        # mixed) WAV exactly, at that rate (each leg sends 3 s)
        assert conn.texts == []
        assert conn.audio == ref[tag]
        assert len(conn.audio) // (4 if mix_type == "stereo" else 2) >= 3 * rate
        assert conn.close_code == 1000


def test_vonage_at_8_khz_mixed_is_one_stream_of_both_legs(tmp_path, servers):
    """--rate 8000 --mix mixed: one connection a call, content-type audio/l16;rate=8000,
    binary messages of 20 ms at 8 kHz (320 bytes): the call's mixed.wav."""
    cap = make_capture(tmp_path / "c.pcap")
    srv = servers("stream_id")
    out = tmp_path / "out"
    r = replay(cap, "--ws-url", srv.url, "--ws-format", "vonage", "--out-dir", out, "--rate", "8000",
               "--mix", "mixed")
    assert r.returncode == 0, r.stderr
    ref, _ = reference(out)
    ((sid, (conn,)),) = srv.streams().items()
    assert not conn.errors
    assert conn.first == {"event": "websocket:connected", "content-type": "audio/l16;rate=8000", "call_id": CALL_ID,
                          "tag": "mixed", "stream_id": sid, "from": "sip:1000@10.0.0.1", "to": "sip:2000@10.0.0.2"}
    assert conn.frames and all(len(f) == 320 for f in conn.frames)
    want = ref["mixed"]
    assert len(want) >= 3 * 8000 * 2 and len(conn.audio) == -(-len(want) // 320) * 320
    assert conn.audio[:len(want)] == want and not any(conn.audio[len(want):])
    assert [json.loads(t) for t in conn.texts] == [{"event": "websocket:dtmf", "digit": "5", "duration": 120}]
    assert conn.close_code == 1000


@pytest.mark.parametrize("fmt, options, said", [
    ("vonage", ["--encoding", "mulaw"], "--ws-format vonage carries l16 audio only, as its protocol fixes: "
                                        "--encoding mulaw cannot go with it"),
    ("vonage", ["--rate", "24000"], "--ws-format vonage carries audio at 8000 or 16000 Hz only, as its protocol "
                                    "fixes: --rate 24000 cannot go with it"),
    ("vonage", ["--mix", "stereo"], "--ws-format vonage carries one channel"),
    ("audiofork", ["--rate", "48000"], "--ws-format audiofork carries audio at 8000 or 16000 Hz only"),
    ("jambonz", ["--encoding", "alaw"], "--ws-format jambonz carries l16 audio only")])
def test_audio_a_format_cannot_carry_is_refused_before_connecting(tmp_path, servers, fmt, options, said):
    cap = make_capture(tmp_path / "c.pcap", seconds=0.5)
    srv = servers("stream_id")
    r = replay(cap, "--ws-url", srv.url, "--ws-format", fmt, *options)
    assert r.returncode == 2 and f"rtp2ws: error: {said}" in r.stderr, r.stderr
    assert srv.conns == []


def test_a_server_requiring_a_subprotocol_refuses_the_default_format_and_the_log_says_why(tmp_path, servers):
    cap = make_capture(tmp_path / "c.pcap", seconds=0.5)
    srv = servers("callSid", subprotocols=["audio.drachtio.org"])
    r = replay(cap, "--ws-url", srv.url)
    assert r.returncode == 1
    assert "server refused the connection: HTTP 400 Bad Request: 'Failed to open a WebSocket connection: missing " \
           "subprotocol.' (the server refuses the WebSocket subprotocol: --ws-format rtp2ws offered none " \
           "(audiofork offers audio.drachtio.org; jambonz offers audio.jambonz.org; rtp2ws, seed, vonage, twilio, " \
           "audiohook offer none); pick the --ws-format the server speaks)" in r.stderr, r.stderr
    assert "check the URL" not in r.stderr
    # jambonz's subprotocol is not mod_audio_fork's
    r = replay(cap, "--ws-url", srv.url, "--ws-format", "jambonz")
    assert r.returncode == 1
    assert "'Failed to open a WebSocket connection: invalid subprotocol; expected one of audio.drachtio.org.' " \
           "(the server refuses the WebSocket subprotocol: --ws-format jambonz offered audio.jambonz.org" in r.stderr
    assert srv.conns == []


def test_a_server_answering_another_subprotocol_is_not_asked_again(tmp_path, servers):
    """The drachtio example server (examples/ws_server.js, Node's ws) answers
    audio.drachtio.org whatever the client offers: the client must close, and asking
    again would get the same answer."""
    cap = make_capture(tmp_path / "c.pcap", seconds=0.5)
    srv = servers("callSid", subprotocols=["audio.drachtio.org"],
                  select_subprotocol=lambda connection, offered: "audio.drachtio.org")
    r = replay(cap, "--ws-url", srv.url, "--ws-format", "jambonz")
    assert r.returncode == 1
    assert r.stderr.count("server refused the connection: unsupported subprotocol: audio.drachtio.org "
                          "(--ws-format jambonz offered audio.jambonz.org; ") == 2, r.stderr
    assert "2 streams refused by the server" in r.stderr


# --------------------------------------------------------------------------- reconnects

def locate(ref: bytes, audio: bytes) -> int:
    """Where ``audio`` sits in ``ref`` (bytes), asserting it is there, whole."""
    at = ref.find(audio[:640])
    assert at >= 0 and at % 2 == 0 and ref[at:at + len(audio)] == audio[:len(ref) - at]
    return at


@pytest.mark.parametrize("fmt, key, subprotocol", [("vonage", "stream_id", None),
                                                   ("audiofork", "callSid", "audio.drachtio.org")])
@pytest.mark.parametrize("outage_s, max_buffer_ms", [(0.0, 10000), (1.5, 400)])
def test_a_dropped_connection_reconnects_with_the_first_message_and_no_audio_twice(tmp_path, servers, fmt, key,
                                                                                  subprotocol, outage_s,
                                                                                  max_buffer_ms):
    """The server drops each stream's first connection after 0.74 s of audio (and
    then, in an outage, answers 503 for 1.5 s while --max-buffer-ms is 400): the
    stream connects again, sends the first message again, and goes on with the audio
    still queued: what the old connection carried is not repeated (these protocols
    have no offsets), what was lost is counted (undelivered, dropped), and no rtp2ws
    message (drop, end) reaches the server."""
    cap = make_capture(tmp_path / "c.pcap", seconds=6.0)
    srv = servers(key, subprotocols=[subprotocol] if subprotocol else None, drop_after=37, outage_s=outage_s)
    out = tmp_path / "out"
    r = replay(cap, "--ws-url", srv.url, "--ws-format", fmt, "--out-dir", out, "--speed", "4",
               "--max-buffer-ms", max_buffer_ms, "--log-level", "info")
    counts = summary_counts(r.stdout)
    assert r.returncode == (1 if counts["undelivered_ms"] else 0), r.stderr
    ref, manifest = reference(out)
    streams = srv.streams()
    assert len(streams) == 2 and counts["reconnects"] == 2
    assert (srv.refused > 0) == (outage_s > 0)
    missing = 0
    for sid, conns in streams.items():
        assert [c.dropped for c in conns] == [True, False]
        first, second = conns
        assert not first.errors and not second.errors
        assert first.first == second.first                   # the same first message, the same identity
        assert first.texts == second.texts == [] or fmt == "vonage"
        for c in conns:                                      # Vonage: DTMF only, never an rtp2ws message
            assert all(json.loads(t)["event"] == "websocket:dtmf" for t in c.texts)
        want = ref[first.first["tag"]]
        if fmt == "vonage":
            want += bytes(-len(want) % 640)
        a = len(first.audio)
        assert first.audio == want[:a]                       # from the start, as it was sent
        b = locate(want, second.audio)
        assert b >= a                                        # nothing twice
        assert b + len(second.audio) == len(want)            # and on to the end
        missing += (b - a) // 2
        assert second.close_code == 1000
    # what the server lacks was dropped (the outage) or sent and never acknowledged
    dropped = counts["dropped_ms"] * 16
    assert dropped <= missing <= dropped + counts["undelivered_ms"] * 16
    assert (dropped > 0) == (outage_s > 0)
    assert manifest["summary"]["streams"]["dropped_ms"] == counts["dropped_ms"]
    assert manifest["summary"]["streams"]["undelivered_ms"] == counts["undelivered_ms"]
    assert r.stderr.count("reconnected, the first message again and then the audio still queued") == 2
