"""The SQLite store: schema and start-up checks, the single writer, a full disk, members."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import NOW, STORE_ID, Clock, cap_database, member_record, sample_members
from service_requests import DATE, post_req

from gateway.domain.models import (
    IdentRequest,
    OutboxEvent,
    PostOk,
    Refusal,
)
from gateway.domain.reasons import Reason
from gateway.domain.rules_doc import DEFAULT_RULES
from gateway.rules.settlement import SettleOptions
from gateway.service import Gateway, ServiceOptions
from gateway.store.schema import SCHEMA_VERSION, SchemaTooNew
from gateway.store.store import (
    CheckKey,
    CheckToRecord,
    Recorded,
    Store,
    StoreCorrupt,
    utc_stamp,
)
from gateway.store.writer import PAGE_SIZE, WriterClosed


def event(n: int, kind: str = "test.event") -> OutboxEvent:
    return OutboxEvent(f"EV{n:024d}", kind, utc_stamp(NOW), {"n": n})


def query(path: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def garble_middle_pages(path: Path) -> None:
    """Write garbage over whole pages in the middle of a closed database, the header intact."""
    wal = Path(f"{path}-wal")
    assert not wal.exists() or wal.stat().st_size == 0  # everything is in the main file
    size = path.stat().st_size
    assert size > 40 * PAGE_SIZE
    with path.open("r+b") as f:
        f.seek((size // PAGE_SIZE // 2) * PAGE_SIZE)
        f.write(bytes(range(256)) * (8 * PAGE_SIZE // 256))


def writer_threads() -> int:
    return sum(t.name.startswith("sqlite-writer") for t in threading.enumerate())


def write_garbage_file(path: Path) -> None:
    path.write_bytes(b"not a database at all. " * 1000)


async def outbox_ids(store: Store) -> set[str]:
    return {e.event_id for e in await store.outbox_events(limit=100_000)}


# ---- opening ---------------------------------------------------------------------------------


async def test_open_creates_the_schema_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "gateway.db"
    store = await Store.open(path)
    try:
        assert path.exists()
        version = await store.writer.run_on_thread(
            lambda c: c.execute("PRAGMA user_version").fetchone()[0]
        )
        assert version == SCHEMA_VERSION
        mode = await store.writer.run_on_thread(
            lambda c: c.execute("PRAGMA journal_mode").fetchone()[0]
        )
        assert mode == "wal"
        await store.append_events([event(1)])
        synchronous = await store.writer.run_on_thread(
            lambda c: c.execute("PRAGMA synchronous").fetchone()[0]
        )
        assert synchronous == 2  # FULL for a durable commit
        counts = await store.counts()
        assert (counts.members, counts.posted_checks, counts.outbox_depth) == (0, 0, 1)
    finally:
        await store.close()
    tables = {r[0] for r in query(path, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"members", "coupons", "posted_checks", "ledger", "outbox"} <= tables


async def test_reopening_keeps_data_and_version(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    store = await Store.open(path)
    await store.upsert_members(sample_members())
    await store.close()
    for _ in range(2):
        store = await Store.open(path)
        try:
            assert (await store.counts()).members == 5
            view = store.member_by_identifier("6001000000000001")
            assert view is not None and view.balance.points == 120
        finally:
            await store.close()
    assert query(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]


async def test_a_database_from_a_newer_gateway_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE future (x)")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaTooNew):
        await Store.open(path)
    # nothing was written to it
    assert query(path, "PRAGMA user_version") == [(SCHEMA_VERSION + 1,)]
    assert query(path, "SELECT name FROM sqlite_master") == [("future",)]


async def test_a_corrupted_database_is_refused_at_open(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    store = await Store.open(path)
    await store.upsert_members(
        [member_record(f"M{n}", display_name=f"Member {n}" * 5) for n in range(3000)]
    )
    await store.close()
    garble_middle_pages(path)
    threads = writer_threads()
    # The daemon's start-up is Store.open: it must refuse rather than serve from damaged data.
    with pytest.raises((StoreCorrupt, sqlite3.DatabaseError)):
        await Store.open(path)
    assert writer_threads() == threads  # the refused open cleaned up after itself


async def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    write_garbage_file(path)
    with pytest.raises(sqlite3.DatabaseError):
        await Store.open(path)


async def test_a_refused_open_leaves_no_writer_thread_behind(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    write_garbage_file(path)
    threads = writer_threads()
    with pytest.raises(sqlite3.DatabaseError):
        await Store.open(path)
    assert writer_threads() == threads


# ---- the writer --------------------------------------------------------------------------------


async def test_concurrent_writes_share_commits(store: Store) -> None:
    before = store.writer.stats.batches
    await asyncio.gather(*(store.append_events([event(n)]) for n in range(200)))
    # All 200 are queued before the writer wakes (and it yields once more before it takes
    # them), and 200 fit in one batch (MAX_BATCH is 512): one commit for all of them.
    assert store.writer.stats.batches - before == 1
    assert store.writer.stats.largest_batch == 200
    assert await outbox_ids(store) == {event(n).event_id for n in range(200)}


async def test_a_failing_job_fails_only_its_own_caller(store: Store) -> None:
    def insert(n: int) -> Callable[[sqlite3.Connection], int]:
        def job(conn: sqlite3.Connection) -> int:
            conn.execute(
                "INSERT INTO outbox (event_id, type, occurred_at, payload)"
                " VALUES (?, 't', '', '{}')",
                (f"JOB{n}",),
            )
            return n

        return job

    def half_done_then_fails(conn: sqlite3.Connection) -> None:
        insert(99)(conn)
        raise ValueError("boom")

    def breaks_a_constraint(conn: sqlite3.Connection) -> None:
        insert(98)(conn)
        insert(1)(conn)  # JOB1 is taken by a neighbour

    before = store.writer.stats
    batches, failed = before.batches, before.failed_jobs
    futures = [
        store.writer.submit_nowait(insert(0)),
        store.writer.submit_nowait(insert(1)),
        store.writer.submit_nowait(half_done_then_fails),
        store.writer.submit_nowait(insert(2)),
        store.writer.submit_nowait(breaks_a_constraint),
        store.writer.submit_nowait(insert(3)),
    ]
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert results[:2] == [0, 1] and results[3] == 2 and results[5] == 3
    assert isinstance(results[2], ValueError)
    assert isinstance(results[4], sqlite3.IntegrityError)
    assert store.writer.stats.batches - batches == 1  # they really shared one transaction
    assert store.writer.stats.failed_jobs - failed == 2
    assert await outbox_ids(store) == {"JOB0", "JOB1", "JOB2", "JOB3"}  # no JOB98, no JOB99


async def test_close_commits_everything_queued_before_it(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    store = await Store.open(path)
    await store.upsert_members(sample_members())
    service = Gateway(store, ServiceOptions(store_id=STORE_ID), clock=Clock())
    await service.identify(IdentRequest(1, 1, 0, "6001000000000001"))  # a rider: no commit yet
    futures = [store.writer.submit_nowait(_append(event(n))) for n in range(50)]
    await store.close()
    assert all(f.done() and f.exception() is None for f in futures)
    with pytest.raises(WriterClosed):
        await store.append_events([event(999)])

    reopened = await Store.open(path)
    try:
        events = await reopened.outbox_events(limit=1000)
        assert {e.event_id for e in events} >= {event(n).event_id for n in range(50)}
        assert [e.type for e in events].count("member.identified") == 1
        assert len(events) == 51
    finally:
        await reopened.close()


def _append(e: OutboxEvent) -> Callable[[sqlite3.Connection], None]:
    def job(conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO outbox (event_id, type, occurred_at, payload) VALUES (?, ?, ?, '{}')",
            (e.event_id, e.type, e.occurred_at),
        )

    return job


# ---- a full disk ------------------------------------------------------------------------------


async def test_a_full_database_refuses_posts_keeps_what_was_acknowledged_and_recovers(
    store: Store, service: Gateway
) -> None:
    await cap_database(store, room_pages=4)
    acknowledged: list[int] = []
    refusal: Refusal | None = None
    for check in range(1, 2000):
        reply = await service.post_check(post_req(check, "M5", total=1000 + check))
        if isinstance(reply, Refusal):
            refusal = reply
            break
        acknowledged.append(check)
    assert refusal is not None, "the database never filled up"
    assert refusal.reason == Reason.STORAGE_FULL
    assert acknowledged, "the cap was too tight to post anything"
    assert store.writer.storage_full is True
    assert store.writer.stats.storage_full_events >= 1

    posted = query(store.path, "SELECT check_no FROM posted_checks ORDER BY check_no")
    assert [r[0] for r in posted] == acknowledged  # every PostOk is kept, the refused one is not
    ledger = await store.ledger_total("M5")
    assert ledger[0] == sum((1000 + c) // 100 for c in acknowledged)
    # reads go on while writes are refused
    assert store.member_by_identifier("6001000000000005") is not None

    await store.set_page_limit(0)
    failed_check = acknowledged[-1] + 1
    retry = await service.post_check(post_req(failed_check, "M5", total=1000 + failed_check))
    assert isinstance(retry, PostOk)
    assert store.writer.storage_full is False
    assert (await store.ledger_total("M5"))[0] == ledger[0] + (1000 + failed_check) // 100


# ---- the member cache -------------------------------------------------------------------------


async def test_an_identifier_moved_to_another_member_follows_it(store: Store) -> None:
    moved = member_record("M5", identifiers=["6001000000000005", "QR-7f3a"])
    await store.upsert_members([moved])
    view = store.member_by_identifier("QR-7f3a")
    assert view is not None and view.member.member_id == "M5"
    m1 = store.member_by_identifier("6001000000000001")
    assert m1 is not None and m1.member.member_id == "M1"
    # and an identifier a member's new record no longer lists stops finding it
    await store.upsert_members([member_record("M5", identifiers=["QR-5d2e"])])
    assert store.member_by_identifier("6001000000000005") is None
    assert store.member_by_identifier("QR-7f3a") is None
    found = store.member_by_identifier("QR-5d2e")
    assert found is not None and found.member.member_id == "M5"


async def _set_applied(store: Store, check_points: int, applied_at: str) -> None:
    def job(conn: sqlite3.Connection) -> None:
        cur = conn.execute(
            "UPDATE ledger SET applied_at = ? WHERE member_id = 'M1' AND points = ?",
            (applied_at, check_points),
        )
        assert cur.rowcount == 1

    await store.writer.submit(job)


async def test_a_newer_central_balance_absorbs_the_entries_it_applied(
    store: Store, service: Gateway
) -> None:
    await service.post_check(post_req(1, total=2240))  # 22 points
    await service.post_check(post_req(2, total=1000))  # 10 points
    await service.post_check(post_req(3, total=500))  # 5 points
    view = store.member("M1")
    assert view is not None and view.balance.points == 120 + 22 + 10 + 5

    as_of = dt.datetime(2026, 11, 23, 13, 0, tzinfo=dt.UTC)
    await _set_applied(store, 22, utc_stamp(as_of - dt.timedelta(minutes=30)))
    await _set_applied(store, 10, utc_stamp(as_of))  # applied exactly at the stamp: included
    await _set_applied(store, 5, utc_stamp(as_of + dt.timedelta(seconds=1)))  # after it: not
    m1 = member_record(
        "M1", identifiers=["6001000000000001"], points_balance=152, balance_as_of=as_of
    )
    await store.upsert_members([m1])
    view = store.member("M1")
    assert view is not None
    assert view.balance.points == 152 + 5
    # the ledger itself keeps every entry for central
    assert await store.ledger_total("M1") == (37, 0, 0)
    # and a later post counts on top of the new balance
    reply = await service.post_check(post_req(4, total=300))
    assert isinstance(reply, PostOk) and reply.points_balance == 152 + 5 + 3


async def test_delete_members_removes_them_and_their_identifiers(store: Store) -> None:
    await store.delete_members(["M1", "M2"])
    assert store.member_by_identifier("6001000000000001") is None
    assert store.member_by_identifier("QR-91bc") is None
    assert store.member("M1") is None
    counts = await store.counts()
    assert counts.members == 3
    assert counts.identifiers == 4  # M3 1, M4 1, M5 2
    assert store.member_by_identifier("6001000000000005") is not None


async def test_a_re_imported_member_still_shows_unapplied_points(
    store: Store, service: Gateway
) -> None:
    await service.post_check(post_req(1, total=2240))
    await store.delete_members(["M1"])
    [m1] = [m for m in sample_members() if m.member_id == "M1"]
    await store.upsert_members([m1])  # the same record again, balance as of 10:00
    view = store.member("M1")
    assert view is not None and view.balance.points == 142


# ---- recording a check, settled inside its own transaction --------------------------------


def _check(check: int, total: int) -> CheckToRecord:
    return CheckToRecord(
        CheckKey(DATE, 1, check),
        post_req(check, total=total),
        NOW,
        DEFAULT_RULES,
        {},
        SettleOptions(store_id=STORE_ID),
    )


async def test_checks_recorded_at_once_each_see_every_earlier_one(store: Store) -> None:
    # Ten checks of M1 (120 points) queued together share transactions: each is settled from
    # what its own job reads, after the jobs before it, so the balances run 130, 140, ... 220.
    recorded = await asyncio.gather(*(store.record_check(_check(n, 1000)) for n in range(1, 11)))
    assert all(r.first_time for r in recorded)
    assert sorted(r.reply.points_balance for r in recorded) == list(range(130, 221, 10))
    assert await store.ledger_total("M1") == (100, 0, 0)
    view = store.member("M1")
    assert view is not None and view.balance.points == 220


async def test_a_posted_check_answers_its_first_reply_whatever_happened_since(
    store: Store, service: Gateway
) -> None:
    first = await store.record_check(_check(7, 100))
    assert first.first_time and first.settlement is not None
    assert (first.reply.points_earned, first.reply.points_balance) == (1, 121)
    await service.post_check(post_req(8, total=1000))  # another check of M1 commits: 10 points
    again = await store.record_check(_check(7, 5000))  # the same check, whatever it says now
    assert again == Recorded(first.reply, first_time=False)
    assert store.posted_reply(CheckKey(DATE, 1, 7)) == first.reply
    assert await store.ledger_total("M1") == (11, 0, 0)  # counted once
