"""Integer points give exactly what exact rational arithmetic gives, on random checks and rules.

The reference below is the earlier implementation (fractions, reduced at every step), kept here
as the oracle: any difference, on any check, is a bug in the integer version."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from decimal import Decimal
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.domain.models import Item
from gateway.domain.rules_doc import RulesDocument
from gateway.rules.points import EarnContext, earn_points

CATEGORIES = ["coffee", "food", "tobacco", "gift", "fuel"]
DAY = dt.date(2026, 11, 23)


def reference_points(
    total: int, items: Sequence[Item], rules: RulesDocument, context: EarnContext
) -> int:
    listed = sum(item.total for item in items)
    if not items or listed == 0:
        spend = Fraction(total)
    else:
        share = Fraction(total, listed)
        spend = Fraction(0)
        for item in items:
            category = rules.categories.get(str(item.object)) or context.categories.get(item.object)
            weight = Fraction(1)
            if category is not None:
                if category in rules.excluded_categories:
                    weight = Fraction(0)
                elif category in rules.category_multipliers:
                    weight = Fraction(rules.category_multipliers[category])
            spend += Fraction(item.total) * share * weight
    value = spend / (10**context.decimals) * Fraction(rules.points_per_unit)
    for entry in rules.tier_multipliers:
        if entry.tier == context.tier and (context.day is None or entry.applies(entry.tier, DAY)):
            value *= Fraction(entry.multiplier)
            break
    if context.birthday:
        value *= Fraction(rules.birthday_multiplier)
    magnitude = abs(value)
    whole = int(magnitude)
    rest = magnitude - whole
    if (rules.rounding == "up" and rest) or (rules.rounding == "half_up" and rest * 2 >= 1):
        whole += 1
    return -whole if value < 0 else whole


# Multipliers of every precision the document allows (up to 100, any number of decimals).
multipliers = st.one_of(
    st.sampled_from([Decimal(0), Decimal(1), Decimal("1.5"), Decimal("0.25"), Decimal(100)]),
    st.decimals(min_value=0, max_value=100, places=3, allow_nan=False, allow_infinity=False),
    st.decimals(min_value=0, max_value=2, places=7, allow_nan=False, allow_infinity=False),
)
items_st = st.lists(
    st.builds(
        Item,
        qty_milli=st.integers(-5000, 5000),
        object=st.integers(1000, 1012),
        total=st.integers(-100_000, 100_000),
    ),
    max_size=15,
)
rules_st = st.builds(
    lambda ppu, rounding, categories, mults, excluded, tier, birthday: RulesDocument(
        version="p",
        points_per_unit=ppu,
        rounding=rounding,
        categories=categories,
        category_multipliers=mults,
        excluded_categories=excluded,
        tier_multipliers=[{"tier": "GOLD", "multiplier": tier}],
        birthday_multiplier=birthday,
    ),
    multipliers,
    st.sampled_from(["down", "half_up", "up"]),
    # Most objects in a category (a few without), so that weights of mixed precision meet.
    st.lists(st.sampled_from([*CATEGORIES, None]), min_size=13, max_size=13).map(
        lambda picked: {str(1000 + i): c for i, c in enumerate(picked) if c is not None}
    ),
    st.dictionaries(st.sampled_from(CATEGORIES), multipliers),
    st.lists(st.sampled_from(CATEGORIES), max_size=2, unique=True),
    multipliers,
    multipliers,
)
context_st = st.builds(
    EarnContext,
    decimals=st.sampled_from([0, 1, 2, 3]),
    tier=st.sampled_from(["", "GOLD", "SILVER"]),
    birthday=st.booleans(),
    day=st.sampled_from([None, DAY]),
    categories=st.dictionaries(st.integers(1000, 1012), st.sampled_from(CATEGORIES)),
)


@settings(max_examples=500)
@given(
    total=st.integers(-1_000_000, 1_000_000),
    items=items_st,
    rules=rules_st,
    context=context_st,
)
def test_integer_points_equal_exact_rational_points(
    total: int, items: list[Item], rules: RulesDocument, context: EarnContext
) -> None:
    expected = reference_points(total, items, rules, context)
    assert earn_points(total, total, items, rules, context) == expected


def test_the_oracle_itself_rounds_each_way() -> None:
    # 1.49 at 1 point per unit: down 1, half_up 1, up 2; 1.50 half_up 2.
    items = [Item(qty_milli=1000, object=1000, total=149)]
    for rounding, expected in (("down", 1), ("half_up", 1), ("up", 2)):
        rules = RulesDocument(version="r", rounding=rounding)
        assert reference_points(149, items, rules, EarnContext()) == expected
        assert earn_points(149, 149, items, rules, EarnContext()) == expected
    rules = RulesDocument(version="r", rounding="half_up")
    assert earn_points(-150, -150, [], rules, EarnContext()) == -2


def test_weights_of_mixed_precision_share_one_denominator() -> None:
    rules = RulesDocument(
        version="m",
        categories={"1000": "a", "1001": "b", "1002": "c"},
        category_multipliers={"a": Decimal("0.5"), "b": Decimal("0.25"), "c": Decimal(3)},
    )
    items = [Item(1000, 1000, 1000), Item(1000, 1001, 2000), Item(1000, 1002, 500)]
    # 10.00 x 0.5 + 20.00 x 0.25 + 5.00 x 3 = 25.00 of the 35.00 listed: 25 points.
    assert reference_points(3500, items, rules, EarnContext()) == 25
    assert earn_points(3500, 3500, items, rules, EarnContext()) == 25
