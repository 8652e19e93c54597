"""The POS menu export: MICROS RES CSV in, products and a content hash out."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from sync.catalog import catalog_document, read_menu_export, seconds_until

RES_EXPORT = (
    "Obj Num,Name 1,Family Group,Major Group,Price 1,Price 2,Active\r\n"
    "1001,Espresso,Coffee,Beverages,2.10,2.40,Y\r\n"
    "1002,Caff\u00e8 Latte,Coffee,Beverages,3.50,,Y\r\n"
    "1003,Old Muffin,Bakery,Food,2.00,,N\r\n"
    "x12,Broken,Bakery,Food,1.00,,Y\r\n"
    "1004,Croissant,Bakery,Food,abc,,Y\r\n"
    "1001,Duplicate,Coffee,Beverages,2.10,,Y\r\n"
)


def test_a_res_export_becomes_products_and_bad_rows_are_named() -> None:
    export = read_menu_export(RES_EXPORT)
    assert [p.object_number for p in export.products] == [1001, 1002, 1003]
    latte = export.products[1]
    assert latte.name == "Caff\u00e8 Latte" and latte.prices == ("3.50",)
    assert export.products[0].prices == ("2.10", "2.40")
    assert export.products[2].active is False
    assert [line for line, _ in export.problems] == [5, 6, 7]
    assert "object number" in export.problems[0][1] and "appears twice" in export.problems[2][1]


def test_semicolon_export_with_other_header_names_is_read() -> None:
    text = "MI Obj Num;Name;Fam Grp;Maj Grp;Prc 1\n2001;Tea;Hot;Bev;1,80\n"
    export = read_menu_export(text)
    assert export.products[0].object_number == 2001
    assert export.products[0].prices == ("1.80",) and export.products[0].active
    assert export.products[0].family_group == "Hot"


def test_an_export_without_the_needed_columns_is_refused_whole() -> None:
    export = read_menu_export("Item,Cost\nTea,1.00\n")
    assert export.products == [] and export.problems[0][0] == 1


def test_the_content_hash_ignores_row_order_and_time_but_not_content() -> None:
    one = read_menu_export(RES_EXPORT).products
    first = catalog_document("S001", one)
    second = catalog_document("S001", list(reversed(one)))
    assert first["content_hash"] == second["content_hash"]
    assert str(first["content_hash"]).startswith("sha256:")
    changed = read_menu_export(RES_EXPORT.replace("2.10,2.40", "2.20,2.40")).products
    assert catalog_document("S001", changed)["content_hash"] != first["content_hash"]
    assert [p["object_number"] for p in first["products"]] == [1001, 1002, 1003]


def test_the_daily_push_waits_for_the_next_local_time() -> None:
    paris = ZoneInfo("Europe/Paris")
    # 02:00 UTC is 03:00 in Paris in winter: 04:30 is 1.5 h away.
    now = dt.datetime(2026, 11, 23, 2, 0, tzinfo=dt.UTC)
    assert seconds_until("04:30", now, paris) == 5400
    # Already past today: tomorrow's.
    later = dt.datetime(2026, 11, 23, 4, 0, tzinfo=dt.UTC)
    assert seconds_until("04:30", later, paris) == (24 * 3600) - 1800
