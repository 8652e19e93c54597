"""The admin API (starlette, on 127.0.0.1 by default): `/healthz`, `/readyz`, `/status`,
`/metrics`. It reads what the daemon hands it; it never imports adapters or sync itself."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

StatusSource = Callable[[], Awaitable[dict[str, Any]]]
Readiness = Callable[[], dict[str, bool]]
ProgramSwitch = Callable[[str, bool, str], Awaitable[None]]
PROGRAMS = ("lottery",)


def create_admin_app(
    *,
    status: StatusSource,
    readiness: Readiness,
    registry: CollectorRegistry,
    refresh_metrics: Callable[[], Awaitable[None]],
    switch_program: ProgramSwitch,
    token: str | None = None,
) -> Starlette:
    """`token`: when set (the API is bound beyond localhost), every request needs it."""

    def authorised(request: Request) -> bool:
        if token is None:
            return True
        given = request.headers.get("authorization", "")
        return secrets.compare_digest(given, f"Bearer {token}")

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
        # JSON only: a cross-site form cannot send it without the browser asking first (CSRF).
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return JSONResponse({"error": "JSON_REQUIRED"}, status_code=415)
        try:
            body = await request.json()
        except ValueError:
            body = None
        by = str(body.get("by", "admin-api"))[:64] if isinstance(body, dict) else "admin-api"
        paused = action == "pause"
        await switch_program(name, paused, by)
        return JSONResponse({"program": name, "paused": paused, "by": by})

    return Starlette(
        routes=[
            Route("/programs/{program}/{action}", guard(program), methods=["POST"]),
            Route("/healthz", guard(healthz)),
            Route("/readyz", guard(readyz)),
            Route("/status", guard(status_handler)),
            Route("/metrics", guard(metrics)),
        ]
    )
