"""The rules document: how a program earns, published by central (or, standalone, read from a
file), versioned and effective-dated. docs/rules.md describes it with an example."""

from __future__ import annotations

import base64
import datetime as dt
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Rounding = Literal["down", "half_up", "up"]
# Multipliers are decimal strings ("1.5") or numbers; kept exact as Decimal.
Multiplier = Annotated[Decimal, Field(ge=0, le=100, allow_inf_nan=False)]


class TierMultiplier(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    tier: str = Field(min_length=1)
    multiplier: Multiplier
    valid_from: dt.date | None = None  # inclusive, in the store's time zone
    valid_to: dt.date | None = None  # inclusive

    def applies(self, tier: str, day: dt.date) -> bool:
        return (
            self.tier == tier
            and (self.valid_from is None or self.valid_from <= day)
            and (self.valid_to is None or day <= self.valid_to)
        )


class TokenKey(BaseModel):
    """A public key central signs app tokens with; several are published during a rotation."""

    model_config = ConfigDict(extra="allow", frozen=True)

    kid: str = Field(min_length=1, max_length=64)
    public_key: str  # raw 32-byte Ed25519 key, base64url
    not_before: dt.datetime | None = None
    not_after: dt.datetime | None = None

    @field_validator("public_key")
    @classmethod
    def _is_ed25519(cls, value: str) -> str:
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        except ValueError:
            raise ValueError("public_key must be base64url") from None
        if len(raw) != 32:
            raise ValueError("public_key must be a raw 32-byte Ed25519 key")
        return value


class ProgramSwitch(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    paused: bool = False


class RulesDocument(BaseModel):
    """Extra keys are kept: a newer central may add rules this gateway does not apply yet."""

    model_config = ConfigDict(extra="allow", frozen=True)

    version: str = Field(min_length=1, max_length=64)
    effective_from: dt.datetime | None = None
    currency: str | None = None
    points_per_unit: Multiplier = Decimal(1)
    rounding: Rounding = "down"
    ticket_price: int = Field(default=50, ge=1, le=1_000_000)
    tier_multipliers: list[TierMultiplier] = Field(default_factory=list)
    birthday_multiplier: Multiplier = Decimal(1)
    categories: dict[str, str] = Field(default_factory=dict)  # item object -> category
    category_multipliers: dict[str, Multiplier] = Field(default_factory=dict)
    excluded_categories: list[str] = Field(default_factory=list)
    programs: dict[str, ProgramSwitch] = Field(default_factory=dict)
    app_token_keys: list[TokenKey] = Field(default_factory=list)
    token_clock_skew_s: int = Field(default=120, ge=0, le=3600)

    @model_validator(mode="after")
    def _dates_have_zones(self) -> RulesDocument:
        if self.effective_from is not None and self.effective_from.tzinfo is None:
            raise ValueError("effective_from needs a time zone (RFC 3339)")
        for key in self.app_token_keys:
            for stamp in (key.not_before, key.not_after):
                if stamp is not None and stamp.tzinfo is None:
                    raise ValueError("token key validity needs a time zone (RFC 3339)")
        return self

    def paused(self, program: str) -> bool:
        switch = self.programs.get(program)
        return switch is not None and switch.paused


DEFAULT_RULES = RulesDocument(version="default")
