"""Speech for codec tests: a sentence spoken by espeak-ng, resampled by sox to the rate a
codec's encoder takes (made once per rate and test run; sox with -R -D: no dither, the same
samples every run)."""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np
import pytest

SENTENCE = "The quick brown fox jumps over the lazy dog, then waits a while."


@functools.cache
def speech(rate: int, sentence: str = SENTENCE) -> np.ndarray:
    """int16 mono speech at ``rate`` (about 3.5 s), from espeak-ng and sox."""
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt-get install espeak-ng sox)")
    with tempfile.TemporaryDirectory() as d:
        raw, out = Path(d) / "espeak.wav", Path(d) / "out.wav"
        subprocess.run(["espeak-ng", "-v", "en", "-w", str(raw), sentence], check=True, timeout=60)
        subprocess.run(["sox", "-R", str(raw), "-D", "-r", str(rate), "-c", "1", "-b", "16", "-e", "signed-integer",
                        str(out)], check=True, timeout=60)
        with wave.open(str(out), "rb") as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (rate, 1, 2)
            return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)
