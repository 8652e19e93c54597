"""A gateway's client to a central the test scripts: every request goes to a function of the
test (httpx's mock transport), so sync is tested at its own level, with no socket."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from conftest import STORE_ID

from gateway.config import CentralSettings
from sync.client import CentralClient

GATEWAY_ID = "gw-7"


def scripted_client(
    central: Callable[[httpx.Request], httpx.Response], **settings: Any
) -> CentralClient:
    """Store S001's client, its requests answered by `central`; `settings` add to the central
    settings (the URL is never dialled)."""
    return CentralClient(
        CentralSettings(url="http://127.0.0.1:9", timeout_s=5.0, **settings),
        store_id=STORE_ID,
        gateway_id=GATEWAY_ID,
        transport=httpx.MockTransport(central),
    )
