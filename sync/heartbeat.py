"""The heartbeat: every minute, central learns this gateway's version, queue, cursor and
adapters, so the loyalty team sees a store going quiet before the store calls."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog

from gateway import __version__
from gateway.store.store import Store, utc_stamp
from sync.client import CentralClient, CentralError
from sync.refresher import CURSOR

log = structlog.get_logger("sync.heartbeat")

AdapterStates = Callable[[], Mapping[str, Mapping[str, Any]]]


async def build_heartbeat(
    store: Store, gateway_id: str, adapters: AdapterStates | None = None
) -> dict[str, Any]:
    counts = await store.counts()
    now = dt.datetime.now(dt.UTC)
    return {
        "gateway_id": gateway_id,
        "version": __version__,
        "sent_at": utc_stamp(now),
        "queue_depth": counts.outbox_depth,
        "oldest_event_age_s": counts.outbox_oldest_age_s,
        "cursor": store.get_state(CURSOR),
        "adapters": {name: dict(state) for name, state in (adapters() if adapters else {}).items()},
        "dead_letters": counts.dead_letters,
    }


# Each wait is the interval give or take this share, so a fleet started together (after a
# chain-wide power cut, an upgrade) does not beat in the same second ever after.
JITTER_SHARE = 0.1


async def run_heartbeat(
    store: Store,
    client: CentralClient,
    *,
    interval_s: float,
    adapters: AdapterStates | None = None,
    random: Callable[[], float] = random.random,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Forever: one heartbeat at once, then one per interval (give or take `JITTER_SHARE`).
    A failed one is not retried: the next one follows."""
    while True:
        # A failure is logged by the client (once); the refresher and forwarder do the retrying.
        with contextlib.suppress(CentralError):
            await client.heartbeat(await build_heartbeat(store, client.gateway_id, adapters))
        await sleep(interval_s * (1 + JITTER_SHARE * (2 * random() - 1)))
