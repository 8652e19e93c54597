"""A simulated workstation running a script: the `Host` the interpreter talks to.

It holds the check being rung, fires the events a POS fires (an inquiry key, begin check, a
changed detail, a cancelled transaction, the final tender), answers `Input` and the cashier's
other keys from scripted answers, sends `TxMsg` over the link, plays the keyboard macros after
each event, and records what the cashier saw, what was printed and what went on the receipt, so
a test can assert on them and the command line can print them. Windows, files, printers, DLLs
and .NET calls are its `devices` (devices.py).
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from isl_plugin.islrun.check import Detail, PosConfig, PosError, SimCheck
from isl_plugin.islrun.devices import Devices, PrintJob
from isl_plugin.islrun.errors import ScenarioError
from isl_plugin.islrun.interpreter import (
    Interpreter,
    MacroKey,
    NoInputLeft,
    Outcome,
    RunOptions,
)
from isl_plugin.islrun.link import Link, LinkEvent
from isl_plugin.islrun.nodes import Script
from isl_plugin.islrun.values import Value


@dataclass(frozen=True, slots=True)
class Register:
    """Who the workstation is: what @WSID, @RVC, @TREMP ... read."""

    wsid: int = 7
    rvc: int = 1
    rvc_name: str = "Main"
    employee: int = 101
    version: str = "5.7"  # @VERSION; a RES-like "major.minor"
    touchscreen: int = 1  # @ALPHASCREEN


@dataclass(frozen=True, slots=True)
class Shown:
    """A message on the cashier's screen: info, error, waiting or prompt."""

    kind: str
    texts: tuple[str, ...]

    @property
    def text(self) -> str:
        return " / ".join(self.texts)


@dataclass
class EventRun:
    """One event the POS fired, with everything the script did during it."""

    event: str
    outcome: Outcome = field(default_factory=lambda: Outcome("normal"))
    shown: list[Shown] = field(default_factory=list)
    inputs: list[tuple[str, str | None]] = field(default_factory=list)
    sent: list[list[str]] = field(default_factory=list)
    replies: list[list[str] | None] = field(default_factory=list)  # None: no reply in time
    handlers: list[str] = field(default_factory=list)  # replies whose rxmsg event ran
    macros: list[list[MacroKey]] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)  # what the macros did to the check
    warnings: list[str] = field(default_factory=list)
    printed: list[PrintJob] = field(default_factory=list)  # StartPrint ... EndPrint jobs

    @property
    def messages(self) -> list[str]:
        return [shown.text for shown in self.shown if shown.kind != "waiting"]

    def saw(self, text: str) -> bool:
        """Whether the cashier saw a message containing `text`."""
        return any(text in message for message in self.messages)


@dataclass(frozen=True, slots=True)
class StationOptions:
    timeout_s: float = 5.0  # the interface's reply timeout
    rxmsg_includes_name: bool = False
    loop_limit: int = 100_000


class Station:
    def __init__(
        self,
        script: Script,
        link: Link,
        *,
        register: Register | None = None,
        pos: PosConfig | None = None,
        options: StationOptions | None = None,
        clock: Callable[[], dt.datetime] = dt.datetime.now,
        devices: Devices | None = None,
    ) -> None:
        self.script = script
        self.link = link
        self._devices = devices or Devices()
        self.register = register or Register()
        self.pos = pos or PosConfig()
        self.options = options or StationOptions()
        self.clock = clock  # the register's clock: @YEAR ... of a check begun without a time
        self.interpreter = Interpreter(
            script,
            self,
            RunOptions(
                rxmsg_includes_name=self.options.rxmsg_includes_name,
                loop_limit=self.options.loop_limit,
            ),
        )
        self.check: SimCheck | None = None
        self.now = clock().replace(microsecond=0)
        self.runs: list[EventRun] = []
        self.trace: list[tuple[str, str]] = []  # (kind, text), for the transcript
        self.wire: list[LinkEvent] = []  # every link event, with the frames' bytes
        self._run: EventRun | None = None
        self._inputs: deque[str | None] = deque()
        self._started = False

    @property
    def decimals(self) -> int:
        return self.pos.decimals

    @property
    def devices(self) -> Devices:
        return self._devices

    # ---- what the cashier does -----------------------------------------------------------------

    async def start(self) -> EventRun | None:
        """Load the script as the POS does at start-up: globals, then `event init` if any."""
        self.interpreter.init_globals()
        self._started = True
        if self.script.event("init") is None:
            return None
        return await self.fire("init")

    def open_check(self, number: int, at: dt.datetime | None = None) -> SimCheck:
        if self.check is not None and not self.check.closed:
            self.trace.append(("check", f"check {self.check.number} left open"))
        self.now = (at or self.clock()).replace(microsecond=0)
        self.check = SimCheck(number, self.pos, self.now)
        self.trace.append(
            ("check", f"check {number} opened (rvc {self.register.rvc}, {self.now:%Y-%m-%d %H:%M})")
        )
        return self.check

    def _open_check(self) -> SimCheck:
        if self.check is None or self.check.closed:
            raise ScenarioError("no check is open: begin one first")
        return self.check

    async def begin(self, number: int, at: dt.datetime | None = None) -> EventRun | None:
        """Begin a check as the cashier does: the POS fires `begin_check` if the script has it."""
        self.open_check(number, at)
        return await self._fire_if("begin_check")

    def ring(self, obj: int, qty: int = 1, seat: int = 0) -> Detail:
        detail = self._open_check().ring(obj, qty, seat)
        self.trace.append(("ring", detail.describe()))
        return detail

    async def void(self, line: int | None = None, obj: int = 0, kind: str = "") -> EventRun | None:
        """Void a line (or the last line of an object) as the cashier does: the POS fires
        `dtl_changed` if the script has it."""
        if line is not None:
            self.void_line(line)
        else:
            self.void_last(obj, kind)
        return await self._fire_if("dtl_changed")

    async def cancel(self) -> EventRun | None:
        """Cancel the transaction: the POS fires `trans_cncl` (the check still readable), then
        the check is closed without a tender."""
        check = self._open_check()
        run = await self._fire_if("trans_cncl")
        check.closed = check.cancelled = True
        self.trace.append(("check", f"check {check.number} cancelled"))
        return run

    async def _fire_if(self, kind: str) -> EventRun | None:
        if self.script.event(kind) is None:
            return None
        return await self.fire(kind)

    def void_line(self, line: int) -> Detail:
        detail = self._open_check().void_line(line)
        self.trace.append(("void", detail.describe()))
        return detail

    def void_last(self, obj: int, kind: str = "") -> Detail:
        detail = self._open_check().void_last(obj, kind)
        self.trace.append(("void", detail.describe()))
        return detail

    async def press(self, inquiry: int | str, inputs: Sequence[str | None] = ()) -> EventRun:
        """Touch the key that runs `event inq : <inquiry>` (a number, or the name of a Simphony
        inquiry such as `GetTaxTotals`), with the cashier's answers."""
        return await self.fire("inq", str(inquiry), inputs)

    async def tender(self, obj: int = 1, amount: Decimal | None = None) -> EventRun | None:
        """Tender the check; when nothing is left due, the POS fires final_tender and closes it."""
        check = self._open_check()
        detail = check.tender(obj, amount)
        self.trace.append(("tender", f"{detail.describe()}, due {check.due}"))
        if check.due > 0:
            return None
        run = await self.fire("final_tender") if self.script.event("final_tender") else None
        check.closed = True
        self.trace.append(("check", f"check {check.number} closed"))
        return run

    async def fire(self, kind: str, arg: str = "", inputs: Sequence[str | None] = ()) -> EventRun:
        if not self._started:
            await self.start()
        event = self.script.event(kind, arg)
        if event is None:
            name = f"{kind} : {arg}" if arg else kind
            raise ScenarioError(f"{self.script.source} has no event {name}")
        run = EventRun(event.title)
        self._run = run
        self._inputs = deque(inputs)
        jobs_before = len(self.devices.printed)
        try:
            outcome = await self.interpreter.fire(kind, arg)
        finally:
            self._drain_link()
            self._run = None
            run.printed = self.devices.printed[jobs_before:]
        assert outcome is not None
        run.outcome = outcome
        if self._inputs:
            run.warnings.append(f"{len(self._inputs)} scripted answer(s) not asked for")
        self.trace.append(
            ("exit", outcome.exit + (f" ({outcome.message})" if outcome.message else ""))
        )
        self._play(run)
        for warning in run.warnings:
            self.trace.append(("warning", warning))
        self.runs.append(run)
        return run

    def _play(self, run: EventRun) -> None:
        for keys in run.macros:
            check = self._open_check()
            try:
                result = check.play(keys)
            except PosError as error:
                self.trace.append(("macro", f"{_keys_text(keys)}  FAILED: {error}"))
                raise
            self.trace.append(("macro", _keys_text(keys)))
            for change in result.changes:
                self.trace.append(("check", change))
            run.changes += result.changes
            run.warnings += result.warnings

    # ---- the Host the interpreter calls --------------------------------------------------------

    def _current(self) -> EventRun:
        assert self._run is not None, "the script runs only inside an event"
        return self._run

    def sysvar(self, name: str, index: int | None) -> Value:
        reg = self.register
        check = self.check
        now = self.now
        scalars: dict[str, Value] = {
            "@WSID": reg.wsid,
            "@RVC": reg.rvc,
            "@RVCNAME": reg.rvc_name,
            "@CKEMP": reg.employee,
            "@TREMP": reg.employee,
            "@VERSION": reg.version,
            "@WSTYPE": 1,
            "@ALPHASCREEN": reg.touchscreen,
            "@SLVL": 1,
            "@MLVL": 1,
            "@WSNAME": f"WS{reg.wsid}",
            "@SERVERNAME": "SERVER",
            "@CASHIER": reg.employee,
            "@ORDERTYPE": 1,
            "@SRVPRD": 1,
            "@WEEKDAY": (now.weekday() + 1) % 7,
            "@YEAR": now.year % 100,
            "@MONTH": now.month,
            "@DAY": now.day,
            "@HOUR": now.hour,
            "@MINUTE": now.minute,
            "@SECOND": now.second,
        }
        if name in scalars:
            return scalars[name]
        zero = Decimal(0).quantize(Decimal(1).scaleb(-self.decimals))
        if name == "@CKNUM":
            return check.number if check is not None and not check.closed else 0
        if name == "@CKID":
            return ""
        if name == "@GST":
            return 1 if check is not None and not check.closed else 0
        details = check.details if check is not None and not check.closed else []
        money: dict[str, Decimal] = {}
        if check is not None and not check.closed:
            money = {
                "@TTLDUE": check.due,
                "@TNDTTL": check.tendered,
                "@CHK_TTL": check.total,
                "@DSC": check.discounts,
                "@SVC": check.service,
            }
        if name in ("@TTLDUE", "@TNDTTL", "@CHK_TTL", "@DSC", "@SVC"):
            return money.get(name, zero)
        if name in ("@NUMDTLT", "@NUMDTLR"):
            return len(details)
        if index is None:
            raise IndexError(f"{name} is not simulated by islrun")
        if name in ("@TAX", "@TAXVAT", "@TXBL"):
            return zero  # the simulated POS has no tax
        if name == "@EMPLOPT":
            return 0
        if not 1 <= index <= len(details):
            raise IndexError(f"{name}[{index}] is out of range 1..{len(details)}")
        detail = details[index - 1]
        values: dict[str, Value] = {
            "@DTL_TYPE": detail.type,
            "@DTL_OBJECT": detail.object,
            "@DTL_NAME": detail.name,
            "@DTL_QTY": detail.qty,
            "@DTL_TTL": detail.total,
            "@DTL_IS_VOID": int(detail.void),
            "@DTL_IS_COND": int(detail.condiment),
            "@DTL_IS_DEFAULT_COND": 0,
            "@DTL_IS_COMBO": 0,
            "@DTL_IS_COMBO_MAIN": 0,
            "@DTL_SEAT": detail.seat,
            "@DTL_STATUS": detail.status,
            "@DTL_FAMGRP": detail.family_group,
            "@DTL_FAMGRP_OBJNUM": detail.family_group,
            "@DTL_MAJGRP_OBJNUM": 0,
            "@DTL_SLVL": 1,
            "@DTL_PLVL": 1,
            "@DTL_MLVL": 1,
            "@DTL_NAME_TWO": "",
            "@DTL_DSCI": 0,
        }
        if name not in values:
            raise IndexError(f"{name} is not simulated by islrun")
        return values[name]

    async def send(self, fields: list[str]) -> None:
        self._current().sent.append(fields)
        await self.link.send(fields)
        self._drain_link()

    async def receive(self) -> list[str] | None:
        reply = await self.link.receive(self.options.timeout_s)
        self._drain_link()
        self._current().replies.append(reply)
        return reply

    def next_input(self, prompt: str) -> str | None:
        run = self._current()
        if not self._inputs:
            raise NoInputLeft(repr(prompt))
        answer = self._inputs.popleft()
        run.inputs.append((prompt, answer))
        self.trace.append(("input", f"{prompt!r} <- {'(cancel)' if answer is None else answer}"))
        return answer

    def show(self, kind: str, texts: tuple[str, ...]) -> None:
        shown = Shown(kind, texts)
        self._current().shown.append(shown)
        self.trace.append((kind, shown.text))

    def macro(self, keys: list[MacroKey]) -> None:
        self._current().macros.append(keys)

    def clear_macros(self) -> None:
        self._current().macros.clear()

    def save_chk_info(self, text: str) -> None:
        if self.check is None or self.check.closed:
            self._current().warnings.append(f"SaveChkInfo {text!r} with no check open: lost")
            return
        self.check.info_lines.append(text)
        self.trace.append(("chkinfo", text))

    def clear_chk_info(self) -> None:
        if self.check is not None and not self.check.closed:
            self.check.info_lines.clear()
            self.trace.append(("chkinfo", "(cleared)"))

    def note(self, kind: str, text: str) -> None:
        if kind == "event" and self._run is not None and text.startswith("rxmsg"):
            self._run.handlers.append(text.partition(":")[2].strip())
        if kind == "warning" and self._run is not None:
            self._run.warnings.append(text)
        self.trace.append((kind, text))

    def _drain_link(self) -> None:
        for event in self.link.events:
            self.trace.append((event.kind, event.text))
            self.wire.append(event)
        self.link.events.clear()


def _keys_text(keys: Sequence[MacroKey]) -> str:
    return ", ".join(repr(key) if isinstance(key, str) else str(key) for key in keys)
