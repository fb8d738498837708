"""The sans-I/O core of ``rtp2ws sink``: the protocol state of one connection.

:class:`Session` takes what one WebSocket connection delivers, a text message
(with the ``now`` it was received) or a binary frame, and returns the typed
event it stands for (:class:`Started`, :class:`Event`, :class:`Ended`,
:class:`Audio` at its offset), or raises :class:`Refusal` (the close code and a
reason that fits a close frame) for malformed input.  It contains no
networking code, opens no file and reads no clock: the websockets adapter,
the files (``StreamStore``) and the logs are ``rtp2ws.sinkserver.server``; the
message shapes and their JSON Schemas are ``rtp2ws.ws.protocol``.

Everything a client sends is bounded here before it is used: a text message is
at most ``MAX_TEXT_CHARS`` long and ``MAX_JSON_DEPTH`` deep (checked before
``json.loads``, refused with 1007), validated against its schema (1008),
identifiers at most ``MAX_ID_CHARS``, and a frame's end below the 4 GiB WAV
limit (``MAX_DATA_BYTES``).  ``printable`` (``rtp2ws.run.logs``, the rule of every
text log) makes any client text one printable line, for logs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, NoReturn

import jsonschema
import numpy as np
from jsonschema.exceptions import best_match

from ..run.logs import printable as printable  # re-exported: the sink's logs use it
from ..ws import protocol

MAX_DATA_BYTES = 0xFFFFFFFF - 36  # the RIFF size field is 32 bits
MAX_REASON_BYTES = 123  # RFC 6455 5.5: control frame payload ≤ 125, 2 of them the code
MAX_TEXT_CHARS = 2 ** 20  # a text message, whatever --max-size allows binary frames (1009 beyond)
MAX_JSON_DEPTH = 32  # nesting of [ and {: the protocol needs 5 (end.legs.caller.dtmf[i]); refused with 1007 beyond
MAX_ID_CHARS = 1024  # stream_id and call_id: kept in memory per stream

_VALIDATORS = {name: jsonschema.Draft202012Validator(schema) for name, schema in protocol.SCHEMAS.items()}


def clip_reason(text: str) -> str:
    """``text`` cut to fit a close frame (≤ 123 bytes of UTF-8)."""
    raw = text.encode()
    if len(raw) <= MAX_REASON_BYTES:
        return text
    return raw[:MAX_REASON_BYTES - 3].decode(errors="ignore") + "..."


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
    message: dict[str, Any]
    received: float


@dataclass
class Event:
    """Any other accepted text message (dtmf, hold, resume, codec, drop)."""

    message: dict[str, Any]
    received: float


@dataclass
class Audio:
    offset: int  # samples per channel from the start of the stream
    data: bytes  # int16 LE, interleaved


@dataclass
class Ended:
    message: dict[str, Any]
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


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not allowed")


def load_json(raw: str | bytes) -> Any:
    """``json.loads`` for what comes from outside: ValueError, never
    RecursionError, for nesting deeper than ``MAX_JSON_DEPTH``; ValueError for
    NaN and Infinity, which JSON does not have (the logs written must stay JSON)."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if data.count(b"[") + data.count(b"{") > MAX_JSON_DEPTH and json_depth(data) > MAX_JSON_DEPTH:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    return json.loads(raw, parse_constant=_no_constant)


def parse_message(text: str) -> dict[str, Any]:
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

    IDENTITY = ("stream_id", "call_id", "tag", "channels", "codec", "sample_rate")

    def __init__(self) -> None:
        self.start: dict[str, Any] | None = None  # the IDENTITY fields of the first start, not the whole message
        self.ended = False
        self.position = 0
        self.sample_bytes = 2     # of the start's codec: L16 2, PCMU/PCMA 1
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
            for key in ("call_id", "tag", "channels", "codec", "sample_rate"):
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
            self.sample_bytes = 2 if msg["codec"] == "L16" else 1
            self.block = self.sample_bytes * int(msg["channels"])
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
                          f"({self.block // self.sample_bytes} channel{'s' if self.block > self.sample_bytes else ''} "
                          f"of {'int16' if self.sample_bytes == 2 else 'G.711 bytes'})")
        self._check_offset(self.position, len(data))
        audio = Audio(self.position, bytes(data))
        self.position += len(data) // self.block
        return audio

    def _check_offset(self, offset: int, nbytes: int) -> None:
        if offset * self.block + nbytes > MAX_DATA_BYTES:
            raise Refusal(protocol.CLOSE_POLICY_VIOLATION, f"offset {offset} is beyond the 4 GiB WAV limit")
