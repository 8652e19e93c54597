"""Signed app tokens: a member's phone shows a QR code that central signed (Ed25519), so a store
that has never seen the member can identify them offline, with central's published keys.

The format is a JWT (RFC 7519) in JWS compact form, signed with Ed25519: header `alg` `EdDSA`
(RFC 8037, what most libraries write) or `Ed25519` (its fully-specified name, RFC 9864), and `kid`
naming one of the rules document's `app_token_keys`; claims `sub` (member id), `iat`, `exp`,
optionally `nbf`, `name` and `tier`. Central mints it with any JOSE library (docs/rules.md,
docs/examples/mint_app_token.py). PyJWT checks the signature; the claims are checked here against
the clock the caller passes (PyJWT would read the wall clock), so this stays pure: no I/O.

`LT1.` tokens, the project's own earlier format, are still accepted by the release that brings
JWTs, so that central and the apps can switch while stores upgrade one by one; the release after
removes `_verify_lt1` (docs/decisions.md).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from jwt import InvalidSignatureError, PyJWS, PyJWTError
from jwt.algorithms import OKPAlgorithm

from gateway.domain.reasons import Reason, Refused
from gateway.domain.rules_doc import TokenKey

LEGACY_PREFIX = "LT1."
# Pinned: an Ed25519 signature and nothing else. `none`, HS256 (with the public key as the
# secret) and every other algorithm are refused before any key is looked at.
ALGORITHMS = ("EdDSA", "Ed25519")
# A JOSE header is a JSON object, and every library writes it starting `{"`, which is `eyJ` in
# base64url: that tells a JWT from a card number or a QR text without decoding anything.
_JWT_SHAPE = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
MAX_MEMBER_ID = 64  # as Member.member_id: the ref goes back to the register and into POST

_JWS = PyJWS(algorithms=["EdDSA"])
_JWS.register_algorithm("Ed25519", OKPAlgorithm())  # PyJWT knows only the older name


class TokenRefused(Refused):
    """Why a token does not identify anyone."""


@dataclass(frozen=True, slots=True)
class AppToken:
    member_id: str
    kid: str
    issued_at: int
    expires_at: int
    display_name: str = ""
    tier: str = ""
    format: Literal["JWT", "LT1"] = "JWT"


def _unreadable() -> TokenRefused:
    return TokenRefused(Reason.BAD_TOKEN, "Code not readable")


def _not_genuine() -> TokenRefused:
    return TokenRefused(Reason.BAD_TOKEN, "Code not genuine")


def looks_like_token(text: str) -> bool:
    """A signed app token (either format), as opposed to a card number or a QR text."""
    if text.startswith(LEGACY_PREFIX):
        return text.count(".") == 2
    return _JWT_SHAPE.fullmatch(text) is not None


def verify_app_token(
    token: str, keys: Sequence[TokenKey], now: dt.datetime, skew_s: int = 120
) -> AppToken:
    """The member a token names, or TokenRefused (BAD_TOKEN, UNKNOWN_KEY, TOKEN_EXPIRED)."""
    if token.startswith(LEGACY_PREFIX):
        return _verify_lt1(token, keys, now, skew_s)
    try:
        header = _JWS.get_unverified_header(token)
    except (PyJWTError, ValueError, TypeError, RecursionError):
        raise _unreadable() from None
    if header.get("alg") not in ALGORITHMS:
        raise _not_genuine()
    kid = header.get("kid")
    if not isinstance(kid, str):
        raise _unreadable()
    public = _public_key(_key_in_force(kid, keys, now, skew_s))
    try:
        signed = _JWS.decode_complete(token, key=public, algorithms=list(ALGORITHMS))
    except InvalidSignatureError:
        raise _not_genuine() from None
    except (PyJWTError, ValueError, TypeError, RecursionError):
        raise _unreadable() from None
    try:
        claims = json.loads(signed["payload"])
    except (ValueError, RecursionError):
        raise _unreadable() from None
    if not isinstance(claims, dict) or "aud" in claims:
        # An audience names someone else: this gateway has none (RFC 7519 section 4.1.3).
        raise _unreadable()
    return _app_token(claims, kid, "JWT", now, skew_s)


def _key_in_force(kid: str, keys: Sequence[TokenKey], now: dt.datetime, skew_s: int) -> TokenKey:
    """The published key `kid` names, within its validity: keys rotate by publishing the next
    one before the current one's `not_after`, so two are in force at once."""
    key = next((k for k in keys if k.kid == kid), None)
    if key is None:
        raise TokenRefused(Reason.UNKNOWN_KEY, "Code from an unknown issuer")
    slack = dt.timedelta(seconds=skew_s)
    if (key.not_before and now + slack < key.not_before) or (
        key.not_after and now - slack > key.not_after
    ):
        raise TokenRefused(Reason.UNKNOWN_KEY, "Code from a retired issuer")
    return key


def _public_key(key: TokenKey) -> Ed25519PublicKey:
    # TokenKey checked the text is 32 bytes of base64url (padded or not): the JWK's `x`, RFC 8037.
    text = key.public_key
    return Ed25519PublicKey.from_public_bytes(
        base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    )


def _numeric_date(claims: Mapping[str, Any], name: str) -> int:
    """A NumericDate (seconds since the epoch, a JSON number), whole seconds down."""
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _unreadable()
    if isinstance(value, float):
        if not math.isfinite(value):  # Python's JSON reads NaN and Infinity
            raise _unreadable()
        return math.floor(value)
    return value


def _text_claim(claims: Mapping[str, Any], name: str) -> str:
    value = claims.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _unreadable()
    return value


def _app_token(
    claims: Mapping[str, Any],
    kid: str,
    form: Literal["JWT", "LT1"],
    now: dt.datetime,
    skew_s: int,
) -> AppToken:
    """The claims of a genuine token, checked against the clock with `skew_s` either way."""
    member_id = claims.get("sub")
    if (
        not isinstance(member_id, str)
        or not 0 < len(member_id) <= MAX_MEMBER_ID
        or _CONTROL.search(member_id)
    ):
        raise _unreadable()
    issued, expires = _numeric_date(claims, "iat"), _numeric_date(claims, "exp")
    not_before = _numeric_date(claims, "nbf") if claims.get("nbf") is not None else None
    display_name, tier = _text_claim(claims, "name"), _text_claim(claims, "tier")
    timestamp = now.timestamp()
    if expires <= timestamp - skew_s:
        raise TokenRefused(Reason.TOKEN_EXPIRED, "Code expired - refresh the app")
    if issued > timestamp + skew_s or (not_before is not None and not_before > timestamp + skew_s):
        raise TokenRefused(Reason.BAD_TOKEN, "Code from the future - check the clock")
    return AppToken(
        member_id=member_id,
        kid=kid,
        issued_at=issued,
        expires_at=expires,
        display_name=display_name,
        tier=tier,
        format=form,
    )


# ---- the transition: `LT1.` tokens, accepted for one release (docs/decisions.md) -------------
# `LT1.<payload>.<signature>`, base64url without padding; the payload is JSON with `kid`, `sub`,
# `iat`, `exp`, `name`, `tier`; the signature is Ed25519 over the ASCII bytes `LT1.<payload>`.


def _b64(text: str) -> bytes:
    """Strict base64url without padding: Python's decoder skips stray characters and ignores the
    spare bits of the last one, so `...B` would pass for `...A` (found by the property tests)."""
    if not _B64URL.fullmatch(text):
        raise ValueError("not base64url")
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != text:
        raise ValueError("not canonical base64url")
    return raw


def _verify_lt1(token: str, keys: Sequence[TokenKey], now: dt.datetime, skew_s: int) -> AppToken:
    try:
        _, payload_text, signature_text = token.split(".")
        signed = (LEGACY_PREFIX + payload_text).encode("ascii")
        claims = json.loads(_b64(payload_text))
        signature = _b64(signature_text)
    except (ValueError, TypeError, binascii.Error, RecursionError):
        raise _unreadable() from None
    kid = claims.get("kid") if isinstance(claims, dict) else None
    if not isinstance(kid, str):
        raise _unreadable()
    public = _public_key(_key_in_force(kid, keys, now, skew_s))
    try:
        public.verify(signature, signed)
    except (InvalidSignature, ValueError):
        raise _not_genuine() from None
    return _app_token(claims, kid, "LT1", now, skew_s)
