"""One connection's writes, from whichever thread has them, straight to its socket.

Once a plain-TCP WebSocket connection is open, every byte written to it goes
through its :class:`Wire`, in order: the sender's batches (written by the
pipeline thread right after its tick, or by the event loop) and websockets' own
frames (pongs, keepalive pings, the close frame), which reach the wire through
:class:`WireTransport`, the transport websockets is handed once the handshake is
done.  One lock (the sender's) is held for every write, so whole frames never
interleave, whichever thread writes.

* A write goes to the socket at once (``os.write`` on the wire's own duplicate of
  the socket's descriptor: asyncio's transport may close and reuse its number at any
  time, the duplicate stays this socket's until the wire closes it).
* What the socket does not take now is the wire's ``tail``; every later write
  queues behind it, and the wire is *blocked* until ``retry`` (called while the
  socket is writable) has written it.  The sender takes no new batch for a blocked
  wire, so the tail stays within one batch plus websockets' few control frames.
* The first error (the peer reset the connection, EPIPE) breaks the wire: it
  writes nothing more and keeps nothing; asyncio's transport sees the same error
  on its side and ends the connection.
* ``close()`` ends the wire: its tail, if any, goes back to the caller (to hand to
  asyncio's transport, which then writes it before it closes), and the duplicate
  descriptor is closed, so that closing the transport closes the socket.

TLS connections have no wire: their bytes go through the TLS transport, in the
event loop only (``ws.sender``).

``send_batches(items, budget)`` is the sender's flush of the wires: for every
``(outbox, wire)`` pair of a stream that may write now, the outbox's next batch
(``take_framed``: masked client frames, then the acknowledgement ping when one
is due, keys from a pool of strong random bytes, each used once) written to
the wire as ``Wire.write`` writes it.  It returns the attention list:
``(index, flags, error)`` for each item the sender must still act on, nothing
for the others.  The flags say what the sender's own code for one stream would
have seen after its take and its write:

* ``PENDING``: the outbox still has something to take (past ``budget``);
* ``ENDED``: it ended and nothing is pending (its task sends ``end``);
* ``BLOCKED``: the write left a tail on the wire (retried from the event loop);
* ``BROKE``: this write broke the wire;
* ``SENT``: the outbox's ``sent`` is set (the latency probe, ``on_write``);
* ``FAILED``: the take (or the write) raised ``error``, the rest unknown.

An item may also be a stream's lane (``ws.lane``: where the fast path pushed its
frames): it is written only if its stream may take a batch now, and otherwise
comes back with ``WAKE`` (wake its task), ``MARK`` (live without a wire: the
sender's own flush takes it) or ``ENDED``.

Two twins, like ``ws.outbox``: ``WirePy`` and ``send_batches_py`` here, the
reference, and ``rtp2ws._wsframe.Wire`` and ``send_batches`` (native/wire.c),
which takes every batch into one buffer and writes them all in one pass that
lets go of the GIL once per call instead of once per socket.  ``Wire`` and
``send_batches`` are the C twins unless the extension is not built or
``RTP2WS_NO_NATIVE`` is set (``rtp2ws.speedups`` picks them); ``BACKEND`` names
the one in use, ``BACKENDS`` those available, ``TWINS`` maps each to its
(Wire, send_batches).  The C ``send_batches`` takes only C outboxes and C
wires; the Python one any of both twins.  The C wire's ``tail`` is a copy
(bytes), made when read.
"""

from __future__ import annotations

import asyncio
import errno
import os
import select
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Union

from ..speedups import pick
from .lane import LanePy

if TYPE_CHECKING:
    from .. import _wsframe
    from .outbox import OutboxPy

__all__ = ["BACKEND", "BACKENDS", "BLOCKED", "BROKE", "ENDED", "FAILED", "MARK", "PENDING", "SENT", "TWINS", "WAKE",
           "Wire", "WirePy", "WireTransport", "send_batches", "send_batches_py", "writable"]

_RETRY = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR)

# send_batches' attention flags (native/wire.c has the same values)
PENDING = 1      # the outbox still has something to take: the stream is marked again
ENDED = 2        # the outbox ended and nothing is pending: the stream's task is woken
BLOCKED = 4      # the wire holds a tail: retried from the event loop
BROKE = 8        # this write broke the wire
SENT = 16        # the outbox's sent is set: the latency probe
FAILED = 32      # the take or the write raised (the error is in the entry)
WAKE = 64        # a lane that may not write now: its stream's task is woken (Stream._may_take)
MARK = 128       # a live lane without a wire (TLS): its stream is marked for the sender's own flush
KEY_POOL = 64 * 1024   # masking key bytes drawn from os.urandom at a time


class WirePy:
    """The write side of one connection's socket (see the module docstring).
    Every method is called with ``lock`` held."""

    __slots__ = ("fd", "tail", "broken", "written", "lock")

    def __init__(self, fd: int, lock: AbstractContextManager[Any]) -> None:
        self.fd = os.dup(fd)
        os.set_blocking(self.fd, False)
        self.tail = bytearray()
        self.broken: OSError | None = None
        self.written = 0          # bytes the socket took
        self.lock = lock

    def __repr__(self) -> str:
        return f"Wire(fd={self.fd}, tail={len(self.tail)}, broken={self.broken is not None})"

    @property
    def blocked(self) -> bool:
        """Bytes wait for the socket to take them."""
        return bool(self.tail)

    @property
    def open(self) -> bool:
        return self.fd >= 0 and self.broken is None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` after everything written before it."""
        if not self.open or not data:
            return
        if self.tail:
            self.tail += data
            return
        self._send(data)

    def retry(self) -> bool:
        """Write what waits; True once nothing does (or the wire can write no more)."""
        if not self.tail or not self.open:
            return True
        tail, self.tail = self.tail, bytearray()
        self._send(tail)
        return not self.tail

    def _send(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        pos, size = 0, len(view)
        while pos < size:
            try:
                n = os.write(self.fd, view[pos:])
            except OSError as e:
                if e.errno in _RETRY:
                    break
                self.broken = e
                self.tail = bytearray()
                return
            pos += n
            self.written += n
        if pos < size:
            self.tail += view[pos:]

    def close(self) -> bytes:
        """Stop writing: returns what was still waiting (nothing once broken), and
        closes the duplicate descriptor."""
        tail = bytes(self.tail) if self.broken is None else b""
        self.tail = bytearray()
        if self.fd >= 0:
            try:
                os.close(self.fd)
            finally:
                self.fd = -1
        return tail


class KeyPool:
    """Masking keys (RFC 6455 5.3: a strong source, each byte used once), cut from
    ``KEY_POOL`` bytes of ``os.urandom`` at a time: that call lets another thread take
    the GIL, which this one may then wait up to the switch interval to get back, so it
    is made once per pool, not per flush.  ``pool(n)``: the next ``n`` bytes."""

    def __init__(self) -> None:
        self.pool = b""
        self.at = 0

    def __call__(self, n: int) -> bytes:
        at = self.at
        if at + n > len(self.pool):
            self.pool = os.urandom(max(KEY_POOL, n))
            at = 0
        self.at = at + n
        return self.pool[at:at + n]


_keys = KeyPool()

AnyOutbox = Union["OutboxPy", "_wsframe.Outbox"]
AnyWire = Union[WirePy, "_wsframe.Wire"]
Attention = list[tuple[int, int, BaseException | None]]   # (index, flags, error)
SendBatches = Callable[[Sequence[Any], int], Attention]


def send_batches_py(items: Sequence[tuple[AnyOutbox, AnyWire] | LanePy], budget: int) -> Attention:
    """Each pair's (or lane's) next batch (about ``budget`` bytes) framed and written to
    its wire; the attention list (see the module docstring).  Each wire at most once
    (ValueError, before anything is taken).  A lane (``ws.lane.LanePy``) is unmarked,
    and written only if its stream may take a batch now; else it is left with
    ``WAKE``, ``MARK`` or ``ENDED`` (``ws.lane``)."""
    attention: Attention = []
    jobs: list[tuple[int, Any, Any]] = []
    for i, item in enumerate(items):
        if type(item) is tuple:
            jobs.append((i, item[0], item[1]))
            continue
        if not isinstance(item, LanePy):
            raise TypeError(f"item {i}: expected an (outbox, wire) pair or a LanePy, not {type(item).__name__}")
        lane = item
        lane.dirty = False
        if not lane.live or lane.owner is None:
            continue
        wire, outbox = lane.wire, lane.outbox
        if wire is None:
            attention.append((i, MARK, None))
            continue
        if not outbox.pending:
            if outbox.ended:
                attention.append((i, ENDED, None))
            continue
        try:
            may = (wire.open and not wire.blocked and lane.protocol._state is lane.open_state
                   and not lane.transport.is_closing())
        except Exception as e:  # noqa: BLE001 - handed to the caller, as the C twin does
            attention.append((i, FAILED, e))
            continue
        if not may:
            attention.append((i, WAKE, None))
            continue
        jobs.append((i, outbox, wire))
    if len({id(wire) for _, _, wire in jobs}) != len(jobs):
        raise ValueError("a wire is given twice")
    for i, outbox, wire in jobs:
        flags = 0
        try:
            data = outbox.take_framed(_keys, budget)
            if data:
                was = wire.broken
                wire.write(data)
                if wire.blocked:
                    flags |= BLOCKED
                if was is None and wire.broken is not None:
                    flags |= BROKE
        except Exception as e:  # noqa: BLE001 - handed to the caller, as the C twin does
            attention.append((i, FAILED, e))
            continue
        if outbox.pending:
            flags |= PENDING
        elif outbox.ended:
            flags |= ENDED
        if outbox.sent is not None:
            flags |= SENT
        if flags:
            attention.append((i, flags, None))
    attention.sort(key=lambda a: a[0])
    return attention


def writable(wires: Sequence[AnyWire]) -> list[AnyWire]:
    """The wires among ``wires`` whose socket can take bytes now (one ``poll``)."""
    poller = select.poll()
    by_fd = {}
    for w in wires:
        if w.fd >= 0:
            by_fd[w.fd] = w
            poller.register(w.fd, select.POLLOUT)
    if not by_fd:
        return []
    return [by_fd[fd] for fd, ev in poller.poll(0) if ev & (select.POLLOUT | select.POLLERR | select.POLLHUP)]


class WireTransport(asyncio.Transport):
    """The transport websockets writes to once the connection is open: its writes go
    through the wire (under the wire's lock, behind whatever the sender wrote), all
    the rest to asyncio's transport.  Closing or aborting first ends the wire, whose
    tail asyncio's transport then writes before it closes."""

    def __init__(self, transport: asyncio.Transport, wire: AnyWire) -> None:
        super().__init__()
        self._transport = transport
        self.wire = wire

    def write(self, data: Any) -> None:
        wire = self.wire
        with wire.lock:
            if wire.fd >= 0:
                wire.write(data)
                return
        self._transport.write(data)

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def detach(self) -> None:
        """End the wire: later writes go to asyncio's transport, after the wire's tail."""
        wire = self.wire
        with wire.lock:
            tail = wire.close()
        if tail:
            self._transport.write(tail)

    def write_eof(self) -> None:
        self.detach()
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def close(self) -> None:
        self.detach()
        self._transport.close()

    def abort(self) -> None:
        self.detach()
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def get_write_buffer_size(self) -> int:
        wire = self.wire
        return len(wire.tail) + self._transport.get_write_buffer_size()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()


_native, BACKENDS = pick("wire")
BACKEND = BACKENDS[0]
Wire: type[WirePy] | type[_wsframe.Wire]
send_batches: SendBatches
TWINS: dict[str, tuple[type[WirePy] | type[_wsframe.Wire], SendBatches]] = {"python": (WirePy, send_batches_py)}
if _native is not None:
    # the extension pick() chose, imported by name so that its stub (_wsframe.pyi) types it
    from .._wsframe import Wire as _NativeWire
    from .._wsframe import send_batches as _native_send_batches
    Wire, send_batches = _NativeWire, _native_send_batches
    TWINS["native"] = (_NativeWire, _native_send_batches)
else:
    Wire, send_batches = WirePy, send_batches_py
