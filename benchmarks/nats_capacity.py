"""Calls per core of the NATS sink at realtime, beside the WebSocket sink, in the same run.

    python benchmarks/nats_capacity.py [--calls 200] [--seconds 20] [--chunk-ms 100] [--frame-ms 20]
                                       [--cache DIR] [--storage file|memory]

The bench's capture (``rtp2ws.bench.capgen.cached_capture``: N concurrent A-law calls of
S seconds) is replayed at realtime (``rtp2ws replay --speed realtime``, paced as live
capture is) three times, one after the other:

1. ``--ws-url`` into the bench's discard sink (``python -m rtp2ws.bench sink``);
2. ``--nats-url`` into a ``nats-server -js`` of its own (a free loopback port, a fresh
   store directory), ``--nats-chunk-ms`` as given;
3. both at once (``--ws-url`` and ``--nats-url``: two StreamSinks, no fast-path streaming).

CPU: user + system of the rtp2ws process (``os.wait4``: everything it used, start-up
included, which is why the calls should last long enough), and of nats-server and the
discard sink over the same run (``/proc/PID/stat``).  **calls per core** = N x S / rtp2ws's
CPU seconds, as ``rtp2ws bench`` counts it; the server's CPU is printed beside it (it runs
on another host in a deployment).  A run that dropped or left audio undelivered is marked.
Speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rtp2ws.bench.capgen import cached_capture  # noqa: E402
from rtp2ws.bench.discard import SinkProcess  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_rtp2ws(args: list[str]) -> tuple[float, str, str, int]:
    """(CPU seconds, stdout, stderr, exit status) of one rtp2ws replay."""
    out = tempfile.TemporaryFile("w+")
    err = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen([sys.executable, "-m", "rtp2ws.cli", "replay", *args], stdout=out, stderr=err)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    out.seek(0)
    err.seek(0)
    return usage.ru_utime + usage.ru_stime, out.read(), err.read(), proc.returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--chunk-ms", type=int, default=100)
    ap.add_argument("--frame-ms", type=int, default=20)
    ap.add_argument("--storage", choices=("file", "memory"), default="file")
    ap.add_argument("--cache", default=str(ROOT / "out" / "bench" / "captures"))
    a = ap.parse_args()
    if shutil.which("nats-server") is None:
        print("nats-server is not installed (install.sh installs it)", file=sys.stderr)
        return 2
    cap, _ = cached_capture(a.cache, a.calls, a.seconds)
    call_s = a.calls * a.seconds
    common = [cap, "--speed", "realtime", "--frame-ms", str(a.frame_ms), "--flush-ms", str(a.frame_ms),
              "--workers", "1", "--no-progress"]
    results = {}
    for name in ("websocket", "nats", "both"):
        store = tempfile.mkdtemp(prefix="rtp2ws-nats-bench-")
        port = free_port()
        server = subprocess.Popen(["nats-server", "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", store],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) if name != "websocket" else None
        time.sleep(0.5)
        sink = SinkProcess("discard") if name != "nats" else None
        extra: list[str] = []
        if sink is not None:
            extra += ["--ws-url", sink.url]
        if server is not None:
            extra += ["--nats-url", f"nats://127.0.0.1:{port}", "--nats-chunk-ms", str(a.chunk_ms),
                      "--nats-storage", a.storage, "--nats-max-bytes", str(8 << 30)]
        s0 = proc_cpu(server.pid) if server else 0.0
        k0 = proc_cpu(sink.proc.pid) if sink else 0.0
        cpu, out, err, rc = run_rtp2ws([*common, *extra])
        s_cpu = proc_cpu(server.pid) - s0 if server else 0.0
        k_cpu = proc_cpu(sink.proc.pid) - k0 if sink else 0.0
        if sink is not None:
            sink.stop()
        if server is not None:
            server.terminate()
            server.wait(10)
        shutil.rmtree(store, ignore_errors=True)
        dropped = [int(x) for x in re.findall(r"(\d+) ms dropped", out)]
        undelivered = [int(x) for x in re.findall(r"(\d+) ms undelivered", out)]
        carried = rc == 0 and not any(dropped) and not any(undelivered)
        results[name] = {"rtp2ws_cpu_s": round(cpu, 2), "calls_per_core": round(call_s / cpu) if cpu else None,
                         "nats_server_cpu_s": round(s_cpu, 2), "sink_cpu_s": round(k_cpu, 2), "carried": carried,
                         "summary": out.strip().splitlines()[-1] if out.strip() else err[-500:]}
    print(f"{a.calls} calls x {a.seconds:g} s at realtime, frames {a.frame_ms} ms, NATS chunks {a.chunk_ms} ms, "
          f"{a.storage} storage")
    print(f"{'sink':<10} {'rtp2ws CPU s':>12} {'calls/core':>10} {'nats-server CPU s':>18} {'carried':>8}")
    for name, r in results.items():
        print(f"{name:<10} {r['rtp2ws_cpu_s']:>12} {r['calls_per_core']!s:>10} {r['nats_server_cpu_s']:>18} "
              f"{r['carried']!s:>8}")
    out_dir = ROOT / "out"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "nats_capacity.json").write_text(json.dumps({"calls": a.calls, "seconds": a.seconds,
                                                            "chunk_ms": a.chunk_ms, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
