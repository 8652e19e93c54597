"""`/metrics` as Prometheus and store IT's alerting read it: scraped over HTTP from a running
gateway whose registers sent bad frames on every transport (SIM over TCP, a serial line through a
socat pty pair, MQTT through a real Mosquitto) and whose central took a check; checked by
`promtool check metrics` (Debian's `prometheus` package, see `make system-deps`) and parsed with
prometheus_client's own parser."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Mapping
from pathlib import Path

import httpx
import pytest
from conformance.infra import Mosquitto, PtyPair
from conformance.registers import MqttRegister, SimRegister, on_serial_line
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from sync_harness import Admin, post, register, start_gateway
from waiting import until

from gateway import __version__
from gateway.admin.metrics import MAX_KIND_LABELS, OTHER_KINDS, SYNC_COUNTERS, GatewayMetrics
from gateway.daemon import Daemon
from pos_adapters.mqtt import Topics
from pos_adapters.sim.codec import encode_frame
from sync.central import ReferenceServer

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
HAVE_PROMTOOL = Path(PROMTOOL).exists()

# family (as the parser names it: counters without _total) -> (type, label names of its samples)
ALWAYS: dict[str, tuple[str, set[str]]] = {
    "edge_gateway_build_info": ("gauge", {"version"}),
    "process_cpu_seconds": ("counter", set()),
    "process_resident_memory_bytes": ("gauge", set()),
    "process_start_time_seconds": ("gauge", set()),
    "process_open_fds": ("gauge", set()),
    "python_info": ("gauge", {"implementation", "major", "minor", "patchlevel", "version"}),
    "edge_gateway_requests": ("counter", {"command", "outcome"}),
    "edge_gateway_request_seconds": ("histogram", {"command"}),
    "edge_gateway_protocol_errors": ("counter", {"adapter", "reason"}),
    "edge_gateway_internal_errors": ("counter", {"adapter"}),
    "edge_gateway_pipe_values_replaced": ("counter", {"adapter"}),
    "edge_gateway_frame_errors": ("counter", {"adapter", "reason"}),
    "edge_gateway_dropped_bytes": ("counter", {"adapter"}),
    "edge_gateway_partial_frame_timeouts": ("counter", {"adapter"}),
    "edge_gateway_connections_refused": ("counter", {"adapter", "reason"}),
    "edge_gateway_connections_evicted": ("counter", {"adapter", "reason"}),
    "edge_gateway_accept_failures": ("counter", {"adapter"}),
    "edge_gateway_adapter_connections": ("gauge", {"adapter"}),
    "edge_gateway_outbox_depth": ("gauge", set()),
    "edge_gateway_central_online": ("gauge", set()),
}
WITH_CENTRAL: dict[str, tuple[str, set[str]]] = {
    **{name: ("counter", set()) for name, _ in SYNC_COUNTERS.values()},
    "edge_gateway_refresh_unknown_kinds": ("counter", {"kind"}),
    "edge_gateway_central_outages": ("counter", set()),
}
WITH_LINES_OR_BROKER = {"edge_gateway_adapter_outages": ("counter", {"adapter"})}


def sim_frame(*fields: str, sid: bytes = b"  7LOYAL", seq: int = 1) -> bytes:
    return encode_frame(sid, seq, list(fields))


def with_bad_checksum(data: bytes) -> bytes:
    return data[:-5] + b"%04X" % ((int(data[-5:-1], 16) + 1) & 0xFFFF) + b"\x04"


async def scrape(daemon: Daemon) -> str:
    assert daemon.admin is not None
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.admin.port}") as api:
        response = await api.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return response.text


async def get_status(daemon: Daemon) -> dict[str, object]:
    assert daemon.admin is not None
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.admin.port}") as api:
        body: dict[str, object] = (await api.get("/status")).json()
    return body


def families(text: str) -> dict[str, tuple[str, list[Sample]]]:
    return {f.name: (f.type, f.samples) for f in text_string_to_metric_families(text)}


def check_families(
    parsed: Mapping[str, tuple[str, list[Sample]]], expected: Mapping[str, tuple[str, set[str]]]
) -> None:
    for name, (kind, labels) in expected.items():
        assert name in parsed, f"{name} missing from /metrics"
        assert parsed[name][0] == kind, (name, parsed[name][0])
        for sample in parsed[name][1]:
            assert set(sample.labels) - {"le"} == labels, (name, sample)


def value(
    parsed: Mapping[str, tuple[str, list[Sample]]], family: str, **labels: str
) -> float | None:
    _, samples = parsed[family]
    found = [s.value for s in samples if s.labels == labels and not s.name.endswith("_created")]
    assert len(found) <= 1, (family, labels, found)
    return found[0] if found else None


async def promtool_accepts(text: str) -> None:
    """`promtool check metrics` reads the exposition on stdin: exit 0 and no lint problem."""
    if not HAVE_PROMTOOL:
        pytest.skip("promtool missing: apt-get install prometheus (make system-deps)")
    process = await asyncio.create_subprocess_exec(
        PROMTOOL,
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(text.encode()), 60)
    assert process.returncode == 0 and not out.strip(), out.decode()


async def test_a_running_gateway_exports_protocol_errors_sync_process_and_build_families(
    tmp_path: Path,
) -> None:
    broker = Mosquitto(tmp_path / "broker")
    line = PtyPair(tmp_path / "serial", "line")
    await broker.start()
    await line.start()
    serial_register: SimRegister | None = None
    try:
        async with ReferenceServer() as central:
            admin = Admin(central)
            daemon = await start_gateway(
                tmp_path,
                central.url,
                serial={"ports": [{"device": str(line.gateway_end), "baudrate": 115200}]},
                mqtt={"url": broker.url},
            )
            try:
                assert daemon.sim is not None and daemon.serial is not None
                assert daemon.mqtt is not None and daemon.forwarder is not None
                assert daemon.refresher is not None
                serial, mqtt = daemon.serial, daemon.mqtt
                forwarder, refresher = daemon.forwarder, daemon.refresher

                # SIM over TCP: a check for central, then four kinds of bad request and noise.
                connection, station = await register(daemon, 7)
                try:
                    assert (await post(station, 7, 1, member="M1"))[0] == "POST_OK"
                finally:
                    await connection.close()
                noise = b"\xff\x00garbage\r\n"
                bad = [
                    with_bad_checksum(sim_frame("PING", seq=1)),
                    sim_frame("FLY", seq=2),
                    sim_frame("PING", "x", seq=3),
                    sim_frame("IDENT", "7", "1", "0", "Q" * 40_000, seq=4),
                ]
                reader, writer = await asyncio.open_connection("127.0.0.1", daemon.sim.port)
                try:
                    writer.write(noise + b"".join(bad) + sim_frame("PING", seq=5))
                    await writer.drain()
                    received = b""
                    while b"PONG" not in received:
                        chunk = await asyncio.wait_for(reader.read(65536), 10)
                        assert chunk, "connection closed before the PONG"
                        received += chunk
                finally:
                    writer.close()

                # A serial line: a damaged frame (NAK, ERROR BAD_CHECKSUM) and an unknown command.
                def line_open() -> bool:
                    return serial.lines[0].state == "open"

                await until(line_open, within_s=30, what="serial line open")
                serial_register = on_serial_line(7, line.register_end)
                await serial_register.connect()
                damaged = with_bad_checksum(encode_frame(b"   7LOYAL", 1, ["PING"]))
                reply = await serial_register.send_raw(damaged, seq=1)
                assert reply is not None and reply[:2] == ["ERROR", "BAD_CHECKSUM"]
                assert (await serial_register.request("FLY"))[:2] == ["ERROR", "UNKNOWN_COMMAND"]

                # MQTT: JSON cut short.
                def on_broker() -> bool:
                    return mqtt.state == "connected"

                await until(on_broker, within_s=30, what="gateway on the broker")
                mqtt_register = MqttRegister(7, "127.0.0.1", broker.port, Topics("loyalty", "S001"))
                await mqtt_register.connect()
                try:
                    assert (await mqtt_register.send_damaged())[:2] == ["ERROR", "BAD_FRAME"]
                finally:
                    await mqtt_register.close()

                def synced() -> bool:
                    delivered = forwarder.stats.delivered
                    return delivered >= 1 and refresher.stats.last_success is not None

                await until(synced, within_s=30, what="the check delivered and the cache refreshed")

                text = await scrape(daemon)
                after = await get_status(daemon)
                dropped = daemon.sim.stats.dropped_bytes
            finally:
                if serial_register is not None:
                    await serial_register.close()
                await daemon.stop()
                await admin.aclose()
    finally:
        await line.stop()
        await broker.stop()

    parsed = families(text)
    check_families(parsed, {**ALWAYS, **WITH_CENTRAL, **WITH_LINES_OR_BROKER})

    errors = "edge_gateway_protocol_errors"
    for reason in ("BAD_CHECKSUM", "UNKNOWN_COMMAND", "BAD_FIELD", "FRAME_TOO_LARGE"):
        assert value(parsed, errors, adapter="sim_tcp", reason=reason) == 1, reason
    assert value(parsed, errors, adapter="serial", reason="BAD_CHECKSUM") == 1
    assert value(parsed, errors, adapter="serial", reason="UNKNOWN_COMMAND") == 1
    assert value(parsed, errors, adapter="mqtt", reason="BAD_FRAME") == 1
    # The frames the decoder refused are a subset: checksum and size, not the requests' fields.
    frames = "edge_gateway_frame_errors"
    assert value(parsed, frames, adapter="sim_tcp", reason="BAD_CHECKSUM") == 1
    assert value(parsed, frames, adapter="sim_tcp", reason="FRAME_TOO_LARGE") == 1
    assert value(parsed, frames, adapter="sim_tcp", reason="UNKNOWN_COMMAND") is None
    assert value(parsed, frames, adapter="serial", reason="BAD_CHECKSUM") == 1
    assert value(parsed, frames, adapter="mqtt", reason="BAD_FRAME") is None  # no byte stream
    # The noise and the oversized frame, as the listener counted them.
    assert value(parsed, "edge_gateway_dropped_bytes", adapter="sim_tcp") == dropped > len(noise)
    for adapter in ("sim_tcp", "serial", "mqtt"):
        assert value(parsed, "edge_gateway_internal_errors", adapter=adapter) == 0, adapter
    assert value(parsed, "edge_gateway_adapter_outages", adapter="serial") == 0
    assert value(parsed, "edge_gateway_adapter_outages", adapter="mqtt") == 0
    # Fields style (the default) replaces nothing; MQTT has no pipe style at all.
    assert value(parsed, "edge_gateway_pipe_values_replaced", adapter="sim_tcp") == 0
    assert value(parsed, "edge_gateway_pipe_values_replaced", adapter="mqtt") is None
    assert value(parsed, "edge_gateway_accept_failures", adapter="sim_tcp") == 0

    # The sync counters are /status's own: never ahead of a status taken after the scrape, and
    # equal where nothing moved since (the one check was delivered before the scrape).
    sync = after["sync"]
    assert isinstance(sync, dict)
    for key, (name, _) in SYNC_COUNTERS.items():
        exported = value(parsed, name)
        assert exported is not None and exported <= sync[key], (name, exported, sync[key])
    assert value(parsed, "edge_gateway_events_delivered") == sync["delivered"] == 1
    assert value(parsed, "edge_gateway_delivery_batches") == sync["batches"]
    assert value(parsed, "edge_gateway_central_outages") == 0
    assert value(parsed, "edge_gateway_central_online") == 1

    assert value(parsed, "edge_gateway_build_info", version=__version__) == 1
    cpu = value(parsed, "process_cpu_seconds")
    assert cpu is not None and cpu > 0
    assert value(parsed, "edge_gateway_requests", command="POST", outcome="ok") == 1

    await promtool_accepts(text)


async def test_a_standalone_gateway_has_no_sync_counters_and_still_passes_promtool(
    tmp_path: Path,
) -> None:
    daemon = await start_gateway(tmp_path, None)
    try:
        text = await scrape(daemon)
    finally:
        await daemon.stop()
    parsed = families(text)
    check_families(parsed, ALWAYS)
    for name in [*WITH_CENTRAL, *WITH_LINES_OR_BROKER]:
        assert name not in parsed, name  # no central, no serial line or broker: nothing to count
    assert parsed["edge_gateway_protocol_errors"][1] == []  # nothing went wrong yet
    assert value(parsed, "edge_gateway_internal_errors", adapter="sim_tcp") == 0
    await promtool_accepts(text)


async def test_record_kinds_central_invents_are_capped_as_labels() -> None:
    metrics = GatewayMetrics(version="1.2.3")
    kinds = {f"kind{n:03}": n + 1 for n in range(MAX_KIND_LABELS + 5)}
    metrics.update({"central": {"outages": 2}, "sync": {"delivered": 3, "unknown_kinds": kinds}})
    text = generate_latest(metrics.registry).decode()
    parsed = families(text)
    _, samples = parsed["edge_gateway_refresh_unknown_kinds"]
    assert len(samples) == MAX_KIND_LABELS + 1
    # The most frequent kinds keep their names; the five rarest are summed.
    kind = "edge_gateway_refresh_unknown_kinds"
    assert value(parsed, kind, kind=OTHER_KINDS) == 1 + 2 + 3 + 4 + 5
    assert value(parsed, kind, kind="kind024") == 25
    assert value(parsed, "edge_gateway_events_delivered") == 3
    assert value(parsed, "edge_gateway_central_outages") == 2
    assert value(parsed, "edge_gateway_build_info", version="1.2.3") == 1
    await promtool_accepts(text)
