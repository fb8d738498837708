"""File output adapter: one WAV per leg, optional stereo WAV per call, and
``calls.json``, the manifest a QA tool reads.

WAV files are 16 kHz mono (stereo: caller left, callee right) 16-bit PCM.
A leg is ``<tag>.wav``: ``caller``, ``callee``, and for a second flow running
alongside a leg's (a media relay in the path) ``caller#2.wav`` and so on; the
stereo WAV is made of ``caller`` and ``callee`` only.
Audio is buffered per leg and appended in chunks, so no file handle is held
open per call and thousands of concurrent calls do not exhaust descriptors.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import struct

import numpy as np

from .calls import CALLEE, CALLER, Call, HoldChanged
from .correlator import format_addr, pack_ip
from .leg import MediaLeg
from .pipeline import Sink

RATE = 16000
FLUSH_BYTES = 2 * RATE        # per leg: written once a second of audio is in (never holds two)
_SAFE = re.compile(r"[^A-Za-z0-9._@+-]")


def safe_name(call_id: str) -> str:
    """A directory name for a Call-ID: unsafe characters become ``_``; never ``.`` or ``..``."""
    name = _SAFE.sub("_", call_id)[:120]
    if not name.strip("."):
        name = name.replace(".", "_") or "call"
    return name


ISO_FIRST = "0001-01-01T00:00:00.000+00:00"
ISO_LAST = "9999-12-31T23:59:59.999+00:00"


def iso(ts: float | None) -> str | None:
    """A capture time as ISO 8601 UTC with milliseconds; None for None (or NaN).  A time
    outside what ISO 8601 can name is written as the nearest end of it (``ISO_FIRST``,
    ``ISO_LAST``): capture times are kept inside 1970..9999 by ``rtp2ws.capture``, but a
    time derived from one (an end, a DTMF start) may pass the end."""
    if ts is None or ts != ts:
        return None
    try:
        return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).isoformat(timespec="milliseconds")
    except (OverflowError, OSError, ValueError):
        return ISO_LAST if ts > 0 else ISO_FIRST


def wav_header(data_bytes: int, channels: int = 1, rate: int = RATE) -> bytes:
    block = 2 * channels
    return struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + data_bytes, b"WAVE", b"fmt ", 16, 1, channels,
                       rate, rate * block, block, 16, b"data", data_bytes)


class WavFile:
    """A 16-bit PCM WAV written by appending; the header is fixed up on close."""

    def __init__(self, path: str, channels: int = 1) -> None:
        self.path = path
        self.channels = channels
        self.data_bytes = 0
        self._buf: list[bytes] = []
        self._buffered = 0
        with open(path, "wb") as f:
            f.write(wav_header(0, channels))

    def write(self, pcm: np.ndarray) -> None:
        b = pcm.astype("<i2", copy=False).tobytes()
        self._buf.append(b)
        self._buffered += len(b)
        if self._buffered >= FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self._buf:
            return
        # No file object: thousands of legs each flush a second at a time, and io.open's
        # buffered writer costs more than the write.  Descriptors stay free between flushes.
        fd = os.open(self.path, os.O_WRONLY)
        try:
            os.pwrite(fd, self._buf[0] if len(self._buf) == 1 else b"".join(self._buf), 44 + self.data_bytes)
        finally:
            os.close(fd)
        self.data_bytes += self._buffered
        self._buf = []
        self._buffered = 0

    def close(self) -> None:
        self.flush()
        with open(self.path, "r+b") as f:
            f.write(wav_header(self.data_bytes, self.channels))


def read_wav(path: str) -> tuple[np.ndarray, int, int]:
    """(samples int16 [frames, channels] or [frames], rate, channels) of a WAV this module wrote."""
    import wave

    with wave.open(path, "rb") as w:
        ch, rate, n = w.getnchannels(), w.getframerate(), w.getnframes()
        data = np.frombuffer(w.readframes(n), dtype="<i2")
    return (data.reshape(-1, ch) if ch > 1 else data), rate, ch


class WavSink(Sink):
    def __init__(self, out_dir: str, *, stereo: bool = False) -> None:
        self.out_dir = out_dir
        self.stereo = stereo
        os.makedirs(out_dir, exist_ok=True)
        self._dirs: dict[str, str] = {}
        self._used: set[str] = set()
        self._wavs: dict[tuple[str, str], WavFile] = {}
        self.manifest: list[dict] = []
        self._holds: dict[str, list[dict]] = {}

    def call_started(self, call: Call) -> None:
        base = safe_name(call.key)
        name, n = base, 1
        while name in self._used or os.path.exists(os.path.join(self.out_dir, name)):
            n += 1
            name = f"{base}-{n}"
        self._used.add(name)
        self._dirs[call.key] = name
        os.makedirs(os.path.join(self.out_dir, name), exist_ok=True)

    def leg_audio(self, call: Call, leg: MediaLeg, pcm: np.ndarray) -> None:
        key = (call.key, leg.tag)
        w = self._wavs.get(key)
        if w is None:
            w = self._wavs[key] = WavFile(os.path.join(self.out_dir, self._dirs[call.key], f"{leg.tag}.wav"))
        w.write(pcm)

    def call_event(self, call: Call, event) -> None:
        if isinstance(event, HoldChanged):
            holds = self._holds.setdefault(call.key, [])
            if event.on_hold:
                holds.append({"by": event.side, "start": iso(event.at), "end": None})
            else:
                for h in holds:
                    if h["end"] is None:
                        h["end"] = iso(event.at)

    def call_ended(self, call: Call, legs: dict[str, MediaLeg]) -> None:
        entry = {
            "call_id": call.call_id,
            "from": call.from_uri,
            "to": call.to_uri,
            "start": iso(call.start),
            "end": iso(call.end),
            "end_reason": call.end_reason,
            "sip_messages": call.sip_messages,
            "holds": self._holds.pop(call.key, []),
            **({"picked_up": True} if call.picked_up else {}),
            **({"media_only": True, "identified_as": call.identified_as} if call.media_only else {}),
            "legs": [],
        }
        files: dict[str, tuple[WavFile, float]] = {}
        for tag, leg in legs.items():      # caller, callee, then extra legs (caller#2 ...)
            w = self._wavs.pop((call.key, tag), None)
            if w is not None:
                w.close()
                if tag in (CALLER, CALLEE):    # the stereo WAV is the two SDP legs
                    files[tag] = (w, leg.start_time)
            entry["legs"].append(self._leg_entry(call, leg, w))
        if self.stereo:
            entry["stereo_wav"] = self._write_stereo(call, files)
        self.manifest.append(entry)

    def close(self, summary: dict | None = None) -> str:
        for w in self._wavs.values():
            w.close()
        self._wavs.clear()
        path = os.path.join(self.out_dir, "calls.json")
        doc = {"calls": sorted(self.manifest, key=lambda c: (c["start"] or "", c["call_id"]))}
        if summary is not None:
            doc["summary"] = summary
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
        return path

    # -- helpers --------------------------------------------------------------------

    def _rel(self, path: str) -> str:
        return os.path.relpath(path, self.out_dir)

    def _leg_entry(self, call: Call, leg: MediaLeg, w: WavFile | None) -> dict:
        if leg.flows:
            src, dst = leg.flows[0]
        else:
            sender = call.media.get(leg.tag)
            receiver = call.media.get(CALLEE if leg.tag == CALLER else CALLER)
            src = _fmt(sender)
            dst = _fmt(receiver)
        e = {
            "tag": leg.tag,
            "src": src,
            "dst": dst,
            "start": iso(leg.start_time),
            "ssrcs": [f"0x{s:08x}" for s in leg.ssrcs],
            "codecs": leg.codecs,
            "wav": self._rel(w.path) if w is not None else None,
            "duration_ms": (w.data_bytes // 2) * 1000 // RATE if w is not None else 0,
        }
        e.update(leg.stats)
        e["dtmf"] = [{"digit": d.digit, "start": iso(d.start), "duration_ms": d.duration_ms}
                     for d in leg.dtmf_events]
        e["encrypted"] = leg.encrypted
        for k in ("cn", "unknown_pt", "rtcp", "stun", "zrtp", "malformed", "extra_flow_dropped"):
            if leg.counts[k]:
                e[k] = leg.counts[k]
        return e

    def _write_stereo(self, call: Call, files: dict) -> str | None:
        if not files:
            return None
        t0 = min(start for _, start in files.values())
        chans = []
        for tag in (CALLER, CALLEE):
            if tag in files:
                w, start = files[tag]
                data = np.memmap(w.path, dtype="<i2", mode="r", offset=44) if w.data_bytes else np.zeros(0, "<i2")
                chans.append((round((start - t0) * RATE), data))
            else:
                chans.append((0, np.zeros(0, "<i2")))
        total = max(off + len(d) for off, d in chans)
        out = WavFile(os.path.join(self.out_dir, self._dirs[call.key], "stereo.wav"), channels=2)
        step = RATE * 10
        for a in range(0, total, step):
            b = min(total, a + step)
            frame = np.zeros((b - a, 2), dtype=np.int16)
            for ch, (off, d) in enumerate(chans):
                lo, hi = max(a, off), min(b, off + len(d))
                if hi > lo:
                    frame[lo - a:hi - a, ch] = d[lo - off:hi - off]
            out.write(frame.reshape(-1))
        out.close()
        return self._rel(out.path)


def _fmt(offer) -> str | None:
    if offer is None:
        return None
    ip = pack_ip(offer.address)
    return format_addr(ip, offer.port) if ip else f"{offer.address}:{offer.port}"
