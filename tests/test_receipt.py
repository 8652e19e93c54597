"""Receipt lines (DESIGN.md section 2): at most receipt.line_width characters (24 by default:
what a MICROS check information line holds; public ISL scripts cut theirs to 24) and at most 8;
a member's receipt names the points this visit earned, a lottery member's also the tickets
(this visit and this month) and the wallet."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from conftest import member_record

from gateway.domain.models import CouponOk, CouponRequest, PostOk, PostRequest
from gateway.service import RECEIPT_LINES, RECEIPT_WIDTH, Gateway, receipt_line
from gateway.store.store import Store

DATE = dt.date(2026, 11, 23)


def post(
    check: int, member_id: str | None, total: int, subtotal: int | None = None, *refs: str
) -> PostRequest:
    return PostRequest(
        wsid=1,
        rvc=2,
        check=check,
        business_date=DATE,
        member_id=member_id,
        subtotal=total if subtotal is None else subtotal,
        total=total,
        items=(),
        coupon_refs=refs,
    )


async def posted(service: Gateway, request: PostRequest) -> PostOk:
    reply = await service.post_check(request)
    assert isinstance(reply, PostOk), reply
    return reply


def fits(lines: tuple[str, ...]) -> bool:
    return len(lines) <= RECEIPT_LINES and all(len(line) <= RECEIPT_WIDTH for line in lines)


# ---- one line --------------------------------------------------------------------------------


def test_the_default_width_is_24_characters() -> None:
    assert RECEIPT_WIDTH == 24 and RECEIPT_LINES == 8
    assert receipt_line("Points this visit", "15") == "Points this visit     15"
    assert len(receipt_line("Points balance", "135")) == 24


@pytest.mark.parametrize(
    ("label", "value", "line"),
    [
        ("Tickets this month", "12345", "Tickets this month 12345"),  # exactly 24
        ("Tickets this month", "123456", "Tickets this mont 123456"),  # the label is cut first
        ("Member", "Maximilian Alexander von W.", "Maximilian Alexander von"),  # then the value
        ("Member", "x" * 23, "x" * 23),  # no room for a label and its space
        ("", "7", "                       7"),
    ],
)
def test_a_line_cuts_the_label_first_then_the_value(label: str, value: str, line: str) -> None:
    assert receipt_line(label, value) == line
    assert len(line) <= 24


def test_another_width_is_honoured() -> None:
    assert receipt_line("Points this visit", "15", width=32) == "Points this visit".ljust(30) + "15"
    assert receipt_line("Points this visit", "15", width=12) == "Points th 15"


# ---- the receipt of a posted check -------------------------------------------------------------


async def test_a_points_member_gets_member_points_of_the_visit_and_balance(
    service: Gateway,
) -> None:
    reply = await posted(service, post(1, "M1", 2240))
    assert reply.receipt_lines == (
        "Member            Ann K.",
        "Points this visit     22",
        "Points balance       142",
    )


async def test_a_lottery_member_gets_the_points_the_tickets_and_the_wallet(
    service: Gateway,
) -> None:
    # M2: lottery with consent, wallet 30, ticket price 50: 20.40 earns 20 points, the wallet
    # reaches 50, one ticket, 0 left.
    reply = await posted(service, post(1, "M2", 2040))
    assert (reply.points_earned, reply.tickets_earned, reply.wallet_points) == (20, 1, 0)
    assert reply.receipt_lines == (
        "Member            Ben L.",
        "Points this visit     20",
        "Tickets this visit     1",
        "Tickets this month     1",
        "Wallet points          0",
        "Points balance        40",
    )
    again = await posted(service, post(2, "M2", 5000))
    assert "Tickets this month     2" in again.receipt_lines  # the month's count goes on


async def test_a_lottery_member_with_a_coupon_still_fits_eight_lines_of_24(
    service: Gateway, store: Store
) -> None:
    name = "Maximilian Alexander von Wolfsburg-Hohenzollern"
    await store.upsert_members(
        [
            member_record(
                "M9",
                display_name=name,
                earn_mode="lottery",
                lottery_consent=True,
                wallet_points=49,
            )
        ]
    )
    coupon = await service.check_coupon(
        CouponRequest(wsid=1, check=7, member_id="M9", code="TENOFF", subtotal=12_345_678)
    )
    assert isinstance(coupon, CouponOk), coupon
    reply = await posted(service, post(7, "M9", 11_111_110, 12_345_678, coupon.coupon_ref))
    lines = reply.receipt_lines
    assert fits(lines), lines
    assert lines[0] == name[:24]
    assert [line[:14] for line in lines[1:]] == [
        "Points this vi",
        "Tickets this v",
        "Tickets this m",
        "Wallet points ",
        "Points balance",
        "You saved     ",
    ]
    assert lines[1].endswith(f" {reply.points_earned}")
    assert lines[2].endswith(f" {reply.tickets_earned}")
    assert lines[6] == "You saved      €12345.68"  # 10 % of 123456.78


async def test_an_anonymous_check_prints_nothing(service: Gateway) -> None:
    assert (await posted(service, post(1, None, 5000))).receipt_lines == ()


async def test_the_configured_line_width_reaches_the_receipt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """receipt.line_width from the configuration, through the daemon's options, to POST_OK."""
    from conftest import Clock, sample_members

    from gateway.config import load_settings
    from gateway.daemon import service_options

    monkeypatch.setenv("EDGE_GATEWAY_RECEIPT__LINE_WIDTH", "20")
    settings = load_settings(store_id="S001", data_dir=tmp_path, timezone="UTC")
    store = await Store.open(tmp_path / "gateway.db")
    try:
        await store.upsert_members(sample_members())
        service = Gateway(store, service_options(settings), clock=Clock())
        reply = await posted(service, post(1, "M1", 4000))
        assert reply.receipt_lines and max(map(len, reply.receipt_lines)) <= 20
        assert any(len(line) == 20 for line in reply.receipt_lines)  # lines fill the width
    finally:
        await store.close()
