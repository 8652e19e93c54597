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
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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
SELECT m.record,
       m.points_balance + (SELECT COALESCE(SUM(l.points), 0) FROM ledger l
            WHERE l.member_id = m.member_id AND (l.applied_at IS NULL OR m.balance_as_of IS NULL
                                                 OR l.applied_at > m.balance_as_of)),
       m.wallet_points + (SELECT COALESCE(SUM(l.wallet), 0) FROM ledger l
            WHERE l.member_id = m.member_id AND (l.applied_at IS NULL OR m.balance_as_of IS NULL
                                                 OR l.applied_at > m.balance_as_of)),
       COALESCE((SELECT paused FROM program_switches WHERE program = 'lottery'), 0)
FROM members m
"""


def _check_and_migrate(conn: sqlite3.Connection) -> tuple[int, int]:
    problems = [row[0] for row in conn.execute("PRAGMA quick_check").fetchall()]
    if problems != ["ok"]:
        raise StoreCorrupt("; ".join(str(p) for p in problems[:5]))
    return migrate(conn)


def _member_view(row: Sequence[Any]) -> MemberView:
    return MemberView(
        member=Member.model_validate_json(row[0]),
        balance=Balance(points=int(row[1]), wallet=int(row[2])),
        lottery_paused=bool(row[3]),
    )


def _insert_events(conn: sqlite3.Connection, events: Iterable[OutboxEvent]) -> None:
    conn.executemany(
        "INSERT INTO outbox (event_id, type, occurred_at, payload) VALUES (?, ?, ?, ?)",
        [
            (e.event_id, e.type, e.occurred_at, json.dumps(e.payload, separators=(",", ":")))
            for e in events
        ],
    )


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

    def __init__(self, path: Path, writer: Writer, reader: aiosqlite.Connection) -> None:
        self.path = path
        self.writer = writer
        self._reader = reader

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
        return cls(path, writer, reader)

    async def close(self) -> None:
        await self.writer.close()
        await self._reader.close()

    async def set_page_limit(self, max_db_mb: int) -> None:
        """Change the database size cap at run time (0 lifts it)."""
        pages = max_db_mb * 1024 * 1024 // 4096 if max_db_mb > 0 else 4294967294

        def job(conn: sqlite3.Connection) -> None:
            conn.execute(f"PRAGMA max_page_count = {pages}")

        await self.writer.run_on_thread(job)

    # ---- reads -------------------------------------------------------------------------------

    async def member_by_identifier(self, identifier: str) -> MemberView | None:
        sql = _MEMBER_VIEW_SQL + " JOIN member_identifiers i ON i.member_id = m.member_id"
        async with self._reader.execute(sql + " WHERE i.identifier = ?", (identifier,)) as cur:
            row = await cur.fetchone()
        return _member_view(row) if row else None

    async def member(self, member_id: str) -> MemberView | None:
        async with self._reader.execute(
            _MEMBER_VIEW_SQL + " WHERE m.member_id = ?", (member_id,)
        ) as cur:
            row = await cur.fetchone()
        return _member_view(row) if row else None

    async def coupon(self, code: str) -> Coupon | None:
        async with self._reader.execute("SELECT record FROM coupons WHERE code = ?", (code,)) as c:
            row = await c.fetchone()
        return Coupon.model_validate_json(row[0]) if row else None

    async def program_paused(self, program: str) -> bool:
        async with self._reader.execute(
            "SELECT paused FROM program_switches WHERE program = ?", (program,)
        ) as cur:
            row = await cur.fetchone()
        return bool(row[0]) if row else False

    async def posted_reply(self, key: CheckKey) -> PostOk | None:
        async with self._reader.execute(
            "SELECT reply FROM posted_checks WHERE business_date = ? AND wsid = ? AND check_no = ?",
            (key.business_date.isoformat(), key.wsid, key.check),
        ) as cur:
            row = await cur.fetchone()
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

        await self.writer.submit(job)

    async def delete_members(self, member_ids: Sequence[str]) -> None:
        def job(conn: sqlite3.Connection) -> None:
            params = [(i,) for i in member_ids]
            conn.executemany("DELETE FROM member_identifiers WHERE member_id = ?", params)
            conn.executemany("DELETE FROM members WHERE member_id = ?", params)

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

        Inside one transaction: a check already posted returns its stored reply; otherwise the
        member's balance is read, `settle` decides the points, and the check, its ledger entry,
        its events and its coupon redemptions are written together.
        """
        date_s, now_s = key.business_date.isoformat(), utc_stamp(now)

        def job(conn: sqlite3.Connection) -> tuple[PostOk, bool]:
            row = conn.execute(
                "SELECT reply FROM posted_checks WHERE business_date = ? AND wsid = ?"
                " AND check_no = ?",
                (date_s, key.wsid, key.check),
            ).fetchone()
            if row is not None:
                return _post_ok_from_json(row[0]), False
            view: MemberView | None = None
            if member_id is not None:
                found = conn.execute(_MEMBER_VIEW_SQL + " WHERE m.member_id = ?", (member_id,))
                view_row = found.fetchone()
                view = _member_view(view_row) if view_row is not None else None
            reserved: list[ReservedCoupon] = []
            for ref in coupon_refs:
                found_ref = conn.execute(
                    "SELECT code, status FROM coupon_reservations WHERE ref = ?", (ref,)
                ).fetchone()
                reserved.append(
                    ReservedCoupon(ref, found_ref[0], found_ref[1])
                    if found_ref
                    else ReservedCoupon(ref, None, None)
                )
            settlement = settle(view, reserved)
            conn.execute(
                "INSERT INTO posted_checks VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    date_s,
                    key.wsid,
                    key.check,
                    member_id,
                    total,
                    _post_ok_to_json(settlement.reply),
                    now_s,
                ),
            )
            if settlement.ledger is not None and settlement.events:
                entry = settlement.ledger
                conn.execute(
                    "INSERT INTO ledger (member_id, event_id, business_date, points, wallet,"
                    " tickets, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        entry.member_id,
                        settlement.events[0].event_id,
                        date_s,
                        entry.points,
                        entry.wallet,
                        entry.tickets,
                        now_s,
                    ),
                )
            _insert_events(conn, settlement.events)
            conn.executemany(
                "UPDATE coupon_reservations SET status = 'redeemed', finished_at = ?,"
                " posted_key = ? WHERE ref = ? AND status != 'redeemed'",
                [(now_s, key.text(), c.ref) for c in reserved if c.code is not None],
            )
            return settlement.reply, True

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
        """Queue events without waiting for their commit (identification events)."""

        def job(conn: sqlite3.Connection) -> None:
            _insert_events(conn, events)

        future = self.writer.submit_nowait(job, durable=False)
        future.add_done_callback(_consume_exception)


def _consume_exception(future: Any) -> None:
    # A lost identification event is reported by the writer's own alarm; don't warn twice.
    if not future.cancelled():
        future.exception()
