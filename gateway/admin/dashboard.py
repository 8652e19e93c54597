"""The dashboard page at `/` of the admin API: one HTML document (its CSS and JavaScript inline,
from the files in `static/`), no build step. The page is a shell; its script fills it from
`/status` and `/history` and refreshes every few seconds; when the gateway does not answer (no
connection, or nothing within `unreachable_after_s`), it says UNREACHABLE on top. Everything
it shows from the gateway goes in through `textContent`, never as markup.

Inline code runs under a per-response nonce, and the page may not be framed: the stop switch is
one click, so no other site may overlay it (clickjacking) or inject into it."""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from functools import cache
from importlib.resources import files


@cache
def _asset(name: str) -> str:
    return (files("gateway.admin") / "static" / name).read_text(encoding="utf-8")


def _headers(nonce: str) -> dict[str, str]:
    policy = (
        "default-src 'none'; "
        f"script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        "connect-src 'self'; img-src 'self' data:; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
    return {
        "Content-Security-Policy": policy,
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
    }


def _fill(template: str, nonce: str, **parts: str) -> str:
    page = template.replace("{{nonce}}", nonce)
    for key, value in parts.items():
        page = page.replace("{{" + key + "}}", value)
    return page


def unreachable_after_s(refresh_s: float) -> float:
    """How long the page waits for an answer before it says the gateway is unreachable: two
    refresh intervals, and never under 3 s (a busy gateway is slow, not gone)."""
    return max(3.0, 2 * refresh_s)


def render_page(
    *,
    programs: Sequence[str],
    retry_available: bool,
    history_available: bool,
    refresh_s: float,
) -> tuple[str, dict[str, str]]:
    """The dashboard and the headers it must be served with."""
    nonce = secrets.token_urlsafe(16)
    config = {
        "programs": list(programs),
        "retryAvailable": retry_available,
        "historyAvailable": history_available,
        "refreshMs": int(refresh_s * 1000),
        # No answer within this: the page says UNREACHABLE (a stopped or hung gateway).
        "timeoutMs": int(unreachable_after_s(refresh_s) * 1000),
    }
    # "</" cannot end the JSON's script element early.
    config_json = json.dumps(config).replace("</", "<\\/")
    page = _fill(
        _asset("dashboard.html"),
        nonce,
        css=_asset("dashboard.css"),
        js=_asset("dashboard.js"),
        config=config_json,
    )
    return page, _headers(nonce)


def render_refusal(*, wrong_token: bool) -> tuple[str, dict[str, str]]:
    """The 401 page: no gateway data, only a field for the admin token."""
    nonce = secrets.token_urlsafe(16)
    message = "That token was refused." if wrong_token else "This gateway's admin token is needed."
    page = _fill(
        _asset("refused.html"),
        nonce,
        css=_asset("dashboard.css"),
        message=message,
        wrong="true" if wrong_token else "false",
    )
    return page, _headers(nonce)
