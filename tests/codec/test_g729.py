"""codec.g729: bcg729 through ctypes, on speech (espeak-ng) encoded by bcg729's encoder,
with and without Annex B (VAD, SID frames, frames not transmitted)."""

import numpy as np
import pytest

from rtp2ws.codec.g729 import FRAME_SAMPLES, G729Decoder, G729Encoder, frames

from speech import speech


def encode(x, vad=False):
    enc = G729Encoder(vad=vad)
    return [enc.encode_frame(x[i:i + FRAME_SAMPLES]) for i in range(0, len(x) // FRAME_SAMPLES * FRAME_SAMPLES,
                                                                      FRAME_SAMPLES)]


def with_pause(seconds=1.5):
    """Speech, a pause of faint noise, speech: what a sender with VAD stops sending in."""
    x = speech(8000)
    noise = np.random.default_rng(7).normal(0, 30, int(seconds * 8000)).astype(np.int16)
    return np.concatenate([x, noise, x])


def test_speech_comes_back():
    x = speech(8000)
    dec = G729Decoder()
    y = np.concatenate([dec.decode(f) for f in encode(x)])
    n = len(y) - 100
    assert max(np.corrcoef(x[:n].astype(float), y[lag:lag + n].astype(float))[0, 1] for lag in range(100)) > 0.8


def test_several_frames_a_payload_decode_as_one_at_a_time():
    fr = encode(speech(8000))
    dec = G729Decoder()
    one = np.concatenate([dec.decode(f) for f in fr])
    dec.reset()
    two = np.concatenate([dec.decode(b"".join(fr[i:i + 2])) for i in range(0, len(fr), 2)])
    assert np.array_equal(one, two)


def test_annex_b_sid_frames_and_comfort_noise_for_the_frames_not_sent():
    fr = encode(with_pause(), vad=True)
    sizes = {len(f) for f in fr}
    assert sizes == {0, 2, 10}                      # active, SID, not transmitted
    dec = G729Decoder()
    out = []
    for f in fr:
        if f:
            out.append(dec.decode(f))
            assert dec.sid == (len(f) == 2)
        else:
            noise = dec.fill(FRAME_SAMPLES)          # after a SID: comfort noise
            assert noise is not None
            out.append(noise)
    y = np.concatenate(out)
    pause = y[len(speech(8000)) + 800:len(speech(8000)) + 8000]
    assert 0 < np.abs(pause.astype(int)).mean() < 200   # noise, faint, not silence


def test_after_active_speech_a_gap_with_nothing_lost_is_silence_and_a_loss_is_concealed():
    fr = encode(speech(8000))
    dec = G729Decoder()
    dec.decode(b"".join(fr[:20]))
    assert dec.fill(160) is None
    hidden = dec.conceal(160)
    assert len(hidden) == 160 and np.abs(hidden.astype(int)).max() > 0


@pytest.mark.parametrize("size,count", [(10, 1), (12, 2), (20, 2), (2, 1), (30, 3)])
def test_payload_lengths(size, count):
    assert frames(b"\x00" * size) == count
    assert G729Decoder().duration(b"\x00" * size) == 80 * count


@pytest.mark.parametrize("size", [0, 1, 7, 8, 11, 15, 13])
def test_other_lengths_are_malformed(size):
    with pytest.raises(ValueError, match="G.729 payload"):
        G729Decoder().duration(b"\x00" * size)
