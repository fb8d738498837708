"""``rtp2ws sink``: the reference analysis server.

It accepts the wire protocol of :mod:`rtp2ws.ws.protocol` and writes one WAV per
stream, ``<out-dir>/<safe call_id>/<tag>.wav``, byte-identical to what
:class:`rtp2ws.sinks.wav.WavFile` writes for the same samples once the stream has
ended, plus two append-only logs:

``streams.jsonl``
    one ``{"event": "open", ...}`` line per stream (stream_id → file), one
    ``{"event": "end", ...}`` line when its ``end`` arrives; loaded at start-up
    so a resumed stream continues its file across restarts of the sink.
``messages.jsonl``
    every accepted text message with the time it was received and the remote.

Three layers, as in the rest of rtp2ws:

* :class:`Session` is the sans-I/O protocol state of one connection: text and
  bytes in (with ``now``), typed events out, :class:`Refusal` (close code and
  reason) for malformed input. No sockets, no files, no clock.
* :class:`StreamStore` owns the files. Audio goes to the OS at once with
  ``os.pwrite`` at the frame's offset (overwrite what is there, holes read as
  zeros), so a SIGKILLed sink loses nothing the kernel has; WAV headers are
  fixed on ``end``, on detach, on reopen and at start-up.
* :class:`SinkServer` is the thin websockets adapter.

Everything a client sends is bounded before it is used: a text message is at
most ``MAX_TEXT_CHARS`` long and ``MAX_JSON_DEPTH`` deep (checked before
``json.loads``, refused with 1007), identifiers at most ``MAX_ID_CHARS``, a
frame lands at most ``max_gap_s`` beyond the end of its stream, a connection
must send ``start`` within ``start_timeout`` seconds, and every record of the
``rtp2ws.sink`` logger is one printable line (:func:`printable`). Memory: a
stream with no connection keeps only what a resume needs (stream_id, call_id,
tag, channels, path, samples written), and at most ``max_idle`` such streams
are kept, ended ones forgotten first, oldest first; a stream resumed after it
was forgotten gets a new file and a warning.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import re
import ssl
import sys
import time
from collections import ChainMap, OrderedDict
from dataclasses import dataclass, field
from http import HTTPStatus

import jsonschema
import numpy as np
from jsonschema.exceptions import best_match

from ..ws import protocol
from ..sinks.wav import folder_name, safe_name, wav_header

log = logging.getLogger("rtp2ws.sink")

HEADER_BYTES = 44
MAX_DATA_BYTES = 0xFFFFFFFF - 36  # the RIFF size field is 32 bits
MAX_REASON_BYTES = 123  # RFC 6455 5.5: control frame payload ≤ 125, 2 of them the code
MAX_NAME_SUFFIX = 10000  # <tag>-2.wav … <tag>-9999.wav
HEADER_REFRESH_SAMPLES = protocol.SAMPLE_RATE  # rewrite the header about once per second of audio
STREAMS_LOG = "streams.jsonl"
MESSAGES_LOG = "messages.jsonl"
_OWN_FILES = frozenset(n.lower() for n in (STREAMS_LOG, MESSAGES_LOG, STREAMS_LOG + ".tmp", MESSAGES_LOG + ".tmp"))
TOKEN_ENV = "RTP2WS_SINK_TOKEN"
MAX_TEXT_CHARS = 2 ** 20  # a text message, whatever --max-size allows binary frames (1009 beyond)
MAX_JSON_DEPTH = 32  # nesting of [ and {: the protocol needs 5 (end.legs.caller.dtmf[i]); refused with 1007 beyond
MAX_ID_CHARS = 1024  # stream_id and call_id: kept in memory per stream
MAX_IDLE_STREAMS = 10000  # streams without a connection whose resume state is kept
MAX_GAP_S = 3600  # a frame may land at most this far beyond the end of its stream (zeros in between)
START_TIMEOUT_S = 10.0  # a connection must send start this soon after its handshake
MAX_INDEX_LINE = 4 * MAX_TEXT_CHARS + 4096  # a streams.jsonl line: an end record holds the end message

_VALIDATORS = {name: jsonschema.Draft202012Validator(schema) for name, schema in protocol.SCHEMAS.items()}


def clip_reason(text: str) -> str:
    """``text`` cut to fit a close frame (≤ 123 bytes of UTF-8)."""
    raw = text.encode()
    if len(raw) <= MAX_REASON_BYTES:
        return text
    return raw[:MAX_REASON_BYTES - 3].decode(errors="ignore") + "..."


def _escape_char(c: str) -> str:
    if c == "\\":
        return "\\\\"
    if c in "\n\r\t":
        return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}[c]
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def printable(text: str) -> str:
    """``text`` as one printable line: a backslash doubled, newlines, other
    control characters and anything else ``str.isprintable`` rejects (line and
    paragraph separators, format and bidi controls, lone surrogates) escaped."""
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(c if c.isprintable() and c != "\\" else _escape_char(c) for c in text)


class OneLine(logging.Filter):
    """Renders a record's message through :func:`printable`: whatever a client
    sent (stream_id, call_id, reasons quoting it), a record is one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format: the handler reports it as logging does
            return True
        record.msg, record.args = printable(text), None
        return True


log.addFilter(OneLine())


def format_remote(addr) -> str:
    if not addr:
        return "?"
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# -- sans-I/O protocol core -----------------------------------------------------------


class Refusal(Exception):
    """Malformed input: close the connection with ``code`` and ``reason``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = clip_reason(reason)

    def __repr__(self) -> str:
        return f"Refusal({self.code}, {self.reason!r})"


@dataclass
class Started:
    message: dict
    received: float


@dataclass
class Event:
    """Any other accepted text message (dtmf, hold, resume, codec, drop)."""

    message: dict
    received: float


@dataclass
class Audio:
    offset: int  # samples per channel from the start of the stream
    data: bytes  # int16 LE, interleaved


@dataclass
class Ended:
    message: dict
    received: float


_BRACKET_STEP = np.zeros(256, np.int8)
_BRACKET_STEP[list(b"[{")] = 1
_BRACKET_STEP[list(b"]}")] = -1


def json_depth(raw: bytes) -> int:
    """The deepest nesting of ``[`` and ``{`` outside strings in UTF-8 ``raw``.

    For valid JSON that is its depth; for any text it is at least the depth
    ``json.loads`` reaches before it stops, because on the valid part both split
    strings the same way (a quote after an even run of backslashes opens or
    closes one). Linear and vectorised: 10 to 45 ms a MiB (benchmarks/sink_limits.py).
    """
    b = np.frombuffer(raw, np.uint8)
    if not len(b):
        return 0
    quotes = np.flatnonzero(b == 0x22)
    if b"\\" in raw:  # a quote after an odd run of backslashes is escaped
        at = np.arange(len(b), dtype=np.int32)
        last_plain = np.maximum.accumulate(np.where(b == 0x5C, -1, at))  # last non-backslash at or before each byte
        before = quotes - 1
        run = np.where(before >= 0, before - last_plain[np.maximum(before, 0)], 0)  # backslashes right before
        quotes = quotes[run % 2 == 0]
    toggle = np.zeros(len(b), np.int8)
    toggle[quotes] = 1
    outside = (np.cumsum(toggle, dtype=np.int32) & 1) == 0
    return int(np.cumsum(_BRACKET_STEP[b] * outside, dtype=np.int32).max(initial=0))


def _no_constant(name: str):
    raise ValueError(f"{name} is not allowed")


def load_json(raw: str | bytes):
    """``json.loads`` for what comes from outside: ValueError, never
    RecursionError, for nesting deeper than ``MAX_JSON_DEPTH``; ValueError for
    NaN and Infinity, which JSON does not have (the logs written must stay JSON)."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if data.count(b"[") + data.count(b"{") > MAX_JSON_DEPTH and json_depth(data) > MAX_JSON_DEPTH:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    return json.loads(raw, parse_constant=_no_constant)


def parse_message(text: str) -> dict:
    """One text message, validated against its schema, or :class:`Refusal`."""
    if len(text) > MAX_TEXT_CHARS:
        raise Refusal(protocol.CLOSE_TOO_BIG, f"text message of {len(text)} characters is over {MAX_TEXT_CHARS}")
    try:
        msg = load_json(text)
    except ValueError as e:
        raise Refusal(protocol.CLOSE_INVALID_PAYLOAD, f"invalid JSON: {e}") from None
    if not isinstance(msg, dict):
        raise Refusal(protocol.CLOSE_POLICY_VIOLATION, "message is not a JSON object")
    kind = msg.get("type")
    if kind is None:
        raise Refusal(protocol.CLOSE_POLICY_VIOLATION, "message has no type")
    validator = _VALIDATORS.get(kind) if isinstance(kind, str) else None
    if validator is None:
        raise Refusal(protocol.CLOSE_POLICY_VIOLATION, f"unknown message type {json.dumps(kind)[:40]}")
    error = best_match(validator.iter_errors(msg))
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path)
        raise Refusal(protocol.CLOSE_POLICY_VIOLATION,
                      f"invalid {kind}: {where + ': ' if where else ''}{error.message}")
    return msg


class Session:
    """Protocol state of one connection.

    ``receive_text``/``receive_binary`` return the event the message stands
    for, or raise :class:`Refusal`. ``position`` is where the next binary
    frame goes: set by ``start`` and ``drop``, advanced by every frame.
    """

    IDENTITY = ("stream_id", "call_id", "tag", "channels")

    def __init__(self) -> None:
        self.start: dict | None = None  # the IDENTITY fields of the first start, not the whole message
        self.ended = False
        self.position = 0
        self.block = 2

    @property
    def stream_id(self) -> str | None:
        return self.start["stream_id"] if self.start else None

    def receive_text(self, text: str, now: float) -> Started | Event | Ended:
        msg = parse_message(text)
        kind = msg["type"]
        if self.ended:
            raise Refusal(protocol.CLOSE_POLICY_VIOLATION, f"{kind} after end")
        if self.start is None:
            if kind != "start":
                raise Refusal(protocol.CLOSE_POLICY_VIOLATION, f"first message must be start, not {kind}")
        elif msg["stream_id"] != self.start["stream_id"]:
            raise Refusal(protocol.CLOSE_POLICY_VIOLATION,
                          f"{kind} stream_id does not match this connection's start")
        elif kind == "start":
            for key in ("call_id", "tag", "channels"):
                if msg[key] != self.start[key]:
                    raise Refusal(protocol.CLOSE_POLICY_VIOLATION, f"invalid start: {key} changed on this connection")
        if kind == "start":
            for key in ("stream_id", "call_id"):
                if len(msg[key]) > MAX_ID_CHARS:
                    raise Refusal(protocol.CLOSE_POLICY_VIOLATION,
                                  f"invalid start: {key} is longer than {MAX_ID_CHARS} characters")
            if self.start is None:
                self.start = {key: msg[key] for key in self.IDENTITY}
            # JSON Schema counts 1.0 as an integer: what becomes a position or a size is made an int
            self.block = 2 * int(msg["channels"])
            self.position = int(msg["offset"])
            self._check_offset(self.position, 0)
            return Started(msg, now)
        if kind == "drop":
            self.position = int(msg["offset"])
            self._check_offset(self.position, 0)
        elif kind == "end":
            self.ended = True
            return Ended(msg, now)
        return Event(msg, now)

    def receive_binary(self, data: bytes) -> Audio:
        if self.start is None:
            raise Refusal(protocol.CLOSE_POLICY_VIOLATION, "binary frame before start")
        if self.ended:
            raise Refusal(protocol.CLOSE_POLICY_VIOLATION, "binary frame after end")
        if len(data) % self.block:
            raise Refusal(protocol.CLOSE_INVALID_PAYLOAD,
                          f"binary frame of {len(data)} bytes is not a multiple of {self.block} "
                          f"({self.block // 2} channel{'s' if self.block > 2 else ''} of int16)")
        self._check_offset(self.position, len(data))
        audio = Audio(self.position, bytes(data))
        self.position += len(data) // self.block
        return audio

    def _check_offset(self, offset: int, nbytes: int) -> None:
        if offset * self.block + nbytes > MAX_DATA_BYTES:
            raise Refusal(protocol.CLOSE_POLICY_VIOLATION, f"offset {offset} is beyond the 4 GiB WAV limit")


# -- files ---------------------------------------------------------------------------


@dataclass(slots=True)
class StreamFile:
    """One stream's file. With no connection attached it is what a resume needs:
    identity, path and the samples written (``frames``/``bytes`` are counters)."""

    stream_id: str
    call_id: str
    tag: str
    path: str  # relative to the output directory
    channels: int
    samples: int = 0  # per channel, the length of the WAV's data
    ended: bool = False
    frames: int = 0
    bytes: int = 0
    attached: int = 0  # connections writing to it
    fd: int | None = field(default=None, repr=False)
    _header_samples: int = field(default=-1, repr=False)

    @property
    def block(self) -> int:
        return 2 * self.channels


def valid_path(path) -> bool:
    """A path ``_new_path`` could have made: relative, normalised, inside the output directory."""
    return (isinstance(path, str) and path.endswith(".wav") and "\0" not in path and not os.path.isabs(path)
            and os.path.normpath(path) == path and ".." not in path.split(os.sep))


class StreamStore:
    """The output directory: WAV per stream, ``streams.jsonl``, ``messages.jsonl``.

    ``active`` holds the streams a connection is attached to (each with a file
    descriptor). A stream whose last connection goes moves to ``idle_open`` (no
    ``end`` yet: its sender is likely to resume it) or ``idle_ended``; together
    these hold at most ``max_idle`` streams, evicting the longest-idle ended
    stream first, else the longest-idle open one. ``streams.jsonl`` is replayed
    through the same tables at start-up, so loading it holds no more.
    """

    def __init__(self, out_dir: str, *, max_idle: int = MAX_IDLE_STREAMS,
                 max_gap_samples: int = MAX_GAP_S * protocol.SAMPLE_RATE) -> None:
        if max_idle < 1:
            raise ValueError(f"max_idle must be at least 1, not {max_idle}")
        self.out_dir = out_dir
        self.max_idle = max_idle
        self.max_gap_samples = max_gap_samples
        os.makedirs(out_dir, exist_ok=True)
        self.active: dict[str, StreamFile] = {}
        self.idle_open: OrderedDict[str, StreamFile] = OrderedDict()
        self.idle_ended: OrderedDict[str, StreamFile] = OrderedDict()
        self.evicted = 0  # streams forgotten to keep the bound
        self._paths: set[str] = set()  # paths of the streams in the three tables
        self._index_fd: int | None = None
        self._messages_fd: int | None = None
        self._load()
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        self._index_fd = os.open(os.path.join(out_dir, STREAMS_LOG), flags, 0o644)
        self._messages_fd = os.open(os.path.join(out_dir, MESSAGES_LOG), flags, 0o644)

    @property
    def streams(self) -> ChainMap:
        """Every stream known: stream_id → :class:`StreamFile` (a read-only view)."""
        return ChainMap(self.active, self.idle_open, self.idle_ended)

    def get(self, stream_id: str) -> StreamFile | None:
        return self.active.get(stream_id) or self.idle_open.get(stream_id) or self.idle_ended.get(stream_id)

    # -- start-up ---------------------------------------------------------------------

    def _load(self) -> None:
        path = os.path.join(self.out_dir, STREAMS_LOG)
        if not os.path.exists(path):
            return
        with open(path, "rb") as f:
            for lineno, line in enumerate(_bounded_lines(f, MAX_INDEX_LINE), 1):
                try:
                    if line is None:
                        raise ValueError(f"longer than {MAX_INDEX_LINE} bytes")
                    self._apply(load_json(line))
                except (ValueError, KeyError, TypeError) as e:  # a line torn by a crash, say
                    log.warning("%s line %d skipped: %s", STREAMS_LOG, lineno, e)
        for s in self.streams.values():
            self._fix_file(s)

    def _apply(self, rec: dict) -> None:
        sid = rec["stream_id"]
        if not isinstance(sid, str):
            raise TypeError(f"stream_id is {type(sid).__name__}")
        if rec["event"] == "open":
            s = StreamFile(sid, rec["call_id"], rec["tag"], rec["path"], int(rec["channels"]))
            if s.channels not in (1, 2):
                raise ValueError(f"bad channels {s.channels}")
            if not valid_path(s.path):
                raise ValueError(f"path {s.path!r} is not inside the output directory")
            self._forget(sid)
            self._park(s)
        elif rec["event"] == "end":
            s = self.idle_open.pop(sid, None) or self.idle_ended.pop(sid, None)
            if s is not None:  # else forgotten already
                s.ended = True
                self._park(s)

    def _fix_file(self, s: StreamFile) -> None:
        """Make an existing file a valid WAV of the whole samples it holds (after a crash)."""
        try:
            fd = os.open(self._abs(s), os.O_RDWR)
        except FileNotFoundError:
            return
        try:
            s.samples = self._fix_fd(s, fd)
        finally:
            os.close(fd)

    def _fix_fd(self, s: StreamFile, fd: int) -> int:
        size = os.fstat(fd).st_size
        samples = max(0, size - HEADER_BYTES) // s.block
        if size != HEADER_BYTES + samples * s.block:
            os.ftruncate(fd, HEADER_BYTES + samples * s.block)  # a torn last sample, or no header yet
        header = wav_header(samples * s.block, s.channels)
        if os.pread(fd, HEADER_BYTES, 0) != header:
            os.pwrite(fd, header, 0)
        s._header_samples = samples
        return samples

    # -- the tables -------------------------------------------------------------------

    def _park(self, s: StreamFile) -> None:
        """``s`` has no connection: keep it (newest), and forget the longest-idle beyond ``max_idle``."""
        (self.idle_ended if s.ended else self.idle_open)[s.stream_id] = s
        self._paths.add(s.path)
        while len(self.idle_open) + len(self.idle_ended) > self.max_idle:
            _, gone = (self.idle_ended or self.idle_open).popitem(last=False)
            self._paths.discard(gone.path)
            self.evicted += 1

    def _forget(self, sid: str) -> None:
        for table in (self.idle_open, self.idle_ended):
            gone = table.pop(sid, None)
            if gone is not None:
                self._paths.discard(gone.path)

    # -- streams ----------------------------------------------------------------------

    def attach(self, start: dict, now: float) -> tuple[StreamFile, bool]:
        """The stream of a ``start`` message, opened for writing; (stream, created)."""
        sid = start["stream_id"]
        s = self.get(sid)
        created = s is None
        if s is None:
            s = StreamFile(sid, start["call_id"], start["tag"], self._new_path(start), int(start["channels"]))
            self._append(self._index_fd, {"event": "open", "stream_id": sid, "call_id": s.call_id, "tag": s.tag,
                                          "path": s.path, "channels": s.channels, "created": now})
        else:
            for key in ("call_id", "tag", "channels"):
                if start[key] != getattr(s, key):
                    raise Refusal(protocol.CLOSE_POLICY_VIOLATION,
                                  f"invalid start: {key} differs from the earlier start of this stream_id")
        if s.fd is None:
            try:
                path = self._abs(s)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                s.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
                s.samples = self._fix_fd(s, s.fd)
            except OSError:
                if s.fd is not None:
                    os.close(s.fd)
                    s.fd = None
                if created:
                    self._park(s)  # streams.jsonl has it: so does memory, for a resume
                raise
        self._forget(sid)
        self.active[sid] = s
        self._paths.add(s.path)
        s.attached += 1
        s.ended = False  # until the next end; the header is fixed again on end and detach
        return s, created

    def write(self, s: StreamFile, offset: int, data: bytes) -> None:
        """Audio at ``offset``: overwrites what is there; a hole before it reads as zeros."""
        if not data:
            return
        if offset - s.samples > self.max_gap_samples:
            raise Refusal(protocol.CLOSE_POLICY_VIOLATION,
                          f"offset {offset} is more than {self.max_gap_samples / protocol.SAMPLE_RATE:g} s "
                          f"beyond the end of the stream ({s.samples} samples)")
        os.pwrite(s.fd, data, HEADER_BYTES + offset * s.block)
        s.samples = max(s.samples, offset + len(data) // s.block)
        s.frames += 1
        s.bytes += len(data)
        if s.samples - s._header_samples >= HEADER_REFRESH_SAMPLES:
            self._write_header(s)

    def finish(self, s: StreamFile, end: dict, now: float) -> None:
        s.ended = True
        self._write_header(s)
        self._append(self._index_fd, {"event": "end", "stream_id": s.stream_id, "received": now, "end": end})

    def detach(self, s: StreamFile) -> None:
        s.attached -= 1
        if s.attached > 0:
            return
        s.attached = 0
        if s.fd is not None:
            try:
                self._write_header(s)
            finally:
                os.close(s.fd)
                s.fd = None
        if self.active.get(s.stream_id) is s:
            del self.active[s.stream_id]
            self._park(s)

    def log_message(self, now: float, stream_id: str | None, remote: str, message: dict) -> None:
        self._append(self._messages_fd, {"received": now, "stream_id": stream_id, "remote": remote,
                                         "message": message})

    def close(self) -> None:
        for s in list(self.active.values()):
            s.attached = 1
            self.detach(s)
        for name in ("_index_fd", "_messages_fd"):
            fd = getattr(self, name)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)

    # -- helpers ----------------------------------------------------------------------

    def _abs(self, s: StreamFile) -> str:
        return os.path.join(self.out_dir, s.path)

    def _write_header(self, s: StreamFile) -> None:
        if s.fd is not None and s._header_samples != s.samples:
            os.pwrite(s.fd, wav_header(s.samples * s.block, s.channels), 0)
            s._header_samples = s.samples

    def _new_path(self, start: dict) -> str:
        folder, tag = safe_name(start["call_id"]), start["tag"]
        if folder.lower() in _OWN_FILES:
            # A call_id naming one of the sink's own files ("streams.jsonl") would make a
            # folder where that file is: such a folder gets wavout's hashed name instead.
            folder = folder_name(start["call_id"] + "\0")
        for n in range(1, MAX_NAME_SUFFIX):
            rel = f"{folder}/{tag}.wav" if n == 1 else f"{folder}/{tag}-{n}.wav"
            if rel not in self._paths and not os.path.exists(os.path.join(self.out_dir, rel)):
                return rel
        raise Refusal(protocol.CLOSE_POLICY_VIOLATION, f"too many streams for call_id with tag {tag}")

    @staticmethod
    def _append(fd: int | None, record: dict) -> None:
        try:
            text = json.dumps(record, separators=(",", ":"), ensure_ascii=False)
            line = (text + "\n").encode()
        except UnicodeEncodeError:  # a lone surrogate ("\ud800" in the JSON): keep it escaped, the file UTF-8
            line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        os.write(fd, line)  # O_APPEND: one write per line


def _bounded_lines(f, limit: int):
    """The lines of binary file ``f``, each None if longer than ``limit`` (never held whole)."""
    while True:
        line = f.readline(limit + 1)
        if not line:
            return
        if len(line) > limit and not line.endswith(b"\n"):
            while line and not line.endswith(b"\n"):  # skip the rest of it
                line = f.readline(limit + 1)
            yield None
        else:
            yield line


# -- websockets adapter ----------------------------------------------------------------


class SinkServer:
    def __init__(self, out_dir: str, *, token: str | None = None, ssl_context: ssl.SSLContext | None = None,
                 ping_interval: float | None = 20.0, ping_timeout: float | None = 20.0,
                 max_size: int = 2 ** 20, start_timeout: float | None = START_TIMEOUT_S,
                 max_idle: int = MAX_IDLE_STREAMS, max_gap_s: float = MAX_GAP_S) -> None:
        self.out_dir = out_dir
        self.store = StreamStore(out_dir, max_idle=max_idle, max_gap_samples=int(max_gap_s * protocol.SAMPLE_RATE))
        self.start_timeout = start_timeout or None
        self._token = token.encode() if token else None
        self.ssl_context = ssl_context
        self.ping_interval = ping_interval or None
        self.ping_timeout = ping_timeout or None
        self.max_size = max_size
        self.stats: dict = {"connections": 0, "active": 0, "streams": 0, "resumes": 0, "unknown_resumes": 0,
                            "frames": 0, "bytes": 0, "messages": 0, "ends": 0, "refused": {}}
        self._server = None

    @property
    def streams(self) -> dict[str, StreamFile]:
        return self.store.streams

    @property
    def scheme(self) -> str:
        return "wss" if self.ssl_context is not None else "ws"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        from websockets.asyncio.server import serve

        self._server = await serve(self._handler, host, port, process_request=self._check_token,
                                   ssl=self.ssl_context, ping_interval=self.ping_interval,
                                   ping_timeout=self.ping_timeout, max_size=self.max_size)
        return self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close(close_connections=True)
            await self._server.wait_closed()
            self._server = None
        self.store.close()

    def _refused(self, code: int, remote: str, reason: str) -> None:
        self.stats["refused"][code] = self.stats["refused"].get(code, 0) + 1
        log.warning("refused %s: %d %s", remote, code, reason)

    def _check_token(self, connection, request):
        if self._token is None:
            return None
        value = request.headers.get("Authorization", "")
        scheme, _, given = value.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self._token):
            return None
        reason = "missing bearer token" if not value else "wrong bearer token"
        self._refused(HTTPStatus.UNAUTHORIZED.value, format_remote(connection.remote_address), reason)
        response = connection.respond(HTTPStatus.UNAUTHORIZED, reason + "\n")
        response.headers["WWW-Authenticate"] = "Bearer"
        return response

    async def _handler(self, ws) -> None:
        from websockets.exceptions import ConnectionClosed

        remote = format_remote(ws.remote_address)
        session = Session()
        stream: StreamFile | None = None
        refusal: Refusal | None = None
        self.stats["connections"] += 1
        self.stats["active"] += 1
        try:
            while True:
                if session.start is None and self.start_timeout is not None:
                    try:
                        data = await asyncio.wait_for(ws.recv(), self.start_timeout)
                    except asyncio.TimeoutError:
                        refusal = Refusal(protocol.CLOSE_POLICY_VIOLATION, f"no start within {self.start_timeout:g} s")
                        break
                else:
                    data = await ws.recv()
                now = time.time()
                try:
                    stream = self._receive(session, stream, data, now, remote)
                except Refusal as r:
                    refusal = r
                    break
                if session.ended:
                    break
        except ConnectionClosed:
            pass
        except OSError as e:  # disk full, permissions: this connection fails, the others go on
            log.error("%s stream %s: %s", remote, session.stream_id, e)
            refusal = Refusal(1011, "sink cannot write the stream")
        finally:
            self.stats["active"] -= 1
            if stream is not None:
                self.store.detach(stream)
        if refusal is not None:
            self._refused(refusal.code, remote, refusal.reason)
            await ws.close(refusal.code, refusal.reason)
        elif session.ended:
            await ws.close(protocol.CLOSE_NORMAL, "end received")
        else:
            sent = ws.protocol.close_sent
            if sent is not None and sent.code not in (protocol.CLOSE_NORMAL, 1001):
                self._refused(sent.code, remote, sent.reason)  # websockets refused it (1009, 1007, 1002)
            elif stream is not None:
                log.info("%s stream %s: connection closed before end at %d samples", remote,
                         stream.stream_id, stream.samples)

    def _receive(self, session: Session, stream: StreamFile | None, data, now: float, remote: str):
        if isinstance(data, str):
            event = session.receive_text(data, now)
            if isinstance(event, Started) and stream is None:
                stream, created = self.store.attach(event.message, now)
                self.stats["streams" if created else "resumes"] += 1
                if created and event.message["resumed"]:
                    self.stats["unknown_resumes"] += 1
                    log.warning("%s stream %s resumed at offset %d but unknown here (ended or idle longer than the "
                                "last %d streams, or never seen): new file %s", remote, stream.stream_id,
                                event.message["offset"], self.store.max_idle, stream.path)
                else:
                    log.info("%s stream %s %s (%s) -> %s at offset %d", remote, stream.stream_id,
                             "started" if created else "resumed", stream.tag, stream.path, event.message["offset"])
            self.store.log_message(now, session.stream_id, remote, event.message)
            self.stats["messages"] += 1
            if isinstance(event, Ended):
                self.store.finish(stream, event.message, now)
                self.stats["ends"] += 1
        else:
            audio = session.receive_binary(data)
            self.store.write(stream, audio.offset, audio.data)
            self.stats["frames"] += 1
            self.stats["bytes"] += len(audio.data)
        return stream


# -- command line ------------------------------------------------------------------


def parse_listen(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` → (host, port); port 0 picks a free one."""
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^:\[\]]*):(\d{1,5})", text)
    if not m:
        raise ValueError(f"listen address must be host:port, not {text!r}")
    host, port = (m.group(1), m.group(2)) if m.group(1) else (m.group(3) or "0.0.0.0", m.group(4))
    if int(port) > 65535:
        raise ValueError(f"port {port} out of range")
    return host, int(port)


def sink_token(args) -> str | None:
    """--token, else --token-file, else $RTP2WS_SINK_TOKEN, else None (no check)."""
    if getattr(args, "token", None):
        return args.token
    if getattr(args, "token_file", None):
        with open(args.token_file) as f:
            token = f.read().strip()
        if not token:
            raise ValueError(f"token file {args.token_file} is empty")
        return token
    return os.environ.get(TOKEN_ENV) or None


def server_ssl_context(cert: str, key: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


async def _serve_until_signal(server: SinkServer, host: str, port: int) -> None:
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    bound = await server.start(host, port)
    shown = f"[{host}]" if ":" in host else host
    print(f"rtp2ws sink listening on {server.scheme}://{shown}:{bound}", flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop()
        s = server.stats
        log.info("stopped: %d connections, %d streams, %d resumes, %d ends, %d frames, refused %s",
                 s["connections"], s["streams"], s["resumes"], s["ends"], s["frames"], s["refused"])


def run_sink(args) -> int:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    try:
        os.makedirs(args.out_dir, exist_ok=True)
    except OSError as e:
        print(f"rtp2ws: error: --out-dir {args.out_dir}: {e.strerror or e}", file=sys.stderr)
        return 2
    try:
        host, port = parse_listen(args.listen)
        token = sink_token(args)
        ctx = server_ssl_context(args.cert, args.key) if args.cert else None
        if args.key and not args.cert:
            raise ValueError("--key needs --cert")
        server = SinkServer(args.out_dir, token=token, ssl_context=ctx, ping_interval=args.ping_interval,
                            ping_timeout=args.ping_timeout, max_size=args.max_size)
    except (OSError, ValueError, ssl.SSLError) as e:
        print(f"rtp2ws: error: {e}", file=sys.stderr)
        return 2
    try:
        from uvloop import run
    except ImportError:
        run = asyncio.run
    try:
        run(_serve_until_signal(server, host, port))
    except OSError as e:  # address in use
        print(f"rtp2ws: error: {e}", file=sys.stderr)
        return 2
    return 0
