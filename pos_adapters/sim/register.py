"""A simulated register: the POS side of the SIM socket, for `edge-gateway simulate`, the
benchmarks and the tests. Several workstations may share one connection, as on a real POS."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

from pos_adapters.sim.codec import Frame, FrameDecoder, encode_frame


async def chunks(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    """What the peer sends, until it closes or the connection fails: a register sees both
    as the end of the stream."""
    while True:
        try:
            data = await reader.read(65536)
        except OSError:  # ConnectionError among them
            return
        if not data:
            return
        yield data


class RegisterTimeout(Exception):
    """The gateway did not answer in time (the ISL script would see `_TIMEOUT`)."""


class RegisterConnection:
    """One TCP connection from a POS; `workstation(n)` gives a sender with its own source id."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        encoding: str = "cp1252",
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.encoding = encoding
        self._decoder = FrameDecoder(encoding=encoding)
        self._waiting: dict[tuple[bytes, int], asyncio.Future[Frame]] = {}
        self._pump = asyncio.create_task(self._read_replies())
        self.unmatched: list[object] = []  # replies nobody waited for, and codec errors

    @classmethod
    async def open(cls, host: str, port: int, *, encoding: str = "cp1252") -> RegisterConnection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, encoding=encoding)

    async def close(self) -> None:
        self._pump.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await self._pump
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()

    def workstation(self, wsid: int, *, source_id: bytes | None = None) -> Workstation:
        return Workstation(self, source_id or f"{wsid:>4}LOYAL".encode("ascii"))

    async def send_raw(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def exchange(
        self, frame_bytes: bytes, key: tuple[bytes, int], answer_within: float
    ) -> Frame:
        future: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._waiting[key] = future
        try:
            await self.send_raw(frame_bytes)
            return await asyncio.wait_for(future, answer_within)
        except TimeoutError:
            raise RegisterTimeout(f"no answer within {answer_within} s") from None
        finally:
            self._waiting.pop(key, None)

    async def _read_replies(self) -> None:
        async for data in chunks(self._reader):
            for item in self._decoder.feed(data):
                if isinstance(item, Frame):
                    future = self._waiting.get((item.source_id, item.seq))
                    if future is not None and not future.done():
                        future.set_result(item)
                        continue
                self.unmatched.append(item)
        for waiting in self._waiting.values():
            if not waiting.done():
                waiting.set_exception(ConnectionError("gateway closed the connection"))


class Workstation:
    """Sends requests as one workstation (one source id), numbering them 00..99."""

    def __init__(self, connection: RegisterConnection, source_id: bytes) -> None:
        self.connection = connection
        self.source_id = source_id
        self.seq = 0
        self._last: bytes | None = None

    def frame(self, fields: Sequence[str], *, retransmit: bool = False) -> bytes:
        return encode_frame(
            self.source_id,
            self.seq,
            list(fields),
            retransmit=retransmit,
            encoding=self.connection.encoding,
        )

    async def request(self, *fields: str, answer_within: float = 5.0) -> list[str]:
        """Send a new request and return the reply's fields (command first)."""
        self.seq = (self.seq + 1) % 100
        data = self.frame(fields)
        self._last = data
        reply = await self.connection.exchange(data, (self.source_id, self.seq), answer_within)
        return list(reply.fields)

    async def retransmit(self, *fields: str, answer_within: float = 5.0) -> list[str]:
        """Send the last request again flagged `R` (same seq), as a POS does after a timeout."""
        data = self.frame(fields, retransmit=True)
        reply = await self.connection.exchange(data, (self.source_id, self.seq), answer_within)
        return list(reply.fields)
