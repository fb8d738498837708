"""What every fuzz target shares: the per-call time check, the hang watchdog, the
known-bug classifier and the frame-list encoding of seeds.

A target module defines ``run(data, clock)`` and gets its ``TestOneInput`` from
:func:`entry`.  ``run`` makes every call to the code under test through
``clock.call(fn, *args)``, so the slowest call of an input is known and a call that
never returns is stopped; it raises :class:`InvariantViolation` when an
output breaks a documented invariant and lets an undocumented exception escape.

Environment (set by ``fuzz.run``; the defaults are the long-run values):

``RTP2WS_FUZZ_CALL_MS``  per-call limit in ms of CPU time (100).  An input whose
    slowest call is over it is run again, and fails only if it is over again, so a
    garbage-collector pause or a busy machine does not count.
``RTP2WS_FUZZ_HANG_S``   CPU seconds one call may take before :class:`Hang` is raised
    where the code is (a Python traceback instead of libFuzzer's bare timeout) (1).
``RTP2WS_FUZZ_KNOWN_DIR`` when set, an input that hits a *known* bug (``fuzz.known``)
    is saved under ``<dir>/<target>/`` (the first few per bug) and counted instead of
    stopping the run, so a long run goes on finding other bugs.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import struct
import sys
import time
import traceback

CALL_LIMIT = float(os.environ.get("RTP2WS_FUZZ_CALL_MS", "100")) / 1000.0
HANG_LIMIT = float(os.environ.get("RTP2WS_FUZZ_HANG_S", "1"))
KNOWN_DIR = os.environ.get("RTP2WS_FUZZ_KNOWN_DIR") or None
KNOWN_KEEP = 3          # reproducers saved per known bug in one run


class InvariantViolation(AssertionError):
    """An output broke the target's documented invariant."""


class SlowCall(InvariantViolation):
    """One call took longer than ``RTP2WS_FUZZ_CALL_MS`` twice in a row."""


class Hang(Exception):
    """Raised by the watchdog (SIGPROF) in whatever Python code was running."""


def check(cond: bool, what: str) -> None:
    if not cond:
        raise InvariantViolation(what)


class Clock:
    """The slowest call of one input (CPU time: what the code spent, not what the
    machine's other processes took from it)."""

    __slots__ = ("worst", "what", "harness")

    def __init__(self) -> None:
        self.worst = 0.0
        self.what = ""
        self.harness = 0.0     # CPU time the harness spent inside calls (a checking sink): not counted

    def call(self, fn, *args, **kw):
        if _ARMED:
            signal.setitimer(signal.ITIMER_PROF, HANG_LIMIT)
        t = time.process_time()
        h = self.harness
        try:
            return fn(*args, **kw)
        finally:
            dt = time.process_time() - t - (self.harness - h)
            if _ARMED:
                signal.setitimer(signal.ITIMER_PROF, 0)
            if dt > self.worst:
                self.worst = dt
                self.what = getattr(fn, "__qualname__", repr(fn))


def _on_sigprof(signum, frame):
    raise Hang(f"one call still running after {HANG_LIMIT:g} s of CPU time")


_ARMED = False      # inside watchdog(): Clock.call arms the CPU timer around each call


@contextlib.contextmanager
def watchdog():
    """While inside, every ``Clock.call`` raises Hang in the running Python code once
    the call has used ``HANG_LIMIT`` seconds of CPU time.

    ITIMER_PROF (SIGPROF) leaves SIGALRM to libFuzzer's own ``-timeout`` (wall time per
    input), which stays the backstop for a hang inside C code."""
    global _ARMED
    if HANG_LIMIT <= 0 or sys.platform == "win32":
        yield
        return
    old = signal.signal(signal.SIGPROF, _on_sigprof)
    _ARMED = True
    try:
        yield
    finally:
        _ARMED = False
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, old)


_saved: dict[str, int] = {}


def _save_known(target: str, bug: str, data: bytes) -> None:
    n = _saved.get(bug, 0)
    _saved[bug] = n + 1
    if n >= KNOWN_KEEP:
        return
    folder = os.path.join(KNOWN_DIR, target)
    os.makedirs(folder, exist_ok=True)
    name = f"{bug}-{hashlib.sha1(data).hexdigest()[:10]}"
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)
    print(f"\nfuzz: known bug {bug} hit by {target}; reproducer {os.path.join(folder, name)}", file=sys.stderr)


def known_hits() -> dict[str, int]:
    """Known bugs hit in this process so far, with counts."""
    return dict(_saved)


def entry(target: str, run):
    """``TestOneInput`` for ``run(data, clock)``: the watchdog, the slow-call retry,
    and (with ``RTP2WS_FUZZ_KNOWN_DIR``) known bugs set aside."""
    from .known import classify

    def once(data: bytes) -> Clock:
        clock = Clock()
        with watchdog():
            run(data, clock)
        return clock

    def TestOneInput(data: bytes) -> None:
        try:
            clock = once(data)
            if clock.worst > CALL_LIMIT:
                again = once(data)
                if again.worst > CALL_LIMIT:
                    raise SlowCall(f"{again.what} took {again.worst * 1000:.0f} ms of CPU "
                                   f"(limit {CALL_LIMIT * 1000:.0f} ms; {clock.worst * 1000:.0f} ms the first time)")
        except BaseException as exc:      # noqa: BLE001 -- sorted below, re-raised unless known
            if isinstance(exc, KeyboardInterrupt):
                raise
            bug = classify(target, exc)
            if bug is not None and KNOWN_DIR:
                _save_known(target, bug, data)
                return
            if bug is not None:
                exc.add_note(f"fuzz: this is the known bug {bug!r} (fuzz/known.py)")
            raise

    TestOneInput.target = target
    TestOneInput.run = run
    return TestOneInput


# -- a list of (time, frame) in bytes: how seeds of frame-stream targets are stored ---------

_FRAME = struct.Struct("!HH")   # frame length, time step in ms (signed below)


def encode_frames(frames: list[tuple[float, bytes]]) -> bytes:
    """``[(t, frame)]`` as the ``raw`` mode of the frame-stream targets reads it:
    per frame, its length and the time since the previous one (ms, -32768..32767)."""
    out = []
    prev = frames[0][0] if frames else 0.0
    for t, f in frames:
        step = max(-32768, min(32767, round((t - prev) * 1000)))
        prev += step / 1000.0
        out.append(_FRAME.pack(min(len(f), 0xFFFF), step & 0xFFFF) + f[:0xFFFF])
    return b"".join(out)


def decode_frames(data: bytes, t0: float = 1000.0) -> list[tuple[float, bytes]]:
    out = []
    t = t0
    pos = 0
    while pos + 4 <= len(data):
        n, step = _FRAME.unpack_from(data, pos)
        pos += 4
        if step >= 0x8000:
            step -= 0x10000
        t += step / 1000.0
        out.append((t, data[pos:pos + n]))
        pos += n
    return out


def describe(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))
