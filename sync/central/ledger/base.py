"""The ledger's base: the types its parts share, transactions, and the hooks a backend fills in.

Every part of the `Ledger` (records, changes, events, coupons, reports) builds on `LedgerBase`;
the hooks (SQL at the top of the class, methods at its bottom) are where the two SQL dialects
differ.
"""

from __future__ import annotations

import contextlib
import threading
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from sync.central.config import next_stamp, utc_stamp
from sync.central.storage import Connection

# A change: (entity, key, kind); one row per (entity, key), at the number of its latest change.
Change = tuple[str, str, str]
# An event's outcome: (status, reason, message, applied_at)
Outcome = tuple[str, str | None, str | None, str | None]
# Why an event is rejected: (reason, message).
Refusal = tuple[str, str]
IN_CHUNK = 500  # keys per `IN (...)` list: well under every engine's limit on parameters


@dataclass(slots=True)
class Tallies:
    """Counters since this process started (the admin stats); updated under `lock`."""

    received: Counter[str] = field(default_factory=Counter)
    accepted: Counter[str] = field(default_factory=Counter)
    duplicate: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    bad_batches: int = 0
    replayed_rejections: int = 0
    unknown_member_checks: int = 0
    identifications: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Shared:
    """What every ledger of one process shares: the clock, the cursor key, the tallies."""

    def __init__(self, clock: Callable[[], Any]) -> None:
        self.clock = clock
        self.secret = b""  # read from the database at open: every process seals alike
        self.tallies = Tallies()
        self.on_publish: Callable[[], None] = lambda: None  # after a commit that published
        self._last_stamp = ""
        self._lock = threading.Lock()

    def stamp(self) -> str:
        """Now on central's clock, strictly after every stamp this process gave before."""
        with self._lock:
            self._last_stamp = next_stamp(utc_stamp(self.clock()), self._last_stamp)
            return self._last_stamp


class LedgerBase(ABC):
    """What every part of the ledger stands on: one connection, its transactions, the hooks."""

    for_update: ClassVar[str] = ""  # appended to a read that must lock its row until commit
    # Hooks that are SQL alone: the JSON updates of a member's record (`add_balances`: its
    # rows' parameters; `set_consent`: earn mode, consent as JSON `true`/`false`, member id).
    add_balance_sql: ClassVar[str]
    set_consent_sql: ClassVar[str]

    def __init__(self, conn: Connection, shared: Shared) -> None:
        self.conn = conn
        self.shared = shared
        self.tallies = shared.tallies
        self._published = False

    # ---- transactions ----

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One transaction; after its commit, waiters hear of the changes it published."""
        self._published = False
        with self._transaction():
            yield
        if self._published:
            self._published = False
            self.shared.on_publish()

    def stamp(self) -> str:
        return self.shared.stamp()

    def rows_in(self, select: str, keys: Sequence[str]) -> Iterator[Any]:
        """The rows of `select` (ending in a column) for each of `keys`: `select IN (...)`."""
        for start in range(0, len(keys), IN_CHUNK):
            chunk = keys[start : start + IN_CHUNK]
            yield from self.conn.execute(f"{select} IN ({','.join('?' * len(chunk))})", chunk)

    def known_events(self, ids: Sequence[str]) -> dict[str, Outcome]:
        select = "SELECT event_id, status, reason, message, applied_at FROM events WHERE event_id"
        return {row[0]: (row[1], row[2], row[3], row[4]) for row in self.rows_in(select, ids)}

    # ---- the hooks: where the two dialects differ ----

    @abstractmethod
    def _transaction(self) -> contextlib.AbstractContextManager[None]:
        """Begin, then commit (or roll back on an exception)."""

    @abstractmethod
    def reading(self) -> contextlib.AbstractContextManager[None]:
        """A read-only transaction that sees one consistent state throughout."""

    def publishing(self) -> None:  # noqa: B027 (a hook that one backend leaves empty)
        """Inside a transaction, before it numbers changes: from here to the commit, no other
        publishing transaction runs. With one writer (SQLite) there is nothing to do."""

    def publish_stamp(self) -> str:
        """The stamp of a publishing transaction (`applied_at`, `balance_as_of`): after every
        stamp given before by any process; called after `publishing`."""
        return self.stamp()

    @abstractmethod
    def change_seq(self) -> int:
        """The number of the latest committed change (0: none yet)."""

    @abstractmethod
    def _emit(self, changes: Sequence[Change]) -> None: ...

    def emit(self, changes: Sequence[Change]) -> None:
        """Publish changes: each row moves to a new number, after every number given before."""
        if changes:
            self._emit(changes)
            self._published = True

    def claim_events(self, ids: Sequence[str]) -> dict[str, Outcome]:
        """Inside the batch's transaction: the outcome of each id seen before; every other id is
        this transaction's to apply (with one writer, reading is claiming)."""
        return self.known_events(ids)

    def record_events(self, fresh: Sequence[tuple[Any, ...]], applied_at: str) -> None:
        """Store the outcomes of the events this transaction applied."""
        self.conn.executemany(
            f"INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, '{applied_at}')", fresh
        )

    def add_balances(self, rows: Sequence[tuple[int, int, str, str]]) -> None:
        """(points, wallet points, balance_as_of, member id): add to the member's record."""
        if rows:
            self.conn.executemany(self.add_balance_sql, rows)

    def set_consent(self, member_id: str, earn_mode: str, consent: bool) -> bool:
        """Set `earn_mode` and `lottery_consent` in the member's record; False: no such member."""
        params = (earn_mode, "true" if consent else "false", member_id)
        return bool(self.conn.execute(self.set_consent_sql, params).rowcount)

    @abstractmethod
    def make_members(self, count: int, now: str) -> None:
        """Members SYN0000001..count that are not there yet, and their changes."""

    def try_build_lock(self) -> bool:
        """On a connection of its own: True when no other process is building a snapshot."""
        return True
