"""dtmf.DtmfDetector fed RFC 4733 packets in any order, any timestamps."""

from __future__ import annotations

import atheris

from rtp2ws.media.dtmf import DtmfDetector, DtmfEvent
from rtp2ws.media.rtp import RtpPacket

from ..common import check, entry

INVARIANT = """\
feed(packet, arrival) and flush() never raise and return lists of DtmfEvent with a str
digit, an int duration_ms >= 0 and the RTP timestamp of the event; a key press (one
SSRC and timestamp) is reported at most once however many packets in a row repeat it,
so events never outnumber the runs of one key in the packets fed (a key seen again
after 8 others may be reported again: the detector remembers 8); a second flush()
returns [].
Malformed payloads (under 4 bytes) are counted, not raised.  No call takes more than
the per-call limit."""


def run(data: bytes, clock) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    det = DtmfDetector(clock_rate=fdp.PickValueInList([8000, 16000, 48000, 1, 2 ** 31 - 1]))
    runs = 0
    last = None
    events = []
    t = 0.0
    for _ in range(fdp.ConsumeIntInRange(0, 64)):
        ssrc = fdp.PickValueInList([1, 2, 0xFFFFFFFF])
        ts = fdp.PickValueInList([0, 160, 320, 0xFFFFFFFF]) if fdp.ConsumeBool() else fdp.ConsumeIntInRange(0, 2 ** 32 - 1)
        payload = fdp.ConsumeBytes(fdp.PickValueInList([4, 4, 4, 0, 3, 8]))
        t += fdp.PickValueInList([0.02, 0.0, -1.0, 1e6])
        if (ssrc, ts) != last:
            runs += 1
            last = (ssrc, ts)
        pkt = RtpPacket(fdp.ConsumeIntInRange(0, 0xFFFF), ts, ssrc, 101, False, payload)
        out = clock.call(det.feed, pkt, t)
        check(isinstance(out, list), "feed result")
        events += out
    events += clock.call(det.flush)
    check(clock.call(det.flush) == [], "second flush not empty")
    for ev in events:
        check(type(ev) is DtmfEvent and isinstance(ev.digit, str) and type(ev.duration_ms) is int
              and ev.duration_ms >= 0, f"event {ev!r}")
    check(len(events) <= runs, f"{len(events)} events from {runs} runs of one key")


TestOneInput = entry("dtmf", run)
