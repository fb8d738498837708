"""``rtp2ws --version``: the version, and the backend each part with a C twin runs on
(``rtp2ws.speedups.PARTS``): ``native``, or its numpy/python twin when the
extension is not built or ``RTP2WS_NO_NATIVE`` opts out of it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from rtp2ws import __version__, speedups
from rtp2ws.codec import g711, resample
from rtp2ws.fastpath import twin as fastpath
from rtp2ws.ws import frame, outbox, wire

PY = sys.executable
NATIVE = f"rtp2ws {__version__} (g711: native, resample: native, fastpath: native, wsframe: native, outbox: native, wire: native)\n"
TWINS = f"rtp2ws {__version__} (g711: numpy, resample: numpy, fastpath: python, wsframe: python, outbox: python, wire: python)\n"


def version(**env) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k != "RTP2WS_NO_NATIVE"}
    full.update(env)
    return subprocess.run([PY, "-m", "rtp2ws.cli", "--version"], env=full, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.skipif(speedups.disabled() or speedups.missing() != [], reason="the C extensions are not all built")
def test_version_names_the_native_backends():
    r = version()
    assert (r.returncode, r.stdout, r.stderr) == (0, NATIVE, "")


@pytest.mark.parametrize("value", ["1", "yes"])
def test_opting_out_names_the_twins(value):
    r = version(RTP2WS_NO_NATIVE=value)
    assert (r.returncode, r.stdout, r.stderr) == (0, TWINS, "")


def test_no_native_set_to_0_or_empty_is_no_opt_out():
    assert version(RTP2WS_NO_NATIVE="0").stdout == version(RTP2WS_NO_NATIVE="").stdout == version().stdout


def test_the_registry_says_what_each_module_uses():
    assert speedups.in_use() == {"g711": g711.BACKEND, "resample": resample.BACKEND,
                                 "fastpath": fastpath.BACKENDS[0], "wsframe": frame.BACKEND,
                                 "outbox": outbox.BACKEND, "wire": wire.BACKEND}
    assert (g711.BACKENDS, resample.BACKENDS, fastpath.BACKENDS, frame.BACKENDS, outbox.BACKENDS,
            wire.BACKENDS) == tuple(
        speedups.pick(part)[1] for part in ("g711", "resample", "fastpath", "wsframe", "outbox", "wire"))


def test_the_registry_says_what_each_module_uses_when_opted_out():
    code = ("from rtp2ws import speedups; from rtp2ws.codec import g711, resample; "
            "from rtp2ws.fastpath import twin; from rtp2ws.ws import frame, outbox, wire; "
            "print(speedups.in_use()); "
            "print(g711.BACKENDS, resample.BACKENDS, twin.BACKENDS, frame.BACKENDS, outbox.BACKENDS, wire.BACKENDS)")
    r = subprocess.run([PY, "-c", code], env=dict(os.environ, RTP2WS_NO_NATIVE="1"), capture_output=True,
                       text=True, timeout=60, check=True)
    assert r.stdout.splitlines() == [
        "{'g711': 'numpy', 'resample': 'numpy', 'fastpath': 'python', 'wsframe': 'python', 'outbox': 'python', "
        "'wire': 'python'}",
        "('numpy',) ('numpy',) ('python',) ('python',) ('python',) ('python',)",
    ]


def test_pick_names_the_extension_and_the_backends():
    for part, (name, twin) in speedups.PARTS.items():
        native, backends = speedups.pick(part)
        if native is None:
            assert backends == (twin,)
        else:
            assert native.__name__ == f"rtp2ws.{name}" and backends == ("native", twin)
    with pytest.raises(KeyError):
        speedups.pick("mp3")
