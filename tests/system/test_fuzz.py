"""The fuzz targets (fuzz/, atheris): a short run of each, and every saved reproducer.

``test_target_runs_clean`` gives each target a few seconds of libFuzzer (about a minute
in all) and fails on the first input that breaks the target's invariant, printing the
reproducer and its traceback.  The per-call limit is looser here than in long runs
(1 s of CPU instead of 100 ms, see fuzz/README.md): the suite shares a noisy machine.
``test_crash_reproducers_replay_clean`` replays every input in fuzz/crashes/ (bugs the
targets found) through its target, in this process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from paths import ROOT

SECONDS_PER_TARGET = 3.5

os.environ["RTP2WS_FUZZ_CALL_MS"] = "1000"
os.environ["RTP2WS_FUZZ_HANG_S"] = "2"
for var in ("RTP2WS_FUZZ_KNOWN_DIR", "RTP2WS_FUZZ_GUARD"):
    os.environ.pop(var, None)

atheris = pytest.importorskip("atheris", reason="atheris (the test extra) is not installed")
sys.path.insert(0, str(ROOT))

from fuzz.targets import TARGETS  # noqa: E402

CRASHES = sorted(p for p in (ROOT / "fuzz" / "crashes").glob("*/*") if p.is_file())


@pytest.mark.parametrize("target", TARGETS)
def test_target_runs_clean(target, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "fuzz.run", "--target", target, "--seconds", str(SECONDS_PER_TARGET),
         "--call-ms", "1000", "--hang-s", "2", "--timeout", "20", "--work-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert f"{target}: " in proc.stdout and " inputs in " in proc.stdout, proc.stdout
    ran = int(proc.stdout.split(f"{target}: ", 1)[1].split(" inputs", 1)[0])
    assert ran > 0, proc.stdout


def test_every_target_has_seeds_and_an_invariant():
    import importlib

    for target in TARGETS:
        module = importlib.import_module(f"fuzz.targets.{target}")
        assert len(module.INVARIANT) > 100 and callable(module.TestOneInput)
        assert any((ROOT / "fuzz" / "corpus" / target).iterdir()), target


@pytest.mark.parametrize("path", CRASHES, ids=[f"{p.parent.name}/{p.name}" for p in CRASHES])
def test_crash_reproducers_replay_clean(path):
    import importlib

    module = importlib.import_module(f"fuzz.targets.{path.parent.name}")
    module.TestOneInput(path.read_bytes())


def test_leg_events_of_two_legs_in_one_tick_compare_under_any_hash_seed():
    """fuzz/crashes/pipeline/leg-events-of-two-legs-in-a-tick: with PYTHONHASHSEED=6 the
    pipeline hands two legs their codec events in one tick in another order through
    the fast path than packet at a time (it walks a set of legs); the oracle compared
    all legs' events in one order and reported a difference.  Each leg's events are in
    its own story; only call events are compared in one order."""
    path = ROOT / "fuzz" / "crashes" / "pipeline" / "leg-events-of-two-legs-in-a-tick"
    proc = subprocess.run([sys.executable, "-m", "fuzz.run", "--target", "pipeline", "--replay", str(path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONHASHSEED="6"))
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stdout + proc.stderr
