"""Call registry: SIP messages in, call life-cycle and media events out.

Sans-I/O.  The registry follows each Call-ID's dialog just far enough to
know who the caller and callee are, where each side wants to receive
media (from every SDP body, whichever message carries it: INVITE, 18x,
200, ACK, PRACK, UPDATE, re-INVITE), whether the call is on hold, and
when and why it ended.  It never looks at RTP; the pipeline reports media
activity with :meth:`CallRegistry.touch` so that inactivity can end a call.

End reasons: ``bye``, ``cancel``, ``rejected <code>``, ``timeout`` and,
from :meth:`CallRegistry.finish`, ``capture_end`` or ``shutdown``.

Calls already in progress when capture starts: an in-dialog INVITE or UPDATE
(one with a To-tag) for an unknown Call-ID picks the call up (``picked_up``;
its sender is taken as the caller).  RTP seen before any signalling becomes
a *media-only* call (:meth:`CallRegistry.adopt`, Call-ID ``rtp:<a>-<b>``), which
ends with ``identified`` when signalling later names its addresses.

Duplicates: a message is identified by (request method, CSeq) or
(status, CSeq, To-tag).  Retransmissions and the copies of one message
seen on two hops of a proxy share that identity, so they are counted and
acted on once per call.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import NamedTuple

from .sdp import CryptoAttribute, SdpParseError, parse_sdp
from .sip import SipMessage, SipParseError

CALLER = "caller"
CALLEE = "callee"
TAGS = (CALLER, CALLEE)
LINGER_SECONDS = 32.0        # Timer B/F: how long an ended call absorbs stragglers
AUTH_RETRY_SECONDS = 32.0    # a 401/407 challenge waits this long for the retried INVITE
MAX_SEEN = 512               # message identities a call remembers to spot retransmissions and copies
TIMER_B_SECONDS = 32.0       # RFC 3261 Timer B (64*T1): an INVITE nobody answers, not even 100, is given up


def other(side: str) -> str:
    return CALLEE if side == CALLER else CALLER


@dataclass
class MediaOffer:
    """Where one side of a call wants to receive audio (from its latest SDP)."""

    address: str
    port: int
    rtcp_port: int | None
    rtcp_address: str | None
    rtcp_mux: bool
    payload_map: dict[int, tuple[str, int]]
    direction: str
    encrypted: bool
    ptime: int | None
    # the a=crypto lines (SDES, RFC 4568): the keys this side *sends* its SRTP with
    crypto: tuple[CryptoAttribute, ...] = ()

    @property
    def on_hold(self) -> bool:
        return self.direction in ("sendonly", "inactive") or self.address in ("0.0.0.0", "::") or self.port == 0


@dataclass
class Call:
    key: str                      # unique per call: Call-ID, with "#n" when the Call-ID is reused
    call_id: str
    from_uri: str
    to_uri: str
    caller_tag: str | None
    invite_cseq: int
    start: float
    invite: SipMessage | None      # the initial INVITE (or the in-dialog request a call was picked up from)
    callee_tag: str | None = None
    state: str = "trying"         # trying, early, confirmed, ended
    end: float | None = None
    end_reason: str | None = None
    last_activity: float = 0.0
    media: dict[str, MediaOffer] = field(default_factory=dict)       # side -> MediaOffer (latest usable)
    hold: dict[str, bool] = field(default_factory=dict)        # side -> bool
    sip_messages: int = 0
    sip_duplicates: int = 0
    challenged_at: float | None = None
    picked_up: bool = False        # first seen mid-dialog (capture started during the call)
    media_only: bool = False       # RTP without signalling (yet)
    identified_as: str | None = None
    _challenge_code: int = 0
    heard_back: bool = False       # a response to the initial INVITE was seen (even 100 Trying)
    _due: float | None = None      # when its timer is armed for (older heap entries are stale)
    # message identities, oldest first (≤ MAX_SEEN)
    _seen: dict[tuple[object, ...], None] = field(default_factory=dict, repr=False)

    @property
    def ended(self) -> bool:
        return self.state == "ended"


# -- events ---------------------------------------------------------------------

class CallStarted(NamedTuple):
    call: Call


class MediaUpdated(NamedTuple):
    call: Call
    side: str             # whose receive address/format changed
    offer: MediaOffer


class HoldChanged(NamedTuple):
    """The call went on hold (either side's SDP sendonly/inactive/c=0.0.0.0) or resumed."""

    call: Call
    side: str             # the side whose SDP put the call on hold / resumed it
    on_hold: bool
    at: float


class CallEnded(NamedTuple):
    call: Call


CallEvent = CallStarted | MediaUpdated | HoldChanged | CallEnded


class CallRegistry:
    def __init__(self, *, rtp_timeout: float = 300.0) -> None:
        self.rtp_timeout = rtp_timeout
        self.active: dict[str, Call] = {}       # Call-ID -> call in progress
        self._ended: dict[str, Call] = {}       # Call-ID -> recently ended call
        self._reuse: dict[str, int] = {}        # Call-ID -> calls seen with it
        self._timers: list[tuple[float, int, Call]] = []   # heap of (due, serial, call): timeouts to check
        self._serial = 0
        self.stats = {"sip_messages": 0, "sip_duplicates": 0, "sip_orphans": 0, "sdp_errors": 0,
                      "sdp_crypto_errors": 0, "sip_errors": 0, "calls": 0, "picked_up": 0, "media_only": 0}

    # -- input ------------------------------------------------------------------

    def on_message(self, msg: SipMessage, now: float) -> list[CallEvent]:
        self.stats["sip_messages"] += 1
        cid = msg.call_id
        if not cid:
            self.stats["sip_errors"] += 1
            return []
        try:
            cseq = msg.cseq
        except SipParseError:
            self.stats["sip_errors"] += 1
            return []
        events: list[CallEvent] = []
        call = self.active.get(cid)
        if call is None:
            ended = self._ended.get(cid)
            if msg.is_request and msg.method == "INVITE" and msg.to_tag is None:
                if ended is not None and self._identity(msg, cseq) in ended._seen:
                    ended.sip_duplicates += 1
                    self.stats["sip_duplicates"] += 1
                    return []
                call = self._new_call(msg, cseq, now)
                events.append(CallStarted(call))
            elif ended is not None:
                self._count(ended, msg, cseq)   # stragglers: 200 to BYE, ACK to 487, ...
                return []
            elif msg.is_request and msg.method in ("INVITE", "UPDATE") and msg.to_tag is not None:
                call = self._new_call(msg, cseq, now)      # a call in progress: pick it up
                call.picked_up = True
                call.callee_tag = msg.to_tag
                call.state = "confirmed"
                self.stats["picked_up"] += 1
                events.append(CallStarted(call))
            else:
                self.stats["sip_orphans"] += 1
                return []
        if not self._count(call, msg, cseq):
            return events
        if now > call.last_activity:      # capture time can step back: activity only moves on
            call.last_activity = now
        side = self._sender(call, msg)
        if msg.is_request:
            self._on_request(call, msg, cseq, side, now, events)
        else:
            self._on_response(call, msg, cseq, now, events)
        if not call.ended:
            self._on_sdp(call, msg, side, now, events)
        return events

    def adopt(self, call_id: str, now: float) -> list[CallEvent]:
        """A media-only call for RTP that no signalling has claimed (yet)."""
        call = Call(key=call_id, call_id=call_id, from_uri="", to_uri="", caller_tag=None, invite_cseq=0,
                    start=now, invite=None, last_activity=now, state="confirmed", media_only=True)
        self.active[call_id] = call
        self.stats["calls"] += 1
        self.stats["media_only"] += 1
        self._arm(call)
        return [CallStarted(call)]

    def end(self, call: Call, reason: str, now: float) -> list[CallEvent]:
        """End a call from outside signalling (a media-only call that was identified)."""
        events: list[CallEvent] = []
        self._end(call, reason, now, events)
        return events

    def identify(self, call: Call, call_id: str, now: float) -> list[CallEvent]:
        """A media-only call whose addresses signalling now names: it ends (``identified``)
        and names the call its media goes on in (``identified_as``)."""
        call.identified_as = call_id
        return self.end(call, "identified", now)

    def touch(self, call: Call, now: float) -> None:
        """Media activity on the call (keeps it from timing out)."""
        if now > call.last_activity:
            call.last_activity = now

    def expire(self, now: float) -> list[CallEvent]:
        """End calls idle for ``rtp_timeout`` (or challenged and never retried);
        forget ended calls after the linger time.  Cost: O(log n) per call due.

        Every timer makes progress: a call whose timer is due either ends or is
        re-armed strictly after ``now``, and each test below is the very sum its
        deadline was computed from (``t + timeout``), so a timer due at ``now`` is
        never kept for ``now`` again, whatever the rounding of large timestamps."""
        events: list[CallEvent] = []
        heap = self._timers
        while heap and heap[0][0] <= now:
            due, _, call = heapq.heappop(heap)
            if call.ended or due != call._due:
                continue          # a timer re-armed since (or a call ended): a stale entry
            if call.challenged_at is not None and now >= call.challenged_at + AUTH_RETRY_SECONDS:
                self._end(call, f"rejected {call._challenge_code}", call.challenged_at, events)
            elif now >= call.last_activity + self._idle_limit(call):
                reason = "timeout" if call.heard_back or call.state != "trying" else "no_response"
                self._end(call, reason, call.last_activity, events)
            else:
                self._arm(call)          # activity since: due later (after now, by the tests above)
        ended = self._ended
        while ended:
            cid, call = next(iter(ended.items()))
            if call.end is not None and now < call.end + LINGER_SECONDS:
                break
            del ended[cid]
            if cid not in self.active:
                self._reuse.pop(cid, None)   # bounded memory in a long-running capture
        return events

    def due(self, now: float) -> list[Call]:
        """Calls with a timer due at ``now``: the ones ``expire(now)`` will look at."""
        heap = self._timers
        out: list[Call] = []
        stack = [0] if heap else []
        while stack:      # the heap's entries <= now form a subtree at its root
            i = stack.pop()
            if heap[i][0] <= now:
                out.append(heap[i][2])
                stack.extend(j for j in (2 * i + 1, 2 * i + 2) if j < len(heap))
        return out

    def next_deadline(self) -> float | None:
        times: list[float] = []
        heap = self._timers
        while heap and (heap[0][2].ended or heap[0][0] != heap[0][2]._due):
            heapq.heappop(heap)       # stale entries go, so the deadline is the true one
        if heap:
            times.append(heap[0][0])
        if self._ended:
            call = next(iter(self._ended.values()))
            if call.end is not None:
                times.append(call.end + LINGER_SECONDS)
        return min(times) if times else None

    def _idle_limit(self, call: Call) -> float:
        """Seconds without SIP or RTP after which a call ends: ``rtp_timeout``, or Timer B
        for an INVITE that no response ever came back for (an INVITE flood then holds
        each call 32 s, not 300)."""
        if call.state == "trying" and not call.heard_back:
            return min(self.rtp_timeout, TIMER_B_SECONDS)
        return self.rtp_timeout

    def _arm(self, call: Call) -> None:
        due = call.last_activity + self._idle_limit(call)
        if call.challenged_at is not None:
            due = min(due, call.challenged_at + AUTH_RETRY_SECONDS)
        self._serial += 1
        call._due = due
        heapq.heappush(self._timers, (due, self._serial, call))

    def finish(self, now: float, reason: str = "capture_end") -> list[CallEvent]:
        """The capture ended (or the process is stopping): every call still open ends."""
        events: list[CallEvent] = []
        for call in list(self.active.values()):
            self._end(call, reason, max(now, call.last_activity), events)
        return events

    # -- internals ----------------------------------------------------------------

    def _new_call(self, msg: SipMessage, cseq: tuple[int, str], now: float) -> Call:
        cid = msg.call_id
        n = self._reuse.get(cid, 0) + 1
        self._reuse[cid] = n
        self._ended.pop(cid, None)
        call = Call(key=cid if n == 1 else f"{cid}#{n}", call_id=cid, from_uri=msg.from_uri,
                    to_uri=msg.to_uri, caller_tag=msg.from_tag, invite_cseq=cseq[0], start=now,
                    invite=msg, last_activity=now)
        self.active[cid] = call
        self.stats["calls"] += 1
        self._arm(call)
        return call

    @staticmethod
    def _identity(msg: SipMessage, cseq: tuple[int, str]) -> tuple[object, ...]:
        if msg.is_request:
            return ("q", msg.method, cseq[0], cseq[1])
        return ("r", msg.status, cseq[0], cseq[1], msg.to_tag)

    def _count(self, call: Call, msg: SipMessage, cseq: tuple[int, str]) -> bool:
        ident = self._identity(msg, cseq)
        if ident in call._seen:
            call.sip_duplicates += 1
            self.stats["sip_duplicates"] += 1
            return False
        seen = call._seen
        if len(seen) >= MAX_SEEN:
            del seen[next(iter(seen))]   # retransmissions come within 32 s: only recent ones matter
        seen[ident] = None
        call.sip_messages += 1
        return True

    def _sender(self, call: Call, msg: SipMessage) -> str:
        """Which side sent this message."""
        if msg.from_tag is not None and call.caller_tag is not None:
            req_side = CALLER if msg.from_tag == call.caller_tag else CALLEE
        else:
            req_side = CALLER if msg.from_uri == call.from_uri else CALLEE
        return req_side if msg.is_request else other(req_side)

    def _on_request(self, call: Call, msg: SipMessage, cseq: tuple[int, str], side: str, now: float,
                    events: list[CallEvent]) -> None:
        m = msg.method
        if m == "BYE":
            self._end(call, "bye", now, events)
        elif m == "CANCEL":
            if call.state in ("trying", "early"):
                self._end(call, "cancel", now, events)
        elif m == "INVITE" and msg.to_tag is None and call.challenged_at is not None:
            call.challenged_at = None   # the retried INVITE after a 401/407 continues the call
            call.invite_cseq = cseq[0]

    def _on_response(self, call: Call, msg: SipMessage, cseq: tuple[int, str], now: float,
                     events: list[CallEvent]) -> None:
        status = msg.status or 0
        initial = cseq[1] == "INVITE" and cseq[0] == call.invite_cseq
        if msg.to_tag and call.callee_tag is None and status > 100:
            call.callee_tag = msg.to_tag
        if not initial:
            return
        if not call.heard_back:
            call.heard_back = True
            self._arm(call)      # the idle limit grows from Timer B to rtp_timeout
        if 100 < status < 200 and call.state == "trying":
            call.state = "early"
        elif 200 <= status < 300:
            call.state = "confirmed"
        elif status in (401, 407) and call.state in ("trying", "early"):
            call.challenged_at = now
            call._challenge_code = status
            self._arm(call)
        elif status >= 300 and call.state in ("trying", "early"):
            self._end(call, f"rejected {status}", now, events)

    def _on_sdp(self, call: Call, msg: SipMessage, side: str, now: float, events: list[CallEvent]) -> None:
        for body in msg.sdp_bodies():
            try:
                sdp = parse_sdp(body)
            except SdpParseError:
                self.stats["sdp_errors"] += 1
                continue
            m = sdp.audio()
            if m is None or not m.address:
                continue
            self.stats["sdp_crypto_errors"] += m.crypto_errors
            offer = MediaOffer(
                address=m.address, port=m.port, rtcp_port=m.rtcp_port, rtcp_address=m.rtcp_address,
                rtcp_mux=m.rtcp_mux,
                payload_map={pt: (enc[0], enc[1]) for pt, enc in m.rtpmap.items()},
                direction=m.direction, encrypted=m.encrypted, ptime=m.ptime, crypto=tuple(m.crypto),
            )
            was = any(call.hold.values())
            call.hold[side] = offer.on_hold
            if any(call.hold.values()) != was:
                events.append(HoldChanged(call, side, not was, now))
            prev = call.media.get(side)
            if offer.port == 0 or offer.address in ("0.0.0.0", "::"):
                # Hold by address: keep listening where media last went.
                if prev is None:
                    continue
                offer.address, offer.port = prev.address, prev.port
                offer.rtcp_port, offer.rtcp_address = prev.rtcp_port, prev.rtcp_address
            if prev != offer:
                call.media[side] = offer
                events.append(MediaUpdated(call, side, offer))
            return

    def _end(self, call: Call, reason: str, at: float, events: list[CallEvent]) -> None:
        if call.ended:
            return
        call.state = "ended"
        call.end = at
        call.end_reason = reason
        call.challenged_at = None
        self.active.pop(call.call_id, None)
        self._ended[call.call_id] = call
        events.append(CallEnded(call))
