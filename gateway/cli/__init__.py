"""`edge-gateway`: run the daemon and the store IT commands (check-config, import, simulate,
pause, resume). Exit codes: 0 done, 1 failed, 2 bad configuration or usage."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from gateway.cli.parser import build_parser
from gateway.config import ConfigError, Settings, load_settings, render_effective
from gateway.logging import configure_logging
from gateway.store.datadir import (
    AlreadyRunning,
    DataDirLock,
    DataDirProblem,
    give_to_data_dir_owner,
    set_aside,
)
from gateway.store.importer import Kind

if TYPE_CHECKING:
    from gateway.doctor import Finding
    from sync.client import CentralClient

# The man page generator (packaging/debian) reads the parser through this name.
_parser = build_parser


def _console(*, stderr: bool = False) -> Console:
    """Rich output that is not hard-wrapped when it goes to a file or a pipe (logs, scripts)."""
    console = Console(stderr=stderr)
    if not console.is_terminal:
        console = Console(stderr=stderr, width=1000, soft_wrap=True)
    return console


def _fail(message: str, code: int = 2) -> NoReturn:
    # markup=False: messages quote the operator's values, which may contain [brackets].
    _console(stderr=True).print(
        f"edge-gateway: {message}", markup=False, highlight=False, soft_wrap=True
    )
    raise SystemExit(code)


def _why_unopened(settings: Settings, error: sqlite3.Error) -> str:
    """SQLite says "unable to open database file" without the file or the reason: ask the
    operating system for both."""
    try:
        with settings.database_path.open("rb"):
            pass
    except OSError as os_error:
        return _os_reason(os_error)
    return str(error)


def _os_reason(error: OSError) -> str:
    """`FILE: reason` as the operating system says it, for any command's error."""
    where = error.filename if error.filename is not None else ""
    reason = error.strerror or str(error)
    return f"{where}: {reason}" if where else reason


def _settings(path: Path | None) -> Settings:
    try:
        return load_settings(path)
    except ConfigError as error:
        _fail(f"configuration error\n{error}")


async def _import(settings: Settings, kind: Kind, file: Path, size: int) -> int:
    from gateway.store.importer import import_file
    from gateway.store.store import Store

    console = _console(stderr=True)
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
    """Through the running gateway, so that its log and dashboard say who switched; straight
    into the store when it does not run (it reads the switch at start)."""
    from gateway.store.store import Store

    action = "pause" if paused else "resume"
    answer = _admin_call(settings, "POST", f"/programs/{program}/{action}", {"by": by})
    if answer is None:
        store = await Store.open(settings.database_path, max_db_mb=settings.storage.max_db_mb)
        try:
            await store.set_program_paused(program, paused, by=by)
        finally:
            await store.close()
        where = "in the store (the gateway is not running; it reads the switch at start)"
    else:
        where = "by the running gateway"
    _console().print(f"{program}: {'paused' if paused else 'running'} ({where}, by {by})")
    return 0


def _invoking_user() -> str:
    """Who runs this command: the user behind sudo when there is one."""
    import getpass

    sudo_user = os.environ.get("SUDO_USER")
    if sudo_user:
        return sudo_user
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "cli"


def _status(settings: Settings) -> int:
    from rich.table import Table

    status = _admin_get(settings, "/status")
    if status is None:
        admin = settings.admin
        _fail(f"the gateway's admin API at {admin.host}:{admin.port} did not answer", 1)
    table = Table(title=f"edge-gateway {status['version']} — store {status['store_id']}")
    table.add_column("what")
    table.add_column("now", overflow="fold")
    outbox = status["outbox"]
    rows = [
        ("central", f"{status['central']['state']} {status['central'].get('url') or ''}"),
        ("outbox", f"{outbox['depth']} events, oldest {outbox['oldest_age_s'] or 0:.0f} s"),
        ("dead letters", str(status["dead_letters"])),
        ("offline coupon conflicts", str(status["offline_conflicts"])),
        (
            "cache",
            f"{status['cache']['members']} members, {status['cache']['coupons']} coupons,"
            f" rules {status['cache']['rules_version'] or '-'}",
        ),
        ("checks posted", str(status["checks"]["posted"])),
        ("lottery", status["programs"]["lottery"]["state"]),
        (
            "storage",
            ("FULL " if status["storage_full"] else "ok ") + f"({status['disk_free_mb']} MB free)",
        ),
        ("database files", status.get("database_problem") or "writable"),
        ("clock", _clock_line(status.get("clock_skew"))),
        ("uptime", f"{status['uptime_s']:.0f} s"),
    ]
    rows += [
        (f"adapter {name}", f"{a['state']}, {a['connections']} connections")
        for name, a in status["adapters"].items()
    ]
    for what, now in rows:
        table.add_row(what, now)
    _console().print(table)
    return 0


def _clock_line(skew: dict[str, Any] | None) -> str:
    if not skew:
        return "ok"
    return (
        f"BEHIND THE REGISTERS? they send business date {skew['register_business_date']},"
        f" this gateway says {skew['gateway_date']} ({skew['refused_checks']} checks refused):"
        " check the time sync (NTP)"
    )


def _admin_get(settings: Settings, path: str) -> dict[str, Any] | None:
    """The running gateway's admin API, or None when it does not answer."""
    return _admin_call(settings, "GET", path)


def _admin_call(
    settings: Settings, method: str, path: str, body: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """A request to the running gateway's admin API: None when nothing answers there; an answer
    other than success fails the command with what the gateway said."""
    import httpx

    admin = settings.admin
    host = "127.0.0.1" if admin.host in ("0.0.0.0", "::", "") else admin.host
    base = f"http://{'[' + host + ']' if ':' in host else host}:{admin.port}"
    headers = {"Origin": base}  # same-origin: what a state-changing route asks without a token
    if admin.token_file is not None:
        headers["Authorization"] = f"Bearer {admin.token_file.read_text().strip()}"
    try:
        response = httpx.request(method, base + path, headers=headers, json=body, timeout=5)
    except httpx.HTTPError:
        return None
    if response.status_code >= 400:
        if method == "GET":
            return None
        _fail(f"the gateway refused {method} {path}: {response.status_code} {response.text}", 1)
    result: dict[str, Any] = response.json()
    return result


def _validate(settings: Settings) -> int:
    """`check-config --strict`: what `run` needs, without running it."""
    from gateway.doctor import run_findings

    running = _admin_get(settings, "/status")
    findings = run_findings(settings, sim_ours=running is not None, admin_ours=running is not None)
    _print_findings("edge-gateway check-config --strict", findings)
    return 1 if any(f.verdict == "fail" for f in findings) else 0


def _print_findings(title: str, findings: Sequence[Finding]) -> None:
    from rich.table import Table

    table = Table(title=title)
    for column in ("check", "verdict", "detail"):
        table.add_column(column, overflow="fold")
    colours = {"ok": "green", "warn": "yellow", "fail": "red"}
    for f in findings:
        table.add_row(f.check, f"[{colours[f.verdict]}]{f.verdict}[/]", escape(f.detail))
    _console().print(table)


async def _doctor(settings: Settings) -> int:
    import datetime as dt

    from gateway.doctor import Finding, check_clock, local_findings
    from sync.client import CentralRefused, CentralUnavailable, token_file_problem

    running = _admin_get(settings, "/status")
    findings = local_findings(
        settings,
        sim_ours=running is not None and "sim_tcp" in running.get("adapters", {}),
        admin_ours=running is not None,
    )
    central_date = None
    cs = settings.central
    if cs.url:
        problem = token_file_problem(cs.token_file) if cs.token_file is not None else None
        if problem is not None:
            findings.append(Finding("token file", "warn", str(problem)))
        central: CentralClient | None = None
        try:
            central = _central(settings)
        except (OSError, ValueError) as error:  # a missing file, a bad certificate or key
            files = {
                "token_file": cs.token_file,
                "ca_file": cs.ca_file,
                "client_cert": cs.client_cert,
                "client_key": cs.client_key,
            }
            missing = [
                f"central.{key} {path} does not exist"
                for key, path in files.items()
                if path is not None and not path.is_file()
            ]
            reason = "; ".join(missing) or f"cannot use central's TLS or token settings: {error}"
            findings.append(Finding("central", "fail", reason))
        if central is not None:
            # Central's clock comes from its own answers, over the same verified TLS as sync.
            try:
                async with central:
                    try:
                        page = await central.changes("", 1)  # a read: proves auth and TLS
                    finally:
                        central_date = central.central_date  # a refusal still tells the time
                answered = f"{cs.url} answered ({len(page.changes)})"
                findings.append(Finding("central", "ok", answered))
            except CentralRefused as refused:
                refusal = f"central refused us: {refused}; check token, store id"
                findings.append(Finding("central", "fail", refusal))
            except CentralUnavailable as error:
                text = str(error)
                untrusted = (
                    f"TLS certificate of {cs.url} is not trusted ({text}); check central.ca_file"
                )
                if "CERTIFICATE_VERIFY_FAILED" in text:
                    detail = untrusted
                elif "alert" in text.lower() and "certificate" in text.lower():
                    detail = (
                        f"central refused this gateway's TLS client certificate ({text});"
                        " check central.client_cert and central.client_key"
                    )
                elif "certificate" in text.lower():
                    detail = untrusted
                else:
                    detail = f"central unreachable at {cs.url}: {text}"
                    # TLS 1.3 servers refuse a missing client certificate by hanging up.
                    if "disconnected" in text and cs.client_cert is None and "https" in cs.url:
                        detail += "; if central requires a client certificate, set"
                        detail += " central.client_cert and central.client_key"
                findings.append(Finding("central", "fail", detail))
    else:
        findings.append(Finding("central", "ok", "standalone (no central.url)"))
    findings.append(
        check_clock(settings, central_date.astimezone(dt.UTC) if central_date else None)
    )
    skew = running.get("clock_skew") if running else None
    if skew:  # the registers' business dates say this clock is behind theirs
        findings.append(Finding("registers' dates", "fail", _clock_line(skew)))
    _print_findings("edge-gateway doctor", findings)
    return 1 if any(f.verdict == "fail" for f in findings) else 0


async def _dead_letters(settings: Settings, action: str, event_ids: list[str]) -> int:
    from gateway.store.store import Store

    store = await Store.open(settings.database_path, max_db_mb=settings.storage.max_db_mb)
    console = _console()
    try:
        if action == "list":
            letters = await store.dead_letters()
            for letter in letters:
                console.print(
                    f"{letter['event_id']}  {letter['type']:<18} {letter['failed_at']}"
                    f"  {letter['reason']}",
                    markup=False,
                )
            console.print(f"{len(letters)} dead letters")
        else:
            moved = await store.retry_dead_letters(event_ids or None)
            console.print(f"{moved} events back in the outbox; the gateway sends them next")
    finally:
        await store.close()
    return 0


async def _drain(settings: Settings, within_s: float) -> int:
    """Wait until central has every event, up to `within_s`: sending them when no gateway runs,
    watching the running one's outbox otherwise. When time is up with events still waiting, say
    how many and central's last error, and exit 1."""
    import time

    from gateway.store.store import Store

    console = _console(stderr=True)
    store = await Store.open(settings.database_path, max_db_mb=settings.storage.max_db_mb)
    central: CentralClient | None = None
    stopped: str | None = None
    try:
        depth, _ = await store.outbox_depth()
        running = _admin_get(settings, "/healthz") is not None
        forwarding: asyncio.Task[None] | None = None
        if not running and depth:
            from sync.forwarder import Forwarder

            central = _central(settings)
            forwarder = Forwarder(
                store,
                central,
                batch_size=settings.central.batch_size,
                backoff_ceiling_s=settings.central.backoff_max_s,
            )
            # It stops by itself at `within_s` (a request under way may add its timeout).
            forwarding = asyncio.create_task(forwarder.drain(within_s))
            within_s += settings.central.timeout_s + 5
        deadline = time.monotonic() + within_s
        with Progress(
            TextColumn("draining"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
            console=console,
        ) as bar:  # fmt: skip
            task = bar.add_task("outbox", total=depth)
            while depth and time.monotonic() < deadline:
                if forwarding is None:
                    await asyncio.sleep(0.5)
                else:
                    await asyncio.wait([forwarding], timeout=0.5)
                depth, _ = await store.outbox_depth()
                bar.update(task, completed=max(0, (bar.tasks[0].total or 0) - depth))
                if forwarding is not None and forwarding.done():
                    break
        if forwarding is not None:
            from sync.forwarder import DrainStopped

            forwarding.cancel()
            (outcome,) = await asyncio.gather(forwarding, return_exceptions=True)
            if isinstance(outcome, DrainStopped):  # how many, and central's last error
                stopped = str(outcome)
            elif isinstance(outcome, Exception) and depth:
                why = str(outcome) or type(outcome).__name__
                stopped = f"{depth} events still waiting; the drain failed: {why}"
        elif depth:  # the running gateway's own view of central
            status = _admin_get(settings, "/status") or {}
            sync, link = status.get("sync") or {}, status.get("central") or {}
            last_error = sync.get("last_delivery_error")
            if last_error is None and link.get("down_for_s") is not None:
                last_error = link.get("last_error")
            if last_error:
                stopped = f"{depth} events still waiting; central's last error: {last_error}"
    finally:
        if central is not None:
            await central.aclose()
        await store.close()
    if depth and stopped is None:
        stopped = f"{depth} events still waiting"
    console.print(stopped or "outbox empty", markup=False)
    return 1 if depth else 0


def _backup(settings: Settings, target: Path) -> int:
    from gateway.store.store import backup_database

    try:
        verdict = backup_database(settings.database_path, target)
    except OSError as error:
        _fail(f"backup failed: {_os_reason(error)}", 1)
    except sqlite3.Error as error:
        _fail(f"backup of {settings.database_path} failed: {_why_unopened(settings, error)}", 1)
    _console().print(f"backup written to {target}; integrity check: {verdict}", markup=False)
    return 0 if verdict == "ok" else 1


def _central(settings: Settings) -> CentralClient:
    from sync.client import CentralClient

    if not settings.central.url:
        _fail("central.url is not set: this gateway runs standalone", 2)
    return CentralClient(
        settings.central, store_id=settings.store_id, gateway_id=settings.gateway_id
    )


async def _sync(settings: Settings, full: bool, allow_mass_removal: bool = False) -> int:
    from gateway.store.store import Store
    from sync.client import CentralError
    from sync.refresher import CursorStuck, Refresher

    if allow_mass_removal and not full:
        _fail("--allow-mass-removal goes with --full: it applies to a full snapshot's removal")
    store = await Store.open(settings.database_path, max_db_mb=settings.storage.max_db_mb)
    console = _console(stderr=True)
    share = settings.central.max_removal_share
    try:
        async with _central(settings) as central:
            refresher = Refresher(store, central, max_removal_share=share)
            with Progress(
                TextColumn("changes"),
                BarColumn(),
                TextColumn("{task.completed} applied"),
                console=console,
            ) as bar:
                task = bar.add_task("sync", total=None)

                def advance(n: int) -> None:
                    bar.advance(task, n)

                if full:
                    applied = await refresher.full(advance, allow_mass_removal=allow_mass_removal)
                else:
                    applied = await refresher.refresh(advance)
    except CursorStuck as error:
        console.print(f"sync stopped: {error}; the cache keeps what it has", markup=False)
        return 1
    except CentralError as error:
        console.print(f"central did not answer: {error}", markup=False)
        return 1
    finally:
        await store.close()
    stats = refresher.stats
    # Central's deletions and the records a full snapshot did not bring are both removals;
    # the second kind is counted by the store's own delete, so the number is the true one.
    console.print(
        f"applied {applied} changes: {stats.members} members, {stats.coupons} coupons,"
        f" {stats.deletions} deletions from central, {stats.rules_versions} rules;"
        f" skipped {stats.bad_records} bad records and {sum(stats.unknown_kinds.values())}"
        " of unknown kinds"
        + (
            f"; removed {stats.stale_members_removed} members and"
            f" {stats.stale_coupons_removed} coupons the snapshot did not bring"
            if stats.snapshots and stats.refused_removal is None
            else ""
        ),
        markup=False,
    )
    kept = stats.refused_removal
    if kept is not None:
        console.print(
            f"kept {kept.members} of {kept.cached_members} members and {kept.coupons} of"
            f" {kept.cached_coupons} coupons that central's snapshot did not bring: removing"
            f" them is more than central.max_removal_share ({share:.0%}) at once. Check"
            " central (the store id, central's data); if they really are gone, run"
            " `edge-gateway sync --full --allow-mass-removal`.",
            markup=False,
        )
        return 1
    return 0


async def _catalog(settings: Settings, args: argparse.Namespace) -> int:
    from gateway.store.store import Store
    from sync.catalog import push_catalog, read_menu_export
    from sync.client import CentralError

    export = args.file or settings.catalog.export_file
    if export is None:
        _fail("no catalog export: set catalog.export_file or pass --file", 2)
    console = _console()
    if args.action == "show":
        text = export.read_bytes().decode(settings.catalog.encoding, errors="replace")
        parsed = read_menu_export(text)
        for product in parsed.products[:50]:
            console.print(product.as_json(), markup=False)
        for line, reason in parsed.problems:
            console.print(f"line {line}: {reason}", markup=False)
        console.print(f"{len(parsed.products)} products, {len(parsed.problems)} bad rows")
        return 0
    store = await Store.open(settings.database_path, max_db_mb=settings.storage.max_db_mb)
    try:
        async with _central(settings) as central:
            result = await push_catalog(
                store, central, export, encoding=settings.catalog.encoding, force=args.force
            )
    except CentralError as error:
        console.print(f"central did not answer: {error}", markup=False)
        return 1
    finally:
        await store.close()
    verdict = "sent" if result.sent else "unchanged, not sent"
    console.print(f"catalog {verdict}: {result.products} products, {result.content_hash}")
    return 0


async def _simulate(settings: Settings, args: argparse.Namespace) -> int:
    from pos_adapters.sim.simulate import run_load, run_scenario

    host = args.host or settings.sim.host
    port = args.port or settings.sim.port
    console = _console()
    try:
        if args.registers > 0:
            report = await run_load(
                host, port, console, registers=args.registers, duration_s=args.duration
            )
            return 1 if report.errors else 0
        return await run_scenario(host, port, console)
    except OSError as error:
        _fail(f"cannot reach the gateway at {host}:{port}: {error}", 1)


def _new_store(settings: Settings, yes: bool) -> int:
    data_dir = settings.data_dir
    if not yes:
        sys.stdout.write(
            f"This sets aside the store in {data_dir} (gateway.db and its files go to a"
            " set-aside-* folder there); the next start makes a new, empty store. Stop the"
            " gateway first. Run again with --yes to do it.\n"
        )
        return 1
    lock = DataDirLock(data_dir)
    try:
        lock.acquire()
    except AlreadyRunning as running:
        _fail(str(running), 1)
    try:
        folder = set_aside(data_dir)
    finally:
        lock.release()
    if folder is None:
        sys.stdout.write(f"nothing to set aside in {data_dir}\n")
    else:
        sys.stdout.write(f"set aside in {folder}; the next start makes a new store\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "reference-server" in argv:  # its own options (and --help) are the reference server's
        from sync.central import main as reference_main

        return reference_main(argv[argv.index("reference-server") + 1 :])
    args = build_parser().parse_args(argv)
    settings = _settings(args.config)
    if args.command in ("run", "check-config", "doctor"):
        placeholder = settings.placeholder_problem()
        if placeholder is not None:
            _fail(placeholder, 2)
    if args.command == "check-config":
        sys.stdout.write(render_effective(settings))
        return _validate(settings) if args.strict else 0
    configure_logging(settings.log.level, settings.log.format, file=settings.log.file)
    if args.command == "run":
        from gateway.daemon import main as run_daemon

        return run_daemon(settings)
    # A command's output is its own: libraries' request lines stay out of it.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        if args.command == "new-store":
            return _new_store(settings, args.yes)
        return _run_command(args, settings)
    except DataDirProblem as problem:
        _fail(str(problem), 1)
    except sqlite3.Error as error:
        _fail(f"{settings.database_path}: {_why_unopened(settings, error)}", 1)
    except OSError as error:
        _fail(_os_reason(error), 1)
    finally:
        # Under sudo, files this command made stay the service user's (not root's).
        with contextlib.suppress(OSError):
            for path in give_to_data_dir_owner(settings.database_path):
                sys.stderr.write(f"gave {path} to the data directory's owner\n")


def _run_command(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "import":
        if not args.file.is_file():
            _fail(f"no such file: {args.file}", 1)
        return asyncio.run(_import(settings, args.kind, args.file, args.file.stat().st_size))
    if args.command in ("pause", "resume"):
        by = args.by or _invoking_user()
        return asyncio.run(_switch(settings, args.program, args.command == "pause", by))
    if args.command == "status":
        return _status(settings)
    if args.command == "doctor":
        return asyncio.run(_doctor(settings))
    if args.command == "backup":
        return _backup(settings, args.path)
    if args.command == "dead-letters":
        return asyncio.run(_dead_letters(settings, args.action, args.event_ids))
    if args.command == "drain":
        return asyncio.run(_drain(settings, args.timeout))
    if args.command == "sync":
        return asyncio.run(_sync(settings, args.full, args.allow_mass_removal))
    if args.command == "catalog":
        return asyncio.run(_catalog(settings, args))
    if args.command == "simulate":
        return asyncio.run(_simulate(settings, args))
    _fail(f"unknown command {args.command}")


if __name__ == "__main__":
    raise SystemExit(main())
