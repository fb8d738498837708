"""The pipeline: captured frames in, per-call audio and events out to a sink.

One way through (see docs/ARCHITECTURE.md):

    frame → PacketDecoder → SIP (UDP, or TCP via SipTcpReassembler) → CallRegistry
                          ↘ Correlator → MediaLeg (jitter buffer → G.711 → 2x FIR) → Sink
                          ↘ (RTP no SDP claims) Probation → a media-only call

Sans-I/O like the stages it joins: every frame carries its capture time,
and ``finish(now)`` ends what is left.  Replay and live capture drive the
same object; a ``Sink`` receives the results.
"""

from __future__ import annotations

import heapq
import itertools

from ..codec.resample import RATES
from ..fastpath.driver import FastDriver, Taken
from ..fastpath.twin import IDLE, PAUSE, TICK, default_class, for_reader
from ..media.keylog import KeyLog
from ..media.leg import EXTRA_LEGS, MediaLeg, extra_tag
from ..media.quality import LegQuality, apply_rtcp, pair
from ..media.rtcp import RtcpError, parse_compound
from ..media.rtp import KIND_DTLS, KIND_RTCP, KIND_RTP, KIND_STUN, KIND_ZRTP, classify, parse_rtp, serialize_rtp
from ..media.srtp import REPLAYED, SrtpStream, leg_keys, sdes_declined
from ..net.packet import MalformedPacket, PacketDecoder
from ..net.tcpstream import SipTcpReassembler
from ..signalling.calls import (
    CALLEE,
    CALLER,
    Call,
    CallEnded,
    CallRegistry,
    CallStarted,
    HoldChanged,
    MediaUpdated,
    other,
)
from ..signalling.correlator import Correlator, format_addr, pack_ip
from ..signalling.sip import SipParseError, looks_like_sip, parse_message
from .probation import AFTER_END, FULL, PROBATION_FLOWS, Probation, Promoted
from .probation import PROBATION_STALE as PROBATION_STALE  # re-exported: tests/test_probation.py
from .shard import PIPELINE_STATS, ForeignLeg, check_shard, owner
from .sink import LegView, Sink

UDP = 17
TCP = 6
MAX_ERRORS_KEPT = 100      # undocumented exceptions kept for the log between two looks
TICK_PIECES = 10           # leg.MAX_TAKE pieces a leg hands out per tick (10 min); the next tick goes on
FLOW_WINDOW = 1.0          # a leg's new flow is concurrent when the leg's flow goes on within this
MAX_HELD = 256             # packets of a new flow held while that is undecided (then decided early)
MAX_UNDECIDED = 4          # new flows of one call undecided at once; more are counted and dropped
MAX_UNDECIDED_ALL = 1024   # ... and of all calls
MAX_EXCESS = 64            # flows of one call beyond EXTRA_LEGS remembered as dropped
FAST_RATE = 16000          # the output rate the fast path streams legs at (its filter is Upsampler2x's)


class Config:
    def __init__(self, *, jitter_depth: float = 0.060, rtp_timeout: float = 300.0, media_only: bool = True,
                 deliver_ms: int = 0, flush_ms: int = 0, probation_flows: int = PROBATION_FLOWS,
                 shard: tuple[int, int] | None = None, rate: int = 16000, srtp_keylog: KeyLog | None = None) -> None:
        # The command line checks its ranges (cli, argtypes); this keeps other callers
        # from arming timers that never fire (nan) or fire at once (0).
        if not 0 <= jitter_depth <= 10:
            raise ValueError(f"jitter_depth must be 0..10 s, not {jitter_depth}")
        if not 0 < rtp_timeout < float("inf"):
            raise ValueError(f"rtp_timeout must be a positive number of seconds, not {rtp_timeout}")
        if not (0 <= deliver_ms and 0 <= flush_ms):
            raise ValueError("deliver_ms and flush_ms must not be negative")
        if probation_flows < 1:
            raise ValueError("probation_flows must be at least 1")
        if rate not in RATES:
            raise ValueError(f"rate must be one of {', '.join(map(str, RATES))}, not {rate}")
        self.jitter_depth = jitter_depth
        # The rate of the audio the legs hand to the sinks (8 kHz G.711 resampled: 16000 by
        # default, the one rate the fast path streams at)
        self.rate = rate
        self.rtp_timeout = rtp_timeout
        self.media_only = media_only    # RTP without signalling becomes a media-only call
        # Hand a leg's audio to the sink once this much is pending (0: every tick).  Files
        # need no hurry, and resampling a second at a time costs far less than a packet at a time.
        self.deliver_ms = deliver_ms
        # Hand audio out at most every this many ms of capture time (0: at every tick).
        # Live streams gather a few packets per leg, so that each connection gets one
        # write per flush_ms instead of one per packet; a frame waits at most this long.
        self.flush_ms = flush_ms
        # Unclaimed RTP flows in probation at once: calls in progress when capture starts
        # on a busy PBX, one entry per flow until its second packet makes it a call.
        self.probation_flows = probation_flows
        # (index, count): this pipeline does the media work of the calls ``shard.owner``
        # gives to ``index`` only (one worker of ``count``); None: of every call
        self.shard = check_shard(shard)
        # SRTP keys the capture does not show (--srtp-keylog: rtp2ws.media.keylog), by call and by sender
        self.srtp_keylog = srtp_keylog if srtp_keylog else None


def deliver_ms(*, stream: bool, paced: bool, max_buffer_ms: int = 10000) -> int:
    """``Config.deliver_ms`` for a use: paced streams get every tick's audio at once
    (latency); files and full-speed streams a second at a time (the fast path's batches,
    a tenth of the cost per packet), capped by half the sender's buffer so that one
    hand-off never overflows a stream's queue."""
    if stream and paced:
        return 0          # ... and Config.flush_ms (FLUSH_MS) sets the pace
    if stream:
        return max(20, min(1000, max_buffer_ms // 2) // 20 * 20)
    return 1000


FLUSH_MS = 20     # default Config.flush_ms for paced and live streams (``--flush-ms``)


class Pipeline:
    def __init__(self, linktype: int, sink: Sink, config: Config | None = None) -> None:
        self.config = config or Config()
        self.sink = sink
        self.decoder = PacketDecoder(linktype)
        self.tcp = SipTcpReassembler()
        self.registry = CallRegistry(rtp_timeout=self.config.rtp_timeout)
        self.correlator = Correlator()
        self.legs: dict[tuple[str, str], MediaLeg] = {}
        # (call key, caller/callee) -> the SRTP that side sends, decrypted before its legs (SDES keys)
        self._srtp: dict[tuple[str, str], SrtpStream] = {}
        self._views: dict[tuple[str, str], LegView] = {}   # what the sink sees of each leg: one each, made with it
        self.calls: dict[str, Call] = {}
        # Config.shard: the calls in progress another worker owns, and what is kept of their
        # legs (rtp2ws.pipeline.shard.ForeignLeg: which flows they take, nothing else)
        self.foreign_calls: dict[str, Call] = {}
        self._shadows: dict[tuple[str, str], ForeignLeg] = {}
        self._dirty: set[tuple[str, str]] = set()
        self._waiting: set[tuple[str, str]] = set()   # legs holding packets in their jitter buffer
        self._registry_deadline: float | None = None
        self._next_flush = float("-inf")             # capture time of the next hand-out (Config.flush_ms)
        # Unclaimed RTP, media-only calls, addresses of calls just ended (rtp2ws.pipeline.probation)
        self.probation = Probation(self.config.probation_flows)
        self._undecided: dict[tuple, _Undecided] = {}  # 5-tuple -> a leg's new flow, held until decided
        self._undecided_heap: list[tuple[float, int, tuple, _Undecided]] = []   # stale entries skipped
        self._undecided_deadline = float("inf")       # the earliest deadline in it
        self._undecided_n = itertools.count()
        self._split: dict[str, _Split] = {}           # call key -> its extra legs (caller#2 ...)
        self.now = 0.0
        # The fast path (rtp2ws.fastpath), started once run_reader or feed_frames drives the pipeline
        self.fast = FastDriver(self.decoder.layer, self.config.deliver_ms * 8, self.correlator, self._absorb,
                               self._absorb_foreign)
        self._foreign_taken = 0        # packets the fast path dropped for foreign calls, counted in stats
        # what each stat counts, and how N workers' merge: rtp2ws.pipeline.shard.PIPELINE_STATS
        self.stats = dict.fromkeys(PIPELINE_STATS, 0)
        # Undocumented exceptions a packet raised, (capture time, text), oldest first;
        # the adapters log and clear them (``take_errors``).
        self.errors: list[tuple[float, str]] = []

    @property
    def _probation(self):
        """The unclaimed flows waiting in probation (``Probation.flows``), as the
        issue-10 tests (tests/test_probation.py) look at them."""
        return self.probation.flows

    # -- input ------------------------------------------------------------------

    def feed_batch(self, batch) -> None:
        for ts, frame in batch:
            self.feed(ts, frame)
        self.tick(self.now)

    def feed(self, ts: float, frame: bytes) -> None:
        st = self.stats
        st["frames"] += 1
        if ts > self.now:
            self.now = ts
        dl = self._registry_deadline
        if dl is not None and ts >= dl:
            self._expire(ts)
        if ts >= self._undecided_deadline:
            self._decide_due(ts)
        try:
            self._packet(ts, frame)
        except MalformedPacket:
            st["malformed"] += 1
            st["malformed_packet"] += 1
        except Exception as exc:        # noqa: BLE001 -- one packet never ends the process
            self._unexpected(ts, exc)

    def _packet(self, ts: float, frame: bytes) -> None:
        st = self.stats
        pkt = self.decoder.decode(frame, ts)
        if pkt is None:
            st["other"] += 1
            return
        if pkt.proto == UDP:
            payload = pkt.payload
            hit = self.correlator.lookup(pkt.src, pkt.sport, pkt.dst, pkt.dport)
            if hit is not None and payload[:1] >= b"\x80":
                self._media(hit, pkt, ts)
            elif payload[:1] < b"\x80" and looks_like_sip(payload):
                self._sip(payload, ts)
            elif hit is not None:
                self._media(hit, pkt, ts)
            elif self.config.media_only and payload[:1] >= b"\x80":
                self._unclaimed(pkt, ts)
            else:
                st["unmatched_udp"] += 1
        elif pkt.proto == TCP:
            for msg in self.tcp.feed(pkt, ts):
                self._sip(msg, ts)

    def take_errors(self) -> list[tuple[float, str]]:
        """The undocumented exceptions packets raised since the last call (at most
        ``MAX_ERRORS_KEPT``; ``stats["internal_errors"]`` counts them all)."""
        errors, self.errors = self.errors, []
        return errors

    def run_reader(self, reader, budget: int = 1024, until: float = float("inf")) -> bool:
        """Feed packets from ``reader`` (``CaptureFile(..., native=True).reader``) until
        ``budget`` packets have been read since the last tick, or (paced) until the next
        one is at or after capture time ``until`` (it stays in the reader:
        ``reader.held_ts``), then tick; False at the end of the file.  A live reader
        (``capture.live.LiveCapture.reader``) also stops, with True, when its ring is
        empty (``reader.waiting``; the packets before had their tick).  In-order RTP on
        armed flows is taken by the fast path (``rtp2ws.fastpath.twin``); every other
        packet goes through ``feed``.  The result is the same as feeding every packet,
        with a tick at the same places, with ``feed_batch``."""
        fp = self.fast.path or self.fast.start(for_reader(reader)[0])
        run = fp.run
        while True:
            r = run(reader, self._fast_deadline(), budget, until)
            if fp.now > self.now:
                self.now = fp.now
            if type(r) is tuple:
                self.feed(r[0], r[1])
                continue
            if r == TICK or r == PAUSE:
                self.tick(self.now)
                return True
            if r == IDLE:
                return True
            self.fast.take_all()
            return False

    def feed_frames(self, batch: list, fast_class=None) -> None:
        """``feed_batch`` for frames that come as Python lists (frames from anything but
        a libpcap handle, and the tests' batches): the same result, with in-order RTP on
        armed flows taken by the fast path (``FastPath.feed``) rather than one by one here."""
        fp = self.fast.path or self.fast.start(fast_class or default_class())
        i, n = 0, len(batch)
        while i < n:
            i = fp.feed(batch, i, self._fast_deadline())
            if fp.now > self.now:
                self.now = fp.now
            if i < n:
                ts, frame = batch[i]
                self.feed(ts, frame)
                i += 1
        self.tick(self.now)

    def _fast_deadline(self) -> float:
        """The fast path stops at the first packet at or after this: the next call timer
        or fragment expiry, which ``feed`` must see."""
        dl = self._registry_deadline
        frag = self.decoder.frag_deadline
        dl = dl if dl is not None and dl < frag else frag
        return dl if dl < self._undecided_deadline else self._undecided_deadline

    def _absorb(self, key, taken: Taken) -> None:
        """What the fast path took for the leg ``key`` goes on the leg and is counted as
        its packets would have been (``FastDriver`` calls this).  A leg it streamed
        (``_bind``) gets, when that stops, the filter state and the part-frame its own
        hand-outs go on from."""
        leg = self.legs[key]
        packets = taken.packets
        if packets:
            call = self.calls[key[0]]
            leg.absorb(packets, taken.nbytes, taken.next_ext, taken.last_ts, taken.last_arrival,
                       taken.last_payload, taken.samples, taken.streamed, jitter=taken.jitter,
                       delta=taken.delta)
            st = self.stats
            st["frames"] += packets
            st["rtp"] += packets
            self.decoder.count_packets(packets)
            self.registry.touch(call, taken.max_arrival)
        elif taken.samples or taken.streamed:    # a streamed leg's audio, its packets counted before
            leg.absorb_samples(taken.samples, taken.streamed)
        if taken.samples:
            self._dirty.add(key)
        if taken.state is not None:
            history, carry = taken.state
            leg.resampler_state = history
            self.sink.fast_release(self.calls[key[0]], self._views[key], carry)

    def _absorb_foreign(self, key, packets: int, newest: float) -> None:
        """The fast path dropped ``packets`` of the foreign leg ``key``'s flows, the newest
        at ``newest``: the leg took them (``ForeignLeg``), and they are its call's activity,
        as the owner's leg's packets are its (``FastDriver`` calls this)."""
        self._shadows[key].counts["packets"] += packets
        self.registry.touch(self.foreign_calls[key[0]], newest)

    def _count_foreign(self) -> None:
        """Count the packets the fast path dropped for foreign calls since the last time
        as the frames they are (``stats["foreign"]`` says how many of them there were)."""
        n = self.fast.foreign_packets - self._foreign_taken
        if n:
            self._foreign_taken += n
            st = self.stats
            st["frames"] += n
            st["foreign"] += n
            self.decoder.count_packets(n)

    def _bind(self, call: Call, leg: MediaLeg, key) -> None:
        """The armed leg ``key`` has handed out all its audio: if its sink takes whole
        frames, the fast path streams it from now on."""
        if leg.closed or leg.rate != FAST_RATE:
            return
        target = self.sink.fast_target(call, self._views[key])
        if target is not None:
            self.fast.bind(key, leg.resampler_state, target.carry, target.frame_bytes, target.feed, target.lane)

    @property
    def next_handout(self) -> float:
        """Capture time of the next tick that hands out audio when ``Config.flush_ms``
        paces hand-outs (-inf when every tick does): a packet due before it sends
        nothing sooner for being fed sooner, so a paced reader may let it wait."""
        return self._next_flush if self.config.flush_ms else float("-inf")

    def tick(self, now: float) -> None:
        """Timers: jitter-buffer deadlines, call timeouts; then hand out audio."""
        if now >= self._undecided_deadline:
            self._decide_due(now)
        for key in list(self._waiting):
            leg = self.legs.get(key)
            if leg is None:
                self._waiting.discard(key)
                continue
            dl = leg.next_deadline()
            if dl is None:
                self._waiting.discard(key)
            elif dl <= now:
                leg.poll(now)
                self._dirty.add(key)
                if leg.next_deadline() is None:
                    self._waiting.discard(key)
        tcp_deadline = self.tcp.next_deadline()    # idle TCP flows, holes waited on too long; feed()
        if tcp_deadline is not None and tcp_deadline <= now:   # also expires first, so the fast path need not stop
            self._tcp_expire(now)
        # after the TCP timers: a message their skips complete may change the calls' timers
        # (a Call-ID used again takes its ended call off the linger list), and no call timer
        # is left due at now
        if self._registry_deadline is None or self._registry_deadline <= now:
            self._expire(now)
        if now >= self._next_flush:
            if self.config.flush_ms:
                self._next_flush = now + self.config.flush_ms / 1000.0
            if self.fast.bound:         # legs the fast path streams itself, filled enough to deliver
                with self.sink.fast_pumping():
                    self.fast.pump()
            self.fast.take_ready()      # the others it filled enough
            self._deliver()
        if self.fast.foreign:
            self._count_foreign()
        self.sink.tick(now)

    def _tcp_expire(self, now: float) -> None:
        """Messages a TCP timer completes (a hole given up) go on as a packet's would."""
        try:
            for msg in self.tcp.expire(now):
                self._sip(msg, now)
        except Exception as exc:        # noqa: BLE001 -- as in feed: never the end of the process
            self._unexpected(now, exc)

    def _unexpected(self, ts: float, exc: Exception) -> None:
        """A parser or stage raised what it does not document: a bug, but this packet's
        alone.  It is counted as malformed and kept for the log (``errors``, bounded),
        and capture goes on with the next packet."""
        self.stats["malformed"] += 1
        self.stats["internal_errors"] += 1
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append((ts, f"{type(exc).__name__}: {exc}"[:300]))

    def _expire(self, now: float) -> None:
        if self.fast.legs or self.fast.foreign:      # the timers read each call's last activity: bring it up to date
            for call in self.registry.due(now):
                self.fast.sync_call(call.key, self._tags(call.key), False)
        self._handle(self.registry.expire(now))
        self._registry_deadline = self.registry.next_deadline()

    def finish(self, now: float | None = None, reason: str = "capture_end") -> None:
        """End of input: every open call ends with ``reason`` (``capture_end``, or
        ``shutdown`` when the process is asked to stop)."""
        self.fast.take_all()
        self._count_foreign()
        now = self.now if now is None else now
        self._next_flush = float("-inf")
        self.tick(now)
        self._handle(self.registry.finish(now, reason))
        self._deliver()
        self.sink.tick(now)

    # -- stages -----------------------------------------------------------------

    def _sip(self, data: bytes, ts: float) -> None:
        try:
            msg = parse_message(data)
        except SipParseError:
            self.stats["malformed"] += 1
            self.stats["malformed_sip"] += 1
            return
        self.stats["sip"] += 1
        if self.fast.legs or self.fast.foreign:      # the call's last activity as packet-at-a-time would have it
            call = self.registry.active.get(msg.call_id)
            if call is not None:
                self.fast.sync_call(call.key, self._tags(call.key), False)
        self._handle(self.registry.on_message(msg, ts))
        self._registry_deadline = self.registry.next_deadline()

    def _media(self, hit, pkt, ts: float) -> None:
        key, _rtcp_port = hit
        leg = self.legs.get(key)
        if leg is None:
            if key in self._shadows:
                self._foreign_media(key, pkt, ts)
            return
        fast = self.fast
        if key in fast.legs:
            fast.sync(key)
        st = self.stats
        payload = pkt.payload
        if len(payload) >= 12 and payload[0] >> 6 == 2 and not 192 <= payload[1] <= 223:
            kind = KIND_RTP     # rtp.classify's answer for the common case, inline
        else:
            kind = classify(payload)
        if (self._srtp or self.config.srtp_keylog) and (kind == KIND_RTP or kind == KIND_RTCP):
            srtp = self._srtp.get((key[0], key[1].partition("#")[0]))    # an extra leg: its SDP leg's sender
            if srtp is None and self.config.srtp_keylog is not None:
                srtp = self._keylog_stream(key, leg, pkt.src, pkt.sport)
            if srtp is not None:
                clear = srtp.unprotect(payload, ts) if kind == KIND_RTP else srtp.unprotect_rtcp(payload, ts)
                if clear is None:
                    self._srtp_dropped(key, leg, pkt, kind, srtp.failure, ts)
                    return
                payload = clear
                st["srtp"] += 1
        if kind == KIND_RTP:
            try:
                rtp = parse_rtp(payload)
            except ValueError:
                if not leg.flows:
                    leg.add_flow(format_addr(pkt.src, pkt.sport), format_addr(pkt.dst, pkt.dport))
                st["malformed"] += 1
                st["malformed_rtp"] += 1
                leg.count_malformed()
                return
            flow = (pkt.src, pkt.sport, pkt.dst, pkt.dport)
            if flow != leg.flow and flow not in leg.own_flows:
                key = self._new_flow(key, leg, flow, rtp, ts)
                if key is None:
                    return           # held until decided, or dropped
                if key not in self.legs:       # the flow was held for a leg of a call another worker owns
                    st["foreign"] += 1
                    self._foreign_rtp(key, flow, rtp, ts)
                    return
                leg = self.legs[key]
            self._owned_rtp(key, leg, flow, rtp, ts)
            return
        if kind == KIND_RTCP:       # not the leg's media flow: RTCP often comes first, from its own port
            st["rtcp"] += 1
            leg.count_other("rtcp")
            self._rtcp(key, leg, payload, ts)
            return
        if not leg.flows:
            leg.add_flow(format_addr(pkt.src, pkt.sport), format_addr(pkt.dst, pkt.dport))
        if kind == KIND_STUN:
            st["stun"] += 1
            leg.count_other("stun")
        elif kind == KIND_ZRTP:
            st["zrtp"] += 1
            leg.count_other("zrtp")      # and the leg's audio is encrypted from here on
        elif kind == KIND_DTLS:
            st["dtls"] += 1
            leg.count_other("dtls")      # DTLS-SRTP: the same
        else:
            st["unmatched_udp"] += 1

    def _rtcp(self, key, leg: MediaLeg, payload: bytes, ts: float) -> None:
        """RTCP on the leg's addresses (its RTP port with rtcp-mux, or its RTCP port): the
        sender's times go to this leg's quality, each report to the leg of the SSRC it
        names among the call's (``rtp2ws.media.quality.apply_rtcp``).  What does not
        parse cleanly (SRTCP among it) is counted, not used; neither is the RTCP of an
        encrypted leg (SRTCP whose lengths happen to add up)."""
        st = self.stats
        if leg.encrypted:
            st["rtcp_encrypted"] += 1
            return
        try:
            packets = parse_compound(payload)
        except RtcpError:
            st["rtcp_malformed"] += 1
            leg.quality.malformed += 1
            return
        by_ssrc: dict[int, LegQuality] = {}
        for tag in self._tags(key[0]):
            other_leg = self.legs.get((key[0], tag))
            if other_leg is not None:
                for ssrc in other_leg.ssrcs:
                    by_ssrc.setdefault(ssrc, other_leg.quality)
        st["rtcp_unmatched"] += apply_rtcp(packets, leg.quality, by_ssrc, ts)

    def _foreign_media(self, key, pkt, ts: float) -> None:
        """``_media`` for a leg of a call another worker owns: the packet is dropped
        (``foreign``), but a flow the leg would take, or give a leg of its own, is taken
        here too, and RTP the leg takes is its call's activity, as with the owner.  Only
        what every worker counts alike is counted."""
        fast = self.fast
        if key in fast.foreign:
            fast.sync(key)
        self.stats["foreign"] += 1
        payload = pkt.payload
        if len(payload) >= 12 and payload[0] >> 6 == 2 and not 192 <= payload[1] <= 223:
            kind = KIND_RTP
        else:
            kind = classify(payload)
        if kind != KIND_RTP:
            if kind not in (KIND_RTCP, KIND_STUN, KIND_ZRTP, KIND_DTLS):
                self.stats["unmatched_udp"] += 1      # as the owner counts it: every worker alike
            return
        try:
            rtp = parse_rtp(payload)
        except ValueError:
            return
        leg = self._shadows[key]
        flow = (pkt.src, pkt.sport, pkt.dst, pkt.dport)
        if flow != leg.flow and flow not in leg.own_flows:
            key = self._new_flow(key, leg, flow, rtp, ts)
            if key is None:
                return
            owned = self.legs.get(key)
            if owned is not None:          # the flow was held for a leg this worker owns: its packet
                self.stats["foreign"] -= 1
                self._owned_rtp(key, owned, flow, rtp, ts)
                return
        self._foreign_rtp(key, flow, rtp, ts)

    def _owned_rtp(self, key, leg: MediaLeg, flow: tuple, rtp, ts: float) -> None:
        """RTP a leg of this worker's takes, once its flow is settled: decoded, and the
        fast path armed for the flow (a leg the flow decision changed brought up to date
        first; the packet's own leg was at the top of ``_media``: a no-op then)."""
        fast = self.fast
        if key in fast.legs:
            fast.sync(key)
        if not leg.flows:
            leg.add_flow(format_addr(flow[0], flow[1]), format_addr(flow[2], flow[3]))
        self._push_rtp(key, rtp, ts)
        if fast.path is not None and leg.srtp is None:    # the fast path would take SRTP for clear G.711
            fast.arm(key, flow, leg, rtp.payload_type)

    def _keylog_stream(self, key, leg: MediaLeg, ip: bytes, port: int) -> SrtpStream | None:
        """The key log's keys for SRTP from ``ip``:``port`` (``src`` lines), for a leg with no
        keys from SDP (its signalling not seen: a media-only call, SIP over TLS)."""
        log = self.config.srtp_keylog
        keys = log.for_src(ip, port) if log is not None else []
        if not keys or leg.encrypted:
            return None
        skey = (key[0], key[1].partition("#")[0])
        srtp = self._srtp[skey] = SrtpStream()
        srtp.set_keys(keys, self.now)
        if key in self.fast.legs:
            self.fast.sync(key)
        leg.set_srtp(srtp.suite)
        return srtp

    def _push_first(self, key, rtp, ts: float, src: tuple[bytes, int]) -> None:
        """A media-only call's packet that probation held (parsed): decrypted first when
        the key log has keys for its sender (its bytes again from the parsed packet)."""
        leg = self.legs.get(key)
        if leg is not None and self.config.srtp_keylog is not None:
            srtp = self._srtp.get(key) or self._keylog_stream(key, leg, *src)
            if srtp is not None:
                clear = srtp.unprotect(serialize_rtp(rtp), ts)
                if clear is None:
                    counter = "srtp_replayed" if srtp.failure == REPLAYED else "srtp_failed"
                    self.stats[counter] += 1
                    leg.count_srtp(counter)
                    return
                self.stats["srtp"] += 1
                try:
                    rtp = parse_rtp(clear)
                except ValueError:
                    self.stats["malformed"] += 1
                    self.stats["malformed_rtp"] += 1
                    leg.count_malformed()
                    return
        self._push_rtp(key, rtp, ts)

    def _srtp_dropped(self, key, leg: MediaLeg, pkt, kind: str, why: str, ts: float) -> None:
        """An SRTP/SRTCP packet for ``leg`` that no key authenticates (or a replay): counted
        and dropped, never decoded; still its call's activity."""
        if not leg.flows:
            leg.add_flow(format_addr(pkt.src, pkt.sport), format_addr(pkt.dst, pkt.dport))
        counter = "srtp_replayed" if why == REPLAYED else "srtp_failed" if kind == KIND_RTP else "srtcp_failed"
        self.stats[counter] += 1
        leg.count_srtp(counter)
        self.registry.touch(self.calls[key[0]], ts)

    def _foreign_rtp(self, key, flow: tuple, rtp, ts: float) -> None:
        """RTP a foreign call's leg takes: its call's activity, not decoded, and the fast
        path told to drop the flow's next packets."""
        fast = self.fast
        if key in fast.foreign:
            fast.sync(key)
        self._push_rtp(key, rtp, ts)
        if fast.path is not None:
            fast.ignore(key, flow)

    def _unclaimed(self, pkt, ts: float) -> None:
        """RTP no signalling has claimed: after two packets in sequence on one flow
        (RFC 3550 probation), a media-only call takes it, so no audio is lost while
        the signalling is unknown (capture started mid-call, SIP not mirrored)."""
        st = self.stats
        st["unmatched_udp"] += 1
        got = self.probation.offer((pkt.src, pkt.sport, pkt.dst, pkt.dport), pkt.payload, ts)
        if type(got) is not Promoted:
            if got is FULL:
                st["probation_full"] += 1
            elif got is AFTER_END:
                st["rtp_after_end"] += 1
            return
        call_id, a, b = got.call_id, got.src, got.dst
        self._handle(self.registry.adopt(call_id, got.first[1]))
        self._registry_deadline = self.registry.next_deadline()
        self.correlator.expect((call_id, CALLER), b, a)
        self.correlator.expect((call_id, CALLEE), a, b)
        hit = self.correlator.lookup(pkt.src, pkt.sport, pkt.dst, pkt.dport)
        assert hit is not None  # both legs were just expected
        st["unmatched_udp"] -= 2
        foreign = call_id in self.foreign_calls
        if foreign:
            st["foreign"] += 1 if got.back is None else 2
        self._push_first(hit[0], *got.first, a)
        self._media(hit, pkt, ts)
        if got.back is not None:      # the other direction's first packet, waiting in probation
            st["unmatched_udp"] -= 1
            self._push_first((call_id, CALLEE), *got.back, b)

    def _push_rtp(self, key, rtp, ts: float) -> None:
        leg = self.legs.get(key)
        if leg is None:       # a foreign call's leg: taken, not decoded
            self._shadows[key].counts["packets"] += 1
            self.registry.touch(self.foreign_calls[key[0]], ts)
            return
        self.stats["rtp"] += 1
        leg.push(rtp, ts)
        self._dirty.add(key)
        if leg.jb.held:
            self._waiting.add(key)
        self.registry.touch(self.calls[key[0]], ts)

    def _handle(self, events) -> None:
        for ev in events:
            if isinstance(ev, MediaUpdated):
                self._media_updated(ev.call)
            elif isinstance(ev, CallStarted):
                call = ev.call
                shard = self.config.shard
                if shard is not None and owner(call.key, shard[1]) != shard[0]:
                    self.foreign_calls[call.key] = call
                    for tag in (CALLER, CALLEE):
                        self._shadows[(call.key, tag)] = ForeignLeg(tag)
                    continue
                self.calls[call.key] = call
                for tag in (CALLER, CALLEE):
                    leg = self.legs[(call.key, tag)] = MediaLeg(tag, depth=self.config.jitter_depth,
                                                                rate=self.config.rate)
                    self._views[(call.key, tag)] = LegView(leg)
                pair(self.legs[(call.key, CALLER)].quality, self.legs[(call.key, CALLEE)].quality)
                self.sink.call_started(call)
            elif isinstance(ev, HoldChanged):
                if ev.call.key in self.calls:
                    self.sink.call_event(ev.call, ev)
            elif isinstance(ev, CallEnded):
                self._call_ended(ev.call)

    def _media_updated(self, call: Call) -> None:
        """Re-derive both legs' expectations from the two sides' latest SDP."""
        if self.fast.legs or self.fast.foreign:
            self.fast.sync_call(call.key, self._tags(call.key), True)
        if self.probation.calls:
            self._identify(call)
        for tag in (CALLER, CALLEE):
            leg = self.legs.get((call.key, tag))
            if leg is None and (call.key, tag) not in self._shadows:
                continue
            sender = call.media.get(tag)
            receiver = call.media.get(other(tag))
            dst = _addr(receiver.address, receiver.port) if receiver else None
            src = _addr(sender.address, sender.port) if sender else None
            rtcp = None
            if receiver is not None and not receiver.rtcp_mux:
                rtcp = _addr(receiver.rtcp_address or receiver.address, receiver.rtcp_port or receiver.port + 1)
            self.correlator.expect((call.key, tag), dst, src, rtcp)
            if leg is None:
                continue          # a foreign call's: where its packets go is all that is kept
            pt_map: dict = {}
            if sender is not None:
                pt_map.update(sender.payload_map)
            if receiver is not None:
                pt_map.update(receiver.payload_map)   # the receiver's numbering rules what is sent to it
            leg.set_payload_map(pt_map)
            self._srtp_keys(call, tag, leg, sender, receiver)
        sp = self._split.get(call.key)
        if sp is not None:
            for xtag, tag in sp.tags.items():     # an extra leg follows its SDP leg's payload map
                leg, xleg = self.legs.get((call.key, tag)), self.legs.get((call.key, xtag))
                if leg is not None and xleg is not None:
                    xleg.set_payload_map(leg.pt_map)
                    xleg.set_srtp(leg.srtp)
                    if leg.encrypted:
                        xleg.mark_encrypted()

    def _srtp_keys(self, call: Call, tag: str, leg: MediaLeg, sender, receiver) -> None:
        """Whether the leg ``tag`` is decrypted, and with which keys, from the two sides'
        latest SDP (``media.srtp.leg_keys``): the key in a side's a=crypto is the one it
        sends with, so the caller's audio takes the caller's keys.  A leg encrypted
        otherwise (DTLS-SRTP, ZRTP, SAVP with no key) is flagged, its audio not decoded."""
        keys = leg_keys(sender, receiver)
        log = self.config.srtp_keylog
        if log is not None:          # keys the key log has for this call's side, or its SDP address
            extra = log.for_call(call.call_id, tag)
            sent_from = _addr(sender.address, sender.port) if sender is not None else None
            if sent_from is not None:
                extra = extra + log.for_src(*sent_from)
            if extra:
                keys = list(dict.fromkeys((keys or []) + extra))
        skey = (call.key, tag)
        if keys is None:
            self._srtp.pop(skey, None)
            leg.set_srtp(None)
            if not sdes_declined(sender, receiver) and ((sender is not None and sender.encrypted)
                                 or (receiver is not None and receiver.encrypted)):
                leg.mark_encrypted()
            return
        srtp = self._srtp.get(skey)
        if srtp is None:
            srtp = self._srtp[skey] = SrtpStream()
        srtp.set_keys(keys, self.now)
        leg.set_srtp(srtp.suite or (receiver.crypto[0].suite if receiver is not None and receiver.crypto else None))

    def _identify(self, call: Call) -> None:
        """Signalling now names the addresses of a media-only call: that call ends
        (``identified``) and the media goes to the signalled call from here on."""
        for key in self.probation.identify(set(_addresses(call))):
            orphan = self.calls.get(key) or self.foreign_calls.get(key)
            if orphan is not None:
                self._handle(self.registry.identify(orphan, call.call_id, self.now))

    def _call_ended(self, call: Call) -> None:
        sp = self._split.get(call.key)
        if sp is not None:
            for flow in list(sp.undecided):
                self._decide(flow, self._undecided[flow])
        if call.key in self.foreign_calls:
            self._foreign_ended(call)
            return
        legs = {}
        for tag in self._tags(call.key):
            key = (call.key, tag)
            if key in self.fast.legs:
                self.fast.sync(key)
            leg = self.legs.pop(key, None)
            if leg is None:
                continue
            leg.close()
            self._emit(call, leg)
            self.correlator.remove(key)
            self._dirty.discard(key)
            self._waiting.discard(key)
            legs[tag] = self._views.pop(key)
        self.calls.pop(call.key, None)
        self._split.pop(call.key, None)
        for tag in (CALLER, CALLEE):
            self._srtp.pop((call.key, tag), None)
        self.probation.call_ended(call.key, _addresses(call) if self.config.media_only else (),
                                  call.end if call.end is not None else self.now)
        self.sink.call_ended(call, legs)

    def _foreign_ended(self, call: Call) -> None:
        """``_call_ended`` for a call another worker owns: its owner tells the sink."""
        for tag in self._tags(call.key):
            key = (call.key, tag)
            if key in self.fast.foreign:
                self.fast.sync(key)
            if self._shadows.pop(key, None) is not None:
                self.correlator.remove(key)
        del self.foreign_calls[call.key]
        self._split.pop(call.key, None)
        self.probation.call_ended(call.key, _addresses(call) if self.config.media_only else (),
                                  call.end if call.end is not None else self.now)

    # -- flows: one timeline per leg ---------------------------------------------------

    def _tags(self, call_key: str):
        """The tags of a call's legs: caller, callee, then its extra legs in order."""
        sp = self._split.get(call_key)
        return (CALLER, CALLEE) if sp is None else (CALLER, CALLEE, *sp.tags)

    def _new_flow(self, key, leg: MediaLeg | ForeignLeg, flow: tuple, rtp, ts: float):
        """An RTP packet on a flow ``leg`` has not taken.  It is the leg's first flow;
        or it *replaces* the leg's flow (signalling moved the media there, or the leg's
        flow has gone silent: NAT rebinding); or it is *concurrent* (a media relay in
        the path: the leg's flow goes on) and gets a leg of its own, ``caller#2``, so
        that no timeline mixes two flows.  Which of the last two is decided by what the
        leg's flow does in the ``FLOW_WINDOW`` after the new flow's first packet; until
        then the new flow's packets are held.  Returns the key of the leg that takes the
        packet now, or None (held, or dropped)."""
        u = self._undecided.get(flow)
        if u is not None:
            if leg.counts["packets"] == u.mark and len(u.packets) < MAX_HELD:
                u.packets.append((rtp, ts))
                return None
            target = self._decide(flow, u)      # the leg's flow went on meanwhile: concurrent
        else:
            sp = self._split.get(key[0])
            if sp is not None and flow in sp.excess:
                target = None
            elif leg.flow is None or self._moved(key, leg, flow):
                leg.take_flow(flow, self.correlator.expected(key))
                return key
            elif (sp is not None and len(sp.undecided) >= MAX_UNDECIDED) or len(self._undecided) >= MAX_UNDECIDED_ALL:
                target = None
            else:
                if sp is None:
                    sp = self._split[key[0]] = _Split()
                sp.undecided.add(flow)
                u = self._undecided[flow] = _Undecided(key, leg.counts["packets"], ts, [(rtp, ts)])
                heapq.heappush(self._undecided_heap, (ts + FLOW_WINDOW, next(self._undecided_n), flow, u))
                if ts + FLOW_WINDOW < self._undecided_deadline:
                    self._undecided_deadline = ts + FLOW_WINDOW
                return None
        if target is None:
            self._drop_flow_packets(key, 1)
        return target

    def _moved(self, key, leg: MediaLeg | ForeignLeg, flow: tuple) -> bool:
        """Has signalling moved the leg's media to ``flow`` since the leg took its flow
        (a re-INVITE or UPDATE changed the address the flow goes to or comes from)?"""
        now = self.correlator.expected(key)
        was = leg.flow_expect
        if now is None or was is None or now == was:
            return False
        (dst, src), (was_dst, was_src) = now, was
        return ((was_dst is not None and dst != was_dst and dst == (flow[2], flow[3]))
                or (was_src is not None and src != was_src and src == (flow[0], flow[1])))

    def _decide(self, flow: tuple, u: _Undecided):
        """Decide a held flow: concurrent when its leg took packets since the flow began,
        a replacement otherwise.  Its held packets go to the leg that takes it.  Returns
        that leg's key (None when the call has as many extra legs as it may)."""
        del self._undecided[flow]
        heap = self._undecided_heap
        while heap and self._undecided.get(heap[0][2]) is not heap[0][3]:
            heapq.heappop(heap)           # decided before its deadline
        self._undecided_deadline = heap[0][0] if heap else float("inf")
        key = u.key
        self._split[key[0]].undecided.discard(flow)
        leg = self.legs.get(key) or self._shadows.get(key)
        if leg is None:
            self._drop_flow_packets(key, len(u.packets))
            return None
        sp = self._split[key[0]]
        self.fast.sync(key)           # the leg's packets so far, and its state is about to change
        if leg.counts["packets"] != u.mark:
            target = self._extra_leg(key, leg, flow, sp)
        else:
            leg.take_flow(flow, self.correlator.expected(key))
            target = key
        if target is None:
            self._drop_flow_packets(key, len(u.packets))
            return None
        tleg = self.legs.get(target)
        if tleg is not None and not tleg.flows:
            tleg.add_flow(format_addr(flow[0], flow[1]), format_addr(flow[2], flow[3]))
        for rtp, ts in u.packets:
            self._push_rtp(target, rtp, ts)
        return target

    def _decide_due(self, now: float) -> None:
        heap = self._undecided_heap
        while heap and heap[0][0] <= now:
            _, _, flow, u = heap[0]
            if self._undecided.get(flow) is u:
                self._decide(flow, u)     # pops it
            else:
                heapq.heappop(heap)
        self._undecided_deadline = heap[0][0] if heap else float("inf")

    def _extra_leg(self, key, leg: MediaLeg | ForeignLeg, flow: tuple, sp: _Split):
        """A leg of its own for a flow concurrent with ``leg``'s: ``caller#2`` (then #3 ...,
        at most EXTRA_LEGS per direction); None beyond that."""
        call_key, tag = key
        n = 2 + sum(1 for t in sp.tags.values() if t == tag)
        if n - 1 > EXTRA_LEGS:
            if len(sp.excess) < MAX_EXCESS:
                sp.excess.add(flow)
            return None
        xtag = extra_tag(tag, n)
        xkey = (call_key, xtag)
        if isinstance(leg, ForeignLeg):   # a foreign call's: its flow is taken, and bound for good
            self._shadows[xkey] = ForeignLeg(xtag)
            self._shadows[xkey].take_flow(flow)
            sp.tags[xtag] = tag
            self.correlator.assign(flow, xkey)
            return xkey
        xleg = self.legs[xkey] = MediaLeg(xtag, depth=self.config.jitter_depth, rate=self.config.rate)
        self._views[xkey] = LegView(xleg)
        xleg.set_payload_map(leg.pt_map)
        xleg.set_srtp(leg.srtp)
        if leg.encrypted:
            xleg.mark_encrypted()
        xleg.take_flow(flow)
        sp.tags[xtag] = tag
        self.correlator.assign(flow, xkey)
        self.stats["extra_legs"] += 1
        return xkey

    def _drop_flow_packets(self, key, n: int) -> None:
        leg = self.legs.get(key)
        if leg is not None:
            self.stats["extra_flow_dropped"] += n
            leg.count_extra_flow_dropped(n)
        elif key[0] not in self.foreign_calls:
            self.stats["extra_flow_dropped"] += n

    def _deliver(self) -> None:
        least = self.config.deliver_ms * 8
        dirty, self._dirty = self._dirty, set()
        # in the order of their keys, not the set's: that order follows the string hashes
        # (another in every process) and the order the keys came in (another with the fast
        # path), and a stereo or mixed stream gets its two legs' events in this order
        for key in sorted(dirty) if len(dirty) > 1 else dirty:
            leg = self.legs.get(key)
            if leg is not None and leg.pending_samples >= least:
                if self._emit(self.calls[key[0]], leg, TICK_PIECES):
                    self._dirty.add(key)      # more than a tick's share: the next tick goes on

    def _emit(self, call: Call, leg: MediaLeg, pieces: int | None = None) -> bool:
        """Hand the leg's events and audio to the sink, ``leg.MAX_TAKE`` at a time, at
        most ``pieces`` of them (all when None); True when audio is left over."""
        view = self._views[(call.key, leg.tag)]
        for ev in leg.take_events():
            self.sink.leg_event(call, view, ev)
        while True:
            pcm = leg.take_audio()
            if self.fast.legs:
                self.fast.rebase((call.key, leg.tag), leg.pending_samples)
            if len(pcm):
                self.sink.leg_audio(call, view, pcm)
            if not leg.pending_samples:
                key = (call.key, leg.tag)
                if key in self.fast.legs and key not in self.fast.bound:
                    self._bind(call, leg, key)
                return False
            if pieces is not None:
                pieces -= 1
                if pieces <= 0:
                    return True


class _Undecided:
    """A leg's new RTP flow while it is undecided whether it replaces the leg's flow or
    runs alongside it (``Pipeline._new_flow``)."""

    __slots__ = ("key", "mark", "first", "packets")

    def __init__(self, key, mark: int, first: float, packets: list) -> None:
        self.key = key            # the leg it matched
        self.mark = mark          # that leg's packet count when the flow began
        self.first = first        # capture time of the flow's first packet
        self.packets = packets    # [(RtpPacket, capture time)] held, at most MAX_HELD


class _Split:
    """A call's legs beyond caller and callee."""

    __slots__ = ("tags", "excess", "undecided")

    def __init__(self) -> None:
        self.tags: dict[str, str] = {}   # extra leg tag -> its SDP leg's tag, in order made
        self.excess: set = set()         # flows dropped for want of a leg (at most MAX_EXCESS)
        self.undecided: set = set()      # its flows in Pipeline._undecided (at most MAX_UNDECIDED)


def _addr(text: str, port: int):
    ip = pack_ip(text)
    return (ip, port) if ip is not None else None


def _addresses(call: Call) -> list[tuple[bytes, int]]:
    """The (packed IP, port) of each side's latest SDP that has a usable address."""
    return [addr for offer in call.media.values() if (addr := _addr(offer.address, offer.port)) is not None]
