"""``Wakeup``: what a stream's task waits on (the sender's streams and
``ws.hookstream``'s), an ``asyncio.Event`` cut down to one waiter."""

from __future__ import annotations

import asyncio

__all__ = ["Wakeup"]


class Wakeup:
    """``asyncio.Event`` for the one task that waits on it (the stream's), made only of
    a flag and, while the task waits, a future: an ``asyncio.Event`` keeps a deque of
    waiters from the start, 760 bytes in every stream.  Set and cleared in the event
    loop; ``is_set`` may be read from any thread."""

    __slots__ = ("_set", "_waiter")

    def __init__(self) -> None:
        self._set = False
        self._waiter: asyncio.Future[None] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> None:
        if self._set:
            return
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            self._waiter = None
