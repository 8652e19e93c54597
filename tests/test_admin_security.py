"""The admin API cannot be used against the store: idle or slow connections cannot take the
registers' port (a connection cap and timeouts), a foreign Host name is refused (DNS rebinding),
the stop switch needs the token or a same-origin request, and a taken admin port stops the daemon
at once. Real sockets throughout; a real daemon process where file descriptors matter. The browser
side (a rebinding page in Chromium) is in test_dashboard.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_process import PYTHON, GatewayProcess, gateway_env
from prometheus_client import CollectorRegistry

from gateway.admin.app import create_admin_app, served_hosts
from gateway.admin.server import AdminServer

TOKEN = "s3cret-admin-token"
LOG_TOPICS = ("admin_connection", "accept", "too many open files", "emfile", "out of system")


# ---- a real daemon process -------------------------------------------------------------------


async def read_until_closed(reader: asyncio.StreamReader, within_s: float) -> bool:
    """True when the server closed the connection within `within_s`."""
    try:
        async with asyncio.timeout(within_s):
            while await reader.read(4096):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


async def open_idle(
    port: int, count: int, burst: int = 32
) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """`count` TCP connections to the port that never send a byte, `burst` at a time.

    A burst larger than the listen backlog leaves connections that the client believes open but
    the kernel has not queued for the server; they reach it only when the kernel resends its
    SYN-ACK (after 1, 3, 7 s ...), which is the kernel's timing, not the daemon's."""

    async def one() -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        try:
            return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        except (OSError, TimeoutError):
            return None

    opened: list[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None] = []
    for start in range(0, count, burst):
        opened += await asyncio.gather(*(one() for _ in range(min(burst, count - start))))
    return [pair for pair in opened if pair is not None]


@pytest.mark.skipif(sys.platform != "linux", reason="lowers the daemon's limit with prlimit")
async def test_idle_admin_connections_cannot_take_the_registers_port(tmp_path: Path) -> None:
    import resource

    timeout_s = 3.0
    gateway = await GatewayProcess.start(
        tmp_path / "data", {"EDGE_GATEWAY_ADMIN__REQUEST_TIMEOUT_S": str(timeout_s)}
    )
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        # The daemon may hold 256 files, as a 1,024 limit does for a store's 1,100 idle peers.
        resource.prlimit(gateway.process.pid, resource.RLIMIT_NOFILE, (256, 256))
        admin_port = int(gateway.events("gateway_ready")[0]["admin_port"])
        idle = await open_idle(admin_port, 600)
        assert len(idle) == 600  # all of them got through to the admin port

        # The registers' port still accepts and answers.
        register = await asyncio.wait_for(gateway.connect(), 5)
        try:
            reply = await register.workstation(1).request("IDENT", "1", "1", "0", "NO-SUCH-CARD")
            assert reply[0] == "IDENT_FAIL"
        finally:
            await register.close()

        # Every idle connection is closed: the ones beyond the cap at once, the rest when they
        # have sent no request within the timeout.
        closed = await asyncio.gather(
            *(read_until_closed(reader, timeout_s + 5) for reader, _ in idle)
        )
        assert all(closed), f"{closed.count(False)} idle connections still open"

        async with httpx.AsyncClient(timeout=5) as client:
            healthz = await client.get(f"http://127.0.0.1:{admin_port}/healthz")
        assert healthz.status_code == 200
    finally:
        for _, writer in idle:
            writer.close()
        await gateway.terminate()

    assert not [line for line in gateway.lines if "Traceback" in json.dumps(line)]
    events = [str(line.get("event", "")).lower() for line in gateway.lines]
    about_it = [event for event in events if any(topic in event for topic in LOG_TOPICS)]
    assert 1 <= len(about_it) <= 6, about_it  # once per condition, not once per connection


async def test_a_taken_admin_port_stops_the_daemon_at_once_naming_the_port(
    tmp_path: Path,
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        process = await asyncio.create_subprocess_exec(
            PYTHON,
            "-m",
            "gateway",
            "run",
            env=gateway_env(tmp_path / "data", EDGE_GATEWAY_ADMIN__PORT=str(port)),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            out, _ = await asyncio.wait_for(process.communicate(), 10)  # it took 1 s here
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    text = out.decode()
    assert process.returncode not in (0, None), text
    assert f"127.0.0.1:{port}" in text and "already in use" in text, text
    assert "gateway_ready" not in text


# ---- the admin server in this process --------------------------------------------------------


class Switches:
    def __init__(self) -> None:
        self.calls: list[tuple[str, bool, str]] = []

    async def __call__(self, program: str, paused: bool, by: str) -> None:
        self.calls.append((program, paused, by))


async def status() -> dict[str, Any]:
    return {"store_id": "S001"}


async def nothing() -> None:
    return None


async def no_dead_letters() -> int:
    return 0


@contextlib.asynccontextmanager
async def admin_server(
    *,
    token: str | None = None,
    host_names: tuple[str, ...] = (),
    max_connections: int = 64,
    request_timeout_s: float = 10.0,
    switches: Switches | None = None,
) -> AsyncIterator[AdminServer]:
    app = create_admin_app(
        status=status,
        readiness=lambda: {"database": True},
        registry=CollectorRegistry(),
        refresh_metrics=nothing,
        switch_program=switches or Switches(),
        token=token,
        retry_dead_letters=no_dead_letters,
        host_names=host_names,
        bind_host="127.0.0.1",
    )
    server = AdminServer(
        app,
        host="127.0.0.1",
        port=0,
        max_connections=max_connections,
        request_timeout_s=request_timeout_s,
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def api(server: AdminServer) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=5)


async def test_connections_beyond_the_cap_are_closed_at_once_and_counted() -> None:
    async with admin_server(max_connections=4) as server:
        held = await open_idle(server.port, 4)
        assert len(held) == 4
        await asyncio.sleep(0.2)  # the server has taken them
        extra = await open_idle(server.port, 3)
        for reader, _ in extra:
            answer = await asyncio.wait_for(reader.read(4096), 2)
            assert answer.startswith(b"HTTP/1.1 503") and b"TOO_MANY_CONNECTIONS" in answer
            assert await read_until_closed(reader, 2), "a connection beyond the cap stayed open"
        assert server.stats.refused == 3
        assert server.stats.open == 4
        for _, writer in held:
            writer.close()
        await asyncio.sleep(0.2)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            assert (await client.get("/healthz")).status_code == 200


async def test_a_connection_without_a_complete_request_is_closed_after_the_timeout() -> None:
    async with admin_server(request_timeout_s=1.0) as server:
        silent_reader, silent = await asyncio.open_connection("127.0.0.1", server.port)
        slow_reader, slow = await asyncio.open_connection("127.0.0.1", server.port)
        slow.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")

        async def trickle() -> None:  # slowloris: a header byte every 0.3 s, never the end
            with contextlib.suppress(ConnectionError):
                for _ in range(20):
                    slow.write(b"X")
                    await slow.drain()
                    await asyncio.sleep(0.3)

        trickling = asyncio.create_task(trickle())
        try:
            assert await read_until_closed(silent_reader, 3)
            assert await read_until_closed(slow_reader, 3)
        finally:
            trickling.cancel()
            silent.close()
            slow.close()
        assert server.stats.timed_out == 2


async def test_a_request_whose_body_never_arrives_is_closed_and_changes_nothing() -> None:
    switches = Switches()
    async with admin_server(request_timeout_s=1.0, switches=switches) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            b"POST /programs/lottery/pause HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + f"Origin: http://127.0.0.1:{server.port}\r\n".encode()
            + b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        assert await read_until_closed(reader, 3)
        writer.close()
        await asyncio.sleep(0.2)
        assert server.stats.timed_out == 1 and server.stats.open == 0
        assert switches.calls == []


async def test_an_idle_keep_alive_connection_is_closed_after_the_timeout() -> None:
    async with admin_server(request_timeout_s=1.0) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
        assert head.startswith(b"HTTP/1.1 200")
        started = asyncio.get_running_loop().time()
        assert await read_until_closed(reader, 3)  # 1 s idle, not uvicorn's own 5 s
        assert asyncio.get_running_loop().time() - started < 2.5
        writer.close()


async def test_start_raises_naming_the_address_when_the_port_is_taken() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        app = create_admin_app(
            status=status,
            readiness=lambda: {},
            registry=CollectorRegistry(),
            refresh_metrics=nothing,
            switch_program=Switches(),
        )
        server = AdminServer(app, host="127.0.0.1", port=port)
        with pytest.raises(OSError, match=f"127.0.0.1:{port}.*already in use"):
            await asyncio.wait_for(server.start(), 5)
        await server.stop()


# ---- Host names (DNS rebinding) and the stop switch (CSRF) -----------------------------------


def test_the_served_names_are_loopback_the_bound_address_and_the_configured_names() -> None:
    assert served_hosts("10.20.0.5", ["GW-01.Store.Example."]) == {
        "localhost", "127.0.0.1", "::1", "10.20.0.5", "gw-01.store.example"
    }  # fmt: skip
    # A wildcard is no name; what it serves goes in admin.host_names.
    assert (
        served_hosts("0.0.0.0", []) == served_hosts("::", []) == {"localhost", "127.0.0.1", "::1"}
    )
    assert "fd00::5" in served_hosts("[fd00:0::5]", [])


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "127.0.0.1:{port}", "localhost:{port}", "LOCALHOST", "[::1]:{port}",
     "[::1]", "gw-01.store.example:{port}", "gw-01.store.example"],
)  # fmt: skip
async def test_the_served_host_names_are_answered(host: str) -> None:
    async with (
        admin_server(host_names=("gw-01.store.example",)) as server,
        api(server) as client,
    ):
        response = await client.get("/status", headers={"Host": host.format(port=server.port)})
        assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("host", "code"),
    [("evil.example:{port}", 421), ("evil.example", 421), ("127.0.0.1.evil.example", 421),
     ("localhost.evil.example:{port}", 421), ("10.0.0.1:{port}", 421),
     ("127.0.0.1:port", 400), ("[::1", 400), ("a b", 400)],
)  # fmt: skip
async def test_any_other_host_name_is_refused_with_a_clear_error(host: str, code: int) -> None:
    async with (
        admin_server(host_names=("gw-01.store.example",)) as server,
        api(server) as client,
    ):
        for method, path in (
            ("GET", "/status"),
            ("GET", "/"),
            ("POST", "/programs/lottery/pause"),
        ):
            response = await client.request(
                method,
                path,
                headers={"Host": host.format(port=server.port)},
                json={"by": "x"} if method == "POST" else None,
            )
            assert response.status_code == code, (method, path, response.text)
            body = response.json()
            assert body["error"] == ("UNKNOWN_HOST" if code == 421 else "BAD_HOST")
            assert "admin.host_names" in body["detail"] or code == 400


async def test_the_stop_switch_needs_a_same_origin_request_without_a_token() -> None:
    switches = Switches()
    async with admin_server(switches=switches) as server:
        here = f"http://127.0.0.1:{server.port}"
        async with httpx.AsyncClient(base_url=here) as client:

            async def pause(**headers: str) -> httpx.Response:
                return await client.post(
                    "/programs/lottery/pause", json={"by": "x"}, headers=headers
                )

            # A local process or a page that says nothing about where it comes from: refused.
            assert (await pause()).status_code == 403
            assert (await client.post("/dead-letters/retry", json={})).status_code == 403
            port = server.port
            foreigners = ("http://evil.example", f"http://evil.example:{port}", "null",
                          f"http://localhost:{port + 1}", f"https://127.0.0.1:{port}")  # fmt: skip
            for foreign in foreigners:
                refused = await pause(Origin=foreign)
                assert refused.status_code == 403, foreign
                assert refused.json()["error"] in ("FOREIGN_ORIGIN", "NOT_SAME_ORIGIN")
            assert (await pause(**{"Sec-Fetch-Site": "cross-site"})).status_code == 403
            assert (await pause(**{"Sec-Fetch-Site": "same-site"})).status_code == 403
            assert switches.calls == []

            # The dashboard's own requests: the browser says they come from this origin.
            assert (await pause(Origin=here)).status_code == 200
            assert (await pause(**{"Sec-Fetch-Site": "same-origin"})).status_code == 200
            local = await pause(
                Origin=f"http://localhost:{server.port}", Host=f"localhost:{server.port}"
            )
            assert local.status_code == 200
            retried = await client.post("/dead-letters/retry", json={}, headers={"Origin": here})
            assert retried.status_code == 200
            assert len(switches.calls) == 3
            # Reading is not state-changing: no Origin needed (a cross-site page cannot read it).
            assert (await client.get("/status")).status_code == 200


async def test_with_a_token_the_stop_switch_takes_it_but_never_from_a_foreign_origin() -> None:
    switches = Switches()
    async with admin_server(token=TOKEN, switches=switches) as server, api(server) as client:
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        url = "/programs/lottery/pause"
        assert (await client.post(url, json={})).status_code == 401
        assert (await client.post(url, json={}, headers=bearer)).status_code == 200
        foreign = {**bearer, "Origin": "http://evil.example"}
        assert (await client.post(url, json={}, headers=foreign)).status_code == 403
        assert len(switches.calls) == 1


def test_the_systemd_unit_leaves_room_for_the_open_files_the_caps_allow() -> None:
    unit = Path(__file__).resolve().parents[1] / "packaging" / "systemd" / "edge-gateway.service"
    limits = [line for line in unit.read_text().splitlines() if line.startswith("LimitNOFILE=")]
    assert len(limits) == 1
    # sim.max_connections (512) + admin.max_connections (64) + files and links, with room.
    assert int(limits[0].split("=", 1)[1]) >= 4096
