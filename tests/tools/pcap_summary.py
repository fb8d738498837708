#!/usr/bin/env python3
"""Summarize the SIP dialogs and RTP streams of a capture (independent of rtp2ws).

Usage:
    pcap_summary.py FILE.pcap [--ref SOURCE_8k.wav ...]

Prints every SIP message (time, addresses, first line, Call-ID, SDP media),
then one line per RTP stream (src -> dst, SSRC, PT, packet count, sequence and
timestamp ranges, payload sizes, duration) with the SDP it matches.

With --ref, every G.711 stream is decoded and cross-correlated with each
reference WAV (8 kHz mono 16-bit) to show which leg carries which sentence
and at what offset.  Needs numpy for --ref; everything else is stdlib.

Only classic libpcap files with Ethernet or Linux-cooked link types and
IPv4/UDP are understood (which is what tcpdump -i lo writes).
"""

from __future__ import annotations

import argparse
import re
import struct
import sys
import wave
from collections import OrderedDict


def read_pcap(path):
    with open(path, "rb") as f:
        data = f.read()
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        order = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        order = ">"
    else:
        sys.exit(f"{path}: not a classic pcap file (pcapng is not supported)")
    div = 1e9 if magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d") else 1e6
    linktype = struct.unpack(order + "I", data[20:24])[0]
    off = 24
    while off + 16 <= len(data):
        sec, frac, incl, _orig = struct.unpack(order + "IIII", data[off:off + 16])
        yield sec + frac / div, linktype, data[off + 16:off + 16 + incl]
        off += 16 + incl


def udp_of(linktype, frame):
    """Return (src_ip, sport, dst_ip, dport, payload) or None."""
    if linktype == 1:  # Ethernet
        eth_type = struct.unpack("!H", frame[12:14])[0]
        l3 = 14
        if eth_type == 0x8100:
            eth_type = struct.unpack("!H", frame[16:18])[0]
            l3 = 18
    elif linktype == 113:  # Linux cooked
        eth_type = struct.unpack("!H", frame[14:16])[0]
        l3 = 16
    else:
        return None
    if eth_type != 0x0800:
        return None
    ip = frame[l3:]
    ihl = (ip[0] & 0x0F) * 4
    if ip[9] != 17:
        return None
    total = struct.unpack("!H", ip[2:4])[0]
    src = ".".join(map(str, ip[12:16]))
    dst = ".".join(map(str, ip[16:20]))
    udp = ip[ihl:total]
    sport, dport, ulen = struct.unpack("!HHH", udp[:6])
    return src, sport, dst, dport, udp[8:ulen]


SIP_FIRST = re.compile(rb"^(?:[A-Z]+ \S+ SIP/2\.0|SIP/2\.0 \d{3} [^\r\n]*)\r?\n")


def parse_sip(payload):
    text = payload.decode("utf-8", "replace")
    head, _, body = text.partition("\r\n\r\n")
    if not body and "\n\n" in text:
        head, _, body = text.partition("\n\n")
    lines = head.splitlines()
    hdrs = {}
    for ln in lines[1:]:
        if ":" in ln:
            k, v = ln.split(":", 1)
            hdrs.setdefault(k.strip().lower(), v.strip())
    sdp_c = sdp_m = None
    for ln in body.splitlines():
        if ln.startswith("c=IN IP4 "):
            sdp_c = ln[9:].strip()
        elif ln.startswith("m=audio "):
            sdp_m = ln[8:].strip()
    return lines[0], hdrs.get("call-id") or hdrs.get("i"), hdrs.get("cseq"), sdp_c, sdp_m


def g711_decode_tables():
    alaw, ulaw = [], []
    for b in range(256):
        a = b ^ 0x55
        t = (a & 0x0F) << 4
        seg = (a & 0x70) >> 4
        if seg == 0:
            t += 8
        elif seg == 1:
            t += 0x108
        else:
            t = (t + 0x108) << (seg - 1)
        alaw.append(t if a & 0x80 else -t)
        u = ~b & 0xFF
        t = ((u & 0x0F) << 3) + 0x84
        t <<= (u & 0x70) >> 4
        ulaw.append(0x84 - t if u & 0x80 else t - 0x84)
    return {8: alaw, 0: ulaw}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pcap")
    ap.add_argument("--ref", action="append", default=[], help="8 kHz reference WAV")
    args = ap.parse_args(argv)

    t0 = None
    sip_msgs = []
    streams = OrderedDict()
    sip_ports = set()
    npkts = 0
    for ts, lt, frame in read_pcap(args.pcap):
        npkts += 1
        t0 = ts if t0 is None else t0
        u = udp_of(lt, frame)
        if u is None:
            continue
        src, sport, dst, dport, pl = u
        if SIP_FIRST.match(pl):
            first, callid, cseq, c, m = parse_sip(pl)
            sip_msgs.append((ts - t0, f"{src}:{sport}", f"{dst}:{dport}", first, callid, cseq, c, m))
            sip_ports.update((sport, dport))
            continue
        if len(pl) >= 12 and pl[0] >> 6 == 2 and sport not in sip_ports:
            b1 = pl[1]
            cc = pl[0] & 0x0F
            seq, rts, ssrc = struct.unpack("!HII", pl[2:12])
            key = (f"{src}:{sport}", f"{dst}:{dport}", ssrc, b1 & 0x7F)
            s = streams.get(key)
            if s is None:
                s = streams[key] = dict(n=0, t1=ts - t0, seq1=seq, ts1=rts, markers=0,
                                        sizes=set(), payload=bytearray())
            s["n"] += 1
            s["t2"] = ts - t0
            s["seq2"], s["ts2"] = seq, rts
            s["markers"] += b1 >> 7
            body = pl[12 + 4 * cc:]
            s["sizes"].add(len(body))
            s["payload"] += body

    print(f"== {args.pcap}: {npkts} packets, {len(sip_msgs)} SIP messages, {len(streams)} RTP streams")
    calls = OrderedDict()
    for t, s, d, first, callid, cseq, c, m in sip_msgs:
        calls.setdefault(callid, []).append((c, m, first.split(" SIP/2.0")[0] if not first.startswith("SIP/") else first[8:]))
        sdp = f"  [SDP c={c} m={m}]" if m else ""
        print(f"  {t:8.3f}s {s:>21} -> {d:<21} {first}{sdp}")
    for callid in calls:
        print(f"  Call-ID: {callid}")
    sdp_targets = {}
    for callid, items in calls.items():
        for c, m, what in items:
            if m:
                sdp_targets[f"{c}:{m.split()[0]}"] = (callid, what.split()[0] if what[0].isalpha() else what)
    print("  RTP streams:")
    for (src, dst, ssrc, pt), s in streams.items():
        match = sdp_targets.get(dst)
        who = f"dst = SDP c=/m= of the {match[1]}" if match else "dst matches no SDP"
        print(f"  {src:>15} -> {dst:<15} SSRC 0x{ssrc:08X} PT {pt:3d}: {s['n']:4d} pkts, "
              f"{s['t1']:.3f}-{s['t2']:.3f}s, seq {s['seq1']}..{s['seq2']}, "
              f"ts {s['ts1']}..{s['ts2']}, payload {sorted(s['sizes'])} B, "
              f"marker x{s['markers']}; {who}")

    if args.ref:
        try:
            import numpy as np
        except ImportError:
            sys.exit("--ref needs numpy")
        tables = {k: np.array(v, dtype=np.float64) for k, v in g711_decode_tables().items()}
        decoded = {}
        for (src, dst, ssrc, pt), s in streams.items():
            if pt in tables and len(s["payload"]) > 1600:
                decoded[(src, dst)] = tables[pt][np.frombuffer(bytes(s["payload"]), dtype=np.uint8)]
        for ref in args.ref:
            with wave.open(ref) as w:
                r = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)
            for (src, dst), x in decoded.items():
                if len(x) < len(r):
                    continue
                n = len(x) + len(r)
                nfft = 1 << (n - 1).bit_length()
                xc = np.fft.irfft(np.fft.rfft(x, nfft) * np.conj(np.fft.rfft(r, nfft)), nfft)
                lag = int(np.argmax(xc[:len(x) - len(r) + 1]))
                seg = x[lag:lag + len(r)]
                corr = float(np.dot(seg, r) / (np.linalg.norm(seg) * np.linalg.norm(r) + 1e-9))
                print(f"  ref {ref.rsplit('/', 1)[-1]} vs {src} -> {dst}: "
                      f"best offset {lag / 8000:.3f}s into the stream, correlation {corr:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
