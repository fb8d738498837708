"""``--workers N``: N worker processes, each today's whole process with a share of the
calls, and the supervisor that starts them, forwards signals, collects their reports
and merges them.

Worker I of N is ``python -m rtp2ws.cli <the same arguments>`` with ``RTP2WS_WORKER=I/N FD``:
it captures every packet itself (its own libpcap handle with the same filter, or its own
read and pacing of the capture file), parses all SIP, and does media, decoding and
streaming only for the calls ``pipeline.shard.owner`` gives it (``Config.shard``). It
writes its calls' WAV files itself, and reports to the supervisor on the pipe FD
(``run.workerlink``): ready, a snapshot a second, each ended call's manifest entry, and
its summary at the end.

The supervisor alone prints the summary line, writes ``calls.jsonl``/``calls.json``,
serves ``--metrics`` and logs the ``--stats-interval`` lines, all merged from the
workers' reports; its exit code is the worst of theirs.

Start: worker 0 first, alone, until its capture is open (so a bad interface, user or
output directory is reported once, by it); then the others; once every worker is
ready, the supervisor drops privileges (``--user``) and logs ``capturing on``.

Stop: SIGINT/SIGTERM are forwarded (SIGTERM): every worker ends its calls with
``shutdown``, drains its streams and reports. SIGHUP is forwarded, and each process
reopens ``--log-file``.

A worker that dies (no summary) is named with its exit code or signal. Live, it is
started again after a backoff (1 s, doubling to 30 s; reset after a minute up) and
counted in ``worker_restarts``; its calls in progress are lost (the new worker sees
calls that begin after it started). With ``--user`` it cannot be (its capture needs the
privileges given up), so the supervisor stops the others and exits 1, for the
service manager to restart the whole. A replay worker that dies fails the replay
(exit 1).
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..sinks.wav import WavSink
from .metrics import JITTER_BUCKETS, LOSS_BUCKETS, QUALITY_HISTOGRAMS, merge_histograms
from .workerlink import WORKER_ENV

if TYPE_CHECKING:
    from .live import CaptureOptions

log = logging.getLogger("rtp2ws.workers")

BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)    # restart delays, by restarts in a row
STABLE_S = 60.0                                  # a worker up this long starts the backoff again
MAX_LINE = 64 * 2 ** 20                          # a report longer than this is a broken worker

# Merging worker reports: what every worker counts identically (each sees every
# packet) is taken once (max); what each counts for its own calls is summed.
CAPTURE_ONCE = ("packets", "bytes")
CAPTURE_SUM = ("kernel_drops", "interface_drops")
CALL_SUM = ("calls", "legs", "legs_with_audio")
SNAPSHOT_ONCE = (*CAPTURE_ONCE, "malformed", "frag_dropped", "active_calls")
SNAPSHOT_COUNTERS = (*CAPTURE_SUM, "calls", "legs_with_audio", "ws_streams", "ws_reconnects", "ws_dropped_ms")
SNAPSHOT_GAUGES = ("active_legs", "drops_recent", "ws_open", "ws_active", "ws_queued_ms")
# the per-leg histograms (rtp2ws.run.metrics): each leg is observed by the one worker that
# owns its call, so the workers' buckets add up
HISTOGRAMS = (("leg_loss", LOSS_BUCKETS), ("leg_jitter", JITTER_BUCKETS),
              *((key, buckets) for key, buckets, _, _ in QUALITY_HISTOGRAMS))
READER_ONCE = ("bad_timestamps", "first_bad_timestamp")   # replay: the capture file's, the same in each


def default_count() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0))


def worst(codes: list[int]) -> int:
    """The exit code of several: 2 (could not run) over 1 (ran, with errors) over 0."""
    return max(codes, default=0)


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}"
    return f"exited with status {code}"


# --------------------------------------------------------------------------- merging

def merge_streams(sents: list[dict | None]) -> dict | None:
    """The senders' statistics, summed (None when no worker streamed)."""
    got = [s for s in sents if s is not None]
    if not got:
        return None
    out: dict[str, Any] = {}
    for s in got:
        for k, v in s.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[k] = out.get(k, 0) + v
    return out


def _pipeline_part(summary: dict, run_keys: tuple[str, ...]) -> dict:
    return {k: v for k, v in summary.items() if k not in run_keys and isinstance(v, (int, float))
            and not isinstance(v, bool)}


def merge_live_summaries(summaries: list[dict], retired: dict | None = None) -> dict:
    """Workers' ``LiveRunner.summary()`` dicts as one; ``retired`` adds the counters of
    workers that died (their last snapshot)."""
    from ..pipeline.shard import merge_stats

    retired = retired or {}
    first = summaries[0]
    run_keys = ("interface", "elapsed_s", "end_reason", "capture_error", *CAPTURE_ONCE, *CAPTURE_SUM, *CALL_SUM,
                "streams")
    out: dict[str, Any] = {"interface": first["interface"]}
    for k in CAPTURE_ONCE:
        out[k] = max([s.get(k, 0) for s in summaries] + [retired.get(k, 0)])
    for k in CAPTURE_SUM:
        out[k] = sum(s.get(k, 0) for s in summaries) + retired.get(k, 0)
    out["calls"] = sum(s.get("calls", 0) for s in summaries) + retired.get("calls", 0)
    out["legs"] = sum(s.get("legs", 0) for s in summaries) + retired.get("legs_with_audio", 0)
    out["elapsed_s"] = max(s.get("elapsed_s", 0) for s in summaries)
    reasons = [s.get("end_reason") for s in summaries]
    out["end_reason"] = "capture_end" if "capture_end" in reasons else reasons[0]
    errors = [s["capture_error"] for s in summaries if s.get("capture_error")]
    if errors:
        out["capture_error"] = errors[0]
    out.update(merge_stats([_pipeline_part(s, run_keys) for s in summaries]))
    return out


def merge_snapshots(snaps: list[dict], retired: dict | None = None) -> dict:
    """Workers' live snapshots as the one ``/metrics``, ``/healthz`` and the log read."""
    snaps = [s for s in snaps if s]
    retired = retired or {}
    if not snaps:
        return {}
    out: dict[str, Any] = dict(snaps[0])
    out["monotonic"] = min(s.get("monotonic", 0.0) for s in snaps)     # the stalest worker's
    out["capture_running"] = all(s.get("capture_running") for s in snaps)
    out["capture_error"] = next((s["capture_error"] for s in snaps if s.get("capture_error")), None)
    for k in SNAPSHOT_ONCE:
        out[k] = max([s.get(k, 0) or 0 for s in snaps] + [retired.get(k, 0)])
    for k in SNAPSHOT_COUNTERS:
        out[k] = sum(s.get(k, 0) or 0 for s in snaps) + retired.get(k, 0)
    for k in SNAPSHOT_GAUGES:
        out[k] = sum(s.get(k, 0) or 0 for s in snaps)
    for key, buckets in HISTOGRAMS:
        out[key] = merge_histograms([s.get(key) for s in snaps] + [retired.get(key)], buckets)
    return out


def snapshot_ws(snap: dict) -> dict:
    """The sender statistics the periodic log line shows, from a merged snapshot."""
    if "ws_open" not in snap:
        return {}
    return {"open": snap["ws_open"], "reconnects": snap["ws_reconnects"], "dropped_ms": snap["ws_dropped_ms"]}


def retire(retired: dict, snap: dict) -> None:
    """Adds a dead worker's last counters to ``retired``, so merged counters never go back."""
    for k in SNAPSHOT_COUNTERS:
        retired[k] = retired.get(k, 0) + (snap.get(k, 0) or 0)
    for k in SNAPSHOT_ONCE:
        retired[k] = max(retired.get(k, 0), snap.get(k, 0) or 0)
    for key, buckets in HISTOGRAMS:
        retired[key] = merge_histograms([retired.get(key), snap.get(key)], buckets)


# --------------------------------------------------------------------------- the manifest

class Manifest(WavSink):
    """The supervisor's ``calls.jsonl`` (live) or manifest list (replay), from the entries
    the workers report; ``close(summary)`` writes ``calls.json`` as a single process does.
    It writes no WAV files: the workers do."""

    def add(self, entry: dict[str, Any]) -> None:
        self.ended += 1
        if self._journal is not None:
            self._journal.write(json.dumps(entry).encode() + b"\n")
            self._journal.flush()
        else:
            self.manifest.append(entry)


# --------------------------------------------------------------------------- processes

@dataclass(frozen=True)
class Plan:
    """How to run: ``argv`` is the command line after the program name (the subcommand
    first), which every worker runs again with its shard."""
    argv: tuple[str, ...]
    count: int
    live: bool                        # live: restart a worker that dies; replay: fail
    out_dir: str | None = None
    stereo: bool = False
    metrics: tuple[str, int] | None = None
    stats_interval: float = 60.0
    log_file: str | None = None
    log_level: str = "info"
    log_format: str = "text"
    user: str | None = None


@dataclass
class Worker:
    index: int
    proc: subprocess.Popen[bytes]
    fd: int
    started: float
    buf: bytearray = field(default_factory=bytearray)
    ready: dict | None = None
    snapshot: dict = field(default_factory=dict)
    summary: dict | None = None
    code: int | None = None           # exit status once it ended

    @property
    def name(self) -> str:
        return f"worker {self.index + 1}"


class Supervisor:
    """Starts the workers and reads their reports until every one has ended."""

    def __init__(self, plan: Plan, *, python: str = sys.executable) -> None:
        self.plan = plan
        self.python = python
        self.workers: dict[int, Worker] = {}
        self.selector = selectors.DefaultSelector()
        self.stopping = False
        self.hup = False
        self.restarts = 0
        self.failed: list[str] = []                   # deaths that fail the run
        self.retired: dict[str, Any] = {}             # counters of workers that died
        self.pending: list[dict] = []                 # manifest entries before the manifest is open
        self.manifest: Manifest | None = None
        self.snapshot: dict = {}                      # merged, replaced whole (metrics thread reads it)
        self._backoff: dict[int, int] = {}            # restarts in a row, per shard
        self._due: dict[int, float] = {}              # shard -> when to start it again

    # -- processes -------------------------------------------------------------

    def spawn(self, index: int) -> Worker:
        r, w = os.pipe()
        os.set_inheritable(w, True)
        env = dict(os.environ, **{WORKER_ENV: f"{index}/{self.plan.count} {w}"})
        try:
            proc = subprocess.Popen([self.python, "-m", "rtp2ws.cli", *self.plan.argv], pass_fds=(w,),
                                    stdin=subprocess.DEVNULL, env=env)
        finally:
            os.close(w)
        os.set_blocking(r, False)
        worker = Worker(index, proc, r, time.monotonic())
        self.workers[index] = worker
        self.selector.register(r, selectors.EVENT_READ, worker)
        return worker

    def signal_all(self, sig: int) -> None:
        for w in self.workers.values():
            if w.code is None:
                try:
                    w.proc.send_signal(sig)
                except ProcessLookupError:
                    pass

    def stop(self) -> None:
        """Stop every worker (SIGTERM), and start none again."""
        self.stopping = True
        self._due.clear()
        self.signal_all(signal.SIGTERM)

    def install_signals(self) -> None:
        def on_stop(*_: Any) -> None:
            self.stop()

        def on_hup(*_: Any) -> None:
            self.hup = True

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, on_stop)
        signal.signal(signal.SIGHUP, on_hup)

    # -- reports ---------------------------------------------------------------

    def poll(self, timeout: float) -> None:
        """Reads what the workers reported within ``timeout``; notes ended workers."""
        for key, _ in self.selector.select(timeout):
            worker = key.data
            try:
                data = os.read(worker.fd, 1 << 16)
            except BlockingIOError:
                continue
            if data:
                worker.buf += data
                self._lines(worker)
                if len(worker.buf) > MAX_LINE:
                    log.error("%s sent a report over %d bytes; stopping it", worker.name, MAX_LINE)
                    worker.proc.kill()
                    worker.buf.clear()
            else:
                self._ended(worker)

    def _lines(self, worker: Worker) -> None:
        while True:
            end = worker.buf.find(b"\n")
            if end < 0:
                return
            line = bytes(worker.buf[:end])
            del worker.buf[:end + 1]
            try:
                msg = json.loads(line)
            except ValueError:
                log.error("%s sent a report that is not JSON: %r", worker.name, line[:200])
                continue
            kind = msg.get("type")
            if kind == "snapshot":
                worker.snapshot = msg.get("snapshot") or {}
            elif kind == "call":
                if self.manifest is not None:
                    self.manifest.add(msg["entry"])
                else:
                    self.pending.append(msg["entry"])
            elif kind == "ready":
                worker.ready = msg
            elif kind == "summary":
                worker.summary = msg

    def _ended(self, worker: Worker) -> None:
        self.selector.unregister(worker.fd)
        os.close(worker.fd)
        worker.code = worker.proc.wait()
        if worker.summary is not None:
            return
        why = describe_exit(worker.code)
        if worker.code >= 0 and (self.stopping or worker.ready is None or not self.plan.live):
            return          # it said why itself (a bad interface, user, directory, capture), with its code
        if not self.plan.live or self.stopping or worker.ready is None or self.plan.user:
            self.failed.append(f"{worker.name} (pid {worker.proc.pid}) {why}")
            log.error("%s (pid %d) %s before it reported its summary", worker.name, worker.proc.pid, why)
            if self.plan.live and worker.ready is not None and self.plan.user and not self.stopping:
                log.error("%s cannot be started again: its capture needs the privileges --user gave up; "
                          "stopping (exit 1) for the service manager to restart rtp2ws", worker.name)
                self.stop()
            return
        retire(self.retired, worker.snapshot)
        up = time.monotonic() - worker.started
        n = 0 if up >= STABLE_S else self._backoff.get(worker.index, 0)
        delay = BACKOFF_S[min(n, len(BACKOFF_S) - 1)]
        self._backoff[worker.index] = n + 1
        self._due[worker.index] = time.monotonic() + delay
        self.restarts += 1
        log.error("%s (pid %d) %s; starting it again in %g s (worker restarts: %d); its calls in progress "
                  "are lost", worker.name, worker.proc.pid, why, delay, self.restarts)

    def restart_due(self) -> None:
        t = time.monotonic()
        for index, when in list(self._due.items()):
            if when <= t:
                del self._due[index]
                w = self.spawn(index)
                log.info("%s started again (pid %d)", w.name, w.proc.pid)

    def running(self) -> bool:
        return any(w.code is None for w in self.workers.values()) or bool(self._due)

    def merged_snapshot(self) -> dict:
        snap = merge_snapshots([w.snapshot for w in self.workers.values() if w.code is None], self.retired)
        if snap:
            snap["workers"] = sum(1 for w in self.workers.values() if w.code is None and w.ready is not None)
            snap["worker_restarts"] = self.restarts
        return snap

    def wait_ready(self, indexes: range) -> Worker | None:
        """Until the workers ``indexes`` are ready; the first that ended before, if any."""
        while True:
            ws = [self.workers[i] for i in indexes]
            dead = next((w for w in ws if w.code is not None), None)
            if dead is not None:
                return dead
            if all(w.ready is not None for w in ws):
                return None
            self.poll(0.1)


# --------------------------------------------------------------------------- live

def run_live_workers(plan: Plan, capture: CaptureOptions) -> int:
    """``rtp2ws live --workers N`` (N >= 2); returns the exit code."""
    from . import logs
    from .live import REFRESH_S, check_capture, log_interval, print_summary

    problem = check_capture(capture)        # said once here, not by every worker
    if problem is not None:
        print(f"rtp2ws: error: {problem}", file=sys.stderr)
        return 2

    try:
        hup_handler = logs.setup(plan.log_level, plan.log_format, plan.log_file).file
    except OSError as e:
        print(f"rtp2ws: error: --log-file {plan.log_file}: {e.strerror or e}", file=sys.stderr)
        return 2
    from ..speedups import missing_warning

    slower = missing_warning()
    if slower:          # once, as one process says it
        logging.getLogger("rtp2ws.live").warning("%s", slower)
    sup = Supervisor(plan)
    metrics = None
    if plan.metrics:
        from .metrics import MetricsServer

        host, port = plan.metrics
        try:
            metrics = MetricsServer(lambda: sup.snapshot, host, port, stale_s=max(10.0, 5 * REFRESH_S)).start()
        except OSError as e:
            print(f"rtp2ws: error: {e}", file=sys.stderr)
            return 2
    sup.install_signals()
    try:
        return _supervise_live(sup, plan, hup_handler, metrics, log_interval, print_summary)
    finally:
        if metrics is not None:
            metrics.close()
        sup.stop()
        for w in sup.workers.values():
            if w.code is None:
                w.code = w.proc.wait()


def _supervise_live(sup: Supervisor, plan: Plan, hup_handler: Any, metrics: Any, log_interval: Any,
                    print_summary: Any) -> int:
    first = sup.spawn(0)
    dead = sup.wait_ready(range(1))
    if dead is None and not sup.stopping:
        for i in range(1, plan.count):
            sup.spawn(i)
        dead = sup.wait_ready(range(plan.count))
    if dead is not None or sup.stopping:      # the worker said why (a bad interface, user, directory)
        sup.stop()
        while sup.running():
            sup.poll(0.2)
        codes = [w.code for w in sup.workers.values() if w.code is not None]
        return worst([2 if c < 0 else c for c in codes]) or 2
    if plan.user:
        from ..capture.live import drop_privileges
        from .live import preload

        preload()           # the summary line's modules, while the installation is readable

        try:
            uid, gid = drop_privileges(plan.user)
        except (PermissionError, OSError) as e:
            print(f"rtp2ws: error: {e}", file=sys.stderr)
            return 2
        log.info("running as %s (uid %d, gid %d)", plan.user, uid, gid)
    if plan.out_dir:
        try:
            sup.manifest = Manifest(plan.out_dir, stereo=plan.stereo, journal=True)
        except OSError as e:
            print(f"rtp2ws: error: --out-dir {plan.out_dir}: {e.strerror or e}", file=sys.stderr)
            return 2
        for entry in sup.pending:
            sup.manifest.add(entry)
        sup.pending.clear()
    ready = first.ready or {}
    log.info("capturing on %s (link type %d), filter: %s; %d workers%s", ready.get("interface"),
             ready.get("linktype", -1), ready.get("bpf"), plan.count,
             f"; metrics on http://{metrics.host}:{metrics.port}/metrics" if metrics else "")
    interface = ready.get("interface", "?")
    t = time.monotonic()
    next_log = t + plan.stats_interval
    last: dict | None = None
    while sup.running():
        sup.poll(0.2)
        sup.restart_due()
        sup.snapshot = sup.merged_snapshot()
        if sup.hup:
            sup.hup = False
            if hup_handler is not None:
                try:
                    hup_handler.reopen()
                    log.info("log file reopened")
                except OSError as e:
                    print(f"rtp2ws: cannot reopen {plan.log_file}: {e}", file=sys.stderr)
            sup.signal_all(signal.SIGHUP)
        t = time.monotonic()
        if t >= next_log and sup.snapshot and not sup.stopping:
            now = sup.snapshot
            log_interval(interface, last or now, now, snapshot_ws(now), plan.stats_interval)
            last = now
            next_log = t + plan.stats_interval
    summaries = [w.summary for w in sup.workers.values() if w.summary is not None]
    codes = [int(s.get("rc", 1)) for s in summaries]
    if not summaries:
        print("rtp2ws: error: no worker reported a summary", file=sys.stderr)
        return 1
    summary = merge_live_summaries([s["summary"] for s in summaries], sup.retired)
    sent = merge_streams([s.get("sent") for s in summaries])
    if sent is not None:
        summary["streams"] = sent
    published = merge_streams([s["summary"].get("nats") for s in summaries])
    if published is not None:
        summary["nats"] = published
    summary["workers"] = plan.count
    summary["worker_restarts"] = sup.restarts
    if sup.manifest is not None:
        try:
            sup.manifest.close(summary)
        except OSError as e:
            print(f"rtp2ws: error: cannot write calls.json: {e}", file=sys.stderr)
    rc = print_summary(interface, summary, sent)
    for text in sup.failed:
        print(f"rtp2ws: error: {text}", file=sys.stderr)
    return worst([rc, *codes, 1 if sup.failed else 0])


# --------------------------------------------------------------------------- replay

@dataclass
class ReplayOutcome:
    """What a replay's workers reported, merged: ``result`` (None when none finished),
    the WebSocket streams' and the NATS publishers' statistics (summed), the worst exit
    code and the deaths to report."""
    result: Any
    sent: dict | None
    code: int
    failed: list[str]
    calls_per_worker: list[int]
    nats: dict | None = None


def merge_replay_results(results: list[dict]) -> Any:
    """Workers' replay results (``workerlink`` form of ``ReplayResult``) as one ``ReplayResult``."""
    from ..pipeline.shard import merge_stats
    from .replay import ReplayResult

    first = results[0]
    reader = {k: first["stats"][k] for k in READER_ONCE if k in first["stats"]}
    stats = merge_stats([{k: v for k, v in r["stats"].items() if k not in READER_ONCE} for r in results])
    stats.update(reader)
    errors = [r["error"] for r in results if r.get("error")]
    internal = [e for r in results for e in r.get("internal_errors", ())][:100]
    return ReplayResult(first["path"], stats, sum(r["calls"] for r in results), sum(r["legs"] for r in results),
                        max(r["packets"] for r in results), max(r["elapsed"] for r in results),
                        errors[0] if errors else None, extra={"internal_errors": internal})


def run_replay_workers(plan: Plan, manifest: Manifest | None) -> ReplayOutcome:
    """``rtp2ws replay --workers N`` (N >= 2): runs the workers to their end; the caller
    prints. ``manifest`` (--out-dir) gets every worker's entries."""
    sup = Supervisor(plan)
    sup.manifest = manifest
    sup.install_signals()
    try:
        for i in range(plan.count):
            sup.spawn(i)
        while sup.running():
            sup.poll(0.2)
    finally:
        sup.stop()
        for w in sup.workers.values():
            if w.code is None:
                w.code = w.proc.wait()
    finished = [w for w in sorted(sup.workers.values(), key=lambda w: w.index) if w.summary is not None]
    codes = [int(w.summary.get("rc", 1)) for w in finished if w.summary is not None]
    codes += [1 if (w.code or 0) < 0 else (w.code or 0) for w in sup.workers.values() if w.summary is None]
    reports = [w.summary for w in finished if w.summary is not None]
    results = [r["result"] for r in reports]
    return ReplayOutcome(merge_replay_results(results) if results else None,
                         merge_streams([r.get("sent") for r in reports]),
                         worst(codes + ([1] if sup.failed else [])), sup.failed,
                         [int(r["calls"]) for r in results], merge_streams([r.get("nats") for r in reports]))
