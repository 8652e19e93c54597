"""`python -m isl_plugin.islrun` as store IT runs it, the shipped sample scenario, and the exchange
docs/protocol.md shows, each against a real gateway."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import socket
import sys
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from conftest import RunningGateway
from test_isl_plugin import AT, CARD_M1, POS, SCRIPT, ring_lunch

from isl_plugin.islrun import SimLink, Station, load_scenario, run_scenario
from isl_plugin.islrun.__main__ import main

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = ROOT / "isl_plugin" / "pms9.isl"
VISIT = ROOT / "isl_plugin" / "scenarios" / "visit.yaml"
OFFLINE = ROOT / "isl_plugin" / "scenarios" / "offline.yaml"


async def islrun(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "isl_plugin.islrun",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def dated_visit(tmp_path: Path, **changes: object) -> Path:
    """The sample scenario on the test gateway's business day, as JSON."""
    data = yaml.safe_load(VISIT.read_text())
    data["steps"][0]["begin"]["at"] = AT.isoformat(sep=" ")
    data.update(changes)
    path = tmp_path / "visit.json"
    path.write_text(json.dumps(data))
    return path


async def test_the_sample_scenario_runs_and_every_expectation_holds(
    gateway: RunningGateway,
) -> None:
    scenario = load_scenario(VISIT)
    result = await run_scenario(SCRIPT, scenario, "127.0.0.1", gateway.port, clock=lambda: AT)
    assert result.problems == []
    check = result.station.check
    assert check is not None and check.closed and check.total == Decimal("15.40")
    assert [run.event for run in result.station.runs] == [
        "begin_check",
        "inq : 5",
        "inq : 1",
        "inq : 2",
        "final_tender",
    ]


async def test_the_offline_sample_scenario_holds_with_no_gateway_listening() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = await run_scenario(SCRIPT, load_scenario(OFFLINE), "127.0.0.1", port)
    assert result.problems == []
    check = result.station.check
    assert check is not None and check.closed
    runs = result.station.runs
    assert [(run.event, run.outcome.exit) for run in runs] == [
        ("begin_check", "normal"),
        ("inq : 1", "normal"),
        ("inq : 2", "normal"),
        ("final_tender", "normal"),
    ]
    assert runs[-1].sent == []  # no member was ever identified: nothing to post


async def test_command_line_prints_the_transcript_and_the_receipt(
    gateway: RunningGateway, tmp_path: Path
) -> None:
    code, out, err = await islrun(
        str(PLUGIN), str(dated_visit(tmp_path)), "--host", "127.0.0.1", "--port", str(gateway.port)
    )
    assert code == 0, out + err
    assert "->         04 POST | 7 | 1 | 4711 | 20261123 | M1 | 20.40 | 15.40" in out
    assert "event      rxmsg : POST_OK" in out
    receipt = out.split("== receipt: check information lines\n", 1)[1]
    assert "Points this visit" in receipt and "Points balance" in receipt
    assert out.rstrip().endswith("every expectation held")


async def test_command_line_exits_1_when_an_expectation_fails(
    gateway: RunningGateway, tmp_path: Path
) -> None:
    path = dated_visit(tmp_path)
    data = json.loads(path.read_text())
    data["steps"].append({"expect": {"shown": "Jackpot"}})
    path.write_text(json.dumps(data))
    code, out, _ = await islrun(str(PLUGIN), str(path), "--port", str(gateway.port))
    assert code == 1
    assert "the cashier did not see 'Jackpot'" in out


def test_check_mode_parses_the_shipped_plugin(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(PLUGIN), "--check"]) == 0
    assert capsys.readouterr().out.startswith("pms9.isl: OK (21 events: inq : 1, ")


def test_check_reports_every_bad_line_with_line_and_column_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "pms3.isl"
    script.write_text(
        'Event Inq : 1\n  Window 2, 20, "Hello"\n  Frob 1\n  Display 1, 1, "x"\n'
        "  Wobble\n  Call Nowhere\nEndEvent\n"
    )
    assert main([str(script), "--check"]) == 2
    out = capsys.readouterr().out
    assert out.splitlines() == [
        "pms3.isl: 2 error(s), 1 warning(s)",
        "   pms3.isl:3:3: error: unknown statement 'Frob'",
        "   pms3.isl:5:3: error: unknown statement 'Wobble'",
        "   pms3.isl:6: warning: no sub named Nowhere (fails if this line runs)",
    ]


def test_check_strict_fails_on_warnings_and_names_a_script_that_does_not_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "pms4.isl"
    script.write_text("Event Inq : 1\n  Call Nowhere\nEndEvent\n")
    assert main([str(script), "--check"]) == 0
    assert main([str(script), "--check", "--strict"]) == 1
    capsys.readouterr()
    script.write_text("var a[-2] : N3\n")
    assert main([str(script), "--check"]) == 2
    assert "does not load: pms4.isl:1: array a sized -2" in capsys.readouterr().out


def test_a_wrong_scenario_exits_2_naming_its_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = tmp_path / "bad.yaml"
    scenario.write_text("steps:\n  - begin: 1\n  - pres: 1\n")
    assert main([str(PLUGIN), str(scenario)]) == 2
    assert "step 2: unknown step 'pres'" in capsys.readouterr().err


# ---- docs/protocol.md ------------------------------------------------------------------------


def _doc_dump(arrow: str) -> bytes:
    text = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    section = text.split("## One full exchange as the register sends it", 1)[1]
    section = re.split(r"\n## ", section, maxsplit=1)[0]
    block = section.split(f"```\n{arrow} ", 1)[1].split("```", 1)[0]
    return bytes.fromhex(" ".join(block.splitlines()[1:]))


def _dump(raw: bytes) -> str:
    return "\n".join(raw[i : i + 16].hex(" ").upper() for i in range(0, len(raw), 16))


async def test_protocol_doc_shows_the_post_the_plugin_sends(
    gateway: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The doc's coupon ref; the gateway makes refs as "C" + token_hex(6).
    monkeypatch.setattr(secrets, "token_hex", lambda nbytes=None: "5E2A9B7D1F03")
    link = SimLink("127.0.0.1", gateway.port, source_id=b"   7LOYAL")
    station = Station(SCRIPT, link, pos=POS, clock=lambda: AT)
    try:
        ring_lunch(station)
        await station.press(1, [CARD_M1])
        await station.press(2, ["WELCOME5"])
        await station.tender(1)
    finally:
        await link.close()
    post = next(e.raw for e in station.wire if e.kind == "sent" and b"POST" in e.raw)
    reply = next(e.raw for e in station.wire if e.kind == "received" and b"POST_OK" in e.raw)
    assert _doc_dump("->") == post, f"the plugin now sends:\n{_dump(post)}"
    assert _doc_dump("<-") == reply, f"the gateway now answers:\n{_dump(reply)}"


def test_the_doc_dumps_are_frames_with_good_checksums() -> None:
    for arrow in ("->", "<-"):
        raw = _doc_dump(arrow)
        assert raw[0] == 0x01 and raw[-1] == 0x04
        assert raw[-5:-1] == b"%04X" % (sum(raw[1:-5]) & 0xFFFF)
