"""``rtp2ws sink``: the reference analysis server.

It accepts the wire protocol of :mod:`rtp2ws.protocol` and writes one WAV per
stream, ``<out-dir>/<safe call_id>/<tag>.wav``, byte-identical to what
:class:`rtp2ws.wavout.WavFile` writes for the same samples once the stream has
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
from dataclasses import dataclass, field
from http import HTTPStatus

import jsonschema
from jsonschema.exceptions import best_match

from . import protocol
from .wavout import safe_name, wav_header

log = logging.getLogger("rtp2ws.sink")

HEADER_BYTES = 44
MAX_DATA_BYTES = 0xFFFFFFFF - 36  # the RIFF size field is 32 bits
MAX_REASON_BYTES = 123  # RFC 6455 5.5: control frame payload ≤ 125, 2 of them the code
MAX_NAME_SUFFIX = 10000  # <tag>-2.wav … <tag>-9999.wav
HEADER_REFRESH_SAMPLES = protocol.SAMPLE_RATE  # rewrite the header about once per second of audio
STREAMS_LOG = "streams.jsonl"
MESSAGES_LOG = "messages.jsonl"
TOKEN_ENV = "RTP2WS_SINK_TOKEN"

_VALIDATORS = {name: jsonschema.Draft202012Validator(schema) for name, schema in protocol.SCHEMAS.items()}


def clip_reason(text: str) -> str:
    """``text`` cut to fit a close frame (≤ 123 bytes of UTF-8)."""
    raw = text.encode()
    if len(raw) <= MAX_REASON_BYTES:
        return text
    return raw[:MAX_REASON_BYTES - 3].decode(errors="ignore") + "..."


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


def parse_message(text: str) -> dict:
    """One text message, validated against its schema, or :class:`Refusal`."""
    try:
        msg = json.loads(text)
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

    def __init__(self) -> None:
        self.start: dict | None = None
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
            self.start = msg
            self.block = 2 * msg["channels"]
            self.position = msg["offset"]
            self._check_offset(self.position, 0)
            return Started(msg, now)
        if kind == "drop":
            self.position = msg["offset"]
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


@dataclass
class StreamFile:
    stream_id: str
    call_id: str
    tag: str
    path: str  # relative to the output directory
    channels: int
    samples: int = 0  # per channel, the length of the WAV's data
    ended: bool = False
    end: dict | None = None
    frames: int = 0
    bytes: int = 0
    attached: int = 0  # connections writing to it
    fd: int | None = field(default=None, repr=False)
    _header_samples: int = field(default=-1, repr=False)

    @property
    def block(self) -> int:
        return 2 * self.channels


class StreamStore:
    """The output directory: WAV per stream, ``streams.jsonl``, ``messages.jsonl``.

    A file descriptor is held only while a connection is attached to its stream.
    """

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir
        os.makedirs(out_dir, exist_ok=True)
        self.streams: dict[str, StreamFile] = {}
        self._paths: set[str] = set()
        self._index_fd: int | None = None
        self._messages_fd: int | None = None
        self._load()
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        self._index_fd = os.open(os.path.join(out_dir, STREAMS_LOG), flags, 0o644)
        self._messages_fd = os.open(os.path.join(out_dir, MESSAGES_LOG), flags, 0o644)

    # -- start-up ---------------------------------------------------------------------

    def _load(self) -> None:
        path = os.path.join(self.out_dir, STREAMS_LOG)
        if not os.path.exists(path):
            return
        with open(path, "rb") as f:
            for lineno, line in enumerate(f, 1):
                try:
                    self._apply(json.loads(line))
                except (ValueError, KeyError, TypeError) as e:  # a line torn by a crash, say
                    log.warning("%s line %d skipped: %s", STREAMS_LOG, lineno, e)
        for s in self.streams.values():
            self._fix_file(s)

    def _apply(self, rec: dict) -> None:
        sid = rec["stream_id"]
        if rec["event"] == "open":
            s = StreamFile(sid, rec["call_id"], rec["tag"], rec["path"], int(rec["channels"]))
            if s.channels not in (1, 2):
                raise ValueError(f"bad channels {s.channels}")
            self.streams[sid] = s
            self._paths.add(s.path)
        elif rec["event"] == "end":
            s = self.streams[sid]
            s.ended, s.end = True, rec.get("end")

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

    # -- streams ----------------------------------------------------------------------

    def attach(self, start: dict, now: float) -> tuple[StreamFile, bool]:
        """The stream of a ``start`` message, opened for writing; (stream, created)."""
        sid = start["stream_id"]
        s = self.streams.get(sid)
        created = s is None
        if s is None:
            s = StreamFile(sid, start["call_id"], start["tag"], self._new_path(start), start["channels"])
            self._append(self._index_fd, {"event": "open", "stream_id": sid, "call_id": s.call_id, "tag": s.tag,
                                          "path": s.path, "channels": s.channels, "created": now})
            self.streams[sid] = s
            self._paths.add(s.path)
        else:
            for key in ("call_id", "tag", "channels"):
                if start[key] != getattr(s, key):
                    raise Refusal(protocol.CLOSE_POLICY_VIOLATION,
                                  f"invalid start: {key} differs from the earlier start of this stream_id")
        if s.fd is None:
            path = self._abs(s)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            s.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            s.samples = self._fix_fd(s, s.fd)
        s.attached += 1
        s.ended = False  # until the next end; the header is fixed again on end and detach
        return s, created

    def write(self, s: StreamFile, offset: int, data: bytes) -> None:
        """Audio at ``offset``: overwrites what is there; a hole before it reads as zeros."""
        if not data:
            return
        os.pwrite(s.fd, data, HEADER_BYTES + offset * s.block)
        s.samples = max(s.samples, offset + len(data) // s.block)
        s.frames += 1
        s.bytes += len(data)
        if s.samples - s._header_samples >= HEADER_REFRESH_SAMPLES:
            self._write_header(s)

    def finish(self, s: StreamFile, end: dict, now: float) -> None:
        s.ended, s.end = True, end
        self._write_header(s)
        self._append(self._index_fd, {"event": "end", "stream_id": s.stream_id, "received": now, "end": end})

    def detach(self, s: StreamFile) -> None:
        s.attached -= 1
        if s.attached <= 0 and s.fd is not None:
            s.attached = 0
            self._write_header(s)
            os.close(s.fd)
            s.fd = None

    def log_message(self, now: float, stream_id: str | None, remote: str, message: dict) -> None:
        self._append(self._messages_fd, {"received": now, "stream_id": stream_id, "remote": remote,
                                         "message": message})

    def close(self) -> None:
        for s in self.streams.values():
            if s.fd is not None:
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
        for n in range(1, MAX_NAME_SUFFIX):
            rel = f"{folder}/{tag}.wav" if n == 1 else f"{folder}/{tag}-{n}.wav"
            if rel not in self._paths and not os.path.exists(os.path.join(self.out_dir, rel)):
                return rel
        raise Refusal(protocol.CLOSE_POLICY_VIOLATION, f"too many streams for call_id with tag {tag}")

    @staticmethod
    def _append(fd: int | None, record: dict) -> None:
        line = (json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
        os.write(fd, line)  # O_APPEND: one write per line


# -- websockets adapter ----------------------------------------------------------------


class SinkServer:
    def __init__(self, out_dir: str, *, token: str | None = None, ssl_context: ssl.SSLContext | None = None,
                 ping_interval: float | None = 20.0, ping_timeout: float | None = 20.0,
                 max_size: int = 2 ** 20) -> None:
        self.out_dir = out_dir
        self.store = StreamStore(out_dir)
        self._token = token.encode() if token else None
        self.ssl_context = ssl_context
        self.ping_interval = ping_interval or None
        self.ping_timeout = ping_timeout or None
        self.max_size = max_size
        self.stats: dict = {"connections": 0, "active": 0, "streams": 0, "resumes": 0, "frames": 0, "bytes": 0,
                            "messages": 0, "ends": 0, "refused": {}}
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
            async for data in ws:
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
