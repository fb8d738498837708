"""The wire protocol between rtp2ws and an analysis server.

One WebSocket connection per call leg (or per call with ``--mix stereo`` or
``--mix mixed``):

1. text ``start`` (sent again with ``"resumed": true`` after a reconnect),
2. binary frames of audio in the ``codec`` and at the ``sample_rate`` the
   ``start`` message names (by default little-endian 16-bit PCM, ``L16``, at
   16 kHz; ``PCMU``/``PCMA``: G.711, one byte a sample), ``frame_ms`` long
   (the last one may be shorter), contiguous in time,
3. text event messages (``dtmf``, ``hold``, ``resume``, ``codec``, ``drop``)
   between frames, at the point of the stream where they happened,
4. text ``end`` with the leg's statistics, then a normal close (1000).

Offsets count samples per channel from the first sample of the stream; the
binary frame that follows a ``start`` or a ``drop`` message begins at that
message's ``offset``, and every later frame follows the previous one.  A
``resumed`` start repeats up to ``resend_ms`` of audio the server may have
lost with the old connection, so a server writes frames at their offsets
(overwriting what it already has) and loses nothing that fit in the buffer.

This module is the single source of truth for the JSON Schema of every text
message; ``docs/protocol.md`` embeds them (a test keeps the two in step).
It holds the message shapes only (schemas, constants, close codes, ``encode``):
not the RFC 6455 framing (``ws.frame``), not the sending side (``ws.outbox``
queues, ``ws.sender`` connects), not the receiving side (``sinkserver.session``).
"""

from __future__ import annotations

import json
from typing import Any

PROTOCOL_VERSION = 1
SAMPLE_RATE = 16000     # the default; a start message says the stream's own (SAMPLE_RATES)
CODEC = "L16"           # the default; a start message says the stream's own (CODECS)
SAMPLE_RATES = (8000, 16000, 24000, 48000)
CODECS = ("L16", "PCMU", "PCMA")
FRAME_MS_STEP = 20
FRAME_MS_MAX = 1000

# Close codes a sink uses to refuse a stream (RFC 6455 section 7.4.1).
CLOSE_NORMAL = 1000
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_INVALID_PAYLOAD = 1007
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TOO_BIG = 1009

_TIME = {"type": "string", "description": "capture time, ISO 8601 with milliseconds and UTC offset"}
_OFFSET = {"type": "integer", "minimum": 0, "description": "sample position in the stream (per channel)"}
_TAG = {"type": "string", "pattern": "^(caller|callee)(#[2-9])?$|^stereo$|^mixed$",
        "description": "caller, callee; caller#2, callee#2 ... for a further RTP flow running alongside "
                       "that leg's (e.g. through a media relay); stereo or mixed (--mix)"}
_ADDR = {"type": ["string", "null"], "description": "ip:port, IPv6 as [addr]:port"}
_DTMF = {
    "type": "object",
    "required": ["digit", "duration_ms"],
    "properties": {"digit": {"type": "string", "minLength": 1}, "duration_ms": {"type": "integer", "minimum": 0},
                   "start": _TIME, "offset": _OFFSET},
}
_MS = {"type": ["number", "null"], "minimum": 0}
_QUALITY = {
    "type": "object",
    "description": "the leg's quality (rtp2ws.media.quality; docs/protocol.md, Leg quality)",
    "required": ["expected", "lost", "loss_pct", "max_delta_ms", "jitter_ms", "max_jitter_ms", "rtt_ms",
                 "max_rtt_ms", "remote", "xr", "rtcp_malformed", "r_factor", "mos", "delay_ms"],
    "properties": {
        "expected": {"type": "integer", "minimum": 0,
                     "description": "RTP packets the leg's streams expected (RFC 3550 A.3)"},
        "lost": {"type": "integer", "description": "expected less received (negative with duplicates)"},
        "loss_pct": {"type": "number", "minimum": 0, "maximum": 100},
        "max_delta_ms": dict(_MS, description="largest interval between consecutive packets (Wireshark's Max Delta)"),
        "jitter_ms": _MS, "max_jitter_ms": _MS,
        "rtt_ms": dict(_MS, description="mean round trip capture point <-> the leg's receiver, from RTCP "
                                        "LSR/DLSR or XR RRTR/DLRR"),
        "max_rtt_ms": _MS,
        "remote": {"type": ["object", "null"],
                   "description": "the last RTCP report block about the leg (its receiver's view)",
                   "properties": {"reports": {"type": "integer", "minimum": 1},
                                  "fraction_lost_pct": {"type": "number"}, "cumulative_lost": {"type": "integer"},
                                  "loss_pct": _MS, "jitter_ms": _MS, "max_jitter_ms": _MS}},
        "xr": {"type": ["object", "null"], "description": "the last RTCP XR VoIP Metrics block about the leg",
               "properties": {"loss_pct": _MS, "discard_pct": _MS, "round_trip_ms": _MS,
                              "end_system_delay_ms": _MS, "r_factor": _MS, "mos_lq": _MS, "mos_cq": _MS}},
        "rtcp_malformed": {"type": "integer", "minimum": 0,
                           "description": "RTCP on the leg's addresses that did not parse cleanly (SRTCP among it)"},
        "r_factor": {"type": ["number", "null"],
                     "description": "E-model R (ITU-T G.107, simplified); null for a codec not rated"},
        "mos": {"type": ["number", "null"], "minimum": 1, "maximum": 4.5},
        "delay_ms": {"type": "number", "minimum": 0, "description": "the one-way delay the E-model assumed"},
    },
}


def _message(name: str, required: list[str], properties: dict[str, Any], description: str) -> dict[str, Any]:
    props = {"type": {"const": name}, "call_id": {"type": "string"}, "tag": _TAG, "stream_id": {"type": "string"}}
    props.update(properties)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": name,
        "description": description,
        "type": "object",
        "required": ["type", "call_id", "tag", "stream_id"] + required,
        "properties": props,
        "additionalProperties": True,
    }


SCHEMAS: dict[str, dict[str, Any]] = {
    "start": _message(
        "start",
        ["from", "to", "src", "dst", "codec", "sample_rate", "channels", "frame_ms", "resumed", "offset",
         "sip_headers", "version"],
        {
            "version": {"const": PROTOCOL_VERSION},
            "from": {"type": "string"}, "to": {"type": "string"},
            "src": _ADDR, "dst": _ADDR,
            "codec": {"enum": list(CODECS), "description": "of the binary frames: L16 (16-bit little-endian "
                      "PCM), PCMU (G.711 mu-law) or PCMA (G.711 A-law), one byte a sample (--encoding)"},
            "sample_rate": {"enum": list(SAMPLE_RATES), "description": "samples a second per channel (--rate)"},
            "channels": {"enum": [1, 2]},
            "frame_ms": {"type": "integer", "minimum": FRAME_MS_STEP, "maximum": FRAME_MS_MAX,
                         "multipleOf": FRAME_MS_STEP},
            "resumed": {"type": "boolean"},
            "offset": _OFFSET,
            "start_time": {"type": ["string", "null"], "description": "capture time of sample 0"},
            "sip_headers": {"type": "object", "additionalProperties": {"type": ["string", "null"]}},
        },
        "First message of every connection. After a reconnect it is sent again with the same "
        "stream_id, resumed=true, and the offset of the first frame that follows.",
    ),
    "dtmf": _message("dtmf", ["digit", "duration_ms", "offset"],
                     {"digit": {"type": "string", "minLength": 1}, "duration_ms": {"type": "integer", "minimum": 0},
                      "offset": _OFFSET, "time": _TIME},
                     "One RFC 4733 key press, sent when it ends."),
    "hold": _message("hold", ["by", "offset"], {"by": {"enum": ["caller", "callee"]}, "offset": _OFFSET, "time": _TIME},
                     "The call was put on hold (sendonly/inactive/c=0.0.0.0) by this side."),
    "resume": _message("resume", ["by", "offset"], {"by": {"enum": ["caller", "callee"]}, "offset": _OFFSET,
                                                    "time": _TIME},
                       "The call was taken off hold."),
    "codec": _message("codec", ["codec", "offset"], {"codec": {"type": "string"}, "offset": _OFFSET, "time": _TIME},
                      "The RTP codec changed (the stream keeps the codec and rate of its start message)."),
    "drop": _message("drop", ["offset", "samples"], {"offset": _OFFSET, "samples": {"type": "integer", "minimum": 1}},
                     "The sender's buffer overflowed: `samples` samples were dropped; "
                     "the next frame starts at offset."),
    "end": _message(
        "end",
        ["reason", "samples", "dropped_ms", "reconnects"],
        {
            "reason": {"type": "string", "description": "bye, cancel, rejected <code>, timeout, capture_end, shutdown"},
            "samples": {"type": "integer", "minimum": 0, "description": "total samples per channel in the stream"},
            "dropped_ms": {"type": "integer", "minimum": 0},
            "reconnects": {"type": "integer", "minimum": 0},
            "packets": {"type": "integer"}, "lost": {"type": "integer"}, "late": {"type": "integer"},
            "duplicates": {"type": "integer"}, "reordered": {"type": "integer"}, "concealed_ms": {"type": "integer"},
            "jitter_ms": {"type": ["number", "null"], "minimum": 0,
                          "description": "mean RTP interarrival jitter (RFC 3550, as Wireshark's mean jitter); "
                                         "null when the leg had fewer than two audio packets"},
            "max_jitter_ms": {"type": ["number", "null"], "minimum": 0,
                              "description": "largest RTP interarrival jitter (as Wireshark's max jitter)"},
            "ssrcs": {"type": "array", "items": {"type": "string"}},
            "codecs": {"type": "array", "items": {"type": "string"}},
            "codec_segments": {"type": "array", "description": "each stretch of one codec, in order: its codec "
                               "and the capture time it began (at most 100)",
                               "items": {"type": "object", "required": ["codec", "start"],
                                         "properties": {"codec": {"type": "string"}, "start": _TIME}}},
            "dtmf": {"type": "array", "items": _DTMF},
            "encrypted": {"type": "boolean", "description": "audio encrypted and not decrypted (no keys seen)"},
            "srtp": {"type": ["string", "null"],
                     "description": "SRTP suite of the SDES keys (SDP a=crypto) the leg was decrypted with"},
            "quality": _QUALITY,
            "legs": {"type": "object", "description": "stereo streams: the statistics of each leg by tag"},
        },
        "Last message; the sender then closes with code 1000.",
    ),
}

MESSAGE_TYPES = tuple(SCHEMAS)


def encode(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


def validate_frame_ms(frame_ms: int) -> int:
    if frame_ms < FRAME_MS_STEP or frame_ms > FRAME_MS_MAX or frame_ms % FRAME_MS_STEP:
        raise ValueError(f"frame length must be a multiple of {FRAME_MS_STEP} ms up to {FRAME_MS_MAX} ms, "
                         f"not {frame_ms}")
    return frame_ms


def delivery_error(sent: dict[str, Any] | None) -> str | None:
    """The error to report (with exit status 1) when not every stream was delivered:
    refused, given up, or audio sent that the server never acknowledged; else None."""
    if sent is None or not (sent.get("refused") or sent.get("given_up") or sent.get("undelivered_ms")):
        return None
    return (f"{sent.get('refused', 0)} streams refused by the server, {sent.get('given_up', 0)} given up, "
            f"{sent.get('undelivered_ms', 0)} ms of audio sent but not acknowledged by the server "
            f"(see the log above)")


def schemas_markdown() -> str:
    """The schema section of docs/protocol.md (kept in step by a test)."""
    parts = []
    for name, schema in SCHEMAS.items():
        parts.append(f"### `{name}`\n\n{schema['description']}\n\n```json\n{json.dumps(schema, indent=2)}\n```\n")
    return "\n".join(parts)


if __name__ == "__main__":  # python -m rtp2ws.ws.protocol > the schema section
    print(schemas_markdown(), end="")
