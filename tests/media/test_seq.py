import random

import pytest

from rtp2ws.media.seq import (
    SEQ_MOD,
    TS_MOD,
    uint16,
    uint16_add,
    uint16_delta,
    uint16_gt,
    uint32,
    uint32_add,
    uint32_delta,
    uint32_gt,
)

HELPERS = {
    SEQ_MOD: (uint16, uint16_add, uint16_delta, uint16_gt),
    TS_MOD: (uint32, uint32_add, uint32_delta, uint32_gt),
}


def nearest(a, b, mod):
    """The independent definition: the d in [-mod/2, mod/2) with b + d == a (mod ``mod``)."""
    for d in range(-(mod // 2), mod // 2):
        if (b + d - a) % mod == 0:
            return d
    raise AssertionError("unreachable")


def edges(mod):
    half = mod // 2
    return sorted({0, 1, 2, half - 2, half - 1, half, half + 1, half + 2, mod - 2, mod - 1})


@pytest.mark.parametrize("mod", [SEQ_MOD, TS_MOD])
def test_add_wraps(mod):
    low, add, _, _ = HELPERS[mod]
    top = mod - 1
    assert add(top, 1) == 0
    assert add(top, 2) == 1
    assert add(0, top) == top
    assert add(top, top) == top - 1
    assert add(5, -6) == top           # a step back past zero
    assert low(mod) == 0 and low(mod + 7) == 7 and low(-1) == top and low(3 * mod + top) == top


def test_delta_at_the_wrap_16():
    assert uint16_delta(0, 0xFFFF) == 1
    assert uint16_delta(0xFFFF, 0) == -1
    assert uint16_delta(2, 0xFFFE) == 4
    assert uint16_delta(0x7FFF, 0) == 0x7FFF      # the farthest still ahead
    assert uint16_delta(0x8000, 0) == -0x8000     # half-way round counts as behind
    assert uint16_delta(0, 0x8000) == -0x8000
    assert uint16_delta(0x8001, 0) == -0x7FFF


def test_delta_at_the_wrap_32():
    assert uint32_delta(0, 0xFFFFFFFF) == 1
    assert uint32_delta(0xFFFFFF00, 0x100) == -0x200
    assert uint32_delta(0x100, 0xFFFFFF00) == 0x200
    assert uint32_delta(0x7FFFFFFF, 0) == 0x7FFFFFFF
    assert uint32_delta(0x80000000, 0) == -0x80000000


@pytest.mark.parametrize("mod", [SEQ_MOD, TS_MOD])
def test_delta_agrees_with_the_definition_at_every_edge(mod):
    _, _, delta, gt = HELPERS[mod]
    points = edges(mod)
    if mod == SEQ_MOD:
        for a in points:
            for b in points:
                assert delta(a, b) == nearest(a, b, mod), (a, b)
    for a in points:
        for b in points:
            d = delta(a, b)
            assert -(mod // 2) <= d < mod // 2 and (b + d - a) % mod == 0, (a, b)
            assert gt(a, b) == (d > 0), (a, b)


@pytest.mark.parametrize("mod", [SEQ_MOD, TS_MOD])
def test_gt_is_aiortcs_rule(mod):
    """``uint16_gt(a, b)`` is aiortc's ``(a < b and b - a > half) or (a > b and a - b < half)``."""
    _, _, _, gt = HELPERS[mod]
    half = mod // 2
    rnd = random.Random(16)
    pairs = [(a, b) for a in edges(mod) for b in edges(mod)]
    pairs += [(rnd.randrange(mod), rnd.randrange(mod)) for _ in range(2000)]
    for a, b in pairs:
        assert gt(a, b) == ((a < b and b - a > half) or (a > b and a - b < half)), (a, b)
    assert not gt(half, 0) and not gt(0, half)      # half-way round: neither is after the other
    assert gt(0, mod - 1) and not gt(mod - 1, 0)
    assert not gt(7, 7)


@pytest.mark.parametrize("mod", [SEQ_MOD, TS_MOD])
def test_an_extended_counter_follows_the_wrapping_one(mod):
    """``ext + delta(wire, ext)``: how the jitter buffer extends sequence numbers and a leg
    its timestamps, whatever the extended counter's high bits."""
    low, add, delta, _ = HELPERS[mod]
    rnd = random.Random(32)
    ext = 3 * mod - 5                  # a few wraps in already, just before the next
    for _ in range(5000):
        step = rnd.randrange(-(mod // 2), mod // 2)
        wire = add(low(ext), step)
        nxt = ext + delta(wire, ext)
        assert nxt == ext + step and low(nxt) == wire
        ext = nxt
