"""Points and lottery tickets for a check: pure, exact integer arithmetic, no I/O.

The earning spend is the check's total after every discount, spread over its items in proportion
to their amounts, so coupons lower the spend that earns once and only once (the subtotal is not
used: the items need not add up to it). Each item's share is
weighted by its category's multiplier (0 for an excluded category); the sum is multiplied by the
points per currency unit, the tier's multiplier and the birthday multiplier, then rounded once,
on its magnitude, so a refund gives back exactly what the same sale earned.

Every multiplier is a decimal, so the exact value is one integer numerator over one integer
denominator; the division happens once, at the rounding. (Fractions give the same results, and
the property tests compare against them, but reduce by gcd at every step: eight times slower.)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache

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


def round_points(numerator: int, denominator: int, rounding: Rounding) -> int:
    """numerator / denominator (denominator > 0) rounded on its magnitude."""
    whole, rest = divmod(abs(numerator), denominator)
    if (rounding == "up" and rest) or (rounding == "half_up" and rest * 2 >= denominator):
        whole += 1
    return -whole if numerator < 0 else whole


@lru_cache(maxsize=256)
def _ratio(value: Decimal) -> tuple[int, int]:
    """A finite decimal as (numerator, denominator), the denominator a power of ten."""
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # multipliers are finite (allow_inf_nan=False)
    numerator = int("".join(map(str, digits)) or "0")
    if sign:
        numerator = -numerator
    if exponent >= 0:
        return numerator * 10**exponent, 1
    return numerator, 10**-exponent


def _tier_multiplier(rules: RulesDocument, context: EarnContext) -> tuple[int, int]:
    for entry in rules.tier_multipliers:
        if entry.tier == context.tier and (
            context.day is None or entry.applies(context.tier, context.day)
        ):
            return _ratio(entry.multiplier)
    return 1, 1


def _category_weight(rules: RulesDocument, category: str | None) -> tuple[int, int]:
    if category is None:
        return 1, 1
    if category in rules.excluded_categories:
        return 0, 1
    multiplier = rules.category_multipliers.get(category)
    return (1, 1) if multiplier is None else _ratio(multiplier)


def earning_spend(
    total: int, subtotal: int, items: Sequence[Item], rules: RulesDocument, context: EarnContext
) -> tuple[int, int]:
    """The spend that earns, in minor units, category weights applied, as (numerator,
    denominator).

    The total is spread over the items in proportion to their amounts (not to the subtotal:
    the items need not add up to it to the cent), so without category rules the spend is the
    total exactly."""
    listed = sum(item.total for item in items)
    if not items or listed == 0:
        return total, 1
    if not rules.categories and not context.categories:
        return total, 1  # every weight is 1: the shares add up to the total
    # sum(item * weight) over one common denominator, then times total / listed.
    weighted, common = 0, 1
    for item in items:
        category = rules.categories.get(str(item.object)) or context.categories.get(item.object)
        num, den = _category_weight(rules, category)
        if den != common:  # powers of ten: the larger one is the common denominator
            if den > common:
                weighted *= den // common
                common = den
            else:
                num *= common // den
        weighted += item.total * num
    if listed < 0:  # a refund: the sign goes to the numerator
        return -total * weighted, -listed * common
    return total * weighted, listed * common


def earn_points(
    total: int,
    subtotal: int,
    items: Sequence[Item],
    rules: RulesDocument = DEFAULT_RULES,
    context: EarnContext | None = None,
) -> int:
    context = context or EarnContext()
    numerator, denominator = earning_spend(total, subtotal, items, rules, context)
    denominator *= 10**context.decimals
    for num, den in (_ratio(rules.points_per_unit), _tier_multiplier(rules, context)):
        numerator *= num
        denominator *= den
    if context.birthday:
        num, den = _ratio(rules.birthday_multiplier)
        numerator *= num
        denominator *= den
    return round_points(numerator, denominator, rules.rounding)


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
