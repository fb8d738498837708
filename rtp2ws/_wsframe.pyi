"""C twins of rtp2ws.ws.frame.encode (many RFC 6455 client frames in one buffer),
of rtp2ws.ws.outbox's OutboxPy and TotalsPy (one stream's queue toward the server)
and of rtp2ws.ws.wire's WirePy and send_batches_py (socket writes), and of
rtp2ws.ws.lane.LanePy (a stream's data plane, where the fast path pushes frames), and of
rtp2ws.bench.discard.WalkerPy (Drain, DrainWalker: the bench's discard sink after the handshake).

Built from native/wsframe.c, native/outbox.c, native/wire.c, native/lane.c and native/drain.c
when a C compiler is available; rtp2ws.ws.frame.encode_py, rtp2ws.ws.outbox.OutboxPy/TotalsPy,
rtp2ws.ws.wire.WirePy/send_batches_py, rtp2ws.ws.lane.LanePy and WalkerPy are used otherwise,
or when RTP2WS_NO_NATIVE=1 is set at import.
"""

from collections.abc import Callable, Sequence
from typing import Any, Final, final

from typing_extensions import Buffer

from .ws.outbox import TotalsPy

CHUNK_BYTES: Final[int]
"""Bytes of audio in one chunk of the outboxes' shared free list."""

def encode(messages: Sequence[str | Buffer], keys: Buffer, split: int = 0) -> bytes:
    """RFC 6455 client frames (FIN, MASK, one key per frame) of every message, in order:
    a str is a text frame, a buffer binary frames (cut every ``split`` bytes when split > 0).
    ``messages`` is a list or tuple; ``keys`` holds 4 bytes per frame (the rest is ignored)."""

def chunk_counts() -> tuple[int, int]:
    """(in use, free): the outboxes' audio chunks holding data, and those on the free list."""

@final
class Totals:
    """Counters summed over every outbox that shares it (the sender's statistics)."""

    @property
    def dropped_events(self) -> int: ...
    @dropped_events.setter
    def dropped_events(self, value: int) -> None: ...
    @property
    def dropped_samples(self) -> int: ...
    @dropped_samples.setter
    def dropped_samples(self, value: int) -> None: ...
    @property
    def sent_bytes(self) -> int: ...
    @sent_bytes.setter
    def sent_bytes(self, value: int) -> None: ...
    @property
    def sent_frames(self) -> int: ...
    @sent_frames.setter
    def sent_frames(self, value: int) -> None: ...
    @property
    def undelivered_samples(self) -> int: ...
    @undelivered_samples.setter
    def undelivered_samples(self, value: int) -> None: ...

@final
class Outbox:
    """One stream's messages on their way out (rtp2ws.ws.outbox.OutboxPy says what each does)."""

    @property
    def ping_every(self) -> int:
        """Unacknowledged audio after which a ping goes."""
    @ping_every.setter
    def ping_every(self, value: int) -> None: ...
    @property
    def ping_at(self) -> int | None:
        """The acknowledgement ping in flight: the offset it follows."""
    @ping_at.setter
    def ping_at(self, value: int | None) -> None: ...
    @property
    def note_sent(self) -> bool: ...
    @note_sent.setter
    def note_sent(self, value: bool) -> None: ...
    @property
    def sent(self) -> tuple[int, int] | None:
        """(first, end) of the audio the last take sent first."""
    @sent.setter
    def sent(self, value: tuple[int, int] | None) -> None: ...
    @property
    def ident(self) -> dict[str, Any]: ...
    @property
    def stream_id(self) -> Any: ...
    @property
    def totals(self) -> Totals | TotalsPy: ...
    @property
    def channels(self) -> int: ...
    @property
    def frame_bytes(self) -> int: ...
    @property
    def sample_rate(self) -> int: ...
    @property
    def sample_bytes(self) -> int: ...
    @property
    def samples_per_ms(self) -> int: ...
    @property
    def frame_samples(self) -> int: ...
    @property
    def max_buffer_ms(self) -> int: ...
    @property
    def resend_ms(self) -> int: ...
    @property
    def max_samples(self) -> int: ...
    @property
    def resend_samples(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def dropped_samples(self) -> int: ...
    @property
    def dropped_events(self) -> int: ...
    @property
    def sent_samples(self) -> int: ...
    @property
    def acknowledged(self) -> int: ...
    @property
    def resume_at(self) -> int: ...
    @property
    def undelivered_samples(self) -> int: ...
    @property
    def queued_samples(self) -> int: ...
    @property
    def retained_samples(self) -> int: ...
    @property
    def expected(self) -> int: ...
    @property
    def started(self) -> bool: ...
    @property
    def ended(self) -> bool: ...
    @property
    def closed(self) -> bool: ...
    @property
    def dropping(self) -> bool: ...
    @property
    def pending(self) -> bool: ...
    @property
    def queued_bytes(self) -> int: ...
    @property
    def retained_bytes(self) -> int: ...
    @property
    def unkept_samples(self) -> int: ...
    @property
    def queue(self) -> list[tuple[int, bytes, int]]:
        """A copy of the unsent runs."""
    @property
    def retained(self) -> list[tuple[int, bytes, int]]:
        """A copy of the resend window."""
    @property
    def events(self) -> list[tuple[int, str]]:
        """A copy of the queued events."""
    def __init__(self, ident: dict[str, Any], *, channels: int = 1, frame_ms: int | None = None,
                 max_buffer_ms: int = 10000, resend_ms: int = 1000, totals: Totals | TotalsPy | None = None,
                 sample_rate: int = 16000, sample_bytes: int = 2) -> None:
        """``channels`` must be 1 or more, ``sample_rate`` a whole number of kHz, ``sample_bytes``
        1 or 2 (ValueError)."""
    def push_audio(self, pcm: Buffer) -> bool: ...
    def push_event(self, message: dict[str, Any]) -> bool: ...
    def end(self, message: dict[str, Any]) -> bool: ...
    def connected(self) -> tuple[bool, int]: ...
    def resend(self, msgs: list[Any], offset: int) -> int: ...
    def take(self, msgs: list[Any], budget: int) -> int: ...
    def take_framed(self, keys: Buffer | Callable[[int], Buffer], budget: int) -> bytes:
        """``take(budget)`` as masked client frames, then the acknowledgement ping when due."""
    def end_message(self, reconnects: int) -> dict[str, Any]: ...
    def ping_due(self) -> int | None: ...
    def pong(self, data: bytes) -> bool: ...
    def end_answered(self, code: int | None) -> bool: ...
    def acknowledge(self, offset: int) -> None: ...
    def connection_lost(self) -> int: ...
    def abandon(self) -> tuple[int, int]: ...
    def close(self) -> None: ...

PENDING: Final[int]
ENDED: Final[int]
BLOCKED: Final[int]
BROKE: Final[int]
SENT: Final[int]
FAILED: Final[int]
WAKE: Final[int]
MARK: Final[int]
KEY_POOL: Final[int]
"""Masking key bytes drawn from getrandom(2) at a time by send_batches."""

@final
class Wire:
    """The write side of one connection's socket (rtp2ws.ws.wire.WirePy says what each does)."""

    def __init__(self, fd: int, lock: Any) -> None:
        """Writes to its own non-blocking duplicate of ``fd``; its methods are called with ``lock`` held."""
    @property
    def fd(self) -> int: ...
    @property
    def tail(self) -> bytes:
        """A copy of what the socket has not taken yet."""
    @property
    def broken(self) -> OSError | None: ...
    @property
    def written(self) -> int: ...
    @property
    def lock(self) -> Any: ...
    @property
    def blocked(self) -> bool: ...
    @property
    def open(self) -> bool: ...
    def write(self, data: Buffer) -> None: ...
    def retry(self) -> bool: ...
    def close(self) -> bytes: ...

@final
class Lane:
    """One stream's data plane (rtp2ws.ws.lane.LanePy says what each does)."""

    def __init__(self, outbox: Outbox, marked: list[Any], owner: Any) -> None: ...
    @property
    def outbox(self) -> Outbox | None: ...
    @property
    def marked(self) -> list[Any] | None: ...
    @property
    def owner(self) -> Any: ...
    @property
    def wire(self) -> Wire | None: ...
    @property
    def live(self) -> bool: ...
    @property
    def dirty(self) -> bool: ...
    @dirty.setter
    def dirty(self, value: bool) -> None: ...
    @property
    def pushed(self) -> int: ...
    @property
    def stamps(self) -> list[tuple[int, int, float, int, int]] | None: ...
    @stamps.setter
    def stamps(self, value: list[tuple[int, int, float, int, int]] | None) -> None: ...
    def push(self, pcm: Buffer, newest: float = 0.0, held: int = 0, packet: int = 0) -> None: ...
    def go_live(self, wire: Any, protocol: Any, transport: Any, open_state: Any) -> None:
        """``wire``: a Wire, or None (not plain TCP); another object counts as no wire."""
    def go_dead(self) -> None: ...
    def release(self) -> None: ...

def take_marked(marked: list[Any], /) -> list[Any]:
    """The items, and ``marked`` emptied keeping its room (rtp2ws.ws.lane.take_marked_py)."""

def use_uring(on: bool = ..., /) -> bool:
    """Turn send_batches' io_uring writes on or off (RTP2WS_NO_URING=1 starts them off);
    whether they are in use (False also when not built with liburing or refused)."""

def uring_info() -> dict[str, Any]:
    """state ('on', 'off', 'not made yet', 'refused', 'not built'), error (errno), sends, calls."""

def send_batches(
    items: Sequence[tuple[Outbox, Wire] | Lane], budget: int
) -> list[tuple[int, int, BaseException | None]]:
    """Each (Outbox, Wire) pair's (or Lane's) next batch framed and written to its wire (one GIL
    release for all the writes); (index, flags, error) for the items the caller must still act on."""

@final
class DrainWalker:
    """One connection's frames after the handshake, walked as the drain walks them
    (rtp2ws.bench.discard.WalkerPy says what each does)."""

    @property
    def binary(self) -> int: ...
    @property
    def text(self) -> int: ...
    @property
    def closing(self) -> bool:
        """A close frame (or a control frame over 125 bytes) was met: nothing more is walked."""
    def feed(self, data: Buffer, /) -> bytes:
        """Walk the bytes received; the replies to write (pongs, the close echoed)."""

@final
class Drain:
    """The discard sink's connections after their handshake: a thread of its own (no GIL)
    with an epoll loop over every socket handed over, frames walked as DrainWalker does."""

    def __init__(self, tick_ms: float = 0.0) -> None:
        """After each wake, the next at least ``tick_ms`` later (0 to 1000, else ValueError), unless
        the wake had a full batch of events or a socket that streams (a recv of 64 KB or more)."""
    def add(self, fd: int, reply: Buffer = b"", head: Buffer = b"") -> None:
        """Hand a connection over: a duplicate of ``fd`` is taken, ``reply`` written first, ``head``
        (what followed the handshake) walked, then every byte read.  ValueError once stopped."""
    def counts(self) -> dict[str, int]:
        """connections handed over, closed, binary and text frames, bytes read by the drain."""
    def stop(self) -> None:
        """Stop the thread and close every connection it still holds."""
