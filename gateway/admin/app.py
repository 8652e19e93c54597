"""The admin API (starlette, on 127.0.0.1 by default): `/healthz`, `/readyz`, `/status`,
`/metrics`, `/history`, the stop switch, dead-letter retry, and the dashboard page at `/`.
It reads what the daemon hands it; it never imports adapters or sync itself."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from gateway.admin import dashboard
from gateway.admin.history import History

StatusSource = Callable[[], Awaitable[dict[str, Any]]]
Readiness = Callable[[], dict[str, bool]]
ProgramSwitch = Callable[[str, bool, str], Awaitable[None]]
RetryDeadLetters = Callable[[], Awaitable[int]]
PROGRAMS = ("lottery",)


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
) -> Starlette:
    """`token`: when set (the API is bound beyond localhost), every request needs it.
    `history`: the last hour, served at `/history` (empty without it); `retry_dead_letters`:
    what `POST /dead-letters/retry` calls (501 without it)."""

    def authorised(request: Request) -> bool:
        if token is None:
            return True
        given = request.headers.get("authorization", "")
        return secrets.compare_digest(given.encode(), f"Bearer {token}".encode())

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
        given = request.query_params.get("token")
        if not authorised(request) and not (
            token is not None
            and given is not None
            and secrets.compare_digest(given.encode(), token.encode())
        ):
            body, headers = dashboard.render_refusal(wrong_token=given is not None)
            return HTMLResponse(body, status_code=401, headers=headers)
        body, headers = dashboard.render_page(
            programs=PROGRAMS,
            retry_available=retry_dead_letters is not None,
            history_available=history is not None,
            refresh_s=dashboard_refresh_s,
        )
        return HTMLResponse(body, headers=headers)

    return Starlette(
        routes=[
            Route("/", page),
            Route("/history", guard(history_handler)),
            Route("/dead-letters/retry", guard(retry_dead_letters_handler), methods=["POST"]),
            Route("/programs/{program}/{action}", guard(program), methods=["POST"]),
            Route("/healthz", guard(healthz)),
            Route("/readyz", guard(readyz)),
            Route("/status", guard(status_handler)),
            Route("/metrics", guard(metrics)),
        ]
    )
