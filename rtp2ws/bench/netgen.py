"""Packets and capture files built by hand: IPv4/IPv6, UDP, Ethernet, pcap.

The one packet builder of the project: the bench's capture generator
(``capgen``) frames its SIP and RTP with it, and the tests' ``netgen`` (other
link layers, TCP, fragments, pcapng) builds on it.  Headers are packed with
``struct`` so the caller controls every byte; addresses are strings, and the
IP version follows the family of ``src``.
"""

from __future__ import annotations

import socket
import struct

__all__ = [
    "checksum",
    "ip_packet",
    "chain_ext",
    "udp",
    "ethernet",
    "pcap_header",
    "pcap_record",
]

SRC_MAC = bytes.fromhex("020000000001")
DST_MAC = bytes.fromhex("020000000002")


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
    df: bool = False,
) -> bytes:
    """An IPv4 or IPv6 packet around ``l4``, with lengths and checksum set.

    ``options`` are IPv4 options (zero-padded to a multiple of 4 bytes);
    ``df`` sets IPv4's don't-fragment flag.  IPv6 extension headers are made
    by ``udp`` (and the tests' ``tcp``) with ``ext=(0, 60, ...)``.
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
            0x4000 if df else 0,
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


def udp(src: str, sport: int, dst: str, dport: int, payload: bytes, *, udp_checksum: bool = True, **kw) -> bytes:
    """A full IP packet carrying one UDP datagram; ``kw`` go to ``ip_packet``
    (and ``ext``, IPv6 extension headers).  Without ``udp_checksum`` the UDP
    checksum is 0, which IPv4 allows."""
    length = 8 + len(payload)
    l4 = struct.pack("!HHHH", sport, dport, length, 0) + payload
    if udp_checksum:
        csum = _l4_checksum(src, dst, 17, l4)
        l4 = l4[:6] + struct.pack("!H", csum) + l4[8:]
    return _ip_with_ext(src, dst, 17, l4, kw)


def _ip_with_ext(src: str, dst: str, proto: int, l4: bytes, kw: dict) -> bytes:
    ext = tuple(kw.pop("ext", ()))
    if not ext:
        return ip_packet(src, dst, proto, l4, **kw)
    pkt = ip_packet(src, dst, proto, chain_ext(ext, proto) + l4, **kw)
    return pkt[:6] + bytes([ext[0]]) + pkt[7:]


def ethernet(ip_pkt: bytes, *, vlans: tuple[int, ...] = (), pad: bool = False) -> bytes:
    """An Ethernet frame (``DST_MAC``, ``SRC_MAC``) around an IP packet.

    802.1Q tags come from ``vlans`` (outer first; with more than one tag the
    outer uses TPID 0x88a8); ``pad`` pads the frame to the 60-byte minimum.
    """
    tags = b""
    for i, vid in enumerate(vlans):
        tpid = 0x88A8 if len(vlans) > 1 and i == 0 else 0x8100
        tags += struct.pack("!HH", tpid, vid & 0x0FFF)
    frame = DST_MAC + SRC_MAC + tags + struct.pack("!H", 0x86DD if ip_pkt[0] >> 4 == 6 else 0x0800) + ip_pkt
    if pad and len(frame) < 60:
        frame += b"\0" * (60 - len(frame))
    return frame


def pcap_header(linktype: int, *, snaplen: int = 262144, nanosecond: bool = False) -> bytes:
    """The global header of a classic little-endian pcap file (µs or ns timestamps)."""
    return struct.pack("<IHHiIII", 0xA1B23C4D if nanosecond else 0xA1B2C3D4, 2, 4, 0, 0, snaplen, linktype)


def pcap_record(ticks: int, frame: bytes, scale: int = 1_000_000) -> bytes:
    """A pcap record of ``frame`` captured whole at ``ticks`` (1/``scale`` s since the epoch)."""
    return struct.pack("<IIII", ticks // scale, ticks % scale, len(frame), len(frame)) + frame
