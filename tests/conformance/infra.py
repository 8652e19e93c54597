"""Real parts the transport tests start and stop: a Mosquitto broker and socat pty pairs.

Both bind or link only inside the test's own directory and 127.0.0.1, announce readiness on their
log (which the tests await, never a sleep), and are stopped by the fixture that started them.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import shutil
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.logging import configure_logging

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
SOCAT = shutil.which("socat") or "/usr/bin/socat"
START_WITHIN_S = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Child:
    """A helper process whose output (stdout and stderr) is read line by line: awaited until a
    line says it is ready, then drained (a full pipe would stall the child). The transport tests
    and bench/transport_latency.py start theirs with it."""

    def __init__(
        self, name: str, *, start_within_s: float = START_WITHIN_S, stop_within_s: float = 10.0
    ) -> None:
        self.name = name
        self.start_within_s = start_within_s
        self.stop_within_s = stop_within_s
        self.process: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []
        self._pump: asyncio.Task[None] | None = None
        self._waiters: list[tuple[Callable[[str], bool], asyncio.Future[str]]] = []

    async def spawn(self, *argv: str, ready: str | Callable[[str], bool], **options: Any) -> str:
        """Start `argv` (`options` go to the process) and return its first line that holds
        `ready`, or that `ready` matches; the child is stopped again when none comes."""
        if isinstance(ready, str):
            text = ready
            ready = lambda line: text in line  # noqa: E731
        since = len(self.lines)  # a restart is ready on a line of its own, not on an old one
        self.process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            **options,
        )
        self._pump = asyncio.create_task(self._read(self.process))
        try:
            return await self.line(ready, since=since)
        except BaseException:
            await self.stop()
            raise

    async def line(self, matches: Callable[[str], bool], *, since: int = 0) -> str:
        """The first output line from line `since` on (so far or to come) that `matches`."""
        for line in self.lines[since:]:
            if matches(line):
                return line
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiters.append((matches, future))
        return await asyncio.wait_for(future, self.start_within_s)

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        async for raw in process.stdout:
            line = raw.decode(errors="replace").rstrip()
            self.lines.append(line)
            for matches, future in list(self._waiters):
                if not future.done() and matches(line):
                    future.set_result(line)
        waiters, self._waiters = self._waiters, []
        for _, future in waiters:
            if not future.done():
                log = "\n".join(self.lines[-20:])
                future.set_exception(RuntimeError(f"{self.name} exited:\n{log}"))

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def stop(self, sig: int = signal.SIGTERM) -> None:
        process, self.process = self.process, None
        if process is not None:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(sig)
            try:
                await asyncio.wait_for(process.wait(), self.stop_within_s)
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._pump is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._pump, 5)
            self._pump = None


class Mosquitto(Child):
    """A real broker on a free loopback port with a config of its own; `restart()` keeps the
    port. `extra` is appended to the listener's configuration (TLS, passwords)."""

    def __init__(self, directory: Path, *, extra: str = "", anonymous: bool = True) -> None:
        super().__init__("mosquitto")
        self.directory = directory
        self.extra = extra
        self.anonymous = anonymous
        self.port = 0
        directory.mkdir(parents=True, exist_ok=True)

    def _config(self) -> Path:
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'true' if self.anonymous else 'false'}",
            "persistence false",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops to `mosquitto`, who cannot read tmp files
        config = self.directory / "mosquitto.conf"
        config.write_text("\n".join(lines) + "\n" + self.extra + "\n")
        return config

    async def start(self) -> None:
        """Start on the port of the last run, else on a free one."""
        command = (MOSQUITTO, "-c")
        if self.port:
            await self.spawn(*command, str(self._config()), ready=" running")
            return
        for attempt in range(3):  # a free port can be taken between choosing and binding it
            self.port = free_port()
            try:
                await self.spawn(*command, str(self._config()), ready=" running")
                return
            except RuntimeError:
                if attempt == 2 or not any("in use" in line for line in self.lines):
                    raise

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"


class PtyPair(Child):
    """Two linked pseudo-terminals, like a null-modem cable: the gateway opens `gateway_end`,
    the register `register_end`. `stop()` makes both disappear, as a USB adapter pulled does;
    `start()` again brings them back under the same names."""

    def __init__(self, directory: Path, name: str) -> None:
        super().__init__(f"socat {name}")
        directory.mkdir(parents=True, exist_ok=True)
        self.gateway_end = directory / f"{name}-gateway"
        self.register_end = directory / f"{name}-register"

    async def start(self) -> None:
        await self.spawn(
            SOCAT,
            "-d",
            "-d",
            f"pty,rawer,link={self.gateway_end}",
            f"pty,rawer,link={self.register_end}",
            ready="starting data transfer loop",
        )


class GatewayLog:
    """The gateway's log lines, as JSON events, while a test runs (`configure_logging` to a
    buffer; the handler is removed afterwards)."""

    def __init__(self) -> None:
        self.stream = io.StringIO()

    def __enter__(self) -> GatewayLog:
        configure_logging("info", "json", stream=self.stream)
        return self

    def __exit__(self, *exc: object) -> None:
        root = logging.getLogger()
        for handler in [h for h in root.handlers if h.get_name() == "edge-gateway"]:
            root.removeHandler(handler)

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in self.stream.getvalue().splitlines() if line]
        return [line for line in lines if name is None or line.get("event") == name]
