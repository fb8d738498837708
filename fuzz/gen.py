"""Structure-aware generators: FuzzedDataProvider choices into frames, SIP and SDP.

Every choice is read from the fuzzer's bytes, so libFuzzer's mutations move through
well-formed layers (and, with ``corrupt``, just past them) instead of stopping at the
first length check.  Nothing here checks checksums: rtp2ws does not either."""

from __future__ import annotations

import struct

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
    LINK_TYPES,
    LINKTYPE_RAW,
)

# Every link type rtp2ws reads: the keys of net.packet's one table (LINK_TYPES), in the
# order the committed seeds index them (fuzz/corpus/packet: the raw mode's second byte;
# fuzz/targets/pipeline.py: ``data[1] % len(LINKTYPES)``).  That order is the seeds', not
# the table's, so it is kept here (tests/test_layout.py checks it); a link type added to
# the table comes after these and the indices the seeds use keep their meaning.
SEED_ORDER = (DLT_EN10MB, DLT_LINUX_SLL, DLT_LINUX_SLL2, DLT_RAW, DLT_RAW_OPENBSD, LINKTYPE_RAW,
              DLT_IPV4, DLT_IPV6, DLT_NULL, DLT_LOOP)
LINKTYPES = [lt for lt in SEED_ORDER if lt in LINK_TYPES] + [lt for lt in LINK_TYPES if lt not in SEED_ORDER]
ADDRS4 = [b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02", b"\xc0\x00\x02\x01", b"\x00\x00\x00\x00"]
ADDRS6 = [b"\x20\x01\x0d\xb8" + b"\0" * 11 + b"\x01", b"\x20\x01\x0d\xb8" + b"\0" * 11 + b"\x02", b"\0" * 16]
PORTS = [5060, 4000, 4001, 5000, 5001, 4789, 0, 65535]


def u16(fdp, choices=PORTS) -> int:
    return fdp.PickValueInList(choices) if fdp.ConsumeBool() else fdp.ConsumeIntInRange(0, 0xFFFF)


def corrupt(fdp, frame: bytes) -> bytes:
    """Sometimes flip a byte or cut the frame short."""
    how = fdp.ConsumeIntInRange(0, 7)
    if how == 1 and frame:
        i = fdp.ConsumeIntInRange(0, len(frame) - 1)
        return frame[:i] + bytes([fdp.ConsumeIntInRange(0, 255)]) + frame[i + 1:]
    if how == 2 and frame:
        return frame[:fdp.ConsumeIntInRange(0, len(frame) - 1)]
    if how == 3:
        return frame + fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 16))
    return frame


# -- link layer -------------------------------------------------------------------

def ethertype_of(version: int) -> int:
    return 0x0800 if version == 4 else 0x86DD


def link(fdp, linktype: int, ip: bytes, version: int, exact: bool = False) -> bytes:
    """``ip`` in a ``linktype`` frame; unless ``exact``, sometimes with a wrong ethertype or family."""
    et = ethertype_of(version) if exact or fdp.ConsumeIntInRange(0, 15) else fdp.ConsumeIntInRange(0, 0xFFFF)
    if linktype == DLT_EN10MB:
        tags = b""
        for _ in range(fdp.ConsumeIntInRange(0, 3) if fdp.ConsumeIntInRange(0, 3) == 0 else 0):
            tags += struct.pack("!HH", fdp.PickValueInList([0x8100, 0x88A8, 0x9100]), fdp.ConsumeIntInRange(0, 0xFFFF))
        return b"\x02\0\0\0\0\x01\x02\0\0\0\0\x02" + tags + struct.pack("!H", et) + ip
    if linktype == DLT_LINUX_SLL:
        return struct.pack("!HHH8sH", 0, 1, 6, b"\x02\0\0\0\0\x01\0\0", et) + ip
    if linktype == DLT_LINUX_SLL2:
        return struct.pack("!HHIHBB8s", et, 0, 1, 1, 0, 6, b"\x02\0\0\0\0\x01\0\0") + ip
    if linktype in (DLT_NULL, DLT_LOOP):
        fam = 2 if version == 4 else fdp.PickValueInList([10, 24, 28, 30])
        if not exact and not fdp.ConsumeIntInRange(0, 15):
            fam = fdp.ConsumeIntInRange(0, 0xFFFFFFFF)
        le = linktype == DLT_NULL and fdp.ConsumeBool()
        return struct.pack("<I" if le else "!I", fam) + ip
    return ip      # raw IP link types


# -- IP and transport -------------------------------------------------------------------

def ipv4(src: bytes, dst: bytes, proto: int, l4: bytes, *, ident: int = 0, offset: int = 0, more: bool = False,
         options: bytes = b"", total: int | None = None) -> bytes:
    options += b"\0" * (-len(options) % 4)
    options = options[:40]
    hlen = 20 + len(options)
    flags = (offset // 8) & 0x1FFF | (0x2000 if more else 0)
    tl = hlen + len(l4) if total is None else total
    return struct.pack("!BBHHHBBH4s4s", 0x40 | hlen // 4, 0, tl & 0xFFFF, ident & 0xFFFF, flags, 64, proto, 0,
                       src, dst) + options + l4


def ipv6(src: bytes, dst: bytes, nh: int, body: bytes, plen: int | None = None) -> bytes:
    n = len(body) if plen is None else plen
    return struct.pack("!IHBB", 0x60000000, n & 0xFFFF, nh, 64) + src + dst + body


def ipv6_frag_header(nxt: int, offset: int, more: bool, ident: int) -> bytes:
    return struct.pack("!BxHI", nxt, (offset & 0xFFF8) | (1 if more else 0), ident & 0xFFFFFFFF)


def udp(sport: int, dport: int, payload: bytes, ulen: int | None = None) -> bytes:
    n = 8 + len(payload) if ulen is None else ulen
    return struct.pack("!HHHH", sport, dport, n & 0xFFFF, 0) + payload


def tcp(sport: int, dport: int, seq: int, flags: int, payload: bytes, options: bytes = b"") -> bytes:
    options += b"\0" * (-len(options) % 4)
    options = options[:40]
    doff = (20 + len(options)) // 4
    return struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, 0, doff << 4, flags & 0xFF, 65535, 0, 0) \
        + options + payload


def ipv6_ext_chain(fdp, final: int) -> tuple[int, bytes]:
    """(first next-header, bytes) of 0-3 extension headers ending at ``final``."""
    kinds = [fdp.PickValueInList([0, 43, 60, 135, 51, 44]) for _ in range(fdp.ConsumeIntInRange(0, 3))]
    out = b""
    for i in range(len(kinds) - 1, -1, -1):
        kind = kinds[i]
        nxt = kinds[i + 1] if i + 1 < len(kinds) else final
        if kind == 44:
            out = ipv6_frag_header(nxt, 0, False, 0x1234) + out      # atomic fragment
        elif kind == 51:
            out = struct.pack("!BBH", nxt, 1, 0) + b"\0" * 8 + out   # AH: (1 + 2) * 4 = 12 bytes
        else:
            out = struct.pack("!BB", nxt, 0) + b"\x01\x04\0\0\0\0" + out
    return (kinds[0] if kinds else final), out


def ip_packet(fdp, version: int, proto: int, l4: bytes, src: bytes | None = None, dst: bytes | None = None) -> bytes:
    if version == 4:
        src = src or fdp.PickValueInList(ADDRS4)
        dst = dst or fdp.PickValueInList(ADDRS4)
        opts = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 12)) if not fdp.ConsumeIntInRange(0, 7) else b""
        total = 0 if not fdp.ConsumeIntInRange(0, 31) else None    # length left to the NIC
        return ipv4(src, dst, proto, l4, ident=fdp.ConsumeIntInRange(0, 0xFFFF), options=opts, total=total)
    src = src or fdp.PickValueInList(ADDRS6)
    dst = dst or fdp.PickValueInList(ADDRS6)
    nh, ext = ipv6_ext_chain(fdp, proto) if not fdp.ConsumeIntInRange(0, 3) else (proto, b"")
    body = ext + l4
    return ipv6(src, dst, nh, body, 0 if not fdp.ConsumeIntInRange(0, 31) else None)


def vxlan(inner_frame: bytes, flags: int = 0x08) -> bytes:
    return struct.pack("!B3xI", flags, 0x000100) + inner_frame


def gre_body(fdp, ptype: int, inner: bytes, *, seq: bool | None = None) -> bytes:
    """A GRE header (RFC 2784/2890: checksum, key and sequence number each maybe; version
    0 mostly) for ``ptype`` around ``inner``; the checksum is not computed (not checked)."""
    csum, key = fdp.ConsumeBool(), fdp.ConsumeBool()
    seq = fdp.ConsumeBool() if seq is None else seq
    flags = (0x8000 if csum else 0) | (0x2000 if key else 0) | (0x1000 if seq else 0)
    if not fdp.ConsumeIntInRange(0, 15):
        flags |= fdp.PickValueInList([0x4000, 0x0001, 0x0080])     # routing, version 1, reserved
    opt = b"\0\0\0\0" * csum + struct.pack("!I", fdp.ConsumeIntInRange(0, 0xFFFFFFFF)) * key
    return struct.pack("!HH", flags, ptype) + opt + struct.pack("!I", fdp.ConsumeIntInRange(0, 0xFFFFFFFF)) * seq + inner


def erspan_body(fdp, eth_frame: bytes) -> bytes:
    """ERSPAN type I, II or III (GRE 0x88BE or 0x22EB, as Wireshark reads them) around an
    Ethernet frame, the version, frame type and O bit mostly right."""
    kind = fdp.ConsumeIntInRange(1, 3)
    if kind == 1:
        return gre_body(fdp, 0x88BE, eth_frame, seq=False)
    right = fdp.ConsumeIntInRange(0, 7) != 0
    if kind == 2:
        ver = 1 if right else fdp.ConsumeIntInRange(0, 15)
        hdr = struct.pack("!HHI", ver << 12 | u16(fdp) & 0xFFF, u16(fdp), fdp.ConsumeIntInRange(0, 0xFFFFFFFF))
        return gre_body(fdp, 0x88BE, hdr + eth_frame, seq=True)
    ver = 2 if right else fdp.ConsumeIntInRange(0, 15)
    sub = fdp.ConsumeBool()
    word = (0 if right else fdp.ConsumeIntInRange(0, 31)) << 10 | sub
    hdr = struct.pack("!HHIHH", ver << 12 | u16(fdp) & 0xFFF, u16(fdp), fdp.ConsumeIntInRange(0, 0xFFFFFFFF), 0, word)
    if sub:
        hdr += fdp.ConsumeBytes(8).ljust(8, b"\0")
    return gre_body(fdp, 0x22EB, hdr + eth_frame, seq=True)


def tunnel(fdp, payload_fn) -> tuple[int, bytes]:
    """(IP protocol, its body) of a tunnel around a whole inner packet or frame (whose
    transport payload is ``payload_fn(fdp)``): VXLAN in UDP, GRE (IPv4, IPv6 or
    Ethernet inside), ERSPAN, or IP in IP."""
    kind = fdp.ConsumeIntInRange(0, 4)
    if kind == 0:
        inner, _ = frame(fdp, 1, payload_fn) if fdp.ConsumeIntInRange(0, 3) == 0 else (payload_fn(fdp), 0)
        return 17, udp(u16(fdp), 4789, vxlan(inner, 0x08 if fdp.ConsumeIntInRange(0, 7) else 0))
    inner, _ = frame(fdp, 1, payload_fn)          # Ethernet: its IP packet after 14 bytes
    ip_pkt = inner[14:]
    if kind == 1:
        v6 = bool(ip_pkt) and ip_pkt[0] >> 4 == 6
        return 47, gre_body(fdp, fdp.PickValueInList([0x86DD if v6 else 0x0800, 0x0800, 0x86DD, 0x8847]), ip_pkt)
    if kind == 2:
        return 47, gre_body(fdp, 0x6558, inner)
    if kind == 3:
        return 47, erspan_body(fdp, inner)
    return fdp.PickValueInList([4, 41]), ip_pkt


def frame(fdp, linktype: int, payload_fn) -> tuple[bytes, int]:
    """One whole frame: link, IPv4/IPv6, UDP/TCP/other, maybe inside a tunnel (``tunnel``:
    VXLAN, GRE, ERSPAN, IP in IP).  ``payload_fn(fdp)`` gives the transport payload.
    Returns (frame, transport protocol)."""
    version = 4 if fdp.ConsumeIntInRange(0, 2) else 6
    kind = fdp.ConsumeIntInRange(0, 9)
    payload = payload_fn(fdp)
    if kind <= 5:
        proto, l4 = 17, udp(u16(fdp), u16(fdp), payload)
    elif kind <= 7:
        proto = 6
        l4 = tcp(u16(fdp), u16(fdp), fdp.ConsumeIntInRange(0, 0xFFFFFFFF), fdp.ConsumeIntInRange(0, 0x3F), payload,
                 fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 8)) if fdp.ConsumeBool() else b"")
    elif kind == 8:
        proto, l4 = tunnel(fdp, payload_fn)
    else:
        proto, l4 = fdp.PickValueInList([1, 58, 47, 132, 255]), payload
    ip = ip_packet(fdp, version, proto, l4)
    return corrupt(fdp, link(fdp, linktype, ip, version)), proto


# -- SIP and SDP ---------------------------------------------------------------------------

METHODS = ["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "UPDATE", "PRACK", "INFO", "REGISTER", "invite", "FOO"]
STATUSES = [100, 180, 183, 200, 202, 401, 407, 404, 486, 487, 500, 603, 999, 0]
CALL_IDS = ["c1@test", "c2@test", "rtp:10.0.0.1:4000-10.0.0.2:5000", ""]
TAGS = ["ftag1", "ttag1", "x", ""]


def number_text(fdp, small: int) -> str:
    """A decimal for a header or an SDP field: usually ``small``, sometimes very long."""
    how = fdp.ConsumeIntInRange(0, 15)
    if how == 0:
        return "0" * fdp.ConsumeIntInRange(1, 6000) + str(small)      # long: int() has a digit limit
    if how == 1:
        return str(fdp.ConsumeIntInRange(0, 2 ** 64))
    if how == 2:
        return fdp.PickValueInList(["", "-1", " 1", "1a", "\u00b2", "\u0663", "1.5", "0x10", "+3"])
    return str(small)


def text(fdp, limit: int = 24) -> str:
    return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, limit)).decode("utf-8", "replace")


def sdp(fdp) -> bytes:
    lines = ["v=0" if fdp.ConsumeIntInRange(0, 15) else "v=" + text(fdp, 4)]
    ip4 = fdp.ConsumeIntInRange(0, 3) != 0
    addr = fdp.PickValueInList(["10.0.0.1", "10.0.0.2", "0.0.0.0", "2001:db8::1", "::", "224.2.1.1/127/3"])
    lines.append(f"o=- 1 1 IN {'IP4' if ip4 else 'IP6'} {addr}")
    lines.append("s=-")
    for _ in range(fdp.ConsumeIntInRange(0, 12)):
        what = fdp.ConsumeIntInRange(0, 11)
        if what == 0:
            lines.append(f"c=IN {'IP4' if ip4 else 'IP6'} {addr}")
        elif what == 1:
            fmts = " ".join(number_text(fdp, fdp.PickValueInList([0, 8, 101, 13, 18, 127, 200]))
                            for _ in range(fdp.ConsumeIntInRange(0, 4)))
            kind = fdp.PickValueInList(["audio", "video", "AUDIO", "application"])
            proto = fdp.PickValueInList(["RTP/AVP", "RTP/SAVP", "UDP/TLS/RTP/SAVPF", "udp"])
            port = number_text(fdp, fdp.PickValueInList([4000, 5000, 0, 65535, 65536]))
            lines.append(f"m={kind} {port}{'/2' if not fdp.ConsumeIntInRange(0, 7) else ''} {proto} {fmts}")
        elif what == 2:
            lines.append(f"a=rtpmap:{number_text(fdp, fdp.PickValueInList([0, 8, 101]))} "
                         f"{fdp.PickValueInList(['PCMA', 'PCMU', 'telephone-event', 'opus', 'CN'])}/"
                         f"{number_text(fdp, fdp.PickValueInList([8000, 16000, 48000]))}"
                         + (f"/{number_text(fdp, 2)}" if fdp.ConsumeBool() else ""))
        elif what == 3:
            lines.append(f"a={fdp.PickValueInList(['sendrecv', 'sendonly', 'recvonly', 'inactive', 'rtcp-mux'])}")
        elif what == 4:
            lines.append(f"a=ptime:{number_text(fdp, 20)}" + (".5" if fdp.ConsumeBool() else ""))
        elif what == 5:
            lines.append(f"a=rtcp:{number_text(fdp, 4001)}" + (f" IN IP4 {addr}" if fdp.ConsumeBool() else ""))
        elif what == 6:
            lines.append(f"a=fmtp:{number_text(fdp, 101)} 0-16")
        elif what == 7:
            lines.append(f"a={fdp.PickValueInList(['crypto', 'fingerprint', 'zrtp-hash', 'maxptime'])}:"
                         f"{number_text(fdp, 1)}")
        elif what == 8:
            lines.append(f"c=IN IP4 {text(fdp, 12)}")
        else:
            lines.append(text(fdp, 40))
    sep = fdp.PickValueInList(["\r\n", "\n", "\r"])
    return (sep.join(lines) + sep).encode("utf-8", "surrogatepass")


def sip_message(fdp, body: bytes | None = None) -> bytes:
    """A SIP message that is usually well formed, with fuzz-chosen values and defects."""
    if fdp.ConsumeIntInRange(0, 2):
        start = f"{fdp.PickValueInList(METHODS)} sip:{fdp.PickValueInList(['2000@b', '1000@a', 'x'])} SIP/2.0"
    else:
        start = f"SIP/2.0 {fdp.PickValueInList(STATUSES)} {text(fdp, 8) or 'OK'}"
    if not fdp.ConsumeIntInRange(0, 15):
        start = text(fdp, 40)
    if body is None:
        body = sdp(fdp) if fdp.ConsumeIntInRange(0, 2) == 0 else b""
    compact = fdp.ConsumeIntInRange(0, 3) == 0
    headers = []
    for _ in range(fdp.ConsumeIntInRange(0, 10)):
        what = fdp.ConsumeIntInRange(0, 13)
        if what == 0:
            headers.append(("i" if compact else "Call-ID", fdp.PickValueInList(CALL_IDS)))
        elif what == 1:
            headers.append(("CSeq", f"{number_text(fdp, fdp.ConsumeIntInRange(1, 4))} "
                                    f"{fdp.PickValueInList(METHODS)}"))
        elif what == 2:
            tag = fdp.PickValueInList(TAGS)
            headers.append(("f" if compact else "From", f"\"A\" <sip:1000@a>;tag={tag}" if tag else "<sip:1000@a>"))
        elif what == 3:
            tag = fdp.PickValueInList(TAGS)
            headers.append(("t" if compact else "To", f"<sip:2000@b>;tag={tag}" if tag else "sip:2000@b"))
        elif what == 4:
            headers.append(("v" if compact else "Via", "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK" + text(fdp, 6)))
        elif what == 5:
            headers.append(("c" if compact else "Content-Type",
                            fdp.PickValueInList(["application/sdp", "multipart/mixed;boundary=b1", "text/plain"])))
        elif what == 6:
            headers.append(("l" if compact else "Content-Length", number_text(fdp, len(body))))
        elif what == 7:
            headers.append((" ", text(fdp, 10)))                  # a folded line
        elif what == 8:
            headers.append((text(fdp, 10), text(fdp, 20)))
        else:
            headers.append(("Contact", "<sip:" + text(fdp, 10) + ">"))
    if fdp.ConsumeIntInRange(0, 3) and not any(n.lower() in ("content-length", "l") for n, _ in headers):
        headers.append(("l" if compact else "Content-Length", str(len(body))))
    if body and fdp.ConsumeIntInRange(0, 7) == 0:           # the SDP inside a multipart body
        body = b"--b1\r\nContent-Type: application/sdp\r\n\r\n" + body + b"\r\n--b1--\r\n"
    lines = [start] + [(f"{n}: {v}" if n.strip() else f" {v}") for n, v in headers]
    eol = "\r\n" if fdp.ConsumeIntInRange(0, 7) else "\n"
    return (eol.join(lines) + eol + eol).encode("utf-8", "surrogatepass") + body
