"""Full cache sync of 1,000,000 members from the reference central: seconds and peak RSS of the
gateway side (DESIGN.md section 7: <= 30 s, RSS <= 200 MB).

    python -m bench.full_sync [--members 1000000] [--json FILE]

The reference central (its own process) makes the members once into bench/.cache; the gateway's
refresher runs in a helper process of its own, so its peak RSS is the refresher's alone. With
fewer members than 1,000,000 the time target is scaled down in proportion.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/full_sync.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common as common
from bench import _helpers as helpers

TARGET_MEMBERS = 1_000_000
TARGET_S = 30.0  # for TARGET_MEMBERS
TARGET_RSS_MB = 200.0


def refresh(url: str, data_dir: str) -> dict[str, float]:
    """Runs in its own process: one full snapshot into an empty store."""
    from gateway.config import CentralSettings
    from gateway.store.store import Store
    from sync.client import CentralClient
    from sync.refresher import Refresher

    async def run() -> dict[str, float]:
        store = await Store.open(Path(data_dir) / "gateway.db")
        try:
            async with CentralClient(
                CentralSettings(url=url, timeout_s=60), store_id=common.STORE_ID, gateway_id="bench"
            ) as client:
                refresher = Refresher(store, client)
                started, cpu = time.perf_counter(), time.process_time()
                applied = await refresher.refresh()
                elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
            counts = await store.counts()
        finally:
            await store.close()
        return {"applied": applied, "members": counts.members, "seconds": elapsed, "cpu_s": cpu}

    result = asyncio.run(run())
    result["peak_rss_mb"] = common.peak_rss_mb()
    return result


def run(members: int) -> dict[str, Any]:
    result = common.new_result("full_sync", requested=members, target_s=TARGET_S * members / 1e6)
    common.CACHE.mkdir(parents=True, exist_ok=True)
    made = time.perf_counter()
    with helpers.reference_central(
        common.CACHE / f"central-{members}.db", synthetic_members=members
    ) as central:
        url, pid = central.ready
        print(
            f"reference server ready in {time.perf_counter() - made:.1f} s (members made or cached)"
        )
        with common.run_directory() as directory:
            meter = common.CpuMeter([pid])
            timeout_s = 600 * max(1, members // TARGET_MEMBERS)
            synced = helpers.call_in_process(refresh, url, str(directory), timeout_s=timeout_s)
            result.update(synced)
            used = meter.read()
    result["cpu_per_member_us"] = result["cpu_s"] / max(1, result["members"]) * 1e6
    result["central_cpu_per_member_us"] = (
        sum(used.servers[pid].values()) / max(1, result["members"]) * 1e6
    )
    result["time_met"] = result["seconds"] <= result["target_s"] and result["members"] == members
    result["rss_met"] = result["peak_rss_mb"] <= TARGET_RSS_MB
    report(result)
    return result


def report(result: dict[str, Any]) -> None:
    scaled = "" if result["members"] == TARGET_MEMBERS else " (30 s scaled to these members)"
    print(
        f"full sync of {result['members']:,} members ({result['applied']:,} changes):"
        f" {result['seconds']:.1f} s   target <= {result['target_s']:.0f} s{scaled}"
    )
    print(
        f"peak RSS of the gateway side: {result['peak_rss_mb']:.0f} MB   target <="
        f" {TARGET_RSS_MB:.0f} MB"
    )
    print(
        f"CPU per member: gateway side {result['cpu_per_member_us']:.0f} us, central"
        f" {result['central_cpu_per_member_us']:.0f} us"
    )


def rows(result: dict[str, Any]) -> list[common.Row]:
    """The DESIGN.md section 7 rows: the time and the memory of a full sync."""
    members = f"{result['members']:,}"
    cpu = f"{common.us(result['cpu_per_member_us'])} per member"
    return [
        common.Row(
            f"full sync of {members} members <= {result['target_s']:g} s",
            f"{result['seconds']:.1f} s",
            cpu=cpu,
            met=result["time_met"],
        ),
        common.Row(
            f"full sync of {members} members: RSS <= {TARGET_RSS_MB:g} MB",
            f"{result['peak_rss_mb']:.0f} MB",
            cpu=cpu,
            met=result["rss_met"],
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = common.command_line(__doc__)
    parser.add_argument("--members", type=int, default=TARGET_MEMBERS)
    args = parser.parse_args(argv)
    result = run(args.members)
    return common.finish(result, rows(result), args.json)


if __name__ == "__main__":
    raise SystemExit(common.entry(main))
