"""The gateway's side of central's long poll (DESIGN section 3): a change made at central reaches
a store within about a second, not at the next refresh interval."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
from scripted_central import scripted_client
from sync_harness import Admin, register, start_gateway
from test_sync_unit import Central
from waiting import cancelled, until

from gateway.store.store import Store
from sync.central import ReferenceServer
from sync.refresher import CURSOR, Refresher

INTERVAL_S = 30.0  # far longer than the test: only the long poll can bring the change in time


async def test_a_change_at_central_reaches_the_store_within_a_second_or_two(
    tmp_path: Path,
) -> None:
    async with ReferenceServer() as central:
        admin = Admin(central)
        daemon = await start_gateway(
            tmp_path, central.url, central={"refresh_interval_s": INTERVAL_S}
        )
        connection, station = await register(daemon, 4)
        assert daemon.store is not None and daemon.refresher is not None
        try:

            async def snapshot_done() -> bool:
                return daemon.store is not None and daemon.store.member("M2") is not None

            await until(snapshot_done, within_s=10, what="the first snapshot")
            pages = daemon.refresher.stats.pages
            await admin.http.post(
                "/_admin/members",
                json=[{"member_id": "N9", "identifiers": ["NEW-9"], "display_name": "Noor"}],
            )

            async def arrived() -> bool:
                reply = await station.request("IDENT", "4", "1", "0", "NEW-9")
                return reply[0] == "IDENT_OK"

            await until(arrived, within_s=3, what="the new member, through the long poll")
            assert daemon.refresher.stats.pages > pages
        finally:
            await connection.close()
            await daemon.stop()


# ---- the refresher's long poll at its own level (scripted HTTP) ---------------------------------


def changes_page(cursor: str, *members: str) -> httpx.Response:
    changes = [
        {"kind": "member", "data": {"member_id": m, "identifiers": [f"CARD-{m}"]}} for m in members
    ]
    return httpx.Response(200, json={"changes": changes, "next_cursor": cursor, "has_more": False})


def asked(request: httpx.Request) -> tuple[str, bool]:
    """(cursor, held) of a `changes` request."""
    return request.url.params.get("cursor", ""), "wait_s" in request.url.params


async def test_the_long_polls_page_is_applied_not_asked_for_again(empty_store: Store) -> None:
    central = Central(
        changes_page("c1"),  # the first round, from the stored cursor
        changes_page("c2", "M7"),  # the held request answers with the change
        then=lambda request: asyncio.sleep(30, httpx.Response(204)),  # then holds, as central does
    )
    await empty_store.set_state(CURSOR, "c0")
    refresher = Refresher(empty_store, scripted_client(central), interval_s=INTERVAL_S)
    task = asyncio.create_task(refresher.run())
    try:
        await until(lambda: empty_store.member("M7") is not None, within_s=5, what="M7")
        await until(lambda: len(central.requests) >= 3, within_s=5, what="the next long poll")
        assert [asked(r) for r in central.requests[:3]] == [
            ("c0", False),
            ("c1", True),
            ("c2", True),  # straight on with a held request: c1 was not asked again
        ]
        assert empty_store.get_state(CURSOR) == "c2"
    finally:
        await cancelled(task)


async def test_a_failed_long_poll_is_tried_again_within_a_second_not_the_interval(
    empty_store: Store,
) -> None:
    central = Central(
        changes_page("c1"),
        httpx.ConnectError("central restarting"),  # the held request fails
        changes_page("c1"),  # the round after it: central is back
        then=lambda request: asyncio.sleep(30, httpx.Response(204)),
    )
    await empty_store.set_state(CURSOR, "c0")
    refresher = Refresher(
        empty_store, scripted_client(central), interval_s=INTERVAL_S, random=lambda: 1.0
    )
    started = time.perf_counter()
    task = asyncio.create_task(refresher.run())
    try:
        await until(lambda: len(central.requests) >= 4, within_s=3, what="a round after it")
        assert time.perf_counter() - started < 3  # not the 30 s interval
        assert [asked(r) for r in central.requests[:4]] == [
            ("c0", False),
            ("c1", True),
            ("c1", False),
            ("c1", True),
        ]
    finally:
        await cancelled(task)
