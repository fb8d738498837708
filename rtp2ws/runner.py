"""Runs the pipeline in a worker thread and the WebSocket sender in an asyncio
event loop, so CPU work never starves the loop (keepalive pings keep being
answered) and the network never stalls capture.

The worker owns the pipeline and a ``StreamSink``; after every pipeline tick
it hands the sink's operations to the loop in one ``call_soon_threadsafe``.
The hand-off is bounded: if the loop falls behind by more than ``max_pending``
operations the worker waits for it (this is CPU back-pressure inside one
process, never network back-pressure: the sender's per-stream queues drop
instead of waiting).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading

from .pipeline import Sink
from .sender import Sender
from .streams import Audio, End, Event, Open, StreamSink

log = logging.getLogger("rtp2ws")


class LoopBridge(Sink):
    """Pipeline side (worker thread) of the hand-off to the sender (loop thread)."""

    def __init__(self, streams: StreamSink, sender: Sender, loop: asyncio.AbstractEventLoop,
                 max_pending: int = 20000) -> None:
        self.streams = streams
        self.sender = sender
        self.loop = loop
        self.max_pending = max_pending
        self._pending = 0
        self._cond = threading.Condition()
        self._open: dict = {}     # loop thread only: stream_id -> sender Stream
        self.waits = 0

    # Sink: everything goes through the StreamSink; operations leave on tick.
    def call_started(self, call):
        self.streams.call_started(call)

    def leg_audio(self, call, leg, pcm):
        self.streams.leg_audio(call, leg, pcm)

    def leg_event(self, call, leg, event):
        self.streams.leg_event(call, leg, event)

    def call_event(self, call, event):
        self.streams.call_event(call, event)

    def call_ended(self, call, legs):
        self.streams.call_ended(call, legs)

    def tick(self, now):
        self.streams.tick(now)
        ops = self.streams.take_ops()
        if not ops:
            return
        with self._cond:
            while self._pending > self.max_pending:
                self.waits += 1
                self._cond.wait(0.1)
            self._pending += len(ops)
        self.loop.call_soon_threadsafe(self._apply, ops)

    # loop thread
    def _apply(self, ops: list) -> None:
        streams = self._open
        for op in ops:
            if isinstance(op, Audio):
                st = streams.get(op.stream_id)
                if st is not None:
                    st.send_audio(op.pcm)
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
        with self._cond:
            self._pending -= len(ops)
            self._cond.notify_all()


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


async def run_with_sender(work, sender: Sender, bridge_factory, drain_timeout: float):
    """Run ``work(bridge, stop)`` in a thread while the sender runs here.

    ``bridge_factory(loop)`` builds the LoopBridge; SIGINT/SIGTERM set ``stop``
    so the work ends every call with ``shutdown``; then every stream is drained.
    Returns whatever ``work`` returned.
    """
    loop = asyncio.get_running_loop()
    stop = threading.Event()
    bridge = bridge_factory(loop)
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    try:
        result = await asyncio.to_thread(work, bridge, stop)
        await sender.drain(drain_timeout)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError):
                pass
        await sender.close()
    return result
