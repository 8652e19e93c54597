"""Helper processes of the benchmarks: a function run in a child process that dies with its
parent, a server in a child process answering its parent, and the reference central in one
(recording when each event arrives)."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# ---- helper processes ---------------------------------------------------------------------------


def die_with_parent() -> None:
    """Ask the kernel for SIGTERM when the parent process dies (PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)


def child_setup() -> None:
    """First thing in a helper process: leave Ctrl-C to the parent, die with the parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()


def _call_in_child(
    conn: multiprocessing.connection.Connection, target: Callable[..., Any], args: tuple[Any, ...]
) -> None:
    child_setup()
    try:
        result: tuple[bool, Any] = (True, target(*args))
    except BaseException:
        result = (False, traceback.format_exc())
    conn.send(result)
    conn.close()


def _start_child(
    target: Callable[..., Any], args: tuple[Any, ...], *, duplex: bool
) -> tuple[Any, multiprocessing.connection.Connection]:
    """`target(conn, *args)` in a fresh process (spawn: not a fork of a parent that holds threads
    and a gateway pipe); returns the process and our end of the pipe."""
    ctx = multiprocessing.get_context("spawn")
    mine, theirs = ctx.Pipe(duplex=duplex)
    proc = ctx.Process(target=target, args=(theirs, *args), daemon=True)
    proc.start()
    theirs.close()
    return proc, mine


def _receive(
    conn: multiprocessing.connection.Connection, proc: Any, name: str, timeout_s: float, late: str
) -> Any:
    """The next value a helper sends; raises if it is `late` or died."""
    if not conn.poll(timeout_s):
        raise TimeoutError(f"{name} {late} within {timeout_s:.0f} s")
    try:
        return conn.recv()
    except EOFError:
        proc.join(5)
        raise RuntimeError(f"{name} died (exit code {proc.exitcode})") from None


def stop_process(proc: Any, grace_s: float = 5.0) -> None:
    if proc.is_alive():
        proc.terminate()
        proc.join(grace_s)
    if proc.is_alive():
        proc.kill()
        proc.join(grace_s)


def call_in_process(target: Callable[..., Any], *args: Any, timeout_s: float) -> Any:
    """Run `target(*args)` in a fresh process and return its result; stop it after timeout_s."""
    proc, conn = _start_child(_call_in_child, (target, args), duplex=False)
    try:
        ok, value = _receive(conn, proc, target.__name__, timeout_s, "did not finish")
    finally:
        conn.close()
        stop_process(proc)
    if not ok:
        raise RuntimeError(f"{target.__name__} failed in its process:\n{value}")
    return value


class Helper:
    """A server in a helper process (`server_process`): what it sent when ready, and questions."""

    def __init__(
        self, proc: Any, conn: multiprocessing.connection.Connection, name: str, ready_s: float
    ) -> None:
        self.name = name
        self._proc = proc
        self._conn = conn
        self.ready: Any = _receive(conn, proc, name, ready_s, "not ready")

    def ask(self, message: Any, timeout_s: float = 60.0) -> Any:
        """Send `message`; the helper's answer (see `answer_parent`)."""
        self._conn.send(message)
        return _receive(self._conn, self._proc, self.name, timeout_s, "did not answer")


@contextlib.contextmanager
def server_process(
    target: Callable[..., Any], *args: Any, ready_s: float = 60.0
) -> Iterator[Helper]:
    """Run a server `target(conn, *args)` in its own process; it sends one value (its port, say)
    on `conn` when ready (within ready_s), then answers the parent's questions, if any, until
    `conn` reaches end of file (we close our end): `answer_parent` does that in an event loop."""
    proc, conn = _start_child(target, args, duplex=True)
    try:
        yield Helper(proc, conn, target.__name__, ready_s)
    finally:
        conn.close()  # the server's signal to stop
        proc.join(5)
        stop_process(proc)


async def answer_parent(
    conn: multiprocessing.connection.Connection,
    answer: Callable[[Any], Any] | None,
    max_s: float,
) -> None:
    """In a helper's event loop: answer each message of the parent with `answer(message)` until
    the parent closes its end of `conn` (or max_s has passed)."""
    loop = asyncio.get_running_loop()
    done = asyncio.Event()

    def readable() -> None:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            loop.remove_reader(conn.fileno())
            done.set()
            return
        conn.send(None if answer is None else answer(message))

    loop.add_reader(conn.fileno(), readable)
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), max_s)
    finally:
        loop.remove_reader(conn.fileno())


# ---- the reference central in a helper process --------------------------------------------------


class ArrivalRecorder:
    """ASGI middleware in front of the reference central: when central has answered a batch of
    events (200: stored), notes the time for each `check.posted` event in it, keyed by
    (wsid, check). Times are `time.perf_counter()`, CLOCK_MONOTONIC on Linux: the same clock in
    every process of the machine, so they compare with the load generator's."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.arrivals: list[tuple[int, int, float]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not str(scope["path"]).endswith("/events"):
            await self.app(scope, receive, send)
            return
        body: list[bytes] = []
        stored: list[float] = []

        async def keep() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                body.append(message.get("body", b""))
            return message

        async def timed(message: Any) -> None:
            if message["type"] == "http.response.start" and message["status"] == 200:
                stored.append(time.perf_counter())
            await send(message)

        await self.app(scope, keep, timed)
        if stored:  # parsed after the answer, off the measured path
            raw = b"".join(body)
            headers = dict(scope.get("headers") or [])
            if headers.get(b"content-encoding", b"").strip().lower() == b"gzip":
                raw = gzip.decompress(raw)
            for event in json.loads(raw).get("events", []):
                if event.get("type") == "check.posted":
                    payload = event["payload"]
                    self.arrivals.append((int(payload["wsid"]), int(payload["check"]), stored[0]))

    def take(self, _: Any = None) -> list[tuple[int, int, float]]:
        taken, self.arrivals = self.arrivals, []
        return taken


def central_server(
    conn: multiprocessing.connection.Connection,
    db: Path | None,
    synthetic_members: int,
    record: bool,
    max_s: float,
) -> None:
    """The reference central (`sync.central`, with its fault proxy in front, as
    `edge-gateway reference-server` runs it) in a helper process, without sample data. Sends
    (url, pid) when ready; with `record`, answers each message with the arrivals noted since the
    last one (`ArrivalRecorder`)."""
    child_setup()
    from sync.central import ReferenceConfig, ReferenceServer

    async def serve() -> None:
        config = ReferenceConfig(
            db_path=db, members_file=None, coupons_file=None, synthetic_members=synthetic_members
        )
        server = ReferenceServer(config)
        recorder = ArrivalRecorder(server.app)
        if record:
            server.app = recorder  # type: ignore[assignment]  # what uvicorn serves
        await server.start()
        try:
            conn.send((server.url, os.getpid()))
            await answer_parent(conn, recorder.take, max_s)
        finally:
            await server.stop()

    asyncio.run(serve())


@contextlib.contextmanager
def reference_central(
    db: Path | None, *, synthetic_members: int = 0, record: bool = False, max_s: float = 3600.0
) -> Iterator[Helper]:
    """The reference central in its own process: `.ready` is (url, pid); with `record`,
    `.ask(None)` returns [(wsid, check, perf_counter seconds when central stored it)]. Making
    1,000,000 synthetic members at its first start takes a while: it may take 10 minutes."""
    with server_process(
        central_server, db, synthetic_members, record, max_s, ready_s=600.0
    ) as central:
        yield central
