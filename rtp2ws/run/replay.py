"""Replay adapter: a capture file through the pipeline into a sink
(``replay``), or into WebSocket streams (``stream_replay``: the pipeline in a
worker thread, the sender on an event loop, joined by ``ws.bridge``).

The only I/O here is reading the capture (``capture.CaptureFile``) and
drawing the progress bar; all decisions are the pipeline's.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..capture.file import CaptureError, CaptureFile
from ..fastpath import twin as fastpath
from ..net.packet import UnsupportedLinkType
from ..pipeline.pipeline import Config, Pipeline
from ..pipeline.sink import Counting, Sink
from . import heap, logs

if TYPE_CHECKING:
    from ..sinks.streams import StreamSink
    from ..ws.sender import SenderConfig


EARLY_S = 0.002           # paced: packets due this soon are fed now, with those due already
PACED_BUDGET = 1 << 62    # paced: a tick when the next packet is not due, not after a count


class ReplayError(Exception):
    """The capture could not be read at all (missing file, unknown link type)."""


@dataclass
class ReplayResult:
    path: str
    stats: dict
    calls: int
    legs: int
    packets: int
    elapsed: float
    error: str | None = None          # set when the capture broke off (truncated/corrupt)
    extra: dict = field(default_factory=dict)

    def summary(self) -> dict:
        d = {"capture": self.path, "packets": self.packets, "calls": self.calls, "legs": self.legs,
             "elapsed_s": round(self.elapsed, 3)}
        d.update(self.stats)
        if self.error:
            d["error"] = self.error
        return d

    def line(self) -> str:
        s = self.stats
        text = (f"{self.path}: {self.packets} packets, {self.calls} calls, {self.legs} legs with audio, "
                f"{s.get('rtp', 0)} RTP, {s.get('sip', 0)} SIP, {s.get('malformed', 0)} malformed, "
                f"{s.get('unmatched_udp', 0)} unmatched UDP, {self.elapsed:.2f} s")
        if s.get("bad_timestamps"):
            text += (f"; {s['bad_timestamps']} packets had a time outside 1970..9999 (the first: packet "
                     f"{s['first_bad_timestamp']}) and were given the previous packet's")
        if self.error:
            text += " (capture incomplete)"
        return text


# [##########                    ]  33.3%  91.2MB/s  00:06 left  401234 packets  200 calls
# (cut at the terminal's width: the counts go first)
BAR = "[{bar:30}] {percentage:5.1f}%  {rate_fmt}  {remaining} left  {desc}"


def _terminal_size(stream) -> tuple[int, int]:
    """(columns, lines) of the terminal, 80 x 24 where it says 0 (a new pseudo-terminal,
    a serial console: tqdm would draw nothing)."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (OSError, AttributeError, ValueError):
        return 80, 24
    return size.columns or 80, size.lines or 24


class Progress:
    """A one-line progress bar on a terminal (tqdm): how much of the capture file is
    read, the read rate, the time elapsed and left, packets and calls; silent otherwise
    (``enabled`` None: when ``stream`` is a terminal).  Only a progress that draws
    imports tqdm; its clock starts here."""

    def __init__(self, stream=None, enabled: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self._last = 0.0
        self._bar = None
        if self.enabled:
            from tqdm import tqdm

            # its total, the file's size, is set at the first update: the one total known
            # from the start, from which the rate and the time left follow (smoothed)
            columns, lines = _terminal_size(self.stream)
            self._bar = tqdm(total=None, unit="B", unit_scale=True, file=self.stream, mininterval=0.1,
                             smoothing=0.3, ncols=columns, nrows=lines, leave=True, ascii=" #", bar_format=BAR)

    def update(self, done: int, total: int, packets: int, calls: int, force: bool = False) -> None:
        bar = self._bar
        if bar is None:
            return
        t = time.monotonic()
        if not force and t - self._last < 0.1:
            return
        self._last = t
        if bar.total != total:
            bar.total = total
        bar.set_description_str(f"{packets} packets  {calls} calls", refresh=False)
        bar.update(max(0, min(done, total) - bar.n))
        if force:
            bar.refresh()

    def done(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class Pacer:
    """Paces replay on capture timestamps: ``speed`` 1.0 is real time, 4.0 four
    times faster.  Sleeping is interruptible through the ``stop`` event."""

    def __init__(self, speed: float, stop=None) -> None:
        import threading

        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self.stop = stop or threading.Event()
        self._origin: tuple[float, float] | None = None   # (capture ts, monotonic) of the first packet

    @property
    def origin(self) -> tuple[float, float] | None:
        """(capture time, monotonic time) of the first packet paced, once there is one."""
        return self._origin

    def delay(self, ts: float) -> float:
        """Seconds until the packet of capture time ``ts`` is due (negative: late)."""
        if self._origin is None:
            self._origin = (ts, time.monotonic())
            return 0.0
        ts0, w0 = self._origin
        return w0 + (ts - ts0) / self.speed - time.monotonic()

    def reached(self, early: float = 0.0) -> float:
        """The capture time due ``early`` seconds from now (once ``delay`` set the origin)."""
        assert self._origin is not None
        ts0, w0 = self._origin
        return ts0 + (time.monotonic() + early - w0) * self.speed

    def sleep(self, seconds: float) -> bool:
        """False when asked to stop."""
        return not self.stop.wait(seconds)


def _budget(reader, budget: int, count: int | None) -> int:
    """Packets the next ``run_reader`` may take: ``budget``, and no more than are left of
    ``count`` (0: none).  A read starts after a tick, or after a pause before the packet
    held back (read again, not counted again): it may take that one too, and a pause's
    packets since the tick only make the read stop sooner."""
    if count is None:
        return budget
    return max(0, min(budget, count - reader.packets_read + (reader.held_ts is not None)))


def replay(path: str, sink: Sink, config: Config | None = None, progress: Progress | None = None,
           pacer: Pacer | None = None, stop=None, tick_every: int | None = None,
           count: int | None = None) -> ReplayResult:
    """Run a capture file through the pipeline.  Raises ReplayError when it cannot start;
    a capture that breaks off part-way still delivers every call up to the break and
    reports the error in the result.  With a ``pacer`` packets are fed on their capture
    timing; setting ``stop`` (a threading.Event) ends every call with ``shutdown``.
    ``tick_every`` runs the pipeline's timers (and so hands out audio) every that
    many packets instead of once per batch.  ``count`` (-c) stops after that many
    packets, as the end of the file would."""
    t0 = time.monotonic()
    progress = progress or Progress(enabled=False)
    if pacer is not None and stop is None:
        stop = pacer.stop
    try:
        cap = CaptureFile(path, native=True)
    except CaptureError as e:
        raise ReplayError(str(e)) from None
    counting = Counting(logs.CallLog(sink))
    error = None
    reason = "capture_end"
    with cap:
        try:
            pipe = Pipeline(cap.linktype, counting, config)
        except UnsupportedLinkType as e:
            raise ReplayError(f"{path}: {e}") from None
        reader = cap.reader
        _, read_error = fastpath.for_reader(reader)
        try:
            if pacer is None:
                while ((budget := _budget(reader, tick_every or cap.batch, count))
                       and pipe.run_reader(reader, budget)):
                    progress.update(reader.bytes_read, cap.size, reader.packets_read, counting.calls)
                    if stop is not None and stop.is_set():
                        reason = "shutdown"
                        break
            else:
                # paced: every packet whose time has come (up to EARLY_S ahead) goes through
                # at once, the fast path taking what it can, and the first packet not due
                # yet stays in the reader (held_ts) until it is
                until = float("-inf")
                next_trim = time.monotonic() + heap.TRIM_EVERY_S
                while (budget := _budget(reader, PACED_BUDGET, count)) and pipe.run_reader(reader, budget, until):
                    held = reader.held_ts
                    if held is None:          # the tick of the file's last packets
                        continue
                    # a packet due before the next hand-out waits for it: fed sooner, its
                    # audio would leave no sooner, and each wake costs a sleep and a tick
                    # (200 calls: 15,000 wakes in 20 s against 1,000)
                    wait = pacer.delay(max(held, pipe.next_handout))
                    if wait > EARLY_S:
                        pacer.sleep(wait)
                    progress.update(reader.bytes_read, cap.size, reader.packets_read, counting.calls)
                    if stop is not None and stop.is_set():
                        reason = "shutdown"
                        break
                    until = pacer.reached(EARLY_S)
                    if time.monotonic() >= next_trim:
                        heap.trim()     # what start-up and ended calls freed, back to the system
                        next_trim = time.monotonic() + heap.TRIM_EVERY_S
        except read_error as e:
            error = f"{path}: packet {reader.packets_read + 1}: {e}"
        packets = reader.packets_read
        timing = reader
        progress.update(cap.size, cap.size, packets, counting.calls, force=True)
        progress.done()
        pipe.finish(reason=reason)
    stats = dict(pipe.stats)
    stats.update({f"decoder_{k}": v for k, v in pipe.decoder.stats.items() if v})
    stats.update({f"tcp_{k}": v for k, v in pipe.tcp.stats.items() if v})
    stats.update({k: v for k, v in pipe.registry.stats.items() if v})
    if timing.bad_timestamps:      # capture times out of range, replaced (rtp2ws.capture.file)
        stats["bad_timestamps"] = timing.bad_timestamps
        stats["first_bad_timestamp"] = timing.first_bad_timestamp
    return ReplayResult(path, stats, counting.calls, counting.legs_with_audio, packets, time.monotonic() - t0, error,
                        extra={"internal_errors": pipe.take_errors()})


def stream_replay(capture, config, sender_cfg: SenderConfig, streams: StreamSink, *, speed: float | None,
                  also=None, progress=None, wrap_sink=None, worker=None,
                  sender_cls=None, bridge_cls=None, pacer_cls=None, count: int | None = None):
    """Replay ``capture`` through ``streams`` to a sender on a new event loop; returns
    (ReplayResult, sender statistics).  ``also`` gets everything too (WAV files);
    ``wrap_sink``, ``worker`` (a context manager factory, entered in the decoding thread)
    and the classes let the benchmark put its probes in the same code path."""
    from contextlib import nullcontext

    from ..pipeline.sink import Tee
    from ..ws.bridge import LoopBridge, new_event_loop, run_with_sender
    from ..ws.sender import Sender

    sender_cls = sender_cls or Sender
    bridge_cls = bridge_cls or LoopBridge
    pacer_cls = pacer_cls or Pacer

    async def main():
        sender = sender_cls(sender_cfg)
        # At full speed each stream gets a second of audio per hand-off, and writing it from
        # the event loop costs half the system time of writing it from the decoding thread
        # (1000 calls x 10 s, same run: 0.53-0.55 s against 1.03-1.10 s); paced, every
        # frame is its own write and writing it straight from that thread is cheaper.
        sender.direct = speed is not None

        def work(bridge, stop):
            sink = Tee(bridge, also) if also is not None else bridge
            if wrap_sink is not None:
                sink = wrap_sink(sink)
            with (worker or nullcontext)():
                pacer = pacer_cls(speed, stop) if speed else None
                return replay(capture, sink, config, progress, pacer=pacer, stop=stop,
                              tick_every=64 if pacer is None else None, count=count)

        def bridge(loop):
            return bridge_cls(streams, sender, loop, flow_control=speed is None)

        result = await run_with_sender(work, sender, bridge)
        stats = sender.stats
        stats["late_samples"] = streams.late_samples
        return result, stats

    loop = new_event_loop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()
