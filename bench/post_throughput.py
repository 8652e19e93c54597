"""POST, durable, 20 registers at once: checks/s and latency, next to the floor measured in the same
run: sqlite3 inserts of one row per commit (WAL, synchronous=FULL) on the same filesystem
(DESIGN.md section 7: >= 5,000 checks/s; p99 < 5 ms).

Processes: the gateway (`edge-gateway run`, standalone, a 10,000-member database) and the load
generator (20 connections, one workstation each, each sending POSTs back to back with distinct
check numbers; 80% of the checks carry a member, 20% are anonymous). The floor runs first, alone.

    python -m bench.post_throughput                 # 10 s of load after 1 s of warm-up
    python -m bench.post_throughput --duration 3 --count-fsyncs
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import json
import random
import sqlite3
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/post_throughput.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    HOST,
    GatewayProcess,
    call_in_process,
    cpu_seconds,
    cpu_used,
    entry,
    fsync_count,
    machine_busy_seconds,
    member_db,
    member_id,
    print_machine,
    print_table,
    run_directory,
    strace_available,
    summary_ms,
    verdict,
)

TARGET_CHECKS_PER_S = 5_000
TARGET_P99_MS = 5.0
MEMBER_SHARE = 0.8


# ---- the floor ----------------------------------------------------------------------------------


def fsync_floor(directory: Path, seconds: float) -> dict[str, Any]:
    """One row per commit, WAL, synchronous=FULL: what one fsync per check would allow."""
    conn = sqlite3.connect(directory / "floor.db", isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("CREATE TABLE checks (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)")
        payload = "x" * 300  # about a posted check's row
        insert = "INSERT INTO checks (payload) VALUES (?)"
        for _ in range(50):
            conn.execute(insert, (payload,))
        clock = time.perf_counter
        latencies = []
        started = clock()
        deadline = started + seconds
        now = started
        while now < deadline:
            conn.execute(insert, (payload,))  # autocommit: its own transaction, its own fsync
            after = clock()
            latencies.append(after - now)
            now = after
        elapsed = now - started
    finally:
        conn.close()
    return {
        "commits": len(latencies),
        "seconds": elapsed,
        "commits_per_s": len(latencies) / elapsed,
        "commit": summary_ms(latencies),
    }


# ---- the load generator (runs in its own process) -----------------------------------------------


def post_load(
    port: int, gateway_pid: int, registers: int, warmup_s: float, duration_s: float, members: int
) -> dict[str, Any]:
    return asyncio.run(_post_load(port, gateway_pid, registers, warmup_s, duration_s, members))


async def _post_load(
    port: int, gateway_pid: int, registers: int, warmup_s: float, duration_s: float, members: int
) -> dict[str, Any]:
    from pos_adapters.sim.codec import Frame, FrameDecoder, encode_frame

    clock = time.perf_counter
    business_date = dt.datetime.now(dt.UTC).strftime("%Y%m%d")  # the gateway runs in UTC
    connections = [await asyncio.open_connection(HOST, port) for _ in range(registers)]
    latencies: list[float] = []
    replies: Counter[str] = Counter()
    sent = 0
    start = clock()
    window_start = start + warmup_s
    window_end = window_start + duration_s

    async def register(
        index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        nonlocal sent
        wsid = index + 1
        source_id = f"{wsid:>4}LOYAL".encode("ascii")
        decoder = FrameDecoder()
        rng = random.Random(wsid)
        check = 0
        while clock() < window_end:
            check += 1
            member = member_id(rng.randrange(members)) if rng.random() < MEMBER_SHARE else ""
            items, subtotal = [], 0
            for _ in range(rng.randint(1, 4)):
                cents = rng.randint(100, 2500)
                subtotal += cents
                items.append(f"1*{1000 + rng.randint(1, 200)}*{cents // 100}.{cents % 100:02d}")
            amount = f"{subtotal // 100}.{subtotal % 100:02d}"
            fields = [
                "POST",
                str(wsid),
                "1",
                str(check),
                business_date,
                member,
                amount,
                amount,
                ";".join(items),
                "",
            ]
            frame = encode_frame(source_id, check % 100, fields)
            began = clock()
            writer.write(frame)
            got: list[Any] = []
            while not got:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionError("the gateway closed the connection")
                got = decoder.feed(data)
            ended = clock()
            sent += 1
            if window_start <= ended < window_end:
                latencies.append(ended - began)
                reply = got[0]
                replies[reply.fields[0] if isinstance(reply, Frame) else reply.reason] += 1

    cpu: dict[str, Any] = {}

    async def sample_cpu() -> None:
        # CPU time of the gateway and of this client over the measured window.
        await asyncio.sleep(max(0.0, window_start - clock()))
        before, mine = cpu_seconds(gateway_pid), time.process_time()
        busy = machine_busy_seconds()
        await asyncio.sleep(max(0.0, window_end - clock()))
        cpu["gateway"] = cpu_used(before, cpu_seconds(gateway_pid))
        cpu["client"] = time.process_time() - mine
        # What the rest of the machine (other people's processes) used meanwhile.
        cpu["others"] = max(
            0.0, machine_busy_seconds() - busy - cpu["client"] - sum(cpu["gateway"].values())
        )

    gc.disable()  # the client's own pauses would count as the gateway's latency
    try:
        await asyncio.gather(
            sample_cpu(), *(register(i, r, w) for i, (r, w) in enumerate(connections))
        )
    finally:
        gc.enable()
        for _, writer in connections:
            writer.close()
    return {
        "latencies": latencies,
        "replies": dict(replies),
        "sent": sent,
        "window_s": duration_s,
        "cpu": cpu,
    }


# ---- the run ------------------------------------------------------------------------------------


def run(
    members: int,
    registers: int,
    duration_s: float,
    warmup_s: float,
    floor_s: float,
    *,
    count_fsyncs: bool,
    timeout_s: float,
) -> dict[str, Any]:
    info = print_machine()
    db, build_s = member_db(members)
    result: dict[str, Any] = {
        "benchmark": "post_throughput",
        "machine": info,
        "members": members,
        "registers": registers,
        "duration_s": duration_s,
        "warmup_s": warmup_s,
        "db_build_s": build_s,
    }
    if count_fsyncs and not strace_available():
        print("strace not found: not counting fsyncs")
        count_fsyncs = False
    with run_directory(db) as directory:
        print(f"floor: sqlite3, one row per commit, WAL, synchronous=FULL, {floor_s:.0f} s ...")
        floor = fsync_floor(directory, floor_s)
        result["floor"] = floor
        trace = directory / "strace.txt" if count_fsyncs else None
        with GatewayProcess(directory, count_fsyncs=trace) as gateway:
            print(
                f"gateway pid {gateway.pid} ready on {HOST}:{gateway.port};"
                f" {registers} registers, {warmup_s:.0f} s warm-up +"
                f" {duration_s:.0f} s measured ..."
            )
            assert gateway.gateway_pid is not None
            load = call_in_process(
                post_load,
                gateway.port,
                gateway.gateway_pid,
                registers,
                warmup_s,
                duration_s,
                members,
                timeout_s=timeout_s,
            )
        if trace is not None:
            result["fsyncs"] = fsync_count(trace)
    lat = load["latencies"]
    ok = load["replies"].get("POST_OK", 0)
    result.update(
        posts_sent=load["sent"],
        replies=load["replies"],
        post=summary_ms(lat),
        checks_per_s=ok / duration_s,
    )
    result["ratio"] = result["checks_per_s"] / floor["commits_per_s"]
    if ok:
        gateway_cpu = load["cpu"]["gateway"]
        result["cpu_per_check_us"] = {k: v / ok * 1e6 for k, v in gateway_cpu.items()}
        result["cpu_share"] = {
            "gateway loop": gateway_cpu["loop"] / duration_s,
            "gateway other threads": gateway_cpu["threads"] / duration_s,
            "client": load["cpu"]["client"] / duration_s,
            "other processes": load["cpu"]["others"] / duration_s,
        }
    result["throughput_met"] = result["checks_per_s"] >= TARGET_CHECKS_PER_S
    result["p99_met"] = result["post"]["p99"] < TARGET_P99_MS
    report(result)
    return result


def report(result: dict[str, Any]) -> None:
    floor, post = result["floor"], result["post"]
    print()
    print_table(
        f"POST, durable, {result['registers']} registers at once, {result['members']:,} members:",
        ["", "per s", "p50 ms", "p90 ms", "p99 ms", "max ms"],
        [
            [
                "gateway checks",
                f"{result['checks_per_s']:,.0f}",
                *(f"{post[k]:.3f}" for k in ("p50", "p90", "p99", "max")),
            ],
            [
                "floor: sqlite3 commits, 1 row each",
                f"{floor['commits_per_s']:,.0f}",
                *(f"{floor['commit'][k]:.3f}" for k in ("p50", "p90", "p99", "max")),
            ],
        ],
    )
    print()
    print(
        f"checks/s {result['checks_per_s']:,.0f} = {result['ratio']:.2f}x floor commits/s"
        f" {floor['commits_per_s']:,.0f}; target >= {TARGET_CHECKS_PER_S:,}:"
        f" {verdict(result['throughput_met'])}"
    )
    print(
        f"p99 {post['p99']:.3f} ms; target < {TARGET_P99_MS:.0f} ms: {verdict(result['p99_met'])}"
    )
    if "cpu_per_check_us" in result:
        per, share = result["cpu_per_check_us"], result["cpu_share"]
        print(
            f"gateway CPU per check: {per['loop'] + per['threads']:.0f} us (event loop"
            f" {per['loop']:.0f}, other threads {per['threads']:.0f}); cores busy in the window:"
            + ",".join(f" {k} {v:.2f}" for k, v in share.items())
            + (" (NOT QUIET: figures disturbed)" if share["other processes"] > 0.1 else "")
        )
    others = {k: v for k, v in result["replies"].items() if k != "POST_OK"}
    print(f"replies in the window: {result['replies']}" + ("  UNEXPECTED" if others else ""))
    fsyncs = result.get("fsyncs")
    if fsyncs:
        # Counted over the whole gateway run (warm-up and shutdown included), so all posts sent.
        print(
            f"group commit: {result['posts_sent']:,} checks posted, {fsyncs:,} fsync calls by the"
            f" gateway: {result['posts_sent'] / fsyncs:.1f} checks per fsync"
        )
        result["checks_per_fsync"] = result["posts_sent"] / fsyncs
    else:
        print("group commit: not measured (writer.stats is not exposed; run with --count-fsyncs)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--registers", type=int, default=20)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load not measured")
    parser.add_argument("--floor-seconds", type=float, default=3.0)
    parser.add_argument(
        "--count-fsyncs",
        action="store_true",
        help="run the gateway under strace to count its fsyncs (checks per commit)",
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds for the load process")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    result = run(
        args.members,
        args.registers,
        args.duration,
        args.warmup,
        args.floor_seconds,
        count_fsyncs=args.count_fsyncs,
        timeout_s=args.timeout,
    )
    if args.json:
        out = {k: v for k, v in result.items()}
        args.json.write_text(json.dumps(out, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(entry(main))
