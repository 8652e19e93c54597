"""A member lookup by card with 1,000,000 members, in one process and without the network: the
gateway's own `Store.member_by_identifier` (a point lookup run on the event loop's thread), the
bare SQLite point lookup under it, and what a hop to a thread and back (run_in_executor, aiosqlite)
would add. Backs the choice explained in `Store._one` (gateway/store/connections.py).

    python -m bench.lookup                  # 1,000,000 members, 20,000 lookups of each kind
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/lookup.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common as common

# The same shape of query as the gateway's (members joined to their identifiers).
_SQL = (
    "SELECT m.member_id, m.display_name, m.tier, m.points_balance FROM members m"
    " JOIN member_identifiers i ON i.member_id = m.member_id WHERE i.identifier = ?"
)


async def _timed(cards: list[str], call: Callable[[str], Awaitable[Any]]) -> list[float]:
    clock = time.perf_counter
    out = []
    for card in cards:
        started = clock()
        found = await call(card)
        out.append(clock() - started)
        if found is None:
            raise RuntimeError(f"card {card} not found")
    return out


async def measure(db: Path, cards: list[str]) -> dict[str, dict[str, float]]:
    import aiosqlite

    from gateway.store.store import Store

    store = await Store.open(db)
    plain = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    plain.execute("PRAGMA query_only = 1")
    pool = ThreadPoolExecutor(max_workers=1)
    reader = await aiosqlite.connect(db, isolation_level=None)
    loop = asyncio.get_running_loop()

    def lookup(card: str) -> Any:
        return plain.execute(_SQL, (card,)).fetchone()

    async def on_loop(card: str) -> Any:
        return lookup(card)

    async def via_store(card: str) -> Any:
        return store.member_by_identifier(card)

    async def via_thread(card: str) -> Any:
        return await loop.run_in_executor(pool, lookup, card)

    async def empty_hop(card: str) -> Any:
        return await loop.run_in_executor(pool, len, card)

    async def via_aiosqlite(card: str) -> Any:
        async with reader.execute(_SQL, (card,)) as cursor:
            return await cursor.fetchone()

    # A commit by another connection before each lookup empties a connection's page cache, as
    # the writer's commits do under load: the plain cache against a memory-mapped database.
    mapped = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    mapped.execute("PRAGMA query_only = 1")
    mapped.execute(f"PRAGMA mmap_size = {256 * 1024 * 1024}")
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("PRAGMA synchronous = OFF")  # the commit is not what is timed

    def after_commits(conn: sqlite3.Connection) -> list[float]:
        clock = time.perf_counter
        out = []
        for card in cards:
            other.execute("INSERT OR REPLACE INTO sync_state VALUES ('bench', ?)", (card,))
            started = clock()
            if conn.execute(_SQL, (card,)).fetchone() is None:
                raise RuntimeError(f"card {card} not found")
            out.append(clock() - started)
        return out

    kinds: dict[str, Callable[[str], Awaitable[Any]]] = {
        "Store.member_by_identifier (on the loop)": via_store,
        "sqlite3 point lookup on the loop": on_loop,
        "same lookup via run_in_executor": via_thread,
        "empty run_in_executor hop": empty_hop,
        "same lookup via aiosqlite": via_aiosqlite,
    }
    try:
        for call in kinds.values():  # warm the page caches and the code paths
            await _timed(cards[:1000], call)
        result = {
            name: common.summary_ms(await _timed(cards, call)) for name, call in kinds.items()
        }
        result["point lookup, a commit before each (page cache)"] = common.summary_ms(
            after_commits(plain)
        )
        result["point lookup, a commit before each (mmap 256 MiB)"] = common.summary_ms(
            after_commits(mapped)
        )
        return result
    finally:
        await reader.close()
        pool.shutdown()
        plain.close()
        mapped.close()
        other.close()
        await store.close()


def main(argv: list[str] | None = None) -> int:
    parser = common.command_line(__doc__)
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=20_000)
    args = parser.parse_args(argv)
    common.print_machine()
    db, _ = common.member_db(args.members)
    rng = random.Random(5)
    cards = [common.card_number(rng.randrange(args.members)) for _ in range(args.lookups)]
    with common.run_directory(db) as directory:
        result = asyncio.run(measure(directory / "gateway.db", cards))
    common.print_table(
        f"Member lookup by card, {args.members:,} members, {args.lookups:,} lookups, one process:",
        ["", "p50 us", "p99 us", "mean us"],
        [[k, *(f"{v[q] * 1000:.1f}" for q in ("p50", "p99", "mean"))] for k, v in result.items()],
    )
    common.write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(common.entry(main))
