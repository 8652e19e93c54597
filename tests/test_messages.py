"""The command classes: one per register command, and the one table every transport reads.

What each command does is proven over every transport in tests/conformance; these tests hold the
table itself together, so a new command class cannot drift from the wire contract unnoticed.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from service_requests import consent_req, coupon_req, ident, post_req, void_req

from gateway.domain.models import (
    ConsentOk,
    CouponOk,
    CouponVoidOk,
    IdentOk,
    Item,
    Pong,
    PostOk,
    Refusal,
)
from gateway.domain.names import CommandName
from gateway.domain.reasons import Reason
from pos_adapters.sim.messages import (
    COMMANDS,
    ERROR,
    REPLIES,
    BadRequest,
    ParseContext,
    command_named,
    parse_fields,
)

CTX = ParseContext(decimals=2, latest_business_date=lambda: dt.date(2026, 11, 24))

# DESIGN.md section 2 and docs/protocol.md, written out: the request's fields after the command,
# the reply when it works and its fields, the reply to a refusal.
WIRE = {
    "PING": ((), "PONG", ("state", "version"), "ERROR"),
    "IDENT": (
        ("wsid", "rvc", "check", "token"),
        "IDENT_OK",
        ("member_ref", "display_name", "tier", "points_balance", "earn_mode", "message"),
        "IDENT_FAIL",
    ),
    "COUPON": (
        ("wsid", "check", "member_ref", "code", "subtotal"),
        "COUPON_OK",
        ("coupon_ref", "kind", "pos_discount_object", "value", "item_object", "message"),
        "COUPON_FAIL",
    ),
    "COUPON_VOID": (("wsid", "check", "coupon_ref"), "COUPON_VOID_OK", (), "ERROR"),
    "CONSENT": (("wsid", "member_ref", "program", "consent"), "CONSENT_OK", (), "CONSENT_FAIL"),
    "POST": (
        (
            "wsid",
            "rvc",
            "check",
            "business_date",
            "member_ref",
            "subtotal",
            "total",
            "items",
            "coupon_refs",
        ),
        "POST_OK",
        ("points_earned", "points_balance", "tickets_earned", "wallet_points", "receipt_lines"),
        "POST_FAIL",
    ),
}

# A well-formed request of each command, and what it parses to.
GOOD: dict[str, tuple[tuple[str, ...], Any]] = {
    "PING": ((), None),
    "IDENT": (
        ("7", "1", "1001", "6001000000000001"),
        ident("6001000000000001", wsid=7, rvc=1, check=1001),
    ),
    "COUPON": (("7", "0", "M1", "SAVE5", "20.40"), coupon_req("SAVE5", 0, "M1", 2040, wsid=7)),
    "COUPON_VOID": (("7", "1001", "C1"), void_req("C1", 1001, wsid=7)),
    "CONSENT": (("7", "M1", "LOTTERY", "N"), consent_req("M1", join=False, wsid=7)),
    "POST": (
        ("7", "1", "1001", "20261123", "", "20.40", "15.40", "2*1001*7.00;1*1002*13.40", "C1;C2"),
        post_req(
            1001,
            None,
            1540,
            subtotal=2040,
            items=(Item(2000, 1001, 700), Item(1000, 1002, 1340)),
            coupons=("C1", "C2"),
            wsid=7,
            rvc=1,
            date=dt.date(2026, 11, 23),
        ),
    ),
}

# An answer of each command that worked, and its reply's fields.
OK: dict[str, tuple[Any, list[str]]] = {
    "PING": (Pong("ONLINE", "1.2.0"), ["PONG", "ONLINE", "1.2.0"]),
    "IDENT": (
        IdentOk("M1", "Ann K.", "GOLD", 120, "POINTS", "Welcome Ann K."),
        ["IDENT_OK", "M1", "Ann K.", "GOLD", "120", "POINTS", "Welcome Ann K."],
    ),
    "COUPON": (
        CouponOk("C1", "ITEM", None, "", 4711, "Free item"),
        ["COUPON_OK", "C1", "ITEM", "", "", "4711", "Free item"],
    ),
    "COUPON_VOID": (CouponVoidOk("C1"), ["COUPON_VOID_OK"]),
    "CONSENT": (ConsentOk("M1", "lottery"), ["CONSENT_OK"]),
    "POST": (
        PostOk(15, 135, 0, 0, ("Member Ann K.", "Points 15")),
        ["POST_OK", "15", "135", "0", "0", "Member Ann K.", "Points 15"],
    ),
}


def test_every_command_name_has_one_class_and_the_table_is_the_wire_contract() -> None:
    assert set(COMMANDS) == set(CommandName) == set(WIRE)
    for name, command in COMMANDS.items():
        assert command is command_named(name)
        assert command.name == name
        fields, ok, ok_fields, fail = WIRE[name]
        assert command.names == fields
        assert (command.ok, tuple(f.name for f in command.ok_fields), command.fail) == (
            ok,
            ok_fields,
            fail,
        )


def test_replies_name_every_first_field_a_reply_can_have() -> None:
    expected = {ok: ok_fields for _, ok, ok_fields, _ in WIRE.values()}
    expected |= {fail: ("reason", "message") for *_, fail in WIRE.values()}
    assert {kind: tuple(f.name for f in fields) for kind, fields in REPLIES.items()} == expected
    # Only a list of fields may take the rest of a reply, and only as its last field.
    for fields in REPLIES.values():
        assert not any(f.rest for f in fields[:-1])


@pytest.mark.parametrize("name", list(WIRE))
def test_a_good_request_parses_to_the_services_request(name: str) -> None:
    values, request = GOOD[name]
    command, parsed = parse_fields([name, *values], CTX)
    assert command is COMMANDS[name]
    assert parsed == request


@pytest.mark.parametrize(
    ("name", "position"),
    [(name, position) for name, (fields, *_) in WIRE.items() for position in range(len(fields))],
)
def test_each_field_is_checked_by_the_rule_of_its_position(name: str, position: int) -> None:
    # A bell character breaks every rule; the refusal must name the field at that position.
    values = list(GOOD[name][0])
    values[position] = "\x07"
    with pytest.raises(BadRequest) as refused:
        parse_fields([name, *values], CTX)
    assert refused.value.reason is Reason.BAD_FIELD
    assert refused.value.message.startswith(f"{WIRE[name][0][position]}: ")


@pytest.mark.parametrize("name", list(WIRE))
def test_a_reply_has_the_fields_its_names_say(name: str) -> None:
    command = COMMANDS[name]
    answer, fields = OK[name]
    assert command.reply(answer) == fields
    refusal = Refusal(Reason.STORAGE_FULL, "Loyalty storage full - call IT")
    assert command.reply(refusal) == [WIRE[name][3], "STORAGE_FULL", refusal.message]


def test_consent_checks_program_and_choice_before_the_other_fields() -> None:
    with pytest.raises(BadRequest, match=r"^program: LOTTERY expected$"):
        parse_fields(["CONSENT", "0", "", "POINTS", "Y"], CTX)
    with pytest.raises(BadRequest, match=r"^consent: Y or N expected$"):
        parse_fields(["CONSENT", "0", "", "LOTTERY", "yes"], CTX)
    with pytest.raises(BadRequest, match=r"^member_ref: empty$"):
        parse_fields(["CONSENT", "0", "", "LOTTERY", "Y"], CTX)


@pytest.mark.parametrize(
    ("fields", "reason", "message"),
    [
        (["NOPE"], Reason.UNKNOWN_COMMAND, "unknown command 'NOPE'"),
        (["ping"], Reason.UNKNOWN_COMMAND, "unknown command 'ping'"),
        (["X" * 30], Reason.UNKNOWN_COMMAND, f"unknown command {'X' * 20!r}"),
        (["PING", ""], Reason.BAD_FIELD, "PING takes 0 fields, got 1"),
        (["IDENT", "7", "1", "1001"], Reason.BAD_FIELD, "IDENT takes 4 fields, got 3"),
    ],
)
def test_unknown_commands_and_wrong_field_counts_are_refused_before_any_field(
    fields: list[str], reason: Reason, message: str
) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_fields(fields, CTX)
    assert (refused.value.reason, refused.value.message) == (reason, message)


def test_a_refused_void_is_an_error_reply() -> None:
    # The ISL script handles a void it cannot do in its ERROR event.
    assert COMMANDS["COUPON_VOID"].fail == ERROR == "ERROR"
