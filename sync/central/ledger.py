"""Central's state and the contract's rules over it, written once for both storage backends.

A `Ledger` holds one connection and runs on one thread at a time. The SQL here is what SQLite and
PostgreSQL both speak (`?` parameters, `INSERT ... ON CONFLICT`, `RETURNING`); a backend's
subclass fills in the hooks at the bottom of the class, where the dialects differ: JSON updates,
the change sequence, and how writers that publish changes are put in one order.

Why that order matters: a delta cursor is a change sequence number, and a reader that saw change
n must already see every change below n. SQLite has one writer, so it holds by itself. With
several writers (PostgreSQL, several processes) a transaction that publishes takes one lock
before it numbers its changes and keeps it to its commit, so numbers commit in order.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import secrets
import threading
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import ValidationError

from gateway.domain.models import Coupon, Member
from sync.central.config import ReferenceConfig, next_stamp, utc_stamp
from sync.central.errors import ApiError, Invalid
from sync.central.fields import (
    AMOUNT,
    MISSING,
    QTY,
    Fields,
    check_batch,
    dumps,
    first_error,
    invalid,
    is_date,
)
from sync.central.storage import Connection, read_rules

_ADD_TICKETS = """INSERT INTO tickets VALUES (?, ?) ON CONFLICT (member_id)
    DO UPDATE SET tickets = tickets.tickets + excluded.tickets"""
_BALANCE_KEYS = ("points_balance", "wallet_points", "balance_as_of")
_CHECK_INTEGERS = ("wsid", "rvc", "check", "points_earned", "tickets_earned", "wallet_delta")
SNAPSHOT_PAGE = 5000  # records per query while a snapshot is exported

# A change: (entity, key, kind); one row per (entity, key), at the number of its latest change.
Change = tuple[str, str, str]
# An event's outcome: (status, reason, message, applied_at)
Outcome = tuple[str, str | None, str | None, str | None]


@dataclass(slots=True)
class Tallies:
    """Counters since this process started (the admin stats); updated under `lock`."""

    received: Counter[str] = field(default_factory=Counter)
    accepted: Counter[str] = field(default_factory=Counter)
    duplicate: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    bad_batches: int = 0
    replayed_rejections: int = 0
    unknown_member_checks: int = 0
    identifications: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Shared:
    """What every ledger of one process shares: the clock, the cursor key, the tallies."""

    def __init__(self, clock: Callable[[], Any]) -> None:
        self.clock = clock
        self.secret = b""  # read from the database at open: every process seals alike
        self.tallies = Tallies()
        self.on_publish: Callable[[], None] = lambda: None  # after a commit that published
        self._last_stamp = ""
        self._lock = threading.Lock()

    def stamp(self) -> str:
        """Now on central's clock, strictly after every stamp this process gave before."""
        with self._lock:
            self._last_stamp = next_stamp(utc_stamp(self.clock()), self._last_stamp)
            return self._last_stamp


@dataclass(slots=True)
class Batch:
    """What one batch of events changes, gathered so members are updated once per batch."""

    store: str
    applied_at: str
    # member id -> [points, wallet points, tickets, checks]
    deltas: dict[str, list[int]] = field(default_factory=dict)
    checks: list[tuple[Any, ...]] = field(default_factory=list)  # checks.* but applied_at
    touched: set[str] = field(default_factory=set)  # members whose record changed
    unknown_member_checks: int = 0
    identifications: int = 0


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """A built snapshot: its identity, where `changes` continues from, and its size."""

    etag: str
    built_at: str
    change_seq: int
    cursor: str
    records: int
    size: int
    chunk_size: int


# How one event type is applied: (ledger, batch, event id, payload) -> None or a refusal.
_Applier = Callable[["Ledger", Batch, str, dict[str, Any]], "tuple[str, str] | None"]


class Ledger(ABC):
    """Central's state over one connection. Every method runs on that connection's thread."""

    for_update: ClassVar[str] = ""  # appended to a read that must lock its row until commit

    def __init__(self, conn: Connection, shared: Shared) -> None:
        self.conn = conn
        self.shared = shared
        self.tallies = shared.tallies
        self._published = False

    # ---- transactions ----

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One transaction; after its commit, waiters hear of the changes it published."""
        self._published = False
        with self._transaction():
            yield
        if self._published:
            self._published = False
            self.shared.on_publish()

    def stamp(self) -> str:
        return self.shared.stamp()

    # ---- records: members, coupons, rules ----

    def seed(self, config: ReferenceConfig) -> None:
        """Load the configured records (a record already in the database is kept)."""
        if config.members_file is not None:
            self.load_file("member", config.members_file)
        if config.coupons_file is not None:
            self.load_file("coupon", config.coupons_file)
        if config.synthetic_members:
            self.synthesize_members(config.synthetic_members)
        if config.rules_file is not None:
            self.set_rules(read_rules(config))

    def load_file(self, kind: str, path: Path) -> int:
        """Seed members or coupons from JSON lines. A record already in the database is left
        as it is, so a restart on the same database does not undo what events changed."""
        records = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{path}:{number}: not JSON ({exc})") from None
            records.append(record)
        try:
            if kind == "member":
                return self.upsert_members(records, keep_existing=True)
            return self.upsert_coupons(records, keep_existing=True)
        except ApiError as exc:
            raise ValueError(f"{path}: {exc.message}") from None

    def upsert_members(self, records: object, *, keep_existing: bool = False) -> int:
        """Store members as given (extra keys kept). Balance fields a record leaves out are kept
        from the current record; a record with no `balance_as_of` at all gets now."""
        if not isinstance(records, list):
            raise ApiError(400, "BAD_REQUEST", "expected a JSON list of member records")
        with self.transaction():
            self.publishing()
            now = self.publish_stamp()
            changed = []
            for index, raw in enumerate(records):
                if not isinstance(raw, dict) or not isinstance(raw.get("member_id"), str):
                    raise ApiError(400, "BAD_REQUEST", f"[{index}]: a member needs member_id")
                record = dict(raw)
                current = self._member(raw["member_id"])
                if current is not None and keep_existing:
                    continue
                for key in _BALANCE_KEYS:
                    if key not in record and current is not None and key in current:
                        record[key] = current[key]
                if record.get("balance_as_of") is None:
                    record["balance_as_of"] = now
                try:
                    Member.model_validate(record)
                except ValidationError as exc:
                    raise ApiError(400, "BAD_REQUEST", f"[{index}]: {first_error(exc)}") from None
                self.conn.execute(
                    "INSERT INTO members VALUES (?, ?) "
                    "ON CONFLICT (member_id) DO UPDATE SET data = excluded.data",
                    (record["member_id"], dumps(record)),
                )
                changed.append(("member", record["member_id"], "member"))
            self.emit(changed)
        return len(records)

    def upsert_coupons(self, records: object, *, keep_existing: bool = False) -> int:
        if not isinstance(records, list):
            raise ApiError(400, "BAD_REQUEST", "expected a JSON list of coupon records")
        on_conflict = "NOTHING" if keep_existing else "UPDATE SET data = excluded.data"
        with self.transaction():
            self.publishing()
            changed = []
            for index, raw in enumerate(records):
                try:
                    Coupon.model_validate(raw)
                except ValidationError as exc:
                    raise ApiError(400, "BAD_REQUEST", f"[{index}]: {first_error(exc)}") from None
                assert isinstance(raw, dict)
                if self.conn.execute(
                    f"INSERT INTO coupons VALUES (?, ?) ON CONFLICT (code) DO {on_conflict}",
                    (raw["code"], dumps(raw)),
                ).rowcount:
                    changed.append(("coupon", raw["code"], "coupon"))
            self.emit(changed)
        return len(records)

    def synthesize_members(self, count: int) -> None:
        """Members SYN0000001.. made inside the database, for benchmarks of a million members.

        Members already there are kept (with their balances); on a database that holds them
        all, this costs one count.
        """
        (present,) = self.conn.execute(
            "SELECT COUNT(*) FROM members WHERE member_id BETWEEN 'SYN0000001' AND ?",
            (f"SYN{count:07d}",),
        ).fetchone()
        if present >= count:
            return
        with self.transaction():
            self.publishing()
            self.make_members(count, self.publish_stamp())
            self._published = True

    def delete_member(self, member_id: str) -> bool:
        with self.transaction():
            self.publishing()
            if not self.conn.execute(
                "DELETE FROM members WHERE member_id = ?", (member_id,)
            ).rowcount:
                return False
            self.emit([("member", member_id, "member_deleted")])
        return True

    def delete_coupon(self, code: str) -> bool:
        with self.transaction():
            self.publishing()
            if not self.conn.execute("DELETE FROM coupons WHERE code = ?", (code,)).rowcount:
                return False
            self.emit([("coupon", code, "coupon_deleted")])
        return True

    def set_rules(self, document: object) -> None:
        if not isinstance(document, dict):
            raise ApiError(400, "BAD_REQUEST", "the rules document must be a JSON object")
        version = document.get("version")
        if not isinstance(version, str) or not version:
            raise ApiError(400, "BAD_REQUEST", "the rules document needs a version string")
        with self.transaction():
            self.publishing()
            self.conn.execute(
                "INSERT INTO rules VALUES (1, ?) "
                "ON CONFLICT (id) DO UPDATE SET data = excluded.data",
                (dumps(document),),
            )
            self.emit([("rules", "", "rules")])

    def _member(self, member_id: str) -> dict[str, Any] | None:
        row = self.conn.execute(
            "SELECT data FROM members WHERE member_id = ?", (member_id,)
        ).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def member_view(self, member_id: str) -> dict[str, Any] | None:
        record = self._member(member_id)
        if record is None:
            return None
        row = self.conn.execute(
            "SELECT tickets FROM tickets WHERE member_id = ?", (member_id,)
        ).fetchone()
        return {"record": record, "tickets": int(row[0]) if row else 0}

    def coupon_view(self, code: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT data FROM coupons WHERE code = ?", (code,)).fetchone()
        if row is None:
            return None
        states = {
            state: int(count)
            for state, count in self.conn.execute(
                "SELECT state, COUNT(*) FROM authorizations WHERE code = ? GROUP BY state",
                (code,),
            ).fetchall()
        }
        redemptions = self.conn.execute(
            "SELECT COUNT(*) FROM redemptions WHERE code = ?", (code,)
        ).fetchone()[0]
        return {
            "record": json.loads(row[0]),
            "redemptions": int(redemptions),
            "authorizations": states,
        }

    # ---- changes ----

    def load_secret(self) -> bytes:
        """The cursor key: made with the database, the same for every process that serves it."""
        with self.transaction():
            self.conn.execute(
                "INSERT INTO meta VALUES ('cursor_secret', ?) ON CONFLICT (key) DO NOTHING",
                (secrets.token_bytes(32).hex(),),
            )
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'cursor_secret'").fetchone()
        return bytes.fromhex(row[0])

    def seal(self, state: dict[str, Any]) -> str:
        body = base64.urlsafe_b64encode(dumps(state).encode()).rstrip(b"=")
        mac = hmac.new(self.shared.secret, body, hashlib.sha256).digest()[:12]
        return body.decode() + "." + base64.urlsafe_b64encode(mac).decode()

    def _unseal(self, cursor: str) -> dict[str, Any]:
        bad = ApiError(400, "BAD_CURSOR", "unknown cursor: start again with an empty cursor")
        body, _, mac = cursor.partition(".")
        try:
            expected = hmac.new(self.shared.secret, body.encode(), hashlib.sha256).digest()[:12]
            if not hmac.compare_digest(base64.urlsafe_b64decode(mac), expected):
                raise bad
            state = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except (ValueError, UnicodeError):
            raise bad from None
        if not isinstance(state, dict) or type(state.get("s")) is not int:
            raise bad
        if state["s"] > self.change_seq():
            raise bad  # from a database that has since been restored from an older copy
        return state

    def changes(self, cursor: str, limit: int) -> tuple[bytes, bool]:
        """One page of changes as the JSON body (records spliced in as stored), and whether it
        is empty with nothing more to come (what a long poll waits on)."""
        if not cursor:
            state: dict[str, Any] = {"m": "s", "p": 0, "k": "", "s": self.change_seq()}
        else:
            state = self._unseal(cursor)
        if (
            state.get("m") == "s"
            and state.get("p") in (0, 1, 2)
            and isinstance(state.get("k"), str)
        ):
            parts, state, more = self._snapshot_page(state, limit)
        elif state.get("m") == "d" and set(state) == {"m", "s"}:
            parts, state, more = self._delta_page(state, limit)
        else:
            raise ApiError(400, "BAD_CURSOR", "unknown cursor: start again with an empty cursor")
        body = (
            '{"changes":['
            + ",".join(parts)
            + '],"next_cursor":"'
            + self.seal(state)
            + '","has_more":'
            + ("true" if more else "false")
            + "}"
        ).encode()
        return body, not parts and not more

    def _snapshot_page(
        self, state: dict[str, Any], limit: int
    ) -> tuple[list[str], dict[str, Any], bool]:
        # Keyset pagination on each table's primary key: a page costs the same at the millionth
        # member as at the first.
        phase, key, parts = state["p"], state["k"], []
        room = limit
        while room > 0 and phase < 3:
            if phase == 2:
                row = self.conn.execute("SELECT data FROM rules WHERE id = 1").fetchone()
                if row is not None:
                    parts.append('{"kind":"rules","data":' + row[0] + "}")
                    room -= 1
                phase, key = 3, ""
                break
            table, column, kind = (
                ("members", "member_id", "member") if phase == 0 else ("coupons", "code", "coupon")
            )
            rows = self.conn.execute(
                f"SELECT {column}, data FROM {table} WHERE {column} > ? ORDER BY {column} LIMIT ?",
                (key, room + 1),
            ).fetchall()
            prefix = '{"kind":"' + kind + '","data":'
            parts.extend([prefix + data + "}" for _, data in rows[:room]])
            if len(rows) > room:
                key = rows[room - 1][0]
                room = 0
            else:
                room -= len(rows)
                phase, key = phase + 1, ""
        if phase < 3:
            return parts, {"m": "s", "p": phase, "k": key, "s": state["s"]}, True
        # Done: carry on from where the snapshot began, so what changed meanwhile comes as deltas.
        more = (
            self.conn.execute(
                "SELECT 1 FROM changes WHERE seq > ? LIMIT 1", (state["s"],)
            ).fetchone()
            is not None
        )
        return parts, {"m": "d", "s": state["s"]}, more

    def _delta_page(
        self, state: dict[str, Any], limit: int
    ) -> tuple[list[str], dict[str, Any], bool]:
        rows = self.conn.execute(
            """SELECT c.seq, c.kind, c.key, m.data, k.data, r.data FROM changes c
               LEFT JOIN members m ON c.kind = 'member' AND m.member_id = c.key
               LEFT JOIN coupons k ON c.kind = 'coupon' AND k.code = c.key
               LEFT JOIN rules r ON c.kind = 'rules' AND r.id = 1
               WHERE c.seq > ? ORDER BY c.seq LIMIT ?""",
            (state["s"], limit + 1),
        ).fetchall()
        parts = []
        last = state["s"]
        for seq, kind, key, member, coupon, rules in rows[:limit]:
            last = int(seq)
            if kind == "member_deleted":
                data = dumps({"member_id": key})
            elif kind == "coupon_deleted":
                data = dumps({"code": key})
            else:
                data = member or coupon or rules
                if data is None:  # cannot happen: a deletion replaces the change row
                    continue
            parts.append('{"kind":"' + kind + '","data":' + data + "}")
        return parts, {"m": "d", "s": last}, len(rows) > limit

    # ---- snapshots ----

    def export(self, write: Callable[[str], None]) -> tuple[int, int]:
        """Every current record as a change line, read in one consistent view, and the change
        sequence number that view holds: (sequence number, records)."""
        records = 0
        with self.reading():
            seq = self.change_seq()
            for table, column, kind in (
                ("members", "member_id", "member"),
                ("coupons", "code", "coupon"),
            ):
                key, prefix = "", '{"kind":"' + kind + '","data":'
                while True:
                    rows = self.conn.execute(
                        f"SELECT {column}, data FROM {table} WHERE {column} > ? "
                        f"ORDER BY {column} LIMIT ?",
                        (key, SNAPSHOT_PAGE),
                    ).fetchall()
                    if not rows:
                        break
                    write("".join([prefix + data + "}\n" for _, data in rows]))
                    records += len(rows)
                    key = rows[-1][0]
            row = self.conn.execute("SELECT data FROM rules WHERE id = 1").fetchone()
            if row is not None:
                write('{"kind":"rules","data":' + row[0] + "}\n")
                records += 1
        return seq, records

    def save_snapshot(self, info: SnapshotInfo, chunks: Iterator[bytes], keep: int = 2) -> None:
        """Store a built snapshot; only the newest `keep` stay (a download in progress of the
        one before can still finish)."""
        with self.transaction():
            for number, chunk in enumerate(chunks):
                self.conn.execute(
                    "INSERT INTO snapshot_chunks VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                    (info.etag, number, chunk),
                )
            self.conn.execute(
                "INSERT INTO snapshots VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (
                    info.etag,
                    info.built_at,
                    info.change_seq,
                    info.cursor,
                    info.records,
                    info.size,
                    info.chunk_size,
                ),
            )
            old = [
                row[0]
                for row in self.conn.execute(
                    "SELECT etag FROM snapshots ORDER BY built_at DESC, etag"
                ).fetchall()[keep:]
            ]
            for etag in old:
                self.conn.execute("DELETE FROM snapshot_chunks WHERE etag = ?", (etag,))
                self.conn.execute("DELETE FROM snapshots WHERE etag = ?", (etag,))

    def latest_snapshot(self) -> SnapshotInfo | None:
        row = self.conn.execute(
            "SELECT etag, built_at, change_seq, cursor, records, size, chunk_size "
            "FROM snapshots ORDER BY built_at DESC, etag LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        etag, built_at, seq, cursor, records, size, chunk_size = row
        return SnapshotInfo(etag, built_at, int(seq), cursor, int(records), int(size), chunk_size)

    def snapshot_chunk(self, etag: str, number: int) -> bytes | None:
        row = self.conn.execute(
            "SELECT data FROM snapshot_chunks WHERE etag = ? AND n = ?", (etag, number)
        ).fetchone()
        return None if row is None else bytes(row[0])

    # ---- events ----

    def ingest(self, store: str, raw: bytes, max_events: int) -> bytes:
        """Apply one batch in one transaction; the answer's JSON body, one result per event."""
        t = self.tallies
        try:
            events = check_batch(json.loads(raw), max_events)
        except (ValueError, UnicodeError):
            with t.lock:
                t.bad_batches += 1
            raise ApiError(400, "BAD_BATCH", "the body is not JSON") from None
        except ApiError:
            with t.lock:
                t.bad_batches += 1
            raise
        ids = [event["id"].upper() for event in events]
        results: list[str] = []
        fresh: list[tuple[Any, ...]] = []
        received: Counter[str] = Counter()
        outcomes: dict[str, Counter[str]] = {
            "accepted": Counter(),
            "duplicate": Counter(),
            "rejected": Counter(),
        }
        reasons: Counter[str] = Counter()
        replayed = 0
        with self.transaction():
            # The event id is what makes delivery exactly once: `claim_events` holds each id
            # of the batch for this transaction (or learns the outcome it already has).
            known = self.claim_events(ids)
            self.publishing()
            batch = Batch(store, self.publish_stamp())
            for event, event_id in zip(events, ids, strict=True):
                kind = event["type"]
                received[kind] += 1
                prior = known.get(event_id)
                if prior is not None:
                    # Seen before: the first outcome again, nothing applied twice.
                    status, reason, message, applied_at = prior
                    if status == "accepted":
                        status = "duplicate"
                    else:
                        replayed += 1
                        reasons[reason or ""] += 1
                else:
                    refusal = self._apply(batch, event_id, kind, event["payload"])
                    if refusal is None:
                        status, reason, message = "accepted", None, None
                        applied_at = batch.applied_at
                    else:
                        status, applied_at = "rejected", None
                        reason, message = refusal
                        reasons[reason] += 1
                    known[event_id] = (status, reason, message, applied_at)
                    fresh.append((event_id, kind, store, status, reason, message, applied_at))
                outcomes[status][kind] += 1
                if status == "rejected":
                    results.append(
                        dumps(
                            {
                                "id": event["id"],
                                "status": status,
                                "reason": reason,
                                "message": message,
                                "applied_at": None,
                            }
                        )
                    )
                else:  # the common case, spelled out: ids are ULIDs, nothing to escape
                    results.append(
                        f'{{"id":"{event["id"]}","status":"{status}","reason":null,'
                        f'"message":null,"applied_at":"{applied_at}"}}'
                    )
            self._settle_members(batch)
            self.record_events(fresh, batch.applied_at)
        with t.lock:
            t.batches += 1
            t.received.update(received)
            t.accepted.update(outcomes["accepted"])
            t.duplicate.update(outcomes["duplicate"])
            t.rejected.update(outcomes["rejected"])
            t.reasons.update(reasons)
            t.replayed_rejections += replayed
            t.unknown_member_checks += batch.unknown_member_checks
            t.identifications[store] += batch.identifications
        return ('{"results":[' + ",".join(results) + "]}").encode()

    def known_events(self, ids: Sequence[str]) -> dict[str, Outcome]:
        known = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for row in self.conn.execute(
                "SELECT event_id, status, reason, message, applied_at FROM events "
                f"WHERE event_id IN ({marks})",
                chunk,
            ):
                known[row[0]] = (row[1], row[2], row[3], row[4])
        return known

    def _apply(
        self, batch: Batch, event_id: str, kind: str, payload: dict[str, Any]
    ) -> tuple[str, str] | None:
        """Apply one new event inside the batch's transaction; a refusal is (reason, message)."""
        apply = self._appliers.get(kind)
        if apply is None:
            return "UNKNOWN_TYPE", f"unknown event type {kind!r}"
        payload_store = payload.get("store_id")
        if not isinstance(payload_store, str) or not payload_store:
            return "INVALID_PAYLOAD", "payload.store_id: must be a non-empty string"
        if payload_store != batch.store:
            return "WRONG_STORE", f"payload store_id {payload_store!r} is not {batch.store!r}"
        try:
            return apply(self, batch, event_id, payload)
        except Invalid as exc:
            return "INVALID_PAYLOAD", str(exc)

    def _record_checks(self, batch: Batch) -> None:
        """Record the batch's checks; a check key is applied once, whatever event carries it.

        A second event id for a check key already recorded is a gateway bug: it is accepted but
        not applied again, and counted (duplicate_check_keys in the admin stats).
        """
        if not batch.checks:
            return
        applied_at = batch.applied_at
        rows = [(*row, applied_at) for row in batch.checks]
        new = rows
        inserted = self.conn.executemany(
            "INSERT INTO checks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1) "
            "ON CONFLICT DO NOTHING",
            rows,
        ).rowcount
        if inserted != len(rows):  # some keys were there already (or twice in this batch)
            new = []
            for row in rows:
                first = self.conn.execute(
                    "SELECT event_id FROM checks WHERE store_id = ? AND business_date = ? "
                    "AND wsid = ? AND check_no = ?",
                    row[:4],
                ).fetchone()
                if first[0] == row[4]:
                    new.append(row)
                else:
                    self.conn.execute(
                        "UPDATE checks SET event_count = event_count + 1 WHERE store_id = ? "
                        "AND business_date = ? AND wsid = ? AND check_no = ?",
                        row[:4],
                    )
        deltas = batch.deltas
        for row in new:
            member_id = row[5]
            if member_id is None:
                continue
            delta = deltas.get(member_id)
            if delta is None:
                delta = deltas[member_id] = [0, 0, 0, 0]
            if row[10] == "lottery":  # the points went to the wallet and tickets
                delta[1] += row[9]
                delta[2] += row[8]
            else:
                delta[0] += row[7]
            delta[3] += 1

    def _settle_members(self, batch: Batch) -> None:
        """Add the batch's points to the members it touched, once per member, and publish them."""
        self._record_checks(batch)
        if batch.deltas:
            members = sorted(batch.deltas)
            found: set[str] = set()
            for start in range(0, len(members), 500):
                chunk = members[start : start + 500]
                marks = ",".join("?" * len(chunk))
                found.update(
                    row[0]
                    for row in self.conn.execute(
                        f"SELECT member_id FROM members WHERE member_id IN ({marks})", chunk
                    )
                )
            applied_at = batch.applied_at
            deltas = batch.deltas
            self.add_balances(
                [(deltas[m][0], deltas[m][1], applied_at, m) for m in members if m in found]
            )
            tickets = [(m, deltas[m][2]) for m in members if m in found and deltas[m][2]]
            if tickets:
                self.conn.executemany(_ADD_TICKETS, tickets)
            batch.unknown_member_checks += sum(
                d[3] for m, d in batch.deltas.items() if m not in found
            )
            batch.touched.update(found)
        self.emit([("member", m, "member") for m in sorted(batch.touched)])

    def _check_posted(
        self, batch: Batch, event_id: str, p: dict[str, Any]
    ) -> tuple[str, str] | None:
        # Checked field by field without helpers: this runs for every check of every store.
        get = p.get
        business_date = get("business_date", MISSING)
        if not is_date(business_date):
            invalid("business_date", business_date, "must be a date YYYY-MM-DD")
        for name in _CHECK_INTEGERS:
            if type(get(name, MISSING)) is not int:
                invalid(name, get(name, MISSING), "must be an integer")
        member_id = get("member_id", MISSING)
        if member_id is not None and (type(member_id) is not str or not member_id):
            invalid("member_id", member_id, "must be a non-empty string or null")
        for name in ("subtotal", "total"):
            value = get(name, MISSING)
            if type(value) is not str or AMOUNT.fullmatch(value) is None:
                invalid(name, value, 'must be a decimal string like "12.50"')
        items = get("items", MISSING)
        if type(items) is not list:
            invalid("items", items, "must be a list")
        for index, item in enumerate(items):
            if type(item) is not dict:
                invalid(f"items[{index}]", item, "must be an object")
            qty, obj, total = (
                item.get("qty", MISSING),
                item.get("object", MISSING),
                item.get("total", MISSING),
            )
            if type(qty) is not str or QTY.fullmatch(qty) is None:
                invalid(f"items[{index}].qty", qty, 'must be a decimal string like "1.500"')
            if type(obj) is not int:
                invalid(f"items[{index}].object", obj, "must be an integer")
            if type(total) is not str or AMOUNT.fullmatch(total) is None:
                invalid(f"items[{index}].total", total, 'must be a decimal string like "12.50"')
        for name in ("coupons", "unknown_coupon_refs"):
            value = get(name, MISSING)
            if type(value) is not list or not all(type(v) is str for v in value):
                invalid(name, value, "must be a list of strings")
        earn_mode = get("earn_mode", MISSING)
        if earn_mode not in ("points", "lottery"):
            invalid("earn_mode", earn_mode, "must be one of points, lottery")
        rules_version = get("rules_version", MISSING)
        if type(rules_version) is not str or not rules_version:
            invalid("rules_version", rules_version, "must be a non-empty string")
        earned = (p["points_earned"], p["tickets_earned"], p["wallet_delta"], earn_mode)
        batch.checks.append(
            (
                batch.store,
                business_date,
                p["wsid"],
                p["check"],
                event_id,
                member_id,
                p["total"],
                *earned,
            )
        )
        return None

    def _coupon_redeemed(
        self, batch: Batch, event_id: str, p: dict[str, Any]
    ) -> tuple[str, str] | None:
        f = Fields(p, "payload.")
        code = f.required_text("code")
        f.required_text("coupon_ref")
        business_date = f.date("business_date")
        wsid, check = f.required_int("wsid"), f.required_int("check")
        member_id = f.text("member_id", nullable=True)
        coupon = self.conn.execute(
            "SELECT data FROM coupons WHERE code = ?" + self.for_update, (code,)
        ).fetchone()
        if coupon is None:
            return "UNKNOWN_COUPON", f"no coupon {code!r}"
        check_key = (code, batch.store, business_date, wsid, check)
        if self.conn.execute(
            "SELECT 1 FROM redemptions WHERE code = ? AND store_id = ? AND business_date = ? "
            "AND wsid = ? AND check_no = ?",
            check_key,
        ).fetchone():
            return None  # this check's redemption is already counted
        approval = self.conn.execute(
            "SELECT authorization_id FROM authorizations WHERE code = ? AND store_id = ? "
            "AND business_date = ? AND wsid = ? AND check_no = ? AND state = 'pending'",
            check_key,
        ).fetchone()
        if approval is not None:
            self.conn.execute(
                "UPDATE authorizations SET state = 'consumed', updated_at = ? "
                "WHERE authorization_id = ?",
                (batch.applied_at, approval[0]),
            )
        else:
            limit = json.loads(coupon[0]).get("max_redemptions")
            if isinstance(limit, int) and self._coupon_usage(code) >= limit:
                self.conn.execute(
                    "INSERT INTO conflicts VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (event_id, *check_key[:2], business_date, wsid, check, batch.applied_at),
                )
                return "COUPON_CONFLICT", f"{code} was already redeemed up to its limit ({limit})"
        self.conn.execute(
            "INSERT INTO redemptions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*check_key, event_id, member_id, approval[0] if approval else None, batch.applied_at),
        )
        return None

    def _coupon_released(
        self, batch: Batch, event_id: str, p: dict[str, Any]
    ) -> tuple[str, str] | None:
        f = Fields(p, "payload.")
        code = f.required_text("code")
        f.required_text("coupon_ref")
        f.choice("reason", ("void", "expired"))
        wsid, check = f.integer("wsid", optional=True), f.integer("check", optional=True)
        sql = (
            "UPDATE authorizations SET state = 'cancelled', updated_at = ? "
            "WHERE code = ? AND store_id = ? AND state = 'pending'"
        )
        args: tuple[Any, ...] = (batch.applied_at, code, batch.store)
        if wsid is not None and check is not None:
            sql += " AND wsid = ? AND check_no = ?"
            args += (wsid, check)
        self.conn.execute(sql, args)
        return None

    def _consent_changed(
        self, batch: Batch, event_id: str, p: dict[str, Any]
    ) -> tuple[str, str] | None:
        f = Fields(p, "payload.")
        member_id = f.required_text("member_id")
        f.choice("program", ("lottery",))
        consent = f.boolean("consent")
        earn_mode = f.choice("earn_mode", ("points", "lottery"))
        f.required_int("wsid")
        if not self.set_consent(member_id, earn_mode, consent):
            return "UNKNOWN_MEMBER", f"no member {member_id!r}"
        batch.touched.add(member_id)
        return None

    def _member_identified(
        self, batch: Batch, event_id: str, p: dict[str, Any]
    ) -> tuple[str, str] | None:
        f = Fields(p, "payload.")
        f.required_text("member_id")
        f.required_int("wsid")
        f.required_int("rvc")
        f.required_int("check")
        batch.identifications += 1
        return None

    _appliers: ClassVar[dict[str, _Applier]] = {
        "check.posted": _check_posted,
        "coupon.redeemed": _coupon_redeemed,
        "coupon.released": _coupon_released,
        "consent.changed": _consent_changed,
        "member.identified": _member_identified,
    }

    def _coupon_usage(self, code: str) -> int:
        """Redemptions plus approvals not yet redeemed or released: what a limit is checked on."""
        row = self.conn.execute(
            "SELECT (SELECT COUNT(*) FROM redemptions WHERE code = ?) + (SELECT COUNT(*) FROM "
            "authorizations WHERE code = ? AND state = 'pending')",
            (code, code),
        ).fetchone()
        return int(row[0])

    # ---- coupon authorizations ----

    def authorize(self, code: str, body: object, gateway_id: str) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(400, "BAD_REQUEST", "the body must be a JSON object")
        f = Fields(body)
        try:
            store = f.required_text("store_id")
            f.required_text("gateway_id")
            member_id = f.text("member_id", nullable=True)
            check = f.obj("check")
            business_date = check.date("business_date")
            wsid, check_no = check.required_int("wsid"), check.required_int("check")
            key = f.required_text("idempotency_key")
        except Invalid as exc:
            raise ApiError(400, "BAD_REQUEST", str(exc)) from None
        now_dt = self.shared.clock()
        with self.transaction():
            # Locks the coupon's row where there are several writers: one decision at a time.
            row = self.conn.execute(
                "SELECT data FROM coupons WHERE code = ?" + self.for_update, (code,)
            ).fetchone()
            prior = self.conn.execute(
                "SELECT authorization_id, state FROM authorizations WHERE idempotency_key = ?",
                (key,),
            ).fetchone()
            if prior is not None and prior[1] != "cancelled":
                return _approved(prior[0])
            reason = self._refusal(row, code, member_id, now_dt)
            if reason is not None:
                return {"status": "declined", "reason": reason, "authorization_id": None}
            now = self.stamp()
            if prior is not None:  # released, then scanned again on the same check
                self.conn.execute(
                    "UPDATE authorizations SET state = 'pending', updated_at = ? "
                    "WHERE idempotency_key = ?",
                    (now, key),
                )
                return _approved(prior[0])
            authorization_id = "AUTH-" + secrets.token_hex(10).upper()
            tail = (wsid, check_no, now, now)
            self.conn.execute(
                "INSERT INTO authorizations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
                (key, authorization_id, code, store, gateway_id, member_id, business_date, *tail),
            )
        return _approved(authorization_id)

    def _refusal(self, row: Any, code: str, member_id: str | None, now: Any) -> str | None:
        if row is None:
            return "UNKNOWN_COUPON"
        coupon = Coupon.model_validate_json(row[0])
        if coupon.status == "void":
            return "VOID"
        if coupon.member_id is not None and coupon.member_id != member_id:
            return "WRONG_MEMBER"
        if coupon.valid_from is not None and now < coupon.valid_from:
            return "NOT_YET_VALID"
        if coupon.valid_to is not None and now > coupon.valid_to:
            return "EXPIRED"
        limit = coupon.max_redemptions
        if limit is not None and self._coupon_usage(code) >= limit:
            return "ALREADY_REDEEMED"
        return None

    # ---- catalog and heartbeat ----

    def put_catalog(self, store: str, body: object) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(400, "BAD_REQUEST", "the body must be a JSON object")
        f = Fields(body)
        try:
            if f.required_text("store_id") != store:
                raise ApiError(400, "WRONG_STORE", "store_id is not the path's store")
            generated_at = f.stamp("generated_at")
            content_hash = f.required_text("content_hash")
            products = f.objects("products")
            for product in products:
                product.required_int("object_number")
                if not isinstance(product.data.get("name"), str):
                    raise Invalid(product.prefix + "name", "must be a string")
                for group in ("family_group", "major_group"):
                    if group not in product.data or type(product.data[group]) not in (
                        str,
                        int,
                        type(None),
                    ):
                        raise Invalid(product.prefix + group, "must be a string, integer or null")
                prices = product.data.get("prices")
                if not isinstance(prices, list) or not all(
                    isinstance(p, str) and AMOUNT.fullmatch(p) for p in prices
                ):
                    raise Invalid(product.prefix + "prices", "must be a list of decimal strings")
                product.boolean("active")
        except Invalid as exc:
            raise ApiError(400, "BAD_REQUEST", str(exc)) from None
        with self.transaction():
            row = self.conn.execute(
                "SELECT content_hash FROM catalogs WHERE store_id = ?", (store,)
            ).fetchone()
            if row is not None and row[0] == content_hash:
                return {"status": "unchanged", "content_hash": content_hash}
            self.conn.execute(
                "INSERT INTO catalogs VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (store_id) DO UPDATE "
                "SET content_hash = excluded.content_hash, generated_at = excluded.generated_at, "
                "products = excluded.products, received_at = excluded.received_at, "
                "data = excluded.data",
                (store, content_hash, generated_at, len(products), self.stamp(), dumps(body)),
            )
        return {"status": "stored", "content_hash": content_hash}

    def heartbeat(self, store: str, body: object) -> None:
        if not isinstance(body, dict):
            raise ApiError(400, "BAD_REQUEST", "the body must be a JSON object")
        f = Fields(body)
        try:
            gateway_id = f.required_text("gateway_id")
            if not isinstance(body.get("version"), str):
                raise Invalid("version", "must be a string")
            f.stamp("sent_at")
            if f.required_int("queue_depth") < 0:
                raise Invalid("queue_depth", "must not be negative")
            age = f.raw("oldest_event_age_s")
            if age is not None and (type(age) not in (int, float) or age < 0):
                raise Invalid("oldest_event_age_s", "must be a number of seconds or null")
            f.text("cursor", nullable=True)
            for name, adapter in f.obj("adapters").data.items():
                a = Fields(adapter if isinstance(adapter, dict) else {}, f"adapters.{name}.")
                if not isinstance(adapter, dict) or not isinstance(adapter.get("state"), str):
                    raise Invalid(f"adapters.{name}.state", "must be a string")
                a.required_int("connections")
            f.required_int("dead_letters")
        except Invalid as exc:
            raise ApiError(400, "BAD_REQUEST", str(exc)) from None
        self.conn.execute(
            "INSERT INTO heartbeats VALUES (?, ?, ?, ?) ON CONFLICT (gateway_id) DO UPDATE "
            "SET store_id = excluded.store_id, received_at = excluded.received_at, "
            "data = excluded.data",
            (gateway_id, store, self.stamp(), dumps(body)),
        )

    # ---- admin views ----

    def stats(self) -> dict[str, Any]:
        t, c = self.tallies, self.conn

        def one(sql: str) -> int:
            return int(c.execute(sql).fetchone()[0])

        heartbeats = {
            gateway: {"store_id": store, "received_at": at, "heartbeat": json.loads(data)}
            for gateway, store, at, data in c.execute("SELECT * FROM heartbeats").fetchall()
        }
        catalogs = {
            store: {"content_hash": h, "generated_at": g, "products": n, "received_at": at}
            for store, h, g, n, at in c.execute(
                "SELECT store_id, content_hash, generated_at, products, received_at FROM catalogs"
            ).fetchall()
        }
        with t.lock:
            events = {
                "received": dict(t.received),
                "accepted": dict(t.accepted),
                "duplicate": dict(t.duplicate),
                "rejected": dict(t.rejected),
            }
            counters = {
                "rejections": dict(t.reasons),
                "replayed_rejections": t.replayed_rejections,
                "batches": t.batches,
                "bad_batches": t.bad_batches,
            }
            unknown_member_checks = t.unknown_member_checks
            identifications = dict(t.identifications)
        return {
            "events": events,
            **counters,
            "checks": one("SELECT COUNT(*) FROM checks"),
            "duplicate_check_keys": one("SELECT COUNT(*) FROM checks WHERE event_count > 1"),
            "unknown_member_checks": unknown_member_checks,
            "identifications": identifications,
            "members": one("SELECT COUNT(*) FROM members"),
            "coupons": one("SELECT COUNT(*) FROM coupons"),
            "change_seq": self.change_seq(),
            "redemptions": one("SELECT COUNT(*) FROM redemptions"),
            "coupon_conflicts": one("SELECT COUNT(*) FROM conflicts"),
            "authorizations": {
                state: int(count)
                for state, count in c.execute(
                    "SELECT state, COUNT(*) FROM authorizations GROUP BY state"
                ).fetchall()
            },
            "heartbeats": heartbeats,
            "catalogs": catalogs,
        }

    def checks(self, store: str | None) -> list[dict[str, Any]]:
        sql = (
            "SELECT store_id, business_date, wsid, check_no, member_id, total, points_earned, "
            "tickets_earned, wallet_delta, earn_mode, event_id, event_count, applied_at FROM checks"
        )
        rows = (
            self.conn.execute(sql + " WHERE store_id = ? ORDER BY 2, 3, 4", (store,))
            if store
            else self.conn.execute(sql + " ORDER BY 1, 2, 3, 4")
        ).fetchall()
        names = (
            *("store_id", "business_date", "wsid", "check", "member_id", "total"),
            *("points_earned", "tickets_earned", "wallet_delta", "earn_mode"),
            *("event_id", "event_ids", "applied_at"),
        )
        return [dict(zip(names, row, strict=True)) for row in rows]

    # ---- the hooks: where the two dialects differ ----

    @abstractmethod
    def _transaction(self) -> contextlib.AbstractContextManager[None]:
        """Begin, then commit (or roll back on an exception)."""

    @abstractmethod
    def reading(self) -> contextlib.AbstractContextManager[None]:
        """A read-only transaction that sees one consistent state throughout."""

    def publishing(self) -> None:  # noqa: B027 (a hook that one backend leaves empty)
        """Inside a transaction, before it numbers changes: from here to the commit, no other
        publishing transaction runs. With one writer (SQLite) there is nothing to do."""

    def publish_stamp(self) -> str:
        """The stamp of a publishing transaction (`applied_at`, `balance_as_of`): after every
        stamp given before by any process; called after `publishing`."""
        return self.stamp()

    @abstractmethod
    def change_seq(self) -> int:
        """The number of the latest committed change (0: none yet)."""

    @abstractmethod
    def _emit(self, changes: Sequence[Change]) -> None: ...

    def emit(self, changes: Sequence[Change]) -> None:
        """Publish changes: each row moves to a new number, after every number given before."""
        if changes:
            self._emit(changes)
            self._published = True

    def claim_events(self, ids: Sequence[str]) -> dict[str, Outcome]:
        """Inside the batch's transaction: the outcome of each id seen before; every other id is
        this transaction's to apply (with one writer, reading is claiming)."""
        return self.known_events(ids)

    def record_events(self, fresh: Sequence[tuple[Any, ...]], applied_at: str) -> None:
        """Store the outcomes of the events this transaction applied."""
        self.conn.executemany(
            f"INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, '{applied_at}')", fresh
        )

    @abstractmethod
    def add_balances(self, rows: Sequence[tuple[int, int, str, str]]) -> None:
        """(points, wallet points, balance_as_of, member id): add to the member's record."""

    @abstractmethod
    def set_consent(self, member_id: str, earn_mode: str, consent: bool) -> bool:
        """Set `earn_mode` and `lottery_consent` in the member's record; False: no such member."""

    @abstractmethod
    def make_members(self, count: int, now: str) -> None:
        """Members SYN0000001..count that are not there yet, and their changes."""

    def try_build_lock(self) -> bool:
        """On a connection of its own: True when no other process is building a snapshot."""
        return True


def _approved(authorization_id: str) -> dict[str, Any]:
    return {"status": "approved", "reason": None, "authorization_id": authorization_id}
