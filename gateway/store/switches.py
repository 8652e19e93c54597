"""Choices made at this store: a member's earn mode (lottery consent at the register) and the
program switches (`edge-gateway pause lottery`)."""

from __future__ import annotations

import datetime as dt
import sqlite3

from gateway.domain.models import OutboxEvent
from gateway.store.connections import StorePart, utc_stamp
from gateway.store.outbox import insert_events


class Switches(StorePart):
    """Members' earn-mode choices and the program switches."""

    async def set_earn_mode(
        self, member_id: str, *, earn_mode: str, consent: bool, event: OutboxEvent
    ) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE members SET earn_mode = ?, lottery_consent = ?,"
                " record = json_set(record, '$.earn_mode', ?, '$.lottery_consent', json(?))"
                " WHERE member_id = ?",
                (earn_mode, int(consent), earn_mode, "true" if consent else "false", member_id),
            )
            insert_events(conn, [event])

        await self.writer.submit(job, small=True)
        self._outbox_changed()

    def program_paused(self, program: str) -> bool:
        return self._paused(program)

    async def set_program_paused(self, program: str, paused: bool, *, by: str) -> None:
        now_s = utc_stamp(dt.datetime.now(dt.UTC))

        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO program_switches VALUES (?, ?, ?, ?)",
                (program, int(paused), now_s, by),
            )

        await self.writer.submit(job)
        self._held.paused = None
