"""`edge-gateway backup`: a consistent copy of a live database, checked."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path


def backup_database(source: Path, target: Path, pages_per_step: int = 256) -> str:
    """Copy a live database with SQLite's online backup (safe while the daemon writes), then
    check the copy. Returns the copy's `integrity_check` verdict ("ok" when sound)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        raise FileExistsError(f"{target} exists; choose a new file")
    with (
        contextlib.closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as live,
        contextlib.closing(sqlite3.connect(target)) as copy,
    ):
        live.execute("PRAGMA busy_timeout = 10000")
        live.backup(copy, pages=pages_per_step)  # steps let the writer go on in between
        copy.execute("PRAGMA journal_mode = DELETE")  # a single self-contained file
        verdict = copy.execute("PRAGMA integrity_check").fetchone()[0]
    return str(verdict)
