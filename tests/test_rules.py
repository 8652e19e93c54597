"""Pure rules: money at the edges, points and lottery tickets, coupon refusals, event ids."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest
from conftest import NOW, coupon_record
from hypothesis import given
from hypothesis import strategies as st

from gateway.domain.ids import new_ulid
from gateway.domain.models import Coupon
from gateway.domain.money import format_amount, parse_amount
from gateway.domain.reasons import Reason
from gateway.domain.rules_doc import RulesDocument
from gateway.rules.coupons import CouponUsage, coupon_refusal
from gateway.rules.points import DEFAULT_RULES, points_for_total, tickets_and_wallet

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ROUNDINGS = ["down", "half_up", "up"]

# ---- money ---------------------------------------------------------------------------------

decimals_st = st.integers(0, 3)
# The wire allows up to 12 whole digits; any amount in that range must survive the round trip.
minor_st = st.integers(-(10**12) + 1, 10**12 - 1)


@given(minor=minor_st, decimals=decimals_st)
def test_format_then_parse_gives_back_the_same_minor_units(minor: int, decimals: int) -> None:
    assert parse_amount(format_amount(minor, decimals), decimals) == minor


@given(minor=minor_st, decimals=decimals_st)
def test_formatted_amount_has_exactly_the_currency_decimals(minor: int, decimals: int) -> None:
    text = format_amount(minor, decimals)
    whole, dot, frac = text.lstrip("-").partition(".")
    assert len(frac) == decimals
    assert bool(dot) == (decimals > 0)
    assert whole.isdigit() and (whole == "0" or not whole.startswith("0"))
    assert text.startswith("-") == (minor < 0)


@given(
    negative=st.booleans(),
    whole=st.integers(0, 10**12 - 1),
    frac=st.text(alphabet="0123456789", min_size=0, max_size=3),
    decimals=decimals_st,
)
def test_parse_reads_any_amount_with_at_most_the_currency_decimals(
    negative: bool, whole: int, frac: str, decimals: int
) -> None:
    text = ("-" if negative else "") + str(whole) + ("." + frac if frac else "")
    if len(frac) > decimals:
        with pytest.raises(ValueError, match="decimals"):
            parse_amount(text, decimals)
        return
    expected = whole * 10**decimals + (int(frac.ljust(decimals, "0")) if decimals else 0)
    assert parse_amount(text, decimals) == (-expected if negative else expected)


@pytest.mark.parametrize(
    ("text", "decimals", "minor"),
    [
        ("12.50", 2, 1250),
        ("12.5", 2, 1250),
        ("12", 2, 1200),
        ("-1.00", 2, -100),
        ("-0.01", 2, -1),
        ("0", 0, 0),
        ("7", 0, 7),
        ("1.234", 3, 1234),
        ("-10.5", 3, -10500),
    ],
)
def test_parse_amount_table(text: str, decimals: int, minor: int) -> None:
    assert parse_amount(text, decimals) == minor


@pytest.mark.parametrize(
    ("minor", "decimals", "text"),
    [(1250, 2, "12.50"), (-100, 2, "-1.00"), (5, 2, "0.05"), (-5, 2, "-0.05"), (7, 0, "7")],
)
def test_format_amount_table(minor: int, decimals: int, text: str) -> None:
    assert format_amount(minor, decimals) == text


@pytest.mark.parametrize(
    ("text", "decimals"),
    [
        ("12.5.0", 2),
        ("1e9", 2),
        ("12.", 2),
        (".5", 2),
        ("--1", 2),
        (" 1", 2),
        ("1 ", 2),
        ("+1", 2),
        ("", 2),
        ("-", 2),
        ("1,50", 2),
        ("12.345", 2),  # more decimals than the currency has
        ("12.5", 0),
        ("1.0000", 3),
        ("1\n", 2),
        ("١٢", 2),  # Arabic-Indic digits are digits to Python, not to a register
        ("1234567890123", 2),  # more whole digits than the wire allows
    ],
)
def test_parse_amount_refuses_what_is_not_an_amount(text: str, decimals: int) -> None:
    with pytest.raises(ValueError):
        parse_amount(text, decimals)


# ---- points ----------------------------------------------------------------------------------


def earn_rules(**fields: Any) -> RulesDocument:
    return RulesDocument(version="test", **fields)


rules_st = st.builds(
    earn_rules,
    points_per_unit=st.integers(1, 20),
    rounding=st.sampled_from(ROUNDINGS),
    ticket_price=st.integers(1, 500),
)


@given(total=st.integers(0, 10**10), decimals=decimals_st, rules=rules_st)
def test_a_sale_never_earns_negative_points(
    total: int, decimals: int, rules: RulesDocument
) -> None:
    assert points_for_total(total, decimals, rules) >= 0


@given(total=st.integers(1, 10**10), decimals=decimals_st, rules=rules_st)
def test_a_refund_gives_back_exactly_what_the_sale_earned(
    total: int, decimals: int, rules: RulesDocument
) -> None:
    assert points_for_total(-total, decimals, rules) == -points_for_total(total, decimals, rules)


@given(total=st.integers(0, 10**10), decimals=decimals_st)
def test_default_rules_give_one_point_per_whole_unit(total: int, decimals: int) -> None:
    assert points_for_total(total, decimals) == total // 10**decimals


@given(total=st.integers(0, 10**8), decimals=decimals_st, rules=rules_st)
def test_rounding_stays_within_one_point_of_the_exact_amount(
    total: int, decimals: int, rules: RulesDocument
) -> None:
    exact_num, scale = total * int(rules.points_per_unit), 10**decimals
    points = points_for_total(total, decimals, rules)
    assert exact_num // scale <= points <= -(-exact_num // scale)


@pytest.mark.parametrize(
    ("total", "points"),
    [(-1050, -10), (-1099, -10), (-100, -1), (-99, 0), (0, 0), (99, 0), (100, 1), (2240, 22)],
)
def test_default_rules_round_toward_zero(total: int, points: int) -> None:
    assert points_for_total(total, 2, DEFAULT_RULES) == points


@pytest.mark.parametrize(
    ("total", "down", "half_up", "up"),
    [
        (1000, 10, 10, 10),
        (1001, 10, 10, 11),
        (1049, 10, 10, 11),
        (1050, 10, 11, 11),
        (1099, 10, 11, 11),
        (-1049, -10, -10, -11),
        (-1050, -10, -11, -11),
        (-1001, -10, -10, -11),
        (49, 0, 0, 1),
        (50, 0, 1, 1),
    ],
)
def test_rounding_modes_table(total: int, down: int, half_up: int, up: int) -> None:
    for rounding, expected in (("down", down), ("half_up", half_up), ("up", up)):
        rules = earn_rules(rounding=rounding)
        assert points_for_total(total, 2, rules) == expected, rounding


def test_points_per_unit_multiplies_before_rounding() -> None:
    rules = earn_rules(points_per_unit=3, rounding="down")
    # 3 points per 1.00: 1.50 is 4.5 points, rounded down to 4 (not 3 * 1).
    assert points_for_total(150, 2, rules) == 4
    assert points_for_total(-150, 2, rules) == -4


# ---- tickets and wallet ------------------------------------------------------------------


@given(
    wallet_before=st.integers(-10_000, 10_000),
    points=st.integers(-10_000, 10_000),
    price=st.integers(1, 1000),
)
def test_tickets_and_wallet_conserve_points(wallet_before: int, points: int, price: int) -> None:
    tickets, wallet_after = tickets_and_wallet(wallet_before, points, price)
    assert tickets * price + wallet_after == wallet_before + points
    assert 0 <= wallet_after < price


@given(
    totals=st.lists(st.integers(-20_000, 50_000), max_size=30),
    price=st.integers(1, 200),
    start=st.integers(0, 199),
)
def test_a_run_of_lottery_checks_conserves_every_point(
    totals: list[int], price: int, start: int
) -> None:
    wallet = start % price
    tickets_total = points_total = 0
    for total in totals:
        points = points_for_total(total, 2)
        tickets, wallet = tickets_and_wallet(wallet, points, price)
        tickets_total += tickets
        points_total += points
        assert 0 <= wallet < price
    assert tickets_total * price + wallet == start % price + points_total


@pytest.mark.parametrize(
    ("wallet", "points", "tickets", "after"),
    [(30, 75, 2, 5), (0, 49, 0, 49), (0, 50, 1, 0), (10, -10, 0, 0), (10, -11, -1, 49)],
)
def test_tickets_and_wallet_table(wallet: int, points: int, tickets: int, after: int) -> None:
    assert tickets_and_wallet(wallet, points, 50) == (tickets, after)


# ---- coupon refusals ---------------------------------------------------------------------

FREE = CouponUsage(redeemed=0, reserved_elsewhere=0, member_uses=0)
WINDOW = {"valid_from": "2026-11-01T00:00:00Z", "valid_to": "2026-11-30T23:59:59Z"}


def refusal(
    coupon: Coupon,
    *,
    member_id: str | None = "M1",
    subtotal: int = 10_000,
    now: dt.datetime = NOW,
    usage: CouponUsage = FREE,
) -> Reason | None:
    found = coupon_refusal(
        coupon, member_id=member_id, subtotal=subtotal, decimals=2, now=now, usage=usage
    )
    if found is not None:
        reason, message = found
        assert message and len(message) <= 32  # it goes to the cashier's display
        return reason
    return None


@pytest.mark.parametrize(
    ("fields", "kwargs", "expected"),
    [
        pytest.param({}, {}, None, id="accepted"),
        pytest.param({"status": "void"}, {}, Reason.VOID, id="void"),
        pytest.param(
            {"valid_from": "2026-12-01T00:00:00Z"}, {}, Reason.NOT_YET_VALID, id="not-yet-valid"
        ),
        pytest.param({"valid_to": "2026-11-23T11:59:59Z"}, {}, Reason.EXPIRED, id="expired"),
        pytest.param({"member_id": "M2"}, {}, Reason.WRONG_MEMBER, id="other-member"),
        pytest.param({"member_id": "M2"}, {"member_id": None}, Reason.WRONG_MEMBER, id="no-member"),
        pytest.param({"member_id": "M1"}, {}, None, id="own-member"),
        pytest.param({"min_spend": "20.00"}, {"subtotal": 1999}, Reason.MIN_SPEND, id="min"),
        pytest.param({"min_spend": "20.00"}, {"subtotal": 2000}, None, id="min-exact"),
        pytest.param(
            {"max_redemptions": 2},
            {"usage": CouponUsage(2, 0, 0)},
            Reason.ALREADY_REDEEMED,
            id="redeemed",
        ),
        pytest.param(
            {"max_redemptions": 2},
            {"usage": CouponUsage(1, 1, 0)},
            Reason.RESERVED,
            id="reserved",
        ),
        pytest.param(
            {"max_redemptions": 3}, {"usage": CouponUsage(1, 1, 0)}, None, id="one-use-left"
        ),
        pytest.param(
            {"max_redemptions": None},
            {"usage": CouponUsage(10**6, 10**6, 0)},
            None,
            id="unlimited",
        ),
        pytest.param(
            {"max_redemptions": None, "per_member_limit": 1},
            {"usage": CouponUsage(0, 0, 1)},
            Reason.ALREADY_REDEEMED,
            id="member-limit",
        ),
        pytest.param(
            {"max_redemptions": None, "per_member_limit": 2},
            {"usage": CouponUsage(0, 0, 1)},
            None,
            id="member-limit-not-reached",
        ),
        pytest.param(
            {"max_redemptions": None, "per_member_limit": 1},
            {"usage": CouponUsage(0, 0, 1), "member_id": None},
            None,
            id="member-limit-anonymous",
        ),
    ],
)
def test_coupon_refusal_table(
    fields: dict[str, object], kwargs: dict[str, object], expected: Reason | None
) -> None:
    coupon = coupon_record("TEST", **{**WINDOW, **fields})
    assert refusal(coupon, **kwargs) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("min_spend", "decimals", "subtotal", "expected"),
    [
        ("20.00", 2, 1999, Reason.MIN_SPEND),
        ("20.00", 2, 2000, None),
        ("20.005", 2, 2000, Reason.MIN_SPEND),  # more digits than the currency: still compared
        ("20.005", 2, 2001, None),
        ("20.00", 0, 19, Reason.MIN_SPEND),
        ("20.00", 0, 20, None),
        ("20", 3, 19_999, Reason.MIN_SPEND),
        ("20", 3, 20_000, None),
        ("twenty", 2, 10**9, Reason.NOT_ELIGIBLE),
    ],
)
def test_min_spend_is_compared_exactly_whatever_its_notation(
    min_spend: str, decimals: int, subtotal: int, expected: Reason | None
) -> None:
    coupon = coupon_record("MIN", min_spend=min_spend)
    found = coupon_refusal(
        coupon, member_id=None, subtotal=subtotal, decimals=decimals, now=NOW, usage=FREE
    )
    assert (found[0] if found else None) == expected


@pytest.mark.parametrize("min_spend", ["NaN", "sNaN"])
def test_a_not_a_number_min_spend_is_refused_not_raised(min_spend: str) -> None:
    coupon = coupon_record("NAN", min_spend=min_spend)
    found = coupon_refusal(coupon, member_id=None, subtotal=5000, decimals=2, now=NOW, usage=FREE)
    assert found is not None and found[0] == Reason.NOT_ELIGIBLE


def test_a_coupon_is_valid_at_both_ends_of_its_window() -> None:
    coupon = coupon_record("EDGE", valid_from="2026-11-23T12:00:00Z", valid_to=NOW.isoformat())
    assert refusal(coupon, now=NOW) is None
    assert refusal(coupon, now=NOW + dt.timedelta(microseconds=1)) == Reason.EXPIRED
    assert refusal(coupon, now=NOW - dt.timedelta(microseconds=1)) == Reason.NOT_YET_VALID


def test_void_is_decided_before_anything_else() -> None:
    coupon = coupon_record(
        "ALL", status="void", valid_to="2020-01-01T00:00:00Z", member_id="M9", min_spend="99.00"
    )
    assert refusal(coupon, member_id=None, subtotal=0, usage=CouponUsage(9, 9, 9)) == Reason.VOID


def test_a_member_bound_coupon_without_a_member_asks_to_identify() -> None:
    coupon = coupon_record("MINE", member_id="M1")
    found = coupon_refusal(coupon, member_id=None, subtotal=0, decimals=2, now=NOW, usage=FREE)
    assert found is not None and found[0] == Reason.WRONG_MEMBER
    assert "Identify" in found[1]


@given(
    max_redemptions=st.integers(1, 5),
    redeemed=st.integers(0, 6),
    elsewhere=st.integers(0, 6),
)
def test_a_coupon_is_accepted_only_while_a_use_is_left(
    max_redemptions: int, redeemed: int, elsewhere: int
) -> None:
    coupon = coupon_record("N", max_redemptions=max_redemptions)
    reason = refusal(coupon, usage=CouponUsage(redeemed, elsewhere, 0))
    if redeemed + elsewhere < max_redemptions:
        assert reason is None
    elif redeemed >= max_redemptions:
        assert reason == Reason.ALREADY_REDEEMED
    else:
        assert reason == Reason.RESERVED


# ---- event ids -----------------------------------------------------------------------------


def test_new_ulid_is_26_crockford_characters() -> None:
    for _ in range(1000):
        ulid = new_ulid()
        assert len(ulid) == 26
        assert set(ulid) <= set(CROCKFORD)
        assert ulid[0] in "01234567"  # 128 bits in 130: the first character holds 3 bits


def _decode_ms(text: str) -> int:
    value = 0
    for char in text:
        value = value * 32 + CROCKFORD.index(char)
    return value >> 80


def test_new_ulid_carries_the_current_millisecond() -> None:
    before = time.time_ns() // 1_000_000
    ulid = new_ulid()
    after = time.time_ns() // 1_000_000
    assert before <= _decode_ms(ulid) <= after
    library = pytest.importorskip("ulid")
    assert library.ULID.from_str(ulid).milliseconds == _decode_ms(ulid)


def test_ten_thousand_ulids_are_distinct() -> None:
    ids = [new_ulid() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
