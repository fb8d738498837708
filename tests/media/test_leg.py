"""MediaLeg on its own: RTP packets with capture times in, 16 kHz PCM out.

Every expected signal is built from the packets sent: the G.711 decode of their
payloads (``rtp2ws.codec.g711``) laid out on the timeline the leg's docstring
describes (silence for gaps, concealment for loss), then upsampled once
(``rtp2ws.codec.resample.upsample_2x``), which the leg must match sample for sample
however its output is taken.
"""

import numpy as np
import pytest

from rtp2ws.codec import g711
from rtp2ws.codec.resample import HALF_LENGTH, Upsampler2x, upsample_2x
from rtp2ws.media.dtmf import DtmfEvent
from rtp2ws.media.leg import CLOCK, MAX_TAKE, RESYNC_SECONDS, CodecChange, MediaLeg
from rtp2ws.media.plc import FADE_SAMPLES, conceal
from rtp2ws.media.rtp import RtpPacket, TelephoneEvent, serialize_telephone_event

SSRC = 0x5EED0001
T0 = 100.0          # capture time of the first packet
TS0 = 50_000        # its RTP timestamp
SEQ0 = 1000


def payloads(n, size=160, seed=1):
    """``n`` G.711 payloads of ``size`` random bytes (every byte is a valid code)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size, dtype=np.uint8).tobytes() for _ in range(n)]


def audio(pls, *, seq0=SEQ0, ts0=TS0, t0=T0, pt=8, ssrc=SSRC):
    """[(capture time, RtpPacket)]: one packet per payload, sent in real time (each
    packet's timestamp and capture time move on by its samples)."""
    out, ts, t = [], ts0, t0
    for i, p in enumerate(pls):
        out.append((t, RtpPacket((seq0 + i) & 0xFFFF, ts & 0xFFFFFFFF, ssrc, pt, i == 0, p)))
        ts += len(p)
        t += len(p) / CLOCK
    return out


def push_all(leg, packets):
    for t, p in packets:
        leg.push(p, t)


def takes(leg):
    """Each ``take_audio`` result until nothing is pending (one call at least)."""
    parts = []
    while True:
        parts.append(leg.take_audio())
        if not leg.pending_samples:
            return parts


def take_all(leg):
    return np.concatenate(takes(leg))


def closed(leg):
    leg.close()
    return take_all(leg)


def alaw(pls):
    return g711.decode_alaw(b"".join(pls))


def zeros(n):
    return np.zeros(n, dtype=np.int16)


def reference(*parts8k):
    return upsample_2x(np.concatenate(parts8k))


# -- in-order audio ----------------------------------------------------------------------------

@pytest.mark.parametrize("pt,name,decode", [(8, "PCMA", g711.decode_alaw), (0, "PCMU", g711.decode_ulaw)])
def test_in_order_audio_is_the_g711_reference_upsampled(pt, name, decode):
    pls = payloads(10)
    leg = MediaLeg("caller")
    pkts = audio(pls, pt=pt)
    push_all(leg, pkts)
    x = decode(b"".join(pls))
    head = take_all(leg)
    # The filter holds back its delay (HALF_LENGTH input samples) until close.
    assert Upsampler2x.delay == 2 * HALF_LENGTH
    assert len(head) == 2 * len(x) - Upsampler2x.delay
    assert leg.pending_samples == 0
    out = np.concatenate([head, closed(leg)])
    assert np.array_equal(out, upsample_2x(x))
    assert leg.start_time == T0 and leg.last_arrival == pkts[-1][0]
    assert leg.decoded == len(x) == 1600 and leg.concealed == 0 and leg.filled == 0
    assert leg.samples_out == 2 * len(x)
    assert leg.codecs == [name] and leg.ssrcs == [SSRC]
    assert leg.counts["packets"] == 10 and leg.counts["bytes"] == 1600
    assert leg.stats == {"packets": 10, "lost": 0, "late": 0, "duplicates": 0, "reordered": 0, "concealed_ms": 0,
                         "jitter_ms": 0.0, "max_jitter_ms": 0.0}     # packets on time to the microsecond
    assert leg.take_events() == []


def test_taking_after_every_packet_gives_the_same_samples():
    pls = payloads(12, seed=2)
    leg = MediaLeg("callee")
    parts = []
    for t, p in audio(pls):
        leg.push(p, t)
        parts.append(take_all(leg))
    parts.append(closed(leg))
    assert np.array_equal(np.concatenate(parts), reference(alaw(pls)))


def test_reordered_packets_within_the_depth_are_put_back_in_order():
    pls = payloads(6, seed=3)
    pkts = audio(pls)
    arrivals = [pkts[0], pkts[2], pkts[1], pkts[3], pkts[5], pkts[4]]
    arrivals = [(pkts[i][0], p) for i, (_, p) in enumerate(arrivals)]   # the order they are captured in
    leg = MediaLeg("caller")
    push_all(leg, arrivals)
    assert np.array_equal(closed(leg), reference(alaw(pls)))
    assert leg.stats["reordered"] == 2 and leg.stats["lost"] == 0 and leg.concealed == 0


# -- gaps: silence suppression, loss -----------------------------------------------------------

@pytest.mark.parametrize("gap", [1600, 2 * CLOCK, MAX_TAKE + CLOCK // 2])
def test_a_silence_suppression_gap_becomes_silence_of_its_length(gap):
    """The sender stops for ``gap`` samples: sequence numbers go on, the timestamp and
    the capture time jump together.  Gaps of a second or more go out without
    assembling an array (``take_audio``), longer than MAX_TAKE in pieces."""
    pls = payloads(10, seed=4)
    first = audio(pls[:5])
    resume = TS0 + 5 * 160 + gap
    second = audio(pls[5:], seq0=SEQ0 + 5, ts0=resume, t0=T0 + (resume - TS0) / CLOCK)
    leg = MediaLeg("caller")
    parts = []
    for t, p in first + second:
        leg.push(p, t)
        parts += takes(leg)
    leg.close()
    parts += takes(leg)
    assert all(len(y) <= 2 * MAX_TAKE for y in parts)
    assert np.array_equal(np.concatenate(parts), reference(alaw(pls[:5]), zeros(gap), alaw(pls[5:])))
    assert leg.filled == gap and leg.concealed == 0 and leg.stats["lost"] == 0
    assert leg.samples_out == 2 * (1600 + gap)


@pytest.mark.parametrize("lost", [1, 4])     # 4 packets (640 samples) outlast the 480-sample fade
def test_loss_becomes_concealment_after_the_depth(lost):
    pls = payloads(10, seed=5)
    pkts = audio(pls)
    kept = pkts[:4] + pkts[4 + lost:]
    depth = 0.5       # more than the packets after the hole span: all wait for the poll
    leg = MediaLeg("caller", depth=depth)
    parts = []
    for t, p in kept:
        leg.push(p, t)
        parts.append(take_all(leg))
    assert leg.jb.held == len(kept) - 4
    deadline = pkts[4 + lost][0] + depth       # the first packet after the hole stops waiting
    assert leg.next_deadline() == deadline
    leg.poll(deadline - 0.001)
    assert leg.jb.held == len(kept) - 4 and leg.pending_samples == 0
    leg.poll(deadline)
    assert leg.jb.held == 0 and leg.next_deadline() is None
    parts.append(closed(leg))
    hidden = conceal(alaw(pls[3:4]), lost * 160)
    assert np.array_equal(np.concatenate(parts), reference(alaw(pls[:4]), hidden, alaw(pls[4 + lost:])))
    # What plc documents, checked here rather than taken on trust: the last packet
    # repeated, fading from full gain, silent after FADE_SAMPLES.
    assert hidden[0] == alaw(pls[3:4])[0] and not hidden[FADE_SAMPLES:].any()
    assert leg.concealed == lost * 160 and leg.filled == 0
    assert leg.stats["lost"] == lost and leg.stats["concealed_ms"] == lost * 160 * 1000 // CLOCK
    assert leg.counts["packets"] == len(kept)


def test_a_missing_packet_arriving_after_its_slot_was_concealed_is_dropped():
    pls = payloads(6, seed=6)
    pkts = audio(pls)
    leg = MediaLeg("caller", depth=0.060)
    push_all(leg, pkts[:2] + pkts[3:])
    leg.poll(pkts[3][0] + 0.060)
    before = leg.samples_out
    leg.push(pkts[2][1], pkts[5][0] + 0.1)
    assert leg.samples_out == before and leg.stats["late"] == 1 and leg.concealed == 160
    out = closed(leg)
    assert np.array_equal(out, reference(alaw(pls[:2]), conceal(alaw(pls[1:2]), 160), alaw(pls[3:])))


def test_close_releases_held_packets_declaring_the_hole_lost():
    pls = payloads(5, seed=7)
    pkts = audio(pls)
    leg = MediaLeg("caller", depth=10.0)
    push_all(leg, pkts[:2] + pkts[3:])
    assert leg.jb.held == 2
    out = closed(leg)
    assert np.array_equal(out, reference(alaw(pls[:2]), conceal(alaw(pls[1:2]), 160), alaw(pls[3:])))
    assert leg.stats["lost"] == 1 and leg.concealed == 160


# -- the timeline's anchor -----------------------------------------------------------------------

def test_a_new_ssrc_re_anchors_the_timeline_on_capture_time():
    """A second SSRC with unrelated sequence and timestamp bases, 100 ms after the first
    stream's last packet ended: the gap is what the capture clock says."""
    pls = payloads(8, seed=8)
    first = audio(pls[:4])
    end_of_first = first[-1][0] + 160 / CLOCK
    second = audio(pls[4:], seq0=40_000, ts0=0xFFFFFF00, t0=end_of_first + 0.100, ssrc=0xBEEF)
    leg = MediaLeg("caller")
    push_all(leg, first + second)
    gap = round(0.100 * CLOCK)
    assert np.array_equal(closed(leg), reference(alaw(pls[:4]), zeros(gap), alaw(pls[4:])))
    assert leg.ssrcs == [SSRC, 0xBEEF] and leg.filled == gap and leg.concealed == 0
    assert leg.start_time == T0


def test_a_timestamp_jump_the_capture_clock_disagrees_with_re_anchors():
    """Same SSRC, sequence in order, but the timestamp leaps 10 s while the packet comes
    20 ms later (more than RESYNC_SECONDS off): the audio goes on where it was."""
    pls = payloads(8, seed=9)
    first = audio(pls[:4])
    jump = 10 * CLOCK
    assert jump > RESYNC_SECONDS * CLOCK
    second = audio(pls[4:], seq0=SEQ0 + 4, ts0=TS0 + 4 * 160 + jump, t0=T0 + 4 * 160 / CLOCK)
    leg = MediaLeg("caller")
    push_all(leg, first + second)
    assert np.array_equal(closed(leg), reference(alaw(pls)))
    assert leg.filled == 0 and leg.samples_out == 2 * 8 * 160


def test_a_packet_overlapping_emitted_audio_is_trimmed_or_dropped():
    """No sample is emitted twice: a packet whose timestamp reaches back into audio
    already placed loses its first samples; one entirely inside it is dropped."""
    pls = payloads(5, seed=10)
    ts = [TS0, TS0 + 160, TS0 + 240, TS0 + 240, TS0 + 400]   # the third overlaps the second by 80
    pkts = [(T0 + i * 0.02, RtpPacket(SEQ0 + i, ts[i], SSRC, 8, False, pls[i])) for i in range(5)]
    leg = MediaLeg("caller")
    push_all(leg, pkts)
    assert leg.counts["overlap_dropped"] == 1            # the fourth: all of it already emitted
    x = np.concatenate([alaw(pls[:2]), alaw(pls[2:3])[80:], alaw(pls[4:])])
    assert np.array_equal(closed(leg), upsample_2x(x))
    assert leg.decoded == len(x) == 160 * 3 + 80


# -- what is not audio -----------------------------------------------------------------------------

def test_comfort_noise_and_unknown_payload_types_are_counted_not_decoded():
    pls = payloads(6, seed=11)
    a = audio(pls[:3])                                   # ts TS0 .. TS0+320, ends at TS0+480
    t_cn, ts_cn = T0 + 3 * 0.02, TS0 + 480
    cn = (t_cn, RtpPacket(SEQ0 + 3, ts_cn, SSRC, 13, False, b"\x40"))
    ts_odd = ts_cn + 800
    odd = (T0 + (ts_odd - TS0) / CLOCK, RtpPacket(SEQ0 + 4, ts_odd, SSRC, 96, False, b"\x00" * 20))
    ts_back = ts_odd + 160
    b = audio(pls[3:], seq0=SEQ0 + 5, ts0=ts_back, t0=T0 + (ts_back - TS0) / CLOCK)
    leg = MediaLeg("caller")
    push_all(leg, a + [cn, odd] + b)
    assert leg.counts["cn"] == 1 and leg.counts["unknown_pt"] == 1
    assert leg.codecs == ["PCMA", "PT96"]
    assert leg.take_events() == [CodecChange("PT96", odd[0]), CodecChange("PCMA", b[0][0])]
    # Neither takes room on the timeline: the audio after them lands by its timestamp.
    silence = ts_back - (TS0 + 480)
    assert np.array_equal(closed(leg), reference(alaw(pls[:3]), zeros(silence), alaw(pls[3:])))
    assert leg.decoded == 6 * 160 and leg.filled == silence


def test_a_mapped_codec_rtp2ws_cannot_decode_is_named():
    leg = MediaLeg("caller")
    leg.set_payload_map({111: ("AMR-WB", 16000)})
    leg.push(RtpPacket(1, 0, SSRC, 111, False, b"\x01" * 60), T0)
    assert leg.counts["unknown_pt"] == 1 and leg.codecs == ["AMR-WB"]
    assert leg.start_time is None and len(closed(leg)) == 0


def dtmf(seq, ts, event, end, duration, t):
    payload = serialize_telephone_event(TelephoneEvent(event, end, 10, duration))
    return (t, RtpPacket(seq, ts, SSRC, 101, False, payload))


def key_press(seq, ts, event, t, updates=5):
    """RFC 4733: ``updates`` packets 20 ms apart with a growing duration, then the end
    packet three times; all with the timestamp of the event's start."""
    out = [dtmf(seq + i, ts, event, False, 160 * (i + 1), t + 0.02 * i) for i in range(updates)]
    out += [dtmf(seq + updates + j, ts, event, True, 160 * (updates + 1), t + 0.02 * updates + 0.001 * j)
            for j in range(3)]
    return out


def test_dtmf_becomes_one_event_per_key_and_its_time_becomes_silence():
    pls = payloads(6, seed=12)
    a = audio(pls[:2])                                   # ends at TS0 + 320
    t1 = T0 + 320 / CLOCK
    k1 = key_press(SEQ0 + 2, TS0 + 320, 5, t1)           # 8 packets, 6 * 160 samples long
    ts_mid = TS0 + 320 + 960
    mid = audio(pls[2:4], seq0=SEQ0 + 10, ts0=ts_mid, t0=T0 + (ts_mid - TS0) / CLOCK)
    ts_k2 = ts_mid + 320
    t2 = T0 + (ts_k2 - TS0) / CLOCK
    k2 = key_press(SEQ0 + 12, ts_k2, 11, t2, updates=2)  # 5 packets, 3 * 160 samples long
    ts_end = ts_k2 + 480
    end = audio(pls[4:], seq0=SEQ0 + 17, ts0=ts_end, t0=T0 + (ts_end - TS0) / CLOCK)
    leg = MediaLeg("caller")
    leg.set_payload_map({101: ("TELEPHONE-EVENT", 8000)})
    push_all(leg, a + k1 + mid + k2 + end)
    want = [DtmfEvent("5", t1, 6 * 160 * 1000 // 8000, TS0 + 320), DtmfEvent("#", t2, 3 * 160 * 1000 // 8000, ts_k2)]
    assert leg.take_events() == want
    assert leg.dtmf_events == want
    assert np.array_equal(closed(leg), reference(alaw(pls[:2]), zeros(960), alaw(pls[2:4]), zeros(480),
                                                 alaw(pls[4:])))
    assert leg.decoded == 6 * 160 and leg.filled == 960 + 480 and leg.counts["unknown_pt"] == 0


def test_a_key_press_without_its_end_packet_is_reported_at_close():
    leg = MediaLeg("caller")
    leg.set_payload_map({101: ("TELEPHONE-EVENT", 8000)})
    for t, p in key_press(SEQ0, TS0, 1, T0)[:3]:         # updates only: 480 samples so far
        leg.push(p, t)
    assert leg.take_events() == []
    leg.close()
    assert leg.take_events() == [DtmfEvent("1", T0, 480 * 1000 // 8000, TS0)]
    assert leg.start_time is None and len(take_all(leg)) == 0   # no audio: no resampler tail either


# -- taking audio out --------------------------------------------------------------------------------

def test_take_audio_hands_out_at_most_max_take_and_pending_samples_is_exact():
    """70 s of audio in one-second packets, then a 70 s silence-suppression gap and
    audio again: every call hands out at most MAX_TAKE samples' worth, and at every
    step what came out is what was placed less what is pending, less the filter delay."""
    secs = 70
    pls = payloads(secs, size=CLOCK, seed=13)
    resume = TS0 + secs * CLOCK + secs * CLOCK
    pkts = audio(pls) + audio(pls[:2], seq0=SEQ0 + secs, ts0=resume, t0=T0 + (resume - TS0) / CLOCK)
    leg = MediaLeg("caller")
    push_all(leg, pkts)
    placed = leg.samples_out // 2
    assert placed == (secs + secs + 2) * CLOCK
    assert leg.pending_samples == placed
    parts = []
    while leg.pending_samples:
        before = leg.pending_samples
        parts.append(leg.take_audio())
        assert 0 < before - leg.pending_samples <= MAX_TAKE
        assert len(parts[-1]) <= 2 * MAX_TAKE
        assert sum(map(len, parts)) == 2 * (placed - leg.pending_samples) - Upsampler2x.delay
    assert len(parts) >= -(-placed // MAX_TAKE)
    parts.append(closed(leg))
    x = np.concatenate([alaw(pls), zeros(secs * CLOCK), alaw(pls[:2])])
    assert np.array_equal(np.concatenate(parts), upsample_2x(x))


def test_close_flushes_the_resampler_tail_so_output_is_exactly_twice_the_input():
    pls = payloads(3, seed=14)
    leg = MediaLeg("caller")
    push_all(leg, audio(pls))
    head = take_all(leg)
    assert len(head) == 2 * 480 - Upsampler2x.delay
    assert len(leg.take_audio()) == 0                    # open: the tail stays in the filter
    leg.close()
    tail = leg.take_audio()
    assert len(tail) == Upsampler2x.delay
    assert len(head) + len(tail) == 2 * leg.decoded == leg.samples_out
    assert np.array_equal(np.concatenate([head, tail]), reference(alaw(pls)))
    leg.close()                                          # twice is once
    assert len(leg.take_audio()) == 0 and leg.closed


# -- memory ------------------------------------------------------------------------------------

def test_a_leg_has_no_dict_of_its_own():
    """A leg's attributes are slots: with more than an instance keeps without a dict (30),
    the dict (1.6 KB) was a third of what a leg holds before its first packet."""
    import tracemalloc

    leg = MediaLeg("caller")
    assert not hasattr(leg, "__dict__")
    with pytest.raises(AttributeError):
        leg.no_such_attribute = 1  # type: ignore[attr-defined]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        legs = [MediaLeg("caller") for _ in range(100)]
        size = (tracemalloc.get_traced_memory()[0] - before) / len(legs)
    finally:
        tracemalloc.stop()
    assert size <= 3700        # jitter buffer, detector, resampler and counters included (it was 5,500)


# -- other output rates ----------------------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 24000, 48000])
def test_other_rates_are_the_g711_reference_at_that_rate(rate):
    """``rate``: the leg hands out the same timeline (gaps, loss) resampled to it: at 8 kHz
    the G.711 decode itself, sample for sample (computed here with the ITU-T formula, not
    the decoder's table); at 24 and 48 kHz that signal through the 3x / 6x filter."""
    from rtp2ws.codec.resample import upsample

    pls = payloads(20, seed=rate)
    # a silence-suppression gap of two packets: the sequence goes on, the timestamp jumps
    pkts = audio(pls[:10]) + audio(pls[12:], seq0=SEQ0 + 10, ts0=TS0 + 12 * 160, t0=T0 + 12 * 0.02)
    leg = MediaLeg("caller", rate=rate)
    push_all(leg, pkts)
    out = np.concatenate([take_all(leg), closed(leg)])

    def alaw_formula(code):            # G.711 A-law expansion, on the 16-bit scale
        v = code ^ 0x55
        seg, mant = (v >> 4) & 7, v & 15
        mag = (mant << 4) + 8 if seg == 0 else ((mant << 4) + 0x108) << (seg - 1)
        return mag if v & 0x80 else -mag

    first = np.array([alaw_formula(b) for b in b"".join(pls[:10])], dtype=np.int16)
    rest = np.array([alaw_formula(b) for b in b"".join(pls[12:])], dtype=np.int16)
    x8 = np.concatenate([first, zeros(320), rest])
    assert leg.filled == 320 and leg.concealed == 0
    if rate == 8000:
        np.testing.assert_array_equal(out, x8)
    else:
        np.testing.assert_array_equal(out, upsample(x8, rate))
    assert len(out) == rate // 8000 * len(x8) == leg.samples_out
