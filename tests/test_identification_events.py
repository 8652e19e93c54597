"""`member.identified` events: on disk within a second of the reply even when nothing else is
written, counted in the outbox from then, and kept (counted, alarmed, bounded) on a full disk."""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
import urllib.request
from pathlib import Path
from typing import Any

from conftest import Clock, RunningGateway, cap_database, events, sample_members
from gateway_process import GatewayProcess, Spawn, import_samples
from waiting import until

from gateway.domain.models import IdentRequest
from gateway.service import Gateway, ServiceOptions
from gateway.store.store import Store

CARD = "6001000000000001"


def identified_rows(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return int(
            conn.execute("SELECT COUNT(*) FROM outbox WHERE type = 'member.identified'").fetchone()[
                0
            ]
        )


def admin_status(process: GatewayProcess) -> dict[str, Any]:
    port = process.events("gateway_ready")[0]["admin_port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as answer:
        status: dict[str, Any] = json.load(answer)
    return status


async def test_a_quiet_store_commits_identifications_within_a_second_and_a_kill_keeps_them(
    data_dir: Path, spawn: Spawn
) -> None:
    """Standalone, only IDENTs, nothing else written: before, they waited in memory for a
    write that never came, and a SIGKILL five seconds later found 0 rows."""
    await import_samples(data_dir)
    gateway = await spawn()
    connection = await gateway.connect()
    try:
        stations = [(n, connection.workstation(n)) for n in range(1, 11)]
        for _ in range(100):
            replies = await asyncio.gather(
                *(s.request("IDENT", str(n), "1", "0", CARD) for n, s in stations)
            )
            assert all(reply[0] == "IDENT_OK" for reply in replies)
        db = data_dir / "gateway.db"

        def all_on_disk() -> bool:
            return identified_rows(db) == 1000

        await until(all_on_disk, within_s=1.5, what="1,000 identification events on disk")
        status = await asyncio.to_thread(admin_status, gateway)
        assert status["outbox"]["depth"] == 1000  # counted from the moment they are on disk
        assert status["outbox"]["in_memory"] == 0
    finally:
        await connection.close()
    await gateway.kill()
    assert identified_rows(data_dir / "gateway.db") == 1000


async def test_a_full_disk_keeps_identifications_in_memory_counted_and_stores_them_after(
    gateway: RunningGateway,
) -> None:
    store = gateway.store
    await cap_database(store)
    connection = await gateway.connect()
    try:
        station = connection.workstation(2)
        for _ in range(300):
            assert (await station.request("IDENT", "2", "1", "0", CARD))[0] == "IDENT_OK"

        def refused_and_kept() -> bool:
            return store.writer.storage_full and store.writer.stats.riders_retried > 0

        await until(refused_and_kept, within_s=3, what="the disk refusing the events")
        assert store.writer.pending_riders == 300  # in memory, none dropped
        assert store.writer.stats.riders_dropped == 0
        assert (await store.counts()).outbox_depth == 0

        await store.set_page_limit(0)  # room again

        async def stored() -> bool:
            return (await store.counts()).outbox_depth == 300

        await until(stored, within_s=5, what="the kept events stored once room returned")
        assert store.writer.pending_riders == 0
        assert not store.writer.storage_full  # the probe saw room; no check needed for it
    finally:
        await connection.close()


async def test_beyond_the_bound_the_oldest_are_dropped_counted_and_logged(
    tmp_path: Path, log_lines: io.StringIO
) -> None:
    store = await Store.open(tmp_path / "gateway.db", max_pending_events=100)
    try:
        await store.upsert_members(sample_members())
        service = Gateway(store, ServiceOptions(store_id="S001"), clock=Clock())
        await cap_database(store)
        for _ in range(150):
            await service.identify(IdentRequest(1, 1, 0, CARD))

        def bounded() -> bool:
            return store.writer.stats.riders_dropped == 50

        await until(bounded, within_s=5, what="the bound applied")
        assert store.writer.pending_riders == 100
        dropped = events(log_lines, "identification_events_dropped")
        assert dropped and dropped[0]["events"] == 50 and dropped[0]["level"] == "error"
    finally:
        await store.set_page_limit(0)
        await store.close()
