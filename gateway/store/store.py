"""`Store`: the gateway's store as one object over one set of connections, for the daemon,
the service and sync to hold. Each concern is its own part (cache, coupons, checks and ledger,
outbox, switches; one module each); this module opens and closes them together and answers
the status questions that span them. The connection model: `gateway/store/__init__.py`.

The names callers import from here (records of every part) are re-exported below.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.domain.models import ReservedCoupon
from gateway.store.backup import backup_database
from gateway.store.cache import Cache, ChangePage, MemberRow, MemberView, StaleRecords
from gateway.store.checks import CheckContext, CheckKey, Checks, CheckToRecord, Recorded
from gateway.store.connections import Connections, StoreCorrupt, utc_stamp
from gateway.store.coupons import CouponDecision, Coupons, Reservation
from gateway.store.datadir import DataDirProblem, describe_unwritable, unwritable
from gateway.store.outbox import (
    COUPON_CONFLICT,
    BatchOutcome,
    EventResult,
    Outbox,
    OutboxBatch,
    QueuedEvent,
)
from gateway.store.switches import Switches
from gateway.store.writer import DEFAULT_MAX_PENDING, PAGE_SIZE, StorageFull, is_read_only

__all__ = [
    "COUPON_CONFLICT",
    "BatchOutcome",
    "ChangePage",
    "CheckContext",
    "CheckKey",
    "CheckToRecord",
    "CouponDecision",
    "EventResult",
    "MemberRow",
    "MemberView",
    "OutboxBatch",
    "QueuedEvent",
    "Recorded",
    "Reservation",
    "ReservedCoupon",
    "StaleRecords",
    "StorageFull",
    "Store",
    "StoreCorrupt",
    "StoreCounts",
    "backup_database",
    "utc_stamp",
]


@dataclass(frozen=True, slots=True)
class StoreCounts:
    members: int
    identifiers: int
    coupons: int
    live_reservations: int
    posted_checks: int
    outbox_depth: int
    outbox_oldest: str | None
    dead_letters: int

    @property
    def outbox_oldest_age_s(self) -> float | None:
        """Seconds since the oldest waiting event occurred (None when the outbox is empty)."""
        if not self.outbox_oldest:
            return None
        oldest = dt.datetime.fromisoformat(self.outbox_oldest.replace("Z", "+00:00"))
        return round(max(0.0, (dt.datetime.now(dt.UTC) - oldest).total_seconds()), 3)


class Store(Cache, Coupons, Checks, Outbox, Switches):
    """Open with `await Store.open(path)`; close with `await store.close()`. Every part's
    methods are the store's: `store.reserve_coupon`, `store.record_check`, `store.next_batch`."""

    @classmethod
    async def open(
        cls, path: Path, *, max_db_mb: int = 0, max_pending_events: int = DEFAULT_MAX_PENDING
    ) -> Store:
        """Check the database (it is not a store that lost its content; quick_check), migrate
        it, and start the writer. A file this process cannot write raises `DataDirProblem`."""
        connections = await Connections.open(
            path, max_db_mb=max_db_mb, max_pending_events=max_pending_events
        )
        return cls(connections)

    async def close(self) -> None:
        await self.connections.close()

    async def probe_write(self) -> None:
        """A real, durable write: raises `DataDirProblem` naming the file, its owner and the fix
        when this process cannot write the database (SQLite opens such a file read-only and
        fails only at the first write)."""
        stamp = utc_stamp(dt.datetime.now(dt.UTC))

        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO sync_state VALUES ('last_write_probe', ?)", (stamp,)
            )

        try:
            await self.writer.submit(job)
        except sqlite3.Error as error:
            if is_read_only(error):
                raise DataDirProblem(
                    unwritable(self.path) or describe_unwritable(self.path, str(error))
                ) from error
            raise

    def write_problem(self) -> str | None:
        """Why the database cannot be written now (for readiness and doctor), or None."""
        return unwritable(self.path) or (
            describe_unwritable(self.path, self.writer.read_only_error)
            if self.writer.read_only_error
            else None
        )

    async def set_page_limit(self, max_db_mb: int) -> None:
        """Change the database size cap at run time (0 lifts it)."""
        pages = max_db_mb * 1024 * 1024 // PAGE_SIZE if max_db_mb > 0 else 4294967294

        def job(conn: sqlite3.Connection) -> None:
            conn.execute(f"PRAGMA max_page_count = {pages}")

        await self.writer.run_on_thread(job)

    async def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """One value from a read-only query (status figures)."""
        rows = await self._reader.execute_fetchall(sql, params)
        row = next(iter(rows), None)
        return row[0] if row else None

    async def counts(self) -> StoreCounts:
        async with self._reader.execute(
            """SELECT (SELECT COUNT(*) FROM members), (SELECT COUNT(*) FROM member_identifiers),
                      (SELECT COUNT(*) FROM coupons),
                      (SELECT COUNT(*) FROM coupon_reservations WHERE status = 'reserved'),
                      (SELECT COUNT(*) FROM posted_checks), (SELECT COUNT(*) FROM outbox),
                      (SELECT MIN(occurred_at) FROM outbox), (SELECT COUNT(*) FROM dead_letters)"""
        ) as cur:
            row = await cur.fetchone()
        assert row is not None
        return StoreCounts(*row)
