"""The storage interface: where central's state lives, and how a request's work reaches it.

Two backends implement it: `sync.central.sqlite` (embedded, one process: the demo, the tests, the
benchmarks) and `sync.central.postgres` (one database that several central processes serve at
once). The contract's logic is written once, in `sync.central.ledger.Ledger`, over the
`Connection` below; a backend supplies connections, the threads they live on, and the few
statements where the two SQL dialects differ (the `Ledger` hooks).

A request's work is a job: a function of a `Ledger` that runs on one of the backend's database
threads, inside the transactions it opens itself. Jobs never wait for one another on the event
loop; a long poll waits on the `ChangeFeed`, not on a connection.
"""

from __future__ import annotations

import asyncio
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from sync.central.config import ReferenceConfig
from sync.central.longpoll import ChangeFeed

if TYPE_CHECKING:
    from sync.central.ledger import Ledger

T = TypeVar("T")


class Rows(Protocol):
    """What a statement returns: sqlite3's and psycopg's cursors both fit."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """One database connection, used by one thread at a time; `?` marks parameters."""

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> Rows: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]], /) -> Rows: ...


class Storage(ABC):
    """One central process's way to its database: open it, run jobs on it, close it."""

    kind: str  # "sqlite" or "postgresql", shown in the admin stats

    def __init__(self, config: ReferenceConfig, feed: ChangeFeed) -> None:
        self.config = config
        self.feed = feed

    async def open(self) -> None:
        """Open (creating the schema when needed) and seed the configured records."""
        await self._open()
        try:
            await self.run(lambda db: db.seed(self.config))
        except BaseException:
            await self.close()
            raise

    @abstractmethod
    async def _open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def run(self, job: Callable[[Ledger], T]) -> T:
        """Run `job` on a database thread; `ApiError` 503 while the database is out of reach."""

    @abstractmethod
    async def run_apart(self, job: Callable[[Ledger], T]) -> T:
        """Run a long job (a snapshot build) on a connection of its own, off the request path."""


def open_storage(config: ReferenceConfig, feed: ChangeFeed) -> Storage:
    """The backend the configuration names: PostgreSQL for a `database_url`, else SQLite."""
    if config.database_url:
        try:
            from sync.central.postgres import PostgresStorage
        except ImportError as missing:  # psycopg is the `central` extra's
            raise ValueError(
                f"PostgreSQL needs psycopg ({missing}): pip install 'edge-gateway[central]'"
            ) from None
        return PostgresStorage(config, feed)
    from sync.central.sqlite import SqliteStorage

    return SqliteStorage(config, feed)


def read_rules(config: ReferenceConfig) -> object:
    assert config.rules_file is not None
    return json.loads(config.rules_file.read_text(encoding="utf-8"))


async def in_thread(call: Callable[[], T]) -> T:
    return await asyncio.get_running_loop().run_in_executor(None, call)
