"""Long polls on `changes` (DESIGN.md section 3, `wait_s`), on SQLite and on PostgreSQL.

Central holds a request whose page would be empty until a change exists or the time is up, so a
change (a paused program, a new member) reaches a waiting store in about a second.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import test_reference_server
from postgres import postgres_server, postgres_url  # noqa: F401 (fixtures)
from test_reference_server import (  # noqa: F401 (storage: a fixture)
    GATEWAY,
    NOW,
    STORE,
    TOKEN,
    conforms,
    storage,
    tls,
)
from waiting import until

from sync.central import ReferenceConfig, ReferenceServer

pytestmark = pytest.mark.filterwarnings("ignore:Use of allowEmptyValue:DeprecationWarning")
CHANGES = f"/v1/stores/{STORE}/changes"


# The reference server's fixtures, on each backend in turn (`storage`): bound, not imported by
# name, as every test's parameter of the same name would then redefine an unused import.
central = test_reference_server.central
admin = test_reference_server.admin


# Not the reference server's `api`: a long poll is held up to 30 s, past httpx's 5 s timeout.
@pytest.fixture
async def api(central: ReferenceServer) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {TOKEN}", "X-Gateway-Id": GATEWAY}
    async with httpx.AsyncClient(
        base_url=central.url, headers=headers, verify=tls(), timeout=40
    ) as client:
        yield client


async def cursor_at_the_end(api: httpx.AsyncClient) -> str:
    cursor = ""
    while True:
        page = (await api.get(CHANGES, params={"cursor": cursor, "limit": 1000})).json()
        cursor = page["next_cursor"]
        if not page["has_more"]:
            return cursor


async def test_a_held_request_answers_within_a_second_of_the_change_it_waited_for(
    central: ReferenceServer, api: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    cursor = await cursor_at_the_end(api)
    loop = asyncio.get_running_loop()
    poll = asyncio.create_task(api.get(CHANGES, params={"cursor": cursor, "wait_s": 20}))
    await until(lambda: central.central.feed.waiting == 1, what="the request held at central")
    assert not poll.done()  # held: nothing changed yet

    changed_at = loop.time()
    assert (await admin.post("/_admin/members", json=[{"member_id": "M7"}])).status_code == 200
    response = conforms(await poll)
    waited = loop.time() - changed_at

    assert waited < 1.0, waited
    page = response.json()
    assert [c["data"]["member_id"] for c in page["changes"]] == ["M7"]
    assert page["next_cursor"] != cursor and page["has_more"] is False


async def test_a_held_request_with_nothing_to_say_answers_empty_when_its_time_is_up(
    api: httpx.AsyncClient,
) -> None:
    cursor = await cursor_at_the_end(api)
    loop = asyncio.get_running_loop()
    started = loop.time()
    response = conforms(await api.get(CHANGES, params={"cursor": cursor, "wait_s": 0.6}))
    elapsed = loop.time() - started

    assert 0.6 <= elapsed < 2.0, elapsed
    assert response.json() == {"changes": [], "next_cursor": cursor, "has_more": False}


async def test_a_page_with_changes_is_answered_at_once_whatever_wait_s_says(
    api: httpx.AsyncClient,
) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    response = conforms(await api.get(CHANGES, params={"cursor": "", "wait_s": 30}))
    assert loop.time() - started < 1.0
    assert response.json()["changes"]


@pytest.mark.parametrize("wait_s", ["31", "-1", "soon", "nan"])
async def test_wait_s_outside_0_to_30_seconds_is_refused(
    api: httpx.AsyncClient, wait_s: str
) -> None:
    response = await api.get(CHANGES, params={"cursor": "", "wait_s": wait_s})
    conforms(response, request_too=False)
    assert (response.status_code, response.json()["error"]) == (400, "BAD_WAIT")


async def test_stopping_central_does_not_wait_for_held_requests(storage: dict[str, Any]) -> None:  # noqa: F811
    server = ReferenceServer(ReferenceConfig(clock=lambda: NOW, **storage))
    await server.start()
    headers = {"X-Gateway-Id": GATEWAY}
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=40) as client:
        cursor = await cursor_at_the_end(client)
        poll = asyncio.create_task(client.get(CHANGES, params={"cursor": cursor, "wait_s": 25}))
        await until(lambda: server.central.feed.waiting == 1, what="the request held at central")
        loop = asyncio.get_running_loop()
        started = loop.time()
        await server.stop()
        assert loop.time() - started < 1.5
        await asyncio.gather(poll, return_exceptions=True)  # answered or cut: either way, now


async def test_an_injected_fault_answers_a_long_poll_at_once(
    api: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    cursor = await cursor_at_the_end(api)
    await admin.put("/_admin/faults", json={"throttle_rate": 1.0, "retry_after": "3"})
    response = conforms(await api.get(CHANGES, params={"cursor": cursor, "wait_s": 20}))
    assert (response.status_code, response.headers["retry-after"]) == (429, "3")
