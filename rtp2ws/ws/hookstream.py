"""An AudioHook stream (``--ws-format audiohook``): the asyncio adapter around the
session state machine of :mod:`rtp2ws.ws.audiohook`.

The sender opens one for every stream of that format (one per call: the call's
stereo stream, caller = ``external``, callee = ``internal``).  It takes the stream
sink's audio (int16 at the run's output rate, channels interleaved), keeps every
``rate / 8000``-th sample (the output filters are interpolators whose every
``rate / 8000``-th sample *is* an 8 kHz input sample: the G.711 audio as decoded)
and encodes it as PCMU, in a queue bounded by ``--max-buffer-ms`` (the oldest
audio is dropped, counted, and told to the server with ``discarded``).  Its task
connects (the ``Audiohook-*`` headers of the session, and the ``--header`` ones:
``X-API-KEY``), opens the session, waits for ``opened``, writes the audio in the
medium the server chose, answers the server's messages, and at the end of the call
closes the session (``close``, then ``closed``, then the WebSocket close).

This takes the Python path, not the C data plane (``ws.wire``/``ws.lane``): the
audio must be decimated, encoded and held back until ``opened``, and the session
reads every server message.

After a ``reconnect`` request, or a connection lost, the stream goes on in a new
session (a new session id, ``continuedSessions`` naming the last one, ``position``
going on from it) with the audio still queued.  A ``disconnect`` ends the stream
(what is still queued counts as dropped).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .. import __version__
from ..codec import g711
from ..signalling.sip import uri_user
from . import audiohook as ah
from .outbox import ms
from .streamtask import StreamTask
from .wakeup import Wakeup

if TYPE_CHECKING:  # pragma: no cover
    from .sender import Sender

log = logging.getLogger("rtp2ws.sender")

ORG_HEADER = "audiohook-organization-id"
NIL_UUID = "00000000-0000-0000-0000-000000000000"
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def check_headers(names_values: list[tuple[str, str]]) -> None:
    """ValueError for an ``Audiohook-Organization-Id`` header that is not a UUID (the
    ``open`` message's organizationId is that header's value)."""
    for name, value in names_values:
        if name.lower() == ORG_HEADER and not _UUID.match(value):
            raise ValueError(f"--header {name}: the organization id must be a UUID")


def new_stats() -> dict[str, int]:
    """The sender's AudioHook counters (``audiohook_<name>`` in its statistics: summed
    over workers as the others are).  ``disconnects_<reason>``: the server's
    ``disconnect`` messages by reason (completed, unauthorized, error, other)."""
    return {"sessions": 0, "opened": 0, "reconnect_requests": 0, "malformed": 0, "server_events": 0, "pings": 0,
            **{f"disconnects_{r}": 0 for r in (*ah.DISCONNECT_REASONS, "other")}}


class _NoLane:
    """The fast path never binds an AudioHook stream (``StreamSink.fast_target``)."""

    def release(self) -> None:
        pass


class HookStream(StreamTask):
    """One AudioHook stream; the capture side (``send_audio``, ``send_event``, ``end``)
    appends under the sender's lock and returns at once, the task does the rest."""

    TASK = "audiohook"
    _sender: Sender

    def __init__(self, sender: Sender, stream_id: str, start: dict[str, Any], channels: int) -> None:
        self._sender = sender
        cfg = sender.config
        self.stream_id = stream_id
        self.channels = channels
        self._start = dict(start, stream_id=stream_id)
        self.log_extra = {k: self._start.get(k) for k in ("call_id", "tag", "stream_id")}
        rate = int(self._start.get("sample_rate") or 16000)
        if rate % ah.RATE:
            raise ValueError(f"--ws-format audiohook sends 8 kHz: the output rate {rate} is not a multiple of it")
        self._step = rate // ah.RATE
        self._taken_in = 0                    # samples (per channel) handed in, at the output rate
        self._frame = max(1, int(self._start.get("frame_ms") or 20)) * ah.RATE // 1000   # samples a message
        self._queue: deque[bytes | bool] = deque()   # PCMU runs (channels interleaved); True/False: hold on/off
        self._pending_hold: bool | None = None   # the last hold mark dropped from the queue's head with the audio
        self._queued = 0                     # samples (per channel, 8 kHz) in the queue
        self._gap = 0                        # samples dropped from the head of the queue, not yet told
        self._limit = max(1, cfg.max_buffer_ms) * ah.RATE // 1000
        self.ended = False
        self._over = False                   # nothing more will be sent (the audio still coming is dropped)
        self.done = False
        self.given_up = False
        self.refused = False
        self.connected = False
        self.reconnects = 0
        self.sent = 0                        # samples (per channel, 8 kHz) written
        self.dropped = 0                     # ... dropped from the queue or left in it at the end
        self.lane = _NoLane()
        self.on_write = None
        self.session: ah.Session | None = None
        self.correlation_id = str(uuid.uuid4())
        self.ident = self._identity(cfg.headers)
        self._wakeup = Wakeup()
        self._abort_reason: str | None = None
        self._linger_handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None

    def _identity(self, headers: Sequence[tuple[str, str]]) -> ah.Identity:
        st = self._start
        org = next((v for n, v in headers if n.lower() == ORG_HEADER), NIL_UUID)
        call_id = st.get("call_id") or self.stream_id
        frm, to = st.get("from") or "", st.get("to") or ""
        custom = {k: v for k, v in (st.get("sip_headers") or {}).items() if v is not None}
        return ah.Identity(
            organization_id=org,
            conversation_id=ah.derived_id(call_id),
            participant={"id": ah.derived_id(call_id, frm), "ani": (uri_user(frm) or frm) if frm else "",
                         "aniName": st.get("from_name") or "", "dnis": (uri_user(to) or to) if to else ""},
            offered=ah.offered_channels(self.channels, st.get("tag") or ""),
            custom_config=custom or None)

    # -- read by the bridge and the run (units of the sender's counters: samples at the output rate) --

    @property
    def _stats(self) -> dict[str, int]:
        stats = self._sender.audiohook
        assert stats is not None          # the sender makes HookStreams for audiohook only
        return stats

    @property
    def queued_samples(self) -> int:
        return self._queued * self._step

    @property
    def sent_samples(self) -> int:
        return self.sent * self._step

    @property
    def dropped_samples(self) -> int:
        return self.dropped * self._step

    # -- capture side ---------------------------------------------------------------------

    def send_audio(self, pcm: bytes) -> None:
        """int16 LE at the output rate, ``channels`` interleaved: kept as PCMU at 8 kHz."""
        a = np.frombuffer(pcm, dtype=np.int16)
        if self.channels == 2:
            a = a.reshape(-1, 2)
        first = -self._taken_in % self._step
        self._taken_in += len(a)
        kept = a[first::self._step]
        if not len(kept):
            return
        data = g711.encode_ulaw(kept)
        with self._sender._lock:
            if self._over:                # disconnected, refused, given up: counted, not kept
                self._count_dropped(len(kept))
                return
            self._queue.append(data)
            self._queued += len(kept)
            self._trim()
        self._wake()

    def _trim(self) -> None:
        """Drop the oldest audio over the bound (counted; ``discarded`` tells the server).
        A hold or its end met on the way is kept, to be applied before the gap."""
        q = self._queue
        width = self.channels
        while self._queued > self._limit and q:
            head = q[0]
            if isinstance(head, bool):
                q.popleft()
                self._pending_hold = head     # the audio around it is gone: only the last one counts
                continue
            over = (self._queued - self._limit) * width
            if len(head) <= over:
                q.popleft()
                n = len(head) // width
            else:
                q[0] = head[over:]
                n = over // width
            self._queued -= n
            self._gap += n
            self._count_dropped(n)

    def _count_dropped(self, n: int) -> None:
        self.dropped += n
        self._sender._totals.dropped_samples += n * self._step

    def send_event(self, message: dict[str, Any]) -> None:
        """A hold pauses the stream (``paused``), its end resumes it (``resumed``); the
        other rtp2ws events (DTMF, codec) have no AudioHook message and are not sent."""
        kind = message.get("type")
        if kind not in ("hold", "resume"):
            return
        with self._sender._lock:
            if not self.ended:
                q = self._queue
                if q and isinstance(q[-1], bool):
                    q[-1] = kind == "hold"        # no audio since the last: only where it ends up counts
                else:
                    q.append(kind == "hold")
        self._wake()

    def end(self, message: dict[str, Any]) -> None:
        with self._sender._lock:
            if self.ended or self.done:
                return
            self.ended = True
        self._sender._in_loop(self._ended)

    def _ended(self) -> None:
        linger = self._sender.config.linger
        self._linger_handle = asyncio.get_running_loop().call_later(max(0.0, linger), self._linger_expired, linger)
        self._wake_now()

    def _linger_expired(self, linger: float) -> None:
        self._linger_handle = None
        if not self.done:
            self._abort(f"still undelivered {linger:g} s after the end of the call")

    def _wake(self) -> None:
        if not self._wakeup.is_set():
            self._sender._in_loop(self._wake_now)

    def _wake_now(self) -> None:
        self._wakeup.set()

    # -- the task -------------------------------------------------------------------------

    def _finish_undelivered(self, reason: str, count_given_up: bool) -> None:
        with self._sender._lock:
            self._over = True
            left = self._queued
            self._queue.clear()
            self._queued = 0
        self._count_dropped(left)
        s = self.session
        unacked = max(0, s.position - s.acked) if s is not None and s.state != ah.CLOSED else 0
        self._sender._totals.undelivered_samples += unacked * self._step
        if count_given_up:
            self.given_up = True
            self._sender._given_up += 1
            log.warning("stream %s: giving up (%s); %d ms of audio not delivered", self.stream_id, reason,
                        ms(left + unacked, ah.RATE // 1000), extra=self.log_extra)

    def _refuse(self, what: str) -> None:
        log.error("%s", self._sender._scrub(f"stream {self.stream_id}: {what}"), extra=self.log_extra)
        self.refused = True
        self._sender._refused += 1
        self._finish_undelivered("refused", count_given_up=False)

    async def _connect_loop(self) -> None:
        sender = self._sender
        cfg = sender.config
        stats = self._stats
        attempt = 0
        previous: ah.Session | None = None
        while True:
            s = ah.Session(self.ident, position=previous.position if previous else 0,
                           continued=[{"id": previous.id, "serverseq": previous.serverseq,
                                       "clientseq": previous.seq}] if previous else [],
                           close_timeout_s=cfg.close_timeout)
            headers = [*((n, v) for n, v in sender._headers if n.lower() != ORG_HEADER),
                       ("Audiohook-Organization-Id", self.ident.organization_id),
                       ("Audiohook-Correlation-Id", self.correlation_id), ("Audiohook-Session-Id", s.id)]
            try:
                async with sender._connecting:
                    ws = await connect(cfg.url, additional_headers=headers, ssl=sender._ssl,
                                       open_timeout=cfg.open_timeout, ping_interval=cfg.ping_interval,
                                       ping_timeout=cfg.ping_timeout, close_timeout=cfg.close_timeout,
                                       compression=None, user_agent_header=f"rtp2ws/{__version__}",
                                       logger=sender._ws_logger, **sender._proxy)  # type: ignore[arg-type]
            except asyncio.CancelledError:
                raise
            except InvalidStatus as e:
                code = e.response.status_code
                if 400 <= code < 500 and code not in (408, 429):
                    hint = "check --header / the token" if code in (401, 403, 407) else "check the URL"
                    self._refuse(f"server refused the connection: HTTP {code} {e.response.reason_phrase} ({hint})")
                    return
                sender._connect_failures += 1
                await self._retry(attempt, f"HTTP {code}")
                attempt += 1
                continue
            except Exception as e:  # noqa: BLE001 - retried
                sender._connect_failures += 1
                await self._retry(attempt, f"{type(e).__name__}: {e}")
                attempt += 1
                continue
            if previous is not None:
                self.reconnects += 1
                sender._reconnects += 1
            self.session = s
            stats["sessions"] += 1
            sender._connects += 1
            outcome = await self._serve(ws, s)
            previous = s
            if outcome in ("done", "refused"):
                return
            if outcome == "reconnect":
                attempt = 0
                log.info("stream %s: the server asked for a new session (%s)", self.stream_id, s.id,
                         extra=self.log_extra)
                continue
            # lost: what the server had not acknowledged may be lost with the connection
            unacked = max(0, s.position - s.acked)
            sender._totals.undelivered_samples += unacked * self._step
            s.acked = s.position
            await self._retry(attempt, f"connection lost (session {s.id})")
            attempt += 1

    async def _retry(self, attempt: int, why: str) -> None:
        cfg = self._sender.config
        delay = max(0.01, min(cfg.backoff_max, cfg.backoff_initial * 2.0 ** min(attempt, 40)))
        log.warning("%s", self._sender._scrub(f"stream {self.stream_id}: {self._sender.url_for_logs}: {why}; "
                                              f"retrying in {delay:.2f} s"), extra=self.log_extra)
        await asyncio.sleep(delay)

    async def _serve(self, ws: ClientConnection, s: ah.Session) -> str:
        """One session over one connection: "done" (closed, or disconnected), "reconnect",
        "refused" or "lost"."""
        sender = self._sender
        stats = self._stats
        loop = asyncio.get_running_loop()
        self.connected = True
        sender._open += 1
        why_closing: str | None = None          # the reason of the close sent
        reader: asyncio.Future[str | bytes] | None = None
        try:
            await self._send(ws, s.open(loop.time()))
            reader = asyncio.ensure_future(ws.recv())
            while True:
                outs: list[ah.Out] = []
                if s.state == ah.OPEN and why_closing is None:
                    outs += await self._pump(ws, s)
                    if self.ended and not self._queue:
                        why_closing = "end"
                        outs += s.close("end", loop.time())
                outs += s.tick(loop.time())
                result = await self._act(ws, s, outs, stats)
                if result is not None:
                    return result
                if s.state == ah.CLOSING and why_closing is None:
                    why_closing = "server"
                timer = s.timer()
                timeout = None if timer is None else max(0.0, timer - loop.time())
                self._wakeup.clear()
                waker = asyncio.ensure_future(self._wakeup.wait())
                try:
                    await asyncio.wait([reader, waker], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waker.cancel()
                if reader.done():
                    try:
                        data = reader.result()
                    except ConnectionClosed:
                        if s.state == ah.CLOSED:
                            return "done"
                        return "lost"
                    reader = asyncio.ensure_future(ws.recv())
                    result = await self._act(ws, s, s.receive(data, loop.time()), stats)
                    if result is not None:
                        return result
        except ConnectionClosed:
            return "lost"
        finally:
            self.connected = False
            sender._open -= 1
            if reader is not None and not reader.done():
                reader.cancel()
            stats["pings"] += s.pings
            if s.pongs:
                log.debug("stream %s: session %s: %d pings, round trip at most %.1f ms", self.stream_id, s.id,
                          s.pongs, s.rtt_max * 1000, extra=self.log_extra)
            if ws.state.name != "CLOSED":
                try:
                    await asyncio.wait_for(ws.close(), sender.config.close_timeout)
                except (asyncio.TimeoutError, ConnectionClosed):
                    ws.transport.abort()

    async def _act(self, ws: ClientConnection, s: ah.Session, outs: list[ah.Out], stats: dict[str, int]) -> str | None:
        """Send what the session said to, and act on what happened; the outcome of the
        session once it is over, else None."""
        outcome = None
        for out in outs:
            if isinstance(out, ah.Send):
                await ws.send(json.dumps(out.message, separators=(",", ":")))
            elif isinstance(out, ah.Opened):
                stats["opened"] += 1
                log.debug("stream %s: session %s opened, channels %s", self.stream_id, s.id, out.channels,
                          extra=self.log_extra)
            elif isinstance(out, ah.Malformed):
                stats["malformed"] += 1
                log.warning("stream %s: skipped a malformed AudioHook message: %s", self.stream_id, out.why,
                            extra=self.log_extra)
            elif isinstance(out, ah.ServerEvent):
                stats["server_events"] += 1
            elif isinstance(out, ah.Disconnect):
                reason = out.reason if out.reason in ah.DISCONNECT_REASONS else "other"
                stats[f"disconnects_{reason}"] += 1
                level = logging.INFO if out.reason == "completed" else logging.WARNING
                log.log(level, "stream %s: the server disconnected the session (%s%s)", self.stream_id, out.reason,
                        f": {out.info}" if out.info else "", extra=self.log_extra)
                self._disconnected = True
            elif isinstance(out, ah.Reconnect):
                stats["reconnect_requests"] += 1
                self._reconnecting = True
            elif isinstance(out, ah.Closed):
                outcome = self._after_close(s)
            elif isinstance(out, ah.Failed):
                if out.refused:
                    self._refuse(f"AudioHook session {s.id}: {out.why}")
                    return "refused"
                log.warning("stream %s: %s", self.stream_id, out.why, extra=self.log_extra)
                outcome = self._after_close(s)
        return outcome

    _disconnected = False
    _reconnecting = False

    def _after_close(self, s: ah.Session) -> str:
        """The session is over (closed, or close unanswered): what next."""
        if self._reconnecting and not self._disconnected:
            self._reconnecting = False
            return "reconnect"
        if s.acked < s.position:       # close unanswered: the end of the audio unproven
            self._sender._totals.undelivered_samples += (s.position - s.acked) * self._step
            s.acked = s.position
        with self._sender._lock:       # disconnected: the rest of the call is not sent
            self._over = True
            left = self._queued
            self._queue.clear()
            self._queued = 0
        self._count_dropped(left)
        return "done"

    async def _pump(self, ws: ClientConnection, s: ah.Session) -> list[ah.Out]:
        """Everything queued, in order: audio sent (open, not paused) or discarded
        (paused, no channels, before discardTo), holds pausing and resuming the session.
        The text messages this makes go out between the audio where they belong; what
        else happened is returned."""
        with self._sender._lock:
            items = list(self._queue)
            self._queue.clear()
            self._queued = 0
            gap, self._gap = self._gap, 0
            hold, self._pending_hold = self._pending_hold, None
        other: list[ah.Out] = []
        frames: list[bytes] = []

        async def told(outs: list[ah.Out]) -> None:
            if any(isinstance(o, ah.Send) for o in outs) and frames:
                await self._write(ws, frames)
                frames.clear()
            await self._send(ws, outs)
            other.extend(o for o in outs if not isinstance(o, ah.Send))

        if hold is not None:
            await told(s.hold(hold))
        await told(s.discard(gap))
        width = self.channels
        for item in items:
            if isinstance(item, bool):
                await told(s.hold(item))
                continue
            n = len(item) // width
            if s.position < s.discard_to:
                cut = min(n, s.discard_to - s.position)
                await told(s.discard(cut))
                item = item[cut * width:]
                n -= cut
            if not n:
                continue
            if not s.streaming:
                await told(s.discard(n))
                continue
            data = item
            chosen = s.channels or ()
            if width == 2 and len(chosen) == 1:
                data = item[0::2] if chosen[0] == ah.EXTERNAL else item[1::2]
            per = self._frame * len(chosen)
            frames.extend(data[i:i + per] for i in range(0, len(data), per))
            s.sent(n)
            self.sent += n
        if frames:
            await self._write(ws, frames)
        return other

    async def _write(self, ws: ClientConnection, frames: list[bytes]) -> None:
        totals = self._sender._totals
        for f in frames:
            await ws.send(f)
            totals.sent_frames += 1
            totals.sent_bytes += len(f)

    async def _send(self, ws: ClientConnection, outs: list[ah.Out]) -> None:
        for out in outs:
            if isinstance(out, ah.Send):
                await ws.send(json.dumps(out.message, separators=(",", ":")))
