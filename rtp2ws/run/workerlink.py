"""A worker's end of the pipe to its supervisor (``run.workers``): the reports a
``live`` or paced ``replay`` worker (started with ``RTP2WS_WORKER=I/N FD``) sends
instead of printing, serving metrics or writing the manifest itself.

Each report is one JSON object on a line of its own, written whole under a lock
(the decoder thread and the event loop both report):

``{"type": "ready", ...}``        the capture is open (live), privileges dropped
``{"type": "snapshot", "snapshot": {...}}``  about once a second (live): metrics, log lines
``{"type": "call", "entry": {...}}``  a call of this worker ended: its manifest entry
``{"type": "summary", ...}``      the end: what the summary line, calls.json and the
                                  exit code are merged from

A supervisor that has gone away (the pipe broken) stops the worker: ``lost`` is set,
and the runners treat it as a stop request, so the worker's calls end with
``shutdown`` and it exits.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

from ..pipeline.sink import LegView, Sink
from ..signalling.calls import Call

__all__ = ["WORKER_ENV", "ManifestReport", "Reporter", "die_with_parent", "parse_worker"]

# Set by the supervisor in a worker's environment (and taken out of it by the worker):
# ``I/N FD``.  Not an option, so neither --help nor a --config file shows or takes it.
WORKER_ENV = "RTP2WS_WORKER"

PR_SET_PDEATHSIG = 1


def parse_worker(text: str) -> tuple[tuple[int, int], int]:
    """``RTP2WS_WORKER``'s value ``I/N FD`` (worker I of N, 0 <= I < N, reporting on
    file descriptor FD) -> ((I, N), FD); ValueError otherwise."""
    shard, _, fd = text.partition(" ")
    index, sep, count = shard.partition("/")
    if not sep or not (index.isdigit() and count.isdigit() and fd.isdigit()) or not 0 <= int(index) < int(count):
        raise ValueError(f"must be 'I/N FD' with 0 <= I < N, not {text!r}")
    return (int(index), int(count)), int(fd)


def die_with_parent() -> None:
    """SIGTERM this process when its parent (the supervisor) dies, as far as Linux
    offers it (``prctl(PR_SET_PDEATHSIG)``; cleared when privileges are dropped, after
    which the broken pipe tells the worker at its next report)."""
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        pass


class Reporter:
    """JSON lines to the supervisor on file descriptor ``fd`` (inherited)."""

    def __init__(self, fd: int, shard: tuple[int, int]) -> None:
        self.shard = shard
        self._file = os.fdopen(fd, "wb", buffering=0)
        self._lock = threading.Lock()
        self.lost = threading.Event()          # set once the supervisor is gone

    def send(self, kind: str, **fields: Any) -> None:
        line = json.dumps({"type": kind, **fields}, default=str).encode() + b"\n"
        with self._lock:
            if self.lost.is_set():
                return
            try:
                view = memoryview(line)
                while view:                    # a pipe takes a long line in pieces
                    n = self._file.write(view)
                    view = view[n or 0:]
            except (BrokenPipeError, OSError):
                self.lost.set()

    def is_set(self) -> bool:
        """A stop condition for the runners: the supervisor is gone."""
        return self.lost.is_set()

    def close(self) -> None:
        with self._lock:
            try:
                self._file.close()
            except OSError:
                pass


class ManifestReport(Sink):
    """After a ``WavSink`` (without journal) in a ``Tee``: hands each ended call's
    manifest entry to the supervisor and forgets it, so the worker holds only the calls
    in progress and never writes ``calls.json``/``calls.jsonl`` (one process, the
    supervisor, writes those)."""

    def __init__(self, manifest: list[dict[str, Any]], reporter: Reporter) -> None:
        self.manifest = manifest
        self.reporter = reporter

    def call_ended(self, call: Call, legs: dict[str, LegView]) -> None:
        while self.manifest:
            self.reporter.send("call", entry=self.manifest.pop(0))
