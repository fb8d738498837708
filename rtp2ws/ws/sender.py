"""The WebSocket connections: one per stream, fed from the capture without
ever making it wait.  The asyncio adapter around :mod:`rtp2ws.ws.outbox`.

This module moves bytes and waits; it keeps no queue logic of its own.  Each
stream's :class:`~rtp2ws.ws.outbox.Outbox` holds what is still to be sent, the
resend window, the offsets and the counts of what was dropped or undelivered,
and decides what counts as delivered.  It is not the message shapes
(``ws.protocol``), nor the framing (``ws.frame``), nor the hand-off from the
pipeline thread (``ws.bridge``), nor the socket writes (``ws.wire``).

Two threads use it.  The pipeline's thread queues (``Stream.send_audio``,
``send_event``, ``end``: plain appends to the stream's outbox) and then calls
``Sender.flush``, which hands every plain-TCP connection that may write now to one
call, ``ws.wire.send_batches``: each one's batch (events, ``drop`` marks and audio,
in stream order) framed and written straight to the socket through the
connection's :class:`~rtp2ws.ws.wire.Wire` (in C, with no Python per frame).
The event loop's thread runs each stream's task, which connects, sends ``start``
and the resend, sends ``end`` and closes, and when the connection breaks,
reconnects with backoff and resumes (``"resumed": true``, the audio sent but not
acknowledged again, then the queue); it also writes TLS connections' batches
(through asyncio's transport, once per loop wake) and retries wires whose socket
was full.  One lock (``Sender._lock``) is held for every outbox operation and
every write, so frames never interleave whichever thread writes; used from the
event loop alone (tests, tools), the sender flushes once per loop wake by itself.

Delivery needs evidence (see ``ws.outbox``): this module writes an
acknowledgement ping after the audio when the outbox has one due (every
``max(resend_ms / 2, 500 ms)`` of audio, in the same write) and hands it the
pongs and the server's close frame that answers the close after ``end``.

websockets does the opening handshake, pings and pongs, keepalive, the closing
handshake and all reading; rtp2ws writes only whole data frames (and its
acknowledgement pings, which websockets hands back answered), only while
websockets has the connection OPEN (never once a close frame went either way),
with compression off so no extension touches the frames.  Once open, websockets
itself writes through the wire too (``WireTransport``), so the control frames it
writes land between whole frames.  No new batch is taken while the wire holds
bytes its socket did not take (for TLS: while the transport is over websockets'
high-water mark, ``paused``).

Memory is bounded per stream whatever the server does: the outbox's bounds
(``max_buffer_ms`` of unsent audio, ``resend_ms`` kept for a resume,
``MAX_EVENTS`` events), plus what waits for the socket: one batch
(``BATCH_BYTES``) and websockets' few control frames (TLS: the transport's
high-water mark and one batch).

The format (``--ws-format``, ``ws.formats``) decides the rest of what goes on the
wire: the subprotocol offered, each connection's first message (rtp2ws's
``start`` with ``resumed`` and ``offset``, or another server's), which events
go out and how, and whether the stream resumes.  A format without resume
(``vonage``, ``audiofork``, ``jambonz``) keeps no resend window (what the
server had not acknowledged when a connection broke is undelivered), announces
no gap, sends no ``end`` (the close alone ends it), and ``vonage`` completes the
last frame with silence.  An HTTP 400 whose body names the subprotocol, or a
connection opened with a subprotocol the stream did not offer, is refused with
a line saying which format offers which.

``twilio`` (``Format.text_media``) sends its audio as JSON text messages whose
sequence numbers count the messages of each connection, so they are made as
they are written: its streams have no wire (the C data plane writes binary
frames) and are written from the event loop, as TLS ones are; ``Stream._send``
hands the outbox's batch to the stream's ``ws.twilio.TwilioStream``, which
makes ``connected`` and ``start`` at each connection, the media, ``dtmf`` and
``stop``.

Header values and URL credentials are secrets: nothing logged by this module,
nor by websockets on its behalf, contains them (URLs go through
``redact_url``, websockets' debug lines through a scrubbing logger).
"""

from __future__ import annotations

import asyncio
import base64
import errno
import logging
import os
import random
import re
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI, NegotiationError
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.typing import Subprotocol
from websockets.uri import WebSocketURI, parse_uri

from .. import __version__
from ..codec.audioformat import AudioFormat
from . import formats, hookstream
from . import frame as wsframe
from .lane import LanePy, make_lane, take_marked
from .outbox import Message, Outbox, Totals, ms
from .protocol import CLOSE_INVALID_PAYLOAD, CLOSE_POLICY_VIOLATION, CLOSE_TOO_BIG, CLOSE_UNSUPPORTED_DATA, encode
from .streamtask import StreamTask
from .twilio import DEFAULT_ACCOUNT_SID, TwilioStream
from .wakeup import Wakeup
from .wire import (
    BLOCKED,
    ENDED,
    MARK,
    PENDING,
    SENT,
    WAKE,
    AnyWire,
    Attention,
    KeyPool,
    Wire,
    WireTransport,
    send_batches,
    send_batches_py,
    writable,
)
from .wire import KEY_POOL as KEY_POOL  # masking key bytes drawn at a time (tests read it here)

get_proxy: Callable[[WebSocketURI], str | None] | None
try:
    from websockets.proxy import get_proxy
except ImportError:  # pragma: no cover - websockets < 15 has no proxy support, so nothing to look up
    get_proxy = None

log = logging.getLogger("rtp2ws.sender")

LOG_EVERY_S = 5.0            # at most one connect-failure line per stream this often
STABLE_S = 5.0               # a connection that lived this long resets the backoff
MIN_DELAY_S = 0.01           # never a busy loop, whatever the configuration says
RETRY_STATUS = (408, 429)    # 4xx answers that are worth retrying
# Close codes with which a server refuses the stream itself (see protocol.py): not retried.
REFUSAL_CLOSE_CODES = frozenset({CLOSE_UNSUPPORTED_DATA, CLOSE_INVALID_PAYLOAD, CLOSE_POLICY_VIOLATION, CLOSE_TOO_BIG})
SENSITIVE_HEADERS = {"authorization", "proxy-authorization", "cookie", "set-cookie"}
REDACTED = "<redacted>"
BATCH_BYTES = 64 * 1024      # payload per transport.write; a larger backlog goes out in several

OPEN = State.OPEN
RETRY_S = 0.005              # how often blocked wires are looked at (see ws.wire)
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")   # RFC 9110 field-name (token)


@dataclass
class SenderConfig:
    url: str                                   # ws:// or wss://
    headers: Sequence[tuple[str, str]] = ()    # extra HTTP headers; values are secrets, never logged
    ca_file: str | None = None                 # private CA for wss (verification is always on)
    max_buffer_ms: int = 10000                 # per-stream bound on queued (unsent) audio
    resend_ms: int = 1000                      # sent audio kept until acknowledged, to repeat after a reconnect
    open_timeout: float = 10.0
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    linger_s: float | None = None              # after end(): retry this long, then give up (see .linger)
    # Closing handshake: an end whose close is not answered by then is not delivered (also
    # bounds dead-peer detection after a ping timeout).
    close_timeout: float = 10.0
    # Opening handshakes in flight at once: thousands of calls already in progress when
    # rtp2ws starts (or when the server comes back) connect a batch at a time instead of
    # flooding the server's listen backlog, and each waits its turn before open_timeout starts.
    max_connecting: int = 64
    # What goes on the wire (ws.formats): "rtp2ws" (docs/protocol.md), "seed" (a tag per stream),
    # or another server's protocol ("vonage", "audiofork", "jambonz", "twilio"): no resume, no rtp2ws messages.
    ws_format: str = "rtp2ws"
    # The audio every stream carries (--rate, --encoding): samples a millisecond and bytes a
    # sample of the outboxes, and the milliseconds the statistics report.
    audio: AudioFormat = AudioFormat()
    twilio_account_sid: str = DEFAULT_ACCOUNT_SID    # the accountSid of --ws-format twilio's messages

    @property
    def linger(self) -> float:
        """How long an ended stream keeps trying to deliver: ``linger_s``, or by
        default as long as its buffer holds audio, and at least 10 s, so that a
        server restarting at the end of a call still gets the end of it."""
        if self.linger_s is not None:
            return self.linger_s
        return max(10.0, self.max_buffer_ms / 1000)


# --------------------------------------------------------------------------- helpers

def load_headers(values: Sequence[str], env_names: Sequence[str] = (),
                 files: Sequence[str] = ()) -> list[tuple[str, str]]:
    """Parse ``Name: value`` headers from ``--header`` values, from environment
    variables named by ``--header-env`` (one header a line) and from files
    given by ``--header-file`` (one a line, ``#`` comments and blank lines
    skipped).  Error messages name where the line came from, never its value."""
    headers: list[tuple[str, str]] = []
    for i, value in enumerate(values, 1):
        headers.append(_parse_header(value, f"--header #{i}"))
    for name in env_names:
        text = os.environ.get(name)
        if text is None:
            raise ValueError(f"--header-env {name}: environment variable is not set")
        lines = [ln for ln in text.splitlines() if ln.strip()]
        if not lines:
            raise ValueError(f"--header-env {name}: environment variable is empty")
        for n, line in enumerate(lines, 1):
            headers.append(_parse_header(line, f"--header-env {name}" + (f" line {n}" if len(lines) > 1 else "")))
    for path in files:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise ValueError(f"--header-file {path}: {e.strerror or e}") from None
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            headers.append(_parse_header(line, f"--header-file {path} line {n}"))
    return headers


def _parse_header(line: str, where: str) -> tuple[str, str]:
    name, sep, value = line.partition(":")
    name = name.strip()
    value = value.strip()
    if not sep or not name:
        raise ValueError(f"{where}: expected 'Name: value'")
    if not _TOKEN.match(name):
        raise ValueError(f"{where}: invalid header name (letters, digits and !#$%&'*+-.^_`|~ only)")
    if not value:
        raise ValueError(f"{where}: header {name} has an empty value")
    if any(c in value for c in "\r\n\0"):
        raise ValueError(f"{where}: header {name} has a control character in its value")
    return name, value


def redact_url(url) -> str:
    """The URL without userinfo, query string or fragment, for logs."""
    try:
        parts = urlsplit(str(url))
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<invalid url>"
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def raise_fd_limit(wanted: int) -> int:
    """Raise the soft RLIMIT_NOFILE toward ``wanted`` (never past the hard
    limit, never lower).  Returns the soft limit in force afterwards."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return wanted
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and wanted > hard:
        try:        # root (CAP_SYS_RESOURCE) may raise the hard limit too; others keep theirs
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, wanted))
            hard = wanted
        except (ValueError, OSError):
            pass
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as e:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, target, e)
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return soft


class _Scrubber:
    """Removes every secret (header values, URL credentials and query) from text."""

    def __init__(self, url: str, headers) -> None:
        secrets: set[str] = set()
        self.names = set(SENSITIVE_HEADERS)
        for name, value in headers:
            self.names.add(name.lower())
            secrets.add(value)
            secrets.update(p for p in value.split() if len(p) >= 8)   # "Bearer <token>": the token alone too
        try:
            parts = urlsplit(url)
            user, password = parts.username, parts.password
        except ValueError:
            parts, user, password = None, None, None
        if parts is not None:
            if "@" in parts.netloc:
                userinfo = parts.netloc.rpartition("@")[0]
                secrets.update({userinfo, unquote(userinfo)})
            for item in (user, password):
                if item:
                    secrets.update({item, unquote(item)})
            if user is not None:
                cred = f"{unquote(user)}:{unquote(password or '')}"
                secrets.update({cred, base64.b64encode(cred.encode()).decode()})
            if parts.query:
                secrets.update({parts.query, unquote(parts.query)})
                secrets.update(v for _, v in parse_qsl(parts.query, keep_blank_values=True))
            if parts.fragment:
                secrets.add(parts.fragment)
        # very short strings are no secrets and would shred every message
        self.secrets = sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for s in self.secrets:
            if s in text:
                text = text.replace(s, REDACTED)
        return text


class _ScrubbingLogger(logging.LoggerAdapter):
    """The logger handed to websockets: its DEBUG lines print every request
    header and the request path, so header values and the query are redacted."""

    def __init__(self, logger: logging.Logger, scrub: _Scrubber) -> None:
        super().__init__(logger, None)
        self.scrub = scrub

    def process(self, msg, kwargs):
        return msg, kwargs

    def log(self, level, msg, *args, **kwargs):
        if not self.isEnabledFor(level):
            return
        if isinstance(msg, str) and len(args) == 2 and msg.endswith("%s: %s") \
                and str(args[0]).lower() in self.scrub.names:
            args = (args[0], REDACTED)
        elif isinstance(msg, str) and msg.startswith("> GET ") and args and "?" in str(args[0]):
            args = (str(args[0]).partition("?")[0] + "?" + REDACTED,) + args[1:]
        try:
            text = msg % args if args else str(msg)
        except (TypeError, ValueError):
            text = f"{msg} {args!r}"
        self.logger.log(level, "%s", self.scrub(text), **kwargs)


def _describe(exc: BaseException, config: SenderConfig) -> tuple[int, str]:
    """Log level and a clear one-line reason for a failed connection attempt."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        hint = ("is --ca-file the CA that signed the server's certificate?" if config.ca_file
                else "use --ca-file for a server with a private CA")
        return logging.WARNING, f"TLS certificate verification failed: {exc.verify_message or exc.reason} ({hint})"
    if isinstance(exc, ssl.SSLError):
        return logging.WARNING, f"TLS error: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE):
        return logging.ERROR, ("too many open files: raise the file-descriptor limit "
                               "(ulimit -n, or LimitNOFILE= in the systemd unit)")
    if isinstance(exc, TimeoutError):
        return logging.WARNING, f"timed out after {config.open_timeout:g} s"
    if isinstance(exc, ConnectionRefusedError):
        return logging.WARNING, "connection refused"
    if isinstance(exc, InvalidStatus):
        r = exc.response
        return logging.WARNING, f"HTTP {r.status_code} {r.reason_phrase}".rstrip()
    if isinstance(exc, OSError):
        return logging.WARNING, exc.strerror or str(exc) or type(exc).__name__
    if isinstance(exc, InvalidHandshake):
        return logging.WARNING, f"WebSocket handshake failed: {exc}"
    return logging.WARNING, f"{type(exc).__name__}: {exc}"


def _first_line(body: bytes | None, limit: int = 200) -> str:
    """The first line of an HTTP answer's body, for a log line (at most ``limit`` characters)."""
    if not body:
        return ""
    line = body.decode("utf-8", "replace").strip().partition("\n")[0].strip()
    return line[:limit] + ("..." if len(line) > limit else "")


def _retry_after(exc: InvalidStatus) -> float | None:
    value = exc.response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


_DATA = frozenset({Opcode.TEXT, Opcode.BINARY, Opcode.CONT})


class _Connection(ClientConnection):
    """websockets' client connection, handing every pong to ``on_pong``: the answers
    to the acknowledgement pings a stream writes after its audio, which websockets
    did not send and so ignores.  The server's data frames (it is not expected to
    send any) are dropped as they arrive, so that nothing needs to read them: no
    message queues up, and websockets goes on reading pings, pongs and the close."""

    on_pong: Callable[[bytes], object] | None = None

    def data_received(self, data: bytes) -> None:
        # The usual read: one acknowledgement pong, alone (a server frame is unmasked:
        # FIN + PONG, length 8, the offset), with nothing of an earlier frame waiting in
        # websockets' reader: handed on here, as process_event would, without websockets'
        # parser (twice a second on every stream).  Anything else goes through websockets.
        if (len(data) == 10 and data[0] == 0x8A and data[1] == 8 and self.on_pong is not None
                and not self.protocol.reader.buffer and self.protocol.state is OPEN):
            self.on_pong(data[2:])
            return
        super().data_received(data)

    def process_event(self, event) -> None:
        if isinstance(event, Frame):
            if event.opcode in _DATA:
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("ignoring a %d-byte %s frame from the server", len(event.data), event.opcode.name)
                return
            if self.on_pong is not None and event.opcode is Opcode.PONG:
                super().process_event(event)
                self.on_pong(bytes(event.data))
                return
        super().process_event(event)


# --------------------------------------------------------------------------- streams

def _from_outbox(name: str) -> property:
    return property(lambda self: getattr(self.outbox, name), doc=f"The outbox's ``{name}`` (read-only).")


class Stream(StreamTask):
    """One outgoing stream: its :class:`~rtp2ws.ws.outbox.Outbox` (the queue,
    the resend window and the counts, sans I/O) and the connection that moves
    its bytes.  The three methods the capture calls append and return at once.
    Writing is the sender's flush: it frames everything queued on every live
    stream and writes it with one write per connection (``Sender.flush``).  The
    stream's task does the waiting: it connects, writes ``start`` and the resend,
    waits while its socket is full, and sends ``end`` and closes; the stream is
    delivered once the server answers that close."""

    offset = _from_outbox("offset")                  # samples (per channel) appended so far
    frame_samples = _from_outbox("frame_samples")    # samples (per channel) in one binary message
    queued_samples = _from_outbox("queued_samples")
    queued_bytes = _from_outbox("queued_bytes")
    retained_samples = _from_outbox("retained_samples")
    retained_bytes = _from_outbox("retained_bytes")
    dropped_samples = _from_outbox("dropped_samples")
    dropped_events = _from_outbox("dropped_events")
    sent_samples = _from_outbox("sent_samples")      # taken from the queue for sending (first time only)
    acknowledged = _from_outbox("acknowledged")      # offset: the server acknowledged every frame before it
    undelivered_samples = _from_outbox("undelivered_samples")   # sent, never acknowledged, no longer kept

    def __init__(self, sender: Sender, stream_id: str, start: dict, channels: int) -> None:
        self._sender = sender
        self.stream_id = stream_id
        self.channels = channels
        self._start = dict(start)
        self._start["stream_id"] = stream_id
        self._start.setdefault("type", "start")
        self._start.setdefault("channels", channels)
        # extra= of its log lines: JSON logs carry them as keys (rtp2ws.run.logs)
        self.log_extra = {k: self._start.get(k) for k in ("call_id", "tag", "stream_id")}
        cfg = sender.config
        fmt = self._format = sender.format
        # A format without resume (ws.formats) repeats nothing after a reconnect, so keeps no
        # resend window (what the server did not acknowledge is undelivered when the connection
        # breaks), and has no drop message to announce a gap with.
        # Twilio's messages are made as they are written (ws.twilio): it reads the gaps from
        # the drop messages, and sends none.
        self._media = TwilioStream(self._start, cfg.twilio_account_sid) if fmt.text_media else None
        self.outbox = Outbox({k: self._start.get(k) for k in ("call_id", "tag", "stream_id")}, channels=channels,
                             frame_ms=self._start.get("frame_ms"), max_buffer_ms=cfg.max_buffer_ms,
                             resend_ms=cfg.resend_ms if fmt.resumes else 0, totals=sender._totals,
                             announce_gaps=fmt.resumes or fmt.text_media, sample_rate=cfg.audio.rate,
                             sample_bytes=2 if fmt.call_stream else cfg.audio.sample_bytes)
        self._push_audio = self.outbox.push_audio
        # where the fast path pushes a bound leg's frames itself (ws.lane), marked on the
        # sender's list of lanes with news; live while a connection is
        self.lane = make_lane(self.outbox, sender._lanes, self)
        # A run longer than frame_ms is framed as several messages of this many bytes.
        self._split = self.outbox.frame_samples * self.outbox.frame_bytes

        self.reconnects = 0
        self.connected = False
        self.done = False
        self.given_up = False
        self.refused = False
        self._on_write: Callable[[int, int], None] | None = None
        self._end_unanswered = False  # the last connection ended after end, its close unanswered
        # the connection the flush writes to, from its start message on; its websockets
        # protocol (the state) and transport, set with it and kept until the connection ends
        self._live: _Connection | None = None
        self._proto: ClientProtocol | None = None
        self._transport: asyncio.Transport | None = None
        self._wire: AnyWire | None = None  # plain TCP: the connection's writes (ws.wire); None with TLS
        self._out: list = []          # the messages of the write being made
        self._dirty = False           # in the sender's list of streams to flush
        self._wakeup = Wakeup()
        self._abort_reason: str | None = None
        self._linger_handle: asyncio.TimerHandle | None = None
        self._last_warn: float | None = None
        self._suppressed = 0
        self._task: asyncio.Task | None = None      # made by _begin, in the event loop

    @property
    def ended(self) -> bool:
        """``end`` was called."""
        return self.outbox.ended

    def __repr__(self) -> str:
        return (f"Stream({self.stream_id!r}, offset={self.offset}, queued={self.queued_samples}, "
                f"dropped={self.dropped_samples}, connected={self.connected}, done={self.done})")

    @property
    def on_write(self) -> Callable[[int, int], None] | None:
        """Called as on_write(first, end) after a write that carried the audio at
        offsets first..end-1 for the first time (a probe for latency; None: nothing)."""
        return self._on_write

    @on_write.setter
    def on_write(self, callback: Callable[[int, int], None] | None) -> None:
        self._on_write = callback
        self.outbox.note_sent = callback is not None

    # -- capture side: synchronous, O(1), never waits -------------------------------

    def send_audio(self, pcm: bytes) -> None:
        """Queue int16 LE PCM (``channels`` interleaved): one binary message, or
        for a run longer than ``frame_ms`` one message per ``frame_ms``, the
        last one possibly shorter.  From any thread; from another than the event
        loop's, the caller then calls ``Sender.flush``."""
        sender = self._sender
        with sender._lock:
            if self._push_audio(pcm) and not self._dirty and self._live is not None:
                sender._mark(self)

    def send_event(self, message: dict) -> None:
        """Queue a text message at the current position of the stream (from any
        thread, as ``send_audio``): an rtp2ws event, sent as the format has it
        (``formats.event``), or not at all when it has no such message."""
        sender = self._sender
        if not self._format.resumes:
            shaped = formats.event(self._format.name, message)
            if shaped is None:
                return
            message = shaped
        with sender._lock:
            if self.outbox.push_event(message) and not self._dirty and self._live is not None:
                sender._mark(self)

    def end(self, message: dict) -> None:
        """Queue the ``end`` message; ``samples``, ``dropped_ms`` and
        ``reconnects`` are filled in when it is sent.  From any thread."""
        with self._sender._lock:
            if self.done:
                return
            outbox = self.outbox
            if self._format.whole_frames and not outbox.ended:
                # every binary message a whole frame: the last one is completed with silence
                short = outbox.offset % outbox.frame_samples
                if short:
                    self.send_audio(bytes((outbox.frame_samples - short) * outbox.frame_bytes))
            if not outbox.end(message):
                return
        self._sender._in_loop(self._ended)

    def _ended(self) -> None:
        linger = self._sender.config.linger
        self._linger_handle = asyncio.get_running_loop().call_later(max(0.0, linger), self._linger_expired, linger)
        self._wake_now()

    def _wake(self) -> None:
        """Wake the stream's task (from any thread)."""
        if not self._wakeup.is_set():
            self._sender._in_loop(self._wake_now)

    def _wake_now(self) -> None:
        if not self._wakeup.is_set():
            self._wakeup.set()

    # -- writing: the sender's flush and the task ------------------------------------

    def _go_live(self, ws: _Connection) -> None:
        """The connection is open: from now on the flush writes to it.  Over plain TCP
        its writes (websockets' too) go through a wire, from whichever thread has them."""
        transport = ws.transport
        sock = transport.get_extra_info("socket")
        wire = None
        if (transport.get_extra_info("sslcontext") is None and sock is not None and self._sender.direct
                and self._media is None):
            try:
                wire = Wire(sock.fileno(), self._sender._lock)
            except (OSError, ValueError):     # no descriptor to write to: asyncio's transport does it
                wire = None
        with self._sender._lock:
            self.lane.go_live(wire, ws.protocol, transport, OPEN)
            if wire is not None:
                transport = ws.transport = WireTransport(transport, wire)
            self._wire = wire
            self._live = ws
            self._proto = ws.protocol
            self._transport = transport
        ws.on_pong = self._pong

    def _pong(self, data: bytes) -> None:
        with self._sender._lock:
            self.outbox.pong(data)

    def _go_dead(self) -> None:
        """The connection is over: nothing more is written to it."""
        with self._sender._lock:
            self.lane.go_dead()
            self._live = self._proto = self._transport = None
            wire, self._wire = self._wire, None
            if wire is not None:
                wire.close()

    def _take(self) -> int:
        """Move the next batch for the live connection into ``self._out``;
        returns its number of frames, 0 when there is nothing to send or it
        may not be sent now (then the task is woken if only it can go on).
        Data frames go out only while websockets has the connection OPEN
        (never once a close frame went either way or the TCP connection is
        going away), and while the transport is under its high-water mark.
        What is over ``BATCH_BYTES`` waits for the next flush."""
        if not self._may_take():
            return 0
        outbox = self.outbox
        frames = outbox.take(self._out, BATCH_BYTES)
        if outbox.pending and not self._dirty:    # marked already: the task's own take
            self._sender._mark(self)
        elif outbox.ended:
            self._wake()
        return frames

    def _may_take(self) -> bool:
        """Whether the flush may take a batch for the live connection now (``_take``
        says when); if not, the task is woken when only it can go on."""
        outbox = self.outbox
        if not outbox.pending:
            if outbox.ended:
                self._wake()          # the end goes out once everything before it has
            return False
        # only called with a live connection (both callers check), whose protocol and
        # transport _go_live set with it
        live, proto, transport = self._live, self._proto, self._transport
        assert live is not None and proto is not None and transport is not None
        wire = self._wire
        if (proto.state is not OPEN or transport.is_closing()
                or (live.paused if wire is None else wire.blocked or wire.broken is not None)):
            self._wake()              # it waits for the drain, or sees the connection end
            return False
        return True

    def _sent(self) -> None:
        """After a write: the latency probe, if the take noted what it sent."""
        outbox = self.outbox
        sent = outbox.sent
        if sent is not None:
            outbox.sent = None
            # the outbox notes what was sent only while on_write is set (the setter)
            assert self._on_write is not None
            self._on_write(*sent)

    def _send(self, keys: bytes) -> None:
        """One ``transport.write`` of ``self._out`` as client frames, masked
        with ``keys`` (4 bytes a frame), and after them an acknowledgement ping
        when the outbox has one due (none with ``end``, whose close is
        acknowledgement enough)."""
        out = self._out
        outbox = self.outbox
        if self._media is not None:         # Twilio: every message text, made now (ws.twilio)
            texts = self._media.convert(out)
            data = wsframe.encode(texts, self._sender._mask_keys(4 * len(texts)), self._split)
        else:
            data = wsframe.encode(out, keys, self._split)
        if self._live is not None:
            at = outbox.ping_due()
            if at is not None:
                data += wsframe.ping_frame(at.to_bytes(8, "big"), self._sender._mask_keys(4))
        # called while connected: the transport stays set until the connection ends,
        # also once the end message cleared _live
        wire = self._wire
        if wire is not None:
            wire.write(data)
            if wire.blocked:
                self._sender._blocked_wire(self)
        else:
            transport = self._transport
            assert transport is not None
            transport.write(data)
        out.clear()
        self._sent()

    def _flush_now(self) -> None:
        """The task's own flush (after connecting, after a drain)."""
        with self._sender._lock:
            if self._live is not None:
                frames = self._take()
                if frames:
                    self._send(self._sender._mask_keys(4 * frames))

    def _connection_broke(self) -> None:
        """The connection ended without acknowledging everything: what left the
        resend window unacknowledged cannot be sent again."""
        with self._sender._lock:
            lost = self.outbox.connection_lost()
        if lost and not self._format.resumes:
            log.warning("stream %s: %d ms of audio sent before the connection ended was not acknowledged "
                        "(--ws-format %s repeats nothing after a reconnect): counted as undelivered",
                        self.stream_id, ms(lost), self._format.name, extra=self.log_extra)
        elif lost:
            log.warning("stream %s: %d ms of audio sent before the connection ended was not acknowledged and "
                        "no longer fits the resend window (--resend-ms %d): counted as undelivered",
                        self.stream_id, ms(lost, self.outbox.samples_per_ms), self._sender.config.resend_ms,
                        extra=self.log_extra)

    def _write(self, msgs: list, frames: int) -> None:
        """A write of the task's own (start, resend, end): keys of its own.
        Called with the sender's lock held."""
        self._out = msgs
        self._send(self._sender._mask_keys(4 * frames))
        self._out = []

    # -- the stream's task -------------------------------------------------------------

    def _linger_expired(self, linger: float) -> None:
        if not self.done:
            self._abort(f"could not deliver within {linger:g} s of the end of the stream")

    def _task_ended(self) -> None:
        with self._sender._lock:
            self.outbox.close()

    def _finish_undelivered(self, reason: str, count_given_up: bool) -> None:
        """The stream ends undelivered: what is queued counts as dropped, what was
        sent and never acknowledged as undelivered."""
        with self._sender._lock:
            queued, unacknowledged = self.outbox.abandon()
        lost = queued + unacknowledged
        spm = self.outbox.samples_per_ms
        why = (f"{ms(lost, spm)} ms of audio not delivered"
               + (f" ({ms(unacknowledged, spm)} ms of it sent but not acknowledged by the server)" if unacknowledged
                  else ""))
        if count_given_up:
            self.given_up = True
            self._sender._given_up += 1
            log.warning("stream %s: giving up (%s); %s", self.stream_id, reason, why, extra=self.log_extra)
        elif lost:
            log.info("stream %s: %s with %s", self.stream_id, reason, why, extra=self.log_extra)

    def _backoff(self, attempt: int) -> float:
        cfg = self._sender.config
        delay = min(cfg.backoff_max, cfg.backoff_initial * 2.0 ** min(attempt, 40))
        return max(MIN_DELAY_S, delay * random.uniform(0.5, 1.0))

    def _warn(self, level: int, what: str) -> None:
        """Rate-limited (per stream) line about a failed or lost connection."""
        now = asyncio.get_running_loop().time()
        if self._last_warn is not None and now - self._last_warn < LOG_EVERY_S:
            self._suppressed += 1
            return
        more = f" ({self._suppressed} similar since the last message)" if self._suppressed else ""
        log.log(level, "%s", self._sender._scrub(f"stream {self.stream_id}: {what}{more}"), extra=self.log_extra)
        self._last_warn = now
        self._suppressed = 0

    async def _connect_loop(self) -> None:
        sender = self._sender
        cfg = sender.config
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            hint = None
            try:
                ws = await sender._connect()
            except asyncio.CancelledError:
                raise
            except InvalidStatus as e:
                code = e.response.status_code
                if 400 <= code < 500 and code not in RETRY_STATUS:
                    self._refuse(e)
                    return
                sender._connect_failures += 1
                hint = _retry_after(e)
                delay = self._delay(attempt, hint)
                self._warn(logging.WARNING, f"cannot connect to {sender.url_for_logs}: "
                                            f"{_describe(e, cfg)[1]}; retrying in {delay:.2f} s")
            except Exception as e:  # noqa: BLE001 - any failure is retried, never fatal to the loop
                if isinstance(e, NegotiationError) and "subprotocol" in str(e):
                    self._refuse_subprotocol(e)     # the server wants another: asking again changes nothing
                    return
                sender._connect_failures += 1
                delay = self._delay(attempt, None)
                level, why = _describe(e, cfg)
                self._warn(level, f"cannot connect to {sender.url_for_logs}: {why}; retrying in {delay:.2f} s")
            else:
                since = loop.time()
                delivered = await self._serve_connection(ws)
                if delivered:
                    return
                self._connection_broke()
                if loop.time() - since >= STABLE_S:
                    attempt = 0
                code = ws.close_code
                why = f"code {code}" + (f" {ws.close_reason}" if ws.close_reason else "") if code else "no close frame"
                if self._end_unanswered:
                    why = f"end not acknowledged: {why}"
                if code in REFUSAL_CLOSE_CODES:
                    # the server rejected what we sent: sending it again would be rejected again
                    log.error("%s", sender._scrub(f"stream {self.stream_id}: server refused the stream ({why})"),
                              extra=self.log_extra)
                    self.refused = True
                    sender._refused += 1
                    self._finish_undelivered("refused", count_given_up=False)
                    return
                delay = self._delay(attempt, None)
                self._warn(logging.WARNING, f"connection to {sender.url_for_logs} lost ({why}); "
                                            f"reconnecting in {delay:.2f} s")
            attempt += 1
            await asyncio.sleep(delay)

    def _delay(self, attempt: int, hint: float | None) -> float:
        delay = self._backoff(attempt)
        if hint is not None:
            delay = max(delay, min(hint, self._sender.config.backoff_max))
        return delay

    def _refuse(self, e: InvalidStatus) -> None:
        r = e.response
        body = bytes(r.body) if r.body else None      # websockets reads it into a bytearray
        hint = formats.refusal_hint(self._sender.config.ws_format, r.status_code, body)
        said = ""
        if hint is not None:          # about the subprotocol: the server's own words too
            said = f": {_first_line(body)!r}"
        elif r.status_code in (401, 403, 407):
            hint = "check --header / the token"
        else:
            hint = "check the URL"
        self._refused(f"server refused the connection: HTTP {r.status_code} {r.reason_phrase}{said} ({hint})")

    def _refuse_subprotocol(self, e: NegotiationError) -> None:
        """The server opened the connection with a subprotocol this stream did not offer."""
        fmt = self._sender.config.ws_format
        offered = self._sender.format.subprotocol
        self._refused(f"server refused the connection: {e} (--ws-format {fmt} offered "
                      f"{offered or 'none'}; {formats.subprotocols_offered()}: pick the --ws-format the "
                      f"server speaks)")

    def _refused(self, what: str) -> None:
        log.error("%s", self._sender._scrub(f"stream {self.stream_id}: {what}"), extra=self.log_extra)
        self.refused = True
        self._sender._refused += 1
        self._finish_undelivered("refused", count_given_up=False)

    async def _serve_connection(self, ws) -> bool:
        """Send over one open connection; True once ``end`` is sent and the
        server answered the close, False when the connection was lost first."""
        sender = self._sender
        # The handshake's request and response headers (2.5 KB a stream) are read by
        # nothing once the connection is open (websockets keeps the response object:
        # its parser still refers to it, and it marks the handshake done).
        ws.request = None
        if ws.response is not None:
            ws.response.headers.clear()
        self.connected = True
        sender._open += 1
        sender._connects += 1
        if self.outbox.started:          # read by this thread only (connected() sets it)
            self.reconnects += 1
            sender._reconnects += 1
        # the pump is woken when the connection ends (websockets reads without a reader:
        # see _Connection)
        lost: asyncio.Future = ws.connection_lost_waiter
        lost.add_done_callback(self._lost)
        try:
            return await self._pump(ws, lost)
        except ConnectionClosed:
            return False
        finally:
            self.connected = False
            sender._open -= 1
            lost.remove_done_callback(self._lost)
            self._go_dead()
            if ws.state is not State.CLOSED:
                ws.transport.abort()

    def _lost(self, _: asyncio.Future) -> None:
        self._wake()

    async def _pump(self, ws, lost: asyncio.Future) -> bool:
        sender = self._sender
        outbox = self.outbox
        self._end_unanswered = False
        if ws.protocol.state is not OPEN or ws.transport.is_closing():
            # closed as soon as opened (a close frame right after the handshake): nothing is written
            with sender._lock:
                outbox.ping_at = None
            await asyncio.wait([lost], timeout=sender.config.close_timeout)
            return False
        # start, the resend and what is queued: one write (or the first of several)
        self._go_live(ws)
        with sender._lock:
            resumed, offset = outbox.connected()
            repeated = outbox.retained_samples
            msgs: list[Message] = []
            if self._media is not None:
                self._media.connect()                    # connected and start, made as they are written
                frames = 0
            else:
                first = formats.first_message(self._format.name, self._start, resumed=resumed, offset=offset)
                msgs.append(encode(first))
                frames = 1
            frames += outbox.resend(msgs, offset)        # none without resume (no resend window)
            frames += outbox.take(msgs, BATCH_BYTES)
            self._write(msgs, frames)
        if resumed and not self._format.resumes:
            log.info("stream %s: reconnected, the first message again and then the audio still queued",
                     self.stream_id, extra=self.log_extra)
        elif resumed:
            log.info("stream %s: reconnected, resuming at offset %d (%d ms repeated)", self.stream_id, offset,
                     repeated // outbox.samples_per_ms, extra=self.log_extra)
        elif log.isEnabledFor(logging.DEBUG):
            log.debug("%s", sender._scrub(f"stream {self.stream_id}: connected to {sender.url_for_logs}"),
                      extra=self.log_extra)
        try:
            while True:
                self._flush_now()
                if lost.done():
                    return False
                if ws.protocol.state is not OPEN or ws.transport.is_closing():
                    # websockets is closing (the server's close frame, a keepalive
                    # time-out): let it finish, within the close time-out
                    await asyncio.wait([lost], timeout=sender.config.close_timeout)
                    return False
                if self._wire is None and ws.paused:
                    try:
                        await ws.drain()      # websockets' flow control: until under the low-water mark
                    except Exception:  # noqa: BLE001 - the connection is gone; the next round sees it
                        await asyncio.sleep(0)
                    continue
                # (a blocked wire: the sender's retry wakes this task once the socket took the tail)
                if outbox.ended and not outbox.pending:
                    with sender._lock:
                        self._live = None
                        end = outbox.end_message(self.reconnects)
                        if self._format.resumes:      # the other formats end with the close alone
                            self._write([encode(end)], 1)
                        elif self._media is not None:   # ... or with Twilio's stop
                            self._media.stop()
                            self._write([], 0)
                    if not await self._close_answered(ws):
                        self._end_unanswered = True
                        return False
                    log.debug("stream %s: delivered (%d samples, %d ms dropped, %d reconnects)", self.stream_id,
                              end["samples"], end["dropped_ms"], self.reconnects, extra=self.log_extra)
                    return True
                self._wakeup.clear()
                await self._wakeup.wait()
        finally:
            with sender._lock:
                self._live = self._proto = self._transport = None
            ws.on_pong = None

    async def _close_answered(self, ws) -> bool:
        """Close after ``end``; True if the server closed normally (1000, or no code)
        within ``close_timeout`` of ``end`` being written: it read ``end`` and everything
        before it (the outbox then counts the whole stream acknowledged).  The server
        may close first, as ``rtp2ws sink`` does once it has read ``end`` (our close can
        wait behind a drain meanwhile); the protocol has a server close normally only
        then (docs/protocol.md).  A server that closed with another code (1001: going
        away), or never answered, has not proven delivery."""
        try:
            await asyncio.wait_for(ws.close(), self._sender.config.close_timeout)
        except (asyncio.TimeoutError, ConnectionClosed):
            pass          # while the transport was paused (websockets' close waits for the drain)
        rcvd = ws.protocol.close_rcvd
        with self._sender._lock:
            return self.outbox.end_answered(rcvd.code if rcvd is not None else None)


# --------------------------------------------------------------------------- sender

class Sender:
    """Owns the streams, the TLS context, the counters, the lock, and the flush:
    the streams with news since the last one, written by the thread that queued
    the news (``flush``), or once per event-loop wake."""

    def __init__(self, config: SenderConfig) -> None:
        try:
            scheme = urlsplit(config.url).scheme
        except ValueError:
            scheme = ""
        if scheme not in ("ws", "wss"):
            raise ValueError(f"the URL must start with ws:// or wss://, not {redact_url(config.url)!r}")
        try:
            parse_uri(config.url)
        except InvalidURI:
            raise ValueError(f"invalid WebSocket URL {redact_url(config.url)!r}") from None
        self.config = config
        self.url_for_logs = redact_url(config.url)
        self._headers = list(config.headers or ())
        formats.check_options(config.ws_format, headers=[name for name, _ in self._headers])
        # --ws-format audiohook: its streams are ws.hookstream's, counted here too
        self.audiohook: dict[str, int] | None = None
        if config.ws_format == formats.AUDIOHOOK:
            hookstream.check_headers(self._headers)
            self.audiohook = hookstream.new_stats()
        self.format = formats.spec(config.ws_format)   # what goes on the wire
        self._subprotocols = [Subprotocol(self.format.subprotocol)] if self.format.subprotocol else None
        self._scrub = _Scrubber(config.url, self._headers)
        self._ws_logger = _ScrubbingLogger(logging.getLogger("websockets.client"), self._scrub)
        self._ssl = ssl.create_default_context(cafile=config.ca_file) if scheme == "wss" else None
        # The proxy settings (environment variables) are looked up once, not on every connection.
        self._proxy = {"proxy": get_proxy(parse_uri(config.url))} if get_proxy is not None else {}
        if config.max_connecting < 1:
            raise ValueError("max_connecting must be at least 1")
        self._connecting = asyncio.Semaphore(config.max_connecting)
        self._streams: dict[str, Stream | hookstream.HookStream] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        # Held for every outbox operation and every write: the pipeline thread queues
        # and writes (push, flush) while the event loop runs the connections.
        self._lock = threading.RLock()
        # Plain-TCP connections are written straight to their socket (ws.wire);
        # False: through asyncio's transport, in the event loop only.
        self.direct = True
        self._blocked: set[Stream] = set()   # streams whose wire waits for its socket
        self._lanes: list = []               # the streams' lanes the fast path pushed into (ws.lane)
        self._retry_armed = False
        self._dirty: list[Stream] = []       # streams to flush
        self._mask_keys = KeyPool()          # masking keys, ping keys too
        self._flush_handle: asyncio.Handle | None = None
        self._closed = False
        self._opened = 0
        self._open = 0
        self._connects = 0
        self._reconnects = 0
        self._connect_failures = 0
        self._refused = 0
        self._given_up = 0
        self._totals = Totals()              # the streams' queue counters, summed

    @property
    def stats(self) -> dict:
        totals = self._totals
        spm = self.config.audio.samples_per_ms
        return {
            "streams": self._opened,
            "active": len(self._streams),
            "open": self._open,
            "connects": self._connects,
            "reconnects": self._reconnects,
            "connect_failures": self._connect_failures,
            "refused": self._refused,
            "dropped_ms": totals.dropped_samples // spm,
            "dropped_events": totals.dropped_events,
            "sent_frames": totals.sent_frames,
            "sent_bytes": totals.sent_bytes,
            "given_up": self._given_up,
            "undelivered_ms": ms(totals.undelivered_samples, spm),
        } | {f"audiohook_{k}": v for k, v in (self.audiohook or {}).items()}

    def use_loop(self) -> None:
        """Called in the event loop that runs the connections, before streams are
        opened from another thread."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()

    def _in_loop(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` in the event loop's thread: now if this is it, else soon."""
        if threading.get_ident() == self._loop_thread:
            fn()
        else:
            loop = self._loop
            assert loop is not None    # use_loop() or open_stream() in the loop set it
            loop.call_soon_threadsafe(fn)

    def open_stream(self, stream_id: str, start: dict, *, channels: int = 1) -> Stream | hookstream.HookStream:
        """Start a stream; its task starts connecting at once.  In the event loop,
        or from another thread once ``use_loop`` was called there."""
        if self._closed:
            raise RuntimeError("the sender is closed")
        if channels not in (1, 2):
            raise ValueError(f"channels must be 1 or 2, not {channels}")
        if self._loop is None:
            self.use_loop()
        stream = (hookstream.HookStream if self.audiohook is not None else Stream)(self, stream_id, start, channels)
        with self._lock:
            if stream_id in self._streams:
                raise ValueError(f"stream {stream_id} is already open")
            self._streams[stream_id] = stream
            self._opened += 1
        self._in_loop(stream._begin)
        return stream

    def _mark(self, stream: Stream) -> None:
        """``stream`` has news for its live connection (called with the lock held).
        In the event loop: flush it (with every other such stream) once the callbacks
        already due have run, so all that one wake queued leaves in one write per
        connection; from another thread, whoever queued calls ``flush``."""
        stream._dirty = True
        self._dirty.append(stream)
        if self._flush_handle is None and threading.get_ident() == self._loop_thread:
            loop = self._loop
            assert loop is not None
            self._flush_handle = loop.call_soon(self._flush)

    def flush(self) -> None:
        """Write what the streams queued, from the thread that queued it: plain-TCP
        connections at once (their wires), TLS ones in the event loop."""
        if threading.get_ident() == self._loop_thread:
            self._flush()
            return
        with self._lock:
            if not self._dirty and not self._lanes:
                return
            later = self._flush_streams(direct_only=True)
            if later and self._flush_handle is None:
                self._dirty.extend(later)
                loop = self._loop
                assert loop is not None
                self._flush_handle = loop.call_soon_threadsafe(self._flush)
            elif later:
                self._dirty.extend(later)

    def _flush(self) -> None:
        """The event loop's flush (see ``_flush_streams``)."""
        with self._lock:
            self._flush_handle = None
            self._flush_streams(direct_only=False)

    def _flush_streams(self, direct_only: bool) -> list[Stream]:
        """Every marked stream takes its batch and writes it, one write per
        connection.  Plain-TCP streams that may write now go in one call,
        ``ws.wire.send_batches`` (take, frame, key, write, for all of them);
        then the sender does for each what that call says it must
        (``_after_batches``).  TLS streams take their batch (``_take``), the
        masking keys for all of them come from the key pool (``_mask_keys``),
        then each writes to its transport.  With ``direct_only``, streams
        without a wire are left (and returned) for the event loop.  Called with
        the lock held."""
        if self._lanes:
            self._flush_lanes()
        dirty, self._dirty = self._dirty, []
        ready: list[Stream] = []      # TLS streams with a batch, and its number of frames
        counts: list[int] = []
        later: list[Stream] = []
        batched: list[Stream] = []    # plain-TCP streams that may write now ...
        items: list = []              # ... and their (outbox, wire), each wire once
        wires: set = set()
        for stream in dirty:
            if stream._live is None:
                stream._dirty = False
                continue
            wire = stream._wire
            if wire is not None:
                stream._dirty = False
                if wire in wires:     # marked twice (every _mark caller checks _dirty: a guard)
                    continue
                try:
                    if stream._may_take():
                        wires.add(wire)
                        batched.append(stream)
                        items.append((stream.outbox, wire))
                except Exception:  # a bug: that stream ends (and is counted), the others go on
                    log.exception("stream %s: flush failed", stream.stream_id, extra=stream.log_extra)
                    stream._out.clear()
                    stream._abort("internal error")
                continue
            if direct_only:
                later.append(stream)
                continue
            stream._dirty = False
            try:
                n = stream._take()
            except Exception:  # a bug: that stream ends (and is counted), the others go on
                log.exception("stream %s: flush failed", stream.stream_id, extra=stream.log_extra)
                stream._out.clear()
                stream._abort("internal error")
                continue
            if n:
                ready.append(stream)
                counts.append(n)
        if items:
            self._after_batches(batched, send_batches(items, BATCH_BYTES))
        if not ready:
            return later
        keys = self._mask_keys(4 * sum(counts))
        pos = 0
        for stream, n in zip(ready, counts, strict=True):
            end = pos + 4 * n
            try:
                stream._send(keys[pos:end])
            except Exception:
                log.exception("stream %s: flush failed", stream.stream_id, extra=stream.log_extra)
                stream._out.clear()
                stream._abort("internal error")
            pos = end
        return later

    def _flush_lanes(self) -> None:
        """The lanes the fast path pushed frames into since the last flush: each that
        may write now takes its batch and writes it, all in one ``send_batches`` call
        (it does ``_may_take``'s checks itself); ``_after_batches`` does the rest.
        Called with the lock held."""
        lanes = take_marked(self._lanes)     # the same list object stays: the lanes append to it
        send = send_batches_py if type(lanes[0]) is LanePy else send_batches
        attention = send(lanes, BATCH_BYTES)
        if attention:
            self._after_batches([lane.owner for lane in lanes], attention)

    def _after_batches(self, batched: list[Stream], attention: Attention) -> None:
        """What ``send_batches`` left to the sender, per stream, as ``_take`` and
        ``_send`` do it for one: mark it again while its outbox holds more, wake its
        task once it ended with nothing pending (or, a lane, when it may not write
        now), retry its wire while blocked, and the latency probe; a lane live
        without a wire goes to the sender's own flush."""
        for i, flags, error in attention:
            stream = batched[i]
            if stream is None:        # a lane whose stream is done
                continue
            try:
                if error is not None:
                    raise error
                if flags & (PENDING | MARK):
                    if not stream._dirty and stream._live is not None:
                        self._mark(stream)
                elif flags & (ENDED | WAKE):
                    stream._wake()
                if flags & BLOCKED:
                    self._blocked_wire(stream)
                if flags & SENT:
                    stream._sent()
            except Exception:  # a bug: that stream ends (and is counted), the others go on
                log.exception("stream %s: flush failed", stream.stream_id, extra=stream.log_extra)
                stream._out.clear()
                stream._abort("internal error")

    def _blocked_wire(self, stream: Stream) -> None:
        """``stream``'s socket did not take all of a write (called with the lock held):
        its wire is retried from the event loop, every ``RETRY_S``, until it did."""
        self._blocked.add(stream)
        if not self._retry_armed:
            self._retry_armed = True
            self._in_loop(self._arm_retry)

    def _arm_retry(self) -> None:
        loop = self._loop
        assert loop is not None
        loop.call_later(RETRY_S, self._retry)

    def _retry(self) -> None:
        """Write the tails of the blocked wires whose sockets can take bytes now;
        a stream whose wire is clear again takes its next batch."""
        with self._lock:
            blocked = self._blocked
            gone = [s for s in blocked if s._wire is None or not s._wire.open]
            for s in gone:
                blocked.discard(s)
                s._wake()
            wires = {s._wire: s for s in blocked if s._wire is not None}
            for wire in writable(list(wires)):
                if wire.retry():
                    s = wires[wire]
                    blocked.discard(s)
                    s._wake()         # the task: the end, or its own flush
                    if s.outbox.pending and not s._dirty and s._live is not None:
                        self._mark(s)
            if blocked:
                self._arm_retry()
            else:
                self._retry_armed = False

    def _stream_done(self, stream: Stream) -> None:
        with self._lock:
            if self._streams.get(stream.stream_id) is stream:
                del self._streams[stream.stream_id]
            self._blocked.discard(stream)
            stream.lane.release()

    async def _connect(self):
        async with self._connecting:
            return await self._handshake()

    async def _handshake(self):
        cfg = self.config
        return await connect(
            cfg.url,
            additional_headers=self._headers or None,
            ssl=self._ssl,
            open_timeout=cfg.open_timeout,
            ping_interval=cfg.ping_interval,
            ping_timeout=cfg.ping_timeout,
            close_timeout=cfg.close_timeout,
            # No extension: PCM barely compresses, deflate would cost CPU and memory per stream,
            # and the frames rtp2ws writes itself must go out as they are (RSV bits 0).
            compression=None,
            subprotocols=self._subprotocols,
            user_agent_header=f"rtp2ws/{__version__}",
            logger=self._ws_logger,
            create_connection=_Connection,
            **self._proxy,
        )

    async def drain(self, timeout: float) -> None:
        """Wait until every ended stream is delivered or given up; give up on the
        rest at ``timeout`` (what they still queued counts as dropped, what they
        sent and the server never acknowledged as undelivered)."""
        streams = [s for s in self._streams.values() if s.ended and not s.done]
        if not streams:
            return
        tasks = {s._task: s for s in streams if s._task is not None}
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=max(0.0, timeout))
        for task in pending:
            tasks[task]._abort(f"still undelivered after the {timeout:g} s drain timeout")
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def close(self) -> None:
        """Stop every stream at once (queued audio counts as dropped, sent audio
        not acknowledged as undelivered)."""
        self._closed = True
        streams = list(self._streams.values())
        for s in streams:
            s._abort("shutdown")
        if streams:
            await asyncio.gather(*(s._task for s in streams if s._task is not None), return_exceptions=True)
