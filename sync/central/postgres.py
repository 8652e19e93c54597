"""The fleet backend: central's state in PostgreSQL, served by several central processes at once.

psycopg 3, synchronous, one connection per database thread (`db_workers` of them per process),
plus one asynchronous connection that `LISTEN`s. What holds across processes is held by the
database itself:

- exactly once: an event id is claimed by inserting it (`ON CONFLICT DO NOTHING`) before the
  batch is applied; the same id arriving through another process waits for that transaction
  and then reads its outcome (`duplicate`);
- change order: a transaction that publishes changes takes one advisory lock (to its commit)
  before it numbers them, so change numbers commit in order and a delta cursor never skips a
  change that commits late; `applied_at` stamps come from the database's last stamp under the
  same lock, so they never go back across processes either;
- cursors: their HMAC key lives in the database, so every process reads every cursor;
- long polls: a publishing transaction sends `NOTIFY central_changes`; PostgreSQL delivers it
  at commit to every process's listener, which wakes that process's waiters;
- coupon limits: an authorization or a redemption locks the coupon's row (`FOR UPDATE`).

A lost connection (PostgreSQL restarting) is answered 503 with `Retry-After`; the next job
connects again, and the listener reconnects by itself and then wakes every waiter.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from sync.central.config import ReferenceConfig, next_stamp, utc_stamp
from sync.central.errors import unavailable
from sync.central.ledger import Change, Ledger, Outcome, Shared
from sync.central.longpoll import ChangeFeed
from sync.central.schema import schema
from sync.central.storage import Storage, T, in_thread

CHANNEL = "central_changes"
SCHEMA_LOCK = 7_304_419_000  # advisory lock ids (any bigint; fixed so every process agrees)
PUBLISH_LOCK = 7_304_419_001
BUILD_LOCK = 7_304_419_002
RETRIES = 5  # a deadlock or serialization failure is rolled back whole and tried again

_CHANGES = """CREATE SEQUENCE IF NOT EXISTS change_seq;
CREATE TABLE IF NOT EXISTS changes (
    entity TEXT NOT NULL,
    key TEXT NOT NULL,
    kind TEXT NOT NULL,
    seq BIGINT NOT NULL UNIQUE,
    PRIMARY KEY (entity, key)
);
"""
SCHEMA = schema(
    changes=_CHANGES,
    big="BIGINT",
    blob="BYTEA",
    bytewise=' COLLATE "C"',
)

_EMIT = """INSERT INTO changes (entity, key, kind, seq) VALUES (?, ?, ?, nextval('change_seq'))
    ON CONFLICT (entity, key) DO UPDATE SET kind = excluded.kind, seq = excluded.seq"""
_ADD_BALANCE = """UPDATE members SET data = (data::jsonb || jsonb_build_object(
    'points_balance', coalesce((data::jsonb->>'points_balance')::bigint, 0) + ?::bigint,
    'wallet_points', coalesce((data::jsonb->>'wallet_points')::bigint, 0) + ?::bigint,
    'balance_as_of', ?::text))::text WHERE member_id = ?"""
_SET_CONSENT = """UPDATE members SET data = (data::jsonb || jsonb_build_object(
    'earn_mode', ?::text, 'lottery_consent', ?::jsonb))::text WHERE member_id = ?"""
_SYN_ID = "'SYN' || lpad(i::text, 7, '0')"


@functools.lru_cache(maxsize=1024)
def _pg(sql: str) -> str:
    """The ledger's `?` parameters as psycopg's `%s` (a literal % doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


class PgConnection:
    """A psycopg connection that takes the ledger's `?` parameters."""

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self.raw = raw

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> psycopg.Cursor[Any]:
        if not params:
            return self.raw.execute(sql)
        return self.raw.execute(_pg(sql), params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]], /) -> psycopg.Cursor[Any]:
        cursor = self.raw.cursor()
        cursor.executemany(_pg(sql), rows)
        return cursor


class PostgresLedger(Ledger):
    """The ledger over PostgreSQL: several writers, so publishing takes the lock."""

    for_update = " FOR UPDATE"
    conn: PgConnection
    add_balance_sql = _ADD_BALANCE
    set_consent_sql = _SET_CONSENT

    def __init__(self, conn: PgConnection, shared: Shared) -> None:
        super().__init__(conn, shared)

    def _transaction(self) -> contextlib.AbstractContextManager[Any]:
        return self.conn.raw.transaction()

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        with self.conn.raw.transaction():
            self.conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield

    def publishing(self) -> None:
        self.conn.execute("SELECT pg_advisory_xact_lock(?)", (PUBLISH_LOCK,))

    def publish_stamp(self) -> str:
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'last_stamp'").fetchone()
        stamp = next_stamp(utc_stamp(self.shared.clock()), row[0] if row else "")
        self.conn.execute(
            "INSERT INTO meta VALUES ('last_stamp', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (stamp,),
        )
        return stamp

    def change_seq(self) -> int:
        row = self.conn.execute("SELECT coalesce(max(seq), 0) FROM changes").fetchone()
        assert row is not None
        return int(row[0])

    def _emit(self, changes: Sequence[Change]) -> None:
        self.conn.executemany(_EMIT, changes)
        self.conn.execute(f"NOTIFY {CHANNEL}")

    def claim_events(self, ids: Sequence[str]) -> dict[str, Outcome]:
        # In id order, so two batches sharing ids never wait for each other in a circle.
        unique = sorted(set(ids))
        claimed = {
            row[0]
            for row in self.conn.execute(
                "INSERT INTO events (event_id, type, store_id, status, received_at) "
                "SELECT id, '', '', 'claimed', '' FROM unnest(?::text[]) AS id ORDER BY id "
                "ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
                (unique,),
            ).fetchall()
        }
        return self.known_events([i for i in unique if i not in claimed])

    def record_events(self, fresh: Sequence[tuple[Any, ...]], applied_at: str) -> None:
        if not fresh:
            return
        columns = [list(column) for column in zip(*fresh, strict=True)]
        self.conn.execute(
            "UPDATE events e SET type = f.type, store_id = f.store_id, status = f.status, "
            "reason = f.reason, message = f.message, applied_at = f.applied_at, received_at = ? "
            "FROM unnest(?::text[], ?::text[], ?::text[], ?::text[], ?::text[], ?::text[], "
            "?::text[]) AS f(event_id, type, store_id, status, reason, message, applied_at) "
            "WHERE e.event_id = f.event_id",
            (applied_at, *columns),
        )

    def make_members(self, count: int, now: str) -> None:
        self.conn.execute(
            f"""INSERT INTO members SELECT {_SYN_ID}, json_build_object(
                'member_id', {_SYN_ID},
                'identifiers', json_build_array('9' || lpad(i::text, 15, '0')),
                'display_name', 'Member ' || i, 'tier', 'BASIC', 'birthday', NULL,
                'flags', json_build_array(), 'earn_mode', 'points', 'lottery_consent', false,
                'points_balance', i % 1000, 'wallet_points', 0, 'balance_as_of', ?::text)::text
                FROM generate_series(1, ?::bigint) AS i ON CONFLICT DO NOTHING""",
            (now, count),
        )
        self.conn.execute(
            f"""INSERT INTO changes (entity, key, kind, seq)
                SELECT 'member', {_SYN_ID}, 'member', nextval('change_seq')
                FROM generate_series(1, ?::bigint) AS i
                ON CONFLICT (entity, key) DO UPDATE SET kind = excluded.kind, seq = excluded.seq""",
            (count,),
        )
        self.conn.execute(f"NOTIFY {CHANNEL}")

    def try_build_lock(self) -> bool:
        # A session lock on the snapshot's own connection: released when it closes.
        row = self.conn.execute("SELECT pg_try_advisory_lock(?)", (BUILD_LOCK,)).fetchone()
        return row is not None and bool(row[0])


class PostgresStorage(Storage):
    """Central's state in PostgreSQL: `db_workers` connections, each on its own thread."""

    kind = "postgresql"

    def __init__(self, config: ReferenceConfig, feed: ChangeFeed) -> None:
        super().__init__(config, feed)
        assert config.database_url
        self.url = config.database_url
        self.shared = Shared(config.clock)
        self.listening = asyncio.Event()
        self._local = threading.local()
        self._connections: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._listener: asyncio.Task[None] | None = None

    def _connect(self) -> psycopg.Connection[Any]:
        raw = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
        with self._lock:
            self._connections = [c for c in self._connections if not c.closed]
            self._connections.append(raw)
        return raw

    def _ledger(self) -> PostgresLedger:
        """This thread's ledger, connecting (again) when it has none or lost it."""
        ledger: PostgresLedger | None = getattr(self._local, "ledger", None)
        if ledger is None or ledger.conn.raw.closed or ledger.conn.raw.broken:
            if ledger is not None:
                ledger.conn.raw.close()
            ledger = PostgresLedger(PgConnection(self._connect()), self.shared)
            self._local.ledger = ledger
        return ledger

    def _forget(self) -> None:
        ledger: PostgresLedger | None = getattr(self._local, "ledger", None)
        self._local.ledger = None
        if ledger is not None:
            ledger.conn.raw.close()

    async def _open(self) -> None:
        if self._executor is not None:
            return
        self.feed.bind(asyncio.get_running_loop())
        self._executor = ThreadPoolExecutor(
            max_workers=max(1, self.config.db_workers), thread_name_prefix="central-pg"
        )

        def setup() -> None:
            ledger = self._ledger()
            with ledger.conn.raw.transaction():  # two processes starting at once: one creates
                ledger.conn.execute("SELECT pg_advisory_xact_lock(?)", (SCHEMA_LOCK,))
                ledger.conn.raw.execute(SCHEMA)
            self.shared.secret = ledger.load_secret()

        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, setup)
        except psycopg.OperationalError as exc:
            await self.close()
            raise ConnectionError(f"PostgreSQL: {str(exc).strip()}") from None
        except BaseException:
            await self.close()
            raise
        self._listener = asyncio.create_task(self._listen(), name="central-listen")
        # Long polls rely on the listener: it is up before the first request is served.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.listening.wait(), 10)

    async def _listen(self) -> None:
        """LISTEN for committed changes, forever; after a reconnect every waiter reads again."""
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True, connect_timeout=5
                )
            except psycopg.Error:
                await asyncio.sleep(0.5)
                continue
            try:
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    self.feed.wake()  # whatever committed while nobody listened
                    async for _ in conn.notifies():
                        self.feed.wake()
            except psycopg.Error:
                pass
            finally:
                self.listening.clear()
            await asyncio.sleep(0.2)

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()

    def _call(self, job: Callable[[Ledger], T]) -> T:
        lost = 0
        attempt = 0
        while True:
            attempt += 1
            try:
                return job(self._ledger())
            except pg_errors.TransactionRollback:  # deadlock, serialization: nothing applied
                if attempt >= RETRIES:
                    raise
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                # A connection lost (PostgreSQL restarted): every job is a transaction that is
                # safe to run again (event ids, idempotency keys), so once on a new connection.
                self._forget()
                lost += 1
                if lost > 1:
                    problem = f"the database is out of reach ({type(exc).__name__})"
                    raise unavailable(problem) from None

    async def run(self, job: Callable[[Ledger], T]) -> T:
        if self._executor is None:
            raise unavailable("central is starting or stopping")
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._call, job)

    async def run_apart(self, job: Callable[[Ledger], T]) -> T:
        if self._executor is None:
            raise unavailable("central is starting or stopping")

        def apart() -> T:
            try:
                raw = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
            except psycopg.OperationalError as exc:
                raise unavailable(f"the database is out of reach ({exc})") from None
            with raw:
                return job(PostgresLedger(PgConnection(raw), self.shared))

        return await in_thread(apart)
