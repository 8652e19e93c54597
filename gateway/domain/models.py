"""The records and requests the gateway works with: members, coupons, checks and their answers."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.domain.reasons import Reason

MemberFlag = str  # "minor" | "employee" | "legal_entity"; unknown flags are kept as they come
EarnMode = Literal["points", "lottery"]
LOTTERY_EXCLUDED_FLAGS = frozenset({"minor", "employee", "legal_entity"})


_MONTH_DAY = re.compile(r"(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])")
_DAYS_IN_MONTH = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # 29 February allowed


class Member(BaseModel):
    """A member as central publishes it (DESIGN.md section 3); extra keys are kept."""

    model_config = ConfigDict(extra="allow", frozen=True)

    member_id: str = Field(min_length=1, max_length=64)
    identifiers: list[str] = Field(default_factory=list)
    display_name: str = ""
    tier: str = ""
    birthday: str | None = None
    flags: list[MemberFlag] = Field(default_factory=list)
    earn_mode: EarnMode = "points"
    lottery_consent: bool = False
    points_balance: int = 0
    wallet_points: int = 0
    balance_as_of: dt.datetime | None = None

    @field_validator("identifiers")
    @classmethod
    def _identifiers_are_text(cls, value: list[str]) -> list[str]:
        for identifier in value:
            if not identifier or len(identifier) > 512:
                raise ValueError("identifiers must be 1..512 characters")
        return value

    @field_validator("birthday")
    @classmethod
    def _birthday_is_month_day(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        # A regex and a table, not strptime: this runs for every member of a million-member sync.
        match = _MONTH_DAY.fullmatch(value)
        if match is None or int(match[2]) > _DAYS_IN_MONTH[int(match[1])]:
            raise ValueError("birthday must be MM-DD")
        return value

    @property
    def lottery_eligible(self) -> bool:
        return not (LOTTERY_EXCLUDED_FLAGS & set(self.flags))


@dataclass(frozen=True, slots=True)
class MemberCard:
    """A cached member as the till needs it: what IDENT answers and a check is settled from.
    Built from the cache's columns without validation (they were validated when the record was
    stored): a pydantic `Member` per lookup would cost more than the lookup itself."""

    member_id: str
    display_name: str = ""
    tier: str = ""
    birthday: str | None = None
    flags: tuple[str, ...] = ()
    earn_mode: EarnMode = "points"
    lottery_consent: bool = False
    points_balance: int = 0  # central's
    wallet_points: int = 0  # central's

    @property
    def lottery_eligible(self) -> bool:
        return not (LOTTERY_EXCLUDED_FLAGS.intersection(self.flags))


CouponKind = Literal["amount", "percent", "item"]
CouponOrigin = Literal["reward", "occasion", "campaign", "voucher"]


class Coupon(BaseModel):
    """A coupon as central publishes it (DESIGN.md section 3); extra keys are kept."""

    model_config = ConfigDict(extra="allow", frozen=True)

    code: str = Field(min_length=1, max_length=128)
    coupon_id: str = ""
    kind: CouponKind
    value: str | None = None
    pos_discount_object: int | None = None
    item_object: int | None = None
    min_spend: str | None = None
    member_id: str | None = None
    valid_from: dt.datetime | None = None
    valid_to: dt.datetime | None = None
    max_redemptions: int | None = Field(default=1, ge=1)
    per_member_limit: int | None = Field(default=None, ge=1)
    origin: CouponOrigin = "campaign"
    status: Literal["active", "void"] = "active"

    @model_validator(mode="after")
    def _value_fits_kind(self) -> Coupon:
        if self.kind == "item":
            if self.item_object is None:
                raise ValueError("an item coupon needs item_object")
        elif self.value is None:
            raise ValueError(f"a {self.kind} coupon needs a value")
        elif self.kind == "percent" and not (self.value.isdigit() and 1 <= int(self.value) <= 100):
            raise ValueError("a percent coupon's value is a whole percent 1..100")
        for stamp in (self.valid_from, self.valid_to):
            if stamp is not None and stamp.tzinfo is None:
                raise ValueError("validity stamps need a time zone (RFC 3339)")
        return self


# Requests from registers. Amounts are integers in minor units of the store currency.


@dataclass(frozen=True, slots=True)
class Item:
    qty_milli: int  # quantity in thousandths; negative for a return
    object: int  # POS menu item object number
    total: int


@dataclass(frozen=True, slots=True)
class IdentRequest:
    wsid: int
    rvc: int
    check: int
    token: str


@dataclass(frozen=True, slots=True)
class CouponRequest:
    wsid: int
    check: int
    member_id: str | None
    code: str
    subtotal: int


@dataclass(frozen=True, slots=True)
class CouponVoidRequest:
    wsid: int
    check: int
    coupon_ref: str


@dataclass(frozen=True, slots=True)
class ConsentRequest:
    wsid: int
    member_id: str
    program: Literal["LOTTERY"]
    join: bool


@dataclass(frozen=True, slots=True)
class PostRequest:
    wsid: int
    rvc: int
    check: int
    business_date: dt.date
    member_id: str | None
    subtotal: int
    total: int
    items: tuple[Item, ...]
    coupon_refs: tuple[str, ...]


# Answers to registers.


@dataclass(frozen=True, slots=True)
class Refusal:
    """A business refusal (`*_FAIL`) or, for COUPON_VOID, an `ERROR` with a stable reason."""

    reason: Reason
    message: str


@dataclass(frozen=True, slots=True)
class Pong:
    state: Literal["STANDALONE", "ONLINE", "OFFLINE"]
    version: str


@dataclass(frozen=True, slots=True)
class IdentOk:
    member_id: str
    display_name: str
    tier: str
    points_balance: int
    earn_mode: Literal["POINTS", "LOTTERY"]
    message: str


@dataclass(frozen=True, slots=True)
class CouponOk:
    coupon_ref: str
    kind: Literal["AMOUNT", "PERCENT", "ITEM"]
    pos_discount_object: int | None
    value: str  # money for AMOUNT, whole percent for PERCENT, empty for ITEM
    item_object: int | None
    message: str


@dataclass(frozen=True, slots=True)
class CouponVoidOk:
    coupon_ref: str


@dataclass(frozen=True, slots=True)
class ConsentOk:
    member_id: str
    earn_mode: EarnMode


@dataclass(frozen=True, slots=True)
class PostOk:
    points_earned: int
    points_balance: int
    tickets_earned: int
    wallet_points: int
    receipt_lines: tuple[str, ...]


# What the store hands the service and back when a check is settled.


@dataclass(frozen=True, slots=True)
class Balance:
    """Central's balance for a member plus this store's entries central had not applied."""

    points: int
    wallet: int


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    event_id: str
    type: str
    occurred_at: str  # RFC 3339 UTC
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    member_id: str
    points: int
    wallet: int
    tickets: int


@dataclass(frozen=True, slots=True)
class ReservedCoupon:
    """A coupon ref a posted check carries, as the store found it."""

    ref: str
    code: str | None  # None when the register sent a ref this store does not know
    status: str | None
    # Whether posting this check redeems it: a live reservation does; a released one only if
    # the coupon still has a use left (its reservation expired or was voided meanwhile).
    redeemable: bool = False
    origin: str | None = None  # reward, occasion, campaign, voucher: kept for reporting


@dataclass(frozen=True, slots=True)
class Settlement:
    """Everything a posted check writes (gateway/rules/settlement.py computes it inside the
    transaction that records it), and the refs it could not redeem, for the service to count."""

    reply: PostOk
    ledger: LedgerEntry | None
    events: list[OutboxEvent] = field(default_factory=list)
    unknown_refs: tuple[str, ...] = ()  # refs this store does not know
    refused_refs: tuple[str, ...] = ()  # known refs already used, or used up meanwhile
