"""The command line as store IT uses it: options where daemons take them, help with examples,
errors that name the file and the reason (never a traceback), output free of library lines."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import pytest
from gateway_process import GatewayProcess, cli
from test_data_dir import FOREIGN_UID, run_to_exit, without_root_powers

from gateway.cli.parser import build_parser

LONG_LINE = 80  # where rich used to cut lines off a terminal


def no_traceback(text: str) -> bool:
    return "Traceback" not in text


async def test_config_is_taken_before_or_after_the_command(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    other = tmp_path / "other.toml"
    other.write_text(f'store_id = "S777"\ndata_dir = "{data_dir}"\n')
    before = await cli(data_dir, "--config", str(other), "check-config")
    after = await cli(data_dir, "check-config", "--config", str(other))
    assert before[0] == after[0] == 0, (before, after)
    assert 'store_id = "S777"' in before[1]
    assert before[1] == after[1]


def test_every_command_has_a_description_and_an_example() -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert len(commands) >= 15
    for name, command in commands.items():
        help_text = command.format_help()
        assert command.description, name
        assert "examples:" in help_text and f"edge-gateway {name}" in help_text, name
        assert "--config" in help_text, name


async def test_the_reference_server_takes_the_options_the_readme_shows(tmp_path: Path) -> None:
    code, out, err = await cli(tmp_path / "data", "reference-server", "--help")
    assert code == 0, err
    assert "--port" in out and "--synthetic-members" in out


async def test_the_placeholder_store_id_is_refused_by_run_check_config_and_doctor(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    for command in ("run", "check-config", "doctor"):
        code, out, err = await cli(data_dir, command, EDGE_GATEWAY_STORE_ID="CHANGE-ME")
        assert code == 2, (command, out, err)
        assert 'placeholder "CHANGE-ME"' in err and "store_id" in err
        assert no_traceback(err)
        # One line, however long: no hard wrap when the output is not a terminal.
        lines = [line for line in err.splitlines() if "placeholder" in line]
        assert len(lines) == 1 and len(lines[0]) > LONG_LINE
    assert not (data_dir / "gateway.db").exists()  # run stopped before making a store


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes")
async def test_an_unreadable_data_directory_is_named_with_the_reason(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    members = tmp_path / "members.jsonl"
    members.write_text('{"member_id": "M1", "identifiers": ["1"], "display_name": "A"}\n')
    code, _, err = await cli(data_dir, "import", "members", str(members))
    assert code == 0, err
    data_dir.chmod(0o000)
    if os.geteuid() == 0:
        os.chown(data_dir, FOREIGN_UID, FOREIGN_UID)
    try:
        for args in (("import", "members", str(members)), ("doctor",), ("backup", "x.db")):
            code, out = await run_to_exit(data_dir, *args, prefix=without_root_powers())
            assert code == 1, (args, out)
            assert no_traceback(out), (args, out)
            assert str(data_dir) in out, (args, out)
            assert "Permission denied" in out or "cannot write" in out, (args, out)
    finally:
        data_dir.chmod(0o755)


async def test_status_and_doctor_output_holds_no_library_request_lines(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    gateway = await GatewayProcess.start(data_dir)
    try:
        admin = {"EDGE_GATEWAY_ADMIN__PORT": str(gateway.events("gateway_ready")[0]["admin_port"])}
        for command in ("status", "doctor"):
            _code, out, err = await cli(data_dir, command, EDGE_GATEWAY_LOG__LEVEL="debug", **admin)
            assert "HTTP Request" not in out + err, command
            assert no_traceback(out + err)
    finally:
        await gateway.close()


async def test_a_pause_from_the_cli_goes_through_the_daemon_and_names_who(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    gateway = await GatewayProcess.start(data_dir)
    try:
        admin = {"EDGE_GATEWAY_ADMIN__PORT": str(gateway.events("gateway_ready")[0]["admin_port"])}
        code, out, err = await cli(data_dir, "pause", "lottery", SUDO_USER="maria", **admin)
        assert code == 0, err
        assert "by the running gateway" in out and "maria" in out
        switched = gateway.events("program_switched")
        assert switched and switched[-1]["by"] == "maria" and switched[-1]["paused"] is True
        code, out, _ = await cli(data_dir, "status", **admin)
        assert "paused" in out
        code, out, err = await cli(data_dir, "resume", "lottery", "--by", "it desk", **admin)
        assert code == 0, err
        assert gateway.events("program_switched")[-1]["by"] == "it desk"
    finally:
        await gateway.close()
    # Without a gateway running, the switch goes straight to the store.
    code, out, err = await cli(data_dir, "pause", "lottery", "--by", "night shift")
    assert code == 0 and "not running" in out, (out, err)


async def test_check_config_strict_checks_what_run_needs(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    code, out, err = await cli(data_dir, "check-config", "--strict")
    assert code == 0, out + err
    assert "sim port" in out and "database files" in out
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        missing = tmp_path / "no-such-token"
        code, out, err = await cli(
            data_dir,
            "check-config",
            "--strict",
            EDGE_GATEWAY_SIM__PORT=port,
            EDGE_GATEWAY_CENTRAL__URL="http://127.0.0.1:9",
            EDGE_GATEWAY_CENTRAL__TOKEN_FILE=str(missing),
        )
    assert code == 1
    flat = " ".join(out.split())
    assert f"127.0.0.1:{port} is taken" in flat
    assert f"{missing}: No such file or directory" in flat
    assert no_traceback(out + err)


def test_the_parser_is_what_the_man_page_reads() -> None:
    from gateway.cli import _parser

    assert _parser().prog == "edge-gateway"
    json.dumps(sorted(_parser()._subparsers._group_actions[0].choices))  # type: ignore[union-attr]
