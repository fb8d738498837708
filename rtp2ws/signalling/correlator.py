"""Correlator: which call leg does a UDP datagram on a media port belong to?

Signalling tells us, per leg, the address its packets are sent *to* (the
receiver's SDP ``c=``/``m=``) and, with symmetric RTP, the address they come
*from* (the sender's own SDP).  Packets are matched on the full 5-tuple:

1. a flow (src ip:port → dst ip:port) already bound to a leg goes there;
2. otherwise the legs expecting that destination are candidates, and the
   one whose expected source equals the packet's source wins, then one
   whose source IP matches, then one with no flow yet, then the newest;
3. otherwise the legs whose *sender* advertised the packet's source
   (symmetric RTP towards a NAT'd receiver).

The winner is bound to the flow, so RTP from a NAT-rewritten source port
still lands on its leg, and calls whose SDP names the same address and
port stay apart by their other end.  RTCP is expected at the RTP port + 1,
at ``a=rtcp``, or on the RTP port itself with ``a=rtcp-mux``.

Several flows can match one SDP leg (a media relay in the path: the caller's
port sends to the relay while the relay sends to the callee's port).  The
pipeline gives a second *concurrent* flow a leg of its own (``caller#2``) and
binds the flow to it for good (``assign``): such a leg has no SDP expectations, and
the flow stays with it when the SDP legs are re-resolved.

Sans-I/O; addresses are packed bytes as the packet decoder yields them.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Hashable

Addr = tuple[bytes, int]
Flow = tuple[bytes, int, bytes, int]   # (src ip, src port, dst ip, dst port)


def pack_ip(text: str) -> bytes | None:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            return socket.inet_pton(family, text)
        except (OSError, ValueError):     # ValueError: an embedded NUL (found by fuzz/targets/pipeline)
            continue
    return None


def format_addr(ip: bytes, port: int) -> str:
    if len(ip) == 16:
        return f"[{socket.inet_ntop(socket.AF_INET6, ip)}]:{port}"
    return f"{socket.inet_ntop(socket.AF_INET, ip)}:{port}"


class _Expect:
    __slots__ = ("leg", "dst", "src", "rtcp", "serial", "flows", "assigned")

    def __init__(self, leg: Hashable, serial: int) -> None:
        self.leg = leg
        self.dst: Addr | None = None
        self.src: Addr | None = None
        self.rtcp: Addr | None = None
        self.serial = serial
        self.flows: set[Flow] = set()
        self.assigned: set[Flow] = set()   # flows given to this leg by ``assign``


class Correlator:
    def __init__(self) -> None:
        self.flows: dict[Flow, tuple[Hashable, bool]] = {}   # 5-tuple -> (leg, is_rtcp)
        self._legs: dict[Hashable, _Expect] = {}
        self._by_dst: dict[Addr, list[_Expect]] = {}
        self._by_src: dict[Addr, list[_Expect]] = {}
        self._by_rtcp: dict[Addr, list[_Expect]] = {}
        self._flows_to: dict[Addr, set[Flow]] = {}   # destination -> 5-tuples bound
        self._assigned: dict[Flow, Hashable] = {}   # 5-tuple -> leg, by ``assign``
        self._serial = 0
        # called with a 5-tuple when its binding goes (the fast path disarms it)
        self.on_unbind: Callable[[Flow], object] | None = None

    def expect(self, leg: Hashable, dst: Addr | None, src: Addr | None, rtcp: Addr | None = None) -> None:
        """Set (or replace) where ``leg``'s packets go to and come from."""
        e = self._legs.get(leg)
        if e is None:
            e = self._legs[leg] = _Expect(leg, 0)
        self._serial += 1
        e.serial = self._serial
        for index, old, new in ((self._by_dst, e.dst, dst), (self._by_src, e.src, src),
                                (self._by_rtcp, e.rtcp, rtcp)):
            if old == new:
                continue
            if old is not None:
                lst = index[old]
                lst.remove(e)
                if not lst:
                    del index[old]
            if new is not None:
                index.setdefault(new, []).append(e)
        e.dst, e.src, e.rtcp = dst, src, rtcp
        # A newly claimed address is re-resolved for everyone on the next packet
        # (except the flows given to a leg of their own).
        for addr in (dst, rtcp):
            if addr is not None:
                for key in list(self._flows_to.get(addr, ())):
                    if key not in self._assigned:
                        self._unbind(key)

    def expected(self, leg: Hashable) -> tuple[Addr | None, Addr | None] | None:
        """``(dst, src)`` that signalling expects of ``leg``'s packets, None for a leg without SDP."""
        e = self._legs.get(leg)
        return None if e is None else (e.dst, e.src)

    def assign(self, flow: Flow, leg: Hashable) -> None:
        """Bind the 5-tuple ``flow`` to ``leg``, a leg without SDP expectations of its
        own (a second concurrent flow of an SDP leg), until ``remove(leg)``."""
        self._unbind(flow)
        e = self._legs.get(leg)
        if e is None:
            e = self._legs[leg] = _Expect(leg, 0)
        e.assigned.add(flow)
        self._assigned[flow] = leg
        self._bind(flow, e, False)

    def remove(self, leg: Hashable) -> None:
        e = self._legs.pop(leg, None)
        if e is None:
            return
        for index, addr in ((self._by_dst, e.dst), (self._by_src, e.src), (self._by_rtcp, e.rtcp)):
            if addr is not None:
                lst = index.get(addr, [])
                if e in lst:
                    lst.remove(e)
                if not lst:
                    index.pop(addr, None)
        for key in list(e.flows):
            self._unbind(key)
        for key in e.assigned:
            self._assigned.pop(key, None)

    def lookup(self, src: bytes, sport: int, dst: bytes, dport: int) -> tuple[Hashable, bool] | None:
        """``(leg, is_rtcp_port)`` for a datagram, or None when no call claims it."""
        key = (src, sport, dst, dport)
        hit = self.flows.get(key)
        if hit is not None:
            return hit
        s = (src, sport)
        d = (dst, dport)
        e = self._choose(self._by_dst.get(d), s)
        rtcp = False
        if e is None:
            e = self._choose(self._by_rtcp.get(d), s)
            rtcp = e is not None
        if e is None:
            e = self._choose(self._by_src.get(s), None)
        if e is None:
            return None
        return self._bind(key, e, rtcp)

    def _bind(self, key: Flow, e: _Expect, rtcp: bool) -> tuple[Hashable, bool]:
        hit = (e.leg, rtcp)
        self.flows[key] = hit
        e.flows.add(key)
        self._flows_to.setdefault((key[2], key[3]), set()).add(key)
        return hit

    def _unbind(self, key: Flow) -> None:
        hit = self.flows.pop(key, None)
        if hit is None:
            return
        if self.on_unbind is not None:
            self.on_unbind(key)
        to = self._flows_to.get((key[2], key[3]))
        if to is not None:
            to.discard(key)
            if not to:
                del self._flows_to[(key[2], key[3])]
        e = self._legs.get(hit[0])
        if e is not None:
            e.flows.discard(key)

    @staticmethod
    def _choose(cands: list[_Expect] | None, src: Addr | None) -> _Expect | None:
        if not cands:
            return None
        if len(cands) == 1:
            return cands[0]
        if src is not None:
            for e in cands:
                if e.src == src:
                    return e
            same_ip = [e for e in cands if e.src is not None and e.src[0] == src[0]]
            if same_ip:
                cands = same_ip
        free = [e for e in cands if not e.flows]
        return max(free or cands, key=lambda e: e.serial)
