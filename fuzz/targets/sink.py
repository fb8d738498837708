"""sinkserver.session.Session: the analysis server's protocol state, text and binary frames in."""

from __future__ import annotations

import json

import atheris

from rtp2ws.sinkserver.session import MAX_DATA_BYTES, MAX_REASON_BYTES, Audio, Ended, Event, Refusal, Session, Started
from rtp2ws.ws import protocol

from ..common import check, entry

INVARIANT = """\
For any sequence of text (valid UTF-8, as websockets delivers it) and binary messages,
receive_text returns Started / Event / Ended and receive_binary returns Audio, or they
raise Refusal with a close code from the protocol and a reason that fits a close frame
(<= 123 bytes); nothing else (a RecursionError from deeply nested JSON is a bug).  Audio
starts where start/drop/the previous frame left off, is a whole number of samples per
channel and stays below the 4 GiB WAV limit; after end every message is refused.  The
adapter closes on the first Refusal, so a sequence stops there.  No call takes more
than the per-call limit."""

CODES = (protocol.CLOSE_INVALID_PAYLOAD, protocol.CLOSE_POLICY_VIOLATION)
KEYS = ["type", "call_id", "tag", "stream_id", "from", "to", "src", "dst", "codec", "sample_rate", "channels",
        "frame_ms", "resumed", "offset", "sip_headers", "version", "digit", "duration_ms", "by", "samples",
        "reason", "dropped_ms", "reconnects", "dtmf", "legs", "start_time"]


def _start(fdp) -> dict:
    return {"type": "start", "call_id": "c1", "tag": fdp.PickValueInList(["caller", "callee", "stereo"]),
            "stream_id": fdp.PickValueInList(["s1", "s2"]), "from": "a", "to": "b", "src": "10.0.0.1:4000",
            "dst": None, "codec": "L16", "sample_rate": 16000, "channels": fdp.PickValueInList([1, 2]),
            "frame_ms": 20, "resumed": fdp.ConsumeBool(),
            "offset": fdp.PickValueInList([0, 160, 2 ** 31, 2 ** 40, 2 ** 64]), "sip_headers": {"x": "y"},
            "version": 1}


def _value(fdp, depth: int = 0):
    what = fdp.ConsumeIntInRange(0, 9)
    if what == 0 and depth < 3:
        return {fdp.PickValueInList(KEYS): _value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 3))}
    if what == 1 and depth < 3:
        return [_value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 3))]
    if what == 2:
        return fdp.ConsumeIntInRange(-(2 ** 64), 2 ** 64)
    if what == 3:
        return fdp.PickValueInList([None, True, False, 1.5, "caller", "callee", "L16", 16000, 1, 2, 0])
    return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 12))


def _text(fdp, stream_id: str) -> str:
    how = fdp.ConsumeIntInRange(0, 7)
    if how == 0:
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 300)).decode("utf-8", "replace")
    if how == 1:
        depth = fdp.ConsumeIntInRange(1, 5000)
        return fdp.PickValueInList(["[", "{\"a\":"]) * depth
    if how == 2:
        return protocol.encode(_start(fdp))
    msg = {"type": fdp.PickValueInList(list(protocol.MESSAGE_TYPES) + ["x"]), "call_id": "c1",
           "tag": "caller", "stream_id": stream_id, "offset": fdp.PickValueInList([0, 1, 320, 2 ** 33]),
           "digit": "1", "duration_ms": 100, "by": "caller", "samples": 1, "codec": "PCMA", "reason": "bye",
           "dropped_ms": 0, "reconnects": 0}
    for _ in range(fdp.ConsumeIntInRange(0, 3)):
        msg[fdp.PickValueInList(KEYS)] = _value(fdp)
    return json.dumps(msg)


def run(data: bytes, clock) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    s = Session()
    position = None
    ended = False
    for _ in range(fdp.ConsumeIntInRange(1, 24)):
        try:
            if fdp.ConsumeIntInRange(0, 2) == 0:
                block = s.block
                frame = fdp.ConsumeBytes(fdp.PickValueInList([0, 2, 4, 320, 640, 3]))
                ev = clock.call(s.receive_binary, frame)
                check(type(ev) is Audio, "receive_binary result")
                check(not ended and position is not None and ev.offset == position, "audio offset")
                check(len(ev.data) % block == 0, "audio of part of a sample")
                check(ev.offset * block + len(ev.data) <= MAX_DATA_BYTES, "audio past the 4 GiB WAV limit")
                position = ev.offset + len(ev.data) // block
            else:
                ev = clock.call(s.receive_text, _text(fdp, s.stream_id or "s1"), 1.0)
                check(type(ev) in (Started, Event, Ended), "receive_text result")
                check(not ended, "a message accepted after end")
                if type(ev) is Started:
                    position = ev.message["offset"]
                elif type(ev) is Ended:
                    ended = True
                elif ev.message["type"] == "drop":
                    position = ev.message["offset"]
        except Refusal as r:
            check(r.code in CODES, f"close code {r.code}")
            check(len(r.reason.encode()) <= MAX_REASON_BYTES, "reason longer than a close frame allows")
            return


TestOneInput = entry("sink", run)
