"""Full cache sync of 1,000,000 members from the reference server: seconds and peak RSS of the
gateway side (DESIGN.md section 7: <= 30 s, <= 200 MB).

    python -m bench.full_sync [--members 1000000]

The reference server (its own process) makes the members once into bench/.cache; the gateway's
refresher runs in a child process of its own, so its peak RSS is the refresher's alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CACHE = Path(__file__).resolve().parent / ".cache"


def child(url: str, data_dir: str) -> None:
    """Runs in its own process: one full snapshot into an empty store."""
    from gateway.config import CentralSettings
    from gateway.store.store import Store
    from sync.client import CentralClient
    from sync.refresher import Refresher

    async def run() -> dict[str, float]:
        store = await Store.open(Path(data_dir) / "gateway.db")
        try:
            async with CentralClient(
                CentralSettings(url=url, timeout_s=60), store_id="BENCH", gateway_id="bench"
            ) as client:
                refresher = Refresher(store, client)
                started = time.perf_counter()
                applied = await refresher.refresh()
                elapsed = time.perf_counter() - started
            counts = await store.counts()
        finally:
            await store.close()
        return {"applied": applied, "members": counts.members, "seconds": elapsed}

    result = asyncio.run(run())
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--child", nargs=2, metavar=("URL", "DATA_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    db = CACHE / f"central-{args.members}.db"
    made = time.perf_counter()
    server = subprocess.Popen(
        [sys.executable, "-m", "sync.central", "--port", "0", "--db", str(db),
         "--no-sample", "--synthetic-members", str(args.members)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    assert server.stdout is not None
    line = server.stdout.readline()
    if "listening on" not in line:
        server.kill()
        raise SystemExit(f"reference server did not start: {line}")
    url = line.rsplit(" ", 1)[-1].strip()
    print(f"reference server ready in {time.perf_counter() - made:.1f} s (members made or cached)")
    try:
        with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp:
            out = subprocess.run(
                [sys.executable, "-m", "bench.full_sync", "--child", url, tmp],
                capture_output=True,
                text=True,
                timeout=600,
                check=True,
            ).stdout
    finally:
        server.terminate()
        server.wait(timeout=10)
    result = json.loads(out.strip().splitlines()[-1])
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    print(
        f"full sync of {result['members']:,} members ({result['applied']:,} changes):"
        f" {result['seconds']:.1f} s   target <= 30 s"
    )
    print(f"peak RSS of the gateway side: {result['peak_rss_mb']:.0f} MB   target <= 200 MB")


if __name__ == "__main__":
    main()
