"""Shared fixtures: a store on disk, the sample records, a gateway answering on a real socket."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import ipaddress
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog
from gateway_process import GatewayProcess, Spawn

from gateway.domain.ids import new_ulid
from gateway.domain.models import Coupon, Member, OutboxEvent
from gateway.logging import configure_logging
from gateway.service import Gateway, ServiceOptions
from gateway.store.store import Store
from pos_adapters.sim.register import RegisterConnection, Workstation
from pos_adapters.sim.session import SimResponder
from pos_adapters.sim.tcp import SimTcpServer

SAMPLE = Path(__file__).resolve().parent.parent / "gateway" / "sample"
STORE_ID = "S001"
# A fixed "now" inside every sample coupon's validity window; tests that need time to move
# use a `Clock`.
NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)


def sample_members() -> list[Member]:
    lines = (SAMPLE / "members.jsonl").read_text().splitlines()
    return [Member.model_validate_json(line) for line in lines if line.strip()]


def sample_coupons() -> list[Coupon]:
    lines = (SAMPLE / "coupons.jsonl").read_text().splitlines()
    return [Coupon.model_validate_json(line) for line in lines if line.strip()]


def member_record(member_id: str, **fields: object) -> Member:
    base: dict[str, object] = {"member_id": member_id, "identifiers": [f"CARD-{member_id}"]}
    return Member.model_validate({**base, **fields})


def coupon_record(code: str, **fields: object) -> Coupon:
    base: dict[str, object] = {"code": code, "kind": "amount", "value": "5.00"}
    return Coupon.model_validate(json.loads(json.dumps({**base, **fields})))


def identified_events(count: int) -> list[OutboxEvent]:
    """`count` `member.identified` events of store S001, checks 0 to count - 1, oldest first."""
    return [
        OutboxEvent(
            new_ulid(),
            "member.identified",
            "2026-11-23T10:00:00.000000Z",
            {"store_id": "S001", "member_id": "M1", "wsid": 1, "rvc": 1, "check": n},
        )
        for n in range(count)
    ]


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: dt.datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(tmp_path / "data" / "gateway.db")
    await opened.upsert_members(sample_members())
    await opened.upsert_coupons(sample_coupons())
    yield opened
    await opened.close()


@pytest.fixture
async def empty_store(tmp_path: Path) -> AsyncIterator[Store]:
    """A new store on disk with nothing in it."""
    opened = await Store.open(tmp_path / "gateway.db")
    yield opened
    await opened.close()


async def cap_database(store: Store, room_pages: int = 0) -> None:
    """Let the database grow by at most `room_pages` pages from its size now."""
    pages = await store.writer.run_on_thread(
        lambda c: int(c.execute("PRAGMA page_count").fetchone()[0])
    )
    await store.writer.run_on_thread(
        lambda c: c.execute(f"PRAGMA max_page_count = {pages + room_pages}")
    )


@pytest.fixture
def service(store: Store, clock: Clock) -> Gateway:
    return Gateway(store, ServiceOptions(store_id=STORE_ID), clock=clock)


@dataclass
class RunningGateway:
    service: Gateway
    store: Store
    server: SimTcpServer
    responder: SimResponder

    @property
    def port(self) -> int:
        return self.server.port

    async def connect(self) -> RegisterConnection:
        return await RegisterConnection.open("127.0.0.1", self.port)

    def workstation(self, wsid: int) -> contextlib.AbstractAsyncContextManager[Workstation]:
        return workstation_on(self.port, wsid)


@contextlib.asynccontextmanager
async def workstation_on(port: int, wsid: int) -> AsyncIterator[Workstation]:
    """Workstation `wsid` on a connection of its own to the SIM port, closed after."""
    connection = await RegisterConnection.open("127.0.0.1", port)
    try:
        yield connection.workstation(wsid)
    finally:
        await connection.close()


ServerFactory = Callable[..., SimTcpServer]


@contextlib.asynccontextmanager
async def running_gateway(
    service: Gateway, store: Store, responder: SimResponder | None = None
) -> AsyncIterator[RunningGateway]:
    """The service behind a real SIM TCP server on a free loopback port."""
    responder = responder or SimResponder(service)
    server = SimTcpServer(
        responder,
        host="127.0.0.1",
        port=0,
        allow=[ipaddress.ip_network("127.0.0.0/8")],
        read_timeout_s=0.5,
    )
    await server.start()
    try:
        yield RunningGateway(service, store, server, responder)
    finally:
        await server.stop(grace_s=1.0)


@pytest.fixture
async def gateway(service: Gateway, store: Store) -> AsyncIterator[RunningGateway]:
    """The service behind a real SIM TCP server on a free loopback port."""
    async with running_gateway(service, store) as running:
        yield running


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
async def spawn(data_dir: Path) -> AsyncIterator[Spawn]:
    """Start real daemon processes on `data_dir`; each is killed at the end of the test."""
    started: list[GatewayProcess] = []

    async def start(**env: str) -> GatewayProcess:
        process = await GatewayProcess.start(data_dir, env)
        started.append(process)
        return process

    yield start
    for process in started:
        await process.close()


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """Whatever the test does to logging (handlers, level, warnings capture, structlog) is undone
    after it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(False)
    structlog.reset_defaults()


@pytest.fixture
def log_lines(restored_logging: None) -> io.StringIO:
    """The gateway's log, as JSON lines in a buffer; the logging set-up is restored after."""
    out = io.StringIO()
    configure_logging(fmt="json", stream=out)
    return out


def events(out: io.StringIO, name: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == name]
