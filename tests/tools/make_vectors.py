#!/usr/bin/env python3
"""Write the binary test vectors of tests/data/vectors/ (read by tests/system/test_vectors.py).

One valid input per parser, ``<name>.bin``, with ``<name>_truncated.bin`` (cut where a
capture or a lost segment would cut it) and ``<name>_invalid.bin`` (a field no sender
may put there), as aiortc keeps its ``rtp.bin`` / ``rtcp_sr_truncated.bin``:

========================  ==============================================================
``rtp``                   RTP (RFC 3550 5.1), PCMA, marker set
``rtp_csrc_ext``          RTP with two CSRCs, a header extension and 4 bytes of padding
``rtp_dtmf``              RTP carrying a telephone-event (valid only)
``telephone_event``       RFC 4733 2.3 event payload: key 5, end, volume 10, 960 units
``sip_invite``            SIP INVITE over UDP with an SDP body, a folded header
``sip_200_compact``       SIP 200 OK in compact header forms (valid only)
``sdp_offer``             SDP offer: PCMA, PCMU, telephone-event, CN; a=rtcp, a=ptime
``eth_ipv4_udp``          Ethernet / IPv4 / UDP carrying ``rtp``
``eth_ipv4_tcp``          Ethernet / IPv4 / TCP carrying one SIP OPTIONS
``eth_ipv6_udp``          Ethernet / IPv6 / UDP carrying ``sip_invite``
``sll_ipv4_udp``          Linux cooked v1 / 802.1Q tag / IPv4 / UDP carrying ``rtp``
``sip_tcp_stream``        a SIP-over-TCP byte stream: keep-alives, OPTIONS, INVITE
========================  ==============================================================

Headers are packed by hand from the RFC layouts (``struct``), SIP and SDP text by
tests/callgen.py, IP/UDP/TCP and link headers by tests/netgen.py: nothing here uses
the serializers under test, and nothing depends on floating point, the clock or a
random seed, so the bytes are the same on every machine.

    python tests/tools/make_vectors.py            # rewrite tests/data/vectors/*.bin
    python tests/tools/make_vectors.py --check    # exit 1 if a file differs
"""

from __future__ import annotations

import argparse
import struct
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
OUT = TESTS / "data" / "vectors"
for _path in (TESTS, TESTS.parent):      # netgen and callgen; this checkout's rtp2ws
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import numpy as np

from rtp2ws.codec import g711
from rtp2ws.net.packet import DLT_EN10MB, DLT_LINUX_SLL

import callgen
import netgen


def _replace_once(data: bytes, old: bytes, new: bytes) -> bytes:
    if data.count(old) != 1:
        raise ValueError(f"{old!r} is not in the vector exactly once")
    return data.replace(old, new)


def _set(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value):]


# -- RTP (RFC 3550 section 5.1) ------------------------------------------------------------
#
#   0                   1                   2                   3
#   |V=2|P|X|  CC   |M|     PT      |       sequence number         |
#   |                           timestamp                           |
#   |           synchronization source (SSRC) identifier            |
#   |            contributing source (CSRC) identifiers  ...        |


def rtp_header(*, seq: int, ts: int, ssrc: int, pt: int, marker: bool = False, csrcs=(), ext: bool = False,
               pad: bool = False, version: int = 2) -> bytes:
    b0 = version << 6 | (0x20 if pad else 0) | (0x10 if ext else 0) | len(csrcs)
    b1 = (0x80 if marker else 0) | pt
    return struct.pack("!BBHII", b0, b1, seq, ts, ssrc) + b"".join(struct.pack("!I", c) for c in csrcs)


def triangle(n: int, period: int = 40, peak: int = 12000) -> np.ndarray:
    """A triangle wave in integers only (the same samples everywhere)."""
    i = np.arange(n) % period
    half = period // 2
    return (np.where(i < half, i, period - i) * (2 * peak // half) - peak).astype(np.int16)


RTP_PAYLOAD = g711.encode_alaw(triangle(160))          # 20 ms of A-law
RTP = rtp_header(seq=0x1F2E, ts=0x00012345, ssrc=0xCA11E401, pt=8, marker=True) + RTP_PAYLOAD

# Two CSRCs, then the extension (RFC 3550 5.3.1): profile 0xBEDE (RFC 8285 one-byte
# headers), length 2 words: element id 1, len 1 (two bytes: 0x10 0x7F), padding to the
# word; then 80 bytes of µ-law and 4 bytes of padding, the last one counting them.
RTP_EXT_VALUE = bytes([0x11, 0x7F, 0x00, 0x00, 0x20, 0x01, 0x02, 0x03])
RTP_CSRC_EXT = (rtp_header(seq=65535, ts=0xFFFFFFF0, ssrc=0x0BADCAFE, pt=0, csrcs=(0x11111111, 0x22222222),
                           ext=True, pad=True)
                + struct.pack("!HH", 0xBEDE, len(RTP_EXT_VALUE) // 4) + RTP_EXT_VALUE
                + g711.encode_ulaw(triangle(80, period=16)) + b"\x00\x00\x00\x04")

# -- telephone-event (RFC 4733 section 2.3) ----------------------------------------------------
#
#   |     event     |E|R| volume    |          duration             |

TELEPHONE_EVENT = struct.pack("!BBH", 5, 0x80 | 10, 960)
RTP_DTMF = rtp_header(seq=0x1F40, ts=0x00020000, ssrc=0xCA11E401, pt=101) + TELEPHONE_EVENT

# -- SIP and SDP (callgen's text) -----------------------------------------------------------------

CALLER = callgen.Party("192.0.2.10", 5060, 4000, "alice")
CALLEE = callgen.Party("192.0.2.20", 5060, 5000, "bob")

SDP_OFFER = callgen.sdp(CALLER.ip, CALLER.rtp_port, pts=(8, 0, 101, 13), direction="sendrecv",
                        extra="a=rtcp:4001 IN IP4 192.0.2.11").encode()

SIP_INVITE = callgen.sip(
    "INVITE sip:bob@192.0.2.20:5060 SIP/2.0",
    [
        ("Via", "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKvec1"),
        ("Via", "SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bKproxy;received=198.51.100.1"),
        ("Max-Forwards", "70"),
        ("From", '"Alice" <sip:alice@192.0.2.10>;tag=ftag-vec'),
        ("To", "<sip:bob@192.0.2.20>"),
        ("Call-ID", "vectors-1@192.0.2.10"),
        ("CSeq", "1 INVITE"),
        ("Contact", "<sip:alice@192.0.2.10:5060>"),
        ("Subject", "test vectors,\r\n continued on a folded line"),
    ],
    SDP_OFFER.decode(),
)

SIP_200_COMPACT = callgen.sip(
    "SIP/2.0 200 OK",
    [
        ("v", "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKvec1"),
        ("f", '"Alice" <sip:alice@192.0.2.10>;tag=ftag-vec'),
        ("t", "<sip:bob@192.0.2.20>;tag=ttag-vec"),
        ("i", "vectors-1@192.0.2.10"),
        ("CSeq", "1 INVITE"),
        ("m", "<sip:bob@192.0.2.20:5060>"),
    ],
    callgen.sdp(CALLEE.ip, CALLEE.rtp_port, pts=(8, 101)),
    compact=True,
)

SIP_OPTIONS = callgen.sip(
    "OPTIONS sip:bob@192.0.2.20 SIP/2.0",
    [
        ("Via", "SIP/2.0/TCP 192.0.2.10:5060;branch=z9hG4bKopt"),
        ("From", "<sip:alice@192.0.2.10>;tag=o1"),
        ("To", "<sip:bob@192.0.2.20>"),
        ("Call-ID", "options-1@192.0.2.10"),
        ("CSeq", "7 OPTIONS"),
    ],
)

# A SIP-over-TCP stream (RFC 3261 18.3): CRLF keep-alive (RFC 5626), OPTIONS (no
# body), a double-CRLF keep-alive, the INVITE with its body.
SIP_TCP_STREAM = b"\r\n" + SIP_OPTIONS + b"\r\n\r\n" + _replace_once(
    SIP_INVITE, b"SIP/2.0/UDP 192.0.2.10", b"SIP/2.0/TCP 192.0.2.10")

# Not a start line, then a message whose Content-Length has 11 significant digits (more
# than any stream can hold: rtp2ws.net.tcpstream.MAX_LENGTH_DIGITS), then a good one.
SIP_TCP_BAD_LENGTH = callgen.sip(
    "INFO sip:bob@192.0.2.20 SIP/2.0",
    [("Call-ID", "bad-length@192.0.2.10"), ("CSeq", "2 INFO")],
)
SIP_TCP_BAD_LENGTH = _replace_once(SIP_TCP_BAD_LENGTH, b"Content-Length: 0", b"Content-Length: 99999999999")
SIP_TCP_GARBAGE = b"\x16\x03\x01 not a SIP start line\r\n"


def vectors() -> dict[str, bytes]:
    """Every vector by name (the file is ``<name>.bin``)."""
    v: dict[str, bytes] = {}

    # RTP: cut inside the fixed header; version 1.
    v["rtp"] = RTP
    v["rtp_truncated"] = RTP[:11]
    v["rtp_invalid"] = _set(RTP, 0, bytes([RTP[0] & 0x3F | 1 << 6]))
    # ... with CSRCs, extension, padding: cut inside the extension value; a padding
    # count larger than what follows the header.
    v["rtp_csrc_ext"] = RTP_CSRC_EXT
    v["rtp_csrc_ext_truncated"] = RTP_CSRC_EXT[:12 + 8 + 4 + 4]
    v["rtp_csrc_ext_invalid"] = RTP_CSRC_EXT[:-1] + bytes([255])
    v["rtp_dtmf"] = RTP_DTMF

    # telephone-event: three bytes; the R bit set (a sender MUST clear it, a receiver
    # MUST ignore it: RFC 4733 2.3.3).
    v["telephone_event"] = TELEPHONE_EVENT
    v["telephone_event_truncated"] = TELEPHONE_EVENT[:3]
    v["telephone_event_invalid"] = _set(TELEPHONE_EVENT, 1, bytes([TELEPHONE_EVENT[1] | 0x40]))

    # SIP: the datagram lost its last 20 bytes (the body is shorter than Content-Length);
    # a header line without its colon.
    v["sip_invite"] = SIP_INVITE
    v["sip_invite_truncated"] = SIP_INVITE[:-20]
    v["sip_invite_invalid"] = _replace_once(SIP_INVITE, b"Max-Forwards: 70", b"Max-Forwards 70")
    v["sip_200_compact"] = SIP_200_COMPACT

    # SDP: cut after the m= line's port; a c= line without its separators.
    v["sdp_offer"] = SDP_OFFER
    mline = b"m=audio 4000"
    v["sdp_offer_truncated"] = SDP_OFFER[:SDP_OFFER.index(mline) + len(mline)]
    v["sdp_offer_invalid"] = _replace_once(SDP_OFFER, b"c=IN IP4 192.0.2.10", b"c=IN_IP4_192.0.2.10")

    # Ethernet / IPv4 / UDP: a snap length that cut the frame; a UDP length of 4.
    eth_v4 = netgen.link(DLT_EN10MB, netgen.udp(CALLER.ip, CALLER.rtp_port, CALLEE.ip, CALLEE.rtp_port, RTP))
    v["eth_ipv4_udp"] = eth_v4
    v["eth_ipv4_udp_truncated"] = eth_v4[:96]
    v["eth_ipv4_udp_invalid"] = _set(eth_v4, 14 + 20 + 4, struct.pack("!H", 4))

    # Ethernet / IPv4 / TCP: cut; a data offset of 4 words.
    eth_tcp = netgen.link(DLT_EN10MB, netgen.tcp(CALLER.ip, 5060, CALLEE.ip, 5060, SIP_OPTIONS, seq=0x10000000))
    v["eth_ipv4_tcp"] = eth_tcp
    v["eth_ipv4_tcp_truncated"] = eth_tcp[:14 + 20 + 30]
    v["eth_ipv4_tcp_invalid"] = _set(eth_tcp, 14 + 20 + 12, bytes([4 << 4]))

    # Ethernet / IPv6 / UDP: cut; version 4 in the IPv6 header.
    eth_v6 = netgen.link(DLT_EN10MB, netgen.udp("2001:db8::10", 5060, "2001:db8::20", 5060, SIP_INVITE))
    v["eth_ipv6_udp"] = eth_v6
    v["eth_ipv6_udp_truncated"] = eth_v6[:200]
    v["eth_ipv6_udp_invalid"] = _set(eth_v6, 14, bytes([0x40 | eth_v6[14] & 0x0F]))

    # Linux cooked v1 with the 802.1Q tag libpcap puts back / IPv4 / UDP: cut inside the
    # cooked header; an IPv4 header length of 4 words.
    sll = netgen.link(DLT_LINUX_SLL, netgen.udp(CALLER.ip, CALLER.rtp_port, CALLEE.ip, CALLEE.rtp_port, RTP),
                      vlans=(100,))
    v["sll_ipv4_udp"] = sll
    v["sll_ipv4_udp_truncated"] = sll[:15]
    v["sll_ipv4_udp_invalid"] = _set(sll, 16 + 4, bytes([0x44]))

    # SIP over TCP: the stream ends inside the INVITE's body; garbage and an
    # unholdable Content-Length before a good message.
    v["sip_tcp_stream"] = SIP_TCP_STREAM
    v["sip_tcp_stream_truncated"] = SIP_TCP_STREAM[:-20]
    v["sip_tcp_stream_invalid"] = SIP_TCP_GARBAGE + SIP_TCP_BAD_LENGTH + SIP_OPTIONS
    return v


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the files instead of writing them")
    ap.add_argument("--out", type=Path, default=OUT, help=f"directory (default {OUT})")
    args = ap.parse_args(argv)
    want = vectors()
    if args.check:
        have = {p.stem: p.read_bytes() for p in args.out.glob("*.bin")}
        bad = sorted(n for n in want.keys() | have.keys() if want.get(n) != have.get(n))
        for name in bad:
            print(f"differs: {name}.bin", file=sys.stderr)
        return 1 if bad else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, data in want.items():
        (args.out / f"{name}.bin").write_bytes(data)
    print(f"wrote {len(want)} vectors to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
