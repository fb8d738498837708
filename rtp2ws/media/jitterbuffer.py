"""Jitter buffer: puts one leg's RTP packets back in sequence order.

Sans-I/O: the caller passes each packet with its capture time (``now``)
and calls :meth:`JitterBuffer.poll` when :meth:`next_deadline` passes;
nothing here reads a clock.

Policy
------
* A packet that continues the sequence is released at once: an in-order
  stream costs no latency.
* When a sequence number is missing, later packets are held until the
  missing one arrives or the earliest held packet has waited ``depth``
  seconds (default 60 ms).  Then the missing packets are declared lost
  and release resumes after them.
* A packet whose slot has already been released is *late* if that slot
  was lost, a *duplicate* if it had been received; either way it is
  dropped, so no slot is ever released twice.
* Sequence numbers are extended past 16-bit wrap-around.  A new SSRC
  starts a new stream at once; a jump of more than ``MAX_DROPOUT``
  packets forward or ``MAX_MISORDER`` back within one SSRC starts a new
  stream only once the next packet confirms it (RFC 3550 appendix A.1
  probation), so one stray packet cannot derail a leg.
"""

from __future__ import annotations

from array import array
from typing import NamedTuple

from .rtp import RtpPacket
from .seq import uint16_add

MAX_DROPOUT = 3000
MAX_MISORDER = 100
SEEN_RING = 128   # power of two >= MAX_MISORDER: only packets that close to the next one are looked up


class Released(NamedTuple):
    packet: RtpPacket
    arrival: float      # capture time of the packet
    lost_before: int    # packets declared lost immediately before this one
    new_stream: bool    # first packet of a stream (new SSRC or sequence restart)


class JitterBuffer:
    def __init__(self, depth: float = 0.060, max_packets: int = 512) -> None:
        if depth < 0:
            raise ValueError("jitter buffer depth must not be negative")
        self.depth = depth
        self.max_packets = max_packets
        self._ssrc: int | None = None
        self._next: int = 0            # extended sequence number to release next
        self._highest: int = 0         # highest extended sequence number seen
        self._held: dict[int, tuple[RtpPacket, float]] = {}
        self._seen = array("q", [-1]) * SEEN_RING  # extended seq of the received packet in each slot (1 KB)
        self._taken_lo = self._taken_hi = -1       # ... and a range of them received all at once (advance)
        self._new_stream = False
        self._probation: tuple[RtpPacket, float] | None = None
        self.stats = {
            "received": 0, "released": 0, "duplicates": 0, "late": 0, "lost": 0, "reordered": 0,
            "restarts": 0, "overflow": 0,
        }

    # -- input -------------------------------------------------------------

    def push(self, pkt: RtpPacket, now: float) -> list[Released]:
        st = self.stats
        if (pkt.sequence == self._next & 0xFFFF and pkt.ssrc == self._ssrc and not self._held
                and self._probation is None):
            # the common case: the next packet, in order, nothing waiting (seq.uint16 inlined)
            st["received"] += 1
            st["released"] += 1
            ext = self._next
            self._seen[ext & (SEEN_RING - 1)] = ext
            self._highest = ext
            self._next = ext + 1
            new, self._new_stream = self._new_stream, False
            return [Released(pkt, now, 0, new)]
        st["received"] += 1
        out: list[Released] = []
        if self._held:
            self._release(now, out)   # what became due before this packet arrived
        if self._ssrc is None or pkt.ssrc != self._ssrc:
            if self._ssrc is not None:
                out.extend(self.flush())
                st["restarts"] += 1
            self._start(pkt)
        seq = pkt.sequence
        delta = (seq - self._highest) & 0xFFFF     # seq.uint16_delta, inlined (per packet while any is held)
        if delta >= 0x8000:
            delta -= 0x10000
        ext = self._highest + delta
        if delta > MAX_DROPOUT or ext < self._next - MAX_MISORDER:
            prob = self._probation
            if prob is not None and uint16_add(prob[0].sequence, 1) == seq:
                out.extend(self.flush())
                st["restarts"] += 1
                self._start(prob[0])
                self._hold(self._next, prob[0], prob[1])
                ext = self._next + 1
                self._highest = ext
                self._probation = None
            else:
                # Unconfirmed jump: keep it aside; the next packet decides.
                if prob is not None:
                    st["late"] += 1
                self._probation = (pkt, now)
                return out
        elif self._probation is not None:
            st["late"] += 1
            self._probation = None
        if ext < self._next:
            if self._received(ext):
                st["duplicates"] += 1
            else:
                st["late"] += 1
            return out
        if ext in self._held:
            st["duplicates"] += 1
            return out
        if ext > self._highest:
            self._highest = ext
        elif ext < self._highest:
            st["reordered"] += 1      # overtaken by a later packet, still in time
        self._hold(ext, pkt, now)
        self._release(now, out)
        return out

    def poll(self, now: float) -> list[Released]:
        out: list[Released] = []
        if self._held:
            self._release(now, out)
        return out

    def flush(self) -> list[Released]:
        """Release everything held (end of call or stream), declaring gaps lost."""
        out: list[Released] = []
        self._release(float("inf"), out)
        if self._probation is not None:
            self.stats["late"] += 1
            self._probation = None
        return out

    def next_deadline(self) -> float | None:
        """When the oldest held packet stops waiting for its missing predecessors."""
        if not self._held:
            return None
        return min(a for _, a in self._held.values()) + self.depth

    @property
    def held(self) -> int:
        return len(self._held)

    @property
    def in_order(self) -> bool:
        """The next packet in sequence would take the shortest way (see ``push``)."""
        return (self._ssrc is not None and not self._held and self._probation is None
                and not self._new_stream)

    @property
    def ssrc(self) -> int | None:
        return self._ssrc

    @property
    def next_sequence(self) -> int:
        """Extended sequence number to be released next."""
        return self._next

    def advance(self, next_ext: int, count: int) -> None:
        """``count`` packets up to ``next_ext`` (exclusive) were received and released in
        order elsewhere (``rtp2ws.fastpath.twin``): account for them as ``push`` would have.
        O(1): they are remembered as one range rather than slot by slot in the ring."""
        st = self.stats
        st["received"] += count
        st["released"] += count
        if self._taken_hi != self._next:
            self._materialize_taken()
            self._taken_lo = self._next
        self._taken_hi = next_ext
        self._highest = next_ext - 1
        self._next = next_ext

    def _materialize_taken(self) -> None:
        """Write the remembered range into the ring (the part a late packet can still ask about)."""
        lo, hi = max(self._taken_lo, self._next - SEEN_RING), self._taken_hi
        for ext in range(lo, hi):
            self._seen[ext & (SEEN_RING - 1)] = ext
        self._taken_lo = self._taken_hi = -1

    def _received(self, ext: int) -> bool:
        """Was packet ``ext`` (within SEEN_RING of ``_next``) received?"""
        return self._seen[ext & (SEEN_RING - 1)] == ext or self._taken_lo <= ext < self._taken_hi

    # -- internals ---------------------------------------------------------

    def _start(self, pkt: RtpPacket) -> None:
        self._ssrc = pkt.ssrc
        base = (self._highest + 0x20000) & ~0xFFFF  # fresh range, never below anything seen
        self._next = base + pkt.sequence
        self._highest = self._next
        self._new_stream = True

    def _hold(self, ext: int, pkt: RtpPacket, now: float) -> None:
        self._held[ext] = (pkt, now)

    def _release(self, now: float, out: list[Released]) -> None:
        held = self._held
        st = self.stats
        lost = 0
        while held:
            item = held.pop(self._next, None)
            if item is None:
                oldest = min(a for _, a in held.values())
                if oldest + self.depth > now and len(held) <= self.max_packets:
                    break
                if len(held) > self.max_packets:
                    st["overflow"] += 1
                first = min(held)
                lost += first - self._next
                self._next = first
                continue
            pkt, arrival = item
            self._seen[self._next & (SEEN_RING - 1)] = self._next
            st["lost"] += lost
            st["released"] += 1
            out.append(Released(pkt, arrival, lost, self._new_stream))
            self._new_stream = False
            lost = 0
            self._next += 1
