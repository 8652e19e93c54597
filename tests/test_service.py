"""The Gateway facade against a real SQLite store: identify, coupons, consent and posted checks."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import re
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from conftest import STORE_ID, Clock, coupon_record, member_record, sample_coupons
from conftest import sample_members as load_sample_members
from hypothesis import example, given, settings
from hypothesis import strategies as st
from service_requests import DATE, consent_req, coupon_req, ident, post_req, void_req

from gateway.domain.models import (
    ConsentOk,
    CouponOk,
    CouponVoidOk,
    Item,
    OutboxEvent,
    PostOk,
    Refusal,
)
from gateway.domain.reasons import Reason
from gateway.service import Gateway, ServiceOptions
from gateway.store.store import Store

T = TypeVar("T")

M1_CARD = "6001000000000001"
M2_CARD = "6001000000000002"
M5_CARD = "6001000000000005"
TTL = dt.timedelta(hours=2)
RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
ULID = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")


async def events_of(store: Store, kind: str) -> list[OutboxEvent]:
    return [e for e in await store.outbox_events(limit=100_000) if e.type == kind]


def redeemed_count(store: Store, code: str) -> int:
    conn = sqlite3.connect(store.path)
    try:
        row = conn.execute(
            "SELECT COUNT(*) FROM coupon_reservations WHERE code = ? AND status = 'redeemed'",
            (code,),
        ).fetchone()
        return int(row[0])
    finally:
        conn.close()


async def redeemed_ref(store: Store, code: str) -> str:
    """The ref of the one use of `code` redeemed: one in the table, one event."""
    assert redeemed_count(store, code) == 1
    [redeemed] = await events_of(store, "coupon.redeemed")
    ref: str = redeemed.payload["coupon_ref"]
    return ref


async def ok(answer: Awaitable[T | Refusal]) -> T:
    result = await answer
    assert not isinstance(result, Refusal), result
    return result


async def refused(answer: Awaitable[Any]) -> Reason:
    result = await answer
    assert isinstance(result, Refusal), result
    assert result.message and len(result.message) <= 32
    return result.reason


# ---- identify ------------------------------------------------------------------------------


async def test_identify_shows_central_balance_plus_this_stores_pending_points(
    service: Gateway,
) -> None:
    before = await ok(service.identify(ident(M1_CARD)))
    assert (before.member_id, before.display_name, before.tier) == ("M1", "Ann K.", "GOLD")
    assert before.points_balance == 120
    await ok(service.post_check(post_req(1, total=2240)))
    after = await ok(service.identify(ident("QR-7f3a")))  # any of the member's identifiers
    assert after.points_balance == 142


async def test_identify_unknown_card_is_refused(service: Gateway) -> None:
    assert await refused(service.identify(ident("6001999999999999"))) == Reason.UNKNOWN_MEMBER


async def test_identify_writes_a_member_identified_event(service: Gateway, store: Store) -> None:
    await ok(service.identify(ident(M1_CARD, wsid=7, rvc=3, check=42)))
    await store.append_events([])  # the event rides with the next commit
    [event] = await events_of(store, "member.identified")
    assert event.payload == {
        "store_id": STORE_ID,
        "member_id": "M1",
        "wsid": 7,
        "rvc": 3,
        "check": 42,
    }
    assert M1_CARD not in str(event.payload)


async def test_lottery_member_with_consent_is_shown_lottery(service: Gateway) -> None:
    assert (await ok(service.identify(ident(M2_CARD)))).earn_mode == "LOTTERY"
    assert (await ok(service.identify(ident(M1_CARD)))).earn_mode == "POINTS"


@pytest.mark.parametrize(
    "fields",
    [
        {"earn_mode": "lottery", "lottery_consent": False},
        {"earn_mode": "lottery", "lottery_consent": True, "flags": ["minor"]},
        {"earn_mode": "points", "lottery_consent": True},
    ],
    ids=["no-consent", "ineligible", "points-mode"],
)
async def test_lottery_without_consent_or_eligibility_counts_as_points(
    service: Gateway, store: Store, fields: dict[str, object]
) -> None:
    await store.upsert_members([member_record("M9", **fields)])
    assert (await ok(service.identify(ident("CARD-M9")))).earn_mode == "POINTS"


async def test_pausing_the_lottery_shows_points_on_the_very_next_identify(
    service: Gateway, store: Store
) -> None:
    await store.set_program_paused("lottery", True, by="test")
    assert (await ok(service.identify(ident(M2_CARD)))).earn_mode == "POINTS"
    await store.set_program_paused("lottery", False, by="test")
    assert (await ok(service.identify(ident(M2_CARD)))).earn_mode == "LOTTERY"


# ---- check_coupon --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "member_id", "subtotal", "reason"),
    [
        ("NOPE", None, 10_000, Reason.UNKNOWN_COUPON),
        ("OLD2025", None, 10_000, Reason.EXPIRED),
        ("BDAY-M1", "M5", 10_000, Reason.WRONG_MEMBER),
        ("BDAY-M1", None, 10_000, Reason.WRONG_MEMBER),
        ("WELCOME5", "M1", 1999, Reason.MIN_SPEND),
    ],
)
async def test_check_coupon_refusals(
    service: Gateway, code: str, member_id: str | None, subtotal: int, reason: Reason
) -> None:
    assert await refused(service.check_coupon(coupon_req(code, 1, member_id, subtotal))) == reason


async def test_check_coupon_answers_each_kind_for_the_register(service: Gateway) -> None:
    amount = await ok(service.check_coupon(coupon_req("WELCOME5", 1, "M1", subtotal=2000)))
    assert (amount.kind, amount.value, amount.pos_discount_object) == ("AMOUNT", "5.00", 101)
    percent = await ok(service.check_coupon(coupon_req("TENOFF", 1)))
    assert (percent.kind, percent.value, percent.pos_discount_object) == ("PERCENT", "10", 103)
    item = await ok(service.check_coupon(coupon_req("BDAY-M1", 1, "M1")))
    assert (item.kind, item.value, item.item_object) == ("ITEM", "", 5001)
    refs = {amount.coupon_ref, percent.coupon_ref, item.coupon_ref}
    assert len(refs) == 3


async def test_the_same_check_and_code_twice_returns_the_same_ref(service: Gateway) -> None:
    first = await ok(service.check_coupon(coupon_req("REWARD-M5", 10, "M5")))
    again = await ok(service.check_coupon(coupon_req("REWARD-M5", 10, "M5")))
    assert again.coupon_ref == first.coupon_ref
    other_ws = await refused(service.check_coupon(coupon_req("REWARD-M5", 10, "M5", wsid=2)))
    assert other_ws == Reason.RESERVED  # the same check number on another register is another check


async def test_a_reserved_single_use_coupon_is_freed_by_void(service: Gateway) -> None:
    a = await ok(service.check_coupon(coupon_req("REWARD-M5", 1, "M5")))
    assert await refused(service.check_coupon(coupon_req("REWARD-M5", 2, "M5"))) == Reason.RESERVED
    await ok(service.void_coupon(void_req(a.coupon_ref)))
    b = await ok(service.check_coupon(coupon_req("REWARD-M5", 2, "M5")))
    assert b.coupon_ref != a.coupon_ref


async def test_a_posted_coupon_is_already_redeemed_for_other_checks(service: Gateway) -> None:
    a = await ok(service.check_coupon(coupon_req("REWARD-M5", 1, "M5")))
    await ok(service.post_check(post_req(1, "M5", coupons=(a.coupon_ref,))))
    assert (
        await refused(service.check_coupon(coupon_req("REWARD-M5", 2, "M5")))
        == Reason.ALREADY_REDEEMED
    )
    # and a repeat on the posted check itself does not hand the coupon out again
    assert (
        await refused(service.check_coupon(coupon_req("REWARD-M5", 1, "M5")))
        == Reason.ALREADY_REDEEMED
    )


async def test_a_member_may_not_use_a_coupon_beyond_the_per_member_limit(
    service: Gateway,
) -> None:
    a = await ok(service.check_coupon(coupon_req("WELCOME5", 1, "M1", subtotal=2000)))
    await ok(service.post_check(post_req(1, "M1", coupons=(a.coupon_ref,))))
    reason = await refused(service.check_coupon(coupon_req("WELCOME5", 2, "M1", subtotal=2000)))
    assert reason == Reason.ALREADY_REDEEMED
    await ok(service.check_coupon(coupon_req("WELCOME5", 2, "M5", subtotal=2000)))


async def test_an_expired_reservation_frees_the_coupon_and_is_released_with_an_event(
    service: Gateway, store: Store, clock: Clock
) -> None:
    a = await ok(service.check_coupon(coupon_req("REWARD-M5", 1, "M5")))
    clock.advance(seconds=TTL.total_seconds() - 1)
    assert await refused(service.check_coupon(coupon_req("REWARD-M5", 2, "M5"))) == Reason.RESERVED
    assert await service.release_expired_reservations() == 0
    clock.advance(seconds=2)
    b = await ok(service.check_coupon(coupon_req("REWARD-M5", 2, "M5")))
    assert await service.release_expired_reservations() == 1  # a's, not b's
    [event] = await events_of(store, "coupon.released")
    assert event.payload["coupon_ref"] == a.coupon_ref
    assert event.payload["code"] == "REWARD-M5"
    assert event.payload["reason"] == "expired"
    assert event.payload["store_id"] == STORE_ID
    assert await service.release_expired_reservations() == 0
    assert await refused(service.check_coupon(coupon_req("REWARD-M5", 3, "M5"))) == Reason.RESERVED
    assert b.coupon_ref != a.coupon_ref


async def test_concurrent_checks_cannot_both_get_the_last_use(service: Gateway) -> None:
    answers = await asyncio.gather(
        *(service.check_coupon(coupon_req("REWARD-M5", check, "M5")) for check in range(1, 11))
    )
    assert sum(isinstance(a, CouponOk) for a in answers) == 1
    assert {a.reason for a in answers if isinstance(a, Refusal)} == {Reason.RESERVED}


@pytest.mark.parametrize(
    ("min_spend", "subtotal", "expected"),
    [
        ("20.005", 2000, Reason.MIN_SPEND),
        ("20.005", 2001, None),
        ("20", 2000, None),
        ("not money", 5000, Reason.NOT_ELIGIBLE),
    ],
)
async def test_a_min_spend_in_any_notation_gets_an_answer(
    service: Gateway, store: Store, min_spend: str, subtotal: int, expected: Reason | None
) -> None:
    """Central may send more digits than the store currency has, or junk: never an exception."""
    await store.upsert_coupons([coupon_record("ODD", min_spend=min_spend, max_redemptions=None)])
    answer = await service.check_coupon(coupon_req("ODD", 1, "M1", subtotal=subtotal))
    if expected is None:
        assert isinstance(answer, CouponOk)
    else:
        assert isinstance(answer, Refusal) and answer.reason == expected


# ---- void_coupon ---------------------------------------------------------------------------


async def test_void_of_an_unknown_ref_is_refused(service: Gateway) -> None:
    assert await refused(service.void_coupon(void_req("CNOSUCHREF"))) == Reason.UNKNOWN_COUPON


async def test_voiding_twice_is_fine_and_releases_once(service: Gateway, store: Store) -> None:
    a = await ok(service.check_coupon(coupon_req("TENOFF", 1)))
    assert await service.void_coupon(void_req(a.coupon_ref)) == CouponVoidOk(a.coupon_ref)
    assert await service.void_coupon(void_req(a.coupon_ref)) == CouponVoidOk(a.coupon_ref)
    [event] = await events_of(store, "coupon.released")
    assert event.payload["coupon_ref"] == a.coupon_ref
    assert event.payload["reason"] == "void"


async def test_voiding_a_redeemed_coupon_is_refused(service: Gateway) -> None:
    a = await ok(service.check_coupon(coupon_req("TENOFF", 1)))
    await ok(service.post_check(post_req(1, coupons=(a.coupon_ref,))))
    assert await refused(service.void_coupon(void_req(a.coupon_ref))) == Reason.ALREADY_REDEEMED


# ---- consent -------------------------------------------------------------------------------


@pytest.mark.parametrize("member_id", ["M3", "M4"], ids=["minor", "employee"])
async def test_minors_and_employees_cannot_join_the_lottery(
    service: Gateway, store: Store, member_id: str
) -> None:
    assert await refused(service.consent(consent_req(member_id, True))) == Reason.NOT_ELIGIBLE
    assert await events_of(store, "consent.changed") == []


async def test_consent_switches_a_member_to_lottery_and_back(
    service: Gateway, store: Store
) -> None:
    assert await service.consent(consent_req("M5", True)) == ConsentOk("M5", "lottery")
    assert (await ok(service.identify(ident(M5_CARD)))).earn_mode == "LOTTERY"
    [joined] = await events_of(store, "consent.changed")
    assert joined.payload["member_id"] == "M5"
    assert joined.payload["consent"] is True
    assert joined.payload["earn_mode"] == "lottery"
    assert ULID.fullmatch(joined.event_id) and RFC3339_UTC.fullmatch(joined.occurred_at)

    assert await service.consent(consent_req("M5", False)) == ConsentOk("M5", "points")
    assert (await ok(service.identify(ident(M5_CARD)))).earn_mode == "POINTS"
    left = (await events_of(store, "consent.changed"))[-1]
    assert left.payload["consent"] is False and left.payload["earn_mode"] == "points"


async def test_consent_while_the_lottery_is_paused_is_refused(
    service: Gateway, store: Store
) -> None:
    await store.set_program_paused("lottery", True, by="test")
    assert await refused(service.consent(consent_req("M5", True))) == Reason.PROGRAM_PAUSED
    await store.set_program_paused("lottery", False, by="test")
    await ok(service.consent(consent_req("M5", True)))


async def test_consent_for_an_unknown_member_is_refused(service: Gateway) -> None:
    assert await refused(service.consent(consent_req("M404", True))) == Reason.UNKNOWN_MEMBER


async def test_a_consenting_member_earns_tickets_on_the_next_check(service: Gateway) -> None:
    await ok(service.consent(consent_req("M5", True)))
    reply = await ok(service.post_check(post_req(1, "M5", total=5000)))
    assert (reply.tickets_earned, reply.wallet_points, reply.points_balance) == (1, 0, 980)


# ---- post_check ----------------------------------------------------------------------------


async def test_points_are_earned_on_the_total(service: Gateway, store: Store) -> None:
    reply = await ok(service.post_check(post_req(1, total=2240, subtotal=2740)))
    assert reply.points_earned == 22
    assert reply.points_balance == 142
    assert reply.tickets_earned == 0
    assert await store.ledger_total("M1") == (22, 0, 0)
    assert reply.receipt_lines == (
        "Member            Ann K.",
        "Points this visit     22",
        "Points balance       142",
    )


async def test_receipt_balance_is_central_balance_plus_every_post_here(
    service: Gateway,
) -> None:
    balances = []
    for check, total in enumerate([1000, 2599, -500, 12_345], start=1):
        balances.append((await ok(service.post_check(post_req(check, total=total)))).points_balance)
    assert balances == [130, 155, 150, 273]
    assert (await ok(service.identify(ident(M1_CARD)))).points_balance == 273


async def test_posting_the_same_check_twice_returns_the_first_reply_and_earns_once(
    service: Gateway, store: Store
) -> None:
    first = await ok(service.post_check(post_req(5, total=2240)))
    again = await ok(service.post_check(post_req(5, total=9999)))  # a retry, even if it differs
    assert again == first
    assert await store.ledger_total("M1") == (22, 0, 0)
    assert len(await events_of(store, "check.posted")) == 1
    # another business date, register or check number is another check
    await ok(service.post_check(post_req(5, total=1000, date=DATE - dt.timedelta(days=1))))
    await ok(service.post_check(post_req(5, total=1000, wsid=2)))
    await ok(service.post_check(post_req(6, total=1000)))
    assert await store.ledger_total("M1") == (52, 0, 0)


async def test_a_refund_takes_points_back_rounded_toward_zero(
    service: Gateway, store: Store
) -> None:
    reply = await ok(service.post_check(post_req(1, total=-1050)))
    assert reply.points_earned == -10
    assert reply.points_balance == 110
    assert await store.ledger_total("M1") == (-10, 0, 0)


async def test_points_depend_on_the_total_not_the_items(service: Gateway) -> None:
    items = (Item(1000, 1, 1500), Item(2500, 2, 800), Item(-1000, 3, -300))
    one = await ok(service.post_check(post_req(1, total=2000, items=items)))
    other = await ok(service.post_check(post_req(2, total=2000, items=items[::-1])))
    none = await ok(service.post_check(post_req(3, total=2000)))
    assert one.points_earned == other.points_earned == none.points_earned == 20


async def test_a_lottery_member_gets_tickets_and_wallet_not_points(
    service: Gateway, store: Store
) -> None:
    reply = await ok(service.post_check(post_req(1, "M2", total=7500)))
    assert reply.points_earned == 75
    assert reply.tickets_earned == 2
    assert reply.wallet_points == 5
    assert reply.points_balance == 40
    assert await store.ledger_total("M2") == (0, -25, 2)
    assert (await ok(service.identify(ident(M2_CARD)))).points_balance == 40
    assert reply.receipt_lines == (
        "Member            Ben L.",
        "Points this visit     75",  # a lottery receipt names the points as well as the tickets
        "Tickets this visit     2",
        "Tickets this month     2",
        "Wallet points          5",
        "Points balance        40",
    )
    [posted] = await events_of(store, "check.posted")
    assert (posted.payload["points_earned"], posted.payload["tickets_earned"]) == (75, 2)
    # the wallet carries over: the next check starts from 5
    second = await ok(service.post_check(post_req(2, "M2", total=4500)))
    assert (second.tickets_earned, second.wallet_points) == (1, 0)


async def test_a_paused_lottery_lets_a_lottery_member_earn_points(
    service: Gateway, store: Store
) -> None:
    await store.set_program_paused("lottery", True, by="test")
    reply = await ok(service.post_check(post_req(1, "M2", total=7500)))
    assert (reply.points_earned, reply.tickets_earned, reply.points_balance) == (75, 0, 115)
    assert reply.wallet_points == 30


async def test_an_anonymous_check_earns_nothing_and_prints_nothing(
    service: Gateway, store: Store
) -> None:
    reply = await ok(service.post_check(post_req(1, None, total=5000)))
    assert reply == PostOk(0, 0, 0, 0, ())
    [posted] = await events_of(store, "check.posted")
    assert posted.payload["member_id"] is None
    assert posted.payload["points_earned"] == 0


async def test_check_posted_and_coupon_redeemed_events_carry_the_contract_fields(
    service: Gateway, store: Store
) -> None:
    welcome = await ok(service.check_coupon(coupon_req("WELCOME5", 77, "M1", subtotal=3000)))
    tenoff = await ok(service.check_coupon(coupon_req("TENOFF", 77, "M1")))
    items = (Item(2000, 1001, 2500), Item(-500, 1002, -250), Item(1250, 1003, 750))
    request = post_req(
        77,
        "M1",
        total=2240,
        subtotal=3000,
        coupons=(welcome.coupon_ref, tenoff.coupon_ref),
        items=items,
        wsid=12,
        rvc=3,
    )
    reply = await ok(service.post_check(request))
    [posted] = await events_of(store, "check.posted")
    assert ULID.fullmatch(posted.event_id)
    assert posted.occurred_at == "2026-11-23T12:00:00.000000Z"
    payload = posted.payload
    expected = {
        "store_id": STORE_ID,
        "business_date": "2026-11-23",
        "wsid": 12,
        "rvc": 3,
        "check": 77,
        "member_id": "M1",
        "subtotal": "30.00",
        "total": "22.40",
        "items": [
            {"qty": "2", "object": 1001, "total": "25.00"},
            {"qty": "-0.5", "object": 1002, "total": "-2.50"},
            {"qty": "1.25", "object": 1003, "total": "7.50"},
        ],
        "coupons": ["WELCOME5", "TENOFF"],
        "points_earned": reply.points_earned,
        "tickets_earned": 0,
        "rules_version": "default",
    }
    assert {k: payload[k] for k in expected} == expected
    redeemed = await events_of(store, "coupon.redeemed")
    assert sorted(e.payload["code"] for e in redeemed) == ["TENOFF", "WELCOME5"]
    assert {e.payload["coupon_ref"] for e in redeemed} == {welcome.coupon_ref, tenoff.coupon_ref}
    for event in redeemed:
        assert event.payload["business_date"] == "2026-11-23"
        assert (event.payload["wsid"], event.payload["check"]) == (12, 77)
        assert event.payload["member_id"] == "M1"
    ids = [posted.event_id, *(e.event_id for e in redeemed)]
    assert len(set(ids)) == 3
    # the retry of the same check writes nothing more
    await ok(service.post_check(request))
    assert len(await events_of(store, "check.posted")) == 1
    assert len(await events_of(store, "coupon.redeemed")) == 2


async def test_a_ref_listed_twice_is_redeemed_once(service: Gateway, store: Store) -> None:
    a = await ok(service.check_coupon(coupon_req("TENOFF", 1)))
    await ok(service.post_check(post_req(1, coupons=(a.coupon_ref, a.coupon_ref))))
    assert len(await events_of(store, "coupon.redeemed")) == 1
    [posted] = await events_of(store, "check.posted")
    assert posted.payload["coupons"] == ["TENOFF"]


async def test_concurrent_posts_of_one_member_show_every_running_balance_once(
    service: Gateway, store: Store
) -> None:
    replies = await asyncio.gather(
        *(service.post_check(post_req(check, total=1000)) for check in range(1, 21))
    )
    balances = [r.points_balance for r in replies if isinstance(r, PostOk)]
    assert len(balances) == 20
    assert sorted(balances) == [120 + 10 * k for k in range(1, 21)]
    assert await store.ledger_total("M1") == (200, 0, 0)
    assert (await ok(service.identify(ident(M1_CARD)))).points_balance == 320


async def test_concurrent_lottery_posts_never_hand_out_the_same_wallet_twice(
    service: Gateway, store: Store
) -> None:
    replies = await asyncio.gather(
        *(service.post_check(post_req(check, "M2", total=2000)) for check in range(1, 11))
    )
    # 30 in the wallet plus 10 x 20 points = 230 points: 4 tickets, 30 left over
    assert sum(r.tickets_earned for r in replies if isinstance(r, PostOk)) == 4
    assert await store.ledger_total("M2") == (0, 0, 4)


def test_receipt_lines_fit_the_printer(tmp_path: Path) -> None:
    """Any display name and any total give at most 8 lines of 24 (receipt.line_width)."""
    names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=60)
    counter = itertools.count(1)

    async def scenario(store: Store, name: str, total: int, lottery: bool) -> None:
        n = next(counter)
        mode = {"earn_mode": "lottery", "lottery_consent": True} if lottery else {}
        await store.upsert_members([member_record(f"R{n}", display_name=name, **mode)])
        service = Gateway(store, ServiceOptions(store_id=STORE_ID), clock=Clock())
        reply = await ok(service.post_check(post_req(n, f"R{n}", total)))
        assert 1 <= len(reply.receipt_lines) <= 8
        assert all(len(line) <= 24 for line in reply.receipt_lines), reply.receipt_lines
        assert reply.receipt_lines[-1].endswith(f" {reply.points_balance}")

    def make(store: Store) -> Callable[[], None]:
        @given(name=names, total=st.integers(-(10**11), 10**11), lottery=st.booleans())
        def check(name: str, total: int, lottery: bool) -> None:
            run(scenario(store, name, total, lottery))

        return check

    with_store(tmp_path, make)


async def test_a_long_display_name_is_cut_to_fit_the_receipt(
    service: Gateway, store: Store
) -> None:
    name = "Maximilian Alexander von Wolfsburg-Hohenzollern"
    await store.upsert_members([member_record("M9", display_name=name)])
    reply = await ok(service.post_check(post_req(1, "M9", total=1000)))
    assert reply.receipt_lines[0] == name[:24]
    assert all(len(line) <= 24 for line in reply.receipt_lines)
    assert reply.receipt_lines[1:] == (
        "Points this visit".ljust(22) + "10",
        "Points balance".ljust(22) + "10",
    )


# ---- a coupon's redemption limit under any interleaving ---------------------------------------

_loop: asyncio.AbstractEventLoop | None = None


def run(coro: Awaitable[T]) -> T:
    assert _loop is not None
    return _loop.run_until_complete(coro)  # type: ignore[arg-type]


def with_store(tmp_path: Path, make_test: Callable[[Store], Callable[[], None]]) -> None:
    """Run a hypothesis test whose examples share one store on one event loop."""
    global _loop
    _loop = asyncio.new_event_loop()
    try:
        store = run(Store.open(tmp_path / "gateway.db"))
        try:
            run(store.upsert_members(load_sample_members()))
            run(store.upsert_coupons(sample_coupons()))
            settings(max_examples=50, deadline=None, database=None)(make_test(store))()
        finally:
            run(store.close())
    finally:
        _loop.close()
        _loop = None


Op = tuple[str, int]
CHECKS = 3
well_behaved_ops = st.lists(
    st.tuples(st.sampled_from(["reserve", "void", "post"]), st.integers(1, CHECKS)), max_size=12
)
any_ops = st.lists(
    st.tuples(
        st.sampled_from(["reserve", "void", "post", "expire", "release"]),
        st.integers(1, CHECKS),
    ),
    max_size=12,
)


async def play_coupon_ops(store: Store, code: str, limit: int, ops: list[Op], wsid: int) -> None:
    """Registers reserving, voiding and posting one coupon; the store must honour its limit.

    A register posts the refs it holds (reserved and not voided by itself); `expire` moves the
    clock past the reservation TTL, `release` runs the expiry timer. Until the clock moves, every
    answer is also checked against a model of the coupon's reservations.
    """
    await store.upsert_coupons([coupon_record(code, max_redemptions=limit)])
    clock = Clock()
    service = Gateway(store, ServiceOptions(store_id=STORE_ID), clock=clock)
    held: dict[int, list[str]] = {c: [] for c in range(1, CHECKS + 1)}
    status: dict[str, str] = {}  # the model: ref -> reserved | released | redeemed
    check_of: dict[str, int] = {}
    posted: set[int] = set()
    exact = True
    for op, check in ops:
        if op == "reserve":
            answer = await service.check_coupon(coupon_req(code, check, wsid=wsid))
            if exact:
                same = [r for r, s in status.items() if s == "reserved" and check_of[r] == check]
                redeemed = sum(s == "redeemed" for s in status.values())
                live = sum(s == "reserved" for s in status.values())
                if same:
                    assert isinstance(answer, CouponOk) and answer.coupon_ref == same[0]
                elif redeemed >= limit:
                    assert answer == Refusal(Reason.ALREADY_REDEEMED, "Coupon already used")
                elif redeemed + live >= limit:
                    assert isinstance(answer, Refusal) and answer.reason == Reason.RESERVED
                else:
                    assert isinstance(answer, CouponOk) and answer.coupon_ref not in status
            if isinstance(answer, CouponOk):
                status.setdefault(answer.coupon_ref, "reserved")
                check_of[answer.coupon_ref] = check
                if answer.coupon_ref not in held[check]:
                    held[check].append(answer.coupon_ref)
        elif op == "void" and held[check]:
            ref = held[check].pop()
            answer = await service.void_coupon(void_req(ref, check))
            if not exact:
                # Past an expiry the model cannot know whether a late post found a use left
                # (docs/rules.md): the void's answer says which, and must be one of the two.
                assert answer == CouponVoidOk(ref) or (
                    isinstance(answer, Refusal) and answer.reason == Reason.ALREADY_REDEEMED
                )
                status[ref] = "released" if answer == CouponVoidOk(ref) else "redeemed"
            elif status[ref] == "redeemed":
                assert isinstance(answer, Refusal) and answer.reason == Reason.ALREADY_REDEEMED
            else:
                assert answer == CouponVoidOk(ref)
                status[ref] = "released"
        elif op == "post":
            refs = tuple(held[check])
            await ok(service.post_check(post_req(check, None, coupons=refs, wsid=wsid)))
            if check not in posted:
                posted.add(check)
                status.update({ref: "redeemed" for ref in refs})
        elif op == "expire":
            clock.advance(seconds=TTL.total_seconds() + 1)
            exact = False
        elif op == "release":
            await service.release_expired_reservations()
        assert redeemed_count(store, code) <= limit
        if exact:
            assert redeemed_count(store, code) == sum(s == "redeemed" for s in status.values())
    redeemed = [e for e in await events_of(store, "coupon.redeemed") if e.payload["code"] == code]
    assert len(redeemed) <= limit
    # The running totals that spare counting rows agree with the rows.
    conn = sqlite3.connect(store.path)
    try:
        totals = conn.execute(
            "SELECT redeemed, reserved FROM coupon_usage WHERE code = ?", (code,)
        ).fetchone() or (0, 0)
        counted = conn.execute(
            "SELECT COALESCE(SUM(status = 'redeemed'), 0), COALESCE(SUM(status = 'reserved'), 0)"
            " FROM coupon_reservations WHERE code = ?",
            (code,),
        ).fetchone()
    finally:
        conn.close()
    assert tuple(totals) == tuple(counted)


def test_a_coupon_is_never_redeemed_beyond_its_limit(tmp_path: Path) -> None:
    counter = itertools.count(1)

    def make(store: Store) -> Callable[[], None]:
        @given(limit=st.integers(1, 3), ops=well_behaved_ops)
        def check(limit: int, ops: list[Op]) -> None:
            n = next(counter)
            run(play_coupon_ops(store, f"LIMIT-{n}", limit, ops, wsid=n))

        return check

    with_store(tmp_path, make)


def test_a_coupon_is_never_redeemed_beyond_its_limit_even_across_expiry(tmp_path: Path) -> None:
    counter = itertools.count(1)

    def make(store: Store) -> Callable[[], None]:
        @given(limit=st.integers(1, 3), ops=any_ops)
        @example(
            limit=1, ops=[("reserve", 1), ("expire", 1), ("reserve", 2), ("post", 1), ("post", 2)]
        )
        @example(  # a late post finds no use left; the void then releases, not refuses
            limit=1, ops=[("reserve", 3), ("expire", 1), ("reserve", 1), ("post", 3), ("void", 3)]
        )
        def check(limit: int, ops: list[Op]) -> None:
            n = next(counter)
            run(play_coupon_ops(store, f"EXPIRY-{n}", limit, ops, wsid=n))

        return check

    with_store(tmp_path, make)


async def test_a_late_post_of_an_expired_reservation_does_not_take_a_use_held_elsewhere(
    service: Gateway, store: Store, clock: Clock
) -> None:
    a = await ok(service.check_coupon(coupon_req("REWARD-M5", 1, "M5")))
    clock.advance(seconds=TTL.total_seconds() + 1)
    b = await ok(service.check_coupon(coupon_req("REWARD-M5", 2, "M5")))
    await ok(service.post_check(post_req(1, "M5", coupons=(a.coupon_ref,))))
    await ok(service.post_check(post_req(2, "M5", coupons=(b.coupon_ref,))))
    assert await redeemed_ref(store, "REWARD-M5") == b.coupon_ref
    late, on_time = await events_of(store, "check.posted")
    assert late.payload["coupons"] == [] and late.payload["refused_coupon_refs"] == [a.coupon_ref]
    assert on_time.payload["coupons"] == ["REWARD-M5"]


async def test_a_late_post_of_an_expired_reservation_redeems_a_use_nobody_took(
    service: Gateway, store: Store, clock: Clock
) -> None:
    """The register already gave the discount: a lapsed reservation still counts if it can."""
    a = await ok(service.check_coupon(coupon_req("REWARD-M5", 1, "M5")))
    clock.advance(seconds=TTL.total_seconds() + 1)
    assert await service.release_expired_reservations() == 1
    await ok(service.post_check(post_req(1, "M5", coupons=(a.coupon_ref,))))
    assert await redeemed_ref(store, "REWARD-M5") == a.coupon_ref
    reason = await refused(service.check_coupon(coupon_req("REWARD-M5", 2, "M5")))
    assert reason == Reason.ALREADY_REDEEMED


async def test_posting_a_voided_ref_does_not_redeem_it(service: Gateway, store: Store) -> None:
    a = await ok(service.check_coupon(coupon_req("REWARD-M5", 1, "M5")))
    await ok(service.void_coupon(void_req(a.coupon_ref)))
    b = await ok(service.check_coupon(coupon_req("REWARD-M5", 2, "M5")))
    await ok(service.post_check(post_req(2, "M5", coupons=(b.coupon_ref,))))
    await ok(service.post_check(post_req(1, "M5", coupons=(a.coupon_ref,))))
    assert await redeemed_ref(store, "REWARD-M5") == b.coupon_ref
    posted = {e.payload["check"]: e.payload for e in await events_of(store, "check.posted")}
    assert posted[1]["refused_coupon_refs"] == [a.coupon_ref]
    # even with the coupon free again, a voided ref was taken off its check: it never redeems
    await ok(service.check_coupon(coupon_req("TENOFF", 3)))
    c = await ok(service.check_coupon(coupon_req("TENOFF", 4)))
    await ok(service.void_coupon(void_req(c.coupon_ref, 4)))
    await ok(service.post_check(post_req(4, "M5", coupons=(c.coupon_ref,))))
    assert redeemed_count(store, "TENOFF") == 0
