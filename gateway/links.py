"""Availability of a link that can go down: central, the MQTT broker, a serial port, the cache
refresh, the delivery of events. One helper, so that every link reports an outage the same way:
its first failure logged once with the cause, its end once with the outage's length and the
attempts that failed in between, and counters for status and metrics.

Home Assistant's update coordinator is the model: it knows `last_update_success` and
`last_exception`, logs "unavailable" once and "recovered" once, and logs an unexpected error
(a bug, not the other side) each time with its traceback.

`sync` and `pos_adapters` both use it, so it imports neither (nor the store).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol


class LinkError(Exception):
    """The other end failed us in a way that is expected of it: it is away, or it said no.
    Links raise subclasses of it (`sync.client.CentralError`); anything else that escapes a link
    is a bug and is logged with its traceback."""


class _Log(Protocol):
    def info(self, event: str, **fields: Any) -> Any: ...
    def warning(self, event: str, **fields: Any) -> Any: ...
    def error(self, event: str, **fields: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class LinkEvents:
    """The log events of one link (store IT alerts on these names: keep them stable)."""

    down: str  # the first failure of an outage (with `error`)
    up: str  # its end (with `outage_s` and `failures`)
    # When the link was never up yet: its first failure, and its first success (the latter
    # logged even without an outage, e.g. "mqtt_connected"). None: `down` and nothing.
    first_down: str | None = None
    first_up: str | None = None
    down_level: Literal["warning", "error"] = "warning"


def describe(error: BaseException | str) -> str:
    """An error as the logs and status show it: its message, or its type when it has none."""
    if isinstance(error, str):
        return error
    return str(error) or type(error).__name__


class Link:
    """One link's availability. Call `failed()` at each failed attempt and `succeeded()` at
    each good one; the link logs and counts.

    `context` is logged with every event of the link (the device, the broker, central's URL).
    """

    def __init__(
        self,
        log: _Log,
        events: LinkEvents,
        *,
        clock: Callable[[], float] = time.monotonic,
        **context: object,
    ) -> None:
        self._log = log
        self.events = events
        self._clock = clock
        self._context = context
        # None until the first attempt; then whether the last one succeeded.
        self.available: bool | None = None
        self.ever_up = False
        self.last_error: str | None = None
        self.last_exception: BaseException | None = None
        self.outages = 0  # outages begun (each logged once) ...
        self.recoveries = 0  # ... and ended (each logged once)
        self.failures = 0  # failed attempts in all
        self.on_recovery: list[Callable[[], None]] = []  # called when an outage ends
        self._down_since: float | None = None
        self._failures_now = 0  # failed attempts in the current outage

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def outage_s(self) -> float | None:
        """How long the current outage has lasted; None while the link is not down."""
        if self._down_since is None:
            return None
        return self._clock() - self._down_since

    def failed(
        self, error: BaseException | str, *, unexpected: str | None = None, **fields: object
    ) -> bool:
        """A failed attempt. The first of an outage is logged (as `events.down`, or
        `events.first_down` before the link was ever up); the others are counted. With
        `unexpected` (an event name), the error is a bug rather than the other end's doing:
        it is logged under that name each time, with its traceback. True when this failure
        began an outage."""
        text = describe(error)
        self.available = False
        self.last_error = text
        self.last_exception = None if isinstance(error, str) else error
        self.failures += 1
        self._failures_now += 1
        if unexpected is not None:
            exc_info = error if isinstance(error, BaseException) else True
            self._log.error(unexpected, error=text, exc_info=exc_info, **self._context, **fields)
        if self._down_since is not None:
            return False
        self._down_since = self._clock()
        self.outages += 1
        event = self.events.down
        if not self.ever_up and self.events.first_down is not None:
            event = self.events.first_down
        say = self._log.error if self.events.down_level == "error" else self._log.warning
        say(event, error=text, **self._context, **fields)
        return True

    def succeeded(self, **fields: object) -> bool:
        """A good attempt. Logs the end of an outage once (`events.up`, with its length and
        the failed attempts), or the link's first success when `events.first_up` names it;
        runs `on_recovery` when an outage ended. True when this success ended an outage."""
        first = not self.ever_up
        self.available = True
        self.ever_up = True
        since, self._down_since = self._down_since, None
        failures, self._failures_now = self._failures_now, 0
        if first and self.events.first_up is not None:
            self._log.info(self.events.first_up, failures=failures, **self._context, **fields)
        elif since is not None:
            outage_s = round(self._clock() - since, 3)
            self._log.info(
                self.events.up, outage_s=outage_s, failures=failures, **self._context, **fields
            )
        if since is None:
            return False
        self.recoveries += 1
        for callback in self.on_recovery:
            callback()
        return True

    def counters(self) -> dict[str, Any]:
        """For status and metrics."""
        outage = self.outage_s()
        return {
            "outages": self.outages,
            "recoveries": self.recoveries,
            "failures": self.failures,
            "last_error": self.last_error,
            "down_for_s": None if outage is None else round(outage, 1),
        }
