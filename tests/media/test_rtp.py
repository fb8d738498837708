import struct

import pytest

from rtp2ws.media.rtp import (
    KIND_DTLS,
    KIND_OTHER,
    KIND_RTCP,
    KIND_RTP,
    KIND_STUN,
    KIND_ZRTP,
    RtpPacket,
    TelephoneEvent,
    classify,
    parse_rtp,
    parse_telephone_event,
    serialize_rtp,
    serialize_telephone_event,
)


def test_parse_basic_and_repr():
    data = bytes.fromhex("80887d4d000004d2deadbeef") + b"\xd5" * 160
    p = parse_rtp(data)
    assert (p.sequence, p.timestamp, p.ssrc, p.payload_type, p.marker) == (32077, 1234, 0xDEADBEEF, 8, True)
    assert p.payload == b"\xd5" * 160
    assert repr(p) == "RtpPacket(seq=32077, ts=1234, ssrc=0xdeadbeef, marker=1, payload=8, 160 bytes)"
    assert serialize_rtp(p) == data


def test_csrc_extension_padding_round_trip():
    p = RtpPacket(65535, 0xFFFFFFFF, 1, 0, False, b"\xff" * 80, (7, 8, 9), (0xBEDE, b"\x10\x01\x00\x00"))
    data = serialize_rtp(p, padding=4)
    q = parse_rtp(data)
    assert q == p
    assert len(data) == 12 + 12 + 8 + 80 + 4


@pytest.mark.parametrize("data,msg", [
    (b"\x80\x08\x00", "RTP packet length is less than 12 bytes"),
    (b"\x40" + b"\x00" * 11, "RTP packet has invalid version 1"),
    (b"\x82" + b"\x00" * 11 + b"\x00" * 4, "RTP packet has truncated CSRC"),
    (b"\x90" + b"\x00" * 11 + b"\xbe", "RTP packet has truncated extension profile / length"),
    (b"\x90" + b"\x00" * 11 + b"\xbe\xde\x00\x02" + b"\x00" * 4, "RTP packet has truncated extension value"),
    (b"\xa0" + b"\x00" * 11 + b"\x00\x00\x00\x09", "RTP packet padding length is invalid"),
    (b"\xa0" + b"\x00" * 11 + b"\x00\x00\x00\x00", "RTP packet padding length is invalid"),
])
def test_errors(data, msg):
    with pytest.raises(ValueError) as e:
        parse_rtp(data)
    assert str(e.value) == msg


def test_classify():
    rtp = serialize_rtp(RtpPacket(1, 2, 3, 8, False, b"\xd5" * 160))
    assert classify(rtp) == KIND_RTP
    # RTCP sender report (PT 200) and receiver report (PT 201)
    assert classify(bytes.fromhex("80c8000611223344") + b"\x00" * 20) == KIND_RTCP
    assert classify(bytes.fromhex("81c90007") + b"\x00" * 28) == KIND_RTCP
    stun = struct.pack("!HHI", 0x0001, 0, 0x2112A442) + b"\x01" * 12
    assert classify(stun) == KIND_STUN
    zrtp = b"\x10\x00\x00\x01" + struct.pack("!I", 0x5A525450) + b"\x00" * 20
    assert classify(zrtp) == KIND_ZRTP
    # DTLS (RFC 7983: first byte 20-63): a DTLS 1.2 handshake record (ClientHello), change
    # cipher spec, application data, alert, and DTLS 1.3's unified header (0b001xxxxx)
    for head in ("16fefd", "14fefd", "17fefd", "15feff", "2f"):
        assert classify(bytes.fromhex(head) + bytes(13)) == KIND_DTLS, head
    assert classify(bytes.fromhex("13fefd") + bytes(13)) == KIND_OTHER    # 19: below DTLS's range
    assert classify(bytes.fromhex("40fefd") + bytes(13)) == KIND_OTHER    # 64: above it
    assert classify(b"hello world, this is not media") == KIND_OTHER
    assert classify(b"\x80") == KIND_OTHER


def test_telephone_event():
    ev = TelephoneEvent(11, True, 10, 1280)
    data = serialize_telephone_event(ev)
    assert data == bytes([11, 0x8A, 0x05, 0x00])
    assert parse_telephone_event(data) == ev
    assert ev.digit == "#"
    assert TelephoneEvent(10, False, 0, 0).digit == "*"
    with pytest.raises(ValueError, match="shorter than 4 bytes"):
        parse_telephone_event(b"\x01")
