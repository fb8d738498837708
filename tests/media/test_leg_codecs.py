"""media.leg with the codecs decoded by a library (G.722, G.729 with Annex B, Opus) and
codec changes within a leg: one continuous timeline, sample N at start_time + N/rate.

Every expected signal is the reference decoder's output of the same bitstream (the
library fed the packets in order, with its own concealment where the leg must use it),
put through the one filter from the codec's rate to the output rate, in one go
(tests/codecgen.py)."""

import numpy as np
import pytest

from rtp2ws.codec import g711
from rtp2ws.codec.g722 import G722Decoder
from rtp2ws.codec.g729 import G729Decoder
from rtp2ws.codec.opus import OpusDecoder
from rtp2ws.codec.resample import RATES, upsample
from rtp2ws.media.leg import CLOCK, FILL_MAX, PLC_MAX, CodecChange, MediaLeg
from rtp2ws.media.plc import FADE_SAMPLES, conceal
from rtp2ws.media.rtp import RtpPacket

import codecgen

SSRC = 0x5EED0002
T0 = 100.0


def drained(leg):
    leg.close()
    parts = []
    while True:
        parts.append(leg.take_audio())
        if not leg.pending_samples:
            parts.append(leg.take_audio())
            return np.concatenate(parts)


class Sender:
    """RTP of one SSRC sent in real time: each packet's timestamp (``clock`` units) and
    capture time move on by its ``ticks`` (8 kHz units)."""

    def __init__(self, ssrc=SSRC, seq=1000, ts=50_000, t=T0):
        self.ssrc, self.seq, self.ts, self.t = ssrc, seq, ts, t
        self.sent = []

    def send(self, pt, payload, ticks, clock=CLOCK, *, drop=False, skip=0):
        """``skip`` 8 kHz units not sent before this packet (DTX: no sequence gap)."""
        self.ts += skip * clock // CLOCK
        self.t += skip / CLOCK
        if not drop:
            self.sent.append((self.t, RtpPacket(self.seq & 0xFFFF, self.ts & 0xFFFFFFFF, self.ssrc, pt, False,
                                                 payload)))
        self.seq += 1
        self.ts += ticks * clock // CLOCK
        self.t += ticks / CLOCK

    def into(self, leg):
        for t, p in self.sent:
            leg.push(p, t)
        return leg


def pcmu_packets(n, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, 160, dtype=np.uint8).tobytes() for _ in range(n)]


# -- G.722, and a codec change within a call ----------------------------------------------------

@pytest.mark.parametrize("rate", RATES)
def test_pcmu_then_g722_then_pcmu_is_one_timeline(rate):
    """The issue's call: PCMU, a re-INVITE to G.722 (the same SSRC and RTP clock going
    on), then back.  Each segment is its decoder's output at the output rate; nothing is
    lost, added or shifted at the changes."""
    u1, g, u2 = pcmu_packets(50), codecgen.g722_payloads(), pcmu_packets(40, seed=2)
    s = Sender()
    for p in u1:
        s.send(0, p, 160)
    change_at = s.t
    for p in g:
        s.send(9, p, 160)
    back_at = s.t
    for p in u2:
        s.send(0, p, 160)
    leg = s.into(MediaLeg("caller", rate=rate))
    out = drained(leg)
    wide = G722Decoder(8000 if rate == 8000 else 16000)
    expected = np.concatenate([upsample(g711.decode_ulaw(b"".join(u1)), rate),
                               codecgen.convert(wide.decode(b"".join(g)), wide.rate, rate),
                               upsample(g711.decode_ulaw(b"".join(u2)), rate)])
    assert len(out) == len(expected) == (len(u1) + len(g) + len(u2)) * 160 * rate // CLOCK
    assert np.array_equal(out, expected)
    assert leg.samples_out == len(out)
    assert leg.codecs == ["PCMU", "G722"] and leg.counts["unknown_pt"] == 0
    assert leg.take_events() == [CodecChange("G722", change_at), CodecChange("PCMU", back_at)]
    assert leg.decoded == len(out) * CLOCK // rate and leg.filled == 0 and leg.concealed == 0
    assert leg.codec_segments == [("PCMU", T0), ("G722", change_at), ("PCMU", back_at)]


def test_the_fast_path_is_refused_while_g722_plays_and_offered_again_after():
    u1, g, u2 = pcmu_packets(5), codecgen.g722_payloads()[:5], pcmu_packets(5, seed=2)
    s = Sender()
    for p in u1:
        s.send(0, p, 160)
    for p in g:
        s.send(9, p, 160)
    leg = s.into(MediaLeg("caller"))
    assert leg.fast_state(0) is None and leg.fast_state(9) is None
    for p in u2:
        s.send(0, p, 160)
    for t, p in s.sent[10:]:
        leg.push(p, t)
    assert leg.fast_state(0) is None          # the G.722 audio is still pending
    leg.take_audio()
    state = leg.fast_state(0)
    assert state is not None and not state.alaw and state.pending_samples == 0


def test_a_new_ssrc_resets_the_decoder():
    g = codecgen.g722_payloads()
    a, b = Sender(), Sender(ssrc=SSRC + 1, seq=7, ts=900_000, t=T0 + 40 * 0.02)
    for p in g[:40]:
        a.send(9, p, 160)
    for p in g[40:80]:
        b.send(9, p, 160)
    leg = MediaLeg("caller")
    a.into(leg)
    b.into(leg)
    out = drained(leg)
    first, second = G722Decoder(), G722Decoder()
    expected = np.concatenate([first.decode(b"".join(g[:40])), second.decode(b"".join(g[40:80]))])
    assert np.array_equal(out, expected)


def test_a_lost_g722_packet_repeats_the_last_audio_faded_at_16khz():
    g = codecgen.g722_payloads()[:20]
    s = Sender()
    for i, p in enumerate(g):
        s.send(9, p, 160, drop=i == 10)
    leg = s.into(MediaLeg("caller"))
    out = drained(leg)
    dec = G722Decoder()
    before = dec.decode(b"".join(g[:10]))
    hidden = conceal(before[-320:], 320, 2 * FADE_SAMPLES)
    after = dec.decode(b"".join(g[11:]))
    assert np.array_equal(out, np.concatenate([before, hidden, after]))
    assert leg.concealed == 160 and leg.stats["lost"] == 1


def test_malformed_and_empty_payloads_are_counted_never_decoded():
    leg = MediaLeg("caller")
    leg.set_payload_map({111: ("OPUS", 48000)})
    leg.push(RtpPacket(1, 0, SSRC, 111, False, b"\xff\xff"), T0)        # not an Opus packet
    leg.push(RtpPacket(2, 960, SSRC, 18, False, b"\x00" * 7), T0 + 0.02)  # not G.729 frames
    leg.push(RtpPacket(3, 1920, SSRC, 9, False, b""), T0 + 0.04)          # nothing
    assert leg.counts["malformed"] == 2 and leg.start_time is None and len(drained(leg)) == 0


# -- G.729 with Annex B -------------------------------------------------------------------------

@pytest.mark.parametrize("rate", RATES)
def test_g729_is_bcg729s_output_at_every_rate(rate):
    frames = codecgen.g729_frames(vad=False)
    s = Sender()
    for payload, _ in codecgen.g729_packets(frames):
        s.send(18, payload, len(payload) // 10 * 80)
    leg = s.into(MediaLeg("caller", rate=rate))
    assert np.array_equal(drained(leg), upsample(codecgen.g729_reference(frames), rate))
    assert leg.codecs == ["G729"]


def test_g729_annex_b_sid_frames_and_the_comfort_noise_of_the_frames_not_sent():
    frames = codecgen.g729_frames(vad=True)
    assert {len(f) for f in frames} == {0, 2, 10}
    s = Sender()
    for payload, skip in codecgen.g729_packets(frames):
        s.send(18, payload, (len(payload) // 10 + (len(payload) % 10 == 2)) * 80, skip=skip)
    leg = s.into(MediaLeg("caller", rate=8000))
    out = drained(leg)
    assert np.array_equal(out, codecgen.g729_reference(frames))
    assert leg.stats["lost"] == 0 and leg.concealed == 0 and leg.filled > 0
    assert leg.filled <= FILL_MAX


def test_a_lost_g729_packet_is_bcg729s_concealment():
    frames = codecgen.g729_frames(vad=False)[:100]
    s = Sender()
    for i, (payload, _) in enumerate(codecgen.g729_packets(frames)):
        s.send(18, payload, 160, drop=i == 20)
    leg = s.into(MediaLeg("caller", rate=8000))
    assert np.array_equal(drained(leg), codecgen.g729_reference(frames, lost=(40, 41)))
    assert leg.concealed == 160


# -- Opus ---------------------------------------------------------------------------------------

def opus_leg(rate):
    leg = MediaLeg("caller", rate=rate)
    leg.set_payload_map({111: ("OPUS", 48000)})
    return leg


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("rate", RATES)
def test_opus_is_decoded_at_the_output_rate_mono(rate, channels):
    pk = codecgen.opus_payloads(channels)
    s = Sender(ts=3_000_001)            # a 48 kHz timestamp that is no multiple of 6
    for p in pk:
        s.send(111, p, 160, clock=48000)
    leg = s.into(opus_leg(rate))
    dec = OpusDecoder(rate)
    expected = np.concatenate([dec.decode(p) for p in pk])
    assert np.array_equal(drained(leg), expected)
    assert leg.codecs == ["OPUS"] and leg.samples_out == len(expected) == len(pk) * rate // 50


def test_opus_fec_recovers_a_dropped_packet_from_the_next():
    pk = codecgen.opus_payloads(fec=True, loss_perc=20)[:80]
    s = Sender()
    for i, p in enumerate(pk):
        s.send(111, p, 160, clock=48000, drop=i == 30)
    leg = s.into(opus_leg(16000))
    dec = OpusDecoder(16000)
    expected = [dec.decode(p) for p in pk[:30]]
    expected.append(dec.recover(pk[31], 160))
    expected += [dec.decode(p) for p in pk[31:]]
    assert np.array_equal(drained(leg), np.concatenate(expected))
    assert leg.concealed == 160 and leg.stats["lost"] == 1


def test_opus_two_lost_packets_conceal_then_recover():
    pk = codecgen.opus_payloads(fec=True, loss_perc=20)[:80]
    s = Sender()
    for i, p in enumerate(pk):
        s.send(111, p, 160, clock=48000, drop=i in (30, 31))
    leg = s.into(opus_leg(16000))
    dec = OpusDecoder(16000)
    expected = [dec.decode(p) for p in pk[:30]]
    expected += [dec.conceal(160), dec.recover(pk[32], 160)]
    expected += [dec.decode(p) for p in pk[32:]]
    assert np.array_equal(drained(leg), np.concatenate(expected))


def test_opus_dtx_gaps_are_what_the_decoder_makes_of_the_frames_not_sent():
    """A sender with DTX does not send the 1-byte frames of silence (the timestamp jumps,
    the sequence does not): the leg runs the decoder over the gap, as the reference
    decoder does over those frames."""
    pk = codecgen.opus_payloads(pause_s=1.0, dtx=True)
    s = Sender()
    skip = 0
    for p in pk:
        if len(p) <= 2:
            skip += 160
            continue
        s.send(111, p, 160, clock=48000, skip=skip)
        skip = 0
    assert len(s.sent) < len(pk) - 20
    leg = s.into(opus_leg(16000))
    dec = OpusDecoder(16000)
    expected = np.concatenate([dec.decode(p) for p in pk])
    out = drained(leg)
    assert len(out) == len(expected)
    assert np.array_equal(out, expected)
    assert leg.stats["lost"] == 0 and leg.concealed == 0


def test_a_long_loss_is_concealed_by_the_codec_for_plc_max_then_silence():
    """30 G.729 packets (600 ms) lost: bcg729 conceals the first PLC_MAX (200 ms), the rest
    is silence kept as its length (no codec runs for minutes of a loss)."""
    frames = codecgen.g729_frames(vad=False)[:160]
    s = Sender()
    for i, (payload, _) in enumerate(codecgen.g729_packets(frames)):
        s.send(18, payload, 160, drop=20 <= i < 50)
    leg = s.into(MediaLeg("caller", rate=8000))
    out = drained(leg)
    dec = G729Decoder()
    head = dec.decode(b"".join(frames[:40]))
    hidden = dec.conceal(PLC_MAX)
    tail = dec.decode(b"".join(frames[100:]))
    assert np.array_equal(out, np.concatenate([head, hidden, np.zeros(4800 - PLC_MAX, np.int16), tail]))
    assert leg.concealed == 4800 and PLC_MAX == 1600


def test_the_far_ends_jitter_of_an_opus_leg_is_read_at_48_khz():
    """An RTCP report's interarrival jitter is in the RTP clock of the stream it is about:
    960 units of an Opus leg are 20 ms (at 8 kHz they would read as 120 ms)."""
    from rtp2ws.media.quality import apply_rtcp
    from rtp2ws.media.rtcp import ReceiverReport, ReportBlock

    s = Sender()
    for p in codecgen.opus_payloads(1)[:20]:
        s.send(111, p, 160, clock=48000)
    leg = s.into(opus_leg(16000))
    rr = ReceiverReport(0xB0B, (ReportBlock(SSRC, 0, 0, 1019, 960, 0, 0),))
    assert apply_rtcp((rr,), leg.quality, {SSRC: leg.quality}, T0 + 1.0) == 0
    assert leg.quality_report["remote"]["jitter_ms"] == 20.0
