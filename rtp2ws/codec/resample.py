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
from functools import partial
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


def _design_taps(half_length: int, beta: float, frac_bits: int, factor: int = 2) -> np.ndarray:
    """The Q``frac_bits`` prototype of the ``factor``-times interpolator (module doc):
    ``2 * factor * half_length - 1`` taps of ``sinc(d / factor) * kaiser(beta)``, zero
    at every non-zero multiple of ``factor``, centre tap exactly 1, each polyphase
    branch summing to exactly 1."""
    m, big_l = half_length, factor
    length = 2 * big_l * m - 1
    centre = big_l * m - 1
    d = np.arange(length) - centre
    off = d % big_l != 0
    # Gain L for the zero-stuffed input: L * (1 / L) * sinc(d / L).
    ideal = np.where(off, np.sinc(d / big_l), 0.0) * np.kaiser(length, beta)
    one = 1 << frac_bits
    taps = np.zeros(length, dtype=np.int64)
    taps[off] = np.round(ideal[off] * one).astype(np.int64)
    taps[centre] = one
    # Make every other polyphase branch (taps at d = p mod L) sum to exactly 1.0, the
    # rounding remainder going to its tap nearest the centre.  Branch L - p mirrors
    # branch p (same remainder), so symmetry survives; a branch that mirrors itself
    # (p = L / 2: the 2x filter's only one) has an even remainder, split between
    # its two taps next to the centre.
    for p in range(1, big_l):
        remainder = one - int(taps[d % big_l == p].sum())
        if 2 * p == big_l:
            taps[centre - p] += remainder // 2
            taps[centre + p] += remainder // 2
        else:
            taps[centre + (p if 2 * p < big_l else p - big_l)] += remainder
    return taps


def _polyphase(taps: np.ndarray, factor: int = 2) -> np.ndarray:
    padded = np.concatenate([[0], taps])  # length 2LM: centre at LM
    phases: np.ndarray = padded.reshape(-1, factor).T.astype(np.int32).copy()
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


class _Stateful:
    """The filter state both interpolators carry between calls (``_history``, the
    held-back input: native bytes or an int16 array, by ``backend``), read and set as
    ``state`` and cleared by ``reset``."""

    backend: str
    _history: np.ndarray | bytes     # the core's state (see ``_Core``)

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


class Upsampler2x(_Stateful):
    """Streaming 2x interpolator; state carried between calls so that
    concatenating process() outputs for any chunking + flush() equals one-shot output.

    ``backend`` is ``"native"`` or ``"numpy"``; ``None`` means ``BACKEND``.
    """

    delay: int = 2 * HALF_LENGTH
    """Group delay of the filter in 16 kHz samples (40 = 2.5 ms), compensated:
    ``process`` returns output up to this many samples behind its input, and
    ``flush`` returns the rest."""

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

    def __repr__(self) -> str:
        return f"Upsampler2x(backend={self.backend!r}, taps={len(TAPS)}, delay={self.delay})"


def upsample_2x(x: np.ndarray, backend: str | None = None) -> np.ndarray:
    """One-shot 8 kHz -> 16 kHz; ``len(result) == 2 * len(x)``."""
    upsampler = Upsampler2x(backend)
    out = upsampler.process(x)
    tail = upsampler.flush()
    return np.concatenate([out, tail]) if len(out) else tail


# -- other output rates: 8 kHz as it is, 24 and 48 kHz by 3x and 6x interpolation ------

IN_RATE = 8000
RATES = (8000, 16000, 24000, 48000)
"""The output rates a leg can be resampled to (``make_upsampler``)."""

FACTORS = (3, 6)
"""The interpolation factors of ``Upsampler``: 24 and 48 kHz."""

FILTERS: dict[int, tuple[np.ndarray, np.ndarray]] = {}
"""factor -> (prototype taps, polyphase taps [factor, K]), int32, read-only: the 3x
and 6x filters are designed as the 2x one is (``_design_taps``: the same
``HALF_LENGTH``, ``KAISER_BETA`` and ``FRAC_BITS``, so the same 5 ms span, the same
4 kHz cut-off and transition band in Hz, ``K = 2 * HALF_LENGTH`` taps per phase and the
same ``HALF_LENGTH`` input samples of delay), with ``2 * factor * HALF_LENGTH - 1`` taps."""
for _factor in (2, *FACTORS):
    _taps = _design_taps(HALF_LENGTH, KAISER_BETA, FRAC_BITS, _factor).astype(np.int32)
    _phases = _polyphase(_taps, _factor)
    _taps.flags.writeable = False
    _phases.flags.writeable = False
    FILTERS[_factor] = (_taps, _phases)
del _factor, _taps, _phases


def _numpy_interpolate(phases: np.ndarray, history: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``_numpy_upsample2x`` for any number of phases: every phase's dot product with
    every window of ``K`` samples as one matrix product in float64, which is exact here
    (each product of an int16 sample and a Q24 tap, and each partial sum of ``K`` of them,
    is an integer below 2**53), then rounded half up and saturated as in integers."""
    factor, k = phases.shape
    buf = np.concatenate([history, x]).astype(np.int16)
    n = len(buf) - (k - 1)
    if n <= 0:
        return _EMPTY, buf
    windows = np.lib.stride_tricks.sliding_window_view(buf.astype(np.float64), k)[:n]   # window j: buf[j : j + K]
    acc = (windows @ phases[:, ::-1].T.astype(np.float64)).astype(np.int64)              # (n, factor)
    acc += _ROUND
    acc >>= FRAC_BITS
    np.clip(acc, -32768, 32767, out=acc)
    return acc.astype(np.int16).reshape(-1), buf[n:].copy()


def _native_interpolate(factor: int, pairs: list[bytes], history: np.ndarray | bytes,
                        x: np.ndarray) -> tuple[np.ndarray, bytes]:
    """The C 2x core run once per pair of phases (``pairs``: int32[2, K] each, the last
    one padded with phase 0 when the count is odd) over the same input, interleaved:
    bit-identical to ``_numpy_interpolate`` (each output is the same integer sum)."""
    outs = []
    state = b""
    for pair in pairs:
        out, state = _native_core(pair, FRAC_BITS, history, x)  # type: ignore[arg-type, unused-ignore]
        outs.append(np.frombuffer(out, np.int16).reshape(-1, 2))
    return np.hstack(outs)[:, :factor].reshape(-1), state


class Upsampler(_Stateful):
    """Streaming ``factor``-times interpolator (3: 8 -> 24 kHz, 6: 8 -> 48 kHz) with the
    interface of ``Upsampler2x``: ``process``, ``silence``, ``flush``, ``state``,
    ``reset``, ``delay`` (``factor * HALF_LENGTH`` output samples, 2.5 ms, compensated).
    ``backend``: ``"native"`` (the C 2x core, a pair of phases at a time) or ``"numpy"``;
    None means ``BACKEND``.  Both give bit-identical output."""

    def __init__(self, factor: int, backend: str | None = None) -> None:
        if factor not in FACTORS:
            raise ValueError(f"Upsampler interpolates by one of {FACTORS}, not {factor}")
        backend = BACKEND if backend is None else backend
        if backend not in BACKENDS:
            raise ValueError(f"resampler backend {backend!r} is not available (have {BACKENDS})")
        self.factor = factor
        self.backend = backend
        self.delay = factor * HALF_LENGTH
        phases = FILTERS[factor][1]
        self.rate = IN_RATE * factor
        if backend == "native":
            order = list(range(factor)) + [0] * (factor % 2)
            pairs = [phases[order[i:i + 2]].tobytes() for i in range(0, len(order), 2)]
            self._core: Callable[[Any, np.ndarray], tuple[np.ndarray, np.ndarray | bytes]] = (
                partial(_native_interpolate, factor, pairs))
        else:
            self._core = partial(_numpy_interpolate, phases)
        self.reset()

    def process(self, x: np.ndarray) -> np.ndarray:
        """int16 samples at 8 kHz in -> int16 samples at ``factor`` x 8 kHz out."""
        x = np.asarray(x)
        if x.dtype != np.int16:
            raise ValueError(f"Upsampler expects int16 samples, got {x.dtype}")
        out, self._history = self._core(self._history, np.ascontiguousarray(x.reshape(-1)))
        return out

    def silence(self, n: int) -> np.ndarray:
        """``process(np.zeros(n))``, without the arithmetic once the held-back input is
        all zeros."""
        h = self._history
        held = np.frombuffer(h, np.int16) if type(h) is bytes else cast(np.ndarray, h)
        if len(held) == _STEADY and not held.any():
            return np.zeros(self.factor * n, dtype=np.int16)
        if n <= 2 * _STEADY:
            return self.process(np.zeros(n, dtype=np.int16))
        head = self.process(np.zeros(_STEADY, dtype=np.int16))
        out = np.zeros(len(head) + self.factor * (n - _STEADY), dtype=np.int16)
        out[:len(head)] = head
        return out

    def flush(self) -> np.ndarray:
        """Drain the held-back tail, then reset for a new stream."""
        out = self.process(np.zeros(HALF_LENGTH, dtype=np.int16))
        self.reset()
        return out

    def __repr__(self) -> str:
        return (f"Upsampler(factor={self.factor}, backend={self.backend!r}, taps={len(FILTERS[self.factor][0])}, "
                f"delay={self.delay})")


class Passthrough:
    """8 kHz out as it came in (``--rate 8000``: G.711's own rate, no filter), with the
    interface of ``Upsampler2x``."""

    delay = 0
    factor = 1
    rate = IN_RATE
    backend = "none"

    def process(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype != np.int16:
            raise ValueError(f"Passthrough expects int16 samples, got {x.dtype}")
        return x.reshape(-1)

    def silence(self, n: int) -> np.ndarray:
        return _ZEROS[:n] if n <= len(_ZEROS) else np.zeros(n, dtype=np.int16)

    def flush(self) -> np.ndarray:
        return _EMPTY

    @property
    def state(self) -> bytes:
        return b""

    @state.setter
    def state(self, value: bytes) -> None:
        if value:
            raise ValueError("8 kHz output has no filter state")

    def reset(self) -> None:
        pass

    def __repr__(self) -> str:
        return "Passthrough()"


class ThreeHalves:
    """16 -> 24 kHz (G.722's audio at ``--rate 24000``): the 3x interpolator (to 48 kHz),
    of which every other output sample is kept (its cut-off, the input's 8 kHz Nyquist
    frequency, is below the 12 kHz of the output's: nothing folds back).  The interface of
    ``Upsampler``; over a stream of an even number of samples, 3/2 as many out."""

    factor = 1.5

    def __init__(self, backend: str | None = None) -> None:
        self._up = Upsampler(3, backend)
        self.backend = self._up.backend
        self.delay = self._up.delay // 2
        self._made = 0          # 48 kHz samples made so far: which of the next ones are kept

    def _keep(self, y: np.ndarray) -> np.ndarray:
        out = y[self._made % 2::2]
        self._made += len(y)
        return np.ascontiguousarray(out)

    def process(self, x: np.ndarray) -> np.ndarray:
        return self._keep(self._up.process(x))

    def silence(self, n: int) -> np.ndarray:
        return self._keep(self._up.silence(n))

    def flush(self) -> np.ndarray:
        out = self._keep(self._up.flush())
        self._made = 0
        return out

    @property
    def state(self) -> bytes:
        return self._up.state

    @state.setter
    def state(self, value: bytes) -> None:
        self._up.state = value

    def reset(self) -> None:
        self._up.reset()
        self._made = 0

    def __repr__(self) -> str:
        return f"ThreeHalves(backend={self.backend!r})"


AnyUpsampler = Upsampler2x | Upsampler | Passthrough
AnyConverter = Upsampler2x | Upsampler | Passthrough | ThreeHalves


def make_upsampler(rate: int, backend: str | None = None) -> AnyUpsampler:
    """The streaming filter from 8 kHz to ``rate`` (one of ``RATES``)."""
    if rate == 16000:
        return Upsampler2x(backend)
    if rate == IN_RATE:
        return Passthrough()
    if rate in (24000, 48000):
        return Upsampler(rate // IN_RATE, backend)
    raise ValueError(f"the output rate must be one of {', '.join(map(str, RATES))}, not {rate}")


def upsample(x: np.ndarray, rate: int, backend: str | None = None) -> np.ndarray:
    """One-shot 8 kHz -> ``rate``: ``len(result) == rate // 8000 * len(x)``."""
    up = make_upsampler(rate, backend)
    out = up.process(x)
    tail = up.flush()
    return np.concatenate([out, tail]) if len(out) else np.asarray(tail)


def make_converter(source: int, rate: int, backend: str | None = None) -> AnyConverter:
    """The streaming filter from ``source`` Hz to ``rate`` (one of ``RATES``): 8 kHz by
    ``make_upsampler``; the same rate as it is; 16 kHz (G.722) to 48 kHz by 3x, to 24 kHz
    by ``ThreeHalves``."""
    if source == IN_RATE:
        return make_upsampler(rate, backend)
    if source == rate:
        return Passthrough()
    if source == 16000 and rate == 48000:
        return Upsampler(3, backend)
    if source == 16000 and rate == 24000:
        return ThreeHalves(backend)
    raise ValueError(f"no filter from {source} Hz to {rate} Hz")
