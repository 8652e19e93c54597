"""The admin API (starlette, on 127.0.0.1 by default): `/healthz`, `/readyz`, `/status`,
`/metrics`, `/history`, the stop switch, dead-letter retry, and the dashboard page at `/`.
It reads what the daemon hands it; it never imports adapters or sync itself.

A web page must not be able to use it: it answers only for the Host names it serves (a page
whose own name was rebound to 127.0.0.1 sends its own name), and a state-changing request needs
the token or must come from the API's own origin (CSRF)."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.admin import dashboard
from gateway.admin.history import History
from gateway.web.guard import host_problem, normal_host, same_origin

StatusSource = Callable[[], Awaitable[dict[str, Any]]]
Readiness = Callable[[], dict[str, bool]]
ProgramSwitch = Callable[[str, bool, str], Awaitable[None]]
RetryDeadLetters = Callable[[], Awaitable[int]]
PROGRAMS = ("lottery",)

_WILDCARDS = {"", "0.0.0.0", "::"}


def served_hosts(bind_host: str | None, host_names: Iterable[str]) -> frozenset[str]:
    """The names the API answers for: loopback, the address it is bound to (not a wildcard: what
    a wildcard serves is named in admin.host_names), and admin.host_names."""
    names = {"localhost", "127.0.0.1", "::1", *host_names}
    if bind_host is not None and bind_host.strip("[]") not in _WILDCARDS:
        names.add(bind_host)
    return frozenset(normal_host(name) for name in names)


class _ServedHostsOnly:
    """Refuse any Host header but the served names (DNS rebinding). A request without one is let
    through: every browser sends it, so only a local program can leave it out."""

    def __init__(self, app: ASGIApp, hosts: frozenset[str]) -> None:
        self.app, self.hosts = app, hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            value = next((v for k, v in scope["headers"] if k == b"host"), None)
            text = None if value is None else value.decode("latin-1")
            problem = host_problem(text, self.hosts.__contains__)
            refusal = None
            if problem == "BAD_HOST":
                refusal = JSONResponse(
                    {
                        "error": "BAD_HOST",
                        "detail": "the Host header is not a host name with an optional port",
                    },
                    status_code=400,
                )
            elif problem == "UNKNOWN_HOST" and text is not None:
                refusal = JSONResponse(
                    {
                        "error": "UNKNOWN_HOST",
                        "host": text[:255],
                        "detail": "this admin API does not answer for that host name; "
                        "a name it should answer for goes in admin.host_names",
                    },
                    status_code=421,
                )
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_admin_app(
    *,
    status: StatusSource,
    readiness: Readiness,
    registry: CollectorRegistry,
    refresh_metrics: Callable[[], Awaitable[None]],
    switch_program: ProgramSwitch,
    token: str | None = None,
    history: History | None = None,
    retry_dead_letters: RetryDeadLetters | None = None,
    dashboard_refresh_s: float = 5.0,
    host_names: Sequence[str] = (),
    bind_host: str | None = None,
) -> Starlette:
    """`token`: when set (the API is bound beyond localhost), every request needs it.
    `history`: the last hour, served at `/history` (empty without it); `retry_dead_letters`:
    what `POST /dead-letters/retry` calls (501 without it). `host_names` and `bind_host`: the
    names answered besides localhost (admin.host_names, admin.host)."""
    hosts = served_hosts(bind_host, host_names)

    def authorised(request: Request) -> bool:
        if token is None:
            return True
        given = request.headers.get("authorization", "")
        return secrets.compare_digest(given.encode(), f"Bearer {token}".encode())

    def foreign_origin(request: Request) -> bool:
        origin = request.headers.get("origin")
        if origin is None:
            return False
        try:
            hostname = urlsplit(origin).hostname
        except ValueError:
            return True
        return hostname is None or normal_host(hostname) not in hosts  # "null" too

    def state_changing(
        handler: Callable[[Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        """A POST that changes what the registers do: never from another site, and only with
        the token or from the dashboard's own page (CSRF)."""

        async def checked(request: Request) -> Response:
            if foreign_origin(request):
                return JSONResponse(
                    {
                        "error": "FOREIGN_ORIGIN",
                        "detail": "a page of another site cannot change this gateway",
                    },
                    status_code=403,
                )
            if not authorised(request):
                return JSONResponse({"error": "UNAUTHORIZED"}, status_code=401)
            if token is None and not same_origin(request, silent_ok=False):
                return JSONResponse(
                    {
                        "error": "NOT_SAME_ORIGIN",
                        "detail": "this needs the admin token (Authorization: Bearer) or a "
                        "request from the dashboard's own page",
                    },
                    status_code=403,
                )
            return await handler(request)

        return checked

    def json_body_required(request: Request) -> Response | None:
        # JSON only: a cross-site form cannot send it without the browser asking first (CSRF).
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return JSONResponse({"error": "JSON_REQUIRED"}, status_code=415)
        return None

    def guard(
        handler: Callable[[Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def guarded(request: Request) -> Response:
            if not authorised(request):
                return JSONResponse({"error": "UNAUTHORIZED"}, status_code=401)
            return await handler(request)

        return guarded

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def readyz(request: Request) -> Response:
        checks = readiness()
        ready = all(checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status_code=200 if ready else 503,
        )

    async def status_handler(request: Request) -> Response:
        return JSONResponse(await status())

    async def metrics(request: Request) -> Response:
        await refresh_metrics()
        return PlainTextResponse(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def program(request: Request) -> Response:
        """POST /programs/{program}/pause|resume, JSON body {"by": "who"}: the stop switch."""
        name, action = request.path_params["program"], request.path_params["action"]
        if name not in PROGRAMS or action not in ("pause", "resume"):
            return JSONResponse({"error": "UNKNOWN_PROGRAM"}, status_code=404)
        refused = json_body_required(request)
        if refused is not None:
            return refused
        try:
            body = await request.json()
        except ValueError:
            body = None
        by = str(body.get("by", "admin-api"))[:64] if isinstance(body, dict) else "admin-api"
        paused = action == "pause"
        await switch_program(name, paused, by)
        if history is not None:
            history.note_switch(name, paused, by)
        return JSONResponse({"program": name, "paused": paused, "by": by})

    async def history_handler(request: Request) -> Response:
        return JSONResponse(history.to_json() if history is not None else History().to_json())

    async def retry_dead_letters_handler(request: Request) -> Response:
        """POST /dead-letters/retry (JSON body, may be {}): every dead letter back in the outbox."""
        refused = json_body_required(request)
        if refused is not None:
            return refused
        if retry_dead_letters is None:
            return JSONResponse({"error": "NOT_AVAILABLE"}, status_code=501)
        return JSONResponse({"retried": await retry_dead_letters()})

    async def page(request: Request) -> Response:
        """The dashboard. With a token, the page too needs it: as a bearer header, or once as
        `?token=` (the page keeps it in sessionStorage and sends it as a header from then on)."""
        return dashboard.PAGE.response(
            request,
            token=token,
            authorised=authorised(request),
            render=lambda: dashboard.render_page(
                programs=PROGRAMS,
                retry_available=retry_dead_letters is not None,
                history_available=history is not None,
                refresh_s=dashboard_refresh_s,
            ),
        )

    return Starlette(
        routes=[
            Route("/", page),
            Route("/history", guard(history_handler)),
            Route(
                "/dead-letters/retry",
                state_changing(retry_dead_letters_handler),
                methods=["POST"],
            ),
            Route("/programs/{program}/{action}", state_changing(program), methods=["POST"]),
            Route("/healthz", guard(healthz)),
            Route("/readyz", guard(readyz)),
            Route("/status", guard(status_handler)),
            Route("/metrics", guard(metrics)),
        ],
        middleware=[Middleware(_ServedHostsOnly, hosts=hosts)],
    )
