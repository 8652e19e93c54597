"""Parse the ISL subset islrun runs; anything else is an IslSyntaxError naming its line.

The subset is what the loyalty plugin needs and what real scripts show (reference notes section
2): directives, `var`/`const` declarations (types A, N, $, Key; arrays), events and subs with
`Var`/`Ref` parameters, If/ElseIf/Else, For, While, Call, Format, Split, the link statements
(TxMsg, GetRxMsg, WaitForRxMsg, RxMsg), Input, messages, exits, LoadKybdMacro, check info lines.
Statements that exist in ISL but not here (windows, files, DLLs, printing) are named as such.
"""

from __future__ import annotations

from decimal import Decimal

from isl_plugin.islrun.errors import IslSyntaxError
from isl_plugin.islrun.lexer import Line, Token, logical_lines
from isl_plugin.islrun.nodes import (
    Assign,
    Binary,
    BreakStmt,
    CallStmt,
    CaseStmt,
    ClearChkInfoStmt,
    Decl,
    Event,
    ExitStmt,
    Expr,
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
    Num,
    Param,
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
from isl_plugin.islrun.sysvars import SYSTEM_VARIABLES
from isl_plugin.islrun.values import IslType, parse_spec

DIRECTIVES = {
    "retainglobalvar",
    "useisltimeouts",
    "usecompatformat",
    "continueoncancel",
    "setsignonleft",
}

FUNCTIONS = {"len": 1, "mid": 3, "trim": 1, "key": 2}

# Real ISL that islrun does not run: named in the error so a script author knows it is not a typo.
OUTSIDE_SUBSET = {
    "window",
    "windowclose",
    "windowedit",
    "windowinput",
    "display",
    "displayinverse",
    "displayinput",
    "displaymsinput",
    "waitforenter",
    "waitforconfirm",
    "waitforclear",
    "inputkey",
    "touchscreen",
    "clearislts",
    "setisltskeyx",
    "displayislts",
    "fopen",
    "fclose",
    "fwrite",
    "fread",
    "freadln",
    "dllload",
    "dllcall",
    "dllcall_cdecl",
    "dllcall_stdcall",
    "dllfree",
    "startprint",
    "printline",
    "endprint",
    "msleep",
    "beep",
    "cleararray",
    "loaddbkybdmacro",
    "netimport",
    "exitoncancel",
    "loadkybdmacroex",
}
OUTSIDE_FUNCTIONS = {"bit", "instr", "abs", "int", "chr", "asc", "makekeys", "uppercase", "upper"}

STATEMENT_WORDS = {
    "var", "const", "ref", "if", "then", "elseif", "else", "endif", "for", "to", "step",
    "endfor", "while", "endwhile", "break", "return", "call", "event", "endevent", "sub",
    "endsub", "and", "or", "not", "as", "format", "split", "uppercase", "lowercase", "txmsg",
    "getrxmsg", "waitforrxmsg", "rxmsg", "input", "infomessage", "errormessage", "prompt",
    "exitcancel", "exitcontinue", "exitwitherror", "loadkybdmacro", "savechkinfo",
    "clearchkinfo",
}  # fmt: skip
# A name ISL uses for itself may not name a variable, a parameter or a sub.
RESERVED = STATEMENT_WORDS | DIRECTIVES | OUTSIDE_SUBSET | set(FUNCTIONS) | OUTSIDE_FUNCTIONS

BLOCK_ENDS = {"endevent", "endsub", "endif", "else", "elseif", "endfor", "endwhile", "event", "sub"}


class _Cursor:
    """The tokens of one logical line, consumed left to right."""

    def __init__(self, line: Line, source: str) -> None:
        self.tokens = line.tokens
        self.line = line.number
        self.source = source
        self.pos = 0

    def error(self, message: str) -> IslSyntaxError:
        return IslSyntaxError(self.source, self.line, message)

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
        token = self.next(f"{op!r}")
        if not token.is_op(op):
            raise self.error(f"expected {op!r}, found {token.text!r}")

    def expect_word(self, word: str) -> None:
        token = self.next(f"{word!r}")
        if not token.is_word(word):
            raise self.error(f"expected {word!r}, found {token.text!r}")

    def name(self, what: str = "a name", *, keyword_ok: bool = False) -> str:
        token = self.next(what)
        if token.kind != "NAME":
            raise self.error(f"expected {what}, found {token.text!r}")
        if token.lower in RESERVED and not keyword_ok:
            raise self.error(f"{token.text!r} is an ISL keyword, not {what}")
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
            lower = token.lower
            if lower in ("and", "or", "not", "to", "as"):
                raise self.error(f"expected an expression, found {token.text!r}")
            nxt = self.peek()
            if nxt is not None and nxt.is_op("("):
                return self._function(token)
            if lower in OUTSIDE_FUNCTIONS:
                raise self.error(f"{token.text!r} is outside the subset islrun runs here")
            index = self._index()
            return VarRef(token.text, index)
        raise self.error(f"expected an expression, found {token.text!r}")

    def _index(self) -> Expr | None:
        if not self.accept_op("["):
            return None
        if self.accept_op("]"):
            raise self.error("'[]' (a whole array) is allowed only as a Ref argument or in Split")
        index = self.expr()
        if self.accept_op(","):
            raise self.error("arrays of more than one dimension are outside the subset")
        self.expect_op("]")
        return index

    def _sysvar(self, token: Token) -> SysVar:
        name = token.text.upper()
        spec = SYSTEM_VARIABLES.get(name)
        if spec is None:
            raise self.error(f"system variable {token.text} is not simulated by islrun")
        index = self._index()
        if spec.indexed and index is None:
            raise self.error(f"{name} needs an index, as in {name}[i]")
        if not spec.indexed and index is not None:
            raise self.error(f"{name} takes no index")
        return SysVar(name, index)

    def _function(self, token: Token) -> FuncCall:
        lower = token.lower
        if lower not in FUNCTIONS:
            if lower in OUTSIDE_FUNCTIONS:
                raise self.error(f"function {token.text!r} is outside the subset islrun runs")
            raise self.error(f"unknown function {token.text!r}")
        self.expect_op("(")
        args: list[Expr] = []
        if not self.accept_op(")"):
            args.append(self.expr())
            while self.accept_op(","):
                args.append(self.expr())
            self.expect_op(")")
        if len(args) != FUNCTIONS[lower]:
            raise self.error(f"{token.text} takes {FUNCTIONS[lower]} argument(s), got {len(args)}")
        return FuncCall(lower, tuple(args))

    def target(self) -> Target:
        token = self.next("a variable")
        if token.kind == "SYSVAR":
            var = self._sysvar(token)
            if not SYSTEM_VARIABLES[var.name].writable:
                raise self.error(f"{var.name} cannot be assigned")
            return var
        if token.kind != "NAME" or token.lower in ("and", "or", "not"):
            raise self.error(f"expected a variable, found {token.text!r}")
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
        raise self.error(f"unknown type {token.text!r} (A20, N9, $12 or Key)")


class Parser:
    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.lines = logical_lines(text, source)
        self.index = 0

    def error(self, line: int, message: str) -> IslSyntaxError:
        return IslSyntaxError(self.source, line, message)

    def _first_word(self, line: Line) -> str:
        first = line.tokens[0]
        return first.lower if first.kind == "NAME" else ""

    def parse(self) -> Script:
        script = Script(self.source)
        while self.index < len(self.lines):
            line = self.lines[self.index]
            cursor = _Cursor(line, self.source)
            word = self._first_word(line)
            self.index += 1
            if word in DIRECTIVES:
                cursor.next()
                cursor.end()
                script.directives.add(word)
            elif line.tokens[0].kind == "SYSVAR":
                statement = self._statement(cursor)
                if not isinstance(statement, Assign):
                    raise cursor.error("only '@Trace = n' may stand outside an event")
                script.directives.add("trace")
            elif word in ("var", "const"):
                statement = self._statement(cursor)
                assert isinstance(statement, VarStmt)
                script.globals.append(statement)
            elif word == "event":
                event = self._event(cursor)
                key = (event.kind, event.arg)
                if key in script.events:
                    raise self.error(line.number, f"event {event.title} is defined twice")
                script.events[key] = event
            elif word == "sub":
                sub = self._sub(cursor)
                if sub.name.lower() in script.subs:
                    raise self.error(line.number, f"sub {sub.name} is defined twice")
                script.subs[sub.name.lower()] = sub
            elif word in BLOCK_ENDS:
                raise self.error(line.number, f"{line.tokens[0].text!r} without its block")
            else:
                raise self.error(
                    line.number,
                    f"{line.tokens[0].text!r}: only directives, var/const, Event and Sub may "
                    "stand outside an event or a sub",
                )
        return script

    def _event(self, cursor: _Cursor) -> Event:
        cursor.expect_word("event")
        kind = cursor.name("an event name", keyword_ok=True).lower()
        arg = ""
        if cursor.accept_op(":"):
            token = cursor.next("the event's argument")
            if token.kind == "NUMBER" and token.text.isdigit():
                arg = str(int(token.text))
            elif token.kind == "NAME" or token.is_op("*"):
                arg = token.text.upper()
            else:
                raise cursor.error(f"unexpected event argument {token.text!r}")
        cursor.end()
        if kind == "inq" and not arg.isdigit():
            raise cursor.error("Event Inq needs a number: Event Inq : 1")
        if kind == "rxmsg" and not arg:
            raise cursor.error("Event RxMsg needs a reply name: Event RxMsg : IDENT_OK")
        body = self._block({"endevent"}, cursor.line, "Event")
        return Event(kind, arg, body, cursor.line)

    def _sub(self, cursor: _Cursor) -> Sub:
        cursor.expect_word("sub")
        name = cursor.name("a sub name")
        params: list[Param] = []
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
        body = self._block({"endsub"}, cursor.line, "Sub")
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
        """Statements up to one of `ends`, which is consumed (its line must hold nothing else)."""
        body: list[Stmt] = []
        while True:
            if self.index >= len(self.lines):
                raise self.error(opened, f"{what} is not closed (expected {' or '.join(ends)})")
            line = self.lines[self.index]
            word = self._first_word(line)
            if word in ends:
                self.index += 1
                _Cursor(line, self.source).next()
                if len(line.tokens) > 1:
                    raise self.error(line.number, f"unexpected text after {line.tokens[0].text}")
                return tuple(body)
            if word in BLOCK_ENDS:
                raise self.error(
                    line.number,
                    f"{line.tokens[0].text!r} before the {what} of line {opened} is closed",
                )
            self.index += 1
            body.append(self._statement(_Cursor(line, self.source)))

    def _if(self, cursor: _Cursor) -> IfStmt:
        opened = cursor.line
        branches: list[tuple[Expr, tuple[Stmt, ...]]] = []
        otherwise: tuple[Stmt, ...] = ()
        cond = cursor.expr()
        cursor.accept_word("then")
        cursor.end()
        while True:
            body: list[Stmt] = []
            while True:
                if self.index >= len(self.lines):
                    raise self.error(opened, "If is not closed (expected EndIf)")
                line = self.lines[self.index]
                word = self._first_word(line)
                if word in ("elseif", "else", "endif"):
                    break
                if word in BLOCK_ENDS:
                    raise self.error(
                        line.number,
                        f"{line.tokens[0].text!r} before the If of line {opened} is closed",
                    )
                self.index += 1
                body.append(self._statement(_Cursor(line, self.source)))
            branches.append((cond, tuple(body)))
            self.index += 1
            inner = _Cursor(line, self.source)
            inner.next()
            if word == "endif":
                inner.end()
                return IfStmt(opened, tuple(branches), otherwise)
            if word == "else":
                inner.end()
                otherwise = self._block({"endif"}, line.number, "Else")
                return IfStmt(opened, tuple(branches), otherwise)
            cond = inner.expr()
            inner.accept_word("then")
            inner.end()

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
        if nxt is not None and (nxt.is_op("=") or nxt.is_op("[")) and word not in ("var",):
            target = cursor.target()
            cursor.expect_op("=")
            expr = cursor.expr()
            cursor.end()
            return Assign(line, target, expr)
        cursor.next()
        if word in ("var", "const"):
            return self._declaration(cursor, const=word == "const")
        if word == "if":
            return self._if(cursor)
        if word == "for":
            var_name = cursor.name("the loop variable")
            if not cursor.accept_op("="):
                raise cursor.error("expected 'For i = first To last' with a plain variable")
            start = cursor.expr()
            cursor.expect_word("to")
            end = cursor.expr()
            if cursor.accept_word("step"):
                raise cursor.error("For ... Step is outside the subset islrun runs")
            cursor.end()
            body = self._block({"endfor"}, line, "For")
            return ForStmt(line, VarRef(var_name), start, end, body)
        if word == "while":
            cond = cursor.expr()
            cursor.end()
            return WhileStmt(line, cond, self._block({"endwhile"}, line, "While"))
        if word == "break":
            cursor.end()
            return BreakStmt(line)
        if word == "return":
            cursor.end()
            return ReturnStmt(line)
        if word == "call":
            name = cursor.name("a sub name")
            args: list[Expr | WholeArray] = []
            if cursor.accept_op("(") and not cursor.accept_op(")"):
                while True:
                    args.append(cursor.whole_array() or cursor.expr())
                    if cursor.accept_op(")"):
                        break
                    cursor.expect_op(",")
            cursor.end()
            return CallStmt(line, name, tuple(args))
        if word == "format":
            target = cursor.target()
            cursor.expect_word("as")
            items = [self._format_item(cursor)]
            while cursor.accept_op(","):
                items.append(self._format_item(cursor))
            cursor.end()
            return FormatStmt(line, target, tuple(items))
        if word == "split":
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
            return SplitStmt(line, source, separator, tuple(targets))
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
            cursor.expect_op(",")
            prompt_expr = cursor.expr()
            cursor.end()
            return InputStmt(line, target, prompt_expr)
        if word in ("infomessage", "errormessage", "prompt"):
            exprs = self._expr_list(cursor)
            if not 1 <= len(exprs) <= 2:
                raise cursor.error(f"{first.text} takes one or two texts")
            kind = {"infomessage": "info", "errormessage": "error", "prompt": "prompt"}[word]
            return MessageStmt(line, kind, exprs)
        if word in ("exitcancel", "exitcontinue"):
            cursor.end()
            return ExitStmt(line, "ExitCancel" if word == "exitcancel" else "ExitContinue")
        if word == "exitwitherror":
            message = cursor.expr()
            cursor.end()
            return ExitStmt(line, "ExitWithError", message)
        if word == "loadkybdmacro":
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
            return MacroStmt(line, tuple(keys))
        if word == "savechkinfo":
            expr = cursor.expr()
            cursor.end()
            return SaveChkInfoStmt(line, expr)
        if word == "clearchkinfo":
            cursor.end()
            return ClearChkInfoStmt(line)
        if word in DIRECTIVES:
            raise cursor.error(f"{first.text} is a directive: put it at the top of the script")
        if word in OUTSIDE_SUBSET:
            raise cursor.error(f"{first.text!r} is ISL, but outside the subset islrun runs")
        raise cursor.error(f"unknown statement {first.text!r}")

    def _declaration(self, cursor: _Cursor, *, const: bool) -> VarStmt:
        decls: list[Decl] = []
        while True:
            name = cursor.name("a variable name")
            size: Expr | None = None
            if cursor.accept_op("["):
                size = cursor.expr()
                if cursor.accept_op(","):
                    raise cursor.error("arrays of more than one dimension are outside the subset")
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

    def _format_item(self, cursor: _Cursor) -> FormatItem:
        expr = cursor.expr()
        token = cursor.peek()
        if token is not None and token.kind == "SPEC":
            cursor.pos += 1
            spec = parse_spec(token.text)
            if spec is None:
                raise cursor.error(f"format spec {{{token.text}}} is outside the subset")
            return FormatItem(expr, spec)
        return FormatItem(expr)

    def _expr_list(self, cursor: _Cursor) -> tuple[Expr, ...]:
        exprs: list[Expr] = []
        if cursor.at_end():
            return ()
        exprs.append(cursor.expr())
        while cursor.accept_op(","):
            exprs.append(cursor.expr())
        cursor.end()
        return tuple(exprs)


def parse_script(text: str, source: str = "<script>") -> Script:
    """Parse and check a script; raises IslSyntaxError with the offending line."""
    from isl_plugin.islrun.checker import check_script

    script = Parser(text, source).parse()
    check_script(script)
    return script
