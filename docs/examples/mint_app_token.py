"""Mint a loyalty app token as central does, with PyJWT alone (no code of the gateway).

The token is a JWT signed with Ed25519 (`alg` `EdDSA`, `kid` in the header); docs/rules.md,
"Signed app tokens", says what a gateway checks. Any JOSE library that signs EdDSA or Ed25519
does the same; this is the whole of it in Python.

    pip install "PyJWT[crypto]"
    openssl genpkey -algorithm ed25519 -out central-2027-01.pem     # once per key (rotation)

    # the entry for the rules document's `app_token_keys` (publish it before signing with it):
    python mint_app_token.py central-2027-01.pem 2027-01 --publish
    # a token for member M123, valid 5 minutes (what the app shows as a QR code):
    python mint_app_token.py central-2027-01.pem 2027-01 M123 --name "Ann K." --tier GOLD
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import jwt
from jwt.algorithms import OKPAlgorithm


def mint(
    private_pem: bytes,
    kid: str,
    member_id: str,
    *,
    name: str = "",
    tier: str = "",
    ttl_s: int = 300,
    now: int | None = None,
) -> str:
    """A token for `member_id`: short-lived, so a screenshot of the code is soon worthless."""
    issued = int(time.time()) if now is None else now
    claims: dict[str, Any] = {"sub": member_id, "iat": issued, "exp": issued + ttl_s}
    if name:
        claims["name"] = name  # what the register shows; keep it short (the code must fit 512)
    if tier:
        claims["tier"] = tier
    return jwt.encode(claims, private_pem, algorithm="EdDSA", headers={"kid": kid})


def published_key(private_pem: bytes, kid: str) -> dict[str, str]:
    """The `app_token_keys` entry: the public key as the `x` of its JWK (RFC 8037)."""
    jwk = OKPAlgorithm.to_jwk(OKPAlgorithm().prepare_key(private_pem), as_dict=True)
    return {"kid": kid, "public_key": jwk["x"]}  # never `d`: that is the private half


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Mint a loyalty app token (JWT, Ed25519).")
    parser.add_argument("key", type=Path, help="Ed25519 private key, PEM (openssl genpkey)")
    parser.add_argument("kid", help="the key's id, as published in app_token_keys")
    parser.add_argument("member", nargs="?", help="member id (the token's sub)")
    parser.add_argument("--name", default="", help="display name for the register")
    parser.add_argument("--tier", default="", help="tier, e.g. GOLD")
    parser.add_argument("--ttl", type=int, default=300, help="seconds the token is valid")
    parser.add_argument("--publish", action="store_true", help="print the app_token_keys entry")
    args = parser.parse_args(argv)
    pem = args.key.read_bytes()
    if args.publish:
        print(json.dumps(published_key(pem, args.kid)))
    elif args.member:
        print(mint(pem, args.kid, args.member, name=args.name, tier=args.tier, ttl_s=args.ttl))
    else:
        parser.error("give a member id, or --publish")
    return 0


if __name__ == "__main__":
    sys.exit(main())
