"""The register's end of the SIM socket: TxMsg fields out as frames, the matching reply back.

One link is one workstation (one source id) on its own TCP connection, framed by
`pos_adapters.sim.codec`. Each TxMsg takes the next seq (01, 02, ... 99, 00); only a reply with
that seq and source id answers it, so a reply that comes after its timeout is logged as late and
never taken for the answer to the next request. Like a POS, the link connects when it first
sends and reconnects when the gateway went away. A refused or closed connection reaches the
script at once as a timeout (`_TIMEOUT`), which is all ISL can see of it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Protocol

from isl_plugin.islrun.interpreter import NothingSent
from pos_adapters.sim.codec import Frame, FrameDecoder, encode_frame
from pos_adapters.sim.register import chunks


@dataclass(frozen=True, slots=True)
class LinkEvent:
    """Something that happened on the link, for the transcript: sent, received, late, down..."""

    kind: str
    text: str
    raw: bytes = b""


class Link(Protocol):
    events: list[LinkEvent]

    async def send(self, fields: Sequence[str]) -> None: ...

    async def receive(self, timeout_s: float) -> list[str] | None: ...

    async def close(self) -> None: ...


@dataclass(eq=False)
class SimLink:
    host: str
    port: int
    _: KW_ONLY
    source_id: bytes
    encoding: str = "cp1252"
    connect_timeout_s: float = 2.0

    def __post_init__(self) -> None:
        self.events: list[LinkEvent] = []
        self.seq = 0
        self._writer: asyncio.StreamWriter | None = None
        self._pumps: set[asyncio.Task[None]] = set()
        self._waiting: asyncio.Future[list[str] | None] | None = None
        self._waiting_seq: int | None = None

    @property
    def connected(self) -> bool:
        return self._writer is not None

    async def _connect(self) -> bool:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.connect_timeout_s
            )
        except (OSError, TimeoutError) as error:
            self.events.append(LinkEvent("down", f"cannot connect to {self.address}: {error}"))
            return False
        self._writer = writer
        pump = asyncio.create_task(self._read(reader, writer))
        self._pumps.add(pump)
        pump.add_done_callback(self._pumps.discard)
        self.events.append(LinkEvent("connected", self.address))
        return True

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def send(self, fields: Sequence[str]) -> None:
        """Send one request; raises ValueError for a field no frame can carry."""
        self.seq = (self.seq + 1) % 100
        frame = encode_frame(self.source_id, self.seq, list(fields), encoding=self.encoding)
        future: asyncio.Future[list[str] | None] = asyncio.get_running_loop().create_future()
        self._waiting, self._waiting_seq = future, self.seq
        text = f"{self.seq:02d} " + " | ".join(fields)
        if self._writer is None and not await self._connect():
            self.events.append(LinkEvent("unsent", text, frame))
            future.set_result(None)
            return
        assert self._writer is not None
        self.events.append(LinkEvent("sent", text, frame))
        try:
            self._writer.write(frame)
            await self._writer.drain()
        except (ConnectionError, OSError) as error:
            self.events.append(LinkEvent("down", f"send failed: {error}"))
            self._lost()

    async def receive(self, timeout_s: float) -> list[str] | None:
        """The reply to the last request, or None if none came within `timeout_s`."""
        future = self._waiting
        if future is None:
            raise NothingSent
        try:
            reply = await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except TimeoutError:
            reply = None
            self.events.append(LinkEvent("timeout", f"no reply within {timeout_s:g} s"))
        self._waiting, self._waiting_seq = None, None
        return reply

    def _lost(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._writer = None
        if self._waiting is not None and not self._waiting.done():
            self._waiting.set_result(None)

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = FrameDecoder(encoding=self.encoding)
        async for data in chunks(reader):
            for item in decoder.feed(data):
                if not isinstance(item, Frame):
                    self.events.append(LinkEvent("bad", f"{item.reason}: {item.message}"))
                    continue
                raw = item.to_bytes(self.encoding)
                text = f"{item.seq:02d} " + " | ".join(item.fields)
                future = self._waiting
                if (
                    item.source_id == self.source_id
                    and item.seq == self._waiting_seq
                    and future is not None
                    and not future.done()
                ):
                    self.events.append(LinkEvent("received", text, raw))
                    future.set_result(list(item.fields))
                else:
                    self.events.append(LinkEvent("late", text, raw))
        if self._writer is writer:
            self.events.append(LinkEvent("down", "the gateway closed the connection"))
            self._lost()

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        for pump in list(self._pumps):
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
