"""Codec streams for tests: speech (tests/speech.py) encoded by the reference encoders
(spandsp's G.722, bcg729, libopus), cut into RTP payloads, and what the reference
decoders make of them (the expected audio)."""

from __future__ import annotations

import numpy as np

from rtp2ws.codec.g722 import G722Decoder, G722Encoder
from rtp2ws.codec.g729 import G729Decoder, G729Encoder
from rtp2ws.codec.opus import OpusDecoder, OpusEncoder
from rtp2ws.codec.resample import make_converter

from speech import speech


def convert(x: np.ndarray, source: int, rate: int) -> np.ndarray:
    """``x`` at ``source`` Hz through the leg's filter to ``rate``, in one go."""
    f = make_converter(source, rate)
    return np.concatenate([f.process(x), f.flush()])


def g722_payloads(packet_ms: int = 20) -> list[bytes]:
    x = speech(16000)
    step = 8 * packet_ms
    bits = G722Encoder().encode(x[:len(x) // (2 * step) * 2 * step])
    return [bits[i:i + step] for i in range(0, len(bits), step)]


def g722_reference(payloads: list[bytes], rate: int) -> np.ndarray:
    dec = G722Decoder(8000 if rate == 8000 else 16000)
    return convert(dec.decode(b"".join(payloads)), dec.rate, rate)


def g729_frames(vad: bool, pause_s: float = 1.5) -> list[bytes]:
    """10 ms frames of speech (with VAD: speech, a faint pause, speech): 10 bytes, a
    2-byte SID frame, or b"" for a frame not sent."""
    x = speech(8000)
    if vad:
        pause = np.random.default_rng(7).normal(0, 30, int(pause_s * 8000)).astype(np.int16)
        x = np.concatenate([x, pause, x])
    enc = G729Encoder(vad=vad)
    return [enc.encode_frame(x[i:i + 80]) for i in range(0, len(x) // 80 * 80, 80)]


def g729_packets(frames: list[bytes]) -> list[tuple[bytes, int]]:
    """20 ms packets of two frames; a SID frame ends its packet, and so does a frame not
    sent: [(payload, 8 kHz units not sent before it)]."""
    out, cur, skip = [], [], 0
    for f in frames:
        if not f:
            if cur:
                out.append((b"".join(cur), skip))
                cur, skip = [], 0
            skip += 80
            continue
        cur.append(f)
        if len(cur) == 2 or len(f) == 2:
            out.append((b"".join(cur), skip))
            cur, skip = [], 0
    if cur:
        out.append((b"".join(cur), skip))
    return out


def g729_reference(frames: list[bytes], lost: tuple[int, ...] = ()) -> np.ndarray:
    """bcg729 fed every frame in order: an erased frame for each one not sent or lost (8 kHz)."""
    dec = G729Decoder()
    return np.concatenate([dec.decode(f) if f and i not in lost else dec.conceal(80)
                           for i, f in enumerate(frames)])


def opus_payloads(channels: int = 1, pause_s: float = 0.0, **kw) -> list[bytes]:
    """20 ms Opus packets of speech (stereo: the speech left, half of it right)."""
    x = speech(48000)
    if pause_s:
        x = np.concatenate([x, np.zeros(int(pause_s * 48000), np.int16), x])
    x = x[:len(x) // 960 * 960]
    src = x if channels == 1 else np.stack([x, x // 2], 1).reshape(-1)
    enc = OpusEncoder(48000, channels, **kw)
    return [enc.encode(src[i * channels:(i + 960) * channels]) for i in range(0, len(x), 960)]


def opus_reference(payloads: list[bytes], rate: int, lost: tuple[int, ...] = ()) -> np.ndarray:
    """libopus at ``rate``, mono: a lost packet followed by one that arrived is
    recovered from that one's FEC (single losses only)."""
    dec = OpusDecoder(rate)
    out = []
    for i, p in enumerate(payloads):
        if i in lost:
            part = dec.recover(payloads[i + 1], 160)
            assert part is not None
            out.append(part)
        else:
            out.append(dec.decode(p))
    return np.concatenate(out)
