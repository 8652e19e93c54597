"""The one way a test awaits a state the system reaches on its own (a drain, a reopened port, a
timeout firing): poll the condition, and fail with what was awaited instead of hanging. And the
one way a test stops a task it started in the background."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable
from typing import Any


async def until(
    condition: Callable[[], bool | Awaitable[bool]],
    within_s: float = 10.0,
    what: str = "condition",
) -> None:
    """Return once `condition()` holds; it may be a plain or an async function."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        held = condition()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return
        assert loop.time() < deadline, f"{what} not reached within {within_s} s"
        await asyncio.sleep(0.005)


async def cancelled(task: asyncio.Future[Any]) -> None:
    """Cancel `task` and return once it has stopped."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
