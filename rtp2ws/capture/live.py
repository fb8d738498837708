"""Live capture adapter: a network interface in, ``(timestamp, frame)`` batches out.

The live twin of ``capture.CaptureFile``: libpcap (through pypcap) reads the
interface in a thread of its own, and batches reach the decoder through a
bounded queue.  No decoding here.

Threads and the GIL.  pypcap's ``dispatch`` calls ``pcap_dispatch`` without
releasing the GIL, and with libpcap 1.10 on Linux a blocking ``pcap_dispatch``
on an idle interface does not return at the read timeout (it polls the ring
without one): the whole process would freeze, signal handlers included.  So the
handle is non-blocking: the thread waits in ``select`` (which releases the GIL)
and ``dispatch`` only takes what the ring already holds, at most
``batch_packets`` at a time; each packet costs one short Python callback, and
the interpreter can switch to the decoder between callbacks.

Never blocking on the decoder.  A batch goes on the queue when the ring is
empty or the batch is full.  While the queue is full the pending batch keeps
growing (fewer, larger batches while the decoder catches up); once it is full
too, it is dropped and its packets counted in ``overflow_packets``.  Memory is
therefore bounded by ``(queue_batches + 1) * batch_packets`` frames.

Waking no more than the consumer needs.  ``hold_until`` (wall-clock time, set by
the consumer) tells the thread that packets are of no use before then: once the
ring is empty it sleeps until that time (at most ``poll_s``) instead of waking for
every packet, and then takes them all as one batch.  Live decoding sets it to the
next hand-out (``--flush-ms``): with 200 calls that is one wake per 20 ms instead
of one for nearly every packet.  The ring holds what comes meanwhile.  Between
handing a batch over and the consumer's next word, the thread assumes the consumer
wants the next one ``poll_s`` later, as long as its last word was a hold at all
(else the first packet after the batch would wake it again, the consumer being
busy with the batch).

Only the capture thread touches the pcap handle (dispatch, stats, close): the
kernel counters are read there every second, and once more when it stops.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pcap

from ..net.packet import DLT_EN10MB
from ..speedups import load_native

__all__ = ["CaptureOpenError", "LiveCapture", "build_bpf", "drop_privileges", "parse_port_range", "parse_ports"]

log = logging.getLogger("rtp2ws.capture")

STATS_EVERY_S = 1.0          # the capture thread reads the kernel counters this often
U32 = 1 << 32                # libpcap's counters are 32-bit and wrap

# Link types on which the default filter also matches inside 802.1Q/802.1ad tags.  libpcap
# compiles ``vlan`` for Ethernet (and 802.11 links, which the decoder does not read) and
# refuses it elsewhere ("no VLAN support for Linux cooked v1").  On Linux cooked captures
# (``-i any``) the kernel has already taken a received frame's tag off, so the filter
# without ``vlan`` matches it; libpcap puts the tag back into a v1 frame for the decoder.
VLAN_LINKTYPES = frozenset((DLT_EN10MB,))

CAP_NET_RAW_HINT = ("run as root, or give the program CAP_NET_RAW: e.g. `setcap cap_net_raw+ep` on the "
                    "Python interpreter, or AmbientCapabilities=CAP_NET_RAW in the systemd unit")


class CaptureOpenError(Exception):
    """The interface cannot be captured on (missing, no permission, bad filter)."""


# --------------------------------------------------------------------------- filter

def parse_ports(text) -> tuple[int, ...]:
    """``"5060,5080"`` (or a list of ints) → (5060, 5080)."""
    items = text if isinstance(text, (list, tuple)) else [p for p in str(text).split(",") if p.strip()]
    out = []
    for item in items:
        if isinstance(item, bool):
            raise ValueError(f"invalid port {item!r}")
        try:
            port = int(str(item).strip())
        except ValueError:
            raise ValueError(f"invalid port {str(item).strip()!r}") from None
        if not 1 <= port <= 65535:
            raise ValueError(f"port {port} out of range 1..65535")
        out.append(port)
    if not out:
        raise ValueError("no port given")
    return tuple(out)


def parse_port_range(text) -> tuple[int, int]:
    """``"16384-32768"`` (or [16384, 32768]) → (16384, 32768)."""
    if isinstance(text, (list, tuple)):
        parts = list(text)
    else:
        parts = str(text).split("-")
    if len(parts) != 2:
        raise ValueError(f"port range must be LOW-HIGH, not {text!r}")
    lo, hi = parse_ports(parts)
    if lo > hi:
        raise ValueError(f"port range {lo}-{hi} is empty")
    return lo, hi


def build_bpf(sip_ports=(5060, 5080), rtp_ports=(16384, 32768), sip_tcp: bool = True,
              linktype: int = DLT_EN10MB) -> str:
    """A tcpdump-syntax filter for SIP (UDP, and TCP if ``sip_tcp``) and RTP,
    either direction, plus IP fragments (IPv4 non-first fragments carry no UDP
    header, IPv6 fragments hide it behind header 44), for a capture of
    ``linktype``: untagged and 802.1Q on Ethernet, without ``vlan`` elsewhere
    (see ``VLAN_LINKTYPES``)."""
    sip_ports = parse_ports(sip_ports)
    lo, hi = parse_port_range(rtp_ports)
    sip = " or ".join(f"port {p}" for p in sip_ports)
    rtp = f"portrange {lo}-{hi}" if lo != hi else f"port {lo}"
    parts = [f"(udp and ({sip} or {rtp}))"]
    if sip_tcp:
        parts.append(f"(tcp and ({sip}))")
    parts.append("(ip and (ip[6:2] & 0x1fff) != 0)")     # IPv4 fragment, not the first
    parts.append("(ip6 and ip6[6] == 44)")                # IPv6 fragment header right after the fixed one
    base = " or ".join(parts)
    if linktype not in VLAN_LINKTYPES:
        return base
    # ``vlan`` shifts every later offset by 4 bytes, so it comes last.
    return f"({base}) or (vlan and ({base}))"


# --------------------------------------------------------------------------- capture

def _open_error(interface: str, message: str) -> CaptureOpenError:
    low = message.lower()
    try:
        socket.if_nametoindex(interface)
        exists = True
    except OSError:
        exists = interface == "any"
    if not exists or "no such device" in low:
        return CaptureOpenError(f"{interface}: no such network interface (see `ip link`)")
    if "permission" in low or "not permitted" in low:
        return CaptureOpenError(f"{interface}: no permission to capture: {CAP_NET_RAW_HINT}")
    if "activateing" in low or "activating" in low:   # pypcap's prefix around libpcap's message
        message = message.split("was ", 1)[-1]
    return CaptureOpenError(f"{interface}: cannot capture: {message}")


class CollectorPy:
    """pypcap's dispatch callback: ``(ts, frame)`` appended to ``batch``, the bytes
    counted (``take_bytes``).  The twin of ``_fastpath.Collector``, which does the same
    without a Python frame per packet."""

    __slots__ = ("batch", "_bytes")

    def __init__(self, batch: list) -> None:
        self.batch = batch
        self._bytes = 0

    def __call__(self, ts: float, frame: bytes, *_: object) -> None:
        self.batch.append((ts, frame))
        self._bytes += len(frame)

    def take_bytes(self) -> int:
        n, self._bytes = self._bytes, 0
        return n


_native = load_native("_fastpath")      # the C collector is in the fast path's extension
Collector = _native.Collector if _native is not None else CollectorPy


class LiveCapture:
    """Capture ``interface`` in a daemon thread; read batches with ``get``/``batches``.

    ``bpf`` is the filter, or a function of the opened handle's link type that
    returns it (``build_bpf``'s depends on the link type); ``self.bpf`` is the
    filter applied."""

    def __init__(self, interface: str, *, bpf: str | Callable[[int], str], snaplen: int = 65535, buffer_mb: int = 64,
                 promisc: bool = True, immediate: bool = True, queue_batches: int = 64,
                 batch_packets: int = 2048, poll_s: float = 0.02) -> None:
        if queue_batches < 1 or batch_packets < 1:
            raise ValueError("queue_batches and batch_packets must be at least 1")
        if not 0 < snaplen <= 262144:
            raise ValueError("snaplen must be 1..262144")
        if buffer_mb < 1:
            raise ValueError("buffer_mb must be at least 1")
        self.interface = interface
        self.batch_packets = batch_packets
        self.poll_s = poll_s
        try:
            self._pcap = pcap.pcap(name=interface, snaplen=snaplen, promisc=promisc, immediate=immediate,
                                   timeout_ms=100, buffer_size=buffer_mb << 20)
        except OSError as e:
            raise _open_error(interface, str(e)) from None
        if callable(bpf):
            bpf = bpf(self._pcap.datalink())
        self.bpf: str = bpf
        try:
            self._pcap.setfilter(bpf)
        except OSError as e:
            self._pcap.close()
            msg = e.args[0] if e.args else str(e)
            if isinstance(msg, bytes):
                msg = msg.decode("utf-8", "replace")
            raise CaptureOpenError(f"invalid capture filter {bpf!r}: {msg}") from None
        self._pcap.setnonblock(True)
        self.linktype: int = self._pcap.datalink()
        self._queue: queue.Queue = queue.Queue(maxsize=queue_batches)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        # capture thread writes, anyone reads (plain ints, or under _lock)
        self.packets = 0
        self.bytes = 0
        self.overflow_packets = 0
        self.overflow_batches = 0
        self.batches_handed = 0           # queued for the consumer
        self.error: str | None = None
        self._kernel = {"recv": 0, "drop": 0, "ifdrop": 0}   # 64-bit totals, under _lock
        self._raw: tuple[int, int, int] | None = None
        # Wall-clock time before which every captured packet has been queued:
        # with an empty queue, a decoder may run its timers up to here.
        self._drained_until = time.time()
        # Wall-clock time before which the consumer has no use for packets (any thread
        # writes it, the capture thread reads it: a plain float)
        self.hold_until = float("-inf")
        self._read_stats()

    def __repr__(self) -> str:
        return f"LiveCapture({self.interface!r}, linktype={self.linktype}, {self.packets} packets)"

    # -- consumer side ------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("capture already started")
        self._thread = threading.Thread(target=self._run, name=f"capture-{self.interface}", daemon=True)
        self._thread.start()

    @property
    def started(self) -> bool:
        return self._thread is not None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def get(self, timeout: float) -> list | None:
        """The next batch; ``[]`` after ``timeout`` seconds without one; None once
        the capture has stopped and everything it captured has been taken."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            if not self.running:
                try:
                    return self._queue.get_nowait()
                except queue.Empty:
                    return None
            return []

    def batches(self, timeout: float = 0.02) -> Iterator[list]:
        """Batches of ``(ts, frame)``; an empty list on timeout, so the consumer can
        run its timers.  Ends when the capture has stopped and is drained."""
        while True:
            batch = self.get(timeout)
            if batch is None:
                return
            yield batch

    def clock(self) -> float | None:
        """A time up to which timers may run: every packet stamped before it has
        been handed out.  None while a batch waits in the queue (take it first)."""
        until = self._drained_until
        if not self.running:
            until = max(until, time.time())
        if not self._queue.empty():
            return None
        return until

    def stats(self) -> dict:
        with self._lock:
            k = dict(self._kernel)
        return {
            "packets": self.packets,
            "bytes": self.bytes,
            "kernel_received": k["recv"],
            "kernel_drops": k["drop"],
            "interface_drops": k["ifdrop"],
            "overflow_packets": self.overflow_packets,
            "overflow_batches": self.overflow_batches,
            "batches_handed": self.batches_handed,
            "queued_batches": self._queue.qsize(),
            "running": self.running,
            "error": self.error,
        }

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (it closes the handle).  Queued batches stay readable."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        elif self._pcap is not None:
            self._pcap.close()
            self._pcap = None

    def __enter__(self) -> LiveCapture:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- capture thread -----------------------------------------------------------

    def _read_stats(self) -> None:
        try:
            raw = self._pcap.stats()
        except OSError:
            return
        with self._lock:
            if self._raw is not None:
                for key, new, old in zip(("recv", "drop", "ifdrop"), raw, self._raw, strict=True):
                    self._kernel[key] += (new - old) % U32
            else:
                self._kernel = dict(zip(("recv", "drop", "ifdrop"), raw, strict=True))
            self._raw = tuple(raw)

    def _run(self) -> None:
        p = self._pcap
        fd = p.fileno()
        limit = self.batch_packets
        pending: list = []
        collect = Collector(pending)

        next_stats = time.monotonic() + STATS_EVERY_S
        try:
            while not self._stop.is_set():
                mark = time.time()
                hold = self.hold_until - mark
                if hold > 0 and not pending:
                    # nothing wanted before then: let the ring gather it (releases the GIL)
                    self._stop.wait(min(hold, self.poll_s))
                    continue
                before = len(pending)
                n = p.dispatch(limit - before, collect)
                if n < 0:
                    err = p.geterr()
                    self.error = err.decode("utf-8", "replace") if isinstance(err, bytes) else str(err)
                    log.error("%s: capture failed: %s", self.interface, self.error)
                    break
                got = len(pending) - before
                if got:
                    self.packets += got
                    self.bytes += collect.take_bytes()
                drained = got < limit - before      # dispatch took all the ring held
                if drained or len(pending) >= limit:
                    # the ring is empty, or the batch is full: hand it over
                    if pending and drained and self.hold_until != float("-inf"):
                        # hold until the consumer says (before it can see the batch and say)
                        self.hold_until = max(self.hold_until, mark + self.poll_s)
                    if pending and self._push(pending):
                        pending = collect.batch = []
                    if not pending and drained:
                        self._drained_until = mark
                t = time.monotonic()
                if t >= next_stats:
                    self._read_stats()
                    next_stats = t + STATS_EVERY_S
                if got == 0 or pending:
                    try:
                        select.select([fd], [], [], self.poll_s)   # releases the GIL
                    except InterruptedError:
                        pass
                    except OSError as e:
                        if e.errno != errno.EINTR:
                            raise
        except Exception as e:
            self.error = f"{type(e).__name__}: {e}"
            log.exception("%s: capture thread failed", self.interface)
        finally:
            if pending:
                self._push(pending, final=True)
            self._read_stats()
            p.close()
            self._pcap = None

    def _push(self, batch: list, final: bool = False) -> bool:
        """True when the batch was queued or dropped, False when kept to grow."""
        try:
            self._queue.put_nowait(batch)
            self.batches_handed += 1
            return True
        except queue.Full:
            if len(batch) < self.batch_packets and not final:
                return False
            self.overflow_packets += len(batch)
            self.overflow_batches += 1
            return True


# --------------------------------------------------------------------------- privileges

def drop_privileges(user: str) -> tuple[int, int]:
    """Switch to ``user`` (its primary group and supplementary groups), like
    ``tcpdump -Z``: call after the capture is open.  Returns (uid, gid)."""
    import pwd

    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise PermissionError(f"--user {user}: no such user") from None
    if os.geteuid() != 0:
        if os.geteuid() == pw.pw_uid:
            return pw.pw_uid, pw.pw_gid
        raise PermissionError(f"--user {user}: only root can switch to another user "
                              f"(running as uid {os.geteuid()})")
    try:
        os.initgroups(pw.pw_name, pw.pw_gid)
    except OSError:
        os.setgroups([])
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)
    if os.getuid() != pw.pw_uid or os.geteuid() != pw.pw_uid:
        raise PermissionError(f"--user {user}: could not drop privileges")
    try:
        os.setuid(0)
    except OSError:
        pass
    else:
        raise PermissionError(f"--user {user}: root privileges could be regained")
    return pw.pw_uid, pw.pw_gid
