"""Events: a batch applied in one transaction, each event exactly once, by its id.

`ingest` claims the batch's event ids (an id seen before gets its first outcome again), applies
each new event by its type, then settles the members it touched once per batch: their points
added, their records published. Check keys are applied once, whatever event carries them.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from sync.central.errors import ApiError, Invalid
from sync.central.fields import AMOUNT, MISSING, QTY, Fields, check_batch, dumps, invalid, is_date
from sync.central.ledger.base import Refusal
from sync.central.ledger.coupons import Coupons

_ADD_TICKETS = """INSERT INTO tickets VALUES (?, ?) ON CONFLICT (member_id)
    DO UPDATE SET tickets = tickets.tickets + excluded.tickets"""
_CHECK_INTEGERS = ("wsid", "rvc", "check", "points_earned", "tickets_earned", "wallet_delta")


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


# How one event type is applied: (ledger, batch, event id, payload) -> None or a refusal.
_Applier = Callable[["Events", Batch, str, dict[str, Any]], Refusal | None]


class Events(Coupons):
    """The ledger's events; built on `Coupons`, as a redemption is one of them."""

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

    def _apply(
        self, batch: Batch, event_id: str, kind: str, payload: dict[str, Any]
    ) -> Refusal | None:
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
            select = "SELECT member_id FROM members WHERE member_id"
            found: set[str] = {row[0] for row in self.rows_in(select, members)}
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

    def _check_posted(self, batch: Batch, event_id: str, p: dict[str, Any]) -> Refusal | None:
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

    def _consent_changed(self, batch: Batch, event_id: str, p: dict[str, Any]) -> Refusal | None:
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

    def _member_identified(self, batch: Batch, event_id: str, p: dict[str, Any]) -> Refusal | None:
        f = Fields(p, "payload.")
        f.required_text("member_id")
        f.required_int("wsid")
        f.required_int("rvc")
        f.required_int("check")
        batch.identifications += 1
        return None

    _appliers: ClassVar[dict[str, _Applier]] = {
        "check.posted": _check_posted,
        "coupon.redeemed": Coupons._coupon_redeemed,
        "coupon.released": Coupons._coupon_released,
        "consent.changed": _consent_changed,
        "member.identified": _member_identified,
    }
