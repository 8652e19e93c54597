"""An admin page, served as the store's dashboard and central's fleet page are: one HTML document
(the shared frame, `static/page.html`, around the page's own markup; the shared style and script,
`static/page.css` and `static/page.js`, before the page's own), no build step. It is served
under a per-response nonce and may not be framed: a stop switch is one click, so no other site
may overlay it (clickjacking) or inject into it. With an admin token, the page too needs it: as a
bearer header, or once as `?token=` (the page keeps it in the tab's sessionStorage and sends it
as a header from then on); without it, the 401 page (`static/refused.html`) has a field for it.

The shared script fetches with the token and a timeout, polls one request at a time, says on top
when the API does not answer (what is left on the page greyed, its buttons disabled), keeps the
alert bar and writes times and ages; everything from the API goes in through `textContent`."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse

from gateway.web.guard import query_token

Rendered = tuple[str, dict[str, str]]  # a document, and the headers it must be served with

_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


@cache
def asset(package: str, name: str) -> str:
    """A file in `package`'s `static/` folder (package data)."""
    return (files(package) / "static" / name).read_text(encoding="utf-8")


def _shared(name: str) -> str:
    return asset("gateway.web", name)


def headers(nonce: str) -> dict[str, str]:
    """What a page must be served with: its inline code runs under `nonce` only; never framed."""
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


def fill(template: str, **parts: str) -> str:
    """`template` with every `{{name}}` replaced by `parts[name]`, in one pass: nothing that is
    put in is filled in again."""
    return _PLACEHOLDER.sub(lambda match: parts[match[1]], template)


def script_json(value: Any) -> str:
    """`value` as JSON that cannot end the script element it stands in early ("</")."""
    return json.dumps(value).replace("</", "<\\/")


def unreachable_after_s(refresh_s: float) -> float:
    """How long a page waits for an answer before it says the API is not answering: two
    refresh intervals, and never under 3 s (a busy server is slow, not gone)."""
    return max(3.0, 2 * refresh_s)


@dataclass(frozen=True)
class AdminPage:
    """One admin page: what its documents say, and where it is served."""

    title: str  # the page's title, and the 401 page's heading
    subject: str  # what it watches: the body's `data-<subject>` is "answering" or "unreachable"
    path: str  # where it is served (the 401 page's form opens it again)
    token_key: str  # where the tab's sessionStorage keeps the admin token
    token_needed: str  # what the 401 page says when no token came
    open_label: str  # the 401 page's button
    refused_title: str  # the 401 page's title

    def render(
        self, *, body: str, css: str, js: str, refresh_s: float, config: Mapping[str, Any]
    ) -> Rendered:
        """The page: `body` (its markup) in the shared frame, `css` after the shared style, `js`
        after the shared script, which finds `config` (and how often to ask, how long to wait,
        where the token is kept) in the `config` element."""
        nonce = secrets.token_urlsafe(16)
        settings = {
            **config,
            "subject": self.subject,
            "tokenKey": self.token_key,
            "refreshMs": int(refresh_s * 1000),
            # No answer within this: the page says the API is not answering.
            "timeoutMs": int(unreachable_after_s(refresh_s) * 1000),
        }
        data = f'<script type="application/json" id="config">{script_json(settings)}</script>'
        page = self._frame(
            nonce,
            title=self.title,
            attributes=f' data-{self.subject}="unknown"',
            body=f"{body.strip()}\n{data}",
            css=_shared("page.css") + css,
            js=_shared("page.js") + js,
        )
        return page, headers(nonce)

    def render_refusal(self, *, wrong_token: bool) -> Rendered:
        """The 401 page: nothing of the API's, only a field for the admin token."""
        nonce = secrets.token_urlsafe(16)
        login = fill(
            _shared("refused.html"),
            heading=self.title,
            message="That token was refused." if wrong_token else self.token_needed,
            path=self.path,
            open=self.open_label,
        )
        script = fill(
            _shared("refused.js"),
            wrong="true" if wrong_token else "false",
            key=script_json(self.token_key),
            path=script_json(self.path),
        )
        page = self._frame(
            nonce,
            title=self.refused_title,
            attributes="",
            body=login.strip(),
            css=_shared("page.css"),
            js=script,
        )
        return page, headers(nonce)

    def response(
        self,
        request: Request,
        *,
        token: str | None,
        authorised: bool,
        render: Callable[[], Rendered],
    ) -> HTMLResponse:
        """The page `render` makes, for a request that is `authorised` (bearer) or brings the
        admin `token` as `?token=`; the 401 page for any other."""
        given = query_token(request, token)
        if not authorised and not given:
            body, refusal_headers = self.render_refusal(wrong_token=given is not None)
            return HTMLResponse(body, status_code=401, headers=refusal_headers)
        body, page_headers = render()
        return HTMLResponse(body, headers=page_headers)

    @staticmethod
    def _frame(nonce: str, **parts: str) -> str:
        return fill(_shared("page.html"), nonce=nonce, **parts)
