#!/usr/bin/env python3
"""A SIP proxy with a transcoding media relay, for recording test captures on loopback.

Usage:
    media_relay.py --uac IP:PORT --uas IP:PORT [--ip 127.0.0.1] [--sip-port 15064]
                   [--rtp-ports 16200,16202] [--lifetime 60] [--log FILE]

What it does (like a session border controller: Kamailio + rtpengine, say):

* SIP on --ip:--sip-port.  Requests from the UAC go to the UAS and the UAS's
  responses back, with this proxy's Via added and removed (Max-Forwards minus
  one); requests from the UAS go to the UAC the same way.  Call-ID, tags and
  CSeq pass unchanged, so a capture taken here holds every message twice, one
  copy per hop.
* SDP is rewritten on the way through: the UAS is told to send its media to the
  relay's callee side (second --rtp-ports port), the UAC to the relay's caller
  side (first port).  The relay sends each side's media on to the address that
  side's peer advertised.
* RTP is re-originated, not just forwarded: a new SSRC per direction, its own
  sequence and timestamp bases, and G.711 transcoded between the UAC's PCMA
  (PT 8) and the UAS's PCMU (PT 0); telephone-event packets pass with the new
  SSRC, sequence and timestamp.

So on the wire each direction of the call is two concurrent RTP flows with
different 5-tuples, SSRCs and codecs, one of them from the caller's SDP port
to the relay and the other from the relay to the callee's SDP port: the
topology of a capture taken on the relay's host.

Stdlib only; loopback only; every socket wait is bounded and the process exits
after --lifetime seconds whatever happens.
"""

from __future__ import annotations

import argparse
import os
import re
import select
import signal
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_speech_rtp import linear_to_alaw, linear_to_ulaw  # noqa: E402


def alaw_to_linear(a: int) -> int:
    a ^= 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    if seg == 0:
        t += 8
    elif seg == 1:
        t += 0x108
    else:
        t = (t + 0x108) << (seg - 1)
    return t if a & 0x80 else -t


def ulaw_to_linear(u: int) -> int:
    u = ~u & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return (0x84 - t) if u & 0x80 else (t - 0x84)


A_TO_U = bytes(linear_to_ulaw(alaw_to_linear(i)) for i in range(256))
U_TO_A = bytes(linear_to_alaw(ulaw_to_linear(i)) for i in range(256))


def hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host.startswith("127."):
        raise argparse.ArgumentTypeError(f"{text}: loopback addresses only")
    return host, int(port)


class Direction:
    """One way through the relay: rewrite SSRC/sequence/timestamp, transcode."""

    def __init__(self, ssrc: int, seq_add: int, ts_add: int, table: bytes, pt_from: int, pt_to: int) -> None:
        self.ssrc, self.seq_add, self.ts_add = ssrc, seq_add, ts_add
        self.table, self.pt_from, self.pt_to = table, pt_from, pt_to
        self.packets = 0

    def rewrite(self, data: bytes) -> bytes | None:
        if len(data) < 12 or data[0] >> 6 != 2 or 192 <= data[1] <= 223:
            return None          # not RTP (RTCP is not relayed here)
        b0, b1, seq, ts, _ = struct.unpack_from("!BBHII", data)
        head = 12 + 4 * (b0 & 0x0F)
        pt = b1 & 0x7F
        payload = data[head:]
        if pt == self.pt_from:
            payload = payload.translate(self.table)
            pt = self.pt_to
        self.packets += 1
        return struct.pack("!BBHII", b0 & 0xF0, (b1 & 0x80) | pt, (seq + self.seq_add) & 0xFFFF,
                           (ts + self.ts_add) & 0xFFFFFFFF, self.ssrc) + payload


SDP_C = re.compile(rb"^c=IN IP4 (\S+)\r?$", re.M)
SDP_M = re.compile(rb"^m=audio (\d+) ", re.M)


def rewrite_sdp(msg: bytes, ip: str, port: int) -> tuple[bytes, tuple[str, int] | None]:
    """Point the SDP of ``msg`` at ``ip:port``; return the message and the address it named."""
    head, sep, body = msg.partition(b"\r\n\r\n")
    if not body or b"m=audio" not in body:
        return msg, None
    c, m = SDP_C.search(body), SDP_M.search(body)
    if not c or not m:
        return msg, None
    named = (c.group(1).decode(), int(m.group(1)))
    body = SDP_C.sub(b"c=IN IP4 " + ip.encode(), body)
    body = SDP_M.sub(b"m=audio %d " % port, body, count=1)
    head = re.sub(rb"(?im)^(Content-Length|l)\s*:\s*\d+", b"Content-Length: %d" % len(body), head)
    return head + sep + body, named


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--uac", type=hostport, required=True, help="the caller's SIP address")
    ap.add_argument("--uas", type=hostport, required=True, help="the callee's SIP address")
    ap.add_argument("--ip", default="127.0.0.1")
    ap.add_argument("--sip-port", type=int, default=15064)
    ap.add_argument("--rtp-ports", default="16200,16202", help="caller side,callee side")
    ap.add_argument("--lifetime", type=float, default=60.0, help="exit after this many seconds")
    ap.add_argument("--log", default=None)
    a = ap.parse_args(argv)
    if not a.ip.startswith("127."):
        ap.error("--ip must be a loopback address")
    port_a, port_b = (int(p) for p in a.rtp_ports.split(","))
    log = open(a.log, "a") if a.log else sys.stderr

    def say(text):
        print(f"media_relay: {text}", file=log, flush=True)

    sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sip.bind((a.ip, a.sip_port))
    side_a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)   # towards the caller
    side_a.bind((a.ip, port_a))
    side_b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)   # towards the callee
    side_b.bind((a.ip, port_b))
    to_callee = Direction(0x5BC0A001, 20000, 3000000, A_TO_U, 8, 0)   # caller's audio, out of side B
    to_caller = Direction(0x5BC0B002, 40000, 7000000, U_TO_A, 0, 8)   # callee's audio, out of side A
    media = {"caller": None, "callee": None}    # where each party wants its media (from its SDP)
    branch = 0
    say(f"SIP {a.ip}:{a.sip_port}, relay {a.ip}:{port_a} (caller side) / {a.ip}:{port_b} (callee side)")
    end = time.monotonic() + a.lifetime
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    while not stop and (left := end - time.monotonic()) > 0:
        ready, _, _ = select.select([sip, side_a, side_b], [], [], min(left, 0.5))
        for s in ready:
            data, peer = s.recvfrom(65535)
            if s is sip:
                from_uac = peer == a.uac
                if not from_uac and peer != a.uas:
                    continue
                is_request = not data.startswith(b"SIP/2.0 ")
                if is_request:
                    branch += 1
                    first, _, rest = data.partition(b"\r\n")
                    rest = re.sub(rb"(?im)^Max-Forwards\s*:\s*(\d+)",
                                  lambda m: b"Max-Forwards: %d" % (int(m.group(1)) - 1), rest, count=1)
                    via = b"Via: SIP/2.0/UDP %s:%d;branch=z9hG4bKrelay%d" % (a.ip.encode(), a.sip_port, branch)
                    data = first + b"\r\n" + via + b"\r\n" + rest
                else:
                    data = re.sub(rb"(?im)^Via:[^\r\n]*;branch=z9hG4bKrelay\d+\r\n", b"", data, count=1)
                # the caller (UAC side) is told to send to side A; the callee to side B
                data, named = rewrite_sdp(data, a.ip, port_a if not from_uac else port_b)
                if named:
                    media["caller" if from_uac else "callee"] = named
                    say(f"{'caller' if from_uac else 'callee'} media at {named[0]}:{named[1]}")
                sip.sendto(data, a.uas if from_uac else a.uac)
            elif s is side_a and media["callee"]:
                out = to_callee.rewrite(data)
                if out is not None:
                    side_b.sendto(out, media["callee"])
            elif s is side_b and media["caller"]:
                out = to_caller.rewrite(data)
                if out is not None:
                    side_a.sendto(out, media["caller"])
    say(f"relayed {to_callee.packets} RTP packets caller->callee, {to_caller.packets} callee->caller")
    return 0


if __name__ == "__main__":
    sys.exit(main())
