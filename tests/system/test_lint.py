"""Lint in CI: ruff, configured in pyproject.toml ([tool.ruff]), over the whole tree."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from paths import ROOT


def _ruff() -> list[str]:
    exe = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(exe).exists():
        pytest.fail("ruff is not installed: pip install -e '.[test]' (install.sh does)")
    return [exe]


def test_ruff_finds_nothing():
    proc = subprocess.run(_ruff() + ["check", "--output-format", "concise", "--no-cache", str(ROOT)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_would_report_a_finding(tmp_path):
    """The check above can fail: the same configuration flags an unused import."""
    bad = tmp_path / "probe.py"
    bad.write_text("import os\n")
    proc = subprocess.run(_ruff() + ["check", "--config", str(ROOT / "pyproject.toml"), "--output-format", "concise",
                                     "--no-cache", str(bad)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 1 and "F401" in proc.stdout, proc.stdout + proc.stderr
