"""Run the statements of a parsed script against a `Host`: the register around the script, which
owns the check, the link to the gateway, the cashier's answers and what the cashier sees.

Semantics where ISL's are not public (docs/isl.md gives the evidence for each):
- `And`/`Or` stop at the left side when it decides (short circuit): production scripts guard
  `@DTL_TYPE[i + 1]` with `i + 1 <= @NUMDTLT And ...`; an array index out of range is an error.
- Names resolve when the code runs: an undeclared variable, a sub or a system variable islrun
  does not have fails on the line that uses it, not when the script loads.
- `WaitForRxMsg` runs the `event rxmsg : <first field of the reply>` handler (`_TIMEOUT` when no
  reply came in time) before the statement after it; the plugin ends its events with it, so
  it behaves the same if a real POS ends the event there instead.
- `RxMsg v1, v2, ...` fills the variables with the reply's fields after its name, or from its
  name when `rxmsg_includes_name` is set; the plugin copes with both.
- Without `RetainGlobalVar`, globals start afresh at every event the POS fires.
- A cancelled `Input` ends the event (ExitCancel) unless `ContinueOnCancel` is set; then the
  variable is emptied and `@INPUTSTATUS` is 0.
- Windows, the ISL touchscreen, files, printing, DLL and .NET calls go to `host.devices`
  (devices.py), which records them; the cashier's keys and typing are scripted answers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal, DivisionByZero, InvalidOperation
from typing import Protocol

from isl_plugin.islrun import nodes
from isl_plugin.islrun.device_statements import dll_call, run_device
from isl_plugin.islrun.devices import Devices, NetError
from isl_plugin.islrun.errors import IslRuntimeError
from isl_plugin.islrun.sysvars import PRINTERS, sysvar_spec
from isl_plugin.islrun.values import (
    ConversionError,
    IslType,
    KeyValue,
    Value,
    apply_spec,
    convert,
    is_true,
    named_key,
    to_int,
    to_number,
    to_text,
)
from isl_plugin.islrun.vocabulary import call_problem

TIMEOUT_REPLY = "_TIMEOUT"
MAX_HANDLER_DEPTH = 8


class NoInputLeft(Exception):
    """The scenario gives no answer for an Input the script asks."""


class NothingSent(Exception):
    """GetRxMsg / WaitForRxMsg with no TxMsg before it."""


MacroKey = KeyValue | str  # a key, or the text of MakeKeys(...)


class Host(Protocol):
    """The register around a running script."""

    @property
    def decimals(self) -> int: ...

    def sysvar(self, name: str, index: int | None) -> Value: ...

    async def send(self, fields: list[str]) -> None: ...

    async def receive(self) -> list[str] | None:
        """The reply to the last TxMsg, or None when none came in time. Raises NothingSent."""
        ...

    def next_input(self, prompt: str) -> str | None:
        """The cashier's answer (None: cancelled). Raises NoInputLeft."""
        ...

    def show(self, kind: str, texts: tuple[str, ...]) -> None: ...

    def macro(self, keys: list[MacroKey]) -> None: ...

    def clear_macros(self) -> None:
        """ClearKybdMacro: forget the keys this event queued."""
        ...

    def save_chk_info(self, text: str) -> None: ...

    def clear_chk_info(self) -> None: ...

    def note(self, kind: str, text: str) -> None: ...

    @property
    def devices(self) -> Devices:
        """The screen, files, printers, DLLs and .NET assemblies around the script."""
        ...


@dataclass(frozen=True, slots=True)
class RunOptions:
    rxmsg_includes_name: bool = False
    loop_limit: int = 100_000


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an event the POS fired ended: "normal", "ExitCancel", "ExitContinue", "ExitWithError"."""

    exit: str
    message: str = ""


class Cell:
    """One variable, or one element of an array: holds a value of its type."""

    __slots__ = ("const", "name", "type", "value")

    def __init__(self, name: str, type_: IslType, value: Value, *, const: bool = False) -> None:
        self.name = name
        self.type = type_
        self.value = value
        self.const = const


class ArrayCell:
    __slots__ = ("items", "name", "type")

    def __init__(self, name: str, type_: IslType, size: int) -> None:
        self.name = name
        self.type = type_
        self.items = [Cell(f"{name}[{i}]", type_, type_.default()) for i in range(1, size + 1)]


Slot = Cell | ArrayCell
Frame = dict[str, Slot]


class _Fail(Exception):
    """A statement failed; turned into IslRuntimeError with the statement's line."""


class ScriptExit(Exception):
    def __init__(self, kind: str, message: str = "") -> None:
        super().__init__(kind)
        self.kind = kind
        self.message = message


class _Break(Exception):
    pass


class _Return(Exception):
    pass


class Interpreter:
    def __init__(self, script: nodes.Script, host: Host, options: RunOptions | None = None) -> None:
        self.script = script
        self.host = host
        self.options = options or RunOptions()
        self.globals: Frame = {}
        self.rxmsg = ""
        self.input_status = 1
        self.trace = 0
        self.last_reply: list[str] | None = None
        self.received = False
        self._depth = 0
        self._initialised = False
        self.written: dict[tuple[str, int | None], Value] = {}  # writable system variables
        self.continue_on_cancel = "continueoncancel" in script.directives
        self.mag_status = "N"
        self._callers: list[Frame] = []  # the frames of the event and subs that called this one
        # window input fields: the field, its prompt, whether it was swiped
        self.fields: list[tuple[nodes.FieldArg, str, bool]] = []
        self.file_errno = 0
        self.file_errstr = ""

    # ---- the POS fires events --------------------------------------------------------------

    def init_globals(self) -> None:
        """Run the top of the script: global declarations and `@Trace = n`-like settings."""
        self.globals = {}
        for stmt in self.script.globals:
            if isinstance(stmt, nodes.VarStmt):
                self._declare(stmt, self.globals)
                continue
            try:
                self._assign(stmt.target, self._eval(stmt.expr, {}), {})
            except (_Fail, ConversionError) as failure:
                raise self._error(stmt.line, str(failure)) from None
        self._initialised = True

    async def fire(self, kind: str, arg: str = "") -> Outcome | None:
        """Run `event kind : arg`; None when the script has no such event."""
        event = self.script.event(kind, arg)
        if event is None:
            return None
        if not self._initialised or "retainglobalvar" not in self.script.directives:
            self.init_globals()
        self.received = False
        self.last_reply = None
        try:
            await self._run_event(event)
        except ScriptExit as stop:
            return Outcome(stop.kind, stop.message)
        return Outcome("normal")

    async def _run_event(self, event: nodes.Event) -> None:
        self.host.note("event", event.title)
        with contextlib.suppress(_Return):  # Return in an event ends it, as the linter says
            await self._block(event.body, {})

    # ---- statements --------------------------------------------------------------------------

    async def _block(self, stmts: Sequence[nodes.Stmt], frame: Frame) -> None:
        for stmt in stmts:
            await self._stmt(stmt, frame)

    def _error(self, line: int, message: str) -> IslRuntimeError:
        return IslRuntimeError(self.script.source, line, message)

    async def _stmt(self, stmt: nodes.Stmt, frame: Frame) -> None:
        try:
            await self._exec(stmt, frame)
        except (_Fail, ValueError, LookupError) as failure:  # ValueError: a value no frame
            raise self._error(stmt.line, str(failure)) from None  # can carry, too
        except NetError as failure:
            raise self._error(stmt.line, f".NET call failed: {failure}") from None
        except NoInputLeft as failure:
            raise self._error(stmt.line, f"no scripted answer for Input {failure}") from None
        except NothingSent:
            raise self._error(stmt.line, "waiting for a reply, but no TxMsg was sent") from None

    async def _exec(self, stmt: nodes.Stmt, frame: Frame) -> None:
        if isinstance(stmt, nodes.Assign):
            self._assign(stmt.target, self._eval(stmt.expr, frame), frame)
        elif isinstance(stmt, nodes.VarStmt):
            self._declare(stmt, frame)
        elif isinstance(stmt, nodes.IfStmt):
            for cond, body in stmt.branches:
                if is_true(self._eval(cond, frame)):
                    await self._block(body, frame)
                    return
            await self._block(stmt.otherwise, frame)
        elif isinstance(stmt, nodes.ForStmt):
            await self._for(stmt, frame)
        elif isinstance(stmt, nodes.WhileStmt):
            await self._repeat(stmt.body, frame, lambda: is_true(self._eval(stmt.cond, frame)))
        elif isinstance(stmt, nodes.BreakStmt):
            raise _Break
        elif isinstance(stmt, nodes.ReturnStmt):
            raise _Return
        elif isinstance(stmt, nodes.CallStmt):
            await self._call(stmt, frame)
        elif isinstance(stmt, nodes.FormatStmt):
            parts = []
            for item in stmt.items:
                value = self._eval(item.expr, frame)
                text = to_text(value, self.host.decimals)
                if item.spec is not None:
                    text = apply_spec(text, item.spec, not isinstance(value, str))
                parts.append(text)
            self._assign(stmt.target, "".join(parts), frame)
        elif isinstance(stmt, nodes.SplitStmt):
            self._split(stmt, frame)
        elif isinstance(stmt, nodes.CaseStmt):
            value = self._eval(stmt.target, frame)
            if not isinstance(value, str):
                raise _Fail(f"{'UpperCase' if stmt.upper else 'LowerCase'} needs a text variable")
            self._assign(stmt.target, value.upper() if stmt.upper else value.lower(), frame)
        elif isinstance(stmt, nodes.TxMsgStmt):
            fields = [to_text(self._eval(arg, frame), self.host.decimals) for arg in stmt.args]
            await self.host.send(fields)
        elif isinstance(stmt, nodes.GetRxMsgStmt):
            if stmt.prompt is not None:
                prompt = to_text(self._eval(stmt.prompt, frame), self.host.decimals)
                self.host.show("waiting", (prompt,))
            reply = await self._receive()
            self.rxmsg = reply[0] if reply else TIMEOUT_REPLY.lower()
        elif isinstance(stmt, nodes.WaitForRxMsgStmt):
            await self._wait_for_reply()
        elif isinstance(stmt, nodes.RxMsgStmt):
            self._read_reply(stmt, frame)
        elif isinstance(stmt, nodes.InputStmt):
            await self._input(stmt, frame)
        elif isinstance(stmt, nodes.MessageStmt):
            texts = []
            for number, arg in enumerate(stmt.args):
                value = self._eval(arg, frame)
                text = to_text(value, self.host.decimals)
                spec = stmt.specs[number] if number < len(stmt.specs) else None
                if spec is not None:
                    text = apply_spec(text, spec, not isinstance(value, str))
                texts.append(text)
            self.host.show(stmt.kind, tuple(texts))
        elif isinstance(stmt, nodes.ExitStmt):
            message = ""
            if stmt.message is not None:
                message = to_text(self._eval(stmt.message, frame), self.host.decimals)
                self.host.show("error", (message,))
            raise ScriptExit(stmt.kind, message)
        elif isinstance(stmt, nodes.MacroStmt):
            self.host.macro([self._macro_key(key, frame) for key in stmt.keys])
        elif isinstance(stmt, nodes.SaveChkInfoStmt):
            self.host.save_chk_info(to_text(self._eval(stmt.expr, frame), self.host.decimals))
        elif isinstance(stmt, nodes.ClearChkInfoStmt):
            self.host.clear_chk_info()
        elif isinstance(stmt, nodes.ForeverStmt):
            await self._repeat(stmt.body, frame, lambda: True)
        elif isinstance(stmt, nodes.TryStmt):
            await self._try(stmt, frame)
        elif isinstance(stmt, nodes.DeviceStmt):
            await run_device(self, stmt, frame)
        elif isinstance(stmt, nodes.DllCallStmt):
            dll_call(self, stmt, frame)
        elif isinstance(stmt, nodes.NetCallStmt):
            self._net_call(stmt.call, frame)
        elif isinstance(stmt, nodes.NoOpStmt):
            if stmt.name in ("continueoncancel", "exitoncancel"):
                self.continue_on_cancel = stmt.name == "continueoncancel"
        elif isinstance(stmt, nodes.BadStmt):
            raise _Fail(f"this line did not parse: {stmt.message}")
        else:  # pragma: no cover - the parser builds no other statement
            raise _Fail(f"cannot run {type(stmt).__name__}")

    async def _try(self, stmt: nodes.TryStmt, frame: Frame) -> None:
        """Simphony's Try: a statement that fails in the body (a .NET exception, a runtime
        error) runs the Catch block instead of ending the event."""
        try:
            await self._block(stmt.body, frame)
        except IslRuntimeError as failure:
            self.host.note("warning", f"caught at line {failure.line}: {failure.message}")
            await self._block(stmt.handler, frame)

    async def _repeat(
        self, body: Sequence[nodes.Stmt], frame: Frame, more: Callable[[], bool]
    ) -> None:
        """While and Forever: the body again while `more()` holds, until a Break."""
        runs = 0
        while more():
            runs = self._count(runs)
            try:
                await self._block(body, frame)
            except _Break:
                return

    def _count(self, runs: int) -> int:
        if runs >= self.options.loop_limit:
            raise _Fail(f"loop ran {runs} times: stopped (loop_limit)")
        return runs + 1

    async def _for(self, stmt: nodes.ForStmt, frame: Frame) -> None:
        """Bounds and step are evaluated once; with a negative Step the loop counts down."""
        self._assign(stmt.var, self._eval(stmt.start, frame), frame)
        end = to_number(self._eval(stmt.end, frame))
        step = 1 if stmt.step is None else to_number(self._eval(stmt.step, frame))
        if step == 0:
            raise _Fail("For ... Step 0 never ends")
        runs = 0
        while True:
            value = to_number(self._eval(stmt.var, frame))
            if (step > 0 and value > end) or (step < 0 and value < end):
                return
            runs = self._count(runs)
            try:
                await self._block(stmt.body, frame)
            except _Break:
                return
            self._assign(stmt.var, to_number(self._eval(stmt.var, frame)) + step, frame)

    async def _call(self, stmt: nodes.CallStmt, frame: Frame) -> None:
        sub = self.script.subs.get(stmt.name.lower())
        if sub is None:
            raise _Fail(f"no sub named {stmt.name}")
        if len(stmt.args) != len(sub.params):
            raise _Fail(f"{sub.name} takes {len(sub.params)} argument(s), got {len(stmt.args)}")
        local: Frame = {}
        for arg, param in zip(stmt.args, sub.params, strict=True):
            key = param.name.lower()
            if param.by_ref:
                local[key] = self._slot(arg, frame)
            else:
                assert param.type is not None and not isinstance(arg, nodes.WholeArray)
                cell = Cell(param.name, param.type, param.type.default())
                self._store(cell, self._eval(arg, frame))
                local[key] = cell
        self._callers.append(frame)
        try:
            await self._run_sub(sub, local)
        finally:
            self._callers.pop()

    async def _run_sub(self, sub: nodes.Sub, local: Frame) -> None:
        with contextlib.suppress(_Return):
            await self._block(sub.body, local)

    def _split(self, stmt: nodes.SplitStmt, frame: Frame) -> None:
        text = to_text(self._eval(stmt.source, frame), self.host.decimals)
        separator = to_text(self._eval(stmt.separator, frame), self.host.decimals)
        if not separator:
            raise _Fail("Split needs a separator")
        pieces = text.split(separator)
        for position, target in enumerate(stmt.targets):
            if isinstance(target, nodes.WholeArray):
                array = self._slot(target, frame)
                assert isinstance(array, ArrayCell)
                rest = pieces[position:]
                if len(rest) > len(array.items):
                    raise _Fail(f"Split: {len(rest)} pieces for {target.name}[{len(array.items)}]")
                for cell, piece in zip(array.items, rest, strict=False):
                    self._store(cell, piece)
                return
            self._assign(target, pieces[position] if position < len(pieces) else "", frame)

    async def _receive(self) -> list[str] | None:
        reply = await self.host.receive()
        self.last_reply = reply
        self.received = True
        return reply

    async def _wait_for_reply(self) -> None:
        reply = await self._receive()
        name = reply[0].upper() if reply else TIMEOUT_REPLY
        self.rxmsg = reply[0] if reply else TIMEOUT_REPLY.lower()
        handler = self.script.event("rxmsg", name)
        if handler is None and "|" in name:
            # a reply carried as one |-separated field: its name is the text before the first |
            name = name.split("|", 1)[0]
            handler = self.script.event("rxmsg", name)
        if handler is None:
            self.host.show("error", (f"No event rxmsg : {name}",))
            return
        if self._depth >= MAX_HANDLER_DEPTH:
            raise _Fail(f"rxmsg handlers nested more than {MAX_HANDLER_DEPTH} deep")
        self._depth += 1
        try:
            await self._run_event(handler)
        finally:
            self._depth -= 1

    def _read_reply(self, stmt: nodes.RxMsgStmt, frame: Frame) -> None:
        if not self.received:
            raise _Fail("RxMsg before any reply was received")
        fields = self.last_reply or []
        if not self.options.rxmsg_includes_name:
            fields = fields[1:]
        for position, target in enumerate(stmt.targets):
            self._assign(target, fields[position] if position < len(fields) else "", frame)

    async def _input(self, stmt: nodes.InputStmt, frame: Frame) -> None:
        prompt = to_text(self._eval(stmt.prompt, frame), self.host.decimals)
        answer = self.host.next_input(prompt)
        if answer is None:
            self.input_status = 0
            if not self.continue_on_cancel:
                raise ScriptExit("ExitCancel", "cancelled at Input")
            answer = ""
        else:
            self.input_status = 1
        self._assign(stmt.target, answer, frame)

    def _macro_key(self, key: nodes.Expr | nodes.MakeKeys, frame: Frame) -> MacroKey:
        if isinstance(key, nodes.MakeKeys):
            return to_text(self._eval(key.expr, frame), self.host.decimals)
        value = self._eval(key, frame)
        if not isinstance(value, KeyValue):
            raise _Fail(
                f"LoadKybdMacro takes keys (Key(type, object), MakeKeys(text), @KEY_ENTER), "
                f"not {value!r}"
            )
        return value

    # ---- variables ---------------------------------------------------------------------------

    def _declare(self, stmt: nodes.VarStmt, frame: Frame) -> None:
        try:
            for decl in stmt.decls:
                key = decl.name.lower()
                if decl.size is not None:
                    size = to_int(self._eval(decl.size, frame))
                    if size < 0:
                        raise _Fail(f"array {decl.name} sized {size}")
                    frame[key] = ArrayCell(decl.name, decl.type, size)
                    continue
                cell = Cell(decl.name, decl.type, decl.type.default())
                if decl.init is not None:
                    self._store(cell, self._eval(decl.init, frame))
                cell.const = stmt.const
                frame[key] = cell
        except (_Fail, ConversionError) as failure:
            raise self._error(stmt.line, str(failure)) from None

    def _lookup(self, name: str, frame: Frame) -> Slot:
        """A sub sees its own variables, then those of the event and subs that called it
        (innermost first), then the globals: public scripts declare a variable in an event and
        use it in the subs the event calls (docs/isl.md)."""
        key = name.lower()
        slot = frame.get(key)
        for caller in reversed(self._callers):
            if slot is not None:
                break
            slot = caller.get(key)
        if slot is None:
            slot = self.globals.get(key)
        if slot is None:
            raise _Fail(f"{name} is not declared here (a declaration not yet run?)")
        return slot

    def _slot(self, ref: nodes.Expr | nodes.WholeArray, frame: Frame) -> Slot:
        """The variable a Ref argument binds to: a cell, an array element, or a whole array."""
        if isinstance(ref, nodes.WholeArray):
            slot = self._lookup(ref.name, frame)
            if not isinstance(slot, ArrayCell):
                raise _Fail(f"{ref.name} is not an array")
            return slot
        if not isinstance(ref, nodes.VarRef):
            raise _Fail("a Ref argument must be a variable")
        return self._cell(ref, frame) if ref.index is not None else self._lookup(ref.name, frame)

    def _cell(self, ref: nodes.VarRef, frame: Frame) -> Cell:
        slot = self._lookup(ref.name, frame)
        if isinstance(slot, Cell):
            if ref.index is not None:
                raise _Fail(f"{ref.name} is not an array")
            return slot
        if ref.index is None:
            raise _Fail(f"{ref.name} is an array: give an index")
        index = to_int(self._eval(ref.index, frame))
        if not 1 <= index <= len(slot.items):
            raise _Fail(f"{ref.name}[{index}] is out of range 1..{len(slot.items)}")
        return slot.items[index - 1]

    def _store(self, cell: Cell, value: Value) -> None:
        if cell.const:
            raise _Fail(f"{cell.name} is a const")
        converted, cut = convert(value, cell.type, self.host.decimals)
        if cut:
            self.host.note(
                "warning", f"{cell.name} ({cell.type}) cut a {len(str(value))}-char text"
            )
        cell.value = converted

    def _assign(self, target: nodes.Target, value: Value, frame: Frame) -> None:
        if isinstance(target, nodes.SysVar):
            spec = sysvar_spec(target.name)
            if spec is None or not spec.writable:
                raise _Fail(f"{target.name} cannot be assigned")
            index = None if target.index is None else to_int(self._eval(target.index, frame))
            converted, _ = convert(value, spec.type, self.host.decimals)
            if target.name == "@TRACE":
                self.trace = to_int(converted)
            self.written[(target.name, index)] = converted
            self.host.note(
                "sysvar", f"{target.name}{'' if index is None else f'[{index}]'} = {converted}"
            )
            return
        self._store(self._cell(target, frame), value)

    # ---- expressions -------------------------------------------------------------------------

    def _eval(self, expr: nodes.Expr, frame: Frame) -> Value:
        if isinstance(expr, nodes.Num):
            return expr.value
        if isinstance(expr, nodes.Str):
            return expr.value
        if isinstance(expr, nodes.VarRef):
            return self._cell(expr, frame).value
        if isinstance(expr, nodes.SysVar):
            return self._sysvar(expr, frame)
        if isinstance(expr, nodes.FuncCall):
            return self._function(expr, frame)
        if isinstance(expr, nodes.NetCall):
            return self._net_call(expr, frame)
        if isinstance(expr, nodes.Unary):
            operand = self._eval(expr.operand, frame)
            if expr.op == "not":
                return 0 if is_true(operand) else 1
            return -self._numeric(operand, "-")
        return self._binary(expr, frame)

    def _sysvar(self, expr: nodes.SysVar, frame: Frame) -> Value:
        name = expr.name
        spec = sysvar_spec(name)
        if spec is None:
            raise _Fail(f"system variable {name} is not simulated by islrun")
        if spec.type.kind == "KEY":
            return named_key(name[len("@KEY_") :])
        index = None
        if spec.indexed:
            if expr.index is None:
                raise _Fail(f"{name} needs an index, as in {name}[i]")
            index = to_int(self._eval(expr.index, frame))
        local: dict[str, Value] = {
            "@RXMSG": self.rxmsg,
            "@INPUTSTATUS": self.input_status,
            "@TRACE": self.trace,
            "@MAGSTATUS": self.mag_status,
            "@FILE_ERRNO": self.file_errno,
            "@FILE_ERRSTR": self.file_errstr,
        }
        if name in local:
            return local[name]
        if name in PRINTERS:
            return PRINTERS[name]
        if spec.writable:
            return self.written.get((name, index), spec.type.default())
        try:
            return self.host.sysvar(name, index)
        except IndexError as error:
            raise _Fail(str(error)) from None

    def _function(self, call: nodes.FuncCall, frame: Frame) -> Value:
        if call.name == "arraysize" and len(call.args) == 1:
            arg = call.args[0]
            if isinstance(arg, nodes.VarRef) and arg.index is None:
                slot = self._lookup(arg.name, frame)
                if not isinstance(slot, ArrayCell):
                    raise _Fail(f"ArraySize: {arg.name} is not an array")
                return len(slot.items)
        args = [self._eval(arg, frame) for arg in call.args]
        if call.name == "feof" and len(args) == 1:
            return int(self.host.devices.file_eof(to_int(args[0])))
        return call_function(call.name, args, self.host.decimals)

    def _net_call(self, call: nodes.NetCall, frame: Frame) -> Value:
        args = [self._eval(arg, frame) for arg in call.args]
        result = self.host.devices.net_call(call.name, args)
        self.host.note("net", f"{call.name}({len(args)} argument(s))")
        return "" if result is None else result

    @staticmethod
    def _numeric(value: Value, op: str) -> int | Decimal:
        if not isinstance(value, int | Decimal):
            raise _Fail(f"{op!r} needs numbers, got {value!r}")
        return value

    def _binary(self, expr: nodes.Binary, frame: Frame) -> Value:
        op = expr.op
        left = self._eval(expr.left, frame)
        if op in ("and", "or"):
            # Short circuit: the right side runs only when the left does not decide (docs/isl.md
            # has the evidence: production scripts guard an index with the left side).
            decided = is_true(left)
            if (op == "and" and not decided) or (op == "or" and decided):
                return int(decided)
            return int(is_true(self._eval(expr.right, frame)))
        right = self._eval(expr.right, frame)
        if op in ("=", "<>", "<", ">", "<=", ">="):
            return int(self._compare(op, left, right))
        if op == "+" and isinstance(left, str) and isinstance(right, str):
            return left + right
        if op == "+" and (isinstance(left, str) or isinstance(right, str)):
            raise _Fail("'+' between text and a number: write Format to join them")
        a, b = self._numeric(left, op), self._numeric(right, op)
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        try:
            result = Decimal(a) / Decimal(b)
        except (DivisionByZero, InvalidOperation):
            raise _Fail("division by zero") from None
        return int(result) if result == result.to_integral_value() else result

    @staticmethod
    def _compare(op: str, left: Value, right: Value) -> bool:
        if isinstance(left, KeyValue) or isinstance(right, KeyValue):
            if op not in ("=", "<>"):
                raise _Fail("keys compare only with = and <>")
            return (left == right) == (op == "=")
        a: str | int | Decimal
        b: str | int | Decimal
        if isinstance(left, str) and isinstance(right, str):
            a, b = left, right
        else:
            a, b = to_number(left), to_number(right)
        if op == "=":
            return a == b
        if op == "<>":
            return a != b
        if op == "<":
            return a < b  # type: ignore[operator]
        if op == ">":
            return a > b  # type: ignore[operator]
        if op == "<=":
            return a <= b  # type: ignore[operator]
        return a >= b  # type: ignore[operator]


def call_function(name: str, args: list[Value], decimals: int) -> Value:
    """The ISL functions, by lower-case name; a name ISL does not know fails."""
    problem = call_problem(name, len(args))
    if problem is not None:
        raise _Fail(problem)
    if name == "len":
        return len(to_text(args[0], decimals))
    if name == "trim":
        return to_text(args[0], decimals).strip(" ")
    if name == "mid":
        text = to_text(args[0], decimals)
        start, count = to_int(args[1]), to_int(args[2])
        if start < 1 or count < 0:
            raise _Fail(f"Mid(text, {start}, {count}): start counts from 1")
        return text[start - 1 : start - 1 + count]
    if name == "key":
        return KeyValue(to_int(args[0]), to_int(args[1]))
    if name == "bit":
        return bit(args[0], to_int(args[1]))
    if name == "instr":
        # Instr(start, text, what): where `what` is found in `text` from `start`; 0 if not
        start = max(to_int(args[0]), 1)
        text, what = to_text(args[1], decimals), to_text(args[2], decimals)
        found = text.find(what, start - 1)
        return found + 1 if found >= 0 else 0
    if name == "chr":
        code = to_int(args[0])
        if not 0 <= code <= 255:
            raise _Fail(f"Chr({code}): a character code is 0 to 255")
        return bytes([code]).decode("cp1252", errors="replace")
    if name == "asc":
        text = to_text(args[0], decimals)
        return text[:1].encode("cp1252", errors="replace")[0] if text else 0
    if name == "abs":
        number = to_number(args[0])
        return -number if number < 0 else number
    if name == "int":
        return to_int(args[0])
    raise _Fail("ArraySize takes an array, as in ArraySize(items)")  # arraysize of a value


def bit(value: Value, number: int) -> int:
    """Bit(value, n): 1 if bit n is set. A text is hex digits, bit 1 the high bit of the first
    digit (how @DTL_STATUS is read: Bit(@DTL_STATUS[i], 5) is a void); a number counts bit 1
    from its low end."""
    if number < 1:
        raise _Fail(f"Bit(..., {number}): bits count from 1")
    if isinstance(value, str):
        digits = value.strip()
        position = (number - 1) // 4
        if position >= len(digits):
            return 0
        try:
            nibble = int(digits[position], 16)
        except ValueError:
            raise _Fail(f"Bit: {value!r} is not hex digits") from None
        return (nibble >> (3 - (number - 1) % 4)) & 1
    return (to_int(value) >> (number - 1)) & 1
