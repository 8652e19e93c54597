"""The single writer: one SQLite connection; concurrent writes share commits.

Every change to the database goes through `Writer.submit`. Jobs queued while a commit is under
way are run together in the next transaction and become durable with one fsync: group commit.
A batch of register requests' jobs (`small`: a check, a coupon, a few events) runs its
statements on the event loop's thread (that SQL is a few dozen microseconds of CPU; handing it
to another thread costs more in GIL hand-offs and context switches than the work itself) and its
COMMIT, where the fsync happens, on the writer's own thread: one hop per batch, and the loop
never waits for the disk. A batch that need not be durable (coupon reservations, identification
events: `synchronous=NORMAL`, so no fsync at COMMIT in WAL mode) commits on the loop, without a
hop. The WAL is checkpointed on the thread every `CHECKPOINT_ROWS` rows written rather than inside
some COMMIT (the checkpoint is what fsyncs then). Any other batch (a page of central's changes,
an import, the forwarder's bookkeeping) runs wholly on the thread, so it never holds the loop.

A job that fails does not undo its neighbours: the batch is run again with a savepoint around
each job (failures are rare; savepoints for every job would cost two statements each on every
batch).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import structlog

log = structlog.get_logger("gateway.store.writer")

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], Any]


@dataclass(slots=True)
class _Item:
    job: Job
    future: asyncio.Future[Any]
    durable: bool
    # Whether the job's commit shows a check fits: a flag, or a test of what the job returned
    # (a job that decided to write nothing proves nothing).
    proves_room: bool | Callable[[Any], bool]
    small: bool = False  # a register request's few rows: its statements may run on the loop


def _probe_job(conn: sqlite3.Connection) -> None:
    conn.execute("INSERT INTO storage_probe VALUES (zeroblob(?))", (PROBE_BYTES,))
    conn.execute("DELETE FROM storage_probe")


def _waiting_for_locks(fn: Callable[[sqlite3.Connection], T], conn: sqlite3.Connection) -> T:
    """`fn` with a busy timeout: on the thread, waiting for another process is harmless."""
    conn.execute(f"PRAGMA busy_timeout = {BUSY_WAIT_MS}")
    try:
        return fn(conn)
    finally:
        conn.execute("PRAGMA busy_timeout = 0")


def _ignore_result(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved, so asyncio does not log it; the writer counts it


PAGE_SIZE = 4096
MAX_BATCH = 512
RIDER_DELAY_S = 0.5  # an identification event is on disk within this (plus one commit)
RIDER_FLUSH_AT = 1000  # ... or as soon as this many wait
SMALL_RIDERS = 64  # more identification events than this are written on the thread
# A checkpoint every so many rows written (a coupon writes 2, a check about 5): the WAL stays at
# a few thousand pages, as with SQLite's own default of 1,000 pages, and a register request that
# arrives during one (it waits: the checkpoint fsyncs) is rarer than one in a thousand. Every
# 100 batches made one COUPON in 100 wait for it: the COUPON p99 went from 0.4 to 4.5 ms.
CHECKPOINT_ROWS = 4000
STORAGE_RETRY_S = 2.0  # while the disk is full: how often riders and the probe try again
PROBE_BYTES = 64 * 1024  # larger than any check's rows: if this fits, a check fits
DEFAULT_MAX_PENDING = 100_000


class StorageFull(Exception):
    """The database or the disk under it is full; nothing of the failed batch was kept."""


class WriterClosed(Exception):
    """The writer is shutting down and takes no new work."""


def is_storage_full(error: BaseException) -> bool:
    return isinstance(error, sqlite3.Error) and (
        getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
        or "database or disk is full" in str(error)
    )


def is_read_only(error: BaseException) -> bool:
    """The file (or its directory, for the -wal and -shm files) cannot be written by us."""
    return isinstance(error, sqlite3.Error) and (
        getattr(error, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_READONLY
        or "readonly database" in str(error)
    )


def _as_storage_full(error: Exception) -> Exception:
    return StorageFull(str(error)) if is_storage_full(error) else error


class _Wake:
    """Queued to make the writer commit waiting riders (or probe) when nothing else is queued."""


_WAKE = _Wake()


@dataclass
class WriterStats:
    batches: int = 0
    jobs: int = 0
    failed_jobs: int = 0
    storage_full_events: int = 0
    largest_batch: int = 0
    last_commit_ms: float = 0.0
    riders_retried: int = 0  # identification events kept in memory after a refused commit
    riders_dropped: int = 0  # ... and dropped beyond the bound (logged each time)
    probes: int = 0


def connect(path: Path, *, max_db_mb: int = 0, read_only: bool = False) -> sqlite3.Connection:
    """Open a connection with the pragmas every connection of the gateway uses."""
    if read_only:
        conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )
    else:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 10000")
    if not read_only:
        conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"could not switch {path} to WAL (got {mode})")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        if max_db_mb > 0:
            conn.execute(f"PRAGMA max_page_count = {max_db_mb * 1024 * 1024 // PAGE_SIZE}")
    return conn


class Writer:
    """Owns the write connection. `submit` waits for the job's commit and returns its result."""

    def __init__(
        self,
        conn_factory: Callable[[], sqlite3.Connection],
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        self._conn_factory = conn_factory
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        self._conn: sqlite3.Connection | None = None
        self._queue: asyncio.Queue[_Item | _Wake | None] = asyncio.Queue()
        # Batches and `run_on_thread` take turns with the connection.
        self._conn_lock = asyncio.Lock()
        self._rows_at_checkpoint = 0  # the connection's total_changes at the last checkpoint
        self._durable_mode: bool | None = None  # the connection's `synchronous` now
        self._in_batch = False  # the writer's loop holds items taken from the queue
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._riders: list[Job] = []
        self._woken = False  # a _WAKE for the riders is queued
        self._rider_timer: asyncio.TimerHandle | None = None
        self._probe_timer: asyncio.TimerHandle | None = None
        self.max_pending = max_pending
        self.stats = WriterStats()
        # The alarm: up from a full-disk failure until a check is known to fit again (a commit
        # that stored a check, or the probe); a small commit that happens to fit clears nothing.
        self.storage_full = False
        # Why the last commit failed for want of write permission (None once one works).
        self.read_only_error: str | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._conn = await loop.run_in_executor(self._executor, self._conn_factory)
        # Statements run on the loop, which must never wait for a lock: a batch that meets
        # another process's write lock waits for it on the thread (`_begin_waiting`).
        self._conn.execute("PRAGMA busy_timeout = 0")
        # Checkpoints fsync: they run on the thread (`_checkpoint`), never inside a COMMIT
        # that may be running on the loop.
        self._conn.execute("PRAGMA wal_autocheckpoint = 0")
        self._task = asyncio.create_task(self._run(), name="sqlite-writer")

    async def run_on_thread(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` on the writer's thread between batches (start-up checks, migrations)."""
        conn = self._require_conn()
        async with self._conn_lock:
            return await asyncio.get_running_loop().run_in_executor(
                self._executor, _waiting_for_locks, fn, conn
            )

    async def submit(
        self,
        job: Callable[[sqlite3.Connection], T],
        *,
        durable: bool = True,
        proves_room: bool | Callable[[T], bool] = False,
        small: bool = False,
    ) -> T:
        """Queue `job`, wait until its transaction committed, and return what it returned.

        durable=False commits without waiting for fsync: the change survives a crash of the
        process (it is in the WAL) but maybe not a power loss. Used for coupon reservations and
        identification events, never for posted checks. proves_room: the job stores a whole
        check, so its commit shows that a check fits (it clears the storage-full alarm).
        small: a register request's few rows (the statements may then run on the loop).
        """
        if small and not durable and self._idle():
            done = self._run_now(job, proves_room)
            if done is not None:
                ok, value = done
                if ok:
                    return value  # type: ignore[no-any-return]
                raise value
        future = self.submit_nowait(job, durable=durable, proves_room=proves_room, small=small)
        return await asyncio.shield(future)  # a cancelled caller must not undo a queued commit

    def _idle(self) -> bool:
        return (
            self._task is not None
            and not self._closing
            and not self._in_batch
            and not self._conn_lock.locked()
            and self._queue.empty()
        )

    def _run_now(
        self, job: Job, proves_room: bool | Callable[[Any], bool]
    ) -> tuple[bool, Any] | None:
        """A small job that need not be durable, while the writer is idle: its transaction at
        once, in the caller's turn of the loop (no fsync waits for it, so there is no commit to
        share and nothing to queue for). None: another process holds the write lock; queue it."""
        conn = self._require_conn()
        started = time.perf_counter()
        try:
            self._synchronous(conn, durable=False)
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as error:
            if _is_busy(error):
                return None
            outcome: tuple[bool, Any] = (False, _as_storage_full(error))
        else:
            try:
                outcome = (True, job(conn))
            except Exception as error:  # the job's failure is its caller's
                outcome = (False, _as_storage_full(error))
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
            else:
                refused = _commit(conn)
                if refused is None:
                    self._committed(1, started)
                else:
                    outcome = (False, _as_storage_full(refused))
        if not outcome[0] and not isinstance(outcome[1], StorageFull):
            self.stats.failed_jobs += 1
        item = _Item(job, asyncio.get_running_loop().create_future(), False, proves_room, True)
        self._note_storage([item], [outcome])
        if self._checkpoint_due(conn):
            self._queue.put_nowait(_WAKE)  # the writer's loop checkpoints, on the thread
        return outcome

    def _synchronous(self, conn: sqlite3.Connection, *, durable: bool) -> None:
        """`PRAGMA synchronous` for the next transaction, when it is not already so."""
        if self._durable_mode is not durable:
            conn.execute(_SYNC_FULL if durable else _SYNC_NORMAL)
            self._durable_mode = durable

    def submit_nowait(
        self,
        job: Job,
        *,
        durable: bool = True,
        proves_room: bool | Callable[[Any], bool] = False,
        small: bool = False,
    ) -> asyncio.Future[Any]:
        if self._closing:
            raise WriterClosed("the store is shutting down")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Item(job, future, durable, proves_room, small))
        return future

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    @property
    def pending_riders(self) -> int:
        """Identification events not on disk yet (at most RIDER_DELAY_S old, unless the disk
        refuses them: then they wait here, up to `max_pending`)."""
        return len(self._riders)

    async def close(self) -> None:
        """Stop taking work, commit everything already queued, close the connection."""
        self._closing = True
        for timer in (self._rider_timer, self._probe_timer):
            if timer is not None:
                timer.cancel()
        if self._task is not None:
            self._queue.put_nowait(None)
            await self._task
            self._task = None
        if self._riders:
            log.error("identification_events_not_stored", events=len(self._riders))
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=True)

    def _require_conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise WriterClosed("the writer is not started")
        return self._conn

    def add_rider(self, job: Job) -> None:
        """Queue work that need not wake the writer at once: it rides with the next batch, and
        is committed within `RIDER_DELAY_S` even when nothing else is written (identification
        events, one per IDENT, are riders)."""
        if self._closing:
            raise WriterClosed("the store is shutting down")
        self._riders.append(job)
        if len(self._riders) >= RIDER_FLUSH_AT and not self.storage_full:
            self._wake_for_riders()
        elif self._rider_timer is None:
            delay = STORAGE_RETRY_S if self.storage_full else RIDER_DELAY_S
            self._rider_timer = asyncio.get_running_loop().call_later(delay, self._wake_for_riders)

    def _wake_for_riders(self) -> None:
        if self._rider_timer is not None:
            self._rider_timer.cancel()
            self._rider_timer = None
        if self._riders and not self._closing and not self._woken:
            self._woken = True  # one wake-up is enough, however many riders arrive meanwhile
            self._queue.put_nowait(_WAKE)

    def _take_riders(self) -> _Item | None:
        self._woken = False
        if not self._riders:
            return None
        if self._rider_timer is not None:
            self._rider_timer.cancel()
            self._rider_timer = None
        riders, self._riders = self._riders, []

        def job(conn: sqlite3.Connection) -> None:
            for rider in riders:
                rider(conn)

        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda done: self._riders_settled(done, riders))
        return _Item(job, future, False, False, small=len(riders) <= SMALL_RIDERS)

    def _riders_settled(self, future: asyncio.Future[Any], riders: list[Job]) -> None:
        error = None if future.cancelled() else future.exception()
        if error is None:
            return
        if not isinstance(error, StorageFull) and not is_read_only(error):
            # A bug in a rider (not the disk): retrying would fail the same way forever.
            self.stats.riders_dropped += len(riders)
            log.error("identification_events_lost", events=len(riders), error=str(error))
            return
        # The disk refused them: keep them, oldest first, up to the bound, and try again.
        self.stats.riders_retried += len(riders)
        kept = riders + self._riders
        overflow = len(kept) - self.max_pending
        if overflow > 0:
            kept = kept[overflow:]
            self.stats.riders_dropped += overflow
            log.error(
                "identification_events_dropped",
                events=overflow,
                kept=len(kept),
                bound=self.max_pending,
                reason="the disk refuses writes and the in-memory bound is reached",
            )
        self._riders = kept
        if self._rider_timer is None and not self._closing:
            self._rider_timer = asyncio.get_running_loop().call_later(
                STORAGE_RETRY_S, self._wake_for_riders
            )

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        conn = self._require_conn()
        stopping = False
        while not stopping:
            first = await self._queue.get()
            self._in_batch = True  # taken from the queue: nothing may run before it
            # Let the callers woken by the last commit queue their next writes, so they share
            # this commit instead of waiting for the one after it.
            await asyncio.sleep(0)
            batch: list[_Item] = []
            if first is None:
                stopping = True
            elif isinstance(first, _Item):
                batch.append(first)
            while len(batch) < MAX_BATCH and not self._queue.empty():
                more = self._queue.get_nowait()
                if more is None:
                    stopping = True
                elif isinstance(more, _Item):
                    batch.append(more)
            riders = self._take_riders()
            if riders is not None:
                batch.append(riders)
            if self._checkpoint_due(conn):
                self._rows_at_checkpoint = conn.total_changes
                async with self._conn_lock:
                    await loop.run_in_executor(self._executor, _checkpoint, conn)
            if not batch:
                self._in_batch = False
                continue
            jobs = [item.job for item in batch]
            durable = any(item.durable for item in batch)
            on_loop = all(item.small for item in batch)
            try:
                async with self._conn_lock:
                    if on_loop:
                        outcomes = await self._transact(jobs, durable)
                    else:
                        outcomes = await loop.run_in_executor(
                            self._executor, self._transact_on_thread, jobs, durable
                        )
            except Exception as error:  # the loop must outlive any failure, or writes hang
                log.exception("writer_batch_failed", jobs=len(jobs))
                outcomes = [(False, error)] * len(jobs)
            for item, (ok, value) in zip(batch, outcomes, strict=True):
                if item.future.done():
                    continue
                if ok:
                    item.future.set_result(value)
                else:
                    item.future.set_exception(value)
                    if not isinstance(value, StorageFull):
                        self.stats.failed_jobs += 1
            self._in_batch = False
            self._note_storage(batch, outcomes)

    async def _transact(self, jobs: list[Job], durable: bool) -> list[tuple[bool, Any]]:
        """One transaction for the whole batch: the statements here, the COMMIT on the thread."""
        conn = self._require_conn()
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        failed = await self._begin(conn, durable, len(jobs))
        if failed is not None:
            return failed
        outcomes = _run_jobs(conn, jobs)
        if outcomes is None:  # a job failed: undo all, then again, each job in a savepoint
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            failed = await self._begin(conn, durable, len(jobs))
            if failed is not None:
                return failed
            outcomes = _run_jobs_apart(conn, jobs)
        if not conn.in_transaction:
            return outcomes  # SQLite rolled back itself (a full disk): the batch failed
        if durable:
            error = await loop.run_in_executor(self._executor, _commit, conn)
        else:  # no fsync at this COMMIT (WAL, synchronous=NORMAL; no autocheckpoint)
            error = _commit(conn)
        if error is not None:
            return [(False, _as_storage_full(error))] * len(jobs)
        self._committed(len(jobs), started)
        return outcomes

    def _transact_on_thread(self, jobs: list[Job], durable: bool) -> list[tuple[bool, Any]]:
        """The same transaction wholly on the writer's thread (batches that are not small)."""
        conn = self._require_conn()
        started = time.perf_counter()
        try:
            self._synchronous(conn, durable=durable)
            _begin_waiting(conn)
        except sqlite3.Error as error:
            return [(False, _as_storage_full(error))] * len(jobs)
        outcomes = _run_jobs(conn, jobs)
        if outcomes is None:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            try:
                _begin_waiting(conn)
            except sqlite3.Error as error:
                return [(False, _as_storage_full(error))] * len(jobs)
            outcomes = _run_jobs_apart(conn, jobs)
        if not conn.in_transaction:
            return outcomes
        refused = _commit(conn)
        if refused is not None:
            return [(False, _as_storage_full(refused))] * len(jobs)
        self._committed(len(jobs), started)
        return outcomes

    def _checkpoint_due(self, conn: sqlite3.Connection) -> bool:
        return conn.total_changes - self._rows_at_checkpoint >= CHECKPOINT_ROWS

    def _committed(self, jobs: int, started: float) -> None:
        self.stats.batches += 1
        self.stats.jobs += jobs
        self.stats.largest_batch = max(self.stats.largest_batch, jobs)
        self.stats.last_commit_ms = (time.perf_counter() - started) * 1000

    async def _begin(
        self, conn: sqlite3.Connection, durable: bool, jobs: int
    ) -> list[tuple[bool, Any]] | None:
        """Start the batch's transaction; the outcome of every job if that fails."""
        try:
            self._synchronous(conn, durable=durable)
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as error:
                if not _is_busy(error):
                    raise
                # Another process holds the write lock (a backup, an operator's sqlite3): wait
                # for it on the thread, not on the loop.
                await asyncio.get_running_loop().run_in_executor(
                    self._executor, _begin_waiting, conn
                )
        except sqlite3.Error as error:
            return [(False, _as_storage_full(error))] * jobs
        return None

    def _note_storage(self, batch: list[_Item], outcomes: list[tuple[bool, Any]]) -> None:
        denied = next((v for ok, v in outcomes if not ok and is_read_only(v)), None)
        if denied is not None:
            if self.read_only_error is None:
                log.error("database_read_only", error=str(denied), alarm=True)
            self.read_only_error = str(denied)
        elif any(ok for ok, _ in outcomes) and self.read_only_error is not None:
            self.read_only_error = None
            log.warning("database_writable_again")
        if any(not ok and isinstance(v, StorageFull) for ok, v in outcomes):
            self.stats.storage_full_events += 1
            if not self.storage_full:
                log.error("storage_full", alarm=True, hint="free disk space or raise max_db_mb")
            self.storage_full = True
            self._schedule_probe()
            return
        if not self.storage_full:
            return
        # Only a commit that stored a check (or the probe, larger than one) says a check fits.
        proved = any(
            ok and (item.proves_room(value) if callable(item.proves_room) else item.proves_room)
            for item, (ok, value) in zip(batch, outcomes, strict=True)
        )
        if proved:
            self.storage_full = False
            log.warning("storage_recovered")
            if self._riders:
                self._wake_for_riders()

    def _schedule_probe(self) -> None:
        if self._probe_timer is None and not self._closing:
            self._probe_timer = asyncio.get_running_loop().call_later(
                STORAGE_RETRY_S, self._probe_soon
            )

    def _probe_soon(self) -> None:
        self._probe_timer = None
        if self.storage_full and not self._closing:
            # Through the queue, so that the probe never runs beside a batch on the thread.
            self.submit_nowait(_probe_job, durable=True, proves_room=True).add_done_callback(
                _ignore_result
            )
            self.stats.probes += 1


_SYNC_FULL = "PRAGMA synchronous = FULL"
_SYNC_NORMAL = "PRAGMA synchronous = NORMAL"
BUSY_WAIT_MS = 10_000  # how long the thread waits for another process's write lock


def _is_busy(error: sqlite3.Error) -> bool:
    return getattr(error, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY or (
        "database is locked" in str(error)
    )


def _begin_waiting(conn: sqlite3.Connection) -> None:
    """BEGIN IMMEDIATE with a busy timeout (on the writer's thread)."""
    conn.execute(f"PRAGMA busy_timeout = {BUSY_WAIT_MS}")
    try:
        conn.execute("BEGIN IMMEDIATE")
    finally:
        conn.execute("PRAGMA busy_timeout = 0")


def _run_jobs(conn: sqlite3.Connection, jobs: list[Job]) -> list[tuple[bool, Any]] | None:
    """Every job in the open transaction; None as soon as one fails."""
    outcomes: list[tuple[bool, Any]] = []
    for job in jobs:
        try:
            outcomes.append((True, job(conn)))
        except Exception:
            return None
    return outcomes


def _run_jobs_apart(conn: sqlite3.Connection, jobs: list[Job]) -> list[tuple[bool, Any]]:
    """Every job in its own savepoint, so that a failing one undoes only itself."""
    outcomes: list[tuple[bool, Any]] = []
    for job in jobs:
        try:
            conn.execute("SAVEPOINT job")
            result = job(conn)
            conn.execute("RELEASE job")
            outcomes.append((True, result))
        except Exception as error:  # a job's failure is its caller's, not the batch's
            failure = _as_storage_full(error)
            if not conn.in_transaction:
                # SQLite rolled the whole transaction back itself (it does on a full disk):
                # the jobs before this one are undone too, so the whole batch failed.
                return [(False, failure)] * len(jobs)
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
            outcomes.append((False, failure))
    return outcomes


def _checkpoint(conn: sqlite3.Connection) -> None:
    """Copy the WAL into the database (on the writer's thread: it fsyncs). PASSIVE: a reader
    in the way only leaves the rest for the next one."""
    with contextlib.suppress(sqlite3.Error):  # a full disk is reported by the next batch
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


def _commit(conn: sqlite3.Connection) -> sqlite3.Error | None:
    """Runs on the writer's thread: the fsync (and any checkpoint) happen here."""
    try:
        conn.execute("COMMIT")
    except sqlite3.Error as error:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        return error
    return None
