"""Differential: the C twins of g711 decoding, the 2x resampler (each SIMD kernel) and
RFC 6455 frame encoding against their numpy / pure-Python code."""

from __future__ import annotations

import array

import atheris
import numpy as np

from rtp2ws.codec import g711, resample
from rtp2ws.speedups import load_native
from rtp2ws.ws import frame as wsframe

from ..common import check, entry

INVARIANT = """\
decode_alaw / decode_ulaw (C) equal the numpy table look-up for any payload; a streaming
Upsampler2x (C, every SIMD kernel this CPU has) fed the same int16 chunks and flushed
gives the same samples as the numpy one; wsframe.encode (C) gives the same bytes as
encode_py for any list of str / bytes / bytearray / memoryview / array messages, keys and
split, or both raise the same exception class.  Skipped when the C extension is not built."""

_native = load_native("_native")
_wsnative = load_native("_wsframe")
LEVELS = list(_native.simd_levels()) if _native is not None else []


def _g711(fdp, clock) -> None:
    payload = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 2000))
    for law in (0, 1):
        c = clock.call(g711.decoders("native")[law], payload)
        n = clock.call(g711.decoders("numpy")[law], payload)
        check(np.array_equal(c, n) and c.dtype == n.dtype, f"G.711 {'ulaw' if law else 'alaw'} differs")


def _resample(fdp, clock) -> None:
    level = fdp.PickValueInList(LEVELS)
    before = _native.set_simd(level)
    try:
        c, n = resample.Upsampler2x("native"), resample.Upsampler2x("numpy")
        out_c, out_n = [], []
        for _ in range(fdp.ConsumeIntInRange(1, 8)):
            raw = fdp.ConsumeBytes(2 * fdp.PickValueInList([0, 1, 2, 15, 16, 17, 160, 1000]))
            x = np.frombuffer(raw[:len(raw) // 2 * 2], dtype=np.int16)
            if fdp.ConsumeIntInRange(0, 7) == 0:
                x = np.full(len(x), fdp.PickValueInList([32767, -32768]), dtype=np.int16)
            out_c.append(clock.call(c.process, x))
            out_n.append(clock.call(n.process, x))
        out_c.append(c.flush())
        out_n.append(n.flush())
        check(np.array_equal(np.concatenate(out_c), np.concatenate(out_n)), f"resampler differs ({level})")
    finally:
        _native.set_simd(before)


def _message(fdp, small: bool):
    kind = fdp.ConsumeIntInRange(0, 6)
    n = fdp.PickValueInList([0, 1, 125, 126, 127, 300] + ([] if small else [65535, 65536]))
    if kind == 0:
        return fdp.ConsumeUnicodeNoSurrogates(min(n, 200))
    data = bytes(fdp.ConsumeBytes(min(n, 500))) + bytes(max(0, n - 500))
    if kind == 1:
        return bytearray(data)
    if kind == 2:
        return memoryview(data)
    if kind == 3:
        return array.array("h", data[:len(data) // 2 * 2])
    if kind == 4:
        return memoryview(data)[::2]                 # not contiguous: refused
    if kind == 5:
        return fdp.PickValueInList([1, None, 1.5])    # not a buffer: refused
    return data


def _wsframe(fdp, clock) -> None:
    split = fdp.PickValueInList([0, 0, 1, 3, 125, 126, 640, 4096, -1])
    # tiny splits of 64 KB messages would be tens of thousands of frames in one call:
    # the sender splits at frame_ms (640 bytes and up), so keep those messages short
    messages = [_message(fdp, 0 < split < 125) for _ in range(fdp.ConsumeIntInRange(0, 6))]
    if fdp.ConsumeIntInRange(0, 15) == 0:
        messages = tuple(messages)
    keys = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64)) + b"\x5a" * fdp.PickValueInList([0, 400])
    results = []
    for fn in (_wsnative.encode, wsframe.encode_py):
        try:
            results.append(("ok", clock.call(fn, messages, keys, split)))
        except Exception as e:     # noqa: BLE001 -- compared below
            results.append(("error", type(e)))
    check(results[0] == results[1], f"wsframe: C {results[0]!r:.200} vs Python {results[1]!r:.200}")


def run(data: bytes, clock) -> None:
    if _native is None or _wsnative is None:
        return
    fdp = atheris.FuzzedDataProvider(data)
    for _ in range(fdp.ConsumeIntInRange(1, 3)):
        what = fdp.ConsumeIntInRange(0, 2)
        (_g711, _resample, _wsframe)[what](fdp, clock)


TestOneInput = entry("codecs", run)
