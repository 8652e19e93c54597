"""The one HTTP client to central: keep-alive, verified TLS, a bearer token read from a file,
gzip request bodies, and the connection state the registers see in `PONG`.

Every call either returns central's answer or raises `CentralUnavailable` (retry later: network
error, timeout, 5xx, 429, an answer it cannot read) or `CentralRefused` (central said no: any other
4xx). Its `link` (gateway.links) logs central going away once and coming back once, not at every
retry; any HTTP answer counts as central being there.

The snapshot file (`snapshot()`) is the one answer not read whole: its body is handed over piece
by piece, as sent, for sync/bootstrap.py to write to disk; central having none is `NoSnapshot`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import gzip
import json
import os
import re
import ssl
import stat
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import httpx
import structlog
from pydantic_core import from_json

from gateway import __version__
from gateway.config import CentralSettings
from gateway.links import Link, LinkError, LinkEvents
from gateway.store.store import EventResult, QueuedEvent

log = structlog.get_logger("sync.client")

GZIP_ABOVE = 1024  # bytes; smaller bodies are not worth compressing
CentralState = Literal["ONLINE", "OFFLINE"]


class CentralError(LinkError):
    """Central failed us as it may: away (`CentralUnavailable`) or saying no (`CentralRefused`)."""


class CentralUnavailable(CentralError):
    """No usable answer: try again later (after `retry_after` seconds when central said so)."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class CentralRefused(CentralError):
    """Central answered with a 4xx other than 429: sending the same again will not help."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


def parse_retry_after(value: str | None, now: dt.datetime | None = None) -> float | None:
    """Retry-After as seconds: either a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - (now or dt.datetime.now(dt.UTC))).total_seconds())


@dataclass(frozen=True, slots=True)
class RawJson:
    """A request body that is already JSON text."""

    text: str


@dataclass
class ChangesPage:
    changes: list[dict[str, Any]]
    next_cursor: str
    has_more: bool


ERROR_BODY_MAX = 64 * 1024  # of an error answer to a streamed request, read for its message
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)", re.ASCII)


class NoSnapshot(CentralRefused):
    """Central has no snapshot to offer (404): page `changes` from an empty cursor instead."""


@dataclass
class SnapshotAnswer:
    """One answer to `GET /snapshot`: 200 (the whole file), 206 (the rest of it from `start`)
    or 304; `size` is the whole file's length when central said it."""

    status: int
    etag: str | None
    start: int
    size: int | None
    _response: httpx.Response
    _client: CentralClient

    @classmethod
    def of(cls, response: httpx.Response, client: CentralClient) -> SnapshotAnswer:
        start, size = 0, None
        if response.status_code == 206:
            found = _CONTENT_RANGE.fullmatch(response.headers.get("content-range", "").strip())
            if found is None:
                raise CentralUnavailable("a 206 snapshot answer without a readable Content-Range")
            start = int(found.group(1))
            size = None if found.group(3) == "*" else int(found.group(3))
        elif response.status_code == 200:
            length = response.headers.get("content-length", "")
            size = int(length) if length.isdigit() else None
        return cls(
            response.status_code, response.headers.get("etag"), start, size, response, client
        )

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives; a cut raises `CentralUnavailable` after what did arrive."""
        try:
            async for chunk in _raw(self._response):
                yield chunk
        except httpx.HTTPError as error:
            raise self._client._unanswered(error) from error


async def _raw(response: httpx.Response) -> AsyncIterator[bytes]:
    """The body's bytes as sent, without undoing a content coding: a file served with
    `Content-Encoding: gzip` by a web server is still the gzip file, and offsets stay its own."""
    if response.is_stream_consumed:  # built in memory (a mock transport): read already
        yield response.content
        return
    async for chunk in response.aiter_raw():
        yield chunk


async def _first_bytes(response: httpx.Response, most: int) -> bytes:
    """At most `most` bytes of a streamed body (an error's message, not a file)."""
    parts: list[bytes] = []
    size = 0
    try:
        async for chunk in _raw(response):
            parts.append(chunk)
            size += len(chunk)
            if size >= most:
                break
    except httpx.HTTPError:
        pass  # the status says enough
    return b"".join(parts)[:most]


def _json_of(content: bytes) -> Any:
    """A JSON body as `json.loads` reads it, parsed by pydantic's Rust parser (a page of a
    thousand members in about three quarters of the time: the keys, the same in every record,
    are made once per page). What that parser refuses (a BOM, a lone surrogate escape, bytes
    that are not UTF-8) is read by `json.loads`, which accepts or refuses it as it always did."""
    try:
        return from_json(content, cache_strings="keys")
    except ValueError:
        return json.loads(content)


@dataclass(frozen=True, slots=True)
class TokenFileProblem:
    """Who besides the service can read or change the token file (see `token_file_problem`)."""

    file: Path
    mode: str  # octal, e.g. "0644"
    problems: tuple[str, ...]
    fix: str

    def __str__(self) -> str:
        return f"{self.file} (mode {self.mode}) is {', '.join(self.problems)}; {self.fix}"


def token_file_problem(path: Path) -> TokenFileProblem | None:
    """ssh's rule for a private key, applied to central's token: no one but the service user
    (and root) may read or change it. Group read is fine only for the service's own group, so
    `install -m 0640 -o root -g edge-gateway` passes. None on Windows (ACLs, not mode bits)."""
    if sys.platform == "win32":
        return None
    import grp
    import pwd

    try:
        info = path.stat()
    except OSError:
        return None  # reading it says what is wrong
    mode = stat.S_IMODE(info.st_mode)

    def user(uid: int) -> str:
        try:
            return pwd.getpwuid(uid).pw_name
        except KeyError:
            return str(uid)

    def group(gid: int) -> str:
        try:
            return grp.getgrgid(gid).gr_name
        except KeyError:
            return str(gid)

    problems = []
    if mode & 0o006:
        problems.append("readable or writable by every user")
    if mode & 0o020:
        problems.append(f"writable by group {group(info.st_gid)}")
    if mode & 0o040 and info.st_gid != os.getegid():
        problems.append(f"readable by group {group(info.st_gid)}")
    if info.st_uid not in (0, os.geteuid()):
        problems.append(f"owned by {user(info.st_uid)}, who can change it")
    if not problems:
        return None
    me, mine = user(os.geteuid()), group(os.getegid())
    fix = f"chown {me} {path} && chmod 600 {path} (or chown root:{mine} {path} && chmod 640 {path})"
    return TokenFileProblem(path, f"{mode:04o}", tuple(problems), fix)


def _ssl_context(settings: CentralSettings) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)
    if settings.client_cert is not None:
        context.load_cert_chain(
            str(settings.client_cert),
            str(settings.client_key) if settings.client_key else None,
        )
    return context


class CentralClient:
    """`async with CentralClient(...) as central:`; one per daemon."""

    def __init__(
        self,
        settings: CentralSettings,
        *,
        store_id: str,
        gateway_id: str,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if settings.url is None:
            raise ValueError("central.url is not set")
        self.settings = settings
        self.store_id = store_id
        self.gateway_id = gateway_id
        self._token_file = settings.token_file
        self._token = self._read_token()
        if self._token_file is not None:  # once, at start: ssh warns about open keys the same way
            problem = token_file_problem(Path(self._token_file))
            if problem is not None:
                log.warning(
                    "token_file_permissions",
                    file=str(problem.file),
                    mode=problem.mode,
                    problem=", ".join(problem.problems),
                    fix=problem.fix,
                )
        self._http = httpx.AsyncClient(
            base_url=settings.url.rstrip("/"),
            timeout=httpx.Timeout(settings.timeout_s),
            verify=_ssl_context(settings),
            headers={
                "X-Gateway-Id": gateway_id,
                "User-Agent": f"edge-gateway/{__version__}",
                "Accept": "application/json",
            },
            limits=httpx.Limits(max_keepalive_connections=4, keepalive_expiry=60),
            transport=transport,
        )
        self._last_answer: float | None = None  # monotonic time of the last HTTP answer
        self._last_date: str | None = None  # its Date header: central's clock
        # Reachability: down from a request that got no HTTP answer to the next that got one.
        self.link = Link(
            log, LinkEvents(down="central_unreachable", up="central_recovered"), url=settings.url
        )
        # Called when central comes back (the link's own list, so `+=` adds to it).
        self.on_recovery: list[Callable[[], None]] = self.link.on_recovery

    @property
    def outages(self) -> int:
        """Times central went away (each logged once); the link counts the rest."""
        return self.link.outages

    async def __aenter__(self) -> CentralClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # ---- connection state ------------------------------------------------------------------------

    def state(self) -> CentralState:
        """ONLINE when the last attempt got an HTTP answer within two refresh intervals."""
        if self._last_answer is None or not self.link.available:
            return "OFFLINE"
        age = time.monotonic() - self._last_answer
        return "ONLINE" if age <= 2 * self.settings.refresh_interval_s else "OFFLINE"

    @property
    def last_answer_age_s(self) -> float | None:
        return None if self._last_answer is None else time.monotonic() - self._last_answer

    @property
    def central_date(self) -> dt.datetime | None:
        """Central's clock from the Date header of its last answer (over verified TLS, like
        every request here), for `doctor`'s clock check."""
        if not self._last_date:
            return None
        try:
            when = email.utils.parsedate_to_datetime(self._last_date)
        except (TypeError, ValueError):
            return None
        return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)

    # ---- requests -------------------------------------------------------------------------------

    def _read_token(self) -> str | None:
        if self._token_file is None:
            return None
        return Path(self._token_file).read_text(encoding="utf-8").strip() or None

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    def _unanswered(self, error: httpx.HTTPError) -> CentralUnavailable:
        """No (whole) HTTP answer: refused, reset, timed out, TLS failure, a body cut short."""
        reason = f"{type(error).__name__}: {error}"
        self.link.failed(reason)
        return CentralUnavailable(reason)

    def _answered(self, response: httpx.Response) -> None:
        self._last_answer = time.monotonic()
        self.link.succeeded()  # any HTTP answer counts as an exchange
        self._last_date = response.headers.get("date")
        if response.status_code == 401 and self._token_file is not None:
            self._token = self._read_token()  # the token may have been rotated on disk

    @staticmethod
    def _raise_for_status(response: httpx.Response, content: bytes) -> None:
        """`CentralUnavailable` for 429 and 5xx, `CentralRefused` for other 4xx (`NoSnapshot`
        for the snapshot's 404); `content` is the body, or its start."""
        status = response.status_code
        if status in (429, 503) or status >= 500:
            raise CentralUnavailable(
                f"central answered {status}",
                status=status,
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        if status >= 400:
            code = "HTTP_" + str(status)
            message = content.decode("utf-8", errors="replace")[:200]
            try:
                detail = json.loads(content)
            except ValueError:
                detail = None
            if isinstance(detail, dict):
                code = str(detail.get("error", code))
                message = str(detail.get("message", message))
            if status == 404 and response.url.path.endswith("/snapshot"):
                raise NoSnapshot(status, code, message)
            raise CentralRefused(status, code, message)

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str | int] | None = None,
        budget_s: float | None = None,
    ) -> httpx.Response:
        headers = self._auth()
        content: bytes | None = None
        if body is not None:
            text = (
                body.text if isinstance(body, RawJson) else json.dumps(body, separators=(",", ":"))
            )
            content = text.encode("utf-8")
            headers["Content-Type"] = "application/json"
            if len(content) > GZIP_ABOVE:
                content = gzip.compress(content, compresslevel=1)  # fast: CPU is scarcer
                headers["Content-Encoding"] = "gzip"
        try:
            response = await self._http.request(
                method,
                path,
                content=content,
                params=params,
                headers=headers,
                timeout=budget_s if budget_s is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.HTTPError as error:  # refused, reset, timed out, TLS failure ...
            raise self._unanswered(error) from error
        self._answered(response)
        self._raise_for_status(response, response.content)
        return response

    def _store_path(self, tail: str) -> str:
        return f"/v1/stores/{self.store_id}/{tail}"

    async def post_events(self, batch_id: str, events: Sequence[QueuedEvent]) -> list[EventResult]:
        # Built as text around each payload's stored JSON: no parse, no re-encoding.
        envelope = ",".join(
            f'{{"id":{json.dumps(e.event_id)},"type":{json.dumps(e.type)},'
            f'"occurred_at":{json.dumps(e.occurred_at)},"payload":{e.payload_json}}}'
            for e in events
        )
        body = RawJson(f'{{"batch_id":{json.dumps(batch_id)},"events":[{envelope}]}}')
        response = await self._request("POST", self._store_path("events"), body=body)
        try:
            results = response.json()["results"]
            return [
                EventResult(
                    event_id=str(r["id"]),
                    status=str(r["status"]),
                    reason=r.get("reason"),
                    applied_at=r.get("applied_at"),
                )
                for r in results
            ]
        except (ValueError, KeyError, TypeError) as error:
            # An answer we cannot read is no answer: every event will be sent again.
            raise CentralUnavailable(f"unreadable events answer: {error}") from error

    async def changes(self, cursor: str, limit: int, *, wait_s: float = 0) -> ChangesPage:
        """A page of central's changes. `wait_s` > 0 asks central to hold the request until a
        change exists or the time is up (long poll), so the read may take that much longer."""
        params: dict[str, str | int] = {"cursor": cursor, "limit": limit}
        budget = None
        if wait_s > 0:
            params["wait_s"] = int(wait_s)
            budget = int(wait_s) + self.settings.timeout_s
        response = await self._request(
            "GET", self._store_path("changes"), params=params, budget_s=budget
        )
        try:
            body = _json_of(response.content)
            return ChangesPage(
                changes=list(body["changes"]),
                next_cursor=str(body["next_cursor"]),
                has_more=bool(body["has_more"]),
            )
        except (ValueError, KeyError, TypeError) as error:
            raise CentralUnavailable(f"unreadable changes answer: {error}") from error

    @contextlib.asynccontextmanager
    async def snapshot(
        self, *, offset: int = 0, if_range: str | None = None, if_none_match: str | None = None
    ) -> AsyncIterator[SnapshotAnswer]:
        """`GET /snapshot`, its body left on the wire for `chunks()` to read piece by piece.

        `offset` > 0 asks for the rest of the file from there (`Range`), and `if_range` (the
        ETag of the file being resumed) makes central send the whole new file instead (200)
        when it has been replaced. Raises `NoSnapshot` (404: central offers none), or as every
        request does. No content coding is asked for: the bytes are the file's own, so byte
        offsets mean the same on every attempt.
        """
        headers = self._auth() | {
            "Accept": "application/gzip, application/json",
            "Accept-Encoding": "identity",
        }
        if offset > 0:
            headers["Range"] = f"bytes={offset}-"
            if if_range:
                headers["If-Range"] = if_range
        if if_none_match:
            headers["If-None-Match"] = if_none_match
        request = self._http.build_request("GET", self._store_path("snapshot"), headers=headers)
        try:
            response = await self._http.send(request, stream=True)
        except httpx.HTTPError as error:
            raise self._unanswered(error) from error
        try:
            self._answered(response)
            if response.status_code >= 400:
                self._raise_for_status(response, await _first_bytes(response, ERROR_BODY_MAX))
            yield SnapshotAnswer.of(response, self)
        finally:
            await response.aclose()

    async def snapshot_offered(self) -> bool:
        """Whether central has a snapshot to download, asked without its bytes
        (`If-None-Match: *`: 304 when it has one, 404 when not)."""
        try:
            async with self.snapshot(if_none_match="*"):
                return True
        except NoSnapshot:
            return False

    async def authorize_coupon(
        self, code: str, request: Mapping[str, Any], *, budget_s: float
    ) -> dict[str, Any]:
        path = f"/v1/coupons/{quote(code, safe='')}/authorizations"
        response = await self._request("POST", path, body=dict(request), budget_s=budget_s)
        try:
            answer = response.json()
        except ValueError as error:
            raise CentralUnavailable(f"unreadable authorization answer: {error}") from error
        if not isinstance(answer, dict):
            raise CentralUnavailable("unreadable authorization answer: not a JSON object")
        return answer

    async def put_catalog(self, catalog: Mapping[str, Any]) -> dict[str, Any]:
        response = await self._request("PUT", self._store_path("catalog"), body=dict(catalog))
        answer: dict[str, Any] = response.json()
        return answer

    async def heartbeat(self, beat: Mapping[str, Any]) -> None:
        await self._request("POST", self._store_path("heartbeat"), body=dict(beat))
