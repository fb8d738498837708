"""Build the optional C speedups (rtp2ws._native).

All metadata lives in pyproject.toml; this file only declares the extension.
The extension is optional: if it cannot be compiled the build still succeeds
and rtp2ws uses its numpy code.  Set RTP2WS_NO_NATIVE=1 while building to skip
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
            f"WARNING: rtp2ws._native was not built ({exc}); "
            "the numpy implementation will be used.",
            file=sys.stderr,
        )


ext_modules = []
if os.environ.get("RTP2WS_NO_NATIVE", "") in ("", "0"):
    ext_modules.append(
        Extension(
            "rtp2ws._native",
            sources=["native/rtp2ws_native.c"],
            extra_compile_args=["-O3"] if os.name != "nt" else [],
        )
    )

setup(ext_modules=ext_modules, cmdclass={"build_ext": OptionalBuildExt})
