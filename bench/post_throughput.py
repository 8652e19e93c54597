"""POST, durable, 20 registers at once: checks/s and latency, next to the floor measured in the same
run: sqlite3 inserts of one row per commit (WAL, synchronous=FULL) on the same filesystem
(DESIGN.md section 7: closed loop >= 5,000 checks/s and >= 1.0x floor; open loop at 2,000 checks/s
offered p99 < 5 ms; the gateway's CPU per POST below 150 us).

Processes: the gateway (`edge-gateway run`, standalone, a 10,000-member database) and the load
generator (20 connections, one workstation each, with distinct check numbers; 80% of the checks
carry a member, 20% are anonymous). The floor runs first, alone. Closed loop (the default): each
register posts its next check as soon as the last one is answered. Open loop (`--rate`): checks
are due on a fixed schedule and timed from their due time, so queueing is not hidden.

    python -m bench.post_throughput                 # closed loop, 10 s after 1 s of warm-up
    python -m bench.post_throughput --rate 2000     # open loop, 2,000 checks/s offered
    python -m bench.post_throughput --duration 3 --count-fsyncs
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import gc
import math
import random
import sqlite3
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/post_throughput.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common as common
from bench import _helpers as helpers

TARGET_CHECKS_PER_S = 5_000
TARGET_FLOOR_RATIO = 1.0  # closed loop: checks/s against the floor's commits/s
TARGET_P99_MS = 5.0  # open loop, at OPEN_LOOP_RATE offered
OPEN_LOOP_RATE = 2_000.0
TARGET_CPU_PER_POST_US = 150.0
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
        started, cpu = clock(), time.process_time()
        deadline = started + seconds
        now = started
        while now < deadline:
            conn.execute(insert, (payload,))  # autocommit: its own transaction, its own fsync
            after = clock()
            latencies.append(after - now)
            now = after
        elapsed, cpu = now - started, time.process_time() - cpu
    finally:
        conn.close()
    return {
        "commits": len(latencies),
        "seconds": elapsed,
        "commits_per_s": len(latencies) / elapsed,
        "commit": common.summary_ms(latencies),
        "cpu_per_commit_us": cpu / len(latencies) * 1e6,
    }


# ---- the load generator (runs in its own process) -----------------------------------------------


@dataclasses.dataclass(frozen=True)
class PostLoad:
    """The load put on the gateway: `registers` connections, one workstation each, posting for
    `warmup_s` not measured, then for `duration_s` measured; back to back (closed loop) or
    `rate` checks/s offered (open loop); 80% of the checks carry one of `members` (none: every
    check is anonymous)."""

    registers: int
    duration_s: float
    warmup_s: float
    rate: float | None = None
    members: int = 0


def post_load(*args: Any) -> dict[str, Any]:
    """`_post_load(*args)` in an event loop of its own (what `call_in_process` runs)."""
    return asyncio.run(_post_load(*args))


class _CheckMaker:
    """The POST frames of one register: distinct check numbers, 1-4 items, 80% with a member
    (when there are members), the rest anonymous."""

    def __init__(self, wsid: int, members: int) -> None:
        self.wsid = wsid
        self.members = members
        self.source_id = f"{wsid:>4}LOYAL".encode("ascii")
        self.rng = random.Random(wsid)
        self.business_date = dt.datetime.now(dt.UTC).strftime("%Y%m%d")  # the gateway's zone

    def frame(self, check: int) -> bytes:
        from pos_adapters.sim.codec import encode_frame

        rng = self.rng
        member = ""
        if self.members and rng.random() < MEMBER_SHARE:
            member = common.member_id(rng.randrange(self.members))
        items, subtotal = [], 0
        for _ in range(rng.randint(1, 4)):
            cents = rng.randint(100, 2500)
            subtotal += cents
            items.append(f"1*{1000 + rng.randint(1, 200)}*{cents // 100}.{cents % 100:02d}")
        amount = f"{subtotal // 100}.{subtotal % 100:02d}"
        fields = [
            "POST",
            str(self.wsid),
            "1",
            str(check),
            self.business_date,
            member,
            amount,
            amount,
            ";".join(items),
            "",
        ]
        return encode_frame(self.source_id, check % 100, fields)


async def _post_load(
    port: int,
    gateway_pid: int,
    registers: int,
    warmup_s: float,
    duration_s: float,
    members: int,
    rate: float | None = None,
    keep_checks: bool = False,
) -> dict[str, Any]:
    """Closed loop (`rate` None): each register posts its next check as soon as the last one is
    answered; latency from the send to the reply, for replies within the window.

    Open loop: a fixed schedule, check k of register i due at start + (k * registers + i) / rate
    (arrivals evenly spread), each register sending in order, as a real one does. Latency runs
    from the check's due time, so a register held up by a slow answer counts the wait of every
    check queued behind it (no coordinated omission). Only when the register was free at the due
    time and its own timer woke late does it run from the actual send: that lag is the load
    generator's, printed apart. Every check due in the window is sent and answered, however late,
    until `give_up`; checks still unsent then count with their wait so far.
    """
    from pos_adapters.sim.codec import Frame, FrameDecoder

    clock = time.perf_counter
    connections = [await asyncio.open_connection(common.HOST, port) for _ in range(registers)]
    latencies: list[float] = []
    timer_lag: list[float] = []
    replies: Counter[str] = Counter()
    checks: list[tuple[int, int, float, float]] = []  # wsid, check, due (or sent), POST_OK
    counts = Counter[str]()
    start = clock()
    window_start = start + warmup_s
    window_end = window_start + duration_s
    give_up = window_end + max(10.0, duration_s)

    async def register(
        index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        maker = _CheckMaker(index + 1, members)
        decoder = FrameDecoder()
        check, answered = 0, start
        while True:
            due = clock() if rate is None else start + (check * registers + index) / rate
            if due >= window_end:
                return
            if rate is not None and clock() >= give_up:
                now = clock()
                while due < window_end:  # never sent: counted with their wait so far
                    if due >= window_start:
                        latencies.append(now - due)
                        counts["unanswered"] += 1
                    check += 1
                    due = start + (check * registers + index) / rate
                return
            check += 1
            frame = maker.frame(check)
            if rate is not None and due > clock():
                await asyncio.sleep(due - clock())
            began = clock()
            writer.write(frame)
            got: list[Any] = []
            while not got:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionError("the gateway closed the connection")
                got = decoder.feed(data)
            ended = clock()
            counts["sent"] += 1
            reply = got[0]
            kind = reply.fields[0] if isinstance(reply, Frame) else reply.reason
            if window_start <= ended < window_end:
                counts[f"in window {kind}"] += 1
            if rate is None:
                measured, origin = window_start <= ended < window_end, began
            else:
                measured = window_start <= due
                origin = due if answered > due else began  # busy at its due time: queued
                if measured and answered <= due:
                    timer_lag.append(began - due)
            answered = ended
            if measured:
                latencies.append(ended - origin)
                replies[kind] += 1
                if keep_checks and kind == "POST_OK":
                    checks.append((maker.wsid, check, origin, ended))

    cpu: dict[str, Any] = {}

    async def sample_cpu() -> None:
        # CPU time of the gateway, of this client and of other processes over the window.
        await asyncio.sleep(max(0.0, window_start - clock()))
        meter = common.CpuMeter([gateway_pid])
        await asyncio.sleep(max(0.0, window_end - clock()))
        used = meter.read()
        cpu.update(
            gateway=used.servers[gateway_pid], client=used.mine, others=max(0.0, used.others)
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
        "timer_lag": timer_lag,
        "replies": dict(replies),
        "sent": counts["sent"],
        "ok_in_window": counts["in window POST_OK"],
        "unanswered": counts["unanswered"],
        "window_s": duration_s,
        "cpu": cpu,
        "checks": checks,
    }


def load_gateway(
    gateway: common.GatewayProcess,
    plan: PostLoad,
    *,
    keep_checks: bool = False,
    timeout_s: float = 300.0,
) -> dict[str, Any]:
    """`post_load` against `gateway`, in a process of its own (see `_post_load`)."""
    load_kind = "back to back" if plan.rate is None else f"{plan.rate:,.0f} checks/s offered"
    print(
        f"gateway pid {gateway.pid} ready on {common.HOST}:{gateway.port}; {plan.registers}"
        f" registers, {load_kind}, {plan.warmup_s:.0f} s warm-up + {plan.duration_s:.0f} s"
        " measured ..."
    )
    assert gateway.gateway_pid is not None
    load: dict[str, Any] = helpers.call_in_process(
        post_load,
        gateway.port,
        gateway.gateway_pid,
        plan.registers,
        plan.warmup_s,
        plan.duration_s,
        plan.members,
        plan.rate,
        keep_checks,
        timeout_s=timeout_s + plan.warmup_s + 2 * plan.duration_s,
    )
    return load


# ---- the run ------------------------------------------------------------------------------------


def run(plan: PostLoad, floor_s: float, *, count_fsyncs: bool, timeout_s: float) -> dict[str, Any]:
    """Closed loop, or open loop at `plan.rate` checks/s offered."""
    result = common.new_result("post_throughput", **dataclasses.asdict(plan))
    db, result["db_build_s"] = common.member_db(plan.members)
    if count_fsyncs and not common.strace_available():
        print("strace not found: not counting fsyncs")
        count_fsyncs = False
    with common.run_directory(db) as directory:
        print(f"floor: sqlite3, one row per commit, WAL, synchronous=FULL, {floor_s:.0f} s ...")
        floor = fsync_floor(directory, floor_s)
        result["floor"] = floor
        trace = directory / "strace.txt" if count_fsyncs else None
        with common.GatewayProcess(directory, count_fsyncs=trace) as gateway:
            load = load_gateway(gateway, plan, timeout_s=timeout_s)
        if trace is not None:
            result["fsyncs"] = common.fsync_count(trace)
    add_figures(result, load)
    report(result)
    return result


def add_figures(result: dict[str, Any], load: dict[str, Any]) -> None:
    """What `post_load` measured, in figures, with the verdicts."""
    duration_s = result["duration_s"]
    ok = load["ok_in_window"]
    result.update(
        posts_sent=load["sent"],
        replies=load["replies"],
        post=common.summary_ms(load["latencies"]),
        checks_per_s=ok / duration_s,
        unanswered=load["unanswered"],
    )
    if load["timer_lag"]:
        result["timer_lag"] = common.summary_ms(load["timer_lag"])
    result["ratio"] = result["checks_per_s"] / result["floor"]["commits_per_s"]
    if ok:
        gateway_cpu = load["cpu"]["gateway"]
        result["cpu_per_check_us"] = {k: v / ok * 1e6 for k, v in gateway_cpu.items()}
        result["cpu_share"] = {
            "gateway loop": gateway_cpu["loop"] / duration_s,
            "gateway other threads": gateway_cpu["threads"] / duration_s,
            "client": load["cpu"]["client"] / duration_s,
            "other processes": load["cpu"]["others"] / duration_s,
        }
    result["throughput_met"] = (
        result["checks_per_s"] >= TARGET_CHECKS_PER_S and result["ratio"] >= TARGET_FLOOR_RATIO
    )
    result["p99_met"] = result["post"].get("p99", math.inf) < TARGET_P99_MS


def cpu_per_check(result: dict[str, Any]) -> float:
    per = result.get("cpu_per_check_us")
    return per["loop"] + per["threads"] if per else math.nan


def report(result: dict[str, Any]) -> None:
    floor, post, rate = result["floor"], result["post"], result["rate"]
    print()
    loop = "back to back" if rate is None else f"{rate:,.0f} checks/s offered, from the due time"
    print_quantiles = ("p50", "p90", "p99", "max")
    common.print_table(
        f"POST, durable, {result['registers']} registers at once ({loop}),"
        f" {result['members']:,} members:",
        ["", "per s", "p50 ms", "p90 ms", "p99 ms", "max ms"],
        [
            [
                "gateway checks",
                f"{result['checks_per_s']:,.0f}",
                *(f"{post.get(k, math.nan):.3f}" for k in print_quantiles),
            ],
            [
                "floor: sqlite3 commits, 1 row each",
                f"{floor['commits_per_s']:,.0f}",
                *(f"{floor['commit'][k]:.3f}" for k in print_quantiles),
            ],
        ],
    )
    print()
    if rate is None:
        print(
            f"checks/s {result['checks_per_s']:,.0f} = {result['ratio']:.2f}x floor commits/s"
            f" {floor['commits_per_s']:,.0f}; target >= {TARGET_CHECKS_PER_S:,} and"
            f" >= {TARGET_FLOOR_RATIO:.1f}x floor: {common.verdict(result['throughput_met'])}"
        )
        print(f"p99 {post['p99']:.3f} ms (the p99 target is the open loop's)")
    else:
        print(
            f"offered {rate:,.0f} checks/s, answered {result['checks_per_s']:,.0f}/s;"
            f" p99 from the due time {post.get('p99', math.nan):.3f} ms; target < "
            f"{TARGET_P99_MS:.0f} ms: {common.verdict(result['p99_met'])}"
            + (
                f"; {result['unanswered']:,} checks never sent (counted with their wait so far:"
                " the p99 is a lower bound)"
                if result["unanswered"]
                else ""
            )
        )
        lag = result.get("timer_lag")
        if lag:
            print(
                f"load generator's own timer lag (registers free at the due time, not counted):"
                f" p50 {lag['p50']:.3f} ms, p99 {lag['p99']:.3f} ms"
            )
    if "cpu_per_check_us" in result:
        per, share = result["cpu_per_check_us"], result["cpu_share"]
        print(
            f"gateway CPU per check: {per['loop'] + per['threads']:.0f} us (event loop"
            f" {per['loop']:.0f}, other threads {per['threads']:.0f}); cores busy in the window:"
            + ",".join(f" {k} {v:.2f}" for k, v in share.items())
            + common.quiet(share["other processes"])
        )
    print(f"floor CPU per commit: {floor['cpu_per_commit_us']:.0f} us")
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


def rows(result: dict[str, Any]) -> list[common.Row]:
    """The DESIGN.md section 7 rows: closed loop (throughput, CPU per POST) or open loop (p99)."""
    floor, cpu = result["floor"], cpu_per_check(result)
    if result["rate"] is not None:
        return [
            common.Row(
                f"POST open loop, {result['registers']} registers, {result['rate']:,.0f}/s"
                f" offered: p99 < {TARGET_P99_MS:g} ms",
                common.ms(result["post"].get("p99", math.nan))
                + (" (lower bound)" if result["unanswered"] else ""),
                f"commit p99 {common.ms(floor['commit']['p99'])}",
                common.times(result["post"].get("p99", math.nan), floor["commit"]["p99"]),
                common.us(cpu),
                result["p99_met"],
            )
        ]
    return [
        common.Row(
            f"POST closed loop, {result['registers']} registers: >= {TARGET_CHECKS_PER_S:,}"
            f" checks/s and >= {TARGET_FLOOR_RATIO:g}x floor",
            f"{result['checks_per_s']:,.0f}/s",
            f"{floor['commits_per_s']:,.0f} commits/s",
            common.times(result["checks_per_s"], floor["commits_per_s"]),
            common.us(cpu),
            result["throughput_met"],
        ),
        common.Row(
            f"CPU per POST < {TARGET_CPU_PER_POST_US:g} us",
            common.us(cpu),
            f"commit {common.us(floor['cpu_per_commit_us'])}",
            common.times(cpu, floor["cpu_per_commit_us"]),
            common.us(cpu),
            cpu < TARGET_CPU_PER_POST_US,
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = common.command_line(__doc__)
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--registers", type=int, default=20)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load not measured")
    parser.add_argument(
        "--rate",
        type=float,
        help=f"open loop: checks/s offered on a fixed schedule (DESIGN: {OPEN_LOOP_RATE:,.0f})",
    )
    parser.add_argument("--floor-seconds", type=float, default=3.0)
    parser.add_argument(
        "--count-fsyncs",
        action="store_true",
        help="run the gateway under strace to count its fsyncs (checks per commit)",
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds for the load process")
    args = parser.parse_args(argv)
    plan = PostLoad(args.registers, args.duration, args.warmup, args.rate, args.members)
    result = run(plan, args.floor_seconds, count_fsyncs=args.count_fsyncs, timeout_s=args.timeout)
    return common.finish(result, rows(result), args.json)


if __name__ == "__main__":
    raise SystemExit(common.entry(main))
