"""Signed app tokens: a member's phone shows a QR code that central signed (Ed25519), so a store
that has never seen the member can identify them offline, with central's published keys.

Format (docs/rules.md): `LT1.<payload>.<signature>`, both parts base64url without padding. The
payload is JSON: `{"kid": key id, "sub": member id, "iat": issued (Unix s), "exp": expiry (Unix s),
"name": display name (optional), "tier": tier (optional)}`. The signature is Ed25519 over the
ASCII bytes `LT1.<payload>`. Pure: no I/O, the clock is an argument.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.domain.rules_doc import TokenKey

PREFIX = "LT1."


class TokenRefused(Exception):
    """Why a token does not identify anyone: `reason` is a stable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class AppToken:
    member_id: str
    kid: str
    issued_at: int
    expires_at: int
    display_name: str = ""
    tier: str = ""


def looks_like_token(text: str) -> bool:
    return text.startswith(PREFIX) and text.count(".") == 2


def _b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _unb64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def verify_app_token(
    token: str, keys: Sequence[TokenKey], now: dt.datetime, skew_s: int = 120
) -> AppToken:
    """The member a token names, or TokenRefused (BAD_TOKEN, UNKNOWN_KEY, TOKEN_EXPIRED)."""
    try:
        _, payload_text, signature_text = token.split(".")
        payload = json.loads(_b64(payload_text))
        signature = _b64(signature_text)
        kid, member_id = str(payload["kid"]), str(payload["sub"])
        issued, expires = int(payload["iat"]), int(payload["exp"])
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
        raise TokenRefused("BAD_TOKEN", "Code not readable") from None
    if not member_id:
        raise TokenRefused("BAD_TOKEN", "Code not readable")
    key = next((k for k in keys if k.kid == kid), None)
    if key is None:
        raise TokenRefused("UNKNOWN_KEY", "Code from an unknown issuer")
    slack = dt.timedelta(seconds=skew_s)
    if (key.not_before and now + slack < key.not_before) or (
        key.not_after and now - slack > key.not_after
    ):
        raise TokenRefused("UNKNOWN_KEY", "Code from a retired issuer")
    try:
        public = Ed25519PublicKey.from_public_bytes(_b64(key.public_key))
        public.verify(signature, (PREFIX + payload_text).encode("ascii"))
    except (InvalidSignature, ValueError):
        raise TokenRefused("BAD_TOKEN", "Code not genuine") from None
    timestamp = now.timestamp()
    if timestamp - skew_s > expires:
        raise TokenRefused("TOKEN_EXPIRED", "Code expired - refresh the app")
    if timestamp + skew_s < issued:
        raise TokenRefused("BAD_TOKEN", "Code from the future - check the clock")
    return AppToken(
        member_id=member_id,
        kid=kid,
        issued_at=issued,
        expires_at=expires,
        display_name=str(payload.get("name") or ""),
        tier=str(payload.get("tier") or ""),
    )


def sign_app_token(
    private_key: Ed25519PrivateKey,
    *,
    kid: str,
    member_id: str,
    issued_at: int,
    expires_at: int,
    display_name: str = "",
    tier: str = "",
) -> str:
    """What central does (the reference server, the tests): a token for a member."""
    claims = {"kid": kid, "sub": member_id, "iat": issued_at, "exp": expires_at}
    if display_name:
        claims["name"] = display_name
    if tier:
        claims["tier"] = tier
    payload_text = _unb64(json.dumps(claims, separators=(",", ":")).encode("utf-8"))
    signature = private_key.sign((PREFIX + payload_text).encode("ascii"))
    return f"{PREFIX}{payload_text}.{_unb64(signature)}"


def public_key_text(private_key: Ed25519PrivateKey) -> str:
    """The base64url raw public key, as a rules document publishes it."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    raw = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return _unb64(raw)
