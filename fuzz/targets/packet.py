"""packet.PacketDecoder.decode on every link type it supports."""

from __future__ import annotations

import atheris

from rtp2ws.net.packet import IPPROTO_TCP, IPPROTO_UDP, MalformedPacket, Packet, PacketDecoder

from .. import gen
from ..common import check, decode_frames, entry

INVARIANT = """\
For a decoder of any supported link type (Ethernet with any VLAN stack, Linux cooked v1/v2,
raw IP in its four numberings, NULL, LOOP) and any sequence of frames and capture times
(tunnels among them: VXLAN, GRE, gretap, ERSPAN I/II/III, IP in IP, nested),
decode(frame, now) returns None or a Packet, or raises MalformedPacket; nothing else.
A Packet is UDP (tcp_seq = tcp_flags = 0) or TCP, with 4- or 16-byte addresses of one
family, 16-bit ports, and a payload no longer than the frame.  The decoder never holds
more fragment buffers than max_frag_buffers.  No call takes more than the per-call limit."""


def _check_packet(pkt, frame: bytes) -> None:
    if pkt is None:
        return
    check(type(pkt) is Packet, f"decode returned {type(pkt).__name__}")
    check(pkt.proto in (IPPROTO_UDP, IPPROTO_TCP), f"proto {pkt.proto}")
    check(len(pkt.src) in (4, 16) and len(pkt.dst) == len(pkt.src), "address lengths")
    check(0 <= pkt.sport <= 0xFFFF and 0 <= pkt.dport <= 0xFFFF, "ports")
    check(type(pkt.payload) is bytes, "payload type")
    if pkt.proto == IPPROTO_UDP:
        check(pkt.tcp_seq == 0 and pkt.tcp_flags == 0, "UDP with TCP fields")
    else:
        check(0 <= pkt.tcp_seq <= 0xFFFFFFFF and 0 <= pkt.tcp_flags <= 0xFF, "TCP fields")


def run(data: bytes, clock) -> None:
    if not data:
        return
    mode, data = data[0], data[1:]
    if mode < 0x40 and data:
        # raw: a link type, then frames as fuzz.common.encode_frames writes them (the seeds: real captures)
        linktype = gen.LINKTYPES[data[0] % len(gen.LINKTYPES)]
        frames = decode_frames(data[1:])
        dec = PacketDecoder(linktype)
    else:
        fdp = atheris.FuzzedDataProvider(data)
        linktype = fdp.PickValueInList(gen.LINKTYPES)
        dec = PacketDecoder(linktype, max_frag_buffers=fdp.ConsumeIntInRange(1, 8) if fdp.ConsumeBool() else 4096,
                            frag_timeout=fdp.PickValueInList([30.0, 0.0, 1.0]))
        frames = []
        t = 1000.0
        for _ in range(fdp.ConsumeIntInRange(1, 16)):
            if fdp.ConsumeIntInRange(0, 5) == 0:
                f = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 200))
            else:
                f, _ = gen.frame(fdp, linktype, lambda p: p.ConsumeBytes(p.ConsumeIntInRange(0, 64)))
            t += fdp.PickValueInList([0.0, 0.02, -0.5, 31.0, 1e9])
            frames.append((t, f))
    for now, frame in frames:
        try:
            pkt = clock.call(dec.decode, frame, now)
        except MalformedPacket:
            continue
        _check_packet(pkt, frame)
        check(dec.pending_fragments <= dec.max_frag_buffers, "more fragment buffers than max_frag_buffers")


TestOneInput = entry("packet", run)
