"""Twilio Media Streams (``--ws-format twilio``), sans I/O: one call's stream as
the JSON text messages a server written for Twilio reads.  State in (the
stream's ``start`` message, the connection's turn), strings out.

Source: Twilio, "Media Streams - WebSocket Messages"
(https://www.twilio.com/docs/voice/media-streams/websocket-messages).  Every
message is a JSON text frame with an ``event`` field:

* ``connected`` first: ``{"event": "connected", "protocol": "Call", "version": "1.0.0"}``
  (no sequence number);
* ``start``: ``sequenceNumber`` "1", ``start`` (``accountSid``, ``streamSid``,
  ``callSid``, ``tracks``, ``customParameters``, ``mediaFormat``) and ``streamSid``;
* ``media``: ``sequenceNumber``, ``media`` (``track`` inbound or outbound,
  ``chunk`` counting each track's messages from "1", ``timestamp`` in ms since
  the stream started, ``payload``: base64 of µ-law at 8 kHz) and ``streamSid``;
* ``dtmf``: ``streamSid``, ``sequenceNumber``, ``dtmf`` (``track``, ``digit``);
* ``stop`` last: ``sequenceNumber``, ``streamSid``, ``stop`` (``accountSid``, ``callSid``).

``sequenceNumber``, ``chunk`` and ``timestamp`` are strings, as Twilio sends them;
``sequenceNumber`` counts every message of a connection after ``connected``.

What rtp2ws hands this module: a call's stream as ``StreamSink`` makes it for a
``call_stream`` format (``ws.formats``): two channels of L16 at the run's rate
(``sample_rate`` of its start message: 8, 16, 24 or 48 kHz; ``step`` = rate/8000),
caller left and callee right, on the call's capture-time line (sample 0 is the
first audio of the call), every leg starting at a multiple of ``step``, so that
those samples are the 8 kHz samples G.711 decoded to (``codec.resample``: the
interpolators' outputs at multiples of the factor *are* their inputs); and, as text among the audio, ``track`` (where a
leg's first sample is), ``dtmf`` (with the leg) and the outbox's ``drop`` (a
gap).  :class:`TwilioStream` turns that into Twilio's messages: each leg is a
track (caller ``inbound``, callee ``outbound``) of 20 ms chunks (160 µ-law bytes)
cut from the track's own first sample on, so chunk n of a track holds samples
``160 (n - 1)`` to ``160 n - 1`` of it; a chunk cut short by a gap or the end of
the stream is completed with µ-law silence (0xFF).  The ``timestamp`` of a chunk
is the millisecond of the stream its first sample falls in.  Chunks go out in
the order of their timestamps (inbound first at a tie).

The ids are Twilio's shapes: ``streamSid`` "MZ" + 32 hex digits (the stream's
id, a UUID4: one per stream, the same across its reconnects), ``callSid`` "CA"
+ the first 32 hex digits of the SHA-256 of the SIP Call-ID (the same Call-ID
gives the same callSid, in any run), ``accountSid`` the ``--twilio-account-sid``
option (``DEFAULT_ACCOUNT_SID`` by default).

Connections: Twilio defines no reconnect.  Each connection of the stream gets
``connected`` and ``start`` (the same ids) again, its ``sequenceNumber`` starting
again at "1"; the media go on where they were, chunks and timestamps continuing:
nothing is sent twice, and audio lost with a broken connection or dropped from a
full buffer leaves a jump in ``timestamp`` (the ``chunk`` numbers go on by one).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..codec.g711 import encode_ulaw
from .outbox import Message

DEFAULT_ACCOUNT_SID = "AC" + "0" * 32
PROTOCOL = "Call"
VERSION = "1.0.0"
ENCODING = "audio/x-mulaw"
RATE = 8000
FRAME = 160                      # samples (µ-law bytes) of a 20 ms chunk at 8 kHz
SILENCE = b"\xff"                # µ-law zero
TRACKS = ("inbound", "outbound")   # channel 0 (caller), channel 1 (callee)
LEG_TRACK = {"caller": 0, "callee": 1}
_SID = re.compile(r"^[0-9a-fA-F]{32}$")
_ACCOUNT_SID = re.compile(r"^AC[0-9a-fA-F]{32}$")


def check_account_sid(text: str) -> str:
    """``text`` if it has the shape of a Twilio Account SID; ValueError saying which otherwise."""
    if not _ACCOUNT_SID.match(text):
        raise ValueError(f"a Twilio Account SID is AC and 32 hex digits (e.g. {DEFAULT_ACCOUNT_SID}), not {text!r}")
    return text


def call_sid(call_id: str) -> str:
    """The callSid of the call whose SIP Call-ID is ``call_id``."""
    return "CA" + hashlib.sha256(call_id.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def stream_sid(stream_id: str) -> str:
    """The streamSid of the stream whose id is ``stream_id`` (32 hex digits as is, else hashed)."""
    if _SID.match(stream_id):
        return "MZ" + stream_id.lower()
    return "MZ" + hashlib.sha256(stream_id.encode()).hexdigest()[:32]


class _Track:
    """One leg's chunks: where it begins, what is waiting for a whole chunk, its counter."""

    __slots__ = ("at", "begin", "chunk", "pending")

    def __init__(self, begin: int) -> None:
        self.begin = begin                    # 8 kHz sample of the stream where the track begins
        self.pending = bytearray()            # µ-law bytes of less than a chunk ...
        self.at = begin                       # ... from this 8 kHz sample on
        self.chunk = 0                        # chunks sent


class TwilioStream:
    """The Twilio messages of one stream, from its rtp2ws ``start`` message (StreamSink's:
    ``call_id``, ``stream_id``, ``sip_headers`` ...)."""

    def __init__(self, start: Mapping[str, Any], account_sid: str = DEFAULT_ACCOUNT_SID) -> None:
        self.account_sid = check_account_sid(account_sid)
        self.stream_sid = stream_sid(str(start["stream_id"]))
        self.call_sid = call_sid(str(start.get("call_id") or ""))
        self.custom = {k: v for k, v in (start.get("sip_headers") or {}).items() if v is not None}
        # stream samples a G.711 sample: the stream is L16 at the run's rate (8, 16, 24 or 48 kHz),
        # whose every step-th sample is one G.711 decoded to (codec.resample)
        self.step = int(start.get("sample_rate") or 16000) // RATE
        self.seq = 0                          # the last sequenceNumber of this connection
        self.position = 0                     # samples (per channel) of the stream converted
        self.tracks: list[_Track | None] = [None, None]
        self._head: list[str] = []            # messages to go before the next converted ones

    # -- the connection's turns ---------------------------------------------------------

    def connect(self) -> None:
        """A connection opened: ``connected`` and ``start`` go first (sequence from 1)."""
        self.seq = 0
        self._head = [_dumps({"event": "connected", "protocol": PROTOCOL, "version": VERSION}),
                      self._text({"event": "start", "sequenceNumber": None, "start": {
                          "accountSid": self.account_sid, "streamSid": self.stream_sid, "callSid": self.call_sid,
                          "tracks": list(TRACKS), "customParameters": dict(self.custom),
                          "mediaFormat": {"encoding": ENCODING, "sampleRate": RATE, "channels": 1}},
                          "streamSid": self.stream_sid})]

    def stop(self) -> None:
        """The stream ends: the tracks' last chunks (completed with silence), then ``stop``."""
        out: list[tuple[int, int, bytes]] = []
        for ch in (0, 1):
            self._cut_short(ch, out)
        self._head.extend(self._media(out))
        self._head.append(self._text({"event": "stop", "sequenceNumber": None, "streamSid": self.stream_sid,
                                      "stop": {"accountSid": self.account_sid, "callSid": self.call_sid}}))

    def convert(self, msgs: list[Message]) -> list[str]:
        """The outbox's messages (text, and two-channel L16 runs), in order, as
        the Twilio messages they make, in order; what ``connect`` and ``stop`` queued first."""
        out, self._head = self._head, []
        for m in msgs:
            if isinstance(m, str):
                out.extend(self._event(json.loads(m)))
            else:
                out.extend(self._audio(m))
        return out

    # -- internals ---------------------------------------------------------------------

    def _text(self, msg: dict[str, Any]) -> str:
        self.seq += 1
        msg["sequenceNumber"] = str(self.seq)
        return _dumps(msg)

    def _event(self, msg: dict[str, Any]) -> list[str]:
        kind = msg.get("type")
        if kind == "track":
            ch = LEG_TRACK.get(msg.get("leg", ""))
            if ch is not None and self.tracks[ch] is None:
                begin = -(-max(int(msg["offset"]), self.position) // self.step)
                self.tracks[ch] = _Track(begin)
            return []
        if kind == "drop":          # a gap: the chunks cut short, then on from where it ends
            out: list[tuple[int, int, bytes]] = []
            for ch in (0, 1):
                self._cut_short(ch, out)
            self.position = max(self.position, int(msg["offset"]))
            return self._media(out)
        if kind == "dtmf":
            ch = LEG_TRACK.get(msg.get("leg", ""), 0)
            return [self._text({"event": "dtmf", "streamSid": self.stream_sid, "sequenceNumber": None,
                                "dtmf": {"track": TRACKS[ch] + "_track", "digit": str(msg["digit"])}})]
        return []

    def _audio(self, pcm: bytes | memoryview) -> list[str]:
        """A run of two-channel PCM at ``position``: its every step-th sample (8 kHz), µ-law,
        into the tracks."""
        a = np.frombuffer(pcm, dtype="<i2").reshape(-1, 2)
        first = self.position
        self.position += len(a)
        step = self.step
        s = a[-first % step::step]           # the stream's samples at multiples of step: 8 kHz
        j0 = -(-first // step)               # the 8 kHz sample of s[0]
        out: list[tuple[int, int, bytes]] = []
        for ch in (0, 1):
            t = self.tracks[ch]
            if t is None:
                continue
            skip = max(0, t.begin - j0)
            if skip >= len(s):
                continue
            if not t.pending:
                t.at = j0 + skip
            data = t.pending + encode_ulaw(s[skip:, ch])
            whole = len(data) - len(data) % FRAME
            for k in range(0, whole, FRAME):
                out.append((t.at, ch, bytes(data[k:k + FRAME])))
                t.at += FRAME
            t.pending = bytearray(data[whole:])
        return self._media(out)

    def _cut_short(self, ch: int, out: list[tuple[int, int, bytes]]) -> None:
        t = self.tracks[ch]
        if t is not None and t.pending:
            out.append((t.at, ch, bytes(t.pending) + SILENCE * (FRAME - len(t.pending))))
            t.pending = bytearray()

    def _media(self, chunks: list[tuple[int, int, bytes]]) -> list[str]:
        """``media`` messages of (8 kHz sample, channel, 160 µ-law bytes), in time order."""
        chunks.sort(key=lambda c: (c[0], c[1]))
        out = []
        sid = self.stream_sid
        for at, ch, ulaw in chunks:
            t = self.tracks[ch]
            assert t is not None    # only a track's own chunks are made
            t.chunk += 1
            self.seq += 1
            payload = base64.b64encode(ulaw).decode("ascii")
            out.append(f'{{"event":"media","sequenceNumber":"{self.seq}","media":{{"track":"{TRACKS[ch]}",'
                       f'"chunk":"{t.chunk}","timestamp":"{at * 1000 // RATE}","payload":"{payload}"}},'
                       f'"streamSid":"{sid}"}}')
        return out


def _dumps(msg: dict[str, Any]) -> str:
    return json.dumps(msg, separators=(",", ":"), ensure_ascii=False)
