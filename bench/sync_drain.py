"""Drain a 100,000-event backlog to the reference central: events/s next to the central's own
ingest rate, measured in the same run (DESIGN.md section 7: >= 10,000 events/s).

    python -m bench.sync_drain [--events 100000] [--json FILE]

The reference central runs in its own process. The floor posts the same batches of 500 straight
to it with one HTTP client; the gateway side is the real outbox (SQLite on disk) and forwarder,
in this process.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/sync_drain.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common as common
from bench import _helpers as helpers

TARGET_EVENTS_PER_S = 10_000
BATCH = 500


def events(count: int, store_id: str) -> list[Any]:
    """`count` check.posted events of one store, as the gateway's outbox holds them."""
    from gateway.domain.ids import new_ulid
    from gateway.domain.models import OutboxEvent
    from gateway.store.store import utc_stamp

    stamp = utc_stamp(dt.datetime.now(dt.UTC))
    return [
        OutboxEvent(
            new_ulid(),
            "check.posted",
            stamp,
            common.anonymous_check(store_id, "2026-11-23", 1 + n % 20, n + 1),
        )
        for n in range(count)
    ]


def batch_body(batch: list[Any]) -> dict[str, Any]:
    """A batch as central's API takes it (sync/openapi.yaml), without the forwarder."""
    from gateway.domain.ids import new_ulid

    return {
        "batch_id": new_ulid(),
        "events": [
            {"id": e.event_id, "type": e.type, "occurred_at": e.occurred_at, "payload": e.payload}
            for e in batch
        ],
    }


async def floor(url: str, backlog: list[Any]) -> float:
    """The reference central's own ingest rate: batches posted back to back, nothing else."""
    import httpx

    async with httpx.AsyncClient(base_url=url, headers={"X-Gateway-Id": "floor"}) as http:
        started = time.perf_counter()
        for start in range(0, len(backlog), BATCH):
            body = batch_body(backlog[start : start + BATCH])
            (await http.post("/v1/stores/FLOOR/events", json=body)).raise_for_status()
        return len(backlog) / (time.perf_counter() - started)


async def drain(
    url: str, backlog: list[Any], data: Path, meter: common.CpuMeter
) -> tuple[float, int]:
    """The gateway's drain rate (outbox -> forwarder -> central) and what is left in the outbox;
    `meter` restarts when the drain starts and is left to be read."""
    from gateway.config import CentralSettings
    from gateway.store.store import Store
    from sync.client import CentralClient
    from sync.forwarder import Forwarder

    store = await Store.open(data / "gateway.db")
    try:
        for start in range(0, len(backlog), 5000):
            await store.append_events(backlog[start : start + 5000])
        settings = CentralSettings(url=url)
        async with CentralClient(settings, store_id=common.STORE_ID, gateway_id="bench") as client:
            forwarder = Forwarder(store, client, batch_size=BATCH)
            meter.restart()
            started = time.perf_counter()
            await forwarder.drain()
            elapsed = time.perf_counter() - started
        depth, _ = await store.outbox_depth()
        return forwarder.stats.delivered / elapsed, depth
    finally:
        await store.close()


def run(count: int) -> dict[str, Any]:
    result = common.new_result("sync_drain", events=count)
    with (
        common.run_directory() as directory,
        helpers.reference_central(directory / "central.db") as central,
    ):
        url, pid = central.ready
        meter = common.CpuMeter([pid])
        result["floor_events_per_s"] = asyncio.run(floor(url, events(count, "FLOOR")))
        used = meter.read()
        result["floor_central_cpu_us"] = sum(used.servers[pid].values()) / count * 1e6
        backlog = events(count, common.STORE_ID)
        rate, left = asyncio.run(drain(url, backlog, directory, meter))
        used = meter.read()
    result.update(events_per_s=rate, left=left)
    result["ratio"] = rate / result["floor_events_per_s"]
    result["gateway_cpu_us"] = used.mine / count * 1e6  # the outbox, the forwarder, the client
    result["central_cpu_us"] = sum(used.servers[pid].values()) / count * 1e6
    result["met"] = rate >= TARGET_EVENTS_PER_S and left == 0
    report(result)
    return result


def report(result: dict[str, Any]) -> None:
    print(f"backlog: {result['events']:,} check.posted events, batches of {BATCH}")
    print(f"floor (reference server ingest, direct): {result['floor_events_per_s']:,.0f} events/s")
    print(f"gateway drain (outbox -> forwarder -> central): {result['events_per_s']:,.0f} events/s")
    print(f"ratio to floor: {result['ratio']:.2f}   target: >= {TARGET_EVENTS_PER_S:,} events/s")
    print(
        f"CPU per event: gateway side {result['gateway_cpu_us']:.0f} us, central"
        f" {result['central_cpu_us']:.0f} us (floor: central {result['floor_central_cpu_us']:.0f}"
        " us)"
    )
    print(f"left in the outbox: {result['left']}")


def rows(result: dict[str, Any]) -> list[common.Row]:
    """The DESIGN.md section 7 row: the drain's rate."""
    return [
        common.Row(
            f"drain a {result['events']:,}-event backlog: >= {TARGET_EVENTS_PER_S:,} events/s",
            f"{result['events_per_s']:,.0f}/s",
            f"central ingest {result['floor_events_per_s']:,.0f}/s",
            common.times(result["events_per_s"], result["floor_events_per_s"]),
            f"{common.us(result['gateway_cpu_us'])} per event",
            result["met"],
        )
    ]


def main(argv: list[str] | None = None) -> int:
    parser = common.command_line(__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args(argv)
    result = run(args.events)
    return common.finish(result, rows(result), args.json)


if __name__ == "__main__":
    raise SystemExit(common.entry(main))
