"""What only a serial line has: ACK/NAK, several ports, a port that disappears and comes back.

Real pseudo-terminal pairs made by socat stand in for the cables; the gateway side is the real
`SerialAdapter` in front of the real service. What every transport shares is in tests/conformance.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conformance.harness import SerialBench as Bench
from conformance.harness import opened
from conformance.infra import GatewayLog
from conformance.registers import SimRegister
from waiting import until

from gateway.service import Gateway
from pos_adapters.sim.codec import ACK, NAK, encode_frame
from pos_adapters.sim.serial import LineSettings, SerialAdapter, SerialLine

CARD = "6001000000000001"


@pytest.fixture
async def bench(service: Gateway, tmp_path: Path) -> AsyncIterator[Bench]:
    """Lines that reopen quickly after a port comes back."""
    made = Bench(service, tmp_path / "serial", reopen_first_s=0.01, reopen_max_s=0.05)
    yield made
    await made.close()


async def open_line(bench: Bench, **options: float) -> tuple[SerialLine, SimRegister]:
    pair = await bench.pair("line")
    adapter = await bench.adapter(pair, **options)
    line = adapter.lines[0]
    await until(lambda: line.state == "open")
    return line, await bench.register(pair)


def frame(*fields: str, seq: int = 1) -> bytes:
    return encode_frame(b"   7LOYAL", seq, list(fields))


def with_bad_checksum(data: bytes) -> bytes:
    return data[:-5] + b"%04X" % ((int(data[-5:-1], 16) + 1) & 0xFFFF) + b"\x04"


def with_raw_field(head: list[str], raw: bytes, seq: int = 1) -> bytes:
    """A frame whose last field holds raw bytes the encoder would refuse (a correct checksum)."""
    good = frame(*head, "X", seq=seq)
    body = good[1 : good.rindex(b"X")] + raw + b"\x03"
    return b"\x01" + body + b"%04X" % (sum(body) & 0xFFFF) + b"\x04"


# ---- ACK and NAK ------------------------------------------------------------------------------


async def test_a_good_frame_gets_ack_before_its_reply(bench: Bench) -> None:
    line, register = await open_line(bench)
    reply = await register.request("IDENT", "7", "1", "0", CARD)
    assert reply[:2] == ["IDENT_OK", "M1"]
    assert register.received[:2] == bytes([ACK, 0x01])  # ACK, then the reply frame's SOH
    assert register.controls == [ACK]
    assert (line.stats.acks, line.stats.naks) == (1, 0)


async def test_a_request_that_does_not_validate_is_acked_and_answered_error(bench: Bench) -> None:
    # The frame arrived intact (ACK); its content is refused by the application (ERROR).
    _, register = await open_line(bench)
    reply = await register.request("IDENT", "0", "1", "0", CARD)
    assert reply[:2] == ["ERROR", "BAD_FIELD"]
    assert register.controls == [ACK]


@pytest.mark.parametrize(
    ("damaged", "reason"),
    [
        (with_bad_checksum(frame("PING")), "BAD_CHECKSUM"),
        (with_raw_field(["IDENT", "7", "1", "0"], b"A\x07B"), "BAD_FIELD"),
        (b"\x01   7LOYAL\x02\x1c01?PING\x03" + b"0000\x04", "BAD_FRAME"),  # flag neither ' ' nor R
    ],
    ids=["bad checksum", "control byte in a field", "bad flag"],
)
async def test_a_damaged_frame_gets_nak_then_an_error_reply(
    bench: Bench, service: Gateway, damaged: bytes, reason: str
) -> None:
    line, register = await open_line(bench)
    reply = await register.send_raw(damaged, seq=1)
    assert reply is not None and reply[:2] == ["ERROR", reason]
    assert register.received[:2] == bytes([NAK, 0x01])
    assert register.controls == [NAK]
    assert line.stats.frame_errors[reason] == 1
    assert service.stats.requests.total() == 0


async def test_a_frame_that_cannot_be_addressed_gets_a_nak_alone(
    bench: Bench, service: Gateway
) -> None:
    line, register = await open_line(bench)
    no_stx = b"\x01garbage\x03" + b"0000\x04"  # no source id or seq can be read: nobody to answer
    reply = await register.send_raw(no_stx + frame("PING", seq=2), seq=2)
    assert reply is not None and reply[0] == "PONG"
    assert register.controls == [NAK, ACK]
    assert register.unmatched == []  # the PONG is the only frame that came back
    assert line.stats.frame_errors["BAD_FRAME"] == 1
    assert bench.responder.stats.errors["BAD_FRAME"] == 1
    assert service.stats.requests.total() == 1


async def test_noise_between_frames_gets_nothing_and_is_counted(bench: Bench) -> None:
    line, register = await open_line(bench)
    noise = b"\xff\x00line noise\r\n"
    reply = await register.send_raw(noise + frame("PING"), seq=1)
    assert reply is not None and reply[0] == "PONG"
    assert register.controls == [ACK]
    assert line.stats.dropped_bytes == len(noise)


async def test_a_stalled_partial_frame_is_dropped_and_the_line_kept(bench: Bench) -> None:
    line, register = await open_line(bench, read_timeout_s=0.2)
    data = frame("PING", seq=1)
    await register.send_raw(data[:6])  # then nothing, like a cable pulled mid-frame
    await until(lambda: line.stats.partial_timeouts == 1)
    reply = await register.send_raw(data[6:] + frame("PING", seq=2), seq=2)  # the tail is noise
    assert reply is not None and reply[0] == "PONG"
    assert register.controls == [ACK]
    assert line.stats.dropped_bytes == len(data)


# ---- several ports, ports that go and come back -----------------------------------------------


async def test_several_ports_are_served_at_once_and_a_lost_one_harms_no_other(
    bench: Bench,
) -> None:
    first, second = await bench.pair("first"), await bench.pair("second")
    adapter = await bench.adapter(first, second)
    await opened(adapter)
    one, two = await bench.register(first, wsid=1), await bench.register(second, wsid=2)
    assert (await one.request("PING"))[0] == (await two.request("PING"))[0] == "PONG"

    await first.stop()  # the first line's USB adapter is pulled
    lost = adapter.line(str(first.gateway_end))
    await until(lambda: lost.state == "reopening")

    assert (await two.request("IDENT", "2", "1", "0", CARD))[0] == "IDENT_OK"
    assert adapter.states()[str(second.gateway_end)]["state"] == "open"
    assert adapter.states()[str(first.gateway_end)]["state"] == "reopening"

    await first.start()
    await until(lambda: lost.state == "open")
    await one.reconnect()
    assert (await one.request("IDENT", "1", "1", "0", CARD))[0] == "IDENT_OK"


async def test_a_lost_port_is_reopened_and_logged_once_for_the_loss_and_once_for_recovery(
    bench: Bench,
) -> None:
    with GatewayLog() as gateway_log:
        line, register = await open_line(bench)
        (pair,) = bench.pairs
        await pair.stop()
        # Several reopening attempts fail while the port is away; none of them is logged.
        await until(lambda: line.stats.failed_opens >= 3)
        await pair.start()
        await until(lambda: line.state == "open")
        await register.reconnect()
        assert (await register.request("PING"))[0] == "PONG"

    assert len(gateway_log.events("serial_port_open")) == 1
    (lost,) = gateway_log.events("serial_port_lost")
    (recovered,) = gateway_log.events("serial_port_recovered")
    assert lost["level"] == "warning" and lost["device"] == str(pair.gateway_end)
    assert recovered["failures"] >= 4 and recovered["outage_s"] > 0
    assert gateway_log.events("serial_port_unavailable") == []
    assert (line.stats.opens, line.stats.outages) == (2, 1)


async def test_a_port_missing_at_start_is_opened_when_it_appears(bench: Bench) -> None:
    with GatewayLog() as gateway_log:
        pair = await bench.pair("late", start=False)
        adapter = await bench.adapter(pair)  # starts although the device is not there
        line = adapter.lines[0]
        await until(lambda: line.stats.failed_opens >= 3)
        assert line.state == "reopening"
        await pair.start()
        await until(lambda: line.state == "open")
        register = await bench.register(pair)
        assert (await register.request("PING"))[0] == "PONG"

    (unavailable,) = gateway_log.events("serial_port_unavailable")
    assert unavailable["device"] == str(pair.gateway_end)
    (opened,) = gateway_log.events("serial_port_open")
    assert opened["failures"] >= 3


def open_files() -> set[str]:
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            found.add(os.readlink(f"/proc/self/fd/{fd}"))
    return found


async def test_stop_closes_the_port(bench: Bench) -> None:
    line, _ = await open_line(bench)
    (adapter,) = bench.adapters
    device = str(bench.pairs[0].gateway_end.readlink())  # socat's link to /dev/pts/N
    assert device in open_files()
    await adapter.stop()
    assert line.state == "stopped"
    assert device not in open_files()


async def test_a_port_held_by_another_gateway_is_waited_for_not_shared(bench: Bench) -> None:
    _, register = await open_line(bench)
    (pair,) = bench.pairs
    second = (await bench.adapter(pair)).lines[0]
    await until(lambda: second.stats.failed_opens >= 2)
    assert second.state == "reopening"
    assert second.stats.last_error is not None and "lock" in second.stats.last_error
    assert (await register.request("PING"))[0] == "PONG"  # answered once, by the first
    assert register.unmatched == []

    await bench.adapters[0].stop()
    await until(lambda: second.state == "open")


async def test_settings_the_device_refuses_leave_the_line_retrying_not_dead(bench: Bench) -> None:
    # A pty has no parity: the driver refuses it with termios.error, which is no OSError.
    with GatewayLog() as gateway_log:
        pair = await bench.pair("parity")
        adapter = SerialAdapter(
            bench.responder, [LineSettings(str(pair.gateway_end), parity="E")], reopen_first_s=0.01
        )
        bench.adapters.append(adapter)
        await adapter.start()
        line = adapter.lines[0]
        await until(lambda: line.stats.failed_opens >= 2)
        assert line.state == "reopening"
    (unavailable,) = gateway_log.events("serial_port_unavailable")
    assert "Invalid argument" in unavailable["error"]
