"""Media-only calls: RTP that no signalling claims (capture started mid-call, SIP not mirrored).

An unclaimed flow waits in *probation* (RFC 3550's word) until its next packet, in
sequence and soon after, makes it a media-only call, ``rtp:<src>-<dst>``; the flow's
sender is the caller, and the other direction's packet waiting in probation goes with
it.  When signalling later names a media-only call's addresses, that call is
*identified*: it ends and the media goes on in the signalled call.  RTP to or from a
call that ended less than ``ENDED_MEDIA_GRACE`` ago is a straggler, not a new call.

Sans-I/O like the rest of the core: packets and their capture times in, what the
pipeline must do out (``Promoted``: adopt a call; otherwise a verdict to count).  The
pipeline owns the calls, legs and sink; this owns only its three tables, each bounded:

* ``flows``: one entry per unclaimed flow (its latest packet), at most ``max_flows``.
  A full table makes room only by a flow quiet ``PROBATION_STALE``: evicting the oldest
  whatever its age would let more flows than slots push each other out in turn, and
  none would ever see its second packet (issue 10, item 8: 4,097 calls in progress gave
  none).  Otherwise the packet waits outside (``FULL``, counted) and its flow tries again
  with its next one.
* ``calls``: the endpoints of each media-only call in progress, until it ends.
* ``ended``: the addresses of calls that ended, for ``ENDED_MEDIA_GRACE``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import NamedTuple

from ..media.rtp import KIND_RTP, RtpPacket, classify, parse_rtp
from ..media.seq import uint16_add
from ..signalling.correlator import format_addr

PROBATION_FLOWS = 65536    # unclaimed RTP flows watched at once (about 0.5 KB each)
PROBATION_STALE = 2.0      # seconds after which a flow's one packet in probation may make room
ENDED_MEDIA_GRACE = 32.0   # RTP to/from an ended call's addresses this soon after is a straggler

# What ``Probation.offer`` says when it does not promote a flow.
NOT_AUDIO = "not_audio"    # not RTP, or not G.711 of a packet time a call uses: nothing kept
AFTER_END = "after_end"    # to or from a call that ended less than ENDED_MEDIA_GRACE ago (``rtp_after_end``)
FULL = "full"              # the table is full of fresh flows: the packet waits outside (``probation_full``)
WAITING = "waiting"        # kept in probation until the flow's next packet

Addr = tuple[bytes, int]                  # (packed IP, port)
Flow = tuple[bytes, int, bytes, int]      # (src IP, src port, dst IP, dst port)


class Promoted(NamedTuple):
    """Two packets in sequence on an unclaimed flow: a media-only call for it."""

    call_id: str                               # rtp:<src>-<dst>
    src: Addr                                  # the flow's sender: the caller leg is what it sends
    dst: Addr
    first: tuple[RtpPacket, float]             # the flow's earlier packet; its time is the call's start
    back: tuple[RtpPacket, float] | None       # the other direction's packet waiting in probation, if any


class Probation:
    """Unclaimed RTP flows, media-only calls in progress, addresses of calls just ended."""

    def __init__(self, max_flows: int = PROBATION_FLOWS) -> None:
        if max_flows < 1:
            raise ValueError("max_flows must be at least 1")
        self.max_flows = max_flows
        # Both in time order, looked at from the front: OrderedDict, since a dict whose
        # front entries were deleted scans past them on every next(iter(...)).
        self.flows: OrderedDict[Flow, tuple[RtpPacket, float]] = OrderedDict()   # by each flow's latest packet
        self.ended: OrderedDict[Addr, float] = OrderedDict()    # addresses of calls just ended -> end time
        self.calls: dict[str, set[Addr]] = {}                   # media-only call key -> its two endpoints

    def offer(self, flow: Flow, payload: bytes, now: float) -> Promoted | str:
        """A UDP payload on ``flow`` that no signalling claims, captured at ``now``.
        ``Promoted`` when it is the flow's next packet in sequence (same SSRC, sequence
        one on, less than ``PROBATION_STALE`` after): the pipeline adopts the call, feeds
        it ``first`` (and ``back``) and then this packet.  Otherwise a verdict:
        ``NOT_AUDIO``, ``AFTER_END``, ``FULL`` or ``WAITING``."""
        if classify(payload) != KIND_RTP:
            return NOT_AUDIO
        try:
            rtp = parse_rtp(payload)
        except ValueError:
            return NOT_AUDIO
        if rtp.payload_type not in (0, 8) or not 40 <= len(rtp.payload) <= 480:
            return NOT_AUDIO
        src, dst = (flow[0], flow[1]), (flow[2], flow[3])
        ended = self.ended
        if ended:
            t = ended.get(src) or ended.get(dst)
            if t is not None and now - t < ENDED_MEDIA_GRACE:
                return AFTER_END      # in flight after BYE: not a new call
        flows = self.flows
        prev = flows.pop(flow, None)
        if prev is None or uint16_add(prev[0].sequence, 1) != rtp.sequence or prev[0].ssrc != rtp.ssrc \
                or not 0 <= now - prev[1] < PROBATION_STALE:
            # (two packets in sequence hours apart are no call in progress: the second
            # starts probation again, found by fuzz/targets/pipeline)
            if len(flows) >= self.max_flows:
                old = next(iter(flows))
                if now - flows[old][1] < PROBATION_STALE:
                    return FULL
                del flows[old]
            flows[flow] = (rtp, now)
            return WAITING
        back = flows.pop((flow[2], flow[3], flow[0], flow[1]), None)
        call_id = f"rtp:{format_addr(*src)}-{format_addr(*dst)}"
        self.calls[call_id] = {src, dst}
        return Promoted(call_id, src, dst, prev, back)

    def identify(self, named: set[Addr]) -> list[str]:
        """The media-only calls, by key, with an endpoint among the addresses ``named``
        by a signalled call's SDP: the pipeline ends them (``identified``)."""
        return [key for key, ends in self.calls.items() if ends & named]

    def call_ended(self, key: str, addresses: Iterable[Addr], end: float) -> None:
        """A call ended at ``end``: forget it if media-only; RTP to or from its
        ``addresses`` is a straggler for ``ENDED_MEDIA_GRACE``.  Addresses of calls that
        ended longer ago than that before ``end`` are forgotten."""
        self.calls.pop(key, None)
        recent = self.ended      # in order of end time: expire from the front
        for addr in addresses:
            recent.pop(addr, None)
            recent[addr] = end
        while recent:
            addr, t = next(iter(recent.items()))
            if end - t <= ENDED_MEDIA_GRACE:
                break
            del recent[addr]
