"""One direction of a call's audio: RTP packets in, PCM at the output rate out
(16 kHz by default; 8, 24 or 48 kHz: ``rate``).

A ``MediaLeg`` owns the leg's jitter buffer, its timeline, the DTMF
detector, its decoders (G.711 by table; G.722, G.729 and Opus by a library,
``codec.decoders``, one stateful decoder per codec) and the resampler state.  Sans-I/O:
packets arrive with their capture time, and the owner calls ``poll(now)``
when ``next_deadline()`` passes.

Timeline
--------
Sample 0 of the leg is the capture time of its first audio packet
(``start_time``); after that, positions follow the RTP timestamps, so
that silence-suppression gaps, comfort noise, DTMF and lost packets all
become samples (silence, silence, silence, concealment).  A new SSRC, or
an RTP timestamp that disagrees with the capture clock by more than
``RESYNC_SECONDS``, re-anchors the timeline on capture time, so that the
output stays continuous and sample N stays close to ``start_time + N/rate``.
A packet that overlaps audio already emitted is trimmed: no sample is
emitted twice.

Codecs
------
Positions are in 8 kHz units whatever the codec (every codec's packets are whole
multiples of 1/8000 s; an Opus timestamp, at 48 kHz, counts 6 to a unit), and a packet
whose RTP clock differs from the last audio packet's re-anchors on capture time.  G.711
is decoded a run at a time when handed out; the library codecs as each packet is placed
(their decoders keep state, and their concealment, FEC and comfort noise go in timeline
order), at their own rate (``Wide``), and ``take_audio`` resamples each run of one rate
through its filter, drained at a change of rate: a call that goes PCMU -> G.722 -> PCMU
keeps sample N at ``start_time + N/rate``.  Each change of codec is a ``CodecChange``.

Flows
-----
A leg carries one timeline, so it takes one RTP flow (5-tuple) at a time.
The pipeline decides which flows a leg takes (``take_flow``): a second flow
that matches the same SDP leg while the first one goes on becomes its own
leg, tagged ``<tag>#2`` (``extra_tag``), with its own jitter buffer and
timeline; one that takes over (NAT rebinding, media moved by a re-INVITE)
continues this leg.

Interarrival jitter
-------------------
Each leg measures the interarrival jitter of RFC 3550 section 6.4.1 (the code of its
appendix A.8), in RTP timestamp units (8 kHz for G.711): for each audio packet placed
on the timeline after the first, D = |(R - R') * 8000 - (S - S')|, the difference
between how far apart the packet and the one placed before it (R', S') arrived and
how far apart their timestamps say they were sent, and J += (D - J) / 16.  The leg
reports the mean of J over the packets counted (``jitter_ms``) and its largest value
(``max_jitter_ms``), in milliseconds, as Wireshark's RTP stream analysis
(ui/tap-rtp-analysis.c, ``rtppacket_analyse``; ``tshark -z rtp,streams``'s "Mean
Jitter" and "Max Jitter") reports them.  The choices, and where they follow Wireshark:

* first packet of the leg: no D; J starts at 0 and the packet is not counted (as
  Wireshark);
* a new stream (an SSRC change, a sequence restart: the jitter buffer's
  ``new_stream``): its first packet is the new reference and is not counted, and J
  starts again at 0 (RFC 3550 keeps jitter per source; Wireshark makes it a separate
  stream).  The mean and the maximum go on over the leg's streams;
* sequence gaps (loss): nothing special; D spans the gap, with the timestamps of the
  packets on either side (as Wireshark);
* marker bit: J is updated, but the packet is left out of the mean and the maximum
  (as Wireshark, which does so because a talkspurt starts there);
* timestamp jumps: a packet whose D is over ``RESYNC_SECONDS`` (the timeline
  re-anchors on its capture time: hold with a frozen RTP clock, a sender restart)
  becomes the new reference and is not counted; J is kept.  Wireshark counts it, and one
  such jump then dominates its figures for the next hundred packets;
* out-of-order packets: J follows the order packets are *placed*, the sequence order
  the jitter buffer restores, with each packet's own arrival time; Wireshark follows
  arrival order and leaves a packet older than the newest one out of the mean and the
  maximum.  Duplicates and packets too late to place are not measured (Wireshark
  measures them, out of the mean);
* only the audio the leg decodes is measured (a codec it decodes): comfort
  noise, DTMF and unknown payload types are not, and do not move the reference (an
  encrypted leg has no figure).  Wireshark computes J on comfort noise too and leaves
  the packet after it out of the mean;
* the mean is the sum of J over the packets counted divided by their number.  Wireshark
  divides by every packet of the stream after the first, carrying its running mean for
  the packets it leaves out: the same figure when it leaves none out.

A stream with neither markers after its first packet, comfort noise nor reordering,
loss or not, gets Wireshark's figures (tests/media/test_leg_jitter.py compares with
tshark's).  The fast path (rtp2ws.fastpath) measures the packets it takes with the
same arithmetic on the same values, and hands the state back (``Jitter``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple, TypedDict, cast

import numpy as np

from ..codec import g711
from ..codec.decoders import SUPPORTED, CodecUnavailable, Decoder, make_decoder
from ..codec.resample import AnyConverter, make_converter, make_upsampler
from .dtmf import DtmfDetector, DtmfEvent
from .jitterbuffer import JitterBuffer, Released
from .plc import FADE_SAMPLES, conceal
from .quality import Delta, LegQuality
from .rtp import RtpPacket
from .seq import uint32

if TYPE_CHECKING:
    from ..signalling.correlator import Addr, Flow

CLOCK = 8000
RESYNC_SECONDS = 0.5
EXTRA_LEGS = 3          # concurrent flows beyond the first, per direction: <tag>#2 .. <tag>#4
OWN_FLOWS = 8           # flows a leg remembers having taken (NAT rebinding, re-INVITE moves)
_DECODERS = {"PCMA": g711.decode_alaw, "PCMU": g711.decode_ulaw}     # decoded here, lazily, by table
# what a leg knows without SDP: the static payload types it decodes (RFC 3551)
STATIC_MAP = {0: ("PCMU", 8000), 8: ("PCMA", 8000), 9: ("G722", 8000), 13: ("CN", 8000), 18: ("G729", 8000)}
MAX_SEGMENTS = 100       # codec segments a leg lists (a codec flapping for hours: its first 100)
PLC_MAX = CLOCK // 5      # the codec's own concealment at most 200 ms (then silence), a loss's
FILL_MAX = 10 * CLOCK     # comfort noise (G.729 B, Opus DTX) at most 10 s of a gap (then silence)


def extra_tag(tag: str, n: int) -> str:
    """The tag of a direction's ``n``-th concurrent flow (n >= 2): ``caller#2``."""
    return f"{tag}#{n}"


def remember_flow(own: dict[Flow, bool], flow: Flow) -> None:
    """``flow`` becomes the newest of a leg's ``own_flows``, which keep the last OWN_FLOWS."""
    own.pop(flow, None)
    own[flow] = True
    if len(own) > OWN_FLOWS:
        del own[next(iter(own))]


class Wide:
    """Audio a codec decoder gave at its own rate (``source``: G.722's 16 kHz, Opus's
    output rate; G.729's 8 kHz is an array like G.711's), waiting to be resampled."""

    __slots__ = ("source", "pcm")

    def __init__(self, source: int, pcm: np.ndarray) -> None:
        self.source = source
        self.pcm = pcm

    @property
    def ticks(self) -> int:
        return len(self.pcm) * CLOCK // self.source


# Audio waiting to be resampled: 8 kHz audio (an array, or a G.711 packet's (codec,
# payload) still to decode), a gap's silence as its length in 8 kHz units, or a
# decoder's audio at another rate (``Wide``).
Pending = int | tuple[str, bytes] | np.ndarray | Wide


def _assemble(pending: list[Pending]) -> np.ndarray:
    """8 kHz samples from pending items: arrays as they are, runs of (codec, payload)
    decoded with one table look-up per run."""
    parts: list[np.ndarray] = []
    run: list[bytes] = []
    codec = ""        # the run's codec, set by its first item
    for item in pending:
        if type(item) is int:         # a gap's silence, kept as its length until now
            item = np.zeros(item, dtype=np.int16)
        if type(item) is tuple:
            if item[0] != codec and run:
                parts.append(_DECODERS[codec](b"".join(run)))
                run = []
            codec = item[0]
            run.append(item[1])
        else:
            if run:
                parts.append(_DECODERS[codec](b"".join(run)))
                run = []
            parts.append(cast(np.ndarray, item))     # neither int nor tuple: an array
    if run:
        parts.append(_DECODERS[codec](b"".join(run)))
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


MAX_DTMF_LISTED = 1000     # key presses a leg lists for its manifest entry (each is also an event)

MAX_TAKE = 60 * CLOCK        # 8 kHz samples resampled and handed to the sinks at once, at most

class CodecChange(NamedTuple):
    codec: str
    at: float   # capture time


LegEvent = DtmfEvent | CodecChange     # what ``take_events`` hands out


class Jitter(NamedTuple):
    """A leg's interarrival jitter so far (module docstring), in RTP timestamp units (8 kHz):
    what the fast path is given when it arms a leg and hands back when it takes it."""

    current: float         # J after the last packet placed
    total: float           # the sum of J over the packets counted
    counted: int           # packets counted (in the mean and the maximum)
    peak: float            # the largest J counted


NO_JITTER = Jitter(0.0, 0.0, 0, 0.0)


def jitter_ms(jitter: Jitter) -> tuple[float | None, float | None]:
    """(mean, max) jitter in milliseconds, rounded to the microsecond as Wireshark prints
    them; (None, None) before a packet was counted."""
    if not jitter.counted:
        return None, None
    per_ms = CLOCK / 1000
    return round(jitter.total / jitter.counted / per_ms, 3), round(jitter.peak / per_ms, 3)


class LegStats(TypedDict):
    """A leg's statistics (``MediaLeg.stats``), as calls.json and the ``end`` message give them."""

    packets: int
    lost: int
    late: int
    duplicates: int
    reordered: int
    concealed_ms: int
    jitter_ms: float | None       # mean interarrival jitter (``jitter_ms()``), None before any
    max_jitter_ms: float | None


class FastState(NamedTuple):
    """What the fast path needs to take a leg's next packets (``MediaLeg.fast_state``)."""

    ssrc: int
    next_ext: int          # extended sequence number expected next
    alaw: bool             # PCMA (else PCMU)
    expect_ts: int         # the RTP timestamp that continues the timeline with no gap
    last_ts: int           # extended RTP timestamp of the last audio packet placed
    last_arrival: float    # its capture time
    pending_samples: int   # 8 kHz samples the leg holds, not yet handed out
    jitter: Jitter         # the interarrival jitter so far
    delta: Delta           # the max-delta state (rtp2ws.media.quality)


class MediaLeg:
    # Slots: a leg has more attributes than an instance keeps without a dict of its own
    # (30), and that dict (1.6 KB) was a third of a leg's memory.
    __slots__ = ("tag", "jb", "pt_map", "encrypted", "dtmf", "start_time", "ssrcs", "codecs", "flows", "flow",
                 "flow_expect", "own_flows", "dtmf_events", "counts", "concealed", "filled", "decoded", "_cursor",
                 "_ts_off", "_last_ts", "_last_arrival", "_last_n", "_last_audio", "_codec", "_pending",
                 "pending_samples", "_lost_carry", "_restart", "_up", "_events", "closed", "_drained",
                 "_jitter", "_jitter_total", "_jitter_counted", "_jitter_peak", "rate", "_decoders", "_clock",
                 "_domain", "_conv", "_fed", "_wide", "_last_wide", "quality", "srtp", "codec_segments")

    def __init__(self, tag: str, *, depth: float = 0.060, rate: int = 16000) -> None:
        self.tag = tag
        self.rate = rate             # of the audio handed out (rtp2ws.codec.resample.RATES)
        self.jb = JitterBuffer(depth)
        self.pt_map: dict[int, tuple[str, int]] = dict(STATIC_MAP)
        self.encrypted = False
        self.srtp: str | None = None   # the SRTP suite its SDP keys (SDES) are for: decrypted before it
        self.dtmf = DtmfDetector()
        self.start_time: float | None = None
        self.ssrcs: list[int] = []
        self.codecs: list[str] = []
        # (codec, capture time it began) of each segment, at most MAX_SEGMENTS: made at the first
        self.codec_segments: list[tuple[str, float]] | None = None
        self.flows: list[tuple[str, str]] = []   # (src, dst) as text, in order first seen
        self.flow: Flow | None = None   # the RTP flow (packed 5-tuple) taken now; set by the pipeline
        # the SDP expectation (dst, src) when it was taken
        self.flow_expect: tuple[Addr | None, Addr | None] | None = None
        self.own_flows: dict[Flow, bool] = {}        # flows taken so far, oldest first (at most OWN_FLOWS)
        self.dtmf_events: list[DtmfEvent] = []
        self.counts = {
            "packets": 0, "bytes": 0, "cn": 0, "unknown_pt": 0, "encrypted_packets": 0,
            "rtcp": 0, "stun": 0, "zrtp": 0, "dtls": 0, "malformed": 0, "overlap_dropped": 0, "extra_flow_dropped": 0,
            "dtmf_not_listed": 0, "srtp_failed": 0, "srtcp_failed": 0, "srtp_replayed": 0,
        }
        self.concealed = 0       # 8 kHz samples concealed after loss
        self.filled = 0          # 8 kHz samples of silence inserted in gaps
        self.decoded = 0         # 8 kHz samples decoded from payloads
        self._cursor = 0         # 8 kHz samples emitted so far
        self._ts_off = 0         # extended timestamp - timeline position
        self._last_ts = 0        # extended timestamp of the last audio packet placed
        self._last_arrival = 0.0
        self._last_n = 0
        self._last_audio: tuple[str, bytes] | None = None   # (codec, payload) of the last packet
        self._codec: str | None = None
        self._pending: list[Pending] = []   # 8 kHz audio not yet resampled: arrays, or (codec, payload) to decode
        self.pending_samples = 0   # ... and how many 8 kHz samples that is
        self._lost_carry = 0
        self._restart = False
        self._up = make_upsampler(rate)   # 8 kHz -> rate (16 kHz: Upsampler2x, as the fast path filters)
        # Codecs decoded by a library (codec.decoders), made at their first packet: name -> decoder
        # (None: its library is missing); the RTP clock of the last audio packet placed
        self._decoders: dict[str, Decoder | None] | None = None    # made at the first (most legs: G.711 only)
        self._clock = CLOCK
        # take_audio's filter: from ``_domain`` (the rate of the audio it takes now) to ``rate``;
        # ``_fed``: it has had input since it was last flushed; ``_wide``: a decoder's audio
        # (``Wide``) is pending, or ``_domain`` is not 8 kHz (take_audio's general way)
        self._domain = CLOCK
        self._conv: AnyConverter = self._up
        self._fed = False
        self._wide = False
        self._last_wide: np.ndarray | None = None    # the last library-decoded packet's audio
        self._events: list[LegEvent] = []
        self.closed = False
        self._drained = False
        self._jitter = 0.0           # interarrival jitter J (module docstring), 8 kHz units
        self._jitter_total = 0.0     # ... summed over the packets counted
        self._jitter_counted = 0
        self._jitter_peak = 0.0
        self.quality = LegQuality()      # loss, max delta, RTCP about the leg, MOS (rtp2ws.media.quality)

    # -- flows (decided by the pipeline) ------------------------------------------

    def take_flow(self, flow: Flow, expect: tuple[Addr | None, Addr | None] | None = None) -> None:
        """From now on this leg's audio comes on ``flow`` (its first, or a replacement);
        ``expect`` is what signalling expected of the leg's flows at that moment."""
        self.flow = flow
        self.flow_expect = expect
        remember_flow(self.own_flows, flow)

    def add_flow(self, src: str, dst: str) -> None:
        """List a flow the leg's packets came on, as text (``flows``: the pipeline lists
        the first, from the first packet for the leg, RTP, STUN or ZRTP, not RTCP)."""
        self.flows.append((src, dst))

    # -- packets the pipeline saw on the leg's addresses, counted here ------------------

    def count_malformed(self) -> None:
        """An RTP packet for the leg that did not parse."""
        self.counts["malformed"] += 1

    def count_other(self, kind: str) -> None:
        """A packet on the leg's addresses that is not RTP: ``rtcp``, ``stun``, ``zrtp`` or
        ``dtls`` (ZRTP and DTLS-SRTP negotiate keys: the leg's audio is encrypted from then on)."""
        self.counts[kind] += 1
        if kind == "zrtp" or kind == "dtls":
            self.encrypted = True

    def count_srtp(self, kind: str) -> None:
        """An SRTP or SRTCP packet for the leg that was dropped before it (media.srtp):
        ``srtp_failed``/``srtcp_failed`` (no key authenticates it), ``srtp_replayed``."""
        self.counts[kind] += 1

    def count_extra_flow_dropped(self, n: int) -> None:
        """``n`` packets of a new flow that no leg took (beyond ``EXTRA_LEGS``, or bounds)."""
        self.counts["extra_flow_dropped"] += n

    # -- configuration from signalling ---------------------------------------

    def set_payload_map(self, pt_map: dict[int, tuple[str, int]]) -> None:
        merged = dict(STATIC_MAP)
        merged.update(pt_map)
        self.pt_map = merged
        for name, rate in merged.values():
            if name == "TELEPHONE-EVENT" and rate:
                self.dtmf.clock_rate = rate

    def set_srtp(self, suite: str | None) -> None:
        """Its packets are SRTP with keys from SDP (``suite``), decrypted before they
        reach it (the pipeline's rtp2ws.media.srtp.SrtpStream); None: no longer."""
        self.srtp = suite

    def mark_encrypted(self) -> None:
        """The leg's audio is encrypted (SRTP in SDP, or its SDP leg's is): its packets
        are counted, not decoded.  Never undone."""
        self.encrypted = True

    # -- input ------------------------------------------------------------------

    def push(self, pkt: RtpPacket, now: float) -> None:
        c = self.counts
        c["packets"] += 1
        c["bytes"] += len(pkt.payload)
        if pkt.ssrc not in self.ssrcs:
            self.ssrcs.append(pkt.ssrc)
        self.quality.on_rtp(pkt.ssrc, pkt.sequence, pkt.timestamp, pkt.marker, pkt.payload_type, now)
        for r in self.jb.push(pkt, now):
            self._place(r)

    def poll(self, now: float) -> None:
        for r in self.jb.poll(now):
            self._place(r)

    def next_deadline(self) -> float | None:
        return self.jb.next_deadline()

    def close(self) -> None:
        """End of the leg: release everything held and drain the resampler."""
        if self.closed:
            return
        for r in self.jb.flush():
            self._place(r)
        for ev in self.dtmf.flush():
            self._add_dtmf(ev)
        self.closed = True

    # -- output -----------------------------------------------------------------

    def take_audio(self) -> np.ndarray:
        """Samples at ``rate`` produced since the last call (the tail too once closed), at
        most ``MAX_TAKE`` 8 kHz samples' worth: call again while ``pending_samples``."""
        pending = self._pending
        if self._wide:
            y = self._take_mixed()
        elif pending:
            self._fed = True
            first = pending[0]
            if type(first) is int and first >= CLOCK:     # a second or more of a gap's silence:
                n = first if first <= MAX_TAKE else MAX_TAKE   # nothing to assemble, and once the
                if n == first:                                  # filter has run out, no arithmetic
                    del pending[0]
                else:
                    pending[0] = first - n
                self.pending_samples -= n
                y = self._up.silence(n)
            elif self.pending_samples > MAX_TAKE:
                y = self._up.process(self._take_front(MAX_TAKE))
            else:
                x = first if len(pending) == 1 and type(first) is np.ndarray else _assemble(pending)
                self._pending = []
                self.pending_samples = 0
                y = self._up.process(x)
        else:
            y = np.zeros(0, dtype=np.int16)
        if self.closed and not self._drained and not self._pending:
            self._drained = True
            if self._fed:
                y = np.concatenate([y, self._conv.flush()])
        return y

    def _take_mixed(self) -> np.ndarray:
        """``take_audio`` when a decoder's audio at another rate is pending, or the filter
        takes such audio now: runs of one rate at a time, each through its filter; at a
        change of rate the filter so far is drained (its output then has exactly its
        input's length at ``rate``) and the next one starts afresh.  At most ``MAX_TAKE``."""
        pending = self._pending
        out: list[np.ndarray] = []
        budget = MAX_TAKE
        while pending and budget:
            head = pending[0]
            domain = head.source if type(head) is Wide else self._domain if type(head) is int else CLOCK
            if domain != self._domain:
                if self._fed:
                    out.append(self._conv.flush())
                else:
                    self._conv.reset()
                self._fed = False
                self._domain = domain
                self._conv = self._up if domain == CLOCK else make_converter(domain, self.rate)
            run: list[Pending] = []
            while pending and budget:
                item = pending[0]
                kind = type(item)
                if kind is Wide:
                    wide = cast(Wide, item)
                    if wide.source != domain:
                        break
                    n = wide.ticks
                elif kind is int:
                    n = cast(int, item)
                elif domain != CLOCK:
                    break
                else:
                    n = len(item[1]) if kind is tuple else len(cast(np.ndarray, item))   # type: ignore[index]
                if n > budget:           # the part that fits; the rest stays
                    k = budget
                    if kind is int:
                        run.append(k)
                        pending[0] = n - k
                    elif kind is Wide:
                        cut = k * wide.source // CLOCK
                        run.append(Wide(wide.source, wide.pcm[:cut]))
                        pending[0] = Wide(wide.source, wide.pcm[cut:])
                    elif kind is tuple:
                        codec, payload = cast(tuple[str, bytes], item)
                        run.append((codec, payload[:k]))
                        pending[0] = (codec, payload[k:])
                    else:
                        array = cast(np.ndarray, item)
                        run.append(array[:k])
                        pending[0] = array[k:]
                    n = k
                else:
                    run.append(item)
                    del pending[0]
                budget -= n
                self.pending_samples -= n
            if not run:
                continue
            self._fed = True
            if domain == CLOCK:
                out.append(self._conv.process(_assemble(run)))
            else:
                out.append(self._conv.process(np.concatenate([
                    item.pcm if isinstance(item, Wide) else np.zeros(cast(int, item) * domain // CLOCK, np.int16)
                    for item in run])))
        if not pending and self._domain == CLOCK:
            self._wide = False       # back to the usual way
        if not out:
            return np.zeros(0, dtype=np.int16)
        return out[0] if len(out) == 1 else np.concatenate(out)

    def _take_front(self, limit: int) -> np.ndarray:
        """The first ``limit`` 8 kHz samples of what is pending, or fewer up to a second
        or more of silence (that goes out on its own); the rest stays."""
        pending = self._pending
        out: list[Pending] = []
        need = limit
        i = 0
        while need and i < len(pending):
            item = pending[i]
            if type(item) is int and item >= CLOCK and out:
                break                 # a long silence goes on its own (MediaLeg.take_audio)
            n = item if type(item) is int else len(item[1]) if type(item) is tuple else len(cast(np.ndarray, item))
            if n <= need:
                out.append(item)
                need -= n
                i += 1
                continue
            if type(item) is int:
                out.append(need)
                pending[i] = n - need
            elif type(item) is tuple:
                out.append((item[0], item[1][:need]))
                pending[i] = (item[0], item[1][need:])
            else:
                array = cast(np.ndarray, item)     # neither int nor tuple
                out.append(array[:need])
                pending[i] = array[need:]
            need = 0
        del pending[:i]
        self.pending_samples -= limit - need
        return _assemble(out)

    def take_events(self) -> list[LegEvent]:
        ev, self._events = self._events, []
        return ev

    @property
    def last_arrival(self) -> float:
        """Capture time of the newest audio packet placed on the timeline."""
        return self._last_arrival

    @property
    def last_packet_samples(self) -> int:
        """8 kHz samples of the newest audio packet placed on the timeline."""
        return self._last_n

    # -- the fast path (rtp2ws.fastpath: the driver arms and syncs, the twin takes) --------

    def fast_state(self, payload_type: int) -> FastState | None:
        """What the fast path needs to take this leg's next packets, when the next
        in-order packet of ``payload_type`` would go the shortest way through the jitter
        buffer and ``_place``; None otherwise."""
        jb = self.jb
        codec = self._codec
        if (not jb.in_order or self.closed or self.encrypted or self._restart or self._lost_carry or self._wide
                or self.start_time is None or codec not in _DECODERS or self._last_audio is None
                or self.pt_map.get(payload_type, ("?", 0))[0] != codec):
            return None
        ssrc = jb.ssrc
        assert ssrc is not None  # in_order: the buffer follows a stream
        if not self.quality.fast_ok(ssrc):
            return None
        return FastState(ssrc, jb.next_sequence, codec == "PCMA", uint32(self._cursor + self._ts_off),
                         self._last_ts, self._last_arrival, self.pending_samples, self.jitter,
                         self.quality.delta)

    def absorb(self, packets: int, nbytes: int, next_ext: int, last_ts: int, last_arrival: float,
               last_payload: bytes | None, samples: bytes, streamed: int = 0, *,
               jitter: tuple[float, float, int, float], delta: tuple[float, int, float]) -> None:
        """``packets`` in-order packets the fast path took since ``fast_state``: their
        8 kHz ``samples`` go on the timeline as ``_place`` would have put them, and
        ``streamed`` samples went on it straight to the leg's stream (the fast path
        streamed them, with this leg's filter state: ``resampler_state``); ``jitter``
        is the leg's interarrival jitter after them, ``delta`` its max-delta state.
        (``last_payload`` is None only when the fast path took none: not absorbed)."""
        assert last_payload is not None  # packets > 0: the fast path took some
        self.counts["packets"] += packets
        self.counts["bytes"] += nbytes
        self.quality.on_taken(self.jb.next_sequence & 0xFFFF, packets, delta)
        self.jb.advance(next_ext, packets)
        pcm = np.frombuffer(samples, dtype=np.int16)
        n = len(pcm)
        if n:
            self._pending.append(pcm)
        if streamed:
            self._fed = True
        self.decoded += n + streamed
        self.pending_samples += n
        self._cursor += n + streamed
        self._last_ts = last_ts
        self._last_arrival = last_arrival
        self._last_n = len(last_payload)
        assert self._codec is not None  # fast_state gave the fast path a codec
        self._last_audio = (self._codec, last_payload)
        self._jitter, self._jitter_total, self._jitter_counted, self._jitter_peak = jitter

    def absorb_samples(self, samples: bytes, streamed: int = 0) -> None:
        """Audio of packets an earlier ``absorb`` counted (a leg the fast path
        streamed): ``samples`` (8 kHz) it had not streamed yet go on the timeline, and
        ``streamed`` samples it streamed since are counted as there."""
        pcm = np.frombuffer(samples, dtype=np.int16)
        n = len(pcm)
        if n:
            self._pending.append(pcm)
            self.pending_samples += n
        if streamed:
            self._fed = True
        self.decoded += n + streamed
        self._cursor += n + streamed

    @property
    def resampler_state(self) -> bytes:
        """The 8 kHz -> ``rate`` filter's state: the fast path streams a 16 kHz leg from
        it, and hands back its own when it stops."""
        return self._up.state

    @resampler_state.setter
    def resampler_state(self, state: bytes) -> None:
        self._up.state = state
        self._fed = True

    @property
    def samples_out(self) -> int:
        """Samples at ``rate`` on the timeline so far."""
        return self.rate // CLOCK * self._cursor

    @property
    def jitter(self) -> Jitter:
        """The interarrival jitter so far (module docstring), in RTP timestamp units."""
        return Jitter(self._jitter, self._jitter_total, self._jitter_counted, self._jitter_peak)

    @property
    def stats(self) -> LegStats:
        js = self.jb.stats
        mean, peak = jitter_ms(self.jitter)
        return {
            "packets": self.counts["packets"],
            "lost": js["lost"],
            "late": js["late"],
            "duplicates": js["duplicates"],
            "reordered": js["reordered"],
            "concealed_ms": self.concealed * 1000 // CLOCK,
            "jitter_ms": mean,
            "max_jitter_ms": peak,
        }

    @property
    def quality_report(self) -> dict[str, Any]:
        """The leg's ``quality`` (``rtp2ws.media.quality``: loss, max delta, jitter, RTCP's
        view, MOS), as calls.json and the ``end`` message give it."""
        return self.quality.report(self._codec, self.jb.depth, *jitter_ms(self.jitter), clock=self._clock)

    # -- internals ----------------------------------------------------------------

    def _add_dtmf(self, ev: DtmfEvent) -> None:
        if len(self.dtmf_events) < MAX_DTMF_LISTED:
            self.dtmf_events.append(ev)      # for the manifest and the end message
        else:
            self.counts["dtmf_not_listed"] += 1
        self._events.append(ev)

    def _decoder(self, name: str) -> Decoder | None:
        """The leg's decoder for ``name`` (a key of ``codec.decoders.SUPPORTED``), made at
        its first use; None when its library is not installed (its packets are then
        counted as ``unknown_pt``)."""
        decoders = self._decoders
        if decoders is None:
            decoders = self._decoders = {}
        elif name in decoders:
            return decoders[name]
        try:
            dec: Decoder | None = make_decoder(name, self.rate)
        except CodecUnavailable:
            dec = None
        decoders[name] = dec
        return dec

    def _place(self, r: Released) -> None:
        pkt = r.packet
        if r.new_stream:
            self._restart = True
            for old in (self._decoders or {}).values():    # a new stream: its decoders start again
                if old is not None:
                    old.reset()
        name, clock = self.pt_map.get(pkt.payload_type, ("?", 0))
        decode = _DECODERS.get(name)
        dec = None
        if decode is None:
            dec = self._decoder(name) if name in SUPPORTED else None
            if dec is None:
                self._lost_carry += r.lost_before
                if name == "TELEPHONE-EVENT":
                    for ev in self.dtmf.feed(pkt, r.arrival):
                        self._add_dtmf(ev)
                elif name == "CN":
                    self.counts["cn"] += 1
                else:
                    self.counts["unknown_pt"] += 1
                    self._note_codec(f"PT{pkt.payload_type}" if name == "?" else name, r.arrival)
                return
        if self.encrypted:
            self.counts["encrypted_packets"] += 1
            return
        payload = pkt.payload
        if dec is None:
            n = len(payload)
        elif not payload:
            n = 0
        else:
            try:
                n = dec.duration(payload)
            except ValueError:
                self._lost_carry += r.lost_before
                self.counts["malformed"] += 1
                return
        if name != self._codec:
            if dec is not None and self._codec is not None and name in self.codecs:
                dec.reset()          # a new segment of a codec seen before: a new stream for its decoder
            self._note_codec(name, r.arrival)
        if n == 0:
            return
        clock = clock or CLOCK
        lost = r.lost_before + self._lost_carry
        self._lost_carry = 0
        if self.start_time is None:
            self.start_time = r.arrival
            pos = 0
            self._ts_off = pkt.timestamp
            self._clock = clock
            ts = pkt.timestamp
        else:
            d = (pkt.timestamp - self._last_ts) & 0xFFFFFFFF     # seq.uint32_delta, inlined (per packet)
            if d >= 0x80000000:
                d -= 0x100000000
            ts = self._last_ts + d
            arrival_gap = (r.arrival - self._last_arrival) * CLOCK
            # RFC 3550's D (module docstring: Interarrival jitter), in 8 kHz units whatever the clock
            skew = abs((d if clock == CLOCK else d * CLOCK / clock) - arrival_gap)
            if self._restart or clock != self._clock or skew > RESYNC_SECONDS * CLOCK:
                # a new stream, a codec of another RTP clock, a jump: on capture time
                gap = max(0, round(arrival_gap) - self._last_n)
                pos = self._cursor + gap
                self._ts_off = ts - pos * clock // CLOCK
                self._clock = clock
                if self._restart:
                    self._jitter = 0.0       # a new stream: its J starts again
            else:
                pos = ts - self._ts_off if clock == CLOCK else (ts - self._ts_off) * CLOCK // clock
                # the fast path does the same arithmetic (twin.py, native/fastpath.c)
                j = self._jitter = self._jitter + (skew - self._jitter) / 16
                if not pkt.marker:
                    self._jitter_total += j
                    self._jitter_counted += 1
                    if j > self._jitter_peak:
                        self._jitter_peak = j
        self._restart = False
        self._last_ts = ts
        self._last_arrival = r.arrival
        self._last_n = n
        if dec is not None:
            self._place_decoded(dec, payload, n, pos, lost)
            return
        if pos > self._cursor:
            gap = pos - self._cursor
            hidden = min(gap, lost * n) if lost else 0
            if hidden:
                last = _DECODERS[self._last_audio[0]](self._last_audio[1]) if self._last_audio else None
                self._pending.append(conceal(last, hidden))
                self.concealed += hidden
            if gap > hidden:
                # Silence as its length: a call kept up by SIP alone for hours, then one
                # packet, must not become one array of hours of zeros (take_audio makes
                # them a bounded piece at a time).
                self._pending.append(gap - hidden)
                self.filled += gap - hidden
            self.pending_samples += gap
            self._cursor = pos
        elif pos < self._cursor:
            trim = self._cursor - pos
            if trim >= n:
                self.counts["overlap_dropped"] += 1
                return
            payload = payload[trim:]
        # decoded later, a run of packets at a time (take_audio): G.711 is one byte a sample
        item = (name, payload)
        self._pending.append(item)
        self._last_audio = item
        self.decoded += len(payload)
        self.pending_samples += len(payload)
        self._cursor += len(payload)

    def _place_decoded(self, dec: Decoder, payload: bytes, n: int, pos: int, lost: int) -> None:
        """A packet of a library-decoded codec at timeline position ``pos`` (8 kHz units),
        ``n`` long, ``lost`` packets lost just before it: the gap before it (the codec's
        forward error correction, concealment or comfort noise where it has them), then
        its audio, decoded now (the decoder is stateful: in timeline order)."""
        rate = dec.rate
        if pos > self._cursor:
            gap = pos - self._cursor
            hidden = min(gap, lost * n) if lost else 0
            if hidden:
                # concealment (at most PLC_MAX, then silence as its length), and with FEC the
                # packet's redundancy for the audio just before it (libopus: in that order)
                fec = min(hidden, n) if dec.has_fec else 0
                head = min(hidden - fec, PLC_MAX)
                if head:
                    self._add_wide(rate, self._conceal(dec, head))
                if hidden - fec - head:
                    self._pending.append(hidden - fec - head)
                if fec:
                    recovered = dec.recover(payload, fec)
                    self._add_wide(rate, self._conceal(dec, fec) if recovered is None else recovered)
                self.concealed += hidden
            rest = gap - hidden
            if rest:
                noise = None if lost else dec.fill(min(rest, FILL_MAX))
                if noise is not None:
                    self._add_wide(rate, noise)
                    rest -= len(noise) * CLOCK // rate
                if rest:
                    self._pending.append(rest)
                self.filled += gap - hidden
            self.pending_samples += gap
            self._cursor = pos
        elif pos < self._cursor and self._cursor - pos >= n:
            self.counts["overlap_dropped"] += 1
            return
        try:
            pcm = dec.decode(payload)
        except ValueError:
            self.counts["malformed"] += 1           # its place on the timeline is concealed
            pcm = self._conceal(dec, n)
        want = n * rate // CLOCK
        if len(pcm) != want:
            pcm = np.concatenate([pcm, np.zeros(want - len(pcm), np.int16)]) if len(pcm) < want else pcm[:want]
        self._last_wide = pcm
        self._last_audio = None
        if pos < self._cursor:
            trim = self._cursor - pos
            pcm = pcm[trim * rate // CLOCK:]
            n -= trim
        self._add_wide(rate, pcm)
        self.decoded += n
        self.pending_samples += n
        self._cursor += n

    def _add_wide(self, rate: int, pcm: np.ndarray) -> None:
        self._pending.append(pcm if rate == CLOCK else Wide(rate, pcm))
        if rate != CLOCK:
            self._wide = True

    def _conceal(self, dec: Decoder, ticks: int) -> np.ndarray:
        """``ticks`` (8 kHz units, at most ``PLC_MAX`` but for a packet that did not
        decode) of concealment at ``dec.rate``: the codec's own, else the last packet's
        audio repeated and faded out, then silence."""
        rate = dec.rate
        total = ticks * rate // CLOCK
        own = dec.conceal(ticks)
        if own is None:
            return conceal(self._last_wide, total, FADE_SAMPLES * rate // CLOCK)
        if len(own) >= total:
            return own[:total]
        return np.concatenate([own, np.zeros(total - len(own), np.int16)])

    def _note_codec(self, name: str, at: float) -> None:
        if name not in self.codecs:
            self.codecs.append(name)
        if name != self._codec:
            if self._codec is not None:
                self._events.append(CodecChange(name, at))
            self._codec = name
            segments = self.codec_segments
            if segments is None:
                self.codec_segments = [(name, at)]
            elif len(segments) < MAX_SEGMENTS:
                segments.append((name, at))
