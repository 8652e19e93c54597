"""IDENT round trips of ONE register over each transport (SIM over TCP, SIM on a serial line,
JSON over MQTT), each next to that transport's floor measured in the same run:

    TCP     an asyncio server answering each frame with the gateway's reply bytes
    serial  a pty echo: the same socat pair, a process answering ACK + the reply bytes
    MQTT    a broker echo through the same Mosquitto: a client answering on the reply topic

The gateway is `edge-gateway run` in its own process with all three transports on (the sample
members, SIM on 127.0.0.1 port 0, one serial line on a socat pty pair, MQTT to a Mosquitto the
benchmark starts on a free loopback port). Each floor is a child process using the same library
stack as the gateway (asyncio streams, pyserial-asyncio-fast, aiomqtt), so the ratio is the
gateway's own work. Requests go strictly one after the other, timed with perf_counter from just
before the send to the decoded reply; gateway and floor alternate in blocks, so a drift of the
machine weighs on both alike. Percentiles are nearest-rank.

    python -m bench.transport_latency                   # 2,000 IDENTs per transport
    python -m bench.transport_latency --requests 500 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import json
import os
import platform
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/transport_latency.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiomqtt
import serial  # type: ignore[import-untyped]
import serial_asyncio_fast

from bench import _common as common
from bench import _helpers as helpers
from pos_adapters.mqtt import Topics
from pos_adapters.sim.codec import ACK, EOT, Frame, FrameDecoder, encode_frame
from tests.conformance import infra

HOST, STORE_ID = common.HOST, common.STORE_ID
V5 = aiomqtt.ProtocolVersion.V5
NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]  # as the gateway's own MQTT client
SOURCE_ID = b"   1LOYAL"
WSID = 1
CARDS = [f"600100000000000{n}" for n in range(1, 6)]  # the sample members M1..M5
MOSQUITTO, SOCAT = infra.MOSQUITTO, infra.SOCAT
SCRIPT = str(Path(__file__).resolve())
SAMPLE = common.REPO / "gateway" / "sample"
START_WITHIN_S = 30.0
BAUD = 115200  # a pty ignores it; a real line at 9600 baud (8N1) adds ~1 ms per byte


def figures(latencies: Sequence[float]) -> dict[str, float]:
    """n, p50, p99 and max (nearest-rank) of latencies given in seconds, in milliseconds."""
    summary = common.summary_ms(latencies)
    return {
        "n": summary["count"],
        "p50_ms": summary["p50"],
        "p99_ms": summary["p99"],
        "max_ms": summary["max"],
    }


# ---- helper processes ---------------------------------------------------------------------------


class Child(infra.Child):
    """The tests' helper process (tests/conformance/infra.py), bound to the benchmark: it gets
    SIGTERM when we die, even of kill -9."""

    def __init__(self, name: str) -> None:
        super().__init__(name, start_within_s=START_WITHIN_S, stop_within_s=20.0)

    async def spawn(self, *argv: str, ready: str | Callable[[str], bool], **options: Any) -> str:
        return await super().spawn(
            *argv, ready=ready, preexec_fn=helpers.die_with_parent, **options
        )


async def pty_pair(directory: Path, name: str) -> tuple[Child, Path, Path]:
    """A socat pseudo-terminal pair: (process, the answering end, the register's end)."""
    child = Child(f"socat {name}")
    answering, register = directory / f"{name}-a", directory / f"{name}-b"
    await child.spawn(
        SOCAT, "-d", "-d", f"pty,rawer,link={answering}", f"pty,rawer,link={register}",
        ready="starting data transfer loop",
    )  # fmt: skip
    return child, answering, register


def json_event(name: str) -> Callable[[str], bool]:
    def matches(line: str) -> bool:
        try:
            return bool(json.loads(line).get("event") == name)
        except ValueError:
            return False

    return matches


# ---- the floors (each runs as `python bench/transport_latency.py --floor KIND ...`) -------------


async def tcp_floor(reply: bytes) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(reply * data.count(EOT))

    server = await asyncio.start_server(handle, HOST, 0)
    print(f"ready {server.sockets[0].getsockname()[1]}", flush=True)
    await asyncio.Event().wait()


async def serial_floor(device: str, reply: bytes) -> None:
    answer = bytes([ACK]) + reply

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.transport.write(answer * data.count(EOT))

    await serial_asyncio_fast.create_serial_connection(
        asyncio.get_running_loop(), Echo, device, baudrate=BAUD
    )
    print("ready", flush=True)
    await asyncio.Event().wait()


async def mqtt_floor(port: int, reply: bytes) -> None:
    topics = Topics("floor", STORE_ID)
    async with aiomqtt.Client(HOST, port, protocol=V5, socket_options=NODELAY) as client:
        await client.subscribe(topics.requests, qos=1)
        print("ready", flush=True)
        async for message in client.messages:
            wsid = topics.workstation_of(message.topic.value)
            await client.publish(topics.reply(wsid or "0"), reply, qos=1)


def run_floor(args: argparse.Namespace) -> int:
    helpers.die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    reply = bytes.fromhex(args.reply)
    if args.floor == "tcp":
        asyncio.run(tcp_floor(reply))
    elif args.floor == "serial":
        asyncio.run(serial_floor(args.device, reply))
    else:
        asyncio.run(mqtt_floor(args.port, reply))
    return 0


async def start_floor(kind: str, reply: bytes, **extra: str) -> tuple[Child, str]:
    child = Child(f"{kind} floor")
    argv = [sys.executable, SCRIPT, "--floor", kind, "--reply", reply.hex()]
    for key, value in extra.items():
        argv += [f"--{key}", value]
    line = await child.spawn(*argv, ready=lambda out: out.startswith("ready"), cwd=str(common.REPO))
    return child, line


# ---- the register side: one request at a time, timed ---------------------------------------------


def ident_frames(count: int) -> list[bytes]:
    return [
        encode_frame(SOURCE_ID, n % 100, ["IDENT", str(WSID), "1", "0", CARDS[n % len(CARDS)]])
        for n in range(count)
    ]


def round_trips(
    frames: list[bytes],
    send: Callable[[bytes], object],
    receive: Callable[[], bytes],
    who: str,
    replies: dict[str, int],
) -> list[float]:
    """Each frame sent when the previous reply has arrived, timed to its decoded reply."""
    decoder = FrameDecoder()  # on a serial line, an ACK between frames is dropped as noise
    clock = time.perf_counter
    out = []
    for frame in frames:
        started = clock()
        send(frame)
        reply = common.read_frame(receive, decoder, who)[0]
        out.append(clock() - started)
        key = reply.fields[0] if isinstance(reply, Frame) else f"codec {reply.reason}"
        replies[key] = replies.get(key, 0) + 1
    return out


def time_tcp(port: int, frames: list[bytes], replies: dict[str, int]) -> list[float]:
    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        receive = functools.partial(sock.recv, 65536)
        return round_trips(frames, sock.sendall, receive, f"TCP port {port}", replies)


def time_serial(line: serial.Serial, frames: list[bytes], replies: dict[str, int]) -> list[float]:
    def receive() -> bytes:
        return bytes(line.read(max(1, line.in_waiting)))  # nothing within the timeout: b""

    return round_trips(frames, line.write, receive, f"serial line {line.port}", replies)


class MqttTill:
    """One register over MQTT: publishes a JSON IDENT (QoS 1), waits for the next reply."""

    def __init__(self, client: aiomqtt.Client, topics: Topics) -> None:
        self.client = client
        self.topics = topics
        self.replies: asyncio.Queue[bytes] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.client.subscribe(self.topics.reply(WSID), qos=1)
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(aiomqtt.MqttError):  # the client disconnects at the end
            async for message in self.client.messages:
                if message.topic.value == self.topics.reply(WSID):
                    assert isinstance(message.payload, bytes)
                    self.replies.put_nowait(message.payload)

    async def time(self, bodies: list[bytes], replies: dict[str, int]) -> list[float]:
        clock = time.perf_counter
        topic = self.topics.request(WSID)
        out = []
        for body in bodies:
            started = clock()
            await self.client.publish(topic, body, qos=1)
            payload = await asyncio.wait_for(self.replies.get(), 10)
            out.append(clock() - started)
            key = str(json.loads(payload).get("reply"))
            replies[key] = replies.get(key, 0) + 1
        return out


def mqtt_bodies(count: int, first: int) -> list[bytes]:
    return [
        json.dumps(
            {"command": "IDENT", "wsid": WSID, "rvc": 1, "check": 0,
             "token": CARDS[n % len(CARDS)], "correlation_id": f"b{first + n}"}
        ).encode()
        for n in range(count)
    ]  # fmt: skip


# ---- the run -----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def stack(directory: Path, broker_nodelay: bool) -> AsyncIterator[dict[str, Any]]:
    """Mosquitto, the pty pairs and the gateway, ready; everything stopped on the way out."""
    children: list[Child] = []
    try:
        broker = Child("mosquitto")
        children.append(broker)
        port = infra.free_port()
        config = directory / "mosquitto.conf"
        root = "user root\n" if os.geteuid() == 0 else ""
        config.write_text(
            f"listener {port} {common.HOST}\nallow_anonymous true\npersistence false\n"
            # As docs/protocol.md advises for a store's broker: no Nagle towards the registers.
            f"set_tcp_nodelay {str(broker_nodelay).lower()}\n"
            f"log_dest stderr\nlog_type error\nlog_type warning\nlog_type information\n{root}"
        )
        await broker.spawn(MOSQUITTO, "-c", str(config), ready=" running")
        gateway_pair, gateway_line, gateway_register = await pty_pair(directory, "gateway")
        floor_pair, floor_line, floor_register = await pty_pair(directory, "floor")
        children += [gateway_pair, floor_pair]

        data_dir = directory / "data"
        await seed(data_dir)
        (directory / "empty.toml").write_text("")
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("EDGE_GATEWAY_")}
        env.update(
            EDGE_GATEWAY_CONFIG=str(directory / "empty.toml"),
            EDGE_GATEWAY_STORE_ID=STORE_ID,
            EDGE_GATEWAY_DATA_DIR=str(data_dir),
            EDGE_GATEWAY_TIMEZONE="UTC",
            EDGE_GATEWAY_SIM__PORT="0",
            EDGE_GATEWAY_ADMIN__PORT="0",
            EDGE_GATEWAY_LOG__FORMAT="json",
            EDGE_GATEWAY_SERIAL__PORTS=json.dumps(
                [{"device": str(gateway_line), "baudrate": BAUD}]
            ),
            EDGE_GATEWAY_MQTT__URL=f"mqtt://{common.HOST}:{port}",
            EDGE_GATEWAY_MQTT__PREFIX="bench",
        )
        gateway = Child("gateway")
        children.append(gateway)
        ready = await gateway.spawn(
            sys.executable, "-m", "gateway", "run", ready=json_event("gateway_ready"),
            env=env, cwd=str(common.REPO),
        )  # fmt: skip
        await gateway.line(json_event("serial_port_open"))
        await gateway.line(json_event("mqtt_connected"))
        yield {
            "broker_port": port,
            "sim_port": int(json.loads(ready)["sim_port"]),
            "gateway_register": gateway_register,
            "floor_line": floor_line,
            "floor_register": floor_register,
            "children": children,
        }
    finally:
        for child in reversed(children):
            await child.stop()


async def seed(data_dir: Path) -> None:
    from gateway.domain.models import Member
    from gateway.store.store import Store

    store = await Store.open(data_dir / "gateway.db")
    lines = (SAMPLE / "members.jsonl").read_text().splitlines()
    await store.upsert_members([Member.model_validate_json(line) for line in lines if line])
    await store.close()


async def alternate(
    blocks: int,
    gateway: Callable[[int], Any],
    floor: Callable[[int], Any],
) -> tuple[list[float], list[float]]:
    """Run `blocks` blocks on each side, alternating; each callable gets the block number."""
    ours: list[float] = []
    theirs: list[float] = []
    gc.collect()
    gc.disable()  # the client's own pauses would land in the figures
    try:
        for block in range(blocks):
            ours += await gateway(block)
            theirs += await floor(block)
    finally:
        gc.enable()
    return ours, theirs


async def measure(
    requests: int, warmup: int, block: int, broker_nodelay: bool = True
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="transport-latency-") as tmp:
        async with stack(Path(tmp), broker_nodelay) as parts:
            blocks = max(1, requests // block)
            frames = ident_frames(block)

            # TCP
            probe = encode_frame(SOURCE_ID, 0, ["IDENT", str(WSID), "1", "0", CARDS[0]])
            reply = await asyncio.to_thread(common.probe_reply, parts["sim_port"], probe)
            floor, line = await start_floor("tcp", reply)
            parts["children"].append(floor)
            floor_port = int(line.split()[1])
            replies: dict[str, dict[str, int]] = {"gateway": {}, "floor": {}}
            await asyncio.to_thread(time_tcp, parts["sim_port"], ident_frames(warmup), {})
            await asyncio.to_thread(time_tcp, floor_port, ident_frames(warmup), {})
            ours, theirs = await alternate(
                blocks,
                lambda _: asyncio.to_thread(
                    time_tcp, parts["sim_port"], frames, replies["gateway"]
                ),
                lambda _: asyncio.to_thread(time_tcp, floor_port, frames, replies["floor"]),
            )
            results["tcp"] = summarise(ours, theirs, replies, "IDENT_OK")

            # serial
            floor, _ = await start_floor("serial", reply, device=str(parts["floor_line"]))
            parts["children"].append(floor)
            replies = {"gateway": {}, "floor": {}}
            with (
                serial.Serial(str(parts["gateway_register"]), BAUD, timeout=10) as ours_line,
                serial.Serial(str(parts["floor_register"]), BAUD, timeout=10) as floor_line,
            ):
                await asyncio.to_thread(time_serial, ours_line, ident_frames(warmup), {})
                await asyncio.to_thread(time_serial, floor_line, ident_frames(warmup), {})
                ours, theirs = await alternate(
                    blocks,
                    lambda _: asyncio.to_thread(time_serial, ours_line, frames, replies["gateway"]),
                    lambda _: asyncio.to_thread(time_serial, floor_line, frames, replies["floor"]),
                )
            results["serial"] = summarise(ours, theirs, replies, "IDENT_OK")

            # MQTT
            port = parts["broker_port"]
            bench_topics, floor_topics = Topics("bench", STORE_ID), Topics("floor", STORE_ID)
            async with (
                aiomqtt.Client(HOST, port, protocol=V5, socket_options=NODELAY) as one,
                aiomqtt.Client(HOST, port, protocol=V5, socket_options=NODELAY) as two,
            ):
                ours_till, floor_till = MqttTill(one, bench_topics), MqttTill(two, floor_topics)
                await ours_till.start()
                probe_reply: dict[str, int] = {}
                await ours_till.time(mqtt_bodies(1, -1), probe_reply)
                json_reply = await probe_mqtt(ours_till)
                floor, _ = await start_floor("mqtt", json_reply, port=str(port))
                parts["children"].append(floor)
                await floor_till.start()
                replies = {"gateway": {}, "floor": {}}
                await ours_till.time(mqtt_bodies(warmup, 0), {})
                await floor_till.time(mqtt_bodies(warmup, 0), {})
                ours, theirs = await alternate(
                    blocks,
                    lambda n: ours_till.time(
                        mqtt_bodies(block, 10**6 * (n + 1)), replies["gateway"]
                    ),
                    lambda n: floor_till.time(
                        mqtt_bodies(block, 10**6 * (n + 1)), replies["floor"]
                    ),
                )
            results["mqtt"] = summarise(ours, theirs, replies, "IDENT_OK")
    return results


async def probe_mqtt(till: MqttTill) -> bytes:
    """The bytes of one IDENT_OK JSON reply, for the MQTT floor."""
    await till.client.publish(till.topics.request(WSID), mqtt_bodies(1, -2)[0], qos=1)
    payload = await asyncio.wait_for(till.replies.get(), 10)
    if json.loads(payload).get("reply") != "IDENT_OK":
        raise RuntimeError(f"the gateway did not answer IDENT_OK: {payload!r}")
    return payload


def summarise(
    ours: list[float], theirs: list[float], replies: dict[str, dict[str, int]], expect: str
) -> dict[str, Any]:
    gateway, floor = figures(ours), figures(theirs)
    unexpected = sum(n for key, n in replies["gateway"].items() if key != expect)
    return {
        "gateway": gateway,
        "floor": floor,
        "ratio_p50": gateway["p50_ms"] / floor["p50_ms"],
        "ratio_p99": gateway["p99_ms"] / floor["p99_ms"],
        "replies": replies,
        "unexpected_replies": unexpected,
    }


def machine() -> dict[str, str]:
    return {
        "nproc": str(os.cpu_count()),
        "cpu": common.cpu_model(""),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "mosquitto": common.first_line([MOSQUITTO, "-h"], "version", stderr=True, default=""),
        "socat": common.first_line([SOCAT, "-V"], "socat version", stderr=True, default=""),
    }


def report(results: dict[str, Any], info: dict[str, str]) -> None:
    print(f"machine: {info['nproc']} cores ({info['cpu']}), Python {info['python']}, "
          f"{info['mosquitto']}, {info['socat']}")  # fmt: skip
    header = ("transport", "gateway p50", "p99", "floor p50", "p99", "ratio p50", "ratio p99", "n")
    print("  ".join(f"{h:>12}" for h in header))
    for name, r in results.items():
        g, f = r["gateway"], r["floor"]
        row = (
            name, f"{g['p50_ms']:.3f} ms", f"{g['p99_ms']:.3f} ms", f"{f['p50_ms']:.3f} ms",
            f"{f['p99_ms']:.3f} ms", f"{r['ratio_p50']:.2f}x", f"{r['ratio_p99']:.2f}x",
            str(g["n"]),
        )  # fmt: skip
        print("  ".join(f"{c:>12}" for c in row))
        if r["unexpected_replies"]:
            print(
                f"  !! {name}: {r['unexpected_replies']} replies were not IDENT_OK: {r['replies']}"
            )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="IDENTs per transport and side")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--block", type=int, default=200, help="requests per alternating block")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--broker-nagle",
        action="store_true",
        help="leave Mosquitto's set_tcp_nodelay at its default (false), to see what it costs",
    )
    parser.add_argument("--floor", choices=["tcp", "serial", "mqtt"], help=argparse.SUPPRESS)
    parser.add_argument("--reply", help=argparse.SUPPRESS)
    parser.add_argument("--device", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.floor:
        return run_floor(args)
    info = machine()
    results = asyncio.run(
        measure(args.requests, args.warmup, args.block, broker_nodelay=not args.broker_nagle)
    )
    report(results, info)
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "results": results}, indent=2))
    return 0 if all(not r["unexpected_replies"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
