"""SRTP with SDES keys end to end: calls whose SDP carries ``a=crypto`` (RFC 4568) and
whose media libsrtp itself protected (``srtpgen``), replayed by ``rtp2ws replay``, give
exactly the WAVs of the same call in clear; keys change by re-INVITE; SRTCP; wrong keys,
DTLS-SRTP and SAVP with no key give no audio, never noise; the WebSocket path gets the
same audio.  Each capture is also checked by ``fastcheck`` (the fast path never takes
an SRTP leg's packets as clear G.711)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from rtp2ws import cli
from rtp2ws.media.keylog import parse_keylog
from rtp2ws.sinks.wav import read_wav

import callgen
import netgen
import srtpgen
from callgen import Call, Party, expected_16k, frames_of, rtp_packets, sdp, tone
from fastcheck import check_equivalent

A = Party("10.0.0.1", 5060, 4000, "1000")
B = Party("10.0.0.2", 5060, 5000, "2000")
SSRC_A, SSRC_B = 0xAAAA0001, 0xBBBB0001


def replay(tmp_path, frames, *args, name="cap.pcap"):
    path = callgen.write(tmp_path / name, frames)
    opts = dict(zip(args[::2], args[1::2]))
    keylog = parse_keylog(open(opts["--srtp-keylog"]).read()) if "--srtp-keylog" in opts else None
    check_equivalent(path, srtp_keylog=keylog)
    out = tmp_path / ("out-" + name)
    rc = cli.main(["replay", path, "--out-dir", str(out), "--no-progress", *args])
    with open(out / "calls.json") as f:
        return rc, json.load(f), out


def leg(call, tag):
    return next(entry for entry in call["legs"] if entry["tag"] == tag)


def wav(out, entry):
    data, rate, channels = read_wav(os.path.join(out, entry["wav"]))
    assert rate == 16000 and channels == 1
    return data


def setup(c: Call, t0: float, offer: str, answer: str, *, proto="RTP/SAVP", answer_proto=None) -> list:
    """INVITE (offer) / 100 / 200 (answer) / ACK, with ``offer`` and ``answer`` as extra SDP lines."""
    f = c.request(t0, "INVITE", body=sdp(A.ip, A.rtp_port, pts=(8, 101), proto=proto, extra=offer), to_tag=False)
    f += c.response(t0 + 0.01, 100, "Trying", "INVITE", to_tag=False)
    f += c.response(t0 + 0.05, 200, "OK", "INVITE",
                    body=sdp(B.ip, B.rtp_port, pts=(8, 101), proto=answer_proto or proto, extra=answer))
    f += c.request(t0 + 0.06, "ACK")
    return f


def streams(n=8000, t0=100.1):
    pa, pb = tone(440, n), tone(1000, n, amp=6000)
    sa = rtp_packets(A, B, t0, pa, ssrc=SSRC_A)
    sb = rtp_packets(B, A, t0 + 0.003, pb, ssrc=SSRC_B)
    return sa, sb, pa, pb


@pytest.mark.parametrize("suite", srtpgen.SUITES)
def test_each_suite_decodes_to_the_clear_calls_wavs(tmp_path, suite):
    sa, sb, pa, pb = streams()
    clear = Call("clear@test", A, B)
    rc, m, out = replay(tmp_path, frames_of(setup(clear, 100.0, "", "", proto="RTP/AVP"), sa, sb, clear.bye(101.5)),
                        name="clear.pcap")
    ka, kb = srtpgen.key_for(suite, "caller"), srtpgen.key_for(suite, "callee")
    c = Call("srtp@test", A, B)
    f = setup(c, 100.0, srtpgen.crypto_line(1, suite, ka), srtpgen.crypto_line(1, suite, kb))
    ea = srtpgen.protect_stream(sa, srtpgen.session(suite, ka))
    eb = srtpgen.protect_stream(sb, srtpgen.session(suite, kb))
    rc2, m2, out2 = replay(tmp_path, frames_of(f, ea, eb, c.bye(101.5)), name="srtp.pcap")
    assert rc == rc2 == 0
    for tag, pcm in (("caller", pa), ("callee", pb)):
        plain, secret = leg(m["calls"][0], tag), leg(m2["calls"][0], tag)
        assert secret["encrypted"] is False and secret["srtp"] == suite and plain["srtp"] is None
        assert secret["packets"] == plain["packets"] == 50
        assert "srtp_failed" not in secret
        assert np.array_equal(wav(out2, secret), wav(out, plain))
        assert np.array_equal(wav(out2, secret), expected_16k(pcm))
    assert m2["summary"]["srtp"] == 100


def srtp_call(suite="AES_CM_128_HMAC_SHA1_80", n=8000, call_id="srtp@test", offer_extra="", answer_extra="",
              proto="RTP/SAVP"):
    sa, sb, pa, pb = streams(n)
    ka, kb = srtpgen.key_for(suite, "caller"), srtpgen.key_for(suite, "callee")
    c = Call(call_id, A, B)
    f = setup(c, 100.0, srtpgen.crypto_line(1, suite, ka) + offer_extra,
              srtpgen.crypto_line(1, suite, kb) + answer_extra, proto=proto)
    return c, f, sa, sb, pa, pb, ka, kb


def test_key_change_by_reinvite_mid_call(tmp_path):
    """The caller re-INVITEs with new keys half-way; the callee answers with new keys too.
    Three caller packets under the old key arrive after the re-INVITE (in flight), and
    two callee packets under the old key arrive after the 200: all decode."""
    suite = "AES_CM_128_HMAC_SHA1_80"
    c, f, sa, sb, pa, pb, ka, kb = srtp_call(suite)
    ka2, kb2 = srtpgen.key_for(suite, "caller2"), srtpgen.key_for(suite, "callee2")
    sess_a, sess_a2 = srtpgen.session(suite, ka), srtpgen.session(suite, ka2)
    sess_b, sess_b2 = srtpgen.session(suite, kb), srtpgen.session(suite, kb2)
    half = 25
    ea = srtpgen.protect_stream(sa[:half + 3], sess_a) + srtpgen.protect_stream(sa[half + 3:], sess_a2)
    eb = srtpgen.protect_stream(sb[:half + 2], sess_b) + srtpgen.protect_stream(sb[half + 2:], sess_b2)
    t = sa[half][0] - 0.001          # the re-INVITE just before the caller's packet 25
    c.cseq += 1
    reinvite = c.request(t, "INVITE", body=sdp(A.ip, A.rtp_port, pts=(8, 101), proto="RTP/SAVP",
                                               extra=srtpgen.crypto_line(1, suite, ka2), origin="- 1234 2"))
    reinvite += c.response(t + 0.0005, 200, "OK", "INVITE", body=sdp(B.ip, B.rtp_port, pts=(8, 101), proto="RTP/SAVP",
                                                                     extra=srtpgen.crypto_line(1, suite, kb2),
                                                                     origin="- 1234 2"))
    reinvite += c.request(t + 0.0007, "ACK")
    rc, m, out = replay(tmp_path, frames_of(f, ea, eb, reinvite, c.bye(101.5)))
    caller, callee = leg(m["calls"][0], "caller"), leg(m["calls"][0], "callee")
    for entry, pcm in ((caller, pa), (callee, pb)):
        assert entry["packets"] == 50 and entry["lost"] == 0 and "srtp_failed" not in entry
        assert np.array_equal(wav(out, entry), expected_16k(pcm))


def test_new_keys_take_over_and_old_ones_go(tmp_path):
    """After a re-INVITE with new keys, packets under the old key still decode for a
    moment (PREVIOUS_GRACE after the new key first worked), not for ever: a sender that
    goes back to the old key 3 s after the switch has its packets refused."""
    suite = "AES_CM_128_HMAC_SHA1_32"
    n = 8000 * 5
    c, f, sa, sb, pa, pb, ka, kb = srtp_call(suite, n=n)
    ka2 = srtpgen.key_for(suite, "caller2")
    sess_a, sess_a2 = srtpgen.session(suite, ka), srtpgen.session(suite, ka2)
    # 0-49 old key, 50-199 new key, 200-249 the old key again (its libsrtp state goes on)
    ea = (srtpgen.protect_stream(sa[:50], sess_a) + srtpgen.protect_stream(sa[50:200], sess_a2)
          + srtpgen.protect_stream(sa[200:], sess_a))
    t = sa[50][0] - 0.01
    c.cseq += 1
    reinvite = c.request(t, "INVITE", body=sdp(A.ip, A.rtp_port, pts=(8, 101), proto="RTP/SAVP",
                                               extra=srtpgen.crypto_line(1, suite, ka2)))
    rc, m, out = replay(tmp_path, frames_of(f, ea, reinvite, c.bye(106)))
    caller = leg(m["calls"][0], "caller")
    assert caller["packets"] == 200 and caller["srtp_failed"] == 50
    got = wav(out, caller)
    assert np.array_equal(got[:200 * 320 - 64], expected_16k(pa)[:200 * 320 - 64])   # the filter tail aside
    assert not got[200 * 320:].any()          # silence after, never noise


def test_srtcp_decrypted_and_counted(tmp_path):
    """SRTCP on the RTCP port (no rtcp-mux) and multiplexed on the RTP port are
    decrypted and counted as the leg's RTCP; one with a broken tag is counted as failed."""
    suite = "AES_CM_128_HMAC_SHA1_80"
    c, f, sa, sb, pa, pb, ka, kb = srtp_call(suite)
    sess_a, sess_b = srtpgen.session(suite, ka), srtpgen.session(suite, kb)
    ea, eb = srtpgen.protect_stream(sa, sess_a), srtpgen.protect_stream(sb, sess_b)
    sr_a = sess_a.protect_rtcp(srtpgen.rtcp_sr(SSRC_A, packets=10))
    sr_b = sess_b.protect_rtcp(srtpgen.rtcp_sr(SSRC_B, packets=10))
    sr_b2 = sess_b.protect_rtcp(srtpgen.rtcp_sr(SSRC_B, packets=20))
    bad = sr_b2[:-1] + bytes([sr_b2[-1] ^ 1])
    rtcp = [(100.5, netgen.udp(A.ip, A.rtp_port + 1, B.ip, B.rtp_port + 1, sr_a)),
            (100.6, netgen.udp(B.ip, B.rtp_port, A.ip, A.rtp_port, sr_b)),      # multiplexed
            (100.7, netgen.udp(B.ip, B.rtp_port + 1, A.ip, A.rtp_port + 1, bad))]
    rc, m, out = replay(tmp_path, frames_of(f, ea, eb, rtcp, c.bye(101.5)))
    caller, callee = leg(m["calls"][0], "caller"), leg(m["calls"][0], "callee")
    assert caller["rtcp"] == 1 and callee["rtcp"] == 1 and callee["srtcp_failed"] == 1
    assert "srtp_replayed" not in callee
    assert m["summary"]["srtp"] == 102
    assert np.array_equal(wav(out, callee), expected_16k(pb))


def test_wrong_key_counted_never_noise(tmp_path):
    suite = "AES_CM_128_HMAC_SHA1_80"
    c, f, sa, sb, pa, pb, ka, kb = srtp_call(suite)
    ea = srtpgen.protect_stream(sa, srtpgen.session(suite, srtpgen.key_for(suite, "not the caller's")))
    eb = srtpgen.protect_stream(sb, srtpgen.session(suite, kb))
    rc, m, out = replay(tmp_path, frames_of(f, ea, eb, c.bye(101.5)))
    caller, callee = leg(m["calls"][0], "caller"), leg(m["calls"][0], "callee")
    assert caller["srtp_failed"] == 50 and caller["packets"] == 0 and caller["wav"] is None
    assert caller["srtp"] == suite and caller["encrypted"] is False
    assert np.array_equal(wav(out, callee), expected_16k(pb))
    assert m["summary"]["srtp_failed"] == 50


def test_offer_with_several_keys_answer_picks_one(tmp_path):
    """The offer lists a GCM line (tag 1) and an 80-bit line (tag 2, two keys with MKIs);
    the answer takes tag 2; the caller sends with its second key (MKI 2)."""
    s80 = "AES_CM_128_HMAC_SHA1_80"
    gcm = "AEAD_AES_128_GCM"
    sa, sb, pa, pb = streams()
    k1, k2 = srtpgen.key_for(s80, "key1"), srtpgen.key_for(s80, "key2")
    kb = srtpgen.key_for(s80, "callee")
    offer = "\n".join([srtpgen.crypto_line(1, gcm, srtpgen.key_for(gcm, "gcm")),
                       f"a=crypto:2 {s80} inline:{srtpgen.b64(k1)}|2^31|1:2;inline:{srtpgen.b64(k2)}|2^31|2:2 KDR=0"])
    c = Call("multi@test", A, B)
    f = setup(c, 100.0, offer, srtpgen.crypto_line(2, s80, kb), proto="RTP/SAVP")
    ea = srtpgen.protect_stream(sa, srtpgen.session(s80, k2), mki=b"\x00\x02", suite=s80)
    eb = srtpgen.protect_stream(sb, srtpgen.session(s80, kb))
    rc, m, out = replay(tmp_path, frames_of(f, ea, eb, c.bye(101.5)))
    caller = leg(m["calls"][0], "caller")
    assert caller["packets"] == 50 and "srtp_failed" not in caller
    assert np.array_equal(wav(out, caller), expected_16k(pa))


def test_avp_profile_with_crypto_is_decrypted(tmp_path):
    """Key material decides, not the m= line's profile: RTP/AVP with a=crypto (best-effort SRTP)."""
    suite = "AEAD_AES_256_GCM"
    c, f, sa, sb, pa, pb, ka, kb = srtp_call(suite, proto="RTP/AVP")
    ea = srtpgen.protect_stream(sa, srtpgen.session(suite, ka))
    eb = srtpgen.protect_stream(sb, srtpgen.session(suite, kb))
    rc, m, out = replay(tmp_path, frames_of(f, ea, eb, c.bye(101.5)))
    for tag, pcm in (("caller", pa), ("callee", pb)):
        assert np.array_equal(wav(out, leg(m["calls"][0], tag)), expected_16k(pcm))


def test_sdes_declined_by_a_plain_answer_is_clear_rtp(tmp_path):
    """An RTP/AVP offer with a=crypto answered RTP/AVP with none: both send plain RTP."""
    sa, sb, pa, pb = streams()
    c = Call("declined@test", A, B)
    suite = "AES_CM_128_HMAC_SHA1_80"
    f = setup(c, 100.0, srtpgen.crypto_line(1, suite, srtpgen.key_for(suite, "x")), "", proto="RTP/AVP")
    rc, m, out = replay(tmp_path, frames_of(f, sa, sb, c.bye(101.5)))
    for tag, pcm in (("caller", pa), ("callee", pb)):
        entry = leg(m["calls"][0], tag)
        assert entry["encrypted"] is False and entry["srtp"] is None
        assert np.array_equal(wav(out, entry), expected_16k(pcm))


@pytest.mark.parametrize("kind", ["savp-no-key", "dtls", "dtls-chosen-over-sdes"])
def test_encrypted_without_sdes_keys_stays_flagged_no_wav(tmp_path, kind):
    """RTP/SAVP with no a=crypto, DTLS-SRTP (a=fingerprint, UDP/TLS/RTP/SAVPF), and an
    offer of both SDES and DTLS answered with DTLS: flagged, nothing written."""
    suite = "AES_CM_128_HMAC_SHA1_80"
    fp = "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\na=setup:actpass"
    offer, answer, proto = {
        "savp-no-key": ("", "", "RTP/SAVP"),
        "dtls": (fp, fp.replace("actpass", "active"), "UDP/TLS/RTP/SAVPF"),
        "dtls-chosen-over-sdes": (srtpgen.crypto_line(1, suite, srtpgen.key_for(suite, "a")) + "\n" + fp,
                                  fp.replace("actpass", "active"), "UDP/TLS/RTP/SAVPF"),
    }[kind]
    sa, sb, pa, pb = streams()
    ea = srtpgen.protect_stream(sa, srtpgen.session(suite, srtpgen.key_for(suite, "dtls-a")))
    eb = srtpgen.protect_stream(sb, srtpgen.session(suite, srtpgen.key_for(suite, "dtls-b")))
    c = Call("dtls@test", A, B)
    rc, m, out = replay(tmp_path, frames_of(setup(c, 100.0, offer, answer, proto=proto), ea, eb, c.bye(101.5)))
    for tag in ("caller", "callee"):
        entry = leg(m["calls"][0], tag)
        assert entry["encrypted"] is True and entry["wav"] is None and entry["srtp"] is None
        assert entry["packets"] == 50
    assert not list((out / "calls").glob("*/*.wav")) if (out / "calls").exists() else True


def test_malformed_crypto_lines_counted_never_a_crash(tmp_path):
    suite = "AES_CM_128_HMAC_SHA1_80"
    bad = "\n".join(["a=crypto:1 AES_CM_128_HMAC_SHA1_80",                     # no key
                     "a=crypto:x AES_CM_128_HMAC_SHA1_80 inline:AAAA",         # tag not a number
                     "a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:!!notbase64",  # not base64
                     "a=crypto:4 AES_CM_128_HMAC_SHA1_80 inline:" + "A" * 40 + "|2^20|1:999",   # MKI length
                     "a=crypto:5 AES_CM_128_HMAC_SHA1_80 inline:QUJD",         # 3 bytes: wrong length, parsed
                     "a=crypto:6 NO_SUCH_SUITE inline:" + "A" * 40,            # unknown suite, parsed
                     "a=crypto:"])
    c, f, sa, sb, pa, pb, ka, kb = srtp_call(suite, offer_extra="\n" + bad)
    ea = srtpgen.protect_stream(sa, srtpgen.session(suite, ka))
    eb = srtpgen.protect_stream(sb, srtpgen.session(suite, kb))
    rc, m, out = replay(tmp_path, frames_of(f, ea, eb, c.bye(101.5)))
    assert rc == 0 and m["summary"]["sdp_crypto_errors"] == 5 and m["summary"]["malformed"] == 0
    assert np.array_equal(wav(out, leg(m["calls"][0], "caller")), expected_16k(pa))


def test_websocket_streams_carry_the_decrypted_audio(tmp_path):
    """``rtp2ws replay --ws-url`` to a real ``rtp2ws sink``: each leg's stream is the
    clear audio, byte for byte what replay writes to files, and its end says the suite."""
    import subprocess
    import sys

    from sinkclient import SinkProcess

    suite = "AEAD_AES_128_GCM"
    c, f, sa, sb, pa, pb, ka, kb = srtp_call(suite)
    ea = srtpgen.protect_stream(sa, srtpgen.session(suite, ka))
    eb = srtpgen.protect_stream(sb, srtpgen.session(suite, kb))
    cap = callgen.write(tmp_path / "srtp.pcap", frames_of(f, ea, eb, c.bye(101.5)))
    s = SinkProcess(tmp_path / "recv")
    try:
        r = subprocess.run([sys.executable, "-m", "rtp2ws.cli", "replay", cap, "--ws-url", s.url_base + "/audio"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
    finally:
        s.stop()
    ref = tmp_path / "ref"
    assert cli.main(["replay", cap, "--out-dir", str(ref), "--no-progress"]) == 0
    got = {p.relative_to(s.out_dir): p.read_bytes() for p in sorted(s.out_dir.rglob("*.wav"))}
    want = {p.relative_to(ref / "calls"): p.read_bytes() for p in sorted((ref / "calls").rglob("*.wav"))}
    assert got == want and len(got) == 2
    with open(ref / "calls.json") as fh:
        m = json.load(fh)
    for tag, pcm in (("caller", pa), ("callee", pb)):
        assert np.array_equal(wav(ref, leg(m["calls"][0], tag)), expected_16k(pcm))
    ends = [msg for msg in s.messages() if msg["type"] == "end"]
    assert len(ends) == 2 and all(e["srtp"] == suite and e["encrypted"] is False and e["packets"] == 50
                                  for e in ends)


def test_baresip_srtp_call_recorded_with_real_agents(tmp_path):
    """tests/data/baresip_srtp.pcap: two baresip agents (libre's SRTP, not libsrtp),
    SDES AES_CM_128_HMAC_SHA1_80, PCMU (tests/tools/baresip_srtp_call.sh).  Both legs
    decrypt whole, and what they decode to is what each agent played: its sources'
    µ-law, sample for sample at 8 kHz (the 2x filter passes its inputs through on even
    samples) save baresip's own rounding of a few percent of them by one µ-law step."""
    from rtp2ws.codec import g711

    from paths import DATA

    out = tmp_path / "out"
    assert cli.main(["replay", str(DATA / "baresip_srtp.pcap"), "--out-dir", str(out), "--no-progress"]) == 0
    check_equivalent(str(DATA / "baresip_srtp.pcap"))
    with open(out / "calls.json") as f:
        m = json.load(f)
    (call,) = m["calls"]
    for tag in ("caller", "callee"):
        entry = leg(call, tag)
        assert entry["srtp"] == "AES_CM_128_HMAC_SHA1_80" and entry["encrypted"] is False
        assert entry["codecs"] == ["PCMU"] and entry["packets"] >= 190 and entry["lost"] == 0
        assert "srtp_failed" not in entry
        got = wav(out, entry)[::2].astype(np.int32)
        src, rate, _ = read_wav(str(DATA / f"baresip_srtp_{tag}_8k.wav"))
        want = g711.decode_ulaw(g711.encode_ulaw(src)).astype(np.int32)
        best = 0.0
        for off in range(0, 400):
            n = min(len(got), len(want) - off) - 50        # the last packet's filter tail aside
            best = max(best, float(np.mean(got[:n] == want[off:off + n])))
        assert best > 0.95, (tag, best)
    assert m["summary"]["srtp"] >= 380 and m["summary"]["srtp_failed"] == 0


def test_keylog_decrypts_a_call_whose_signalling_is_not_seen(tmp_path):
    """SIP over TLS: only the SRTP is in the capture.  A key log with the senders'
    addresses decrypts the media-only call rtp2ws makes of it, from its first packet
    (the one probation held) on; without the key log it would be G.711 of ciphertext."""
    suite = "AES_CM_128_HMAC_SHA1_32"
    sa, sb, pa, pb = streams()
    ka, kb = srtpgen.key_for(suite, "tls-a"), srtpgen.key_for(suite, "tls-b")
    ea = srtpgen.protect_stream(sa, srtpgen.session(suite, ka))
    eb = srtpgen.protect_stream(sb, srtpgen.session(suite, kb))
    keylog = tmp_path / "keys.log"
    keylog.write_text("# from the SBC\n"
                      f"src {A.ip}:{A.rtp_port} {suite} inline:{srtpgen.b64(ka)}\n"
                      f"src {B.ip}:{B.rtp_port} {suite} inline:{srtpgen.b64(kb)}\n")
    rc, m, out = replay(tmp_path, frames_of(ea, eb), "--srtp-keylog", str(keylog))
    (call,) = m["calls"]
    assert call["call_id"].startswith("rtp:")
    for tag, pcm in (("caller", pa), ("callee", pb)):
        entry = leg(call, tag)
        assert entry["srtp"] == suite and entry["packets"] == 50 and "srtp_failed" not in entry
        assert np.array_equal(wav(out, entry), expected_16k(pcm))
    assert m["summary"]["srtp"] == 100
    rc, m, out = replay(tmp_path, frames_of(ea, eb), name="nokeys.pcap")
    assert leg(m["calls"][0], "caller")["srtp"] is None      # (decoded as noise: nothing says it is SRTP)


def test_keylog_by_call_for_sdp_without_keys(tmp_path):
    """The SIP is seen but its SDP carries no a=crypto (RTP/SAVP, keys exchanged otherwise):
    ``call`` lines give each side's key, and the legs decode instead of being flagged."""
    suite = "AEAD_AES_256_GCM"
    sa, sb, pa, pb = streams()
    ka, kb = srtpgen.key_for(suite, "log-a"), srtpgen.key_for(suite, "log-b")
    c = Call("keylog@test", A, B)
    f = setup(c, 100.0, "", "", proto="RTP/SAVP")
    ea = srtpgen.protect_stream(sa, srtpgen.session(suite, ka))
    eb = srtpgen.protect_stream(sb, srtpgen.session(suite, kb))
    keylog = tmp_path / "keys.log"
    keylog.write_text(f"call keylog@test caller {suite} inline:{srtpgen.b64(ka)}\n"
                      f"call keylog@test callee {suite} inline:{srtpgen.b64(kb)}\n")
    rc, m, out = replay(tmp_path, frames_of(f, ea, eb, c.bye(101.5)), "--srtp-keylog", str(keylog))
    for tag, pcm in (("caller", pa), ("callee", pb)):
        entry = leg(m["calls"][0], tag)
        assert entry["encrypted"] is False and entry["srtp"] == suite
        assert np.array_equal(wav(out, entry), expected_16k(pcm))


def test_keylog_errors_are_named_at_start(tmp_path, capsys):
    cap = callgen.write(tmp_path / "c.pcap", frames_of(streams()[0]))
    bad = tmp_path / "bad.log"
    bad.write_text("src 10.0.0.1:4000 AES_CM_128_HMAC_SHA1_80 inline:QUJD\n")
    for path, says in ((bad, "line 1: the inline key is not"), (tmp_path / "missing.log", "No such file")):
        with pytest.raises(SystemExit) as exc:
            cli.main(["replay", cap, "--srtp-keylog", str(path), "--no-progress"])
        assert exc.value.code == 2 and says in capsys.readouterr().err
