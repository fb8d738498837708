"""Genesys AudioHook protocol, version 2, client side (``--ws-format audiohook``),
sans I/O: a session's state machine.  Server messages (text) and a ``now`` go in;
the messages to send and what happened come out.  ``ws.hookstream`` moves the bytes.

The protocol (https://developer.genesys.cloud/devapps/audiohook, and the
reference implementation github.com/purecloudlabs/audiohook-reference-implementation)
in short, as this module speaks it (``docs/protocol.md`` says what it chose where
the description leaves room):

* Every text message is a JSON object with ``version`` ("2"), ``id`` (the session
  id, as in the ``Audiohook-Session-Id`` header), ``type``, ``seq`` (1, 2, ... per
  sender) and ``parameters``.  The client's also carry ``serverseq`` (the last
  ``seq`` it got from the server) and ``position`` (ISO 8601 duration of the audio
  stream so far, ``PT12.34S``); the server's carry ``clientseq`` (the last client
  ``seq`` it got).
* The client sends ``open`` (organizationId, conversationId, participant, the media
  it offers) and sends no audio until ``opened`` names the one medium the server
  accepted (or none).  Audio is binary messages of PCMU at 8 kHz, channels
  interleaved as the medium lists them.
* ``ping`` (with ``rtt``, the round trip of the last ``pong``, once measured) and
  ``pong``; the server's ``pause`` / ``resume`` requests, answered ``paused`` /
  ``resumed`` (the client also pauses on its own: a call on hold); ``discarded``
  says what audio the client dropped; ``close`` (reason ``end``, ``disconnect``,
  ``reconnect`` or ``error``) is answered ``closed``; the server's ``disconnect``
  asks the client to close, its ``reconnect`` to go on in a new session; ``event``,
  ``update``/``updated`` are tolerated.

``position`` counts the stream's audio whether sent or not: audio discarded
(``discarded``) or not sent while paused (``resumed``: ``start`` where the pause
began, ``discarded`` how long it lasted) moves it on, so a server that adds the
audio it got to those durations is at ``position``.  Positions are counted here in
samples at 8 kHz.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

VERSION = "2"
RATE = 8000                         # PCMU at 8 kHz: the one medium offered
FORMAT = "PCMU"
EXTERNAL, INTERNAL = "external", "internal"
PING_INTERVAL_S = 5.0               # a ping this long after the last one was answered
OPEN_TIMEOUT_S = 5.0                # 'opened' due this long after 'open' (the reference client's wait)
MAX_TEXT = 65535                    # longer server messages are malformed (as the reference client has it)
CLOSE_REASONS = ("end", "error", "disconnect", "reconnect")
DISCONNECT_REASONS = ("completed", "unauthorized", "error")

# states
OPENING = "opening"       # open sent, waiting for opened
OPEN = "open"
CLOSING = "closing"       # close sent, waiting for closed
CLOSED = "closed"         # closed received, or the session failed

# a namespace for the ids derived from a call's Call-ID (uuid5): the same call, the same ids
NAMESPACE = uuid.UUID("0b6d7c8e-3f4a-5e21-9d0c-7a1e2b3c4d5e")


def duration(samples: int) -> str:
    """``samples`` at 8 kHz as an ISO 8601 duration in seconds: ``PT0S``, ``PT1.5S``,
    ``PT0.000125S`` (exact: a sample is 125 microseconds)."""
    whole, rest = divmod(max(0, samples), RATE)
    if not rest:
        return f"PT{whole}S"
    return f"PT{whole}.{rest * 125:06d}".rstrip("0") + "S"


_DURATION = re.compile(r"^PT(\d+(?:\.\d+)?)S$")


def parse_duration(text: object) -> int:
    """An ISO 8601 duration in seconds (``PT1.5S``) as samples at 8 kHz (rounded);
    ValueError for anything else."""
    m = _DURATION.match(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"not a duration in seconds (PT<n>S): {text!r}")
    samples = float(m.group(1)) * RATE
    if not math.isfinite(samples):      # 400 digits: infinity, which round() cannot take
        raise ValueError(f"a duration of {len(m.group(1))} digits is out of range")
    return round(samples)


def derived_id(*parts: str) -> str:
    """A UUID made from ``parts`` (uuid5): a Call-ID becomes a conversationId."""
    return str(uuid.uuid5(NAMESPACE, "\x00".join(parts)))


def media(channels: tuple[str, ...]) -> dict[str, Any]:
    return {"type": "audio", "format": FORMAT, "channels": list(channels), "rate": RATE}


def offered_channels(stream_channels: int, tag: str = "") -> list[tuple[str, ...]]:
    """The channel sets a stream offers: a call's stereo stream (caller left, callee
    right) both and either alone; a lone leg (an extra leg, ``caller#2``) its side."""
    if stream_channels == 2:
        return [(EXTERNAL, INTERNAL), (EXTERNAL,), (INTERNAL,)]
    return [(INTERNAL,)] if tag.startswith("callee") else [(EXTERNAL,)]


# --------------------------------------------------------------------------- what comes out

@dataclass(frozen=True)
class Send:
    """A text message to send (the dict; the adapter writes it as JSON)."""
    message: dict[str, Any]


@dataclass(frozen=True)
class Opened:
    """The server opened the session: ``channels`` of the medium it accepted (empty:
    it takes no audio)."""
    channels: tuple[str, ...]


@dataclass(frozen=True)
class Closed:
    """The server answered ``close`` with ``closed``: it read everything before it."""


@dataclass(frozen=True)
class Disconnect:
    """The server asked to end the session (``close`` with reason disconnect is sent)."""
    reason: str
    info: str | None


@dataclass(frozen=True)
class Reconnect:
    """The server asked the client to go on in a new session (``close`` with reason
    reconnect is sent; the adapter connects again and opens with ``continued``)."""
    info: str | None


@dataclass(frozen=True)
class Failed:
    """The session is over without ``closed``: why (no ``opened`` or ``closed`` in time,
    a medium not offered).  ``refused``: the server would answer the same again."""
    why: str
    refused: bool = False


@dataclass(frozen=True)
class Malformed:
    """A server message that was skipped (counted): why."""
    why: str


@dataclass(frozen=True)
class ServerEvent:
    """``event``, ``update`` or ``updated`` from the server (tolerated, not acted on)."""
    type: str
    parameters: dict[str, Any]


Out = Send | Opened | Closed | Disconnect | Reconnect | Failed | Malformed | ServerEvent


# --------------------------------------------------------------------------- the session

@dataclass
class Identity:
    """What ``open`` says about the call (the same in every session of a stream)."""
    organization_id: str
    conversation_id: str
    participant: dict[str, str]          # id, ani, aniName, dnis
    offered: list[tuple[str, ...]]
    language: str | None = None
    custom_config: dict[str, Any] | None = None


@dataclass
class Session:
    """One AudioHook session (one WebSocket connection).  ``position`` (samples at
    8 kHz) goes on from the stream's earlier sessions; ``continued`` names them
    (``continuedSessions``: id, serverseq, clientseq)."""

    ident: Identity
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    position: int = 0
    continued: list[dict[str, Any]] = field(default_factory=list)
    open_timeout_s: float = OPEN_TIMEOUT_S
    close_timeout_s: float = 10.0
    ping_interval_s: float = PING_INTERVAL_S

    def __post_init__(self) -> None:
        self.state: str | None = None       # None until open() is called
        self.seq = 0                         # the last seq sent
        self.serverseq = 0                   # the last seq received
        self.channels: tuple[str, ...] | None = None    # accepted, once opened
        self.server_paused = False
        self.local_paused = False           # the call is on hold
        self.pause_start: int | None = None  # position when the stream paused
        self.discard_to = 0                  # opened's discardTo: audio before it is dropped
        self.acked = self.position           # the server read the stream up to here (clientseq)
        self.rtt: float | None = None        # seconds, of the last ping answered
        self.rtt_max = 0.0                   # seconds, the longest round trip (of self.pongs pings)
        self.pongs = 0
        self.pings = 0
        self.malformed = 0
        self.sent_samples = 0                # audio sent in this session (per channel)
        self._sent: deque[tuple[int, int]] = deque()   # (seq, position) of messages not yet acknowledged
        self._deadline: float | None = None  # opened or closed due by then
        self._ping_due: float | None = None
        self._ping_out: tuple[int, float] | None = None   # (seq, time) of the ping not yet answered
        self._probe = False                  # the first pong: a second ping at once (gives the server an rtt)

    # -- the stream's side ------------------------------------------------------------

    @property
    def paused(self) -> bool:
        return self.server_paused or self.local_paused

    @property
    def streaming(self) -> bool:
        """Audio goes out now (open, a medium with channels accepted, not paused)."""
        return self.state == OPEN and bool(self.channels) and not self.paused

    def open(self, now: float) -> list[Out]:
        """The connection is up: the ``open`` message."""
        self.state = OPENING
        self._deadline = now + self.open_timeout_s
        ident = self.ident
        params: dict[str, Any] = {
            "organizationId": ident.organization_id,
            "conversationId": ident.conversation_id,
            "participant": dict(ident.participant),
            "media": [media(c) for c in ident.offered],
        }
        if ident.language:
            params["language"] = ident.language
        if ident.custom_config:
            params["customConfig"] = dict(ident.custom_config)
        if self.continued:
            params["continuedSessions"] = [dict(c) for c in self.continued]
        return [self._message("open", params)]

    def sent(self, samples: int) -> None:
        """``samples`` (per channel) of audio were written."""
        self.position += samples
        self.sent_samples += samples

    def discard(self, samples: int) -> list[Out]:
        """``samples`` of the stream are not sent: dropped before they could be (a full
        queue, opened's discardTo: a ``discarded`` message), or while paused (counted
        into the pause: ``resumed`` says how long)."""
        if samples <= 0:
            return []
        if self.paused or self.state != OPEN:
            self.position += samples
            return []
        start = self.position
        self.position += samples
        return [self._message("discarded", {"start": duration(start), "discarded": duration(samples)})]

    def hold(self, on_hold: bool) -> list[Out]:
        """The call went on hold (True) or off it: the client pauses / resumes on its own."""
        if on_hold == self.local_paused:
            return []
        was = self.paused
        self.local_paused = on_hold
        return self._paused_changed(was)

    def close(self, reason: str, now: float) -> list[Out]:
        """``close`` with ``reason`` (one of CLOSE_REASONS); ``closed`` is due within
        ``close_timeout_s``."""
        if self.state in (CLOSING, CLOSED):
            return []
        self.state = CLOSING
        self._deadline = now + self.close_timeout_s
        self._ping_due = None
        return [self._message("close", {"reason": reason})]

    def timer(self) -> float | None:
        """When ``tick`` has something to do next (None: nothing due)."""
        times = [t for t in (self._deadline, self._ping_due) if t is not None]
        return min(times) if times else None

    def tick(self, now: float) -> list[Out]:
        if self._deadline is not None and now >= self._deadline:
            self._deadline = None
            if self.state == OPENING:
                self.state = CLOSED
                return [self._message("error", {"code": 408, "message": "Open transaction timeout"}),
                        Failed(f"the server did not answer 'open' with 'opened' within {self.open_timeout_s:g} s",
                               refused=True)]
            if self.state == CLOSING:
                self.state = CLOSED
                return [Failed(f"the server did not answer 'close' with 'closed' within {self.close_timeout_s:g} s")]
        if self._ping_due is not None and now >= self._ping_due and self.state == OPEN:
            self._ping_due = None
            return [self._ping(now)]
        return []

    # -- the server's side --------------------------------------------------------------

    def receive(self, data: str | bytes, now: float) -> list[Out]:
        """A message from the server.  A malformed one (not JSON, not an AudioHook server
        message of this session, binary) is counted and skipped."""
        if not isinstance(data, str):
            return self._bad(f"a {len(data)}-byte binary message (the server sends text only)")
        if len(data) > MAX_TEXT:
            return self._bad(f"a {len(data)}-character text message (at most {MAX_TEXT})")
        try:
            msg = json.loads(data)
        except ValueError as e:
            return self._bad(f"not JSON ({e})")
        if not isinstance(msg, dict):
            return self._bad("not a JSON object")
        kind = msg.get("type")
        seq = msg.get("seq")
        clientseq = msg.get("clientseq")
        params = msg.get("parameters")
        if msg.get("version") != VERSION:
            return self._bad(f"version {msg.get('version')!r}, not {VERSION!r}")
        if msg.get("id") != self.id:
            return self._bad(f"id {msg.get('id')!r} is not this session's ({self.id})")
        if not isinstance(kind, str):
            return self._bad("no type")
        if not _count(seq) or not _count(clientseq):
            return self._bad(f"{kind}: seq and clientseq must be whole numbers")
        if not isinstance(params, dict):
            return self._bad(f"{kind}: parameters must be an object")
        assert isinstance(seq, int) and isinstance(clientseq, int)     # _count said so
        out: list[Out] = []
        if seq != self.serverseq + 1:
            out += self._bad(f"{kind}: seq {seq} after {self.serverseq}")    # counted, the message still read
        self.serverseq = max(self.serverseq, seq)
        self._acknowledged(clientseq)
        handler = self._HANDLERS.get(kind)
        if handler is None:
            return out + self._bad(f"unknown type {kind!r}")
        return out + handler(self, msg, params, now)

    def _on_opened(self, msg: dict[str, Any], params: dict[str, Any], now: float) -> list[Out]:
        if self.state != OPENING:
            return self._bad(f"'opened' in state {self.state}")
        chosen = params.get("media")
        if not isinstance(chosen, list) or len(chosen) > 1:
            return self._fail("'opened' must name at most one medium", now)
        channels: tuple[str, ...] = ()
        if chosen:
            m = chosen[0]
            ok = isinstance(m, dict) and m.get("type") == "audio" and m.get("format") == FORMAT \
                and m.get("rate") == RATE and isinstance(m.get("channels"), list)
            channels = tuple(m["channels"]) if ok else ()
            if not ok or channels not in self.ident.offered:
                return self._fail(f"'opened' chose a medium that was not offered: {json.dumps(m)}", now)
        try:
            discard_to = parse_duration(params["discardTo"]) if "discardTo" in params else 0
        except ValueError as e:
            return self._fail(f"'opened' discardTo: {e}", now)
        self.state = OPEN
        self.channels = channels
        self.discard_to = discard_to
        self._deadline = None
        if params.get("startPaused") is True:
            self.server_paused = True
            self.pause_start = self.position
        self._probe = True
        out: list[Out] = [Opened(channels), self._ping(now)]
        if self.local_paused and not self.server_paused:      # on hold before the server opened
            self.pause_start = self.position
            out.append(self._message("paused", {}))
        return out

    def _on_pong(self, msg: dict[str, Any], params: dict[str, Any], now: float) -> list[Out]:
        if self._ping_out is None or msg["clientseq"] != self._ping_out[0]:
            return self._bad(f"'pong' with clientseq {msg['clientseq']} answers no ping")
        self.rtt = max(0.0, now - self._ping_out[1])
        self.rtt_max = max(self.rtt_max, self.rtt)
        self.pongs += 1
        self._ping_out = None
        if self.state != OPEN:
            return []
        if self._probe:
            self._probe = False
            return [self._ping(now)]
        self._ping_due = now + self.ping_interval_s
        return []

    def _on_pause(self, msg: dict[str, Any], params: dict[str, Any], now: float) -> list[Out]:
        if self.state != OPEN:
            return []                   # closing: nothing more is sent anyway
        was = self.paused
        self.server_paused = True
        if was:
            return [self._message("paused", {})]     # idempotent: says so again
        return self._paused_changed(was)

    def _on_resume(self, msg: dict[str, Any], params: dict[str, Any], now: float) -> list[Out]:
        if self.state != OPEN:
            return []
        was = self.paused
        self.server_paused = False
        if not was:
            return [self._resumed(0)]                # not paused: resumed, nothing discarded
        if self.local_paused:
            return [self._message("paused", {})]     # still on hold: resumes when the hold ends
        return self._paused_changed(was)

    def _on_disconnect(self, msg: dict[str, Any], params: dict[str, Any], now: float) -> list[Out]:
        reason = params.get("reason")
        info = params.get("info")
        if not isinstance(reason, str):
            return self._bad("'disconnect' without a reason")
        if self.state in (CLOSING, CLOSED):
            return []
        return [*self.close("disconnect", now), Disconnect(reason, info if isinstance(info, str) else None)]

    def _on_reconnect(self, msg: dict[str, Any], params: dict[str, Any], now: float) -> list[Out]:
        if self.state != OPEN:
            return self._bad(f"'reconnect' in state {self.state}")
        info = params.get("info")
        return [*self.close("reconnect", now), Reconnect(info if isinstance(info, str) else None)]

    def _on_closed(self, msg: dict[str, Any], params: dict[str, Any], now: float) -> list[Out]:
        if self.state != CLOSING:
            return self._bad(f"'closed' in state {self.state}")
        self.state = CLOSED
        self._deadline = None
        self.acked = self.position
        return [Closed()]

    def _on_event(self, msg: dict[str, Any], params: dict[str, Any], now: float) -> list[Out]:
        return [ServerEvent(msg["type"], params)]

    _on_update = _on_updated = _on_event

    _HANDLERS: ClassVar[dict[str, Callable[[Session, dict[str, Any], dict[str, Any], float], list[Out]]]] = {
        "opened": _on_opened, "pong": _on_pong, "pause": _on_pause, "resume": _on_resume,
        "disconnect": _on_disconnect, "reconnect": _on_reconnect, "closed": _on_closed,
        "event": _on_event, "update": _on_event, "updated": _on_event,
    }

    # -- internals ----------------------------------------------------------------------

    def _paused_changed(self, was: bool) -> list[Out]:
        """``paused`` or ``resumed`` when the stream's paused state changed (open only;
        before ``opened`` the state is told after it)."""
        now_paused = self.paused
        if now_paused == was or self.state != OPEN:
            if now_paused and not was:
                self.pause_start = self.position
            return []
        if now_paused:
            self.pause_start = self.position
            return [self._message("paused", {})]
        start = self.pause_start if self.pause_start is not None else self.position
        self.pause_start = None
        return [self._resumed(self.position - start, start)]

    def _resumed(self, discarded: int, start: int | None = None) -> Send:
        return self._message("resumed", {"start": duration(self.position if start is None else start),
                                         "discarded": duration(discarded)})

    def _ping(self, now: float) -> Send:
        params = {"rtt": f"PT{self.rtt:.6f}".rstrip("0").rstrip(".") + "S"} if self.rtt is not None else {}
        msg = self._message("ping", params)
        self._ping_out = (self.seq, now)
        self.pings += 1
        return msg

    def _message(self, kind: str, params: dict[str, Any]) -> Send:
        self.seq += 1
        self._sent.append((self.seq, self.position))
        return Send({"version": VERSION, "id": self.id, "type": kind, "seq": self.seq,
                     "serverseq": self.serverseq, "position": duration(self.position), "parameters": params})

    def _acknowledged(self, clientseq: int) -> None:
        """The server read every client message up to ``clientseq``, and the audio before it."""
        sent = self._sent
        while sent and sent[0][0] <= clientseq:
            _, pos = sent.popleft()
            self.acked = max(self.acked, pos)

    def _bad(self, why: str) -> list[Out]:
        self.malformed += 1
        return [Malformed(why)]

    def _fail(self, why: str, now: float) -> list[Out]:
        """The server answered in a way the session cannot go on with: ``error`` and
        ``close`` (reason error), and Failed (refused: it would answer the same again)."""
        err = self._message("error", {"code": 400, "message": why})
        return [err, *self.close("error", now), Failed(why, refused=True)]


def _count(v: object) -> bool:
    """A sequence number: a whole number, not negative (not a bool)."""
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def display_name(value: str | None) -> str:
    """The display name of a From/To header value (``"Alice" <sip:...>`` -> Alice), or ''."""
    if not value:
        return ""
    lt = value.find("<")
    if lt <= 0:
        return ""
    name = value[:lt].strip()
    if len(name) >= 2 and name[0] == name[-1] == '"':
        name = re.sub(r"\\(.)", r"\1", name[1:-1])
    return name
