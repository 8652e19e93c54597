"""The daemon as store IT runs it, once per transport: `edge-gateway run` configured only by
environment variables, each adapter's readiness awaited on its log, a register served."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import serial_asyncio_fast
from conftest import STORE_ID, sample_coupons, sample_members
from gateway_process import GatewayProcess
from waiting import until

from gateway.config import Settings, load_settings
from gateway.daemon import Daemon
from gateway.store.store import Store
from pos_adapters.mqtt import Topics
from pos_adapters.sim.codec import ACK

from .harness import TRANSPORTS, opened
from .infra import Mosquitto, PtyPair
from .registers import MqttRegister, Register, SimRegister

CARD = "6001000000000001"


class _Lines(list[dict[str, Any]]):
    """The daemon's log lines; `changed()` waits for the next one."""

    def __init__(self) -> None:
        super().__init__()
        self._appended = asyncio.Event()

    def append(self, line: dict[str, Any]) -> None:
        super().append(line)
        self._appended.set()
        self._appended = asyncio.Event()

    async def changed(self) -> None:
        await self._appended.wait()


class WatchedGateway(GatewayProcess):
    """A daemon whose log events can be awaited as they come."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        super().__init__(process)
        self.lines = _Lines()

    @classmethod
    async def start(cls, data_dir: Path, env: Mapping[str, str] | None = None) -> WatchedGateway:
        started = await super().start(data_dir, env)
        assert isinstance(started, WatchedGateway)
        return started

    async def logged(self, event: str, within_s: float = 20.0) -> dict[str, Any]:
        lines = self.lines
        assert isinstance(lines, _Lines)
        async with asyncio.timeout(within_s):
            while not self.events(event):
                assert self.process.returncode is None, f"the daemon exited: {lines[-10:]}"
                await lines.changed()
        return self.events(event)[0]


async def prepared_data_dir(tmp_path: Path) -> Path:
    """A data directory with the sample members and coupons, as `edge-gateway import` leaves it."""
    data_dir = tmp_path / "data"
    store = await Store.open(data_dir / "gateway.db")
    await store.upsert_members(sample_members())
    await store.upsert_coupons(sample_coupons())
    await store.close()
    return data_dir


@pytest.fixture
async def stopped_at_end() -> AsyncIterator[list[Callable[[], Awaitable[None]]]]:
    closers: list[Callable[[], Awaitable[None]]] = []
    yield closers
    for close in reversed(closers):
        await close()


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_the_daemon_serves_a_register(
    kind: str, tmp_path: Path, stopped_at_end: list[Callable[[], Awaitable[None]]]
) -> None:
    data_dir = await prepared_data_dir(tmp_path)
    env: dict[str, str] = {}
    pair: PtyPair | None = None
    broker: Mosquitto | None = None
    if kind == "serial":
        pair = PtyPair(tmp_path / "serial", "line1")
        await pair.start()
        stopped_at_end.append(pair.stop)
        device = {"device": str(pair.gateway_end), "baudrate": 115200}
        env["EDGE_GATEWAY_SERIAL__PORTS"] = json.dumps([device])
    if kind == "mqtt":
        broker = Mosquitto(tmp_path / "broker")
        await broker.start()
        stopped_at_end.append(broker.stop)
        env["EDGE_GATEWAY_MQTT__URL"] = broker.url

    daemon = await WatchedGateway.start(data_dir, env)  # returns at `gateway_ready`
    stopped_at_end.insert(0, daemon.close)

    register: Register
    if pair is not None:
        opened = await daemon.logged("serial_port_open")
        assert opened["device"] == str(pair.gateway_end) and opened["baudrate"] == 115200
        end = str(pair.register_end)
        register = SimRegister(
            7, lambda: serial_asyncio_fast.open_serial_connection(url=end, baudrate=115200)
        )
        await register.connect()
    elif broker is not None:
        connected = await daemon.logged("mqtt_connected")
        assert connected["topic"] == f"loyalty/{STORE_ID}/pos/+/req"
        register = MqttRegister(7, "127.0.0.1", broker.port, Topics("loyalty", STORE_ID))
        await register.connect()
    else:
        register = SimRegister(7, lambda: asyncio.open_connection("127.0.0.1", daemon.port))
        await register.connect()
    stopped_at_end.insert(0, register.close)

    reply = await register.request("IDENT", "7", "1", "0", CARD)

    assert reply == ["IDENT_OK", "M1", "Ann K.", "GOLD", "120", "POINTS", "Welcome Ann K."]
    if isinstance(register, SimRegister) and kind == "serial":
        assert register.controls == [ACK]
    assert await daemon.terminate() == 0
    assert daemon.events("gateway_stopped")


async def test_the_daemon_answers_the_sources_it_is_told_to_in_the_pipe_style(
    tmp_path: Path, stopped_at_end: list[Callable[[], Awaitable[None]]]
) -> None:
    """`sim.pipe_reply_sources`, set by environment, reaches the TCP and the serial responders:
    workstation 7 is answered in one `|`-joined field on both, workstation 8 field by field."""
    data_dir = await prepared_data_dir(tmp_path)
    pair = PtyPair(tmp_path / "serial", "line1")
    await pair.start()
    stopped_at_end.append(pair.stop)
    env = {
        "EDGE_GATEWAY_SERIAL__PORTS": json.dumps([{"device": str(pair.gateway_end)}]),
        "EDGE_GATEWAY_SIM__PIPE_REPLY_SOURCES": '["7LOYAL"]',
    }
    daemon = await WatchedGateway.start(data_dir, env)
    stopped_at_end.insert(0, daemon.close)
    await daemon.logged("serial_port_open")
    end = str(pair.register_end)
    registers = [
        SimRegister(7, lambda: asyncio.open_connection("127.0.0.1", daemon.port), "pipe"),
        SimRegister(8, lambda: asyncio.open_connection("127.0.0.1", daemon.port)),
        SimRegister(
            7, lambda: serial_asyncio_fast.open_serial_connection(url=end, baudrate=9600), "pipe"
        ),
    ]
    for register in registers:
        await register.connect()
        stopped_at_end.insert(0, register.close)

    for register in registers:
        reply = await register.request("IDENT", str(register.wsid), "1", "0", CARD)
        assert reply == ["IDENT_OK", "M1", "Ann K.", "GOLD", "120", "POINTS", "Welcome Ann K."]
    # SimRegister checked that each pipe reply was one field; the fields one came as 7 fields.
    assert [len(register.pipe_frames) for register in registers] == [1, 0, 1]
    assert await daemon.terminate() == 0


async def test_the_broker_marks_a_killed_gateway_offline_by_its_last_will(
    tmp_path: Path, stopped_at_end: list[Callable[[], Awaitable[None]]]
) -> None:
    data_dir = await prepared_data_dir(tmp_path)
    broker = Mosquitto(tmp_path / "broker")
    await broker.start()
    stopped_at_end.append(broker.stop)
    daemon = await WatchedGateway.start(data_dir, {"EDGE_GATEWAY_MQTT__URL": broker.url})
    stopped_at_end.insert(0, daemon.close)
    await daemon.logged("mqtt_connected")
    status_topic = Topics("loyalty", STORE_ID).status

    async with aiomqtt.Client(
        "127.0.0.1", broker.port, protocol=aiomqtt.ProtocolVersion.V5
    ) as watcher:
        await watcher.subscribe(status_topic, qos=1)
        iterator = watcher.messages.__aiter__()
        retained = await asyncio.wait_for(iterator.__anext__(), 5)
        online = json.loads(retained.payload)
        assert retained.retain
        assert online["state"] == "online" and online["since"] and online["version"]

        daemon.process.send_signal(signal.SIGKILL)  # no DISCONNECT is ever sent
        will = await asyncio.wait_for(iterator.__anext__(), 10)
        assert json.loads(will.payload) == {**online, "state": "offline", "since": None,
                                            "reason": "connection lost"}  # fmt: skip
    await daemon.wait()
    # Retained: whoever subscribes later (a dashboard, a register starting up) sees it too.
    async with aiomqtt.Client(
        "127.0.0.1", broker.port, protocol=aiomqtt.ProtocolVersion.V5
    ) as late:
        await late.subscribe(status_topic, qos=1)
        retained = await asyncio.wait_for(late.messages.__aiter__().__anext__(), 5)
        assert retained.retain and json.loads(retained.payload)["state"] == "offline"


def settings_for(tmp_path: Path, **sections: Any) -> Settings:
    empty = tmp_path / "empty.toml"  # shields the test from a machine's /etc/edge-gateway
    empty.write_text("")
    return load_settings(
        empty, store_id=STORE_ID, data_dir=str(tmp_path / "data"), timezone="UTC",
        sim={"port": 0}, admin={"port": 0}, **sections,
    )  # fmt: skip


async def test_status_reports_every_transport_and_a_lost_port(
    tmp_path: Path, stopped_at_end: list[Callable[[], Awaitable[None]]]
) -> None:
    pairs = [PtyPair(tmp_path / "serial", f"line{n}") for n in (1, 2)]
    broker = Mosquitto(tmp_path / "broker")
    for pair in pairs:
        await pair.start()
        stopped_at_end.append(pair.stop)
    await broker.start()
    stopped_at_end.append(broker.stop)
    devices = [str(pair.gateway_end) for pair in pairs]
    ports = [{"device": devices[0], "baudrate": 115200}, {"device": devices[1], "baudrate": 19200}]
    daemon = Daemon(settings_for(tmp_path, serial={"ports": ports}, mqtt={"url": broker.url}))
    await daemon.start()
    stopped_at_end.insert(0, daemon.stop)
    assert daemon.serial is not None and daemon.mqtt is not None
    mqtt = daemon.mqtt
    await opened(daemon.serial)
    await until(lambda: mqtt.state == "connected")

    adapters = (await daemon.status())["adapters"]
    json.dumps(adapters)  # /status and the heartbeat send it as JSON
    assert adapters["sim_tcp"]["state"] == "listening"
    assert adapters["serial"]["state"] == "open" and adapters["serial"]["connections"] == 2
    assert [adapters["serial"]["ports"][d]["state"] for d in devices] == ["open", "open"]
    assert daemon.serial.lines[1].settings.baudrate == 19200
    assert adapters["mqtt"]["state"] == "connected" and adapters["mqtt"]["connections"] == 1
    assert adapters["mqtt"]["broker"] == broker.url

    await pairs[0].stop()
    line = daemon.serial.lines[0]
    await until(lambda: line.state == "reopening")
    adapters = (await daemon.status())["adapters"]
    assert adapters["serial"]["state"] == "degraded" and adapters["serial"]["connections"] == 1
    assert adapters["serial"]["ports"][devices[0]]["outages"] == 1
    assert adapters["serial"]["ports"][devices[1]]["state"] == "open"


async def test_an_unreadable_mqtt_password_file_stops_the_start(tmp_path: Path) -> None:
    missing = tmp_path / "mqtt-password"
    daemon = Daemon(
        settings_for(tmp_path, mqtt={"url": "mqtt://127.0.0.1:1", "password_file": str(missing)})
    )
    try:
        with pytest.raises(FileNotFoundError):
            await daemon.start()
    finally:
        await daemon.stop()
