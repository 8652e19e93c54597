"""The daemon as store IT runs it: a real process, killed, stopped and restarted."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from gateway_process import Spawn, cli, import_samples

from pos_adapters.sim.register import RegisterConnection, RegisterTimeout


def ledger_rows(data_dir: Path, member_id: str) -> int:
    with sqlite3.connect(data_dir / "gateway.db") as conn:
        return int(
            conn.execute(
                "SELECT COUNT(*) FROM ledger WHERE member_id = ?", (member_id,)
            ).fetchone()[0]
        )


async def test_posted_check_survives_sigkill_and_is_not_earned_twice(
    data_dir: Path, spawn: Spawn
) -> None:
    await import_samples(data_dir)
    post = ["POST", "4", "1", "501", "20261123", "M1", "33.00", "30.99", "1*1001*30.99", ""]

    first = await spawn()
    connection = await first.connect()
    reply = await connection.workstation(4).request(*post)
    assert reply[:3] == ["POST_OK", "30", "150"]
    await first.kill()  # right after POST_OK: nothing but the commit protects the check
    await connection.close()

    second = await spawn()
    connection = await second.connect()
    try:
        again = await connection.workstation(4).request(*post)
        assert again == reply  # the first reply, byte for byte
        ident = await connection.workstation(4).request("IDENT", "4", "1", "0", "6001000000000001")
        assert ident[4] == "150"  # 120 + 30, once
    finally:
        await connection.close()
    assert ledger_rows(data_dir, "M1") == 1


async def post_until_cut_off(
    connection: RegisterConnection,
    wsid: int,
    first_check: int,
    acknowledged: dict[int, list[str]],
    enough: asyncio.Event,
    target: int,
) -> None:
    """A register posting checks back to back until the gateway disappears."""
    station = connection.workstation(wsid)
    for check in range(first_check, first_check + 1000):
        fields = ["POST", str(wsid), "1", str(check), "20261123", "M5", "2.00", "2.00", "", ""]
        try:
            acknowledged[check] = await station.request(*fields, answer_within=5)
        except (ConnectionError, RegisterTimeout):
            return
        if len(acknowledged) >= target:
            enough.set()


async def test_sigkill_under_load_loses_no_acknowledged_check(data_dir: Path, spawn: Spawn) -> None:
    await import_samples(data_dir)
    acknowledged: dict[int, list[str]] = {}
    for round_number in range(3):
        process = await spawn()
        connection = await process.connect()
        enough = asyncio.Event()
        target = len(acknowledged) + 40
        load = [
            asyncio.create_task(
                post_until_cut_off(
                    connection, wsid, round_number * 100_000 + wsid * 1000, acknowledged, enough,
                    target,
                )
            )
            for wsid in range(1, 6)
        ]  # fmt: skip
        await asyncio.wait_for(enough.wait(), 30)  # some checks through, more in flight
        await process.kill()
        await asyncio.gather(*load)
        await connection.close()
    with sqlite3.connect(data_dir / "gateway.db") as conn:
        stored = {row[0] for row in conn.execute("SELECT check_no FROM posted_checks")}
        events = conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT json_extract(payload, '$.check'))"
            " FROM outbox WHERE type = 'check.posted'"
        ).fetchone()
    assert len(acknowledged) >= 120
    assert set(acknowledged) <= stored
    assert events[0] == events[1] == len(stored)  # one check.posted per check, no more
    assert ledger_rows(data_dir, "M5") == len(stored)


async def test_sigterm_finishes_answers_and_exits_cleanly(data_dir: Path, spawn: Spawn) -> None:
    await import_samples(data_dir)
    process = await spawn()
    connection = await process.connect()
    reply = await connection.workstation(2).request(
        "POST", "2", "1", "9", "20261123", "M1", "5.00", "5.00", "", ""
    )
    assert reply[0] == "POST_OK"
    code = await process.terminate()
    await connection.close()
    assert code == 0
    assert process.events("gateway_stopped")
    with sqlite3.connect(data_dir / "gateway.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM posted_checks").fetchone()[0] == 1
        assert conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"


async def test_a_damaged_database_stops_the_start_with_a_clear_message(
    data_dir: Path, spawn: Spawn
) -> None:
    await import_samples(data_dir)
    database = data_dir / "gateway.db"
    with sqlite3.connect(database) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw = bytearray(database.read_bytes())
    raw[4096 * 2 : 4096 * 2 + 2048] = b"\xa5" * 2048  # scribble over a b-tree page
    database.write_bytes(bytes(raw))
    with pytest.raises(RuntimeError, match="gateway_start_failed"):
        await spawn()


async def test_import_reports_bad_lines_by_number_and_keeps_the_rest(
    data_dir: Path, tmp_path: Path
) -> None:
    members = tmp_path / "members.jsonl"
    members.write_text(
        '{"member_id": "A1", "identifiers": ["111"]}\n'
        "not json\n"
        '{"identifiers": ["222"]}\n'
        '{"member_id": "A4", "identifiers": ["444"], "birthday": "13-45"}\n'
        '{"member_id": "A5", "identifiers": ["555"], "tier": "GOLD"}\n'
    )
    code, _, err = await cli(data_dir, "import", "members", str(members))
    assert code == 1
    assert "line 2" in err and "line 3" in err and "member_id" in err and "line 4" in err
    assert "imported 2 members; skipped 3 bad lines" in err
    with sqlite3.connect(data_dir / "gateway.db") as conn:
        ids = {r[0] for r in conn.execute("SELECT identifier FROM member_identifiers")}
    assert ids == {"111", "555"}


async def test_import_while_the_daemon_runs_answers_the_next_lookup(
    data_dir: Path, spawn: Spawn, tmp_path: Path
) -> None:
    process = await spawn()
    connection = await process.connect()
    station = connection.workstation(1)
    try:
        assert (await station.request("IDENT", "1", "1", "0", "777"))[0] == "IDENT_FAIL"
        members = tmp_path / "late.jsonl"
        members.write_text('{"member_id": "L1", "identifiers": ["777"], "display_name": "Lu"}\n')
        code, _, err = await cli(data_dir, "import", "members", str(members))
        assert code == 0, err
        assert (await station.request("IDENT", "1", "1", "0", "777"))[:2] == ["IDENT_OK", "L1"]
    finally:
        await connection.close()


async def test_check_config_prints_masked_settings_and_names_a_bad_key(data_dir: Path) -> None:
    code, out, _ = await cli(
        data_dir, "check-config", EDGE_GATEWAY_MQTT__URL="mqtt://user:hunter2@broker:1883"
    )
    assert code == 0
    assert 'store_id = "S001"' in out and "hunter2" not in out
    code, _, err = await cli(data_dir, "check-config", EDGE_GATEWAY_SIM__PORT="70000")
    assert code == 2 and "sim.port" in err


async def test_version_is_printed(data_dir: Path) -> None:
    code, out, _ = await cli(data_dir, "--version")
    assert code == 0 and out.startswith("edge-gateway ")


async def test_status_command_shows_the_running_gateway(data_dir: Path, spawn: Spawn) -> None:
    process = await spawn()
    admin_port = next(line["admin_port"] for line in process.events("gateway_ready"))
    code, out, err = await cli(data_dir, "status", EDGE_GATEWAY_ADMIN__PORT=str(admin_port))
    assert code == 0, err
    assert "STANDALONE" in out and "outbox" in out and "sim_tcp" in out


async def test_systemd_hears_ready_and_the_watchdog_from_the_event_loop(
    data_dir: Path, spawn: Spawn, tmp_path: Path
) -> None:
    import socket

    address = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(address)
    listener.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        await spawn(NOTIFY_SOCKET=address, WATCHDOG_USEC="100000")
        heard: list[str] = []
        while heard.count("WATCHDOG=1") < 2:
            heard.append((await asyncio.wait_for(loop.sock_recv(listener, 256), 10)).decode())
        assert heard[0] == "READY=1"  # after the adapters listen, before any ping
    finally:
        listener.close()
