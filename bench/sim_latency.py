"""IDENT and COUPON round trips of ONE register over TCP, 1,000,000 members cached, next to the floor:
an asyncio server that answers each frame with precomputed reply bytes (DESIGN.md section 7:
p99 < 1 ms; p50 <= 2x floor).

Three processes: the gateway (`edge-gateway run`), the load generator (one connection, requests
strictly one after the other, each timed with perf_counter from before the send to the decoded
reply) and, afterwards, the floor server, measured by the same client code with the same frames.

    python -m bench.sim_latency                    # 1,000,000 members, 20,000 of each request
    python -m bench.sim_latency --members 100000 --requests 5000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import random
import socket
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/sim_latency.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    COUPON_CODE,
    HOST,
    GatewayProcess,
    call_in_process,
    card_number,
    child_setup,
    cpu_seconds,
    cpu_used,
    exit_on_sigterm,
    member_db,
    member_id,
    print_machine,
    print_table,
    run_directory,
    server_process,
    summary_ms,
    verdict,
)

SOURCE_ID = b"   1LOYAL"  # workstation 1, as pos_adapters.sim.register names it
WSID = "1"
TARGET_P99_MS = 1.0
TARGET_FLOOR_RATIO = 2.0


# ---- the frames (built before the clock starts, identical for the gateway and the floor) ------------


def build_frames(command: str, count: int, members: int, seed: int, first_check: int) -> list[bytes]:
    """`count` requests of one workstation: IDENTs with random member cards, or COUPONs for the
    bench's bearer coupon on distinct checks (so each one reserves anew)."""
    from pos_adapters.sim.codec import encode_frame

    rng = random.Random(seed)
    frames = []
    for k in range(count):
        check = str(first_check + k)
        if command == "IDENT":
            fields = ["IDENT", WSID, "1", check, card_number(rng.randrange(members))]
        else:
            fields = ["COUPON", WSID, check, member_id(rng.randrange(members)), COUPON_CODE, "27.40"]
        frames.append(encode_frame(SOURCE_ID, (k + 1) % 100, fields))
    return frames


# phase name, command, how many, seed, first check number, reply expected (None: don't look)
Phase = tuple[str, str, int, int, int, "str | None"]


def plan(requests: int, warmup: int, members: int, *, floor: bool) -> list[Phase]:
    expect_ident = None if floor else "IDENT_OK"
    expect_coupon = None if floor else "COUPON_OK"
    return [
        ("warmup IDENT", "IDENT", warmup, 1, 1, expect_ident),
        ("warmup COUPON", "COUPON", max(1, warmup // 5), 2, 90_000_000, expect_coupon),
        ("IDENT", "IDENT", requests, 3, 1, expect_ident),
        ("COUPON", "COUPON", requests, 4, 10_000_000, expect_coupon),
    ]


# ---- the load generator (runs in its own process) ---------------------------------------------------


def one_register(port: int, server_pid: int, phases: list[Phase], members: int) -> dict[str, Any]:
    """One connection, one request at a time; returns per phase the latencies in seconds, the
    reply commands seen, the first reply's bytes, and the CPU time the server used."""
    from pos_adapters.sim.codec import Frame, FrameDecoder

    frames = {name: build_frames(cmd, n, members, seed, check) for name, cmd, n, seed, check, _ in phases}
    sock = socket.create_connection((HOST, port), timeout=10.0)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    decoder = FrameDecoder()
    clock = time.perf_counter
    out: dict[str, Any] = {}
    try:
        for name, _, _, _, _, expect in phases:
            latencies: list[float] = []
            replies: Counter[str] = Counter()
            first: bytes | None = None
            gc.collect()
            gc.disable()  # the client's own pauses would land in both measurements
            cpu_before = cpu_seconds(server_pid)
            try:
                for frame in frames[name]:
                    started = clock()
                    sock.sendall(frame)
                    got: list[Any] = []
                    while not got:
                        data = sock.recv(65536)
                        if not data:
                            raise ConnectionError(f"closed by the server during {name}")
                        got = decoder.feed(data)
                    latencies.append(clock() - started)
                    reply = got[0]
                    if isinstance(reply, Frame):
                        replies[reply.fields[0]] += 1
                        if first is None:
                            first = reply.to_bytes()
                    else:
                        replies[f"codec {reply.reason}"] += 1
                    if len(got) != 1:
                        replies["extra frames"] += len(got) - 1
            finally:
                gc.enable()
            cpu = cpu_used(cpu_before, cpu_seconds(server_pid))
            unexpected = sum(v for k, v in replies.items() if expect is not None and k != expect)
            out[name] = {
                "latencies": latencies,
                "replies": dict(replies),
                "unexpected": unexpected,
                "first_reply": first,
                "server_cpu_s": cpu,
            }
    finally:
        sock.close()
    return out


# ---- the floor: an asyncio server that answers each frame with fixed bytes ----------------------------


def echo_floor(conn: Any, reply: bytes, max_s: float) -> None:
    """Answer every frame (counted by its EOT) with `reply`, over the same asyncio streams the
    gateway uses; stop when the parent closes `conn`, or after max_s."""
    child_setup()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                frames = data.count(b"\x04")  # EOT never occurs inside a frame
                if frames:
                    writer.write(reply * frames)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def serve() -> None:
        server = await asyncio.start_server(handle, HOST, 0, limit=65536)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_reader(conn.fileno(), stop.set)  # readable = parent is done
        conn.send((server.sockets[0].getsockname()[1], os.getpid()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max_s)
        server.close()

    asyncio.run(serve())


# ---- the run ---------------------------------------------------------------------------------------


def run(members: int, requests: int, warmup: int, *, timeout_s: float) -> dict[str, Any]:
    info = print_machine()
    db, build_s = member_db(members)
    result: dict[str, Any] = {
        "benchmark": "sim_latency",
        "machine": info,
        "members": members,
        "requests": requests,
        "warmup": warmup,
        "db_build_s": build_s,
        "db_mb": db.stat().st_size / 1e6,
    }
    with run_directory(db) as directory:
        with GatewayProcess(directory) as gateway:
            result["gateway_ready_s"] = gateway.seconds_to_ready
            print(
                f"gateway pid {gateway.pid} ready on {HOST}:{gateway.port} after"
                f" {gateway.seconds_to_ready:.1f} s (start-up check of {result['db_mb']:.0f} MB)"
            )
            assert gateway.gateway_pid is not None
            measured = call_in_process(
                one_register, gateway.port, gateway.gateway_pid, plan(requests, warmup, members, floor=False), members,
                timeout_s=timeout_s,
            )
    ident_reply = measured["IDENT"]["first_reply"] or measured["warmup IDENT"]["first_reply"]
    if ident_reply is None or b"IDENT_OK" not in ident_reply:
        raise RuntimeError(f"no IDENT_OK from the gateway: {measured['IDENT']['replies']}")
    with server_process(echo_floor, ident_reply, timeout_s) as (floor_port, floor_pid):
        floor = call_in_process(
            one_register, floor_port, floor_pid, plan(requests, warmup, members, floor=True), members,
            timeout_s=timeout_s,
        )
    result["reply_bytes"] = len(ident_reply)
    for name in ("IDENT", "COUPON"):
        lat = measured[name]["latencies"]
        tenth = max(1, len(lat) // 10)
        g_cpu, f_cpu = measured[name]["server_cpu_s"], floor[name]["server_cpu_s"]
        result[name] = {
            "gateway": summary_ms(lat),
            "floor": summary_ms(floor[name]["latencies"]),
            "gateway_cpu_us": {k: v / len(lat) * 1e6 for k, v in g_cpu.items()},
            "floor_cpu_us": sum(f_cpu.values()) / len(lat) * 1e6,
            "replies": measured[name]["replies"],
            "unexpected": measured[name]["unexpected"],
            "p50_first_tenth": summary_ms(lat[:tenth])["p50"],
            "p50_last_tenth": summary_ms(lat[-tenth:])["p50"],
        }
    report(result)
    return result


def report(result: dict[str, Any]) -> None:
    print()
    rows = []
    for name in ("IDENT", "COUPON"):
        for who in ("gateway", "floor"):
            s = result[name][who]
            label = f"{name} {'gateway' if who == 'gateway' else 'floor (asyncio echo)'}"
            rows.append([label, f"{s['count']:,}", *(f"{s[k]:.3f}" for k in ("p50", "p90", "p99", "max"))])
    print_table(
        f"One register, {result['members']:,} members cached, sequential round trips"
        f" (reply {result['reply_bytes']} bytes):",
        ["", "n", "p50 ms", "p90 ms", "p99 ms", "max ms"],
        rows,
    )
    print()
    for name in ("IDENT", "COUPON"):
        r = result[name]
        g, f = r["gateway"], r["floor"]
        ratio = g["p50"] / f["p50"]
        r["ratio_p50"] = ratio
        r["p99_met"] = g["p99"] < TARGET_P99_MS
        r["ratio_met"] = ratio <= TARGET_FLOOR_RATIO
        print(
            f"{name}: p50 {g['p50']:.3f} ms = {ratio:.2f}x floor p50 {f['p50']:.3f} ms"
            f" (target <= {TARGET_FLOOR_RATIO:.0f}x: {verdict(r['ratio_met'])});"
            f" p99 {g['p99']:.3f} ms (target < {TARGET_P99_MS:.0f} ms: {verdict(r['p99_met'])});"
            f" p99 ratio {g['p99'] / f['p99']:.2f}x"
        )
        cpu = r["gateway_cpu_us"]
        print(
            f"  server CPU per request: gateway {cpu['loop'] + cpu['threads']:.0f} us"
            f" (event loop {cpu['loop']:.0f}, other threads {cpu['threads']:.0f});"
            f" floor {r['floor_cpu_us']:.0f} us"
        )
        print(
            f"  p50 over the first / last tenth of the run: {r['p50_first_tenth']:.3f} /"
            f" {r['p50_last_tenth']:.3f} ms; replies {r['replies']}"
            + (f"; {r['unexpected']} UNEXPECTED" if r["unexpected"] else "")
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=20_000, help="of each command")
    parser.add_argument("--warmup", type=int, default=1_000, help="IDENTs before measuring")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per process")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    result = run(args.members, args.requests, args.warmup, timeout_s=args.timeout)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
