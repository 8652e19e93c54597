"""The data directory as store IT meets it: one daemon at a time, a store that never starts
again empty by itself, and a database the service cannot write named at start, in readiness and
in `doctor`."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest
from gateway_process import PYTHON, Spawn, cli, gateway_env, import_samples
from waiting import until


async def run_to_exit(
    data_dir: Path, *args: str, prefix: tuple[str, ...] = (), within_s: float = 20
) -> tuple[int, str]:
    """Run `edge-gateway ARGS` (the daemon too) and return its exit code and its output."""
    process = await asyncio.create_subprocess_exec(
        *prefix,
        PYTHON,
        "-m",
        "gateway",
        *args,
        env=gateway_env(data_dir),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), within_s)
    finally:
        if process.returncode is None:  # it did not exit: that is the failure, not a hang
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, out.decode()


# ---- one daemon per data directory ------------------------------------------------------------


async def test_a_second_daemon_on_the_same_data_directory_exits_naming_the_first(
    data_dir: Path, spawn: Spawn
) -> None:
    first = await spawn()
    code, out = await run_to_exit(data_dir, "run")
    assert code == 1
    assert f"pid {first.process.pid}" in out and "another gateway" in out
    # The first still answers.
    connection = await first.connect()
    try:
        assert (await connection.workstation(1).request("PING"))[0] == "PONG"
    finally:
        await connection.close()
    # Once it is gone (even killed), the lock goes with it.
    await first.kill()
    again = await spawn()
    assert again.events("gateway_ready")


def files_named(folder: Path, prefix: str) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(prefix)]


def text_of(path: Path) -> str:
    return path.read_text() if path.exists() else ""


async def run_once(data_dir: Path, spawn: Spawn) -> Path:
    """The samples imported, a gateway run on them and stopped; its database."""
    await import_samples(data_dir)
    first = await spawn()
    await first.terminate()
    return data_dir / "gateway.db"


# ---- a store never starts again empty ---------------------------------------------------------


async def test_a_zero_length_database_is_refused_and_new_store_is_explicit(
    data_dir: Path, spawn: Spawn
) -> None:
    db = await run_once(data_dir, spawn)
    db.write_bytes(b"")  # what a bad restore, a full disk or a stray `>` leaves behind
    for name in ("gateway.db-wal", "gateway.db-shm"):
        (data_dir / name).unlink(missing_ok=True)

    code, out = await run_to_exit(data_dir, "run")
    assert code == 1
    assert "gateway.db is empty (0 bytes)" in out and "restore the latest backup" in out
    assert db.stat().st_size == 0  # nothing was made of it
    code, out = await run_to_exit(data_dir, "import", "members", str(data_dir / "x.jsonl"))
    assert code != 0

    # Without --yes, new-store only says what it would do.
    code, out = await run_to_exit(data_dir, "new-store")
    assert code == 1 and "--yes" in out and db.exists()
    code, out = await run_to_exit(data_dir, "new-store", "--yes")
    assert code == 0, out
    aside = files_named(data_dir, "set-aside-")
    assert len(aside) == 1 and (aside[0] / "gateway.db").exists()
    fresh = await spawn()
    assert fresh.events("gateway_ready")


async def test_a_missing_database_where_a_store_was_is_refused(
    data_dir: Path, spawn: Spawn
) -> None:
    first = await spawn()
    await first.terminate()
    for name in ("gateway.db", "gateway.db-wal", "gateway.db-shm"):
        (data_dir / name).unlink(missing_ok=True)
    code, out = await run_to_exit(data_dir, "run")
    assert code == 1 and "gateway.db is missing" in out and "has held a store" in out
    assert not (data_dir / "gateway.db").exists()


# ---- a database the service cannot write -------------------------------------------------------

FOREIGN_UID = 4242  # a user that is not this one: the old uid after a reinstall


def without_root_powers() -> tuple[str, ...]:
    """As root, run the child without the capabilities that let root write anyone's files, so
    that a file owned by another uid is as unwritable for it as for the service user."""
    if os.geteuid() != 0:
        return ()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is needed to drop root's file capabilities")
    return (setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner", "--inh-caps=-all")


def make_unwritable(db: Path) -> None:
    for path in [db, db.with_name("gateway.db-wal"), db.with_name("gateway.db-shm")]:
        if path.exists():
            if os.geteuid() == 0:
                os.chown(path, FOREIGN_UID, FOREIGN_UID)
            path.chmod(0o644 if os.geteuid() == 0 else 0o444)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX owners and modes")
async def test_a_database_the_service_cannot_write_fails_start_and_doctor_naming_the_fix(
    data_dir: Path, spawn: Spawn
) -> None:
    db = await run_once(data_dir, spawn)
    make_unwritable(db)
    code, out = await run_to_exit(data_dir, "run", prefix=without_root_powers())
    assert code == 1
    assert "cannot write" in out and str(db) in out and "fix:" in out
    assert "gateway_ready" not in out

    code, out = await run_to_exit(data_dir, "doctor", prefix=without_root_powers())
    assert code != 0
    assert "database files" in out and "cannot write" in out.replace("\n", " ")


@pytest.mark.skipif(
    sys.platform == "win32" or os.geteuid() != 0, reason="needs root to give files away"
)
async def test_import_under_sudo_leaves_files_the_service_user_owns(data_dir: Path) -> None:
    os.makedirs(data_dir)
    os.chown(data_dir, FOREIGN_UID, FOREIGN_UID)  # the package made it the service user's
    await import_samples(data_dir)  # run as root, as `sudo edge-gateway import` does
    files = files_named(data_dir, "gateway.")
    assert any(p.name == "gateway.db" for p in files)
    assert {(p.stat().st_uid, p.stat().st_gid) for p in files} == {(FOREIGN_UID, FOREIGN_UID)}
    _, out, _ = await cli(data_dir, "doctor")
    assert "database files" in out and "fail" not in out.split("database files")[1].split("\n")[0]


# ---- SIGHUP ------------------------------------------------------------------------------------


@pytest.mark.skipif(sys.platform == "win32", reason="no SIGHUP on Windows")
async def test_sighup_reopens_the_log_file_and_keeps_serving(
    data_dir: Path, tmp_path: Path
) -> None:
    log_file = tmp_path / "logs" / "gateway.log"
    process = await asyncio.create_subprocess_exec(
        PYTHON,
        "-m",
        "gateway",
        "run",
        env=gateway_env(data_dir, EDGE_GATEWAY_LOG__FILE=str(log_file)),
    )
    try:

        async def logged(event: str, path: Path) -> bool:
            return f'"{event}"' in await asyncio.to_thread(text_of, path)

        await until(lambda: logged("gateway_ready", log_file), 20, "ready")
        rotated = log_file.with_name("gateway.log.1")
        log_file.rename(rotated)  # what logrotate does before it sends SIGHUP
        process.send_signal(signal.SIGHUP)
        await until(lambda: logged("gateway_reloaded", log_file), 20, "reloaded")
        assert process.returncode is None  # still running: SIGHUP used to kill it
        assert '"gateway_reloaded"' not in rotated.read_text()
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 20) == 0
        assert '"gateway_stopped"' in log_file.read_text()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
