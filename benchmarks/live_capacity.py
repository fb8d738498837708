"""Live capacity: ``rtp2ws live`` capturing on a real interface at realtime, against the reference.

    python benchmarks/live_capacity.py [--calls 200] [--seconds 20] [--workers 1] [--no-reference]
                                       [--frame-ms 20] [--rtp2ws-args "..."] [--remote-sink] [--repeat 1]
                                       [--settle 1.0] [--out DIR] [--cache DIR]

Issue 12 asks what a live sidecar carries.  ``rtp2ws bench --latency`` measures it with a
paced replay (``--speed realtime``) standing in for capture; this measures the capture
itself.  Needs root and ip(8).

1. The capture: the bench's (``cached_capture``: N concurrent A-law calls of S seconds,
   SIP set-up and BYE included, Ethernet), cached under ``--cache`` (``OUT/captures``).
2. A network namespace of our own (``r2wlb<pid>``) and a veth pair: the capture end
   ``r2wlb<pid>`` up in the root namespace, its peer ``r2wlbp<pid>`` up inside.  Both go
   in ``finally``, also on SIGINT or SIGTERM.  The frames' MAC and IP addresses are
   nobody's here: the root namespace's stack drops them (other host), capture sees them.
3. The sender (``send_main``, this file run as ``... live_capacity.py send IFACE CAPTURE``
   under ``ip netns exec``): loads the frames, says ``ready``, takes a start time on the
   monotonic clock from its stdin, and writes every frame on the peer through an
   AF_PACKET raw socket no earlier than its capture time after the first frame's; at each
   wake it sends every frame due, then sleeps until the next is due, at least 1 ms.  It
   ends after the last frame and reports how far behind it ended (``behind_s``, the last
   frame; ``max_behind_s``, the worst wake).
4. One after the other, on the same capture, each into a discard sink of its own
   (``python -m rtp2ws.bench sink``): ``rtp2ws live -i r2wlb<pid> --ws-url URL --workers
   N --frame-ms F --flush-ms F`` (``--frame-ms``, 20 by default; then ``--rtp2ws-args``;
   defaults otherwise: the default SIP/RTP port filter, 64 MiB kernel buffer), then the
   reference (always 20 ms frames), ``benchmarks/reference_pipeline.py --live
   r2wlb<pid> --ws-url URL`` (pypcap + dpkt + audioop, one ``websockets`` send per 20 ms
   frame).  Each is started, waited for until it says ``capturing on``, then the sender
   runs; ``--settle`` seconds after the sender's end (the calls' BYEs are in the capture:
   their ends and the WebSocket closes) it is stopped with SIGTERM and prints its summary.
5. CPU: user + system of the process and every descendant (``rtp2ws --workers`` forks
   its workers), from ``/proc/PID/stat`` (utime, stime, cutime, cstime) of the whole
   tree, read when the sender starts and again just before the SIGTERM: so the window is
   the sender's run plus ``--settle`` (start-up and imports are not in it; ``cpu_total_s``
   is everything up to the SIGTERM; ``cpu_user_s`` and ``cpu_sys_s`` split the window's;
   ``threads``: [thread id, name, user s, system s] of the main process's threads in the
   window, in the order they were made).  **calls per core** = N x call seconds / that CPU,
   as ``rtp2ws bench`` counts it.  A run that did not carry the load gets no figure
   (``carried`` false, the raw one in ``calls_per_core_raw``): packets dropped by the
   kernel (pcap statistics; for rtp2ws also by the interface or its capture queue), the
   sink short of N x 2 x S x 50 frames, or the sender more than ``BEHIND_LIMIT_S`` behind.

``--remote-sink`` puts each pipeline's sink on a host of its own (``SinkHost``: a second
namespace behind a veth pair, Receive Packet Steering on its side, the sink and the sender
pinned to the last CPUs and the pipeline to the first ``--workers``).  On loopback the
receiving side's TCP work runs inside the writer's ``send`` and is charged to the
pipeline (about a third of rtp2ws's CPU at 20 ms frames, in perf); a sidecar streaming to
an analysis server on another host does not pay it.  Both figures are worth reporting:
loopback is the default.

The kernel's share: on a veth the receiving side's work (the copy into the capture
ring included) mostly runs as a softirq on the way out of the sender's ``send`` (the
sender's ``cpu_s``, about 3 us a frame here), so neither pipeline is charged for it, as
neither would be for a NIC's interrupts on another core; waking the pipeline and reading
the ring are its own.  Results: the printed table and ``OUT/live_capacity.json``.  Speed
is measured here, never asserted in tests.  ``--repeat N`` runs the
pipelines N times, alternating; the run with the median rtp2ws figure stands in the
JSON's ``rtp2ws``/``reference``/``ratio``, every run is under ``runs``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
READY_TIMEOUT_S = 60.0       # for a pipeline to say "capturing on", the sender to load its frames
LEAD_S = 0.3                 # the sender's start is this far ahead of when it is told
MS_PER_S = 1000


# =========================================================================== the sender (in the namespace)

def read_frames(path: str) -> tuple[bytes, list[int], list[int], list[float]]:
    """A classic pcap file's records: (the file's bytes, each frame's offset and length,
    each frame's capture time in seconds after the first's)."""
    data = Path(path).read_bytes()
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise ValueError(f"{path}: not a classic pcap file (magic {magic.hex()})")
    unit = 1e-9 if magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d") else 1e-6
    rec = struct.Struct(endian + "IIII")
    offsets, lengths, times = [], [], []
    pos, t0 = 24, None
    while pos + 16 <= len(data):
        sec, frac, incl, _ = rec.unpack_from(data, pos)
        t = sec + frac * unit
        t0 = t if t0 is None else t0
        offsets.append(pos + 16)
        lengths.append(incl)
        times.append(t - t0)
        pos += 16 + incl
    return data, offsets, lengths, times


def send_frames(sock: socket.socket, data: bytes, offsets: list[int], lengths: list[int], times: list[float],
                start: float) -> dict:
    """Every frame no earlier than ``start`` + its time (monotonic clock); at each wake all
    the frames due, then a sleep until the next is due, at least 1 ms."""
    view = memoryview(data)
    n = len(offsets)
    i = errors = batches = 0
    max_behind = 0.0
    while i < n:
        now = time.monotonic()
        due = start + times[i]
        if due > now:
            time.sleep(max(due - now, 0.001))
            continue
        batches += 1
        max_behind = max(max_behind, now - due)         # the oldest frame of this wake waited longest
        while i < n and start + times[i] <= now:
            try:
                sock.send(view[offsets[i]:offsets[i] + lengths[i]])
            except OSError:
                errors += 1
            i += 1
    behind = time.monotonic() - (start + times[-1]) if n else 0.0
    return {"frames": n, "errors": errors, "batches": batches, "behind_s": behind,
            "max_behind_s": max(max_behind, behind)}


def send_main(argv: list[str]) -> int:
    """``live_capacity.py send IFACE CAPTURE``: load, say ``ready N``, read the start time
    (monotonic seconds) from stdin, send, print the result as JSON."""
    iface, capture = argv
    data, offsets, lengths, times = read_frames(capture)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((iface, 0))
    print(f"ready {len(offsets)}", flush=True)
    start = float(sys.stdin.readline())
    c0 = resource.getrusage(resource.RUSAGE_SELF)
    out = send_frames(sock, data, offsets, lengths, times, start)
    c1 = resource.getrusage(resource.RUSAGE_SELF)
    out["cpu_s"] = (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)
    out["span_s"] = times[-1] if times else 0.0
    print(json.dumps(out), flush=True)
    return 0


# =========================================================================== the namespace and veth

def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r


class Veth:
    """A network namespace of our own, ``ns``, and a veth pair: ``capture`` up in the
    root namespace, ``peer`` up in ``ns``.  IPv6 is off on both ends, so that nothing
    but the sender's frames crosses.  ``close`` removes both (and is safe to repeat)."""

    def __init__(self, tag: str) -> None:
        self.ns = f"r2wlb{tag}"
        self.capture = f"r2wlb{tag}"
        self.peer = f"r2wlbp{tag}"
        self.made = False

    def open(self) -> Veth:
        ip("netns", "add", self.ns)
        self.made = True
        ip("link", "add", self.capture, "type", "veth", "peer", "name", self.peer, "netns", self.ns)
        for cmd in (["sysctl", "-qw", f"net.ipv6.conf.{self.capture}.disable_ipv6=1"],
                    ["ip", "netns", "exec", self.ns, "sysctl", "-qw", f"net.ipv6.conf.{self.peer}.disable_ipv6=1"]):
            subprocess.run(cmd, capture_output=True, timeout=30)           # best effort
        ip("link", "set", self.capture, "up")
        ip("-n", self.ns, "link", "set", self.peer, "up")
        ip("-n", self.ns, "link", "set", "lo", "up")
        return self

    def close(self) -> None:
        if self.made:
            ip("link", "del", self.capture, check=False)
            ip("netns", "del", self.ns, check=False)
            self.made = False

    def counters(self) -> dict:
        """The capture end's receive counters (``/sys/class/net``)."""
        out = {}
        for name in ("rx_packets", "rx_dropped"):
            try:
                out[name] = int(Path(f"/sys/class/net/{self.capture}/statistics/{name}").read_text())
            except (OSError, ValueError):
                out[name] = None
        return out


class SinkHost:
    """``--remote-sink``: the analysis server on a host of its own, as in production.  A
    second namespace, ``ns`` (``r2wsk<tag>``), reached from the root namespace over a veth
    pair (``root`` 10.211.0.1/30, ``peer`` 10.211.0.2/30 inside).  The sink listens on the
    peer and runs on ``cpus`` (taskset), and so does the receiving side's kernel work:
    Receive Packet Steering on the peer's queue hands each segment the pipeline writes to
    those CPUs.  On loopback that work (TCP receive, socket look-up, waking the sink) runs
    in the writer's system call and is charged to the pipeline: about a third of
    rtp2ws's CPU at 20 ms frames.  The pipeline itself runs on the other CPUs (see
    ``Pinning``), so whatever it is charged is its own."""

    ROOT_IP, PEER_IP = "10.211.0.1", "10.211.0.2"

    def __init__(self, tag: str, cpus: list[int]) -> None:
        self.ns = f"r2wsk{tag}"
        self.root = f"r2wsk{tag}"
        self.peer = f"r2wskp{tag}"
        self.cpus = cpus
        self.made = False

    def open(self) -> SinkHost:
        ip("netns", "add", self.ns)
        self.made = True
        ip("link", "add", self.root, "type", "veth", "peer", "name", self.peer, "netns", self.ns)
        ip("addr", "add", f"{self.ROOT_IP}/30", "dev", self.root)
        ip("-n", self.ns, "addr", "add", f"{self.PEER_IP}/30", "dev", self.peer)
        ip("link", "set", self.root, "up")
        ip("-n", self.ns, "link", "set", self.peer, "up")
        ip("-n", self.ns, "link", "set", "lo", "up")
        mask = format(sum(1 << c for c in self.cpus), "x")
        r = subprocess.run(["ip", "netns", "exec", self.ns, "sh", "-c",
                            f"echo {mask} > /sys/class/net/{self.peer}/queues/rx-0/rps_cpus"],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise RuntimeError(f"RPS on {self.peer}: {r.stderr.strip()}")
        return self

    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.ns, "taskset", "-c", ",".join(map(str, self.cpus))]

    def close(self) -> None:
        if self.made:
            ip("link", "del", self.root, check=False)
            ip("netns", "del", self.ns, check=False)
            self.made = False


# =========================================================================== processes and CPU

def _stat(path: str) -> list[str] | None:
    """A /proc stat file's fields from field 3 (state) on, or None once it is gone."""
    try:
        with open(path) as f:
            return f.read().rpartition(")")[2].split()
    except OSError:
        return None


def tree_cpu_s(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of ``pid`` and all its descendants, alive or reaped by
    one of them (``/proc/*/stat``: utime + cutime, stime + cstime)."""
    tck = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    ticks: dict[int, tuple[int, int]] = {}
    for name in os.listdir("/proc"):
        fields = _stat(f"/proc/{name}/stat") if name.isdigit() else None
        if fields is None:
            continue
        p = int(name)
        children.setdefault(int(fields[1]), []).append(p)
        ticks[p] = (int(fields[11]) + int(fields[13]), int(fields[12]) + int(fields[14]))
    user = system = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        u, k = ticks.get(p, (0, 0))
        user, system = user + u, system + k
        todo += children.get(p, [])
    return user / tck, system / tck


def thread_cpu_s(pid: int) -> dict[int, tuple[str, float, float]]:
    """Each thread of ``pid``: (its name, user and system CPU seconds so far)."""
    tck = os.sysconf("SC_CLK_TCK")
    out = {}
    for name in os.listdir(f"/proc/{pid}/task") if os.path.isdir(f"/proc/{pid}/task") else ():
        fields = _stat(f"/proc/{pid}/task/{name}/stat")
        try:
            comm = Path(f"/proc/{pid}/task/{name}/comm").read_text().strip()
        except OSError:
            continue
        if fields is not None:
            out[int(name)] = (comm, int(fields[11]) / tck, int(fields[12]) / tck)
    return out


class Child:
    """A process of ours; its stderr collected by a thread, stdout read at the end."""

    def __init__(self, cmd: list[str], **kw) -> None:
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
        self.err: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.err.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self.err)

    def wait_for(self, text: str, timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.stderr:
            if self.proc.poll() is not None:
                self._reader.join(2)
                raise RuntimeError(f"{self.cmd[2:4]} exited with {self.proc.returncode}: {self.stderr[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{text!r} not seen within {timeout:g} s: {self.stderr[-2000:]}")
            time.sleep(0.02)

    def stop(self, timeout: float = 60.0) -> str:
        """SIGTERM; its stdout once it ended."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{self.cmd[2:4]} did not end within {timeout:g} s of SIGTERM") from None
        self._reader.join(5)
        return out


class Sender:
    """``send_main`` in the namespace, on the peer."""

    def __init__(self, veth: Veth, capture: str, cpus: list[int] | None = None) -> None:
        pin = ["taskset", "-c", ",".join(map(str, cpus))] if cpus else []
        self.proc = subprocess.Popen(["ip", "netns", "exec", veth.ns, *pin, PY, str(Path(__file__).resolve()),
                                      "send", veth.peer, capture],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("ready"):
            end(self.proc)
            raise RuntimeError(f"the sender did not start: {line!r}")
        self.frames = int(line.split()[1])

    def go(self, start: float) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{start!r}\n")
        self.proc.stdin.flush()

    def result(self, timeout: float) -> dict:
        out, _ = self.proc.communicate(timeout=timeout)
        if self.proc.returncode != 0:
            raise RuntimeError(f"the sender exited with {self.proc.returncode}")
        return json.loads(out.strip().splitlines()[-1])


# =========================================================================== one pipeline's run

SUMMARY = re.compile(r"(?P<packets>\d+) packets captured, (?P<kernel_drops>\d+) dropped by the kernel, "
                     r"(?P<interface_drops>\d+) by the interface; (?P<calls>\d+) calls, (?P<legs>\d+) legs with audio")
STREAMS = re.compile(r"streamed (?P<streams>\d+) streams, (?P<reconnects>\d+) reconnects, "
                     r"(?P<dropped_ms>\d+) ms dropped, (?P<undelivered_ms>\d+) ms undelivered")


def parse_summary(out: str) -> dict:
    """``rtp2ws live``'s summary line (stdout) as numbers."""
    m = SUMMARY.search(out)
    if m is None:
        raise RuntimeError(f"no summary line in rtp2ws's output: {out!r}")
    got = {k: int(v) for k, v in m.groupdict().items()}
    s = STREAMS.search(out)
    if s is not None:
        got.update({k: int(v) for k, v in s.groupdict().items()})
    return got


def run_pipeline(name: str, cmd: list[str], veth: Veth, capture: str, info: dict, settle: float,
                 children: list, frame_ms: int = 20, host: SinkHost | None = None,
                 cpus: list[int] | None = None) -> dict:
    """One pipeline on the interface, fed by the sender, into a discard sink of its own
    (on loopback, or behind ``host``; then the pipeline runs on ``cpus``, the sender and
    the sink on the host's)."""
    from rtp2ws.bench.discard import SinkProcess
    from rtp2ws.bench.harness import process_cpu_s

    if host is None:
        sink = SinkProcess("discard")
    else:
        sink = SinkProcess("discard", listen=f"{host.PEER_IP}:0", prefix=host.prefix())
    children.append(sink)
    try:
        cmd = [c.replace("{url}", sink.url) for c in cmd]
        if cpus is not None:
            cmd = ["taskset", "-c", ",".join(map(str, cpus)), *cmd]
        sender = Sender(veth, capture, host.cpus if host is not None else None)
        children.append(sender)
        proc = Child(cmd)
        children.append(proc)
        proc.wait_for("capturing on")
        affinity = sorted(os.sched_getaffinity(proc.proc.pid))
        rx0 = veth.counters()
        start = time.monotonic() + LEAD_S
        sender.go(start)
        time.sleep(max(start - time.monotonic(), 0.0))
        t0, c0, s0 = time.monotonic(), tree_cpu_s(proc.proc.pid), process_cpu_s(sink.proc.pid)
        th0 = thread_cpu_s(proc.proc.pid)
        sent = sender.result(timeout=info["last_ts"] - info["first_ts"] + 120)
        time.sleep(settle)
        t1, c1, s1 = time.monotonic(), tree_cpu_s(proc.proc.pid), process_cpu_s(sink.proc.pid)
        th1 = thread_cpu_s(proc.proc.pid)
        rx1 = veth.counters()
        out = proc.stop()
    finally:
        sink_stats = sink.stop()
    got = parse_summary(out) if name == "rtp2ws" else json.loads(out.strip().splitlines()[-1])
    calls, seconds = info["calls"], info["seconds"]
    expected = calls * 2 * round(seconds * MS_PER_S / frame_ms)     # frames per leg
    user, system = c1[0] - c0[0], c1[1] - c0[1]
    cpu = user + system
    # the main process's threads over the window, in the order they were made (a diagnosis)
    threads = [[tid, comm, round(u - th0.get(tid, ("", 0.0, 0.0))[1], 2), round(k - th0.get(tid, ("", 0.0, 0.0))[2], 2)]
               for tid, (comm, u, k) in sorted(th1.items())]
    sink_frames = (sink_stats or {}).get("binary")
    drops = {k: got.get(k) for k in ("kernel_drops", "interface_drops") if k in got}
    carried = (not any(drops.values()) and sink_frames == expected and sent["errors"] == 0
               and sent["behind_s"] <= behind_limit())
    raw = calls * seconds / cpu if cpu > 0 else None
    return {
        "pipeline": name, "command": cmd, "calls": calls, "seconds": seconds,
        "window_s": t1 - t0, "cpu_s": cpu, "cpu_user_s": user, "cpu_sys_s": system, "cpu_total_s": sum(c1),
        "core_load": cpu / (t1 - t0), "threads": threads, "affinity": affinity,
        "calls_per_core": raw if carried else None, "calls_per_core_raw": raw, "carried": carried,
        **drops, "captured_packets": got.get("packets") if name == "rtp2ws" else got.get("pcap_received"),
        "pipeline_calls": got.get("calls"), "pipeline_legs": got.get("legs"),
        "sent_frames": got.get("sent_frames"), "expected_frames": expected, "sink_frames": sink_frames,
        "sink": dict(sink_stats or {}, cpu_s=(s1 - s0) if s0 is not None and s1 is not None else None),
        "sender": sent, "veth": {k: (rx1[k] - rx0[k]) if rx1[k] is not None and rx0[k] is not None else None
                                 for k in rx0},
        "summary": got, "exit_code": proc.proc.returncode, "stderr_tail": proc.stderr[-1500:],
    }


def end(proc: subprocess.Popen) -> None:
    """SIGTERM (rtp2ws's supervisor then stops its workers), SIGKILL after 10 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def behind_limit() -> float:
    from rtp2ws.bench.harness import BEHIND_LIMIT_S

    return BEHIND_LIMIT_S


# =========================================================================== the benchmark

def line(e: dict) -> str:
    figure = f"{e['calls_per_core']:8.0f}" if e["calls_per_core"] else "       -"
    drops = ", ".join(f"{k} {e[k]}" for k in ("kernel_drops", "interface_drops") if k in e)
    s = e["sender"]
    return (f"  {e['pipeline']:<10} {figure} calls per core  {e['cpu_s']:6.2f} s CPU ({e['cpu_sys_s']:.2f} sys) "
            f"over {e['window_s']:.1f} s "
            f"({e['core_load']:.2f} of a core)  {drops}  sink frames {e['sink_frames']}/{e['expected_frames']}  "
            f"sender ended {s['behind_s'] * 1000:.1f} ms behind (worst {s['max_behind_s'] * 1000:.1f} ms)"
            + ("" if e["carried"] else f"  NOT CARRIED (raw {e['calls_per_core_raw']:.0f})"))


def run(args: argparse.Namespace) -> dict:
    from rtp2ws.bench.harness import cached_capture
    from rtp2ws.bench.report import git_commit, machine_info

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    capture, info = cached_capture(Path(args.cache or out_dir / "captures"), args.calls, args.seconds,
                                   loss=0.0, reorder=0.0, seed=1, law="alaw")
    veth = Veth(str(os.getpid()))
    host = cpus = None
    if args.remote_sink:
        ncpu = len(os.sched_getaffinity(0))
        if args.workers >= ncpu:
            raise SystemExit(f"--remote-sink: --workers {args.workers} leaves none of the {ncpu} CPUs to the sink")
        every = sorted(os.sched_getaffinity(0))
        cpus = every[:args.workers]
        host = SinkHost(str(os.getpid()), every[args.workers:])
    children: list = []
    doc: dict = {"version": 1, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine_info(),
                 "commit": git_commit(), "calls": args.calls, "seconds": info["seconds"], "workers": args.workers,
                 "settle_s": args.settle, "frame_ms": args.frame_ms, "rtp2ws_args": args.rtp2ws_args, "capture": capture, "capture_packets": info["packets"],
                 "netns": veth.ns, "interface": veth.capture, "peer": veth.peer,
                 "remote_sink": None if host is None else {"netns": host.ns, "sink_cpus": host.cpus,
                                                           "pipeline_cpus": cpus},
                 "cpu_window": "from the sender's first frame to --settle seconds after its last"}
    print(f"live capacity: {args.calls} calls x {info['seconds']:g} s, {info['packets']} frames, on veth "
          f"{veth.capture} (peer {veth.peer} in namespace {veth.ns})", file=sys.stderr, flush=True)
    if host is not None:
        print(f"  the sink and the sender on CPUs {host.cpus} (sink in namespace {host.ns}, its receive work "
              f"steered there), the pipeline on CPUs {cpus}", file=sys.stderr, flush=True)
    try:
        veth.open()
        if host is not None:
            host.open()
        runs = [("rtp2ws", [PY, "-m", "rtp2ws.cli", "live", "-i", veth.capture, "--ws-url", "{url}",
                            "--workers", str(args.workers), "--frame-ms", str(args.frame_ms), "--flush-ms",
                            str(args.frame_ms), *shlex.split(args.rtp2ws_args)], args.frame_ms)]
        if args.reference:
            runs.append(("reference", [PY, str(ROOT / "benchmarks" / "reference_pipeline.py"), "--live",
                                       veth.capture, "--ws-url", "{url}"], 20))
        doc["runs"] = []
        for _ in range(args.repeat):
            one: dict = {}
            for name, cmd, frame_ms in runs:
                e = run_pipeline(name, cmd, veth, capture, info, args.settle, children, frame_ms, host, cpus)
                one[name] = e
                print(line(e), file=sys.stderr, flush=True)
            mine, theirs = one["rtp2ws"]["calls_per_core"], (one.get("reference") or {}).get("calls_per_core")
            one["ratio"] = mine / theirs if mine and theirs else None
            doc["runs"].append(one)
    finally:
        for c in reversed(children):      # what is still running after an error or SIGINT
            end(c.proc)
        veth.close()
        if host is not None:
            host.close()
    # the run whose rtp2ws figure is the median (with --repeat 1, the one run) stands for them all
    ranked = sorted(doc["runs"], key=lambda one: one["rtp2ws"]["calls_per_core_raw"] or 0.0)
    median = ranked[(len(ranked) - 1) // 2]
    doc["rtp2ws"], doc["ratio"] = median["rtp2ws"], median["ratio"]
    if "reference" in median:
        doc["reference"] = median["reference"]
    if args.repeat > 1:
        figures = ", ".join(f"{one['rtp2ws']['calls_per_core']:.0f}" if one["rtp2ws"]["calls_per_core"] else "-"
                            for one in doc["runs"])
        print(f"  rtp2ws calls per core over {args.repeat} runs: {figures}; the median run's stands", file=sys.stderr,
              flush=True)
    if args.reference:
        ratios = [one["ratio"] for one in doc["runs"]]
        r = f"{doc['ratio']:.2f}x" if doc["ratio"] else "- (a run did not carry the load)"
        each = f" (each run: {', '.join(f'{x:.2f}x' if x else '-' for x in ratios)})" if args.repeat > 1 else ""
        print(f"  rtp2ws / reference at live realtime = {r}{each}", file=sys.stderr, flush=True)
    path = out_dir / "live_capacity.json"
    path.write_text(json.dumps(doc, indent=1))
    print(f"  results: {path}", file=sys.stderr, flush=True)
    return doc


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["send"]:
        return send_main(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=20.0, help="call length")
    ap.add_argument("--workers", type=int, default=1, help="rtp2ws live --workers")
    ap.add_argument("--frame-ms", type=int, default=20,
                    help="rtp2ws's --frame-ms and --flush-ms (the reference always sends 20 ms frames)")
    ap.add_argument("--rtp2ws-args", default="",
                    help="more options for rtp2ws live, one string (e.g. \"--frame-ms 100 --flush-ms 100\")")
    ap.add_argument("--no-reference", dest="reference", action="store_false", help="rtp2ws only")
    ap.add_argument("--remote-sink", action="store_true",
                    help="the sink behind a veth pair in a namespace of its own, its receive work and the "
                         "sender on the last CPUs, each pipeline pinned to the first --workers CPUs (as a "
                         "sidecar streaming to another host); default: the sink on loopback, nothing pinned")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run each pipeline this many times, alternating (rtp2ws, reference, rtp2ws, ...); the "
                         "run with the median rtp2ws figure stands (this machine's noise: 1,180-1,530 in a day)")
    ap.add_argument("--settle", type=float, default=1.0,
                    help="seconds after the sender's end before the SIGTERM, counted (the calls' ends)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "live"))
    ap.add_argument("--cache", help="captures (default OUT/captures)")
    args = ap.parse_args(argv)
    if args.repeat < 1:
        ap.error("--repeat: at least 1")
    if os.geteuid() != 0:
        ap.error("needs root (a network namespace, a veth pair, AF_PACKET)")
    # the children (rtp2ws, the sink, the reference) import this checkout's package
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))
    # SIGTERM as SIGINT: the namespace and the veth go in run's finally either way
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        run(args)
    except KeyboardInterrupt:
        print("live_capacity: interrupted; its processes ended, the namespace and the veth removed", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
