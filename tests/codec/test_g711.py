import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from rtp2ws.codec import g711

from skips import native_skip_reason

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # stdlib up to 3.12; the audioop-lts package from 3.13


ALL_CODES = bytes(range(256))
ALL_INT16 = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)




@pytest.fixture(params=["numpy", "native"])
def backend(request):
    """The same test against the numpy decoders and, when built, the C ones."""
    if request.param not in g711.BACKENDS:
        pytest.skip(native_skip_reason())
    return request.param


@pytest.fixture
def decode_alaw(backend):
    return g711.decoders(backend)[0]


@pytest.fixture
def decode_ulaw(backend):
    return g711.decoders(backend)[1]


def audioop_array(data: bytes) -> np.ndarray:
    return np.frombuffer(data, np.int16)


# -- tables and decoders ----------------------------------------------------


def test_tables_shape_and_dtype():
    for table in (g711.ALAW_TO_LINEAR, g711.ULAW_TO_LINEAR):
        assert table.shape == (256,)
        assert table.dtype == np.int16
        assert not table.flags.writeable


def test_alaw_table_matches_audioop():
    expected = audioop_array(audioop.alaw2lin(ALL_CODES, 2))
    np.testing.assert_array_equal(g711.ALAW_TO_LINEAR, expected)


def test_ulaw_table_matches_audioop():
    expected = audioop_array(audioop.ulaw2lin(ALL_CODES, 2))
    np.testing.assert_array_equal(g711.ULAW_TO_LINEAR, expected)


def test_decode_alaw_all_codes(decode_alaw):
    out = decode_alaw(ALL_CODES)
    assert out.dtype == np.int16
    np.testing.assert_array_equal(out, audioop_array(audioop.alaw2lin(ALL_CODES, 2)))


def test_decode_ulaw_all_codes(decode_ulaw):
    out = decode_ulaw(ALL_CODES)
    assert out.dtype == np.int16
    np.testing.assert_array_equal(out, audioop_array(audioop.ulaw2lin(ALL_CODES, 2)))


def test_decode_random_payload(decode_alaw, decode_ulaw):
    payload = np.random.default_rng(7).integers(0, 256, 1601, dtype=np.uint8).tobytes()
    np.testing.assert_array_equal(decode_alaw(payload), audioop_array(audioop.alaw2lin(payload, 2)))
    np.testing.assert_array_equal(decode_ulaw(payload), audioop_array(audioop.ulaw2lin(payload, 2)))


def test_decode_accepts_memoryview_and_empty(decode_alaw, decode_ulaw):
    data = bytearray(b"\x00" + ALL_CODES)
    np.testing.assert_array_equal(decode_alaw(memoryview(data)[1:]), g711.ALAW_TO_LINEAR)
    for decode in (decode_alaw, decode_ulaw):
        out = decode(b"")
        assert out.dtype == np.int16 and out.shape == (0,)


def test_decoded_array_is_writable(decode_alaw):
    out = decode_alaw(b"\xd5" * 4)
    out *= 2
    assert out.tolist() == [16] * 4


def test_silence(decode_alaw, decode_ulaw):
    assert g711.ALAW_SILENCE == 0xD5
    assert g711.ULAW_SILENCE == 0xFF
    assert decode_alaw(bytes([g711.ALAW_SILENCE])).tolist() == [8]
    assert decode_alaw(bytes([g711.ALAW_SILENCE ^ 0x80])).tolist() == [-8]
    assert decode_ulaw(bytes([g711.ULAW_SILENCE])).tolist() == [0]
    assert decode_ulaw(bytes([0x7F])).tolist() == [0]  # "negative zero"


def test_extremes():
    assert g711.ALAW_TO_LINEAR.max() == 32256 and g711.ALAW_TO_LINEAR.min() == -32256
    assert g711.ULAW_TO_LINEAR.max() == 32124 and g711.ULAW_TO_LINEAR.min() == -32124
    # Sign-bit symmetry of both laws.
    codes = np.arange(128)
    np.testing.assert_array_equal(g711.ALAW_TO_LINEAR[codes], -g711.ALAW_TO_LINEAR[codes | 0x80])
    np.testing.assert_array_equal(g711.ULAW_TO_LINEAR[codes], -g711.ULAW_TO_LINEAR[codes | 0x80])


def test_backend_names():
    assert g711.BACKEND in ("native", "numpy")
    assert g711.BACKEND == g711.BACKENDS[0]
    assert "numpy" in g711.BACKENDS
    with pytest.raises(ValueError, match="G.711 backend 'fast' is not available"):
        g711.decoders("fast")


def test_opt_out_environment_forces_numpy():
    code = "import rtp2ws.codec.g711 as g; print(g.BACKEND, g.BACKENDS)"
    env = dict(os.environ, RTP2WS_NO_NATIVE="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["numpy", "('numpy',)"]


# -- encoders ----------------------------------------------------------------


def test_encode_decode_round_trip_all_codes(decode_alaw, decode_ulaw):
    # Every code decodes to a value that encodes back to that code...
    assert g711.encode_alaw(g711.ALAW_TO_LINEAR) == ALL_CODES
    # ...except µ-law's "negative zero" 0x7F, whose value 0 encodes as +0.
    expected = bytearray(ALL_CODES)
    expected[0x7F] = 0xFF
    assert g711.encode_ulaw(g711.ULAW_TO_LINEAR) == bytes(expected)
    # And re-decoding any int16 after one encode is idempotent.
    a = decode_alaw(g711.encode_alaw(ALL_INT16))
    np.testing.assert_array_equal(decode_alaw(g711.encode_alaw(a)), a)
    u = decode_ulaw(g711.encode_ulaw(ALL_INT16))
    np.testing.assert_array_equal(decode_ulaw(g711.encode_ulaw(u)), u)


def test_encode_rejects_non_int16():
    with pytest.raises(ValueError, match="expects int16 samples, got float64"):
        g711.encode_alaw(np.zeros(3))


def test_encode_alaw_matches_audioop_everywhere():
    ours = g711.encode_alaw(ALL_INT16)
    assert ours == audioop.lin2alaw(ALL_INT16.tobytes(), 2)


def test_encoders_follow_g191_symmetry():
    # G.191 alaw_compress/ulaw_compress take the magnitude of a negative input
    # by one's complement, so x and ~x = -x-1 land on mirror-image codes.
    for encode in (g711.encode_alaw, g711.encode_ulaw):
        pos = np.frombuffer(encode(ALL_INT16[32768:]), np.uint8)  # 0 .. 32767
        neg = np.frombuffer(encode(~ALL_INT16[32768:]), np.uint8)  # -1 .. -32768
        np.testing.assert_array_equal(neg, pos ^ 0x80)


def test_encode_ulaw_vs_audioop_documented_difference():
    """audioop.lin2ulaw differs from G.191 on 508 negative boundary inputs.

    audioop computes the magnitude of a negative sample as -(x >> 2) (two's
    complement), the G.191 reference as (~x) >> 2 (one's complement).  Where
    that moves the value across a decision level, audioop's code is one step
    further from zero.  The G.191 choice is the symmetric quantiser, and on
    every one of those inputs its reconstruction error is no larger.
    """
    ours = np.frombuffer(g711.encode_ulaw(ALL_INT16), np.uint8)
    theirs = np.frombuffer(audioop.lin2ulaw(ALL_INT16.tobytes(), 2), np.uint8)
    differ = np.nonzero(ours != theirs)[0]
    x = ALL_INT16[differ].astype(np.int64)
    assert len(differ) == 508
    assert np.all(x < 0)
    assert x.max() == -1 and set(x[-4:].tolist()) == {-1, -2, -3, -4}
    # One code further from zero: for negative µ-law codes (0x00..0x7F) the
    # magnitude grows as the code goes down.
    np.testing.assert_array_equal(theirs[differ].astype(int), ours[differ].astype(int) - 1)
    table = g711.ULAW_TO_LINEAR.astype(np.int64)
    err_ours = np.abs(table[ours[differ]] - x)
    err_theirs = np.abs(table[theirs[differ]] - x)
    assert np.all(err_ours <= err_theirs)
    assert np.count_nonzero(err_ours < err_theirs) > 0


def test_encode_is_monotonic_with_bounded_error():
    x = ALL_INT16.astype(np.int64)
    for encode, table, clip in (
        (g711.encode_alaw, g711.ALAW_TO_LINEAR, 32256),
        (g711.encode_ulaw, g711.ULAW_TO_LINEAR, 32124),
    ):
        decoded = table[np.frombuffer(encode(ALL_INT16), np.uint8)].astype(np.int64)
        assert np.all(np.diff(decoded) >= 0)
        # Segment 0/1 steps are 16 (A-law) and 8 (µ-law) ...
        small = np.abs(x) < 256
        assert np.max(np.abs(decoded - x)[small]) <= 16
        # ... the top segment's 1024, and beyond the largest level it clips.
        inside = np.abs(x) <= clip
        assert np.max(np.abs(decoded - x)[inside]) <= 512
        assert np.max(np.abs(decoded - x)) == 32768 - clip
