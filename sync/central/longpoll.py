"""The change feed: long polls wait here, and a committed change wakes them.

A `changes` request with `wait_s` takes a ticket, reads its page, and when the page is empty
waits until the feed moves past the ticket (or the time is up), then reads again. Taking the
ticket before reading means a change committed between the read and the wait is never missed.
SQLite's backend wakes the feed after each commit that published a change; PostgreSQL's wakes it
on `NOTIFY`, so a change made through any central process wakes the waiters of every one.

Everything here runs on the event loop; database threads call `wake_threadsafe`.
"""

from __future__ import annotations

import asyncio
import contextlib


class ChangeFeed:
    """A generation counter with an event per generation: cheap to wait on by the thousand."""

    def __init__(self) -> None:
        self.generation = 0
        self.waiting = 0
        self.closed = False
        self._moved = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def ticket(self) -> int:
        return self.generation

    def wake(self) -> None:
        """Something changed: every waiter reads again."""
        self.generation += 1
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()

    def wake_threadsafe(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop stopped meanwhile
                loop.call_soon_threadsafe(self.wake)

    def close(self) -> None:
        """Stopping: every waiter answers now, and nobody waits from here on."""
        self.closed = True
        self.wake()

    async def wait(self, ticket: int, timeout_s: float) -> bool:
        """Until the feed moves past `ticket` or `timeout_s` passes; True when it moved."""
        if self.closed or self.generation != ticket:
            return True
        if timeout_s <= 0:
            return False
        self.waiting += 1
        try:
            async with asyncio.timeout(timeout_s):
                await self._moved.wait()
        except TimeoutError:
            return False
        finally:
            self.waiting -= 1
        return True
