"""Loading the system codec libraries (spandsp, bcg729, libopus) through ctypes.

The codecs beside G.711 are decoded by well-kept C libraries from the distribution
(Debian: libspandsp2, libbcg729-0, libopus0; their -dev packages give the unversioned
names), called through ``ctypes``: no build step, and a call costs about a
microsecond, against tens of microseconds of decoding per packet
(``benchmarks/decoders.py``).  A library is loaded at the first decoder made for
its codec; when it is missing, ``CodecUnavailable`` says which package to install.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache

__all__ = ["CodecUnavailable", "load"]


class CodecUnavailable(RuntimeError):
    """A codec's system library is not installed."""


# library -> (the versioned file name, the Debian package that has it)
LIBRARIES = {
    "spandsp": ("libspandsp.so.2", "libspandsp2 (libspandsp-dev)"),
    "bcg729": ("libbcg729.so.0", "libbcg729-0 (libbcg729-dev)"),
    "opus": ("libopus.so.0", "libopus0 (libopus-dev)"),
}


@cache
def load(name: str) -> ctypes.CDLL:
    """The shared library ``name`` (a key of ``LIBRARIES``), loaded once."""
    soname, package = LIBRARIES[name]
    errors = []
    for candidate in (soname, ctypes.util.find_library(name)):
        if candidate is None:
            continue
        try:
            return ctypes.CDLL(candidate)
        except OSError as e:
            errors.append(str(e))
    raise CodecUnavailable(f"the {name} library is not installed (Debian package {package}): {'; '.join(errors)}")
