"""The fleet simulator: N stores, each running the gateway's own store, forwarder, refresher and
heartbeat on its own SQLite file, against two reference central processes on one PostgreSQL
(DESIGN.md section 7: every event once; central's pause seen by every store within 2 s, p99).

    python -m bench.fleet --quick                       # 50 stores, 30 s of load
    python -m bench.fleet --stores 500 --rate 0.1       # 500 stores, 0.1 checks/s each
    python -m bench.fleet --stores 500 --json fleet.json

What runs:

- **PostgreSQL** of our own (Debian's binaries, a temporary cluster, fsync on), and two
  `python -m sync.central` processes on it, A and B, on fixed ports; central A makes
  `--members` synthetic members (`SYN0000001`..) and builds the snapshot file before the stores
  start. Half the stores talk to A, half to B (store i to A when i is even).
- **Stores**, spread over `--processes` worker processes (one asyncio loop each). A store is the
  gateway's own classes wired as `gateway/daemon.py` wires them: `Store.open` on its own
  SQLite file in its own directory, `Gateway` (the service), `CentralClient`, `Forwarder`,
  `Refresher` (bootstrap from the snapshot file after a random jitter, then long polls) and the
  heartbeat. No SIM listener: the registers are simulated inside the process and call
  `Gateway.post_check` with a `PostRequest`, so each check is settled and recorded, and its
  `check.posted` event lands in the outbox, as at a real register. Arrivals are a Poisson process
  of `--rate` checks/s per store over `--registers` workstations; `--member-share` of them carry
  one of the members (which makes central publish that member's new balance to every store).
  The default share is 0: on 2 vCPUs, 500 simulated stores applying every balance saturate the
  machine before central (docs/performance.md, "Fleet").
- **The pause**: at 25 % of `--duration`, in steady load, a rules document pausing the lottery
  is published through central B's admin route (`PUT /_admin/rules`); each store notes when its
  refresher committed that document (a subclass of `Store` whose `apply_changes` notes the rules
  versions it wrote). Reach = that moment minus the moment the PUT was sent; its p99 over the
  stores is the figure of DESIGN.md section 7.
- **Faults, mid-load**: at 40 % central A is killed with SIGKILL and started again 2 s later on
  the same port; at 65 % PostgreSQL is restarted (fast shutdown, start). 5 s after each fault is
  over, another rules document is published (the lottery resumed, then paused again): its reach
  shows how the stores' long polls recover from that fault. A store that never committed one of
  them (a later document replaced central's rules before it asked) counts with the next one.
- **Ingest burst** (`--burst N`, after the load): N `check.posted` events appended to every
  store's outbox at once (the store's own `append_events`); the fleet's forwarders drain them
  into central together: central's ingest rate and CPU per event under full load.
- **Exactly once**: every store's database has a trigger (added by the simulator) that copies
  each event id entering its outbox into a table of its own, in the same transaction. After the
  outboxes are drained, those ids are compared with central's `events` table (SQL on
  PostgreSQL): every id there exactly once, accepted, under its store, and nothing else; and
  every check key at central carried by one event only.

Times that cross processes are wall-clock (`time.time()`, central's stamps): one clock on one
machine. CPU is read from /proc for central A and B, PostgreSQL (postmaster and backends) and
the worker processes. Everything is bounded by timeouts, and every process and directory it
made is removed at the end, whatever happened.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import dataclasses
import datetime as dt
import functools
import json
import math
import multiprocessing
import multiprocessing.connection
import random
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if __package__ in (None, ""):  # run as `python bench/fleet.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common as common
from bench import _helpers as helpers
from bench import _postgres as postgres

if TYPE_CHECKING:
    from gateway.domain.models import PostRequest
    from gateway.service import Gateway
    from gateway.store.store import ChangePage, EventResult, QueuedEvent, Store
    from sync.client import CentralClient, ChangesPage
    from sync.forwarder import Forwarder
    from sync.refresher import Refresher

PAUSE_TARGET_S = 2.0  # DESIGN.md section 7: central's pause seen by every store within 2 s (p99)
PROGRAM = "lottery"
KILL_DOWN_S = 2.0  # central A stays dead this long before it is started again
PUBLISH_AFTER_FAULT_S = 5.0
# The registers' timers waking this late (p99) means the worker processes had no CPU to spare:
# every figure then measures the machine running the simulated stores, not central.
SATURATED_LAG_S = 0.1  # a rules document is published this long after a fault is over
# The rules documents published during the load: the lottery paused in steady load (the target),
# resumed after central A's SIGKILL, paused again after PostgreSQL's restart.
VERSIONS = ("fleet-pause", "fleet-resume-after-kill", "fleet-pause-after-pg-restart")
STORE_PREFIX = "F"
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


QUICK = {"stores": 50, "duration_s": 30.0, "members": 10_000, "jitter_s": 5.0, "burst": 200}
FULL = {"stores": 500, "duration_s": 180.0, "members": 10_000, "jitter_s": 30.0, "burst": 100}


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


# ---- the worker process: stores, registers, sync ------------------------------------------------


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


# ---- the parent: the fleet of workers ----------------------------------------------------------


class Fleet:
    """The worker processes, and commands sent to all of them at once."""

    def __init__(self, plans: Sequence[WorkerPlan], ready_s: float) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.procs: list[Any] = []
        self.conns: list[multiprocessing.connection.Connection] = []
        self.closed = False
        for plan in plans:
            mine, theirs = ctx.Pipe(duplex=True)
            proc = ctx.Process(target=fleet_worker, args=(theirs, plan), daemon=True)
            proc.start()
            theirs.close()
            self.procs.append(proc)
            self.conns.append(mine)
        self.ready = self._collect("ready", ready_s)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid is not None]

    def _collect(self, command: str, timeout_s: float) -> list[Any]:
        deadline = time.monotonic() + timeout_s
        answers = []
        for index, conn in enumerate(self.conns):
            if not conn.poll(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"worker {index}: no answer to {command} in {timeout_s:.0f} s")
            try:
                name, ok, value = conn.recv()
            except EOFError:
                raise RuntimeError(f"worker {index} died ({command})") from None
            if name != command:
                raise RuntimeError(f"worker {index} answered {name} to {command}")
            if not ok:
                raise RuntimeError(f"worker {index} failed at {command}:\n{value}")
            answers.append(value)
        return answers

    def ask(self, command: str, arg: Any = None, timeout_s: float = 60.0) -> list[Any]:
        for conn in self.conns:
            conn.send((command, arg))
        return self._collect(command, timeout_s)

    def close(self, timeout_s: float = 60.0) -> None:
        """Ask every worker to stop (they close their stores), then make sure they have."""
        if self.closed:
            return
        self.closed = True
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.send(("close", None))
        deadline = time.monotonic() + timeout_s
        for conn, proc in zip(self.conns, self.procs, strict=True):
            with contextlib.suppress(OSError, EOFError):
                if conn.poll(max(0.0, deadline - time.monotonic())):
                    conn.recv()
            proc.join(max(0.1, deadline - time.monotonic()))
            helpers.stop_process(proc)
            conn.close()


class IngestSampler:
    """central's events table counted every `every_s` on a connection of its own (connecting
    again while PostgreSQL restarts): the ingest timeline."""

    def __init__(self, url: str, every_s: float = 0.5) -> None:
        self.url = url
        self.every_s = every_s
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psycopg

        conn: psycopg.Connection[Any] | None = None
        while not self._stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.url, autocommit=True, connect_timeout=2)
                row = conn.execute("SELECT count(*) FROM events").fetchone()
                self.samples.append((time.time(), int(row[0]) if row else 0))
            except psycopg.Error:
                if conn is not None:
                    conn.close()
                conn = None
            self._stop.wait(self.every_s)
        if conn is not None:
            conn.close()

    def count_at(self, moment: float) -> int:
        """Events stored by `moment` (the last sample at or before it)."""
        before = [count for when, count in self.samples if when <= moment]
        return before[-1] if before else 0

    def latest(self) -> int:
        return self.samples[-1][1] if self.samples else 0

    def peak_rate(self, start: float, end: float, window_s: float = 2.0) -> float:
        """The highest rate over `window_s` between start and end (events/s)."""
        inside = [(t, n) for t, n in self.samples if start <= t <= end]
        best = 0.0
        for i, (t0, n0) in enumerate(inside):
            for t1, n1 in inside[i + 1 :]:
                if t1 - t0 >= window_s:
                    best = max(best, (n1 - n0) / (t1 - t0))
                    break
        return best

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


@dataclass
class Meter:
    """CPU seconds of central (A and B), PostgreSQL, the workers and the machine, from here."""

    central: Callable[[], float]
    postgres: Callable[[], float]
    workers: Callable[[], float]
    wall: float = 0.0
    start: dict[str, float] = field(default_factory=dict)

    def _now(self) -> dict[str, float]:
        return {
            "central": self.central(),
            "postgres": self.postgres(),
            "workers": self.workers(),
            "machine": common.machine_busy_seconds(),
            "parent": time.process_time(),
        }

    def begin(self) -> Meter:
        self.start, self.wall = self._now(), time.time()
        return self

    def read(self) -> dict[str, float]:
        now = self._now()
        used = {k: now[k] - self.start[k] for k in now}
        used["others"] = used.pop("machine") - sum(used.values())  # other people's work
        used["seconds"] = time.time() - self.wall
        return used


def cores(used: dict[str, float], key: str) -> float:
    return used[key] / used["seconds"] if used.get("seconds") else float("nan")


def wait_until(
    condition: Callable[[], bool], timeout_s: float, every_s: float = 0.5
) -> tuple[bool, float]:
    """Poll `condition` until true or `timeout_s`; (true?, seconds waited)."""
    started = time.monotonic()
    while True:
        if condition():
            return True, time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            return False, time.monotonic() - started
        time.sleep(every_s)


def sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.time()))


def publish_rules(admin_url: str, version: str, paused: bool) -> tuple[float, float]:
    """A rules document pausing (or resuming) the lottery, through central's admin route:
    (the wall time it was sent, the seconds central took to answer)."""
    import httpx

    document = {"version": version, "programs": {PROGRAM: {"paused": paused}}}
    sent = time.time()
    response = httpx.put(f"{admin_url}/_admin/rules", json=document, timeout=30)
    response.raise_for_status()
    return sent, time.time() - sent


def paged_bootstrap(url: str) -> dict[str, float]:
    """What one store's full snapshot costs without the snapshot file: `changes` paged from
    an empty cursor (pages of 1000, as the refresher asks), bytes on the wire and seconds."""
    import httpx

    size = pages = records = 0
    started = time.perf_counter()
    with httpx.Client(base_url=url, headers={"X-Gateway-Id": "fleet-probe"}, timeout=60) as http:
        cursor, more = "", True
        while more:
            response = http.get(
                "/v1/stores/PROBE/changes", params={"cursor": cursor, "limit": 1000}
            )
            response.raise_for_status()
            size += len(response.content)
            page = response.json()
            cursor, more = page["next_cursor"], bool(page["has_more"])
            records += len(page["changes"])
            pages += 1
    return {
        "bytes": size,
        "pages": pages,
        "records": records,
        "seconds": time.perf_counter() - started,
    }


def stamp_seconds(text: str) -> float:
    """Central's RFC 3339 stamp as a POSIX time."""
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def spread(values: Sequence[float]) -> dict[str, float]:
    """count, p50, p99, max of durations in seconds (nearest rank)."""
    ordered = sorted(values)
    if not ordered:
        return {"count": 0, "p50": math.nan, "p99": math.nan, "max": math.nan}
    return {
        "count": len(ordered),
        "p50": common.percentile(ordered, 0.5),
        "p99": common.percentile(ordered, 0.99),
        "max": ordered[-1],
    }


# ---- the run ------------------------------------------------------------------------------------


def plans(options: Options, central_urls: dict[str, str], root: Path) -> list[WorkerPlan]:
    specs = [
        StoreSpec(
            i,
            f"{STORE_PREFIX}{i:05d}",
            "A" if i % 2 == 0 else "B",
            central_urls["A" if i % 2 == 0 else "B"],
            str(root / "stores" / f"{STORE_PREFIX}{i:05d}"),
        )
        for i in range(options.stores)
    ]
    return [
        WorkerPlan(w, tuple(specs[w :: options.processes]), options, str(root / f"worker-{w}.log"))
        for w in range(options.processes)
    ]


@dataclass
class Timeline:
    """What happened when (wall-clock seconds), for the report and the disruption windows."""

    marks: dict[str, float] = field(default_factory=dict)

    def mark(self, name: str, say: bool = True) -> float:
        now = self.marks[name] = time.time()
        if say and "load_start" in self.marks:
            print(f"  {now - self.marks['load_start']:6.1f} s  {name}", flush=True)
        return now


def run(options: Options) -> dict[str, Any]:
    result = common.new_result("fleet", options=dataclasses.asdict(options))
    print(
        f"fleet: {options.stores} stores in {options.processes} processes, {options.rate:g}"
        f" checks/s per store ({options.rate * options.stores:g}/s in all,"
        f" {options.member_share:.0%} with a member), {options.duration_s:g} s of load,"
        f" {options.members:,} members,"
        f" jitter {options.jitter_s:g} s, burst {options.burst} events per store",
        flush=True,
    )
    with contextlib.ExitStack() as stack:
        root = Path(tempfile.mkdtemp(prefix="fleet-", dir="/tmp"))
        stack.callback(shutil.rmtree, root, ignore_errors=True)
        # A directory of its own: the server may run as `nobody`, who cannot enter `root`.
        pg = postgres.PostgresCluster(Path(tempfile.mkdtemp(prefix="fleet-pg-", dir="/tmp")))
        stack.callback(pg.close)
        pg.start()
        database = pg.create_database("central")
        workers = ["--db-workers", str(options.db_workers)]
        central = {
            "A": postgres.CentralCommand(
                "A", database, postgres.free_port(), root / "central-A.log", *workers,
                "--synthetic-members", str(options.members),
            ),
            "B": postgres.CentralCommand(
                "B", database, postgres.free_port(), root / "central-B.log", *workers
            ),
        }  # fmt: skip
        for c in central.values():
            stack.callback(c.stop)
        setup: dict[str, Any] = {"central_A_start_s": central["A"].start()}
        setup["central_B_start_s"] = central["B"].start()
        import httpx

        started = time.perf_counter()
        answer = httpx.post(f"{central['A'].admin_url}/_admin/snapshot", timeout=300)
        answer.raise_for_status()
        setup["snapshot"] = {**answer.json(), "build_s": time.perf_counter() - started}
        setup["paged"] = paged_bootstrap(central["B"].url)
        result["setup"] = setup
        print(
            f"central: PostgreSQL {pg.bin_dir.parent.name}, A and B up; snapshot"
            f" {setup['snapshot']['records']:,} records, {setup['snapshot']['size']:,} bytes"
            f" (built in {setup['snapshot']['build_s']:.2f} s); the same paged:"
            f" {setup['paged']['bytes']:,} bytes in {setup['paged']['pages']} pages",
            flush=True,
        )

        sampler = IngestSampler(database)
        stack.callback(sampler.stop)
        ready_s = 60.0 + options.stores * 2.0
        started = time.perf_counter()
        fleet = Fleet(plans(options, {k: c.url for k, c in central.items()}, root), ready_s)
        stack.callback(fleet.close)
        setup["stores_open_s"] = time.perf_counter() - started
        print(f"stores: {options.stores} opened in {setup['stores_open_s']:.1f} s", flush=True)

        def central_cpu() -> float:
            return sum(c.cpu_seconds() for c in central.values())

        def workers_cpu() -> float:
            return sum(postgres.process_tree_seconds(pid) for pid in fleet.pids)

        def meter() -> Meter:
            return Meter(central_cpu, pg.cpu_seconds, workers_cpu).begin()

        def status() -> dict[str, Any]:
            answers = fleet.ask("status", timeout_s=60)
            seen: Counter[str] = Counter()
            for a in answers:
                seen.update(a["seen"])
            return {
                "bootstrapped": sum(a["bootstrapped"] for a in answers),
                "posted": sum(a["posted"] for a in answers),
                "refused": sum(a["refused"] for a in answers),
                "seen": seen,
            }

        # ---- bootstrap: every store at once, each after its own jitter ----
        boot_meter = meter()
        boot_start = min(fleet.ask("start"))
        boot_timeout = options.jitter_s + 120.0 + options.stores * options.members * 60e-6
        done, _ = wait_until(
            lambda: status()["bootstrapped"] >= options.stores, boot_timeout, every_s=1.0
        )
        result["bootstrap_cpu"] = boot_meter.read()
        if not done:
            raise RuntimeError(f"the fleet did not bootstrap within {boot_timeout:.0f} s")
        print(f"bootstrap: done in {time.time() - boot_start:.1f} s", flush=True)

        # ---- the load, with the faults and the pause ----
        timeline = Timeline()
        date = dt.datetime.now(dt.UTC).date().isoformat()
        d = options.duration_s
        load_start = timeline.mark("load_start")
        fleet.ask("load", {"business_date": date})
        print("load:", flush=True)
        warm = min(10.0, 0.1 * d)
        sleep_until(load_start + warm)
        steady = meter()
        steady_from = timeline.mark("steady_start")
        whole = meter()  # from here to the end of the load, faults included
        admin_s: dict[str, float] = {}  # how long central's admin route took per document

        def publish(version: str, paused: bool, via: str) -> None:
            sent, admin_s[version] = publish_rules(central[via].admin_url, version, paused)
            timeline.marks[f"{version}_sent"] = sent
            print(f"  {sent - load_start:6.1f} s  {version} published (through {via})", flush=True)

        # The pause measured against the target: steady load, no fault for a while.
        sleep_until(load_start + 0.25 * d)
        result["steady_cpu"] = steady.read()
        steady_to = timeline.mark("steady_end", say=False)
        result["connections"] = connections(central, database)
        pause_meter = meter()
        publish(VERSIONS[0], True, "B")
        # What it costs to bring one change to every store: CPU until all have it (<= 15 s).
        wait_until(lambda: status()["seen"][VERSIONS[0]] >= options.stores, 15.0, every_s=0.2)
        result["pause_cpu"] = pause_meter.read()
        sleep_until(load_start + 0.4 * d)
        timeline.mark("central_A_kill")
        central["A"].kill()
        time.sleep(KILL_DOWN_S)
        timeline.mark("central_A_restart")
        central["A"].start()
        timeline.mark("central_A_ready")
        sleep_until(timeline.marks["central_A_ready"] + PUBLISH_AFTER_FAULT_S)
        publish(VERSIONS[1], False, "B")
        sleep_until(max(load_start + 0.65 * d, time.time() + 3.0))
        timeline.mark("postgres_stop")
        pg.restart()
        timeline.mark("postgres_ready")
        sleep_until(timeline.marks["postgres_ready"] + PUBLISH_AFTER_FAULT_S)
        publish(VERSIONS[2], True, "A")
        sleep_until(max(load_start + d, time.time() + 3.0))
        total_checks = sum(fleet.ask("stop_load", timeout_s=120))
        result["load_cpu"] = whole.read()
        timeline.mark("load_end")

        # ---- every store has the last rules document, every outbox is empty ----
        seen_all, _ = wait_until(
            lambda: status()["seen"][VERSIONS[-1]] >= options.stores, 60.0, every_s=1.0
        )
        timeline.mark("rules_seen_by_all" if seen_all else "rules_wait_over")

        def drained() -> bool:
            return sum(int(a["waiting"]) for a in fleet.ask("depth", timeout_s=120)) == 0

        ok, _ = wait_until(drained, 180.0, every_s=1.0)
        if not ok:
            print("WARNING: outboxes not empty 180 s after the load", flush=True)
        timeline.mark("drained")

        # ---- the burst: every store's outbox full at once ----
        burst: dict[str, Any] = {}
        if options.burst > 0:
            base = sampler.latest()
            burst_meter = meter()
            appended_at = time.time()
            expected = sum(fleet.ask("burst", {"count": options.burst, "business_date": date},
                                     timeout_s=300))  # fmt: skip
            appended_s = time.time() - appended_at
            reached, _ = wait_until(lambda: sampler.latest() >= base + expected, 300.0, 0.2)
            burst_end = time.time()
            burst = {
                "events": expected,
                "append_s": appended_s,
                "drain_s": burst_end - appended_at,
                "rate": expected / (burst_end - appended_at) if reached else math.nan,
                "peak_rate_1s": sampler.peak_rate(appended_at, burst_end, 1.0),
                "cpu": burst_meter.read(),
                "complete": reached,
            }
            wait_until(drained, 120.0, every_s=1.0)
            timeline.mark("burst_done")
        result["burst"] = burst

        # ---- what the stores hold, what central holds ----
        answers = fleet.ask("results", timeout_s=300)
        depth = fleet.ask("depth", timeout_s=120)
        stores = [s for a in answers for s in a["stores"]]
        lags = [lag for a in answers for lag in a["lags"]]
        central_rows = read_central(database)
        sampler.stop()
        result["timeline"] = {k: v - load_start for k, v in timeline.marks.items()}
        result["checks_due"] = total_checks
        result.update(
            analyse(
                options,
                stores,
                lags,
                central_rows,
                depth,
                timeline,
                admin_s,
            )
        )
        result["bootstrap"] = bootstrap_figures(stores, boot_start, setup)
        result["steady"] = rate_figures(result["steady_cpu"], sampler, steady_from, steady_to)
        result["load"] = rate_figures(
            result["load_cpu"], sampler, timeline.marks["steady_start"], timeline.marks["load_end"]
        )
        result["logs"] = log_counts(root)
        result["ingest_timeline"] = [(round(t - load_start, 2), n) for t, n in sampler.samples]
        fleet.close()
    report(result)
    return result


def established(port: int) -> int:
    """TCP connections established to a local port (/proc/net/tcp: state 01)."""
    count = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


def connections(central: dict[str, postgres.CentralCommand], database: str) -> dict[str, Any]:
    """In steady load: the stores' connections and waiting long polls per central process, and
    the connections PostgreSQL serves (central's, and this benchmark's sampler)."""
    import httpx
    import psycopg

    out: dict[str, Any] = {}
    for name, process in central.items():
        waiting = None
        with contextlib.suppress(httpx.HTTPError, ValueError):
            stats = httpx.get(f"{process.admin_url}/_admin/stats", timeout=30).json()
            waiting = stats.get("long_polls_waiting")
        out[name] = {"connections": established(process.port), "long_polls_waiting": waiting}
    with contextlib.suppress(psycopg.Error), psycopg.connect(database, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
        ).fetchone()
        out["postgres_client_connections"] = int(row[0]) if row else None
    return out


def read_central(database: str) -> dict[str, Any]:
    """central's events and checks, read with SQL from its PostgreSQL database."""
    import psycopg

    with psycopg.connect(database, connect_timeout=10) as conn:
        events = conn.execute("SELECT event_id, store_id, type, status FROM events").fetchall()
        checks = conn.execute(
            "SELECT store_id, wsid, check_no, applied_at, event_count FROM checks"
        ).fetchall()
    return {"events": events, "checks": checks}


def analyse(
    options: Options,
    stores: list[dict[str, Any]],
    lags: list[tuple[float, float]],
    central: dict[str, Any],
    depth: list[dict[str, int]],
    timeline: Timeline,
    admin_answer_s: dict[str, float],
) -> dict[str, Any]:
    marks = timeline.marks
    # -- exactly once --
    made: dict[str, tuple[str, str]] = {}  # event id -> (store, type)
    doubled_at_stores = 0
    for s in stores:
        for event_id, kind in s["ids"]:
            if event_id.upper() in made:
                doubled_at_stores += 1
            made[event_id.upper()] = (s["store_id"], kind)
    at_central: Counter[str] = Counter()
    wrong_store = not_accepted = 0
    for event_id, store_id, _kind, status in central["events"]:
        at_central[event_id] += 1
        mine = made.get(event_id)
        if mine is not None and mine[0] != store_id:
            wrong_store += 1
        if status != "accepted":
            not_accepted += 1
    missing = [e for e in made if e not in at_central]
    extra = [e for e in at_central if e not in made]
    checks_by_store: Counter[str] = Counter(row[0] for row in central["checks"])
    multi_event_checks = sum(1 for row in central["checks"] if int(row[4]) != 1)
    count_mismatch = sum(
        1
        for s in stores
        if checks_by_store[s["store_id"]] != s["posted_checks"] + s["burst"]
        or s["posted_checks"] != len(s["post_ok"])
    )
    refused = sum(sum(s["refused"].values()) for s in stores)
    once = {
        "store_event_ids": len(made),
        "central_events": len(central["events"]),
        "missing_at_central": len(missing),
        "extra_at_central": len(extra),
        "not_accepted": not_accepted,
        "wrong_store": wrong_store,
        "ids_twice_at_stores": doubled_at_stores,
        "check_keys_with_more_than_one_event": multi_event_checks,
        "stores_whose_check_counts_differ": count_mismatch,
        "posted_checks": sum(s["posted_checks"] for s in stores),
        "burst_events": sum(s["burst"] for s in stores),
        "refused_posts": refused,
        "left_in_outboxes": sum(d["waiting"] for d in depth),
        "dead_letters": sum(d["dead_letters"] for d in depth),
        "examples_missing": missing[:5],
        "examples_extra": extra[:5],
    }
    once["met"] = (
        len(made) > 0
        and not missing
        and not extra
        and not (not_accepted or wrong_store or doubled_at_stores or multi_event_checks)
        and not count_mismatch
        and not once["left_in_outboxes"]
        and not once["dead_letters"]
    )

    # -- delivery: POST_OK -> central's stamp on the check --
    applied = {(r[0], int(r[1]), int(r[2])): stamp_seconds(r[3]) for r in central["checks"]}
    # Faults, and the rules documents' publication (500 stores waking at once on 2 vCPUs),
    # with the 10 s after each.
    windows = [
        (marks["central_A_kill"], marks["central_A_ready"] + 10.0),
        (marks["postgres_stop"], marks["postgres_ready"] + 10.0),
        *((marks[f"{v}_sent"], marks[f"{v}_sent"] + 10.0) for v in VERSIONS),
    ]
    steady_lags = [
        lag for at, lag in lags if marks["steady_start"] <= at < marks[f"{VERSIONS[0]}_sent"]
    ]
    every, calm = [], []
    for s in stores:
        for wsid, check, ok_at in s["post_ok"]:
            at = applied.get((s["store_id"], wsid, check))
            if at is None:
                continue
            every.append(at - ok_at)
            if not any(a <= ok_at <= b for a, b in windows):
                calm.append(at - ok_at)
    post_s = [v for s in stores for v in s["post_s"]]

    # -- the rules documents: reach per store. A store that missed one (central's rules are one
    # record: a later document replaces it before a late store asks) saw it with the next one.
    def reach(k: int) -> dict[str, Any]:
        sent = marks[f"{VERSIONS[k]}_sent"]
        figures: dict[str, Any] = {"version": VERSIONS[k]}
        for name, chosen in (("all", stores), ("A", None), ("B", None)):
            group = chosen if chosen is not None else [s for s in stores if s["central"] == name]
            times = []
            for s in group:
                seen = [s["rules_seen"][v] for v in VERSIONS[k:] if v in s["rules_seen"]]
                if seen:
                    times.append(min(seen) - sent)
            part: dict[str, Any] = spread(times)
            part["stores"] = len(group)
            part["not_seen"] = len(group) - len(times)
            part["over_target"] = sum(1 for t in times if t > PAUSE_TARGET_S)
            part["over_10s"] = sum(1 for t in times if t > 10.0)
            figures[name] = part
        figures["admin_answer_s"] = admin_answer_s[VERSIONS[k]]
        return figures

    pause = reach(0)
    pause["met"] = pause["all"]["not_seen"] == 0 and pause["all"]["p99"] <= PAUSE_TARGET_S
    last_rules = Counter(str(s["active_rules"]) for s in stores)

    calls: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    for s in stores:
        calls.update(s["calls"])
        failures.update(s["failures"])
    # Failed requests by when they failed: before the load, around each fault (to 15 s after
    # it), or elsewhere.
    phases = {
        "before the load (start, bootstrap)": (0.0, marks["load_start"]),
        "central A killed": (marks["central_A_kill"], marks["central_A_ready"] + 15.0),
        "PostgreSQL restarted": (marks["postgres_stop"], marks["postgres_ready"] + 15.0),
    }
    failed_when: dict[str, Counter[str]] = {name: Counter() for name in [*phases, "elsewhere"]}
    for s in stores:
        for at, what in s["failed_at"]:
            phase = next((n for n, (a, b) in phases.items() if a <= at <= b), "elsewhere")
            failed_when[phase][what] += 1
    return {
        "exactly_once": once,
        "delivery": {"all": spread(every), "outside_faults": spread(calm), "matched": len(every)},
        "post_check": spread(post_s),
        "register_timer_lag": spread([lag for _, lag in lags]),
        "register_timer_lag_steady": spread(steady_lags),
        "saturated": bool(steady_lags) and spread(steady_lags)["p99"] > SATURATED_LAG_S,
        "pause": pause,
        "after_central_kill": reach(1),
        "after_postgres_restart": reach(2),
        "active_rules_at_end": dict(last_rules),
        "requests": {
            "calls": dict(calls),
            "failures": dict(failures),
            "failures_by_phase": {k: dict(v) for k, v in failed_when.items()},
        },
        "outages_seen_by_stores": sum(s["outages"] for s in stores),
        "forwarder_failures": sum(s["forwarder"]["failures"] for s in stores),
        "refresh_failures": sum(s["refresh_failures"] for s in stores),
    }


def bootstrap_figures(
    stores: list[dict[str, Any]], started: float, setup: dict[str, Any]
) -> dict[str, Any]:
    done = [s for s in stores if s["bootstrapped_at"] is not None]
    own = [
        s["bootstrapped_at"] - s["started_at"] - (s["jitter_s"] or 0.0)
        for s in done
        if s["started_at"] is not None
    ]
    last = max((s["bootstrapped_at"] for s in done), default=math.nan)
    return {
        "stores": len(stores),
        "bootstrapped": len(done),
        "from_snapshot_file": sum(1 for s in stores if s["snapshots_applied"]),
        "paged_instead": sum(1 for s in stores if s["snapshot_missing"]),
        "resumed_downloads": sum(s["snapshot_resumed"] for s in stores),
        "bytes": sum(s["snapshot_bytes"] for s in stores),
        "fleet_s": last - started,
        "per_store_s": spread(own),
        "members_cached_min": min((s["members_cached"] for s in stores), default=0),
        "paged_bytes_per_store": setup["paged"]["bytes"],
        "snapshot_bytes_per_store": setup["snapshot"]["size"],
    }


def rate_figures(
    used: dict[str, float], sampler: IngestSampler, start: float, end: float
) -> dict[str, Any]:
    events = sampler.count_at(end) - sampler.count_at(start)
    seconds = used["seconds"]
    per_event = {k: used[k] / events * 1e6 if events else math.nan for k in used if k != "seconds"}
    return {
        "events": events,
        "seconds": seconds,
        "events_per_s": events / seconds if seconds else math.nan,
        "cpu_us_per_event": per_event,
        "cores": {k: cores(used, k) for k in used if k != "seconds"},
    }


def log_counts(root: Path) -> dict[str, int]:
    """How often each warning or error was logged by the stores (their workers' log files)."""
    counts: Counter[str] = Counter()
    for log in root.glob("worker-*.log*"):
        with contextlib.suppress(OSError):
            for line in log.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    why = str(event.get("error") or event.get("reason") or "")[:60]
                    counts[f"{event.get('level')}:{event.get('event')} {why}".strip()] += 1
    return dict(counts.most_common(20))


def report(result: dict[str, Any]) -> None:
    o = result["options"]
    boot = result["bootstrap"]
    print()
    print(f"bootstrap ({boot['stores']} stores, jitter 0..{o['jitter_s']:g} s):")
    print(
        f"  {boot['bootstrapped']} bootstrapped ({boot['from_snapshot_file']} from the snapshot"
        f" file, {boot['paged_instead']} paged), in {boot['fleet_s']:.1f} s for the fleet;"
        f" per store (without its jitter) p50 {boot['per_store_s']['p50']:.2f} s,"
        f" p99 {boot['per_store_s']['p99']:.2f} s"
    )
    print(
        f"  bytes: {boot['bytes']:,} in all = {boot['snapshot_bytes_per_store']:,} per store"
        f" (snapshot file); paging changes instead: {boot['paged_bytes_per_store']:,} per store,"
        f" {boot['paged_bytes_per_store'] * boot['stores']:,} for the fleet"
    )
    bc = result["bootstrap_cpu"]
    print(
        f"  CPU: workers {bc['workers']:.1f} s ({bc['workers'] / max(1, boot['stores']):.2f} s"
        f" per store), central {bc['central']:.1f} s, PostgreSQL {bc['postgres']:.1f} s"
    )
    print("\ningest (central A + B on one PostgreSQL):")
    rows = []
    for name, figures in (
        ("steady load", result["steady"]),
        ("whole load, faults", result["load"]),
    ):
        per = figures["cpu_us_per_event"]
        rows.append(
            [
                name,
                f"{figures['events']:,}",
                f"{figures['events_per_s']:,.1f}/s",
                common.us(per["central"]),
                common.us(per["postgres"]),
                common.us(per["workers"]),
                f"{figures['cores']['others']:.2f}",
            ]
        )
    burst = result["burst"]
    if burst:
        used = burst["cpu"]
        n = burst["events"]
        rows.append(
            [
                "burst (outboxes full)",
                f"{n:,}",
                f"{burst['rate']:,.0f}/s (peak {burst['peak_rate_1s']:,.0f})",
                common.us(used["central"] / n * 1e6),
                common.us(used["postgres"] / n * 1e6),
                common.us(used["workers"] / n * 1e6),
                f"{cores(used, 'others'):.2f}",
            ]
        )
    common.print_table(
        "",
        ["", "events", "rate", "central CPU/event", "PostgreSQL", "stores", "others (cores)"],
        rows,
    )
    conn = result["connections"]
    print(
        "  in steady load: "
        + ", ".join(
            f"central {k}: {conn[k]['connections']} store connections,"
            f" {conn[k]['long_polls_waiting']} long polls waiting"
            for k in ("A", "B")
        )
        + f"; PostgreSQL client connections: {conn.get('postgres_client_connections')}"
        " (central's, this benchmark's two included)"
    )
    req = result["requests"]
    print(f"  requests from the stores: {req['calls']}")
    for phase, failed in req["failures_by_phase"].items():
        print(f"  failed, {phase}: {failed or 'none'}")
    d = result["delivery"]
    print("\ndelivery, POST_OK -> central's stamp on the check:")
    calm = "outside faults and publications"
    for key, label in (("all", "every check"), ("outside_faults", calm)):
        f = d[key]
        print(
            f"  {label}: {f['count']:,} checks, p50 {f['p50'] * 1000:,.0f} ms,"
            f" p99 {f['p99'] * 1000:,.0f} ms, max {f['max'] * 1000:,.0f} ms"
        )
    ps, lag = result["post_check"], result["register_timer_lag"]
    steady_lag = result["register_timer_lag_steady"]
    print(
        f"  post_check at the store (due -> POST_OK): p50 {ps['p50'] * 1000:.1f} ms,"
        f" p99 {ps['p99'] * 1000:.1f} ms; register timers late p99 {lag['p99'] * 1000:.1f} ms"
        f" ({steady_lag['p99'] * 1000:.1f} ms in steady load)"
    )
    if result["saturated"]:
        print(
            f"  SIMULATOR SATURATED: the stores' event loops ran late in steady load (p99 over"
            f" {SATURATED_LAG_S * 1000:.0f} ms): latencies and reach times measure this machine's"
            " CPU, shared by every simulated store, not central; lower --rate"
        )
    steady = result["steady"]["cores"]
    print(
        f"  cores busy in steady load: central {steady['central']:.2f}, PostgreSQL"
        f" {steady['postgres']:.2f}, the stores {steady['workers']:.2f}, other processes"
        f" {steady['others']:.2f}"
    )
    print("\nfaults (seconds after the load started):")
    t = result["timeline"]
    print(
        f"  central A SIGKILL at {t['central_A_kill']:.1f}, back at {t['central_A_ready']:.1f};"
        f" PostgreSQL stopped at {t['postgres_stop']:.1f}, back at {t['postgres_ready']:.1f}"
    )
    print(f"  stores' log: {result['logs']}")
    print("\nrules documents (the lottery paused or resumed), reach per store (seen by A's / B's):")
    for key in ("pause", "after_central_kill", "after_postgres_restart"):
        p = result[key]
        a, b, every = p["A"], p["B"], p["all"]
        print(
            f"  {p['version']}: p50 {every['p50'] * 1000:,.0f} ms, p99 {every['p99'] * 1000:,.0f}"
            f" ms (A's {a['p99'] * 1000:,.0f}, B's {b['p99'] * 1000:,.0f}), max"
            f" {every['max'] * 1000:,.0f} ms; over 2 s: {every['over_target']} (A's"
            f" {a['over_target']}, B's {b['over_target']}), over 10 s: {every['over_10s']},"
            f" not seen {every['not_seen']};"
            f" admin answered in {p['admin_answer_s'] * 1000:.0f} ms"
        )
    pc = result["pause_cpu"]
    print(
        f"  CPU from publishing {VERSIONS[0]} until every store had it ({pc['seconds']:.1f} s):"
        f" central {pc['central']:.2f} s, PostgreSQL {pc['postgres']:.2f} s, the stores"
        f" {pc['workers']:.2f} s ({pc['workers'] / max(1, o['stores']) * 1000:.1f} ms per store),"
        f" other processes {pc['others']:.2f} s"
    )
    print(f"  rules in force at the end: {result['active_rules_at_end']}")
    once = result["exactly_once"]
    print("\nexactly once (store databases vs central's events table):")
    print(
        f"  {once['store_event_ids']:,} event ids made at the stores ({once['posted_checks']:,}"
        f" posted checks, {once['burst_events']:,} burst events); central holds"
        f" {once['central_events']:,}: missing {once['missing_at_central']},"
        f" extra {once['extra_at_central']}, not accepted {once['not_accepted']}, under another"
        f" store {once['wrong_store']}, check keys with more than one event"
        f" {once['check_keys_with_more_than_one_event']}, stores whose counts differ"
        f" {once['stores_whose_check_counts_differ']}; left in outboxes"
        f" {once['left_in_outboxes']}, dead letters {once['dead_letters']}, refused posts"
        f" {once['refused_posts']}"
    )


def rows(result: dict[str, Any]) -> list[common.Row]:
    """The DESIGN.md section 7 rows: every event once; the pause within 2 s (p99)."""
    o, once, pause = result["options"], result["exactly_once"], result["pause"]
    steady = result["steady"]
    cpu = steady["cpu_us_per_event"]
    return [
        common.Row(
            f"fleet: {o['stores']} stores into one central (PostgreSQL): every event once",
            f"{once['central_events']:,} of {once['store_event_ids']:,}, missing"
            f" {once['missing_at_central']}, extra {once['extra_at_central']}",
            cpu=f"{common.us(cpu['central'] + cpu['postgres'])} per event",
            met=bool(once["met"]),
        ),
        common.Row(
            f"fleet: central's pause seen by every store within {PAUSE_TARGET_S:g} s (p99)",
            f"p99 {pause['all']['p99']:.2f} s, not seen {pause['all']['not_seen']}",
            met=bool(pause["met"]),
        ),
    ]


def options_from(args: argparse.Namespace) -> Options:
    sizes = QUICK if args.quick else FULL
    stores = args.stores or int(sizes["stores"])
    return Options(
        stores=stores,
        rate=args.rate,
        processes=args.processes or max(2, math.ceil(stores / 100)),
        duration_s=args.duration or float(sizes["duration_s"]),
        members=args.members or int(sizes["members"]),
        member_share=args.member_share,
        registers=args.registers,
        jitter_s=args.jitter if args.jitter is not None else float(sizes["jitter_s"]),
        burst=args.burst if args.burst is not None else int(sizes["burst"]),
        db_workers=args.db_workers,
        seed=args.seed,
        quick=args.quick,
    )


def command_line() -> argparse.ArgumentParser:
    parser = common.command_line(__doc__)
    parser.add_argument("--quick", action="store_true", help="50 stores, 30 s of load")
    parser.add_argument("--stores", type=int, help="stores (default 500; 50 with --quick)")
    parser.add_argument("--rate", type=float, default=0.1, help="checks/s per store (0.1)")
    parser.add_argument("--processes", type=int, help="worker processes (default stores/100)")
    parser.add_argument("--duration", type=float, help="seconds of load (180; 30 with --quick)")
    parser.add_argument("--members", type=int, help="members at central (10,000)")
    parser.add_argument(
        "--member-share",
        type=float,
        default=0.0,
        help="share of checks with a member (0): each makes central publish that member's"
        " balance to every store",
    )
    parser.add_argument("--registers", type=int, default=4, help="workstations per store (4)")
    parser.add_argument("--jitter", type=float, help="bootstrap jitter, s (30; 5 with --quick)")
    parser.add_argument("--burst", type=int, help="events per store in the final burst (100)")
    parser.add_argument("--db-workers", type=int, default=4, help="connections per central (4)")
    parser.add_argument("--seed", type=int, default=1)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = command_line()
    args = parser.parse_args(argv)
    options = options_from(args)
    if options.stores < 2 or options.rate <= 0 or options.duration_s < 30:
        parser.error("at least 2 stores, a positive rate and 30 s of load")
    result = run(options)
    return common.finish(result, rows(result), args.json)


if __name__ == "__main__":
    raise SystemExit(common.entry(main))
