"""The full sync's fast path: member records made into the cache's rows without the `Member`
model (sync/refresher.py `member_record_of`), pages decoded by pydantic's JSON parser
(sync/client.py), and the member upsert's identifiers and pending sums by difference and by page
(gateway/store/cache.py).

The model stays the judge: random records, canonical and not, are given to both, and the fast
path must accept only what the model accepts, store exactly the row the model's member gives, and
leave the rest to the model (same refusals, counted the same way)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from scripted_central import scripted_client

from gateway.domain.models import Member
from gateway.store import cache
from gateway.store.cache import ChangePage, MemberRecord, member_record
from gateway.store.schema import migrate
from gateway.store.store import Store
from sync import refresher
from sync.client import _json_of
from sync.refresher import Refresher, RefresherStats, member_record_of, parse_page

# The records drawn below have the model's fields, each with values of its own in FIELD_VALUES
# and GOOD_VALUES (a field added to the model must be given some: see the test of the fields).
FIELDS = tuple(Member.model_fields)

# ---- the model's verdict, and the fast path's ---------------------------------------------------


class Unstorable(Exception):
    """The model accepts the record but its row cannot be made (a stamp of year 1 with an
    offset, or without one in a zone east of UTC, has no UTC): the page's write failed on it
    before, and still does."""


def by_model(data: Any) -> MemberRecord | None:
    """What the cache stored for `data` before the fast path: None when the model refuses."""
    try:
        model = Member.model_validate(data)
    except ValidationError:
        return None
    try:
        return member_record(model)
    except (OverflowError, ValueError) as error:
        raise Unstorable from error


def stored(record: Member | MemberRecord) -> MemberRecord:
    return member_record(record) if isinstance(record, Member) else record


def same(a: MemberRecord, b: MemberRecord) -> bool:
    return a[0] == b[0] and list(a[1]) == list(b[1])


def check_against_model(data: Any) -> None:
    try:
        expected = by_model(data)
    except Unstorable:
        # left to the model, whose member fails where it failed: in the page's write
        assert member_record_of(data) is None
        page = parse_page([{"kind": "member", "data": data}], RefresherStats())
        assert [type(m) for m in page.members] == [Member]
        with pytest.raises((OverflowError, ValueError)):
            cache._members_job(page.members)
        return
    fast = member_record_of(data)
    if fast is not None:
        assert expected is not None, f"the fast path accepted what the model refuses: {data!r}"
        assert same(fast, expected), (fast, expected)
    stats = RefresherStats()
    page = parse_page([{"kind": "member", "data": data}], stats)
    if expected is None:
        assert (stats.bad_records, stats.members, list(page.members)) == (1, 0, [])
    else:
        assert (stats.bad_records, stats.members) == (0, 1)
        assert same(stored(page.members[0]), expected)


# ---- random member records ----------------------------------------------------------------------

VALID_DAYS = ["01-01", "02-29", "04-30", "12-31", "07-04"]
ZONES = st.sampled_from(["Z", "z", "+00:00", "-00:00", "+02:00", "-05:30", "+23:59", "+0100", ""])


@st.composite
def stamps(draw: st.DrawFn) -> str:
    moment = draw(st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30)))
    digits = draw(st.sampled_from([0, 0, 1, 3, 6, 6, 7]))
    fraction = "" if digits == 0 else "." + f"{moment.microsecond:06d}{'9' * digits}"[:digits]
    separator = draw(st.sampled_from(["T", "T", "T", " ", "t"]))
    text = moment.strftime(f"%Y-%m-%d{separator}%H:%M:%S") + fraction + draw(ZONES)
    return text


def numbers() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.integers(-1000, 100_000),
        st.integers(-(2**62), 2**62),
        st.booleans(),
        st.floats(allow_nan=True),
        st.sampled_from([1.0, -3.0, 2.5]),
        st.from_regex(r"-?[0-9]{1,5}", fullmatch=True),
        st.text(max_size=3),
        st.none(),
    )


def texts() -> st.SearchStrategy[Any]:
    return st.one_of(st.text(max_size=12), st.integers(), st.none(), st.booleans())


FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "member_id": st.one_of(
        st.text(min_size=1, max_size=12),
        st.text(min_size=60, max_size=70),
        st.just(""),
        st.integers(),
        st.none(),
    ),
    "identifiers": st.one_of(
        st.lists(
            st.one_of(
                st.text(min_size=1, max_size=20),
                st.sampled_from(["", "x" * 512, "x" * 513, "é" * 512]),
                st.integers(),
                st.none(),
            ),
            max_size=3,
        ),
        st.lists(st.text(min_size=1, max_size=20), max_size=3),
        st.text(max_size=4),
        st.none(),
    ),
    "display_name": texts(),
    "tier": texts(),
    "birthday": st.one_of(
        st.none(),
        st.just(""),
        st.sampled_from(VALID_DAYS),
        st.from_regex(r"[0-9]{2}-[0-9]{2}", fullmatch=True),
        st.sampled_from(["02-30", "13-01", "00-10", "1-01", "04-31", "12-31 ", "１２-３１"]),
        st.text(max_size=6),
        st.integers(),
    ),
    "flags": st.one_of(
        st.lists(
            st.one_of(st.sampled_from(["minor", "employee", "legal_entity"]), st.text(max_size=5)),
            max_size=3,
        ),
        st.lists(st.one_of(st.text(max_size=3), st.integers(), st.none()), max_size=2),
        st.text(max_size=3),
        st.none(),
    ),
    "earn_mode": st.one_of(
        st.sampled_from(["points", "lottery", "POINTS", "Lottery", ""]), st.integers(), st.none()
    ),
    "lottery_consent": st.one_of(
        st.booleans(),
        st.integers(-1, 2),
        st.sampled_from(["true", "false", "yes", "off", "x", 0.0, 1.0]),
        st.none(),
    ),
    "points_balance": numbers(),
    "wallet_points": numbers(),
    "balance_as_of": st.one_of(
        st.none(),
        stamps(),
        st.sampled_from(
            [
                "2026-02-29T10:00:00Z",
                "2026-11-23T24:00:00Z",
                "2026-11-23T10:00:60Z",
                "2026-11-23T10:00:00+24:00",
                "0001-01-01T00:00:00Z",
                "0001-01-01T00:00:00+01:00",
                "0000-01-01T00:00:00Z",
                "2026-11-23",
                "2026-11-23T10:00Z",
                "1700000000",
                "",
            ]
        ),
        st.text(max_size=25),
        st.integers(0, 2**40),
        st.floats(allow_nan=False),
    ),
}

JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=8),
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
EXTRA_KEYS = st.one_of(
    st.text(max_size=10), st.sampled_from(["lottery_eligible", "model_config", "tickets_month"])
).filter(lambda k: k not in FIELDS)


# Values central writes, field by field (most records are of these).
GOOD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "member_id": st.text(min_size=1, max_size=64),
    "identifiers": st.lists(st.text(min_size=1, max_size=30), max_size=3),
    "display_name": st.text(max_size=12),
    "tier": st.text(max_size=6),
    "birthday": st.one_of(st.none(), st.sampled_from(VALID_DAYS)),
    "flags": st.lists(st.sampled_from(["minor", "employee", "legal_entity"]), max_size=2),
    "earn_mode": st.sampled_from(["points", "lottery"]),
    "lottery_consent": st.booleans(),
    "points_balance": st.integers(-(10**6), 10**6),
    "wallet_points": st.integers(0, 10**6),
    "balance_as_of": st.one_of(st.none(), stamps()),
}


@st.composite
def member_data(draw: st.DrawFn) -> dict[str, Any]:
    """A member record as central might send it: each field present or not, of central's
    usual values or of any other (of its type or not); the model's order or another; extra
    keys or none."""
    present = [name for name in FIELDS if draw(st.integers(0, 15)) > 0]
    if draw(st.booleans()):
        present = draw(st.permutations(present))
    data = {
        name: draw(GOOD_VALUES[name] if draw(st.integers(0, 15)) > 0 else FIELD_VALUES[name])
        for name in present
    }
    extras = draw(st.dictionaries(EXTRA_KEYS, JSON_VALUES, max_size=3))
    if extras and draw(st.booleans()):
        data = {**extras, **data}
    else:
        data.update(extras)
    return data


@st.composite
def central_members(draw: st.DrawFn) -> dict[str, Any]:
    """A member record as central writes it: every field, of its type, in the model's order."""
    return {
        "member_id": draw(st.text(min_size=1, max_size=64)),
        "identifiers": draw(st.lists(st.text(min_size=1, max_size=40), max_size=3)),
        "display_name": draw(st.text(max_size=20)),
        "tier": draw(st.sampled_from(["", "BASIC", "GOLD"])),
        "birthday": draw(st.one_of(st.none(), st.sampled_from(VALID_DAYS))),
        "flags": draw(st.lists(st.sampled_from(["minor", "employee", "legal_entity"]))),
        "earn_mode": draw(st.sampled_from(["points", "lottery"])),
        "lottery_consent": draw(st.booleans()),
        "points_balance": draw(st.integers(-(10**9), 10**9)),
        "wallet_points": draw(st.integers(0, 10**6)),
        "balance_as_of": draw(
            st.one_of(
                st.none(),
                st.datetimes(
                    min_value=dt.datetime(2000, 1, 1),
                    max_value=dt.datetime(2100, 1, 1),
                    timezones=st.just(dt.UTC),
                ).map(lambda d: d.isoformat().replace("+00:00", "Z")),
            )
        ),
    }


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(member_data())
def test_the_fast_path_accepts_refuses_and_stores_as_the_model_does(data: dict[str, Any]) -> None:
    check_against_model(data)


@settings(max_examples=500, deadline=None)
@given(central_members(), st.dictionaries(EXTRA_KEYS, JSON_VALUES, max_size=2))
def test_centrals_own_records_take_the_fast_path_and_store_what_the_model_stores(
    data: dict[str, Any], extras: dict[str, Any]
) -> None:
    data = {**data, **extras}
    fast = member_record_of(data)
    assert fast is not None, data
    expected = by_model(data)
    assert expected is not None and same(fast, expected)


EDGE_RECORDS: list[Any] = [
    # refused by the model: refused by parse_page, counted as a bad record
    {},
    {"member_id": ""},
    {"member_id": "M" * 65},
    {"member_id": 7},
    {"member_id": None},
    {"member_id": "M1", "identifiers": [""]},
    {"member_id": "M1", "identifiers": ["x" * 513]},
    {"member_id": "M1", "identifiers": "6001"},
    {"member_id": "M1", "identifiers": None},
    {"member_id": "M1", "identifiers": [6001]},
    {"member_id": "M1", "birthday": "02-30"},
    {"member_id": "M1", "birthday": "13-01"},
    {"member_id": "M1", "birthday": "4-17"},
    {"member_id": "M1", "birthday": 417},
    {"member_id": "M1", "flags": "minor"},
    {"member_id": "M1", "flags": [1]},
    {"member_id": "M1", "earn_mode": "POINTS"},
    {"member_id": "M1", "earn_mode": None},
    {"member_id": "M1", "lottery_consent": "maybe"},
    {"member_id": "M1", "lottery_consent": None},
    {"member_id": "M1", "points_balance": "many"},
    {"member_id": "M1", "points_balance": 2.5},
    {"member_id": "M1", "wallet_points": None},
    {"member_id": "M1", "display_name": None},
    {"member_id": "M1", "tier": 3},
    {"member_id": "M1", "balance_as_of": "2026-02-29T10:00:00Z"},
    {"member_id": "M1", "balance_as_of": "yesterday"},
    {"member_id": "M1", "balance_as_of": "2026-11-23T24:00:00Z"},
    "M1",
    None,
    ["M1"],
    # accepted by the model, which converts them: left to it by the fast path
    {"member_id": "M1", "points_balance": "120", "wallet_points": 3.0},
    {"member_id": "M1", "points_balance": True},
    {"member_id": "M1", "lottery_consent": 1},
    {"member_id": "M1", "lottery_consent": "yes"},
    {"member_id": "M1", "balance_as_of": "2026-11-23 10:00:00Z"},
    {"member_id": "M1", "balance_as_of": "2026-11-23T10:00:00"},
    {"member_id": "M1", "balance_as_of": "2026-11-23T10:00:00.1234567Z"},
    {"member_id": "M1", "balance_as_of": "2026-11-23"},
    {"member_id": "M1", "balance_as_of": 1_700_000_000},
    # accepted by the model, and failing the page's write (as it did): left to the model
    {"member_id": "M1", "balance_as_of": "0001-01-01T00:00:00+01:00"},
    # accepted by both: spelled otherwise than the model writes them back
    {"member_id": "M1", "birthday": ""},
    {"member_id": "M1", "balance_as_of": "2026-11-23T10:00:00+00:00"},
    {"member_id": "M1", "balance_as_of": "2026-11-23T10:00:00-00:00"},
    {"member_id": "M1", "balance_as_of": "2026-11-23T10:00:00.1Z"},
    {"member_id": "M1", "balance_as_of": "2026-11-23T10:00:00.000000Z"},
    {"member_id": "M1", "balance_as_of": "2026-11-23T10:00:00+02:00"},
    {"balance_as_of": None, "member_id": "M1", "flags": ["minor"], "birthday": "02-29"},
    # extra keys: kept in the record, in the order they came, after the model's fields
    {"member_id": "M1", "tickets_month": "2026-11", "tickets_this_month": 3, "z": [1.5, None]},
    {"zz": {"a": "é"}, "member_id": "M1", "nan": math.nan, "inf": [math.inf]},
    {
        "member_id": "M1",
        "identifiers": ["x" * 512],
        "display_name": "Ann K.",
        "lottery_eligible": 1,
    },
    {"member_id": "M" * 64, "identifiers": ["é" * 512]},
]


@pytest.mark.parametrize("data", EDGE_RECORDS, ids=range(len(EDGE_RECORDS)))
def test_edge_records_are_decided_as_the_model_decides(data: Any) -> None:
    check_against_model(data)


def storable(data: Any) -> bool:
    try:
        by_model(data)
    except Unstorable:
        return False
    return True


def test_a_record_the_model_refuses_is_refused_and_counted_once_per_record() -> None:
    refused = [r for r in EDGE_RECORDS if storable(r) and by_model(r) is None]
    good = {"member_id": "OK", "identifiers": ["C-OK"]}
    changes = [{"kind": "member", "data": r} for r in refused] + [{"kind": "member", "data": good}]
    stats = RefresherStats()
    page = parse_page(changes, stats)
    assert stats.bad_records == len(refused) and stats.members == 1
    assert [stored(m)[0][0] for m in page.members] == ["OK"]


def test_the_canonical_record_takes_the_fast_path_with_its_text_as_sent() -> None:
    data = {
        "member_id": "M1",
        "identifiers": ["6001000000000001", "QR-7f3a"],
        "display_name": "Ann K.",
        "tier": "GOLD",
        "birthday": "04-17",
        "flags": [],
        "earn_mode": "points",
        "lottery_consent": False,
        "points_balance": 120,
        "wallet_points": 0,
        "balance_as_of": "2026-11-23T10:00:00Z",
    }
    fast = member_record_of(data)
    assert fast is not None
    row, identifiers = fast
    assert row[:10] == (
        "M1",
        "Ann K.",
        "GOLD",
        "04-17",
        "[]",
        "points",
        0,
        120,
        0,
        "2026-11-23T10:00:00.000000Z",
    )
    assert json.loads(row[10]) == data and list(identifiers) == data["identifiers"]


def test_the_member_model_has_the_fields_the_fast_path_reads_in_its_order() -> None:
    # member_record_of unpacks the fields by position: a new field must be added there too
    # (until it is, every record goes through the model).
    assert tuple(Member.model_fields) == refresher._FIELDS
    assert refresher._FAST
    # and the records drawn here give each of them values, in the model's order
    assert FIELDS == tuple(FIELD_VALUES) == tuple(GOOD_VALUES)


def test_later_records_of_a_member_win_in_a_page_on_both_paths() -> None:
    changes = [
        {"kind": "member", "data": {"member_id": "M1", "tier": "A"}},
        {"kind": "member", "data": {"member_id": "M2", "points_balance": "5"}},  # the model's
        {"kind": "member", "data": {"member_id": "M1", "tier": "B"}},
        {"kind": "member", "data": {"member_id": "M2", "points_balance": 6}},  # the fast one
    ]
    page = parse_page(changes, RefresherStats())
    rows = [stored(m)[0] for m in page.members]
    assert [(r[0], r[2], r[7]) for r in rows] == [("M1", "B", 0), ("M2", "", 6)]


# ---- the page's JSON ----------------------------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=5))
def test_pages_are_decoded_as_json_loads_decodes_them(document: dict[str, Any]) -> None:
    for body in (json.dumps(document).encode(), json.dumps(document, ensure_ascii=False).encode()):
        assert repr(_json_of(body)) == repr(json.loads(body))


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": "\\ud800"}',  # a lone surrogate: json.loads keeps it
        b'\xef\xbb\xbf{"a": 1}',  # a byte order mark
        b'{"a": 1, "a": 2}',
        b'{"a": [1E400, -0.0, 100000000000000000000000000000, NaN]}',
    ],
)
def test_what_the_rust_parser_refuses_json_loads_reads_as_before(body: bytes) -> None:
    assert repr(_json_of(body)) == repr(json.loads(body))


@pytest.mark.parametrize("body", [b'{"a": "\x01"}', b'{"a": "\xff"}', b"{", b""])
def test_what_neither_reads_is_still_refused(body: bytes) -> None:
    with pytest.raises(ValueError):
        _json_of(body)


# ---- the upsert's identifiers and pending sums --------------------------------------------------

LEDGER = """INSERT INTO ledger (member_id, event_id, business_date, points, wallet, tickets,
            created_at, applied_at) VALUES (?, ?, '2026-11-23', ?, ?, ?, '', ?)"""


def reference_upsert(conn: sqlite3.Connection, records: list[MemberRecord], now: str) -> None:
    """The member upsert as it was before the fast path (one statement per member)."""
    ids = json.dumps([row[0] for row, _ in records])
    conn.execute(
        "DELETE FROM member_identifiers WHERE member_id IN (SELECT value FROM json_each(?))",
        (ids,),
    )
    conn.executemany(
        "INSERT OR REPLACE INTO members VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        [(*row, now) for row, _ in records],
    )
    conn.executemany(
        "INSERT OR REPLACE INTO member_identifiers VALUES (?, ?)",
        [(i, row[0]) for row, identifiers in records for i in identifiers],
    )
    with_entries = conn.execute(
        "SELECT DISTINCT member_id FROM ledger WHERE member_id IN (SELECT value FROM json_each(?))",
        (ids,),
    ).fetchall()
    conn.executemany("DELETE FROM member_pending WHERE member_id = ?1", with_entries)
    conn.executemany(
        """INSERT INTO member_pending
           SELECT l.member_id, SUM(l.points), SUM(l.wallet), SUM(l.tickets)
           FROM ledger l JOIN members m ON m.member_id = l.member_id
           WHERE l.member_id = ?1 AND (l.applied_at IS NULL OR m.balance_as_of IS NULL
                                       OR l.applied_at > m.balance_as_of)
           GROUP BY l.member_id""",
        with_entries,
    )


@contextlib.contextmanager
def database() -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        migrate(conn)
        yield conn
    finally:
        conn.close()


def contents(conn: sqlite3.Connection) -> tuple[list[Any], ...]:
    return (
        conn.execute("SELECT * FROM members ORDER BY member_id").fetchall(),
        conn.execute("SELECT * FROM member_identifiers ORDER BY identifier").fetchall(),
        conn.execute("SELECT * FROM member_pending ORDER BY member_id").fetchall(),
    )


STAMPS = ["2026-11-23T09:00:00Z", "2026-11-23T10:00:00Z", "2026-11-23T11:00:00Z"]
POOL_IDS = [f"M{n}" for n in range(4)]
POOL_CARDS = [f"C{n}" for n in range(6)]
member_in_pool = st.builds(
    lambda mid, cards, stamp, points: {
        "member_id": mid,
        "identifiers": cards,
        "points_balance": points,
        "balance_as_of": stamp,
    },
    st.sampled_from(POOL_IDS),
    st.lists(st.sampled_from(POOL_CARDS), max_size=3),
    st.one_of(st.none(), st.sampled_from(STAMPS)),
    st.integers(0, 3),
)
step = st.one_of(
    st.tuples(st.just("page"), st.lists(member_in_pool, max_size=5)),
    st.tuples(
        st.just("ledger"),
        st.sampled_from([*POOL_IDS, "M9"]),
        st.integers(-5, 5),
        st.one_of(st.none(), st.sampled_from(STAMPS)),
    ),
    st.tuples(st.just("applied"), st.sampled_from(STAMPS)),  # the outbox's acknowledgement
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step, min_size=1, max_size=8))
def test_the_upsert_leaves_identifiers_and_pending_sums_as_before(steps: list[Any]) -> None:
    now = "2026-11-23T12:00:00.000000Z"
    with database() as new, database() as old:
        for n, action in enumerate(steps):
            for conn in (new, old):
                conn.execute("BEGIN")
                if action[0] == "page":
                    records = [m for m in (member_record_of(d) for d in action[1]) if m]
                    if conn is new:
                        # apply_changes' path: the page's records as parse_page hands them,
                        # plus a model's member (the import's path) when there is one
                        members: list[Any] = list(records)
                        if action[1]:
                            members[-1:] = [Member.model_validate(action[1][-1])]
                        cache._members_job(members)(conn)
                    else:
                        reference_upsert(conn, records, now)
                elif action[0] == "ledger":
                    _, mid, points, applied = action
                    conn.execute(LEDGER, (mid, f"E{n}", points, 0, 1, applied))
                    conn.execute(
                        "INSERT INTO member_pending VALUES (?, ?, 0, 1) ON CONFLICT (member_id)"
                        " DO UPDATE SET points = points + excluded.points,"
                        " tickets = tickets + 1",
                        (mid, points),
                    )
                else:
                    conn.execute("UPDATE ledger SET applied_at = ? WHERE applied_at IS NULL",
                                 (action[1],))  # fmt: skip
                conn.execute("COMMIT")
            got, want = contents(new), contents(old)
            assert [r[:-1] for r in got[0]] == [r[:-1] for r in want[0]]  # but updated_at
            assert got[1:] == want[1:]


def test_an_identifier_moves_leaves_and_comes_back_as_before() -> None:
    def record(mid: str, *cards: str) -> MemberRecord:
        made = member_record_of({"member_id": mid, "identifiers": list(cards)})
        assert made is not None
        return made

    pages = [
        [record("A", "1", "2"), record("B", "3")],
        [record("B", "2", "3")],  # 2 moves from A to B
        [record("A", "2"), record("B", "2")],  # both claim 2 in one page: the last wins
        [record("B"), record("A", "1", "1")],  # B has none; A has 1 twice
        [record("C", "3")],  # 3, held by nobody now, for C
    ]
    with database() as new, database() as old:
        for records in pages:
            cache._members_job(records)(new)
            reference_upsert(old, records, "x")
            assert contents(new)[1] == contents(old)[1]
        assert contents(new)[1] == [("1", "A"), ("3", "C")]


# ---- through the refresher and the store ------------------------------------------------------


def page_answer(changes: list[dict[str, Any]], cursor: str, more: bool) -> httpx.Response:
    body = {"changes": changes, "next_cursor": cursor, "has_more": more}
    # json.dumps writes NaN as central's Python would (httpx's `json=` refuses it)
    return httpx.Response(
        200, content=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )


def a_member(member_id: str) -> dict[str, Any]:
    return {"kind": "member", "data": {"member_id": member_id, "identifiers": [f"C-{member_id}"]}}


class ScriptedCentral:
    """Pages in order (the snapshot file: none)."""

    def __init__(self, *pages: httpx.Response) -> None:
        self.pages = list(pages)
        self.cursors: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/snapshot"):
            return httpx.Response(404, json={"error": "NOT_FOUND", "message": "none"})
        self.cursors.append(request.url.params["cursor"])
        return self.pages.pop(0)


@pytest.fixture
async def fresh(tmp_path: Path) -> Any:
    opened = await Store.open(tmp_path / "gateway.db")
    yield opened
    await opened.close()


async def test_a_full_sync_stores_the_rows_the_model_would(fresh: Store, tmp_path: Path) -> None:
    records = [r for r in EDGE_RECORDS if storable(r) and by_model(r) is not None]
    # one of each member id: the last record of each wins, as it does in a page
    changes = [{"kind": "member", "data": r} for r in records]
    central = ScriptedCentral(page_answer(changes, "c1", False))
    async with scripted_client(central) as client:
        await Refresher(fresh, client).refresh()
    by_id = {}
    for r in records:
        model = Member.model_validate(r)
        by_id[model.member_id] = model
    with contextlib.closing(sqlite3.connect(tmp_path / "gateway.db")) as db:
        rows = db.execute("SELECT * FROM members ORDER BY member_id").fetchall()
        cards = db.execute("SELECT identifier, member_id FROM member_identifiers").fetchall()
    expected = sorted((member_record(m)[0] for m in by_id.values()), key=lambda r: r[0])
    assert [r[:-1] for r in rows] == expected
    wanted = {i: m.member_id for m in by_id.values() for i in m.identifiers}
    assert sorted(cards) == sorted(wanted.items())


async def test_a_bulk_page_raises_the_writers_cache_until_the_snapshot_is_finished(
    fresh: Store,
) -> None:
    def cache_kib(conn: sqlite3.Connection) -> int:
        return -int(conn.execute("PRAGMA cache_size").fetchone()[0])

    members = [
        member_record_of({"member_id": f"M{n}", "identifiers": [f"C{n}"]})
        for n in range(cache.BULK_MEMBERS)
    ]
    await fresh.apply_changes(ChangePage(members=[m for m in members if m]))
    assert await fresh.writer.run_on_thread(cache_kib) == cache.BULK_CACHE_KIB
    stale = await fresh.remove_stale("2000-01-01T00:00:00.000000Z")
    assert stale.removed and stale.members == 0 and stale.cached_members == cache.BULK_MEMBERS
    assert await fresh.writer.run_on_thread(cache_kib) == 2000
