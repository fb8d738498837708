"""Differential: the C fast path (rtp2ws._fastpath) against its Python twin (rtp2ws.fastpath.twin)."""

from __future__ import annotations

import struct

import atheris

from rtp2ws.fastpath import twin as fastpath
from rtp2ws.net.packet import link_layer
from rtp2ws.speedups import load_native

from .. import gen
from ..common import check, entry

INVARIANT = """\
FastPath (C) and its Python twin, made alike and given the same calls (arm, feed of the
same (ts, frame) batches with the same deadlines, take, rebase, ready, touched, armed),
give identical results: the index feed stops at, every field take returns (counters,
sequence and timestamp state, arrival times, the last payload, the decoded samples, the
interarrival jitter: current, sum, count and maximum, to the bit, from any state arm is given),
the slot ids, the ready list, packets and now; and where one raises, the other raises
the same exception class.  Frames are RTP on armed flows over every link type, IPv4 and
IPv6, with one field off at a time (sequence, timestamp, SSRC, payload type, padding,
CSRC, size, arrival, fragment, VXLAN, truncation), and fuzz bytes.  Skipped when the C
extension is not built."""

_native = load_native("_fastpath")
TABLES = fastpath.tables()


def _both(fn_name: str, a, b, *args):
    """Call a method on both; the results, or the exception classes, must agree."""
    ra = rb = ea = eb = None
    try:
        ra = getattr(a, fn_name)(*args)
    except Exception as e:       # noqa: BLE001 -- compared below
        ea = e
    try:
        rb = getattr(b, fn_name)(*args)
    except Exception as e:       # noqa: BLE001
        eb = e
    check(type(ea) is type(eb), f"{fn_name}{args!r:.200}: C raised {ea!r}, Python raised {eb!r}")
    check(ra == rb, f"{fn_name}{args!r:.200}: C gave {ra!r:.300}, Python gave {rb!r:.300}")
    return ra


def run(data: bytes, clock) -> None:
    if _native is None:
        return
    fdp = atheris.FuzzedDataProvider(data)
    linktype = fdp.PickValueInList(gen.LINKTYPES)
    deliver = fdp.PickValueInList([0, 160, 8000])
    c = _native.FastPath(link_layer(linktype), deliver, *TABLES)
    p = fastpath.FastPath(link_layer(linktype), deliver, *TABLES)
    flows = []           # [src, sport, dst, dport, version, ssrc, seq, ts, pt]
    t = fdp.PickValueInList([1000.0, 0.0, 1.7e9])
    for _ in range(fdp.ConsumeIntInRange(1, 12)):
        op = fdp.ConsumeIntInRange(0, 7)
        if op <= 1 or not flows:
            v6 = fdp.ConsumeIntInRange(0, 3) == 0 and linktype != 228 or linktype == 229
            addrs = gen.ADDRS6 if v6 else gen.ADDRS4
            src, dst = fdp.PickValueInList(addrs), fdp.PickValueInList(addrs)
            sport, dport = fdp.PickValueInList([4000, 5000, 4789]), fdp.PickValueInList([4000, 5000])
            ssrc = fdp.ConsumeIntInRange(0, 0xFFFFFFFF)
            seq = fdp.ConsumeIntInRange(0, 0x3FFFF)
            ts = fdp.ConsumeIntInRange(0, 0xFFFFFFFF)
            pt = fdp.PickValueInList([0, 8, 18])
            arrival = t + fdp.PickValueInList([0.0, -0.02, 0.6])
            jitter = fdp.PickValueInList([(0.0, 0.0, 0, 0.0), (3.25, 100.5, 40, 9.0), (1e-300, 0.0, 0, 0.0),
                                          (-1.0, 0.0, 0, 0.0), (0.0, float("nan"), 0, 0.0),
                                          (0.0, 0.0, -1, 0.0), (1.0, 2.0, 3)])
            sid = _both("arm", c, p, src, sport, dst, dport, ssrc, seq, pt, fdp.ConsumeBool(), ts,
                        ts - 160 + fdp.PickValueInList([0, 0, 1, 2 ** 33]), arrival, fdp.PickValueInList([0, 100]),
                        jitter)
            if sid is not None:
                flows.append([src, sport, dst, dport, v6, ssrc, seq, ts, pt])
        elif op <= 4:
            batch = []
            for _ in range(fdp.ConsumeIntInRange(1, 16)):
                t += fdp.PickValueInList([0.02, 0.02, 0.0, 0.7, -0.02, 0.0213, 0.0171, 0.45])
                if fdp.ConsumeIntInRange(0, 5) == 0:
                    f, _ = gen.frame(fdp, linktype, lambda q: q.ConsumeBytes(q.ConsumeIntInRange(0, 200)))
                    batch.append((t, f))
                    continue
                fl = flows[fdp.ConsumeIntInRange(0, len(flows) - 1)]
                src, sport, dst, dport, v6, ssrc, seq, ts, pt = fl
                size = fdp.PickValueInList([160, 160, 80, 1, 0, 1024, 1025])
                b0, b1 = 0x80, pt
                off = fdp.ConsumeIntInRange(0, 15)
                if off == 1:
                    seq += 1
                elif off == 2:
                    ts += 80
                elif off == 3:
                    ssrc ^= 1
                elif off == 4:
                    b1 = fdp.ConsumeIntInRange(0, 255)
                elif off == 5:
                    b0 |= 0x20
                elif off == 6:
                    b0 |= 0x01
                elif off == 7:
                    b1 |= 0x80
                rtp = struct.pack("!BBHII", b0, b1, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + bytes(
                    (i * 37) & 0xFF for i in range(size))
                l4 = gen.udp(sport, dport, rtp)
                ip = gen.ipv6(src, dst, 17, l4) if v6 else gen.ipv4(src, dst, 17, l4,
                                                                    more=off == 8, total=0 if off == 9 else None)
                f = gen.link(fdp, linktype, ip, 6 if v6 else 4, exact=off != 10)
                if off == 11:
                    f = f[:fdp.ConsumeIntInRange(0, len(f))]
                if off == 12:
                    f = bytearray(f)
                if off == 0:
                    fl[6], fl[7] = seq + 1, ts + size
                batch.append((t, f))
            deadline = fdp.PickValueInList([float("inf"), t, t - 0.5])
            i = 0
            while i < len(batch):
                i = _both("feed", c, p, batch, i, deadline)
                check(c.packets == p.packets and c.now == p.now, f"packets/now: C {c.packets} {c.now}, "
                                                                 f"Python {p.packets} {p.now}")
                i += 1     # the pipeline takes the packet the fast path did not
        elif op == 5:
            sids = _both("armed", c, p)
            if sids:
                sid = fdp.PickValueInList(sids) if fdp.ConsumeIntInRange(0, 7) else fdp.ConsumeIntInRange(0, 99)
                _both("take", c, p, sid, fdp.ConsumeBool())
        elif op == 6:
            _both("ready", c, p)
            _both("touched", c, p)
        else:
            sids = _both("armed", c, p)
            if sids:
                _both("rebase", c, p, fdp.PickValueInList(sids), fdp.PickValueInList([0, 8000, 2 ** 40]))
    for sid in _both("armed", c, p):
        _both("take", c, p, sid, True)


TestOneInput = entry("fastpath", run)
