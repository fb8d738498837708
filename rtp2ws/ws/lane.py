"""One stream's data plane: where the fast path puts a bound leg's frames, and what
the sender's flush needs to write them, with no Python per frame.

At realtime each 20 ms frame is its own write, and what costs is not the write but
the Python around it: a hand-off per leg and tick, a queue operation, a mark, the
checks before the take.  A :class:`Lane` holds a stream's outbox and, while a
connection is open, that connection's wire, websockets' protocol and asyncio's
transport.  The fast path pushes each bound leg's whole frames into its lane
(``FastPath.bind(..., lane)``, ``pump``), which queues them in the outbox and, the
first time since the last flush, puts itself on the sender's ``marked`` list; the
sender's flush hands that list to ``send_batches`` (``ws.wire``), which for each
lane does what ``Stream._may_take`` does (live over plain TCP, something pending,
state ``OPEN``, the transport not closing, the wire neither blocked nor broken),
then takes, frames, keys and writes, as for an ``(outbox, wire)`` pair.  A lane
that may not write comes back flagged: ``WAKE`` (wake its stream's task, as
``_may_take`` would), ``MARK`` (live without a wire, e.g. TLS: the sender's own
flush takes it), ``ENDED`` (ended with nothing pending).

Who sets what: the sender makes a stream's lane with its outbox (``Stream``), and
calls ``go_live``/``go_dead`` with the connection; the bridge hands the lane to the
pipeline with the leg (``Sink.fast_target``) and holds the sender's lock while the
fast path pumps (``Sink.fast_pumping``), so that a push never meets another
thread's outbox operation, and the operations queued before it are applied first.

``stamps`` (None, or a list) is a probe: each push appends ``(first, end, newest,
held, packet)``: the offsets of the frames, the capture time of the newest packet in
them, the 16 kHz samples held after them, and the samples of that packet.

Two twins: ``LanePy`` here (any outbox twin), ``rtp2ws._wsframe.Lane``
(native/lane.c: C outboxes only, and the C ``send_batches`` takes only C lanes).
``make_lane`` picks the C one when it can.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Union

from ..speedups import pick

if TYPE_CHECKING:
    from .. import _wsframe

__all__ = ["BACKEND", "LanePy", "make_lane", "take_marked", "take_marked_py"]


class LanePy:
    """Twin of ``rtp2ws._wsframe.Lane`` (see the module docstring)."""

    __slots__ = ("outbox", "marked", "owner", "wire", "protocol", "transport", "open_state", "live", "dirty",
                 "pushed", "stamps")

    def __init__(self, outbox: Any, marked: list[Any], owner: Any) -> None:
        if not isinstance(marked, list):
            raise TypeError("marked must be a list")
        self.outbox = outbox
        self.marked = marked
        self.owner = owner
        self.wire: Any = None
        self.protocol: Any = None
        self.transport: Any = None
        self.open_state: Any = None
        self.live = False
        self.dirty = False
        self.pushed = 0
        self.stamps: list[tuple[int, int, float, int, int]] | None = None

    def __repr__(self) -> str:
        return (f"Lane(live={self.live}, wire={self.wire is not None}, dirty={self.dirty}, "
                f"pushed={self.pushed})")

    def push(self, pcm: bytes, newest: float = 0.0, held: int = 0, packet: int = 0) -> None:
        """Queue whole frames; the lane is marked (once) while live."""
        outbox = self.outbox
        first = outbox.offset
        queued = outbox.push_audio(pcm)
        end = outbox.offset
        self.pushed += end - first
        if queued and self.live and not self.dirty:
            self.marked.append(self)
            self.dirty = True
        if self.stamps is not None:
            self.stamps.append((first, end, newest, held, packet))

    def go_live(self, wire: Any, protocol: Any, transport: Any, open_state: Any) -> None:
        """A connection is open (``wire`` None: not plain TCP, the sender's own flush writes)."""
        self.wire, self.protocol, self.transport, self.open_state = wire, protocol, transport, open_state
        self.live = True

    def go_dead(self) -> None:
        """The connection is over."""
        self.wire = self.protocol = self.transport = self.open_state = None
        self.live = False

    def release(self) -> None:
        """The stream is done: no owner, no connection."""
        self.go_dead()
        self.owner = None


_native, _BACKENDS = pick("wire")
BACKEND = _BACKENDS[0]     # the wire's: the C lane goes with the C send_batches

AnyLane = Union[LanePy, "_wsframe.Lane"]


def make_lane(outbox: Any, marked: list[Any], owner: Any) -> AnyLane:
    """The C lane for a C outbox when the wire's C twin is in use, else ``LanePy``."""
    if _native is not None and type(outbox) is _native.Outbox:
        lane: AnyLane = _native.Lane(outbox, marked, owner)
        return lane
    return LanePy(outbox, marked, owner)


def take_marked_py(marked: list[Any]) -> list[Any]:
    """The lanes marked since the last flush, and ``marked`` emptied (the twin of
    ``_wsframe.take_marked``, which keeps the list's room for the next flush's appends)."""
    lanes = marked[:]
    marked.clear()
    return lanes


take_marked = _native.take_marked if _native is not None else take_marked_py
