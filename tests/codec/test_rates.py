"""The output rates other than 16 kHz (rtp2ws.codec.resample: Passthrough, Upsampler):
8 kHz as it is, 24 and 48 kHz through 3x and 6x filters designed as the 2x one is."""

import numpy as np
import pytest

from rtp2ws.codec import resample
from rtp2ws.codec.resample import (
    FILTERS,
    FRAC_BITS,
    HALF_LENGTH,
    PHASES,
    TAPS,
    Passthrough,
    ThreeHalves,
    Upsampler,
    Upsampler2x,
    make_converter,
    make_upsampler,
    upsample,
    upsample_2x,
)

from skips import native_skip_reason

AMPLITUDE = 10000
ONE = 1 << FRAC_BITS


@pytest.fixture(params=["numpy", "native"])
def backend(request):
    if request.param not in resample.BACKENDS:
        pytest.skip(native_skip_reason())
    return request.param


def tone(freq, n=8000, amplitude=AMPLITUDE):
    return np.round(amplitude * np.sin(2 * np.pi * freq * np.arange(n) / 8000)).astype(np.int16)


def fit(y, freq, rate, skip=400):
    """Least-squares fit of a sine at ``freq``: (amplitude, SNR in dB of the fit against
    what is left), edges skipped."""
    y = np.asarray(y, dtype=np.float64)[skip:-skip]
    t = (np.arange(len(y)) + skip) / rate
    basis = np.column_stack([np.cos(2 * np.pi * freq * t), np.sin(2 * np.pi * freq * t)])
    coef, *_ = np.linalg.lstsq(basis, y, rcond=None)
    model = basis @ coef
    rest = y - model
    return float(np.hypot(*coef)), 10 * np.log10(np.mean(model ** 2) / np.mean(rest ** 2))


def reference(x, factor):
    """Independent exact model: zero-stuff by ``factor``, full integer convolution with the
    prototype, drop its group delay, round half up, saturate."""
    taps = FILTERS[factor][0].astype(np.int64)
    stuffed = np.zeros(factor * len(x), dtype=np.int64)
    stuffed[::factor] = x
    centre = (len(taps) - 1) // 2
    full = np.convolve(stuffed, taps)[centre:centre + factor * len(x)]
    return np.clip((full + (ONE >> 1)) >> FRAC_BITS, -32768, 32767).astype(np.int16)


def chunked(up, x, sizes):
    parts, pos, i = [], 0, 0
    while pos < len(x):
        parts.append(up.process(x[pos:pos + sizes[i % len(sizes)]]))
        pos += sizes[i % len(sizes)]
        i += 1
    parts.append(up.flush())
    return np.concatenate(parts)


# -- the filters' design --------------------------------------------------------------


def test_the_2x_filter_is_the_family_design_at_factor_2():
    """The 2x filter in use is what the general design gives for L = 2, so the 3x and 6x
    ones below are designed the same way."""
    taps, phases = FILTERS[2]
    np.testing.assert_array_equal(taps, TAPS)
    np.testing.assert_array_equal(phases, PHASES)


@pytest.mark.parametrize("factor", [3, 6])
def test_taps_follow_the_design(factor):
    taps, phases = FILTERS[factor]
    m = HALF_LENGTH
    length = 2 * factor * m - 1
    centre = factor * m - 1
    assert taps.dtype == np.int32 and len(taps) == length
    np.testing.assert_array_equal(taps, taps[::-1])                       # linear phase
    d = np.arange(length) - centre
    assert taps[centre] == ONE and np.all(taps[(d % factor == 0) & (d != 0)] == 0)   # an L-th band filter
    # windowed sinc: the Kaiser-windowed ideal within rounding, but for the remainder that
    # makes each phase sum to one (the window costs about 1e-5 of it), on the taps next to
    # the centre
    ideal = np.sinc(d / factor) * np.kaiser(length, resample.KAISER_BETA) * ONE
    off = np.abs(taps - ideal)
    assert off[np.abs(d) > factor].max() <= 0.5
    assert off.max() <= 2e-5 * ONE
    assert phases.shape == (factor, 2 * m)
    assert phases.sum(axis=1, dtype=np.int64).tolist() == [ONE] * factor          # exact DC gain per phase
    padded = np.concatenate([[0], taps])
    for p in range(factor):
        np.testing.assert_array_equal(phases[p], padded[p::factor])


@pytest.mark.parametrize("factor", [3, 6])
def test_designed_response(factor):
    """The integer taps' own response: flat to 3400 Hz, images from 4600 Hz to the output
    Nyquist rate at least 85 dB down."""
    rate = 8000 * factor
    taps = FILTERS[factor][0].astype(np.float64) / ONE / factor
    f = np.linspace(0, rate / 2, 12001)
    response = np.abs(np.exp(-2j * np.pi * np.outer(f / rate, np.arange(len(taps)))) @ taps)
    assert np.max(np.abs(20 * np.log10(response[f <= 3400]))) < 0.01
    assert np.max(20 * np.log10(response[f >= 4600])) < -85


# -- what comes out -------------------------------------------------------------------


@pytest.mark.parametrize("rate", [24000, 48000])
@pytest.mark.parametrize("freq", [300, 1000, 3000])
def test_a_sine_comes_out_at_its_frequency(backend, rate, freq):
    """A tone at 8 kHz comes out at the same frequency and amplitude (within 0.1 dB), the
    rest of the output (images, rounding) at least 80 dB below it."""
    y = upsample(tone(freq), rate, backend)
    assert len(y) == 8000 * rate // 8000
    amplitude, snr = fit(y, freq, rate)
    assert abs(20 * np.log10(amplitude / AMPLITUDE)) < 0.1
    assert snr > 80, snr


@pytest.mark.parametrize("factor", [3, 6])
def test_output_is_the_exact_integer_convolution(backend, factor):
    x = np.random.default_rng(factor).integers(-32768, 32768, 3001).astype(np.int16)
    y = upsample(x, 8000 * factor, backend)
    np.testing.assert_array_equal(y, reference(x, factor))
    np.testing.assert_array_equal(y[::factor], x)        # the centre tap: every L-th sample is the input


@pytest.mark.parametrize("factor", [3, 6])
def test_saturates_rather_than_wraps(backend, factor):
    x = np.where((np.arange(2000) // 8) % 2 == 0, 32767, -32768).astype(np.int16)
    y = upsample(x, 8000 * factor, backend)
    np.testing.assert_array_equal(y, reference(x, factor))
    assert y.max() == 32767 and y.min() == -32768


@pytest.mark.parametrize("factor", [3, 6])
def test_chunking_state_and_silence(backend, factor):
    rng = np.random.default_rng(10 + factor)
    x = rng.integers(-32768, 32768, 2500).astype(np.int16)
    whole = upsample(x, 8000 * factor, backend)
    for sizes in ([1], [7], [160], [3, 0, 50, 2, 19]):
        np.testing.assert_array_equal(chunked(Upsampler(factor, backend), x, sizes), whole)
    a, b = Upsampler(factor, backend), Upsampler(factor, backend)
    got = [a.process(x[:100])] + [a.silence(n) for n in (30, 1000, 8000)] + [a.process(x), a.flush()]
    want = [b.process(x[:100])] + [b.process(np.zeros(n, np.int16)) for n in (30, 1000, 8000)] + \
        [b.process(x), b.flush()]
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    c = Upsampler(factor, backend)
    head = c.process(x[:333])
    d = Upsampler(factor, backend)
    d.state = c.state                                       # continue another filter's stream
    np.testing.assert_array_equal(np.concatenate([head, d.process(x[333:]), d.flush()]), whole)
    assert len(c.process(x[333:])) + len(head) + len(c.flush()) == factor * len(x)
    assert Upsampler(factor).delay == factor * HALF_LENGTH


@pytest.mark.parametrize("factor", [3, 6])
def test_backends_bit_identical(factor):
    if "native" not in resample.BACKENDS:
        pytest.skip(native_skip_reason())
    rng = np.random.default_rng(20 + factor)
    x = rng.integers(-32768, 32768, 20000).astype(np.int16)
    sizes = rng.integers(1, 400, 100).tolist()
    np.testing.assert_array_equal(chunked(Upsampler(factor, "native"), x, sizes),
                                  chunked(Upsampler(factor, "numpy"), x, sizes))
    # alternating with the 2x filter (the native core caches the plans of both)
    a, b = Upsampler(factor, "native"), Upsampler2x("native")
    outs = [(a.process(x[i:i + 160]), b.process(x[i:i + 160])) for i in range(0, 3200, 160)]
    np.testing.assert_array_equal(np.concatenate([o for o, _ in outs] + [a.flush()]),
                                  upsample(x[:3200], 8000 * factor, "numpy"))
    np.testing.assert_array_equal(np.concatenate([o for _, o in outs] + [b.flush()]),
                                  upsample_2x(x[:3200], "numpy"))


def test_8khz_is_the_input_as_it_is():
    x = np.random.default_rng(1).integers(-32768, 32768, 999).astype(np.int16)
    up = make_upsampler(8000)
    assert isinstance(up, Passthrough) and up.delay == 0
    np.testing.assert_array_equal(np.concatenate([up.process(x[:10]), up.process(x[10:]), up.flush()]), x)
    np.testing.assert_array_equal(upsample(x, 8000), x)
    assert up.silence(70).tolist() == [0] * 70 and up.state == b""


def test_rates_and_errors():
    assert isinstance(make_upsampler(16000), Upsampler2x)
    assert [make_upsampler(r).factor for r in (24000, 48000)] == [3, 6]
    for bad in (0, 11025, 32000, 44100, 96000):
        with pytest.raises(ValueError, match="must be one of 8000, 16000, 24000, 48000"):
            make_upsampler(bad)
    with pytest.raises(ValueError, match="interpolates by one of"):
        Upsampler(2)
    with pytest.raises(ValueError, match="expects int16"):
        Upsampler(3).process(np.zeros(4))
    with pytest.raises(ValueError, match="at most 39 int16 samples"):
        Upsampler(6).state = bytes(80)


def test_16khz_audio_of_g722_to_24_and_48khz(backend):
    """make_converter(16000, rate): 48 kHz through the 3x filter; 24 kHz every other
    sample of it, whatever the chunking (silence included), 3/2 as many samples."""
    x = np.random.default_rng(5).integers(-20000, 20000, 3200).astype(np.int16)
    x[1000:1500] = 0
    full = Upsampler(3, backend)
    at48 = np.concatenate([full.process(x), full.flush()])
    c48 = make_converter(16000, 48000, backend)
    assert isinstance(c48, Upsampler) and c48.factor == 3
    np.testing.assert_array_equal(np.concatenate([c48.process(x[:777]), c48.process(x[777:]), c48.flush()]), at48)
    c24 = make_converter(16000, 24000, backend)
    assert isinstance(c24, ThreeHalves)
    pieces = [c24.process(x[:333]), c24.process(x[333:1000]), c24.silence(500), c24.process(x[1500:1501]),
              c24.process(x[1501:]), c24.flush()]
    out = np.concatenate(pieces)
    assert len(out) == 3 * len(x) // 2
    np.testing.assert_array_equal(out, at48[::2])
    # after the flush it starts again
    np.testing.assert_array_equal(np.concatenate([c24.process(x), c24.flush()]), at48[::2])


def test_converters_from_each_source():
    assert isinstance(make_converter(16000, 16000), Passthrough)
    assert isinstance(make_converter(24000, 24000), Passthrough)
    assert isinstance(make_converter(8000, 16000), Upsampler2x)
    assert make_converter(8000, 48000).factor == 6
    for source, rate in ((16000, 8000), (48000, 16000), (12000, 24000)):
        with pytest.raises(ValueError, match="no filter from"):
            make_converter(source, rate)
