"""codec.opus: libopus through ctypes, on speech (espeak-ng) encoded by libopus's encoder:
every output rate, mono and stereo streams, FEC, DTX, malformed packets."""

import numpy as np
import pytest

from rtp2ws.codec.opus import OpusDecoder, OpusEncoder

from speech import speech

FRAME = 960          # 20 ms at 48 kHz


def packets(channels=1, pause=0.0, **kw):
    x = speech(48000)
    if pause:
        x = np.concatenate([x, np.zeros(int(pause * 48000), np.int16), x])
    x = x[:len(x) // FRAME * FRAME]
    src = x if channels == 1 else np.stack([x, x // 2], 1).reshape(-1)
    enc = OpusEncoder(48000, channels, **kw)
    return [enc.encode(src[i * channels:(i + FRAME) * channels]) for i in range(0, len(x), FRAME)]


def best_correlation(x, y, maxlag):
    x, y = x.astype(float), y.astype(float)
    n = min(len(x), len(y)) - maxlag
    return max(np.corrcoef(x[:n], y[lag:lag + n])[0, 1] for lag in range(maxlag))


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("rate", [8000, 16000, 24000, 48000])
def test_speech_comes_back_mono_at_the_rate_asked(rate, channels):
    dec = OpusDecoder(rate)
    pk = packets(channels)
    y = [dec.decode(p) for p in pk]
    assert all(len(part) == rate // 50 for part in y)
    assert dec.duration(pk[0]) == 160                # 20 ms in 8 kHz units
    assert best_correlation(speech(rate), np.concatenate(y), rate // 100 * 3) > 0.85


def test_fec_recovers_a_lost_packet_better_than_concealment():
    pk = packets(fec=True, loss_perc=20)
    lost = 30
    whole = OpusDecoder(16000)
    ref = [whole.decode(p) for p in pk[:lost + 1]]
    got = []
    for mode in ("fec", "plc"):
        dec = OpusDecoder(16000)
        for p in pk[:lost]:
            dec.decode(p)
        part = dec.recover(pk[lost + 1], 160) if mode == "fec" else dec.conceal(160)
        assert part is not None and len(part) == 320
        got.append(part)
    error = [np.abs(part.astype(int) - ref[lost]).mean() for part in got]
    assert error[0] < error[1] / 2


def test_dtx_frames_and_the_decoder_running_over_a_gap():
    pk = packets(dtx=True, pause=1.0)
    assert any(len(p) <= 2 for p in pk)               # DTX: frames a sender does not send
    dec = OpusDecoder(16000)
    assert len(dec.fill(3200)) == 6400                # 400 ms


@pytest.mark.parametrize("payload", [b"", b"\xff\xff", b"\x03"])
def test_malformed_packets_raise_value_error(payload):
    dec = OpusDecoder(16000)
    with pytest.raises(ValueError):
        dec.duration(payload)
        dec.decode(payload)


def test_corrupt_frame_data_raises_value_error():
    with pytest.raises(ValueError, match="opus_decode"):
        OpusDecoder(16000).decode(b"\x03\xff")
    with pytest.raises(ValueError, match="decodes at"):
        OpusDecoder(44100)
