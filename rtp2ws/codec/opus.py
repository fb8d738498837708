"""Opus (RFC 6716) through libopus: decoded straight at the output rate, mono.

RTP (RFC 7587) carries one Opus packet a payload with a dynamic payload type, an RTP clock
of 48000 Hz whatever the audio's bandwidth, and ``opus/48000/2`` in SDP even for mono.
libopus decodes at 8, 12, 16, 24 or 48 kHz, so ``OpusDecoder(rate)`` decodes at the
leg's output rate with no resampling, and with one channel (a stereo stream is mixed
down by the decoder itself).  A packet's duration comes from its TOC byte
(``opus_packet_get_nb_samples``): 2.5 to 120 ms.

Losses: ``recover`` decodes the in-band forward error correction (LBRR) that the packet
after a lost one may carry (``decode_fec``; without any, libopus conceals instead);
``conceal`` is libopus's packet loss concealment.  DTX: a sender with DTX stops sending in
silence (a packet every 400 ms at most), the RTP timestamp jumping with no sequence gap;
``fill`` runs the decoder over the gap as over the frames not sent, as a receiver does.

``OpusEncoder`` (libopus's encoder) makes the test captures.
"""

from __future__ import annotations

import ctypes
from functools import cache

import numpy as np

from .clib import load

__all__ = ["CLOCK", "OpusDecoder", "OpusEncoder"]

CLOCK = 48000
RATES = (8000, 12000, 16000, 24000, 48000)
MAX_MS = 120               # the longest packet
_OK = 0
_RESET_STATE = 4028
_SET_BITRATE = 4002
_SET_INBAND_FEC = 4012
_SET_PACKET_LOSS_PERC = 4014
_SET_DTX = 4016
_APPLICATION_VOIP = 2048

_i16p = ctypes.POINTER(ctypes.c_int16)


@cache
def _lib() -> ctypes.CDLL:
    """The library, its functions typed (once)."""
    lib = load("opus")
    lib.opus_decoder_create.restype = ctypes.c_void_p
    lib.opus_decoder_create.argtypes = [ctypes.c_int32, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
    lib.opus_decoder_destroy.argtypes = [ctypes.c_void_p]
    lib.opus_decode.restype = ctypes.c_int
    lib.opus_decode.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int32, _i16p, ctypes.c_int,
                                ctypes.c_int]
    lib.opus_packet_get_nb_samples.restype = ctypes.c_int
    lib.opus_packet_get_nb_samples.argtypes = [ctypes.c_char_p, ctypes.c_int32, ctypes.c_int32]
    lib.opus_strerror.restype = ctypes.c_char_p
    lib.opus_strerror.argtypes = [ctypes.c_int]
    lib.opus_encoder_create.restype = ctypes.c_void_p
    lib.opus_encoder_create.argtypes = [ctypes.c_int32, ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
    lib.opus_encoder_destroy.argtypes = [ctypes.c_void_p]
    lib.opus_encode.restype = ctypes.c_int32
    lib.opus_encode.argtypes = [ctypes.c_void_p, _i16p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int32]
    return lib


def _error(lib: ctypes.CDLL, code: int) -> str:
    return (lib.opus_strerror(code) or b"?").decode()


class OpusDecoder:
    """One stream's Opus decoder: packets in, mono int16 at ``rate`` out."""

    name = "OPUS"
    has_fec = True

    def __init__(self, rate: int = 48000) -> None:
        if rate not in RATES:
            raise ValueError(f"Opus decodes at one of {RATES}, not {rate}")
        self.rate = rate
        self._lib = _lib()
        err = ctypes.c_int(0)
        self._dec = self._lib.opus_decoder_create(rate, 1, ctypes.byref(err))
        if not self._dec or err.value != _OK:
            raise MemoryError(f"opus_decoder_create: {_error(self._lib, err.value)}")
        self._buf = np.empty(MAX_MS * rate // 1000, dtype=np.int16)
        self._ptr = self._buf.ctypes.data_as(_i16p)
        self._last_ms = 20         # the last packet's duration (concealment goes in such steps)

    def reset(self) -> None:
        self._lib.opus_decoder_ctl(ctypes.c_void_p(self._dec), ctypes.c_int(_RESET_STATE))   # variadic: typed by hand

    def duration(self, payload: bytes) -> int:
        """The packet's duration in 8 kHz units, from its TOC; ValueError if it is not Opus."""
        n = self._lib.opus_packet_get_nb_samples(payload, len(payload), 8000) if payload else -4
        if n <= 0:
            raise ValueError(f"not an Opus packet: {_error(self._lib, n) if n < 0 else 'no audio'}")
        return int(n)

    def decode(self, payload: bytes) -> np.ndarray:
        n = self._lib.opus_decode(self._dec, payload, len(payload), self._ptr, len(self._buf), 0)
        if n < 0:
            raise ValueError(f"opus_decode: {_error(self._lib, n)}")
        self._last_ms = max(n * 1000 // self.rate, 10)
        return self._buf[:n].copy()

    def _plc(self, ticks: int, payload: bytes | None = None) -> np.ndarray:
        """``ticks`` (8 kHz units) of concealment, or with ``payload`` the FEC it carries
        for the audio just before it (libopus wants the exact duration missing)."""
        want = ticks * self.rate // 8000
        parts = []
        while want > 0:
            step = min(want, len(self._buf), self._last_ms * self.rate // 1000)
            step -= step % (self.rate // 400) or 0      # a multiple of 2.5 ms
            if step <= 0:
                step = want
            if payload is None:
                n = self._lib.opus_decode(self._dec, None, 0, self._ptr, step, 0)
            else:
                n = self._lib.opus_decode(self._dec, payload, len(payload), self._ptr, step, 1)
            if n <= 0:
                break
            parts.append(self._buf[:n].copy())
            want -= n
        out = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)
        total = ticks * self.rate // 8000
        if len(out) < total:
            out = np.concatenate([out, np.zeros(total - len(out), dtype=np.int16)])
        return out[:total]

    def conceal(self, ticks: int) -> np.ndarray | None:
        return self._plc(ticks)

    def fill(self, ticks: int) -> np.ndarray | None:
        """A DTX gap: the decoder runs on as over the frames the sender did not send."""
        return self._plc(ticks)

    def recover(self, payload: bytes, ticks: int) -> np.ndarray | None:
        """The ``ticks`` before ``payload``, lost, from its in-band FEC (concealed by libopus
        where it has none)."""
        return self._plc(ticks, payload)

    def __del__(self) -> None:
        if getattr(self, "_dec", None):
            self._lib.opus_decoder_destroy(self._dec)
            self._dec = None

    def __repr__(self) -> str:
        return f"OpusDecoder(rate={self.rate})"


class OpusEncoder:
    """libopus's encoder (VoIP application) at ``rate`` with ``channels``; ``fec`` turns on
    in-band FEC (for ``loss_perc`` percent of loss), ``dtx`` discontinuous transmission."""

    def __init__(self, rate: int = 48000, channels: int = 1, *, bitrate: int = 24000, fec: bool = False,
                 loss_perc: int = 0, dtx: bool = False) -> None:
        self._lib = _lib()
        self.channels = channels
        err = ctypes.c_int(0)
        self._enc = self._lib.opus_encoder_create(rate, channels, _APPLICATION_VOIP, ctypes.byref(err))
        if not self._enc or err.value != _OK:
            raise MemoryError(f"opus_encoder_create: {_error(self._lib, err.value)}")
        ctl = self._lib.opus_encoder_ctl
        for request, value in ((_SET_BITRATE, bitrate), (_SET_INBAND_FEC, int(fec)),
                               (_SET_PACKET_LOSS_PERC, loss_perc), (_SET_DTX, int(dtx))):
            # variadic: its arguments typed by hand
            ret = ctl(ctypes.c_void_p(self._enc), ctypes.c_int(request), ctypes.c_int32(value))
            if ret != _OK:
                raise ValueError(f"opus_encoder_ctl({request}, {value}): {_error(self._lib, ret)}")

    def encode(self, pcm: np.ndarray) -> bytes:
        """One frame (interleaved when stereo: 2.5 to 60 ms) -> one packet (a DTX frame is 1 or 2 bytes)."""
        x = np.ascontiguousarray(pcm, dtype=np.int16)
        out = ctypes.create_string_buffer(4000)
        n = self._lib.opus_encode(self._enc, x.ctypes.data_as(_i16p), len(x) // self.channels, out, 4000)
        if n < 0:
            raise ValueError(f"opus_encode: {_error(self._lib, n)}")
        return out.raw[:n]

    def __del__(self) -> None:
        if getattr(self, "_enc", None):
            self._lib.opus_encoder_destroy(self._enc)
            self._enc = None
