"""The whole pipeline.Pipeline fed a byte-structured stream of frames and capture times,
packet at a time (feed_batch) and through the fast path (feed_frames), compared."""

from __future__ import annotations

import copy
import struct
import time
import zlib

import atheris
import numpy as np

from rtp2ws.fastpath import twin as fastpath
from rtp2ws.pipeline.pipeline import Config, Pipeline
from rtp2ws.pipeline.shard import merge_stats
from rtp2ws.pipeline.sink import FastTarget, Sink
from rtp2ws.speedups import load_native

from .. import gen
from ..common import check, decode_frames, entry
from .calls import _sdp_body

A4, B4 = gen.ADDRS4[0], gen.ADDRS4[1]
A_RTP, B_RTP = 4000, 5000
MAX_HANDOFF_SECONDS = 600     # one leg_audio call never carries more than this much audio

INVARIANT = """\
For any stream of frames and capture times (in order, equal, backwards, jumps past every
timer) of any supported link type: SIP over UDP and TCP, RTP/RTCP/STUN/DTMF to and from
the SDP's addresses, fragments, VXLAN and fuzz bytes, nothing escapes Pipeline.feed_batch,
feed_frames, tick or finish; the sink hears of a call before its audio and events and
of its end once, gets 1-D int16 audio in hand-offs of at most 10 minutes (memory: a gap
in the media is not filled in one piece however long the call was kept up by SIP
alone), nothing after the end; after every tick(now) no
timer is left due (the registry's next deadline and every leg's jitter-buffer deadline
are None or later than now); after finish no call or leg is left.  The same frames
through the fast path (feed_frames, C twin) tell the sink the same things as feed_batch
(each leg's audio and events in order, the call events in order, the statistics, each
leg's interarrival jitter to the bit; the
order of different legs' events within a tick is free, as the pipeline walks a set), also
when the sink takes legs as streams of whole frames and lets the fast path stream them
(bind, pump, release: the same frames, the part-frame handed back).  Sharded
(Config.shard, 2 or 3 shards, the fast path as above): each call is told to one shard
only, the shards' sinks together hear what the unsharded one hears, and their
statistics merged (rtp2ws.pipeline.shard.merge_stats) are the unsharded ones.
No call takes more than the per-call limit."""

_fast_native = load_native("_fastpath")


class Checker(Sink):
    """Checks the order of what the sink is told and keeps it in comparable form: the
    events in order, and each leg's story (its audio as a digest of the samples between
    two of its events, and its events), so that audio chunked differently compares equal
    and hours of audio cost no memory."""

    def __init__(self, clock=None) -> None:
        self.clock = clock         # the harness's time in leg_audio is not the pipeline's
        self.events: list = []     # everything but audio, in order
        self.legs: dict = {}       # (call key, tag) -> [event or ("audio", digest)]
        self._audio: dict = {}     # (call key, tag) -> (CRC-32, samples) of audio not yet closed by an event
        self.open: set = set()     # call keys started and not ended (a key is reused once forgotten)
        self.samples = 0           # audio samples handed out in all

    def _alive(self, call) -> None:
        check(call.key in self.open, f"sink told of call {call.key!r} while it is not open")

    def _story(self, key, event) -> None:
        h = self._audio.pop(key, None)
        story = self.legs.setdefault(key, [])
        if h is not None:
            story.append(("audio", h))
        story.append(event)

    def _event(self, call, event, tags=("caller", "callee")) -> None:
        if event[0] != "leg_event":
            # a leg's events are in its story: within a tick the pipeline hands different
            # legs their audio and events in the order of a set (the hash seed's)
            self.events.append(event)
        for tag in tags:
            self._story((call.key, tag), event)

    def call_started(self, call):
        check(call.key not in self.open, f"call {call.key!r} started twice")
        self.open.add(call.key)
        self._event(call, ("start", call.key))

    def leg_audio(self, call, leg, pcm):
        t = time.process_time()
        try:
            self._leg_audio(call, leg, pcm)
        finally:
            if self.clock is not None:
                self.clock.harness += time.process_time() - t

    def _leg_audio(self, call, leg, pcm):
        self._alive(call)
        check(isinstance(pcm, np.ndarray) and pcm.dtype == np.int16 and pcm.ndim == 1, "audio is not 1-D int16")
        check(len(pcm) <= 16000 * MAX_HANDOFF_SECONDS,
              f"audio hand-off of {len(pcm) / 16000:.0f} s for leg {leg.tag} of {call.key!r} (limit {MAX_HANDOFF_SECONDS} s)")
        self.samples += len(pcm)
        key = (call.key, leg.tag)
        h = self._audio.get(key)      # CRC-32 and length: chunking-independent, 3x cheaper than SHA-1
        crc = zlib.crc32(np.ascontiguousarray(pcm), h[0] if h is not None else 0)
        self._audio[key] = (crc, (h[1] if h is not None else 0) + len(pcm))

    def leg_event(self, call, leg, event):
        self._alive(call)
        self._event(call, ("leg_event", call.key, leg.tag, repr(event)), (leg.tag,))

    def call_event(self, call, event):
        self._alive(call)
        self._event(call, ("call_event", call.key, repr(event)))

    def call_ended(self, call, legs):
        self._alive(call)
        self.open.discard(call.key)
        self._event(call, ("end", call.key, call.end_reason, call.end,
                           {tag: (leg.stats, dict(leg.counts), leg.ssrcs, leg.codecs, leg.samples_out, leg.jitter)
                            for tag, leg in legs.items()}))

    def close(self) -> None:
        for key in list(self._audio):
            self._story(key, ("eof",))


class FramingChecker(Checker):
    """A Checker that takes audio as a leg's stream does: in whole frames, a part-frame
    held until the rest comes (or the call ends), so it can let the fast path stream
    the legs (``fast_target``, the part-frame given up; ``fast_release``, taken back)."""

    FRAME_BYTES = 640             # 20 ms at 16 kHz

    def __init__(self, clock=None) -> None:
        super().__init__(clock)
        self._part: dict = {}      # (call key, tag) -> int16 bytes of less than a frame
        self.bound: set = set()
        self.streamed = 0

    def _leg_audio(self, call, leg, pcm):
        key = (call.key, leg.tag)
        check(key not in self.bound, f"leg_audio for {key} while the fast path streams it")
        # no copy of the hand-off (minutes of filled silence, now and then): the held
        # part-frame completed first, then the whole frames as a view (the digest does
        # not depend on how the audio is cut)
        data = memoryview(np.ascontiguousarray(pcm, dtype=np.int16)).cast("B")
        part = self._part.pop(key, b"")
        if part:
            need = self.FRAME_BYTES - len(part)
            if len(data) < need:
                self._part[key] = part + bytes(data)
                return
            super()._leg_audio(call, leg, np.frombuffer(part + bytes(data[:need]), np.int16))
            data = data[need:]
        whole = len(data) - len(data) % self.FRAME_BYTES
        if len(data) > whole:
            self._part[key] = bytes(data[whole:])
        if whole:
            super()._leg_audio(call, leg, np.frombuffer(data[:whole], np.int16))

    def fast_target(self, call, leg):
        key = (call.key, leg.tag)
        check(key not in self.bound, f"{key} bound twice")
        self.bound.add(key)
        return FastTarget(self._part.pop(key, b""), self.FRAME_BYTES, lambda frames, newest, held: self._feed(
            call, leg, frames, newest, held))

    def _feed(self, call, leg, frames, newest, held):
        key = (call.key, leg.tag)
        check(key in self.bound, f"the fast path fed {key}, not bound")
        check(len(frames) % self.FRAME_BYTES == 0 and 0 <= held < self.FRAME_BYTES // 2, "not whole frames")
        self.streamed += len(frames)
        self.bound.discard(key)        # recorded as audio of the leg, then bound again
        try:
            super()._leg_audio(call, leg, np.frombuffer(frames, np.int16))
        finally:
            self.bound.add(key)

    def fast_release(self, call, leg, carry):
        key = (call.key, leg.tag)
        check(key in self.bound, f"fast_release for {key}, not bound")
        check(len(carry) < self.FRAME_BYTES and len(carry) % 2 == 0, "the part-frame is not less than a frame")
        self.bound.discard(key)
        if carry:
            self._part[key] = carry

    def call_ended(self, call, legs):
        for tag in legs:
            key = (call.key, tag)
            check(key not in self.bound, f"{key} still streamed by the fast path at the end of its call")
            rest = self._part.pop(key, b"")
            if rest:       # the last frame, shorter
                Checker._leg_audio(self, call, legs[tag], np.frombuffer(rest, np.int16))
        super().call_ended(call, legs)


def _sip(fdp) -> bytes:
    cid = fdp.PickValueInList(["c1@t", "c2@t"])
    caller = fdp.ConsumeBool()
    request = fdp.ConsumeIntInRange(0, 2) != 0
    method = fdp.PickValueInList(["INVITE", "ACK", "BYE", "INVITE", "UPDATE", "CANCEL"])
    n = fdp.ConsumeIntInRange(1, 3)
    status = fdp.PickValueInList([180, 200, 200, 183, 486, 401])
    ftag, ttag = ("ftag1", "ttag1")
    frm, to = ("A", "B")
    start = f"{method} sip:B@x SIP/2.0" if request else f"SIP/2.0 {status} R"
    if request and not caller:
        frm, to, ftag, ttag = to, frm, ttag, ftag
    body = ""
    if fdp.ConsumeIntInRange(0, 2) != 0:
        side_a = caller == request
        addr, port = ("10.0.0.1", A_RTP) if side_a else ("10.0.0.2", B_RTP)
        if fdp.ConsumeIntInRange(0, 5):
            d = fdp.PickValueInList(["", "", "a=sendonly\r\n", "a=inactive\r\n", "a=rtcp-mux\r\n"])
            body = (f"v=0\r\no=- 1 1 IN IP4 {addr}\r\ns=-\r\nc=IN IP4 {addr}\r\nt=0 0\r\n"
                    f"m=audio {port} RTP/AVP 8 0 101 13\r\na=rtpmap:101 telephone-event/8000\r\n{d}")
        else:
            body = _sdp_body(fdp)
    with_to_tag = (not request) or (method != "INVITE" or fdp.ConsumeIntInRange(0, 3) == 0)
    lines = [start, f"Via: SIP/2.0/UDP x;branch=z9{fdp.ConsumeIntInRange(0, 3)}", f"Call-ID: {cid}",
             f"CSeq: {n} {method if request else 'INVITE'}", f"From: <sip:{frm}@x>;tag={ftag}",
             f"To: <sip:{to}@x>" + (f";tag={ttag}" if with_to_tag else "")]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body.encode())}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def _frames(fdp) -> tuple[int, list]:
    linktype = fdp.PickValueInList(gen.LINKTYPES)
    if linktype == 229:
        linktype = 228
    t = fdp.PickValueInList([1000.0, 0.0, 1.7e9])
    frames = []
    rtp = {True: [0x1111, 100, 8000], False: [0x2222, 500, 16000]}      # direction -> ssrc, seq, ts
    tcp_seq = {True: 1, False: 1}
    silence = 0        # one long silence per input: its audio (minutes of it) is what costs
    for _ in range(fdp.ConsumeIntInRange(1, 120)):
        step = fdp.ConsumeIntInRange(0, 15)
        t += (0.02 if step < 10 else 0.0 if step < 12 else -0.05 if step == 12 else 0.8 if step == 13
              else fdp.PickValueInList([31.0, 32.0, 60.0, 300.0, 301.0, 1e4]))
        what = fdp.ConsumeIntInRange(0, 15)
        fwd = fdp.ConsumeBool()
        src, dst = (A4, B4) if fwd else (B4, A4)
        if what <= 1:
            ip = gen.ipv4(src, dst, 17, gen.udp(5060, 5060, _sip(fdp)))
        elif what == 2:
            payload = _sip(fdp)
            seq = tcp_seq[fwd]
            tcp_seq[fwd] += len(payload)
            if fdp.ConsumeIntInRange(0, 3) == 0:
                seq += fdp.ConsumeIntInRange(-20, 20)
            ip = gen.ipv4(src, dst, 6, gen.tcp(5060, 5061, seq, 0x18, payload))
        elif what <= 11:
            st = rtp[fwd]
            pt = fdp.PickValueInList([8, 8, 8, 0, 101, 13, 18])
            size = 4 if pt == 101 else fdp.PickValueInList([160, 160, 80, 0, 2])
            odd = fdp.ConsumeIntInRange(0, 11)
            seq = st[1] + (fdp.ConsumeIntInRange(-3, 3) if odd == 1 else 3000 if odd == 2 else 0)
            ssrc = st[0] ^ (1 if odd == 3 else 0)
            ts = st[2] + (fdp.ConsumeIntInRange(-800, 8000) if odd == 4 else 0)
            if pt == 101:
                payload = bytes([fdp.ConsumeIntInRange(0, 16), 0x80 if fdp.ConsumeBool() else 0]) + \
                    struct.pack("!H", fdp.ConsumeIntInRange(0, 2000))
            else:
                payload = bytes((i * 7) & 0xFF for i in range(size))
            body = struct.pack("!BBHII", 0x80, pt | (0x80 if odd == 5 else 0), seq & 0xFFFF, ts & 0xFFFFFFFF,
                               ssrc) + payload
            if odd != 1:
                st[1] += 1
                st[2] += max(size, 160)
            sport, dport = (A_RTP, B_RTP) if fwd else (B_RTP, A_RTP)
            ip = gen.ipv4(src, dst, 17, gen.udp(sport, dport, body))
        elif what == 12:
            sport, dport = (A_RTP + 1, B_RTP + 1) if fwd else (B_RTP + 1, A_RTP + 1)
            body = fdp.PickValueInList([b"\x81\xc8\x00\x06" + bytes(24),
                                        b"\x00\x01\x00\x00\x21\x12\xa4\x42" + bytes(12),
                                        b"\x10\x00\x00\x00ZRTP" + bytes(12)])
            ip = gen.ipv4(src, dst, 17, gen.udp(sport if fdp.ConsumeBool() else A_RTP, dport, body))
        elif what == 13 and fdp.ConsumeIntInRange(0, 3) == 0:
            # a long silence: no RTP, the call kept up by in-dialog INFO requests
            every = fdp.PickValueInList([20.0, 100.0, 250.0])
            silence += 1
            for k in range(fdp.ConsumeIntInRange(1, int(1200 / every)) if silence == 1 else 0):
                msg = (f"INFO sip:B@x SIP/2.0\r\nVia: SIP/2.0/UDP x;branch=z9i{k}\r\nCall-ID: c1@t\r\n"
                       f"CSeq: {10 + k} INFO\r\nFrom: <sip:A@x>;tag=ftag1\r\nTo: <sip:B@x>;tag=ttag1\r\n"
                       f"Content-Length: 0\r\n\r\n").encode()
                t += every
                frames.append((t, gen.link(fdp, linktype, gen.ipv4(A4, B4, 17, gen.udp(5060, 5060, msg)), 4, True)))
            continue
        elif what == 13:
            whole = gen.ipv4(src, dst, 17, gen.udp(5060, 5060, _sip(fdp)))[20:]
            cut = 8 * fdp.ConsumeIntInRange(1, max(1, (len(whole) - 1) // 8))
            ident = fdp.ConsumeIntInRange(0, 0xFFFF)
            parts = [gen.ipv4(src, dst, 17, whole[:cut], ident=ident, more=True),
                     gen.ipv4(src, dst, 17, whole[cut:], ident=ident, offset=cut)]
            if fdp.ConsumeBool():
                parts.reverse()
            frames += [(t, gen.link(fdp, linktype, q, 4, exact=True)) for q in parts[:-1]]
            ip = parts[-1]
        else:
            f, _ = gen.frame(fdp, linktype, lambda q: q.ConsumeBytes(q.ConsumeIntInRange(0, 200)))
            frames.append((t, f))
            continue
        frames.append((t, gen.link(fdp, linktype, ip, 4, exact=fdp.ConsumeIntInRange(0, 15) != 0)))
    return linktype, frames


def _check_timers(pipe: Pipeline, now: float) -> None:
    dl = pipe.registry.next_deadline()
    check(dl is None or dl > now, f"CallRegistry: a timer due at or before now after tick({now!r}): {dl!r}")
    for key, leg in pipe.legs.items():
        ldl = leg.next_deadline()
        check(ldl is None or ldl > now, f"leg {key} has a jitter-buffer deadline {ldl!r} due after tick({now!r})")


def _drive(linktype, frames, config, batches, fast, clock, framing=False):
    sink = FramingChecker(clock) if framing else Checker(clock)
    pipe = Pipeline(linktype, sink, config)
    pos = 0
    call = clock.call
    for n in batches:
        batch = frames[pos:pos + n]
        pos += n
        if fast is None:
            call(pipe.feed_batch, batch)
        else:
            call(pipe.feed_frames, batch, fast)
        _check_timers(pipe, pipe.now)
    call(pipe.finish)
    check(not pipe.calls and not pipe.legs and not pipe.foreign_calls, "calls or legs left after finish")
    check(not sink.open, "a call started and never ended")
    sink.close()
    return sink, pipe.stats, pipe.decoder.stats


def run(data: bytes, clock) -> None:
    if not data:
        return
    if data[0] < 0x20 and len(data) > 2:
        # raw: a link type and encode_frames() frames (the seeds: the real captures)
        linktype = gen.LINKTYPES[data[1] % len(gen.LINKTYPES)]
        frames = decode_frames(data[2:])
        fdp = atheris.FuzzedDataProvider(b"")
        config = Config()                      # the defaults replay uses
    else:
        fdp = atheris.FuzzedDataProvider(data[1:])
        linktype, frames = _frames(fdp)
        config = Config(jitter_depth=fdp.PickValueInList([0.06, 0.0, 0.2]),
                        rtp_timeout=fdp.PickValueInList([300.0, 1.0, 30.0]),
                        media_only=fdp.ConsumeIntInRange(0, 3) != 0,
                        deliver_ms=fdp.PickValueInList([0, 0, 20, 1000]),
                        flush_ms=fdp.PickValueInList([0, 0, 20]))
        if config.deliver_ms and config.flush_ms:
            config.flush_ms = 0
    # legs as streams (the fast path streams them) for half the inputs: decided without
    # consuming input, so that an input means the same frames as before this choice existed
    framing = len(data) % 2 == 1
    batches, left = [], len(frames)
    while left > 0:
        n = min(left, fdp.PickValueInList([1024, 1, 4, 16, 64]))      # used up: one batch
        batches.append(n)
        left -= n
    ref = _drive(linktype, frames, config, batches, None, clock, framing)
    if _fast_native is not None:
        got = _drive(linktype, frames, config, batches, _fast_native.FastPath, clock, framing)
    else:
        got = _drive(linktype, frames, config, batches, fastpath.FastPath, clock, framing)
    check(got[1] == ref[1], f"pipeline stats differ with the fast path: {got[1]} vs {ref[1]}")
    check(got[2] == ref[2], "decoder stats differ with the fast path")
    check(got[0].legs == ref[0].legs, "a leg's audio or events differ with the fast path")
    check(got[0].events == ref[0].events, "the sink's events differ with the fast path")
    # sharded: 2 or 3 shards (decided without consuming input), each through the fast path
    count = 2 + (len(data) // 2) % 2
    fast = _fast_native.FastPath if _fast_native is not None else fastpath.FastPath
    legs: dict = {}
    events: dict = {}
    stats = []
    for index in range(count):
        shard = copy.copy(config)
        shard.shard = (index, count)
        one = _drive(linktype, frames, shard, batches, fast, clock, framing)
        mine = _by_call(one[0].events)
        check(not mine.keys() & events.keys(), f"calls told to two shards: {sorted(mine.keys() & events.keys())}")
        events.update(mine)
        legs.update(one[0].legs)
        stats.append(_all_stats(one))
    check(legs == got[0].legs, f"a leg's audio or events differ with {count} shards")
    check(events == _by_call(got[0].events), f"the sink's events differ with {count} shards")
    want = _all_stats(got)
    want.pop("foreign")
    merged = merge_stats(stats)
    check(merged == want, f"merged stats of {count} shards differ: {merged} vs {want}")


def _by_call(events) -> dict:
    out: dict = {}
    for e in events:
        out.setdefault(e[1], []).append(e)
    return out


def _all_stats(driven) -> dict:
    stats = dict(driven[1])
    stats.update({f"decoder_{k}": v for k, v in driven[2].items()})
    return stats


TestOneInput = entry("pipeline", run)
