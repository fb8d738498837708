"""RTP's 16-bit sequence numbers and 32-bit timestamps wrap around: their arithmetic, once.

As aiortc's ``utils`` (``uint16_add``, ``uint16_gt`` ...), plus the signed distance
``uint16_delta`` / ``uint32_delta``: the shortest way from ``b`` to ``a`` on the
circle, ``-half .. half - 1``.  That is how an extended (unwrapped) counter follows a
wrapping one: ``ext + uint16_delta(seq, ext)`` is the extended number nearest ``ext``
whose low 16 bits are ``seq`` (``ext`` itself may be extended: only its low bits
count).  Exactly half-way round is neither ahead nor behind for ``uint16_gt``
(``uint16_delta`` calls it behind, ``-half``).

The per-packet loops (``MediaLeg._place``, ``JitterBuffer.push``'s in-order case, the
fast path's Python twin) inline these rules, since a call each would cost them; each
such place says which rule it inlines.
"""

from __future__ import annotations

SEQ_MOD = 1 << 16       # sequence numbers wrap here
TS_MOD = 1 << 32        # timestamps wrap here


def uint16(n: int) -> int:
    """The 16 bits RTP carries of a (possibly extended) sequence number."""
    return n & 0xFFFF


def uint32(n: int) -> int:
    """The 32 bits RTP carries of a (possibly extended) timestamp."""
    return n & 0xFFFFFFFF


def uint16_add(a: int, b: int) -> int:
    return (a + b) & 0xFFFF


def uint32_add(a: int, b: int) -> int:
    return (a + b) & 0xFFFFFFFF


def uint16_delta(a: int, b: int) -> int:
    """How far ``a`` is ahead of ``b`` (negative: behind), -0x8000 .. 0x7FFF."""
    d = (a - b) & 0xFFFF
    return d - 0x10000 if d >= 0x8000 else d


def uint32_delta(a: int, b: int) -> int:
    """How far ``a`` is ahead of ``b`` (negative: behind), -0x80000000 .. 0x7FFFFFFF."""
    d = (a - b) & 0xFFFFFFFF
    return d - 0x100000000 if d >= 0x80000000 else d


def uint16_gt(a: int, b: int) -> bool:
    """Is ``a`` after ``b``?"""
    return 0 < ((a - b) & 0xFFFF) < 0x8000


def uint32_gt(a: int, b: int) -> bool:
    """Is ``a`` after ``b``?"""
    return 0 < ((a - b) & 0xFFFFFFFF) < 0x80000000
