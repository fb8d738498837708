"""Where the C twins come from, for every module that has one.

``PARTS`` is the registry: each part of rtp2ws with a C twin, the extension
module it is in (built from ``native/*.c`` by setup.py) and the name of the
pure-Python/numpy twin the module falls back to.  Every such module picks its
backend the same way, by its part's name::

    from ..speedups import pick

    _native, BACKENDS = pick("g711")   # rtp2ws._native or None; ("native", "numpy") or ("numpy",)
    BACKEND = BACKENDS[0]
    if _native is not None:            # what it uses of the extension, by name (see below)
        from .._native import decode_alaw as _native_alaw

``pick`` returns a plain module (its type cannot name which one), so a module takes
what it uses from the extension by name, once ``pick`` chose it: the same objects, and
mypy checks the calls against the extension's ``.pyi`` stub.

The extension is used unless it is not built (no C compiler at install: setup.py
warns then) or ``RTP2WS_NO_NATIVE`` is set to anything but empty or ``0`` (an
opt-out, read at import).  ``in_use()`` says which backend each part runs on
(``rtp2ws --version`` prints it) and ``missing_warning()`` names the extensions
that should be there and are not, for ``rtp2ws replay`` and ``live`` to warn
that the slower twins are in use.
"""

from __future__ import annotations

import functools
import importlib
import os
from types import ModuleType

__all__ = ["PARTS", "disabled", "in_use", "load_native", "missing", "missing_warning", "pick"]

# part: (extension module rtp2ws.<name>, the twin used without it)
PARTS: dict[str, tuple[str, str]] = {
    "g711": ("_native", "numpy"),          # rtp2ws.codec.g711 (native/g711.c)
    "resample": ("_native", "numpy"),      # rtp2ws.codec.resample (native/resample.c)
    "fastpath": ("_fastpath", "python"),   # rtp2ws.fastpath (native/fastpath.c)
    "wsframe": ("_wsframe", "python"),     # rtp2ws.ws.frame (native/wsframe.c)
    "outbox": ("_wsframe", "python"),      # rtp2ws.ws.outbox (native/outbox.c)
    "wire": ("_wsframe", "python"),        # rtp2ws.ws.wire (native/wire.c)
}


def disabled() -> bool:
    """Whether ``RTP2WS_NO_NATIVE`` opts out of every extension."""
    return os.environ.get("RTP2WS_NO_NATIVE", "") not in ("", "0")


@functools.cache
def _built(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(f"rtp2ws.{name}")
    except ImportError:
        return None


def load_native(name: str = "_native") -> ModuleType | None:
    """The extension module ``rtp2ws.<name>`` (``_native``, ``_fastpath``, ``_wsframe``),
    or None when it is not built or ``RTP2WS_NO_NATIVE`` is set."""
    return None if disabled() else _built(name)


def pick(part: str) -> tuple[ModuleType | None, tuple[str, ...]]:
    """``(extension or None, backends)`` of a part of ``PARTS``: the backends available,
    the one to use by default first (``"native"`` when the extension is there)."""
    name, twin = PARTS[part]
    native = load_native(name)
    return native, ("native", twin) if native is not None else (twin,)


def in_use() -> dict[str, str]:
    """The default backend of every part, e.g. ``{"g711": "native", ..., "wsframe": "python"}``."""
    return {part: pick(part)[1][0] for part in PARTS}


def missing() -> list[str]:
    """The extensions that are not built, unless ``RTP2WS_NO_NATIVE`` opted out of them."""
    if disabled():
        return []
    return [name for name in dict.fromkeys(name for name, _ in PARTS.values()) if _built(name) is None]


def missing_warning() -> str | None:
    """One line naming each missing extension and the slower twin in use instead, or None."""
    gone = missing()
    if not gone:
        return None
    what = []
    for name in gone:
        parts = [part for part, (ext, _) in PARTS.items() if ext == name]
        twins = sorted({PARTS[part][1] for part in parts})
        named = parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"
        what.append(f"rtp2ws.{name} is not built, so {named} "
                    f"{'runs' if len(parts) == 1 else 'run'} on the slower {'/'.join(twins)} twin")
    return ("; ".join(what) + " (install a C compiler and reinstall rtp2ws to build it; "
            "RTP2WS_NO_NATIVE=1 chooses the twins without this warning)")
