"""The wire formats a stream can speak (``--ws-format``), sans I/O: what differs
between them in the messages a stream sends.

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
"""

from __future__ import annotations

from ..sinks.wav import folder_name

RTP2WS = "rtp2ws"
SEED = "seed"
FORMATS = (RTP2WS, SEED)
DEFAULT = RTP2WS


def check(fmt: str) -> str:
    """``fmt`` if it names a format; ValueError listing them otherwise."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown WebSocket format {fmt!r}: one of {', '.join(FORMATS)}")
    return fmt


def wire_tag(fmt: str, call_key: str, tag: str) -> str:
    """The ``tag`` a stream's messages carry in format ``fmt``, for the leg (or
    ``stereo``) ``tag`` of the call whose key is ``call_key``."""
    if fmt == SEED:
        return f"{folder_name(call_key)}-{tag}"
    return tag
