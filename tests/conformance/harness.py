"""One harness per transport: the real adapter in front of the real service and store, registers
that talk to it, and the transport's own failure (`fail()`) and recovery (`recover()`). The SIM
transports run in both reply styles (docs/protocol.md, "Reply style"): `tcp` and `serial` with
the default (each value a field), `tcp-pipe` and `serial-pipe` with replies joined by `|` and
registers that join their requests the same way. MQTT has one style (JSON)."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from conftest import STORE_ID
from waiting import until

from gateway.service import Gateway
from pos_adapters.mqtt import MqttAdapter, MqttOptions, MqttResponder, Topics
from pos_adapters.sim.serial import LineSettings, SerialAdapter, SerialLine
from pos_adapters.sim.session import ReplyStyle, SimResponder
from pos_adapters.sim.tcp import SimTcpServer

from .infra import Mosquitto, PtyPair
from .registers import MqttRegister, Register, SimRegister, Streams, on_serial_line

TRANSPORTS = ("tcp", "serial", "mqtt")
# What the conformance suite runs on: every transport, the SIM ones in both reply styles.
HARNESSES = (*TRANSPORTS, "tcp-pipe", "serial-pipe")


class Harness(Protocol):
    name: str
    damaged_reason: str  # what a damaged message is answered with on this transport

    @property
    def style(self) -> str:
        """The reply style: "fields" or "pipe" (SIM), "json" (MQTT)."""
        ...

    async def start(self) -> None: ...

    async def registers(self, *wsids: int) -> list[Register]:
        """Registers connected and ready, one per wsid (each on a line of its own on serial)."""
        ...

    async def fail(self) -> None:
        """The transport's own failure, awaited until the adapter has noticed it."""
        ...

    async def recover(self) -> None:
        """Undo `fail()`; returns once the adapter and every register are back."""
        ...

    def errors(self, reason: str) -> int:
        """ERROR replies counted by the adapter for `reason`."""
        ...

    def replayed(self) -> int:
        """Requests answered from the retransmission / redelivery cache."""
        ...

    def pipe_replaced(self) -> int:
        """Reply values whose `|` went as `/` (the SIM pipe reply style; 0 elsewhere)."""
        ...

    async def close(self) -> None: ...


class _Counted:
    """What every harness reads off its responder, and how it brings its registers back."""

    responder: SimResponder | MqttResponder

    def errors(self, reason: str) -> int:
        return self.responder.stats.errors[reason]

    def replayed(self) -> int:
        return self.responder.stats.replayed

    def pipe_replaced(self) -> int:
        responder = self.responder
        return responder.stats.pipe_replaced if isinstance(responder, SimResponder) else 0

    @staticmethod
    async def reconnect(registers: Sequence[Register]) -> None:
        for register in registers:
            await register.reconnect()


class TcpHarness(_Counted):
    damaged_reason = "BAD_CHECKSUM"

    def __init__(self, service: Gateway, directory: Path, style: ReplyStyle = "fields") -> None:
        self.name = "tcp" if style == "fields" else f"tcp-{style}"
        self.style: ReplyStyle = style
        self.responder = SimResponder(service, reply_style=style)
        self.server = SimTcpServer(
            self.responder, port=0, allow=[ipaddress.ip_network("127.0.0.0/8")]
        )
        self._registers: list[SimRegister] = []

    async def start(self) -> None:
        await self.server.start()

    async def _open(self) -> Streams:
        return await asyncio.open_connection("127.0.0.1", self.server.port)

    async def registers(self, *wsids: int) -> list[Register]:
        made = [SimRegister(wsid, self._open, self.style) for wsid in wsids]
        for register in made:
            await register.connect()
        self._registers += made
        return list(made)

    async def fail(self) -> None:
        for register in self._registers:
            register.abort()  # an RST, as when a register is unplugged mid-conversation

    async def recover(self) -> None:
        await self.reconnect(self._registers)

    async def close(self) -> None:
        await self.server.stop(grace_s=1.0)
        for register in self._registers:
            await register.close()


class SerialBench:
    """Serial lines on a test bench: socat pty pairs, the adapters serving them and registers on
    them, all adapters sharing one responder as the daemon's do."""

    def __init__(
        self,
        service: Gateway,
        directory: Path,
        *,
        reopen_first_s: float,
        reopen_max_s: float,
        style: ReplyStyle = "fields",
    ) -> None:
        self.responder = SimResponder(service, reply_style=style)
        self.style: ReplyStyle = style
        self.directory = directory
        self.reopen_first_s, self.reopen_max_s = reopen_first_s, reopen_max_s
        self.pairs: list[PtyPair] = []
        self.adapters: list[SerialAdapter] = []
        self.registers: list[SimRegister] = []

    async def pair(self, name: str, *, start: bool = True) -> PtyPair:
        pair = PtyPair(self.directory, name)
        if start:
            await pair.start()
        self.pairs.append(pair)
        return pair

    async def adapter(self, *pairs: PtyPair, read_timeout_s: float = 30.0) -> SerialAdapter:
        adapter = SerialAdapter(
            self.responder,
            [LineSettings(str(pair.gateway_end), baudrate=115200) for pair in pairs],
            read_timeout_s=read_timeout_s,
            reopen_first_s=self.reopen_first_s,
            reopen_max_s=self.reopen_max_s,
        )
        self.adapters.append(adapter)
        await adapter.start()
        return adapter

    async def register(self, pair: PtyPair, wsid: int = 7) -> SimRegister:
        register = on_serial_line(wsid, pair.register_end, self.style)
        await register.connect()
        self.registers.append(register)
        return register

    async def close(self) -> None:
        for adapter in self.adapters:
            await adapter.stop(grace_s=1.0)
        for register in self.registers:
            await register.close()
        await asyncio.gather(*(pair.stop() for pair in self.pairs))


class SerialHarness(_Counted):
    """Each register on a line of its own: a socat pty pair, served by one SerialAdapter per
    `registers()` call (so 20 registers are 20 ports of one adapter), all sharing one responder,
    as the daemon does."""

    damaged_reason = "BAD_CHECKSUM"

    def __init__(self, service: Gateway, directory: Path, style: ReplyStyle = "fields") -> None:
        self.name = "serial" if style == "fields" else f"serial-{style}"
        self.style = style
        self.bench = SerialBench(
            service, directory, reopen_first_s=0.02, reopen_max_s=0.2, style=style
        )
        self.responder = self.bench.responder

    async def start(self) -> None:
        pass

    async def registers(self, *wsids: int) -> list[Register]:
        bench = self.bench
        pairs = [await bench.pair(f"ws{wsid}-{len(bench.pairs)}", start=False) for wsid in wsids]
        await asyncio.gather(*(pair.start() for pair in pairs))
        await opened(await bench.adapter(*pairs))
        return [await bench.register(pair, wsid) for wsid, pair in zip(wsids, pairs, strict=True)]

    async def fail(self) -> None:
        lines = [line for adapter in self.bench.adapters for line in adapter.lines]
        outages = [line.stats.outages for line in lines]
        await asyncio.gather(*(pair.stop() for pair in self.bench.pairs))  # the ports disappear
        for line, before in zip(lines, outages, strict=True):
            await lost(line, before)

    async def recover(self) -> None:
        await asyncio.gather(*(pair.start() for pair in self.bench.pairs))
        for adapter in self.bench.adapters:
            await opened(adapter)
        await self.reconnect(self.bench.registers)

    async def close(self) -> None:
        await self.bench.close()


async def opened(adapter: SerialAdapter) -> None:
    """Every line of `adapter` open."""
    for line in adapter.lines:
        await line_open(line)


async def line_open(line: SerialLine) -> None:
    await until(lambda: line.state == "open")


async def lost(line: SerialLine, outages_before: int) -> None:
    await until(lambda: line.stats.outages > outages_before and line.state == "reopening")


class MqttHarness(_Counted):
    name = "mqtt"
    style = "json"
    damaged_reason = "BAD_FRAME"
    responder: MqttResponder

    def __init__(self, service: Gateway, directory: Path) -> None:
        self.broker = Mosquitto(directory / "broker")
        self.topics = Topics("loyalty", STORE_ID)
        self.responder = MqttResponder(service, self.topics)
        self.adapter: MqttAdapter | None = None
        self._registers: list[MqttRegister] = []

    async def start(self) -> None:
        await self.broker.start()
        options = MqttOptions.from_url(
            self.broker.url,
            client_id="edge-gateway-test",
            reconnect_first_s=0.02,
            reconnect_max_s=0.2,
            version="test",
        )
        self.adapter = MqttAdapter(self.responder, options)
        await self.adapter.start()
        await self.connected()

    async def connected(self) -> None:
        adapter = self.adapter
        assert adapter is not None
        await until(lambda: adapter.state == "connected")

    async def registers(self, *wsids: int) -> list[Register]:
        made = [MqttRegister(wsid, "127.0.0.1", self.broker.port, self.topics) for wsid in wsids]
        await asyncio.gather(*(register.connect() for register in made))
        self._registers += made
        return list(made)

    async def fail(self) -> None:
        adapter = self.adapter
        assert adapter is not None
        await self.broker.stop()
        await until(lambda: adapter.state == "connecting")

    async def recover(self) -> None:
        await self.broker.start()  # on the same port
        await self.connected()
        await self.reconnect(self._registers)

    async def close(self) -> None:
        if self.adapter is not None:
            await self.adapter.stop(grace_s=1.0)
        for register in self._registers:
            await register.close()
        await self.broker.stop()


def make_harness(name: str, service: Gateway, directory: Path) -> Harness:
    """`name`: a transport of `HARNESSES`, e.g. `tcp`, or `tcp-pipe` for the pipe reply style."""
    match name.split("-"):
        case ["tcp"]:
            return TcpHarness(service, directory)
        case ["tcp", "pipe"]:
            return TcpHarness(service, directory, "pipe")
        case ["serial"]:
            return SerialHarness(service, directory)
        case ["serial", "pipe"]:
            return SerialHarness(service, directory, "pipe")
        case ["mqtt"]:
            return MqttHarness(service, directory)
    raise ValueError(f"no harness {name!r}")
