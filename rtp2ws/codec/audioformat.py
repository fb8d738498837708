"""The audio rtp2ws hands out (``--rate``, ``--encoding``, ``--mix``): one
``AudioFormat`` per run, read by the pipeline (the rate its legs resample to), the
stream sink (frames, the ``start`` message, the mixer) and the sender (bytes a
sample, samples a millisecond), and the WAV sink (the ``fmt`` chunk).

* ``rate``: 8000 (G.711's own rate: no filter), 16000 (the default: the 2x
  interpolator, the only rate the C fast path streams at), 24000 or 48000 (3x and
  6x interpolators of the same design): ``rtp2ws.codec.resample``.
* ``encoding``: ``l16`` (16-bit little-endian linear PCM), ``mulaw`` or ``alaw``
  (G.711, 8 bits a sample, at whatever rate: ``encode``).  On the wire the
  ``start`` message names them ``L16``, ``PCMU``, ``PCMA`` (``CODECS``); in a
  WAV file they are format tags 1, 7 and 6 (``WAV_FORMAT_TAGS``).
* ``mix``: ``per-leg`` (a mono stream and WAV per leg), ``stereo`` (also, or
  instead for streams, one stream per call: caller left, callee right) or
  ``mixed`` (the same, both legs summed with saturation into one channel).

``convert(pcm, rate, encoding)`` is the whole conversion of 8 kHz linear samples
in one go, for a caller with audio of its own (a protocol adapter, a test).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import g711
from .resample import IN_RATE, RATES, upsample

__all__ = ["AudioFormat", "CODECS", "ENCODINGS", "MIXES", "RATES", "WAV_FORMAT_TAGS", "convert", "decode",
           "encode", "mix_saturating", "sample_bytes"]

ENCODINGS = ("l16", "mulaw", "alaw")
MIXES = ("per-leg", "stereo", "mixed")
CODECS = {"l16": "L16", "mulaw": "PCMU", "alaw": "PCMA"}             # the start message's "codec"
WAV_FORMAT_TAGS = {"l16": 1, "mulaw": 7, "alaw": 6}                 # WAVE_FORMAT_PCM, _MULAW, _ALAW
_PCM = np.dtype("<i2")


def _check(rate: int, encoding: str) -> None:
    if rate not in RATES:
        raise ValueError(f"the output rate must be one of {', '.join(map(str, RATES))}, not {rate}")
    if encoding not in ENCODINGS:
        raise ValueError(f"the output encoding must be one of {', '.join(ENCODINGS)}, not {encoding!r}")


def sample_bytes(encoding: str) -> int:
    """Bytes a sample (per channel): 2 for l16, 1 for G.711."""
    return 2 if encoding == "l16" else 1


def encode(pcm: np.ndarray, encoding: str) -> bytes:
    """int16 samples (any shape: channels interleaved stay so) -> the bytes of
    ``encoding``: little-endian int16 for l16, one G.711 byte a sample (G.191's
    quantiser, a 64 Ki-entry numpy table: ``rtp2ws.codec.g711``) for mulaw/alaw."""
    if encoding == "l16":
        return np.asarray(pcm).astype(_PCM, copy=False).tobytes()
    if encoding == "mulaw":
        return g711.encode_ulaw(pcm)
    if encoding == "alaw":
        return g711.encode_alaw(pcm)
    raise ValueError(f"the output encoding must be one of {', '.join(ENCODINGS)}, not {encoding!r}")


def decode(data: bytes, encoding: str) -> np.ndarray:
    """``encode``'s bytes back to int16 (G.711: the 256-entry decoding tables)."""
    if encoding == "l16":
        return np.frombuffer(data, _PCM).astype(np.int16)
    if encoding == "mulaw":
        return g711.ULAW_TO_LINEAR[np.frombuffer(data, np.uint8)]
    if encoding == "alaw":
        return g711.ALAW_TO_LINEAR[np.frombuffer(data, np.uint8)]
    raise ValueError(f"the output encoding must be one of {', '.join(ENCODINGS)}, not {encoding!r}")


def convert(pcm: np.ndarray, rate: int, encoding: str) -> bytes:
    """8 kHz int16 samples -> ``rate`` in ``encoding``, in one go (the streaming
    filters' output for the whole input, flushed: ``rate // 8000`` samples an input
    sample)."""
    _check(rate, encoding)
    return encode(upsample(np.asarray(pcm, dtype=np.int16), rate), encoding)


def mix_saturating(pairs: np.ndarray) -> np.ndarray:
    """int16 [n, 2] (caller, callee) -> int16 [n]: their sum, saturated to int16."""
    total: np.ndarray = pairs[:, 0].astype(np.int32)     # (half the time of .sum(axis=1))
    total += pairs[:, 1]
    np.clip(total, -32768, 32767, out=total)
    mixed: np.ndarray = total.astype(np.int16)
    return mixed


@dataclass(frozen=True)
class AudioFormat:
    """What every stream and WAV of a run carries."""

    rate: int = 16000
    encoding: str = "l16"
    mix: str = "per-leg"

    def __post_init__(self) -> None:
        _check(self.rate, self.encoding)
        if self.mix not in MIXES:
            raise ValueError(f"the mix must be one of {', '.join(MIXES)}, not {self.mix!r}")

    @property
    def sample_bytes(self) -> int:
        """Bytes a sample per channel: 2 (l16) or 1 (G.711)."""
        return sample_bytes(self.encoding)

    @property
    def codec(self) -> str:
        """The ``start`` message's name of the encoding: L16, PCMU or PCMA."""
        return CODECS[self.encoding]

    @property
    def wav_format_tag(self) -> int:
        return WAV_FORMAT_TAGS[self.encoding]

    @property
    def samples_per_ms(self) -> int:
        return self.rate // 1000

    @property
    def factor(self) -> int:
        """Output samples an 8 kHz input sample."""
        return self.rate // IN_RATE

    @property
    def combined_channels(self) -> int:
        """Channels of a call's combined stream or WAV (stereo 2, mixed 1; per-leg: none)."""
        return {"per-leg": 0, "stereo": 2, "mixed": 1}[self.mix]

    @property
    def fast(self) -> bool:
        """The C fast path can stream a leg in this format: 16 kHz L16 of its own."""
        return self.rate == 16000 and self.encoding == "l16"

    def encode(self, pcm: np.ndarray) -> bytes:
        return encode(pcm, self.encoding)

    def decode(self, data: bytes) -> np.ndarray:
        return decode(data, self.encoding)
