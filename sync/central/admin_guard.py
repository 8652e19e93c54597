"""What keeps web pages away from central's admin API (`/_admin/`).

The admin API answers loopback clients only; a browser on central's own host is one, and so is
every page it opens. So, besides the loopback check:

- the Host header must be an IP address, `localhost`, or a name in `admin_host_names`: a page
  whose own name was rebound to 127.0.0.1 (DNS rebinding) sends its own name, and is refused
  (421), so it can neither read the fleet nor flip the switch;
- a state-changing request (anything but GET and HEAD) from a browser must come from the admin
  API's own origin: a `Sec-Fetch-Site` other than `same-origin`, or an `Origin` that is not the
  request's own, is refused (403 `FOREIGN_ORIGIN`). A program that is no browser sends neither
  header, and is let through as before;
- with an admin token configured (`admin_token`, `--admin-token-file`), every admin request
  needs it as `Authorization: Bearer`; the fleet page alone also takes it once as `?token=`
  (the page keeps it in the tab's sessionStorage and sends it as a header from then on).
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.requests import Request

from sync.central.errors import ApiError

# A Host header: a name or IPv4 address, or an IPv6 address in brackets; then maybe a port.
_HOST = re.compile(
    r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9._-]+))(?::(?P<port>\d{1,5}))?"
)
_DEFAULT_PORTS = {"http": 80, "https": 443}
SAFE_METHODS = frozenset({"GET", "HEAD"})


def _normal(name: str) -> str:
    """One spelling per host: lower case, no trailing dot, no brackets, IPv6 compressed."""
    name = name.strip().strip("[]").rstrip(".").lower()
    try:
        return ipaddress.ip_address(name).compressed
    except ValueError:
        return name


def _parse_host(value: str) -> tuple[str, int | None] | None:
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
    return _normal(match["ipv6"] or match["name"]), port


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class AdminGuard:
    """The admin API's checks against web pages, and its optional token."""

    def __init__(self, token: str | None, host_names: Iterable[str] = ()) -> None:
        self.token = token
        self.names = frozenset({"localhost", *(_normal(n) for n in host_names)})

    def refusal(self, request: Request, *, page: bool = False) -> ApiError | None:
        """Why `request` is refused, or None. `page`: the token may come as `?token=` (and a
        missing one is the page's to answer, with its login form)."""
        refused = self.host_refusal(request)
        if refused is not None:
            return refused
        if not page and not self.authorised(request):
            return ApiError(401, "UNAUTHORIZED", "the admin API needs its token (Bearer)")
        if request.method not in SAFE_METHODS and not self.same_origin_or_no_browser(request):
            return ApiError(403, "FOREIGN_ORIGIN", "a page of another site cannot change central")
        return None

    def host_refusal(self, request: Request) -> ApiError | None:
        value = request.headers.get("host")
        if value is None:  # every browser sends one: only a local program can leave it out
            return None
        parsed = _parse_host(value)
        if parsed is None:
            return ApiError(400, "BAD_HOST", "the Host header is not a host name with a port")
        if _is_address(parsed[0]) or parsed[0] in self.names:
            return None
        return ApiError(
            421,
            "UNKNOWN_HOST",
            f"the admin API does not answer for {value[:255]!r}; a name it should answer for "
            "goes in admin_host_names (--admin-host-name)",
        )

    def authorised(self, request: Request) -> bool:
        if self.token is None:
            return True
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), self.token.encode()
        )

    def token_in_query(self, request: Request) -> bool | None:
        """The page's `?token=`: None when absent, else whether it is the admin token."""
        given = request.query_params.get("token")
        if given is None:
            return None
        return self.token is not None and hmac.compare_digest(given.encode(), self.token.encode())

    @staticmethod
    def same_origin_or_no_browser(request: Request) -> bool:
        """A browser says the request comes from a page of the admin API itself; or nothing
        says a browser sent it (no `Sec-Fetch-Site`, no `Origin`)."""
        site = request.headers.get("sec-fetch-site")
        if site is not None and site != "same-origin":
            return False
        origin = request.headers.get("origin")
        if origin is None:
            return True
        host = _parse_host(request.headers.get("host", ""))
        scheme = request.url.scheme
        try:
            parts = urlsplit(origin)
            origin_port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
        except ValueError:
            return False
        return (
            host is not None
            and parts.scheme == scheme
            and _normal(parts.hostname or "") == host[0]
            and origin_port == (host[1] or _DEFAULT_PORTS.get(scheme))
        )
