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
