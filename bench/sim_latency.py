"""IDENT and COUPON round trips of ONE register over TCP, 1,000,000 members cached, next to the
floor: an asyncio server that answers each frame with precomputed reply bytes (DESIGN.md
section 7: p99 < 1 ms; p50 <= 1.5x floor for IDENT, 2x for COUPON; the gateway's CPU per IDENT
below 60 us).

Three processes: the gateway (`edge-gateway run`), the load generator (one connection, requests
strictly one after the other, each timed with perf_counter from before the send to the decoded
reply) and the floor server, measured by the same client with the same frames, the two taking
turns in blocks of requests.

    python -m bench.sim_latency                    # 1,000,000 members, 20,000 of each request
    python -m bench.sim_latency --members 100000 --requests 5000
"""

from __future__ import annotations

import asyncio
import functools
import gc
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

from bench import _common as common
from bench import _helpers as helpers

SOURCE_ID = b"   1LOYAL"  # workstation 1, as pos_adapters.sim.register names it
WSID = "1"
TARGET_P99_MS = 1.0
TARGET_FLOOR_RATIO = {"IDENT": 1.5, "COUPON": 2.0}  # p50 against the echo's p50
TARGET_CPU_PER_IDENT_US = 60.0


# ---- the frames (built before the clock starts, identical for the gateway and the floor) --------


def build_frames(
    command: str, count: int, members: int, seed: int, first_check: int
) -> list[bytes]:
    """`count` requests of one workstation: IDENTs with random member cards, or COUPONs for the
    bench's bearer coupon on distinct checks (so each one reserves anew)."""
    from pos_adapters.sim.codec import encode_frame

    rng = random.Random(seed)
    frames = []
    for k in range(count):
        check = str(first_check + k)
        if command == "IDENT":
            fields = ["IDENT", WSID, "1", check, common.card_number(rng.randrange(members))]
        else:
            fields = [
                "COUPON",
                WSID,
                check,
                common.member_id(rng.randrange(members)),
                common.COUPON_CODE,
                "27.40",
            ]
        frames.append(encode_frame(SOURCE_ID, (k + 1) % 100, fields))
    return frames


# phase name, command, how many, seed, first check number
Phase = tuple[str, str, int, int, int]
EXPECT = {"IDENT": "IDENT_OK", "COUPON": "COUPON_OK"}


def plan(requests: int, warmup: int) -> list[Phase]:
    return [
        ("warmup IDENT", "IDENT", warmup, 1, 1),
        ("warmup COUPON", "COUPON", max(1, warmup // 5), 2, 90_000_000),
        ("IDENT", "IDENT", requests, 3, 1),
        ("COUPON", "COUPON", requests, 4, 10_000_000),
    ]


# ---- the load generator (runs in its own process) -----------------------------------------------


class _Target:
    """One server under measurement: its connection and what was measured against it."""

    def __init__(self, label: str, port: int, pid: int, check_replies: bool) -> None:
        from pos_adapters.sim.codec import FrameDecoder

        self.label = label
        self.pid = pid
        self.check_replies = check_replies
        self.sock = socket.create_connection((common.HOST, port), timeout=10.0)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.decoder = FrameDecoder()
        self.phases: dict[str, dict[str, Any]] = {}

    def run(self, phase: str, expect: str, frames: list[bytes], all_pids: list[int]) -> None:
        """Send `frames` one at a time, timing each round trip; add to the phase's figures."""
        from pos_adapters.sim.codec import Frame

        out = self.phases.setdefault(
            phase,
            {
                "latencies": [],
                "replies": Counter(),
                "first_reply": None,
                "server_cpu_s": {},
                "others_s": 0.0,
                "unexpected": 0,
            },
        )
        latencies, replies = out["latencies"], out["replies"]
        clock, send, decoder = time.perf_counter, self.sock.sendall, self.decoder
        receive = functools.partial(self.sock.recv, 65536)
        who = f"{self.label} (during {phase})"
        # The servers not being measured right now are not "others" (the gateway has
        # background work): the meter counts every server apart.
        meter = common.CpuMeter(all_pids)
        for frame in frames:
            started = clock()
            send(frame)
            got = common.read_frame(receive, decoder, who)
            latencies.append(clock() - started)
            reply = got[0]
            if isinstance(reply, Frame):
                replies[reply.fields[0]] += 1
                if out["first_reply"] is None:
                    out["first_reply"] = reply.to_bytes()
            else:
                replies[f"codec {reply.reason}"] += 1
            if len(got) != 1:
                replies["extra frames"] += len(got) - 1
        used = meter.read()
        for kind, seconds in used.servers[self.pid].items():
            out["server_cpu_s"][kind] = out["server_cpu_s"].get(kind, 0.0) + seconds
        out["others_s"] += used.others  # what other people's processes used meanwhile
        if self.check_replies:
            out["unexpected"] = sum(v for k, v in replies.items() if k != expect)


def one_register(
    targets: list[tuple[str, int, int, bool]],
    phases: list[Phase],
    members: int,
    block: int,
    phase_cap_s: float,
) -> dict[str, dict[str, Any]]:
    """One connection per target (label, port, pid, check replies), one request at a time.

    Each phase's frames go to every target in alternating blocks of `block` requests, so that
    a slow drift of the machine (other load, CPU frequency) weighs on all targets alike. A phase
    that runs longer than phase_cap_s stops at the next block and says so ("capped").
    Returns, per target and phase, the latencies in seconds, the replies seen, the first reply's
    bytes, the CPU time the target's server used and the CPU time other processes used.
    """
    frames = {
        name: build_frames(cmd, n, members, seed, check) for name, cmd, n, seed, check in phases
    }
    servers = [_Target(*target) for target in targets]
    pids = [server.pid for server in servers]
    clock = time.perf_counter
    try:
        for name, command, count, _, _ in phases:
            gc.collect()
            gc.disable()  # the client's own pauses would land in every measurement
            try:
                deadline = clock() + phase_cap_s
                capped = False
                for first in range(0, count, block):
                    if clock() > deadline:
                        capped = True
                        break
                    for server in servers:
                        server.run(name, EXPECT[command], frames[name][first : first + block], pids)
            finally:
                gc.enable()
            for server in servers:
                phase = server.phases[name]
                phase["capped"] = capped
                phase["replies"] = dict(phase["replies"])
                phase["others_cores"] = max(0.0, phase.pop("others_s")) / max(
                    sum(phase["latencies"]), 1e-9
                )
    finally:
        for server in servers:
            server.sock.close()
    return {server.label: server.phases for server in servers}


# ---- the floor: an asyncio server that answers each frame with fixed bytes ----------------------


def echo_floor(conn: Any, reply: bytes, max_s: float) -> None:
    """Answer every frame (counted by its EOT) with `reply`, over the same asyncio streams the
    gateway uses; stop when the parent closes `conn`, or after max_s."""
    helpers.child_setup()

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
        server = await asyncio.start_server(handle, common.HOST, 0, limit=65536)
        conn.send((server.sockets[0].getsockname()[1], os.getpid()))
        await helpers.answer_parent(conn, None, max_s)
        server.close()

    asyncio.run(serve())


# ---- the run ------------------------------------------------------------------------------------


def run(
    members: int, requests: int, warmup: int, *, block: int = 500, phase_cap_s: float = 900.0
) -> dict[str, Any]:
    from pos_adapters.sim.codec import encode_frame

    result = common.new_result(
        "sim_latency", members=members, requests=requests, warmup=warmup, block=block
    )
    db, result["db_build_s"] = common.member_db(members)
    result["db_mb"] = db.stat().st_size / 1e6
    timeout_s = 4 * phase_cap_s + 120  # four phases, and time to build the frames
    with common.run_directory(db) as directory, common.GatewayProcess(directory) as gateway:
        result["gateway_ready_s"] = gateway.seconds_to_ready
        print(
            f"gateway pid {gateway.pid} ready on {common.HOST}:{gateway.port} after"
            f" {gateway.seconds_to_ready:.1f} s (start-up check of {result['db_mb']:.0f} MB)"
        )
        assert gateway.gateway_pid is not None
        probe = encode_frame(SOURCE_ID, 0, ["IDENT", WSID, "1", "0", common.card_number(0)])
        ident_reply = common.probe_reply(gateway.port, probe)
        with helpers.server_process(echo_floor, ident_reply, timeout_s) as echo:
            floor_port, floor_pid = echo.ready
            print(
                f"floor pid {floor_pid} on {common.HOST}:{floor_port}; measuring in alternating"
                f" blocks of {block} requests ..."
            )
            started = time.perf_counter()
            both = helpers.call_in_process(
                one_register,
                [
                    ("gateway", gateway.port, gateway.gateway_pid, True),
                    ("floor", floor_port, floor_pid, False),
                ],
                plan(requests, warmup),
                members,
                block,
                phase_cap_s,
                timeout_s=timeout_s,
            )
            result["run_s"] = time.perf_counter() - started
    measured, floor = both["gateway"], both["floor"]
    result["reply_bytes"] = len(ident_reply)
    for name in ("IDENT", "COUPON"):
        lat, floor_lat = measured[name]["latencies"], floor[name]["latencies"]
        tenth = max(1, len(lat) // 10)
        g_cpu, f_cpu = measured[name]["server_cpu_s"], floor[name]["server_cpu_s"]
        g, f = common.summary_ms(lat), common.summary_ms(floor_lat)
        result[name] = {
            "gateway": g,
            "floor": f,
            "ratio_p50": g["p50"] / f["p50"],
            "ratio_p99": g["p99"] / f["p99"],
            "p99_met": g["p99"] < TARGET_P99_MS,
            "ratio_target": TARGET_FLOOR_RATIO[name],
            "ratio_met": g["p50"] / f["p50"] <= TARGET_FLOOR_RATIO[name],
            "gateway_cpu_us": {k: v / len(lat) * 1e6 for k, v in g_cpu.items()},
            "floor_cpu_us": sum(f_cpu.values()) / len(floor_lat) * 1e6,
            "replies": measured[name]["replies"],
            "unexpected": measured[name]["unexpected"],
            "capped": measured[name]["capped"],
            "others_cores": measured[name]["others_cores"],
            "floor_others_cores": floor[name]["others_cores"],
            "p50_first_tenth": common.summary_ms(lat[:tenth])["p50"],
            "p50_last_tenth": common.summary_ms(lat[-tenth:])["p50"],
        }
    report(result)
    return result


def report(result: dict[str, Any]) -> None:
    print()
    lines = []
    for name in ("IDENT", "COUPON"):
        for who, label in (("gateway", "gateway"), ("floor", "floor (asyncio echo)")):
            s = result[name][who]
            lines.append(
                [
                    f"{name} {label}",
                    f"{s['count']:,}",
                    *(f"{s[k]:.3f}" for k in ("p50", "p90", "p99", "max")),
                ]
            )
    common.print_table(
        f"One register, {result['members']:,} members cached, sequential round trips"
        f" (reply {result['reply_bytes']} bytes):",
        ["", "n", "p50 ms", "p90 ms", "p99 ms", "max ms"],
        lines,
    )
    print()
    for name in ("IDENT", "COUPON"):
        r = result[name]
        g, f = r["gateway"], r["floor"]
        print(
            f"{name}: p50 {g['p50']:.3f} ms = {r['ratio_p50']:.2f}x floor p50 {f['p50']:.3f} ms"
            f" (target <= {r['ratio_target']:g}x: {common.verdict(r['ratio_met'])});"
            f" p99 {g['p99']:.3f} ms (target < {TARGET_P99_MS:.0f} ms:"
            f" {common.verdict(r['p99_met'])});"
            f" p99 ratio {r['ratio_p99']:.2f}x"
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
            + ("; STOPPED EARLY at the phase time cap" if r["capped"] else "")
        )
        print(
            f"  other processes on the machine used {r['others_cores']:.2f} cores during the"
            f" gateway phase, {r['floor_others_cores']:.2f} during the floor phase"
            + common.quiet(max(r["others_cores"], r["floor_others_cores"]))
        )


def rows(result: dict[str, Any]) -> list[common.Row]:
    """The DESIGN.md section 7 rows: IDENT and COUPON round trips, the CPU per IDENT."""
    out = []
    for name in ("IDENT", "COUPON"):
        r = result[name]
        g, f, cpu = r["gateway"], r["floor"], r["gateway_cpu_us"]
        for q, target, met in (
            ("p99", f"p99 < {TARGET_P99_MS:g} ms", r["p99_met"]),
            ("p50", f"p50 <= {r['ratio_target']:g}x floor", r["ratio_met"]),
        ):
            per_request = cpu["loop"] + cpu["threads"]
            out.append(
                common.latency_row(f"{name} {target}", g[q], f"echo {q}", f[q], per_request, met)
            )
    r = result["IDENT"]
    cpu = r["gateway_cpu_us"]["loop"] + r["gateway_cpu_us"]["threads"]
    out.append(
        common.Row(
            f"CPU per IDENT < {TARGET_CPU_PER_IDENT_US:g} us",
            common.us(cpu),
            f"echo {common.us(r['floor_cpu_us'])}",
            common.times(cpu, r["floor_cpu_us"]),
            common.us(cpu),
            cpu < TARGET_CPU_PER_IDENT_US,
        )
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = common.command_line(__doc__)
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=20_000, help="of each command")
    parser.add_argument("--warmup", type=int, default=1_000, help="IDENTs before measuring")
    parser.add_argument(
        "--block", type=int, default=500, help="requests per turn, gateway and floor alternating"
    )
    parser.add_argument(
        "--phase-cap", type=float, default=900.0, help="stop a phase after this many seconds"
    )
    args = parser.parse_args(argv)
    result = run(
        args.members, args.requests, args.warmup, block=args.block, phase_cap_s=args.phase_cap
    )
    return common.finish(result, rows(result), args.json)


if __name__ == "__main__":
    raise SystemExit(common.entry(main))
