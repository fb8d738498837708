"""Differential: the C stream queue (rtp2ws._wsframe.Outbox, Totals) against its Python
twin (rtp2ws.ws.outbox.OutboxPy, TotalsPy)."""

from __future__ import annotations

import logging

import atheris

from rtp2ws.speedups import load_native
from rtp2ws.ws.outbox import OutboxPy, TotalsPy

from ..common import check, entry

INVARIANT = """\
Outbox (C) and its Python twin, made alike (channels, frame_ms, max_buffer_ms, resend_ms,
announce_gaps, ident) and given the same calls (push_audio of whole, partial and not-whole frames as
bytes/bytearray/memoryview, push_event, take and take_framed with any budget and the same
keys, connected + resend, ping_due, pong with the right and wrong payloads, acknowledge,
connection_lost, end, end_message, end_answered, abandon, close, note_sent), return the
same values and messages (take_framed: the same bytes), hold the same attributes, queue,
resend window and events, count the same Totals and log the same records (logger
rtp2ws.sender: level, format, arguments); where one raises, the other raises the same
exception class with the same text.  Skipped when the C extension is not built."""

_native = load_native("_wsframe")
_log = logging.getLogger("rtp2ws.sender")

STATE = ("offset", "dropped_samples", "dropped_events", "sent_samples", "acknowledged", "resume_at", "undelivered_samples",
         "queued_samples", "retained_samples", "queued_bytes", "retained_bytes", "unkept_samples", "ping_at",
         "expected", "started", "ended", "closed", "dropping", "pending", "sent", "note_sent", "ping_every",
         "frame_samples", "frame_bytes", "max_samples", "resend_samples", "max_buffer_ms", "resend_ms",
         "stream_id", "ident", "channels", "announce_gaps")


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append((record.levelno, record.msg, record.args))


def _plain(value):
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, (memoryview, bytearray)):
        return bytes(value)
    return value


def _state(ob) -> tuple:
    return (tuple(getattr(ob, k) for k in STATE), [(o, bytes(p), n) for o, p, n in ob.queue],
            [(o, bytes(p), n) for o, p, n in ob.retained], list(ob.events), repr(ob.totals), repr(ob))


def _call(clock, ob, name: str, *args):
    msgs: list = []
    args = tuple(msgs if a is _MSGS else a for a in args)
    try:
        r = clock.call(getattr(ob, name), *args)
    except (ValueError, RuntimeError, OverflowError) as e:
        r = (type(e), str(e))
    return _plain(r), _plain(msgs)


_MSGS = object()      # stands for a fresh message list in _call's arguments


def run(data: bytes, clock) -> None:
    if _native is None:
        return
    fdp = atheris.FuzzedDataProvider(data)
    channels = fdp.PickValueInList([1, 1, 2, 3])
    kw = dict(channels=channels, frame_ms=fdp.PickValueInList([None, 0, 20, 40, 1, 1000]),
              max_buffer_ms=fdp.PickValueInList([0, 1, 20, 60, 200, 10000, -5]),
              resend_ms=fdp.PickValueInList([0, 20, 100, 1000, 2000, -1]),
              announce_gaps=fdp.PickValueInList([True, True, False]))
    ident = {"call_id": "c", "tag": "caller", "stream_id": fdp.PickValueInList(["s1", "é", None, "1" * 19])}
    pair = [OutboxPy(ident, totals=TotalsPy(), **kw), _native.Outbox(ident, totals=_native.Totals(), **kw)]
    handlers = [_Records(), _Records()]
    level = _log.level
    _log.setLevel(logging.DEBUG)
    try:
        for _ in range(fdp.ConsumeIntInRange(1, 60)):
            op = fdp.ConsumeIntInRange(0, 19)
            ob0 = pair[0]
            if op <= 6:
                n = fdp.PickValueInList([320, 320, 960, 160, 1, 0, 8000, 16001])
                raw = bytes((i * 7) & 0xFF for i in range(min(2 * channels * n, 4096))) * (
                    -(-2 * channels * n // 4096) if n else 0)
                raw = raw[:2 * channels * n] + (b"\0" if fdp.ConsumeIntInRange(0, 15) == 0 else b"")
                pcm = fdp.PickValueInList([bytes, bytearray, memoryview])(raw)
                call = ("push_audio", pcm)
            elif op == 7:
                call = ("push_event", {"type": "hold", "offset": ob0.offset, "x": "é" * fdp.ConsumeIntInRange(0, 3)})
            elif op <= 9:
                call = ("take", _MSGS, fdp.PickValueInList([0, 1, 639, 640, 3000, 1 << 20, -1]))
            elif op <= 11:
                keys = fdp.ConsumeBytes(4) * 1000 if fdp.ConsumeBool() else bytes(4000)
                call = ("take_framed", keys, fdp.PickValueInList([0, 1, 639, 640, 3000, 1 << 20]))
            elif op == 12:
                results = []
                for ob, h in zip(pair, handlers):
                    _log.addHandler(h)
                    try:
                        resumed, offset = clock.call(ob.connected)
                        results.append(((resumed, offset),) + _call(clock, ob, "resend", _MSGS, offset))
                    finally:
                        _log.removeHandler(h)
                check(results[0] == results[1], f"connected/resend: Python {results[0]!r:.300}, C {results[1]!r:.300}")
                check(_state(pair[0]) == _state(pair[1]), "state after connected/resend differs")
                continue
            elif op == 13:
                call = ("ping_due",)
            elif op == 14:
                at = ob0.ping_at or 0
                call = ("pong", fdp.PickValueInList([at.to_bytes(8, "big"), (at + 1).to_bytes(8, "big"), b"",
                                                     bytearray(at.to_bytes(8, "big")), at.to_bytes(9, "big")]))
            elif op == 15:
                call = ("acknowledge", fdp.ConsumeIntInRange(0, ob0.offset + 1))
            elif op == 16:
                call = ("connection_lost",)
            elif op == 17:
                which = fdp.ConsumeIntInRange(0, 3)
                call = (("end", {"reason": "bye", "tag": "x"}), ("end_message", fdp.ConsumeIntInRange(0, 3)),
                        ("end_answered", fdp.PickValueInList([1000, 1005, 1001, None])), ("close",))[which]
            elif op == 18:
                call = ("abandon",) if fdp.ConsumeIntInRange(0, 3) == 0 else ("close",)
            else:
                note = fdp.ConsumeBool()
                for ob in pair:
                    ob.note_sent = note
                    ob.sent = None
                continue
            results = []
            for ob, h in zip(pair, handlers):
                _log.addHandler(h)
                try:
                    results.append(_call(clock, ob, *call))
                finally:
                    _log.removeHandler(h)
            check(results[0] == results[1], f"{call[0]}: Python {results[0]!r:.300}, C {results[1]!r:.300}")
            check(_state(pair[0]) == _state(pair[1]), f"state after {call[0]} differs: Python "
                                                      f"{_state(pair[0])[0]!r:.300}, C {_state(pair[1])[0]!r:.300}")
            check(handlers[0].seen == handlers[1].seen, f"log records after {call[0]} differ")
    finally:
        _log.setLevel(level)


TestOneInput = entry("outbox", run)
