"""The reference central server keeps the contract of DESIGN.md section 3 over real HTTP.

Every exchange is checked against `sync/openapi.yaml` with openapi-core, so the server and the
contract cannot drift apart without a test failing. Every test that uses the `central` fixture
runs twice: on SQLite (the embedded default) and on PostgreSQL (a real server, started for the
session by `tests/postgres.py`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import gzip
import json
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from openapi_spec_validator import validate as validate_spec
from postgres import postgres_server, postgres_url  # noqa: F401 (fixtures)

from gateway.domain.ids import new_ulid
from sync.central import ReferenceConfig, ReferenceServer

# DESIGN.md asks `?cursor=&limit=`: the contract allows the empty cursor (allowEmptyValue).
pytestmark = pytest.mark.filterwarnings("ignore:Use of allowEmptyValue:DeprecationWarning")

REPO = Path(__file__).resolve().parent.parent
SPEC = REPO / "sync" / "openapi.yaml"
STORE = "S001"
OTHER_STORE = "S002"
TOKEN = "test-token"
GATEWAY = "gw-test"
NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
DAY = "2026-11-23"


@functools.cache
def contract() -> OpenAPI:
    return OpenAPI.from_file_path(str(SPEC))


def conforms(response: httpx.Response, *, request_too: bool = True) -> httpx.Response:
    """Check an exchange against the contract (`request_too=False`: a deliberately bad request)."""
    request = response.request
    body = request.content
    if request.headers.get("content-encoding") == "gzip":
        body = gzip.decompress(body)
    # The contract's servers list the reference server at 127.0.0.1:8080; the port is random.
    mock_request = MockRequest(
        "http://127.0.0.1:8080",
        request.method,
        request.url.path,
        args=dict(request.url.params),
        headers=dict(request.headers),
        data=body,
        content_type=request.headers.get("content-type", "application/json"),
    )
    mock_response = MockResponse(
        response.content,
        status_code=response.status_code,
        headers=dict(response.headers),
        content_type=response.headers.get("content-type", ""),
    )
    if request_too:
        contract().validate_request(mock_request)
    contract().validate_response(mock_request, mock_response)
    return response


@functools.cache
def tls() -> ssl.SSLContext:
    """One context for every client: httpx builds one per client otherwise (50 ms each)."""
    return ssl.create_default_context()


def event(kind: str, payload: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    return {
        "id": event_id or new_ulid(),
        "type": kind,
        "occurred_at": "2026-11-23T11:59:00.000000Z",
        "payload": {"store_id": STORE, **payload},
    }


def check_posted(
    check: int,
    member_id: str | None = "M1",
    *,
    points: int = 22,
    earn_mode: str = "points",
    wallet_delta: int = 0,
    tickets: int = 0,
    event_id: str | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    payload = {
        "business_date": DAY,
        "wsid": 3,
        "rvc": 1,
        "check": check,
        "member_id": member_id,
        "subtotal": "22.40",
        "total": "22.40",
        "items": [{"qty": "1", "object": 5001, "total": "12.40"}],
        "coupons": [],
        "unknown_coupon_refs": [],
        "points_earned": points,
        "tickets_earned": tickets,
        "wallet_delta": wallet_delta,
        "earn_mode": earn_mode,
        "rules_version": "default",
        **overrides,
    }
    return event("check.posted", payload, event_id)


def redeemed(code: str, check: int, store: str = STORE, member_id: str | None = None) -> Any:
    payload = {"code": code, "coupon_ref": f"R-{check}", "business_date": DAY, "wsid": 3}
    return event(
        "coupon.redeemed",
        {**payload, "check": check, "member_id": member_id, "store_id": store},
    )


def batch(*events: dict[str, Any]) -> dict[str, Any]:
    return {"batch_id": new_ulid(), "events": list(events)}


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The storage settings of a reference central: each backend in turn."""
    if request.param == "sqlite":
        return {}
    return {"database_url": request.getfixturevalue("postgres_url")}


@pytest.fixture
async def central(storage: dict[str, Any]) -> AsyncIterator[ReferenceServer]:
    config = ReferenceConfig(token=TOKEN, clock=lambda: NOW, **storage)
    async with ReferenceServer(config) as server:
        yield server


@pytest.fixture
async def api(central: ReferenceServer) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {TOKEN}", "X-Gateway-Id": GATEWAY}
    async with httpx.AsyncClient(base_url=central.url, headers=headers, verify=tls()) as client:
        yield client


@pytest.fixture
async def admin(central: ReferenceServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=central.admin_url, verify=tls()) as client:
        yield client


async def post_events(
    api: httpx.AsyncClient, *events: dict[str, Any], valid: bool = True
) -> list[dict[str, Any]]:
    response = await api.post(f"/v1/stores/{STORE}/events", json=batch(*events))
    conforms(response, request_too=valid)
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    return results


async def stats(admin: httpx.AsyncClient) -> dict[str, Any]:
    response = await admin.get("/_admin/stats")
    assert response.status_code == 200
    result: dict[str, Any] = response.json()
    return result


async def member(admin: httpx.AsyncClient, member_id: str) -> dict[str, Any]:
    response = await admin.get(f"/_admin/members/{member_id}")
    assert response.status_code == 200
    result: dict[str, Any] = response.json()
    return result


async def authorize(
    api: httpx.AsyncClient, code: str, store: str, check: int, member_id: str | None = None
) -> httpx.Response:
    body = {
        "store_id": store,
        "gateway_id": GATEWAY,
        "member_id": member_id,
        "check": {"business_date": DAY, "wsid": 3, "check": check},
        "idempotency_key": f"{store}:{DAY}:3:{check}:{code}",
    }
    return conforms(await api.post(f"/v1/coupons/{code}/authorizations", json=body))


# ---- the contract itself -----------------------------------------------------------------------


def test_the_contract_is_a_valid_openapi_3_1_document_with_auth_and_gateway_id_everywhere() -> None:
    document = yaml.safe_load(SPEC.read_text())
    validate_spec(document)
    assert document["openapi"].startswith("3.1")
    assert document["security"] == [{"bearerAuth": []}]
    for path, item in document["paths"].items():
        names = {p["$ref"].rsplit("/", 1)[1] for p in item["parameters"] if "$ref" in p}
        assert "GatewayId" in names, path


# ---- events ------------------------------------------------------------------------------------


async def test_an_event_sent_twice_is_applied_once_and_the_repeat_keeps_its_applied_at(
    api: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    sale = check_posted(1001, points=22)
    [first] = await post_events(api, sale)
    assert first["status"] == "accepted" and first["reason"] is None
    [again] = await post_events(api, sale)

    assert again == {**first, "status": "duplicate"}
    record = await member(admin, "M1")
    assert record["points_balance"] == 120 + 22
    assert record["balance_as_of"] == first["applied_at"]
    counts = (await stats(admin))["events"]
    assert counts["accepted"] == {"check.posted": 1}
    assert counts["duplicate"] == {"check.posted": 1}


async def test_a_duplicate_inside_one_batch_is_answered_in_order(api: httpx.AsyncClient) -> None:
    sale = check_posted(1002)
    first, second = await post_events(api, sale, sale)
    assert (first["status"], second["status"]) == ("accepted", "duplicate")
    assert second["applied_at"] == first["applied_at"]


async def test_a_check_posted_under_two_event_ids_earns_once_and_is_reported(
    api: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    await post_events(api, check_posted(1003, points=10))
    [second] = await post_events(api, check_posted(1003, points=10))

    assert second["status"] == "accepted"  # done, but not applied twice
    assert (await member(admin, "M1"))["points_balance"] == 130
    assert (await stats(admin))["duplicate_check_keys"] == 1
    [check] = (await admin.get("/_admin/checks", params={"store": STORE})).json()["checks"]
    assert (check["check"], check["event_ids"], check["points_earned"]) == (1003, 2, 10)


async def test_a_refund_takes_points_back_and_an_anonymous_check_touches_no_member(
    api: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    refund = check_posted(1004, points=-10, total="-10.50", subtotal="-10.50")
    results = await post_events(api, refund, check_posted(1005, member_id=None, points=0))
    assert [r["status"] for r in results] == ["accepted", "accepted"]
    assert (await member(admin, "M1"))["points_balance"] == 110
    assert (await stats(admin))["checks"] == 2


async def test_semantic_problems_reject_single_events_and_the_rest_of_the_batch_applies(
    api: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    good = check_posted(1006)
    unknown = event("check.voided", {"check": 1})
    bad_total = check_posted(1007, total="22,40")
    other_store = check_posted(1008)
    other_store["payload"]["store_id"] = OTHER_STORE
    no_member = event("consent.changed", {"member_id": "NOBODY", "program": "lottery"})
    no_member["payload"].update(consent=True, earn_mode="lottery", wsid=3)
    response = await api.post(
        f"/v1/stores/{STORE}/events", json=batch(good, unknown, bad_total, other_store, no_member)
    )
    results = conforms(response, request_too=False).json()["results"]

    assert [(r["id"], r["status"], r["reason"]) for r in results] == [
        (good["id"], "accepted", None),
        (unknown["id"], "rejected", "UNKNOWN_TYPE"),
        (bad_total["id"], "rejected", "INVALID_PAYLOAD"),
        (other_store["id"], "rejected", "WRONG_STORE"),
        (no_member["id"], "rejected", "UNKNOWN_MEMBER"),
    ]
    assert "payload.total" in results[2]["message"]
    assert all(r["applied_at"] is None for r in results[1:])
    # A rejected event sent again is rejected again, never taken as done.
    [again] = await post_events(api, bad_total, valid=False)
    assert (again["status"], again["reason"]) == ("rejected", "INVALID_PAYLOAD")
    assert (await stats(admin))["rejections"]["INVALID_PAYLOAD"] == 2


@pytest.mark.parametrize(
    ("breakage", "where"),
    [
        ({"id": "not-a-ulid"}, "id"),
        ({"id": "8" + "0" * 25}, "id"),  # 26 characters, but over 128 bits
        ({"type": 7}, "type"),
        ({"occurred_at": "2026-11-23 12:00"}, "occurred_at"),
        ({"occurred_at": "2026-02-30T12:00:00Z"}, "occurred_at"),
        ({"payload": []}, "payload"),
    ],
)
async def test_a_structurally_wrong_event_refuses_the_whole_batch(
    api: httpx.AsyncClient, admin: httpx.AsyncClient, breakage: dict[str, Any], where: str
) -> None:
    broken = {**check_posted(1010), **breakage}
    response = await api.post(f"/v1/stores/{STORE}/events", json=batch(check_posted(1009), broken))

    conforms(response, request_too=False)
    assert response.status_code == 400
    assert response.json()["error"] == "BAD_BATCH"
    assert where in response.json()["message"]
    assert (await stats(admin))["checks"] == 0


async def test_a_batch_that_is_not_json_too_long_or_too_big_is_refused(
    api: httpx.AsyncClient,
) -> None:
    path = f"/v1/stores/{STORE}/events"
    not_json = await api.post(path, content=b"{nope", headers={"content-type": "application/json"})
    too_many = await api.post(path, json=batch(*[check_posted(n) for n in range(501)]))
    padding = "x" * (1024 * 1024)
    too_big = await api.post(path, json=batch(check_posted(1, padding=padding)))

    for response in (not_json, too_many):
        assert conforms(response, request_too=False).status_code == 400
        assert response.json()["error"] == "BAD_BATCH"
    assert conforms(too_big, request_too=False).status_code == 413
    assert too_big.json()["error"] == "PAYLOAD_TOO_LARGE"


async def test_a_gzip_body_is_accepted(api: httpx.AsyncClient, admin: httpx.AsyncClient) -> None:
    body = gzip.compress(json.dumps(batch(check_posted(1011))).encode())
    headers = {"content-encoding": "gzip", "content-type": "application/json"}
    response = await api.post(f"/v1/stores/{STORE}/events", content=body, headers=headers)

    assert conforms(response).json()["results"][0]["status"] == "accepted"
    assert (await stats(admin))["checks"] == 1


async def test_requests_need_the_bearer_token_and_a_gateway_id(central: ReferenceServer) -> None:
    path = f"/v1/stores/{STORE}/changes"
    async with httpx.AsyncClient(base_url=central.url, verify=tls()) as client:
        no_token = await client.get(path, headers={"X-Gateway-Id": GATEWAY})
        wrong = await client.get(
            path, headers={"X-Gateway-Id": GATEWAY, "Authorization": "Bearer x"}
        )
        no_id = await client.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
        events = f"/v1/stores/{STORE}/events"
        no_token_post = await client.post(
            events, json=batch(check_posted(1)), headers={"X-Gateway-Id": GATEWAY}
        )

    for response in (no_token, wrong, no_token_post):
        assert conforms(response, request_too=False).status_code == 401
        assert response.json()["error"] == "UNAUTHORIZED"
    assert conforms(no_id, request_too=False).status_code == 400
    assert no_id.json()["error"] == "MISSING_GATEWAY_ID"


async def test_without_a_configured_token_any_client_is_accepted() -> None:
    async with (
        ReferenceServer(ReferenceConfig(clock=lambda: NOW)) as server,
        httpx.AsyncClient(
            base_url=server.url, headers={"X-Gateway-Id": GATEWAY}, verify=tls()
        ) as client,
    ):
        response = await client.get(f"/v1/stores/{STORE}/changes", params={"limit": 1})
    assert response.status_code == 200


async def test_lottery_consent_and_a_lottery_check_move_the_wallet_not_the_points(
    api: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    consent = event(
        "consent.changed",
        {"member_id": "M1", "program": "lottery", "consent": True, "earn_mode": "lottery"},
    )
    consent["payload"]["wsid"] = 3
    sale = check_posted(1012, points=120, earn_mode="lottery", wallet_delta=20, tickets=2)
    ident = event("member.identified", {"member_id": "M1", "wsid": 3, "rvc": 1, "check": 1012})
    results = await post_events(api, ident, consent, sale)

    assert [r["status"] for r in results] == ["accepted"] * 3
    record = await member(admin, "M1")
    assert (record["earn_mode"], record["lottery_consent"]) == ("lottery", True)
    assert (record["points_balance"], record["wallet_points"], record["tickets"]) == (120, 20, 2)
    assert (await stats(admin))["identifications"] == {STORE: 1}


# ---- changes -----------------------------------------------------------------------------------


async def read_changes(
    api: httpx.AsyncClient, cursor: str, limit: int
) -> tuple[list[dict[str, Any]], str, int]:
    """Every change from `cursor` on, page by page; returns them, the last cursor, the pages."""
    changes, pages = [], 0
    while True:
        params: dict[str, str | int] = {"cursor": cursor, "limit": limit}
        page = conforms(await api.get(f"/v1/stores/{STORE}/changes", params=params)).json()
        changes += page["changes"]
        cursor, pages = page["next_cursor"], pages + 1
        if not page["has_more"]:
            return changes, cursor, pages


def keys(changes: list[dict[str, Any]]) -> list[tuple[str, str]]:
    field = {"member": "member_id", "member_deleted": "member_id", "rules": "version"}
    return [(c["kind"], c["data"][field.get(c["kind"], "code")]) for c in changes]


async def test_a_snapshot_pages_every_record_once_and_then_deltas_follow_in_order(
    api: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    await admin.put("/_admin/rules", json={"version": "r1", "points_per_unit": 1})
    first = conforms(await api.get(f"/v1/stores/{STORE}/changes", params={"limit": 2})).json()
    # Changed behind the snapshot's position while it is read: these come afterwards as deltas.
    assert (await admin.post("/_admin/members", json=[{"member_id": "M0"}])).status_code == 200
    await post_events(api, check_posted(1013, member_id="M1", points=5))
    rest, cursor, pages = await read_changes(api, first["next_cursor"], 2)

    got = keys(first["changes"] + rest)
    snapshot = [("member", f"M{n}") for n in range(1, 6)]
    snapshot += [("coupon", c) for c in ("BDAY-M1", "OLD2025", "REWARD-M5", "TENOFF", "WELCOME5")]
    snapshot += [("rules", "r1")]
    assert got == [*snapshot, ("member", "M0"), ("member", "M1")]
    assert (first["changes"] + rest)[-1]["data"]["points_balance"] == 125
    assert 1 + pages == 7  # 11 snapshot records and 2 deltas, 2 a page

    # Nothing new: the same cursor comes back, with nothing in it.
    again = conforms(await api.get(f"/v1/stores/{STORE}/changes", params={"cursor": cursor}))
    assert again.json() == {"changes": [], "next_cursor": cursor, "has_more": False}

    await admin.post("/_admin/members", json=[{"member_id": "M2", "display_name": "Ben"}])
    await admin.delete("/_admin/members/M3")
    await admin.delete("/_admin/coupons/OLD2025")
    deltas, _, _ = await read_changes(api, cursor, 1000)
    assert keys(deltas) == [
        ("member", "M2"),
        ("member_deleted", "M3"),
        ("coupon_deleted", "OLD2025"),
    ]
    assert deltas[0]["data"]["points_balance"] == 40  # balances survive a record update


async def test_a_record_added_ahead_of_the_snapshot_position_may_come_twice(
    api: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    first = conforms(await api.get(f"/v1/stores/{STORE}/changes", params={"limit": 2})).json()
    await admin.post("/_admin/members", json=[{"member_id": "M9"}])
    rest, _, _ = await read_changes(api, first["next_cursor"], 1000)

    members = [key for kind, key in keys(first["changes"] + rest) if kind == "member"]
    assert members == ["M1", "M2", "M3", "M4", "M5", "M9", "M9"]


async def test_a_record_changed_twice_comes_once_at_its_latest_state(
    api: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    _, cursor, _ = await read_changes(api, "", 1000)
    await admin.post("/_admin/members", json=[{"member_id": "M4", "tier": "SILVER"}])
    await admin.post("/_admin/members", json=[{"member_id": "M5", "tier": "SILVER"}])
    await admin.post("/_admin/members", json=[{"member_id": "M4", "tier": "GOLD"}])

    deltas, _, _ = await read_changes(api, cursor, 1000)
    assert [(c["data"]["member_id"], c["data"]["tier"]) for c in deltas] == [
        ("M5", "SILVER"),
        ("M4", "GOLD"),
    ]


async def test_a_garbled_cursor_or_a_limit_over_1000_is_refused(api: httpx.AsyncClient) -> None:
    path = f"/v1/stores/{STORE}/changes"
    page = (await api.get(path, params={"limit": 1})).json()
    tampered = page["next_cursor"][:-2] + ("AA" if not page["next_cursor"].endswith("AA") else "BB")
    for cursor in ("garbage", tampered, "x.y"):
        response = conforms(await api.get(path, params={"cursor": cursor}))
        assert (response.status_code, response.json()["error"]) == (400, "BAD_CURSOR")
    too_many = conforms(await api.get(path, params={"limit": 1001}), request_too=False)
    assert (too_many.status_code, too_many.json()["error"]) == (400, "BAD_LIMIT")


async def test_a_cursor_from_another_central_database_is_refused(
    api: httpx.AsyncClient,
) -> None:
    async with (
        ReferenceServer(ReferenceConfig(clock=lambda: NOW)) as other,
        httpx.AsyncClient(
            base_url=other.url, headers={"X-Gateway-Id": GATEWAY}, verify=tls()
        ) as client,
    ):
        foreign = (await client.get(f"/v1/stores/{STORE}/changes")).json()["next_cursor"]
    response = await api.get(f"/v1/stores/{STORE}/changes", params={"cursor": foreign})
    assert (response.status_code, response.json()["error"]) == (400, "BAD_CURSOR")


# ---- coupon authorizations ---------------------------------------------------------------------


async def test_a_single_use_coupon_is_authorised_once_across_stores(
    api: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    once = {"code": "ONCE", "kind": "amount", "value": "5.00", "max_redemptions": 1}
    assert (await admin.post("/_admin/coupons", json=[once])).status_code == 200

    at_a = (await authorize(api, "ONCE", STORE, 2001)).json()
    at_b = (await authorize(api, "ONCE", OTHER_STORE, 2002)).json()
    at_a_again = (await authorize(api, "ONCE", STORE, 2001)).json()

    assert at_a["status"] == "approved" and at_a["authorization_id"]
    assert at_b == {"status": "declined", "reason": "ALREADY_REDEEMED", "authorization_id": None}
    assert at_a_again == at_a
    # Store B used it anyway while offline: an offline conflict, not applied.
    [conflict] = await post_events(api, redeemed("ONCE", 2002, store=STORE))
    [used] = await post_events(api, redeemed("ONCE", 2001))
    assert (conflict["status"], conflict["reason"]) == ("rejected", "COUPON_CONFLICT")
    assert used["status"] == "accepted"
    view = (await admin.get("/_admin/coupons/ONCE")).json()
    assert (view["redemptions"], view["authorizations"]) == (1, {"consumed": 1})
    assert (await stats(admin))["coupon_conflicts"] == 1


async def test_a_released_authorization_frees_the_coupon_for_another_check(
    api: httpx.AsyncClient,
) -> None:
    await authorize(api, "BDAY-M1", STORE, 2003, member_id="M1")
    released = event(
        "coupon.released",
        {"code": "BDAY-M1", "coupon_ref": "R-2003", "reason": "void", "wsid": 3, "check": 2003},
    )
    [result] = await post_events(api, released)

    assert result["status"] == "accepted"
    again = (await authorize(api, "BDAY-M1", STORE, 2004, member_id="M1")).json()
    assert again["status"] == "approved"


@pytest.mark.parametrize(
    ("code", "member_id", "reason"),
    [
        ("NOSUCH", None, "UNKNOWN_COUPON"),
        ("BDAY-M1", "M2", "WRONG_MEMBER"),
        ("BDAY-M1", None, "WRONG_MEMBER"),
        ("OLD2025", None, "EXPIRED"),
        ("LATER", None, "NOT_YET_VALID"),
        ("VOIDED", None, "VOID"),
    ],
)
async def test_an_authorization_is_declined_with_a_stable_reason(
    api: httpx.AsyncClient, admin: httpx.AsyncClient, code: str, member_id: str, reason: str
) -> None:
    extra = [
        {"code": "LATER", "kind": "percent", "value": "10", "valid_from": "2027-01-01T00:00:00Z"},
        {"code": "VOIDED", "kind": "amount", "value": "1.00", "status": "void"},
    ]
    await admin.post("/_admin/coupons", json=extra)
    answer = (await authorize(api, code, STORE, 2005, member_id=member_id)).json()
    assert answer == {"status": "declined", "reason": reason, "authorization_id": None}


# ---- catalog and heartbeat ---------------------------------------------------------------------


async def test_a_catalog_is_stored_once_then_unchanged(
    api: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    product = {"object_number": 5001, "name": "Latte", "family_group": "Coffee"}
    product.update(major_group="Beverages", prices=["3.20", "3.60"], active=True)
    catalog = {
        "store_id": STORE,
        "generated_at": "2026-11-23T04:00:00Z",
        "content_hash": "sha256:abc",
        "products": [product],
    }
    path = f"/v1/stores/{STORE}/catalog"
    first = conforms(await api.put(path, json=catalog)).json()
    second = conforms(await api.put(path, json=catalog)).json()
    wrong_store = conforms(await api.put(f"/v1/stores/{OTHER_STORE}/catalog", json=catalog))

    assert first == {"status": "stored", "content_hash": "sha256:abc"}
    assert second == {"status": "unchanged", "content_hash": "sha256:abc"}
    assert (wrong_store.status_code, wrong_store.json()["error"]) == (400, "WRONG_STORE")
    assert (await stats(admin))["catalogs"][STORE]["products"] == 1


async def test_a_heartbeat_is_recorded_per_gateway(
    api: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    beat = {
        "gateway_id": GATEWAY,
        "version": "0.1.0",
        "sent_at": "2026-11-23T12:00:00Z",
        "queue_depth": 3,
        "oldest_event_age_s": 1.5,
        "cursor": None,
        "adapters": {"sim": {"state": "listening", "connections": 2}},
        "dead_letters": 0,
    }
    response = conforms(await api.post(f"/v1/stores/{STORE}/heartbeat", json=beat))
    bad = conforms(
        await api.post(f"/v1/stores/{STORE}/heartbeat", json={**beat, "queue_depth": "3"}),
        request_too=False,
    )

    assert response.status_code == 204 and response.content == b""
    assert bad.status_code == 400 and "queue_depth" in bad.json()["message"]
    last = (await stats(admin))["heartbeats"][GATEWAY]
    assert (last["store_id"], last["heartbeat"]["queue_depth"]) == (STORE, 3)


# ---- faults ------------------------------------------------------------------------------------


async def test_a_lost_acknowledgement_applies_the_batch_and_the_retry_gets_duplicate(
    api: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    await admin.put("/_admin/faults", json={"drop_after_commit_rate": 1.0})
    sale = check_posted(3001)
    with pytest.raises(httpx.TransportError):
        await api.post(f"/v1/stores/{STORE}/events", json=batch(sale))

    assert (await stats(admin))["events"]["accepted"] == {"check.posted": 1}
    assert (await stats(admin))["dropped_responses"] == 1
    await admin.put("/_admin/faults", json={"drop_after_commit_rate": 0.0})
    [retry] = await post_events(api, sale)
    assert retry["status"] == "duplicate"
    assert (await member(admin, "M1"))["points_balance"] == 142


async def test_down_refuses_every_connection_until_central_is_up_again(
    api: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    path = f"/v1/stores/{STORE}/changes"
    assert (await api.get(path, params={"limit": 1})).status_code == 200  # a kept-alive connection
    await admin.put("/_admin/faults", json={"down": True})
    with pytest.raises(httpx.TransportError):
        await api.get(path, params={"limit": 1})
    async with httpx.AsyncClient(
        base_url=str(api.base_url), headers=api.headers, verify=tls()
    ) as fresh:
        with pytest.raises(httpx.ConnectError):
            await fresh.get(path)

    await admin.put("/_admin/faults", json={"down": False})
    assert (await api.get(path, params={"limit": 1})).status_code == 200


async def test_injected_503_and_429_carry_retry_after(
    api: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    path = f"/v1/stores/{STORE}/events"
    await admin.put("/_admin/faults", json={"error_rate": 1.0, "retry_after": "7"})
    unavailable = conforms(await api.post(path, json=batch(check_posted(3002))))
    date = "Wed, 21 Oct 2026 07:28:00 GMT"
    await admin.put("/_admin/faults", json={"error_rate": 0.0, "throttle_rate": 1.0})
    await admin.put("/_admin/faults", json={"retry_after": date})
    throttled = conforms(await api.get(f"/v1/stores/{STORE}/changes"))
    await admin.put("/_admin/faults", json={"throttle_rate": 0.0, "error_rate": 1.0})
    await admin.put("/_admin/faults", json={"error_status": 500})
    failed = conforms(await api.post(path, json=batch(check_posted(3003))))

    assert (unavailable.status_code, unavailable.headers["retry-after"]) == (503, "7")
    assert unavailable.json()["error"] == "UNAVAILABLE"
    assert (throttled.status_code, throttled.headers["retry-after"]) == (429, date)
    assert (failed.status_code, failed.json()["error"]) == (500, "SERVER_ERROR")
    assert (await stats(admin))["checks"] == 0  # refused before doing anything


async def test_a_share_of_faults_follows_the_seeded_dice(
    api: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    async def statuses() -> list[int]:
        await admin.put("/_admin/faults", json={"error_rate": 0.3, "seed": 42})
        return [(await api.get(f"/v1/stores/{STORE}/changes")).status_code for _ in range(40)]

    first, second = await statuses(), await statuses()
    assert first == second
    assert 3 <= first.count(503) <= 25 and set(first) == {200, 503}


async def test_latency_delays_api_answers(api: httpx.AsyncClient, admin: httpx.AsyncClient) -> None:
    await admin.put("/_admin/faults", json={"latency_ms": 60})
    started = asyncio.get_running_loop().time()
    await api.get(f"/v1/stores/{STORE}/changes", params={"limit": 1})
    assert asyncio.get_running_loop().time() - started >= 0.06
    bad = await admin.put("/_admin/faults", json={"error_rate": 2})
    assert (bad.status_code, bad.json()["error"]) == (400, "BAD_REQUEST")


async def test_keep_alive_works_through_the_proxy(
    api: httpx.AsyncClient, central: ReferenceServer
) -> None:
    for _ in range(5):
        assert (await api.get(f"/v1/stores/{STORE}/changes", params={"limit": 1})).is_success
    assert len(central.link.peers) == 1


# ---- the command line --------------------------------------------------------------------------


def test_the_command_line_serves_with_a_token_file_and_says_where(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    command = [sys.executable, "-m", "sync.central", "--port", "0", "--no-sample"]
    command += ["--db", str(tmp_path / "central.db"), "--token-file", str(token_file)]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("reference-server listening on http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1]
        headers = {"X-Gateway-Id": GATEWAY}
        denied = httpx.get(f"{url}/v1/stores/{STORE}/changes", headers=headers)
        headers["Authorization"] = f"Bearer {TOKEN}"
        page = httpx.get(f"{url}/v1/stores/{STORE}/changes", headers=headers)
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
    assert denied.status_code == 401
    assert page.json()["changes"] == [] and not page.json()["has_more"]


async def test_down_asked_through_the_public_port_still_answers_the_asker(
    central: ReferenceServer, admin: httpx.AsyncClient
) -> None:
    async with httpx.AsyncClient(base_url=central.url, verify=tls()) as public:
        answer = await public.put("/_admin/faults", json={"down": True})
        assert answer.json()["down"] is True
    async with httpx.AsyncClient(base_url=central.url, verify=tls()) as fresh:
        with pytest.raises(httpx.ConnectError):
            await fresh.get(f"/v1/stores/{STORE}/changes")
    await admin.put("/_admin/faults", json={"down": False})


async def test_the_admin_answers_404_for_a_member_or_coupon_it_does_not_hold(
    admin: httpx.AsyncClient,
) -> None:
    for path, kind in (("/_admin/members/NOBODY", "member"), ("/_admin/coupons/NOCODE", "coupon")):
        for method in ("GET", "DELETE"):
            response = await admin.request(method, path)
            key = path.rsplit("/", 1)[1]
            assert (response.status_code, response.json()) == (
                404,
                {"error": "NOT_FOUND", "message": f"no {kind} {key!r}"},
            ), (method, path)
    deleted = await admin.delete("/_admin/coupons/OLD2025")
    assert (deleted.status_code, deleted.json()) == (200, {"deleted": "OLD2025"})
    assert (await admin.get("/_admin/coupons/OLD2025")).status_code == 404
