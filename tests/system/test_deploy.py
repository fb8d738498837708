"""deploy/rtp2ws.service against what install.sh installs: the unit's ExecStart
command and its Documentation= are where ``deploy/install-system.sh`` (run by
install.sh) puts them, and ``systemd-analyze verify`` accepts the unit as shipped
(when systemd-analyze is there).

The layout is checked under a scratch root (the script's ``DESTDIR``), so the test
does not depend on install.sh having run as root here; the verification uses the
real /usr/local/bin/rtp2ws when install.sh made it, else the same unit with only its
command's path moved under that scratch root.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from paths import ROOT

UNIT = ROOT / "deploy" / "rtp2ws.service"
SCRIPT = ROOT / "deploy" / "install-system.sh"


def _unit() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=True, delimiters=("=",), comment_prefixes=("#", ";"))
    parser.optionxform = str          # type: ignore[assignment,method-assign]   # keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser


def _exec_start() -> str:
    return _unit()["Service"]["ExecStart"].split()[0]


def _documentation() -> list[str]:
    return _unit()["Unit"]["Documentation"].split()


@pytest.fixture
def destdir(tmp_path) -> Path:
    root = tmp_path / "root"
    r = subprocess.run(["bash", str(SCRIPT)], env=dict(os.environ, DESTDIR=str(root)), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return root


def test_install_sh_runs_the_system_step():
    lines = [line.strip() for line in (ROOT / "install.sh").read_text().splitlines()
             if line.strip() and not line.strip().startswith("#")]
    assert any(line.endswith("deploy/install-system.sh") for line in lines), "install.sh no longer installs " \
        "what deploy/rtp2ws.service runs"


def test_the_command_the_unit_runs_is_where_install_puts_it(destdir):
    exe = _exec_start()
    assert exe.startswith("/"), "systemd needs an absolute ExecStart path"
    installed = destdir / exe.lstrip("/")
    assert installed.is_symlink() and os.access(installed, os.X_OK), f"install-system.sh does not make {exe}"
    assert Path(os.readlink(installed)) == ROOT / ".venv" / "bin" / "rtp2ws"
    r = subprocess.run([str(installed), "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("rtp2ws "), r.stderr
    args = _unit()["Service"]["ExecStart"].split()[1:]
    assert args[:2] == ["live", "--config"]         # the subcommand and option it runs exist
    r = subprocess.run([str(installed), "live", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--config" in r.stdout


def test_the_documentation_the_unit_names_is_installed(destdir):
    docs = _documentation()
    assert docs
    for url in docs:
        assert url.startswith("file:///"), f"{url}: not something install.sh installs"
        path = destdir / url.removeprefix("file:///")
        assert path.is_file(), f"{url} is not installed by install-system.sh"
        assert path.read_bytes() == (ROOT / Path(url).name).read_bytes()
    folder = destdir / "usr/share/doc/rtp2ws"
    assert {"README.md", "ARCHITECTURE.md", "protocol.md", "rtp2ws.service", "rtp2ws.toml.example"} <= {
        p.name for p in folder.iterdir()}


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verifies_the_unit(destdir, tmp_path):
    exe = _exec_start()
    if os.access(exe, os.X_OK):          # install.sh ran here as root: the unit exactly as shipped
        unit = UNIT
    else:                                # only the command's path moved to where the script put it
        unit = tmp_path / "rtp2ws.service"
        unit.write_text(UNIT.read_text().replace(f"ExecStart={exe} ", f"ExecStart={destdir}{exe} "))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=120)
    mine = [line for line in (r.stdout + r.stderr).splitlines() if "rtp2ws" in line]
    assert r.returncode == 0 and mine == [], r.stdout + r.stderr

