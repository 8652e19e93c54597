"""Drain a 100,000-event backlog to the reference server: events/s next to the reference
server's own ingest rate, measured in the same run (DESIGN.md section 7: >= 10,000 events/s).

    python -m bench.sync_drain [--events 100000]

The reference server runs in its own process. The floor posts the same batches of 500 straight
to it with one HTTP client; the gateway side is the real outbox (SQLite on disk) and forwarder.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from gateway.config import CentralSettings
from gateway.domain.ids import new_ulid
from gateway.domain.models import OutboxEvent
from gateway.store.store import Store, utc_stamp
from sync.client import CentralClient
from sync.forwarder import Forwarder

BATCH = 500


def events(count: int, store_id: str) -> list[OutboxEvent]:
    stamp = utc_stamp(dt.datetime.now(dt.UTC))
    return [
        OutboxEvent(
            new_ulid(),
            "check.posted",
            stamp,
            {
                "store_id": store_id,
                "business_date": "2026-11-23",
                "wsid": 1 + n % 20,
                "rvc": 1,
                "check": n + 1,
                "member_id": None,
                "subtotal": "12.00",
                "total": "12.00",
                "items": [{"qty": "1", "object": 1001, "total": "12.00"}],
                "coupons": [],
                "unknown_coupon_refs": [],
                "points_earned": 0,
                "tickets_earned": 0,
                "wallet_delta": 0,
                "earn_mode": "points",
                "rules_version": "default",
            },
        )
        for n in range(count)
    ]


def start_reference(db: Path) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "sync.central", "--port", "0", "--db", str(db),
         "--no-sample"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline()
    if "listening on" not in line:
        process.kill()
        raise SystemExit(f"reference server did not start: {line}")
    return process, line.rsplit(" ", 1)[-1].strip()


async def floor(url: str, backlog: list[OutboxEvent]) -> float:
    """The reference server's own ingest rate: batches posted back to back, nothing else."""
    async with httpx.AsyncClient(base_url=url, headers={"X-Gateway-Id": "floor"}) as http:
        started = time.perf_counter()
        for start in range(0, len(backlog), BATCH):
            body = {
                "batch_id": new_ulid(),
                "events": [
                    {"id": e.event_id, "type": e.type, "occurred_at": e.occurred_at,
                     "payload": e.payload}
                    for e in backlog[start : start + BATCH]
                ],
            }  # fmt: skip
            (await http.post("/v1/stores/FLOOR/events", json=body)).raise_for_status()
        return len(backlog) / (time.perf_counter() - started)


async def drain(url: str, backlog: list[OutboxEvent], data: Path) -> tuple[float, int]:
    store = await Store.open(data / "gateway.db")
    try:
        for start in range(0, len(backlog), 5000):
            await store.append_events(backlog[start : start + 5000])
        settings = CentralSettings(url=url)
        async with CentralClient(settings, store_id="BENCH", gateway_id="bench") as client:
            forwarder = Forwarder(store, client, batch_size=BATCH)
            started = time.perf_counter()
            await forwarder.drain()
            elapsed = time.perf_counter() - started
        depth, _ = await store.outbox_depth()
        return forwarder.stats.delivered / elapsed, depth
    finally:
        await store.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-drain-") as tmp:
        process, url = start_reference(Path(tmp) / "central.db")
        try:
            floor_rate = await floor(url, events(args.events, "FLOOR"))
            drain_rate, left = await drain(url, events(args.events, "BENCH"), Path(tmp))
        finally:
            process.terminate()
            process.wait(timeout=10)
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    print(f"backlog: {args.events:,} check.posted events, batches of {BATCH}")
    print(f"floor (reference server ingest, direct): {floor_rate:,.0f} events/s")
    print(f"gateway drain (outbox -> forwarder -> central): {drain_rate:,.0f} events/s")
    print(f"ratio to floor: {drain_rate / floor_rate:.2f}   target: >= 10,000 events/s")
    print(f"left in the outbox: {left}")


if __name__ == "__main__":
    asyncio.run(main())
