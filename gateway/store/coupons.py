"""Coupon reservations at the register: reserve (within the coupon's limits), note how central
authorised it, release (void, declined, expired), and the running usage totals that spare
counting reservation rows."""

from __future__ import annotations

import datetime as dt
import secrets
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from gateway.domain.models import Coupon, OutboxEvent, Refusal
from gateway.domain.reasons import Reason
from gateway.rules.coupons import CouponUsage
from gateway.store.connections import StorePart, utc_stamp
from gateway.store.outbox import insert_events

# Decides whether a coupon may be reserved, from the coupon and its usage as read inside the
# write transaction (see `Coupons.reserve_coupon` for why it runs there).
CouponDecision = Callable[[Coupon, CouponUsage], tuple[Reason, str] | None]


@dataclass(frozen=True, slots=True)
class Reservation:
    coupon: Coupon
    ref: str
    new: bool  # False when the same check asked for the same coupon again


class UsageChange(NamedTuple):
    """A change to one coupon's running totals in `coupon_usage`."""

    code: str
    redeemed: int
    reserved: int


def bump_usage(conn: sqlite3.Connection, changes: Sequence[UsageChange]) -> None:
    """Apply usage changes in the caller's transaction."""
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


class Coupons(StorePart):
    """Reservations: every decision reads the reservations inside the write transaction."""

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
        transaction, so two registers can never both get the last use of a coupon.

        `decide` is a pure rule (`gateway.rules.coupons.coupon_refusal` with the request's
        facts), not a call back into the service: the last use of a popular coupon is contested
        by every register at once, and a read-compare-retry would turn each such race into
        another commit for the cashier to wait on (docs/decisions.md, "The store's shape")."""
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
            bump_usage(conn, [UsageChange(code, redeemed=0, reserved=1)])
            return Reservation(coupon, ref, new=True)

        # A reservation survives a crash of the process; a power cut may lose it, and the
        # check that used it still posts (see docs/decisions.md).
        result: Reservation | Refusal = await self.writer.submit(job, durable=False, small=True)
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

        await self.writer.submit(job, durable=False, small=True)

    async def release_coupon(
        self,
        ref: str,
        now: dt.datetime,
        make_event: Callable[[str, str], OutboxEvent],
        *,
        released_by: str = "void",
    ) -> Refusal | None:
        """Release a reservation (COUPON_VOID). Releasing twice is fine; a redeemed one is not.
        `make_event(ref, code)` builds the `coupon.released` event (pure: the code is known only
        inside the transaction)."""
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
                bump_usage(conn, [UsageChange(code, redeemed=0, reserved=-1)])
                insert_events(conn, [make_event(ref, code)])
            return None

        result: Refusal | None = await self.writer.submit(job, durable=False, small=True)
        self._outbox_changed()
        return result

    async def release_expired(
        self, now: dt.datetime, make_event: Callable[[str, str, int, int], OutboxEvent]
    ) -> int:
        """Release every reservation whose check never posted in time; returns how many.
        `make_event(ref, code, wsid, check)` builds each `coupon.released` event (pure)."""
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
                [(now_s, ref) for ref, _, _, _ in rows],
            )
            bump_usage(conn, [UsageChange(code, redeemed=0, reserved=-1) for _, code, _, _ in rows])
            insert_events(conn, [make_event(*row) for row in rows])
            return len(rows)

        released: int = await self.writer.submit(job)
        if released:
            self._outbox_changed()
        return released
