"""Live capture adapter: a network interface in, packets read by the decoder itself.

The live twin of ``capture.file``: libpcap opens the interface (buffered mode,
non-blocking, ``--buffer-mb`` of kernel ring) and the decoder's thread reads it
with ``Pipeline.run_reader`` as replay reads a file.  The reader is the C
``_fastpath.LiveReader`` (a ``Reader`` subtype that ``FastPath.run`` reads
directly: in-order RTP on armed flows never becomes a Python object) or its
twin ``LiveReaderPy`` (pypcap); both answer "no packet now" (``waiting``)
distinctly from the end.  No decoding here.

No thread of its own.  A capture thread moving packets from the ring into a
queue of Python batches costs a bytes, a float and a tuple per packet (measured:
a fifth of the live process's CPU at 200 calls), and the kernel's ring is as
good a buffer (64 MiB hold about 12 s of 200 calls' RTP).  What does not fit while
the decoder is busy the kernel drops and counts (``kernel_drops``).

The ring: buffered, not immediate, mode.  On Linux immediate mode means TPACKET_V2,
where each packet takes a slot as big as the snapshot length, and on an interface
with GRO or TSO (a veth, most NICs) libpcap sizes the slot for 64 KiB whatever
``--snaplen`` says about the MTU: 64 MiB held 1,023 packets (measured on a veth),
25 ms of 400 calls, so one hold (below) or one stall of the GIL dropped packets, and
the gaps sent every flow through the slow path: past 300 calls the process fell over.
Buffered mode is TPACKET_V3: packets at their own length in blocks (the same ring
kept all 50,000 of 50,000 214-byte frames sent unread), each block handed over when full or
``RETIRE_MS`` after it opened (measured on loopback, Linux 6.18: a packet is
readable 0.5 ms after capture at the median, 1.1 ms at worst).  So a packet may still
be in the kernel's open block ``CAPTURE_LAG_S`` after its capture time; kernels whose
block timer counts in jiffies (before the hrtimer one) may take a few ms more, which
matters only to a jitter buffer shallower than that (``--jitter-ms`` under 5).

Waiting.  ``LiveCapture.wait(hold, timeout)`` waits in ``select`` on the handle
(releasing the GIL), or, when the caller has no use for packets before ``hold``
(the next hand-out, ``--flush-ms``), sleeps until then and lets the ring gather
them: one wake per hand-out instead of one per packet.

Only the reading thread touches the handle (read, wait, ``poll_stats``, stop): the
kernel counters are read there once a second, and once more when it stops;
``stats()`` may be called from any thread.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

import pcap

from ..net.packet import DLT_EN10MB
from .file import BACKENDS, PacketReader, check_backend, libpcap

__all__ = ["BACKENDS", "CaptureOpenError", "Interface", "LiveCapture", "LiveReaderPy", "build_bpf",
           "describe_interface", "drop_privileges", "find_interfaces", "live_reader_class", "parse_port_range",
           "parse_ports", "resolve_interface"]

log = logging.getLogger("rtp2ws.capture")

STATS_EVERY_S = 1.0          # the reading thread reads the kernel counters this often
RETIRE_MS = 1                # libpcap's buffer timeout: a TPACKET_V3 block is handed over this long after it opened
CAPTURE_LAG_S = 0.002        # a packet is readable at the latest this long after capture (RETIRE_MS and slack)
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


def _text(msg: object) -> str:
    """pypcap's message (bytes, sometimes) as text."""
    return msg.decode("utf-8", "replace") if isinstance(msg, bytes) else str(msg)


class LiveReaderPy(PacketReader):
    """Twin of ``_fastpath.LiveReader``: an interface opened with pypcap (buffered,
    ``RETIRE_MS``, non-blocking), read a packet at a time by ``FastPath.run`` (``rtp2ws.fastpath.twin``)
    in the caller's thread.  ``next_packet`` answers None with ``waiting`` set when the
    kernel's ring holds no packet now; the caller waits on ``fileno()`` and reads again.
    pypcap hands packets over ``BATCH`` at a time (``dispatch``)."""

    BATCH = 256

    def __init__(self, interface: str, snaplen: int = 65535, promisc: bool = True,
                 buffer_size: int = 64 << 20) -> None:
        self._pcap = pcap.pcap(name=interface, snaplen=snaplen, promisc=promisc, immediate=False,
                               timeout_ms=RETIRE_MS, buffer_size=buffer_size)
        self._pcap.setnonblock(True)
        self.linktype: int = self._pcap.datalink()
        self.packets_read = 0
        self.bytes = 0
        self.waiting = False
        self.error = None                 # the capture broke off: libpcap's message, until raise_error
        self._batch: list[tuple[float, bytes]] = []
        self._i = 0
        self._held = None

    @property
    def closed(self) -> bool:
        return self._pcap is None

    def setfilter(self, text: str) -> None:
        if self._pcap is None:
            raise ValueError("the capture is closed")
        try:
            self._pcap.setfilter(text)
        except OSError as e:
            raise OSError(_text(e.args[0] if e.args else str(e))) from None

    def fileno(self) -> int:
        if self._pcap is None:
            raise ValueError("the capture is closed")
        return self._pcap.fileno()

    def stats(self) -> tuple[int, int, int]:
        if self._pcap is None:
            raise ValueError("the capture is closed")
        return tuple(self._pcap.stats())

    def close(self) -> None:
        if self._pcap is not None:
            self._pcap.close()
            self._pcap = None

    def _collect(self, ts: float, frame: bytes, *_: object) -> None:
        self._batch.append((ts, frame))

    def next_packet(self) -> tuple[float, bytes] | None:
        """The next ``(ts, frame)``; None when the ring is empty now (``waiting``), when
        the capture broke off (``error``) or once closed."""
        if self._held is not None:
            item, self._held = self._held, None
            return item
        if self._i >= len(self._batch):
            if self._pcap is None:
                return None
            self._batch = []
            self._i = 0
            n = self._pcap.dispatch(self.BATCH, self._collect)
            if n < 0:
                self.error = _text(self._pcap.geterr())
                return None
            if not self._batch:
                self.waiting = True
                return None
        item = self._batch[self._i]
        self._i += 1
        self.waiting = False
        self.packets_read += 1
        self.bytes += len(item[1])
        return item


def live_reader_class(backend: str | None = None):
    """The live reader of ``backend`` (``native``, ``python``; default: the first of
    ``capture.file.BACKENDS``); ``Pipeline.run_reader`` takes the fast path that goes with it."""
    if check_backend(backend) == "native":
        from .._fastpath import LiveReader  # the C reader is in the fast path's extension

        return LiveReader
    return LiveReaderPy


class LiveCapture:
    """``interface`` open for capture, read in the caller's thread: ``reader`` (the C
    ``LiveReader`` or its twin) goes to ``Pipeline.run_reader``; ``wait`` sleeps until
    the ring has packets, or until a time before which the caller wants none.

    ``bpf`` is the filter, or a function of the opened handle's link type that returns
    it (``build_bpf``'s depends on the link type); ``self.bpf`` is the filter applied.
    Only the reading thread touches the handle (read, wait, ``poll_stats``, ``stop``);
    ``stats()`` may be called from any thread."""

    def __init__(self, interface: str, *, bpf: str | Callable[[int], str], snaplen: int = 65535,
                 buffer_mb: int = 64, promisc: bool = True, backend: str | None = None) -> None:
        if not 0 < snaplen <= 262144:
            raise ValueError("snaplen must be 1..262144")
        if buffer_mb < 1:
            raise ValueError("buffer_mb must be at least 1")
        self.interface = interface
        try:
            self.reader = live_reader_class(backend)(interface, snaplen, promisc, buffer_mb << 20)
        except OSError as e:
            raise _open_error(interface, str(e)) from None
        self.linktype: int = self.reader.linktype
        if callable(bpf):
            bpf = bpf(self.linktype)
        self.bpf: str = bpf
        try:
            self.reader.setfilter(bpf)
        except OSError as e:
            self.reader.close()
            raise CaptureOpenError(f"invalid capture filter {bpf!r}: {e}") from None
        self._fd = self.reader.fileno()
        self.error: str | None = None
        self.stopped = False
        self._lock = threading.Lock()
        self._kernel = {"recv": 0, "drop": 0, "ifdrop": 0}   # 64-bit totals, under _lock
        self._raw: tuple[int, int, int] | None = None
        self._next_stats = time.monotonic() + STATS_EVERY_S
        self.wakes = 0                    # returns from wait()
        self._read_stats()

    def __repr__(self) -> str:
        return f"LiveCapture({self.interface!r}, linktype={self.linktype}, {self.reader.packets_read} packets)"

    @property
    def running(self) -> bool:
        return not self.stopped and self.error is None and not self.reader.closed

    def wait(self, hold: float, timeout: float) -> None:
        """Return once the ring has a packet (at most ``timeout`` seconds), but not
        before wall-clock time ``hold``: the caller has no use for packets before then,
        and the ring gathers them meanwhile (releases the GIL either way)."""
        now = time.time()
        if hold > now:
            time.sleep(min(hold - now, timeout))
        else:
            try:
                select.select([self._fd], [], [], timeout)
            except InterruptedError:
                pass
        self.wakes += 1

    def failed(self, message: str) -> None:
        """The capture broke off (a ``ReadError`` from the reader): nothing more is read."""
        self.error = message
        log.error("%s: capture failed: %s", self.interface, message)

    def poll_stats(self) -> None:
        """Read the kernel's counters if a second has passed since the last time."""
        t = time.monotonic()
        if t >= self._next_stats:
            self._read_stats()
            self._next_stats = t + STATS_EVERY_S

    def stats(self) -> dict:
        with self._lock:
            k = dict(self._kernel)
        r = self.reader
        return {
            "packets": r.packets_read,
            "bytes": r.bytes,
            "kernel_received": k["recv"],
            "kernel_drops": k["drop"],
            "interface_drops": k["ifdrop"],
            "running": self.running,
            "error": self.error,
        }

    def stop(self) -> None:
        """Read the counters a last time and close the handle."""
        if not self.stopped:
            self.stopped = True
            self._read_stats()
            self.reader.close()

    def __enter__(self) -> LiveCapture:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _read_stats(self) -> None:
        try:
            raw = self.reader.stats()
        except (OSError, ValueError):
            return
        with self._lock:
            if self._raw is not None:
                for key, new, old in zip(("recv", "drop", "ifdrop"), raw, self._raw, strict=True):
                    self._kernel[key] += (new - old) % U32
            else:
                self._kernel = dict(zip(("recv", "drop", "ifdrop"), raw, strict=True))
            self._raw = tuple(raw)


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


# --------------------------------------------------------------------------- interfaces

# pcap_if_t.flags (pcap/pcap.h), named as tcpdump -D names them
PCAP_IF_LOOPBACK = 0x1
PCAP_IF_UP = 0x2
PCAP_IF_RUNNING = 0x4
PCAP_IF_WIRELESS = 0x8
PCAP_IF_CONNECTION_STATUS = 0x30
_FLAG_NAMES = ((PCAP_IF_UP, "Up"), (PCAP_IF_RUNNING, "Running"), (PCAP_IF_LOOPBACK, "Loopback"),
               (PCAP_IF_WIRELESS, "Wireless"))
_STATUS = {False: {0x00: "Connection status unknown", 0x10: "Connected", 0x20: "Disconnected"},
           True: {0x00: "Association status unknown", 0x10: "Associated", 0x20: "Not associated"}}


class Interface(NamedTuple):
    """An interface ``pcap_findalldevs`` lists: its name, description (or None) and
    ``PCAP_IF_*`` flags (0 where libpcap's own list could not be read)."""
    name: str
    description: str | None = None
    flags: int = 0


def find_interfaces() -> list[Interface]:
    """The interfaces libpcap can capture on, in ``pcap_findalldevs``'s order (tcpdump
    -D's): with descriptions and flags read from libpcap itself, else pypcap's names
    alone.  OSError when libpcap cannot list them."""
    found = _findalldevs()
    if found is None:           # no libpcap to call through ctypes: pypcap's names
        return [Interface(name) for name in pcap.findalldevs()]
    return found


def _findalldevs() -> list[Interface] | None:
    """``pcap_findalldevs`` through ctypes (pypcap's ``findalldevs`` keeps only the
    names); None when libpcap cannot be loaded so."""
    import ctypes

    class PcapIf(ctypes.Structure):
        pass

    PcapIf._fields_ = [("next", ctypes.POINTER(PcapIf)), ("name", ctypes.c_char_p),
                       ("description", ctypes.c_char_p), ("addresses", ctypes.c_void_p),
                       ("flags", ctypes.c_uint32)]
    lib = libpcap()
    if lib is None:
        return None
    lib.pcap_findalldevs.argtypes = [ctypes.POINTER(ctypes.POINTER(PcapIf)), ctypes.c_char_p]
    lib.pcap_findalldevs.restype = ctypes.c_int
    lib.pcap_freealldevs.argtypes = [ctypes.POINTER(PcapIf)]
    lib.pcap_freealldevs.restype = None
    first = ctypes.POINTER(PcapIf)()
    errbuf = ctypes.create_string_buffer(256)
    if lib.pcap_findalldevs(ctypes.byref(first), errbuf) != 0:
        raise OSError(_text(errbuf.value))
    out = []
    try:
        dev = first
        while dev:
            d = dev.contents
            out.append(Interface(_text(d.name), _text(d.description) if d.description else None, int(d.flags)))
            dev = d.next
    finally:
        if first:
            lib.pcap_freealldevs(first)
    return out


def describe_interface(dev: Interface) -> str:
    """``lo [Up, Running, Loopback]``, ``any (Pseudo-device ...) [Up, Running]``: as
    tcpdump -D prints an interface, without its number."""
    text = dev.name
    if dev.description:
        text += f" ({dev.description})"
    if dev.flags:
        names = [n for bit, n in _FLAG_NAMES if dev.flags & bit]
        status = _STATUS[bool(dev.flags & PCAP_IF_WIRELESS)].get(dev.flags & PCAP_IF_CONNECTION_STATUS)
        text += f" [{', '.join(names) or 'none'}{', ' + status if status else ''}]"
    return text


def resolve_interface(text: str | None) -> str | None:
    """``-i``: an interface's name, or its number in ``find_interfaces`` (tcpdump -D's),
    as tcpdump takes it: a number is a name only when an interface has that name.
    ValueError names a number out of range."""
    if text is None or not (text.isascii() and text.isdigit()):
        return text
    try:
        socket.if_nametoindex(text)
        return text                          # an interface named as a number
    except OSError:
        pass
    n = int(text)
    try:
        found = find_interfaces()
    except OSError as e:
        raise ValueError(f"-i {text}: cannot list the interfaces to find number {n}: {e}") from None
    if not 1 <= n <= len(found):
        raise ValueError(f"-i {text}: there is no interface number {n}; `rtp2ws live -D` lists "
                         f"{len(found)}, numbered from 1")
    return found[n - 1].name
