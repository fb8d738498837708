"""rtp2ws.pipeline.shard and Config.shard: N pipelines, each doing the media work of its
own share of the calls, tell their sinks together what one pipeline tells; the other
calls' media is dropped by the fast path in C.  The promise itself is
``fastcheck.check_sharded``, which ``check_equivalent`` runs on every capture it checks."""

import zlib

import pytest

from rtp2ws.capture.file import BACKENDS, CaptureFile
from rtp2ws.fastpath import twin as fastpath
from rtp2ws.net.packet import PacketDecoder
from rtp2ws.net.tcpstream import SipTcpReassembler
from rtp2ws.pipeline import shard as shardmod
from rtp2ws.pipeline.pipeline import Config, Pipeline
from rtp2ws.pipeline.shard import DERIVED, LOCAL, ONCE, PIPELINE_STATS, SUM, merge_stats, owner, rule
from rtp2ws.signalling.calls import CallRegistry

import callgen
import fastcheck
from callgen import Call, Party, frames_of, rtp_packets, tone
from fastcheck import Recorder, check_sharded
from paths import DATA

A = Party("10.0.0.1", 5060, 4000, "1000")
B = Party("10.0.0.2", 5060, 5000, "2000")


def _owned_by(index, count, n=1, prefix="c"):
    """Call-IDs ``owner`` gives to worker ``index`` of ``count``."""
    out, i = [], 0
    while len(out) < n:
        cid = f"{prefix}{i}@t"
        if owner(cid, count) == index:
            out.append(cid)
        i += 1
    return out


# -- owner, Config.shard ------------------------------------------------------------

def test_owner_is_crc32_of_the_key_so_every_process_agrees():
    assert owner("a84b4c76e66710@pc33.example.com", 3) == zlib.crc32(b"a84b4c76e66710@pc33.example.com") % 3
    assert owner("rtp:10.0.0.1:4000-10.0.0.2:5000", 2) == zlib.crc32(b"rtp:10.0.0.1:4000-10.0.0.2:5000") % 2
    assert owner("x", 1) == 0
    assert owner("caf\u00e9#2", 7) == zlib.crc32("caf\u00e9#2".encode()) % 7
    shares = [owner(f"call-{i}@host", 4) for i in range(4000)]
    assert all(800 < shares.count(k) < 1200 for k in range(4))
    with pytest.raises(ValueError):
        owner("x", 0)


@pytest.mark.parametrize("bad", [(2, 2), (-1, 2), (0, 0), (1.0, 2)])
def test_config_shard_checked(bad):
    with pytest.raises(ValueError):
        Config(shard=bad)
    assert Config(shard=(1, 2)).shard == (1, 2)
    assert Config().shard is None


# -- merge_stats --------------------------------------------------------------------

def test_every_stat_has_a_merge_rule():
    """Pipeline.stats is built from PIPELINE_STATS, and every counter a run reports beside
    it (decoder_, tcp_, the registry's, the capture's) has a rule: a new one cannot be
    forgotten."""
    pipe = Pipeline(1, Recorder(), Config(shard=(0, 2)))
    assert list(pipe.stats) == list(PIPELINE_STATS)
    keys = list(pipe.stats)
    keys += [f"decoder_{k}" for k in PacketDecoder(1).stats]
    keys += [f"tcp_{k}" for k in SipTcpReassembler().stats]
    keys += list(CallRegistry().stats)
    keys += ["bad_timestamps", "first_bad_timestamp"]
    assert len(fastcheck.all_stats(pipe)) + 2 == len(keys)
    for key in keys:
        assert rule(key) in (ONCE, SUM, DERIVED, LOCAL), key
    with pytest.raises(KeyError, match="no merge rule"):
        rule("something_new")
    with pytest.raises(KeyError):
        merge_stats([{"something_new": 1}])
    for key, parts in shardmod.DERIVED_FROM.items():
        assert PIPELINE_STATS[key] == DERIVED and all(PIPELINE_STATS[p] != DERIVED for p in parts)


def test_merge_stats_rules():
    a = {"frames": 10, "rtp": 3, "rtcp": 1, "malformed": 3, "malformed_packet": 1, "malformed_sip": 0,
         "malformed_rtp": 2, "internal_errors": 0, "foreign": 5, "decoder_packets": 10, "calls": 2}
    b = {"frames": 10, "rtp": 4, "rtcp": 0, "malformed": 1, "malformed_packet": 1, "malformed_sip": 0,
         "malformed_rtp": 0, "internal_errors": 0, "foreign": 3, "decoder_packets": 10, "calls": 2, "tcp_gaps": 1}
    assert merge_stats([a, b]) == {"frames": 10, "rtp": 7, "rtcp": 1, "malformed": 3, "malformed_packet": 1,
                                   "malformed_sip": 0, "malformed_rtp": 2, "internal_errors": 0,
                                   "decoder_packets": 10, "calls": 2, "tcp_gaps": 1}
    assert merge_stats([]) == {}


# -- the promise on the real captures ----------------------------------------------

@pytest.mark.parametrize("name", ["demo_speech.pcap", "relay_call.pcap", "sipp_uac_pcap.pcap"])
def test_sharded_equals_unsharded_on_the_captures(name):
    dropped = check_sharded(str(DATA / name), budgets=(1024, 3))
    if "native" in BACKENDS or "python" in BACKENDS:
        assert dropped > 0          # the shards' fast paths dropped the other shards' media


def _many_calls(n, seconds=2.0):
    """``n`` calls at once, each on its own addresses, with RTP both ways and a BYE."""
    parts = []
    for i in range(n):
        a = Party(f"10.0.{i}.1", 5060, 4000 + 2 * i, "1000")
        b = Party(f"10.0.{i}.2", 5060, 6000 + 2 * i, "2000")
        c = Call(f"many{i}@t", a, b)
        t = 0.25 * i       # (times the C and the Python reader read alike)
        parts += [c.setup(t),
                  rtp_packets(a, b, t + 0.1, tone(440, int(8000 * seconds)), ssrc=0x1000 + i),
                  rtp_packets(b, a, t + 0.1, tone(660, int(8000 * seconds)), ssrc=0x2000 + i),
                  c.bye(t + 0.2 + seconds)]
    return frames_of(*parts)


def test_sharded_equals_unsharded_with_many_calls(tmp_path):
    path = callgen.write(tmp_path / "many.pcap", _many_calls(6))
    check_sharded(path, budgets=(1024, 5))


@pytest.fixture(params=["native", "python"])
def backend(request):
    if request.param not in BACKENDS:
        from skips import native_skip_reason
        pytest.skip(native_skip_reason())
    return request.param


@pytest.mark.parametrize("how", ["reader", "frames"])
def test_foreign_media_is_dropped_by_the_fast_path_not_python(tmp_path, backend, how):
    """Each shard's fast path takes the other shards' RTP: of a foreign call's 200
    packets each way, only the first few of each flow reach Python."""
    path = callgen.write(tmp_path / "many.pcap", _many_calls(4))
    for count in (2, 3):
        for index in range(count):
            fed = []

            class Counting(Pipeline):
                def feed(self, ts, frame):
                    fed.append(frame)
                    super().feed(ts, frame)

            config = Config(shard=(index, count))
            if how == "reader":
                with CaptureFile(path, native=True, backend=backend) as cap:
                    pipe = Counting(cap.linktype, Recorder(), config)
                    while pipe.run_reader(cap.reader, 1024):
                        pass
                    pipe.finish()
            else:
                cls = fastpath.default_class() if backend == "native" else fastpath.FastPath
                with CaptureFile(path, batch=64) as cap:
                    pipe = Counting(cap.linktype, Recorder(), config)
                    for batch in cap.batches():
                        pipe.feed_frames(batch, cls)
                    pipe.finish()
            foreign_calls = sum(owner(f"many{i}@t", count) != index for i in range(4))
            rtp = 4 * 2 * 100
            sip = 4 * 7
            assert pipe.fast.foreign_packets >= foreign_calls * 2 * 100 - foreign_calls * 2 * 2
            assert pipe.stats["foreign"] == pipe.fast.foreign_packets + foreign_calls * 2 * 1
            assert len(fed) <= sip + (rtp - pipe.fast.packets - pipe.fast.foreign_packets)
            assert len(fed) < sip + 4 * 2 * 3, (count, index, len(fed))
            assert pipe.stats["frames"] == sip + rtp


# -- a call's activity is kept alike in every worker ----------------------------------

def test_foreign_call_times_out_when_its_owner_does_then_its_address_is_media_only(tmp_path):
    """A call with no BYE ends by rtp_timeout after its last RTP, not after its last SIP,
    in every worker (the foreign ones read its activity from what their fast path
    dropped); 32 s after that its addresses carry new RTP, which becomes a media-only
    call in every worker alike."""
    c = Call("nobye@t", A, B)
    frames = frames_of(c.setup(0.0),
                       rtp_packets(A, B, 0.1, tone(440, 8000 * 40), ssrc=0x1111),     # 0.1 .. 40.1 s
                       rtp_packets(B, A, 0.1, tone(660, 8000 * 40), ssrc=0x2222),
                       rtp_packets(A, B, 90.0, tone(500, 8000 * 3), ssrc=0x3333, seq0=7),   # after the grace
                       rtp_packets(B, A, 90.0, tone(550, 8000 * 3), ssrc=0x4444, seq0=9))
    path = callgen.write(tmp_path / "nobye.pcap", frames)
    last_rtp = max(t for t, _ in frames if t < 80)
    for count in (2, 3):
        for backend, how in [(None, None)] + [(b, h) for b in BACKENDS for h in ("reader", "frames")]:
            ends = []
            for index in range(count):
                rec = Recorder()
                config = Config(rtp_timeout=5.0, shard=(index, count))
                seen = []

                class Watching(Pipeline):
                    def _handle(self, events):
                        for ev in events:
                            if type(ev).__name__ == "CallEnded":
                                seen.append((ev.call.key, ev.call.end_reason, ev.call.end))
                        super()._handle(events)

                orig = fastcheck.Pipeline
                fastcheck.Pipeline = Watching
                try:
                    fastcheck._drive(path, config, 1024, backend, how, rec)
                finally:
                    fastcheck.Pipeline = orig
                ends.append(seen)
            assert all(e == ends[0] for e in ends), (count, backend, how, ends)
            assert ends[0][0] == ("nobye@t", "timeout", pytest.approx(last_rtp)), ends[0]
            assert [k for k, *_ in ends[0]] == ["nobye@t", "rtp:10.0.0.1:4000-10.0.0.2:5000"]
    check_sharded(path, rtp_timeout=5.0, budgets=(1024, 3))


def _flow_held_then_claimed_by_another_call(y_id, x_id):
    """Call ``y_id``'s callee leg goes quiet and a new flow F (10.0.0.3:7000 -> the caller's
    10.0.0.1:4000) starts: held, undecided, for that leg.  Then call ``x_id`` is set up with
    SDP that makes F exactly its callee's media, so F's next packets match ``x_id``'s leg
    while F is still held for ``y_id``'s; deciding F gives it to ``y_id``'s leg."""
    a, b, c = Party("10.0.0.1", 5060, 4000, "1000"), B, Party("10.0.0.3", 5062, 7000, "3000")
    y, x = Call(y_id, a, b), Call(x_id, a, c, from_tag="fx", to_tag="tx")
    n = 8000
    return frames_of(y.setup(0.0),
                     rtp_packets(a, b, 0.1, tone(440, 2 * n), ssrc=1),
                     rtp_packets(b, a, 0.1, tone(660, n // 2), ssrc=2),          # Y's callee: 0.1 .. 0.6 s
                     rtp_packets(c, a, 0.62, tone(880, n), ssrc=3),              # F: 0.62 .. 1.62 s
                     x.setup(0.7),                                               # X: callee is F's source
                     y.bye(2.5), x.bye(2.6))


@pytest.mark.parametrize("y_owner", [0, 1])
def test_a_flow_held_for_one_workers_call_and_claimed_by_anothers(tmp_path, y_owner):
    """The flow was held for a leg of a call one worker owns, and its next packet matched a
    leg of a call the other worker owns: each worker hands the packet to the leg the flow
    was held for, decoded only by that call's owner (the non-owner once looked that leg up
    among its own and raised KeyError: a fuzz finding, fuzz/crashes/pipeline/
    flow-held-for-another-workers-call)."""
    y_id, = _owned_by(y_owner, 2)
    x_id, = _owned_by(1 - y_owner, 2, prefix="x")
    path = callgen.write(tmp_path / "held.pcap", _flow_held_then_claimed_by_another_call(y_id, x_id))
    check_sharded(path, budgets=(1024, 3), counts=(2,))
