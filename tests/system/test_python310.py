"""``requires-python = ">=3.10"`` holds: rtp2ws installs on the oldest Python it
claims, from its own pyproject (the dependencies pip resolves for 3.10, ``tomli``
among them, and the C extensions built against 3.10's headers), every module
imports, and the commands run there: ``--version``, replay to files and to a
WebSocket sink (``rtp2ws sink``, also on 3.10), and ``live --config`` reading its
TOML file (``tomllib`` is 3.11's; 3.10 reads it with ``tomli``).

Runs when a Python 3.10 is on this machine (pyenv's, or ``python3.10`` on PATH),
and is skipped, saying so, when none is.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from paths import DATA, ROOT


def _python310() -> str | None:
    found = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.10.*/bin/python3.10")))
    found += sorted(glob.glob("/root/.pyenv/versions/3.10.*/bin/python3.10"))
    which = shutil.which("python3.10")
    if which:
        found.append(which)
    for exe in found:
        r = subprocess.run([exe, "-c", "import sys, venv; print(sys.version_info[:2] == (3, 10))"],
                           capture_output=True, text=True)
        if r.returncode == 0 and r.stdout.strip() == "True":
            return exe
    return None


PY310 = _python310()
pytestmark = pytest.mark.skipif(PY310 is None, reason="no Python 3.10 on this machine (pyenv or python3.10 on "
                                                       "PATH): requires-python's lower bound is not checked")

IMPORT_ALL = """
import importlib, pkgutil, rtp2ws
names = [m.name for m in pkgutil.walk_packages(rtp2ws.__path__, "rtp2ws.") if not m.name.endswith("__main__")]
for name in names:
    importlib.import_module(name)
print(len(names))
"""


@pytest.fixture(scope="module")
def venv310(tmp_path_factory) -> Path:
    """A Python 3.10 virtual environment with rtp2ws[sink] installed by pip from a copy of
    the source (so the checkout's own build/ and .so files play no part)."""
    tmp = tmp_path_factory.mktemp("py310")
    src = tmp / "src"
    src.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "native", src / "native")
    shutil.copytree(ROOT / "rtp2ws", src / "rtp2ws", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    venv = tmp / "venv"
    subprocess.run([PY310, "-m", "venv", str(venv)], check=True, timeout=120)
    r = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", f"{src}[sink]"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    return venv


def _run(venv: Path, *args: str, cwd: Path, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RTP2WS_NO_NATIVE", "VIRTUAL_ENV")}
    return subprocess.run([str(venv / "bin" / "python"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300, **kw)


def test_tomli_is_installed_on_310_and_every_module_imports(venv310, tmp_path):
    r = _run(venv310, "-c", "import sys, tomli; print(sys.version_info[:2])", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == "(3, 10)", r.stderr
    r = _run(venv310, "-c", IMPORT_ALL, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) > 40
    r = _run(venv310, "-m", "rtp2ws.cli", "--version", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("rtp2ws "), r.stderr
    assert "native" in r.stdout          # the C extensions build against 3.10 too


def test_replay_to_files_and_to_a_sink_on_310(venv310, tmp_path):
    r = _run(venv310, "-m", "rtp2ws.cli", "replay", str(DATA / "demo_speech.pcap"), "--out-dir", str(tmp_path / "out"),
             "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (call,) = json.loads((tmp_path / "out" / "calls.json").read_text())["calls"]
    assert [leg["tag"] for leg in call["legs"]] == ["caller", "callee"]
    assert all(leg["wav"] for leg in call["legs"])

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RTP2WS_NO_NATIVE", "VIRTUAL_ENV")}
    sink = subprocess.Popen([str(venv310 / "bin" / "python"), "-m", "rtp2ws.cli", "sink", "--listen", "127.0.0.1:0",
                             "--out-dir", str(tmp_path / "received")], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = sink.stdout.readline()
        assert "listening on" in line, sink.stderr.read()
        url = line.split()[-1]
        r = _run(venv310, "-m", "rtp2ws.cli", "replay", str(DATA / "demo_speech.pcap"), "--ws-url", f"{url}/audio",
                 "--no-progress", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert "streamed 2 streams" in r.stdout and "0 ms undelivered" in r.stdout, r.stdout
    finally:
        sink.terminate()
        sink.wait(30)
    assert sorted(p.name for p in (tmp_path / "received").rglob("*.wav")) == ["callee.wav", "caller.wav"]


def test_live_reads_its_config_file_on_310(venv310, tmp_path):
    """The file is read (its interface is the one the error names) and checked: with
    tomllib alone this is an ImportError before anything."""
    conf = tmp_path / "rtp2ws.toml"
    conf.write_text('interface = "nosuchif0"\nout_dir = "out"\nsip_ports = [5060, 5080]\n')
    r = _run(venv310, "-m", "rtp2ws.cli", "live", "--config", str(conf), cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.startswith("rtp2ws: error: ") and "nosuchif0" in r.stderr, r.stderr
    conf.write_text('interface = "lo"\nout_dir = "out"\nsip_ports = [5060\n')
    r = _run(venv310, "-m", "rtp2ws.cli", "live", "--config", str(conf), cwd=tmp_path)
    assert r.returncode == 2
    assert f"{conf}: not valid TOML" in r.stderr, r.stderr
