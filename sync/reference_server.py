"""Central's API v1 (DESIGN.md section 3), runnable: SQLite behind it, faults on demand.

The reference the gateway is built and tested against. `sync/openapi.yaml` is the contract and
`docs/central-api.md` the decisions taken where DESIGN.md is silent. One process holds:

- a Starlette app served by uvicorn on an internal loopback port; every SQLite access runs on
  one database thread, so requests never interleave inside a transaction;
- a small TCP proxy in front of it (the public port), because an ASGI app cannot close its
  client's socket: the proxy loses acknowledgements ("drop after commit") and plays central
  being down (connections refused and cut).

    python -m sync.reference_server --port 8080 --token-file token.txt

or, in tests, `async with ReferenceServer(ReferenceConfig(...)) as central: central.url`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import functools
import hashlib
import hmac
import ipaddress
import json
import random
import re
import secrets
import shutil
import signal
import sqlite3
import sys
import tempfile
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NoReturn, TypeVar

import uvicorn
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.domain.models import Coupon, Member

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "gateway" / "sample"
MIB = 1024 * 1024
_T = TypeVar("_T")


def _system_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def utc_stamp(moment: dt.datetime) -> str:
    """RFC 3339 UTC with microseconds and `Z`: central's one shape, so text order is time order."""
    return moment.astimezone(dt.UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


@dataclass(frozen=True, slots=True)
class ReferenceConfig:
    """How a reference server starts. Frozen: faults change at run time, this does not."""

    db_path: Path | None = None  # None: a temporary database, removed when the server stops
    token: str | None = None  # None: any bearer token (or none) is accepted
    members_file: Path | None = SAMPLE_DIR / "members.jsonl"  # JSON lines, loaded at start
    coupons_file: Path | None = SAMPLE_DIR / "coupons.jsonl"
    rules_file: Path | None = None  # a JSON rules document, published at start
    synthetic_members: int = 0  # members SYN0000001.. made at start (benchmarks)
    seed: int = 0  # seeds the fault dice
    clock: Callable[[], dt.datetime] = _system_now  # central's clock (tests move it)
    max_batch_events: int = 500
    max_batch_bytes: int = MIB  # uncompressed
    max_catalog_bytes: int = 16 * MIB
    max_small_body_bytes: int = 256 * 1024  # authorizations, heartbeats, admin faults


# ---- errors ------------------------------------------------------------------------------------


class ApiError(Exception):
    """An answer with the contract's `Error` shape: a stable code and a short message."""

    def __init__(
        self, status: int, code: str, message: str = "", headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body: dict[str, str] = {"error": self.code}
        if self.message:
            body["message"] = self.message
        return JSONResponse(body, status_code=self.status, headers=self.headers)


class _Invalid(Exception):
    """A payload field that does not fit the contract; becomes `INVALID_PAYLOAD`."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")


# ---- field checks ------------------------------------------------------------------------------

_ULID = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}", re.IGNORECASE)
_RFC3339 = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})", re.ASCII
)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_AMOUNT = re.compile(r"-?\d{1,15}(\.\d{1,4})?", re.ASCII)
_QTY = re.compile(r"-?\d{1,9}(\.\d{1,3})?", re.ASCII)


def is_rfc3339(value: object) -> bool:
    if not isinstance(value, str):
        return False
    match = _RFC3339.fullmatch(value)
    if match is None:
        return False
    day, clock, fraction, offset = match.groups()
    offset = "+00:00" if offset in ("Z", "z") else offset
    try:
        dt.datetime.fromisoformat(f"{day}T{clock}{(fraction or '')[:7]}{offset}")
    except ValueError:
        return False
    return True


def _is_date(value: object) -> bool:
    if not isinstance(value, str):
        return False
    return _is_date_text(value)


@functools.lru_cache(maxsize=4096)
def _is_date_text(value: str) -> bool:
    if _DATE.fullmatch(value) is None:
        return False
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        return False
    return True


class _Fields:
    """Reads one JSON object's fields, raising `_Invalid` naming the first that does not fit."""

    __slots__ = ("data", "prefix")

    def __init__(self, data: dict[str, Any], prefix: str = "") -> None:
        self.data = data
        self.prefix = prefix

    def raw(self, name: str, optional: bool = False) -> Any:
        if name not in self.data:
            if optional:
                return None
            raise _Invalid(self.prefix + name, "missing")
        return self.data[name]

    def text(self, name: str, *, nullable: bool = False, optional: bool = False) -> str | None:
        value = self.raw(name, optional)
        if value is None and (nullable or optional):
            return None
        if not isinstance(value, str) or not value:
            raise _Invalid(self.prefix + name, "must be a non-empty string")
        return value

    def required_text(self, name: str) -> str:
        value = self.text(name)
        assert value is not None
        return value

    def integer(self, name: str, *, optional: bool = False) -> int | None:
        value = self.raw(name, optional)
        if value is None and optional:
            return None
        if type(value) is not int:
            raise _Invalid(self.prefix + name, "must be an integer")
        return value

    def required_int(self, name: str) -> int:
        value = self.integer(name)
        assert value is not None
        return value

    def boolean(self, name: str) -> bool:
        value = self.raw(name, False)
        if not isinstance(value, bool):
            raise _Invalid(self.prefix + name, "must be true or false")
        return value

    def date(self, name: str) -> str:
        value = self.raw(name, False)
        if not _is_date(value):
            raise _Invalid(self.prefix + name, "must be a date YYYY-MM-DD")
        assert isinstance(value, str)
        return value

    def stamp(self, name: str) -> str:
        value = self.raw(name, False)
        if not is_rfc3339(value):
            raise _Invalid(self.prefix + name, "must be an RFC 3339 timestamp")
        assert isinstance(value, str)
        return value

    def choice(self, name: str, choices: tuple[str, ...]) -> str:
        value = self.raw(name, False)
        if value not in choices:
            raise _Invalid(self.prefix + name, "must be one of " + ", ".join(choices))
        assert isinstance(value, str)
        return value

    def objects(self, name: str) -> list[_Fields]:
        value = self.raw(name, False)
        if not isinstance(value, list):
            raise _Invalid(self.prefix + name, "must be a list")
        out = []
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                raise _Invalid(f"{self.prefix}{name}[{index}]", "must be an object")
            out.append(_Fields(item, f"{self.prefix}{name}[{index}]."))
        return out

    def obj(self, name: str) -> _Fields:
        value = self.raw(name, False)
        if not isinstance(value, dict):
            raise _Invalid(self.prefix + name, "must be an object")
        return _Fields(value, f"{self.prefix}{name}.")


# ---- faults ------------------------------------------------------------------------------------


@dataclass(slots=True)
class FaultSettings:
    """What `PUT /_admin/faults` sets. Rates are shares (0..1) of API requests."""

    latency_ms: float = 0.0
    error_rate: float = 0.0
    error_status: int = 503
    throttle_rate: float = 0.0
    retry_after: str = "1"
    drop_after_commit_rate: float = 0.0
    down: bool = False
    seed: int = 0


class Faults:
    """The fault settings and the seeded dice that decide which requests they hit."""

    def __init__(self, seed: int) -> None:
        self.settings = FaultSettings(seed=seed)
        self._dice = random.Random(seed)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self.settings)

    def update(self, changes: object) -> None:
        """Apply a partial update; every key is checked before any is applied."""
        if not isinstance(changes, dict):
            raise ApiError(400, "BAD_REQUEST", "faults must be a JSON object")
        new = FaultSettings(**asdict(self.settings))
        for key, value in changes.items():
            if key in ("error_rate", "throttle_rate", "drop_after_commit_rate"):
                if type(value) not in (int, float) or not 0 <= value <= 1:
                    raise ApiError(400, "BAD_REQUEST", f"{key} must be a number 0..1")
                setattr(new, key, float(value))
            elif key == "latency_ms":
                if type(value) not in (int, float) or not 0 <= value <= 600_000:
                    raise ApiError(400, "BAD_REQUEST", "latency_ms must be 0..600000")
                new.latency_ms = float(value)
            elif key == "error_status":
                if type(value) is not int or not 500 <= value <= 599:
                    raise ApiError(400, "BAD_REQUEST", "error_status must be 500..599")
                new.error_status = value
            elif key == "retry_after":
                if type(value) is int and value >= 0:
                    value = str(value)
                if not isinstance(value, str) or not value.strip() or "\n" in value:
                    raise ApiError(400, "BAD_REQUEST", "retry_after: seconds or an HTTP date")
                new.retry_after = value.strip()
            elif key == "down":
                if not isinstance(value, bool):
                    raise ApiError(400, "BAD_REQUEST", "down must be true or false")
                new.down = value
            elif key == "seed":
                if type(value) is not int:
                    raise ApiError(400, "BAD_REQUEST", "seed must be an integer")
                new.seed = value
            else:
                raise ApiError(400, "BAD_REQUEST", f"unknown fault {key!r}")
        if new.error_rate + new.throttle_rate > 1:
            raise ApiError(400, "BAD_REQUEST", "error_rate + throttle_rate must be at most 1")
        if "seed" in changes:
            self._dice = random.Random(new.seed)
        self.settings = new

    def draw_refusal(self) -> str | None:
        """`"error"`, `"throttle"` or None for one API request (one roll of the dice)."""
        s = self.settings
        if not s.error_rate and not s.throttle_rate:
            return None
        roll = self._dice.random()
        if roll < s.error_rate:
            return "error"
        if roll < s.error_rate + s.throttle_rate:
            return "throttle"
        return None

    def draw_drop(self) -> bool:
        rate = self.settings.drop_after_commit_rate
        return rate >= 1 or (rate > 0 and self._dice.random() < rate)


# ---- the database ------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS members (member_id TEXT PRIMARY KEY, data TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS coupons (code TEXT PRIMARY KEY, data TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rules (id INTEGER PRIMARY KEY CHECK (id = 1), data TEXT NOT NULL);
-- One row per record, at the sequence number of its latest change (latest wins).
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    entity TEXT NOT NULL,
    key TEXT NOT NULL,
    kind TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS changes_entity ON changes (entity, key);
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    store_id TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    message TEXT,
    applied_at TEXT,
    received_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checks (
    store_id TEXT NOT NULL,
    business_date TEXT NOT NULL,
    wsid INTEGER NOT NULL,
    check_no INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    member_id TEXT,
    total TEXT NOT NULL,
    points_earned INTEGER NOT NULL,
    tickets_earned INTEGER NOT NULL,
    wallet_delta INTEGER NOT NULL,
    earn_mode TEXT NOT NULL,
    applied_at TEXT NOT NULL,
    event_count INTEGER NOT NULL,
    PRIMARY KEY (store_id, business_date, wsid, check_no)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tickets (
    member_id TEXT PRIMARY KEY,
    tickets INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS redemptions (
    code TEXT NOT NULL,
    store_id TEXT NOT NULL,
    business_date TEXT NOT NULL,
    wsid INTEGER NOT NULL,
    check_no INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    member_id TEXT,
    authorization_id TEXT,
    applied_at TEXT NOT NULL,
    PRIMARY KEY (code, store_id, business_date, wsid, check_no)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS conflicts (
    event_id TEXT PRIMARY KEY,
    code TEXT NOT NULL,
    store_id TEXT NOT NULL,
    business_date TEXT NOT NULL,
    wsid INTEGER NOT NULL,
    check_no INTEGER NOT NULL,
    at TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS authorizations (
    idempotency_key TEXT PRIMARY KEY,
    authorization_id TEXT NOT NULL UNIQUE,
    code TEXT NOT NULL,
    store_id TEXT NOT NULL,
    gateway_id TEXT NOT NULL,
    member_id TEXT,
    business_date TEXT NOT NULL,
    wsid INTEGER NOT NULL,
    check_no INTEGER NOT NULL,
    state TEXT NOT NULL,  -- pending | consumed | cancelled
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS authorizations_code ON authorizations (code, state);
CREATE TABLE IF NOT EXISTS catalogs (
    store_id TEXT PRIMARY KEY,
    content_hash TEXT NOT NULL,
    generated_at TEXT NOT NULL,
    products INTEGER NOT NULL,
    received_at TEXT NOT NULL,
    data TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS heartbeats (
    gateway_id TEXT PRIMARY KEY,
    store_id TEXT NOT NULL,
    received_at TEXT NOT NULL,
    data TEXT NOT NULL
) WITHOUT ROWID;
"""

_EMIT = "INSERT OR REPLACE INTO changes (entity, key, kind) VALUES (?, ?, ?)"
_ADD_BALANCE = """UPDATE members SET data = json_set(data,
    '$.points_balance', coalesce(json_extract(data, '$.points_balance'), 0) + ?,
    '$.wallet_points', coalesce(json_extract(data, '$.wallet_points'), 0) + ?,
    '$.balance_as_of', ?) WHERE member_id = ?"""
_ADD_TICKETS = """INSERT INTO tickets VALUES (?, ?) ON CONFLICT (member_id)
    DO UPDATE SET tickets = tickets + excluded.tickets"""
_BALANCE_KEYS = ("points_balance", "wallet_points", "balance_as_of")
_CHECK_INTEGERS = ("wsid", "rvc", "check", "points_earned", "tickets_earned", "wallet_delta")
_MISSING = object()


def _invalid(name: str, value: object, problem: str) -> NoReturn:
    raise _Invalid("payload." + name, "missing" if value is _MISSING else problem)


@dataclass(slots=True)
class _Batch:
    """What one batch of events changes, gathered so members are updated once per batch."""

    store: str
    applied_at: str
    # member id -> [points, wallet points, tickets, checks]
    deltas: dict[str, list[int]] = field(default_factory=dict)
    checks: list[tuple[Any, ...]] = field(default_factory=list)  # checks.* but applied_at
    touched: set[str] = field(default_factory=set)  # members whose record changed
    unknown_member_checks: int = 0
    identifications: int = 0


# How one event type is applied: (db, batch, event id, payload) -> None or a refusal.
_Applier = Callable[["CentralDb", _Batch, str, dict[str, Any]], "tuple[str, str] | None"]


@dataclass(slots=True)
class _Tallies:
    """Counters since start (the admin stats); touched on the database thread only."""

    received: Counter[str] = field(default_factory=Counter)
    accepted: Counter[str] = field(default_factory=Counter)
    duplicate: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    bad_batches: int = 0
    replayed_rejections: int = 0
    unknown_member_checks: int = 0
    identifications: Counter[str] = field(default_factory=Counter)


class CentralDb:
    """Central's state in SQLite. Confined to one thread: every method runs on it."""

    def __init__(self, path: Path, clock: Callable[[], dt.datetime]) -> None:
        self.path = path
        self._clock = clock
        self._last_stamp = ""
        self.tallies = _Tallies()
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA cache_size=-65536")
        self.conn.executescript(_SCHEMA)
        secret = self.conn.execute("SELECT value FROM meta WHERE key = 'cursor_secret'").fetchone()
        if secret is None:
            self._secret = secrets.token_bytes(32)
            with self.transaction():
                self.conn.execute(
                    "INSERT INTO meta VALUES ('cursor_secret', ?)", (self._secret.hex(),)
                )
        else:
            self._secret = bytes.fromhex(secret[0])

    def close(self) -> None:
        self.conn.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def stamp(self) -> str:
        """Now on central's clock, strictly after every stamp given before (a clock stepping back
        must not make `balance_as_of` go backwards)."""
        stamp = utc_stamp(self._clock())
        if stamp <= self._last_stamp:
            last = dt.datetime.fromisoformat(self._last_stamp[:-1])
            stamp = (last + dt.timedelta(microseconds=1)).isoformat(timespec="microseconds") + "Z"
        self._last_stamp = stamp
        return stamp

    def change_seq(self) -> int:
        row = self.conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchone()
        return int(row[0]) if row else 0

    # ---- records: members, coupons, rules ----

    def load_file(self, kind: str, path: Path) -> int:
        """Seed members or coupons from JSON lines. A record already in the database is left
        as it is, so a restart on the same database does not undo what events changed."""
        records = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{path}:{number}: not JSON ({exc})") from None
            records.append(record)
        try:
            if kind == "member":
                return self.upsert_members(records, keep_existing=True)
            return self.upsert_coupons(records, keep_existing=True)
        except ApiError as exc:
            raise ValueError(f"{path}: {exc.message}") from None

    def upsert_members(self, records: object, *, keep_existing: bool = False) -> int:
        """Store members as given (extra keys kept). Balance fields a record leaves out are kept
        from the current record; a record with no `balance_as_of` at all gets now."""
        if not isinstance(records, list):
            raise ApiError(400, "BAD_REQUEST", "expected a JSON list of member records")
        now = self.stamp()
        with self.transaction() as conn:
            for index, raw in enumerate(records):
                if not isinstance(raw, dict) or not isinstance(raw.get("member_id"), str):
                    raise ApiError(400, "BAD_REQUEST", f"[{index}]: a member needs member_id")
                record = dict(raw)
                current = self._member(raw["member_id"])
                if current is not None and keep_existing:
                    continue
                for key in _BALANCE_KEYS:
                    if key not in record and current is not None and key in current:
                        record[key] = current[key]
                if record.get("balance_as_of") is None:
                    record["balance_as_of"] = now
                try:
                    Member.model_validate(record)
                except ValidationError as exc:
                    raise ApiError(400, "BAD_REQUEST", f"[{index}]: {_first_error(exc)}") from None
                conn.execute(
                    "INSERT OR REPLACE INTO members VALUES (?, ?)",
                    (record["member_id"], _dumps(record)),
                )
                conn.execute(_EMIT, ("member", record["member_id"], "member"))
        return len(records)

    def upsert_coupons(self, records: object, *, keep_existing: bool = False) -> int:
        if not isinstance(records, list):
            raise ApiError(400, "BAD_REQUEST", "expected a JSON list of coupon records")
        with self.transaction() as conn:
            for index, raw in enumerate(records):
                try:
                    Coupon.model_validate(raw)
                except ValidationError as exc:
                    raise ApiError(400, "BAD_REQUEST", f"[{index}]: {_first_error(exc)}") from None
                assert isinstance(raw, dict)
                verb = "INSERT OR IGNORE" if keep_existing else "INSERT OR REPLACE"
                if conn.execute(
                    f"{verb} INTO coupons VALUES (?, ?)", (raw["code"], _dumps(raw))
                ).rowcount:
                    conn.execute(_EMIT, ("coupon", raw["code"], "coupon"))
        return len(records)

    def synthesize_members(self, count: int) -> None:
        """Members SYN0000001.. made inside SQLite, for benchmarks of a million members.

        Members already there are kept (with their balances); on a database that holds them
        all, this costs one count.
        """
        (present,) = self.conn.execute(
            "SELECT COUNT(*) FROM members WHERE member_id BETWEEN 'SYN0000001' AND ?",
            (f"SYN{count:07d}",),
        ).fetchone()
        if present >= count:
            return
        now = self.stamp()
        numbers = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)"
        with self.transaction() as conn:
            conn.execute(
                numbers
                + """INSERT OR IGNORE INTO members SELECT printf('SYN%07d', i), json_object(
                    'member_id', printf('SYN%07d', i),
                    'identifiers', json_array(printf('9%015d', i)),
                    'display_name', printf('Member %d', i), 'tier', 'BASIC', 'birthday', NULL,
                    'flags', json_array(), 'earn_mode', 'points', 'lottery_consent', json('false'),
                    'points_balance', i % 1000, 'wallet_points', 0, 'balance_as_of', ?) FROM n""",
                (count, now),
            )
            conn.execute(
                numbers + "INSERT OR REPLACE INTO changes (entity, key, kind) "
                "SELECT 'member', printf('SYN%07d', i), 'member' FROM n",
                (count,),
            )

    def delete_member(self, member_id: str) -> bool:
        with self.transaction() as conn:
            if conn.execute("DELETE FROM members WHERE member_id = ?", (member_id,)).rowcount == 0:
                return False
            conn.execute(_EMIT, ("member", member_id, "member_deleted"))
        return True

    def delete_coupon(self, code: str) -> bool:
        with self.transaction() as conn:
            if conn.execute("DELETE FROM coupons WHERE code = ?", (code,)).rowcount == 0:
                return False
            conn.execute(_EMIT, ("coupon", code, "coupon_deleted"))
        return True

    def set_rules(self, document: object) -> None:
        if not isinstance(document, dict):
            raise ApiError(400, "BAD_REQUEST", "the rules document must be a JSON object")
        version = document.get("version")
        if not isinstance(version, str) or not version:
            raise ApiError(400, "BAD_REQUEST", "the rules document needs a version string")
        with self.transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO rules VALUES (1, ?)", (_dumps(document),))
            conn.execute(_EMIT, ("rules", "", "rules"))

    def _member(self, member_id: str) -> dict[str, Any] | None:
        row = self.conn.execute(
            "SELECT data FROM members WHERE member_id = ?", (member_id,)
        ).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def member_view(self, member_id: str) -> dict[str, Any] | None:
        record = self._member(member_id)
        if record is None:
            return None
        row = self.conn.execute(
            "SELECT tickets FROM tickets WHERE member_id = ?", (member_id,)
        ).fetchone()
        return {"record": record, "tickets": row[0] if row else 0}

    def coupon_view(self, code: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT data FROM coupons WHERE code = ?", (code,)).fetchone()
        if row is None:
            return None
        states = dict(
            self.conn.execute(
                "SELECT state, COUNT(*) FROM authorizations WHERE code = ? GROUP BY state",
                (code,),
            ).fetchall()
        )
        redemptions = self.conn.execute(
            "SELECT COUNT(*) FROM redemptions WHERE code = ?", (code,)
        ).fetchone()[0]
        return {"record": json.loads(row[0]), "redemptions": redemptions, "authorizations": states}

    # ---- changes ----

    def _seal(self, state: dict[str, Any]) -> str:
        body = base64.urlsafe_b64encode(_dumps(state).encode()).rstrip(b"=")
        mac = hmac.new(self._secret, body, hashlib.sha256).digest()[:12]
        return body.decode() + "." + base64.urlsafe_b64encode(mac).decode()

    def _unseal(self, cursor: str) -> dict[str, Any]:
        bad = ApiError(400, "BAD_CURSOR", "unknown cursor: start again with an empty cursor")
        body, _, mac = cursor.partition(".")
        try:
            expected = hmac.new(self._secret, body.encode(), hashlib.sha256).digest()[:12]
            if not hmac.compare_digest(base64.urlsafe_b64decode(mac), expected):
                raise bad
            state = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except (ValueError, UnicodeError):
            raise bad from None
        if not isinstance(state, dict) or type(state.get("s")) is not int:
            raise bad
        if state["s"] > self.change_seq():
            raise bad  # from a database that has since been restored from an older copy
        return state

    def changes(self, cursor: str, limit: int) -> bytes:
        """One page of changes, as the JSON body (records are spliced in as stored)."""
        if not cursor:
            state: dict[str, Any] = {"m": "s", "p": 0, "k": "", "s": self.change_seq()}
        else:
            state = self._unseal(cursor)
        if (
            state.get("m") == "s"
            and state.get("p") in (0, 1, 2)
            and isinstance(state.get("k"), str)
        ):
            parts, state, more = self._snapshot_page(state, limit)
        elif state.get("m") == "d" and set(state) == {"m", "s"}:
            parts, state, more = self._delta_page(state, limit)
        else:
            raise ApiError(400, "BAD_CURSOR", "unknown cursor: start again with an empty cursor")
        return (
            '{"changes":['
            + ",".join(parts)
            + '],"next_cursor":"'
            + self._seal(state)
            + '","has_more":'
            + ("true" if more else "false")
            + "}"
        ).encode()

    def _snapshot_page(
        self, state: dict[str, Any], limit: int
    ) -> tuple[list[str], dict[str, Any], bool]:
        # Keyset pagination on each table's primary key: a page costs the same at the millionth
        # member as at the first.
        phase, key, parts = state["p"], state["k"], []
        room = limit
        while room > 0 and phase < 3:
            if phase == 2:
                row = self.conn.execute("SELECT data FROM rules WHERE id = 1").fetchone()
                if row is not None:
                    parts.append('{"kind":"rules","data":' + row[0] + "}")
                    room -= 1
                phase, key = 3, ""
                break
            table, column, kind = (
                ("members", "member_id", "member") if phase == 0 else ("coupons", "code", "coupon")
            )
            rows = self.conn.execute(
                f"SELECT {column}, data FROM {table} WHERE {column} > ? ORDER BY {column} LIMIT ?",
                (key, room + 1),
            ).fetchall()
            prefix = '{"kind":"' + kind + '","data":'
            parts.extend([prefix + data + "}" for _, data in rows[:room]])
            if len(rows) > room:
                key = rows[room - 1][0]
                room = 0
            else:
                room -= len(rows)
                phase, key = phase + 1, ""
        if phase < 3:
            return parts, {"m": "s", "p": phase, "k": key, "s": state["s"]}, True
        # Done: carry on from where the snapshot began, so what changed meanwhile comes as deltas.
        more = (
            self.conn.execute(
                "SELECT 1 FROM changes WHERE seq > ? LIMIT 1", (state["s"],)
            ).fetchone()
            is not None
        )
        return parts, {"m": "d", "s": state["s"]}, more

    def _delta_page(
        self, state: dict[str, Any], limit: int
    ) -> tuple[list[str], dict[str, Any], bool]:
        rows = self.conn.execute(
            """SELECT c.seq, c.kind, c.key, m.data, k.data, r.data FROM changes c
               LEFT JOIN members m ON c.kind = 'member' AND m.member_id = c.key
               LEFT JOIN coupons k ON c.kind = 'coupon' AND k.code = c.key
               LEFT JOIN rules r ON c.kind = 'rules' AND r.id = 1
               WHERE c.seq > ? ORDER BY c.seq LIMIT ?""",
            (state["s"], limit + 1),
        ).fetchall()
        parts = []
        last = state["s"]
        for seq, kind, key, member, coupon, rules in rows[:limit]:
            last = seq
            if kind == "member_deleted":
                data = _dumps({"member_id": key})
            elif kind == "coupon_deleted":
                data = _dumps({"code": key})
            else:
                data = member or coupon or rules
                if data is None:  # cannot happen: a deletion replaces the change row
                    continue
            parts.append('{"kind":"' + kind + '","data":' + data + "}")
        return parts, {"m": "d", "s": last}, len(rows) > limit

    # ---- events ----

    def ingest(self, store: str, raw: bytes, max_events: int) -> bytes:
        """Apply one batch in one transaction; the answer's JSON body, one result per event."""
        t = self.tallies
        try:
            events = _check_batch(json.loads(raw), max_events)
        except (ValueError, UnicodeError):
            t.bad_batches += 1
            raise ApiError(400, "BAD_BATCH", "the body is not JSON") from None
        except ApiError:
            t.bad_batches += 1
            raise
        ids = [event["id"].upper() for event in events]
        known = self._known_events(ids)
        batch = _Batch(store, self.stamp())
        results: list[str] = []
        fresh: list[tuple[Any, ...]] = []
        received: Counter[str] = Counter()
        outcomes: dict[str, Counter[str]] = {
            "accepted": Counter(),
            "duplicate": Counter(),
            "rejected": Counter(),
        }
        reasons: Counter[str] = Counter()
        replayed = 0
        with self.transaction():
            for event, event_id in zip(events, ids, strict=True):
                kind = event["type"]
                received[kind] += 1
                prior = known.get(event_id)
                if prior is not None:
                    # Seen before: the first outcome again, nothing applied twice.
                    status, reason, message, applied_at = prior
                    if status == "accepted":
                        status = "duplicate"
                    else:
                        replayed += 1
                        reasons[reason or ""] += 1
                else:
                    refusal = self._apply(batch, event_id, kind, event["payload"])
                    if refusal is None:
                        status, reason, message = "accepted", None, None
                        applied_at = batch.applied_at
                    else:
                        status, applied_at = "rejected", None
                        reason, message = refusal
                        reasons[reason] += 1
                    known[event_id] = (status, reason, message, applied_at)
                    fresh.append((event_id, kind, store, status, reason, message, applied_at))
                outcomes[status][kind] += 1
                if status == "rejected":
                    results.append(
                        _dumps(
                            {
                                "id": event["id"],
                                "status": status,
                                "reason": reason,
                                "message": message,
                                "applied_at": None,
                            }
                        )
                    )
                else:  # the common case, spelled out: ids are ULIDs, nothing to escape
                    results.append(
                        f'{{"id":"{event["id"]}","status":"{status}","reason":null,'
                        f'"message":null,"applied_at":"{applied_at}"}}'
                    )
            self._settle_members(batch)
            self.conn.executemany(
                f"INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, '{batch.applied_at}')", fresh
            )
        t.batches += 1
        t.received.update(received)
        t.accepted.update(outcomes["accepted"])
        t.duplicate.update(outcomes["duplicate"])
        t.rejected.update(outcomes["rejected"])
        t.reasons.update(reasons)
        t.replayed_rejections += replayed
        t.unknown_member_checks += batch.unknown_member_checks
        t.identifications[store] += batch.identifications
        return ('{"results":[' + ",".join(results) + "]}").encode()

    def _known_events(
        self, ids: list[str]
    ) -> dict[str, tuple[str, str | None, str | None, str | None]]:
        known = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for row in self.conn.execute(
                "SELECT event_id, status, reason, message, applied_at FROM events "
                f"WHERE event_id IN ({marks})",
                chunk,
            ):
                known[row[0]] = (row[1], row[2], row[3], row[4])
        return known

    def _apply(
        self, batch: _Batch, event_id: str, kind: str, payload: dict[str, Any]
    ) -> tuple[str, str] | None:
        """Apply one new event inside the batch's transaction; a refusal is (reason, message)."""
        apply = self._appliers.get(kind)
        if apply is None:
            return "UNKNOWN_TYPE", f"unknown event type {kind!r}"
        payload_store = payload.get("store_id")
        if not isinstance(payload_store, str) or not payload_store:
            return "INVALID_PAYLOAD", "payload.store_id: must be a non-empty string"
        if payload_store != batch.store:
            return "WRONG_STORE", f"payload store_id {payload_store!r} is not {batch.store!r}"
        try:
            return apply(self, batch, event_id, payload)
        except _Invalid as exc:
            return "INVALID_PAYLOAD", str(exc)

    def _record_checks(self, batch: _Batch) -> None:
        """Record the batch's checks; a check key is applied once, whatever event carries it.

        A second event id for a check key already recorded is a gateway bug: it is accepted but
        not applied again, and counted (duplicate_check_keys in the admin stats).
        """
        if not batch.checks:
            return
        applied_at = batch.applied_at
        rows = [(*row, applied_at) for row in batch.checks]
        new = rows
        inserted = self.conn.executemany(
            "INSERT OR IGNORE INTO checks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)", rows
        ).rowcount
        if inserted != len(rows):  # some keys were there already (or twice in this batch)
            new = []
            for row in rows:
                first = self.conn.execute(
                    "SELECT event_id FROM checks WHERE store_id = ? AND business_date = ? "
                    "AND wsid = ? AND check_no = ?",
                    row[:4],
                ).fetchone()
                if first[0] == row[4]:
                    new.append(row)
                else:
                    self.conn.execute(
                        "UPDATE checks SET event_count = event_count + 1 WHERE store_id = ? "
                        "AND business_date = ? AND wsid = ? AND check_no = ?",
                        row[:4],
                    )
        deltas = batch.deltas
        for row in new:
            member_id = row[5]
            if member_id is None:
                continue
            delta = deltas.get(member_id)
            if delta is None:
                delta = deltas[member_id] = [0, 0, 0, 0]
            if row[10] == "lottery":  # the points went to the wallet and tickets
                delta[1] += row[9]
                delta[2] += row[8]
            else:
                delta[0] += row[7]
            delta[3] += 1

    def _settle_members(self, batch: _Batch) -> None:
        """Add the batch's points to the members it touched, once per member, and publish them."""
        self._record_checks(batch)
        if batch.deltas:
            members = list(batch.deltas)
            found: set[str] = set()
            for start in range(0, len(members), 500):
                chunk = members[start : start + 500]
                marks = ",".join("?" * len(chunk))
                found.update(
                    row[0]
                    for row in self.conn.execute(
                        f"SELECT member_id FROM members WHERE member_id IN ({marks})", chunk
                    )
                )
            applied_at = batch.applied_at
            self.conn.executemany(
                _ADD_BALANCE,
                [(d[0], d[1], applied_at, m) for m, d in batch.deltas.items() if m in found],
            )
            self.conn.executemany(
                _ADD_TICKETS,
                [(m, d[2]) for m, d in batch.deltas.items() if m in found and d[2]],
            )
            batch.unknown_member_checks += sum(
                d[3] for m, d in batch.deltas.items() if m not in found
            )
            batch.touched.update(found)
        if batch.touched:
            self.conn.executemany(_EMIT, [("member", m, "member") for m in batch.touched])

    def _check_posted(
        self, batch: _Batch, event_id: str, p: dict[str, Any]
    ) -> tuple[str, str] | None:
        # Checked field by field without helpers: this runs for every check of every store.
        get = p.get
        business_date = get("business_date", _MISSING)
        if not _is_date(business_date):
            _invalid("business_date", business_date, "must be a date YYYY-MM-DD")
        for name in _CHECK_INTEGERS:
            if type(get(name, _MISSING)) is not int:
                _invalid(name, get(name, _MISSING), "must be an integer")
        member_id = get("member_id", _MISSING)
        if member_id is not None and (type(member_id) is not str or not member_id):
            _invalid("member_id", member_id, "must be a non-empty string or null")
        for name in ("subtotal", "total"):
            value = get(name, _MISSING)
            if type(value) is not str or _AMOUNT.fullmatch(value) is None:
                _invalid(name, value, 'must be a decimal string like "12.50"')
        items = get("items", _MISSING)
        if type(items) is not list:
            _invalid("items", items, "must be a list")
        for index, item in enumerate(items):
            if type(item) is not dict:
                _invalid(f"items[{index}]", item, "must be an object")
            qty, obj, total = (
                item.get("qty", _MISSING),
                item.get("object", _MISSING),
                item.get("total", _MISSING),
            )
            if type(qty) is not str or _QTY.fullmatch(qty) is None:
                _invalid(f"items[{index}].qty", qty, 'must be a decimal string like "1.500"')
            if type(obj) is not int:
                _invalid(f"items[{index}].object", obj, "must be an integer")
            if type(total) is not str or _AMOUNT.fullmatch(total) is None:
                _invalid(f"items[{index}].total", total, 'must be a decimal string like "12.50"')
        for name in ("coupons", "unknown_coupon_refs"):
            value = get(name, _MISSING)
            if type(value) is not list or not all(type(v) is str for v in value):
                _invalid(name, value, "must be a list of strings")
        earn_mode = get("earn_mode", _MISSING)
        if earn_mode not in ("points", "lottery"):
            _invalid("earn_mode", earn_mode, "must be one of points, lottery")
        rules_version = get("rules_version", _MISSING)
        if type(rules_version) is not str or not rules_version:
            _invalid("rules_version", rules_version, "must be a non-empty string")
        earned = (p["points_earned"], p["tickets_earned"], p["wallet_delta"], earn_mode)
        batch.checks.append(
            (
                batch.store,
                business_date,
                p["wsid"],
                p["check"],
                event_id,
                member_id,
                p["total"],
                *earned,
            )
        )
        return None

    def _coupon_redeemed(
        self, batch: _Batch, event_id: str, p: dict[str, Any]
    ) -> tuple[str, str] | None:
        f = _Fields(p, "payload.")
        code = f.required_text("code")
        f.required_text("coupon_ref")
        business_date = f.date("business_date")
        wsid, check = f.required_int("wsid"), f.required_int("check")
        member_id = f.text("member_id", nullable=True)
        coupon = self.conn.execute("SELECT data FROM coupons WHERE code = ?", (code,)).fetchone()
        if coupon is None:
            return "UNKNOWN_COUPON", f"no coupon {code!r}"
        check_key = (code, batch.store, business_date, wsid, check)
        if self.conn.execute(
            "SELECT 1 FROM redemptions WHERE code = ? AND store_id = ? AND business_date = ? "
            "AND wsid = ? AND check_no = ?",
            check_key,
        ).fetchone():
            return None  # this check's redemption is already counted
        approval = self.conn.execute(
            "SELECT authorization_id FROM authorizations WHERE code = ? AND store_id = ? "
            "AND business_date = ? AND wsid = ? AND check_no = ? AND state = 'pending'",
            check_key,
        ).fetchone()
        if approval is not None:
            self.conn.execute(
                "UPDATE authorizations SET state = 'consumed', updated_at = ? "
                "WHERE authorization_id = ?",
                (batch.applied_at, approval[0]),
            )
        else:
            limit = json.loads(coupon[0]).get("max_redemptions")
            if isinstance(limit, int) and self._coupon_usage(code) >= limit:
                self.conn.execute(
                    "INSERT OR IGNORE INTO conflicts VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (event_id, *check_key[:2], business_date, wsid, check, batch.applied_at),
                )
                return "COUPON_CONFLICT", f"{code} was already redeemed up to its limit ({limit})"
        self.conn.execute(
            "INSERT INTO redemptions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*check_key, event_id, member_id, approval[0] if approval else None, batch.applied_at),
        )
        return None

    def _coupon_released(
        self, batch: _Batch, event_id: str, p: dict[str, Any]
    ) -> tuple[str, str] | None:
        f = _Fields(p, "payload.")
        code = f.required_text("code")
        f.required_text("coupon_ref")
        f.choice("reason", ("void", "expired"))
        wsid, check = f.integer("wsid", optional=True), f.integer("check", optional=True)
        sql = (
            "UPDATE authorizations SET state = 'cancelled', updated_at = ? "
            "WHERE code = ? AND store_id = ? AND state = 'pending'"
        )
        args: tuple[Any, ...] = (batch.applied_at, code, batch.store)
        if wsid is not None and check is not None:
            sql += " AND wsid = ? AND check_no = ?"
            args += (wsid, check)
        self.conn.execute(sql, args)
        return None

    def _consent_changed(
        self, batch: _Batch, event_id: str, p: dict[str, Any]
    ) -> tuple[str, str] | None:
        f = _Fields(p, "payload.")
        member_id = f.required_text("member_id")
        f.choice("program", ("lottery",))
        consent = f.boolean("consent")
        earn_mode = f.choice("earn_mode", ("points", "lottery"))
        f.required_int("wsid")
        updated = self.conn.execute(
            "UPDATE members SET data = json_set(data, '$.earn_mode', ?, '$.lottery_consent', "
            "json(?)) WHERE member_id = ?",
            (earn_mode, "true" if consent else "false", member_id),
        ).rowcount
        if not updated:
            return "UNKNOWN_MEMBER", f"no member {member_id!r}"
        batch.touched.add(member_id)
        return None

    def _member_identified(
        self, batch: _Batch, event_id: str, p: dict[str, Any]
    ) -> tuple[str, str] | None:
        f = _Fields(p, "payload.")
        f.required_text("member_id")
        f.required_int("wsid")
        f.required_int("rvc")
        f.required_int("check")
        batch.identifications += 1
        return None

    _appliers: ClassVar[dict[str, _Applier]] = {
        "check.posted": _check_posted,
        "coupon.redeemed": _coupon_redeemed,
        "coupon.released": _coupon_released,
        "consent.changed": _consent_changed,
        "member.identified": _member_identified,
    }

    def _coupon_usage(self, code: str) -> int:
        """Redemptions plus approvals not yet redeemed or released: what a limit is checked on."""
        row = self.conn.execute(
            "SELECT (SELECT COUNT(*) FROM redemptions WHERE code = ?) + (SELECT COUNT(*) FROM "
            "authorizations WHERE code = ? AND state = 'pending')",
            (code, code),
        ).fetchone()
        return int(row[0])

    # ---- coupon authorizations ----

    def authorize(self, code: str, body: object, gateway_id: str) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(400, "BAD_REQUEST", "the body must be a JSON object")
        f = _Fields(body)
        try:
            store = f.required_text("store_id")
            f.required_text("gateway_id")
            member_id = f.text("member_id", nullable=True)
            check = f.obj("check")
            business_date = check.date("business_date")
            wsid, check_no = check.required_int("wsid"), check.required_int("check")
            key = f.required_text("idempotency_key")
        except _Invalid as exc:
            raise ApiError(400, "BAD_REQUEST", str(exc)) from None
        now_dt = self._clock()
        with self.transaction() as conn:
            prior = conn.execute(
                "SELECT authorization_id, state FROM authorizations WHERE idempotency_key = ?",
                (key,),
            ).fetchone()
            if prior is not None and prior[1] != "cancelled":
                return _approved(prior[0])
            reason = self._refusal(code, member_id, now_dt)
            if reason is not None:
                return {"status": "declined", "reason": reason, "authorization_id": None}
            now = self.stamp()
            if prior is not None:  # released, then scanned again on the same check
                conn.execute(
                    "UPDATE authorizations SET state = 'pending', updated_at = ? "
                    "WHERE idempotency_key = ?",
                    (now, key),
                )
                return _approved(prior[0])
            authorization_id = "AUTH-" + secrets.token_hex(10).upper()
            tail = (wsid, check_no, now, now)
            conn.execute(
                "INSERT INTO authorizations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
                (key, authorization_id, code, store, gateway_id, member_id, business_date, *tail),
            )
        return _approved(authorization_id)

    def _refusal(self, code: str, member_id: str | None, now: dt.datetime) -> str | None:
        row = self.conn.execute("SELECT data FROM coupons WHERE code = ?", (code,)).fetchone()
        if row is None:
            return "UNKNOWN_COUPON"
        coupon = Coupon.model_validate_json(row[0])
        if coupon.status == "void":
            return "VOID"
        if coupon.member_id is not None and coupon.member_id != member_id:
            return "WRONG_MEMBER"
        if coupon.valid_from is not None and now < coupon.valid_from:
            return "NOT_YET_VALID"
        if coupon.valid_to is not None and now > coupon.valid_to:
            return "EXPIRED"
        limit = coupon.max_redemptions
        if limit is not None and self._coupon_usage(code) >= limit:
            return "ALREADY_REDEEMED"
        return None

    # ---- catalog and heartbeat ----

    def put_catalog(self, store: str, body: object) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(400, "BAD_REQUEST", "the body must be a JSON object")
        f = _Fields(body)
        try:
            if f.required_text("store_id") != store:
                raise ApiError(400, "WRONG_STORE", "store_id is not the path's store")
            generated_at = f.stamp("generated_at")
            content_hash = f.required_text("content_hash")
            products = f.objects("products")
            for product in products:
                product.required_int("object_number")
                if not isinstance(product.data.get("name"), str):
                    raise _Invalid(product.prefix + "name", "must be a string")
                for group in ("family_group", "major_group"):
                    if group not in product.data or type(product.data[group]) not in (
                        str,
                        int,
                        type(None),
                    ):
                        raise _Invalid(product.prefix + group, "must be a string, integer or null")
                prices = product.data.get("prices")
                if not isinstance(prices, list) or not all(
                    isinstance(p, str) and _AMOUNT.fullmatch(p) for p in prices
                ):
                    raise _Invalid(product.prefix + "prices", "must be a list of decimal strings")
                product.boolean("active")
        except _Invalid as exc:
            raise ApiError(400, "BAD_REQUEST", str(exc)) from None
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT content_hash FROM catalogs WHERE store_id = ?", (store,)
            ).fetchone()
            if row is not None and row[0] == content_hash:
                return {"status": "unchanged", "content_hash": content_hash}
            conn.execute(
                "INSERT OR REPLACE INTO catalogs VALUES (?, ?, ?, ?, ?, ?)",
                (store, content_hash, generated_at, len(products), self.stamp(), _dumps(body)),
            )
        return {"status": "stored", "content_hash": content_hash}

    def heartbeat(self, store: str, body: object) -> None:
        if not isinstance(body, dict):
            raise ApiError(400, "BAD_REQUEST", "the body must be a JSON object")
        f = _Fields(body)
        try:
            gateway_id = f.required_text("gateway_id")
            if not isinstance(body.get("version"), str):
                raise _Invalid("version", "must be a string")
            f.stamp("sent_at")
            if f.required_int("queue_depth") < 0:
                raise _Invalid("queue_depth", "must not be negative")
            age = f.raw("oldest_event_age_s")
            if age is not None and (type(age) not in (int, float) or age < 0):
                raise _Invalid("oldest_event_age_s", "must be a number of seconds or null")
            f.text("cursor", nullable=True)
            for name, adapter in f.obj("adapters").data.items():
                a = _Fields(adapter if isinstance(adapter, dict) else {}, f"adapters.{name}.")
                if not isinstance(adapter, dict) or not isinstance(adapter.get("state"), str):
                    raise _Invalid(f"adapters.{name}.state", "must be a string")
                a.required_int("connections")
            f.required_int("dead_letters")
        except _Invalid as exc:
            raise ApiError(400, "BAD_REQUEST", str(exc)) from None
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO heartbeats VALUES (?, ?, ?, ?)",
                (gateway_id, store, self.stamp(), _dumps(body)),
            )

    # ---- admin views ----

    def stats(self) -> dict[str, Any]:
        t, c = self.tallies, self.conn

        def one(sql: str) -> int:
            return int(c.execute(sql).fetchone()[0])

        heartbeats = {
            gateway: {"store_id": store, "received_at": at, "heartbeat": json.loads(data)}
            for gateway, store, at, data in c.execute("SELECT * FROM heartbeats")
        }
        catalogs = {
            store: {"content_hash": h, "generated_at": g, "products": n, "received_at": at}
            for store, h, g, n, at in c.execute(
                "SELECT store_id, content_hash, generated_at, products, received_at FROM catalogs"
            )
        }
        return {
            "events": {
                "received": dict(t.received),
                "accepted": dict(t.accepted),
                "duplicate": dict(t.duplicate),
                "rejected": dict(t.rejected),
            },
            "rejections": dict(t.reasons),
            "replayed_rejections": t.replayed_rejections,
            "batches": t.batches,
            "bad_batches": t.bad_batches,
            "checks": one("SELECT COUNT(*) FROM checks"),
            "duplicate_check_keys": one("SELECT COUNT(*) FROM checks WHERE event_count > 1"),
            "unknown_member_checks": t.unknown_member_checks,
            "identifications": dict(t.identifications),
            "members": one("SELECT COUNT(*) FROM members"),
            "coupons": one("SELECT COUNT(*) FROM coupons"),
            "change_seq": self.change_seq(),
            "redemptions": one("SELECT COUNT(*) FROM redemptions"),
            "coupon_conflicts": one("SELECT COUNT(*) FROM conflicts"),
            "authorizations": dict(
                c.execute("SELECT state, COUNT(*) FROM authorizations GROUP BY state").fetchall()
            ),
            "heartbeats": heartbeats,
            "catalogs": catalogs,
        }

    def checks(self, store: str | None) -> list[dict[str, Any]]:
        sql = (
            "SELECT store_id, business_date, wsid, check_no, member_id, total, points_earned, "
            "tickets_earned, wallet_delta, earn_mode, event_id, event_count, applied_at FROM checks"
        )
        rows = (
            self.conn.execute(sql + " WHERE store_id = ? ORDER BY 2, 3, 4", (store,))
            if store
            else self.conn.execute(sql + " ORDER BY 1, 2, 3, 4")
        )
        names = (
            *("store_id", "business_date", "wsid", "check", "member_id", "total"),
            *("points_earned", "tickets_earned", "wallet_delta", "earn_mode"),
            *("event_id", "event_ids", "applied_at"),
        )
        return [dict(zip(names, row, strict=True)) for row in rows]


def _approved(authorization_id: str) -> dict[str, Any]:
    return {"status": "approved", "reason": None, "authorization_id": authorization_id}


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "record"
    return f"{where}: {error['msg']}"


def _check_batch(body: object, max_events: int) -> list[dict[str, Any]]:
    """The structural checks that refuse a whole batch (400 `BAD_BATCH`)."""
    if not isinstance(body, dict):
        raise ApiError(400, "BAD_BATCH", "the body must be a JSON object")
    batch_id = body.get("batch_id")
    if not isinstance(batch_id, str) or not batch_id:
        raise ApiError(400, "BAD_BATCH", "batch_id must be a non-empty string")
    events = body.get("events")
    if not isinstance(events, list):
        raise ApiError(400, "BAD_BATCH", "events must be a list")
    if len(events) > max_events:
        raise ApiError(
            400, "BAD_BATCH", f"{len(events)} events; a batch holds at most {max_events}"
        )
    for index, event in enumerate(events):
        if not isinstance(event, dict):
            raise ApiError(400, "BAD_BATCH", f"events[{index}] is not an object")
        event_id = event.get("id")
        if not isinstance(event_id, str) or _ULID.fullmatch(event_id) is None:
            raise ApiError(400, "BAD_BATCH", f"events[{index}].id is not a ULID")
        if not isinstance(event.get("type"), str):
            raise ApiError(400, "BAD_BATCH", f"events[{index}].type is not a string")
        if not is_rfc3339(event.get("occurred_at")):
            raise ApiError(400, "BAD_BATCH", f"events[{index}].occurred_at is not RFC 3339")
        if not isinstance(event.get("payload"), dict):
            raise ApiError(400, "BAD_BATCH", f"events[{index}].payload is not an object")
    return events


# ---- central: the database on its thread, the faults, the HTTP handlers ------------------------


class ProxyLink:
    """What the app and the proxy in front of it share.

    The proxy opens one upstream connection per client connection; uvicorn reports that
    connection's local port as the ASGI client port, which is how the app names a connection to
    drop, and how it learns the real client's address (admin endpoints are loopback only).
    """

    def __init__(self) -> None:
        self.peers: dict[int, str] = {}  # upstream local port -> the real client's host
        self.drops: set[int] = set()
        # Set by the proxy: (down, the upstream port of the connection asking, spared)
        self.on_down: Callable[[bool, int | None], Awaitable[None]] | None = None

    def client_host(self, client: tuple[str, int] | None) -> str | None:
        if client is None:
            return None
        return self.peers.get(client[1], client[0])

    def mark_drop(self, client: tuple[str, int] | None) -> bool:
        if client is None or client[1] not in self.peers:
            return False
        self.drops.add(client[1])
        return True


class Central:
    """The HTTP side of the reference server: handlers over a `CentralDb` on its own thread."""

    def __init__(self, config: ReferenceConfig, link: ProxyLink | None = None) -> None:
        self.config = config
        self.link = link or ProxyLink()
        self.faults = Faults(config.seed)
        self.requests: Counter[int] = Counter()
        self.dropped = 0
        self._db: CentralDb | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._temp_dir: str | None = None

    async def open(self) -> None:
        """Open the database and load the configured records (idempotent)."""
        if self._db is not None:
            return
        config = self.config
        if config.db_path is None:
            self._temp_dir = tempfile.mkdtemp(prefix="reference-central-")
            path = Path(self._temp_dir) / "central.db"
        else:
            path = config.db_path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="central-db")

        def open_and_load() -> CentralDb:
            db = CentralDb(path, config.clock)
            try:
                if config.members_file is not None:
                    db.load_file("member", config.members_file)
                if config.coupons_file is not None:
                    db.load_file("coupon", config.coupons_file)
                if config.synthetic_members:
                    db.synthesize_members(config.synthetic_members)
                if config.rules_file is not None:
                    db.set_rules(json.loads(config.rules_file.read_text(encoding="utf-8")))
            except BaseException:
                db.close()
                raise
            return db

        try:
            self._db = await asyncio.get_running_loop().run_in_executor(
                self._executor, open_and_load
            )
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._executor is not None:
            db, self._db = self._db, None
            if db is not None:
                await asyncio.get_running_loop().run_in_executor(self._executor, db.close)
            self._executor.shutdown(wait=True)
            self._executor = None
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    async def run(self, job: Callable[[CentralDb], _T]) -> _T:
        """Run `job` on the database thread."""
        if self._db is None or self._executor is None:
            raise ApiError(
                503, "UNAVAILABLE", "central is starting or stopping", {"Retry-After": "1"}
            )
        db = self._db
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, functools.partial(job, db)
        )

    # ---- the API's guard: faults, token, gateway id ----

    def api(
        self, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            try:
                response = await self._guarded(handler, request)
            except ApiError as exc:
                response = exc.response()
            self.requests[response.status_code] += 1
            return response

        return endpoint

    async def _guarded(
        self, handler: Callable[[Request], Awaitable[Response]], request: Request
    ) -> Response:
        settings = self.faults.settings
        if settings.latency_ms:
            await asyncio.sleep(settings.latency_ms / 1000)
        if settings.down:  # only reached on the internal port: the proxy refuses everything
            raise ApiError(
                503, "UNAVAILABLE", "central is down", {"Retry-After": settings.retry_after}
            )
        refusal = self.faults.draw_refusal()
        if refusal == "throttle":
            raise ApiError(429, "THROTTLED", "slow down", {"Retry-After": settings.retry_after})
        if refusal == "error":
            status = settings.error_status
            if status == 503:
                raise ApiError(
                    503, "UNAVAILABLE", "injected fault", {"Retry-After": settings.retry_after}
                )
            raise ApiError(status, "SERVER_ERROR", "injected fault")
        token = self.config.token
        if token is not None:
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode(), token.encode()
            ):
                raise ApiError(401, "UNAUTHORIZED", "a valid bearer token is required")
        if not request.headers.get("x-gateway-id", "").strip():
            raise ApiError(400, "MISSING_GATEWAY_ID", "the X-Gateway-Id header is required")
        try:
            response = await handler(request)
        except ApiError as exc:
            response = exc.response()
        client = (request.client.host, request.client.port) if request.client else None
        if self.faults.draw_drop() and self.link.mark_drop(client):
            self.dropped += 1
        return response

    # ---- API handlers ----

    async def post_events(self, request: Request) -> Response:
        store = request.path_params["store"]
        raw = await _read_body(request, self.config.max_batch_bytes, "BAD_BATCH")
        body = await self.run(lambda db: db.ingest(store, raw, self.config.max_batch_events))
        return Response(body, media_type="application/json")

    async def get_changes(self, request: Request) -> Response:
        cursor = request.query_params.get("cursor", "")
        text = request.query_params.get("limit", "500")
        if not text.isdigit() or not 1 <= int(text) <= 1000:
            raise ApiError(400, "BAD_LIMIT", "limit must be an integer 1..1000")
        if len(cursor) > 1024:
            raise ApiError(400, "BAD_CURSOR", "unknown cursor: start again with an empty cursor")
        body = await self.run(lambda db: db.changes(cursor, int(text)))
        return Response(body, media_type="application/json")

    async def authorize(self, request: Request) -> Response:
        code = request.path_params["code"]
        body = await _read_json(request, self.config.max_small_body_bytes)
        gateway_id = request.headers.get("x-gateway-id", "")
        return JSONResponse(await self.run(lambda db: db.authorize(code, body, gateway_id)))

    async def put_catalog(self, request: Request) -> Response:
        store = request.path_params["store"]
        body = await _read_json(request, self.config.max_catalog_bytes)
        return JSONResponse(await self.run(lambda db: db.put_catalog(store, body)))

    async def heartbeat(self, request: Request) -> Response:
        store = request.path_params["store"]
        body = await _read_json(request, self.config.max_small_body_bytes)
        await self.run(lambda db: db.heartbeat(store, body))
        return Response(status_code=204)

    # ---- admin (loopback only, no token) ----

    def admin(
        self, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            client = (request.client.host, request.client.port) if request.client else None
            host = self.link.client_host(client)
            if not _is_loopback(host):
                return ApiError(403, "FORBIDDEN", "the admin API answers loopback only").response()
            try:
                return await handler(request)
            except ApiError as exc:
                return exc.response()

        return endpoint

    async def admin_stats(self, request: Request) -> Response:
        stats = await self.run(CentralDb.stats)
        stats["requests"] = {str(k): v for k, v in sorted(self.requests.items())}
        stats["dropped_responses"] = self.dropped
        return JSONResponse(stats)

    async def admin_checks(self, request: Request) -> Response:
        store = request.query_params.get("store") or None
        return JSONResponse({"checks": await self.run(lambda db: db.checks(store))})

    async def admin_member(self, request: Request) -> Response:
        member_id = request.path_params["member_id"]
        view = await self.run(lambda db: db.member_view(member_id))
        if view is None:
            raise ApiError(404, "NOT_FOUND", f"no member {member_id!r}")
        return JSONResponse({**view["record"], "tickets": view["tickets"]})

    async def admin_delete_member(self, request: Request) -> Response:
        member_id = request.path_params["member_id"]
        if not await self.run(lambda db: db.delete_member(member_id)):
            raise ApiError(404, "NOT_FOUND", f"no member {member_id!r}")
        return JSONResponse({"deleted": member_id})

    async def admin_upsert_members(self, request: Request) -> Response:
        body = await _read_json(request, 1024 * MIB)
        return JSONResponse({"upserted": await self.run(lambda db: db.upsert_members(body))})

    async def admin_coupon(self, request: Request) -> Response:
        code = request.path_params["code"]
        view = await self.run(lambda db: db.coupon_view(code))
        if view is None:
            raise ApiError(404, "NOT_FOUND", f"no coupon {code!r}")
        return JSONResponse(view)

    async def admin_upsert_coupons(self, request: Request) -> Response:
        body = await _read_json(request, 256 * MIB)
        return JSONResponse({"upserted": await self.run(lambda db: db.upsert_coupons(body))})

    async def admin_delete_coupon(self, request: Request) -> Response:
        code = request.path_params["code"]
        if not await self.run(lambda db: db.delete_coupon(code)):
            raise ApiError(404, "NOT_FOUND", f"no coupon {code!r}")
        return JSONResponse({"deleted": code})

    async def admin_rules(self, request: Request) -> Response:
        body = await _read_json(request, 16 * MIB)
        await self.run(lambda db: db.set_rules(body))
        return JSONResponse({"version": body["version"]})

    async def admin_get_faults(self, request: Request) -> Response:
        return JSONResponse(self.faults.as_dict())

    async def admin_put_faults(self, request: Request) -> Response:
        body = await _read_json(request, self.config.max_small_body_bytes)
        was_down = self.faults.settings.down
        self.faults.update(body)
        if self.faults.settings.down != was_down and self.link.on_down is not None:
            # The connection that asked is spared, so its answer arrives.
            asking = request.client.port if request.client else None
            await self.link.on_down(self.faults.settings.down, asking)
        return JSONResponse(self.faults.as_dict())

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        await self.open()
        try:
            yield
        finally:
            await self.close()


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


async def _read_body(request: Request, limit: int, bad_code: str) -> bytes:
    """The request body, gunzipped when `Content-Encoding: gzip`, refused (413) over `limit`."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip", ""):
        raise ApiError(400, "UNSUPPORTED_ENCODING", f"Content-Encoding {encoding!r}; use gzip")
    too_large = ApiError(413, "PAYLOAD_TOO_LARGE", f"the body is over {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    raw = b"".join(chunks)
    if encoding == "gzip":
        inflater = zlib.decompressobj(wbits=31)
        try:
            raw = inflater.decompress(raw, limit + 1)
        except zlib.error:
            raise ApiError(400, bad_code, "the body is not valid gzip") from None
        if len(raw) > limit or inflater.unconsumed_tail:
            raise too_large
        if not inflater.eof:
            raise ApiError(400, bad_code, "the gzip body is truncated")
    return raw


async def _read_json(request: Request, limit: int, bad_code: str = "BAD_REQUEST") -> Any:
    raw = await _read_body(request, limit, bad_code)
    try:
        return json.loads(raw)
    except (ValueError, UnicodeError):
        raise ApiError(400, bad_code, "the body is not JSON") from None


def create_app(config: ReferenceConfig, *, link: ProxyLink | None = None) -> Starlette:
    """The reference server's ASGI app; its `Central` is `app.state.central`.

    Served alone, it answers everything but "drop after commit" and "down", which need the
    proxy that `ReferenceServer` puts in front of it.
    """
    return _build_app(Central(config, link))


def _build_app(central: Central) -> Starlette:
    api, admin = central.api, central.admin
    routes = [
        Route("/v1/stores/{store}/events", api(central.post_events), methods=["POST"]),
        Route("/v1/stores/{store}/changes", api(central.get_changes), methods=["GET"]),
        Route("/v1/coupons/{code}/authorizations", api(central.authorize), methods=["POST"]),
        Route("/v1/stores/{store}/catalog", api(central.put_catalog), methods=["PUT"]),
        Route("/v1/stores/{store}/heartbeat", api(central.heartbeat), methods=["POST"]),
        Route("/_admin/stats", admin(central.admin_stats), methods=["GET"]),
        Route("/_admin/checks", admin(central.admin_checks), methods=["GET"]),
        Route("/_admin/members", admin(central.admin_upsert_members), methods=["POST"]),
        Route("/_admin/members/{member_id}", admin(central.admin_member), methods=["GET"]),
        Route(
            "/_admin/members/{member_id}", admin(central.admin_delete_member), methods=["DELETE"]
        ),
        Route("/_admin/coupons", admin(central.admin_upsert_coupons), methods=["POST"]),
        Route("/_admin/coupons/{code}", admin(central.admin_coupon), methods=["GET"]),
        Route("/_admin/coupons/{code}", admin(central.admin_delete_coupon), methods=["DELETE"]),
        Route("/_admin/rules", admin(central.admin_rules), methods=["PUT"]),
        Route("/_admin/faults", admin(central.admin_get_faults), methods=["GET"]),
        Route("/_admin/faults", admin(central.admin_put_faults), methods=["PUT"]),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status_code, "HTTP_ERROR")
        return ApiError(exc.status_code, code, str(exc.detail), dict(exc.headers or {})).response()

    async def server_error(request: Request, exc: Exception) -> Response:
        return ApiError(500, "SERVER_ERROR", type(exc).__name__).response()

    app = Starlette(
        routes=routes,
        lifespan=central.lifespan,
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )
    app.state.central = central
    return app


# ---- the proxy in front of the app -------------------------------------------------------------


class FaultProxy:
    """Forwards bytes between clients and uvicorn; loses responses and refuses connections.

    Bytes pass through unparsed, so keep-alive, chunked bodies and anything else HTTP does work
    as they would without it. A response the app marked as dropped (see `ProxyLink`) is never
    forwarded: the client's connection is reset instead, after the app committed. While central
    is "down" the listening socket is closed (connections are refused) and every open client
    connection is reset.
    """

    def __init__(self, link: ProxyLink, upstream: tuple[str, int]) -> None:
        self.link = link
        self.upstream = upstream
        self.host = ""
        self.port = 0
        self._server: asyncio.Server | None = None
        self._clients: dict[asyncio.StreamWriter, int] = {}  # -> upstream port (0: none yet)
        self._tasks: set[asyncio.Task[None]] = set()
        link.on_down = self.set_down

    async def start(self, host: str, port: int) -> None:
        self.host = host
        await self._listen(port)

    async def _listen(self, port: int) -> None:
        self._server = await asyncio.start_server(
            self._connection, self.host, port, reuse_address=True, limit=1 << 20
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def set_down(self, down: bool, spare: int | None = None) -> None:
        """Refuse and cut every client connection (but `spare`'s, by upstream port), or listen
        again on the same port."""
        if down:
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()
                self._server = None
            for writer, port in list(self._clients.items()):
                if port != spare:
                    writer.transport.abort()
        elif self._server is None:
            await self._listen(self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._clients):
            writer.transport.abort()
        if self._tasks:  # each ends once its client is gone
            _, late = await asyncio.wait(set(self._tasks), timeout=2)
            for task in late:
                task.cancel()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._clients[writer] = 0
        port = 0
        upstream_writer: asyncio.StreamWriter | None = None
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                *self.upstream, limit=1 << 20
            )
            port = upstream_writer.get_extra_info("sockname")[1]
            self._clients[writer] = port
            peer = writer.get_extra_info("peername")
            self.link.peers[port] = str(peer[0]) if peer else "unknown"
            to_app = asyncio.create_task(_pump(reader, upstream_writer, None, self.link))
            to_client = asyncio.create_task(_pump(upstream_reader, writer, port, self.link))
            try:
                await asyncio.wait({to_app, to_client}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                to_app.cancel()
                to_client.cancel()
                await asyncio.gather(to_app, to_client, return_exceptions=True)
        except (OSError, asyncio.CancelledError):
            pass  # the handler's task is ours: ending it quietly is the point
        finally:
            self._clients.pop(writer, None)
            self._tasks.discard(task)
            self.link.peers.pop(port, None)
            self.link.drops.discard(port)
            if upstream_writer is not None:
                upstream_writer.transport.abort()
            if not writer.transport.is_closing():
                writer.close()


async def _pump(
    source: asyncio.StreamReader,
    sink: asyncio.StreamWriter,
    dropping_port: int | None,
    link: ProxyLink,
) -> None:
    """Copy bytes until end of stream; toward the client, reset instead of a dropped response."""
    with contextlib.suppress(OSError):
        while data := await source.read(1 << 18):
            if dropping_port is not None and dropping_port in link.drops:
                link.drops.discard(dropping_port)
                sink.transport.abort()
                return
            sink.write(data)
            await sink.drain()


# ---- running it --------------------------------------------------------------------------------


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handlers: the host (a test, or `main`) decides when to stop,
    and a stop is seen at once instead of at the next 0.1 s tick."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.exit_requested = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def main_loop(self) -> None:
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.exit_requested.wait(), 0.1)

    def request_exit(self) -> None:
        self.should_exit = True
        self.exit_requested.set()


class ReferenceServer:
    """The reference server in this process: uvicorn on an internal port, the proxy in front.

    `url` is the public (proxy) address the gateway talks to; `admin_url` reaches the app
    directly, so the admin API still answers while central plays "down".
    """

    def __init__(
        self, config: ReferenceConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.config = config or ReferenceConfig()
        self.host = host
        self.port = port
        self.link = ProxyLink()
        self.central = Central(self.config, self.link)
        self.app = _build_app(self.central)
        self._uvicorn: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._proxy: FaultProxy | None = None
        self._internal_port = 0

    @property
    def url(self) -> str:
        if self._proxy is None:
            raise RuntimeError("the reference server is not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._proxy.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self._internal_port}"

    async def start(self) -> None:
        # Open the database here, not only in the lifespan: a failure then raises in the caller
        # instead of uvicorn's sys.exit inside a task.
        await self.central.open()
        # uvicorn binds its own socket (port 0: any free port). A socket made here and passed in
        # would lack IPPROTO_TCP, and asyncio would then leave Nagle on: 40 ms per response.
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=0,
            log_level="warning",
            lifespan="on",
            access_log=False,
            timeout_keep_alive=65,
            timeout_graceful_shutdown=2,
        )
        self._uvicorn = _EmbeddedServer(config)
        self._task = asyncio.create_task(self._uvicorn.serve())
        while not self._uvicorn.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("the reference server stopped while starting")
            await asyncio.sleep(0.005)
        self._internal_port = self._uvicorn.servers[0].sockets[0].getsockname()[1]
        self._proxy = FaultProxy(self.link, ("127.0.0.1", self._internal_port))
        try:
            await self._proxy.start(self.host, self.port)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        if self._proxy is not None:
            await self._proxy.stop()
        if self._uvicorn is not None and self._task is not None:
            self._uvicorn.request_exit()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None
        self._uvicorn = None
        await self.central.close()

    async def wait_stopped(self) -> None:
        if self._task is not None:
            await asyncio.shield(self._task)

    async def __aenter__(self) -> ReferenceServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sync.reference_server",
        description="Run the reference central server (DESIGN.md section 3) with fault injection.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="public address (default loopback)")
    parser.add_argument("--port", type=int, default=8080, help="public port (0: any free port)")
    parser.add_argument("--db", type=Path, help="SQLite file (default: a temporary database)")
    parser.add_argument(
        "--token-file", type=Path, help="bearer token to require (default: no token check)"
    )
    parser.add_argument(
        "--members", type=Path, help="members to seed, JSON lines (default: gateway/sample)"
    )
    parser.add_argument(
        "--coupons", type=Path, help="coupons to seed, JSON lines (default: gateway/sample)"
    )
    parser.add_argument("--rules", type=Path, help="a rules document (JSON) to publish")
    parser.add_argument(
        "--no-sample", action="store_true", help="seed no sample members or coupons by default"
    )
    parser.add_argument(
        "--synthetic-members", type=int, default=0, metavar="N", help="make N members SYN0000001.."
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault dice")
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    token = None
    if args.token_file is not None:
        token = args.token_file.read_text(encoding="utf-8").strip()
        if not token:
            raise SystemExit(f"{args.token_file} is empty")
    elif not _is_loopback(args.host):
        print("warning: no --token-file: any client is accepted", file=sys.stderr)
    config = ReferenceConfig(
        db_path=args.db,
        token=token,
        members_file=args.members or (None if args.no_sample else SAMPLE_DIR / "members.jsonl"),
        coupons_file=args.coupons or (None if args.no_sample else SAMPLE_DIR / "coupons.jsonl"),
        rules_file=args.rules,
        synthetic_members=args.synthetic_members,
        seed=args.seed,
    )
    server = ReferenceServer(config, host=args.host, port=args.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await server.start()
    try:
        print(f"reference-server listening on {server.url}", flush=True)
        print(f"reference-server admin on {server.admin_url}/_admin/", flush=True)
        await stop.wait()
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status (0 after SIGINT or SIGTERM)."""
    args = _parse_args(argv)
    try:
        asyncio.run(_serve(args))
    except (OSError, ValueError) as exc:
        print(f"reference-server: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
