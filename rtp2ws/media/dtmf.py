"""RFC 4733 telephone-event packets → one DTMF event per key press.

A key press is sent as many packets sharing one RTP timestamp (the start
of the event), with a growing duration, and its final packet (E bit set)
usually three times.  This module folds them into a single event, reported
when the end packet arrives, when a new event starts, or on flush.
Sans-I/O: the capture time of each packet is passed in.
"""

from __future__ import annotations

from typing import NamedTuple

from .rtp import RtpPacket, parse_telephone_event

REPORTED = 8      # events remembered, so that an event's repeated end packets are not reported again


class DtmfEvent(NamedTuple):
    digit: str
    start: float        # capture time of the event's first packet
    duration_ms: int
    rtp_timestamp: int


class DtmfDetector:
    def __init__(self, clock_rate: int = 8000) -> None:
        self.clock_rate = clock_rate
        self._key: tuple[int, int] | None = None   # (ssrc, timestamp) of the event in progress
        self._digit = ""
        self._start = 0.0
        self._duration = 0
        # the last REPORTED events' keys: a tuple, nothing allocated until a first event
        # (an empty deque is 760 bytes, in every leg)
        self._reported: tuple[tuple[int, int], ...] = ()
        self.malformed = 0

    def feed(self, pkt: RtpPacket, arrival: float) -> list[DtmfEvent]:
        try:
            ev = parse_telephone_event(pkt.payload)
        except ValueError:
            self.malformed += 1
            return []
        out: list[DtmfEvent] = []
        key = (pkt.ssrc, pkt.timestamp)
        if key in self._reported:
            return out  # repeated end packets of an event already reported
        if key != self._key:
            out.extend(self.flush())
            self._key = key
            self._digit = ev.digit
            self._start = arrival
            self._duration = 0
        self._duration = max(self._duration, ev.duration)
        if ev.end:
            out.extend(self.flush())
        return out

    def flush(self) -> list[DtmfEvent]:
        if self._key is None:
            return []
        key, self._key = self._key, None
        self._reported = (*self._reported, key)[-REPORTED:]
        ms = round(self._duration * 1000 / self.clock_rate)
        return [DtmfEvent(self._digit, self._start, ms, key[1])]
