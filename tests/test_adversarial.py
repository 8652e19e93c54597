"""A hostile register, bounded to seconds: the real daemon takes a few seconds of mutated frames
over several connections, then must still answer correctly, stay small and log no traceback.

The fuzz is seeded, so a failure replays: the same bytes go out in the same order on each
connection (only the interleaving between connections follows the scheduler)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import SAMPLE
from gateway_process import GatewayProcess, cli

from pos_adapters.sim.codec import Frame, FrameDecoder, checksum, encode_frame

SEED = 20261123
FUZZ_S = 3.0
CONNECTIONS = 8
CARD = "6001000000000001"  # M1, Ann K., GOLD, points
# What the fuzz may add to the daemon's resident memory. What the daemon may keep from it: the
# retransmission cache (at most 10,000 source ids of a lock, a digest and a reply of a few hundred
# bytes: about 6 MiB full), the answers under way (at most 64 per connection, a few KiB each),
# SQLite's page caches (2 MiB per connection) and the allocator's slack. Each is capped whatever
# the input, and this run adds about 5 MiB on a 2-core Linux box; a daemon that queued work for
# every frame a fast peer sends (as this one did before the per-connection cap) adds 20+ MiB.
RSS_GROWTH_BOUND_KIB = 16 * 1024


def today() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%d")  # the test daemon's time zone is UTC


def corpus() -> list[tuple[bytes, list[str]]]:
    """Valid requests of every command, the seeds of the mutations."""
    date = today()
    return [
        (b"  7LOYAL", ["PING"]),
        (b"  7LOYAL", ["IDENT", "7", "1", "0", CARD]),
        (b"  8LOYAL", ["IDENT", "8", "1", "1001", "QR-7f3a"]),
        (b"  8LOYAL", ["COUPON", "8", "1001", "M1", "WELCOME5", "27.40"]),
        (b"  9LOYAL", ["COUPON", "9", "0", "", "TENOFF", "12.00"]),
        (b"  9LOYAL", ["COUPON_VOID", "9", "1001", "CNOSUCHREF"]),
        (b" 10LOYAL", ["CONSENT", "10", "M5", "LOTTERY", "N"]),
        (
            b" 11LOYAL",
            ["POST", "11", "1", "1001", date, "M1", "27.40", "22.40", "2*1001*7.00", ""],
        ),
        (b" 12LOYAL", ["POST", "12", "1", "55", date, "", "1.00", "1.00", "", ""]),
    ]


def raw_frame(source_id: bytes, seq: int, flag: bytes, data: bytes) -> bytes:
    """A frame with a correct checksum around any bytes, so the fuzz reaches the parser."""
    body = b"%b\x02\x1c%02d%b%b\x03" % (source_id, seq % 100, flag, data)
    return b"\x01" + body + checksum(body) + b"\x04"


NASTY_FIELDS = [
    "",
    "-",
    "0",
    "-1.00",
    "1e9",
    "99999999999999999999",
    "12.5.0",
    "\u20ac\u00e9\u00fc",
    "20261341",
    "1*x*1.00;;;",
    "A" * 300,
    "9" * 40,
    "M1;M2;M3",
    " ",
]


class Fuzzer:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.seeds = corpus()

    def frame(self) -> bytes:
        rng = self.rng
        source_id, fields = rng.choice(self.seeds)
        seq = rng.randrange(100)
        retransmit = rng.random() < 0.2
        valid = encode_frame(source_id, seq, fields, retransmit=retransmit)
        kind = rng.randrange(12)
        if kind == 0:
            return valid
        if kind == 1:  # bit flips anywhere
            flipped = bytearray(valid)
            for _ in range(rng.randint(1, 8)):
                flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
            return bytes(flipped)
        if kind == 2:  # cut short
            return valid[: rng.randrange(1, len(valid))]
        if kind == 3:  # a framing byte in the middle
            at = rng.randrange(1, len(valid))
            return valid[:at] + bytes([rng.choice(b"\x01\x02\x03\x04\x1c")]) + valid[at:]
        if kind == 4:  # over the size limit, with a readable header
            return encode_frame(source_id, seq, ["IDENT", "7", "1", "0", "Q" * 40_000])
        if kind == 5:  # noise
            return rng.randbytes(rng.randint(1, 2048))
        if kind == 6:  # a field swapped for a nasty one, checksum right
            mutated = list(fields)
            mutated[rng.randrange(len(mutated))] = rng.choice(NASTY_FIELDS)
            data = "\x1c".join(mutated).encode("cp1252", errors="replace")
            return raw_frame(source_id, seq, b"R" if retransmit else b" ", data)
        if kind == 7:  # fields added or taken away, checksum right
            extra = rng.randint(-1, 3)
            mutated = list(fields)[:extra] if extra < 0 else list(fields) + ["9"] * extra
            data = "\x1c".join(mutated or ["PING"]).encode("cp1252", errors="replace")
            return raw_frame(source_id, seq, b" ", data)
        if kind == 8:  # control and code-page bytes inside fields, checksum right
            spiked = bytearray("\x1c".join(fields).encode("cp1252"))
            for _ in range(rng.randint(1, 4)):
                at = rng.randrange(len(spiked) + 1)
                spiked.insert(at, rng.choice(b"\x00\x05\x07\x7f\x81\x9d"))
            return raw_frame(source_id, seq, b" ", bytes(spiked))
        if kind == 9:  # a strange source id (up to 64 bytes, any non-control byte)
            sid = bytes(rng.choice(range(0x20, 0x100)) for _ in range(rng.randint(1, 64)))
            return raw_frame(sid.replace(b"\x7f", b"~"), seq, b" ", b"PING")
        if kind == 10:  # a checksum in lower case, or one that is not hex at all
            tail = rng.choice([valid[-5:-1].lower(), b"ZZZZ", b"12", b""])
            return valid[:-5] + tail + b"\x04"
        return valid + valid[: rng.randrange(len(valid))]  # a frame and the start of the next


@dataclass
class Tally:
    sent: int = 0
    replies: int = 0
    garbled: int = 0  # bytes from the gateway that are not well-formed frames


async def hammer(port: int, seed: int, until: float) -> Tally:
    """One connection's share of the fuzz; reconnects now and then, as a flaky register does."""
    rng = random.Random(seed)
    fuzzer = Fuzzer(rng)
    tally = Tally()
    loop = asyncio.get_running_loop()

    async def read(reader: asyncio.StreamReader) -> None:
        decoder = FrameDecoder()
        while data := await reader.read(65536):
            for item in decoder.feed(data):
                if isinstance(item, Frame):
                    tally.replies += 1
                else:
                    tally.garbled += 1
        tally.garbled += decoder.stats.dropped_bytes

    while loop.time() < until:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        replies = asyncio.create_task(read(reader))
        try:
            while loop.time() < until and rng.random() > 0.02:
                burst = b"".join(fuzzer.frame() for _ in range(rng.randint(1, 16)))
                tally.sent += len(burst)
                at = 0
                while at < len(burst):  # in pieces of any size, as TCP may cut them
                    size = rng.randint(1, 4096)
                    writer.write(burst[at : at + size])
                    at += size
                await writer.drain()
                await asyncio.sleep(0)  # the replies are read meanwhile
        except ConnectionError:
            pass  # the gateway may close a connection that misbehaves: that is its right
        finally:
            if rng.random() < 0.5:
                writer.transport.abort()  # a reset, answers under way or not
            else:
                writer.close()
            with contextlib.suppress(ConnectionError):
                await replies
    return tally


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[GatewayProcess]:
    data_dir = tmp_path / "data"
    code, _, err = await cli(data_dir, "import", "members", str(SAMPLE / "members.jsonl"))
    assert code == 0, err
    code, _, err = await cli(data_dir, "import", "coupons", str(SAMPLE / "coupons.jsonl"))
    assert code == 0, err
    process = await GatewayProcess.start(data_dir)
    yield process
    await process.close()


@pytest.mark.skipif(sys.platform != "linux", reason="reads VmRSS from /proc")
async def test_the_daemon_survives_a_fuzzing_register_and_answers_correctly_after(
    gateway: GatewayProcess,
) -> None:
    pid = gateway.process.pid
    register = await gateway.connect()
    ws = register.workstation(4321)
    try:
        # Warm up every path once, so the baseline holds what a working daemon holds anyway.
        for source_id, fields in corpus():
            await register.exchange(encode_frame(source_id, 1, fields), (source_id, 1), 5)
        ident = await ws.request("IDENT", "4321", "1", "0", CARD)
        assert ident[:2] == ["IDENT_OK", "M1"]
    finally:
        await register.close()
    baseline = rss_kib(pid)

    until = asyncio.get_running_loop().time() + FUZZ_S
    tallies = await asyncio.gather(
        *(hammer(gateway.port, SEED + n, until) for n in range(CONNECTIONS))
    )

    assert gateway.process.returncode is None, "the daemon died"
    assert sum(t.sent for t in tallies) > 1_000_000  # the fuzz did run
    assert sum(t.replies for t in tallies) > 1000
    assert sum(t.garbled for t in tallies) == 0  # every byte it sent back was a good frame

    register = await gateway.connect()
    ws = register.workstation(4321)
    try:
        ident = await ws.request("IDENT", "4321", "1", "0", CARD, answer_within=5)
        assert ident[:4] == ["IDENT_OK", "M1", "Ann K.", "GOLD"] and ident[5] == "POINTS"
        balance = int(ident[4])
        post = await ws.request(
            "POST", "4321", "1", "87654321", today(), "M1", "12.00", "10.00", "1*1001*12.00", ""
        )
        assert post[:3] == ["POST_OK", "10", str(balance + 10)]
        again = await ws.request("IDENT", "4321", "1", "0", CARD)
        assert int(again[4]) == balance + 10
    finally:
        await register.close()

    growth = rss_kib(pid) - baseline
    assert growth <= RSS_GROWTH_BOUND_KIB, f"RSS grew {growth} KiB"
    assert [line for line in gateway.lines if is_trouble(line)] == []


def is_trouble(line: dict[str, Any]) -> bool:
    """A log line that shows a bug: a traceback, a failed request, an error, unparsable output."""
    return (
        "exception" in line
        or "Traceback" in str(line)
        or line.get("event") in ("request_failed", "sim_reply_failed", "unparsed")
        or line.get("level") in ("error", "critical")
    )
