"""The gateway's SQLite store: the cache of members and coupons, checks, ledger and outbox.

Reads go through one aiosqlite connection (WAL lets them run beside the writer); every write is a
job for the single `Writer`, so concurrent writes share commits. Decisions that must see the data
as it is inside the write transaction (a coupon's usage, a member's balance when a check posts)
are handed in as pure callables and run there.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

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
from gateway.rules.coupons import CouponUsage
from gateway.store.schema import migrate
from gateway.store.writer import StorageFull, Writer, connect

__all__ = ["CheckKey", "ReservedCoupon", "StorageFull", "Store", "StoreCorrupt", "utc_stamp"]


class StoreCorrupt(Exception):
    """`PRAGMA quick_check` found damage; the daemon refuses to run on it."""


def utc_stamp(moment: dt.datetime) -> str:
    """RFC 3339 UTC with microseconds and `Z`: one shape everywhere, so text order is time order."""
    # isoformat, not strftime: a tenth of the cost, and this runs several times per check.
    return moment.astimezone(dt.UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


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


@dataclass(frozen=True, slots=True)
class MemberView:
    member: Member
    balance: Balance
    lottery_paused: bool


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


def _lookup_connection(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    # Short: a lookup that ever had to wait would hold up the event loop.
    conn.execute("PRAGMA busy_timeout = 250")
    conn.execute("PRAGMA query_only = 1")
    return conn


def _check_and_migrate(conn: sqlite3.Connection) -> tuple[int, int]:
    problems = [row[0] for row in conn.execute("PRAGMA quick_check").fetchall()]
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
CheckContext = tuple[tuple[Any, ...] | None, tuple[tuple[str, Any, Any], ...]]


def _check_context(
    conn: sqlite3.Connection, member_id: str | None, coupon_refs: Sequence[str]
) -> CheckContext:
    member_row = None
    if member_id is not None:
        found = conn.execute(_MEMBER_VIEW_SQL + " WHERE m.member_id = ?", (member_id,)).fetchone()
        member_row = tuple(found) if found is not None else None
    coupons = []
    for ref in coupon_refs:
        row = conn.execute(
            "SELECT code, status FROM coupon_reservations WHERE ref = ?", (ref,)
        ).fetchone()
        coupons.append((ref, row[0], row[1]) if row else (ref, None, None))
    return member_row, tuple(coupons)


def _context_views(context: CheckContext) -> tuple[MemberView | None, list[ReservedCoupon]]:
    member_row, coupons = context
    view = _member_view(member_row) if member_row is not None else None
    return view, [ReservedCoupon(ref, code, status) for ref, code, status in coupons]


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

    @classmethod
    async def open(cls, path: Path, *, max_db_mb: int = 0) -> Store:
        """Check the database (quick_check), migrate it, and start the writer."""
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = Writer(lambda: connect(path, max_db_mb=max_db_mb))
        await writer.start()
        try:
            await writer.run_on_thread(_check_and_migrate)
            reader = await aiosqlite.connect(path, isolation_level=None)
        except BaseException:
            await writer.close()
            raise
        await reader.execute("PRAGMA busy_timeout = 10000")
        await reader.execute("PRAGMA query_only = 1")
        return cls(path, writer, reader, _lookup_connection(path))

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

        Such a read takes a few microseconds from SQLite's page cache, far less than a hop to a
        thread and back (measured: see docs/performance.md); WAL means it never waits for the
        writer. Scans and counts go through aiosqlite (`self._reader`) instead.
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
        now = utc_stamp(dt.datetime.now(dt.UTC))
        rows = [
            (
                m.member_id,
                m.display_name,
                m.tier,
                m.birthday,
                json.dumps(m.flags),
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
        ids = [m.member_id for m in members]
        identifiers = [(i, m.member_id) for m in members for i in m.identifiers]

        def job(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT OR REPLACE INTO members VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows
            )
            conn.executemany(
                "DELETE FROM member_identifiers WHERE member_id = ?", [(i,) for i in ids]
            )
            # An identifier that moved to another member follows it.
            conn.executemany("INSERT OR REPLACE INTO member_identifiers VALUES (?, ?)", identifiers)
            # A new balance from central may include entries that were pending here.
            with_entries = conn.execute(
                "SELECT member_id FROM member_pending WHERE member_id IN"
                " (SELECT value FROM json_each(?))",
                (json.dumps(ids),),
            ).fetchall()
            for statement in _RECOMPUTE_PENDING:
                conn.executemany(statement, with_entries)

        await self.writer.submit(job)

    async def delete_members(self, member_ids: Sequence[str]) -> None:
        def job(conn: sqlite3.Connection) -> None:
            params = [(i,) for i in member_ids]
            conn.executemany("DELETE FROM member_identifiers WHERE member_id = ?", params)
            conn.executemany("DELETE FROM members WHERE member_id = ?", params)
            conn.executemany("DELETE FROM member_pending WHERE member_id = ?", params)

        await self.writer.submit(job)

    async def upsert_coupons(self, coupons: Sequence[Coupon]) -> None:
        now = utc_stamp(dt.datetime.now(dt.UTC))
        rows = [(c.code, c.model_dump_json(), now) for c in coupons]

        def job(conn: sqlite3.Connection) -> None:
            conn.executemany("INSERT OR REPLACE INTO coupons VALUES (?, ?, ?)", rows)

        await self.writer.submit(job)

    async def delete_coupons(self, codes: Sequence[str]) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.executemany("DELETE FROM coupons WHERE code = ?", [(c,) for c in codes])

        await self.writer.submit(job)

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
    ) -> tuple[Coupon, str] | Refusal:
        """Reserve `code` for a check, or say why not; the usage counts are read in the write
        transaction, so two registers can never both get the last use of a coupon."""
        now_s, expires_s = utc_stamp(now), utc_stamp(now + ttl)

        def job(conn: sqlite3.Connection) -> tuple[Coupon, str] | Refusal:
            row = conn.execute("SELECT record FROM coupons WHERE code = ?", (code,)).fetchone()
            if row is None:
                return Refusal(Reason.UNKNOWN_COUPON, "Coupon not recognised")
            coupon = Coupon.model_validate_json(row[0])
            if check != 0:  # no check number yet: nothing to recognise a repeat by
                same = conn.execute(
                    "SELECT ref FROM coupon_reservations WHERE code = ? AND wsid = ? AND"
                    " check_no = ? AND status = 'reserved' AND expires_at > ?",
                    (code, wsid, check, now_s),
                ).fetchone()
                if same is not None:
                    return coupon, str(same[0])
            redeemed, elsewhere, mine = conn.execute(
                """SELECT
                     COUNT(*) FILTER (WHERE status = 'redeemed'),
                     COUNT(*) FILTER (WHERE status = 'reserved' AND expires_at > ?),
                     COUNT(*) FILTER (WHERE member_id = ? AND (status = 'redeemed'
                                      OR (status = 'reserved' AND expires_at > ?)))
                   FROM coupon_reservations WHERE code = ?""",
                (now_s, member_id, now_s, code),
            ).fetchone()
            refusal = decide(coupon, CouponUsage(redeemed, elsewhere, mine))
            if refusal is not None:
                return Refusal(*refusal)
            ref = "C" + secrets.token_hex(6).upper()
            conn.execute(
                "INSERT INTO coupon_reservations (ref, code, wsid, check_no, member_id, status,"
                " reserved_at, expires_at) VALUES (?, ?, ?, ?, ?, 'reserved', ?, ?)",
                (ref, code, wsid, check, member_id, now_s, expires_s),
            )
            return coupon, ref

        # A reservation survives a crash of the process; a power cut may lose it, and the
        # check that used it still posts (see docs/decisions.md).
        result: tuple[Coupon, str] | Refusal = await self.writer.submit(job, durable=False)
        return result

    async def release_coupon(
        self, ref: str, now: dt.datetime, make_event: Callable[[str, str], OutboxEvent]
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
                    "UPDATE coupon_reservations SET status = 'released', finished_at = ?"
                    " WHERE ref = ?",
                    (now_s, ref),
                )
                _insert_events(conn, [make_event(ref, code)])
            return None

        result: Refusal | None = await self.writer.submit(job, durable=False)
        return result

    async def release_expired(
        self, now: dt.datetime, make_event: Callable[[str, str], OutboxEvent]
    ) -> int:
        """Release every reservation whose check never posted in time; returns how many."""
        now_s = utc_stamp(now)

        def job(conn: sqlite3.Connection) -> int:
            rows = conn.execute(
                "SELECT ref, code FROM coupon_reservations WHERE status = 'reserved'"
                " AND expires_at <= ?",
                (now_s,),
            ).fetchall()
            conn.executemany(
                "UPDATE coupon_reservations SET status = 'released', finished_at = ? WHERE ref = ?",
                [(now_s, r[0]) for r in rows],
            )
            _insert_events(conn, [make_event(r[0], r[1]) for r in rows])
            return len(rows)

        released: int = await self.writer.submit(job)
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
        seen = _check_context(self._lookup, member_id, coupon_refs)
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
            current = _check_context(conn, member_id, coupon_refs)
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
            if coupon_refs:
                conn.executemany(
                    "UPDATE coupon_reservations SET status = 'redeemed', finished_at = ?,"
                    " posted_key = ? WHERE ref = ? AND status != 'redeemed'",
                    [(now_s, key.text(), ref) for ref in coupon_refs],
                )
            return rows.settlement.reply, True

        result: tuple[PostOk, bool] = await self.writer.submit(job)
        return result

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

    def append_events_nowait(self, events: Sequence[OutboxEvent]) -> None:
        """Queue events that ride with the next commit (identification events): the register
        does not wait for them, and they cost no commit of their own."""

        def job(conn: sqlite3.Connection) -> None:
            _insert_events(conn, events)

        self.writer.add_rider(job)
