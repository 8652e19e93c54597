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


def create_admin_app(
    *,
    status: StatusSource,
    readiness: Readiness,
    registry: CollectorRegistry,
    refresh_metrics: Callable[[], Awaitable[None]],
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

    return Starlette(
        routes=[
            Route("/healthz", guard(healthz)),
            Route("/readyz", guard(readyz)),
            Route("/status", guard(status_handler)),
            Route("/metrics", guard(metrics)),
        ]
    )
