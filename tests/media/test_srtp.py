"""rtp2ws.media.srtp: SRTP/SRTCP decryption with SDES keys, against libsrtp's own
protect (the sender side, through pylibsrtp)."""

from __future__ import annotations

import pytest

from rtp2ws.media import srtp
from rtp2ws.media.rtp import RtpPacket, parse_rtp, serialize_rtp
from rtp2ws.media.srtp import FAILED, REPLAYED, SrtpKey, SrtpStream, keys_for, leg_keys, sdes_declined
from rtp2ws.signalling.calls import MediaOffer
from rtp2ws.signalling.sdp import CryptoAttribute, InlineKey, parse_crypto

import srtpgen

S80 = "AES_CM_128_HMAC_SHA1_80"


def rtp(seq: int, ssrc: int = 0x1234, payload: bytes = b"\xd5" * 160) -> bytes:
    return serialize_rtp(RtpPacket(seq & 0xFFFF, seq * 160 & 0xFFFFFFFF, ssrc, 8, False, payload))


def stream_with(suite: str, key: bytes, now: float = 0.0) -> SrtpStream:
    s = SrtpStream()
    assert s.set_keys([SrtpKey(suite, key)], now)
    return s


@pytest.mark.parametrize("suite", srtpgen.SUITES)
def test_each_suite_round_trips_rtp_and_rtcp(suite):
    key = srtpgen.key_for(suite, "k")
    tx = srtpgen.session(suite, key)
    rx = stream_with(suite, key)
    for seq in range(5):
        clear = rtp(seq)
        sealed = tx.protect(clear)
        assert sealed != clear and rx.unprotect(sealed, 0.0) == clear
    report = srtpgen.rtcp_sr(0x1234, packets=5)
    assert rx.unprotect_rtcp(tx.protect_rtcp(report), 0.0) == report


def test_wrong_key_fails_duplicate_is_replayed_reordering_is_fine():
    key = srtpgen.key_for(S80, "k")
    tx = srtpgen.session(S80, key)
    sealed = [tx.protect(rtp(seq)) for seq in range(10)]
    rx = stream_with(S80, key)
    for i in (0, 2, 1, 4, 3):                      # reordered within the window
        assert rx.unprotect(sealed[i], 0.0) == rtp(i)
    assert rx.unprotect(sealed[2], 0.0) is None and rx.failure == REPLAYED
    wrong = stream_with(S80, srtpgen.key_for(S80, "other"))
    assert wrong.unprotect(sealed[5], 0.0) is None and wrong.failure == FAILED
    tampered = sealed[5][:20] + bytes([sealed[5][20] ^ 1]) + sealed[5][21:]
    assert rx.unprotect(tampered, 0.0) is None and rx.failure == FAILED
    assert rx.unprotect(sealed[5], 0.0) == rtp(5)     # the tampered copy left no trace


def test_rollover_counter_across_the_sequence_wrap():
    key = srtpgen.key_for(S80, "k")
    tx, rx = srtpgen.session(S80, key), stream_with(S80, key)
    for seq in range(65500, 65700):                  # the ROC goes to 1 at 65536
        assert rx.unprotect(tx.protect(rtp(seq)), 0.0) == rtp(seq)


def test_garbage_and_oversized_packets_are_failures_not_exceptions():
    rx = stream_with(S80, srtpgen.key_for(S80, "k"))
    for data in (b"", b"\x80" * 11, b"\x80\x08" + b"\x00" * 30, rtp(1, payload=b"\x00" * 2000)):
        assert rx.unprotect(data, 0.0) is None and rx.failure == FAILED
        assert rx.unprotect_rtcp(data[:7], 0.0) is None
    assert SrtpStream().unprotect(rtp(1), 0.0) is None        # no key yet


def test_new_keys_take_over_previous_kept_for_the_grace_then_dropped():
    old, new = srtpgen.key_for(S80, "old"), srtpgen.key_for(S80, "new")
    tx_old, tx_new = srtpgen.session(S80, old), srtpgen.session(S80, new)
    rx = stream_with(S80, old)
    assert rx.unprotect(tx_old.protect(rtp(1)), 1.0) == rtp(1)
    assert not rx.set_keys([SrtpKey(S80, old)], 2.0)           # the same key again (a hold re-INVITE)
    assert rx.set_keys([SrtpKey(S80, new)], 2.0)
    late = tx_old.protect(rtp(2))                              # in flight under the old key
    assert rx.unprotect(tx_new.protect(rtp(3)), 3.0) == rtp(3)     # the new key works: grace starts
    assert rx.unprotect(late, 3.5) == rtp(2)
    assert rx.unprotect(tx_old.protect(rtp(4)), 3.0 + srtp.PREVIOUS_GRACE - 0.01) == rtp(4)
    assert rx.unprotect(tx_old.protect(rtp(5)), 3.0 + srtp.PREVIOUS_GRACE) is None
    assert rx.unprotect(tx_new.protect(rtp(6)), 6.0) == rtp(6)


def test_previous_keys_stay_while_the_new_ones_never_worked():
    """A re-INVITE whose keys the sender never uses (its offer was refused): the old key
    goes on working, however long."""
    old = srtpgen.key_for(S80, "old")
    tx = srtpgen.session(S80, old)
    rx = stream_with(S80, old)
    rx.set_keys([SrtpKey(S80, srtpgen.key_for(S80, "refused"))], 1.0)
    assert rx.unprotect(tx.protect(rtp(1)), 1000.0) == rtp(1)


def test_a_flood_of_ssrcs_keeps_bounded_state():
    key = srtpgen.key_for(S80, "k")
    tx, rx = srtpgen.session(S80, key), stream_with(S80, key)
    for ssrc in range(1, 200):           # authentic packets of 199 SSRCs
        assert rx.unprotect(tx.protect(rtp(1, ssrc=ssrc)), 0.0) == rtp(1, ssrc=ssrc)
    ctx = rx._current[0]
    assert len(ctx.ssrcs) == srtp.MAX_SSRCS and len(rx._by_ssrc) == 2 * srtp.MAX_SSRCS
    assert rx.unprotect(tx.protect(rtp(2, ssrc=199)), 0.0) == rtp(2, ssrc=199)   # the newest still known
    for ssrc in range(1000, 1300):       # forged: no state added
        assert rx.unprotect(rtp(1, ssrc=ssrc) + b"\x00" * 10, 0.0) is None
    assert len(ctx.ssrcs) == srtp.MAX_SSRCS and 1000 not in rx._by_ssrc


@pytest.mark.parametrize("suite", srtpgen.SUITES)
def test_mki_picks_the_key(suite):
    k1, k2 = srtpgen.key_for(suite, "1"), srtpgen.key_for(suite, "2")
    rx = SrtpStream()
    rx.set_keys([SrtpKey(suite, k1, b"\x01"), SrtpKey(suite, k2, b"\x02")], 0.0)
    tx = srtpgen.session(suite, k2)
    assert rx.unprotect(srtpgen.with_mki(tx.protect(rtp(1)), suite, b"\x02"), 0.0) == rtp(1)
    assert rx.unprotect(srtpgen.with_mki(tx.protect(rtp(2)), suite, b"\x01"), 0.0) is None    # k1's MKI
    report = srtpgen.rtcp_sr(0x1234)
    assert rx.unprotect_rtcp(srtpgen.with_mki(tx.protect_rtcp(report), suite, b"\x02", rtcp=True), 0.0) == report


def crypto(text: str) -> CryptoAttribute:
    return parse_crypto(text.partition(":")[2])


def test_keys_for_orders_by_the_answer_and_skips_what_it_cannot_use():
    gcm = "AEAD_AES_128_GCM"
    a = crypto(srtpgen.crypto_line(1, gcm, srtpgen.key_for(gcm, "a")))
    b = crypto(srtpgen.crypto_line(2, S80, srtpgen.key_for(S80, "b")))
    f8 = crypto(srtpgen.crypto_line(3, "F8_128_HMAC_SHA1_80", srtpgen.key_for(S80, "c")))
    short = CryptoAttribute(4, S80, (InlineKey(b"\x01" * 10),))
    big_mki = CryptoAttribute(5, S80, (InlineKey(srtpgen.key_for(S80, "d"), mki=256, mki_length=1),))
    keys = keys_for([a, b, f8, short, big_mki], chosen=[b])
    assert [k.suite for k in keys] == [S80, gcm]
    assert keys_for([a, b]) == [SrtpKey(gcm, srtpgen.key_for(gcm, "a")), SrtpKey(S80, srtpgen.key_for(S80, "b"))]
    many = CryptoAttribute(1, S80, tuple(InlineKey(srtpgen.key_for(S80, str(i)), mki=i, mki_length=1)
                                         for i in range(12)))
    assert len(keys_for([many])) == srtp.MAX_KEYS
    assert keys_for([many])[3].mki == b"\x03"
    assert "inline" not in repr(keys[0]) and srtpgen.b64(keys[0].key_salt) not in repr(keys)


def offer(crypto_lines=(), proto="RTP/AVP", encrypted=None) -> MediaOffer:
    attrs = tuple(crypto(line) for line in crypto_lines)
    return MediaOffer("10.0.0.1", 4000, None, None, False, {}, "sendrecv",
                      bool(attrs) or "SAVP" in proto if encrypted is None else encrypted, None, attrs)


def test_leg_keys_follow_the_senders_sdp():
    ka, kb = srtpgen.key_for(S80, "a"), srtpgen.key_for(S80, "b")
    a, b = offer([srtpgen.crypto_line(1, S80, ka)]), offer([srtpgen.crypto_line(1, S80, kb)])
    assert leg_keys(a, b) == [SrtpKey(S80, ka)] and leg_keys(b, a) == [SrtpKey(S80, kb)]
    assert leg_keys(a, None) == [SrtpKey(S80, ka)]      # the answer not seen yet
    assert leg_keys(None, a) == []                       # SRTP offered, the sender's keys to come
    plain, dtls = offer(), offer(proto="UDP/TLS/RTP/SAVPF")
    assert leg_keys(a, plain) is None and leg_keys(plain, a) is None
    assert sdes_declined(a, plain) and sdes_declined(plain, a)
    assert not sdes_declined(a, dtls) and not sdes_declined(dtls, a) and not sdes_declined(a, b)
    assert leg_keys(None, None) is None and leg_keys(plain, plain) is None and leg_keys(dtls, dtls) is None
    unsupported = offer([srtpgen.crypto_line(1, "F8_128_HMAC_SHA1_80", ka)])
    assert leg_keys(unsupported, b) is None and not sdes_declined(unsupported, b)


def test_parsed_packet_after_decryption_is_the_clear_one():
    key = srtpgen.key_for(S80, "k")
    rx = stream_with(S80, key)
    clear = rx.unprotect(srtpgen.session(S80, key).protect(rtp(7)), 0.0)
    assert clear is not None and parse_rtp(clear).sequence == 7


def unencrypted_srtp(key: bytes, clear: bytes) -> bytes:
    """An UNENCRYPTED_SRTP packet (RFC 4568 section 6.3.1): the payload in clear, the tag
    over it, made with libsrtp: AES counter mode is a keystream XOR, so the keystream for
    the packet's index is what a fresh sender makes of zeros, and protecting the clear
    payload XOR that keystream gives the clear payload with its tag."""
    head, body = clear[:12], clear[12:]
    stream = srtpgen.session(S80, key).protect(head + bytes(len(body)))[12:12 + len(body)]
    return srtpgen.session(S80, key).protect(head + bytes(a ^ b for a, b in zip(body, stream)))


def test_session_parameters():
    key = srtpgen.key_for(S80, "k")
    line = srtpgen.crypto_line(1, S80, key)
    clear, = keys_for([crypto(line + " UNENCRYPTED_SRTP UNENCRYPTED_SRTCP KDR=0")])
    assert clear.clear_payload and not keys_for([crypto(line)])[0].clear_payload
    assert keys_for([crypto(line + " UNAUTHENTICATED_SRTP")]) == [] and keys_for([crypto(line + " KDR=24")]) == []
    packet = unencrypted_srtp(key, rtp(1))
    assert packet[:-10] == rtp(1)                     # as sent: the payload in clear
    rx = SrtpStream()
    rx.set_keys([clear], 0.0)
    assert rx.unprotect(packet, 0.0) == rtp(1)
    other = unencrypted_srtp(key, rtp(3))
    forged = other[:20] + bytes([other[20] ^ 1]) + other[21:]
    assert rx.unprotect(forged, 0.0) is None and rx.failure == FAILED
    plain = stream_with(S80, key)                     # without the parameter: libsrtp's output, not the audio
    assert plain.unprotect(unencrypted_srtp(key, rtp(2)), 0.0) != rtp(2)


def test_grace_starts_when_a_current_key_an_ssrc_already_used_authenticates():
    """fuzz/crashes/srtp/previous-keys-kept-past-the-grace: keys A, then B (A previous),
    A's packets go on, then A again (B previous).  A's next packet is authenticated by the
    key its SSRC last used, which is current again: the grace starts there, and B's
    packets stop decoding PREVIOUS_GRACE s later (they went on for ever: only a current
    key other than the SSRC's last one started the grace)."""
    a, b = srtpgen.key_for(S80, "a"), srtpgen.key_for(S80, "b")
    tx_a, tx_b = srtpgen.session(S80, a), srtpgen.session(S80, b)
    rx = stream_with(S80, a)
    assert rx.unprotect(tx_a.protect(rtp(1)), 0.0) == rtp(1)
    assert rx.set_keys([SrtpKey(S80, b)], 1.0)
    assert rx.unprotect(tx_a.protect(rtp(2)), 1.0) == rtp(2)          # A, previous now
    assert rx.set_keys([SrtpKey(S80, a)], 2.0)                         # A back: B previous
    assert rx.unprotect(tx_a.protect(rtp(3)), 2.0) == rtp(3)          # a current key: the grace starts
    assert rx.unprotect(tx_b.protect(rtp(1, ssrc=0x99)), 2.0 + srtp.PREVIOUS_GRACE - 0.01) == rtp(1, ssrc=0x99)
    assert rx.unprotect(tx_b.protect(rtp(2, ssrc=0x99)), 2.0 + srtp.PREVIOUS_GRACE) is None
    assert rx.failure == FAILED and rx.keys == [SrtpKey(S80, a)]
