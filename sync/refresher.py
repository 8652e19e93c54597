"""Central -> cache: a full snapshot on first start, then changes by cursor on a schedule and at
once after central comes back. Each page, with the cursor after it, is applied in one transaction.

Like Home Assistant's update coordinator, it logs a failure once and the recovery once, however
many retries lie between; while central is away the cache keeps answering from what it has.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from pydantic import ValidationError

from gateway.domain.models import Coupon, Member
from gateway.domain.rules_doc import RulesDocument
from gateway.store.store import ChangePage, Store, utc_stamp
from sync.client import CentralClient, CentralError

log = structlog.get_logger("sync.refresher")

CURSOR = "changes_cursor"
SNAPSHOT_STARTED = "snapshot_started_at"
PAGE_LIMIT = 1000


@dataclass
class RefresherStats:
    pages: int = 0
    members: int = 0
    coupons: int = 0
    deletions: int = 0
    rules_versions: int = 0
    bad_records: int = 0
    unknown_kinds: Counter[str] = field(default_factory=Counter)
    failures: int = 0
    last_success: float | None = None  # wall-clock time of the last complete refresh
    snapshots: int = 0


def parse_page(changes: list[dict[str, Any]], stats: RefresherStats) -> ChangePage:
    """Central's changes -> what the cache must do. Bad records and unknown kinds are skipped
    and counted, never fatal: one bad member must not stop a store's sync."""
    members: list[Member] = []
    coupons: list[Coupon] = []
    deleted_members: list[str] = []
    deleted_coupons: list[str] = []
    rules: list[RulesDocument] = []
    for change in changes:
        kind = change.get("kind") if isinstance(change, dict) else None
        data = change.get("data") if isinstance(change, dict) else None
        try:
            if kind == "member":
                members.append(Member.model_validate(data))
            elif kind == "coupon":
                coupons.append(Coupon.model_validate(data))
            elif kind == "member_deleted" and isinstance(data, dict):
                deleted_members.append(str(data["member_id"]))
            elif kind == "coupon_deleted" and isinstance(data, dict):
                deleted_coupons.append(str(data["code"]))
            elif kind == "rules":
                rules.append(RulesDocument.model_validate(data))
                stats.rules_versions += 1
            else:
                stats.unknown_kinds[str(kind)] += 1
        except (ValidationError, KeyError, TypeError):
            stats.bad_records += 1
    # Later changes of the same record win: keep the last of each.
    members = list({m.member_id: m for m in members}.values())
    coupons = list({c.code: c for c in coupons}.values())
    stats.members += len(members)
    stats.coupons += len(coupons)
    stats.deletions += len(deleted_members) + len(deleted_coupons)
    return ChangePage(members, deleted_members, coupons, deleted_coupons, rules)


class Refresher:
    """`await refresher.run()` forever; `await refresher.refresh()` once; `wake()` to hurry."""

    def __init__(
        self,
        store: Store,
        client: CentralClient,
        *,
        interval_s: float = 30.0,
        page_limit: int = PAGE_LIMIT,
    ) -> None:
        self.store = store
        self.client = client
        self.interval_s = interval_s
        self.page_limit = page_limit
        self.stats = RefresherStats()
        self._wake = asyncio.Event()
        self._failing = False

    @property
    def cursor(self) -> str | None:
        return self.store.get_state(CURSOR)

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                await self.refresh()
                if self._failing:
                    log.info("cache_refresh_recovered")
                self._failing = False
            except CentralError as error:
                self.stats.failures += 1
                if not self._failing:
                    log.warning("cache_refresh_failed", error=str(error))
                self._failing = True
            except Exception:  # a full disk, a bug: log it, keep the schedule
                self.stats.failures += 1
                log.exception("cache_refresh_error")
                self._failing = True
            # Until the next round; `wake()` (central came back, an operator asked) cuts it short.
            pause = min(self.interval_s, 5.0) if self._failing else self.interval_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), pause)
            self._wake.clear()

    async def refresh(self, progress: Callable[[int], None] | None = None) -> int:
        """Fetch and apply pages until central has no more; returns the changes applied.

        An empty cursor asks for a full snapshot. When it is complete, the records it did not
        bring are removed; a snapshot cut short by a crash resumes from its cursor and is
        finished the same way (its start is kept in `sync_state`).
        """
        cursor = self.store.get_state(CURSOR) or ""
        snapshot_started = self.store.get_state(SNAPSHOT_STARTED)
        if cursor == "":
            snapshot_started = utc_stamp(dt.datetime.now(dt.UTC))
        applied = 0
        page = await self.client.changes(cursor, self.page_limit)
        while True:
            # Fetch the next page while this one is written: central and the disk work at once.
            following = (
                asyncio.create_task(self.client.changes(page.next_cursor, self.page_limit))
                if page.has_more
                else None
            )
            try:
                parsed = parse_page(page.changes, self.stats)
                state = [(CURSOR, page.next_cursor)]
                if snapshot_started is not None:
                    state.append((SNAPSHOT_STARTED, snapshot_started))
                await self.store.apply_changes(
                    ChangePage(
                        parsed.members,
                        parsed.deleted_members,
                        parsed.coupons,
                        parsed.deleted_coupons,
                        parsed.rules,
                        state,
                    )
                )
            except BaseException:
                if following is not None:
                    following.cancel()
                    await asyncio.gather(following, return_exceptions=True)
                raise
            applied += len(page.changes)
            self.stats.pages += 1
            if progress is not None:
                progress(len(page.changes))
            if following is None:
                break
            page = await following
        if snapshot_started is not None:
            removed = await self.store.remove_stale(snapshot_started)
            await self.store.set_state(SNAPSHOT_STARTED, None)
            self.stats.snapshots += 1
            if removed:
                log.info("snapshot_removed_stale_records", count=removed)
        self.stats.last_success = time.time()
        return applied

    async def full(self, progress: Callable[[int], None] | None = None) -> int:
        """Start over from a full snapshot (`edge-gateway sync --full`)."""
        await self.store.set_state(CURSOR, None)
        return await self.refresh(progress)
