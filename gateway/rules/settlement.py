"""A posted check's settlement: the points or tickets it earns, the ledger entry, the receipt
lines and the events, from the check and what the store holds about its member and coupons.

Pure but for the events' ULIDs: the store computes it once, inside the transaction that records
it (`gateway/store/checks.py`), from what that transaction reads, so it always sees every check
committed before it and is never computed twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.domain.ids import new_ulid
from gateway.domain.models import (
    Balance,
    Item,
    LedgerEntry,
    MemberCard,
    OutboxEvent,
    PostOk,
    PostRequest,
    ReservedCoupon,
    Settlement,
)
from gateway.domain.money import format_amount, format_money
from gateway.domain.names import EventType
from gateway.domain.rules_doc import RulesDocument
from gateway.rules.points import EarnContext, earn_points, is_birthday, tickets_and_wallet

# receipt.line_width (DESIGN.md section 2): what a MICROS check information line holds; the
# public ISL scripts cut the lines they save to 24 characters.
RECEIPT_WIDTH = 24
RECEIPT_LINES = 8
LOTTERY = "lottery"


@dataclass(frozen=True, slots=True)
class SettleOptions:
    """The store's settings a settlement depends on."""

    store_id: str
    currency_decimals: int = 2
    currency: str = "EUR"
    locale: str = "en"
    receipt_width: int = RECEIPT_WIDTH


@dataclass(frozen=True, slots=True)
class CheckFacts:
    """What the store read about a check's member and coupons, inside the transaction."""

    member: MemberCard | None
    balance: Balance
    lottery_paused_here: bool  # `edge-gateway pause lottery` at this store
    tickets_this_month: int
    coupons: Sequence[ReservedCoupon]


def lottery_mode(member: MemberCard, paused_here: bool, rules: RulesDocument) -> bool:
    """A member earns tickets: chose the lottery, consented, is eligible, and the lottery is
    paused neither here nor by central (the rules document)."""
    return (
        member.earn_mode == LOTTERY
        and member.lottery_consent
        and member.lottery_eligible
        and not paused_here
        and not rules.paused(LOTTERY)
    )


def receipt_line(label: str, value: str, width: int = RECEIPT_WIDTH) -> str:
    """`label .... value` in at most `width` characters (receipt.line_width, 24 by default):
    the label is cut first, then the value."""
    value = value[:width]
    room = width - len(value) - 1
    if room <= 0:
        return value
    return f"{label[:room]:<{room}} {value}"


def qty_text(qty_milli: int) -> str:
    text = format_amount(qty_milli, 3).rstrip("0").rstrip(".")
    return text or "0"


def settle(
    request: PostRequest,
    facts: CheckFacts,
    *,
    now_s: str,
    rules: RulesDocument,
    categories: dict[int, str],
    options: SettleOptions,
) -> Settlement:
    """The settlement of `request` given `facts`; `now_s` stamps its events (RFC 3339 UTC)."""
    member, coupons = facts.member, facts.coupons
    earned = 0
    if request.member_id is not None:
        earn = EarnContext(
            decimals=options.currency_decimals,
            tier=member.tier if member else "",
            birthday=is_birthday(member.birthday if member else None, request.business_date),
            day=request.business_date,
            categories=categories,
        )
        earned = earn_points(request.total, request.subtotal, request.items, rules, earn)
    tickets = 0
    ledger: LedgerEntry | None = None
    balance = facts.balance
    lottery = member is not None and lottery_mode(member, facts.lottery_paused_here, rules)
    if request.member_id is not None:
        if lottery:
            tickets, wallet_after = tickets_and_wallet(balance.wallet, earned, rules.ticket_price)
            ledger = LedgerEntry(request.member_id, 0, wallet_after - balance.wallet, tickets)
            balance = Balance(balance.points, wallet_after)
        else:
            ledger = LedgerEntry(request.member_id, earned, 0, 0)
            balance = Balance(balance.points + earned, balance.wallet)
    reply = PostOk(
        points_earned=earned,
        points_balance=balance.points,
        tickets_earned=tickets,
        wallet_points=balance.wallet,
        receipt_lines=_receipt(
            request,
            member,
            earned,
            tickets,
            balance,
            options,
            lottery=lottery,
            tickets_month=facts.tickets_this_month + tickets,
        ),
    )

    def event(kind: str, payload: dict[str, Any]) -> OutboxEvent:
        return OutboxEvent(new_ulid(), kind, now_s, {"store_id": options.store_id, **payload})

    date_s = request.business_date.isoformat()
    events = [_check_posted(request, coupons, earned, ledger, rules.version, options, event)]
    events += [
        event(
            EventType.COUPON_REDEEMED,
            {
                "code": c.code,
                "coupon_ref": c.ref,
                "origin": c.origin,
                "business_date": date_s,
                "wsid": request.wsid,
                "check": request.check,
                "member_id": request.member_id,
            },
        )
        for c in coupons
        if c.redeemable
    ]
    return Settlement(
        reply=reply,
        ledger=ledger,
        events=events,
        unknown_refs=tuple(c.ref for c in coupons if c.code is None),
        refused_refs=tuple(c.ref for c in coupons if c.code is not None and not c.redeemable),
    )


def _check_posted(
    request: PostRequest,
    coupons: Sequence[ReservedCoupon],
    earned: int,
    ledger: LedgerEntry | None,
    rules_version: str,
    options: SettleOptions,
    event: Any,
) -> OutboxEvent:
    # earn_mode and wallet_delta tell central where the points went (DESIGN.md section 6).
    lottery = ledger is not None and (ledger.tickets != 0 or ledger.wallet != 0)
    decimals = options.currency_decimals
    posted: OutboxEvent = event(
        EventType.CHECK_POSTED,
        {
            "business_date": request.business_date.isoformat(),
            "wsid": request.wsid,
            "rvc": request.rvc,
            "check": request.check,
            "member_id": request.member_id,
            "subtotal": format_amount(request.subtotal, decimals),
            "total": format_amount(request.total, decimals),
            "items": [_item(i, decimals) for i in request.items],
            "coupons": [c.code for c in coupons if c.redeemable],
            "unknown_coupon_refs": [c.ref for c in coupons if c.code is None],
            # Known refs this check could not redeem: already used, or used up meanwhile.
            "refused_coupon_refs": [
                c.ref for c in coupons if c.code is not None and not c.redeemable
            ],
            "points_earned": earned,
            "tickets_earned": ledger.tickets if ledger else 0,
            "wallet_delta": ledger.wallet if ledger else 0,
            "earn_mode": "lottery" if lottery else "points",
            "rules_version": rules_version,
        },
    )
    return posted


def _item(item: Item, decimals: int) -> dict[str, Any]:
    return {
        "qty": qty_text(item.qty_milli),
        "object": item.object,
        "total": format_amount(item.total, decimals),
    }


def _receipt(
    request: PostRequest,
    member: MemberCard | None,
    earned: int,
    tickets: int,
    balance: Balance,
    options: SettleOptions,
    *,
    lottery: bool,
    tickets_month: int = 0,
) -> tuple[str, ...]:
    if member is None and earned == 0:
        return ()
    # At most RECEIPT_LINES lines of the receipt's width. A member's receipt always names the
    # points this visit earned; a lottery member's also the tickets (this visit and this month)
    # and the wallet the points went to (DESIGN.md section 2).
    width = options.receipt_width

    def line(label: str, value: str) -> str:
        return receipt_line(label, value, width)

    lines = []
    if member is not None and member.display_name:
        lines.append(line("Member", member.display_name))
    lines.append(line("Points this visit", str(earned)))
    if lottery:
        lines.append(line("Tickets this visit", str(tickets)))
        lines.append(line("Tickets this month", str(tickets_month)))
        lines.append(line("Wallet points", str(balance.wallet)))
    if member is not None:  # a member this store does not hold: central knows the balance
        lines.append(line("Points balance", str(balance.points)))
    saved = request.subtotal - request.total
    if saved > 0 and request.coupon_refs:
        amount = format_money(saved, options.currency_decimals, options.currency, options.locale)
        lines.append(line("You saved", amount))
    return tuple(lines[:RECEIPT_LINES])
