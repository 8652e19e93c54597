"""The reference central's command line (`python -m sync.central`, `edge-gateway reference-server`).

    python -m sync.central --port 8080 --token-file token.txt
    python -m sync.central --port 8081 --db postgresql://central@db.example/central

The first stdout line is always `reference-server listening on URL`; SIGINT or SIGTERM stops it
cleanly (exit 0).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path

from sync.central.app import is_loopback
from sync.central.config import SAMPLE_DIR, ReferenceConfig
from sync.central.server import ReferenceServer

_POSTGRES = ("postgresql://", "postgres://")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sync.central",
        description="Run the reference central server (DESIGN.md section 3) with fault injection.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="public address (default loopback)")
    parser.add_argument("--port", type=int, default=8080, help="public port (0: any free port)")
    parser.add_argument(
        "--db",
        help="a SQLite file, or a PostgreSQL URL (postgresql://...) that several central "
        "processes may share (default: a temporary SQLite database)",
    )
    parser.add_argument(
        "--db-workers",
        type=int,
        default=4,
        metavar="N",
        help="PostgreSQL connections per process (default 4)",
    )
    parser.add_argument(
        "--token-file", type=Path, help="bearer token to require (default: no token check)"
    )
    parser.add_argument(
        "--members", type=Path, help="members to seed, JSON lines (default: gateway/sample)"
    )
    parser.add_argument(
        "--coupons", type=Path, help="coupons to seed, JSON lines (default: gateway/sample)"
    )
    parser.add_argument("--rules", type=Path, help="a rules document (JSON) to publish")
    parser.add_argument(
        "--no-sample", action="store_true", help="seed no sample members or coupons by default"
    )
    parser.add_argument(
        "--synthetic-members", type=int, default=0, metavar="N", help="make N members SYN0000001.."
    )
    parser.add_argument(
        "--snapshot-every",
        type=float,
        default=0.0,
        metavar="S",
        help="build a snapshot at start, then every S seconds when records changed "
        "(default 0: only on POST /_admin/snapshot)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault dice")
    parser.add_argument(
        "--admin-token-file",
        type=Path,
        help="a token every /_admin/ request must carry (default: loopback clients need none)",
    )
    parser.add_argument(
        "--admin-host-name",
        action="append",
        default=[],
        metavar="NAME",
        help="a Host name the admin API answers for besides localhost and IP addresses "
        "(a reverse proxy's name on this host); repeatable",
    )
    parser.add_argument(
        "--offline-after",
        type=float,
        default=180.0,
        metavar="S",
        help="the fleet view calls a store OFFLINE after S seconds without a heartbeat "
        "(default 180: three of the gateway's default 60 s intervals)",
    )
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    token = None
    if args.token_file is not None:
        token = args.token_file.read_text(encoding="utf-8").strip()
        if not token:
            raise SystemExit(f"{args.token_file} is empty")
    elif not is_loopback(args.host):
        print("warning: no --token-file: any client is accepted", file=sys.stderr)
    admin_token = None
    if args.admin_token_file is not None:
        admin_token = args.admin_token_file.read_text(encoding="utf-8").strip()
        if not admin_token:
            raise SystemExit(f"{args.admin_token_file} is empty")
    if args.offline_after <= 0:
        raise SystemExit("--offline-after must be a positive number of seconds")
    database_url = args.db if args.db and args.db.startswith(_POSTGRES) else None
    config = ReferenceConfig(
        db_path=Path(args.db) if args.db and database_url is None else None,
        database_url=database_url,
        db_workers=args.db_workers,
        token=token,
        members_file=args.members or (None if args.no_sample else SAMPLE_DIR / "members.jsonl"),
        coupons_file=args.coupons or (None if args.no_sample else SAMPLE_DIR / "coupons.jsonl"),
        rules_file=args.rules,
        synthetic_members=args.synthetic_members,
        snapshot_every_s=args.snapshot_every,
        seed=args.seed,
        admin_token=admin_token,
        admin_host_names=tuple(args.admin_host_name),
        fleet_offline_after_s=args.offline_after,
    )
    server = ReferenceServer(config, host=args.host, port=args.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await server.start()
    try:
        print(f"reference-server listening on {server.url}", flush=True)
        print(f"reference-server admin on {server.admin_url}/_admin/", flush=True)
        print(f"reference-server storage {server.central.storage.kind}", flush=True)
        await stop.wait()
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status (0 after SIGINT or SIGTERM)."""
    args = _parse_args(argv)
    try:
        asyncio.run(_serve(args))
    except (OSError, ValueError) as exc:
        print(f"reference-server: {exc}", file=sys.stderr)
        return 1
    return 0
