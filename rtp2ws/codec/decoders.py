"""The decoders of the codecs beside G.711 (which the leg decodes by table, ``codec.g711``):
G.722 (``codec.g722``), G.729/G.729A with Annex B (``codec.g729``) and Opus (``codec.opus``),
behind one interface, ``Decoder``.

Durations are counted in 8 kHz units (``TICK``): every codec's packets are whole
multiples of 1/8000 s (G.722: a byte; G.729: 80 a frame; Opus: 20 per 2.5 ms), so a leg's
timeline keeps one unit whatever its codecs.  Each decoder gives audio at its own
``rate``: G.729 at 8 kHz, G.722 at 16 kHz (8 kHz when the output is 8 kHz), Opus at the
output rate; the leg resamples from that rate.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from .clib import CodecUnavailable

__all__ = ["CodecUnavailable", "Decoder", "SUPPORTED", "TICK", "make_decoder"]

TICK = 8000           # the unit of durations: 1/8000 s


class Decoder(Protocol):
    """One stream's decoder (stateful: fed its packets in order; ``reset`` for a new stream)."""

    name: str
    rate: int         # of the audio it gives
    has_fec: bool     # ``recover`` can give the audio of a lost packet from the next one

    def duration(self, payload: bytes) -> int:
        """The payload's duration in 8 kHz units; ValueError when it is malformed."""
        ...

    def decode(self, payload: bytes) -> np.ndarray:
        """int16 audio at ``rate``; ValueError when it cannot be decoded."""
        ...

    def conceal(self, ticks: int) -> np.ndarray | None:
        """The codec's own concealment of ``ticks`` lost; None when it has none."""
        ...

    def fill(self, ticks: int) -> np.ndarray | None:
        """A gap of ``ticks`` with nothing lost (DTX): the codec's comfort noise, or None (silence)."""
        ...

    def recover(self, payload: bytes, ticks: int) -> np.ndarray | None:
        """The ``ticks`` lost just before ``payload`` from its forward error correction; None when none."""
        ...

    def reset(self) -> None:
        ...


# SDP encoding names (upper case, as signalling.sdp gives them) -> codec
SUPPORTED = {"G722": "G722", "G729": "G729", "G729A": "G729", "OPUS": "OPUS"}


def make_decoder(name: str, rate: int) -> Decoder:
    """A decoder for the codec ``name`` (a key of ``SUPPORTED``) whose audio ends up at
    ``rate``; CodecUnavailable when its library is not installed."""
    codec = SUPPORTED[name]
    if codec == "G722":
        from .g722 import G722Decoder
        return G722Decoder(8000 if rate == 8000 else 16000)
    if codec == "G729":
        from .g729 import G729Decoder
        return G729Decoder()
    from .opus import OpusDecoder
    return OpusDecoder(rate)
