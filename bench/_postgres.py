"""PostgreSQL and central processes for the fleet simulator (bench/fleet.py): a database cluster
of the benchmark's own, and `python -m sync.central` processes on it that can be killed and
started again."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench._common import HOST, REPO, bound_to_parent, child_pids
from tests.pg_server import PostgresServer, free_port

__all__ = ["CentralCommand", "PostgresCluster", "free_port", "process_tree_seconds"]


def process_tree_seconds(pid: int) -> float:
    """CPU time (user + system) of a process, the children it has waited for, and its live
    descendants: a PostgreSQL postmaster with its backends, say. 0 when it is gone."""
    tick = os.sysconf("SC_CLK_TCK")
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    # utime stime cutime cstime: fields 14-17 of stat(5), 11-14 after the command's ")"
    total = sum(int(v) for v in fields[11:15]) / tick
    for child in child_pids(pid):
        total += process_tree_seconds(child)
    return total


class PostgresCluster(PostgresServer):
    """The tests' PostgreSQL server (tests/pg_server.py: a cluster of our own in a temporary
    directory, the postmaster our child, stopped when we die) with fsync on, since it is measured
    and restarted; and the CPU time of its postmasters and backends, counted across restarts."""

    def __init__(self, root: Path, *, max_connections: int = 200) -> None:
        super().__init__(root, durable=True, max_connections=max_connections)
        self.cpu_before_stops = 0.0  # CPU of the postmasters (and backends) stopped so far

    def cpu_seconds(self) -> float:
        """CPU time of the server so far (postmaster and backends), earlier runs included."""
        pid = self.pid
        return self.cpu_before_stops + (process_tree_seconds(pid) if pid else 0.0)

    def stop(self, mode: str = "fast", timeout_s: float = 60.0) -> None:
        pid = self.pid
        if pid is not None:
            self.cpu_before_stops += process_tree_seconds(pid)
        super().stop(mode, timeout_s)


class CentralCommand:
    """`python -m sync.central` (the reference central's command line) in its own process, bound
    to ours, on a fixed public port so that a restart comes back where its gateways look.
    `kill` is a SIGKILL; `start` again after it is a restart."""

    def __init__(
        self, name: str, database: str, port: int, log: Path, *extra: str, ready_s: float = 120.0
    ) -> None:
        self.name = name
        self.database = database
        self.port = port
        self.log = log
        self.extra = list(extra)
        self.ready_s = ready_s
        self.url = f"http://{HOST}:{port}"
        self.admin_url = ""
        self.cpu_before_kills = 0.0  # CPU of the processes killed so far
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> float:
        """Start it and wait for its `listening` and `admin` lines; the seconds it took."""
        central = [
            sys.executable, "-m", "sync.central", "--port", str(self.port),
            "--db", self.database, "--no-sample", *self.extra,
        ]  # fmt: skip
        command = bound_to_parent(central)
        started = time.perf_counter()
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen(
                command,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,
            )
        assert self._proc.stdout is not None
        lines: queue.Queue[str | None] = queue.Queue()

        def read(stream: Any) -> None:  # keeps draining stdout after start-up
            for raw in stream:
                lines.put(raw.decode("utf-8", "replace").strip())
            lines.put(None)

        threading.Thread(target=read, args=(self._proc.stdout,), daemon=True).start()
        deadline = started + self.ready_s
        while True:
            try:
                line = lines.get(timeout=max(0.01, deadline - time.perf_counter()))
            except queue.Empty:
                late = f"central {self.name} not ready in {self.ready_s:.0f} s"
                raise RuntimeError(late) from None
            if line is None:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"central {self.name} exited at start:\n{tail}")
            if line.startswith("reference-server admin on "):
                self.admin_url = line.removeprefix("reference-server admin on ").removesuffix(
                    "/_admin/"
                )
                return time.perf_counter() - started

    def cpu_seconds(self) -> float:
        """CPU time of this central so far, its killed predecessors' included."""
        pid = self.pid
        return self.cpu_before_kills + (process_tree_seconds(pid) if pid else 0.0)

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, as a crash or the OOM killer."""
        proc = self._proc
        if proc is None:
            return
        self.cpu_before_kills += process_tree_seconds(proc.pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        self._proc = None

    def stop(self, grace_s: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
