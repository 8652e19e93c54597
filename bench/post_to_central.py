"""A check, from POST_OK to central, online: the time from the gateway's POST_OK to the reference
central having stored the check's event (DESIGN.md section 7: p50 < 50 ms, p99 < 250 ms), next to
a floor measured in the same run: one event posted straight to the same central, one request
each, timed from just before the send to central having stored it.

Processes: the reference central (`sync.central` with its fault proxy in front, no faults, no
sample data) noting when it has stored each check.posted event; the gateway (`edge-gateway run`
with `central.url` set: its forwarder sends the outbox as checks commit, in batches); the load
generator (20 registers, open loop at --rate checks/s, anonymous checks, `bench.post_throughput`).
The POST_OK times and central's notes are read on one clock (CLOCK_MONOTONIC, machine-wide).

    python -m bench.post_to_central                # 100 checks/s for 10 s after 2 s of warm-up
    python -m bench.post_to_central --rate 500 --duration 5
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/post_to_central.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common as common
from bench import _helpers as helpers
from bench import post_throughput, sync_drain

TARGET_P50_MS = 50.0
TARGET_P99_MS = 250.0
ARRIVAL_WAIT_S = 30.0  # after the load, how long the last events may take to reach central


def floor(central: helpers.Helper, requests: int) -> tuple[list[float], float]:
    """One check.posted event per request, posted straight to central, each timed from just
    before the send to central's note that it stored it; and central's CPU per request."""
    import httpx

    url, pid = central.ready
    backlog = sync_drain.events(requests + 20, "FLOOR")
    sent: dict[tuple[int, int], float] = {}
    with httpx.Client(base_url=url, headers={"X-Gateway-Id": "floor"}) as http:
        for event in backlog[:20]:  # warm-up: connection, code paths
            response = http.post("/v1/stores/FLOOR/events", json=sync_drain.batch_body([event]))
            response.raise_for_status()
        central.ask(None)
        meter = common.CpuMeter([pid])
        for event in backlog[20:]:
            body = sync_drain.batch_body([event])
            sent[(event.payload["wsid"], event.payload["check"])] = time.perf_counter()
            http.post("/v1/stores/FLOOR/events", json=body).raise_for_status()
        central_cpu = sum(meter.read().servers[pid].values())
    stored = {(wsid, check): at for wsid, check, at in central.ask(None)}
    return [stored[key] - sent[key] for key in sent], central_cpu / requests * 1e6


def arrivals(central: helpers.Helper, wanted: set[tuple[int, int]]) -> dict[tuple[int, int], float]:
    """Central's notes for the `wanted` checks, waiting up to ARRIVAL_WAIT_S for the last ones."""
    found: dict[tuple[int, int], float] = {}
    deadline = time.perf_counter() + ARRIVAL_WAIT_S
    while True:
        for wsid, check, at in central.ask(None):
            found.setdefault((wsid, check), at)
        if wanted <= found.keys() or time.perf_counter() > deadline:
            return found
        time.sleep(0.1)


def run(plan: post_throughput.PostLoad, floor_requests: int) -> dict[str, Any]:
    result = common.new_result("post_to_central", **dataclasses.asdict(plan))
    with (
        common.run_directory() as directory,
        helpers.reference_central(directory / "central.db", record=True) as central,
    ):
        url, central_pid = central.ready
        print(f"reference central pid {central_pid} on {url}")
        print(f"floor: {floor_requests:,} events posted straight to central, one per request ...")
        floor_latencies, result["floor_central_cpu_us"] = floor(central, floor_requests)
        result["floor"] = common.summary_ms(floor_latencies)
        settings = {"EDGE_GATEWAY_CENTRAL__URL": url, "EDGE_GATEWAY_GATEWAY_ID": "bench"}
        print(f"gateway forwarding to {url}")
        with common.GatewayProcess(directory, env=settings) as gateway:
            # Each POST_OK's time is kept.
            load = post_throughput.load_gateway(gateway, plan, keep_checks=True)
            ok_at = {(wsid, check): ok for wsid, check, _, ok in load["checks"]}
            stored = arrivals(central, set(ok_at))
    now = time.perf_counter()
    latencies = [stored.get(key, now) - ok for key, ok in ok_at.items()]
    result["missing"] = len(ok_at.keys() - stored.keys())
    result["latency"] = common.summary_ms(latencies)
    result["post"] = common.summary_ms(load["latencies"])
    result["replies"] = load["replies"]
    ok = load["ok_in_window"]
    cpu = load["cpu"]
    result["gateway_cpu_us"] = sum(cpu["gateway"].values()) / ok * 1e6 if ok else math.nan
    result["others_cores"] = cpu["others"] / plan.duration_s
    lat = result["latency"]
    result["p50_met"] = lat.get("p50", math.inf) < TARGET_P50_MS and not result["missing"]
    result["p99_met"] = lat.get("p99", math.inf) < TARGET_P99_MS and not result["missing"]
    report(result)
    return result


def report(result: dict[str, Any]) -> None:
    lat, fl, post = result["latency"], result["floor"], result["post"]
    quantiles = ("p50", "p90", "p99", "max")
    print()
    common.print_table(
        f"A check, from POST_OK to stored at central, {result['rate']:,.0f} checks/s offered:",
        ["", "n", "p50 ms", "p90 ms", "p99 ms", "max ms"],
        [
            [
                "gateway: POST_OK -> central",
                f"{lat['count']:,}",
                *(f"{lat.get(k, math.nan):.3f}" for k in quantiles),
            ],
            [
                "floor: one event straight to central",
                f"{fl['count']:,}",
                *(f"{fl.get(k, math.nan):.3f}" for k in quantiles),
            ],
            [
                "(the POSTs themselves, from the due time)",
                f"{post['count']:,}",
                *(f"{post.get(k, math.nan):.3f}" for k in quantiles),
            ],
        ],
    )
    print()
    print(
        f"p50 {lat.get('p50', math.nan):.3f} ms (target < {TARGET_P50_MS:g} ms), p99"
        f" {lat.get('p99', math.nan):.3f} ms (target < {TARGET_P99_MS:g} ms)"
        + (
            f"; {result['missing']:,} checks NOT AT CENTRAL after {ARRIVAL_WAIT_S:.0f} s"
            if result["missing"]
            else "; every check answered POST_OK reached central"
        )
    )
    print(
        f"gateway CPU per check (POST and forwarding): {result['gateway_cpu_us']:.0f} us;"
        f" central per event on the floor: {result['floor_central_cpu_us']:.0f} us;"
        f" other processes {result['others_cores']:.2f} cores"
        + common.quiet(result["others_cores"])
    )
    print(f"replies in the window: {result['replies']}")


def rows(result: dict[str, Any]) -> list[common.Row]:
    """The DESIGN.md section 7 rows: p50 and p99 from POST_OK to central."""
    lat, fl, cpu = result["latency"], result["floor"], common.us(result["gateway_cpu_us"])
    return [
        common.Row(
            f"a check, POST_OK -> central, online ({result['rate']:,.0f}/s): {q} < {target:g} ms",
            common.ms(lat.get(q, math.nan)),
            f"direct {q} {common.ms(fl.get(q, math.nan))}",
            common.times(lat.get(q, math.nan), fl.get(q, math.nan)),
            cpu,
            result[f"{q}_met"],
        )
        for q, target in (("p50", TARGET_P50_MS), ("p99", TARGET_P99_MS))
    ]


def main(argv: list[str] | None = None) -> int:
    parser = common.command_line(__doc__)
    parser.add_argument("--rate", type=float, default=100.0, help="checks/s offered")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load not measured")
    parser.add_argument("--registers", type=int, default=20)
    parser.add_argument("--floor-requests", type=int, default=500)
    args = parser.parse_args(argv)
    plan = post_throughput.PostLoad(args.registers, args.duration, args.warmup, args.rate)
    result = run(plan, args.floor_requests)
    return common.finish(result, rows(result), args.json)


if __name__ == "__main__":
    raise SystemExit(common.entry(main))
