"""The SIM socket server: registers connect as TCP clients; the gateway answers every frame.

One connection carries many workstations (told apart by source id) and stays open for days.
Frames of different workstations are answered concurrently, frames of one workstation in order.
Peers outside the allowed networks are closed at once; a frame that starts but does not finish
within `read_timeout_s` is dropped (the connection stays), so a slow or stuck peer holds nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog

from pos_adapters.sim.codec import Frame, FrameDecoder
from pos_adapters.sim.session import SimResponder

log = structlog.get_logger("pos_adapters.sim.tcp")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
READ_CHUNK = 65536
MAX_CONNECTIONS = 512


@dataclass
class TcpStats:
    accepted: int = 0
    refused: Counter[str] = field(default_factory=Counter)  # reason -> count
    open_connections: int = 0
    dropped_bytes: int = 0
    frame_errors: Counter[str] = field(default_factory=Counter)
    partial_timeouts: int = 0
    idle_closes: int = 0


def peer_allowed(host: str, networks: Sequence[Network]) -> bool:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


class SimTcpServer:
    """`await start()`, then `port`; `await stop()` stops accepting and lets answers finish."""

    def __init__(
        self,
        responder: SimResponder,
        *,
        host: str = "127.0.0.1",
        port: int = 5009,
        allow: Sequence[Network] = (
            ipaddress.ip_network("127.0.0.0/8"),
            ipaddress.ip_network("::1/128"),
        ),
        max_frame: int = 32768,
        read_timeout_s: float = 30.0,
        idle_timeout_s: float = 0.0,
    ) -> None:
        self.responder = responder
        self.host = host
        self.requested_port = port
        self.allow = list(allow)
        self.max_frame = max_frame
        self.read_timeout_s = read_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.stats = TcpStats()
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._inflight: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            return self.requested_port
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def listening(self) -> bool:
        return self._server is not None and self._server.is_serving()

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, self.host, self.requested_port, limit=READ_CHUNK, reuse_address=True
        )
        log.info("sim_tcp_listening", host=self.host, port=self.port)

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop accepting, wait (up to grace_s) for answers under way, then close connections."""
        if self._server is None:
            return
        self._server.close()
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=grace_s)
        for writer in list(self._writers):
            writer.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), timeout=grace_s)
        self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        host = str(peer[0]) if peer else ""
        if not peer_allowed(host, self.allow):
            self.stats.refused["not_allowed"] += 1
            log.warning("sim_peer_refused", peer=host, reason="not in sim.allow")
            writer.close()
            return
        if self.stats.open_connections >= MAX_CONNECTIONS:
            self.stats.refused["too_many"] += 1
            log.warning("sim_peer_refused", peer=host, reason="too many connections")
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        self.stats.accepted += 1
        self.stats.open_connections += 1
        log.info("sim_connected", peer=host)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError) as error:
            log.info("sim_connection_lost", peer=host, error=str(error))
        except asyncio.CancelledError:
            pass
        finally:
            self.stats.open_connections -= 1
            self._handlers.discard(task)
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            log.info("sim_disconnected", peer=host)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        responder = self.responder
        decoder = FrameDecoder(encoding=responder.encoding, max_frame=self.max_frame)
        loop = asyncio.get_running_loop()
        partial_since: float | None = None
        while True:
            timeout = None
            if partial_since is not None:
                timeout = max(0.0, partial_since + self.read_timeout_s - loop.time())
            elif self.idle_timeout_s > 0:
                timeout = self.idle_timeout_s
            try:
                data = await asyncio.wait_for(reader.read(READ_CHUNK), timeout)
            except TimeoutError:
                if partial_since is None:
                    self.stats.idle_closes += 1
                    return
                # A frame began but never finished: drop it, keep the connection.
                self.stats.partial_timeouts += 1
                dropped = decoder.reset()
                self.stats.dropped_bytes += dropped
                partial_since = None
                continue
            if not data:
                return
            before = decoder.stats.dropped_bytes
            items = decoder.feed(data)
            for item in items:
                if isinstance(item, Frame):
                    self._answer(item, writer)
                else:
                    self.stats.frame_errors[item.reason] += 1
                    reply = responder.error_reply(item)
                    if reply is not None:
                        writer.write(reply)
            self.stats.dropped_bytes += decoder.stats.dropped_bytes - before
            if not decoder.pending:
                partial_since = None
            elif items or partial_since is None:  # the clock runs from the unfinished frame's start
                partial_since = loop.time()
            await writer.drain()

    def _answer(self, frame: Frame, writer: asyncio.StreamWriter) -> None:
        async def answer() -> None:
            reply = await self.responder.reply(frame)
            if not writer.is_closing():
                writer.write(reply)

        task = asyncio.create_task(answer())
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
