"""``StreamTask``: the life of a stream's task in the event loop, shared by the
sender's streams (``ws.sender.Stream``) and AudioHook's (``ws.hookstream.HookStream``).
``_begin`` starts it, ``_abort`` gives it up (the reason says whether that counts as
given up: not at ``shutdown``), and it ends exactly once whatever ends it: ``_run``'s
``finally``, or ``_task_done`` for a task cancelled before its first step (which never
ran that ``finally``).  What the stream still held is counted by its own
``_finish_undelivered``; what it releases at the end, by ``_task_ended``."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

__all__ = ["StreamTask"]

log = logging.getLogger("rtp2ws.sender")


class StreamTask:
    TASK = "stream"                  # the task is named rtp2ws-<TASK>-<stream id>; its failure logged so

    stream_id: str
    done: bool
    log_extra: dict[str, Any]
    _sender: Any                     # ws.sender.Sender (its lock, _stream_done)
    _abort_reason: str | None
    _task: asyncio.Task[None] | None
    _linger_handle: asyncio.TimerHandle | None

    async def _connect_loop(self) -> None:
        raise NotImplementedError

    def _finish_undelivered(self, reason: str, count_given_up: bool) -> None:
        raise NotImplementedError

    def _task_ended(self) -> None:
        """What the stream releases when its task ends (nothing here)."""

    def _begin(self) -> None:
        """The stream's task starts (in the event loop)."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"rtp2ws-{self.TASK}-{self.stream_id}")
        self._task.add_done_callback(self._task_done)
        if self._abort_reason is not None:      # given up before it started: _task_done ends it
            self._task.cancel()

    def _abort(self, reason: str) -> None:
        """Give up (counted as given up unless the sender shuts down)."""
        if self.done or self._abort_reason is not None:
            return
        self._abort_reason = reason
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        try:
            await self._connect_loop()
        except asyncio.CancelledError:
            reason = self._abort_reason
            if reason is None:
                self._finish_undelivered("cancelled", count_given_up=False)
                raise
            task = asyncio.current_task()
            assert task is not None    # this coroutine is the stream's task
            task.uncancel()
            self._finish_undelivered(reason, count_given_up=reason != "shutdown")
        except Exception:  # a bug: the stream must still end cleanly and be counted
            log.exception("stream %s: %s task failed", self.stream_id, self.TASK, extra=self.log_extra)
            self._finish_undelivered("internal error", count_given_up=True)
        finally:
            self._task_ended()
            if self._linger_handle is not None:
                self._linger_handle.cancel()
            self.done = True
            self._sender._stream_done(self)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        # A task cancelled before its first step never ran _run's finally.
        if not self.done:
            reason = self._abort_reason or "cancelled"
            self._finish_undelivered(reason, count_given_up=reason not in ("shutdown", "cancelled"))
            self.done = True
            self._sender._stream_done(self)
