"""Coupon limits: authorizations asked at the register, and redemptions that arrive as events.

Both decide against the same usage (redemptions plus approvals still pending), one decision at a
time per coupon: where there are several writers, each first locks the coupon's row.
"""

from __future__ import annotations

import json
import secrets
from typing import TYPE_CHECKING, Any

from gateway.domain.models import Coupon
from sync.central.errors import ApiError, Invalid
from sync.central.fields import Fields
from sync.central.ledger.base import LedgerBase, Refusal

if TYPE_CHECKING:
    from sync.central.ledger.events import Batch


class Coupons(LedgerBase):
    """The ledger's coupon decisions: authorize at the register, apply redemptions and releases."""

    def authorize(self, code: str, body: object, gateway_id: str) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(400, "BAD_REQUEST", "the body must be a JSON object")
        f = Fields(body)
        try:
            store = f.required_text("store_id")
            f.required_text("gateway_id")
            member_id = f.text("member_id", nullable=True)
            check = f.obj("check")
            business_date = check.date("business_date")
            wsid, check_no = check.required_int("wsid"), check.required_int("check")
            key = f.required_text("idempotency_key")
        except Invalid as exc:
            raise ApiError(400, "BAD_REQUEST", str(exc)) from None
        now_dt = self.shared.clock()
        with self.transaction():
            # Locks the coupon's row where there are several writers: one decision at a time.
            row = self.conn.execute(
                "SELECT data FROM coupons WHERE code = ?" + self.for_update, (code,)
            ).fetchone()
            prior = self.conn.execute(
                "SELECT authorization_id, state FROM authorizations WHERE idempotency_key = ?",
                (key,),
            ).fetchone()
            if prior is not None and prior[1] != "cancelled":
                return _approved(prior[0])
            reason = self._refusal(row, code, member_id, now_dt)
            if reason is not None:
                return {"status": "declined", "reason": reason, "authorization_id": None}
            now = self.stamp()
            if prior is not None:  # released, then scanned again on the same check
                self.conn.execute(
                    "UPDATE authorizations SET state = 'pending', updated_at = ? "
                    "WHERE idempotency_key = ?",
                    (now, key),
                )
                return _approved(prior[0])
            authorization_id = "AUTH-" + secrets.token_hex(10).upper()
            tail = (wsid, check_no, now, now)
            self.conn.execute(
                "INSERT INTO authorizations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
                (key, authorization_id, code, store, gateway_id, member_id, business_date, *tail),
            )
        return _approved(authorization_id)

    def _refusal(self, row: Any, code: str, member_id: str | None, now: Any) -> str | None:
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

    # ---- the coupon events, in `Events`' table of appliers ----

    def _coupon_redeemed(self, batch: Batch, event_id: str, p: dict[str, Any]) -> Refusal | None:
        f = Fields(p, "payload.")
        code = f.required_text("code")
        f.required_text("coupon_ref")
        business_date = f.date("business_date")
        wsid, check = f.required_int("wsid"), f.required_int("check")
        member_id = f.text("member_id", nullable=True)
        coupon = self.conn.execute(
            "SELECT data FROM coupons WHERE code = ?" + self.for_update, (code,)
        ).fetchone()
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
                    "INSERT INTO conflicts VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (event_id, *check_key[:2], business_date, wsid, check, batch.applied_at),
                )
                return "COUPON_CONFLICT", f"{code} was already redeemed up to its limit ({limit})"
        self.conn.execute(
            "INSERT INTO redemptions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*check_key, event_id, member_id, approval[0] if approval else None, batch.applied_at),
        )
        return None

    def _coupon_released(self, batch: Batch, event_id: str, p: dict[str, Any]) -> Refusal | None:
        f = Fields(p, "payload.")
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

    def _coupon_usage(self, code: str) -> int:
        """Redemptions plus approvals not yet redeemed or released: what a limit is checked on."""
        row = self.conn.execute(
            "SELECT (SELECT COUNT(*) FROM redemptions WHERE code = ?) + (SELECT COUNT(*) FROM "
            "authorizations WHERE code = ? AND state = 'pending')",
            (code, code),
        ).fetchone()
        return int(row[0])


def _approved(authorization_id: str) -> dict[str, Any]:
    return {"status": "approved", "reason": None, "authorization_id": authorization_id}
