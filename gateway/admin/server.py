"""Serving the admin app inside the daemon's event loop with uvicorn, so that it cannot be turned
against the registers: it holds at most `max_connections` connections (more are answered 503 and
closed at once), a connection must complete its request within `request_timeout_s` and is closed
after that long idle, and a taken port is a clear error at start, not a hang.

Every file descriptor the admin API holds is one the SIM port cannot accept with, so these limits
bound what any local process or web page can take."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import math
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import h11
import structlog
import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.http.h11_impl import H11Protocol

log = structlog.get_logger("gateway.admin.server")

_TOO_MANY_BODY = b'{"error":"TOO_MANY_CONNECTIONS"}'
_TOO_MANY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(_TOO_MANY_BODY), _TOO_MANY_BODY)
)
# asyncio accepts up to `backlog` connections per wake-up before any of them is refused, so this
# also bounds the file descriptors a burst of connections takes for a moment.
_MAX_BACKLOG = 128


@dataclass
class AdminConnectionStats:
    """What the daemon reads for status and metrics."""

    open: int = 0
    refused: int = 0  # beyond max_connections: answered 503 and closed at once
    timed_out: int = 0  # no complete request within request_timeout_s


class _Guard:
    """The limits of one server, its counters, and one log line per condition (a flood of
    connections must not become a flood of log lines)."""

    def __init__(self, max_connections: int, request_timeout_s: float) -> None:
        self.max_connections = max_connections
        self.request_timeout_s = request_timeout_s
        self.stats = AdminConnectionStats()
        self._refusing = 0  # refused since the cap was reached; 0: not at the cap
        self._timing_out = 0  # timed out since the last request that completed

    def admit(self) -> bool:
        if self.stats.open < self.max_connections:
            if self._refusing:
                log.info("admin_connections_accepted_again", refused=self._refusing)
                self._refusing = 0
            self.stats.open += 1
            return True
        self.stats.refused += 1
        if not self._refusing:
            log.warning(
                "admin_connections_refused",
                max_connections=self.max_connections,
                hint="admin.max_connections reached: more are closed at once until some close",
            )
        self._refusing += 1
        return False

    def closed(self) -> None:
        self.stats.open -= 1

    def timed_out(self) -> None:
        self.stats.timed_out += 1
        if not self._timing_out:
            log.info(
                "admin_connection_timed_out",
                request_timeout_s=self.request_timeout_s,
                hint="no complete request within admin.request_timeout_s: closed",
            )
        self._timing_out += 1

    def served(self) -> None:
        if self._timing_out > 1:
            log.info("admin_connection_timeouts_ended", timed_out=self._timing_out)
        self._timing_out = 0


class _GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the cap and one deadline: armed when the connection opens and
    after each response, it closes the connection unless a whole request has arrived by then.
    (h11's keep-alive timer starts only after a first response, and any byte cancels it.)"""

    guard: ClassVar[_Guard]
    _admitted = False
    _deadline: asyncio.TimerHandle | None = None
    _heard = False  # bytes arrived since the deadline was armed
    _answered = False  # a response completed on this connection

    def connection_made(  # type: ignore[override]
        self, transport: asyncio.Transport
    ) -> None:
        if not self.guard.admit():
            transport.write(_TOO_MANY)
            transport.close()
            return
        self._admitted = True
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._admitted:
            return
        self._admitted = False
        self._disarm()
        self.guard.closed()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._heard = True
        super().data_received(data)

    def on_response_complete(self) -> None:
        self._answered = True
        self.guard.served()
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._heard = False
        self._deadline = self.loop.call_later(self.guard.request_timeout_s, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        state = self.conn.their_state
        if self.transport.is_closing() or state in (h11.DONE, h11.MUST_CLOSE):
            return  # the whole request is in: the app answers, then the deadline is armed again
        # An idle keep-alive connection after an answer is closed as usual, not counted.
        if state is not h11.IDLE or self._heard or not self._answered:
            self.guard.timed_out()
        self.transport.close()


class _QuietServer(uvicorn.Server):
    # The daemon owns SIGTERM/SIGINT; uvicorn must not take them over.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _listen(host: str, port: int) -> list[socket.socket]:
    """Bind here rather than in uvicorn, which calls sys.exit on a taken port (a hang inside our
    event loop). One socket per address the host resolves to, as asyncio would bind."""
    where = _where(host, port)
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as error:
        raise OSError(f"the admin API cannot listen on {where}: {error}") from error
    sockets: list[socket.socket] = []
    unavailable: OSError | None = None
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            try:
                if os.name == "posix":  # on Windows it would let another program share the port
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
            except OSError as error:
                sock.close()
                if error.errno != errno.EADDRNOTAVAIL:
                    raise
                unavailable = error  # that family is off here ("localhost" without IPv6)
                continue
            sockets.append(sock)
        if not sockets:
            raise unavailable or OSError(f"{host!r} resolves to no address")
    except OSError as error:
        for sock in sockets:
            sock.close()
        in_use = error.errno in (errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", -1))
        reason = "the address is already in use" if in_use else (error.strerror or str(error))
        raise OSError(
            error.errno,
            f"the admin API cannot listen on {where}: {reason} (admin.host, admin.port)",
        ) from error
    return sockets


class AdminServer:
    """`await start()` (raises OSError naming host:port when it cannot listen), then `port`;
    `stats` counts open, refused and timed-out connections."""

    def __init__(
        self,
        app: Starlette,
        *,
        host: str,
        port: int,
        max_connections: int = 64,
        request_timeout_s: float = 10.0,
    ) -> None:
        self.host, self.requested_port = host, port
        self._guard = _Guard(max_connections, request_timeout_s)

        class Protocol(_GuardedH11Protocol):
            guard = self._guard

        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            http=Protocol,
            ws="none",
            log_config=None,  # our structlog handlers format uvicorn's lines too
            access_log=False,
            lifespan="off",
            proxy_headers=False,  # nothing sits in front; no local process picks our scheme
            backlog=min(max_connections, _MAX_BACKLOG),
            # Ours closes idle connections first; uvicorn's (whole seconds) is the backstop.
            timeout_keep_alive=math.ceil(request_timeout_s) + 1,
        )
        self._server = _QuietServer(config)
        self._sockets: list[socket.socket] = []
        self._task: asyncio.Task[None] | None = None

    @property
    def stats(self) -> AdminConnectionStats:
        return self._guard.stats

    @property
    def port(self) -> int:
        with contextlib.suppress(OSError, IndexError):  # closed, or not started
            return int(self._sockets[0].getsockname()[1])
        return self.requested_port

    async def start(self) -> None:
        self._sockets = await _listen(self.host, self.requested_port)
        self._task = asyncio.create_task(
            self._server.serve(sockets=self._sockets), name="admin-api"
        )
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises the reason
                raise RuntimeError("the admin API stopped while starting")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._task is None:
            for sock in self._sockets:
                sock.close()
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
