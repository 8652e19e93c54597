"""sync/ at its own level: the client, the forwarder and the refresher against a central scripted
request by request over httpx's mock transport (mitmproxy's playbooks are the model), with a real
SQLite store. No sockets and no waiting: the forwarder's clock and sleep are the test's, so an
hour of backoff takes no time. The end-to-end tests against the reference central stay in
test_sync.py; the last test here runs the `drain` command itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import gzip
import json
import sqlite3
import time as wall
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from conformance.infra import GatewayLog, free_port
from conftest import identified_events
from gateway_process import cli
from scripted_central import GATEWAY_ID, scripted_client

from gateway.store.store import Store
from sync.client import (
    CentralClient,
    CentralRefused,
    CentralUnavailable,
    parse_retry_after,
)
from sync.forwarder import DrainStopped, Forwarder
from sync.refresher import CURSOR, Refresher

CEILING_S = 1.0  # the forwarder's backoff ceiling in these tests

# ---- the scripted central -----------------------------------------------------------------------

Reply = Callable[[httpx.Request], httpx.Response | Awaitable[httpx.Response]]
Answer = httpx.Response | Exception | Reply


class Central:
    """Answers requests in the order scripted: a response, an exception to raise (no answer at
    all), or a function of the request. When the script is used up, `then` answers (if given);
    a request nobody scripted fails the test. Every request is kept.

    It offers no snapshot file: `GET .../snapshot` is answered 404 outside the script (and kept
    apart, in `snapshot_requests`), as a central without one answers (DESIGN.md section 3)."""

    def __init__(self, *answers: Answer, then: Answer | None = None) -> None:
        self.answers = list(answers)
        self.then = then
        self.requests: list[httpx.Request] = []
        self.snapshot_requests: list[httpx.Request] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/snapshot"):
            self.snapshot_requests.append(request)
            return httpx.Response(404, json={"error": "NOT_FOUND", "message": "no snapshot"})
        self.requests.append(request)
        if self.answers:
            answer = self.answers.pop(0)
        else:
            assert self.then is not None, f"unscripted: {request.method} {request.url}"
            answer = self.then
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, httpx.Response):
            return answer
        reply = answer(request)
        return reply if isinstance(reply, httpx.Response) else await reply

    def batches(self) -> list[list[str]]:
        """The event ids of each `POST .../events`, in order."""
        return [[e["id"] for e in body(r)["events"]] for r in self.requests if is_events(r)]

    def batch_ids(self) -> list[str]:
        return [str(body(r)["batch_id"]) for r in self.requests if is_events(r)]


def is_events(request: httpx.Request) -> bool:
    return request.method == "POST" and request.url.path.endswith("/events")


def body(request: httpx.Request) -> dict[str, Any]:
    content = request.content
    if request.headers.get("content-encoding") == "gzip":
        content = gzip.decompress(content)
    parsed: dict[str, Any] = json.loads(content)
    return parsed


def answer(status: int, payload: Any = None, **headers: str) -> httpx.Response:
    if payload is None:
        return httpx.Response(status, headers=headers)
    return httpx.Response(status, json=payload, headers=headers)


def accept_all(request: httpx.Request) -> httpx.Response:
    """Central taking every event of the batch."""
    ids = [e["id"] for e in body(request)["events"]]
    return answer(200, {"results": [{"id": i, "status": "accepted"} for i in ids]})


def connect_error(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("All connection attempts failed", request=request)


def http_date(seconds_from_now: float) -> str:
    return email.utils.formatdate(wall.time() + seconds_from_now, usegmt=True)


class Time:
    """The forwarder's clock and sleep: sleeping moves the clock, and takes no time."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)  # let other tasks run, as a real sleep would


@pytest.fixture
def outbox(empty_store: Store) -> Store:
    return empty_store


async def queue(store: Store, count: int) -> list[str]:
    """`count` events in the outbox, oldest first; their ids."""
    events = identified_events(count)
    await store.append_events(events)
    return [e.event_id for e in events]


async def depth(store: Store) -> int:
    return (await store.outbox_depth())[0]


def forwarder(store: Store, client: CentralClient, time: Time, **options: Any) -> Forwarder:
    return Forwarder(
        store, client, backoff_ceiling_s=CEILING_S, clock=time, sleep=time.sleep, **options
    )


# ---- the client: Retry-After, and what each answer means ----------------------------------------


def test_retry_after_is_read_as_seconds_or_as_an_http_date() -> None:
    now = email.utils.parsedate_to_datetime("Mon, 23 Nov 2026 12:00:00 GMT")
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after(" 120 ", now) == 120.0
    assert parse_retry_after("Mon, 23 Nov 2026 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("Mon, 23 Nov 2026 12:00:30 -0000", now) == 30.0  # no zone: UTC
    assert parse_retry_after("Mon, 23 Nov 2026 11:59:00 GMT", now) == 0.0  # passed: at once
    for unreadable in ("soon", "-5", "1.5", "", None):
        assert parse_retry_after(unreadable, now) is None, unreadable


@pytest.mark.parametrize(
    ("status", "headers", "retry_after"),
    [
        (429, {"Retry-After": "7"}, 7.0),
        (503, {"Retry-After": "120"}, 120.0),
        (500, {}, None),
        (502, {}, None),
        (504, {"Retry-After": "later"}, None),
    ],
)
async def test_429_and_5xx_mean_try_again_later_after_the_retry_after_given(
    status: int, headers: dict[str, str], retry_after: float | None
) -> None:
    async with scripted_client(Central(answer(status, **headers))) as client:
        with pytest.raises(CentralUnavailable) as raised:
            await client.changes("", 10)
    assert raised.value.status == status and raised.value.retry_after == retry_after


async def test_a_retry_after_date_is_read_against_the_clock() -> None:
    async with scripted_client(Central(answer(503, **{"Retry-After": http_date(30)}))) as client:
        with pytest.raises(CentralUnavailable) as raised:
            await client.changes("", 10)
    assert raised.value.retry_after is not None and 28 < raised.value.retry_after <= 30


@pytest.mark.parametrize(
    ("reply", "code", "message"),
    [
        (answer(400, {"error": "BAD_BATCH", "message": "event 3"}), "BAD_BATCH", "event 3"),
        (answer(401, {"error": "UNAUTHORIZED", "message": "token"}), "UNAUTHORIZED", "token"),
        (httpx.Response(404, text="<html>nothing</html>"), "HTTP_404", "<html>nothing</html>"),
        (answer(409, {"message": "no code"}), "HTTP_409", "no code"),
    ],
    ids=["400", "401", "404-html", "409-no-code"],
)  # fmt: skip
async def test_any_other_4xx_is_a_refusal_with_centrals_code_and_message(
    reply: httpx.Response, code: str, message: str
) -> None:
    async with scripted_client(Central(reply)) as client:
        with pytest.raises(CentralRefused) as raised:
            await client.changes("", 10)
    assert (raised.value.status, raised.value.code, raised.value.message) == (
        reply.status_code,
        code,
        message,
    )


async def test_unreadable_answers_are_no_answer_and_are_tried_again() -> None:
    central = Central(
        httpx.Response(200, text="<html>proxy login</html>"),
        answer(200, {"changes": []}),  # no cursor
        answer(200, ["approved"]),  # not an object
        httpx.Response(200, text="not json"),
    )
    async with scripted_client(central) as client:
        with pytest.raises(CentralUnavailable, match="unreadable events answer"):
            await client.post_events("B1", [])
        with pytest.raises(CentralUnavailable, match="unreadable changes answer"):
            await client.changes("", 10)
        for _ in range(2):  # before: AttributeError and JSONDecodeError, reported as bugs
            with pytest.raises(CentralUnavailable, match="unreadable authorization answer"):
                await client.authorize_coupon("ONCE", {}, budget_s=0.3)


async def test_any_answer_counts_as_central_being_there_and_an_outage_is_logged_once_each_way(
    ) -> None:  # fmt: skip
    central = Central(
        answer(503),
        connect_error,
        httpx.ReadTimeout("timed out"),
        connect_error,
        answer(200, {"changes": [], "next_cursor": "c1", "has_more": False}),
    )
    woken: list[str] = []
    with GatewayLog() as gateway_log:
        async with scripted_client(central) as client:
            client.on_recovery.append(lambda: woken.append("refresher"))
            assert client.state() == "OFFLINE"  # nothing asked yet
            with pytest.raises(CentralUnavailable):
                await client.changes("", 10)
            assert client.state() == "ONLINE" and client.outages == 0  # 503 is an answer
            for _ in range(3):
                with pytest.raises(CentralUnavailable):
                    await client.changes("", 10)
            assert client.state() == "OFFLINE"
            assert client.link.counters()["last_error"] == (
                "ConnectError: All connection attempts failed"
            )
            await client.changes("", 10)
            assert client.state() == "ONLINE"
            assert (client.link.outages, client.link.recoveries) == (1, 1)
    (down,) = gateway_log.events("central_unreachable")
    assert down["level"] == "warning" and down["url"] == "http://127.0.0.1:9"
    assert down["error"] == "ConnectError: All connection attempts failed"
    (up,) = gateway_log.events("central_recovered")
    assert up["failures"] == 3 and up["outage_s"] >= 0
    assert woken == ["refresher"]


async def test_requests_carry_the_token_and_gateway_id_and_large_bodies_go_gzipped(
    tmp_path: Path,
) -> None:
    token = tmp_path / "central.token"
    token.write_text("first\n")
    token.chmod(0o600)
    central = Central(
        answer(401, {"error": "UNAUTHORIZED", "message": "rotated"}),
        answer(200, {}),
    )
    async with scripted_client(central, token_file=token) as client:
        token.write_text("second\n")  # rotated on disk while the gateway runs
        with pytest.raises(CentralRefused):
            await client.put_catalog({"products": [{"name": "x" * 2000}]})
        await client.put_catalog({"products": []})
    first, second = central.requests
    assert first.headers["authorization"] == "Bearer first"
    assert first.headers["x-gateway-id"] == GATEWAY_ID
    assert first.headers["content-encoding"] == "gzip"  # over 1 KiB
    assert body(first)["products"][0]["name"] == "x" * 2000
    assert second.headers["authorization"] == "Bearer second"  # read again after the 401
    assert "content-encoding" not in second.headers  # small: sent as it is


# ---- the forwarder: waits, retries, halving, omissions ------------------------------------------


async def test_429_and_503_wait_as_long_as_central_says_in_either_form_then_deliver(
    outbox: Store,
) -> None:
    ids = await queue(outbox, 5)
    central = Central(
        answer(429, **{"Retry-After": "7"}),
        answer(503, **{"Retry-After": http_date(30)}),
        accept_all,
    )
    time = Time()
    async with scripted_client(central) as client:
        sender = forwarder(outbox, client, time)
        await sender.drain()
    # Central's Retry-After wins over the jittered backoff (at most CEILING_S here).
    first, second = time.sleeps
    assert first == 7.0 and 28 < second <= 30
    assert central.batches() == [ids, ids, ids]
    assert len(set(central.batch_ids())) == 1  # the same batch, under the same id
    assert (sender.stats.failures, sender.stats.delivered) == (2, 5)
    assert await depth(outbox) == 0


async def test_5xx_and_network_errors_back_off_with_jitter_below_the_ceiling(
    outbox: Store,
) -> None:
    ids = await queue(outbox, 3)
    central = Central(
        answer(500),
        connect_error,
        httpx.ReadTimeout("timed out"),
        answer(502),
        answer(200, "garbage"),  # unreadable: no answer either
        accept_all,
    )
    time = Time()
    async with scripted_client(central) as client:
        sender = forwarder(outbox, client, time)
        await sender.drain()
    assert len(time.sleeps) == 5 and all(0 <= s <= CEILING_S for s in time.sleeps)
    assert central.batches() == [ids] * 6
    assert sender.stats.failures == 5 and sender.stats.last_error is None  # delivered since
    assert await depth(outbox) == 0


@pytest.mark.parametrize("status", [400, 413])
async def test_a_batch_central_refuses_whole_is_halved_until_the_bad_event_stands_alone(
    outbox: Store, status: int
) -> None:
    ids = await queue(outbox, 8)
    poison = ids[5]

    def judge(request: httpx.Request) -> httpx.Response:
        if poison in [e["id"] for e in body(request)["events"]]:
            return answer(status, {"error": "BAD_BATCH", "message": "event 5 is malformed"})
        return accept_all(request)

    time, central = Time(), Central(then=judge)
    async with scripted_client(central) as client:
        sender = forwarder(outbox, client, time)
        await sender.drain()
    assert [len(batch) for batch in central.batches()] == [8, 4, 4, 2, 1, 1, 2]
    batch_ids = central.batch_ids()
    assert len(set(batch_ids)) == len(batch_ids)  # each half goes under a batch id of its own
    assert time.sleeps == []  # a refusal of the content is not retried as it is
    assert sender.stats.split_batches == 3
    assert (sender.stats.delivered, sender.stats.dead_letters) == (7, 1)
    (dead,) = await outbox.dead_letters()
    assert dead["event_id"] == poison and dead["reason"] == "BAD_BATCH: event 5 is malformed"
    assert await depth(outbox) == 0


async def test_events_central_leaves_out_of_its_answer_are_sent_again(outbox: Store) -> None:
    ids = await queue(outbox, 6)

    def partly(request: httpx.Request) -> httpx.Response:
        return answer(
            200,
            {
                "results": [
                    {"id": ids[0], "status": "accepted"},
                    {"id": ids[2], "status": "duplicate"},
                    {"id": ids[4], "status": "rejected", "reason": "UNKNOWN_MEMBER"},
                    {"id": ids[4], "status": "accepted"},  # answered twice: the first counts
                    {"id": "01J00000000000000000000000", "status": "accepted"},  # not ours
                ]
            },
        )

    central = Central(partly, accept_all)
    async with scripted_client(central) as client:
        sender = forwarder(outbox, client, Time())
        await sender.drain()
    assert central.batches() == [ids, [ids[1], ids[3], ids[5]]]
    assert sender.stats.resent == 3
    assert (sender.stats.delivered, sender.stats.dead_letters) == (5, 1)
    (dead,) = await outbox.dead_letters()
    assert (dead["event_id"], dead["reason"]) == (ids[4], "UNKNOWN_MEMBER")
    assert await depth(outbox) == 0


async def test_central_refusing_every_batch_is_logged_once_and_its_end_once(
    outbox: Store,
) -> None:
    ids = await queue(outbox, 4)
    refusals = [answer(401, {"error": "UNAUTHORIZED", "message": "bad token"})] * 150
    with GatewayLog() as gateway_log:
        async with scripted_client(Central(*refusals, accept_all)) as client:
            sender = forwarder(outbox, client, Time())
            await sender.drain()
    # Before: logged at the 1st and the 101st failure, and never when it ended.
    (refused,) = gateway_log.events("central_refuses_batches")
    assert refused["level"] == "error" and (refused["status"], refused["code"]) == (
        401,
        "UNAUTHORIZED",
    )
    assert refused["error"] == "401 UNAUTHORIZED: bad token"
    (accepted,) = gateway_log.events("central_accepts_batches")
    assert accepted["level"] == "info" and accepted["failures"] == 150
    # A refusal of the whole batch for who we are is not the content's: nothing split or lost.
    assert sender.stats.split_batches == 0 and await outbox.dead_letters() == []
    assert sender.stats.delivered == len(ids) and await depth(outbox) == 0


# ---- drain: it ends, and says why ----------------------------------------------------------


async def test_drain_stops_at_its_time_naming_centrals_last_error_and_what_waits(
    outbox: Store,
) -> None:
    await queue(outbox, 12)
    time = Time()
    central = Central(then=connect_error)
    async with scripted_client(central) as client:
        sender = forwarder(outbox, client, time, batch_size=5)
        with pytest.raises(DrainStopped) as raised:
            await sender.drain(within_s=60)
    stopped = raised.value
    assert str(stopped) == (
        "12 events still waiting after 60 s: central keeps failing; its last error:"
        " ConnectError: All connection attempts failed"
    )
    assert stopped.waiting == 12 and await depth(outbox) == 12
    # The last wait ends at the deadline, and the last attempt is made there.
    assert time.now == pytest.approx(60.0) and max(time.sleeps) <= CEILING_S
    assert len(central.requests) > 60 / CEILING_S


async def test_drain_stops_a_refused_batch_at_its_time_without_dead_lettering_it(
    outbox: Store,
) -> None:
    await queue(outbox, 3)
    refused = answer(403, {"error": "FORBIDDEN", "message": "store S001 is not yours"})
    async with scripted_client(Central(then=refused)) as client:
        sender = forwarder(outbox, client, Time())
        with pytest.raises(DrainStopped, match="403 FORBIDDEN: store S001 is not yours"):
            await sender.drain(within_s=10)
    assert await outbox.dead_letters() == [] and await depth(outbox) == 3


async def test_drain_honours_a_retry_after_beyond_its_time_by_stopping_at_its_time(
    outbox: Store,
) -> None:
    await queue(outbox, 2)
    time = Time()
    central = Central(then=answer(503, **{"Retry-After": "3600"}))
    async with scripted_client(central) as client:
        with pytest.raises(DrainStopped, match="central answered 503"):
            await forwarder(outbox, client, time).drain(within_s=30)
    assert time.sleeps == [30.0] and len(central.requests) == 2


async def test_drain_that_central_answers_in_time_empties_the_outbox(outbox: Store) -> None:
    ids = await queue(outbox, 7)
    central = Central(connect_error, connect_error, answer(503), then=accept_all)
    async with scripted_client(central) as client:
        sender = forwarder(outbox, client, Time(), batch_size=3)
        await sender.drain(within_s=60)
    assert sorted(i for batch in central.batches()[3:] for i in batch) == sorted(ids)
    assert await depth(outbox) == 0


async def test_the_drain_command_stops_at_its_timeout_and_says_why(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    store = await Store.open(data_dir / "gateway.db")
    await queue(store, 3)
    await store.close()
    started = wall.monotonic()
    code, _, err = await cli(
        data_dir, "drain", "--timeout", "1",
        EDGE_GATEWAY_CENTRAL__URL=f"http://127.0.0.1:{free_port()}",  # nothing listens
        EDGE_GATEWAY_ADMIN__PORT="1",  # and no gateway runs
    )  # fmt: skip
    said = " ".join(err.split())
    assert code == 1, err
    assert "3 events still waiting after 1 s: central keeps failing" in said
    assert "ConnectError" in said
    assert wall.monotonic() - started < 30


# ---- the refresher: pages, and the prefetch of the next -------------------------------------


def page(changes: list[dict[str, Any]], next_cursor: str, has_more: bool) -> httpx.Response:
    return answer(200, {"changes": changes, "next_cursor": next_cursor, "has_more": has_more})


def member(member_id: str) -> dict[str, Any]:
    return {"kind": "member", "data": {"member_id": member_id, "identifiers": [f"C-{member_id}"]}}


def cursor_of(request: httpx.Request) -> str:
    return request.url.params["cursor"]


async def test_the_refresher_pages_through_changes_keeping_the_cursor_with_each_page(
    outbox: Store, tmp_path: Path
) -> None:
    coupon = {"code": "NEW5", "kind": "amount", "value": "5.00"}
    central = Central(
        page([member("M1"), member("M2")], "c1", True),
        page([{"kind": "coupon", "data": coupon}, {"kind": "badge", "data": {}}], "c2", True),
        page([{"kind": "member_deleted", "data": {"member_id": "M1"}}], "c3", False),
    )
    async with scripted_client(central) as client:
        refresher = Refresher(outbox, client, page_limit=2)
        assert await refresher.refresh() == 5
    assert [cursor_of(r) for r in central.requests] == ["", "c1", "c2"]
    assert {r.url.params["limit"] for r in central.requests} == {"2"}
    assert outbox.get_state(CURSOR) == "c3"  # next_cursor, also when has_more is false
    with contextlib.closing(sqlite3.connect(tmp_path / "gateway.db")) as db:
        assert db.execute("SELECT member_id FROM members").fetchall() == [("M2",)]
        assert db.execute("SELECT code FROM coupons").fetchall() == [("NEW5",)]
    stats = refresher.stats
    assert (stats.pages, stats.members, stats.coupons, stats.deletions) == (3, 2, 1, 1)
    assert dict(stats.unknown_kinds) == {"badge": 1}
    assert stats.snapshots == 1  # it began from the empty cursor: a full snapshot


class Held:
    """A page central holds back until the test lets it go; says when it was asked and whether
    the asking was given up (cancelled)."""

    def __init__(self) -> None:
        self.asked = asyncio.Event()
        self.release = asyncio.Event()
        self.cancelled = False

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.asked.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return page([], "never", False)


async def test_a_page_that_cannot_be_written_cancels_the_prefetched_next_one(
    outbox: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = Held()
    central = Central(page([member("M1")], "c1", True), held)

    async def disk_full(*_: object) -> None:
        await held.asked.wait()  # the next page is being fetched while this one is written
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(outbox, "apply_changes", disk_full)
    async with scripted_client(central) as client:
        with pytest.raises(OSError, match="No space left"):
            await Refresher(outbox, client).refresh()
    assert held.cancelled
    assert outbox.get_state(CURSOR) is None  # nothing written: the next round starts again


async def test_cancelling_a_refresh_cancels_its_prefetch(outbox: Store) -> None:
    held = Held()
    central = Central(page([member("M1")], "c1", True), held)
    applied = asyncio.Event()
    async with scripted_client(central) as client:
        refresher = Refresher(outbox, client)
        refreshing = asyncio.create_task(refresher.refresh(lambda _: applied.set()))
        await asyncio.wait_for(asyncio.gather(applied.wait(), held.asked.wait()), 10)
        refreshing.cancel()  # the daemon stopping while the next page is on its way
        await asyncio.gather(refreshing, return_exceptions=True)
    assert held.cancelled and refreshing.cancelled()
    assert outbox.get_state(CURSOR) == "c1"  # the first page is in, with its cursor


async def test_refresh_failures_are_logged_once_and_the_recovery_once(outbox: Store) -> None:
    good_pages: list[str] = []
    round_after = asyncio.Event()  # the round after the first good one: that one is counted

    def good_page(request: httpx.Request) -> httpx.Response:
        good_pages.append(cursor_of(request))
        if len(good_pages) == 2:
            round_after.set()
        return page([], "c1", False)

    central = Central(
        connect_error,
        connect_error,
        answer(503),
        answer(200, "garbage"),
        then=good_page,
    )
    with GatewayLog() as gateway_log:
        async with scripted_client(central) as client:
            refresher = Refresher(outbox, client, interval_s=0)
            running = asyncio.create_task(refresher.run())
            try:
                await asyncio.wait_for(round_after.wait(), 10)
            finally:
                running.cancel()
                await asyncio.gather(running, return_exceptions=True)
    (failed,) = gateway_log.events("cache_refresh_failed")
    assert failed["level"] == "warning" and "ConnectError" in failed["error"]
    (back,) = gateway_log.events("cache_refresh_recovered")
    assert back["failures"] == 4 and back["outage_s"] >= 0
    assert refresher.stats.failures == 4 and refresher.link.counters()["recoveries"] == 1
