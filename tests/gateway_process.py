"""Run the real daemon as a child process for crash, signal and CLI tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pos_adapters.sim.register import RegisterConnection

PYTHON = sys.executable
SAMPLE = Path(__file__).resolve().parent.parent / "gateway" / "sample"


def gateway_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("EDGE_GATEWAY_")}
    config = data_dir.parent / "gateway.toml"
    if not config.exists():
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(f'store_id = "S001"\ndata_dir = "{data_dir}"\ntimezone = "UTC"\n')
    env.update(
        {
            "EDGE_GATEWAY_CONFIG": str(config),
            "EDGE_GATEWAY_SIM__PORT": "0",
            "EDGE_GATEWAY_ADMIN__PORT": "0",
            "EDGE_GATEWAY_LOG__FORMAT": "json",
            **extra,
        }
    )
    return env


async def cli(data_dir: Path, *args: str, **env: str) -> tuple[int, str, str]:
    """Run `edge-gateway ARGS` to completion: (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        PYTHON,
        "-m",
        "gateway",
        *args,
        env=gateway_env(data_dir, **env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@dataclass
class GatewayProcess:
    process: asyncio.subprocess.Process
    port: int = 0
    lines: list[dict[str, Any]] = field(default_factory=list)
    _reader: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, data_dir: Path, env: Mapping[str, str] | None = None) -> GatewayProcess:
        process = await asyncio.create_subprocess_exec(
            PYTHON,
            "-m",
            "gateway",
            "run",
            env=gateway_env(data_dir, **(env or {})),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        running = cls(process)
        ready = asyncio.get_running_loop().create_future()
        running._reader = asyncio.create_task(running._read_log(ready))
        running.port = await asyncio.wait_for(ready, 30)
        return running

    async def _read_log(self, ready: asyncio.Future[int]) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            try:
                line = json.loads(raw)
            except ValueError:
                line = {"event": "unparsed", "text": raw.decode(errors="replace")}
            self.lines.append(line)
            if line.get("event") == "gateway_ready" and not ready.done():
                ready.set_result(int(line["sim_port"]))
        if not ready.done():
            ready.set_exception(RuntimeError(f"gateway exited before ready: {self.lines}"))

    async def connect(self) -> RegisterConnection:
        return await RegisterConnection.open("127.0.0.1", self.port)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("event") == name]

    async def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash or a power cut of the process."""
        self.process.send_signal(signal.SIGKILL)
        await self.wait()

    async def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return await self.wait()

    async def wait(self) -> int:
        code = await asyncio.wait_for(self.process.wait(), 30)
        if self._reader is not None:
            await self._reader
        return code

    async def close(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.wait()


Spawn = Callable[..., Awaitable[GatewayProcess]]


async def import_samples(data_dir: Path) -> None:
    """The sample members and coupons, imported the way store IT does it."""
    for kind in ("members", "coupons"):
        code, _, err = await cli(data_dir, "import", kind, str(SAMPLE / f"{kind}.jsonl"))
        assert code == 0, err
