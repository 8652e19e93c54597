"""A reference central in this process: uvicorn on an internal port, the fault proxy in front.

async with ReferenceServer(ReferenceConfig(...)) as central:
    central.url        # the public (proxy) URL a gateway talks to
    central.admin_url  # the app directly: the admin API still answers while "down"
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import uvicorn

from sync.central.app import Central, build_app
from sync.central.config import ReferenceConfig
from sync.central.faults import FaultProxy, ProxyLink


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handlers: the host (a test, or `main`) decides when to stop,
    and a stop is seen at once instead of at the next 0.1 s tick."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.exit_requested = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def main_loop(self) -> None:
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.exit_requested.wait(), 0.1)

    def request_exit(self) -> None:
        self.should_exit = True
        self.exit_requested.set()


class ReferenceServer:
    """The reference central in this process: uvicorn on an internal port, the proxy in front.

    `url` is the public (proxy) address the gateway talks to; `admin_url` reaches the app
    directly, so the admin API still answers while central plays "down".
    """

    def __init__(
        self, config: ReferenceConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.config = config or ReferenceConfig()
        self.host = host
        self.port = port
        self.link = ProxyLink()
        self.central = Central(self.config, self.link)
        self.app = build_app(self.central)
        self._uvicorn: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._proxy: FaultProxy | None = None
        self._internal_port = 0

    @property
    def url(self) -> str:
        if self._proxy is None:
            raise RuntimeError("the reference server is not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._proxy.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self._internal_port}"

    async def start(self) -> None:
        # Open the database here, not only in the lifespan: a failure then raises in the caller
        # instead of uvicorn's sys.exit inside a task.
        await self.central.open()
        # uvicorn binds its own socket (port 0: any free port). A socket made here and passed in
        # would lack IPPROTO_TCP, and asyncio would then leave Nagle on: 40 ms per response.
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=0,
            log_level="warning",
            log_config=None,  # embedded in tests and the demo: leave the process's logging alone
            lifespan="on",
            access_log=False,
            timeout_keep_alive=65,
            timeout_graceful_shutdown=2,
        )
        self._uvicorn = _EmbeddedServer(config)
        self._task = asyncio.create_task(self._uvicorn.serve())
        while not self._uvicorn.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("the reference server stopped while starting")
            await asyncio.sleep(0.005)
        self._internal_port = self._uvicorn.servers[0].sockets[0].getsockname()[1]
        self._proxy = FaultProxy(self.link, ("127.0.0.1", self._internal_port))
        try:
            await self._proxy.start(self.host, self.port)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        self.central.feed.close()  # held long polls answer now, not at the graceful timeout
        if self._proxy is not None:
            await self._proxy.stop()
        if self._uvicorn is not None and self._task is not None:
            self._uvicorn.request_exit()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None
        self._uvicorn = None
        await self.central.close()

    async def wait_stopped(self) -> None:
        if self._task is not None:
            await asyncio.shield(self._task)

    async def __aenter__(self) -> ReferenceServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
