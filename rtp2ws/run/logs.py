"""The commands' logs: where they go, at which level, in which format, and the one
line per call start and end.

``setup`` (``live``, ``replay``, ``sink``, the ``--workers`` supervisor) puts one
handler on the root logger: stderr or ``--log-file`` (``ReopenableFileHandler``,
reopened on SIGHUP), ``--log-level`` and ``--log-format``:

* ``text``: ``time LEVEL logger: message``, the message made one printable line
  (``printable``): a Call-ID, a server's close reason or anything else that came
  from the network cannot start a line of its own;
* ``json``: one JSON object per line, ``time`` (ISO 8601, UTC), ``level``,
  ``logger``, ``message``, and what the record was given with ``extra=``:
  ``call_id`` on every line about a call (``call_extra``), ``stream_id`` and
  ``tag`` on a stream's, ``worker`` in a worker of ``--workers``.  JSON escapes
  every control character (``ensure_ascii``: line separators too).

``CallLog`` is the sink that writes the call lines (``call started``, ``call
ended`` with its reason and duration), at INFO on the ``rtp2ws.calls`` logger.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..pipeline.sink import Forward, LegView, Sink
from ..signalling.calls import Call

__all__ = ["FORMATS", "LEVELS", "CallLog", "JsonFormatter", "Logging", "ReopenableFileHandler", "TextFormatter",
           "call_extra", "printable", "setup"]

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

calls_log = logging.getLogger("rtp2ws.calls")

# what every LogRecord has; anything else on a record came with extra= (call_id, stream_id, tag ...)
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


# --------------------------------------------------------------------------- one line

def _escape_char(c: str) -> str:
    if c == "\\":
        return "\\\\"
    if c in "\n\r\t":
        return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}[c]
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def printable(text: str) -> str:
    """``text`` as one printable line: a backslash doubled, newlines, other
    control characters and anything else ``str.isprintable`` rejects (line and
    paragraph separators, format and bidi controls, lone surrogates) escaped."""
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(c if c.isprintable() and c != "\\" else _escape_char(c) for c in text)


# --------------------------------------------------------------------------- formats

class TextFormatter(logging.Formatter):
    """``fmt`` with the message made one printable line (a traceback, ours, follows it
    as it is)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message)
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the record's extras
    (``call_id``, ``stream_id``, ``tag``, ``reason`` ...) and ``worker`` when set."""

    def __init__(self, worker: str | None = None) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.worker is not None:
            doc["worker"] = self.worker
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in doc:
                doc[key] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exception"] = record.exc_text
        return json.dumps(doc, default=str)


# --------------------------------------------------------------------------- handlers

class ReopenableFileHandler(logging.FileHandler):
    """A log file that ``reopen()`` closes and opens again by name (logrotate's
    ``postrotate kill -HUP``)."""

    def reopen(self) -> None:
        """Raises OSError (and keeps writing to the old file) if the new one cannot be opened."""
        self.acquire()
        try:
            new = self._open()
            old, self.stream = self.stream, new
            if old is not None:
                try:
                    old.flush()
                finally:
                    old.close()
        finally:
            self.release()


@dataclass
class Logging:
    """What ``setup`` did: ``file`` (the --log-file handler, for SIGHUP) and what
    ``restore`` puts back (a command run inside another program, the tests)."""
    handler: logging.Handler
    file: ReopenableFileHandler | None
    _before: tuple[list[logging.Handler], int] = field(repr=False)

    def restore(self) -> None:
        root = logging.getLogger()
        root.removeHandler(self.handler)
        self.handler.close()
        handlers, level = self._before
        for h in handlers:
            root.addHandler(h)
        root.setLevel(level)


def setup(level: str = "info", fmt: str = "text", log_file: str | None = None, worker: str | None = None,
          text_format: str = TEXT_FORMAT, escape: bool = True) -> Logging:
    """Everything at ``level`` and above to ``log_file`` (raises OSError if it cannot be
    opened) or stderr, in ``fmt`` (``text``: ``text_format``, the message made
    ``printable`` unless ``escape`` is False, for loggers that escape their own
    records; ``json``); ``worker`` (a worker's ``1/2``) follows the logger's name in
    text, is a key of its own in JSON.  Replaces the root logger's handlers until
    ``restore``."""
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, not {level!r}")
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    reopenable = ReopenableFileHandler(log_file, encoding="utf-8") if log_file else None
    handler: logging.Handler = reopenable if reopenable is not None else logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(worker))
    else:
        tagged = text_format.replace("%(name)s", f"%(name)s (worker {worker})") if worker else text_format
        handler.setFormatter(TextFormatter(tagged) if escape else logging.Formatter(tagged))
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    for h in before[0]:
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    return Logging(handler, reopenable, before)


# --------------------------------------------------------------------------- call lines

def call_extra(call: Call) -> dict[str, str]:
    """``extra=`` of a log line about ``call``."""
    return {"call_id": call.call_id}


class CallLog(Forward):
    """Passes everything on to ``inner`` and logs one INFO line when a call starts and
    one when it ends (reason, duration in capture time), each with its ``call_id``."""

    def __init__(self, inner: Sink, logger: logging.Logger = calls_log) -> None:
        super().__init__(inner)
        self.log = logger

    def call_started(self, call: Call) -> None:
        if self.log.isEnabledFor(logging.INFO):
            self.log.info("call started: %s", call.call_id, extra=call_extra(call))
        self.inner.call_started(call)

    def call_ended(self, call: Call, legs: dict[str, LegView]) -> None:
        self.inner.call_ended(call, legs)
        if self.log.isEnabledFor(logging.INFO):
            end = call.end if call.end is not None else call.last_activity
            duration = round(max(0.0, end - call.start), 3)
            self.log.info("call ended: %s (%s, %.1f s)", call.call_id, call.end_reason, duration,
                          extra={**call_extra(call), "reason": call.end_reason, "duration_s": duration})
