"""Who may hold the SIM port, over real sockets: the per-address and total caps, the idle close,
retransmissions that are not the same request, running out of file descriptors, and dual stack."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import random
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import SAMPLE, RunningGateway
from gateway_process import PYTHON, GatewayProcess, cli, gateway_env
from sim_wire import raw_exchange
from waiting import cancelled, until

from gateway.service import Gateway
from pos_adapters.sim.codec import encode_frame
from pos_adapters.sim.register import RegisterConnection
from pos_adapters.sim.session import SimResponder
from pos_adapters.sim.tcp import SimTcpServer, peer_address

CARD = "6001000000000001"  # M1, Ann K.
OTHER_CARD = "6001000000000005"  # M5, Eva R.
CROWD = "127.0.0.1"
REGISTER = "127.0.0.2"
STRANGER = "127.0.0.3"

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
# Peers at several addresses: all of 127/8 answers on Linux (elsewhere only 127.0.0.1 does).
several_addresses = pytest.mark.skipif(sys.platform != "linux", reason="127/8 is Linux's")


async def open_from(source: str, port: int, host: str = "127.0.0.1") -> Streams:
    """A connection from a given loopback address (all of 127/8 is ours on Linux)."""
    return await asyncio.wait_for(asyncio.open_connection(host, port, local_addr=(source, 0)), 10)


async def register_from(source: str, port: int, host: str = "127.0.0.1") -> RegisterConnection:
    reader, writer = await open_from(source, port, host)
    return RegisterConnection(reader, writer)


async def open_crowd(source: str, port: int, count: int) -> list[Streams]:
    gate = asyncio.Semaphore(64)

    async def one() -> Streams:
        async with gate:
            return await open_from(source, port)

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def trickle(crowd: Sequence[Streams], every_s: float = 0.2) -> None:
    """Each connection sends a stray byte (noise, or a frame that never ends) now and then."""
    rng = random.Random(5)
    while True:
        for _, writer in crowd:
            if not writer.is_closing():
                writer.write(rng.choice([b".", b"\x01", b"x"]))
        await asyncio.sleep(every_s)


def close_all(crowd: Sequence[Streams]) -> None:
    for _, writer in crowd:
        writer.transport.abort()


@contextlib.asynccontextmanager
async def running(task: Awaitable[None]) -> AsyncIterator[None]:
    background = asyncio.ensure_future(task)
    try:
        yield
    finally:
        await cancelled(background)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
async def processes() -> AsyncIterator[list[GatewayProcess]]:
    started: list[GatewayProcess] = []
    yield started
    for process in started:
        await process.close()


async def import_members(data_dir: Path) -> None:
    code, _, err = await cli(data_dir, "import", "members", str(SAMPLE / "members.jsonl"))
    assert code == 0, err


def admin_port(process: GatewayProcess) -> int:
    return int(process.events("gateway_ready")[0]["admin_port"])


async def admin_status(process: GatewayProcess) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(f"http://127.0.0.1:{admin_port(process)}/status")
    response.raise_for_status()
    status: dict[str, Any] = response.json()
    return status


def tracebacks(process: GatewayProcess) -> list[dict[str, Any]]:
    return [line for line in process.lines if "exception" in line or "Traceback" in str(line)]


# ---- A. the connection caps and the idle close ---------------------------------------------------


@several_addresses
async def test_a_crowd_on_one_address_cannot_keep_another_address_register_out(
    data_dir: Path, processes: list[GatewayProcess]
) -> None:
    await import_members(data_dir)
    gateway = await GatewayProcess.start(
        data_dir, {"EDGE_GATEWAY_SIM__ALLOW": f'["{CROWD}/32", "{REGISTER}/32"]'}
    )
    processes.append(gateway)
    crowd = await open_crowd(CROWD, gateway.port, 600)
    try:
        async with running(trickle(crowd)):
            register = await register_from(REGISTER, gateway.port)
            try:
                ws = register.workstation(3)
                assert (await ws.request("PING", answer_within=3))[0] == "PONG"
                ident = await ws.request("IDENT", "3", "1", "0", CARD, answer_within=3)
                assert ident[:3] == ["IDENT_OK", "M1", "Ann K."]
            finally:
                await register.close()
            # The crowd made room from itself: at most its own cap, plus the register.
            sim = (await admin_status(gateway))["adapters"]["sim_tcp"]
            assert sim["connections"] <= 64 + 1
            # Strangers are refused; every one is counted, the condition logged once.
            for _ in range(20):
                reader, writer = await open_from(STRANGER, gateway.port)
                with contextlib.suppress(ConnectionError):
                    assert await asyncio.wait_for(reader.read(10), 5) == b""
                writer.close()
    finally:
        close_all(crowd)
    await until(lambda: len(gateway.events("sim_peer_refused")) >= 1)
    assert len(gateway.events("sim_peer_refused")) == 1
    (at_cap,) = gateway.events("sim_peer_at_connection_cap")  # 536 evictions, one line
    assert at_cap["peer"] == CROWD and at_cap["max_connections_per_peer"] == 64
    # The crowd's comings and goings are in that line; the log holds no line per connection.
    assert len(gateway.events("sim_connected")) <= 64 + 1
    assert tracebacks(gateway) == []


@several_addresses
async def test_at_the_total_cap_room_is_made_from_the_address_holding_the_most(
    service: Gateway,
) -> None:
    server = SimTcpServer(
        SimResponder(service),
        port=0,
        allow=[ipaddress.ip_network("127.0.0.0/8")],
        max_connections=100,
        max_connections_per_peer=1000,  # one address could take every place but for the rule
    )
    await server.start()
    crowd = await open_crowd(CROWD, server.port, 150)
    try:
        async with running(trickle(crowd)):
            await until(lambda: server.stats.accepted == 150)  # every place is the crowd's
            register = await register_from(REGISTER, server.port)
            try:
                ws = register.workstation(4)
                assert (await ws.request("PING", answer_within=3))[0] == "PONG"
                crowd += await open_crowd(CROWD, server.port, 100)  # the crowd keeps coming
                await until(lambda: server.stats.accepted == 251)
                assert (await ws.request("PING", answer_within=3))[0] == "PONG"  # same socket
            finally:
                await register.close()
        assert server.stats.evicted["total_cap"] == 251 - 100
        assert server.stats.refused.total() == 0
    finally:
        close_all(crowd)
        await server.stop(grace_s=1)


@several_addresses
async def test_only_complete_frames_keep_a_connection_from_being_idle(service: Gateway) -> None:
    server = SimTcpServer(
        SimResponder(service),
        port=0,
        allow=[ipaddress.ip_network("127.0.0.0/8")],
        read_timeout_s=0.5,
        idle_timeout_s=1.0,
    )
    await server.start()
    loop = asyncio.get_running_loop()
    stray, partial = await open_crowd(CROWD, server.port, 2)
    register = await register_from(REGISTER, server.port)
    ws = register.workstation(5)
    ping = encode_frame(b"  5LOYAL", 1, ["PING"])

    async def send(writer: asyncio.StreamWriter, pieces: Sequence[bytes]) -> None:
        for piece in pieces:
            if writer.is_closing():
                return
            writer.write(piece)
            await asyncio.sleep(0.2)

    async def keep_pinging() -> None:
        while True:
            assert (await ws.request("PING"))[0] == "PONG"
            await asyncio.sleep(0.3)

    try:
        started = loop.time()
        async with (
            running(send(stray[1], [b"."] * 50)),
            running(send(partial[1], [ping[i : i + 1] for i in range(len(ping))] * 5)),
            running(keep_pinging()),
        ):
            # Both trickles are closed after the idle time, though bytes kept arriving.
            assert await asyncio.wait_for(stray[0].read(), 5) == b""
            assert await asyncio.wait_for(partial[0].read(), 5) == b""
            assert loop.time() - started >= 0.9
            assert server.stats.idle_closes == 2
            assert (await ws.request("PING"))[0] == "PONG"  # the register that talks stays
    finally:
        await register.close()
        close_all([stray, partial])
        await server.stop(grace_s=1)


# ---- B. a replay goes only to the same request ---------------------------------------------------


async def exchange(port: int, data: bytes) -> tuple[str, ...]:
    (reply,) = await raw_exchange(port, data)
    return reply.fields


async def test_an_r_frame_with_other_fields_is_executed_not_answered_with_the_cache(
    gateway: RunningGateway,
) -> None:
    sid = b" 21LOYAL"
    ident = ["IDENT", "21", "1", "0", CARD]
    first = await exchange(gateway.port, encode_frame(sid, 7, ident))
    assert first[:3] == ("IDENT_OK", "M1", "Ann K.")
    # Same source id and seq, flagged R, but another request: never Ann's reply.
    ping = await exchange(gateway.port, encode_frame(sid, 7, ["PING"], retransmit=True))
    assert ping[0] == "PONG"
    other = ["IDENT", "21", "1", "0", OTHER_CARD]
    eva = await exchange(gateway.port, encode_frame(sid, 7, other, retransmit=True))
    assert eva[:3] == ("IDENT_OK", "M5", "Eva R.")
    assert gateway.responder.stats.replayed == 0
    # The true retransmission of the last request is still answered from the cache.
    again = await exchange(gateway.port, encode_frame(sid, 7, other, retransmit=True))
    assert again == eva and gateway.responder.stats.replayed == 1
    assert gateway.service.stats.requests[("IDENT", "ok")] == 2


# ---- C. out of file descriptors ------------------------------------------------------------------


def accept_failure_lines(process: GatewayProcess) -> list[dict[str, Any]]:
    return [
        line
        for line in process.lines
        if "accept" in str(line.get("event", "")).lower()
        and ("fail" in str(line["event"]) or "out of system resource" in str(line["event"]))
    ]


async def start_with_open_file_limit(
    data_dir: Path, limit: int, env: dict[str, str]
) -> GatewayProcess:
    """The daemon under a hard open-file limit it cannot raise, as under a tight LimitNOFILE."""
    import resource

    def lower_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    process = await asyncio.create_subprocess_exec(
        PYTHON,
        "-m",
        "gateway",
        "run",
        env=gateway_env(data_dir, **env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        preexec_fn=lower_limit,
    )
    gateway = GatewayProcess(process)
    ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    gateway._reader = asyncio.create_task(gateway._read_log(ready))
    gateway.port = await asyncio.wait_for(ready, 30)
    return gateway


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_NOFILE and 127/8 as on Linux")
async def test_out_of_descriptors_is_logged_once_and_registers_still_get_in(
    data_dir: Path, processes: list[GatewayProcess]
) -> None:
    gateway = await start_with_open_file_limit(
        data_dir,
        256,
        {
            "EDGE_GATEWAY_SIM__ALLOW": f'["{CROWD}/32", "{REGISTER}/32", "{STRANGER}/32"]',
            # The admin API's own cap would stop the flood short of the limit: lift it.
            "EDGE_GATEWAY_ADMIN__MAX_CONNECTIONS": "10000",
        },
    )
    processes.append(gateway)
    # A low limit lowers the SIM cap, leaving descriptors to the rest of the daemon.
    (lowered,) = gateway.events("sim_max_connections_lowered")
    assert lowered["max_connections"] < 256 - 100
    early = await register_from(STRANGER, gateway.port)
    flood: list[Streams] = []
    try:
        assert (await early.workstation(1).request("PING"))[0] == "PONG"
        # Every descriptor the process may have goes to connections on the admin API.
        flood += await open_crowd(CROWD, admin_port(gateway), 300)
        await until(lambda: bool(gateway.events("accept_failing")))
        # A register that comes now gets in on the reserve and is answered.
        during = await register_from(REGISTER, gateway.port)
        try:
            assert (await during.workstation(2).request("PING", answer_within=5))[0] == "PONG"
        finally:
            await during.close()
        assert gateway.events("sim_accept_failing")
        # More wait at the SIM port too; a register that spoke a moment ago keeps its place.
        flood += await open_crowd(CROWD, gateway.port, 100)
        # Hold the flood: asyncio alone would log each listener's failure every second.
        await asyncio.sleep(3)
        assert (await early.workstation(1).request("PING"))[0] == "PONG"
    finally:
        close_all(flood)
    try:
        after = await register_from(REGISTER, gateway.port)
        try:
            assert (await after.workstation(3).request("PING", answer_within=5))[0] == "PONG"
        finally:
            await after.close()
        assert (await early.workstation(1).request("PING"))[0] == "PONG"  # never evicted
    finally:
        await early.close()
    await until(lambda: bool(gateway.events("sim_accept_recovered")))
    await until(lambda: bool(gateway.events("accept_recovered")))
    failures = accept_failure_lines(gateway)
    assert len(failures) == 2, failures  # the SIM listener's, and the admin API's: once each
    (recovered,) = gateway.events("sim_accept_recovered")
    assert recovered["failures"] >= 1
    assert gateway.events("sim_connection_closed_for_descriptors") == []
    assert tracebacks(gateway) == []


@contextlib.contextmanager
def descriptors_taken() -> Iterator[list[int]]:
    """This process out of descriptors, as when something else holds them all."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 32, hard))
    taken: list[int] = []
    try:
        with contextlib.suppress(OSError):
            while True:
                taken.append(os.open(os.devnull, os.O_RDONLY))
        yield taken
    finally:
        for fd in taken:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_NOFILE and 127/8 as on Linux")
async def test_out_of_descriptors_an_idle_connection_gives_its_place_to_a_register(
    service: Gateway,
) -> None:
    server = SimTcpServer(
        SimResponder(service), port=0, allow=[ipaddress.ip_network("127.0.0.0/8")]
    )
    server.room_idle_s = 0.2  # a minute in the daemon
    await server.start()
    idle_reader, idle_writer = await open_from(CROWD, server.port)
    await until(lambda: server.stats.open_connections == 1)
    await asyncio.sleep(0.3)  # it says nothing for longer than room_idle_s
    try:
        with descriptors_taken() as taken:
            os.close(taken.pop())  # the register's own socket, on our side of the test
            register = await register_from(REGISTER, server.port)
            try:
                assert (await register.workstation(6).request("PING"))[0] == "PONG"
                assert await asyncio.wait_for(idle_reader.read(), 5) == b""  # it made room
                assert server.stats.evicted["descriptors"] == 1
                assert server.stats.accept_failures >= 1
            finally:
                await register.close()
        # Descriptors free again: the next register is accepted with the reserve held.
        again = await register_from(REGISTER, server.port)
        try:
            assert (await again.workstation(7).request("PING"))[0] == "PONG"
        finally:
            await again.close()
    finally:
        idle_writer.close()
        await server.stop(grace_s=1)


# ---- D. "::" takes IPv4 registers too ------------------------------------------------------------


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


async def test_host_unspecified_ipv6_answers_ipv4_and_ipv6_registers(
    data_dir: Path, processes: list[GatewayProcess]
) -> None:
    await import_members(data_dir)
    gateway = await GatewayProcess.start(data_dir, {"EDGE_GATEWAY_SIM__HOST": "::"})
    processes.append(gateway)
    hosts = ["127.0.0.1"] + (["::1"] if has_ipv6_loopback() else [])
    for wsid, host in enumerate(hosts, start=1):
        connection = await RegisterConnection.open(host, gateway.port)
        try:
            ident = await connection.workstation(wsid).request("IDENT", str(wsid), "1", "0", CARD)
            assert ident[:2] == ["IDENT_OK", "M1"], host
        finally:
            await connection.close()
    code, out, err = await cli(
        data_dir,
        "status",
        EDGE_GATEWAY_ADMIN__PORT=str(admin_port(gateway)),
        EDGE_GATEWAY_SIM__HOST="::",
    )
    assert code == 0, err
    assert "sim_tcp" in out and "listening" in out


@pytest.mark.parametrize(
    ("host", "counted_as"),
    [
        ("::ffff:127.0.0.1", "127.0.0.1"),  # an IPv4 register on the dual-stack socket
        ("127.0.0.1", "127.0.0.1"),
        ("::1", "::1"),
        ("fe80::1%eth0", "fe80::1"),
    ],
)
def test_a_register_is_one_peer_whichever_socket_it_reached(host: str, counted_as: str) -> None:
    assert peer_address(host) == counted_as
