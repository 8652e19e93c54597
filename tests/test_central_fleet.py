"""The fleet view on central (`/_admin/fleet`, `/_admin/fleet/page`) and its chain-wide stop
switch (`/_admin/programs/{program}/pause|resume`).

The JSON tests run on both backends (SQLite, and a real PostgreSQL from `tests/postgres.py`),
with central's clock in the test's hand. The page is driven in Debian's Chromium by playwright,
against a reference central and a real gateway that heartbeats to it, as the store dashboard is
in `test_dashboard.py`. Screenshots of each run go to the test's tmp_path.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import browser as chromium
import httpx
import pytest
import test_reference_server
from browser import Browser, Page, expect, needs_browser, open_page
from postgres import postgres_server, postgres_url  # noqa: F401 (fixtures)
from sync_harness import start_gateway, workstation
from test_reference_server import GATEWAY, NOW, TOKEN, tls
from waiting import until

from gateway import __version__
from gateway.daemon import Daemon
from gateway.domain.rules_doc import RulesDocument
from sync.central import ReferenceConfig, ReferenceServer
from sync.central.config import system_now, utc_stamp
from sync.central.ledger.fleet import switched_version

pytestmark = pytest.mark.filterwarnings("ignore:Use of allowEmptyValue:DeprecationWarning")

# Each backend in turn, and the browsers (tests/browser.py): bound, not imported by name (a
# parameter of the same name would then redefine an unused import).
storage = test_reference_server.storage
browser = chromium.browser
rebinding_browser = chromium.rebinding_browser

PAUSE = "/_admin/programs/lottery/pause"
RESUME = "/_admin/programs/lottery/resume"


def changes_path(store: str = "S001") -> str:
    return f"/v1/stores/{store}/changes"


class Clock:
    """Central's clock, moved by the test."""

    def __init__(self, start: dt.datetime) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@contextlib.asynccontextmanager
async def running(config: ReferenceConfig) -> AsyncIterator[Central]:
    async with ReferenceServer(config) as server:
        headers = {"Authorization": f"Bearer {TOKEN}", "X-Gateway-Id": GATEWAY}
        async with (
            httpx.AsyncClient(
                base_url=server.url, headers=headers, verify=tls(), timeout=40
            ) as api,
            httpx.AsyncClient(base_url=server.admin_url, timeout=10) as admin,
        ):
            yield Central(server, api, admin)


class Central:
    """A running reference central, a store's client of its API, and its admin API."""

    def __init__(
        self, server: ReferenceServer, api: httpx.AsyncClient, admin: httpx.AsyncClient
    ) -> None:
        self.server, self.api, self.admin = server, api, admin

    async def beat(self, store: str, gateway: str, cursor: str | None, **fields: Any) -> None:
        """A heartbeat as `sync/heartbeat.py` sends it."""
        body = {
            "gateway_id": gateway,
            "version": "0.1.0",
            "sent_at": "2026-11-23T12:00:00.000000Z",
            "queue_depth": 0,
            "oldest_event_age_s": None,
            "cursor": cursor,
            "adapters": {"sim_tcp": {"state": "listening", "connections": 1}},
            "dead_letters": 0,
            **fields,
        }
        response = await self.api.post(
            f"/v1/stores/{store}/heartbeat", json=body, headers={"X-Gateway-Id": gateway}
        )
        assert response.status_code == 204, response.text

    async def cursor_at_the_end(self, store: str = "S001") -> str:
        cursor = ""
        while True:
            page = (
                await self.api.get(changes_path(store), params={"cursor": cursor, "limit": 1000})
            ).json()
            cursor = page["next_cursor"]
            if not page["has_more"]:
                return str(cursor)

    async def fleet(self) -> dict[str, Any]:
        response = await self.admin.get("/_admin/fleet")
        assert response.status_code == 200, response.text
        view: dict[str, Any] = response.json()
        return view

    async def store(self, store_id: str) -> dict[str, Any]:
        rows = [row for row in (await self.fleet())["stores"] if row["store_id"] == store_id]
        assert len(rows) == 1, rows
        return rows[0]

    async def switch(self, path: str, **body: Any) -> dict[str, Any]:
        response = await self.admin.post(path, json=body)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result


@pytest.fixture
async def central(storage: dict[str, Any], clock: Clock) -> AsyncIterator[Central]:
    async with running(ReferenceConfig(token=TOKEN, clock=clock, **storage)) as made:
        yield made


# ---- the JSON view, on both backends -----------------------------------------------------------


async def test_every_store_is_listed_offline_first_then_by_cursor_lag(
    central: Central, clock: Clock
) -> None:
    end = await central.cursor_at_the_end("S001")
    await central.beat("S002", "gw-2", end, version="0.9.0")  # then nothing more from S002
    clock.advance(600)
    await central.beat(
        "S001",
        "gw-1",
        end,
        version="1.2.3",
        queue_depth=7,
        oldest_event_age_s=42.5,
        dead_letters=1,
        adapters={"sim_tcp": {"state": "listening", "connections": 3}},
    )
    await central.admin.post("/_admin/members", json=[{"member_id": "M9"}])  # one change
    await central.beat("S004", "gw-4", end)  # its cursor from before that change
    # A store central knows only from its requests: it pulled, it sent no heartbeat.
    await central.api.get(changes_path("S003"), params={"cursor": "", "limit": 1})
    clock.advance(5)

    view = await central.fleet()
    order = [(row["store_id"], row["state"]) for row in view["stores"]]
    # Offline first; then the furthest behind: S003's lag is not known (no heartbeat), S004 is
    # one change behind, S001 is up to date.
    assert order == [
        ("S002", "OFFLINE"),
        ("S003", "ONLINE"),
        ("S004", "ONLINE"),
        ("S001", "ONLINE"),
    ]
    assert view["summary"] == {"stores": 4, "offline": 1, "behind": 1}
    assert view["now"] == utc_stamp(clock.now)
    assert view["offline_after_s"] == 180.0

    s001 = await central.store("S001")
    assert s001["gateway_id"] == "gw-1" and s001["gateways"] == ["gw-1"]
    assert s001["version"] == "1.2.3"
    assert (s001["queue_depth"], s001["oldest_event_age_s"], s001["dead_letters"]) == (7, 42.5, 1)
    assert s001["adapters"] == {"sim_tcp": {"state": "listening", "connections": 3}}
    assert s001["last_heartbeat_at"].startswith("2026-11-23T12:10:00.")
    assert s001["heartbeat_age_s"] == pytest.approx(5, abs=0.01)  # on central's clock
    assert s001["sent_at"] == "2026-11-23T12:00:00.000000Z"  # the store's own clock, as sent
    assert (s001["cursor_mode"], s001["cursor_lag"], s001["behind_since"]) == ("delta", 0, None)
    assert s001["first_seen_at"].startswith("2026-11-23T12:00:00.")  # its first request

    s002 = await central.store("S002")
    assert s002["version"] == "0.9.0"
    assert s002["heartbeat_age_s"] == pytest.approx(605, abs=0.01)

    s004 = await central.store("S004")
    assert (s004["cursor_mode"], s004["cursor_lag"]) == ("delta", 1)
    assert s004["behind_since"] == s004["last_heartbeat_at"]
    assert s004["behind_s"] == pytest.approx(5, abs=0.01)

    s003 = await central.store("S003")
    assert s003["last_heartbeat_at"] is None and s003["cursor_lag"] is None
    assert s003["gateway_id"] == GATEWAY
    assert s003["last_seen_at"].startswith("2026-11-23T12:10:00.")
    assert s003["last_seen_age_s"] == pytest.approx(5, abs=0.01)


async def test_cursor_lag_counts_the_changes_after_the_cursor_a_heartbeat_carried(
    central: Central, clock: Clock
) -> None:
    end = await central.cursor_at_the_end()
    await central.beat("S001", "gw-1", end)
    assert (await central.store("S001"))["cursor_lag"] == 0

    admin = central.admin
    await admin.post("/_admin/members", json=[{"member_id": "M7"}, {"member_id": "M8"}])
    await admin.post("/_admin/members", json=[{"member_id": "M7", "display_name": "again"}])
    await admin.put("/_admin/rules", json={"version": "r2"})
    clock.advance(10)
    await central.beat("S001", "gw-1", end)
    first_behind = await central.store("S001")
    # M7 twice is one change (latest wins: the store would get it once), M8, the rules.
    assert first_behind["cursor_lag"] == 3
    assert first_behind["behind_since"] == first_behind["last_heartbeat_at"]

    clock.advance(60)
    await central.beat("S001", "gw-1", end)
    still = await central.store("S001")
    assert still["cursor_lag"] == 3
    assert still["behind_since"] == first_behind["behind_since"]  # behind since then
    assert still["behind_s"] == pytest.approx(60, abs=0.01)

    await central.beat("S001", "gw-1", await central.cursor_at_the_end())
    caught_up = await central.store("S001")
    assert (caught_up["cursor_lag"], caught_up["behind_since"]) == (0, None)

    # Cursors whose lag cannot be counted say why.
    first_page = (await central.api.get(changes_path(), params={"cursor": "", "limit": 1})).json()
    for cursor, mode in (
        (None, "none"),
        (first_page["next_cursor"], "snapshot"),
        ("x.y", "unknown"),
    ):
        await central.beat("S001", "gw-1", cursor)
        row = await central.store("S001")
        assert (row["cursor_mode"], row["cursor_lag"]) == (mode, None), cursor
        assert row["behind_since"] is not None


async def test_offline_after_is_configurable(storage: dict[str, Any], clock: Clock) -> None:
    config = ReferenceConfig(token=TOKEN, clock=clock, fleet_offline_after_s=30, **storage)
    async with running(config) as central:
        await central.beat("S001", "gw-1", None)
        clock.advance(29.9)
        assert (await central.store("S001"))["state"] == "ONLINE"
        clock.advance(0.2)
        assert (await central.store("S001"))["state"] == "OFFLINE"
        assert (await central.fleet())["offline_after_s"] == 30
        await central.beat("S001", "gw-1", None)  # back
        assert (await central.store("S001"))["state"] == "ONLINE"


async def test_a_pause_reaches_a_waiting_long_poll_within_a_second(central: Central) -> None:
    winter = {"version": "2026-12", "points_per_unit": "2", "ticket_price": 40}
    assert (await central.admin.put("/_admin/rules", json=winter)).status_code == 200
    cursor = await central.cursor_at_the_end()
    feed = central.server.central.feed
    poll = asyncio.create_task(
        central.api.get(changes_path(), params={"cursor": cursor, "wait_s": 20})
    )
    await until(lambda: feed.waiting == 1, what="the store's long poll held")

    loop = asyncio.get_running_loop()
    switched_at = loop.time()
    paused = await central.switch(PAUSE, by="ops (night shift)")
    page = (await poll).json()
    waited = loop.time() - switched_at

    assert waited < 1.0, waited
    assert [change["kind"] for change in page["changes"]] == ["rules"]
    document = page["changes"][0]["data"]
    assert document["programs"] == {
        "lottery": {"paused": True, "by": "ops (night shift)", "at": paused["at"]}
    }
    assert document["version"] == paused["version"]
    assert document["version"].startswith("2026-12+lottery-paused-")
    assert (document["points_per_unit"], document["ticket_price"]) == ("2", 40)  # the rest kept
    assert RulesDocument.model_validate(document).paused("lottery")  # what a gateway reads
    assert paused["changed"] is True

    view = await central.fleet()
    assert view["programs"]["lottery"] == {
        "paused": True,
        "by": "ops (night shift)",
        "at": paused["at"],
    }
    assert view["rules"] == {"version": paused["version"], "effective_from": None}

    # Pausing what is paused publishes nothing.
    seq = view["change_seq"]
    again = await central.switch(PAUSE, by="someone else")
    assert (again["changed"], again["version"], again["by"]) == (
        False,
        paused["version"],
        "ops (night shift)",
    )
    assert (await central.fleet())["change_seq"] == seq

    resumed = await central.switch(RESUME)
    rules = (await central.api.get(changes_path(), params={"cursor": page["next_cursor"]})).json()
    document = rules["changes"][0]["data"]
    assert document["programs"]["lottery"] == {
        "paused": False,
        "by": "admin-api",
        "at": resumed["at"],
    }
    # The switch's suffix is replaced, not piled up.
    assert document["version"].startswith("2026-12+lottery-resumed-")
    assert document["version"].count("+") == 1
    assert not RulesDocument.model_validate(document).paused("lottery")


# ---- the switch's refusals and guards (SQLite) -------------------------------------------------


@pytest.fixture
async def sqlite_central(clock: Clock) -> AsyncIterator[Central]:
    async with running(ReferenceConfig(token=TOKEN, clock=clock)) as made:
        yield made


async def test_without_a_rules_document_a_pause_publishes_one(sqlite_central: Central) -> None:
    central = sqlite_central
    assert (await central.fleet())["rules"] is None
    nothing = await central.switch(RESUME)  # running already: nothing to publish
    assert (nothing["changed"], nothing["version"]) == (False, None)
    paused = await central.switch(PAUSE, by="ops")
    assert paused["version"].startswith("default+lottery-paused-")
    view = await central.fleet()
    assert view["programs"]["lottery"]["paused"] is True
    assert view["rules"]["version"] == paused["version"]


async def test_a_switch_in_rules_that_take_effect_later_is_refused(
    sqlite_central: Central,
) -> None:
    central = sqlite_central
    later = {"version": "2027-01", "effective_from": "2027-01-01T00:00:00Z"}
    await central.admin.put("/_admin/rules", json=later)
    seq = (await central.fleet())["change_seq"]
    refused = await central.admin.post(PAUSE, json={"by": "ops"})
    assert (refused.status_code, refused.json()["error"]) == (409, "RULES_NOT_IN_FORCE")
    assert "2027-01-01T00:00:00Z" in refused.json()["message"]
    assert (await central.fleet())["change_seq"] == seq  # nothing published


async def test_what_the_switch_route_refuses(sqlite_central: Central) -> None:
    admin = sqlite_central.admin

    async def refused(path: str, **request: Any) -> tuple[int, str]:
        response = await admin.post(path, **request)
        return response.status_code, response.json()["error"]

    assert await refused("/_admin/programs/bingo/pause", json={}) == (404, "UNKNOWN_PROGRAM")
    assert await refused("/_admin/programs/lottery/stop", json={}) == (404, "NOT_FOUND")
    # JSON only: what a cross-site form can send without the browser asking first is refused.
    form = {"content": b"by=evil", "headers": {"Content-Type": "text/plain"}}
    assert await refused(PAUSE, **form) == (415, "JSON_REQUIRED")
    # A browser's request from another site.
    evil = {"Origin": "http://evil.example"}
    assert await refused(PAUSE, json={}, headers=evil) == (403, "FOREIGN_ORIGIN")
    cross = {"Sec-Fetch-Site": "cross-site"}
    assert await refused(PAUSE, json={}, headers=cross) == (403, "FOREIGN_ORIGIN")
    assert await refused(PAUSE, json={}, headers={"Origin": "null"}) == (403, "FOREIGN_ORIGIN")
    # A page whose name was rebound to this machine sends its own name as the Host.
    rebound = {"Host": "evil.example"}
    assert await refused(PAUSE, json={}, headers=rebound) == (421, "UNKNOWN_HOST")
    for path in ("/_admin/fleet", "/_admin/stats", "/_admin/fleet/page"):
        response = await admin.get(path, headers=rebound)
        assert response.status_code == 421, path
    assert (await sqlite_central.fleet())["programs"]["lottery"]["paused"] is False

    # The page's own request: same origin (the Host it was served from).
    own = {"Origin": str(admin.base_url).rstrip("/"), "Sec-Fetch-Site": "same-origin"}
    response = await admin.post(PAUSE, json={"by": "page"}, headers=own)
    assert response.status_code == 200, response.text
    assert (await sqlite_central.fleet())["programs"]["lottery"]["paused"] is True
    by_name = await admin.get("/_admin/fleet", headers={"Host": "localhost"})
    assert by_name.status_code == 200


async def test_with_an_admin_token_every_admin_route_needs_it(clock: Clock) -> None:
    config = ReferenceConfig(token=TOKEN, clock=clock, admin_token="adm1n")
    async with running(config) as central:
        admin = central.admin
        for path in ("/_admin/fleet", "/_admin/stats"):
            assert (await admin.get(path)).status_code == 401, path
        assert (await admin.post(PAUSE, json={})).status_code == 401
        bearer = {"Authorization": "Bearer adm1n"}
        assert (await admin.get("/_admin/fleet", headers=bearer)).status_code == 200
        # The page: a login form without the token, the page with it (once, in the query).
        page = await admin.get("/_admin/fleet/page")
        assert page.status_code == 401 and "admin token is needed" in page.text
        assert 'id="stores"' not in page.text and "config" not in page.text
        wrong = await admin.get("/_admin/fleet/page", params={"token": "guess"})
        assert wrong.status_code == 401 and "That token was refused." in wrong.text
        assert (await admin.get("/_admin/fleet/page", params={"token": "adm1n"})).status_code == 200
        # The token in the query opens the page only, never the API.
        assert (await admin.get("/_admin/fleet", params={"token": "adm1n"})).status_code == 401
        assert (await admin.post(PAUSE, json={}, headers=bearer)).status_code == 200


def test_a_switched_version_fits_and_replaces_the_last_switch() -> None:
    stamp = "2026-11-23T12:00:00.000001Z"
    first = switched_version("2026-12-winter", "lottery", True, stamp)
    assert first == "2026-12-winter+lottery-paused-20261123T120000.000001Z"
    second = switched_version(first, "lottery", False, "2026-11-23T12:05:00.000000Z")
    assert second == "2026-12-winter+lottery-resumed-20261123T120500.000000Z"
    long = switched_version("x" * 64, "lottery", True, stamp)
    assert len(long) == 64 and long.endswith("+lottery-paused-20261123T120000.000001Z")
    RulesDocument(version=long)


# ---- the page, in a real browser ---------------------------------------------------------------

VIEWPORT = {"width": 1280, "height": 800}


class ShiftedClock:
    """Central's clock: the real one, moved forward by the test (stamps never go back)."""

    def __init__(self) -> None:
        self.shift = dt.timedelta()

    def __call__(self) -> dt.datetime:
        return system_now() + self.shift


async def open_fleet_page(browser: Browser, url: str) -> Page:
    return await open_page(browser, url, accept_dialogs=True, viewport=VIEWPORT)


async def lottery_paused_at(daemon: Daemon) -> bool:
    status = await daemon.status()
    return bool(status["programs"]["lottery"]["paused_by_central"])


async def ident_earn_mode(daemon: Daemon) -> str:
    async with workstation(daemon, 3) as station:
        reply = await station.request("IDENT", "3", "1", "0", "6001000000000002")  # M2: lottery
    assert reply[0] == "IDENT_OK", reply
    return reply[5]


@needs_browser
async def test_the_page_shows_the_fleet_offline_first_and_pauses_the_whole_chain(
    tmp_path: Path, browser: Browser
) -> None:
    clock = ShiftedClock()
    config = ReferenceConfig(clock=clock, fleet_page_refresh_s=0.5)
    async with running(config) as central:
        await central.beat("S900", "gw-900", None, version="0.0.9", queue_depth=12)
        clock.shift = dt.timedelta(minutes=10)  # S900 has been quiet for ten minutes since
        daemon = await start_gateway(tmp_path, central.server.url, store_id="S001")
        try:

            async def s001_synced() -> bool:
                rows = [r for r in (await central.fleet())["stores"] if r["store_id"] == "S001"]
                return bool(rows) and rows[0]["cursor_lag"] == 0 and rows[0]["state"] == "ONLINE"

            await until(s001_synced, what="the gateway's heartbeat with its cursor at the end")
            assert await ident_earn_mode(daemon) == "LOTTERY"

            page = await open_fleet_page(browser, central.server.admin_url + "/_admin/fleet/page")
            rows = page.locator("#stores tr")
            await expect(rows).to_have_count(2)
            await expect(rows.nth(0)).to_have_attribute("data-store", "S900")
            await expect(rows.nth(0)).to_have_attribute("data-state", "OFFLINE")
            await expect(rows.nth(0).locator('[data-col="heartbeat"]')).to_contain_text("10 min")
            await expect(rows.nth(0).locator('[data-col="outbox"]')).to_have_text("12")
            s001 = page.locator('tr[data-store="S001"]')
            await expect(s001).to_have_attribute("data-state", "ONLINE")
            await expect(s001.locator('[data-col="version"]')).to_have_text(__version__)
            await expect(s001.locator('[data-col="lag"]')).to_have_text("0")
            await expect(s001.locator('[data-col="gateway"]')).to_have_text("gw")
            await expect(s001.locator('[data-col="registers"]')).to_contain_text("sim_tcp")
            await expect(page.locator("#offline-count")).to_have_text("1")
            await expect(page.locator("#store-count")).to_have_text("2")
            await page.screenshot(path=tmp_path / "fleet.png", full_page=True)

            before = await central.cursor_at_the_end("S999")
            lottery = page.locator('[data-program="lottery"]')
            switch = lottery.locator(".program-switch")
            await expect(lottery.locator(".program-state")).to_have_text("running")
            await expect(switch).to_have_text("Pause lottery in every store")
            await page.locator("#operator").fill("olga (loyalty team)")
            await switch.click()
            # At once: the page asks again after the switch, not at its next poll.
            await expect(lottery.locator(".program-state")).to_have_text("paused", timeout=2000)
            await expect(lottery.locator(".program-note")).to_contain_text(
                "paused by olga (loyalty team)"
            )
            await expect(switch).to_have_text("Resume lottery in every store")
            await page.screenshot(path=tmp_path / "fleet-paused.png", full_page=True)

            # The rules document changed: a new version, the lottery paused in it.
            published = (
                await central.api.get(changes_path("S999"), params={"cursor": before})
            ).json()["changes"]
            assert [c["kind"] for c in published] == ["rules"]
            rules = published[0]["data"]
            assert rules["programs"]["lottery"]["paused"] is True
            assert rules["programs"]["lottery"]["by"] == "olga (loyalty team)"
            await expect(page.locator("#rules-version")).to_have_text(rules["version"])
            # The store has it within about a second, and its registers stop offering the
            # lottery: a lottery member earns points.
            await until(lambda: lottery_paused_at(daemon), 2.0, "the store paused by central")
            assert await ident_earn_mode(daemon) == "POINTS"

            await switch.click()
            await expect(lottery.locator(".program-state")).to_have_text("running", timeout=2000)

            async def resumed() -> bool:
                return not await lottery_paused_at(daemon)

            await until(resumed, 2.0, "the store resumed by central")
            assert await ident_earn_mode(daemon) == "LOTTERY"
        finally:
            await daemon.stop()


@needs_browser
async def test_with_an_admin_token_the_page_asks_for_it_and_then_works(
    tmp_path: Path, browser: Browser, clock: Clock
) -> None:
    config = ReferenceConfig(token=TOKEN, clock=clock, admin_token="adm1n")
    async with running(config) as central:
        await central.beat("S001", "gw-1", None)
        url = central.server.admin_url + "/_admin/fleet/page"
        page = await open_fleet_page(browser, url)
        await expect(page.locator("#refused")).to_have_text("Central's admin token is needed.")
        await expect(page.locator("#stores")).to_have_count(0)
        await page.locator("input[name=token]").fill("adm1n")
        await page.locator("button[type=submit]").click()
        # The page's own requests carry the token as a bearer header: the stores arrive.
        await expect(page.locator('tr[data-store="S001"]')).to_have_count(1)
        assert page.url == url  # the token left the address bar
        await page.locator('[data-program="lottery"] .program-switch').click()
        await expect(page.locator('[data-program="lottery"] .program-state')).to_have_text(
            "paused", timeout=2000
        )
        bearer = {"Authorization": "Bearer adm1n"}
        view = (await central.admin.get("/_admin/fleet", headers=bearer)).json()
        assert view["programs"]["lottery"]["paused"] is True


# ---- web pages of other sites (DNS rebinding, CSRF) -------------------------------------------

# What an attacker's page tries: read the fleet, and pause the lottery in every way a page can
# send a POST.
ATTACK = {"read": ("fleet", "/_admin/fleet"), "pause": PAUSE}


@needs_browser
async def test_a_page_of_another_site_can_neither_read_the_fleet_nor_pause(
    sqlite_central: Central, rebinding_browser: Browser
) -> None:
    central = sqlite_central
    await central.beat("S001", "gw-1", None)
    port = int(central.server.admin_url.rsplit(":", 1)[1])
    # A page on a name rebound to this machine: its requests reach central with its name.
    rebound, _ = await chromium.attack_from_a_rebound_name(
        rebinding_browser, port, chromium.attack_page("", **ATTACK)
    )
    refused = {"fleet": 421, "pause_json": 421, "pause_no_cors": 421}
    assert chromium.outcomes(rebound) == refused, rebound

    # A page of another site calling central by its address.
    foreign = await chromium.attack_from_another_site(
        rebinding_browser, chromium.attack_page(central.server.admin_url, **ATTACK)
    )
    # The browser keeps the answers from the page; the POST it lets through (no-cors) is
    # refused by central (another origin, and not JSON).
    assert chromium.outcomes(foreign) == {
        "fleet": "blocked",
        "pause_json": "blocked",
        "pause_no_cors": "opaque",
    }
    view = await central.fleet()
    assert view["programs"]["lottery"]["paused"] is False
    assert view["rules"] is None  # nothing was published
