#!/usr/bin/env python3
"""A two-port Ethernet bridge in user space that drops and reorders RTP, for
kernels without ``sch_netem`` (``tc qdisc add ... netem`` fails there).

    impair_bridge.py IF_A IF_B --ports 16000-16999 --loss 0.03 --reorder 0.03
                     [--window 5:300] [--seed 1] [--report out.json] [--timeout 300]

Frames are read from each interface with an AF_PACKET socket and written to the
other. Only frames that go from A to B, and carry IPv4 UDP with either port in
``--ports``, are impaired, and only the flow's packets with an index inside
``--window``. That way the first and last packets of a stream are never touched,
and the receiver can count every loss. A packet picked for reordering is held
back until the flow's next packet has been forwarded, which makes a swap of
neighbours 20 ms apart. That next packet is never dropped. The run stops on
SIGTERM/SIGINT or after ``--timeout`` seconds. It then writes to ``--report``,
per flow and call ("src:sport-dst:dport#n", n counting the times the flow's RTP
sequence started again), the RTP sequence numbers it dropped and the ones it delayed.
"""

from __future__ import annotations

import argparse
import json
import random
import select
import signal
import socket
import struct
import time

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


def open_raw(ifname: str) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((ifname, 0))
    s.setblocking(False)
    return s


def udp_flow(frame: bytes, lo: int, hi: int):
    """(flow name, RTP sequence) for an IPv4 UDP frame on the impaired ports, else None."""
    if len(frame) < 14 + 20 + 8 + 12 or frame[12:14] != b"\x08\x00":
        return None
    ip = frame[14:]
    if ip[9] != 17 or struct.unpack_from("!H", ip, 6)[0] & 0x3FFF:
        return None
    ihl = (ip[0] & 0x0F) * 4
    sport, dport = struct.unpack_from("!HH", ip, ihl)
    if not (lo <= sport <= hi or lo <= dport <= hi):
        return None
    seq = struct.unpack_from("!H", ip, ihl + 8 + 2)[0]
    name = f"{socket.inet_ntoa(ip[12:16])}:{sport}-{socket.inet_ntoa(ip[16:20])}:{dport}"
    return name, seq


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("if_a")
    ap.add_argument("if_b")
    ap.add_argument("--ports", default="16000-16999")
    ap.add_argument("--loss", type=float, default=0.0)
    ap.add_argument("--reorder", type=float, default=0.0)
    ap.add_argument("--window", default="5:300")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--report")
    ap.add_argument("--timeout", type=float, default=300.0)
    args = ap.parse_args()
    lo, hi = (int(x) for x in args.ports.split("-"))
    w0, w1 = (int(x) for x in args.window.split(":"))
    rnd = random.Random(args.seed)
    a, b = open_raw(args.if_a), open_raw(args.if_b)
    peer = {a: b, b: a}
    count: dict[str, int] = {}
    last_seq: dict[str, int] = {}
    segment: dict[str, int] = {}
    held: dict[str, bytes] = {}
    report: dict[str, dict] = {}
    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(1))
    deadline = time.monotonic() + args.timeout
    print("ready", flush=True)
    while not stop and time.monotonic() < deadline:
        try:
            ready, _, _ = select.select([a, b], [], [], 0.2)
        except InterruptedError:
            continue
        for s in ready:
            try:
                frame, addr = s.recvfrom(65535)
            except BlockingIOError:
                continue
            if addr[2] == PACKET_OUTGOING:
                continue            # our own transmissions, seen again
            out = peer[s]
            flow = udp_flow(frame, lo, hi) if s is a else None
            if flow is None:
                out.send(frame)
                continue
            base, seq = flow
            prev = last_seq.get(base)
            if prev is not None and (seq - prev) & 0xFFFF > 0x8000:
                segment[base] = segment.get(base, 0) + 1   # the sequence started again: a new call
                count[base] = -1
            last_seq[base] = seq
            i = count[base] = count.get(base, -1) + 1
            name = f"{base}#{segment.get(base, 0)}"
            r = report.setdefault(name, {"dropped": [], "reordered": []})
            if base in held:
                out.send(frame)             # the neighbour goes first ...
                out.send(held.pop(base))    # ... then the held one: a swap
                continue
            if w0 <= i <= w1:
                x = rnd.random()
                if x < args.loss:
                    r["dropped"].append(seq)
                    continue
                if x < args.loss + args.reorder:
                    r["reordered"].append(seq)
                    held[base] = frame
                    continue
            out.send(frame)
    for name, frame in held.items():
        peer[a].send(frame)
    if args.report:
        with open(args.report, "w") as f:
            json.dump(report, f)


if __name__ == "__main__":
    main()
