"""Another connection holding a database's write lock, as an operator's sqlite3 shell or a backup
would: the store must wait for it without holding up the event loop."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path


@asynccontextmanager
async def write_lock_held(path: Path) -> AsyncIterator[None]:
    """`BEGIN IMMEDIATE` on another connection, from a thread, for the body's duration."""
    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            taken.set()
            release.wait(10)
            other.execute("ROLLBACK")
        finally:
            other.close()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert await asyncio.to_thread(taken.wait, 5), "the write lock was not taken"
        yield
    finally:
        release.set()
        await asyncio.to_thread(holder.join, 10)
