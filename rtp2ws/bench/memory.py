"""Memory per live call, and where it goes.

    python -m rtp2ws.bench memory [--calls 200,1000] [--seconds 20] [--config ws20]
                                  [--no-trace] [--top 25] [--out benchmarks/results]
    python benchmarks/memory_per_call.py ...            (the same thing)

For every N it replays a generated capture of N concurrent G.711 calls
(``capgen``, the bench's own, cached) at ``--speed realtime`` into the discard
sink, per-leg streams (``ws20``: 20 ms frames, ``ws100``), with rtp2ws's
defaults (``--resend-ms`` 1000, ``--max-buffer-ms``, ``--flush-ms``), exactly as
``rtp2ws replay --ws-url --speed realtime`` runs, in a child process of its own.
When every call is active (capture time ``mem_sample_ts``) the child looks once:

* **RSS** (``/proc/self/statm``) against RSS before the replay, per active call:
  the figure issue 12 sets at <= 100 KB.  Each run is done twice, the first time
  with nothing but that probe (this is the figure); the second time with
  tracemalloc on (which costs memory and time of its own) for the attribution.
* **the C outboxes** (``native/outbox.c``): audio chunks (1 KiB) in use over all
  streams and on the shared free list (``_wsframe.chunk_counts``), and per
  stream the audio queued and in the resend window, as a distribution.  These chunks are plain ``malloc`` and the
  only large allocation tracemalloc does not see.
* **malloc** (glibc ``mallinfo2``, all arenas): bytes in use and free in the
  arenas, so that what RSS holds beyond what is allocated (freed memory kept by
  the allocator) shows.
* **Python allocations** (tracemalloc, the second run): what is allocated at the
  sample and was not at the start, per active call, by package (rtp2ws's stages,
  websockets, asyncio, uvloop, ...), by file and by line.  Memory that C code
  takes with ``PyMem_*`` (the fast path's slots, the wires' buffers, numpy's
  arrays) counts at the Python line that called it.
* **objects** by type (``gc.get_objects``: container objects only), per call.

Socket buffers are the kernel's: not in RSS, not counted here (``ss -tm`` shows
them).  ``--calls`` large enough that one process cannot keep up at realtime
still measures what it holds, but with queues fuller than a live host's; the
report says how far behind the capture clock the run was at the sample.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

from ..argtypes import number, whole
from .capgen import cached_capture
from .discard import SinkProcess

WS_CONFIGS = {"ws20": 20, "ws100": 100}


# =========================================================================== probes

class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def mallinfo() -> dict | None:
    """glibc's heap over all arenas: ``in_use`` (allocated), ``free`` (kept by malloc,
    not given back), ``mmapped`` (large blocks of their own); None without glibc."""
    try:
        libc = ctypes.CDLL(None)
        f = libc.mallinfo2
    except (OSError, AttributeError):
        return None
    f.restype = _MallInfo2
    m = f()
    return {"in_use": m.uordblks + m.hblkhd, "free": m.fordblks, "mmapped": m.hblkhd, "arena": m.arena}


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def area_of(filename: str) -> str:
    """The package a traced allocation's file belongs to: ``rtp2ws/<stage>``, or a
    third-party package's name, or ``python`` (the standard library) or ``<...>``."""
    parts = short_name(filename).split("/")
    if parts[0].startswith("<"):
        return "/".join(parts)
    if parts[0] == "rtp2ws":
        return "/".join(parts[:2]) if len(parts) > 2 else "rtp2ws"
    if parts[0].startswith("python3"):
        return "python/" + parts[1]
    return parts[0]


def short_name(filename: str) -> str:
    p = filename.replace("\\", "/")
    if "/rtp2ws/" in p:
        return "rtp2ws/" + p.rsplit("/rtp2ws/", 1)[1]
    if "site-packages/" in p:
        return p.rsplit("site-packages/", 1)[1]
    if "/lib/python3" in p:                       # the standard library: python3.11/asyncio/tasks.py
        return "python3" + p.rsplit("/lib/python3", 1)[1]
    return p


def outbox_stats(sender) -> dict:
    """The chunks of all outboxes, and per stream the audio queued and in the resend window."""
    from .. import _wsframe

    queued, retained = [], []
    with sender._lock:
        streams = list(sender._streams.values())
        for st in streams:
            queued.append(st.outbox.queued_bytes)
            retained.append(st.outbox.retained_bytes)
        in_use, free = _wsframe.chunk_counts()
    return {"streams": len(streams), "chunk_bytes": _wsframe.CHUNK_BYTES, "chunks_in_use": in_use,
            "chunks_free": free, "queued_bytes": _dist(queued), "retained_bytes": _dist(retained)}


def _dist(values: list) -> dict:
    if not values:
        return {"n": 0}
    v = sorted(values)
    n = len(v)
    return {"n": n, "sum": sum(v), "mean": sum(v) / n, "p50": v[n // 2], "p90": v[min(n - 1, n * 9 // 10)],
            "max": v[-1]}


def object_counts() -> Counter:
    return Counter(type(o).__qualname__ for o in gc.get_objects())


class Probe:
    """Looks once, on the first pipeline tick at or after ``at`` (capture time)."""

    def __init__(self, at: float, trace: bool, top: int) -> None:
        self.at = at
        self.trace = trace
        self.top = top
        self.bridge: Any = None
        self.pacer: Any = None
        self.base: dict = {}
        self.result: dict | None = None

    def start(self) -> None:
        gc.collect()
        self.base = {"rss": rss_bytes(), "malloc": mallinfo(), "objects": object_counts()}
        if self.trace:
            self.base["snapshot"] = tracemalloc.take_snapshot()

    def wrap(self, sink):
        from ..pipeline.sink import Forward

        probe = self
        self.bridge = sink

        class _Probe(Forward):
            def tick(self, now):
                if probe.result is None and now >= probe.at:
                    probe.look(now)
                self.inner.tick(now)

        return _Probe(sink)

    def look(self, now: float) -> None:
        rss = rss_bytes()                                    # first, before the probe allocates
        mall = mallinfo()
        sender = self.bridge.sender
        out: dict[str, Any] = {"at": now, "rss": rss, "baseline_rss": self.base["rss"],
                               "behind_s": self.pacer.behind if self.pacer is not None else None}
        out["outbox"] = outbox_stats(sender)
        if mall is not None and self.base["malloc"] is not None:
            out["malloc"] = {k: mall[k] - self.base["malloc"][k] for k in mall}
        if self.trace:
            snap = tracemalloc.take_snapshot()
            out["traced_overhead"] = tracemalloc.get_tracemalloc_memory()
            diff = snap.compare_to(self.base["snapshot"], "lineno")
            by_line = [(short_name(d.traceback[0].filename), d.traceback[0].lineno, d.size_diff, d.count_diff)
                       for d in diff if d.size_diff]
            by_area: Counter = Counter()
            by_file: Counter = Counter()
            for f, _, size, _ in by_line:
                by_area[area_of(f)] += size
                by_file[f] += size
            out["traced"] = sum(s for _, _, s, _ in by_line)
            out["by_area"] = dict(by_area.most_common())
            out["by_file"] = dict(by_file.most_common(self.top))
            by_line.sort(key=lambda r: -r[2])
            out["by_line"] = by_line[: self.top]
            del snap, diff
        objs = object_counts() - self.base["objects"]
        out["objects"] = dict(objs.most_common(self.top))
        out["objects_total"] = sum(objs.values())
        self.result = out


# =========================================================================== one run (child process)

def run_child(spec: dict) -> dict:
    """``rtp2ws replay --ws-url URL --speed realtime`` of ``spec['capture']`` with the probe."""
    import websockets.asyncio.client  # noqa: F401  (imported before the baseline)

    from ..pipeline.pipeline import FLUSH_MS, Config, deliver_ms
    from ..run import gcpolicy
    from ..run.replay import Pacer, stream_replay
    from ..sinks.streams import StreamSink
    from ..ws.sender import SenderConfig, raise_fd_limit

    raise_fd_limit(65536)
    gcpolicy.apply()
    probe = Probe(spec["at"], spec["trace"], spec["top"])

    class ProbedPacer(Pacer):
        def __init__(self, *a, **kw) -> None:
            super().__init__(*a, **kw)
            self.behind = 0.0
            probe.pacer = self

        def delay(self, ts):
            d = super().delay(ts)
            self.behind = max(-d, 0.0)
            return d

    if spec["trace"]:
        tracemalloc.start(1)
    cfg = SenderConfig(url=spec["url"])
    config = Config(deliver_ms=deliver_ms(stream=True, paced=True, max_buffer_ms=cfg.max_buffer_ms),
                    flush_ms=FLUSH_MS)
    streams = StreamSink(frame_ms=spec["frame_ms"], stereo=False, hold_s=config.jitter_depth + 1.0)
    probe.start()
    t0 = time.monotonic()
    c0 = time.process_time()
    result, stats = stream_replay(spec["capture"], config, cfg, streams, speed=1.0, wrap_sink=probe.wrap,
                                  pacer_cls=ProbedPacer)
    out = {"cpu_s": time.process_time() - c0, "wall_s": time.monotonic() - t0, "legs": result.legs,
           "dropped_samples": stats.get("dropped_samples"), "undelivered_ms": stats.get("undelivered_ms"),
           "probe": probe.result}
    return out


def _child_main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    out = run_child(spec)
    Path(spec["result"]).write_text(json.dumps(out))
    return 0


def measure(capture: str, info: dict, *, frame_ms: int, trace: bool, top: int, sink: str = "discard") -> dict:
    proc_sink = SinkProcess(sink)
    try:
        with tempfile.TemporaryDirectory(prefix="rtp2ws-mem-") as tmp:
            spec = {"capture": capture, "url": proc_sink.url, "frame_ms": frame_ms, "trace": trace, "top": top,
                    "at": info["mem_sample_ts"], "result": os.path.join(tmp, "result.json")}
            path = os.path.join(tmp, "spec.json")
            Path(path).write_text(json.dumps(spec))
            import subprocess

            subprocess.run([sys.executable, "-m", "rtp2ws.bench", "memory-child", path], check=True)
            out = json.loads(Path(spec["result"]).read_text())
    finally:
        proc_sink.stop()
    out["active_calls"] = info["active_at_sample"]
    return out


# =========================================================================== report

def format_report(n: int, seconds: float, config: str, plain: dict, traced: dict | None) -> str:
    calls = plain["active_calls"]
    p = plain["probe"]
    kb = 1024 * calls
    lines = [f"{config}, {n} calls x {seconds:g} s at --speed realtime, {calls} active at the sample "
             f"({p['behind_s'] * 1000 if p['behind_s'] is not None else float('nan'):.1f} ms behind the capture "
             f"clock there; {plain['cpu_s']:.1f} s CPU over {plain['wall_s']:.1f} s)"]
    rss = (p["rss"] - p["baseline_rss"]) / kb
    lines.append(f"  RSS per active call          {rss:8.1f} KB   (RSS {p['rss'] / 2**20:.0f} MB, "
                 f"before the replay {p['baseline_rss'] / 2**20:.0f} MB)")
    ob = p["outbox"]
    chunk_kb = (ob["chunk_bytes"] + 8) / 1024
    lines.append(f"  outbox chunks per call       {ob['chunks_in_use'] * chunk_kb / calls:8.1f} KB   "
                 f"({ob['chunks_in_use']} in use, {ob['chunks_free']} on the free list, {ob['streams']} streams)")
    for key, label in (("retained_bytes", "resend window per stream"), ("queued_bytes", "queued per stream")):
        d = ob[key]
        if d.get("n"):
            lines.append(f"    {label:<26} mean {d['mean'] / 1024:6.1f} KB  p50 {d['p50'] / 1024:6.1f}  "
                         f"p90 {d['p90'] / 1024:6.1f}  max {d['max'] / 1024:6.1f}")
    m = p.get("malloc")
    if m:
        lines.append(f"  malloc in use per call       {m['in_use'] / kb:8.1f} KB   (free kept in the arenas: "
                     f"{m['free'] / kb:.1f} KB per call)")
    lines.append(f"  objects per call             {p['objects_total'] / calls:8.1f}     (gc-tracked, new since "
                 f"the start)")
    if traced is not None:
        t = traced["probe"]
        tc = traced["active_calls"] * 1024
        lines.append(f"  traced Python per call       {t['traced'] / tc:8.1f} KB   (tracemalloc run; its RSS per "
                     f"call {(t['rss'] - t['baseline_rss']) / tc:.1f} KB, of it tracemalloc's own "
                     f"{t['traced_overhead'] / tc:.1f})")
        lines.append("    by package:")
        for area, size in t["by_area"].items():
            if abs(size) / tc >= 0.05:
                lines.append(f"      {area:<28} {size / tc:8.2f} KB")
        lines.append("    by file:")
        for f, size in t["by_file"].items():
            lines.append(f"      {f:<40} {size / tc:8.2f} KB")
        lines.append("    by line:")
        for f, ln, size, count in t["by_line"]:
            lines.append(f"      {f + ':' + str(ln):<48} {size / tc:8.2f} KB  {count / traced['active_calls']:7.1f}"
                         f" blocks")
    lines.append("  objects by type per call:")
    for name, count in list(p["objects"].items())[:15]:
        lines.append(f"      {name:<32} {count / calls:7.1f}")
    return "\n".join(lines)


def _int_list(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of whole numbers: {text!r}") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError("at least one call")
    return vals


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="rtp2ws-bench-memory", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=_int_list, default=(200, 1000), help="comma-separated N (default 200,1000)")
    p.add_argument("--seconds", type=number(2, 3600), default=20.0, help="call length (default 20)")
    p.add_argument("--config", choices=tuple(WS_CONFIGS), default="ws20")
    p.add_argument("--no-trace", dest="trace", action="store_false", help="leave out the tracemalloc run")
    p.add_argument("--top", type=whole(1, 1000), default=25, help="lines, files and types shown (default 25)")
    p.add_argument("--out", default="benchmarks/results", help="where memory_per_call.json goes")
    p.add_argument("--cache", help="where the captures are kept (default OUT/captures)")
    args = p.parse_args(argv)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = Path(args.cache) if args.cache else out_dir / "captures"
    doc: dict[str, Any] = {"config": args.config, "seconds": args.seconds, "runs": []}
    texts = []
    for n in args.calls:
        capture, info = cached_capture(cache, n, args.seconds)
        plain = measure(capture, info, frame_ms=WS_CONFIGS[args.config], trace=False, top=args.top)
        traced = measure(capture, info, frame_ms=WS_CONFIGS[args.config], trace=True, top=args.top) \
            if args.trace else None
        doc["runs"].append({"calls": n, "plain": plain, "traced": traced})
        text = format_report(n, args.seconds, args.config, plain, traced)
        print(text, flush=True)
        texts.append(text)
    (out_dir / "memory_per_call.json").write_text(json.dumps(doc, indent=1))
    (out_dir / "memory_per_call.txt").write_text("\n\n".join(texts) + "\n")
    return 0
