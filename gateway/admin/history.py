"""The last hour of the gateway in memory, for the dashboard: samples of the status document
(outbox depth, central's state, the request counters) taken every few seconds by `run_sampler`.

Nothing here is durable: a restart starts a new hour. The request counters in `/status` count
since the process started, so "requests over the last hour" is the current count minus the
count at the start of the window (zero while the gateway is younger than the window)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

log = structlog.get_logger("gateway.admin.history")

WINDOW_S = 3600.0


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # unix time
    outbox_depth: int
    central: str  # STANDALONE | ONLINE | OFFLINE
    connections: int  # open register connections, every adapter together
    requests: Mapping[str, int]  # "COMMAND:outcome" -> count since the process started


@dataclass(frozen=True, slots=True)
class Switch:
    """A stop switch flipped through the admin API (the CLI's flips are in the log only)."""

    program: str
    paused: bool
    by: str
    at: float


@dataclass
class History:
    window_s: float = WINDOW_S
    clock: Callable[[], float] = time.time
    _samples: deque[Sample] = field(default_factory=deque)
    _state: str | None = None
    _state_since: float | None = None
    _last_request_at: float | None = None
    _last_connection_change_at: float | None = None
    _started_at: float | None = None  # the process's start, from the status's uptime
    switches: dict[str, Switch] = field(default_factory=dict)

    def add(self, status: Mapping[str, Any], at: float | None = None) -> Sample:
        """Record one status document (as `/status` returns it)."""
        at = self.clock() if at is None else at
        uptime = status.get("uptime_s")
        if self._started_at is None and isinstance(uptime, int | float):
            self._started_at = at - float(uptime)
        adapters = status.get("adapters") or {}
        sample = Sample(
            at=at,
            outbox_depth=int((status.get("outbox") or {}).get("depth") or 0),
            central=str((status.get("central") or {}).get("state") or "UNKNOWN"),
            connections=sum(int(a.get("connections") or 0) for a in adapters.values()),
            requests={str(k): int(v) for k, v in (status.get("requests") or {}).items()},
        )
        previous = self._samples[-1] if self._samples else None
        if sample.central != self._state:
            # The first state is taken to hold since the process started (to the sampling step).
            first = previous is None and self._started_at is not None
            self._state, self._state_since = sample.central, self._started_at if first else at
        if previous is not None:
            if sum(sample.requests.values()) > sum(previous.requests.values()):
                self._last_request_at = at
            if sample.connections != previous.connections:
                self._last_connection_change_at = at
        elif sum(sample.requests.values()) > 0:
            self._last_request_at = at
        self._samples.append(sample)
        self._prune(at)
        return sample

    def note_switch(self, program: str, paused: bool, by: str) -> None:
        self.switches[program] = Switch(program, paused, by, self.clock())

    def _prune(self, now: float) -> None:
        # Keep one sample at or before the window's start: it is the baseline of the counters.
        cutoff = now - self.window_s
        while len(self._samples) > 1 and self._samples[1].at <= cutoff:
            self._samples.popleft()

    @property
    def samples(self) -> list[Sample]:
        return list(self._samples)

    def requests_at_window_start(self, now: float | None = None) -> dict[str, int]:
        """The request counters as they stood one window ago (what to subtract from now's)."""
        now = self.clock() if now is None else now
        cutoff = now - self.window_s
        if self._started_at is not None and self._started_at >= cutoff:
            return {}  # the process is younger than the window: every request is in it
        # The sample at the window's start, or the oldest there is if the sampler started late.
        return dict(self._samples[0].requests) if self._samples else {}

    def to_json(self) -> dict[str, Any]:
        now = self.clock()
        cutoff = now - self.window_s
        latest = self._samples[-1] if self._samples else None
        baseline = self.requests_at_window_start(now)
        in_window = {}
        if latest is not None:
            for key, count in latest.requests.items():
                if count - baseline.get(key, 0) > 0:
                    in_window[key] = count - baseline.get(key, 0)
        return {
            "now": now,
            "window_s": self.window_s,
            "central": {"state": self._state, "since": self._state_since},
            "last_request_at": self._last_request_at,
            "last_connection_change_at": self._last_connection_change_at,
            "outbox": [
                {"at": round(s.at, 3), "depth": s.outbox_depth}
                for s in self._samples
                if s.at >= cutoff
            ],
            "requests_at_window_start": baseline,
            "requests_in_window": in_window,
            "switches": {
                name: {"paused": s.paused, "by": s.by, "at": s.at}
                for name, s in self.switches.items()
            },
        }


async def run_sampler(
    status: Callable[[], Awaitable[dict[str, Any]]],
    history: History,
    interval_s: float = 10.0,
) -> None:
    """Sample `status` into `history` every `interval_s` until cancelled. A failing status is
    logged once, and once more when it works again; the sampler never stops on its own."""
    failing = False
    while True:
        try:
            history.add(await status())
        except asyncio.CancelledError:
            raise
        except Exception as error:
            if not failing:
                log.warning("history_sample_failed", error=str(error), kind=type(error).__name__)
                failing = True
        else:
            if failing:
                log.info("history_sample_recovered")
                failing = False
        await asyncio.sleep(interval_s)
