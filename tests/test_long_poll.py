"""The gateway's side of central's long poll (DESIGN section 3): a change made at central reaches
a store within about a second, not at the next refresh interval."""

from __future__ import annotations

from pathlib import Path

from sync_harness import Admin, register, start_gateway
from waiting import until

from sync.central import ReferenceServer

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
