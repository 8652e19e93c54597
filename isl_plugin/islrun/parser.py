"""Parse ISL as the field writes it (docs/isl.md lists the public scripts this was measured on).

The parser knows every statement real scripts use: directives, `var`/`lvar`/`const`, events and
subs, If/ElseIf/Else, For (with Step), Forever, While, Try/Catch, Call, Format, Split, the link
statements (TxMsg, GetRxMsg, WaitForRxMsg, RxMsg), Input and InputKey, messages, exits,
LoadKybdMacro, check information lines, windows and displays, the ISL touchscreen, files,
printing, DLL calls, Include, NetImport and .NET calls.

It does not stop at the first bad line: a line it cannot read becomes a `Diagnostic` (line and
column) and a `BadStmt` that fails only if it runs, and parsing goes on. `parse_script` refuses a
script with any error; `read_script` returns it with its diagnostics (`--check`, the corpus).
Names are not resolved here: the linter (checker.py) warns, and the interpreter resolves them
when the code runs, as a POS loads scripts whose dead code names things it does not have.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

from isl_plugin.islrun.errors import IslSyntaxError
from isl_plugin.islrun.lexer import Line, Token, logical_lines
from isl_plugin.islrun.nodes import (
    Assign,
    BadStmt,
    Binary,
    BreakStmt,
    CallStmt,
    CaseStmt,
    ClearChkInfoStmt,
    Decl,
    DeviceArg,
    DeviceStmt,
    Diagnostic,
    DllCallStmt,
    Event,
    ExitStmt,
    Expr,
    FieldArg,
    ForeverStmt,
    FormatItem,
    FormatStmt,
    ForStmt,
    FuncCall,
    GetRxMsgStmt,
    IfStmt,
    InputStmt,
    MacroStmt,
    MakeKeys,
    MessageStmt,
    NetCall,
    NetCallStmt,
    NoOpStmt,
    Num,
    Param,
    RefArg,
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
    TryStmt,
    TxMsgStmt,
    Unary,
    VarRef,
    VarStmt,
    WaitForRxMsgStmt,
    WhileStmt,
    WholeArray,
    Word,
)
from isl_plugin.islrun.values import IslType, parse_spec

DIRECTIVES = {
    "retainglobalvar",
    "discardglobalvar",
    "useisltimeouts",
    "usecompatformat",
    "usestdformat",
    "continueoncancel",
    "exitoncancel",
    "setsignonleft",
    "setsignonright",
}

# function -> (fewest, most) arguments
FUNCTIONS: dict[str, tuple[int, int]] = {
    "len": (1, 1),
    "mid": (3, 3),
    "trim": (1, 1),
    "key": (2, 2),
    "bit": (2, 2),
    "instr": (3, 3),
    "chr": (1, 1),
    "asc": (1, 1),
    "abs": (1, 1),
    "int": (1, 1),
    "arraysize": (1, 1),
    "feof": (1, 1),
}

# Device statements and the shape of their arguments, by kind, in order:
#   E an expression, E? an optional one, T a variable the statement writes, F an input field
#   (`var{spec}`), W a bare word (FOpen's mode) or an expression, A a whole array (`arr` or
#   `arr[]`), * (last) the rest: expressions with an optional {spec} each; T* the rest: variables.
DEVICE_SHAPES: dict[str, tuple[str, ...]] = {
    "window": ("E", "E", "E?"),
    "windowclose": (),
    "windowedit": (),
    "windowinput": (),
    "windoweditwithsave": (),
    "windowinputwithsave": (),
    "windowclear": (),
    "display": ("E", "E", "*"),
    "displayinverse": ("E", "E", "*"),
    "displayinput": ("E", "E", "F", "*"),
    "displaymsinput": ("E", "E", "F", "*"),  # (row, col, field, prompt) again and again
    "waitforenter": ("*",),
    "waitforconfirm": ("*",),
    "waitforclear": ("*",),
    "waitforanykey": ("*",),
    "inputkey": ("T", "T", "*"),
    "touchscreen": ("E",),
    "clearislts": (),
    "setisltskeyx": ("*",),
    "setisltskey": ("*",),
    "displayislts": (),
    "popupislts": ("*",),
    "fopen": ("T", "E", "W", "*"),
    "fclose": ("E",),
    "fwrite": ("E", "*"),
    "fwriteln": ("E", "*"),
    "fread": ("E", "T*"),
    "freadln": ("E", "T*"),
    "fseek": ("E", "E"),
    "flock": ("E",),
    "funlock": ("E",),
    "dllload": ("T", "E"),
    "dllfree": ("E",),
    "startprint": ("E", "*"),
    "printline": ("*",),
    "endprint": (),
    "msleep": ("E",),
    "beep": (),
    "errorbeep": (),
    "cleararray": ("A",),
    "loaddbkybdmacro": ("E",),
    "clearkybdmacro": (),
}
DLL_CALLS = {"dllcall", "dllcall_cdecl", "dllcall_stdcall"}
FILE_MODES = {"read", "write", "append", "local"}

STATEMENT_WORDS = {
    "var", "lvar", "const", "ref", "if", "then", "elseif", "else", "endif", "for", "to", "step",
    "endfor", "forever", "while", "endwhile", "break", "return", "call", "event", "endevent",
    "sub", "endsub", "and", "or", "not", "as", "format", "split", "uppercase", "lowercase",
    "txmsg", "getrxmsg", "waitforrxmsg", "rxmsg", "input", "infomessage", "errormessage",
    "prompt", "exitcancel", "exitcontinue", "exitwitherror", "loadkybdmacro", "savechkinfo",
    "clearchkinfo", "try", "catch", "endtry", "include", "netimport",
}  # fmt: skip
# A name ISL uses for itself may not name a variable, a parameter or a sub.
RESERVED = STATEMENT_WORDS | DIRECTIVES | set(DEVICE_SHAPES) | DLL_CALLS

BLOCK_ENDS = {
    "endevent", "endsub", "endif", "else", "elseif", "endfor", "endwhile", "catch", "endtry",
    "event", "sub",
}  # fmt: skip
# The words that end an event or a sub, or start the next one: an inner block still open there
# was never closed, and the outer block takes them.
OUTER_ENDS = {"endevent", "endsub", "event", "sub"}

IncludeLoader = Callable[[str], tuple[str, str]]  # name as written -> (text, source name)


class _Cursor:
    """The tokens of one logical line, consumed left to right."""

    def __init__(self, line: Line, source: str) -> None:
        self.tokens = line.tokens
        self.line = line.number
        self.source = source
        self.pos = 0

    def col(self) -> int:
        token = self.peek()
        if token is not None:
            return token.col
        return self.tokens[-1].col + len(self.tokens[-1].text) if self.tokens else 0

    def error(self, message: str) -> IslSyntaxError:
        return IslSyntaxError(self.source, self.line, message, self.col())

    def peek(self, ahead: int = 0) -> Token | None:
        index = self.pos + ahead
        return self.tokens[index] if index < len(self.tokens) else None

    def next(self, what: str = "more") -> Token:
        token = self.peek()
        if token is None:
            raise self.error(f"expected {what} at the end of the line")
        self.pos += 1
        return token

    def at_end(self) -> bool:
        return self.pos >= len(self.tokens)

    def end(self) -> None:
        token = self.peek()
        if token is not None:
            raise self.error(f"unexpected {token.text!r}")

    def accept_op(self, *ops: str) -> bool:
        token = self.peek()
        if token is not None and token.is_op(*ops):
            self.pos += 1
            return True
        return False

    def accept_word(self, *words: str) -> bool:
        token = self.peek()
        if token is not None and token.is_word(*words):
            self.pos += 1
            return True
        return False

    def expect_op(self, op: str) -> None:
        token = self.peek()
        if token is None or not token.is_op(op):
            found = "the end of the line" if token is None else repr(token.text)
            raise self.error(f"expected {op!r}, found {found}")
        self.pos += 1

    def expect_word(self, word: str) -> None:
        token = self.peek()
        if token is None or not token.is_word(word):
            found = "the end of the line" if token is None else repr(token.text)
            raise self.error(f"expected {word!r}, found {found}")
        self.pos += 1

    def name(self, what: str = "a name", *, keyword_ok: bool = False) -> str:
        token = self.peek()
        if token is None or token.kind != "NAME" or "." in token.text:
            found = "the end of the line" if token is None else repr(token.text)
            raise self.error(f"expected {what}, found {found}")
        if token.lower in RESERVED and not keyword_ok:
            raise self.error(f"{token.text!r} is an ISL keyword, not {what}")
        self.pos += 1
        return token.text

    # ---- expressions ---------------------------------------------------------------------------

    def expr(self) -> Expr:
        left = self._and()
        while self.accept_word("or"):
            left = Binary("or", left, self._and())
        return left

    def _and(self) -> Expr:
        left = self._not()
        while self.accept_word("and"):
            left = Binary("and", left, self._not())
        return left

    def _not(self) -> Expr:
        if self.accept_word("not"):
            return Unary("not", self._not())
        return self._compare()

    def _compare(self) -> Expr:
        left = self._add()
        token = self.peek()
        if token is not None and token.is_op("=", "<>", "<", ">", "<=", ">="):
            self.pos += 1
            left = Binary(token.text, left, self._add())
            after = self.peek()
            if after is not None and after.is_op("=", "<>", "<", ">", "<=", ">="):
                raise self.error("comparisons do not chain; use And")
        return left

    def _add(self) -> Expr:
        left = self._mul()
        while True:
            token = self.peek()
            if token is None or not token.is_op("+", "-"):
                return left
            self.pos += 1
            left = Binary(token.text, left, self._mul())

    def _mul(self) -> Expr:
        left = self._unary()
        while True:
            token = self.peek()
            if token is None or not token.is_op("*", "/"):
                return left
            self.pos += 1
            left = Binary(token.text, left, self._unary())

    def _unary(self) -> Expr:
        if self.accept_op("-"):
            return Unary("-", self._unary())
        return self._primary()

    def _primary(self) -> Expr:
        token = self.next("an expression")
        if token.kind == "NUMBER":
            return Num(Decimal(token.text) if "." in token.text else int(token.text))
        if token.kind == "STRING":
            return Str(token.text)
        if token.is_op("("):
            inner = self.expr()
            self.expect_op(")")
            return inner
        if token.kind == "SYSVAR":
            return self._sysvar(token)
        if token.kind == "NAME":
            if token.lower in ("and", "or", "not", "to", "as", "then", "step"):
                self.pos -= 1
                raise self.error(f"expected an expression, found {token.text!r}")
            nxt = self.peek()
            if "." in token.text:
                args = self._call_args() if nxt is not None and nxt.is_op("(") else ()
                return NetCall(token.text, args)
            if nxt is not None and nxt.is_op("("):
                return FuncCall(token.lower, self._call_args())
            return VarRef(token.text, self._index())
        self.pos -= 1
        raise self.error(f"expected an expression, found {token.text!r}")

    def _call_args(self) -> tuple[Expr, ...]:
        self.expect_op("(")
        args: list[Expr] = []
        if not self.accept_op(")"):
            args.append(self.expr())
            while self.accept_op(","):
                args.append(self.expr())
            self.expect_op(")")
        return tuple(args)

    def _index(self) -> Expr | None:
        if not self.accept_op("["):
            return None
        if self.accept_op("]"):
            raise self.error("'[]' (a whole array) is allowed only as a Ref argument or in Split")
        index = self.expr()
        if self.accept_op(","):
            raise self.error("arrays of more than one dimension are not supported by islrun")
        self.expect_op("]")
        return index

    def _sysvar(self, token: Token) -> SysVar:
        return SysVar(token.text.upper(), self._index())

    def target(self) -> Target:
        token = self.peek()
        if token is None:
            raise self.error("expected a variable at the end of the line")
        if token.kind == "SYSVAR":
            self.pos += 1
            return self._sysvar(token)
        if token.kind != "NAME" or token.lower in ("and", "or", "not") or "." in token.text:
            raise self.error(f"expected a variable, found {token.text!r}")
        self.pos += 1
        return VarRef(token.text, self._index())

    def whole_array(self) -> WholeArray | None:
        """`name[]` if that is what comes next (consumed), else None (nothing consumed)."""
        token, after, closing = self.peek(), self.peek(1), self.peek(2)
        if (
            token is not None
            and token.kind == "NAME"
            and after is not None
            and after.is_op("[")
            and closing is not None
            and closing.is_op("]")
        ):
            self.pos += 3
            return WholeArray(token.text)
        return None

    def target_or_array(self) -> Target | WholeArray:
        return self.whole_array() or self.target()

    def type_spec(self) -> IslType:
        token = self.next("a type (A20, N9, $12, Key)")
        if token.is_op("$"):
            width = self.peek()
            if width is not None and width.kind == "NUMBER" and width.text.isdigit():
                self.pos += 1
                return IslType("$", int(width.text))
            return IslType("$")
        if token.kind == "NAME":
            lower = token.lower
            if lower == "key":
                return IslType("KEY")
            kind, digits = lower[:1], lower[1:]
            if kind in ("a", "n") and (digits == "" or digits.isdigit()):
                size = int(digits) if digits else None
                return IslType("A" if kind == "a" else "N", size)
        self.pos -= 1
        raise self.error(f"unknown type {token.text!r} (A20, N9, $12 or Key)")

    def format_item(self, *, strict: bool) -> FormatItem:
        expr = self.expr()
        token = self.peek()
        if token is not None and token.kind == "SPEC":
            spec = parse_spec(token.text)
            if spec is None and strict:
                raise self.error(f"format spec {{{token.text}}} is not one islrun knows")
            self.pos += 1
            return FormatItem(expr, spec)
        return FormatItem(expr)


CLOSERS = {
    "endevent": "EndEvent",
    "endsub": "EndSub",
    "endif": "EndIf",
    "endfor": "EndFor",
    "endwhile": "EndWhile",
    "endtry": "EndTry",
}


def _closer(ends: set[str]) -> str:
    return " or ".join(CLOSERS[end] for end in sorted(ends) if end in CLOSERS)


def _first_word(line: Line) -> str:
    if not line.tokens:
        return ""
    first = line.tokens[0]
    return first.lower if first.kind == "NAME" else ""


class Parser:
    def __init__(
        self,
        text: str,
        source: str,
        *,
        include: IncludeLoader | None = None,
        seen: frozenset[str] = frozenset(),
    ) -> None:
        self.source = source
        self.lines = logical_lines(text, source)
        self.index = 0
        self.include = include
        self.seen = seen | {source.lower()}
        self.diagnostics: list[Diagnostic] = []

    def report(self, error: IslSyntaxError, severity: str = "error") -> None:
        self.diagnostics.append(
            Diagnostic(error.source, error.line, error.col, severity, error.message)
        )

    def error_at(self, line: Line, message: str) -> None:
        col = line.tokens[0].col if line.tokens else 0
        self.report(IslSyntaxError(self.source, line.number, message, col))

    def parse(self) -> Script:
        script = Script(self.source)
        while self.index < len(self.lines):
            line = self.lines[self.index]
            self.index += 1
            if line.error is not None:
                self.report(line.error)
                continue
            try:
                self._top(line, script)
            except IslSyntaxError as error:
                self.report(error)
        script.diagnostics = self.diagnostics + script.diagnostics
        _resolve_named_inquiries(script)
        return script

    def _top(self, line: Line, script: Script) -> None:
        cursor = _Cursor(line, self.source)
        word = _first_word(line)
        if word in DIRECTIVES:
            cursor.next()
            cursor.end()
            script.directives.add(word)
        elif line.tokens[0].kind == "SYSVAR":
            statement = self._statement(cursor)
            assert isinstance(statement, Assign)
            if isinstance(statement.target, SysVar) and statement.target.name == "@TRACE":
                script.directives.add("trace")
            script.globals.append(statement)
        elif word in ("var", "lvar", "const"):
            statement = self._statement(cursor)
            assert isinstance(statement, VarStmt)
            script.globals.append(statement)
        elif word == "event":
            event = self._event(cursor)
            key = (event.kind, event.arg)
            if key in script.events:
                self.error_at(line, f"event {event.title} is defined twice")
            else:
                script.events[key] = event
        elif word == "sub":
            sub = self._sub(cursor)
            if sub.name.lower() in script.subs:
                self.error_at(line, f"sub {sub.name} is defined twice")
            else:
                script.subs[sub.name.lower()] = sub
        elif word == "include":
            self._include(cursor, script)
        elif word == "netimport":
            cursor.next()
            cursor.accept_word("from")
            token = cursor.next("the assembly's path")
            if token.kind != "STRING":
                raise cursor.error('NetImport from "path\\to\\assembly.dll"')
            cursor.end()
            script.imports.append(token.text)
        elif word in BLOCK_ENDS:
            self.error_at(line, f"{line.tokens[0].text!r} without its block")
        else:
            self.error_at(
                line,
                f"{line.tokens[0].text!r}: only directives, var/const, Event, Sub, Include and "
                "NetImport may stand outside an event or a sub",
            )

    def _include(self, cursor: _Cursor, script: Script) -> None:
        cursor.next()
        token = cursor.next("the file to include")
        if token.kind != "STRING":
            raise cursor.error('Include "file.isl"')
        cursor.end()
        name = token.text
        if self.include is None:
            raise cursor.error(f"Include {name!r}: no folder to include from")
        try:
            text, source = self.include(name)
        except OSError as error:
            raise cursor.error(f"Include {name!r}: {error.strerror or error}") from None
        if source.lower() in self.seen:
            raise cursor.error(f"Include {name!r} includes itself")
        inner = Parser(text, source, include=self.include, seen=self.seen).parse()
        script.includes += [source, *inner.includes]
        script.diagnostics += inner.diagnostics
        script.directives |= inner.directives
        script.globals += inner.globals
        script.imports += inner.imports
        for event_key, event in inner.events.items():
            if event_key in script.events:
                self.report(cursor.error(f"event {event.title} is defined twice (in {source})"))
            script.events.setdefault(event_key, event)
        for key, sub in inner.subs.items():
            if key in script.subs:
                self.report(cursor.error(f"sub {sub.name} is defined twice (in {source})"))
            script.subs.setdefault(key, sub)

    def _event(self, cursor: _Cursor) -> Event:
        cursor.expect_word("event")
        kind = cursor.name("an event name", keyword_ok=True).lower()
        arg = ""
        header_error: IslSyntaxError | None = None
        try:
            if cursor.accept_op(":"):
                token = cursor.next("the event's argument")
                if token.kind == "NUMBER" and token.text.isdigit():
                    arg = str(int(token.text))
                elif token.kind == "NAME" or token.is_op("*"):
                    arg = token.text.upper()
                else:
                    raise cursor.error(f"unexpected event argument {token.text!r}")
            cursor.end()
            if kind == "inq" and not arg:
                raise cursor.error("Event Inq needs a number or a name: Event Inq : 1")
            if kind == "rxmsg" and not arg:
                raise cursor.error("Event RxMsg needs a reply name: Event RxMsg : IDENT_OK")
        except IslSyntaxError as error:
            header_error = error
        body = self._block({"endevent"}, cursor.line, "Event")
        if header_error is not None:
            raise header_error
        return Event(kind, arg, body, cursor.line)

    def _sub(self, cursor: _Cursor) -> Sub:
        cursor.expect_word("sub")
        name = cursor.name("a sub name")
        params: list[Param] = []
        header_error: IslSyntaxError | None = None
        try:
            if cursor.accept_op("(") and not cursor.accept_op(")"):
                while True:
                    params.append(self._param(cursor))
                    if cursor.accept_op(")"):
                        break
                    cursor.expect_op(",")
            cursor.end()
            seen = set()
            for param in params:
                if param.name.lower() in seen:
                    raise cursor.error(f"parameter {param.name} appears twice")
                seen.add(param.name.lower())
        except IslSyntaxError as error:
            header_error = error
        body = self._block({"endsub"}, cursor.line, "Sub")
        if header_error is not None:
            raise header_error
        return Sub(name, tuple(params), body, cursor.line)

    def _param(self, cursor: _Cursor) -> Param:
        if cursor.accept_word("ref"):
            name = cursor.name("a parameter name")
            if cursor.accept_op("["):
                cursor.expect_op("]")
            return Param(name, True, None)
        if cursor.accept_word("var"):
            name = cursor.name("a parameter name")
            cursor.expect_op(":")
            return Param(name, False, cursor.type_spec())
        raise cursor.error("a parameter is 'Var name : type' or 'Ref name'")

    def _block(self, ends: set[str], opened: int, what: str) -> tuple[Stmt, ...]:
        """Statements up to one of `ends`, which is consumed. An end that belongs to an outer
        block (EndEvent, a new Event ...) closes this one too, with an error; a stray end of
        another kind is reported and skipped."""
        return self._body(ends, opened, what)[0]

    def _body(self, ends: set[str], opened: int, what: str) -> tuple[tuple[Stmt, ...], Line | None]:
        body: list[Stmt] = []
        while True:
            if self.index >= len(self.lines):
                self.report(
                    IslSyntaxError(
                        self.source, opened, f"{what} is not closed (expected {_closer(ends)})"
                    )
                )
                return tuple(body), None
            line = self.lines[self.index]
            if line.error is not None:
                self.index += 1
                self.report(line.error)
                body.append(BadStmt(line.number, line.error.col, line.error.message))
                continue
            word = _first_word(line)
            if word in ends:
                self.index += 1
                if len(line.tokens) > 1 and word not in ("elseif", "else", "catch"):
                    self.error_at(line, f"unexpected text after {line.tokens[0].text}")
                return tuple(body), line
            if word in BLOCK_ENDS:
                if word in OUTER_ENDS:
                    self.report(
                        IslSyntaxError(
                            self.source,
                            opened,
                            f"{what} is not closed before {line.tokens[0].text} on line "
                            f"{line.number}",
                        )
                    )
                    return tuple(body), None
                self.index += 1
                self.error_at(
                    line, f"{line.tokens[0].text!r} before the {what} of line {opened} is closed"
                )
                continue
            self.index += 1
            body.append(self._checked_statement(line))

    def _checked_statement(self, line: Line) -> Stmt:
        cursor = _Cursor(line, self.source)
        try:
            return self._statement(cursor)
        except IslSyntaxError as error:
            self.report(error)
            return BadStmt(line.number, error.col, error.message)

    def _if(self, cursor: _Cursor) -> IfStmt:
        opened = cursor.line
        branches: list[tuple[Expr, tuple[Stmt, ...]]] = []
        otherwise: tuple[Stmt, ...] = ()
        header_error: IslSyntaxError | None = None
        cond: Expr = Num(0)
        try:
            cond = cursor.expr()
            cursor.accept_word("then")
            cursor.end()
        except IslSyntaxError as error:
            header_error = error
        while True:
            body, closing = self._body({"elseif", "else", "endif"}, opened, "If")
            branches.append((cond, body))
            word = _first_word(closing) if closing is not None else "endif"
            if word == "endif" or closing is None:
                break
            inner = _Cursor(closing, self.source)
            inner.next()
            if word == "else":
                if not inner.at_end():
                    self.error_at(closing, "unexpected text after Else")
                otherwise = self._block({"endif"}, closing.number, "Else")
                break
            try:
                cond = inner.expr()
                inner.accept_word("then")
                inner.end()
            except IslSyntaxError as error:
                header_error = header_error or error
        if header_error is not None:
            raise header_error
        return IfStmt(opened, tuple(branches), otherwise)

    def _try(self, cursor: _Cursor) -> TryStmt:
        opened = cursor.line
        cursor.end()
        body, closing = self._body({"catch", "endtry"}, opened, "Try")
        handler: tuple[Stmt, ...] = ()
        if closing is not None and _first_word(closing) == "catch":
            handler = self._block({"endtry"}, closing.number, "Catch")
        return TryStmt(opened, body, handler)

    def _statement(self, cursor: _Cursor) -> Stmt:
        first = cursor.peek()
        assert first is not None
        line = cursor.line
        if first.kind == "SYSVAR":
            target = cursor.target()
            cursor.expect_op("=")
            expr = cursor.expr()
            cursor.end()
            return Assign(line, target, expr)
        if first.kind != "NAME":
            raise cursor.error(f"a statement cannot start with {first.text!r}")
        word = first.lower
        nxt = cursor.peek(1)
        if "." in first.text:
            call = cursor.expr()
            cursor.end()
            if not isinstance(call, NetCall):  # pragma: no cover - a dotted name parses so
                raise cursor.error("expected a .NET call")
            return NetCallStmt(line, call)
        if nxt is not None and (nxt.is_op("=") or nxt.is_op("[")) and word not in RESERVED:
            target = cursor.target()
            cursor.expect_op("=")
            expr = cursor.expr()
            cursor.end()
            return Assign(line, target, expr)
        cursor.next()
        if word in ("var", "lvar", "const"):
            return self._declaration(cursor, const=word == "const")
        if word == "if":
            return self._if(cursor)
        if word == "for":
            return self._for(cursor)
        if word == "forever":
            header_ok = cursor.at_end()
            body = self._block({"endfor"}, line, "Forever")
            if not header_ok:
                raise cursor.error("unexpected text after Forever")
            return ForeverStmt(line, body)
        if word == "while":
            try:
                cond = cursor.expr()
                cursor.end()
            except IslSyntaxError:
                self._block({"endwhile"}, line, "While")
                raise
            return WhileStmt(line, cond, self._block({"endwhile"}, line, "While"))
        if word == "try":
            return self._try(cursor)
        if word == "break":
            cursor.end()
            return BreakStmt(line)
        if word == "return":
            cursor.end()
            return ReturnStmt(line)
        if word == "call":
            return self._call(cursor)
        if word == "format":
            target = cursor.target()
            cursor.expect_word("as")
            items = [cursor.format_item(strict=True)]
            while cursor.accept_op(","):
                items.append(cursor.format_item(strict=True))
            cursor.end()
            return FormatStmt(line, target, tuple(items))
        if word == "split":
            return self._split(cursor)
        if word in ("uppercase", "lowercase"):
            target = cursor.target()
            cursor.end()
            return CaseStmt(line, target, word == "uppercase")
        if word == "txmsg":
            exprs = self._expr_list(cursor)
            if not exprs:
                raise cursor.error("TxMsg needs at least one field")
            return TxMsgStmt(line, exprs)
        if word == "getrxmsg":
            prompt = None if cursor.at_end() else cursor.expr()
            cursor.end()
            return GetRxMsgStmt(line, prompt)
        if word == "waitforrxmsg":
            cursor.end()
            return WaitForRxMsgStmt(line)
        if word == "rxmsg":
            targets_rx = [cursor.target()]
            while cursor.accept_op(","):
                targets_rx.append(cursor.target())
            cursor.end()
            return RxMsgStmt(line, tuple(targets_rx))
        if word == "input":
            target = cursor.target()
            spec = cursor.peek()
            if spec is not None and spec.kind == "SPEC":
                cursor.pos += 1
            cursor.expect_op(",")
            prompt_expr = cursor.expr()
            cursor.end()
            return InputStmt(line, target, prompt_expr)
        if word in ("infomessage", "errormessage", "prompt"):
            if cursor.at_end():
                raise cursor.error(f"{first.text} takes at least one text")
            items = [cursor.format_item(strict=False)]
            while cursor.accept_op(","):
                items.append(cursor.format_item(strict=False))
            cursor.end()
            kind = {"infomessage": "info", "errormessage": "error", "prompt": "prompt"}[word]
            exprs = tuple(item.expr for item in items)
            return MessageStmt(line, kind, exprs, tuple(item.spec for item in items))
        if word in ("exitcancel", "exitcontinue"):
            cursor.end()
            return ExitStmt(line, "ExitCancel" if word == "exitcancel" else "ExitContinue")
        if word == "exitwitherror":
            message = cursor.expr()
            cursor.end()
            return ExitStmt(line, "ExitWithError", message)
        if word == "loadkybdmacro":
            return self._macro(cursor)
        if word == "savechkinfo":
            expr = cursor.expr()
            cursor.end()
            return SaveChkInfoStmt(line, expr)
        if word == "clearchkinfo":
            cursor.end()
            return ClearChkInfoStmt(line)
        if word in DLL_CALLS:
            return self._dll_call(cursor)
        if word in DEVICE_SHAPES:
            return DeviceStmt(line, word, self._device_args(cursor, word))
        if word in DIRECTIVES:
            cursor.end()
            return NoOpStmt(line, word)
        if word in ("include", "netimport"):
            raise cursor.error(f"{first.text} stands at the top of the script, outside events")
        cursor.pos = 0
        raise cursor.error(f"unknown statement {first.text!r}")

    def _for(self, cursor: _Cursor) -> Stmt:
        line = cursor.line
        try:
            var_name = cursor.name("the loop variable")
            if not cursor.accept_op("="):
                raise cursor.error("expected 'For i = first To last' with a plain variable")
            start = cursor.expr()
            cursor.expect_word("to")
            end = cursor.expr()
            step = cursor.expr() if cursor.accept_word("step") else None
            cursor.end()
        except IslSyntaxError:
            self._block({"endfor"}, line, "For")
            raise
        body = self._block({"endfor"}, line, "For")
        return ForStmt(line, VarRef(var_name), start, end, body, step)

    def _call(self, cursor: _Cursor) -> CallStmt:
        name = cursor.name("a sub name")
        args: list[Expr | WholeArray] = []
        if cursor.accept_op("(") and not cursor.accept_op(")"):
            while True:
                args.append(cursor.whole_array() or cursor.expr())
                if cursor.accept_op(")"):
                    break
                cursor.expect_op(",")
        cursor.end()
        return CallStmt(cursor.line, name, tuple(args))

    def _split(self, cursor: _Cursor) -> SplitStmt:
        source = cursor.expr()
        cursor.expect_op(",")
        separator = cursor.expr()
        targets: list[Target | WholeArray] = []
        while cursor.accept_op(","):
            if targets and isinstance(targets[-1], WholeArray):
                raise cursor.error("a whole array must be the last target of Split")
            targets.append(cursor.target_or_array())
        if not targets:
            raise cursor.error("Split needs at least one variable to fill")
        cursor.end()
        return SplitStmt(cursor.line, source, separator, tuple(targets))

    def _macro(self, cursor: _Cursor) -> MacroStmt:
        keys: list[Expr | MakeKeys] = []
        while True:
            if cursor.accept_word("makekeys"):
                cursor.expect_op("(")
                keys.append(MakeKeys(cursor.expr()))
                cursor.expect_op(")")
            else:
                keys.append(cursor.expr())
            if not cursor.accept_op(","):
                break
        cursor.end()
        return MacroStmt(cursor.line, tuple(keys))

    def _dll_call(self, cursor: _Cursor) -> DllCallStmt:
        handle = cursor.target()
        cursor.expect_op(",")
        function = cursor.name("the DLL function", keyword_ok=True)
        args: list[Expr | RefArg] = []
        cursor.expect_op("(")
        if not cursor.accept_op(")"):
            while True:
                if cursor.accept_word("ref"):
                    args.append(RefArg(cursor.target_or_array()))
                else:
                    args.append(cursor.expr())
                if cursor.accept_op(")"):
                    break
                cursor.expect_op(",")
        cursor.end()
        return DllCallStmt(cursor.line, handle, function, tuple(args))

    def _device_args(self, cursor: _Cursor, word: str) -> tuple[DeviceArg, ...]:
        shape = DEVICE_SHAPES[word]
        args: list[DeviceArg] = []
        for position, kind in enumerate(shape):
            optional = kind.endswith("?")
            if kind == "*":
                if args and not cursor.accept_op(","):
                    break
                if cursor.at_end():
                    break
                if word == "displaymsinput":
                    args += self._ms_fields(cursor, len(args))
                else:
                    args.append(cursor.format_item(strict=False))
                    while cursor.accept_op(","):
                        args.append(cursor.format_item(strict=False))
                break
            if kind == "T*":
                if cursor.accept_op(","):
                    args.append(cursor.target())
                    while cursor.accept_op(","):
                        args.append(cursor.target())
                break
            if position > 0 and not cursor.accept_op(","):
                if optional:
                    break
                raise cursor.error(f"{word} takes more arguments: expected ','")
            if cursor.at_end() and optional:
                break
            if kind in ("E", "E?"):
                args.append(cursor.expr())
            elif kind == "T":
                args.append(cursor.target())
            elif kind == "F":
                args.append(self._field(cursor))
            elif kind == "W":
                token = cursor.peek()
                if token is not None and token.is_word(*FILE_MODES):
                    cursor.pos += 1
                    args.append(Word(token.lower))
                else:
                    args.append(cursor.expr())
            elif kind == "A":
                array = cursor.whole_array()
                if array is None:
                    array = WholeArray(cursor.name("an array"))
                args.append(array)
        cursor.end()
        return tuple(args)

    def _field(self, cursor: _Cursor) -> FieldArg:
        target = cursor.target()
        token = cursor.peek()
        spec = ""
        if token is not None and token.kind == "SPEC":
            cursor.pos += 1
            spec = token.text
        return FieldArg(target, spec)

    def _ms_fields(self, cursor: _Cursor, before: int) -> list[DeviceArg]:
        """The rest of DisplayMSInput: prompt, then (row, col, field, prompt) groups."""
        args: list[DeviceArg] = []
        position = before
        while True:
            if position % 4 == 2:
                args.append(self._field(cursor))
            else:
                args.append(cursor.expr())
            position += 1
            if not cursor.accept_op(","):
                return args

    def _declaration(self, cursor: _Cursor, *, const: bool) -> VarStmt:
        decls: list[Decl] = []
        while True:
            name = cursor.name("a variable name")
            size: Expr | None = None
            if cursor.accept_op("["):
                size = cursor.expr()
                if cursor.accept_op(","):
                    raise cursor.error("arrays of more than one dimension are not supported")
                cursor.expect_op("]")
            cursor.expect_op(":")
            type_ = cursor.type_spec()
            init: Expr | None = None
            if cursor.accept_op("="):
                init = cursor.expr()
            if const and (init is None or size is not None):
                raise cursor.error("a const needs a value and cannot be an array")
            if size is not None and init is not None:
                raise cursor.error("an array cannot have an initial value")
            decls.append(Decl(name, type_, size, init))
            if not cursor.accept_op(","):
                break
        cursor.end()
        return VarStmt(cursor.line, tuple(decls), const)

    def _expr_list(self, cursor: _Cursor) -> tuple[Expr, ...]:
        exprs: list[Expr] = []
        if cursor.at_end():
            return ()
        exprs.append(cursor.expr())
        while cursor.accept_op(","):
            exprs.append(cursor.expr())
        cursor.end()
        return tuple(exprs)


def _literal(expr: Expr | None) -> int | None:
    if isinstance(expr, Num) and isinstance(expr.value, int):
        return expr.value
    if isinstance(expr, Unary) and expr.op == "-":
        inner = _literal(expr.operand)
        return None if inner is None else -inner
    return None


def _resolve_named_inquiries(script: Script) -> None:
    """`Event Inq : INQ_PRINT` with `const INQ_PRINT : N3 = 7` (or a var with a whole-number
    value) is inquiry 7; another name (Simphony's `Event Inq : GetTaxTotals`) stays a name."""
    values: dict[str, int] = {}
    for stmt in script.globals:
        if isinstance(stmt, VarStmt):
            for decl in stmt.decls:
                value = _literal(decl.init)
                if value is not None and decl.size is None:
                    values[decl.name.upper()] = value
    for key, event in list(script.events.items()):
        if event.kind == "inq" and event.arg in values:
            number = str(values[event.arg])
            del script.events[key]
            if ("inq", number) in script.events:
                script.diagnostics.append(
                    Diagnostic(
                        script.source,
                        event.line,
                        0,
                        "error",
                        f"event inq : {number} is defined twice",
                    )
                )
                continue
            script.events[("inq", number)] = Event(event.kind, number, event.body, event.line)


def folder_loader(folder: Path) -> IncludeLoader:
    """Include files from `folder` (the script's own), by name, whatever their case."""

    def load(name: str) -> tuple[str, str]:
        relative = name.replace("\\", "/").split("/")[-1]
        path = folder / relative
        if not path.exists() and folder.is_dir():
            matches = [p for p in folder.iterdir() if p.name.lower() == relative.lower()]
            if matches:
                path = matches[0]
        return path.read_text(encoding="cp1252"), path.name

    return load


def read_script(
    text: str, source: str = "<script>", *, include: IncludeLoader | None = None
) -> Script:
    """Parse and lint a script, whatever it holds: every problem is in `script.diagnostics`."""
    from isl_plugin.islrun.checker import lint_script

    script = Parser(text, source, include=include).parse()
    script.diagnostics += lint_script(script)
    return script


def parse_script(
    text: str, source: str = "<script>", *, include: IncludeLoader | None = None
) -> Script:
    """Parse a script; IslSyntaxError names the first line that does not parse. The linter's
    warnings are in `script.warnings`."""
    script = read_script(text, source, include=include)
    errors = script.errors
    if errors:
        first = errors[0]
        raise IslSyntaxError(first.source, first.line, first.message, first.col)
    return script
