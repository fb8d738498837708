import os
import subprocess
import sys

import numpy as np
import pytest

from rtp2ws.codec import resample
from rtp2ws.codec.resample import FRAC_BITS, PHASES, TAPS, Upsampler2x, upsample_2x

from skips import native_skip_reason

FS_IN = 8000
FS_OUT = 16000
AMPLITUDE = 10000
CENTRE = (len(TAPS) - 1) // 2  # group delay of the prototype, in 16 kHz samples




@pytest.fixture(params=["numpy", "native"])
def backend(request):
    """The same test against the numpy interpolator and, when built, the C one."""
    if request.param not in resample.BACKENDS:
        pytest.skip(native_skip_reason())
    return request.param


# -- helpers ------------------------------------------------------------------


def tone(freq, seconds=1.0, amplitude=AMPLITUDE, fs=FS_IN):
    t = np.arange(int(seconds * fs)) / fs
    return np.round(amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def amplitude_at(y, freq, fs, skip=200):
    """Least-squares amplitude of the ``freq`` component, edges skipped."""
    y = np.asarray(y, dtype=np.float64)[skip:-skip]
    t = (np.arange(len(y)) + skip) / fs
    basis = np.column_stack([np.cos(2 * np.pi * freq * t), np.sin(2 * np.pi * freq * t)])
    coef, *_ = np.linalg.lstsq(basis, y, rcond=None)
    return float(np.hypot(*coef))


def db(ratio):
    return 20 * np.log10(max(ratio, 1e-12))


def reference(x):
    """Independent exact model: zero-stuff, full integer convolution with TAPS,
    drop the group delay, round half up, saturate."""
    x = np.asarray(x, dtype=np.int64)
    stuffed = np.zeros(2 * len(x), dtype=np.int64)
    stuffed[::2] = x
    if len(x) == 0:
        return np.zeros(0, dtype=np.int16)
    full = np.convolve(stuffed, TAPS.astype(np.int64))
    aligned = full[CENTRE : CENTRE + 2 * len(x)]
    out = (aligned + (1 << (FRAC_BITS - 1))) >> FRAC_BITS
    return np.clip(out, -32768, 32767).astype(np.int16)


def run_chunked(x, sizes, backend):
    up = Upsampler2x(backend)
    parts = []
    pos = 0
    i = 0
    while pos < len(x):
        n = sizes[i % len(sizes)]
        parts.append(up.process(x[pos : pos + n]))
        pos += n
        i += 1
    parts.append(up.flush())
    return np.concatenate(parts)


# -- the filter tables ----------------------------------------------------------


def test_filter_tables():
    m = resample.HALF_LENGTH
    k = PHASES.shape[1]
    assert TAPS.dtype == np.int32 and PHASES.dtype == np.int32
    assert len(TAPS) == 4 * m - 1
    assert PHASES.shape == (2, 2 * m) and k == 2 * m
    np.testing.assert_array_equal(TAPS, TAPS[::-1])  # linear phase
    one = 1 << FRAC_BITS
    # Half-band: centre tap 1.0, every other even-offset tap zero.
    centre = 2 * m - 1
    assert TAPS[centre] == one
    offsets = np.arange(len(TAPS)) - centre
    assert np.all(TAPS[(offsets % 2 == 0) & (offsets != 0)] == 0)
    # Each phase sums to exactly 1.0: exact DC gain.
    assert PHASES.sum(axis=1, dtype=np.int64).tolist() == [one, one]
    # PHASES[p, k] is tap 2k + p of the prototype preceded by one zero.
    padded = np.concatenate([[0], TAPS])
    for p in range(2):
        np.testing.assert_array_equal(PHASES[p], padded[p::2])
    assert Upsampler2x.delay == 2 * m == 40


def test_designed_response():
    """The integer taps' own frequency response meets the spec with margin."""
    f = np.linspace(0, FS_IN, 8001)
    n = np.arange(len(TAPS))
    h = TAPS.astype(np.float64) / (1 << FRAC_BITS) / 2  # remove interpolation gain
    response = np.abs(np.exp(-2j * np.pi * np.outer(f / FS_OUT, n)) @ h)
    passband = 20 * np.log10(response[f <= 3400])
    stopband = 20 * np.log10(response[f >= 4600])
    assert np.max(np.abs(passband)) < 0.01
    assert np.max(stopband) < -85


def test_import_needs_no_scipy():
    code = "import sys, rtp2ws.codec.resample; print(any(m.startswith('scipy') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- quality --------------------------------------------------------------------


@pytest.mark.parametrize("freq", [100, 300, 1000, 2000, 3000, 3400])
def test_passband_flat(backend, freq):
    x = tone(freq)
    y = upsample_2x(x, backend)
    gain = amplitude_at(y, freq, FS_OUT) / amplitude_at(x, freq, FS_IN)
    assert abs(db(gain)) < 0.1


def test_image_of_1khz_at_7khz(backend):
    y = upsample_2x(tone(1000), backend)
    level = db(amplitude_at(y, 7000, FS_OUT) / amplitude_at(y, 1000, FS_OUT))
    assert level < -70


@pytest.mark.parametrize("freq", [100, 500, 1000, 1700, 2500, 3000, 3300, 3400])
def test_images_above_4600hz(backend, freq):
    y = upsample_2x(tone(freq), backend)
    image = FS_IN - freq  # >= 4600 Hz
    level = db(amplitude_at(y, image, FS_OUT) / amplitude_at(y, freq, FS_OUT))
    assert level < -60


def test_dc_gain_exact(backend):
    m = resample.HALF_LENGTH
    for value in (1, -1, 1234, -32768, 32767):
        x = np.full(500, value, dtype=np.int16)
        y = upsample_2x(x, backend)
        # Away from the edges (where the zeros outside the signal are in the
        # window) the output is exactly the input constant.
        steady = y[2 * m : -2 * m]
        assert np.all(steady == value), value


def test_even_samples_are_the_input(backend):
    x = np.random.default_rng(3).integers(-32768, 32768, 3000).astype(np.int16)
    np.testing.assert_array_equal(upsample_2x(x, backend)[::2], x)


# -- exactness and streaming --------------------------------------------------------


def test_matches_exact_reference(backend):
    x = np.random.default_rng(4).integers(-20000, 20000, 4001).astype(np.int16)
    np.testing.assert_array_equal(upsample_2x(x, backend), reference(x))


@pytest.mark.parametrize("sizes", [[1], [7], [160], [3, 1, 0, 50, 2, 19]], ids=str)
def test_chunking_equals_one_shot(backend, sizes):
    x = np.random.default_rng(5).integers(-32768, 32768, 1999).astype(np.int16)
    np.testing.assert_array_equal(run_chunked(x, sizes, backend), upsample_2x(x, backend))


def test_random_chunking_equals_one_shot(backend):
    rng = np.random.default_rng(6)
    for _ in range(20):
        x = rng.integers(-32768, 32768, rng.integers(0, 700)).astype(np.int16)
        sizes = rng.integers(0, 90, 30).tolist() + [1]
        np.testing.assert_array_equal(run_chunked(x, sizes, backend), upsample_2x(x, backend))


def test_backends_bit_identical():
    if "native" not in resample.BACKENDS:
        pytest.skip(native_skip_reason())
    rng = np.random.default_rng(8)
    x = rng.integers(-32768, 32768, 20000).astype(np.int16)
    np.testing.assert_array_equal(upsample_2x(x, "native"), upsample_2x(x, "numpy"))
    sizes = rng.integers(1, 400, 100).tolist()
    np.testing.assert_array_equal(run_chunked(x, sizes, "native"), run_chunked(x, sizes, "numpy"))


@pytest.mark.parametrize("n", list(range(0, 45)) + [160, 1001])
def test_length_is_twice_input(backend, n):
    x = np.arange(n, dtype=np.int16)
    assert len(upsample_2x(x, backend)) == 2 * n
    assert len(run_chunked(x, [1], backend)) == 2 * n


def test_process_output_lags_by_delay(backend):
    up = Upsampler2x(backend)
    x = np.ones(1000, dtype=np.int16)
    assert len(up.process(x[:10])) == 0  # fewer than M samples in: all held back
    assert len(up.process(x[10:])) == 2 * 1000 - up.delay
    assert len(up.flush()) == up.delay


@pytest.mark.parametrize("i", [0, 1, 5, 20, 21, 100, 498, 499])
def test_impulse_alignment(backend, i):
    x = np.zeros(500, dtype=np.int16)
    x[i] = 10000
    y = upsample_2x(x, backend)
    assert int(np.argmax(np.abs(y))) == 2 * i
    assert y[2 * i] == 10000


def test_saturation_square_wave(backend):
    period = 16
    x = np.where((np.arange(4000) // (period // 2)) % 2 == 0, 32767, -32768).astype(np.int16)
    y = upsample_2x(x, backend)
    np.testing.assert_array_equal(y, reference(x))
    # Gibbs overshoot is clipped, not wrapped: full-scale samples appear, and
    # every output keeps the sign of the half-period it sits in.
    assert y.max() == 32767 and y.min() == -32768
    exact = np.convolve(
        np.repeat(x.astype(np.int64), 2) * np.tile([1, 0], len(x)), TAPS.astype(np.int64)
    )[CENTRE : CENTRE + 2 * len(x)] / (1 << FRAC_BITS)
    clipped = np.abs(exact) > 32767
    assert clipped.any()
    assert np.all(np.sign(y[clipped]) == np.sign(exact[clipped]))
    assert np.all(np.abs(y.astype(np.int64) - np.clip(np.round(exact), -32768, 32767)) <= 1)


def test_empty_input(backend):
    up = Upsampler2x(backend)
    out = up.process(np.zeros(0, dtype=np.int16))
    assert out.dtype == np.int16 and out.shape == (0,)
    assert up.flush().shape == (0,)
    assert upsample_2x(np.zeros(0, dtype=np.int16), backend).shape == (0,)


def test_flush_and_reset_start_a_new_stream(backend):
    rng = np.random.default_rng(9)
    a = rng.integers(-1000, 1000, 300).astype(np.int16)
    b = rng.integers(-1000, 1000, 300).astype(np.int16)
    up = Upsampler2x(backend)
    first = np.concatenate([up.process(a), up.flush()])
    second = np.concatenate([up.process(b), up.flush()])
    np.testing.assert_array_equal(first, upsample_2x(a, backend))
    np.testing.assert_array_equal(second, upsample_2x(b, backend))
    up.process(a)
    up.reset()
    np.testing.assert_array_equal(np.concatenate([up.process(b), up.flush()]), second)


def test_output_dtype_and_input_checks(backend):
    up = Upsampler2x(backend)
    assert up.process(np.zeros(100, dtype=np.int16)).dtype == np.int16
    with pytest.raises(ValueError, match="expects int16 samples, got float64"):
        up.process(np.zeros(10))
    # Non-contiguous int16 input is fine.
    x = np.arange(400, dtype=np.int16)
    np.testing.assert_array_equal(upsample_2x(x[::2], backend), upsample_2x(x[::2].copy(), backend))


def test_backend_names():
    assert resample.BACKEND == resample.BACKENDS[0]
    assert Upsampler2x().backend == resample.BACKEND
    with pytest.raises(ValueError, match="resampler backend 'fast' is not available"):
        Upsampler2x("fast")


def test_native_core_rejects_bad_buffers():
    if "native" not in resample.BACKENDS:
        pytest.skip(native_skip_reason())
    from rtp2ws import _native

    phases = PHASES.tobytes()
    with pytest.raises(ValueError, match="phases must hold 2\\*K int32 taps"):
        _native.upsample2x(phases[:-4], FRAC_BITS, b"", b"")
    with pytest.raises(ValueError, match="history and samples must hold int16 samples"):
        _native.upsample2x(phases, FRAC_BITS, b"", b"\x00")
    with pytest.raises(ValueError, match="frac_bits must be in 1..48"):
        _native.upsample2x(phases, 0, b"", b"")


@pytest.mark.parametrize("tap_limit", [3000, 1 << 24, 1 << 30], ids=["small", "q24", "large"])
def test_native_core_arbitrary_taps(tap_limit):
    """The C core's int16 split fast path and its int64 fallback both equal
    the plain int64 dot product, for any taps."""
    if "native" not in resample.BACKENDS:
        pytest.skip(native_skip_reason())
    from rtp2ws import _native

    rng = np.random.default_rng(tap_limit)
    k, frac_bits = 12, 20
    phases = rng.integers(-tap_limit, tap_limit, (2, k)).astype(np.int32)
    history = rng.integers(-32768, 32768, k - 1).astype(np.int16)
    x = rng.integers(-32768, 32768, 500).astype(np.int16)
    out, state = _native.upsample2x(phases.tobytes(), frac_bits, history, x)
    buf = np.concatenate([history, x]).astype(np.int64)
    windows = np.lib.stride_tricks.sliding_window_view(buf, k)[:, ::-1]
    acc = windows @ phases.astype(np.int64).T + (1 << (frac_bits - 1))
    expected = np.clip(acc >> frac_bits, -32768, 32767).astype(np.int16).reshape(-1)
    np.testing.assert_array_equal(np.frombuffer(out, np.int16), expected)
    np.testing.assert_array_equal(np.frombuffer(state, np.int16), x[-(k - 1):])


# -- the C core's kernels: scalar, AVX2, AVX-512 ---------------------------------------
#
# The C core picks the widest kernel the CPU has; the tests above therefore
# run only that one.  These run each kernel in turn (the scalar one always)
# against the numpy twin and an independent int64 model.

SIMD_LEVELS = ["scalar", "avx2", "avx512"]


def native_module():
    if "native" not in resample.BACKENDS:
        pytest.skip(native_skip_reason())
    from rtp2ws import _native

    return _native


@pytest.fixture(params=SIMD_LEVELS)
def simd(request):
    """Force one upsample2x kernel of the C core for the test, then restore."""
    native = native_module()
    if request.param not in native.simd_levels():
        pytest.skip(f"no {request.param} kernel on this CPU or build")
    previous = native.set_simd(request.param)
    assert native.get_simd() == request.param
    yield request.param
    native.set_simd(previous)


def core_reference(phases, frac_bits, history, x):
    """What upsample2x(phases, frac_bits, history, x) must return, in int64."""
    k = phases.shape[1]
    buf = np.concatenate([history, x]).astype(np.int64)
    state = buf[max(0, len(buf) - (k - 1)):].astype(np.int16)
    if len(buf) < k:
        return np.zeros(0, dtype=np.int16), state
    windows = np.lib.stride_tricks.sliding_window_view(buf, k)[:, ::-1]
    acc = windows @ phases.astype(np.int64).T + (1 << (frac_bits - 1))
    return np.clip(acc >> frac_bits, -32768, 32767).astype(np.int16).reshape(-1), state


def split_exact(phases, frac_bits):
    """Mirror of the C plan's rule for the int16-split arithmetic (vector
    kernels, fast scalar path); other taps take the int64 scalar path."""
    if frac_bits < 11:
        return False
    for row in phases.astype(np.int64):
        r = row[::-1]
        nz = np.flatnonzero(r)
        span = r[nz[0] : nz[-1] + 1] if len(nz) else r[:0]
        hi = (span + 1024) >> 11
        lo = span - hi * 2048
        if np.any(np.abs(hi) > 32767) or np.abs(hi).sum() * 32768 + 2**20 > 2**31 - 1:
            return False
        if (1 << (frac_bits - 1)) + np.abs(lo).sum() * 32768 > 2**31 - 1:
            return False
    return True


def test_q24_taps_take_the_split_path():
    assert split_exact(PHASES, FRAC_BITS)


def full_scale_noise(n, seed):
    return np.random.default_rng(seed).integers(-32768, 32768, n).astype(np.int16)


def test_simd_one_shot_matches_numpy(simd):
    for n in (0, 1, 19, 20, 21, 39, 40, 41, 160, 4095, 4096, 20001):
        x = full_scale_noise(n, n)
        np.testing.assert_array_equal(upsample_2x(x, "native"), upsample_2x(x, "numpy"), str(n))


@pytest.mark.parametrize(
    "size", [1, 2, 3, 7, 8, 9, 15, 16, 17, 23, 24, 25, 63, 64, 65, 160, 511, 512, 513, 4096, 8000, 8193]
)
def test_simd_chunked_matches_numpy(simd, size):
    """Chunk sizes around the kernels' blocks (4 / 8 / 16 outputs, steps of
    24 / 64) and the window length (512); the history carries 39 samples."""
    x = full_scale_noise(20011, size)
    np.testing.assert_array_equal(run_chunked(x, [size], "native"), upsample_2x(x, "numpy"))


def test_simd_random_chunking_matches_numpy(simd):
    rng = np.random.default_rng(10)
    for _ in range(10):
        x = full_scale_noise(int(rng.integers(0, 9000)), int(rng.integers(1 << 30)))
        sizes = rng.integers(0, 700, 40).tolist() + [8000, 160, 1]
        np.testing.assert_array_equal(run_chunked(x, sizes, "native"), upsample_2x(x, "numpy"))


def test_simd_saturation_extremes(simd):
    n = 3000
    signals = {
        "nyquist": np.where(np.arange(n) % 2 == 0, 32767, -32768),
        "square": np.where((np.arange(n) // 20) % 2 == 0, 32767, -32768),
        "max": np.full(n, 32767),
        "min": np.full(n, -32768),
        "pulses": np.where(np.arange(n) % 41 == 0, -32768, 32767),
    }
    for name, x in signals.items():
        x = x.astype(np.int16)
        y = upsample_2x(x, "native")
        np.testing.assert_array_equal(y, upsample_2x(x, "numpy"), name)
        np.testing.assert_array_equal(y, reference(x), name)
        np.testing.assert_array_equal(run_chunked(x, [160], "native"), y, name)
    y = upsample_2x(signals["nyquist"].astype(np.int16), "native")
    assert y.max() == 32767 and y.min() == -32768  # the overshoot is clipped


def random_taps(rng, k, limit, symmetric, step=1):
    taps = rng.integers(-limit, limit, (2, k), dtype=np.int64) * step
    if symmetric:  # mirror twins for the int64 path's folding, sparse phase 0
        taps[1] = (taps[1] + taps[1][::-1]) // (2 * step) * step
        taps[0, rng.random(k) < 0.7] = 0
    return taps.astype(np.int32)


# (k, tap limit, tap step, frac_bits, symmetric, split): which arithmetic a
# case exercises is checked against split_exact, so the list keeps covering
# both.  K > 256 puts the core's scratch on the heap.
TAP_CASES = {
    "split-small": (12, 3000, 1, 20, False, True),
    "split-q24": (40, 1 << 20, 1, 24, True, True),
    "split-odd-k": (41, 1 << 18, 1, 24, True, True),
    "split-k1": (1, 1 << 20, 1, 24, False, True),
    "split-long": (300, 8, 2048, 26, True, True),  # lo == 0: no sum of them to bound
    "int64-large": (12, 1 << 30, 1, 20, False, False),
    "int64-symmetric": (40, 1 << 30, 1, 24, True, False),
    "int64-frac-bits": (12, 1 << 9, 1, 8, False, False),
    "int64-round": (6, 1 << 10, 1, 40, True, False),
    "int64-long": (300, 1 << 28, 1, 40, True, False),
}


@pytest.mark.parametrize("case", TAP_CASES, ids=str)
def test_simd_arbitrary_taps(simd, case):
    native = native_module()
    k, limit, step, frac_bits, symmetric, split = TAP_CASES[case]
    rng = np.random.default_rng(list(TAP_CASES).index(case))
    phases = random_taps(rng, k, limit, symmetric, step)
    assert split_exact(phases, frac_bits) == split
    for n_hist, n in [(k - 1, 700), (0, 3), (k + 5, 1), (3, 5000), (k - 1, 0)]:
        history = full_scale_noise(n_hist, n)
        x = full_scale_noise(n, n + 1)
        out, state = native.upsample2x(phases.tobytes(), frac_bits, history, x)
        expected_out, expected_state = core_reference(phases, frac_bits, history, x)
        np.testing.assert_array_equal(np.frombuffer(out, np.int16), expected_out)
        np.testing.assert_array_equal(np.frombuffer(state, np.int16), expected_state)


def test_simd_unaligned_buffers(simd):
    """Any bytes-like buffers do, aligned or not."""
    native = native_module()
    history = full_scale_noise(39, 11)
    x = full_scale_noise(1000, 12)

    def odd(a):
        return memoryview(b"\0" + a.tobytes())[1:]

    out, state = native.upsample2x(odd(PHASES), FRAC_BITS, odd(history), odd(x))
    expected_out, expected_state = core_reference(PHASES, FRAC_BITS, history, x)
    np.testing.assert_array_equal(np.frombuffer(out, np.int16), expected_out)
    np.testing.assert_array_equal(np.frombuffer(state, np.int16), expected_state)


def test_simd_alternating_taps(simd):
    """The core caches the plan made from the last taps; switching back and
    forth between tap sets must not mix them up."""
    native = native_module()
    rng = np.random.default_rng(13)
    tap_sets = [(PHASES, FRAC_BITS), (random_taps(rng, 40, 1 << 30, True), 24),
                (random_taps(rng, 12, 3000, False), 20)]
    x = full_scale_noise(600, 14)
    history = np.zeros(0, dtype=np.int16)
    for i in range(9):
        phases, frac_bits = tap_sets[i % 3]
        out, _ = native.upsample2x(phases.tobytes(), frac_bits, history, x)
        expected, _ = core_reference(phases, frac_bits, history, x)
        np.testing.assert_array_equal(np.frombuffer(out, np.int16), expected)


def test_simd_threads(simd):
    """Long calls filter without the GIL: concurrent calls with different taps
    (so the cached plan keeps being replaced under them) stay exact."""
    from concurrent.futures import ThreadPoolExecutor

    native = native_module()
    rng = np.random.default_rng(15)
    tap_sets = [(PHASES, FRAC_BITS), (random_taps(rng, 40, 1 << 30, True), 24),
                (random_taps(rng, 24, 1 << 16, False), 22)]
    x = full_scale_noise(20000, 16)
    history = np.zeros(0, dtype=np.int16)
    expected = [core_reference(p, f, history, x)[0] for p, f in tap_sets]

    def run(i):
        phases, frac_bits = tap_sets[i % 3]
        out, _ = native.upsample2x(phases.tobytes(), frac_bits, history, x)
        return i % 3, np.frombuffer(out, np.int16)

    with ThreadPoolExecutor(4) as pool:
        for which, out in pool.map(run, range(36)):
            np.testing.assert_array_equal(out, expected[which])


def test_simd_api():
    native = native_module()
    levels = native.simd_levels()
    assert levels[0] == "scalar" and list(levels) == SIMD_LEVELS[: len(levels)]
    current = native.get_simd()
    assert current in levels
    try:
        assert native.set_simd("scalar") == current
        assert native.get_simd() == "scalar"
        with pytest.raises(ValueError, match="unknown SIMD level 'sse9'"):
            native.set_simd("sse9")
        with pytest.raises(TypeError):
            native.set_simd(2)
        for level in SIMD_LEVELS[len(levels):]:
            with pytest.raises(ValueError, match="not supported"):
                native.set_simd(level)
        assert native.get_simd() == "scalar"  # failed calls change nothing
    finally:
        native.set_simd(current)


@pytest.mark.parametrize("cap", ["scalar", "avx2", "avx512", "bogus"])
def test_simd_environment_cap(cap):
    """RTP2WS_NATIVE_SIMD caps the kernel chosen at import; an unknown value
    is ignored with a warning."""
    native_module()
    code = (
        "import warnings; warnings.simplefilter('always')\n"
        "from rtp2ws import _native\n"
        "print(_native.get_simd(), ','.join(_native.simd_levels()))"
    )
    env = {**os.environ, "RTP2WS_NATIVE_SIMD": cap}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env)
    level, levels = out.stdout.split()
    levels = levels.split(",")
    if cap == "bogus":
        assert level == levels[-1]
        assert "RTP2WS_NATIVE_SIMD=bogus is not one of" in out.stderr
    else:
        assert level == levels[min(SIMD_LEVELS.index(cap), len(levels) - 1)]
        assert out.stderr == ""


@pytest.mark.parametrize("first", [0, 7, 19, 20, 500])
def test_silence_is_process_of_zeros_in_any_state(backend, first):
    """``silence(n)`` (a long gap's samples, with no arithmetic once the filter has run
    out) gives exactly what ``process(np.zeros(n))`` gives, from any state, and leaves
    the same state behind: the chunks around it and the flush are unchanged."""
    rng = np.random.default_rng(first)
    x = rng.integers(-20000, 20000, first).astype(np.int16)
    y = rng.integers(-20000, 20000, 300).astype(np.int16)
    a, b = Upsampler2x(backend), Upsampler2x(backend)
    got = [a.process(x)] + [a.silence(n) for n in (30, 1000, 5, 3, 8000)] + [a.process(y), a.flush()]
    want = [b.process(x)] + [b.process(np.zeros(n, dtype=np.int16)) for n in (30, 1000, 5, 3, 8000)] + \
        [b.process(y), b.flush()]
    assert [len(g) for g in got] == [len(w) for w in want]
    for g, w in zip(got, want):
        assert g.dtype == np.int16 and np.array_equal(g, w)
