"""The cache of central's records: members (with this store's pending points), coupons, rules
documents, the POS menu's products and the sync state. Central's changes and imports write it;
the register's lookups read it."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from gateway.domain.models import Balance, Coupon, EarnMode, Member, MemberCard
from gateway.domain.rules_doc import RulesDocument
from gateway.store.connections import StorePart, utc_stamp

# A member's row with the balance the register sees: central's plus what it has not applied yet.
# Its columns are `MemberRow`'s fields, in their order; the first parameter is the lottery's
# switch at this store (held in memory), so that the row carries it as before.
MEMBER_ROW_SQL = """
SELECT m.member_id, m.display_name, m.tier, m.birthday, m.flags, m.earn_mode, m.lottery_consent,
       m.points_balance, m.wallet_points, m.balance_as_of,
       m.points_balance + COALESCE(p.points, 0), m.wallet_points + COALESCE(p.wallet, 0), ?
FROM members m LEFT JOIN member_pending p ON p.member_id = m.member_id
"""
LOTTERY = "lottery"


class MemberRow(NamedTuple):
    """One row of `MEMBER_ROW_SQL`: a tuple, so that comparing two reads costs nothing."""

    member_id: str
    display_name: str
    tier: str
    birthday: str | None
    flags: str  # JSON list
    earn_mode: EarnMode
    lottery_consent: int
    points_balance: int  # central's
    wallet_points: int  # central's
    balance_as_of: str | None
    points: int  # central's plus this store's entries it has not applied
    wallet: int  # likewise
    lottery_paused: int  # the store's switch (`edge-gateway pause lottery`)


def member_row(found: Sequence[Any]) -> MemberRow:
    """A row of `MEMBER_ROW_SQL` as a `MemberRow`: `MemberRow._make` without its length check
    (the SQL gives the columns), as this runs on every IDENT and twice on every POST."""
    return tuple.__new__(MemberRow, found)


@dataclass(frozen=True, slots=True)
class MemberView:
    member: MemberCard
    balance: Balance
    lottery_paused: bool
    tickets_this_month: int = 0  # filled where a check is settled, for lottery members

    @classmethod
    def of(cls, row: MemberRow, tickets_this_month: int = 0) -> MemberView:
        """The view of a `MemberRow` (or of the raw row of `MEMBER_ROW_SQL`, as a lookup that
        only wants the view passes it)."""
        # Unpacked in one step: cheaper than thirteen attribute reads, on every IDENT.
        (
            member_id,
            name,
            tier,
            birthday,
            flags,
            earn_mode,
            consent,
            points_balance,
            wallet_points,
            _,
            points,
            wallet,
            paused,
        ) = row
        member = MemberCard(
            member_id,
            name,
            tier,
            birthday,
            () if flags == "[]" else tuple(json.loads(flags)),  # most members have none
            earn_mode,
            bool(consent),
            points_balance,
            wallet_points,
        )
        return cls(member, Balance(int(points), int(wallet)), bool(paused), tickets_this_month)


# The pending sums of the members named in a JSON list (those of a page that have ledger entries),
# recomputed from the ledger after central's balance changed: one statement pair per page.
_RECOMPUTE_PENDING = [
    "DELETE FROM member_pending WHERE member_id IN (SELECT value FROM json_each(?1))",
    """INSERT INTO member_pending
       SELECT l.member_id, SUM(l.points), SUM(l.wallet), SUM(l.tickets)
       FROM ledger l JOIN members m ON m.member_id = l.member_id
       WHERE l.member_id IN (SELECT value FROM json_each(?1))
         AND (l.applied_at IS NULL OR m.balance_as_of IS NULL OR l.applied_at > m.balance_as_of)
       GROUP BY l.member_id""",
]


@dataclass(frozen=True, slots=True)
class StaleRecords:
    """What a full snapshot did not bring, against what the cache held before its removal."""

    members: int
    cached_members: int
    coupons: int
    cached_coupons: int
    removed: bool = False

    def above(self, share: float) -> bool:
        return self.members > share * self.cached_members or (
            self.coupons > share * self.cached_coupons
        )


# A member as the cache stores it: its `members` row without `updated_at` (the columns of the
# table in their order: member_id, display_name, tier, birthday, flags as JSON, earn_mode,
# lottery_consent as 0/1, points_balance, wallet_points, balance_as_of as `utc_stamp` or None,
# the record as `Member.model_dump_json()`), and its identifiers. `member_record` makes one
# from a `Member`; a full sync makes them straight from central's records (sync/refresher.py).
MemberRecord = tuple[tuple[Any, ...], Sequence[str]]


def member_record(m: Member) -> MemberRecord:
    """The row and the identifiers the cache stores for `m`."""
    row = (
        m.member_id,
        m.display_name,
        m.tier,
        m.birthday,
        json.dumps(m.flags) if m.flags else "[]",
        m.earn_mode,
        int(m.lottery_consent),
        m.points_balance,
        m.wallet_points,
        utc_stamp(m.balance_as_of) if m.balance_as_of else None,
        m.model_dump_json(),
    )
    return row, m.identifiers


@dataclass(frozen=True, slots=True)
class ChangePage:
    """What one page of central's changes asks of the cache."""

    members: Sequence[Member | MemberRecord] = ()
    deleted_members: Sequence[str] = ()
    coupons: Sequence[Coupon] = ()
    deleted_coupons: Sequence[str] = ()
    rules: Sequence[RulesDocument] = ()
    state: Sequence[tuple[str, str]] = ()  # sync_state rows: the cursor ...


Job = Callable[[sqlite3.Connection], None]

MEMBER_BY_ID = MEMBER_ROW_SQL + " WHERE m.member_id = ?"
_BY_IDENTIFIER = (
    MEMBER_ROW_SQL
    + " JOIN member_identifiers i ON i.member_id = m.member_id WHERE i.identifier = ?"
)


# A page of this many members or more (a full sync's, an import's) raises the write connection's
# page cache to BULK_CACHE_KIB until `remove_stale`, which ends a full snapshot, puts SQLite's
# default back: card numbers come in no order, so a page's identifiers land all over the
# identifier index (some 40 MB for a million members), and with 2 MiB each insert read its page
# from the OS again (1,000,000 random cards: 8.3 us per member to insert them, 4.1 with 32 MiB).
BULK_MEMBERS = 200
BULK_CACHE_KIB = 32 * 1024
_BULK_CACHE = f"PRAGMA cache_size = -{BULK_CACHE_KIB}"
_DEFAULT_CACHE = "PRAGMA cache_size = -2000"  # SQLite's default


def _members_job(members: Sequence[Member | MemberRecord]) -> Job:
    """Upsert members (rows made beforehand, on the caller's thread): their rows, their
    identifiers (an identifier that moved to another member follows it; one a member no longer
    has is removed), and the pending sums of those with ledger entries."""
    if not members:
        return _nothing
    records = [m if isinstance(m, tuple) else member_record(m) for m in members]
    now = utc_stamp(dt.datetime.now(dt.UTC))
    rows = [row for row, _ in records]
    ids = json.dumps([row[0] for row in rows])
    # Where each identifier of these members belongs now (a later member claiming the same
    # identifier wins, as the inserts in order did).
    wanted = {i: row[0] for row, identifiers in records for i in identifiers}
    # `now` is a `utc_stamp`: digits, '-', ':', '.', 'T' and 'Z', so it is a safe literal (the
    # rows are then bound as they were made, without a copy per member).
    insert = f"INSERT OR REPLACE INTO members VALUES (?,?,?,?,?,?,?,?,?,?,?,'{now}')"
    bulk = len(rows) >= BULK_MEMBERS

    def job(conn: sqlite3.Connection) -> None:
        if bulk:
            conn.execute(_BULK_CACHE)
        held = conn.execute(
            "SELECT identifier, member_id FROM member_identifiers"
            " WHERE member_id IN (SELECT value FROM json_each(?))",
            (ids,),
        ).fetchall()
        if held:  # what they had before: only what changed is written
            gone = [(i,) for i, _ in held if i not in wanted]
            conn.executemany("DELETE FROM member_identifiers WHERE identifier = ?", gone)
            kept = set(held)
            new = [pair for pair in wanted.items() if pair not in kept]  # moved ones replace
        else:  # new members (a full sync into an empty cache): all their identifiers
            new = list(wanted.items())
        conn.executemany(insert, rows)
        conn.executemany("INSERT OR REPLACE INTO member_identifiers VALUES (?, ?)", new)
        # A new balance from central may include entries that were pending here.
        with_entries = conn.execute(
            "SELECT json_group_array(member_id) FROM (SELECT DISTINCT member_id FROM ledger"
            " WHERE member_id IN (SELECT value FROM json_each(?)))",
            (ids,),
        ).fetchone()[0]
        if with_entries != "[]":
            for statement in _RECOMPUTE_PENDING:
                conn.execute(statement, (with_entries,))

    return job


def _nothing(conn: sqlite3.Connection) -> None:
    pass


def _member_deletions_job(member_ids: Sequence[str]) -> Job:
    params = [(i,) for i in member_ids]

    def job(conn: sqlite3.Connection) -> None:
        conn.executemany("DELETE FROM member_identifiers WHERE member_id = ?", params)
        conn.executemany("DELETE FROM members WHERE member_id = ?", params)
        conn.executemany("DELETE FROM member_pending WHERE member_id = ?", params)

    return job


def _coupons_job(coupons: Sequence[Coupon]) -> Job:
    now = utc_stamp(dt.datetime.now(dt.UTC))
    rows = [(c.code, c.model_dump_json(), now) for c in coupons]

    def job(conn: sqlite3.Connection) -> None:
        conn.executemany("INSERT OR REPLACE INTO coupons VALUES (?, ?, ?)", rows)

    return job


def _rules_job(documents: Sequence[RulesDocument], source: str) -> Job:
    now = utc_stamp(dt.datetime.now(dt.UTC))
    rows = [
        (
            d.version,
            utc_stamp(d.effective_from) if d.effective_from else "",
            d.model_dump_json(),
            source,
            now,
        )
        for d in documents
    ]

    def job(conn: sqlite3.Connection) -> None:
        conn.executemany("INSERT OR REPLACE INTO rules_documents VALUES (?, ?, ?, ?, ?)", rows)

    return job


def _coupon_deletions_job(codes: Sequence[str]) -> Job:
    params = [(c,) for c in codes]

    def job(conn: sqlite3.Connection) -> None:
        conn.executemany("DELETE FROM coupons WHERE code = ?", params)

    return job


class Cache(StorePart):
    """Central's records as this store holds them; lookups run on the event loop's thread."""

    # ---- lookups (the lookup connection: plain calls, no await) ----------------------------

    def member_by_identifier(self, identifier: str) -> MemberView | None:
        row = self._one(_BY_IDENTIFIER, (self._paused(LOTTERY), identifier))
        return MemberView.of(row) if row else None

    def member(self, member_id: str) -> MemberView | None:
        row = self._one(MEMBER_BY_ID, (self._paused(LOTTERY), member_id))
        return MemberView.of(row) if row else None

    def coupon(self, code: str) -> Coupon | None:
        row = self._one("SELECT record FROM coupons WHERE code = ?", (code,))
        return Coupon.model_validate_json(row[0]) if row else None

    def get_state(self, key: str) -> str | None:
        """A value of `sync_state` (cursor, last catalog hash, ...)."""
        row = self._one("SELECT value FROM sync_state WHERE key = ?", (key,))
        return str(row[0]) if row else None

    def active_rules(self, now: dt.datetime) -> tuple[str, str] | None:
        """(version, document JSON) of the rules in force at `now`: the latest effective
        (held in memory; a document that arrives replaces what is held)."""
        held = self._held
        if held.rules is None:
            rows = self._lookup.execute(
                "SELECT effective_from, received_at, version, document FROM rules_documents"
                " ORDER BY effective_from DESC, received_at DESC"
            ).fetchall()
            held.rules = tuple((str(a), str(b), str(c), str(d)) for a, b, c, d in rows)
        if not held.rules:
            return None
        now_s = utc_stamp(now)
        for effective_from, _, version, document in held.rules:
            if effective_from <= now_s:
                return version, document
        return None

    def categories_for(self, objects: Sequence[int]) -> dict[int, str]:
        """The family group of each menu item object the POS menu knows (held in memory)."""
        held = self._held
        if held.categories is None:
            rows = self._lookup.execute("SELECT object_number, family_group FROM products")
            held.categories = {int(o): str(f) for o, f in rows if f}
        known = held.categories
        return {o: known[o] for o in objects if o in known}

    # ---- writes (import and central's changes) ----------------------------------------------

    async def set_state(self, key: str, value: str | None) -> None:
        def job(conn: sqlite3.Connection) -> None:
            if value is None:
                conn.execute("DELETE FROM sync_state WHERE key = ?", (key,))
            else:
                conn.execute("INSERT OR REPLACE INTO sync_state VALUES (?, ?)", (key, value))

        await self.writer.submit(job)

    async def upsert_members(self, members: Sequence[Member]) -> None:
        await self.writer.submit(_members_job(members))

    async def delete_members(self, member_ids: Sequence[str]) -> None:
        await self.writer.submit(_member_deletions_job(member_ids))

    async def upsert_coupons(self, coupons: Sequence[Coupon]) -> None:
        await self.writer.submit(_coupons_job(coupons))

    async def delete_coupons(self, codes: Sequence[str]) -> None:
        await self.writer.submit(_coupon_deletions_job(codes))

    async def apply_changes(self, page: ChangePage) -> None:
        """One page of central's changes, with the cursor after it, in one transaction: a crash
        leaves either the whole page applied and the cursor moved, or neither."""
        jobs = [
            _members_job(page.members),
            _member_deletions_job(page.deleted_members),
            _coupons_job(page.coupons),
            _coupon_deletions_job(page.deleted_coupons),
            _rules_job(page.rules, "central"),
        ]
        state = dict(page.state)

        def job(conn: sqlite3.Connection) -> None:
            for part in jobs:
                part(conn)
            conn.executemany("INSERT OR REPLACE INTO sync_state VALUES (?, ?)", state.items())

        await self.writer.submit(job)
        if page.rules:
            self._held.rules = None

    async def add_rules(self, document: RulesDocument, *, source: str) -> None:
        await self.writer.submit(_rules_job([document], source))
        self._held.rules = None

    async def replace_products(self, products: Sequence[tuple[int, str, str, str, bool]]) -> None:
        """The POS menu's products (object, name, family group, major group, active)."""
        rows = [(o, n, f, m, int(a)) for o, n, f, m, a in products]

        def job(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM products")
            conn.executemany("INSERT INTO products VALUES (?, ?, ?, ?, ?)", rows)

        await self.writer.submit(job)
        self._held.categories = None

    async def remove_stale(self, since: str, *, max_share: float = 1.0) -> StaleRecords:
        """After a full snapshot: drop the members and coupons it did not bring (central deleted
        them while this store was not listening). `since` is when the snapshot began.

        When the stale share of either table is above `max_share`, nothing is removed
        (`removed` is False): an empty or truncated snapshot must not wipe the cache. Counted,
        decided and deleted in one transaction, so the numbers are the rows actually removed."""

        def job(conn: sqlite3.Connection) -> StaleRecords:
            conn.execute(_DEFAULT_CACHE)  # the snapshot's pages are written
            count = "SELECT COALESCE(SUM(updated_at < ?), 0), COUNT(*) FROM {}"
            stale_m, cached_m = conn.execute(count.format("members"), (since,)).fetchone()
            stale_c, cached_c = conn.execute(count.format("coupons"), (since,)).fetchone()
            found = StaleRecords(int(stale_m), int(cached_m), int(stale_c), int(cached_c))
            if found.above(max_share):
                return found
            members = coupons = 0
            if stale_m:  # each statement reads the whole table: none when nothing is stale
                stale = "SELECT member_id FROM members WHERE updated_at < ?"
                conn.execute(
                    f"DELETE FROM member_identifiers WHERE member_id IN ({stale})", (since,)
                )
                conn.execute(f"DELETE FROM member_pending WHERE member_id IN ({stale})", (since,))
                members = conn.execute(
                    "DELETE FROM members WHERE updated_at < ?", (since,)
                ).rowcount
            if stale_c:
                coupons = conn.execute(
                    "DELETE FROM coupons WHERE updated_at < ?", (since,)
                ).rowcount
            return StaleRecords(int(members), int(cached_m), int(coupons), int(cached_c), True)

        result: StaleRecords = await self.writer.submit(job)
        return result
