"""The embedded backend: central's state in one SQLite file, for the demo, the tests, benchmarks.

One process, one writer: every request's job runs on a single database thread, so transactions
never interleave and change numbers commit in order by themselves. A snapshot is exported on a
second connection (WAL lets it read while the writer goes on; it writes only the finished
snapshot's chunks, in one short transaction).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sync.central.config import ReferenceConfig
from sync.central.errors import unavailable
from sync.central.ledger import Change, Ledger, Shared
from sync.central.longpoll import ChangeFeed
from sync.central.schema import schema
from sync.central.storage import Storage, T, in_thread

_CHANGES = """CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    entity TEXT NOT NULL,
    key TEXT NOT NULL,
    kind TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS changes_entity ON changes (entity, key);
"""
SCHEMA = schema(
    changes=_CHANGES,
    big="INTEGER",  # SQLite's integers are 64-bit
    blob="BLOB",
    rowid=" WITHOUT ROWID",
)

_ADD_BALANCE = """UPDATE members SET data = json_set(data,
    '$.points_balance', coalesce(json_extract(data, '$.points_balance'), 0) + ?,
    '$.wallet_points', coalesce(json_extract(data, '$.wallet_points'), 0) + ?,
    '$.balance_as_of', ?) WHERE member_id = ?"""
_SET_CONSENT = """UPDATE members SET data = json_set(data,
    '$.earn_mode', ?, '$.lottery_consent', json(?)) WHERE member_id = ?"""
_NUMBERS = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)"


class SqliteLedger(Ledger):
    """The ledger over SQLite (one writer, so publishing needs no lock)."""

    conn: sqlite3.Connection
    add_balance_sql = _ADD_BALANCE
    set_consent_sql = _SET_CONSENT

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        self.conn.execute("BEGIN")
        try:
            yield
        finally:
            self.conn.execute("COMMIT")

    def change_seq(self) -> int:
        row = self.conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchone()
        return int(row[0]) if row else 0

    def _emit(self, changes: Sequence[Change]) -> None:
        self.conn.executemany(
            "INSERT OR REPLACE INTO changes (entity, key, kind) VALUES (?, ?, ?)", changes
        )

    def make_members(self, count: int, now: str) -> None:
        self.conn.execute(
            _NUMBERS
            + """INSERT OR IGNORE INTO members SELECT printf('SYN%07d', i), json_object(
                'member_id', printf('SYN%07d', i),
                'identifiers', json_array(printf('9%015d', i)),
                'display_name', printf('Member %d', i), 'tier', 'BASIC', 'birthday', NULL,
                'flags', json_array(), 'earn_mode', 'points', 'lottery_consent', json('false'),
                'points_balance', i % 1000, 'wallet_points', 0, 'balance_as_of', ?) FROM n""",
            (count, now),
        )
        self.conn.execute(
            _NUMBERS + "INSERT OR REPLACE INTO changes (entity, key, kind) "
            "SELECT 'member', printf('SYN%07d', i), 'member' FROM n",
            (count,),
        )


def connect(path: Path) -> sqlite3.Connection:
    # A writer waits up to 10 s for another (the snapshot's connection storing its chunks).
    conn = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA cache_size=-65536")
    conn.executescript(SCHEMA)
    return conn


class SqliteStorage(Storage):
    """Central's state in one SQLite file; every job on one database thread."""

    kind = "sqlite"

    def __init__(self, config: ReferenceConfig, feed: ChangeFeed) -> None:
        super().__init__(config, feed)
        self.shared = Shared(config.clock)
        self.path: Path | None = None
        self._ledger: SqliteLedger | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._temp_dir: str | None = None

    async def _open(self) -> None:
        if self._ledger is not None:
            return
        if self.config.db_path is None:
            self._temp_dir = tempfile.mkdtemp(prefix="reference-central-")
            self.path = Path(self._temp_dir) / "central.db"
        else:
            self.path = self.config.db_path
        path = self.path
        self.shared.on_publish = self.feed.wake_threadsafe
        self.feed.bind(asyncio.get_running_loop())
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="central-db")

        def open_ledger() -> SqliteLedger:
            ledger = SqliteLedger(connect(path), self.shared)
            self.shared.secret = ledger.load_secret()
            return ledger

        try:
            self._ledger = await asyncio.get_running_loop().run_in_executor(
                self._executor, open_ledger
            )
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._executor is not None:
            ledger, self._ledger = self._ledger, None
            if ledger is not None:
                await asyncio.get_running_loop().run_in_executor(self._executor, ledger.conn.close)
            self._executor.shutdown(wait=True)
            self._executor = None
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    async def run(self, job: Callable[[Ledger], T]) -> T:
        if self._ledger is None or self._executor is None:
            raise unavailable("central is starting or stopping")
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, functools.partial(job, self._ledger)
        )

    async def run_apart(self, job: Callable[[Ledger], T]) -> T:
        path = self.path
        if path is None or self._ledger is None:
            raise unavailable("central is starting or stopping")

        def apart() -> T:
            conn = connect(path)
            try:
                return job(SqliteLedger(conn, self.shared))
            finally:
                conn.close()

        return await in_thread(apart)
