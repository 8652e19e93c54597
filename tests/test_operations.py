"""What store IT runs: the systemd unit, backup under load, doctor, dead letters, drain."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import shutil
import socket
import sqlite3
import ssl
import subprocess
import tomllib
from pathlib import Path

import pytest
from conftest import RunningGateway, identified_events
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from gateway_process import cli
from sync_harness import Admin

from gateway.store.store import backup_database

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "packaging" / "systemd" / "edge-gateway.service"


needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze missing (make system-deps)"
)


def _settings(text: str) -> list[tuple[str, str]]:
    """The unit's Key=value lines, in order (comments and section headers left out)."""
    pairs = []
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            pairs.append((key.strip(), value.strip()))
    return pairs


@needs_systemd_analyze
def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    # verify insists that ExecStart exists: point it at this checkout's entry point. The man
    # page of Documentation= exists only once the package is installed (test_packaging checks
    # verify there, man page included).
    unit = tmp_path / "edge-gateway.service"
    binary = ROOT / ".venv" / "bin" / "edge-gateway"
    text = UNIT.read_text().replace("/opt/edge-gateway/bin/edge-gateway", str(binary))
    unit.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0 and result.stderr == "", result.stderr
    for setting in (
        "Type=notify", "WatchdogSec=", "Restart=on-failure", "User=edge-gateway",
        "StateDirectory=edge-gateway", "ProtectSystem=strict", "NoNewPrivileges=yes",
        "PrivateTmp=yes", "RestrictAddressFamilies=", "LimitNOFILE=8192",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ):  # fmt: skip
        assert setting in text


def test_the_unit_takes_overrides_only_from_etc_default() -> None:
    # An Environment= line beats gateway.toml without check-config in a shell ever seeing it:
    # the unit has none; store IT overrides in /etc/default/edge-gateway, which the package
    # ships with every line commented out, and the data directory is gateway.toml's.
    settings = _settings(UNIT.read_text())
    assert [key for key, _ in settings if key == "Environment"] == []
    assert ("EnvironmentFile", "-/etc/default/edge-gateway") in settings
    defaults = ROOT / "packaging" / "debian" / "default"
    active = [ln for ln in defaults.read_text().splitlines() if ln.strip() and ln[0] != "#"]
    assert active == []
    config = tomllib.loads((ROOT / "packaging" / "gateway.toml").read_text())
    assert config["data_dir"] == "/var/lib/edge-gateway"  # = StateDirectory=edge-gateway
    assert ("StateDirectory", "edge-gateway") in settings


def test_the_unit_leaves_serial_ports_and_the_network_usable() -> None:
    settings = dict(_settings(UNIT.read_text()))
    # Serial registers: /dev/tty* stays visible, and the dialout group opens it.
    assert settings.get("PrivateDevices", "no") == "no"
    assert "DeviceAllow" not in settings and settings.get("DevicePolicy", "auto") == "auto"
    assert settings["SupplementaryGroups"] == "dialout"
    # Registers connect in, central and the broker are reached out: no private network, IPv4
    # and IPv6 sockets, no IP allow list shipped (documented as a drop-in per chain).
    assert settings.get("PrivateNetwork", "no") == "no"
    assert {"AF_INET", "AF_INET6", "AF_UNIX"} <= set(settings["RestrictAddressFamilies"].split())
    assert "IPAddressDeny" not in settings
    # process_* metrics read /proc/self and /proc/stat; the writer needs its state directory.
    assert settings.get("ProcSubset", "all") == "all"
    assert settings["ProtectSystem"] == "strict"


@needs_systemd_analyze
def test_the_unit_exposure_is_two_or_lower() -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    match = re.search(
        r"Overall exposure level for edge-gateway\.service: (\d+\.\d+)", result.stdout
    )
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0, result.stdout


@needs_systemd_analyze
def test_the_unit_system_call_filter_allows_what_the_daemon_calls() -> None:
    # SystemCallFilter=@system-service, then ~@privileged @resources (EPERM). What the daemon
    # and its libraries call must stay allowed: sockets, epoll, SQLite's fsync and fcntl locks,
    # the serial lines' ioctl, getrandom (ULIDs, TLS), prlimit64 (the open-file limit).
    def group(name: str) -> set[str]:
        out = subprocess.run(
            ["systemd-analyze", "syscall-filter", "--no-pager", name],
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout  # fmt: skip
        calls: set[str] = set()
        for line in out.splitlines()[1:]:  # the first line is the group's own name
            word = line.strip()
            if word.startswith("@"):
                calls |= group(word)  # groups include groups
            elif re.fullmatch(r"[a-z_0-9]+", word):
                calls.add(word)
        return calls

    allowed = group("@system-service") - group("@privileged") - group("@resources")
    needed = {
        "socket", "bind", "listen", "accept4", "connect", "sendmsg", "recvfrom", "epoll_wait",
        "fsync", "fdatasync", "fcntl", "ioctl", "getrandom", "prlimit64", "openat", "mmap",
        "clone3", "futex", "kill",
    }  # fmt: skip
    assert needed - allowed == set()
    settings = _settings(UNIT.read_text())
    assert ("SystemCallFilter", "@system-service") in settings
    assert ("SystemCallFilter", "~@privileged @resources") in settings


async def test_a_backup_taken_under_load_opens_and_passes_integrity_check(
    gateway: RunningGateway, tmp_path: Path
) -> None:
    connection = await gateway.connect()
    posted = 0
    stop, warmed_up = asyncio.Event(), asyncio.Event()

    async def register(wsid: int) -> None:
        nonlocal posted
        station = connection.workstation(wsid)
        check = wsid * 10_000
        while not stop.is_set():
            check += 1
            fields = ["POST", str(wsid), "1", str(check), "20261123", "M1", "1.00", "1.00", "", ""]
            assert (await station.request(*fields))[0] == "POST_OK"
            posted += 1
            if posted >= 50:
                warmed_up.set()

    load = [asyncio.create_task(register(w)) for w in range(1, 5)]
    try:
        await asyncio.wait_for(warmed_up.wait(), 30)  # under load
        before = posted
        target = tmp_path / "backup" / "gateway.db"
        verdict = await asyncio.to_thread(backup_database, gateway.store.path, target)
        stop.set()
        await asyncio.gather(*load)
    finally:
        await connection.close()
    assert verdict == "ok"
    with sqlite3.connect(target) as copy:
        assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert copy.execute("SELECT COUNT(*) FROM posted_checks").fetchone()[0] >= before
    with pytest.raises(FileExistsError):
        backup_database(gateway.store.path, target)  # never overwrites a backup


def _self_signed(tmp_path: Path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "central.example")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    return context


async def test_doctor_reports_an_unreachable_central_a_bad_certificate_and_a_full_disk(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    code, out, _ = await cli(
        data_dir, "doctor", EDGE_GATEWAY_CENTRAL__URL=f"http://127.0.0.1:{closed_port}",
        EDGE_GATEWAY_ADMIN__PORT="0",
    )  # fmt: skip
    assert code == 1 and "central unreachable" in out

    async def tls_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(tls_answer, "127.0.0.1", 0, ssl=_self_signed(tmp_path))
    port = server.sockets[0].getsockname()[1]
    try:
        code, out, _ = await cli(
            data_dir, "doctor", EDGE_GATEWAY_CENTRAL__URL=f"https://127.0.0.1:{port}",
            EDGE_GATEWAY_ADMIN__PORT="0",
        )  # fmt: skip
    finally:
        server.close()
    assert code == 1 and "certificate" in out and "not trusted" in out

    code, out, _ = await cli(
        data_dir, "doctor", EDGE_GATEWAY_STORAGE__MIN_FREE_MB=str(10**9),
        EDGE_GATEWAY_ADMIN__PORT="0",
    )  # fmt: skip
    assert code == 1 and "disk nearly full" in out

    code, out, _ = await cli(data_dir, "doctor", EDGE_GATEWAY_ADMIN__PORT="0")
    assert code == 0 and "standalone" in out


async def test_dead_letters_can_be_listed_and_retried(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    code, _, err = await cli(data_dir, "dead-letters", "list")
    assert code == 0, err
    with sqlite3.connect(data_dir / "gateway.db") as db:
        db.execute(
            "INSERT INTO dead_letters VALUES ('01J0000000000000000000DEAD', 'check.posted',"
            " '2026-11-23T10:00:00.000000Z', '{}', 'INVALID_PAYLOAD: total', "
            " '2026-11-23T10:00:01.000000Z')"
        )
    code, out, _ = await cli(data_dir, "dead-letters", "list")
    assert "01J0000000000000000000DEAD" in out and "INVALID_PAYLOAD" in out
    code, out, _ = await cli(data_dir, "dead-letters", "retry")
    assert code == 0 and "1 events back in the outbox" in out
    with sqlite3.connect(data_dir / "gateway.db") as db:
        assert db.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0] == 0
        assert db.execute("SELECT event_id FROM outbox").fetchall() == [
            ("01J0000000000000000000DEAD",)
        ]


async def test_drain_sends_the_backlog_when_the_gateway_is_not_running(tmp_path: Path) -> None:
    from gateway.store.store import Store
    from sync.central import ReferenceServer

    data_dir = tmp_path / "data"
    store = await Store.open(data_dir / "gateway.db")
    await store.append_events(identified_events(1200))
    await store.close()
    async with ReferenceServer() as central:
        code, _, err = await cli(
            data_dir, "drain", "--timeout", "60", EDGE_GATEWAY_CENTRAL__URL=central.url,
            EDGE_GATEWAY_ADMIN__PORT="1",  # nothing answers there: no gateway is running
        )  # fmt: skip
        admin = Admin(central)
        accepted = (await admin.stats())["events"]["accepted"].get("member.identified")
        await admin.aclose()
    assert accepted == 1200
    assert code == 0, err
    assert "outbox empty" in err
    with sqlite3.connect(data_dir / "gateway.db") as db:
        assert db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0
