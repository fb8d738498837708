#!/usr/bin/env python3
"""Record a phone call on loopback as ``tcpdump -i any`` writes it (a Linux cooked capture).

Usage: record_any_call.py OUT.pcap [--linktype LINUX_SLL2|LINUX_SLL] [--seconds 1.0]

In a network namespace of its own (so that nothing else is in the capture), with lo up,
it starts ``tcpdump -i any -y LINKTYPE -U -w OUT.pcap`` on the call's ports, sends one
call between 127.0.0.1 and 127.0.0.2 with real UDP sockets (tests/livecall.py's
``PhoneCall``: INVITE, 200 OK, ACK, 20 ms of A-law each way every 20 ms, a 440 Hz tone
from the caller and 1000 Hz from the callee, BYE, 200 OK), and stops tcpdump.  Needs root
(``ip netns``, tcpdump).  Every process it starts is ended, and the namespace deleted."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from netns import rerun_inside

TESTS = Path(__file__).resolve().parent.parent
SIP_PORT, RTP_A, RTP_B = 5060, 20000, 20002
FILTER = f"udp and (port {SIP_PORT} or portrange {RTP_A}-{RTP_B + 1})"


def call(seconds: float) -> None:
    sys.path.insert(0, str(TESTS))
    from livecall import PhoneCall

    c = PhoneCall("any-call@loopback", SIP_PORT, RTP_A, RTP_B)
    try:
        c.setup()
        c.media(seconds)
        c.bye()
    finally:
        c.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--linktype", default="LINUX_SLL2", choices=("LINUX_SLL2", "LINUX_SLL"))
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--in-namespace", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    out = os.path.abspath(a.out)
    if not a.in_namespace:
        return rerun_inside("r2wany", __file__, [out, "--linktype", a.linktype, "--seconds", str(a.seconds)], 60)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    dump = subprocess.Popen(["tcpdump", "-i", "any", "-y", a.linktype, "--immediate-mode", "-U", "-n", "-Z", "root", "-w", out, FILTER],
                            stderr=subprocess.PIPE, text=True)
    try:
        assert dump.stderr is not None
        lines = []
        while not any("listening on" in x for x in lines):     # "tcpdump: listening on any, link-type ..."
            lines.append(dump.stderr.readline())
            if not lines[-1]:
                raise SystemExit(f"tcpdump did not start: {''.join(lines)}")
        call(a.seconds)
        time.sleep(0.2)
    finally:
        dump.send_signal(signal.SIGINT)
        dump.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
