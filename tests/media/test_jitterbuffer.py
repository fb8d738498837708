import random

from rtp2ws.media.jitterbuffer import JitterBuffer
from rtp2ws.media.rtp import RtpPacket


def pkt(seq, ssrc=1, ts=None):
    return RtpPacket(seq & 0xFFFF, (ts if ts is not None else seq * 160) & 0xFFFFFFFF, ssrc, 8, False, b"x")


def run(jb, arrivals):
    out = []
    for t, p in arrivals:
        out += jb.push(p, t)
    return out


def seqs(released):
    return [r.packet.sequence for r in released]


def test_in_order_released_at_once():
    jb = JitterBuffer(0.06)
    for i in range(10):
        r = jb.push(pkt(i), i * 0.02)
        assert seqs(r) == [i]
    assert jb.held == 0
    assert jb.stats["lost"] == 0


def test_reorder_within_depth():
    jb = JitterBuffer(0.06)
    order = [0, 1, 3, 2, 4, 6, 5, 7]
    out = run(jb, [(i * 0.02, pkt(s)) for i, s in enumerate(order)])
    assert seqs(out) == list(range(8))
    assert jb.stats["lost"] == 0 and jb.stats["late"] == 0 and jb.stats["reordered"] == 2


def test_loss_declared_after_depth_then_late_packet_dropped():
    jb = JitterBuffer(0.06)
    out = run(jb, [(0.00, pkt(0)), (0.02, pkt(1)), (0.06, pkt(3)), (0.08, pkt(4))])
    assert seqs(out) == [0, 1]
    assert jb.next_deadline() == 0.06 + 0.06
    assert jb.poll(0.119) == []
    r = jb.poll(0.12)
    assert seqs(r) == [3, 4] and r[0].lost_before == 1 and r[1].lost_before == 0
    # seq 2 arrives after its slot was concealed: late, never released
    assert jb.push(pkt(2), 0.13) == []
    assert jb.stats["late"] == 1 and jb.stats["lost"] == 1


def test_deadline_passes_before_next_packet():
    jb = JitterBuffer(0.06)
    run(jb, [(0.0, pkt(0)), (0.04, pkt(2))])
    r = jb.push(pkt(3), 0.2)   # the wait for 1 expired before 3 arrived
    assert seqs(r) == [2, 3] and r[0].lost_before == 1


def test_duplicates_held_and_released():
    jb = JitterBuffer(0.06)
    out = run(jb, [(0, pkt(0)), (0.01, pkt(0)), (0.02, pkt(2)), (0.03, pkt(2)), (0.04, pkt(1))])
    assert seqs(out) == [0, 1, 2]
    assert jb.stats["duplicates"] == 2 and jb.stats["late"] == 0


def test_sequence_wraparound():
    jb = JitterBuffer(0.06)
    order = [65533, 65534, 0, 65535, 1, 2]
    out = run(jb, [(i * 0.02, pkt(s)) for i, s in enumerate(order)])
    assert seqs(out) == [65533, 65534, 65535, 0, 1, 2]
    assert jb.stats["lost"] == 0


def test_ssrc_change_flushes_and_restarts():
    jb = JitterBuffer(0.06)
    out = run(jb, [(0, pkt(10)), (0.02, pkt(12)), (0.04, pkt(500, ssrc=2)), (0.06, pkt(501, ssrc=2))])
    assert seqs(out) == [10, 12, 500, 501]
    assert [r.new_stream for r in out] == [True, False, True, False]
    assert out[1].lost_before == 1


def test_large_jump_needs_confirmation():
    jb = JitterBuffer(0.06)
    out = run(jb, [(0, pkt(0)), (0.02, pkt(1)), (0.04, pkt(30000)), (0.06, pkt(2))])
    assert seqs(out) == [0, 1, 2]        # one stray packet does not derail the stream
    out = run(jb, [(0.08, pkt(40000)), (0.10, pkt(40001)), (0.12, pkt(40002))])
    assert seqs(out) == [40000, 40001, 40002]   # a confirmed restart is followed
    assert out[0].new_stream


def test_never_releases_a_slot_twice_random():
    rnd = random.Random(7)
    for trial in range(50):
        jb = JitterBuffer(0.06)
        n = 300
        arrivals = []
        for s in range(n):
            if rnd.random() < 0.05:
                continue
            t = s * 0.02 + rnd.uniform(0, 0.1)
            arrivals.append((t, s + 65000))
            if rnd.random() < 0.05:
                arrivals.append((t + rnd.uniform(0, 0.2), s + 65000))
        arrivals.sort()
        out = []
        for t, s in arrivals:
            out += jb.push(pkt(s), t)
        out += jb.flush()
        ext = []
        prev = None
        for r in out:
            q = r.packet.sequence
            e = q if prev is None else prev + ((q - prev) & 0xFFFF)
            ext.append(e)
            prev = e
        assert ext == sorted(set(ext)), "released out of order or twice"
        st = jb.stats
        assert st["received"] == len(arrivals)
        assert st["released"] + st["duplicates"] + st["late"] == st["received"]


def test_advance_accounts_packets_taken_elsewhere_as_push_would():
    """The fast path's packets, accounted in one go, leave the buffer as pushing them did:
    same counters, and any packet arriving again afterwards is judged the same way
    (duplicate, late, or the start of a probation)."""
    def pkt(k):
        return RtpPacket((65000 + k) & 0xFFFF, 160 * k, 5, 8, False, b"\xd5" * 160)

    for count in (1, 7, 300, 700):
        for gap in (False, True):          # pushed packets between two advances (the range is written out)
            pushed, advanced = JitterBuffer(), JitterBuffer()
            pushed.push(pkt(0), 0.0)
            advanced.push(pkt(0), 0.0)
            k = 1
            for part in ((count, 3, count) if gap else (count,)):
                for j in range(part):
                    pushed.push(pkt(k + j), 0.02 * (k + j))
                if gap and part == 3:
                    for j in range(part):
                        advanced.push(pkt(k + j), 0.02 * (k + j))
                else:
                    advanced.advance(advanced.next_sequence + part, part)
                k += part
            assert advanced.stats == pushed.stats
            assert (advanced._next, advanced._highest) == (pushed._next, pushed._highest)
            for back in range(1, 130):      # everything a late or repeated packet can be
                for jb in (pushed, advanced):
                    jb.push(pkt(k - back), 99.0)
                    jb._probation = None
                assert advanced.stats == pushed.stats, (count, gap, back)
            assert pushed.stats["duplicates"] > 0


def test_a_leg_lists_at_most_max_dtmf_listed_key_presses():
    """A flood of RFC 4733 events (each its own timestamp): every one is still an event
    for the sinks, but the list kept for the manifest stops at MAX_DTMF_LISTED."""
    from rtp2ws.media.leg import MAX_DTMF_LISTED, MediaLeg
    from rtp2ws.media.rtp import RtpPacket

    leg = MediaLeg("caller")
    leg.set_payload_map({8: ("PCMA", 8000), 101: ("TELEPHONE-EVENT", 8000)})
    n = MAX_DTMF_LISTED + 50
    for i in range(n):
        end = bytes([1, 0x80 | 10, 0, 160])          # digit 1, end bit, volume 10, 160 samples
        leg.push(RtpPacket(i, 1000 + i * 320, 0xD7, 101, True, end), 10.0 + i * 0.04)
    events = leg.take_events()
    assert len(leg.dtmf_events) == MAX_DTMF_LISTED and leg.counts["dtmf_not_listed"] == 50
    assert sum(1 for e in events if type(e).__name__ == "DtmfEvent") == n
