"""What rtp2ws puts on NATS JetStream, sans-I/O: subjects, headers and message ids,
shared by the publisher (``broker.publisher``) and the consumer
(``sinkserver.consume``).  No networking here.

Subjects (``prefix`` is ``rtp2ws`` unless ``--nats-prefix`` says otherwise)::

    <prefix>.audio.<call>.<tag>   a stream's audio, and its end marker (the last message)
    <prefix>.calls                start, end and event records of every stream (JSON)

``<call>`` and ``<tag>`` are *tokens*: the Call-ID (or tag) with every byte outside
``A-Z a-z 0-9 - @ + = ~`` written ``%XX`` (UTF-8), so that no Call-ID can add a
subject level (``.``), a wildcard (``*``, ``>``) or white space; the empty string is
``%``; a token longer than ``MAX_TOKEN`` is cut and ends in ``~`` and 16 hex digits
of the SHA-256 of the whole Call-ID (``~`` is never cut short, so two Call-IDs stay
apart).  ``untoken`` reverses the encoding of a token that was not cut.

Audio messages carry the samples (the stream's codec, channels interleaved) and
headers: ``Rtp2ws-Stream`` (the stream id), ``Rtp2ws-Offset`` (the first sample's
position in the stream, per channel), ``Rtp2ws-Format`` (``L16/16000/1``: codec,
sample rate, channels) and ``Nats-Msg-Id`` (``<stream id>:<offset>``).  The end
marker on the same subject has ``Rtp2ws-End`` (the stream's samples) and the ``end``
record as its body.  Records on ``<prefix>.calls`` are the WebSocket protocol's
messages (``ws.protocol``: ``start``, ``end``, ``hold``, ``resume``, ``dtmf``,
``codec``, ``drop``), with headers ``Rtp2ws-Stream``, ``Rtp2ws-Subject`` (the
stream's audio subject) and ``Nats-Msg-Id`` (``<stream id>:start``,
``<stream id>:end``, ``<stream id>:r<n>`` for its n-th other record).  A message id
is made once, when the message is first published, and a republished message keeps
it: JetStream drops a message whose id it stored within the stream's duplicate window.
"""

from __future__ import annotations

import hashlib
import re
from typing import NamedTuple

DEFAULT_PREFIX = "rtp2ws"
DEFAULT_STREAM = "RTP2WS"
DEFAULT_GROUP = "rtp2ws-consume"      # rtp2ws consume's durable consumer unless --group names another
MAX_TOKEN = 200

MSG_ID = "Nats-Msg-Id"
STREAM = "Rtp2ws-Stream"
OFFSET = "Rtp2ws-Offset"
FORMAT = "Rtp2ws-Format"
END = "Rtp2ws-End"
SUBJECT = "Rtp2ws-Subject"

_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-@+=")
_ESCAPE = re.compile(r"%([0-9A-F]{2})")
_PREFIX = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
_STREAM_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


_USERINFO = re.compile(r"//[^/@,]*@")


def redact_url(url: str) -> str:
    """``nats://user:password@host`` with the credentials hidden, for messages and logs."""
    return _USERINFO.sub("//<redacted>@", url)


def check_prefix(prefix: str) -> str:
    """A subject prefix: dot-separated tokens of letters, digits, ``_`` and ``-``."""
    if not _PREFIX.match(prefix):
        raise ValueError(f"subject prefix {prefix!r}: tokens of letters, digits, _ and - separated by dots")
    return prefix


def check_stream_name(name: str) -> str:
    if not _STREAM_NAME.match(name):
        raise ValueError(f"stream name {name!r}: 1 to 64 letters, digits, _ and -")
    return name


def token(text: str) -> str:
    """``text`` as one subject token (see the module's docstring)."""
    raw = text.encode("utf-8", "surrogatepass")
    if not raw:
        return "%"
    out = "".join(chr(b) if b in _SAFE else f"%{b:02X}" for b in raw)
    if len(out) > MAX_TOKEN:
        digest = hashlib.sha256(raw).hexdigest()[:16]
        cut = out[:MAX_TOKEN - 17]
        cut = cut[:cut.rfind("%")] if "%" in cut[-2:] else cut       # never half an escape
        out = f"{cut}~{digest}"
    return out


def untoken(tok: str) -> str:
    """The text of a token ``token`` made (a cut token: ValueError)."""
    if tok == "%":
        return ""
    if "~" in tok:
        raise ValueError(f"token {tok[:40]!r}... was cut: its text is in the stream's records")
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), tok).encode("latin-1").decode("utf-8", "surrogatepass")


def audio_subject(prefix: str, call_id: str, tag: str) -> str:
    return f"{prefix}.audio.{token(call_id)}.{token(tag)}"


def audio_wildcard(prefix: str) -> str:
    return f"{prefix}.audio.>"


def calls_subject(prefix: str) -> str:
    return f"{prefix}.calls"


class Format(NamedTuple):
    codec: str          # L16, PCMU, PCMA
    sample_rate: int
    channels: int

    def header(self) -> str:
        return f"{self.codec}/{self.sample_rate}/{self.channels}"

    @classmethod
    def parse(cls, text: str) -> Format:
        """``L16/16000/1`` → Format; ValueError for anything else."""
        parts = text.split("/")
        if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
            raise ValueError(f"format {text[:40]!r} is not codec/rate/channels")
        return cls(parts[0], int(parts[1]), int(parts[2]))


def audio_id(stream_id: str, offset: int) -> str:
    return f"{stream_id}:{offset}"


def record_id(stream_id: str, kind: str, n: int) -> str:
    """The message id of a stream's record: its start, its end, else its n-th other."""
    if kind in ("start", "end"):
        return f"{stream_id}:{kind}"
    return f"{stream_id}:r{n}"


def end_marker_id(stream_id: str) -> str:
    return f"{stream_id}:eos"
