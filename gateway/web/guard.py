"""What keeps web pages away from an admin API on this machine (the store's, central's).

- DNS rebinding: a page whose own name was rebound to 127.0.0.1 sends its own name as the Host
  header, so an admin API answers only for the names it serves (`host_problem`);
- CSRF: a state-changing request from a browser must come from a page of the API itself
  (`same_origin`);
- the admin token, which a page may bring once as `?token=` (`query_token`).

Each API words its refusals in its own error shape; the checks are these."""

from __future__ import annotations

import hmac
import ipaddress
import re
from collections.abc import Callable
from typing import Literal
from urllib.parse import urlsplit

from starlette.requests import Request

# A Host header: a name or IPv4 address, or an IPv6 address in brackets; then maybe a port.
_HOST = re.compile(
    r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9._-]+))(?::(?P<port>\d{1,5}))?"
)
DEFAULT_PORTS = {"http": 80, "https": 443}


def normal_host(name: str) -> str:
    """One spelling per host: lower case, no trailing dot, no brackets, IPv6 compressed."""
    name = name.strip().strip("[]").rstrip(".").lower()
    try:
        return ipaddress.ip_address(name).compressed
    except ValueError:
        return name


def parse_host(value: str) -> tuple[str, int | None] | None:
    """A Host header's host (in its `normal_host` spelling) and port; None when it is neither a
    host name nor an address with an optional port."""
    match = _HOST.fullmatch(value)
    if match is None:
        return None
    if match["ipv6"] is not None:
        try:
            ipaddress.IPv6Address(match["ipv6"])
        except ValueError:
            return None
    port = int(match["port"]) if match["port"] else None
    if port is not None and port > 65535:
        return None
    return normal_host(match["ipv6"] or match["name"]), port


def is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def host_problem(
    value: str | None, served: Callable[[str], bool]
) -> Literal["BAD_HOST", "UNKNOWN_HOST"] | None:
    """What is wrong with a Host header, or None: `BAD_HOST` (no host name with an optional
    port), `UNKNOWN_HOST` (a host `served` says no to). A request without one passes: every
    browser sends it, so only a local program can leave it out."""
    if value is None:
        return None
    parsed = parse_host(value)
    if parsed is None:
        return "BAD_HOST"
    return None if served(parsed[0]) else "UNKNOWN_HOST"


def same_origin(request: Request, *, silent_ok: bool) -> bool:
    """A browser says `request` comes from a page of this API itself: a `Sec-Fetch-Site`, when
    sent, of `same-origin`, and an `Origin`, when sent, of the request's own scheme, host and
    port. A request that sends neither passes only when `silent_ok` (no browser sent it)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site != "same-origin":
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return site is not None or silent_ok
    host = parse_host(request.headers.get("host", ""))
    scheme = request.url.scheme
    try:
        parts = urlsplit(origin)
        origin_port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return False
    return (
        host is not None
        and parts.scheme == scheme
        and normal_host(parts.hostname or "") == host[0]
        and origin_port == (host[1] or DEFAULT_PORTS.get(scheme))
    )


def query_token(request: Request, token: str | None) -> bool | None:
    """The page's `?token=`: None when absent, else whether it is the admin `token`."""
    given = request.query_params.get("token")
    if given is None:
        return None
    return token is not None and hmac.compare_digest(given.encode(), token.encode())
