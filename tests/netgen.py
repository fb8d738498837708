"""Build packets and capture files for tests (slow path, test-only).

Headers are packed by hand with ``struct`` so the tests control every byte;
addresses are strings, and the IP version follows the family of ``src``.
"""

from __future__ import annotations

import socket
import struct

from rtp2ws.net.packet import (
    DLT_EN10MB, DLT_IPV4, DLT_IPV6, DLT_LINUX_SLL, DLT_LINUX_SLL2, DLT_LOOP, DLT_NULL, DLT_RAW,
    DLT_RAW_OPENBSD, LINKTYPE_RAW,
)

__all__ = [
    "checksum",
    "ip_packet",
    "chain_ext",
    "udp",
    "tcp",
    "fragment",
    "link",
    "write_pcap",
    "write_pcapng",
]

SRC_MAC = bytes.fromhex("020000000001")
DST_MAC = bytes.fromhex("020000000002")
TCP_FLAG_BITS = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, "A": 0x10}


def _family(addr: str) -> int:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def _pack(addr: str) -> bytes:
    return socket.inet_pton(_family(addr), addr)


def checksum(data: bytes) -> int:
    """Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _l4_checksum(src: str, dst: str, proto: int, l4: bytes) -> int:
    s, d = _pack(src), _pack(dst)
    if len(s) == 4:
        pseudo = s + d + struct.pack("!xBH", proto, len(l4))
    else:
        pseudo = s + d + struct.pack("!I3xB", len(l4), proto)
    value = checksum(pseudo + l4)
    return value or 0xFFFF


def ip_packet(
    src: str,
    dst: str,
    proto: int,
    l4: bytes,
    *,
    ident: int = 0,
    ttl: int = 64,
    options: bytes = b"",
) -> bytes:
    """An IPv4 or IPv6 packet around ``l4``, with lengths and checksum set.

    ``options`` are IPv4 options (zero-padded to a multiple of 4 bytes).
    IPv6 extension headers are made by ``udp``/``tcp`` with ``ext=(0, 60, ...)``.
    """
    if _family(src) == socket.AF_INET:
        options += b"\0" * (-len(options) % 4)
        hlen = 20 + len(options)
        header = struct.pack(
            "!BBHHHBBH4s4s",
            0x40 | hlen // 4,
            0,
            hlen + len(l4),
            ident,
            0,
            ttl,
            proto,
            0,
            _pack(src),
            _pack(dst),
        ) + options
        header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
        return header + l4
    if options:
        raise ValueError("options are for IPv4")
    return struct.pack("!IHBB", 0x60000000, len(l4), proto, ttl) + _pack(src) + _pack(dst) + l4


def chain_ext(kinds, proto: int) -> bytes:
    """IPv6 extension headers of the given types (0, 43, 60, 44) chained to ``proto``.

    Each header is 8 bytes with a PadN option; a fragment header (44) is
    an atomic fragment (offset 0, no more fragments).
    """
    out = b""
    kinds = list(kinds)
    for i, kind in enumerate(kinds):
        nxt = kinds[i + 1] if i + 1 < len(kinds) else proto
        if kind == 44:
            out += struct.pack("!BxHI", nxt, 0, 0x1234)
        else:
            out += struct.pack("!BB", nxt, 0) + b"\x01\x04\0\0\0\0"  # PadN, 4 bytes
    return out


def udp(src: str, sport: int, dst: str, dport: int, payload: bytes, **kw) -> bytes:
    """A full IP packet carrying one UDP datagram."""
    length = 8 + len(payload)
    l4 = struct.pack("!HHHH", sport, dport, length, 0) + payload
    csum = _l4_checksum(src, dst, 17, l4)
    l4 = l4[:6] + struct.pack("!H", csum) + l4[8:]
    return _ip_with_ext(src, dst, 17, l4, kw)


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


def _ip_with_ext(src: str, dst: str, proto: int, l4: bytes, kw: dict) -> bytes:
    ext = tuple(kw.pop("ext", ()))
    if not ext:
        return ip_packet(src, dst, proto, l4, **kw)
    pkt = ip_packet(src, dst, proto, chain_ext(ext, proto) + l4, **kw)
    return pkt[:6] + bytes([ext[0]]) + pkt[7:]


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
        tags = b""
        for i, vid in enumerate(vlans):
            tpid = 0x88A8 if len(vlans) > 1 and i == 0 else 0x8100
            tags += struct.pack("!HH", tpid, vid & 0x0FFF)
        frame = DST_MAC + SRC_MAC + tags + struct.pack("!H", 0x86DD if v6 else 0x0800) + ip_pkt
        if pad and len(frame) < 60:
            frame += b"\0" * (60 - len(frame))
        return frame
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


def _file_linktype(linktype: int) -> int:
    # In files raw IP is LINKTYPE_RAW (101); libpcap maps it back to DLT_RAW.
    return LINKTYPE_RAW if linktype in (DLT_RAW, DLT_RAW_OPENBSD) else linktype


def write_pcap(path, frames: list[tuple[float, bytes]], linktype: int = 1, *, nanosecond: bool = False) -> None:
    """Write a classic little-endian pcap file (microsecond or nanosecond)."""
    scale = 1_000_000_000 if nanosecond else 1_000_000
    magic = 0xA1B23C4D if nanosecond else 0xA1B2C3D4
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", magic, 2, 4, 0, 0, 262144, _file_linktype(linktype)))
        for ts, frame in frames:
            ticks = round(ts * scale)
            f.write(struct.pack("<IIII", ticks // scale, ticks % scale, len(frame), len(frame)))
            f.write(frame)


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
