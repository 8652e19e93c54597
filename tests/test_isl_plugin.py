"""The shipped ISL plugin (isl_plugin/pms9.isl), unmodified, run by islrun against a real
gateway on a real SIM socket: what the cashier sees, what the check and its receipt lines hold,
and what the gateway recorded."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path

import pytest
from conftest import RunningGateway, member_record, running_gateway

from gateway import __version__
from gateway.domain.reasons import Reason
from gateway.service import Gateway, receipt_line
from gateway.store.store import Store
from isl_plugin.islrun import (
    Discount,
    EventRun,
    MenuItem,
    PosConfig,
    Register,
    SimLink,
    Station,
    StationOptions,
    load_scenario,
    parse_script,
    run_scenario,
)
from isl_plugin.islrun.values import KEY_ENTER, KeyValue
from pos_adapters.sim.session import SimResponder

PLUGIN = Path(__file__).resolve().parent.parent / "isl_plugin" / "pms9.isl"
SCRIPT = parse_script(PLUGIN.read_text(encoding="cp1252"), PLUGIN.name)

CARD_M1 = "6001000000000001"  # Ann K., GOLD, 120 points
CARD_M3 = "6001000000000003"  # a minor: cannot join the lottery
CARD_M5 = "6001000000000005"  # Eva R., owns REWARD-M5
AT = dt.datetime(2026, 11, 23, 12, 0)  # the gateway fixture's business day

POS = PosConfig(
    menu={
        1001: MenuItem("Latte", Decimal("3.50")),
        1002: MenuItem("Club sandwich", Decimal("13.40")),
        5001: MenuItem("Muffin", Decimal("2.90")),
        9001: MenuItem("LOYALTY COUPON", Decimal("0.00"), reference=True),
    },
    discounts={
        101: Discount("Loyalty amount", "amount"),
        102: Discount("Loyalty free item", "item"),
        103: Discount("Loyalty percent", "percent"),
    },
)

StationFactory = Callable[..., Station]


@pytest.fixture
async def make_station(gateway: RunningGateway) -> AsyncIterator[StationFactory]:
    links: list[SimLink] = []

    def make(
        wsid: int = 7, *, timeout_s: float = 2.0, port: int | None = None, **options: bool
    ) -> Station:
        link = SimLink("127.0.0.1", port or gateway.port, source_id=f"{wsid:>4}LOYAL".encode())
        links.append(link)
        return Station(
            SCRIPT,
            link,
            register=Register(wsid=wsid),
            pos=POS,
            options=StationOptions(timeout_s=timeout_s, **options),
            clock=lambda: AT,
        )

    yield make
    for link in links:
        await link.close()


def ring_lunch(station: Station, check: int = 1001) -> None:
    """2 lattes and a club sandwich: 20.40, enough for WELCOME5's 20.00 minimum."""
    station.open_check(check)
    station.ring(1001, 2)
    station.ring(1002)


async def member_at_lunch(make_station: StationFactory, card: str) -> Station:
    """A new workstation: lunch rung on check 1001, then the member's card read."""
    station = make_station()
    ring_lunch(station)
    await station.press(1, [card])
    return station


async def eva_reserves_her_reward(station: Station, check: int) -> list[str]:
    """Eva scans her single-use REWARD-M5 on a new check: the reply handlers that ran
    (COUPON_OK once a released coupon is free again)."""
    ring_lunch(station, check)
    await station.press(1, [CARD_M5])
    return (await station.press(2, ["REWARD-M5"])).handlers


# ---- identify -> coupon -> final tender ---------------------------------------------------------


@pytest.mark.parametrize("rxmsg_includes_name", [False, True], ids=["rxmsg-data", "rxmsg-name"])
async def test_member_coupon_and_tender_put_the_discount_on_the_check_and_points_on_the_receipt(
    make_station: StationFactory, rxmsg_includes_name: bool
) -> None:
    station = make_station(rxmsg_includes_name=rxmsg_includes_name)
    ring_lunch(station)
    check = station.check
    assert check is not None

    ident = await station.press(1, [CARD_M1])
    assert ident.outcome.exit == "normal"
    assert ident.sent == [["IDENT", "7", "1", "1001", CARD_M1]]
    assert ident.handlers == ["IDENT_OK"]
    assert ident.saw("Welcome Ann K. - 120 pts")
    # The member and the balance go on the check when the card is read, as real scripts do.
    assert check.info_lines == ["Member Ann K.", "Points balance 120"]

    coupon = await station.press(2, ["WELCOME5"])
    assert coupon.sent == [["COUPON", "7", "1001", "M1", "WELCOME5", "20.40"]]
    reply = coupon.replies[0]
    assert reply is not None and reply[0] == "COUPON_OK"
    ref = reply[1]
    assert coupon.saw("Coupon OK")
    # The discount the gateway named, for the amount it returned, then the marker item with the
    # coupon's ref as its reference entry.
    assert [(d.type, d.object, d.name, d.total) for d in check.details[2:]] == [
        ("D", 101, "Loyalty amount", Decimal("-5.00")),
        ("M", 9001, "LOYALTY COUPON", Decimal("0.00")),
        ("R", 0, ref, Decimal("0.00")),
    ]
    assert check.total == Decimal("15.40")

    final = await station.tender(1)
    assert final is not None and final.outcome.exit == "normal"
    assert final.sent == [
        [
            "POST", "7", "1", "1001", "20261123", "M1", "20.40", "15.40",
            "2*1001*7.00;1*1002*13.40", ref,
        ]
    ]  # fmt: skip
    assert final.handlers == ["POST_OK"]
    assert check.closed
    post_ok = final.replies[0]
    assert post_ok is not None
    # The identification lines are cleared at the final tender; the receipt printer prints
    # every receipt line the gateway sent, in order, under the title.
    assert check.info_lines == []
    [job] = final.printed
    assert (job.printer, job.ended) == ("RCPT", True)
    assert job.lines == ["LOYALTY", *post_ok[5:]]
    # Points are earned on what the customer paid: 15.40 -> 15, and 120 + 15 on the receipt.
    assert post_ok[1:3] == ["15", "135"]
    assert job.lines[1:] == [
        receipt_line("Member", "Ann K."),
        receipt_line("Points this visit", "15"),
        receipt_line("Points balance", "135"),
        receipt_line("You saved", "€5.00"),
    ]
    assert all(len(line) <= 24 for line in job.lines)

    # The gateway kept it: the next check of the same member starts from 135.
    ring_lunch(station, 1002)
    again = await station.press(1, [CARD_M1])
    assert again.saw("135 pts")


async def test_percent_coupon_types_the_percent_and_the_post_carries_the_discounted_total(
    make_station: StationFactory,
) -> None:
    station = make_station()
    ring_lunch(station)
    coupon = await station.press(2, ["TENOFF"])  # anonymous: a bearer coupon
    assert coupon.sent[0][3] == ""  # no member ref
    assert coupon.macros[0] == [KeyValue(5, 103), "10", KEY_ENTER]
    assert station.check is not None and station.check.total == Decimal("18.36")  # 20.40 - 2.04
    final = await station.tender(1)
    assert final is not None
    post = final.sent[0]
    assert post[5:8] == ["", "20.40", "18.36"]
    assert final.handlers == ["POST_OK"]  # posted although anonymous: it redeems a coupon


async def test_free_item_coupon_rings_the_item_and_discounts_it_off(
    make_station: StationFactory,
) -> None:
    station = await member_at_lunch(make_station, CARD_M1)
    coupon = await station.press(2, ["BDAY-M1"])
    assert coupon.saw("Free item")
    # The item, then the item discount; every key followed by ENTER, as real scripts do.
    assert coupon.macros[0] == [KeyValue(3, 5001), KEY_ENTER, KeyValue(5, 102), KEY_ENTER]
    check = station.check
    assert check is not None
    assert [(d.type, d.object, d.total) for d in check.details[2:5]] == [
        ("M", 5001, Decimal("2.90")),
        ("D", 102, Decimal("-2.90")),
        ("M", 9001, Decimal("0.00")),
    ]
    assert check.total == Decimal("20.40")
    final = await station.tender(1)
    assert final is not None
    assert final.sent[0][6:9] == ["23.30", "20.40", "2*1001*7.00;1*1002*13.40;1*5001*2.90"]


async def test_a_voided_item_is_neither_posted_nor_counted(make_station: StationFactory) -> None:
    station = make_station()
    ring_lunch(station)
    station.ring(1001)
    station.void_line(2)  # the club sandwich
    await station.press(1, [CARD_M1])
    final = await station.tender(1)
    assert final is not None
    assert final.sent[0][6:10] == ["10.50", "10.50", "2*1001*7.00;1*1001*3.50", ""]


# ---- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "lunch", "reason"),
    [
        ("OLD2025", True, Reason.EXPIRED),
        ("NO-SUCH-CODE", True, Reason.UNKNOWN_COUPON),
        ("WELCOME5", False, Reason.MIN_SPEND),
    ],
)
async def test_a_refused_coupon_shows_the_reason_and_changes_nothing(
    make_station: StationFactory, code: str, lunch: bool, reason: Reason
) -> None:
    station = make_station()
    if lunch:
        ring_lunch(station)
    else:
        station.open_check(1001)
        station.ring(1001)  # 3.50: under WELCOME5's 20.00 minimum
    check = station.check
    assert check is not None
    before = list(check.details)

    run = await station.press(2, [code])
    assert run.outcome.exit == "normal"
    reply = run.replies[0]
    assert reply is not None and reply[:2] == ["COUPON_FAIL", reason.value]
    assert reply[2] and run.saw(f"Loyalty / {reply[2]}")  # the gateway's words for the reason
    assert run.macros == [] and check.details == before

    final = await station.tender(1)
    assert final is not None and final.sent == []  # no member, no coupon: nothing to post


async def test_an_unknown_card_shows_the_reason_and_the_check_stays_anonymous(
    make_station: StationFactory,
) -> None:
    station = make_station()
    ring_lunch(station)
    run = await station.press(1, ["9999000000000000"])
    assert run.handlers == ["IDENT_FAIL"]
    reply = run.replies[0]
    assert reply is not None and reply[1] == Reason.UNKNOWN_MEMBER.value
    assert run.saw(f"Loyalty / {reply[2]}")
    assert station.check is not None and station.check.info_lines == []


# ---- the gateway goes away ----------------------------------------------------------------------


async def test_gateway_stopped_mid_check_shows_the_offline_message_and_the_sale_completes(
    make_station: StationFactory, gateway: RunningGateway
) -> None:
    station = make_station()
    ring_lunch(station)
    ident = await station.press(1, [CARD_M1])
    assert ident.handlers == ["IDENT_OK"]

    await gateway.server.stop(grace_s=1.0)

    coupon = await station.press(2, ["WELCOME5"])
    assert coupon.outcome.exit == "normal"
    assert coupon.handlers == ["_TIMEOUT"]
    assert coupon.saw("Loyalty offline - go on / Coupon not applied")
    check = station.check
    assert check is not None and check.total == Decimal("20.40")

    final = await station.tender(1)
    assert final is not None
    assert final.outcome.exit == "normal"  # the tender is never cancelled
    assert final.sent[0][0] == "POST" and final.replies == [None]
    assert final.saw("Loyalty offline - go on / Points not recorded")
    assert check.closed and check.due == Decimal("0.00")
    assert check.info_lines == []
    assert [(job.printer, job.lines) for job in final.printed] == [
        ("RCPT", ["LOYALTY", "Points not recorded"])
    ]


async def test_a_gateway_that_does_not_answer_in_time_gets_the_same_offline_message(
    make_station: StationFactory,
) -> None:
    accepted = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass  # reads every frame, answers none
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    try:
        station = make_station(timeout_s=0.2, port=server.sockets[0].getsockname()[1])
        ring_lunch(station)
        ident = await station.press(1, [CARD_M1])
        assert accepted.is_set()
        assert ident.replies == [None] and ident.handlers == ["_TIMEOUT"]
        assert ident.saw("Loyalty / Loyalty offline - go on")
        final = await station.tender(1)
        assert final is not None and final.outcome.exit == "normal"
        assert final.sent == []  # the member was never identified: nothing to post
    finally:
        server.close()
        await server.wait_closed()


# ---- lottery consent ------------------------------------------------------------------------


async def test_a_member_who_consents_joins_the_lottery_and_the_receipt_shows_tickets(
    make_station: StationFactory,
) -> None:
    station = await member_at_lunch(make_station, CARD_M1)
    consent = await station.press(4, ["y"])
    assert consent.sent == [["CONSENT", "7", "M1", "LOTTERY", "Y"]]
    assert consent.handlers == ["CONSENT_OK"]
    assert consent.saw("Lottery: member joined")

    final = await station.tender(1)
    assert final is not None and final.handlers == ["POST_OK"]
    post_ok = final.replies[0]
    assert post_ok is not None
    # 20.40 earns 20 points; they go to the wallet (tickets at 50), the balance stays at 120.
    assert post_ok[1:5] == ["20", "120", "0", "20"]
    [job] = final.printed
    assert job.lines[1:] == post_ok[5:]
    assert receipt_line("Points this visit", "20") in job.lines  # the points as well as
    assert receipt_line("Tickets this visit", "0") in job.lines  # the tickets
    assert receipt_line("Wallet points", "20") in job.lines

    ring_lunch(station, 1002)
    again = await station.press(1, [CARD_M1])
    assert again.saw("Welcome Ann K. - lottery")
    leave = await station.press(4, ["0"])
    assert leave.sent[0][4] == "N" and leave.saw("Lottery: member left")


async def test_a_minor_cannot_consent_and_sees_why(make_station: StationFactory) -> None:
    station = await member_at_lunch(make_station, CARD_M3)
    run = await station.press(4, ["1"])
    assert run.handlers == ["CONSENT_FAIL"]
    reply = run.replies[0]
    assert reply is not None and reply[1] == Reason.NOT_ELIGIBLE.value
    assert run.saw(reply[2])


async def test_consent_needs_an_identified_member_and_a_clear_answer(
    make_station: StationFactory,
) -> None:
    station = make_station()
    ring_lunch(station)
    nobody = await station.press(4)
    assert nobody.outcome.exit == "ExitCancel" and nobody.sent == []
    assert nobody.saw("Identify the member first")
    await station.press(1, [CARD_M1])
    unclear = await station.press(4, ["maybe"])
    assert unclear.outcome.exit == "ExitCancel" and unclear.sent == []
    assert unclear.saw("Answer 1 (yes) or 0 (no)")


# ---- releasing a coupon -------------------------------------------------------------------------


async def test_a_released_coupon_is_not_posted_and_another_check_can_use_it(
    make_station: StationFactory,
) -> None:
    station = await member_at_lunch(make_station, CARD_M5)
    coupon = await station.press(2, ["REWARD-M5"])  # single use, Eva's
    assert coupon.handlers == ["COUPON_OK"]
    reply = coupon.replies[0]
    assert reply is not None
    ref = reply[1]

    release = await station.press(3)
    assert release.sent == [["COUPON_VOID", "7", "1001", ref]]
    assert release.saw("Coupon released / Now void its discount line")
    nothing_left = await station.press(3)
    assert nothing_left.sent == [] and nothing_left.saw("No loyalty coupon on this check")

    station.void_last(101, "D")  # the cashier voids the discount line
    final = await station.tender(1)
    assert final is not None
    assert final.sent[0][7:] == ["20.40", "2*1001*7.00;1*1002*13.40", ""]

    assert await eva_reserves_her_reward(station, 1002) == ["COUPON_OK"]


# ---- the check the member belongs to ------------------------------------------------------------


async def test_a_member_identified_before_the_check_is_begun_is_posted_with_it(
    make_station: StationFactory,
) -> None:
    station = make_station()
    early = await station.press(1, [CARD_M1])
    assert early.sent == [["IDENT", "7", "1", "0", CARD_M1]]
    ring_lunch(station, 1005)
    final = await station.tender(1)
    assert final is not None and final.sent[0][3:6] == ["1005", "20261123", "M1"]


async def test_a_member_left_on_an_abandoned_check_is_not_posted_with_the_next_one(
    make_station: StationFactory,
) -> None:
    station = make_station()
    ring_lunch(station, 1001)
    await station.press(1, [CARD_M1])
    ring_lunch(station, 1002)  # check 1001 was never tendered
    final = await station.tender(1)
    assert final is not None and final.sent == []


async def test_cancelling_the_input_sends_nothing(make_station: StationFactory) -> None:
    station = make_station()
    ring_lunch(station)
    run = await station.press(1, [None])
    assert run.outcome.exit == "ExitCancel" and run.sent == []
    blank = await station.press(2, ["   "])
    assert blank.outcome.exit == "ExitCancel" and blank.sent == []


async def test_coupon_key_on_an_empty_check_asks_for_items_first(
    make_station: StationFactory,
) -> None:
    station = make_station()
    run = await station.press(2, ["WELCOME5"])
    assert run.outcome.exit == "ExitCancel" and run.sent == []
    assert run.saw("Ring up the items first")
    assert run.warnings == ["1 scripted answer(s) not asked for"]


async def test_status_key_shows_the_installed_settings_and_the_gateway_state(
    make_station: StationFactory,
) -> None:
    station = make_station()
    run = await station.press(5)
    assert run.sent == [["PING"]] and run.handlers == ["PONG"]
    assert run.saw("pms9 v1.1.0 timeout 5 s / Gateway ")
    assert run.saw("STANDALONE")


async def test_workstations_on_their_own_links_post_their_own_checks(
    make_station: StationFactory,
) -> None:
    stations = [make_station(wsid) for wsid in (3, 4, 5)]

    async def visit(station: Station) -> list[str]:
        ring_lunch(station, 2000 + station.register.wsid)
        await station.press(1, [CARD_M1])
        final = await station.tender(1)
        assert final is not None
        return final.sent[0]

    posts = await asyncio.gather(*(visit(station) for station in stations))
    assert [post[1] for post in posts] == ["3", "4", "5"]
    assert all(s.runs[-1].handlers == ["POST_OK"] for s in stations)


# ---- check information lines ----------------------------------------------------------------


async def test_identification_writes_the_member_and_the_balance_cut_to_24_characters(
    make_station: StationFactory, gateway: RunningGateway
) -> None:
    name = "Maximilian Alexander von Wolfsburg"
    await gateway.store.upsert_members(
        [member_record("M9", display_name=name, points_balance=1_234_567)]
    )
    station = make_station()
    ring_lunch(station)
    run = await station.press(1, ["CARD-M9"])
    assert run.handlers == ["IDENT_OK"] and run.warnings == []
    assert station.check is not None
    assert station.check.info_lines == [f"Member {name}"[:24], "Points balance 1234567"]
    assert station.check.info_lines[0] == "Member Maximilian Alexan"


async def test_a_member_identified_before_the_check_is_begun_gets_the_lines_at_begin_check(
    make_station: StationFactory,
) -> None:
    station = make_station()
    early = await station.press(1, [CARD_M1])  # no check yet: nothing to write the lines on
    assert early.handlers == ["IDENT_OK"] and early.warnings == []
    begin = await station.begin(1005)
    assert begin is not None and begin.outcome.exit == "normal" and begin.sent == []
    check = station.check
    assert check is not None and check.info_lines == ["Member Ann K.", "Points balance 120"]
    station.ring(1001, 2)
    final = await station.tender(1)
    assert final is not None and final.sent[0][3:6] == ["1005", "20261123", "M1"]
    assert check.info_lines == []  # cleared at the final tender


# ---- a cancelled check ---------------------------------------------------------------------------


async def test_a_cancelled_check_releases_every_coupon_it_held_and_forgets_the_member(
    make_station: StationFactory,
) -> None:
    station = await member_at_lunch(make_station, CARD_M5)
    refs = []
    for code in ("REWARD-M5", "TENOFF"):
        coupon = await station.press(2, [code])
        reply = coupon.replies[0]
        assert reply is not None and reply[0] == "COUPON_OK"
        refs.append(reply[1])
    check = station.check
    assert check is not None and check.info_lines

    cancel = await station.cancel()
    assert cancel is not None and cancel.outcome.exit == "normal"
    assert cancel.sent == [["COUPON_VOID", "7", "1001", ref] for ref in refs]
    assert cancel.replies == [["COUPON_VOID_OK"], ["COUPON_VOID_OK"]]
    assert cancel.saw("Loyalty / Coupon released")
    assert check.cancelled and check.info_lines == []

    # Eva's single-use reward serves her next check at once; the member is not carried over.
    ring_lunch(station, 1002)
    nobody = await station.tender(1)
    assert nobody is not None and nobody.sent == []
    assert await eva_reserves_her_reward(station, 1003) == ["COUPON_OK"]


async def test_a_cancelled_check_without_coupons_sends_nothing(
    make_station: StationFactory,
) -> None:
    station = await member_at_lunch(make_station, CARD_M1)
    cancel = await station.cancel()
    assert cancel is not None and cancel.sent == [] and cancel.shown == []


# ---- a voided discount line ------------------------------------------------------------------


async def test_voiding_a_loyalty_discount_line_releases_its_coupon_at_once(
    make_station: StationFactory,
) -> None:
    station = make_station()
    ring_lunch(station)
    station.ring(1001)
    await station.press(1, [CARD_M5])
    coupon = await station.press(2, ["REWARD-M5"])
    reply = coupon.replies[0]
    assert reply is not None
    ref = reply[1]

    item = await station.void(3)  # an ordinary item: nothing to release
    assert item is not None and item.sent == [] and item.shown == []
    discount = await station.void(None, 101, "D")
    assert discount is not None
    assert discount.sent == [["COUPON_VOID", "7", "1001", ref]]
    assert discount.replies == [["COUPON_VOID_OK"]]
    assert discount.saw("Loyalty / Coupon released")
    marker = await station.void(None, 9001, "M")  # its marker too: already released
    assert marker is not None and marker.sent == []

    final = await station.tender(1)
    assert final is not None
    assert final.sent[0][6:] == ["20.40", "20.40", "2*1001*7.00;1*1002*13.40", ""]

    assert await eva_reserves_her_reward(station, 1002) == ["COUPON_OK"]


async def test_a_coupon_released_by_its_key_is_not_released_again_when_its_line_is_voided(
    make_station: StationFactory,
) -> None:
    station = await member_at_lunch(make_station, CARD_M1)
    await station.press(2, ["WELCOME5"])
    release = await station.press(3)
    assert [fields[0] for fields in release.sent] == ["COUPON_VOID"]
    void = await station.void(None, 101, "D")
    assert void is not None and void.sent == []


async def test_a_release_that_gets_no_answer_keeps_the_coupon_off_the_post(
    make_station: StationFactory, gateway: RunningGateway
) -> None:
    station = make_station(timeout_s=0.5)
    ring_lunch(station)
    await station.press(1, [CARD_M1])
    await station.press(2, ["WELCOME5"])
    await gateway.server.stop(grace_s=1.0)

    void = await station.void(None, 101, "D")
    assert void is not None and void.outcome.exit == "normal"
    assert [fields[0] for fields in void.sent] == ["COUPON_VOID"] and void.replies == [None]
    assert void.saw("Loyalty offline - go on / Coupon held until it expires")
    final = await station.tender(1)
    assert final is not None and final.outcome.exit == "normal"
    assert final.sent[0][6:] == ["20.40", "20.40", "2*1001*7.00;1*1002*13.40", ""]


# ---- the reply style of the public scripts ---------------------------------------------------


@pytest.fixture(params=["fields", "pipe"])
async def styled_gateway(
    request: pytest.FixtureRequest, service: Gateway, store: Store
) -> AsyncIterator[RunningGateway]:
    """The real gateway (as the `gateway` fixture) in each reply style (docs/protocol.md)."""
    responder = SimResponder(service, reply_style=request.param)
    async with running_gateway(service, store, responder) as running:
        yield running


def pipe_values(run: EventRun) -> list[str]:
    """The values of the run's one reply, which came as one field joined by `|`."""
    [reply] = run.replies
    assert reply is not None and len(reply) == 1
    return reply[0].split("|")


def reply_shapes(runs: list[EventRun]) -> set[int]:
    """How many fields the replies the runs got had: {1} in the pipe style."""
    return {len(reply) for run in runs for reply in run.replies if reply is not None}


@pytest.mark.parametrize("styled_gateway", ["pipe"], indirect=True)
async def test_replies_carried_as_one_pipe_separated_field_are_read_with_split(
    make_station: StationFactory, styled_gateway: RunningGateway
) -> None:
    """The attested idiom (docs/isl.md, "Reply style"): the gateway in the pipe style answers
    each request with one |-separated field; the script reads it with Split @RxMsg, "|"."""
    station = make_station(port=styled_gateway.port)
    ring_lunch(station)
    ident = await station.press(1, [CARD_M1])
    assert ident.replies == [["IDENT_OK|M1|Ann K.|GOLD|120|POINTS|Welcome Ann K."]]
    assert ident.handlers == ["IDENT_OK"] and ident.saw("Welcome Ann K. - 120 pts")
    check = station.check
    assert check is not None and check.info_lines == ["Member Ann K.", "Points balance 120"]

    refused = await station.press(2, ["NO-SUCH-CODE"])
    reason, message = pipe_values(refused)[1:]
    assert refused.handlers == ["COUPON_FAIL"] and reason == Reason.UNKNOWN_COUPON.value
    assert refused.saw(f"Loyalty / {message}")

    coupon = await station.press(2, ["WELCOME5"])
    ref = pipe_values(coupon)[1]
    assert coupon.macros == [
        [KeyValue(5, 101), "5.00", KEY_ENTER],
        [KeyValue(3, 9001), ref, KEY_ENTER],
    ]
    assert check.total == Decimal("15.40")
    status = await station.press(5)
    assert status.saw(f"Gateway {__version__} STANDALONE")

    final = await station.tender(1)
    assert final is not None and final.handlers == ["POST_OK"]
    assert final.sent[0][-1] == ref  # the coupon's ref went back in the POST
    values = pipe_values(final)
    assert values[:3] == ["POST_OK", "15", "135"]
    assert [job.lines for job in final.printed] == [["LOYALTY", *values[5:]]]
    assert receipt_line("Points balance", "135") in values


# ---- the scenarios, against the real gateway ----------------------------------------------------

SCENARIOS = PLUGIN.parent / "scenarios"


@pytest.mark.parametrize(
    ("name", "events"),
    [
        ("visit", ["begin_check", "inq : 5", "inq : 1", "inq : 2", "final_tender"]),
        (
            "cancelled",
            [
                *("begin_check", "inq : 1", "inq : 2", "trans_cncl"),
                *("begin_check", "inq : 1", "inq : 2", "final_tender"),
            ],
        ),
        (
            "voided_discount",
            ["begin_check", "inq : 1", "inq : 2", "dtl_changed", "dtl_changed", "final_tender"],
        ),
        ("lottery", ["begin_check", "inq : 1", "final_tender"]),
    ],
)
async def test_the_scenarios_hold_against_the_real_gateway(
    styled_gateway: RunningGateway, name: str, events: list[str]
) -> None:
    """Once per reply style: the same script, the same expectations."""
    scenario = load_scenario(SCENARIOS / f"{name}.yaml")
    port = styled_gateway.port
    result = await run_scenario(SCRIPT, scenario, "127.0.0.1", port, clock=lambda: AT)
    assert result.problems == []
    runs = result.station.runs
    assert [run.event for run in runs] == events
    assert all(run.outcome.exit == "normal" for run in runs)
    assert all(run.warnings == [] for run in runs)
    pipe = styled_gateway.responder.reply_style == "pipe"
    assert (reply_shapes(runs) == {1}) is pipe  # the style was the one on the wire


def _frames(buffer: bytearray) -> list[bytes]:
    frames = []
    while (end := buffer.find(b"\x04")) >= 0:
        frames.append(bytes(buffer[: end + 1]))
        del buffer[: end + 1]
    return frames


def _parse(frame: bytes) -> tuple[bytes, bytes, list[str]]:
    """source id, seq, fields of a SIM frame (DESIGN.md section 2)."""
    stx = frame.index(b"\x02")
    body = frame[stx + 2 : frame.rindex(b"\x03")]
    return frame[frame.index(b"\x01") + 1 : stx], body[:2], body[3:].decode().split("\x1c")


@contextlib.asynccontextmanager
async def losing(command: str, port: int) -> AsyncIterator[tuple[int, list[list[str]]]]:
    """A TCP proxy in front of the gateway at `port` that forwards every frame but those whose
    command is `command`: the register never gets a reply to them."""
    lost: list[list[str]] = []

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)

        async def down() -> None:
            with contextlib.suppress(ConnectionError):
                while data := await up_reader.read(65536):
                    writer.write(data)
                    await writer.drain()

        replies = asyncio.create_task(down())
        buffer = bytearray()
        try:
            with contextlib.suppress(ConnectionError):
                while data := await reader.read(65536):
                    buffer += data
                    for frame in _frames(buffer):
                        fields = _parse(frame)[2]
                        if fields[0] == command:
                            lost.append(fields)
                            continue
                        up_writer.write(frame)
                        await up_writer.drain()
        finally:
            replies.cancel()
            up_writer.close()
            writer.close()

    server = await asyncio.start_server(relay, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], lost
    finally:
        server.close()
        await server.wait_closed()


async def test_the_post_timeout_scenario_holds_when_the_post_gets_no_reply(
    styled_gateway: RunningGateway,
) -> None:
    gateway = styled_gateway
    scenario = load_scenario(SCENARIOS / "post_timeout.yaml")
    async with losing("POST", gateway.port) as (port, lost):
        result = await run_scenario(SCRIPT, scenario, "127.0.0.1", port, clock=lambda: AT)
    assert result.problems == []
    assert [fields[:4] for fields in lost] == [["POST", "7", "1", "4751"]]
    final = result.station.runs[-1]
    assert final.event == "final_tender" and final.handlers == ["_TIMEOUT"]
    check = result.station.check
    assert check is not None and check.closed and check.info_lines == []
    # Run straight at the gateway, the same scenario's last expectations fail: the proxy is
    # what makes the reply time out.
    straight = await run_scenario(
        SCRIPT, load_scenario(SCENARIOS / "post_timeout.yaml"), "127.0.0.1", gateway.port,
        clock=lambda: AT,
    )  # fmt: skip
    assert straight.problems and all("step 7" in problem for problem in straight.problems)


def test_every_scenario_is_run_by_a_test() -> None:
    assert sorted(path.stem for path in SCENARIOS.glob("*.yaml")) == [
        "cancelled",
        "lottery",
        "offline",  # tests/test_isl_cli.py, with no gateway listening
        "post_timeout",
        "visit",
        "voided_discount",
    ]


async def test_only_the_coupon_whose_discount_line_was_voided_is_released(
    make_station: StationFactory,
) -> None:
    station = await member_at_lunch(make_station, CARD_M1)
    refs = {}
    for code in ("WELCOME5", "TENOFF"):
        reply = (await station.press(2, [code])).replies[0]
        assert reply is not None and reply[0] == "COUPON_OK"
        refs[code] = reply[1]
    void = await station.void(None, 101, "D")  # WELCOME5's amount discount
    assert void is not None and void.sent == [["COUPON_VOID", "7", "1001", refs["WELCOME5"]]]
    final = await station.tender(1)
    assert final is not None and final.sent[0][-1] == refs["TENOFF"]
