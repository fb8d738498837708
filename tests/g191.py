"""G.711 as ITU-T G.191 has it, from an implementation that is not rtp2ws's: the
standard library's ``audioop`` (or audioop-lts on Python 3.13), for tests that check
rtp2ws's G.711 bytes and samples against an independent reference.

* ``expand(payload, law)``: G.711 bytes -> int16 (16-bit linear, G.711's levels).
* ``compress(pcm, law)``: int16 -> G.711 bytes as G.191 quantises them.  audioop's
  lin2alaw is G.191's; its lin2ulaw negates a negative input where G.191 takes the
  one's complement, so a negative x is encoded as ~x (= -x - 1) with the sign bit
  cleared.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import audioop
    except ImportError:           # Python 3.13: the bench extra's audioop-lts
        audioop = pytest.importorskip("audioop_lts")


def expand(payload: bytes, law: str) -> np.ndarray:
    lin = audioop.alaw2lin(payload, 2) if law == "alaw" else audioop.ulaw2lin(payload, 2)
    return np.frombuffer(lin, "<i2").astype(np.int16)


def compress(pcm: np.ndarray, law: str) -> bytes:
    pcm = np.asarray(pcm, dtype=np.int16)
    if law == "alaw":
        return audioop.lin2alaw(pcm.astype("<i2").tobytes(), 2)
    neg = pcm < 0
    mag = np.where(neg, -(pcm.astype(np.int32)) - 1, pcm).astype("<i2")
    codes = np.frombuffer(audioop.lin2ulaw(mag.tobytes(), 2), np.uint8)
    return np.where(neg, codes & 0x7F, codes).astype(np.uint8).tobytes()
