"""The same behaviour from every register transport (TCP, serial, MQTT): each test is written once,
against `Register`, and runs on all three with the real service and a store on disk."""

from __future__ import annotations

import asyncio

import pytest
from conftest import member_record
from sales import CARD, DATE, one_sale_each

from gateway import __version__
from gateway.service import Gateway
from gateway.store.store import Store

from .harness import Harness


async def test_every_command_answers_with_real_data(transport: Harness) -> None:
    (ws,) = await transport.registers(7)

    assert await ws.request("PING") == ["PONG", "STANDALONE", __version__]

    ident = await ws.request("IDENT", "7", "1", "0", CARD)
    assert ident == ["IDENT_OK", "M1", "Ann K.", "GOLD", "120", "POINTS", "Welcome Ann K."]

    coupon = await ws.request("COUPON", "7", "1001", "M1", "WELCOME5", "27.40")
    assert coupon[0] == "COUPON_OK"
    assert coupon[2:6] == ["AMOUNT", "101", "5.00", ""]

    percent = await ws.request("COUPON", "7", "1001", "", "TENOFF", "27.40")
    assert percent[0] == "COUPON_OK" and percent[2:5] == ["PERCENT", "103", "10"]
    assert await ws.request("COUPON_VOID", "7", "1001", percent[1]) == ["COUPON_VOID_OK"]

    item = await ws.request("COUPON", "7", "1001", "M1", "BDAY-M1", "27.40")
    assert item[0] == "COUPON_OK" and item[2:6] == ["ITEM", "102", "", "5001"]

    assert await ws.request("CONSENT", "7", "M5", "LOTTERY", "Y") == ["CONSENT_OK"]

    post = await ws.request(
        "POST", "7", "1", "1001", DATE, "M1", "27.40", "22.40",
        "2*1001*7.00;1*1002*13.40;-1*1003*-1.00", f"{coupon[1]};{item[1]}",
    )  # fmt: skip
    assert post[:5] == ["POST_OK", "22", "142", "0", "0"]
    assert 1 <= len(post[5:]) <= 8 and all(len(line) <= 32 for line in post[5:])
    assert any("142" in line for line in post[5:])


async def test_business_refusals_are_fail_replies(transport: Harness) -> None:
    (ws,) = await transport.registers(3)
    refusals = [
        (("IDENT", "3", "1", "0", "0000"), ["IDENT_FAIL", "UNKNOWN_MEMBER"]),
        (("COUPON", "3", "5", "", "NOPE", "9.00"), ["COUPON_FAIL", "UNKNOWN_COUPON"]),
        (("COUPON", "3", "5", "", "OLD2025", "9.00"), ["COUPON_FAIL", "EXPIRED"]),
        (("COUPON", "3", "5", "", "WELCOME5", "9.00"), ["COUPON_FAIL", "MIN_SPEND"]),
        (("CONSENT", "3", "M3", "LOTTERY", "Y"), ["CONSENT_FAIL", "NOT_ELIGIBLE"]),
        (("COUPON_VOID", "3", "5", "CNOSUCHREF"), ["ERROR", "UNKNOWN_COUPON"]),
    ]
    for fields, expected in refusals:
        reply = await ws.request(*fields)
        assert reply[:2] == expected, fields
        assert len(reply) == 3 and reply[2]  # a message for the cashier


async def test_a_pipe_inside_a_value_never_cuts_it(transport: Harness, store: Store) -> None:
    """Each value a field of its own (and JSON) carry a `|` as it is; the pipe reply style, whose
    register cuts the reply at every `|`, gets a `/` in its place, counted."""
    await store.upsert_members([member_record("M9", display_name="Ann | Bob")])
    (ws,) = await transport.registers(7)

    ident = await ws.request("IDENT", "7", "1", "0", "CARD-M9")

    name = "Ann / Bob" if transport.style == "pipe" else "Ann | Bob"
    assert ident == ["IDENT_OK", "M9", name, "", "0", "POINTS", f"Welcome {name}"]
    assert transport.pipe_replaced() == (2 if transport.style == "pipe" else 0)


# ---- retransmission / redelivery: answered from the cache, never executed twice ---------------


async def test_a_resent_post_gets_the_first_reply_and_earns_once(
    transport: Harness, store: Store, service: Gateway
) -> None:
    (ws,) = await transport.registers(9)
    post = ["POST", "9", "1", "2001", DATE, "M1", "10.00", "10.00", "1*1001*10.00", ""]

    first = await ws.request(*post)
    again = await ws.resend(*post)

    assert first[:3] == ["POST_OK", "10", "130"]
    assert again == first
    assert transport.replayed() == 1
    assert service.stats.requests[("POST", "ok")] == 1
    assert await store.ledger_total("M1") == (10, 0, 0)


async def test_a_resent_coupon_keeps_one_reservation(transport: Harness, store: Store) -> None:
    (ws,) = await transport.registers(9)
    coupon = ("COUPON", "9", "0", "M5", "REWARD-M5", "5.00")

    first = await ws.request(*coupon)
    again = await ws.resend(*coupon)

    # Had the resend run again, check 0 would reserve anew: the single-use coupon is RESERVED.
    assert first[0] == "COUPON_OK" and again == first
    assert (await store.counts()).live_reservations == 1


async def test_the_same_fields_sent_as_a_new_request_run_again(
    transport: Harness, service: Gateway
) -> None:
    (ws,) = await transport.registers(4)
    first = await ws.request("IDENT", "4", "1", "0", CARD)
    second = await ws.request("IDENT", "4", "1", "0", CARD)
    assert first == second
    assert transport.replayed() == 0
    assert service.stats.requests[("IDENT", "ok")] == 2


# ---- malformed input: a clear reply, counted, nothing executed, the register still served ------

MALFORMED: list[tuple[str, tuple[str, ...], str]] = [
    ("unknown command", ("FLY",), "UNKNOWN_COMMAND"),
    ("missing field", ("IDENT", "7", "1", "0"), "BAD_FIELD"),
    ("extra field", ("PING", "x"), "BAD_FIELD"),
    ("amount 12.5.0", ("COUPON", "7", "1", "", "TENOFF", "12.5.0"), "BAD_FIELD"),
    ("wsid 0", ("IDENT", "0", "1", "0", CARD), "BAD_FIELD"),
    ("date 20261341", ("POST", "7", "1", "5", "20261341", "", "1.00", "1.00", "", ""), "BAD_FIELD"),
    ("items", ("POST", "7", "1", "5", DATE, "", "1.00", "1.00", "1*x*1.00", ""), "BAD_FIELD"),
]


@pytest.mark.parametrize(
    ("fields", "reason"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
async def test_a_malformed_request_gets_error_and_runs_nothing(
    transport: Harness, service: Gateway, fields: tuple[str, ...], reason: str
) -> None:
    # wsid 0 cannot be a topic level; the register for it is 7 (the body's wsid is checked too).
    (ws,) = await transport.registers(7)
    reply = await ws.request(*fields)
    assert reply[:2] == ["ERROR", reason]
    assert len(reply) == 3 and reply[2]
    assert transport.errors(reason) == 1
    assert service.stats.requests.total() == 0
    assert (await ws.request("PING"))[0] == "PONG"


async def test_a_damaged_message_gets_error_and_runs_nothing(
    transport: Harness, service: Gateway
) -> None:
    (ws,) = await transport.registers(5)
    reply = await ws.send_damaged()
    assert reply[:2] == ["ERROR", transport.damaged_reason] and reply[2]
    assert transport.errors(transport.damaged_reason) == 1
    assert service.stats.requests.total() == 0
    assert (await ws.request("PING"))[0] == "PONG"


# ---- load -------------------------------------------------------------------------------------


async def test_twenty_registers_at_once(transport: Harness, store: Store) -> None:
    registers = await transport.registers(*range(1, 21))
    await one_sale_each({ws.wsid: ws for ws in registers})
    assert await store.ledger_total("M1") == (sum(range(1, 21)), 0, 0)


# ---- the transport's own failure --------------------------------------------------------------


async def test_after_the_transport_fails_and_recovers_a_resend_is_not_executed_twice(
    transport: Harness, store: Store, service: Gateway
) -> None:
    """Serial: the port disappears and comes back. MQTT: the broker restarts. TCP: the connection
    is reset. The reply to a POST sent before the failure is replayed after it; nothing earns twice,
    and new requests are served."""
    (ws,) = await transport.registers(6)
    post = ["POST", "6", "1", "3001", DATE, "M1", "12.00", "12.00", "", ""]
    first = await ws.request(*post)

    await transport.fail()
    await transport.recover()

    assert await ws.resend(*post) == first
    assert transport.replayed() == 1
    ident = await ws.request("IDENT", "6", "1", "0", CARD)
    assert ident[:5] == ["IDENT_OK", "M1", "Ann K.", "GOLD", "132"]
    assert service.stats.requests[("POST", "ok")] == 1
    assert await store.ledger_total("M1") == (12, 0, 0)


async def test_every_register_is_served_after_the_transport_recovers(transport: Harness) -> None:
    registers = await transport.registers(11, 12, 13)
    await transport.fail()
    await transport.recover()
    replies = await asyncio.gather(*(ws.request("PING") for ws in registers))
    assert [reply[0] for reply in replies] == ["PONG"] * 3
