"""What stores read: pages of changes behind sealed cursors, and snapshots (exported, stored).

A cursor is sealed with the database's key (HMAC), so every process reads every cursor and a
store cannot make one up. From an empty cursor `changes` pages every record (keyset pages on
each table's key), then carries on with the deltas numbered since it began.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sync.central.errors import ApiError
from sync.central.fields import dumps
from sync.central.ledger.base import LedgerBase

SNAPSHOT_PAGE = 5000  # records per query while a snapshot is exported


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


class Changes(LedgerBase):
    """The ledger's way out to stores: change pages, snapshot exports and their stored files."""

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
