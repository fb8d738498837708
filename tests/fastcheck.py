"""The fast path's promise, checked on any capture: ``Pipeline.run_reader`` (with
``rtp2ws.fastpath`` taking in-order RTP, in C or in its Python twin) tells the sink
exactly what the packet-at-a-time pipeline (``feed_batch``) tells it, down to the
boundaries of each audio chunk.  The one freedom: within a tick, the order in which
*different legs* get their audio and events (the pipeline walks a set of legs, in the
hash seed's order).

And with a ``StreamSink`` (per-leg streams), which lets the fast path stream legs
itself (``FastPath.bind``/``pump``): every stream carries the same audio, bytes for
bytes, with the same messages at the same places in it (start, events, end with its
statistics).  Only how the audio is cut into runs may differ.

``check_sharded``: the promise of ``Config.shard`` (rtp2ws.pipeline.shard), on any
capture: N pipelines, each owning its share of the calls, tell their sinks together
exactly what one unsharded pipeline tells its sink (each call told to one of them
only), and their statistics merged (``merge_stats``) are the unsharded ones; packet at
a time and through the fast path (C and Python, from a file and from lists of frames),
whose C takes the other shards' media."""

from __future__ import annotations

from rtp2ws.capture.file import BACKENDS, CaptureError, CaptureFile
from rtp2ws.fastpath import twin as fastpath
from rtp2ws.pipeline.pipeline import Config, Pipeline
from rtp2ws.pipeline.shard import merge_stats
from rtp2ws.pipeline.sink import Sink
from rtp2ws.sinks.streams import Audio, End, Event, Open, StreamSink

LAST_STREAMED = [0]     # frames bytes the fast path streamed itself in the last check (a probe for tests)


class Recorder(Sink):
    """Everything a sink is told, in order, in comparable form."""

    def __init__(self) -> None:
        self.log: list = []

    def call_started(self, call):
        self.log.append(("start", call.key))

    def leg_audio(self, call, leg, pcm):
        self.log.append(("audio", call.key, leg.tag, pcm.tobytes()))

    def leg_event(self, call, leg, event):
        self.log.append(("leg_event", call.key, leg.tag, repr(event)))

    def call_event(self, call, event):
        self.log.append(("call_event", call.key, repr(event)))

    def call_ended(self, call, legs):
        state = {tag: (leg.stats, dict(leg.counts), leg.ssrcs, leg.codecs, leg.flows, repr(leg.dtmf_events),
                       leg.start_time, leg.concealed, leg.filled, leg.decoded, leg.samples_out, leg.jitter_stats,
                       leg.jitter,    # the interarrival jitter as measured, to the bit
                       leg.quality)   # loss, max delta, RTCP's view, MOS
                 for tag, leg in legs.items()}
        self.log.append(("end", call.key, call.end_reason if hasattr(call, "end_reason") else None,
                         call.end, call.last_activity, state))


def _by_leg(log) -> dict:
    """Each leg's own story: its audio chunks and events, and its call's other events, in order."""
    legs: dict = {}
    for e in log:
        if e[0] in ("audio", "leg_event"):
            legs.setdefault((e[1], e[2]), []).append(e)
        else:
            for tag in ("caller", "callee"):
                legs.setdefault((e[1], tag), []).append(e)
    return legs


def _drive(path, config, budget, backend, how, sink):
    """Replay ``path`` into ``sink``: packet at a time (``how`` None: ``feed_batch``), or
    through the fast path of ``backend`` read from the file (``"reader"``: ``run_reader``)
    or handed lists of frames (``"frames"``: ``feed_frames``).
    Returns (pipeline, the capture's error or None, packets the fast path took)."""
    error = None
    if how == "paced":
        # paced replay's way (rtp2ws.run.replay): run_reader with until stops before the first
        # packet at or after `until`, which then moves to that packet's time + the step
        step = budget / 1000.0
        with CaptureFile(path, native=True, backend=backend) as cap:
            pipe = Pipeline(cap.linktype, sink, config)
            _, read_error = fastpath.for_reader(cap.reader)
            until = float("-inf")
            try:
                while pipe.run_reader(cap.reader, 1 << 62, until):
                    if cap.reader.held_ts is not None:      # else: the tick of the last packets
                        until = cap.reader.held_ts + step
            except read_error as e:
                error = str(e)
            pipe.finish()
    elif how == "paced_ref":
        # the same ticks, packet at a time: a tick before the first packet at or after `until`
        step = budget / 1000.0
        with CaptureFile(path, batch=budget) as cap:
            pipe = Pipeline(cap.linktype, sink, config)
            until = float("-inf")
            try:
                for batch in cap.batches():
                    for ts, frame in batch:
                        if ts >= until:
                            pipe.tick(pipe.now)
                            until = ts + step
                        pipe.feed(ts, frame)
            except CaptureError as e:
                error = e.reason
            pipe.tick(pipe.now)
            pipe.finish()
    elif how == "reader":
        with CaptureFile(path, native=True, backend=backend) as cap:
            pipe = Pipeline(cap.linktype, sink, config)
            _, read_error = fastpath.for_reader(cap.reader)
            try:
                while pipe.run_reader(cap.reader, budget):
                    pass
            except read_error as e:
                error = str(e)
            pipe.finish()
    else:
        cls = fastpath.default_class() if backend == "native" else fastpath.FastPath
        with CaptureFile(path, batch=budget) as cap:
            pipe = Pipeline(cap.linktype, sink, config)
            try:
                for batch in cap.batches():
                    if how is None:
                        pipe.feed_batch(batch)
                    else:
                        pipe.feed_frames(batch, cls)
            except CaptureError as e:
                error = e.reason
            pipe.finish()
    return pipe, error, pipe.fast.packets


def _run(path, config, budget, backend, how):
    rec = Recorder()
    pipe, error, taken = _drive(path, config, budget, backend, how, rec)
    return (rec.log, pipe.stats, pipe.decoder.stats, error), taken


class _Streams(StreamSink):
    """A StreamSink counting what the fast path streamed, and keeping each leg's own
    account of its audio when its call ends (the timeline's position among it)."""

    streamed = 0

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.legs_at_end: list = []

    def _fast_feed(self, s, leg, frames, newest, held):
        self.streamed += len(frames)
        super()._fast_feed(s, leg, frames, newest, held)

    def call_ended(self, call, legs):
        self.legs_at_end.append((call.key, {tag: (leg.decoded, leg.samples_out, leg.stats, leg.concealed, leg.filled)
                                            for tag, leg in legs.items()}))
        super().call_ended(call, legs)


def _stream_story(ops) -> dict:
    """Per stream (by call and tag): its audio as one buffer, and its messages, each with
    the number of audio bytes before it (stream ids, random, left out)."""
    ids, story = {}, {}
    for op in ops:
        if isinstance(op, Open):
            ids[op.stream_id] = (op.start["call_id"], op.start["tag"])
            story[ids[op.stream_id]] = [bytearray(), [("start", {k: v for k, v in op.start.items()
                                                                 if k != "stream_id"})]]
            continue
        audio, msgs = story[ids[op.stream_id]]
        if isinstance(op, Audio):
            audio += op.pcm
        elif isinstance(op, (Event, End)):
            msgs.append((len(audio), {k: v for k, v in op.message.items() if k != "stream_id"}))
    return {k: (bytes(a), m) for k, (a, m) in story.items()}


def _streams(path, config, budget, backend, how, stereo=False):
    sink = _Streams(frame_ms=20, stereo=stereo, hold_s=config.jitter_depth + 1.0)
    _drive(path, config, budget, backend, how, sink)
    story = _stream_story(sink.take_ops())
    story[("legs at the end of their calls",)] = (b"", sink.legs_at_end)
    return story, sink.streamed


def _assert_same(got, ref, where: str) -> None:
    """Two runs' (log, stats, decoder stats, error) tell the same: the same errors and
    counters, each leg's own story, and the calls' events in the same order."""
    assert got[3] == ref[3], where
    assert got[1] == ref[1], where
    assert got[2] == ref[2], where
    assert _by_leg(got[0]) == _by_leg(ref[0]), where
    assert ([e for e in got[0] if e[0] not in ("audio", "leg_event")]
            == [e for e in ref[0] if e[0] not in ("audio", "leg_event")]), where


def check_equivalent(path, *, jitter_ms: float = 60, rtp_timeout: float = 300.0,
                     budgets=(1024, 3), delivers=(0, 1000), flushes=(0, 40), sharded: bool = True,
                     srtp_keylog=None) -> int:
    """Assert the fast path changes nothing; returns how many packets it took (last run).
    With ``sharded``, then ``check_sharded`` (the first budget only).  ``srtp_keylog``:
    the pipelines' ``Config.srtp_keylog`` (rtp2ws.media.keylog.KeyLog)."""
    taken = 0
    for deliver, flush in [(d, f) for d in delivers for f in flushes if not (d and f)]:
        config = Config(jitter_depth=jitter_ms / 1000.0, rtp_timeout=rtp_timeout, deliver_ms=deliver,
                        flush_ms=flush, srtp_keylog=srtp_keylog)
        for budget in budgets:
            ref, _ = _run(path, config, budget, None, None)
            for backend, how in [(b, h) for b in BACKENDS for h in ("reader", "frames")]:
                got, taken = _run(path, config, budget, backend, how)
                _assert_same(got, ref, f"{path}: backend {backend} via {how}, deliver_ms {deliver}, "
                                       f"flush_ms {flush}, budget {budget}")
            streamed = 0
            # per-leg streams (every leg streamed by the fast path), and stereo (the call's
            # two legs mixed in Python, its extra legs streamed)
            for stereo in (False, True):
                ref_streams, _ = _streams(path, config, budget, None, None, stereo)
                for backend, how in [(b, h) for b in BACKENDS for h in ("reader", "frames")]:
                    got_streams, n = _streams(path, config, budget, backend, how, stereo)
                    streamed += n
                    where = (f"{path} streams (stereo {stereo}): backend {backend} via {how}, deliver_ms {deliver}, "
                             f"flush_ms {flush}, budget {budget}")
                    assert got_streams.keys() == ref_streams.keys(), where
                    for k in ref_streams:
                        assert got_streams[k][1] == ref_streams[k][1], (where, k)
                        assert got_streams[k][0] == ref_streams[k][0], (where, k, len(got_streams[k][0]),
                                                                        len(ref_streams[k][0]))
            LAST_STREAMED[0] = streamed
            if budget == budgets[0]:     # paced (run_reader with until), against the same ticks packet at a time
                ref, _ = _run(path, config, budget, None, "paced_ref")
                for backend in BACKENDS:
                    got, _ = _run(path, config, budget, backend, "paced")
                    _assert_same(got, ref, f"{path}: backend {backend} paced, deliver_ms {deliver}, "
                                           f"flush_ms {flush}, step {budget} ms")
    if sharded:
        check_sharded(path, jitter_ms=jitter_ms, rtp_timeout=rtp_timeout, budgets=budgets[:1], srtp_keylog=srtp_keylog)
    return taken


def all_stats(pipe) -> dict:
    """A pipeline's statistics as a run reports them (rtp2ws.run.replay): its own, the
    decoder's, the TCP reassembler's and the registry's."""
    stats = dict(pipe.stats)
    stats.update({f"decoder_{k}": v for k, v in pipe.decoder.stats.items()})
    stats.update({f"tcp_{k}": v for k, v in pipe.tcp.stats.items()})
    stats.update(pipe.registry.stats)
    return stats


LAST_FOREIGN = [0]      # packets the shards' fast paths dropped as foreign in the last check_sharded


def check_sharded(path, *, jitter_ms: float = 60, rtp_timeout: float = 300.0, budgets=(1024,),
                  counts=(2, 3), delivers=(0, 1000), srtp_keylog=None) -> int:
    """Assert that ``count`` shards together tell what one unsharded pipeline tells; returns
    how many packets the shards' fast paths dropped as foreign (all runs)."""
    foreign = 0
    for deliver in delivers:
        for budget in budgets:
            config = Config(jitter_depth=jitter_ms / 1000.0, rtp_timeout=rtp_timeout, deliver_ms=deliver,
                            srtp_keylog=srtp_keylog)
            for backend, how in [(None, None)] + [(b, h) for b in BACKENDS for h in ("reader", "frames")]:
                # the same way unsharded (check_equivalent compares the ways with each other)
                ref_rec = Recorder()
                ref_pipe, ref_error, _ = _drive(path, config, budget, backend, how, ref_rec)
                ref_legs = _by_leg(ref_rec.log)
                ref_calls = _by_call(ref_rec.log)
                ref_stats = all_stats(ref_pipe)
                assert ref_stats.pop("foreign") == 0
                for count in counts:
                    where = f"{path}: {count} shards, backend {backend} via {how}, deliver_ms {deliver}, budget {budget}"
                    legs: dict = {}
                    calls: dict = {}
                    stats = []
                    for index in range(count):
                        shard = Config(jitter_depth=config.jitter_depth, rtp_timeout=rtp_timeout, deliver_ms=deliver,
                                       shard=(index, count), srtp_keylog=srtp_keylog)
                        rec = Recorder()
                        pipe, error, _ = _drive(path, shard, budget, backend, how, rec)
                        assert error == ref_error, where
                        foreign += pipe.fast.foreign_packets
                        mine = _by_call(rec.log)
                        assert not mine.keys() & calls.keys(), (where, "a call told to two shards")
                        calls.update(mine)
                        legs.update(_by_leg(rec.log))
                        stats.append(all_stats(pipe))
                    assert calls == ref_calls, where
                    assert legs == ref_legs, where
                    assert merge_stats(stats) == ref_stats, where
    LAST_FOREIGN[0] = foreign
    return foreign


def _by_call(log) -> dict:
    """Each call's starts, call events and ends, in order (audio and leg events: ``_by_leg``)."""
    calls: dict = {}
    for e in log:
        if e[0] not in ("audio", "leg_event"):
            calls.setdefault(e[1], []).append(e)
    return calls
