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

The checks themselves are the store's admin API's too (`gateway.web.guard`); the answers are in
the contract's `Error` shape.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from starlette.requests import Request

from gateway.web.guard import host_problem, is_address, normal_host, same_origin
from sync.central.errors import ApiError

SAFE_METHODS = frozenset({"GET", "HEAD"})


class AdminGuard:
    """The admin API's checks against web pages, and its optional token."""

    def __init__(self, token: str | None, host_names: Iterable[str] = ()) -> None:
        self.token = token
        self.names = frozenset({"localhost", *(normal_host(n) for n in host_names)})

    def refusal(self, request: Request, *, page: bool = False) -> ApiError | None:
        """Why `request` is refused, or None. `page`: the token may come as `?token=` (and a
        missing one is the page's to answer, with its login form)."""
        refused = self.host_refusal(request)
        if refused is not None:
            return refused
        if not page and not self.authorised(request):
            return ApiError(401, "UNAUTHORIZED", "the admin API needs its token (Bearer)")
        if request.method not in SAFE_METHODS and not same_origin(request, silent_ok=True):
            # A browser's request from another page; a program that is no browser says nothing.
            return ApiError(403, "FOREIGN_ORIGIN", "a page of another site cannot change central")
        return None

    def host_refusal(self, request: Request) -> ApiError | None:
        value = request.headers.get("host")
        problem = host_problem(value, self.served)
        if problem == "BAD_HOST":
            return ApiError(400, "BAD_HOST", "the Host header is not a host name with a port")
        if problem == "UNKNOWN_HOST" and value is not None:
            return ApiError(
                421,
                "UNKNOWN_HOST",
                f"the admin API does not answer for {value[:255]!r}; a name it should answer "
                "for goes in admin_host_names (--admin-host-name)",
            )
        return None

    def served(self, host: str) -> bool:
        """Any address (the admin API answers loopback clients only), `localhost`, and
        `admin_host_names`."""
        return is_address(host) or host in self.names

    def authorised(self, request: Request) -> bool:
        if self.token is None:
            return True
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), self.token.encode()
        )
