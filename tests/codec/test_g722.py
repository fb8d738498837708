"""codec.g722: spandsp's G.722 through ctypes, on speech (espeak-ng) encoded by spandsp's encoder."""

import numpy as np
import pytest

from rtp2ws.codec.g722 import G722Decoder, G722Encoder

from speech import speech


def lagged_correlation(x, y, maxlag=100):
    """The best correlation of ``x`` with ``y`` delayed by 0 .. maxlag samples, and that delay."""
    x, y = x.astype(float), y.astype(float)
    n = min(len(x), len(y)) - maxlag
    return max((np.corrcoef(x[:n], y[lag:lag + n])[0, 1], lag) for lag in range(maxlag))


def test_speech_comes_back_at_16khz():
    x = speech(16000)
    bitstream = G722Encoder().encode(x)
    assert len(bitstream) == len(x) // 2          # 64 kbit/s: a byte per two samples
    y = G722Decoder().decode(bitstream)
    assert len(y) == len(x)
    corr, lag = lagged_correlation(x, y)
    assert corr > 0.95 and lag == 22              # the QMF pair's delay


def test_the_decoder_carries_its_state_between_packets_and_reset_starts_again():
    bitstream = G722Encoder().encode(speech(16000))
    whole = G722Decoder().decode(bitstream)
    dec = G722Decoder()
    packets = [bitstream[i:i + 160] for i in range(0, len(bitstream), 160)]
    assert np.array_equal(np.concatenate([dec.decode(p) for p in packets]), whole)
    dec.reset()
    assert np.array_equal(dec.decode(bitstream[:1600]), whole[:3200])
    # without the reset, the same bytes decode differently (ADPCM state)
    assert not np.array_equal(G722Decoder().decode(bitstream[1600:3200]), whole[3200:6400])


def test_at_8khz_the_lower_band_alone():
    bitstream = G722Encoder().encode(speech(16000))
    dec = G722Decoder(8000)
    y = dec.decode(bitstream)
    assert dec.rate == 8000 and len(y) == len(bitstream)
    corr, _ = lagged_correlation(speech(8000), y)
    assert corr > 0.9


def test_duration_is_a_timestamp_unit_a_byte_and_no_plc_of_its_own():
    dec = G722Decoder()
    assert dec.duration(b"\x00" * 160) == 160
    assert dec.conceal(160) is None and dec.fill(160) is None and dec.recover(b"\x00", 160) is None
    assert len(dec.decode(b"")) == 0
    with pytest.raises(ValueError, match="16000 or 8000"):
        G722Decoder(24000)
