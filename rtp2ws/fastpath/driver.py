"""The fast path's driver: which legs' flows ``FastPath`` takes, and bringing those
legs up to date before anyone looks at them.

``FastPath`` (``rtp2ws._fastpath`` in C, or ``rtp2ws.fastpath.twin``) knows flows
and slot ids; the pipeline knows legs.  ``FastDriver`` joins the two and owns every
map between them, so the pipeline holds one and calls it at the few points the
contract (twin.py's docstring) names:

* ``arm(key, flow, leg, payload_type)`` after the pipeline pushed an RTP packet of
  ``flow`` to the leg ``key``: the flow is armed when the leg's ``fast_state`` allows;
* ``sync(key)`` before the pipeline looks at an armed leg (a packet of its own, a new
  flow, the end of the call, new SDP): what the fast path took goes to the leg, and the
  flow is disarmed (``disarm=False`` where the leg's state does not change: SIP and
  call timers read only the call's last activity);
* ``unbound(flow)``: the correlator unbinds a flow (``Correlator.on_unbind``);
* ``take_ready()`` at a hand-out: the legs the fast path filled to ``deliver_samples``;
* ``rebase(key, pending)`` after the pipeline took a leg's audio;
* ``take_all()`` at the end of a file and before ``finish``;
* ``ignore(key, flow)`` after the pipeline let the leg ``key`` of a call another worker
  owns (``Config.shard``) take an RTP packet of ``flow``: the fast path drops the flow's
  next packets (``FastPath.ignore``), counting them and their newest arrival, which
  ``sync``/``sync_call``/``unbound``/``take_all`` hand to ``absorb_foreign(key, packets,
  newest)`` as they hand armed legs' to ``absorb`` (and release the flow where they
  disarm); ``foreign_packets`` is how many it dropped in all;
* ``bind(key, history, carry, frame_bytes, feed)`` once an armed leg's stream can take
  its audio straight from the fast path (the leg holds none: the pipeline just handed
  it all out), and ``pump()`` at each hand-out: every bound leg that is ready gets its
  whole frames through its ``feed(frames, newest, held)``.

What a take brings (``Taken``) goes to the pipeline's ``absorb(key, taken)``, which
puts it on the leg (``MediaLeg.absorb``) and counts it as if each packet had been fed.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

from ..net.packet import LinkLayer
from .twin import FastPath, tables

if TYPE_CHECKING:
    from .. import _fastpath
    from ..media.leg import MediaLeg
    from ..signalling.correlator import Correlator, Flow


class Taken(NamedTuple):
    """What ``FastPath.take`` hands over for one slot (both twins return this tuple)."""

    packets: int                  # packets taken since the last take
    nbytes: int                   # their payload bytes
    next_ext: int                 # extended sequence number expected next
    last_ts: int                  # extended RTP timestamp of the last packet taken
    last_arrival: float           # its capture time
    max_arrival: float            # the latest capture time of the packets taken
    last_payload: bytes | None    # the last packet's payload (None when packets is 0)
    samples: bytes                # their 8 kHz samples, native-endian int16 (a bound slot's: at disarm)
    streamed: int                 # 8 kHz samples a bound slot streamed since the last take
    state: tuple[bytes, bytes] | None   # a bound slot disarmed: its filter state and part-frame
    jitter: tuple[float, float, int, float]   # the leg's interarrival jitter now (as rtp2ws.media.leg.Jitter)
    delta: tuple[float, int, float]           # its max-delta state now (as rtp2ws.media.quality.Delta)


class FastDriver:
    """Arms, takes and syncs flows of a ``FastPath`` for a pipeline's legs."""

    def __init__(self, link: LinkLayer, deliver_samples: int, correlator: Correlator,
                 absorb: Callable[[Hashable, Taken], None],
                 absorb_foreign: Callable[[Hashable, int, float], None] | None = None) -> None:
        self.link = link
        self.deliver_samples = deliver_samples
        self.path: FastPath | _fastpath.FastPath | None = None   # the FastPath, once ``start`` made it
        self.legs: dict[Hashable, int] = {}   # armed leg key -> slot id (read: "is this leg armed?")
        # armed legs whose stream the fast path feeds, and where their frames go
        self.bound: dict[Hashable, Callable[[bytes, float, int], None]] = {}
        self._slots: dict[int, tuple[Hashable, Flow]] = {}   # slot id -> (leg key, 5-tuple)
        self._flows: dict[Flow, int] = {}     # 5-tuple -> slot id
        # foreign legs (another worker's calls) -> their flows the fast path drops, and the ids
        self.foreign: dict[Hashable, dict[Flow, int]] = {}
        self._ignored: dict[Flow, Hashable] = {}     # 5-tuple dropped -> its foreign leg
        self._correlator = correlator
        self._absorb = absorb
        self._absorb_foreign = absorb_foreign
        correlator.on_unbind = self.unbound

    def start(self, cls: type[FastPath] | type[_fastpath.FastPath]) -> FastPath | _fastpath.FastPath:
        """Make the FastPath of class ``cls`` (the C one or the twin); returns it."""
        path = self.path = cls(self.link, self.deliver_samples, *tables())
        return path

    @property
    def packets(self) -> int:
        """Packets the fast path took in all."""
        return self.path.packets if self.path is not None else 0

    @property
    def foreign_packets(self) -> int:
        """Packets the fast path dropped in all, on flows of foreign legs (``ignore``)."""
        return self.path.foreign if self.path is not None else 0

    def ignore(self, key: Hashable, flow: Flow) -> None:
        """Let the fast path drop this flow's next RTP packets for the foreign leg ``key``,
        if the correlator binds the flow to that leg."""
        if flow in self._ignored or flow in self._flows or self._correlator.flows.get(flow, (None,))[0] != key:
            return
        fid = self._started().ignore(flow[0], flow[1], flow[2], flow[3])
        self.foreign.setdefault(key, {})[flow] = fid
        self._ignored[flow] = key

    def arm(self, key: Hashable, flow: Flow, leg: MediaLeg, payload_type: int) -> None:
        """Let the fast path take this flow's next packets, if the leg allows it."""
        if key in self.legs or flow in self._flows:
            return
        state = leg.fast_state(payload_type)
        if state is None or not leg.flows or self._correlator.flows.get(flow, (None,))[0] != key:
            return
        sid = self._started().arm(flow[0], flow[1], flow[2], flow[3], state.ssrc, state.next_ext, payload_type,
                            state.alaw, state.expect_ts, state.last_ts, state.last_arrival, state.pending_samples,
                            state.jitter, state.delta)
        self.legs[key] = sid
        self._slots[sid] = (key, flow)
        self._flows[flow] = sid

    def sync(self, key: Hashable, disarm: bool = True) -> None:
        """Bring the leg ``key`` up to date, if it is armed (and disarm it)."""
        sid = self.legs.get(key)
        if sid is not None:
            self._take(sid, disarm)
        elif key in self.foreign:
            self._seen(key, disarm)

    def sync_call(self, call_key: str, tags: Iterable[str], disarm: bool) -> None:
        """``sync`` each leg of a call (``tags``: its legs' tags)."""
        for tag in tags:
            key = (call_key, tag)
            sid = self.legs.get(key)
            if sid is not None:
                self._take(sid, disarm)
            elif key in self.foreign:
                self._seen(key, disarm)

    def unbound(self, flow: Flow) -> None:
        sid = self._flows.get(flow)
        if sid is not None:
            self._take(sid, True)
        key = self._ignored.get(flow)
        if key is not None:
            self._seen(key, True)

    def take_ready(self) -> None:
        """Bring up to date the legs the fast path filled to ``deliver_samples``."""
        if self.path is not None:
            for sid in self.path.ready():
                self._take(sid, False)

    def take_all(self) -> None:
        """Bring every armed leg up to date and disarm it."""
        for sid in list(self._slots):
            self._take(sid, True)
        for key in list(self.foreign):
            self._seen(key, True)

    def bind(self, key: Hashable, history: bytes, carry: bytes, frame_bytes: int,
             feed: Callable[[bytes, float, int], None], lane: Any = None) -> None:
        """The armed leg ``key``'s stream takes its audio from the fast path from now on,
        through ``feed(frames, newest, held)``, or pushed into ``lane`` by the fast path
        itself (``Sink.fast_target``)."""
        self._started().bind(self.legs[key], history, carry, frame_bytes, lane)
        self.bound[key] = feed

    def pump(self) -> None:
        """Every bound leg that is ready gets its whole frames, with the capture time of
        the newest packet in them and the 16 kHz samples held after them."""
        if not self.bound:
            return
        slots, bound = self._slots, self.bound
        for sid, frames, newest, held in self._started().pump():
            bound[slots[sid][0]](frames, newest, held)

    def rebase(self, key: Hashable, pending_samples: int) -> None:
        """The armed leg ``key`` now holds ``pending_samples`` (its audio was taken)."""
        sid = self.legs.get(key)
        if sid is not None:
            self._started().rebase(sid, pending_samples)

    def _started(self) -> FastPath | _fastpath.FastPath:
        """The path, for ``arm`` and for armed slots: the pipeline arms only once ``start``
        made the path (it checks ``path``), and only ``arm`` arms a slot."""
        path = self.path
        assert path is not None
        return path

    def _seen(self, key: Hashable, release: bool) -> None:
        """What the fast path dropped of the foreign leg ``key``'s flows goes to
        ``absorb_foreign``; with ``release`` it stops dropping them."""
        path = self._started()
        packets, newest = 0, float("-inf")
        flows = self.foreign.pop(key) if release else self.foreign[key]
        for flow, fid in flows.items():
            n, t = path.ignored(fid, release)
            packets += n
            if t > newest:
                newest = t
            if release:
                del self._ignored[flow]
        if packets and self._absorb_foreign is not None:
            self._absorb_foreign(key, packets, newest)

    def _take(self, sid: int, disarm: bool) -> None:
        key, flow = self._slots[sid]
        taken = Taken._make(self._started().take(sid, disarm))
        if disarm:
            del self._slots[sid]
            del self.legs[key]
            del self._flows[flow]
            self.bound.pop(key, None)
        if taken.packets or taken.samples or taken.streamed or taken.state is not None:
            self._absorb(key, taken)
