"""`edge-gateway`: run the daemon and the store IT commands (check-config, import, simulate,
pause, resume). Exit codes: 0 done, 1 failed, 2 bad configuration or usage."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import NoReturn

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from gateway import __version__
from gateway.config import ConfigError, Settings, load_settings, render_effective
from gateway.logging import configure_logging
from gateway.store.importer import Kind

PROGRAMS = ("lottery",)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-gateway", description="Loyalty edge gateway for POS registers."
    )
    parser.add_argument("--version", action="version", version=f"edge-gateway {__version__}")
    parser.add_argument(
        "--config",
        type=Path,
        help="configuration file (default: $EDGE_GATEWAY_CONFIG or /etc/edge-gateway/gateway.toml)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("run", help="run the gateway until SIGTERM/SIGINT")
    commands.add_parser("check-config", help="print the effective configuration, secrets masked")
    importing = commands.add_parser("import", help="import members or coupons from JSON lines")
    importing.add_argument("kind", choices=("members", "coupons"))
    importing.add_argument("file", type=Path)
    simulate = commands.add_parser("simulate", help="act as a register against a running gateway")
    simulate.add_argument("--host", default=None, help="gateway address (default: sim.host)")
    simulate.add_argument("--port", type=int, default=None, help="SIM port (default: sim.port)")
    simulate.add_argument("--registers", type=int, default=0, help="load: registers at once")
    simulate.add_argument("--duration", type=float, default=10.0, help="load: seconds")
    for verb in ("pause", "resume"):
        switch = commands.add_parser(verb, help=f"{verb} a program at every register at once")
        switch.add_argument("program", choices=PROGRAMS)
        switch.add_argument("--by", default="cli", help="who is switching (kept with the switch)")
    return parser


def _fail(message: str, code: int = 2) -> NoReturn:
    # markup=False: messages quote the operator's values, which may contain [brackets].
    Console(stderr=True).print(f"edge-gateway: {message}", markup=False, highlight=False)
    raise SystemExit(code)


def _settings(path: Path | None) -> Settings:
    try:
        return load_settings(path)
    except ConfigError as error:
        _fail(f"configuration error\n{error}")


async def _import(settings: Settings, kind: Kind, file: Path, size: int) -> int:
    from gateway.store.importer import import_file
    from gateway.store.store import Store

    console = Console(stderr=True)
    store = await Store.open(settings.database_path, max_db_mb=settings.storage.max_db_mb)
    try:
        with Progress(
            TextColumn(f"importing {kind}"),
            BarColumn(),
            DownloadColumn(),
            TimeRemainingColumn(),
            console=console,
        ) as bar:
            task = bar.add_task(kind, total=size)
            report = await import_file(
                store,
                kind,
                file,
                lambda n: bar.advance(task, n),
            )
            bar.update(task, completed=size)
    finally:
        await store.close()
    for number, reason in report.bad_lines[:50]:
        console.print(f"[yellow]line {number}[/]: {reason}", highlight=False)
    if len(report.bad_lines) > 50:
        console.print(f"... and {len(report.bad_lines) - 50} more bad lines")
    console.print(
        f"imported {report.imported} {kind}; skipped {len(report.bad_lines)} bad lines",
        highlight=False,
    )
    return 1 if report.bad_lines else 0


async def _switch(settings: Settings, program: str, paused: bool, by: str) -> int:
    from gateway.store.store import Store

    store = await Store.open(settings.database_path, max_db_mb=settings.storage.max_db_mb)
    try:
        await store.set_program_paused(program, paused, by=by)
    finally:
        await store.close()
    Console().print(f"{program}: {'paused' if paused else 'running'}")
    return 0


async def _simulate(settings: Settings, args: argparse.Namespace) -> int:
    from pos_adapters.sim.simulate import run_load, run_scenario

    host = args.host or settings.sim.host
    port = args.port or settings.sim.port
    console = Console()
    try:
        if args.registers > 0:
            report = await run_load(
                host, port, console, registers=args.registers, duration_s=args.duration
            )
            return 1 if report.errors else 0
        return await run_scenario(host, port, console)
    except OSError as error:
        _fail(f"cannot reach the gateway at {host}:{port}: {error}", 1)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        settings = _settings(args.config)
        sys.stdout.write(render_effective(settings))
        return 0
    settings = _settings(args.config)
    configure_logging(settings.log.level, settings.log.format)
    if args.command == "run":
        from gateway.daemon import main as run_daemon

        return run_daemon(settings)
    if args.command == "import":
        if not args.file.is_file():
            _fail(f"no such file: {args.file}", 1)
        return asyncio.run(_import(settings, args.kind, args.file, args.file.stat().st_size))
    if args.command in ("pause", "resume"):
        return asyncio.run(_switch(settings, args.program, args.command == "pause", args.by))
    if args.command == "simulate":
        return asyncio.run(_simulate(settings, args))
    _fail(f"unknown command {args.command}")


if __name__ == "__main__":
    raise SystemExit(main())
