"""The gateway's SQLite store: the cache of members and coupons, checks, ledger and outbox.

Reads go through one aiosqlite connection (WAL lets them run beside the writer); every write is a
job for the single `Writer`, so concurrent writes share commits. Decisions that must see the data
as it is inside the write transaction (a coupon's usage, a member's balance when a check posts)
are handed in as pure callables and run there.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import secrets
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from gateway.domain.ids import new_ulid
from gateway.domain.models import (
    Balance,
    Coupon,
    Member,
    OutboxEvent,
    PostOk,
    Refusal,
    Settlement,
)
from gateway.domain.reasons import Reason
from gateway.domain.rules_doc import RulesDocument
from gateway.rules.coupons import CouponUsage
from gateway.store.datadir import (
    DataDirProblem,
    check_before_open,
    describe_unwritable,
    unwritable,
    write_marker,
)
from gateway.store.schema import migrate
from gateway.store.writer import DEFAULT_MAX_PENDING, Writer, connect, is_read_only
from gateway.store.writer import StorageFull as StorageFull


class StoreCorrupt(Exception):
    """`PRAGMA quick_check` found damage; the daemon refuses to run on it."""


def utc_stamp(moment: dt.datetime) -> str:
    """RFC 3339 UTC with microseconds and `Z`: one shape everywhere, so text order is time order."""
    # isoformat, not strftime: a tenth of the cost; this runs several times per check and once
    # per member in a sync.
    if moment.utcoffset() != _ZERO:
        moment = moment.astimezone(dt.UTC)
    return moment.isoformat(timespec="microseconds")[:26] + "Z"


_ZERO = dt.timedelta(0)


@dataclass(frozen=True, slots=True)
class CheckKey:
    """What makes a posted check unique in a store (DESIGN.md section 2)."""

    business_date: dt.date
    wsid: int
    check: int

    def text(self) -> str:
        return f"{self.business_date:%Y%m%d}:{self.wsid}:{self.check}"


@dataclass(frozen=True, slots=True)
class ReservedCoupon:
    ref: str
    code: str | None  # None when the register sent a ref this store does not know
    status: str | None
    # Whether posting this check redeems it: a live reservation does; a released one only if
    # the coupon still has a use left (its reservation expired or was voided meanwhile).
    redeemable: bool = False
    origin: str | None = None  # reward, occasion, campaign, voucher: kept for reporting


@dataclass(frozen=True, slots=True)
class MemberView:
    member: Member
    balance: Balance
    lottery_paused: bool
    tickets_this_month: int = 0  # filled where a check is settled, for lottery members


@dataclass(frozen=True, slots=True)
class StoreCounts:
    members: int
    identifiers: int
    coupons: int
    live_reservations: int
    posted_checks: int
    outbox_depth: int
    outbox_oldest: str | None
    dead_letters: int

    @property
    def outbox_oldest_age_s(self) -> float | None:
        """Seconds since the oldest waiting event occurred (None when the outbox is empty)."""
        if not self.outbox_oldest:
            return None
        oldest = dt.datetime.fromisoformat(self.outbox_oldest.replace("Z", "+00:00"))
        return round(max(0.0, (dt.datetime.now(dt.UTC) - oldest).total_seconds()), 3)


CouponDecision = Callable[[Coupon, CouponUsage], tuple[Reason, str] | None]
Settle = Callable[["MemberView | None", list[ReservedCoupon]], Settlement]

_MEMBER_VIEW_SQL = """
SELECT m.member_id, m.display_name, m.tier, m.birthday, m.flags, m.earn_mode, m.lottery_consent,
       m.points_balance, m.wallet_points, m.balance_as_of,
       m.points_balance + COALESCE(p.points, 0), m.wallet_points + COALESCE(p.wallet, 0),
       COALESCE((SELECT paused FROM program_switches WHERE program = 'lottery'), 0)
FROM members m LEFT JOIN member_pending p ON p.member_id = m.member_id
"""

# Recomputes one member's pending sums from the ledger (after central's balance changed).
_RECOMPUTE_PENDING = [
    "DELETE FROM member_pending WHERE member_id = ?1",
    """INSERT INTO member_pending
       SELECT l.member_id, SUM(l.points), SUM(l.wallet), SUM(l.tickets)
       FROM ledger l JOIN members m ON m.member_id = l.member_id
       WHERE l.member_id = ?1 AND (l.applied_at IS NULL OR m.balance_as_of IS NULL
                                   OR l.applied_at > m.balance_as_of)
       GROUP BY l.member_id""",
]


def _bump_usage(conn: sqlite3.Connection, changes: Sequence[tuple[str, int, int]]) -> None:
    """(code, redeemed delta, reserved delta) into `coupon_usage`, in the caller's transaction."""
    conn.executemany(
        "INSERT INTO coupon_usage VALUES (?, ?, ?) ON CONFLICT (code) DO UPDATE SET"
        " redeemed = redeemed + excluded.redeemed, reserved = reserved + excluded.reserved",
        changes,
    )


def _coupon_usage(
    conn: sqlite3.Connection, coupon: Coupon, member_id: str | None, now_s: str
) -> CouponUsage:
    """How a coupon is used here, counted only as far as its limits need. The running totals
    of `coupon_usage` decide while they are clearly under the limit; only near it are the live
    reservations counted exactly (expired ones not swept yet do not count)."""
    redeemed = elsewhere = mine = 0
    if coupon.max_redemptions is not None:
        totals = conn.execute(
            "SELECT redeemed, reserved FROM coupon_usage WHERE code = ?", (coupon.code,)
        ).fetchone()
        redeemed, elsewhere = (int(totals[0]), int(totals[1])) if totals else (0, 0)
        if redeemed + elsewhere >= coupon.max_redemptions:
            elsewhere = conn.execute(
                "SELECT COUNT(*) FROM coupon_reservations WHERE code = ? AND status = 'reserved'"
                " AND +expires_at > ?",  # on the (code, status) index, not every live one
                (coupon.code, now_s),
            ).fetchone()[0]
    if coupon.per_member_limit is not None and member_id is not None:
        mine = conn.execute(
            "SELECT COUNT(*) FROM coupon_reservations WHERE code = ? AND member_id = ?"
            " AND (status = 'redeemed' OR (status = 'reserved' AND expires_at > ?))",
            (coupon.code, member_id, now_s),
        ).fetchone()[0]
    return CouponUsage(int(redeemed), int(elsewhere), int(mine))


def _lookup_connection(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    # Short: a lookup that ever had to wait would hold up the event loop.
    conn.execute("PRAGMA busy_timeout = 250")
    conn.execute("PRAGMA query_only = 1")
    return conn


def _check_and_migrate(conn: sqlite3.Connection) -> tuple[int, int]:
    try:
        problems = [row[0] for row in conn.execute("PRAGMA quick_check").fetchall()]
    except sqlite3.DatabaseError as error:  # damaged beyond what quick_check can list
        raise StoreCorrupt(str(error)) from error
    if problems != ["ok"]:
        raise StoreCorrupt("; ".join(str(p) for p in problems[:5]))
    return migrate(conn)


def _member_view(row: Sequence[Any]) -> MemberView:
    # Built from columns without validation: they were validated when the record was stored,
    # and parsing the whole record would cost more than the rest of an IDENT (measured).
    member = Member.model_construct(
        member_id=row[0],
        identifiers=[],  # not needed at the till; a default_factory here costs ~300 µs
        display_name=row[1],
        tier=row[2],
        birthday=row[3],
        flags=json.loads(row[4]),
        earn_mode=row[5],
        lottery_consent=bool(row[6]),
        points_balance=row[7],
        wallet_points=row[8],
        balance_as_of=dt.datetime.fromisoformat(row[9]) if row[9] else None,
    )
    return MemberView(
        member=member,
        balance=Balance(points=int(row[10]), wallet=int(row[11])),
        lottery_paused=bool(row[12]),
        tickets_this_month=int(row[13]) if len(row) > 13 else 0,
    )


_INSERT_EVENT = "INSERT INTO outbox (event_id, type, occurred_at, payload) VALUES (?, ?, ?, ?)"


def _event_rows(events: Iterable[OutboxEvent]) -> list[tuple[str, str, str, str]]:
    return [
        (e.event_id, e.type, e.occurred_at, json.dumps(e.payload, separators=(",", ":")))
        for e in events
    ]


def _insert_events(conn: sqlite3.Connection, events: Iterable[OutboxEvent]) -> None:
    conn.executemany(_INSERT_EVENT, _event_rows(events))


# What a posted check's points depend on: the member's row with its balance, and its coupons'
# reservations. Raw rows, so that the writer can compare them cheaply with what the loop saw.
CheckContext = tuple[tuple[Any, ...] | None, tuple[tuple[str, Any, Any, bool, Any], ...]]


_TICKETS_THIS_MONTH = """
SELECT COALESCE(CASE WHEN json_extract(m.record, '$.tickets_month') = ?2
                     THEN json_extract(m.record, '$.tickets_this_month') END, 0)
     + (SELECT COALESCE(SUM(l.tickets), 0) FROM ledger l
        WHERE l.member_id = m.member_id AND substr(l.business_date, 1, 7) = ?2
          AND (l.applied_at IS NULL OR m.balance_as_of IS NULL OR l.applied_at > m.balance_as_of))
FROM members m WHERE m.member_id = ?1
"""


def _check_context(
    conn: sqlite3.Connection,
    member_id: str | None,
    coupon_refs: Sequence[str],
    now_s: str,
    month: str = "",
) -> CheckContext:
    member_row = None
    if member_id is not None:
        found = conn.execute(_MEMBER_VIEW_SQL + " WHERE m.member_id = ?", (member_id,)).fetchone()
        member_row = tuple(found) if found is not None else None
        if member_row is not None and member_row[5] == "lottery" and month:
            # Tickets this month: central's count for the month plus what it has not applied.
            tickets = conn.execute(_TICKETS_THIS_MONTH, (member_id, month)).fetchone()
            member_row = (*member_row, int(tickets[0]) if tickets else 0)
    coupons: list[tuple[str, Any, Any, bool, Any]] = []
    claimed: dict[str, int] = {}  # uses this check takes again, per code
    for ref in dict.fromkeys(coupon_refs):  # a ref listed twice is one coupon
        row = conn.execute(
            "SELECT r.code, r.status, r.released_by, r.expires_at,"
            " json_extract(c.record, '$.origin') FROM coupon_reservations r"
            " LEFT JOIN coupons c ON c.code = r.code WHERE r.ref = ?",
            (ref,),
        ).fetchone()
        if row is None:
            coupons.append((ref, None, None, False, None))
            continue
        code, status, released_by, expires_at = str(row[0]), str(row[1]), row[2], str(row[3])
        live = status == "reserved" and expires_at > now_s
        # A live reservation holds its use. A voided coupon was taken off the check. One whose
        # reservation expired was used, late: it redeems only if the coupon has a use left.
        redeemable = live
        lapsed = (status == "reserved" and not live) or (
            status == "released" and released_by != "void"
        )
        if lapsed:
            limit = conn.execute(
                "SELECT json_extract(record, '$.max_redemptions') FROM coupons WHERE code = ?",
                (code,),
            ).fetchone()
            used = conn.execute(
                "SELECT COUNT(*) FROM coupon_reservations WHERE code = ? AND ref != ? AND"
                " (status = 'redeemed' OR (status = 'reserved' AND expires_at > ?))",
                (code, ref, now_s),
            ).fetchone()[0]
            allowed = None if limit is None or limit[0] is None else int(limit[0])
            redeemable = allowed is None or used + claimed.get(code, 0) < allowed
            if redeemable:
                claimed[code] = claimed.get(code, 0) + 1
        coupons.append((ref, code, status, redeemable, row[4]))
    return member_row, tuple(coupons)


def _context_views(context: CheckContext) -> tuple[MemberView | None, list[ReservedCoupon]]:
    member_row, coupons = context
    view = _member_view(member_row) if member_row is not None else None
    return view, [ReservedCoupon(*coupon) for coupon in coupons]


@dataclass(frozen=True, slots=True)
class _CheckRows:
    """A settlement with its rows serialised, ready for the writer."""

    settlement: Settlement
    reply_json: str
    events: list[tuple[str, str, str, str]]

    @classmethod
    def build(cls, settlement: Settlement) -> _CheckRows:
        return cls(settlement, _post_ok_to_json(settlement.reply), _event_rows(settlement.events))


def _post_ok_to_json(reply: PostOk) -> str:
    return json.dumps(
        [
            reply.points_earned,
            reply.points_balance,
            reply.tickets_earned,
            reply.wallet_points,
            list(reply.receipt_lines),
        ]
    )


def _post_ok_from_json(text: str) -> PostOk:
    earned, balance, tickets, wallet, lines = json.loads(text)
    return PostOk(earned, balance, tickets, wallet, tuple(lines))


COUPON_CONFLICT = "COUPON_CONFLICT"


@dataclass(frozen=True, slots=True)
class Reservation:
    coupon: Coupon
    ref: str
    new: bool  # False when the same check asked for the same coupon again


@dataclass(frozen=True, slots=True)
class QueuedEvent:
    """An event as the outbox holds it: its payload stays the JSON text written at commit, so
    sending it costs no parse and no re-encoding; `payload` parses it when needed."""

    event_id: str
    type: str
    occurred_at: str
    payload_json: str

    @property
    def payload(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.payload_json)
        return parsed


@dataclass(frozen=True, slots=True)
class OutboxBatch:
    batch_id: str
    events: list[QueuedEvent]


@dataclass(frozen=True, slots=True)
class EventResult:
    """Central's answer for one event (DESIGN.md section 3)."""

    event_id: str
    status: str  # accepted | duplicate | rejected
    reason: str | None = None
    applied_at: str | None = None


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    delivered: int
    dead_letters: int
    conflicts: int
    unanswered: int


_OUR_STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def _central_stamp(text: str | None) -> str | None:
    """Central's RFC 3339 stamp in our one shape, so that it compares as text with
    `balance_as_of` (also stored through `utc_stamp`); None when it cannot be read."""
    if not text:
        return None
    if _OUR_STAMP.fullmatch(text):
        return text
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return utc_stamp(moment)


def _outbox_row(row: Sequence[Any]) -> QueuedEvent:
    return QueuedEvent(str(row[0]), str(row[1]), str(row[2]), str(row[3]))


@dataclass(frozen=True, slots=True)
class StaleRecords:
    """What a full snapshot did not bring, against what the cache held before its removal."""

    members: int
    cached_members: int
    coupons: int
    cached_coupons: int
    removed: bool = False

    def above(self, share: float) -> bool:
        return self.members > share * self.cached_members or (
            self.coupons > share * self.cached_coupons
        )


@dataclass(frozen=True, slots=True)
class ChangePage:
    """What one page of central's changes asks of the cache."""

    members: Sequence[Member] = ()
    deleted_members: Sequence[str] = ()
    coupons: Sequence[Coupon] = ()
    deleted_coupons: Sequence[str] = ()
    rules: Sequence[RulesDocument] = ()
    state: Sequence[tuple[str, str]] = ()  # sync_state rows: the cursor ...


def _members_job(members: Sequence[Member]) -> Callable[[sqlite3.Connection], None]:
    now = utc_stamp(dt.datetime.now(dt.UTC))
    rows = [
        (
            m.member_id,
            m.display_name,
            m.tier,
            m.birthday,
            json.dumps(m.flags) if m.flags else "[]",
            m.earn_mode,
            int(m.lottery_consent),
            m.points_balance,
            m.wallet_points,
            utc_stamp(m.balance_as_of) if m.balance_as_of else None,
            m.model_dump_json(),
            now,
        )
        for m in members
    ]
    ids = json.dumps([m.member_id for m in members])
    identifiers = [(i, m.member_id) for m in members for i in m.identifiers]

    def job(conn: sqlite3.Connection) -> None:
        if not rows:
            return
        conn.execute(
            "DELETE FROM member_identifiers WHERE member_id IN (SELECT value FROM json_each(?))",
            (ids,),
        )
        conn.executemany("INSERT OR REPLACE INTO members VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)
        # An identifier that moved to another member follows it.
        conn.executemany("INSERT OR REPLACE INTO member_identifiers VALUES (?, ?)", identifiers)
        # A new balance from central may include entries that were pending here.
        with_entries = conn.execute(
            "SELECT DISTINCT member_id FROM ledger WHERE member_id IN"
            " (SELECT value FROM json_each(?))",
            (ids,),
        ).fetchall()
        for statement in _RECOMPUTE_PENDING:
            conn.executemany(statement, with_entries)

    return job


def _member_deletions_job(member_ids: Sequence[str]) -> Callable[[sqlite3.Connection], None]:
    params = [(i,) for i in member_ids]

    def job(conn: sqlite3.Connection) -> None:
        conn.executemany("DELETE FROM member_identifiers WHERE member_id = ?", params)
        conn.executemany("DELETE FROM members WHERE member_id = ?", params)
        conn.executemany("DELETE FROM member_pending WHERE member_id = ?", params)

    return job


def _coupons_job(coupons: Sequence[Coupon]) -> Callable[[sqlite3.Connection], None]:
    now = utc_stamp(dt.datetime.now(dt.UTC))
    rows = [(c.code, c.model_dump_json(), now) for c in coupons]

    def job(conn: sqlite3.Connection) -> None:
        conn.executemany("INSERT OR REPLACE INTO coupons VALUES (?, ?, ?)", rows)

    return job


def _rules_job(
    documents: Sequence[RulesDocument], source: str
) -> Callable[[sqlite3.Connection], None]:
    now = utc_stamp(dt.datetime.now(dt.UTC))
    rows = [
        (
            d.version,
            utc_stamp(d.effective_from) if d.effective_from else "",
            d.model_dump_json(),
            source,
            now,
        )
        for d in documents
    ]

    def job(conn: sqlite3.Connection) -> None:
        conn.executemany("INSERT OR REPLACE INTO rules_documents VALUES (?, ?, ?, ?, ?)", rows)

    return job


def _coupon_deletions_job(codes: Sequence[str]) -> Callable[[sqlite3.Connection], None]:
    params = [(c,) for c in codes]

    def job(conn: sqlite3.Connection) -> None:
        conn.executemany("DELETE FROM coupons WHERE code = ?", params)

    return job


class Store:
    """Open with `await Store.open(path)`; close with `await store.close()`."""

    def __init__(
        self,
        path: Path,
        writer: Writer,
        reader: aiosqlite.Connection,
        lookup: sqlite3.Connection,
    ) -> None:
        self.path = path
        self.writer = writer
        self._reader = reader
        self._lookup = lookup
        # Called after a commit that added events to the outbox (the forwarder's wake-up).
        self.outbox_listeners: list[Callable[[], None]] = []

    def _outbox_changed(self) -> None:
        for listener in self.outbox_listeners:
            listener()

    @classmethod
    async def open(
        cls, path: Path, *, max_db_mb: int = 0, max_pending_events: int = DEFAULT_MAX_PENDING
    ) -> Store:
        """Check the database (it is not a store that lost its content; quick_check), migrate
        it, and start the writer. A file this process cannot write raises `DataDirProblem`."""
        path.parent.mkdir(parents=True, exist_ok=True)
        check_before_open(path)
        writer = Writer(lambda: connect(path, max_db_mb=max_db_mb), max_pending=max_pending_events)
        try:
            await writer.start()
            await writer.run_on_thread(_check_and_migrate)
            reader = await aiosqlite.connect(path, isolation_level=None)
        except sqlite3.Error as error:
            await writer.close()
            if is_read_only(error) or "unable to open database file" in str(error):
                raise DataDirProblem(
                    unwritable(path) or describe_unwritable(path, str(error))
                ) from error
            raise
        except BaseException:
            await writer.close()
            raise
        await reader.execute("PRAGMA busy_timeout = 10000")
        await reader.execute("PRAGMA query_only = 1")
        with contextlib.suppress(OSError):  # the write probe reports an unwritable directory
            write_marker(path.parent)
        return cls(path, writer, reader, _lookup_connection(path))

    async def probe_write(self) -> None:
        """A real, durable write: raises `DataDirProblem` naming the file, its owner and the fix
        when this process cannot write the database (SQLite opens such a file read-only and
        fails only at the first write)."""
        stamp = utc_stamp(dt.datetime.now(dt.UTC))

        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO sync_state VALUES ('last_write_probe', ?)", (stamp,)
            )

        try:
            await self.writer.submit(job)
        except sqlite3.Error as error:
            if is_read_only(error):
                raise DataDirProblem(
                    unwritable(self.path) or describe_unwritable(self.path, str(error))
                ) from error
            raise

    def write_problem(self) -> str | None:
        """Why the database cannot be written now (for readiness and doctor), or None."""
        return unwritable(self.path) or (
            describe_unwritable(self.path, self.writer.read_only_error)
            if self.writer.read_only_error
            else None
        )

    async def close(self) -> None:
        await self.writer.close()
        await self._reader.close()
        self._lookup.close()

    async def set_page_limit(self, max_db_mb: int) -> None:
        """Change the database size cap at run time (0 lifts it)."""
        pages = max_db_mb * 1024 * 1024 // 4096 if max_db_mb > 0 else 4294967294

        def job(conn: sqlite3.Connection) -> None:
            conn.execute(f"PRAGMA max_page_count = {pages}")

        await self.writer.run_on_thread(job)

    # ---- reads -------------------------------------------------------------------------------

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first row of an indexed point lookup, read on the event loop's own thread.

        Such a read takes about 25 µs from SQLite's page cache, a quarter of an empty hop to a
        thread and back (measured with bench/lookup.py, docs/performance.md); WAL means it never
        waits for the writer. Scans and counts go through aiosqlite (`self._reader`) instead.
        """
        return self._lookup.execute(sql, params).fetchone()

    async def member_by_identifier(self, identifier: str) -> MemberView | None:
        sql = _MEMBER_VIEW_SQL + " JOIN member_identifiers i ON i.member_id = m.member_id"
        row = self._one(sql + " WHERE i.identifier = ?", (identifier,))
        return _member_view(row) if row else None

    async def member(self, member_id: str) -> MemberView | None:
        row = self._one(_MEMBER_VIEW_SQL + " WHERE m.member_id = ?", (member_id,))
        return _member_view(row) if row else None

    async def coupon(self, code: str) -> Coupon | None:
        row = self._one("SELECT record FROM coupons WHERE code = ?", (code,))
        return Coupon.model_validate_json(row[0]) if row else None

    async def program_paused(self, program: str) -> bool:
        row = self._one("SELECT paused FROM program_switches WHERE program = ?", (program,))
        return bool(row[0]) if row else False

    async def posted_reply(self, key: CheckKey) -> PostOk | None:
        row = self._one(
            "SELECT reply FROM posted_checks WHERE business_date = ? AND wsid = ? AND check_no = ?",
            (key.business_date.isoformat(), key.wsid, key.check),
        )
        return _post_ok_from_json(row[0]) if row else None

    def get_state(self, key: str) -> str | None:
        """A value of `sync_state` (cursor, last catalog hash, ...)."""
        row = self._one("SELECT value FROM sync_state WHERE key = ?", (key,))
        return str(row[0]) if row else None

    async def set_state(self, key: str, value: str | None) -> None:
        def job(conn: sqlite3.Connection) -> None:
            if value is None:
                conn.execute("DELETE FROM sync_state WHERE key = ?", (key,))
            else:
                conn.execute("INSERT OR REPLACE INTO sync_state VALUES (?, ?)", (key, value))

        await self.writer.submit(job)

    async def ledger_total(self, member_id: str) -> tuple[int, int, int]:
        """(points, wallet, tickets) this store has recorded for a member."""
        async with self._reader.execute(
            "SELECT COALESCE(SUM(points),0), COALESCE(SUM(wallet),0), COALESCE(SUM(tickets),0)"
            " FROM ledger WHERE member_id = ?",
            (member_id,),
        ) as cur:
            row = await cur.fetchone()
        assert row is not None
        return int(row[0]), int(row[1]), int(row[2])

    async def outbox_events(self, limit: int = 1000) -> list[OutboxEvent]:
        async with self._reader.execute(
            "SELECT event_id, type, occurred_at, payload FROM outbox ORDER BY seq LIMIT ?",
            (limit,),
        ) as cur:
            rows = await cur.fetchall()
        return [OutboxEvent(r[0], r[1], r[2], json.loads(r[3])) for r in rows]

    async def counts(self) -> StoreCounts:
        async with self._reader.execute(
            """SELECT (SELECT COUNT(*) FROM members), (SELECT COUNT(*) FROM member_identifiers),
                      (SELECT COUNT(*) FROM coupons),
                      (SELECT COUNT(*) FROM coupon_reservations WHERE status = 'reserved'),
                      (SELECT COUNT(*) FROM posted_checks), (SELECT COUNT(*) FROM outbox),
                      (SELECT MIN(occurred_at) FROM outbox), (SELECT COUNT(*) FROM dead_letters)"""
        ) as cur:
            row = await cur.fetchone()
        assert row is not None
        return StoreCounts(*row)

    # ---- the cache (import and, later, central's changes) -------------------------------------

    async def upsert_members(self, members: Sequence[Member]) -> None:
        await self.writer.submit(_members_job(members))

    async def delete_members(self, member_ids: Sequence[str]) -> None:
        await self.writer.submit(_member_deletions_job(member_ids))

    async def upsert_coupons(self, coupons: Sequence[Coupon]) -> None:
        await self.writer.submit(_coupons_job(coupons))

    async def delete_coupons(self, codes: Sequence[str]) -> None:
        await self.writer.submit(_coupon_deletions_job(codes))

    async def apply_changes(self, page: ChangePage) -> None:
        """One page of central's changes, with the cursor after it, in one transaction: a crash
        leaves either the whole page applied and the cursor moved, or neither."""
        jobs = [
            _members_job(page.members),
            _member_deletions_job(page.deleted_members),
            _coupons_job(page.coupons),
            _coupon_deletions_job(page.deleted_coupons),
            _rules_job(page.rules, "central"),
        ]
        state = dict(page.state)

        def job(conn: sqlite3.Connection) -> None:
            for part in jobs:
                part(conn)
            conn.executemany("INSERT OR REPLACE INTO sync_state VALUES (?, ?)", state.items())

        await self.writer.submit(job)

    async def add_rules(self, document: RulesDocument, *, source: str) -> None:
        await self.writer.submit(_rules_job([document], source))

    def active_rules(self, now: dt.datetime) -> tuple[str, str] | None:
        """(version, document JSON) of the rules in force at `now`: the latest effective."""
        row = self._one(
            "SELECT version, document FROM rules_documents WHERE effective_from <= ?"
            " ORDER BY effective_from DESC, received_at DESC LIMIT 1",
            (utc_stamp(now),),
        )
        return (str(row[0]), str(row[1])) if row else None

    async def replace_products(self, products: Sequence[tuple[int, str, str, str, bool]]) -> None:
        """The POS menu's products (object, name, family group, major group, active)."""
        rows = [(o, n, f, m, int(a)) for o, n, f, m, a in products]

        def job(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM products")
            conn.executemany("INSERT INTO products VALUES (?, ?, ?, ?, ?)", rows)

        await self.writer.submit(job)

    def categories_for(self, objects: Sequence[int]) -> dict[int, str]:
        """The family group of each menu item object the POS menu knows."""
        if not objects:
            return {}
        rows = self._lookup.execute(
            "SELECT object_number, family_group FROM products WHERE object_number IN"
            " (SELECT value FROM json_each(?))",
            (json.dumps(sorted(set(objects))),),
        ).fetchall()
        return {int(r[0]): str(r[1]) for r in rows if r[1]}

    async def remove_stale(self, since: str, *, max_share: float = 1.0) -> StaleRecords:
        """After a full snapshot: drop the members and coupons it did not bring (central deleted
        them while this store was not listening). `since` is when the snapshot began.

        When the stale share of either table is above `max_share`, nothing is removed
        (`removed` is False): an empty or truncated snapshot must not wipe the cache. Counted,
        decided and deleted in one transaction, so the numbers are the rows actually removed."""

        def job(conn: sqlite3.Connection) -> StaleRecords:
            count = "SELECT COALESCE(SUM(updated_at < ?), 0), COUNT(*) FROM {}"
            stale_m, cached_m = conn.execute(count.format("members"), (since,)).fetchone()
            stale_c, cached_c = conn.execute(count.format("coupons"), (since,)).fetchone()
            found = StaleRecords(int(stale_m), int(cached_m), int(stale_c), int(cached_c))
            if found.above(max_share):
                return found
            stale = "SELECT member_id FROM members WHERE updated_at < ?"
            conn.execute(f"DELETE FROM member_identifiers WHERE member_id IN ({stale})", (since,))
            conn.execute(f"DELETE FROM member_pending WHERE member_id IN ({stale})", (since,))
            members = conn.execute("DELETE FROM members WHERE updated_at < ?", (since,)).rowcount
            coupons = conn.execute("DELETE FROM coupons WHERE updated_at < ?", (since,)).rowcount
            return StaleRecords(int(members), int(cached_m), int(coupons), int(cached_c), True)

        result: StaleRecords = await self.writer.submit(job)
        return result

    # ---- coupons at the register ---------------------------------------------------------------

    async def reserve_coupon(
        self,
        *,
        code: str,
        wsid: int,
        check: int,
        member_id: str | None,
        now: dt.datetime,
        ttl: dt.timedelta,
        decide: CouponDecision,
    ) -> Reservation | Refusal:
        """Reserve `code` for a check, or say why not; the usage counts are read in the write
        transaction, so two registers can never both get the last use of a coupon."""
        now_s, expires_s = utc_stamp(now), utc_stamp(now + ttl)

        def job(conn: sqlite3.Connection) -> Reservation | Refusal:
            row = conn.execute("SELECT record FROM coupons WHERE code = ?", (code,)).fetchone()
            if row is None:
                return Refusal(Reason.UNKNOWN_COUPON, "Coupon not recognised")
            coupon = Coupon.model_validate_json(row[0])
            if check != 0:  # no check number yet: nothing to recognise a repeat by
                same = conn.execute(
                    # `+`: keeps SQLite on the (code, wsid, check) index; the (status,
                    # expires_at) one would read every live reservation of every coupon.
                    "SELECT ref FROM coupon_reservations WHERE code = ? AND wsid = ? AND"
                    " check_no = ? AND +status = 'reserved' AND +expires_at > ?",
                    (code, wsid, check, now_s),
                ).fetchone()
                if same is not None:
                    return Reservation(coupon, str(same[0]), new=False)
            refusal = decide(coupon, _coupon_usage(conn, coupon, member_id, now_s))
            if refusal is not None:
                return Refusal(*refusal)
            ref = "C" + secrets.token_hex(6).upper()
            conn.execute(
                "INSERT INTO coupon_reservations (ref, code, wsid, check_no, member_id, status,"
                " reserved_at, expires_at) VALUES (?, ?, ?, ?, ?, 'reserved', ?, ?)",
                (ref, code, wsid, check, member_id, now_s, expires_s),
            )
            _bump_usage(conn, [(code, 0, 1)])
            return Reservation(coupon, ref, new=True)

        # A reservation survives a crash of the process; a power cut may lose it, and the
        # check that used it still posts (see docs/decisions.md).
        result: Reservation | Refusal = await self.writer.submit(job, durable=False)
        return result

    async def note_authorization(self, ref: str, *, how: str, authorization_id: str | None) -> None:
        """Record how a reservation was authorised: `online` by central, or `offline` by the
        store's policy (such redemptions may later turn out to be conflicts)."""

        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE coupon_reservations SET authorization = ?, authorization_id = ?"
                " WHERE ref = ?",
                (how, authorization_id, ref),
            )

        await self.writer.submit(job, durable=False)

    async def release_coupon(
        self,
        ref: str,
        now: dt.datetime,
        make_event: Callable[[str, str], OutboxEvent],
        *,
        released_by: str = "void",
    ) -> Refusal | None:
        """Release a reservation (COUPON_VOID). Releasing twice is fine; a redeemed one is not."""
        now_s = utc_stamp(now)

        def job(conn: sqlite3.Connection) -> Refusal | None:
            row = conn.execute(
                "SELECT code, status FROM coupon_reservations WHERE ref = ?", (ref,)
            ).fetchone()
            if row is None:
                return Refusal(Reason.UNKNOWN_COUPON, "Coupon not on this check")
            code, status = row
            if status == "redeemed":
                return Refusal(Reason.ALREADY_REDEEMED, "Coupon already redeemed")
            if status == "reserved":
                conn.execute(
                    "UPDATE coupon_reservations SET status = 'released', finished_at = ?,"
                    " released_by = ? WHERE ref = ?",
                    (now_s, released_by, ref),
                )
                _bump_usage(conn, [(code, 0, -1)])
                _insert_events(conn, [make_event(ref, code)])
            return None

        result: Refusal | None = await self.writer.submit(job, durable=False)
        self._outbox_changed()
        return result

    async def release_expired(
        self, now: dt.datetime, make_event: Callable[[str, str, int, int], OutboxEvent]
    ) -> int:
        """Release every reservation whose check never posted in time; returns how many."""
        now_s = utc_stamp(now)

        def job(conn: sqlite3.Connection) -> int:
            rows = conn.execute(
                "SELECT ref, code, wsid, check_no FROM coupon_reservations"
                " WHERE status = 'reserved' AND expires_at <= ?",
                (now_s,),
            ).fetchall()
            conn.executemany(
                "UPDATE coupon_reservations SET status = 'released', finished_at = ?,"
                " released_by = 'expired' WHERE ref = ?",
                [(now_s, r[0]) for r in rows],
            )
            _bump_usage(conn, [(r[1], 0, -1) for r in rows])
            _insert_events(conn, [make_event(r[0], r[1], r[2], r[3]) for r in rows])
            return len(rows)

        released: int = await self.writer.submit(job)
        if released:
            self._outbox_changed()
        return released

    # ---- checks ------------------------------------------------------------------------------

    async def settle_check(
        self,
        key: CheckKey,
        *,
        member_id: str | None,
        total: int,
        coupon_refs: Sequence[str],
        now: dt.datetime,
        settle: Settle,
    ) -> tuple[PostOk, bool]:
        """Record a posted check durably, once. Returns (reply, first_time).

        `settle` decides the points from the member's balance and the check's coupons as read
        now, on the event loop; the write transaction then records the check only if it is new,
        and decides again (on the writer's thread) in the rare case that the balance or the
        coupons changed in between, so the receipt's balance is always exact.
        """
        date_s, now_s = key.business_date.isoformat(), utc_stamp(now)
        month = key.business_date.isoformat()[:7]
        seen = _check_context(self._lookup, member_id, coupon_refs, now_s, month)
        first = _CheckRows.build(settle(*_context_views(seen)))

        def job(conn: sqlite3.Connection) -> tuple[PostOk, bool]:
            inserted = conn.execute(
                "INSERT OR IGNORE INTO posted_checks VALUES (?, ?, ?, ?, ?, ?, ?)",
                (date_s, key.wsid, key.check, member_id, total, first.reply_json, now_s),
            )
            if inserted.rowcount == 0:
                stored = conn.execute(
                    "SELECT reply FROM posted_checks WHERE business_date = ? AND wsid = ?"
                    " AND check_no = ?",
                    (date_s, key.wsid, key.check),
                ).fetchone()
                return _post_ok_from_json(stored[0]), False
            rows = first
            current = _check_context(conn, member_id, coupon_refs, now_s, month)
            if current != seen:
                rows = _CheckRows.build(settle(*_context_views(current)))
                conn.execute(
                    "UPDATE posted_checks SET reply = ? WHERE business_date = ? AND wsid = ?"
                    " AND check_no = ?",
                    (rows.reply_json, date_s, key.wsid, key.check),
                )
            entry = rows.settlement.ledger
            if entry is not None and rows.events:
                conn.execute(
                    "INSERT INTO ledger (member_id, event_id, business_date, points, wallet,"
                    " tickets, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        entry.member_id,
                        rows.events[0][0],
                        date_s,
                        entry.points,
                        entry.wallet,
                        entry.tickets,
                        now_s,
                    ),
                )
                conn.execute(
                    "INSERT INTO member_pending VALUES (?, ?, ?, ?) ON CONFLICT (member_id) DO"
                    " UPDATE SET points = points + excluded.points,"
                    " wallet = wallet + excluded.wallet, tickets = tickets + excluded.tickets",
                    (entry.member_id, entry.points, entry.wallet, entry.tickets),
                )
            conn.executemany(_INSERT_EVENT, rows.events)
            redeemed = [c for c in current[1] if c[3]]
            if redeemed:
                conn.executemany(
                    "UPDATE coupon_reservations SET status = 'redeemed', finished_at = ?,"
                    " posted_key = ? WHERE ref = ?",
                    [(now_s, key.text(), c[0]) for c in redeemed],
                )
                # A redeemed reservation stops being open; a lapsed one was no longer open.
                _bump_usage(conn, [(c[1], 1, -1 if c[2] == "reserved" else 0) for c in redeemed])
            return rows.settlement.reply, True

        result: tuple[PostOk, bool] = await self.writer.submit(job, proves_room=True)
        self._outbox_changed()
        return result

    # ---- the outbox, towards central ---------------------------------------------------------

    async def next_batch(
        self, max_events: int, max_bytes: int, in_flight: Sequence[str] = ()
    ) -> OutboxBatch | None:
        """The batch to send next: an unfinished one (sent before a restart or a failure, with
        the same id and events), else the oldest events that fit, stamped with a new batch id.
        Batches `in_flight` (being sent right now) are not offered again."""
        rows = await self._reader.execute_fetchall(
            "SELECT batch_id FROM outbox WHERE batch_id IS NOT NULL"
            " AND batch_id NOT IN (SELECT value FROM json_each(?)) ORDER BY seq LIMIT 1",
            (json.dumps(list(in_flight)),),
        )
        unfinished = next(iter(rows), None)
        if unfinished is not None:
            batch_id = str(unfinished[0])
            rows = await self._reader.execute_fetchall(
                "SELECT event_id, type, occurred_at, payload FROM outbox WHERE batch_id = ?"
                " ORDER BY seq",
                (batch_id,),
            )
            return OutboxBatch(batch_id, [_outbox_row(r) for r in rows])
        rows = await self._reader.execute_fetchall(
            "SELECT event_id, type, occurred_at, payload FROM outbox WHERE batch_id IS NULL"
            " ORDER BY seq LIMIT ?",
            (max_events,),
        )
        events: list[QueuedEvent] = []
        size = 0
        for row in rows:
            size += len(row[3]) + len(row[0]) + len(row[1]) + len(row[2]) + 64
            if events and size > max_bytes:
                break
            events.append(_outbox_row(row))
        if not events:
            return None
        batch_id = new_ulid()
        ids = json.dumps([e.event_id for e in events])

        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE outbox SET batch_id = ?, attempts = attempts + 1"
                " WHERE event_id IN (SELECT value FROM json_each(?))",
                (batch_id, ids),
            )

        # Not worth an fsync: losing the stamp only means the events go in a new batch.
        await self.writer.submit(job, durable=False)
        return OutboxBatch(batch_id, events)

    async def finish_batch(
        self, batch: OutboxBatch, results: Sequence[EventResult]
    ) -> BatchOutcome:
        """Apply central's per-event results: delivered events leave the outbox (their ledger
        entries get central's `applied_at`), rejected ones go to dead letters (or, for a coupon
        central found used elsewhere, to offline conflicts), and events central did not answer
        go back to the queue to be sent again."""
        by_id = {e.event_id: e for e in batch.events}
        now_s = utc_stamp(dt.datetime.now(dt.UTC))
        delivered: list[tuple[str]] = []
        applied: list[tuple[str, str]] = []
        dead: list[tuple[str, str, str, str, str, str]] = []
        conflicts: list[tuple[Any, ...]] = []
        answered: set[str] = set()
        for result in results:
            event = by_id.get(result.event_id)
            if event is None or result.event_id in answered:
                continue  # not ours, or answered twice: the first answer counts
            answered.add(result.event_id)
            if result.status in ("accepted", "duplicate"):
                delivered.append((event.event_id,))
                stamp = _central_stamp(result.applied_at)
                if stamp is not None:
                    applied.append((stamp, event.event_id))
            elif result.reason == COUPON_CONFLICT and event.type == "coupon.redeemed":
                p = event.payload
                conflicts.append(
                    (
                        event.event_id,
                        p.get("code", ""),
                        p.get("coupon_ref"),
                        p.get("business_date"),
                        p.get("wsid"),
                        p.get("check"),
                        p.get("member_id"),
                        result.reason,
                        now_s,
                    )
                )
                delivered.append((event.event_id,))
            else:
                payload = json.dumps(event.payload, separators=(",", ":"))
                reason = result.reason or "REJECTED"
                dead.append((event.event_id, event.type, event.occurred_at, payload, reason, now_s))
                delivered.append((event.event_id,))
        unanswered = [(e.event_id,) for e in batch.events if e.event_id not in answered]

        def job(conn: sqlite3.Connection) -> None:
            conn.executemany("UPDATE ledger SET applied_at = ? WHERE event_id = ?", applied)
            conn.executemany("INSERT OR REPLACE INTO dead_letters VALUES (?,?,?,?,?,?)", dead)
            conn.executemany(
                "INSERT OR REPLACE INTO offline_conflicts VALUES (?,?,?,?,?,?,?,?,?)", conflicts
            )
            conn.executemany("DELETE FROM outbox WHERE event_id = ?", delivered)
            conn.executemany("UPDATE outbox SET batch_id = NULL WHERE event_id = ?", unanswered)

        await self.writer.submit(job)
        return BatchOutcome(
            delivered=len(delivered) - len(dead) - len(conflicts),
            dead_letters=len(dead),
            conflicts=len(conflicts),
            unanswered=len(unanswered),
        )

    async def release_batch(self, batch: OutboxBatch) -> None:
        """Give a batch's events back to the queue (central refused the batch as a whole)."""
        ids = json.dumps([e.event_id for e in batch.events])

        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE outbox SET batch_id = NULL WHERE event_id IN"
                " (SELECT value FROM json_each(?))",
                (ids,),
            )

        await self.writer.submit(job, durable=False)

    async def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """One value from a read-only query (status figures)."""
        rows = await self._reader.execute_fetchall(sql, params)
        row = next(iter(rows), None)
        return row[0] if row else None

    async def dead_letters(self, limit: int = 1000) -> list[dict[str, Any]]:
        rows = await self._reader.execute_fetchall(
            "SELECT event_id, type, occurred_at, reason, failed_at, payload FROM dead_letters"
            " ORDER BY failed_at LIMIT ?",
            (limit,),
        )
        names = ("event_id", "type", "occurred_at", "reason", "failed_at", "payload")
        return [dict(zip(names, row, strict=True)) for row in rows]

    async def retry_dead_letters(self, event_ids: Sequence[str] | None = None) -> int:
        """Put dead letters back in the outbox (all of them, or those named), same event ids:
        central de-duplicates, so a retry can never count anything twice."""
        chosen = json.dumps(list(event_ids)) if event_ids is not None else None

        def job(conn: sqlite3.Connection) -> int:
            where = "" if chosen is None else " WHERE event_id IN (SELECT value FROM json_each(?))"
            params: tuple[Any, ...] = () if chosen is None else (chosen,)
            moved = conn.execute(
                "INSERT OR IGNORE INTO outbox (event_id, type, occurred_at, payload)"
                " SELECT event_id, type, occurred_at, payload FROM dead_letters" + where,
                params,
            ).rowcount
            conn.execute("DELETE FROM dead_letters" + where, params)
            return int(moved)

        moved: int = await self.writer.submit(job)
        if moved:
            self._outbox_changed()
        return moved

    async def outbox_depth(self) -> tuple[int, str | None]:
        """(events waiting, occurred_at of the oldest)."""
        rows = await self._reader.execute_fetchall("SELECT COUNT(*), MIN(occurred_at) FROM outbox")
        row = next(iter(rows))
        return int(row[0]), row[1]

    # ---- members' choices and program switches --------------------------------------------------

    async def set_earn_mode(
        self, member_id: str, *, earn_mode: str, consent: bool, event: OutboxEvent
    ) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE members SET earn_mode = ?, lottery_consent = ?,"
                " record = json_set(record, '$.earn_mode', ?, '$.lottery_consent', json(?))"
                " WHERE member_id = ?",
                (earn_mode, int(consent), earn_mode, "true" if consent else "false", member_id),
            )
            _insert_events(conn, [event])

        await self.writer.submit(job)
        self._outbox_changed()

    async def set_program_paused(self, program: str, paused: bool, *, by: str) -> None:
        now_s = utc_stamp(dt.datetime.now(dt.UTC))

        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO program_switches VALUES (?, ?, ?, ?)",
                (program, int(paused), now_s, by),
            )

        await self.writer.submit(job)

    async def append_events(self, events: Sequence[OutboxEvent], *, durable: bool = True) -> None:
        def job(conn: sqlite3.Connection) -> None:
            _insert_events(conn, events)

        await self.writer.submit(job, durable=durable)
        self._outbox_changed()

    def append_events_nowait(self, events: Sequence[OutboxEvent]) -> None:
        """Queue events that ride with the next commit (identification events): the register
        does not wait for them, and they cost no commit of their own."""

        def job(conn: sqlite3.Connection) -> None:
            _insert_events(conn, events)

        self.writer.add_rider(job)


def backup_database(source: Path, target: Path, pages_per_step: int = 256) -> str:
    """Copy a live database with SQLite's online backup (safe while the daemon writes), then
    check the copy. Returns the copy's `integrity_check` verdict ("ok" when sound)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        raise FileExistsError(f"{target} exists; choose a new file")
    with (
        contextlib.closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as live,
        contextlib.closing(sqlite3.connect(target)) as copy,
    ):
        live.execute("PRAGMA busy_timeout = 10000")
        live.backup(copy, pages=pages_per_step)  # steps let the writer go on in between
        copy.execute("PRAGMA journal_mode = DELETE")  # a single self-contained file
        verdict = copy.execute("PRAGMA integrity_check").fetchone()[0]
    return str(verdict)
