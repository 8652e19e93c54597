"""What the benchmarks share: the cached member databases, the gateway and the reference central
as child processes, helper processes that stop with their parent, timing a SIM round trip, CPU
time over a window, percentiles, the summary rows of DESIGN.md section 7 and a description of the
machine.

Every process started here is bound to its parent: the gateway runs in its own session and is
stopped by SIGTERM to that session (SIGKILL after a grace period), and both the gateway and the
helper processes get SIGTERM from the kernel if the benchmark itself dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import functools
import json
import math
import os
import platform
import queue
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pos_adapters.sim.codec import FrameDecoder

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / "bench" / ".cache"
HOST = "127.0.0.1"
STORE_ID = "BENCH"
COUPON_CODE = "BENCH-BEARER"
# Bump when the generated data changes, so that cached databases are rebuilt.
BUILD_FORMAT = 1

# i -> card number is a bijection (the multiplier is coprime with 10**15), so cards are unique,
# look random, and any process can draw a valid card without reading the database.
_CARD_MULTIPLIER = 7_919_000_003
_CARD_OFFSET = 271_828_182_845
_FIRST = ("Anna", "Ben", "Chloe", "David", "Emma", "Felix", "Grace", "Hugo", "Ines", "Jonas")
_LAST = ("Berg", "Costa", "Dubois", "Evans", "Fischer", "Garcia", "Hansen", "Ito", "Jensen")
_TIERS = ("", "silver", "gold", "platinum")

# Started with `python -c` in front of a command: ask for SIGTERM when the parent dies, then exec.
_BIND_TO_PARENT = (
    "import ctypes, os, signal, sys\n"
    "parent = int(sys.argv[1])\n"
    "try:\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)\n"
    "except (OSError, AttributeError):\n"
    "    pass\n"
    "if parent and os.getppid() != parent:\n"
    "    sys.exit(1)  # the parent died before prctl: never start an orphan\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


def card_number(i: int) -> str:
    """Member i's card: `9` and 15 digits."""
    return f"9{(i * _CARD_MULTIPLIER + _CARD_OFFSET) % 10**15:015d}"


def member_id(i: int) -> str:
    return f"M{i:07d}"


# ---- statistics ---------------------------------------------------------------------------------


def percentile(ordered: Sequence[float], share: float) -> float:
    """Nearest-rank percentile of an already sorted sequence."""
    if not ordered:
        return float("nan")
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary_ms(values: Sequence[float]) -> dict[str, float]:
    """count, p50, p90, p99, max and mean of latencies given in seconds, in milliseconds."""
    ordered = sorted(values)
    if not ordered:
        return {"count": 0}
    return {
        "count": len(ordered),
        "p50": percentile(ordered, 0.50) * 1000,
        "p90": percentile(ordered, 0.90) * 1000,
        "p99": percentile(ordered, 0.99) * 1000,
        "max": ordered[-1] * 1000,
        "mean": sum(ordered) / len(ordered) * 1000,
    }


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def ms(value: float) -> str:
    """A duration given in milliseconds, for a table."""
    return "-" if math.isnan(value) else f"{value:,.1f} ms" if value >= 100 else f"{value:.3f} ms"


def us(value: float) -> str:
    """A CPU time given in microseconds, for a table."""
    return "-" if math.isnan(value) else f"{value:,.0f} us"


def times(figure: float, floor: float) -> str:
    """figure / floor, for a table."""
    return f"{figure / floor:.2f}x" if floor > 0 and not math.isnan(figure) else "-"


@dataclass
class Row:
    """One line of the summary: a target of DESIGN.md section 7 and what this run measured for it.

    `floor` is the floor measured in the same run ("-" where the target has none), `ratio` the
    figure over that floor, `cpu` the server's CPU time per request in the same measurement.
    `met` None means the benchmark did not produce the figure (it failed).
    """

    target: str
    figure: str
    floor: str = "-"
    ratio: str = "-"
    cpu: str = "-"
    met: bool | None = None

    @property
    def verdict(self) -> str:
        return "ERROR" if self.met is None else "PASS" if self.met else "MISS"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict}


SUMMARY_HEADER = ("target", "figure", "floor (same run)", "ratio", "server CPU/request", "")


def latency_row(
    target: str, figure_ms: float, floor: str, floor_ms: float, cpu_us: float, met: bool
) -> Row:
    """A row whose figure and floor are durations in milliseconds."""
    ratio = times(figure_ms, floor_ms)
    return Row(target, ms(figure_ms), f"{floor} {ms(floor_ms)}", ratio, us(cpu_us), met)


def print_rows(title: str, rows: Sequence[Row]) -> None:
    """The summary table of DESIGN.md section 7 targets."""
    print_table(
        title,
        SUMMARY_HEADER,
        [[r.target, r.figure, r.floor, r.ratio, r.cpu, r.verdict] for r in rows],
    )


# ---- the machine --------------------------------------------------------------------------------


def first_line(
    command: Sequence[str], contains: str = "", *, stderr: bool = False, default: str = "?"
) -> str:
    """The first line a command prints (on stdout, or stdout then stderr) containing `contains`."""
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return default
    text = out.stdout + out.stderr if stderr else out.stdout
    return next((line.strip() for line in text.splitlines() if contains in line), default)


def cpu_model(default: str = "?") -> str:
    """The CPU's model name, from /proc/cpuinfo."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return default


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    memory = "?"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return {
        "cpus": str(os.cpu_count()),
        "cpu": cpu_model(platform.processor() or "?"),
        "memory": memory,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "kernel": " ".join(platform.uname()[:3]),
        "filesystem": _filesystem(CACHE if CACHE.exists() else REPO),
        "load": _load_average(),
        "code": first_line(["git", "-C", str(REPO), "describe", "--always", "--dirty"]),
    }


def _load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def _filesystem(path: Path) -> str:
    """Device and type of the filesystem holding `path`, from /proc/mounts."""
    best = ("", "?", "?")
    with contextlib.suppress(OSError):
        resolved = str(path.resolve())
        for line in Path("/proc/mounts").read_text().splitlines():
            device, point, kind = line.split()[:3]
            inside = resolved == point or resolved.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best[0]):
                best = (point, device, kind)
    return f"{best[1]} ({best[2]}) on {best[0] or '?'}"


def print_machine() -> dict[str, str]:
    info = machine()
    print(
        f"machine: {info['cpus']} CPUs ({info['cpu']}), {info['memory']}, Python {info['python']},"
        f" SQLite {info['sqlite']}, {info['kernel']}, data on {info['filesystem']};"
        f" load average now {info['load']}; code {info['code']}"
    )
    return info


def new_result(benchmark: str, **fields: Any) -> dict[str, Any]:
    """A benchmark's result, begun: its name, the machine it runs on (printed), then `fields`."""
    return {"benchmark": benchmark, "machine": print_machine(), **fields}


# ---- the member databases -----------------------------------------------------------------------


def bench_coupon() -> Any:
    """A bearer coupon anyone may use many times: 1.00 off, no minimum spend, valid for years."""
    from gateway.domain.models import Coupon

    now = dt.datetime.now(dt.UTC)
    return Coupon(
        code=COUPON_CODE,
        coupon_id="bench-bearer",
        kind="amount",
        value="1.00",
        pos_discount_object=901,
        valid_from=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
        valid_to=now + dt.timedelta(days=3650),
        max_redemptions=1_000_000_000,
        origin="campaign",
    )


def member_db(count: int, *, say: Callable[[str], None] = print) -> tuple[Path, float | None]:
    """A database with `count` members and the bench coupon, built once and kept in bench/.cache.

    Returns its path and the seconds spent building it (None when it came from the cache). Runs
    never write to it: `run_directory` copies it.
    """
    from gateway.store.schema import SCHEMA_VERSION

    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"members-{count}-schema{SCHEMA_VERSION}-fmt{BUILD_FORMAT}.db"
    if path.is_file():
        return path, None
    say(f"building a database of {count:,} members in {path.name} (kept for later runs) ...")
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="build-", dir=CACHE))
    try:
        db = work / "gateway.db"
        asyncio.run(_migrate_and_add_coupon(db))
        _insert_members(db, count)
        with db.open("rb+") as f:
            os.fsync(f.fileno())  # on disk now, not written back while a benchmark measures
        os.replace(db, path)  # only a finished database ever has the cached name
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for older in CACHE.glob(f"members-{count}-*.db"):
        if older != path:  # built for an older schema or data format
            older.unlink(missing_ok=True)
    seconds = time.perf_counter() - started
    say(f"built in {seconds:.1f} s ({path.stat().st_size / 1e6:.0f} MB)")
    return path, seconds


async def _migrate_and_add_coupon(db: Path) -> None:
    from gateway.store.store import Store

    store = await Store.open(db)  # creates and migrates
    try:
        await store.upsert_coupons([bench_coupon()])
    finally:
        await store.close()


def _insert_members(db: Path, count: int) -> None:
    """Plain sqlite3, one transaction: the store's own import path would take many minutes."""
    from gateway.domain.models import Member
    from gateway.store.store import utc_stamp

    now = utc_stamp(dt.datetime.now(dt.UTC))
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        # Nobody else has the file open: build without a WAL and without fsyncs, then hand the
        # gateway a WAL database as its own connections would leave it.
        conn.execute("PRAGMA journal_mode = DELETE")
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("PRAGMA cache_size = -262144")  # 256 MiB: the identifier index stays in memory
        conn.execute("BEGIN")
        chunk = 50_000
        for start in range(0, count, chunk):
            members, identifiers = [], []
            for i in range(start, min(count, start + chunk)):
                card = card_number(i)
                member = Member(
                    member_id=member_id(i),
                    identifiers=[card],
                    display_name=f"{_FIRST[i % len(_FIRST)]} {_LAST[(i // 10) % len(_LAST)]}",
                    tier=_TIERS[i % len(_TIERS)],
                    birthday=f"{i % 12 + 1:02d}-{i % 28 + 1:02d}",
                    points_balance=(i * 37) % 5000,
                )
                members.append(
                    (
                        member.member_id,
                        member.display_name,
                        member.tier,
                        member.birthday,
                        "[]",
                        member.earn_mode,
                        0,
                        member.points_balance,
                        0,
                        None,
                        member.model_dump_json(),
                        now,
                    )
                )
                identifiers.append((card, member.member_id))
            conn.executemany("INSERT INTO members VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", members)
            conn.executemany("INSERT INTO member_identifiers VALUES (?, ?)", identifiers)
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode = WAL")
    finally:
        conn.close()


def _remove_abandoned(runs: Path) -> None:
    """Remove the data directories of benchmark runs that were killed (their process is gone)."""
    for directory in runs.glob("run-*-*"):
        try:
            owner = int(directory.name.split("-")[1])
        except ValueError:
            continue
        if owner != os.getpid() and not Path(f"/proc/{owner}").exists():
            shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def run_directory(db: Path | None = None) -> Iterator[Path]:
    """A fresh data directory on the cache's filesystem (with a copy of `db`); removed after."""
    runs = CACHE / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(runs)
    directory = Path(tempfile.mkdtemp(prefix=f"run-{os.getpid()}-", dir=runs))
    try:
        if db is not None:
            copy = directory / "gateway.db"
            shutil.copyfile(db, copy)
            # Written out now: otherwise the gateway's first checkpoint fsyncs the whole copy
            # (measured: a one-off stall of about 1 s for 1,000,000 members).
            with copy.open("rb+") as f:
                os.fsync(f.fileno())
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# ---- the gateway as a child process -------------------------------------------------------------


def _gateway_command() -> list[str]:
    for candidate in (
        REPO / ".venv" / "bin" / "edge-gateway",
        Path(sys.executable).parent / "edge-gateway",
    ):
        if candidate.is_file():
            return [str(candidate)]
    return [sys.executable, "-m", "gateway"]


def bound_to_parent(command: Sequence[str], parent: int | None = None) -> list[str]:
    """`command`, started so that it gets SIGTERM if its parent (this process unless told
    otherwise; 0 for a parent not known in advance) dies."""
    parent = os.getpid() if parent is None else parent
    return [sys.executable, "-c", _BIND_TO_PARENT, str(parent), *command]


class GatewayProcess:
    """`edge-gateway run` on 127.0.0.1, port chosen by the system, data in `data_dir`.

    Use as a context manager: entering waits for the `gateway_ready` log line (reading stderr
    line by line, no sleeping) and exiting stops the gateway whatever happened. `env` adds
    settings (EDGE_GATEWAY_...), such as a central to forward to.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        ready_timeout_s: float = 300.0,
        count_fsyncs: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.ready_timeout_s = ready_timeout_s
        self.count_fsyncs = count_fsyncs
        self.env = env or {}
        self.port = 0
        self.seconds_to_ready = 0.0
        self.tail: deque[str] = deque(maxlen=40)
        self.exit_code: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._reader: threading.Thread | None = None

    def __enter__(self) -> GatewayProcess:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("EDGE_GATEWAY_")}
        env.update(
            EDGE_GATEWAY_STORE_ID=STORE_ID,
            EDGE_GATEWAY_DATA_DIR=str(self.data_dir),
            EDGE_GATEWAY_TIMEZONE="UTC",
            EDGE_GATEWAY_SIM__HOST=HOST,
            EDGE_GATEWAY_SIM__PORT="0",
            EDGE_GATEWAY_ADMIN__HOST=HOST,
            EDGE_GATEWAY_LOG__FORMAT="json",
            EDGE_GATEWAY_LOG__LEVEL="info",
        )
        env.update(self.env)
        # An empty file named with --config, so that a /etc/edge-gateway/gateway.toml on the
        # machine cannot change what is measured: every setting comes from the environment.
        config = self.data_dir / "bench.toml"
        config.write_text("# edge-gateway benchmark: every setting comes from the environment\n")
        command = bound_to_parent([*_gateway_command(), "--config", str(config), "run"])
        if self.count_fsyncs is not None:
            # strace counts the fsync calls of the gateway and its threads; seccomp-bpf stops the
            # process only at those calls, so the rest of the run is not slowed down.
            tracer = ["strace", "-f", "--seccomp-bpf", "-c", "-e", "trace=fsync,fdatasync"]
            inner = bound_to_parent([*_gateway_command(), "--config", str(config), "run"], 0)
            command = bound_to_parent([*tracer, "-o", str(self.count_fsyncs), *inner])
        started = time.perf_counter()
        self._proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,  # Ctrl-C reaches us only; we stop the gateway ourselves
        )
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        deadline = started + self.ready_timeout_s
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise RuntimeError(f"gateway not ready within {self.ready_timeout_s:.0f} s")
            try:
                event = self._events.get(timeout=remaining)
            except queue.Empty:
                continue
            if event is None:
                raise RuntimeError("gateway exited before it was ready:\n" + "\n".join(self.tail))
            if event.get("event") == "gateway_ready":
                self.port = int(event["sim_port"])
                self.seconds_to_ready = time.perf_counter() - started
                return

    def _read_stderr(self) -> None:
        # Keeps draining after `gateway_ready`, so the gateway never blocks on a full pipe.
        assert self._proc is not None and self._proc.stderr is not None
        waiting = True
        for raw in self._proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            self.tail.append(line)
            if waiting and line.startswith("{"):
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    if event.get("event") == "gateway_ready":
                        waiting = False
                        self._events.put(event)
        self._events.put(None)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time the gateway has used so far (see `cpu_seconds`)."""
        pid = self.gateway_pid
        return cpu_seconds(pid) if pid is not None else {"loop": 0.0, "threads": 0.0}

    @property
    def gateway_pid(self) -> int | None:
        if self._proc is None:
            return None
        if self.count_fsyncs is None:
            return self._proc.pid  # the wrapper exec'd into the gateway: same pid
        children = child_pids(self._proc.pid)  # under strace, the gateway is strace's child
        return children[0] if children else None

    def stop(self, grace_s: float = 20.0) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            # Under strace, stop the gateway itself first, so strace sees its last calls and
            # writes its summary when the gateway is gone.
            for child in child_pids(proc.pid) if self.count_fsyncs is not None else []:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(grace_s if self.count_fsyncs is not None else 0)
        if proc.poll() is None:
            # The session holds only what we started: the gateway (and strace when counting).
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        self.exit_code = proc.returncode
        if self._reader is not None:
            self._reader.join(5)
        self._proc = None


def cpu_seconds(pid: int) -> dict[str, float]:
    """CPU time (user + system) of a process so far: its main thread (for the gateway, the event
    loop) and all its other threads together (the SQLite writer, aiosqlite, executors)."""
    out = {"loop": 0.0, "threads": 0.0}
    tick = os.sysconf("SC_CLK_TCK")
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                used = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
                out["loop" if task.name == str(pid) else "threads"] += used
    return out


def machine_busy_seconds() -> float:
    """CPU time all processes of the machine have used since boot (every CPU, not idle)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0
    # user nice system idle iowait irq softirq steal guest guest_nice; guest time is in user
    busy = sum(fields[:8]) - fields[3] - fields[4]
    return busy / os.sysconf("SC_CLK_TCK")


def cpu_used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in before}


@dataclass
class CpuUse:
    """CPU seconds over a window: of each server measured (its event loop, its other threads),
    of this process, and of the rest of the machine (other people's work; may be slightly
    negative: the kernel counts in ticks)."""

    servers: dict[int, dict[str, float]]
    mine: float
    others: float


class CpuMeter:
    """CPU time over a window, from its creation (or `restart`) to `read`."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)
        self.restart()

    def _sample(self) -> tuple[dict[int, dict[str, float]], float, float]:
        servers = {pid: cpu_seconds(pid) for pid in self.pids}
        return servers, time.process_time(), machine_busy_seconds()

    def restart(self) -> None:
        self._before = self._sample()

    def read(self) -> CpuUse:
        servers_before, mine_before, busy_before = self._before
        servers_after, mine_after, busy_after = self._sample()
        servers = {pid: cpu_used(servers_before[pid], servers_after[pid]) for pid in self.pids}
        mine = mine_after - mine_before
        all_servers = sum(sum(used.values()) for used in servers.values())
        return CpuUse(servers, mine, busy_after - busy_before - mine - all_servers)


def quiet(others_cores: float) -> str:
    """The flag printed when other processes used more than 0.1 core while we measured."""
    return " (NOT QUIET: figures disturbed)" if others_cores > 0.1 else ""


def peak_rss_mb() -> float:
    """The peak resident set size of this process (VmHWM: this program image's own, not that of
    the process it was forked from), in MB (MiB)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child_pids(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def fsync_count(strace_summary: Path) -> int | None:
    """The number of fsync/fdatasync calls in an `strace -c` summary."""
    try:
        text = strace_summary.read_text()
    except OSError:
        return None
    total = 0
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[-1] in ("fsync", "fdatasync"):
            with contextlib.suppress(ValueError, IndexError):
                total += int(parts[3])  # % time, seconds, usecs/call, calls, [errors,] syscall
    return total


def strace_available() -> bool:
    return shutil.which("strace") is not None


# ---- a SIM round trip ---------------------------------------------------------------------------


def read_frame(receive: Callable[[], bytes], decoder: FrameDecoder, who: str) -> list[Any]:
    """Read with `receive` until `decoder` has a frame (a reply, or a codec error); all it had."""
    while True:
        data = receive()
        if not data:
            raise ConnectionError(f"{who} closed the connection (or answered nothing)")
        got = decoder.feed(data)
        if got:
            return got


def probe_reply(port: int, frame: bytes, expect: str = "IDENT_OK") -> bytes:
    """The bytes of the gateway's reply to `frame`, for a floor to send back."""
    from pos_adapters.sim.codec import Frame, FrameDecoder

    with socket.create_connection((HOST, port), timeout=10.0) as sock:
        sock.sendall(frame)
        reply = read_frame(functools.partial(sock.recv, 65536), FrameDecoder(), "the gateway")[0]
    if not isinstance(reply, Frame) or reply.fields[0] != expect:
        raise RuntimeError(f"the gateway did not answer {expect}: {reply}")
    return reply.to_bytes()


# ---- running a benchmark ------------------------------------------------------------------------


def command_line(doc: str | None) -> argparse.ArgumentParser:
    """A benchmark's options: described by its docstring's first paragraph, with --json FILE."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    return parser


def write_json(path: Path | None, data: Any) -> None:
    if path is not None:
        path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def finish(result: dict[str, Any], rows: Sequence[Row], json_path: Path | None) -> int:
    """A benchmark's last words: its DESIGN.md section 7 rows, and its figures in `json_path`."""
    print()
    print_rows("DESIGN.md section 7:", rows)
    write_json(json_path, result)
    return 0


def entry(main: Callable[[], int]) -> int:
    """Run a benchmark's main; Ctrl-C ends it quietly once everything it started is stopped."""
    exit_on_sigterm()
    try:
        return main()
    except KeyboardInterrupt:
        print("\ninterrupted: every process the benchmark started has been stopped", flush=True)
        return 130


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit in the main thread, so every `finally` cleans up."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Columns padded to their widest cell: the first left-aligned, the others right-aligned."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  " + "  ".join(
            str(c).ljust(w) if i == 0 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    print(title)
    for cells in [header, *rows]:
        print(line(cells))


def anonymous_check(store_id: str, business_date: str, wsid: int, check: int) -> dict[str, Any]:
    """The payload of a `check.posted` event of a 12.00 check without a member, as the gateway
    writes it (DESIGN section 3): what the drain and fleet benchmarks queue by the thousand."""
    return {
        "store_id": store_id,
        "business_date": business_date,
        "wsid": wsid,
        "rvc": 1,
        "check": check,
        "member_id": None,
        "subtotal": "12.00",
        "total": "12.00",
        "items": [{"qty": "1", "object": 1001, "total": "12.00"}],
        "coupons": [],
        "unknown_coupon_refs": [],
        "points_earned": 0,
        "tickets_earned": 0,
        "wallet_delta": 0,
        "earn_mode": "points",
        "rules_version": "default",
    }
