"""Sockets and file descriptors for the SIM listener: binding (dual-stack on "::"), the
process's open-file limit, a descriptor held in reserve, and accept failures logged once per
condition rather than once per attempt. No protocol here: tcp.py serves the connections."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

if sys.platform != "win32":
    import resource

log = structlog.get_logger("pos_adapters.sim.tcp")

BACKLOG = 511  # a store's registers reconnecting at once after a network blip all queue
REPEAT_LOG_S = 300.0  # a condition that goes on is logged again this often, with its count
# What asyncio's own accept loop (the admin API's listener) reports through the loop.
ASYNCIO_ACCEPT_FAILURE = "socket.accept() out of system resource"


def raise_open_file_limit() -> int | None:
    """Raise the soft open-file limit to the hard one (POSIX); return the soft limit in force.

    Distributions start services with a soft limit of 1024 and a far higher hard one; a store's
    registers, the admin API and SQLite fit in 1024, but a flood of connections should meet our
    caps, not the kernel's."""
    if sys.platform != "win32":
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY or (hard != resource.RLIM_INFINITY and soft >= hard):
            return soft
        # An unlimited hard limit is not a value setrlimit takes everywhere (macOS caps it).
        for target in (hard, 1 << 20, 65536):
            if target == resource.RLIM_INFINITY or target <= soft:
                continue
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            except (ValueError, OSError):
                continue
            log.info("open_file_limit_raised", soft_was=soft, soft=target, hard=hard)
            return target
        return soft
    return None  # Windows has no such limit on sockets


def open_file_limit() -> int | None:
    if sys.platform != "win32":
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        return None if soft == resource.RLIM_INFINITY else soft
    return None


def descriptors_in_use() -> int:
    for directory in ("/proc/self/fd", "/dev/fd"):
        with contextlib.suppress(OSError):
            return len(os.listdir(directory))
    return 0


class Repeating:
    """A condition logged when it starts, then at most every REPEAT_LOG_S with its count, so a
    flood writes a line every few minutes, not one per connection."""

    def __init__(self, event: str) -> None:
        self.event = event
        self._unlogged = 0
        self._logged_at: float | None = None

    def hit(self, now: float, **details: object) -> None:
        self._unlogged += 1
        if self._logged_at is None or now - self._logged_at >= REPEAT_LOG_S:
            log.warning(self.event, occurrences=self._unlogged, **details)
            self._unlogged, self._logged_at = 0, now


class Reserve:
    """One descriptor held back: out of descriptors, releasing it lets the listener take the
    waiting peer; closing an idle connection then wins it back."""

    def __init__(self) -> None:
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def take(self) -> bool:
        if self._fd is None:
            try:
                self._fd = os.open(os.devnull, os.O_RDONLY)
            except OSError:
                return False
        return True

    def release(self) -> bool:
        if self._fd is None:
            return False
        os.close(self._fd)
        self._fd = None
        return True


@dataclass
class Failing:
    since: float
    last: float
    failures: int = 0


class AcceptFailureLog:
    """The loop's exception handler, for the process's other listeners (the admin API): asyncio
    reports an accept out of descriptors once per attempt, each second, with a traceback; this
    logs the condition once with a count, and once when accepting works again."""

    RECOVERED_AFTER_S = 2.5  # asyncio retries a failed accept after 1 s: quiet for longer is over

    def __init__(
        self, previous: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None
    ) -> None:
        self.previous = previous
        self.failing: dict[str, Failing] = {}  # by listener address

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        if context.get("message") != ASYNCIO_ACCEPT_FAILURE or not isinstance(error, OSError):
            if self.previous is not None:
                self.previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        listener = sock_name(context.get("socket"))
        now = loop.time()
        state = self.failing.get(listener)
        if state is None:
            state = self.failing[listener] = Failing(since=now, last=now)
            log.warning(
                "accept_failing",
                listener=listener,
                error=error.strerror or str(error),
                hint="out of file descriptors: raise LimitNOFILE, or see who holds connections",
            )
            loop.call_later(self.RECOVERED_AFTER_S, self._check, loop, listener)
        state.failures += 1
        state.last = now

    def _check(self, loop: asyncio.AbstractEventLoop, listener: str) -> None:
        state = self.failing[listener]
        quiet_for = loop.time() - state.last
        if quiet_for < self.RECOVERED_AFTER_S:
            loop.call_later(self.RECOVERED_AFTER_S - quiet_for, self._check, loop, listener)
            return
        del self.failing[listener]
        log.info(
            "accept_recovered",
            listener=listener,
            failures=state.failures,
            for_s=round(state.last - state.since, 1),
        )


def sock_name(sock: object) -> str:
    try:
        name = sock.getsockname()  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return "?"
    if not isinstance(name, tuple):
        return str(name)
    return f"[{name[0]}]:{name[1]}" if ":" in str(name[0]) else f"{name[0]}:{name[1]}"


def listen(host: str, port: int) -> list[socket.socket]:
    """Bound, listening sockets for `host`. "::" (or "") takes IPv4 too, on one dual-stack socket
    where the system allows it, else on a second socket with the same port."""
    if host in ("", "::") and socket.has_ipv6:
        try:
            if socket.has_dualstack_ipv6():
                return [
                    socket.create_server(
                        ("::", port), family=socket.AF_INET6, backlog=BACKLOG, dualstack_ipv6=True
                    )
                ]
            six = socket.create_server(("::", port), family=socket.AF_INET6, backlog=BACKLOG)
        except OSError as error:  # IPv6 switched off in this kernel
            log.warning("sim_ipv6_unavailable", error=str(error), listening_on="0.0.0.0")
            return [socket.create_server(("0.0.0.0", port), backlog=BACKLOG)]
        try:
            four = socket.create_server(("0.0.0.0", six.getsockname()[1]), backlog=BACKLOG)
        except OSError:
            six.close()
            raise
        return [six, four]
    listeners: list[socket.socket] = []
    try:
        seen: set[tuple[int, str]] = set()
        for family, _, _, _, address in socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        ):
            if (family, str(address[0])) in seen:
                continue
            seen.add((family, str(address[0])))
            if listeners:  # every address on the port the first one got (port 0: any)
                address = (address[0], listeners[0].getsockname()[1], *address[2:])
            listeners.append(socket.create_server(address, family=family, backlog=BACKLOG))
    except OSError:
        for listener in listeners:
            listener.close()
        raise
    return listeners
