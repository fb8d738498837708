"""``--ws-format audiohook`` against an AudioHook server written from Genesys's
published description of the protocol (https://developer.genesys.cloud/devapps/audiohook,
and the message types of github.com/purecloudlabs/audiohook-reference-implementation),
on loopback, fed by a real replay of generated calls.

The server knows nothing of rtp2ws.  It checks what the description says a server
gets: the HTTP headers of the upgrade; every text message's envelope (``version``
"2", ``id`` = the session id of the headers, ``seq`` 1, 2, ... per session,
``serverseq`` the last ``seq`` the server sent (or an earlier one still in flight),
``position`` the audio of the stream so far, counting what ``discarded`` and
``resumed`` say was not sent); ``open`` (organization, conversation, participant,
the media offered); no audio before ``opened``, then binary PCMU at 8 kHz in the
medium it chose; ``ping`` answered ``pong``; its ``pause``/``resume`` answered
``paused``/``resumed``; ``close`` answered ``closed``.  The audio it got, placed at
the positions the stream says, must be the same run's stereo WAV, every other
sample (8 kHz), encoded to PCMU by the G.711 formula written here.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field

import numpy as np
import pytest

from rtp2ws.sinks.wav import read_wav

import callgen
from callgen import Call, Party, frames_of, rtp_packets

PY = sys.executable
ORG = "d7934305-0972-4844-938e-9060eef73d05"
API_KEY = "SGVsbG8sIEkgYW0gdGhlIEFQSSBrZXkh"
OFFERED = [{"type": "audio", "format": "PCMU", "channels": ["external", "internal"], "rate": 8000},
           {"type": "audio", "format": "PCMU", "channels": ["external"], "rate": 8000},
           {"type": "audio", "format": "PCMU", "channels": ["internal"], "rate": 8000}]
DURATION = re.compile(r"^PT(\d+(?:\.\d+)?)S$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def samples(d: str) -> int:
    """An ISO 8601 duration in seconds as samples at 8 kHz."""
    m = DURATION.match(d)
    assert m, d
    return round(float(m.group(1)) * 8000)


def ulaw(x: np.ndarray) -> bytes:
    """G.711 µ-law of 16-bit samples as ITU-T G.191's ``ulaw_compress`` has it: the
    14-bit magnitude (one's complement for negative samples) plus 33, at most 0x1FFF;
    segment from the bits above the sixth, 4 bits of mantissa, both inverted; the
    sign bit set for x >= 0."""
    x = x.astype(np.int32)
    absno = np.minimum(np.where(x < 0, (~x) >> 2, x >> 2) + 33, 0x1FFF)
    i = absno >> 6
    segno = 1 + np.where(i > 0, np.floor(np.log2(np.maximum(i, 1))).astype(np.int32) + 1, 0)
    code = ((8 - segno) << 4) | (15 - ((absno >> segno) & 15))
    return (code | np.where(x >= 0, 0x80, 0)).astype(np.uint8).tobytes()


@dataclass
class Session:
    """One connection (one AudioHook session) as the server saw it."""
    headers: dict
    open: dict | None = None
    chosen: list | None = None                      # the channels of the medium it accepted
    messages: list = field(default_factory=list)    # every client text message, parsed
    chunks: list = field(default_factory=list)      # (position, PCMU bytes) of every binary message
    errors: list = field(default_factory=list)
    cursor: int = 0                                  # the stream position the server counts
    paused_at: int | None = None
    pongs: int = 0
    closed: bool = False
    server_seq: int = 0                              # the last seq the server sent

    def kinds(self):
        return [m["type"] for m in self.messages]


class Server:
    """An AudioHook server in a thread of its own.  ``choose``: the channels it accepts
    (None: it never answers ``open``).  ``script``: what it does once that many audio
    messages came: ``(frames, action)`` with action ``pause`` (then ``resume`` after
    ``resume_s``), ``disconnect``, ``reconnect`` (first session only) or ``garbage``
    (malformed messages the client must skip)."""

    def __init__(self, choose=("external", "internal"), script=(), resume_s=0.3, open_delay_s=0.0):
        from websockets.asyncio.server import serve

        self.choose = choose
        self.script = list(script)
        self.resume_s = resume_s
        self.open_delay_s = open_delay_s
        self.sessions: list[Session] = []
        self._ready = threading.Event()

        async def main():
            self._loop = asyncio.get_running_loop()
            self._stop = self._loop.create_future()
            async with serve(self._handler, "127.0.0.1", 0, compression=None) as srv:
                self.url = f"ws://127.0.0.1:{srv.sockets[0].getsockname()[1]}/hook"
                self._ready.set()
                await self._stop

        self._thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
        self._thread.start()
        assert self._ready.wait(10)

    def close(self):
        self._loop.call_soon_threadsafe(self._stop.set_result, None)
        self._thread.join(10)

    async def _handler(self, ws):
        from websockets.exceptions import ConnectionClosed

        h = {k.lower(): v for k, v in ws.request.headers.raw_items()}
        s = Session(h)
        self.sessions.append(s)
        sid = h.get("audiohook-session-id")
        if not (sid and UUID.match(sid) and UUID.match(h.get("audiohook-correlation-id", ""))
                and h.get("audiohook-organization-id") == ORG and h.get("x-api-key") == API_KEY):
            s.errors.append(f"headers: {h}")
        seq = 0                       # the server's
        done = set()
        lock = asyncio.Lock()

        async def send(kind, params):
            nonlocal seq
            async with lock:
                seq += 1
                s.server_seq = seq
                await ws.send(json.dumps({"version": "2", "id": sid, "type": kind, "seq": seq,
                                          "clientseq": len(s.messages), "parameters": params}))

        async def resume_later():
            await asyncio.sleep(self.resume_s)
            await send("resume", {})

        try:
            async for raw in ws:
                if isinstance(raw, bytes):
                    if s.chosen is None or s.paused_at is not None or s.closed:
                        s.errors.append(f"audio in state chosen={s.chosen} paused={s.paused_at}")
                    if len(raw) % len(s.chosen or [1]):
                        s.errors.append("a partial sample")
                    s.chunks.append((s.cursor, raw))
                    s.cursor += len(raw) // len(s.chosen or [1])
                    for i, (n, action) in enumerate(self.script):
                        if i in done or len(s.chunks) < n:
                            continue
                        if action == "reconnect" and len(self.sessions) > 1:
                            continue
                        done.add(i)
                        if action == "pause":
                            await send("pause", {})
                        elif action == "garbage":
                            await ws.send("this is not JSON")
                            await ws.send(json.dumps({"version": "2", "id": str(uuid.uuid4()), "type": "event",
                                                      "seq": seq + 1, "clientseq": 0, "parameters": {}}))
                            await ws.send(b"\x00\x01")
                            await send("event", {"entities": [{"type": "transcript", "data": {}}]})
                        else:
                            await send(action, {"reason": "completed", "info": "enough"}
                                       if action == "disconnect" else {"info": "maintenance"})
                    continue
                m = json.loads(raw)
                s.messages.append(m)
                self._check(s, m, seq)
                kind, p = m["type"], m["parameters"]
                if kind == "open":
                    s.open = p
                    s.cursor = samples(m["position"])
                    if self.choose is not None:
                        await asyncio.sleep(self.open_delay_s)
                        s.chosen = list(self.choose)
                        media = [{"type": "audio", "format": "PCMU", "channels": s.chosen, "rate": 8000}]
                        await send("opened", {"media": media, "startPaused": False})
                elif kind == "ping":
                    await send("pong", {})
                    s.pongs += 1
                elif kind == "paused":
                    s.paused_at = s.cursor if s.paused_at is None else s.paused_at
                    if "pause-sent" not in s.headers:
                        s.headers["pause-sent"] = True
                        asyncio.get_running_loop().create_task(resume_later())
                elif kind == "resumed":
                    if s.paused_at is not None and samples(p["start"]) != s.paused_at:
                        s.errors.append(f"resumed start {p['start']} is not where it paused ({s.paused_at})")
                    s.cursor = samples(p["start"]) + samples(p["discarded"])
                    if samples(m["position"]) != s.cursor:
                        s.errors.append(f"resumed: position {m['position']} is not start + discarded")
                    s.paused_at = None
                elif kind == "discarded":
                    if samples(p["start"]) != s.cursor:
                        s.errors.append(f"discarded start {p['start']} at {s.cursor}")
                    s.cursor += samples(p["discarded"])
                    if samples(m["position"]) != s.cursor:
                        s.errors.append(f"discarded: position {m['position']} is not start + discarded")
                elif kind == "close":
                    s.closed = True
                    await send("closed", {})
        except ConnectionClosed:
            pass

    def _check(self, s: Session, m: dict, server_seq: int):
        """The envelope of a client message."""
        want = {"version", "id", "type", "seq", "serverseq", "position", "parameters"}
        if set(m) != want:
            s.errors.append(f"fields {sorted(m)}")
            return
        if m["version"] != "2" or m["id"] != s.headers.get("audiohook-session-id"):
            s.errors.append(f"version/id {m['version']} {m['id']}")
        if m["seq"] != len(s.messages):
            s.errors.append(f"seq {m['seq']} for message {len(s.messages)}")
        before = [x["serverseq"] for x in s.messages[:-1]]
        if not (0 <= m["serverseq"] <= server_seq) or (before and m["serverseq"] < before[-1]):
            s.errors.append(f"serverseq {m['serverseq']} (server at {server_seq})")
        if m["type"] not in ("open", "resumed", "discarded") and samples(m["position"]) != s.cursor:
            s.errors.append(f"{m['type']}: position {m['position']} where the server counts {s.cursor}")

    def audio(self, s: Session, width: int) -> tuple[bytes, int]:
        """The session's audio placed at its positions (0xFF, µ-law silence, where none
        came), and how many samples came."""
        end = max((p + len(b) // width for p, b in s.chunks), default=0)
        out = bytearray(b"\xff" * end * width)
        for p, b in s.chunks:
            out[p * width:p * width + len(b)] = b
        return bytes(out), sum(len(b) for _, b in s.chunks) // width


@pytest.fixture
def servers():
    made = []

    def make(*args, **kw):
        srv = Server(*args, **kw)
        made.append(srv)
        return srv
    yield make
    for srv in made:
        srv.close()


def noise(n: int, seed: int) -> np.ndarray:
    return np.clip(np.random.default_rng(seed).normal(0, 3000, n), -32000, 32000).astype(np.int16)


def add_call(parts: list, k: int, seconds: float, hold: bool) -> None:
    a = Party(f"10.0.{k}.1", 5060, 4000, f"100{k}")
    b = Party(f"10.0.{k}.2", 5060, 5000, f"200{k}")
    c = Call(f"hook{k}@test", a, b, invite_headers=[("X-Customer-Id", f"cust-{k}")])
    t0 = 100 + k * 0.013
    n = int(seconds * 8000)
    parts += [c.setup(t0), rtp_packets(a, b, t0 + 0.1, noise(n, 2 * k + 1), ssrc=7 + k),
              rtp_packets(b, a, t0 + 0.103, noise(n, 2 * k + 2), ssrc=70 + k)]
    if hold:       # on hold (sendonly) for a second in the middle, then back (sendrecv)
        c.cseq = 2
        parts.append(c.request(t0 + 0.1 + seconds / 2, "INVITE", body=callgen.sdp(a.ip, a.rtp_port,
                                                                                  direction="sendonly")))
        c.cseq = 3
        parts.append(c.request(t0 + 1.1 + seconds / 2, "INVITE", body=callgen.sdp(a.ip, a.rtp_port)))
    parts.append(c.bye(t0 + 0.5 + seconds))


def make_capture(path, calls: int = 1, seconds: float = 4.0, hold: bool = False) -> str:
    parts: list = []
    for k in range(calls):
        add_call(parts, k, seconds, hold)
    return callgen.write(path, frames_of(*parts))


def replay(*args, timeout=120):
    return subprocess.run([PY, "-m", "rtp2ws.cli", "replay", *map(str, args), "--ws-format", "audiohook",
                           "--header", f"Audiohook-Organization-Id: {ORG}", "--header", f"X-API-KEY: {API_KEY}"],
                          capture_output=True, text=True, timeout=timeout)


def stereo_ulaw(out) -> tuple[dict[str, bytes], dict]:
    """Each call's stereo WAV (16 kHz) at 8 kHz (every other sample), as PCMU, by Call-ID."""
    manifest = json.loads((out / "calls.json").read_text())
    ref = {}
    for call in manifest["calls"]:
        pcm, rate, ch = read_wav(str(out / call["stereo_wav"]))
        assert rate == 16000 and ch == 2
        ref[call["call_id"]] = ulaw(pcm[::2].reshape(-1))
    return ref, manifest


def check_session(s: Session, call_id: str, k: int = 0):
    assert s.errors == []
    p = s.open
    assert set(p) - {"customConfig"} == {"organizationId", "conversationId", "participant", "media"}
    assert p["organizationId"] == ORG
    assert UUID.match(p["conversationId"]) and UUID.match(p["participant"]["id"])
    assert p["participant"] | {"id": None} == {"id": None, "ani": f"100{k}", "aniName": "", "dnis": f"200{k}"}
    assert p["media"] == OFFERED
    assert p.get("customConfig") in (None, {"X-Customer-Id": f"cust-{k}"})    # the --sip-header values
    kinds = s.kinds()
    assert kinds[0] == "open" and kinds[-1] == "close" and s.messages[-1]["parameters"] == {"reason": "end"}
    # pings: one at once, a second at its pong with the round trip measured
    pings = [m for m in s.messages if m["type"] == "ping"]
    assert len(pings) >= 2 and pings[0]["parameters"] == {} and s.pongs == len(pings)
    assert set(pings[1]["parameters"]) == {"rtt"} and samples(pings[1]["parameters"]["rtt"]) < 8000


# --------------------------------------------------------------------------- the tests

@pytest.mark.parametrize("choose", [("external", "internal"), ("external",), ("internal",)])
def test_a_session_per_call_in_the_medium_the_server_chose(tmp_path, servers, choose):
    """The server's pause (and resume 0.3 s later), the call's hold (the client's own
    paused/resumed) and malformed server messages along the way; the audio it got is
    the stereo WAV's at 8 kHz, in the channels it chose, wherever the stream says."""
    cap = make_capture(tmp_path / "c.pcap", seconds=6.0, hold=True)
    srv = servers(choose, script=[(40, "pause"), (20, "garbage")])
    out = tmp_path / "out"
    r = replay(cap, "--ws-url", srv.url, "--out-dir", out, "--stereo", "--speed", "4",
               "--sip-header", "X-Customer-Id")
    assert r.returncode == 0, r.stderr
    ref, manifest = stereo_ulaw(out)
    (s,) = srv.sessions
    check_session(s, "hook0@test")
    assert s.open["customConfig"] == {"X-Customer-Id": "cust-0"}
    assert s.open["conversationId"] == str(uuid.uuid5(uuid.UUID("0b6d7c8e-3f4a-5e21-9d0c-7a1e2b3c4d5e"),
                                                      "hook0@test"))
    kinds = s.kinds()
    # the server's pause answered, its resume answered; the hold paused and resumed again
    assert kinds.count("paused") == 2 and kinds.count("resumed") == 2, kinds
    width = len(choose)
    want = ref["hook0@test"]
    if width == 1:
        want = want[0::2] if choose == ("external",) else want[1::2]
    got, n = srv.audio(s, width)
    total = samples(s.messages[-1]["position"])
    assert total * width == len(want)                        # the close: at the end of the stream
    assert len(got) <= len(want)
    for p, b in s.chunks:                                    # every message where it belongs
        assert want[p * width:p * width + len(b)] == b
    # what did not come is what the pauses discarded
    gaps = [samples(m["parameters"]["discarded"]) for m in s.messages if m["type"] in ("resumed", "discarded")]
    assert n + sum(gaps) == total and sum(gaps) > 8000      # the hold alone is a second
    st = manifest["summary"]["streams"]
    assert st["streams"] == 1 and st["audiohook_malformed"] == 3 and st["audiohook_server_events"] == 1
    assert st["audiohook_sessions"] == st["audiohook_opened"] == 1
    assert r.stderr.count("skipped a malformed AudioHook message") == 3


@pytest.mark.parametrize("rate", [16000, 48000])
def test_mu_law_legs_come_back_as_they_were_sent(tmp_path, servers, rate):
    """A µ-law call whose callee starts 49 samples of 16 kHz after the caller (not a
    sample of 8 kHz): each channel of the session is its leg's own G.711 samples from
    the leg's first on, whatever --rate the run has; no sample is an interpolated one."""
    import g191

    from rtp2ws.codec import g711

    a, b = Party("10.0.0.1", 5060, 4000, "1000"), Party("10.0.0.2", 5060, 5000, "2000")
    c = Call("exact@test", a, b)
    n = 16000
    pa, pb = noise(n, 11), noise(n, 12)
    late = 49 / 16000
    cap = callgen.write(tmp_path / "c.pcap", frames_of(
        c.setup(100, pts=(0, 101)), rtp_packets(a, b, 100.1, pa, ssrc=7, pt=0, law="ulaw"),
        rtp_packets(b, a, 100.1 + late, pb, ssrc=8, pt=0, law="ulaw"), c.bye(100.1 + n / 8000 + 0.3)))
    srv = servers()
    r = replay(cap, "--ws-url", srv.url, "--speed", "4", "--rate", rate)
    assert r.returncode == 0, r.stderr
    (s,) = srv.sessions
    got, _ = srv.audio(s, 2)
    external, internal = got[0::2], got[1::2]
    for leg, sent, begin in ((external, pa, 0), (internal, pb, 24)):    # 49 of 16 kHz: from 8 kHz sample 24
        want = ulaw(g191.expand(g711.encode_ulaw(sent), "ulaw"))   # the payload's samples (µ-law's two zeros: one)
        assert leg[begin:begin + len(want)] == want


def test_concurrent_calls_each_on_its_own_session(tmp_path, servers):
    cap = make_capture(tmp_path / "c.pcap", calls=3, seconds=3.0)
    srv = servers()
    out = tmp_path / "out"
    r = replay(cap, "--ws-url", srv.url, "--out-dir", out, "--stereo", "--speed", "4")
    assert r.returncode == 0, r.stderr
    ref, _ = stereo_ulaw(out)
    assert len(srv.sessions) == 3
    conversations = set()
    for s in srv.sessions:
        k = int(s.open["participant"]["ani"][-1])
        check_session(s, f"hook{k}@test", k)
        conversations.add(s.open["conversationId"])
        got, n = srv.audio(s, 2)
        assert got == ref[f"hook{k}@test"] and n * 2 == len(got)       # all of it, nothing discarded
        assert "discarded" not in s.kinds() and "paused" not in s.kinds()
    assert len(conversations) == 3 and len({s.headers["audiohook-session-id"] for s in srv.sessions}) == 3


def test_reconnect_goes_on_in_a_new_session_without_a_gap(tmp_path, servers):
    cap = make_capture(tmp_path / "c.pcap", seconds=4.0)
    srv = servers(script=[(30, "reconnect")])
    out = tmp_path / "out"
    r = replay(cap, "--ws-url", srv.url, "--out-dir", out, "--stereo", "--speed", "4")
    assert r.returncode == 0, r.stderr
    ref, manifest = stereo_ulaw(out)
    first, second = srv.sessions
    assert first.errors == [] and second.errors == []
    assert first.kinds()[-1] == "close" and first.messages[-1]["parameters"] == {"reason": "reconnect"}
    assert first.headers["audiohook-session-id"] != second.headers["audiohook-session-id"]
    assert first.headers["audiohook-correlation-id"] == second.headers["audiohook-correlation-id"]
    # the new session names the old one and goes on where it stopped
    assert second.open["continuedSessions"] == [{"id": first.headers["audiohook-session-id"],
                                                 "serverseq": first.server_seq,
                                                 "clientseq": first.messages[-1]["seq"]}]
    assert samples(second.messages[0]["position"]) == first.cursor
    assert second.open["conversationId"] == first.open["conversationId"]
    a, _ = srv.audio(first, 2)
    b, _ = srv.audio(second, 2)
    assert a[:first.cursor * 2] + b[first.cursor * 2:] == ref["hook0@test"]   # nothing lost, nothing twice
    st = manifest["summary"]["streams"]
    assert st["reconnects"] == 1 and st["audiohook_reconnect_requests"] == 1 and st["dropped_ms"] == 0


def test_disconnect_closes_the_session_and_ends_the_stream(tmp_path, servers):
    cap = make_capture(tmp_path / "c.pcap", seconds=4.0)
    srv = servers(script=[(20, "disconnect")])
    out = tmp_path / "out"
    r = replay(cap, "--ws-url", srv.url, "--out-dir", out, "--stereo", "--speed", "4", "--log-level", "info")
    assert r.returncode == 0, r.stderr
    _, manifest = stereo_ulaw(out)
    (s,) = srv.sessions
    assert s.errors == [] and s.messages[-1]["type"] == "close"
    assert s.messages[-1]["parameters"] == {"reason": "disconnect"}
    st = manifest["summary"]["streams"]
    assert st["audiohook_disconnects_completed"] == 1 and st["dropped_ms"] > 0 and st["reconnects"] == 0
    assert "the server disconnected the session (completed: enough)" in r.stderr


def test_a_server_that_never_opens_is_an_error_after_the_open_timeout(tmp_path, servers):
    cap = make_capture(tmp_path / "c.pcap", seconds=1.0)
    srv = servers(choose=None)
    t0 = time.monotonic()
    r = replay(cap, "--ws-url", srv.url, "--stereo")
    assert r.returncode == 1
    assert time.monotonic() - t0 < 60
    (s,) = srv.sessions
    assert s.kinds() == ["open", "error"] and s.chunks == []       # no audio before opened
    assert s.messages[1]["parameters"] == {"code": 408, "message": "Open transaction timeout"}
    assert "the server did not answer 'open' with 'opened' within 5 s" in r.stderr
    assert "1 streams refused by the server" in r.stderr


def test_options_that_contradict_audiohook_are_refused(tmp_path, servers):
    cap = make_capture(tmp_path / "c.pcap", seconds=0.5)
    srv = servers()
    for extra, said in [(["--header", "Audiohook-Session-Id: 1"],
                         "--header Audiohook-Session-Id: with --ws-format audiohook every connection has its own"),
                        (["--header", "Audiohook-Organization-Id: acme"],
                         "--header Audiohook-Organization-Id: the organization id must be a UUID")]:
        r = subprocess.run([PY, "-m", "rtp2ws.cli", "replay", cap, "--ws-url", srv.url, "--ws-format", "audiohook",
                            *extra], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and f"rtp2ws: error: {said}" in r.stderr, (extra, r.stderr)
    assert srv.sessions == []


def test_audio_dropped_while_the_server_opens_is_told_with_discarded(tmp_path, servers):
    """The server takes 1.2 s to answer open while --max-buffer-ms is 300: the oldest
    audio is dropped, counted, and told (``discarded`` from the start); the rest is the
    WAV's, where the stream says."""
    cap = make_capture(tmp_path / "c.pcap", seconds=4.0)
    srv = servers(open_delay_s=1.2)
    out = tmp_path / "out"
    r = replay(cap, "--ws-url", srv.url, "--out-dir", out, "--stereo", "--speed", "realtime",
               "--max-buffer-ms", "300", "--workers", "1")
    assert r.returncode == 0, r.stderr
    ref, manifest = stereo_ulaw(out)
    (s,) = srv.sessions
    assert s.errors == []
    d = [m for m in s.messages if m["type"] == "discarded"]
    assert len(d) == 1 and d[0]["parameters"]["start"] == "PT0S"
    lost = samples(d[0]["parameters"]["discarded"])
    assert 0.5 * 8000 < lost < 1.2 * 8000
    want = ref["hook0@test"]
    for p, b in s.chunks:
        assert want[p * 2:p * 2 + len(b)] == b
    assert lost + sum(len(b) for _, b in s.chunks) // 2 == len(want) // 2
    assert manifest["summary"]["streams"]["dropped_ms"] == -(-lost * 2 // 16)
