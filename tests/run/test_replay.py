"""End to end: generated captures → ``rtp2ws replay`` → WAVs and calls.json."""

import json
import os
import re
import struct
import subprocess
import sys

import numpy as np
import pytest

from rtp2ws import cli
from rtp2ws.codec import g711
from rtp2ws.sinks.wav import read_wav

import callgen
import netgen
import paths
from callgen import Call, Party, expected_16k, frames_of, rtp_packets, sdp, tone
from fastcheck import check_equivalent

A = Party("10.0.0.1", 5060, 4000, "1000")
B = Party("10.0.0.2", 5060, 5000, "2000")
N = 8000  # one second of audio per leg


def run(tmp_path, frames, *args, linktype=1, vlans=(), pcapng=False, name="cap.pcap"):
    path = callgen.write(tmp_path / name, frames, linktype, vlans=vlans, pcapng=pcapng)
    # Every scenario here also checks that the fast path (C and Python) changes nothing.
    opts = dict(zip(args[::2], args[1::2]))
    check_equivalent(path, jitter_ms=float(opts.get("--jitter-ms", 60)),
                     rtp_timeout=float(opts.get("--rtp-timeout", 300)))
    out = tmp_path / "out"
    rc = cli.main(["replay", path, "--out-dir", str(out), "--no-progress", *args])
    with open(out / "calls.json") as f:
        return rc, json.load(f), out


def leg(manifest_call, tag):
    return next(l for l in manifest_call["legs"] if l["tag"] == tag)


def wav(out, entry):
    data, rate, ch = read_wav(os.path.join(out, entry["wav"]))
    assert rate == 16000 and ch == 1
    return data


def basic_call(t0=100.0, call_id="basic@test", a=A, b=B, n=N, **kw):
    c = Call(call_id, a, b)
    pa, pb = tone(440, n), tone(1000, n, amp=6000)
    sa = rtp_packets(a, b, t0 + 0.1, pa, ssrc=0xAAAA0001, **kw)
    sb = rtp_packets(b, a, t0 + 0.1 + 0.003, pb, ssrc=0xBBBB0001, **kw)
    return c, c.setup(t0), sa, sb, pa, pb


def test_basic_call_bit_exact(tmp_path):
    c, setup, sa, sb, pa, pb = basic_call()
    rc, m, out = run(tmp_path, frames_of(setup, sa, sb, c.bye(101.5)))
    assert rc == 0
    (call,) = m["calls"]
    assert call["call_id"] == "basic@test"
    assert call["from"] == "sip:1000@10.0.0.1" and call["to"] == "sip:2000@10.0.0.2"
    assert call["end_reason"] == "bye"
    assert call["start"].startswith("1970-01-01T00:01:40.000")
    assert call["end"].startswith("1970-01-01T00:01:41.500")
    caller, callee = leg(call, "caller"), leg(call, "callee")
    assert caller["src"] == "10.0.0.1:4000" and caller["dst"] == "10.0.0.2:5000"
    assert callee["src"] == "10.0.0.2:5000" and callee["dst"] == "10.0.0.1:4000"
    assert caller["ssrcs"] == ["0xaaaa0001"] and caller["codecs"] == ["PCMA"]
    assert caller["packets"] == 50 and caller["lost"] == 0 and caller["late"] == 0 and caller["duplicates"] == 0
    assert caller["concealed_ms"] == 0 and caller["dtmf"] == [] and caller["encrypted"] is False
    assert np.array_equal(wav(out, caller), expected_16k(pa))
    assert np.array_equal(wav(out, callee), expected_16k(pb))
    assert m["summary"]["malformed"] == 0


def test_loss_reorder_duplicates(tmp_path):
    c, setup, sa, sb, pa, pb = basic_call()
    sa = callgen.drop(sa, [1010, 1011])                  # two lost packets (40 ms)
    sa = callgen.reorder(sa, [(20, 21), (30, 32)])       # swapped within the jitter depth
    sa = callgen.duplicate(sa, [5, 6, 40])               # three duplicates
    late = [(p[0] + 0.5, p[1], p[2]) for p in sb if p[1] == 1025]   # arrives 500 ms late
    sb = [p for p in sb if p[1] != 1025] + late
    rc, m, out = run(tmp_path, frames_of(setup, sa, sb, c.bye(102)))
    caller, callee = leg(m["calls"][0], "caller"), leg(m["calls"][0], "callee")
    # arrival order ...21, 20... and ...32, 31, 30...: three packets overtaken
    assert (caller["lost"], caller["late"], caller["duplicates"], caller["reordered"]) == (2, 0, 3, 3)
    assert caller["concealed_ms"] == 40
    assert (callee["lost"], callee["late"], callee["duplicates"]) == (1, 1, 0)
    assert callee["concealed_ms"] == 20
    got, want = wav(out, caller), expected_16k(pa)
    assert len(got) == len(want)                        # the timeline stays continuous
    # outside the concealed 40 ms (plus filter settling) the audio is exact
    lo, hi = 10 * 320, 12 * 320
    assert np.array_equal(got[:lo - 64], want[:lo - 64])
    assert np.array_equal(got[hi + 64:], want[hi + 64:])
    # concealment repeats the previous packet with a fade instead of silence
    assert np.abs(got[lo + 64:lo + 200]).max() > 1000


def test_dtmf_events_one_per_key_press(tmp_path):
    c = Call("dtmf@test", A, B)
    pa = tone(440, 3840)
    s1 = rtp_packets(A, B, 100.1, pa[:1920], ssrc=7, seq0=10, ts0=0)             # seq 10-21
    d = callgen.dtmf_packets(A, B, 100.1 + 1920 / 8000, 5, ssrc=7, seq0=22, ts=1920)  # seq 22-29
    s2 = rtp_packets(A, B, 100.1 + 1920 / 8000 + 0.2, pa[1920:], ssrc=7, seq0=30, ts0=1920 + 1600)
    rc, m, out = run(tmp_path, frames_of(c.setup(100), s1, d, s2, c.bye(101)))
    caller = leg(m["calls"][0], "caller")
    assert [(x["digit"], x["duration_ms"]) for x in caller["dtmf"]] == [("5", 120)]
    assert caller["dtmf"][0]["start"].startswith("1970-01-01T00:01:40.340")
    assert caller["lost"] == 0
    got = wav(out, caller)
    # the telephone-event packets' time is silence on the leg timeline
    assert len(got) == 2 * (1920 + 1600 + 1920)
    assert not got[2 * 1920 + 64:2 * (1920 + 1600) - 64].any()


def test_silence_suppression_and_ssrc_change_keep_timeline(tmp_path):
    c = Call("gap@test", A, B)
    pa = tone(440, 4000)
    s1 = rtp_packets(A, B, 100.1, pa[:1600], ssrc=1, seq0=100, ts0=1000)
    # 1 s of silence suppression: sequence continues, timestamp jumps 8000
    s2 = rtp_packets(A, B, 100.1 + 0.2 + 1.0, pa[1600:2400], ssrc=1, seq0=110, ts0=1000 + 1600 + 8000)
    # new SSRC (e.g. after a transfer) with unrelated seq/ts, 0.5 s after the last packet ended
    s3 = rtp_packets(A, B, 100.1 + 0.2 + 1.0 + 0.1 + 0.5, pa[2400:], ssrc=2, seq0=40000, ts0=123456789)
    rc, m, out = run(tmp_path, frames_of(c.setup(100), s1, s2, s3, c.bye(103)))
    caller = leg(m["calls"][0], "caller")
    assert caller["ssrcs"] == ["0x00000001", "0x00000002"]
    assert caller["lost"] == 0 and caller["concealed_ms"] == 0
    got = wav(out, caller)
    assert len(got) == 2 * (1600 + 8000 + 800 + 4000 + 1600)
    exp = expected_16k(pa)
    # first talk spurt bit-exact, then exact silence for the suppression gap
    assert np.array_equal(got[:3200 - 64], exp[:3200 - 64])
    assert not got[3200 + 64:3200 + 16000 - 64].any()
    assert not got[2 * (1600 + 8000 + 800) + 64: 2 * (1600 + 8000 + 800 + 4000) - 64].any()


def test_reinvite_moves_media_and_changes_codec(tmp_path):
    c = Call("move@test", A, B)
    f = c.setup(100, pts=(8, 0, 101))
    pa = tone(440, 8000)
    s1 = rtp_packets(A, B, 100.1, pa[:4000], ssrc=1, seq0=1, ts0=0)
    c.cseq = 2
    moved_a = Party(A.ip, 5060, 4100, A.user)
    moved_b = Party(B.ip, 5060, 5100, B.user)
    f += c.request(100.61, "INVITE", body=sdp(A.ip, 4100, pts=(0, 101)))
    f += c.response(100.62, 200, "OK", "INVITE", body=sdp(B.ip, 5100, pts=(0, 101)))
    f += c.request(100.63, "ACK")
    s2 = rtp_packets(moved_a, moved_b, 100.64, pa[4000:], ssrc=1, seq0=26, ts0=4000 + 320, pt=0, law="ulaw")
    rc, m, out = run(tmp_path, frames_of(f, s1, s2, c.bye(102)))
    caller = leg(m["calls"][0], "caller")
    assert caller["codecs"] == ["PCMA", "PCMU"]
    assert caller["packets"] == 50 and caller["lost"] == 0
    got = wav(out, caller)
    assert len(got) == 2 * (8000 + 320)
    a = g711.decode_alaw(g711.encode_alaw(pa[:4000]))
    u = g711.decode_ulaw(g711.encode_ulaw(pa[4000:]))
    from rtp2ws.codec.resample import upsample_2x
    exp = upsample_2x(np.concatenate([a, np.zeros(320, np.int16), u]))
    assert np.array_equal(got, exp)


@pytest.mark.parametrize("linktype,vlans,v6,pcapng", [
    (1, (), False, False), (1, (100,), False, True), (1, (10, 20), True, False),
    (113, (), False, False), (276, (), True, True), (101, (), False, False),
    (0, (), True, False), (108, (), False, False),
])
def test_link_types_vlan_ipv6_pcapng(tmp_path, linktype, vlans, v6, pcapng):
    a = Party("2001:db8::1", 5060, 4000, "1000") if v6 else A
    b = Party("2001:db8::2", 5060, 5000, "2000") if v6 else B
    c, setup, sa, sb, pa, pb = basic_call(a=a, b=b, n=1600)
    rc, m, out = run(tmp_path, frames_of(setup, sa, sb, c.bye(101)), linktype=linktype, vlans=vlans,
                     pcapng=pcapng)
    assert rc == 0
    caller = leg(m["calls"][0], "caller")
    if v6:
        assert caller["src"] == "[2001:db8::1]:4000"
    assert np.array_equal(wav(out, caller), expected_16k(pa))
    assert np.array_equal(wav(out, leg(m["calls"][0], "callee")), expected_16k(pb))


def test_fragmented_invite_out_of_order_and_sip_over_tcp(tmp_path):
    c, setup, sa, sb, pa, pb = basic_call(n=1600)
    # pad the INVITE so it fragments; deliver its fragments in reverse order
    invite = setup[0][1]
    frags = netgen.fragment(invite, 200)
    assert len(frags) > 2
    frag_frames = [(setup[0][0] + i * 1e-4, f) for i, f in enumerate(reversed(frags))]
    rc, m, out = run(tmp_path, frames_of(frag_frames, setup[1:], sa, sb, c.bye(101)))
    assert m["calls"][0]["end_reason"] == "bye"
    assert np.array_equal(wav(out, leg(m["calls"][0], "caller")), expected_16k(pa))

    # the same signalling over TCP: 200 OK split across 3 segments, INVITE+others coalesced
    def tcp_stream(frames, sport, dport, src, dst):
        payload = b"".join(ip[(ip[0] & 15) * 4 + 8:] for _, ip in frames)
        segs, seq, cut = [], 1000, [0, 200, 500, len(payload)]
        for i in range(3):
            segs.append((frames[0][0] + i * 1e-3,
                         netgen.tcp(src, sport, dst, dport, payload[cut[i]:cut[i + 1]], seq=seq + cut[i])))
        return segs
    c2 = Call("tcp@test", A, B)
    st = c2.setup(100)
    a_to_b = [st[0], st[4]]          # INVITE, ACK
    b_to_a = [st[1], st[2], st[3]]   # 100, 180, 200
    frames = tcp_stream(a_to_b, 40000, 5060, A.ip, B.ip) + tcp_stream(b_to_a, 5060, 40000, B.ip, A.ip)
    frames = [(t + (0.06 if i < 3 else 0), p) for i, (t, p) in enumerate(frames)]
    rc, m, out = run(tmp_path, frames_of(frames, sa, sb), name="tcp.pcap")
    (call,) = m["calls"]
    assert call["call_id"] == "tcp@test" and call["end_reason"] == "capture_end"
    assert np.array_equal(wav(out, leg(call, "callee")), expected_16k(pb))


def test_same_sdp_address_two_calls_and_nat_source(tmp_path):
    # both calls' callees advertise the same media address; callers differ
    a2 = Party("10.0.0.3", 5060, 4000, "1001")
    c1, s1, sa1, sb1, pa1, _ = basic_call(call_id="one@test", n=1600)
    pa2 = tone(700, 1600)
    c2 = Call("two@test", a2, B, from_tag="f2")
    s2 = c2.setup(100.001)
    sa2 = rtp_packets(a2, B, 100.105, pa2, ssrc=0x2222)
    # caller 1 is behind NAT: its RTP comes from another source port than its SDP says
    sa1 = rtp_packets(Party("10.0.0.1", 5060, 4000, "1000"), B, 100.1, pa1, ssrc=0xAAAA0001, src_port=61000)
    rc, m, out = run(tmp_path, frames_of(s1, s2, sa1, sa2, c1.bye(101), c2.bye(101.1)))
    calls = {c["call_id"]: c for c in m["calls"]}
    one, two = leg(calls["one@test"], "caller"), leg(calls["two@test"], "caller")
    assert one["src"] == "10.0.0.1:61000" and one["packets"] == 10
    assert two["src"] == "10.0.0.3:4000" and two["packets"] == 10
    assert np.array_equal(wav(out, one), expected_16k(pa1))
    assert np.array_equal(wav(out, two), expected_16k(pa2))


def test_stun_rtcp_unknown_pt_not_decoded(tmp_path):
    import struct
    c, setup, sa, sb, pa, pb = basic_call(n=1600)
    stun = struct.pack("!HHI", 1, 0, 0x2112A442) + b"\x00" * 12
    rtcp = bytes.fromhex("80c80006aaaa0001") + b"\x00" * 20
    from rtp2ws.media.rtp import RtpPacket, serialize_rtp
    odd = serialize_rtp(RtpPacket(1005, 50000 + 5 * 160, 0xAAAA0001, 96, False, b"\x00" * 20))
    extra = [(100.15, netgen.udp(A.ip, 4000, B.ip, 5000, stun)),
             (100.16, netgen.udp(A.ip, 4001, B.ip, 5001, rtcp)),
             (100.17, netgen.udp(A.ip, 4000, B.ip, 5000, rtcp))]
    sa = [p for p in sa if p[1] != 1005] + [(100.1 + 5 * 0.02, 1005, netgen.udp(A.ip, 4000, B.ip, 5000, odd))]
    rc, m, out = run(tmp_path, frames_of(setup, sa, sb, extra, c.bye(101)))
    caller = leg(m["calls"][0], "caller")
    assert caller["stun"] == 1 and caller["rtcp"] == 2 and caller["unknown_pt"] == 1
    assert caller["lost"] == 0
    got = wav(out, caller)
    assert len(got) == 2 * 1600
    exp = expected_16k(pa)
    assert np.array_equal(got[:5 * 320 - 64], exp[:5 * 320 - 64])


def test_encrypted_leg_flagged_without_noise(tmp_path):
    c = Call("srtp@test", A, B)
    f = c.request(100, "INVITE", body=sdp(A.ip, 4000, proto="RTP/SAVP",
                                          extra="a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"),
                  to_tag=False)
    f += c.response(100.05, 200, "OK", "INVITE", body=sdp(B.ip, 5000, proto="RTP/SAVP"))
    rnd = np.random.default_rng(1)
    noise = [(100.1 + i * 0.02, i, netgen.udp(A.ip, 4000, B.ip, 5000, bytes([0x80, 8, 0, i, 0, 0, i, 0, 0, 0, 0, 9]) + rnd.bytes(170)))
             for i in range(20)]
    rc, m, out = run(tmp_path, frames_of(f, noise, c.bye(101)))
    caller = leg(m["calls"][0], "caller")
    assert caller["encrypted"] is True and caller["wav"] is None and caller["packets"] == 20


def test_zrtp_marks_leg_encrypted(tmp_path):
    import struct
    c, setup, sa, sb, pa, pb = basic_call(n=1600)
    zrtp = b"\x10\x00\x00\x01" + struct.pack("!I", 0x5A525450) + b"\x00" * 40
    # ZRTP hello before any RTP: everything after is SRTP
    rc, m, out = run(tmp_path, frames_of(setup, [(100.09, netgen.udp(A.ip, 4000, B.ip, 5000, zrtp))], sa, sb, c.bye(101)))
    caller = leg(m["calls"][0], "caller")
    assert caller["encrypted"] is True and caller["zrtp"] == 1 and caller["wav"] is None
    assert leg(m["calls"][0], "callee")["encrypted"] is False


def test_timeout_and_call_id_reuse_and_stereo(tmp_path):
    c, setup, sa, sb, pa, pb = basic_call(n=1600)
    c2 = Call("basic@test", A, B, from_tag="again", cseq=50)
    later = c2.setup(200)
    rc, m, out = run(tmp_path, frames_of(setup, sa, sb, later), "--rtp-timeout", "30", "--stereo")
    first, second = m["calls"]
    assert first["call_id"] == second["call_id"] == "basic@test"
    assert first["end_reason"] == "timeout" and first["end"].startswith("1970-01-01T00:01:40.283")
    assert second["end_reason"] == "capture_end"
    assert first["legs"][0]["wav"] != second["legs"][0]["wav"] or second["legs"][0]["wav"] is None
    data, rate, ch = read_wav(os.path.join(out, first["stereo_wav"]))
    assert ch == 2
    # callee started 3 ms after the caller: 48 samples later on the right channel
    assert np.array_equal(data[:3200, 0], expected_16k(pa))
    assert not data[:48, 1].any()
    assert np.array_equal(data[48:48 + 3200, 1], expected_16k(pb))


def test_truncated_capture_keeps_calls_and_fails_clearly(tmp_path):
    c, setup, sa, sb, pa, pb = basic_call()
    path = callgen.write(tmp_path / "t.pcap", frames_of(setup, sa, sb, c.bye(102)))
    data = open(path, "rb").read()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[: len(data) * 6 // 10])
    check_equivalent(str(cut))
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "rtp2ws.cli", "replay", str(cut), "--out-dir", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert "cut.pcap: packet " in r.stderr and "truncated" in r.stderr
    m = json.load(open(out / "calls.json"))
    (call,) = m["calls"]
    assert call["end_reason"] == "capture_end"
    got = wav(out, leg(call, "caller"))
    assert 0 < len(got) < 16000
    assert np.array_equal(got[:len(got) - 64], expected_16k(pa)[:len(got) - 64])
    assert "error" in m["summary"]


def test_malformed_packets_counted_not_fatal(tmp_path):
    c, setup, sa, sb, pa, pb = basic_call(n=1600)
    junk = [(100.2, b"\x45\x00\x00"), (100.21, netgen.udp(A.ip, 4000, B.ip, 5000, b"\x80\x08"))]
    bad_sip = [(100.22, netgen.udp(A.ip, 5060, B.ip, 5060, b"INVITE sip:x SIP/2.0\r\nno colon here\r\n\r\n"))]
    # raw junk goes in as link type RAW frames: build them through netgen with Ethernet framing
    rc, m, out = run(tmp_path, frames_of(setup, sa, sb, junk, bad_sip, c.bye(101)))
    assert rc == 0
    s = m["summary"]
    assert s["malformed"] >= 2 and s["malformed_sip"] == 1
    assert np.array_equal(wav(out, leg(m["calls"][0], "caller")), expected_16k(pa))


def test_unknown_link_type_and_missing_file(tmp_path, capsys):
    path = tmp_path / "x.pcap"
    netgen.write_pcap(str(path), [(1.0, b"\x00" * 40)], linktype=105)
    assert cli.main(["replay", str(path), "--out-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "x.pcap" in err and "unsupported link type 105" in err
    assert cli.main(["replay", str(tmp_path / "missing.pcap"), "--out-dir", str(tmp_path / "o")]) == 2
    assert "missing.pcap" in capsys.readouterr().err


def test_console_command_summary_line(tmp_path):
    c, setup, sa, sb, pa, pb = basic_call(n=1600)
    path = callgen.write(tmp_path / "c.pcap", frames_of(setup, sa, sb, c.bye(101)))
    r = subprocess.run(["rtp2ws", "replay", path, "--out-dir", str(tmp_path / "o")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1 and "1 calls" in lines[0] and "2 legs with audio" in lines[0]


def test_hold_and_resume_keep_matching_and_timeline(tmp_path):
    c = Call("hold@test", A, B)
    f = c.setup(100)
    pa, pb = tone(440, 4800), tone(1000, 4800)
    sa1 = rtp_packets(A, B, 100.1, pa[:1600], ssrc=1, seq0=1, ts0=0)
    sb1 = rtp_packets(B, A, 100.1, pb[:1600], ssrc=2, seq0=1, ts0=0)
    c.cseq = 2   # caller puts the call on hold with c=0.0.0.0 and a=inactive
    f += c.request(100.35, "INVITE", body=sdp("0.0.0.0", 4000, direction="inactive"))
    f += c.response(100.36, 200, "OK", "INVITE", body=sdp(B.ip, 5000, direction="inactive"))
    c.cseq = 3   # and back, two seconds later, same addresses
    f += c.request(102.35, "INVITE", body=sdp(A.ip, 4000))
    f += c.response(102.36, 200, "OK", "INVITE", body=sdp(B.ip, 5000))
    # after resume the caller's timestamps continue as if nothing happened (no time gap in RTP ts)
    sa2 = rtp_packets(A, B, 102.4, pa[1600:], ssrc=1, seq0=11, ts0=1600)
    sb2 = rtp_packets(B, A, 102.4, pb[1600:], ssrc=2, seq0=11, ts0=1600 + 16800)   # ... the callee's follow the clock
    rc, m, out = run(tmp_path, frames_of(f, sa1, sb1, sa2, sb2, c.bye(103)))
    call = m["calls"][0]
    assert [(h["by"], h["start"][-12:-6], h["end"][-12:-6]) for h in call["holds"]] == [("caller", "40.350", "42.360")]
    caller, callee = leg(call, "caller"), leg(call, "callee")
    assert caller["packets"] == callee["packets"] == 30
    # both legs: 0.2 s audio, 2.1 s without packets (silence), then 0.4 s audio;
    # the caller's gap comes from capture time, the callee's from its RTP timestamps
    for entry, p in ((caller, pa), (callee, pb)):
        got = wav(out, entry)
        assert len(got) == 2 * (1600 + 16800 + 3200)
        assert not got[3200 + 64:3200 + 2 * 16800 - 64].any()
        tail = expected_16k(p)[3200:]
        assert np.array_equal(got[-len(tail) + 64:], tail[64:])


def test_jitter_depth_is_configurable_and_wraparound(tmp_path):
    # sequence numbers and timestamps both wrap inside the call
    c, setup, sa, sb, pa, pb = basic_call(n=1600, seq0=65530, ts0=2**32 - 800)
    sa = callgen.reorder(sa, [(3, 5)])      # packet 5 overtakes 3 and 4 by 40 ms
    frames = frames_of(setup, sa, sb, c.bye(101))
    rc, m, out = run(tmp_path, frames)
    caller = leg(m["calls"][0], "caller")
    assert (caller["lost"], caller["late"]) == (0, 0)
    assert np.array_equal(wav(out, caller), expected_16k(pa))
    assert np.array_equal(wav(out, leg(m["calls"][0], "callee")), expected_16k(pb))
    # a 20 ms buffer cannot wait 40 ms: the two overtaken packets are concealed, then late
    rc, m, out = run(tmp_path, frames, "--jitter-ms", "20", name="again.pcap")
    caller = leg(m["calls"][0], "caller")
    assert (caller["lost"], caller["late"], caller["concealed_ms"]) == (2, 2, 40)
    assert len(wav(out, caller)) == 3200


def test_corrupt_record_length_is_a_clear_error(tmp_path):
    import struct
    c, setup, sa, sb, pa, pb = basic_call(n=1600)
    path = callgen.write(tmp_path / "t.pcap", frames_of(setup, sa, sb, c.bye(101)))
    data = bytearray(open(path, "rb").read())
    # find the 10th record header and give it an absurd captured length
    off = 24
    for _ in range(9):
        caplen = struct.unpack_from("<I", data, off + 8)[0]
        off += 16 + caplen
    struct.pack_into("<I", data, off + 8, 0x7FFFFFF0)
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(bytes(data))
    check_equivalent(str(bad))
    out = tmp_path / "o"
    r = subprocess.run([sys.executable, "-m", "rtp2ws.cli", "replay", str(bad), "--out-dir", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert "bad.pcap: packet 10:" in r.stderr
    m = json.load(open(out / "calls.json"))
    assert m["calls"][0]["end_reason"] == "capture_end"


def test_random_corruption_never_crashes(tmp_path):
    rnd = np.random.default_rng(5)
    c, setup, sa, sb, pa, pb = basic_call(n=1600)
    frames = frames_of(setup, sa, sb, c.bye(101))
    from rtp2ws.pipeline.pipeline import Pipeline
    from rtp2ws.pipeline.sink import Sink
    for trial in range(30):
        pipe = Pipeline(1, Sink())
        for t, ip in frames:
            f = bytearray(netgen.link(1, ip))
            k = int(rnd.integers(0, 4))
            for _ in range(k):
                f[int(rnd.integers(0, len(f)))] = int(rnd.integers(0, 256))
            if rnd.random() < 0.2:
                f = f[: int(rnd.integers(0, len(f)))]
            pipe.feed(t, bytes(f))
        pipe.finish()
        assert pipe.stats["frames"] == len(frames)


def test_progress_bar_on_a_terminal(tmp_path):
    import pty
    c, setup, sa, sb, pa, pb = basic_call(n=1600)
    path = callgen.write(tmp_path / "p.pcap", frames_of(setup, sa, sb, c.bye(101)))
    master, slave = pty.openpty()
    r = subprocess.run([sys.executable, "-m", "rtp2ws.cli", "replay", path, "--out-dir", str(tmp_path / "o")],
                       stdout=subprocess.PIPE, stderr=slave, text=True)
    os.close(slave)
    shown = os.read(master, 65536).decode()
    os.close(master)
    assert r.returncode == 0
    assert "100.0%" in shown and "[##############################]" in shown
    assert "1 calls" in r.stdout


def _replay_on_a_terminal(tmp_path, *args, stderr_tty=True, columns=0):
    """rtp2ws replay with stderr on a pseudo-terminal (``columns`` wide; 0: the width a new
    one says, unknown) or a pipe: (result, what stderr showed)."""
    import fcntl
    import pty
    import termios
    tmp_path.mkdir(exist_ok=True)
    c, setup, sa, sb, pa, pb = basic_call(n=1600)
    path = callgen.write(tmp_path / "p.pcap", frames_of(setup, sa, sb, c.bye(101)))
    cmd = [sys.executable, "-m", "rtp2ws.cli", "replay", path, "--out-dir", str(tmp_path / "o"), *args]
    if not stderr_tty:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        return r, r.stderr
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=slave, text=True, timeout=60)
    os.close(slave)
    shown = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:         # EIO: the terminal's other side is closed and read out
            break
        if not chunk:
            break
        shown += chunk
    os.close(master)
    return r, shown.decode()


@pytest.mark.parametrize("columns", [120, 0])
def test_progress_bar_shows_the_rate_and_the_time_left(tmp_path, columns):
    r, shown = _replay_on_a_terminal(tmp_path, columns=columns)
    assert r.returncode == 0
    draws = [d for d in shown.replace("\n", "\r").split("\r") if d]
    # the last draw: the whole file read, at some rate, nothing left; then the counts
    assert re.match(r"\[#{30}\] 100\.0%  [\d.]+[kMG]?B/s  00:00 left  \d+ packets", draws[-1]), draws
    # never wider than the terminal (a line that wraps breaks the redraw): of unknown width, 80
    assert all(len(d) <= (columns or 80) for d in draws), draws
    if columns == 120:
        assert re.fullmatch(r".* left  27 packets  1 calls *", draws[-1]), draws


def test_no_progress_bar_off_a_terminal_or_with_no_progress(tmp_path):
    r, shown = _replay_on_a_terminal(tmp_path, stderr_tty=False)
    assert r.returncode == 0 and shown == ""
    r, shown = _replay_on_a_terminal(tmp_path / "2", "--no-progress")
    assert r.returncode == 0 and shown == ""
    assert "1 calls" in r.stdout


def test_comfort_noise_becomes_silence_and_multipart_sdp(tmp_path):
    c = Call("cn@test", A, B)
    body = sdp(A.ip, 4000, pts=(8, 13, 101))
    multipart = ("--XyZ\r\nContent-Type: application/sdp\r\n\r\n" + body +
                 "--XyZ\r\nContent-Type: application/ISUP;version=itu-t92+\r\n\r\n\x01\x02\x03\r\n--XyZ--\r\n")
    from callgen import sip
    h = c._hdrs("INVITE", 1, True, False, "mp1")
    msg = sip(f"INVITE sip:2000@{B.ip}:5060 SIP/2.0", h, multipart, ctype='multipart/mixed;boundary="XyZ"')
    f = [(100.0, netgen.udp(A.ip, 5060, B.ip, 5060, msg))]
    f += c.response(100.05, 200, "OK", "INVITE", body=sdp(B.ip, 5000, pts=(8, 13, 101)))
    f += c.request(100.06, "ACK")
    pa = tone(440, 1600)
    s1 = rtp_packets(A, B, 100.1, pa[:800], ssrc=3, seq0=1, ts0=0)
    from rtp2ws.media.rtp import RtpPacket, serialize_rtp
    cn = [(100.1 + 0.1, 6, netgen.udp(A.ip, 4000, B.ip, 5000, serialize_rtp(RtpPacket(6, 800, 3, 13, False, b"\x40"))))]
    # 0.5 s of comfort noise / no packets, then speech resumes with the timestamp moved on
    s2 = rtp_packets(A, B, 100.1 + 0.6, pa[800:], ssrc=3, seq0=7, ts0=800 + 4000)
    rc, m, out = run(tmp_path, frames_of(f, s1, cn, s2, c.bye(101.5)))
    caller = leg(m["calls"][0], "caller")
    assert caller["cn"] == 1 and caller["lost"] == 0 and caller["concealed_ms"] == 0
    got = wav(out, caller)
    assert len(got) == 2 * (800 + 4000 + 800)
    assert not got[1600 + 64:1600 + 8000 - 64].any()


def test_call_in_progress_is_picked_up_from_rtp_then_reinvite(tmp_path):
    """Capture starts mid-call: RTP first (a media-only call, audio kept), then a
    re-INVITE identifies the call and the media continues in it."""
    c = Call("midcall@test", A, B, cseq=7)
    pa, pb = tone(440, 8000), tone(1000, 8000, amp=6000)
    sa1 = rtp_packets(A, B, 100.0, pa[:4000], ssrc=1, seq0=500, ts0=80000)
    sb1 = rtp_packets(B, A, 100.01, pb[:4000], ssrc=2, seq0=900, ts0=160000)
    # the in-dialog re-INVITE (both tags) half-way, same addresses
    f = c.request(100.5, "INVITE", body=sdp(A.ip, A.rtp_port))
    f += c.response(100.51, 200, "OK", "INVITE", body=sdp(B.ip, B.rtp_port))
    f += c.request(100.52, "ACK")
    sa2 = rtp_packets(A, B, 100.6, pa[4000:], ssrc=1, seq0=525, ts0=84000)
    sb2 = rtp_packets(B, A, 100.61, pb[4000:], ssrc=2, seq0=925, ts0=164000)
    rc, m, out = run(tmp_path, frames_of(sa1, sb1, f, sa2, sb2, c.bye(101.5)))
    assert rc == 0
    calls = {x["call_id"]: x for x in m["calls"]}
    orphan = calls["rtp:10.0.0.1:4000-10.0.0.2:5000"]
    real = calls["midcall@test"]
    assert orphan["media_only"] is True and orphan["end_reason"] == "identified"
    assert orphan["identified_as"] == "midcall@test"
    assert real["picked_up"] is True and real["end_reason"] == "bye"
    # nothing lost: the media-only call has the first half (from its first packet), the call the rest
    o_caller, r_caller = leg(orphan, "caller"), leg(real, "caller")
    assert o_caller["packets"] == 25 and r_caller["packets"] == 25
    first = wav(out, o_caller)
    assert np.array_equal(first[:len(first) - 64], expected_16k(pa[:4000])[:len(first) - 64])
    assert leg(orphan, "callee")["packets"] == 25 and leg(real, "callee")["packets"] == 25
    second = wav(out, r_caller)
    assert np.array_equal(second[64:], expected_16k(pa[4000:])[64:])


def test_rtp_after_bye_is_not_a_new_call(tmp_path):
    c, setup, sa, sb, pa, pb = basic_call(n=1600)
    late = rtp_packets(A, B, 101.02, tone(440, 800), ssrc=0xAAAA0001, seq0=1010, ts0=50000 + 1600)
    rc, m, out = run(tmp_path, frames_of(setup, sa, sb, c.bye(101), late))
    assert [x["call_id"] for x in m["calls"]] == ["basic@test"]
    assert m["summary"]["rtp_after_end"] == 5


def test_media_only_call_without_any_signalling(tmp_path):
    sa = rtp_packets(A, B, 100.0, tone(440, 1600), ssrc=9, pt=0, law="ulaw")
    rc, m, out = run(tmp_path, frames_of(sa), "--rtp-timeout", "5")
    (call,) = m["calls"]
    assert call["call_id"] == "rtp:10.0.0.1:4000-10.0.0.2:5000" and call["end_reason"] == "capture_end"
    caller = leg(call, "caller")
    assert caller["packets"] == 10 and caller["codecs"] == ["PCMU"]


def test_delivery_size_follows_the_use():
    """Files and full-speed streams get a leg's audio a second at a time (the fast path's
    batches), never more than half a stream's buffer; paced streams get it every tick."""
    p = cli.build_parser()
    assert cli.deliver_ms(p.parse_args(["replay", "c.pcap", "--out-dir", "o"])) == 1000
    assert cli.deliver_ms(p.parse_args(["replay", "c.pcap", "--ws-url", "ws://h/"])) == 1000
    assert cli.deliver_ms(p.parse_args(["replay", "c.pcap", "--ws-url", "ws://h/", "--max-buffer-ms", "400"])) == 200
    assert cli.deliver_ms(p.parse_args(["replay", "c.pcap", "--ws-url", "ws://h/", "--speed", "realtime"])) == 0


def test_flush_ms_paces_hand_outs_and_changes_no_sample(tmp_path):
    """``Config.flush_ms``: paced input hands each leg's audio out at most every
    flush_ms of capture time, with every tick still running the timers; the audio
    is the same, sample for sample, as handing it out at every tick."""
    from rtp2ws.capture.file import CaptureFile
    from rtp2ws.pipeline.pipeline import Config, Pipeline

    from fastcheck import Recorder

    c, setup, sa, sb, pa, pb = basic_call(n=4000)
    path = callgen.write(tmp_path / "c.pcap", frames_of(setup, sa, sb, c.bye(101)))
    runs = {}
    for flush in (0, 40, 100):
        rec = Recorder()
        times = []
        with CaptureFile(path, batch=1) as cap:      # one tick per packet, as live capture can
            pipe = Pipeline(cap.linktype, rec, Config(flush_ms=flush))
            for batch in cap.batches():
                before = len(rec.log)
                pipe.feed_frames(batch)
                if any(e[0] == "audio" for e in rec.log[before:]):
                    times.append(pipe.now)
            pipe.finish()
        audio = {tag: b"".join(e[3] for e in rec.log if e[0] == "audio" and e[2] == tag)
                 for tag in ("caller", "callee")}
        runs[flush] = (times, audio)
    assert runs[40][1] == runs[0][1] == runs[100][1]
    assert len(runs[0][1]["caller"]) == len(runs[0][1]["callee"]) == 2 * 2 * 4000   # 16 kHz, whole
    for flush in (40, 100):
        times = runs[flush][0][:-1]          # the last: the rest, at the BYE
        gaps = np.diff(times)
        assert gaps.min() >= flush / 1000 - 1e-9
        # ... and no longer than the gap between packets allows on top of it
        assert gaps.max() <= flush / 1000 + 0.021
    # packets come every 20 ms per leg, 3 ms apart between legs: a hand-out for nearly every packet
    assert len(runs[0][0]) > 2 * len(runs[40][0]) > 2 * len(runs[100][0])


def test_flush_ms_option_reaches_the_pipeline():
    p = cli.build_parser()
    paced = cli.pipeline_config(p.parse_args(["replay", "c.pcap", "--ws-url", "ws://h/", "--speed", "realtime"]))
    assert paced.flush_ms == 20 and paced.deliver_ms == 0
    assert cli.pipeline_config(p.parse_args(["replay", "c.pcap", "--ws-url", "ws://h/", "--speed", "2",
                                             "--flush-ms", "60"])).flush_ms == 60
    full = cli.pipeline_config(p.parse_args(["replay", "c.pcap", "--ws-url", "ws://h/"]))
    assert full.flush_ms == 0 and full.deliver_ms == 1000
    live = cli.pipeline_config(p.parse_args(["live", "-i", "lo", "--ws-url", "ws://h/", "--flush-ms", "0"]), live=True)
    assert live.flush_ms == 0 and live.deliver_ms == 0
    assert cli.pipeline_config(p.parse_args(["live", "-i", "lo", "--out-dir", "o"]), live=True).flush_ms == 20
    for bad in ("-1", "1001", "x"):
        with pytest.raises(SystemExit):
            p.parse_args(["replay", "c.pcap", "--flush-ms", bad])


def test_wav_file_writes_each_second_as_it_comes(tmp_path):
    """A leg's WAV holds at most a second of audio in memory: the pipeline hands files a
    second at a time, and each such hand-off goes straight to disk."""
    from rtp2ws.sinks.wav import WavFile
    path = str(tmp_path / "leg.wav")
    w = WavFile(path)
    w.write(np.arange(16000, dtype=np.int16))
    assert os.path.getsize(path) == 44 + 32000
    w.write(np.ones(8000, dtype=np.int16))
    assert os.path.getsize(path) == 44 + 32000          # half a second waits for the rest
    w.close()
    data, rate, ch = read_wav(path)
    assert (rate, ch, len(data)) == (16000, 1, 24000)
    assert np.array_equal(data[:16000], np.arange(16000)) and (data[16000:] == 1).all()


def test_replay_sets_the_collector_for_thousands_of_calls(tmp_path):
    """A full collection over a thousand calls' objects stops every thread for about
    100 ms: the command collects the youngest generation every gcpolicy.YOUNG objects
    instead of 700, and freezes what start-up made."""
    import gc

    from rtp2ws.run import gcpolicy
    c, setup, sa, sb, pa, pb = basic_call(n=1600)
    path = callgen.write(tmp_path / "c.pcap", frames_of(setup, sa, sb, c.bye(101)))
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)           # CPython's own (conftest restores what was there)
    assert cli.main(["replay", path, "--out-dir", str(tmp_path / "o"), "--no-progress"]) == 0
    assert gc.get_threshold() == (gcpolicy.YOUNG, 10, 10)
    assert gc.get_freeze_count() > 1000


# --------------------------------------------------------------------------- capture times out of range

def _pcapng_option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def write_pcapng_times(path, frames, *, tsoffset: int = 0, ticks=None) -> str:
    """A pcapng file (µs) whose interface block carries ``if_tsoffset`` (option 14: seconds
    added to every timestamp, signed 64-bit); ``ticks(i, ts)`` overrides packet i's raw
    64-bit timestamp."""
    shb = netgen._block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    options = b""
    if tsoffset:
        options = _pcapng_option(14, struct.pack("<q", tsoffset)) + struct.pack("<HH", 0, 0)
    idb = netgen._block(0x00000001, struct.pack("<HHI", 1, 0, 262144) + options)
    with open(path, "wb") as f:
        f.write(shb + idb)
        for i, (ts, ip) in enumerate(frames):
            frame = netgen.link(1, ip)
            t = round(ts * 1_000_000) if ticks is None else ticks(i, ts)
            f.write(netgen._block(6, struct.pack("<IIIII", 0, t >> 32, t & 0xFFFFFFFF, len(frame), len(frame))
                                  + frame))
    return str(path)


def replay_in_child(path, out, *args):
    """``rtp2ws replay`` in its own process, bounded in time (a broken clock could loop)."""
    return subprocess.run([sys.executable, "-m", "rtp2ws.cli", "replay", str(path), "--out-dir", str(out),
                           "--no-progress", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("tsoffset,start", [(2 ** 62, "9999-12-31T23:59:59.000+00:00"),
                                            (-2 ** 62, "1970-01-01T00:00:00.000+00:00")])
def test_pcapng_with_a_huge_if_tsoffset_keeps_the_call(tmp_path, tsoffset, start):
    """libpcap adds if_tsoffset to every time: 2**62 s is far past what a float can tell
    apart (and past year 9999).  Every packet takes the nearest end of 1970..9999 and then
    the previous packet's time: the call, its audio and the manifest are all there."""
    c, setup, sa, sb, pa, pb = basic_call()
    frames = frames_of(setup, sa, sb, c.bye(101.5))
    path = write_pcapng_times(tmp_path / "off.pcapng", frames, tsoffset=tsoffset)
    r = replay_in_child(path, tmp_path / "out")
    assert r.returncode == 0, r.stderr
    assert f"{len(frames)} packets had a time outside 1970..9999 (the first: packet 1)" in r.stdout
    m = json.load(open(tmp_path / "out" / "calls.json"))
    (call,) = m["calls"]
    assert call["call_id"] == "basic@test" and call["end_reason"] == "bye"
    assert call["start"] == call["end"] == start
    assert m["summary"]["bad_timestamps"] == len(frames) and m["summary"]["first_bad_timestamp"] == 1
    out = tmp_path / "out"
    assert np.array_equal(wav(out, leg(call, "caller")), expected_16k(pa))
    assert np.array_equal(wav(out, leg(call, "callee")), expected_16k(pb))
    check_equivalent(path)           # the C reader and its twin replace the same times


def test_a_packet_with_the_largest_timestamp_keeps_the_rest(tmp_path):
    """One packet at 2**64-1 µs (year 586,524) in the middle of a call: it takes the
    previous packet's time; the call does not time out and no packet is lost, also paced."""
    c, setup, sa, sb, pa, pb = basic_call()
    frames = frames_of(setup, sa, sb, c.bye(101.5))
    bad = 60
    assert frames[bad][0] > 100.1            # inside the media
    path = write_pcapng_times(tmp_path / "max.pcapng", frames,
                              ticks=lambda i, ts: 2 ** 64 - 1 if i == bad else round(ts * 1_000_000))
    for args in ((), ("--speed", "50")):
        out = tmp_path / f"out{len(args)}"
        r = replay_in_child(path, out, *args)
        assert r.returncode == 0, r.stderr
        assert f"1 packets had a time outside 1970..9999 (the first: packet {bad + 1})" in r.stdout
        m = json.load(open(out / "calls.json"))
        (call,) = m["calls"]
        assert call["end_reason"] == "bye" and call["end"].startswith("1970-01-01T00:01:41.500")
        assert m["summary"]["unmatched_udp"] == 0
        caller, callee = leg(call, "caller"), leg(call, "callee")
        assert caller["packets"] == callee["packets"] == 50 and caller["lost"] == callee["lost"] == 0
        assert np.array_equal(wav(out, caller), expected_16k(pa))
        assert np.array_equal(wav(out, callee), expected_16k(pb))
    check_equivalent(path)


def test_iso_is_total():
    from rtp2ws.sinks.wav import ISO_FIRST, ISO_LAST, iso
    assert iso(100.25) == "1970-01-01T00:01:40.250+00:00"
    assert iso(None) is None and iso(float("nan")) is None
    assert iso(253402300799.0) == "9999-12-31T23:59:59.000+00:00"
    for ts in (253402300800.0, 1.8e13, 4.6e18, float("inf")):
        assert iso(ts) == ISO_LAST == "9999-12-31T23:59:59.999+00:00"
    for ts in (-62135596801.0, -4.6e18, float("-inf")):
        assert iso(ts) == ISO_FIRST == "0001-01-01T00:00:00.000+00:00"


def test_paced_replay_wakes_once_per_hand_out_and_changes_no_sample(tmp_path):
    """Paced with ``Config.flush_ms``, a replay reads the packets due before the next
    hand-out when it comes, not each as it falls due: 8 legs whose packets fall due
    2.5 ms apart wake it about once per 20 ms hand-out (not 8 times), and every leg's
    audio is the one an unpaced replay gives."""
    from rtp2ws.pipeline.pipeline import Config
    from rtp2ws.run.replay import Pacer, replay

    from fastcheck import Recorder

    frames = []
    for i in range(4):
        a = Party(f"10.0.1.{i + 1}", 5060, 4000 + 2 * i, "1000")
        b = Party(f"10.0.2.{i + 1}", 5060, 6000 + 2 * i, "2000")
        c, setup, sa, sb, _, _ = basic_call(t0=100.0 + 0.005 * i, call_id=f"paced{i}@test", a=a, b=b, n=4000)
        sb = [(t + 0.0075, seq, pkt) for t, seq, pkt in sb]     # 2.5 ms steps over the 8 legs
        frames += frames_of(setup, sa, sb, c.bye(100.7 + 0.005 * i))
    frames.sort(key=lambda f: f[0])
    path = callgen.write(tmp_path / "c.pcap", frames)

    class Counting(Pacer):
        sleeps = 0

        def sleep(self, seconds):
            Counting.sleeps += 1
            return super().sleep(seconds)

    def audio(rec):
        out = {}
        for e in rec.log:
            if e[0] == "audio":
                out[e[1], e[2]] = out.get((e[1], e[2]), b"") + e[3]
        return out

    paced, plain = Recorder(), Recorder()
    config = Config(flush_ms=20)
    replay(path, paced, config, pacer=Counting(1.0))
    replay(path, plain, config)
    assert audio(paced) == audio(plain) and len(audio(paced)) == 8
    assert all(len(pcm) == 2 * 2 * 4000 for pcm in audio(paced).values())
    seconds = frames[-1][0] - frames[0][0]          # about 0.72 s: 36 hand-outs
    assert Counting.sleeps <= seconds / 0.020 + 6, Counting.sleeps


# --------------------------------------------------------------------------- tcpdump's -r and -c

DEMO = str(paths.DATA / "demo_speech.pcap")      # 1151 packets: 7 SIP, 1144 RTP, one call


def _first_packets(path: str, n: int, dest) -> str:
    """The first ``n`` packets of ``path`` as a capture of their own."""
    from rtp2ws.capture.file import CaptureFile

    frames = []
    with CaptureFile(path, native=False) as cap:
        for batch in cap.batches():
            frames.extend(batch)
        linktype = cap.linktype
    netgen.write_pcap(str(dest), frames[:n], linktype)
    return str(dest)


def _outputs(out) -> tuple[list, dict]:
    """calls.json's calls and every WAV's bytes, by path under out/."""
    doc = json.loads((out / "calls.json").read_text())
    wavs = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.wav"))}
    return doc["calls"], wavs


def test_replay_takes_the_capture_as_r_file_once(tmp_path, capsys):
    assert cli.main(["replay", "-r", DEMO, "--out-dir", str(tmp_path / "r"), "--no-progress"]) == 0
    by_r = capsys.readouterr().out
    assert cli.main(["replay", DEMO, "--out-dir", str(tmp_path / "p"), "--no-progress"]) == 0
    assert capsys.readouterr().out.replace(str(tmp_path / "p"), "") == by_r.replace(str(tmp_path / "r"), "")
    assert _outputs(tmp_path / "r") == _outputs(tmp_path / "p")
    for argv, said in ((["replay", DEMO, "-r", DEMO], "give the capture once: as -r"),
                       (["replay"], "the capture file is required (replay FILE, or -r FILE)")):
        with pytest.raises(SystemExit) as e:
            cli.main([*argv, "--out-dir", str(tmp_path / "x")])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("usage: rtp2ws replay") and f"rtp2ws replay: error: {said}" in err, err


@pytest.mark.parametrize("count", [1, 3, 4, 100, 577])
def test_replay_count_stops_after_exactly_count_packets(tmp_path, capsys, count):
    """``-c N`` decodes the first N packets and nothing after them: the same calls and
    audio as a capture cut after N packets (both end with capture_end)."""
    out = tmp_path / "c"
    assert cli.main(["replay", DEMO, "-c", str(count), "--out-dir", str(out), "--no-progress"]) == 0
    line = capsys.readouterr().out
    assert line.startswith(f"{DEMO}: {count} packets, "), line
    cut = _first_packets(DEMO, count, tmp_path / "cut.pcap")
    assert cli.main(["replay", cut, "--out-dir", str(tmp_path / "cut"), "--no-progress"]) == 0
    assert _outputs(out) == _outputs(tmp_path / "cut")
    doc = json.loads((out / "calls.json").read_text())
    assert doc["summary"]["packets"] == count
    assert doc["summary"].get("rtp", 0) + doc["summary"].get("sip", 0) == count
    if count >= 3:
        assert [c["end_reason"] for c in doc["calls"]] == ["capture_end"]


def test_replay_count_is_exact_paced_and_in_ticks():
    """The budget of every read: a paced replay (a packet held back before each hand-out,
    read again after it) and a full-speed one ticking every 7 packets both stop after
    exactly ``count`` packets, every one of them decoded, whichever packet the count
    ends on (a held one included: the pacer here lets time reach each packet it is
    asked about, so a hold comes every hand-out, on no clock)."""
    from rtp2ws.pipeline.pipeline import Config
    from rtp2ws.pipeline.sink import Sink
    from rtp2ws.run.replay import Pacer, replay

    class Stepping(Pacer):
        """Time is always just past the packet (or hand-out) last waited for."""
        asked = float("-inf")

        def delay(self, ts):
            self.asked = ts
            return 0.0

        def reached(self, early=0.0):
            return self.asked + 1e-6

    for count in [*range(1, 41), 300, 1151, 5000]:
        want = min(count, 1151)
        for kw in ({"pacer": Stepping(1.0)}, {"tick_every": 7}):
            r = replay(DEMO, Sink(), Config(flush_ms=20), count=count, **kw)
            assert r.packets == want, (count, kw)
            assert r.stats.get("rtp", 0) + r.stats.get("sip", 0) == want, (count, kw, r.stats)


def test_replay_count_with_workers_reads_the_same_packets_in_each(tmp_path, capsys):
    """``replay -c N --workers 2``: every worker reads the first N packets and decodes its
    share of their calls; together what one process makes of them."""
    one, two = tmp_path / "one", tmp_path / "two"
    assert cli.main(["replay", DEMO, "-c", "400", "--out-dir", str(one), "--no-progress"]) == 0
    assert cli.main(["replay", DEMO, "-c", "400", "--out-dir", str(two), "--no-progress", "--workers", "2"]) == 0
    assert "400 packets" in capsys.readouterr().out
    assert _outputs(one) == _outputs(two)
