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
from conftest import RunningGateway

from gateway.domain.reasons import Reason
from gateway.service import receipt_line
from isl_plugin.islrun import (
    Discount,
    MenuItem,
    PosConfig,
    Register,
    SimLink,
    Station,
    StationOptions,
    parse_script,
)
from isl_plugin.islrun.values import KEY_ENTER, KeyValue

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
    assert check.info_lines == ["Member Ann K."]

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
    assert check.info_lines == post_ok[5:]  # every receipt line the gateway sent, in order
    # Points are earned on what the customer paid: 15.40 -> 15, and 120 + 15 on the receipt.
    assert post_ok[1:3] == ["15", "135"]
    assert receipt_line("Points this visit", "15") in check.info_lines
    assert receipt_line("Points balance", "135") in check.info_lines
    assert check.info_lines[0] == receipt_line("Member", "Ann K.")

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
    station = make_station()
    ring_lunch(station)
    await station.press(1, [CARD_M1])
    coupon = await station.press(2, ["BDAY-M1"])
    assert coupon.saw("Free item")
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
    assert check.info_lines == ["Loyalty points not recorded"]


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
    station = make_station()
    ring_lunch(station)
    await station.press(1, [CARD_M1])
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
    assert station.check is not None
    assert station.check.info_lines == post_ok[5:]
    assert receipt_line("Wallet points", "20") in station.check.info_lines

    ring_lunch(station, 1002)
    again = await station.press(1, [CARD_M1])
    assert again.saw("Welcome Ann K. - lottery")
    leave = await station.press(4, ["0"])
    assert leave.sent[0][4] == "N" and leave.saw("Lottery: member left")


async def test_a_minor_cannot_consent_and_sees_why(make_station: StationFactory) -> None:
    station = make_station()
    ring_lunch(station)
    await station.press(1, [CARD_M3])
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
    station = make_station()
    ring_lunch(station)
    await station.press(1, [CARD_M5])
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

    ring_lunch(station, 1002)
    await station.press(1, [CARD_M5])
    reuse = await station.press(2, ["REWARD-M5"])
    assert reuse.handlers == ["COUPON_OK"]


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
    assert run.saw("pms9 v1.0.0 timeout 5 s / Gateway ")
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
