"""8 kHz -> 16 kHz: a streaming, fixed-point, polyphase FIR interpolator.

Filter design
-------------
The prototype is a half-band low-pass at the 16 kHz output rate: cut-off at
4 kHz, pass band 0-3400 Hz, stop band from 4600 Hz (the image of 3400 Hz).
It is a windowed sinc, ``h[d] = sinc(d / 2) * kaiser(beta)[d]`` for
``d = -(2M-1) .. 2M-1`` with ``M = HALF_LENGTH`` and ``beta = KAISER_BETA``,
scaled by the interpolation gain of 2, so it has ``4M - 1`` taps.  Being
half-band, every tap at an even non-zero ``d`` is exactly zero and the centre
tap is exactly 1: the even output samples *are* the input samples, and the odd
ones are interpolated by a symmetric ``2M``-tap filter.

Fixed point: taps are integers in Q``FRAC_BITS`` (``1.0 == 1 << FRAC_BITS``),
each phase summing to exactly ``1 << FRAC_BITS`` (the rounding remainder goes
to the two taps next to the centre) so the DC gain is exactly 1.  Every output
is ``sum(tap * sample)`` in 64-bit integers, then rounded half up
(``+ 1 << (FRAC_BITS - 1)`` and an arithmetic shift) and saturated to int16.
Integer arithmetic makes the output independent of how the input is chunked
and identical between the numpy code here and the C twin in
``rtp2ws._native``.

Polyphase form: ``PHASES[p, k]`` is tap ``2k + p`` of the prototype preceded by
one zero, so ``K = 2M`` taps per phase and ``y[2j + p] = sum_k PHASES[p, k] *
x[j - k]``.  The filter's group delay, ``delay == 2M`` output samples (``M``
input samples, 2.5 ms), is compensated: output sample ``2i`` lines up with
input sample ``i``.  ``process`` therefore holds back the last ``M`` input
samples until more input (or ``flush``) arrives; ``flush`` feeds ``M`` zeros so
that the total output is exactly twice the total input.  The signal is taken to
be zero before the first sample and after the last.

Backends: ``"native"`` (``rtp2ws._native.upsample2x``, native/resample.c) when
the extension is built and ``RTP2WS_NO_NATIVE`` is not set at import, else
``"numpy"`` (picked by ``rtp2ws.speedups``); ``BACKEND`` names the default.  Both give bit-identical output.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import numpy as np

from ..speedups import pick

__all__ = [
    "BACKEND",
    "BACKENDS",
    "FRAC_BITS",
    "HALF_LENGTH",
    "KAISER_BETA",
    "PHASES",
    "TAPS",
    "Upsampler2x",
    "upsample_2x",
]

HALF_LENGTH = 20  # M: 4M - 1 = 79 prototype taps, K = 2M = 40 per phase
KAISER_BETA = 9.0  # best image rejection for M = 20 (about -90 dB at 4.6 kHz)
FRAC_BITS = 24  # taps in Q24; accumulator stays below 2**41


def _design_taps(half_length: int, beta: float, frac_bits: int) -> np.ndarray:
    m = half_length
    length = 4 * m - 1
    centre = 2 * m - 1
    d = np.arange(length) - centre
    odd = d % 2 != 0
    # Gain 2 for the zero-stuffed input: 2 * 0.5 * sinc(d / 2).
    ideal = np.where(odd, np.sinc(d / 2), 0.0) * np.kaiser(length, beta)
    one = 1 << frac_bits
    taps = np.zeros(length, dtype=np.int64)
    taps[odd] = np.round(ideal[odd] * one).astype(np.int64)
    taps[centre] = one
    # The odd taps form one polyphase branch; make it sum to exactly 1.0.  The
    # remainder is even (the taps are symmetric), so symmetry survives.
    remainder = one - int(taps[odd].sum())
    taps[centre - 1] += remainder // 2
    taps[centre + 1] += remainder // 2
    return taps


def _polyphase(taps: np.ndarray) -> np.ndarray:
    padded = np.concatenate([[0], taps])  # length 4M: even, centre at 2M
    phases: np.ndarray = padded.reshape(-1, 2).T.astype(np.int32).copy()
    return phases


TAPS: np.ndarray = _design_taps(HALF_LENGTH, KAISER_BETA, FRAC_BITS).astype(np.int32)
PHASES: np.ndarray = _polyphase(TAPS)  # int32, shape (2, K)
TAPS.flags.writeable = False
PHASES.flags.writeable = False

_K = PHASES.shape[1]
_ROUND = 1 << (FRAC_BITS - 1)
_EMPTY = np.zeros(0, dtype=np.int16)
_INT16 = _EMPTY.dtype
# The numpy path skips zero taps (all but one of phase 0); zeros add nothing,
# so the result is the same as the full sum.
_NONZERO = [
    [(k, int(PHASES[p, k])) for k in range(_K) if PHASES[p, k] != 0] for p in range(2)
]


def _numpy_upsample2x(history: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Filter ``history + x``; return (output, new history).

    An output pair is produced for every buffered sample that has ``K - 1``
    samples before it; the last ``K - 1`` samples become the new history.
    """
    buf = np.concatenate([history, x]).astype(np.int64)
    n = len(buf) - (_K - 1)
    if n <= 0:
        return _EMPTY, buf.astype(np.int16)
    out = np.empty((n, 2), dtype=np.int64)
    for p in range(2):
        acc = np.full(n, _ROUND, dtype=np.int64)
        for k, tap in _NONZERO[p]:
            start = _K - 1 - k
            acc += tap * buf[start : start + n]
        out[:, p] = acc
    out >>= FRAC_BITS  # arithmetic shift: floor, so with _ROUND, half up
    np.clip(out, -32768, 32767, out=out)
    return out.astype(np.int16).reshape(-1), buf[n:].astype(np.int16)


# A core filters (history, int16 samples) -> (int16 output, new history).  The history
# is whatever the same core returned last time (an array, or the native core's bytes).
_Core = Callable[[Any, np.ndarray], tuple[np.ndarray, np.ndarray | bytes]]
_CORES: dict[str, _Core]

_native, BACKENDS = pick("resample")
BACKEND = BACKENDS[0]
_PHASES_BYTES = PHASES.tobytes()

if _native is not None:
    # the extension pick() chose, imported by name so that its stub (_native.pyi) types it
    from .._native import upsample2x as _native_core

    def _native_upsample2x(
        history: np.ndarray | bytes, x: np.ndarray
    ) -> tuple[np.ndarray, bytes]:
        # The new history is only ever passed back in, and the core takes any
        # buffer, so it stays the bytes object the core made: wrapping it in
        # an array would cost a good part of a 20 ms chunk's filtering time.
        # numpy's stubs give ndarray its __buffer__ only for Python >= 3.12, so before that
        # mypy does not see an array as a Buffer (it is one: the core reads it as such)
        out, state = _native_core(_PHASES_BYTES, FRAC_BITS, history, x)  # type: ignore[arg-type, unused-ignore]
        return np.frombuffer(out, np.int16), state

    _CORES = {"native": _native_upsample2x, "numpy": _numpy_upsample2x}
else:
    _CORES = {"numpy": _numpy_upsample2x}


_STEADY = 2 * HALF_LENGTH - 1     # input samples of state between two calls, once primed
# Silence handed out by ``silence``: one read-only buffer of a minute at 16 kHz, shared
# (views of it cost nothing; untouched zero pages take no memory).
_ZEROS = np.zeros(60 * 16000, dtype=np.int16)
_ZEROS.flags.writeable = False


class Upsampler2x:
    """Streaming 2x interpolator; state carried between calls so that
    concatenating process() outputs for any chunking + flush() equals one-shot output.

    ``backend`` is ``"native"`` or ``"numpy"``; ``None`` means ``BACKEND``.
    """

    delay: int = 2 * HALF_LENGTH
    """Group delay of the filter in 16 kHz samples (40 = 2.5 ms), compensated:
    ``process`` returns output up to this many samples behind its input, and
    ``flush`` returns the rest."""

    _history: np.ndarray | bytes     # the core's state (see ``_Core``)

    def __init__(self, backend: str | None = None) -> None:
        backend = BACKEND if backend is None else backend
        try:
            self._core = _CORES[backend]
        except KeyError:
            raise ValueError(
                f"resampler backend {backend!r} is not available (have {BACKENDS})"
            ) from None
        self.backend = backend
        self.reset()

    def process(self, x: np.ndarray) -> np.ndarray:
        """int16 samples at 8 kHz in -> int16 samples at 16 kHz out."""
        if type(x) is np.ndarray and x.dtype is _INT16 and x.ndim == 1 and x.flags.c_contiguous:
            out, self._history = self._core(self._history, x)      # the usual case, checked cheaply
            return out
        x = np.asarray(x)
        if x.dtype != np.int16:
            raise ValueError(f"Upsampler2x expects int16 samples, got {x.dtype}")
        if x.ndim != 1:
            x = x.reshape(-1)
        out, self._history = self._core(self._history, np.ascontiguousarray(x))
        return out

    def silence(self, n: int) -> np.ndarray:
        """``process(np.zeros(n))``, with the arithmetic only while the held-back input
        is not yet all zeros (a gap's first samples): after that the output is zeros
        and the state stays as it is.  The result may be a read-only view."""
        h = self._history        # K - 1 samples once primed (bytes from the native core)
        if type(h) is bytes:
            steady = h.count(0) == len(h) == 2 * _STEADY
        else:
            h = cast(np.ndarray, h)
            steady = len(h) == _STEADY and not h.any()
        if steady:
            return _ZEROS[:2 * n] if 2 * n <= len(_ZEROS) else np.zeros(2 * n, dtype=np.int16)
        if n <= 2 * _STEADY:
            return self.process(np.zeros(n, dtype=np.int16))
        head = self.process(np.zeros(_STEADY, dtype=np.int16))   # the filter runs out; the rest is zeros
        out = np.zeros(len(head) + 2 * (n - _STEADY), dtype=np.int16)
        out[:len(head)] = head
        return out

    def flush(self) -> np.ndarray:
        """Drain the held-back tail, then reset for a new stream."""
        out, _ = self._core(self._history, np.zeros(HALF_LENGTH, dtype=np.int16))
        self.reset()
        return out

    @property
    def state(self) -> bytes:
        """The filter's state (the held-back input, native int16): what a later
        ``process`` continues from; set it to continue another filter's stream (the
        fast path's, for a leg it streamed)."""
        h = self._history
        return h if type(h) is bytes else np.asarray(h, dtype=np.int16).tobytes()

    @state.setter
    def state(self, value: bytes) -> None:
        if len(value) % 2 or len(value) // 2 > _STEADY:
            raise ValueError(f"a resampler state is at most {_STEADY} int16 samples, not {len(value)} bytes")
        self._history = bytes(value) if self.backend == "native" else np.frombuffer(value, np.int16).copy()

    def reset(self) -> None:
        """Forget all input: the next sample starts a new stream."""
        # Zeros standing for x[-M+1 .. -1]: with them the first output pair
        # (for input 0) comes out as soon as x[M] is in.
        self._history = np.zeros(HALF_LENGTH - 1, dtype=np.int16)

    def __repr__(self) -> str:
        return f"Upsampler2x(backend={self.backend!r}, taps={len(TAPS)}, delay={self.delay})"


def upsample_2x(x: np.ndarray, backend: str | None = None) -> np.ndarray:
    """One-shot 8 kHz -> 16 kHz; ``len(result) == 2 * len(x)``."""
    upsampler = Upsampler2x(backend)
    out = upsampler.process(x)
    tail = upsampler.flush()
    return np.concatenate([out, tail]) if len(out) else tail
