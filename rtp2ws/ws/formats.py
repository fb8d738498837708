"""The wire formats a stream can speak (``--ws-format``), sans I/O: what differs
between them in what a stream puts on the wire.  ``docs/protocol.md`` describes
each, with the published source of the others.

* ``rtp2ws`` (the default): ``docs/protocol.md``.  ``tag`` is the leg's own
  (``caller``, ``callee``, ``caller#2`` ..., ``stereo``); ``stream_id`` tells
  streams apart.
* ``seed``: the same messages, for a server written the way the design this
  project grew from describes its test server (``wsServer2.py``): it takes
  ``call_id`` and ``tag`` from each text message, writes the binary frames of a
  connection to ``<tag>.pcm`` and closes that file at ``"type": "end"``.  With
  the leg's own tag every call's caller would share one file, so ``tag`` names
  the stream alone: ``<call>-<leg tag>``, where ``<call>`` is the call's folder
  name (``sinks.wav.folder_name``: its key when that is safe as a file name,
  else a safe form of it plus 8 hex digits of its SHA-1), e.g.
  ``a84b4c76e66710@pc33-caller``.
* ``vonage``: the Vonage Voice API's WebSocket protocol: a ``websocket:connected``
  text message first (``content-type`` and the endpoint's ``headers`` as top-level
  fields), then binary frames of exactly 20 ms, ``websocket:dtmf`` text messages
  between them, and a normal close.  One channel (a leg, or ``--mix mixed``), L16
  at 8 or 16 kHz (``content-type`` says which).
* ``audiohook``: Genesys AudioHook (v2), a client that talks back: one session per
  call (both legs as the channels ``external`` and ``internal``), PCMU at 8 kHz
  after ``open``/``opened``; ``ws.audiohook`` is its state machine, ``ws.hookstream``
  the stream the sender makes for it.  None of the rtp2ws messages go out.
* ``audiofork``: FreeSWITCH's mod_audio_fork (subprotocol ``audio.drachtio.org``)
  and ``jambonz``: jambonz's ``listen`` verb, built on it (``audio.jambonz.org``):
  one JSON metadata text message first, then binary audio only, and a normal close.
  L16 at 8 or 16 kHz (jambonz also 24 and 48 kHz), ``sampleRate`` saying which;
  ``mixType`` ``mono`` (a leg's stream), ``mixed`` or ``stereo`` (``--mix``).
* ``twilio``: Twilio Media Streams: one stream per call carrying both legs as
  tracks (``call_stream``: ``StreamSink`` mixes them as for ``--stereo``, in L16 at
  the run's rate, each leg starting at an 8 kHz sample), every message JSON text (``text_media``: built by
  ``ws.twilio`` as the stream is written, on the sender's Python path), µ-law at
  8 kHz in 20 ms chunks.

The last four define no resume, no offsets and no end message: a stream in one
of them sends no ``drop``, ``hold``, ``resume``, ``codec`` or ``end`` (they are
counted as with ``rtp2ws``, in ``calls.json`` and the metrics), repeats nothing
after a reconnect (``resumes`` is False: the first message again, then the audio
still queued), and ends with a close 1000 (``twilio``: its ``stop`` message first;
its first messages, ``connected`` and ``start``, come from ``ws.twilio``, not from
``first_message``).

The sender (``ws.sender``) asks this module for everything a format changes:
the subprotocol it offers (``Format.subprotocol``), the first message of each
connection (``first_message``), how an rtp2ws event looks on the wire, if at
all (``event``), whether a stream resumes and ends with ``end``
(``Format.resumes``) and whether its last frame is padded to a whole one
(``Format.whole_frames``).  ``StreamSink`` asks it for the tag (``wire_tag``).
``check_options`` refuses the options a format contradicts, among them an
``--encoding`` or ``--rate`` its protocol cannot carry (``Format.encodings``,
``Format.rates``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..codec.audioformat import AudioFormat
from ..signalling.sip import uri_user
from ..sinks.wav import folder_name

RTP2WS = "rtp2ws"
SEED = "seed"
VONAGE = "vonage"
AUDIOFORK = "audiofork"
JAMBONZ = "jambonz"
TWILIO = "twilio"
AUDIOHOOK = "audiohook"
FORMATS = (RTP2WS, SEED, VONAGE, AUDIOFORK, JAMBONZ, TWILIO, AUDIOHOOK)
DEFAULT = RTP2WS

SUBPROTOCOL_HEADER = "sec-websocket-protocol"


@dataclass(frozen=True)
class Format:
    name: str
    subprotocol: str | None = None   # offered on the opening handshake (Sec-WebSocket-Protocol)
    resumes: bool = True             # rtp2ws's protocol: resumed start, resend window, drop, events, end
    frame_ms: int | None = None      # the only frame length the format allows (None: --frame-ms)
    whole_frames: bool = False       # every binary message frame_ms long: the last one padded with silence
    stereo: bool = True              # may carry a --stereo stream (two channels)
    own_fields: tuple[str, ...] = ()  # fields of its first message that SIP headers must not overwrite
    encodings: tuple[str, ...] | None = None   # the --encoding values its protocol carries (None: any)
    rates: tuple[int, ...] | None = None       # the --rate values its protocol carries (None: any)
    call_stream: bool = False        # one stream per call, both legs in it (two channels on capture time)
    text_media: bool = False         # audio as text messages made by ws.twilio (not binary frames)
    per_call: bool = False           # one stream per call, both legs as its channels (as --stereo)
    raw_frames: bool = True          # binary messages are the stream's L16 frames as they are (the fast path's)
    own_headers: tuple[str, ...] = ()   # HTTP headers it sets per connection: not --header


_VONAGE_FIELDS = ("event", "content-type", "call_id", "tag", "stream_id", "from", "to")
_FORK_FIELDS = ("callSid", "callId", "from", "to", "sampleRate", "mixType", "tag")

SPECS: dict[str, Format] = {
    RTP2WS: Format(RTP2WS),
    SEED: Format(SEED),
    # Vonage: content-type audio/l16;rate=8000 or 16000 (the NCCO websocket endpoint's two values)
    VONAGE: Format(VONAGE, resumes=False, frame_ms=20, whole_frames=True, stereo=False, own_fields=_VONAGE_FIELDS,
                   encodings=("l16",), rates=(8000, 16000)),
    # mod_audio_fork: L16 at "8k" or "16k"; jambonz listen: L16 at 8000, 16000, 24000, 48000 (or 64000)
    AUDIOFORK: Format(AUDIOFORK, subprotocol="audio.drachtio.org", resumes=False, own_fields=_FORK_FIELDS,
                      encodings=("l16",), rates=(8000, 16000)),
    JAMBONZ: Format(JAMBONZ, subprotocol="audio.jambonz.org", resumes=False, own_fields=_FORK_FIELDS,
                    encodings=("l16",), rates=(8000, 16000, 24000, 48000)),
    # Twilio: µ-law at 8 kHz always, made by ws.twilio from the L16 stream (--rate, --encoding: the WAVs')
    TWILIO: Format(TWILIO, resumes=False, frame_ms=20, stereo=False, call_stream=True, text_media=True),
    # AudioHook: PCMU at 8 kHz always, made by ws.hookstream from the L16 stream (--rate, --encoding: the WAVs')
    AUDIOHOOK: Format(AUDIOHOOK, resumes=False, per_call=True, raw_frames=False,
                      own_headers=("Audiohook-Session-Id", "Audiohook-Correlation-Id")),
}


def check(fmt: str) -> str:
    """``fmt`` if it names a format; ValueError listing them otherwise."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown WebSocket format {fmt!r}: one of {', '.join(FORMATS)}")
    return fmt


def spec(fmt: str) -> Format:
    """The Format named ``fmt`` (ValueError listing them for another name)."""
    return SPECS[check(fmt)]


def check_options(fmt: str, *, frame_ms: int = 20, stereo: bool = False, sip_headers: Iterable[str] = (),
                  headers: Iterable[str] = (), audio: AudioFormat | None = None) -> None:
    """ValueError, saying why, for the options ``fmt`` contradicts: another
    ``--frame-ms`` than the one it fixes, ``--stereo`` (or ``audio.mix`` stereo)
    for a mono-only format, an ``--encoding`` or ``--rate`` (``audio``) its
    protocol cannot carry (twilio and audiohook take any: their streams are theirs,
    those options change the WAVs only), a ``--sip-header`` named like one of the fields its
    first message has of its own (the headers go beside them), and a
    ``Sec-WebSocket-Protocol`` among the ``--header`` names (``headers``): the
    subprotocol comes from the format."""
    f = spec(fmt)
    if f.call_stream or f.per_call:
        # one stream per call with both legs in it, in the format's own encoding and rate:
        # --rate, --encoding and --mix (--stereo) change the WAVs only
        stereo, audio = False, None
    if audio is not None:
        stereo = stereo or audio.mix == "stereo"
        if f.encodings is not None and audio.encoding not in f.encodings:
            raise ValueError(f"--ws-format {fmt} carries {', '.join(f.encodings)} audio only, as its protocol "
                             f"fixes: --encoding {audio.encoding} cannot go with it")
        if f.rates is not None and audio.rate not in f.rates:
            raise ValueError(f"--ws-format {fmt} carries audio at {' or '.join(map(str, f.rates))} Hz only, as its "
                             f"protocol fixes: --rate {audio.rate} cannot go with it")
    for name in headers:
        if name.lower() in {h.lower() for h in f.own_headers}:
            raise ValueError(f"--header {name}: with --ws-format {fmt} every connection has its own "
                             f"({', '.join(f.own_headers)}: rtp2ws sets them)")
        if name.lower() == SUBPROTOCOL_HEADER:
            raise ValueError(f"--header {name}: the WebSocket subprotocol comes from --ws-format "
                             f"({subprotocols_offered()}), not from --header")
    if f.frame_ms is not None and frame_ms != f.frame_ms:
        raise ValueError(f"--ws-format {fmt} sends {f.frame_ms} ms frames, as its protocol fixes; "
                         f"--frame-ms {frame_ms} contradicts it (leave --frame-ms out)")
    if stereo and not f.stereo:
        raise ValueError(f"--ws-format {fmt} carries one channel (its protocol has no channel count): "
                         f"--stereo cannot go with it")
    own = {k.lower() for k in f.own_fields}
    for name in sip_headers:
        if name.lower() in own:
            raise ValueError(f"--sip-header {name}: with --ws-format {fmt} the SIP headers are fields of the "
                             f"first message beside its own ({', '.join(f.own_fields)}), and {name} would "
                             f"take the place of one")


def subprotocols_offered() -> str:
    """Which format offers which subprotocol, for messages."""
    named = [f"{f.name} offers {f.subprotocol}" for f in SPECS.values() if f.subprotocol]
    bare = [f.name for f in SPECS.values() if not f.subprotocol]
    return "; ".join(named) + f"; {', '.join(bare)} offer none"


def wire_tag(fmt: str, call_key: str, tag: str) -> str:
    """The ``tag`` a stream's messages carry in format ``fmt``, for the leg (or
    ``stereo``) ``tag`` of the call whose key is ``call_key``."""
    if fmt == SEED:
        return f"{folder_name(call_key)}-{tag}"
    return tag


def first_message(fmt: str, start: Mapping[str, Any], *, resumed: bool = False, offset: int = 0) -> dict[str, Any]:
    """The first text message of a connection of a stream whose rtp2ws ``start``
    message (``StreamSink`` makes it: call_id, tag, stream_id, from, to,
    sample_rate, channels, sip_headers ...) is ``start``.  ``resumed`` and
    ``offset`` (``Outbox.connected``) go into rtp2ws's own start only."""
    if fmt == VONAGE:
        return _vonage_connected(start)
    if fmt in (AUDIOFORK, JAMBONZ):
        return _fork_metadata(start)
    return dict(start, resumed=resumed, offset=offset)


def event(fmt: str, message: dict[str, Any]) -> dict[str, Any] | None:
    """An rtp2ws event message (``dtmf``, ``hold``, ``resume``, ``codec``) as format
    ``fmt`` sends it; None when the format has no such message (it is not sent)."""
    if SPECS[fmt].resumes:
        return message
    if fmt == TWILIO and message.get("type") in ("dtmf", "track"):
        return message      # ws.twilio makes its dtmf message, and places the tracks, as it is written
    if fmt == VONAGE and message.get("type") == "dtmf":
        return {"event": "websocket:dtmf", "digit": message["digit"], "duration": message["duration_ms"]}
    return None


def _headers(start: Mapping[str, Any]) -> dict[str, str]:
    """The ``--sip-header`` values the INVITE had (absent ones are left out)."""
    return {k: v for k, v in (start.get("sip_headers") or {}).items() if v is not None}


def _vonage_connected(start: Mapping[str, Any]) -> dict[str, Any]:
    """Vonage's first message: ``event`` and ``content-type``, then what an NCCO's
    websocket endpoint puts in ``headers``, at the top level: the call's identity
    and the SIP headers asked for."""
    msg: dict[str, Any] = {"event": "websocket:connected",
                           "content-type": f"audio/l16;rate={start['sample_rate']}"}
    for k in ("call_id", "tag", "stream_id", "from", "to"):
        msg[k] = start.get(k)
    msg.update(_headers(start))
    return msg


def _fork_metadata(start: Mapping[str, Any]) -> dict[str, Any]:
    """The metadata text message of mod_audio_fork's start command, with the fields
    jambonz's ``listen`` puts in it: the call attributes it knows (``callSid``:
    this stream's id, one per leg as each leg of a jambonz dial has its own;
    ``callId``: the SIP Call-ID; ``from``/``to``: the user parts of the From and To
    URIs), ``sampleRate`` and ``mixType``; then, as a listen verb's ``metadata``
    adds its own, the leg's ``tag`` and the SIP headers asked for."""
    msg: dict[str, Any] = {
        "callSid": start["stream_id"],
        "callId": start.get("call_id"),
        "from": _user(start.get("from")),
        "to": _user(start.get("to")),
        "sampleRate": start["sample_rate"],
        "mixType": mix_type(start),
        "tag": start.get("tag"),
    }
    msg.update(_headers(start))
    return msg


def mix_type(start: Mapping[str, Any]) -> str:
    """mod_audio_fork's ``mixType`` of a stream: ``stereo`` (two channels: ``--mix
    stereo``), ``mixed`` (the call's legs summed: ``--mix mixed``, tag ``mixed``) or
    ``mono`` (one leg's own stream)."""
    if start.get("channels") == 2:
        return "stereo"
    return "mixed" if start.get("tag") == "mixed" else "mono"


def _user(uri: str | None) -> str | None:
    """The user part of a SIP URI (the number of a tel: URI), else the URI itself."""
    if not uri:
        return uri
    return uri_user(uri) or uri


def refusal_hint(fmt: str, status: int, body: bytes | None) -> str | None:
    """What to say about an HTTP refusal of the opening handshake whose answer
    (status and body) says it is about the subprotocol; None otherwise.

    websockets' server answers a client that offers none of its subprotocols with
    400 and ``Failed to open a WebSocket connection: missing subprotocol.`` (or
    ``invalid subprotocol; expected one of ...``); Node's ``ws`` answers a malformed
    ``Sec-WebSocket-Protocol`` with 400 ``Invalid Sec-WebSocket-Protocol header``
    (it opens without a subprotocol otherwise: a server that requires one refuses
    in its own ``verifyClient``, with the status that sets)."""
    text = (body or b"").decode("utf-8", "replace").lower()
    if status != 400 or not ("subprotocol" in text or SUBPROTOCOL_HEADER in text):
        return None
    offered = spec(fmt).subprotocol
    sent = f"offered {offered}" if offered else "offered none"
    return (f"the server refuses the WebSocket subprotocol: --ws-format {fmt} {sent} "
            f"({subprotocols_offered()}); pick the --ws-format the server speaks")
