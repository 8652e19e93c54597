"""PostgreSQL and central processes for the fleet simulator (bench/fleet.py): a database cluster
of the benchmark's own, and `python -m sync.central` processes on it that can be killed and
started again."""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench._common import HOST, REPO, bound_to_parent, child_pids


def free_port() -> int:
    """A loopback port free now (another process may take it before it is used: rare)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


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


def postgres_bin_dir() -> Path | None:
    """The newest of Debian's /usr/lib/postgresql/<version>/bin, else `postgres` on the PATH."""
    found = []
    for binary in Path("/usr/lib/postgresql").glob("*/bin/postgres"):
        with contextlib.suppress(ValueError):
            found.append((float(binary.parent.parent.name), binary.parent))
    if found:
        return max(found)[1]
    on_path = shutil.which("postgres")
    return Path(on_path).resolve().parent if on_path else None


class PostgresCluster:
    """A PostgreSQL cluster of our own in a temporary directory, on a free loopback port, with
    fsync on (it is measured, and restarted). The postmaster runs in the foreground as our child
    (as `nobody` when we are root: PostgreSQL refuses root) and gets SIGINT, a fast shutdown,
    when we die (`setpriv --pdeathsig`), so nothing outlives the benchmark. `restart` is a fast
    shutdown and a start on the same port and data, as `pg_ctl restart -m fast` does."""

    USER = "postgres"

    def __init__(self, root: Path, *, max_connections: int = 200) -> None:
        bin_dir = postgres_bin_dir()
        if bin_dir is None:
            raise FileNotFoundError("PostgreSQL is not installed (make system-deps)")
        self.bin_dir = bin_dir
        self.root = root
        self.data = root / "data"
        self.log = root / "postgres.log"
        self.port = free_port()
        self.max_connections = max_connections
        self.cpu_before_stops = 0.0  # CPU of the postmasters (and backends) stopped so far
        self._proc: subprocess.Popen[bytes] | None = None
        self._as = ["setpriv", "--pdeathsig", "INT"]
        if os.geteuid() == 0:
            import pwd

            nobody = pwd.getpwnam("nobody")
            os.chown(root, nobody.pw_uid, nobody.pw_gid)
            self._as += [f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups"]
        self._as.append("--")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.USER}@{HOST}:{self.port}/{database}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def _env(self) -> dict[str, str]:
        return {**os.environ, "LC_ALL": "C", "HOME": str(self.root)}

    def start(self, timeout_s: float = 60.0) -> None:
        if not (self.data / "PG_VERSION").exists():
            initdb = [
                *self._as, str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", self.USER,
                "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync",
            ]  # fmt: skip
            done = subprocess.run(
                initdb, capture_output=True, text=True, timeout=120, env=self._env(), cwd=self.root
            )
            if done.returncode != 0:
                raise RuntimeError(f"initdb failed: {done.stderr or done.stdout}")
        command = [
            *self._as, str(self.bin_dir / "postgres"), "-D", str(self.data), "-p", str(self.port),
            "-c", f"listen_addresses={HOST}", "-c", f"unix_socket_directories={self.root}",
            "-c", f"max_connections={self.max_connections}",
        ]  # fmt: skip
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=self._env(),
                cwd=self.root,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if self._proc.poll() is not None:
                raise RuntimeError(f"postgres exited at start:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"postgres not ready within {timeout_s:.0f} s")
            time.sleep(0.05)

    def ready(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.url(), connect_timeout=2):
                return True
        except psycopg.Error:
            return False

    def cpu_seconds(self) -> float:
        """CPU time of the server so far (postmaster and backends), earlier runs included."""
        pid = self.pid
        return self.cpu_before_stops + (process_tree_seconds(pid) if pid else 0.0)

    def stop(self, timeout_s: float = 60.0) -> None:
        """Fast shutdown (SIGINT): sessions are ended, the data is left consistent."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        self.cpu_before_stops += process_tree_seconds(proc.pid)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop and remove the cluster."""
        try:
            self.stop(20.0)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


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
