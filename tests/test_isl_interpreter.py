"""islrun, statement by statement: each construct doing what the plugin relies on, a clear error
with its line (and column) for a line that does not parse, and a warning for what may fail only
when it runs. The link here is an in-memory fake; tests/test_isl_link.py covers the real socket;
tests/test_islrun_field.py the constructs of public scripts."""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Sequence
from decimal import Decimal

import pytest

from isl_plugin.islrun import (
    Discount,
    EventRun,
    IslRuntimeError,
    IslSyntaxError,
    MenuItem,
    PosConfig,
    PosError,
    Station,
    StationOptions,
    parse_script,
)
from isl_plugin.islrun.interpreter import NothingSent
from isl_plugin.islrun.link import LinkEvent
from isl_plugin.islrun.values import KEY_ENTER, KeyValue

AT = dt.datetime(2026, 11, 23, 9, 5, 7)
POS = PosConfig(
    menu={
        1001: MenuItem("Latte", Decimal("3.50")),
        1002: MenuItem("Bagel", Decimal("2.25")),
        9001: MenuItem("MARKER", Decimal("0"), reference=True),
    },
    discounts={
        101: Discount("Open amount", "amount"),
        103: Discount("Open percent", "percent"),
        104: Discount("Preset 1.00", "amount", Decimal("1.00")),
        102: Discount("Free item", "item"),
    },
)


class FakeLink:
    """Replies in order; None stands for a reply that never comes."""

    def __init__(self, replies: Sequence[list[str] | None] = ()) -> None:
        self.events: list[LinkEvent] = []
        self.sent: list[list[str]] = []
        self.replies = deque(replies)
        self.waiting = False

    async def send(self, fields: Sequence[str]) -> None:
        self.sent.append(list(fields))
        self.waiting = True

    async def receive(self, timeout_s: float) -> list[str] | None:
        if not self.waiting:
            raise NothingSent
        self.waiting = False
        return self.replies.popleft() if self.replies else None

    async def close(self) -> None:
        pass


def station_for(
    text: str,
    *,
    replies: Sequence[list[str] | None] = (),
    rxmsg_includes_name: bool = False,
    loop_limit: int = 1000,
    open_check: bool = True,
) -> Station:
    script = parse_script(text, "t.isl")
    options = StationOptions(rxmsg_includes_name=rxmsg_includes_name, loop_limit=loop_limit)
    station = Station(script, FakeLink(replies), pos=POS, options=options, clock=lambda: AT)
    if open_check:
        station.open_check(42, AT)
        station.ring(1001, 2)
        station.ring(1002)
    return station


def event(body: str, *, top: str = "", subs: str = "") -> str:
    """A script whose `Event Inq : 1` holds `body`; `top` comes first, `subs` after."""
    return f"{top}\nEvent Inq : 1\n{body}\nEndEvent\n{subs}"


async def press(text: str, inputs: Sequence[str | None] = (), **options: object) -> EventRun:
    station = station_for(text, **options)  # type: ignore[arg-type]
    return await station.press(1, inputs)


async def shown(body: str, *, top: str = "", subs: str = "", **options: object) -> list[str]:
    """What InfoMessage showed when `body` ran."""
    return (await press(event(body, top=top, subs=subs), **options)).messages


# ---- declarations and values ------------------------------------------------------------------


async def test_var_types_convert_what_is_assigned_to_them() -> None:
    body = """
    var a : A4
    var n : N5
    var m : $8
    var k : Key
    a = "abcdef"
    n = "12.9abc"
    m = "2.345"
    k = Key(5, 101)
    InfoMessage a, n
    InfoMessage m
    InfoMessage k = Key(5, 101)
    """
    assert await shown(body) == ["abcd / 12", "2.35", "1"]


async def test_a_text_cut_to_its_declared_length_is_reported() -> None:
    run = await press(event('var a : A3\na = "abcdef"'))
    assert run.warnings == ["a (A3) cut a 6-char text"]


async def test_global_initial_values_and_const() -> None:
    top = 'var gName : A10 = "Ann"\nconst TAX : N3 = 7\nvar gNone : N3'
    assert await shown("InfoMessage gName, TAX + gNone", top=top) == ["Ann / 7"]


async def test_arrays_are_one_based_and_may_be_sized_by_an_expression() -> None:
    body = """
    var items[@NUMDTLT] : A10
    var i : N3
    For i = 1 To @NUMDTLT
        items[i] = @DTL_NAME[i]
    EndFor
    InfoMessage items[1], items[2]
    """
    assert await shown(body) == ["Latte / Bagel"]


async def test_an_index_out_of_range_is_an_error_with_its_line() -> None:
    text = event("var a[2] : N3\nvar i : N3\ni = 3\na[i] = 1")
    with pytest.raises(IslRuntimeError) as error:
        await press(text)
    assert error.value.line == 6 and "a[3] is out of range 1..2" in error.value.message


async def test_event_init_runs_once_when_the_station_starts() -> None:
    text = event(
        "InfoMessage gStarted",
        top="RetainGlobalVar\nvar gStarted : N3\nEvent Init\n  gStarted = gStarted + 1\nEndEvent",
    )
    station = station_for(text)
    await station.press(1)
    assert (await station.press(1)).messages == ["1"]
    assert [run.event for run in station.runs] == ["init", "inq : 1", "inq : 1"]


async def test_globals_persist_between_events_with_retainglobalvar_only() -> None:
    body = "gCount = gCount + 1\nInfoMessage gCount"
    for top, second in (("RetainGlobalVar\nvar gCount : N3", "2"), ("var gCount : N3", "1")):
        station = station_for(event(body, top=top))
        await station.press(1)
        assert (await station.press(1)).messages == [second]


# ---- control flow -----------------------------------------------------------------------------


async def test_if_elseif_else_takes_the_first_true_branch() -> None:
    body = """
    var i : N3
    For i = 1 To 3
        If i = 1 Then
            InfoMessage "one"
        ElseIf (i = 2)
            InfoMessage "two"
        Else
            InfoMessage "other"
        EndIf
    EndFor
    """
    assert await shown(body) == ["one", "two", "other"]


async def test_for_runs_inclusive_bounds_once_evaluated_and_break_leaves_it() -> None:
    body = """
    var i : N3
    var last : N3 = 3
    For i = 2 To last
        last = 10
        InfoMessage i
        If i = 3
            Break
        EndIf
    EndFor
    For i = 5 To 4
        InfoMessage "never"
    EndFor
    """
    assert await shown(body) == ["2", "3"]


async def test_while_loops_until_false_and_a_runaway_loop_is_stopped() -> None:
    assert await shown("var n : N3\nWhile n < 3\nn = n + 1\nEndWhile\nInfoMessage n") == ["3"]
    with pytest.raises(IslRuntimeError) as error:
        await press(event("While 1 = 1\nEndWhile"), loop_limit=50)
    assert error.value.line == 3 and "loop ran 50 times" in error.value.message


async def test_call_passes_var_by_value_and_ref_by_reference() -> None:
    subs = """
    Sub Change(Var copy : N3, Ref shared, Ref element, Ref whole)
        copy = 99
        shared = shared + 1
        element = "set"
        whole[2] = "whole"
        Return
        shared = 1000
    EndSub
    """
    body = """
    var a : N3 = 1
    var b : N3 = 1
    var list[2] : A8
    Call Change(a, b, list[1], list[])
    InfoMessage a, b
    InfoMessage list[1], list[2]
    """
    assert await shown(body, subs=subs) == ["1 / 2", "set / whole"]


async def test_subs_see_globals_and_their_callers_variables() -> None:
    subs = "Sub Peek\n  InfoMessage gShared\nEndSub"
    assert await shown("Call Peek", top='var gShared : A5 = "g"', subs=subs) == ["g"]
    # myusoutharm/res3700 pms170.isl declares its DLL handle in the event and loads it in a sub
    body = "var mine : N3 = 4\nCall Peek"
    assert await shown(body, subs="Sub Peek\n  InfoMessage mine\nEndSub") == ["4"]
    station = station_for(event("Call Peek", subs="Sub Peek\n  InfoMessage mine\nEndSub"))
    with pytest.raises(IslRuntimeError, match="mine is not declared here") as error:
        await station.press(1)
    assert error.value.line == 6


# ---- expressions ------------------------------------------------------------------------------


async def test_arithmetic_comparison_and_logic() -> None:
    body = """
    var m : $8
    m = 0.1 + 0.2
    InfoMessage 7 / 2, 2 + 3 * 4
    InfoMessage m, -m
    InfoMessage "b" > "a", "10" = 10
    InfoMessage 1 And 0, Not 0 Or 0
    InfoMessage "ab" + "cd", 8 / 4
    """
    assert await shown(body) == ["3.50 / 14", "0.30 / -0.30", "1 / 1", "0 / 1", "abcd / 2"]


async def test_and_or_stop_at_the_left_side_when_it_decides_but_an_index_out_of_range_fails() -> (
    None
):
    body = 'If @NUMDTLT > 5 And @DTL_TYPE[6] = "M"\nElseIf @NUMDTLT = 2 Or @DTL_TYPE[6] = "M"\n'
    body += 'InfoMessage "guarded"\nEndIf'
    assert await shown(body) == ["guarded"]
    with pytest.raises(IslRuntimeError) as error:
        await press(event('If @NUMDTLT > 1 And @DTL_TYPE[6] = "M"\nEndIf'))
    assert error.value.line == 3 and "@DTL_TYPE[6] is out of range 1..2" in error.value.message


async def test_plus_between_text_and_a_number_is_refused() -> None:
    with pytest.raises(IslRuntimeError, match="write Format"):
        await press(event('var a : A5 = "1"\nInfoMessage a + 1'))


async def test_division_by_zero_is_an_error() -> None:
    with pytest.raises(IslRuntimeError, match="division by zero"):
        await press(event("InfoMessage 1 / 0"))


async def test_text_functions_and_case_statements() -> None:
    body = """
    var s : A20 = "  Mixed Case  "
    var t : A20
    t = Trim(s)
    UpperCase t
    InfoMessage t, Len(t)
    t = Mid(t, 3, 3)
    LowerCase t
    InfoMessage t, Mid("abc", 3, 5)
    """
    assert await shown(body) == ["MIXED CASE / 10", "xed / c"]


async def test_format_joins_values_and_pads_by_spec() -> None:
    body = """
    var s : A40
    var m : $8 = -1.5
    Format s As "[", 7{02}, "|", "ab"{>4}, "|", "ab"{<4}, "|", m{06}, "|", (@YEAR + 2000){04}, "]"
    InfoMessage s
    """
    assert await shown(body) == ["[07|  ab|ab  |-01.50|2026]"]


async def test_split_fills_variables_and_a_trailing_whole_array() -> None:
    body = """
    var a : A5
    var n : N3
    var rest[3] : A5
    var missing : A5 = "x"
    Split "one;22;x;y", ";", a, n, rest[]
    InfoMessage a, n
    InfoMessage rest[1], rest[2]
    Split "solo", ";", a, missing
    InfoMessage a, Len(missing)
    """
    assert await shown(body) == ["one / 22", "x / y", "solo / 0"]


# ---- system variables -------------------------------------------------------------------------


async def test_system_variables_describe_the_register_the_clock_and_the_check() -> None:
    body = """
    InfoMessage @WSID, @RVC
    InfoMessage @CKNUM, @TREMP
    InfoMessage @YEAR, @MONTH
    InfoMessage @DAY, @HOUR
    InfoMessage @NUMDTLT, @TTLDUE
    InfoMessage @DTL_TYPE[2], @DTL_OBJECT[2]
    InfoMessage @DTL_QTY[1], @DTL_TTL[1]
    InfoMessage @DTL_IS_VOID[1], @CHK_TTL
    """
    assert await shown(body) == [
        "7 / 1",
        "42 / 101",
        "26 / 11",  # @YEAR has two digits
        "23 / 9",
        "2 / 9.25",
        "M / 1002",
        "2 / 7.00",
        "0 / 9.25",
    ]


async def test_with_no_check_open_the_check_number_and_detail_count_are_zero() -> None:
    station = station_for(event("InfoMessage @CKNUM, @NUMDTLT"), open_check=False)
    assert (await station.press(1)).messages == ["0 / 0"]


async def test_only_settings_system_variables_can_be_assigned() -> None:
    assert await shown("@Trace = 1\nInfoMessage @TRACE", top="@Trace=0") == ["1"]
    top = "@WARNINGS_ARE_FATAL = 1"
    assert await shown("@IDLE_SECONDS = 60\nInfoMessage @IDLE_SECONDS", top=top) == ["60"]
    script = parse_script(event("@CKNUM = 1"), "t.isl")  # loads: only running it fails
    assert [d.message for d in script.warnings] == ["@CKNUM cannot be assigned"]
    with pytest.raises(IslRuntimeError, match="@CKNUM cannot be assigned"):
        await press(event("@CKNUM = 1"))


# ---- the link ---------------------------------------------------------------------------------


async def test_txmsg_sends_one_field_per_argument_and_getrxmsg_sets_rxmsg() -> None:
    body = """
    var m : $8 = 27.4
    TxMsg "COUPON", @WSID, @CKNUM, "", "CODE", m
    GetRxMsg "Waiting"
    InfoMessage @RxMsg
    TxMsg "PING"
    GetRxMsg
    InfoMessage @RxMsg
    """
    station = station_for(event(body), replies=[["COUPON_OK", "C1"], None])
    run = await station.press(1)
    assert run.sent == [["COUPON", "7", "42", "", "CODE", "27.40"], ["PING"]]
    assert run.messages == ["COUPON_OK", "_timeout"]
    assert [s.text for s in run.shown if s.kind == "waiting"] == ["Waiting"]


async def test_waitforrxmsg_runs_the_handler_named_by_the_reply_then_carries_on() -> None:
    text = """
    Event Inq : 1
        TxMsg "PING"
        WaitForRxMsg
        InfoMessage "after"
    EndEvent
    Event RxMsg : pong
        var state : A20
        RxMsg state
        InfoMessage "pong", state
    EndEvent
    Event RxMsg : _TIMEOUT
        InfoMessage "timeout"
    EndEvent
    """
    station = station_for(text, replies=[["PONG", "ONLINE", "1.0"], None])
    first = await station.press(1)
    assert first.handlers == ["PONG"] and first.messages == ["pong / ONLINE", "after"]
    second = await station.press(1)
    assert second.handlers == ["_TIMEOUT"] and second.messages == ["timeout", "after"]


async def test_a_reply_with_no_handler_is_shown_as_an_error() -> None:
    station = station_for(event('TxMsg "PING"\nWaitForRxMsg'), replies=[["SURPRISE"]])
    run = await station.press(1)
    assert run.outcome.exit == "normal" and run.messages == ["No event rxmsg : SURPRISE"]


@pytest.mark.parametrize("includes_name", [False, True])
async def test_rxmsg_reads_the_fields_with_or_without_the_reply_name(includes_name: bool) -> None:
    body = (
        'var a : A9\nvar b : A9\nvar c : A9\nTxMsg "X"\nGetRxMsg\nRxMsg a, b, c\nInfoMessage a, c'
    )
    run = await press(
        event(body), replies=[["NAME", "one", "two"]], rxmsg_includes_name=includes_name
    )
    assert run.messages == (["NAME / two"] if includes_name else ["one / "])


async def test_waiting_with_nothing_sent_is_an_error_with_its_line() -> None:
    with pytest.raises(IslRuntimeError) as error:
        await press(event("InfoMessage 1\nWaitForRxMsg"))
    assert error.value.line == 4 and "no TxMsg was sent" in error.value.message


# ---- the cashier --------------------------------------------------------------------------------


async def test_input_takes_the_scripted_answer() -> None:
    body = 'var n : N5\nInput n, "How many?"\nInfoMessage n + 1, @INPUTSTATUS'
    run = await press(event(body), inputs=["41"])
    assert run.inputs == [("How many?", "41")] and run.messages == ["42 / 1"]


async def test_cancel_at_input_ends_the_event_unless_continueoncancel() -> None:
    body = 'var s : A5 = "x"\nInput s, "?"\nInfoMessage @INPUTSTATUS, Len(s)'
    stopped = await press(event(body), inputs=[None])
    assert stopped.outcome.exit == "ExitCancel" and stopped.messages == []
    went_on = await press(event(body, top="ContinueOnCancel"), inputs=[None])
    assert went_on.outcome.exit == "normal" and went_on.messages == ["0 / 0"]


async def test_an_input_the_scenario_did_not_answer_is_an_error_with_its_line() -> None:
    with pytest.raises(IslRuntimeError) as error:
        await press(event('var s : A5\nInput s, "Card?"'))
    assert error.value.line == 4 and "no scripted answer for Input 'Card?'" in error.value.message


async def test_messages_are_recorded_with_their_kind() -> None:
    run = await press(event('InfoMessage "t", "x"\nErrorMessage "bad"\nPrompt "wait"'))
    assert [(s.kind, s.texts) for s in run.shown] == [
        ("info", ("t", "x")),
        ("error", ("bad",)),
        ("prompt", ("wait",)),
    ]


@pytest.mark.parametrize(
    ("statement", "exit", "message"),
    [
        ("ExitCancel", "ExitCancel", ""),
        ("ExitContinue", "ExitContinue", ""),
        ('ExitWithError "No way"', "ExitWithError", "No way"),
    ],
)
async def test_exits_end_the_event_and_say_how(statement: str, exit: str, message: str) -> None:
    run = await press(event(f'{statement}\nInfoMessage "not reached"'))
    assert (run.outcome.exit, run.outcome.message) == (exit, message)
    assert "not reached" not in run.messages


# ---- the check --------------------------------------------------------------------------------


async def test_keyboard_macros_are_played_on_the_check_after_the_event() -> None:
    body = """
    LoadKybdMacro Key(5, 101), MakeKeys("1.50"), @KEY_ENTER
    LoadKybdMacro Key(5, 103), MakeKeys("10"), @KEY_ENTER
    LoadKybdMacro MakeKeys(2), Key(3, 1002), Key(5, 102)
    LoadKybdMacro Key(3, 9001), MakeKeys("REF-1"), @KEY_ENTER, Key(5, 104)
    InfoMessage @NUMDTLT
    """
    station = station_for(event(body))
    run = await station.press(1)
    assert run.messages == ["2"]  # macros run after the event, as on a POS
    assert run.macros[0] == [KeyValue(5, 101), "1.50", KEY_ENTER]
    check = station.check
    assert check is not None
    assert [(d.type, d.object, d.qty, d.total) for d in check.details[2:]] == [
        ("D", 101, 1, Decimal("-1.50")),
        ("D", 103, 1, Decimal("-0.93")),  # 10 % of 9.25, rounded half up
        ("M", 1002, 2, Decimal("4.50")),
        ("D", 102, 1, Decimal("-4.50")),  # the free item: 100 % of the last item
        ("M", 9001, 1, Decimal("0.00")),
        ("R", 0, 0, Decimal("0.00")),
        ("D", 104, 1, Decimal("-1.00")),
    ]
    assert check.details[7].name == "REF-1"
    assert check.total == Decimal("5.82")


async def test_a_macro_naming_an_object_the_pos_lacks_fails_loudly() -> None:
    station = station_for(event("LoadKybdMacro Key(5, 999)"))
    with pytest.raises(PosError, match="discount 999 is not in the POS configuration"):
        await station.press(1)


async def test_loadkybdmacro_takes_only_keys() -> None:
    with pytest.raises(IslRuntimeError, match="LoadKybdMacro takes keys"):
        await press(event('LoadKybdMacro "5"'))


async def test_an_open_discount_left_without_enter_is_a_warning() -> None:
    run = await press(event("LoadKybdMacro Key(5, 101)"))
    assert run.warnings == ["macro ended while a discount waited for ENTER"]


async def test_check_info_lines_are_saved_and_cleared() -> None:
    station = station_for(event('SaveChkInfo "old"\nClearChkInfo\nSaveChkInfo "Points 15"'))
    await station.press(1)
    assert station.check is not None and station.check.info_lines == ["Points 15"]


async def test_final_tender_fires_when_nothing_is_left_due_and_closes_the_check() -> None:
    text = "Event Final_Tender\n  InfoMessage @TTLDUE, @TNDTTL\nEndEvent"
    station = station_for(text)
    assert await station.tender(1, Decimal("5.00")) is None  # 4.25 still due
    run = await station.tender(1)
    assert run is not None and run.messages == ["0.00 / 9.25"]
    assert station.check is not None and station.check.closed


# ---- the script text --------------------------------------------------------------------------


async def test_names_are_case_insensitive_and_lines_continue_with_a_backslash() -> None:
    text = """
    RETAINGLOBALVAR
    VAR gX : n3 = 4   // a comment
    event INQ : 01
        infomessage GX, \\
                    "http://not-a-comment"
    endevent
    """
    station = station_for(text)
    assert (await station.press(1)).messages == ["4 / http://not-a-comment"]


@pytest.mark.parametrize(
    ("text", "line", "col", "message"),
    [
        (event("Frobnicate 1"), 3, 1, "unknown statement 'Frobnicate'"),
        (event("If 1 = 1\nInfoMessage 1"), 3, 0, "If is not closed before EndEvent on line 5"),
        ("Event Inq : 1\nIf 1 = 1", 2, 0, "If is not closed (expected EndIf)"),
        (event("EndFor"), 3, 1, "'EndFor' before the Event of line 2 is closed"),
        (event('var d : A5\nFormat d As "x"{m2, *}'), 4, 16, "format spec {m2, *} is not one"),
        ('InfoMessage "top"', 1, 1, "only directives, var/const, Event, Sub, Include and"),
        ("Event Inq : 1\nEndEvent\nEvent inq : 1\nEndEvent", 3, 1, "event inq : 1 is defined"),
        (event('InfoMessage "open'), 3, 13, "string is not closed"),
        (event("x = = 1"), 3, 5, "expected an expression, found '='"),
        (event("var a[2, 3] : N3"), 3, 10, "more than one dimension"),
        (event("var q : Z9"), 3, 9, "unknown type 'Z9'"),
        (event("var ref : A9"), 3, 5, "'ref' is an ISL keyword, not a variable name"),
        ("Sub Input\nEndSub", 1, 5, "'Input' is an ISL keyword, not a sub name"),
    ],
)
def test_a_line_that_does_not_parse_is_an_error_naming_its_line_and_column(
    text: str, line: int, col: int, message: str
) -> None:
    with pytest.raises(IslSyntaxError) as error:
        parse_script(text, "t.isl")
    assert (error.value.line, error.value.col) == (line, col)
    assert message in error.value.message
    where = f"t.isl:{line}:{col}: " if col else f"t.isl:{line}: "
    assert str(error.value).startswith(where)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (event("x = 1"), 3, "x is not declared (fails if this line runs)"),
        (event("InfoMessage @WEATHER"), 3, "system variable @WEATHER is not simulated"),
        (event("InfoMessage Frob(1, 2)"), 3, "unknown function 'frob'"),
        (event("InfoMessage Mid(1)"), 3, "mid takes 3 argument(s), got 1"),
        (event("Break"), 3, "Break outside a For, Forever or While"),
        (event("Return"), 3, "Return in an event ends the event"),
        (event("Call Nowhere"), 3, "no sub named Nowhere (fails if this line runs)"),
        (event("Call S(1)", subs="Sub S\nEndSub"), 3, "S takes 0 argument(s), got 1"),
        (event("Call S(1)", subs="Sub S(Ref r)\nEndSub"), 3, "is Ref: pass a variable"),
        (event("InfoMessage @DTL_TYPE"), 3, "@DTL_TYPE needs an index"),
    ],
)
def test_what_may_fail_when_it_runs_loads_with_a_warning(
    text: str, line: int, message: str
) -> None:
    script = parse_script(text, "t.isl")
    assert [d.line for d in script.warnings] == [line]
    assert message in script.warnings[0].message
