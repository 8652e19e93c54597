"""The SIM protocol on serial lines: the TCP framing plus ACK/NAK, on every configured port.

Each port is one line to a register or to a POS controller that multiplexes several workstations
(told apart by source id, as on TCP). Bytes are cut into frames by the same `FrameDecoder` and
answered by a `SimResponder`, so a retransmitted frame is replayed from its cache:

- a frame the codec accepts gets ACK (0x06) at once, then its reply frame when it is ready;
- a frame the codec refuses gets NAK (0x15), followed by `ERROR <reason>` when its source id and
  seq could be read; one that cannot be addressed gets the NAK alone;
- noise between frames, and a frame cut short by a new SOH or by the read timeout, get nothing
  (the bytes are counted).

A port that cannot be opened or disappears (a USB adapter pulled, a pty closed) is reopened with
backoff. Its failure is logged once and its recovery once (its `link`, gateway.links); it never
stops the daemon or the other ports.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, cast

import serial_asyncio_fast
import structlog

from gateway.links import Link, LinkEvents
from pos_adapters.sim.codec import ACK, DEFAULT_MAX_FRAME, NAK, Frame, FrameDecoder, StreamStats
from pos_adapters.sim.session import SimResponder

log = structlog.get_logger("pos_adapters.sim.serial")

REOPEN_FIRST_S = 0.5
REOPEN_MAX_S = 10.0
# A line that stayed open this long counts as healthy: its next outage's backoff starts over.
# A shorter session keeps the backoff growing, so a device that opens and fails at once is not
# reopened in a tight loop.
STABLE_S = 10.0

_ACK = bytes([ACK])
_NAK = bytes([NAK])

LineState = Literal["opening", "open", "reopening", "stopped"]


@dataclass(frozen=True, slots=True)
class LineSettings:
    """One serial line, as `[[serial.ports]]` describes it (pyserial's names and values)."""

    device: str
    baudrate: int = 9600
    parity: str = "N"  # N, E, O, M, S
    stopbits: float = 1  # 1, 1.5, 2
    bytesize: int = 8  # 5..8


@dataclass(frozen=True, slots=True)
class LineOptions:
    """What every line of the adapter shares: the frame limit, how long a begun frame may take
    to finish, and the backoff between attempts to reopen a lost port."""

    max_frame: int = DEFAULT_MAX_FRAME
    read_timeout_s: float = 30.0
    reopen_first_s: float = REOPEN_FIRST_S
    reopen_max_s: float = REOPEN_MAX_S


@dataclass
class LineStats(StreamStats):
    frames: int = 0
    acks: int = 0
    naks: int = 0
    opens: int = 0
    failed_opens: int = 0
    link: Link = field(kw_only=True, repr=False)  # the line's availability

    @property
    def outages(self) -> int:
        return self.link.outages

    @property
    def last_error(self) -> str | None:
        return self.link.last_error


class _LineProtocol(asyncio.Protocol):
    """Hands the bytes of one open port to its line; `closed` resolves when the port goes."""

    def __init__(self, line: SerialLine) -> None:
        self.line = line
        self.transport: asyncio.Transport | None = None
        self.decoder = FrameDecoder(
            encoding=line.responder.encoding, max_frame=line.options.max_frame
        )
        self.closed: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
        self.partial_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, though not necessarily asyncio's class (uvloop's is not one).
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.transport is not None:
            self.line.received(self, data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.partial_timer is not None:
            self.partial_timer.cancel()
        if not self.closed.done():
            self.closed.set_result(exc)


class SerialLine:
    """One port: opens it, answers what arrives on it, and reopens it when it goes."""

    def __init__(
        self, settings: LineSettings, responder: SimResponder, options: LineOptions
    ) -> None:
        self.settings = settings
        self.responder = responder
        self.options = options
        self.link = Link(
            log,
            LinkEvents(
                down="serial_port_lost",
                up="serial_port_recovered",
                first_down="serial_port_unavailable",
                first_up="serial_port_open",
            ),
            device=settings.device,
        )
        self.stats = LineStats(link=self.link)
        self.state: LineState = "opening"
        self._changed = asyncio.Event()
        self._protocol: _LineProtocol | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def device(self) -> str:
        return self.settings.device

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"serial {self.device}")

    async def stop(self, grace_s: float = 5.0) -> None:
        """Let answers under way finish (up to grace_s), then close the port."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while self.responder.tasks and (left := deadline - loop.time()) > 0:
            await asyncio.wait(set(self.responder.tasks), timeout=left)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        protocol = self._protocol
        if protocol is not None and protocol.transport is not None:
            # abort, not close: close() flushes, and a flush waits forever on a line nobody reads.
            protocol.transport.abort()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(protocol.closed), grace_s)
        self._protocol = None
        self._set_state("stopped")

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Return once `condition()` holds; checked at every change of state or of a counter
        that no reply announces (failed opens, partial-frame timeouts)."""
        while not condition():
            await self._changed.wait()

    def _set_state(self, state: LineState) -> None:
        self.state = state
        self._pulse()

    def _pulse(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # ---- opening, losing and reopening the port -------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        delay = self.options.reopen_first_s
        while True:
            try:
                protocol = await self._open()
            except Exception as error:
                # SerialException/OSError for a missing or busy device, ValueError for settings
                # pyserial refuses, termios.error (no OSError) for settings the driver refuses:
                # whatever it is, the line is unavailable, and is retried and logged once.
                self.stats.failed_opens += 1
                self._failed(error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.options.reopen_max_s)
                continue
            opened_at = loop.time()
            self._opened()
            lost = await asyncio.shield(protocol.closed)  # stop() still waits on it
            self._protocol = None
            if loop.time() - opened_at >= STABLE_S:
                delay = self.options.reopen_first_s
            self._failed(lost or ConnectionError("port closed"))
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.options.reopen_max_s)

    async def _open(self) -> _LineProtocol:
        s = self.settings
        protocol = _LineProtocol(self)
        await serial_asyncio_fast.create_serial_connection(
            asyncio.get_running_loop(),
            lambda: protocol,
            s.device,
            baudrate=s.baudrate,
            parity=s.parity,
            stopbits=s.stopbits,
            bytesize=s.bytesize,
            exclusive=True,  # a second program (or gateway) on the same line would steal bytes
        )
        self._protocol = protocol
        return protocol

    def _opened(self) -> None:
        s = self.settings
        # Logged the first time (`serial_port_open`) and at the end of an outage.
        self.link.succeeded(
            baudrate=s.baudrate, parity=s.parity, stopbits=s.stopbits, bytesize=s.bytesize
        )
        self.stats.opens += 1
        self._set_state("open")

    def _failed(self, error: BaseException) -> None:
        # One warning per outage (`serial_port_unavailable` before the first open, then
        # `serial_port_lost`); the attempts after it are counted, not logged.
        self.link.failed(error)
        self._set_state("reopening")

    # ---- the bytes of an open port --------------------------------------------------------------

    def received(self, protocol: _LineProtocol, data: bytes) -> None:
        transport = protocol.transport
        assert transport is not None
        decoder = protocol.decoder
        stats = self.stats
        before = decoder.stats.dropped_bytes
        items = decoder.feed(data)
        for item in items:
            if isinstance(item, Frame):
                stats.frames += 1
                stats.acks += 1
                transport.write(_ACK)
                self._answer(item, transport)
            else:
                stats.frame_errors[item.reason] += 1
                stats.naks += 1
                reply = self.responder.error_reply(item)
                transport.write(_NAK if reply is None else _NAK + reply)
        stats.dropped_bytes += decoder.stats.dropped_bytes - before
        # A frame that starts must finish within read_timeout_s, counted from its first byte.
        if not decoder.pending:
            if protocol.partial_timer is not None:
                protocol.partial_timer.cancel()
                protocol.partial_timer = None
        elif items or protocol.partial_timer is None:
            if protocol.partial_timer is not None:
                protocol.partial_timer.cancel()
            protocol.partial_timer = asyncio.get_running_loop().call_later(
                self.options.read_timeout_s, self._partial_timeout, protocol
            )

    def _partial_timeout(self, protocol: _LineProtocol) -> None:
        protocol.partial_timer = None
        self.stats.partial_timeout(protocol.decoder)
        self._pulse()

    def _answer(self, frame: Frame, transport: asyncio.Transport) -> None:
        def send(reply: bytes) -> None:
            # A port lost meanwhile drops the reply; the register retransmits and gets it from
            # the responder's cache once the port is back.
            if reply and not transport.is_closing():
                transport.write(reply)

        # At once for an answer from memory; from the responder's task after a commit.
        self.responder.handle(frame, send)


class SerialAdapter:
    """Every configured serial line. `start()` returns at once; ports open in the background."""

    def __init__(
        self,
        responder: SimResponder,
        lines: Sequence[LineSettings],
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        read_timeout_s: float = 30.0,
        reopen_first_s: float = REOPEN_FIRST_S,
        reopen_max_s: float = REOPEN_MAX_S,
    ) -> None:
        self.responder = responder
        options = LineOptions(
            max_frame=max_frame,
            read_timeout_s=read_timeout_s,
            reopen_first_s=reopen_first_s,
            reopen_max_s=reopen_max_s,
        )
        self.lines = [SerialLine(settings, responder, options) for settings in lines]

    def line(self, device: str) -> SerialLine:
        return next(line for line in self.lines if line.device == device)

    async def start(self) -> None:
        for line in self.lines:
            line.start()

    async def stop(self, grace_s: float = 5.0) -> None:
        await asyncio.gather(*(line.stop(grace_s) for line in self.lines))

    def states(self) -> dict[str, dict[str, object]]:
        """Per device: state and counters, for status, metrics and the heartbeat."""
        return {
            line.device: {
                "state": line.state,
                "frames": line.stats.frames,
                "acks": line.stats.acks,
                "naks": line.stats.naks,
                "outages": line.stats.outages,
                "last_error": line.stats.last_error,
            }
            for line in self.lines
        }
