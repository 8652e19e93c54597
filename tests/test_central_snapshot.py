"""Snapshots for fleets (DESIGN.md section 3), on SQLite and on PostgreSQL.

One immutable, compressed JSON-lines file holds what `changes` pages from an empty cursor and
ends with the cursor to continue from; it is served with ETag and Range, so a cut download
resumes, and a replaced snapshot is never spliced onto the old one.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from typing import Any

import httpx
import pytest
import test_reference_server
from postgres import postgres_server, postgres_url  # noqa: F401 (fixtures)
from test_reference_server import (  # noqa: F401 (storage: a fixture)
    NOW,
    STORE,
    batch,
    check_posted,
    conforms,
    storage,
)
from waiting import until

import sync.central.snapshot
from sync.central import ReferenceConfig, ReferenceServer

pytestmark = pytest.mark.filterwarnings("ignore:Use of allowEmptyValue:DeprecationWarning")
SNAPSHOT = f"/v1/stores/{STORE}/snapshot"
CHANGES = f"/v1/stores/{STORE}/changes"


# The reference server's fixtures, on each backend in turn (`storage`): bound, not imported by
# name, as every test's parameter of the same name would then redefine an unused import.
central = test_reference_server.central
api = test_reference_server.api
admin = test_reference_server.admin


async def build(admin: httpx.AsyncClient) -> dict[str, Any]:
    response = await admin.post("/_admin/snapshot")
    assert response.status_code == 200, response.text
    info: dict[str, Any] = response.json()
    return info


def lines(body: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in gzip.decompress(body).decode().splitlines()]


async def paged_from_empty(api: httpx.AsyncClient) -> list[dict[str, Any]]:
    changes, cursor = [], ""
    while True:
        page = (await api.get(CHANGES, params={"cursor": cursor, "limit": 3})).json()
        changes += page["changes"]
        cursor = page["next_cursor"]
        if not page["has_more"]:
            return changes


async def test_without_a_snapshot_central_answers_404_and_changes_serve_as_before(
    api: httpx.AsyncClient,
) -> None:
    response = conforms(await api.get(SNAPSHOT))
    assert (response.status_code, response.json()["error"]) == (404, "NOT_FOUND")


async def test_a_snapshot_holds_what_changes_pages_and_ends_with_the_cursor_to_continue_from(
    api: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    await admin.put("/_admin/rules", json={"version": "r1", "points_per_unit": 1})
    info = await build(admin)
    response = conforms(await api.get(SNAPSHOT))

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/gzip"
    assert response.headers["etag"] == info["etag"]
    assert int(response.headers["content-length"]) == info["size"] == len(response.content)
    *records, end = lines(response.content)
    assert records == await paged_from_empty(api)
    assert [r["kind"] for r in records].count("rules") == 1
    assert end["end"] is True and end["records"] == len(records) == info["records"]
    assert end["next_cursor"] == info["cursor"]

    # Continued with `changes` from its cursor: only what changed after it was built.
    await api.post(f"/v1/stores/{STORE}/events", json=batch(check_posted(4001, points=5)))
    page = conforms(await api.get(CHANGES, params={"cursor": end["next_cursor"]})).json()
    assert [(c["kind"], c["data"]["member_id"]) for c in page["changes"]] == [("member", "M1")]
    assert page["changes"][0]["data"]["points_balance"] == 125


async def test_a_cut_download_resumes_with_range_and_never_splices_another_snapshot(
    api: httpx.AsyncClient, admin: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sync.central.snapshot, "CHUNK", 200)  # ranges across chunk boundaries
    info = await build(admin)
    whole = (await api.get(SNAPSHOT)).content
    size, etag = len(whole), info["etag"]
    assert size > 3 * 200

    head = conforms(await api.get(SNAPSHOT, headers={"Range": "bytes=0-449"}))
    tail = conforms(await api.get(SNAPSHOT, headers={"Range": "bytes=450-", "If-Range": etag}))
    last = await api.get(SNAPSHOT, headers={"Range": "bytes=-10"})
    assert (head.status_code, tail.status_code, last.status_code) == (206, 206, 206)
    assert head.headers["content-range"] == f"bytes 0-449/{size}"
    assert tail.headers["content-range"] == f"bytes 450-{size - 1}/{size}"
    assert head.content + tail.content == whole
    assert last.content == whole[-10:]

    same = conforms(await api.get(SNAPSHOT, headers={"If-None-Match": etag}))
    past = conforms(await api.get(SNAPSHOT, headers={"Range": f"bytes={size}-"}))
    assert same.status_code == 304 and same.headers["etag"] == etag
    assert (past.status_code, past.json()["error"]) == (416, "RANGE_NOT_SATISFIABLE")
    assert past.headers["content-range"] == f"bytes */{size}"

    # A new build is a new file: resuming the old one gets the new one whole.
    await admin.post("/_admin/members", json=[{"member_id": "M8"}])
    newer = await build(admin)
    resumed = await api.get(SNAPSHOT, headers={"Range": "bytes=450-", "If-Range": etag})
    assert newer["etag"] != etag
    assert (resumed.status_code, resumed.headers["etag"]) == (200, newer["etag"])
    assert any(r["data"].get("member_id") == "M8" for r in lines(resumed.content)[:-1])


async def test_the_same_records_make_the_same_bytes_and_etag(admin: httpx.AsyncClient) -> None:
    first, second = await build(admin), await build(admin)
    assert first["etag"] == second["etag"] and first["size"] == second["size"]


async def test_central_builds_at_start_and_again_only_when_records_changed(
    storage: dict[str, Any],  # noqa: F811
) -> None:
    config = ReferenceConfig(clock=lambda: NOW, snapshot_every_s=0.2, **storage)
    async with (
        ReferenceServer(config) as server,
        httpx.AsyncClient(base_url=server.admin_url) as admin,
    ):

        async def etag() -> str | None:
            snapshot = (await admin.get("/_admin/stats")).json()["snapshot"]
            return None if snapshot is None else str(snapshot["etag"])

        async def built() -> bool:
            return await etag() is not None

        await until(built, what="the snapshot built at start")
        first = await etag()
        assert first is not None
        await asyncio.sleep(0.6)
        assert await etag() == first  # nothing changed: nothing rebuilt

        await admin.delete("/_admin/coupons/OLD2025")

        async def rebuilt() -> bool:
            return await etag() not in (first, None)

        await until(rebuilt, what="a new snapshot after the change")
