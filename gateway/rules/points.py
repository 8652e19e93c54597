"""Points and lottery tickets for a check total: pure integer arithmetic, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Rounding = Literal["down", "half_up", "up"]


@dataclass(frozen=True, slots=True)
class EarnRules:
    """The earn part of a rules document; the defaults are DESIGN.md section 6's."""

    version: str = "default"
    points_per_unit: int = 1  # points per whole currency unit of the total
    rounding: Rounding = "down"  # applied to the magnitude, so refunds mirror sales
    ticket_price: int = 50


DEFAULT_RULES = EarnRules()


def points_for_total(total: int, decimals: int, rules: EarnRules = DEFAULT_RULES) -> int:
    """Points earned on a total in minor units; a negative total gives back symmetrically.

    Rounding works on the magnitude so that a refund of a sale returns exactly what the sale
    earned (-10.50 gives -10 with `down`), never more.
    """
    scale: int = 10**decimals
    whole, rest = divmod(abs(total) * rules.points_per_unit, scale)
    if (rules.rounding == "up" and rest) or (rules.rounding == "half_up" and rest * 2 >= scale):
        whole += 1
    return -whole if total < 0 else whole


def tickets_and_wallet(wallet_before: int, points: int, ticket_price: int) -> tuple[int, int]:
    """Turn a lottery member's points into tickets; the remainder stays in the wallet.

    `tickets * ticket_price + wallet_after == wallet_before + points` always holds; a refund
    that takes the wallet below zero takes back whole tickets (floor division).
    """
    tickets, wallet_after = divmod(wallet_before + points, ticket_price)
    return tickets, wallet_after
