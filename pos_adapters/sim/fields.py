"""The rules a request's fields are checked by: a field's text in, a value or a BadRequest out.

A command class (`messages.py`) lists its fields as rules, in wire order, and calls them in the
order its checks run. Every refusal is `ERROR BAD_FIELD` with a message that starts with the
field's name (`business_date: not a real date`), at most 80 characters. Pure, like the codec.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from gateway.domain.models import Item
from gateway.domain.money import parse_amount
from gateway.domain.reasons import Reason, Refused

MAX_ITEMS = 500
MAX_TEXT = 512

_DIGITS = re.compile(r"[0-9]{1,9}")
_QTY = re.compile(r"-?[0-9]{1,6}(?:\.[0-9]{1,3})?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_YYYYMMDD = re.compile(r"[0-9]{8}")

T = TypeVar("T")


class BadRequest(Refused):
    """A request that does not parse; answered `ERROR <reason> <message>`."""


@dataclass(frozen=True, slots=True)
class ParseContext:
    decimals: int  # of the store currency
    latest_business_date: Callable[[], dt.date]
    # Told of each business date refused as later than tomorrow: a clock that is behind the
    # registers' refuses every check, so the service counts it and raises an alarm.
    future_business_date: Callable[[dt.date], None] | None = None


def bad_field(name: str, why: str) -> BadRequest:
    return BadRequest(Reason.BAD_FIELD, f"{name}: {why}"[:80])


class Rule(Generic[T]):
    """One request field: its name, and how its text becomes a value (or `BadRequest`)."""

    __slots__ = ()
    name: str

    def parse(self, text: str, ctx: ParseContext) -> T:
        """The field's value; raises BadRequest(BAD_FIELD) when `text` breaks the rule."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Digits(Rule[int]):
    """Decimal digits (at most 9) whose number lies in low..high."""

    name: str
    low: int
    high: int

    def parse(self, text: str, ctx: ParseContext) -> int:
        if not _DIGITS.fullmatch(text):
            raise bad_field(self.name, "digits expected")
        number = int(text)
        if not self.low <= number <= self.high:
            raise bad_field(self.name, f"must be {self.low}..{self.high}")
        return number


def _text(name: str, text: str, *, required: bool, limit: int) -> str:
    if _CONTROL.search(text):
        raise bad_field(name, "control character")
    if required and not text:
        raise bad_field(name, "empty")
    if len(text) > limit:
        raise bad_field(name, f"longer than {limit}")
    return text


@dataclass(frozen=True, slots=True)
class Text(Rule[str]):
    """Text without control characters, at most `limit` characters; empty only if not required."""

    name: str
    limit: int = MAX_TEXT
    required: bool = True

    def parse(self, text: str, ctx: ParseContext) -> str:
        return _text(self.name, text, required=self.required, limit=self.limit)


@dataclass(frozen=True, slots=True)
class OptionalRef(Rule[str | None]):
    """A reference an earlier reply gave (a member ref), or empty for none (None)."""

    name: str
    limit: int = 64

    def parse(self, text: str, ctx: ParseContext) -> str | None:
        return _text(self.name, text, required=False, limit=self.limit) or None


@dataclass(frozen=True, slots=True)
class Choice(Rule[str]):
    """One of a few words, exactly."""

    name: str
    choices: tuple[str, ...]
    expected: str  # the refusal's text: "Y or N expected"

    def parse(self, text: str, ctx: ParseContext) -> str:
        if text not in self.choices:
            raise bad_field(self.name, self.expected)
        return text


@dataclass(frozen=True, slots=True)
class Amount(Rule[int]):
    """Money, `-?digits[.digits]` with at most the store currency's decimals, in minor units."""

    name: str

    def parse(self, text: str, ctx: ParseContext) -> int:
        try:
            return parse_amount(text, ctx.decimals)
        except ValueError as error:
            raise bad_field(self.name, str(error)) from None


@dataclass(frozen=True, slots=True)
class BusinessDate(Rule[dt.date]):
    """`YYYYMMDD`, a real date, no later than tomorrow in the store's time zone."""

    name: str

    def parse(self, text: str, ctx: ParseContext) -> dt.date:
        if not _YYYYMMDD.fullmatch(text):
            raise bad_field(self.name, "YYYYMMDD expected")
        try:
            date = dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
        except ValueError:
            raise bad_field(self.name, "not a real date") from None
        if date > ctx.latest_business_date():
            if ctx.future_business_date is not None:
                ctx.future_business_date(date)
            raise bad_field(self.name, "later than tomorrow")
        return date


def parse_items(text: str, decimals: int) -> tuple[Item, ...]:
    """`qty*object*total;...` -> items. Raises ValueError naming the entry that is wrong."""
    if not text:
        return ()
    entries = text.split(";")
    if len(entries) > MAX_ITEMS:
        raise ValueError(f"more than {MAX_ITEMS} items")
    items = []
    for number, entry in enumerate(entries, start=1):
        parts = entry.split("*")
        if len(parts) != 3:
            raise ValueError(f"item {number}: qty*object*total expected")
        qty, obj, total = parts
        if not _QTY.fullmatch(qty):
            raise ValueError(f"item {number}: bad quantity")
        if not _DIGITS.fullmatch(obj):
            raise ValueError(f"item {number}: bad object number")
        items.append(Item(parse_amount(qty, 3), int(obj), parse_amount(total, decimals)))
    return tuple(items)


@dataclass(frozen=True, slots=True)
class Items(Rule[tuple[Item, ...]]):
    """Entries `qty*object*total` joined by `;` (at most 500); may be empty."""

    name: str
    limit: int = 60000

    def parse(self, text: str, ctx: ParseContext) -> tuple[Item, ...]:
        text = _text(self.name, text, required=False, limit=self.limit)
        try:
            return parse_items(text, ctx.decimals)
        except ValueError as error:
            raise bad_field(self.name, str(error)) from None


@dataclass(frozen=True, slots=True)
class RefList(Rule[tuple[str, ...]]):
    """References joined by `;`; may be empty (empty entries are skipped)."""

    name: str
    limit: int = 4096

    def parse(self, text: str, ctx: ParseContext) -> tuple[str, ...]:
        text = _text(self.name, text, required=False, limit=self.limit)
        return tuple(ref for ref in text.split(";") if ref) if text else ()


# Fields several commands share.
WSID = Digits("wsid", 1, 9999)
RVC = Digits("rvc", 0, 999_999_999)
CHECK = Digits("check", 1, 99_999_999)
OPEN_CHECK = Digits("check", 0, 99_999_999)  # 0: the register has not opened a check yet
MEMBER_REF = OptionalRef("member_ref")
SUBTOTAL = Amount("subtotal")
