"""G.722 (ITU-T G.722, 64 kbit/s sub-band ADPCM) through spandsp's codec (``g722_decode``).

RTP carries G.722 with payload type 9 and an RTP clock of 8000 Hz although its audio is
sampled at 16 kHz (RFC 3551 section 4.5.2 keeps the clock at 8000 for historical reasons):
one byte of payload is two 16 kHz samples, and one RTP timestamp unit.  ``G722Decoder``
decodes at 16 kHz, or at 8 kHz (``rate=8000``: spandsp's ``G722_SAMPLE_RATE_8000``, the
lower sub-band alone, which is what a narrow-band receiver makes of it).  The decoder is
an ADPCM state machine: one per stream, fed its packets in order.  spandsp has no packet
loss concealment for G.722 (``conceal`` is None: the leg repeats the last packet's audio
with a fade, as for G.711).

``G722Encoder`` (spandsp's encoder) makes the test captures.
"""

from __future__ import annotations

import ctypes
from functools import cache

import numpy as np

from .clib import load

__all__ = ["CLOCK", "G722Decoder", "G722Encoder"]

CLOCK = 8000             # the RTP clock (RFC 3551), whatever the audio's rate
BITRATE = 64000          # the RTP payload format's mode
_SAMPLE_RATE_8000 = 0x0001       # spandsp's G722_SAMPLE_RATE_8000

_u8p = ctypes.POINTER(ctypes.c_uint8)
_i16p = ctypes.POINTER(ctypes.c_int16)


@cache
def _lib() -> ctypes.CDLL:
    """The library, its functions typed (once)."""
    lib = load("spandsp")
    lib.g722_decode_init.restype = ctypes.c_void_p
    lib.g722_decode_init.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    lib.g722_decode.restype = ctypes.c_int
    lib.g722_decode.argtypes = [ctypes.c_void_p, _i16p, ctypes.c_char_p, ctypes.c_int]
    lib.g722_decode_free.argtypes = [ctypes.c_void_p]
    lib.g722_encode_init.restype = ctypes.c_void_p
    lib.g722_encode_init.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    lib.g722_encode.restype = ctypes.c_int
    lib.g722_encode.argtypes = [ctypes.c_void_p, _u8p, _i16p, ctypes.c_int]
    lib.g722_encode_free.argtypes = [ctypes.c_void_p]
    return lib


class G722Decoder:
    """One stream's G.722 decoder: payloads in, int16 samples at ``rate`` (16000 or 8000) out."""

    name = "G722"
    has_fec = False

    def __init__(self, rate: int = 16000) -> None:
        if rate not in (8000, 16000):
            raise ValueError(f"G.722 decodes at 16000 or 8000 Hz, not {rate}")
        self.rate = rate
        self._per_byte = rate // 8000            # samples a payload byte gives
        self._lib = _lib()
        self._state: int | None = None
        self.reset()

    def reset(self) -> None:
        """A new stream: the ADPCM state starts again."""
        self._free()
        state = self._lib.g722_decode_init(None, BITRATE, _SAMPLE_RATE_8000 if self.rate == 8000 else 0)
        if not state:
            raise MemoryError("g722_decode_init failed")
        self._state = state

    def duration(self, payload: bytes) -> int:
        """The payload's length in RTP timestamp units (8 kHz): one a byte."""
        return len(payload)

    def decode(self, payload: bytes) -> np.ndarray:
        out = np.empty(len(payload) * self._per_byte, dtype=np.int16)
        n = self._lib.g722_decode(self._state, out.ctypes.data_as(_i16p), payload, len(payload))
        return out[:n]

    def conceal(self, ticks: int) -> np.ndarray | None:
        """No concealment of its own (the caller repeats the last audio)."""
        return None

    def fill(self, ticks: int) -> np.ndarray | None:
        """No comfort noise of its own (a gap is silence)."""
        return None

    def recover(self, payload: bytes, ticks: int) -> np.ndarray | None:
        """No forward error correction."""
        return None

    def _free(self) -> None:
        if getattr(self, "_state", None):
            self._lib.g722_decode_free(self._state)
            self._state = None

    def __del__(self) -> None:
        self._free()

    def __repr__(self) -> str:
        return f"G722Decoder(rate={self.rate})"


class G722Encoder:
    """spandsp's G.722 encoder at 64 kbit/s: int16 samples at 16 kHz in, a byte per two out."""

    def __init__(self) -> None:
        self._lib = _lib()
        self._state = self._lib.g722_encode_init(None, BITRATE, 0)
        if not self._state:
            raise MemoryError("g722_encode_init failed")

    def encode(self, pcm: np.ndarray) -> bytes:
        x = np.ascontiguousarray(pcm, dtype=np.int16)
        out = (ctypes.c_uint8 * (len(x) // 2 + 1))()
        n = self._lib.g722_encode(self._state, out, x.ctypes.data_as(_i16p), len(x))
        return bytes(out[:n])

    def __del__(self) -> None:
        if getattr(self, "_state", None):
            self._lib.g722_encode_free(self._state)
            self._state = None
