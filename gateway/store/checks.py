"""Posted checks and the ledger: a check recorded once, with its ledger entry, events and
redeemed coupons, settled inside the transaction that records it.

The walk is one way: the service hands the store a `CheckToRecord` (the request, the rules in
force, the menu's categories); the write job reads what the settlement depends on (the member's
row and balance, the tickets of the month, each coupon ref's reservation) on the writer's
connection, where every earlier check is already visible, settles the check with the pure rule
(`gateway/rules/settlement.py`) once, and writes it. Nothing is read twice and nothing is
settled twice; the receipt's balance is always exact, and nothing counts twice.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from gateway.domain.models import Balance, PostOk, PostRequest, ReservedCoupon, Settlement
from gateway.domain.rules_doc import RulesDocument
from gateway.rules.settlement import CheckFacts, SettleOptions, settle
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


class CheckContext(NamedTuple):
    """What a posted check's settlement depends on, as its transaction read it: the member's
    row with its balance, for a lottery member the tickets of the business month, and each
    coupon ref's reservation."""

    member: MemberRow | None
    tickets_this_month: int
    coupons: tuple[ReservedCoupon, ...]

    def member_view(self) -> MemberView | None:
        return MemberView.of(self.member, self.tickets_this_month) if self.member else None

    def facts(self, lottery_paused_here: bool) -> CheckFacts:
        view = self.member_view()
        return CheckFacts(
            member=view.member if view else None,
            balance=view.balance if view else Balance(0, 0),
            lottery_paused_here=lottery_paused_here,
            tickets_this_month=self.tickets_this_month,
            coupons=self.coupons,
        )


@dataclass(frozen=True, slots=True)
class CheckToRecord:
    """A posted check for the store to settle and record, with what its settlement needs that
    the store does not hold (the rules in force, the menu's categories, the store's settings)."""

    key: CheckKey
    request: PostRequest
    posted_at: dt.datetime
    rules: RulesDocument
    categories: dict[int, str]
    options: SettleOptions


class Recorded(NamedTuple):
    reply: PostOk
    first_time: bool  # False: the check was posted before and `reply` is its first reply
    settlement: Settlement | None = None  # the first time only: what was written


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

    async def record_check(self, check: CheckToRecord) -> Recorded:
        """Settle and record a check durably, once; the reply is sent only after this returns.

        A check posted before answers with its first reply (`first_time` False); the
        settlement computed for it again is not written (replays are rare: asking first would
        cost every check a statement)."""
        key, request = check.key, check.request
        date_s, now_s = key.business_date.isoformat(), utc_stamp(check.posted_at)
        key_params = (date_s, key.wsid, key.check)
        paused = self._paused(LOTTERY)  # on the loop: the held switches are the loop's

        def job(conn: sqlite3.Connection) -> Recorded:
            context = read_check_context(
                conn, request.member_id, request.coupon_refs, now_s, key.business_date, paused
            )
            settlement = settle(
                request,
                context.facts(paused),
                now_s=now_s,
                rules=check.rules,
                categories=check.categories,
                options=check.options,
            )
            inserted = conn.execute(
                "INSERT OR IGNORE INTO posted_checks VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    *key_params,
                    request.member_id,
                    request.total,
                    _post_ok_to_json(settlement.reply),
                    now_s,
                ),
            )
            if inserted.rowcount == 0:  # posted before (a retransmission): its first reply
                stored = conn.execute(_STORED_REPLY, key_params).fetchone()
                return Recorded(_post_ok_from_json(stored[0]), first_time=False)
            events = event_rows(settlement.events)
            entry = settlement.ledger
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
            redeemed = [c for c in context.coupons if c.redeemable and c.code is not None]
            if redeemed:
                conn.executemany(
                    "UPDATE coupon_reservations SET status = 'redeemed', finished_at = ?,"
                    " posted_key = ? WHERE ref = ?",
                    [(now_s, key.text(), c.ref) for c in redeemed],
                )
                # A redeemed reservation stops being open; a lapsed one was no longer open.
                bump_usage(
                    conn,
                    [
                        UsageChange(
                            str(c.code), redeemed=1, reserved=-1 if c.status == "reserved" else 0
                        )
                        for c in redeemed
                    ],
                )
            return Recorded(settlement.reply, True, settlement)

        result: Recorded = await self.writer.submit(
            job, proves_room=lambda done: done.first_time, small=True
        )
        if result.first_time:
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
