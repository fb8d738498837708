"""From pipeline output to per-stream audio: streams per leg or per call,
audio cut into ``frame_ms`` frames, stereo alignment, and the protocol messages
of each stream.  Sans-I/O: ``StreamSink`` is a pipeline ``Sink`` that turns
calls, audio and events into *operations* (``Open``/``Audio``/``Event``/``End``)
which an adapter (``ws.bridge``) hands to the sender.  It is not the WebSocket
side: no connection (``ws.sender``), no queue (``ws.outbox``), no RFC 6455
framing (``ws.frame``).

* Per leg (default): a stream opens on the leg's first audio (or event), and
  carries the leg's samples cut into ``frame_ms`` frames; the last frame of a
  stream may be shorter, so the frames add up to exactly the leg's WAV.
* An ``Audio`` operation carries a *run*: every whole frame a stream has
  ready at once (and at the end of a stream, the shorter last frame after
  them), as one buffer.  The sender sends it as ``frame_ms`` messages.
* Extra legs: a second RTP flow running alongside a leg's (a media relay in
  the path) is a leg of its own, ``caller#2`` (``rtp2ws.pipeline.pipeline``), and gets
  its own mono stream with that tag and the call's ``call_id``, in stereo mode
  too; hold and resume reach it once its stream is open.
* Stereo (``mix="stereo"``): one stream per call, caller left and callee
  right, positioned on capture time like the stereo WAV.  A frame goes out once both channels
  have audio for it (looked at once per frame of capture time, so that the
  two legs' hand-offs leave as one run), or at the first tick when capture
  time is ``hold_s`` past its end (a leg that sends nothing, e.g. during
  silence suppression, is then zero-filled); audio that arrives for a frame
  already sent is dropped and counted.  Only mixers that got audio since the
  last look are looked at, and those holding a frame wait in a heap by the
  time their hold ends, so a tick costs nothing for the others.
* Mixed (``mix="mixed"``): the stereo stream's frames, aligned the same way
  (the same ``_Mixer``), each sample pair summed with saturation into one
  channel; tag ``mixed``.

Every stream carries the run's ``AudioFormat`` (``rtp2ws.codec.audioformat``):
the legs hand over int16 samples at its rate, and they are encoded (L16, or
G.711 at one byte a sample) before they are cut into frames, so a part-frame
held between two hand-offs is encoded bytes.  Only 16 kHz L16 legs of their own
are streamed by the fast path (``fast_target``).
* A format with one stream per call (``twilio``: ``formats.Format.call_stream``)
  is mixed as stereo (16-bit L16 at the run's rate, whatever ``--encoding``: the
  format encodes it itself), with three differences: each leg starts at a sample
  of the stream that is a multiple of rate/8000 (those samples are then the 8 kHz
  ones G.711 decoded to: ``codec.resample``'s interpolators pass their inputs
  through at every rate/8000-th output), a ``track``
  event says where (``offset``) once it is known, and ``dtmf`` says the ``leg``.
  Extra legs (``caller#2`` ...) are not streamed in it (the format has two tracks).
"""

from __future__ import annotations

import heapq
import itertools
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import numpy as np

from ..codec.audioformat import AudioFormat, mix_saturating
from ..media.dtmf import DtmfEvent
from ..media.leg import CodecChange, LegEvent
from ..pipeline.sink import FastTarget, LegView, Sink
from ..signalling.calls import CALLEE, CALLER, Call, CallEvent, HoldChanged
from ..ws import formats
from ..ws.audiohook import display_name
from ..ws.protocol import PROTOCOL_VERSION, SAMPLE_RATE, validate_frame_ms
from .wav import iso

RATE = SAMPLE_RATE      # the default output rate
PCM = np.dtype("<i2")
_SDP_TAGS = (CALLER, CALLEE)


MAX_EARLY_EVENTS = 64      # events (hold, DTMF) kept for a stream that has not opened yet

class Open(NamedTuple):
    stream_id: str
    start: dict[str, Any]
    channels: int


class Audio(NamedTuple):
    stream_id: str
    pcm: bytes        # int16 LE or G.711 (the run's AudioFormat), channels interleaved: whole frames,
                      # the last one shorter only at the end


def _audio(stream_id: str, pcm: bytes,
           _new: Callable[[type[Audio], tuple[str, bytes]], Audio] = tuple.__new__) -> Audio:
    """``Audio(stream_id, pcm)``, without the Python-level ``__new__`` of a
    NamedTuple (an Audio is made for every run of every stream)."""
    return _new(Audio, (stream_id, pcm))


class Event(NamedTuple):
    stream_id: str
    message: dict[str, Any]


class End(NamedTuple):
    stream_id: str
    message: dict[str, Any]


Op = Open | Audio | Event | End     # what StreamSink.take_ops hands the adapter


def leg_statistics(leg: LegView) -> dict[str, Any]:
    st: dict[str, Any] = dict(leg.stats)
    st["ssrcs"] = [f"0x{s:08x}" for s in leg.ssrcs]
    st["codecs"] = list(leg.codecs)
    st["codec_segments"] = [{"codec": c, "start": iso(at)} for c, at in leg.codec_segments]
    st["dtmf"] = [{"digit": d.digit, "duration_ms": d.duration_ms, "start": iso(d.start)} for d in leg.dtmf_events]
    st["encrypted"] = leg.encrypted
    st["quality"] = leg.quality
    st["srtp"] = leg.srtp
    return st


class _Stream:
    """Identity and framing state of one outgoing stream."""

    def __init__(self, call: Call, tag: str, channels: int, frame: int, ws_format: str = formats.DEFAULT,
                 sample_bytes: int = 2) -> None:
        self.id = uuid.uuid4().hex
        self.call_id = call.call_id
        self.tag = tag
        self.wire_tag = formats.wire_tag(ws_format, call.key, tag)     # the tag its messages carry
        self.channels = channels
        self.frame = frame            # samples per channel per frame
        self.frame_bytes = sample_bytes * channels * frame
        self.pending: list[bytes] = []   # leg streams: encoded audio of less than a frame, waiting for the rest
        self.pending_bytes = 0
        self.start_time: float | None = None

    def ident(self, kind: str) -> dict[str, Any]:
        return {"type": kind, "call_id": self.call_id, "tag": self.wire_tag, "stream_id": self.id}


class StreamSink(Sink):
    def __init__(self, *, frame_ms: int = 20, stereo: bool = False, sip_headers: tuple[str, ...] = (),
                 hold_s: float = 1.06, ws_format: str = formats.DEFAULT, audio: AudioFormat | None = None) -> None:
        audio = audio if audio is not None else AudioFormat()
        if stereo:                 # the old flag: mix="stereo"
            if audio.mix == "mixed":
                raise ValueError("stereo=True and mix='mixed' contradict each other")
            audio = AudioFormat(audio.rate, audio.encoding, "stereo")
        self.audio = audio
        self.rate = audio.rate
        self.frame = validate_frame_ms(frame_ms) * self.rate // 1000
        self.ws_format = formats.check(ws_format)
        formats.check_options(ws_format, frame_ms=frame_ms, sip_headers=sip_headers, audio=audio)
        self.frame_ms = frame_ms
        self.format = formats.spec(ws_format)
        self.call_stream = self.format.call_stream    # twilio: both legs as tracks of one stream
        if self.call_stream or self.format.per_call:
            # one stream per call (twilio, audiohook): two channels of L16 at the run's rate,
            # which the format encodes itself
            audio = self.audio = AudioFormat(audio.rate, "l16", "stereo")
        self.stereo = audio.mix == "stereo"
        self.mixing = audio.mix != "per-leg"    # the call's two SDP legs go to one stream (_Mixer)
        self._encode = None if audio.encoding == "l16" else audio.encode
        self.sip_headers = tuple(sip_headers)
        self.hold_s = hold_s
        self.ops: list[Op] = []
        self._legs: dict[tuple[str, str], _Stream] = {}          # per-leg streams
        self._extras: dict[str, list[str]] = {}                  # call key -> tags of its open extra-leg streams
        # events before a leg stream opened, or (tag "") before a call's mixer was made
        self._early: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.early_dropped = 0                                   # ... beyond MAX_EARLY_EVENTS
        self._mix: dict[str, _Mixer] = {}                        # stereo streams by call key
        self._next_scan = float("-inf")   # capture time of the next look at mixers that got audio
        self._fed: dict[str, _Mixer] = {}    # mixers that got audio since the last look
        # (capture time its hold ends, n, mixer): mixers holding a frame
        self._held: list[tuple[float, int, _Mixer]] = []
        self._seq = itertools.count()
        self.late_samples = 0

    def take_ops(self) -> list[Op]:
        ops = self.ops[:]
        self.ops.clear()      # the same list object: the mixers append to it
        return ops

    # -- Sink ---------------------------------------------------------------------

    def leg_audio(self, call: Call, leg: LegView, pcm: np.ndarray) -> None:
        if self.mixing and leg.tag in _SDP_TAGS:
            mix = self._mixer(call, leg)
            mix.add(leg, pcm)
            self._fed[call.key] = mix
            return
        if self.call_stream:
            return          # an extra leg: the call's stream has no track for it
        s = self._legs.get((call.key, leg.tag)) or self._leg_stream(call, leg)
        if self._encode is not None:
            b = self._encode(pcm)
        else:
            if pcm.dtype != PCM:
                pcm = pcm.astype(PCM)
            b = pcm.tobytes()          # one copy; the cutting below is on bytes, cheaper than on arrays
        size = len(b)
        pending = s.pending
        fb = s.frame_bytes
        head = None
        k = 0
        if pending:
            # complete the frame begun in an earlier hand-off
            k = fb - s.pending_bytes
            if size < k:
                pending.append(b)
                s.pending_bytes += size
                return
            pending.append(b[:k])
            head = b"".join(pending)
            pending.clear()
            s.pending_bytes = 0
        # then the whole frames: with that frame, one run; keep the rest
        rest = size - k
        full = rest - rest % fb
        if full:
            run = b[k:k + full] if k or full < size else b
            self.ops.append(_audio(s.id, head + run if head is not None else run))
        elif head is not None:
            self.ops.append(_audio(s.id, head))
        if full < rest:
            pending.append(b[k + full:])
            s.pending_bytes = rest - full

    # -- the fast path streams a leg (rtp2ws.pipeline.sink.Sink.fast_target) ------------

    def fast_target(self, call: Call, leg: LegView) -> FastTarget | None:
        """A leg's own stream, once open, takes whole frames from the fast path when
        they are 16 kHz L16 (the fast path's filter and samples); a stereo or mixed
        stream mixes, so its legs do not; nor do the streams of a format whose binary
        messages are not the L16 frames (audiohook: PCMU, after its session opened)."""
        if not self.audio.fast or (self.mixing and leg.tag in _SDP_TAGS) or not self.format.raw_frames:
            return None
        s = self._legs.get((call.key, leg.tag))
        if s is None:
            return None
        carry = b"".join(s.pending)
        s.pending.clear()
        s.pending_bytes = 0
        return FastTarget(carry, s.frame_bytes, partial(self._fast_feed, s, leg))

    def stream_id(self, call: Call, leg: LegView) -> str | None:
        """The id of ``leg``'s own stream, once open (None: none, or the leg is mixed)."""
        s = self._legs.get((call.key, leg.tag))
        return s.id if s is not None else None

    def _fast_feed(self, s: _Stream, leg: LegView, frames: bytes, newest: float, held: int) -> None:
        """The fast path's whole frames of the leg of stream ``s``: one run."""
        self.ops.append(_audio(s.id, frames))

    def fast_release(self, call: Call, leg: LegView, carry: bytes) -> None:
        s = self._legs[(call.key, leg.tag)]
        if carry:
            s.pending.append(carry)
        s.pending_bytes = len(carry)

    def leg_event(self, call: Call, leg: LegView, event: LegEvent) -> None:
        if isinstance(event, DtmfEvent):
            msg = {"digit": event.digit, "duration_ms": event.duration_ms, "time": iso(event.start)}
            kind, at = "dtmf", event.start
        elif isinstance(event, CodecChange):
            msg = {"codec": event.codec, "time": iso(event.at)}
            kind, at = "codec", event.at
        else:
            return
        if self.mixing and leg.tag in _SDP_TAGS:
            if self.call_stream:
                msg["leg"] = leg.tag
            self._mix_event(call, kind, msg, at)
            return
        if self.call_stream:
            return
        s = self._legs.get((call.key, leg.tag))
        if s is None:
            self._keep_early((call.key, leg.tag), dict(msg, type=kind, _at=at))
            return
        self._event(s, kind, msg, _offset(s.start_time, at, self.rate))

    def call_event(self, call: Call, event: CallEvent) -> None:
        if not isinstance(event, HoldChanged):
            return
        kind = "hold" if event.on_hold else "resume"
        msg = {"by": event.side, "time": iso(event.at)}
        if self.mixing:
            self._mix_event(call, kind, msg, event.at)
        else:
            for tag in _SDP_TAGS:
                s = self._legs.get((call.key, tag))
                if s is not None:
                    self._event(s, kind, msg, _offset(s.start_time, event.at, self.rate))
                else:
                    self._keep_early((call.key, tag), dict(msg, type=kind, _at=event.at))
        for tag in self._extras.get(call.key, ()):
            s = self._legs[(call.key, tag)]
            self._event(s, kind, msg, _offset(s.start_time, event.at, self.rate))

    def _mix_event(self, call: Call, kind: str, msg: dict[str, Any], at: float) -> None:
        """An event for the call's stereo or mixed stream; kept (under the tag ``""``) until
        the stream's mixer exists: an event can come before the first audio is handed
        over (a DTMF packet is an event when it arrives; its leg's audio comes after the
        jitter buffer, or after the fast path's batch)."""
        mix = self._mix.get(call.key)
        if mix is not None:
            mix.event(kind, msg, at)
        else:
            self._keep_early((call.key, ""), dict(msg, type=kind, _at=at))

    def _keep_early(self, key: tuple[str, str], event: dict[str, Any]) -> None:
        """An event for a leg whose stream has not opened (no audio yet): kept to send after
        its start, at most MAX_EARLY_EVENTS per leg (a flood of re-INVITEs before any audio)."""
        early = self._early.setdefault(key, [])
        if len(early) < MAX_EARLY_EVENTS:
            early.append(event)
        else:
            self.early_dropped += 1

    def call_ended(self, call: Call, legs: dict[str, LegView]) -> None:
        self._extras.pop(call.key, None)
        if self.mixing:
            self._fed.pop(call.key, None)
            self._early.pop((call.key, ""), None)
            mix = self._mix.pop(call.key, None)
            if mix is not None:
                mix.emit(until=None)
                end = mix.stream.ident("end")
                end["reason"] = call.end_reason
                end["legs"] = {tag: leg_statistics(leg) for tag, leg in legs.items() if tag in _SDP_TAGS}
                self.late_samples += mix.late
                self.ops.append(End(mix.stream.id, end))
        tags = [t for t in legs if t not in _SDP_TAGS]      # extra legs: always their own streams
        for tag in tags if self.mixing else [*_SDP_TAGS, *tags]:
            self._early.pop((call.key, tag), None)
            s = self._legs.pop((call.key, tag), None)
            if s is None:
                continue
            self._flush_rest(s)
            end = s.ident("end")
            end["reason"] = call.end_reason
            end.update(leg_statistics(legs[tag]))
            self.ops.append(End(s.id, end))

    def tick(self, now: float) -> None:
        if self._fed and now >= self._next_scan:
            self._next_scan = now + self.frame_ms / 1000
            for mix in self._fed.values():
                mix.emit_filled()
                if mix.wake_at is None and mix.has_frame():
                    self._hold(mix)
            self._fed.clear()
        # Frames a silent channel holds back go out hold_s after their end.
        held = self._held
        while held and held[0][0] <= now:
            _, _, mix = heapq.heappop(held)
            mix.wake_at = None
            if self._mix.get(mix.key) is not mix:
                continue                 # the call ended meanwhile
            mix.emit(until=now - self.hold_s)
            if mix.has_frame():
                self._hold(mix, after=now)

    def _hold(self, mix: _Mixer, after: float = float("-inf")) -> None:
        """Wake ``mix`` when the hold of its oldest unsent frame ends."""
        when = max(mix.frame_end_time(self.hold_s), after + 1e-6)
        mix.wake_at = when
        heapq.heappush(self._held, (when, next(self._seq), mix))

    # -- internals ------------------------------------------------------------------

    def _start(self, call: Call, s: _Stream, src: str | None, dst: str | None) -> None:
        msg = s.ident("start")
        msg.update({
            "version": PROTOCOL_VERSION,
            "from": call.from_uri, "to": call.to_uri, "src": src, "dst": dst,
            "codec": self.audio.codec, "sample_rate": self.rate, "channels": s.channels, "frame_ms": self.frame_ms,
            "start_time": iso(s.start_time),
            "sip_headers": {name: call.invite.header(name) if call.invite else None for name in self.sip_headers},
        })
        if self.format.per_call:      # audiohook's participant has the caller's display name (aniName)
            msg["from_name"] = display_name(call.invite.header("from") if call.invite else None)
        self.ops.append(Open(s.id, msg, s.channels))

    def _leg_stream(self, call: Call, leg: LegView) -> _Stream:
        key = (call.key, leg.tag)
        s = self._legs.get(key)
        if s is None:
            s = self._legs[key] = _Stream(call, leg.tag, 1, self.frame, self.ws_format, self.audio.sample_bytes)
            s.start_time = leg.start_time
            if leg.tag not in _SDP_TAGS:
                self._extras.setdefault(call.key, []).append(leg.tag)
            src, dst = leg.flows[0] if leg.flows else (None, None)
            self._start(call, s, src, dst)
            for ev in self._early.pop(key, []):
                at = ev.pop("_at")
                kind = ev.pop("type")
                self._event(s, kind, ev, _offset(s.start_time, at, self.rate))
        return s

    def _mixer(self, call: Call, leg: LegView) -> _Mixer:
        mix = self._mix.get(call.key)
        if mix is None:
            channels = self.audio.combined_channels
            s = _Stream(call, self.audio.mix, channels, self.frame, self.ws_format, self.audio.sample_bytes)
            s.start_time = leg.start_time
            mix = self._mix[call.key] = _Mixer(call.key, s, self.ops, lambda: self._start(call, s, None, None),
                                               self.rate, self.audio.encode, tracks=self.call_stream,
                                               align=self.call_stream or self.format.per_call)
            for ev in self._early.pop((call.key, ""), []):
                at = ev.pop("_at")
                kind = ev.pop("type")
                mix.event(kind, ev, at)
        return mix

    def _event(self, s: _Stream, kind: str, msg: dict[str, Any], offset: int) -> None:
        m = s.ident(kind)
        m.update(msg)
        m["offset"] = offset
        self.ops.append(Event(s.id, m))

    def _flush_rest(self, s: _Stream) -> None:
        """At the end of a leg stream: what is pending, a last frame shorter than the others."""
        if s.pending_bytes:
            self.ops.append(_audio(s.id, b"".join(s.pending)))
        s.pending.clear()
        s.pending_bytes = 0


def _offset(start: float | None, at: float, rate: int = RATE) -> int:
    if start is None:
        return 0
    return max(0, round((at - start) * rate))


class _Mixer:
    """Caller left, callee right, on a shared timeline starting at the first audio; sent
    as two channels, or (a 1-channel stream: mixed) as their saturating sum."""

    def __init__(self, key: str, stream: _Stream, ops: list[Op], opening: Callable[[], None] | None,
                 rate: int = RATE, encode: Callable[[np.ndarray], bytes] | None = None,
                 tracks: bool = False, align: bool = False) -> None:
        self.key = key                           # the call's key
        self.rate = rate
        self.encode = encode if encode is not None else _l16
        # a format that encodes 8 kHz itself (twilio, audiohook: align): legs start at a
        # multiple of rate/8000, so that the samples it takes are G.711's own; twilio's
        # (tracks) also gets a track event saying where each begins
        self.tracks = tracks
        self.grid = rate // 8000 if align else 1
        self.stream = stream
        self.ops = ops
        self.opening = opening                   # emits the start message, once, at the first frame
        self.early: list[tuple[str, dict[str, Any], float]] = []   # events before that
        self.t0 = stream.start_time
        self.emitted = 0                         # frames (sample pairs) sent
        self.buf = np.zeros((0, 2), dtype=np.int16)   # from `emitted` on
        self.filled = [0, 0]                     # absolute position each channel has data up to
        self.origin: dict[str, int] = {}         # leg tag -> absolute position of its sample 0
        self.received: dict[str, int] = {CALLER: 0, CALLEE: 0}
        self.late = 0
        self.wake_at: float | None = None        # in StreamSink's heap: the time it wakes

    def event(self, kind: str, msg: dict[str, Any], at: float) -> None:
        if self.opening is not None:
            if len(self.early) < MAX_EARLY_EVENTS:
                self.early.append((kind, msg, at))    # sent after the start message
            return
        m = self.stream.ident(kind)
        m.update(msg)
        m["offset"] = _offset(self.t0, at, self.rate)
        self.ops.append(Event(self.stream.id, m))

    def add(self, leg: LegView, pcm: np.ndarray) -> None:
        ch = 0 if leg.tag == CALLER else 1
        if leg.tag not in self.origin:
            if self.opening is not None and leg.start_time < self.t0:
                # an earlier leg turned up before anything was sent: move the origin back
                shift = round((self.t0 - leg.start_time) * self.rate / self.grid) * self.grid
                self.t0 = self.stream.start_time = leg.start_time
                self.origin = {tag: o + shift for tag, o in self.origin.items()}
                self.filled = [f + shift if f else 0 for f in self.filled]
                self.buf = np.concatenate([np.zeros((shift, 2), dtype=np.int16), self.buf])
            self.origin[leg.tag] = _offset(self.t0, leg.start_time, self.rate) // self.grid * self.grid
            if self.tracks and self.opening is None:
                self._track(leg.tag)
        pos = self.origin[leg.tag] + self.received[leg.tag]
        self.received[leg.tag] += len(pcm)
        lo = max(pos, self.emitted)
        if lo > pos:
            self.late += lo - pos
            pcm = pcm[lo - pos:]
        if not len(pcm):
            return
        end = lo + len(pcm)
        need = end - self.emitted
        if need > len(self.buf):
            grown = np.zeros((need, 2), dtype=np.int16)
            grown[:len(self.buf)] = self.buf
            self.buf = grown
        self.buf[lo - self.emitted:end - self.emitted, ch] = pcm
        self.filled[ch] = max(self.filled[ch], end)

    def has_frame(self) -> bool:
        """Is there a frame's worth of audio in some channel?  Only then can
        ``emit`` send anything."""
        return max(self.filled) - self.emitted >= self.stream.frame

    def frame_end_time(self, hold_s: float) -> float:
        """Capture time when the first unsent frame's hold ends."""
        t0 = self.t0
        assert t0 is not None    # the start time of the leg whose audio made the mixer (it has a frame)
        return t0 + (self.emitted + self.stream.frame) / self.rate + hold_s

    def emit_filled(self) -> None:
        """Send the whole frames every channel has filled."""
        n = min(self.filled) - self.emitted
        frame = self.stream.frame
        if n >= frame:
            self._send(n // frame * frame)

    def emit(self, until: float | None) -> None:
        """Send the frames every channel has filled; with ``until`` (a capture time)
        also those that end before it; with None (end of call) everything."""
        frame = self.stream.frame
        ready = min(self.filled)
        if until is None:
            ready = max(self.filled)
        elif self.t0 is not None:
            ready = max(ready, min(max(self.filled), int((until - self.t0) * self.rate)))
        n = ready - self.emitted
        if until is not None:
            n = (n // frame) * frame
        if n > 0:
            self._send(n)

    def _track(self, tag: str) -> None:
        """Where leg ``tag``'s track begins: its first sample, or the first not sent yet."""
        m = self.stream.ident("track")
        m.update(leg=tag, offset=max(self.origin[tag], self.emitted))
        self.ops.append(Event(self.stream.id, m))

    def _send(self, n: int) -> None:
        if self.opening is not None:
            self.opening()
            self.opening = None
            if self.tracks:
                for tag in self.origin:
                    self._track(tag)
            for kind, msg, at in self.early:
                self.event(kind, msg, at)
            self.early = []
        if n > len(self.buf):
            grown = np.zeros((n, 2), dtype=np.int16)
            grown[:len(self.buf)] = self.buf
            self.buf = grown
        pairs = self.buf[:n]
        self.ops.append(_audio(self.stream.id, self.encode(pairs if self.stream.channels == 2
                                                           else mix_saturating(pairs))))   # one run
        self.buf = self.buf[n:]
        self.emitted += n
        self.filled = [max(f, self.emitted) for f in self.filled]


def _l16(pcm: np.ndarray) -> bytes:
    return pcm.astype(PCM, copy=False).tobytes()
