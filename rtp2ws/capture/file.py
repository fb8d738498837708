"""Capture file adapter: pcap / pcapng files in, ``(timestamp, frame)`` batches out.

This is the I/O edge of packet input.  libpcap (through pypcap) reads both
pcap and pcapng; this module only moves its packets into batches and turns
its errors into ``CaptureError`` naming the file and the packet number
(1-based, as Wireshark numbers frames).  The link type is passed on
untouched; ``rtp2ws.net.packet.PacketDecoder`` decides whether it can read it.

For the fast path a file is opened as a ``Reader`` instead (``CaptureFile(...,
native=True).reader``): ``rtp2ws._fastpath.Reader`` (native/capture_file.c), which
``FastPath.run`` reads in C without handing packets to Python, or its Python twin
here, read a batch at a time through ``CaptureFile`` and handed out a packet at a time.
The C reader is built into the ``_fastpath`` extension because ``FastPath.run`` reads
its libpcap handle directly.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Iterator

import pcap

from ..speedups import pick

__all__ = ["BACKENDS", "CaptureError", "CaptureFile", "PacketReader", "ReadError", "Reader", "check_backend", "libpcap",
           "reader_class"]

PCAP_FILE_HEADER = 24
PCAP_RECORD_HEADER = 16
PCAPNG_EPB_OVERHEAD = 32  # enhanced packet block without options
# Latest capture time taken as it is: 9999-12-31T23:59:59Z, the last second an ISO 8601
# time can name, and far inside the range where a float keeps microseconds.
MAX_TIMESTAMP = 253402300799.0

# First four bytes of the formats libpcap reads: pcap (µs and ns, both byte
# orders, and the "modified" Kuznetzov variant) and pcapng.
_MAGICS = {
    bytes.fromhex("a1b2c3d4"),
    bytes.fromhex("d4c3b2a1"),
    bytes.fromhex("a1b23c4d"),
    bytes.fromhex("4d3cb2a1"),
    bytes.fromhex("a1b2cd34"),
    bytes.fromhex("34cdb2a1"),
}
_PCAPNG_MAGIC = bytes.fromhex("0a0d0d0a")


class CaptureError(Exception):
    """A capture file cannot be opened or read; ``str()`` names the file,
    ``reason`` is libpcap's own message."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason if reason is not None else message


def libpcap() -> ctypes.CDLL | None:
    """libpcap itself through ctypes, for what pypcap does not expose (its open error,
    the interfaces' descriptions and flags); None when it cannot be loaded so."""
    name = ctypes.util.find_library("pcap")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def _libpcap_open_error(path: str) -> str | None:
    """libpcap's own message for a file it refuses to open.

    pypcap falls back to opening an interface of that name when
    ``pcap_open_offline`` fails, which hides the real reason; ask libpcap
    directly.  Returns None if libpcap opens the file or cannot be loaded.
    """
    lib = libpcap()
    if lib is None:
        return None
    lib.pcap_open_offline.restype = ctypes.c_void_p
    lib.pcap_open_offline.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    lib.pcap_close.argtypes = [ctypes.c_void_p]
    errbuf = ctypes.create_string_buffer(512)  # PCAP_ERRBUF_SIZE is 256
    handle = lib.pcap_open_offline(os.fsencode(path), errbuf)
    if handle:
        lib.pcap_close(handle)
        return None
    return errbuf.value.decode("utf-8", "replace")


class CaptureFile:
    """Read a pcap or pcapng file in batches of ``(timestamp, frame)``, or,
    with ``native=True``, open it as a ``Reader`` for the fast path (``reader``), which
    reads it in C when the extension is built (``backend`` chooses)."""

    def __init__(self, path: str, *, batch: int = 1024, native: bool = False, backend: str | None = None) -> None:
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self.path = os.fspath(path)
        self.batch = batch
        self.packets_read = 0
        self.bad_timestamps = 0           # packets whose time was outside 0..MAX_TIMESTAMP
        self.first_bad_timestamp = 0      # the number of the first of them (1-based), 0: none
        self._last_ts: float | None = None
        self._pcap = None
        self._reader = None
        # Check that this is a capture file ourselves: given anything else,
        # pypcap would try to open a network interface of that name.
        try:
            with open(self.path, "rb") as f:
                magic = f.read(4)
                self.size = os.fstat(f.fileno()).st_size
        except OSError as e:
            raise CaptureError(f"{self.path}: {e.strerror or e}") from None
        if len(magic) < 4:
            raise CaptureError(
                f"{self.path}: truncated dump file; tried to read 4 file header bytes, only got {len(magic)}"
            )
        if magic not in _MAGICS and magic != _PCAPNG_MAGIC:
            raise CaptureError(f"{self.path}: unknown file format")
        self._pcapng = magic == _PCAPNG_MAGIC
        if native:
            try:
                self._reader = reader_class(backend)(self.path)
            except OSError as e:
                message = str(e)
                prefix = f"{self.path}: "
                raise CaptureError(message if message.startswith(prefix) else prefix + message) from None
            self.linktype: int = self._reader.linktype
            return
        try:
            self._pcap = pcap.pcap(name=self.path, promisc=False, immediate=False, timeout_ms=0)
        except OSError as e:
            message = _libpcap_open_error(self.path) or str(e)
            prefix = f"{self.path}: "
            if message.startswith(prefix):
                message = message[len(prefix) :]
            raise CaptureError(f"{self.path}: {message}") from None
        self.linktype = self._pcap.datalink()
        # Approximate: pcapng section and interface blocks are not counted.
        self.bytes_read = 0 if self._pcapng else PCAP_FILE_HEADER
        self._overhead = PCAPNG_EPB_OVERHEAD if self._pcapng else PCAP_RECORD_HEADER

    def __repr__(self) -> str:
        linktype = getattr(self, "linktype", None)
        return f"CaptureFile({self.path!r}, linktype={linktype}, {self.packets_read} packets read)"

    def __enter__(self) -> CaptureFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def reader(self):
        """The file opened for ``FastPath.run`` (``native=True`` only)."""
        if self._reader is None:
            raise ValueError("CaptureFile was not opened with native=True")
        return self._reader

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        if self._pcap is not None:
            self._pcap.close()
            self._pcap = None

    def _bad_timestamp(self, ts: float, out: list) -> float:
        """The time given to a packet whose own is out of range (``_fastpath.Reader`` does the same)."""
        self.bad_timestamps += 1
        if self.bad_timestamps == 1:
            self.first_bad_timestamp = self.packets_read + len(out) + 1
        if out:
            return out[-1][0]
        if self._last_ts is not None:
            return self._last_ts
        return MAX_TIMESTAMP if ts > 0.0 else 0.0

    def batches(self) -> Iterator[list[tuple[float, bytes]]]:
        """Yield lists of up to ``batch`` packets until the end of the file.

        A read error is raised as ``CaptureError`` after every packet before
        it has been yielded.  A packet whose time is before 1970 or after
        ``MAX_TIMESTAMP`` (a pcapng ``if_tsoffset`` or a corrupt record can say
        anything) is given the previous packet's time (the first packet: the
        nearest end of that range) and counted in ``bad_timestamps``.
        """
        out: list[tuple[float, bytes]] = []
        append = out.append

        def collect(ts: float, frame: bytes) -> None:
            if not 0.0 <= ts <= MAX_TIMESTAMP:
                ts = self._bad_timestamp(ts, out)
            append((ts, frame))

        while self._pcap is not None:
            result = self._pcap.dispatch(self.batch, collect)
            if out:
                self._last_ts = out[-1][0]
                self.packets_read += len(out)
                overhead = self._overhead
                if self._pcapng:
                    self.bytes_read += sum(overhead + ((len(f) + 3) & ~3) for _, f in out)
                else:
                    self.bytes_read += sum(overhead + len(f) for _, f in out)
                if self.bytes_read > self.size:
                    self.bytes_read = self.size
                batch = out.copy()
                out.clear()
                yield batch
            if result < 0:
                if self._pcap is None:
                    return  # closed by the consumer while suspended
                error = self._pcap.geterr()
                if isinstance(error, bytes):
                    error = error.decode("utf-8", "replace")
                error = error or "read error"
                raise CaptureError(f"{self.path}: packet {self.packets_read + 1}: {error}", error)
            if result == 0:
                self.bytes_read = self.size
                return


class ReadError(Exception):
    """The capture broke off; ``str()`` is libpcap's message."""


class PacketReader:
    """What ``FastPath.run`` (``rtp2ws.fastpath.twin``) reads: ``next_packet``, a packet
    handed back (``hold``, read next), a read error kept back until the packets before it
    had their tick (``error``, ``raise_error``), and ``waiting``: a live reader's "no
    packet now" (a file has none).  The twins of ``_fastpath.Reader`` (``Reader``) and of
    its subtype ``_fastpath.LiveReader`` (``rtp2ws.capture.live.LiveReaderPy``)."""

    waiting = False
    error: str | None = None
    _held: tuple[float, bytes] | None = None

    def next_packet(self) -> tuple[float, bytes] | None:
        raise NotImplementedError

    @property
    def held_ts(self) -> float | None:
        """Capture time of the packet a paced run stopped before (read next), or None."""
        return self._held[0] if self._held is not None else None

    def hold(self, item: tuple[float, bytes]) -> None:
        """``item``, just read, is read again by the next ``next_packet``."""
        self._held = item

    def raise_error(self) -> None:
        """Raise the read error kept back as ``ReadError`` (once), if there is one."""
        if self.error is not None:
            message, self.error = self.error, None
            raise ReadError(message)


class Reader(PacketReader):
    """Twin of ``_fastpath.Reader``: a capture file read through pypcap (``CaptureFile``)
    a batch at a time, handed out a packet at a time to ``FastPath.run``
    (``rtp2ws.fastpath.twin``)."""

    def __init__(self, path: str) -> None:
        try:
            self._cap = CaptureFile(path, native=False)
        except CaptureError as e:
            raise OSError(str(e)) from None
        self.linktype = self._cap.linktype
        self.packets_read = 0
        self.error: str | None = None     # a read error kept back until the packets before it had their tick
        self._batches = self._cap.batches()
        self._batch: list[tuple[float, bytes]] = []
        self._i = 0
        self._done = False
        self._held = None                 # handed back by a paced run: read next

    @property
    def bytes_read(self) -> int:
        return self._cap.bytes_read

    @property
    def bad_timestamps(self) -> int:
        return self._cap.bad_timestamps

    @property
    def first_bad_timestamp(self) -> int:
        return self._cap.first_bad_timestamp

    def close(self) -> None:
        self._cap.close()
        self._done = True

    def next_packet(self) -> tuple[float, bytes] | None:
        """The next ``(ts, frame)``; None at the end of the file, and when it breaks off
        (then ``error`` holds libpcap's message until ``raise_error``)."""
        if self._held is not None:
            item, self._held = self._held, None
            return item
        while self._i >= len(self._batch):
            if self._done:
                return None
            try:
                self._batch = next(self._batches)
            except StopIteration:
                self._done = True
                return None
            except CaptureError as e:
                self._done = True
                self.error = e.reason
                return None
            self._i = 0
        item = self._batch[self._i]
        self._i += 1
        self.packets_read += 1
        return item


_native, BACKENDS = pick("fastpath")      # the C Reader is in the fast path's extension
if _native is not None:
    # the extension pick() chose, imported by name so that its stub (_fastpath.pyi) types it
    from .._fastpath import Reader as _NativeReader


def check_backend(backend: str | None) -> str:
    """``backend`` (``native``, ``python``; None: the first of ``BACKENDS``), checked to be
    available; the readers here and in ``capture.live`` are chosen by it."""
    backend = backend or BACKENDS[0]
    if backend not in BACKENDS:
        raise ValueError(f"fast path backend {backend!r} is not available (have {', '.join(BACKENDS)})")
    return backend


def reader_class(backend: str | None = None):
    """The ``Reader`` of ``backend`` (``native``, ``python``; default: the first of
    ``BACKENDS``).  ``Pipeline.run_reader`` takes the fast path that goes with it."""
    if check_backend(backend) == "native":
        assert _native is not None  # "native" is listed only when the extension is there
        return _NativeReader
    return Reader
