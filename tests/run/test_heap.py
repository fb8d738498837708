"""run.heap: the C heap's free pages go back to the system (glibc malloc_trim)."""

from __future__ import annotations

import pytest

from rtp2ws.run import heap


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_trim_gives_back_what_a_burst_freed_between_blocks_still_in_use():
    """Like start-up's burst: many malloc'd blocks (1.5 KB bytes objects, beyond
    pymalloc's 512), most freed, one in 64 kept, so glibc's heap cannot shrink by
    itself; trim() hands the free pages back and RSS falls."""
    if heap._trim is None:
        pytest.skip("not glibc")
    blocks = [bytes(1500) for _ in range(120_000)]      # about 180 MB
    kept = blocks[::64]
    del blocks
    before = rss_bytes()
    heap.trim()
    after = rss_bytes()
    assert before - after > 100 * 2**20, (before, after)
    assert len(kept) == 1875
