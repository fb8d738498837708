"""The audio rtp2ws hands out (--rate, --encoding, --mix): the stream and WAV bytes of a
call for each rate, encoding and mix, against what the test computes on its own from
the RTP payloads it sent: the G.711 expansion and compression of Python's ``audioop``
(the standard library's, or audioop-lts), the ITU-T formulas, and the WAV header
fields read with ``struct``."""

import struct

import jsonschema
import numpy as np
import pytest
from g191 import compress, expand

from rtp2ws.codec import audioformat
from rtp2ws.codec.audioformat import AudioFormat
from rtp2ws.codec.resample import upsample
from rtp2ws.pipeline.pipeline import Config, Pipeline
from rtp2ws.pipeline.sink import Tee
from rtp2ws.sinks.streams import Audio, End, Open, StreamSink
from rtp2ws.sinks.wav import WavSink
from rtp2ws.ws import protocol

import netgen
from callgen import Call, Party, frames_of, rtp_packets, tone

A = Party("10.0.0.1", 5060, 4000, "1000")
B = Party("10.0.0.2", 5060, 5000, "2000")
N = 8000                          # 8 kHz samples a leg sends (1 s)
CALLER_T0, CALLEE_T0 = 100.1, 100.15
FORMATS = [(rate, enc) for rate in (8000, 16000, 24000, 48000) for enc in ("l16", "mulaw", "alaw")]


# -- independent references --------------------------------------------------------------


# expand, compress: tests/g191.py (audioop's G.711, G.191's quantiser)


def sent_payloads(packets) -> bytes:
    """The RTP payloads of (t, seq, ip) packets from callgen, in order."""
    return b"".join(ip[20 + 8 + 12:] for _, _, ip in packets)


def wav_fields(path):
    """The header of a WAV read field by field (RIFF/WAVE, fmt, [fact], data) and its data."""
    raw = open(path, "rb").read()
    riff, size, wave = struct.unpack_from("<4sI4s", raw)
    assert (riff, wave, size) == (b"RIFF", b"WAVE", len(raw) - 8)
    chunks, pos = {}, 12
    while pos < len(raw):
        cid, n = struct.unpack_from("<4sI", raw, pos)
        chunks[cid] = raw[pos + 8:pos + 8 + n]
        pos += 8 + n + (n & 1)
    tag, ch, rate, byte_rate, block, bits = struct.unpack_from("<HHIIHH", chunks[b"fmt "])
    return {"tag": tag, "channels": ch, "rate": rate, "byte_rate": byte_rate, "block": block, "bits": bits,
            "fmt_size": len(chunks[b"fmt "]), "fact": chunks.get(b"fact"), "data": chunks[b"data"]}


def check_wav(path, audio: AudioFormat, channels: int) -> bytes:
    f = wav_fields(path)
    sample = 2 if audio.encoding == "l16" else 1
    assert f["tag"] == {"l16": 1, "mulaw": 7, "alaw": 6}[audio.encoding]
    assert (f["channels"], f["rate"], f["bits"]) == (channels, audio.rate, 8 * sample)
    assert (f["block"], f["byte_rate"]) == (sample * channels, audio.rate * sample * channels)
    if audio.encoding == "l16":
        assert f["fmt_size"] == 16 and f["fact"] is None
    else:               # non-PCM: a cbSize of 0, and the fact chunk's sample count
        assert f["fmt_size"] == 18 and f["fact"] == struct.pack("<I", len(f["data"]) // (sample * channels))
    return f["data"]


# -- running a call through the sinks -------------------------------------------------------


def make_call(amp_caller=8000.0, amp_callee=6000.0, freq_callee=1000):
    """Caller sends A-law (PT 8), callee µ-law (PT 0), 1 s each, 50 ms apart."""
    c = Call("fmt@test", A, B)
    sa = rtp_packets(A, B, CALLER_T0, tone(440, N, amp=amp_caller), ssrc=1)
    sb = rtp_packets(B, A, CALLEE_T0, tone(freq_callee, N, amp=amp_callee), ssrc=2, pt=0, law="ulaw")
    return sa, sb, frames_of(c.setup(100), sa, sb, c.bye(101.5))


def run(frames, audio: AudioFormat, tmp_path, frame_ms=20):
    streams = StreamSink(frame_ms=frame_ms, audio=audio)
    wav = WavSink(str(tmp_path), audio=audio)
    pipe = Pipeline(1, Tee(streams, wav), Config(rate=audio.rate))
    for t, ip in frames:
        pipe.feed(t, netgen.link(1, ip))
        pipe.tick(t)
    pipe.finish()
    wav.close()
    out = {}
    for op in streams.take_ops():
        d = out.setdefault(op.stream_id, {"audio": [], "end": None})
        if isinstance(op, Open):
            d["start"] = op.start
        elif isinstance(op, Audio):
            d["audio"].append(op.pcm)
        elif isinstance(op, End):
            d["end"] = op.message
    return {d["start"]["tag"]: d for d in out.values()}, wav.manifest[0]


def frames_cut(runs, frame_bytes):
    """The binary messages the sender makes of the Audio runs (each cut every frame)."""
    return [r[i:i + frame_bytes] for r in runs for i in range(0, len(r), frame_bytes)]


def expected_linear(rate, packets, law):
    """A leg's output at ``rate`` in linear PCM: the payloads expanded by audioop (no loss,
    no gap: the timeline is just them), through the rate's filter (none at 8 kHz)."""
    x8 = expand(sent_payloads(packets), law)
    return x8 if rate == 8000 else upsample(x8, rate)


# -- per leg --------------------------------------------------------------------------------


@pytest.mark.parametrize("rate,encoding", FORMATS)
def test_leg_streams_and_wavs_in_each_format(tmp_path, rate, encoding):
    audio = AudioFormat(rate, encoding)
    sa, sb, frames = make_call()
    streams, entry = run(frames, audio, tmp_path)
    sample = 2 if encoding == "l16" else 1
    frame_bytes = 20 * rate // 1000 * sample
    for tag, packets, law in (("caller", sa, "alaw"), ("callee", sb, "ulaw")):
        d = streams[tag]
        start = d["start"]
        jsonschema.validate(dict(start, resumed=False, offset=0), protocol.SCHEMAS["start"])
        assert (start["codec"], start["sample_rate"], start["channels"]) == \
            ({"l16": "L16", "mulaw": "PCMU", "alaw": "PCMA"}[encoding], rate, 1)
        sizes = [len(f) for f in frames_cut(d["audio"], frame_bytes)]
        assert all(s == frame_bytes for s in sizes[:-1]) and 0 < sizes[-1] <= frame_bytes
        wire = b"".join(d["audio"])
        leg = next(leg for leg in entry["legs"] if leg["tag"] == tag)
        assert check_wav(tmp_path / leg["wav"], audio, 1) == wire        # the WAV holds what was sent
        assert leg["duration_ms"] == len(wire) // sample * 1000 // rate
        want = expected_linear(rate, packets, law)
        assert len(wire) == sample * len(want) == sample * rate // 8000 * N
        if encoding == "l16":
            np.testing.assert_array_equal(np.frombuffer(wire, "<i2"), want)   # at 8 kHz: the G.711 samples
        else:
            law_out = "ulaw" if encoding == "mulaw" else "alaw"
            assert wire == compress(want, law_out)
            # and back: each sample within half a quantisation step of the linear signal
            back = expand(wire, law_out).astype(np.int32)
            step = np.maximum(np.abs(want.astype(np.int32)) >> 4, 16)      # G.711: 4 mantissa bits a segment
            assert np.all(np.abs(back - want) <= step)
            if rate == 8000 and law_out == law:     # G.711 in, the same law out at its own rate: transparent
                sent = np.frombuffer(sent_payloads(packets), np.uint8)
                if law == "ulaw":
                    sent = np.where(sent == 0x7F, 0xFF, sent)    # "-0" and "+0" are one level
                assert wire == sent.astype(np.uint8).tobytes()


def test_conversion_function_is_the_pipelines(tmp_path):
    """``audioformat.convert(pcm, rate, encoding)``, the conversion a protocol adapter can call
    on audio of its own, gives what a leg hands out for the same 8 kHz samples."""
    sa, _, _ = make_call()
    x8 = expand(sent_payloads(sa), "alaw")
    for rate, encoding in FORMATS:
        want = expected_linear(rate, sa, "alaw")
        got = audioformat.convert(x8, rate, encoding)
        assert got == (want.astype("<i2").tobytes() if encoding == "l16"
                       else compress(want, "ulaw" if encoding == "mulaw" else "alaw"))
        np.testing.assert_array_equal(audioformat.decode(got, encoding),
                                      audioformat.decode(audioformat.encode(want, encoding), encoding))
    with pytest.raises(ValueError, match="rate must be one of"):
        audioformat.convert(x8, 44100, "l16")
    with pytest.raises(ValueError, match="encoding must be one of"):
        audioformat.convert(x8, 8000, "g722")
    with pytest.raises(ValueError, match="mix must be one of"):
        AudioFormat(mix="both")


# -- stereo and mixed -------------------------------------------------------------------------


def aligned(rate, sa, sb):
    """The two legs' linear output on one timeline from the caller's first sample (the
    callee starts 50 ms later): [n, 2]."""
    c, e = expected_linear(rate, sa, "alaw"), expected_linear(rate, sb, "ulaw")
    off = round((CALLEE_T0 - CALLER_T0) * rate)
    out = np.zeros((max(len(c), off + len(e)), 2), dtype=np.int32)
    out[:len(c), 0] = c
    out[off:off + len(e), 1] = e
    return out


@pytest.mark.parametrize("rate,encoding", [(8000, "l16"), (24000, "mulaw"), (48000, "alaw"), (16000, "l16")])
@pytest.mark.parametrize("loud", [False, True])
def test_stereo_and_mixed(tmp_path, rate, encoding, loud):
    """stereo: the two legs aligned on capture time, interleaved; mixed: their sum, saturated
    to int16 (``loud``: two full-scale tones in phase, whose sum does not fit)."""
    amps = (32000.0, 32000.0, 440) if loud else (8000.0, 6000.0, 1000)
    sa, sb, frames = make_call(*amps)
    pairs = aligned(rate, sa, sb)
    total = pairs.sum(axis=1)
    want_mixed = np.clip(total, -32768, 32767).astype(np.int16)
    if loud:
        assert (np.abs(total) > 32767).sum() > 1000       # the case saturates ...
        assert np.any(want_mixed != total.astype(np.int16))     # ... where wrapping would differ
    sample = 2 if encoding == "l16" else 1
    law = {"mulaw": "ulaw", "alaw": "alaw"}.get(encoding)
    for mix, channels, want in (("stereo", 2, pairs.astype(np.int16).reshape(-1)), ("mixed", 1, want_mixed)):
        audio = AudioFormat(rate, encoding, mix)
        streams, entry = run(frames, audio, tmp_path / mix)
        assert set(streams) == {mix}
        d = streams[mix]
        assert (d["start"]["channels"], d["start"]["sample_rate"], d["start"]["tag"]) == (channels, rate, mix)
        jsonschema.validate(dict(d["start"], resumed=False, offset=0), protocol.SCHEMAS["start"])
        frame_bytes = 20 * rate // 1000 * sample * channels
        sizes = [len(f) for f in frames_cut(d["audio"], frame_bytes)]
        assert all(s == frame_bytes for s in sizes[:-1])
        wire = b"".join(d["audio"])
        assert wire == (want.astype("<i2").tobytes() if law is None else compress(want, law))
        assert check_wav(tmp_path / mix / entry[f"{mix}_wav"], audio, channels) == wire
        assert {leg["tag"] for leg in entry["legs"] if leg["wav"]} == {"caller", "callee"}
        assert not list((tmp_path / mix).rglob("*.l16"))      # the linear copies are gone
        assert set(d["end"]["legs"]) == {"caller", "callee"}


def test_stereo_flag_is_mix_stereo():
    assert StreamSink(stereo=True).audio == AudioFormat(mix="stereo")
    assert StreamSink(stereo=True, audio=AudioFormat(8000, "alaw")).audio == AudioFormat(8000, "alaw", "stereo")
    with pytest.raises(ValueError, match="contradict"):
        StreamSink(stereo=True, audio=AudioFormat(mix="mixed"))


def test_only_the_default_format_is_streamed_by_the_fast_path(tmp_path):
    """The C fast path filters to 16 kHz and cuts int16 frames: the sink offers it only
    16 kHz L16 legs of their own."""
    sa, sb, frames = make_call()
    linked = [(t, netgen.link(1, ip)) for t, ip in frames]
    for audio, fast in ((AudioFormat(), True), (AudioFormat(8000), False), (AudioFormat(encoding="mulaw"), False),
                        (AudioFormat(mix="mixed"), False)):
        offered = []

        class Watch(StreamSink):
            def fast_target(self, call, leg):
                target = super().fast_target(call, leg)
                offered.append(target is not None)
                return target

        streams = Watch(audio=audio)
        pipe = Pipeline(1, streams, Config(rate=audio.rate, deliver_ms=20))
        for i in range(0, len(linked), 10):            # batches, as a capture reads them: the fast path's
            pipe.feed_frames(linked[i:i + 10])
        pipe.finish()
        assert any(offered) == fast, audio
