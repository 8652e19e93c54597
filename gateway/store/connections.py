"""The store's three connections to one database and what every part of the store shares: how
they are opened (start-up checks, migration), and `StorePart`, the base that holds them. Which
connection does what, on which thread and why: the package docstring (`gateway/store/__init__.py`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from gateway.store.datadir import (
    DataDirProblem,
    check_before_open,
    describe_unwritable,
    unwritable,
    write_marker,
)
from gateway.store.schema import migrate
from gateway.store.writer import DEFAULT_MAX_PENDING, Writer, connect, is_read_only

# Short: a lookup that ever had to wait would hold up the event loop.
LOOKUP_BUSY_TIMEOUT_MS = 250
# A scan on the reader's thread may wait out a checkpoint; the loop is not held meanwhile.
READER_BUSY_TIMEOUT_MS = 10_000


class StoreCorrupt(Exception):
    """`PRAGMA quick_check` found damage; the daemon refuses to run on it."""


_ZERO = dt.timedelta(0)


def utc_stamp(moment: dt.datetime) -> str:
    """RFC 3339 UTC with microseconds and `Z`: one shape everywhere, so text order is time order."""
    # isoformat, not strftime: a tenth of the cost; this runs several times per check and once
    # per member in a sync.
    if moment.utcoffset() != _ZERO:
        moment = moment.astimezone(dt.UTC)
    return moment.isoformat(timespec="microseconds")[:26] + "Z"


def lookup_connection(path: Path) -> sqlite3.Connection:
    """The connection read on the event loop's own thread (point lookups only)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {LOOKUP_BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA query_only = 1")
    return conn


async def reader_connection(path: Path) -> aiosqlite.Connection:
    """The connection for scans and counts, on aiosqlite's own thread."""
    reader = await aiosqlite.connect(path, isolation_level=None)
    try:
        await reader.execute(f"PRAGMA busy_timeout = {READER_BUSY_TIMEOUT_MS}")
        await reader.execute("PRAGMA query_only = 1")
    except BaseException:
        await reader.close()
        raise
    return reader


def _check_and_migrate(conn: sqlite3.Connection) -> tuple[int, int]:
    try:
        problems = [row[0] for row in conn.execute("PRAGMA quick_check").fetchall()]
    except sqlite3.DatabaseError as error:  # damaged beyond what quick_check can list
        raise StoreCorrupt(str(error)) from error
    if problems != ["ok"]:
        raise StoreCorrupt("; ".join(str(p) for p in problems[:5]))
    return migrate(conn)


@dataclass(slots=True)
class Held:
    """What every request reads and few writes change, held in memory instead of read from
    SQLite per request: loaded at first use, dropped (None) by the write that changes it, after
    its commit. Only this process writes the database while it runs (the data directory lock)."""

    # (effective_from, received_at, version, document JSON), latest first
    rules: tuple[tuple[str, str, str, str], ...] | None = None
    paused: dict[str, bool] | None = None  # program -> paused at this store
    categories: dict[int, str] | None = None  # POS menu item object -> family group


@dataclass(frozen=True, slots=True)
class Connections:
    """The three connections of one open store, and what is held in memory beside them."""

    path: Path
    writer: Writer
    reader: aiosqlite.Connection
    lookup: sqlite3.Connection
    held: Held

    @classmethod
    async def open(
        cls, path: Path, *, max_db_mb: int = 0, max_pending_events: int = DEFAULT_MAX_PENDING
    ) -> Connections:
        """Check the database (it is not a store that lost its content; quick_check), migrate
        it on the writer's thread, then open the reader and the lookup connection. A file this
        process cannot write raises `DataDirProblem`."""
        path.parent.mkdir(parents=True, exist_ok=True)
        check_before_open(path)
        writer = Writer(lambda: connect(path, max_db_mb=max_db_mb), max_pending=max_pending_events)
        try:
            await writer.start()
            await writer.run_on_thread(_check_and_migrate)
            reader = await reader_connection(path)
        except sqlite3.Error as error:
            await writer.close()
            if is_read_only(error) or "unable to open database file" in str(error):
                raise DataDirProblem(
                    unwritable(path) or describe_unwritable(path, str(error))
                ) from error
            raise
        except BaseException:
            await writer.close()
            raise
        with contextlib.suppress(OSError):  # the write probe reports an unwritable directory
            write_marker(path.parent)
        return cls(path, writer, reader, lookup_connection(path), Held())

    async def close(self) -> None:
        """Commit what is queued, then close all three."""
        await self.writer.close()
        await self.reader.close()
        self.lookup.close()


class StorePart:
    """What every part of the store (cache, coupons, checks, outbox, switches) stands on: the
    database's path and its three connections, and the outbox's listeners."""

    def __init__(self, connections: Connections) -> None:
        self.connections = connections
        self.path = connections.path
        self.writer = connections.writer
        self._reader = connections.reader
        self._lookup = connections.lookup
        self._held = connections.held
        # Called after a commit that added events to the outbox (the forwarder's wake-up).
        self.outbox_listeners: list[Callable[[], None]] = []

    def _paused(self, program: str) -> bool:
        """Whether a program is paused at this store (`edge-gateway pause`), from memory."""
        held = self._held
        if held.paused is None:
            rows = self._lookup.execute("SELECT program, paused FROM program_switches")
            held.paused = {str(program): bool(paused) for program, paused in rows}
        return held.paused.get(program, False)

    def _outbox_changed(self) -> None:
        for listener in self.outbox_listeners:
            listener()

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first row of an indexed point lookup, read on the event loop's own thread.

        Such a read takes about 25 µs from SQLite's page cache, a quarter of an empty hop to a
        thread and back (measured with bench/lookup.py, docs/performance.md); WAL means it never
        waits for the writer. Scans and counts go through aiosqlite (`self._reader`) instead.
        """
        return self._lookup.execute(sql, params).fetchone()
