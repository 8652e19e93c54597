"""The fleet: the stores central knows, each gateway's heartbeat and how far its cache cursor
stood behind central's changes, and the chain-wide stop switch.

A store is known from its requests (`saw_store`, called by the API guard at most every
`SEEN_EVERY_S` per store and process) and from its heartbeats. When a heartbeat arrives, its
`cursor` is unsealed and compared with central's changes at that moment: the lag is the number
of change rows after the cursor (each changed record once, latest wins), that is what the
store's next `changes` pages would have brought. Central's changes carry no time, so the lag is
counted in changes; `behind_since` (the first heartbeat of a run that found the store behind)
says for how long.

The stop switch publishes a new version of the rules document with `programs.<name>.paused`
set, in one publishing transaction (a switch through two central processes at once is applied
one after the other), so it reaches stores like any rules change: through `changes`.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from gateway.domain.rules_doc import RulesDocument
from sync.central.errors import ApiError, Invalid
from sync.central.fields import Fields, dumps, first_error
from sync.central.ledger.changes import Changes
from sync.central.ledger.records import Records

PROGRAMS = ("lottery",)  # what a gateway can pause (`programs.<name>.paused`)
# The suffix a switch puts on the rules version; the next switch replaces it, not adds to it.
_SWITCHED = re.compile(r"\+[a-z0-9_]+-(?:paused|resumed)-\d{8}T\d{6}(?:\.\d{1,6})?Z\Z")
_MAX_VERSION = 64  # RulesDocument.version's limit


@dataclass(frozen=True, slots=True)
class FleetRows:
    """What the fleet view is made of, read in one consistent view of the database."""

    stores: list[tuple[str, str, str, str]]  # store_id, first_seen_at, last_seen_at, gateway_id
    # gateway_id, store_id, received_at, heartbeat (the body), cursor_mode, cursor_seq,
    # central_seq, lag, behind_since (the last five null for a heartbeat from before the fleet)
    heartbeats: list[tuple[Any, ...]]
    change_seq: int
    rules: dict[str, Any] | None


def switched_version(version: str, program: str, paused: bool, stamp: str) -> str:
    """The version of the document a switch publishes: the version it was made from (without an
    earlier switch's suffix), `+lottery-paused-` or `-resumed-`, and central's stamp."""
    base = _SWITCHED.sub("", version) or "rules"
    compact = stamp.replace("-", "").replace(":", "")
    suffix = f"+{program}-{'paused' if paused else 'resumed'}-{compact}"
    return base[: max(1, _MAX_VERSION - len(suffix))] + suffix


class Fleet(Records, Changes):
    """The ledger's view of the fleet: heartbeats in, the stores seen, the chain's stop switch."""

    def heartbeat(self, store: str, body: object) -> None:
        """Keep the gateway's heartbeat (last one wins) and where its cursor stood."""
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
            cursor = f.text("cursor", nullable=True)
            for name, adapter in f.obj("adapters").data.items():
                a = Fields(adapter if isinstance(adapter, dict) else {}, f"adapters.{name}.")
                if not isinstance(adapter, dict) or not isinstance(adapter.get("state"), str):
                    raise Invalid(f"adapters.{name}.state", "must be a string")
                a.required_int("connections")
            f.required_int("dead_letters")
        except Invalid as exc:
            raise ApiError(400, "BAD_REQUEST", str(exc)) from None
        with self.transaction():
            now = self.stamp()
            self.conn.execute(
                "INSERT INTO heartbeats VALUES (?, ?, ?, ?) ON CONFLICT (gateway_id) DO UPDATE "
                "SET store_id = excluded.store_id, received_at = excluded.received_at, "
                "data = excluded.data",
                (gateway_id, store, now, dumps(body)),
            )
            self._note_cursor(gateway_id, cursor, now)

    def cursor_position(self, cursor: str | None) -> tuple[str, int | None]:
        """(mode, change number) of a store's cursor: `delta` (up to date to that number),
        `snapshot` (still paging its first full snapshot), `none` (no cursor yet) or `unknown`
        (not a cursor of this database: the store starts again from an empty one)."""
        if not cursor:
            return "none", None
        try:
            state = self._unseal(cursor)
        except ApiError:
            return "unknown", None
        if state.get("m") == "d":
            return "delta", int(state["s"])
        if state.get("m") == "s":
            return "snapshot", int(state["s"])
        return "unknown", None

    def _note_cursor(self, gateway_id: str, cursor: str | None, now: str) -> None:
        mode, seq = self.cursor_position(cursor)
        central = self.change_seq()
        lag: int | None = None
        if mode == "delta":
            assert seq is not None
            lag = int(
                self.conn.execute("SELECT COUNT(*) FROM changes WHERE seq > ?", (seq,)).fetchone()[
                    0
                ]
            )
        row = self.conn.execute(
            "SELECT behind_since FROM heartbeat_cursors WHERE gateway_id = ?", (gateway_id,)
        ).fetchone()
        behind_since = None if lag == 0 else (row[0] if row and row[0] else now)
        self.conn.execute(
            "INSERT INTO heartbeat_cursors VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (gateway_id) "
            "DO UPDATE SET cursor_mode = excluded.cursor_mode, cursor_seq = excluded.cursor_seq, "
            "central_seq = excluded.central_seq, lag = excluded.lag, "
            "behind_since = excluded.behind_since",
            (gateway_id, mode, seq, central, lag, behind_since),
        )

    def saw_store(self, store: str, gateway_id: str) -> None:
        """A request from `store` (through `gateway_id`) arrived now."""
        with self.transaction():
            now = self.stamp()
            # Stamps of two central processes may cross: last_seen_at only moves forward.
            self.conn.execute(
                "INSERT INTO stores VALUES (?, ?, ?, ?) ON CONFLICT (store_id) DO UPDATE "
                "SET last_seen_at = excluded.last_seen_at, gateway_id = excluded.gateway_id "
                "WHERE stores.last_seen_at < excluded.last_seen_at",
                (store, now, now, gateway_id),
            )

    def fleet_rows(self) -> FleetRows:
        with self.reading():
            stores = [
                (str(a), str(b), str(c), str(d))
                for a, b, c, d in self.conn.execute(
                    "SELECT store_id, first_seen_at, last_seen_at, gateway_id FROM stores"
                ).fetchall()
            ]
            heartbeats = [
                (g, s, at, json.loads(data), mode, cseq, central, lag, since)
                for g, s, at, data, mode, cseq, central, lag, since in self.conn.execute(
                    "SELECT h.gateway_id, h.store_id, h.received_at, h.data, c.cursor_mode, "
                    "c.cursor_seq, c.central_seq, c.lag, c.behind_since FROM heartbeats h "
                    "LEFT JOIN heartbeat_cursors c ON c.gateway_id = h.gateway_id"
                ).fetchall()
            ]
            return FleetRows(stores, heartbeats, self.change_seq(), self.rules_document())

    def switch_program(self, program: str, paused: bool, by: str) -> dict[str, Any]:
        """Pause or resume `program` for every store: a new rules document version with
        `programs.<program>` = {"paused", "by", "at"}; nothing is published when the program
        is already so. The document in force at stores must be central's: one that takes
        effect later (`effective_from` ahead) or does not validate is refused (409), as a
        switch in it would not reach the registers now."""
        if program not in PROGRAMS:
            raise ApiError(404, "UNKNOWN_PROGRAM", f"no program {program!r}: {', '.join(PROGRAMS)}")
        with self.transaction():
            self.publishing()
            current = self.rules_document()
            document: dict[str, Any] = dict(current) if current else {"version": "default"}
            if current is not None:
                try:
                    rules = RulesDocument.model_validate(current)
                except ValidationError as exc:
                    raise ApiError(
                        409,
                        "RULES_INVALID",
                        f"the published rules document does not validate ({first_error(exc)}): "
                        "stores skip it; publish a valid one (PUT /_admin/rules)",
                    ) from None
                now = self.shared.clock()
                if rules.effective_from is not None and rules.effective_from > now:
                    raise ApiError(
                        409,
                        "RULES_NOT_IN_FORCE",
                        f"the published rules document {rules.version!r} takes effect at "
                        f"{current.get('effective_from')}: stores apply an older one until then. "
                        "Publish a document in force now (PUT /_admin/rules) with the switch in "
                        "its programs, or pause each store",
                    )
            listed = document.get("programs")
            programs: dict[str, Any] = dict(listed) if isinstance(listed, dict) else {}
            found = programs.get(program)
            switch: dict[str, Any] = dict(found) if isinstance(found, dict) else {}
            if bool(switch.get("paused", False)) == paused:
                return {
                    "program": program,
                    "paused": paused,
                    "changed": False,
                    "version": None if current is None else document["version"],
                    "by": switch.get("by"),
                    "at": switch.get("at"),
                }
            stamp = self.publish_stamp()
            switch.update(paused=paused, by=by, at=stamp)
            programs[program] = switch
            document["programs"] = programs
            document["version"] = switched_version(str(document["version"]), program, paused, stamp)
            self.write_rules(document)
        return {
            "program": program,
            "paused": paused,
            "changed": True,
            "version": document["version"],
            "by": by,
            "at": stamp,
        }


def parse_stamp(stamp: str) -> dt.datetime:
    """Central's stamp (RFC 3339 UTC) as an aware datetime."""
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00").replace("z", "+00:00"))
