"""Lint in CI: ruff and mypy, configured in pyproject.toml, over the whole tree; shellcheck over every shell script."""

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


# -- mypy: [tool.mypy] in pyproject.toml; strict everywhere but the adapters listed there ---------

def _mypy() -> list[str]:
    exe = shutil.which("mypy") or str(Path(sys.executable).with_name("mypy"))
    if not Path(exe).exists():
        pytest.fail("mypy is not installed: pip install -e '.[test]' (install.sh does)")
    return [exe]


def _run_mypy(args: list[str], cache: Path, cwd: Path) -> subprocess.CompletedProcess:
    # the cache under tmp_path: nothing is written into the source tree
    return subprocess.run(_mypy() + ["--config-file", str(ROOT / "pyproject.toml"), "--cache-dir", str(cache),
                                     "--no-error-summary", "--show-error-codes", *args],
                          capture_output=True, text=True, timeout=300, cwd=cwd)


def test_mypy_finds_nothing(tmp_path):
    """``mypy`` as CI runs it: the package (``files`` in the configuration), stubs included."""
    proc = _run_mypy([], tmp_path / "cache", ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_is_strict_on_the_core_and_not_on_the_adapters(tmp_path):
    """The check above can fail, and the strict flags really apply where the
    configuration says: the same untyped function is an error in a sans-I/O module
    (rtp2ws.signalling.*) and passes in an adapter (rtp2ws.run.*); a type error is
    an error in both."""
    untyped = "def f(x):\n    return x\n"
    wrong = "def g() -> int:\n    return 'no'\n"
    pkg = tmp_path / "rtp2ws"
    for sub in ("signalling", "run"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
        (pkg / sub / "untyped_probe.py").write_text(untyped)
        (pkg / sub / "wrong_probe.py").write_text(wrong)
    (pkg / "__init__.py").write_text("")
    files = [str(p.relative_to(tmp_path)) for p in sorted(pkg.rglob("*_probe.py"))]
    proc = _run_mypy(files, tmp_path / "cache", tmp_path)
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    errors = sorted(line.split(":")[0] + " " + line.rsplit("[", 1)[-1].rstrip("]")
                    for line in out.splitlines() if ": error:" in line)
    assert errors == [
        "rtp2ws/run/wrong_probe.py return-value",
        "rtp2ws/signalling/untyped_probe.py no-untyped-def",
        "rtp2ws/signalling/wrong_probe.py return-value",
    ], out


# -- shellcheck: every shell script the project ships (install.sh installs shellcheck) ------------

def _shell_scripts() -> list[str]:
    tracked = subprocess.run(["git", "ls-files"], capture_output=True, text=True, cwd=ROOT, check=True).stdout.split()
    scripts = []
    for name in tracked:
        path = ROOT / name
        if not path.is_file():
            continue
        with path.open("rb") as f:
            first = f.readline()
        if name.endswith(".sh") or (first.startswith(b"#!") and first.split(b"/")[-1].split()[-1] in (b"sh", b"bash")):
            scripts.append(name)
    return scripts


def _shellcheck() -> str:
    exe = shutil.which("shellcheck")
    if exe is None:
        pytest.fail("shellcheck is not installed: apt-get install shellcheck (install.sh does)")
    return exe


def test_shellcheck_finds_nothing():
    scripts = _shell_scripts()
    assert {"install.sh", "test.sh", ".ci/run", "deploy/iptables/tee.sh"} <= set(scripts), scripts
    proc = subprocess.run([_shellcheck(), *scripts], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_shellcheck_would_report_a_finding(tmp_path):
    """The check above can fail: an unquoted expansion is flagged."""
    bad = tmp_path / "probe.sh"
    bad.write_text("#!/bin/sh\necho $1\n")
    proc = subprocess.run([_shellcheck(), str(bad)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "SC2086" in proc.stdout, proc.stdout + proc.stderr
