"""``rtp2ws sink``: the reference analysis server, its files and its logs.

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

* :class:`~rtp2ws.sinkserver.session.Session` (``session.py``) is the sans-I/O
  protocol state of one connection: text and bytes in (with ``now``), typed
  events out, :class:`~rtp2ws.sinkserver.session.Refusal` (close code and
  reason) for malformed input. No sockets, no files, no clock.
* :class:`StreamStore` (here) owns the files. Audio goes to the OS at once with
  ``os.pwrite`` at the frame's offset (overwrite what is there, holes read as
  zeros), so a SIGKILLed sink loses nothing the kernel has; WAV headers are
  fixed on ``end``, on detach, on reopen and at start-up.
* :class:`SinkServer` (here) is the thin websockets adapter: it reads the
  clock, hands each message to the connection's ``Session`` and the events to
  the store, and closes with the refusal's code.

Everything a client sends is bounded before it is used: the message limits are
the session's (``MAX_TEXT_CHARS``, ``MAX_JSON_DEPTH``, ``MAX_ID_CHARS``, the
4 GiB WAV limit); here, a frame lands at most ``max_gap_s`` beyond the end of
its stream, a connection must send ``start`` within ``start_timeout`` seconds,
and every record of the ``rtp2ws.sink`` logger is one printable line
(:func:`~rtp2ws.sinkserver.session.printable`). Memory: a stream with no
connection keeps only what a resume needs (stream_id, call_id, tag, channels,
codec, sample rate, path, samples written), and at most ``max_idle`` such streams are kept, ended
ones forgotten first, oldest first; a stream resumed after it was forgotten
gets a new file and a warning.
"""

from __future__ import annotations

import asyncio
import builtins
import hmac
import json
import logging
import os
import re
import ssl
import sys
import time
from collections import ChainMap, OrderedDict
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from ..sinks.wav import folder_name, header_bytes, safe_name, wav_header
from ..ws import protocol
from .session import MAX_TEXT_CHARS, Ended, Refusal, Session, Started, load_json, printable

if TYPE_CHECKING:
    from websockets.asyncio.server import Server

log = logging.getLogger("rtp2ws.sink")

HEADER_BYTES = 44   # of an L16 stream's WAV (PCMU/PCMA: sinks.wav.G711_HEADER)
_ENCODINGS = {"L16": "l16", "PCMU": "mulaw", "PCMA": "alaw"}    # a start's codec -> sinks.wav's encoding
MAX_NAME_SUFFIX = 10000  # <tag>-2.wav … <tag>-9999.wav
HEADER_REFRESH_SAMPLES = protocol.SAMPLE_RATE  # rewrite the header about once per second of audio
STREAMS_LOG = "streams.jsonl"
MESSAGES_LOG = "messages.jsonl"
_OWN_FILES = frozenset(n.lower() for n in (STREAMS_LOG, MESSAGES_LOG, STREAMS_LOG + ".tmp", MESSAGES_LOG + ".tmp"))
TOKEN_ENV = "RTP2WS_SINK_TOKEN"
MAX_IDLE_STREAMS = 10000  # streams without a connection whose resume state is kept
MAX_GAP_S = 3600  # a frame may land at most this far beyond the end of its stream (zeros in between)
START_TIMEOUT_S = 10.0  # a connection must send start this soon after its handshake
MAX_INDEX_LINE = 4 * MAX_TEXT_CHARS + 4096  # a streams.jsonl line: an end record holds the end message


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


def stream_extra(stream: StreamFile | None, session: Session | None = None) -> dict[str, str]:
    """``extra=`` of a log line about a stream: its stream_id, call_id and tag (JSON logs
    carry them as keys; text shows what the message says)."""
    if stream is not None:
        return {"stream_id": stream.stream_id, "call_id": stream.call_id, "tag": stream.tag}
    if session is not None and session.stream_id is not None:
        return {"stream_id": session.stream_id}
    return {}


def format_remote(addr) -> str:
    if not addr:
        return "?"
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


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
    codec: str = protocol.CODEC                # of the start: the WAV's format and sample size
    sample_rate: int = protocol.SAMPLE_RATE
    samples: int = 0  # per channel, the length of the WAV's data
    ended: bool = False
    frames: int = 0
    bytes: int = 0
    attached: int = 0  # connections writing to it
    fd: int | None = field(default=None, repr=False)
    _header_samples: int = field(default=-1, repr=False)

    @property
    def encoding(self) -> str:
        return _ENCODINGS[self.codec]

    @property
    def block(self) -> int:
        return (2 if self.codec == "L16" else 1) * self.channels

    @property
    def header_bytes(self) -> int:
        return header_bytes(self.encoding)

    def header(self) -> builtins.bytes:     # (``bytes`` is a field here)
        return wav_header(self.samples * self.block, self.channels, self.sample_rate, self.encoding)


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
    def streams(self) -> ChainMap[str, StreamFile]:
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
            s = StreamFile(sid, rec["call_id"], rec["tag"], rec["path"], int(rec["channels"]),
                           rec.get("codec", protocol.CODEC), int(rec.get("sample_rate", protocol.SAMPLE_RATE)))
            if s.channels not in (1, 2):
                raise ValueError(f"bad channels {s.channels}")
            if s.codec not in _ENCODINGS or s.sample_rate not in protocol.SAMPLE_RATES:
                raise ValueError(f"bad codec {s.codec!r} or sample rate {s.sample_rate}")
            if not valid_path(s.path):
                raise ValueError(f"path {s.path!r} is not inside the output directory")
            self._forget(sid)
            self._park(s)
        elif rec["event"] == "end":
            parked = self.idle_open.pop(sid, None) or self.idle_ended.pop(sid, None)
            if parked is not None:  # else forgotten already
                parked.ended = True
                self._park(parked)

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
        head = s.header_bytes
        samples = max(0, size - head) // s.block
        if size != head + samples * s.block:
            os.ftruncate(fd, head + samples * s.block)  # a torn last sample, or no header yet
        s.samples = samples
        header = s.header()
        if os.pread(fd, head, 0) != header:
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
            s = StreamFile(sid, start["call_id"], start["tag"], self._new_path(start), int(start["channels"]),
                           start["codec"], int(start["sample_rate"]))
            self._append(self._index_fd, {"event": "open", "stream_id": sid, "call_id": s.call_id, "tag": s.tag,
                                          "path": s.path, "channels": s.channels, "codec": s.codec,
                                          "sample_rate": s.sample_rate, "created": now})
        else:
            for key in ("call_id", "tag", "channels", "codec", "sample_rate"):
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
        gap = self.max_gap_samples * s.sample_rate // protocol.SAMPLE_RATE     # max_gap_samples: at 16 kHz
        if offset - s.samples > gap:
            raise Refusal(protocol.CLOSE_POLICY_VIOLATION,
                          f"offset {offset} is more than {gap / s.sample_rate:g} s "
                          f"beyond the end of the stream ({s.samples} samples)")
        assert s.fd is not None  # an attached stream (attach opened it; the last detach closes it)
        os.pwrite(s.fd, data, s.header_bytes + offset * s.block)
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
            os.pwrite(s.fd, s.header(), 0)
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
        assert fd is not None  # the logs are open from the end of __init__ until close()
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
        self._server: Server | None = None

    @property
    def streams(self) -> Mapping[str, StreamFile]:
        return self.store.streams

    @property
    def scheme(self) -> str:
        return "wss" if self.ssl_context is not None else "ws"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        from websockets.asyncio.server import serve

        server = self._server = await serve(self._handler, host, port, process_request=self._check_token,
                                            ssl=self.ssl_context, ping_interval=self.ping_interval,
                                            ping_timeout=self.ping_timeout, max_size=self.max_size)
        return server.sockets[0].getsockname()[1]

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
            log.error("%s stream %s: %s", remote, session.stream_id, e, extra=stream_extra(stream, session))
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
                         stream.stream_id, stream.samples, extra=stream_extra(stream))

    def _receive(self, session: Session, stream: StreamFile | None, data: str | bytes, now: float,
                 remote: str) -> StreamFile | None:
        if isinstance(data, str):
            event = session.receive_text(data, now)
            if isinstance(event, Started) and stream is None:
                stream, created = self.store.attach(event.message, now)
                self.stats["streams" if created else "resumes"] += 1
                if created and event.message["resumed"]:
                    self.stats["unknown_resumes"] += 1
                    log.warning("%s stream %s resumed at offset %d but unknown here (ended or idle longer than the "
                                "last %d streams, or never seen): new file %s", remote, stream.stream_id,
                                event.message["offset"], self.store.max_idle, stream.path, extra=stream_extra(stream))
                else:
                    log.info("%s stream %s %s (%s) -> %s at offset %d", remote, stream.stream_id,
                             "started" if created else "resumed", stream.tag, stream.path, event.message["offset"],
                             extra=stream_extra(stream))
            self.store.log_message(now, session.stream_id, remote, event.message)
            self.stats["messages"] += 1
            if isinstance(event, Ended):
                assert stream is not None  # the session ends only after its start, which attached it
                self.store.finish(stream, event.message, now)
                self.stats["ends"] += 1
        else:
            audio = session.receive_binary(data)
            assert stream is not None  # the session takes audio only after its start, which attached it
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


SINK_LOG_FORMAT = "%(asctime)s %(name)s %(message)s"


def run_sink(args) -> int:
    from ..run import logs

    # the sink's own records are one line already (OneLine); json escapes whatever else comes
    logging_ = logs.setup(getattr(args, "log_level", "info"), getattr(args, "log_format", "text"),
                          text_format=SINK_LOG_FORMAT, escape=False)
    try:
        return _run_sink(args)
    finally:
        logging_.restore()


def _run_sink(args) -> int:
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
    run: Callable[[Coroutine[Any, Any, None]], None]
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
