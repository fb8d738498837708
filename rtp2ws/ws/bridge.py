"""The hand-off between two threads: runs the pipeline in a worker thread and
the WebSocket sender in an asyncio event loop, so CPU work never starves the
loop (keepalive pings keep being answered) and the network never stalls capture.

It only moves operations from one thread to the other.  It is not the sender
(``ws.sender``: connections, ``ws.outbox``: each stream's queue) and does not
make the operations (``sinks.streams.StreamSink`` turns pipeline output into
``Open``/``Audio``/``Event``/``End``).  Also here: ``run_with_sender`` (the
work thread, signals and the final drain) and the summary helpers; replay and
live use them from ``run/`` (``run.replay.stream_replay``, ``run.live``).

The worker owns the pipeline and a ``StreamSink``; after every pipeline tick
it applies the sink's operations itself (audio as runs of frames, one operation
per stream and tick): audio and events go into the streams' outboxes under the
sender's lock, in the order the pipeline made them, and ``Sender.flush`` then
writes every plain-TCP connection's batch straight to its socket, from this
thread (``ws.wire``; paced and live streams: a replay at full speed, which hands
a second of audio on at a time, leaves its writes to the event loop, where they
cost half the system time).  The event loop runs the connections: opening,
reading, pongs, the close, reconnects; and writes TLS connections' batches.
The streams' queues are bounded (drop-oldest), so the worker never waits for
the network; at full speed (``flow_control``) it waits while the server takes
the audio.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, TypeVar

from ..pipeline.sink import FastTarget, Forward, LegView
from ..signalling.calls import Call
from ..sinks.streams import Audio, End, Event, Op, Open, StreamSink
from .hookstream import HookStream
from .sender import Sender, Stream

log = logging.getLogger("rtp2ws")

T = TypeVar("T")
_NO_CONTEXT = nullcontext()


class LoopBridge(Forward):
    """Pipeline side (worker thread) of the hand-off to the sender (loop thread):
    everything goes through the StreamSink, whose operations leave on each tick."""

    def __init__(self, streams: StreamSink, sender: Sender, loop: asyncio.AbstractEventLoop,
                 flow_control: bool = False, stall_s: float = 3.0) -> None:
        super().__init__(streams)
        self.streams = streams
        self.sender = sender
        self.loop = loop
        # Replay at full speed only: wait while the server is taking the audio, so a
        # file replays without loss; stop waiting for good once it stalls.
        self.flow_control = flow_control
        self.stall_s = stall_s
        self.stalled = False
        self._high = sender.config.max_buffer_ms * sender.config.audio.samples_per_ms // 2
        self._posted: dict[str, int] = {}   # worker thread: audio bytes per stream since the last check
        self._open: dict[str, Stream | HookStream] = {}   # worker thread: stream_id -> sender Stream
        self._pumping = _Pumping(self)

    def tick(self, now: float) -> None:
        self.streams.tick(now)
        ops = self._apply_queued()
        self.sender.flush()         # with no operation too: what the fast path pushed into lanes
        if ops and self.flow_control and not self.stalled and self._grown(ops):
            fut = asyncio.run_coroutine_threadsafe(self._room(), self.loop)
            if not fut.result():
                self.stalled = True
                log.warning("the server is not taking audio fast enough: replay goes on at full speed "
                            "and the oldest queued audio is dropped")

    def _grown(self, ops: list[Op]) -> bool:
        """Has some stream been handed a quarter of the high-water mark since the
        last check?  Until then no queue can have crossed it, and the round trip
        to the loop is skipped."""
        posted = self._posted
        limit = self._high // 2        # bytes: a quarter of the mark in samples, 2 bytes each
        grown = False
        for op in ops:
            if type(op) is Audio:
                n = posted.get(op.stream_id, 0) + len(op.pcm)
                posted[op.stream_id] = n
                if n >= limit:
                    grown = True
        if grown:
            posted.clear()
        return grown

    async def _room(self) -> bool:
        """Loop side of flow control: True once every stream's queue is under half the
        buffer, False when no audio has been sent for ``stall_s`` seconds."""
        loop = asyncio.get_running_loop()
        last, since = -1, loop.time()
        while True:
            live = [s for s in self._open.values() if not s.done]
            if max((s.queued_samples for s in live), default=0) <= self._high:
                return True
            sent = sum(s.sent_samples for s in live)
            if sent != last:
                last, since = sent, loop.time()
            elif loop.time() - since > self.stall_s:
                return False
            await asyncio.sleep(0.005)

    # -- the fast path streams a leg straight into its stream's outbox (ws.lane) -----------

    def fast_target(self, call: Call, leg: LegView) -> FastTarget | None:
        """The StreamSink's target, with the stream's lane when the sender writes
        from this thread (paced, live): the fast path then pushes the leg's frames
        into the outbox itself, and the flush writes them, with no Python per frame."""
        target = self.streams.fast_target(call, leg)
        if target is None or not self.sender.direct:
            return target
        sid = self.streams.stream_id(call, leg)
        st = self._open.get(sid) if sid is not None else None
        if st is None:              # opened in this tick: its Open is still queued
            self._apply_queued()
            st = self._open.get(sid) if sid is not None else None
            if st is None:
                return target
        return target._replace(lane=st.lane)

    def fast_pumping(self) -> AbstractContextManager[Any]:
        # without lanes (a full-speed replay writes from the loop) the operations wait for
        # the tick, where flow control counts them
        return self._pumping if self.sender.direct else _NO_CONTEXT

    # worker thread
    def _apply_queued(self) -> list[Op]:
        """Apply what the StreamSink queued since the last time; returns it."""
        ops = self.streams.take_ops()
        if ops:
            self._apply(ops)
        return ops

    def _apply(self, ops: list[Op]) -> None:
        streams = self._open
        get = streams.get
        with self.sender._lock:          # one acquisition for the tick's operations
            for op in ops:
                if type(op) is Audio or isinstance(op, Audio):
                    st = get(op.stream_id)
                    if st is not None:
                        st.send_audio(op.pcm)       # a run: the sender cuts it into frame_ms messages
                elif isinstance(op, Open):
                    streams[op.stream_id] = self.sender.open_stream(op.stream_id, op.start, channels=op.channels)
                elif isinstance(op, Event):
                    st = streams.get(op.stream_id)
                    if st is not None:
                        st.send_event(op.message)
                elif isinstance(op, End):
                    st = streams.pop(op.stream_id, None)
                    if st is not None:
                        st.end(op.message)


class _Pumping:
    """``LoopBridge.fast_pumping``: the sender's lock held while the fast path pushes
    into lanes, the operations queued before (events, opens) applied first."""

    __slots__ = ("bridge", "lock")

    def __init__(self, bridge: LoopBridge) -> None:
        self.bridge = bridge
        self.lock = bridge.sender._lock

    def __enter__(self) -> None:
        self.lock.acquire()
        try:
            self.bridge._apply_queued()
        except BaseException:
            self.lock.release()
            raise

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


async def run_with_sender(work: Callable[[LoopBridge, threading.Event], T], sender: Sender,
                          bridge_factory: Callable[[asyncio.AbstractEventLoop], LoopBridge],
                          drain_timeout: float | None = None) -> T:
    """Run ``work(bridge, stop)`` in a thread while the sender runs here.

    ``bridge_factory(loop)`` builds the LoopBridge; SIGINT/SIGTERM set ``stop``
    so the work ends every call with ``shutdown``; then every stream is drained, for
    at most ``drain_timeout`` (by default: how long an ended stream keeps trying,
    plus a connection attempt and a margin).
    Returns whatever ``work`` returned.
    """
    loop = asyncio.get_running_loop()
    stop = threading.Event()
    sender.use_loop()
    bridge = bridge_factory(loop)
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    try:
        result = await asyncio.to_thread(work, bridge, stop)
        if drain_timeout is None:
            drain_timeout = sender.config.linger + sender.config.open_timeout + 5.0
        await sender.drain(drain_timeout)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError):
                pass
        await sender.close()
    return result


def stream_summary(sent: dict[str, Any]) -> str:
    """The streams' part of the summary line."""
    return (f"streamed {sent['streams']} streams, {sent['reconnects']} reconnects, "
            f"{sent['dropped_ms']} ms dropped, {sent.get('undelivered_ms', 0)} ms undelivered")
