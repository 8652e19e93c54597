"""ISL values and types: A (text), N (integer), $ (currency), Key; conversions and Format specs.

Conversions follow what real scripts rely on (a numeric text assigned to an N variable, a number
formatted into text) and refuse what would be a guess: `+` between text and a number is an error,
because scripts in the field use it both ways and ISL's rule is not public.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Literal

TypeKind = Literal["A", "N", "$", "KEY"]


@dataclass(frozen=True, slots=True)
class KeyValue:
    """A POS key: `Key(type, object)` or a named key such as @KEY_ENTER (type 0, name set)."""

    key_type: int
    number: int
    name: str = ""

    def __str__(self) -> str:
        return self.name or f"Key({self.key_type}, {self.number})"


KEY_ENTER = KeyValue(0, 0, "ENTER")
KEY_CLEAR = KeyValue(0, 0, "CLEAR")


def named_key(name: str) -> KeyValue:
    """@KEY_<NAME>: a key of the keyboard by name (ENTER, CLEAR, HOME, CANCEL ...)."""
    return KeyValue(0, 0, name.upper())


Value = str | int | Decimal | KeyValue


@dataclass(frozen=True, slots=True)
class IslType:
    kind: TypeKind
    size: int | None = None  # A20 -> 20; None: no declared length

    def __str__(self) -> str:
        if self.kind == "KEY":
            return "Key"
        return f"{self.kind}{self.size or ''}"

    def default(self) -> Value:
        if self.kind == "A":
            return ""
        if self.kind == "N":
            return 0
        if self.kind == "$":
            return Decimal(0)
        return KeyValue(0, 0, "NONE")


class ConversionError(ValueError):
    """A value that cannot become the type asked for (a key into a number, say)."""


_LEADING_INT = re.compile(r"\s*([-+]?\d+)")
_LEADING_DEC = re.compile(r"\s*([-+]?\d*\.?\d+|[-+]?\d+\.)")


def to_number(value: Value) -> int | Decimal:
    """The number a value stands for; text is read like atoi/atof (leading digits, else 0)."""
    if isinstance(value, KeyValue):
        raise ConversionError(f"{value} is a key, not a number")
    if isinstance(value, int | Decimal):
        return value
    match = _LEADING_DEC.match(value)
    if match is None:
        return 0
    text = match[1]
    if "." not in text:
        return int(text)
    try:
        return Decimal(text)
    except InvalidOperation:  # pragma: no cover - the pattern admits only decimal numbers
        return 0


def to_int(value: Value) -> int:
    number = to_number(value)
    return int(number)  # Decimal -> int truncates toward zero, as an N variable does


def to_money(value: Value, decimals: int) -> Decimal:
    number = to_number(value)
    return Decimal(number).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)


def to_text(value: Value, decimals: int) -> str:
    if isinstance(value, KeyValue):
        raise ConversionError(f"{value} is a key, not text")
    if isinstance(value, Decimal):
        return f"{value.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP):f}"
    return str(value)


def convert(value: Value, target: IslType, decimals: int) -> tuple[Value, bool]:
    """`value` as `target` holds it, and whether text was cut to the declared length."""
    if target.kind == "KEY":
        if not isinstance(value, KeyValue):
            raise ConversionError(f"a Key variable cannot hold {value!r}")
        return value, False
    if target.kind == "N":
        return to_int(value), False
    if target.kind == "$":
        return to_money(value, decimals), False
    text = to_text(value, decimals)
    if target.size is not None and len(text) > target.size:
        return text[: target.size], True
    return text, False


def is_true(value: Value) -> bool:
    if isinstance(value, KeyValue):
        raise ConversionError(f"{value} is a key, not a condition")
    return to_number(value) != 0


# {02} {>4} {<10} {=8} {04}: justification, zero fill, width. Other specs (such as the {m2, *}
# of DisplayMSInput) are outside the subset.
_SPEC = re.compile(r"\s*([<>=]?)(0?)(\d+)\s*")


def parse_spec(spec: str) -> tuple[str, bool, int] | None:
    match = _SPEC.fullmatch(spec)
    if match is None:
        return None
    return match[1], match[2] == "0", int(match[3])


def apply_spec(text: str, spec: tuple[str, bool, int], numeric: bool) -> str:
    """Pad `text` to the spec's width; longer text is kept whole (ISL's cut rule is not known)."""
    justify, zero, width = spec
    if zero:
        sign = "-" if text.startswith("-") else ""
        digits = text[1:] if sign else text
        return sign + digits.rjust(width - len(sign), "0")
    if justify == "=":
        return text.center(width)
    if justify == ">" or (not justify and numeric):
        return text.rjust(width)
    return text.ljust(width)
