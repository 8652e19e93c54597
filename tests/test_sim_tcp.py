"""The SIM socket end to end: real TCP on 127.0.0.1, the real service and a store on disk.

What every transport must do (each command, refusals, resends) is in tests/conformance; here
only what is TCP's own: connections, the allow-list, framing on a stream, timeouts."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress

import pytest
from conftest import RunningGateway
from sales import CARD, DATE, one_sale_each
from sim_wire import raw_exchange, read_frames
from waiting import until

from pos_adapters.sim.codec import encode_frame
from pos_adapters.sim.register import RegisterConnection
from pos_adapters.sim.session import SimResponder
from pos_adapters.sim.tcp import SimTcpServer, peer_allowed


def frame(*fields: str, sid: bytes = b"  7LOYAL", seq: int = 1) -> bytes:
    return encode_frame(sid, seq, list(fields))


# ---- many workstations, many connections ----------------------------------------------------


async def test_workstations_interleaved_on_one_connection_get_their_own_replies(
    gateway: RunningGateway,
) -> None:
    connection = await gateway.connect()
    try:
        await one_sale_each({wsid: connection.workstation(wsid) for wsid in range(1, 31)})
        assert connection.unmatched == []
    finally:
        await connection.close()


async def test_twenty_connections_at_once(gateway: RunningGateway) -> None:
    connections = [await gateway.connect() for _ in range(20)]
    try:
        replies = await asyncio.gather(
            *(
                c.workstation(n + 1).request("IDENT", str(n + 1), "1", "0", CARD)
                for n, c in enumerate(connections)
            )
        )
        assert all(r[0] == "IDENT_OK" for r in replies)
        assert gateway.server.stats.open_connections == 20
    finally:
        for c in connections:
            await c.close()


# ---- retransmission --------------------------------------------------------------------------


async def test_retransmission_replay_survives_a_reconnect(gateway: RunningGateway) -> None:
    sid = b" 12LOYAL"
    first = await raw_exchange(gateway.port, frame("IDENT", "12", "1", "0", CARD, sid=sid, seq=5))
    replay = encode_frame(sid, 5, ["IDENT", "12", "1", "0", CARD], retransmit=True)
    second = await raw_exchange(gateway.port, replay)
    assert second[0].fields == first[0].fields and second[0].seq == 5
    assert gateway.responder.stats.replayed == 1


async def test_r_flag_with_another_seq_or_nothing_cached_runs_as_new(
    gateway: RunningGateway,
) -> None:
    sid = b" 13LOYAL"
    await raw_exchange(gateway.port, frame("PING", sid=sid, seq=1))
    other_seq = encode_frame(sid, 2, ["PING"], retransmit=True)
    assert (await raw_exchange(gateway.port, other_seq))[0].fields[0] == "PONG"
    fresh = encode_frame(b" 14LOYAL", 7, ["PING"], retransmit=True)
    assert (await raw_exchange(gateway.port, fresh))[0].fields[0] == "PONG"
    # A repeated seq without R is a new request too.
    assert (await raw_exchange(gateway.port, frame("PING", sid=sid, seq=2)))[0].seq == 2
    assert gateway.responder.stats.replayed == 0
    assert gateway.service.stats.requests[("PING", "ok")] == 4


# ---- the allow-list --------------------------------------------------------------------------


async def test_peer_outside_the_allowed_networks_is_closed_and_counted(
    gateway: RunningGateway,
) -> None:
    closed = SimTcpServer(
        SimResponder(gateway.service),
        port=0,
        allow=[ipaddress.ip_network("10.20.0.0/16")],
    )
    await closed.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", closed.port)
        writer.write(frame("PING"))
        # Closed at once, nothing answered (a reset when our PING was still unread).
        with contextlib.suppress(ConnectionResetError):
            assert await asyncio.wait_for(reader.read(100), 5) == b""
        writer.close()
        assert closed.stats.refused["not_allowed"] == 1
        assert gateway.service.stats.requests[("PING", "ok")] == 0
    finally:
        await closed.stop()


@pytest.mark.parametrize(
    ("peer", "allowed"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),  # IPv4-mapped, as a dual-stack socket reports it
        ("10.0.0.5", False),
        ("fe80::1%eth0", False),
        ("not-an-address", False),
    ],
)
def test_peer_allowed(peer: str, allowed: bool) -> None:
    networks = [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")]
    assert peer_allowed(peer, networks) is allowed


# ---- bad input: each gets its documented reply, is counted, and harms nothing else ------------


def _with_bad_checksum(data: bytes) -> bytes:
    body, tail = data[:-5], data[-5:]
    wrong = b"%04X" % ((int(tail[:4], 16) + 1) & 0xFFFF)
    return body + wrong + b"\x04"


def _with_byte(fields: list[str], raw: bytes) -> bytes:
    """A frame whose last field carries raw bytes the encoder would refuse."""
    good = frame(*fields, "X")
    head = good[: good.rindex(b"X")]
    body = head[1:] + raw + b"\x03"
    return b"\x01" + body + b"%04X" % (sum(body) & 0xFFFF) + b"\x04"


BAD_INPUT: list[tuple[str, bytes, list[str]]] = [
    ("bad checksum", _with_bad_checksum(frame("PING")), ["ERROR", "BAD_CHECKSUM"]),
    ("unknown command", frame("FLY"), ["ERROR", "UNKNOWN_COMMAND"]),
    ("missing field", frame("IDENT", "7", "1", "0"), ["ERROR", "BAD_FIELD"]),
    ("extra field", frame("PING", "x"), ["ERROR", "BAD_FIELD"]),
    (
        "amount 12.5.0",
        frame("COUPON", "7", "1", "", "TENOFF", "12.5.0"),
        ["ERROR", "BAD_FIELD"],
    ),
    ("amount 1e9", frame("COUPON", "7", "1", "", "TENOFF", "1e9"), ["ERROR", "BAD_FIELD"]),
    (
        "business date 20261341",
        frame("POST", "7", "1", "5", "20261341", "", "1.00", "1.00", "", ""),
        ["ERROR", "BAD_FIELD"],
    ),
    (
        "business date after tomorrow",
        frame("POST", "7", "1", "5", "20261126", "", "1.00", "1.00", "", ""),
        ["ERROR", "BAD_FIELD"],
    ),
    (
        "items that do not parse",
        frame("POST", "7", "1", "5", DATE, "", "1.00", "1.00", "1*x*1.00", ""),
        ["ERROR", "BAD_FIELD"],
    ),
    ("wsid 0", frame("IDENT", "0", "1", "0", CARD), ["ERROR", "BAD_FIELD"]),
    ("code page error", _with_byte(["IDENT", "7", "1", "0"], b"\x81"), ["ERROR", "BAD_FIELD"]),
    ("control byte", _with_byte(["IDENT", "7", "1", "0"], b"A\x07B"), ["ERROR", "BAD_FIELD"]),
]


@pytest.mark.parametrize(
    ("data", "expected"), [b[1:] for b in BAD_INPUT], ids=[b[0] for b in BAD_INPUT]
)
async def test_bad_input_gets_its_reply_and_the_connection_goes_on(
    gateway: RunningGateway, data: bytes, expected: list[str]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        writer.write(data + frame("PING", seq=2))
        error, pong = await read_frames(reader, 2)
        assert error.fields[:2] == tuple(expected)
        assert error.source_id == b"  7LOYAL" and error.seq == 1
        assert len(error.fields) == 3 and error.fields[2]  # a message for the log
        assert pong.fields[0] == "PONG"  # same connection, still served
        counted = gateway.responder.stats.errors[expected[1]]
        assert counted == 1
        assert gateway.service.stats.requests.total() == 1  # only the PING ran
    finally:
        writer.close()


async def test_bad_field_names_the_field(gateway: RunningGateway) -> None:
    (reply,) = await raw_exchange(
        gateway.port, frame("POST", "7", "1", "5", "20261341", "", "1.00", "1.00", "", "")
    )
    assert "business_date" in reply.fields[2]


async def test_truncated_frame_and_bytes_between_frames_are_dropped_and_counted(
    gateway: RunningGateway,
) -> None:
    truncated = frame("IDENT", "7", "1", "0", CARD)[:-9]
    noise = b"\xff\x00garbage\r\n"
    replies = await raw_exchange(
        gateway.port, truncated + frame("PING", seq=3) + noise + frame("PING", seq=4), replies=2
    )
    assert [r.seq for r in replies] == [3, 4]
    assert gateway.server.stats.dropped_bytes == len(truncated) + len(noise)
    assert gateway.service.stats.requests.total() == 2


async def test_frame_over_the_size_limit_is_refused_and_the_stream_resynchronises(
    gateway: RunningGateway,
) -> None:
    huge = frame("IDENT", "7", "1", "0", "Q" * 40_000, seq=8)
    replies = await raw_exchange(gateway.port, huge + frame("PING", seq=9), replies=2)
    assert replies[0].fields[:2] == ("ERROR", "FRAME_TOO_LARGE") and replies[0].seq == 8
    assert replies[1].fields[0] == "PONG"
    assert gateway.server.stats.frame_errors["FRAME_TOO_LARGE"] == 1


async def test_silent_client_holds_nothing_up(gateway: RunningGateway) -> None:
    silent_reader, silent_writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        (pong,) = await raw_exchange(gateway.port, frame("PING"))
        assert pong.fields[0] == "PONG"
        # Connections stay open for days: the silent one is kept, and counted.
        await until(lambda: gateway.server.stats.open_connections == 1)
        assert not silent_reader.at_eof()
    finally:
        silent_writer.close()


async def test_stalled_partial_frame_is_dropped_and_the_connection_kept(
    gateway: RunningGateway,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        data = frame("PING", seq=1)
        writer.write(data[:6])  # then nothing, like a register sending one byte a second
        await until(lambda: gateway.server.stats.partial_timeouts == 1)
        writer.write(data[6:])  # the rest arrives far too late: it is noise now
        writer.write(frame("PING", seq=2))
        (pong,) = await read_frames(reader, 1)
        assert pong.seq == 2
        assert gateway.server.stats.dropped_bytes >= len(data)
    finally:
        writer.close()


async def test_slow_but_timely_sender_is_answered(gateway: RunningGateway) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        for byte in frame("PING"):
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.005)  # pacing the input, well inside the 0.5 s read timeout
        (pong,) = await read_frames(reader, 1)
        assert pong.fields[0] == "PONG"
        assert gateway.server.stats.partial_timeouts == 0
    finally:
        writer.close()


async def test_a_dropped_connection_mid_request_harms_no_one(gateway: RunningGateway) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(frame("POST", "7", "1", "77", DATE, "M1", "5.00", "5.00", "", ""))
    writer.transport.abort()  # reset, without waiting for the answer
    other = await RegisterConnection.open("127.0.0.1", gateway.port)
    try:
        assert (await other.workstation(8).request("PING"))[0] == "PONG"
        await until(lambda: gateway.server.stats.open_connections == 1)
    finally:
        await other.close()

    async def posted() -> bool:
        return (await gateway.store.counts()).posted_checks == 1

    # The whole frame arrived before the reset: the check is stored once and earns once, though
    # its answer had no one to go to.
    await until(posted, what="the aborted POST stored")
    assert await gateway.store.ledger_total("M1") == (5, 0, 0)
    assert gateway.service.stats.requests[("POST", "ok")] == 1
