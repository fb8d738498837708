"""Every stream to NATS JetStream: the asyncio adapter (nats-py) beside the WebSocket
sender, fed with ``sinks.streams.StreamSink``'s operations through ``NatsBridge``.

Threads.  The decoder thread applies a tick's operations (``NatsPublisher.submit``)
to each stream's ``ws.outbox.Outbox`` under the publisher's lock: O(1) appends to a
bounded queue, so capture never waits.  The publisher's own thread runs an event
loop (uvloop) that owns the NATS connection: every ``chunk_ms`` it takes what each
outbox holds and publishes it, one audio message per stream and look (whatever
runs it holds, contiguous, joined), the records in their places.

Bounds and drops: the WebSocket side's rules, from the same ``Outbox``.  A stream's
unsent audio is bounded by ``max_buffer_ms`` (the oldest dropped, counted, and a
``drop`` record where the audio resumes); events by ``outbox.MAX_EVENTS``.  Messages
published and not yet acknowledged are kept, at most ``max_inflight`` of them over
all streams: while that many wait, nothing more is taken, and the queues absorb (and
drop from their heads) what comes meanwhile.

Delivery needs evidence: a message counts once JetStream's ``PubAck`` for it came
back (the reply subject names the message's sequence here).  An error reply (no
stream, no responders while the server recovers), no answer within
``ack_timeout_s``, or a reconnect makes the publisher publish again, in their first
order, every message not acknowledged yet, each with the message id it had
(``broker.subjects``): JetStream drops those it stored already (de-duplication
within the stream's duplicate window), so a reconnect adds no duplicate.  While the
connection is down nothing is published (nats-py would buffer it unbounded).  A
stream's ``end`` goes once all its audio is acknowledged, so the end marker is the
last message of its subject; an ended stream not acknowledged ``linger`` seconds
later is given up (queued audio dropped, unacknowledged audio undelivered).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..codec.audioformat import AudioFormat
from ..pipeline.sink import Forward
from ..sinks.streams import Audio, End, Event, Op, Open, StreamSink
from ..ws.outbox import Outbox, Totals
from . import subjects as sj

log = logging.getLogger("rtp2ws.nats")

TAKE_BYTES = 1 << 20         # audio taken from one outbox at one look, at most
RETRY_S = 0.5                # after an error reply, publish again this much later
STATUS = "Status"
NO_RESPONDERS = "503"
RETENTIONS = ("limits", "interest")
STORAGES = ("file", "memory")


class NatsError(Exception):
    """The server cannot be used (unreachable at start, a stream that does not fit)."""


@dataclass
class NatsConfig:
    url: str                                   # nats://host:port (several: comma-separated)
    stream: str = sj.DEFAULT_STREAM            # the JetStream stream, created if missing
    prefix: str = sj.DEFAULT_PREFIX            # subjects <prefix>.audio.<call>.<tag>, <prefix>.calls
    retention: str = "limits"
    storage: str = "file"
    max_age_s: float = 86400.0                 # the stream's limits, when rtp2ws creates it
    max_bytes: int = 1 << 30
    replicas: int = 1
    duplicate_window_s: float = 120.0          # JetStream drops a message whose id it saw this recently
    max_buffer_ms: int = 10000                 # per stream: unsent audio before the oldest is dropped
    max_inflight: int = 1024                   # messages published and not acknowledged, all streams
    chunk_ms: int = 100                        # a stream's audio is published this often
    frame_ms: int = 20                         # drops cut whole frames of this length
    ack_timeout_s: float = 5.0
    connect_timeout_s: float = 5.0
    linger_s: float | None = None
    audio: AudioFormat = field(default_factory=AudioFormat)

    def __post_init__(self) -> None:
        sj.check_prefix(self.prefix)
        sj.check_stream_name(self.stream)
        if self.retention not in RETENTIONS or self.storage not in STORAGES:
            raise ValueError(f"retention {self.retention!r}, storage {self.storage!r}: "
                             f"one of {RETENTIONS} and one of {STORAGES}")
        # the dedup window must cover a resend: what waits longer than it may be stored twice
        if self.duplicate_window_s < 2 * self.ack_timeout_s:
            raise ValueError(f"the duplicate window ({self.duplicate_window_s:g} s) must be at least twice the "
                             f"acknowledgement time-out ({self.ack_timeout_s:g} s)")

    @property
    def linger(self) -> float:
        """How long an ended stream keeps trying: as the WebSocket sender's."""
        if self.linger_s is not None:
            return self.linger_s
        return max(10.0, self.max_buffer_ms / 1000)


class _Message:
    """One message published and not yet acknowledged: kept whole to publish again."""

    __slots__ = ("stream", "subject", "payload", "headers", "samples", "sent_at", "final")

    def __init__(self, stream: _Stream, subject: str, payload: bytes, headers: dict[str, str],
                 samples: int = 0, final: bool = False) -> None:
        self.stream = stream
        self.subject = subject
        self.payload = payload
        self.headers = headers
        self.samples = samples            # audio: samples per channel
        self.final = final                # the end record or the end marker
        self.sent_at = 0.0


class _Stream:
    """A stream's publishing state; its outbox is shared with the decoder thread (lock)."""

    __slots__ = ("id", "subject", "outbox", "fmt", "records", "inflight", "end_sent", "ended_at", "done")

    def __init__(self, stream_id: str, subject: str, outbox: Any, fmt: sj.Format) -> None:
        self.id = stream_id
        self.subject = subject
        self.outbox = outbox
        self.fmt = fmt.header()
        self.records = 0                  # records other than start/end made so far (their ids)
        self.inflight = 0
        self.end_sent = False
        self.ended_at: float | None = None
        self.done = False


class NatsPublisher:
    """Publishes every stream's operations to JetStream from a thread of its own."""

    def __init__(self, config: NatsConfig) -> None:
        self.config = config
        self.totals = Totals()
        self._lock = threading.Lock()
        self._streams: dict[str, _Stream] = {}          # open and ended, until done (lock)
        self._inflight: OrderedDict[int, _Message] = OrderedDict()   # loop thread only
        self._seq = 0
        self._resend_at: float | None = None
        self._connected = False
        self._closing = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._nc: Any = None
        self._reply_prefix = ""
        self.counts = {"streams": 0, "published": 0, "republished": 0, "acknowledged": 0, "duplicates": 0,
                       "errors": 0, "reconnects": 0, "given_up": 0, "timeouts": 0}
        self._undelivered_samples = 0
        self._spm = config.audio.samples_per_ms

    # -- both threads -------------------------------------------------------------------

    def start(self) -> None:
        """Connect, create (or check) the stream; NatsError when it cannot."""
        self._thread = threading.Thread(target=self._run, name="rtp2ws-nats", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise NatsError(str(self._error)) from self._error

    def submit(self, ops: Sequence[Op]) -> None:
        """Decoder thread: a tick's operations, into the streams' outboxes (never waits
        for the network)."""
        cfg = self.config
        audio = cfg.audio
        with self._lock:
            streams = self._streams
            for op in ops:
                if type(op) is Audio:
                    st = streams.get(op.stream_id)
                    if st is not None:
                        st.outbox.push_audio(op.pcm)
                elif isinstance(op, Open):
                    start = dict(op.start)
                    subject = sj.audio_subject(cfg.prefix, str(start["call_id"]), str(start["tag"]))
                    start.setdefault("resumed", False)
                    start.setdefault("offset", 0)
                    ident = {"call_id": start["call_id"], "tag": start["tag"], "stream_id": op.stream_id}
                    ob = Outbox(ident, channels=op.channels, frame_ms=cfg.frame_ms, max_buffer_ms=cfg.max_buffer_ms,
                                resend_ms=0, totals=self.totals, sample_rate=audio.rate,
                                sample_bytes=audio.sample_bytes)
                    fmt = sj.Format(str(start.get("codec", audio.codec)), audio.rate, op.channels)
                    st = streams[op.stream_id] = _Stream(op.stream_id, subject, ob, fmt)
                    ob.push_event(start)
                    self.counts["streams"] += 1
                elif isinstance(op, Event):
                    st = streams.get(op.stream_id)
                    if st is not None:
                        st.outbox.push_event(op.message)
                elif isinstance(op, End):
                    st = streams.get(op.stream_id)
                    if st is not None:
                        st.outbox.end(op.message)
                        st.ended_at = time.monotonic()

    def close(self, timeout: float | None = None) -> dict[str, Any]:
        """Deliver what every stream holds (for at most ``timeout`` s, by default the
        linger and a margin), give up the rest, disconnect; returns the statistics."""
        if self._thread is None:
            return self.stats
        self._closing.set()
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._poke)
            except RuntimeError:       # the loop ended already
                pass
        self._thread.join(timeout if timeout is not None else self.config.linger + 15.0)
        return self.stats

    @property
    def stats(self) -> dict[str, Any]:
        t = self.totals
        d = dict(self.counts)
        d["dropped_ms"] = t.dropped_samples // self._spm
        d["dropped_events"] = t.dropped_events
        d["undelivered_ms"] = self._undelivered_samples // self._spm
        d["refused"] = 0
        return d

    # -- the loop thread ------------------------------------------------------------------

    def _run(self) -> None:
        from ..ws.bridge import new_event_loop

        loop = self._loop = new_event_loop()
        try:
            loop.run_until_complete(self._main())
        except BaseException as e:  # noqa: BLE001 - reported to start(), or logged
            if not self._ready.is_set():
                self._error = e
            else:
                log.exception("the NATS publisher failed")
        finally:
            self._ready.set()
            loop.close()

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _main(self) -> None:
        import nats

        cfg = self.config
        self._wake = asyncio.Event()

        async def disconnected() -> None:
            if self._connected and not self._closing.is_set():
                log.warning("NATS connection lost: publishing waits, the streams' queues hold the audio")
            self._connected = False

        async def reconnected() -> None:
            self.counts["reconnects"] += 1
            self._connected = True
            self._resend_at = time.monotonic()       # everything unacknowledged, again
            log.warning("NATS connection back: publishing again what was not acknowledged")
            self._poke()

        async def error(e: Exception) -> None:
            log.debug("NATS: %s", e)

        try:
            # nats-py retries an initial connection for ever with max_reconnect_attempts=-1
            nc = self._nc = await asyncio.wait_for(nats.connect(
                cfg.url.split(","), connect_timeout=cfg.connect_timeout_s, allow_reconnect=True,
                max_reconnect_attempts=-1, reconnect_time_wait=0.25, disconnected_cb=disconnected,
                reconnected_cb=reconnected, error_cb=error, name="rtp2ws", pending_size=0), cfg.connect_timeout_s)
        except Exception as e:  # noqa: BLE001 - nats-py raises several kinds; one message
            raise NatsError(f"cannot connect to NATS at {sj.redact_url(cfg.url)}: "
                            f"{str(e) or type(e).__name__}") from None
        try:
            await self._ensure_stream(nc)
            self._reply_prefix = nc.new_inbox() + "."
            await nc.subscribe(self._reply_prefix + "*", cb=self._on_reply)
            self._connected = True
            self._ready.set()
            await self._publish_loop()
        finally:
            await nc.close()

    async def _ensure_stream(self, nc: Any) -> None:
        from nats.js import api
        from nats.js.errors import NotFoundError

        cfg = self.config
        js = nc.jetstream(timeout=cfg.connect_timeout_s)
        want = f"{cfg.prefix}.>"
        try:
            info = await js.stream_info(cfg.stream)
        except NotFoundError:
            await js.add_stream(api.StreamConfig(
                name=cfg.stream, subjects=[want], retention=api.RetentionPolicy(cfg.retention),
                storage=api.StorageType(cfg.storage), max_age=cfg.max_age_s, max_bytes=cfg.max_bytes,
                num_replicas=cfg.replicas, duplicate_window=cfg.duplicate_window_s, discard=api.DiscardPolicy.OLD))
            log.info("created JetStream stream %s (%s)", cfg.stream, want)
            return
        have = info.config.subjects or []
        if want not in have and ">" not in have:
            raise NatsError(f"JetStream stream {cfg.stream} exists with subjects {have}, not {want}: "
                            f"give another --nats-stream or --nats-prefix")
        window = info.config.duplicate_window or 0
        if window < 2 * cfg.ack_timeout_s:
            raise NatsError(f"JetStream stream {cfg.stream} has a duplicate window of {window:g} s: "
                            f"a resend could be stored twice")

    async def _publish_loop(self) -> None:
        cfg = self.config
        wake = self._wake
        assert wake is not None
        period = max(cfg.chunk_ms, 1) / 1000
        deadline: float | None = None
        while True:
            try:
                await asyncio.wait_for(wake.wait(), period)
            except asyncio.TimeoutError:
                pass
            wake.clear()
            now = time.monotonic()
            if self._closing.is_set() and deadline is None:
                deadline = now + cfg.linger + 5.0
            await self._step(now, final=deadline is not None and now >= deadline)
            if self._closing.is_set():
                with self._lock:
                    if not self._streams:
                        return
                if deadline is not None and now >= deadline:
                    return

    async def _step(self, now: float, final: bool = False) -> None:
        cfg = self.config
        if self._connected and self._inflight:
            oldest = next(iter(self._inflight.values()))
            if now - oldest.sent_at > cfg.ack_timeout_s and self._resend_at is None:
                self.counts["timeouts"] += 1
                self._resend_at = now
            if self._resend_at is not None and now >= self._resend_at:
                self._resend_at = None
                for seq, m in list(self._inflight.items()):
                    if not await self._send(seq, m, now):
                        break
                    self.counts["republished"] += 1
        new = self._take(now, final) if self._connected else self._give_up_due(now, final)
        for m in new:
            self._seq += 1
            self._inflight[self._seq] = m
            m.stream.inflight += 1
            self.counts["published"] += 1
            if not await self._send(self._seq, m, now):
                break

    async def _send(self, seq: int, m: _Message, now: float) -> bool:
        m.sent_at = now
        try:
            await self._nc.publish(m.subject, m.payload, reply=f"{self._reply_prefix}{seq}", headers=m.headers)
        except Exception as e:  # noqa: BLE001 - disconnected meanwhile: published again on reconnect
            log.debug("publish failed: %s", e)
            self._connected = self._nc.is_connected
            return False
        return True

    def _take(self, now: float, final: bool) -> list[_Message]:
        """Under the lock: every stream's queued records and audio as messages (within
        the in-flight bound), ends whose audio is acknowledged, and given-up streams."""
        out: list[_Message] = []
        room = self.config.max_inflight - len(self._inflight)
        with self._lock:
            for st in list(self._streams.values()):
                ob = st.outbox
                if room > 0 and ob.pending:
                    room -= self._take_stream(st, out)
                if ob.ended and not ob.pending and st.inflight == 0 and not st.end_sent and room >= 2:
                    end = ob.end_message(self.counts["reconnects"])
                    body = json.dumps(end, separators=(",", ":"), ensure_ascii=False).encode()
                    out.append(_Message(st, sj.calls_subject(self.config.prefix), body,
                                        self._record_headers(st, sj.record_id(st.id, "end", 0)), final=True))
                    out.append(_Message(st, st.subject, body, {sj.MSG_ID: sj.end_marker_id(st.id), sj.STREAM: st.id,
                                                               sj.END: str(ob.offset)}, final=True))
                    st.end_sent = True
                    room -= 2
                if st.end_sent and st.inflight == 0 and not any(m.stream is st for m in out):
                    st.done = True
                    ob.close()
                    del self._streams[st.id]
            self._give_up(now, final)
        return out

    def _give_up_due(self, now: float, final: bool) -> list[_Message]:
        with self._lock:
            self._give_up(now, final)
        return []

    def _give_up(self, now: float, final: bool) -> None:
        """Ended streams past their linger (all, when ``final``): given up."""
        linger = self.config.linger
        for st in list(self._streams.values()):
            if st.ended_at is None or not (final or now - st.ended_at > linger):
                continue
            queued, _ = st.outbox.abandon()
            lost = 0
            for seq, m in list(self._inflight.items()):
                if m.stream is st:
                    lost += m.samples
                    del self._inflight[seq]
            self._undelivered_samples += lost
            self.counts["given_up"] += 1
            log.warning("stream %s given up: %d ms queued dropped, %d ms unacknowledged", st.id,
                        queued // self._spm, lost // self._spm, extra={"stream_id": st.id})
            st.done = True
            del self._streams[st.id]

    def _take_stream(self, st: _Stream, out: list[_Message]) -> int:
        """What ``st``'s outbox holds, as messages: records one each, the audio between
        two records as one message.  Returns how many."""
        ob = st.outbox
        msgs: list[Any] = []
        pos = ob.expected
        ob.take(msgs, TAKE_BYTES)
        n = len(out)
        pcm: list[Any] = []
        first = pos
        for m in msgs:
            if isinstance(m, str):
                if pcm:
                    out.append(self._audio(st, first, pcm))
                    pcm = []
                rec = json.loads(m)
                kind = rec.get("type")
                if kind == "drop":
                    pos = int(rec["offset"])
                if kind == "start":
                    mid = sj.record_id(st.id, "start", 0)
                else:
                    st.records += 1
                    mid = sj.record_id(st.id, str(kind), st.records)
                out.append(_Message(st, sj.calls_subject(self.config.prefix), m.encode(),
                                    self._record_headers(st, mid)))
            else:
                if not pcm:
                    first = pos
                pcm.append(m)
                pos += len(m) // ob.frame_bytes
        if pcm:
            out.append(self._audio(st, first, pcm))
        return len(out) - n

    def _audio(self, st: _Stream, offset: int, parts: list[Any]) -> _Message:
        payload = b"".join(parts)
        headers = {sj.MSG_ID: sj.audio_id(st.id, offset), sj.STREAM: st.id, sj.OFFSET: str(offset),
                   sj.FORMAT: st.fmt}
        return _Message(st, st.subject, payload, headers, samples=len(payload) // st.outbox.frame_bytes)

    @staticmethod
    def _record_headers(st: _Stream, mid: str) -> dict[str, str]:
        return {sj.MSG_ID: mid, sj.STREAM: st.id, sj.SUBJECT: st.subject}

    async def _on_reply(self, msg: Any) -> None:
        """A PubAck (or an error) for the message whose sequence ends the reply subject."""
        try:
            seq = int(msg.subject.rpartition(".")[2])
        except ValueError:
            return
        headers = msg.headers or {}
        ok = False
        resp: Any = {}
        if headers.get(STATUS) != NO_RESPONDERS and msg.data:
            try:
                resp = json.loads(msg.data)
            except ValueError:
                resp = {}
            if isinstance(resp, dict) and "error" not in resp and "seq" in resp:
                ok = True
                if resp.get("duplicate"):
                    self.counts["duplicates"] += 1     # (often a resend's second answer)
        m = self._inflight.get(seq)
        if m is None:
            return                      # answered already: a resend's second answer
        if isinstance(resp, dict) and "error" in resp:
            log.warning("JetStream refused a message of stream %s: %s", m.stream.id, resp["error"],
                        extra={"stream_id": m.stream.id})
        if not ok:
            self.counts["errors"] += 1
            if self._resend_at is None:
                self._resend_at = time.monotonic() + RETRY_S
            return
        del self._inflight[seq]
        self.counts["acknowledged"] += 1
        st = m.stream
        st.inflight -= 1
        if st.inflight == 0 and (st.end_sent or st.outbox.ended):
            self._poke()


    def backlog(self) -> tuple[int, int]:
        """(the largest queue of a stream in samples, the audio published so far in
        messages): what a full-speed replay's flow control watches."""
        with self._lock:
            queued = max((st.outbox.queued_samples for st in self._streams.values()), default=0)
        return queued, self.counts["acknowledged"]


def summary(stats: dict[str, Any]) -> str:
    """The NATS part of the summary line."""
    return (f"published {stats['streams']} streams to NATS ({stats['acknowledged']} messages acknowledged, "
            f"{stats['republished']} published again, {stats['duplicates']} duplicates dropped by JetStream), "
            f"{stats['reconnects']} reconnects, {stats['dropped_ms']} ms dropped, "
            f"{stats['undelivered_ms']} ms undelivered")


class NatsBridge(Forward):
    """Pipeline side: everything through a ``StreamSink`` of its own, whose operations
    go to the publisher at every tick.  With ``flow_control`` (a replay at full speed)
    a tick waits while some stream's queue is over half ``max_buffer_ms`` and the server
    is taking messages, and stops waiting for good once nothing was acknowledged for
    ``stall_s``: then the oldest audio is dropped, as live."""

    def __init__(self, streams: StreamSink, publisher: NatsPublisher, flow_control: bool = False,
                 stall_s: float = 3.0) -> None:
        super().__init__(streams)
        self.streams = streams
        self.publisher = publisher
        self.flow_control = flow_control
        self.stall_s = stall_s
        self.stalled = False
        cfg = publisher.config
        self._high = cfg.max_buffer_ms * cfg.audio.samples_per_ms // 2

    def tick(self, now: float) -> None:
        self.streams.tick(now)
        ops = self.streams.take_ops()
        if not ops:
            return
        self.publisher.submit(ops)
        if self.flow_control and not self.stalled:
            self._room()

    def _room(self) -> None:
        last, since = -1, time.monotonic()
        while True:
            queued, acked = self.publisher.backlog()
            if queued <= self._high:
                return
            if acked != last:
                last, since = acked, time.monotonic()
            elif time.monotonic() - since > self.stall_s:
                self.stalled = True
                log.warning("NATS is not taking audio fast enough: replay goes on at full speed and the "
                            "oldest queued audio is dropped")
                return
            time.sleep(0.002)
