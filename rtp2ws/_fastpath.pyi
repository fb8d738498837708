"""C twin of the RTP fast path (rtp2ws.fastpath.twin: Reader and FastPath).

Built from native/fastpath.c (linked with libpcap) when a C compiler is
available; the Python classes in rtp2ws.fastpath.twin are used otherwise, or
when RTP2WS_NO_NATIVE=1 is set at import.  See rtp2ws.fastpath.twin for the
contract between the fast path and the pipeline.
"""

from typing import Any, Final, final

from _typeshed import StrOrBytesPath
from typing_extensions import Buffer, disjoint_base

EOF: Final[int]
"""``FastPath.run`` result: the capture file is at its end."""
TICK: Final[int]
"""``FastPath.run`` result: ``budget`` packets were read since the last tick."""
PAUSE: Final[int]
"""``FastPath.run`` result: the next packet is at or after ``until``; it stays in the reader."""
IDLE: Final[int]
"""``FastPath.run`` result: a ``LiveReader`` has no packet now (``waiting``)."""

class ReadError(Exception):
    """The capture broke off; ``str()`` is libpcap's message."""

@disjoint_base
class Reader:
    """A pcap or pcapng file opened with libpcap (nanosecond timestamps), read by FastPath.run."""

    @property
    def packets_read(self) -> int:
        """Packets read so far."""
    @property
    def linktype(self) -> int:
        """pcap_datalink() of the file."""
    @property
    def bad_timestamps(self) -> int:
        """Packets whose time was outside 1970..9999 and was replaced."""
    @property
    def first_bad_timestamp(self) -> int:
        """Number of the first such packet (1-based), 0 for none."""
    @property
    def bytes_read(self) -> int:
        """Position in the file."""
    @property
    def held_ts(self) -> float | None:
        """Capture time of the packet a paced run stopped before (read next), or None."""
    def __init__(self, path: StrOrBytesPath) -> None:
        """Raises OSError with libpcap's message when the file cannot be opened."""
    def close(self) -> None:
        """Close the capture file."""

@final
class LiveReader(Reader):
    """A network interface opened with libpcap (immediate mode, non-blocking, nanosecond
    timestamps where the interface has them), read by FastPath.run in the caller's thread
    (rtp2ws.capture.live.LiveReaderPy is the twin)."""

    @property
    def waiting(self) -> bool:
        """The last read found no packet in the ring (FastPath.run answered IDLE)."""
    @property
    def closed(self) -> bool:
        """Closed (``close()``), or ended by libpcap."""
    @property
    def bytes(self) -> int:
        """Bytes of the packets read."""
    def __init__(self, interface: str, snaplen: int = 65535, promisc: bool = True,
                 buffer_size: int = 67108864) -> None:
        """Raises OSError with libpcap's message when the interface cannot be opened."""
    def setfilter(self, text: str, /) -> None:
        """Compile and apply a tcpdump-syntax filter (OSError with libpcap's message)."""
    def fileno(self) -> int:
        """The descriptor that polls readable when the ring holds a packet."""
    def stats(self) -> tuple[int, int, int]:
        """(received, dropped, interface_dropped): libpcap's 32-bit counters."""

@final
class FastPath:
    """Takes the RTP packets of armed flows that need no decision (see rtp2ws.fastpath.twin)."""

    @property
    def packets(self) -> int:
        """Packets taken here."""
    @property
    def now(self) -> float:
        """Latest capture time of a packet taken here."""
    @property
    def foreign(self) -> int:
        """Packets dropped here on ignored flows (``ignore``), in all."""
    def __init__(
        self,
        link: tuple[str, int, int, bool],
        deliver_samples: int,
        alaw_table: Buffer,
        ulaw_table: Buffer,
        phases: Buffer | None = None,
        frac_bits: int = 0,
    ) -> None:
        """``link`` is the capture's rtp2ws.net.packet.LinkLayer (kind, header, type_at, vlans);
        the tables are 256 native int16 samples each, phases the 2x filter's 2*K int32 taps
        with frac_bits fraction bits, for bound slots (rtp2ws.fastpath.twin.tables())."""
    def arm(
        self,
        src: Buffer,
        sport: int,
        dst: Buffer,
        dport: int,
        ssrc: int,
        next_ext: int,
        pt: int,
        alaw: bool,
        expect_ts: int,
        last_ts_ext: int,
        last_arrival: float,
        base: int,
        jitter: tuple[float, float, int, float] = ...,
        delta: tuple[float, int, float] = ...,
        /,
    ) -> int:
        """Arm the flow src:sport -> dst:dport (addresses of 4 or 16 bytes) for a leg; returns its slot id.
        ``jitter``: the leg's interarrival jitter (current, total, counted, peak), default none yet;
        ``delta``: its max-delta state (reference time, reference RTP timestamp, peak or -inf), default
        the last packet as the reference, none counted."""
    def ignore(self, src: Buffer, sport: int, dst: Buffer, dport: int, /) -> int:
        """Drop the flow's RTP packets from now on (a foreign call's: rtp2ws.pipeline.shard); its id."""
    def ignored(self, fid: int, release: bool, /) -> tuple[int, float]:
        """``(packets, newest)`` dropped on the flow since the last look (newest: -inf for none),
        cleared; with ``release`` the flow is no longer ignored."""
    def take(
        self, sid: int, disarm: bool, /
    ) -> tuple[int, int, int, int, float, float, bytes | None, bytes, int, tuple[bytes, bytes] | None,
               tuple[float, float, int, float], tuple[float, int, float]]:
        """``(packets, nbytes, next_ext, last_ts_ext, last_arrival, max_arrival, last_payload, samples,
        streamed, state, jitter, delta)`` taken since the last take: samples are native int16; last_payload is None
        when no packet was; streamed: samples a bound slot streamed; state: (filter state, part-frame)
        of a bound slot disarmed; jitter: the leg's interarrival jitter now (current, total, counted, peak);
        delta: its max-delta state now."""
    def bind(self, sid: int, history: Buffer, carry: Buffer, frame_bytes: int, lane: Any = None, /) -> None:
        """The slot streams its leg from now on: the 2x filter from ``history``, whole frames of
        ``frame_bytes`` from the part-frame ``carry``; pushed into ``lane`` (rtp2ws.ws.lane) by
        ``pump`` when one is given."""
    def pump(self) -> list[tuple[int, bytes, float, int]]:
        """``(sid, frames, newest, held)``: the new whole frames of every bound slot that is ready,
        the capture time of its newest packet, and the 16 kHz samples it holds after them; a slot
        bound with a lane has them pushed there instead (``lane.push(frames, newest, held, packet)``)."""
    def rebase(self, sid: int, base: int, /) -> None:
        """The slot's leg now holds ``base`` samples."""
    def ready(self) -> list[int]:
        """Slot ids that reached the delivery size since they were last taken (the list is emptied)."""
    def touched(self) -> list[int]:
        """Armed slot ids with packets not yet taken."""
    def armed(self) -> list[int]:
        """Armed slot ids."""
    def feed(self, batch: list[tuple[float, bytes]], pos: int, deadline: float, /) -> int:
        """Index of the first ``(ts, frame)`` of ``batch[pos:]`` not taken (``len(batch)``: all)."""
    def run(self, reader: Reader, deadline: float, budget: int, until: float = ..., /) -> tuple[float, bytes] | int:
        """Read ``reader`` until a packet for Python ``(ts, frame)``, ``TICK``, ``EOF``, ``PAUSE``
        before a packet at or after ``until`` (read again next), or ``IDLE`` when a ``LiveReader``
        has no packet now; raises ReadError when the capture breaks off."""
