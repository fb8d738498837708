"""G.711 A-law and µ-law (ITU-T G.711), decoded through 256-entry tables.

Decoding is a table look-up: ``ALAW_TO_LINEAR[np.frombuffer(payload, np.uint8)]``.
The tables are computed here from the G.711 definitions (segment, mantissa,
A-law even-bit inversion with 0x55, µ-law bias 0x84 and full bit inversion);
they give 16-bit linear values, the same scale as ``audioop.alaw2lin`` and
``audioop.ulaw2lin``.

Encoding follows the ITU-T G.191 reference (``alaw_compress`` /
``ulaw_compress``): negative inputs take their magnitude by one's complement
(``~x``), so the quantiser is symmetric, ``encode(~x) == encode(x) ^ 0x80``.
For A-law this is what ``audioop.lin2alaw`` does too.  ``audioop.lin2ulaw``
instead negates (two's complement) and so puts 508 negative inputs at the
segment decision boundaries one code further from zero (e.g. -1 -> 0x7E,
which decodes to -8, where G.191 gives 0x7F, "-0").  The encoders are used by
tests and signal generators, not on the receive path.

The decoders come in two bit-identical backends, a numpy one and the C one in
``rtp2ws._native`` (native/g711.c), picked by ``rtp2ws.speedups``; ``BACKEND``
names the one in use.  Set ``RTP2WS_NO_NATIVE=1`` before import to force numpy.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from ..speedups import pick

__all__ = [
    "ALAW_SILENCE",
    "ULAW_SILENCE",
    "ALAW_TO_LINEAR",
    "ULAW_TO_LINEAR",
    "BACKEND",
    "BACKENDS",
    "decode_alaw",
    "decode_ulaw",
    "decoders",
    "encode_alaw",
    "encode_ulaw",
]

ALAW_SILENCE = 0xD5  # decodes to +8
ULAW_SILENCE = 0xFF  # decodes to 0

ULAW_BIAS = 0x84  # 132: the µ-law bias on the 16-bit scale (33 on the 14-bit scale)


def _alaw_table() -> np.ndarray:
    code = np.arange(256, dtype=np.int32) ^ 0x55  # undo even-bit inversion
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    # Segment 0 is linear (step 16 on the 16-bit scale); segment e >= 1 has
    # the implicit leading one (0x100) and step 16 << (e - 1).  "+ 8" puts the
    # output in the middle of the decision interval.
    magnitude = np.where(
        exponent == 0,
        (mantissa << 4) + 8,
        ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0),
    )
    return np.where(code & 0x80, magnitude, -magnitude).astype(np.int16)


def _ulaw_table() -> np.ndarray:
    code = ~np.arange(256, dtype=np.int32) & 0xFF  # µ-law inverts every bit
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    magnitude = (((mantissa << 3) + ULAW_BIAS) << exponent) - ULAW_BIAS
    return np.where(code & 0x80, -magnitude, magnitude).astype(np.int16)


ALAW_TO_LINEAR: np.ndarray = _alaw_table()
ULAW_TO_LINEAR: np.ndarray = _ulaw_table()
ALAW_TO_LINEAR.flags.writeable = False
ULAW_TO_LINEAR.flags.writeable = False


# -- decoders ---------------------------------------------------------------


def _numpy_decode_alaw(payload: bytes) -> np.ndarray:
    return ALAW_TO_LINEAR[np.frombuffer(payload, np.uint8)]


def _numpy_decode_ulaw(payload: bytes) -> np.ndarray:
    return ULAW_TO_LINEAR[np.frombuffer(payload, np.uint8)]


_native, BACKENDS = pick("g711")
BACKEND = BACKENDS[0]

if _native is not None:
    # the extension pick() chose, imported by name so that its stub (_native.pyi) types it
    from .._native import decode_alaw as _native_alaw
    from .._native import decode_ulaw as _native_ulaw

    def _native_decode_alaw(payload: bytes) -> np.ndarray:
        return np.frombuffer(_native_alaw(payload), np.int16)

    def _native_decode_ulaw(payload: bytes) -> np.ndarray:
        return np.frombuffer(_native_ulaw(payload), np.int16)

    decode_alaw = _native_decode_alaw
    decode_ulaw = _native_decode_ulaw
else:
    decode_alaw = _numpy_decode_alaw
    decode_ulaw = _numpy_decode_ulaw

decode_alaw.__doc__ = "A-law payload bytes -> int16 samples (16-bit linear)."
decode_ulaw.__doc__ = "µ-law payload bytes -> int16 samples (16-bit linear)."


def decoders(
    backend: str,
) -> tuple[Callable[[bytes], np.ndarray], Callable[[bytes], np.ndarray]]:
    """``(decode_alaw, decode_ulaw)`` of one backend, ``"native"`` or ``"numpy"``.

    Raises ValueError if that backend is not available here.
    """
    if backend == "numpy":
        return _numpy_decode_alaw, _numpy_decode_ulaw
    if backend == "native" and _native is not None:
        return _native_decode_alaw, _native_decode_ulaw
    raise ValueError(f"G.711 backend {backend!r} is not available (have {BACKENDS})")


# -- encoders (G.191 reference behaviour) ------------------------------------


def _bit_length(v: np.ndarray) -> np.ndarray:
    n = np.zeros_like(v)
    for shift in range(16):
        n += (v >> shift) > 0
    return n


def _one_complement_magnitude(x: np.ndarray) -> np.ndarray:
    return np.where(x < 0, ~x, x)


@functools.cache
def _alaw_encode_table() -> np.ndarray:
    """uint8[65536] indexed by ``int16 + 32768``; built on first use."""
    x = np.arange(-32768, 32768, dtype=np.int32)
    ix = _one_complement_magnitude(x) >> 4  # 12-bit magnitude, 0..2047
    exponent = sum((ix >= (16 << s)).astype(np.int32) for s in range(7))
    mantissa = (ix >> np.maximum(exponent - 1, 0)) & 0x0F
    code = (exponent << 4) | mantissa | np.where(x >= 0, 0x80, 0)
    table = (code ^ 0x55).astype(np.uint8)
    table.flags.writeable = False
    return table


@functools.cache
def _ulaw_encode_table() -> np.ndarray:
    """uint8[65536] indexed by ``int16 + 32768``; built on first use."""
    x = np.arange(-32768, 32768, dtype=np.int32)
    # 14-bit magnitude plus the bias (33 on the 14-bit scale), clipped to 13 bits.
    biased = np.minimum((_one_complement_magnitude(x) >> 2) + (ULAW_BIAS >> 2), 0x1FFF)
    exponent = _bit_length(biased) - 6  # biased >= 33, so 0..7
    mantissa = (biased >> (exponent + 1)) & 0x0F
    code = (0x7F ^ ((exponent << 4) | mantissa)) | np.where(x >= 0, 0x80, 0)
    table: np.ndarray = code.astype(np.uint8)
    table.flags.writeable = False
    return table


def _encode(table: np.ndarray, pcm: np.ndarray) -> bytes:
    pcm = np.asarray(pcm)
    if pcm.dtype != np.int16:
        raise ValueError(f"G.711 encoder expects int16 samples, got {pcm.dtype}")
    return table[pcm.astype(np.int32).ravel() + 32768].tobytes()


def encode_alaw(pcm: np.ndarray) -> bytes:
    """int16 samples -> A-law bytes (G.191 ``alaw_compress``)."""
    return _encode(_alaw_encode_table(), pcm)


def encode_ulaw(pcm: np.ndarray) -> bytes:
    """int16 samples -> µ-law bytes (G.191 ``ulaw_compress``)."""
    return _encode(_ulaw_encode_table(), pcm)
