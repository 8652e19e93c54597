"""SIM frames on a raw TCP connection, below what `RegisterConnection` does for a test: the bytes
exactly as written, and the frames that come back."""

from __future__ import annotations

import asyncio

from pos_adapters.sim.codec import Frame, FrameDecoder


async def read_frames(reader: asyncio.StreamReader, count: int) -> list[Frame]:
    """The next `count` well-formed frames from `reader` (anything else is passed over)."""
    decoder = FrameDecoder()
    frames: list[Frame] = []
    while len(frames) < count:
        data = await asyncio.wait_for(reader.read(65536), 5)
        assert data, "connection closed before the reply"
        frames += [f for f in decoder.feed(data) if isinstance(f, Frame)]
    return frames


async def raw_exchange(port: int, data: bytes, replies: int = 1) -> list[Frame]:
    """Write `data` on a new connection to the SIM port; the first `replies` frames back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await read_frames(reader, replies)
    finally:
        writer.close()
