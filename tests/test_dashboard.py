"""The store dashboard at `/` of the admin API, in a real browser (Debian's Chromium driven by
playwright) against a running gateway with a register on the SIM socket; and the history that
feeds it. Screenshots of each run go to the test's tmp_path."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import browser as chromium
import httpx
import pytest
from browser import EVIL, Browser, Dialog, Page, Route, expect, needs_browser, open_page
from conftest import member_record
from gateway_process import GatewayProcess
from sync_harness import post, start_gateway, workstation
from waiting import cancelled

from gateway.admin.history import History, run_sampler
from gateway.admin.server import AdminServer
from gateway.daemon import Daemon
from gateway.store.store import EventResult
from gateway.web.page import unreachable_after_s
from pos_adapters.sim.register import Workstation

TOKEN = "s3cret-admin-token"

# The browsers (fixtures): bound, not imported by name (a test's parameter of the same name would
# then redefine an unused import).
browser = chromium.browser
rebinding_browser = chromium.rebinding_browser


# ---- the history, by itself ----------------------------------------------------------------


def status_doc(depth: int, requests: dict[str, int], state: str = "OFFLINE", uptime: float = 0):
    return {
        "uptime_s": uptime,
        "central": {"state": state},
        "outbox": {"depth": depth},
        "adapters": {"sim_tcp": {"connections": 1}},
        "requests": requests,
    }


def test_history_keeps_one_hour_and_counts_requests_within_it() -> None:
    now = [10_000.0]
    history = History(clock=lambda: now[0])
    history.add(status_doc(0, {"POST:ok": 5}, uptime=4000), at=now[0])
    for minute in range(1, 91):
        now[0] = 10_000.0 + minute * 60
        history.add(status_doc(minute, {"POST:ok": 5 + minute}, uptime=4000 + minute * 60))
    doc = history.to_json()
    assert [p["depth"] for p in doc["outbox"]] == list(range(30, 91))  # the last hour only
    # 60 POSTs happened in the last hour; the ones before it are not counted
    assert doc["requests_in_window"] == {"POST:ok": 60}
    assert doc["requests_at_window_start"] == {"POST:ok": 35}


def test_history_counts_every_request_while_the_gateway_is_younger_than_the_window() -> None:
    history = History(clock=lambda: 1_000.0)
    history.add(status_doc(2, {"POST:ok": 3, "IDENT:UNKNOWN_MEMBER": 1}, uptime=30), at=1_000.0)
    assert history.to_json()["requests_in_window"] == {"POST:ok": 3, "IDENT:UNKNOWN_MEMBER": 1}


def test_history_says_since_when_central_is_in_its_state() -> None:
    now = [500.0]
    history = History(clock=lambda: now[0])
    history.add(status_doc(0, {}, "OFFLINE", uptime=100))
    assert history.to_json()["central"] == {"state": "OFFLINE", "since": 400.0}  # since start
    now[0] = 510.0
    history.add(status_doc(0, {}, "OFFLINE", uptime=110))
    now[0] = 520.0
    history.add(status_doc(0, {}, "ONLINE", uptime=120))
    assert history.to_json()["central"] == {"state": "ONLINE", "since": 520.0}


async def test_the_sampler_survives_a_failing_status() -> None:
    history = History()
    calls = 0
    third_sample_taken = asyncio.Event()

    async def flaky() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("database busy")
        if calls == 4:  # the sampler is back for its fourth round: three rounds are recorded
            third_sample_taken.set()
        return status_doc(calls, {})

    sampler = asyncio.create_task(run_sampler(flaky, history, interval_s=0.01))
    try:
        await asyncio.wait_for(third_sample_taken.wait(), 5)
    finally:
        await cancelled(sampler)
    assert [s.outbox_depth for s in history.samples[:2]] == [2, 3]


# ---- a running gateway with the dashboard ----------------------------------------------------


@dataclass
class Dashboard:
    daemon: Daemon
    server: AdminServer
    history: History

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    async def add_member(self, member_id: str) -> None:
        assert self.daemon.store is not None
        await self.daemon.store.upsert_members([member_record(member_id)])


@contextlib.asynccontextmanager
async def dashboard(tmp_path: Path, token: str | None = None) -> AsyncIterator[Dashboard]:
    """A standalone gateway and the daemon's own admin app, with history sampled from the real
    status faster than the daemon samples it, and a faster page refresh."""
    daemon = await start_gateway(tmp_path, None)
    assert daemon.store is not None
    history = History()
    sampler = asyncio.create_task(run_sampler(daemon.status, history, interval_s=0.2))
    app = daemon.admin_app(history, token=token, dashboard_refresh_s=0.5)
    server = AdminServer(app, host="127.0.0.1", port=0)
    await server.start()
    try:
        yield Dashboard(daemon, server, history)
    finally:
        await server.stop()
        await cancelled(sampler)
        await daemon.stop()


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Dashboard]:
    async with dashboard(tmp_path) as made:
        yield made


@pytest.fixture
async def station(gw: Dashboard) -> AsyncIterator[Workstation]:
    """Register 4 on the gateway's SIM socket, and member M1 in the gateway's cache."""
    await gw.add_member("M1")
    async with workstation(gw.daemon, 4) as register:
        yield register


async def dead_letter_one_event(daemon: Daemon) -> None:
    """What central's `rejected` answer does to an event, without a central."""
    assert daemon.store is not None
    batch = await daemon.store.next_batch(1, 1 << 20)
    assert batch is not None
    await daemon.store.finish_batch(
        batch, [EventResult(batch.events[0].event_id, "rejected", "BAD_PAYLOAD")]
    )


@needs_browser
async def test_the_page_shows_the_same_queue_and_counts_as_status(
    tmp_path: Path, browser: Browser, gw: Dashboard, station: Workstation
) -> None:
    for check in (1, 2, 3):
        assert (await post(station, 4, check, member="M1"))[0] == "POST_OK"
    assert (await station.request("IDENT", "4", "1", "0", "NO-SUCH-CARD"))[0] == "IDENT_FAIL"
    await dead_letter_one_event(gw.daemon)
    async with httpx.AsyncClient(base_url=gw.url) as api:
        status = (await api.get("/status")).json()

    page = await open_page(browser, gw.url, viewport={"width": 1024, "height": 768})
    await expect(page.locator("#outbox-depth")).to_have_text(str(status["outbox"]["depth"]))
    await expect(page.locator("#dead-letters")).to_have_text("1")
    await expect(page.locator("#checks-posted")).to_have_text(str(status["checks"]["posted"]))
    await expect(page.locator("#members")).to_have_text("1")
    await expect(page.locator("#central-state")).to_have_text("STANDALONE")
    await expect(page.locator("#version")).to_have_text(status["version"])
    await expect(page.locator('[data-adapter="sim_tcp"] td').nth(2)).to_have_text("1")
    # The register itself, with its last request and when it was heard from.
    heard = status["adapters"]["sim_tcp"]["registers"][0]
    assert heard["last_command"] == "IDENT"
    last = page.locator(f'tr.register[data-register="{heard["source_id"]}"] td')
    await expect(last.nth(1)).to_contain_text("(IDENT)")
    await expect(last.nth(2)).to_contain_text("ago")
    for key in ("POST:ok", "IDENT:UNKNOWN_MEMBER"):
        await expect(page.locator(f'[data-key="{key}"] td').nth(2)).to_have_text(
            str(status["requests"][key])
        )
    await expect(page.locator("#outbox-chart polyline")).to_have_count(1)
    await page.screenshot(path=tmp_path / "dashboard-1024x768.png", full_page=True)

    # Retry puts the dead letter back in the queue (the same event, nothing lost).
    page.once("dialog", lambda dialog: dialog.accept())
    await page.locator("#retry-dead-letters").click()
    await expect(page.locator("#dead-letters")).to_have_text("0")
    await expect(page.locator("#outbox-depth")).to_have_text(str(status["outbox"]["depth"] + 1))
    await expect(page.locator("#retry-dead-letters")).to_be_hidden()

    phone = await open_page(
        browser,
        gw.url,
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    )
    await expect(phone.locator("#outbox-depth")).to_have_text(str(status["outbox"]["depth"] + 1))
    # Nothing sticks out sideways on a phone: one column, no horizontal scrolling.
    assert await phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    await phone.screenshot(path=tmp_path / "dashboard-phone.png", full_page=True)


@needs_browser
async def test_pause_on_the_page_refuses_the_next_consent_and_resume_restores_it(
    tmp_path: Path, browser: Browser, gw: Dashboard, station: Workstation
) -> None:
    page = await open_page(browser, gw.url, viewport={"width": 1024, "height": 768})
    lottery = page.locator('[data-program="lottery"]')
    switch = lottery.locator(".program-switch")
    await expect(lottery.locator(".program-state")).to_have_text("running")

    dialogs: list[str] = []

    async def answer(dialog: Dialog, accept: bool) -> None:
        dialogs.append(dialog.message)
        await (dialog.accept() if accept else dialog.dismiss())

    # Cancelling the confirmation changes nothing.
    page.once("dialog", lambda dialog: answer(dialog, accept=False))
    await switch.click()
    assert dialogs and "Pause the lottery" in dialogs[-1]
    await page.wait_for_function(
        "t => Number(document.body.dataset.refreshed) > t",
        arg=await page.evaluate("Date.now()"),
    )  # a full poll after the cancel: had it been sent, it would show now
    await expect(lottery.locator(".program-state")).to_have_text("running")

    await page.locator("#operator").fill("anna (store IT)")
    page.once("dialog", lambda dialog: answer(dialog, accept=True))
    await switch.click()
    # At once: the page reloads the status after the switch, not at its next poll.
    await expect(lottery.locator(".program-state")).to_have_text("paused", timeout=2000)
    await expect(lottery.locator(".program-note")).to_contain_text("paused by anna (store IT)")
    await expect(switch).to_have_text("Resume lottery")
    reply = await station.request("CONSENT", "4", "M1", "LOTTERY", "Y")
    assert reply[:2] == ["CONSENT_FAIL", "PROGRAM_PAUSED"]
    await page.screenshot(path=tmp_path / "dashboard-paused.png")

    page.once("dialog", lambda dialog: answer(dialog, accept=True))
    await switch.click()
    await expect(lottery.locator(".program-state")).to_have_text("running", timeout=2000)
    assert (await station.request("CONSENT", "4", "M1", "LOTTERY", "Y"))[0] == "CONSENT_OK"


@needs_browser
async def test_with_a_token_the_page_and_the_api_refuse_requests_without_it(
    tmp_path: Path, browser: Browser
) -> None:
    async with dashboard(tmp_path, token=TOKEN) as gw:
        async with httpx.AsyncClient(base_url=gw.url) as api:
            for path in ("/", "/status", "/history", "/metrics", "/healthz", "/readyz"):
                assert (await api.get(path)).status_code == 401, path
            for path in ("/programs/lottery/pause", "/dead-letters/retry"):
                assert (await api.post(path, json={"by": "x"})).status_code == 401, path
            assert (await api.get("/", params={"token": "wrong"})).status_code == 401
            # The token in the query opens the page only, never the API.
            assert (await api.get("/status", params={"token": TOKEN})).status_code == 401
            bearer = {"Authorization": f"Bearer {TOKEN}"}
            assert (await api.get("/history", headers=bearer)).status_code == 200
            not_json = await api.post("/dead-letters/retry", headers=bearer, content=b"x=1")
            assert not_json.status_code == 415  # a cross-site form cannot send it

        context = await browser.new_context(viewport={"width": 1024, "height": 768})
        page = await context.new_page()
        refused = await page.goto(gw.url)
        assert refused is not None and refused.status == 401
        await expect(page.locator("#outbox-depth")).to_have_count(0)
        await expect(page.locator("#refused")).to_have_text("This gateway's admin token is needed.")

        await page.locator("input[name=token]").fill(TOKEN)
        await page.locator("button[type=submit]").click()
        # The page's own fetches carry the token as a bearer header: the numbers arrive.
        await expect(page.locator("#central-state")).to_have_text("STANDALONE")
        assert page.url == gw.url + "/"  # the token left the address bar
        # A reload in the same tab finds the token in sessionStorage.
        await page.reload()
        await expect(page.locator("#central-state")).to_have_text("STANDALONE")

        stranger = await browser.new_context()
        other = await stranger.new_page()
        wrong = await other.goto(gw.url + "/?token=guess")
        assert wrong is not None and wrong.status == 401
        await expect(other.locator("#refused")).to_have_text("That token was refused.")


# ---- web pages of other sites (DNS rebinding, CSRF) -----------------------------------------

# What an attacker's page tries: read the status, pause the lottery in every way a page can send
# a POST, retry the dead letters.
ATTACK = {
    "read": ("status", "/status"),
    "pause": "/programs/lottery/pause",
    "posts": {"retry": "/dead-letters/retry"},
}


async def lottery_state(gw: Dashboard) -> str:
    status = await gw.daemon.status()
    state: str = status["programs"]["lottery"]["state"]
    return state


@needs_browser
async def test_a_page_on_a_rebound_name_can_neither_read_nor_pause(
    rebinding_browser: Browser, gw: Dashboard
) -> None:
    # The attacker's page is served for evil.example:<port> (the name still pointed at the
    # attacker then); everything it asks for afterwards reaches the gateway at 127.0.0.1.
    result, context = await chromium.attack_from_a_rebound_name(
        rebinding_browser, gw.server.port, chromium.attack_page("", **ATTACK)
    )
    assert result["status"] == 421, result
    assert "S001" not in result["status_body"]
    assert "admin.host_names" in result["status_body"]  # says what to do about it
    for attempt in ("pause_json", "pause_no_cors", "retry"):
        assert result[attempt] == 421, result
    assert await lottery_state(gw) == "running"

    # The real dashboard in the same browser still flips the switch both ways.
    real = await context.new_page()
    real.on("dialog", lambda dialog: dialog.accept())
    await real.goto(gw.url + "/")
    lottery = real.locator('[data-program="lottery"]')
    await expect(lottery.locator(".program-state")).to_have_text("running")
    await lottery.locator(".program-switch").click()
    await expect(lottery.locator(".program-state")).to_have_text("paused", timeout=2000)
    assert await lottery_state(gw) == "paused"
    await lottery.locator(".program-switch").click()
    await expect(lottery.locator(".program-state")).to_have_text("running", timeout=2000)
    assert await lottery_state(gw) == "running"


@needs_browser
async def test_a_page_of_another_site_can_neither_read_nor_pause(
    rebinding_browser: Browser, gw: Dashboard
) -> None:
    result = await chromium.attack_from_another_site(
        rebinding_browser, chromium.attack_page(gw.url, **ATTACK)
    )
    # The browser keeps the answers from the page, and the gateway refuses the POSTs it
    # lets through (no-cors) because they come from another origin.
    assert result["status"] == "blocked", result
    assert result["pause_json"] == "blocked" and result["retry"] == "blocked", result
    assert result["pause_no_cors"] == "opaque", result
    assert await lottery_state(gw) == "running"


@needs_browser
async def test_the_page_says_why_the_gateway_refused_a_switch(
    browser: Browser, gw: Dashboard
) -> None:
    # The gateway's own refusal of a foreign origin (the browser will not let a test forge
    # the Origin header), handed to the page as the answer to its switch.
    async with httpx.AsyncClient(base_url=gw.url) as api:
        refusal = await api.post(
            "/programs/lottery/pause", json={}, headers={"Origin": f"http://{EVIL}"}
        )
    assert refusal.status_code == 403

    async def refused(route: Route) -> None:
        await route.fulfill(
            status=refusal.status_code, content_type="application/json", body=refusal.text
        )

    context = await browser.new_context()
    await context.route("**/programs/**", refused)
    page = await context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    await page.goto(gw.url)
    await page.locator('[data-program="lottery"] .program-switch').click()
    await expect(page.locator("#alert")).to_contain_text(
        "answered 403: a page of another site cannot change this gateway"
    )
    assert await lottery_state(gw) == "running"


def test_the_dashboard_screenshot_in_the_docs_exists() -> None:
    docs = Path(__file__).resolve().parents[1] / "docs"
    assert (docs / "images" / "dashboard.png").exists()
    assert "images/dashboard.png" in (docs / "operations.md").read_text(encoding="utf-8")


@needs_browser
async def test_the_page_shows_a_clock_behind_the_registers(browser: Browser, gw: Dashboard) -> None:
    page = await open_page(browser, gw.url)
    await expect(page.locator("#clock")).to_have_text("ok")
    await expect(page.locator("#database")).to_have_text("writable")
    async with workstation(gw.daemon, 4) as station:
        far = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).strftime("%Y%m%d")
        reply = await station.request(
            "POST", "4", "1", "77", far, "", "5.00", "5.00", "1*1*5.00", ""
        )
        assert reply[:2] == ["ERROR", "BAD_FIELD"]
    clock = page.locator("#clock")
    await expect(clock).to_contain_text("behind the registers")
    await expect(clock).to_contain_text(far[:4] + "-" + far[4:6] + "-" + far[6:])
    await expect(clock).to_have_class("bad")


# ---- a gateway that does not answer ----------------------------------------------------------

VIEWPORT = {"width": 1024, "height": 768}
GREY = "rgb(154, 161, 169)"  # --stale in gateway/web/static/page.css


async def assert_in_view(page: Page, selector: str) -> None:
    """All of the element inside the 1024x768 window, the page not scrolled."""
    assert await page.evaluate("window.scrollX === 0 && window.scrollY === 0")
    box = await page.locator(selector).bounding_box()
    assert box is not None, selector
    assert box["x"] >= 0 and box["y"] >= 0, (selector, box)
    assert box["x"] + box["width"] <= VIEWPORT["width"], (selector, box)
    assert box["y"] + box["height"] <= VIEWPORT["height"], (selector, box)


async def colour(page: Page, selector: str, prop: str = "color") -> str:
    value: str = await page.locator(selector).evaluate(
        "(el, prop) => getComputedStyle(el)[prop]", prop
    )
    return value


async def last_answer_clock(page: Page) -> str:
    """The time of the page's last answer from the gateway, as the page writes times."""
    clock: str = await page.evaluate(
        "new Date(Number(document.body.dataset.answered)).toLocaleTimeString([],"
        " {hour: '2-digit', minute: '2-digit', second: '2-digit'})"
    )
    return clock


@needs_browser
async def test_problems_are_in_view_at_1024x768_and_a_stopped_gateway_is_unreachable(
    tmp_path: Path, browser: Browser, gw: Dashboard, station: Workstation
) -> None:
    assert (await post(station, 4, 1, member="M1"))[0] == "POST_OK"
    await dead_letter_one_event(gw.daemon)

    page = await open_page(browser, gw.url, viewport=VIEWPORT)
    await expect(page.locator("#dead-letters")).to_have_text("1")
    await expect(page.locator("#retry-dead-letters")).to_be_visible()
    await expect(page.locator("body")).to_have_attribute("data-gateway", "answering")
    await expect(page.locator("#unreachable")).to_be_hidden()
    # The Problems panel, its retry button included, without scrolling.
    await assert_in_view(page, "#problems")
    await assert_in_view(page, "#retry-dead-letters")
    assert await colour(page, "#dead-letters") != GREY
    await page.screenshot(path=tmp_path / "dashboard-answering.png")

    await gw.server.stop()  # the admin API is gone: connections are refused

    banner = page.locator("#unreachable")
    await expect(banner).to_be_visible()
    await expect(banner).to_contain_text("UNREACHABLE")
    await expect(banner).to_contain_text("no connection")
    await expect(page.locator("body")).to_have_attribute("data-gateway", "unreachable")
    # The badge no longer shows central's last state, and says when the last answer came.
    badge = page.locator("#central-state")
    await expect(badge).to_have_text("UNREACHABLE")
    assert await colour(page, "#central-state", "backgroundColor") == "rgb(61, 65, 71)"
    clock = await last_answer_clock(page)
    await expect(banner).to_contain_text(f"last answer at {clock}")
    await expect(page.locator("#central-since")).to_contain_text(f"last answer at {clock}")
    # Its age goes on counting (no frozen "0 s ago"): at least 2 s by the next polls.
    await expect(banner).to_contain_text(re.compile(r"\((?:[2-9]|\d{2,}) s ago\)"))
    # What the page still shows is greyed: times and figures of the last answer.
    for selector in ("#central-since", "#updated", "#uptime", "#dead-letters", "#storage"):
        assert await colour(page, selector) == GREY, selector
    assert await colour(page, '[data-program="lottery"] .program-state', "backgroundColor") == (
        GREY
    )
    # Nothing can be switched while nobody answers.
    await expect(page.locator('[data-program="lottery"] .program-switch')).to_be_disabled()
    await expect(page.locator("#retry-dead-letters")).to_be_disabled()
    # On top of the page, and Problems still in view below it.
    await assert_in_view(page, "#unreachable")
    banner_box = await banner.bounding_box()
    assert banner_box is not None and banner_box["y"] == 0
    await assert_in_view(page, "#problems")
    await page.screenshot(path=tmp_path / "dashboard-unreachable.png")


@needs_browser
async def test_a_hung_gateway_times_out_to_unreachable_and_is_shown_again_when_it_answers(
    tmp_path: Path, browser: Browser
) -> None:
    """The real daemon in a process of its own, stopped (SIGSTOP): connections are accepted by
    the kernel but nothing answers, so only the page's own timeout can tell."""
    gateway = await GatewayProcess.start(tmp_path / "data")
    try:
        admin_port = gateway.events("gateway_ready")[0]["admin_port"]
        page = await open_page(browser, f"http://127.0.0.1:{admin_port}/", viewport=VIEWPORT)
        badge = page.locator("#central-state")
        await expect(badge).to_have_text("STANDALONE")
        timeout_s = round(unreachable_after_s(5.0))  # the daemon's page polls every 5 s
        within_ms = (5 + timeout_s + 10) * 1000

        gateway.process.send_signal(signal.SIGSTOP)
        banner = page.locator("#unreachable")
        await expect(banner).to_contain_text(f"no answer within {timeout_s} s", timeout=within_ms)
        await expect(badge).to_have_text("UNREACHABLE")
        assert await colour(page, "#updated") == GREY
        await assert_in_view(page, "#problems")

        gateway.process.send_signal(signal.SIGCONT)
        await expect(badge).to_have_text("STANDALONE", timeout=within_ms)
        await expect(banner).to_be_hidden()
        await expect(page.locator("body")).to_have_attribute("data-gateway", "answering")
        assert await colour(page, "#updated") != GREY
        await expect(page.locator('[data-program="lottery"] .program-switch')).to_be_enabled()

        await gateway.kill()  # a crash: the port is closed
        await expect(banner).to_contain_text("no connection", timeout=within_ms)
        await expect(badge).to_have_text("UNREACHABLE")
    finally:
        with contextlib.suppress(ProcessLookupError):
            gateway.process.send_signal(signal.SIGCONT)
        await gateway.close()
