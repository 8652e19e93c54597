"""A throwaway PostgreSQL for tests: Debian's binaries, a cluster in a temporary directory.

`PostgresServer` runs `initdb` in a new directory under /tmp and starts `postgres` on a free
loopback port; it can stop, restart (same port and data) and be killed like a real server. As
root it runs them as `nobody` (PostgreSQL refuses to run as root), in a directory that user owns
(under /tmp, since a root-only home would keep it out). `make system-deps` installs the server.

Fixtures (import them into a test module): `postgres_server`, one cluster for the session, and
`postgres_url`, a database of its own for each test, dropped after it.

    from postgres import postgres_server, postgres_url  # noqa: F401 (fixtures)
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
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

USER = "postgres"  # the cluster's superuser (trust authentication, loopback only)


def find_bin_dir() -> Path | None:
    """The newest of Debian's /usr/lib/postgresql/<version>/bin, else `pg_ctl` on the PATH."""
    found = []
    for pg_ctl in Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"):
        version = pg_ctl.parent.parent.name
        if re.fullmatch(r"\d+(\.\d+)?", version):
            found.append((float(version), pg_ctl.parent))
    if found:
        return max(found)[1]
    on_path = shutil.which("pg_ctl")
    return Path(on_path).resolve().parent if on_path else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One PostgreSQL cluster: `start`, `stop`, `restart`, `kill`, `close` (stop and remove)."""

    def __init__(self, *, durable: bool = False) -> None:
        bin_dir = find_bin_dir()
        if bin_dir is None:
            raise FileNotFoundError("PostgreSQL is not installed (make system-deps)")
        self.bin_dir = bin_dir
        self.durable = durable  # fsync on: for runs that measure, or kill the server
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="central-pg-", dir="/tmp"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self._as: list[str] = []
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            os.chown(self.root, nobody.pw_uid, nobody.pw_gid)
            self._as = [
                "setpriv",
                f"--reuid={nobody.pw_uid}",
                f"--regid={nobody.pw_gid}",
                "--clear-groups",
                "--",
            ]
        self._initialized = False

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def _run(self, program: str, *args: str, timeout: float = 60) -> None:
        command = [*self._as, str(self.bin_dir / program), *args]
        env = {**os.environ, "LC_ALL": "C", "HOME": str(self.root)}
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env=env, cwd=self.root
        )
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{program} failed: {done.stderr or done.stdout}\n{log}")

    def start(self) -> None:
        if not self._initialized:
            self._run("initdb", "-D", str(self.data), "-U", USER, "--auth=trust", "-E", "UTF8",
                      "--locale=C", "--no-sync")  # fmt: skip
            self._initialized = True
        options = [
            f"-p {self.port}",
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={self.root}",
            "-c max_connections=200",
        ]
        if not self.durable:  # a test's data need not survive a power cut
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.log),
                  "-o", " ".join(options))  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "stop", "-w", "-t", "60", "-m", mode, "-D", str(self.data))

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL the postmaster (its backends exit when they see it gone)."""
        pid_file = self.data / "postmaster.pid"
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)

    def close(self) -> None:
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def postgres_or_skip(*, durable: bool = False) -> PostgresServer:
    """A server, or a skip where PostgreSQL is not installed (never in CI: there it fails)."""
    try:
        return PostgresServer(durable=durable)
    except FileNotFoundError as missing:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(missing))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = postgres_or_skip()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    name = "t_" + uuid.uuid4().hex[:16]
    url = postgres_server.create_database(name)
    yield url
    postgres_server.drop_database(name)
