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
import contextlib
import dataclasses
import datetime as dt
import math
import multiprocessing
import multiprocessing.connection
import shutil
import sys
import tempfile
import threading
import time
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
from bench._fleet_report import (
    VERSIONS,
    analyse,
    bootstrap_figures,
    log_counts,
    rate_figures,
    report,
    rows,
)
from bench._fleet_stores import Options, StoreSpec, WorkerPlan, fleet_worker

if TYPE_CHECKING:
    pass

PROGRAM = "lottery"
KILL_DOWN_S = 2.0  # central A stays dead this long before it is started again
PUBLISH_AFTER_FAULT_S = 5.0  # a rules document is published this long after a fault is over
STORE_PREFIX = "F"


QUICK = {"stores": 50, "duration_s": 30.0, "members": 10_000, "jitter_s": 5.0, "burst": 200}
FULL = {"stores": 500, "duration_s": 180.0, "members": 10_000, "jitter_s": 30.0, "burst": 100}


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
