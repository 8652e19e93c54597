"""islrun reads the ISL the field writes: each construct public scripts use, in a short script
of our own (tests/isl_scripts/, no third-party text), parsed, loaded and run on a simulated
workstation whose DLLs, files, printers, screen and .NET assemblies are recorded fakes."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import pytest
from test_isl_interpreter import AT, POS, FakeLink

from isl_plugin.islrun import IslRuntimeError, IslSyntaxError, Station, parse_script
from isl_plugin.islrun.corpus import isl_files, measure, summary
from isl_plugin.islrun.devices import Devices, Dll, DllResult, NetError
from isl_plugin.islrun.devices import DllArg as DllValue
from isl_plugin.islrun.parser import folder_loader, read_script
from isl_plugin.islrun.values import KEY_ENTER, KeyValue, Value

SCRIPTS = Path(__file__).resolve().parent / "isl_scripts"


def script_station(
    name: str,
    *,
    replies: Sequence[list[str] | None] = (),
    devices: Devices | None = None,
    open_check: bool = True,
) -> Station:
    path = SCRIPTS / name
    script = parse_script(path.read_text("cp1252"), name, include=folder_loader(SCRIPTS))
    station = Station(script, FakeLink(replies), pos=POS, clock=lambda: AT, devices=devices)
    if open_check:
        station.open_check(42, AT)
        station.ring(1001, 2)
        station.ring(1002)
    return station


def test_every_test_script_parses_and_loads_but_the_one_made_not_to() -> None:
    results = {r.path.name: r for r in measure(isl_files(SCRIPTS))}
    assert summary(list(results.values())) == "11 scripts, 10 parse, 10 load"
    assert not results["lint_errors.isl"].parses
    noisy = {name for name, r in results.items() if r.script is not None and r.script.warnings}
    assert noisy == {"dead_code.isl"}


# ---- the reply idioms, receipts and the check's own events ------------------------------------


async def test_getrxmsg_then_split_of_rxmsg_reads_a_pipe_separated_reply() -> None:
    station = script_station("reply_split.isl", replies=[["OK|M-17|12.50"]])
    run = await station.press(7, ["6001"])  # Event Inq : INQ_CARD, INQ_CARD = 7
    assert run.sent == [["IDENT|6001"]]
    assert station.check is not None
    assert station.check.info_lines == ["Member M-17", "Balance 12.50"]
    assert run.macros == [[KeyValue(5, 101), "1.00", KEY_ENTER]]
    assert station.check.discounts == Decimal("-1.00")


async def test_getrxmsg_timeout_is_seen_in_rxmsg() -> None:
    station = script_station("reply_split.isl", replies=[None])
    run = await station.press(7, ["6001"])
    assert run.outcome.exit == "ExitContinue" and run.messages == ["Loyalty offline"]


async def test_waitforrxmsg_runs_the_handler_named_before_the_first_pipe() -> None:
    station = script_station("reply_split.isl", replies=[["PONG|ONLINE|0.9"], None])
    pong = await station.press(2)
    assert pong.handlers == ["PONG"] and pong.messages == ["Gateway / 0.9"]
    offline = await station.press(2)
    assert offline.handlers == ["_TIMEOUT"] and offline.messages == ["Loyalty offline"]


async def test_a_cancelled_check_fires_trans_cncl_before_it_closes() -> None:
    station = script_station("reply_split.isl", replies=[["OK|M-17|0"]])
    await station.press(7, ["6001"])
    run = await station.cancel()
    assert run is not None and run.sent == [["RELEASE", "M-17"]]
    assert station.check is not None and station.check.closed and station.check.cancelled


async def test_a_voided_line_fires_dtl_changed() -> None:
    station = script_station("reply_split.isl", replies=[["OK|M-17|0"]])
    await station.press(7, ["6001"])
    run = await station.void(None, 101, "D")
    assert run is not None and run.messages == ["Voided discount / 101"]


async def test_final_tender_prints_lines_on_the_receipt_printer() -> None:
    station = script_station("reply_split.isl", replies=[["OK|M-17|0"]])
    await station.press(7, ["6001"])
    run = await station.tender(1)
    assert run is not None
    assert [(job.printer, job.lines) for job in run.printed] == [
        ("RCPT", ["Member M-17", "Points        15"])
    ]
    assert station.check is not None and station.check.info_lines == []


# ---- the screen and the cashier's keys ----------------------------------------------------------


@pytest.mark.parametrize(
    ("answers", "shown"),
    [
        (["Ann", "[Yes]", ""], ["Saved / Ann", "Print it?", "Confirmed"]),
        (["Ann", "[Begin]", ""], ["Begin check for / Ann", "Print it?", "Confirmed"]),
        (["Ann", None, ""], ["Not saved", "Print it?", "Confirmed"]),
    ],
)
async def test_window_input_and_isl_touchscreen_keys_are_scripted_answers(
    answers: list[str | None], shown: list[str]
) -> None:
    station = script_station("screen_keys.isl")
    run = await station.press(1, answers)
    assert run.messages == shown
    devices = station.devices
    assert devices.touchscreens == [1]
    assert devices.windows[0].title == "Customer"
    assert devices.windows[0].text()[0] == "Name:  Customer name"
    assert [key.label for key in devices.isl_keys] == ["Yes", "No", "Begin"]


async def test_clear_at_waitforconfirm_cancels_the_event() -> None:
    station = script_station("screen_keys.isl")
    run = await station.press(1, ["Ann", "[Yes]", None])
    assert run.outcome.exit == "ExitCancel" and "Confirmed" not in run.messages


async def test_a_touchscreen_key_that_is_not_there_is_an_error_with_its_line() -> None:
    station = script_station("screen_keys.isl")
    with pytest.raises(IslRuntimeError, match=r"no ISL touchscreen key \[Maybe\]") as error:
        await station.press(1, ["Ann", "[Maybe]"])
    assert error.value.line == 18


# ---- files, DLLs, .NET ---------------------------------------------------------------------------


async def test_files_are_written_and_read_back_in_the_sandbox(tmp_path: Path) -> None:
    station = script_station("files.isl", devices=Devices(sandbox=tmp_path))
    run = await station.press(1)
    log = tmp_path / "etc" / "loyalty" / "log.txt"
    assert log.read_bytes() == b'check 42 ws 7\r\n"A1","Latte",2\r\n"B2","Bagel",1\r\n'
    assert run.messages == [
        "check 42 ws 7",
        "A1 / Latte / 2",
        "B2 / Bagel / 1",
        "missing / 0 / 2",
    ]


async def test_without_a_sandbox_every_fopen_fails() -> None:
    run = await script_station("files.isl").press(1)
    assert run.outcome == run.outcome.__class__("ExitWithError", "cannot open the log")


async def test_dll_calls_are_recorded_and_write_back_their_ref_arguments() -> None:
    seen: list[list[DllValue]] = []

    def validate(args: list[DllValue]) -> DllResult:
        seen.append(args)
        return DllResult(refs={3: 1, 4: [7001, 7002, 7003], 5: "valid"})

    devices = Devices(dlls=[Dll("promo.dll", {"Validate": validate})])
    station = script_station("dll.isl", devices=devices)
    run = await station.press(1)
    assert seen == [["QR-1", 3, 0, [0, 0, 0], ""]]
    assert run.messages == ["1 / valid", "7001 / 7003"]
    assert devices.calls == [
        r"DLLLoad ..\bin\Promo.dll",
        "promo.dll Validate('QR-1', 3, 0, [0, 0, 0], '')",
        "promo.dll Ping()",
        "DLLFree promo.dll",
    ]
    missing = await station.press(2)
    assert missing.messages == ["handle / 0"]


async def test_net_calls_go_to_the_configured_methods_and_try_catches_what_they_throw() -> None:
    def member(args: list[Value]) -> Value:
        raise NetError("no member on this check")

    net = {
        "Loyalty.Client.Api.Total": lambda args: Decimal("9.25"),
        "Loyalty.Client.Api.Member": member,
    }
    devices = Devices(net=net)
    station = script_station("simphony.isl", devices=devices)
    assert station.script.imports == [r"C:\Micros\Simphony\Extensions\Loyalty.Client.dll"]
    run = await station.press("ShowTotals")
    assert run.messages == ["No member", "Total / 9.25"]
    assert devices.calls == [
        "Loyalty.Client.Api.Total(42)",
        "Loyalty.Client.Api.Log('totals', 9.25)",
        "Loyalty.Client.Api.Member(42)",
    ]


# ---- loops, literals, functions, scopes ---------------------------------------------------------


async def test_step_forever_hex_functions_and_event_locals_seen_by_subs() -> None:
    run = await script_station("loops_literals.isl").press(1)
    assert run.messages == [
        "147-10-6-2",
        "16 / 255",
        "1 / 1",
        "4 / A",
        "65 / 2.50",
        "7 / 4",
        "event-local / 16",
    ]


async def test_the_index_guard_of_production_scripts_holds_and_the_unguarded_read_fails() -> None:
    station = script_station("guards_sysvars.isl", open_check=False)
    check = station.open_check(42, AT)
    station.ring(1001, seat=2)
    station.ring(9001)
    check.reference("REF-1")
    station.void_line(1)
    run = await station.press(1)
    weekday = (AT.weekday() + 1) % 7  # 2026-11-23 is a Monday: 1
    assert run.messages == ["refs / 1", "2 / 0", "1 / 0", f"{weekday} / 1", "0.00 / 1", "30"]
    with pytest.raises(IslRuntimeError, match=r"@DTL_TYPE\[4\] is out of range 1..3") as error:
        await station.press(2)
    assert error.value.line == 23


async def test_include_brings_globals_events_and_subs() -> None:
    station = script_station("include_main.isl")
    assert station.script.includes == ["include_lib.isl"]
    assert (await station.press(1)).messages == ["Hello again"]


async def test_include_of_a_missing_file_is_an_error_naming_it(tmp_path: Path) -> None:
    text = 'Include "nothere.isl"\nEvent Inq : 1\nEndEvent\n'
    with pytest.raises(IslSyntaxError, match=r"Include 'nothere\.isl'") as error:
        parse_script(text, "t.isl", include=folder_loader(tmp_path))
    assert error.value.line == 1


# ---- loading what never runs; the linter ------------------------------------------------------


async def test_names_only_dead_code_uses_load_and_fail_only_when_run() -> None:
    station = script_station("dead_code.isl")
    warnings = [str(d) for d in station.script.warnings]
    assert warnings == [
        "dead_code.isl:7: warning: gUndeclared is not declared (fails if this line runs)",
        "dead_code.isl:8: warning: no sub named NoSuchSub (fails if this line runs)",
        "dead_code.isl:9: warning: system variable @NO_SUCH_SYSVAR is not simulated by islrun",
        "dead_code.isl:15: warning: gUndeclared is not declared (fails if this line runs)",
    ]
    assert (await station.press(1)).messages == ["ran"]
    with pytest.raises(IslRuntimeError, match="gUndeclared is not declared") as error:
        await station.press(2)
    assert error.value.line == 15


def test_read_script_reports_every_bad_line_with_its_column_and_keeps_the_rest() -> None:
    text = (SCRIPTS / "lint_errors.isl").read_text("cp1252")
    script = read_script(text, "lint_errors.isl")
    assert [(d.line, d.col, d.message) for d in script.errors] == [
        (5, 5, "unknown statement 'Frobnicate'"),
        (8, 9, "unknown statement 'Wibble'"),
        (10, 9, "expected an expression, found '='"),
    ]
    assert set(script.events) == {("inq", "1"), ("inq", "2")}


async def test_a_line_that_did_not_parse_fails_only_when_it_runs() -> None:
    text = (SCRIPTS / "lint_errors.isl").read_text("cp1252")
    script = read_script(text, "lint_errors.isl")
    station = Station(script, FakeLink(), pos=POS, clock=lambda: AT)
    assert (await station.press(2)).messages == ["after"]
    with pytest.raises(IslRuntimeError, match="did not parse: unknown statement") as error:
        await station.press(1)
    assert error.value.line == 5


def test_the_shipped_plugin_has_no_lint_warning() -> None:
    plugin = Path(__file__).resolve().parent.parent / "isl_plugin" / "pms9.isl"
    script = parse_script(plugin.read_text("cp1252"), "pms9.isl")
    assert script.warnings == []


def test_a_measured_corpus_names_what_fails(tmp_path: Path) -> None:
    (tmp_path / "good.isl").write_text("Event Inq : 1\n  InfoMessage 1\nEndEvent\n")
    (tmp_path / "bad.ISL").write_text("Event Inq : 1\n  url = 1 && 2\nEndEvent\n")
    (tmp_path / "noload.isl").write_text("var a[-1] : N3\n")
    results = measure(isl_files(tmp_path))
    assert summary(results) == "3 scripts, 2 parse, 1 load"
    by_name = {r.path.name: r for r in results}
    assert "unexpected character '&'" in by_name["bad.ISL"].first_problem
    assert "array a sized -1" in by_name["noload.isl"].first_problem


async def test_scenario_steps_cancel_and_expect_printed_and_sent() -> None:
    from isl_plugin.islrun import parse_scenario, run_steps

    scenario = parse_scenario(
        {
            "pos": {"menu": {1001: {"name": "Latte", "price": "3.50"}}},
            "steps": [
                {"begin": {"check": 5, "at": "2026-11-23 12:00"}},
                {"ring": {"item": 1001, "seat": 2}},
                {"press": {"key": 7, "inputs": ["6001"]}},
                {"expect": {"sent": ["IDENT|6001"], "info_lines": ["Member M-1"]}},
                {"cancel": {}},
                {"expect": {"sent": ["RELEASE | M-1"], "printed": ["nothing"]}},
            ],
        },
        "t",
    )
    station = script_station("reply_split.isl", replies=[["OK|M-1|0"]], open_check=False)
    result = await run_steps(station, scenario)
    assert result.problems == ["step 6 (expect): no printed line contains 'nothing' (printed: [])"]
    assert station.check is not None and station.check.cancelled
