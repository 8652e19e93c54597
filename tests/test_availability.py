"""One way to report an outage (gateway/links.py): the failure logged once with its cause, the
recovery once with the outage's length, a bug each time with its traceback. Also the coupon
authoriser telling central's failures from its own bugs, and what status shows of each link."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import structlog
from conformance.infra import GatewayLog, free_port
from conftest import STORE_ID, Clock
from sync_harness import start_gateway
from waiting import until

from gateway.domain.models import CouponOk, CouponRequest
from gateway.links import Link, LinkEvents
from gateway.service import Gateway, ServiceOptions
from gateway.store.store import Store
from sync.client import CentralRefused, CentralUnavailable

CENTRAL = LinkEvents(down="thing_unreachable", up="thing_recovered")
PORT = LinkEvents(
    down="thing_lost", up="thing_back", first_down="thing_unavailable", first_up="thing_open"
)


class Time:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    """A logger that keeps (level, event, fields)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def info(self, event: str, **fields: Any) -> None:
        self.lines.append(("info", event, fields))

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.append(("warning", event, fields))

    def error(self, event: str, **fields: Any) -> None:
        self.lines.append(("error", event, fields))

    def events(self) -> list[tuple[str, str]]:
        return [(level, event) for level, event, _ in self.lines]


def test_an_outage_is_logged_once_when_it_begins_and_once_when_it_ends() -> None:
    log, time = Recorder(), Time()
    link = Link(log, CENTRAL, clock=time, url="https://central")
    link.succeeded()
    assert log.lines == []  # up from the start: nothing to say

    link.failed(ConnectionRefusedError("refused"))
    for _ in range(4):
        time.now += 2.5
        link.failed(TimeoutError())  # counted, not logged
    assert link.down and link.available is False
    assert link.counters() == {
        "outages": 1,
        "recoveries": 0,
        "failures": 5,
        "last_error": "TimeoutError",  # no message: the type names it
        "down_for_s": 10.0,
    }
    time.now += 2.5
    assert link.succeeded() is True
    link.succeeded()

    assert log.lines == [
        ("warning", "thing_unreachable", {"error": "refused", "url": "https://central"}),
        (
            "info",
            "thing_recovered",
            {"outage_s": 12.5, "failures": 5, "url": "https://central"},
        ),
    ]
    assert (link.outages, link.recoveries, link.failures) == (1, 1, 5)
    assert link.available is True and link.counters()["down_for_s"] is None
    assert isinstance(link.last_exception, TimeoutError)  # kept, like last_error


def test_a_second_outage_is_logged_again_and_counts_its_own_failures() -> None:
    log, time = Recorder(), Time()
    link = Link(log, CENTRAL, clock=time)
    for _ in range(2):
        link.failed("first")
        link.failed("second")
        time.now += 1
        link.succeeded()
    assert log.events() == [
        ("warning", "thing_unreachable"),
        ("info", "thing_recovered"),
        ("warning", "thing_unreachable"),
        ("info", "thing_recovered"),
    ]
    assert [fields["failures"] for _, _, fields in log.lines[1::2]] == [2, 2]
    assert (link.outages, link.recoveries, link.failures) == (2, 2, 4)


def test_a_link_never_up_yet_names_its_first_failure_and_its_first_success() -> None:
    log, time = Recorder(), Time()
    port = Link(log, PORT, clock=time, device="/dev/ttyS0")
    port.failed(FileNotFoundError("no such device"))
    port.failed(FileNotFoundError("no such device"))
    port.succeeded(baudrate=9600)  # the first open, after two failures
    port.failed(OSError("gone"))
    time.now += 3
    port.succeeded(baudrate=9600)
    assert log.lines == [
        ("warning", "thing_unavailable", {"error": "no such device", "device": "/dev/ttyS0"}),
        ("info", "thing_open", {"failures": 2, "device": "/dev/ttyS0", "baudrate": 9600}),
        ("warning", "thing_lost", {"error": "gone", "device": "/dev/ttyS0"}),
        (
            "info",
            "thing_back",
            {"outage_s": 3.0, "failures": 1, "device": "/dev/ttyS0", "baudrate": 9600},
        ),
    ]
    # The first open ended an outage too: every outage has its recovery.
    assert (port.outages, port.recoveries) == (2, 2)

    fresh = Recorder()
    Link(fresh, PORT, clock=time).succeeded()
    assert fresh.lines == [("info", "thing_open", {"failures": 0})]  # said even without trouble


def test_recovery_callbacks_run_once_per_outage() -> None:
    link = Link(Recorder(), CENTRAL, clock=Time())
    woken: list[str] = []
    link.on_recovery.append(lambda: woken.append("forwarder"))
    link.succeeded()
    link.failed("away")
    link.failed("away")
    link.succeeded()
    link.succeeded()
    assert woken == ["forwarder"]


def test_a_refusal_link_logs_its_outage_as_an_error() -> None:
    log = Recorder()
    link = Link(log, LinkEvents(down="refused", up="accepted", down_level="error"), clock=Time())
    link.failed("401 UNAUTHORIZED: bad token", status=401)
    assert log.lines == [
        ("error", "refused", {"error": "401 UNAUTHORIZED: bad token", "status": 401})
    ]


def test_a_bug_is_logged_each_time_with_its_traceback_and_the_outage_once() -> None:
    with GatewayLog() as gateway_log:
        link = Link(structlog.get_logger("test.links"), CENTRAL)
        for _ in range(2):
            try:
                raise KeyError("missing")  # the bug
            except KeyError as error:
                link.failed(error, unexpected="thing_error")
        link.succeeded()
    bugs = gateway_log.events("thing_error")
    assert len(bugs) == 2
    for bug in bugs:
        assert bug["level"] == "error" and bug["error"] == "'missing'"
        assert "Traceback" in bug["exception"] and "KeyError" in bug["exception"]
    (down,) = gateway_log.events("thing_unreachable")
    assert down["level"] == "warning" and "exception" not in down
    assert len(gateway_log.events("thing_recovered")) == 1


# ---- the coupon authoriser: central's failures, or a bug ---------------------------------------


class Authorizer:
    def __init__(self, error: Exception) -> None:
        self.error = error

    async def authorize_coupon(self, code: str, request: Any, *, budget_s: float) -> dict[str, Any]:
        raise self.error


def reward_scan() -> CouponRequest:
    # REWARD-M5 is single-use, so central is asked for it.
    return CouponRequest(wsid=1, check=7, member_id="M5", code="REWARD-M5", subtotal=1000)


async def test_a_bug_in_the_coupon_authoriser_is_logged_with_its_traceback_and_policy_decides(
    store: Store, clock: Clock
) -> None:
    service = Gateway(
        store, ServiceOptions(store_id=STORE_ID), clock=clock, authorizer=Authorizer(KeyError("x"))
    )
    with GatewayLog() as gateway_log:
        reply = await service.check_coupon(reward_scan())
    assert isinstance(reply, CouponOk)  # the offline policy (allow) decided, as before
    assert service.stats.offline_authorizations == 1
    (bug,) = gateway_log.events("coupon_authorization_error")
    assert bug["level"] == "error" and bug["error"] == "KeyError"
    assert "Traceback" in bug["exception"]
    assert gateway_log.events("coupon_authorization_offline") == []


@pytest.mark.parametrize(
    "error",
    [
        TimeoutError(),
        CentralUnavailable("ConnectError: refused"),
        CentralUnavailable("central answered 503", status=503),
        CentralRefused(404, "NOT_FOUND", "no such coupon"),
    ],
    ids=["timeout", "away", "503", "refused"],
)
async def test_central_slow_away_or_refusing_is_no_bug_and_policy_decides(
    store: Store, clock: Clock, error: Exception
) -> None:
    service = Gateway(
        store, ServiceOptions(store_id=STORE_ID), clock=clock, authorizer=Authorizer(error)
    )
    with GatewayLog() as gateway_log:
        reply = await service.check_coupon(reward_scan())
    assert isinstance(reply, CouponOk)
    (offline,) = gateway_log.events("coupon_authorization_offline")
    assert offline["level"] == "info" and offline["error"] == type(error).__name__
    assert "exception" not in offline
    assert gateway_log.events("coupon_authorization_error") == []


# ---- what status shows -------------------------------------------------------------------------


async def test_status_shows_each_links_outage_while_central_is_away(tmp_path: Path) -> None:
    daemon = await start_gateway(tmp_path, f"http://127.0.0.1:{free_port()}")  # nothing there
    try:
        assert daemon.central is not None and daemon.refresher is not None

        def both_down() -> bool:
            assert daemon.central is not None and daemon.refresher is not None
            return daemon.central.link.down and daemon.refresher.link.down

        await until(both_down, within_s=30, what="central and the refresh down")
        status = await daemon.status()
    finally:
        await daemon.stop()
    central = status["central"]
    assert central["state"] == "OFFLINE"
    assert (central["outages"], central["recoveries"]) == (1, 0)
    assert central["failures"] >= 1 and central["last_error"].startswith("ConnectError")
    assert central["down_for_s"] is not None
    refresh = status["sync"]["refresh_link"]
    assert refresh["outages"] == 1 and refresh["last_error"].startswith("ConnectError")
    assert status["sync"]["refusal_link"]["outages"] == 0  # away is not refusing
