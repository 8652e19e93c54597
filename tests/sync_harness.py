"""A gateway (in this process) and a reference central (over real HTTP on 127.0.0.1)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from conftest import workstation_on

from gateway.config import load_settings
from gateway.daemon import Daemon
from pos_adapters.sim.register import RegisterConnection, Workstation
from sync.central import ReferenceServer

DATE = "20261123"


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


@contextlib.asynccontextmanager
async def synced_gateway(
    tmp_path: Path, faults: dict[str, Any] | None = None, **sections: Any
) -> AsyncIterator[tuple[Admin, Daemon]]:
    """The reference central (with `faults` from the start) and a gateway on it (`sections` as
    for `start_gateway`): central's admin API and the daemon. Both are stopped after."""
    async with ReferenceServer() as central:
        admin = Admin(central)
        try:
            if faults:
                await admin.faults(**faults)
            daemon = await start_gateway(tmp_path, central.url, **sections)
            try:
                yield admin, daemon
            finally:
                await daemon.stop()
        finally:
            await admin.aclose()


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


def workstation(daemon: Daemon, wsid: int) -> contextlib.AbstractAsyncContextManager[Workstation]:
    """Workstation `wsid` on a connection of its own to the daemon's SIM port, closed after."""
    assert daemon.sim is not None
    return workstation_on(daemon.sim.port, wsid)
