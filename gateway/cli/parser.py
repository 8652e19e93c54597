"""The command line as store IT reads it: every command with what it does and an example.
`--config` is accepted before or after the command, the way most daemons take it."""

from __future__ import annotations

import argparse
from pathlib import Path

from gateway import __version__

PROGRAMS = ("lottery",)
CONFIG_HELP = "configuration file (default: $EDGE_GATEWAY_CONFIG or /etc/edge-gateway/gateway.toml)"


def _config_option(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # After the command the value must not be reset by the top level's default, so it is
    # only set there when given (SUPPRESS).
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        default=None if top else argparse.SUPPRESS,
        help=CONFIG_HELP,
    )


class _Commands:
    """Adds commands, each with a description and examples in the same shape."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self._group = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        self, name: str, summary: str, description: str, examples: list[str]
    ) -> argparse.ArgumentParser:
        epilog = "examples:\n" + "\n".join(f"  {example}" for example in examples)
        command = self._group.add_parser(
            name,
            help=summary,
            description=f"{summary[0].upper()}{summary[1:]}. {description}",
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _config_option(command, top=False)
        return command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-gateway",
        description="Loyalty edge gateway for POS registers: answers registers from a local store"
        " and forwards every check to the central loyalty server.",
        epilog="Every command takes --config FILE, before or after its name. Exit codes: 0 done,"
        " 1 failed, 2 bad configuration or usage. `edge-gateway COMMAND --help` explains a"
        " command with examples.",
    )
    parser.add_argument("--version", action="version", version=f"edge-gateway {__version__}")
    _config_option(parser, top=True)
    commands = _Commands(parser)
    commands.add(
        "run",
        "run the gateway until SIGTERM or SIGINT",
        "Listens for registers, answers them from the local store, forwards to central. SIGHUP"
        " reopens the log file and reads the rules file again. One gateway per data directory.",
        ["edge-gateway run", "edge-gateway run --config /etc/edge-gateway/gateway.toml"],
    )
    check = commands.add(
        "check-config",
        "print the effective configuration, secrets masked",
        "Reads the file and the EDGE_GATEWAY_* environment (and /etc/default/edge-gateway when"
        " the service reads it) and prints what the gateway would use. With --strict it also"
        " checks what `run` needs: ports free, the database writable, certificate and token"
        " files readable.",
        ["edge-gateway check-config", "edge-gateway check-config --strict"],
    )
    check.add_argument(
        "--strict", action="store_true", help="also check what `run` needs (exit 1 if not)"
    )
    importing = commands.add(
        "import",
        "import members or coupons from JSON lines",
        "Each line is one record in central's format (docs/central-api.md). Safe while the"
        " gateway runs: new records answer the next lookup. Bad lines are listed and skipped.",
        [
            "edge-gateway import members members.jsonl",
            "edge-gateway import coupons coupons.jsonl",
        ],
    )
    importing.add_argument("kind", choices=("members", "coupons"))
    importing.add_argument("file", type=Path)
    simulate = commands.add(
        "simulate",
        "act as a register against a running gateway",
        "Without --registers: one register's visit. With it: load from that many registers.",
        ["edge-gateway simulate", "edge-gateway simulate --registers 20 --duration 30"],
    )
    simulate.add_argument("--host", default=None, help="gateway address (default: sim.host)")
    simulate.add_argument("--port", type=int, default=None, help="SIM port (default: sim.port)")
    simulate.add_argument("--registers", type=int, default=0, help="load: registers at once")
    simulate.add_argument("--duration", type=float, default=10.0, help="load: seconds")
    commands.add(
        "status",
        "what the running gateway is doing",
        "Reads the admin API: central, outbox, cache, storage, clock, adapters.",
        ["edge-gateway status"],
    )
    commands.add(
        "doctor",
        "check database, files, disk, clock, ports and central",
        "Each check gives ok, warn or fail and says what to do. Exit 1 when one fails.",
        ["edge-gateway doctor", "sudo -u edge-gateway edge-gateway doctor"],
    )
    new_store = commands.add(
        "new-store",
        "set the store's database aside so that the next start makes a new, empty store",
        "Moves gateway.db, its -wal/-shm files and the store marker into a dated set-aside-*"
        " folder in the data directory (nothing is deleted). Use it only when no backup can be"
        " restored: the new store starts with no members and no unsent checks.",
        ["edge-gateway new-store", "edge-gateway new-store --yes"],
    )
    new_store.add_argument("--yes", action="store_true", help="do it (without it: say what)")
    backup = commands.add(
        "backup",
        "copy the database safely, even while the gateway runs",
        "SQLite's online backup, then an integrity check of the copy. The file must not exist.",
        ["edge-gateway backup /var/backups/edge-gateway/gateway-$(date +%F).db"],
    )
    backup.add_argument("path", type=Path)
    dead = commands.add(
        "dead-letters",
        "events central rejected",
        "`list` shows them with central's reason; `retry` puts them back in the outbox with the"
        " same event ids (central de-duplicates, so nothing counts twice).",
        ["edge-gateway dead-letters list", "edge-gateway dead-letters retry 01JD6X..."],
    )
    dead.add_argument("action", choices=("list", "retry"))
    dead.add_argument("event_ids", nargs="*", help="retry only these (default: all)")
    drain = commands.add(
        "drain",
        "wait until every event reached central",
        "Before maintenance on central or the line. Exit 1 if the timeout passes first.",
        ["edge-gateway drain", "edge-gateway drain --timeout 120"],
    )
    drain.add_argument("--timeout", type=float, default=600.0, help="seconds (default 600)")
    sync = commands.add(
        "sync",
        "fetch central's changes into the cache now",
        "--full starts over from a full snapshot; records the snapshot does not bring are"
        " removed, at most central.max_removal_share of the cache unless --allow-mass-removal.",
        ["edge-gateway sync", "edge-gateway sync --full"],
    )
    sync.add_argument("--full", action="store_true", help="start over from a full snapshot")
    sync.add_argument(
        "--allow-mass-removal",
        action="store_true",
        help="with --full: remove what the snapshot did not bring even when that is more than"
        " central.max_removal_share of the cache",
    )
    catalog = commands.add(
        "catalog",
        "the POS menu sent to central",
        "`show` prints what would be sent; `push` sends it (only when it changed, unless --force).",
        ["edge-gateway catalog show", "edge-gateway catalog push --force"],
    )
    catalog.add_argument("action", choices=("push", "show"))
    catalog.add_argument("--force", action="store_true", help="send even if unchanged")
    catalog.add_argument("--file", type=Path, help="the export (default: catalog.export_file)")
    commands.add(
        "reference-server",
        "run the reference central server (demo, tests)",
        "Takes the reference server's own options; `edge-gateway reference-server --help` lists"
        " them.",
        ["edge-gateway reference-server --port 8080"],
    )
    for verb in ("pause", "resume"):
        switch = commands.add(
            verb,
            f"{verb} a program at every register at once",
            "Goes through the running gateway (its log and dashboard name who), or straight to"
            " the store when it does not run. The switch survives restarts.",
            [f"edge-gateway {verb} lottery", f"edge-gateway {verb} lottery --by 'store manager'"],
        )
        switch.add_argument("program", choices=PROGRAMS)
        switch.add_argument(
            "--by", default=None, help="who is switching (default: the user running this)"
        )
    return parser
