"""The RTP fast path: most packets of a capture never reach Python one by one.

In steady state almost every packet is the next RTP packet of a flow whose
leg already knows what comes next: same SSRC, next sequence number, the
payload type of the current codec, the timestamp that continues the
timeline with no gap, arriving within ``RESYNC_SECONDS`` of where the RTP
clock says.  For such a packet the jitter buffer, the timeline and the
decoder have nothing to decide; the packet's 8 kHz samples simply go on the
end of the leg's audio.  ``FastPath`` takes exactly those packets, a capture
file at a time, and hands every other packet back to the ordinary pipeline.

Contract (``rtp2ws.pipeline.pipeline.Pipeline.run_reader`` keeps its side):

* The pipeline *arms* a flow (5-tuple) for a leg when the leg's state after
  an RTP packet is one where the next in-order packet would take the jitter
  buffer's and the leg's shortest way (``MediaLeg.fast_state``).  From then
  on ``run`` takes the flow's packets that match, and stops at the first
  packet it does not take: that one is the pipeline's, together with the
  decisions it brings (loss, reordering, SSRC change, a timeline jump,
  signalling, timers).
* Before the pipeline looks at an armed leg for any reason it ``take``\\ s
  what the fast path holds for it (and disarms it if the leg's state is about
  to change), so the leg is exactly what packet-at-a-time processing would
  have left.  ``run`` also stops at ``deadline`` (the next call timer or IP
  fragment expiry), so timers see every packet before them.
* ``run`` counts every packet, taken or not, towards ``budget`` and returns
  ``TICK`` when it is reached, so the pipeline's timers run at the same
  packet counts as a batch-at-a-time reader's.
* ``ready()`` names the slots whose leg now holds at least
  ``deliver_samples`` samples (``base`` + taken here): the legs the
  pipeline would hand to its sink at the tick.

The C twin is ``rtp2ws._fastpath`` (native/fastpath.c); this module is used
when it is not built or ``RTP2WS_NO_NATIVE`` is set, and the same tests run
against both.
"""

from __future__ import annotations

import struct

import numpy as np

from ..codec.g711 import ALAW_TO_LINEAR, ULAW_TO_LINEAR
from ..net.packet import AF_INET6_VALUES, AF_INET_VALUES, VLAN_TPIDS, VXLAN_PORT, PacketDecoder
from ..speedups import load_native

EOF = 0
TICK = 1
MAX_PAYLOAD = 1024          # longest payload taken here (128 ms of G.711)
RESYNC_SAMPLES = 4000.0     # rtp2ws.media.leg.RESYNC_SECONDS * CLOCK
_H = struct.Struct("!H")
_I_BE = struct.Struct("!I")
_I_LE = struct.Struct("<I")
_RTP = struct.Struct("!BBHII")


class ReadError(Exception):
    """The capture broke off; ``str()`` is libpcap's message."""


def _af_version(family: int) -> int:
    return 4 if family in AF_INET_VALUES else 6 if family in AF_INET6_VALUES else 0


_ethertype_version = PacketDecoder._ethertype_version


def _after_vlans(d: bytes, off: int) -> tuple[int, int]:
    """(offset, IP version) past the ethertype ending at ``off`` and any 802.1Q/QinQ tags."""
    (t,) = _H.unpack_from(d, off - 2)
    while t in VLAN_TPIDS:
        if len(d) < off + 4:
            return 0, 0
        (t,) = _H.unpack_from(d, off + 2)
        off += 4
    return off, _ethertype_version(t)


def _link(linktype: int, d: bytes) -> tuple[int, int]:
    """(offset of the IP header, IP version), version 0 when it is not for here."""
    n = len(d)
    if linktype == 1:
        return _after_vlans(d, 14) if n >= 14 else (0, 0)
    if linktype == 113:                    # a VLAN tag libpcap put back comes after the header
        return _after_vlans(d, 16) if n >= 16 else (0, 0)
    if linktype == 276:
        return (20, _ethertype_version(_H.unpack_from(d, 0)[0])) if n >= 20 else (0, 0)
    if linktype in (12, 14, 101):
        return (0, d[0] >> 4 if n and d[0] >> 4 in (4, 6) else 0)
    if linktype == 228:
        return 0, 4
    if linktype == 229:
        return 0, 6
    if linktype == 0:
        if n < 4:
            return 0, 0
        le, be = _af_version(_I_LE.unpack_from(d)[0]), _af_version(_I_BE.unpack_from(d)[0])
        return 4, 4 if 4 in (le, be) else 6 if 6 in (le, be) else 0
    if linktype == 108:
        return (4, _af_version(_I_BE.unpack_from(d)[0])) if n >= 4 else (0, 0)
    return 0, 0


class _Slot:
    __slots__ = ("flow", "ssrc", "next_ext", "pt", "table", "expect_ts", "last_ts_ext", "last_arrival",
                 "max_arrival", "packets", "nbytes", "last_n", "codes", "base", "ready")


class Reader:
    """Twin of ``_fastpath.Reader``: a capture file read through pypcap
    (``rtp2ws.capture.file.CaptureFile``) a batch at a time, handed out a packet at a time."""

    def __init__(self, path) -> None:
        from ..capture.file import CaptureError, CaptureFile

        try:
            self._cap = CaptureFile(path, native=False)
        except CaptureError as e:
            raise OSError(str(e)) from None
        self.linktype = self._cap.linktype
        self.packets_read = 0
        self._batches = self._cap.batches()
        self._batch: list = []
        self._i = 0
        self._error: str | None = None
        self._done = False

    @property
    def bytes_read(self) -> int:
        return self._cap.bytes_read

    @property
    def bad_timestamps(self) -> int:
        return self._cap.bad_timestamps

    @property
    def first_bad_timestamp(self) -> int:
        return self._cap.first_bad_timestamp

    def close(self) -> None:
        self._cap.close()
        self._done = True

    def _next(self):
        """The next (ts, frame); None at the end; ReadError when the file breaks off."""
        from ..capture.file import CaptureError

        while self._i >= len(self._batch):
            if self._done:
                return None
            try:
                self._batch = next(self._batches)
            except StopIteration:
                self._done = True
                return None
            except CaptureError as e:
                self._done = True
                raise ReadError(e.reason) from None
            self._i = 0
        item = self._batch[self._i]
        self._i += 1
        self.packets_read += 1
        return item


class FastPath:
    """Twin of ``_fastpath.FastPath``; the module docstring gives the contract."""

    def __init__(self, linktype: int, deliver_samples: int, alaw_table: bytes, ulaw_table: bytes) -> None:
        if len(alaw_table) != 512 or len(ulaw_table) != 512:
            raise ValueError("G.711 tables must be 256 int16 samples each")
        self.linktype = linktype
        self.deliver = deliver_samples
        self._alaw = np.frombuffer(alaw_table, dtype="=i2")
        self._ulaw = np.frombuffer(ulaw_table, dtype="=i2")
        self._flows: dict[tuple, int] = {}
        self._slots: dict[int, _Slot] = {}
        self._free: list[int] = []
        self._next_sid = 0
        self._ready: list[int] = []
        self.packets = 0
        self.now = 0.0
        self._since_tick = 0

    # -- the pipeline's side ---------------------------------------------------

    def arm(self, src: bytes, sport: int, dst: bytes, dport: int, ssrc: int, next_ext: int, pt: int,
            alaw: bool, expect_ts: int, last_ts_ext: int, last_arrival: float, base: int) -> int:
        if len(src) not in (4, 16) or len(dst) not in (4, 16):
            raise ValueError("an IP address is 4 or 16 bytes")
        if len(src) != len(dst):
            raise ValueError("source and destination are of different IP versions")
        flow = (bytes(src), sport, bytes(dst), dport)
        if flow in self._flows:
            raise ValueError("flow is already armed")
        if self._free:
            sid = self._free.pop()
        else:
            sid = self._next_sid
            self._next_sid += 1
        s = _Slot()
        s.flow, s.ssrc, s.next_ext, s.pt = flow, ssrc, next_ext, pt
        s.table = self._alaw if alaw else self._ulaw
        s.expect_ts, s.last_ts_ext = expect_ts & 0xFFFFFFFF, last_ts_ext
        s.last_arrival = s.max_arrival = last_arrival
        s.packets = s.nbytes = 0
        s.last_n = 0
        s.codes = bytearray()
        s.base, s.ready = base, False
        self._slots[sid] = s
        self._flows[flow] = sid
        return sid

    def take(self, sid: int, disarm: bool) -> tuple:
        s = self._slot(sid)
        codes = bytes(s.codes)
        out = (s.packets, s.nbytes, s.next_ext, s.last_ts_ext, s.last_arrival, s.max_arrival,
               codes[len(codes) - s.last_n:] if s.packets else None,
               s.table[np.frombuffer(codes, np.uint8)].tobytes())
        s.base += len(codes)
        s.codes = bytearray()
        s.packets = s.nbytes = 0
        if disarm and self._ready:    # a slot id is reused: it must not stay on the ready list
            self._ready = [r for r in self._ready if r != sid]
        s.ready = False
        if disarm:
            del self._slots[sid]
            del self._flows[s.flow]
            self._free.append(sid)
        return out

    def rebase(self, sid: int, base: int) -> None:
        self._slot(sid).base = base

    def ready(self) -> list[int]:
        out, self._ready = self._ready, []
        return out

    def touched(self) -> list[int]:
        return sorted(sid for sid, s in self._slots.items() if s.packets)

    def armed(self) -> list[int]:
        return sorted(self._slots)

    def _slot(self, sid: int) -> _Slot:
        s = self._slots.get(sid)
        if s is None:
            raise KeyError(f"slot {sid} is not armed")
        return s

    # -- the loop ------------------------------------------------------------------

    def run(self, reader: Reader, deadline: float, budget: int):
        """(ts, frame) of the first packet not taken here, ``TICK`` after ``budget``
        packets since the last tick, ``EOF`` at the end of the file."""
        if not isinstance(reader, Reader):
            raise TypeError("run() needs a rtp2ws.fastpath.twin.Reader")
        while True:
            if self._since_tick >= budget:
                self._since_tick = 0
                return TICK
            if reader._error is not None:
                message, reader._error = reader._error, None
                raise ReadError(message)
            try:
                item = reader._next()
            except ReadError as e:
                reader._error = str(e)
                item = None
            if item is None:
                if self._since_tick > 0:     # what was read before the end gets its tick first
                    self._since_tick = 0
                    return TICK
                if reader._error is not None:
                    continue
                return EOF
            self._since_tick += 1
            ts, frame = item
            if ts < deadline and self._take_packet(ts, frame):
                continue
            return ts, frame

    def feed(self, batch: list, pos: int, deadline: float) -> int:
        """Index of the first ``(ts, frame)`` of ``batch[pos:]`` not taken here (``len``: all)."""
        n = len(batch)
        while pos < n:
            ts, frame = batch[pos]
            if not (ts < deadline and type(frame) is bytes and self._take_packet(ts, frame)):
                return pos
            pos += 1
        return n

    def _take_packet(self, ts: float, d: bytes) -> bool:
        off, version = _link(self.linktype, d)
        n = len(d)
        if version == 4:
            avail = n - off
            if avail < 20 or d[off] >> 4 != 4:
                return False
            hlen = (d[off] & 0x0F) * 4
            (total,) = _H.unpack_from(d, off + 2)
            if hlen < 20 or hlen > avail or total == 0 or total < hlen or total > avail:
                return False
            if _H.unpack_from(d, off + 6)[0] & 0x3FFF or d[off + 9] != 17:
                return False
            src, dst = d[off + 12:off + 16], d[off + 16:off + 20]
            l4, end = off + hlen, off + total
        elif version == 6:
            avail = n - off
            if avail < 40 or d[off] >> 4 != 6 or d[off + 6] != 17:
                return False
            (plen,) = _H.unpack_from(d, off + 4)
            if plen == 0 or plen > avail - 40:
                return False
            src, dst = d[off + 8:off + 24], d[off + 24:off + 40]
            l4 = off + 40
            end = l4 + plen
        else:
            return False
        if end - l4 < 8:
            return False
        sport, dport, ulen = struct.unpack_from("!HHH", d, l4)
        if ulen < 8 or ulen > end - l4 or dport == VXLAN_PORT:
            return False
        p = l4 + 8
        plen = ulen - 8
        if plen < 13 or d[p] != 0x80 or 192 <= d[p + 1] <= 223:
            return False
        sid = self._flows.get((src, sport, dst, dport))
        if sid is None:
            return False
        s = self._slots[sid]
        _b0, b1, seq, ts32, ssrc = _RTP.unpack_from(d, p)
        size = plen - 12
        if (ssrc != s.ssrc or seq != s.next_ext & 0xFFFF or b1 & 0x7F != s.pt or ts32 != s.expect_ts
                or size > MAX_PAYLOAD):
            return False
        dts = (ts32 - (s.last_ts_ext & 0xFFFFFFFF)) & 0xFFFFFFFF
        if dts >= 0x80000000:
            dts -= 0x100000000
        if abs(float(dts) - (ts - s.last_arrival) * 8000.0) > RESYNC_SAMPLES:
            return False
        s.codes += d[p + 12:p + plen]      # decoded when taken
        s.last_n = size
        s.packets += 1
        s.nbytes += size
        s.next_ext += 1
        s.last_ts_ext += dts
        s.expect_ts = (ts32 + size) & 0xFFFFFFFF
        s.last_arrival = ts
        if ts > s.max_arrival:
            s.max_arrival = ts
        if not s.ready and s.base + len(s.codes) >= self.deliver:
            self._ready.append(sid)
            s.ready = True
        self.packets += 1
        if ts > self.now:
            self.now = ts
        return True


BACKENDS = ("native", "python") if load_native("_fastpath") is not None else ("python",)


def reader_class(backend: str | None = None):
    """The capture reader of ``backend`` (``native``, ``python``; default: the first of
    ``BACKENDS``).  ``Pipeline.run_reader`` takes the fast path that goes with it."""
    backend = backend or BACKENDS[0]
    if backend not in BACKENDS:
        raise ValueError(f"fast path backend {backend!r} is not available (have {', '.join(BACKENDS)})")
    return load_native("_fastpath").Reader if backend == "native" else Reader


def default_class():
    """The FastPath of the first of ``BACKENDS`` (for ``feed``: live capture)."""
    native = load_native("_fastpath") if BACKENDS[0] == "native" else None
    return native.FastPath if native is not None else FastPath


def for_reader(reader) -> tuple:
    """``(FastPath class, ReadError class)`` that go with ``reader``."""
    if isinstance(reader, Reader):
        return FastPath, ReadError
    native = load_native("_fastpath")
    return native.FastPath, native.ReadError


def tables() -> tuple[bytes, bytes]:
    """The G.711 decoding tables as the fast path takes them (256 native int16 each)."""
    return ALAW_TO_LINEAR.astype("=i2").tobytes(), ULAW_TO_LINEAR.astype("=i2").tobytes()
