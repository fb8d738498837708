"""What a partial installation does.

* A C extension that is not built (no compiler at install) leaves its part on
  the slower twin: setup.py names it in a WARNING and still builds, and
  ``rtp2ws replay`` and ``live`` say so in one warning line, unless
  ``RTP2WS_NO_NATIVE`` chose the twins.  "Not built" is a copy of the package
  without the ``.so`` files, first on PYTHONPATH.
* The extras: the sink needs jsonschema (``rtp2ws[sink]``), the benchmark's
  reference pipeline dpkt (``rtp2ws[bench]``); the rest runs without either.
  "Not installed" is ``sys.modules[name] = None`` (import raises
  ModuleNotFoundError) set by a sitecustomize.py first on PYTHONPATH.
* Every extension has a ``.pyi`` stub naming what it has, and the wheel ships
  the stubs and ``py.typed``.
"""

from __future__ import annotations

import ast
import importlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from rtp2ws import speedups

from paths import ROOT
from skips import can_capture

PY = sys.executable
PACKAGE = ROOT / "rtp2ws"
CAPTURE = ROOT / "tests" / "data" / "demo_speech.pcap"
EXTENSIONS = ("_native", "_fastpath", "_wsframe")

all_built = pytest.mark.skipif(speedups.disabled() or speedups.missing() != [],
                               reason="the C extensions are not all built (or RTP2WS_NO_NATIVE is set)")

ALL_MISSING = (
    "rtp2ws._native is not built, so g711 and resample run on the slower numpy twin; "
    "rtp2ws._fastpath is not built, so fastpath runs on the slower python twin; "
    "rtp2ws._wsframe is not built, so wsframe, outbox and wire run on the slower python twin "
    "(install a C compiler and reinstall rtp2ws to build it; "
    "RTP2WS_NO_NATIVE=1 chooses the twins without this warning)"
)


def _package_copy(tmp_path: Path, keep: tuple[str, ...] = ()) -> Path:
    """A directory holding a copy of rtp2ws with only the extensions in ``keep``, to put
    first on PYTHONPATH.  Its sitecustomize.py takes out the finder of an editable
    install (pip install -e), which would find the checkout's extensions by name."""
    def ignore(folder, names):
        return [n for n in names if n == "__pycache__" or (n.endswith(".so") and n.split(".")[0] not in keep)]

    top = tmp_path / "site"
    shutil.copytree(PACKAGE, top / "rtp2ws", ignore=ignore)
    (top / "sitecustomize.py").write_text(
        "import sys\n"
        "sys.meta_path[:] = [f for f in sys.meta_path if not f.__module__.startswith('__editable__')]\n")
    return top


def _env(*paths: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RTP2WS_NO_NATIVE"}
    env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


def _replay(tmp_path: Path, env: dict) -> subprocess.CompletedProcess:
    out = tmp_path / "out"
    shutil.rmtree(out, ignore_errors=True)
    return subprocess.run([PY, "-m", "rtp2ws.cli", "replay", str(CAPTURE), "--out-dir", str(out), "--no-progress"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)


def _blocking(tmp_path: Path, *modules: str) -> Path:
    """A directory with a sitecustomize.py that makes importing ``modules`` fail."""
    folder = tmp_path / "blocked"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(
        "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in modules))
    return folder


# --------------------------------------------------------------------------- missing extensions


def test_the_copy_is_what_runs(tmp_path):
    top = _package_copy(tmp_path)
    r = subprocess.run([PY, "-c", "import rtp2ws, rtp2ws.speedups as s; print(rtp2ws.__file__); print(s.missing())"],
                       env=_env(top), cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True)
    assert r.stdout.splitlines() == [str(top / "rtp2ws" / "__init__.py"), "['_native', '_fastpath', '_wsframe']"]


def test_replay_warns_once_naming_every_missing_extension(tmp_path):
    r = _replay(tmp_path, _env(_package_copy(tmp_path)))
    assert r.returncode == 0, r.stderr
    assert r.stderr == f"rtp2ws: warning: {ALL_MISSING}\n"
    assert (tmp_path / "out" / "calls.json").exists()


@all_built
def test_replay_names_only_the_extension_that_is_missing(tmp_path):
    r = _replay(tmp_path, _env(_package_copy(tmp_path, keep=("_fastpath", "_wsframe"))))
    assert r.returncode == 0, r.stderr
    assert r.stderr == ("rtp2ws: warning: rtp2ws._native is not built, so g711 and resample run on the slower "
                        "numpy twin (install a C compiler and reinstall rtp2ws to build it; RTP2WS_NO_NATIVE=1 "
                        "chooses the twins without this warning)\n")


def test_replay_does_not_warn_when_the_twins_are_chosen(tmp_path):
    r = _replay(tmp_path, _env(_package_copy(tmp_path), RTP2WS_NO_NATIVE="1"))
    assert (r.returncode, r.stderr) == (0, "")


@all_built
def test_replay_does_not_warn_when_every_extension_is_built(tmp_path):
    r = _replay(tmp_path, _env())
    assert (r.returncode, r.stderr) == (0, "")


@all_built
def test_version_of_a_build_without_extensions(tmp_path):
    r = subprocess.run([PY, "-m", "rtp2ws.cli", "--version"], env=_env(_package_copy(tmp_path, keep=("_wsframe",))),
                       cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.stdout.endswith("(g711: numpy, resample: numpy, fastpath: python, wsframe: native, outbox: native, "
                             "wire: native)\n")


def _live_log(tmp_path: Path, env: dict) -> list[str]:
    """The log lines of ``rtp2ws live`` on lo, stopped with SIGTERM once it captures."""
    proc = subprocess.Popen([PY, "-m", "rtp2ws.cli", "live", "-i", "lo", "--bpf", "udp port 9",
                             "--out-dir", str(tmp_path / "live")], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while not any("capturing on lo" in line for line in lines):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    reader.join(5)
    return lines


@pytest.mark.skipif(not can_capture(), reason="needs root or CAP_NET_RAW to capture on lo")
def test_live_logs_one_warning_naming_every_missing_extension(tmp_path):
    lines = _live_log(tmp_path, _env(_package_copy(tmp_path)))
    warnings = [line for line in lines if " WARNING " in line]
    assert len(warnings) == 1, lines
    assert warnings[0].endswith(f" WARNING rtp2ws.live: {ALL_MISSING}\n")


@pytest.mark.skipif(not can_capture(), reason="needs root or CAP_NET_RAW to capture on lo")
def test_live_does_not_warn_when_the_twins_are_chosen(tmp_path):
    lines = _live_log(tmp_path, _env(_package_copy(tmp_path), RTP2WS_NO_NATIVE="1"))
    assert [line for line in lines if " WARNING " in line] == []


def test_a_build_without_a_compiler_warns_and_still_makes_a_wheel(tmp_path):
    """What pip shows with -v (install.sh runs pip -q, then says it itself: see
    test_replay_warns_once_naming_every_missing_extension for the same line)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "native", src / "native")
    shutil.copytree(PACKAGE, src / "rtp2ws", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    r = subprocess.run([PY, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(tmp_path / "wheel"), str(src)],
                       env=dict(os.environ, CC="false"), capture_output=True, text=True, timeout=600)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-3000:]
    for name in EXTENSIONS:
        assert f"WARNING: the C extension rtp2ws.{name} was not built" in log
    (wheel,) = (tmp_path / "wheel").glob("rtp2ws-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"rtp2ws/{n}.pyi" for n in EXTENSIONS} | {"rtp2ws/py.typed"} <= names
    assert [n for n in names if n.endswith(".so")] == []


# --------------------------------------------------------------------------- extras


def test_sink_without_jsonschema_says_which_extra_to_install(tmp_path):
    r = subprocess.run([PY, "-m", "rtp2ws.cli", "sink", "--listen", "127.0.0.1:0", "--out-dir", str(tmp_path / "s")],
                       env=_env(_blocking(tmp_path, "jsonschema")), cwd=tmp_path, capture_output=True, text=True,
                       timeout=60)
    assert (r.returncode, r.stdout, r.stderr) == (
        2, "", "rtp2ws: error: rtp2ws sink needs jsonschema: pip install 'rtp2ws[sink]'\n")
    assert not (tmp_path / "s").exists()


def test_replay_and_streaming_need_neither_jsonschema_nor_dpkt(tmp_path):
    env = _env(_blocking(tmp_path, "jsonschema", "dpkt"))
    r = _replay(tmp_path, env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "calls.json").exists()
    code = "import rtp2ws.cli, rtp2ws.ws.sender, rtp2ws.ws.bridge, rtp2ws.run.live, rtp2ws.run.metrics"
    subprocess.run([PY, "-c", code], env=env, cwd=tmp_path, check=True, timeout=60)


def test_the_reference_pipeline_without_dpkt_says_which_extra_to_install(tmp_path):
    code = ("from rtp2ws.bench.harness import _reference_module\n"
            "try:\n    _reference_module()\nexcept RuntimeError as e:\n    print(e)\n")
    r = subprocess.run([PY, "-c", code], env=_env(_blocking(tmp_path, "dpkt")), cwd=tmp_path, capture_output=True,
                       text=True, timeout=60, check=True)
    assert r.stdout == "the reference pipeline needs dpkt: pip install 'rtp2ws[bench]'\n"


def _bench(tmp_path: Path, blocked: tuple[str, ...], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "rtp2ws.cli", "bench", "--calls", "2", "--seconds", "1", "--no-profile",
                           "--out", str(tmp_path / "results"), *args],
                          env=_env(_blocking(tmp_path, *blocked)), cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("blocked, args, line", [
    (("matplotlib",), ("--configs", "wav"),
     "rtp2ws bench needs matplotlib (for the plot), not installed: pip install 'rtp2ws[bench]'"),
    (("dpkt",), ("--configs", "wav,reference"),
     "rtp2ws bench needs dpkt (for the reference pipeline), not installed: pip install 'rtp2ws[bench]'"),
    (("matplotlib", "jsonschema"), ("--configs", "ws20", "--sink", "rtp2ws"),
     "rtp2ws bench needs matplotlib (for the plot), jsonschema (for --sink rtp2ws), not installed: "
     "pip install 'rtp2ws[bench,sink]'"),
])
def test_bench_without_an_extra_fails_first_naming_it(tmp_path, blocked, args, line):
    """Before it generates a capture or measures anything: one line, exit status 2."""
    r = _bench(tmp_path, blocked, *args)
    assert (r.returncode, r.stdout, r.stderr) == (2, "", f"rtp2ws: error: {line}\n")
    assert not (tmp_path / "results").exists()


def test_bench_without_dpkt_runs_what_does_not_need_it(tmp_path):
    """dpkt is asked for only by the reference pipeline's runs (here none: wav only, and
    no --latency, whose reference run it would be)."""
    code = ("from rtp2ws.bench.harness import BenchOptions, missing_extras\n"
            "print(missing_extras(BenchOptions(configs=('wav', 'ws20'))))\n"
            "print(missing_extras(BenchOptions(configs=('wav',), latency=True)))\n"
            "print(missing_extras(BenchOptions(configs=('wav',), latency=True, latency_reference=False)))\n")
    r = subprocess.run([PY, "-c", code], env=_env(_blocking(tmp_path, "dpkt")), cwd=tmp_path, capture_output=True,
                       text=True, timeout=60, check=True)
    assert r.stdout.splitlines() == [
        "None",
        "rtp2ws bench needs dpkt (for the reference pipeline), not installed: pip install 'rtp2ws[bench]'",
        "None"]


# --------------------------------------------------------------------------- stubs


def _stub_names(tree: ast.Module) -> dict[str, set[str] | None]:
    """Top-level names of a stub; for a class, the names in its body."""
    out: dict[str, set[str] | None] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            out[node.name] = {n.name for n in node.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        elif isinstance(node, ast.FunctionDef):
            out[node.name] = None
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out[node.target.id] = None
    return out


@all_built
@pytest.mark.parametrize("name", EXTENSIONS)
def test_every_extension_has_a_stub_naming_what_it_has(name):
    module = importlib.import_module(f"rtp2ws.{name}")
    stub = _stub_names(ast.parse((PACKAGE / f"{name}.pyi").read_text(encoding="utf-8")))
    public = {n for n in dir(module) if not n.startswith("_")}
    assert set(stub) == public
    for cls, members in stub.items():
        if members is not None:
            defined = vars(getattr(module, cls))
            assert members == {n for n in defined if not n.startswith("_") or n in ("__init__", "__call__")}, cls


@all_built
def test_stubs_match_the_extensions_by_stubtest():
    pytest.importorskip("mypy.stubtest")
    r = subprocess.run([PY, "-m", "mypy.stubtest", *(f"rtp2ws.{n}" for n in EXTENSIONS)], cwd=ROOT,
                       env=_env(ROOT), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
