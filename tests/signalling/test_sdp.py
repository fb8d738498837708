import random

import pytest

from rtp2ws.signalling.sdp import (
    STATIC_PAYLOAD_TYPES,
    CryptoAttribute,
    InlineKey,
    MediaDescription,
    SdpParseError,
    SessionDescription,
    parse_crypto,
    parse_sdp,
)


def sdp(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


FREESWITCH_OFFER = sdp(
    """v=0
o=FreeSWITCH 1700000000 1700000001 IN IP4 10.0.0.5
s=FreeSWITCH
c=IN IP4 10.0.0.5
t=0 0
m=audio 16384 RTP/AVP 96 0 8 101 13
a=rtpmap:96 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=maxptime:40
a=sendrecv
a=rtcp:16385 IN IP4 10.0.0.5
"""
)


def test_freeswitch_offer():
    desc = parse_sdp(FREESWITCH_OFFER)
    assert isinstance(desc, SessionDescription)
    assert desc.origin == ("FreeSWITCH", "1700000000", "1700000001", "IN", "IP4", "10.0.0.5")
    assert desc.address == "10.0.0.5"
    assert desc.direction == "sendrecv"
    assert len(desc.media) == 1
    audio = desc.audio()
    assert audio is desc.media[0]
    assert audio.kind == "audio"
    assert audio.port == 16384
    assert audio.proto == "RTP/AVP"
    assert audio.formats == [96, 0, 8, 101, 13]
    assert audio.address == "10.0.0.5"  # from session level
    assert audio.rtpmap == {
        96: ("PCMA", 8000, 1),
        101: ("TELEPHONE-EVENT", 8000, 1),
        0: ("PCMU", 8000, 1),
        8: ("PCMA", 8000, 1),
        13: ("CN", 8000, 1),
    }
    assert audio.fmtp == {101: "0-16"}
    assert audio.ptime == 20
    assert audio.maxptime == 40
    assert audio.rtcp_port == 16385
    assert audio.rtcp_address == "10.0.0.5"
    assert audio.rtcp_mux is False
    assert audio.direction == "sendrecv"
    assert audio.encrypted is False
    assert audio.on_hold is False
    assert audio.attributes[0] == ("rtpmap", "96 PCMA/8000")
    assert ("sendrecv", None) in audio.attributes
    assert repr(audio) == (
        "MediaDescription(audio 10.0.0.5:16384 RTP/AVP "
        "[96:PCMA,0:PCMU,8:PCMA,101:TELEPHONE-EVENT,13:CN] sendrecv)"
    )


def test_str_input_lf_and_trailing_whitespace():
    text = "v=0  \no=- 1 1 IN IP4 1.2.3.4\t\ns=-\nc=IN IP4 1.2.3.4 \nt=0 0\nm=audio 4000 RTP/AVP 0   \n\n\n"
    audio = parse_sdp(text).audio()
    assert audio.port == 4000 and audio.formats == [0] and audio.address == "1.2.3.4"
    assert parse_sdp(text.encode()) == parse_sdp(text)
    assert parse_sdp(text.replace("\n", "\r")).audio().port == 4000  # bare CR too


def test_media_level_connection_overrides_session():
    desc = parse_sdp(sdp(
        """v=0
o=- 1 1 IN IP4 192.0.2.1
s=-
c=IN IP4 192.0.2.1
t=0 0
m=audio 5004 RTP/AVP 0
c=IN IP4 198.51.100.7
m=audio 5006 RTP/AVP 8
"""
    ))
    assert desc.address == "192.0.2.1"
    assert [m.address for m in desc.media] == ["198.51.100.7", "192.0.2.1"]


def test_no_connection_line():
    desc = parse_sdp(b"v=0\r\nm=audio 5004 RTP/AVP 0\r\n")
    assert desc.address is None and desc.audio().address is None
    assert desc.origin is None


def test_ipv6_and_ttl():
    desc = parse_sdp(sdp(
        """v=0
o=- 1 1 IN IP6 2001:db8::1
s=-
c=IN IP6 2001:db8::1
t=0 0
m=audio 5004 RTP/AVP 0
m=audio 5006 RTP/AVP 0
c=IN IP4 224.2.1.1/127/3
m=audio 5008 RTP/AVP 0
c=IN IP6 FF15::101/3
"""
    ))
    assert desc.origin[4:] == ("IP6", "2001:db8::1")
    assert [m.address for m in desc.media] == ["2001:db8::1", "224.2.1.1", "FF15::101"]


def test_dynamic_payload_types():
    desc = parse_sdp(sdp(
        """v=0
c=IN IP4 10.0.0.1
m=audio 7078 RTP/AVP 96 97 98 101 18 9
a=rtpmap:96 opus/48000/2
a=fmtp:96 useinbandfec=1; minptime=10
a=rtpmap:97 speex/16000
a=rtpmap:98 AMR-WB/16000/1
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=rtpmap:18 G729/8000
a=fmtp:18 annexb=no
a=rtpmap:bogus
a=rtpmap:99 nonsense
a=ptime:30.0
"""
    ))
    audio = desc.audio()
    assert audio.rtpmap == {
        96: ("OPUS", 48000, 2),
        97: ("SPEEX", 16000, 1),
        98: ("AMR-WB", 16000, 1),
        101: ("TELEPHONE-EVENT", 8000, 1),
        18: ("G729", 8000, 1),
        9: ("G722", 8000, 1),
    }
    assert audio.fmtp == {96: "useinbandfec=1; minptime=10", 101: "0-15", 18: "annexb=no"}
    assert audio.ptime == 30
    assert audio.maxptime is None


def test_static_defaults():
    assert STATIC_PAYLOAD_TYPES[0] == ("PCMU", 8000, 1)
    assert STATIC_PAYLOAD_TYPES[8] == ("PCMA", 8000, 1)
    assert STATIC_PAYLOAD_TYPES[9] == ("G722", 8000, 1)
    audio = parse_sdp(b"v=0\nm=audio 1 RTP/AVP 0 3 4 8 9 13 18 110\n").audio()
    assert audio.rtpmap == {
        0: ("PCMU", 8000, 1), 3: ("GSM", 8000, 1), 4: ("G723", 8000, 1),
        8: ("PCMA", 8000, 1), 9: ("G722", 8000, 1), 13: ("CN", 8000, 1),
        18: ("G729", 8000, 1),
    }  # 110 is dynamic without rtpmap: unknown


def test_non_integer_formats_skipped():
    desc = parse_sdp(b"v=0\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\nm=audio 9 RTP/AVP 0 x 300 8\n")
    assert desc.media[0].formats == []
    assert desc.media[0].kind == "application"
    assert desc.media[1].formats == [0, 8]


def test_rtcp_attribute_forms():
    desc = parse_sdp(sdp(
        """v=0
c=IN IP4 10.0.0.1
m=audio 5004 RTP/AVP 0
a=rtcp:5005
m=audio 5006 RTP/AVP 0
a=rtcp:53020 IN IP6 2001:2345:6789:ABCD:EF01:2345:6789:ABCD
m=audio 5008 RTP/AVP 0
a=rtcp:9 IN IP4 0.0.0.0
a=rtcp-mux
m=audio 5010 RTP/AVP 0
a=rtcp:notaport
"""
    ))
    a, b, c, d = desc.media
    assert (a.rtcp_port, a.rtcp_address, a.rtcp_mux) == (5005, None, False)
    assert (b.rtcp_port, b.rtcp_address) == (53020, "2001:2345:6789:ABCD:EF01:2345:6789:ABCD")
    assert (c.rtcp_port, c.rtcp_address, c.rtcp_mux) == (9, "0.0.0.0", True)
    assert (d.rtcp_port, d.rtcp_address) == (None, None)


def test_direction_session_and_media_level():
    desc = parse_sdp(sdp(
        """v=0
c=IN IP4 10.0.0.1
a=sendonly
m=audio 5004 RTP/AVP 0
m=audio 5006 RTP/AVP 0
a=recvonly
m=audio 5008 RTP/AVP 0
a=inactive
m=audio 5010 RTP/AVP 0
a=sendrecv
"""
    ))
    assert desc.direction == "sendonly"
    assert [m.direction for m in desc.media] == ["sendonly", "recvonly", "inactive", "sendrecv"]
    assert [m.on_hold for m in desc.media] == [True, False, True, False]
    assert desc.attributes == [("sendonly", None)]


def test_default_direction():
    audio = parse_sdp(b"v=0\nc=IN IP4 10.0.0.1\nm=audio 5004 RTP/AVP 0\n").audio()
    assert audio.direction == "sendrecv" and not audio.on_hold


def test_hold_by_zero_address():
    desc = parse_sdp(sdp(
        """v=0
o=- 1 2 IN IP4 10.0.0.1
s=-
c=IN IP4 0.0.0.0
t=0 0
m=audio 5004 RTP/AVP 0
m=audio 5006 RTP/AVP 0
c=IN IP6 ::
m=audio 5008 RTP/AVP 0
c=IN IP4 10.0.0.1
"""
    ))
    assert [m.address for m in desc.media] == ["0.0.0.0", "::", "10.0.0.1"]
    assert [m.on_hold for m in desc.media] == [True, True, False]
    assert desc.media[0].direction == "sendrecv"


def test_audio_port_zero_and_several_media():
    desc = parse_sdp(sdp(
        """v=0
o=- 1 1 IN IP4 10.0.0.1
s=-
c=IN IP4 10.0.0.1
t=0 0
m=video 9000 RTP/AVP 31 34 96
a=rtpmap:96 H264/90000
a=sendonly
m=audio 0 RTP/AVP 0
m=audio 49170/2 RTP/AVP 8
a=rtpmap:8 PCMA/8000
"""
    ))
    video, rejected, audio = desc.media
    assert video.kind == "video"
    assert video.rtpmap == {96: ("H264", 90000, 1), 31: ("H261", 90000, 1), 34: ("H263", 90000, 1)}
    assert video.direction == "sendonly"
    assert rejected.port == 0
    assert audio.port == 49170
    assert audio.direction == "sendrecv"  # video's attribute does not leak
    assert desc.audio() is audio


def test_audio_only_rejected_or_absent():
    desc = parse_sdp(b"v=0\r\nm=video 9000 RTP/AVP 31\r\nm=audio 0 RTP/AVP 0\r\nm=audio 0 RTP/AVP 8\r\n")
    assert desc.audio() is desc.media[1]
    assert parse_sdp(b"v=0\r\nm=video 9000 RTP/AVP 31\r\n").audio() is None
    assert parse_sdp(b"v=0\r\n").audio() is None
    # A rejected stream sometimes comes with no formats at all.
    assert parse_sdp(b"v=0\r\nm=audio 0 RTP/AVP\r\n").media[0].formats == []


@pytest.mark.parametrize(
    "proto, extra, encrypted",
    [
        ("RTP/AVP", "", False),
        ("RTP/SAVP", "", True),
        ("RTP/SAVPF", "", True),
        ("UDP/TLS/RTP/SAVPF", "", True),
        ("RTP/AVP", "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4\n", True),
        ("RTP/AVP", "a=fingerprint:sha-256 4A:AD:B9:B1:3F:82:18:3B:54:02:12:DF:3E:5D:49:6B:19:E5:7C:AB\n", True),
        ("RTP/AVP", "a=zrtp-hash:1.10 fe30efd02423cb054e50efd0248742ac7a52c8f91bc2df881ae642c371ba46df\n", True),
    ],
)
def test_encrypted(proto, extra, encrypted):
    desc = parse_sdp(f"v=0\nc=IN IP4 10.0.0.1\nm=audio 5004 {proto} 0\n{extra}")
    assert desc.audio().encrypted is encrypted


def test_session_level_fingerprint_marks_media_encrypted():
    desc = parse_sdp(
        "v=0\nc=IN IP4 10.0.0.1\na=fingerprint:sha-1 4A:AD\nm=audio 5004 RTP/AVP 0\n"
    )
    assert desc.audio().encrypted
    assert desc.audio().attributes == []


def test_unknown_and_non_sdp_lines_ignored():
    desc = parse_sdp(sdp(
        """v=0
o=- 1 1 IN IP4 10.0.0.1
s=-
i=A session with junk
u=http://example.com/
e=j.doe@example.com (Jane Doe)
b=AS:64
this is not an sdp line
X=upper-case type
z=2882844526 -1h 2898848070 0
c=IN IP4 10.0.0.1
t=0 0
r=7d 1h 0 25h
k=prompt
m=audio 5004 RTP/AVP 0
i=voice
b=TIAS:64000
a=x-custom:with:colons
a=label:1
"""
    ))
    audio = desc.audio()
    assert audio.port == 5004
    assert audio.attributes == [("x-custom", "with:colons"), ("label", "1")]


def test_odd_origin_tolerated():
    assert parse_sdp(b"v=0\no=- 1 1 IN IP4\nm=audio 1 RTP/AVP 0\n").origin is None


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "SDP is empty"),
        (b"\r\n \r\n", "SDP is empty"),
        (b"o=- 1 1 IN IP4 1.2.3.4\r\nv=0\r\n", "SDP does not start with a v= line"),
        (b"INVITE sip:a@b SIP/2.0\r\n", "SDP does not start with a v= line"),
        (b"\x00\x01\x02\x03", "SDP does not start with a v= line"),
        (b"V=0\r\n", "SDP does not start with a v= line"),
        (b"v=zero\r\n", "SDP v= line malformed"),
        (b"v=\r\n", "SDP v= line malformed"),
        (b"v=0\r\nm=audio\r\n", "SDP m= line malformed"),
        (b"v=0\r\nm=audio port RTP/AVP 0\r\n", "SDP m= line malformed"),
        (b"v=0\r\nm=audio 5004\r\n", "SDP m= line malformed"),
        (b"v=0\r\nm=audio 70000 RTP/AVP 0\r\n", "SDP m= line malformed"),
        (b"v=0\r\nc=IN IP4\r\n", "SDP c= line malformed"),
        (b"v=0\r\nm=audio 5004 RTP/AVP 0\r\nc=\r\n", "SDP c= line malformed"),
    ],
)
def test_errors(data, message):
    with pytest.raises(SdpParseError) as excinfo:
        parse_sdp(data)
    assert str(excinfo.value) == message
    assert isinstance(excinfo.value, ValueError)


def test_random_inputs_only_raise_sdp_parse_error():
    rng = random.Random(4566)
    seed = FREESWITCH_OFFER + sdp("m=video 0 RTP/SAVP 31\nc=IN IP6 ::1\na=crypto:1 x\n")
    alphabet = b"v=mcoa \r\n:/0123456789IPN4."
    for _ in range(3000):
        choice = rng.randrange(4)
        if choice == 0:
            data = seed[: rng.randrange(len(seed) + 1)]
        elif choice == 1:
            data = bytearray(seed)
            for _ in range(rng.randrange(1, 8)):
                data[rng.randrange(len(data))] = rng.choice(alphabet)
            data = bytes(data)
        elif choice == 2:
            data = b"v=0\r\n" + bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 120)))
        else:
            data = b"v=0\n" + bytes(rng.choice(alphabet) for _ in range(rng.randrange(0, 200)))
        try:
            desc = parse_sdp(data)
        except SdpParseError:
            continue
        for media in desc.media:
            assert isinstance(media, MediaDescription)
            assert 0 <= media.port <= 65535
            media.on_hold, repr(media)
        desc.audio()


# -- numbers too long for int() (issue 10, item 1: any exception escaping a parser) -----

HUGE = "9" * 5000
HEAD = "v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.1\nt=0 0\n"


@pytest.mark.parametrize("lines", [
    f"m=audio 4000 RTP/AVP {HUGE} \u00b2 8",
    f"m=audio 4000 RTP/AVP 8\na=rtpmap:{HUGE} PCMA/8000",
    f"m=audio 4000 RTP/AVP 8\na=rtpmap:8 PCMA/{HUGE}",
    f"m=audio 4000 RTP/AVP 8\na=rtpmap:8 PCMA/8000/{HUGE}",
    f"m=audio 4000 RTP/AVP 8\na=fmtp:{HUGE} 0-16",
    f"m=audio 4000 RTP/AVP 8\na=ptime:{HUGE}",
    f"m=audio 4000 RTP/AVP 8\na=maxptime:{HUGE}",
    f"m=audio 4000 RTP/AVP 8\na=rtcp:{HUGE}",
])
def test_numbers_of_thousands_of_digits_are_ignored_like_other_bad_attributes(lines):
    s = parse_sdp(sdp(HEAD + lines))
    a = s.audio()
    assert a.port == 4000 and a.formats == [8] and a.rtpmap[8] == ("PCMA", 8000, 1)
    assert a.ptime is None and a.rtcp_port is None


def test_a_port_of_thousands_of_digits_is_a_malformed_m_line():
    with pytest.raises(SdpParseError, match="SDP m= line malformed"):
        parse_sdp(sdp(HEAD + f"m=audio {HUGE} RTP/AVP 8"))


def test_leading_zeros_are_still_numbers():
    a = parse_sdp(sdp(HEAD + "m=audio 0004000 RTP/AVP 008\na=rtpmap:008 PCMA/0008000\na=ptime:0020")).audio()
    assert a.port == 4000 and a.formats == [8] and a.rtpmap[8] == ("PCMA", 8000, 1) and a.ptime == 20


# RFC 4568 section 4's example offer (its key, lifetime and MKI)
RFC4568_KEY = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"


def test_crypto_rfc4568_example_and_forms():
    import base64
    desc = parse_sdp(f"v=0\nc=IN IP4 10.0.0.1\nm=audio 49170 RTP/SAVP 0\n"
                     f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{RFC4568_KEY}|2^20|1:32\n")
    (c,) = desc.audio().crypto
    assert c == CryptoAttribute(1, "AES_CM_128_HMAC_SHA1_80",
                                (InlineKey(base64.b64decode(RFC4568_KEY), 1 << 20, 1, 32),))
    assert c.known and len(c.keys[0].key_salt) == 30
    assert RFC4568_KEY not in repr(c) and "30 bytes" in repr(c)
    # several keys, a plain lifetime, unpadded base64, session parameters, lower case
    two = parse_crypto(f"7 aead_aes_256_gcm inline:{'A' * 59};inline:{'B' * 59}=|1000 KDR=0 WSH=64 UNENCRYPTED_SRTCP")
    assert two.tag == 7 and two.suite == "AEAD_AES_256_GCM" and two.known
    assert [len(k.key_salt) for k in two.keys] == [44, 44]
    assert two.keys[1].lifetime == 1000 and two.keys[0].lifetime is None and two.keys[0].mki_length == 0
    assert two.session_params == ("KDR=0", "WSH=64", "UNENCRYPTED_SRTCP")
    # an unknown key method next to an inline key is skipped; an unknown suite is kept, not known
    other = parse_crypto(f"2 SOME_FUTURE_SUITE uri:https://example.invalid/key;inline:{RFC4568_KEY}")
    assert len(other.keys) == 1 and not other.known
    assert not parse_crypto("3 AES_CM_128_HMAC_SHA1_80 inline:QUJD").known       # 3 bytes, not 30


@pytest.mark.parametrize("value", [
    "", "1", "1 AES_CM_128_HMAC_SHA1_80", "x AES_CM_128_HMAC_SHA1_80 inline:QUJD",
    "1234567890 AES_CM_128_HMAC_SHA1_80 inline:QUJD",              # tag of 10 digits
    "1 AES_CM_128_HMAC_SHA1_80 inline:!!!!", "1 AES_CM_128_HMAC_SHA1_80 inline:QUJD|2^20|1:0",
    "1 AES_CM_128_HMAC_SHA1_80 inline:QUJD|2^20|1:129", "1 AES_CM_128_HMAC_SHA1_80 inline:QUJD|x",
    "1 AES_CM_128_HMAC_SHA1_80 uri:https://example.invalid/key", "1 AES-CM inline:QUJD",
    "1 AES_CM_128_HMAC_SHA1_80 inline:Q",                          # not base64 of anything
    "1 AES_CM_128_HMAC_SHA1_80 inline:\u212a\u212aAA",              # Kelvin signs, not ASCII letters
])
def test_crypto_malformed(value):
    with pytest.raises(SdpParseError):
        parse_crypto(value)


def test_malformed_crypto_lines_counted_others_kept():
    desc = parse_sdp(f"v=0\nc=IN IP4 10.0.0.1\nm=audio 5004 RTP/SAVP 0\na=crypto:1 broken\na=crypto\n"
                     f"a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{RFC4568_KEY}\n"
                     f"m=audio 5006 RTP/SAVP 0\na=crypto:9 AES_CM_128_HMAC_SHA1_80 inline:{RFC4568_KEY}\n")
    first, second = desc.media
    assert first.crypto_errors == 2 and [c.tag for c in first.crypto] == [2] and first.encrypted
    assert second.crypto_errors == 0 and [c.tag for c in second.crypto] == [9]     # per media description
