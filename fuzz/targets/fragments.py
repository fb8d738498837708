"""IPv4/IPv6 fragment reassembly in packet.PacketDecoder, with an oracle."""

from __future__ import annotations

import atheris

from rtp2ws.net.packet import MalformedPacket, PacketDecoder

from .. import gen
from ..common import check, entry

FRAG_MEMORY_LIMIT = 32 << 20     # bytes the default decoder may hold for fragments
PIECE_OVERHEAD = 128             # a held piece: its tuple and bytes object
BUFFER_OVERHEAD = 256            # a fragment buffer: its object, key and dict slot

INVARIANT = f"""\
A UDP datagram (IPv4 or IPv6, any link type) cut into fragments at 8-byte boundaries and
delivered in any order, with duplicates, overlaps and unrelated fragments in between, is
returned exactly once, unchanged, by the decode call that completes its coverage (the
last fragment and every byte seen); every earlier call returns None.  Whatever arrives,
decode raises nothing but MalformedPacket, the fragment state of the default decoder
(data + {PIECE_OVERHEAD} bytes per held piece + {BUFFER_OVERHEAD} per buffer) stays within
{FRAG_MEMORY_LIMIT >> 20} MiB, and no call takes more than the per-call limit."""


def held_bytes(dec: PacketDecoder) -> int:
    return sum(b.covered + PIECE_OVERHEAD * len(b.pieces) + BUFFER_OVERHEAD for b in dec._frags.values())


def _fragment(version: int, src: bytes, dst: bytes, dgram: bytes, s: int, e: int, ident: int) -> bytes:
    more = e < len(dgram)
    if version == 4:
        return gen.ipv4(src, dst, 17, dgram[s:e], ident=ident, offset=s, more=more)
    return gen.ipv6(src, dst, 44, gen.ipv6_frag_header(17, s, more, ident) + dgram[s:e])


def run(data: bytes, clock) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    linktype = fdp.PickValueInList(gen.LINKTYPES)
    if linktype in (228, 229):
        linktype = 101
    dec = PacketDecoder(linktype)
    now = 1000.0

    def decode(frame: bytes):
        try:
            return clock.call(dec.decode, frame, now)
        except MalformedPacket:
            return None

    used: set[int] = set()      # identifications with fragments held: each oracle datagram gets a new one
    last = False
    for _ in range(fdp.ConsumeIntInRange(1, 3)):
        op = fdp.ConsumeIntInRange(0, 63)
        if op <= 61:
            # one datagram, fragments in fuzz-chosen order; the oracle
            version = 4 if fdp.ConsumeBool() else 6
            src = (gen.ADDRS4 if version == 4 else gen.ADDRS6)[0]
            dst = (gen.ADDRS4 if version == 4 else gen.ADDRS6)[1]
            ident = fdp.ConsumeIntInRange(0, 0xFFFF)
            while ident in used or ident ^ 0x8000 in used:
                ident = (ident + 1) & 0xFFFF
            used.update((ident, ident ^ 0x8000))
            payload = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 1500))
            dgram = gen.udp(4000, 5000, payload)
            n = len(dgram)
            covered = bytearray(n)
            seen_last = False
            for _ in range(fdp.ConsumeIntInRange(1, 40)):
                if fdp.ConsumeIntInRange(0, 7) == 0:
                    # an unrelated fragment (another identification) in between
                    other = gen.ipv4(src, dst, 17, fdp.ConsumeBytes(16), ident=ident ^ 0x8000,
                                     offset=8 * fdp.ConsumeIntInRange(0, 20), more=True) if version == 4 else \
                        gen.ipv6(src, dst, 44, gen.ipv6_frag_header(17, 8 * fdp.ConsumeIntInRange(0, 20), True,
                                                                    ident ^ 0x8000) + fdp.ConsumeBytes(16))
                    check(decode(gen.link(fdp, linktype, other, version, True)) is None, "unrelated fragment completed")
                    continue
                s = 8 * fdp.ConsumeIntInRange(0, (n - 1) // 8)
                e = min(n, s + fdp.ConsumeIntInRange(1, n))
                if fdp.ConsumeBool():
                    e = n if fdp.ConsumeBool() else min(n, (e + 7) // 8 * 8)
                if e < n:
                    e = max(s + 8, e // 8 * 8)       # a fragment with more to follow is a multiple of 8
                    e = min(e, n)
                frame = gen.link(fdp, linktype, _fragment(version, src, dst, dgram, s, e, ident), version, True)
                pkt = decode(frame)
                if s == 0 and e == n:
                    # not a fragment at all (IPv4), or an atomic one (IPv6): it bypasses reassembly
                    check(pkt is not None and pkt.payload == payload, "an unfragmented datagram not returned as is")
                    continue
                covered[s:e] = b"\x01" * (e - s)
                seen_last = seen_last or e == n
                complete = seen_last and all(covered)
                if complete:
                    check(pkt is not None, f"datagram of {n} bytes complete but not returned")
                    check(pkt.payload == payload and pkt.sport == 4000 and pkt.dport == 5000,
                          "reassembled datagram differs from the original")
                    covered = bytearray(n)
                    seen_last = False
                else:
                    check(pkt is None, "a datagram returned before all of it arrived")
        elif op == 62:
            # many datagrams' first fragments: the memory bound
            count = fdp.ConsumeIntInRange(1, 1024)
            size = 8 * fdp.ConsumeIntInRange(1, 8000)
            version = 4 if fdp.ConsumeBool() else 6
            body = bytes(size)
            src, dst = (gen.ADDRS4 if version == 4 else gen.ADDRS6)[:2]
            used.update(range(count))
            for i in range(count):
                ip = gen.ipv4(src, dst, 17, body, ident=i, more=True) if version == 4 else \
                    gen.ipv6(src, dst, 44, gen.ipv6_frag_header(17, 0, True, i) + body)
                decode(gen.link(fdp, linktype, ip, version, True))
            last = True          # one flood per input: it is the expensive op
        else:
            # one datagram in many tiny pieces: the cost per fragment
            count = fdp.ConsumeIntInRange(1, 2048)
            ident = fdp.ConsumeIntInRange(0, 0xFFFF)
            used.add(ident)
            src, dst = gen.ADDRS4[:2]
            for i in range(count):
                decode(gen.link(fdp, linktype, gen.ipv4(src, dst, 17, b"x", ident=ident, offset=8 * i, more=True), 4, True))
        held = held_bytes(dec)
        check(held <= FRAG_MEMORY_LIMIT,
              f"fragment memory {held} bytes in {dec.pending_fragments} buffers exceeds {FRAG_MEMORY_LIMIT}")
        if last:
            break
        now += fdp.PickValueInList([0.0, 0.0, 1.0, 30.0, 31.0])


TestOneInput = entry("fragments", run)
