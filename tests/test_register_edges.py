"""Register traffic at the edges of a pilot: scans before a check is opened, and a gateway
clock behind the registers'."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

from conftest import Clock, RunningGateway, coupon_record, events
from gateway_process import GatewayProcess, cli

DATE_TODAY = "20261123"  # conftest's NOW


async def test_check_zero_scans_hold_a_coupon_only_briefly(
    gateway: RunningGateway, clock: Clock
) -> None:
    """1,000 anonymous scans before any check was opened used to reserve every use of a bearer
    coupon for two hours (DESIGN section 2: `coupons.unbound_reservation_ttl_s`)."""
    await gateway.store.upsert_coupons(
        [coupon_record("SCAN3", max_redemptions=3, per_member_limit=None, min_spend=None)]
    )
    connection = await gateway.connect()
    try:
        station = connection.workstation(5)
        replies = [
            await station.request("COUPON", "5", "0", "", "SCAN3", "10.00") for _ in range(5)
        ]
        assert [r[0] for r in replies] == ["COUPON_OK"] * 3 + ["COUPON_FAIL"] * 2
        assert replies[3][1] == "RESERVED"

        clock.advance(seconds=601)  # past the short hold, long before the two hours
        opened = await station.request("COUPON", "5", "42", "", "SCAN3", "10.00")
        assert opened[0] == "COUPON_OK", opened
        # A scan on an opened check holds its use for the whole check (two hours by default).
        clock.advance(seconds=3600)
        for check in ("43", "44", "45"):
            await station.request("COUPON", "5", check, "", "SCAN3", "10.00")
        assert (await station.request("COUPON", "5", "46", "", "SCAN3", "10.00"))[:2] == [
            "COUPON_FAIL",
            "RESERVED",
        ]
        post = ["POST", "5", "1", "42", DATE_TODAY, "", "10.00", "9.00", "1*1*10.00", opened[1]]
        assert (await station.request(*post))[0] == "POST_OK"
    finally:
        await connection.close()


async def test_a_clock_behind_the_registers_is_counted_alarmed_once_and_clears(
    gateway: RunningGateway, clock: Clock, log_lines: io.StringIO
) -> None:
    service = gateway.service
    connection = await gateway.connect()
    try:
        station = connection.workstation(8)
        ahead = "20261126"  # the registers are three days ahead of this gateway
        for check in range(1, 6):
            reply = await station.request(
                "POST", "8", "1", str(check), ahead, "", "5.00", "5.00", "1*1*5.00", ""
            )
            assert reply[:2] == ["ERROR", "BAD_FIELD"] and "business_date" in reply[2]
        skew = service.clock_skew()
        assert service.stats.future_business_dates == 5
        assert skew is not None and skew["register_business_date"] == "2026-11-26"
        assert skew["gateway_date"] == "2026-11-23"
        alarms = events(log_lines, "business_date_refused")
        assert len(alarms) == 1 and alarms[0]["level"] == "error"  # once per condition

        clock.advance(days=2)  # the time sync fixed the clock: the 26th is tomorrow now
        assert service.clock_skew() is None
        assert len(events(log_lines, "business_date_accepted_again")) == 1
        assert service.clock_skew() is None  # and said once
        reply = await station.request(
            "POST", "8", "1", "9", ahead, "", "5.00", "5.00", "1*1*5.00", ""
        )
        assert reply[0] == "POST_OK"
    finally:
        await connection.close()


async def test_status_and_doctor_name_a_clock_behind_the_registers(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    gateway = await GatewayProcess.start(data_dir)
    connection = await gateway.connect()
    try:
        far = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).strftime("%Y%m%d")
        reply = await connection.workstation(3).request(
            "POST", "3", "1", "12", far, "", "5.00", "5.00", "1*1*5.00", ""
        )
        assert reply[:2] == ["ERROR", "BAD_FIELD"]
        admin = {"EDGE_GATEWAY_ADMIN__PORT": str(gateway.events("gateway_ready")[0]["admin_port"])}
        code, out, _ = await cli(data_dir, "status", **admin)
        assert code == 0 and "BEHIND THE REGISTERS?" in " ".join(out.split())
        code, out, _ = await cli(data_dir, "doctor", **admin)
        flat = " ".join(out.split())
        assert code == 1 and "registers' dates" in flat and "check the time sync" in flat
        alarms = gateway.events("business_date_refused")
        assert len(alarms) == 1 and alarms[0]["business_date"][:4] == far[:4]
    finally:
        await connection.close()
        await gateway.close()
