"""rtp2ws.fastpath.twin: the C twin (rtp2ws._fastpath) and the Python one, same tests.

The strongest check, that the pipeline's output does not change at all when the
fast path takes packets, runs on every scenario of run/test_replay.py (its ``run``
calls ``fastcheck.check_equivalent``) and on the captures here."""

import struct

import numpy as np
import pcap
import pytest

from rtp2ws.bench.capgen import make_capture
from rtp2ws.capture.file import BACKENDS, reader_class
from rtp2ws.codec import g711
from rtp2ws.fastpath import twin as fastpath
from rtp2ws.fastpath.driver import FastDriver, Taken
from rtp2ws.media.leg import MediaLeg
from rtp2ws.media.rtp import parse_rtp
from rtp2ws.net.packet import (
    LINK_IPV4,
    LINK_IPV6,
    LINK_KINDS,
    LINK_TYPES,
    LinkLayer,
    PacketDecoder,
    link_layer,
)
from rtp2ws.signalling.correlator import Correlator
from rtp2ws.speedups import load_native

import callgen
import fastcheck
import netgen
from callgen import Call, Party, frames_of, rtp_packets, tone
from fastcheck import check_equivalent

A = Party("10.0.0.1", 5060, 4000, "1000")
B = Party("10.0.0.2", 5060, 5000, "2000")
A6 = Party("2001:db8::1", 5060, 4000, "1000")
B6 = Party("2001:db8::2", 5060, 5000, "2000")


@pytest.fixture(params=["native", "python"])
def backend(request):
    if request.param not in BACKENDS:
        from skips import native_skip_reason
        pytest.skip(native_skip_reason())
    return request.param


def fast_class(backend):
    return load_native("_fastpath").FastPath if backend == "native" else fastpath.FastPath


def open_fp(path, backend, deliver=0):
    reader = reader_class(backend)(str(path))
    cls, err = fastpath.for_reader(reader)
    return reader, cls(link_layer(reader.linktype), deliver, *fastpath.tables()), err


def stream(n_packets=10, t0=10.0, a=A, b=B, **kw):
    pcm = tone(440, 160 * n_packets)
    return pcm, rtp_packets(a, b, t0, pcm, ssrc=0x1234, seq0=100, ts0=8000, **kw)


def arm_at(fp, first_pkt_time, a=A, b=B, *, seq=101, ts=8160, ssrc=0x1234, pt=8, alaw=True, base=0):
    """Arm the a->b flow as a leg would after packet seq-1 (timestamp ts-160) at first_pkt_time."""
    src, dst = netgen._pack(a.ip), netgen._pack(b.ip)
    return fp.arm(src, a.rtp_port, dst, b.rtp_port, ssrc, 0x20000 + seq, pt, alaw, ts, ts - 160,
                  first_pkt_time, base)


def drain(fp, reader, deadline=float("inf"), budget=1 << 30):
    """Everything run() hands back until EOF: slow packets as (ts, frame), and TICKs."""
    out = []
    while True:
        r = fp.run(reader, deadline, budget)
        if r == fastpath.EOF:
            return out
        out.append(r)


def test_takes_in_order_packets_and_decodes_them(tmp_path, backend):
    pcm, s = stream(10)
    path = callgen.write(tmp_path / "s.pcap", frames_of(s))
    reader, fp, _ = open_fp(path, backend)
    sid = arm_at(fp, s[0][0])
    back = drain(fp, reader)
    # the first packet (seq 100) was not expected; the 9 after it were taken
    assert [r for r in back if r != fastpath.TICK] == [(s[0][0], netgen.link(1, s[0][2]))]
    assert fp.packets == 9 and reader.packets_read == 10
    (packets, nbytes, next_ext, last_ts, last_arrival, max_arrival, last_payload, samples, streamed,
     state, jitter, delta) = fp.take(sid, False)
    assert (streamed, state) == (0, None)      # an unbound slot streams nothing
    # max delta: from the armed packet (by default the last, seq 100) on, every packet's
    # distance from the one before; the reference is the last packet taken
    assert delta == (s[-1][0], 8000 + 9 * 160, max(b[0] - a[0] for a, b in zip(s, s[1:], strict=False)))
    # every packet on time (to the rounding of the capture times): 9 counted, J about 0
    assert jitter[2] == 9 and 0.0 <= jitter[0] <= jitter[3] < 1e-6 and 0.0 <= jitter[1] < 1e-5
    assert (packets, nbytes, next_ext, last_ts) == (9, 9 * 160, 0x20000 + 110, 8000 + 9 * 160)
    assert last_arrival == max_arrival == s[-1][0]
    assert last_payload == g711.encode_alaw(pcm[-160:])
    expect = g711.decode_alaw(g711.encode_alaw(pcm[160:]))
    assert np.array_equal(np.frombuffer(samples, np.int16), expect)
    assert fp.take(sid, True)[0] == 0          # taken once; then disarmed
    with pytest.raises(KeyError):
        fp.take(sid, False)


@pytest.mark.parametrize("what", ["seq", "ssrc", "pt", "ts", "late", "flow", "padding", "csrc", "rtcp_type"])
def test_anything_unexpected_goes_back_to_python(tmp_path, backend, what):
    pcm, s = stream(4)
    pkts = [p for _, _, p in s]
    i = 2     # the third packet is the odd one; the flow stays armed only for in-order ones
    ip = bytearray(pkts[i])
    rtp_off = 28
    t = [x[0] for x in s]
    if what == "seq":
        struct.pack_into("!H", ip, rtp_off + 2, 999)
    elif what == "ssrc":
        struct.pack_into("!I", ip, rtp_off + 8, 0x999)
    elif what == "pt":
        ip[rtp_off + 1] = 0
    elif what == "ts":
        struct.pack_into("!I", ip, rtp_off + 4, 8000 + 2 * 160 + 80)
    elif what == "late":
        t[i] = t[i - 1] + 0.6            # RTP clock says 20 ms, capture clock 600 ms
    elif what == "flow":
        ip = bytearray(netgen.udp(A.ip, 4002, B.ip, 5000, bytes(ip[rtp_off:])))
    elif what == "padding":
        ip[rtp_off] |= 0x20
    elif what == "csrc":
        ip[rtp_off] |= 0x01
    elif what == "rtcp_type":
        ip[rtp_off + 1] = 200
    pkts[i] = bytes(ip)
    path = callgen.write(tmp_path / "s.pcap", list(zip(t, pkts)))
    reader, fp, _ = open_fp(path, backend)
    arm_at(fp, t[0])
    back = [r for r in drain(fp, reader) if r != fastpath.TICK]
    # packet 0 came before the armed state, packet 1 was taken, packet 2 is the odd one,
    # and packet 3 is not what the flow expects next (102) once 2 went to Python
    assert [b[1] for b in back] == [netgen.link(1, p) for p in (pkts[0], pkts[2], pkts[3])]
    assert fp.packets == 1


def test_ipv6_vlan_and_link_types(tmp_path, backend):
    for linktype, vlans, a, b in [(1, (), A6, B6), (1, (10, 20), A, B), (113, (), A, B), (113, (100,), A6, B6),
                                  (276, (), A6, B6),
                                  (101, (), A, B), (0, (), A, B), (108, (), A6, B6), (228, (), A, B)]:
        if linktype == 228 and a is A6:
            continue
        pcm, s = stream(5, a=a, b=b)
        path = callgen.write(tmp_path / f"l{linktype}.pcap", frames_of(s), linktype, vlans=vlans)
        reader, fp, _ = open_fp(path, backend)
        arm_at(fp, s[0][0], a, b)
        drain(fp, reader)
        assert fp.packets == 4, (linktype, vlans, a.ip)


def test_every_link_type_of_packet_py(backend):
    """packet.py's LINK_TYPES is the one table of link types, and the fast path is given
    its rows: it takes RTP over every link type there, VLAN tags where the row allows
    them.  A link type of a kind the fast path has not learnt fails here (the
    constructor refuses the kind), as does one netgen cannot frame yet."""
    cls = fast_class(backend)
    kinds = set()
    for linktype, t in LINK_TYPES.items():
        layer = t.layer
        kinds.add(layer.kind)
        cls(layer, 0, *fastpath.tables())          # a kind the fast path does not know: ValueError
        for a, b in ((A, B), (A6, B6)):
            if (layer.kind == LINK_IPV4 and a is A6) or (layer.kind == LINK_IPV6 and a is A):
                continue
            for vlans in ((), (10,), (10, 20)) if layer.vlans else ((),):
                pcm, s = stream(5, a=a, b=b)
                frames = [(t0, netgen.link(linktype, ip, vlans=vlans)) for t0, _, ip in s]
                decoder = PacketDecoder(linktype)
                assert all(decoder.decode(f, t0) is not None for t0, f in frames)   # what the frames are
                fp = cls(link_layer(linktype), 0, *fastpath.tables())
                arm_at(fp, s[0][0], a, b)
                assert fp.feed(frames, 0, float("inf")) == 0         # seq 100: not expected
                assert fp.feed(frames, 1, float("inf")) == 5, (t.name, a.ip, vlans)
                assert fp.packets == 4
                # a frame cut inside its link header goes back to Python, as PacketDecoder refuses it
                cut = [(frames[0][0], frames[0][1][:layer.header - 1])] if layer.header else []
                assert fp.feed(cut, 0, float("inf")) == 0
    assert kinds == set(LINK_KINDS)


def test_a_link_layer_the_fast_path_does_not_know_is_refused(backend):
    cls = fast_class(backend)
    tables = fastpath.tables()
    with pytest.raises(ValueError, match="unknown link kind 'token-ring'"):
        cls(LinkLayer("token-ring", 22), 0, *tables)
    for bad in (LinkLayer("ethertype", 13, 12), LinkLayer("af", 3), LinkLayer("ip", -1)):
        with pytest.raises(ValueError, match="out of range"):
            cls(bad, 0, *tables)
    for bad in (1, ("ethertype", 14, 12), (1, 14, 12, True)):
        with pytest.raises(TypeError):
            cls(bad, 0, *tables)


def test_fragments_and_vxlan_are_not_taken(tmp_path, backend):
    pcm, s = stream(3)
    frags = netgen.fragment(s[1][2], 100)
    vx = netgen.udp("192.0.2.1", 1234, "192.0.2.2", 4789, b"\x08\0\0\0\0\0\x01\0" + netgen.link(1, s[2][2]))
    frames = [(s[0][0], s[0][2])] + [(s[1][0], f) for f in frags] + [(s[2][0], vx)]
    path = callgen.write(tmp_path / "f.pcap", frames)
    reader, fp, _ = open_fp(path, backend)
    arm_at(fp, s[0][0])
    back = [r for r in drain(fp, reader) if r != fastpath.TICK]
    assert fp.packets == 0 and len(back) == len(frames)


def test_budget_ticks_deadline_and_ready(tmp_path, backend):
    pcm, s = stream(10)
    path = callgen.write(tmp_path / "s.pcap", frames_of(s))
    reader, fp, _ = open_fp(path, backend, deliver=480)   # ready after 3 packets' samples
    sid = arm_at(fp, s[0][0])
    assert fp.run(reader, float("inf"), 4)[0] == s[0][0]     # packet 1: not expected
    assert fp.run(reader, float("inf"), 4) == fastpath.TICK  # packets 2-4 taken: 4 read
    assert fp.ready() == [sid] and fp.ready() == []
    # a deadline stops the run at the first packet at or after it, whatever it is
    r = fp.run(reader, s[6][0], 100)
    assert r[0] == s[6][0] and fp.packets == 5
    assert fp.take(sid, False)[0] == 5
    assert fp.ready() == []                     # ready once per crossing
    fp.rebase(sid, 0)
    r = fp.run(reader, float("inf"), 100)       # seq 106 went back to Python: 107.. unexpected now
    assert r[0] == s[7][0]
    assert fp.touched() == [] and fp.armed() == [sid]


def test_a_disarmed_slot_leaves_the_ready_list(tmp_path, backend):
    pcm, s = stream(4)
    path = callgen.write(tmp_path / "s.pcap", frames_of(s))
    reader, fp, _ = open_fp(path, backend)
    sid = arm_at(fp, s[0][0])
    drain(fp, reader)
    fp.take(sid, True)
    assert fp.ready() == [] and fp.armed() == []
    assert arm_at(fp, s[0][0]) == sid           # slot ids are reused
    with pytest.raises(ValueError):
        arm_at(fp, s[0][0])                     # one slot per flow


def test_timestamps_match_pypcap_and_truncation_ticks_then_fails(tmp_path, backend):
    rnd = np.random.default_rng(3)
    times = np.sort(rnd.uniform(1.6e9, 1.7e9, 300))
    frames = [(float(t), netgen.udp(A.ip, 1, B.ip, 2, b"x" * int(rnd.integers(1, 300)))) for t in times]
    for ns in (False, True):
        path = str(tmp_path / f"t{int(ns)}.pcap")
        netgen.write_pcap(path, [(t, netgen.link(1, ip)) for t, ip in frames], 1, nanosecond=ns)
        ref = []
        pc = pcap.pcap(name=path, promisc=False, immediate=False, timeout_ms=0)
        pc.dispatch(-1, lambda ts, f: ref.append((ts, bytes(f))))
        reader, fp, _ = open_fp(path, backend)
        assert [r for r in drain(fp, reader) if r != fastpath.TICK] == ref
    data = open(path, "rb").read()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[:len(data) // 2])
    reader, fp, err = open_fp(cut, backend)
    got = []
    with pytest.raises(err, match="truncated dump file"):
        while True:
            r = fp.run(reader, float("inf"), 1000)
            got.append(r)
    assert got[-1] == fastpath.TICK and len(got) == reader.packets_read + 1


def test_open_errors_are_oserrors(tmp_path, backend):
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"\xd4\xc3\xb2\xa1" + b"\0" * 4)
    with pytest.raises(OSError):
        reader_class(backend)(str(bad))


# -- the pipeline with the fast path gives what it gives without ---------------------


def test_real_captures_unchanged_by_the_fast_path():
    for name in ("demo_speech.pcap", "sipp_uac_pcap.pcap"):
        assert check_equivalent(f"tests/data/{name}", budgets=(1024, 5)) > 0
        assert fastcheck.LAST_STREAMED[0] > 0      # ... also where it streamed the legs itself


def test_many_calls_with_loss_and_reordering(tmp_path):
    path = str(tmp_path / "b.pcap")
    make_capture(path, 12, 3.0, loss=0.03, reorder=0.03, seed=9)
    assert check_equivalent(path, budgets=(1024, 7)) > 1000
    # legs bound and released again and again (each loss or reordering disarms): still
    # the same streams, bytes and messages
    assert fastcheck.LAST_STREAMED[0] > 100_000


def test_a_streamed_leg_synced_by_sip_then_silent_ends_with_its_whole_timeline(tmp_path):
    """fuzz/crashes/pipeline/streamed-after-a-timer-sync-then-disarmed: SIP for the call
    (an INFO) syncs the legs between a packet and the next hand-out, leaving that packet's
    audio on the slot; the next hand-out streams it; the media then stops and the BYE
    disarms the leg with no packet since.  The samples streamed in between must still
    count on the leg's timeline (they did not: its end showed 60 ms less audio)."""
    c = Call("info@test", A, B)
    sa = rtp_packets(A, B, 100.1, tone(440, 8000), ssrc=1)          # the caller's media: 1 s
    sb = rtp_packets(B, A, 100.103, tone(440, 12000), ssrc=2)       # the callee's goes on: hand-outs
    last = max(t for t, _, _ in sa)
    c.cseq += 1
    info = c.request(last + 0.004, "INFO")
    path = callgen.write(tmp_path / "info.pcap", frames_of(c.setup(100), sa, sb, info, c.bye(last + 1.0)))
    assert check_equivalent(path, delivers=(0,), flushes=(40,), budgets=(3,)) > 0
    assert fastcheck.LAST_STREAMED[0] > 0


def test_ipv6_calls_wraparound_and_timeline_jumps(tmp_path):
    c = Call("v6@test", A6, B6)
    pcm = tone(300, 8000)
    s1 = rtp_packets(A6, B6, 100.1, pcm, ssrc=7, seq0=65530, ts0=0xFFFFFF00)
    s2 = rtp_packets(B6, A6, 100.1, pcm, ssrc=8, law="ulaw", pt=0)
    # the caller's clock jumps: 2 s of capture time pass where RTP says 20 ms
    s1 = [(t + (2.0 if i >= 25 else 0.0), q, p) for i, (t, q, p) in enumerate(s1)]
    path = callgen.write(tmp_path / "v6.pcap", frames_of(c.setup(100, pts=(8, 0)), s1, s2, c.bye(104)))
    assert check_equivalent(path) > 0


def test_vlan_in_linux_cooked_v1_unchanged_by_the_fast_path(tmp_path):
    """``-i any``: libpcap puts the VLAN tag back after the cooked header."""
    c = Call("sll@test", A, B)
    pcm = tone(300, 4000)
    frames = frames_of(c.setup(100), rtp_packets(A, B, 100.1, pcm), rtp_packets(B, A, 100.1, pcm, ssrc=9),
                       c.bye(101))
    path = callgen.write(tmp_path / "sll.pcap", frames, 113, vlans=(100,))
    assert check_equivalent(path) > 0


def test_random_corruption_changes_nothing(tmp_path):
    """Corrupted frames must be judged by the pipeline exactly as without the fast path."""
    rnd = np.random.default_rng(11)
    c = Call("c@test", A, B)
    pcm = tone(500, 4000)
    frames = frames_of(c.setup(100), rtp_packets(A, B, 100.1, pcm), rtp_packets(B, A, 100.1, pcm, ssrc=9),
                       c.bye(101))
    for trial in range(6):
        out = []
        for t, ip in frames:
            f = bytearray(ip)
            if rnd.random() < 0.3:
                for _ in range(int(rnd.integers(1, 4))):
                    f[int(rnd.integers(0, len(f)))] = int(rnd.integers(0, 256))
            if rnd.random() < 0.05:
                f = f[: int(rnd.integers(1, len(f)))]
            out.append((t, bytes(f)))
        path = callgen.write(tmp_path / f"r{trial}.pcap", out, 101)
        check_equivalent(path, budgets=(1024,), delivers=(0,))


def test_feed_takes_from_a_list_as_live_capture_hands_it(tmp_path, backend):
    pcm, s = stream(6)
    frames = [(t, netgen.link(1, p)) for t, _, p in s]
    reader, fp, _ = open_fp(callgen.write(tmp_path / "s.pcap", frames_of(s)), backend)
    arm_at(fp, s[0][0])
    assert fp.feed(frames, 0, float("inf")) == 0          # not expected: Python's
    assert fp.feed(frames, 1, float("inf")) == 6 and fp.packets == 5
    assert fp.feed(frames, 6, float("inf")) == 6
    assert fp.feed([(s[0][0], bytearray(frames[0][1]))], 0, float("inf")) == 0   # bytes only


# -- the driver: legs and flows ----------------------------------------------------------


def _leg_packets(n):
    """n RTP packets A -> B as (capture time, frame, RtpPacket), and the flow's 5-tuple."""
    pcm, s = stream(n)
    decoder = PacketDecoder(1)
    out = []
    for t, _, ip in s:
        frame = netgen.link(1, ip)
        pkt = decoder.decode(frame, t)
        out.append((t, frame, parse_rtp(pkt.payload)))
        flow = (pkt.src, pkt.sport, pkt.dst, pkt.dport)
    return out, flow


def test_driver_brings_a_leg_up_to_date(backend):
    """What the fast path took for an armed leg reaches it as a ``Taken`` when the driver
    syncs it (or the correlator unbinds its flow), and leaves the leg as pushing each
    packet would have; once synced with ``disarm`` the flow is no longer armed."""
    packets, flow = _leg_packets(12)
    key = ("call", "caller")
    ref = MediaLeg("caller")
    for t, _, rtp in packets:
        ref.push(rtp, t)

    leg = MediaLeg("caller")
    correlator = Correlator()
    correlator.expect(key, (flow[2], flow[3]), (flow[0], flow[1]))
    assert correlator.lookup(*flow) == (key, False)
    got = []

    def absorb(k, taken):
        got.append((k, taken))
        leg.absorb(taken.packets, taken.nbytes, taken.next_ext, taken.last_ts, taken.last_arrival,
                   taken.last_payload, taken.samples, jitter=taken.jitter, delta=taken.delta)

    driver = FastDriver(link_layer(1), 0, correlator, absorb)
    assert correlator.on_unbind == driver.unbound
    fp = driver.start(fast_class(backend))
    leg.flows.append(("a", "b"))
    t, _, rtp = packets[0]
    leg.push(rtp, t)
    driver.arm(key, flow, leg, rtp.payload_type)
    assert list(driver.legs) == [key]
    frames = [(t, f) for t, f, _ in packets[1:]]
    assert fp.feed(frames[:5], 0, float("inf")) == 5
    driver.sync(key, disarm=False)                   # SIP, call timers: the leg stays armed
    assert [k for k, _ in got] == [key] and list(driver.legs) == [key]
    taken = got[0][1]
    assert type(taken) is Taken and taken.packets == 5 and taken.nbytes == 5 * 160
    assert taken.last_arrival == taken.max_arrival == packets[5][0]
    assert taken.next_ext == leg.jb.next_sequence and len(taken.samples) == 2 * 5 * 160
    driver.sync(key, disarm=False)                   # nothing new: nothing absorbed
    assert len(got) == 1
    assert fp.feed(frames[5:], 0, float("inf")) == 6
    correlator.remove(key)                           # the flow's binding goes: taken and disarmed
    assert len(got) == 2 and got[1][1].packets == 6 and driver.legs == {} and fp.armed() == []
    assert driver.packets == fp.packets == 11
    assert leg.counts == ref.counts and leg.jb.stats == ref.jb.stats
    assert np.array_equal(leg.take_audio(), ref.take_audio())
    assert leg.fast_state(8) == ref.fast_state(8)     # the interarrival jitter too, to the bit
    assert leg.jitter == ref.jitter and leg.jitter.counted == 11
    assert leg.quality.delta == ref.quality.delta and leg.quality.counts == ref.quality.counts == (12, 12)
    assert leg.quality_report == ref.quality_report


class RecordingLane:
    """A lane as the fast path sees one: anything with push()."""

    def __init__(self) -> None:
        self.pushes: list = []

    def push(self, frames, newest, held, packet):
        self.pushes.append((bytes(frames), newest, held, packet))


def _pump_all(tmp_path, backend, lane):
    pcm, s = stream(10)
    tmp_path.mkdir(exist_ok=True)
    path = callgen.write(tmp_path / "s.pcap", frames_of(s))
    reader, fp, _ = open_fp(path, backend, deliver=160)
    sid = arm_at(fp, s[0][0])
    fp.bind(sid, b"", b"", 640, lane)
    pumped = []
    while True:
        r = fp.run(reader, float("inf"), 1)       # a tick after every packet
        if r == fastpath.EOF:
            break
        if r == fastpath.TICK:
            pumped += fp.pump()
    return s, sid, pumped, fp.take(sid, True)


def test_a_slot_bound_with_a_lane_pushes_its_frames_there(tmp_path, backend):
    """The frames, the newest packet's time and the samples held that pump() would return
    go to lane.push instead (with the 16 kHz samples of the newest packet), for a
    Python lane and for the C one (through the capsule, no Python per frame)."""
    s, sid, ref, ref_take = _pump_all(tmp_path / "a", backend, None)
    assert len(ref) >= 7 and all(len(frames) == 640 for _, frames, _, _ in ref)   # less the filter's delay
    lane = RecordingLane()
    _, _, got, take = _pump_all(tmp_path / "b", backend, lane)
    assert got == []
    assert lane.pushes == [(frames, newest, held, 320) for _, frames, newest, held in ref]
    assert take[8] == ref_take[8] == 9 * 160          # streamed, counted as before
    total = 320 * len(ref)
    from rtp2ws.ws import outbox as outbox_mod
    from rtp2ws.ws.lane import LanePy, make_lane
    for twin in outbox_mod.TWINS:
        ob = outbox_mod.TWINS[twin][0]({"call_id": "c", "tag": "caller", "stream_id": "s"}, frame_ms=20)
        real = make_lane(ob, [], "stream")
        assert (type(real) is LanePy) == (twin == "python")
        real.stamps = []
        _pump_all(tmp_path / f"c-{twin}", backend, real)
        assert real.pushed == ob.offset == total
        assert real.stamps == [(320 * i, 320 * (i + 1), newest, held, 320)
                               for i, (_, _, newest, held) in enumerate(ref)]
        msgs: list = []
        ob.take(msgs, 1 << 20)
        assert b"".join(bytes(m) for m in msgs if not isinstance(m, str)) == b"".join(
            frames for _, frames, _, _ in ref)


def test_bind_refuses_a_lane_without_push(tmp_path, backend):
    pcm, s = stream(3)
    path = callgen.write(tmp_path / "s.pcap", frames_of(s))
    _, fp, _ = open_fp(path, backend)
    sid = arm_at(fp, s[0][0])
    with pytest.raises(TypeError, match="lane"):
        fp.bind(sid, b"", b"", 640, object())


# -- ignored flows (a foreign call's: rtp2ws.pipeline.shard) -------------------------------

def ignore_ab(fp, a=A, b=B):
    return fp.ignore(netgen._pack(a.ip), a.rtp_port, netgen._pack(b.ip), b.rtp_port)


@pytest.mark.parametrize("how", ["run", "feed"])
def test_ignored_flow_is_counted_and_dropped_with_its_newest_arrival(tmp_path, backend, how):
    """Any RTP on an ignored flow (whatever its SSRC, sequence or timestamp) is dropped
    here, counted, and its newest capture time kept; ``ignored`` reads and clears that."""
    _, s = stream(6)
    pkts = [p for _, _, p in s]
    t = [x[0] for x in s]
    t[3], t[4] = t[4], t[3]            # capture time may step back: the newest is kept
    ip = bytearray(pkts[2])
    struct.pack_into("!H", ip, 28 + 2, 999)        # out of sequence: dropped all the same
    pkts[2] = bytes(ip)
    path = callgen.write(tmp_path / "s.pcap", list(zip(t, pkts)))
    reader, fp, _ = open_fp(path, backend)
    fid = ignore_ab(fp)
    other = ignore_ab(fp, B, A)
    assert fid != other
    if how == "run":
        back = [r for r in drain(fp, reader) if r != fastpath.TICK]
    else:
        batch = [(ts, netgen.link(1, p)) for ts, p in zip(t, pkts)]
        assert fp.feed(batch, 0, float("inf")) == len(batch)
        back = []
    assert back == []
    assert (fp.foreign, fp.packets) == (6, 0)
    assert fp.now == max(t)
    assert fp.ignored(fid, False) == (6, max(t))
    assert fp.ignored(fid, False) == (0, float("-inf"))       # read and cleared
    assert fp.ignored(other, True) == (0, float("-inf"))
    with pytest.raises(KeyError):
        fp.ignored(other, False)
    assert fp.ignored(fid, True) == (0, float("-inf"))
    assert fp.armed() == [] and fp.touched() == []


@pytest.mark.parametrize("what", ["padding", "csrc", "rtcp_type", "version", "short", "deadline"])
def test_ignored_flow_gives_python_what_is_not_plain_rtp(tmp_path, backend, what):
    """The checks of an armed flow's packets come first: what Python must look at
    (RTCP, padding, extensions, CSRCs, no payload, a timer due) goes to it."""
    _, s = stream(3)
    pkts = [p for _, _, p in s]
    ip = bytearray(pkts[1])
    rtp_off = 28
    if what == "padding":
        ip[rtp_off] |= 0x20
    elif what == "csrc":
        ip[rtp_off] |= 0x01
    elif what == "rtcp_type":
        ip[rtp_off + 1] = 200
    elif what == "version":
        ip[rtp_off] = 0x40
    elif what == "short":
        ip = bytearray(netgen.udp(A.ip, A.rtp_port, B.ip, B.rtp_port, bytes(ip[rtp_off:rtp_off + 12])))
    pkts[1] = bytes(ip)
    t = [x[0] for x in s]
    path = callgen.write(tmp_path / "s.pcap", list(zip(t, pkts)))
    reader, fp, _ = open_fp(path, backend)
    fid = ignore_ab(fp)
    deadline = t[1] if what == "deadline" else float("inf")
    back = [r for r in drain(fp, reader, deadline) if r != fastpath.TICK]
    expect = [pkts[1]] if what != "deadline" else pkts[1:]
    assert [b[1] for b in back] == [netgen.link(1, p) for p in expect]
    assert fp.ignored(fid, True) == (3 - len(expect), t[2] if what != "deadline" else t[0])


def test_a_flow_is_armed_or_ignored_not_both(backend):
    fp = fast_class(backend)(link_layer(1), 0, *fastpath.tables())
    fid = ignore_ab(fp)
    with pytest.raises(ValueError):
        arm_at(fp, 1.0)
    with pytest.raises(ValueError):
        ignore_ab(fp)
    with pytest.raises(ValueError):
        fp.ignore(netgen._pack(A.ip), 1, netgen._pack(A6.ip), 2)
    fp.ignored(fid, True)
    sid = arm_at(fp, 1.0)
    with pytest.raises(ValueError):
        ignore_ab(fp)
    fp.take(sid, True)
    fid2 = ignore_ab(fp)              # ids are reused
    assert fid2 == fid
    assert fp.foreign == 0


def test_an_armed_slot_starts_with_a_small_buffer(tmp_path, backend):
    """A slot's G.711 buffer starts at 64 ms and grows by doubling: at realtime a slot holds
    a packet or two between hand-outs, and 2 KB per leg was a live call's memory for nothing.
    (tracemalloc sees the native twin's PyMem buffers at the Python line that called it.)"""
    import tracemalloc

    if backend != "native":
        pytest.skip("the buffer is the native twin's")
    legs = 64
    pcm = tone(440, 160 * 3)
    flows = [rtp_packets(Party("10.0.0.1", 5060, 4000 + 2 * i, "1000"), B, 10.0, pcm, ssrc=0x1234, seq0=100,
                         ts0=8000) for i in range(legs)]
    reader, fp, _ = open_fp(callgen.write(tmp_path / "s.pcap", frames_of(flows[0])), backend)
    for i, s in enumerate(flows):
        arm_at(fp, s[0][0], Party("10.0.0.1", 5060, 4000 + 2 * i, "1000"))
    batch = [(s[1][0], netgen.link(1, s[1][2])) for s in flows]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        assert fp.feed(batch, 0, float("inf")) == legs and fp.packets == legs
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown <= legs * 600              # 512 bytes a slot (it was 2048)
    batch = [(s[2][0], netgen.link(1, s[2][2])) for s in flows]
    assert fp.feed(batch, 0, float("inf")) == legs and fp.packets == 2 * legs


def test_run_pauses_before_a_packet_not_due_and_reads_it_next(tmp_path, backend):
    """run(..., until): the first packet at or after ``until`` stays in the reader
    (``held_ts``), counted once, and is the next one read: a paced replay's wait."""
    pcm, s = stream(6)
    path = callgen.write(tmp_path / "s.pcap", frames_of(s))
    reader, fp, _ = open_fp(path, backend)
    arm_at(fp, s[0][0])
    first = fp.run(reader, float("inf"), 1 << 30, float("-inf"))
    assert first == fastpath.PAUSE and reader.held_ts == s[0][0] and reader.packets_read == 1
    assert fp.run(reader, float("inf"), 1 << 30, s[0][0]) == fastpath.PAUSE    # still not due
    assert reader.packets_read == 1 and fp.packets == 0
    # the held packet (seq 100, not expected by the armed flow) comes back to Python
    back = fp.run(reader, float("inf"), 1 << 30, s[3][0])
    assert back == (s[0][0], netgen.link(1, s[0][2]))
    assert fp.run(reader, float("inf"), 1 << 30, s[3][0]) == fastpath.PAUSE
    assert fp.packets == 2 and reader.held_ts == s[3][0] and reader.packets_read == 4
    assert fp.run(reader, float("inf"), 1 << 30) == fastpath.TICK          # the rest, then its tick
    assert fp.run(reader, float("inf"), 1 << 30) == fastpath.EOF
    assert fp.packets == 5 and reader.packets_read == 6 and reader.held_ts is None
