"""The outbox towards central: events appended with the writes that caused them, handed out in
batches, settled by central's per-event results, and dead letters for what central rejected."""

from __future__ import annotations

import datetime as dt
import json
import re
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.domain.ids import new_ulid
from gateway.domain.models import OutboxEvent
from gateway.store.connections import StorePart, utc_stamp

COUPON_CONFLICT = "COUPON_CONFLICT"

INSERT_EVENT = "INSERT INTO outbox (event_id, type, occurred_at, payload) VALUES (?, ?, ?, ?)"

EventRow = tuple[str, str, str, str]  # the columns of INSERT_EVENT, in its order


def event_rows(events: Iterable[OutboxEvent]) -> list[EventRow]:
    return [
        (e.event_id, e.type, e.occurred_at, json.dumps(e.payload, separators=(",", ":")))
        for e in events
    ]


def insert_events(conn: sqlite3.Connection, events: Iterable[OutboxEvent]) -> None:
    """Add events to the outbox in the caller's transaction."""
    conn.executemany(INSERT_EVENT, event_rows(events))


@dataclass(frozen=True, slots=True)
class QueuedEvent:
    """An event as the outbox holds it: its payload stays the JSON text written at commit, so
    sending it costs no parse and no re-encoding; `payload` parses it when needed."""

    event_id: str
    type: str
    occurred_at: str
    payload_json: str

    @property
    def payload(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.payload_json)
        return parsed


@dataclass(frozen=True, slots=True)
class OutboxBatch:
    batch_id: str
    events: list[QueuedEvent]


@dataclass(frozen=True, slots=True)
class EventResult:
    """Central's answer for one event (DESIGN.md section 3)."""

    event_id: str
    status: str  # accepted | duplicate | rejected
    reason: str | None = None
    applied_at: str | None = None


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    delivered: int
    dead_letters: int
    conflicts: int
    unanswered: int


_OUR_STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def _central_stamp(text: str | None) -> str | None:
    """Central's RFC 3339 stamp in our one shape, so that it compares as text with
    `balance_as_of` (also stored through `utc_stamp`); None when it cannot be read."""
    if not text:
        return None
    if _OUR_STAMP.fullmatch(text):
        return text
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return utc_stamp(moment)


def _outbox_row(row: Sequence[Any]) -> QueuedEvent:
    return QueuedEvent(str(row[0]), str(row[1]), str(row[2]), str(row[3]))


class Outbox(StorePart):
    """Events waiting for central, their batches and the dead letters."""

    async def append_events(self, events: Sequence[OutboxEvent], *, durable: bool = True) -> None:
        def job(conn: sqlite3.Connection) -> None:
            insert_events(conn, events)

        await self.writer.submit(job, durable=durable)
        self._outbox_changed()

    def append_events_nowait(self, events: Sequence[OutboxEvent]) -> None:
        """Queue events that ride with the next commit (identification events): the register
        does not wait for them, and they cost no commit of their own."""

        def job(conn: sqlite3.Connection) -> None:
            insert_events(conn, events)

        self.writer.add_rider(job)

    async def next_batch(
        self, max_events: int, max_bytes: int, in_flight: Sequence[str] = ()
    ) -> OutboxBatch | None:
        """The batch to send next: an unfinished one (sent before a restart or a failure, with
        the same id and events), else the oldest events that fit, stamped with a new batch id.
        Batches `in_flight` (being sent right now) are not offered again."""
        rows = await self._reader.execute_fetchall(
            "SELECT batch_id FROM outbox WHERE batch_id IS NOT NULL"
            " AND batch_id NOT IN (SELECT value FROM json_each(?)) ORDER BY seq LIMIT 1",
            (json.dumps(list(in_flight)),),
        )
        unfinished = next(iter(rows), None)
        if unfinished is not None:
            batch_id = str(unfinished[0])
            rows = await self._reader.execute_fetchall(
                "SELECT event_id, type, occurred_at, payload FROM outbox WHERE batch_id = ?"
                " ORDER BY seq",
                (batch_id,),
            )
            return OutboxBatch(batch_id, [_outbox_row(r) for r in rows])
        rows = await self._reader.execute_fetchall(
            "SELECT event_id, type, occurred_at, payload FROM outbox WHERE batch_id IS NULL"
            " ORDER BY seq LIMIT ?",
            (max_events,),
        )
        events: list[QueuedEvent] = []
        size = 0
        for row in rows:
            size += len(row[3]) + len(row[0]) + len(row[1]) + len(row[2]) + 64
            if events and size > max_bytes:
                break
            events.append(_outbox_row(row))
        if not events:
            return None
        batch_id = new_ulid()
        ids = json.dumps([e.event_id for e in events])

        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE outbox SET batch_id = ?, attempts = attempts + 1"
                " WHERE event_id IN (SELECT value FROM json_each(?))",
                (batch_id, ids),
            )

        # Not worth an fsync: losing the stamp only means the events go in a new batch.
        await self.writer.submit(job, durable=False)
        return OutboxBatch(batch_id, events)

    async def finish_batch(
        self, batch: OutboxBatch, results: Sequence[EventResult]
    ) -> BatchOutcome:
        """Apply central's per-event results: delivered events leave the outbox (their ledger
        entries get central's `applied_at`), rejected ones go to dead letters (or, for a coupon
        central found used elsewhere, to offline conflicts), and events central did not answer
        go back to the queue to be sent again."""
        by_id = {e.event_id: e for e in batch.events}
        now_s = utc_stamp(dt.datetime.now(dt.UTC))
        delivered: list[tuple[str]] = []
        applied: list[tuple[str, str]] = []
        dead: list[tuple[str, str, str, str, str, str]] = []
        conflicts: list[tuple[Any, ...]] = []
        answered: set[str] = set()
        for result in results:
            event = by_id.get(result.event_id)
            if event is None or result.event_id in answered:
                continue  # not ours, or answered twice: the first answer counts
            answered.add(result.event_id)
            if result.status in ("accepted", "duplicate"):
                delivered.append((event.event_id,))
                stamp = _central_stamp(result.applied_at)
                if stamp is not None:
                    applied.append((stamp, event.event_id))
            elif result.reason == COUPON_CONFLICT and event.type == "coupon.redeemed":
                p = event.payload
                conflicts.append(
                    (
                        event.event_id,
                        p.get("code", ""),
                        p.get("coupon_ref"),
                        p.get("business_date"),
                        p.get("wsid"),
                        p.get("check"),
                        p.get("member_id"),
                        result.reason,
                        now_s,
                    )
                )
                delivered.append((event.event_id,))
            else:
                payload = json.dumps(event.payload, separators=(",", ":"))
                reason = result.reason or "REJECTED"
                dead.append((event.event_id, event.type, event.occurred_at, payload, reason, now_s))
                delivered.append((event.event_id,))
        unanswered = [(e.event_id,) for e in batch.events if e.event_id not in answered]

        def job(conn: sqlite3.Connection) -> None:
            conn.executemany("UPDATE ledger SET applied_at = ? WHERE event_id = ?", applied)
            conn.executemany("INSERT OR REPLACE INTO dead_letters VALUES (?,?,?,?,?,?)", dead)
            conn.executemany(
                "INSERT OR REPLACE INTO offline_conflicts VALUES (?,?,?,?,?,?,?,?,?)", conflicts
            )
            conn.executemany("DELETE FROM outbox WHERE event_id = ?", delivered)
            conn.executemany("UPDATE outbox SET batch_id = NULL WHERE event_id = ?", unanswered)

        await self.writer.submit(job)
        return BatchOutcome(
            delivered=len(delivered) - len(dead) - len(conflicts),
            dead_letters=len(dead),
            conflicts=len(conflicts),
            unanswered=len(unanswered),
        )

    async def release_batch(self, batch: OutboxBatch) -> None:
        """Give a batch's events back to the queue (central refused the batch as a whole)."""
        ids = json.dumps([e.event_id for e in batch.events])

        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE outbox SET batch_id = NULL WHERE event_id IN"
                " (SELECT value FROM json_each(?))",
                (ids,),
            )

        await self.writer.submit(job, durable=False)

    async def dead_letters(self, limit: int = 1000) -> list[dict[str, Any]]:
        rows = await self._reader.execute_fetchall(
            "SELECT event_id, type, occurred_at, reason, failed_at, payload FROM dead_letters"
            " ORDER BY failed_at LIMIT ?",
            (limit,),
        )
        names = ("event_id", "type", "occurred_at", "reason", "failed_at", "payload")
        return [dict(zip(names, row, strict=True)) for row in rows]

    async def retry_dead_letters(self, event_ids: Sequence[str] | None = None) -> int:
        """Put dead letters back in the outbox (all of them, or those named), same event ids:
        central de-duplicates, so a retry can never count anything twice."""
        chosen = json.dumps(list(event_ids)) if event_ids is not None else None

        def job(conn: sqlite3.Connection) -> int:
            where = "" if chosen is None else " WHERE event_id IN (SELECT value FROM json_each(?))"
            params: tuple[Any, ...] = () if chosen is None else (chosen,)
            moved = conn.execute(
                "INSERT OR IGNORE INTO outbox (event_id, type, occurred_at, payload)"
                " SELECT event_id, type, occurred_at, payload FROM dead_letters" + where,
                params,
            ).rowcount
            conn.execute("DELETE FROM dead_letters" + where, params)
            return int(moved)

        moved: int = await self.writer.submit(job)
        if moved:
            self._outbox_changed()
        return moved

    async def outbox_depth(self) -> tuple[int, str | None]:
        """(events waiting, occurred_at of the oldest)."""
        rows = await self._reader.execute_fetchall("SELECT COUNT(*), MIN(occurred_at) FROM outbox")
        row = next(iter(rows))
        return int(row[0]), row[1]

    async def outbox_events(self, limit: int = 1000) -> list[OutboxEvent]:
        async with self._reader.execute(
            "SELECT event_id, type, occurred_at, payload FROM outbox ORDER BY seq LIMIT ?",
            (limit,),
        ) as cur:
            rows = await cur.fetchall()
        return [OutboxEvent(r[0], r[1], r[2], json.loads(r[3])) for r in rows]
