"""What the browser tests of the admin pages share (the store's dashboard, test_dashboard.py;
central's fleet page, test_central_fleet.py): Debian's Chromium driven by playwright (never
playwright's own browser), and what a web page of another site tries against an admin API on
this machine, from a name rebound to it (DNS rebinding) and from its own server (CSRF)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

try:
    from playwright.async_api import (
        Browser,
        BrowserContext,
        Dialog,
        Page,
        Route,
        async_playwright,
        expect,
    )
except ImportError:  # pragma: no cover - CI installs it with the dev extras
    # The tests that need it are skipped (`needs_browser`); the types name annotations only.
    async_playwright = expect = None  # type: ignore[assignment]
    Browser = BrowserContext = Dialog = Page = Route = Any  # type: ignore[misc,assignment]

__all__ = [  # the tests take playwright's names from here too
    "CHROMIUM",
    "EVIL",
    "REBINDING_ARGS",
    "Browser",
    "BrowserContext",
    "Dialog",
    "Page",
    "Route",
    "attack",
    "attack_from_a_rebound_name",
    "attack_from_another_site",
    "attack_page",
    "browser",
    "chromium",
    "expect",
    "needs_browser",
    "open_page",
    "outcomes",
    "page_server",
    "rebinding_browser",
]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
EVIL = "evil.example"
# evil.example resolves to this machine, as a rebound DNS name does; Chromium's own
# local-network checks are off: an admin API must refuse by itself, whatever the browser.
REBINDING_ARGS = [
    f"--host-resolver-rules=MAP {EVIL} 127.0.0.1",
    "--disable-features=LocalNetworkAccessChecks,PrivateNetworkAccessSendPreflights,"
    "PrivateNetworkAccessRespectPreflightResults,BlockInsecurePrivateNetworkRequests",
]

needs_browser = pytest.mark.skipif(
    async_playwright is None or not CHROMIUM.exists(),
    reason="needs Debian's chromium at /usr/bin/chromium (make system-deps) and the playwright "
    "package (pip install -e '.[dev]')",
)


@contextlib.asynccontextmanager
async def chromium(*extra: str) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=[*CHROMIUM_ARGS, *extra]
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


@pytest.fixture
async def rebinding_browser() -> AsyncIterator[Browser]:
    """Chromium in which evil.example resolves to this machine (`REBINDING_ARGS`)."""
    async with chromium(*REBINDING_ARGS) as launched:
        yield launched


async def open_page(
    browser: Browser, url: str, *, accept_dialogs: bool = False, **context: Any
) -> Page:
    """`url` in a new browser context (`context`: its options); `accept_dialogs`: every
    confirmation the page asks is answered yes."""
    page = await (await browser.new_context(**context)).new_page()
    if accept_dialogs:
        page.on("dialog", lambda dialog: dialog.accept())
    await page.goto(url)
    return page


# ---- web pages of other sites (DNS rebinding, CSRF) -----------------------------------------

_ATTACK = """<!doctype html><title>cute cats</title><script>
window.attack = (async (target) => {
  const out = {};
  async function attempt(name, url, init) {
    try {
      const response = await fetch(target + url, init);
      out[name] = response.type === "opaque" ? "opaque" : response.status;
      if (response.type !== "opaque") out[name + "_body"] = await response.text();
    } catch (error) {
      out[name] = "blocked";
    }
  }
  const body = JSON.stringify({by: "evil"});
  ATTEMPTS
  return out;
})(TARGET);
</script>"""
_JSON = '{method: "POST", headers: {"Content-Type": "application/json"}, body: BODY}'
_NO_CORS = '{method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"}, body}'


def attack_page(
    target: str, *, read: tuple[str, str], pause: str, posts: dict[str, str] | None = None
) -> str:
    """An attacker's page that tries, against `target` ("" is its own origin): to read `read`
    (a name and a path), to pause the lottery at `pause` in every way a page can send a POST
    (`pause_json`, `pause_no_cors`), and each of `posts` (name: path) as a JSON POST of {}.
    `window.attack` holds each outcome by name (a status, "opaque" or "blocked": none is
    thrown) and the body of each answer the page could read (as `<name>_body`)."""
    attempts = [
        (read[0], read[1], "{}"),
        ("pause_json", pause, _JSON.replace("BODY", "body")),
        ("pause_no_cors", pause, _NO_CORS),
        *((name, path, _JSON.replace("BODY", '"{}"')) for name, path in (posts or {}).items()),
    ]
    lines = "\n  ".join(
        f"await attempt({json.dumps(name)}, {json.dumps(path)}, {init});"
        for name, path, init in attempts
    )
    return _ATTACK.replace("ATTEMPTS", lines).replace("TARGET", json.dumps(target))


def outcomes(result: dict[str, Any]) -> dict[str, Any]:
    """What each attempt of an attacker's page came to, without the bodies it read."""
    return {name: value for name, value in result.items() if not name.endswith("_body")}


async def attack(page: Page, url: str) -> dict[str, Any]:
    """Open the attacker's page at `url` and wait for everything it tried."""
    await page.goto(url)
    result: dict[str, Any] = await page.evaluate("window.attack")
    return result


async def attack_from_a_rebound_name(
    browser: Browser, port: int, html: str
) -> tuple[dict[str, Any], BrowserContext]:
    """`html` served for evil.example:`port` (the name still pointed at the attacker then);
    everything it asks for afterwards reaches this machine, with the rebound name as its Host.
    What it got, and the browser context it ran in (for the real page in the same browser)."""
    context = await browser.new_context()
    await context.route(
        f"http://{EVIL}:{port}/cats",
        lambda route: route.fulfill(content_type="text/html", body=html),
    )
    result = await attack(await context.new_page(), f"http://{EVIL}:{port}/cats")
    return result, context


async def attack_from_another_site(browser: Browser, html: str) -> dict[str, Any]:
    """`html` from the attacker's own web server (`page_server`) at evil.example: what it got."""
    async with page_server(html) as evil_port:
        page = await (await browser.new_context()).new_page()
        return await attack(page, f"http://{EVIL}:{evil_port}/")


@contextlib.asynccontextmanager
async def page_server(html: str) -> AsyncIterator[int]:
    """An attacker's web server on this machine: `html` for any request."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            body = html.encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()
