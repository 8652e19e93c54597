"""Central's snapshot file on this store's disk: downloaded, resumed when cut, and checked.

A new store (or `edge-gateway sync --full`) starts from `GET /v1/stores/{store}/snapshot`
(DESIGN.md section 3): one immutable gzip JSON-lines file with every record, ending with the
cursor that `changes` continues from. It is streamed to `<data_dir>/snapshot.partial`, never
held whole in memory; `snapshot.json` beside it names the file (its ETag and size), so a download
cut by the network, a restart or a SIGKILL resumes with `Range` and `If-Range` instead of
fetching the same bytes again. A replaced snapshot comes back whole (200) and the download
starts over. A complete download becomes `snapshot.gz`, is checked (gzip intact, the end line
with its cursor there, the record count right) and only then read, page by page, by the
refresher (sync/refresher.py), which applies it to the cache and removes the files.

Before a daemon's first download it waits a random share of `central.bootstrap_jitter_s`, so a
fleet that starts at once does not download at once. One process at a time works on the files
(a lock beside them): a `sync --full` run while the daemon bootstraps pages `changes` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import itertools
import json
import os
import random
import zlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from gateway.store.datadir import lock_exclusive
from sync.client import CentralClient, CentralRefused, CentralUnavailable, NoSnapshot

if TYPE_CHECKING:
    from sync.refresher import RefresherStats

log = structlog.get_logger("sync.bootstrap")

PARTIAL = "snapshot.partial"  # the bytes downloaded so far
COMPLETE = "snapshot.gz"  # every byte, not yet applied
META = "snapshot.json"  # {"etag", "size"} of the file being downloaded
LOCK = "snapshot.lock"
BOOTSTRAP_JITTER_S = 30.0  # the default of central.bootstrap_jitter_s
READ_CHUNK = 1024 * 1024
TAIL = 64 * 1024  # the end line is short (a cursor of at most 1024 characters and two numbers)


class SnapshotCorrupt(Exception):
    """The downloaded file is not a whole snapshot: it is not applied."""


@dataclass(frozen=True, slots=True)
class SnapshotFile:
    """A complete, checked snapshot on disk: `records` lines of changes, then the end line."""

    path: Path
    etag: str | None
    size: int
    records: int
    next_cursor: str

    def pages(self, limit: int) -> SnapshotPages:
        return SnapshotPages(self.path, self.records, limit)


def check_snapshot(path: Path) -> SnapshotFile:
    """Read the whole file once, cheaply: the gzip stream must end properly with its CRC and
    length right, the last line must be the end line with a cursor, and when the end line
    counts the records, the lines before it must be that many. Raises `SnapshotCorrupt`.
    Blocking (run it on a thread); the records themselves are judged as they are applied."""
    newlines = 0
    tail = b""
    try:
        with gzip.open(path, "rb") as file:
            while chunk := file.read(READ_CHUNK):
                newlines += chunk.count(b"\n")
                tail = chunk[-TAIL:] if len(chunk) >= TAIL else (tail + chunk)[-TAIL:]
    except (OSError, EOFError, zlib.error) as error:  # BadGzipFile is an OSError
        raise SnapshotCorrupt(f"not an intact gzip file ({error})") from None
    lines = newlines + (0 if tail.endswith(b"\n") or not tail else 1)
    last = tail.rstrip(b"\n").rpartition(b"\n")[2]
    try:
        end = json.loads(last)
    except ValueError:
        end = None
    if not isinstance(end, dict) or end.get("end") is not True:
        raise SnapshotCorrupt("the end line is missing: the file stops before its cursor")
    cursor = end.get("next_cursor")
    if not isinstance(cursor, str) or not cursor:
        raise SnapshotCorrupt("the end line has no cursor to continue from")
    records = lines - 1
    said = end.get("records")
    if isinstance(said, int) and said != records:
        raise SnapshotCorrupt(f"the end line counts {said} records, the file holds {records}")
    meta = _read_meta(path.with_name(META))
    return SnapshotFile(
        path, meta.get("etag") if meta else None, path.stat().st_size, records, cursor
    )


@dataclass(slots=True)
class SnapshotPage:
    changes: list[dict[str, Any]]
    unreadable: int  # lines that are not a JSON object: bad records
    last: bool


class SnapshotPages:
    """The records of a checked file in pages of `limit` lines; blocking reads (a thread)."""

    def __init__(self, path: Path, records: int, limit: int) -> None:
        self._file = gzip.GzipFile(path, "rb")
        self._left = records
        self._limit = limit
        self._done = False

    def next(self) -> SnapshotPage | None:
        """The next page; the last one (`last`, possibly empty) carries the end; then None."""
        if self._done:
            return None
        changes: list[dict[str, Any]] = []
        unreadable = 0
        count = min(self._limit, self._left)
        for line in itertools.islice(self._file, count):
            try:
                change = json.loads(line)
            except ValueError:
                change = None
            if isinstance(change, dict):
                changes.append(change)
            else:
                unreadable += 1
        self._left -= count
        self._done = self._left <= 0
        return SnapshotPage(changes, unreadable, self._done)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> SnapshotPages:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _read_meta(path: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _write_meta(path: Path, etag: str | None, size: int | None) -> None:
    """Atomically: a crash leaves the old sidecar or the new one, never half of one."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps({"etag": etag, "size": size}), encoding="utf-8")
    os.replace(temporary, path)


def _fsync(path: Path) -> None:
    with path.open("rb+") as file:
        os.fsync(file.fileno())


@dataclass(eq=False)
class SnapshotDownload:
    """The snapshot's files in one data directory, and the download that fills them.

    `stats` is the refresher's (bytes downloaded, downloads resumed and started over, central
    without a snapshot, jitter waited). `jitter_s` is the most a daemon's first download waits;
    `random` and `sleep` are that wait's (tests pass their own).
    """

    client: CentralClient
    data_dir: Path
    stats: RefresherStats
    _: KW_ONLY
    jitter_s: float = BOOTSTRAP_JITTER_S
    random: Callable[[], float] = random.random
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    _jittered: bool = field(default=False, init=False)
    _said_none: bool = field(default=False, init=False)  # "central offers none" is logged once

    @property
    def partial(self) -> Path:
        return self.data_dir / PARTIAL

    @property
    def complete(self) -> Path:
        return self.data_dir / COMPLETE

    @property
    def meta(self) -> Path:
        return self.data_dir / META

    def leftovers(self) -> bool:
        return any(p.exists() for p in (self.partial, self.complete, self.meta))

    def discard(self) -> None:
        """Remove the files (applied, rejected, or no longer wanted)."""
        for path in (self.partial, self.complete, self.meta):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    @contextlib.contextmanager
    def locked(self) -> Iterator[bool]:
        """True while this process alone works on the files; False when another holds them."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        handle = (self.data_dir / LOCK).open("a+b")
        try:
            try:
                lock_exclusive(handle)
            except OSError:
                yield False
                return
            yield True
        finally:
            handle.close()  # closing drops the lock

    async def fetch(self, *, jitter: bool = False) -> SnapshotFile | None:
        """A complete, checked snapshot file; None when central offers none (404) or the file
        is not whole (counted and logged; the files are removed). Call it holding `locked()`.

        A file downloaded earlier and not applied is taken as it is; a cut one is resumed.
        With `jitter` (the daemon), a first download waits a random share of `jitter_s`,
        once per process. Raises `CentralError` when central fails (the bytes stay for the
        next attempt)."""
        try:
            if not self.complete.exists():
                if jitter and not self.partial.exists():
                    await self._wait_jitter()
                await self._download()
        except NoSnapshot:
            self.discard()  # a file central no longer offers cannot be resumed
            self.stats.snapshot_missing += 1
            if not self._said_none:
                log.info("snapshot_not_offered", then="paging changes from an empty cursor")
                self._said_none = True
            return None
        try:
            return await asyncio.to_thread(check_snapshot, self.complete)
        except SnapshotCorrupt as error:
            meta = _read_meta(self.meta) or {}
            self.discard()
            self.stats.snapshots_rejected += 1
            log.error(
                "snapshot_rejected",
                reason=str(error),
                etag=meta.get("etag"),
                then="paging changes from an empty cursor; tell the central team if it repeats",
            )
            return None

    async def _wait_jitter(self) -> None:
        """Before this process's first download, a random share of `jitter_s`; asked first
        (without the bytes) whether central has a snapshot at all, so a central without one
        is paged at once, as before snapshots existed."""
        if self._jittered or self.jitter_s <= 0:
            return
        if not await self.client.snapshot_offered():
            raise NoSnapshot(404, "NOT_FOUND", "central offers no snapshot")
        delay = self.random() * self.jitter_s
        self._jittered = True
        self.stats.bootstrap_jitter_s = delay
        log.info("snapshot_bootstrap_jitter", wait_s=round(delay, 3), of_s=self.jitter_s)
        await self.sleep(delay)

    async def _download(self) -> None:
        """Into `snapshot.partial`, resuming what is there; `snapshot.gz` once whole."""
        for _ in range(2):  # a second time only after central refused the range (416)
            meta = _read_meta(self.meta) or {}
            etag, size = meta.get("etag"), meta.get("size")
            have = self.partial.stat().st_size if self.partial.exists() else 0
            if not (isinstance(etag, str) and isinstance(size, int) and 0 < have <= size):
                etag, have = None, 0  # nothing that can be resumed safely: from the start
            elif have == size:
                break  # every byte came before a restart: only the rename was left
            try:
                await self._get(have, etag)
                break
            except CentralRefused as refusal:
                if refusal.status != 416:
                    raise
                self.discard()  # what is here is not a beginning of central's file
        else:
            raise CentralUnavailable("central refused to resume the snapshot download twice")
        _fsync(self.partial)
        os.replace(self.partial, self.complete)

    async def _get(self, have: int, etag: str | None) -> None:
        async with self.client.snapshot(offset=have, if_range=etag) as answer:
            if answer.status == 206 and have:
                size = (_read_meta(self.meta) or {}).get("size")
                if answer.start != have or answer.size != size or answer.etag not in (None, etag):
                    self.discard()
                    raise CentralUnavailable(
                        "central answered another range or file than the one being resumed:"
                        " starting over"
                    )
                self.stats.snapshot_resumed += 1
                log.info("snapshot_download_resumed", offset=have, size=size, etag=etag)
                mode, expected = "ab", answer.size
            elif answer.status == 200:
                if have:  # If-Range did not match: central replaced the file
                    self.stats.snapshot_restarts += 1
                    log.info(
                        "snapshot_replaced_starting_over",
                        had=have,
                        etag=answer.etag,
                        previous_etag=etag,
                    )
                _write_meta(self.meta, answer.etag, answer.size)
                mode, expected = "wb", answer.size
            else:
                self.discard()
                raise CentralUnavailable(
                    f"unexpected snapshot answer {answer.status} to a request from byte {have}"
                )
            with self.partial.open(mode) as file:
                async for chunk in answer.chunks():
                    file.write(chunk)
                    self.stats.snapshot_bytes += len(chunk)
        got = self.partial.stat().st_size
        if expected is not None and got < expected:
            raise CentralUnavailable(f"snapshot download cut at {got} of {expected} bytes")
        if expected is not None and got > expected:
            self.discard()
            raise CentralUnavailable(f"snapshot download ran past its size ({got} > {expected})")
