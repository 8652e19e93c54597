"""Points and lottery tickets for a check: pure, exact arithmetic (fractions), no I/O.

The earning spend is the check's total after every discount, spread over its items in proportion
to their amounts, so coupons lower the spend that earns once and only once (the subtotal is not
used: the items need not add up to it). Each item's share is
weighted by its category's multiplier (0 for an excluded category); the sum is multiplied by the
points per currency unit, the tier's multiplier and the birthday multiplier, then rounded once,
on its magnitude, so a refund gives back exactly what the same sale earned.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction

from gateway.domain.models import Item
from gateway.domain.rules_doc import DEFAULT_RULES, Rounding, RulesDocument

__all__ = [
    "DEFAULT_RULES",
    "EarnContext",
    "earn_points",
    "is_birthday",
    "points_for_total",
    "round_points",
    "tickets_and_wallet",
]


@dataclass(frozen=True, slots=True)
class EarnContext:
    """What besides the check itself decides the points."""

    decimals: int = 2
    tier: str = ""
    birthday: bool = False
    day: dt.date | None = None  # the business day, for tier multipliers' dates
    categories: Mapping[int, str] = field(default_factory=dict)  # item object -> category


def round_points(value: Fraction, rounding: Rounding) -> int:
    magnitude = abs(value)
    whole = int(magnitude)  # floor of a non-negative fraction
    rest = magnitude - whole
    if (rounding == "up" and rest) or (rounding == "half_up" and rest * 2 >= 1):
        whole += 1
    return -whole if value < 0 else whole


def _fraction(value: Decimal) -> Fraction:
    return Fraction(value)


def _tier_multiplier(rules: RulesDocument, context: EarnContext) -> Fraction:
    for entry in rules.tier_multipliers:
        if entry.tier == context.tier and (
            context.day is None or entry.applies(context.tier, context.day)
        ):
            return _fraction(entry.multiplier)
    return Fraction(1)


def _category_weight(rules: RulesDocument, category: str | None) -> Fraction:
    if category is None:
        return Fraction(1)
    if category in rules.excluded_categories:
        return Fraction(0)
    multiplier = rules.category_multipliers.get(category)
    return Fraction(1) if multiplier is None else _fraction(multiplier)


def earning_spend(
    total: int, subtotal: int, items: Sequence[Item], rules: RulesDocument, context: EarnContext
) -> Fraction:
    """The spend that earns, in minor units, category weights applied.

    The total is spread over the items in proportion to their amounts (not to the subtotal:
    the items need not add up to it to the cent), so without category rules the spend is the
    total exactly."""
    listed = sum(item.total for item in items)
    if not items or listed == 0:
        return Fraction(total)
    share = Fraction(total, listed)  # what each 1.00 of an item really cost after discounts
    spend = Fraction(0)
    for item in items:
        category = rules.categories.get(str(item.object)) or context.categories.get(item.object)
        spend += Fraction(item.total) * share * _category_weight(rules, category)
    return spend


def earn_points(
    total: int,
    subtotal: int,
    items: Sequence[Item],
    rules: RulesDocument = DEFAULT_RULES,
    context: EarnContext | None = None,
) -> int:
    context = context or EarnContext()
    spend = earning_spend(total, subtotal, items, rules, context)
    value = spend / (10**context.decimals) * _fraction(rules.points_per_unit)
    value *= _tier_multiplier(rules, context)
    if context.birthday:
        value *= _fraction(rules.birthday_multiplier)
    return round_points(value, rules.rounding)


def points_for_total(total: int, decimals: int, rules: RulesDocument = DEFAULT_RULES) -> int:
    """Points on a bare total (no items, no multipliers): 1 per whole 1.00 by default."""
    return earn_points(total, total, (), rules, EarnContext(decimals=decimals))


def is_birthday(birthday: str | None, day: dt.date) -> bool:
    """`MM-DD` against a local date; a 29 February birthday is kept on 28 February in other
    years, so it is never skipped."""
    if not birthday:
        return False
    month, _, rest = birthday.partition("-")
    try:
        wanted = (int(month), int(rest))
    except ValueError:
        return False
    if wanted == (2, 29) and not _leap(day.year):
        wanted = (2, 28)
    return (day.month, day.day) == wanted


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def tickets_and_wallet(wallet_before: int, points: int, ticket_price: int) -> tuple[int, int]:
    """Turn a lottery member's points into tickets; the remainder stays in the wallet.

    `tickets * ticket_price + wallet_after == wallet_before + points` always holds; a refund
    that takes the wallet below zero takes back whole tickets (floor division).
    """
    tickets, wallet_after = divmod(wallet_before + points, ticket_price)
    return tickets, wallet_after
