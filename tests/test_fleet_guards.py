"""What a whole fleet does at once must not queue up behind a default: heartbeats of stores
started together drift apart (jitter), and central accepts hundreds of simultaneous connections
without sending any of them into the kernel's one-second SYN retry."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import httpx
import pytest
from conftest import NOW
from scripted_central import scripted_client
from test_sync_unit import Central

from gateway.store.store import Store
from sync.central import ReferenceConfig, ReferenceServer
from sync.heartbeat import JITTER_SHARE, run_heartbeat


class Stop(Exception):
    pass


async def test_heartbeats_go_at_once_then_every_interval_give_or_take_the_jitter(
    empty_store: Store,
) -> None:
    central = Central(then=httpx.Response(204))
    sleeps: list[float] = []
    draws = iter([0.0, 1.0, 0.5])

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 3:
            raise Stop

    with pytest.raises(Stop):
        await run_heartbeat(
            empty_store,
            scripted_client(central),
            interval_s=60,
            random=lambda: next(draws),
            sleep=sleep,
        )
    assert len(central.requests) == 3  # one at once, then one after each wait
    assert sleeps == pytest.approx([60 * (1 - JITTER_SHARE), 60 * (1 + JITTER_SHARE), 60])


async def test_central_takes_600_simultaneous_connections_without_a_syn_retry() -> None:
    async with ReferenceServer(ReferenceConfig(clock=lambda: NOW)) as central:
        address = urlsplit(central.url)
        host, port = address.hostname or "127.0.0.1", address.port or 80

        async def connect() -> tuple[float, asyncio.StreamWriter]:
            started = time.perf_counter()
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
            return time.perf_counter() - started, writer

        opened = await asyncio.gather(*(connect() for _ in range(600)))
        try:
            slowest = max(seconds for seconds, _ in opened)
            # A connection the listen queue had no room for waits for the SYN retry: 1 s.
            assert slowest < 0.9, slowest
        finally:
            for _, writer in opened:
                writer.close()
