"""Outbox: one stream's queue toward the server, driven directly (no event loop, no socket).

A model server (``Server``) reads what ``take``/``resend`` hand out as the real one
does: a ``start`` puts the next frame at its offset, a ``drop`` moves it, audio
follows on; a connection that breaks loses the tail of what was written.

Every test runs against both twins (``twin``: the Python reference ``OutboxPy`` and
the C ``rtp2ws._wsframe.Outbox``), and a differential test drives both with the same
random calls and compares everything they return, hold, count and log."""

import json
import logging
import os
import random
import subprocess
import sys

import numpy as np
import pytest
from websockets.frames import Opcode
from wsparse import parse_frames

from rtp2ws.speedups import load_native
from rtp2ws.ws import outbox as outbox_module
from rtp2ws.ws.outbox import ACK_MIN_MS, MAX_EVENTS, TWINS, Outbox, OutboxPy, Totals, TotalsPy, ms

FRAME = 320                     # 20 ms at 16 kHz
IDENT = {"call_id": "call-1", "tag": "caller", "stream_id": "s1"}


@pytest.fixture(autouse=True, params=["python", "native"])
def twin(request, monkeypatch):
    """Run every test with each twin: ``Outbox`` and ``Totals`` below are its classes."""
    if request.param not in TWINS:
        pytest.skip("rtp2ws._wsframe is not built (or RTP2WS_NO_NATIVE is set)")
    outbox_cls, totals_cls = TWINS[request.param]
    monkeypatch.setitem(globals(), "Outbox", outbox_cls)
    monkeypatch.setitem(globals(), "Totals", totals_cls)
    return request.param


def pcm(offset: int, n: int = FRAME, channels: int = 1) -> bytes:
    """Recognisable audio: each sample holds its own offset (mod 2**15)."""
    return np.repeat(np.arange(offset, offset + n) & 0x7FFF, channels).astype("<i2").tobytes()


def outbox(**kw) -> Outbox:
    kw.setdefault("frame_ms", 20)
    return Outbox(IDENT, **kw)


def kinds(msgs) -> list:
    return [json.loads(m)["type"] if isinstance(m, str) else len(bytes(m)) // 2 for m in msgs]


class Server:
    """What a server reading the messages in order ends up with: audio by offset."""

    def __init__(self, channels: int = 1) -> None:
        self.block = 2 * channels
        self.audio: dict[int, int] = {}      # offset -> sample (first channel)
        self.pos = None
        self.texts: list[dict] = []

    def start(self, offset: int) -> None:
        self.pos = offset

    def read(self, msgs) -> None:
        for m in msgs:
            if isinstance(m, str):
                msg = json.loads(m)
                self.texts.append(msg)
                if msg["type"] == "drop":
                    assert msg["offset"] >= self.pos and msg["samples"] == msg["offset"] - self.pos
                    self.pos = msg["offset"]
            else:
                samples = np.frombuffer(bytes(m), "<i2")[::self.block // 2]
                for i, v in enumerate(samples):
                    self.audio[self.pos + i] = int(v)
                self.pos += len(samples)


# --------------------------------------------------------------------------- no I/O


def test_no_networking_code():
    code = ("import sys, rtp2ws.ws.outbox; "
            "print(sorted(m for m in ('asyncio', 'socket', 'ssl', 'selectors', 'websockets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --------------------------------------------------------------------------- capture side


def test_offsets_count_every_sample_pushed():
    ob = outbox()
    assert ob.push_audio(pcm(0)) and ob.push_audio(pcm(FRAME, 100)) and ob.offset == FRAME + 100
    assert not ob.push_audio(b"") and ob.offset == FRAME + 100
    assert [(off, n) for off, _, n in ob.queue] == [(0, FRAME), (FRAME, 100)]
    assert ob.queued_samples == FRAME + 100 and ob.queued_bytes == 2 * (FRAME + 100)
    with pytest.raises(ValueError, match="^stream s1: 3 bytes is not a whole number of 1-channel 16-bit samples$"):
        ob.push_audio(b"\0\0\0")
    stereo = outbox(channels=2)
    with pytest.raises(ValueError, match="6 bytes is not a whole number of 2-channel"):
        stereo.push_audio(b"\0" * 6)
    assert stereo.push_audio(bytearray(pcm(0, FRAME, 2))) and stereo.offset == FRAME
    assert type(stereo.queue[0][1]) is bytes          # a bytearray is copied: the caller may reuse it


def test_bounded_buffer_drops_the_oldest_whole_messages(caplog):
    caplog.set_level(logging.INFO, logger="rtp2ws.sender")
    totals = Totals()
    ob = outbox(max_buffer_ms=100, totals=totals)      # 5 frames
    for i in range(12):
        ob.push_audio(pcm(i * FRAME))
        assert ob.queued_samples <= 5 * FRAME
    assert ob.dropped_samples == 7 * FRAME and totals.dropped_samples == 7 * FRAME
    assert [off for off, _, _ in ob.queue] == [i * FRAME for i in range(7, 12)]
    # a run longer than the bound: whole frame_ms messages leave its front
    ob2 = outbox(max_buffer_ms=60)                       # 3 frames
    ob2.push_audio(pcm(0, 5 * FRAME))
    (off, view, n), = ob2.queue
    assert (off, n) == (2 * FRAME, 3 * FRAME) and bytes(view) == pcm(2 * FRAME, 3 * FRAME)
    ob3 = outbox(max_buffer_ms=50)                       # 2.5 frames: a cut is still whole frames
    ob3.push_audio(pcm(0, 5 * FRAME))
    assert ob3.queue[0][0] == 3 * FRAME and ob3.dropped_samples == 3 * FRAME
    lines = [r.getMessage() for r in caplog.records]
    assert lines.count("stream s1: 100 ms of audio queued (server slow or unreachable), dropping the oldest") == 1


def test_dropping_stops_at_half_the_bound_and_says_how_much(caplog):
    caplog.set_level(logging.INFO, logger="rtp2ws.sender")
    ob = outbox(max_buffer_ms=80)                        # 4 frames; half of it: 2
    for i in range(6):
        ob.push_audio(pcm(i * FRAME))
    assert ob.dropping and ob.dropped_samples == 2 * FRAME
    msgs = []
    ob.take(msgs, 2 * FRAME)                             # one frame's bytes
    assert ob.dropping and ob.queued_samples == 3 * FRAME
    ob.take(msgs, 2 * FRAME)
    assert not ob.dropping and ob.queued_samples == 2 * FRAME
    for i in range(6, 10):                               # a second episode
        ob.push_audio(pcm(i * FRAME))
    ob.take(msgs, 1 << 20)
    ob.close()
    lines = [r.getMessage() for r in caplog.records if "dropping" in r.getMessage()]
    assert lines == [
        "stream s1: 80 ms of audio queued (server slow or unreachable), dropping the oldest",
        "stream s1: stopped dropping audio; 40 ms dropped (40 ms in total)",
        "stream s1: 80 ms of audio queued (server slow or unreachable), dropping the oldest",
        "stream s1: stopped dropping audio; 40 ms dropped (80 ms in total)",
    ]


def test_close_says_how_much_an_unfinished_episode_dropped(caplog):
    ob = outbox(max_buffer_ms=20)
    ob.push_audio(pcm(0))
    ob.push_audio(pcm(FRAME))
    ob.close()
    last = caplog.records[-1].getMessage()
    assert last == "stream s1: stopped dropping audio; 20 ms dropped (20 ms in total)"


def test_log_records_carry_the_streams_identity(caplog):
    """Both twins log with ``extra=ident``: JSON logs (run.logs) carry call_id, tag and stream_id."""
    caplog.set_level(logging.INFO, logger="rtp2ws.sender")
    ob = outbox(max_buffer_ms=40)
    for i in range(4):
        ob.push_audio(pcm(i * FRAME))
    ob.close()
    assert len(caplog.records) == 2
    for r in caplog.records:
        assert (r.call_id, r.tag, r.stream_id) == (IDENT["call_id"], IDENT["tag"], IDENT["stream_id"])


def test_events_are_capped_and_counted(caplog):
    totals = Totals()
    ob = outbox(totals=totals)
    for i in range(MAX_EVENTS + 3):
        assert ob.push_event({"type": "dtmf", "n": i}) is (i < MAX_EVENTS)
    assert len(ob.events) == MAX_EVENTS and ob.dropped_events == 3 and totals.dropped_events == 3
    assert sum("dropping new ones" in r.getMessage() for r in caplog.records) == 1


def test_events_keep_their_place_between_the_audio():
    ob = outbox()
    ob.push_event({"type": "codec", "at": "first"})
    ob.push_audio(pcm(0))
    ob.push_audio(pcm(FRAME))
    ob.push_event({"type": "hold", "at": 2 * FRAME})
    ob.push_audio(pcm(2 * FRAME))
    msgs = []
    assert ob.take(msgs, 1 << 20) == 5
    assert kinds(msgs) == ["codec", FRAME, FRAME, "hold", FRAME]


# --------------------------------------------------------------------------- taking


def test_take_marks_the_gaps_and_counts_frames():
    totals = Totals()
    ob = outbox(max_buffer_ms=40, totals=totals)       # 2 frames
    for i in range(4):
        ob.push_audio(pcm(i * FRAME))
    ob.push_audio(pcm(4 * FRAME, FRAME + FRAME // 2))  # a run of 1.5 frames: 2 messages
    msgs = []
    frames = ob.take(msgs, 1 << 20)
    assert kinds(msgs) == ["drop", FRAME + FRAME // 2]
    assert json.loads(msgs[0]) == dict(IDENT, type="drop", offset=4 * FRAME, samples=4 * FRAME)
    assert frames == 1 + 2 and totals.sent_frames == 2 and totals.sent_bytes == 2 * (FRAME + FRAME // 2)
    assert ob.sent_samples == FRAME + FRAME // 2 and ob.expected == ob.offset and not ob.pending
    server = Server()
    server.start(0)
    server.read(msgs)
    assert server.audio == {o: o & 0x7FFF for o in range(4 * FRAME, 5 * FRAME + FRAME // 2)}


def test_take_stops_at_the_budget():
    ob = outbox()
    for i in range(10):
        ob.push_audio(pcm(i * FRAME))
    msgs = []
    assert ob.take(msgs, 3 * 2 * FRAME) == 3 and ob.pending
    assert ob.take(msgs, 1) == 1
    assert ob.take(msgs, 1 << 20) == 6 and not ob.pending
    assert ob.take(msgs, 1 << 20) == 0
    assert b"".join(bytes(m) for m in msgs) == pcm(0, 10 * FRAME)


def test_note_sent_reports_what_a_take_carried_first():
    ob = outbox(max_buffer_ms=40)
    msgs = []
    ob.push_audio(pcm(0))
    ob.take(msgs, 1 << 20)
    assert ob.sent is None                              # off unless asked for
    ob.note_sent = True
    for i in range(1, 5):
        ob.push_audio(pcm(i * FRAME))
    ob.take(msgs, 1 << 20)
    assert ob.sent == (3 * FRAME, 5 * FRAME)            # 1 and 2 were dropped, never sent
    ob.sent = None
    ob.push_audio(pcm(5 * FRAME))
    ob.take(msgs, 1 << 20)
    assert ob.sent == (5 * FRAME, 6 * FRAME)


# --------------------------------------------------------------------------- the resend window


def test_resend_window_after_a_reconnect():
    totals = Totals()
    ob = outbox(resend_ms=100, totals=totals)           # 5 frames kept
    assert ob.connected() == (False, 0)
    msgs = []
    for i in range(8):
        ob.push_audio(pcm(i * FRAME))
        ob.take(msgs, 1 << 20)
    assert ob.retained_samples == 5 * FRAME and ob.retained_bytes == 10 * FRAME
    assert ob.unkept_samples == 3 * FRAME              # left the window, never acknowledged
    ob.push_audio(pcm(8 * FRAME))                       # queued, not sent, when the connection breaks
    assert ob.connection_lost() == 3 * FRAME
    assert ob.undelivered_samples == 3 * FRAME and totals.undelivered_samples == 3 * FRAME
    assert ob.connection_lost() == 0                    # counted once
    resumed, offset = ob.connected()
    assert (resumed, offset) == (True, 3 * FRAME)
    msgs = []
    frames = ob.resend(msgs, offset) + ob.take(msgs, 1 << 20)
    assert frames == 6 and kinds(msgs) == [FRAME] * 6
    assert b"".join(bytes(m) for m in msgs) == pcm(3 * FRAME, 6 * FRAME)
    assert totals.sent_frames == 8 + 6                 # resent frames count again
    assert ob.sent_samples == 9 * FRAME                 # ... but not here


def test_resume_offset_without_a_window():
    ob = outbox(resend_ms=0)
    ob.connected()
    msgs = []
    ob.push_audio(pcm(0))
    ob.take(msgs, 1 << 20)
    assert ob.retained_samples == 0 and ob.unkept_samples == FRAME
    assert ob.connected() == (True, FRAME)              # nothing kept, nothing queued: where the stream is
    ob.push_audio(pcm(FRAME))
    assert ob.connected() == (True, FRAME)              # the queue's first
    assert ob.resend([], FRAME) == 0


def test_resend_marks_gaps_in_the_window():
    ob = outbox(max_buffer_ms=40, resend_ms=1000)
    ob.connected()
    msgs = []
    ob.push_audio(pcm(0))
    ob.take(msgs, 1 << 20)
    for i in range(1, 5):                               # 1 and 2 are dropped before they are sent
        ob.push_audio(pcm(i * FRAME))
    ob.take(msgs, 1 << 20)
    ob.connection_lost()
    resumed, offset = ob.connected()
    assert (resumed, offset) == (True, 0)
    msgs = []
    assert ob.resend(msgs, offset) == 1 + 1 + 2
    assert kinds(msgs) == [FRAME, "drop", FRAME, FRAME]
    assert json.loads(msgs[1])["offset"] == 3 * FRAME and json.loads(msgs[1])["samples"] == 2 * FRAME


def one_frame_sent_and_acknowledged():
    """An outbox of 40 ms (two frames) whose first frame went out and was acknowledged."""
    ob = outbox(max_buffer_ms=40, resend_ms=1000)
    ob.connected()
    ob.push_audio(pcm(0))
    ob.take([], 1 << 20)
    ob.acknowledge(FRAME)
    return ob


def test_a_gap_after_everything_acknowledged_is_announced_on_the_next_connection():
    """Everything sent was acknowledged when the connection broke (the server's last
    read was a ping), and the outage dropped audio: the resumed start is where the
    sent audio ends, so the gap before the queue gets its ``drop``.  (It once started
    at the queue's first offset: the sink saw the gap in the offsets only, and the
    end's ``dropped_ms`` named audio no ``drop`` had announced.)"""
    ob = one_frame_sent_and_acknowledged()
    assert ob.retained_samples == 0
    ob.connection_lost()
    for i in range(1, 5):                               # 1 and 2 are dropped during the outage
        ob.push_audio(pcm(i * FRAME))
    assert ob.dropped_samples == 2 * FRAME
    resumed, offset = ob.connected()
    assert (resumed, offset) == (True, FRAME) and ob.resume_at == FRAME
    msgs = []
    frames = ob.resend(msgs, offset) + ob.take(msgs, 1 << 20)
    assert frames == 3 and kinds(msgs) == ["drop", FRAME, FRAME]
    assert json.loads(msgs[0]) == dict(IDENT, type="drop", offset=3 * FRAME, samples=2 * FRAME)


def test_a_drop_lost_with_the_connection_is_sent_again():
    """The ``drop`` went out with the audio after it, and the connection broke
    before the server read them: the resend starts before the gap and repeats the
    ``drop`` (the same offset and samples) ahead of the audio."""
    ob = one_frame_sent_and_acknowledged()
    for i in range(1, 5):
        ob.push_audio(pcm(i * FRAME))
    first = []
    ob.take(first, 1 << 20)
    assert kinds(first) == ["drop", FRAME, FRAME]
    ob.connection_lost()                                # none of it was read
    resumed, offset = ob.connected()
    assert (resumed, offset) == (True, FRAME)
    again = []
    assert ob.resend(again, offset) == 3
    assert kinds(again) == ["drop", FRAME, FRAME] and again[0] == first[0]
    assert b"".join(bytes(m) for m in again[1:]) == pcm(3 * FRAME, 2 * FRAME)


def test_audio_that_left_the_window_moves_the_resume_point_past_it():
    ob = outbox(max_buffer_ms=1000, resend_ms=40)       # two frames kept
    ob.connected()
    msgs = []
    for i in range(5):
        ob.push_audio(pcm(i * FRAME))
        ob.take(msgs, 1 << 20)
    assert ob.unkept_samples == 3 * FRAME and ob.resume_at == 3 * FRAME
    ob.acknowledge(4 * FRAME)
    assert ob.resume_at == 4 * FRAME and ob.connected() == (True, 4 * FRAME)


# --------------------------------------------------------------------------- evidence of delivery


def test_only_the_pong_to_the_ping_in_flight_acknowledges():
    ob = outbox(resend_ms=2000)                         # a ping after 1 s of audio
    assert ob.ping_every == 16000
    assert outbox(resend_ms=200).ping_every == ACK_MIN_MS * 16
    ob.connected()
    msgs = []
    for i in range(49):
        ob.push_audio(pcm(i * FRAME))
    ob.take(msgs, 1 << 20)
    assert ob.ping_due() is None                        # 980 ms written
    ob.push_audio(pcm(49 * FRAME))
    ob.take(msgs, 1 << 20)
    assert ob.ping_due() == 16000
    ob.push_audio(pcm(50 * FRAME))
    ob.take(msgs, 1 << 20)
    assert ob.ping_due() is None                        # one in flight at most
    assert not ob.pong(b"anything") and not ob.pong((16320).to_bytes(8, "big"))
    assert ob.acknowledged == 0 and ob.retained_samples == 51 * FRAME
    assert ob.pong((16000).to_bytes(8, "big"))
    assert ob.acknowledged == 16000 and ob.retained_samples == FRAME
    assert not ob.pong((16000).to_bytes(8, "big"))      # answered already


def test_a_broken_connection_forgets_the_ping_in_flight():
    ob = outbox(resend_ms=1000)
    ob.connected()
    ob.push_audio(pcm(0, 8000))
    ob.take([], 1 << 20)
    assert ob.ping_due() == 8000
    ob.connection_lost()
    assert not ob.pong((8000).to_bytes(8, "big"))       # that pong came on the old connection
    assert ob.acknowledged == 0 and ob.retained_samples == 8000


def test_acknowledge_frees_part_of_a_run_and_what_left_the_window():
    ob = outbox(resend_ms=40)
    ob.connected()
    ob.push_audio(pcm(0, 3 * FRAME))
    ob.take([], 1 << 20)
    assert ob.retained_samples == 2 * FRAME and ob.unkept_samples == FRAME
    ob.acknowledge(100)                                  # part of what left the window
    assert ob.unkept_samples == FRAME - 100 and ob.retained_samples == 2 * FRAME
    ob.acknowledge(FRAME + 100)
    (off, view, n), = ob.retained
    assert (off, n) == (FRAME + 100, 2 * FRAME - 100) and bytes(view) == pcm(FRAME + 100, 2 * FRAME - 100)
    assert ob.unkept_samples == 0                        # the audio that left the window was acknowledged too
    ob.acknowledge(50)                                   # older evidence changes nothing
    assert ob.acknowledged == FRAME + 100
    assert ob.connection_lost() == 0


@pytest.mark.parametrize("code, delivered", [(1000, True), (1005, True), (1001, False), (1011, False), (None, False)])
def test_the_close_after_end_acknowledges_the_stream_only_if_normal(code, delivered):
    ob = outbox(resend_ms=1000)
    ob.connected()
    for i in range(3):
        ob.push_audio(pcm(i * FRAME))
    ob.take([], 1 << 20)
    assert ob.end({"type": "end", "reason": "bye"})
    assert ob.end_answered(code) is delivered
    assert ob.acknowledged == (3 * FRAME if delivered else 0)
    assert ob.retained_samples == (0 if delivered else 3 * FRAME)


def test_end_message_and_nothing_after_it():
    ob = outbox(max_buffer_ms=20)
    with pytest.raises(RuntimeError, match=r"^stream s1: end_message\(\) before end\(\)$"):
        ob.end_message(reconnects=0)
    ob.push_audio(pcm(0))
    ob.push_audio(pcm(FRAME))
    assert ob.end({"reason": "bye", "tag": "kept"})
    assert not ob.end({"reason": "again"}) and ob.ended
    assert not ob.push_audio(pcm(2 * FRAME)) and ob.offset == 2 * FRAME
    assert not ob.push_event({"type": "hold"}) and not ob.events
    ob.take([], 1 << 20)
    end = ob.end_message(reconnects=2)
    assert end == {"reason": "bye", "tag": "kept", "type": "end", "call_id": "call-1", "stream_id": "s1",
                   "samples": 2 * FRAME, "dropped_ms": 20, "reconnects": 2}


def test_abandon_counts_queued_as_dropped_and_unacknowledged_as_undelivered():
    totals = Totals()
    ob = outbox(resend_ms=40, totals=totals)
    ob.connected()
    for i in range(3):
        ob.push_audio(pcm(i * FRAME))
    ob.take([], 1 << 20)                                 # 2 frames kept, 1 left the window
    ob.push_audio(pcm(3 * FRAME))
    ob.push_event({"type": "hold"})
    assert ob.abandon() == (FRAME, 3 * FRAME)
    assert ob.dropped_samples == FRAME and ob.undelivered_samples == 3 * FRAME
    assert (totals.dropped_samples, totals.undelivered_samples) == (FRAME, 3 * FRAME)
    assert not ob.pending and ob.retained_samples == 0 and ob.unkept_samples == 0
    assert not ob.push_audio(pcm(4 * FRAME))             # only counted: the end's samples stay right
    assert ob.offset == 5 * FRAME and ob.dropped_samples == 2 * FRAME
    assert not ob.push_event({"type": "hold"})
    assert ms(1) == 1 and ms(16) == 1 and ms(17) == 2


def test_totals_are_shared():
    totals = Totals()
    a, b = Outbox(dict(IDENT, stream_id="a"), totals=totals), Outbox(dict(IDENT, stream_id="b"), totals=totals)
    for ob in (a, b):
        ob.push_audio(pcm(0))
        ob.take([], 1 << 20)
    assert (totals.sent_frames, totals.sent_bytes) == (2, 4 * FRAME)
    assert repr(totals).startswith("Totals(dropped_events=0, dropped_samples=0, sent_bytes=1280, sent_frames=2")


# --------------------------------------------------------------------------- a whole stream


@pytest.mark.parametrize("seed", range(100))    # 79, 86 and 89 caught an unannounced gap
def test_contiguous_offsets_through_drops_acks_and_reconnects(seed):
    """Random pushes, takes, pings, pongs and broken connections (each losing the tail
    of what it carried): every frame the server holds is at its own offset, and what
    it lacks is exactly counted as dropped or, at most, undelivered."""
    rng = random.Random(seed)
    totals = Totals()
    ob = Outbox(IDENT, frame_ms=20, max_buffer_ms=rng.choice([60, 200, 1000]),
                resend_ms=rng.choice([0, 100, 600, 2000]), totals=totals)
    server = Server()
    connected = False
    for _ in range(400):
        if not connected:
            resumed, offset = ob.connected()
            server.start(offset)
            written = []
            ob.resend(written, offset)
            connected = True
        r = rng.random()
        if r < 0.5:
            ob.push_audio(pcm(ob.offset, rng.choice([FRAME, FRAME, 3 * FRAME, 100])))
        elif r < 0.55:
            ob.push_event({"type": "hold", "offset": ob.offset})
        elif r < 0.85:
            ob.take(written, rng.choice([1, 2000, 1 << 20]))
            at = ob.ping_due()
            if at is not None:
                written.append(("ping", at))
        elif r < 0.95:                                   # the server reads all written so far and answers
            for m in written:
                if isinstance(m, tuple):
                    assert ob.pong(m[1].to_bytes(8, "big"))
                else:
                    server.read([m])
            written = []
        else:                                            # the connection breaks: the tail is lost
            keep = rng.randrange(len(written) + 1)
            server.read([m for m in written[:keep] if not isinstance(m, tuple)])
            ob.connection_lost()
            connected = False
    if not connected:
        resumed, offset = ob.connected()
        server.start(offset)
        written = []
        ob.resend(written, offset)
    assert ob.end({"type": "end", "reason": "bye"})
    while ob.pending:
        ob.take(written, 1 << 20)
    server.read([m for m in written if not isinstance(m, tuple)])
    end = ob.end_message(reconnects=0)
    assert ob.end_answered(1000) and ob.retained_samples == 0 and ob.acknowledged == ob.offset
    for off, v in server.audio.items():
        assert v == off & 0x7FFF
    assert end["samples"] == ob.offset and end["dropped_ms"] == ob.dropped_samples // 16
    # every gap is announced (a drop repeated after a reconnect is the same message), except
    # one whose drop and the audio after it were lost and that audio then left the window
    announced = sum(m["samples"] for m in {json.dumps(t, sort_keys=True): t for t in server.texts
                                           if t["type"] == "drop"}.values())
    if ob.undelivered_samples == 0:
        assert announced == ob.dropped_samples
    else:
        assert announced <= ob.dropped_samples
    missing = ob.offset - len(server.audio)
    assert ob.dropped_samples <= missing <= ob.dropped_samples + ob.undelivered_samples
    assert totals.dropped_samples == ob.dropped_samples and totals.undelivered_samples == ob.undelivered_samples


# --------------------------------------------------------------------------- take_framed: the data plane's take




class Keys:
    """A key source as the sender's (``_mask_keys``): n bytes a call, noted."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        self.asked: list[int] = []

    def __call__(self, n: int) -> bytes:
        self.asked.append(n)
        return self.rng.randbytes(n)


def test_take_framed_is_take_encoded_with_the_ping_after_it():
    ob = outbox(max_buffer_ms=100, resend_ms=1000)       # 5 frames queued at most; a ping after 500 ms
    ob.connected()
    for i in range(24):
        ob.push_audio(pcm(i * FRAME))
        ob.take([], 1 << 20)
    assert ob.ping_due() is None                         # 480 ms written
    ob.push_event({"type": "codec", "codec": "PCMA"})
    ob.push_audio(pcm(24 * FRAME, 7 * FRAME))            # one run of 7 frames, 2 dropped
    keys = Keys()
    data = ob.take_framed(keys, 1 << 20)
    frames = parse_frames(data)
    assert [f.opcode for f in frames] == [Opcode.TEXT, Opcode.TEXT] + [Opcode.BINARY] * 5 + [Opcode.PING]
    assert keys.asked == [4 * 8]
    assert json.loads(frames[0].data) == {"type": "codec", "codec": "PCMA"}
    assert json.loads(frames[1].data) == dict(IDENT, type="drop", offset=26 * FRAME, samples=2 * FRAME)
    assert b"".join(f.data for f in frames[2:-1]) == pcm(26 * FRAME, 5 * FRAME)
    assert all(len(f.data) == 2 * FRAME for f in frames[2:-1])
    assert frames[-1].data == (31 * FRAME).to_bytes(8, "big") and ob.ping_at == 31 * FRAME
    assert ob.take_framed(keys, 1 << 20) == b"" and keys.asked == [4 * 8]   # nothing: no keys, no ping


def test_without_gap_announcements_a_gap_is_counted_and_not_sent():
    """``announce_gaps=False`` (a format with no ``drop`` message, ws.formats): the
    audio after a gap follows the audio before it with no text between, in take,
    take_framed and resend alike; the gap is counted as dropped all the same."""
    ob = outbox(max_buffer_ms=100, resend_ms=1000, announce_gaps=False)
    assert not ob.announce_gaps and outbox().announce_gaps
    ob.connected()
    ob.push_audio(pcm(0))
    ob.take([], 1 << 20)
    ob.push_event({"type": "codec", "codec": "PCMA"})
    ob.push_audio(pcm(FRAME, 7 * FRAME))                # 2 frames dropped: the oldest
    data = ob.take_framed(Keys(), 1 << 20)
    frames = parse_frames(data)
    assert [f.opcode for f in frames] == [Opcode.TEXT] + [Opcode.BINARY] * 5
    assert b"".join(f.data for f in frames[1:]) == pcm(3 * FRAME, 5 * FRAME)
    assert ob.dropped_samples == 2 * FRAME and ob.totals.dropped_samples == 2 * FRAME
    ob.connection_lost()
    assert ob.connected() == (True, 0)
    resent: list = []
    assert ob.resend(resent, 0) == 6 and kinds(resent) == [FRAME, 5 * FRAME]     # the window, with no drop


@pytest.mark.parametrize("announce_gaps", [True, False])
@pytest.mark.parametrize("seed", range(4))
def test_take_framed_gives_the_same_bytes_on_both_twins(seed, announce_gaps):
    if "native" not in TWINS:
        pytest.skip("rtp2ws._wsframe is not built (or RTP2WS_NO_NATIVE is set)")
    rng = random.Random(seed)
    kw = dict(frame_ms=rng.choice([20, 40]), max_buffer_ms=rng.choice([100, 1000]), resend_ms=rng.choice([0, 600]),
              channels=rng.choice([1, 2]), announce_gaps=announce_gaps)
    both = [cls(dict(IDENT, stream_id="é-s"), **kw) for cls, _ in TWINS.values()]
    for _ in range(300):
        r = rng.random()
        if r < 0.5:
            chunk = pcm(0, rng.choice([FRAME, 100, 1000]), both[0].channels)
            assert len({ob.push_audio(chunk) for ob in both}) == 1
        elif r < 0.6:
            event = {"type": "dtmf", "digit": "☎", "n": rng.random()}
            assert len({ob.push_event(event) for ob in both}) == 1
        elif r < 0.9:
            budget = rng.choice([0, 1, 700, 5000, 1 << 20])
            key = rng.randbytes(4 * 400)
            outs = [ob.take_framed(key, budget) for ob in both]
            assert outs[0] == outs[1]
        else:
            at = both[0].ping_at
            if at is not None:
                assert all(ob.pong(at.to_bytes(8, "big")) for ob in both)
        assert [ob.ping_at for ob in both][0] == both[1].ping_at


def test_take_framed_checks_the_keys():
    ob = outbox()
    ob.push_audio(pcm(0, 2 * FRAME))
    with pytest.raises(ValueError, match="^2 frames need 8 mask key bytes, got 7$"):
        ob.take_framed(b"k" * 7, 1 << 20)
    assert not ob.pending and ob.sent_samples == 2 * FRAME     # taken (and lost), as the sender would have

    def broken(n: int) -> bytes:
        raise OSError("no randomness")

    ob.push_audio(pcm(2 * FRAME))
    with pytest.raises(OSError):
        ob.take_framed(broken, 1 << 20)
    assert not ob.pending and ob.sent_samples == 3 * FRAME


# --------------------------------------------------------------------------- both twins alike


def test_the_twins_share_either_totals():
    for ob_cls, _ in TWINS.values():
        for totals in (cls() for _, cls in TWINS.values()):
            ob = ob_cls(IDENT, totals=totals, max_buffer_ms=20)
            ob.push_audio(pcm(0, 2 * FRAME))
            ob.take([], 1 << 20)
            ob.push_event({"type": "hold"})
            assert (totals.dropped_samples, totals.sent_frames, totals.sent_bytes) == (FRAME, 1, 2 * FRAME)


def test_the_c_twin_holds_audio_in_shared_chunks_and_costs_little_idle():
    native = load_native("_wsframe")
    if native is None:
        pytest.skip("rtp2ws._wsframe is not built (or RTP2WS_NO_NATIVE is set)")
    used0 = native.chunk_counts()[0]
    ob = native.Outbox(IDENT, resend_ms=1000)
    assert sys.getsizeof(ob) + sys.getsizeof(ob.ident) < 1024
    ob.connected()
    for i in range(100):                                 # 2 s at realtime, a pong now and then
        ob.push_audio(pcm(i * FRAME))
        ob.take_framed(os.urandom, 1 << 20)
        if ob.ping_at is not None and i % 10 == 0:
            ob.pong(ob.ping_at.to_bytes(8, "big"))
        held = ob.queued_bytes + ob.retained_bytes
        # the window's bytes in whole chunks, at most one partly used at each end of each FIFO
        assert native.chunk_counts()[0] - used0 <= -(-held // native.CHUNK_BYTES) + 4
    assert ob.retained_bytes <= 32000
    ob.end_answered(1000)
    assert ob.retained_samples == 0 and native.chunk_counts()[0] == used0
    ob.push_audio(pcm(0, 16000))
    ob.abandon()
    assert native.chunk_counts()[0] == used0
    with pytest.raises(ValueError, match="channels must be 1 or more"):
        native.Outbox(IDENT, channels=0)


# call: weight (ending and abandoning are rare, so that most calls find a stream going on)
OPS = {"push": 30, "event": 4, "take": 14, "framed": 14, "connected": 4, "ping": 8, "pong": 8, "ack": 3,
       "lost": 3, "note": 2, "close": 1, "end": 0.4, "end_message": 0.6, "end_answered": 0.5, "abandon": 0.2}

STATE = ("offset", "dropped_samples", "dropped_events", "sent_samples", "acknowledged", "resume_at", "undelivered_samples",
         "queued_samples", "retained_samples", "queued_bytes", "retained_bytes", "unkept_samples", "ping_at",
         "expected", "started", "ended", "closed", "dropping", "pending", "sent", "note_sent", "ping_every",
         "frame_samples", "frame_bytes", "max_samples", "resend_samples", "max_buffer_ms", "resend_ms",
         "stream_id", "ident", "channels")


def state(ob) -> dict:
    out = {k: getattr(ob, k) for k in STATE}
    out["queue"] = [(off, bytes(p), n) for off, p, n in ob.queue]
    out["retained"] = [(off, bytes(p), n) for off, p, n in ob.retained]
    out["events"] = list(ob.events)
    out["totals"] = repr(ob.totals)
    out["repr"] = repr(ob)
    return out


def plain(value):
    """A return value with every buffer as bytes (the C twin's messages are bytes,
    the Python twin's bytes or memoryviews)."""
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(plain(v) for v in value)
    if isinstance(value, (memoryview, bytearray)):
        return bytes(value)
    return value


def step(ob, op: str, arg):
    """One call; returns what it returned (or the exception's class and text) and the messages."""
    msgs: list = []
    try:
        if op == "push":
            r = ob.push_audio(arg)
        elif op == "event":
            r = ob.push_event(arg)
        elif op == "take":
            r = ob.take(msgs, arg)
        elif op == "framed":
            r = ob.take_framed(arg[0], arg[1])
        elif op == "connected":
            r = ob.connected()
        elif op == "ping":
            r = ob.ping_due()
        elif op == "pong":
            r = ob.pong(arg)
        elif op == "ack":
            r = ob.acknowledge(arg)
        elif op == "lost":
            r = ob.connection_lost()
        elif op == "end":
            r = ob.end(arg)
        elif op == "end_message":
            r = ob.end_message(arg)
        elif op == "end_answered":
            r = ob.end_answered(arg)
        elif op == "abandon":
            r = ob.abandon()
        elif op == "close":
            r = ob.close()
        else:
            ob.note_sent = arg
            ob.sent = None
            r = None
    except (ValueError, RuntimeError) as e:
        r = (type(e), str(e))
    return plain(r), plain(msgs)


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append((record.name, record.levelno, record.msg, record.args, record.getMessage()))


def random_arg(rng: random.Random, op: str, ob, channels: int):
    if op == "push":
        n = rng.choice([FRAME, FRAME, 3 * FRAME, FRAME // 2, 1, 0, 4000])
        data = pcm(ob.offset, n, channels)
        if rng.random() < 0.05:
            data += b"\0"                                # not whole samples
        return rng.choice([bytes, bytearray, memoryview])(data)
    if op == "event":
        return {"type": "hold", "by": "caller", "offset": ob.offset, "note": "é" * rng.randrange(3)}
    if op == "take":
        return rng.choice([0, 1, 2 * FRAME, 3000, 1 << 20])
    if op == "framed":
        return rng.randbytes(4 * 600), rng.choice([0, 1, 2 * FRAME, 3000, 1 << 20])
    if op == "connected":
        return None
    if op == "pong":
        at = ob.ping_at
        return rng.choice([b"", b"\0" * 8, (at or 0).to_bytes(8, "big"), ((at or 0) + 1).to_bytes(8, "big")])
    if op == "ack":
        return rng.randrange(ob.offset + 2)
    if op == "end":
        return {"reason": "bye", "tag": rng.choice(["kept", "caller"])}
    if op == "end_message":
        return rng.randrange(3)
    if op == "end_answered":
        return rng.choice([1000, 1005, 1001, None])
    if op == "note":
        return rng.random() < 0.5
    return None


@pytest.mark.parametrize("seed", range(20))
def test_differential_both_twins_alike_through_random_calls(seed):
    """Random calls of every kind on both twins: the same return values, messages,
    attributes, totals and log records after each one."""
    if "native" not in TWINS:
        pytest.skip("rtp2ws._wsframe is not built (or RTP2WS_NO_NATIVE is set)")
    rng = random.Random(seed)
    channels = rng.choice([1, 1, 2])
    kw = dict(channels=channels, frame_ms=rng.choice([None, 20, 40, 30.0]),
              max_buffer_ms=rng.choice([0, 20, 60, 200, 1000]), resend_ms=rng.choice([0, 40, 100, 600, 2000]))
    ident = dict(IDENT, stream_id=rng.choice(["s1", "é", None]))
    cls_c, tot_c = TWINS["native"]
    obs = [OutboxPy(ident, totals=TotalsPy(), **kw), cls_c(ident, totals=tot_c(), **kw)]
    logger = logging.getLogger("rtp2ws.sender")
    handlers = [Records(), Records()]
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        for _ in range(600):
            op = rng.choices(list(OPS), list(OPS.values()))[0]
            arg = random_arg(rng, op, obs[0], channels)
            if op == "connected":
                arg = None
            results = []
            for ob, h in zip(obs, handlers):
                logger.addHandler(h)
                try:
                    if op == "connected":
                        resumed, offset = ob.connected()
                        msgs: list = []
                        r = ((resumed, offset), ob.resend(msgs, offset)), plain(msgs)
                    else:
                        r = step(ob, op, arg)
                finally:
                    logger.removeHandler(h)
                results.append(r)
            assert results[0] == results[1], (op, arg)
            assert state(obs[0]) == state(obs[1]), (op, arg)
            assert handlers[0].seen == handlers[1].seen
    finally:
        logger.setLevel(old_level)


def test_backend_is_the_first_of_backends():
    assert outbox_module.BACKEND == outbox_module.BACKENDS[0]
    assert outbox_module.Outbox is TWINS[outbox_module.BACKEND][0]
    assert outbox_module.Totals is TWINS[outbox_module.BACKEND][1]


# --------------------------------------------------------------------------- other audio formats


@pytest.mark.parametrize("rate,sample_bytes,channels", [(8000, 1, 1), (24000, 2, 1), (48000, 1, 2), (8000, 2, 2)])
def test_rate_and_sample_size_set_frames_bounds_and_the_drop_accounting(caplog, rate, sample_bytes, channels):
    """An outbox of another rate and sample size (--rate, --encoding): messages of frame_ms
    at that rate, the bounds in samples of that rate, offsets and drops in samples, and
    milliseconds from them."""
    caplog.set_level(logging.INFO, logger="rtp2ws.sender")
    spm = rate // 1000
    frame = 20 * spm
    ob = outbox(max_buffer_ms=100, resend_ms=1000, sample_rate=rate, sample_bytes=sample_bytes, channels=channels)
    assert (ob.sample_rate, ob.sample_bytes, ob.samples_per_ms) == (rate, sample_bytes, spm)
    assert (ob.frame_samples, ob.frame_bytes) == (frame, sample_bytes * channels)
    assert (ob.max_samples, ob.resend_samples, ob.ping_every) == (100 * spm, 1000 * spm, 500 * spm)
    block = sample_bytes * channels
    run = bytes(range(256)) * (12 * frame * block // 256 + 1)
    assert ob.push_audio(run[:12 * frame * block]) and ob.offset == 12 * frame      # 12 frames, 7 dropped
    assert ob.dropped_samples == 7 * frame and ob.queued_bytes == 5 * frame * block
    if block > 1:
        with pytest.raises(ValueError, match=f"is not a whole number of {channels}-channel {8 * sample_bytes}-bit"):
            ob.push_audio(b"\0" * (block + 1))
    ob.connected()
    frames = parse_frames(ob.take_framed(Keys(), 1 << 20))      # as the sender writes them
    assert json.loads(frames[0].data) == dict(IDENT, type="drop", offset=7 * frame, samples=7 * frame)
    assert [len(f.data) for f in frames[1:]] == [frame * block] * 5
    assert b"".join(f.data for f in frames[1:]) == run[7 * frame * block:12 * frame * block]
    ob.end(dict(IDENT, type="end", reason="bye"))
    assert ob.end_message(0)["dropped_ms"] == 140 and ob.end_message(0)["samples"] == 12 * frame
    assert "stream s1: 100 ms of audio queued (server slow or unreachable), dropping the oldest" in \
        [r.getMessage() for r in caplog.records]
    for bad in ({"sample_rate": 8001}, {"sample_rate": 500}, {"sample_bytes": 3}, {"sample_bytes": 0}):
        with pytest.raises(ValueError, match="an outbox takes a whole number of kHz and 1 or 2 bytes a sample"):
            outbox(**bad)
