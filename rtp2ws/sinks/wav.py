"""File output adapter: one WAV per leg, optional stereo WAV per call, and
``calls.json``, the manifest a QA tool reads.

WAV files are mono, in the run's ``AudioFormat`` (``rtp2ws.codec.audioformat``):
16-bit PCM at 16 kHz by default (format tag 1), or 8, 24, 48 kHz, or G.711
µ-law / A-law (format tags 7 and 6, 8 bits a sample, with the ``fact`` chunk
the RIFF specification asks of non-PCM data).  A leg is ``<tag>.wav``:
``caller``, ``callee``, and for a second flow running alongside a leg's (a
media relay in the path) ``caller#2.wav`` and so on.  With ``mix="stereo"`` a
call also gets ``stereo.wav`` (caller left, callee right), with ``mix="mixed"``
``mixed.wav`` (the two summed with saturation), made of ``caller`` and
``callee`` only, positioned on capture time; made at the call's end from the
legs' linear samples (for G.711 legs, kept beside them in ``.<tag>.l16`` until
then), so they hold what the stereo and mixed streams carry.
Audio is buffered per leg and appended in chunks, so no file handle is held
open per call and thousands of concurrent calls do not exhaust descriptors.

Layout of the output directory: the run's own files at the top, one folder
per call under ``calls/``, so no Call-ID can name a run file::

    calls.json            the manifest (written by ``WavSink.close``)
    calls.jsonl           journal mode (live): one line per call, as it ends
    calls/<name>/         per call with audio: caller.wav, callee.wav (caller#2.wav ...), stereo.wav or mixed.wav

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

from ..codec.audioformat import AudioFormat, mix_saturating
from ..pipeline.sink import LegView, Sink
from ..signalling.calls import CALLEE, CALLER, Call, CallEvent, HoldChanged, MediaOffer
from ..signalling.correlator import format_addr, pack_ip

RATE = 16000                  # the default rate
FLUSH_BYTES = 2 * RATE        # per leg: written once this much audio is in (a second of the default)
PCM_HEADER = 44               # bytes of a PCM WAV's header (RIFF, fmt of 16 bytes, data)
G711_HEADER = 58              # ... of a G.711 one (RIFF, fmt of 18 bytes with cbSize 0, fact, data)
_DEFAULT = AudioFormat()
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


def wav_header(data_bytes: int, channels: int = 1, rate: int = RATE, encoding: str = "l16") -> bytes:
    """The header of a WAV of ``data_bytes`` of audio: ``PCM_HEADER`` bytes for l16 (16-bit
    PCM), ``G711_HEADER`` for mulaw/alaw (8 bits, a ``fact`` chunk with the sample count)."""
    audio = AudioFormat(rate, encoding)
    block = audio.sample_bytes * channels
    if encoding == "l16":
        return struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + data_bytes, b"WAVE", b"fmt ", 16, 1, channels,
                           rate, rate * block, block, 16, b"data", data_bytes)
    return struct.pack("<4sI4s4sIHHIIHHH4sII4sI", b"RIFF", G711_HEADER - 8 + data_bytes, b"WAVE", b"fmt ", 18,
                       audio.wav_format_tag, channels, rate, rate * block, block, 8, 0,
                       b"fact", 4, data_bytes // block, b"data", data_bytes)


def header_bytes(encoding: str) -> int:
    """Bytes before the audio of a WAV this module writes."""
    return PCM_HEADER if encoding == "l16" else G711_HEADER


class WavFile:
    """A WAV in ``audio``'s rate and encoding (16-bit PCM at 16 kHz by default), written
    by appending int16 samples (encoded on the way); the header is fixed up on close."""

    def __init__(self, path: str, channels: int = 1, audio: AudioFormat = _DEFAULT) -> None:
        self.path = path
        self.channels = channels
        self.audio = audio
        self.header_bytes = header_bytes(audio.encoding)
        self.data_bytes = 0
        self._buf: list[bytes] = []
        self._buffered = 0
        with open(path, "wb") as f:
            f.write(self._header())

    def _header(self) -> bytes:
        return wav_header(self.data_bytes, self.channels, self.audio.rate, self.audio.encoding)

    @property
    def samples(self) -> int:
        """Samples per channel written (flushed) so far."""
        return self.data_bytes // (self.audio.sample_bytes * self.channels)

    def write(self, pcm: np.ndarray) -> None:
        b = self.audio.encode(pcm)
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
            os.pwrite(fd, self._buf[0] if len(self._buf) == 1 else b"".join(self._buf),
                      self.header_bytes + self.data_bytes)
        finally:
            os.close(fd)
        self.data_bytes += self._buffered
        self._buf = []
        self._buffered = 0

    def close(self) -> None:
        self.flush()
        with open(self.path, "r+b") as f:
            f.write(self._header())


def read_wav(path: str) -> tuple[np.ndarray, int, int]:
    """(samples int16 [frames, channels] or [frames], rate, channels) of a WAV this module
    wrote; G.711 decoded to int16 (``read_wav_format`` says which it was)."""
    data, audio, ch = read_wav_format(path)
    pcm = audio.decode(data)
    return (pcm.reshape(-1, ch) if ch > 1 else pcm), audio.rate, ch


def read_wav_format(path: str) -> tuple[bytes, AudioFormat, int]:
    """(the audio bytes as stored, their AudioFormat, channels) of a WAV this module wrote
    (fixed layout: ``wav_header``); ValueError for anything else."""
    with open(path, "rb") as f:
        head = f.read(G711_HEADER)
        riff, _, wave, fmt, size, tag, ch, rate, _, _, bits = struct.unpack_from("<4sI4s4sIHHIIHH", head)
        if riff != b"RIFF" or wave != b"WAVE" or fmt != b"fmt ":
            raise ValueError(f"{path}: not a WAV written by rtp2ws")
        encodings = {1: "l16", 7: "mulaw", 6: "alaw"}
        if tag not in encodings or size != (16 if tag == 1 else 18):
            raise ValueError(f"{path}: format tag {tag} with a {size}-byte fmt chunk is not one rtp2ws writes")
        encoding = encodings[tag]
        offset = header_bytes(encoding)
        data_bytes = struct.unpack_from("<I", head, offset - 4)[0]
        f.seek(offset)
        data = f.read(data_bytes)
    return data, AudioFormat(rate, encoding), ch


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

    def __init__(self, out_dir: str, *, stereo: bool = False, journal: bool = False,
                 audio: AudioFormat | None = None) -> None:
        audio = audio if audio is not None else _DEFAULT
        if stereo:                 # the old flag: mix="stereo"
            if audio.mix == "mixed":
                raise ValueError("stereo=True and mix='mixed' contradict each other")
            audio = AudioFormat(audio.rate, audio.encoding, "stereo")
        self.out_dir = out_dir
        self.audio = audio
        self.stereo = audio.mix == "stereo"
        # A call's stereo/mixed WAV is made of its legs' linear samples: the leg WAVs
        # themselves for l16, else a linear copy kept beside them until the call ends.
        self._combined = audio.mix != "per-leg"
        self._linear_copy = self._combined and audio.encoding != "l16"
        self._linear_audio = AudioFormat(audio.rate)
        os.makedirs(out_dir, exist_ok=True)
        self._calls_dir = os.path.join(out_dir, CALLS_DIR)
        self._dirs: dict[str, str] = {}                 # call key -> folder, once the call has audio
        self._wavs: dict[tuple[str, str], WavFile] = {}
        self._linear: dict[tuple[str, str], WavFile] = {}     # G.711 legs' linear copies (see above)
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
            w = self._wavs[key] = WavFile(os.path.join(self._folder(call), f"{leg.tag}.wav"), audio=self.audio)
        w.write(pcm)
        if self._linear_copy and leg.tag in (CALLER, CALLEE):
            lin = self._linear.get(key)
            if lin is None:
                lin = self._linear[key] = WavFile(os.path.join(self._folder(call), f".{leg.tag}.l16"),
                                                  audio=self._linear_audio)
            lin.write(pcm)

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
                    lin = self._linear.pop((call.key, tag), None)
                    if lin is not None:
                        lin.close()
                    files[tag] = (lin if lin is not None else w, leg.start_time)
            entry["legs"].append(self._leg_entry(call, leg, w))
        if self._combined:
            entry[f"{self.audio.mix}_wav"] = self._write_combined(call, files)
            for f, _ in files.values():
                if f.path.endswith(".l16"):
                    os.unlink(f.path)
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
        for w in self._linear.values():     # calls that never ended: their linear copies go
            os.unlink(w.path)
        self._linear.clear()
        path = os.path.join(self.out_dir, MANIFEST)
        tmp = path + ".tmp"
        if self._journal is None:
            # a call a line, as the journal has them (json's C encoder: with indent=2 json
            # encodes in Python, and with quality per leg that was a tenth of a replay's CPU)
            calls = sorted(self.manifest, key=lambda c: (c["start"] or "", c["call_id"]))
            with open(tmp, "w") as f:
                f.write('{"calls": [' + ",".join("\n" + json.dumps(c) for c in calls) + "\n]")
                if summary is not None:
                    f.write(',\n"summary": ' + json.dumps(summary, indent=2))
                f.write("}\n")
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
            "codec_segments": [{"codec": c, "start": iso(at)} for c, at in leg.codec_segments],
            "wav": self._rel(w.path) if w is not None else None,
            "duration_ms": w.samples * 1000 // w.audio.rate if w is not None else 0,
        }
        e.update(leg.stats)
        e["dtmf"] = [{"digit": d.digit, "start": iso(d.start), "duration_ms": d.duration_ms}
                     for d in leg.dtmf_events]
        e["encrypted"] = leg.encrypted
        e["quality"] = leg.quality
        e["srtp"] = leg.srtp
        for k in ("cn", "unknown_pt", "rtcp", "stun", "zrtp", "dtls", "malformed", "extra_flow_dropped", "srtp_failed",
                  "srtcp_failed", "srtp_replayed"):
            if leg.counts[k]:
                e[k] = leg.counts[k]
        return e

    def _write_combined(self, call: Call, files: dict[str, tuple[WavFile, float]]) -> str | None:
        """``stereo.wav`` (caller left, callee right) or ``mixed.wav`` (their saturating
        sum) from the two SDP legs' linear samples (``files``: l16 WAVs), positioned on
        capture time."""
        if not files:
            return None
        rate = self.audio.rate
        t0 = min(start for _, start in files.values())
        chans = []
        for tag in (CALLER, CALLEE):
            if tag in files:
                w, start = files[tag]
                data = (np.memmap(w.path, dtype="<i2", mode="r", offset=w.header_bytes) if w.data_bytes
                        else np.zeros(0, "<i2"))
                chans.append((round((start - t0) * rate), data))
            else:
                chans.append((0, np.zeros(0, "<i2")))
        total = max(off + len(d) for off, d in chans)
        mixed = self.audio.mix == "mixed"
        out = WavFile(os.path.join(self._folder(call), f"{self.audio.mix}.wav"), channels=1 if mixed else 2,
                      audio=self.audio)
        step = rate * 10
        for a in range(0, total, step):
            b = min(total, a + step)
            frame = np.zeros((b - a, 2), dtype=np.int16)
            for ch, (off, d) in enumerate(chans):
                lo, hi = max(a, off), min(b, off + len(d))
                if hi > lo:
                    frame[lo - a:hi - a, ch] = d[lo - off:hi - off]
            out.write(mix_saturating(frame) if mixed else frame.reshape(-1))
        out.close()
        return self._rel(out.path)


def _fmt(offer: MediaOffer | None) -> str | None:
    if offer is None:
        return None
    ip = pack_ip(offer.address)
    return format_addr(ip, offer.port) if ip else f"{offer.address}:{offer.port}"
