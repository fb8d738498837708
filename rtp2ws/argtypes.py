"""argparse types with checked ranges, for every numeric option.

A value outside its range is refused when the command line (or ``--config``
file, which goes through the same types) is read, with a message naming the
range: no option can silently discard all audio (``--rtp-timeout 0``), never
expire (``nan``), or ask for an absurd buffer.  ``nan`` and infinities are
refused everywhere.  The types take strings (command line) and numbers
(TOML values) alike.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = ["number", "whole"]


def _fmt(v: float) -> str:
    return f"{v:g}"


def number(lo: float, hi: float, *, lo_open: bool = False, unit: str = "") -> Callable[[str | float], float]:
    """A finite number in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``)."""
    unit = f" {unit}" if unit else ""
    span = f"{'more than ' + _fmt(lo) if lo_open else 'from ' + _fmt(lo)}{unit} to {_fmt(hi)}{unit}"

    def parse(text: str | float) -> float:   # str: the command line; int, float (and bool): TOML
        if isinstance(text, bool):
            raise argparse.ArgumentTypeError(f"use a number {span}")
        try:
            v = float(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"use a number {span}") from None
        if not math.isfinite(v) or v > hi or v < lo or (lo_open and v == lo):
            raise argparse.ArgumentTypeError(f"use a number {span}, not {text}")
        return v

    parse.__name__ = "number"
    # what a --config file must give (rtp2ws.tomlconfig); mypy has no function attributes (python/mypy#2087)
    parse.kind = float  # type: ignore[attr-defined]
    return parse


def whole(lo: int, hi: int) -> Callable[[str | int], int]:
    """A whole number in ``[lo, hi]``."""
    def parse(text: str | int) -> int:
        if isinstance(text, bool) or isinstance(text, float):
            raise argparse.ArgumentTypeError(f"use a whole number from {lo} to {hi}")
        try:
            v = int(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"use a whole number from {lo} to {hi}") from None
        if v < lo or v > hi:
            raise argparse.ArgumentTypeError(f"use a whole number from {lo} to {hi}, not {text}")
        return v

    parse.__name__ = "whole"
    parse.kind = int  # type: ignore[attr-defined]  # (see number)
    return parse


def one_of(values: tuple[int, ...]) -> Callable[[str | int], int]:
    """A whole number among ``values`` (e.g. the output rates)."""
    listed = ", ".join(map(str, values))

    def parse(text: str | int) -> int:
        if isinstance(text, bool) or isinstance(text, float):
            raise argparse.ArgumentTypeError(f"use one of {listed}")
        try:
            v = int(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"use one of {listed}") from None
        if v not in values:
            raise argparse.ArgumentTypeError(f"use one of {listed}, not {text}")
        return v

    parse.__name__ = "one_of"
    parse.kind = int  # type: ignore[attr-defined]  # (see number)
    return parse
