"""G.729 / G.729A with Annex B (ITU-T G.729, 8 kbit/s CS-ACELP) through bcg729.

RTP (RFC 3551 section 4.5.6, payload type 18, clock 8000) carries zero or more 10-byte
frames of 10 ms each, then at most one 2-byte SID frame of Annex B (comfort noise
parameters, sent in silence by a sender with voice activity detection).  G.729A is a
lighter encoder of the same bitstream: one decoder serves both.  Any other length is
malformed (G.729 D/E's 8- and 15-byte frames are not this payload type).

bcg729 conceals an erased frame itself (``frameErasureFlag``): after an active frame
it extrapolates the speech, after a SID frame it goes on with comfort noise from the
last SID's parameters, which is what Annex B's decoder does for the frames a sender with
DTX does not transmit.  So ``conceal`` (lost packets) and ``fill`` after a SID frame (a
DTX gap) both run erased frames; a gap after active speech with nothing lost is silence.

``G729Encoder`` (bcg729's encoder, optionally with VAD/DTX) makes the test captures.
"""

from __future__ import annotations

import ctypes
from functools import cache

import numpy as np

from .clib import load

__all__ = ["CLOCK", "FRAME_BYTES", "FRAME_SAMPLES", "SID_BYTES", "G729Decoder", "G729Encoder"]

CLOCK = 8000
FRAME_BYTES = 10           # an active frame: 80 bits
SID_BYTES = 2              # Annex B's SID frame: 15 bits and a pad bit
FRAME_SAMPLES = 80         # 10 ms at 8 kHz, whatever the frame

_u8p = ctypes.POINTER(ctypes.c_uint8)
_i16p = ctypes.POINTER(ctypes.c_int16)


@cache
def _lib() -> ctypes.CDLL:
    """The library, its functions typed (once)."""
    lib = load("bcg729")
    lib.initBcg729DecoderChannel.restype = ctypes.c_void_p
    lib.initBcg729DecoderChannel.argtypes = []
    lib.closeBcg729DecoderChannel.argtypes = [ctypes.c_void_p]
    lib.bcg729Decoder.restype = None
    lib.bcg729Decoder.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint8, ctypes.c_uint8,
                                  ctypes.c_uint8, ctypes.c_uint8, _i16p]
    lib.initBcg729EncoderChannel.restype = ctypes.c_void_p
    lib.initBcg729EncoderChannel.argtypes = [ctypes.c_uint8]
    lib.closeBcg729EncoderChannel.argtypes = [ctypes.c_void_p]
    lib.bcg729Encoder.restype = None
    lib.bcg729Encoder.argtypes = [ctypes.c_void_p, _i16p, _u8p, _u8p]
    return lib


def frames(payload: bytes) -> int:
    """How many 10 ms frames (a SID frame included) ``payload`` holds; ValueError when its
    length is not 10 k or 10 k + 2 bytes."""
    n, rest = divmod(len(payload), FRAME_BYTES)
    if rest not in (0, SID_BYTES) or not payload:
        raise ValueError(f"a G.729 payload is 10-byte frames and at most one 2-byte SID frame, "
                         f"not {len(payload)} bytes")
    return n + (rest == SID_BYTES)


class G729Decoder:
    """One stream's G.729 (A, B) decoder: payloads in, int16 at 8 kHz out."""

    name = "G729"
    has_fec = False
    rate = 8000

    def __init__(self) -> None:
        self._lib = _lib()
        self._ctx: int | None = None
        self.sid = False           # the last frame decoded was a SID frame (DTX: comfort noise follows)
        self.reset()

    def reset(self) -> None:
        self._free()
        ctx = self._lib.initBcg729DecoderChannel()
        if not ctx:
            raise MemoryError("initBcg729DecoderChannel failed")
        self._ctx = ctx
        self.sid = False

    def duration(self, payload: bytes) -> int:
        return frames(payload) * FRAME_SAMPLES

    def decode(self, payload: bytes) -> np.ndarray:
        count = frames(payload)
        out = np.empty(count * FRAME_SAMPLES, dtype=np.int16)
        decode = self._lib.bcg729Decoder
        for i in range(count):
            frame = payload[i * FRAME_BYTES:(i + 1) * FRAME_BYTES]
            sid = len(frame) == SID_BYTES
            decode(self._ctx, frame, len(frame), 0, sid, 0, out[i * FRAME_SAMPLES:].ctypes.data_as(_i16p))
        self.sid = len(payload) % FRAME_BYTES == SID_BYTES
        return out

    def _erased(self, ticks: int) -> np.ndarray:
        count = -(-ticks // FRAME_SAMPLES)
        out = np.empty(count * FRAME_SAMPLES, dtype=np.int16)
        decode = self._lib.bcg729Decoder
        for i in range(count):
            decode(self._ctx, None, 0, 1, 0, 0, out[i * FRAME_SAMPLES:].ctypes.data_as(_i16p))
        return out[:ticks]

    def conceal(self, ticks: int) -> np.ndarray | None:
        """``ticks`` samples of bcg729's concealment of erased frames."""
        return self._erased(ticks)

    def fill(self, ticks: int) -> np.ndarray | None:
        """A gap with nothing lost: comfort noise after a SID frame, else None (silence)."""
        return self._erased(ticks) if self.sid else None

    def recover(self, payload: bytes, ticks: int) -> np.ndarray | None:
        return None

    def _free(self) -> None:
        if getattr(self, "_ctx", None):
            self._lib.closeBcg729DecoderChannel(self._ctx)
            self._ctx = None

    def __del__(self) -> None:
        self._free()

    def __repr__(self) -> str:
        return "G729Decoder()"


class G729Encoder:
    """bcg729's encoder (G.729A bitstream); ``vad`` turns on Annex B (SID frames, and
    frames not sent: ``encode_frame`` gives b"")."""

    def __init__(self, vad: bool = False) -> None:
        self._lib = _lib()
        self._ctx = self._lib.initBcg729EncoderChannel(1 if vad else 0)
        if not self._ctx:
            raise MemoryError("initBcg729EncoderChannel failed")

    def encode_frame(self, pcm: np.ndarray) -> bytes:
        """80 samples at 8 kHz -> a 10-byte frame, a 2-byte SID frame, or b"" (not transmitted)."""
        x = np.ascontiguousarray(pcm, dtype=np.int16)
        if len(x) != FRAME_SAMPLES:
            raise ValueError(f"a G.729 frame is {FRAME_SAMPLES} samples, not {len(x)}")
        out = (ctypes.c_uint8 * FRAME_BYTES)()
        n = ctypes.c_uint8(0)
        self._lib.bcg729Encoder(self._ctx, x.ctypes.data_as(_i16p), out, ctypes.byref(n))
        return bytes(out[:n.value])

    def __del__(self) -> None:
        if getattr(self, "_ctx", None):
            self._lib.closeBcg729EncoderChannel(self._ctx)
            self._ctx = None
