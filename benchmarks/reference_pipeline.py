"""The reference: the same job written the simple way, to measure rtp2ws against.

    python benchmarks/reference_pipeline.py CAPTURE (--ws-url URL [--realtime] | --out-dir DIR)
    python benchmarks/reference_pipeline.py --live IFACE (--ws-url URL | --out-dir DIR)

Per packet: pypcap hands over the frame, dpkt parses Ethernet/IP/UDP, SIP goes
through ``dpkt.sip`` (Call-ID, CSeq) and two regular expressions on the SDP
(``c=`` and ``m=audio``), RTP through ``dpkt.rtp``.  The destination address
of an SDP maps RTP to its call leg (sent to the callee's address: ``caller``).
Payloads are decoded with ``audioop.alaw2lin``/``ulaw2lin`` and taken to
16 kHz with ``audioop.ratecv`` (linear interpolation, state kept per leg).
Output: one connection per leg with ``websockets`` (JSON start, one binary
send per 20 ms frame, JSON end), opened on the leg's first audio and closed on
BYE; or one WAV per leg with the ``wave`` module.

Deliberately simple and correct enough: no jitter buffer (packets are played
in arrival order, losses just shorten the audio), no re-INVITEs, no TCP SIP,
no IPv6 or fragments.  It uses uvloop and no permessage-deflate, as rtp2ws
does, so the comparison is about the pipeline, not the event loop.  Python
3.13 removed ``audioop``: install ``audioop-lts`` there.

``--realtime`` (``run(..., realtime=True)``, WebSocket output) paces the
packets on the capture clock, as live capture would hand them over: the
first packet at once, every other one no earlier than its capture time after
the first packet's, on the monotonic clock (``Clock``).  The asyncio loop
just sleeps until the next packet is due; each 20 ms frame is still its own
``send``.  rtp2ws's ``--speed realtime`` (``run.replay.Pacer``) follows the
same clock from the same origin, with two differences: it hands on every
packet due within 2 ms together (up to 2 ms early, so that its fast path
takes them as one batch), where this one hands on none early; and this one
sleeps at least 1 ms at a time (uvloop's timers count whole milliseconds and
return at once from anything shorter, which would spin the loop), so a packet
may be handed on about a millisecond late.  How late the packets were handed
on is measured: ``behind_s`` (the last packet) and ``max_behind_s`` in the
result.  A reference that cannot keep up falls further behind with every
second of the capture.

``--live IFACE`` (``run(None, live=IFACE, ...)``) reads a network interface
instead of a file (``live_frames``: pypcap opened as ``rtp2ws live`` opens an
interface, buffered with a 1 ms timeout and its default kernel buffer, no filter:
in immediate mode an interface with GRO or TSO gives each packet a 64 KiB slot
and the buffer holds 1,023 packets, which a pipeline near a full core overflows), everything else as it is,
and says ``capturing on IFACE`` on stderr once the capture is open.  It runs
until SIGTERM, then ends the calls still open as at a file's end and prints
its result, with the kernel's counts (``kernel_drops``: packets the capture
buffer had no room for).  The handle is non-blocking and the loop waits in
``select`` while the buffer is empty: a blocking pypcap read of an idle
interface neither returns nor lets a signal handler run.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import select
import signal
import socket
import sys
import time
import wave

import dpkt
import pcap

try:
    import audioop
except ImportError:  # Python >= 3.13
    import audioop_lts as audioop  # type: ignore

SIP_PORT = 5060
RATE = 16000
FRAME_BYTES = RATE * 20 // 1000 * 2     # 20 ms of 16-bit mono
C_LINE = re.compile(r"^c=IN IP4 (\S+)", re.MULTILINE)
M_LINE = re.compile(r"^m=audio (\d+)", re.MULTILINE)
SAFE = re.compile(r"[^A-Za-z0-9._@+-]")


class Leg:
    def __init__(self, call_id: str, tag: str) -> None:
        self.call_id = call_id
        self.tag = tag
        self.state = None          # audioop.ratecv state
        self.buf = bytearray()
        self.ws = None
        self.wav = None
        self.packets = 0
        self.samples = 0

    def decode(self, rtp) -> bytes:
        if rtp.pt == 8:
            lin = audioop.alaw2lin(rtp.data, 2)
        elif rtp.pt == 0:
            lin = audioop.ulaw2lin(rtp.data, 2)
        else:
            return b""
        out, self.state = audioop.ratecv(lin, 2, 1, 8000, RATE, self.state)
        self.packets += 1
        return out


def parse_sdp(body: str):
    c = C_LINE.search(body)
    m = M_LINE.search(body)
    if c and m:
        return socket.inet_aton(c.group(1)), int(m.group(1))
    return None


def parse_sip(data: bytes):
    """(call_id, method or None, status or None, cseq method, sdp address) or None."""
    try:
        if data.startswith(b"SIP/2.0"):
            msg = dpkt.sip.Response(data)
            method, status = None, int(msg.status)
        else:
            msg = dpkt.sip.Request(data)
            method, status = msg.method, None
    except (dpkt.UnpackError, ValueError):
        return None
    h = msg.headers
    call_id = h.get("call-id") or h.get("i")
    if not call_id:
        return None
    cseq = (h.get("cseq") or "").split()
    body = msg.body.decode("latin-1") if msg.body else ""
    return call_id, method, status, cseq[-1] if cseq else "", parse_sdp(body) if body else None


class Pipeline:
    """SIP and RTP from frames; audio to ``emit(leg, pcm)``, call ends to ``ended(legs)``."""

    def __init__(self) -> None:
        self.by_addr: dict = {}        # (dst ip, dst port) -> Leg
        self.calls: dict = {}          # call_id -> {"offer", "answer", "legs"}
        self.packets = 0
        self.ncalls = 0
        self.nlegs = 0
        self.pcap_stats = None         # live: the kernel's (received, dropped, dropped by the interface)

    def frame(self, buf: bytes):
        """Returns ('audio', leg, pcm), ('end', legs) or None."""
        self.packets += 1
        eth = dpkt.ethernet.Ethernet(buf)
        ip = eth.data
        if not isinstance(ip, dpkt.ip.IP):
            return None
        udp = ip.data
        if not isinstance(udp, dpkt.udp.UDP):
            return None
        leg = self.by_addr.get((ip.dst, udp.dport))
        if leg is not None:
            rtp = dpkt.rtp.RTP(udp.data)
            return ("audio", leg, leg.decode(rtp))
        if udp.sport == SIP_PORT or udp.dport == SIP_PORT:
            return self.sip(udp.data)
        return None

    def sip(self, data: bytes):
        parsed = parse_sip(data)
        if parsed is None:
            return None
        call_id, method, status, cseq, sdp = parsed
        call = self.calls.get(call_id)
        if method == "INVITE" and call is None:
            call = self.calls[call_id] = {"offer": sdp, "answer": None, "legs": {}}
            self.ncalls += 1
        if call is None:
            return None
        if status == 200 and cseq == "INVITE" and sdp and not call["legs"]:
            call["answer"] = sdp
            # what is sent to the callee's address is the caller's audio, and vice versa
            for tag, addr in (("caller", call["answer"]), ("callee", call["offer"])):
                if addr:
                    leg = call["legs"][tag] = Leg(call_id, tag)
                    self.by_addr[addr] = leg
        elif method in ("BYE", "CANCEL"):
            return self.end(call_id)
        return None

    def end(self, call_id: str):
        call = self.calls.pop(call_id, None)
        if call is None:
            return None
        for addr in (call["offer"], call["answer"]):
            self.by_addr.pop(addr, None)
        legs = [leg for leg in call["legs"].values() if leg.packets]
        self.nlegs += len(legs)
        return ("end", legs)


class Clock:
    """The capture clock on the wall clock: a packet captured ``ts - ts0`` after the
    first is due that long after the first was handed on (``time.monotonic``)."""

    def __init__(self) -> None:
        self.origin = None         # (capture ts, monotonic) of the first packet
        self.behind = 0.0          # how late the latest packet was handed on, seconds
        self.max_behind = 0.0

    async def until(self, ts: float) -> None:
        now = time.monotonic()
        if self.origin is None:
            self.origin = (ts, now)
            return
        due = self.origin[1] + (ts - self.origin[0])
        while now < due:
            await asyncio.sleep(max(due - now, 0.001))
            now = time.monotonic()
        self.behind = now - due
        self.max_behind = max(self.max_behind, self.behind)


def _safe(call_id: str) -> str:
    return SAFE.sub("_", call_id)[:120]


def live_frames(iface: str, pipe: Pipeline):
    """(ts, frame) from a network interface until SIGTERM; then the kernel's counts in ``pipe``."""
    stopped = []
    signal.signal(signal.SIGTERM, lambda *_: stopped.append(True))
    pc = pcap.pcap(iface, immediate=False, timeout_ms=1, buffer_size=64 << 20)
    pc.setnonblock(True)
    print(f"capturing on {iface}", file=sys.stderr, flush=True)
    while not stopped:
        frames = pc.readpkts()
        if not frames:
            select.select([pc.fileno()], [], [], 0.1)
        yield from frames
    pipe.pcap_stats = pc.stats()


def _counts(pipe: Pipeline) -> dict:
    out = {"packets": pipe.packets, "calls": pipe.ncalls, "legs": pipe.nlegs}
    if pipe.pcap_stats is not None:
        out.update(zip(("pcap_received", "kernel_drops", "interface_drops"), pipe.pcap_stats, strict=True))
    return out


def _results(path: str | None, pipe: Pipeline, probe=None, paced: bool = False, live: str | None = None):
    """What the pipeline makes of each packet, then the end of every call still open.
    ``paced``: ('due', ts) before each packet, for the caller to wait until it is due."""
    for ts, buf in live_frames(live, pipe) if live else pcap.pcap(path, timeout_ms=0):
        if probe is not None and pipe.packets & 1023 == 0:
            probe(ts)
        if paced:
            yield ("due", ts)
        r = pipe.frame(buf)
        if r is not None:
            yield r
    for call_id in list(pipe.calls):
        r = pipe.end(call_id)
        if r:
            yield r


def run_wav(path: str | None, out_dir: str, probe=None, live: str | None = None) -> dict:
    os.makedirs(out_dir, exist_ok=True)
    pipe = Pipeline()

    def close(legs):
        for leg in legs:
            if leg.wav is not None:
                leg.wav.close()
                leg.wav = None

    for r in _results(path, pipe, probe, live=live):
        if r[0] == "audio":
            leg, pcm = r[1], r[2]
            if leg.wav is None:
                d = os.path.join(out_dir, _safe(leg.call_id))
                os.makedirs(d, exist_ok=True)
                leg.wav = wave.open(os.path.join(d, f"{leg.tag}.wav"), "wb")  # noqa: SIM115 - closed on BYE
                leg.wav.setnchannels(1)
                leg.wav.setsampwidth(2)
                leg.wav.setframerate(RATE)
            leg.wav.writeframesraw(pcm)
        else:
            close(r[1])
    return _counts(pipe)


async def run_ws_async(path: str | None, url: str, probe=None, realtime: bool = False,
                       live: str | None = None) -> dict:
    from websockets.asyncio.client import connect

    pipe = Pipeline()
    clock = Clock() if realtime else None
    sent = 0

    async def close(legs):
        nonlocal sent
        for leg in legs:
            if leg.ws is None:
                continue
            if leg.buf:
                await leg.ws.send(bytes(leg.buf))
                sent += 1
            await leg.ws.send(json.dumps({"type": "end", "call_id": leg.call_id, "tag": leg.tag,
                                          "samples": leg.samples}))
            await leg.ws.close()
            leg.ws = None

    for r in _results(path, pipe, probe, paced=clock is not None, live=live):
        if r[0] == "due":
            await clock.until(r[1])
        elif r[0] == "audio":
            leg, pcm = r[1], r[2]
            if leg.ws is None:
                leg.ws = await connect(url, compression=None)
                await leg.ws.send(json.dumps({"type": "start", "call_id": leg.call_id, "tag": leg.tag,
                                              "codec": "L16", "sample_rate": RATE, "channels": 1}))
            leg.buf += pcm
            leg.samples += len(pcm) // 2
            while len(leg.buf) >= FRAME_BYTES:
                await leg.ws.send(bytes(leg.buf[:FRAME_BYTES]))
                del leg.buf[:FRAME_BYTES]
                sent += 1
        else:
            await close(r[1])
    out = dict(_counts(pipe), sent_frames=sent)
    if clock is not None:
        out.update(behind_s=clock.behind, max_behind_s=clock.max_behind)
    return out


def run(path: str | None, *, url: str | None = None, out_dir: str | None = None, probe=None,
        realtime: bool = False, live: str | None = None) -> dict:
    if realtime and (not url or live):
        raise ValueError("realtime pacing is for WebSocket output (url) from a file")
    if url:
        try:
            import uvloop
            loop = uvloop.new_event_loop()
        except ImportError:
            loop = asyncio.new_event_loop()
        try:
            return loop.run_until_complete(run_ws_async(path, url, probe, realtime, live))
        finally:
            loop.close()
    if out_dir:
        return run_wav(path, out_dir, probe, live)
    raise ValueError("give url or out_dir")


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("capture", nargs="?")
    ap.add_argument("--live", metavar="IFACE", help="capture on this interface instead (until SIGTERM)")
    ap.add_argument("--ws-url")
    ap.add_argument("--out-dir")
    ap.add_argument("--realtime", action="store_true",
                    help="hand each packet on at its capture time (after the first packet's); WebSocket output")
    a = ap.parse_args(argv)
    if (a.capture is None) == (a.live is None):
        ap.error("give a capture file or --live IFACE")
    if a.realtime and (not a.ws_url or a.live):
        ap.error("--realtime needs --ws-url and a capture file")
    print(json.dumps(run(a.capture, url=a.ws_url, out_dir=a.out_dir, realtime=a.realtime, live=a.live)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
