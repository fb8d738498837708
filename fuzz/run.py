"""Run the fuzz targets: ``python -m fuzz.run --target sip --seconds 3600``.

Each target runs in its own libFuzzer process (``fuzz.child``), one after another, with
``-workers=1``: the committed seeds (``fuzz/corpus/<target>/``) are read, and what the
run adds goes to ``out/fuzz/<target>/corpus`` (kept between runs, not committed).  A
crash, a hang or an input over the memory limit stops that target; its reproducer is
written to ``out/fuzz/<target>/`` and printed.  With ``--keep-going`` inputs that hit a
*known* bug (``fuzz/known.py``) are saved under ``out/fuzz/known/<target>/`` and the run
goes on (copy a small one to ``fuzz/crashes/<target>/`` to keep it as a regression test).  ``--replay FILE...`` runs files through a target without libFuzzer.

Exit status: 0 when no target crashed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time

from .targets import TARGETS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")
KNOWN = os.path.join(ROOT, "out", "fuzz", "known")
WORK = os.path.join(ROOT, "out", "fuzz")


def _env(args) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["RTP2WS_FUZZ_CALL_MS"] = str(args.call_ms)
    env["RTP2WS_FUZZ_HANG_S"] = str(args.hang_s)
    env["RTP2WS_FUZZ_GUARD"] = "1" if args.guard_known else "0"
    if args.keep_going:
        env["RTP2WS_FUZZ_KNOWN_DIR"] = KNOWN
    else:
        env.pop("RTP2WS_FUZZ_KNOWN_DIR", None)
    return env


def run_target(target: str, args, seconds: float | None) -> dict:
    """One libFuzzer run of ``target``; a summary dict."""
    work = os.path.join(args.work_dir or WORK, target)
    corpus = os.path.join(work, "corpus")
    os.makedirs(corpus, exist_ok=True)
    seeds = os.path.join(CORPUS, target)
    cmd = [sys.executable, "-m", "fuzz.child", target,
           f"-timeout={args.timeout}", f"-rss_limit_mb={args.rss_limit_mb}", f"-max_len={args.max_len}",
           "-workers=1", "-print_final_stats=1", f"-artifact_prefix={work}{os.sep}"]
    if seconds is not None:
        cmd.append(f"-max_total_time={max(1, int(seconds))}")
    if args.runs is not None:
        cmd.append(f"-runs={args.runs}")
    if args.seed is not None:
        cmd.append(f"-seed={args.seed}")
    cmd += list(args.libfuzzer) + [corpus] + ([seeds] if os.path.isdir(seeds) else [])
    log_path = os.path.join(work, "last.log")
    started = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.run(cmd, cwd=ROOT, env=_env(args), stdout=log, stderr=subprocess.STDOUT)
    elapsed = time.monotonic() - started
    with open(log_path, errors="replace") as f:
        text = f.read()
    stat = dict(re.findall(r"stat::(\w+):\s+(\d+)", text))
    artifact = re.findall(r"Test unit written to (\S+)", text)
    known: dict[str, int] = {}
    for name in re.findall(r"fuzz: known bug (\S+) hit", text):
        known[name] = known.get(name, 0) + 1
    summary = {
        "target": target, "returncode": proc.returncode, "seconds": round(elapsed, 1),
        "execs": int(stat.get("number_of_executed_units", 0)),
        "exec_per_sec": int(stat.get("average_exec_per_sec", 0)),
        "peak_rss_mb": int(stat.get("peak_rss_mb", 0)),
        "corpus": len(os.listdir(corpus)), "known": known, "log": log_path,
        "artifact": artifact[-1] if artifact else None,
    }
    if proc.returncode != 0:
        i = text.rfind("=== Uncaught Python exception")
        summary["failure"] = text[i:i + 5000] if i >= 0 else text[-3000:]
    return summary


def replay(target: str, paths: list[str]) -> int:
    import importlib

    os.environ.setdefault("RTP2WS_FUZZ_CALL_MS", "1000")
    module = importlib.import_module(f"fuzz.targets.{target}")
    bad = 0
    for path in paths:
        with open(path, "rb") as f:
            data = f.read()
        try:
            module.TestOneInput(data)
            print(f"{path}: ok")
        except BaseException as e:      # noqa: BLE001 -- reported
            import traceback
            bad += 1
            print(f"{path}: {type(e).__name__}: {e}")
            traceback.print_exc()
    return 1 if bad else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fuzz.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", action="append", choices=TARGETS, help="a target (repeatable); default: all")
    ap.add_argument("--list", action="store_true", help="list the targets and their invariants")
    ap.add_argument("--seconds", type=float, help="time per target (libFuzzer -max_total_time)")
    ap.add_argument("--total-seconds", type=float, help="time for all the chosen targets, shared equally")
    ap.add_argument("--runs", type=int, help="inputs per target (libFuzzer -runs)")
    ap.add_argument("--seed", type=int, help="libFuzzer -seed (default: random)")
    ap.add_argument("--keep-going", action="store_true",
                    help="save inputs that hit a known bug (fuzz/known.py) under out/fuzz/known/ and go on")
    ap.add_argument("--guard-known", action="store_true",
                    help="with --keep-going: stop inputs that would hang or blow up in a known, unfixed bug "
                         "before they do (fuzz/known.py), so the run's time goes to the rest")
    ap.add_argument("--call-ms", type=float, default=100.0,
                    help="per-call CPU limit in ms, checked twice before it counts (default 100)")
    ap.add_argument("--hang-s", type=float, default=1.0, help="CPU seconds per call before Hang (default 1)")
    ap.add_argument("--timeout", type=int, default=10, help="libFuzzer -timeout, wall seconds per input (default 10)")
    ap.add_argument("--rss-limit-mb", type=int, default=2048, help="libFuzzer -rss_limit_mb (default 2048)")
    ap.add_argument("--max-len", type=int, default=8192, help="libFuzzer -max_len (default 8192)")
    ap.add_argument("--work-dir", help="where the growing corpus and crash files go (default out/fuzz)")
    ap.add_argument("--replay", nargs="+", metavar="FILE", help="run these inputs through --target, no libFuzzer")
    ap.add_argument("libfuzzer", nargs="*", help="more libFuzzer flags, after --")
    args = ap.parse_args(argv)
    if args.list:
        import importlib
        for t in TARGETS:
            print(f"== {t}\n{importlib.import_module(f'fuzz.targets.{t}').INVARIANT}")
        return 0
    targets = args.target or list(TARGETS)
    if args.replay:
        if len(targets) != 1:
            ap.error("--replay needs exactly one --target")
        return replay(targets[0], args.replay)
    seconds = args.seconds
    if args.total_seconds is not None:
        seconds = args.total_seconds / len(targets)
    if seconds is None and args.runs is None:
        ap.error("give --seconds, --total-seconds or --runs")
    failed = 0
    for t in targets:
        s = run_target(t, args, seconds)
        known = ", ".join(f"{k} x{v}" for k, v in s["known"].items()) or "none"
        print(f"{t}: {s['execs']} inputs in {s['seconds']} s ({s['exec_per_sec']} exec/s), "
              f"peak RSS {s['peak_rss_mb']} MB, corpus {s['corpus']}, known bugs hit: {known}", flush=True)
        if s["returncode"] != 0:
            failed += 1
            print(f"{t}: FAILED (exit {s['returncode']}); reproducer {s['artifact']}; log {s['log']}\n"
                  f"  replay: python -m fuzz.run --target {t} --replay {s['artifact']}\n{s['failure']}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
