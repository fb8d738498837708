"""Build the optional C speedups (rtp2ws._native, _fastpath, _wsframe).

All metadata lives in pyproject.toml; this file only declares the extensions,
one C file per Python twin under native/ (rtp2ws.speedups says which part each
serves).  They are optional: one that cannot be compiled is named in a WARNING
and the build still succeeds, rtp2ws then using that part's pure-Python/numpy
twin (``rtp2ws --version`` names the backends; ``rtp2ws replay`` and ``live``
warn too).  Set RTP2WS_NO_NATIVE=1 while building to skip them altogether (and
at import time to ignore built ones).
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """build_ext that warns instead of failing when the C compiler does."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # no compiler, missing headers, ...
            self._warn("the rtp2ws C extensions were", exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._warn(f"the C extension {ext.name} was", exc)

    @staticmethod
    def _warn(what, exc):
        print(
            f"WARNING: {what} not built ({exc}); the slower pure-Python/numpy twin will be used "
            "(install a C compiler, Python headers and libpcap-dev, then reinstall)",
            file=sys.stderr,
        )


def have_header(name: str) -> bool:
    """Whether the system has ``name`` (liburing.h: from liburing-dev, which install.sh installs)."""
    dirs = ["/usr/include", "/usr/local/include"] + [d for d in os.environ.get("CPATH", "").split(":") if d]
    return any(os.path.exists(os.path.join(d, name)) for d in dirs)


ext_modules = []
if os.environ.get("RTP2WS_NO_NATIVE", "") in ("", "0"):
    cflags = ["-O3"] if os.name != "nt" else []
    # Loops start on 32-byte boundaries, so a short hot loop (the G.711 look-up) never
    # straddles a 64-byte fetch line whatever code the linker puts before it: it did
    # when native/g711.c moved, about 1.6x slower per sample on AMD Zen.
    aligned = cflags + ["-falign-loops=32"] if os.name != "nt" else []
    ext_modules += [
        # G.711 decode (native/g711.c) and the 2x resampler core (native/resample.c)
        Extension("rtp2ws._native", sources=["native/_native.c", "native/g711.c", "native/resample.c"],
                  depends=["native/native.h"], extra_compile_args=aligned),
        # batch reading of capture files and the in-order RTP fast path (links libpcap):
        # one C file per Python twin (rtp2ws.capture.file.Reader, rtp2ws.capture.live.LiveReaderPy,
        # rtp2ws.fastpath.twin.FastPath)
        # (with the 2x filter of native/resample.c, for the legs it streams itself)
        Extension("rtp2ws._fastpath",
                  sources=["native/capture_file.c", "native/capture_live.c", "native/fastpath.c", "native/resample.c"],
                  depends=["native/capture_file.h", "native/native.h"], libraries=["pcap"],
                  # no fused multiply-add (aarch64 contracts by default): the interarrival
                  # jitter must round as its Python twin's does, step by step
                  extra_compile_args=aligned + (["-ffp-contract=off"] if os.name != "nt" else [])),
        # WebSocket framing and masking of many messages at once, the stream queue and the
        # socket writes (rtp2ws.ws.frame.encode, rtp2ws.ws.outbox.Outbox and Totals,
        # rtp2ws.ws.wire.Wire and send_batches, rtp2ws.ws.lane.Lane), and the bench's
        # discard sink after the handshake (rtp2ws.bench.discard: Drain, DrainWalker)
        # (the writes of a flush go through one io_uring when liburing is there: native/wire.c)
        Extension("rtp2ws._wsframe",
                  sources=["native/wsframe.c", "native/outbox.c", "native/wire.c", "native/lane.c",
                           "native/drain.c"],
                  depends=["native/wsframe.h", "native/outbox.h", "native/wire.h", "native/lane.h",
                           "native/drain.h"],
                  extra_compile_args=cflags,
                  **({"define_macros": [("HAVE_LIBURING", "1")], "libraries": ["uring"]}
                     if have_header("liburing.h") else {})),
    ]

setup(ext_modules=ext_modules, cmdclass={"build_ext": OptionalBuildExt})
