"""Build the optional C speedups (rtp2ws._native, _fastpath, _wsframe).

All metadata lives in pyproject.toml; this file only declares the extension.
The extension is optional: if it cannot be compiled the build still succeeds
and rtp2ws uses the pure-Python/numpy twins.  Set RTP2WS_NO_NATIVE=1 while building to skip
it altogether (and at import time to ignore a built one).
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
            self._warn(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._warn(exc)

    @staticmethod
    def _warn(exc):
        print(
            f"WARNING: an rtp2ws C extension was not built ({exc}); "
            "its pure-Python twin will be used.",
            file=sys.stderr,
        )


ext_modules = []
if os.environ.get("RTP2WS_NO_NATIVE", "") in ("", "0"):
    cflags = ["-O3"] if os.name != "nt" else []
    ext_modules += [
        # G.711 decode and the 2x resampler core
        Extension("rtp2ws._native", sources=["native/rtp2ws_native.c"], extra_compile_args=cflags),
        # batch reading of capture files and the in-order RTP fast path (links libpcap):
        # one C file per Python twin (rtp2ws.capture.file.Reader, rtp2ws.fastpath.twin.FastPath)
        Extension("rtp2ws._fastpath", sources=["native/capture_file.c", "native/fastpath.c"],
                  depends=["native/capture_file.h"], libraries=["pcap"], extra_compile_args=cflags),
        # WebSocket framing and masking of many messages at once
        Extension("rtp2ws._wsframe", sources=["native/wsframe.c"], extra_compile_args=cflags),
    ]

setup(ext_modules=ext_modules, cmdclass={"build_ext": OptionalBuildExt})
