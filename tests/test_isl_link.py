"""islrun's SIM link on a real socket: the bytes a TxMsg puts on the wire, a late reply that
must not answer the next request, a gateway that went away and came back, one that refuses."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from isl_plugin.islrun import IslRuntimeError, SimLink, Station, StationOptions, parse_script
from pos_adapters.sim.codec import Frame, FrameDecoder, encode_frame

SCRIPT = parse_script(
    """
    Event Inq : 1
        TxMsg "IDENT", @WSID, @RVC, @CKNUM, "6001000000000001"
        WaitForRxMsg
    EndEvent
    Event RxMsg : IDENT_OK
        var member : A10
        RxMsg member
        InfoMessage "ok", member
    EndEvent
    Event RxMsg : _TIMEOUT
        InfoMessage "offline"
    EndEvent
    """,
    "link.isl",
)

Answer = Callable[[Frame], list[bytes]]


@dataclass
class FakeGateway:
    """A TCP server that hands every frame to `answer` and writes what it returns."""

    answer: Answer
    received: bytearray = field(default_factory=bytearray)
    connections: int = 0
    close_after_reply: bool = False
    server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        decoder = FrameDecoder()
        try:
            while data := await reader.read(65536):
                self.received += data
                for frame in decoder.feed(data):
                    assert isinstance(frame, Frame)
                    for reply in self.answer(frame):
                        writer.write(reply)
                    await writer.drain()
                    if self.close_after_reply:
                        return
        finally:
            writer.close()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])


def ident_ok(frame: Frame, member: str = "M1") -> bytes:
    return encode_frame(frame.source_id, frame.seq, ["IDENT_OK", member])


StartFake = Callable[..., Awaitable[FakeGateway]]


@pytest.fixture
async def start_fake() -> AsyncIterator[StartFake]:
    fakes: list[FakeGateway] = []

    async def start(answer: Answer, *, close_after_reply: bool = False) -> FakeGateway:
        fake = FakeGateway(answer, close_after_reply=close_after_reply)
        fake.server = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
        fakes.append(fake)
        return fake

    yield start
    for fake in fakes:
        assert fake.server is not None
        fake.server.close()
        await fake.server.wait_closed()


def station(port: int, timeout_s: float = 2.0) -> tuple[Station, SimLink]:
    link = SimLink("127.0.0.1", port, source_id=b"   7LOYAL")
    register = Station(SCRIPT, link, options=StationOptions(timeout_s=timeout_s))
    register.open_check(42)
    return register, link


async def test_txmsg_puts_one_frame_on_the_wire_with_one_field_per_argument(
    start_fake: StartFake,
) -> None:
    fake = await start_fake(lambda frame: [ident_ok(frame)])
    register, link = station(fake.port)
    try:
        run = await register.press(1)
    finally:
        await link.close()
    sent = encode_frame(b"   7LOYAL", 1, ["IDENT", "7", "1", "42", "6001000000000001"])
    assert bytes(fake.received) == sent
    assert run.messages == ["ok / M1"]


async def test_a_late_reply_is_not_taken_for_the_answer_to_the_next_request(
    start_fake: StartFake,
) -> None:
    held: list[Frame] = []

    def answer(frame: Frame) -> list[bytes]:
        if frame.seq == 1:
            held.append(frame)  # answered only when the next request comes
            return []
        return [ident_ok(held[0], "STALE"), ident_ok(frame, "FRESH")]

    fake = await start_fake(answer)
    register, link = station(fake.port, timeout_s=0.2)
    try:
        first = await register.press(1)
        second = await register.press(1)
    finally:
        await link.close()
    assert first.handlers == ["_TIMEOUT"] and first.messages == ["offline"]
    assert second.messages == ["ok / FRESH"]
    assert ("late", "01 IDENT_OK | STALE") in register.trace


async def test_the_link_reconnects_when_the_gateway_closed_the_connection(
    start_fake: StartFake,
) -> None:
    fake = await start_fake(lambda frame: [ident_ok(frame)], close_after_reply=True)
    register, link = station(fake.port)
    try:
        first = await register.press(1)
        second = await register.press(1)
    finally:
        await link.close()
    assert first.messages == second.messages == ["ok / M1"]
    assert fake.connections == 2


async def test_a_refused_connection_reaches_the_script_at_once_as_a_timeout() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    register, link = station(port, timeout_s=60)
    try:
        run = await asyncio.wait_for(register.press(1), 10)  # not the 60 s timeout
    finally:
        await link.close()
    assert run.handlers == ["_TIMEOUT"] and run.replies == [None]
    kinds = [kind for kind, _ in register.trace]
    assert "down" in kinds and "unsent" in kinds


async def test_a_field_no_frame_can_carry_is_an_error_with_the_line() -> None:
    script = parse_script(
        'Event Inq : 1\n  var s : A9\n  Input s, "?"\n  TxMsg "IDENT", s\nEndEvent', "c.isl"
    )
    link = SimLink("127.0.0.1", 9, source_id=b"   7LOYAL")  # never reached
    register = Station(script, link)
    with pytest.raises(IslRuntimeError) as error:
        await register.press(1, ["A\x1dB"])  # a GS1 separator from a QR code
    assert error.value.line == 4 and "field 2 contains a control character" in error.value.message
