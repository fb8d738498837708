"""Link, IP and transport decoding: captured frame bytes in, ``Packet`` out.

Sans-I/O and on the hot path: headers are read with ``struct.unpack_from``
at offsets into the frame, nothing is parsed twice, and no per-layer objects
are built.  Time is an argument (``now``); it is only used to expire IP
fragment buffers.

Supported link types (the values ``pcap_datalink()`` returns):

* ``DLT_EN10MB``: Ethernet II, any stack of 802.1Q / 802.1ad / QinQ tags
  (TPID 0x8100, 0x88a8, 0x9100).
* ``DLT_LINUX_SLL`` / ``DLT_LINUX_SLL2``: Linux "any" cooked captures.  On
  v1, libpcap puts the 802.1Q tag that the kernel took off a received frame
  back between the header and the payload (protocol 0x8100, tag, EtherType);
  v2 leaves it out.
* ``DLT_RAW`` (12, OpenBSD 14, and ``LINKTYPE_RAW`` 101), ``DLT_IPV4``,
  ``DLT_IPV6``: bare IP.
* ``DLT_NULL`` (address family in the capturing host's byte order) and
  ``DLT_LOOP`` (network byte order): BSD loopback.

IPv4 (with options) and IPv6 (with extension headers) are decoded down to
UDP or TCP.

Tunnels are opened wherever they appear, and what is inside decoded again (the
``Packet`` is the innermost UDP/TCP), at most ``MAX_TUNNELS`` deep (deeper:
counted in ``tunnel_too_deep``, dropped), each counted by kind:

* ``vxlan``: VXLAN (RFC 7348, UDP 4789, the I flag set): an Ethernet frame;
  what cloud traffic mirroring (AWS, Azure vTAP) sends.
* ``gre``: GRE (RFC 2784; checksum, key and sequence number per RFC 2890), IP
  protocol 47 over IPv4 or IPv6, carrying IPv4 (0x0800), IPv6 (0x86DD) or an
  Ethernet frame (0x6558, transparent Ethernet bridging: Linux gretap).
* ``erspan``: Cisco ERSPAN inside GRE, as Wireshark reads it: protocol 0x88BE
  without the S bit is type I (the mirrored Ethernet frame right after GRE);
  with it, an ERSPAN header follows whose version says its size: 1 (type II,
  8 bytes) or 2 (type III, 12 bytes, and the 8-byte platform subheader when
  its O bit is set), which 0x22EB always carries.  Only Ethernet frames (frame
  type 0) are mirrored copies of packets.
* ``ipip``: IP in IP: IPv4 (protocol 4) or IPv6 (41) inside IPv4 or IPv6.

What a tunnel carries that is not decoded (GRE version 1 (PPTP), source routes,
other protocol types, other ERSPAN versions or frame types) is counted in
``tunnel_other``; a truncated tunnel header is ``MalformedPacket``.

Fragmented datagrams of either version are reassembled.  IP, UDP, TCP and GRE
checksums are not verified: mirrored traffic often carries checksums that were
left to the NIC.

Fragment buffers are bounded as a whole, not per datagram, because a mirror
port delivers whatever anyone sends: at most ``max_frag_buffers`` incomplete
datagrams, ``max_frag_fragments`` fragments held in them and
``max_frag_bytes`` payload bytes (defaults 4096, 8192 and 4 MiB: real
fragments carry hundreds of bytes or more, and those of one datagram arrive
within milliseconds).  A fragment that would go past a bound makes room by
dropping the oldest incomplete datagrams (counted in ``frag_evicted``, and
the fragments they held in ``frag_dropped``), so a flood only ever holds its
newest few megabytes and a real datagram arriving during or after it still
completes.  Incomplete datagrams also expire ``frag_timeout`` (30 s) after
their first fragment.  A fragment costs a bisection in its datagram's held
ranges (merged, so one per hole) plus the ranges it fills, however small the
pieces and in whatever order or overlap they arrive.
"""

from __future__ import annotations

import struct
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple

__all__ = [
    "DLT_NULL",
    "DLT_EN10MB",
    "DLT_RAW",
    "DLT_RAW_OPENBSD",
    "LINKTYPE_RAW",
    "DLT_LOOP",
    "DLT_LINUX_SLL",
    "DLT_LINUX_SLL2",
    "DLT_IPV4",
    "DLT_IPV6",
    "LINKTYPE_NAMES",
    "LINK_TYPES",
    "LINK_KINDS",
    "LINK_ETHERTYPE",
    "LINK_IP",
    "LINK_IPV4",
    "LINK_IPV6",
    "LINK_AF",
    "LINK_AF_NET",
    "LinkLayer",
    "LinkType",
    "link_layer",
    "link_reader",
    "IPPROTO_GRE",
    "IPPROTO_IPIP",
    "IPPROTO_IPV6",
    "IPPROTO_TCP",
    "IPPROTO_UDP",
    "MAX_TUNNELS",
    "TCP_FIN",
    "TCP_SYN",
    "TCP_RST",
    "TCP_PSH",
    "TCP_ACK",
    "MalformedPacket",
    "UnsupportedLinkType",
    "Packet",
    "PacketDecoder",
]

# -- link types -------------------------------------------------------------

DLT_NULL = 0
DLT_EN10MB = 1
DLT_RAW = 12
DLT_RAW_OPENBSD = 14
DLT_LOOP = 108
LINKTYPE_RAW = 101
DLT_LINUX_SLL = 113
DLT_IPV4 = 228
DLT_IPV6 = 229
DLT_LINUX_SLL2 = 276

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
# 802.1Q, 802.1ad, and the pre-standard QinQ TPID.
VLAN_TPIDS = frozenset((0x8100, 0x88A8, 0x9100))

VXLAN_PORT = 4789
VXLAN_HEADER_LENGTH = 8
MAX_TUNNELS = 4           # tunnels opened in one frame, nested (a mirror of a tunnel is two)
ETHERTYPE_TEB = 0x6558    # transparent Ethernet bridging (GRE: gretap)
ETHERTYPE_ERSPAN = 0x88BE  # ERSPAN types I and II
ETHERTYPE_ERSPAN3 = 0x22EB  # ERSPAN type III
GRE_HEADER_LENGTH = 4
GRE_CSUM = 0x8000         # checksum present (with 2 reserved bytes)
GRE_ROUTING = 0x4000      # RFC 1701 source routing (obsolete): not decoded
GRE_KEY = 0x2000          # RFC 2890 key present
GRE_SEQ = 0x1000          # RFC 2890 sequence number present (ERSPAN: a header follows)
GRE_VERSION = 0x0007
ERSPAN2_HEADER_LENGTH = 8
ERSPAN3_HEADER_LENGTH = 12
ERSPAN3_SUBHEADER_LENGTH = 8
ETH_HEADER_LENGTH = 14
VLAN_TAG_LENGTH = 4
SLL_HEADER_LENGTH = 16
SLL2_HEADER_LENGTH = 20
LOOPBACK_HEADER_LENGTH = 4

# BSD address families: AF_INET is 2 everywhere; AF_INET6 is 10 (Linux),
# 24 (NetBSD, OpenBSD, BSD/OS), 28 (FreeBSD, DragonFly), 30 (macOS).
AF_INET_VALUES = frozenset((2,))
AF_INET6_VALUES = frozenset((10, 24, 28, 30))

# How to find the IP header in a frame of each link type: the one table.  PacketDecoder
# reads frames by it, and the fast path (rtp2ws.fastpath.twin, native/fastpath.c) is
# given the row of its capture's link type (``link_layer``), so neither holds a link type
# number of its own; a link type added here is read by both, and one of a new kind
# fails tests/fastpath/test_fastpath.py::test_every_link_type_of_packet_py until the fast path
# learns the kind.
LINK_ETHERTYPE = "ethertype"  # an EtherType (or cooked protocol) field at ``type_at`` ends a ``header``-byte
                              # header; with ``vlans``, 802.1Q / 802.1ad / QinQ tags may follow it
LINK_IP = "ip"                # bare IP, its version in the first four bits
LINK_IPV4 = "ipv4"            # bare IPv4
LINK_IPV6 = "ipv6"            # bare IPv6
LINK_AF = "af"                # a 4-byte BSD address family at ``type_at``, in the capturing host's byte order
LINK_AF_NET = "af_net"        # ... in network byte order
LINK_KINDS = (LINK_ETHERTYPE, LINK_IP, LINK_IPV4, LINK_IPV6, LINK_AF, LINK_AF_NET)


class LinkLayer(NamedTuple):
    """How to find the IP header: what the fast path is given (``FastPath(layer, ...)``)."""

    kind: str             # LINK_ETHERTYPE ... LINK_AF_NET
    header: int           # bytes before the IP header (VLAN tags not counted)
    type_at: int = 0      # LINK_ETHERTYPE, LINK_AF: where the type or family field is
    vlans: bool = False   # LINK_ETHERTYPE: VLAN tags may follow the header


class LinkType(NamedTuple):
    layer: LinkLayer
    name: str             # LINKTYPE_NAMES
    what: str             # the header as MalformedPacket names it ("Ethernet header truncated")


LINK_TYPES: dict[int, LinkType] = {
    DLT_NULL: LinkType(LinkLayer(LINK_AF, LOOPBACK_HEADER_LENGTH), "NULL (BSD loopback)", "loopback"),
    DLT_EN10MB: LinkType(LinkLayer(LINK_ETHERTYPE, ETH_HEADER_LENGTH, 12, True), "EN10MB (Ethernet)", "Ethernet"),
    DLT_RAW: LinkType(LinkLayer(LINK_IP, 0), "RAW (raw IP)", "IP"),
    DLT_RAW_OPENBSD: LinkType(LinkLayer(LINK_IP, 0), "RAW (raw IP, OpenBSD)", "IP"),
    LINKTYPE_RAW: LinkType(LinkLayer(LINK_IP, 0), "RAW (raw IP)", "IP"),
    DLT_LOOP: LinkType(LinkLayer(LINK_AF_NET, LOOPBACK_HEADER_LENGTH), "LOOP (OpenBSD loopback)", "loopback"),
    # v1: a VLAN tag libpcap put back follows the header (``-i any`` on a trunk or mirror port)
    DLT_LINUX_SLL: LinkType(LinkLayer(LINK_ETHERTYPE, SLL_HEADER_LENGTH, 14, True), "LINUX_SLL (Linux cooked v1)",
                            "Linux cooked"),
    DLT_LINUX_SLL2: LinkType(LinkLayer(LINK_ETHERTYPE, SLL2_HEADER_LENGTH, 0), "LINUX_SLL2 (Linux cooked v2)",
                             "Linux cooked v2"),
    DLT_IPV4: LinkType(LinkLayer(LINK_IPV4, 0), "IPV4 (raw IPv4)", "IPv4"),
    DLT_IPV6: LinkType(LinkLayer(LINK_IPV6, 0), "IPV6 (raw IPv6)", "IPv6"),
}

LINKTYPE_NAMES: dict[int, str] = {linktype: t.name for linktype, t in LINK_TYPES.items()}

# -- IP / transport ---------------------------------------------------------

IPPROTO_HOPOPTS = 0
IPPROTO_IPIP = 4
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_IPV6 = 41
IPPROTO_ROUTING = 43
IPPROTO_FRAGMENT = 44
IPPROTO_GRE = 47
IPPROTO_AH = 51
IPPROTO_DSTOPTS = 60
IPPROTO_MOBILITY = 135

IPV4_HEADER_LENGTH = 20
IPV6_HEADER_LENGTH = 40
UDP_HEADER_LENGTH = 8
TCP_HEADER_LENGTH = 20
IPV6_FRAGMENT_HEADER_LENGTH = 8
MAX_DATAGRAM = 65535  # largest reassembled IPv4 datagram / IPv6 payload

# Bounds over all fragment buffers of a decoder (see the module docstring).
MAX_FRAG_BUFFERS = 4096  # incomplete datagrams
MAX_FRAG_FRAGMENTS = 8192  # fragments held (a 65535-byte datagram in 8-byte pieces still fits)
MAX_FRAG_BYTES = 4 << 20  # payload bytes held

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_PSH = 0x08
TCP_ACK = 0x10

_TUNNEL_PROTOS = frozenset((IPPROTO_IPIP, IPPROTO_IPV6, IPPROTO_GRE))
_IPV6_EXT_8 = frozenset((IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_DSTOPTS, IPPROTO_MOBILITY))

_H = struct.Struct("!H")
_HH = struct.Struct("!HH")
_I_LE = struct.Struct("<I")
_I_BE = struct.Struct("!I")
_IPV4 = struct.Struct("!BxHHHxB")  # ver/ihl, total length, id, flags/offset, protocol
_IPV6 = struct.Struct("!IHB")  # ver/tc/flow, payload length, next header
_IPV6_FRAG = struct.Struct("!BxHI")  # next header, offset/M, identification
_UDP = struct.Struct("!HHH")  # sport, dport, length
_TCP = struct.Struct("!HHI4xBB")  # sport, dport, seq, data offset, flags


class MalformedPacket(ValueError):
    """A header is truncated or invalid; the message says which."""


class UnsupportedLinkType(ValueError):
    """The capture's link type is not one ``PacketDecoder`` can read."""


class Packet(NamedTuple):
    """One transport-layer unit (a UDP datagram or a TCP segment)."""

    proto: int  # IPPROTO_UDP (17) or IPPROTO_TCP (6)
    src: bytes  # packed address, 4 or 16 bytes
    sport: int
    dst: bytes
    dport: int
    payload: bytes
    tcp_seq: int  # 0 for UDP
    tcp_flags: int  # 0 for UDP; TCP_FIN | TCP_SYN | ... otherwise


class _FragBuffer:
    """The fragments received so far of one IP datagram.

    ``starts``/``ends`` are the byte ranges held, sorted and merged (ranges
    that touch become one), so there are as many as the datagram has holes
    plus one; ``pieces`` are the bytes, one ``(offset, data)`` per fragment
    that brought new bytes, disjoint, joined in order once nothing is missing.
    """

    __slots__ = ("created", "starts", "ends", "pieces", "covered", "total", "proto")

    def __init__(self, created: float) -> None:
        self.created = created
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.pieces: list[tuple[int, bytes]] = []
        self.covered = 0  # bytes held, sum of piece lengths
        self.total: int | None = None  # datagram length, known once the last fragment is seen
        self.proto: int | None = None  # upper-layer protocol (IPv6: from the offset-0 fragment)


def link_layer(linktype: int) -> LinkLayer:
    """How to find the IP header in a frame of ``linktype`` (its row of ``LINK_TYPES``)."""
    t = LINK_TYPES.get(linktype)
    if t is None:
        raise UnsupportedLinkType(f"unsupported link type {linktype}")
    return t.layer


def ethertype_version(ethertype: int) -> int:
    if ethertype == ETHERTYPE_IPV4:
        return 4
    if ethertype == ETHERTYPE_IPV6:
        return 6
    return 0


def _vlan_tags(data: bytes, ethertype: int, off: int) -> tuple[int, int]:
    """Skip the VLAN tags at ``off`` (``ethertype`` is the TPID before them)."""
    while ethertype in VLAN_TPIDS:
        if len(data) < off + VLAN_TAG_LENGTH:
            raise MalformedPacket("VLAN tag truncated")
        (ethertype,) = _H.unpack_from(data, off + 2)
        off += VLAN_TAG_LENGTH
    return off, ethertype_version(ethertype)


def link_reader(layer: LinkLayer, what: str = "link") -> Callable[[bytes], tuple[int, int]]:
    """The function that reads a frame's link header as ``layer`` says: frame ->
    (offset of the IP header, IP version or 0); ``MalformedPacket`` when it is truncated
    (``"<what> header truncated"``) or, bare IP, of another version.  PacketDecoder's,
    and the fast path's Python twin's."""
    kind, header, type_at, vlans = layer
    truncated = f"{what} header truncated"
    if kind == LINK_ETHERTYPE:
        def read(data: bytes) -> tuple[int, int]:
            if len(data) < header:
                raise MalformedPacket(truncated)
            (ethertype,) = _H.unpack_from(data, type_at)
            if vlans and ethertype in VLAN_TPIDS:
                return _vlan_tags(data, ethertype, header)
            return header, ethertype_version(ethertype)
    elif kind == LINK_IP:
        def read(data: bytes) -> tuple[int, int]:
            if len(data) <= header:
                raise MalformedPacket(truncated)
            version = data[header] >> 4
            if version != 4 and version != 6:
                raise MalformedPacket(f"bad IP version {version}")
            return header, version
    elif kind == LINK_IPV4 or kind == LINK_IPV6:
        fixed = (header, 4 if kind == LINK_IPV4 else 6)

        def read(data: bytes) -> tuple[int, int]:
            return fixed
    elif kind == LINK_AF or kind == LINK_AF_NET:
        either = kind == LINK_AF

        def read(data: bytes) -> tuple[int, int]:
            if len(data) < header:
                raise MalformedPacket(truncated)
            # LINK_AF: the family is in the capturing host's byte order, which the file
            # does not record; the values are small, so try both.
            (be,) = _I_BE.unpack_from(data, type_at)
            (le,) = _I_LE.unpack_from(data, type_at) if either else (be,)
            if le in AF_INET_VALUES or be in AF_INET_VALUES:
                return header, 4
            if le in AF_INET6_VALUES or be in AF_INET6_VALUES:
                return header, 6
            return header, 0
    else:
        raise ValueError(f"unknown link kind {kind}")
    return read


_LINK_READERS = {linktype: link_reader(t.layer, t.what) for linktype, t in LINK_TYPES.items()}
_LINK_ETHERNET = _LINK_READERS[DLT_EN10MB]     # VXLAN carries Ethernet frames


# A datagram being reassembled: (4, src, dst, proto, ident) or (6, src, dst, ident).
FragKey = tuple[int | bytes, ...]


class PacketDecoder:
    """Decode captured frames of one link type into ``Packet``.

    ``decode(data, now)`` returns a ``Packet``, or ``None`` for frames that
    carry no UDP/TCP over IP (ARP, ICMP, ...) and for fragments that do not
    complete a datagram.  Invalid or truncated headers raise
    ``MalformedPacket``.
    """

    def __init__(
        self,
        linktype: int,
        *,
        frag_timeout: float = 30.0,
        max_frag_buffers: int = MAX_FRAG_BUFFERS,
        max_frag_fragments: int = MAX_FRAG_FRAGMENTS,
        max_frag_bytes: int = MAX_FRAG_BYTES,
    ) -> None:
        self.layer = link_layer(linktype)
        self._link = _LINK_READERS[linktype]
        for name, value in (("max_frag_buffers", max_frag_buffers), ("max_frag_fragments", max_frag_fragments),
                            ("max_frag_bytes", max_frag_bytes)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1")
        self.linktype = linktype
        self.frag_timeout = frag_timeout
        self.max_frag_buffers = max_frag_buffers
        self.max_frag_fragments = max_frag_fragments
        self.max_frag_bytes = max_frag_bytes
        # Insertion ordered, so the first entry is always the oldest buffer; an
        # OrderedDict finds it in O(1) however many were removed before it (a
        # dict scans the removed entries' slots until it is next resized).
        self._frags: OrderedDict[FragKey, _FragBuffer] = OrderedDict()
        self._frag_deadline = float("inf")
        self._frag_pieces = 0  # fragments held, over all buffers
        self._frag_bytes = 0  # payload bytes held, over all buffers
        self._tunnels = 0  # tunnels opened in the frame being decoded
        self.stats: dict[str, int] = {
            "packets": 0,
            "malformed": 0,
            "non_ip": 0,
            "vxlan": 0,
            "gre": 0,
            "erspan": 0,
            "ipip": 0,
            "tunnel_other": 0,
            "tunnel_too_deep": 0,
            "other_proto": 0,
            "ip_len_zero": 0,
            "fragments": 0,
            "reassembled": 0,
            "frag_overlaps": 0,
            "frag_invalid": 0,
            "frag_timeouts": 0,
            "frag_evicted": 0,
            "frag_dropped": 0,
        }

    def __repr__(self) -> str:
        name = LINKTYPE_NAMES.get(self.linktype, str(self.linktype))
        return f"PacketDecoder(linktype={name}, {len(self._frags)} fragment buffers)"

    @property
    def frag_deadline(self) -> float:
        """When the oldest fragment buffer expires (``decode`` checks it first)."""
        return self._frag_deadline

    @property
    def pending_fragments(self) -> int:
        """Number of incomplete datagrams being reassembled."""
        return len(self._frags)

    @property
    def held_fragments(self) -> tuple[int, int]:
        """(fragments, payload bytes) held in the fragment buffers."""
        return self._frag_pieces, self._frag_bytes

    # -- entry points -------------------------------------------------------

    def decode(self, data: bytes, now: float) -> Packet | None:
        if type(data) is not bytes:
            data = bytes(data)
        self.stats["packets"] += 1
        if now >= self._frag_deadline:
            self.expire(now)
        self._tunnels = 0
        try:
            off, version = self._link(data)
            return self._ip(data, off, version, now)
        except MalformedPacket:
            self.stats["malformed"] += 1
            raise

    def count_packets(self, n: int) -> None:
        """``n`` packets decoded on this decoder's behalf (the fast path takes in-order
        RTP without calling ``decode``): counted in ``stats["packets"]`` as if it had."""
        self.stats["packets"] += n

    def _ip(self, data: bytes, off: int, version: int, now: float) -> Packet | None:
        if version == 4:
            return self._ipv4(data, off, now)
        if version == 6:
            return self._ipv6(data, off, now)
        self.stats["non_ip"] += 1
        return None

    def _tunnel(self, kind: str) -> bool:
        """One more tunnel opened in this frame (counted as ``kind``); False past ``MAX_TUNNELS``."""
        if self._tunnels >= MAX_TUNNELS:
            self.stats["tunnel_too_deep"] += 1
            return False
        self._tunnels += 1
        self.stats[kind] += 1
        return True

    def _vxlan(self, outer: Packet, now: float) -> Packet | None:
        """Cloud traffic mirroring (e.g. AWS VPC Traffic Mirroring) delivers copies in
        VXLAN (RFC 7348, UDP 4789): decode the inner Ethernet frame."""
        payload = outer.payload
        if len(payload) < VXLAN_HEADER_LENGTH or not payload[0] & 0x08:
            return outer
        if not self._tunnel("vxlan"):
            return None
        return self._ethernet(payload[VXLAN_HEADER_LENGTH:], now)

    def _ethernet(self, frame: bytes, now: float) -> Packet | None:
        off, version = _LINK_ETHERNET(frame)
        return self._ip(frame, off, version, now)

    def _ipip(self, data: bytes, off: int, end: int, version: int, now: float) -> Packet | None:
        """IPv4 (protocol 4) or IPv6 (41) inside IP, at ``off``."""
        if not self._tunnel("ipip"):
            return None
        inner = data[off:end]
        return self._ipv4(inner, 0, now) if version == 4 else self._ipv6(inner, 0, now)

    def _gre(self, data: bytes, off: int, end: int, now: float) -> Packet | None:
        """GRE (RFC 2784, RFC 2890) at ``off``: IPv4, IPv6, Ethernet or ERSPAN inside."""
        if end - off < GRE_HEADER_LENGTH:
            raise MalformedPacket("GRE header truncated")
        flags, ptype = _HH.unpack_from(data, off)
        if flags & (GRE_VERSION | GRE_ROUTING):
            self.stats["tunnel_other"] += 1
            return None
        off += GRE_HEADER_LENGTH
        if flags & GRE_CSUM:
            off += 4
        if flags & GRE_KEY:
            off += 4
        if flags & GRE_SEQ:
            off += 4
        if off > end:
            raise MalformedPacket("GRE header truncated")
        if ptype == ETHERTYPE_ERSPAN or ptype == ETHERTYPE_ERSPAN3:
            return self._erspan(data, off, end, ptype == ETHERTYPE_ERSPAN3 or bool(flags & GRE_SEQ), now)
        version = ethertype_version(ptype)
        if version:
            if not self._tunnel("gre"):
                return None
            return self._ip(data[off:end], 0, version, now)
        if ptype == ETHERTYPE_TEB:
            if not self._tunnel("gre"):
                return None
            return self._ethernet(data[off:end], now)
        self.stats["tunnel_other"] += 1
        return None

    def _erspan(self, data: bytes, off: int, end: int, header: bool, now: float) -> Packet | None:
        """ERSPAN at ``off`` (after GRE): type I has no ``header``; II and III say theirs."""
        if header:
            if end - off < ERSPAN2_HEADER_LENGTH:
                raise MalformedPacket("ERSPAN header truncated")
            version = data[off] >> 4
            if version == 1:                # type II
                off += ERSPAN2_HEADER_LENGTH
            elif version == 2:              # type III
                if end - off < ERSPAN3_HEADER_LENGTH:
                    raise MalformedPacket("ERSPAN header truncated")
                (word,) = _H.unpack_from(data, off + 10)
                off += ERSPAN3_HEADER_LENGTH
                if word & 0x0001:           # O: the platform-specific subheader follows
                    off += ERSPAN3_SUBHEADER_LENGTH
                    if off > end:
                        raise MalformedPacket("ERSPAN platform subheader truncated")
                if (word >> 10) & 0x1F:     # frame type: 0 is Ethernet
                    self.stats["tunnel_other"] += 1
                    return None
            else:
                self.stats["tunnel_other"] += 1
                return None
        if not self._tunnel("erspan"):
            return None
        return self._ethernet(data[off:end], now)

    def expire(self, now: float) -> None:
        """Drop fragment buffers older than ``frag_timeout`` (``decode`` calls this)."""
        frags = self._frags
        timeout = self.frag_timeout
        while frags:
            key = next(iter(frags))
            if now - frags[key].created < timeout:
                break
            self._release(frags.pop(key))
            self.stats["frag_timeouts"] += 1
        self._update_deadline()

    def _release(self, buf: _FragBuffer) -> None:
        """Take a buffer that left ``_frags`` out of the totals."""
        self._frag_pieces -= len(buf.pieces)
        self._frag_bytes -= buf.covered

    def _evict_oldest(self, keep: FragKey | None = None) -> bool:
        """Drop the oldest incomplete datagram other than ``keep``; False if there is none."""
        for key in self._frags:
            if key != keep:
                break
        else:
            return False
        buf = self._frags.pop(key)
        self._release(buf)
        self.stats["frag_evicted"] += 1
        self.stats["frag_dropped"] += len(buf.pieces)
        return True

    def _update_deadline(self) -> None:
        if self._frags:
            self._frag_deadline = next(iter(self._frags.values())).created + self.frag_timeout
        else:
            self._frag_deadline = float("inf")

    # -- IPv4 ----------------------------------------------------------------

    def _ipv4(self, data: bytes, off: int, now: float) -> Packet | None:
        avail = len(data) - off
        if avail < IPV4_HEADER_LENGTH:
            raise MalformedPacket("IPv4 header truncated")
        vihl, total, ident, frag, proto = _IPV4.unpack_from(data, off)
        version = vihl >> 4
        if version != 4:
            raise MalformedPacket(f"IPv4 header has version {version}")
        hlen = (vihl & 0x0F) * 4
        if hlen < IPV4_HEADER_LENGTH:
            raise MalformedPacket(f"IPv4 header length {hlen} is less than 20")
        if hlen > avail:
            raise MalformedPacket("IPv4 options truncated")
        if total == 0:
            # Segmentation offload on the capturing host: length left to the NIC.
            self.stats["ip_len_zero"] += 1
            total = avail
        elif total < hlen:
            raise MalformedPacket(f"IPv4 total length {total} is less than header length {hlen}")
        elif total > avail:
            raise MalformedPacket(f"IPv4 packet truncated: total length {total}, {avail} bytes captured")
        end = off + total  # anything after is link-layer padding
        src = data[off + 12 : off + 16]
        dst = data[off + 16 : off + 20]
        if frag & 0x3FFF:  # MF set or non-zero offset
            done = self._reassemble(
                (4, src, dst, proto, ident),
                (frag & 0x1FFF) * 8,
                bool(frag & 0x2000),
                data[off + hlen : end],
                proto,
                now,
            )
            if done is None:
                return None
            payload = done[1]
            return self._transport(proto, src, dst, payload, 0, len(payload), now)
        return self._transport(proto, src, dst, data, off + hlen, end, now)

    # -- IPv6 ----------------------------------------------------------------

    def _ipv6(self, data: bytes, off: int, now: float) -> Packet | None:
        avail = len(data) - off
        if avail < IPV6_HEADER_LENGTH:
            raise MalformedPacket("IPv6 header truncated")
        vtcfl, plen, nh = _IPV6.unpack_from(data, off)
        version = vtcfl >> 28
        if version != 6:
            raise MalformedPacket(f"IPv6 header has version {version}")
        avail -= IPV6_HEADER_LENGTH
        if plen == 0:
            # Jumbogram, or segmentation offload on the capturing host.
            self.stats["ip_len_zero"] += 1
            plen = avail
        elif plen > avail:
            raise MalformedPacket(f"IPv6 packet truncated: payload length {plen}, {avail} bytes captured")
        src = data[off + 8 : off + 24]
        dst = data[off + 24 : off + 40]
        off += IPV6_HEADER_LENGTH
        return self._ipv6_chain(data, off, off + plen, nh, src, dst, now, False)

    def _ipv6_chain(
        self,
        data: bytes,
        off: int,
        end: int,
        nh: int,
        src: bytes,
        dst: bytes,
        now: float,
        reassembled: bool,
    ) -> Packet | None:
        """Walk the extension headers from ``off`` to UDP or TCP."""
        while True:
            if nh == IPPROTO_UDP or nh == IPPROTO_TCP or nh in _TUNNEL_PROTOS:
                return self._transport(nh, src, dst, data, off, end, now)
            if nh in _IPV6_EXT_8 or nh == IPPROTO_AH:
                if end - off < 8:
                    raise MalformedPacket("IPv6 extension header truncated")
                if nh == IPPROTO_AH:
                    hlen = (data[off + 1] + 2) * 4
                else:
                    hlen = (data[off + 1] + 1) * 8
                if hlen > end - off:
                    raise MalformedPacket("IPv6 extension header truncated")
                nh = data[off]
                off += hlen
                continue
            if nh == IPPROTO_FRAGMENT:
                if end - off < IPV6_FRAGMENT_HEADER_LENGTH:
                    raise MalformedPacket("IPv6 fragment header truncated")
                nxt, offm, ident = _IPV6_FRAG.unpack_from(data, off)
                off += IPV6_FRAGMENT_HEADER_LENGTH
                if offm & 0xFFF9 == 0:
                    # Atomic fragment (offset 0, no more fragments): RFC 6946.
                    nh = nxt
                    continue
                if reassembled:
                    raise MalformedPacket("IPv6 fragment header inside a reassembled datagram")
                start = offm & 0xFFF8
                done = self._reassemble(
                    (6, src, dst, ident),
                    start,
                    bool(offm & 1),
                    data[off:end],
                    nxt if start == 0 else None,
                    now,
                )
                if done is None:
                    return None
                nh, data = done
                off, end, reassembled = 0, len(data), True
                continue
            self.stats["other_proto"] += 1
            return None

    # -- transport ------------------------------------------------------------

    def _transport(self, proto: int, src: bytes, dst: bytes, data: bytes, off: int, end: int,
                   now: float) -> Packet | None:
        avail = end - off
        if proto == IPPROTO_UDP:
            if avail < UDP_HEADER_LENGTH:
                raise MalformedPacket("UDP header truncated")
            sport, dport, ulen = _UDP.unpack_from(data, off)
            if ulen < UDP_HEADER_LENGTH:
                raise MalformedPacket(f"UDP length {ulen} is less than 8")
            if ulen > avail:
                raise MalformedPacket(f"UDP length {ulen} exceeds {avail} bytes of IP payload")
            pkt = Packet(IPPROTO_UDP, src, sport, dst, dport, data[off + 8 : off + ulen], 0, 0)
            if dport == VXLAN_PORT:
                return self._vxlan(pkt, now)
            return pkt
        if proto == IPPROTO_TCP:
            if avail < TCP_HEADER_LENGTH:
                raise MalformedPacket("TCP header truncated")
            sport, dport, seq, doff, flags = _TCP.unpack_from(data, off)
            hlen = (doff >> 4) * 4
            if hlen < TCP_HEADER_LENGTH:
                raise MalformedPacket(f"TCP data offset {hlen} is less than 20")
            if hlen > avail:
                raise MalformedPacket("TCP options truncated")
            return Packet(IPPROTO_TCP, src, sport, dst, dport, data[off + hlen : end], seq, flags)
        if proto == IPPROTO_GRE:
            return self._gre(data, off, end, now)
        if proto == IPPROTO_IPIP:
            return self._ipip(data, off, end, 4, now)
        if proto == IPPROTO_IPV6:
            return self._ipip(data, off, end, 6, now)
        self.stats["other_proto"] += 1
        return None

    # -- fragment reassembly --------------------------------------------------

    def _reassemble(
        self,
        key: FragKey,
        start: int,
        more: bool,
        chunk: bytes,
        proto: int | None,
        now: float,
    ) -> tuple[int, bytes] | None:
        """Add one fragment; return ``(protocol, datagram)`` once complete.

        Overlapping data is resolved in favour of the bytes that arrived
        first (duplicates are therefore harmless); fragments that contradict
        the datagram's known length are ignored and counted.  Room beyond the
        bounds is made by dropping the oldest incomplete datagrams.
        """
        stats = self.stats
        stats["fragments"] += 1
        end = start + len(chunk)
        if end > MAX_DATAGRAM:
            stats["frag_invalid"] += 1
            return None
        frags = self._frags
        buf = frags.get(key)
        if buf is None:
            if len(frags) >= self.max_frag_buffers:
                self._evict_oldest()
            buf = frags[key] = _FragBuffer(now)
            self._update_deadline()
        # Consistency with the length announced by the last fragment.
        if buf.total is not None:
            if end > buf.total or (not more and end != buf.total):
                stats["frag_invalid"] += 1
                return None
        elif not more:
            if buf.ends and buf.ends[-1] > end:
                stats["frag_invalid"] += 1
                return None
            buf.total = end
        if proto is not None:
            buf.proto = proto
        # Insert only the bytes not held yet: the held ranges that overlap or
        # touch [start, end) are starts/ends[i:j]; they merge into one.
        if start < end:
            starts, ends = buf.starts, buf.ends
            i = bisect_left(ends, start)
            j = bisect_right(starts, end, i)
            pieces: list[tuple[int, bytes]] = []
            pos = start
            for k in range(i, j):
                cs = starts[k]
                if cs > pos:
                    pieces.append((pos, chunk[pos - start : cs - start]))
                ce = ends[k]
                if ce > pos:
                    pos = ce
            if pos < end:
                pieces.append((pos, chunk[pos - start :] if pos > start else chunk))
            added = sum(len(p[1]) for p in pieces)
            if added != end - start:
                stats["frag_overlaps"] += 1
            if pieces:
                if not self._make_room(key, len(pieces), added):
                    return None
                if i < j:
                    starts[i:j] = (min(start, starts[i]),)
                    ends[i:j] = (max(end, ends[j - 1]),)
                else:
                    starts.insert(i, start)
                    ends.insert(i, end)
                buf.pieces += pieces
                buf.covered += added
                self._frag_pieces += len(pieces)
                self._frag_bytes += added
        if buf.total is None or buf.covered != buf.total or buf.proto is None:
            return None
        del frags[key]
        self._release(buf)
        self._update_deadline()
        stats["reassembled"] += 1
        pieces = buf.pieces
        pieces.sort()
        return buf.proto, b"".join([p[1] for p in pieces])

    def _make_room(self, key: FragKey, pieces: int, size: int) -> bool:
        """Evict the oldest other datagrams until ``pieces`` fragments and ``size``
        bytes more fit the bounds.  When the datagram ``key`` alone would not fit,
        drop it with this fragment and return False."""
        evicted = False
        while (self._frag_pieces + pieces > self.max_frag_fragments
               or self._frag_bytes + size > self.max_frag_bytes):
            if not self._evict_oldest(keep=key):
                buf = self._frags.pop(key)
                self._release(buf)
                self._update_deadline()
                self.stats["frag_evicted"] += 1
                self.stats["frag_dropped"] += len(buf.pieces) + 1
                return False
            evicted = True
        if evicted:
            self._update_deadline()
        return True
