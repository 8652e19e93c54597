"""A throwaway PostgreSQL server: Debian's binaries, a cluster in a directory of its own, on a free
loopback port. The tests' fixtures (tests/postgres.py) and the fleet benchmark (bench/_postgres.py)
start theirs with it, so it imports no pytest.

`initdb` runs once; the postmaster then runs in the foreground as our child and gets SIGINT, a
fast shutdown, when we die (`setpriv --pdeathsig`), so no server outlives its run. The signal
comes when the *thread* that started it ends: start a long-lived server from the main thread.
As root it runs as `nobody` (PostgreSQL refuses to run as root), in a directory that user owns
(under /tmp, since a root-only home would keep it out). `make system-deps` installs the server.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

USER = "postgres"  # the cluster's superuser (trust authentication, loopback only)
HOST = "127.0.0.1"
# What asks the postmaster for each of `pg_ctl stop`'s modes.
SHUTDOWN = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}


def find_bin_dir() -> Path | None:
    """The newest of Debian's /usr/lib/postgresql/<version>/bin, else `postgres` on the PATH."""
    found = []
    for postgres in Path("/usr/lib/postgresql").glob("*/bin/postgres"):
        version = postgres.parent.parent.name
        if re.fullmatch(r"\d+(\.\d+)?", version):
            found.append((float(version), postgres.parent))
    if found:
        return max(found)[1]
    on_path = shutil.which("postgres")
    return Path(on_path).resolve().parent if on_path else None


def free_port() -> int:
    """A loopback port free now (another process may take it before it is used: rare)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One PostgreSQL cluster: `start`, `stop`, `restart`, `kill`, `close` (stop and remove).

    `root`: its directory (a new one under /tmp by default). `durable`: fsync on, for runs that
    measure or kill the server (a test's data need not survive a power cut)."""

    def __init__(
        self, root: Path | None = None, *, durable: bool = False, max_connections: int = 200
    ) -> None:
        bin_dir = find_bin_dir()
        if bin_dir is None:
            raise FileNotFoundError("PostgreSQL is not installed (make system-deps)")
        self.bin_dir = bin_dir
        self.durable = durable
        self.max_connections = max_connections
        self.port = free_port()
        self.root = root or Path(tempfile.mkdtemp(prefix="central-pg-", dir="/tmp"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._as = ["setpriv", "--pdeathsig", "INT"]
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            os.chown(self.root, nobody.pw_uid, nobody.pw_gid)
            self._as += [f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups"]
        self._as.append("--")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@{HOST}:{self.port}/{database}"

    @property
    def pid(self) -> int | None:
        """The postmaster's, while it runs."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def _env(self) -> dict[str, str]:
        return {**os.environ, "LC_ALL": "C", "HOME": str(self.root)}

    def start(self, timeout_s: float = 60.0) -> None:
        """Start on the port and data of the last run, if any; return when it answers."""
        if not (self.data / "PG_VERSION").exists():
            initdb = [
                *self._as, str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", USER,
                "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync",
            ]  # fmt: skip
            done = subprocess.run(
                initdb, capture_output=True, text=True, timeout=120, env=self._env(), cwd=self.root
            )
            if done.returncode != 0:
                raise RuntimeError(f"initdb failed: {done.stderr or done.stdout}")
        settings = [
            f"listen_addresses={HOST}",
            f"unix_socket_directories={self.root}",
            f"max_connections={self.max_connections}",
        ]
        if not self.durable:
            settings += ["fsync=off", "synchronous_commit=off", "full_page_writes=off"]
        postgres = [str(self.bin_dir / "postgres"), "-D", str(self.data), "-p", str(self.port)]
        command = [*self._as, *postgres]
        for setting in settings:
            command += ["-c", setting]
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
        import psycopg  # here, as below: whoever imports this module alone loads no libpq

        try:
            with psycopg.connect(self.url(), connect_timeout=2):
                return True
        except psycopg.Error:
            return False

    def stop(self, mode: str = "fast", timeout_s: float = 60.0) -> None:
        """Shut down in `mode`, as `pg_ctl stop -m` does: "fast" ends the sessions and leaves the
        data consistent; "immediate" leaves the next start a recovery."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(SHUTDOWN[mode])
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL the postmaster (its backends exit when they see it gone)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.wait(10)

    def close(self) -> None:
        """Stop and remove the cluster."""
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""
