"""C twins of rtp2ws.codec.g711 decoding and the rtp2ws.codec.resample interpolator.

Built from native/g711.c and native/resample.c when a C compiler is available;
the numpy code in rtp2ws.codec.g711 and rtp2ws.codec.resample is used otherwise,
or when RTP2WS_NO_NATIVE=1 is set at import.  Samples and taps are raw buffers in
native byte order (little-endian on every supported platform).
"""

from typing_extensions import Buffer

def decode_alaw(payload: Buffer, /) -> bytearray:
    """A-law bytes -> int16 samples (2 bytes each), as rtp2ws.codec.g711.ALAW_TO_LINEAR."""

def decode_ulaw(payload: Buffer, /) -> bytearray:
    """µ-law bytes -> int16 samples (2 bytes each), as rtp2ws.codec.g711.ULAW_TO_LINEAR."""

def upsample2x(
    phases: Buffer, frac_bits: int, history: Buffer, samples: Buffer, /
) -> tuple[bytearray, bytes]:
    """One step of the 2x polyphase interpolator.

    phases: int32[2, K] taps in Q<frac_bits> (rtp2ws.codec.resample.PHASES);
    history, samples: int16.  With buf = history + samples, returns
    (out, new_history): out holds int16 y[2j], y[2j+1] for every j with
    K - 1 samples before buf[j + K - 1], y[2j+p] = round_half_up(
    sum_k phases[p, k] * buf[j + K - 1 - k] / 2**frac_bits) saturated to
    int16; new_history is the last K - 1 samples of buf (all of it if
    shorter).
    """

def simd_levels() -> tuple[str, ...]:
    """Kernels of upsample2x this CPU can run, from "scalar" up ("avx2", "avx512")."""

def get_simd() -> str:
    """The kernel upsample2x uses now (chosen at import; RTP2WS_NATIVE_SIMD caps it)."""

def set_simd(name: str, /) -> str:
    """Use kernel ``name`` from now on; returns the previous one."""
