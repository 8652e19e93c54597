"""The register commands, one class each: request fields and rules, the service call, the reply.

Transport-neutral: TCP and serial hand in a frame's fields (`parse_fields`); MQTT looks the command
up (`command_named`), puts its JSON keys in wire order (`Command.names`) and hands them to
`Command.parse`. Both then `run` the command and turn its answer into the reply's fields
(`Command.reply`); MQTT names those by `REPLIES`. Anything malformed is `ERROR BAD_FIELD` (naming
the field) or `ERROR UNKNOWN_COMMAND` and executes nothing; business refusals come back from the
service as `*_FAIL`.

Like bellows' frame classes, each command class owns everything about it; `COMMANDS` is the one
table the transports read. Adding a command: a `CommandName`, a class here, a line in `COMMANDS`,
the service method it calls, the ISL script's handlers and docs/protocol.md ("Adding a command").
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from gateway.domain.models import (
    ConsentOk,
    ConsentRequest,
    CouponOk,
    CouponRequest,
    CouponVoidOk,
    CouponVoidRequest,
    IdentOk,
    IdentRequest,
    Pong,
    PostOk,
    PostRequest,
    Refusal,
)
from gateway.domain.names import CommandName
from gateway.domain.reasons import Reason
from pos_adapters.sim.fields import (
    CHECK,
    MAX_TEXT,
    MEMBER_REF,
    OPEN_CHECK,
    RVC,
    SUBTOTAL,
    WSID,
    Amount,
    BadRequest,
    BusinessDate,
    Choice,
    Items,
    ParseContext,
    RefList,
    Rule,
    Text,
)

if TYPE_CHECKING:
    from gateway.service import Gateway

__all__ = [
    "COMMANDS",
    "ERROR",
    "MAX_TEXT",
    "REFUSAL_FIELDS",
    "REPLIES",
    "BadRequest",
    "Command",
    "Consent",
    "Coupon",
    "CouponVoid",
    "Ident",
    "ParseContext",
    "Ping",
    "Post",
    "ReplyField",
    "command_named",
    "error_fields",
    "parse_fields",
]

RequestT = TypeVar("RequestT")
OkT = TypeVar("OkT")

ERROR = "ERROR"


@dataclass(frozen=True, slots=True)
class ReplyField:
    """One field of a reply after its first, by name (MQTT's JSON key) and kind."""

    name: str
    count: bool = False  # a whole number: MQTT sends it as a JSON integer
    optional: bool = False  # empty when there is none: MQTT sends null then
    rest: bool = False  # the reply's remaining fields, 0 or more, as one list (always last)


REFUSAL_FIELDS = (ReplyField("reason"), ReplyField("message"))


class Command(Generic[RequestT, OkT]):
    """One register command. A subclass sets the class attributes and writes `parse`, `run` and
    `ok_values`; the rest is shared. Classes are used as they are, never instantiated."""

    name: ClassVar[CommandName]  # the request's first field
    fields: ClassVar[tuple[Rule[Any], ...]]  # the request's fields after the name, in wire order
    names: ClassVar[tuple[str, ...]]  # their names (derived from `fields`)
    ok: ClassVar[str]  # the reply's first field when the command worked: its ISL event
    ok_fields: ClassVar[tuple[ReplyField, ...]]  # that reply's further fields, in wire order
    fail: ClassVar[str]  # the reply's first field for a refusal (its fields: REFUSAL_FIELDS)
    # Answered from memory, without waiting for a commit: the transports answer it inside
    # their read callback (`answer_now`) instead of starting a task for it.
    immediate: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.names = tuple(rule.name for rule in cls.fields)

    @classmethod
    def parse(cls, values: Sequence[str], ctx: ParseContext) -> RequestT:
        """The request's fields after the name, one per rule in `fields` (the caller has checked
        the count) -> the service's request. Checks each field with its rule, in the order the
        command needs; raises BadRequest for the first that breaks one."""
        raise NotImplementedError

    @staticmethod
    def run(service: Gateway, request: RequestT) -> Awaitable[OkT | Refusal]:
        """The service call the command makes."""
        raise NotImplementedError

    @staticmethod
    def answer_now(service: Gateway, request: RequestT) -> OkT | Refusal:
        """The same service call, answered at once (only for an `immediate` command)."""
        raise NotImplementedError

    @staticmethod
    def ok_values(answer: OkT) -> list[str]:
        """The fields of the `ok` reply after its first, as `ok_fields` names them."""
        raise NotImplementedError

    @classmethod
    def reply(cls, answer: OkT | Refusal) -> list[str]:
        """The reply's fields, its first naming the ISL `event rxmsg` that handles it."""
        if isinstance(answer, Refusal):
            return [cls.fail, answer.reason.value, answer.message]
        values = cls.ok_values(answer)
        values.insert(0, cls.ok)  # cheaper than a second list; replies are on every request
        return values


AnyCommand = type[Command[Any, Any]]


def _opt(number: int | None) -> str:
    return "" if number is None else str(number)


class Ping(Command[None, Pong]):
    """Is the gateway there, and is central?"""

    name = CommandName.PING
    fields = ()
    ok = "PONG"
    ok_fields = (ReplyField("state"), ReplyField("version"))
    fail = ERROR

    @classmethod
    def parse(cls, values: Sequence[str], ctx: ParseContext) -> None:
        return None

    immediate = True

    @staticmethod
    def run(service: Gateway, request: None) -> Awaitable[Pong]:
        return service.ping()

    @staticmethod
    def answer_now(service: Gateway, request: None) -> Pong:
        return service.ping_now()

    @staticmethod
    def ok_values(answer: Pong) -> list[str]:
        return [answer.state, answer.version]


class Ident(Command[IdentRequest, IdentOk]):
    """Who is this card, QR code or signed app token?"""

    name = CommandName.IDENT
    TOKEN = Text("token", limit=MAX_TEXT)
    fields = (WSID, RVC, OPEN_CHECK, TOKEN)
    ok = "IDENT_OK"
    ok_fields = (
        ReplyField("member_ref"),
        ReplyField("display_name"),
        ReplyField("tier"),
        ReplyField("points_balance", count=True),
        ReplyField("earn_mode"),
        ReplyField("message"),
    )
    fail = "IDENT_FAIL"

    @classmethod
    def parse(cls, values: Sequence[str], ctx: ParseContext) -> IdentRequest:
        wsid, rvc, check, token = values
        return IdentRequest(
            wsid=WSID.parse(wsid, ctx),
            rvc=RVC.parse(rvc, ctx),
            check=OPEN_CHECK.parse(check, ctx),
            token=cls.TOKEN.parse(token, ctx),
        )

    immediate = True

    @staticmethod
    def run(service: Gateway, request: IdentRequest) -> Awaitable[IdentOk | Refusal]:
        return service.identify(request)

    @staticmethod
    def answer_now(service: Gateway, request: IdentRequest) -> IdentOk | Refusal:
        return service.identify_now(request)

    @staticmethod
    def ok_values(answer: IdentOk) -> list[str]:
        return [
            answer.member_id,
            answer.display_name,
            answer.tier,
            str(answer.points_balance),
            answer.earn_mode,
            answer.message,
        ]


class Coupon(Command[CouponRequest, CouponOk]):
    """May this check use this coupon? A yes reserves it for the check."""

    name = CommandName.COUPON
    CODE = Text("code", limit=128)
    fields = (WSID, OPEN_CHECK, MEMBER_REF, CODE, SUBTOTAL)
    ok = "COUPON_OK"
    ok_fields = (
        ReplyField("coupon_ref"),
        ReplyField("kind"),
        ReplyField("pos_discount_object", count=True, optional=True),
        ReplyField("value", optional=True),
        ReplyField("item_object", count=True, optional=True),
        ReplyField("message"),
    )
    fail = "COUPON_FAIL"

    @classmethod
    def parse(cls, values: Sequence[str], ctx: ParseContext) -> CouponRequest:
        wsid, check, member_ref, code, subtotal = values
        return CouponRequest(
            wsid=WSID.parse(wsid, ctx),
            check=OPEN_CHECK.parse(check, ctx),
            member_id=MEMBER_REF.parse(member_ref, ctx),
            code=cls.CODE.parse(code, ctx),
            subtotal=SUBTOTAL.parse(subtotal, ctx),
        )

    @staticmethod
    def run(service: Gateway, request: CouponRequest) -> Awaitable[CouponOk | Refusal]:
        return service.check_coupon(request)

    @staticmethod
    def ok_values(answer: CouponOk) -> list[str]:
        return [
            answer.coupon_ref,
            answer.kind,
            _opt(answer.pos_discount_object),
            answer.value,
            _opt(answer.item_object),
            answer.message,
        ]


class CouponVoid(Command[CouponVoidRequest, CouponVoidOk]):
    """The check no longer uses this coupon: release its reservation."""

    name = CommandName.COUPON_VOID
    COUPON_REF = Text("coupon_ref", limit=64)
    fields = (WSID, OPEN_CHECK, COUPON_REF)
    ok = "COUPON_VOID_OK"
    ok_fields = ()
    fail = ERROR  # the ISL script answers a void it cannot do with ERROR

    @classmethod
    def parse(cls, values: Sequence[str], ctx: ParseContext) -> CouponVoidRequest:
        wsid, check, coupon_ref = values
        return CouponVoidRequest(
            wsid=WSID.parse(wsid, ctx),
            check=OPEN_CHECK.parse(check, ctx),
            coupon_ref=cls.COUPON_REF.parse(coupon_ref, ctx),
        )

    @staticmethod
    def run(service: Gateway, request: CouponVoidRequest) -> Awaitable[CouponVoidOk | Refusal]:
        return service.void_coupon(request)

    @staticmethod
    def ok_values(answer: CouponVoidOk) -> list[str]:
        return []


class Consent(Command[ConsentRequest, ConsentOk]):
    """A member joins (Y) or leaves (N) the lottery."""

    name = CommandName.CONSENT
    MEMBER = Text("member_ref", limit=64)  # required here: whose consent it is
    PROGRAM = Choice("program", ("LOTTERY",), "LOTTERY expected")
    CONSENT = Choice("consent", ("Y", "N"), "Y or N expected")
    fields = (WSID, MEMBER, PROGRAM, CONSENT)
    ok = "CONSENT_OK"
    ok_fields = ()
    fail = "CONSENT_FAIL"

    @classmethod
    def parse(cls, values: Sequence[str], ctx: ParseContext) -> ConsentRequest:
        wsid, member_ref, program, consent = values
        # Not in wire order: program and consent first, so a request for another program is
        # refused as that whatever else is wrong with it.
        cls.PROGRAM.parse(program, ctx)
        join = cls.CONSENT.parse(consent, ctx) == "Y"
        member = cls.MEMBER.parse(member_ref, ctx)
        return ConsentRequest(
            wsid=WSID.parse(wsid, ctx), member_id=member, program="LOTTERY", join=join
        )

    @staticmethod
    def run(service: Gateway, request: ConsentRequest) -> Awaitable[ConsentOk | Refusal]:
        return service.consent(request)

    @staticmethod
    def ok_values(answer: ConsentOk) -> list[str]:
        return []


class Post(Command[PostRequest, PostOk]):
    """The check is paid: earn on it, redeem its coupons. Idempotent on the check."""

    name = CommandName.POST
    BUSINESS_DATE = BusinessDate("business_date")
    TOTAL = Amount("total")
    ITEMS = Items("items")
    COUPON_REFS = RefList("coupon_refs")
    fields = (
        WSID,
        RVC,
        CHECK,
        BUSINESS_DATE,
        MEMBER_REF,
        SUBTOTAL,
        TOTAL,
        ITEMS,
        COUPON_REFS,
    )
    ok = "POST_OK"
    ok_fields = (
        ReplyField("points_earned", count=True),
        ReplyField("points_balance", count=True),
        ReplyField("tickets_earned", count=True),
        ReplyField("wallet_points", count=True),
        ReplyField("receipt_lines", rest=True),  # 0 to 8 fields
    )
    fail = "POST_FAIL"

    @classmethod
    def parse(cls, values: Sequence[str], ctx: ParseContext) -> PostRequest:
        wsid, rvc, check, business_date, member_ref, subtotal, total, items, coupon_refs = values
        return PostRequest(
            wsid=WSID.parse(wsid, ctx),
            rvc=RVC.parse(rvc, ctx),
            check=CHECK.parse(check, ctx),
            business_date=cls.BUSINESS_DATE.parse(business_date, ctx),
            member_id=MEMBER_REF.parse(member_ref, ctx),
            subtotal=SUBTOTAL.parse(subtotal, ctx),
            total=cls.TOTAL.parse(total, ctx),
            items=cls.ITEMS.parse(items, ctx),
            coupon_refs=cls.COUPON_REFS.parse(coupon_refs, ctx),
        )

    @staticmethod
    def run(service: Gateway, request: PostRequest) -> Awaitable[PostOk | Refusal]:
        return service.post_check(request)

    @staticmethod
    def ok_values(answer: PostOk) -> list[str]:
        return [
            str(answer.points_earned),
            str(answer.points_balance),
            str(answer.tickets_earned),
            str(answer.wallet_points),
            *answer.receipt_lines,
        ]


# ---- the tables the transports read ------------------------------------------------------------

# Command name -> class: the one lookup a request costs before its own parsing.
COMMANDS: dict[str, AnyCommand] = {
    command.name.value: command for command in (Ping, Ident, Coupon, CouponVoid, Consent, Post)
}


def _replies() -> dict[str, tuple[ReplyField, ...]]:
    replies: dict[str, tuple[ReplyField, ...]] = {ERROR: REFUSAL_FIELDS}
    for command in COMMANDS.values():
        replies[command.ok] = command.ok_fields
        replies[command.fail] = REFUSAL_FIELDS
    return replies


# A reply's first field -> its further fields: how MQTT names a reply's fields, and back.
REPLIES: dict[str, tuple[ReplyField, ...]] = _replies()


def _unknown(name: str) -> BadRequest:
    return BadRequest(Reason.UNKNOWN_COMMAND, f"unknown command {name[:20]!r}")


def command_named(name: str) -> AnyCommand:
    """The class of a command; raises BadRequest(UNKNOWN_COMMAND) for a name no class has."""
    command = COMMANDS.get(name)
    if command is None:
        raise _unknown(name)
    return command


def parse_fields(fields: Sequence[str], ctx: ParseContext) -> tuple[AnyCommand, Any]:
    """Positional SIM fields (command first) -> (command class, its request). Raises BadRequest."""
    name = fields[0] if fields else ""
    command = COMMANDS.get(name)
    if command is None:
        raise _unknown(name)
    count = len(command.fields)
    given = len(fields) - 1
    if given != count:
        raise BadRequest(Reason.BAD_FIELD, f"{command.name} takes {count} fields, got {given}")
    return command, command.parse(fields[1:], ctx)


def error_fields(reason: Reason | str, message: str) -> list[str]:
    return [ERROR, str(reason), message]
