from rtp2ws.media.dtmf import DtmfDetector
from rtp2ws.media.rtp import RtpPacket, TelephoneEvent, serialize_telephone_event


def ev_pkt(event, end, duration, ts, seq, ssrc=5):
    return RtpPacket(seq, ts, ssrc, 101, False, serialize_telephone_event(TelephoneEvent(event, end, 10, duration)))


def test_one_event_per_key_press():
    d = DtmfDetector()
    out = []
    seq = 0
    for i in range(5):
        out += d.feed(ev_pkt(5, False, 160 * (i + 1), 8000, seq), 1.0 + 0.02 * i)
        seq += 1
    for _ in range(3):   # end packet sent three times
        out += d.feed(ev_pkt(5, True, 960, 8000, seq), 1.1)
        seq += 1
    assert [(e.digit, e.start, e.duration_ms) for e in out] == [("5", 1.0, 120)]
    # a second press of the same key is a new event (new timestamp)
    out = d.feed(ev_pkt(5, False, 160, 16000, seq), 2.0) + d.feed(ev_pkt(5, True, 800, 16000, seq + 1), 2.1)
    assert [(e.digit, e.duration_ms) for e in out] == [("5", 100)]


def test_lost_end_packets_reported_on_next_event_or_flush():
    d = DtmfDetector()
    assert d.feed(ev_pkt(1, False, 400, 100, 1), 0.0) == []
    out = d.feed(ev_pkt(10, False, 160, 2000, 2), 0.5)
    assert [(e.digit, e.duration_ms) for e in out] == [("1", 50)]
    assert [(e.digit, e.duration_ms) for e in d.flush()] == [("*", 20)]
    assert d.flush() == []


def test_malformed_counted():
    d = DtmfDetector()
    assert d.feed(RtpPacket(1, 1, 1, 101, False, b"\x01"), 0) == []
    assert d.malformed == 1


def test_the_last_reported_events_are_remembered_and_cost_nothing_before_the_first():
    """Repeated end packets of the last REPORTED events are ignored, an older one's are an
    event again; a detector that saw no event holds no memory for them (every leg has a
    detector, and an empty deque was 760 bytes of each)."""
    import tracemalloc

    from rtp2ws.media.dtmf import REPORTED

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        detectors = [DtmfDetector() for _ in range(100)]
        size = (tracemalloc.get_traced_memory()[0] - before) / len(detectors)
    finally:
        tracemalloc.stop()
    assert size <= 300                       # the object itself (it was 910 bytes)
    d = detectors[0]
    for k in range(REPORTED + 1):            # events at timestamps 0, 1000, ...
        assert len(d.feed(ev_pkt(k % 10, True, 160, 1000 * k, 2 * k), float(k))) == 1
    # the last REPORTED are remembered: their repeated end packets are not reported again
    assert all(d.feed(ev_pkt(k % 10, True, 160, 1000 * k, 100 + k), 20.0) == []
               for k in range(1, REPORTED + 1))
    # the first is forgotten: its end packet once more is an event again
    assert [e.rtp_timestamp for e in d.feed(ev_pkt(0, True, 160, 0, 200), 21.0)] == [0]
