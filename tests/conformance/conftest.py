"""The `transport` fixture: every conformance test runs once per register transport, and on the
SIM transports once per reply style (`HARNESSES`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.service import Gateway

from .harness import HARNESSES, Harness, make_harness


@pytest.fixture(params=HARNESSES)
async def transport(
    request: pytest.FixtureRequest, service: Gateway, tmp_path: Path
) -> AsyncIterator[Harness]:
    harness = make_harness(request.param, service, tmp_path / request.param)
    await harness.start()
    try:
        yield harness
    finally:
        await harness.close()
