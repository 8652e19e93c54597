"""Money at the edges: decimal strings in, integer minor units inside, decimal strings out."""

from __future__ import annotations

import re

_AMOUNT = re.compile(r"-?[0-9]{1,12}(?:\.[0-9]{1,6})?")


def parse_amount(text: str, decimals: int) -> int:
    """Parse `12.50` into 1250 (decimals=2). Raises ValueError with a short reason."""
    if not _AMOUNT.fullmatch(text):
        raise ValueError(f"not an amount: {text[:20]!r}")
    negative = text.startswith("-")
    whole, _, frac = text.lstrip("-").partition(".")
    if len(frac) > decimals:
        raise ValueError(f"more than {decimals} decimals: {text[:20]!r}")
    scale: int = 10**decimals
    minor = int(whole) * scale + (int(frac.ljust(decimals, "0")) if decimals else 0)
    return -minor if negative else minor


def format_amount(minor: int, decimals: int) -> str:
    """Format 1250 as `12.50` (decimals=2); no thousands separator, `-` for negatives."""
    sign = "-" if minor < 0 else ""
    scale: int = 10**decimals
    whole, frac = divmod(abs(minor), scale)
    return f"{sign}{whole}.{frac:0{decimals}d}" if decimals else f"{sign}{whole}"


_SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£", "JPY": "¥", "CHF": "CHF", "SEK": "kr",
            "NOK": "kr", "DKK": "kr", "PLN": "zł", "CZK": "Kč", "HUF": "Ft"}  # fmt: skip
# language -> (decimal separator, symbol before the amount)
_STYLES = {"en": (".", True), "de": (",", False), "fr": (",", False), "es": (",", False),
           "it": (",", False), "nl": (",", False), "pt": (",", False), "fi": (",", False),
           "sv": (",", False), "da": (",", False), "nb": (",", False), "pl": (",", False),
           "cs": (",", False), "hu": (",", False)}  # fmt: skip


def format_money(minor: int, decimals: int, currency: str, locale: str = "en") -> str:
    """An amount for a receipt in the store's locale: `5,00 €` (de, fr ...), `€5.00` (en)."""
    separator, before = _STYLES.get(locale.split("_")[0].split("-")[0].lower(), (".", False))
    number = format_amount(minor, decimals).replace(".", separator)
    symbol = _SYMBOLS.get(currency, currency)
    if before and len(symbol) == 1:
        return f"-{symbol}{number[1:]}" if number.startswith("-") else f"{symbol}{number}"
    return f"{number} {symbol}"
