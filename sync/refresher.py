"""Central -> cache: a full snapshot on first start, then changes by cursor on a schedule and at
once after central comes back. Each page, with the cursor after it, is applied in one transaction.

A full snapshot starts from central's snapshot file when central offers one (sync/bootstrap.py:
downloaded to the data directory, resumed when cut, checked, then applied here page by page
with the cursor it ends with); otherwise, as before, by paging `changes` from an empty cursor.

Like Home Assistant's update coordinator, its `link` (gateway.links) logs a failure once and the
recovery once, however many retries lie between; while central is away the cache keeps answering
from what it has.

Two answers of central are not taken at their word: a page that says `has_more` but hands back a
cursor already asked with (paging on would ask for the same page forever), and a full snapshot
that would remove more than `central.max_removal_share` of the cache (an empty or truncated
snapshot must not wipe a store's members; `sync --full --allow-mass-removal` overrides).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import functools
import json
import random
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import structlog
from pydantic import ValidationError
from pydantic_core import to_json

from gateway.domain.models import Coupon, EarnMode, Member
from gateway.domain.rules_doc import RulesDocument
from gateway.links import Link, LinkEvents
from gateway.store.cache import MemberRecord
from gateway.store.store import ChangePage, StaleRecords, Store, utc_stamp
from sync.bootstrap import BOOTSTRAP_JITTER_S, SnapshotDownload, SnapshotFile
from sync.client import CentralClient, CentralError, ChangesPage

# How long central may hold a changes request (DESIGN section 3 allows 0..30): under the idle
# timeouts of common proxies, long enough that an idle store asks twice a minute.
LONG_POLL_S = 25.0

log = structlog.get_logger("sync.refresher")

CURSOR = "changes_cursor"
SNAPSHOT_STARTED = "snapshot_started_at"
PAGE_LIMIT = 1000
MAX_REMOVAL_SHARE = 0.5  # the default of central.max_removal_share


class CursorStuck(CentralError):
    """Central said `has_more` but gave back a cursor this refresh already asked with."""

    def __init__(self, cursor: str) -> None:
        super().__init__(
            "central answered has_more with a cursor it had already given"
            f" ({cursor[:40] or 'the empty cursor'}): paging stopped until the next round"
        )
        self.cursor = cursor


@dataclass
class _HeldPage(ChangesPage):
    """The long poll's answer, with the cursor it was asked at."""

    cursor: str = ""


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
    # Pages with `has_more` and a cursor already asked with; `cursor_stuck` is the state now.
    cursor_stalls: int = 0
    cursor_stuck: bool = False
    # Records full snapshots did not bring and that were removed (not central's deletions).
    stale_members_removed: int = 0
    stale_coupons_removed: int = 0
    # Full snapshots whose removal was above central.max_removal_share, so kept; the last one
    # stays in `refused_removal` until a snapshot's removal goes through.
    removals_refused: int = 0
    refused_removal: StaleRecords | None = None
    # Central's snapshot file (sync/bootstrap.py): bytes downloaded (a resumed download counts
    # only the bytes it fetched), downloads resumed with Range, downloads started over because
    # central had replaced the file, files applied, files rejected as not whole (then paged),
    # answers that central has none (404: paged), and the jitter waited before the first.
    snapshot_bytes: int = 0
    snapshot_resumed: int = 0
    snapshot_restarts: int = 0
    snapshots_applied: int = 0
    snapshots_rejected: int = 0
    snapshot_missing: int = 0
    bootstrap_jitter_s: float | None = None


def parse_page(changes: list[dict[str, Any]], stats: RefresherStats) -> ChangePage:
    """Central's changes -> what the cache must do. Bad records and unknown kinds are skipped
    and counted, never fatal: one bad member must not stop a store's sync.

    A member record of the shape central sends (see `member_record_of`) becomes the cache's
    row straight away; any other goes through the `Member` model, which refuses what it
    refuses, as it always did."""
    members: dict[str, Member | MemberRecord] = {}
    coupons: dict[str, Coupon] = {}
    deleted_members: list[str] = []
    deleted_coupons: list[str] = []
    rules: list[RulesDocument] = []
    for change in changes:
        kind = change.get("kind") if isinstance(change, dict) else None
        data = change.get("data") if isinstance(change, dict) else None
        try:
            if kind == "member":
                # Later changes of the same record win: keep the last of each.
                record = member_record_of(data)
                if record is not None:
                    members[record[0][0]] = record
                else:
                    member = Member.model_validate(data)
                    members[member.member_id] = member
            elif kind == "coupon":
                coupon = Coupon.model_validate(data)
                coupons[coupon.code] = coupon
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
    stats.members += len(members)
    stats.coupons += len(coupons)
    stats.deletions += len(deleted_members) + len(deleted_coupons)
    return ChangePage(
        list(members.values()), deleted_members, list(coupons.values()), deleted_coupons, rules
    )


# ---- member records without the model -------------------------------------------------------
#
# A full sync brings a million member records central has validated already; the `Member` model
# costs more per record than everything else the gateway does with it. `member_record_of`
# accepts only what the model surely accepts (every field of the type the model keeps as it is,
# every rule of its validators checked) and makes the very row `member_record(Member(...))`
# makes; any other record (a missing member_id, a number as text, a stamp in another spelling,
# a bad birthday) is left to the model, so what is refused, and how it is counted, is the
# model's decision as before. tests/test_full_sync_fast.py compares the two on random records.

# The fields `member_record_of` reads, in the model's order. Should the model's fields differ
# (one added), every record goes through the model until this is brought up to date.
_FIELDS = (
    "member_id",
    "identifiers",
    "display_name",
    "tier",
    "birthday",
    "flags",
    "earn_mode",
    "lottery_consent",
    "points_balance",
    "wallet_points",
    "balance_as_of",
)
_FAST = tuple(Member.model_fields) == _FIELDS
_FIELD_NAMES = frozenset(_FIELDS)
_ABSENT: Any = object()
# (key, what the model takes when it is absent; _ABSENT: required), in the model's order.
_DEFAULTS = tuple(
    (name, _ABSENT if info.is_required() else info.get_default(call_default_factory=True))
    for name, info in Member.model_fields.items()
)
_EARN_MODES = frozenset(get_args(EarnMode))
# Every MM-DD the model's birthday check passes (29 February included): a set, not a regex.
_BIRTHDAYS = frozenset(
    f"{month:02d}-{day:02d}"
    for month, days in enumerate((31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31), start=1)
    for day in range(1, days + 1)
)
# RFC 3339 as central writes it: `T`, seconds, up to 6 fraction digits, `Z` or an offset.
_STAMP = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,6}))?"
    r"(?:Z|([+-])([01][0-9]|2[0-3]):([0-5][0-9]))"
)
_MEMBER_ID_MAX = 64  # Field(max_length=64)
_IDENTIFIER_MAX = 512  # Member._identifiers_are_text


@functools.lru_cache(maxsize=4096)
def _balance_stamp(text: str) -> tuple[str, dt.datetime, bool] | None:
    """For a `balance_as_of` of central's usual spelling: its column value (`utc_stamp`), the
    moment, and whether the model would write `text` back unchanged. None: the model decides.
    Cached: the records of a page often share a stamp."""
    found = _STAMP.fullmatch(text)
    if found is None:
        return None
    year, month, day, hour, minute, second, fraction, sign, off_h, off_m = found.groups()
    if sign is None:
        zone = dt.UTC
    else:
        offset = dt.timedelta(hours=int(off_h), minutes=int(off_m))
        zone = dt.timezone(-offset if sign == "-" else offset)
    try:
        moment = dt.datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second),
            int(fraction.ljust(6, "0")) if fraction else 0,
            tzinfo=zone,
        )
        column = utc_stamp(moment)
    except (ValueError, OverflowError):
        return None
    return column, moment, to_json(moment).decode() == f'"{text}"'


def member_record_of(data: Any) -> MemberRecord | None:
    """The cache's row and identifiers for a member record the `Member` model surely accepts
    as it is; None when the model must decide (it may still accept: it converts more)."""
    if type(data) is not dict or not _FAST:
        return None
    keys = tuple(data)
    if keys == _FIELDS:  # central's own records: every field, in the model's order
        as_sent = True
        values: Any = data.values()
    elif keys[: len(_FIELDS)] == _FIELDS:  # ... then extra keys
        as_sent = True
        values = [data[name] for name in _FIELDS]
    else:
        as_sent = False
        values = [data.get(name, default) for name, default in _DEFAULTS]
    (
        member_id,
        identifiers,
        display_name,
        tier,
        birthday,
        flags,
        earn_mode,
        consent,
        points,
        wallet,
        stamp,
    ) = values
    if type(member_id) is not str or not 0 < len(member_id) <= _MEMBER_ID_MAX:
        return None
    if type(identifiers) is not list:
        return None
    for identifier in identifiers:
        if type(identifier) is not str or not 0 < len(identifier) <= _IDENTIFIER_MAX:
            return None
    if type(display_name) is not str or type(tier) is not str:
        return None
    if birthday is not None:
        if type(birthday) is not str:
            return None
        if birthday == "":
            birthday, as_sent = None, False  # the model keeps no birthday
        elif birthday not in _BIRTHDAYS:
            return None
    if type(flags) is not list:
        return None
    for flag in flags:
        if type(flag) is not str:
            return None
    if type(earn_mode) is not str or earn_mode not in _EARN_MODES:
        return None
    if type(consent) is not bool or type(points) is not int or type(wallet) is not int:
        return None
    if stamp is None:
        column = moment = None
    elif type(stamp) is str:
        parsed = _balance_stamp(stamp)
        if parsed is None:
            return None
        column, moment, same = parsed
        as_sent = as_sent and same
    else:
        return None
    if as_sent:
        # The model would write these keys, in this order, with these values: the record as
        # it came (extra keys kept, as the model keeps them).
        record = to_json(data, inf_nan_mode="null").decode()
    else:
        kept = {
            "member_id": member_id,
            "identifiers": identifiers,
            "display_name": display_name,
            "tier": tier,
            "birthday": birthday,
            "flags": flags,
            "earn_mode": earn_mode,
            "lottery_consent": consent,
            "points_balance": points,
            "wallet_points": wallet,
            "balance_as_of": moment,
        }
        if not data.keys() <= _FIELD_NAMES:
            kept.update((k, v) for k, v in data.items() if k not in _FIELD_NAMES)
        record = to_json(kept, inf_nan_mode="null").decode()
    row = (
        member_id,
        display_name,
        tier,
        birthday,
        json.dumps(flags) if flags else "[]",
        earn_mode,
        1 if consent else 0,
        points,
        wallet,
        column,
        record,
    )
    return row, identifiers


class Refresher:
    """`await refresher.run()` forever; `await refresher.refresh()` once; `wake()` to hurry."""

    def __init__(
        self,
        store: Store,
        client: CentralClient,
        *,
        interval_s: float = 30.0,
        long_poll_s: float = LONG_POLL_S,
        page_limit: int = PAGE_LIMIT,
        max_removal_share: float = MAX_REMOVAL_SHARE,
        data_dir: Path | None = None,
        bootstrap_jitter_s: float = BOOTSTRAP_JITTER_S,
        random: Callable[[], float] = random.random,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """`data_dir` holds the snapshot file while it is downloaded and applied (default:
        the database's directory). `bootstrap_jitter_s` is the most `run()` waits before its
        first download of a snapshot file (`refresh()` and `full()`, run by an operator, never
        wait); `random` and `sleep` are that wait's (and `random` the retry's after a failed
        long poll), for tests."""
        self.store = store
        self.client = client
        self.interval_s = interval_s
        self.long_poll_s = long_poll_s
        self.page_limit = page_limit
        self.max_removal_share = max_removal_share
        self.stats = RefresherStats()
        self.snapshot_file = SnapshotDownload(
            client,
            data_dir if data_dir is not None else Path(store.path).parent,
            self.stats,
            jitter_s=bootstrap_jitter_s,
            random=random,
            sleep=sleep,
        )
        self._tidied = False
        # Down from a refresh that failed to the next that completed (a stuck cursor is
        # neither: central answers, and that has its own alarm).
        self.link = Link(log, LinkEvents(down="cache_refresh_failed", up="cache_refresh_recovered"))
        self._wake = asyncio.Event()
        self._random = random
        self._poll_failures = 0  # long polls failed in a row

    @property
    def cursor(self) -> str | None:
        return self.store.get_state(CURSOR)

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        held: ChangesPage | None = None  # the long poll's answer: the next round's first page
        while True:
            retry_soon = False
            hold = True
            try:
                await self.refresh(jitter=True, first=held)
                self.link.succeeded()
            except CursorStuck:
                # Counted and logged by refresh(); central answers, but a held request would
                # come back at once with the same page: the usual interval, no long poll.
                hold = False
            except CentralError as error:
                self.stats.failures += 1
                self.link.failed(error)
                retry_soon = True
            except Exception as error:  # a full disk, a bug: logged each time, with its traceback
                self.stats.failures += 1
                self.link.failed(error, unexpected="cache_refresh_error")
                retry_soon = True
            # Until the next round; `wake()` (central came back, an operator asked) cuts it short.
            held = None
            if retry_soon:
                await self._pause(min(self.interval_s, 5.0))
            elif not hold:
                await self._pause(self.interval_s)
            else:
                outcome = await self._held_until_a_change()
                if isinstance(outcome, ChangesPage):
                    held = outcome
                elif outcome is None:  # the long poll failed: try again soon, not in 30 s
                    await self._pause(self._poll_retry_s())
                elif not outcome:
                    await self._pause(self.interval_s)

    def _poll_retry_s(self) -> float:
        """After a failed long poll: 0.5 s doubling up to the refresh interval, each wait drawn
        between half and all of it, so a fleet whose central restarts does not come back in step
        (its held requests all failed at the same instant)."""
        self._poll_failures += 1
        ceiling = min(self.interval_s, 0.5 * 2.0 ** min(self._poll_failures - 1, 10))
        return ceiling * (0.5 + 0.5 * self._random())

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()

    async def _held_until_a_change(self) -> ChangesPage | bool | None:
        """Long poll (DESIGN section 3): at the delta position, ask central to hold a request
        until a change for this store exists, so a change (a pause of the lottery) reaches this
        store within about a second. A page with changes: refresh now, starting with that page.
        True: refresh now. False: central does not hold (an empty answer came early), so wait
        the refresh interval as before. None: the request failed (central restarting, a 503):
        try again soon."""
        cursor = self.store.get_state(CURSOR) or ""
        if not cursor or self.long_poll_s <= 0:
            return False
        loop = asyncio.get_running_loop()
        started = loop.time()
        poll = asyncio.create_task(
            self.client.changes(cursor, self.page_limit, wait_s=self.long_poll_s)
        )
        woken = asyncio.create_task(self._wake.wait())
        try:
            await asyncio.wait({poll, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (poll, woken):
                task.cancel()
            await asyncio.gather(poll, woken, return_exceptions=True)
        if woken.done() and not woken.cancelled():
            self._wake.clear()
            return True
        if poll.cancelled() or poll.exception() is not None:
            return None  # the client counted the failure; the next round tells the rest
        self._poll_failures = 0
        page = poll.result()
        if page.changes or page.has_more:
            return _HeldPage(page.changes, page.next_cursor, page.has_more, cursor=cursor)
        return loop.time() - started >= self.long_poll_s * 0.8

    async def refresh(
        self,
        progress: Callable[[int], None] | None = None,
        *,
        allow_mass_removal: bool = False,
        jitter: bool = False,
        first: ChangesPage | None = None,
    ) -> int:
        """Fetch and apply pages until central has no more; returns the changes applied.

        An empty cursor asks for a full snapshot: central's snapshot file when it offers one
        (with `jitter`, the daemon's, after a random wait before the first download), else
        pages of `changes` from the empty cursor. When it is complete, the records it did not
        bring are removed, unless that is more than `max_removal_share` of the members or of
        the coupons and `allow_mass_removal` is not given; a snapshot cut short by a crash
        resumes from its cursor (or from its file) and is finished the same way (its start
        is in `sync_state`).

        Raises `CursorStuck` after applying a page that says `has_more` with a cursor already
        asked with: the next round asks again, instead of this one asking forever. `first`: a
        page already fetched (the long poll's), used when it was asked at the stored cursor.
        """
        cursor = self.store.get_state(CURSOR) or ""
        snapshot_started = self.store.get_state(SNAPSHOT_STARTED)
        applied = 0
        if cursor == "":
            snapshot_started = utc_stamp(dt.datetime.now(dt.UTC))
            from_file = await self._bootstrap(snapshot_started, progress, jitter)
            if from_file is not None:
                applied, cursor = from_file
        elif not self._tidied:
            self._tidy()
        asked = {cursor}
        if isinstance(first, _HeldPage) and first.cursor == cursor:
            page: ChangesPage = first  # the long poll's answer, asked at this very cursor
        else:
            page = await self.client.changes(cursor, self.page_limit)
        while True:
            stuck = page.has_more and page.next_cursor in asked
            asked.add(page.next_cursor)
            # Fetch the next page while this one is written: central and the disk work at once.
            following = (
                asyncio.create_task(self.client.changes(page.next_cursor, self.page_limit))
                if page.has_more and not stuck
                else None
            )
            try:
                parsed = parse_page(page.changes, self.stats)
                state = [(CURSOR, page.next_cursor)]
                if snapshot_started is not None:
                    state.append((SNAPSHOT_STARTED, snapshot_started))
                await self.store.apply_changes(dataclasses.replace(parsed, state=state))
            except BaseException:
                if following is not None:
                    following.cancel()
                    await asyncio.gather(following, return_exceptions=True)
                raise
            applied += len(page.changes)
            self.stats.pages += 1
            if progress is not None:
                progress(len(page.changes))
            if stuck:
                self._cursor_stuck(page.next_cursor)
                raise CursorStuck(page.next_cursor)
            if following is None:
                break
            page = await following
        if snapshot_started is not None:
            await self._finish_snapshot(snapshot_started, allow_mass_removal)
        if self.stats.cursor_stuck:
            log.info("central_cursor_moving_again", stalls=self.stats.cursor_stalls)
            self.stats.cursor_stuck = False
        self.stats.last_success = time.time()
        return applied

    async def _bootstrap(
        self, since: str, progress: Callable[[int], None] | None, jitter: bool
    ) -> tuple[int, str] | None:
        """Central's snapshot file applied as the first part of a full snapshot: (changes
        applied, the cursor to continue with), or None to page `changes` from the empty cursor
        instead (central has no file, the file was not whole, or another process is on it)."""
        with self.snapshot_file.locked() as ours:
            if not ours:
                log.info(
                    "snapshot_file_busy",
                    then="another process is downloading or applying the snapshot file;"
                    " paging changes from an empty cursor",
                )
                return None
            snapshot = await self.snapshot_file.fetch(jitter=jitter)
            if snapshot is None:
                return None
            applied = await self._apply_file(snapshot, since, progress)
            self.snapshot_file.discard()
        return applied, snapshot.next_cursor

    async def _apply_file(
        self, snapshot: SnapshotFile, since: str, progress: Callable[[int], None] | None
    ) -> int:
        """The file's records through `apply_changes`, a page per transaction like `changes`,
        each with the snapshot's start; the last with the file's cursor too. A crash before
        the last leaves the cursor empty and the file whole on disk, so the next round applies
        it again from its start (a new start, so nothing is removed that it brings)."""
        started = time.monotonic()
        applied = 0
        with snapshot.pages(self.page_limit) as pages:
            # The next page is read and decompressed on a thread while this one is written.
            reading = asyncio.ensure_future(asyncio.to_thread(pages.next))
            try:
                while (page := await reading) is not None:
                    reading = asyncio.ensure_future(asyncio.to_thread(pages.next))
                    self.stats.bad_records += page.unreadable
                    parsed = parse_page(page.changes, self.stats)
                    state = [(SNAPSHOT_STARTED, since)]
                    if page.last:
                        state.append((CURSOR, snapshot.next_cursor))
                    await self.store.apply_changes(dataclasses.replace(parsed, state=state))
                    count = len(page.changes) + page.unreadable
                    applied += count
                    self.stats.pages += 1
                    if progress is not None:
                        progress(count)
            finally:
                # The thread reads the file: it finishes its page before the file is closed.
                await asyncio.gather(reading, return_exceptions=True)
        self.stats.snapshots_applied += 1
        log.info(
            "snapshot_file_applied",
            records=snapshot.records,
            bytes=snapshot.size,
            etag=snapshot.etag,
            seconds=round(time.monotonic() - started, 3),
        )
        return applied

    def _tidy(self) -> None:
        """Once: a snapshot file left by a crash after its cursor was stored is not needed."""
        self._tidied = True
        if not self.snapshot_file.leftovers():
            return
        with self.snapshot_file.locked() as ours:
            if ours:
                self.snapshot_file.discard()

    def _cursor_stuck(self, cursor: str) -> None:
        self.stats.cursor_stalls += 1
        if not self.stats.cursor_stuck:  # an alarm once per episode, not once per round
            log.error(
                "central_cursor_stuck",
                cursor=cursor[:40],
                retry_in_s=self.interval_s,
                fix="central's changes feed repeats a cursor with has_more=true: tell the"
                " central team; the cache keeps what it has and asks again each interval",
            )
        self.stats.cursor_stuck = True

    async def _finish_snapshot(self, since: str, allow_mass_removal: bool) -> None:
        """Remove what the snapshot did not bring, within the share allowed."""
        share = 1.0 if allow_mass_removal else self.max_removal_share
        stale = await self.store.remove_stale(since, max_share=share)
        members, cached_members = stale.members, stale.cached_members
        coupons, cached_coupons = stale.coupons, stale.cached_coupons
        # Removed or refused, this snapshot is done: a refused one is not tried again by itself.
        await self.store.set_state(SNAPSHOT_STARTED, None)
        self.stats.snapshots += 1
        if not stale.removed:
            self.stats.removals_refused += 1
            self.stats.refused_removal = stale
            log.error(
                "snapshot_removal_refused",
                members=members,
                cached_members=cached_members,
                coupons=coupons,
                cached_coupons=cached_coupons,
                max_removal_share=share,
                fix=f"central's full snapshot lacks more than {share:.0%} of the cached members"
                " or coupons, so nothing was removed; check central (the store id, its data),"
                " and if the records really are gone run"
                " `edge-gateway sync --full --allow-mass-removal`",
            )
            return
        self.stats.refused_removal = None
        self.stats.stale_members_removed += members
        self.stats.stale_coupons_removed += coupons
        if stale.above(self.max_removal_share):
            log.warning(
                "snapshot_mass_removal_allowed",
                members=members,
                cached_members=cached_members,
                coupons=coupons,
                cached_coupons=cached_coupons,
            )
        elif members or coupons:
            log.info("snapshot_removed_stale_records", members=members, coupons=coupons)

    async def full(
        self,
        progress: Callable[[int], None] | None = None,
        *,
        allow_mass_removal: bool = False,
    ) -> int:
        """Start over from a full snapshot (`edge-gateway sync --full`)."""
        await self.store.set_state(CURSOR, None)
        return await self.refresh(progress, allow_mass_removal=allow_mass_removal)
