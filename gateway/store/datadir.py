"""The data directory as store IT sees it: one daemon at a time (a lock), a store that never
silently starts again empty (a marker), and files the service can write (a probe that names the
file, its owner and the fix). Every problem is a `DataDirProblem` whose message says what was
found and what to do."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import sys
from pathlib import Path
from typing import IO, Any

if sys.platform == "win32":
    import msvcrt
else:
    import fcntl

DATABASE = "gateway.db"
MARKER = "gateway.store.json"  # written at a store's first start: this directory holds a store
LOCK = "gateway.lock"


class DataDirProblem(Exception):
    """The data directory cannot be used as it is; the message says why and what to do."""


class AlreadyRunning(DataDirProblem):
    """Another gateway holds the data directory's lock."""

    def __init__(self, message: str, pid: int | None) -> None:
        super().__init__(message)
        self.pid = pid


def database_files(db_path: Path) -> list[Path]:
    """The database and its WAL companions, those that exist."""
    names = [
        db_path,
        db_path.with_name(db_path.name + "-wal"),
        db_path.with_name(db_path.name + "-shm"),
    ]
    return [path for path in names if path.exists()]


# ---- a store never starts again empty ----------------------------------------------------------

RESTORE_HINT = (
    "restore the latest backup (stop the gateway, copy the backup to {db}), or, to start this"
    " store afresh and lose what it held, run `edge-gateway new-store`"
)


def check_before_open(db_path: Path) -> None:
    """Refuse a database that lost its content: an empty or missing `gateway.db` where a store
    was (the marker says so), or an empty file where SQLite would make a brand-new store."""
    marker = db_path.parent / MARKER
    hint = RESTORE_HINT.format(db=db_path)
    if db_path.exists():
        size = db_path.stat().st_size
        wal = db_path.with_name(db_path.name + "-wal")
        if size == 0:
            held = _marker_text(marker)
            raise DataDirProblem(
                f"{db_path} is empty (0 bytes){held}; the gateway will not start it as a new"
                f" store, which would lose every member and any checks not yet forwarded: {hint}"
                + (f" ({wal} holds {wal.stat().st_size} bytes of it)" if wal.exists() else "")
            )
        return  # anything else in it is SQLite's to judge (quick_check at open)
    if marker.exists():
        raise DataDirProblem(
            f"{db_path} is missing{_marker_text(marker)}; the gateway will not start it as a new"
            f" store: {hint}"
        )


def _marker_text(marker: Path) -> str:
    if not marker.exists():
        return ""
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
        return f", but this directory has held a store since {data.get('created_at', '?')}"
    except (OSError, ValueError):
        return ", but this directory has held a store"


def write_marker(data_dir: Path) -> None:
    """Note that this directory holds a store (once; kept by `new-store` as a set-aside)."""
    marker = data_dir / MARKER
    if marker.exists():
        return
    stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    marker.write_text(json.dumps({"created_at": stamp, "database": DATABASE}) + "\n")


def set_aside(data_dir: Path) -> Path | None:
    """`edge-gateway new-store`: move the database, its WAL files and the marker into a dated
    folder beside them (nothing is deleted), so that the next start makes a new store."""
    db = data_dir / DATABASE
    files = [*database_files(db), *(p for p in [data_dir / MARKER] if p.exists())]
    if not files:
        return None
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    folder = data_dir / f"set-aside-{stamp}"
    folder.mkdir()
    for path in files:
        shutil.move(str(path), folder / path.name)
    return folder


# ---- one daemon per data directory ---------------------------------------------------------------


class DataDirLock:
    """An exclusive lock on `gateway.lock` held for the daemon's life; the file names its pid.
    The operating system drops it when the process ends, however it ends."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK
        self._handle: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            handle = self.path.open("a+", encoding="ascii")
        except PermissionError as error:
            raise DataDirProblem(describe_unwritable(self.path.parent, str(error))) from None
        try:
            lock_exclusive(handle)
        except OSError:
            handle.seek(0)
            text = handle.read().strip()
            handle.close()
            pid = int(text) if text.isdigit() else None
            who = f"pid {pid}" if pid is not None else "another process"
            raise AlreadyRunning(
                f"another gateway ({who}) is running on {self.path.parent}; stop it first"
                " (systemctl stop edge-gateway), or give this one its own data_dir",
                pid,
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            with contextlib.suppress(OSError):
                self._handle.seek(0)
                self._handle.truncate()
            self._handle.close()  # closing drops the lock
            self._handle = None


def lock_exclusive(handle: IO[Any]) -> None:
    """Hold `handle`'s file for this process alone, or raise OSError at once when another
    process holds it. Closing the file (or the process ending) drops the lock."""
    if sys.platform == "win32":
        # Windows locks are mandatory: lock a byte past what the file holds (the data
        # directory's lock names a pid), so that the next process can still read it.
        handle.seek(4096)
        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
    else:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


# ---- files the service can write -----------------------------------------------------------------


def _owner(path: Path) -> str:
    """`name (uid N)` on POSIX; empty where owners are not numbers (Windows)."""
    if sys.platform == "win32":
        return ""
    import pwd

    uid = path.stat().st_uid
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}, a user that no longer exists"


def _me() -> str:
    if sys.platform == "win32":
        return os.environ.get("USERNAME", "this user")
    import pwd

    uid = os.geteuid()
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def unwritable(db_path: Path) -> str | None:
    """Why the service (this process) cannot write the database, or None. Looks at the data
    directory (SQLite makes its -wal and -shm files there) and each database file."""
    data_dir = db_path.parent
    for path in [data_dir, *database_files(db_path)]:
        if not os.access(path, os.W_OK):
            return describe_unwritable(path)
    return None


def describe_unwritable(path: Path, reason: str = "") -> str:
    what = "directory" if path.is_dir() else "file"
    mode = f"{path.stat().st_mode & 0o777:04o}" if path.exists() else "?"
    owner = _owner(path)
    data_dir = path if path.is_dir() else path.parent
    fix = (
        f"chown -R {owner_name(data_dir) or '<service user>'}: {data_dir}"
        if sys.platform != "win32"
        else f"give the service account write access to {data_dir}"
    )
    return (
        f"the gateway, running as {_me()}, cannot write the {what} {path}"
        + (f" (owner {owner}, mode {mode})" if owner else f" (mode {mode})")
        + (f": {reason}" if reason else "")
        + f"; fix: {fix}"
    )


def owner_name(path: Path) -> str:
    """The owner's user name (`uid N` when no user has that uid); empty on Windows."""
    if sys.platform == "win32" or not path.exists():
        return ""
    import pwd

    uid = path.stat().st_uid
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)  # chown takes it as it is


def foreign_files(db_path: Path) -> list[Path]:
    """Database files owned by someone other than the data directory's owner (the service
    user): after `sudo edge-gateway import ...` before the first start, or a reinstall that
    changed the service user's uid. Empty on Windows."""
    data_dir = db_path.parent
    if sys.platform == "win32" or not data_dir.exists():
        return []
    owner = data_dir.stat().st_uid
    return [path for path in database_files(db_path) if path.stat().st_uid != owner]


def give_to_data_dir_owner(db_path: Path) -> list[Path]:
    """Run as root (a CLI command under sudo): hand files this command created or touched to
    the data directory's owner, so the service can still write them. Returns what changed."""
    data_dir = db_path.parent
    if sys.platform == "win32" or os.geteuid() != 0 or not data_dir.is_dir():
        return []
    stat = data_dir.stat()
    changed = []
    for path in [*database_files(db_path), data_dir / MARKER]:
        if path.exists() and (path.stat().st_uid, path.stat().st_gid) != (stat.st_uid, stat.st_gid):
            os.chown(path, stat.st_uid, stat.st_gid)
            changed.append(path)
    return changed
