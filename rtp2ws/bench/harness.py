"""Capacity benchmark: how many concurrent calls one CPU core carries.

    rtp2ws bench [--calls N | --sweep 10,100,500,1000,2000] [--seconds S[,S...]]
                 [--configs wav,ws20,ws100,stereo,reference,reference_wav] [--quick]
                 [--latency [--latency-calls 200] [--latency-config ws20] [--flush-ms 20]
                            [--no-latency-reference]]
                 [--out benchmarks/results]
    python benchmarks/calls_per_core.py ...          (the same thing)

For every N it generates (and caches) a capture of N concurrent G.711 calls
(``capgen.make_capture``), then replays it at ``--speed max`` through each
configuration in a child process of its own:

========== ================================================================
wav        capture -> one WAV per leg (``rtp2ws replay --out-dir``)
ws20       capture -> WebSocket, one connection per leg, 20 ms frames
ws100      the same with 100 ms frames
stereo     capture -> WebSocket, one stereo connection per call, 20 ms frames
stereo_wav capture -> per-leg WAVs plus a stereo WAV per call
reference  benchmarks/reference_pipeline.py: pypcap + dpkt + audioop, one
           ``websockets`` send per 20 ms frame per leg (compare with ws20)
reference_wav  the same pipeline writing WAV files (compare with wav)
========== ================================================================

WebSocket audio goes to a *discard sink*: a minimal WebSocket server
(``python -m rtp2ws.bench sink``, ``discard``: handshake, frame headers walked and the
payload skipped, pings and closes answered, frames counted) in a separate
process, so that it takes as little CPU as possible from rtp2ws's core; its
CPU is never counted.  ``--sink rtp2ws`` uses ``rtp2ws sink`` instead.

**calls per core** = N x call seconds / CPU seconds (user + sys) of the
replaying process, measured with ``getrusage(RUSAGE_SELF)`` inside the child
from the moment the replay starts until every stream is drained (interpreter
start-up and imports are excluded, for rtp2ws and the reference alike).  It
includes call set-up and tear-down (SIP, WebSocket handshakes), which short
benchmark calls amortise over fewer seconds than real calls do.  The default
call length is 2000/N seconds clamped to 2..30 s (``default_seconds``), so the
default sweep stays within minutes; ``--seconds`` sets one length for all N,
or several: then each configuration's CPU is also fitted as N x (set-up +
seconds x per call-second) (``report.cost_model``), which gives calls per core at
steady state and for three-minute calls, what a contact centre sizes with.

Also measured: peak RSS; memory per active call (RSS when all N calls are
active, minus RSS before the replay, divided by N; at ``--speed max`` this
includes the WebSocket queues that flow control lets fill, so the realtime
figure from the latency run is the one to size with); a per-stage CPU
breakdown (a separate cProfile run, 100 calls x 5 s, with a per-thread CPU
clock, self time attributed by module, see ``report.STAGES``; profiling inflates
per-call costs, so shares are indicative); and with ``--latency`` the delay
from a packet's capture time to its audio being written to the socket,
replaying ``--latency-config`` (ws20) at ``--speed realtime`` with
``--latency-calls`` (200) calls, paced as live capture is (``--flush-ms``), and
from its CPU the *realtime* calls per core: what a live sidecar carries, where
every connection gets a write per flush instead of a second of audio at once.
The calls per core come from a run with no probe (only the pacer's lag, as the
reference measures its own); the latency from a second run of the same
capture with the probes, whose own figure is shown beside (the probes cost a
few microseconds of Python per frame).
Latency is measured against the packet's scheduled
wall time (the pacer's origin); replay's pacer feeds packets up to 2 ms
early, so values under 2 ms are within its resolution.

In the same run, on the same capture and into the same kind of sink (a fresh
one), the latency run also replays the reference pipeline at realtime
(``reference_pipeline.py --realtime``: each packet handed on at its capture
time, one ``websockets`` send per 20 ms frame), and reports both realtime
calls per core and their ratio (``--no-latency-reference`` leaves it out).
Each run's lag behind the capture clock is measured where its pacer hands
packets on: a run whose last packet was handed on more than ``BEHIND_LIMIT_S``
late has fallen behind (it carried less than the load), and its figure is
withheld (``kept_up`` false; ``behind_s``, ``max_behind_s`` say by how much).
The sink's CPU (``sink.cpu_s``, from ``/proc``, over the run; never counted
in calls per core) is reported per frame for every run with a sink.

Everything lands in ``--out``: ``calls_per_core.json``, ``calls_per_core.png``
(calls per core against N), ``calls_per_core.txt`` (the printed table), and
the cached captures under ``captures/``.

This module runs the benchmark: each configuration in a child process of its
own (``python -m rtp2ws.bench child SPEC``, ``run_one``), with its probes
(memory, profilers, latency stamps on the replay's pacer, bridge and sender),
and the command line.  The captures come from ``capgen``, the sink from
``discard``, the table and the document from ``report``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..argtypes import number, whole
from .capgen import cached_capture
from .discard import SinkProcess
from .discard import main as sink_main
from .report import (
    cost_model,
    format_table,
    git_commit,
    machine_info,
    ratios,
    stage_seconds,
    stage_shares,
    summary,
    top_functions,
    write_results,
)

if TYPE_CHECKING:
    import cProfile

CONFIGS = ("wav", "ws20", "ws100", "stereo", "stereo_wav", "reference", "reference_wav")
DEFAULT_CONFIGS = ("wav", "ws20", "ws100", "stereo", "reference", "reference_wav")
DEFAULT_SWEEP = (10, 100, 500, 1000, 2000)
QUICK_SWEEP = (10, 100)
WS_CONFIGS = {"ws20": (20, False), "ws100": (100, False), "stereo": (20, True)}
LATENCY_CALLS = 200           # default N of the realtime run: a load one process here carries
COMPARE_P99_MS = 100.0        # --workers-compare: a run whose p99 latency is above this did not carry its calls
BEHIND_LIMIT_S = 0.1          # a realtime run that ended further behind the capture clock did not keep up


# =========================================================================== measurement helpers

def peak_rss_bytes() -> int:
    """This process's RSS high-water mark (VmHWM).  Not ``ru_maxrss``: across
    fork/exec that carries the parent's peak into the child."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of another running process so far (Linux ``/proc``;
    None elsewhere or once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()     # from field 3 (state) on
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):  # pragma: no cover - not Linux, or the process ended
        return None


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # pragma: no cover - not Linux
        try:
            import psutil
            return psutil.Process().memory_info().rss
        except ImportError:
            return 0


class MemoryProbe:
    """Samples RSS once, when capture time reaches ``at`` (all calls active)."""

    def __init__(self, at: float | None) -> None:
        self.at = at
        self.rss: int | None = None
        self.when: float | None = None

    def __call__(self, now: float) -> None:
        if self.rss is None and self.at is not None and now >= self.at:
            self.rss = rss_bytes()
            self.when = now


def _probe_sink(inner, probe: MemoryProbe):
    from ..pipeline.sink import Forward

    class _Probe(Forward):
        def tick(self, now):
            probe(now)
            self.inner.tick(now)

    return _Probe(inner)


class _Profiles:
    """cProfile, one profiler per thread, on each thread's own CPU clock."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.profilers: list[cProfile.Profile] = []

    def start(self):
        if not self.enabled:
            return None
        import cProfile

        p = cProfile.Profile(time.thread_time)
        self.profilers.append(p)
        p.enable()
        return p

    def stats(self):
        import pstats

        if not self.profilers:
            return None
        st = pstats.Stats(self.profilers[0])
        for p in self.profilers[1:]:
            st.add(p)
        return st


# =========================================================================== latency stamps

class LatencyRecorder:
    """Capture-to-socket latency of audio frames at ``--speed realtime``.

    A frame's capture time is that of the packet that brought its last sample:
    the leg's newest packet when the audio was handed on, less one packet time
    for every whole packet of audio handed on after the frame's end, so that a
    frame gathered with others (``Config.flush_ms``) counts the time it waited
    for them.  It becomes a wall
    time through the pacer's origin (the first packet's capture time and the
    monotonic time it was fed); the frame is done right after the
    ``transport.write`` that carried it.  Samples are kept in seconds."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self.origin: tuple[float, float] | None = None     # (capture ts, monotonic)
        self.samples: list[float] = []
        self.stamps: list[float] = []                      # the capture time of each sample
        self.by_pcm: dict[int, tuple] = {}                 # loop thread: id(pcm) -> (capture ts, lag)
        self.behind = 0.0                                  # how late the pacer met the latest packet, s
        self.max_behind = 0.0

    def sent(self, capture_ts: float) -> None:
        now = time.monotonic()
        if self.origin is not None:
            ts0, w0 = self.origin
            self.samples.append(now - (w0 + (capture_ts - ts0) / self.speed))
            self.stamps.append(capture_ts)


def _latency_classes():
    from collections import deque

    from ..run.replay import Pacer
    from ..sinks.streams import RATE, Audio, StreamSink
    from ..ws.bridge import LoopBridge
    from ..ws.sender import Sender

    class StampedAudio(Audio):
        """An Audio op that also carries ``ts``, the capture time of its newest packet,
        ``lag``, the samples per channel handed on after the op's end with it, and
        ``packet``, the samples (16 kHz) of the leg's newest packet."""
        lag = 0
        packet = 320

    class StampingStreamSink(StreamSink):
        def __init__(self, **kw) -> None:
            super().__init__(**kw)
            self._tick_now = 0.0

        def leg_audio(self, call, leg, pcm):
            ops = self.ops
            before = len(ops)
            super().leg_audio(call, leg, pcm)
            if len(ops) > before:
                ts = leg.last_arrival or self._tick_now
                s = self._legs.get((call.key, leg.tag))
                lag = s.pending_bytes // 2 if s is not None else 0      # kept for the next frame
                packet = 2 * leg.last_packet_samples or self.frame
                for i in range(len(ops) - 1, before - 1, -1):
                    op = ops[i]
                    if type(op) is Audio:
                        stamped = StampedAudio(*op)
                        stamped.ts = ts
                        stamped.lag = lag
                        stamped.packet = packet
                        ops[i] = stamped
                        lag += len(op.pcm) // 2

        def _fast_feed(self, s, leg, frames, newest, held):
            # frames the fast path streamed: stamped as leg_audio's are, from the newest
            # packet in them and what the fast path holds after them
            super()._fast_feed(s, leg, frames, newest, held)
            op = self.ops[-1]
            stamped = StampedAudio(*op)
            stamped.ts = newest
            stamped.lag = held
            stamped.packet = 2 * leg.last_packet_samples or self.frame
            self.ops[-1] = stamped

        def tick(self, now):
            self._tick_now = now
            super().tick(now)

        def take_ops(self):
            ops = super().take_ops()
            for i, op in enumerate(ops):
                if type(op) is Audio:           # cut at a tick or at the end of a call
                    stamped = StampedAudio(*op)
                    stamped.ts = self._tick_now
                    ops[i] = stamped
            return ops

    class StampingBridge(LoopBridge):
        recorder: LatencyRecorder

        def _apply(self, ops):
            by_pcm = self.recorder.by_pcm
            for op in ops:
                if isinstance(op, StampedAudio):
                    by_pcm[id(op.pcm)] = (op.ts, op.lag, op.packet)
            try:
                super()._apply(ops)
            finally:
                by_pcm.clear()

    class StampingSender(Sender):
        recorder: LatencyRecorder

        def open_stream(self, stream_id, start, *, channels=1):
            st = super().open_stream(stream_id, start, channels=channels)
            rec = self.recorder
            pending: deque = deque()          # (offset of a frame, capture ts), in stream order
            send_audio, step = st.send_audio, st.frame_samples
            lane = st.lane
            lane.stamps = []                  # what the fast path pushed into the lane itself

            def stamp(off, end, ts, lag, packet):
                pending.extend((o, ts - (lag + end - min(o + step, end)) // packet * packet / RATE)
                               for o in range(off, end, step))

            def from_lane():
                stamps = lane.stamps
                if stamps:
                    for off, end, ts, lag, packet in stamps:
                        stamp(off, end, ts, lag, packet or step)
                    stamps.clear()

            def stamped_send_audio(pcm):       # a run: one stamp per frame of it
                from_lane()                    # what the lane took before it comes first
                stamped = rec.by_pcm.get(id(pcm))
                off = st.offset
                send_audio(pcm)
                if stamped is not None:
                    stamp(off, st.offset, *stamped)

            def written(first, end):           # after the transport.write that carried [first, end)
                from_lane()
                while pending and pending[0][0] < end:
                    off, ts = pending.popleft()
                    if off >= first:           # not dropped before it was sent
                        rec.sent(ts)

            st.send_audio = stamped_send_audio
            st.on_write = written
            return st

    class StampingPacer(Pacer):
        recorder: LatencyRecorder

        def delay(self, ts):
            d = super().delay(ts)
            rec = self.recorder
            if rec.origin is None:
                rec.origin = self.origin or (ts, time.monotonic())
            rec.behind = max(-d, 0.0)          # fed at once when late (d < 0)
            if rec.behind > rec.max_behind:
                rec.max_behind = rec.behind
            return d

    return StampingStreamSink, StampingBridge, StampingSender, StampingPacer


# =========================================================================== one run (child process)

def _reference_module():
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "reference_pipeline.py"
    if not path.exists():
        raise RuntimeError(f"the reference pipeline is not there: {path} (run from a source checkout)")
    spec = importlib.util.spec_from_file_location("reference_pipeline", path)
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
    except ModuleNotFoundError as e:     # dpkt: an extra
        raise RuntimeError(f"the reference pipeline needs {e.name}: pip install 'rtp2ws[bench]'") from None
    return mod


def run_one(spec: dict) -> dict:
    """Replay one capture through one configuration in this process and measure it.

    ``spec``: config, capture, out_dir, url (WebSocket configs), speed (None: max),
    profile (bool), latency (bool), mem_at (capture time for the RSS sample)."""
    from ..pipeline.pipeline import Config
    from ..run.replay import replay
    from ..sinks.wav import WavSink
    from ..ws.sender import raise_fd_limit

    config = spec["config"]
    capture = spec["capture"]
    out_dir = spec.get("out_dir") or tempfile.mkdtemp(prefix="rtp2ws-bench-")
    speed = spec.get("speed")
    raise_fd_limit(65536)
    probe = MemoryProbe(spec.get("mem_at"))
    profiles = _Profiles(bool(spec.get("profile")))
    reference = _reference_module() if config.startswith("reference") else None
    if config in WS_CONFIGS:
        import websockets.asyncio.client  # noqa: F401  (imported before the clock starts)

    extra: dict = {"commit": git_commit()}      # the code this child imported
    if reference is None:
        from ..run import gcpolicy

        gcpolicy.apply()                        # as the rtp2ws command does
    baseline = rss_bytes()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    w0 = time.monotonic()
    main_prof = profiles.start()
    try:
        if config in ("wav", "stereo_wav"):
            sink = WavSink(out_dir, stereo=config == "stereo_wav")
            # as `rtp2ws replay --out-dir` does
            result = replay(capture, _probe_sink(sink, probe), Config(deliver_ms=1000))
            sink.close(result.summary())
            counts = {"packets": result.packets, "calls": result.calls, "legs": result.legs}
        elif config in WS_CONFIGS:
            frame_ms, stereo = WS_CONFIGS[config]
            result, sent, latency, flush_ms = _run_ws(capture, spec["url"], frame_ms, stereo, speed, probe, profiles,
                                                      bool(spec.get("latency")), spec.get("flush_ms"),
                                                      shard=tuple(spec["shard"]) if spec.get("shard") else None)
            counts = {"packets": result.packets, "calls": result.calls, "legs": result.legs}
            extra["sent"] = sent
            extra["flush_ms"] = flush_ms
            if latency is not None:
                if spec.get("latency"):
                    extra["latency_samples"], extra["latency_stamps"] = latency[0], latency[1]
                extra["behind_s"], extra["max_behind_s"] = latency[2], latency[3]
        elif reference is not None:
            if speed is not None and (speed != 1.0 or config != "reference"):
                raise ValueError("the reference paces only WebSocket output, and only at realtime (speed 1)")
            stats = reference.run(capture, url=spec.get("url") if config == "reference" else None,
                                  out_dir=out_dir if config == "reference_wav" else None, probe=probe,
                                  realtime=speed is not None)
            counts = {"packets": stats["packets"], "calls": stats["calls"], "legs": stats["legs"]}
            extra["sent"] = {"sent_frames": stats.get("sent_frames", 0)}
            if "behind_s" in stats:
                extra["behind_s"], extra["max_behind_s"] = stats["behind_s"], stats["max_behind_s"]
        else:
            raise ValueError(f"unknown configuration {config!r}")
    finally:
        if main_prof is not None:
            main_prof.disable()
    wall = time.monotonic() - w0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    out = {
        "config": config,
        "user_s": r1.ru_utime - r0.ru_utime,
        "sys_s": r1.ru_stime - r0.ru_stime,
        "wall_s": wall,
        "peak_rss_bytes": peak_rss_bytes(),
        "baseline_rss_bytes": baseline,
        "steady_rss_bytes": probe.rss,
        "steady_rss_at": probe.when,
        **counts,
        **extra,
    }
    st = profiles.stats()
    if st is not None:
        out["stage_seconds"] = stage_seconds(st)
        out["top_functions"] = top_functions(st)
    if not spec.get("keep_output") and not spec.get("out_dir"):
        shutil.rmtree(out_dir, ignore_errors=True)
    return out


def _run_ws(capture, url, frame_ms, stereo, speed, probe, profiles, latency, flush_ms=None, shard=None):
    """``rtp2ws replay --ws-url`` (``run.replay.stream_replay``, as the cli runs it),
    with the benchmark's probes: memory sample, profilers in both threads, latency stamps.
    Returns (ReplayResult, sender statistics, latency samples, stamps and the lag behind
    the capture clock (latest, most) or None, the flush_ms used)."""
    from contextlib import contextmanager

    from ..pipeline.pipeline import FLUSH_MS, Config, deliver_ms
    from ..run.replay import stream_replay
    from ..sinks.streams import StreamSink
    from ..ws.sender import SenderConfig

    cfg = SenderConfig(url=url)
    config = Config(deliver_ms=deliver_ms(stream=True, paced=bool(speed), max_buffer_ms=cfg.max_buffer_ms),
                    flush_ms=(FLUSH_MS if flush_ms is None else flush_ms) if speed else 0, shard=shard)
    recorder = None
    classes = {}
    stream_cls = StreamSink
    if latency:
        recorder = LatencyRecorder(speed or 1.0)
        stream_cls, bridge_cls, sender_cls, pacer_cls = _latency_classes()
        for cls in (bridge_cls, sender_cls, pacer_cls):
            cls.recorder = recorder
        classes = {"bridge_cls": bridge_cls, "sender_cls": sender_cls, "pacer_cls": pacer_cls}
    elif speed:
        # no probe but the pacer's lag behind the capture clock, which the reference's
        # pacer measures the same way: whether the run kept up
        recorder = LatencyRecorder(speed)
        pacer_cls = _latency_classes()[3]
        pacer_cls.recorder = recorder
        classes = {"pacer_cls": pacer_cls}
    streams = stream_cls(frame_ms=frame_ms, stereo=stereo, hold_s=config.jitter_depth + 1.0)

    @contextmanager
    def profiled():
        prof = profiles.start()
        try:
            yield
        finally:
            if prof is not None:
                prof.disable()

    result, stats = stream_replay(capture, config, cfg, streams, speed=speed,
                                  wrap_sink=lambda sink: _probe_sink(sink, probe), worker=profiled, **classes)
    latency = (recorder.samples, recorder.stamps, recorder.behind, recorder.max_behind) \
        if recorder is not None else None
    return result, stats, latency, config.flush_ms


def _child_main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    try:
        out = run_one(spec)
    except Exception as e:  # noqa: BLE001 - reported to the parent, which shows it
        import traceback

        out = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
    Path(spec["result"]).write_text(json.dumps(out))
    return 0 if "error" not in out else 1


def measure(config: str, capture: str, info: dict, *, url: str | None = None, speed: float | None = None,
            profile: bool = False, latency: bool = False, flush_ms: int | None = None,
            timeout: float = 3600.0, workers: int = 1) -> dict:
    """Run ``run_one`` in a child process (so that each configuration starts from
    a fresh interpreter and its CPU and peak RSS are its own) and derive the metrics.
    ``workers`` N > 1: N children at once, child I with ``Config.shard = (I, N)``, as
    ``--workers N`` runs them (each reads and paces the whole capture and does the
    media of its share of the calls); their CPU is summed, their latency samples pooled."""
    with tempfile.TemporaryDirectory(prefix="rtp2ws-bench-") as tmp:
        procs, results = [], []
        c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        for i in range(workers):
            spec: dict[str, Any] = {"config": config, "capture": capture, "url": url, "speed": speed,
                                    "profile": profile, "latency": latency, "flush_ms": flush_ms,
                                    "mem_at": info.get("mem_sample_ts"), "out_dir": os.path.join(tmp, f"out{i}"),
                                    "result": os.path.join(tmp, f"result{i}.json"),
                                    "shard": [i, workers] if workers > 1 else None}
            spec_path = os.path.join(tmp, f"spec{i}.json")
            Path(spec_path).write_text(json.dumps(spec))
            procs.append(subprocess.Popen([sys.executable, "-m", "rtp2ws.bench", "child", spec_path]))
            results.append(spec["result"])
        outs = []
        for proc, result in zip(procs, results, strict=True):
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            try:
                outs.append(json.loads(Path(result).read_text()))
            except (OSError, ValueError):
                outs.append({"error": f"the child exited with status {proc.returncode} and no result"})
        c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    for o in outs:
        if "error" in o:
            raise RuntimeError(f"{config}: {o['error']}\n{o.get('traceback', '')}")
    out = outs[0] if workers == 1 else merge_worker_results(outs)
    out["workers"] = workers
    out["process_cpu_s"] = (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)
    cpu = out["user_s"] + out["sys_s"]
    call_seconds = info["calls"] * info["seconds"]
    out.update({
        "calls": info["calls"], "seconds": info["seconds"], "call_seconds": call_seconds, "cpu_s": cpu,
        "calls_per_core": call_seconds / cpu if cpu > 0 else None,
        "us_per_packet": cpu / out["packets"] * 1e6 if out.get("packets") else None,
        "realtime_factor": info["seconds"] / out["wall_s"] if out["wall_s"] > 0 else None,
    })
    if out.get("steady_rss_bytes") and info.get("active_at_sample"):
        out["active_calls"] = info["active_at_sample"]
        out["mem_per_call_kb"] = (out["steady_rss_bytes"] - out["baseline_rss_bytes"]) / info["active_at_sample"] / 1024
    samples = out.pop("latency_samples", None)
    stamps = out.pop("latency_stamps", None)
    if samples is not None:
        out["latency"] = latency_summary(samples)
        # with every call set up (handshakes done): the figure for a steady call load
        lo, hi = info["steady_from_ts"] + 1.0, info["steady_until_ts"]
        steady = [d for d, t in zip(samples, stamps, strict=False) if lo <= t < hi]
        out["latency"]["steady"] = latency_summary(steady)
    return out


def merge_worker_results(outs: list[dict]) -> dict:
    """N workers' ``run_one`` results as one run: CPU, memory, calls and what was sent
    summed; the capture's packets, wall time and lag behind the clock the most of any."""
    out = dict(outs[0])
    for k in ("user_s", "sys_s", "peak_rss_bytes", "baseline_rss_bytes", "calls", "legs"):
        out[k] = sum(o.get(k) or 0 for o in outs)
    out["steady_rss_bytes"] = sum(o.get("steady_rss_bytes") or 0 for o in outs) or None
    for k in ("packets", "wall_s", "behind_s", "max_behind_s"):
        values = [o[k] for o in outs if o.get(k) is not None]
        out[k] = max(values) if values else None
    sent: dict[str, Any] = {}
    for o in outs:
        for k, v in (o.get("sent") or {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                sent[k] = sent.get(k, 0) + v
    out["sent"] = sent
    if outs[0].get("latency_samples") is not None:
        out["latency_samples"] = [d for o in outs for d in o["latency_samples"]]
        out["latency_stamps"] = [t for o in outs for t in o["latency_stamps"]]
    out["worker_calls"] = [o.get("calls") for o in outs]
    return out


def latency_summary(samples: list[float]) -> dict:
    if not samples:
        return {"frames": 0}
    a = np.sort(np.asarray(samples)) * 1000.0
    return {"frames": len(a), "p50_ms": round(float(np.percentile(a, 50)), 2),
            "p90_ms": round(float(np.percentile(a, 90)), 2), "p99_ms": round(float(np.percentile(a, 99)), 2),
            "max_ms": round(float(a[-1]), 2), "min_ms": round(float(a[0]), 2)}


# =========================================================================== the benchmark

def default_seconds(calls: int, quick: bool = False) -> float:
    """Call length for a sweep point: 2000 call-seconds per point, 2..30 s per call
    (--quick: 300 call-seconds, 2..10 s), so that the default sweep up to 2,000
    calls runs in minutes.  Short calls carry their set-up (SIP, WebSocket
    handshakes) over fewer seconds than real calls do, so large N at 2 s is a
    little pessimistic; ``--seconds`` fixes one length for every N."""
    budget = 300.0 if quick else 2000.0
    lo, hi = (2.0, 10.0) if quick else (2.0, 30.0)
    return float(min(hi, max(lo, round(budget / calls))))


@dataclass
class BenchOptions:
    calls: int | None = None
    seconds: float | tuple | None = None    # one call length, or several (lengths_of)
    configs: tuple = DEFAULT_CONFIGS
    sweep: tuple | None = None
    latency: bool = False
    latency_calls: int | None = None      # None: LATENCY_CALLS
    latency_seconds: float = 20.0
    flush_ms: int | None = None           # None: the default (pipeline.FLUSH_MS)
    latency_config: str = "ws20"
    profile: bool = True
    profile_calls: int = 100
    profile_seconds: float = 5.0
    latency_reference: bool = True        # the reference at realtime beside the latency run
    out: str = "benchmarks/results"
    cache: str | None = None
    quick: bool = False
    loss: float = 0.0
    reorder: float = 0.0
    law: str = "alaw"
    seed: int = 1
    sink: str = "discard"
    workers: int = 1                      # worker processes of the latency run
    workers_compare: tuple | None = None  # numbers of calls to run at realtime with 1 and 2 workers


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _measure_with_sink(opts: BenchOptions, config: str, capture: str, info: dict, **kw) -> dict:
    needs_sink = config in WS_CONFIGS or config == "reference"
    sink = SinkProcess(opts.sink) if needs_sink else None
    try:
        c0 = process_cpu_s(sink.proc.pid) if sink else None
        res = measure(config, capture, info, url=sink.url if sink else None, **kw)
        c1 = process_cpu_s(sink.proc.pid) if sink else None
    finally:
        sink_stats = sink.stop() if sink else None
    if sink_stats is not None:
        if c0 is not None and c1 is not None:        # the sink's own CPU over the run, never counted
            sink_stats["cpu_s"] = c1 - c0
            frames = sink_stats.get("binary")
            sink_stats["us_per_frame"] = (c1 - c0) / frames * 1e6 if frames else None
        res["sink"] = sink_stats
    return res


def realtime_entry(res: dict, calls: int, seconds: float) -> dict:
    """A realtime run's figures for the document: CPU, lag behind the capture clock,
    and calls per core, withheld (None) when the run fell behind (``BEHIND_LIMIT_S``)."""
    kept_up = res.get("behind_s") is not None and res["behind_s"] <= BEHIND_LIMIT_S
    sink = res.get("sink") or {}
    return {"config": res["config"], "calls": calls, "seconds": seconds, "cpu_s": res["cpu_s"],
            "wall_s": res["wall_s"], "core_load": res["cpu_s"] / res["wall_s"] if res["wall_s"] > 0 else None,
            "behind_s": res.get("behind_s"), "max_behind_s": res.get("max_behind_s"), "kept_up": kept_up,
            # what a live host carries: calls at realtime per core of CPU they took
            "realtime_calls_per_core": calls * seconds / res["cpu_s"] if kept_up and res["cpu_s"] > 0 else None,
            "sent_frames": (res.get("sent") or {}).get("sent_frames"), "sink_frames": sink.get("binary"),
            "sink_cpu_s": sink.get("cpu_s"), "sink_us_per_frame": sink.get("us_per_frame")}


def _importable(*names: str) -> bool:
    """Whether any of the modules ``names`` imports (imported for real: a module that is
    there but broken, or hidden, counts as missing)."""
    import importlib
    import warnings

    for name in names:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)      # audioop, Python 3.11/3.12
                importlib.import_module(name)
            return True
        except ImportError:
            pass
    return False


def missing_extras(opts: BenchOptions) -> str | None:
    """What this run needs beyond rtp2ws's own dependencies and cannot import, as the one
    line ``rtp2ws bench`` fails with before it generates or runs anything (the plot, the
    last step, would otherwise fail after minutes of measuring), or None.  psutil and
    soxr are not needed here: psutil is the RSS fallback off Linux, soxr a yardstick
    of benchmarks/resampler_quality.py."""
    needs: list[tuple[tuple[str, ...], str, str, str]] = [(("matplotlib",), "matplotlib", "bench", "the plot")]
    if any(c.startswith("reference") for c in opts.configs) or (opts.latency and opts.latency_reference):
        needs.append((("dpkt",), "dpkt", "bench", "the reference pipeline"))
        # reference_pipeline.py: audioop, gone from the standard library in 3.13
        needs.append((("audioop", "audioop_lts"), "audioop-lts", "bench", "the reference pipeline"))
    if opts.sink == "rtp2ws":
        needs.append((("jsonschema",), "jsonschema", "sink", "--sink rtp2ws"))
    missing = [(package, extra, why) for modules, package, extra, why in needs if not _importable(*modules)]
    if not missing:
        return None
    extras = ",".join(sorted({extra for _, extra, _ in missing}))
    what = ", ".join(f"{package} (for {why})" for package, _, why in missing)
    return f"rtp2ws bench needs {what}, not installed: pip install 'rtp2ws[{extras}]'"


def run_bench(opts: BenchOptions) -> dict:
    configs = tuple(opts.configs)
    for c in configs:
        if c not in CONFIGS:
            raise ValueError(f"unknown configuration {c!r} (choose from {', '.join(CONFIGS)})")
    missing = missing_extras(opts)
    if missing:
        raise RuntimeError(missing)
    if opts.sweep:
        sweep = tuple(opts.sweep)
    elif opts.calls:
        sweep = (opts.calls,)
    else:
        sweep = QUICK_SWEEP if opts.quick else DEFAULT_SWEEP
    out_dir = Path(opts.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = Path(opts.cache) if opts.cache else out_dir / "captures"
    gen = {"loss": opts.loss, "reorder": opts.reorder, "seed": opts.seed, "law": opts.law}
    started = time.monotonic()
    doc: dict[str, Any] = {"version": 1, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine_info(),
           "settings": {"configs": list(configs), "sweep": list(sweep), "sink": opts.sink, **gen,
                        "quick": opts.quick, "seconds": list(lengths_of(opts.seconds)),
                        "behind_limit_s": BEHIND_LIMIT_S},
           "runs": [], "ratios": [], "stages": {}, "latency": None}

    for n in sweep:
        for seconds in lengths_of(opts.seconds) or (default_seconds(n, opts.quick),):
            t = time.monotonic()
            capture, info = cached_capture(cache, n, seconds, **gen)
            _log(f"N={n}: {seconds:g} s calls, {info['packets']} packets, {info['bytes'] / 1e6:.0f} MB "
                 f"({time.monotonic() - t:.1f} s to generate or find)")
            for config in configs:
                res = _measure_with_sink(opts, config, capture, info)
                doc["runs"].append(res)
                _log(f"  {config:<14} {res['calls_per_core']:8.0f} calls/core  {res['cpu_s']:7.2f} s CPU  "
                     f"{res['wall_s']:7.2f} s wall  peak {res['peak_rss_bytes'] / 2**20:6.0f} MB")
            doc["ratios"] += ratios(doc["runs"], n, seconds)
    doc["cost_model"] = cost_model(doc["runs"])

    if opts.profile:
        pn = min(max(sweep), opts.profile_calls)
        ps = lengths_of(opts.seconds)[0] if opts.quick and opts.seconds else \
            (3.0 if opts.quick else opts.profile_seconds)
        capture, info = cached_capture(cache, pn, ps, **gen)
        _log(f"profile: N={pn}, {ps:g} s calls")
        for config in configs:
            res = _measure_with_sink(opts, config, capture, info, profile=True)
            doc["stages"][config] = stage_shares(res, pn, info["seconds"])

    if opts.latency:
        ln = opts.latency_calls or LATENCY_CALLS
        ls = opts.latency_seconds if not opts.quick else min(opts.latency_seconds, 5.0)
        capture, info = cached_capture(cache, ln, ls, **gen)
        _log(f"latency: {opts.latency_config} at --speed realtime, N={ln}, {ls:g} s calls")
        lc = opts.latency_config
        # capacity: the run as the rtp2ws command makes it, no probe but the pacer's lag
        cap = _measure_with_sink(opts, lc, capture, info, speed=1.0, flush_ms=opts.flush_ms, workers=opts.workers)
        _log(f"latency: {lc} again, with the latency probes")
        res = _measure_with_sink(opts, lc, capture, info, speed=1.0, latency=True, flush_ms=opts.flush_ms,
                                 workers=opts.workers)
        probed = realtime_entry(res, ln, info["seconds"])
        doc["latency"] = dict(res.get("latency") or {}, **realtime_entry(cap, ln, info["seconds"]),
                              flush_ms=cap["flush_ms"], mem_per_call_kb=cap.get("mem_per_call_kb"),
                              peak_rss_mb=cap["peak_rss_bytes"] / 2**20, workers=opts.workers,
                              # the latency run's own figure: the probes cost CPU of their own
                              probed_calls_per_core=probed["realtime_calls_per_core"],
                              probed_kept_up=probed["kept_up"])
        if opts.latency_reference:
            _log(f"latency: reference at realtime, N={ln}, {ls:g} s calls")
            ref = _measure_with_sink(opts, "reference", capture, info, speed=1.0)
            entry = dict(realtime_entry(ref, ln, info["seconds"]), peak_rss_mb=ref["peak_rss_bytes"] / 2**20)
            mine, theirs = doc["latency"]["realtime_calls_per_core"], entry["realtime_calls_per_core"]
            doc["latency"]["reference"] = entry
            # rtp2ws's realtime calls per core over the reference's, when both kept up
            doc["latency"]["ratio"] = mine / theirs if mine and theirs else None
    if opts.workers_compare:
        doc["workers_compare"] = workers_compare(opts, cache, gen)
    doc["elapsed_s"] = time.monotonic() - started
    doc["summary"] = summary(doc["runs"], configs, max(sweep))
    paths = write_results(doc, out_dir)
    doc["files"] = paths
    return doc


def workers_compare(opts: BenchOptions, cache: Path, gen: dict) -> dict:
    """``--workers-compare N1,N2,...``: each number of calls at realtime (``--latency-config``,
    ``--latency-seconds``) with 1 worker and with 2, into the same sink; per worker count
    the most calls carried with zero drops (every call streamed, no audio dropped, not
    behind the capture clock) and p99 latency within ``COMPARE_P99_MS``, the CPU of all
    its processes, calls per core and latency,
    and the ratio of the calls carried."""
    ls = opts.latency_seconds if not opts.quick else min(opts.latency_seconds, 5.0)
    rows = []
    for n in opts.workers_compare or ():
        capture, info = cached_capture(cache, n, ls, **gen)
        for w in (1, 2):
            res = _measure_with_sink(opts, opts.latency_config, capture, info, speed=1.0, latency=True,
                                     flush_ms=opts.flush_ms, workers=w)
            entry = realtime_entry(res, n, info["seconds"])
            steady = (res.get("latency") or {}).get("steady") or {}
            carried = sum(c or 0 for c in res.get("worker_calls") or [res.get("calls")])
            dropped = (res.get("sent") or {}).get("dropped_ms", 0)
            wall = res["wall_s"] or 1.0
            row = {"workers": w, "calls": n, "carried": carried, "dropped_ms": dropped,
                   "zero_drops": bool(entry["kept_up"]) and not dropped and carried >= n,
                   # carried: no drops and the latency of a run that keeps up (a backlog shows as seconds)
                   "carried_ok": bool(entry["kept_up"]) and not dropped and carried >= n
                   and (steady.get("p99_ms") or 0) <= COMPARE_P99_MS,
                   "cpu_s": res["cpu_s"], "calls_per_core": n * info["seconds"] / res["cpu_s"],
                   "p50_ms": steady.get("p50_ms"), "p99_ms": steady.get("p99_ms"), "behind_s": res.get("behind_s"),
                   "sink_core_load": (entry["sink_cpu_s"] or 0) / wall, "worker_calls": res.get("worker_calls")}
            rows.append(row)
            _log(f"  workers {w}: {n} calls, {carried} carried, {dropped} ms dropped, behind {row['behind_s']} s, "
                 f"{row['cpu_s']:.2f} s CPU ({row['calls_per_core']:.0f} calls/core), p50 {row['p50_ms']} ms, "
                 f"p99 {row['p99_ms']} ms; sink {row['sink_core_load']:.2f} of a core")
    best = {}
    for w in (1, 2):
        ok = [r for r in rows if r["workers"] == w and r["carried_ok"]]
        best[w] = max(ok, key=lambda r: r["calls"]) if ok else None
    ratio = best[2]["calls"] / best[1]["calls"] if best[1] and best[2] else None
    _log(f"workers compare: 1 worker carries {best[1] and best[1]['calls']} calls, 2 workers "
         f"{best[2] and best[2]['calls']}, ratio {ratio if ratio is None else round(ratio, 2)}")
    return {"runs": rows, "best": {str(w): b for w, b in best.items()}, "ratio": ratio}


def lengths_of(seconds) -> tuple[float, ...]:
    """``BenchOptions.seconds`` as a tuple of call lengths (empty: the default per N)."""
    if not seconds:
        return ()
    return tuple(seconds) if isinstance(seconds, (tuple, list)) else (float(seconds),)


# =========================================================================== command line

def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError("a comma-separated list of numbers, e.g. 10,100,1000") from None
    if not values or min(values) < 1 or max(values) > 100000:
        raise argparse.ArgumentTypeError("numbers of calls must be from 1 to 100000")
    return values


def _float_list(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError("a comma-separated list of seconds, e.g. 10,60") from None
    if not values or not all(0 < v <= 86400 for v in values):      # also refuses nan and inf
        raise argparse.ArgumentTypeError("call lengths must be more than 0 and at most 86400 s")
    return values


def _config_list(text: str) -> tuple[str, ...]:
    values = tuple(x.strip() for x in text.split(",") if x.strip())
    bad = [v for v in values if v not in CONFIGS]
    if bad or not values:
        raise argparse.ArgumentTypeError(f"unknown configuration(s) {', '.join(bad) or '(none)'}; "
                                         f"choose from {', '.join(CONFIGS)}")
    return values


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--calls", type=whole(1, 100000), help="one number of concurrent calls (instead of the sweep)")
    p.add_argument("--seconds", type=_float_list,
                   help="audio per call, the same for every N; several (e.g. 10,60) also fit each "
                        "configuration's set-up cost per call and cost per call-second; default per N: "
                        "2000/N clamped to 2..30 s (--quick: 300/N, 2..10 s)")
    p.add_argument("--configs", type=_config_list, default=DEFAULT_CONFIGS,
                   help=f"comma-separated, from {','.join(CONFIGS)} (default {','.join(DEFAULT_CONFIGS)})")
    p.add_argument("--sweep", type=_int_list,
                   help=f"numbers of calls to measure (default {','.join(map(str, DEFAULT_SWEEP))}; "
                        f"--quick {','.join(map(str, QUICK_SWEEP))})")
    p.add_argument("--latency", action="store_true",
                   help="also measure capture-to-socket latency and realtime capacity (--latency-config at "
                        "--speed realtime)")
    p.add_argument("--latency-calls", type=whole(1, 100000),
                   help=f"calls in the latency run (default {LATENCY_CALLS})")
    p.add_argument("--latency-seconds", type=number(0, 86400, lo_open=True), default=20.0,
                   help="length of the latency run (default 20)")
    p.add_argument("--flush-ms", type=whole(0, 1000), help="--flush-ms of the latency run (default: rtp2ws's own)")
    p.add_argument("--latency-config", choices=tuple(WS_CONFIGS), default="ws20",
                   help="configuration of the latency run (default ws20)")
    p.add_argument("--no-latency-reference", dest="latency_reference", action="store_false",
                   help="leave out the reference pipeline's realtime run beside the latency run")
    p.add_argument("--no-profile", dest="profile", action="store_false", help="skip the per-stage profile runs")
    p.add_argument("--profile-calls", type=whole(1, 100000), default=100,
                   help="calls in the profile runs (default 100, 5 s each; never more than the sweep's largest N)")
    p.add_argument("--out", default="benchmarks/results",
                   help="directory for calls_per_core.{json,png,txt} (default benchmarks/results)")
    p.add_argument("--cache", help="directory for generated captures (default OUT/captures)")
    p.add_argument("--quick", action="store_true", help="a short run: small sweep, short calls")
    p.add_argument("--loss", type=number(0, 1), default=0.0, help="share of RTP packets dropped (e.g. 0.01)")
    p.add_argument("--reorder", type=number(0, 1), default=0.0, help="share of RTP packets delayed 25 ms (overtaken)")
    p.add_argument("--law", choices=("alaw", "ulaw"), default="alaw")
    p.add_argument("--seed", type=whole(0, 2 ** 32 - 1), default=1)
    p.add_argument("--workers", type=whole(1, 64), default=1,
                   help="worker processes of the latency run, each with its share of the calls (default 1)")
    p.add_argument("--workers-compare", type=_int_list, metavar="N,N,...",
                   help="also run each of these numbers of calls at realtime with 1 worker and with 2, and report "
                        "the most calls each carries with zero drops, their latency and the ratio")
    p.add_argument("--sink", choices=("discard", "rtp2ws"), default="discard",
                   help="WebSocket server in its own process: a minimal discard server (default) or rtp2ws sink")


def options_from_args(args) -> BenchOptions:
    return BenchOptions(calls=args.calls, seconds=args.seconds, configs=args.configs, sweep=args.sweep,
                        latency=args.latency, latency_calls=args.latency_calls,
                        latency_seconds=args.latency_seconds, flush_ms=args.flush_ms,
                        latency_config=args.latency_config, latency_reference=args.latency_reference,
                        profile=args.profile,
                        profile_calls=args.profile_calls, out=args.out, cache=args.cache, quick=args.quick,
                        loss=args.loss, reorder=args.reorder, law=args.law, seed=args.seed, sink=args.sink,
                        workers=args.workers, workers_compare=args.workers_compare)


def cmd_bench(args) -> int:
    try:
        doc = run_bench(options_from_args(args))
    except (ValueError, RuntimeError) as e:
        print(f"rtp2ws: error: {e}", file=sys.stderr)
        return 2
    print(format_table(doc))
    print(f"\nresults: {doc['files']['json']}, {doc['files']['png']}, {doc['files']['table']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["child"]:
        return _child_main(argv[1])
    if argv[:1] == ["sink"]:
        return sink_main(argv[1:])
    if argv[:1] in (["memory"], ["memory-child"]):   # memory per live call and where it goes
        from . import memory

        return memory.main(argv[1:]) if argv[0] == "memory" else memory._child_main(argv[1])
    p = argparse.ArgumentParser(prog="calls_per_core", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    return cmd_bench(p.parse_args(argv))

