"""One stream's queue toward the server, sans I/O: what is still to be sent,
what was sent and not yet acknowledged, and the counts of what was lost.

An :class:`Outbox` takes audio and events from the capture side
(``push_audio``, ``push_event``, ``end``) and hands batches of messages to the
connection side (``connected``, ``resend``, ``take``), which tells it what the
server answered (``pong``, ``end_answered``) and when a connection broke
(``connection_lost``) or the stream was given up (``abandon``).  It contains no
networking code: no asyncio, no sockets, no clock, no framing.  Messages come
out as ``str`` (text) and PCM buffers (binary, one or more ``frame_ms``
messages each); ``ws.frame`` frames them and ``ws.sender`` (the adapter: one
connection per stream, reconnects, flow control) writes them.

Offsets count samples per channel from the first sample pushed.  Every sample
pushed gets the next offset whether it is sent or not, so what reaches the
server is contiguous: audio that follows a gap (dropped audio) comes after a
``drop`` message naming where it resumes.

Bounded whatever the server does:

* unsent audio at ``max_buffer_ms``: the OLDEST whole messages go first,
  counted in ``dropped_samples`` (and logged once per episode: when dropping
  starts, and when the queue is back under half the bound);
* events at ``MAX_EVENTS``: new ones are dropped and counted;
* sent audio kept for a resume (the resend window) at ``resend_ms``: the oldest
  leaves the window unacknowledged, and is counted as undelivered if the
  connection then breaks before a pong acknowledges it.

Delivery needs evidence.  The server reads frames in order, so its answer to a
frame proves it read everything written before that frame: the pong to an
acknowledgement ping (``ping_due`` says when one is due and the offset it
follows; only the one in flight counts), and the server's close answering the
close after ``end`` with 1000 or no code at all (not 1001, going away).  The
window is freed only on such evidence; what is still unacknowledged when the
stream is given up counts as undelivered.

``take_framed(keys, budget)`` is ``take`` as the sender writes it: the messages
as masked client frames (``ws.frame.encode``, binary ones cut every
``frame_samples``), then the acknowledgement ping when one is due.  It is the
Python face of the C data plane's entry (native/outbox.h), so that the same
tests check both give the same bytes.

Two twins, like ``ws.frame``: ``OutboxPy`` and ``TotalsPy`` here, the
reference, and ``rtp2ws._wsframe.Outbox`` and ``Totals`` (native/outbox.c),
which keep the audio in chunks of a shared free list and need no Python object
per frame.  ``Outbox`` and ``Totals`` are the C twins unless the extension is
not built or ``RTP2WS_NO_NATIVE`` is set (``rtp2ws.speedups`` picks them);
``BACKEND`` names the one in use, ``BACKENDS`` those available, ``TWINS`` maps
each to its (Outbox, Totals), and the same tests run against both.  The C
twin's ``queue``, ``retained`` and ``events`` are copies (lists), made when
read; it takes ``channels`` of 1 or more (the Python twin fails at the first
push otherwise).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..speedups import pick
from . import frame as wsframe
from .protocol import CLOSE_NORMAL, SAMPLE_RATE, encode

if TYPE_CHECKING:
    from typing_extensions import Buffer

    from .. import _wsframe

log = logging.getLogger("rtp2ws.sender")

SAMPLES_PER_MS = SAMPLE_RATE // 1000
MAX_EVENTS = 1000            # queued text messages per stream before they are dropped (and counted)
DEFAULT_FRAME_MS = 20        # message length when the start message does not say
ACK_MIN_MS = 500             # audio between two acknowledgement pings, at least (see Outbox.ping_every)
# The server's close frame after ours acknowledges the stream: a normal closure, or a bare
# close frame (RFC 6455 7.1.5: no status code; websockets reports it as 1005).
# 1001 (going away) and the rest do not.
CLOSE_NO_STATUS = 1005
ACK_CLOSE_CODES = frozenset({CLOSE_NORMAL, CLOSE_NO_STATUS})

Pcm = bytes | memoryview
Run = tuple[int, Pcm, int]           # (offset, pcm, samples): a run of whole messages
Message = str | Pcm                  # what take() and resend() hand out: text, or binary to cut into frames


def ms(samples: int, samples_per_ms: int = SAMPLES_PER_MS) -> int:
    """Milliseconds of audio, rounded up: a loss is never reported as 0 ms."""
    return -(-samples // samples_per_ms)


class TotalsPy:
    """Counters summed over every outbox that shares it (the sender's statistics)."""

    __slots__ = ("dropped_events", "dropped_samples", "sent_bytes", "sent_frames", "undelivered_samples")

    def __init__(self) -> None:
        self.dropped_samples = 0
        self.dropped_events = 0
        self.sent_frames = 0          # audio messages written, each resent one counted again
        self.sent_bytes = 0
        self.undelivered_samples = 0

    def __repr__(self) -> str:
        return "Totals(" + ", ".join(f"{k}={getattr(self, k)}" for k in self.__slots__) + ")"


class OutboxPy:
    """One stream's messages on their way out.  ``ident`` (call_id, tag,
    stream_id) goes into the ``drop`` and ``end`` messages it makes.  ``totals``:
    either twin's Totals."""

    def __init__(self, ident: dict[str, Any], *, channels: int = 1, frame_ms: int | None = None,
                 max_buffer_ms: int = 10000, resend_ms: int = 1000,
                 totals: TotalsPy | _wsframe.Totals | None = None, announce_gaps: bool = True,
                 sample_rate: int = SAMPLE_RATE, sample_bytes: int = 2) -> None:
        self.ident = dict(ident)
        # A ``drop`` message before audio that follows a gap; False: the gap is only
        # counted (a format with no such message, ws.formats).
        self.announce_gaps = bool(announce_gaps)
        self.stream_id = self.ident.get("stream_id")
        self.channels = channels
        self.totals: TotalsPy | _wsframe.Totals = totals if totals is not None else TotalsPy()
        # The stream's audio format (rtp2ws.codec.audioformat): offsets, frames and bounds
        # count samples, made of sample_bytes bytes per channel, sample_rate a second.
        if sample_rate < 1000 or sample_rate % 1000 or sample_bytes not in (1, 2):
            raise ValueError(f"an outbox takes a whole number of kHz and 1 or 2 bytes a sample, "
                             f"not {sample_rate} Hz and {sample_bytes}")
        self.sample_rate = sample_rate
        self.sample_bytes = sample_bytes
        self.samples_per_ms = spm = sample_rate // 1000
        self.frame_bytes = sample_bytes * channels
        # Samples (per channel) in one binary message: a longer run pushed at once
        # goes out as several messages of this length.
        self.frame_samples = max(1, int(frame_ms or DEFAULT_FRAME_MS)) * spm
        self.max_buffer_ms = max_buffer_ms
        self.resend_ms = resend_ms
        self.max_samples = max(0, max_buffer_ms) * spm
        self.resend_samples = max(0, resend_ms) * spm
        # A ping (its payload: the offset it follows) goes after this much unacknowledged
        # audio, half the window, so that its pong normally frees the window before it is full.
        self.ping_every = max(self.resend_samples // 2, ACK_MIN_MS * spm)

        self.offset = 0               # samples (per channel) pushed so far
        self.dropped_samples = 0
        self.dropped_events = 0
        self.sent_samples = 0         # samples taken from the queue for sending (first time only)
        self.acknowledged = 0         # offset: the server acknowledged every frame before it
        self.undelivered_samples = 0  # sent, never acknowledged, and no longer kept to send again

        self.queue: deque[Run] = deque()                        # unsent
        self.queued_samples = 0
        self.events: deque[tuple[int, str]] = deque()           # (stream position, encoded text)
        self.retained: deque[Run] = deque()                     # sent, not acknowledged: resent
        self.retained_samples = 0
        self._unkept = 0              # samples that left `retained` unacknowledged ...
        self._unkept_end = 0          # ... all before this offset
        # Where a resumed connection starts: the first offset the server may lack that can
        # still be sent or announced.  It is the resend window's start with the gap (dropped
        # audio) before its first run, if any: that gap's ``drop`` went out with the audio
        # after it, unacknowledged, and may have been lost with the connection.
        self.resume_at = 0
        self.ping_at: int | None = None   # the acknowledgement ping in flight: the offset it follows
        self.expected = 0             # on the current connection: the offset the server expects next
        self.started = False          # a first start (resumed=false) has gone out
        self.ended = False            # end() was called: nothing more is pushed
        self._end: dict[str, Any] | None = None
        self.closed = False           # abandoned: pushes only count
        # With note_sent set, take() leaves (first, end) in `sent`: the offsets of the
        # audio it took for the first time (a probe for latency).
        self.note_sent = False
        self.sent: tuple[int, int] | None = None
        self.dropping = False
        self._gap_dropped = 0         # samples dropped since dropping started (for the log)

    def __repr__(self) -> str:
        return (f"Outbox({self.stream_id!r}, offset={self.offset}, queued={self.queued_samples}, "
                f"retained={self.retained_samples}, acknowledged={self.acknowledged}, "
                f"dropped={self.dropped_samples})")

    @property
    def pending(self) -> bool:
        """Something (audio or an event) is waiting to be taken."""
        return bool(self.queue or self.events)

    @property
    def queued_bytes(self) -> int:
        return self.queued_samples * self.frame_bytes

    @property
    def retained_bytes(self) -> int:
        return self.retained_samples * self.frame_bytes

    # -- capture side: O(1), never waits ------------------------------------------------

    def push_audio(self, pcm: bytes | bytearray | memoryview) -> bool:
        """Queue PCM (``sample_bytes`` a sample: int16 LE or G.711; ``channels``
        interleaved) at the next offset; True if
        it was queued (False: empty, after ``end``, or abandoned and only counted)."""
        if self.ended:
            return False
        if type(pcm) is not bytes:
            pcm = bytes(pcm)
        size = len(pcm)
        n = size // self.frame_bytes
        if n * self.frame_bytes != size:
            raise ValueError(f"stream {self.stream_id}: {size} bytes is not a whole number of "
                             f"{self.channels}-channel {8 * self.sample_bytes}-bit samples")
        if not n:
            return False
        offset = self.offset
        self.offset = offset + n
        if self.closed:
            self._count_dropped(n)
            return False
        self.queue.append((offset, pcm, n))
        queued = self.queued_samples = self.queued_samples + n
        if queued > self.max_samples:
            self._drop_oldest()
        return True

    def push_event(self, message: dict[str, Any]) -> bool:
        """Queue a text message at the current offset; True if it was queued."""
        if self.ended or self.closed:
            return False
        if len(self.events) >= MAX_EVENTS:
            self.dropped_events += 1
            self.totals.dropped_events += 1
            if self.dropped_events == 1:
                log.warning("stream %s: more than %d events queued, dropping new ones", self.stream_id, MAX_EVENTS,
                            extra=self.ident)
            return False
        self.events.append((self.offset, encode(message)))
        return True

    def end(self, message: dict[str, Any]) -> bool:
        """Queue the ``end`` message (it leaves once everything before it has; see
        ``end_message``); False if the stream had ended already."""
        if self.ended:
            return False
        self._end = dict(message)
        for k, v in (("type", "end"), *self.ident.items()):
            self._end.setdefault(k, v)
        self.ended = True
        return True

    def _drop_oldest(self) -> None:
        dropped, _ = self._trim(self.queue, self.queued_samples - self.max_samples)
        self.queued_samples -= dropped
        self._count_dropped(dropped)
        self._gap_dropped += dropped
        if not self.dropping:
            self.dropping = True
            log.warning("stream %s: %d ms of audio queued (server slow or unreachable), dropping the oldest",
                        self.stream_id, self.max_buffer_ms, extra=self.ident)

    def _trim(self, runs: deque[Run], excess: int) -> tuple[int, int]:
        """Remove whole messages from the front of ``runs`` until ``excess``
        samples are gone (or nothing is left); returns the samples removed and the
        offset right after the last of them (0 if none)."""
        fs = self.frame_samples
        removed = end = 0
        while removed < excess and runs:
            off, pcm, n = runs[0]
            cut = -(-(excess - removed) // fs) * fs
            if cut >= n:
                runs.popleft()
                removed += n
                end = off + n
            else:
                runs[0] = (off + cut, memoryview(pcm)[cut * self.frame_bytes:], n - cut)
                removed += cut
                end = off + cut
        return removed, end

    def _dropping_stopped(self) -> None:
        self.dropping = False
        log.warning("stream %s: stopped dropping audio; %d ms dropped (%d ms in total)",
                    self.stream_id, self._gap_dropped // self.samples_per_ms,
                    self.dropped_samples // self.samples_per_ms,
                    extra=self.ident)
        self._gap_dropped = 0

    def _count_dropped(self, n: int) -> None:
        self.dropped_samples += n
        self.totals.dropped_samples += n

    # -- connection side ------------------------------------------------------------------

    def connected(self) -> tuple[bool, int]:
        """A connection is about to send ``start``: (resumed, offset) for it.  The
        first start is at offset 0; a resumed one at ``resume_at``, the first offset
        the server may lack that can still be sent or announced: the resend window
        with the gap before it (so that ``resend`` repeats that gap's ``drop``), else
        where the audio sent so far ends (so that ``take`` announces a gap before
        the queue).  What left the window unacknowledged comes before it: lost."""
        self.ping_at = None
        resumed = self.started
        self.started = True
        if not resumed:
            return False, 0
        return True, self.resume_at

    def resend(self, msgs: list[Message], offset: int) -> int:
        """Append the resend window (audio already sent once, from ``offset`` on)
        to ``msgs``, with ``drop`` messages across its gaps; returns the number
        of frames."""
        fs = self.frame_samples
        expected = offset
        frames = audio_frames = audio_bytes = 0
        for off, pcm, n in self.retained:
            if off > expected and self.announce_gaps:
                msgs.append(encode(dict(self.ident, type="drop", offset=off, samples=off - expected)))
                frames += 1
            msgs.append(pcm)
            k = -(-n // fs)
            frames += k
            audio_frames += k
            audio_bytes += n * self.frame_bytes
            expected = off + n
        self.expected = expected
        self.totals.sent_frames += audio_frames
        self.totals.sent_bytes += audio_bytes
        return frames

    def take(self, msgs: list[Message], budget: int) -> int:
        """Move queued events and audio into ``msgs`` in stream order (a ``drop``
        message before audio that follows a gap) until about ``budget`` bytes;
        returns how many frames they make.  The audio taken enters the resend window."""
        queue, events = self.queue, self.events
        if not events and len(queue) == 1 and queue[0][0] == self.expected and not self.note_sent:
            return self._take_one(msgs)          # the usual case: one run, right after the last
        fs = self.frame_samples
        retained = self.retained
        expected = first = self.expected
        frames = size = texts = taken = 0
        while size < budget:
            if events and (not queue or events[0][0] <= queue[0][0]):
                text = events.popleft()[1]
                msgs.append(text)
                texts += 1
                size += len(text)
            elif queue:
                item = queue.popleft()
                off, pcm, n = item
                if not taken:
                    first = off
                if off > expected and self.announce_gaps:
                    msgs.append(encode(dict(self.ident, type="drop", offset=off, samples=off - expected)))
                    texts += 1
                msgs.append(pcm)
                frames += (n + fs - 1) // fs
                size += len(pcm)
                taken += n
                expected = off + n
                retained.append(item)
            else:
                break
        if taken:
            self.expected = expected
            self.queued_samples -= taken
            self.sent_samples += taken
            if self.dropping and self.queued_samples <= self.max_samples // 2:
                self._dropping_stopped()
            totals = self.totals
            totals.sent_frames += frames
            totals.sent_bytes += taken * self.frame_bytes
            self.retained_samples += taken
            if self.retained_samples > self.resend_samples:
                self._unkeep(self.retained_samples - self.resend_samples)
            if self.note_sent:
                self.sent = (first, expected)
        return frames + texts

    def _take_one(self, msgs: list[Message]) -> int:
        """``take`` for a queue of one run that follows on from what was sent."""
        item = self.queue.popleft()
        _, pcm, n = item
        msgs.append(pcm)
        self.expected += n
        queued = self.queued_samples = self.queued_samples - n
        self.sent_samples += n
        if self.dropping and queued <= self.max_samples // 2:
            self._dropping_stopped()
        frames = (n + self.frame_samples - 1) // self.frame_samples
        totals = self.totals
        totals.sent_frames += frames
        totals.sent_bytes += len(pcm)
        self.retained.append(item)
        retained = self.retained_samples = self.retained_samples + n
        if retained > self.resend_samples:
            self._unkeep(retained - self.resend_samples)
        return frames

    def take_framed(self, keys: Buffer | Callable[[int], Buffer], budget: int) -> bytes:
        """``take(budget)`` as the sender writes it: the messages as masked client
        frames (binary ones cut every ``frame_samples``), then the acknowledgement
        ping when ``ping_due`` says one is due (b"" when nothing was taken).
        ``keys``: 4 bytes per frame (the ping's last), or a callable given the
        number of key bytes needed (after the take, as the sender draws them).  Too
        few keys: ValueError, and what was taken is lost (both twins)."""
        msgs: list[Message] = []
        frames = self.take(msgs, budget)
        if not frames:
            return b""
        at = self.ping_due()
        need = 4 * (frames + (at is not None))
        raw = keys(need) if callable(keys) else keys
        view = memoryview(raw).cast("B")
        if len(view) < need:
            raise ValueError(f"{need // 4} frames need {need} mask key bytes, got {len(view)}")
        data = wsframe.encode(msgs, view, self.frame_samples * self.frame_bytes)
        if at is not None:
            data += wsframe.ping_frame(at.to_bytes(8, "big"), bytes(view[4 * frames:4 * frames + 4]))
        return data

    def end_message(self, reconnects: int) -> dict[str, Any]:
        """The ``end`` message, once nothing is pending: ``samples`` and ``dropped_ms``
        filled in from the counts, ``reconnects`` from the connection side's."""
        end = self._end
        if end is None:
            raise RuntimeError(f"stream {self.stream_id}: end_message() before end()")
        end["samples"] = self.offset
        end["dropped_ms"] = self.dropped_samples // self.samples_per_ms
        end["reconnects"] = reconnects
        return end

    # -- acknowledgements -----------------------------------------------------------------

    def ping_due(self) -> int | None:
        """The offset an acknowledgement ping written now would follow (its payload,
        as 8 bytes big-endian), once ``ping_every`` of the audio taken is
        unacknowledged and no ping is in flight; else None."""
        if self.ping_at is None and self.expected - self.acknowledged >= self.ping_every:
            self.ping_at = self.expected
            return self.ping_at
        return None

    def pong(self, data: bytes) -> bool:
        """A pong: if it answers the ping in flight, the server read everything
        before that ping.  True if it did acknowledge."""
        at = self.ping_at
        if at is not None and data == at.to_bytes(8, "big"):
            self.ping_at = None
            self.acknowledge(at)
            return True
        return False

    def end_answered(self, code: int | None) -> bool:
        """The close frame the server sent after reading ``end`` (None: none came).
        True, and the whole stream acknowledged, for a normal closure or a bare
        close; any other code (1001: going away) proves nothing."""
        if code in ACK_CLOSE_CODES:
            self.acknowledge(self.offset)
            return True
        return False

    def acknowledge(self, offset: int) -> None:
        """The server read every frame before ``offset``: free them."""
        if offset <= self.acknowledged:
            return
        self.acknowledged = offset
        if offset > self.resume_at:
            self.resume_at = offset
        retained = self.retained
        freed = 0
        while retained:
            off, pcm, n = retained[0]
            if off + n <= offset:
                retained.popleft()
                freed += n
                continue
            if off < offset:
                k = offset - off
                retained[0] = (offset, memoryview(pcm)[k * self.frame_bytes:], n - k)
                freed += k
            break
        self.retained_samples -= freed
        if self._unkept:
            # exact while the audio that left the window is contiguous; with a gap
            # (dropped audio) in it, never less than what is still unacknowledged
            self._unkept = 0 if offset >= self._unkept_end else min(self._unkept, self._unkept_end - offset)

    def _unkeep(self, excess: int) -> None:
        """The resend window is over ``resend_ms``: its oldest audio leaves it,
        unacknowledged (acknowledged audio has left it already).  Should the
        connection break before a pong acknowledges it, it is undelivered."""
        retained = self.retained
        removed, end = self._trim(retained, excess)
        if end > self.resume_at:
            self.resume_at = end
        self.retained_samples -= removed
        self._unkept += removed
        self._unkept_end = retained[0][0] if retained else self.expected

    @property
    def unkept_samples(self) -> int:
        """Audio that left the resend window unacknowledged and is not known delivered."""
        return self._unkept

    def connection_lost(self) -> int:
        """The connection ended without acknowledging everything: what left the
        resend window unacknowledged cannot be sent again.  Returns those samples,
        now counted as undelivered."""
        self.ping_at = None
        lost = self._unkept
        if lost:
            self._unkept = 0
            self._count_undelivered(lost)
        return lost

    def abandon(self) -> tuple[int, int]:
        """The stream ends undelivered: what is queued counts as dropped, what was
        sent and never acknowledged as undelivered; later pushes are only counted.
        Returns (queued, unacknowledged) samples."""
        self.closed = True
        self.dropping = False         # the caller's line says it all
        queued = self.queued_samples
        unacknowledged = self.retained_samples + self._unkept
        self.queue.clear()
        self.queued_samples = 0
        self.events.clear()
        self.retained.clear()
        self.retained_samples = 0
        self._unkept = 0
        self._count_dropped(queued)
        self._count_undelivered(unacknowledged)
        return queued, unacknowledged

    def close(self) -> None:
        """The stream is over: if it was still dropping, say how much."""
        if self.dropping:
            self._dropping_stopped()

    def _count_undelivered(self, n: int) -> None:
        self.undelivered_samples += n
        self.totals.undelivered_samples += n


_native, BACKENDS = pick("outbox")
BACKEND = BACKENDS[0]
Outbox: type[OutboxPy] | type[_wsframe.Outbox]
Totals: type[TotalsPy] | type[_wsframe.Totals]
TWINS: dict[str, tuple[type[OutboxPy], type[TotalsPy]] | tuple[type[_wsframe.Outbox], type[_wsframe.Totals]]] = {
    "python": (OutboxPy, TotalsPy)}
if _native is not None:
    # the extension pick() chose, imported by name so that its stub (_wsframe.pyi) types it
    from .._wsframe import Outbox as _NativeOutbox
    from .._wsframe import Totals as _NativeTotals
    Outbox, Totals = _NativeOutbox, _NativeTotals
    TWINS["native"] = (_NativeOutbox, _NativeTotals)
else:
    Outbox, Totals = OutboxPy, TotalsPy
