"""A gateway (in this process) and a reference central (over real HTTP on 127.0.0.1)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import httpx

from gateway.config import load_settings
from gateway.daemon import Daemon
from pos_adapters.sim.register import RegisterConnection, Workstation
from sync.central import ReferenceServer

DATE = "20261123"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def start_gateway(
    tmp_path: Path,
    central_url: str | None,
    name: str = "gw",
    store_id: str = "S001",
    **sections: Any,
) -> Daemon:
    config = tmp_path / f"{name}.toml"
    config.write_text(
        f'store_id = "{store_id}"\ngateway_id = "{name}"\ndata_dir = "{tmp_path / name}"\n'
        'timezone = "UTC"\n'
    )
    central = {
        "refresh_interval_s": 0.3,
        "heartbeat_interval_s": 0.3,
        "backoff_max_s": 0.2,
        "timeout_s": 2.0,
        **sections.pop("central", {}),
    }
    if central_url:
        central["url"] = central_url
    settings = load_settings(
        config, sim={"port": 0}, admin={"port": 0}, central=central, **sections
    )
    daemon = Daemon(settings)
    await daemon.start()
    return daemon


class Admin:
    """The reference server's admin API: what central holds."""

    def __init__(self, server: ReferenceServer) -> None:
        self.server = server
        self.http = httpx.AsyncClient(base_url=server.admin_url, timeout=10)

    async def stats(self) -> dict[str, Any]:
        response = await self.http.get("/_admin/stats")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    async def checks(self) -> list[dict[str, Any]]:
        response = await self.http.get("/_admin/checks")
        response.raise_for_status()
        body = response.json()
        checks: list[dict[str, Any]] = body["checks"] if isinstance(body, dict) else body
        return checks

    async def member(self, member_id: str) -> dict[str, Any]:
        response = await self.http.get(f"/_admin/members/{member_id}")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    async def faults(self, **faults: Any) -> None:
        (await self.http.put("/_admin/faults", json=faults)).raise_for_status()

    async def aclose(self) -> None:
        await self.http.aclose()


async def post(
    station: Workstation, wsid: int, check: int, member: str = "", total: str = "10.00"
) -> list[str]:
    return await station.request(
        "POST", str(wsid), "1", str(check), DATE, member, total, total, f"1*1001*{total}", ""
    )


async def register(daemon: Daemon, wsid: int) -> tuple[RegisterConnection, Workstation]:
    assert daemon.sim is not None
    connection = await RegisterConnection.open("127.0.0.1", daemon.sim.port)
    return connection, connection.workstation(wsid)
