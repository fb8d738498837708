"""Packet loss concealment for the codecs without their own (G.711, G.722).

Method: waveform repetition with fade-out.  The samples of a lost packet
are filled by repeating the last received packet's audio, with a gain
falling linearly from 1 to 0 over the first ``FADE_SAMPLES`` (60 ms) of
the gap; beyond that the gap is silent.  This avoids the clicks of a hard
cut to zero for short losses and never invents audio for long ones.
At another sample rate (G.722's 16 kHz) the fade lasts as long: ``fade`` samples.
"""

from __future__ import annotations

import numpy as np

FADE_SAMPLES = 480  # 60 ms at 8 kHz


def conceal(last: np.ndarray | None, n: int, fade: int = FADE_SAMPLES) -> np.ndarray:
    """Return ``n`` int16 samples to stand in for lost audio after ``last``, faded out
    over ``fade`` samples (60 ms at 8 kHz by default)."""
    out = np.zeros(n, dtype=np.int16)
    if last is None or len(last) == 0 or n == 0:
        return out
    m = min(n, fade)
    reps = -(-m // len(last))
    src = np.tile(last, reps)[:m].astype(np.int32)
    gain = np.arange(fade, fade - m, -1, dtype=np.int32)  # fade..1
    out[:m] = (src * gain // fade).astype(np.int16)
    return out
