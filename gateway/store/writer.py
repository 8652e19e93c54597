"""The single writer: one SQLite connection on its own thread; concurrent writes share commits.

Every change to the database goes through `Writer.submit`. Jobs queued while a commit is under
way are run together in the next transaction (each inside its own savepoint, so one failing job
does not undo its neighbours) and become durable with one fsync: group commit. The thread owns a
plain sqlite3 connection so that a whole batch costs one hop to the thread, not one per statement.
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

PAGE_SIZE = 4096
MAX_BATCH = 512
RIDER_DELAY_S = 0.5


class StorageFull(Exception):
    """The database or the disk under it is full; nothing of the failed batch was kept."""


class WriterClosed(Exception):
    """The writer is shutting down and takes no new work."""


def is_storage_full(error: BaseException) -> bool:
    return isinstance(error, sqlite3.Error) and (
        getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
        or "database or disk is full" in str(error)
    )


def _log_rider_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("rider_jobs_lost", error=str(future.exception()))


def _as_storage_full(error: Exception) -> Exception:
    return StorageFull(str(error)) if is_storage_full(error) else error


@dataclass
class WriterStats:
    batches: int = 0
    jobs: int = 0
    failed_jobs: int = 0
    storage_full_events: int = 0
    largest_batch: int = 0
    last_commit_ms: float = 0.0


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

    def __init__(self, conn_factory: Callable[[], sqlite3.Connection]) -> None:
        self._conn_factory = conn_factory
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        self._conn: sqlite3.Connection | None = None
        self._queue: asyncio.Queue[tuple[Job, asyncio.Future[Any], bool] | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._riders: list[Job] = []
        self.stats = WriterStats()
        self.storage_full = False  # the alarm: true from a full-disk failure until a commit works

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._conn = await loop.run_in_executor(self._executor, self._conn_factory)
        self._task = asyncio.create_task(self._run(), name="sqlite-writer")

    async def run_on_thread(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` on the writer's thread outside the batch loop (start-up checks, migrations)."""
        conn = self._require_conn()
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, conn)

    async def submit(self, job: Callable[[sqlite3.Connection], T], *, durable: bool = True) -> T:
        """Queue `job`, wait until its transaction committed, and return what it returned.

        durable=False commits without waiting for fsync: the change survives a crash of the
        process (it is in the WAL) but maybe not a power loss. Used for coupon reservations and
        identification events, never for posted checks.
        """
        future = self.submit_nowait(job, durable=durable)
        return await asyncio.shield(future)  # a cancelled caller must not undo a queued commit

    def submit_nowait(self, job: Job, *, durable: bool = True) -> asyncio.Future[Any]:
        if self._closing:
            raise WriterClosed("the store is shutting down")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((job, future, durable))
        return future

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    async def close(self) -> None:
        """Stop taking work, commit everything already queued, close the connection."""
        self._closing = True
        if self._task is not None:
            self._queue.put_nowait(None)
            await self._task
            self._task = None
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=True)

    def _require_conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise WriterClosed("the writer is not started")
        return self._conn

    def add_rider(self, job: Job) -> None:
        """Queue work that need not wake the writer: it rides with the next batch, or is
        committed within `RIDER_DELAY_S` (identification events, per request, are riders)."""
        if self._closing:
            raise WriterClosed("the store is shutting down")
        self._riders.append(job)

    async def _next(self) -> tuple[Job, asyncio.Future[Any], bool] | None:
        if not self._riders:
            return await self._queue.get()
        try:
            return await asyncio.wait_for(self._queue.get(), RIDER_DELAY_S)
        except TimeoutError:
            return self._rider_batch()

    def _rider_batch(self) -> tuple[Job, asyncio.Future[Any], bool]:
        riders, self._riders = self._riders, []

        def job(conn: sqlite3.Connection) -> None:
            for rider in riders:
                rider(conn)

        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_log_rider_failure)
        return job, future, False

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            item = await self._next()
            # Let the callers woken by the last commit queue their next writes, so they share
            # this commit instead of waiting for the one after it.
            await asyncio.sleep(0)
            batch: list[tuple[Job, asyncio.Future[Any], bool]] = []
            if item is None:
                stopping = True
            else:
                batch.append(item)
            while len(batch) < MAX_BATCH and not self._queue.empty():
                more = self._queue.get_nowait()
                if more is None:
                    stopping = True
                else:
                    batch.append(more)
            if self._riders:
                batch.append(self._rider_batch())
            if not batch:
                continue
            jobs = [job for job, _, _ in batch]
            durable = any(d for _, _, d in batch)
            try:
                outcomes = await loop.run_in_executor(self._executor, self._commit, jobs, durable)
            except Exception as error:  # the loop must outlive any failure, or writes hang
                log.exception("writer_batch_failed", jobs=len(jobs))
                outcomes = [(False, error)] * len(jobs)
            for (_, future, _), (ok, value) in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)
                    if not isinstance(value, StorageFull):
                        self.stats.failed_jobs += 1
            self._note_storage(outcomes)

    def _note_storage(self, outcomes: list[tuple[bool, Any]]) -> None:
        full = any(not ok and isinstance(v, StorageFull) for ok, v in outcomes)
        if full:
            self.stats.storage_full_events += 1
            if not self.storage_full:
                log.error("storage_full", alarm=True, hint="free disk space or raise max_db_mb")
            self.storage_full = True
        elif self.storage_full and any(ok for ok, _ in outcomes):
            self.storage_full = False
            log.warning("storage_recovered")

    def _commit(self, jobs: list[Job], durable: bool) -> list[tuple[bool, Any]]:
        """Runs on the writer thread: one transaction for the whole batch."""
        conn = self._require_conn()
        started = time.perf_counter()
        outcomes: list[tuple[bool, Any]] = []
        try:
            conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as error:
            return [(False, _as_storage_full(error))] * len(jobs)
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
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as error:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            return [(False, _as_storage_full(error))] * len(jobs)
        self.stats.batches += 1
        self.stats.jobs += len(jobs)
        self.stats.largest_batch = max(self.stats.largest_batch, len(jobs))
        self.stats.last_commit_ms = (time.perf_counter() - started) * 1000
        return outcomes
