"""``rtp2ws live``: an interface through the pipeline into WebSocket streams
and/or WAV files, until SIGINT/SIGTERM.

Threads:

* decoder thread (``LiveRunner.run``): reads the interface itself
  (``capture.live.LiveCapture``: libpcap's ring, through the C ``LiveReader``
  or its twin) into the ``Pipeline`` with ``Pipeline.run_reader``, as replay
  reads a file: in-order RTP on armed flows never becomes a Python object.
  When the ring is empty it runs the timers with the wall clock (every packet
  stamped before the read began has been read), so jitter-buffer deadlines and
  timeouts fire without traffic, then waits: until ``Pipeline.next_handout``
  + ``HOLD_LATE_S`` when hand-outs are paced (``--flush-ms``: the ring gathers
  a hand-out's packets meanwhile, one wake per hand-out rather than one per
  packet), else until a packet comes (at most ``tick_s``).  The kernel's ring
  (``--buffer-mb``) is the only buffer: what does not fit while the decoder is
  busy is counted in ``kernel_drops``.  It also owns the sinks' decoder-side
  state, publishes a statistics snapshot about once a second (the only thing
  ``/metrics`` and ``/healthz`` read) and writes the periodic log line;
* event-loop thread (main thread, uvloop) with ``--ws-url``: the ``Sender``,
  reached through ``ws.bridge.LoopBridge`` as in replay (no flow control:
  live audio never waits for the network);
* metrics thread (``metrics.MetricsServer``) with ``--metrics``.

Stop: SIGINT/SIGTERM stop the capture; what the ring held is decoded (for at
most ``FINAL_READ_S``: a flood need not end first), every
leg is flushed and every call ended with ``shutdown``; the streams drain and
a summary with the drop counts is printed.  SIGHUP reopens ``--log-file``.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..capture.live import CAPTURE_LAG_S, CaptureOpenError, LiveCapture, build_bpf, drop_privileges
from ..codec.audioformat import AudioFormat
from ..fastpath.twin import for_reader
from ..net.packet import PacketDecoder, UnsupportedLinkType
from ..pipeline.pipeline import Config, Pipeline
from ..pipeline.sink import Counting, Sink
from ..speedups import missing_warning
from . import heap, logs
from .metrics import LegJitter, LegLoss, LegQualityHistograms

if TYPE_CHECKING:
    from ..broker.publisher import NatsConfig
    from ..ws.sender import SenderConfig
    from .workerlink import Reporter

log = logging.getLogger("rtp2ws.live")

TICK_S = 0.02          # timers run at least this often without traffic
REFRESH_S = 1.0        # statistics snapshot for metrics/health
HOLD_LATE_S = CAPTURE_LAG_S   # the decoder wakes this long after a hand-out is due: its packets are in
BUDGET = 2048          # packets read between two ticks at most
FINAL_READ_S = 2.0     # at stop, what the ring holds is read for at most this long


# --------------------------------------------------------------------------- options

@dataclass(frozen=True)
class CaptureOptions:
    """Where and how ``live`` captures (``rtp2ws.capture.live.LiveCapture``)."""
    interface: str
    bpf: str | None = None                      # replaces the filter built from the ports
    sip_ports: tuple[int, ...] = (5060, 5080)
    rtp_ports: tuple[int, int] = (16384, 32768)
    snaplen: int = 65535
    buffer_mb: int = 64
    promisc: bool = True
    user: str | None = None                     # switch to this user once the capture is open


@dataclass(frozen=True)
class LiveOptions:
    """Everything ``run_live`` runs with; ``rtp2ws.cli`` builds it from the command line.
    At least one of ``sender`` (WebSocket streams) and ``out_dir`` (WAV files) is set."""
    capture: CaptureOptions
    pipeline: Config
    sender: SenderConfig | None = None
    frame_ms: int = 20
    sip_headers: tuple[str, ...] = ()           # INVITE headers copied into the start message
    out_dir: str | None = None
    stereo: bool = False                        # the same as audio's mix "stereo"
    audio: AudioFormat = AudioFormat()          # --rate, --encoding, --mix
    metrics: tuple[str, int] | None = None      # serve /metrics and /healthz here
    stats_interval: float = 60.0
    log_file: str | None = None
    log_level: str = "info"
    log_format: str = "text"                    # or json (rtp2ws.run.logs)
    count: int | None = None                    # stop after this many packets captured (-c)
    report: Reporter | None = None              # a worker (run.workers): report to the supervisor instead
    nats: NatsConfig | None = None              # publish every stream to NATS JetStream too (--nats-url)


# --------------------------------------------------------------------------- decoder thread

class _Either:
    """Set when any of the events is set."""

    def __init__(self, *events) -> None:
        self.events = [e for e in events if e is not None]

    def is_set(self) -> bool:
        return any(e.is_set() for e in self.events)


class LiveRunner:
    """The decoder side: owns the pipeline while ``run`` runs.

    ``snapshot()`` may be called from any thread: it returns the dict last
    published by the decoder thread (replaced whole, never mutated).
    ``sender_stats`` is a callable returning the sender's latest statistics
    (published by the event-loop thread) or None.
    """

    def __init__(self, capture: LiveCapture, config: Config | None = None, *, stats_interval: float = 60.0,
                 tick_s: float = TICK_S, refresh_s: float = REFRESH_S, sender_stats=None,
                 hup: threading.Event | None = None, on_hup=None, on_publish=None,
                 log_stats: bool = True, count: int | None = None) -> None:
        if stats_interval <= 0:
            raise ValueError("stats_interval must be positive")
        if count is not None and count < 1:
            raise ValueError("count must be at least 1")
        self.capture = capture
        self.count = count                      # -c: stop after this many packets read (None: never)
        self.config = config or Config()
        self.stats_interval = stats_interval
        self.tick_s = tick_s
        self.refresh_s = refresh_s
        self.sender_stats = sender_stats or (lambda: None)
        self.hup = hup
        self.on_hup = on_hup
        self.on_publish = on_publish            # called with each snapshot (a worker reports it)
        self.log_stats = log_stats              # False in a worker: the supervisor logs the merged line
        self.pipe: Pipeline | None = None
        self.counting: Counting | None = None
        self.loss: LegLoss | None = None            # the per-leg loss histogram (metrics)
        self.jitter: LegJitter | None = None        # ... and jitter histogram
        self.quality: LegQualityHistograms | None = None    # ... and MOS, max delta, round trip
        self._history: deque = deque()          # (monotonic, total drops) over the last interval
        self._last_log: dict | None = None
        self._snapshot: dict = {}
        self.started = time.monotonic()
        self.reason: str | None = None
        self._publish()

    # -- any thread ---------------------------------------------------------------

    def snapshot(self) -> dict:
        return self._snapshot

    # -- decoder thread -----------------------------------------------------------

    def run(self, sink: Sink, stop) -> dict:
        """Decode until ``stop`` is set or the capture fails; then end every call.
        Returns the summary."""
        cap = self.capture
        self.quality = LegQualityHistograms(sink)
        self.jitter = LegJitter(self.quality)
        self.loss = LegLoss(self.jitter)
        self.counting = Counting(logs.CallLog(self.loss))
        self.pipe = pipe = Pipeline(cap.linktype, self.counting, self.config)
        self.started = time.monotonic()
        reader = cap.reader
        read_error = for_reader(reader)[1]
        last = 0.0                 # latest time given to the timers
        t = time.monotonic()
        next_refresh = t + self.refresh_s
        next_log = t + self.stats_interval
        next_trim = t + heap.TRIM_EVERY_S
        self._last_log = self._counts()
        self.reason = None
        counted = False
        while not stop.is_set():
            budget = self._budget(reader)
            if not budget:         # -c: COUNT packets read, and had their tick
                counted = True
                break
            mark = time.time()
            try:
                more = pipe.run_reader(reader, budget)
            except read_error as e:
                cap.failed(str(e))
                break
            if not more:           # the handle closed by itself
                break
            if reader.waiting:
                # the ring was empty: every packet stamped before mark, but for the
                # kernel's open block (CAPTURE_LAG_S), has been read
                last = max(last, mark - CAPTURE_LAG_S, pipe.now)
                pipe.tick(last)
                cap.wait(pipe.next_handout + HOLD_LATE_S, self.tick_s + HOLD_LATE_S)
            cap.poll_stats()
            if self.hup is not None and self.hup.is_set():
                self.hup.clear()
                if self.on_hup is not None:
                    self.on_hup()
            t = time.monotonic()
            if t >= next_refresh:
                self._publish()
                next_refresh = t + self.refresh_s
            if t >= next_log:
                self._log_errors()
                if self.log_stats:
                    self._log_interval()
                next_log = t + self.stats_interval
            if t >= next_trim:
                heap.trim()         # what start-up and ended calls freed, back to the system
                next_trim = t + heap.TRIM_EVERY_S
        self.reason = "shutdown" if stop.is_set() and not counted else "capture_end"
        if cap.running and not counted:     # what the ring holds now (a flood that never lets it empty: FINAL_READ_S)
            deadline = time.monotonic() + FINAL_READ_S
            try:
                while ((budget := self._budget(reader)) and pipe.run_reader(reader, budget) and not reader.waiting
                       and time.monotonic() < deadline):
                    pass
            except read_error as e:
                cap.failed(str(e))
        cap.stop()
        pipe.finish(max(last, pipe.now, time.time()), reason=self.reason)
        self._log_errors()
        self._publish()
        return self.summary()

    def _budget(self, reader) -> int:
        """Packets the next read may take: ``BUDGET``, and with -c no more than are left
        of COUNT (0: none).  Every read starts just after a tick (``Pipeline.run_reader``
        returns on a tick, or on an empty ring with nothing read since the last one), so
        the fast path stops after exactly this many."""
        if self.count is None:
            return BUDGET
        return max(0, min(BUDGET, self.count - reader.packets_read))

    def _counts(self) -> dict:
        c = self.capture.stats()
        pipe = self.pipe
        c["malformed"] = pipe.stats.get("malformed", 0) if pipe is not None else 0
        c["frag_dropped"] = pipe.decoder.stats["frag_dropped"] if pipe is not None else 0
        c["active_calls"] = len(pipe.calls) if pipe is not None else 0
        c["active_legs"] = len(pipe.legs) if pipe is not None else 0
        c["calls"] = self.counting.calls if self.counting is not None else 0
        c["legs_with_audio"] = self.counting.legs_with_audio if self.counting is not None else 0
        return c

    def _publish(self) -> None:
        c = self._counts()
        t = time.monotonic()
        drops = c["kernel_drops"] + c["interface_drops"]
        hist = self._history
        hist.append((t, drops))
        while len(hist) > 1 and hist[1][0] <= t - self.stats_interval:
            hist.popleft()
        snap = {
            "monotonic": t,
            "time": time.time(),
            "interface": self.capture.interface,
            "capture_running": c["running"],
            "capture_error": c["error"],
            "drops_recent": drops - hist[0][1],
            "drops_window_s": self.stats_interval,
        }
        snap.update(c)
        if self.loss is not None:
            snap["leg_loss"] = self.loss.snapshot()
        if self.jitter is not None:
            snap["leg_jitter"] = self.jitter.snapshot()
        if self.quality is not None:
            snap.update(self.quality.snapshot())
        ws = self.sender_stats()
        if ws:
            snap.update({"ws_open": ws.get("open", 0), "ws_streams": ws.get("streams", 0),
                         "ws_active": ws.get("active", 0), "ws_reconnects": ws.get("reconnects", 0),
                         "ws_queued_ms": ws.get("queued_ms", 0), "ws_dropped_ms": ws.get("dropped_ms", 0)})
        self._snapshot = snap
        if self.on_publish is not None:
            self.on_publish(snap)

    def _log_errors(self) -> None:
        """Packets that raised what no parser documents (counted as malformed, skipped):
        one line per interval, whatever their number."""
        pipe = self.pipe
        if pipe is None or not pipe.errors:
            return
        errors = pipe.take_errors()
        ts, text = errors[0]
        log.error("%d packets raised an unexpected error and were skipped (counted as malformed; "
                  "%d since start); the first, at capture time %.6f: %r", len(errors),
                  pipe.stats["internal_errors"], ts, text)

    def _log_interval(self) -> None:
        now = self._counts()
        prev = self._last_log or now
        self._last_log = now
        log_interval(self.capture.interface, prev, now, self.sender_stats() or {}, self.stats_interval)

    def summary(self) -> dict:
        c = self._counts()
        out = {
            "interface": self.capture.interface,
            "packets": c["packets"],
            "bytes": c["bytes"],
            "kernel_drops": c["kernel_drops"],
            "interface_drops": c["interface_drops"],
            "calls": c["calls"],
            "legs": c["legs_with_audio"],
            "elapsed_s": round(time.monotonic() - self.started, 3),
            "end_reason": self.reason,
        }
        if c["error"]:
            out["capture_error"] = c["error"]
        if self.pipe is not None:
            out.update(self.pipe.stats)
            out.update({f"decoder_{k}": v for k, v in self.pipe.decoder.stats.items() if v})
            out.update({f"tcp_{k}": v for k, v in self.pipe.tcp.stats.items() if v})
        return out


def log_interval(interface: str, prev: dict, now: dict, ws: dict, interval: float) -> None:
    """The periodic statistics line (and a warning when packets were dropped) from the
    counts at the last line (``prev``) and now; ``ws`` the sender's statistics."""
    d = {k: now[k] - prev[k] for k in ("packets", "kernel_drops", "interface_drops")}
    line = (f"{interface}: {now['packets']} packets (+{d['packets']}); dropped: "
            f"{now['kernel_drops']} by the kernel, {now['interface_drops']} by the interface; "
            f"{now['active_calls']} calls and "
            f"{now['active_legs']} legs active, {now['calls']} calls so far")
    if ws:
        line += (f"; {ws.get('open', 0)} streams connected, {ws.get('reconnects', 0)} reconnects, "
                 f"{ws.get('dropped_ms', 0)} ms audio dropped")
    log.info("%s", line)
    if d["kernel_drops"] or d["interface_drops"]:
        parts = []
        if d["kernel_drops"]:
            parts.append(f"{d['kernel_drops']} packets dropped by the kernel (its capture buffer was full: "
                         f"the decoder fell behind, or --buffer-mb is too small for the bursts)")
        if d["interface_drops"]:
            parts.append(f"{d['interface_drops']} dropped by the interface")
        log.warning("the mirror host is not keeping up: %s in the last %g s; consider --buffer-mb, "
                    "a narrower --bpf or more CPU", ", ".join(parts), interval)


def summary_line(s: dict, sent: dict | None) -> str:
    line = (f"{s['interface']}: {s['packets']} packets captured, {s['kernel_drops']} dropped by the kernel, "
            f"{s['interface_drops']} by the interface; "
            f"{s['calls']} calls, {s['legs']} legs with audio, {s.get('rtp', 0)} RTP, {s.get('sip', 0)} SIP, "
            f"{s.get('malformed', 0)} malformed, {s['elapsed_s']:.1f} s")
    if sent is not None:
        from ..ws.bridge import stream_summary

        line += "; " + stream_summary(sent)
    if s.get("nats") is not None:
        from ..broker.publisher import summary as nats_summary

        line += "; " + nats_summary(s["nats"])
    return line


# --------------------------------------------------------------------------- command

def preload() -> None:
    """Import what runs later, before privileges are dropped (the installation
    may not be readable by the capture user)."""
    import importlib

    for name in ("encodings.idna", "json", "rtp2ws.ws.sender", "rtp2ws.ws.bridge", "rtp2ws.sinks.streams",
                 "rtp2ws.sinks.wav", "rtp2ws.run.metrics", "rtp2ws.broker.publisher"):
        importlib.import_module(name)


def open_capture(co: CaptureOptions) -> LiveCapture:
    """The capture ``co`` describes, open (not started); CaptureOpenError or ValueError says why not."""
    bpf = co.bpf or (lambda linktype: build_bpf(co.sip_ports, co.rtp_ports, linktype=linktype))
    return LiveCapture(co.interface, bpf=bpf, snaplen=co.snaplen, buffer_mb=co.buffer_mb, promisc=co.promisc)


def check_capture(co: CaptureOptions) -> str | None:
    """Opens the capture and closes it again: why it cannot be used, or None (the
    supervisor of ``--workers`` says it once, before any worker opens its own)."""
    try:
        cap = open_capture(co)
    except (CaptureOpenError, ValueError) as e:
        return str(e)
    try:
        PacketDecoder(cap.linktype)
    except UnsupportedLinkType as e:
        return f"{co.interface}: {e}"
    finally:
        cap.stop()
    return None


def run_live(opts: LiveOptions) -> int:
    """``rtp2ws live``; returns the exit code."""
    def fail(msg: str) -> int:
        print(f"rtp2ws: error: {msg}", file=sys.stderr)
        return 2

    co = opts.capture
    try:
        cap = open_capture(co)
    except (CaptureOpenError, ValueError) as e:
        return fail(str(e))
    report = opts.report
    try:
        worker = f"{report.shard[0] + 1}/{report.shard[1]}" if report else None
        hup_handler = logs.setup(opts.log_level, opts.log_format, opts.log_file, worker).file
    except OSError as e:
        cap.stop()
        return fail(f"--log-file {opts.log_file}: {e.strerror or e}")
    slower = missing_warning()
    if slower and report is None:       # with --workers, the supervisor says it once
        log.warning("%s", slower)
    # From here on a SIGTERM ends cleanly, and SIGHUP only reopens the log.
    stop = threading.Event()
    hup = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, lambda *_: hup.set())
    metrics = None
    publisher = None
    published: dict | None = None
    try:
        try:
            PacketDecoder(cap.linktype)
        except UnsupportedLinkType as e:
            return fail(f"{co.interface}: {e}")
        config = opts.pipeline
        sender = None
        if opts.sender is not None:
            from ..ws.sender import Sender

            try:   # the CA file is read now (header files by the cli), before privileges are dropped
                sender = Sender(opts.sender)
            except (ValueError, OSError) as e:
                return fail(str(e))
        preload()
        from . import gcpolicy

        gcpolicy.apply()
        holder: dict = {}
        runner_box: list = []

        def collect():
            return runner_box[0].snapshot() if runner_box else {}

        if opts.metrics:
            from .metrics import MetricsServer

            host, port = opts.metrics
            try:
                metrics = MetricsServer(collect, host, port, stale_s=max(10.0, 5 * REFRESH_S)).start()
            except OSError as e:
                return fail(str(e))
        if co.user:
            try:
                uid, gid = drop_privileges(co.user)
            except (PermissionError, OSError) as e:
                return fail(str(e))
            log.info("running as %s (uid %d, gid %d)", co.user, uid, gid)
        wav = None
        wav_sink: Sink | None = None
        if opts.out_dir:
            from ..sinks.wav import WavSink

            try:
                # each call's manifest entry goes to calls.jsonl as it ends: memory stays
                # bounded by the calls in progress however long the capture runs; a
                # worker hands its entries to the supervisor, which writes the journal
                wav = WavSink(opts.out_dir, stereo=opts.stereo, journal=report is None, audio=opts.audio)
            except OSError as e:
                return fail(f"--out-dir {opts.out_dir}: {e.strerror or e}")
            wav_sink = wav
            if report is not None:
                from ..pipeline.sink import Tee
                from .workerlink import ManifestReport

                wav_sink = Tee(wav, ManifestReport(wav.manifest, report))

        if opts.nats is not None:
            from ..broker.publisher import NatsBridge, NatsError, NatsPublisher
            from ..pipeline.sink import Tee
            from ..sinks.streams import StreamSink

            publisher = NatsPublisher(opts.nats)
            try:
                publisher.start()
            except NatsError as e:
                return fail(str(e))
            nats = NatsBridge(StreamSink(frame_ms=opts.frame_ms, sip_headers=opts.sip_headers,
                                         hold_s=config.jitter_depth + 1.0, audio=opts.audio), publisher)
            wav_sink = Tee(nats, wav_sink) if wav_sink is not None else nats

        def reopen_log():
            if hup_handler is not None:
                try:
                    hup_handler.reopen()
                    log.info("log file reopened")
                except OSError as e:
                    print(f"rtp2ws: cannot reopen {opts.log_file}: {e}", file=sys.stderr)

        runner = LiveRunner(cap, config, stats_interval=opts.stats_interval, sender_stats=lambda: holder.get("ws"),
                            hup=hup, on_hup=reopen_log, log_stats=report is None, count=opts.count,
                            on_publish=(lambda snap: report.send("snapshot", snapshot=snap)) if report else None)
        runner_box.append(runner)
        if report is not None:      # the supervisor says "capturing on" once every worker is
            report.send("ready", interface=co.interface, linktype=cap.linktype, bpf=cap.bpf)
        else:
            log.info("capturing on %s (link type %d), filter: %s%s", co.interface, cap.linktype, cap.bpf,
                     f"; metrics on http://{metrics.host}:{metrics.port}/metrics" if metrics else "")
        until = _Either(stop, report.lost) if report is not None else stop
        if sender is not None:
            summary, sent = _run_with_websocket(opts, sender, config, runner, wav_sink, stop, hup, holder)
        else:
            summary, sent = runner.run(wav_sink if wav_sink is not None else Sink(), until), None
    finally:
        cap.stop()
        if metrics is not None:
            metrics.close()
        if publisher is not None:
            published = publisher.close()
    if sent is not None:
        summary["streams"] = sent
    if published is not None:       # (the summary line says it; a supervisor's, summed over its workers)
        summary["nats"] = published
    if report is not None:          # the supervisor prints, writes calls.json and decides
        rc, _ = conclude(co.interface, summary, sent)
        report.send("summary", summary=summary, sent=sent, rc=rc)
        return rc
    if wav is not None:
        try:
            wav.close(summary)
        except OSError as e:
            print(f"rtp2ws: error: cannot write calls.json: {e}", file=sys.stderr)
    return print_summary(co.interface, summary, sent)


def print_summary(interface: str, summary: dict, sent: dict | None) -> int:
    """The exit summary: logged, printed on stdout, errors on stderr; returns the exit code."""
    line = summary_line(summary, sent)
    log.info("stopped (%s): %s", summary["end_reason"], line)
    print(line, flush=True)
    rc, errors = conclude(interface, summary, sent)
    for error in errors:
        print(f"rtp2ws: error: {error}", file=sys.stderr)
    return rc


def conclude(interface: str, summary: dict, sent: dict | None) -> tuple[int, list[str]]:
    """(exit code, errors to report) of a summary: 1 when the capture failed or a
    stream was not delivered."""
    if summary.get("capture_error"):
        return 1, [f"{interface}: capture failed: {summary['capture_error']}"]
    # (ws.protocol: light, and this runs after the privileges were dropped, when a module
    # of the standard library not imported yet may be out of reach: websockets' were)
    from ..ws.protocol import delivery_error

    if sent is not None:
        undelivered = delivery_error(sent)
        if undelivered:
            return 1, [undelivered]
    if summary.get("nats") is not None:
        undelivered = delivery_error(summary["nats"])
        if undelivered:
            return 1, [f"NATS: {undelivered}"]
    return 0, []


def _run_with_websocket(opts: LiveOptions, sender, config, runner: LiveRunner, wav: Sink | None, early_stop, hup,
                        holder):
    import asyncio

    from ..pipeline.sink import Tee
    from ..sinks.streams import StreamSink
    from ..ws.bridge import LoopBridge, new_event_loop, run_with_sender
    from ..ws.sender import raise_fd_limit

    raise_fd_limit(65536)
    streams = StreamSink(frame_ms=opts.frame_ms, stereo=opts.stereo, sip_headers=opts.sip_headers,
                         hold_s=config.jitter_depth + 1.0, audio=opts.audio,
                         ws_format=opts.sender.ws_format if opts.sender is not None else "rtp2ws")

    async def main():
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, hup.set)

        def publish():
            st = sender.stats
            # loop thread: the sender's streams may be read here
            st["queued_ms"] = (sum(s.queued_samples for s in list(sender._streams.values()))
                               // sender.config.audio.samples_per_ms)
            holder["ws"] = st

        async def publisher():
            while True:
                publish()
                await asyncio.sleep(REFRESH_S)

        task = loop.create_task(publisher())

        def work(bridge, stop):
            sink = Tee(bridge, wav) if wav is not None else bridge
            return runner.run(sink, _Either(stop, early_stop, opts.report.lost if opts.report else None))

        try:
            summary = await run_with_sender(work, sender, lambda lp: LoopBridge(streams, sender, lp))
        finally:
            task.cancel()
            loop.remove_signal_handler(signal.SIGHUP)
            signal.signal(signal.SIGHUP, lambda *_: hup.set())    # not the default: that would kill us
        stats = sender.stats
        stats["late_samples"] = streams.late_samples
        return summary, stats

    loop = new_event_loop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()
        # the loop's handlers are gone: keep SIGINT/SIGTERM harmless until exit
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: early_stop.set())
