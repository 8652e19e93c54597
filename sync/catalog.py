"""The POS menu -> central: a MICROS RES menu-item export (CSV) translated to products, sent
once a day at a set time and on `edge-gateway catalog push`, and only when its content changed.

Accepted columns (header names are matched without case, spaces or underscores; the first of each
row of aliases found is used): object number (`Obj Num`, `Object Number`, `MI Obj Num`), name
(`Name`, `Name 1`, `First Name`), family group (`Family Group`, `Fam Grp`, `FamGrp Obj Num`),
major group (`Major Group`, `Maj Grp`, `MajGrp Obj Num`), prices (`Price`, `Price 1` .. `Price 10`,
`Prc 1` ...), active (`Active`, `Is Active`, `Enabled`; Y/N, 1/0, true/false; absent = active).
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import hashlib
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import structlog

from gateway.store.store import Store, utc_stamp
from sync.client import CentralClient

log = structlog.get_logger("sync.catalog")

HASH_KEY = "catalog_hash"
PUSHED_KEY = "catalog_pushed_at"

_ALIASES: dict[str, tuple[str, ...]] = {
    "object_number": ("objnum", "objectnumber", "miobjnum", "menuitemobjnum", "object"),
    "name": ("name", "name1", "firstname", "menuitemname", "itemname"),
    "family_group": ("familygroup", "famgrp", "famgrpobjnum", "familygroupobjnum"),
    "major_group": ("majorgroup", "majgrp", "majgrpobjnum", "majorgroupobjnum"),
    "active": ("active", "isactive", "enabled"),
}
_PRICE = re.compile(r"(price|prc)(\d{0,2})")
_TRUE = {"y", "yes", "1", "true", "t", "x", "active"}
_FALSE = {"n", "no", "0", "false", "f", "", "inactive"}


@dataclass(frozen=True, slots=True)
class Product:
    object_number: int
    name: str
    family_group: str
    major_group: str
    prices: tuple[str, ...]
    active: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "object_number": self.object_number,
            "name": self.name,
            "family_group": self.family_group,
            "major_group": self.major_group,
            "prices": list(self.prices),
            "active": self.active,
        }


@dataclass
class MenuExport:
    products: list[Product] = field(default_factory=list)
    problems: list[tuple[int, str]] = field(default_factory=list)  # (line, reason)


def _key(header: str) -> str:
    return re.sub(r"[\s_\-./]", "", header.strip().lower())


def _price(text: str) -> str | None:
    text = text.strip().replace(",", ".")
    if not text:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"price {text[:20]!r} is not a number") from None
    return f"{value:.2f}"


def read_menu_export(text: str) -> MenuExport:
    """Parse the CSV text of a menu-item export. Bad rows are reported and skipped."""
    export = MenuExport()
    sample = text[:4096]
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    rows = csv.reader(io.StringIO(text), dialect)
    header = next(rows, None)
    if header is None:
        export.problems.append((1, "empty file"))
        return export
    keys = [_key(h) for h in header]
    columns: dict[str, int] = {}
    for name, aliases in _ALIASES.items():
        for alias in aliases:
            if alias in keys:
                columns[name] = keys.index(alias)
                break
    prices = sorted(
        ((int(m.group(2) or 0), i) for i, k in enumerate(keys) if (m := _PRICE.fullmatch(k))),
    )
    if "object_number" not in columns or "name" not in columns:
        export.problems.append((1, "no object number or name column in the header"))
        return export
    seen: set[int] = set()
    for line, row in enumerate(rows, start=2):
        if not any(cell.strip() for cell in row):
            continue
        try:

            def cell(name: str, row: list[str] = row) -> str:
                return row[columns[name]].strip() if name in columns else ""

            number_text = cell("object_number")
            if not number_text.isdigit():
                raise ValueError(f"object number {number_text[:20]!r} is not a number")
            number = int(number_text)
            if number in seen:
                raise ValueError(f"object number {number} appears twice")
            active_text = cell("active").lower() if "active" in columns else "y"
            if active_text not in _TRUE | _FALSE:
                raise ValueError(f"active {active_text[:10]!r} is not Y/N")
            product = Product(
                object_number=number,
                name=cell("name"),
                family_group=cell("family_group"),
                major_group=cell("major_group"),
                prices=tuple(
                    p for _, i in prices if i < len(row) and (p := _price(row[i])) is not None
                ),
                active=active_text in _TRUE,
            )
        except (ValueError, IndexError) as error:
            export.problems.append((line, str(error)))
            continue
        seen.add(number)
        export.products.append(product)
    return export


def catalog_document(store_id: str, products: Sequence[Product]) -> dict[str, Any]:
    """The catalog central receives; the hash covers the products only, not the time."""
    ordered = sorted(products, key=lambda p: p.object_number)
    body = [p.as_json() for p in ordered]
    digest = hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    ).hexdigest()
    return {
        "store_id": store_id,
        "generated_at": utc_stamp(dt.datetime.now(dt.UTC)),
        "content_hash": f"sha256:{digest}",
        "products": body,
    }


def product_rows(products: Sequence[Product]) -> list[tuple[int, str, str, str, bool]]:
    """The products as the store keeps them (their family group is their category)."""
    return [(p.object_number, p.name, p.family_group, p.major_group, p.active) for p in products]


@dataclass
class PushResult:
    sent: bool
    content_hash: str
    products: int
    problems: list[tuple[int, str]]


async def push_catalog(
    store: Store,
    client: CentralClient,
    export_file: Path,
    *,
    encoding: str = "cp1252",
    force: bool = False,
) -> PushResult:
    """Read the export and send it when its content changed since the last successful push."""
    raw = await asyncio.to_thread(export_file.read_bytes)
    text = raw.decode(encoding, errors="replace")
    export = read_menu_export(text)
    await store.replace_products(product_rows(export.products))
    document = catalog_document(client.store_id, export.products)
    digest = str(document["content_hash"])
    if export.problems:
        log.warning("catalog_rows_skipped", count=len(export.problems), first=export.problems[0])
    if not force and store.get_state(HASH_KEY) == digest:
        return PushResult(False, digest, len(export.products), export.problems)
    await client.put_catalog(document)
    await store.set_state(HASH_KEY, digest)
    await store.set_state(PUSHED_KEY, utc_stamp(dt.datetime.now(dt.UTC)))
    log.info("catalog_pushed", products=len(export.products), content_hash=digest)
    return PushResult(True, digest, len(export.products), export.problems)


def seconds_until(clock_time: str, now: dt.datetime, tz: dt.tzinfo) -> float:
    """Seconds from `now` to the next `HH:MM` in the store's time zone."""
    hour, minute = (int(part) for part in clock_time.split(":"))
    local = now.astimezone(tz)
    target = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if target <= local:
        target += dt.timedelta(days=1)
    return (target - local).total_seconds()
