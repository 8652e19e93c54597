"""Parse the statements of events and subs, block by block.

A line that does not parse is reported (a `Diagnostic` with its line and column) and kept as a
`BadStmt` that fails only if it runs, so the lines after it still load; a block left open is
reported where it was opened. parser.py reads the top of the script around these blocks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from isl_plugin.islrun.errors import IslSyntaxError
from isl_plugin.islrun.expressions import Cursor
from isl_plugin.islrun.lexer import Line, logical_lines
from isl_plugin.islrun.nodes import (
    Assign,
    BadStmt,
    BreakStmt,
    CallStmt,
    CaseStmt,
    ClearChkInfoStmt,
    Decl,
    DeviceArg,
    DeviceStmt,
    Diagnostic,
    DllCallStmt,
    ExitStmt,
    Expr,
    FieldArg,
    ForeverStmt,
    FormatStmt,
    ForStmt,
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
    RefArg,
    ReturnStmt,
    RxMsgStmt,
    SaveChkInfoStmt,
    SplitStmt,
    Stmt,
    Target,
    TryStmt,
    TxMsgStmt,
    VarRef,
    VarStmt,
    WaitForRxMsgStmt,
    WhileStmt,
    WholeArray,
    Word,
)
from isl_plugin.islrun.vocabulary import DEVICE_SHAPES, DIRECTIVES, DLL_CALLS, FILE_MODES, RESERVED

BLOCK_ENDS = {
    "endevent", "endsub", "endif", "else", "elseif", "endfor", "endwhile", "catch", "endtry",
    "event", "sub",
}  # fmt: skip
# The words that end an event or a sub, or start the next one: an inner block still open there
# was never closed, and the outer block takes them.
OUTER_ENDS = {"endevent", "endsub", "event", "sub"}
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


def first_word(line: Line) -> str:
    if not line.tokens:
        return ""
    first = line.tokens[0]
    return first.lower if first.kind == "NAME" else ""


Header = TypeVar("Header")


class StatementParser:
    """The logical lines of one source, read from `index` on; what does not parse goes to
    `diagnostics` and the parse goes on."""

    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.lines = logical_lines(text, source)
        self.index = 0
        self.diagnostics: list[Diagnostic] = []

    def report(self, error: IslSyntaxError, severity: str = "error") -> None:
        self.diagnostics.append(
            Diagnostic(error.source, error.line, error.col, severity, error.message)
        )

    def error_at(self, line: Line, message: str) -> None:
        col = line.tokens[0].col if line.tokens else 0
        self.report(IslSyntaxError(self.source, line.number, message, col))

    def _block(self, ends: set[str], opened: int, what: str) -> tuple[Stmt, ...]:
        """Statements up to one of `ends`, which is consumed. An end that belongs to an outer
        block (EndEvent, a new Event ...) closes this one too, with an error; a stray end of
        another kind is reported and skipped."""
        return self._body(ends, opened, what)[0]

    def _headed_block(
        self, header: Callable[[], Header], ends: set[str], opened: int, what: str
    ) -> tuple[Header, tuple[Stmt, ...]]:
        """A block's first line, read by `header`, then its body. A first line that does not
        parse fails only once the body is read, so the block's lines are not read as if they
        came after it."""
        try:
            parsed = header()
        except IslSyntaxError:
            self._block(ends, opened, what)
            raise
        return parsed, self._block(ends, opened, what)

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
            word = first_word(line)
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
        cursor = Cursor(line, self.source)
        try:
            return self._statement(cursor)
        except IslSyntaxError as error:
            self.report(error)
            return BadStmt(line.number, error.col, error.message)

    def _if(self, cursor: Cursor) -> IfStmt:
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
            word = first_word(closing) if closing is not None else "endif"
            if word == "endif" or closing is None:
                break
            inner = Cursor(closing, self.source)
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

    def _try(self, cursor: Cursor) -> TryStmt:
        opened = cursor.line
        cursor.end()
        body, closing = self._body({"catch", "endtry"}, opened, "Try")
        handler: tuple[Stmt, ...] = ()
        if closing is not None and first_word(closing) == "catch":
            handler = self._block({"endtry"}, closing.number, "Catch")
        return TryStmt(opened, body, handler)

    def _statement(self, cursor: Cursor) -> Stmt:
        first = cursor.peek()
        assert first is not None
        line = cursor.line
        if first.kind == "SYSVAR":
            return self._assign(cursor)
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
            return self._assign(cursor)
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
            cond, body = self._headed_block(lambda: _condition(cursor), {"endwhile"}, line, "While")
            return WhileStmt(line, cond, body)
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
            items = cursor.separated(lambda: cursor.format_item(strict=True))
            cursor.end()
            return FormatStmt(line, target, items)
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
            targets_rx = cursor.separated(cursor.target)
            cursor.end()
            return RxMsgStmt(line, targets_rx)
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
            items = cursor.separated(lambda: cursor.format_item(strict=False))
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

    def _assign(self, cursor: Cursor) -> Assign:
        target = cursor.target()
        cursor.expect_op("=")
        expr = cursor.expr()
        cursor.end()
        return Assign(cursor.line, target, expr)

    def _for(self, cursor: Cursor) -> Stmt:
        line = cursor.line
        bounds, body = self._headed_block(lambda: _for_bounds(cursor), {"endfor"}, line, "For")
        var, start, end, step = bounds
        return ForStmt(line, var, start, end, body, step)

    def _call(self, cursor: Cursor) -> CallStmt:
        name = cursor.name("a sub name")
        args: tuple[Expr | WholeArray, ...] = ()
        if cursor.accept_op("("):
            args = cursor.listed(lambda: cursor.whole_array() or cursor.expr())
        cursor.end()
        return CallStmt(cursor.line, name, args)

    def _split(self, cursor: Cursor) -> SplitStmt:
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

    def _macro(self, cursor: Cursor) -> MacroStmt:
        keys = cursor.separated(lambda: _macro_key(cursor))
        cursor.end()
        return MacroStmt(cursor.line, keys)

    def _dll_call(self, cursor: Cursor) -> DllCallStmt:
        handle = cursor.target()
        cursor.expect_op(",")
        function = cursor.name("the DLL function", keyword_ok=True)
        cursor.expect_op("(")
        args = cursor.listed(lambda: _dll_arg(cursor))
        cursor.end()
        return DllCallStmt(cursor.line, handle, function, args)

    def _device_args(self, cursor: Cursor, word: str) -> tuple[DeviceArg, ...]:
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
                    args += cursor.separated(lambda: cursor.format_item(strict=False))
                break
            if kind == "T*":
                if cursor.accept_op(","):
                    args += cursor.separated(cursor.target)
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

    def _field(self, cursor: Cursor) -> FieldArg:
        target = cursor.target()
        token = cursor.peek()
        spec = ""
        if token is not None and token.kind == "SPEC":
            cursor.pos += 1
            spec = token.text
        return FieldArg(target, spec)

    def _ms_fields(self, cursor: Cursor, before: int) -> list[DeviceArg]:
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

    def _declaration(self, cursor: Cursor, *, const: bool) -> VarStmt:
        decls = cursor.separated(lambda: _decl(cursor, const=const))
        cursor.end()
        return VarStmt(cursor.line, decls, const)

    def _expr_list(self, cursor: Cursor) -> tuple[Expr, ...]:
        if cursor.at_end():
            return ()
        exprs = cursor.separated(cursor.expr)
        cursor.end()
        return exprs


def _dll_arg(cursor: Cursor) -> Expr | RefArg:
    if cursor.accept_word("ref"):
        return RefArg(cursor.target_or_array())
    return cursor.expr()


def _macro_key(cursor: Cursor) -> Expr | MakeKeys:
    if cursor.accept_word("makekeys"):
        cursor.expect_op("(")
        key = MakeKeys(cursor.expr())
        cursor.expect_op(")")
        return key
    return cursor.expr()


def _decl(cursor: Cursor, *, const: bool) -> Decl:
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
    return Decl(name, type_, size, init)


def _condition(cursor: Cursor) -> Expr:
    cond = cursor.expr()
    cursor.end()
    return cond


def _for_bounds(cursor: Cursor) -> tuple[VarRef, Expr, Expr, Expr | None]:
    """`For i = first To last [Step step]`: the variable, first, last and step."""
    var_name = cursor.name("the loop variable")
    if not cursor.accept_op("="):
        raise cursor.error("expected 'For i = first To last' with a plain variable")
    start = cursor.expr()
    cursor.expect_word("to")
    end = cursor.expr()
    step = cursor.expr() if cursor.accept_word("step") else None
    cursor.end()
    return VarRef(var_name), start, end, step
