"""`edge-gateway doctor`: the checks store IT runs when something seems wrong. Each check gives
a verdict (ok, warn, fail) and one sentence that says what to do. Central is checked by the CLI,
which may use the sync package; this module sees only the local machine."""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import socket
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gateway.config import Settings
from gateway.store.datadir import (
    DataDirProblem,
    check_before_open,
    describe_unwritable,
    foreign_files,
    owner_name,
    unwritable,
)
from gateway.store.schema import SCHEMA_VERSION

Verdict = Literal["ok", "warn", "fail"]


@dataclass(frozen=True, slots=True)
class Finding:
    check: str
    verdict: Verdict
    detail: str


def check_database(path: Path) -> Finding:
    if not path.exists():
        return Finding("database", "warn", f"{path} does not exist yet (made at first start)")
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            conn.execute("PRAGMA busy_timeout = 5000")
            verdict = conn.execute("PRAGMA integrity_check").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as error:
        return Finding("database", "fail", f"{path} is damaged: {error}; restore a backup")
    if verdict != "ok":
        return Finding("database", "fail", f"integrity check: {verdict}; restore a backup")
    if version > SCHEMA_VERSION:
        return Finding("database", "fail", f"schema {version} is newer than this gateway's")
    return Finding("database", "ok", f"{path}: integrity ok, schema {version}")


def check_database_writable(path: Path) -> Finding:
    """Whether the service can write the database: files owned by someone other than the data
    directory's owner (the service user), or that this user cannot write, make every check
    fail at the register while reads still work."""
    if not path.exists():
        return Finding("database files", "ok", "not made yet")
    try:
        check_before_open(path)
    except DataDirProblem as problem:
        return Finding("database files", "fail", str(problem))
    foreign = foreign_files(path)
    if foreign:
        owner = owner_name(path.parent)
        names = ", ".join(
            f"{p.name} (owner {owner_name(p)}, mode {p.stat().st_mode & 0o777:04o})"
            for p in foreign
        )
        return Finding(
            "database files",
            "fail",
            f"{names} in {path.parent} not owned by the service user {owner}: the service"
            f" cannot write them; fix: chown {owner}: {path.parent}/gateway.db*",
        )
    why = unwritable(path)
    if why is not None:
        return Finding("database files", "fail", why)
    return Finding("database files", "ok", "writable by the service user")


def check_disk(data_dir: Path, min_free_mb: int) -> Finding:
    where = data_dir if data_dir.exists() else data_dir.parent
    try:
        usage = shutil.disk_usage(where)
    except OSError as error:
        return Finding("disk", "fail", f"cannot read {where}: {error}")
    free_mb = usage.free // (1024 * 1024)
    if free_mb < min_free_mb:
        return Finding(
            "disk",
            "fail",
            f"disk nearly full: {free_mb} MB free under {where}, below storage.min_free_mb"
            f" ({min_free_mb} MB); free space or checks will be refused STORAGE_FULL",
        )
    return Finding("disk", "ok", f"{free_mb} MB free under {where}")


def check_port(name: str, host: str, port: int, ours: bool) -> Finding:
    """`ours`: the gateway answered on it (so in use by us, which is fine)."""
    if ours:
        return Finding(name, "ok", f"{host}:{port} is served by this gateway")
    if port == 0:
        return Finding(name, "ok", "a free port is chosen at start")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            return Finding(name, "fail", f"{host}:{port} is taken by another program ({error})")
    return Finding(name, "ok", f"{host}:{port} is free (the gateway is not running)")


def check_clock(settings: Settings, central_date: dt.datetime | None) -> Finding:
    now = dt.datetime.now(dt.UTC)
    local = now.astimezone(settings.tzinfo())
    zone = settings.timezone or "the machine's zone"
    if central_date is None:
        return Finding("clock", "ok", f"{local:%Y-%m-%d %H:%M} in {zone} (not compared)")
    skew = (now - central_date).total_seconds()
    if abs(skew) > 120:
        return Finding(
            "clock",
            "fail",
            f"{skew:+.0f} s off central's clock: business dates and app tokens go wrong;"
            " fix the time sync (NTP)",
        )
    return Finding("clock", "ok", f"{local:%Y-%m-%d %H:%M} in {zone}, {skew:+.1f} s from central")


def local_findings(settings: Settings, *, sim_ours: bool, admin_ours: bool) -> list[Finding]:
    findings = [Finding("configuration", "ok", "loaded and valid")]
    findings.append(check_database(settings.database_path))
    findings.append(check_database_writable(settings.database_path))
    findings.append(check_disk(settings.data_dir, settings.storage.min_free_mb))
    if settings.sim.enabled:
        findings.append(check_port("sim port", settings.sim.host, settings.sim.port, sim_ours))
    findings.append(check_port("admin port", settings.admin.host, settings.admin.port, admin_ours))
    return findings


def check_readable(name: str, path: Path | None, *, certificate: bool = False) -> Finding | None:
    """A file the configuration names: there, readable by this user, and (for certificates)
    PEM that Python's TLS accepts. None when the setting is not used."""
    if path is None:
        return None
    try:
        with path.open("rb") as handle:
            data = handle.read()
    except OSError as error:
        return Finding(name, "fail", f"{path}: {error.strerror or error}")
    if certificate:
        import ssl

        try:
            ssl.create_default_context(cadata=data.decode("ascii", errors="replace"))
        except (ssl.SSLError, ValueError) as error:
            return Finding(name, "fail", f"{path} is not a PEM certificate Python accepts: {error}")
    return Finding(name, "ok", f"{path} is readable")


def run_findings(settings: Settings, *, sim_ours: bool, admin_ours: bool) -> list[Finding]:
    """What `run` needs, checked without running it (`check-config --strict`)."""
    findings = [Finding("store id", "ok", settings.store_id)]
    problem = settings.placeholder_problem()
    if problem is not None:
        findings = [Finding("store id", "fail", problem)]
    findings.append(check_data_dir(settings.data_dir))
    findings.append(check_database_writable(settings.database_path))
    if settings.sim.enabled:
        findings.append(check_port("sim port", settings.sim.host, settings.sim.port, sim_ours))
    findings.append(check_port("admin port", settings.admin.host, settings.admin.port, admin_ours))
    central, mqtt = settings.central, settings.mqtt
    files = [
        check_readable("central.token_file", central.token_file),
        check_readable("central.ca_file", central.ca_file, certificate=True),
        check_readable("central.client_cert", central.client_cert),
        check_readable("central.client_key", central.client_key),
        check_readable("admin.token_file", settings.admin.token_file),
        check_readable("mqtt.password_file", mqtt.password_file),
        check_readable("mqtt.ca_file", mqtt.ca_file, certificate=True),
        check_readable("rules_file", settings.rules_file),
        check_readable("catalog.export_file", settings.catalog.export_file),
    ]
    findings += [f for f in files if f is not None]
    return findings


def check_data_dir(data_dir: Path) -> Finding:
    """The data directory exists and this user may make files in it, or it can be made."""
    import os

    where = data_dir
    while not where.exists() and where != where.parent:
        where = where.parent
    if not os.access(where, os.W_OK | os.X_OK):
        what = "data directory" if where == data_dir else "parent of the data directory"
        return Finding("data directory", "fail", describe_unwritable(where, f"the {what}"))
    if where != data_dir:
        return Finding("data directory", "ok", f"{data_dir} will be made at first start")
    return Finding("data directory", "ok", f"{data_dir} is writable")
