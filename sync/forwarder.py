"""Store and forward: the outbox, in order and in batches, to central — nothing lost, nothing
counted twice.

An event leaves the outbox only when central answered for it (`accepted` or `duplicate`), or went
to dead letters (`rejected`); an event central did not answer for is sent again. A batch is
stamped with its id before it is sent, so a batch cut short by a crash is sent again whole, under
the same id, after the restart. Central de-duplicates on event ids, so a lost acknowledgement
costs a resend, never a double count.

A batch is retried until central answers; only `drain(within_s)` stops, when its time is up, with
`DrainStopped` naming central's last error and what is still waiting. Central refusing whole
batches (401, 403, 404: a setting to fix, not data) is an outage of the forwarder's `link`:
logged once, and once when batches are taken again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field

import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    RetryError,
    retry_if_exception,
    wait_random_exponential,
)

from gateway.domain.ids import new_ulid
from gateway.links import Link, LinkEvents, describe
from gateway.store.store import EventResult, OutboxBatch, QueuedEvent, Store
from sync.client import CentralClient, CentralRefused, CentralUnavailable

log = structlog.get_logger("sync.forwarder")

MAX_BATCH_BYTES = 1024 * 1024 - 4096  # central takes 1 MiB; leave room for the envelope
IDLE_POLL_S = 5.0  # an idle forwarder looks again this often even without a wake-up


@dataclass
class ForwarderStats:
    batches: int = 0
    delivered: int = 0
    dead_letters: int = 0
    conflicts: int = 0
    resent: int = 0
    split_batches: int = 0
    failures: int = 0
    last_success: float | None = None  # wall-clock time of the last delivered batch
    # The last failed attempt's error, whatever its cause; None again once a batch is delivered.
    last_error: str | None = None


class DrainStopped(Exception):
    """`drain(within_s)` ran out of time with events still waiting."""

    def __init__(self, within_s: float, waiting: int, last_error: str | None) -> None:
        why = (
            f"central keeps failing; its last error: {last_error}"
            if last_error is not None
            else "central answered, but not fast enough to empty the outbox"
        )
        super().__init__(f"{waiting} events still waiting after {within_s:g} s: {why}")
        self.within_s = within_s
        self.waiting = waiting
        self.last_error = last_error


class _OutOfTime(Exception):
    """A batch's retries reached the drain's deadline (`error`: the last attempt's)."""

    def __init__(self, error: BaseException | None) -> None:
        super().__init__(describe(error) if error is not None else "out of time")
        self.error = error


class _WaitForCentral:
    """Exponential backoff with full jitter, but never sooner than central's Retry-After, and
    never past a drain's deadline (the last attempt is made at it)."""

    def __init__(
        self, ceiling_s: float, deadline: float | None, clock: Callable[[], float]
    ) -> None:
        self._jitter = wait_random_exponential(multiplier=0.5, max=ceiling_s)
        self._deadline = deadline
        self._clock = clock

    def __call__(self, state: RetryCallState) -> float:
        delay = float(self._jitter(state))
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        if isinstance(error, CentralUnavailable) and error.retry_after is not None:
            delay = max(delay, error.retry_after)
        if self._deadline is not None:
            delay = min(delay, max(0.0, self._deadline - self._clock()))
        return delay


@dataclass(eq=False)
class Forwarder:
    """Run with `await forwarder.run()` (forever); `wake()` when new events are committed.

    A batch holds at most `batch_size` events and `max_bytes` bytes, `window` batches are in
    flight at once, and the backoff between a batch's attempts grows to `backoff_ceiling_s`
    (central's Retry-After may ask for longer). The backoff and a drain's deadline run on
    `clock` and wait with `sleep` (tests pass their own)."""

    store: Store
    client: CentralClient
    _: KW_ONLY
    batch_size: int = 500
    max_bytes: int = MAX_BATCH_BYTES
    backoff_ceiling_s: float = 60.0
    window: int = 2
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    stats: ForwarderStats = field(default_factory=ForwarderStats, init=False)
    link: Link = field(init=False)
    _wake: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)

    def __post_init__(self) -> None:
        # Down while central refuses whole batches (not while it is away: the client's link
        # says that), up again at the next delivered batch.
        self.link = Link(
            log,
            LinkEvents(
                down="central_refuses_batches", up="central_accepts_batches", down_level="error"
            ),
            clock=self.clock,
        )

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Forever: send what the outbox holds, then wait to be woken (or poll)."""
        while True:
            try:
                await self._pump()
            except Exception:  # a full disk, a bug: never the end of forwarding
                log.exception("forwarder_error")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), IDLE_POLL_S)

    async def drain(self, within_s: float | None = None) -> None:
        """Send until the outbox is empty (for `edge-gateway drain` and the tests).

        With `within_s`, stop when that time is up: no new batch is started after it, and a
        batch's retries end at it. Raises `DrainStopped` (central's last error, the events
        still waiting) when events remain; what was sent stays sent."""
        if within_s is None:
            await self._pump()
            return
        deadline = self.clock() + within_s
        last_error: str | None = None
        try:
            await self._pump(deadline)
        except _OutOfTime as stopped:
            last_error = str(stopped)
        waiting, _ = await self.store.outbox_depth()
        if waiting and (last_error is not None or self.clock() >= deadline):
            raise DrainStopped(within_s, waiting, last_error)

    async def _pump(self, deadline: float | None = None) -> None:
        """Send batches until none is left, `window` of them in flight at once, so central
        ingests one while the next is read and encoded here (each batch still leaves the outbox
        only with central's answer for it). None is started after the `deadline`."""
        in_flight: dict[str, asyncio.Task[None]] = {}
        try:
            while True:
                while len(in_flight) < self.window:
                    if deadline is not None and self.clock() >= deadline:
                        break
                    batch = await self.store.next_batch(
                        self.batch_size, self.max_bytes, in_flight=list(in_flight)
                    )
                    if batch is None:
                        break
                    in_flight[batch.batch_id] = asyncio.create_task(self._send(batch, deadline))
                if not in_flight:
                    return
                done, _ = await asyncio.wait(
                    in_flight.values(), return_when=asyncio.FIRST_COMPLETED
                )
                for batch_id, task in list(in_flight.items()):
                    if task in done:
                        del in_flight[batch_id]
                        task.result()  # a failure ends this pump; run() logs and goes on
        finally:
            for task in in_flight.values():
                task.cancel()
            await asyncio.gather(*in_flight.values(), return_exceptions=True)

    async def send_next(self) -> bool:
        """Send one batch, retrying until central answers. False when there was nothing."""
        batch = await self.store.next_batch(self.batch_size, self.max_bytes)
        if batch is None:
            return False
        await self._send(batch, None)
        return True

    async def _send(self, batch: OutboxBatch, deadline: float | None) -> None:
        results = await self._deliver(batch.batch_id, batch.events, deadline)
        outcome = await self.store.finish_batch(batch, results)
        self.stats.batches += 1
        self.stats.delivered += outcome.delivered
        self.stats.dead_letters += outcome.dead_letters
        self.stats.conflicts += outcome.conflicts
        self.stats.resent += outcome.unanswered
        self.stats.last_success = time.time()
        self.stats.last_error = None
        if outcome.dead_letters:
            log.warning("events_dead_lettered", count=outcome.dead_letters, batch=batch.batch_id)
        if outcome.conflicts:
            log.warning("offline_coupon_conflicts", count=outcome.conflicts)

    async def _deliver(
        self, batch_id: str, events: Sequence[QueuedEvent], deadline: float | None
    ) -> list[EventResult]:
        """Central's results for these events; a batch central refuses as a whole (400) is
        split in halves until the event it refuses stands alone, which becomes a dead letter."""
        try:
            return await self._post_until_answered(batch_id, events, deadline)
        except CentralRefused as refused:
            if len(events) == 1:
                reason = f"{refused.code}: {refused.message}"[:500]
                return [EventResult(events[0].event_id, "rejected", reason, None)]
            self.stats.split_batches += 1
            half = len(events) // 2
            first = await self._deliver(new_ulid(), events[:half], deadline)
            return first + await self._deliver(new_ulid(), events[half:], deadline)

    async def _post_until_answered(
        self, batch_id: str, events: Sequence[QueuedEvent], deadline: float | None
    ) -> list[EventResult]:
        """Retried until central answers, or until the `deadline` (then `_OutOfTime`)."""
        retrying = AsyncRetrying(
            retry=retry_if_exception(_worth_retrying),
            wait=_WaitForCentral(self.backoff_ceiling_s, deadline, self.clock),
            stop=lambda _: deadline is not None and self.clock() >= deadline,
            sleep=self.sleep,
            after=self._count_failure,  # every failed attempt that is worth another
        )
        try:
            async for attempt in retrying:
                with attempt:
                    results = await self.client.post_events(batch_id, events)
                    self.link.succeeded()
                    return results
        except RetryError as stopped:
            raise _OutOfTime(stopped.last_attempt.exception()) from None
        raise AssertionError("unreachable: the retry loop returns or raises")

    def _count_failure(self, state: RetryCallState) -> None:
        self.stats.failures += 1
        error = state.outcome.exception() if state.outcome is not None else None
        if error is None:
            return
        self.stats.last_error = describe(error)
        if isinstance(error, CentralRefused):
            # 401/403/404 for a whole batch is a setting to fix (token, store id), not data.
            self.link.failed(error, status=error.status, code=error.code)


def _worth_retrying(error: BaseException) -> bool:
    """Everything but a refusal of the batch's content (400, 413), which splitting resolves."""
    if isinstance(error, CentralRefused):
        return error.status not in (400, 413)
    return isinstance(error, CentralUnavailable)
