"""Capacity benchmark: how many concurrent calls one CPU core carries.

    rtp2ws bench [--calls N | --sweep 10,100,500,1000,2000] [--seconds S[,S...]]
                 [--configs wav,ws20,ws100,stereo,reference,reference_wav] [--quick]
                 [--latency [--latency-calls 200] [--latency-config ws20] [--flush-ms 20]]
                 [--out benchmarks/results]
    python benchmarks/calls_per_core.py ...          (the same thing)

For every N it generates (and caches) a capture of N concurrent G.711 calls
(``make_capture``), then replays it at ``--speed max`` through each
configuration in a child process of its own:

========== ================================================================
wav        capture -> one WAV per leg (``rtp2ws replay --out-dir``)
ws20       capture -> WebSocket, one connection per leg, 20 ms frames
ws100      the same with 100 ms frames
stereo     capture -> WebSocket, one stereo connection per call, 20 ms frames
stereo_wav capture -> per-leg WAVs plus a stereo WAV per call
reference  benchmarks/reference_pipeline.py: pypcap + dpkt + audioop, one
           ``websockets`` send per 20 ms frame per leg (compare with ws20)
reference_wav  the same pipeline writing WAV files (compare with wav)
========== ================================================================

WebSocket audio goes to a *discard sink*: a minimal WebSocket server
(``python -m rtp2ws.bench.harness sink``: handshake, frame headers walked and the
payload skipped, pings and closes answered, frames counted) in a separate
process, so that it takes as little CPU as possible from rtp2ws's core; its
CPU is never counted.  ``--sink rtp2ws`` uses ``rtp2ws sink`` instead.

**calls per core** = N x call seconds / CPU seconds (user + sys) of the
replaying process, measured with ``getrusage(RUSAGE_SELF)`` inside the child
from the moment the replay starts until every stream is drained (interpreter
start-up and imports are excluded, for rtp2ws and the reference alike).  It
includes call set-up and tear-down (SIP, WebSocket handshakes), which short
benchmark calls amortise over fewer seconds than real calls do.  The default
call length is 2000/N seconds clamped to 2..30 s (``default_seconds``), so the
default sweep stays within minutes; ``--seconds`` sets one length for all N,
or several: then each configuration's CPU is also fitted as N x (set-up +
seconds x per call-second) (``cost_model``), which gives calls per core at
steady state and for three-minute calls, what a contact centre sizes with.

Also measured: peak RSS; memory per active call (RSS when all N calls are
active, minus RSS before the replay, divided by N; at ``--speed max`` this
includes the WebSocket queues that flow control lets fill, so the realtime
figure from the latency run is the one to size with); a per-stage CPU
breakdown (a separate cProfile run, 100 calls x 5 s, with a per-thread CPU
clock, self time attributed by module, see ``STAGES``; profiling inflates
per-call costs, so shares are indicative); and with ``--latency`` the delay
from a packet's capture time to its audio being written to the socket,
replaying ``--latency-config`` (ws20) at ``--speed realtime`` with
``--latency-calls`` (200) calls, paced as live capture is (``--flush-ms``), and
from its CPU the *realtime* calls per core: what a live sidecar carries, where
every connection gets a write per flush instead of a second of audio at once.
Latency is measured against the packet's scheduled
wall time (the pacer's origin); replay's pacer feeds packets up to 2 ms
early, so values under 2 ms are within its resolution.

Everything lands in ``--out``: ``calls_per_core.json``, ``calls_per_core.png``
(calls per core against N), ``calls_per_core.txt`` (the printed table), and
the cached captures under ``captures/``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import platform
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..argtypes import number, whole

FORMAT_VERSION = 2            # bump when the generated captures change
EPOCH = 1_767_225_600         # 2026-01-01T00:00:00Z: capture time of the first call
CONFIGS = ("wav", "ws20", "ws100", "stereo", "stereo_wav", "reference", "reference_wav")
DEFAULT_CONFIGS = ("wav", "ws20", "ws100", "stereo", "reference", "reference_wav")
DEFAULT_SWEEP = (10, 100, 500, 1000, 2000)
QUICK_SWEEP = (10, 100)
WS_CONFIGS = {"ws20": (20, False), "ws100": (100, False), "stereo": (20, True)}
REFERENCE_OF = {"ws20": "reference", "wav": "reference_wav"}
LATENCY_CALLS = 200           # default N of the realtime run: a load one process here carries
RTP_FRAME_LEN = 14 + 20 + 8 + 12 + 160    # Ethernet + IPv4 + UDP + RTP + 20 ms of G.711


# =========================================================================== captures

def speech_like(seconds: float = 8.0, rate: int = 8000, seed: int = 7) -> np.ndarray:
    """Deterministic speech-like int16 audio: a voiced source (harmonics of a
    gliding pitch) mixed with band-limited noise, shaped by syllables of
    120-300 ms separated by short pauses and the odd longer one, over a faint
    noise floor.  Enough for G.711 payloads whose bytes look like speech."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    f0 = 150 + 35 * np.sin(2 * np.pi * 0.31 * t) + 12 * np.sin(2 * np.pi * 2.3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voiced = np.zeros(n)
    for h in range(1, 22):
        voiced += np.sin(h * phase + h * 0.7) / h
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / rate)
    spec[(freqs < 300) | (freqs > 3400)] = 0
    noise = np.fft.irfft(spec, n)
    noise /= np.abs(noise).max()
    env = np.zeros(n)
    pos = 0
    while pos < n:
        length = int(rate * rng.uniform(0.12, 0.30))
        seg = np.sin(np.pi * np.arange(length) / length) ** 1.5 * rng.uniform(0.4, 1.0)
        env[pos:pos + length] = seg[:max(0, min(length, n - pos))]
        pos += length + int(rate * (rng.uniform(0.6, 1.2) if rng.random() < 0.12 else rng.uniform(0.03, 0.12)))
    mix = env * (0.75 * voiced / np.abs(voiced).max() + 0.25 * noise) + 0.002 * noise
    return np.round(12000 * mix / np.abs(mix).max()).astype(np.int16)


def _ip4(text: str) -> bytes:
    return bytes(int(x) for x in text.split("."))


def _checksum(data: bytes) -> int:
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


_MACS = bytes.fromhex("020000000002" "020000000001") + b"\x08\x00"


def _l2_l4(src: str, sport: int, dst: str, dport: int, payload_len: int) -> bytes:
    """Ethernet + IPv4 (checksum set) + UDP (checksum 0, legal in IPv4) headers."""
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28 + payload_len, 0, 0x4000, 64, 17, 0,
                               _ip4(src), _ip4(dst)))
    struct.pack_into("!H", ip, 10, _checksum(bytes(ip)))
    return _MACS + bytes(ip) + struct.pack("!HHHH", sport, dport, 8 + payload_len, 0)


def _record(t_us: int, frame: bytes) -> bytes:
    return struct.pack("<IIII", EPOCH + t_us // 1_000_000, t_us % 1_000_000, len(frame), len(frame)) + frame


def _parties(i: int) -> tuple[str, str, int, int]:
    """Caller IP, callee IP, caller RTP port, callee RTP port of call ``i``."""
    hi = 2 * (i // 64000)
    j = i % 64000
    a = f"10.{1 + hi}.{j // 250}.{j % 250 + 1}"
    b = f"10.{2 + hi}.{j // 250}.{j % 250 + 1}"
    return a, b, 16384 + 2 * (i % 8000), 30000 + 2 * (i % 8000)


def _sdp(ip: str, port: int, pts: str, sess: int) -> str:
    names = {"8": "PCMA/8000", "0": "PCMU/8000", "101": "telephone-event/8000"}
    lines = ["v=0", f"o=bench {sess} {sess} IN IP4 {ip}", "s=rtp2ws bench", f"c=IN IP4 {ip}", "t=0 0",
             f"m=audio {port} RTP/AVP {pts}"]
    lines += [f"a=rtpmap:{p} {names[p]}" for p in pts.split()]
    lines += ["a=fmtp:101 0-16", "a=ptime:20", "a=sendrecv"]
    return "\r\n".join(lines) + "\r\n"


def _sip_messages(i: int, call_id: str, t: int, bye_at: int, law_pt: str) -> list[tuple[int, bytes]]:
    """INVITE(SDP) / 100 / 180 / 200(SDP) / ACK at ``t`` and BYE / 200 at ``bye_at`` (µs)."""
    a, b, pa, pb = _parties(i)
    ftag, ttag = f"f{i:x}a", f"t{i:x}b"
    frm = f"\"Caller {i}\" <sip:+4930{i:07d}@{a}>;tag={ftag}"
    to = f"<sip:+4940{i:07d}@{b}>"
    out = []

    def msg(at, first, src, dst, via_host, branch, cseq, to_hdr, from_hdr=frm, body="", contact=None):
        hdrs = [first, f"Via: SIP/2.0/UDP {via_host}:5060;branch=z9hG4bK{branch}", "Max-Forwards: 70",
                f"From: {from_hdr}", f"To: {to_hdr}", f"Call-ID: {call_id}", f"CSeq: {cseq}"]
        if contact:
            hdrs.append(f"Contact: <sip:{contact}:5060>")
        hdrs.append("User-Agent: rtp2ws-bench")
        if body:
            hdrs.append("Content-Type: application/sdp")
        hdrs.append(f"Content-Length: {len(body)}")
        data = ("\r\n".join(hdrs) + "\r\n\r\n" + body).encode()
        out.append((at, _record(at, _l2_l4(src, 5060, dst, 5060, len(data)) + data)))

    inv = f"{i:x}inv"
    ruri = f"sip:+4940{i:07d}@{b}:5060"
    offer = _sdp(a, pa, "8 0 101", 1000 + i)
    answer = _sdp(b, pb, f"{law_pt} 101", 2000 + i)
    msg(t, f"INVITE {ruri} SIP/2.0", a, b, a, inv, "1 INVITE", to, body=offer, contact=f"caller{i}@{a}")
    msg(t + 5_000, "SIP/2.0 100 Trying", b, a, a, inv, "1 INVITE", to)
    msg(t + 20_000, "SIP/2.0 180 Ringing", b, a, a, inv, "1 INVITE", f"{to};tag={ttag}", contact=f"callee{i}@{b}")
    msg(t + 80_000, "SIP/2.0 200 OK", b, a, a, inv, "1 INVITE", f"{to};tag={ttag}", body=answer,
        contact=f"callee{i}@{b}")
    msg(t + 90_000, f"ACK sip:callee{i}@{b}:5060 SIP/2.0", a, b, a, f"{i:x}ack", "1 ACK", f"{to};tag={ttag}")
    msg(bye_at, f"BYE sip:callee{i}@{b}:5060 SIP/2.0", a, b, a, f"{i:x}bye", "2 BYE", f"{to};tag={ttag}")
    msg(bye_at + 5_000, "SIP/2.0 200 OK", b, a, a, f"{i:x}bye", "2 BYE", f"{to};tag={ttag}")
    return out


_RTP_DTYPE = np.dtype([("sec", "<u4"), ("usec", "<u4"), ("incl", "<u4"), ("orig", "<u4"), ("head", "V42"),
                       ("b0", "u1"), ("mpt", "u1"), ("seq", ">u2"), ("ts", ">u4"), ("ssrc", ">u4"),
                       ("payload", "V160")])
assert _RTP_DTYPE.itemsize == 16 + RTP_FRAME_LEN


def make_capture(path, calls: int, seconds: float, *, loss: float = 0.0, reorder: float = 0.0, seed: int = 1,
                 law: str = "alaw", stagger: float = 1.0) -> dict:
    """Write a pcap of ``calls`` concurrent G.711 calls of ``seconds`` of audio each.

    Every call is a SIP INVITE(SDP offer)/100/180/200(SDP answer)/ACK, then RTP
    in both directions (20 ms packets of speech-like G.711, ``law`` "alaw" or
    "ulaw"), then BYE/200.  Calls start evenly over the first ``stagger``
    seconds; each has its own addresses and ports.  ``loss`` drops that share
    of RTP packets (never a leg's first or last); ``reorder`` delays that share
    by 25 ms, so the next packet overtakes them.  Returns the description
    stored beside cached captures: packet counts, the steady-state window and,
    per leg, the packets, losses and reorderings generated.
    """
    if calls < 1 or seconds <= 0:
        raise ValueError("calls and seconds must be positive")
    if law not in ("alaw", "ulaw"):
        raise ValueError("law is alaw or ulaw")
    from ..codec import g711

    rng = np.random.default_rng(seed)
    n = max(2, round(seconds * 50))
    law_pt = "8" if law == "alaw" else "0"
    encode = g711.encode_alaw if law == "alaw" else g711.encode_ulaw
    speech = np.frombuffer(encode(speech_like(8.0, seed=seed + 6)), dtype="V160")
    nlegs = 2 * calls
    starts = (np.arange(calls) * (stagger * 1e6 / calls)).astype(np.int64) + rng.integers(0, 3000, calls)
    leg_call = np.arange(nlegs) // 2
    first = starts[leg_call] + 100_000 + (np.arange(nlegs) % 2) * 7_000     # callee 7 ms after caller
    media_end = starts + 100_000 + n * 20_000
    bye_at = media_end + 20_000

    heads = np.empty(nlegs, dtype="V42")
    for i in range(calls):
        a, b, pa, pb = _parties(i)
        heads[2 * i] = _l2_l4(a, pa, b, pb, 172)          # caller -> callee's SDP address
        heads[2 * i + 1] = _l2_l4(b, pb, a, pa, 172)
    ssrc = rng.integers(1, 2 ** 32, nlegs, dtype=np.uint64)
    seq0 = rng.integers(0, 2 ** 16, nlegs, dtype=np.int64)
    ts0 = rng.integers(0, 2 ** 32, nlegs, dtype=np.int64)
    phase = rng.integers(0, len(speech), nlegs)

    # which packets exist, and when they arrive
    k = np.tile(np.arange(n, dtype=np.int64), nlegs)
    leg = np.repeat(np.arange(nlegs), n)
    t = first[leg] + k * 20_000
    lost = rng.random(nlegs * n) < loss if loss > 0 else np.zeros(nlegs * n, bool)
    edge = (k == 0) | (k == n - 1)
    lost &= ~edge
    if reorder > 0:
        late = rng.random(nlegs * n) < reorder
        nxt_lost = np.roll(lost, -1)
        late &= ~lost & ~nxt_lost & (k >= 1) & (k <= n - 3)
        late[1:] &= ~late[:-1].copy()          # disjoint pairs: packet k late, k+1 overtakes it
        t = t + late * 25_000
    else:
        late = np.zeros(nlegs * n, bool)
    keep = ~lost
    per_leg_lost = np.bincount(leg[lost], minlength=nlegs)
    per_leg_late = np.bincount(leg[late], minlength=nlegs)
    leg, k, t = leg[keep], k[keep], t[keep]
    order = np.argsort(t, kind="stable")
    leg, k, t = leg[order], k[order], t[order]

    sip = []
    call_ids = [f"{i:06d}-{seed}-bench@10.{1 + 2 * (i // 64000)}.0.1" for i in range(calls)]
    for i in range(calls):
        sip += _sip_messages(i, call_ids[i], int(starts[i]), int(bye_at[i]), law_pt)
    sip.sort(key=lambda m: m[0])
    sip_t = np.array([m[0] for m in sip], dtype=np.int64)
    cut = np.searchsorted(t, sip_t, side="right")     # RTP rows before each SIP message

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    chunk = 200_000
    size = 24
    with open(tmp, "wb", buffering=1 << 20) as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        s = 0
        for lo in range(0, len(t), chunk):
            hi = min(len(t), lo + chunk)
            rec = np.empty(hi - lo, dtype=_RTP_DTYPE)
            tl, ll, kl = t[lo:hi], leg[lo:hi], k[lo:hi]
            rec["sec"] = EPOCH + tl // 1_000_000
            rec["usec"] = tl % 1_000_000
            rec["incl"] = RTP_FRAME_LEN
            rec["orig"] = RTP_FRAME_LEN
            rec["head"] = heads[ll]
            rec["b0"] = 0x80
            rec["mpt"] = int(law_pt) | np.where(kl == 0, 0x80, 0)
            rec["seq"] = (seq0[ll] + kl) & 0xFFFF
            rec["ts"] = (ts0[ll] + 160 * kl) & 0xFFFFFFFF
            rec["ssrc"] = ssrc[ll]
            rec["payload"] = speech[(phase[ll] + kl) % len(speech)]
            data = memoryview(rec.tobytes())
            pos = lo
            while s < len(sip) and cut[s] <= hi:
                f.write(data[(pos - lo) * _RTP_DTYPE.itemsize:(cut[s] - lo) * _RTP_DTYPE.itemsize])
                pos = cut[s]
                f.write(sip[s][1])
                size += len(sip[s][1])
                s += 1
            f.write(data[(pos - lo) * _RTP_DTYPE.itemsize:])
        for _, rec_bytes in sip[s:]:
            f.write(rec_bytes)
            size += len(rec_bytes)
    os.replace(tmp, path)
    size += len(t) * _RTP_DTYPE.itemsize

    steady_from = float(starts.max() + 107_000) / 1e6
    steady_until = float(media_end.min()) / 1e6
    sample = (steady_from + steady_until) / 2 if steady_until > steady_from else float(np.median(starts) / 1e6 + 0.1 + seconds / 2)
    active = int(np.count_nonzero((starts / 1e6 + 0.1 <= sample) & (media_end / 1e6 >= sample)))
    legs = []
    for j in range(nlegs):
        legs.append({"call_id": call_ids[j // 2], "tag": ("caller", "callee")[j % 2],
                     "packets": int(n - per_leg_lost[j]), "lost": int(per_leg_lost[j]),
                     "reordered": int(per_leg_late[j])})
    return {
        "version": FORMAT_VERSION, "path": str(path), "calls": calls, "seconds": n / 50.0, "loss": loss,
        "reorder": reorder, "seed": seed, "law": law, "stagger": stagger,
        "packets": int(len(t) + len(sip)), "rtp_packets": len(t), "sip_packets": len(sip), "bytes": size,
        "first_ts": EPOCH + float(min(t[0], sip_t[0])) / 1e6, "last_ts": EPOCH + float(max(t[-1], sip_t[-1])) / 1e6,
        "steady_from_ts": EPOCH + steady_from, "steady_until_ts": EPOCH + steady_until,
        "mem_sample_ts": EPOCH + sample, "active_at_sample": active,
        "legs": legs,
    }


def cached_capture(cache_dir, calls: int, seconds: float, **kw) -> tuple[str, dict]:
    """``make_capture`` under ``cache_dir``, keyed by every parameter; reused when present."""
    loss, reorder = kw.get("loss", 0.0), kw.get("reorder", 0.0)
    seed, law, stagger = kw.get("seed", 1), kw.get("law", "alaw"), kw.get("stagger", 1.0)
    name = (f"bench-v{FORMAT_VERSION}-n{calls}-s{seconds:g}-l{loss:g}-r{reorder:g}-seed{seed}-{law}"
            f"-st{stagger:g}.pcap")
    path = Path(cache_dir) / name
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists():
        try:
            info = json.loads(meta.read_text())
            if info.get("version") == FORMAT_VERSION and path.stat().st_size == info.get("bytes"):
                return str(path), info
        except (OSError, ValueError):
            pass
    info = make_capture(path, calls, seconds, loss=loss, reorder=reorder, seed=seed, law=law, stagger=stagger)
    meta.write_text(json.dumps(info))
    return str(path), info


# =========================================================================== discard sink

class _DiscardProtocol(asyncio.Protocol):
    """Server side of a WebSocket connection that takes every frame and throws it
    away: the handshake, then frame headers walked and payloads skipped without
    unmasking; pings are answered and closes echoed."""

    GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    def __init__(self, stats: dict) -> None:
        self.stats = stats
        self.transport = None
        self.shaken = False
        self.head = b""          # incomplete handshake or frame header
        self.skip = 0            # payload bytes still to skip

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.stats["connections"] += 1

    def connection_lost(self, exc) -> None:
        self.stats["closed"] += 1

    def data_received(self, data: bytes) -> None:
        st = self.stats
        st["bytes"] += len(data)
        if not self.shaken:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                if len(self.head) > 65536:
                    self.transport.close()
                return
            key = b""
            for line in self.head[:end].split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"sec-websocket-key":
                    key = value.strip()
            accept = base64.b64encode(hashlib.sha1(key + self.GUID).digest())
            self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                 b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            self.shaken = True
            data, self.head = self.head[end + 4:], b""
            if not data:
                return
        if self.skip >= len(data):
            self.skip -= len(data)
            return
        if self.head:
            data = self.head + data[self.skip:]
            self.head = b""
            pos = 0
        else:
            pos = self.skip
        self.skip = 0
        n = len(data)
        while pos < n:
            if n - pos < 2:
                self.head = data[pos:]
                return
            b0, b1 = data[pos], data[pos + 1]
            length = b1 & 0x7F
            hl = 2 + (4 if b1 & 0x80 else 0) + (2 if length == 126 else 8 if length == 127 else 0)
            if n - pos < hl:
                self.head = data[pos:]
                return
            if length == 126:
                length = int.from_bytes(data[pos + 2:pos + 4], "big")
            elif length == 127:
                length = int.from_bytes(data[pos + 2:pos + 10], "big")
            op = b0 & 0x0F
            if op >= 8:                                    # control frame: needs its payload
                if n - pos < hl + length:
                    self.head = data[pos:]
                    return
                mask = data[pos + hl - 4:pos + hl] if b1 & 0x80 else b"\0\0\0\0"
                payload = bytes(c ^ mask[i % 4] for i, c in enumerate(data[pos + hl:pos + hl + length]))
                if op == 8:
                    self.transport.write(b"\x88" + bytes([len(payload[:2])]) + payload[:2])
                    self.transport.close()
                    return
                if op == 9:
                    self.transport.write(b"\x8a" + bytes([len(payload)]) + payload)
            elif op == 2:
                st["binary"] += 1
            elif op == 1:
                st["text"] += 1
            pos += hl + length
        self.skip = pos - n


async def _serve_discard(host: str, port: int) -> None:
    from ..ws.sender import raise_fd_limit

    raise_fd_limit(65536)
    stats = {"connections": 0, "closed": 0, "binary": 0, "text": 0, "bytes": 0}
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _DiscardProtocol(stats), host, port, backlog=4096)
    bound = server.sockets[0].getsockname()
    print(f"listening on ws://{bound[0]}:{bound[1]}/audio", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    print(json.dumps(stats), flush=True)
    server.close()


class SinkProcess:
    """The WebSocket server the benchmark streams to, in a process of its own."""

    def __init__(self, kind: str = "discard", out_dir: str | None = None) -> None:
        self.kind = kind
        self._tmp = None
        if kind == "discard":
            cmd = [sys.executable, "-m", "rtp2ws.bench.harness", "sink", "--listen", "127.0.0.1:0"]
        elif kind == "rtp2ws":
            if out_dir is None:
                self._tmp = tempfile.mkdtemp(prefix="rtp2ws-bench-sink-")
                out_dir = self._tmp
            cmd = [sys.executable, "-m", "rtp2ws.cli", "sink", "--listen", "127.0.0.1:0", "--out-dir", out_dir]
        else:
            raise ValueError(f"unknown sink {kind!r}: discard or rtp2ws")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if "ws://" not in line:
            self.proc.kill()
            raise RuntimeError(f"the {kind} sink did not start: {line!r}")
        url = line.split()[-1]
        self.url = url if url.rstrip("/").endswith("audio") else url.rstrip("/") + "/audio"

    def stop(self) -> dict | None:
        """Stop the sink; the discard sink's counters (connections, frames, bytes)."""
        stats = None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=30)
            for line in out.splitlines():
                if line.startswith("{"):
                    stats = json.loads(line)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
        return stats


# =========================================================================== measurement helpers

def peak_rss_bytes() -> int:
    """This process's RSS high-water mark (VmHWM).  Not ``ru_maxrss``: across
    fork/exec that carries the parent's peak into the child."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # pragma: no cover - not Linux
        try:
            import psutil
            return psutil.Process().memory_info().rss
        except ImportError:
            return 0


class MemoryProbe:
    """Samples RSS once, when capture time reaches ``at`` (all calls active)."""

    def __init__(self, at: float | None) -> None:
        self.at = at
        self.rss: int | None = None
        self.when: float | None = None

    def __call__(self, now: float) -> None:
        if self.rss is None and self.at is not None and now >= self.at:
            self.rss = rss_bytes()
            self.when = now


def _probe_sink(inner, probe: MemoryProbe):
    from ..pipeline.sink import Forward

    class _Probe(Forward):
        def tick(self, now):
            probe(now)
            self.inner.tick(now)

    return _Probe(inner)


# Per-stage attribution of cProfile self time: module (file stem, or package
# directory for third-party code) -> stage.  Functions that are in none of these
# (builtins, numpy, most of the standard library) are charged to their callers.
STAGES = ("capture", "decode", "sip_sdp", "rtp_jitter", "codec", "wav_output", "websocket", "other")
_MODULE_STAGE = {      # rtp2ws's subpackage (or subpackage/module) -> stage
    "capture": "capture", "net": "decode",
    "signalling": "sip_sdp", "signalling/correlator": "rtp_jitter",
    "media": "rtp_jitter", "pipeline": "rtp_jitter", "fastpath": "rtp_jitter",
    "codec": "codec",
    "sinks/wav": "wav_output", "wave": "wav_output",
    "sinks/streams": "websocket", "ws": "websocket",
    "run": "other", "bench": "other", "reference_pipeline": "other",
}
_PACKAGE_STAGE = {"websockets": "websocket", "asyncio": "websocket", "uvloop": "websocket",
                  "dpkt": None, "json": "websocket"}
_DPKT_STAGE = {"sip": "sip_sdp", "http": "sip_sdp", "rtp": "rtp_jitter", "ethernet": "decode", "ip": "decode",
               "udp": "decode", "dpkt": "decode", "ip6": "decode", "compat": "decode"}
_BUILTIN_STAGE = (("audioop", "codec"), ("pcap", "capture"), ("_fastpath", "capture"), ("uvloop", "websocket"),
                  ("_native", "codec"), ("_asyncio", "websocket"), ("websockets", "websocket"), ("select.epoll", "websocket"))


def _stage_of(key) -> str | None:
    filename, _, name = key
    if filename == "~":
        for needle, stage in _BUILTIN_STAGE:
            if needle in name:
                return stage
        return None
    p = Path(filename)
    parts = p.parts
    stem = p.stem
    if "rtp2ws" in parts[-3:-1]:
        if stem == "harness" and name == "_run_ws":
            return "websocket"          # drives the event loop: uvloop's own work shows up here
        sub = parts[-2]
        return _MODULE_STAGE.get(f"{sub}/{stem}", _MODULE_STAGE.get(sub, "other"))
    if "dpkt" in parts:
        return _DPKT_STAGE.get(stem, "decode")
    for pkg, stage in _PACKAGE_STAGE.items():
        if pkg in parts and stage:
            return stage
    if stem in ("reference_pipeline", "wave"):
        return _MODULE_STAGE[stem]
    return None


def stage_seconds(stats) -> dict:
    """CPU seconds per stage from a ``pstats.Stats``: a function's self time goes to
    its module's stage, or is split among its callers' stages (by the self time
    spent under each caller) when its module is no stage of its own."""
    raw = stats.stats
    memo: dict = {}

    def shares(key, depth=0) -> dict:
        if key in memo:
            return memo[key]
        stage = _stage_of(key)
        if stage is not None:
            memo[key] = {stage: 1.0}
            return memo[key]
        memo[key] = {"other": 1.0}          # cycle guard
        entry = raw.get(key)
        callers = entry[4] if entry else {}
        if not callers or depth > 40:
            return memo[key]
        total = sum(max(v[2], 0.0) for v in callers.values())
        out: dict = {}
        for ck, v in callers.items():
            w = (max(v[2], 0.0) / total) if total > 0 else 1.0 / len(callers)
            for st, f in shares(ck, depth + 1).items():
                out[st] = out.get(st, 0.0) + w * f
        memo[key] = out or {"other": 1.0}
        return memo[key]

    result = {s: 0.0 for s in STAGES}
    for key, (_cc, _nc, tt, _ct, _callers) in raw.items():
        if tt <= 0:
            continue
        for st, f in shares(key).items():
            result[st] = result.get(st, 0.0) + tt * f
    return result


def _top_functions(stats, n: int = 12) -> list:
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:n]
    out = []
    for (filename, line, name), (_cc, nc, tt, ct, _c) in rows:
        where = name if filename == "~" else f"{Path(filename).parent.name}/{Path(filename).name}:{line}({name})"
        out.append({"function": where, "calls": nc, "self_s": round(tt, 4), "cumulative_s": round(ct, 4)})
    return out


class _Profiles:
    """cProfile, one profiler per thread, on each thread's own CPU clock."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.profilers = []

    def start(self):
        if not self.enabled:
            return None
        import cProfile

        p = cProfile.Profile(time.thread_time)
        self.profilers.append(p)
        p.enable()
        return p

    def stats(self):
        import pstats

        if not self.profilers:
            return None
        st = pstats.Stats(self.profilers[0])
        for p in self.profilers[1:]:
            st.add(p)
        return st


# =========================================================================== latency stamps

class LatencyRecorder:
    """Capture-to-socket latency of audio frames at ``--speed realtime``.

    A frame's capture time is that of the packet that brought its last sample:
    the leg's newest packet when the audio was handed on, less one packet time
    for every whole packet of audio handed on after the frame's end, so that a
    frame gathered with others (``Config.flush_ms``) counts the time it waited
    for them.  It becomes a wall
    time through the pacer's origin (the first packet's capture time and the
    monotonic time it was fed); the frame is done right after the
    ``transport.write`` that carried it.  Samples are kept in seconds."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self.origin: tuple[float, float] | None = None     # (capture ts, monotonic)
        self.samples: list[float] = []
        self.stamps: list[float] = []                      # the capture time of each sample
        self.by_pcm: dict[int, tuple] = {}                 # loop thread: id(pcm) -> (capture ts, lag)

    def sent(self, capture_ts: float) -> None:
        now = time.monotonic()
        if self.origin is not None:
            ts0, w0 = self.origin
            self.samples.append(now - (w0 + (capture_ts - ts0) / self.speed))
            self.stamps.append(capture_ts)


def _latency_classes():
    from collections import deque

    from ..run.replay import Pacer
    from ..ws.sender import Sender
    from ..ws.bridge import LoopBridge
    from ..sinks.streams import RATE, Audio, StreamSink

    class StampedAudio(Audio):
        """An Audio op that also carries ``ts``, the capture time of its newest packet,
        ``lag``, the samples per channel handed on after the op's end with it, and
        ``packet``, the samples (16 kHz) of the leg's newest packet."""
        lag = 0
        packet = 320

    class StampingStreamSink(StreamSink):
        def __init__(self, **kw) -> None:
            super().__init__(**kw)
            self._tick_now = 0.0

        def leg_audio(self, call, leg, pcm):
            ops = self.ops
            before = len(ops)
            super().leg_audio(call, leg, pcm)
            if len(ops) > before:
                ts = leg.last_arrival or self._tick_now
                s = self._legs.get((call.key, leg.tag))
                lag = s.pending_bytes // 2 if s is not None else 0      # kept for the next frame
                packet = 2 * leg.last_packet_samples or self.frame
                for i in range(len(ops) - 1, before - 1, -1):
                    op = ops[i]
                    if type(op) is Audio:
                        stamped = StampedAudio(*op)
                        stamped.ts = ts
                        stamped.lag = lag
                        stamped.packet = packet
                        ops[i] = stamped
                        lag += len(op.pcm) // 2

        def tick(self, now):
            self._tick_now = now
            super().tick(now)

        def take_ops(self):
            ops = super().take_ops()
            for i, op in enumerate(ops):
                if type(op) is Audio:           # cut at a tick or at the end of a call
                    stamped = StampedAudio(*op)
                    stamped.ts = self._tick_now
                    ops[i] = stamped
            return ops

    class StampingBridge(LoopBridge):
        recorder: LatencyRecorder

        def _apply(self, ops):
            by_pcm = self.recorder.by_pcm
            for op in ops:
                if isinstance(op, StampedAudio):
                    by_pcm[id(op.pcm)] = (op.ts, op.lag, op.packet)
            try:
                super()._apply(ops)
            finally:
                by_pcm.clear()

    class StampingSender(Sender):
        recorder: LatencyRecorder

        def open_stream(self, stream_id, start, *, channels=1):
            st = super().open_stream(stream_id, start, channels=channels)
            rec = self.recorder
            pending: deque = deque()          # (offset of a frame, capture ts), in stream order
            send_audio, step = st.send_audio, st.frame_samples

            def stamped_send_audio(pcm):       # a run: one stamp per frame of it
                stamp = rec.by_pcm.get(id(pcm))
                off = st.offset
                send_audio(pcm)
                if stamp is not None:
                    ts, lag, packet = stamp
                    end = st.offset
                    pending.extend((o, ts - (lag + end - min(o + step, end)) // packet * packet / RATE)
                                   for o in range(off, end, step))

            def written(first, end):           # after the transport.write that carried [first, end)
                while pending and pending[0][0] < end:
                    off, ts = pending.popleft()
                    if off >= first:           # not dropped before it was sent
                        rec.sent(ts)

            st.send_audio = stamped_send_audio
            st.on_write = written
            return st

    class StampingPacer(Pacer):
        recorder: LatencyRecorder

        def delay(self, ts):
            d = super().delay(ts)
            if self.recorder.origin is None:
                self.recorder.origin = self.origin or (ts, time.monotonic())
            return d

    return StampingStreamSink, StampingBridge, StampingSender, StampingPacer


# =========================================================================== one run (child process)

def _reference_module():
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "reference_pipeline.py"
    if not path.exists():
        raise RuntimeError(f"the reference pipeline is not there: {path} (run from a source checkout)")
    spec = importlib.util.spec_from_file_location("reference_pipeline", path)
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
    except ModuleNotFoundError as e:     # dpkt: an extra
        raise RuntimeError(f"the reference pipeline needs {e.name}: pip install 'rtp2ws[bench]'") from None
    return mod


def run_one(spec: dict) -> dict:
    """Replay one capture through one configuration in this process and measure it.

    ``spec``: config, capture, out_dir, url (WebSocket configs), speed (None: max),
    profile (bool), latency (bool), mem_at (capture time for the RSS sample)."""
    from ..pipeline.pipeline import Config
    from ..run.replay import replay
    from ..ws.sender import raise_fd_limit
    from ..sinks.wav import WavSink

    config = spec["config"]
    capture = spec["capture"]
    out_dir = spec.get("out_dir") or tempfile.mkdtemp(prefix="rtp2ws-bench-")
    speed = spec.get("speed")
    raise_fd_limit(65536)
    probe = MemoryProbe(spec.get("mem_at"))
    profiles = _Profiles(bool(spec.get("profile")))
    reference = _reference_module() if config.startswith("reference") else None
    if config in WS_CONFIGS:
        import websockets.asyncio.client  # noqa: F401  (imported before the clock starts)

    extra: dict = {"commit": git_commit()}      # the code this child imported
    if reference is None:
        from ..run import gcpolicy

        gcpolicy.apply()                        # as the rtp2ws command does
    baseline = rss_bytes()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    w0 = time.monotonic()
    main_prof = profiles.start()
    try:
        if config in ("wav", "stereo_wav"):
            sink = WavSink(out_dir, stereo=config == "stereo_wav")
            result = replay(capture, _probe_sink(sink, probe), Config(deliver_ms=1000))   # as `rtp2ws replay --out-dir` does
            sink.close(result.summary())
            counts = {"packets": result.packets, "calls": result.calls, "legs": result.legs}
        elif config in WS_CONFIGS:
            frame_ms, stereo = WS_CONFIGS[config]
            result, sent, latency, flush_ms = _run_ws(capture, spec["url"], frame_ms, stereo, speed, probe, profiles,
                                            bool(spec.get("latency")), spec.get("flush_ms"))
            counts = {"packets": result.packets, "calls": result.calls, "legs": result.legs}
            extra["sent"] = sent
            extra["flush_ms"] = flush_ms
            if latency is not None:
                extra["latency_samples"], extra["latency_stamps"] = latency
        elif reference is not None:
            stats = reference.run(capture, url=spec.get("url") if config == "reference" else None,
                                  out_dir=out_dir if config == "reference_wav" else None, probe=probe)
            counts = {"packets": stats["packets"], "calls": stats["calls"], "legs": stats["legs"]}
            extra["sent"] = {"sent_frames": stats.get("sent_frames", 0)}
        else:
            raise ValueError(f"unknown configuration {config!r}")
    finally:
        if main_prof is not None:
            main_prof.disable()
    wall = time.monotonic() - w0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    out = {
        "config": config,
        "user_s": r1.ru_utime - r0.ru_utime,
        "sys_s": r1.ru_stime - r0.ru_stime,
        "wall_s": wall,
        "peak_rss_bytes": peak_rss_bytes(),
        "baseline_rss_bytes": baseline,
        "steady_rss_bytes": probe.rss,
        "steady_rss_at": probe.when,
        **counts,
        **extra,
    }
    st = profiles.stats()
    if st is not None:
        out["stage_seconds"] = stage_seconds(st)
        out["top_functions"] = _top_functions(st)
    if not spec.get("keep_output") and not spec.get("out_dir"):
        shutil.rmtree(out_dir, ignore_errors=True)
    return out


def _run_ws(capture, url, frame_ms, stereo, speed, probe, profiles, latency, flush_ms=None):
    """``rtp2ws replay --ws-url`` (``run.replay.stream_replay``, as the cli runs it),
    with the benchmark's probes: memory sample, profilers in both threads, latency stamps.
    Returns (ReplayResult, sender statistics, latency samples and stamps or None, the
    flush_ms used)."""
    from contextlib import contextmanager

    from ..pipeline.pipeline import FLUSH_MS, Config, deliver_ms
    from ..ws.sender import SenderConfig
    from ..run.replay import stream_replay
    from ..sinks.streams import StreamSink

    cfg = SenderConfig(url=url)
    config = Config(deliver_ms=deliver_ms(stream=True, paced=bool(speed), max_buffer_ms=cfg.max_buffer_ms),
                    flush_ms=(FLUSH_MS if flush_ms is None else flush_ms) if speed else 0)
    recorder = None
    classes = {}
    stream_cls = StreamSink
    if latency:
        recorder = LatencyRecorder(speed or 1.0)
        stream_cls, bridge_cls, sender_cls, pacer_cls = _latency_classes()
        for cls in (bridge_cls, sender_cls, pacer_cls):
            cls.recorder = recorder
        classes = {"bridge_cls": bridge_cls, "sender_cls": sender_cls, "pacer_cls": pacer_cls}
    streams = stream_cls(frame_ms=frame_ms, stereo=stereo, hold_s=config.jitter_depth + 1.0)

    @contextmanager
    def profiled():
        prof = profiles.start()
        try:
            yield
        finally:
            if prof is not None:
                prof.disable()

    result, stats = stream_replay(capture, config, cfg, streams, speed=speed,
                                  wrap_sink=lambda sink: _probe_sink(sink, probe), worker=profiled, **classes)
    latency = (recorder.samples, recorder.stamps) if recorder is not None else None
    return result, stats, latency, config.flush_ms


def _child_main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    try:
        out = run_one(spec)
    except Exception as e:  # noqa: BLE001 - reported to the parent, which shows it
        import traceback

        out = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
    Path(spec["result"]).write_text(json.dumps(out))
    return 0 if "error" not in out else 1


def measure(config: str, capture: str, info: dict, *, url: str | None = None, speed: float | None = None,
            profile: bool = False, latency: bool = False, flush_ms: int | None = None,
            timeout: float = 3600.0) -> dict:
    """Run ``run_one`` in a child process (so that each configuration starts from
    a fresh interpreter and its CPU and peak RSS are its own) and derive the metrics."""
    with tempfile.TemporaryDirectory(prefix="rtp2ws-bench-") as tmp:
        spec = {"config": config, "capture": capture, "url": url, "speed": speed, "profile": profile,
                "latency": latency, "flush_ms": flush_ms, "mem_at": info.get("mem_sample_ts"),
                "out_dir": os.path.join(tmp, "out"), "result": os.path.join(tmp, "result.json")}
        spec_path = os.path.join(tmp, "spec.json")
        Path(spec_path).write_text(json.dumps(spec))
        c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run([sys.executable, "-m", "rtp2ws.bench.harness", "child", spec_path], timeout=timeout,
                              check=False)
        c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        try:
            out = json.loads(Path(spec["result"]).read_text())
        except (OSError, ValueError):
            out = {"error": f"the child exited with status {proc.returncode} and no result"}
    if "error" in out:
        raise RuntimeError(f"{config}: {out['error']}\n{out.get('traceback', '')}")
    out["process_cpu_s"] = (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)
    cpu = out["user_s"] + out["sys_s"]
    call_seconds = info["calls"] * info["seconds"]
    out.update({
        "calls": info["calls"], "seconds": info["seconds"], "call_seconds": call_seconds, "cpu_s": cpu,
        "calls_per_core": call_seconds / cpu if cpu > 0 else None,
        "us_per_packet": cpu / out["packets"] * 1e6 if out.get("packets") else None,
        "realtime_factor": info["seconds"] / out["wall_s"] if out["wall_s"] > 0 else None,
    })
    if out.get("steady_rss_bytes") and info.get("active_at_sample"):
        out["active_calls"] = info["active_at_sample"]
        out["mem_per_call_kb"] = (out["steady_rss_bytes"] - out["baseline_rss_bytes"]) / info["active_at_sample"] / 1024
    samples = out.pop("latency_samples", None)
    stamps = out.pop("latency_stamps", None)
    if samples is not None:
        out["latency"] = latency_summary(samples)
        # with every call set up (handshakes done): the figure for a steady call load
        steady = [d for d, t in zip(samples, stamps) if info["steady_from_ts"] + 1.0 <= t < info["steady_until_ts"]]
        out["latency"]["steady"] = latency_summary(steady)
    return out


def latency_summary(samples: list[float]) -> dict:
    if not samples:
        return {"frames": 0}
    a = np.sort(np.asarray(samples)) * 1000.0
    return {"frames": len(a), "p50_ms": round(float(np.percentile(a, 50)), 2),
            "p90_ms": round(float(np.percentile(a, 90)), 2), "p99_ms": round(float(np.percentile(a, 99)), 2),
            "max_ms": round(float(a[-1]), 2), "min_ms": round(float(a[0]), 2)}


# =========================================================================== the benchmark

def default_seconds(calls: int, quick: bool = False) -> float:
    """Call length for a sweep point: 2000 call-seconds per point, 2..30 s per call
    (--quick: 300 call-seconds, 2..10 s), so that the default sweep up to 2,000
    calls runs in minutes.  Short calls carry their set-up (SIP, WebSocket
    handshakes) over fewer seconds than real calls do, so large N at 2 s is a
    little pessimistic; ``--seconds`` fixes one length for every N."""
    budget = 300.0 if quick else 2000.0
    lo, hi = (2.0, 10.0) if quick else (2.0, 30.0)
    return float(min(hi, max(lo, round(budget / calls))))


@dataclass
class BenchOptions:
    calls: int | None = None
    seconds: float | tuple | None = None    # one call length, or several (lengths_of)
    configs: tuple = DEFAULT_CONFIGS
    sweep: tuple | None = None
    latency: bool = False
    latency_calls: int | None = None      # None: LATENCY_CALLS
    latency_seconds: float = 20.0
    flush_ms: int | None = None           # None: the default (pipeline.FLUSH_MS)
    latency_config: str = "ws20"
    profile: bool = True
    profile_calls: int = 100
    profile_seconds: float = 5.0
    out: str = "benchmarks/results"
    cache: str | None = None
    quick: bool = False
    loss: float = 0.0
    reorder: float = 0.0
    law: str = "alaw"
    seed: int = 1
    sink: str = "discard"


def git_commit() -> str | None:
    """The source checkout's commit (``+dirty`` with uncommitted changes to tracked files)."""
    try:
        root = Path(__file__).resolve().parents[2]
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=False).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=False).stdout.strip()
        return (head + ("+dirty" if dirty else "")) or None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info() -> dict:
    model = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    from ..speedups import load_native

    commit = git_commit()
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(), "commit": commit,
            "platform": platform.platform(), "native": load_native() is not None,
            "load_avg": os.getloadavg() if hasattr(os, "getloadavg") else None}


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _measure_with_sink(opts: BenchOptions, config: str, capture: str, info: dict, **kw) -> dict:
    needs_sink = config in WS_CONFIGS or config == "reference"
    sink = SinkProcess(opts.sink) if needs_sink else None
    try:
        res = measure(config, capture, info, url=sink.url if sink else None, **kw)
    finally:
        sink_stats = sink.stop() if sink else None
    if sink_stats is not None:
        res["sink"] = sink_stats
    return res


def run_bench(opts: BenchOptions) -> dict:
    configs = tuple(opts.configs)
    for c in configs:
        if c not in CONFIGS:
            raise ValueError(f"unknown configuration {c!r} (choose from {', '.join(CONFIGS)})")
    if opts.sweep:
        sweep = tuple(opts.sweep)
    elif opts.calls:
        sweep = (opts.calls,)
    else:
        sweep = QUICK_SWEEP if opts.quick else DEFAULT_SWEEP
    out_dir = Path(opts.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = Path(opts.cache) if opts.cache else out_dir / "captures"
    gen = {"loss": opts.loss, "reorder": opts.reorder, "seed": opts.seed, "law": opts.law}
    started = time.monotonic()
    doc = {"version": 1, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine_info(),
           "settings": {"configs": list(configs), "sweep": list(sweep), "sink": opts.sink, **gen,
                        "quick": opts.quick, "seconds": list(lengths_of(opts.seconds))},
           "runs": [], "ratios": [], "stages": {}, "latency": None}

    for n in sweep:
        for seconds in lengths_of(opts.seconds) or (default_seconds(n, opts.quick),):
            t = time.monotonic()
            capture, info = cached_capture(cache, n, seconds, **gen)
            _log(f"N={n}: {seconds:g} s calls, {info['packets']} packets, {info['bytes'] / 1e6:.0f} MB "
                 f"({time.monotonic() - t:.1f} s to generate or find)")
            for config in configs:
                res = _measure_with_sink(opts, config, capture, info)
                doc["runs"].append(res)
                _log(f"  {config:<14} {res['calls_per_core']:8.0f} calls/core  {res['cpu_s']:7.2f} s CPU  "
                     f"{res['wall_s']:7.2f} s wall  peak {res['peak_rss_bytes'] / 2**20:6.0f} MB")
            for mine, ref in REFERENCE_OF.items():
                a = _find(doc["runs"], mine, n, seconds)
                b = _find(doc["runs"], ref, n, seconds)
                if a and b and a["calls_per_core"] and b["calls_per_core"]:
                    doc["ratios"].append({"calls": n, "seconds": seconds, "config": mine, "reference": ref,
                                          "ratio": a["calls_per_core"] / b["calls_per_core"]})
    doc["cost_model"] = cost_model(doc["runs"])

    if opts.profile:
        pn = min(max(sweep), opts.profile_calls)
        ps = lengths_of(opts.seconds)[0] if opts.quick and opts.seconds else \
            (3.0 if opts.quick else opts.profile_seconds)
        capture, info = cached_capture(cache, pn, ps, **gen)
        _log(f"profile: N={pn}, {ps:g} s calls")
        for config in configs:
            res = _measure_with_sink(opts, config, capture, info, profile=True)
            secs = res.get("stage_seconds") or {}
            total = sum(secs.values()) or 1.0
            doc["stages"][config] = {
                "calls": pn, "seconds": info["seconds"], "profiled_cpu_s": total,
                "shares": {k: v / total for k, v in secs.items()},
                "top_functions": res.get("top_functions", []),
            }

    if opts.latency:
        ln = opts.latency_calls or LATENCY_CALLS
        ls = opts.latency_seconds if not opts.quick else min(opts.latency_seconds, 5.0)
        capture, info = cached_capture(cache, ln, ls, **gen)
        _log(f"latency: {opts.latency_config} at --speed realtime, N={ln}, {ls:g} s calls")
        lc = opts.latency_config
        res = _measure_with_sink(opts, lc, capture, info, speed=1.0, latency=True, flush_ms=opts.flush_ms)
        doc["latency"] = dict(res.get("latency") or {}, config=lc, calls=ln, seconds=info["seconds"],
                              flush_ms=res["flush_ms"],
                              cpu_s=res["cpu_s"], core_load=res["cpu_s"] / res["wall_s"],
                              # what a live host carries: calls at realtime per core of CPU they took
                              realtime_calls_per_core=ln * info["seconds"] / res["cpu_s"],
                              mem_per_call_kb=res.get("mem_per_call_kb"),
                              peak_rss_mb=res["peak_rss_bytes"] / 2**20)
    doc["elapsed_s"] = time.monotonic() - started
    doc["summary"] = {c: _find(doc["runs"], c, max(sweep))["calls_per_core"] for c in configs
                      if _find(doc["runs"], c, max(sweep))}
    paths = write_results(doc, out_dir)
    doc["files"] = paths
    return doc


def _find(runs: list, config: str, calls: int, seconds: float | None = None) -> dict | None:
    """The run of ``config`` at ``calls`` (and ``seconds``; None: the longest calls)."""
    found = [r for r in runs if r["config"] == config and r["calls"] == calls
             and (seconds is None or r["seconds"] == seconds)]
    return max(found, key=lambda r: r["seconds"]) if found else None


def lengths_of(seconds) -> tuple[float, ...]:
    """``BenchOptions.seconds`` as a tuple of call lengths (empty: the default per N)."""
    if not seconds:
        return ()
    return tuple(seconds) if isinstance(seconds, (tuple, list)) else (float(seconds),)


SIZING_SECONDS = 180.0     # a contact-centre call: about three minutes of talk


def cost_model(runs: list) -> list[dict]:
    """Where one configuration ran at one N with calls of two or more lengths L, its CPU
    is fitted (least squares) as N x (setup + L x per_second): what a call costs to set
    up and tear down (SIP, stream handshakes, files), and what each second of it costs
    once running.  1 / per_second is what a core carries at steady state, and
    ``at_sizing`` the calls per core for calls of ``SIZING_SECONDS``."""
    groups: dict = {}
    for r in runs:
        if r.get("cpu_s"):
            groups.setdefault((r["config"], r["calls"]), []).append((r["seconds"], r["cpu_s"] / r["calls"]))
    out = []
    for (config, n), pts in groups.items():
        if len({L for L, _ in pts}) < 2:
            continue
        xs = np.array([L for L, _ in pts])
        ys = np.array([c for _, c in pts])
        per_second, setup = np.polyfit(xs, ys, 1)
        if per_second <= 0:
            continue
        out.append({"config": config, "calls": n, "lengths": sorted({float(L) for L in xs}),
                    "setup_ms": float(setup) * 1e3, "per_call_second_us": float(per_second) * 1e6,
                    "steady_calls_per_core": float(1.0 / per_second),
                    "sizing_seconds": SIZING_SECONDS,
                    "at_sizing": float(SIZING_SECONDS / (max(setup, 0.0) + SIZING_SECONDS * per_second))})
    return out


def format_table(doc: dict) -> str:
    lines = []
    m = doc["machine"]
    lines.append(f"rtp2ws bench ({m.get('commit') or 'unknown commit'}): {m['cpu']}, {m['cores']} cores, "
                 f"Python {m['python']}, "
                 f"native {'on' if m['native'] else 'off'}, sink: {doc['settings']['sink']}")
    lines.append("")
    hdr = (f"{'config':<14}{'calls':>7}{'call s':>8}{'CPU s':>9}{'calls/core':>12}{'us/pkt':>9}"
           f"{'x realtime':>11}{'peak RSS MB':>13}{'KB/call':>9}")
    lines.append(hdr)
    lines.append("-" * len(hdr))
    for r in doc["runs"]:
        mem = r.get("mem_per_call_kb")
        lines.append(f"{r['config']:<14}{r['calls']:>7}{r['seconds']:>8g}{r['cpu_s']:>9.2f}"
                     f"{r['calls_per_core']:>12.0f}{r['us_per_packet']:>9.1f}{r['realtime_factor']:>11.1f}"
                     f"{r['peak_rss_bytes'] / 2**20:>13.0f}{(f'{mem:.0f}' if mem is not None else '-'):>9}")
    commits = sorted({r.get("commit") or "?" for r in doc["runs"]})
    if len(commits) > 1:
        lines.append(f"WARNING: the source changed during the run; runs used commits {', '.join(commits)}")
    if doc["ratios"]:
        lines.append("")
        for x in doc["ratios"]:
            lines.append(f"N={x['calls']}, {x.get('seconds', 0):g} s calls: {x['config']} / {x['reference']} = "
                         f"{x['ratio']:.2f}x")
    if doc.get("cost_model"):
        lines.append("")
        lines.append("cost per call, fitted over call lengths (CPU = N x (set-up + seconds x per second)):")
        hdr2 = (f"{'config':<14}{'calls':>7}{'lengths s':>14}{'set-up ms':>11}{'us/call-s':>11}"
                f"{'steady calls/core':>19}{f'at {SIZING_SECONDS:g} s calls':>17}")
        lines.append(hdr2)
        for m in doc["cost_model"]:
            lines.append(f"{m['config']:<14}{m['calls']:>7}{','.join(f'{L:g}' for L in m['lengths']):>14}"
                         f"{m['setup_ms']:>11.2f}{m['per_call_second_us']:>11.1f}"
                         f"{m['steady_calls_per_core']:>19.0f}{m['at_sizing']:>17.0f}")
    if doc["stages"]:
        lines.append("")
        names = [s for s in STAGES if any(v["shares"].get(s, 0) > 0.0005 for v in doc["stages"].values())]
        lines.append("CPU by stage (cProfile self time, %):")
        lines.append(f"{'config':<14}" + "".join(f"{s:>12}" for s in names))
        for config, v in doc["stages"].items():
            lines.append(f"{config:<14}" + "".join(f"{100 * v['shares'].get(s, 0):>12.1f}" for s in names))
    lat = doc.get("latency")
    if lat:
        lines.append("")
        if lat.get("frames"):
            lines.append(f"latency capture -> socket ({lat.get('config', 'ws20')}, --speed realtime, "
                         f"--flush-ms {lat.get('flush_ms')}, "
                         f"{lat['calls']} calls x {lat['seconds']:g} s, {lat['core_load'] * 100:.0f}% of a core, "
                         f"{lat.get('realtime_calls_per_core', 0):.0f} realtime calls per core):")
            lines.append(f"  all frames:        p50 {lat['p50_ms']} ms, p90 {lat['p90_ms']} ms, p99 {lat['p99_ms']} ms, "
                         f"max {lat['max_ms']} ms ({lat['frames']} frames)")
            st = lat.get("steady") or {}
            if st.get("frames"):
                lines.append(f"  every call set up: p50 {st['p50_ms']} ms, p90 {st['p90_ms']} ms, "
                             f"p99 {st['p99_ms']} ms, max {st['max_ms']} ms ({st['frames']} frames)")
            if lat.get("mem_per_call_kb") is not None:
                lines.append(f"memory per active call at realtime: {lat['mem_per_call_kb']:.0f} KB")
        else:
            lines.append("latency: no frames measured")
    return "\n".join(lines)


def write_results(doc: dict, out_dir: Path) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": str(out_dir / "calls_per_core.json"), "png": str(out_dir / "calls_per_core.png"),
             "table": str(out_dir / "calls_per_core.txt")}
    table = format_table(doc)
    Path(paths["table"]).write_text(table + "\n")
    Path(paths["json"]).write_text(json.dumps(doc, indent=2, default=float) + "\n")
    plot(doc, paths["png"])
    return paths


def plot(doc: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    series = []                       # (config, call length): one line each when lengths were given
    fixed = bool(doc["settings"].get("seconds"))
    for r in doc["runs"]:
        key = (r["config"], r["seconds"] if fixed else None)
        if key not in series:
            series.append(key)
    for config, seconds in series:
        pts = sorted((r["calls"], r["calls_per_core"]) for r in doc["runs"]
                     if r["config"] == config and (seconds is None or r["seconds"] == seconds))
        xs, ys = zip(*pts)
        style = "--" if config.startswith("reference") else "-"
        label = config if seconds is None or len({s for _, s in series}) == 1 else f"{config}, {seconds:g} s"
        ax.plot(xs, ys, style, marker="o", label=label)
    ax.set_xscale("log")
    lengths: dict = {}
    for r in doc["runs"]:
        lengths.setdefault(r["calls"], set()).add(r["seconds"])
    ax.set_xticks(sorted(lengths))
    ax.set_xticklabels([f"{n}\n{next(iter(ls)):g} s" if len(ls) == 1 else f"{n}"     # else: in the legend
                        for n, ls in sorted(lengths.items())], fontsize=8)
    ax.minorticks_off()
    ax.set_xlabel("concurrent calls (N) and audio per call")
    ax.set_ylabel("calls per core (call seconds / CPU second)")
    m = doc["machine"]
    ax.set_title(f"rtp2ws calls per core, --speed max ({m.get('commit') or 'unknown commit'})\n"
                 f"{m['cpu'][:60]}, {m['cores']} cores", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# =========================================================================== command line

def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError("a comma-separated list of numbers, e.g. 10,100,1000") from None
    if not values or min(values) < 1 or max(values) > 100000:
        raise argparse.ArgumentTypeError("numbers of calls must be from 1 to 100000")
    return values


def _float_list(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError("a comma-separated list of seconds, e.g. 10,60") from None
    if not values or not all(0 < v <= 86400 for v in values):      # also refuses nan and inf
        raise argparse.ArgumentTypeError("call lengths must be more than 0 and at most 86400 s")
    return values


def _config_list(text: str) -> tuple[str, ...]:
    values = tuple(x.strip() for x in text.split(",") if x.strip())
    bad = [v for v in values if v not in CONFIGS]
    if bad or not values:
        raise argparse.ArgumentTypeError(f"unknown configuration(s) {', '.join(bad) or '(none)'}; "
                                         f"choose from {', '.join(CONFIGS)}")
    return values


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--calls", type=whole(1, 100000), help="one number of concurrent calls (instead of the sweep)")
    p.add_argument("--seconds", type=_float_list,
                   help="audio per call, the same for every N; several (e.g. 10,60) also fit each "
                        "configuration's set-up cost per call and cost per call-second; default per N: "
                        "2000/N clamped to 2..30 s (--quick: 300/N, 2..10 s)")
    p.add_argument("--configs", type=_config_list, default=DEFAULT_CONFIGS,
                   help=f"comma-separated, from {','.join(CONFIGS)} (default {','.join(DEFAULT_CONFIGS)})")
    p.add_argument("--sweep", type=_int_list,
                   help=f"numbers of calls to measure (default {','.join(map(str, DEFAULT_SWEEP))}; "
                        f"--quick {','.join(map(str, QUICK_SWEEP))})")
    p.add_argument("--latency", action="store_true",
                   help="also measure capture-to-socket latency and realtime capacity (--latency-config at "
                        "--speed realtime)")
    p.add_argument("--latency-calls", type=whole(1, 100000),
                   help=f"calls in the latency run (default {LATENCY_CALLS})")
    p.add_argument("--latency-seconds", type=number(0, 86400, lo_open=True), default=20.0, help="length of the latency run (default 20)")
    p.add_argument("--flush-ms", type=whole(0, 1000), help="--flush-ms of the latency run (default: rtp2ws's own)")
    p.add_argument("--latency-config", choices=tuple(WS_CONFIGS), default="ws20",
                   help="configuration of the latency run (default ws20)")
    p.add_argument("--no-profile", dest="profile", action="store_false", help="skip the per-stage profile runs")
    p.add_argument("--profile-calls", type=whole(1, 100000), default=100,
                   help="calls in the profile runs (default 100, 5 s each; never more than the sweep's largest N)")
    p.add_argument("--out", default="benchmarks/results",
                   help="directory for calls_per_core.{json,png,txt} (default benchmarks/results)")
    p.add_argument("--cache", help="directory for generated captures (default OUT/captures)")
    p.add_argument("--quick", action="store_true", help="a short run: small sweep, short calls")
    p.add_argument("--loss", type=number(0, 1), default=0.0, help="share of RTP packets dropped (e.g. 0.01)")
    p.add_argument("--reorder", type=number(0, 1), default=0.0, help="share of RTP packets delayed 25 ms (overtaken)")
    p.add_argument("--law", choices=("alaw", "ulaw"), default="alaw")
    p.add_argument("--seed", type=whole(0, 2 ** 32 - 1), default=1)
    p.add_argument("--sink", choices=("discard", "rtp2ws"), default="discard",
                   help="WebSocket server in its own process: a minimal discard server (default) or rtp2ws sink")


def options_from_args(args) -> BenchOptions:
    return BenchOptions(calls=args.calls, seconds=args.seconds, configs=args.configs, sweep=args.sweep,
                        latency=args.latency, latency_calls=args.latency_calls,
                        latency_seconds=args.latency_seconds, flush_ms=args.flush_ms,
                        latency_config=args.latency_config, profile=args.profile,
                        profile_calls=args.profile_calls, out=args.out, cache=args.cache, quick=args.quick,
                        loss=args.loss, reorder=args.reorder, law=args.law, seed=args.seed, sink=args.sink)


def cmd_bench(args) -> int:
    try:
        doc = run_bench(options_from_args(args))
    except (ValueError, RuntimeError) as e:
        print(f"rtp2ws: error: {e}", file=sys.stderr)
        return 2
    print(format_table(doc))
    print(f"\nresults: {doc['files']['json']}, {doc['files']['png']}, {doc['files']['table']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["child"]:
        return _child_main(argv[1])
    if argv[:1] == ["sink"]:
        sp = argparse.ArgumentParser(prog="python -m rtp2ws.bench.harness sink")
        sp.add_argument("--listen", default="127.0.0.1:0")
        a = sp.parse_args(argv[1:])
        host, _, port = a.listen.rpartition(":")
        from ..ws.bridge import new_event_loop

        loop = new_event_loop()
        try:
            loop.run_until_complete(_serve_discard(host or "127.0.0.1", int(port)))
        finally:
            loop.close()
        return 0
    p = argparse.ArgumentParser(prog="calls_per_core", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    return cmd_bench(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
