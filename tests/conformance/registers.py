"""Registers as the conformance suite sees them: send a request's fields, get the reply's fields.

One small interface (`Register`) over three wire forms: SIM frames on a TCP connection, SIM frames
on a serial line (ACK/NAK bytes recorded), and JSON over MQTT (the reply turned back into SIM
fields with `fields_of_reply`). A test written against `Register` runs on every transport. A SIM
register speaks one reply style (docs/protocol.md, "Reply style"): `fields`, each value a field
of its own, or `pipe`, requests and replies as one field joined by `|`, as the public ISL scripts
send and read them; either way `request` takes and returns the fields one by one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import aiomqtt
import serial_asyncio_fast
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from waiting import cancelled

from pos_adapters.mqtt import Topics, fields_of_reply, request_body
from pos_adapters.sim.codec import ACK, EOT, NAK, Frame, FrameDecoder, encode_frame
from pos_adapters.sim.register import chunks
from pos_adapters.sim.session import PIPE, ReplyStyle

ANSWER_WITHIN_S = 5.0

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Register(Protocol):
    wsid: int

    async def request(self, *fields: str) -> list[str]:
        """A new request (command first); the reply's fields (reply name first)."""
        ...

    async def resend(self, *fields: str) -> list[str]:
        """The last request again as its transport retransmits it: SIM flag R with the same
        seq; MQTT the same correlation id, published again."""
        ...

    async def send_damaged(self) -> list[str]:
        """A request damaged on the way that can still be addressed; the ERROR reply."""
        ...

    async def reconnect(self) -> None:
        """Reopen the register's end after its transport failed and came back."""
        ...

    async def close(self) -> None: ...


class _Pumped:
    """A register whose end is read by a task of its own (`_pump`), started by `connect`."""

    _pump: asyncio.Task[None] | None

    async def connect(self) -> None:
        raise NotImplementedError

    async def _disconnect(self) -> None:
        """Let go of the register's end, the reading task already stopped."""
        raise NotImplementedError

    async def close(self) -> None:
        if self._pump is not None:
            await cancelled(self._pump)
            self._pump = None
        await self._disconnect()

    async def reconnect(self) -> None:
        await self.close()
        await self.connect()


class SimRegister(_Pumped):
    """One workstation sending SIM frames over a byte stream: a TCP connection or a serial line.

    Every ACK and NAK byte the gateway sends is kept in `controls`, in arrival order. In the
    `pipe` style a request goes as one field joined by `|`, and the reply must be one field, which
    is split on `|` (`pipe_frames` keeps the reply fields as they arrived)."""

    def __init__(
        self,
        wsid: int,
        open_streams: Callable[[], Awaitable[Streams]],
        style: ReplyStyle = "fields",
    ) -> None:
        self.wsid = wsid
        self.style = style
        self.pipe_frames: list[tuple[str, ...]] = []
        self.source_id = f"{wsid:>4}LOYAL".encode("ascii")
        self.seq = 0
        self.controls: list[int] = []
        self.received = bytearray()  # every byte from the gateway, in order
        self.unmatched: list[Frame | object] = []
        self._open_streams = open_streams
        self._writer: asyncio.StreamWriter | None = None
        self._pump: asyncio.Task[None] | None = None
        self._waiting: dict[int, asyncio.Future[Frame]] = {}
        self._changed = asyncio.Event()

    async def connect(self) -> None:
        reader, self._writer = await self._open_streams()
        self._pump = asyncio.create_task(self._read(reader, FrameDecoder()))

    async def _disconnect(self) -> None:
        if self._writer is not None:
            # abort: a serial close would first wait to flush, maybe into a line that is gone.
            self._writer.transport.abort()
            self._writer = None

    def abort(self) -> None:
        """Reset the connection under the register's feet (TCP: an RST)."""
        assert self._writer is not None
        self._writer.transport.abort()

    async def _read(self, reader: asyncio.StreamReader, decoder: FrameDecoder) -> None:
        async for data in chunks(reader):
            self.received += data
            # ACK and NAK are control bytes, so they can never be part of a frame.
            self.controls += [byte for byte in data if byte in (ACK, NAK)]
            for item in decoder.feed(data):
                waiting = self._waiting.get(item.seq) if isinstance(item, Frame) else None
                if waiting is not None and not waiting.done() and isinstance(item, Frame):
                    waiting.set_result(item)
                else:
                    self.unmatched.append(item)
            self._changed.set()
            self._changed = asyncio.Event()
        for pending in self._waiting.values():
            if not pending.done():
                pending.set_exception(ConnectionError("the gateway's end closed"))

    async def wait_controls(self, count: int) -> list[int]:
        """The first `count` ACK/NAK bytes, once that many have arrived."""
        async with asyncio.timeout(ANSWER_WITHIN_S):
            while len(self.controls) < count:
                await self._changed.wait()
        return self.controls[:count]

    async def send_raw(self, data: bytes, seq: int | None = None) -> list[str] | None:
        """Write bytes as they are; with `seq`, wait for the reply that carries it."""
        assert self._writer is not None
        future = None
        if seq is not None:
            future = asyncio.get_running_loop().create_future()
            self._waiting[seq] = future
        try:
            self._writer.write(data)
            await self._writer.drain()
            if future is None:
                return None
            reply = await asyncio.wait_for(future, ANSWER_WITHIN_S)
            return list(reply.fields)
        finally:
            if seq is not None:
                self._waiting.pop(seq, None)

    def frame(self, fields: Sequence[str], *, retransmit: bool = False) -> bytes:
        if self.style == "pipe":
            fields = [PIPE.join(fields)]
        return encode_frame(self.source_id, self.seq, list(fields), retransmit=retransmit)

    def _values(self, reply: list[str] | None) -> list[str]:
        assert reply is not None
        if self.style == "fields":
            return reply
        self.pipe_frames.append(tuple(reply))
        assert len(reply) == 1, f"a pipe-style reply is one field: {reply}"
        return reply[0].split(PIPE)

    async def request(self, *fields: str) -> list[str]:
        self.seq = (self.seq + 1) % 100
        return self._values(await self.send_raw(self.frame(fields), self.seq))

    async def resend(self, *fields: str) -> list[str]:
        return self._values(await self.send_raw(self.frame(fields, retransmit=True), self.seq))

    async def send_damaged(self) -> list[str]:
        self.seq = (self.seq + 1) % 100
        good = self.frame(["PING"])
        damaged = good[:-5] + b"%04X" % ((int(good[-5:-1], 16) + 1) & 0xFFFF) + EOT.byte
        return self._values(await self.send_raw(damaged, self.seq))


def on_serial_line(wsid: int, device: Path, style: ReplyStyle = "fields") -> SimRegister:
    """Workstation `wsid` on the register's end (`device`) of a serial line, not yet connected."""

    def open_streams() -> Awaitable[Streams]:
        return serial_asyncio_fast.open_serial_connection(url=str(device), baudrate=115200)

    return SimRegister(wsid, open_streams, style)


class MqttRegister(_Pumped):
    """One workstation speaking JSON over MQTT 5: it publishes on its request topic (QoS 1) and
    reads its reply topic; replies are matched by correlation id."""

    def __init__(
        self, wsid: int, host: str, port: int, topics: Topics, **client_options: Any
    ) -> None:
        self.wsid = wsid
        self.client_options = client_options  # TLS, user name and password
        self.topics = topics
        self.host = host
        self.port = port
        self.bodies: list[dict[str, Any]] = []  # every reply, as JSON, in arrival order
        self._client: aiomqtt.Client | None = None
        self._pump: asyncio.Task[None] | None = None
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._last: dict[str, Any] | None = None

    async def connect(self) -> None:
        client = aiomqtt.Client(
            self.host,
            self.port,
            identifier=f"register-{self.wsid}-{uuid.uuid4().hex[:8]}",
            protocol=aiomqtt.ProtocolVersion.V5,
            **self.client_options,
        )
        await client.__aenter__()
        self._client = client
        await client.subscribe(self.topics.reply(self.wsid), qos=1)
        self._pump = asyncio.create_task(self._read(client))

    async def _disconnect(self) -> None:
        if self._client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await self._client.__aexit__(None, None, None)
            self._client = None

    async def _read(self, client: aiomqtt.Client) -> None:
        with contextlib.suppress(aiomqtt.MqttError):
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                body = json.loads(message.payload)
                self.bodies.append(body)
                key = json.dumps(body.get("correlation_id"))
                future = self._waiting.get(key)
                if future is not None and not future.done():
                    future.set_result(body)

    async def publish(
        self,
        payload: bytes,
        correlation_id: object,
        *,
        topic: str | None = None,
        properties: Properties | None = None,
        published: asyncio.Event | None = None,
    ) -> dict[str, Any]:
        """Publish raw bytes; wait for the reply whose correlation_id is `correlation_id`.
        `published` is set once the broker has acknowledged the request (QoS 1)."""
        assert self._client is not None
        key = json.dumps(correlation_id)
        future = asyncio.get_running_loop().create_future()
        self._waiting[key] = future
        try:
            await self._client.publish(
                topic or self.topics.request(self.wsid), payload, qos=1, properties=properties
            )
            if published is not None:
                published.set()
            return await asyncio.wait_for(future, ANSWER_WITHIN_S)
        finally:
            self._waiting.pop(key, None)

    async def send(self, body: dict[str, Any], **options: Any) -> dict[str, Any]:
        """Publish a JSON body as it is; the JSON reply."""
        return await self.publish(json.dumps(body).encode(), body.get("correlation_id"), **options)

    async def request(self, *fields: str) -> list[str]:
        self._last = request_body(fields, uuid.uuid4().hex)
        return fields_of_reply(await self.send(self._last))

    async def resend(self, *fields: str) -> list[str]:
        assert self._last is not None and request_body(fields, "")["command"] == fields[0]
        return fields_of_reply(await self.send(self._last))

    async def send_damaged(self) -> list[str]:
        # JSON cut short: nothing in it can be read, so the reply's correlation_id is null.
        return fields_of_reply(await self.publish(b'{"command": "PING", "correlation_', None))


def new_properties(**values: Any) -> Properties:
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    for name, value in values.items():
        setattr(properties, name, value)
    return properties
