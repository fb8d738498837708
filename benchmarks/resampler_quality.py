"""Quality and speed of rtp2ws.codec.resample.Upsampler2x, with soxr beside it.

    python benchmarks/resampler_quality.py [--baseline OLD_NATIVE.so ...]

Figures, all from int16 tones of amplitude 10000, one second at 8 kHz, run
through each resampler with int16 output and measured by a least-squares fit of
the tone (edges skipped):

- passband: worst |gain| in dB for tones every 50 Hz from 50 to 3400 Hz;
- image 7k: the 7 kHz image of a 1 kHz tone, in dB relative to the tone;
- worst image: the loudest image (at 8000 - f >= 4600 Hz) over those tones;
- throughput in INPUT (8 kHz) Msamples/s, so output samples/s are twice that:
  one-shot on 60 s of random audio, and streaming the same audio through
  ``Upsampler2x.process`` in 160-sample (20 ms, as the pipeline does) and
  8000-sample chunks; best of several runs.

The native backend gets a row per kernel of its C core (``scalar``, ``avx2``,
``avx512``: those this CPU runs; ``*`` marks the one used by default).
``--baseline PATH`` adds a row for another build of ``rtp2ws._native`` (for
example the one before a change, driven the way the Python side drove it then),
so that before and after are measured in the same run.  To build the committed
version of the C core next to the working tree's::

    mkdir -p /tmp/old && for f in _native.c g711.c resample.c native.h; do
        git show HEAD:native/$f > /tmp/old/$f; done
    gcc -O3 -fPIC -shared -o /tmp/old_native.so /tmp/old/_native.c /tmp/old/g711.c /tmp/old/resample.c \\
        -I"$(python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
    python benchmarks/resampler_quality.py --baseline /tmp/old_native.so

soxr is only a reference here (``pip install .[bench]``); rtp2ws does not use it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import time

import numpy as np

from rtp2ws.codec import resample
from rtp2ws.codec.resample import Upsampler2x

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


STREAM_CHUNKS = (160, 8000)


def throughput(rows, rounds: int = 5, seconds: int = 60) -> list[list[float]]:
    """Per row [one-shot, streaming in each of STREAM_CHUNKS], in input
    Msamples/s: the best of `rounds` times two runs.  The rounds go round all
    rows, so that on a noisy machine every row sees the same noise; within a
    round each task runs twice in a row, so that one run finds the memory
    allocator warm (one-shot output arrays are ~2 MB each, and fresh pages
    for them can cost as much as the filtering)."""
    x = np.random.default_rng(1).integers(-20000, 20000, FS_IN * seconds).astype(np.int16)
    pieces = {size: np.split(x, len(x) // size) for size in STREAM_CHUNKS}

    def streamed(make_stream, chunks):
        process, finish = make_stream()
        for chunk in chunks:
            process(chunk)
        finish()

    tasks = [
        [lambda one_shot=one_shot: one_shot(x)]
        + [lambda m=make_stream, c=pieces[size]: streamed(m, c) for size in STREAM_CHUNKS]
        for _, one_shot, make_stream, _ in rows
    ]
    best = [[np.inf] * len(t) for t in tasks]
    for _ in range(rounds):
        for i, (row, row_tasks) in enumerate(zip(rows, tasks)):
            with simd(row[3]):
                for k, task in enumerate(row_tasks):
                    for _ in range(2):
                        start = time.perf_counter()
                        task()
                        best[i][k] = min(best[i][k], time.perf_counter() - start)
    return [[len(x) / t / 1e6 for t in row_best] for row_best in best]


def ours(backend: str, core=None):
    """Upsampler2x with the given backend; core replaces its core function
    (for --baseline: another build of the C core)."""

    def make():
        up = Upsampler2x(backend)
        if core is not None:
            up._core = core
        return up

    def one_shot(x):
        up = make()
        out = up.process(x)
        return np.concatenate([out, up.flush()])

    def make_stream():
        up = make()
        return up.process, up.flush

    return one_shot, make_stream


def load_baseline(path: str):
    """Another build of rtp2ws._native, and a core function for Upsampler2x
    that drives it as resample.py did before the native history became bytes
    (so the row measures that version as it was)."""
    spec = importlib.util.spec_from_file_location("rtp2ws._native", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path} as rtp2ws._native")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    phases, frac_bits = resample.PHASES.tobytes(), resample.FRAC_BITS

    def core(history, x):
        out, state = module.upsample2x(phases, frac_bits, history, x)
        return np.frombuffer(out, np.int16), np.frombuffer(state, np.int16)

    return core


@contextlib.contextmanager
def simd(level: str | None):
    """The native core's kernel forced to level (None: left as it is)."""
    if level is None:
        yield
        return
    from rtp2ws import _native

    previous = _native.set_simd(level)
    try:
        yield
    finally:
        _native.set_simd(previous)


def soxr_pair(quality_name: str):
    import soxr

    def one_shot(x):
        return soxr.resample(x, FS_IN, FS_OUT, quality=quality_name)

    def make_stream():
        stream = soxr.ResampleStream(FS_IN, FS_OUT, 1, dtype="int16", quality=quality_name)
        return stream.resample_chunk, lambda: stream.resample_chunk(np.zeros(0, np.int16), last=True)

    return one_shot, make_stream


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", action="append", default=[], metavar="PATH",
                        help="another build of rtp2ws._native to measure beside this one")
    args = parser.parse_args()

    rows = []  # (name, one_shot, make_stream, simd level or None)
    if "native" in resample.BACKENDS:
        from rtp2ws import _native

        default = _native.get_simd()
        for level in reversed(_native.simd_levels()):
            mark = "*" if level == default else ""
            rows.append((f"Upsampler2x (native {level}{mark})", *ours("native"), level))
    for path in args.baseline:
        name = f"baseline {path.rsplit('/', 1)[-1]}"[:29]
        rows.append((name, *ours("native", load_baseline(path)), None))
    rows.append(("Upsampler2x (numpy)", *ours("numpy"), None))
    try:
        import soxr  # noqa: F401
    except ImportError:
        print("(soxr not installed: pip install soxr for the reference rows)")
    else:
        for q in ("HQ", "VHQ"):
            rows.append((f"soxr {q}", *soxr_pair(q), None))
    if "native" not in resample.BACKENDS:
        print("(rtp2ws._native not built or disabled: numpy backend only)")

    print(
        f"Upsampler2x: {len(resample.TAPS)} taps (Kaiser beta {resample.KAISER_BETA}, "
        f"half-band, Q{resample.FRAC_BITS}), {resample.PHASES.shape[1]} per phase, "
        f"delay {Upsampler2x.delay} samples at 16 kHz"
    )
    streams = "".join(f"{f'stream {size}':>13}" for size in STREAM_CHUNKS)
    header = (
        f"{'resampler':<30}{'passband':>10}{'image 7k':>10}{'worst img':>11}"
        f"{'one-shot':>11}{streams}"
    )
    print(header)
    units = f"{'in Msamp/s':>13}" * len(STREAM_CHUNKS)
    print(f"{'':<30}{'max |dB|':>10}{'dB':>10}{'>=4.6k dB':>11}{'in Msamp/s':>11}{units}")
    print("-" * len(header))
    for (name, one_shot, _, level), rates in zip(rows, throughput(rows)):
        with simd(level):
            passband, image_7k, worst_image = quality(one_shot)
        print(
            f"{name:<30}{passband:>10.4f}{image_7k:>10.1f}{worst_image:>11.1f}"
            + "".join(f"{rate:>11.1f}" if i == 0 else f"{rate:>13.1f}" for i, rate in enumerate(rates)),
            flush=True,
        )
    print("(input samples at 8 kHz; the output rate, at 16 kHz, is twice as many samples)")


if __name__ == "__main__":
    main()
