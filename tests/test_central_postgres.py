"""Several central processes on one PostgreSQL database: what the database itself must hold.

Exactly once is the event id's (a unique key), not any one process's memory; a cursor from one
process is valid on another; a change made through one process wakes long polls held by
another; a delta reader never skips a change that committed late; a single-use coupon is
authorised once however many processes are asked at once; and a PostgreSQL restart is answered
503 with Retry-After until central has its connections back.
"""

from __future__ import annotations

import asyncio
import gzip
import random
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from postgres import PostgresServer, postgres_or_skip, postgres_server, postgres_url  # noqa: F401
from test_reference_server import GATEWAY, NOW, STORE, batch, check_posted, conforms, event
from waiting import until

from gateway.domain.ids import new_ulid
from sync.central import ReferenceConfig, ReferenceServer

pytestmark = pytest.mark.filterwarnings("ignore:Use of allowEmptyValue:DeprecationWarning")
REPO = Path(__file__).resolve().parent.parent
HEADERS = {"X-Gateway-Id": GATEWAY}
EVENTS = f"/v1/stores/{STORE}/events"
CHANGES = f"/v1/stores/{STORE}/changes"


class Instance:
    """One central process's public API and admin API."""

    def __init__(self, server: ReferenceServer) -> None:
        self.server = server
        self.api = httpx.AsyncClient(base_url=server.url, headers=HEADERS, timeout=30)
        self.admin = httpx.AsyncClient(base_url=server.admin_url, timeout=30)

    async def post(self, *events: dict[str, Any]) -> list[dict[str, Any]]:
        response = await self.api.post(EVENTS, json=batch(*events))
        assert response.status_code == 200, response.text
        results: list[dict[str, Any]] = response.json()["results"]
        return results

    async def member(self, member_id: str) -> dict[str, Any]:
        result: dict[str, Any] = (await self.admin.get(f"/_admin/members/{member_id}")).json()
        return result

    async def aclose(self) -> None:
        await self.api.aclose()
        await self.admin.aclose()


@pytest.fixture
async def pair(postgres_url: str) -> AsyncIterator[tuple[Instance, Instance]]:  # noqa: F811
    config = ReferenceConfig(database_url=postgres_url, clock=lambda: NOW)
    async with ReferenceServer(config) as first, ReferenceServer(config) as second:
        a, b = Instance(first), Instance(second)
        yield a, b
        await a.aclose()
        await b.aclose()


async def read_to_end(api: httpx.AsyncClient, cursor: str = "") -> tuple[list[Any], str]:
    changes: list[Any] = []
    while True:
        page = (await api.get(CHANGES, params={"cursor": cursor, "limit": 1000})).json()
        changes += page["changes"]
        cursor = page["next_cursor"]
        if not page["has_more"]:
            return changes, cursor


async def test_the_same_event_posted_to_two_processes_at_once_is_accepted_once(
    pair: tuple[Instance, Instance],
) -> None:
    a, b = pair
    sale = check_posted(5001, points=22)
    for _ in range(3):  # and again, as a gateway that lost both answers would
        first, second = await asyncio.gather(a.post(sale), b.post(sale))
        statuses = sorted([first[0]["status"], second[0]["status"]])
        if statuses != ["duplicate", "duplicate"]:
            assert statuses == ["accepted", "duplicate"]
            assert first[0]["applied_at"] == second[0]["applied_at"]

    assert (await a.member("M1"))["points_balance"] == 120 + 22
    checks = (await b.admin.get("/_admin/checks")).json()["checks"]
    assert [(c["check"], c["event_ids"]) for c in checks] == [(5001, 1)]


async def test_batches_sharing_event_ids_through_two_processes_apply_every_event_once(
    pair: tuple[Instance, Instance],
) -> None:
    members = ["M1", "M2", "M3", "M4", "M5"]
    pool = [check_posted(6000 + n, member_id=members[n % 5], points=n % 7) for n in range(120)]
    dice = random.Random(7)
    before = {m: (await pair[0].member(m))["points_balance"] for m in members}

    async def deliver(worker: int) -> list[dict[str, Any]]:
        results = []
        for _ in range(6):
            events = dice.sample(pool, 25)
            results += await pair[worker % 2].post(*events)
        return results

    outcomes = [r for part in await asyncio.gather(*map(deliver, range(8))) for r in part]

    accepted = [r["id"] for r in outcomes if r["status"] == "accepted"]
    assert len(accepted) == len(set(accepted))  # never twice
    assert {r["status"] for r in outcomes} <= {"accepted", "duplicate"}
    delivered = {r["id"] for r in outcomes}
    assert set(accepted) == delivered  # each delivered id accepted exactly once
    earned = {m: 0 for m in members}
    for sale in pool:
        if sale["id"] in delivered:
            earned[sale["payload"]["member_id"]] += sale["payload"]["points_earned"]
    for m in members:
        assert (await pair[1].member(m))["points_balance"] == before[m] + earned[m], m


async def test_a_cursor_from_one_process_is_valid_on_the_other(
    pair: tuple[Instance, Instance],
) -> None:
    a, b = pair
    first = (await a.api.get(CHANGES, params={"limit": 2})).json()
    rest, cursor = await read_to_end(b.api, first["next_cursor"])
    assert len(first["changes"] + rest) == 10  # 5 sample members, 5 coupons

    await b.admin.post("/_admin/members", json=[{"member_id": "M6"}])
    delta, _ = await read_to_end(a.api, cursor)
    assert [c["data"]["member_id"] for c in delta] == ["M6"]


async def test_a_long_poll_on_one_process_is_woken_by_a_change_through_the_other(
    pair: tuple[Instance, Instance],
) -> None:
    a, b = pair
    _, cursor = await read_to_end(a.api)
    loop = asyncio.get_running_loop()
    polls = [
        asyncio.create_task(instance.api.get(CHANGES, params={"cursor": cursor, "wait_s": 20}))
        for instance in (a, a, b)
    ]
    await until(
        lambda: (a.server.central.feed.waiting, b.server.central.feed.waiting) == (2, 1),
        what="the three requests held, two at A and one at B",
    )
    assert not any(poll.done() for poll in polls)

    changed_at = loop.time()
    await b.admin.put("/_admin/rules", json={"version": "paused", "lottery_paused": True})
    answers = await asyncio.gather(*polls)
    waited = loop.time() - changed_at

    assert waited < 1.0, waited
    for answer in answers:
        assert [c["kind"] for c in conforms(answer, request_too=False).json()["changes"]] == [
            "rules"
        ]


async def test_a_delta_reader_never_skips_a_change_that_committed_late(
    pair: tuple[Instance, Instance],
) -> None:
    """Writers on both processes publish new members at once while a reader follows deltas.
    Each member changes once, so a change the reader skipped would never come again: a number
    taken before another but committed after it must not be passed over."""
    a, b = pair
    _, cursor = await read_to_end(a.api)
    seen: set[str] = set()
    writing = True

    async def write(instance: Instance, worker: int) -> None:
        for n in range(40):
            member = {"member_id": f"N{worker:02d}{n:03d}"}
            assert (await instance.admin.post("/_admin/members", json=[member])).is_success

    async def read() -> None:
        nonlocal cursor
        turn = 0
        while True:
            done = not writing
            turn += 1
            changes, cursor = await read_to_end((a, b)[turn % 2].api, cursor)
            seen.update(c["data"]["member_id"] for c in changes if c["kind"] == "member")
            if done:
                return

    reader = asyncio.create_task(read())
    await asyncio.gather(*(write((a, b)[worker % 2], worker) for worker in range(8)))
    writing = False
    await reader

    assert len(seen) == 8 * 40


async def test_a_single_use_coupon_asked_of_two_processes_at_once_is_authorised_once(
    pair: tuple[Instance, Instance],
) -> None:
    a, b = pair
    once = {"code": "ONCE", "kind": "amount", "value": "5.00", "max_redemptions": 1}
    await a.admin.post("/_admin/coupons", json=[once])

    async def ask(instance: Instance, check: int) -> str:
        body = {
            "store_id": STORE,
            "gateway_id": GATEWAY,
            "member_id": None,
            "check": {"business_date": "2026-11-23", "wsid": 3, "check": check},
            "idempotency_key": f"{STORE}:2026-11-23:3:{check}:ONCE",
        }
        response = await instance.api.post("/v1/coupons/ONCE/authorizations", json=body)
        return str(response.json()["status"])

    answers = await asyncio.gather(*(ask((a, b)[n % 2], 8000 + n) for n in range(10)))
    assert sorted(answers) == ["approved"] + ["declined"] * 9


async def test_every_process_serves_the_same_snapshot(pair: tuple[Instance, Instance]) -> None:
    a, b = pair
    built = (await a.admin.post("/_admin/snapshot")).json()
    from_a = await a.api.get(f"/v1/stores/{STORE}/snapshot")
    from_b = await b.api.get("/v1/stores/S999/snapshot")
    assert from_a.content == from_b.content
    assert from_a.headers["etag"] == from_b.headers["etag"] == built["etag"]
    end = gzip.decompress(from_b.content).decode().splitlines()[-1]
    assert built["cursor"] in end
    # Its cursor continues on the other process.
    changes, _ = await read_to_end(b.api, built["cursor"])
    assert changes == []


async def test_a_postgresql_restart_is_answered_503_until_central_is_connected_again() -> None:
    server = postgres_or_skip()
    try:
        server.start()
        url = server.create_database("central")
        config = ReferenceConfig(database_url=url, clock=lambda: NOW)
        async with ReferenceServer(config) as central:
            instance = Instance(central)
            try:
                await restart_and_recover(server, central, instance)
            finally:
                await instance.aclose()
    finally:
        server.close()


async def restart_and_recover(
    server: PostgresServer, central: ReferenceServer, instance: Instance
) -> None:
    sale = check_posted(9001, points=3)
    assert (await instance.post(sale))[0]["status"] == "accepted"
    _, cursor = await read_to_end(instance.api)

    await asyncio.to_thread(server.stop)
    down = await instance.api.post(EVENTS, json=batch(check_posted(9002)))
    assert (down.status_code, down.json()["error"]) == (503, "UNAVAILABLE")
    assert down.headers["retry-after"] == "1"
    await asyncio.to_thread(server.start)

    # Connected again at the next request; the sale sent before is still known.
    again = await instance.post(sale)
    assert again[0]["status"] == "duplicate"
    storage = central.central.storage
    listening = getattr(storage, "listening")  # noqa: B009 (PostgresStorage only)
    await asyncio.wait_for(listening.wait(), 10)
    poll = asyncio.create_task(instance.api.get(CHANGES, params={"cursor": cursor, "wait_s": 20}))
    await until(lambda: central.central.feed.waiting == 1, what="the request held at central")
    await instance.admin.post("/_admin/members", json=[{"member_id": "M9"}])
    changes = (await asyncio.wait_for(poll, 3)).json()["changes"]
    assert "M9" in [c["data"]["member_id"] for c in changes]


def test_two_central_processes_from_the_command_line_share_one_database(
    postgres_url: str,  # noqa: F811
) -> None:
    command = [sys.executable, "-m", "sync.central", "--port", "0", "--db", postgres_url]
    processes = [
        subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True) for _ in range(2)
    ]
    try:
        urls = []
        for process in processes:
            assert process.stdout is not None
            line = process.stdout.readline().strip()
            assert re.fullmatch(r"reference-server listening on http://127\.0\.0\.1:\d+", line)
            urls.append(line.rsplit(" ", 1)[1])
            assert "admin on" in process.stdout.readline()
            assert process.stdout.readline().strip() == "reference-server storage postgresql"
        sale = event(
            "member.identified", {"member_id": "M1", "wsid": 1, "rvc": 1, "check": 1}, new_ulid()
        )
        answers = [
            httpx.post(f"{url}{EVENTS}", json=batch(sale), headers=HEADERS).json()["results"][0]
            for url in urls
        ]
    finally:
        for process in processes:
            process.terminate()
        codes = [process.wait(timeout=10) for process in processes]
    assert [a["status"] for a in answers] == ["accepted", "duplicate"]
    assert codes == [0, 0]
