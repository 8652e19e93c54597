"""The writer runs a register request's statements on the event loop, so what could hold the loop
is tested here with real files: another process's write lock is waited for off the loop, the WAL
stays bounded though SQLite's own checkpointing is off, and a failing job still undoes only
itself."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from pathlib import Path

import pytest
from write_lock import write_lock_held

from gateway.store.store import Store
from gateway.store.writer import CHECKPOINT_ROWS


async def test_a_write_lock_held_elsewhere_is_waited_for_off_the_loop(store: Store) -> None:
    def job(conn: sqlite3.Connection) -> int:
        return int(conn.execute("SELECT 41 + 1").fetchone()[0])

    async with write_lock_held(store.path):
        written = asyncio.ensure_future(store.writer.submit(job, small=True))
        # The loop keeps turning while the batch waits for the lock: 20 ticks of 10 ms.
        started = time.perf_counter()
        for _ in range(20):
            await asyncio.sleep(0.01)
        assert time.perf_counter() - started < 1.0
        assert not written.done()
    assert await asyncio.wait_for(written, 10) == 42


async def test_the_wal_stays_bounded_without_sqlite_checkpointing_itself(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "gateway.db")
    try:
        assert store.writer._require_conn().execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0

        def job(conn: sqlite3.Connection) -> None:  # two rows written, three pages each time
            conn.execute("INSERT INTO storage_probe VALUES (zeroblob(8192))")
            conn.execute("DELETE FROM storage_probe")

        for _ in range(CHECKPOINT_ROWS * 3 // 2):  # three checkpoints' worth
            await store.writer.submit(job, durable=False, small=True)
            await asyncio.sleep(0)  # the loop turns between requests, as it does in service
        wal = await asyncio.to_thread(os.path.getsize, f"{store.path}-wal")
        # Unchecked, 6,000 commits of three pages each would leave about 70 MiB of WAL.
        assert 0 < wal < 40 * 1024 * 1024, wal
    finally:
        await store.close()


async def test_a_failing_job_undoes_only_itself(store: Store) -> None:
    def good(value: str) -> object:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT OR REPLACE INTO sync_state VALUES (?, ?)", (value, value))

        return job

    def bad(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT OR REPLACE INTO sync_state VALUES ('bad', 'half')")
        raise RuntimeError("a bug in one job")

    results = await asyncio.gather(
        store.writer.submit(good("a"), small=True),  # type: ignore[arg-type]
        store.writer.submit(bad, small=True),
        store.writer.submit(good("b"), small=True),  # type: ignore[arg-type]
        return_exceptions=True,
    )
    assert isinstance(results[1], RuntimeError)
    assert results[0] is None and results[2] is None
    assert store.get_state("a") == "a" and store.get_state("b") == "b"
    assert store.get_state("bad") is None  # its half-done write was undone


@pytest.mark.parametrize("durable", [True, False])
async def test_each_kind_of_batch_is_on_disk_for_a_new_connection(
    store: Store, durable: bool
) -> None:
    def job(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO sync_state VALUES ('kind', ?)", (str(durable),))

    await store.writer.submit(job, durable=durable, small=True)
    other = sqlite3.connect(store.path)
    try:
        row = other.execute("SELECT value FROM sync_state WHERE key = 'kind'").fetchone()
    finally:
        other.close()
    assert row == (str(durable),)
