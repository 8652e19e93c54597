"""Names the world outside sees, each written once: register commands and outbox event types.

Both are `StrEnum`s, so a member is its text wherever a string goes (a stats key, a JSON value, a
SQLite column) and compares equal to it.
"""

from __future__ import annotations

from enum import StrEnum


class CommandName(StrEnum):
    """A register command: the first field of a SIM request, `command` of an MQTT one.

    The service counts and times its requests under these names; `pos_adapters/sim/messages.py`
    holds one class per command (fields, rules, reply, the service call it makes).
    """

    PING = "PING"
    IDENT = "IDENT"
    COUPON = "COUPON"
    COUPON_VOID = "COUPON_VOID"
    CONSENT = "CONSENT"
    POST = "POST"


class EventType(StrEnum):
    """The `type` of an outbox event, as central receives it (sync/openapi.yaml)."""

    MEMBER_IDENTIFIED = "member.identified"
    COUPON_RELEASED = "coupon.released"
    COUPON_REDEEMED = "coupon.redeemed"
    CONSENT_CHANGED = "consent.changed"
    CHECK_POSTED = "check.posted"
