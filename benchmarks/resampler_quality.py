"""Quality and speed of rtp2ws.codec.resample's interpolators, with soxr beside them.

    python benchmarks/resampler_quality.py [--rates 16000,24000,48000] [--rounds 5] [--baseline OLD_NATIVE.so ...]

One table per output rate (``--rate``: 16000 is ``Upsampler2x``, 24000 and 48000
the 3x and 6x ``Upsampler``; 8000 has no filter, and is one line).  Figures, all
from int16 tones of amplitude 10000, one second at 8 kHz, run through each
resampler with int16 output and measured by a least-squares fit of the tone
(edges skipped):

- passband: worst |gain| in dB for tones every 50 Hz from 50 to 3400 Hz;
- image 7k: the 7 kHz image of a 1 kHz tone, in dB relative to the tone;
- worst image: the loudest image (at k * 8000 +- f >= 4600 Hz, below half the
  output rate) over those tones;
- SNR 1k: a 1 kHz tone against everything else in the output (images,
  rounding: the residual of the fit), in dB;
- throughput in INPUT (8 kHz) Msamples/s, so output samples/s are L times that:
  one-shot on 60 s of random audio, and streaming the same audio through
  ``process`` in 160-sample (20 ms, as the pipeline does) and 8000-sample
  chunks; best of ``--rounds`` runs.

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
from rtp2ws.codec.resample import Upsampler, Upsampler2x, make_upsampler

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


def snr_at(y: np.ndarray, freq: float, fs: int, skip: int) -> float:
    """dB of the least-squares fit of a tone at ``freq`` against the rest of ``y``."""
    y = np.asarray(y, dtype=np.float64)[skip:-skip]
    t = (np.arange(len(y)) + skip) / fs
    basis = np.column_stack([np.cos(2 * np.pi * freq * t), np.sin(2 * np.pi * freq * t)])
    coef, *_ = np.linalg.lstsq(basis, y, rcond=None)
    model = basis @ coef
    return float(10 * np.log10(np.mean(model ** 2) / np.mean((y - model) ** 2)))


def images(freq: float, fs_out: int) -> list[float]:
    """The images of a tone at ``freq`` (8 kHz input) below half of ``fs_out``."""
    out = []
    k = 1
    while k * FS_IN - freq < fs_out / 2:
        out += [f for f in (k * FS_IN - freq, k * FS_IN + freq) if f < fs_out / 2]
        k += 1
    return out


def quality(one_shot, fs_out: int = FS_OUT) -> tuple[float, float, float, float]:
    """(max |passband dB|, 1 kHz image at 7 kHz dB, worst image >= 4.6 kHz dB, SNR of 1 kHz dB)."""
    worst_pass = 0.0
    worst_image = -np.inf
    image_7k = snr = np.nan
    # The same 0.95 s at every rate: every tone and image (multiples of 50 Hz, 100 Hz
    # apart) has a whole number of cycles in it, so the fits do not leak into each other.
    skip = SKIP * fs_out // FS_OUT
    for freq in TONES:
        x = tone(freq)
        y = one_shot(x)
        a_in = amplitude_at(x, freq, FS_IN, SKIP // 2)
        a_out = amplitude_at(y, freq, fs_out, skip)
        worst_pass = max(worst_pass, abs(db(a_out / a_in)))
        for image in images(freq, fs_out):
            level = db(amplitude_at(y, image, fs_out, skip) / a_out)
            worst_image = max(worst_image, level)
            if freq == 1000 and image == 7000:
                image_7k = level
        if freq == 1000:
            snr = snr_at(y, freq, fs_out, skip)
    return worst_pass, image_7k, worst_image, snr


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


def theirs(rate: int, backend: str):
    """The 3x or 6x Upsampler (rate 24000 or 48000) with the given backend."""

    def one_shot(x):
        up = make_upsampler(rate, backend)
        return np.concatenate([up.process(x), up.flush()])

    def make_stream():
        up = make_upsampler(rate, backend)
        return up.process, up.flush

    return one_shot, make_stream


def soxr_pair(quality_name: str, fs_out: int = FS_OUT):
    import soxr

    def one_shot(x):
        return soxr.resample(x, FS_IN, fs_out, quality=quality_name)

    def make_stream():
        stream = soxr.ResampleStream(FS_IN, fs_out, 1, dtype="int16", quality=quality_name)
        return stream.resample_chunk, lambda: stream.resample_chunk(np.zeros(0, np.int16), last=True)

    return one_shot, make_stream


def rate_list(text: str) -> list[int]:
    rates = [int(r) for r in text.split(",")]
    for r in rates:
        if r not in resample.RATES:
            raise argparse.ArgumentTypeError(f"rates are among {resample.RATES}, not {r}")
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", action="append", default=[], metavar="PATH",
                        help="another build of rtp2ws._native to measure beside this one (16 kHz)")
    parser.add_argument("--rates", type=rate_list, default=list(resample.RATES),
                        help="output rates to measure, comma-separated (default: all)")
    parser.add_argument("--rounds", type=int, default=5, help="throughput: best of this many rounds (default 5)")
    args = parser.parse_args()
    try:
        import soxr  # noqa: F401
        have_soxr = True
    except ImportError:
        print("(soxr not installed: pip install soxr for the reference rows)")
        have_soxr = False
    if "native" not in resample.BACKENDS:
        print("(rtp2ws._native not built or disabled: numpy backend only)")
    for rate in args.rates:
        if rate == FS_IN:
            print("8000 Hz: no filter (Passthrough: the decoded G.711 samples as they are): "
                  "passband 0 dB, no images, no delay\n")
            continue
        rows = []  # (name, one_shot, make_stream, simd level or None)
        if rate == FS_OUT:
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
            print(
                f"{rate} Hz: Upsampler2x: {len(resample.TAPS)} taps (Kaiser beta {resample.KAISER_BETA}, "
                f"half-band, Q{resample.FRAC_BITS}), {resample.PHASES.shape[1]} per phase, "
                f"delay {Upsampler2x.delay} samples"
            )
        else:
            factor = rate // FS_IN
            for backend in resample.BACKENDS:
                rows.append((f"Upsampler {factor}x ({backend})", *theirs(rate, backend), None))
            taps, phases = resample.FILTERS[factor]
            print(f"{rate} Hz: Upsampler {factor}x: {len(taps)} taps (Kaiser beta {resample.KAISER_BETA}, "
                  f"1/{factor}-band, Q{resample.FRAC_BITS}), {phases.shape[1]} per phase, "
                  f"delay {Upsampler(factor).delay} samples")
        if have_soxr:
            for q in ("HQ", "VHQ"):
                rows.append((f"soxr {q}", *soxr_pair(q, rate), None))
        streams = "".join(f"{f'stream {size}':>13}" for size in STREAM_CHUNKS)
        header = (
            f"{'resampler':<30}{'passband':>10}{'image 7k':>10}{'worst img':>11}{'SNR 1k':>9}"
            f"{'one-shot':>11}{streams}"
        )
        print(header)
        units = f"{'in Msamp/s':>13}" * len(STREAM_CHUNKS)
        print(f"{'':<30}{'max |dB|':>10}{'dB':>10}{'>=4.6k dB':>11}{'dB':>9}{'in Msamp/s':>11}{units}")
        print("-" * len(header))
        for (name, one_shot, _, level), speeds in zip(rows, throughput(rows, args.rounds)):
            with simd(level):
                passband, image_7k, worst_image, snr = quality(one_shot, rate)
            print(
                f"{name:<30}{passband:>10.4f}{image_7k:>10.1f}{worst_image:>11.1f}{snr:>9.1f}"
                + "".join(f"{v:>11.1f}" if i == 0 else f"{v:>13.1f}" for i, v in enumerate(speeds)),
                flush=True,
            )
        print(f"(input samples at 8 kHz; the output, at {rate // 1000} kHz, is {rate // FS_IN} times as many)\n")


if __name__ == "__main__":
    main()
