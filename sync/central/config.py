"""How a reference central starts: one frozen settings object, and central's clock stamps."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SAMPLE_DIR = Path(__file__).resolve().parent.parent.parent / "gateway" / "sample"
MIB = 1024 * 1024


def system_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def utc_stamp(moment: dt.datetime) -> str:
    """RFC 3339 UTC with microseconds and `Z`: central's one shape, so text order is time order."""
    return moment.astimezone(dt.UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def next_stamp(now: str, last: str) -> str:
    """`now`, or 1 µs after `last` when the clock has not moved past it (stamps never go back)."""
    if now > last:
        return now
    moment = dt.datetime.fromisoformat(last[:-1]) + dt.timedelta(microseconds=1)
    return moment.isoformat(timespec="microseconds") + "Z"


@dataclass(frozen=True, slots=True)
class ReferenceConfig:
    """How a reference central starts. Frozen: faults change at run time, this does not.

    Storage is SQLite at `db_path` unless `database_url` names a PostgreSQL database
    (`postgresql://...`), which several central processes may serve at once.
    """

    db_path: Path | None = None  # SQLite; None: a temporary database, removed when it stops
    database_url: str | None = None  # PostgreSQL (libpq URL or key=value string)
    db_workers: int = 4  # PostgreSQL connections (and threads) per process; SQLite has one
    token: str | None = None  # None: any bearer token (or none) is accepted
    members_file: Path | None = SAMPLE_DIR / "members.jsonl"  # JSON lines, loaded at start
    coupons_file: Path | None = SAMPLE_DIR / "coupons.jsonl"
    rules_file: Path | None = None  # a JSON rules document, published at start
    synthetic_members: int = 0  # members SYN0000001.. made at start (benchmarks)
    seed: int = 0  # seeds the fault dice
    clock: Callable[[], dt.datetime] = system_now  # central's clock (tests move it)
    max_batch_events: int = 500
    max_batch_bytes: int = MIB  # uncompressed
    max_catalog_bytes: int = 16 * MIB
    max_small_body_bytes: int = 256 * 1024  # authorizations, heartbeats, admin faults
    max_wait_s: float = 30.0  # the longest a `changes` long poll is held
    snapshot_every_s: float = 0.0  # build a snapshot at start and then this often; 0: on demand
    admin_token: str | None = None  # None: the admin API trusts loopback clients (no token)
    admin_host_names: tuple[str, ...] = ()  # Host names the admin API answers besides localhost
    fleet_offline_after_s: float = 180.0  # a store silent this long is OFFLINE (3 heartbeats)
    fleet_page_refresh_s: float = 5.0  # how often the fleet page asks again
