"""Faults on demand: the settings and dice, and the TCP proxy that loses answers and plays "down".

An ASGI app cannot close its client's socket, so the public port is a small byte-forwarding proxy
in the same process, with uvicorn on an internal loopback port: the proxy loses acknowledgements
("drop after commit") and refuses and cuts connections while central is "down".
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from sync.central.errors import ApiError

BACKLOG = 2048  # connections the kernel may queue before central accepts them


@dataclass(slots=True)
class FaultSettings:
    """What `PUT /_admin/faults` sets. Rates are shares (0..1) of API requests."""

    latency_ms: float = 0.0
    error_rate: float = 0.0
    error_status: int = 503
    throttle_rate: float = 0.0
    retry_after: str = "1"
    drop_after_commit_rate: float = 0.0
    down: bool = False
    seed: int = 0


class Faults:
    """The fault settings and the seeded dice that decide which requests they hit."""

    def __init__(self, seed: int) -> None:
        self.settings = FaultSettings(seed=seed)
        self._dice = random.Random(seed)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self.settings)

    def update(self, changes: object) -> None:
        """Apply a partial update; every key is checked before any is applied."""
        if not isinstance(changes, dict):
            raise ApiError(400, "BAD_REQUEST", "faults must be a JSON object")
        new = FaultSettings(**asdict(self.settings))
        for key, value in changes.items():
            if key in ("error_rate", "throttle_rate", "drop_after_commit_rate"):
                if type(value) not in (int, float) or not 0 <= value <= 1:
                    raise ApiError(400, "BAD_REQUEST", f"{key} must be a number 0..1")
                setattr(new, key, float(value))
            elif key == "latency_ms":
                if type(value) not in (int, float) or not 0 <= value <= 600_000:
                    raise ApiError(400, "BAD_REQUEST", "latency_ms must be 0..600000")
                new.latency_ms = float(value)
            elif key == "error_status":
                if type(value) is not int or not 500 <= value <= 599:
                    raise ApiError(400, "BAD_REQUEST", "error_status must be 500..599")
                new.error_status = value
            elif key == "retry_after":
                if type(value) is int and value >= 0:
                    value = str(value)
                if not isinstance(value, str) or not value.strip() or "\n" in value:
                    raise ApiError(400, "BAD_REQUEST", "retry_after: seconds or an HTTP date")
                new.retry_after = value.strip()
            elif key == "down":
                if not isinstance(value, bool):
                    raise ApiError(400, "BAD_REQUEST", "down must be true or false")
                new.down = value
            elif key == "seed":
                if type(value) is not int:
                    raise ApiError(400, "BAD_REQUEST", "seed must be an integer")
                new.seed = value
            else:
                raise ApiError(400, "BAD_REQUEST", f"unknown fault {key!r}")
        if new.error_rate + new.throttle_rate > 1:
            raise ApiError(400, "BAD_REQUEST", "error_rate + throttle_rate must be at most 1")
        if "seed" in changes:
            self._dice = random.Random(new.seed)
        self.settings = new

    def draw_refusal(self) -> str | None:
        """`"error"`, `"throttle"` or None for one API request (one roll of the dice)."""
        s = self.settings
        if not s.error_rate and not s.throttle_rate:
            return None
        roll = self._dice.random()
        if roll < s.error_rate:
            return "error"
        if roll < s.error_rate + s.throttle_rate:
            return "throttle"
        return None

    def draw_drop(self) -> bool:
        rate = self.settings.drop_after_commit_rate
        return rate >= 1 or (rate > 0 and self._dice.random() < rate)


class ProxyLink:
    """What the app and the proxy in front of it share.

    The proxy opens one upstream connection per client connection; uvicorn reports that
    connection's local port as the ASGI client port, which is how the app names a connection to
    drop, and how it learns the real client's address (admin endpoints are loopback only).
    """

    def __init__(self) -> None:
        self.peers: dict[int, str] = {}  # upstream local port -> the real client's host
        self.drops: set[int] = set()
        # Set by the proxy: (down, the upstream port of the connection asking, spared)
        self.on_down: Callable[[bool, int | None], Awaitable[None]] | None = None

    def client_host(self, client: tuple[str, int] | None) -> str | None:
        if client is None:
            return None
        return self.peers.get(client[1], client[0])

    def mark_drop(self, client: tuple[str, int] | None) -> bool:
        if client is None or client[1] not in self.peers:
            return False
        self.drops.add(client[1])
        return True


class FaultProxy:
    """Forwards bytes between clients and uvicorn; loses responses and refuses connections.

    Bytes pass through unparsed, so keep-alive, chunked bodies and anything else HTTP does work
    as they would without it. A response the app marked as dropped (see `ProxyLink`) is never
    forwarded: the client's connection is reset instead, after the app committed. While central
    is "down" the listening socket is closed (connections are refused) and every open client
    connection is reset.
    """

    def __init__(self, link: ProxyLink, upstream: tuple[str, int]) -> None:
        self.link = link
        self.upstream = upstream
        self.host = ""
        self.port = 0
        self._server: asyncio.Server | None = None
        self._clients: dict[asyncio.StreamWriter, int] = {}  # -> upstream port (0: none yet)
        self._tasks: set[asyncio.Task[None]] = set()
        link.on_down = self.set_down

    async def start(self, host: str, port: int) -> None:
        self.host = host
        await self._listen(port)

    async def _listen(self, port: int) -> None:
        self._server = await asyncio.start_server(
            self._connection,
            self.host,
            port,
            reuse_address=True,
            limit=1 << 20,
            # asyncio's default (100) made a fleet's simultaneous connections wait for the
            # kernel's SYN retry (1 s) at start; uvicorn behind this listens with 2048 too.
            backlog=BACKLOG,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def set_down(self, down: bool, spare: int | None = None) -> None:
        """Refuse and cut every client connection (but `spare`'s, by upstream port), or listen
        again on the same port."""
        if down:
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()
                self._server = None
            for writer, port in list(self._clients.items()):
                if port != spare:
                    writer.transport.abort()
        elif self._server is None:
            await self._listen(self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._clients):
            writer.transport.abort()
        if self._tasks:  # each ends once its client is gone
            _, late = await asyncio.wait(set(self._tasks), timeout=2)
            for task in late:
                task.cancel()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._clients[writer] = 0
        port = 0
        upstream_writer: asyncio.StreamWriter | None = None
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                *self.upstream, limit=1 << 20
            )
            port = upstream_writer.get_extra_info("sockname")[1]
            self._clients[writer] = port
            peer = writer.get_extra_info("peername")
            self.link.peers[port] = str(peer[0]) if peer else "unknown"
            to_app = asyncio.create_task(_pump(reader, upstream_writer, None, self.link))
            to_client = asyncio.create_task(_pump(upstream_reader, writer, port, self.link))
            try:
                await asyncio.wait({to_app, to_client}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                to_app.cancel()
                to_client.cancel()
                await asyncio.gather(to_app, to_client, return_exceptions=True)
        except (OSError, asyncio.CancelledError):
            pass  # the handler's task is ours: ending it quietly is the point
        finally:
            self._clients.pop(writer, None)
            self._tasks.discard(task)
            self.link.peers.pop(port, None)
            self.link.drops.discard(port)
            if upstream_writer is not None:
                upstream_writer.transport.abort()
            if not writer.transport.is_closing():
                writer.close()


async def _pump(
    source: asyncio.StreamReader,
    sink: asyncio.StreamWriter,
    dropping_port: int | None,
    link: ProxyLink,
) -> None:
    """Copy bytes until end of stream; toward the client, reset instead of a dropped response."""
    with contextlib.suppress(OSError):
        while data := await source.read(1 << 18):
            if dropping_port is not None and dropping_port in link.drops:
                link.drops.discard(dropping_port)
                sink.transport.abort()
                return
            sink.write(data)
            await sink.drain()
