"""File output adapter: one WAV per leg, optional stereo WAV per call, and
``calls.json``, the manifest a QA tool reads.

WAV files are 16 kHz mono (stereo: caller left, callee right) 16-bit PCM.
A leg is ``<tag>.wav``: ``caller``, ``callee``, and for a second flow running
alongside a leg's (a media relay in the path) ``caller#2.wav`` and so on; the
stereo WAV is made of ``caller`` and ``callee`` only.
Audio is buffered per leg and appended in chunks, so no file handle is held
open per call and thousands of concurrent calls do not exhaust descriptors.

Layout of the output directory: the run's own files at the top, one folder
per call under ``calls/``, so no Call-ID can name a run file::

    calls.json            the manifest (written by ``WavSink.close``)
    calls.jsonl           journal mode (live): one line per call, as it ends
    calls/<name>/         per call with audio: caller.wav, callee.wav (caller#2.wav ...), stereo.wav

A call's folder is made with its first audio: a call without audio (an INVITE
flood, a rejected call) has a manifest entry and nothing on disk.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import struct
from io import BufferedWriter
from typing import Any

import numpy as np

from ..pipeline.sink import LegView, Sink
from ..signalling.calls import CALLEE, CALLER, Call, CallEvent, HoldChanged, MediaOffer
from ..signalling.correlator import format_addr, pack_ip

RATE = 16000
FLUSH_BYTES = 2 * RATE        # per leg: written once a second of audio is in (never holds two)
_SAFE = re.compile(r"[^A-Za-z0-9._@+-]")


def safe_name(call_id: str) -> str:
    """A directory name for a Call-ID: unsafe characters become ``_``; never ``.`` or ``..``."""
    name = _SAFE.sub("_", call_id)[:120]
    if not name.strip("."):
        name = name.replace(".", "_") or "call"
    return name


def folder_name(call_key: str) -> str:
    """The folder name under ``calls/`` for a call: its key when that is safe as it
    is; otherwise ``safe_name`` cut to 110 characters plus ``~`` and 8 hex digits
    of the key's SHA-1 (``~`` is never kept from a key, so such a name cannot be
    another call's key; different keys that ``safe_name`` maps alike stay apart).
    At most 120 ASCII bytes; never ``.``, ``..`` or empty."""
    name = safe_name(call_key)
    if name == call_key:
        return name
    digest = hashlib.sha1(call_key.encode("utf-8", "surrogatepass"), usedforsecurity=False).hexdigest()[:8]
    return f"{name[:110]}~{digest}"


ISO_FIRST = "0001-01-01T00:00:00.000+00:00"
ISO_LAST = "9999-12-31T23:59:59.999+00:00"


def iso(ts: float | None) -> str | None:
    """A capture time as ISO 8601 UTC with milliseconds; None for None (or NaN).  A time
    outside what ISO 8601 can name is written as the nearest end of it (``ISO_FIRST``,
    ``ISO_LAST``): capture times are kept inside 1970..9999 by ``rtp2ws.capture.file``, but a
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


CALLS_DIR = "calls"            # per-call folders; nothing else is written there
MANIFEST = "calls.json"
JOURNAL = "calls.jsonl"


class WavSink(Sink):
    """WAV files and the manifest.  ``journal=False`` (replay): every ended call's
    entry is kept and ``close`` writes them, sorted by start, to ``calls.json``.
    ``journal=True`` (live): each ended call's entry is appended to ``calls.jsonl``
    as it ends and forgotten, so what the sink holds is bounded by the calls in
    progress; ``close`` writes ``calls.json`` from the lines this sink appended
    (in the order the calls ended), reading them back one at a time."""

    def __init__(self, out_dir: str, *, stereo: bool = False, journal: bool = False) -> None:
        self.out_dir = out_dir
        self.stereo = stereo
        os.makedirs(out_dir, exist_ok=True)
        self._calls_dir = os.path.join(out_dir, CALLS_DIR)
        self._dirs: dict[str, str] = {}                 # call key -> folder, once the call has audio
        self._wavs: dict[tuple[str, str], WavFile] = {}
        self._holds: dict[str, list[dict[str, str | None]]] = {}
        self.manifest: list[dict[str, Any]] = []                # journal=False: every ended call
        self.ended = 0
        self._journal: BufferedWriter | None = None
        if journal:
            self._journal = open(os.path.join(out_dir, JOURNAL), "ab")
            self._journal_start = self._journal.tell()
            if self._journal_start:          # a run before this one may have stopped mid-line
                with open(self._journal.name, "rb") as f:
                    f.seek(-1, os.SEEK_END)
                    if f.read(1) != b"\n":
                        self._journal.write(b"\n")
                        self._journal_start += 1

    def in_progress(self) -> int:
        """Calls the sink holds anything for (folders, open WAVs, holds)."""
        return len(set(self._dirs) | {k for k, _ in self._wavs} | set(self._holds))

    def leg_audio(self, call: Call, leg: LegView, pcm: np.ndarray) -> None:
        key = (call.key, leg.tag)
        w = self._wavs.get(key)
        if w is None:
            w = self._wavs[key] = WavFile(os.path.join(self._folder(call), f"{leg.tag}.wav"))
        w.write(pcm)

    def call_event(self, call: Call, event: CallEvent) -> None:
        if isinstance(event, HoldChanged):
            holds = self._holds.setdefault(call.key, [])
            if event.on_hold:
                holds.append({"by": event.side, "start": iso(event.at), "end": None})
            else:
                for h in holds:
                    if h["end"] is None:
                        h["end"] = iso(event.at)

    def call_ended(self, call: Call, legs: dict[str, LegView]) -> None:
        entry: dict[str, Any] = {
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
        self._dirs.pop(call.key, None)
        self.ended += 1
        if self._journal is not None:
            self._journal.write(json.dumps(entry).encode() + b"\n")
            self._journal.flush()
        else:
            self.manifest.append(entry)

    def close(self, summary: dict[str, Any] | None = None) -> str:
        for w in self._wavs.values():
            w.close()
        self._wavs.clear()
        path = os.path.join(self.out_dir, MANIFEST)
        tmp = path + ".tmp"
        if self._journal is None:
            doc: dict[str, Any] = {"calls": sorted(self.manifest, key=lambda c: (c["start"] or "", c["call_id"]))}
            if summary is not None:
                doc["summary"] = summary
            with open(tmp, "w") as f:
                json.dump(doc, f, indent=2)
                f.write("\n")
        else:
            self._journal.close()
            with open(self._journal.name, "rb") as src, open(tmp, "wb") as f:
                src.seek(self._journal_start)
                f.write(b'{"calls": [')
                sep = b"\n"
                for line in src:
                    if line.strip():
                        f.write(sep + line.rstrip(b"\n"))
                        sep = b",\n"
                f.write(b"\n]")
                if summary is not None:
                    f.write(b',\n"summary": ' + json.dumps(summary, indent=2).encode())
                f.write(b"}\n")
        os.replace(tmp, path)
        return path

    def _folder(self, call: Call) -> str:
        """The call's folder, made now if this is its first audio.  ``os.mkdir`` fails on
        a name already taken (by a call before, an earlier run, or, on a case-insensitive
        file system, a name differing only in case): then ``-2``, ``-3``... are tried, so
        two calls never share a folder."""
        name = self._dirs.get(call.key)
        if name is None:
            os.makedirs(self._calls_dir, exist_ok=True)
            base = folder_name(call.key)
            name, n = base, 1
            while True:
                try:
                    os.mkdir(os.path.join(self._calls_dir, name))
                    break
                except FileExistsError:
                    n += 1
                    name = f"{base}-{n}"
            self._dirs[call.key] = name
        return os.path.join(self._calls_dir, name)

    # -- helpers --------------------------------------------------------------------

    def _rel(self, path: str) -> str:
        return os.path.relpath(path, self.out_dir)

    def _leg_entry(self, call: Call, leg: LegView, w: WavFile | None) -> dict[str, Any]:
        src: str | None
        dst: str | None
        if leg.flows:
            src, dst = leg.flows[0]
        else:
            sender = call.media.get(leg.tag)
            receiver = call.media.get(CALLEE if leg.tag == CALLER else CALLER)
            src = _fmt(sender)
            dst = _fmt(receiver)
        e: dict[str, Any] = {
            "tag": leg.tag,
            "src": src,
            "dst": dst,
            "start": iso(leg.start_time),
            "ssrcs": [f"0x{s:08x}" for s in leg.ssrcs],
            "codecs": list(leg.codecs),
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

    def _write_stereo(self, call: Call, files: dict[str, tuple[WavFile, float]]) -> str | None:
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
        out = WavFile(os.path.join(self._folder(call), "stereo.wav"), channels=2)
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


def _fmt(offer: MediaOffer | None) -> str | None:
    if offer is None:
        return None
    ip = pack_ip(offer.address)
    return format_addr(ip, offer.port) if ip else f"{offer.address}:{offer.port}"
