"""Snapshots for fleets: every record in one immutable, compressed JSON-lines file.

Five hundred stores paging a million members each through `changes` would read central's tables
five hundred times; a snapshot is read from the tables once and then served as bytes. The file
(`application/gzip`) holds what `changes` pages from an empty cursor, one change per line, and
ends with a line that says where `changes` continues:

    {"kind":"member","data":{...}}          every member, then every coupon, then the rules
    {"end":true,"next_cursor":"...","records":N,"change_seq":S}

It is built from one consistent read, so its cursor continues exactly where it stands; its ETag
is its content's hash, so the same bytes have the same ETag on every central process. The bytes
are stored in the database in 1 MiB chunks (the newest two snapshots are kept), which is how
every process of a PostgreSQL central serves the same file. A `Range` request resumes a cut
download; `If-Range` makes sure it resumes the same file.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
import zlib
from collections import OrderedDict
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from sync.central.errors import ApiError
from sync.central.fields import dumps
from sync.central.ledger import Ledger, SnapshotInfo
from sync.central.storage import Storage

CHUNK = 1024 * 1024
MEDIA_TYPE = "application/gzip"
_RANGE = re.compile(r"bytes=(\d*)-(\d*)", re.ASCII)


async def build_snapshot(storage: Storage, *, only_if_stale: bool = False) -> SnapshotInfo | None:
    """Build a snapshot and store it; with `only_if_stale`, only when changes were made since
    the latest. None when another central process is building one right now."""

    def job(db: Ledger) -> SnapshotInfo | None:
        if not db.try_build_lock():
            return None
        latest = db.latest_snapshot()
        if only_if_stale and latest is not None and latest.change_seq >= db.change_seq():
            return latest
        with tempfile.TemporaryFile(prefix="central-snapshot-") as spool:
            digest = hashlib.sha256()
            deflate = zlib.compressobj(6, zlib.DEFLATED, 31)  # gzip; its header has no time

            def put(data: bytes) -> None:
                spool.write(data)
                digest.update(data)

            def write(text: str) -> None:
                put(deflate.compress(text.encode()))

            seq, records = db.export(write)
            built_at = db.stamp()
            cursor = db.seal({"m": "d", "s": seq})
            end = {"end": True, "next_cursor": cursor, "records": records, "change_seq": seq}
            write(dumps(end) + "\n")  # no time in the file: the same records, the same bytes
            put(deflate.flush())
            size = spool.tell()
            etag = '"' + digest.hexdigest()[:40] + '"'
            info = SnapshotInfo(etag, built_at, seq, cursor, records, size, CHUNK)
            spool.seek(0)
            db.save_snapshot(info, iter(lambda: spool.read(CHUNK), b""))
        return info

    return await storage.run_apart(job)


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """`Range: bytes=a-b` as (start, end exclusive); None serves the whole file (a header this
    server does not take, such as several ranges); 416 when it starts past the end."""
    match = _RANGE.fullmatch(header.strip())
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.groups()
    if first == "":  # the last n bytes
        count = int(last)
        if count == 0:
            raise _unsatisfiable(size)
        return max(0, size - count), size
    start = int(first)
    end = size if last == "" else min(int(last) + 1, size)
    if last != "" and int(last) < start:
        return None  # not a valid range: ignored
    if start >= size:
        raise _unsatisfiable(size)
    return start, end


def _unsatisfiable(size: int) -> ApiError:
    return ApiError(
        416,
        "RANGE_NOT_SATISFIABLE",
        f"the snapshot has {size} bytes",
        {"Content-Range": f"bytes */{size}"},
    )


class SnapshotService:
    """Serves the latest snapshot with ETag and Range; chunks are cached in memory."""

    def __init__(self, storage: Storage, cache_bytes: int = 256 * CHUNK) -> None:
        self.storage = storage
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._cached = 0
        self.served = 0  # responses with a body (200 or 206)

    async def respond(self, request: Request) -> Response:
        info = await self.storage.run(lambda db: db.latest_snapshot())
        if info is None:
            raise ApiError(404, "NOT_FOUND", "no snapshot yet: page changes from an empty cursor")
        headers = {
            "ETag": info.etag,
            "Accept-Ranges": "bytes",
            "Cache-Control": "public, max-age=60",
        }
        wanted = request.headers.get("if-none-match")
        if wanted is not None and (
            wanted.strip() == "*" or info.etag in [t.strip() for t in wanted.split(",")]
        ):
            return Response(status_code=304, headers=headers)
        start, end, status = 0, info.size, 200
        asked = request.headers.get("range")
        same = request.headers.get("if-range", info.etag).strip() == info.etag
        if asked is not None and same:
            span = byte_range(asked, info.size)
            if span is not None:
                start, end = span
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end - 1}/{info.size}"
        headers["Content-Length"] = str(end - start)
        self.served += 1
        body = self._bytes(info, start, end)
        return StreamingResponse(body, status_code=status, headers=headers, media_type=MEDIA_TYPE)

    async def _bytes(self, info: SnapshotInfo, start: int, end: int) -> AsyncIterator[bytes]:
        size = info.chunk_size
        for number in range(start // size, (end - 1) // size + 1):
            chunk = await self._chunk(info.etag, number)
            base = number * size
            yield chunk[max(start - base, 0) : end - base]

    async def _chunk(self, etag: str, number: int) -> bytes:
        key = (etag, number)
        chunk = self._cache.get(key)
        if chunk is not None:
            self._cache.move_to_end(key)
            return chunk
        found = await self.storage.run(lambda db: db.snapshot_chunk(etag, number))
        if found is None:  # replaced and removed while this response was being sent
            raise ApiError(503, "UNAVAILABLE", "the snapshot was replaced", {"Retry-After": "1"})
        self._cache[key] = found
        self._cached += len(found)
        while self._cached > self.cache_bytes and self._cache:
            _, dropped = self._cache.popitem(last=False)
            self._cached -= len(dropped)
        return found
