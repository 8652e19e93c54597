"""A full disk over the SIM socket: STORAGE_FULL, nothing acknowledged lost, and service back."""

from __future__ import annotations

import sqlite3

from conftest import RunningGateway, cap_database

DATE = "20261123"
ITEMS = ";".join(f"1*{1000 + n}*0.10" for n in range(400))  # a long check: ~10 KiB of events


def capped(pages: int) -> object:
    def job(conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA max_page_count = {pages}")

    return job


async def test_full_storage_answers_storage_full_and_recovers(gateway: RunningGateway) -> None:
    store = gateway.store
    await cap_database(store, room_pages=40)  # about 160 KiB of room
    connection = await gateway.connect()
    station = connection.workstation(6)
    acknowledged: list[int] = []
    refused = None
    try:
        for check in range(1, 200):
            reply = await station.request(
                "POST", "6", "1", str(check), DATE, "M1", "40.00", "40.00", ITEMS, ""
            )
            if reply[0] != "POST_OK":
                refused = (check, reply)
                break
            acknowledged.append(check)
        assert refused is not None, "the cap was never reached"
        check, reply = refused
        assert reply[:2] == ["POST_FAIL", "STORAGE_FULL"]
        assert store.writer.storage_full  # the alarm is up
        assert gateway.service.stats.requests[("POST", "STORAGE_FULL")] >= 1
        # Reads keep working while the disk is full.
        ident = await station.request("IDENT", "6", "1", "0", "6001000000000001")
        assert ident[0] == "IDENT_OK"

        await store.writer.run_on_thread(capped(1_000_000))  # space returns
        retried = await station.request(
            "POST", "6", "1", str(check), DATE, "M1", "40.00", "40.00", ITEMS, ""
        )
        assert retried[0] == "POST_OK"
        assert not store.writer.storage_full  # the alarm clears by itself
    finally:
        await connection.close()
    counts = await store.counts()
    assert counts.posted_checks == len(acknowledged) + 1
    assert len(acknowledged) >= 3
    assert await store.ledger_total("M1") == (40 * (len(acknowledged) + 1), 0, 0)
