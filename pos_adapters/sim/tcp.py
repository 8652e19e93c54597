"""The SIM socket server: registers connect as TCP clients; the gateway answers every frame.

One connection carries many workstations (told apart by source id) and stays open for days.
Frames of different workstations are answered concurrently, frames of one workstation in order.

Who may hold a connection (DESIGN section 2, docs/operations.md):

- a peer outside `sim.allow` is closed at once;
- at most `max_connections_per_peer` per address and `max_connections` in all. A newcomer at a cap
  takes the place of the longest-idle connection (oldest last complete frame) of its own address,
  or, at the total cap, of the address holding the most connections: no address can keep another
  address's registers out;
- a connection without a complete frame for `idle_timeout_s` is closed (stray bytes and partial
  frames are not activity); a frame that starts but does not finish within `read_timeout_s` is
  dropped and the connection kept;
- under a low open-file limit, fewer connections than configured, so SQLite and the admin API
  keep theirs; out of file descriptors all the same (something else holds them), the listener
  spends a descriptor it holds in reserve on the waiting peer, and wins it back by closing a
  connection idle for a minute or more.

Each limit is counted in `TcpStats` and logged once per condition, never once per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import ipaddress
import socket
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, cast

import structlog

from pos_adapters.sim.codec import Frame, FrameDecoder, StreamStats
from pos_adapters.sim.session import SimResponder
from pos_adapters.sim.sockets import (
    AcceptFailureLog,
    Repeating,
    Reserve,
    descriptors_in_use,
    listen,
    open_file_limit,
    raise_open_file_limit,
    sock_name,
)

log = structlog.get_logger("pos_adapters.sim.tcp")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_CONNECTIONS = 512
MAX_CONNECTIONS_PER_PEER = 64
# Answers under way on one connection before we stop reading more from it: a POS has one
# request out per workstation, and this bounds what a flood can queue (connections x this).
MAX_INFLIGHT = 64
# Descriptors left to the rest of the daemon (admin API's 64 connections, SQLite, central, serial,
# MQTT, logs) when a low open-file limit caps the SIM connections.
DESCRIPTOR_RESERVE = 128
ACCEPT_RETRY_S = 1.0  # out of descriptors with nothing of ours to give up: look again this late
# Out of descriptors, a connection idle this long (or idle_timeout_s, if shorter) gives its
# descriptor to a waiting peer; its register reconnects at its next request.
ROOM_IDLE_S = 60.0
OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


@dataclass
class TcpStats(StreamStats):
    accepted: int = 0
    refused: Counter[str] = field(default_factory=Counter)  # reason -> count
    evicted: Counter[str] = field(default_factory=Counter)  # peer_cap | total_cap | descriptors
    open_connections: int = 0
    max_connections: int = MAX_CONNECTIONS  # in force: sim.max_connections, or less (fd limit)
    idle_closes: int = 0
    accept_failures: int = 0  # accept() out of descriptors (EMFILE, ENFILE ...)


def peer_allowed(host: str, networks: Sequence[Network]) -> bool:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


def peer_address(host: str) -> str:
    """The address a peer is counted under: an IPv4 register is one peer whichever socket it
    reached (plain IPv4, or IPv4-mapped on a dual-stack one)."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


class _Connection(asyncio.Protocol):
    """One register connection: frames in, replies out, its own idle and partial-frame clocks."""

    def __init__(self, server: SimTcpServer, peer: str, host: str, quiet: bool = False) -> None:
        self.server = server
        self.peer = peer  # the address the caps count it under
        self.host = host  # as the socket reported it, for the log
        self.quiet = quiet  # its coming and going is in a condition's line: debug only
        self.loop = asyncio.get_running_loop()
        self.decoder = FrameDecoder(encoding=server.responder.encoding, max_frame=server.max_frame)
        self.transport: asyncio.Transport | None = None
        self.last_frame = self.loop.time()  # the idle clock: only complete frames move it
        self.partial_since: float | None = None
        self.inflight = 0
        self.closed_for = ""
        self._draining = False  # no more reading: close once the answers under way are out
        self._write_paused = False
        self._read_paused = False
        self._idle_timer: asyncio.TimerHandle | None = None
        self._partial_timer: asyncio.TimerHandle | None = None

    # ---- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, though not necessarily asyncio's class (uvloop's is not one).
        self.transport = cast(asyncio.Transport, transport)
        self.server._opened(self)
        if self.server.idle_timeout_s > 0:
            self._idle_timer = self.loop.call_at(
                self.last_frame + self.server.idle_timeout_s, self._idle_due
            )

    def data_received(self, data: bytes) -> None:
        server, transport = self.server, self.transport
        assert transport is not None
        stats = server.stats
        now = self.loop.time()
        before = self.decoder.stats.dropped_bytes
        items = self.decoder.feed(data)
        for item in items:
            if isinstance(item, Frame):
                self.last_frame = now
                self._answer(item)
            else:
                stats.frame_errors[item.reason] += 1
                reply = server.responder.error_reply(item)
                if reply is not None:
                    self._send(reply)
        stats.dropped_bytes += self.decoder.stats.dropped_bytes - before
        if not self.decoder.pending:
            self.partial_since = None
        elif items or self.partial_since is None:
            # The read timeout runs from the unfinished frame's start.
            self.partial_since = now
            if self._partial_timer is None:
                self._partial_timer = self.loop.call_at(
                    now + server.read_timeout_s, self._partial_due
                )

    def eof_received(self) -> bool:
        # A register that half-closes after its request still gets the answers under way.
        self._draining = True
        return self.inflight > 0

    def pause_writing(self) -> None:
        self._write_paused = True  # the peer does not read its replies: stop reading its requests
        self._flow()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._flow()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._idle_timer, self._partial_timer):
            if timer is not None:
                timer.cancel()
        self.server._closed(self, exc)

    # ---- answers ---------------------------------------------------------------------------------

    def _answer(self, frame: Frame) -> None:
        self.inflight += 1
        try:
            self.server.responder.handle(frame, self._replied, self._wanted)
        except Exception:  # a bug must cost one reply, never the connection or the daemon
            log.exception("sim_reply_failed", peer=self.host)
            self._replied(b"")
        if self.inflight >= MAX_INFLIGHT:
            self._flow()

    def _replied(self, reply: bytes) -> None:
        """The answer to one frame (at once, or when its commit is done)."""
        self._send(reply)
        self.inflight -= 1
        if self._draining and not self.inflight and self.transport is not None:
            self.transport.close()
        if self._read_paused:
            self._flow()

    def _wanted(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def _send(self, reply: bytes) -> None:
        # A peer that reset us is gone: writing on would only make asyncio log each attempt.
        if reply and self._wanted():
            assert self.transport is not None
            self.transport.write(reply)

    def _flow(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing() or self._draining:
            return
        pause = self._write_paused or self.inflight >= MAX_INFLIGHT
        if pause != self._read_paused:
            self._read_paused = pause
            if pause:
                transport.pause_reading()
            else:
                transport.resume_reading()

    # ---- clocks ----------------------------------------------------------------------------------

    def _idle_due(self) -> None:
        # Re-armed lazily: a frame only moves `last_frame`, so answering costs no timer work.
        self._idle_timer = None
        due = self.last_frame + self.server.idle_timeout_s
        if due - self.loop.time() > 0.01:
            self._idle_timer = self.loop.call_at(due, self._idle_due)
            return
        self.server.stats.idle_closes += 1
        self.close("idle", abort=False)

    def _partial_due(self) -> None:
        self._partial_timer = None
        if self.partial_since is None:
            return
        due = self.partial_since + self.server.read_timeout_s
        if due - self.loop.time() > 0.01:
            self._partial_timer = self.loop.call_at(due, self._partial_due)
            return
        self.server.stats.partial_timeout(self.decoder)
        self.partial_since = None

    def stop_reading(self) -> None:
        if self._wanted():
            assert self.transport is not None
            self._draining = True
            self.transport.pause_reading()

    def close(self, reason: str, *, abort: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.closed_for = reason
        if abort:  # frees the descriptor now, whatever the peer left unread
            self.transport.abort()
        else:
            self.transport.close()


def _idleness(connection: _Connection) -> tuple[bool, float]:
    # The longest idle goes first; one with an answer under way only when every one has.
    return connection.inflight > 0, connection.last_frame


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
        max_connections: int = MAX_CONNECTIONS,
        max_connections_per_peer: int = MAX_CONNECTIONS_PER_PEER,
    ) -> None:
        self.responder = responder
        self.host = host
        self.requested_port = port
        self.allow = list(allow)
        self.max_frame = max_frame
        self.read_timeout_s = read_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.max_connections = max_connections
        self.max_connections_per_peer = max_connections_per_peer
        self.room_idle_s = ROOM_IDLE_S
        self.stats = TcpStats(max_connections=max_connections)
        self._listeners: list[socket.socket] = []
        self._accepting: list[asyncio.Task[None]] = []
        self._connections: set[_Connection] = set()
        self._by_peer: dict[str, set[_Connection]] = {}
        self._all_closed = asyncio.Event()
        self._reserve = Reserve()
        self._accept_failing_since: float | None = None
        self._refused_log = Repeating("sim_peer_refused")
        self._cap_logs = {
            "peer_cap": Repeating("sim_peer_at_connection_cap"),
            "total_cap": Repeating("sim_connection_cap_reached"),
            "descriptors": Repeating("sim_connection_closed_for_descriptors"),
        }

    @staticmethod
    def prepare_process() -> None:
        """Process-wide set-up, once, by the daemon that owns the process: raise the soft
        open-file limit to the hard one, and log the loop's accept failures (the admin API's
        listener) once per condition instead of once per attempt with a traceback."""
        raise_open_file_limit()
        loop = asyncio.get_running_loop()
        if not isinstance(loop.get_exception_handler(), AcceptFailureLog):
            loop.set_exception_handler(AcceptFailureLog(loop.get_exception_handler()))

    @property
    def port(self) -> int:
        if not self._listeners:
            return self.requested_port
        return int(self._listeners[0].getsockname()[1])

    @property
    def listening(self) -> bool:
        return any(not task.done() for task in self._accepting)

    async def start(self) -> None:
        self._limit_to_descriptors()
        try:
            self._listeners = listen(self.host, self.requested_port)
        except OSError as error:
            where = f"[{self.host}]" if ":" in self.host else self.host
            in_use = error.errno in (errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", -1))
            reason = "the address is already in use" if in_use else str(error)
            raise OSError(
                error.errno,
                f"the SIM port cannot listen on {where}:{self.requested_port}: {reason}"
                " (sim.host, sim.port)",
            ) from error
        self._reserve.take()
        for listener in self._listeners:
            listener.setblocking(False)
            self._accepting.append(asyncio.create_task(self._accept_loop(listener)))
        log.info(
            "sim_tcp_listening",
            host=self.host,
            port=self.port,
            addresses=[sock_name(listener) for listener in self._listeners],
            max_connections=self.stats.max_connections,
            max_connections_per_peer=self.max_connections_per_peer,
        )

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop accepting, wait (up to grace_s) for answers under way, then close connections."""
        if not self._listeners:
            return
        for task in self._accepting:
            task.cancel()
        await asyncio.gather(*self._accepting, return_exceptions=True)
        for listener in self._listeners:
            listener.close()
        self._accepting, self._listeners = [], []
        for connection in self._connections:
            connection.stop_reading()  # answers under way finish; no new ones start
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        # A frame waiting behind its workstation's answer starts when that one is done.
        while self.responder.tasks and (left := deadline - loop.time()) > 0:
            await asyncio.wait(set(self.responder.tasks), timeout=left)
        for connection in list(self._connections):
            connection.close("stopping", abort=False)
        if self._connections:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_closed.wait(), timeout=grace_s)
        self._reserve.release()

    def _limit_to_descriptors(self) -> None:
        """Under a low open-file limit, hold fewer connections than configured rather than take
        the descriptors SQLite and the admin API need."""
        limit = open_file_limit()
        if limit is None:
            return
        budget = max(8, limit - descriptors_in_use() - DESCRIPTOR_RESERVE)
        if budget < self.max_connections:
            self.stats.max_connections = budget
            log.warning(
                "sim_max_connections_lowered",
                configured=self.max_connections,
                max_connections=budget,
                open_file_limit=limit,
                hint="raise the service's LimitNOFILE",
            )

    # ---- accepting -------------------------------------------------------------------------------

    async def _accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, address = await loop.sock_accept(listener)
            except ConnectionError:
                continue  # the peer gave up before we took it
            except OSError as error:
                if error.errno in OUT_OF_DESCRIPTORS:
                    await self._make_room(listener, error)
                else:
                    self._accept_failed(error)
                    await asyncio.sleep(ACCEPT_RETRY_S)
                continue
            host = str(address[0]) if isinstance(address, tuple) else ""
            admission = self._admit(sock, host)
            if admission == "refused":
                continue
            peer = peer_address(host)
            # A newcomer that made room is counted in the cap's line, not logged on its own.
            quiet = admission == "made_room"
            try:
                await loop.connect_accepted_socket(
                    functools.partial(_Connection, self, peer, host, quiet), sock
                )
            except OSError:
                sock.close()
                continue
            if not self._reserve.held and not self._reserve.take():
                self._win_back_reserve()  # still out of descriptors
            elif self._accept_failing_since is not None:
                log.info(
                    "sim_accept_recovered",
                    failures=self.stats.accept_failures,
                    for_s=round(loop.time() - self._accept_failing_since, 1),
                    open_connections=len(self._connections),
                )
                self._accept_failing_since = None

    def _accept_failed(self, error: OSError) -> None:
        self.stats.accept_failures += 1
        if self._accept_failing_since is None:
            self._accept_failing_since = asyncio.get_running_loop().time()
            log.warning(
                "sim_accept_failing",
                error=error.strerror or str(error),
                open_connections=len(self._connections),
                hint="out of file descriptors: raise LimitNOFILE, or see who holds connections",
            )

    async def _make_room(self, listener: socket.socket, error: OSError) -> None:
        """Out of descriptors: spend the reserve on the waiting peer, or else close our longest-
        idle connection for it; with neither, wait for descriptors to come free elsewhere."""
        self._accept_failed(error)
        await self._peer_waiting(listener)  # Linux says EMFILE even with nobody waiting
        if self._reserve.release():
            return
        victim = self._idle_for_descriptors()
        if victim is None:
            await asyncio.sleep(ACCEPT_RETRY_S)
            return
        self._evict(victim, "descriptors")
        await asyncio.sleep(0)  # the victim's socket closes on this turn of the loop

    async def _peer_waiting(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        waiting: asyncio.Future[None] = loop.create_future()

        def ready() -> None:
            if not waiting.done():
                waiting.set_result(None)

        try:
            loop.add_reader(listener.fileno(), ready)
        except NotImplementedError:  # the proactor loop (Windows) has no readiness callbacks
            await asyncio.sleep(ACCEPT_RETRY_S)
            return
        try:
            await waiting
        finally:
            loop.remove_reader(listener.fileno())

    def _win_back_reserve(self) -> None:
        # The reserve went to the newcomer: an idle connection gives its place up.
        victim = self._idle_for_descriptors()
        if victim is None:
            return  # nobody idle enough: try again at the next accept
        self._evict(victim, "descriptors")
        asyncio.get_running_loop().call_soon(self._reserve.take)  # after the victim's close

    def _admit(self, sock: socket.socket, host: str) -> Literal["refused", "admitted", "made_room"]:
        """Apply the allow-list and the caps to a newcomer (a refused one is closed here)."""
        now = asyncio.get_running_loop().time()
        if not peer_allowed(host, self.allow):
            self.stats.refused["not_allowed"] += 1
            self._refused_log.hit(now, peer=host, reason="not in sim.allow")
            sock.close()
            return "refused"
        admission: Literal["admitted", "made_room"] = "admitted"
        peer = peer_address(host)
        own = self._by_peer.get(peer)
        if own and len(own) >= self.max_connections_per_peer:
            admission = "made_room"
            self._evict(
                min(own, key=_idleness),
                "peer_cap",
                peer=peer,
                max_connections_per_peer=self.max_connections_per_peer,
            )
        if len(self._connections) >= self.stats.max_connections:
            victim = self._candidate(newcomer=peer)
            if victim is not None:
                admission = "made_room"
                self._evict(
                    victim, "total_cap", peer=peer, max_connections=self.stats.max_connections
                )
        return admission

    def _candidate(self, newcomer: str) -> _Connection | None:
        """The longest-idle connection of the address holding the most (the newcomer's own on a
        tie): a crowd of connections makes room from itself first."""
        best: tuple[int, bool] | None = None
        crowd: set[_Connection] = set()
        for peer, own in self._by_peer.items():
            rank = (len(own), peer == newcomer)
            if best is None or rank > best:
                best, crowd = rank, own
        return min(crowd, key=_idleness) if crowd else None

    def _idle_for_descriptors(self) -> _Connection | None:
        """Out of descriptors, who gives one up: only a connection without a complete frame for
        `room_idle_s` (a register that spoke a moment ago keeps its place), from the address
        holding the most connections, the longest idle first."""
        idle_s = self.room_idle_s
        if self.idle_timeout_s > 0:
            idle_s = min(idle_s, self.idle_timeout_s)
        before = asyncio.get_running_loop().time() - idle_s
        best: tuple[int, list[_Connection]] | None = None
        for own in self._by_peer.values():
            idle = [c for c in own if c.last_frame <= before and not c.inflight]
            if idle and (best is None or len(own) > best[0]):
                best = (len(own), idle)
        return min(best[1], key=_idleness) if best else None

    def _evict(self, connection: _Connection, reason: str, **details: object) -> None:
        """Close a connection to make room (reason: peer_cap, total_cap or descriptors)."""
        self.stats.evicted[reason] += 1
        self._cap_logs[reason].hit(
            asyncio.get_running_loop().time(),
            closed_peer=connection.peer,
            evicted=self.stats.evicted[reason],
            **details,
        )
        self._forget(connection)  # off the books now, so the caps count the newcomer right
        connection.quiet = True
        connection.close(f"evicted: {reason}", abort=True)

    # ---- the books -------------------------------------------------------------------------------

    def _opened(self, connection: _Connection) -> None:
        self._connections.add(connection)
        self._by_peer.setdefault(connection.peer, set()).add(connection)
        self._all_closed.clear()
        self.stats.accepted += 1
        self.stats.open_connections = len(self._connections)
        (log.debug if connection.quiet else log.info)("sim_connected", peer=connection.host)

    def _forget(self, connection: _Connection) -> None:
        self._connections.discard(connection)
        own = self._by_peer.get(connection.peer)
        if own is not None:
            own.discard(connection)
            if not own:
                del self._by_peer[connection.peer]
        self.stats.open_connections = len(self._connections)
        if not self._connections:
            self._all_closed.set()

    def _closed(self, connection: _Connection, error: Exception | None) -> None:
        self._forget(connection)
        (log.debug if connection.quiet else log.info)(
            "sim_disconnected",
            peer=connection.host,
            reason=connection.closed_for or (str(error) if error else "closed by the register"),
        )
