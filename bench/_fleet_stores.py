"""The fleet simulator's worker processes (bench/fleet.py): each runs many stores, every store the
gateway's own `Store`, `Gateway`, `CentralClient`, `Forwarder`, `Refresher` and heartbeat on its
own SQLite file, with simulated registers, and answers its parent's commands."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import datetime as dt
import functools
import multiprocessing
import multiprocessing.connection
import random
import sqlite3
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import _common as common
from bench import _helpers as helpers

if TYPE_CHECKING:
    from gateway.domain.models import PostRequest
    from gateway.service import Gateway
    from gateway.store.store import ChangePage, EventResult, QueuedEvent, Store
    from sync.client import CentralClient, ChangesPage
    from sync.forwarder import Forwarder
    from sync.refresher import Refresher

BURST_WSID = 99  # burst events' workstation: never one of the simulated registers

# The trigger that keeps every event id that entered a store's outbox (OR IGNORE: an event put
# back from the dead letters enters the outbox again).
ID_TRIGGER = """
CREATE TABLE IF NOT EXISTS fleet_outbox_ids (
    event_id TEXT PRIMARY KEY, type TEXT NOT NULL
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS fleet_outbox_ids AFTER INSERT ON outbox BEGIN
    INSERT OR IGNORE INTO fleet_outbox_ids VALUES (new.event_id, new.type);
END;
"""


@dataclass(frozen=True)
class Options:
    stores: int
    rate: float  # checks/s per store
    processes: int
    duration_s: float  # of the load
    members: int
    member_share: float
    registers: int  # workstations per store
    jitter_s: float  # central.bootstrap_jitter_s
    burst: int  # events per store appended at once after the load (0: none)
    db_workers: int  # PostgreSQL connections per central process
    seed: int
    quick: bool = False


@dataclass(frozen=True)
class StoreSpec:
    index: int
    store_id: str
    central: str  # "A" or "B"
    url: str
    directory: str


@dataclass(frozen=True)
class WorkerPlan:
    worker: int
    stores: tuple[StoreSpec, ...]
    options: Options
    log_file: str


@functools.cache
def _observed_store_class() -> type[Store]:
    """`Store`, noting when each rules version was committed by `apply_changes` (the refresher's
    write). Made in a function: the worker imports the gateway, the parent need not."""
    from gateway.store.store import Store

    class ObservedStore(Store):
        rules_seen: dict[str, float]

        async def apply_changes(self, page: ChangePage) -> None:
            await super().apply_changes(page)
            if page.rules:
                now = time.time()
                seen = self.__dict__.setdefault("rules_seen", {})
                for document in page.rules:
                    seen.setdefault(document.version, now)

    return ObservedStore


@functools.cache
def _counting_client_class() -> type[CentralClient]:
    """`CentralClient`, counting its requests and their failures by kind."""
    from sync.client import CentralClient, CentralError

    class CountingClient(CentralClient):
        calls: Counter[str]
        failures: Counter[str]  # "kind why": why = central's status, or the network error

        def _count(self, kind: str, error: CentralError | None = None) -> None:
            counts = self.__dict__.setdefault("calls", Counter())
            counts[kind] += 1
            if error is not None:
                why = getattr(error, "status", None) or type(error.__cause__).__name__
                self.__dict__.setdefault("failures", Counter())[f"{kind} {why}"] += 1
                self.__dict__.setdefault("failed_at", []).append((time.time(), f"{kind} {why}"))

        async def post_events(
            self, batch_id: str, events: Sequence[QueuedEvent]
        ) -> list[EventResult]:
            try:
                results = await super().post_events(batch_id, events)
            except CentralError as error:
                self._count("events", error)
                raise
            self._count("events")
            return results

        async def changes(self, cursor: str, limit: int, *, wait_s: float = 0) -> ChangesPage:
            kind = "long_poll" if wait_s > 0 else "changes"
            try:
                page = await super().changes(cursor, limit, wait_s=wait_s)
            except CentralError as error:
                self._count(kind, error)
                raise
            self._count(kind)
            return page

        async def heartbeat(self, beat: Any) -> None:
            try:
                await super().heartbeat(beat)
            except CentralError as error:
                self._count("heartbeat", error)
                raise
            self._count("heartbeat")

    return CountingClient


def _install_id_trigger(conn: sqlite3.Connection) -> None:
    conn.executescript(ID_TRIGGER)


@dataclass
class SimStore:
    """One simulated store in a worker: the gateway's parts and what the simulator noted."""

    spec: StoreSpec
    store: Store
    client: CentralClient
    service: Gateway
    forwarder: Forwarder
    refresher: Refresher
    heartbeat_s: float
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    registers: asyncio.Task[None] | None = None
    in_flight: set[asyncio.Task[None]] = field(default_factory=set)
    started_at: float | None = None
    bootstrapped_at: float | None = None
    checks: int = 0
    post_ok: list[tuple[int, int, float]] = field(default_factory=list)  # wsid, check, wall
    post_s: list[float] = field(default_factory=list)  # due -> POST_OK
    refused: Counter[str] = field(default_factory=Counter)
    burst: int = 0


class Worker:
    """One worker process: opens its stores, then answers the parent's commands."""

    def __init__(self, conn: multiprocessing.connection.Connection, plan: WorkerPlan) -> None:
        self.conn = conn
        self.plan = plan
        self.options = plan.options
        self.stores: list[SimStore] = []
        # (wall time, seconds late) of the registers' timers: the worker's own load
        self.lags: list[tuple[float, float]] = []
        self._answers: set[asyncio.Task[None]] = set()
        self._watch: asyncio.Task[None] | None = None

    async def main(self) -> None:
        started = time.perf_counter()
        try:
            for spec in self.plan.stores:
                self.stores.append(await self.open_store(spec))
            self.conn.send(("ready", True, {"seconds": time.perf_counter() - started}))
            await self.serve()
        finally:
            summary = await self.close()
        with contextlib.suppress(OSError):
            self.conn.send(("close", True, summary))

    async def open_store(self, spec: StoreSpec) -> SimStore:
        from gateway.config import CentralSettings
        from gateway.service import Gateway, ServiceOptions
        from sync.forwarder import Forwarder
        from sync.refresher import Refresher

        directory = Path(spec.directory)
        await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
        store = await _observed_store_class().open(directory / "gateway.db")
        await store.writer.run_on_thread(_install_id_trigger)
        settings = CentralSettings(url=spec.url, bootstrap_jitter_s=self.options.jitter_s)
        gateway_id = f"gw-{spec.store_id}"
        client = _counting_client_class()(settings, store_id=spec.store_id, gateway_id=gateway_id)
        service = Gateway(
            store,
            ServiceOptions(store_id=spec.store_id, gateway_id=gateway_id, timezone=dt.UTC),
            central_state=client.state,
            authorizer=client,
        )
        # As gateway/daemon.py wires them (`_start_sync`), with the bootstrap jitter passed on.
        forwarder = Forwarder(
            store, client, batch_size=settings.batch_size, backoff_ceiling_s=settings.backoff_max_s
        )
        refresher = Refresher(
            store,
            client,
            interval_s=settings.refresh_interval_s,
            max_removal_share=settings.max_removal_share,
            bootstrap_jitter_s=settings.bootstrap_jitter_s,
            random=random.Random(self.options.seed * 1_000_003 + spec.index).random,
        )
        store.outbox_listeners.append(forwarder.wake)
        client.on_recovery += [forwarder.wake, refresher.wake]
        return SimStore(
            spec, store, client, service, forwarder, refresher, settings.heartbeat_interval_s
        )

    # ---- commands --------------------------------------------------------------------------

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        fd = self.conn.fileno()

        def readable() -> None:
            try:
                command, arg = self.conn.recv()
            except (EOFError, OSError):  # the parent is gone
                command, arg = "close", None
            if command == "close":
                loop.remove_reader(fd)
                done.set()
                return
            task = loop.create_task(self.answer(command, arg))
            self._answers.add(task)
            task.add_done_callback(self._answers.discard)

        loop.add_reader(fd, readable)
        try:
            await done.wait()
        finally:
            loop.remove_reader(fd)

    async def answer(self, command: str, arg: Any) -> None:
        handlers: dict[str, Callable[[Any], Any]] = {
            "start": self.start,
            "status": self.status,
            "load": self.load,
            "stop_load": self.stop_load,
            "burst": self.burst,
            "depth": self.depth,
            "results": self.results,
        }
        try:
            reply: tuple[str, bool, Any] = (command, True, await handlers[command](arg))
        except Exception:
            reply = (command, False, traceback.format_exc())
        self.conn.send(reply)

    async def start(self, _: Any) -> float:
        """Every store's sync starts now, as a fleet switched on at once."""
        import structlog

        from sync.heartbeat import run_heartbeat

        now = time.time()
        for s in self.stores:
            context = contextvars.copy_context()  # the store's id on its log lines
            context.run(structlog.contextvars.bind_contextvars, store=s.spec.store_id)
            s.started_at = now
            s.tasks += [
                asyncio.create_task(s.forwarder.run(), context=context),
                asyncio.create_task(s.refresher.run(), context=context),
                asyncio.create_task(
                    run_heartbeat(s.store, s.client, interval_s=s.heartbeat_s), context=context
                ),
            ]
        self._watch = asyncio.create_task(self._watch_bootstrap())
        return now

    async def _watch_bootstrap(self) -> None:
        waiting = list(self.stores)
        while waiting:
            await asyncio.sleep(0.05)
            for s in waiting:
                if s.refresher.stats.last_success is not None:
                    s.bootstrapped_at = time.time()
            waiting = [s for s in waiting if s.bootstrapped_at is None]

    async def status(self, _: Any) -> dict[str, Any]:
        seen: Counter[str] = Counter()
        for s in self.stores:
            seen.update(getattr(s.store, "rules_seen", {}).keys())
        return {
            "bootstrapped": sum(1 for s in self.stores if s.bootstrapped_at is not None),
            "posted": sum(len(s.post_ok) for s in self.stores),
            "refused": sum(sum(s.refused.values()) for s in self.stores),
            "seen": dict(seen),
        }

    async def load(self, arg: dict[str, Any]) -> int:
        date = dt.date.fromisoformat(arg["business_date"])
        for s in self.stores:
            rng = random.Random(f"{self.options.seed}-{s.spec.store_id}")
            s.registers = asyncio.create_task(self._registers(s, date, rng))
        return len(self.stores)

    async def _registers(self, s: SimStore, date: dt.date, rng: random.Random) -> None:
        """The store's registers: checks due as a Poisson process of `rate` per second, each
        posted on its own task (a slow answer never delays the next register's check)."""
        loop = asyncio.get_running_loop()
        rate = self.options.rate
        due = loop.time() + rng.expovariate(rate)
        while True:
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            self.lags.append((time.time(), loop.time() - due))
            s.checks += 1
            task = asyncio.create_task(self._post(s, self._request(s, date, rng), due))
            s.in_flight.add(task)
            task.add_done_callback(s.in_flight.discard)
            due += rng.expovariate(rate)

    def _request(self, s: SimStore, date: dt.date, rng: random.Random) -> PostRequest:
        from gateway.domain.models import Item, PostRequest

        member = None
        if rng.random() < self.options.member_share:
            member = f"SYN{rng.randint(1, self.options.members):07d}"
        items = tuple(
            Item(1000 * rng.randint(1, 2), 1000 + rng.randint(1, 50), rng.randint(150, 2500))
            for _ in range(rng.randint(1, 3))
        )
        total = sum(item.total for item in items)
        wsid = 1 + s.checks % self.options.registers
        return PostRequest(wsid, 1, s.checks, date, member, total, total, items, ())

    async def _post(self, s: SimStore, request: PostRequest, due: float) -> None:
        from gateway.domain.models import PostOk

        reply = await s.service.post_check(request)
        if isinstance(reply, PostOk):
            s.post_ok.append((request.wsid, request.check, time.time()))
            s.post_s.append(asyncio.get_running_loop().time() - due)
        else:
            s.refused[reply.reason.value] += 1

    async def stop_load(self, _: Any) -> int:
        for s in self.stores:
            if s.registers is not None:
                s.registers.cancel()
        await asyncio.gather(*(s.registers for s in self.stores if s.registers is not None),
                             return_exceptions=True)  # fmt: skip
        posts = [task for s in self.stores for task in s.in_flight]
        if posts:
            await asyncio.wait(posts, timeout=60)
        return sum(s.checks for s in self.stores)

    async def burst(self, arg: dict[str, Any]) -> int:
        """`count` check.posted events appended to every store's outbox at once."""
        from gateway.domain.ids import new_ulid
        from gateway.domain.models import OutboxEvent
        from gateway.store.store import utc_stamp

        count, date = int(arg["count"]), str(arg["business_date"])
        stamp = utc_stamp(dt.datetime.now(dt.UTC))

        def payload(s: SimStore, n: int) -> dict[str, Any]:
            return common.anonymous_check(s.spec.store_id, date, BURST_WSID, n)

        async def append(s: SimStore) -> None:
            events = [
                OutboxEvent(new_ulid(), "check.posted", stamp, payload(s, s.burst + n + 1))
                for n in range(count)
            ]
            await s.store.append_events(events)
            s.burst += count

        await asyncio.gather(*(append(s) for s in self.stores))
        return count * len(self.stores)

    async def depth(self, _: Any) -> dict[str, int]:
        waiting = dead = 0
        for s in self.stores:
            waiting += (await s.store.outbox_depth())[0]
            dead += int(await s.store.scalar("SELECT COUNT(*) FROM dead_letters") or 0)
        return {"waiting": waiting, "dead_letters": dead}

    async def results(self, _: Any) -> dict[str, Any]:
        stores = []
        now = dt.datetime.now(dt.UTC)
        for s in self.stores:
            path = Path(s.spec.directory) / "gateway.db"
            reader = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                ids = reader.execute("SELECT event_id, type FROM fleet_outbox_ids").fetchall()
                posted = reader.execute("SELECT COUNT(*) FROM posted_checks").fetchone()[0]
                members = reader.execute("SELECT COUNT(*) FROM members").fetchone()[0]
            finally:
                reader.close()
            active = s.store.active_rules(now)
            stats = s.refresher.stats
            stores.append(
                {
                    "store_id": s.spec.store_id,
                    "central": s.spec.central,
                    "started_at": s.started_at,
                    "bootstrapped_at": s.bootstrapped_at,
                    "jitter_s": stats.bootstrap_jitter_s,
                    "snapshot_bytes": stats.snapshot_bytes,
                    "snapshots_applied": stats.snapshots_applied,
                    "snapshot_missing": stats.snapshot_missing,
                    "snapshot_resumed": stats.snapshot_resumed,
                    "members_cached": members,
                    "refresh_failures": stats.failures,
                    "rules_seen": dict(getattr(s.store, "rules_seen", {})),
                    "active_rules": active[0] if active else None,
                    "ids": ids,
                    "posted_checks": posted,
                    "burst": s.burst,
                    "post_ok": s.post_ok,
                    "post_s": s.post_s,
                    "refused": dict(s.refused),
                    "calls": dict(getattr(s.client, "calls", {})),
                    "failures": dict(getattr(s.client, "failures", {})),
                    "failed_at": list(getattr(s.client, "failed_at", [])),
                    "forwarder": dataclasses.asdict(s.forwarder.stats),
                    "outages": s.client.outages,
                }
            )
        return {"stores": stores, "lags": self.lags}

    async def close(self) -> dict[str, Any]:
        """Stop every task, then close the clients and the stores (the writer commits what is
        queued)."""
        tasks = [t for s in self.stores for t in (*s.tasks, s.registers) if t is not None]
        tasks += [t for s in self.stores for t in s.in_flight]
        if self._watch is not None:
            tasks.append(self._watch)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        closed = 0
        for s in self.stores:
            with contextlib.suppress(Exception):
                await s.client.aclose()
            with contextlib.suppress(Exception):
                await s.store.close()
                closed += 1
        return {"closed": closed}


def fleet_worker(conn: multiprocessing.connection.Connection, plan: WorkerPlan) -> None:
    """A worker process's body (spawned): its stores in one event loop."""
    helpers.child_setup()
    from gateway.logging import configure_logging

    # Warnings and errors of every store (with its id) in a file of this worker's; the lines
    # `central_unreachable` and `central_recovered` are counted at the end.
    configure_logging("warning", "json", file=Path(plan.log_file))
    asyncio.run(Worker(conn, plan).main())
