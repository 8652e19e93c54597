"""Whether a coupon may be reserved for a check: a pure decision over the coupon and its usage."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from gateway.domain.models import Coupon
from gateway.domain.reasons import Reason


@dataclass(frozen=True, slots=True)
class CouponUsage:
    """How a coupon is used in this store right now."""

    redeemed: int  # total redemptions recorded here
    reserved_elsewhere: int  # live reservations on other checks
    member_uses: int  # redemptions and live reservations by the identifying member


def coupon_refusal(
    coupon: Coupon,
    *,
    member_id: str | None,
    subtotal: int,
    decimals: int,
    now: dt.datetime,
    usage: CouponUsage,
) -> tuple[Reason, str] | None:
    """The reason a coupon cannot be used, or None when it can. Checks run cheapest first."""
    if coupon.status == "void":
        return Reason.VOID, "Coupon withdrawn"
    if coupon.valid_from is not None and now < coupon.valid_from:
        return Reason.NOT_YET_VALID, f"Valid from {coupon.valid_from:%d.%m.%Y}"
    if coupon.valid_to is not None and now > coupon.valid_to:
        return Reason.EXPIRED, "Coupon expired"
    if coupon.member_id is not None and coupon.member_id != member_id:
        if member_id is None:
            return Reason.WRONG_MEMBER, "Identify the member first"
        return Reason.WRONG_MEMBER, "Coupon belongs to another member"
    if coupon.min_spend is not None:
        # Compared as decimals: central may send more digits than the store currency has.
        try:
            minimum = Decimal(coupon.min_spend)
        except InvalidOperation:
            minimum = Decimal("NaN")
        if not minimum.is_finite():
            return Reason.NOT_ELIGIBLE, "Coupon data unreadable"
        if Decimal(subtotal).scaleb(-decimals) < minimum:
            return Reason.MIN_SPEND, f"Minimum spend {coupon.min_spend}"
    if coupon.max_redemptions is not None:
        if usage.redeemed >= coupon.max_redemptions:
            return Reason.ALREADY_REDEEMED, "Coupon already used"
        if usage.redeemed + usage.reserved_elsewhere >= coupon.max_redemptions:
            return Reason.RESERVED, "Coupon in use on another check"
    limit = coupon.per_member_limit
    if limit is not None and member_id is not None and usage.member_uses >= limit:
        return Reason.ALREADY_REDEEMED, "Member limit reached"
    return None
