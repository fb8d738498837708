"""The RTP fast path: most packets of a capture never reach Python one by one.

In steady state almost every packet is the next RTP packet of a flow whose
leg already knows what comes next: same SSRC, next sequence number, the
payload type of the current codec, the timestamp that continues the
timeline with no gap, arriving within ``RESYNC_SECONDS`` of where the RTP
clock says.  For such a packet the jitter buffer, the timeline and the
decoder have nothing to decide; the packet's 8 kHz samples simply go on the
end of the leg's audio.  ``FastPath`` takes exactly those packets, a capture
file at a time, and hands every other packet back to the ordinary pipeline.

Contract (the pipeline keeps its side through ``rtp2ws.fastpath.driver.FastDriver``):

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
* The fast path measures the interarrival jitter of the packets it takes as the leg
  does (``rtp2ws.media.leg``'s docstring: RFC 3550's J, its sum and count over the
  packets without the marker bit, its maximum), with the same arithmetic on the same
  values in the same order, so that the figures are exactly the packet-at-a-time
  ones: ``arm`` is given the leg's ``(current, total, counted, peak)`` (default: none
  yet) and ``take`` returns them as they are now (the jitter item).  D is the distance
  the timeline check computes already; the C twin adds no branch for it.
* Likewise the leg's max delta (``rtp2ws.media.quality``: Wireshark's "Max Delta"):
  ``arm`` is given its ``(reference capture time, reference RTP timestamp, largest
  delta)`` (default: the last packet, ``last_arrival`` and ``last_ts_ext``, none counted
  yet, ``-inf``) and ``take`` returns them as its last item; a
  packet whose timestamp is not behind the reference's moves the reference, and counts
  its delta unless it carries the marker bit.
* ``run`` counts every packet, taken or not, towards ``budget`` and returns
  ``TICK`` when it is reached, so the pipeline's timers run at the same
  packet counts as a batch-at-a-time reader's.
* ``ready()`` names the slots whose leg now holds at least
  ``deliver_samples`` samples (``base`` + taken here): the legs the
  pipeline would hand to its sink at the tick.
* A slot can also be *bound* (``bind``) to a stream that takes its leg's audio
  in whole frames: then the fast path streams it itself.  ``pump()`` decodes
  what each bound slot took, filters it to 16 kHz (``rtp2ws.codec.resample``'s
  2x filter, its state handed over by ``bind``) and cuts whole frames
  (``frame_bytes``, the part-frame left over carried to the next pump); it
  returns ``(sid, frames, newest, held)`` for each bound slot that is ready (it took
  ``deliver_samples``
  since it was last streamed: the pipeline's own pace of hand-outs), and takes it
  off the ready list, which ``ready()`` then hands out.  A slot bound with a
  *lane* (``rtp2ws.ws.lane``: a stream's outbox and connection) has its frames
  pushed there instead, ``lane.push(frames, newest, held, packet)``, and is not
  in the list: no Python object per frame in C.  ``take`` of a bound slot
  returns the 8 kHz samples it streamed since the last take (``streamed``) and
  keeps what it has not streamed yet, unless it disarms: then that comes as
  ``samples``, with the filter state and the part-frame as of its last pump, so
  that the leg and its stream go on exactly as if they had made those frames.

* A flow can also be *ignored* (``ignore``, for a leg of a call another worker owns:
  ``rtp2ws.pipeline.shard``): ``run``/``feed`` then drop its packets that pass the
  same RTP checks as an armed flow's before its own (version 2, no padding, extension
  or CSRCs, not an RTCP type, at least a byte of payload), counting them (``foreign``,
  in all) and, per flow, how many and the newest capture time, which
  ``ignored(fid, release)`` reads and clears (and with ``release`` stops ignoring the
  flow).  Any other packet on it goes to Python as before.  A flow is armed or
  ignored, not both.

``FastPath(link, ...)`` is given its capture's ``rtp2ws.net.packet.LinkLayer``
(how to find the IP header), never a link type number: packet.py's ``LINK_TYPES`` is
the one table.  Here the frame's link header is read by packet.py's own
``link_reader``; the C twin has one case per ``LINK_*`` kind.

The C twin is ``rtp2ws._fastpath.FastPath`` (native/fastpath.c); this module is
used when it is not built or ``RTP2WS_NO_NATIVE`` is set, and the same tests run
against both.  The capture reader ``run`` reads is capture's
(``rtp2ws.capture.file.Reader``, in C native/capture_file.c).
"""

from __future__ import annotations

import math
import operator
import struct
from typing import TYPE_CHECKING, Any

import numpy as np

from ..capture.file import PacketReader, ReadError
from ..codec.g711 import ALAW_TO_LINEAR, ULAW_TO_LINEAR
from ..codec.resample import _PHASES_BYTES, _STEADY, FRAC_BITS
from ..codec.resample import _numpy_upsample2x as _upsample
from ..media.seq import uint32
from ..net.packet import (
    LINK_AF,
    LINK_AF_NET,
    LINK_ETHERTYPE,
    LINK_KINDS,
    VXLAN_PORT,
    LinkLayer,
    MalformedPacket,
    link_reader,
)
from ..speedups import pick

if TYPE_CHECKING:
    from .. import _fastpath

_native, BACKENDS = pick("fastpath")
if _native is not None:
    # the extension pick() chose, imported by name so that its stub (_fastpath.pyi) types it
    from .._fastpath import FastPath as _NativeFastPath
    from .._fastpath import ReadError as _NativeReadError

EOF = 0
TICK = 1
PAUSE = 2     # run(): the next packet is at or after ``until`` and stays in the reader
IDLE = 3      # run(): a live reader has no packet now (``reader.waiting``)
MAX_PAYLOAD = 1024          # longest payload taken here (128 ms of G.711)
RESYNC_SAMPLES = 4000.0     # rtp2ws.media.leg.RESYNC_SECONDS * CLOCK
_H = struct.Struct("!H")
_RTP = struct.Struct("!BBHII")


def _check_layer(link: object) -> LinkLayer:
    """``link`` (``rtp2ws.net.packet.link_layer``'s row) as the C constructor checks it."""
    if not isinstance(link, (tuple, list)) or len(link) != 4 or not isinstance(link[0], str):
        raise TypeError("link must be a LinkLayer (kind, header, type_at, vlans)")
    kind, header, type_at, vlans = link[0], operator.index(link[1]), operator.index(link[2]), bool(link[3])
    if kind not in LINK_KINDS:
        raise ValueError(f"unknown link kind {kind!r}")
    field = 2 if kind == LINK_ETHERTYPE else 4 if kind in (LINK_AF, LINK_AF_NET) else 0
    if not 0 <= header <= 0xFFFF or type_at < 0 or type_at + field > header:
        raise ValueError("link header fields out of range")
    return LinkLayer(kind, header, type_at, vlans)


def _check_jitter(jitter: object) -> tuple[float, float, int, float]:
    """``arm``'s jitter state as the C twin checks it: (current, total, counted, peak),
    finite and not negative."""
    if not isinstance(jitter, tuple) or len(jitter) != 4:
        raise TypeError("jitter must be a tuple (current, total, counted, peak)")
    current, total, peak = float(jitter[0]), float(jitter[1]), float(jitter[3])
    counted = operator.index(jitter[2])
    if not all(0.0 <= x < math.inf for x in (current, total, peak)) or not 0 <= counted < 2 ** 63:
        raise ValueError("jitter state must be finite and not negative")
    return current, total, counted, peak


def _check_delta(delta: object) -> tuple[float, int, float]:
    """``arm``'s max-delta state as the C twin checks it: (reference time, reference RTP
    timestamp (32 bits), largest delta or -inf), the times not NaN nor infinite but the peak."""
    if not isinstance(delta, tuple) or len(delta) != 3:
        raise TypeError("delta must be a tuple (reference, reference timestamp, peak)")
    ref, peak = float(delta[0]), float(delta[2])
    ref_ts = operator.index(delta[1])
    if not (math.isfinite(ref) and (math.isfinite(peak) or peak == -math.inf)) or not 0 <= ref_ts < 2 ** 32:
        raise ValueError("delta state must be finite (the peak may be -inf) and a 32-bit timestamp")
    return ref, ref_ts, peak


class _Slot:
    __slots__ = ("flow", "ssrc", "next_ext", "pt", "table", "expect_ts", "last_ts_ext", "last_arrival",
                 "max_arrival", "packets", "nbytes", "last_n", "codes", "base", "ready",
                 "bound", "history", "carry", "frame_bytes", "streamed", "last_codes", "lane",
                 "jitter", "jitter_total", "jitter_counted", "jitter_peak", "delta_ref", "delta_ts", "delta_peak")
    flow: tuple[bytes, int, bytes, int]
    ssrc: int
    next_ext: int
    pt: int
    table: np.ndarray
    expect_ts: int
    last_ts_ext: int
    last_arrival: float
    max_arrival: float
    packets: int
    nbytes: int
    last_n: int
    codes: bytearray
    base: int
    ready: bool
    bound: bool
    history: np.ndarray       # the 2x filter's state (bound slots)
    carry: bytes              # 16 kHz int16 of less than a frame, for the next pump
    frame_bytes: int
    streamed: int             # 8 kHz samples streamed since the last take
    last_codes: bytes         # the last packet's payload, once pumped
    lane: Any                 # bound with a lane (rtp2ws.ws.lane): pump() pushes its frames there
    jitter: float             # the leg's interarrival jitter (rtp2ws.media.leg.Jitter), 8 kHz units
    jitter_total: float
    jitter_counted: int
    jitter_peak: float
    delta_ref: float          # the leg's max delta (rtp2ws.media.quality.Delta): the reference's time,
    delta_ts: int             # its RTP timestamp,
    delta_peak: float         # the largest delta (seconds), -inf before one


class _Ignored:
    """An ignored flow: what was dropped on it since the last look."""

    __slots__ = ("flow", "packets", "newest")

    def __init__(self, flow: tuple[bytes, int, bytes, int]) -> None:
        self.flow = flow
        self.packets = 0
        self.newest = float("-inf")


class FastPath:
    """Twin of ``_fastpath.FastPath``; the module docstring gives the contract."""

    def __init__(self, link: LinkLayer, deliver_samples: int, alaw_table: bytes, ulaw_table: bytes,
                 phases: bytes | None = None, frac_bits: int = 0) -> None:
        layer = _check_layer(link)
        if len(alaw_table) != 512 or len(ulaw_table) != 512:
            raise ValueError("G.711 tables must be 256 int16 samples each")
        # The filter of bound slots: this twin computes rtp2ws.codec.resample's (numpy), so
        # it takes those taps only; the C twin filters with whatever it is given.
        if phases is not None and (bytes(phases) != _PHASES_BYTES or frac_bits != FRAC_BITS):
            raise ValueError("the Python FastPath filters with rtp2ws.codec.resample's taps only")
        self._filter = phases is not None
        self._link = link_reader(layer)     # rtp2ws.net.packet's own reader of this layer
        self.deliver = deliver_samples
        self._alaw = np.frombuffer(alaw_table, dtype="=i2")
        self._ulaw = np.frombuffer(ulaw_table, dtype="=i2")
        self._flows: dict[tuple[bytes, int, bytes, int], int] = {}
        self._slots: dict[int, _Slot] = {}
        self._free: list[int] = []
        self._next_sid = 0
        self._ready: list[int] = []
        self.packets = 0
        self._ignored: dict[tuple[bytes, int, bytes, int], int] = {}    # flow -> id
        self._foreign: dict[int, _Ignored] = {}
        self._free_fids: list[int] = []
        self._next_fid = 0
        self.foreign = 0
        self.now = 0.0
        self._since_tick = 0

    # -- the pipeline's side ---------------------------------------------------

    def _new_flow(self, src: bytes, sport: int, dst: bytes, dport: int) -> tuple[bytes, int, bytes, int]:
        """The 5-tuple key of a flow neither armed nor ignored (``arm``, ``ignore``)."""
        if len(src) not in (4, 16) or len(dst) not in (4, 16):
            raise ValueError("an IP address is 4 or 16 bytes")
        if len(src) != len(dst):
            raise ValueError("source and destination are of different IP versions")
        flow = (bytes(src), sport, bytes(dst), dport)
        if flow in self._flows or flow in self._ignored:
            raise ValueError("flow is already armed")
        return flow

    def arm(self, src: bytes, sport: int, dst: bytes, dport: int, ssrc: int, next_ext: int, pt: int,
            alaw: bool, expect_ts: int, last_ts_ext: int, last_arrival: float, base: int,
            jitter: tuple[float, float, int, float] = (0.0, 0.0, 0, 0.0),
            delta: tuple[float, int, float] | None = None) -> int:
        current, total, counted, peak = _check_jitter(jitter)
        delta_ref, delta_ts, delta_peak = _check_delta(
            (last_arrival, uint32(last_ts_ext), -math.inf) if delta is None else delta)
        flow = self._new_flow(src, sport, dst, dport)
        if self._free:
            sid = self._free.pop()
        else:
            sid = self._next_sid
            self._next_sid += 1
        s = _Slot()
        s.flow, s.ssrc, s.next_ext, s.pt = flow, ssrc, next_ext, pt
        s.table = self._alaw if alaw else self._ulaw
        s.expect_ts, s.last_ts_ext = uint32(expect_ts), last_ts_ext
        s.last_arrival = s.max_arrival = last_arrival
        s.packets = s.nbytes = 0
        s.last_n = 0
        s.codes = bytearray()
        s.base, s.ready = base, False
        s.bound, s.frame_bytes, s.streamed = False, 0, 0
        s.carry = s.last_codes = b""
        s.lane = None
        s.jitter, s.jitter_total, s.jitter_counted, s.jitter_peak = current, total, counted, peak
        s.delta_ref, s.delta_ts, s.delta_peak = delta_ref, delta_ts, delta_peak
        self._slots[sid] = s
        self._flows[flow] = sid
        return sid

    def take(self, sid: int, disarm: bool) -> tuple[int, int, int, int, float, float, bytes | None, bytes, int,
                                                    tuple[bytes, bytes] | None, tuple[float, float, int, float],
                                                    tuple[float, int, float]]:
        s = self._slot(sid)
        keep = s.bound and not disarm       # the audio not streamed yet stays for pump()
        codes = b"" if keep else bytes(s.codes)
        last = (None if not s.packets else bytes(s.codes[len(s.codes) - s.last_n:]) if s.codes
                else s.last_codes)
        state = (s.history.tobytes(), s.carry) if s.bound and disarm else None
        out = (s.packets, s.nbytes, s.next_ext, s.last_ts_ext, s.last_arrival, s.max_arrival, last,
               s.table[np.frombuffer(codes, np.uint8)].tobytes(), s.streamed, state,
               (s.jitter, s.jitter_total, s.jitter_counted, s.jitter_peak),
               (s.delta_ref, s.delta_ts, s.delta_peak))
        if not keep:
            s.base += len(s.codes)
            s.codes = bytearray()
            s.ready = False
        s.packets = s.nbytes = s.streamed = 0
        if disarm and self._ready:    # a slot id is reused: it must not stay on the ready list
            self._ready = [r for r in self._ready if r != sid]
        if disarm:
            del self._slots[sid]
            del self._flows[s.flow]
            self._free.append(sid)
        return out

    def ignore(self, src: bytes, sport: int, dst: bytes, dport: int) -> int:
        flow = self._new_flow(src, sport, dst, dport)
        if self._free_fids:
            fid = self._free_fids.pop()
        else:
            fid = self._next_fid
            self._next_fid += 1
        self._ignored[flow] = fid
        self._foreign[fid] = _Ignored(flow)
        return fid

    def ignored(self, fid: int, release: bool) -> tuple[int, float]:
        f = self._foreign.get(fid)
        if f is None:
            raise KeyError(f"flow {fid} is not ignored")
        out = (f.packets, f.newest)
        f.packets, f.newest = 0, float("-inf")
        if release:
            del self._foreign[fid]
            del self._ignored[f.flow]
            self._free_fids.append(fid)
        return out

    def rebase(self, sid: int, base: int) -> None:
        self._slot(sid).base = base

    def bind(self, sid: int, history: bytes, carry: bytes, frame_bytes: int, lane: Any = None) -> None:
        s = self._slot(sid)
        if not self._filter:
            raise ValueError("no filter: the FastPath was made without phases")
        if s.bound:
            raise ValueError("the slot is bound already")
        if s.codes:
            raise ValueError("a slot is bound right after a take")
        if frame_bytes <= 0 or frame_bytes % 2 or len(carry) % 2 or len(carry) >= frame_bytes:
            raise ValueError("frame_bytes must be even and positive, the carry a part-frame of int16")
        if len(history) % 2 or len(history) // 2 > _STEADY:
            raise ValueError("history: at most the filter's state of int16")
        if lane is not None and not callable(getattr(lane, "push", None)):
            raise TypeError(f"lane must be a Lane (with push()), not {type(lane).__name__}")
        s.bound = True
        s.lane = lane
        s.history = np.frombuffer(history, np.int16).copy()
        s.carry, s.frame_bytes, s.streamed = bytes(carry), frame_bytes, 0
        if s.ready:
            self._ready = [r for r in self._ready if r != sid]
            s.ready = False

    def pump(self) -> list[tuple[int, bytes, float, int]]:
        out = []
        keep = []
        for sid in self._ready:
            s = self._slots[sid]
            if not s.bound:
                keep.append(sid)
                continue
            s.ready = False
            frames = self._pump(s)
            if not frames:
                continue
            if s.lane is not None:
                s.lane.push(frames, s.last_arrival, len(s.carry) // 2, 2 * s.last_n)
            else:
                out.append((sid, frames, s.last_arrival, len(s.carry) // 2))
        self._ready = keep
        return out

    def _pump(self, s: _Slot) -> bytes:
        codes = s.codes
        if not codes:
            return b""
        x = s.table[np.frombuffer(codes, np.uint8)]
        y, history = _upsample(s.history, x)
        s.history = history
        buf = s.carry + y.tobytes()
        whole = len(buf) - len(buf) % s.frame_bytes
        s.carry = buf[whole:]
        s.streamed += len(codes)
        s.last_codes = bytes(codes[len(codes) - s.last_n:])
        s.codes = bytearray()
        return buf[:whole]

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

    def run(self, reader: PacketReader, deadline: float, budget: int,
            until: float = float("inf")) -> tuple[float, bytes] | int:
        """(ts, frame) of the first packet not taken here, ``TICK`` after ``budget``
        packets since the last tick, ``EOF`` at the end of the file, ``PAUSE`` before a
        packet at or after ``until`` (it stays in the reader: ``held_ts``, read next),
        ``IDLE`` when a live reader has no packet now."""
        if not isinstance(reader, PacketReader):
            raise TypeError("run() needs a rtp2ws.capture.file.PacketReader (Reader, or capture.live.LiveReaderPy)")
        next_packet = reader.next_packet
        while True:
            if self._since_tick >= budget:
                self._since_tick = 0
                return TICK
            if reader.error is not None:
                reader.raise_error()
            item = next_packet()
            if item is None:
                if self._since_tick > 0:     # what was read before the end gets its tick first
                    self._since_tick = 0
                    return TICK
                if reader.error is not None:
                    continue
                return IDLE if reader.waiting else EOF
            ts, frame = item
            if ts >= until:
                reader.hold(item)
                return PAUSE
            self._since_tick += 1
            if ts < deadline and self._take_packet(ts, frame):
                continue
            return ts, frame

    def feed(self, batch: list[tuple[float, bytes]], pos: int, deadline: float) -> int:
        """Index of the first ``(ts, frame)`` of ``batch[pos:]`` not taken here (``len``: all)."""
        n = len(batch)
        while pos < n:
            ts, frame = batch[pos]
            if not (ts < deadline and type(frame) is bytes and self._take_packet(ts, frame)):
                return pos
            pos += 1
        return n

    def _take_packet(self, ts: float, d: bytes) -> bool:
        try:
            off, version = self._link(d)
        except MalformedPacket:     # a header too short for its link type: Python's
            return False
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
            fid = self._ignored.get((src, sport, dst, dport))
            if fid is None:
                return False
            f = self._foreign[fid]        # another worker's call: dropped, its time kept
            f.packets += 1
            if ts > f.newest:
                f.newest = ts
            self.foreign += 1
            if ts > self.now:
                self.now = ts
            return True
        s = self._slots[sid]
        _b0, b1, seq, ts32, ssrc = _RTP.unpack_from(d, p)
        size = plen - 12
        # rtp2ws.media.seq's rules inlined (a call each would cost the loop): the low 16
        # bits of the extended sequence number (uint16), and uint32_delta
        if (ssrc != s.ssrc or seq != s.next_ext & 0xFFFF or b1 & 0x7F != s.pt or ts32 != s.expect_ts
                or size > MAX_PAYLOAD):
            return False
        dts = (ts32 - s.last_ts_ext) & 0xFFFFFFFF
        if dts >= 0x80000000:
            dts -= 0x100000000
        skew = abs(float(dts) - (ts - s.last_arrival) * 8000.0)     # RFC 3550's D
        if skew > RESYNC_SAMPLES:
            return False
        s.codes += d[p + 12:p + plen]      # decoded when taken
        s.last_n = size
        s.packets += 1
        s.nbytes += size
        s.next_ext += 1
        s.last_ts_ext += dts
        s.expect_ts = (ts32 + size) & 0xFFFFFFFF        # uint32_add
        s.last_arrival = ts
        if ts > s.max_arrival:
            s.max_arrival = ts
        j = s.jitter = s.jitter + (skew - s.jitter) / 16.0      # as MediaLeg._place
        if not b1 & 0x80:                                        # no marker: counted
            s.jitter_total += j
            s.jitter_counted += 1
            if j > s.jitter_peak:
                s.jitter_peak = j
        if (ts32 - s.delta_ts) & 0xFFFFFFFF < 0x80000000:       # max delta, as LegQuality.on_rtp
            delta = ts - s.delta_ref
            if not b1 & 0x80 and delta > s.delta_peak:
                s.delta_peak = delta
            s.delta_ref, s.delta_ts = ts, ts32
        if not s.ready and s.base + len(s.codes) >= self.deliver:
            self._ready.append(sid)
            s.ready = True
        self.packets += 1
        if ts > self.now:
            self.now = ts
        return True


def default_class() -> type[FastPath] | type[_fastpath.FastPath]:
    """The FastPath of the first of ``BACKENDS`` (for ``feed``: live capture)."""
    if BACKENDS[0] == "native":
        assert _native is not None  # "native" is listed only when the extension is there
        return _NativeFastPath
    return FastPath


def for_reader(
    reader: PacketReader | _fastpath.Reader,
) -> tuple[type[FastPath] | type[_fastpath.FastPath], type[ReadError] | type[_fastpath.ReadError]]:
    """``(FastPath class, ReadError class)`` that go with ``reader`` (``rtp2ws.capture.file.reader_class``,
    ``rtp2ws.capture.live.live_reader_class``)."""
    if isinstance(reader, PacketReader):
        return FastPath, ReadError
    assert _native is not None  # a reader other than the twin's is the extension's
    return _NativeFastPath, _NativeReadError


def tables() -> tuple[bytes, bytes, bytes, int]:
    """The G.711 decoding tables as the fast path takes them (256 native int16 each),
    and the 2x filter's taps (``rtp2ws.codec.resample``'s) and their fraction bits."""
    return (ALAW_TO_LINEAR.astype("=i2").tobytes(), ULAW_TO_LINEAR.astype("=i2").tobytes(), _PHASES_BYTES,
            FRAC_BITS)
