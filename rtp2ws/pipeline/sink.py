"""The sink side of the pipeline: what a sink is told (``Sink``), sinks that pass it
on (``Forward``, ``Counting``, ``Tee``), and what a sink sees of a leg (``LegView``).

A sink gets a leg's ``LegView``, never the ``MediaLeg``: it reads the leg's current
values through it, and can change neither the leg, its jitter buffer nor its counters.
The pipeline makes one view per leg, with the leg, and hands that one out every time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from operator import attrgetter
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np

from ..media.dtmf import DtmfEvent
from ..media.leg import LegEvent, LegStats, MediaLeg
from ..signalling.calls import Call, CallEvent


class FastTarget(NamedTuple):
    """What a sink that lets the fast path stream a leg gives it (``Sink.fast_target``)."""
    carry: bytes                                   # the part-frame it gives up (int16 LE)
    frame_bytes: int                               # the frame size in bytes
    feed: Callable[[bytes, float, int], None]      # feed(frames, newest, held)
    # or, instead of feed, where the fast path pushes the frames itself (rtp2ws.ws.lane)
    lane: Any = None


_NO_CONTEXT = nullcontext()


class LegView:
    """A leg as a sink sees it: read-only, read through to the leg's current values.
    Lists come out as tuples, ``counts`` as a read-only mapping, ``stats`` and
    ``jitter_stats`` as new dicts; setting or deleting anything is an AttributeError."""

    __slots__ = ("tag", "counts", "_leg")
    tag: str
    counts: Mapping[str, int]
    _leg: MediaLeg

    def __init__(self, leg: MediaLeg) -> None:
        set_ = object.__setattr__
        set_(self, "tag", leg.tag)                           # caller, callee, caller#2 ...
        set_(self, "counts", MappingProxyType(leg.counts))  # the leg's own dict, read-only
        set_(self, "_leg", leg)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"a leg's view is read-only: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"a leg's view is read-only: cannot delete {name!r}")

    def __repr__(self) -> str:
        return f"LegView({self.tag!r}, packets={self.counts['packets']}, samples_out={self.samples_out})"

    # Read through, one C call each (``operator.attrgetter``): sinks read some of
    # these on every hand-off.
    start_time = property(attrgetter("_leg.start_time"),
                          doc="Capture time of the leg's sample 0 (None before its first audio).")
    encrypted = property(attrgetter("_leg.encrypted"),
                         doc="Audio encrypted and not decrypted (DTLS-SRTP, ZRTP, SRTP with no key in SDP).")
    srtp = property(attrgetter("_leg.srtp"), doc="The SRTP suite of the SDES keys it is decrypted with, or None.")
    last_arrival = property(attrgetter("_leg.last_arrival"),
                            doc="Capture time of the newest audio packet placed on the timeline.")
    last_packet_samples = property(attrgetter("_leg.last_packet_samples"),
                                   doc="8 kHz samples of the newest audio packet placed on the timeline.")
    samples_out = property(attrgetter("_leg.samples_out"), doc="Samples at the output rate on the timeline so far.")
    rate = property(attrgetter("_leg.rate"), doc="The output rate of the leg's audio (16000 by default).")
    concealed = property(attrgetter("_leg.concealed"), doc="8 kHz samples concealed after loss.")
    filled = property(attrgetter("_leg.filled"), doc="8 kHz samples of silence inserted in gaps.")
    decoded = property(attrgetter("_leg.decoded"), doc="8 kHz samples decoded from payloads.")
    closed = property(attrgetter("_leg.closed"), doc="The leg has ended (its call has).")

    @property
    def ssrcs(self) -> tuple[int, ...]:
        """SSRCs seen, in order first seen."""
        return tuple(self._leg.ssrcs)

    @property
    def codecs(self) -> tuple[str, ...]:
        """Codecs seen, in order first seen."""
        return tuple(self._leg.codecs)

    @property
    def codec_segments(self) -> tuple[tuple[str, float], ...]:
        """(codec, capture time it began) of each stretch of one codec, in order (at most
        ``media.leg.MAX_SEGMENTS``): PCMU, G722, PCMU for a call re-INVITEd there and back."""
        return tuple(self._leg.codec_segments or ())

    @property
    def flows(self) -> tuple[tuple[str, str], ...]:
        """(src, dst) of the leg's first flow as text; empty before its first packet."""
        return tuple(self._leg.flows)

    @property
    def dtmf_events(self) -> tuple[DtmfEvent, ...]:
        """Key presses listed for the manifest (at most ``leg.MAX_DTMF_LISTED``)."""
        return tuple(self._leg.dtmf_events)

    @property
    def stats(self) -> LegStats:
        """The leg's statistics (``MediaLeg.stats``): packets, lost, late, ..., jitter_ms,
        max_jitter_ms (None before the leg measured any), a new dict."""
        return self._leg.stats

    @property
    def quality(self) -> dict[str, Any]:
        """The leg's quality (``MediaLeg.quality_report``: loss, max delta, jitter, what RTCP
        said, MOS), a new dict."""
        return self._leg.quality_report

    jitter = property(attrgetter("_leg.jitter"),
                      doc="The leg's interarrival jitter so far (``rtp2ws.media.leg.Jitter``, 8 kHz units).")

    @property
    def jitter_stats(self) -> dict[str, int]:
        """A copy of the jitter buffer's counters."""
        return dict(self._leg.jb.stats)


class Sink:
    """Receives what the pipeline produces.  Methods are called in time order.  A leg
    comes as its ``LegView``, the same object for the leg's whole life."""

    def call_started(self, call: Call) -> None: ...

    def leg_audio(self, call: Call, leg: LegView, pcm: np.ndarray) -> None: ...

    def leg_event(self, call: Call, leg: LegView, event: LegEvent) -> None: ...

    def call_event(self, call: Call, event: CallEvent) -> None: ...

    def call_ended(self, call: Call, legs: dict[str, LegView]) -> None:
        """``legs`` by tag: caller, callee, then the call's extra legs (caller#2 ...)."""

    def tick(self, now: float) -> None:
        """Capture time has reached ``now`` (called after each batch and timer run)."""

    # A sink whose output for a leg is whole frames of its 16 kHz audio (a leg's stream)
    # may let the fast path make them (``rtp2ws.fastpath``: decode, filter, frames), so
    # that a leg in steady state costs no Python per hand-out.  The default: never.

    def fast_target(self, call: Call, leg: LegView) -> FastTarget | None:
        """Whether the fast path may stream ``leg`` from now on (its audio so far was all
        handed to ``leg_audio``): None, or (the part-frame this sink holds for it, which
        it gives up, int16 bytes; the frame size in bytes; ``feed(frames, newest, held)``,
        which takes the whole frames the fast path makes of the leg's audio from then on,
        in order, as ``leg_audio`` would have cut them: ``newest`` is the capture time of
        the newest packet in them, ``held`` the 16 kHz samples of it the fast path holds
        after them, part of the next frame).  ``feed`` is called for this leg alone, with
        no other sink method on the way (it costs one call per leg and hand-out).
        With a ``lane`` (a stream's, ``rtp2ws.ws.lane``) the fast path pushes the frames
        there itself and ``feed`` is not called: no Python at all per hand-out."""
        return None

    def fast_pumping(self) -> AbstractContextManager[Any]:
        """Entered while the fast path pushes frames into the lanes this sink gave it
        (once per tick, only while it streams some leg): a sink whose lanes' queues
        another thread also uses holds its lock there, and first puts in them what it
        queued before (events), so that the frames land after it."""
        return _NO_CONTEXT

    def fast_release(self, call: Call, leg: LegView, carry: bytes) -> None:
        """The fast path stops streaming ``leg``: ``carry`` is the part-frame it held,
        which ``leg_audio`` goes on from."""
        raise NotImplementedError(f"{type(self).__name__} streams no leg from the fast path")


class Forward(Sink):
    """Passes everything on to ``inner``; subclasses override what they add."""

    def __init__(self, inner: Sink) -> None:
        self.inner = inner

    def fast_target(self, call: Call, leg: LegView) -> FastTarget | None:
        return self.inner.fast_target(call, leg)

    def fast_release(self, call: Call, leg: LegView, carry: bytes) -> None:
        self.inner.fast_release(call, leg, carry)

    def fast_pumping(self) -> AbstractContextManager[Any]:
        return self.inner.fast_pumping()

    def call_started(self, call: Call) -> None:
        self.inner.call_started(call)

    def leg_audio(self, call: Call, leg: LegView, pcm: np.ndarray) -> None:
        self.inner.leg_audio(call, leg, pcm)

    def leg_event(self, call: Call, leg: LegView, event: LegEvent) -> None:
        self.inner.leg_event(call, leg, event)

    def call_event(self, call: Call, event: CallEvent) -> None:
        self.inner.call_event(call, event)

    def call_ended(self, call: Call, legs: dict[str, LegView]) -> None:
        self.inner.call_ended(call, legs)

    def tick(self, now: float) -> None:
        self.inner.tick(now)


class Counting(Forward):
    """Counts calls and legs with audio on the way to the real sink."""

    def __init__(self, inner: Sink) -> None:
        super().__init__(inner)
        self.calls = 0
        self.legs: set[tuple[str, str]] = set()        # (call key, tag) with audio, of calls in progress
        self.legs_ended = 0           # ... and of calls that ended (a live run holds no set of them all)

    @property
    def legs_with_audio(self) -> int:
        return self.legs_ended + len(self.legs)

    def call_started(self, call: Call) -> None:
        self.calls += 1
        self.inner.call_started(call)

    def leg_audio(self, call: Call, leg: LegView, pcm: np.ndarray) -> None:
        self.legs.add((call.key, leg.tag))
        self.inner.leg_audio(call, leg, pcm)

    def call_ended(self, call: Call, legs: dict[str, LegView]) -> None:
        for tag in legs:
            key = (call.key, tag)
            if key in self.legs:
                self.legs.discard(key)
                self.legs_ended += 1
        self.inner.call_ended(call, legs)


class Tee(Sink):
    """Hands everything to several sinks."""

    def __init__(self, *sinks: Sink) -> None:
        self.sinks = sinks

    def call_started(self, call: Call) -> None:
        for s in self.sinks:
            s.call_started(call)

    def leg_audio(self, call: Call, leg: LegView, pcm: np.ndarray) -> None:
        for s in self.sinks:
            s.leg_audio(call, leg, pcm)

    def leg_event(self, call: Call, leg: LegView, event: LegEvent) -> None:
        for s in self.sinks:
            s.leg_event(call, leg, event)

    def call_event(self, call: Call, event: CallEvent) -> None:
        for s in self.sinks:
            s.call_event(call, event)

    def call_ended(self, call: Call, legs: dict[str, LegView]) -> None:
        for s in self.sinks:
            s.call_ended(call, legs)

    def tick(self, now: float) -> None:
        for s in self.sinks:
            s.tick(now)
