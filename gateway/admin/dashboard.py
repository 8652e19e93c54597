"""The dashboard page at `/` of the admin API: one HTML document, no build step, served as every
admin page is (`gateway.web.page`: the shared frame, style and script, its CSS and JavaScript
inline under a per-response nonce, never framed); its own markup, style and script are the files
in `static/`. The page is a shell; its script fills it from `/status` and `/history` and
refreshes every few seconds; when the gateway does not answer (no connection, or nothing within
`gateway.web.page.unreachable_after_s`), it says UNREACHABLE on top. Everything it shows from
the gateway goes in through `textContent`, never as markup."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.web.page import AdminPage, Rendered, asset

PAGE = AdminPage(
    title="Loyalty gateway",
    subject="gateway",
    path="/",
    token_key="gatewayToken",
    token_needed="This gateway's admin token is needed.",
    open_label="Open the dashboard",
    refused_title="Loyalty gateway: token needed",
)


def render_page(
    *,
    programs: Sequence[str],
    retry_available: bool,
    history_available: bool,
    refresh_s: float,
) -> Rendered:
    """The dashboard and the headers it must be served with."""
    return PAGE.render(
        body=asset("gateway.admin", "dashboard.html"),
        css=asset("gateway.admin", "dashboard.css"),
        js=asset("gateway.admin", "dashboard.js"),
        refresh_s=refresh_s,
        config={
            "programs": list(programs),
            "retryAvailable": retry_available,
            "historyAvailable": history_available,
        },
    )
