"""StreamSink: pipeline output → stream operations (no network here)."""

import json

import jsonschema
import numpy as np
import pytest

from rtp2ws.pipeline.pipeline import Pipeline
from rtp2ws.pipeline.sink import Tee
from rtp2ws.sinks.streams import Audio, End, Event, Open, StreamSink
from rtp2ws.sinks.wav import WavSink, read_wav
from rtp2ws.ws import protocol

import callgen
import netgen
from callgen import Call, Party, frames_of, rtp_packets, tone

A = Party("10.0.0.1", 5060, 4000, "1000")
B = Party("10.0.0.2", 5060, 5000, "2000")


def run_pipeline(frames, sink, tick_every=1):
    pipe = Pipeline(1, sink)
    for i, (t, ip) in enumerate(frames):
        pipe.feed(t, netgen.link(1, ip))
        if i % tick_every == 0:
            pipe.tick(t)   # by default the live cadence: a tick per packet
    pipe.finish()


def streams_of(ops):
    """Per stream: the Open, the audio messages (each Audio run cut into frames
    as the sender sends it), the text messages in order, the End."""
    out = {}
    frame_bytes = {}
    for op in ops:
        d = out.setdefault(op.stream_id, {"open": None, "audio": [], "text": [], "end": None, "runs": []})
        if isinstance(op, Open):
            d["open"] = op
            frame_bytes[op.stream_id] = op.start["frame_ms"] * 16 * 2 * op.channels
        elif isinstance(op, Audio):
            fb = frame_bytes[op.stream_id]
            assert isinstance(op.pcm, bytes) and op.pcm
            d["runs"].append(len(op.pcm))
            for i in range(0, len(op.pcm), fb):
                d["audio"].append(op.pcm[i:i + fb])
                d["text"].append(("audio", len(op.pcm[i:i + fb])))
        elif isinstance(op, Event):
            d["text"].append(op.message)
        elif isinstance(op, End):
            d["end"] = op.message
    return out


def validate(msg):
    if msg["type"] == "start":   # the sender adds where the connection resumes
        msg = dict(msg, resumed=False, offset=0)
    if msg["type"] == "end":     # ... and its own counts
        msg = dict(msg, samples=0, dropped_ms=0, reconnects=0)
    jsonschema.validate(msg, protocol.SCHEMAS[msg["type"]])
    json.loads(protocol.encode(msg))


def call_frames(n=8000):
    c = Call("s@test", A, B)
    pa, pb = tone(440, n), tone(1000, n, amp=6000)
    sa = rtp_packets(A, B, 100.1, pa, ssrc=1)
    sb = rtp_packets(B, A, 100.15, pb, ssrc=2)
    return c, frames_of(c.setup(100), sa, sb, c.bye(101.5))


@pytest.mark.parametrize("frame_ms,tick_every", [(20, 1), (100, 1), (1000, 1), (20, 13), (100, 29)])
def test_leg_streams_equal_leg_wavs(tmp_path, frame_ms, tick_every):
    c, frames = call_frames()
    handoffs: dict = {}

    class CountingStreamSink(StreamSink):
        def leg_audio(self, call, leg, pcm):
            handoffs[leg.tag] = handoffs.get(leg.tag, 0) + 1
            super().leg_audio(call, leg, pcm)

    ss = CountingStreamSink(frame_ms=frame_ms, sip_headers=("X-FS-UUID", "Call-ID"))
    wav = WavSink(str(tmp_path))
    run_pipeline(frames, Tee(ss, wav), tick_every)
    wav.close()
    streams = streams_of(ss.take_ops())
    assert len(streams) == 2
    manifest = {l["tag"]: l for call in wav.manifest for l in call["legs"]}
    for sid, d in streams.items():
        start = d["open"].start
        validate(start)
        validate(d["end"])
        assert start["stream_id"] == sid and start["frame_ms"] == frame_ms and start["channels"] == 1
        assert start["sip_headers"] == {"X-FS-UUID": None, "Call-ID": "s@test"}
        tag = start["tag"]
        assert (start["src"], start["dst"]) == (manifest[tag]["src"], manifest[tag]["dst"])
        frame_bytes = frame_ms * 32
        sizes = [len(p) for p in d["audio"]]
        assert all(s == frame_bytes for s in sizes[:-1]) and 0 < sizes[-1] <= frame_bytes
        # every run but the last is whole frames; with several packets per tick, runs of several
        assert all(r % frame_bytes == 0 for r in d["runs"][:-1])
        if tick_every > 1 and frame_ms == 20:
            assert max(d["runs"]) >= 4 * frame_bytes and len(d["runs"]) < len(d["audio"]) / 3
        # one run per hand-off at most (the frame a hand-off completes goes with its whole
        # frames), and one for the rest at the end
        assert len(d["runs"]) <= handoffs[tag] + 1
        got = np.frombuffer(b"".join(d["audio"]), "<i2")
        data, _, _ = read_wav(str(tmp_path / manifest[tag]["wav"]))
        assert np.array_equal(got, data)
        end = d["end"]
        assert end["reason"] == "bye" and end["packets"] == manifest[tag]["packets"]


def test_stereo_stream_equals_stereo_wav(tmp_path):
    c, frames = call_frames()
    ss = StreamSink(frame_ms=20, stereo=True)
    wav = WavSink(str(tmp_path), stereo=True)
    run_pipeline(frames, Tee(ss, wav))
    wav.close()
    (d,) = streams_of(ss.take_ops()).values()
    validate(d["open"].start)
    validate(d["end"])
    assert d["open"].start["channels"] == 2 and d["open"].start["tag"] == "stereo"
    assert set(d["end"]["legs"]) == {"caller", "callee"}
    got = np.frombuffer(b"".join(d["audio"]), "<i2").reshape(-1, 2)
    data, _, _ = read_wav(str(tmp_path / wav.manifest[0]["stereo_wav"]))
    assert np.array_equal(got, data)


def test_stereo_does_not_wait_for_a_silent_leg():
    # only the caller sends audio: frames still go out as capture time advances
    c = Call("one@test", A, B)
    pa = tone(440, 16000)
    frames = frames_of(c.setup(100), rtp_packets(A, B, 100.1, pa, ssrc=1))
    ss = StreamSink(frame_ms=20, stereo=True)
    pipe = Pipeline(1, ss)
    for t, ip in frames:
        pipe.feed(t, netgen.link(1, ip))
        pipe.tick(t)
    ops = ss.take_ops()
    audio = [op for op in ops if isinstance(op, Audio)]
    # 2 s of caller audio: all but the last ~hold_s have been sent before the call ends
    assert all(len(op.pcm) % (320 * 4) == 0 for op in audio)          # runs of whole stereo frames
    assert sum(len(op.pcm) for op in audio) / (16000 * 4) >= 2.0 - ss.hold_s - 0.1
    got = np.frombuffer(b"".join(op.pcm for op in audio), "<i2").reshape(-1, 2)
    assert not got[:, 1].any() and got[:, 0].any()


def test_events_carry_offsets_and_early_events_wait_for_the_stream():
    c = Call("ev@test", A, B)
    f = c.setup(100)
    pa = tone(440, 4000)
    s1 = rtp_packets(A, B, 100.1, pa[:1920], ssrc=7, seq0=10, ts0=0)
    d = callgen.dtmf_packets(A, B, 100.1 + 0.24, 5, ssrc=7, seq0=22, ts=1920)
    s2 = rtp_packets(A, B, 100.1 + 0.44, pa[1920:3840], ssrc=7, seq0=30, ts0=1920 + 1600)
    c.cseq = 2
    hold = c.request(100.9, "INVITE", body=callgen.sdp(A.ip, 4000, direction="sendonly"))
    ss = StreamSink()
    run_pipeline(frames_of(f, s1, d, s2, hold, c.bye(101)), ss)
    streams = streams_of(ss.take_ops())
    (caller,) = [s for s in streams.values() if s["open"].start["tag"] == "caller"]
    texts = [t for t in caller["text"] if isinstance(t, dict)]
    for t in texts:
        validate(t)
    dtmf = [t for t in texts if t["type"] == "dtmf"]
    assert [(t["digit"], t["duration_ms"], t["offset"]) for t in dtmf] == [("5", 120, 2 * 1920)]
    holds = [t for t in texts if t["type"] == "hold"]
    assert holds and holds[0]["by"] == "caller" and holds[0]["offset"] == round(0.8 * 16000)
    # the callee never sent audio: no stream for it
    assert all(s["open"].start["tag"] == "caller" for s in streams.values())


def test_frame_ms_validation():
    with pytest.raises(ValueError, match="multiple of 20 ms up to 1000 ms, not 30"):
        StreamSink(frame_ms=30)
    with pytest.raises(ValueError):
        StreamSink(frame_ms=1020)


def test_protocol_doc_carries_the_schemas():
    from paths import ROOT
    doc = (ROOT / "docs" / "protocol.md").read_text()
    assert doc.endswith(protocol.schemas_markdown())
    for schema in protocol.SCHEMAS.values():
        jsonschema.Draft202012Validator.check_schema(schema)


def test_stereo_ticks_look_only_at_mixers_whose_hold_ended(monkeypatch):
    """A frame one channel holds (the other leg silent) waits ``hold_s``; until then
    ticks do not look at its mixer at all, so a tick costs nothing per waiting call."""
    from rtp2ws.sinks import streams as streams_mod
    looked = []
    emit = streams_mod._Mixer.emit

    def counting_emit(self, until):
        looked.append(until)
        return emit(self, until)

    monkeypatch.setattr(streams_mod._Mixer, "emit", counting_emit)
    frames = []
    for i in range(20):
        a = Party(f"10.0.1.{i + 1}", 5060, 4000, "1000")
        b = Party(f"10.0.2.{i + 1}", 5060, 5000, "2000")
        c = Call(f"held{i}@test", a, b)
        frames += frames_of(c.setup(100), rtp_packets(a, b, 100.1, tone(440, 4000), ssrc=1 + i))
    frames.sort(key=lambda f: f[0])
    ss = StreamSink(frame_ms=20, stereo=True)
    pipe = Pipeline(1, ss)
    for t, ip in frames:
        pipe.feed(t, netgen.link(1, ip))
        pipe.tick(t)                      # a tick per packet: 500 ticks with 20 waiting mixers
    assert looked == []                   # 0.5 s of caller audio: no hold (1.06 s) has ended
    assert not [op for op in ss.take_ops() if isinstance(op, Audio)]
    pipe.tick(frames[-1][0] + 1.2)        # now every held frame's hold has ended
    audio = [op for op in ss.take_ops() if isinstance(op, Audio)]
    assert len(looked) == 20 and len(audio) == 20
    # every whole frame of the 0.5 s (the resampler holds back its last 40 samples until
    # the call ends): 24 frames of 20 ms, 2 channels
    assert all(len(op.pcm) == 24 * 320 * 4 for op in audio)


def relay_frames(n=8000):
    """The caller's flow goes to a media relay while the relay's goes to the callee: two
    concurrent flows on the caller leg; a hold half-way."""
    relay_a, relay_b = Party("10.0.0.9", 5060, 7000, "r"), Party("10.0.0.9", 5060, 7002, "r")
    c = Call("relay@test", A, B)
    f = c.setup(100)
    c.cseq = 2
    f += c.request(100.6, "INVITE", body=callgen.sdp(A.ip, A.rtp_port, direction="sendonly"))
    f += c.response(100.61, 200, "OK", "INVITE", body=callgen.sdp(B.ip, B.rtp_port, direction="recvonly"))
    sa = rtp_packets(A, relay_a, 100.1, tone(440, n), ssrc=1)
    sr = rtp_packets(relay_b, B, 100.1005, tone(1000, n, amp=6000), ssrc=2)
    return c, frames_of(f, sa, sr, c.bye(101.5))


@pytest.mark.parametrize("stereo", [False, True])
def test_extra_leg_has_a_stream_of_its_own(tmp_path, stereo):
    """caller#2: its own mono stream (also in stereo mode), same call_id, its own src/dst,
    schema-valid messages, the hold once it is open, audio equal to its WAV."""
    c, frames = relay_frames()
    ss = StreamSink(frame_ms=20, stereo=stereo)
    wav = WavSink(str(tmp_path))
    run_pipeline(frames, Tee(ss, wav))
    wav.close()
    streams = {d["open"].start["tag"]: d for d in streams_of(ss.take_ops()).values()}
    assert set(streams) == ({"stereo", "caller#2"} if stereo else {"caller", "caller#2"})
    x = streams["caller#2"]
    start = x["open"].start
    validate(start)
    validate(x["end"])
    assert x["open"].channels == 1 and start["call_id"] == "relay@test"
    assert (start["src"], start["dst"]) == ("10.0.0.9:7002", "10.0.0.2:5000")
    assert x["end"]["ssrcs"] == ["0x00000002"] and x["end"]["reason"] == "bye"
    holds = [t for t in x["text"] if isinstance(t, dict) and t["type"] == "hold"]
    assert len(holds) == 1 and holds[0]["tag"] == "caller#2"
    validate(holds[0])
    entry = next(l for l in wav.manifest[0]["legs"] if l["tag"] == "caller#2")
    data, _, _ = read_wav(str(tmp_path / entry["wav"]))
    assert b"".join(x["audio"]) == data.astype("<i2").tobytes()
    if stereo:
        assert set(streams["stereo"]["end"]["legs"]) == {"caller", "callee"}


def test_schemas_accept_extra_leg_tags_only():
    ok = {"type": "drop", "call_id": "c", "stream_id": "s", "offset": 0, "samples": 1}
    for tag in ("caller", "callee", "stereo", "mixed", "caller#2", "callee#4"):
        jsonschema.validate(dict(ok, tag=tag), protocol.SCHEMAS["drop"])
    for tag in ("caller#1", "caller#", "mix", "caller#2/../x", "stereo#2", "mixed#2", ""):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(dict(ok, tag=tag), protocol.SCHEMAS["drop"])


@pytest.mark.parametrize("mix", ["stereo", "mixed"])
def test_a_calls_events_before_its_mixer_exists_wait_for_it(mix):
    """A stereo or mixed stream's mixer is made by the call's first audio handed over,
    which can come after events: a DTMF packet is an event when it arrives, its leg's
    audio only after the jitter buffer (here: no tick before the end, as when the fast
    path holds a batch).  The events wait for the mixer, then for the start message, and
    go out where they happened."""
    from rtp2ws.codec.audioformat import AudioFormat

    c = Call("mixev@test", A, B)
    f = c.setup(100)
    pa, pb = tone(440, 4000), tone(1000, 4000, amp=6000)
    s1 = rtp_packets(A, B, 100.1, pa[:1920], ssrc=7, seq0=10, ts0=0)
    d = callgen.dtmf_packets(A, B, 100.1 + 0.24, 5, ssrc=7, seq0=22, ts=1920)
    s2 = rtp_packets(A, B, 100.1 + 0.44, pa[1920:3840], ssrc=7, seq0=30, ts0=1920 + 1600)
    sb = rtp_packets(B, A, 100.1, pb, ssrc=2)
    c.cseq = 2
    hold = c.request(100.3, "INVITE", body=callgen.sdp(A.ip, 4000, direction="sendonly"))
    ss = StreamSink(audio=AudioFormat(16000, "l16", mix))
    run_pipeline(frames_of(f, s1, d, hold, s2, sb, c.bye(101)), ss, tick_every=10**9)
    ((sid, stream),) = streams_of(ss.take_ops()).items()
    assert stream["open"].start["tag"] == mix
    texts = [t for t in stream["text"] if isinstance(t, dict)]
    assert [(t["type"], t["offset"]) for t in texts if t["type"] in ("dtmf", "hold")] == \
        [("hold", round(0.2 * 16000)), ("dtmf", 2 * 1920)]
    assert ss._early == {}


def test_events_before_a_stream_opens_are_bounded():
    """A flood of hold/resume re-INVITEs before any audio: each leg keeps at most
    MAX_EARLY_EVENTS to send after its start, and counts the rest (issue 10)."""
    from rtp2ws.sinks.streams import MAX_EARLY_EVENTS

    c = Call("early@test", A, B)
    frames = c.setup(100.0)
    for i in range(300):
        c.cseq += 1
        frames += c.request(100.1 + i * 0.001, "INVITE",
                            body=callgen.sdp(A.ip, 4000, direction="sendonly" if i % 2 == 0 else None))
    ss = StreamSink(frame_ms=20)
    pipe = Pipeline(1, ss)
    for t, ip in frames:
        pipe.feed(t, netgen.link(1, ip))
    assert ss._early and all(len(v) == MAX_EARLY_EVENTS for v in ss._early.values())
    assert ss.early_dropped == 2 * (300 - MAX_EARLY_EVENTS)
    pipe.finish()
    assert ss._early == {}


def test_a_call_stream_format_mixes_the_legs_at_even_samples_and_says_where_each_begins(tmp_path):
    """--ws-format twilio: one two-channel stream per call (no stream for the relay's
    caller#2: the format has two tracks), each leg placed at an even sample (the callee
    comes 50.06 ms after the caller: 16 kHz sample 800.96, placed at 800, not 801), a ``track``
    event with that offset before the audio, and the leg on ``dtmf``."""
    c, frames = relay_frames()
    b2 = rtp_packets(B, A, 100.15006, tone(1000, 4000, amp=6000), ssrc=3)
    d = callgen.dtmf_packets(B, A, 100.7, 7, ssrc=3, seq0=9000, ts=60000)
    ss = StreamSink(frame_ms=20, ws_format="twilio")
    wav = WavSink(str(tmp_path))
    run_pipeline(sorted(frames + frames_of(b2, d), key=lambda f: f[0]), Tee(ss, wav))
    wav.close()
    streams = list(streams_of(ss.take_ops()).values())
    assert len(streams) == 1
    (s,) = streams
    assert s["open"].channels == 2
    texts = s["text"]
    tracks = [t for t in texts if isinstance(t, dict) and t["type"] == "track"]
    assert [(t["leg"], t["offset"]) for t in tracks] == [("caller", 0), ("callee", 800)]
    assert texts.index(tracks[1]) < next(i for i, t in enumerate(texts) if t == ("audio", 1280)) + 3
    dtmf = [t for t in texts if isinstance(t, dict) and t["type"] == "dtmf"]
    assert [(t["digit"], t["leg"]) for t in dtmf] == [("7", "callee")]
    pcm = np.frombuffer(b"".join(s["audio"]), dtype="<i2").reshape(-1, 2)
    legs = {leg["tag"]: read_wav(str(tmp_path / leg["wav"]))[0] for leg in wav.manifest[0]["legs"]}
    assert set(legs) == {"caller", "callee", "caller#2"}
    callee = legs["callee"]
    assert np.array_equal(pcm[800:800 + len(callee), 1], callee) and not pcm[:800, 1].any()
    assert np.array_equal(pcm[:len(legs["caller"]), 0], legs["caller"])
