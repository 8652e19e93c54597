"""Store and forward, refresh, authorisation and balances against the reference central."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
from pathlib import Path

from conformance.infra import free_port
from conftest import identified_events
from sync_harness import (
    Admin,
    post,
    register,
    start_gateway,
    synced_gateway,
    workstation,
)
from waiting import until

from gateway.daemon import Daemon
from gateway.domain.ids import new_ulid
from gateway.domain.models import OutboxEvent
from sync.central import ReferenceServer


async def outbox_empty(daemon: Daemon) -> bool:
    assert daemon.store is not None
    depth, _ = await daemon.store.outbox_depth()
    return depth == 0


async def test_central_down_for_the_whole_run_then_up_every_check_arrives_once(
    tmp_path: Path,
) -> None:
    port = free_port()
    daemon = await start_gateway(tmp_path, f"http://127.0.0.1:{port}")
    connection, station = await register(daemon, 3)
    try:
        posted = set()
        for check in range(1, 41):
            reply = await post(station, 3, check, member="M1" if check % 2 else "")
            assert reply[0] == "POST_OK"
            posted.add(check)
        assert (await station.request("PING"))[1] == "OFFLINE"
        forwarder, client = daemon.forwarder, daemon.central
        assert forwarder is not None and client is not None

        def retried() -> bool:
            return forwarder.stats.failures >= 3

        await until(retried, within_s=30, what="several retries while central is away")

        async with ReferenceServer(port=port) as central:
            admin = Admin(central)
            try:
                await until(lambda: outbox_empty(daemon), within_s=30, what="outbox drained")
                checks = await admin.checks()
                assert {c["check"] for c in checks} == posted
                assert all(c["event_ids"] == 1 for c in checks)
                assert (await admin.stats())["duplicate_check_keys"] == 0
                assert (await station.request("PING"))[1] == "ONLINE"
                # Many retries while central was away, but one outage: logged once, and once
                # recovered.
                assert (client.link.outages, client.link.recoveries) == (1, 1)
            finally:
                await admin.aclose()
    finally:
        await connection.close()
        await daemon.stop()


async def test_a_storm_of_errors_and_lost_acknowledgements_counts_each_check_once(
    tmp_path: Path,
) -> None:
    faults = dict(
        error_rate=0.25, throttle_rate=0.15, retry_after="0", drop_after_commit_rate=0.3, seed=7
    )
    async with synced_gateway(tmp_path, faults, central={"batch_size": 7}) as (admin, daemon):

        async def lane(wsid: int) -> set[int]:
            async with workstation(daemon, wsid) as station:
                done = set()
                for n in range(40):
                    check = wsid * 1000 + n
                    assert (await post(station, wsid, check, member="M5"))[0] == "POST_OK"
                    done.add(check)
                return done

        posted = set().union(*await asyncio.gather(*(lane(w) for w in range(1, 6))))
        await until(lambda: outbox_empty(daemon), within_s=60, what="outbox drained")
        checks = await admin.checks()
        assert {c["check"] for c in checks} == posted
        stats = await admin.stats()
        assert stats["duplicate_check_keys"] == 0
        # The faults really happened, and the lost acknowledgements were resent.
        assert stats["events"]["duplicate"].get("check.posted", 0) > 0
        assert daemon.forwarder is not None and daemon.forwarder.stats.failures > 0
        member = await admin.member("M5")
        assert member["points_balance"] == 980 + 10 * len(posted)


async def test_a_poison_event_in_a_batch_of_500_goes_to_dead_letters_and_the_rest_through(
    tmp_path: Path,
) -> None:
    async with synced_gateway(tmp_path) as (admin, daemon):
        assert daemon.store is not None and daemon.forwarder is not None
        events = identified_events(500)
        # A malformed event central refuses the whole batch for, and one it rejects alone.
        events[137] = OutboxEvent(new_ulid(), "member.identified", "yesterday", {})
        events[400] = OutboxEvent(
            new_ulid(), "loyalty.teleported", "2026-11-23T10:00:00Z", {"store_id": "S001"}
        )
        await daemon.store.append_events(events)
        await until(lambda: outbox_empty(daemon), within_s=30, what="outbox drained")
        stats = await admin.stats()
        assert stats["events"]["accepted"]["member.identified"] == 498
        with sqlite3.connect(daemon.settings.database_path) as db:
            dead = dict(db.execute("SELECT event_id, reason FROM dead_letters").fetchall())
        assert set(dead) == {events[137].event_id, events[400].event_id}
        assert "BAD_BATCH" in dead[events[137].event_id]
        assert "UNKNOWN_TYPE" in dead[events[400].event_id]
        assert daemon.forwarder.stats.split_batches >= 1


async def test_receipt_and_central_balances_agree_including_while_events_are_pending(
    tmp_path: Path,
) -> None:
    async with (
        synced_gateway(tmp_path) as (admin, daemon),
        workstation(daemon, 2) as station,
    ):
        card = "6001000000000001"  # M1, 120 points at central

        async def gateway_balance() -> int:
            reply = await station.request("IDENT", "2", "1", "0", card)
            return int(reply[4]) if reply[0] == "IDENT_OK" else -1

        async def central_balance() -> int:
            return int((await admin.member("M1"))["points_balance"])

        await until(lambda: _equals(gateway_balance, 120), what="snapshot")
        receipt = await post(station, 2, 1, member="M1", total="22.40")
        assert receipt[2] == "142"
        await until(lambda: _equals(central_balance, 142), what="central applied")
        # The refresh brings central's 142 with its balance_as_of: not 164.
        await until(lambda: outbox_empty(daemon), within_s=30, what="delivered")
        await daemon.refresher.refresh()  # type: ignore[union-attr]
        assert await gateway_balance() == 142

        await admin.faults(down=True)  # central away: this check stays pending here
        receipt = await post(station, 2, 2, member="M1", total="10.00")
        assert receipt[2] == "152" and await gateway_balance() == 152
        assert await central_balance() == 142
        await admin.faults(down=False)
        await until(lambda: _equals(central_balance, 152), what="pending applied")
        await until(lambda: outbox_empty(daemon), within_s=30, what="delivered")
        await daemon.refresher.refresh()  # type: ignore[union-attr]
        assert await gateway_balance() == 152


async def _equals(read: object, expected: int) -> bool:
    value = await read()  # type: ignore[operator]
    return bool(value == expected)


async def test_changes_bring_new_members_deletions_and_rules(tmp_path: Path) -> None:
    async with (
        synced_gateway(tmp_path) as (admin, daemon),
        workstation(daemon, 4) as station,
    ):
        assert daemon.store is not None and daemon.refresher is not None
        await until(lambda: _known(station, "6001000000000002"), what="snapshot")
        await admin.http.post(
            "/_admin/members",
            json=[{"member_id": "N1", "identifiers": ["NEW-1"], "display_name": "Nia"}],
        )
        await admin.http.delete("/_admin/members/M2")
        await admin.http.put("/_admin/rules", json={"version": "2026-12", "points_per_unit": 2})
        await until(lambda: _known(station, "NEW-1"), what="new member")
        await until(lambda: _unknown(station, "6001000000000002"), what="deletion")
        store = daemon.store

        def rules_version() -> str | None:
            active = store.active_rules(dt.datetime.now(dt.UTC))
            return active[0] if active else None

        # Each change may arrive on its own through the long poll: await the last one.
        await until(lambda: rules_version() == "2026-12", what="the new rules")
        assert daemon.service is not None
        assert daemon.service.rules(dt.datetime.now(dt.UTC)).points_per_unit == 2
        cursor = daemon.store.get_state("changes_cursor")
        assert cursor  # kept across restarts, in SQLite


async def _known(station: object, card: str) -> bool:
    reply = await station.request("IDENT", "4", "1", "0", card)  # type: ignore[attr-defined]
    return bool(reply[0] == "IDENT_OK")


async def _unknown(station: object, card: str) -> bool:
    return not await _known(station, card)


async def test_a_single_use_coupon_is_authorised_once_across_stores(tmp_path: Path) -> None:
    async with ReferenceServer() as central:
        admin = Admin(central)
        first = await start_gateway(tmp_path, central.url, name="a", store_id="S001")
        second = await start_gateway(tmp_path, central.url, name="b", store_id="S002")
        c1, s1 = await register(first, 1)
        c2, s2 = await register(second, 1)
        try:
            await until(lambda: _known_coupon(first), what="coupons in cache a")
            await until(lambda: _known_coupon(second), what="coupons in cache b")
            one = await s1.request("COUPON", "1", "11", "M5", "REWARD-M5", "10.00")
            assert one[0] == "COUPON_OK"
            two = await s2.request("COUPON", "1", "22", "M5", "REWARD-M5", "10.00")
            assert two[:2] == ["COUPON_FAIL", "ALREADY_REDEEMED"]
            assert (await admin.stats())["authorizations"]
        finally:
            await c1.close()
            await c2.close()
            await first.stop()
            await second.stop()
            await admin.aclose()


async def _known_coupon(daemon: Daemon) -> bool:
    assert daemon.store is not None
    return daemon.store.coupon("REWARD-M5") is not None


async def test_offline_policy_decides_and_a_later_conflict_is_recorded(tmp_path: Path) -> None:
    async with ReferenceServer() as central:
        admin = Admin(central)
        first = await start_gateway(tmp_path, central.url, name="a", store_id="S001")
        second = await start_gateway(
            tmp_path, central.url, name="b", store_id="S002", offline={"coupon_policy": "allow"}
        )
        denying = await start_gateway(
            tmp_path, central.url, name="c", store_id="S003", offline={"coupon_policy": "deny"}
        )
        c1, s1 = await register(first, 1)
        c2, s2 = await register(second, 1)
        c3, s3 = await register(denying, 1)
        try:
            for daemon in (first, second, denying):
                await until(lambda d=daemon: _known_coupon(d), what="coupons in cache")
            ok = await s1.request("COUPON", "1", "11", "M5", "REWARD-M5", "10.00")
            assert ok[0] == "COUPON_OK"
            redeemed = await s1.request(
                "POST", "1", "1", "11", "20261123", "M5", "10.00", "7.00", "", ok[1]
            )
            assert redeemed[0] == "POST_OK"
            await until(lambda: outbox_empty(first), what="a delivered")
            await admin.faults(down=True)
            allowed = await s2.request("COUPON", "1", "22", "M5", "REWARD-M5", "10.00")
            assert allowed[0] == "COUPON_OK"  # central away: the allow policy decides
            denied = await s3.request("COUPON", "1", "33", "M5", "REWARD-M5", "10.00")
            assert denied[:2] == ["COUPON_FAIL", "UNAVAILABLE"]
            posted = await s2.request(
                "POST", "1", "1", "22", "20261123", "M5", "10.00", "7.00", "", allowed[1]
            )
            assert posted[0] == "POST_OK"
            await admin.faults(down=False)
            await until(lambda: outbox_empty(second), what="b delivered")
            assert second.store is not None
            with sqlite3.connect(second.settings.database_path) as db:
                conflicts = db.execute("SELECT code, reason FROM offline_conflicts").fetchall()
            assert conflicts == [("REWARD-M5", "COUPON_CONFLICT")]
        finally:
            for connection in (c1, c2, c3):
                await connection.close()
            for daemon in (first, second, denying):
                await daemon.stop()
            await admin.aclose()


async def test_heartbeats_reach_central(tmp_path: Path) -> None:
    async with synced_gateway(tmp_path) as (admin, _):

        async def beat_seen() -> bool:
            return "gw" in (await admin.stats())["heartbeats"]

        await until(beat_seen, what="heartbeat")
        beat = (await admin.stats())["heartbeats"]["gw"]["heartbeat"]
        assert beat["adapters"]["sim_tcp"]["state"] == "listening"
        assert "queue_depth" in beat and beat["version"]


async def test_the_catalog_is_sent_only_when_it_changed(tmp_path: Path) -> None:
    from sync.catalog import push_catalog

    export = tmp_path / "menu.csv"
    export.write_text("Obj Num,Name,Price 1\n1001,Espresso,2.10\n1002,Latte,3.50\n")
    async with synced_gateway(tmp_path) as (admin, daemon):
        assert daemon.store is not None and daemon.central is not None
        first = await push_catalog(daemon.store, daemon.central, export)
        again = await push_catalog(daemon.store, daemon.central, export)
        export.write_text("Obj Num,Name,Price 1\n1001,Espresso,2.20\n1002,Latte,3.50\n")
        changed = await push_catalog(daemon.store, daemon.central, export)
        assert (first.sent, again.sent, changed.sent) == (True, False, True)
        catalog = (await admin.stats())["catalogs"]["S001"]
        assert catalog["content_hash"] == changed.content_hash and catalog["products"] == 2


async def test_status_and_metrics_show_the_queue_the_connection_and_the_requests(
    tmp_path: Path,
) -> None:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    port = free_port()
    daemon = await start_gateway(tmp_path, f"http://127.0.0.1:{port}")
    assert daemon.admin is not None
    admin_origin = f"http://127.0.0.1:{daemon.admin.port}"
    admin_api = httpx.AsyncClient(
        base_url=admin_origin, headers={"Origin": admin_origin}, timeout=10
    )
    connection, station = await register(daemon, 5)
    try:
        for check in (1, 2, 3):
            assert (await post(station, 5, check))[0] == "POST_OK"
        status = (await admin_api.get("/status")).json()
        assert status["central"]["state"] == "OFFLINE"
        assert status["outbox"]["depth"] >= 3 and status["outbox"]["oldest_age_s"] is not None
        assert status["requests"]["POST:ok"] == 3
        assert status["adapters"]["sim_tcp"]["connections"] == 1
        assert (await admin_api.get("/healthz")).status_code == 200
        assert (await admin_api.get("/readyz")).json()["status"] == "ready"
        text = (await admin_api.get("/metrics")).text
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        assert samples[("edge_gateway_outbox_depth", ())] == status["outbox"]["depth"]
        assert samples[("edge_gateway_central_online", ())] == 0
        assert (
            samples[("edge_gateway_requests_total", (("command", "POST"), ("outcome", "ok")))] == 3
        )
        assert samples[("edge_gateway_request_seconds_count", (("command", "POST"),))] == 3
        # The daemon wires the dashboard's history and the dead-letter retry.
        assert (await admin_api.get("/history")).status_code == 200
        retry = await admin_api.post("/dead-letters/retry", json={})
        assert retry.status_code == 200, retry.text

        async with ReferenceServer(port=port):
            await until(lambda: outbox_empty(daemon), within_s=30, what="drained")
            status = (await admin_api.get("/status")).json()
            assert status["central"]["state"] == "ONLINE"
            assert status["outbox"]["depth"] == 0 and status["sync"]["delivered"] >= 3
    finally:
        await connection.close()
        await admin_api.aclose()
        await daemon.stop()


async def test_sync_full_command_fills_the_cache_and_drops_what_central_no_longer_has(
    tmp_path: Path,
) -> None:
    from gateway_process import cli

    data_dir = tmp_path / "data"
    stale = tmp_path / "stale.jsonl"
    stale.write_text('{"member_id": "GONE", "identifiers": ["999"]}\n')
    code, _, err = await cli(data_dir, "import", "members", str(stale))
    assert code == 0, err
    async with ReferenceServer() as central:
        code, _, err = await cli(data_dir, "sync", "--full", EDGE_GATEWAY_CENTRAL__URL=central.url)
    assert code == 0, err
    assert "applied" in err and "5 members" in err
    with sqlite3.connect(data_dir / "gateway.db") as db:
        members = {row[0] for row in db.execute("SELECT member_id FROM members")}
        cursor = db.execute("SELECT value FROM sync_state WHERE key = 'changes_cursor'").fetchone()
    assert members == {"M1", "M2", "M3", "M4", "M5"}  # GONE was not in central's snapshot
    assert cursor is not None and cursor[0]
