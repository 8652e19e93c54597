"""Run the statements of a parsed script against a `Host`: the register around the script, which
owns the check, the link to the gateway, the cashier's answers and what the cashier sees.

Semantics where ISL's are not public, chosen to be at least as strict as a real POS:
- `And`/`Or` evaluate both sides (no short circuit), so `i < n And @DTL_TYPE[i + 1] = "R"`
  fails here as it may on a register; an array index out of range is an error.
- `WaitForRxMsg` runs the `event rxmsg : <first field of the reply>` handler (`_TIMEOUT` when no
  reply came in time) before the statement after it; the plugin ends its events with it, so
  it behaves the same if a real POS ends the event there instead.
- `RxMsg v1, v2, ...` fills the variables with the reply's fields after its name, or from its
  name when `rxmsg_includes_name` is set; the plugin copes with both.
- Without `RetainGlobalVar`, globals start afresh at every event the POS fires.
- A cancelled `Input` ends the event (ExitCancel) unless `ContinueOnCancel` is set; then the
  variable is emptied and `@INPUTSTATUS` is 0.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, DivisionByZero, InvalidOperation
from typing import Protocol

from isl_plugin.islrun.errors import IslRuntimeError
from isl_plugin.islrun.nodes import (
    Assign,
    Binary,
    BreakStmt,
    CallStmt,
    CaseStmt,
    ClearChkInfoStmt,
    Event,
    ExitStmt,
    Expr,
    FormatStmt,
    ForStmt,
    FuncCall,
    GetRxMsgStmt,
    IfStmt,
    InputStmt,
    MacroStmt,
    MakeKeys,
    MessageStmt,
    Num,
    ReturnStmt,
    RxMsgStmt,
    SaveChkInfoStmt,
    Script,
    SplitStmt,
    Stmt,
    Str,
    Sub,
    SysVar,
    Target,
    TxMsgStmt,
    Unary,
    VarRef,
    VarStmt,
    WaitForRxMsgStmt,
    WhileStmt,
    WholeArray,
)
from isl_plugin.islrun.values import (
    KEY_CLEAR,
    KEY_ENTER,
    ConversionError,
    IslType,
    KeyValue,
    Value,
    apply_spec,
    convert,
    is_true,
    to_int,
    to_number,
    to_text,
)

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

    def save_chk_info(self, text: str) -> None: ...

    def clear_chk_info(self) -> None: ...

    def note(self, kind: str, text: str) -> None: ...


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
    def __init__(self, script: Script, host: Host, options: RunOptions | None = None) -> None:
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

    # ---- the POS fires events --------------------------------------------------------------

    def init_globals(self) -> None:
        self.globals = {}
        for stmt in self.script.globals:
            self._declare(stmt, self.globals)
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

    async def _run_event(self, event: Event) -> None:
        self.host.note("event", event.title)
        await self._block(event.body, {})

    # ---- statements --------------------------------------------------------------------------

    async def _block(self, stmts: Sequence[Stmt], frame: Frame) -> None:
        for stmt in stmts:
            await self._stmt(stmt, frame)

    def _error(self, line: int, message: str) -> IslRuntimeError:
        return IslRuntimeError(self.script.source, line, message)

    async def _stmt(self, stmt: Stmt, frame: Frame) -> None:
        try:
            await self._exec(stmt, frame)
        except (_Fail, ValueError) as failure:  # ValueError: a value no frame can carry, too
            raise self._error(stmt.line, str(failure)) from None
        except NoInputLeft as failure:
            raise self._error(stmt.line, f"no scripted answer for Input {failure}") from None
        except NothingSent:
            raise self._error(stmt.line, "waiting for a reply, but no TxMsg was sent") from None

    async def _exec(self, stmt: Stmt, frame: Frame) -> None:
        if isinstance(stmt, Assign):
            self._assign(stmt.target, self._eval(stmt.expr, frame), frame)
        elif isinstance(stmt, VarStmt):
            self._declare(stmt, frame)
        elif isinstance(stmt, IfStmt):
            for cond, body in stmt.branches:
                if is_true(self._eval(cond, frame)):
                    await self._block(body, frame)
                    return
            await self._block(stmt.otherwise, frame)
        elif isinstance(stmt, ForStmt):
            await self._for(stmt, frame)
        elif isinstance(stmt, WhileStmt):
            runs = 0
            while is_true(self._eval(stmt.cond, frame)):
                runs = self._count(runs)
                try:
                    await self._block(stmt.body, frame)
                except _Break:
                    break
        elif isinstance(stmt, BreakStmt):
            raise _Break
        elif isinstance(stmt, ReturnStmt):
            raise _Return
        elif isinstance(stmt, CallStmt):
            await self._call(stmt, frame)
        elif isinstance(stmt, FormatStmt):
            parts = []
            for item in stmt.items:
                value = self._eval(item.expr, frame)
                text = to_text(value, self.host.decimals)
                if item.spec is not None:
                    text = apply_spec(text, item.spec, not isinstance(value, str))
                parts.append(text)
            self._assign(stmt.target, "".join(parts), frame)
        elif isinstance(stmt, SplitStmt):
            self._split(stmt, frame)
        elif isinstance(stmt, CaseStmt):
            value = self._eval(stmt.target, frame)
            if not isinstance(value, str):
                raise _Fail(f"{'UpperCase' if stmt.upper else 'LowerCase'} needs a text variable")
            self._assign(stmt.target, value.upper() if stmt.upper else value.lower(), frame)
        elif isinstance(stmt, TxMsgStmt):
            fields = [to_text(self._eval(arg, frame), self.host.decimals) for arg in stmt.args]
            await self.host.send(fields)
        elif isinstance(stmt, GetRxMsgStmt):
            if stmt.prompt is not None:
                prompt = to_text(self._eval(stmt.prompt, frame), self.host.decimals)
                self.host.show("waiting", (prompt,))
            reply = await self._receive()
            self.rxmsg = reply[0] if reply else TIMEOUT_REPLY.lower()
        elif isinstance(stmt, WaitForRxMsgStmt):
            await self._wait_for_reply()
        elif isinstance(stmt, RxMsgStmt):
            self._read_reply(stmt, frame)
        elif isinstance(stmt, InputStmt):
            await self._input(stmt, frame)
        elif isinstance(stmt, MessageStmt):
            texts = tuple(to_text(self._eval(a, frame), self.host.decimals) for a in stmt.args)
            self.host.show(stmt.kind, texts)
        elif isinstance(stmt, ExitStmt):
            message = ""
            if stmt.message is not None:
                message = to_text(self._eval(stmt.message, frame), self.host.decimals)
                self.host.show("error", (message,))
            raise ScriptExit(stmt.kind, message)
        elif isinstance(stmt, MacroStmt):
            self.host.macro([self._macro_key(key, frame) for key in stmt.keys])
        elif isinstance(stmt, SaveChkInfoStmt):
            self.host.save_chk_info(to_text(self._eval(stmt.expr, frame), self.host.decimals))
        elif isinstance(stmt, ClearChkInfoStmt):
            self.host.clear_chk_info()
        else:  # pragma: no cover - the parser builds no other statement
            raise _Fail(f"cannot run {type(stmt).__name__}")

    def _count(self, runs: int) -> int:
        if runs >= self.options.loop_limit:
            raise _Fail(f"loop ran {runs} times: stopped (loop_limit)")
        return runs + 1

    async def _for(self, stmt: ForStmt, frame: Frame) -> None:
        self._assign(stmt.var, self._eval(stmt.start, frame), frame)
        end = to_number(self._eval(stmt.end, frame))
        runs = 0
        while to_number(self._eval(stmt.var, frame)) <= end:
            runs = self._count(runs)
            try:
                await self._block(stmt.body, frame)
            except _Break:
                return
            self._assign(stmt.var, to_number(self._eval(stmt.var, frame)) + 1, frame)

    async def _call(self, stmt: CallStmt, frame: Frame) -> None:
        sub = self.script.subs[stmt.name.lower()]  # the checker made sure it exists
        local: Frame = {}
        for arg, param in zip(stmt.args, sub.params, strict=True):
            key = param.name.lower()
            if param.by_ref:
                local[key] = self._slot(arg, frame)
            else:
                assert param.type is not None and not isinstance(arg, WholeArray)
                cell = Cell(param.name, param.type, param.type.default())
                self._store(cell, self._eval(arg, frame))
                local[key] = cell
        await self._run_sub(sub, local)

    async def _run_sub(self, sub: Sub, local: Frame) -> None:
        with contextlib.suppress(_Return):
            await self._block(sub.body, local)

    def _split(self, stmt: SplitStmt, frame: Frame) -> None:
        text = to_text(self._eval(stmt.source, frame), self.host.decimals)
        separator = to_text(self._eval(stmt.separator, frame), self.host.decimals)
        if not separator:
            raise _Fail("Split needs a separator")
        pieces = text.split(separator)
        for position, target in enumerate(stmt.targets):
            if isinstance(target, WholeArray):
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

    def _read_reply(self, stmt: RxMsgStmt, frame: Frame) -> None:
        if not self.received:
            raise _Fail("RxMsg before any reply was received")
        fields = self.last_reply or []
        if not self.options.rxmsg_includes_name:
            fields = fields[1:]
        for position, target in enumerate(stmt.targets):
            self._assign(target, fields[position] if position < len(fields) else "", frame)

    async def _input(self, stmt: InputStmt, frame: Frame) -> None:
        prompt = to_text(self._eval(stmt.prompt, frame), self.host.decimals)
        answer = self.host.next_input(prompt)
        if answer is None:
            self.input_status = 0
            if "continueoncancel" not in self.script.directives:
                raise ScriptExit("ExitCancel", "cancelled at Input")
            answer = ""
        else:
            self.input_status = 1
        self._assign(stmt.target, answer, frame)

    def _macro_key(self, key: Expr | MakeKeys, frame: Frame) -> MacroKey:
        if isinstance(key, MakeKeys):
            return to_text(self._eval(key.expr, frame), self.host.decimals)
        value = self._eval(key, frame)
        if not isinstance(value, KeyValue):
            raise _Fail(
                f"LoadKybdMacro takes keys (Key(type, object), MakeKeys(text), @KEY_ENTER), "
                f"not {value!r}"
            )
        return value

    # ---- variables ---------------------------------------------------------------------------

    def _declare(self, stmt: VarStmt, frame: Frame) -> None:
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
        key = name.lower()
        slot = frame.get(key)
        if slot is None:
            slot = self.globals.get(key)
        if slot is None:
            raise _Fail(f"{name} is not declared here (a declaration not yet run?)")
        return slot

    def _slot(self, ref: Expr | WholeArray, frame: Frame) -> Slot:
        """The variable a Ref argument binds to: a cell, an array element, or a whole array."""
        if isinstance(ref, WholeArray):
            slot = self._lookup(ref.name, frame)
            if not isinstance(slot, ArrayCell):
                raise _Fail(f"{ref.name} is not an array")
            return slot
        if not isinstance(ref, VarRef):
            raise _Fail("a Ref argument must be a variable")
        return self._cell(ref, frame) if ref.index is not None else self._lookup(ref.name, frame)

    def _cell(self, ref: VarRef, frame: Frame) -> Cell:
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

    def _assign(self, target: Target, value: Value, frame: Frame) -> None:
        if isinstance(target, SysVar):  # only @TRACE is writable (the parser checked)
            self.trace = to_int(value)
            return
        self._store(self._cell(target, frame), value)

    # ---- expressions -------------------------------------------------------------------------

    def _eval(self, expr: Expr, frame: Frame) -> Value:
        if isinstance(expr, Num):
            return expr.value
        if isinstance(expr, Str):
            return expr.value
        if isinstance(expr, VarRef):
            return self._cell(expr, frame).value
        if isinstance(expr, SysVar):
            return self._sysvar(expr, frame)
        if isinstance(expr, FuncCall):
            return self._function(expr, frame)
        if isinstance(expr, Unary):
            operand = self._eval(expr.operand, frame)
            if expr.op == "not":
                return 0 if is_true(operand) else 1
            return -self._numeric(operand, "-")
        return self._binary(expr, frame)

    def _sysvar(self, expr: SysVar, frame: Frame) -> Value:
        name = expr.name
        if name == "@RXMSG":
            return self.rxmsg
        if name == "@INPUTSTATUS":
            return self.input_status
        if name == "@TRACE":
            return self.trace
        if name == "@KEY_ENTER":
            return KEY_ENTER
        if name == "@KEY_CLEAR":
            return KEY_CLEAR
        index = None if expr.index is None else to_int(self._eval(expr.index, frame))
        try:
            return self.host.sysvar(name, index)
        except IndexError as error:
            raise _Fail(str(error)) from None

    def _function(self, call: FuncCall, frame: Frame) -> Value:
        args = [self._eval(arg, frame) for arg in call.args]
        decimals = self.host.decimals
        if call.name == "len":
            return len(to_text(args[0], decimals))
        if call.name == "trim":
            return to_text(args[0], decimals).strip(" ")
        if call.name == "mid":
            text = to_text(args[0], decimals)
            start, count = to_int(args[1]), to_int(args[2])
            if start < 1 or count < 0:
                raise _Fail(f"Mid(text, {start}, {count}): start counts from 1")
            return text[start - 1 : start - 1 + count]
        # key(type, object)
        return KeyValue(to_int(args[0]), to_int(args[1]))

    @staticmethod
    def _numeric(value: Value, op: str) -> int | Decimal:
        if not isinstance(value, int | Decimal):
            raise _Fail(f"{op!r} needs numbers, got {value!r}")
        return value

    def _binary(self, expr: Binary, frame: Frame) -> Value:
        left = self._eval(expr.left, frame)
        right = self._eval(expr.right, frame)  # both sides, always: no short circuit
        op = expr.op
        if op in ("and", "or"):
            both = (is_true(left), is_true(right))
            return int(all(both)) if op == "and" else int(any(both))
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
