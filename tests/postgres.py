"""A throwaway PostgreSQL for tests: `PostgresServer` (tests/pg_server.py), Debian's binaries, a
cluster in a temporary directory on a free loopback port; it can stop, restart (same port and
data) and be killed like a real server.

Fixtures (import them into a test module): `postgres_server`, one cluster for the session, and
`postgres_url`, a database of its own for each test, dropped after it.

    from postgres import postgres_server, postgres_url  # noqa: F401 (fixtures)
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from pg_server import PostgresServer

__all__ = ["PostgresServer", "postgres_or_skip", "postgres_server", "postgres_url"]


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
