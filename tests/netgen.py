"""Build packets and capture files for tests (slow path, test-only).

Headers are packed by hand with ``struct`` so the tests control every byte;
addresses are strings, and the IP version follows the family of ``src``.
IPv4/IPv6, UDP, Ethernet and the pcap format come from the package's one
packet builder (``rtp2ws.bench.netgen``, which the bench's captures use) and
are re-exported here; the link layers, TCP, fragments and pcapng that only
tests need are built here.
"""

from __future__ import annotations

import socket
import struct

from rtp2ws.bench.netgen import (  # noqa: F401  (re-exported: tests use netgen.udp, netgen._pack, ...)
    SRC_MAC,
    _ip_with_ext,
    _l4_checksum,
    _pack,
    chain_ext,
    checksum,
    ethernet,
    ip_packet,
    pcap_header,
    pcap_record,
    udp,
)
from rtp2ws.net.packet import (
    DLT_EN10MB,
    DLT_IPV4,
    DLT_IPV6,
    DLT_LINUX_SLL,
    DLT_LINUX_SLL2,
    DLT_LOOP,
    DLT_NULL,
    DLT_RAW,
    DLT_RAW_OPENBSD,
    LINKTYPE_RAW,
)

__all__ = [
    "checksum",
    "ip_packet",
    "chain_ext",
    "udp",
    "tcp",
    "fragment",
    "link",
    "gre",
    "erspan",
    "ipip",
    "tunnel",
    "TUNNELS",
    "write_pcap",
    "write_pcapng",
    "V4",
    "V6",
    "FAMILIES",
    "ALL_LINKTYPES",
    "LINK_FAMILY",
    "packed",
]

TCP_FLAG_BITS = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, "A": 0x10}


def tcp(
    src: str,
    sport: int,
    dst: str,
    dport: int,
    payload: bytes,
    *,
    seq: int,
    flags: str = "PA",
    ack: int = 0,
    tcp_options: bytes = b"",
    **kw,
) -> bytes:
    """A full IP packet carrying one TCP segment; ``flags`` from "SAFRP"."""
    bits = 0
    for f in flags:
        bits |= TCP_FLAG_BITS[f]
    tcp_options += b"\x01" * (-len(tcp_options) % 4)  # NOP padding
    hlen = 20 + len(tcp_options)
    l4 = (
        struct.pack("!HHIIBBHHH", sport, dport, seq % 2**32, ack, (hlen // 4) << 4, bits, 65535, 0, 0)
        + tcp_options
        + payload
    )
    csum = _l4_checksum(src, dst, 6, l4)
    l4 = l4[:16] + struct.pack("!H", csum) + l4[18:]
    return _ip_with_ext(src, dst, 6, l4, kw)


def fragment(ip_pkt: bytes, mtu: int, *, ident: int = 0x5EED) -> list[bytes]:
    """Split an IP packet into fragments of at most ``mtu`` bytes.

    IPv4: the header (options included) is repeated in every fragment.
    IPv6: hop-by-hop and routing headers stay in the unfragmentable part,
    a fragment header with ``ident`` is inserted after them.
    """
    version = ip_pkt[0] >> 4
    if version == 4:
        hlen = (ip_pkt[0] & 0x0F) * 4
        header, data = ip_pkt[:hlen], ip_pkt[hlen:]
        step = (mtu - hlen) // 8 * 8
        if step <= 0:
            raise ValueError("mtu too small")
        out = []
        for pos in range(0, len(data), step):
            chunk = data[pos : pos + step]
            more = pos + step < len(data)
            h = bytearray(header)
            struct.pack_into("!H", h, 2, hlen + len(chunk))
            struct.pack_into("!H", h, 6, (0x2000 if more else 0) | pos // 8)
            struct.pack_into("!H", h, 10, 0)
            struct.pack_into("!H", h, 10, checksum(bytes(h)))
            out.append(bytes(h) + chunk)
        return out
    # IPv6: find the end of the unfragmentable part.
    nh_pos, nh, off = 6, ip_pkt[6], 40
    while nh in (0, 43):
        nh_pos, nh, off = off, ip_pkt[off], off + (ip_pkt[off + 1] + 1) * 8
    unfrag, data = bytearray(ip_pkt[:off]), ip_pkt[off:]
    unfrag[nh_pos] = 44
    step = (mtu - len(unfrag) - 8) // 8 * 8
    if step <= 0:
        raise ValueError("mtu too small")
    out = []
    for pos in range(0, len(data), step):
        chunk = data[pos : pos + step]
        more = pos + step < len(data)
        h = bytearray(unfrag)
        struct.pack_into("!H", h, 4, len(unfrag) - 40 + 8 + len(chunk))
        out.append(bytes(h) + struct.pack("!BxHI", nh, pos | int(more), ident) + chunk)
    return out


def link(linktype: int, ip_pkt: bytes, *, vlans: tuple[int, ...] = (), pad: bool = False) -> bytes:
    """Wrap an IP packet in a link-layer header of ``linktype``.

    Ethernet takes 802.1Q tags from ``vlans`` (outer first; with more than one
    tag the outer uses TPID 0x88a8) and, with ``pad``, padding to the 60-byte
    minimum frame.  Linux cooked v1 takes them too (TPID 0x8100, after the
    header: where libpcap puts back a tag the kernel took off).  DLT_NULL writes the family little-endian, as a BSD or
    macOS host on x86 does.
    """
    v6 = ip_pkt[0] >> 4 == 6
    if linktype == DLT_EN10MB:
        return ethernet(ip_pkt, vlans=vlans, pad=pad)
    if linktype == DLT_LINUX_SLL:
        # libpcap puts the tag the kernel took off back after the header (tcpdump -i any)
        tags = b"".join(struct.pack("!HH", 0x8100, vid & 0x0FFF) for vid in vlans)
        proto = struct.pack("!H", 0x86DD if v6 else 0x0800)
        if tags:
            tags, proto = tags[2:] + proto, tags[:2]
        return struct.pack("!HHH8s", 0, 1, 6, SRC_MAC + b"\0\0") + proto + tags + ip_pkt
    if vlans:
        raise ValueError("VLAN tags need Ethernet or Linux cooked v1")
    if linktype == DLT_LINUX_SLL2:
        return struct.pack("!HHIHBB8s", 0x86DD if v6 else 0x0800, 0, 2, 1, 0, 6, SRC_MAC + b"\0\0") + ip_pkt
    if linktype in (DLT_RAW, DLT_RAW_OPENBSD, LINKTYPE_RAW, DLT_IPV4, DLT_IPV6):
        return ip_pkt
    if linktype == DLT_NULL:
        return struct.pack("<I", 30 if v6 else 2) + ip_pkt
    if linktype == DLT_LOOP:
        return struct.pack("!I", 24 if v6 else 2) + ip_pkt
    raise ValueError(f"no link header for link type {linktype}")


# -- tunnels: the outer IP packet around an inner IP packet or Ethernet frame ------------

OUTER_V4 = ("203.0.113.1", "203.0.113.2")
OUTER_V6 = ("2001:db8:ffff::1", "2001:db8:ffff::2")


def gre(src: str, dst: str, inner: bytes, *, ptype: int | None = None, key: int | None = None,
        seq: int | None = None, csum: bool = False) -> bytes:
    """An IP packet (protocol 47) with a GRE header (RFC 2784, key and sequence number
    per RFC 2890) around ``inner``: ``ptype`` defaults to the inner IP version's
    EtherType; the checksum, with ``csum``, covers the GRE header and payload."""
    if ptype is None:
        ptype = 0x86DD if inner[0] >> 4 == 6 else 0x0800
    flags = (0x8000 if csum else 0) | (0x2000 if key is not None else 0) | (0x1000 if seq is not None else 0)
    opt = b""
    if csum:
        opt += b"\0\0\0\0"
    if key is not None:
        opt += struct.pack("!I", key)
    if seq is not None:
        opt += struct.pack("!I", seq)
    body = struct.pack("!HH", flags, ptype) + opt + inner
    if csum:
        body = body[:4] + struct.pack("!H", checksum(body)) + body[6:]
    return ip_packet(src, dst, 47, body)


def erspan(src: str, dst: str, frame: bytes, *, kind: int, session: int = 7, seq: int = 1,
           vlan: int = 0, subheader: bool = False, frame_type: int = 0, version: int | None = None) -> bytes:
    """An ERSPAN copy of the Ethernet ``frame`` in GRE, as draft-foschiano-erspan and
    Wireshark have them: ``kind`` 1 (GRE 0x88BE, no sequence number, no header), 2 (0x88BE,
    S bit, 8-byte header, version 1) or 3 (0x22EB, S bit, 12-byte header, version 2, and
    with ``subheader`` the 8-byte platform subheader (platform 7) and the O bit)."""
    if kind == 1:
        return gre(src, dst, frame, ptype=0x88BE)
    if kind == 2:
        ver = 1 if version is None else version
        hdr = struct.pack("!HHI", ver << 12 | vlan, session & 0x3FF, 0x1234)
        return gre(src, dst, hdr + frame, ptype=0x88BE, seq=seq)
    ver = 2 if version is None else version
    word = (frame_type & 0x1F) << 10 | (1 if subheader else 0)
    hdr = struct.pack("!HHIHH", ver << 12 | vlan, session & 0x3FF, 0x00C0FFEE, 0, word)
    if subheader:
        hdr += struct.pack("!II", 7 << 26 | 0x42, 0x1)
    return gre(src, dst, hdr + frame, ptype=0x22EB, seq=seq)


def ipip(src: str, dst: str, inner: bytes) -> bytes:
    """IP in IP: ``inner`` (IPv4: protocol 4, IPv6: 41) in an IP packet from ``src``."""
    return ip_packet(src, dst, 41 if inner[0] >> 4 == 6 else 4, inner)


TUNNELS = ["gre", "gre-key-seq-csum", "gretap", "gre6", "erspan1", "erspan2", "erspan3", "erspan3-sub",
           "ip6erspan2", "ipip", "ipip6", "gre-in-gre"]


def tunnel(kind: str, ip_pkt: bytes) -> bytes:
    """``ip_pkt`` wrapped in the tunnel ``kind`` (one of ``TUNNELS``): the outer IP packet."""
    s4, d4 = OUTER_V4
    s6, d6 = OUTER_V6
    if kind == "gre":
        return gre(s4, d4, ip_pkt)
    if kind == "gre-key-seq-csum":
        return gre(s4, d4, ip_pkt, key=0xABCD, seq=99, csum=True)
    if kind == "gretap":
        return gre(s4, d4, ethernet(ip_pkt), ptype=0x6558, key=5)
    if kind == "gre6":
        return gre(s6, d6, ip_pkt)
    if kind.startswith("erspan") or kind.startswith("ip6erspan"):
        s, d = (s6, d6) if kind.startswith("ip6") else (s4, d4)
        return erspan(s, d, ethernet(ip_pkt), kind=int(kind.split("erspan")[1][0]), subheader=kind.endswith("-sub"))
    if kind == "ipip":
        return ipip(s4, d4, ip_pkt)
    if kind == "ipip6":
        return ipip(s6, d6, ip_pkt)
    if kind == "gre-in-gre":
        return gre(s4, d4, gre("198.18.0.1", "198.18.0.2", ip_pkt, key=1))
    raise ValueError(f"no tunnel {kind}")


def _file_linktype(linktype: int) -> int:
    # In files raw IP is LINKTYPE_RAW (101); libpcap maps it back to DLT_RAW.
    return LINKTYPE_RAW if linktype in (DLT_RAW, DLT_RAW_OPENBSD) else linktype


def write_pcap(path, frames: list[tuple[float, bytes]], linktype: int = 1, *, nanosecond: bool = False) -> None:
    """Write a classic little-endian pcap file (microsecond or nanosecond)."""
    scale = 1_000_000_000 if nanosecond else 1_000_000
    with open(path, "wb") as f:
        f.write(pcap_header(_file_linktype(linktype), nanosecond=nanosecond))
        for ts, frame in frames:
            f.write(pcap_record(round(ts * scale), frame, scale))


def _block(kind: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    length = 12 + len(body)
    return struct.pack("<II", kind, length) + body + struct.pack("<I", length)


def write_pcapng(path, frames: list[tuple[float, bytes]], linktype: int = 1) -> None:
    """Write a pcapng file: one section, one interface, enhanced packet blocks (µs)."""
    with open(path, "wb") as f:
        f.write(_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)))
        f.write(_block(0x00000001, struct.pack("<HHI", _file_linktype(linktype), 0, 262144)))
        for ts, frame in frames:
            ticks = round(ts * 1_000_000)
            body = struct.pack("<IIIII", 0, ticks >> 32, ticks & 0xFFFFFFFF, len(frame), len(frame)) + frame
            f.write(_block(0x00000006, body))


# -- the addresses and link types the decoders' tests run over ---------------------------

V4 = ("192.0.2.10", "198.51.100.20")
V6 = ("2001:db8::10", "2001:db8:1::20")
FAMILIES = {"v4": V4, "v6": V6}
ALL_LINKTYPES = [
    DLT_EN10MB,
    DLT_LINUX_SLL,
    DLT_LINUX_SLL2,
    DLT_RAW,
    DLT_RAW_OPENBSD,
    LINKTYPE_RAW,
    DLT_NULL,
    DLT_LOOP,
    DLT_IPV4,
    DLT_IPV6,
]


def packed(addr):
    return socket.inet_pton(socket.AF_INET6 if ":" in addr else socket.AF_INET, addr)


def link_family_cases():
    for lt in ALL_LINKTYPES:
        for fam in ("v4", "v6"):
            if (lt == DLT_IPV4 and fam == "v6") or (lt == DLT_IPV6 and fam == "v4"):
                continue
            yield lt, fam


LINK_FAMILY = list(link_family_cases())
