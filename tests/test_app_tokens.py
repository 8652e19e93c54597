"""Signed app tokens (gateway/rules/tokens.py): JWTs signed with Ed25519 that central mints with
any JOSE library, verified strictly (pinned algorithm, `kid` among the published keys, expiry
and not-before within the clock skew), `LT1.` tokens during the transition, and IDENT over the
SIM socket. Tokens are minted here the way central would: with joserfc and PyJWT, or with the
documented example, never with the gateway's code."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jwt
import pytest
from conftest import NOW, RunningGateway
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc import jwt as jose_jwt
from joserfc.jwk import OKPKey
from jwt import PyJWS

from gateway.domain.rules_doc import RulesDocument, TokenKey
from gateway.rules.tokens import AppToken, TokenRefused, looks_like_token, verify_app_token
from pos_adapters.sim.messages import MAX_TEXT

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "mint_app_token.py"
T = int(NOW.timestamp())

KEY_2026 = Ed25519PrivateKey.generate()
KEY_2027 = Ed25519PrivateKey.generate()
STRANGER = Ed25519PrivateKey.generate()


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def raw_public(private: Ed25519PrivateKey) -> str:
    return b64(private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


def pem(private: Ed25519PrivateKey) -> bytes:
    return private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def token_key(kid: str, private: Ed25519PrivateKey, **validity: str) -> TokenKey:
    return TokenKey.model_validate({"kid": kid, "public_key": raw_public(private), **validity})


# A rotation in progress: 2026 is retired at the end of the year, 2027 already published.
KEYS = [
    token_key("2026", KEY_2026, not_after="2026-12-31T23:59:59Z"),
    token_key("2027", KEY_2027, not_before="2026-11-01T00:00:00Z"),
]


def claims(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"sub": "M9", "iat": T - 10, "exp": T + 300, "name": "Noor A."}
    base["tier"] = "GOLD"
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def pyjwt_token(private: Ed25519PrivateKey, kid: str | None = "2026", **changes: Any) -> str:
    headers = {"kid": kid} if kid is not None else {}
    return jwt.encode(claims(**changes), private, algorithm="EdDSA", headers=headers)


def jose_token(private: Ed25519PrivateKey, kid: str, alg: str, **changes: Any) -> str:
    key = OKPKey.import_key(pem(private))
    return jose_jwt.encode({"alg": alg, "kid": kid}, claims(**changes), key, algorithms=[alg])


def lt1_token(private: Ed25519PrivateKey, kid: str = "2026", **changes: Any) -> str:
    """The transition format, minted as central's old code did (docs/rules.md)."""
    payload = b64(json.dumps({"kid": kid, **claims(**changes)}).encode())
    return f"LT1.{payload}.{b64(private.sign(f'LT1.{payload}'.encode('ascii')))}"


def hand_made(header: dict[str, Any], body: dict[str, Any], signature: bytes = b"") -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(body).encode())}.{b64(signature)}"


def hs256_with_the_public_key(secret: bytes) -> str:
    """The classic confusion: HMAC keyed with the published (public) key."""
    signing_input = hand_made({"alg": "HS256", "kid": "2026", "typ": "JWT"}, claims()).rstrip(".")
    mac = hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def refused(token: str, keys: list[TokenKey] = KEYS, now: dt.datetime = NOW) -> TokenRefused:
    with pytest.raises(TokenRefused) as caught:
        verify_app_token(token, keys, now, skew_s=120)
    return caught.value


# ---- what central mints is accepted ---------------------------------------------------------


@pytest.mark.filterwarnings("ignore:EdDSA is deprecated")  # joserfc's nudge towards Ed25519
@pytest.mark.parametrize("alg", ["Ed25519", "EdDSA"])
def test_a_token_central_mints_with_another_jose_library_identifies_the_member(alg: str) -> None:
    # joserfc writes RFC 9864's `Ed25519` by preference; PyJWT and most others write `EdDSA`.
    member = verify_app_token(jose_token(KEY_2027, "2027", alg), KEYS, NOW, skew_s=120)
    assert member == AppToken(
        member_id="M9", kid="2027", issued_at=T - 10, expires_at=T + 300,
        display_name="Noor A.", tier="GOLD", format="JWT",
    )  # fmt: skip


def test_the_documented_example_mints_a_token_the_gateway_accepts(tmp_path: Path) -> None:
    key_file = tmp_path / "central-2027-01.pem"
    key_file.write_bytes(pem(KEY_2027))

    def example(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, str(EXAMPLE), str(key_file), "2027-01", *args],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        return done.stdout.strip()

    published = TokenKey.model_validate(json.loads(example("--publish")))
    assert published.public_key == raw_public(KEY_2027)
    token = example("M123", "--name", "Ann K.", "--tier", "GOLD")
    member = verify_app_token(token, [published], dt.datetime.now(dt.UTC))
    assert (member.member_id, member.display_name, member.tier) == ("M123", "Ann K.", "GOLD")


def test_both_keys_of_a_rotation_identify_at_the_same_time() -> None:
    assert verify_app_token(pyjwt_token(KEY_2026, "2026"), KEYS, NOW).kid == "2026"
    assert verify_app_token(pyjwt_token(KEY_2027, "2027"), KEYS, NOW).kid == "2027"


def test_a_published_key_may_carry_base64_padding() -> None:
    padded = TokenKey(kid="2026", public_key=raw_public(KEY_2026) + "=")
    assert verify_app_token(pyjwt_token(KEY_2026), [padded], NOW).member_id == "M9"


def test_a_retired_key_no_longer_identifies() -> None:
    later = dt.datetime(2027, 2, 1, tzinfo=dt.UTC)
    stamp = int(later.timestamp())
    old = pyjwt_token(KEY_2026, "2026", iat=stamp, exp=stamp + 300)
    assert refused(old, now=later).reason == "UNKNOWN_KEY"
    assert refused(old, now=later).message == "Code from a retired issuer"
    new = pyjwt_token(KEY_2027, "2027", iat=stamp, exp=stamp + 300)
    assert verify_app_token(new, KEYS, later).member_id == "M9"


def test_a_key_is_not_used_before_its_not_before() -> None:
    early = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
    stamp = int(early.timestamp())
    assert refused(pyjwt_token(KEY_2027, "2027", iat=stamp, exp=stamp + 60), now=early).reason == (
        "UNKNOWN_KEY"
    )


@pytest.mark.parametrize(
    ("make", "reason", "message"),
    [
        (lambda: pyjwt_token(STRANGER, "2026"), "BAD_TOKEN", "Code not genuine"),  # forged
        (lambda: pyjwt_token(KEY_2027, "2026"), "BAD_TOKEN", "Code not genuine"),  # other key's
        (lambda: pyjwt_token(KEY_2026)[:-4] + "AAAA", "BAD_TOKEN", "Code not genuine"),
        (lambda: pyjwt_token(STRANGER, "9999"), "UNKNOWN_KEY", "Code from an unknown issuer"),
        (lambda: pyjwt_token(KEY_2026, kid=None), "BAD_TOKEN", "Code not readable"),
        (lambda: pyjwt_token(KEY_2026, exp=T - 600), "TOKEN_EXPIRED",
         "Code expired - refresh the app"),
        (lambda: pyjwt_token(KEY_2026, exp=T - 120), "TOKEN_EXPIRED",
         "Code expired - refresh the app"),  # exactly at the skew: exp is exclusive
        (lambda: pyjwt_token(KEY_2026, iat=T + 600), "BAD_TOKEN",
         "Code from the future - check the clock"),
        (lambda: pyjwt_token(KEY_2026, nbf=T + 600), "BAD_TOKEN",
         "Code from the future - check the clock"),
        (lambda: pyjwt_token(KEY_2026, sub=None), "BAD_TOKEN", "Code not readable"),
        (lambda: pyjwt_token(KEY_2026, sub=""), "BAD_TOKEN", "Code not readable"),
        (lambda: pyjwt_token(KEY_2026, sub=9), "BAD_TOKEN", "Code not readable"),
        (lambda: pyjwt_token(KEY_2026, sub="M" * 65), "BAD_TOKEN", "Code not readable"),
        (lambda: pyjwt_token(KEY_2026, sub="M\x1c9"), "BAD_TOKEN", "Code not readable"),
        (lambda: pyjwt_token(KEY_2026, exp=None), "BAD_TOKEN", "Code not readable"),
        (lambda: pyjwt_token(KEY_2026, iat=None), "BAD_TOKEN", "Code not readable"),
        (lambda: pyjwt_token(KEY_2026, exp="soon"), "BAD_TOKEN", "Code not readable"),
        (lambda: pyjwt_token(KEY_2026, nbf=True), "BAD_TOKEN", "Code not readable"),
        (lambda: pyjwt_token(KEY_2026, name=["Noor"]), "BAD_TOKEN", "Code not readable"),
        (lambda: pyjwt_token(KEY_2026, aud="another-service"), "BAD_TOKEN", "Code not readable"),
        # the algorithm is pinned: an unsigned token, and HMAC keyed with the public key
        (lambda: hand_made({"alg": "none", "kid": "2026"}, claims()), "BAD_TOKEN",
         "Code not genuine"),
        (lambda: hand_made({"alg": "EdDSA", "kid": "2026"}, claims()), "BAD_TOKEN",
         "Code not genuine"),  # EdDSA named, the signature left out
        (lambda: hs256_with_the_public_key(raw_public(KEY_2026).encode()), "BAD_TOKEN",
         "Code not genuine"),
        (lambda: hs256_with_the_public_key(base64.urlsafe_b64decode(raw_public(KEY_2026) + "=")),
         "BAD_TOKEN", "Code not genuine"),
        (lambda: "eyJhbGciOiJFZERTQSJ9.not-json.x", "BAD_TOKEN", "Code not readable"),
    ],
)  # fmt: skip
def test_refusals(make: Any, reason: str, message: str) -> None:
    refusal = refused(make())
    assert (refusal.reason, refusal.message) == (reason, message)


@pytest.mark.parametrize(
    "changes",
    [
        {"exp": T - 60},  # expired, but within the clock skew
        {"iat": T + 60, "nbf": T + 60},  # from a clock a minute ahead
        {"exp": T + 300.9, "iat": T - 0.5},  # NumericDates may carry fractions
        {"name": None, "tier": None},  # name and tier are optional
        {"jti": "e7c1", "typ_extra": {"any": "claim"}},  # unknown claims are ignored
    ],
)
def test_accepted_variants(changes: dict[str, Any]) -> None:
    assert verify_app_token(pyjwt_token(KEY_2026, **changes), KEYS, NOW).member_id == "M9"


# ---- the transition: LT1 tokens --------------------------------------------------------------


def test_an_lt1_token_still_identifies_during_the_transition() -> None:
    member = verify_app_token(lt1_token(KEY_2026), KEYS, NOW)
    assert (member.member_id, member.display_name, member.tier, member.format) == (
        "M9", "Noor A.", "GOLD", "LT1",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: lt1_token(STRANGER), "BAD_TOKEN"),
        (lambda: lt1_token(KEY_2026)[:-4] + "AAAA", "BAD_TOKEN"),
        (lambda: lt1_token(KEY_2026, exp=T - 600), "TOKEN_EXPIRED"),
        (lambda: lt1_token(STRANGER, kid="9999"), "UNKNOWN_KEY"),
        (lambda: "LT1.not-base64!.x", "BAD_TOKEN"),
    ],
)
def test_lt1_refusals(make: Any, reason: str) -> None:
    assert refused(make()).reason == reason


def test_an_lt1_token_from_a_retired_key_is_refused_like_a_jwt() -> None:
    later = dt.datetime(2027, 2, 1, tzinfo=dt.UTC)
    stamp = int(later.timestamp())
    assert refused(lt1_token(KEY_2026, iat=stamp, exp=stamp + 60), now=later).reason == (
        "UNKNOWN_KEY"
    )


# ---- what counts as a token, and whether it fits the register's field ------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (pyjwt_token(KEY_2026), True),
        (jose_token(KEY_2026, "2026", "Ed25519"), True),
        (lt1_token(KEY_2026), True),
        ("6001000000000001", False),  # a card number
        ("QR-7f3a", False),  # a QR identifier
        ("a.b.c", False),
        ("eyJ.x", False),
    ],
)
def test_what_looks_like_a_token(text: str, expected: bool) -> None:
    assert looks_like_token(text) is expected


def test_a_token_with_the_longest_ids_fits_the_ident_field() -> None:
    # kid and member id at their limits (64), a 40-character name, a 16-character tier: the SIM
    # field and the ISL script's variable hold 512 characters.
    token = pyjwt_token(KEY_2026, kid="K" * 64, sub="M" * 64, name="N" * 40, tier="T" * 16)
    assert len(token) <= MAX_TEXT == 512
    assert len(pyjwt_token(KEY_2026)) < 260  # a usual token: about half the field


# ---- malformed tokens: refused, never raised, never accepted --------------------------------

B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
segment = st.text(alphabet=B64URL, max_size=120)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12,
)  # fmt: skip
headers = st.fixed_dictionaries(
    {},
    optional={
        "alg": st.sampled_from(["EdDSA", "Ed25519", "none", "HS256", "RS256", "", "eddsa"])
        | json_values,
        "kid": st.sampled_from(["2026", "2027", "9999", ""]) | json_values,
        "typ": st.sampled_from(["JWT", "at+jwt"]) | json_values,
        "crit": json_values,
        "b64": json_values,
    },
)
bodies = st.fixed_dictionaries(
    {},
    optional={
        "sub": st.sampled_from(["M9", ""]) | json_values,
        "iat": st.sampled_from([T, T + 3600]) | json_values,
        "exp": st.sampled_from([T + 300, T - 3600]) | json_values,
        "nbf": st.sampled_from([T, T + 3600]) | json_values,
        "name": json_values,
        "tier": json_values,
        "aud": json_values,
    },
)


def refused_or_raises_something_else(token: str) -> None:
    try:
        verify_app_token(token, KEYS, NOW, skew_s=120)
    except TokenRefused as refusal:
        assert refusal.reason in {"BAD_TOKEN", "UNKNOWN_KEY", "TOKEN_EXPIRED"}
        assert refusal.message
    else:
        pytest.fail(f"accepted a token nobody signed: {token!r}")


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300))
def test_any_text_is_refused(text: str) -> None:
    refused_or_raises_something_else(text)


@settings(max_examples=400, deadline=None)
@given(st.one_of(
    st.tuples(segment, segment, segment).map(".".join),
    st.tuples(st.just("LT1"), segment, segment).map(".".join),
    st.builds(lambda h, b, s: hand_made(h, b, s), headers, bodies, st.binary(max_size=70)),
    st.builds(lambda h, b: "eyJ" + h + "." + b, segment, st.text(max_size=60)),
))  # fmt: skip
def test_malformed_and_unsigned_tokens_are_refused(token: str) -> None:
    refused_or_raises_something_else(token)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["jwt", "lt1"]),
    st.data(),
)
def test_a_genuine_token_changed_anywhere_is_refused(kind: str, data: st.DataObject) -> None:
    genuine = pyjwt_token(KEY_2026) if kind == "jwt" else lt1_token(KEY_2026)
    position = data.draw(st.integers(0, len(genuine) - 1))
    replacement = data.draw(
        st.sampled_from(B64URL + ".=!~ ").filter(lambda c: c != genuine[position])
    )
    cut = data.draw(st.booleans())
    changed = genuine[:position] + ("" if cut else replacement) + genuine[position + 1 :]
    refused_or_raises_something_else(changed)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["sub", "iat", "exp", "nbf", "name", "tier", "aud"]),
                       json_values) | json_values)  # fmt: skip
def test_genuinely_signed_odd_claims_are_refused_or_read_as_documented(body: Any) -> None:
    # Central's own key over whatever JSON: never an exception other than the refusal, and an
    # accepted one carries exactly the claims the gateway documents.
    token = PyJWS().encode(
        json.dumps(body).encode(), KEY_2026, algorithm="EdDSA", headers={"kid": "2026"}
    )
    try:
        member = verify_app_token(token, KEYS, NOW, skew_s=120)
    except TokenRefused:
        return
    assert isinstance(body, dict)
    assert member.member_id == body["sub"] and isinstance(body["sub"], str)
    assert member.expires_at > T - 120 and member.issued_at <= T + 120
    assert member.display_name == (body.get("name") or "")


# ---- IDENT over the SIM socket ----------------------------------------------------------------


async def test_an_app_token_identifies_a_member_this_store_never_saw(
    gateway: RunningGateway,
) -> None:
    document = {"version": "v2", "app_token_keys": [k.model_dump(mode="json") for k in KEYS]}
    await gateway.store.add_rules(RulesDocument.model_validate(document), source="test")
    connection = await gateway.connect()
    station = connection.workstation(3)
    good = jose_token(KEY_2027, "2027", "Ed25519", sub="APP-77", name="Iris", tier="SILVER")
    known = pyjwt_token(KEY_2026, "2026", sub="M1")
    legacy = lt1_token(KEY_2027, "2027", sub="APP-78", name="Jo", tier="")
    long_claims = pyjwt_token(KEY_2026, kid="2026", sub="A" * 64, name="N" * 40, tier="T" * 16)
    try:
        assert (await station.request("IDENT", "3", "1", "0", good))[:5] == [
            "IDENT_OK", "APP-77", "Iris", "SILVER", "0",
        ]  # fmt: skip
        assert (await station.request("IDENT", "3", "1", "0", known))[:2] == ["IDENT_OK", "M1"]
        assert (await station.request("IDENT", "3", "1", "0", legacy))[:3] == [
            "IDENT_OK", "APP-78", "Jo",
        ]  # fmt: skip
        assert (await station.request("IDENT", "3", "1", "0", long_claims))[:2] == [
            "IDENT_OK", "A" * 64,
        ]  # fmt: skip
        for token, reason in [
            (pyjwt_token(KEY_2027, "2027", iat=T - 9000, exp=T - 3600), "TOKEN_EXPIRED"),
            (pyjwt_token(STRANGER, "2027"), "BAD_TOKEN"),
            (hs256_with_the_public_key(raw_public(KEY_2027).encode()), "BAD_TOKEN"),
            (pyjwt_token(STRANGER, "1999"), "UNKNOWN_KEY"),
        ]:
            assert (await station.request("IDENT", "3", "1", "0", token))[:2] == [
                "IDENT_FAIL", reason,
            ]  # fmt: skip
    finally:
        await connection.close()
