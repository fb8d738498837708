"""Where things are, for tests at any depth under tests/ (one place instead of
``Path(__file__).parents[n]`` in each file)."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parent     # tests/: the helper modules (callgen, netgen, ...)
ROOT = TESTS.parent                          # the repository: rtp2ws/, fuzz/, benchmarks/, deploy/, docs/
DATA = TESTS / "data"                        # captures recorded with real tools, parser vectors
TOOLS = TESTS / "tools"                      # the scripts that made them
