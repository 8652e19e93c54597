"""Run every benchmark with a target in DESIGN.md section 7, then print one summary: per target the
figure, the floor measured in the same run, the ratio, the server's CPU per request, PASS/MISS.

python -m bench.run_all            # 1,000,000 members, 20,000 requests each; POST 10 s; ...
python -m bench.run_all --quick    # 100,000 members, 5,000 requests each; POST 3 s; ...
python -m bench.run_all --json out.json --count-fsyncs
python -m bench.run_all --only drain,full_sync
python -m bench.run_all --only fleet    # the fleet simulator (bench/fleet.py): never by default
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/run_all.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common as common
from bench import fleet, full_sync, post_throughput, post_to_central, sim_latency, sync_drain


@dataclass(frozen=True)
class Sizes:
    members: int  # cached for IDENT and COUPON
    requests: int  # of each of IDENT and COUPON
    warmup: int  # IDENTs before measuring
    post_s: float  # measured seconds of each POST run
    floor_s: float  # seconds of the POST floor
    drain_events: int
    sync_members: int
    online_s: float  # measured seconds of POST_OK -> central


FULL = Sizes(1_000_000, 20_000, 1_000, 10.0, 3.0, 100_000, 1_000_000, 10.0)
QUICK = Sizes(100_000, 5_000, 500, 3.0, 2.0, 20_000, 100_000, 3.0)
REGISTERS = 20
POST_MEMBERS = 10_000
ONLINE_RATE = 100.0  # checks/s offered while timing POST_OK -> central


@dataclass(frozen=True)
class Benchmark:
    name: str
    title: str
    run: Callable[[], dict[str, Any]]
    rows: Callable[[dict[str, Any]], list[common.Row]]


def benchmarks(sizes: Sizes, count_fsyncs: bool) -> list[Benchmark]:
    """Every benchmark with a DESIGN.md section 7 target, in the order they run."""

    def post(rate: float | None) -> dict[str, Any]:
        return post_throughput.run(
            post_throughput.PostLoad(REGISTERS, sizes.post_s, 1.0, rate, POST_MEMBERS),
            sizes.floor_s,
            count_fsyncs=count_fsyncs and rate is None,
            timeout_s=300.0,
        )

    open_rate = post_throughput.OPEN_LOOP_RATE
    return [
        Benchmark(
            "sim_latency",
            f"IDENT and COUPON, one register, {sizes.members:,} members",
            lambda: sim_latency.run(sizes.members, sizes.requests, sizes.warmup),
            sim_latency.rows,
        ),
        Benchmark(
            "post_closed",
            f"POST, durable, {REGISTERS} registers, closed loop, {sizes.post_s:g} s",
            lambda: post(None),
            post_throughput.rows,
        ),
        Benchmark(
            "post_open",
            f"POST, durable, {REGISTERS} registers, open loop at {open_rate:,.0f} checks/s,"
            f" {sizes.post_s:g} s",
            lambda: post(open_rate),
            post_throughput.rows,
        ),
        Benchmark(
            "drain",
            f"a {sizes.drain_events:,}-event backlog drained to the reference central",
            lambda: sync_drain.run(sizes.drain_events),
            sync_drain.rows,
        ),
        Benchmark(
            "full_sync",
            f"a full cache sync of {sizes.sync_members:,} members from the reference central",
            lambda: full_sync.run(sizes.sync_members),
            full_sync.rows,
        ),
        Benchmark(
            "post_to_central",
            f"a check from POST_OK to central, online, {ONLINE_RATE:g} checks/s,"
            f" {sizes.online_s:g} s",
            lambda: post_to_central.run(
                post_throughput.PostLoad(REGISTERS, sizes.online_s, 2.0, ONLINE_RATE), 500
            ),
            post_to_central.rows,
        ),
    ]


def on_request(sizes: Sizes) -> list[Benchmark]:
    """Benchmarks run only when named in `--only`: the fleet takes minutes and the whole machine
    (500 stores; 50 with `--quick`)."""
    quick = sizes == QUICK
    options = fleet.options_from(fleet.command_line().parse_args(["--quick"] if quick else []))
    return [
        Benchmark(
            "fleet",
            f"{options.stores} stores into two central processes on one PostgreSQL",
            lambda: fleet.run(options),
            fleet.rows,
        )
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="smaller sizes: 100,000 members, 3 s of POST load"
    )
    parser.add_argument(
        "--count-fsyncs", action="store_true", help="count the gateway's fsyncs (strace)"
    )
    parser.add_argument("--only", help="comma-separated names of the benchmarks to run")
    parser.add_argument("--json", type=Path, help="also write the summary and every figure here")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    chosen = benchmarks(sizes, args.count_fsyncs)
    if args.only:
        names = {name.strip() for name in args.only.split(",")}
        chosen += on_request(sizes)
        unknown = names - {b.name for b in chosen}
        if unknown:
            parser.error(f"unknown benchmark {sorted(unknown)}; known: {[b.name for b in chosen]}")
        chosen = [b for b in chosen if b.name in names]
    started = time.perf_counter()
    rows: list[common.Row] = []
    results: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for index, benchmark in enumerate(chosen):
        print(("\n" if index else "") + f"== {benchmark.name}: {benchmark.title} ==", flush=True)
        try:
            results[benchmark.name] = benchmark.run()
            rows += benchmark.rows(results[benchmark.name])
        except Exception:  # one benchmark failing does not hide the others' figures
            errors[benchmark.name] = traceback.format_exc()
            print(f"{benchmark.name} FAILED:\n{errors[benchmark.name]}", file=sys.stderr)
            rows.append(common.Row(f"{benchmark.name}: {benchmark.title}", "failed (see above)"))
    elapsed = time.perf_counter() - started
    print()
    common.print_rows(
        f"Summary against DESIGN.md section 7 ({'--quick' if args.quick else 'full sizes'};"
        " floors measured in the same run):",
        rows,
    )
    print(f"\nall benchmarks: {elapsed:.0f} s")
    if args.json:
        out = {
            "quick": args.quick,
            "sizes": sizes.__dict__,
            "machine": common.machine(),
            "seconds": elapsed,
            "summary": [row.as_dict() for row in rows],
            "results": results,
            "errors": errors,
        }
        args.json.write_text(json.dumps(out, indent=2, default=str) + "\n")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(common.entry(main))
