"""The HTTP side of the reference central: the contract's routes, the admin API, the guards.

Handlers read and check the request, hand the work to the storage as a job, and answer. The
`api` guard plays the injected faults first (latency, 5xx, 429), then checks the token and the
gateway id; after the handler it notes the store as seen (for the fleet view) and may mark the
answer to be lost by the proxy. A `changes` long poll waits on the change feed, holding no
database connection while it waits. The `admin` guard answers loopback clients only, and keeps
web pages out (`admin_guard`); the fleet view and its stop switch are in `fleet`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import ipaddress
import json
import sys
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sync.central import fleet
from sync.central.admin_guard import AdminGuard
from sync.central.config import MIB, ReferenceConfig
from sync.central.errors import ApiError
from sync.central.faults import Faults, ProxyLink
from sync.central.fleet import SEEN_EVERY_S, fleet_view
from sync.central.ledger import Ledger
from sync.central.longpoll import ChangeFeed
from sync.central.snapshot import SnapshotService, build_snapshot
from sync.central.storage import Storage, T, open_storage

Handler = Callable[[Request], Awaitable[Response]]


def _no_such(kind: str, key: str) -> ApiError:
    return ApiError(404, "NOT_FOUND", f"no {kind} {key!r}")


class Central:
    """The reference central's handlers over a `Storage` (SQLite or PostgreSQL)."""

    def __init__(self, config: ReferenceConfig, link: ProxyLink | None = None) -> None:
        self.config = config
        self.link = link or ProxyLink()
        self.faults = Faults(config.seed)
        self.requests: Counter[int] = Counter()
        self.dropped = 0
        self.feed = ChangeFeed()
        self.storage: Storage = open_storage(config, self.feed)
        self.snapshots = SnapshotService(self.storage)
        self._opened = False
        self._builder: asyncio.Task[None] | None = None
        self.admin_guard = AdminGuard(config.admin_token, config.admin_host_names)
        self._seen: dict[str, float] = {}  # store -> when this process last wrote it down

    async def open(self) -> None:
        """Open the database and load the configured records (idempotent)."""
        if self._opened:
            return
        await self.storage.open()
        self._opened = True
        if self.config.snapshot_every_s > 0:
            self._builder = asyncio.create_task(self._build_snapshots(), name="central-snapshots")

    async def close(self) -> None:
        self.feed.close()
        if self._builder is not None:
            self._builder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._builder
            self._builder = None
        if self._opened:
            self._opened = False
            await self.storage.close()

    async def run(self, job: Callable[[Ledger], T]) -> T:
        """Run `job` on a database thread."""
        return await self.storage.run(job)

    async def _build_snapshots(self) -> None:
        """At start, then every `snapshot_every_s`: a new snapshot when records changed."""
        while True:
            try:
                await build_snapshot(self.storage, only_if_stale=True)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the next round tries again; the last snapshot stays
                print(f"reference-server: snapshot not built: {exc!r}", file=sys.stderr)
            await asyncio.sleep(self.config.snapshot_every_s)

    # ---- the API's guard: faults, token, gateway id ----

    def api(self, handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            try:
                response = await self._guarded(handler, request)
            except ApiError as exc:
                response = exc.response()
            self.requests[response.status_code] += 1
            return response

        return endpoint

    async def _guarded(self, handler: Handler, request: Request) -> Response:
        settings = self.faults.settings
        if settings.latency_ms:
            await asyncio.sleep(settings.latency_ms / 1000)
        if settings.down:  # only reached on the internal port: the proxy refuses everything
            raise ApiError(
                503, "UNAVAILABLE", "central is down", {"Retry-After": settings.retry_after}
            )
        refusal = self.faults.draw_refusal()
        if refusal == "throttle":
            raise ApiError(429, "THROTTLED", "slow down", {"Retry-After": settings.retry_after})
        if refusal == "error":
            status = settings.error_status
            if status == 503:
                raise ApiError(
                    503, "UNAVAILABLE", "injected fault", {"Retry-After": settings.retry_after}
                )
            raise ApiError(status, "SERVER_ERROR", "injected fault")
        token = self.config.token
        if token is not None:
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode(), token.encode()
            ):
                raise ApiError(401, "UNAUTHORIZED", "a valid bearer token is required")
        gateway_id = request.headers.get("x-gateway-id", "").strip()
        if not gateway_id:
            raise ApiError(400, "MISSING_GATEWAY_ID", "the X-Gateway-Id header is required")
        try:
            response = await handler(request)
        except ApiError as exc:
            response = exc.response()
        store = request.path_params.get("store")
        if store is not None and response.status_code < 500:  # a 5xx: the database may be away
            await self._saw(store, gateway_id)
        client = (request.client.host, request.client.port) if request.client else None
        if self.faults.draw_drop() and self.link.mark_drop(client):
            self.dropped += 1
        return response

    async def _saw(self, store: str, gateway_id: str) -> None:
        """Note the store as seen (the fleet view): at most every `SEEN_EVERY_S` per process."""
        now = asyncio.get_running_loop().time()
        last = self._seen.get(store)
        if last is not None and now - last < SEEN_EVERY_S:
            return
        if len(self._seen) > 100_000:  # store ids made up by a client with the token
            self._seen.clear()
        self._seen[store] = now
        try:
            await self.run(lambda db: db.saw_store(store, gateway_id[:128]))
        except ApiError:  # the database is out of reach: the handler answers that itself
            self._seen.pop(store, None)

    # ---- API handlers ----

    async def post_events(self, request: Request) -> Response:
        store = request.path_params["store"]
        raw = await read_body(request, self.config.max_batch_bytes, "BAD_BATCH")
        body = await self.run(lambda db: db.ingest(store, raw, self.config.max_batch_events))
        return Response(body, media_type="application/json")

    async def get_changes(self, request: Request) -> Response:
        cursor = request.query_params.get("cursor", "")
        text = request.query_params.get("limit", "500")
        if not text.isdigit() or not 1 <= int(text) <= 1000:
            raise ApiError(400, "BAD_LIMIT", "limit must be an integer 1..1000")
        if len(cursor) > 1024:
            raise ApiError(400, "BAD_CURSOR", "unknown cursor: start again with an empty cursor")
        wait_s = _wait_s(request.query_params.get("wait_s", "0"), self.config.max_wait_s)
        limit = int(text)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            # The ticket is taken before the read: a change committed after the read moves the
            # feed past it, so the wait below cannot miss it.
            ticket = self.feed.ticket()
            body, empty = await self.run(lambda db: db.changes(cursor, limit))
            remaining = deadline - loop.time()
            if not empty or remaining <= 0 or self.feed.closed:
                return Response(body, media_type="application/json")
            await self.feed.wait(ticket, remaining)

    async def get_snapshot(self, request: Request) -> Response:
        return await self.snapshots.respond(request)

    async def authorize(self, request: Request) -> Response:
        code = request.path_params["code"]
        body = await read_json(request, self.config.max_small_body_bytes)
        gateway_id = request.headers.get("x-gateway-id", "")
        return JSONResponse(await self.run(lambda db: db.authorize(code, body, gateway_id)))

    async def put_catalog(self, request: Request) -> Response:
        store = request.path_params["store"]
        body = await read_json(request, self.config.max_catalog_bytes)
        return JSONResponse(await self.run(lambda db: db.put_catalog(store, body)))

    async def heartbeat(self, request: Request) -> Response:
        store = request.path_params["store"]
        body = await read_json(request, self.config.max_small_body_bytes)
        await self.run(lambda db: db.heartbeat(store, body))
        return Response(status_code=204)

    # ---- admin (loopback only; no web page; the admin token when one is set) ----

    def admin(self, handler: Handler, *, page: bool = False) -> Handler:
        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            client = (request.client.host, request.client.port) if request.client else None
            host = self.link.client_host(client)
            if not is_loopback(host):
                return ApiError(403, "FORBIDDEN", "the admin API answers loopback only").response()
            refused = self.admin_guard.refusal(request, page=page)
            if refused is not None:
                return refused.response()
            try:
                return await handler(request)
            except ApiError as exc:
                return exc.response()

        return endpoint

    async def admin_stats(self, request: Request) -> Response:
        stats = await self.run(lambda db: db.stats())
        latest = await self.run(lambda db: db.latest_snapshot())
        stats["requests"] = {str(k): v for k, v in sorted(self.requests.items())}
        stats["dropped_responses"] = self.dropped
        stats["storage"] = self.storage.kind
        stats["long_polls_waiting"] = self.feed.waiting
        stats["snapshot"] = None if latest is None else asdict(latest)
        stats["snapshot_responses"] = self.snapshots.served
        return JSONResponse(stats)

    async def admin_checks(self, request: Request) -> Response:
        store = request.query_params.get("store") or None
        return JSONResponse({"checks": await self.run(lambda db: db.checks(store))})

    async def _record(self, kind: str, key: str, job: Callable[[Ledger], T | None]) -> T:
        """What `job` found of the record `key`; a 404 when central has no such record."""
        found = await self.run(job)
        if found is None:
            raise _no_such(kind, key)
        return found

    async def _delete(self, kind: str, key: str, job: Callable[[Ledger], bool]) -> Response:
        """Delete the record `key` (`job` is False when there was none: a 404)."""
        if not await self.run(job):
            raise _no_such(kind, key)
        return JSONResponse({"deleted": key})

    async def admin_member(self, request: Request) -> Response:
        member_id = request.path_params["member_id"]
        view = await self._record("member", member_id, lambda db: db.member_view(member_id))
        return JSONResponse({**view["record"], "tickets": view["tickets"]})

    async def admin_delete_member(self, request: Request) -> Response:
        member_id = request.path_params["member_id"]
        return await self._delete("member", member_id, lambda db: db.delete_member(member_id))

    async def admin_upsert_members(self, request: Request) -> Response:
        body = await read_json(request, 1024 * MIB)
        return JSONResponse({"upserted": await self.run(lambda db: db.upsert_members(body))})

    async def admin_coupon(self, request: Request) -> Response:
        code = request.path_params["code"]
        return JSONResponse(await self._record("coupon", code, lambda db: db.coupon_view(code)))

    async def admin_upsert_coupons(self, request: Request) -> Response:
        body = await read_json(request, 256 * MIB)
        return JSONResponse({"upserted": await self.run(lambda db: db.upsert_coupons(body))})

    async def admin_delete_coupon(self, request: Request) -> Response:
        code = request.path_params["code"]
        return await self._delete("coupon", code, lambda db: db.delete_coupon(code))

    async def admin_rules(self, request: Request) -> Response:
        body = await read_json(request, 16 * MIB)
        await self.run(lambda db: db.set_rules(body))
        return JSONResponse({"version": body["version"]})

    async def admin_build_snapshot(self, request: Request) -> Response:
        info = await build_snapshot(self.storage)
        if info is None:
            raise ApiError(409, "BUSY", "another central process is building a snapshot")
        return JSONResponse(asdict(info))

    async def admin_get_faults(self, request: Request) -> Response:
        return JSONResponse(self.faults.as_dict())

    async def admin_put_faults(self, request: Request) -> Response:
        body = await read_json(request, self.config.max_small_body_bytes)
        was_down = self.faults.settings.down
        self.faults.update(body)
        if self.faults.settings.down != was_down and self.link.on_down is not None:
            # The connection that asked is spared, so its answer arrives.
            asking = request.client.port if request.client else None
            await self.link.on_down(self.faults.settings.down, asking)
        return JSONResponse(self.faults.as_dict())

    async def admin_fleet(self, request: Request) -> Response:
        rows = await self.run(lambda db: db.fleet_rows())
        view = fleet_view(rows, self.config.clock(), self.config.fleet_offline_after_s)
        return JSONResponse(view, headers={"Cache-Control": "no-store"})

    async def admin_fleet_page(self, request: Request) -> Response:
        """The fleet page. With an admin token, the page too needs it: as a bearer header, or
        once as `?token=` (the page keeps it in sessionStorage and sends it as a header)."""
        return fleet.PAGE.response(
            request,
            token=self.admin_guard.token,
            authorised=self.admin_guard.authorised(request),
            render=lambda: fleet.render_page(
                refresh_s=self.config.fleet_page_refresh_s,
                offline_after_s=self.config.fleet_offline_after_s,
            ),
        )

    async def admin_switch_program(self, request: Request) -> Response:
        """POST /_admin/programs/{program}/pause|resume, JSON body {"by": "who"}: the
        chain-wide stop switch, published as a new version of the rules document."""
        program, action = request.path_params["program"], request.path_params["action"]
        if action not in ("pause", "resume"):
            raise ApiError(404, "NOT_FOUND", "the action is pause or resume")
        # JSON only: a cross-site form cannot send it without the browser asking first (CSRF).
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise ApiError(415, "JSON_REQUIRED", "the body must be JSON (application/json)")
        body = await read_json(request, self.config.max_small_body_bytes)
        given = body.get("by") if isinstance(body, dict) else None
        by = (str(given).strip()[:64] if given is not None else "") or "admin-api"
        paused = action == "pause"
        result = await self.run(lambda db: db.switch_program(program, paused, by))
        return JSONResponse(result)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        await self.open()
        try:
            yield
        finally:
            await self.close()


def _wait_s(text: str, most: float) -> float:
    try:
        wait_s = float(text or "0")
    except ValueError:
        wait_s = -1.0
    if not 0 <= wait_s <= 30:
        raise ApiError(400, "BAD_WAIT", "wait_s must be a number of seconds 0..30")
    return min(wait_s, most)


def is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


async def read_body(request: Request, limit: int, bad_code: str) -> bytes:
    """The request body, gunzipped when `Content-Encoding: gzip`, refused (413) over `limit`."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip", ""):
        raise ApiError(400, "UNSUPPORTED_ENCODING", f"Content-Encoding {encoding!r}; use gzip")
    too_large = ApiError(413, "PAYLOAD_TOO_LARGE", f"the body is over {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    raw = b"".join(chunks)
    if encoding == "gzip":
        inflater = zlib.decompressobj(wbits=31)
        try:
            raw = inflater.decompress(raw, limit + 1)
        except zlib.error:
            raise ApiError(400, bad_code, "the body is not valid gzip") from None
        if len(raw) > limit or inflater.unconsumed_tail:
            raise too_large
        if not inflater.eof:
            raise ApiError(400, bad_code, "the gzip body is truncated")
    return raw


async def read_json(request: Request, limit: int, bad_code: str = "BAD_REQUEST") -> Any:
    raw = await read_body(request, limit, bad_code)
    try:
        return json.loads(raw)
    except (ValueError, UnicodeError):
        raise ApiError(400, bad_code, "the body is not JSON") from None


def create_app(config: ReferenceConfig, *, link: ProxyLink | None = None) -> Starlette:
    """The reference central's ASGI app; its `Central` is `app.state.central`.

    Served alone, it answers everything but "drop after commit" and "down", which need the
    proxy that `ReferenceServer` puts in front of it.
    """
    return build_app(Central(config, link))


def build_app(central: Central) -> Starlette:
    # Each table's routes are behind its guard: a new route cannot miss the one it needs.
    api: dict[tuple[str, str], Handler] = {  # the contract
        ("POST", "/v1/stores/{store}/events"): central.post_events,
        ("GET", "/v1/stores/{store}/changes"): central.get_changes,
        ("GET", "/v1/stores/{store}/snapshot"): central.get_snapshot,
        ("POST", "/v1/coupons/{code}/authorizations"): central.authorize,
        ("PUT", "/v1/stores/{store}/catalog"): central.put_catalog,
        ("POST", "/v1/stores/{store}/heartbeat"): central.heartbeat,
    }
    admin: dict[tuple[str, str], Handler] = {  # loopback only, no web page
        ("GET", "/_admin/stats"): central.admin_stats,
        ("GET", "/_admin/checks"): central.admin_checks,
        ("POST", "/_admin/members"): central.admin_upsert_members,
        ("GET", "/_admin/members/{member_id}"): central.admin_member,
        ("DELETE", "/_admin/members/{member_id}"): central.admin_delete_member,
        ("POST", "/_admin/coupons"): central.admin_upsert_coupons,
        ("GET", "/_admin/coupons/{code}"): central.admin_coupon,
        ("DELETE", "/_admin/coupons/{code}"): central.admin_delete_coupon,
        ("PUT", "/_admin/rules"): central.admin_rules,
        ("POST", "/_admin/snapshot"): central.admin_build_snapshot,
        ("GET", "/_admin/faults"): central.admin_get_faults,
        ("PUT", "/_admin/faults"): central.admin_put_faults,
        ("GET", "/_admin/fleet"): central.admin_fleet,
        ("POST", "/_admin/programs/{program}/{action}"): central.admin_switch_program,
    }
    routes = [Route(path, central.api(h), methods=[m]) for (m, path), h in api.items()]
    routes += [Route(path, central.admin(h), methods=[m]) for (m, path), h in admin.items()]
    # The one web page behind the admin guard.
    page = central.admin(central.admin_fleet_page, page=True)
    routes.append(Route("/_admin/fleet/page", page, methods=["GET"]))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status_code, "HTTP_ERROR")
        return ApiError(exc.status_code, code, str(exc.detail), dict(exc.headers or {})).response()

    async def server_error(request: Request, exc: Exception) -> Response:
        return ApiError(500, "SERVER_ERROR", type(exc).__name__).response()

    app = Starlette(
        routes=routes,
        lifespan=central.lifespan,
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )
    app.state.central = central
    return app
