"""The storage-full alarm and readiness say whether a check can be stored now: a small commit
that happens to fit (a COUPON) does not clear them while checks are refused."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path

from conftest import RunningGateway, cap_database
from gateway_process import GatewayProcess, import_samples
from waiting import until

DATE = "20261123"
ITEMS = ";".join(f"1*{100000000 + n}*0.10" for n in range(500))  # ~24 KiB of events a check


def post(check: int) -> list[str]:
    return ["POST", "6", "1", str(check), DATE, "", "100.00", "100.00", ITEMS, ""]


async def test_a_coupon_that_fits_does_not_clear_the_alarm_while_checks_are_refused(
    gateway: RunningGateway,
) -> None:
    store = gateway.store
    await cap_database(store, room_pages=60)
    connection = await gateway.connect()
    station = connection.workstation(6)
    try:
        check = 1
        while (reply := await station.request(*post(check)))[0] == "POST_OK":
            check += 1
        assert reply[:2] == ["POST_FAIL", "STORAGE_FULL"]
        assert store.writer.storage_full
        # A few pages come free: enough for a coupon's reservation, not for a check.
        await cap_database(store, room_pages=4)
        for n in range(2):
            coupon = await station.request("COUPON", "6", str(100 + n), "", "TENOFF", "10.00")
            assert coupon[0] == "COUPON_OK"
            assert store.writer.storage_full, "a small commit cleared the alarm"
        assert (await station.request(*post(check)))[:2] == ["POST_FAIL", "STORAGE_FULL"]
        assert store.writer.storage_full

        # Room returns with no check under way: the probe clears the alarm by itself.
        await store.set_page_limit(0)

        def cleared() -> bool:
            return not store.writer.storage_full

        await until(cleared, within_s=6, what="the alarm cleared by the probe")
        assert (await station.request(*post(check)))[0] == "POST_OK"
    finally:
        await connection.close()


def readyz(port: int) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as refused:
        return refused.code, json.load(refused)


async def test_readiness_fails_while_a_check_cannot_be_stored(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    await import_samples(data_dir)
    gateway = await GatewayProcess.start(data_dir, {"EDGE_GATEWAY_STORAGE__MAX_DB_MB": "1"})
    admin_port = int(gateway.events("gateway_ready")[0]["admin_port"])
    connection = await gateway.connect()
    station = connection.workstation(6)
    try:
        assert (await asyncio.to_thread(readyz, admin_port))[0] == 200
        check = 1
        while (reply := await station.request(*post(check)))[0] == "POST_OK":
            check += 1
        assert reply[:2] == ["POST_FAIL", "STORAGE_FULL"]
        for n in range(10):  # small writes, some of which fit in what is left
            await station.request("COUPON", "6", str(500 + n), "", "TENOFF", "10.00")
            await station.request("IDENT", "6", "1", "0", "6001000000000001")
            refused = (await station.request(*post(check)))[:2] == ["POST_FAIL", "STORAGE_FULL"]
            code, body = await asyncio.to_thread(readyz, admin_port)
            assert refused, "a check fitted again in a 1 MB cap"
            assert code == 503, f"ready while checks are refused: {body}"
            assert body["checks"] == {"database": True, "storage": False, "sim_tcp": True}
        alarms = gateway.events("storage_full")
        recoveries = gateway.events("storage_recovered")
        assert len(alarms) == 1 and not recoveries  # no flapping
    finally:
        await connection.close()
        await gateway.close()
