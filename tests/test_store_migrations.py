"""A store written by an earlier schema opens with everything it held: migration 6 rebuilds the
outbox without AUTOINCREMENT, keeping every waiting event, its order and its batch."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from conftest import NOW

from gateway.domain.models import OutboxEvent
from gateway.store.schema import MIGRATIONS, SCHEMA_VERSION, _statements
from gateway.store.store import Store, utc_stamp


def schema_5_database(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    for version in range(1, 6):
        for statement in _statements(MIGRATIONS[version - 1]):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {version}")
    rows = [
        (seq, f"EV{seq:024d}", "test.event", utc_stamp(NOW), f'{{"n": {seq}}}', batch)
        for seq, batch in ((3, "B1"), (7, "B1"), (12, None), (40, None))
    ]
    conn.executemany(
        "INSERT INTO outbox (seq, event_id, type, occurred_at, payload, batch_id)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        rows,
    )
    conn.close()


async def test_the_outbox_keeps_its_events_order_and_batches_through_migration_6(
    tmp_path: Path,
) -> None:
    path = tmp_path / "gateway.db"
    schema_5_database(path)
    store = await Store.open(path)
    try:
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            table = conn.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'outbox'"
            ).fetchone()[0]
            assert "AUTOINCREMENT" not in table
            assert conn.execute(
                "SELECT name FROM sqlite_master WHERE name = 'outbox_batch'"
            ).fetchone() == ("outbox_batch",)
            kept = conn.execute("SELECT seq, batch_id FROM outbox ORDER BY seq").fetchall()
        finally:
            conn.close()
        assert kept == [(3, "B1"), (7, "B1"), (12, None), (40, None)]

        await store.append_events([OutboxEvent("EV-NEW", "test.event", utc_stamp(NOW), {})])
        waiting = [event.event_id for event in await store.outbox_events(10)]
        assert waiting[-1] == "EV-NEW"  # written last, sent last
        assert waiting[:4] == [f"EV{n:024d}" for n in (3, 7, 12, 40)]
    finally:
        await store.close()
