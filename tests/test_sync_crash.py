"""SIGKILL of the gateway at random moments under load, twenty times, then a drain: central holds
exactly the checks that got POST_OK, each once."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from pathlib import Path

from gateway_process import GatewayProcess
from sync_harness import DATE, Admin
from waiting import until

from pos_adapters.sim.register import RegisterConnection, RegisterTimeout
from sync.central import ReferenceServer

ROUNDS = 20
LANES = 4


class Lane:
    """One register: posts checks back to back; after a crash it posts again the check it was
    waiting on, as a POS retransmits, so every check ends with a POST_OK."""

    def __init__(self, wsid: int) -> None:
        self.wsid = wsid
        self.next_check = wsid * 100_000
        self.in_flight: int | None = None
        self.acknowledged: set[int] = set()

    async def run(self, connection: RegisterConnection, progress: asyncio.Event) -> None:
        station = connection.workstation(self.wsid)
        while True:
            if self.in_flight is None:
                self.next_check += 1
                self.in_flight = self.next_check
            check = str(self.in_flight)
            fields = ["POST", str(self.wsid), "1", check, DATE, "M5", "3.00", "3.00", "", ""]
            try:
                reply = await station.request(*fields, answer_within=5)
            except (ConnectionError, RegisterTimeout):
                return  # the gateway died under us
            assert reply[0] == "POST_OK", reply
            self.acknowledged.add(self.in_flight)
            self.in_flight = None
            progress.set()


def outbox_depth(data_dir: Path) -> int:
    with sqlite3.connect(f"file:{data_dir / 'gateway.db'}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])


async def test_sigkill_twenty_times_under_load_then_central_holds_each_acknowledged_check_once(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    dice = random.Random(20261123)
    lanes = [Lane(wsid) for wsid in range(1, LANES + 1)]
    async with ReferenceServer() as central:
        admin = Admin(central)
        env = {
            "EDGE_GATEWAY_CENTRAL__URL": central.url,
            "EDGE_GATEWAY_CENTRAL__BACKOFF_MAX_S": "0.2",
            "EDGE_GATEWAY_CENTRAL__REFRESH_INTERVAL_S": "0.5",
            "EDGE_GATEWAY_CENTRAL__BATCH_SIZE": "25",
        }
        try:
            for _ in range(ROUNDS):
                gateway = await GatewayProcess.start(data_dir, env)
                connection = await gateway.connect()
                progress = asyncio.Event()
                load = [asyncio.create_task(lane.run(connection, progress)) for lane in lanes]
                await asyncio.wait_for(progress.wait(), 30)  # checks are flowing
                await asyncio.sleep(dice.uniform(0, 0.15))  # then a random moment
                await gateway.kill()
                await asyncio.gather(*load)
                await connection.close()

            # Last start: the registers finish what was in flight, and the outbox drains.
            gateway = await GatewayProcess.start(data_dir, env)
            connection = await gateway.connect()
            for lane in lanes:
                if lane.in_flight is not None:
                    station = connection.workstation(lane.wsid)
                    check = str(lane.in_flight)
                    reply = await station.request(
                        "POST", str(lane.wsid), "1", check, DATE, "M5", "3.00", "3.00", "", ""
                    )
                    assert reply[0] == "POST_OK"
                    lane.acknowledged.add(lane.in_flight)
            await connection.close()

            def drained() -> bool:
                return outbox_depth(data_dir) == 0

            await until(drained, within_s=60, what="outbox drained")
            await gateway.terminate()

            acknowledged = set().union(*(lane.acknowledged for lane in lanes))
            checks = await admin.checks()
            held = [(c["wsid"], c["check"]) for c in checks]
            assert len(held) == len(set(held))  # none twice
            assert {c["check"] for c in checks} == acknowledged
            assert all(c["event_ids"] == 1 for c in checks)
            assert len(acknowledged) >= ROUNDS * 2
            member = await admin.member("M5")
            assert member["points_balance"] == 980 + 3 * len(acknowledged)
        finally:
            await admin.aclose()
