"""The composition root: builds the store, the service and the adapters, runs them, and stops
them in order on SIGTERM/SIGINT (stop accepting, finish answers under way, flush the writer)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import gc
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from starlette.applications import Starlette

from gateway import __version__
from gateway.admin.app import create_admin_app
from gateway.admin.history import History, run_sampler
from gateway.admin.metrics import GatewayMetrics
from gateway.admin.server import AdminServer
from gateway.config import Settings, currency_decimals
from gateway.domain.rules_doc import RulesDocument
from gateway.logging import reopen_log_file
from gateway.service import LATENCY_BUCKETS_S, Gateway, ServiceOptions
from gateway.store.datadir import AlreadyRunning, DataDirLock
from gateway.store.store import Store
from pos_adapters.mqtt import MqttAdapter, MqttOptions, MqttResponder, Topics
from pos_adapters.sim.serial import LineSettings, SerialAdapter
from pos_adapters.sim.session import SimResponder
from pos_adapters.sim.tcp import SimTcpServer
from sync.catalog import product_rows, push_catalog, read_menu_export, seconds_until
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
        currency=settings.currency,
        locale=settings.locale,
        timezone=settings.tzinfo(),
        reservation_ttl=dt.timedelta(seconds=settings.coupons.reservation_ttl_s),
        unbound_reservation_ttl=dt.timedelta(seconds=settings.coupons.unbound_reservation_ttl_s),
        receipt_width=settings.receipt.line_width,
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
    admin: AdminServer | None = None
    serial: SerialAdapter | None = None  # registers on serial lines ([serial] ports)
    mqtt: MqttAdapter | None = None  # registers over MQTT ([mqtt] url)
    metrics: GatewayMetrics = field(default_factory=GatewayMetrics)
    started_at: float = field(default_factory=time.time)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        settings = self.settings
        self.store = await Store.open(
            settings.database_path,
            max_db_mb=settings.storage.max_db_mb,
            max_pending_events=settings.storage.max_pending_events,
        )
        await self.store.probe_write()  # a read-only file fails here, not at the first check
        await self._load_local_rules_and_menu(self.store)
        if settings.central.url:
            self._start_sync(self.store)
        self.service = Gateway(
            self.store,
            service_options(settings),
            central_state=self.central.state if self.central else None,
            authorizer=self.central,
        )
        # Open-file limit up to the hard one, accept failures logged once: before any listener.
        SimTcpServer.prepare_process()
        if settings.sim.enabled:
            responder = SimResponder(
                self.service,
                encoding=settings.sim.encoding,
                reply_style=settings.sim.reply_style,
                pipe_sources=settings.sim.pipe_reply_sources,
            )
            self.sim = SimTcpServer(
                responder,
                host=settings.sim.host,
                port=settings.sim.port,
                allow=settings.sim.allowed_networks(),
                max_frame=settings.sim.max_frame,
                read_timeout_s=settings.sim.read_timeout_s,
                idle_timeout_s=settings.sim.idle_timeout_s,
                max_connections=settings.sim.max_connections,
                max_connections_per_peer=settings.sim.max_connections_per_peer,
            )
            await self.sim.start()
        await self._start_line_and_mqtt_adapters(self.service)
        self._tasks.append(asyncio.create_task(self._sweep_reservations(), name="sweeper"))
        if self.central is not None:
            self._run_sync(self.store, self.central)
        await self._start_admin()
        self._start_watchdog()
        # What start-up built (modules, settings, tables) lives as long as the process: out of
        # the collector's sight, so that a collection during service walks only what requests
        # made (measured: docs/performance.md).
        gc.collect()
        gc.freeze()
        log.info(
            "gateway_ready",
            version=__version__,
            store_id=settings.store_id,
            database=str(settings.database_path),
            sim_port=self.sim.port if self.sim else None,
            admin_port=self.admin.port if self.admin else None,
            central=settings.central.url or "standalone",
        )
        sd_notify("READY=1")

    async def _load_local_rules_and_menu(self, store: Store) -> None:
        """The configured rules document, and the POS menu's categories for category rules."""
        settings = self.settings
        if settings.rules_file is not None:
            text = await asyncio.to_thread(settings.rules_file.read_text, encoding="utf-8")
            document = RulesDocument.model_validate_json(text)
            await store.add_rules(document, source="config")
            log.info("rules_loaded", version=document.version, file=str(settings.rules_file))
        export = settings.catalog.export_file
        if export is not None:
            try:
                raw = await asyncio.to_thread(export.read_bytes)
            except OSError as error:
                log.error("catalog_export_unreadable", file=str(export), error=str(error))
                return
            menu = read_menu_export(raw.decode(settings.catalog.encoding, errors="replace"))
            await store.replace_products(product_rows(menu.products))

    def _start_watchdog(self) -> None:
        """systemd's WatchdogSec: ping from the event loop itself, so a stuck loop (not just a
        dead process) gets the service restarted."""
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not usec or not usec.isdigit() or (pid and pid != str(os.getpid())):
            return
        interval = int(usec) / 1_000_000 / 2

        async def feed() -> None:
            while True:
                sd_notify("WATCHDOG=1")
                await asyncio.sleep(interval)

        self._tasks.append(asyncio.create_task(feed(), name="watchdog"))

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
            store,
            self.central,
            interval_s=settings.central.refresh_interval_s,
            max_removal_share=settings.central.max_removal_share,
            bootstrap_jitter_s=settings.central.bootstrap_jitter_s,
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
                "registers": self.sim.responder.registers(),
                # the limits of docs/operations.md: what each refused, evicted or closed
                "max_connections": self.sim.stats.max_connections,
                "refused": dict(self.sim.stats.refused),
                "evicted": dict(self.sim.stats.evicted),
                "idle_closes": self.sim.stats.idle_closes,
                "accept_failures": self.sim.stats.accept_failures,
                "frame_errors": dict(self.sim.stats.frame_errors),
                "dropped_bytes": self.sim.stats.dropped_bytes,
            }
        states.update(self._line_and_mqtt_adapter_states())
        return states

    # ---- registers on serial lines and over MQTT ------------------------------------------------
    # Both start in the background and never hold the start-up up: a port that is not there yet
    # or a broker that is down is retried with backoff, and logged once (docs/protocol.md).

    async def _start_line_and_mqtt_adapters(self, service: Gateway) -> None:
        settings = self.settings
        if settings.serial.ports:
            self.serial = SerialAdapter(
                # A responder of their own: source ids on serial lines and on TCP are separate
                # registers, so their retransmission caches must not mix.
                SimResponder(
                    service,
                    encoding=settings.sim.encoding,
                    reply_style=settings.sim.reply_style,
                    pipe_sources=settings.sim.pipe_reply_sources,
                ),
                [
                    LineSettings(
                        device=port.device,
                        baudrate=port.baudrate,
                        parity=port.parity,
                        stopbits=port.stopbits,
                        bytesize=port.bytesize,
                    )
                    for port in settings.serial.ports
                ],
                max_frame=settings.sim.max_frame,
                read_timeout_s=settings.sim.read_timeout_s,
            )
            await self.serial.start()
        mqtt = settings.mqtt
        if mqtt.url:
            password = None
            if mqtt.password_file is not None:
                password = mqtt.password_file.read_text(encoding="utf-8").strip()
            options = MqttOptions.from_url(
                mqtt.url,
                tls=mqtt.uses_tls,
                ca_file=str(mqtt.ca_file) if mqtt.ca_file else None,
                username=mqtt.username,
                password=password,
                client_id=f"edge-gateway-{settings.store_id}-{settings.gateway_id}",
                gateway_id=settings.gateway_id,
                version=__version__,
            )
            topics = Topics(mqtt.prefix, settings.store_id)
            self.mqtt = MqttAdapter(MqttResponder(service, topics), options)
            await self.mqtt.start()

    async def _stop_line_and_mqtt_adapters(self) -> None:
        if self.mqtt is not None:
            await self.mqtt.stop()
        if self.serial is not None:
            await self.serial.stop()

    def _line_and_mqtt_adapter_states(self) -> dict[str, dict[str, object]]:
        states: dict[str, dict[str, object]] = {}
        # "connections" is what the admin metrics read: open lines, or 1 while on the broker.
        if self.serial is not None:
            ports = self.serial.states()
            open_lines = sum(1 for port in ports.values() if port["state"] == "open")
            states["serial"] = {
                "state": "open" if open_lines == len(ports) else "degraded",
                "connections": open_lines,
                "ports": ports,
            }
        if self.mqtt is not None:
            states["mqtt"] = {
                **self.mqtt.states(),
                "connections": 1 if self.mqtt.state == "connected" else 0,
            }
        return states

    def admin_app(
        self,
        history: History,
        *,
        token: str | None,
        host_names: Sequence[str] = (),
        bind_host: str | None = None,
        dashboard_refresh_s: float = 5.0,
    ) -> Starlette:
        """The admin API on this daemon's status, metrics, switches and store; the dashboard's
        tests serve it with a faster refresh."""
        return create_admin_app(
            status=self.status,
            readiness=self.readiness,
            registry=self.metrics.registry,
            refresh_metrics=self._refresh_metrics,
            switch_program=self.switch_program,
            token=token,
            history=history,
            retry_dead_letters=self.store.retry_dead_letters if self.store else None,
            dashboard_refresh_s=dashboard_refresh_s,
            host_names=host_names,
            bind_host=bind_host,
        )

    async def _start_admin(self) -> None:
        settings = self.settings.admin
        token = None
        if settings.token_file is not None:
            token = settings.token_file.read_text(encoding="utf-8").strip()
        service = self.service
        assert service is not None
        self.metrics.add_tally(
            "edge_gateway_requests",
            "Register requests by command and outcome (ok or a reason code)",
            ["command", "outcome"],
            lambda: {key: float(n) for key, n in service.stats.requests.items()},
        )
        store = self.store
        assert store is not None
        self.metrics.add_tally(
            "edge_gateway_identification_events_dropped",
            "Identification events dropped beyond storage.max_pending_events while the disk"
            " refused them",
            [],
            lambda: {(): float(store.writer.stats.riders_dropped)},
        )
        self.metrics.add_tally(
            "edge_gateway_future_business_dates",
            "Checks refused: business date later than tomorrow by this gateway's clock",
            [],
            lambda: {(): float(service.stats.future_business_dates)},
        )
        self.metrics.add_latency(
            lambda: {
                command: (LATENCY_BUCKETS_S, latency.counts, latency.total_s)
                for command, latency in service.stats.latency.items()
            }
        )
        # Protocol errors by reason and transport trouble, per register adapter: read from the
        # adapters' own counters at each scrape (the names of /status "adapters").
        if self.sim is not None:
            self.metrics.add_adapter(
                "sim_tcp",
                replies=self.sim.responder.stats,
                frames=[self.sim.stats],
                connections=self.sim.stats,
            )
        if self.serial is not None:
            lines = [line.stats for line in self.serial.lines]
            self.metrics.add_adapter(
                "serial",
                replies=self.serial.responder.stats,
                frames=lines,
                outages=lambda: sum(line.outages for line in lines),
            )
        if self.mqtt is not None:
            mqtt = self.mqtt
            self.metrics.add_adapter("mqtt", replies=mqtt.stats, outages=lambda: mqtt.outages)
        history = History()
        self._tasks.append(
            asyncio.create_task(run_sampler(self.status, history), name="history-sampler")
        )
        app = self.admin_app(
            history, token=token, host_names=settings.host_names, bind_host=settings.host
        )
        self.admin = AdminServer(
            app,
            host=settings.host,
            port=settings.port,
            max_connections=settings.max_connections,
            request_timeout_s=settings.request_timeout_s,
        )
        await self.admin.start()

    async def switch_program(self, program: str, paused: bool, by: str) -> None:
        """The stop switch: the next register request sees it (it is read per request)."""
        assert self.store is not None
        await self.store.set_program_paused(program, paused, by=by)
        log.warning("program_switched", program=program, paused=paused, by=by)

    async def _refresh_metrics(self) -> None:
        self.metrics.update(await self.status())

    def readiness(self) -> dict[str, bool]:
        """Ready means a register's check can be stored now: the database is open and writable
        and the disk takes a check (the storage-full alarm is down)."""
        store = self.store
        checks = {
            "database": store is not None and store.write_problem() is None,
            "storage": store is not None and not store.writer.storage_full,
        }
        if self.settings.sim.enabled:
            checks["sim_tcp"] = self.sim is not None and self.sim.listening
        return checks

    async def status(self) -> dict[str, Any]:
        """Everything store IT asks about, in one document (`/status`, `edge-gateway status`)."""
        store, service = self.store, self.service
        assert store is not None and service is not None
        counts = await store.counts()
        now = time.time()
        central: dict[str, Any] = {"state": "STANDALONE", "url": None}
        sync: dict[str, Any] = {}
        if self.central is not None and self.forwarder and self.refresher:
            central = {
                "state": self.central.state(),
                "url": self.settings.central.url,
                "last_answer_age_s": self.central.last_answer_age_s,
                # outages (each logged once), recoveries, failures, last_error, down_for_s
                **self.central.link.counters(),
            }
            f, r = self.forwarder.stats, self.refresher.stats
            sync = {
                "last_delivery": f.last_success,
                "last_refresh": r.last_success,
                "delivered": f.delivered,
                "batches": f.batches,
                "retries": f.failures,
                "split_batches": f.split_batches,
                "refresh_pages": r.pages,
                "refresh_failures": r.failures,
                "last_delivery_error": f.last_error,
                # each link's outages, recoveries, failures, last_error, down_for_s
                "refresh_link": self.refresher.link.counters(),
                "refusal_link": self.forwarder.link.counters(),
                "bad_records": r.bad_records,
                "unknown_kinds": dict(r.unknown_kinds),
                # central repeating a cursor with has_more: pages seen so, and whether it is now
                "cursor_stalls": r.cursor_stalls,
                "cursor_stuck": r.cursor_stuck,
                # central's snapshot file: bytes fetched, cut downloads resumed, files applied
                # or rejected as damaged
                "snapshot_bytes": r.snapshot_bytes,
                "snapshot_resumed": r.snapshot_resumed,
                "snapshots_applied": r.snapshots_applied,
                "snapshots_rejected": r.snapshots_rejected,
                # full snapshots whose removal was refused (central.max_removal_share)
                "removals_refused": r.removals_refused,
                "refused_removal": dataclasses.asdict(r.refused_removal)
                if r.refused_removal
                else None,
            }
        conflicts = await store.scalar("SELECT COUNT(*) FROM offline_conflicts")
        paused = await store.scalar(
            "SELECT COUNT(*) FROM program_switches WHERE program = 'lottery' AND paused = 1"
        )
        disk = shutil.disk_usage(self.settings.data_dir)
        rules = store.active_rules(dt.datetime.now(dt.UTC))
        central_pause = service.rules(dt.datetime.now(dt.UTC)).paused("lottery")
        return {
            "version": __version__,
            "store_id": self.settings.store_id,
            "gateway_id": self.settings.gateway_id,
            "uptime_s": round(now - self.started_at, 1),
            "central": central,
            "outbox": {
                "depth": counts.outbox_depth,
                "oldest_age_s": counts.outbox_oldest_age_s,
                # identification events not on disk yet: under a second's worth, unless the
                # disk refuses them (then kept here up to storage.max_pending_events)
                "in_memory": store.writer.pending_riders,
                "dropped": store.writer.stats.riders_dropped,
            },
            "dead_letters": counts.dead_letters,
            "offline_conflicts": conflicts,
            "sync": sync,
            "cache": {
                "members": counts.members,
                "coupons": counts.coupons,
                "cursor": store.get_state("changes_cursor"),
                "rules_version": rules[0] if rules else None,
            },
            "checks": {
                "posted": counts.posted_checks,
                "live_reservations": counts.live_reservations,
            },
            "programs": {
                "lottery": {
                    "state": "paused" if paused or central_pause else "running",
                    "paused_here": bool(paused),
                    "paused_by_central": central_pause,
                }
            },
            "adapters": self.adapter_states(),
            "admin": dataclasses.asdict(self.admin.stats) if self.admin else None,
            "requests": {f"{c}:{o}": n for (c, o), n in sorted(service.stats.requests.items())},
            "storage_full": store.writer.storage_full,
            "clock_skew": service.clock_skew(),
            "database_problem": store.write_problem(),
            "disk_free_mb": disk.free // (1024 * 1024),
        }

    async def reload(self) -> None:
        """SIGHUP: reopen the log file (after logrotate) and read the rules file again. Other
        settings need a restart (docs/operations.md)."""
        reopened = reopen_log_file()
        rules = "no rules_file"
        if self.store is not None:
            try:
                await self._load_local_rules_and_menu(self.store)
                if self.settings.rules_file is not None:
                    rules = "reloaded"
            except Exception as error:  # a bad file must not stop a running gateway
                rules = f"kept the previous rules: {error}"
                log.error("reload_failed", file=str(self.settings.rules_file), error=str(error))
        log.info("gateway_reloaded", log_file_reopened=reopened, rules=rules)

    async def stop(self) -> None:
        sd_notify("STOPPING=1")
        if self.admin is not None:
            await self.admin.stop()
        if self.sim is not None:
            await self.sim.stop()
        await self._stop_line_and_mqtt_adapters()
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
    """Run until SIGTERM/SIGINT; return the process exit code. SIGHUP reloads (see `reload`)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, stop.set)
        except (NotImplementedError, RuntimeError):  # Windows: no loop signal handlers
            signal.signal(signum, lambda *_: loop.call_soon_threadsafe(stop.set))
    lock = DataDirLock(settings.data_dir)
    try:
        lock.acquire()
    except (AlreadyRunning, OSError) as error:
        log.error("gateway_start_failed", error=str(error), kind=type(error).__name__)
        return 1
    daemon = Daemon(settings)
    reloads: set[asyncio.Task[None]] = set()

    def on_hangup() -> None:
        task = asyncio.create_task(daemon.reload(), name="reload")
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    if hasattr(signal, "SIGHUP"):  # not on Windows
        loop.add_signal_handler(signal.SIGHUP, on_hangup)
    try:
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
    finally:
        lock.release()


def main(settings: Settings) -> int:
    try:
        return asyncio.run(run(settings))
    except KeyboardInterrupt:
        return 0
    finally:
        sys.stdout.flush()
