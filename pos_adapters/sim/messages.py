"""The SIM application messages: fields of a request -> a service call -> fields of the reply.

Transport-neutral: TCP and serial hand in decoded frame fields, MQTT hands in the same fields by
name. Anything malformed is `ERROR BAD_FIELD` (naming the field) or `ERROR UNKNOWN_COMMAND` and
executes nothing; business refusals come back from the service as `*_FAIL`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.domain.models import (
    ConsentOk,
    ConsentRequest,
    CouponOk,
    CouponRequest,
    CouponVoidOk,
    CouponVoidRequest,
    IdentOk,
    IdentRequest,
    Item,
    Pong,
    PostOk,
    PostRequest,
    Refusal,
)
from gateway.domain.money import parse_amount
from gateway.domain.reasons import Reason
from gateway.service import Gateway

Request = IdentRequest | CouponRequest | CouponVoidRequest | ConsentRequest | PostRequest | None

# Field names per command, in wire order; MQTT uses the same names as JSON keys.
FIELDS: dict[str, tuple[str, ...]] = {
    "PING": (),
    "IDENT": ("wsid", "rvc", "check", "token"),
    "COUPON": ("wsid", "check", "member_ref", "code", "subtotal"),
    "COUPON_VOID": ("wsid", "check", "coupon_ref"),
    "CONSENT": ("wsid", "member_ref", "program", "consent"),
    "POST": (
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
}

_DIGITS = re.compile(r"[0-9]{1,9}")
_QTY = re.compile(r"-?[0-9]{1,6}(?:\.[0-9]{1,3})?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_ITEMS = 500
MAX_TEXT = 512


class BadRequest(Exception):
    """A request that does not parse; answered `ERROR <reason> <message>`."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class ParseContext:
    decimals: int  # of the store currency
    latest_business_date: Callable[[], dt.date]
    # Told of each business date refused as later than tomorrow: a clock that is behind the
    # registers' refuses every check, so the service counts it and raises an alarm.
    future_business_date: Callable[[dt.date], None] | None = None


def _bad(name: str, why: str) -> BadRequest:
    return BadRequest(Reason.BAD_FIELD, f"{name}: {why}"[:80])


def _number(values: dict[str, str], name: str, low: int, high: int) -> int:
    text = values[name]
    if not _DIGITS.fullmatch(text):
        raise _bad(name, "digits expected")
    number = int(text)
    if not low <= number <= high:
        raise _bad(name, f"must be {low}..{high}")
    return number


def _text(values: dict[str, str], name: str, *, required: bool, limit: int = MAX_TEXT) -> str:
    text = values[name]
    if _CONTROL.search(text):
        raise _bad(name, "control character")
    if required and not text:
        raise _bad(name, "empty")
    if len(text) > limit:
        raise _bad(name, f"longer than {limit}")
    return text


def _amount(values: dict[str, str], name: str, decimals: int) -> int:
    try:
        return parse_amount(values[name], decimals)
    except ValueError as error:
        raise _bad(name, str(error)) from None


def _business_date(values: dict[str, str], ctx: ParseContext) -> dt.date:
    text = values["business_date"]
    if not re.fullmatch(r"[0-9]{8}", text):
        raise _bad("business_date", "YYYYMMDD expected")
    try:
        date = dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        raise _bad("business_date", "not a real date") from None
    if date > ctx.latest_business_date():
        if ctx.future_business_date is not None:
            ctx.future_business_date(date)
        raise _bad("business_date", "later than tomorrow")
    return date


def parse_items(text: str, decimals: int) -> tuple[Item, ...]:
    """`qty*object*total;...` -> items. Raises ValueError naming the entry that is wrong."""
    if not text:
        return ()
    entries = text.split(";")
    if len(entries) > MAX_ITEMS:
        raise ValueError(f"more than {MAX_ITEMS} items")
    items = []
    for number, entry in enumerate(entries, start=1):
        parts = entry.split("*")
        if len(parts) != 3:
            raise ValueError(f"item {number}: qty*object*total expected")
        qty, obj, total = parts
        if not _QTY.fullmatch(qty):
            raise ValueError(f"item {number}: bad quantity")
        if not _DIGITS.fullmatch(obj):
            raise ValueError(f"item {number}: bad object number")
        items.append(Item(parse_amount(qty, 3), int(obj), parse_amount(total, decimals)))
    return tuple(items)


def _member_ref(values: dict[str, str], name: str = "member_ref") -> str | None:
    return _text(values, name, required=False, limit=64) or None


def parse_request(command: str, values: dict[str, str], ctx: ParseContext) -> Request:
    """Validate named fields into a request (None for PING). Raises BadRequest."""
    d = ctx.decimals
    if command == "PING":
        return None
    if command == "IDENT":
        return IdentRequest(
            wsid=_number(values, "wsid", 1, 9999),
            rvc=_number(values, "rvc", 0, 999999999),
            check=_number(values, "check", 0, 99999999),
            token=_text(values, "token", required=True),
        )
    if command == "COUPON":
        return CouponRequest(
            wsid=_number(values, "wsid", 1, 9999),
            check=_number(values, "check", 0, 99999999),
            member_id=_member_ref(values),
            code=_text(values, "code", required=True, limit=128),
            subtotal=_amount(values, "subtotal", d),
        )
    if command == "COUPON_VOID":
        return CouponVoidRequest(
            wsid=_number(values, "wsid", 1, 9999),
            check=_number(values, "check", 0, 99999999),
            coupon_ref=_text(values, "coupon_ref", required=True, limit=64),
        )
    if command == "CONSENT":
        program = values["program"]
        if program != "LOTTERY":
            raise _bad("program", "LOTTERY expected")
        consent = values["consent"]
        if consent not in ("Y", "N"):
            raise _bad("consent", "Y or N expected")
        member = _member_ref(values)
        if member is None:
            raise _bad("member_ref", "empty")
        return ConsentRequest(
            wsid=_number(values, "wsid", 1, 9999),
            member_id=member,
            program="LOTTERY",
            join=consent == "Y",
        )
    if command == "POST":
        wsid = _number(values, "wsid", 1, 9999)
        rvc = _number(values, "rvc", 0, 999999999)
        check = _number(values, "check", 1, 99999999)
        business_date = _business_date(values, ctx)
        member = _member_ref(values)
        subtotal = _amount(values, "subtotal", d)
        total = _amount(values, "total", d)
        try:
            items = parse_items(_text(values, "items", required=False, limit=60000), d)
        except ValueError as error:
            raise _bad("items", str(error)) from None
        refs_text = _text(values, "coupon_refs", required=False, limit=4096)
        refs = tuple(r for r in refs_text.split(";") if r) if refs_text else ()
        return PostRequest(wsid, rvc, check, business_date, member, subtotal, total, items, refs)
    raise BadRequest(Reason.UNKNOWN_COMMAND, f"unknown command {command[:20]!r}")


def parse_fields(fields: Sequence[str], ctx: ParseContext) -> tuple[str, Request]:
    """Positional SIM fields (command first) -> (command, request)."""
    command = fields[0] if fields else ""
    names = FIELDS.get(command)
    if names is None:
        raise BadRequest(Reason.UNKNOWN_COMMAND, f"unknown command {command[:20]!r}")
    given = len(fields) - 1
    if given != len(names):
        raise BadRequest(Reason.BAD_FIELD, f"{command} takes {len(names)} fields, got {given}")
    return command, parse_request(command, dict(zip(names, fields[1:], strict=True)), ctx)


# ---- replies ----------------------------------------------------------------------------------

Answer = Pong | IdentOk | CouponOk | CouponVoidOk | ConsentOk | PostOk | Refusal

FAIL_NAMES = {
    "IDENT": "IDENT_FAIL",
    "COUPON": "COUPON_FAIL",
    "CONSENT": "CONSENT_FAIL",
    "POST": "POST_FAIL",
    "COUPON_VOID": "ERROR",  # the table answers a void it cannot do with ERROR
    "PING": "ERROR",
}


def _opt(number: int | None) -> str:
    return "" if number is None else str(number)


def reply_fields(command: str, answer: Answer) -> list[str]:
    """The reply's fields, its first naming the ISL `event rxmsg` that handles it."""
    if isinstance(answer, Refusal):
        return [FAIL_NAMES[command], answer.reason.value, answer.message]
    if isinstance(answer, Pong):
        return ["PONG", answer.state, answer.version]
    if isinstance(answer, IdentOk):
        return [
            "IDENT_OK",
            answer.member_id,
            answer.display_name,
            answer.tier,
            str(answer.points_balance),
            answer.earn_mode,
            answer.message,
        ]
    if isinstance(answer, CouponOk):
        return [
            "COUPON_OK",
            answer.coupon_ref,
            answer.kind,
            _opt(answer.pos_discount_object),
            answer.value,
            _opt(answer.item_object),
            answer.message,
        ]
    if isinstance(answer, CouponVoidOk):
        return ["COUPON_VOID_OK"]
    if isinstance(answer, ConsentOk):
        return ["CONSENT_OK"]
    return [
        "POST_OK",
        str(answer.points_earned),
        str(answer.points_balance),
        str(answer.tickets_earned),
        str(answer.wallet_points),
        *answer.receipt_lines,
    ]


def error_fields(reason: Reason | str, message: str) -> list[str]:
    return ["ERROR", str(reason), message]


async def execute(service: Gateway, command: str, request: Request) -> Answer:
    """Call the service method a command names."""
    if isinstance(request, IdentRequest):
        return await service.identify(request)
    if isinstance(request, CouponRequest):
        return await service.check_coupon(request)
    if isinstance(request, CouponVoidRequest):
        return await service.void_coupon(request)
    if isinstance(request, ConsentRequest):
        return await service.consent(request)
    if isinstance(request, PostRequest):
        return await service.post_check(request)
    return await service.ping()


# ---- reply fields by name (MQTT's JSON keys) ----------------------------------------------------

# The fields after a reply's first, by name, in wire order. MQTT sends them as JSON keys; the SIM
# frame sends them positionally. POST_OK's receipt lines (0 to 8 fields) are one list, always last.
RECEIPT_LINES = "receipt_lines"
_REFUSAL = ("reason", "message")
REPLY_FIELDS: dict[str, tuple[str, ...]] = {
    "PONG": ("state", "version"),
    "IDENT_OK": ("member_ref", "display_name", "tier", "points_balance", "earn_mode", "message"),
    "COUPON_OK": ("coupon_ref", "kind", "pos_discount_object", "value", "item_object", "message"),
    "COUPON_VOID_OK": (),
    "CONSENT_OK": (),
    "POST_OK": (
        "points_earned",
        "points_balance",
        "tickets_earned",
        "wallet_points",
        RECEIPT_LINES,
    ),
    "IDENT_FAIL": _REFUSAL,
    "COUPON_FAIL": _REFUSAL,
    "CONSENT_FAIL": _REFUSAL,
    "POST_FAIL": _REFUSAL,
    "ERROR": _REFUSAL,
}


def name_reply(fields: Sequence[str]) -> dict[str, str | list[str]]:
    """Positional reply fields -> {"reply": first field, name: value, ...}."""
    kind = fields[0]
    names = REPLY_FIELDS[kind]
    named: dict[str, str | list[str]] = {"reply": kind}
    for position, name in enumerate(names, start=1):
        if name == RECEIPT_LINES:
            named[name] = list(fields[position:])
        else:
            named[name] = fields[position] if position < len(fields) else ""
    return named


def unname_reply(named: dict[str, str | list[str]]) -> list[str]:
    """The inverse of `name_reply`: a named reply back to positional fields."""
    kind = named["reply"]
    assert isinstance(kind, str)
    fields = [kind]
    for name in REPLY_FIELDS[kind]:
        value = named.get(name, "")
        if isinstance(value, list):
            fields.extend(value)
        else:
            fields.append(value)
    return fields
