"""Run every benchmark and print one summary of the DESIGN.md section 7 targets.

python -m bench.run_all            # 1,000,000 members, 20,000 requests each; POST 10 s
python -m bench.run_all --quick    # 100,000 members, 5,000 requests each; POST 3 s (< 1 min)
python -m bench.run_all --json out.json --count-fsyncs
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/run_all.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import post_throughput, sim_latency
from bench._common import entry, print_table, verdict


def summary(latency: dict[str, Any], post: dict[str, Any]) -> None:
    rows = []
    for name in ("IDENT", "COUPON"):
        r = latency[name]
        g, f = r["gateway"], r["floor"]
        rows.append([f"{name} p99", f"{g['p99']:.3f} ms", "< 1 ms", "-", verdict(r["p99_met"])])
        rows.append(
            [
                f"{name} p50",
                f"{g['p50']:.3f} ms",
                "<= 2x floor",
                f"{r['ratio_p50']:.2f}x ({f['p50']:.3f} ms)",
                verdict(r["ratio_met"]),
            ]
        )
    rows.append(
        [
            "POST checks/s",
            f"{post['checks_per_s']:,.0f}",
            ">= 5,000",
            f"{post['ratio']:.2f}x ({post['floor']['commits_per_s']:,.0f} commits/s)",
            verdict(post["throughput_met"]),
        ]
    )
    rows.append(
        ["POST p99", f"{post['post']['p99']:.3f} ms", "< 5 ms", "-", verdict(post["p99_met"])]
    )
    print()
    print_table(
        f"Summary ({latency['members']:,} members for IDENT/COUPON, {post['registers']} registers"
        f" for POST):",
        ["", "measured", "target", "vs floor", ""],
        rows,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100,000 members, 3 s of POST load")
    parser.add_argument(
        "--count-fsyncs", action="store_true", help="count the gateway's fsyncs (strace)"
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.quick:
        members, requests, warmup, duration, floor_s = 100_000, 5_000, 500, 3.0, 2.0
    else:
        members, requests, warmup, duration, floor_s = 1_000_000, 20_000, 1_000, 10.0, 3.0
    print(f"== sim_latency: IDENT and COUPON, one register, {members:,} members ==")
    latency = sim_latency.run(members, requests, warmup)
    print()
    print(f"== post_throughput: POST, durable, 20 registers, {duration:.0f} s ==")
    post = post_throughput.run(
        10_000, 20, duration, 1.0, floor_s, count_fsyncs=args.count_fsyncs, timeout_s=300.0
    )
    summary(latency, post)
    print(f"\nall benchmarks: {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(
            json.dumps({"sim_latency": latency, "post_throughput": post}, indent=2, default=str)
            + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(entry(main))
