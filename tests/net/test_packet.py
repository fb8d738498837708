import random
import shutil
import socket
import struct
import subprocess

import pytest

from rtp2ws.net.packet import (
    DLT_EN10MB,
    DLT_IPV4,
    DLT_IPV6,
    DLT_LINUX_SLL,
    DLT_LINUX_SLL2,
    DLT_LOOP,
    DLT_NULL,
    DLT_RAW,
    LINKTYPE_NAMES,
    TCP_ACK,
    TCP_FIN,
    TCP_PSH,
    TCP_SYN,
    MalformedPacket,
    Packet,
    PacketDecoder,
    UnsupportedLinkType,
)

import netgen
from netgen import (
    ALL_LINKTYPES,
    FAMILIES,
    LINK_FAMILY,
    TUNNELS,
    V4,
    V6,
    erspan,
    ethernet,
    fragment,
    gre,
    ip_packet,
    ipip,
    link,
    packed,
    tcp,
    tunnel,
    udp,
)

RTP = bytes.fromhex("80000001000000a0deadbeef") + b"\xd5" * 160


def decode(linktype, ip_pkt, now=0.0, **kw):
    return PacketDecoder(linktype).decode(link(linktype, ip_pkt, **kw), now)


# -- link types ----------------------------------------------------------------


@pytest.mark.parametrize("linktype,fam", LINK_FAMILY)
def test_udp_over_every_link_type(linktype, fam):
    src, dst = FAMILIES[fam]
    pkt = decode(linktype, udp(src, 40000, dst, 5004, RTP))
    assert pkt == Packet(17, packed(src), 40000, packed(dst), 5004, RTP, 0, 0)
    assert type(pkt.payload) is bytes


@pytest.mark.parametrize("linktype,fam", LINK_FAMILY)
def test_tcp_over_every_link_type(linktype, fam):
    src, dst = FAMILIES[fam]
    pkt = decode(linktype, tcp(src, 5060, dst, 40001, b"OPTIONS", seq=0xFFFFFFF0, flags="PA"))
    assert pkt == Packet(6, packed(src), 5060, packed(dst), 40001, b"OPTIONS", 0xFFFFFFF0, TCP_PSH | TCP_ACK)


def test_tcp_flags_and_options():
    raw = tcp(V4[0], 1, V4[1], 2, b"", seq=7, flags="S", tcp_options=b"\x02\x04\x05\xb4\x01\x03\x03\x07")
    pkt = decode(DLT_RAW, raw)
    assert pkt.tcp_flags == TCP_SYN and pkt.tcp_seq == 7 and pkt.payload == b""
    raw = tcp(V4[0], 1, V4[1], 2, b"bye", seq=9, flags="FA", tcp_options=b"\x01\x01\x08\x0a" + b"\0" * 8)
    pkt = decode(DLT_RAW, raw)
    assert pkt.tcp_flags == TCP_FIN | TCP_ACK and pkt.payload == b"bye"


def test_unsupported_link_type():
    with pytest.raises(UnsupportedLinkType, match="^unsupported link type 105$"):
        PacketDecoder(105)
    assert issubclass(UnsupportedLinkType, ValueError)
    assert issubclass(MalformedPacket, ValueError)
    assert LINKTYPE_NAMES[DLT_LINUX_SLL2].startswith("LINUX_SLL2")


@pytest.mark.parametrize("vlans", [(100,), (100, 200), (1, 2, 3)])
@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_vlan_and_qinq(vlans, fam):
    src, dst = FAMILIES[fam]
    frame = link(DLT_EN10MB, udp(src, 1, dst, 2, b"x"), vlans=vlans)
    if len(vlans) > 1:
        assert frame[12:14] == b"\x88\xa8"
    pkt = PacketDecoder(DLT_EN10MB).decode(frame, 0)
    assert pkt.payload == b"x" and pkt.src == packed(src)


@pytest.mark.parametrize("vlans", [(100,), (100, 200)])
@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_vlan_tag_in_linux_cooked_v1(vlans, fam):
    """``-i any``: libpcap puts the tag the kernel took off back after the cooked header."""
    src, dst = FAMILIES[fam]
    frame = link(DLT_LINUX_SLL, udp(src, 1, dst, 2, b"x"), vlans=vlans)
    assert frame[14:16] == b"\x81\x00" and frame[16:18] == struct.pack("!H", vlans[0])
    d = PacketDecoder(DLT_LINUX_SLL)
    pkt = d.decode(frame, 0)
    assert pkt.payload == b"x" and pkt.src == packed(src) and d.stats["non_ip"] == 0
    with pytest.raises(MalformedPacket, match="^VLAN tag truncated$"):
        d.decode(frame[:16 + 4 * len(vlans) - 1], 0)


def test_vlan_tpid_9100():
    frame = link(DLT_EN10MB, udp(V4[0], 1, V4[1], 2, b"y"), vlans=(10, 20))
    frame = frame[:12] + b"\x91\x00" + frame[14:]
    assert PacketDecoder(DLT_EN10MB).decode(frame, 0).payload == b"y"


@pytest.mark.parametrize("family,v6", [(2, False), (10, True), (24, True), (28, True), (30, True)])
@pytest.mark.parametrize("order", ["<I", ">I"])
def test_null_address_families_either_byte_order(family, v6, order):
    src, dst = V6 if v6 else V4
    frame = struct.pack(order, family) + udp(src, 1, dst, 2, b"z")
    pkt = PacketDecoder(DLT_NULL).decode(frame, 0)
    assert pkt.src == packed(src) and pkt.payload == b"z"


def test_loop_is_network_order_and_unknown_families_are_not_ip():
    d = PacketDecoder(DLT_LOOP)
    assert d.decode(struct.pack(">I", 24) + udp(V6[0], 1, V6[1], 2, b"q"), 0).payload == b"q"
    assert d.decode(struct.pack(">I", 7) + udp(V4[0], 1, V4[1], 2, b"q"), 0) is None
    n = PacketDecoder(DLT_NULL)
    assert n.decode(struct.pack("<I", 7) + udp(V4[0], 1, V4[1], 2, b"q"), 0) is None
    assert d.stats["non_ip"] == 1 and n.stats["non_ip"] == 1


def test_non_ip_and_non_udp_tcp_return_none():
    d = PacketDecoder(DLT_EN10MB)
    arp = bytes(12) + b"\x08\x06" + bytes(28)
    assert d.decode(arp, 0) is None
    icmp = ip_packet(V4[0], V4[1], 1, b"\x08\x00\xf7\xff\x00\x00\x00\x00")
    assert d.decode(link(DLT_EN10MB, icmp), 0) is None
    no_next = ip_packet(V6[0], V6[1], 59, b"")
    assert d.decode(link(DLT_EN10MB, no_next), 0) is None
    sll = PacketDecoder(DLT_LINUX_SLL)
    assert sll.decode(bytes(14) + b"\x08\x06" + bytes(28), 0) is None
    assert d.stats["non_ip"] == 1 and d.stats["other_proto"] == 2
    assert d.stats["packets"] == 3


# -- IP details ------------------------------------------------------------------


@pytest.mark.parametrize("options", [b"\x94\x04\x00\x00", b"\x01" * 7, b"\x07\x27\x04" + bytes(36) + b"\x00"])
def test_ipv4_options(options):
    l4 = struct.pack("!HHHH", 1000, 2000, 8 + 3, 0) + b"abc"
    raw = ip_packet(V4[0], V4[1], 17, l4, options=options)
    assert (raw[0] & 15) * 4 == 20 + len(options) + (-len(options) % 4)
    pkt = decode(DLT_EN10MB, raw)
    assert (pkt.sport, pkt.dport, pkt.payload) == (1000, 2000, b"abc")


@pytest.mark.parametrize("padding", [b"\0", b"\xaa\x55"])
def test_ethernet_padding_is_trimmed(padding):
    raw = udp(V4[0], 1, V4[1], 2, b"hi")  # 30 bytes of IP, 44 of frame
    frame = link(DLT_EN10MB, raw, pad=True)
    assert len(frame) == 60
    if padding != b"\0":
        frame = frame[: 14 + len(raw)] + (padding * 10)[: 60 - 14 - len(raw)]
    assert PacketDecoder(DLT_EN10MB).decode(frame, 0).payload == b"hi"
    # IPv6 too: the payload length bounds the packet.
    raw6 = udp(V6[0], 1, V6[1], 2, b"hi")
    assert PacketDecoder(DLT_EN10MB).decode(link(DLT_EN10MB, raw6) + b"\0" * 6, 0).payload == b"hi"


def test_udp_length_bounds_payload():
    l4 = struct.pack("!HHHH", 1, 2, 8 + 2, 0) + b"okEXTRA"
    assert decode(DLT_RAW, ip_packet(V4[0], V4[1], 17, l4)).payload == b"ok"


def test_zero_ip_length_from_segmentation_offload():
    raw = bytearray(tcp(V4[0], 5060, V4[1], 5060, b"x" * 3000, seq=1))
    raw[2:4] = b"\0\0"
    d = PacketDecoder(DLT_RAW)
    assert d.decode(bytes(raw), 0).payload == b"x" * 3000
    raw6 = bytearray(tcp(V6[0], 5060, V6[1], 5060, b"y" * 60000, seq=1))
    raw6[4:6] = b"\0\0"
    assert d.decode(bytes(raw6), 0).payload == b"y" * 60000
    assert d.stats["ip_len_zero"] == 2


@pytest.mark.parametrize("ext", [(0,), (60,), (43,), (44,), (0, 60, 43, 60), (0, 44, 60)])
@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_ipv6_extension_headers(ext, proto):
    if proto == "udp":
        raw = udp(V6[0], 1, V6[1], 2, b"payload", ext=ext)
    else:
        raw = tcp(V6[0], 1, V6[1], 2, b"payload", seq=5, ext=ext)
    assert raw[6] == ext[0]
    pkt = decode(DLT_EN10MB, raw)
    assert pkt.proto == (17 if proto == "udp" else 6) and pkt.payload == b"payload"


def test_ipv6_authentication_header():
    l4 = struct.pack("!HHHH", 7, 8, 9, 0) + b"A"
    ah = struct.pack("!BBHII", 17, 4, 0, 0x100, 1) + bytes(12)  # (4 + 2) * 4 = 24 bytes
    raw = ip_packet(V6[0], V6[1], 51, ah + l4)
    assert decode(DLT_RAW, raw).payload == b"A"


def test_accepts_bytearray_and_memoryview():
    frame = link(DLT_EN10MB, udp(V4[0], 1, V4[1], 2, b"m"))
    d = PacketDecoder(DLT_EN10MB)
    for data in (bytearray(frame), memoryview(frame)):
        pkt = d.decode(data, 0)
        assert type(pkt.src) is bytes and pkt.payload == b"m"


# -- fragments -------------------------------------------------------------------

BIG = bytes(range(256)) * 12  # 3072 bytes


def _orders(frags, how):
    if how == "in_order":
        return list(frags)
    if how == "reversed":
        return frags[::-1]
    if how == "shuffled":
        shuffled = list(frags)
        random.Random(7).shuffle(shuffled)
        return shuffled
    if how == "duplicated":
        return [f for f in frags for _ in range(2)][:-1]  # last one once
    if how == "dup_reversed":
        return frags[::-1] + frags[1:-1]
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["in_order", "reversed", "shuffled", "duplicated", "dup_reversed"])
@pytest.mark.parametrize("fam", ["v4", "v6"])
@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_fragments_reassemble_in_any_order(how, fam, proto):
    src, dst = FAMILIES[fam]
    if proto == "udp":
        raw = udp(src, 5060, dst, 5060, BIG, ident=0x1234)
    else:
        raw = tcp(src, 5060, dst, 5060, BIG, seq=1234, ident=0x1234)
    frags = fragment(raw, 500)
    assert len(frags) >= 7
    d = PacketDecoder(DLT_EN10MB)
    order = _orders(frags, how)
    results = [d.decode(link(DLT_EN10MB, f, vlans=(5,)), float(i)) for i, f in enumerate(order)]
    packets = [r for r in results if r is not None]
    assert len(packets) == 1
    # Released exactly when the last missing piece arrived.
    first_complete = max(order.index(f) for f in frags)
    assert results[first_complete] is packets[0]
    assert packets[0].payload == BIG and packets[0].dport == 5060 and packets[0].src == packed(src)
    assert d.stats["reassembled"] == 1
    assert d.stats["fragments"] == len(order)
    if how == "duplicated":
        assert d.stats["frag_overlaps"] == len(frags) - 1
    if how == "dup_reversed":
        # Copies arriving after completion start a new, incomplete datagram.
        assert d.pending_fragments == 1 and d.stats["frag_overlaps"] == 0
    else:
        assert d.pending_fragments == 0


@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_overlapping_fragments_from_two_mtus(fam):
    src, dst = FAMILIES[fam]
    raw = udp(src, 1, dst, 2, BIG)
    small, large = fragment(raw, 600), fragment(raw, 1000)
    d = PacketDecoder(DLT_RAW)
    got = [d.decode(f, 0) for f in [small[0], large[1], small[3], large[3], small[-1], large[2], large[0], large[-1]]]
    packets = [p for p in got if p is not None]
    assert len(packets) == 1 and packets[0].payload == BIG
    assert d.stats["frag_overlaps"] > 0


def test_overlap_keeps_the_bytes_that_arrived_first():
    l4 = struct.pack("!HHHH", 1, 2, 8 + 16, 0) + b"A" * 16
    raw = ip_packet(V4[0], V4[1], 17, l4, ident=9)
    first, second = fragment(raw, 20 + 16)  # 16 + 8 bytes
    forged = bytearray(second)
    forged[2:4] = struct.pack("!H", 20 + 16)
    forged[6:8] = struct.pack("!H", 1)  # offset 8, last
    forged = bytes(forged[:20]) + b"B" * 16
    d = PacketDecoder(DLT_RAW)
    assert d.decode(first, 0) is None
    pkt = d.decode(forged, 0)
    assert pkt.payload == b"A" * 8 + b"B" * 8


def test_ipv6_fragments_with_unfragmentable_and_fragmentable_headers():
    raw = udp(V6[0], 1, V6[1], 2, BIG, ext=(0, 60))
    frags = fragment(raw, 700)
    assert frags[0][6] == 0 and frags[0][40] == 44  # hop-by-hop, then the fragment header
    d = PacketDecoder(DLT_IPV6)
    out = [d.decode(f, 0) for f in reversed(frags)]
    assert out[-1].payload == BIG and out[:-1] == [None] * (len(frags) - 1)


@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_incomplete_fragments_expire(fam):
    src, dst = FAMILIES[fam]
    frags = fragment(udp(src, 1, dst, 2, BIG), 800)
    d = PacketDecoder(DLT_RAW, frag_timeout=10.0)
    for f in frags[:-1]:
        assert d.decode(f, 100.0) is None
    assert d.pending_fragments == 1
    d.decode(udp(src, 1, dst, 2, b"other"), 109.9)
    assert d.pending_fragments == 1 and d.stats["frag_timeouts"] == 0
    assert d.decode(udp(src, 1, dst, 2, b"other"), 110.0).payload == b"other"
    assert d.pending_fragments == 0 and d.stats["frag_timeouts"] == 1
    # The late last fragment starts a new buffer and completes nothing.
    assert d.decode(frags[-1], 110.5) is None
    assert d.pending_fragments == 1
    d.expire(121.0)
    assert d.pending_fragments == 0 and d.stats["frag_timeouts"] == 2


def test_fragment_buffers_are_bounded():
    d = PacketDecoder(DLT_RAW, max_frag_buffers=2)
    sets = [fragment(udp(V4[0], 1, V4[1], 2, BIG, ident=i), 1000) for i in range(3)]
    for i, frags in enumerate(sets):
        assert d.decode(frags[0], float(i)) is None
    assert d.pending_fragments == 2 and d.stats["frag_evicted"] == 1
    # The oldest (ident 0) was evicted: its other fragments no longer complete it.
    assert [d.decode(f, 3.0) for f in sets[0][1:]] == [None] * (len(sets[0]) - 1)
    last = [d.decode(f, 3.0) for f in sets[2][1:]]
    assert last[-1].payload == BIG


def test_fragments_of_different_datagrams_do_not_mix():
    a = fragment(udp(V4[0], 1, V4[1], 2, BIG, ident=1), 1000)
    b = fragment(udp(V4[0], 1, V4[1], 2, BIG[::-1], ident=2), 1000)
    d = PacketDecoder(DLT_RAW)
    out = [d.decode(f, 0) for pair in zip(a, b) for f in pair]
    packets = [p for p in out if p is not None]
    assert [p.payload for p in packets] == [BIG, BIG[::-1]]


def test_inconsistent_fragments_are_ignored():
    frags = fragment(udp(V4[0], 1, V4[1], 2, BIG), 1000)
    d = PacketDecoder(DLT_RAW)
    assert d.decode(frags[-1], 0) is None
    # A second "last" fragment ending elsewhere contradicts the first.
    bogus = bytearray(frags[1])
    bogus[6:8] = struct.pack("!H", struct.unpack("!H", bytes(bogus[6:8]))[0] & 0x1FFF)
    assert d.decode(bytes(bogus), 0) is None
    assert d.stats["frag_invalid"] == 1
    # Past 65535 bytes (ping of death).
    huge = bytearray(frags[1])
    huge[6:8] = struct.pack("!H", 0x2000 | 8190)
    assert d.decode(bytes(huge), 0) is None
    assert d.stats["frag_invalid"] == 2
    assert [d.decode(f, 0) for f in frags[:-1]][-1].payload == BIG


# -- malformed input ---------------------------------------------------------------


def _v4(proto=17, l4=b"", **kw):
    return ip_packet(V4[0], V4[1], proto, l4, **kw)


def _patch(data, offset, fmt, *values):
    b = bytearray(data)
    struct.pack_into(fmt, b, offset, *values)
    return bytes(b)


GOOD4 = udp(V4[0], 1, V4[1], 2, b"abcde")  # 33 bytes
GOOD6 = udp(V6[0], 1, V6[1], 2, b"abcde")  # 53 bytes
TCP4 = tcp(V4[0], 1, V4[1], 2, b"abcde", seq=1)

MALFORMED = [
    (DLT_EN10MB, bytes(13), "Ethernet header truncated"),
    (DLT_EN10MB, bytes(12) + b"\x81\x00\x00", "VLAN tag truncated"),
    (DLT_EN10MB, bytes(12) + b"\x88\xa8\x00\x01\x81\x00", "VLAN tag truncated"),
    (DLT_LINUX_SLL, bytes(15), "Linux cooked header truncated"),
    (DLT_LINUX_SLL2, bytes(19), "Linux cooked v2 header truncated"),
    (DLT_NULL, b"\x02\x00\x00", "loopback header truncated"),
    (DLT_LOOP, b"", "loopback header truncated"),
    (DLT_RAW, b"", "IP header truncated"),
    (DLT_RAW, b"\x50" + bytes(30), "bad IP version 5"),
    (DLT_RAW, GOOD4[:19], "IPv4 header truncated"),
    (DLT_EN10MB, link(DLT_EN10MB, GOOD4)[:30], "IPv4 header truncated"),
    (DLT_IPV4, GOOD6, "IPv4 header has version 6"),
    (DLT_RAW, _patch(GOOD4, 0, "!B", 0x44), "IPv4 header length 16 is less than 20"),
    (DLT_RAW, _patch(GOOD4, 0, "!B", 0x4F)[:40], "IPv4 options truncated"),
    (DLT_RAW, _patch(GOOD4, 2, "!H", 10), "IPv4 total length 10 is less than header length 20"),
    (DLT_RAW, GOOD4[:28], "IPv4 packet truncated: total length 33, 28 bytes captured"),
    (DLT_RAW, GOOD6[:39], "IPv6 header truncated"),
    (DLT_IPV6, GOOD4 + bytes(20), "IPv6 header has version 4"),
    (DLT_RAW, GOOD6[:50], "IPv6 packet truncated: payload length 13, 10 bytes captured"),
    (DLT_RAW, _v4(17, b"\0\1\0\2"), "UDP header truncated"),
    (DLT_RAW, _patch(GOOD4, 24, "!H", 4), "UDP length 4 is less than 8"),
    (DLT_RAW, _patch(GOOD4, 24, "!H", 100), "UDP length 100 exceeds 13 bytes of IP payload"),
    (DLT_RAW, _patch(GOOD6, 44, "!H", 14), "UDP length 14 exceeds 13 bytes of IP payload"),
    (DLT_RAW, _v4(6, bytes(19)), "TCP header truncated"),
    (DLT_RAW, _patch(TCP4, 32, "!B", 0x40), "TCP data offset 16 is less than 20"),
    (DLT_RAW, _patch(TCP4, 32, "!B", 0xF0), "TCP options truncated"),
    (DLT_RAW, ip_packet(V6[0], V6[1], 60, b"\x11\x00\x00"), "IPv6 extension header truncated"),
    (DLT_RAW, ip_packet(V6[0], V6[1], 0, b"\x11\x01" + bytes(10)), "IPv6 extension header truncated"),
    (DLT_RAW, ip_packet(V6[0], V6[1], 44, b"\x11\x00\x00"), "IPv6 fragment header truncated"),
]


@pytest.mark.parametrize("linktype,data,message", MALFORMED)
def test_malformed_messages(linktype, data, message):
    d = PacketDecoder(linktype)
    with pytest.raises(MalformedPacket) as exc:
        d.decode(data, 0)
    assert str(exc.value) == message
    assert d.stats["malformed"] == 1


def test_malformed_reassembled_datagram():
    # A UDP length that only turns out wrong once the datagram is whole.
    raw = _patch(udp(V4[0], 1, V4[1], 2, BIG), 24, "!H", 60000)
    frags = fragment(raw, 1000)
    d = PacketDecoder(DLT_RAW)
    for f in frags[:-1]:
        assert d.decode(f, 0) is None
    with pytest.raises(MalformedPacket, match="^UDP length 60000 exceeds 3080 bytes of IP payload$"):
        d.decode(frags[-1], 0)
    assert d.pending_fragments == 0


def _valid_samples():
    out = []
    for lt, fam in LINK_FAMILY:
        src, dst = FAMILIES[fam]
        vlans = (3, 4) if lt == DLT_EN10MB else ()
        out.append((lt, link(lt, udp(src, 1, dst, 2, b"fuzz" * 5), vlans=vlans)))
        out.append((lt, link(lt, tcp(src, 1, dst, 2, b"fuzz", seq=3, tcp_options=b"\x01" * 4))))
    out.append((DLT_RAW, udp(V6[0], 1, V6[1], 2, b"ext", ext=(0, 60, 43, 44))))
    out.append((DLT_RAW, _v4(17, struct.pack("!HHHH", 1, 2, 9, 0) + b"o", options=b"\x94\x04\0\0")))
    for f in fragment(udp(V4[0], 1, V4[1], 2, BIG[:300]), 100) + fragment(udp(V6[0], 1, V6[1], 2, BIG[:300]), 120):
        out.append((DLT_RAW, f))
    for kind in TUNNELS:
        out.append((DLT_EN10MB, link(DLT_EN10MB, tunnel(kind, udp(V4[0], 1, V4[1], 2, b"fuzz" * 5)))))
        out.append((DLT_RAW, tunnel(kind, tcp(V6[0], 1, V6[1], 2, b"fuzz", seq=3))))
    return out


def test_fuzz_only_packet_none_or_malformed():
    rng = random.Random(1234)
    samples = _valid_samples()
    decoders = {lt: PacketDecoder(lt, max_frag_buffers=16) for lt in ALL_LINKTYPES}
    seen = {"packet": 0, "none": 0, "malformed": 0}

    def check(lt, data, now):
        try:
            result = decoders[lt].decode(data, now)
        except MalformedPacket:
            seen["malformed"] += 1
            return
        assert result is None or isinstance(result, Packet)
        seen["packet" if result is not None else "none"] += 1

    now = 0.0
    for _ in range(3000):
        now += 0.05
        lt, data = rng.choice(samples)
        kind = rng.randrange(4)
        if kind == 0:  # truncation
            data = data[: rng.randrange(len(data) + 1)]
        elif kind == 1:  # flipped bytes in the headers
            b = bytearray(data)
            for _ in range(rng.randrange(1, 4)):
                i = rng.randrange(min(len(b), 80))
                b[i] = rng.randrange(256)
            data = bytes(b)
        elif kind == 2:  # random bytes, sometimes with a valid link header
            data = data[: rng.randrange(0, 24)] + rng.randbytes(rng.randrange(0, 120))
        check(lt, data, now)
    for lt in ALL_LINKTYPES:
        for n in range(0, 70):
            check(lt, bytes(n), now)
            check(lt, b"\xff" * n, now)
            check(lt, b"\x45" * n, now)
            check(lt, b"\x60" * n, now)
    assert all(seen.values()), seen


def test_vxlan_decapsulated():
    """Cloud mirroring (AWS VPC Traffic Mirroring) wraps copies in VXLAN on UDP 4789."""
    inner = link(DLT_EN10MB, udp("10.0.0.1", 4000, "10.0.0.2", 5000, b"\x80\x08" + b"\x00" * 170))
    vxlan = b"\x08\x00\x00\x00" + (1234).to_bytes(3, "big") + b"\x00" + inner
    outer = link(DLT_EN10MB, udp("172.31.0.5", 55000, "172.31.0.9", 4789, vxlan))
    d = PacketDecoder(DLT_EN10MB)
    p = d.decode(outer, 1.0)
    assert (p.sport, p.dport, p.payload[:2]) == (4000, 5000, b"\x80\x08")
    assert socket.inet_ntop(socket.AF_INET, p.src) == "10.0.0.1"
    assert d.stats["vxlan"] == 1
    # not VXLAN (I flag clear): left as the outer UDP datagram
    p = d.decode(link(DLT_EN10MB, udp("172.31.0.5", 55000, "172.31.0.9", 4789, b"\x00" * 30)), 1.0)
    assert p.dport == 4789


# -- tunnels: GRE, ERSPAN, IP in IP ----------------------------------------------------


TUNNEL_STAT = {"gre": "gre", "gre-key-seq-csum": "gre", "gretap": "gre", "gre6": "gre", "erspan1": "erspan",
               "erspan2": "erspan", "erspan3": "erspan", "erspan3-sub": "erspan", "ip6erspan2": "erspan",
               "ipip": "ipip", "ipip6": "ipip", "gre-in-gre": "gre"}


@pytest.mark.parametrize("fam", ["v4", "v6"])
@pytest.mark.parametrize("kind", TUNNELS)
@pytest.mark.parametrize("linktype", [DLT_EN10MB, DLT_LINUX_SLL2, DLT_RAW])
def test_tunnels_decapsulated(kind, fam, linktype):
    src, dst = FAMILIES[fam]
    d = PacketDecoder(linktype)
    p = d.decode(link(linktype, tunnel(kind, udp(src, 4000, dst, 5000, RTP))), 1.0)
    assert p == Packet(17, packed(src), 4000, packed(dst), 5000, RTP, 0, 0)
    p = d.decode(link(linktype, tunnel(kind, tcp(src, 5060, dst, 5061, b"SIP", seq=77, flags="PA"))), 1.0)
    assert (p.proto, p.src, p.sport, p.dport, p.payload, p.tcp_seq) == (6, packed(src), 5060, 5061, b"SIP", 77)
    assert d.stats[TUNNEL_STAT[kind]] == (4 if kind == "gre-in-gre" else 2)
    assert d.stats["malformed"] == d.stats["tunnel_other"] == d.stats["tunnel_too_deep"] == 0


def test_tunnel_carrying_a_fragmented_datagram_and_a_fragmented_tunnel():
    inner = udp(V4[0], 4000, V4[1], 5000, BIG[:3000])
    d = PacketDecoder(DLT_EN10MB)
    # the inner datagram fragmented before it went into the tunnel
    out = [d.decode(link(DLT_EN10MB, tunnel("erspan2", f)), 1.0) for f in fragment(inner, 1400)]
    assert out[:-1] == [None, None] and out[-1].payload == BIG[:3000]
    # the outer packet fragmented on its way
    out = [d.decode(link(DLT_EN10MB, f), 1.0) for f in fragment(tunnel("gre", inner), 1400)]
    assert out[:-1] == [None, None] and out[-1].payload == BIG[:3000]
    assert d.stats["reassembled"] == 2


def test_vxlan_inside_gre_and_gre_inside_vxlan():
    inner = udp(V4[0], 4000, V4[1], 5000, RTP)
    vx = udp("172.31.0.5", 55000, "172.31.0.9", 4789, b"\x08\0\0\0\0\0\x01\0" + ethernet(tunnel("gre", inner)))
    d = PacketDecoder(DLT_EN10MB)
    assert d.decode(link(DLT_EN10MB, vx), 1.0).payload == RTP
    assert d.decode(link(DLT_EN10MB, tunnel("gre", vx)), 1.0).payload == RTP
    assert (d.stats["vxlan"], d.stats["gre"]) == (2, 3)


def test_tunnels_nest_at_most_max_tunnels_deep():
    from rtp2ws.net.packet import MAX_TUNNELS
    pkt = udp(V4[0], 4000, V4[1], 5000, RTP)
    for _ in range(MAX_TUNNELS):
        pkt = gre("198.18.0.1", "198.18.0.2", pkt)
    d = PacketDecoder(DLT_RAW)
    assert d.decode(pkt, 0).payload == RTP
    assert d.decode(ipip("198.18.0.3", "198.18.0.4", pkt), 0) is None
    assert d.stats["tunnel_too_deep"] == 1 and d.stats["ipip"] == 1 and d.stats["gre"] == 2 * MAX_TUNNELS - 1


def _gre_raw(body: bytes) -> bytes:
    return ip_packet("203.0.113.1", "203.0.113.2", 47, body)


ETH = ethernet(udp(V4[0], 4000, V4[1], 5000, RTP))


@pytest.mark.parametrize("body,stat", [
    (struct.pack("!HH", 0x0001, 0x880B) + b"\0" * 4 + ETH, "tunnel_other"),     # version 1: PPTP's enhanced GRE
    (struct.pack("!HH", 0x4000, 0x0800) + b"\0" * 8, "tunnel_other"),           # RFC 1701 source routing
    (struct.pack("!HH", 0, 0x8847) + b"\0" * 8, "tunnel_other"),                # MPLS: not decoded
    (struct.pack("!HHHHI", 0x1000, 0x88BE, 0, 3 << 12, 0) + b"\0" * 4 + ETH, "tunnel_other"),  # ERSPAN version 3
    (struct.pack("!HHI", 0x1000, 0x22EB, 0) + struct.pack("!HHIHH", 2 << 12, 1, 0, 0, 2 << 10) + ETH[14:],
     "tunnel_other"),                                                         # ERSPAN III frame type 2 (IP)
    (struct.pack("!HH", 0x6558, 0x0806) + b"\0" * 28, "tunnel_other"),          # flags nonsense: ptype ARP
])
def test_tunnel_payloads_not_decoded_are_counted(body, stat):
    d = PacketDecoder(DLT_RAW)
    assert d.decode(_gre_raw(body), 0) is None
    assert d.stats[stat] == 1 and d.stats["malformed"] == 0


def test_non_ip_inside_gretap_is_non_ip():
    arp = bytes(6) + bytes(6) + b"\x08\x06" + bytes(28)
    d = PacketDecoder(DLT_RAW)
    assert d.decode(_gre_raw(struct.pack("!HH", 0, 0x6558) + arp), 0) is None
    assert d.stats["non_ip"] == 1 and d.stats["gre"] == 1


@pytest.mark.parametrize("body,message", [
    (b"\0\0\x08", "GRE header truncated"),
    (struct.pack("!HH", 0xB000, 0x0800) + b"\0" * 8, "GRE header truncated"),           # C, K, S: 12 bytes more
    (struct.pack("!HHI", 0x1000, 0x88BE, 1) + b"\x10\0\0", "ERSPAN header truncated"),
    (struct.pack("!HHI", 0x1000, 0x22EB, 1) + struct.pack("!HHI", 2 << 12, 1, 0), "ERSPAN header truncated"),
    (struct.pack("!HHI", 0x1000, 0x22EB, 1) + struct.pack("!HHIHH", 2 << 12, 1, 0, 0, 1) + b"\0" * 7,
     "ERSPAN platform subheader truncated"),
    (struct.pack("!HH", 0, 0x0800) + b"\x45\0\0", "IPv4 header truncated"),
    (struct.pack("!HH", 0, 0x88BE) + ETH[:12], "Ethernet header truncated"),
])
def test_truncated_tunnel_headers_are_malformed(body, message):
    d = PacketDecoder(DLT_RAW)
    with pytest.raises(MalformedPacket, match=f"^{message}$"):
        d.decode(_gre_raw(body), 0)
    assert d.stats["malformed"] == 1


def test_erspan_type_follows_the_header_version_as_wireshark_reads_it():
    """0x88BE with the S bit carries a header whose version says its size (a type III
    header there is read as one); 0x22EB always carries one."""
    def ptype(pkt: bytes, value: int) -> bytes:     # the GRE protocol type after a 20-byte IPv4 header
        return pkt[:22] + struct.pack("!H", value) + pkt[24:]

    d = PacketDecoder(DLT_RAW)
    for pkt in (ptype(erspan(*netgen.OUTER_V4, ETH, kind=3), 0x88BE), ptype(erspan(*netgen.OUTER_V4, ETH, kind=2),
                                                                            0x22EB),
                erspan(*netgen.OUTER_V4, ETH, kind=3, subheader=True, vlan=100)):
        assert d.decode(pkt, 0).payload == RTP
    assert d.stats["erspan"] == 3


# -- fragment floods ---------------------------------------------------------------

_FLOOD_HDR = struct.Struct("!BBHHHBBH4s4s")


def _flood(n, keys=4096, big_every=0):
    """``n`` IPv4 fragments with MF set, round-robin over ``keys`` datagrams,
    each at the next free offset past 0: none ever completes, and every
    datagram keeps growing (the worst case for per-datagram buffers).  They
    carry 8 bytes, or 1440 for every ``big_every``-th one."""
    src, dst = packed("203.0.113.7"), packed("203.0.113.8")
    offset = [1] * keys
    for i in range(n):
        size = 1440 if big_every and i % big_every == 0 else 8
        k = i % keys
        if offset[k] + size // 8 > 8190:
            offset[k] = 1
        yield _FLOOD_HDR.pack(0x45, 0, 20 + size, k, 0x2000 | offset[k], 64, 17, 0, src, dst) + b"\xaa" * size
        offset[k] += size // 8


SIP_INVITE = (b"INVITE sip:2000@198.51.100.20 SIP/2.0\r\nCall-ID: after-the-flood\r\n"
              + b"X-Padding: " + b"p" * 3000 + b"\r\n\r\n")


def _real_datagrams():
    """A fragmented SIP INVITE over IPv4 and over IPv6, as a 1500-byte MTU cuts it."""
    out = []
    for src, dst in (V4, V6):
        frags = fragment(udp(src, 5060, dst, 5060, SIP_INVITE, ident=77), 1500, ident=77)
        assert len(frags) == 3
        out.append(frags)
    return out


@pytest.mark.parametrize("n,big_every,limit", [(60_000, 0, 6_000_000), (30_000, 3, 10_000_000)],
                         ids=["8-byte", "mixed"])
def test_fragment_flood_memory_is_bounded(n, big_every, limit):
    """A flood of fragments spread over 4096 growing datagrams (60,000 of 8 bytes,
    about 10 MB held without global bounds; or 30,000 of which a third carry 1440
    bytes, about 18 MB) stays within the decoder's default bounds: the
    tracemalloc peak of the whole flood stays under 6 MB (8-byte) or 10 MB (4 MiB
    of payload held, plus overhead).  A fragmented SIP INVITE sent during the
    flood and after it still reassembles."""
    import tracemalloc

    d = PacketDecoder(DLT_RAW)
    real = _real_datagrams()
    during = []
    mid = n // 2
    tracemalloc.start()
    try:
        for i, frame in enumerate(_flood(n, big_every=big_every)):
            d.decode(frame, i * 1e-4)  # at most 10 s in all: nothing expires
            if mid <= i < mid + 300 and i % 100 == 0:  # one real fragment every 100 flood fragments
                during.append(d.decode(real[0][(i - mid) // 100], i * 1e-4))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < limit, peak
    pieces, size = d.held_fragments
    assert pieces <= d.max_frag_fragments == 8192 and size <= d.max_frag_bytes == 4 << 20
    assert d.pending_fragments <= d.max_frag_buffers == 4096
    st = d.stats
    assert st["fragments"] == n + 3 and st["reassembled"] == 1
    # Every flood fragment is either held or was dropped with its datagram.
    assert st["frag_dropped"] + pieces == n and st["frag_evicted"] > 0
    assert during[:2] == [None, None] and during[2].payload == SIP_INVITE and during[2].src == packed(V4[0])
    # After the flood: both families.
    for frags in real:
        out = [d.decode(f, 10.0) for f in frags]
        assert out[:2] == [None, None] and out[2].payload == SIP_INVITE and out[2].dport == 5060
    assert st["reassembled"] == 3


def test_fragment_bounds_evict_the_oldest_datagrams():
    d = PacketDecoder(DLT_RAW, max_frag_fragments=7)
    sets = [fragment(udp(V4[0], 1, V4[1], 2, BIG, ident=i), 500) for i in range(4)]
    assert len(sets[0]) == 7 and len(sets[0][0]) == 500
    for i in range(4):  # two fragments of each of four datagrams: 8 > 7
        assert d.decode(sets[i][0], float(i)) is None
        assert d.decode(sets[i][1], float(i)) is None
    assert d.held_fragments == (6, 6 * 480)
    assert d.pending_fragments == 3 and d.stats["frag_evicted"] == 1 and d.stats["frag_dropped"] == 2
    assert d.frag_deadline == 1.0 + 30.0  # the oldest left is ident 1
    # Ident 0 is gone: the rest of it completes nothing, and makes room for its
    # 5 fragments by evicting idents 1 and 2.
    assert [d.decode(f, 4.0) for f in sets[0][2:]] == [None] * 5
    assert d.stats["frag_evicted"] == 3 and d.pending_fragments == 2 and d.held_fragments[0] == 7
    # Ident 3 still completes, evicting what is left of ident 0.
    out = [d.decode(f, 5.0) for f in sets[3][2:]]
    assert out[-1].payload == BIG and out[:-1] == [None] * 4
    assert d.stats["reassembled"] == 1 and d.stats["frag_evicted"] == 4
    assert d.pending_fragments == 0 and d.held_fragments == (0, 0)
    assert d.stats["frag_dropped"] == d.stats["fragments"] - 7


def test_fragment_byte_bound():
    d = PacketDecoder(DLT_RAW, max_frag_bytes=2000)
    a = fragment(udp(V4[0], 1, V4[1], 2, BIG, ident=1), 1000)  # 976 + 976 + 976 + 152 bytes
    b = fragment(udp(V4[0], 1, V4[1], 2, BIG[::-1], ident=2), 1000)
    assert d.decode(a[0], 0) is None and d.decode(a[1], 0) is None
    assert d.held_fragments == (2, 1952)
    assert d.decode(b[0], 1) is None  # 2928 > 2000: ident 1 goes
    assert d.held_fragments == (1, 976) and d.stats["frag_evicted"] == 1 and d.stats["frag_dropped"] == 2
    # A datagram bigger than the bound on its own is dropped when it outgrows it.
    assert [d.decode(f, 2) for f in b[1:]] == [None] * 3
    assert d.stats["frag_evicted"] == 2 and d.stats["frag_dropped"] == 5
    assert d.pending_fragments == 1 and d.held_fragments == (1, 152)  # its last fragment started over
    small = fragment(udp(V4[0], 1, V4[1], 2, BIG[:1500], ident=3), 1000)
    assert [d.decode(f, 3) for f in small][-1].payload == BIG[:1500]


def test_fragment_totals_follow_overlaps_expiry_and_completion():
    raw = udp(V4[0], 1, V4[1], 2, BIG)
    small, large = fragment(raw, 600), fragment(raw, 1000)
    d = PacketDecoder(DLT_RAW, frag_timeout=5.0)
    assert d.decode(small[0], 0) is None and d.decode(large[0], 0) is None
    # Only the bytes not held yet are kept: 576, then 976 - 576 more.
    assert d.held_fragments == (2, 976) and d.stats["frag_overlaps"] == 1
    assert d.decode(large[0], 0) is None  # a duplicate keeps nothing
    assert d.held_fragments == (2, 976)
    d.expire(5.0)
    assert d.pending_fragments == 0 and d.held_fragments == (0, 0) and d.stats["frag_timeouts"] == 1
    assert [d.decode(f, 6.0) for f in large][-1].payload == BIG
    assert d.held_fragments == (0, 0)


def test_fragment_bounds_are_validated():
    for name in ("max_frag_buffers", "max_frag_fragments", "max_frag_bytes"):
        with pytest.raises(ValueError, match=f"^{name} must be at least 1$"):
            PacketDecoder(DLT_RAW, **{name: 0})


class _TooManyLines(AssertionError):
    pass


def _count_lines(fn, budget):
    """Python lines executed by ``fn()`` in rtp2ws/net/packet.py: an operation count
    that does not depend on the clock.  Stops ``fn`` past ``budget`` lines."""
    import sys

    import rtp2ws.net.packet as mod

    target = mod.__file__
    count = 0

    def local(frame, event, arg):
        nonlocal count
        if event == "line":
            count += 1
            if count > budget:
                raise _TooManyLines(f"more than {budget} lines")
        return local

    def tracer(frame, event, arg):
        return local if frame.f_code.co_filename == target else None

    sys.settrace(tracer)
    try:
        result = fn()
    finally:
        sys.settrace(None)
    return count, result


@pytest.mark.parametrize("how", ["in_order", "reversed", "shuffled", "odd_then_even", "pieces_then_whole"])
@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_reassembly_cost_is_linear_in_fragments(how, fam):
    """A 16 KB datagram in 8-byte fragments (about 2000) costs at most 200 decoder
    lines per fragment (about 90 measured) in any order: the held ranges are
    found by bisection and merged, never walked from the start (which cost
    thousands of lines per fragment, and a 64 KB datagram of 8-byte fragments
    about a second)."""
    src, dst = FAMILIES[fam]
    payload = bytes(range(256)) * 64
    raw = udp(src, 5060, dst, 5060, payload)
    frags = fragment(raw, 28 if fam == "v4" else 56)
    n = len(frags)
    assert n >= 2000
    if how == "odd_then_even":
        order = frags[1::2] + frags[0::2]
    elif how == "pieces_then_whole":
        # Every other piece, then one fragment overlapping all of them and the
        # holes between (it brings about 1000 pieces of new bytes at once).
        big = fragment(raw, len(raw) - 8)
        assert len(big) == 2 and len(big[0]) > len(raw) - 100
        order = frags[1::2] + [big[0], frags[-1]]
    else:
        order = _orders(frags, how)
    d = PacketDecoder(DLT_RAW)
    lines, out = _count_lines(lambda: [d.decode(f, 0.0) for f in order], budget=200 * len(order))
    done = [p for p in out if p is not None]
    assert len(done) == 1 and done[0].payload == payload and d.pending_fragments == 0



def test_random_overlapping_fragments_keep_the_first_bytes():
    """Against a byte-by-byte model: random overlapping fragments (offsets in
    8-byte units, any length), each with its own content; every byte of the
    reassembled datagram comes from the first fragment that covered it."""
    rnd = random.Random(11)
    src, dst = packed(V4[0]), packed(V4[1])
    for trial in range(300):
        total = 8 * rnd.randint(2, 60) + rnd.randint(9, 15)  # not a multiple of 8: only a last fragment ends there
        model = bytearray(total)
        have = [False] * total
        d = PacketDecoder(DLT_RAW)
        got = None
        sent = 0
        while got is None:
            start = 8 * rnd.randint(0, (total - 1) // 8)
            last = rnd.random() < 0.2 and start > 0  # offset 0 without MF is no fragment
            end = total if last else min(total, start + 8 * rnd.randint(1, 12))
            if end == total and not last:
                end = start + (end - start) // 8 * 8
                if end <= start:
                    continue
            body = bytes(rnd.getrandbits(8) for _ in range(end - start))
            if start == 0:  # a valid UDP header over the whole datagram
                body = struct.pack("!HHHH", 1, 2, total, 0) + body[8:]
            for k in range(start, end):
                if not have[k]:
                    have[k], model[k] = True, body[k - start]
            flags = (0 if end == total else 0x2000) | start // 8
            frame = _FLOOD_HDR.pack(0x45, 0, 20 + len(body), trial, flags, 64, 17, 0, src, dst) + body
            got = d.decode(frame, 0.0)
            sent += 1
            assert sent < 5000
            assert (got is None) == (not all(have)), trial
        assert got.payload == bytes(model[8:]), trial
        assert d.pending_fragments == 0 and d.held_fragments == (0, 0)


# -- tunnels as tshark reads them ----------------------------------------------------------

TSHARK = shutil.which("tshark")


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed (install.sh installs it)")
def test_tunnels_decode_as_tshark_reads_them(tmp_path):
    """Every tunnel, both inner families, over Ethernet and Linux cooked v2, carrying SIP
    over UDP and TCP and RTP: tshark (Wireshark's dissectors) finds the same innermost
    addresses, ports, payload and SIP method, and RTP sequence numbers, as the decoder."""
    sip = b"INVITE sip:2000@example.com SIP/2.0\r\nCall-ID: tunnel\r\nContent-Length: 0\r\n\r\n"
    rtp = bytes.fromhex("8000beef00000a0012345678") + b"\xd5" * 160
    cases = []
    for i, kind in enumerate(TUNNELS):
        for fam in ("v4", "v6"):
            src, dst = FAMILIES[fam]       # a TCP connection of its own each (else tshark sees retransmissions)
            cases += [udp(src, 5060, dst, 5060, sip), tcp(src, 6000 + i, dst, 5060, sip, seq=1000),
                      udp(src, 40000, dst, 40002, rtp)]
            cases[-3:] = [tunnel(kind, c) for c in cases[-3:]]
    expected = {}
    for linktype in (DLT_EN10MB, DLT_LINUX_SLL2):
        frames = [(i * 0.01, link(linktype, c)) for i, c in enumerate(cases)]
        path = tmp_path / f"tunnels-{linktype}.pcap"
        netgen.write_pcap(path, frames, linktype)
        out = subprocess.run([TSHARK, "-r", str(path), "-o", "rtp.heuristic_rtp:TRUE", "-T", "fields",
                              "-E", "occurrence=a", "-E", "aggregator=|", "-e", "frame.protocols", "-e", "ip.src",
                              "-e", "ip.dst", "-e", "ipv6.src", "-e", "ipv6.dst", "-e", "udp.srcport",
                              "-e", "udp.dstport", "-e", "tcp.srcport", "-e", "tcp.dstport", "-e", "sip.Method",
                              "-e", "rtp.seq", "-e", "_ws.malformed"],
                             capture_output=True, text=True, check=True).stdout.splitlines()
        assert len(out) == len(frames)
        d = PacketDecoder(linktype)
        for (ts, frame), line in zip(frames, out, strict=True):
            protos, ip_src, ip_dst, ip6_src, ip6_dst, usp, udp_, tsp, tdp, method, seq, bad = line.split("\t")
            assert not bad, line
            p = d.decode(frame, ts)
            # the innermost IP header is the last one tshark lists
            inner6 = [x for x in protos.split(":") if x in ("ip", "ipv6")][-1] == "ipv6"
            src, dst = (ip6_src, ip6_dst) if inner6 else (ip_src, ip_dst)
            got_src = socket.inet_ntop(socket.AF_INET6 if len(p.src) == 16 else socket.AF_INET, p.src)
            got_dst = socket.inet_ntop(socket.AF_INET6 if len(p.dst) == 16 else socket.AF_INET, p.dst)
            assert (got_src, got_dst) == (src.split("|")[-1], dst.split("|")[-1]), line
            sport, dport = (usp, udp_) if p.proto == 17 else (tsp, tdp)
            assert (str(p.sport), str(p.dport)) == (sport.split("|")[-1], dport.split("|")[-1]), line
            if p.payload.startswith(b"INVITE"):
                assert method == "INVITE", line
            else:
                assert int(seq) == int.from_bytes(p.payload[2:4], "big") == 0xBEEF, line
            expected[linktype] = expected.get(linktype, 0) + 1
    assert expected == {DLT_EN10MB: len(cases), DLT_LINUX_SLL2: len(cases)}
