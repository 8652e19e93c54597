"""A new store bootstraps from central's snapshot file (DESIGN.md section 3), resuming a cut
download, and a fleet bootstraps with jitter.

End to end: the reference central over real HTTP on 127.0.0.1, behind a front (also real HTTP)
that records the requests and can cut a download after so many bytes, and a SQLite store on
disk; one test SIGKILLs a gateway process while it applies the file. At sync's own level: a
central scripted over httpx's mock transport, for what the reference central does not do by
itself (corrupt files, a range refused) and for the jitter, whose random source and sleep are
the test's, so nothing waits for real.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gzip
import inspect
import io
import json
import sqlite3
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import events
from scripted_central import scripted_client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from test_sync_guards import serve
from waiting import until

from gateway.config import CentralSettings
from gateway.domain.models import Member
from gateway.store.store import ChangePage, Store
from sync.bootstrap import COMPLETE, META, PARTIAL, SnapshotCorrupt, check_snapshot
from sync.central import ReferenceConfig, ReferenceServer
from sync.client import CentralClient, CentralUnavailable
from sync.refresher import CURSOR, SNAPSHOT_STARTED, Refresher

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_MEMBERS = {"M1", "M2", "M3", "M4", "M5"}  # gateway/sample/members.jsonl
SNAPSHOT_FILES = (PARTIAL, COMPLETE, META)


# ---- a real HTTP front that sees every request and can cut a download -------------------------


@dataclass
class Seen:
    path: str  # "snapshot" or "changes"
    headers: dict[str, str]
    status: int = 0
    sent: int = 0  # body bytes sent on
    cursor: str | None = None


@dataclass
class Front:
    """Forwards snapshot and changes requests to central and records them. `cut_after` cuts
    the next snapshot answer's body after so many bytes (the connection is dropped)."""

    upstream: httpx.AsyncClient
    seen: list[Seen] = field(default_factory=list)
    cut_after: int | None = None

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/stores/{store}/snapshot", self.snapshot),
                Route("/v1/stores/{store}/changes", self.changes),
            ]
        )

    def snapshots(self) -> list[Seen]:
        return [s for s in self.seen if s.path == "snapshot"]

    def changes_asked(self) -> list[str | None]:
        return [s.cursor for s in self.seen if s.path == "changes"]

    @staticmethod
    def _passed(request: Request) -> dict[str, str]:
        names = ("authorization", "x-gateway-id", "range", "if-range", "if-none-match")
        return {k: v for k, v in request.headers.items() if k in names}

    async def snapshot(self, request: Request) -> Response:
        headers = self._passed(request)
        seen = Seen("snapshot", headers)
        self.seen.append(seen)
        answer = await self.upstream.send(
            self.upstream.build_request("GET", request.url.path, headers=headers), stream=True
        )
        seen.status = answer.status_code
        cut, self.cut_after = self.cut_after, None
        kept = ("etag", "content-length", "content-range", "content-type", "accept-ranges")

        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in answer.aiter_raw():
                    if cut is not None and seen.sent + len(chunk) >= cut:
                        piece = chunk[: cut - seen.sent]
                        seen.sent += len(piece)
                        yield piece
                        # Ends the body short of its Content-Length: the server drops the line.
                        raise ConnectionResetError("cut by the test")
                    seen.sent += len(chunk)
                    yield chunk
            finally:
                await answer.aclose()

        return StreamingResponse(
            body(),
            status_code=answer.status_code,
            headers={k: v for k, v in answer.headers.items() if k in kept},
        )

    async def changes(self, request: Request) -> Response:
        self.seen.append(
            Seen("changes", self._passed(request), cursor=request.query_params.get("cursor"))
        )
        answer = await self.upstream.get(
            request.url.path, params=request.query_params, headers=self._passed(request)
        )
        self.seen[-1].status = answer.status_code
        return Response(answer.content, answer.status_code, media_type="application/json")


@dataclass
class Bench:
    admin: httpx.AsyncClient  # the reference central's admin API
    front: Front
    client: CentralClient  # a gateway's, to the front
    url: str  # the front's


@contextlib.asynccontextmanager
async def central_behind_front(config: ReferenceConfig | None = None) -> AsyncIterator[Bench]:
    """The reference central behind the front, and a gateway's client to the front."""
    async with (
        ReferenceServer(config or ReferenceConfig()) as central,
        httpx.AsyncClient(base_url=central.admin_url, timeout=30) as admin,
        httpx.AsyncClient(base_url=central.url, timeout=30) as upstream,
    ):
        front = Front(upstream)
        async with serve(front.app()) as port:
            url = f"http://127.0.0.1:{port}"
            settings = CentralSettings(url=url, timeout_s=10)
            async with CentralClient(settings, store_id="S001", gateway_id="gw") as client:
                yield Bench(admin, front, client, url)


async def build(admin: httpx.AsyncClient) -> dict[str, Any]:
    response = await admin.post("/_admin/snapshot")
    assert response.status_code == 200, response.text
    info: dict[str, Any] = response.json()
    return info


def members_in(db: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return {r[0] for r in conn.execute("SELECT member_id FROM members")}


def leftovers(data_dir: Path) -> list[str]:
    return [name for name in SNAPSHOT_FILES if (data_dir / name).exists()]


async def no_wait(seconds: float) -> None:
    raise AssertionError(f"waited {seconds} s")


# ---- end to end ----------------------------------------------------------------------------------


async def test_a_new_store_bootstraps_from_the_snapshot_file_then_continues_with_changes(
    tmp_path: Path, empty_store: Store, log_lines: io.StringIO
) -> None:
    async with central_behind_front() as bench:
        admin, front, client = bench.admin, bench.front, bench.client
        await admin.put("/_admin/rules", json={"version": "r1", "points_per_unit": 1})
        info = await build(admin)
        # Made after the build: only `changes`, from the file's cursor, can bring it.
        await admin.post("/_admin/members", json=[{"member_id": "M8", "identifiers": ["C-8"]}])

        refresher = Refresher(empty_store, client, sleep=no_wait)
        applied = await refresher.refresh()

        assert members_in(tmp_path / "gateway.db") == SAMPLE_MEMBERS | {"M8"}
        assert empty_store.active_rules(dt.datetime.now(dt.UTC)) is not None
        (download,) = front.snapshots()
        assert download.status == 200 and "range" not in download.headers
        # Continued from the file's cursor, never paged from an empty one.
        assert front.changes_asked()[0] == info["cursor"]
        assert "" not in front.changes_asked()
        assert applied == info["records"] + 1  # the file's records, then M8
        stats = refresher.stats
        assert stats.snapshots_applied == 1 and stats.snapshots == 1
        assert stats.snapshot_bytes == info["size"] == download.sent
        assert (stats.snapshot_resumed, stats.snapshot_restarts, stats.snapshot_missing) == (
            0,
            0,
            0,
        )
        assert stats.bootstrap_jitter_s is None  # refresh(), as `sync --full` runs it: no wait
        assert empty_store.get_state(CURSOR) not in (None, "", info["cursor"])
        assert empty_store.get_state(SNAPSHOT_STARTED) is None
        assert leftovers(tmp_path) == []
        (done,) = events(log_lines, "snapshot_file_applied")
        assert done["records"] == info["records"] and done["etag"] == info["etag"]

        # The next round asks for deltas only.
        await refresher.refresh()
        assert len(front.snapshots()) == 1


@dataclass
class CutDownload:
    """The store's first download of central's file, cut halfway by the front."""

    bench: Bench
    info: dict[str, Any]  # the file's, as built
    refresher: Refresher
    kept: int  # bytes of the cut download on disk


@pytest.fixture
async def cut(tmp_path: Path, empty_store: Store) -> AsyncIterator[CutDownload]:
    """Central with 3,000 members besides the sample's, its file built, and the store's first
    download of it cut halfway (that refresh fails)."""
    async with central_behind_front(ReferenceConfig(synthetic_members=3000)) as bench:
        info = await build(bench.admin)
        bench.front.cut_after = info["size"] // 2
        refresher = Refresher(empty_store, bench.client, sleep=no_wait)
        with pytest.raises(CentralUnavailable):
            await refresher.refresh()
        yield CutDownload(bench, info, refresher, (tmp_path / PARTIAL).stat().st_size)


async def test_a_cut_download_resumes_with_range_and_fetches_no_byte_twice(
    tmp_path: Path, empty_store: Store, cut: CutDownload
) -> None:
    info, refresher, kept = cut.info, cut.refresher, cut.kept
    assert 0 < kept <= info["size"] // 2
    assert members_in(tmp_path / "gateway.db") == set()  # nothing applied from half a file
    assert empty_store.get_state(CURSOR) is None

    await refresher.refresh()

    first, second = cut.bench.front.snapshots()
    assert "range" not in first.headers
    assert second.headers["range"] == f"bytes={kept}-"
    assert second.headers["if-range"] == info["etag"]
    assert second.status == 206
    # Every byte crossed the line once: what was kept, then exactly the rest.
    assert second.sent == info["size"] - kept
    assert refresher.stats.snapshot_bytes == info["size"]
    assert refresher.stats.snapshot_resumed == 1
    assert refresher.stats.snapshots_applied == 1
    assert len(members_in(tmp_path / "gateway.db")) == 3000 + len(SAMPLE_MEMBERS)
    assert leftovers(tmp_path) == []


async def test_a_snapshot_replaced_between_attempts_is_downloaded_again_from_the_start(
    tmp_path: Path, log_lines: io.StringIO, cut: CutDownload
) -> None:
    admin, old, refresher, kept = cut.bench.admin, cut.info, cut.refresher, cut.kept
    await admin.post("/_admin/members", json=[{"member_id": "M9", "identifiers": ["C-9"]}])
    new = await build(admin)
    assert new["etag"] != old["etag"]
    await refresher.refresh()

    _, second = cut.bench.front.snapshots()
    assert second.headers["if-range"] == old["etag"]  # asked to resume the old file ...
    assert second.status == 200  # ... and got the new one whole: nothing spliced
    assert refresher.stats.snapshot_restarts == 1 and refresher.stats.snapshot_resumed == 0
    assert refresher.stats.snapshot_bytes == kept + new["size"]
    assert "M9" in members_in(tmp_path / "gateway.db")
    (restart,) = events(log_lines, "snapshot_replaced_starting_over")
    assert restart["had"] == kept


async def test_without_a_snapshot_the_store_pages_changes_from_an_empty_cursor_as_before(
    tmp_path: Path, empty_store: Store
) -> None:
    async with central_behind_front() as bench:
        front, client = bench.front, bench.client
        slept: list[float] = []

        async def sleep(seconds: float) -> None:
            slept.append(seconds)

        # The daemon's round (`jitter`): it asks whether a file exists, and does not wait.
        refresher = Refresher(empty_store, client, sleep=sleep, random=lambda: 0.9)
        await refresher.refresh(jitter=True)

        (asked,) = front.snapshots()
        assert (asked.status, asked.headers.get("if-none-match")) == (404, "*")
        assert front.changes_asked()[0] == ""
        assert members_in(tmp_path / "gateway.db") == SAMPLE_MEMBERS
        assert slept == [] and refresher.stats.bootstrap_jitter_s is None
        assert refresher.stats.snapshot_missing == 1 and refresher.stats.snapshots_applied == 0
        assert refresher.stats.failures == 0 and refresher.stats.snapshots == 1
        assert leftovers(tmp_path) == []


async def test_records_the_snapshot_file_does_not_bring_are_removed_within_the_share(
    tmp_path: Path, empty_store: Store
) -> None:
    gone = Member.model_validate({"member_id": "GONE", "identifiers": ["C-GONE"]})
    await empty_store.apply_changes(ChangePage(members=[gone], state=[(CURSOR, "old")]))
    async with central_behind_front() as bench:
        admin, client = bench.admin, bench.client
        await build(admin)
        refresher = Refresher(empty_store, client, sleep=no_wait)
        await refresher.full()  # `edge-gateway sync --full`
    assert members_in(tmp_path / "gateway.db") == SAMPLE_MEMBERS
    assert refresher.stats.snapshots_applied == 1
    assert refresher.stats.stale_members_removed == 1


async def test_a_removal_above_the_share_from_a_snapshot_file_is_refused_like_a_paged_one(
    tmp_path: Path, empty_store: Store
) -> None:
    stale = [Member.model_validate({"member_id": f"OLD{n}", "identifiers": []}) for n in range(9)]
    await empty_store.apply_changes(ChangePage(members=stale, state=[(CURSOR, "old")]))
    async with central_behind_front() as bench:
        admin, client = bench.admin, bench.client
        await build(admin)
        refresher = Refresher(empty_store, client, max_removal_share=0.5, sleep=no_wait)
        await refresher.full()
    assert len(members_in(tmp_path / "gateway.db")) == 9 + len(SAMPLE_MEMBERS)
    assert refresher.stats.removals_refused == 1 and refresher.stats.snapshots_applied == 1


CHILD = """
import asyncio, sys
from pathlib import Path
from gateway.config import CentralSettings
from gateway.store.store import Store
from sync.client import CentralClient
from sync.refresher import Refresher

async def main(url: str, db: str) -> None:
    store = await Store.open(Path(db))
    settings = CentralSettings(url=url, timeout_s=30)
    async with CentralClient(settings, store_id="S001", gateway_id="child") as client:
        await Refresher(store, client, page_limit=25).refresh()
    await store.close()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_a_sigkill_while_the_file_is_applied_starts_it_again_cleanly(
    tmp_path: Path,
) -> None:
    db = tmp_path / "gateway.db"
    store = await Store.open(db)
    gone = Member.model_validate({"member_id": "GONE", "identifiers": ["C-GONE"]})
    await store.apply_changes(ChangePage(members=[gone]))  # cached before; not at central
    await store.close()
    config = ReferenceConfig(synthetic_members=20_000)
    async with central_behind_front(config) as bench:
        admin, front, client = bench.admin, bench.front, bench.client
        info = await build(admin)
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CHILD, bench.url, str(db), cwd=ROOT
        )
        try:

            def applying() -> bool:
                if not (tmp_path / COMPLETE).exists():
                    return False
                with contextlib.closing(sqlite3.connect(db)) as conn:
                    count = conn.execute("SELECT COUNT(*) FROM members").fetchone()[0]
                return int(count) > 1000  # well into the file, far from its end

            await until(applying, within_s=60, what="the child applying the snapshot file")
        finally:
            child.kill()  # SIGKILL on POSIX
            await child.wait()

        with contextlib.closing(sqlite3.connect(db)) as conn:
            state = dict(conn.execute("SELECT key, value FROM sync_state").fetchall())
            half = conn.execute("SELECT COUNT(*) FROM members").fetchone()[0]
        assert CURSOR not in state and SNAPSHOT_STARTED in state  # mid-apply, no cursor yet
        assert half < 20_000 + len(SAMPLE_MEMBERS)
        assert (tmp_path / COMPLETE).exists()

        store = await Store.open(db)
        try:
            refresher = Refresher(store, client, sleep=no_wait)
            await refresher.refresh()
            assert refresher.stats.snapshot_bytes == 0  # the file on disk, not downloaded again
            assert len(front.snapshots()) == 1
            assert refresher.stats.snapshots_applied == 1
            assert refresher.stats.stale_members_removed == 1  # GONE, and nothing else
            assert store.get_state(SNAPSHOT_STARTED) is None
            assert store.get_state(CURSOR) is not None
        finally:
            await store.close()
    members = members_in(db)
    assert len(members) == 20_000 + len(SAMPLE_MEMBERS) and "GONE" not in members
    assert info["records"] >= len(members)
    assert leftovers(tmp_path) == []


# ---- at sync's own level: a scripted central ------------------------------------------------


def member(member_id: str) -> dict[str, Any]:
    return {"kind": "member", "data": {"member_id": member_id, "identifiers": [f"C-{member_id}"]}}


def snapshot_file(
    changes: list[Any], cursor: str = "c-snap", *, end: bool = True, records: int | None = None
) -> bytes:
    lines = [c if isinstance(c, str) else json.dumps(c) for c in changes]
    if end:
        count = len(changes) if records is None else records
        lines.append(json.dumps({"end": True, "next_cursor": cursor, "records": count}))
    return gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0)


class CutStream(httpx.AsyncByteStream):
    """A body that stops after `cut` bytes with the connection reset."""

    def __init__(self, data: bytes, cut: int) -> None:
        self.data, self.cut = data, cut

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data[: self.cut]
        raise httpx.ReadError("connection reset by peer")


class ScriptedCentral:
    """Serves `files` in turn as the snapshot (each: its bytes and ETag, optionally cut), with
    Range and If-Range as the contract says; `changes` answers an empty last page after any
    cursor. Every request is kept."""

    def __init__(self, *files: tuple[bytes, str] | tuple[bytes, str, int] | int) -> None:
        self.files = list(files)
        self.requests: list[httpx.Request] = []

    def snapshot_requests(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path.endswith("/snapshot")]

    def changes_cursors(self) -> list[str]:
        return [r.url.params["cursor"] for r in self.requests if r.url.path.endswith("/changes")]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path.endswith("/changes"):
            cursor = request.url.params["cursor"]
            changes = [member("PAGED")] if cursor == "" else []
            page = {"changes": changes, "next_cursor": cursor + ">", "has_more": False}
            return httpx.Response(200, json=page)
        entry = self.files[0] if len(self.files) == 1 else self.files.pop(0)
        if isinstance(entry, int):
            return httpx.Response(entry, json={"error": "X", "message": str(entry)})
        data, etag, *cut = entry
        if request.headers.get("if-none-match") == "*":
            return httpx.Response(304, headers={"ETag": etag})
        start, status = 0, 200
        headers = {"ETag": etag, "Content-Type": "application/gzip"}
        asked = request.headers.get("range")
        if asked and request.headers.get("if-range", etag) == etag:
            start = int(asked.removeprefix("bytes=").removesuffix("-"))
            if start >= len(data):
                return httpx.Response(416, headers={"Content-Range": f"bytes */{len(data)}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        headers["Content-Length"] = str(len(data) - start)
        body = data[start:]
        stream = CutStream(body, cut[0] - start) if cut else httpx.ByteStream(body)
        return httpx.Response(status, headers=headers, stream=stream)


FILE = snapshot_file([member(f"F{n}") for n in range(300)], "c-file")
CUT = len(FILE) // 2


async def test_range_and_if_range_resume_the_same_file_and_append_only_the_rest(
    tmp_path: Path, empty_store: Store
) -> None:
    central = ScriptedCentral((FILE, '"e1"', CUT), (FILE, '"e1"'))
    async with scripted_client(central) as client:
        refresher = Refresher(empty_store, client, sleep=no_wait)
        with pytest.raises(CentralUnavailable, match="ReadError"):
            await refresher.refresh()
        assert (tmp_path / PARTIAL).read_bytes() == FILE[:CUT]
        assert json.loads((tmp_path / META).read_text()) == {"etag": '"e1"', "size": len(FILE)}
        await refresher.refresh()
    first, second = central.snapshot_requests()
    assert "range" not in first.headers
    assert (second.headers["range"], second.headers["if-range"]) == (f"bytes={CUT}-", '"e1"')
    assert second.headers["accept-encoding"] == "identity"
    assert refresher.stats.snapshot_bytes == len(FILE) and refresher.stats.snapshot_resumed == 1
    assert members_in(tmp_path / "gateway.db") == {f"F{n}" for n in range(300)}
    assert central.changes_cursors() == ["c-file"]
    assert empty_store.get_state(CURSOR) == "c-file>"


async def test_a_range_central_cannot_serve_starts_the_download_again(
    tmp_path: Path, empty_store: Store
) -> None:
    # A cut download longer than central's file (so central's answer is 416): it cannot be
    # the beginning of that file, whatever its ETag says.
    (tmp_path / PARTIAL).write_bytes(FILE + b"x" * 5)
    (tmp_path / META).write_text(json.dumps({"etag": '"e1"', "size": len(FILE) + 10}))
    central = ScriptedCentral((FILE, '"e1"'))
    async with scripted_client(central) as client:
        refresher = Refresher(empty_store, client, sleep=no_wait)
        await refresher.refresh()
    first, second = central.snapshot_requests()
    assert first.headers["range"] == f"bytes={len(FILE) + 5}-"
    assert "range" not in second.headers
    assert refresher.stats.snapshots_applied == 1 and refresher.stats.snapshot_bytes == len(FILE)


CORRUPT = {
    "a flipped byte": FILE[:300] + bytes([FILE[300] ^ 0xFF]) + FILE[301:],
    "a truncated gzip stream": FILE[: len(FILE) // 2],
    "no end line": snapshot_file([member("F1"), member("F2")], end=False),
    "an end line without a cursor": snapshot_file([member("F1")], cursor=""),
    "fewer records than the end line counts": snapshot_file([member("F1")], records=2),
    "not gzip at all": b'{"kind": "member"}\n',
}


@pytest.mark.parametrize("damage", CORRUPT)
async def test_a_file_that_is_not_whole_is_not_applied_and_the_store_pages_changes(
    damage: str, tmp_path: Path, empty_store: Store, log_lines: io.StringIO
) -> None:
    central = ScriptedCentral((CORRUPT[damage], '"bad"'))
    async with scripted_client(central) as client:
        refresher = Refresher(empty_store, client, sleep=no_wait)
        await refresher.refresh()
    assert members_in(tmp_path / "gateway.db") == {"PAGED"}  # from changes, not from the file
    assert central.changes_cursors() == [""]
    stats = refresher.stats
    assert (stats.snapshots_rejected, stats.snapshots_applied) == (1, 0)
    assert stats.failures == 0 and stats.snapshots == 1
    (rejected,) = events(log_lines, "snapshot_rejected")
    assert rejected["level"] == "error" and rejected["etag"] == '"bad"'
    assert leftovers(tmp_path) == []


def test_the_check_names_what_is_wrong(tmp_path: Path) -> None:
    path = tmp_path / COMPLETE
    path.write_bytes(CORRUPT["fewer records than the end line counts"])
    with pytest.raises(SnapshotCorrupt, match="counts 2 records, the file holds 1"):
        check_snapshot(path)
    path.write_bytes(CORRUPT["no end line"])
    with pytest.raises(SnapshotCorrupt, match="end line is missing"):
        check_snapshot(path)
    path.write_bytes(FILE)
    assert (check_snapshot(path).records, check_snapshot(path).next_cursor) == (300, "c-file")


async def test_bad_records_in_the_file_are_skipped_and_counted_as_in_changes(
    tmp_path: Path, empty_store: Store
) -> None:
    data = snapshot_file(
        [
            member("G1"),
            "this line is not JSON",
            {"kind": "member", "data": {"identifiers": []}},  # no member_id
            {"kind": "badge", "data": {}},
            {"kind": "coupon", "data": {"code": "NEW5", "kind": "amount", "value": "5.00"}},
        ]
    )
    central = ScriptedCentral((data, '"e"'))
    async with scripted_client(central) as client:
        refresher = Refresher(empty_store, client, sleep=no_wait, page_limit=2)
        assert await refresher.refresh() == 5
    assert members_in(tmp_path / "gateway.db") == {"G1"}
    assert empty_store.coupon("NEW5") is not None
    stats = refresher.stats
    assert (stats.bad_records, dict(stats.unknown_kinds)) == (2, {"badge": 1})
    assert stats.pages == 3 + 1  # three pages of the file (2, 2, 1 lines), one of changes


async def test_an_empty_snapshot_file_still_hands_over_its_cursor(empty_store: Store) -> None:
    central = ScriptedCentral((snapshot_file([], "c-empty"), '"e"'))
    async with scripted_client(central) as client:
        await Refresher(empty_store, client, sleep=no_wait).refresh()
    assert central.changes_cursors() == ["c-empty"]


# ---- jitter -------------------------------------------------------------------------------------


@dataclass
class Sleeps:
    """The jitter's sleep: records, and takes no time."""

    taken: list[float] = field(default_factory=list)

    async def __call__(self, seconds: float) -> None:
        self.taken.append(seconds)


@pytest.mark.parametrize("draw", [0.0, 0.25, 0.999999])
async def test_a_daemons_first_download_waits_a_random_share_of_the_jitter(
    draw: float, empty_store: Store
) -> None:
    central = ScriptedCentral((FILE, '"e1"'))
    sleeps = Sleeps()
    async with scripted_client(central) as client:
        refresher = Refresher(
            empty_store, client, bootstrap_jitter_s=20.0, random=lambda: draw, sleep=sleeps
        )
        await refresher.refresh(jitter=True)
    (waited,) = sleeps.taken
    assert 0.0 <= waited <= 20.0 and waited == pytest.approx(draw * 20.0)
    assert refresher.stats.bootstrap_jitter_s == waited
    probe, download = central.snapshot_requests()
    assert probe.headers["if-none-match"] == "*"  # asked without the bytes, before the wait
    assert "if-none-match" not in download.headers


async def test_jitter_is_waited_once_and_never_by_an_operators_run_or_a_resume(
    tmp_path: Path, empty_store: Store
) -> None:
    sleeps = Sleeps()
    # Cut once after the wait; resumed in the next round without a second wait.
    central = ScriptedCentral((FILE, '"e1"', CUT), (FILE, '"e1"', CUT), (FILE, '"e1"'))
    async with scripted_client(central) as client:
        refresher = Refresher(
            empty_store, client, bootstrap_jitter_s=5.0, random=lambda: 0.5, sleep=sleeps
        )
        with pytest.raises(CentralUnavailable):
            await refresher.refresh(jitter=True)
        await refresher.refresh(jitter=True)
        assert sleeps.taken == [2.5]

        # `sync --full` on the same store: no wait, although it downloads again.
        await refresher.full()
        assert sleeps.taken == [2.5]
    assert refresher.stats.snapshots_applied == 2


async def test_a_daemon_round_waits_the_jitter_through_run(empty_store: Store) -> None:
    central = ScriptedCentral((FILE, '"e1"'))
    sleeps = Sleeps()
    async with scripted_client(central) as client:
        refresher = Refresher(
            empty_store,
            client,
            interval_s=3600,
            long_poll_s=0,
            bootstrap_jitter_s=30.0,
            random=lambda: 0.5,
            sleep=sleeps,
        )
        running = asyncio.create_task(refresher.run())
        try:
            await until(lambda: refresher.stats.snapshots_applied == 1, what="bootstrap")
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
    assert sleeps.taken == [15.0]


def test_the_refreshers_default_jitter_is_the_configurations() -> None:
    default = inspect.signature(Refresher).parameters["bootstrap_jitter_s"].default
    assert default == CentralSettings().bootstrap_jitter_s == 30.0
