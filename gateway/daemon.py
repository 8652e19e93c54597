"""The composition root: builds the store, the service and the adapters, runs them, and stops
them in order on SIGTERM/SIGINT (stop accepting, finish answers under way, flush the writer)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import signal
import socket
import sys
from dataclasses import dataclass, field

import structlog

from gateway import __version__
from gateway.config import Settings, currency_decimals
from gateway.service import Gateway, ServiceOptions
from gateway.store.store import Store
from pos_adapters.sim.session import SimResponder
from pos_adapters.sim.tcp import SimTcpServer
from sync.catalog import push_catalog, seconds_until
from sync.client import CentralClient, CentralError
from sync.forwarder import Forwarder
from sync.heartbeat import run_heartbeat
from sync.refresher import Refresher

log = structlog.get_logger("gateway.daemon")

RESERVATION_SWEEP_S = 60.0


def sd_notify(state: str) -> None:
    """Tell systemd (Type=notify) about our state; a no-op when not run by systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address or not hasattr(socket, "AF_UNIX"):
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(state.encode("ascii"), address)


def service_options(settings: Settings) -> ServiceOptions:
    return ServiceOptions(
        store_id=settings.store_id,
        gateway_id=settings.gateway_id,
        currency_decimals=currency_decimals(settings.currency),
        timezone=settings.tzinfo(),
        reservation_ttl=dt.timedelta(seconds=settings.coupons.reservation_ttl_s),
        authorization_budget_s=settings.central.authorization_budget_ms / 1000,
        offline_policy=settings.offline.coupon_policy,
        offline_max_amount=settings.offline_coupon_max_minor,
    )


@dataclass
class Daemon:
    """Everything one running gateway owns."""

    settings: Settings
    store: Store | None = None
    service: Gateway | None = None
    sim: SimTcpServer | None = None
    central: CentralClient | None = None
    forwarder: Forwarder | None = None
    refresher: Refresher | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        settings = self.settings
        self.store = await Store.open(settings.database_path, max_db_mb=settings.storage.max_db_mb)
        if settings.central.url:
            self._start_sync(self.store)
        self.service = Gateway(
            self.store,
            service_options(settings),
            central_state=self.central.state if self.central else None,
            authorizer=self.central,
        )
        if settings.sim.enabled:
            responder = SimResponder(self.service, encoding=settings.sim.encoding)
            self.sim = SimTcpServer(
                responder,
                host=settings.sim.host,
                port=settings.sim.port,
                allow=settings.sim.allowed_networks(),
                max_frame=settings.sim.max_frame,
                read_timeout_s=settings.sim.read_timeout_s,
                idle_timeout_s=settings.sim.idle_timeout_s,
            )
            await self.sim.start()
        self._tasks.append(asyncio.create_task(self._sweep_reservations(), name="sweeper"))
        if self.central is not None:
            self._run_sync(self.store, self.central)
        log.info(
            "gateway_ready",
            version=__version__,
            store_id=settings.store_id,
            database=str(settings.database_path),
            sim_port=self.sim.port if self.sim else None,
            central=settings.central.url or "standalone",
        )
        sd_notify("READY=1")

    def _start_sync(self, store: Store) -> None:
        settings = self.settings
        self.central = CentralClient(
            settings.central, store_id=settings.store_id, gateway_id=settings.gateway_id
        )
        self.forwarder = Forwarder(
            store,
            self.central,
            batch_size=settings.central.batch_size,
            backoff_ceiling_s=settings.central.backoff_max_s,
        )
        self.refresher = Refresher(
            store, self.central, interval_s=settings.central.refresh_interval_s
        )
        store.outbox_listeners.append(self.forwarder.wake)
        self.central.on_recovery += [self.forwarder.wake, self.refresher.wake]

    def _run_sync(self, store: Store, central: CentralClient) -> None:
        assert self.forwarder is not None and self.refresher is not None
        self._tasks += [
            asyncio.create_task(self.forwarder.run(), name="forwarder"),
            asyncio.create_task(self.refresher.run(), name="refresher"),
            asyncio.create_task(
                run_heartbeat(
                    store,
                    central,
                    interval_s=self.settings.central.heartbeat_interval_s,
                    adapters=self.adapter_states,
                ),
                name="heartbeat",
            ),
        ]
        if self.settings.catalog.export_file is not None:
            self._tasks.append(
                asyncio.create_task(self._push_catalog_daily(store, central), name="catalog")
            )

    async def _push_catalog_daily(self, store: Store, central: CentralClient) -> None:
        catalog = self.settings.catalog
        assert catalog.export_file is not None
        while True:
            now = dt.datetime.now(dt.UTC)
            await asyncio.sleep(seconds_until(catalog.push_at, now, self.settings.tzinfo()))
            for attempt in range(12):  # central away at push time: try again for an hour
                try:
                    await push_catalog(
                        store, central, catalog.export_file, encoding=catalog.encoding
                    )
                    break
                except CentralError:
                    await asyncio.sleep(300)
                except OSError as error:
                    log.error(
                        "catalog_export_unreadable",
                        file=str(catalog.export_file),
                        error=str(error),
                        attempt=attempt,
                    )
                    break

    def adapter_states(self) -> dict[str, dict[str, object]]:
        states: dict[str, dict[str, object]] = {}
        if self.sim is not None:
            states["sim_tcp"] = {
                "state": "listening" if self.sim.listening else "stopped",
                "connections": self.sim.stats.open_connections,
            }
        return states

    async def stop(self) -> None:
        sd_notify("STOPPING=1")
        if self.sim is not None:
            await self.sim.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.central is not None:
            await self.central.aclose()
        if self.store is not None:
            await self.store.close()
        log.info("gateway_stopped")

    async def _sweep_reservations(self) -> None:
        assert self.service is not None
        while True:
            try:
                released = await self.service.release_expired_reservations()
                if released:
                    log.info("coupon_reservations_expired", released=released)
            except Exception:
                log.exception("reservation_sweep_failed")
            await asyncio.sleep(RESERVATION_SWEEP_S)


async def run(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT; return the process exit code."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, stop.set)
        except (NotImplementedError, RuntimeError):  # Windows: no loop signal handlers
            signal.signal(signum, lambda *_: loop.call_soon_threadsafe(stop.set))
    daemon = Daemon(settings)
    try:
        await daemon.start()
    except Exception as error:
        log.error("gateway_start_failed", error=str(error), kind=type(error).__name__)
        await daemon.stop()
        return 1
    await stop.wait()
    log.info("gateway_stopping", reason="signal")
    await daemon.stop()
    return 0


def main(settings: Settings) -> int:
    try:
        return asyncio.run(run(settings))
    except KeyboardInterrupt:
        return 0
    finally:
        sys.stdout.flush()
