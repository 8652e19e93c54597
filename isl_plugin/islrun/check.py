"""A simulated guest check and the POS configuration it is rung against.

Just enough POS to see what a script does to a check: menu items (with a quantity typed before
the key, and a reference entry when the item asks for one), voids, discounts (open amount, open
percent, preset, and item discounts on the last item), tenders, and the keyboard macros a script
queues with LoadKybdMacro, played after the event as the POS plays them. The detail arrays
(@DTL_TYPE, @DTL_OBJECT, ...) and totals (@TTLDUE, ...) the script reads come from here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Literal

from isl_plugin.islrun.values import KEY_CLEAR, KEY_ENTER, KeyValue

DiscountKind = Literal["amount", "percent", "item"]


class PosError(Exception):
    """The check cannot do what was asked (an object the POS configuration does not have ...)."""


def _amount(typed: str, what: str) -> Decimal:
    try:
        return Decimal(typed)
    except InvalidOperation:
        raise PosError(f"{what}: {typed!r} is not an amount") from None


@dataclass(frozen=True, slots=True)
class MenuItem:
    name: str
    price: Decimal
    reference: bool = False  # asks for a reference entry after the key (the coupon marker)
    family_group: int = 0  # @DTL_FAMGRP
    condiment: bool = False  # @DTL_IS_COND


@dataclass(frozen=True, slots=True)
class Discount:
    """`amount`: money off; `percent`: percent of the items; `item`: percent of the last item.
    With no `value` an amount or percent discount is open: the amount is typed (MakeKeys)."""

    name: str
    kind: DiscountKind
    value: Decimal | None = None


@dataclass(frozen=True, slots=True)
class KeyTypes:
    """LoadKybdMacro key types; the numbers differ between systems (reference notes 2.5)."""

    menu_item: int = 3
    discount: int = 5
    tender: int = 9


@dataclass
class PosConfig:
    menu: dict[int, MenuItem] = field(default_factory=dict)
    discounts: dict[int, Discount] = field(default_factory=dict)
    tenders: dict[int, str] = field(default_factory=lambda: {1: "Cash"})
    key_types: KeyTypes = field(default_factory=KeyTypes)
    decimals: int = 2


@dataclass
class Detail:
    """One line of the check; `type` is M (menu item), D, T, R (reference), S."""

    type: str
    object: int
    name: str
    qty: int
    total: Decimal
    void: bool = False
    seat: int = 0  # @DTL_SEAT
    condiment: bool = False
    family_group: int = 0

    @property
    def status(self) -> str:
        """@DTL_STATUS: hex digits, bit 1 the high bit of the first; bit 5 is set for a void."""
        bits = 1 << (64 - 5) if self.void else 0
        return f"{bits:016X}"

    def describe(self) -> str:
        mark = "VOID " if self.void else ""
        if self.type == "R":
            return f"{mark}R  reference {self.name!r}"
        if self.type == "M":
            return f"{mark}M  {self.qty} x {self.object} {self.name}  {self.total}"
        return f"{mark}{self.type}  {self.object} {self.name}  {self.total}"


@dataclass
class MacroResult:
    changes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class SimCheck:
    def __init__(self, number: int, pos: PosConfig, opened_at: dt.datetime) -> None:
        self.number = number
        self.pos = pos
        self.opened_at = opened_at
        self.details: list[Detail] = []
        self.info_lines: list[str] = []
        self.closed = False
        self.cancelled = False  # closed by a transaction cancel, not a tender

    # ---- money ---------------------------------------------------------------------------------

    def money(self, value: Decimal | int | str) -> Decimal:
        quantum = Decimal(1).scaleb(-self.pos.decimals)
        return Decimal(value).quantize(quantum, rounding=ROUND_HALF_UP)

    def _sum(self, kind: str) -> Decimal:
        return self.money(sum((d.total for d in self.details if d.type == kind and not d.void), 0))

    @property
    def subtotal(self) -> Decimal:
        return self._sum("M")

    @property
    def discounts(self) -> Decimal:
        return self._sum("D")

    @property
    def service(self) -> Decimal:
        return self._sum("S")

    @property
    def tendered(self) -> Decimal:
        return self._sum("T")

    @property
    def total(self) -> Decimal:
        return self.money(self.subtotal + self.discounts + self.service)

    @property
    def due(self) -> Decimal:
        return self.money(self.total - self.tendered)

    # ---- ringing -------------------------------------------------------------------------------

    def _open(self) -> None:
        if self.closed:
            raise PosError(f"check {self.number} is closed")

    def ring(self, obj: int, qty: int = 1, seat: int = 0) -> Detail:
        self._open()
        item = self.pos.menu.get(obj)
        if item is None:
            raise PosError(f"menu item {obj} is not in the POS configuration (pos.menu)")
        detail = Detail(
            "M",
            obj,
            item.name,
            qty,
            self.money(item.price * qty),
            seat=seat,
            condiment=item.condiment,
            family_group=item.family_group,
        )
        self.details.append(detail)
        return detail

    def reference(self, text: str) -> Detail:
        detail = Detail("R", 0, text, 0, self.money(0))
        self.details.append(detail)
        return detail

    def void_line(self, line: int) -> Detail:
        self._open()
        if not 1 <= line <= len(self.details):
            raise PosError(f"check {self.number} has no line {line}")
        detail = self.details[line - 1]
        if detail.void:
            raise PosError(f"line {line} is already void")
        detail.void = True
        # A reference entry belongs to the item before it: voiding the item voids it too.
        if detail.type == "M" and line < len(self.details) and self.details[line].type == "R":
            self.details[line].void = True
        return detail

    def void_last(self, obj: int, kind: str = "") -> Detail:
        for line in range(len(self.details), 0, -1):
            detail = self.details[line - 1]
            if detail.object == obj and not detail.void and (not kind or detail.type == kind):
                return self.void_line(line)
        raise PosError(f"no line with object {obj} to void")

    def discount(self, obj: int, typed: str | None) -> Detail:
        self._open()
        definition = self.pos.discounts.get(obj)
        if definition is None:
            raise PosError(f"discount {obj} is not in the POS configuration (pos.discounts)")
        value = definition.value
        if value is None and definition.kind != "item":
            if not typed:
                raise PosError(f"open discount {obj} needs an amount typed before ENTER")
            value = _amount(typed, f"discount {obj}")
        if definition.kind == "amount":
            assert value is not None
            amount = self.money(value)
        elif definition.kind == "percent":
            assert value is not None
            amount = self.money(self.subtotal * value / 100)
        else:
            last = next((d for d in reversed(self.details) if d.type == "M" and not d.void), None)
            if last is None:
                raise PosError(f"item discount {obj} with no item on the check")
            amount = self.money(last.total * (value if value is not None else 100) / 100)
        detail = Detail("D", obj, definition.name, 1, -amount)
        self.details.append(detail)
        return detail

    def tender(self, obj: int, amount: Decimal | None = None) -> Detail:
        self._open()
        name = self.pos.tenders.get(obj)
        if name is None:
            raise PosError(f"tender {obj} is not in the POS configuration (pos.tenders)")
        detail = Detail("T", obj, name, 1, self.money(self.due if amount is None else amount))
        self.details.append(detail)
        return detail

    # ---- keyboard macros -----------------------------------------------------------------------

    def play(self, keys: Sequence[KeyValue | str]) -> MacroResult:
        """Play one LoadKybdMacro as the POS would after the event; PosError if a key fails."""
        result = MacroResult()
        types = self.pos.key_types
        typed = ""
        waiting: tuple[str, int] | None = None  # ("discount", obj) or ("reference", 0)
        for key in keys:
            if isinstance(key, str):
                typed += key
                continue
            if key == KEY_CLEAR:
                typed, waiting = "", None
            elif key == KEY_ENTER:
                if waiting is not None and waiting[0] == "discount":
                    result.changes.append(self.discount(waiting[1], typed).describe())
                elif waiting is not None:
                    result.changes.append(self.reference(typed).describe())
                elif typed:
                    result.warnings.append(f"ENTER after {typed!r} with nothing waiting for it")
                typed, waiting = "", None
            elif key.key_type == types.menu_item:
                if waiting is not None:
                    result.warnings.append(f"{waiting[0]} left waiting for ENTER")
                if typed and not typed.isdigit():
                    raise PosError(f"quantity {typed!r} before menu item {key.number}")
                detail = self.ring(key.number, int(typed) if typed else 1)
                result.changes.append(detail.describe())
                typed = ""
                item = self.pos.menu[key.number]
                waiting = ("reference", 0) if item.reference else None
            elif key.key_type == types.discount:
                definition = self.pos.discounts.get(key.number)
                open_discount = (
                    definition is not None
                    and definition.value is None
                    and definition.kind != "item"
                )
                if open_discount and not typed:
                    waiting = ("discount", key.number)
                else:
                    result.changes.append(self.discount(key.number, typed or None).describe())
                    typed, waiting = "", None
            elif key.key_type == types.tender:
                amount = _amount(typed, f"tender {key.number}") if typed else None
                detail = self.tender(key.number, amount)
                result.changes.append(detail.describe())
                typed, waiting = "", None
            else:
                result.warnings.append(f"{key} is not simulated: ignored")
        if waiting is not None:
            result.warnings.append(f"macro ended while a {waiting[0]} waited for ENTER")
        return result
