"""Loyalty rules at the edge: the rules document shaping real replies over the SIM socket,
properties of earning and of the lottery wallet, and the stop switch (signed app tokens are in
tests/test_app_tokens.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
from decimal import Decimal
from typing import Any

import httpx
import pytest
from conftest import RunningGateway, member_record
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.domain.models import Item, PostRequest
from gateway.domain.rules_doc import RulesDocument
from gateway.rules.points import EarnContext, earn_points, is_birthday, tickets_and_wallet
from gateway.store.store import Store

DATE = "20261123"
NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
CATEGORIES = ["coffee", "food", "tobacco", "gift"]

# ---- properties of earning (pure) -----------------------------------------------------------

items_st = st.lists(
    st.builds(
        Item,
        qty_milli=st.integers(1, 5000),
        object=st.integers(1000, 1010),
        total=st.integers(0, 50_000),
    ),
    min_size=1,
    max_size=12,
)
rules_st = st.builds(
    lambda ppu, rounding, mults, excluded: RulesDocument(
        version="p",
        points_per_unit=ppu,
        rounding=rounding,
        categories={str(o): CATEGORIES[o % 4] for o in range(1000, 1011)},
        category_multipliers=mults,
        excluded_categories=excluded,
        tier_multipliers=[{"tier": "GOLD", "multiplier": "1.5"}],
        birthday_multiplier=Decimal(2),
    ),
    st.sampled_from([Decimal(1), Decimal(2), Decimal("0.5"), Decimal("1.25")]),
    st.sampled_from(["down", "half_up", "up"]),
    st.dictionaries(
        st.sampled_from(CATEGORIES), st.sampled_from([Decimal(0), Decimal(1), Decimal(3)])
    ),
    st.lists(st.sampled_from(CATEGORIES), max_size=2, unique=True),
)
context_st = st.builds(
    EarnContext,
    decimals=st.sampled_from([0, 2, 3]),
    tier=st.sampled_from(["", "GOLD", "SILVER"]),
    birthday=st.booleans(),
    day=st.just(dt.date(2026, 11, 23)),
)


@given(items=items_st, rules=rules_st, context=context_st, data=st.data())
def test_points_never_depend_on_the_order_of_items(
    items: list[Item], rules: RulesDocument, context: EarnContext, data: st.DataObject
) -> None:
    total = data.draw(st.integers(0, sum(i.total for i in items)))
    shuffled = data.draw(st.permutations(items))
    subtotal = sum(i.total for i in items)
    assert earn_points(total, subtotal, items, rules, context) == earn_points(
        total, subtotal, shuffled, rules, context
    )


@given(items=items_st, rules=rules_st, context=context_st, data=st.data())
def test_a_sale_never_earns_negative_points(
    items: list[Item], rules: RulesDocument, context: EarnContext, data: st.DataObject
) -> None:
    total = data.draw(st.integers(0, 10**7))
    assert earn_points(total, sum(i.total for i in items), items, rules, context) >= 0


@given(items=items_st, rules=rules_st, context=context_st, data=st.data())
def test_a_refund_returns_exactly_what_the_sale_earned(
    items: list[Item], rules: RulesDocument, context: EarnContext, data: st.DataObject
) -> None:
    total = data.draw(st.integers(0, 10**7))
    subtotal = sum(i.total for i in items)
    refund = [Item(-i.qty_milli, i.object, -i.total) for i in items]
    sale = earn_points(total, subtotal, items, rules, context)
    assert earn_points(-total, -subtotal, refund, rules, context) == -sale


@given(
    wallet=st.integers(0, 49),
    checks=st.lists(st.integers(-20_000, 20_000), max_size=30),
    price=st.integers(1, 200),
)
def test_tickets_times_price_plus_wallet_is_conserved(
    wallet: int, checks: list[int], price: int
) -> None:
    start, tickets = wallet, 0
    for points in checks:
        earned, wallet = tickets_and_wallet(wallet, points, price)
        tickets += earned
        assert 0 <= wallet < price
    assert tickets * price + wallet == start + sum(checks)


# ---- each rule, as a table --------------------------------------------------------------------


def rules(**fields: Any) -> RulesDocument:
    return RulesDocument.model_validate({"version": "t", **fields})


@pytest.mark.parametrize(
    ("document", "context", "points"),
    [
        ({}, EarnContext(), 20),  # 1 point per whole 1.00 of 20.00
        ({"points_per_unit": "2"}, EarnContext(), 40),
        (
            {"tier_multipliers": [{"tier": "GOLD", "multiplier": "1.5"}]},
            EarnContext(tier="GOLD"),
            30,
        ),
        (
            {
                "tier_multipliers": [
                    {"tier": "GOLD", "multiplier": "3", "valid_from": "2026-12-01"},
                    {"tier": "GOLD", "multiplier": "2", "valid_to": "2026-11-30"},
                ]
            },
            EarnContext(tier="GOLD", day=dt.date(2026, 11, 23)),
            40,  # the November entry applies, the December one not yet
        ),
        ({"birthday_multiplier": "2"}, EarnContext(birthday=True), 40),
        ({"birthday_multiplier": "2"}, EarnContext(birthday=False), 20),
        (
            {"categories": {"1": "tobacco"}, "excluded_categories": ["tobacco"]},
            EarnContext(),
            10,  # the tobacco half of the check earns nothing
        ),
        (
            {"category_multipliers": {"coffee": "3"}},
            EarnContext(categories={1: "coffee"}),
            40,  # 10.00 of coffee x3 + 10.00 of food (category from the POS menu)
        ),
    ],
)
def test_each_earn_rule(document: dict[str, Any], context: EarnContext, points: int) -> None:
    items = [Item(1000, 1, 1000), Item(1000, 2, 1000)]
    assert earn_points(2000, 2000, items, rules(**document), context) == points


def test_coupons_lower_the_spend_that_earns_once() -> None:
    items = [Item(1000, 1, 1500), Item(1000, 2, 1500)]  # 30.00 of goods, 10.00 off: pays 20.00
    assert earn_points(2000, 3000, items, rules()) == 20


@pytest.mark.parametrize(
    ("birthday", "day", "expected"),
    [
        ("11-23", dt.date(2026, 11, 23), True),
        ("11-24", dt.date(2026, 11, 23), False),
        ("02-29", dt.date(2027, 2, 28), True),  # not a leap year: kept on 28 February
        ("02-29", dt.date(2028, 2, 28), False),  # a leap year has its own 29th
        ("02-29", dt.date(2028, 2, 29), True),
        (None, dt.date(2026, 11, 23), False),
    ],
)
def test_birthdays(birthday: str | None, day: dt.date, expected: bool) -> None:
    assert is_birthday(birthday, day) is expected


# ---- rules shaping real replies over the SIM socket -----------------------------------------


async def publish(store: Store, **document: Any) -> None:
    await store.add_rules(
        RulesDocument.model_validate({"version": "v2", **document}), source="test"
    )


async def test_rules_from_the_store_shape_post_ok_over_the_socket(
    gateway: RunningGateway,
) -> None:
    store = gateway.store
    await store.replace_products([(1001, "Espresso", "coffee", "bev", True), (2001, "Cigars",
                                  "tobacco", "other", True)])  # fmt: skip
    await publish(
        store,
        effective_from="2026-01-01T00:00:00Z",
        tier_multipliers=[{"tier": "GOLD", "multiplier": "2"}],
        category_multipliers={"coffee": "1.5"},
        excluded_categories=["tobacco"],
    )
    async with gateway.workstation(3) as station:
        # M1 is GOLD: 10.00 coffee x1.5 + 10.00 tobacco x0 = 15, x2 for GOLD = 30 points.
        reply = await station.request(
            "POST", "3", "1", "71", DATE, "M1", "20.00", "20.00", "1*1001*10.00;1*2001*10.00", ""
        )
        assert reply[:3] == ["POST_OK", "30", "150"]
        events = await store.outbox_events()
        posted = [e for e in events if e.type == "check.posted"][-1]
        assert posted.payload["rules_version"] == "v2"


async def test_a_birthday_earns_the_birthday_multiplier(gateway: RunningGateway) -> None:
    await publish(gateway.store, birthday_multiplier="3")
    async with gateway.workstation(3) as station:
        # M2 (Ben, lottery) has his birthday on 11-24; M1 on 04-17: post on their days.
        on_day = await station.request(
            "POST", "3", "1", "81", "20260417", "M1", "10.00", "10.00", "", ""
        )
        other_day = await station.request(
            "POST", "3", "1", "82", DATE, "M1", "10.00", "10.00", "", ""
        )
        assert (on_day[1], other_day[1]) == ("30", "10")


async def test_a_lottery_month_carries_the_wallet_over_and_counts_tickets_per_month(
    gateway: RunningGateway,
) -> None:
    async with gateway.workstation(3) as station:
        # M2: lottery with consent, wallet 30, ticket price 50.
        first = await station.request(
            "POST", "3", "1", "91", "20261031", "M2", "45.00", "45.00", "", ""
        )
        assert first[1:5] == ["45", "40", "1", "25"]  # 30 + 45 = 75: one ticket, 25 kept
        assert "Tickets this month     1" in first[5:]
        assert "Points this visit     45" in first[5:]  # the points went to the wallet
        second = await station.request(
            "POST", "3", "1", "92", "20261101", "M2", "30.00", "30.00", "", ""
        )
        assert second[1:5] == ["30", "40", "1", "5"]  # the wallet crossed into November
        assert "Tickets this month     1" in second[5:]  # a new month's count
        assert "Wallet points          5" in second[5:]


# ---- the stop switch -----------------------------------------------------------------------------


async def test_the_stop_switch_takes_effect_on_the_very_next_request(
    gateway: RunningGateway,
) -> None:
    lottery_card = "6001000000000002"  # M2
    async with gateway.workstation(3) as station:
        assert (await station.request("IDENT", "3", "1", "0", lottery_card))[5] == "LOTTERY"
        await gateway.store.set_program_paused("lottery", True, by="test")
        assert (await station.request("IDENT", "3", "1", "0", lottery_card))[5] == "POINTS"
        assert (await station.request("CONSENT", "3", "M5", "LOTTERY", "Y"))[:2] == [
            "CONSENT_FAIL", "PROGRAM_PAUSED",
        ]  # fmt: skip
        # Paused, a lottery member earns points instead of tickets.
        paused_post = await station.request(
            "POST", "3", "1", "101", DATE, "M2", "60.00", "60.00", "", ""
        )
        assert paused_post[1:4] == ["60", "100", "0"]
        await gateway.store.set_program_paused("lottery", False, by="test")
        assert (await station.request("IDENT", "3", "1", "0", lottery_card))[5] == "LOTTERY"
        # Central can pause it too, through the rules document.
        await publish(gateway.store, programs={"lottery": {"paused": True}})
        assert (await station.request("IDENT", "3", "1", "0", lottery_card))[5] == "POINTS"


async def test_nothing_else_slows_down_while_the_switch_is_flipped(
    gateway: RunningGateway,
) -> None:
    flips = 0

    async def flipper() -> None:
        nonlocal flips
        for n in range(40):
            await gateway.store.set_program_paused("lottery", n % 2 == 0, by="test")
            flips += 1

    async with gateway.workstation(4) as station:
        flipping = asyncio.create_task(flipper())
        answers = [
            await station.request("IDENT", "4", "1", "0", "6001000000000001") for _ in range(40)
        ]
        await flipping
        assert all(a[0] == "IDENT_OK" and a[5] == "POINTS" for a in answers)
        assert flips == 40


async def test_the_admin_api_pauses_and_resumes_the_lottery(tmp_path: Any) -> None:
    from sync_harness import register, start_gateway

    daemon = await start_gateway(tmp_path, None)
    assert daemon.admin is not None and daemon.store is not None
    await daemon.store.upsert_members(
        [member_record("L1", identifiers=["LOT-1"], earn_mode="lottery", lottery_consent=True)]
    )
    origin = f"http://127.0.0.1:{daemon.admin.port}"
    # Same-origin, as the dashboard's own requests are (no token configured).
    api = httpx.AsyncClient(base_url=origin, headers={"Origin": origin}, timeout=10)
    connection, station = await register(daemon, 2)
    try:
        assert (await station.request("IDENT", "2", "1", "0", "LOT-1"))[5] == "LOTTERY"
        refused = await api.post("/programs/lottery/pause", content=b"by=someone")
        assert refused.status_code == 415  # not JSON: a cross-site form cannot flip it
        response = await api.post("/programs/lottery/pause", json={"by": "store-manager"})
        assert response.json() == {"program": "lottery", "paused": True, "by": "store-manager"}
        assert (await station.request("IDENT", "2", "1", "0", "LOT-1"))[5] == "POINTS"
        status = (await api.get("/status")).json()
        assert status["programs"]["lottery"]["state"] == "paused"
        await api.post("/programs/lottery/resume", json={"by": "store-manager"})
        assert (await station.request("IDENT", "2", "1", "0", "LOT-1"))[5] == "LOTTERY"
    finally:
        await connection.close()
        await api.aclose()
        await daemon.stop()


# ---- the wallet across many checks and month boundaries, through the store ------------------

CHECKS = itertools.count(10_000)  # one store serves every example: checks must not repeat


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(totals=st.lists(st.integers(-3000, 9000), min_size=1, max_size=12))
async def test_the_wallet_is_conserved_across_checks_and_months_through_the_store(
    gateway: RunningGateway, totals: list[int]
) -> None:
    service, store = gateway.service, gateway.store
    member_id = f"W{next(CHECKS)}"  # a fresh member per example
    await store.upsert_members(
        [member_record(member_id, earn_mode="lottery", lottery_consent=True, wallet_points=17)]
    )
    day = dt.date(2026, 10, 25)
    earned = 0
    for total in totals:
        day += dt.timedelta(days=5)  # crosses into October and November
        reply = await service.post_check(
            PostRequest(1, 1, next(CHECKS), day, member_id, total, total, (), ())
        )
        earned += reply.points_earned  # type: ignore[union-attr]
    points, wallet_delta, tickets = await store.ledger_total(member_id)
    assert points == 0  # a lottery member's points balance does not grow
    assert tickets * 50 + (17 + wallet_delta) == 17 + earned
    assert 0 <= 17 + wallet_delta < 50


def test_the_rules_document_example_in_the_docs_is_valid() -> None:
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "rules.md").read_text()
    block = text.split("```json", 1)[1].split("```", 1)[0]
    document = RulesDocument.model_validate(json.loads(block))
    assert document.version and document.app_token_keys


@pytest.mark.parametrize(
    ("locale", "currency", "minor", "text"),
    [
        ("de_DE", "EUR", 500, "5,00 €"),
        ("fr", "EUR", 123456, "1234,56 €"),
        ("en_GB", "GBP", 500, "£5.00"),
        ("en_US", "USD", -250, "-$2.50"),
        ("ja", "JPY", 500, "5.00 ¥"),
    ],
)
def test_receipt_amounts_follow_the_store_locale(
    locale: str, currency: str, minor: int, text: str
) -> None:
    from gateway.domain.money import format_money

    decimals = 2
    assert format_money(minor, decimals, currency, locale) == text


async def test_a_coupon_check_shows_the_saving_and_reports_the_coupon_origin(
    gateway: RunningGateway,
) -> None:
    async with gateway.workstation(3) as station:
        coupon = await station.request("COUPON", "3", "301", "M1", "WELCOME5", "27.40")
        posted = await station.request(
            "POST", "3", "1", "301", DATE, "M1", "27.40", "22.40", "1*1001*27.40", coupon[1]
        )
        assert posted[0] == "POST_OK"
        assert "You saved".ljust(19) + "€5.00" in posted[5:]
        redeemed = [e for e in await gateway.store.outbox_events() if e.type == "coupon.redeemed"]
        assert redeemed[-1].payload["origin"] == "campaign"
