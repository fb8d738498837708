"""Packet loss concealment for G.711 at 8 kHz.

Method: waveform repetition with fade-out.  The samples of a lost packet
are filled by repeating the last received packet's audio, with a gain
falling linearly from 1 to 0 over the first ``FADE_SAMPLES`` (60 ms) of
the gap; beyond that the gap is silent.  This avoids the clicks of a hard
cut to zero for short losses and never invents audio for long ones.
"""

from __future__ import annotations

import numpy as np

FADE_SAMPLES = 480  # 60 ms at 8 kHz


def conceal(last: np.ndarray | None, n: int) -> np.ndarray:
    """Return ``n`` int16 samples to stand in for lost audio after ``last``."""
    out = np.zeros(n, dtype=np.int16)
    if last is None or len(last) == 0 or n == 0:
        return out
    m = min(n, FADE_SAMPLES)
    reps = -(-m // len(last))
    src = np.tile(last, reps)[:m].astype(np.int32)
    gain = np.arange(FADE_SAMPLES, FADE_SAMPLES - m, -1, dtype=np.int32)  # FADE..1
    out[:m] = (src * gain // FADE_SAMPLES).astype(np.int16)
    return out
