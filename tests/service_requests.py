"""The service's requests as the register commands make them, with the fields most tests leave
alone filled in: workstation 1, revenue centre 2, business date 2026-11-23 (conftest's NOW)."""

from __future__ import annotations

import datetime as dt

from gateway.domain.models import (
    ConsentRequest,
    CouponRequest,
    CouponVoidRequest,
    IdentRequest,
    Item,
    PostRequest,
)

DATE = dt.date(2026, 11, 23)


def ident(token: str, *, wsid: int = 1, rvc: int = 2, check: int = 0) -> IdentRequest:
    return IdentRequest(wsid=wsid, rvc=rvc, check=check, token=token)


def coupon_req(
    code: str, check: int, member_id: str | None = None, subtotal: int = 10_000, wsid: int = 1
) -> CouponRequest:
    return CouponRequest(wsid=wsid, check=check, member_id=member_id, code=code, subtotal=subtotal)


def void_req(ref: str, check: int = 1, *, wsid: int = 1) -> CouponVoidRequest:
    return CouponVoidRequest(wsid=wsid, check=check, coupon_ref=ref)


def consent_req(member_id: str, join: bool, *, wsid: int = 1) -> ConsentRequest:
    return ConsentRequest(wsid=wsid, member_id=member_id, program="LOTTERY", join=join)


def post_req(
    check: int,
    member_id: str | None = "M1",
    total: int = 2240,
    *,
    subtotal: int | None = None,
    coupons: tuple[str, ...] = (),
    items: tuple[Item, ...] = (),
    wsid: int = 1,
    rvc: int = 2,
    date: dt.date = DATE,
) -> PostRequest:
    return PostRequest(
        wsid=wsid,
        rvc=rvc,
        check=check,
        business_date=date,
        member_id=member_id,
        subtotal=total if subtotal is None else subtotal,
        total=total,
        items=items,
        coupon_refs=coupons,
    )
