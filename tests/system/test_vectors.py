"""Binary vectors, one set per parser (tests/data/vectors/, written by
tests/tools/make_vectors.py): each valid vector parses to the fields it was built
with and round-trips where the module serializes; each ``_truncated`` and
``_invalid`` one raises the parser's documented exception with its exact message,
or is counted, and nothing else."""

import importlib.util
import socket

import pytest

from rtp2ws.media.dtmf import DtmfDetector, DtmfEvent
from rtp2ws.media.rtp import (
    KIND_RTP,
    RtpPacket,
    TelephoneEvent,
    classify,
    parse_rtp,
    parse_telephone_event,
    serialize_rtp,
    serialize_telephone_event,
)
from rtp2ws.net.packet import (
    DLT_EN10MB,
    DLT_LINUX_SLL,
    IPPROTO_TCP,
    IPPROTO_UDP,
    TCP_ACK,
    TCP_PSH,
    MalformedPacket,
    Packet,
    PacketDecoder,
)
from rtp2ws.net.tcpstream import SipTcpReassembler
from rtp2ws.pipeline.pipeline import Pipeline, Sink
from rtp2ws.signalling.sdp import SdpParseError, parse_sdp
from rtp2ws.signalling.sip import SipParseError, parse_message

from paths import DATA, TOOLS

VECTORS = DATA / "vectors"
GENERATOR = TOOLS / "make_vectors.py"


def load(name: str) -> bytes:
    return (VECTORS / f"{name}.bin").read_bytes()


def ip(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)


def raises_exactly(exc_type, message, parse, data):
    """``parse(data)`` raises ``exc_type`` itself (not a subclass, not another error)
    with exactly ``message``."""
    with pytest.raises(Exception) as e:
        parse(data)
    assert type(e.value) is exc_type and str(e.value) == message


# -- the vectors themselves ------------------------------------------------------------------------

PARSERS = ["rtp", "rtp_csrc_ext", "telephone_event", "sip_invite", "sdp_offer", "eth_ipv4_udp", "eth_ipv4_tcp",
           "eth_ipv6_udp", "sll_ipv4_udp", "sip_tcp_stream"]


def _generator():
    spec = importlib.util.spec_from_file_location("make_vectors", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_generator_reproduces_the_checked_in_vectors():
    gen = _generator()
    assert gen.vectors() == {p.stem: p.read_bytes() for p in VECTORS.glob("*.bin")}
    assert gen.main(["--check"]) == 0


def test_every_parser_has_a_valid_a_truncated_and_an_invalid_vector():
    names = {p.stem for p in VECTORS.glob("*.bin")}
    for name in PARSERS:
        assert {name, f"{name}_truncated", f"{name}_invalid"} <= names
        assert len(load(f"{name}_truncated")) < len(load(name))
        assert load(f"{name}_invalid") != load(name)


# -- RTP (rtp2ws.media.rtp.parse_rtp) ---------------------------------------------------------------

def test_rtp():
    data = load("rtp")
    p = parse_rtp(data)
    assert (p.sequence, p.timestamp, p.ssrc, p.payload_type, p.marker) == (0x1F2E, 0x12345, 0xCA11E401, 8, True)
    assert p.payload == data[12:] and len(p.payload) == 160
    assert p.csrcs == () and p.extension is None
    assert repr(p) == "RtpPacket(seq=7982, ts=74565, ssrc=0xca11e401, marker=1, payload=8, 160 bytes)"
    assert classify(data) == KIND_RTP
    assert serialize_rtp(p) == data


def test_rtp_with_csrcs_extension_and_padding():
    data = load("rtp_csrc_ext")
    p = parse_rtp(data)
    assert (p.sequence, p.timestamp, p.ssrc, p.payload_type, p.marker) == (65535, 0xFFFFFFF0, 0x0BADCAFE, 0, False)
    assert p.csrcs == (0x11111111, 0x22222222)
    assert p.extension == (0xBEDE, bytes([0x11, 0x7F, 0, 0, 0x20, 1, 2, 3]))
    assert len(p.payload) == 80 and p.payload == data[12 + 8 + 12:-4]     # header, CSRCs, extension; padding
    assert serialize_rtp(p, padding=data[-1]) == data


@pytest.mark.parametrize("name,message", [
    ("rtp_truncated", "RTP packet length is less than 12 bytes"),
    ("rtp_invalid", "RTP packet has invalid version 1"),
    ("rtp_csrc_ext_truncated", "RTP packet has truncated extension value"),
    ("rtp_csrc_ext_invalid", "RTP packet padding length is invalid"),
])
def test_rtp_errors(name, message):
    raises_exactly(ValueError, message, parse_rtp, load(name))


# -- telephone-event (rtp2ws.media.rtp.parse_telephone_event) ----------------------------------------

def test_telephone_event():
    data = load("telephone_event")
    ev = parse_telephone_event(data)
    assert ev == TelephoneEvent(event=5, end=True, volume=10, duration=960) and ev.digit == "5"
    assert serialize_telephone_event(ev) == data


def test_telephone_event_in_rtp_becomes_one_key_press():
    p = parse_rtp(load("rtp_dtmf"))
    assert p.payload_type == 101 and p.payload == load("telephone_event")
    d = DtmfDetector()
    assert d.feed(p, 1.5) == [DtmfEvent("5", 1.5, 960 * 1000 // 8000, p.timestamp)]
    assert d.feed(p, 1.6) == []          # the end packet's copies are one key press


def test_telephone_event_truncated_raises_and_is_counted_by_the_detector():
    data = load("telephone_event_truncated")
    raises_exactly(ValueError, "telephone-event payload is shorter than 4 bytes", parse_telephone_event, data)
    d = DtmfDetector()
    assert d.feed(RtpPacket(1, 8000, 7, 101, False, data), 0.0) == []
    assert d.malformed == 1 and d.flush() == []


def test_telephone_event_reserved_bit_is_ignored():
    """RFC 4733 2.3: the sender MUST clear R, the receiver MUST ignore it.  The only
    error the parser has is length; this vector documents that R changes nothing."""
    data = load("telephone_event_invalid")
    assert data[1] & 0x40
    assert parse_telephone_event(data) == parse_telephone_event(load("telephone_event"))
    assert serialize_telephone_event(parse_telephone_event(data)) == load("telephone_event")


# -- SIP (rtp2ws.signalling.sip.parse_message) ---------------------------------------------------------

def test_sip_invite():
    msg = parse_message(load("sip_invite"))
    assert msg.is_request and msg.method == "INVITE" and msg.uri == "sip:bob@192.0.2.20:5060"
    assert (msg.status, msg.reason) == (None, None)
    assert msg.call_id == "vectors-1@192.0.2.10" and msg.cseq == (1, "INVITE")
    assert (msg.from_user, msg.from_tag, msg.to_user, msg.to_tag) == ("alice", "ftag-vec", "bob", None)
    assert msg.vias() == ["SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKvec1",
                          "SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bKproxy;received=198.51.100.1"]
    assert msg.top_via_branch == "z9hG4bKvec1"
    assert msg.header("Subject") == "test vectors, continued on a folded line"   # the fold joined
    assert msg.header("max-forwards") == "70"
    assert msg.body == load("sdp_offer") and msg.sdp_bodies() == [load("sdp_offer")]
    assert [name for name, _ in msg.headers] == [
        "via", "via", "max-forwards", "from", "to", "call-id", "cseq", "contact", "subject", "content-type",
        "content-length"]


def test_sip_response_in_compact_form():
    msg = parse_message(load("sip_200_compact"))
    assert not msg.is_request and (msg.status, msg.reason) == (200, "OK") and msg.method is None
    assert [name for name, _ in msg.headers] == [
        "via", "from", "to", "call-id", "cseq", "contact", "content-type", "content-length"]
    assert msg.call_id == "vectors-1@192.0.2.10" and msg.to_tag == "ttag-vec" and msg.cseq == (1, "INVITE")
    assert int(msg.header("l")) == len(msg.body)
    assert parse_sdp(msg.sdp_bodies()[0]).audio().port == 5000


def test_sip_truncated_body():
    full, cut = load("sip_invite"), load("sip_invite_truncated")
    n = len(load("sdp_offer"))
    raises_exactly(SipParseError, f"SIP body truncated: Content-Length {n}, {n - (len(full) - len(cut))} bytes present",
                   parse_message, cut)


def test_sip_header_without_colon():
    raises_exactly(SipParseError, "SIP header line without colon", parse_message, load("sip_invite_invalid"))


@pytest.mark.parametrize("name", ["sip_invite_truncated", "sip_invite_invalid"])
def test_sip_errors_are_counted_by_the_pipeline(name):
    import netgen

    pipe = Pipeline(DLT_EN10MB, Sink())
    pipe.feed(1.0, netgen.link(DLT_EN10MB, netgen.udp("192.0.2.10", 5060, "192.0.2.20", 5060, load(name))))
    assert pipe.stats["malformed_sip"] == pipe.stats["malformed"] == 1
    assert pipe.stats["internal_errors"] == 0 and pipe.calls == {}


# -- SDP (rtp2ws.signalling.sdp.parse_sdp) ---------------------------------------------------------------

def test_sdp_offer():
    sd = parse_sdp(load("sdp_offer"))
    assert sd.origin == ("-", "1234", "1", "IN", "IP4", "192.0.2.10") and sd.address == "192.0.2.10"
    (m,) = sd.media
    assert sd.audio() is m
    assert (m.kind, m.port, m.proto, m.formats) == ("audio", 4000, "RTP/AVP", [8, 0, 101, 13])
    assert m.address == "192.0.2.10"          # from the session-level c=
    assert m.rtpmap == {8: ("PCMA", 8000, 1), 0: ("PCMU", 8000, 1), 101: ("TELEPHONE-EVENT", 8000, 1),
                        13: ("CN", 8000, 1)}
    assert m.fmtp == {101: "0-16"} and m.ptime == 20 and m.maxptime is None
    assert (m.rtcp_port, m.rtcp_address, m.rtcp_mux) == (4001, "192.0.2.11", False)
    assert m.direction == "sendrecv" and not m.on_hold and not m.encrypted


def test_sdp_errors():
    raises_exactly(SdpParseError, "SDP m= line malformed", parse_sdp, load("sdp_offer_truncated"))
    raises_exactly(SdpParseError, "SDP c= line malformed", parse_sdp, load("sdp_offer_invalid"))


# -- packet decoding (rtp2ws.net.packet.PacketDecoder.decode) -------------------------------------------

def test_ethernet_ipv4_udp():
    pkt = PacketDecoder(DLT_EN10MB).decode(load("eth_ipv4_udp"), 0.0)
    assert pkt == Packet(IPPROTO_UDP, ip("192.0.2.10"), 4000, ip("192.0.2.20"), 5000, load("rtp"), 0, 0)


def test_ethernet_ipv4_tcp():
    pkt = PacketDecoder(DLT_EN10MB).decode(load("eth_ipv4_tcp"), 0.0)
    assert (pkt.proto, pkt.src, pkt.sport, pkt.dst, pkt.dport) == (IPPROTO_TCP, ip("192.0.2.10"), 5060,
                                                                   ip("192.0.2.20"), 5060)
    assert (pkt.tcp_seq, pkt.tcp_flags) == (0x10000000, TCP_PSH | TCP_ACK)
    msg = parse_message(pkt.payload)
    assert msg.method == "OPTIONS" and msg.cseq == (7, "OPTIONS") and msg.body == b""
    # ... and the reassembler frames that one segment as that one message.
    assert SipTcpReassembler().feed(pkt, 0.0) == [pkt.payload]


def test_ethernet_ipv6_udp():
    pkt = PacketDecoder(DLT_EN10MB).decode(load("eth_ipv6_udp"), 0.0)
    assert pkt == Packet(IPPROTO_UDP, ip("2001:db8::10"), 5060, ip("2001:db8::20"), 5060, load("sip_invite"), 0, 0)


def test_linux_cooked_with_a_vlan_tag_ipv4_udp():
    pkt = PacketDecoder(DLT_LINUX_SLL).decode(load("sll_ipv4_udp"), 0.0)
    assert pkt == Packet(IPPROTO_UDP, ip("192.0.2.10"), 4000, ip("192.0.2.20"), 5000, load("rtp"), 0, 0)


ETH, IPV4, IPV6 = 14, 20, 40


def _captured(name, header):
    """(length the valid vector's header announces, bytes the truncated one has) after ``header`` bytes."""
    return len(load(name)) - header, len(load(f"{name}_truncated")) - header


MALFORMED = [
    ("eth_ipv4_udp_truncated", DLT_EN10MB,
     lambda: "IPv4 packet truncated: total length {}, {} bytes captured".format(*_captured("eth_ipv4_udp", ETH))),
    ("eth_ipv4_udp_invalid", DLT_EN10MB, lambda: "UDP length 4 is less than 8"),
    ("eth_ipv4_tcp_truncated", DLT_EN10MB,
     lambda: "IPv4 packet truncated: total length {}, {} bytes captured".format(*_captured("eth_ipv4_tcp", ETH))),
    ("eth_ipv4_tcp_invalid", DLT_EN10MB, lambda: "TCP data offset 16 is less than 20"),
    ("eth_ipv6_udp_truncated", DLT_EN10MB,
     lambda: "IPv6 packet truncated: payload length {}, {} bytes captured".format(
         *_captured("eth_ipv6_udp", ETH + IPV6))),
    ("eth_ipv6_udp_invalid", DLT_EN10MB, lambda: "IPv6 header has version 4"),
    ("sll_ipv4_udp_truncated", DLT_LINUX_SLL, lambda: "Linux cooked header truncated"),
    ("sll_ipv4_udp_invalid", DLT_LINUX_SLL, lambda: "IPv4 header length 16 is less than 20"),
]


@pytest.mark.parametrize("name,linktype,message", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_packet_decoder_errors_raise_and_are_counted(name, linktype, message):
    dec = PacketDecoder(linktype)
    raises_exactly(MalformedPacket, message(), lambda data: dec.decode(data, 0.0), load(name))
    assert dec.stats["packets"] == dec.stats["malformed"] == 1
    pipe = Pipeline(linktype, Sink())
    pipe.feed(1.0, load(name))
    assert pipe.stats["malformed_packet"] == pipe.stats["malformed"] == 1 and pipe.stats["internal_errors"] == 0


# -- SIP over TCP (rtp2ws.net.tcpstream.SipTcpReassembler) ----------------------------------------------

def segments(data, size, seq=0x20000000):
    """``data`` as TCP segments of ``size`` bytes of one flow seen mid-stream."""
    return [Packet(IPPROTO_TCP, ip("192.0.2.10"), 5060, ip("192.0.2.20"), 5060, data[i:i + size],
                   (seq + i) % 2**32, TCP_PSH | TCP_ACK) for i in range(0, len(data), size)]


def frame(data, size):
    r = SipTcpReassembler()
    out = []
    for s in segments(data, size):
        out += r.feed(s, 0.0)
    return r, out


@pytest.mark.parametrize("size", [1, 7, 10_000])
def test_sip_tcp_stream(size):
    stream = load("sip_tcp_stream")
    r, msgs = frame(stream, size)
    assert len(msgs) == 2 and r.stats["messages"] == 2
    # Keep-alives between the messages (RFC 5626: CRLF, CRLFCRLF) are not part of them.
    assert b"\r\n" + msgs[0] + b"\r\n\r\n" + msgs[1] == stream
    options, invite = (parse_message(m) for m in msgs)
    assert options.method == "OPTIONS" and options.body == b""
    assert invite.method == "INVITE" and invite.body == load("sdp_offer")
    assert r.held_bytes == 0 and r.stats["desyncs"] == 0 and r.stats["discarded_bytes"] == 0


def test_sip_tcp_stream_truncated_holds_the_partial_message():
    stream, cut = load("sip_tcp_stream"), load("sip_tcp_stream_truncated")
    _, (options, _) = frame(stream, len(stream))
    r, msgs = frame(cut, 100)
    assert msgs == [options]
    assert r.held_bytes == len(cut) - len(b"\r\n" + options + b"\r\n\r\n")
    assert r.stats["desyncs"] == 0 and r.stats["bad_content_length"] == 0


def test_sip_tcp_stream_invalid_resyncs_on_the_next_start_line():
    """Garbage, then a message whose Content-Length no stream can hold: both are
    skipped and counted; framing resumes at the OPTIONS after them."""
    stream = load("sip_tcp_stream_invalid")
    _, (options, _) = frame(load("sip_tcp_stream"), 10_000)
    assert stream.endswith(options)
    r, msgs = frame(stream, 13)
    assert msgs == [options]
    assert r.stats["bad_content_length"] == 1 and r.stats["desyncs"] >= 1
    assert r.stats["discarded_bytes"] == len(stream) - len(options) and r.held_bytes == 0
