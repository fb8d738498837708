"""Quality and speed of rtp2ws.resample.Upsampler2x, with soxr beside it.

    python benchmarks/resampler_quality.py

Figures, all from int16 tones of amplitude 10000, one second at 8 kHz, run
through each resampler with int16 output and measured by a least-squares fit of
the tone (edges skipped):

- passband: worst |gain| in dB for tones every 50 Hz from 50 to 3400 Hz;
- image 7k: the 7 kHz image of a 1 kHz tone, in dB relative to the tone;
- worst image: the loudest image (at 8000 - f >= 4600 Hz) over those tones;
- throughput in input Msamples/s, one-shot on 60 s of audio and streaming in
  160-sample (20 ms) chunks as the pipeline does.

soxr is only a reference here (``pip install .[bench]``); rtp2ws does not use it.
"""

from __future__ import annotations

import time

import numpy as np

from rtp2ws import resample
from rtp2ws.resample import Upsampler2x, upsample_2x

FS_IN, FS_OUT = 8000, 16000
AMPLITUDE = 10000
SKIP = 400  # output samples ignored at each edge (transients, soxr's delay)
TONES = np.arange(50, 3401, 50)


def tone(freq: float, n: int = FS_IN) -> np.ndarray:
    t = np.arange(n) / FS_IN
    return np.round(AMPLITUDE * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def amplitude_at(y: np.ndarray, freq: float, fs: int, skip: int) -> float:
    y = np.asarray(y, dtype=np.float64)[skip:-skip]
    t = (np.arange(len(y)) + skip) / fs
    basis = np.column_stack([np.cos(2 * np.pi * freq * t), np.sin(2 * np.pi * freq * t)])
    coef, *_ = np.linalg.lstsq(basis, y, rcond=None)
    return float(np.hypot(*coef))


def db(ratio: float) -> float:
    return 20 * np.log10(max(ratio, 1e-12))


def quality(one_shot) -> tuple[float, float, float]:
    """(max |passband dB|, 1 kHz image at 7 kHz dB, worst image >= 4.6 kHz dB)."""
    worst_pass = 0.0
    worst_image = -np.inf
    image_7k = None
    for freq in TONES:
        x = tone(freq)
        y = one_shot(x)
        a_in = amplitude_at(x, freq, FS_IN, SKIP // 2)
        a_out = amplitude_at(y, freq, FS_OUT, SKIP)
        a_image = amplitude_at(y, FS_IN - freq, FS_OUT, SKIP)
        worst_pass = max(worst_pass, abs(db(a_out / a_in)))
        level = db(a_image / a_out)
        worst_image = max(worst_image, level)
        if freq == 1000:
            image_7k = level
    return worst_pass, image_7k, worst_image


def best_time(fn, repeat: int = 3) -> float:
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def throughput(one_shot, make_stream, seconds: int = 60) -> tuple[float, float]:
    """(one-shot, 160-sample streaming) in input Msamples/s."""
    x = np.random.default_rng(1).integers(-20000, 20000, FS_IN * seconds).astype(np.int16)
    whole = len(x) / best_time(lambda: one_shot(x)) / 1e6
    chunks = np.split(x, len(x) // 160)

    def streamed():
        process, finish = make_stream()
        for chunk in chunks:
            process(chunk)
        finish()

    return whole, len(x) / best_time(streamed) / 1e6


def ours(backend: str):
    def one_shot(x):
        return upsample_2x(x, backend)

    def make_stream():
        up = Upsampler2x(backend)
        return up.process, up.flush

    return one_shot, make_stream


def soxr_pair(quality_name: str):
    import soxr

    def one_shot(x):
        return soxr.resample(x, FS_IN, FS_OUT, quality=quality_name)

    def make_stream():
        stream = soxr.ResampleStream(FS_IN, FS_OUT, 1, dtype="int16", quality=quality_name)
        return stream.resample_chunk, lambda: stream.resample_chunk(np.zeros(0, np.int16), last=True)

    return one_shot, make_stream


def main() -> None:
    rows = []
    for backend in resample.BACKENDS:
        rows.append((f"Upsampler2x ({backend})", *ours(backend)))
    try:
        import soxr  # noqa: F401
    except ImportError:
        print("(soxr not installed: pip install soxr for the reference rows)")
    else:
        for q in ("HQ", "VHQ"):
            rows.append((f"soxr {q}", *soxr_pair(q)))
    if "native" not in resample.BACKENDS:
        print("(rtp2ws._native not built or disabled: numpy backend only)")

    print(
        f"Upsampler2x: {len(resample.TAPS)} taps (Kaiser beta {resample.KAISER_BETA}, "
        f"half-band, Q{resample.FRAC_BITS}), {resample.PHASES.shape[1]} per phase, "
        f"delay {Upsampler2x.delay} samples at 16 kHz"
    )
    header = (
        f"{'resampler':<24}{'passband':>10}{'image 7k':>10}{'worst img':>11}"
        f"{'one-shot':>11}{'stream 160':>12}"
    )
    print(header)
    print(f"{'':<24}{'max |dB|':>10}{'dB':>10}{'>=4.6k dB':>11}{'Msamp/s':>11}{'Msamp/s':>12}")
    print("-" * len(header))
    for name, one_shot, make_stream in rows:
        passband, image_7k, worst_image = quality(one_shot)
        whole, streamed = throughput(one_shot, make_stream)
        print(
            f"{name:<24}{passband:>10.4f}{image_7k:>10.1f}{worst_image:>11.1f}"
            f"{whole:>11.1f}{streamed:>12.1f}"
        )


if __name__ == "__main__":
    main()
