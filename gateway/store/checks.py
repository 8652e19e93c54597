"""Posted checks and the ledger: the context a check's settlement is computed from, and the
settled check recorded once, with its ledger entry, events and redeemed coupons.

The walk is one way: the service reads a `CheckContext` (`Checks.check_context`, on the loop),
computes the `Settlement` from it, and hands the store a `PostedCheck`. The write transaction
reads the context again; if it changed in between (another check of the same member, a coupon's
reservation), nothing is written and the service settles again from the context the writer saw
(`ContextChanged`). The receipt's balance is therefore always exact, and nothing counts twice.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from gateway.domain.models import PostOk, Settlement
from gateway.store.cache import LOTTERY, MEMBER_BY_ID, MemberRow, MemberView, member_row
from gateway.store.connections import StorePart, utc_stamp
from gateway.store.coupons import UsageChange, bump_usage
from gateway.store.outbox import INSERT_EVENT, event_rows


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


class CheckContext(NamedTuple):
    """What a posted check's settlement depends on, as read at one moment: the member's row
    with its balance, for a lottery member the tickets of the business month, and each coupon
    ref's reservation. Tuples of raw values, so that two reads compare cheaply (the writer
    compares them on every post)."""

    member: MemberRow | None
    tickets_this_month: int
    coupons: tuple[ReservedCoupon, ...]

    def member_view(self) -> MemberView | None:
        return MemberView.of(self.member, self.tickets_this_month) if self.member else None


class PostedCheck(NamedTuple):
    """A settled check, for the store to record: the check, the context its settlement was
    computed from, and the settlement (reply, ledger entry, events; the first event is the
    check's own `check.posted`, whose id the ledger entry carries)."""

    key: CheckKey
    member_id: str | None
    total: int
    coupon_refs: Sequence[str]
    posted_at: dt.datetime
    context: CheckContext
    settlement: Settlement


class Recorded(NamedTuple):
    reply: PostOk
    first_time: bool  # False: the check was posted before and `reply` is its first reply


class ContextChanged(NamedTuple):
    """The context changed after it was read: nothing was written; settle again from
    `current`, read inside the write transaction."""

    current: CheckContext


_TICKETS_THIS_MONTH = """
SELECT COALESCE(CASE WHEN json_extract(m.record, '$.tickets_month') = ?2
                     THEN json_extract(m.record, '$.tickets_this_month') END, 0)
     + (SELECT COALESCE(SUM(l.tickets), 0) FROM ledger l
        WHERE l.member_id = m.member_id AND substr(l.business_date, 1, 7) = ?2
          AND (l.applied_at IS NULL OR m.balance_as_of IS NULL OR l.applied_at > m.balance_as_of))
FROM members m WHERE m.member_id = ?1
"""


def read_check_context(
    conn: sqlite3.Connection,
    member_id: str | None,
    coupon_refs: Sequence[str],
    now_s: str,
    business_date: dt.date,
    lottery_paused: bool,
) -> CheckContext:
    """The context of a check, on whichever connection: the lookup one before settling, the
    writer's inside the transaction that records it."""
    member = None
    tickets = 0
    if member_id is not None:
        found = conn.execute(MEMBER_BY_ID, (lottery_paused, member_id)).fetchone()
        member = member_row(found) if found is not None else None
        if member is not None and member.earn_mode == "lottery":
            # Tickets this month: central's count for the month plus what it has not applied.
            month = business_date.isoformat()[:7]
            row = conn.execute(_TICKETS_THIS_MONTH, (member_id, month)).fetchone()
            tickets = int(row[0]) if row else 0
    coupons = _reserved_coupons(conn, coupon_refs, now_s) if coupon_refs else ()
    return CheckContext(member, tickets, coupons)


def _reserved_coupons(
    conn: sqlite3.Connection, coupon_refs: Sequence[str], now_s: str
) -> tuple[ReservedCoupon, ...]:
    """Each ref's reservation, and whether posting the check redeems it."""
    coupons: list[ReservedCoupon] = []
    claimed: dict[str, int] = {}  # uses this check takes again, per code
    for ref in dict.fromkeys(coupon_refs):  # a ref listed twice is one coupon
        row = conn.execute(
            "SELECT r.code, r.status, r.released_by, r.expires_at,"
            " json_extract(c.record, '$.origin') FROM coupon_reservations r"
            " LEFT JOIN coupons c ON c.code = r.code WHERE r.ref = ?",
            (ref,),
        ).fetchone()
        if row is None:
            coupons.append(ReservedCoupon(ref, None, None))
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
        coupons.append(ReservedCoupon(ref, code, status, redeemable, row[4]))
    return tuple(coupons)


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


_STORED_REPLY = (
    "SELECT reply FROM posted_checks WHERE business_date = ? AND wsid = ? AND check_no = ?"
)


class Checks(StorePart):
    """Posted checks, recorded once each, and the ledger they write."""

    def check_context(
        self,
        key: CheckKey,
        *,
        member_id: str | None,
        coupon_refs: Sequence[str],
        now: dt.datetime,
    ) -> CheckContext:
        """What the check's settlement depends on now (point lookups, on the loop's thread)."""
        now_s = utc_stamp(now) if coupon_refs else ""  # only reservations depend on the time
        return read_check_context(
            self._lookup, member_id, coupon_refs, now_s, key.business_date, self._paused(LOTTERY)
        )

    async def record_check(self, check: PostedCheck) -> Recorded | ContextChanged:
        """Record a settled check durably, once; the reply is sent only after this returns.

        A check posted before answers with its first reply (`first_time` False), whatever its
        context. Otherwise the context is read again inside the write transaction; when it is
        not the one the settlement was computed from, nothing is written (`ContextChanged`)."""
        key, settlement = check.key, check.settlement
        date_s, now_s = key.business_date.isoformat(), utc_stamp(check.posted_at)
        key_params = (date_s, key.wsid, key.check)
        reply_json = _post_ok_to_json(settlement.reply)
        events = event_rows(settlement.events)
        entry = settlement.ledger
        redeemed = [c for c in check.context.coupons if c.redeemable and c.code is not None]
        coupon_rows: list[tuple[str, str, str]] = []
        usage: list[UsageChange] = []
        if redeemed:
            coupon_rows = [(now_s, key.text(), c.ref) for c in redeemed]
            # A redeemed reservation stops being open; a lapsed one was no longer open.
            usage = [
                UsageChange(str(c.code), redeemed=1, reserved=-1 if c.status == "reserved" else 0)
                for c in redeemed
            ]

        paused = self._paused(LOTTERY)  # on the loop: the held switches are the loop's

        def job(conn: sqlite3.Connection) -> Recorded | ContextChanged:
            current = read_check_context(
                conn, check.member_id, check.coupon_refs, now_s, key.business_date, paused
            )
            if current != check.context:
                stored = conn.execute(_STORED_REPLY, key_params).fetchone()
                if stored is not None:
                    return Recorded(_post_ok_from_json(stored[0]), first_time=False)
                return ContextChanged(current)
            inserted = conn.execute(
                "INSERT OR IGNORE INTO posted_checks VALUES (?, ?, ?, ?, ?, ?, ?)",
                (*key_params, check.member_id, check.total, reply_json, now_s),
            )
            if inserted.rowcount == 0:
                stored = conn.execute(_STORED_REPLY, key_params).fetchone()
                return Recorded(_post_ok_from_json(stored[0]), first_time=False)
            if entry is not None and events:
                amounts = (entry.points, entry.wallet, entry.tickets)
                conn.execute(
                    "INSERT INTO ledger (member_id, event_id, business_date, points, wallet,"
                    " tickets, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    # The check's own event (the first) ties the entry to what central applies.
                    (entry.member_id, events[0][0], date_s, *amounts, now_s),
                )
                conn.execute(
                    "INSERT INTO member_pending VALUES (?, ?, ?, ?) ON CONFLICT (member_id) DO"
                    " UPDATE SET points = points + excluded.points,"
                    " wallet = wallet + excluded.wallet, tickets = tickets + excluded.tickets",
                    (entry.member_id, *amounts),
                )
            conn.executemany(INSERT_EVENT, events)
            if coupon_rows:
                conn.executemany(
                    "UPDATE coupon_reservations SET status = 'redeemed', finished_at = ?,"
                    " posted_key = ? WHERE ref = ?",
                    coupon_rows,
                )
                bump_usage(conn, usage)
            return Recorded(settlement.reply, True)  # first time

        result: Recorded | ContextChanged = await self.writer.submit(
            job,
            proves_room=lambda done: isinstance(done, Recorded) and done.first_time,
            small=True,
        )
        if isinstance(result, Recorded):
            self._outbox_changed()
        return result

    def posted_reply(self, key: CheckKey) -> PostOk | None:
        """The reply a posted check got, or None when it was not posted here."""
        row = self._one(_STORED_REPLY, (key.business_date.isoformat(), key.wsid, key.check))
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
