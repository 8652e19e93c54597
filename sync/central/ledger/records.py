"""Members, coupons and the rules: central's records, as the admin API and the seed files set them.

Every write publishes the records it changed, so stores hear of them through `changes`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gateway.domain.models import Coupon, Member
from sync.central.config import ReferenceConfig
from sync.central.errors import ApiError
from sync.central.fields import dumps, first_error
from sync.central.ledger.base import LedgerBase
from sync.central.storage import read_rules

_BALANCE_KEYS = ("points_balance", "wallet_points", "balance_as_of")


class Records(LedgerBase):
    """The ledger's records: members, coupons, the rules document."""

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
            self.write_rules(document)

    def write_rules(self, document: dict[str, Any]) -> None:
        """Inside a publishing transaction: the rules document, and its `rules` change."""
        self.conn.execute(
            "INSERT INTO rules VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET data = excluded.data",
            (dumps(document),),
        )
        self.emit([("rules", "", "rules")])

    def rules_document(self) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT data FROM rules WHERE id = 1").fetchone()
        return None if row is None else dict(json.loads(row[0]))

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
