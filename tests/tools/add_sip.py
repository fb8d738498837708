#!/usr/bin/env python3
"""Give a media-only capture SIP signalling: an INVITE/100/180/200/ACK (SDP, PCMU) 0.1 s
before its first packet and a BYE/200 0.2 s after its last, between the two RTP
addresses given, so that rtp2ws sees one call (tests/tools/record_gst_rtcp.sh).

    add_sip.py MEDIA.pcap OUT.pcap --caller 127.0.0.1:16000 --callee 127.0.0.1:16100

The SIP text is tests/callgen.py's; the media frames are copied as they are (an
Ethernet pcap, as tcpdump writes on lo).
"""

from __future__ import annotations

import argparse
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import callgen  # noqa: E402
import netgen  # noqa: E402


def read_pcap(path: str) -> list[tuple[float, bytes]]:
    data = Path(path).read_bytes()
    magic = struct.unpack_from("<I", data)[0]
    if magic not in (0xA1B2C3D4, 0xA1B23C4D):
        raise SystemExit(f"{path}: not a little-endian pcap")
    scale = 1e-6 if magic == 0xA1B2C3D4 else 1e-9
    if struct.unpack_from("<I", data, 20)[0] != 1:
        raise SystemExit(f"{path}: not Ethernet")
    out, pos = [], 24
    while pos + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack_from("<IIII", data, pos)
        out.append((sec + frac * scale, data[pos + 16:pos + 16 + incl]))
        pos += 16 + incl
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("media")
    ap.add_argument("out")
    ap.add_argument("--caller", required=True, help="ip:port of the caller's RTP")
    ap.add_argument("--callee", required=True, help="ip:port of the callee's RTP")
    args = ap.parse_args()
    frames = read_pcap(args.media)
    if not frames:
        raise SystemExit("no packets")
    (aip, aport), (bip, bport) = (x.rsplit(":", 1) for x in (args.caller, args.callee))
    a = callgen.Party(aip, 15060, int(aport), "alice")
    b = callgen.Party(bip, 15062, int(bport), "bob")
    call = callgen.Call("gst-rtcp@127.0.0.1", a, b)
    sip = call.setup(frames[0][0] - 0.1, pts=(0,)) + call.bye(frames[-1][0] + 0.2)
    linked = sorted(frames + [(t, netgen.link(1, ip)) for t, ip in sip], key=lambda f: f[0])
    netgen.write_pcap(args.out, linked, 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
