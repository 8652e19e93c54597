"""Stable reason codes a register can receive, with the short texts a cashier sees."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    UNKNOWN_COMMAND = "UNKNOWN_COMMAND"
    BAD_FIELD = "BAD_FIELD"
    BAD_CHECKSUM = "BAD_CHECKSUM"
    BAD_FRAME = "BAD_FRAME"
    FRAME_TOO_LARGE = "FRAME_TOO_LARGE"
    UNKNOWN_MEMBER = "UNKNOWN_MEMBER"
    UNKNOWN_COUPON = "UNKNOWN_COUPON"
    VOID = "VOID"
    EXPIRED = "EXPIRED"
    NOT_YET_VALID = "NOT_YET_VALID"
    RESERVED = "RESERVED"
    ALREADY_REDEEMED = "ALREADY_REDEEMED"
    MIN_SPEND = "MIN_SPEND"
    WRONG_MEMBER = "WRONG_MEMBER"
    NOT_ELIGIBLE = "NOT_ELIGIBLE"
    PROGRAM_PAUSED = "PROGRAM_PAUSED"
    STORAGE_FULL = "STORAGE_FULL"
    UNAVAILABLE = "UNAVAILABLE"
    BAD_TOKEN = "BAD_TOKEN"
    TOKEN_EXPIRED = "TOKEN_EXPIRED"
    UNKNOWN_KEY = "UNKNOWN_KEY"


class Refused(Exception):
    """A request refused with a stable reason (what the register receives) and a message."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


# Short enough for a 32-column cashier display.
CASHIER_TEXT: dict[Reason, str] = {
    Reason.UNKNOWN_MEMBER: "Card not recognised",
    Reason.UNKNOWN_COUPON: "Coupon not recognised",
    Reason.VOID: "Coupon withdrawn",
    Reason.EXPIRED: "Coupon expired",
    Reason.NOT_YET_VALID: "Coupon not valid yet",
    Reason.RESERVED: "Coupon in use on another check",
    Reason.ALREADY_REDEEMED: "Coupon already used",
    Reason.MIN_SPEND: "Minimum spend not reached",
    Reason.WRONG_MEMBER: "Coupon belongs to another member",
    Reason.NOT_ELIGIBLE: "Member cannot join this program",
    Reason.PROGRAM_PAUSED: "Program paused",
    Reason.STORAGE_FULL: "Loyalty storage full - call IT",
    Reason.UNAVAILABLE: "Loyalty unavailable - go on",
}
